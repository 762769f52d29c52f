//! OutboundClient against a real Kamailio on 127.0.0.1 (launched by
//! testkit): registration over TLS with `+sip.instance`, `reg-id`, `ob` and
//! push parameters as the registrar stored them, fail-over from a dead proxy,
//! recovery after a Kamailio restart, a new push token, and 555.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a failed interop step should fail loudly; the numbers measured are printed"
)]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use tokio::time::Instant;

use proxy_client::InstanceId;
use proxy_client::outbound::{FlowFailure, OutboundConfig, ProxyTarget};
use proxy_client::outbound_client::{
    OutboundClient, OutboundClientConfig, OutboundEvent, OutboundHandle,
};
use proxy_client::push::PushToken;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sip_core::endpoint::Transport;
use sip_tokio::{TlsClientConfig, TransportConfig};
use testkit::{Binding, Kamailio, TestCa};
use tokio::sync::mpsc;

const USER: &str = "alice";
const PASSWORD: &str = "alice-secret";

fn instance(seed: u64) -> InstanceId {
    InstanceId::generate(&mut StdRng::seed_from_u64(seed))
}

fn tls_target(kamailio: &Kamailio) -> ProxyTarget {
    let addr = SocketAddr::from(([127, 0, 0, 1], kamailio.tls_port().unwrap()));
    ProxyTarget::new(Transport::Tls, addr).with_server_name("sip.test")
}

fn client_config(
    kamailio: &Kamailio,
    ca: &TestCa,
    proxies: Vec<ProxyTarget>,
    instance: InstanceId,
) -> OutboundClientConfig {
    let tls = TlsClientConfig::with_ca_pem(ca.ca_cert_pem().as_bytes()).unwrap();
    let registrar = format!("sip:127.0.0.1:{}", kamailio.sip_port());
    let aor = format!("sip:{USER}@127.0.0.1");
    OutboundClientConfig::new(
        &registrar,
        &aor,
        USER,
        instance,
        OutboundConfig::new(proxies),
    )
    .with_credentials(USER, PASSWORD)
    .with_transport(TransportConfig::default().with_tls_client(tls))
}

