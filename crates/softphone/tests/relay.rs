//! The phone behind a relay: its account registers through Kamailio over
//! TLS with RFC 5626 flows (a stalled and a dead proxy skipped, `+sip.instance`,
//! `reg-id`, `ob` and the pn-* push parameters at the registrar), a call
//! from baresip reaches it over the flow, and it is registered again
//! without help after the relay restarts; a new push token and a push
//! wake register again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed interop step should fail loudly"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

mod common;
use common::{next_event_within, tone_file};

use config_export::{Account, Config, Push, Secret, SrtpPolicy, Transport, TrustAnchor};
use proxy_client::InstanceId;
use proxy_client::push::PushToken;
use softphone::{AudioSetup, CallState, Phone, PhoneConfig, PhoneEvent, RegistrationStatus};
use testkit::{AudioSource, Baresip, Binding, Kamailio, TestCa, UaTransport};
use tokio::time::timeout;

const INSTANCE: &str = "urn:uuid:6e0c1a94-3b2f-4c57-9a41-51f1c2d0e7b8";

fn registered(e: &PhoneEvent) -> bool {
    matches!(
        e,
        PhoneEvent::Registration {
            status: RegistrationStatus::Registered { .. },
            ..
        }
    )
}

async fn binding_where(kamailio: &Kamailio, ok: impl Fn(&Binding) -> bool) -> Binding {
    for _ in 0..50 {
        let bindings = kamailio.registered_bindings("alice").unwrap();
        if let Some(b) = bindings.into_iter().find(|b| ok(b)) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no matching binding: {:#?}\n{}",
        kamailio.registered_bindings("alice").unwrap(),
        kamailio.log_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_behind_a_tls_relay_uses_outbound_flows_push_and_recovers_from_a_restart() {
    let ca = TestCa::new().unwrap();
    let mut kamailio = Kamailio::builder()
        .with_tls(&ca)
        .with_push()
        .with_lifetime(Duration::from_secs(120))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dead = testkit::free_port().unwrap();
    // The first proxy takes the TCP connection and never answers the TLS
    // handshake: the phone waits its connect timeout (10 s) there, and
    // must answer commands meanwhile.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_port = stalled.local_addr().unwrap().port();
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Ok((socket, _)) = stalled.accept().await {
            let _ = accepted_tx.send(());
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        }
    });

    let mut config = Config::default();
    let mut account = Account::new(
        "office",
        "alice",
        format!("sip:127.0.0.1:{}", kamailio.sip_port()),
    );
    account.password = Some(Secret::new(
        kamailio.user("alice").unwrap().password.clone(),
    ));
    account.transport = Transport::Tls;
    account.outbound_proxies = vec![
        format!("sip:127.0.0.1:{stalled_port};transport=tls"),
        format!("sip:127.0.0.1:{dead};transport=tls"),
        format!(
            "sip:127.0.0.1:{};transport=tls",
            kamailio.tls_port().unwrap()
        ),
    ];
    config.accounts.push(account);
    config.tls.trust = vec![TrustAnchor::File(ca.ca_cert_path().display().to_string())];
    config.push = Some(Push {
        provider: "fcm".into(),
        prid: Secret::new("device-token-9"),
        param: Some("proj-9".into()),
        extra: Default::default(),
    });
    config.media.codecs = vec!["PCMU".into()];
    config.media.srtp = SrtpPolicy::Off;
    let mut pc = PhoneConfig::new(config);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.audio = AudioSetup::Wav {
        play: Some(tone_file(dir.path(), "alice.wav", 440.0)),
        record: None,
    };
    pc.instance = Some(InstanceId::parse(INSTANCE).unwrap());
    // Starting, reaching the stalled proxy and answering a command all
    // happen well inside its 10 s stall.
    let (phone, mut events, accounts) = timeout(Duration::from_secs(5), async {
        let (phone, events) = Phone::start(pc).await.unwrap();
        accepted_rx.await.unwrap();
        let accounts = phone.accounts().await.unwrap();
        (phone, events, accounts)
    })
    .await
    .expect("the phone answers while a proxy stalls its handshake");
    assert!(
        !matches!(accounts[0].status, RegistrationStatus::Registered { .. }),
        "registered before the stalled proxy timed out: {:?}",
        accounts[0].status
    );
    next_event_within(
        &mut events,
        "registration",
        Duration::from_secs(25),
        registered,
    )
    .await;

    // The registrar holds the outbound and push parameters, and said it
    // will push (RFC 8599 §4.1.1).
    assert_eq!(
        phone.accounts().await.unwrap()[0].push_confirmed,
        Some(true)
    );
    let binding = binding_where(&kamailio, |b| b.reg_id == Some(1)).await;
    eprintln!("binding: {binding:?}");
    assert_eq!(
        binding.instance.as_deref(),
        Some(&format!("<{INSTANCE}>")[..])
    );
    for part in [
        ";ob",
        "transport=tls",
        "pn-provider=fcm",
        "pn-prid=device-token-9",
        "pn-param=proj-9",
    ] {
        assert!(binding.address.contains(part), "{part} in {binding:?}");
    }

    // A call from baresip arrives over the flow.
    let bob = Baresip::builder("bob")
        .registering_with(&kamailio, "bob", UaTransport::Udp)
        .unwrap()
        .with_codecs(&["pcmu"])
        .with_audio_source(AudioSource::File(tone_file(dir.path(), "bob.wav", 1000.0)))
        .with_lifetime(Duration::from_secs(60))
        .start()
        .unwrap();
    bob.wait_registered(Duration::from_secs(10)).unwrap();
    bob.dial(&format!("sip:alice@127.0.0.1:{}", kamailio.sip_port()))
        .unwrap();
    let PhoneEvent::IncomingCall { call, .. } = next_event_within(
        &mut events,
        "the incoming call",
        Duration::from_secs(15),
        |e| matches!(e, PhoneEvent::IncomingCall { .. }),
    )
    .await
    else {
        unreachable!("only an incoming call matches")
    };
    call.answer().await.unwrap();
    bob.wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
        .unwrap();
    call.hangup().await.unwrap();
    next_event_within(&mut events, "the end", Duration::from_secs(10), |e| {
        matches!(
            e,
            PhoneEvent::CallState {
                state: CallState::Ended(_),
                ..
            }
        )
    })
    .await;

    // The relay restarts with 5 s down: the phone is back without help.
    let restarted = std::time::Instant::now();
    tokio::task::block_in_place(|| kamailio.restart_after(Duration::from_secs(5))).unwrap();
    next_event_within(
        &mut events,
        "the flow's failure",
        Duration::from_secs(30),
        |e| {
            matches!(
                e,
                PhoneEvent::Registration {
                    status: RegistrationStatus::Failed { .. },
                    ..
                }
            )
        },
    )
    .await;
    next_event_within(
        &mut events,
        "registration after the restart",
        Duration::from_secs(30),
        registered,
    )
    .await;
    binding_where(&kamailio, |b| b.reg_id == Some(1)).await;
    let took = restarted.elapsed();
    eprintln!("registered again {took:?} after the restart began");
    assert!(took < Duration::from_secs(30));

    // A new device token is registered at once; a push wake registers again.
    let token = PushToken::new("fcm", "device-token-10")
        .and_then(|t| t.with_param("proj-9"))
        .unwrap();
    phone.set_push_token(Some(token)).await.unwrap();
    binding_where(&kamailio, |b| b.address.contains("pn-prid=device-token-10")).await;
    // A push wake sends a REGISTER at once: the binding's remaining time,
    // which has run down for a few seconds, is back at the full expiry.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = binding_where(&kamailio, |b| b.address.contains("pn-prid=device-token-10"))
        .await
        .expires
        .unwrap();
    phone.wake().await.unwrap();
    let after = binding_where(&kamailio, |b| {
        b.address.contains("pn-prid=device-token-10") && b.expires.is_some_and(|e| e > before)
    })
    .await;
    eprintln!(
        "binding expiry {before} s before the wake, {:?} after",
        after.expires
    );
    let accounts = phone.accounts().await.unwrap();
    assert!(
        matches!(accounts[0].status, RegistrationStatus::Registered { .. }),
        "{accounts:?}"
    );
    phone.shutdown().await.unwrap();
}