/// Waits for the first event `pick` accepts, collecting all on the way.
async fn wait_for<T>(
    events: &mut mpsc::Receiver<OutboundEvent>,
    seen: &mut Vec<OutboundEvent>,
    limit: Duration,
    pick: impl Fn(&OutboundEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {limit:?}; events so far: {seen:#?}"))
            .expect("the client stopped");
        seen.push(event.clone());
        if let Some(t) = pick(&event) {
            return t;
        }
    }
}

fn registered(event: &OutboundEvent) -> Option<(u32, String)> {
    match event {
        OutboundEvent::Registered {
            reg_id, contact, ..
        } => Some((*reg_id, contact.clone())),
        _ => None,
    }
}

/// Polls the registrar until a binding satisfies `ok`.
async fn binding_where(kamailio: &Kamailio, ok: impl Fn(&Binding) -> bool) -> Binding {
    for _ in 0..50 {
        let bindings = kamailio.registered_bindings(USER).unwrap();
        if let Some(b) = bindings.into_iter().find(|b| ok(b)) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no matching binding: {:#?}\n{}",
        kamailio.registered_bindings(USER).unwrap(),
        kamailio.log_tail(30)
    );
}

async fn start(
    config: OutboundClientConfig,
) -> (
    OutboundHandle,
    mpsc::Receiver<OutboundEvent>,
    Vec<OutboundEvent>,
) {
    let (handle, events) = OutboundClient::spawn(config).unwrap();
    (handle, events, Vec::new())
}

/// RFC 8599 §4.1.1: a registrar that stores the push parameters but does
/// not say it will push (no `+sip.pns` in its 2xx) leaves push
/// unconfirmed, and the app is told so: it must stay awake to take calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_that_does_not_confirm_push_is_reported() {
    let ca = TestCa::new().unwrap();
    let kamailio = Kamailio::builder().with_tls(&ca).start().unwrap();
    let token = PushToken::new("fcm", "token-one").unwrap();
    let config =
        client_config(&kamailio, &ca, vec![tls_target(&kamailio)], instance(3)).with_push(token);
    let (handle, mut events, mut seen) = start(config).await;
    let confirmed = wait_for(
        &mut events,
        &mut seen,
        Duration::from_secs(15),
        |e| match e {
            OutboundEvent::PushConfirmation { confirmed, .. } => Some(*confirmed),
            _ => None,
        },
    )
    .await;
    assert!(!confirmed, "{seen:#?}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_tls_with_instance_reg_id_ob_and_push_parameters() {
    let ca = TestCa::new().unwrap();
    let kamailio = Kamailio::builder()
        .with_tls(&ca)
        .with_push()
        .start()
        .unwrap();
    let id = instance(1);
    let token = PushToken::new("fcm", "token-one")
        .unwrap()
        .with_param("proj-42")
        .unwrap();
    let config = client_config(&kamailio, &ca, vec![tls_target(&kamailio)], id).with_push(token);
    let (handle, mut events, mut seen) = start(config).await;

    let (reg_id, contact) =
        wait_for(&mut events, &mut seen, Duration::from_secs(15), registered).await;
    assert_eq!(reg_id, 1);
    // The relay said it will push (Feature-Caps: *;+sip.pns="fcm").
    assert!(
        seen.iter().any(|e| matches!(
            e,
            OutboundEvent::PushConfirmation {
                confirmed: true,
                ..
            }
        )),
        "{seen:#?}"
    );
    // The Contact for dialogs: no push parameters (RFC 8599 §4.1).
    assert!(contact.ends_with(";transport=tls;ob"), "{contact}");
    let binding = binding_where(&kamailio, |b| b.address.contains("token-one")).await;
    println!("binding at the registrar: {binding:?}");
    assert!(binding.address.contains(";ob"), "{binding:?}");
    assert!(binding.address.contains("pn-provider=fcm"), "{binding:?}");
    assert!(binding.address.contains("pn-param=proj-42"), "{binding:?}");
    assert!(binding.address.contains("pn-prid=token-one"), "{binding:?}");
    assert_eq!(binding.reg_id, Some(1), "{binding:?}");
    let stored = binding.instance.clone().unwrap();
    assert!(stored.contains(&id.to_string()), "{stored} vs {id}");
    assert!(
        binding
            .received
            .as_deref()
            .is_some_and(|r| r.contains("transport=tls")),
        "{binding:?}"
    );

    // A new token: the client registers again and the registrar has it.
    handle
        .set_push_token(Some(PushToken::new("fcm", "token-two").unwrap()))
        .unwrap();
    wait_for(&mut events, &mut seen, Duration::from_secs(10), registered).await;
    let binding = binding_where(&kamailio, |b| b.address.contains("pn-prid=token-two")).await;
    assert!(!binding.address.contains("pn-param"), "{binding:?}");

    // Woken by a push: a fast re-registration on the live flow.
    let before = Instant::now();
    handle.woken_by_push().unwrap();
    wait_for(&mut events, &mut seen, Duration::from_secs(5), registered).await;
    println!("re-registered {:?} after the wake-up", before.elapsed());
    assert!(before.elapsed() < Duration::from_secs(2));

    handle.shutdown().await;
    // Un-registered: no binding with the current contact is left.
    let left = kamailio.registered_bindings(USER).unwrap();
    assert!(
        !left.iter().any(|b| b.address.contains("token-two")),
        "{left:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_proxy_fails_over_to_the_second() {
    let ca = TestCa::new().unwrap();
    let kamailio = Kamailio::builder().with_tls(&ca).start().unwrap();
    // A port nobody listens on: connecting is refused.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxies = vec![
        ProxyTarget::new(Transport::Tls, dead).with_server_name("sip.test"),
        tls_target(&kamailio),
    ];
    let (handle, mut events, mut seen) =
        start(client_config(&kamailio, &ca, proxies, instance(2))).await;
    let started = Instant::now();
    let proxy = wait_for(
        &mut events,
        &mut seen,
        Duration::from_secs(15),
        |e| match e {
            OutboundEvent::FlowUp { proxy, .. } => Some(*proxy),
            _ => None,
        },
    )
    .await;
    println!(
        "up on proxy {proxy} after {:?}; events: {seen:?}",
        started.elapsed()
    );
    assert_eq!(proxy, 1);
    assert!(seen.iter().any(|e| matches!(
        e,
        OutboundEvent::FlowFailed {
            proxy: 0,
            reason: FlowFailure::ConnectFailed,
            ..
        }
    )));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fail-over does not wait"
    );
    binding_where(&kamailio, |b| b.reg_id == Some(1)).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_back_within_30_s_after_a_kamailio_restart() {
    let ca = TestCa::new().unwrap();
    let mut kamailio = Kamailio::builder().with_tls(&ca).start().unwrap();
    // The RFC's default back-off (30 s base, so 30-60 s after a failed
    // reconnect): the recovery window retries the refused connects.
    let config = client_config(&kamailio, &ca, vec![tls_target(&kamailio)], instance(3));
    let (handle, mut events, mut seen) = start(config).await;
    wait_for(&mut events, &mut seen, Duration::from_secs(15), registered).await;
    binding_where(&kamailio, |b| b.reg_id == Some(1)).await;

    let restarted = Instant::now();
    let old_pid = kamailio.pid();
    // Down for 5 s, as during an upgrade: several reconnects are refused.
    // (The client may be back before this returns, so the emptied location
    // table is shown by the new process, not by a lookup.)
    tokio::task::block_in_place(|| kamailio.restart_after(Duration::from_secs(5))).unwrap();
    assert_ne!(kamailio.pid(), old_pid, "a new Kamailio process");
    wait_for(
        &mut events,
        &mut seen,
        Duration::from_secs(30),
        |e| match e {
            OutboundEvent::FlowFailed { reason, .. } => Some(*reason),
            _ => None,
        },
    )
    .await;
    wait_for(&mut events, &mut seen, Duration::from_secs(30), registered).await;
    binding_where(&kamailio, |b| b.reg_id == Some(1)).await;
    let took = restarted.elapsed();
    let refused = seen
        .iter()
        .filter(|e| {
            matches!(
                e,
                OutboundEvent::FlowFailed {
                    reason: FlowFailure::ConnectFailed,
                    ..
                }
            )
        })
        .count();
    println!(
        "registered again {took:?} after the restart began, {refused} reconnects refused; events: {seen:?}"
    );
    assert!(refused >= 1, "the relay was down while the client tried");
    assert!(took < Duration::from_secs(30));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_555_makes_the_client_register_without_push_parameters() {
    let ca = TestCa::new().unwrap();
    let kamailio = Kamailio::builder()
        .with_tls(&ca)
        .with_push_refused()
        .start()
        .unwrap();
    let token = PushToken::new("apns", "abcdef").unwrap();
    let config =
        client_config(&kamailio, &ca, vec![tls_target(&kamailio)], instance(4)).with_push(token);
    let (handle, mut events, mut seen) = start(config).await;
    let (_, contact) = wait_for(&mut events, &mut seen, Duration::from_secs(15), registered).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, OutboundEvent::PushRefused { reg_id: 1 })),
        "{seen:?}"
    );
    assert!(!contact.contains("pn-"), "{contact}");
    let binding = binding_where(&kamailio, |b| b.reg_id == Some(1)).await;
    assert!(!binding.address.contains("pn-"), "{binding:?}");
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, OutboundEvent::FlowFailed { .. })),
        "a 555 is not a flow failure: {seen:?}"
    );
    handle.shutdown().await;
}
