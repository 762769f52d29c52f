//! Registrars named by domain (RFC 3263): the phone asks DNS for the
//! domain's SRV records and, when the first server answers 503, registers
//! with the next one at once (§4.3). Two registrars on loopback, a
//! resolver with fixed answers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed step should fail loudly"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::next_event;

use config_export::{Account, Config};
use sip_core::Message;
use sip_tokio::{SrvRecord, StaticResolver};
use softphone::{CallState, Dns, EndReason, Phone, PhoneConfig, PhoneEvent, RegistrationStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// A registrar on loopback that answers every REGISTER with `status` and
/// reports each Request-URI it got.
async fn registrar(status: u16) -> (u16, mpsc::UnboundedReceiver<String>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        // Bounded: a test registers a handful of times.
        for _ in 0..20 {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(request) = Message::parse(buf[..len].to_vec()) else {
                continue;
            };
            let sip_core::StartLine::Request { uri, .. } = request.start_line() else {
                continue;
            };
            // Reported before it is answered, as the test reads it after.
            if tx.send(uri.to_owned()).is_err() {
                return;
            }
            let contact = request.header("Contact").unwrap_or("").to_owned();
            let mut response = Message::response_to(&request, status, "Answer")
                .unwrap()
                .to_tag("registrar");
            if status == 200 {
                response = response
                    .header("Contact", &format!("{contact};expires=120"))
                    .unwrap();
            }
            let response = response.build().unwrap();
            socket.send_to(&response.to_bytes(), from).await.unwrap();
        }
    });
    (port, rx)
}

/// `pbx.example.com` with two SRV records: one server on `first`, the
/// other on `second`, in that order of priority.
fn two_servers(first: u16, second: u16) -> Arc<StaticResolver> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let dns = StaticResolver::new()
        .with_srv(
            "_sip._udp.pbx.example.com",
            [
                SrvRecord {
                    priority: 10,
                    weight: 0,
                    port: first,
                    target: "one.pbx.example.com".into(),
                },
                SrvRecord {
                    priority: 20,
                    weight: 0,
                    port: second,
                    target: "two.pbx.example.com".into(),
                },
            ],
        )
        .with_ip("one.pbx.example.com", [loopback])
        .with_ip("two.pbx.example.com", [loopback]);
    Arc::new(dns)
}

/// A phone with one account on `pbx.example.com`, found through `dns`.
async fn phone(dns: &Arc<StaticResolver>) -> (Phone, softphone::Events) {
    phone_with(dns, |_, _| {}).await
}

/// [`phone`], its account and configuration changed by `change` first.
async fn phone_with(
    dns: &Arc<StaticResolver>,
    change: impl FnOnce(&mut Account, &mut PhoneConfig),
) -> (Phone, softphone::Events) {
    let mut account = Account::new("office", "alice", "sip:pbx.example.com");
    let mut pc = PhoneConfig::new(Config::default());
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.dns = Dns::Custom(dns.clone());
    change(&mut account, &mut pc);
    pc.config.accounts.push(account);
    Phone::start(pc).await.unwrap()
}

/// Waits until the phone reports the account registered.
async fn registered(events: &mut softphone::Events, what: &str) {
    next_event(events, what, |e| {
        matches!(
            e,
            PhoneEvent::Registration {
                status: RegistrationStatus::Registered { .. },
                ..
            }
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3263_srv_servers_of_the_domain_are_tried_in_order_on_503() {
    let (busy_port, mut busy) = registrar(503).await;
    let (good_port, mut good) = registrar(200).await;
    let dns = two_servers(busy_port, good_port);
    let started = tokio::time::Instant::now();
    let (phone, mut events) = phone(&dns).await;
    registered(&mut events, "registered through the second server").await;
    // At once, not after the back-off (2.5 to 5 s).
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        dns.queries()
            .contains(&"SRV _sip._udp.pbx.example.com".to_owned()),
        "{:?}",
        dns.queries()
    );
    // The first server by priority was asked first, and the registration
    // names the domain, not the server.
    assert_eq!(busy.try_recv().unwrap(), "sip:pbx.example.com");
    assert_eq!(good.try_recv().unwrap(), "sip:pbx.example.com");
    let accounts = phone.accounts().await.unwrap();
    assert_eq!(accounts[0].aor, "sip:alice@pbx.example.com");
    phone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3263_when_every_server_fails_each_is_tried_once_then_the_back_off_waits() {
    let (first_port, mut first) = registrar(503).await;
    let (second_port, mut second) = registrar(503).await;
    let dns = two_servers(first_port, second_port);
    let (phone, mut events) = phone(&dns).await;
    next_event(&mut events, "the registration failing", |e| {
        matches!(
            e,
            PhoneEvent::Registration {
                status: RegistrationStatus::Failed {
                    will_retry: true,
                    ..
                },
                ..
            }
        )
    })
    .await;
    // Within the back-off's shortest wait (2.5 s): one REGISTER each, no
    // round after round.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let count = |rx: &mut mpsc::UnboundedReceiver<String>| {
        std::iter::from_fn(|| rx.try_recv().ok()).count()
    };
    assert_eq!((count(&mut first), count(&mut second)), (1, 1));
    phone.shutdown().await.unwrap();
}

/// A TCP registrar on loopback that answers each REGISTER with 503 and
/// counts them.
async fn busy_tcp_registrar() -> (u16, mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 4096];
        // Bounded: a test registers a handful of times.
        for _ in 0..50 {
            let Ok(n) = stream.read(&mut chunk).await else {
                return;
            };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            // REGISTERs carry no body: each ends at its empty line.
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = buf.drain(..end + 4).collect();
                let Ok(request) = Message::parse(head) else {
                    continue;
                };
                let response = Message::response_to(&request, 503, "Service Unavailable")
                    .unwrap()
                    .to_tag("registrar")
                    .build()
                    .unwrap();
                stream.write_all(&response.to_bytes()).await.unwrap();
                let _ = tx.send(());
            }
        }
    });
    (port, rx)
}

/// A loopback TCP port whose connection attempts hang: its listener has a
/// backlog of one, filled by a connection nobody accepts, so the kernel
/// drops further SYNs. Keep what it returns alive while it is needed.
async fn hanging_tcp_port() -> (u16, tokio::net::TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    // Bounded: the queue fills after one or two connections.
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => panic!("connecting to fill the backlog: {e}"),
            Err(_) => return (addr.port(), listener, held),
        }
    }
    panic!("the listener's backlog never filled: connections to it would not hang");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3263_the_phone_answers_while_the_next_server_is_being_reached() {
    let (busy_port, mut busy) = busy_tcp_registrar().await;
    let (hanging_port, _listener, _held) = hanging_tcp_port().await;
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let dns = Arc::new(
        StaticResolver::new()
            .with_srv(
                "_sip._tcp.pbx.example.com",
                [
                    SrvRecord {
                        priority: 10,
                        weight: 0,
                        port: busy_port,
                        target: "one.pbx.example.com".into(),
                    },
                    SrvRecord {
                        priority: 20,
                        weight: 0,
                        port: hanging_port,
                        target: "two.pbx.example.com".into(),
                    },
                ],
            )
            .with_ip("one.pbx.example.com", [loopback])
            .with_ip("two.pbx.example.com", [loopback]),
    );
    let (phone, mut events) = phone_with(&dns, |account, _| {
        account.transport = config_export::Transport::Tcp;
    })
    .await;
    next_event(&mut events, "the first server's 503", |e| {
        matches!(
            e,
            PhoneEvent::Registration {
                status: RegistrationStatus::Failed { status: 503, .. },
                ..
            }
        )
    })
    .await;
    busy.recv().await.unwrap();
    // The phone now tries to reach the second server, which takes until
    // the connect timeout (10 s). Meanwhile it answers its user.
    let accounts = tokio::time::timeout(Duration::from_secs(2), phone.accounts())
        .await
        .expect("the phone answers while it connects to the next server")
        .unwrap();
    assert_eq!(accounts.len(), 1);
    phone.shutdown().await.unwrap();
}

/// What a server on loopback got: the method, the Via branch and the
/// Route headers of each request.
type Seen = mpsc::UnboundedReceiver<(String, String, Vec<String>)>;

/// A UDP server on loopback that answers REGISTER with 200 and INVITE
/// with `invite_status`, absorbs ACK, and reports each request.
async fn server(invite_status: u16) -> (u16, Seen) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        // Bounded: a test sends a handful of requests.
        for _ in 0..30 {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(request) = Message::parse(buf[..len].to_vec()) else {
                continue;
            };
            let Some(method) = request.method().map(|m| m.as_str().to_owned()) else {
                continue;
            };
            let branch = request
                .via()
                .ok()
                .and_then(|v| v.branch().map(str::to_owned))
                .unwrap_or_default();
            let routes = request.header_values("Route").map(str::to_owned).collect();
            // Reported before it is answered: the test reads what came once
            // the phone has the answer.
            if tx.send((method.clone(), branch, routes)).is_err() {
                return;
            }
            let status = match method.as_str() {
                "REGISTER" => 200,
                "INVITE" => invite_status,
                _ => 0,
            };
            if status > 0 {
                let mut response = Message::response_to(&request, status, "Answer")
                    .unwrap()
                    .to_tag("server");
                if method == "REGISTER" {
                    let contact = request.header("Contact").unwrap_or("").to_owned();
                    response = response
                        .header("Contact", &format!("{contact};expires=120"))
                        .unwrap();
                }
                let response = response.build().unwrap();
                socket.send_to(&response.to_bytes(), from).await.unwrap();
            }
        }
    });
    (port, rx)
}

/// The INVITEs a server got so far, as (branch, Route headers).
/// One per transaction: a retransmission (same branch) counts once.
fn invites(seen: &mut Seen) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (method, branch, routes) in std::iter::from_fn(|| seen.try_recv().ok()) {
        if method == "INVITE" && !out.iter().any(|(b, _)| *b == branch) {
            out.push((branch, routes));
        }
    }
    out
}

/// Dials `sip:bob@pbx.example.com` and waits for the call to end; the
/// reason it ended.
async fn call_ends(phone: &Phone, events: &mut softphone::Events) -> EndReason {
    let call = phone.dial(None, "sip:bob@pbx.example.com").await.unwrap();
    match common::call_state(events, Some(&call), "the call to end", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await
    {
        CallState::Ended(reason) => reason,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3263_4_3_an_invite_answered_503_goes_to_the_next_server() {
    let (first_port, mut first) = server(503).await;
    let (second_port, mut second) = server(486).await;
    let dns = two_servers(first_port, second_port);
    let (phone, mut events) = phone(&dns).await;
    registered(&mut events, "registered with the first server").await;
    // The second server's answer is the call's: it got the INVITE.
    assert!(
        matches!(
            call_ends(&phone, &mut events).await,
            EndReason::Refused { status: 486, .. }
        ),
        "the call ends with the second server's answer"
    );
    let (first_invites, second_invites) = (invites(&mut first), invites(&mut second));
    assert_eq!((first_invites.len(), second_invites.len()), (1, 1));
    // A new transaction: a new branch.
    assert_ne!(first_invites[0].0, second_invites[0].0);
    phone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3263_4_3_a_direct_call_answered_503_goes_to_the_next_server() {
    let (first_port, mut first) = server(503).await;
    let (second_port, mut second) = server(486).await;
    let dns = two_servers(first_port, second_port);
    // No registrar, no proxy: the call goes where DNS says the callee's
    // domain is served.
    let (phone, mut events) = phone_with(&dns, |_, pc| pc.register = false).await;
    assert!(matches!(
        call_ends(&phone, &mut events).await,
        EndReason::Refused { status: 486, .. }
    ));
    let (first_invites, second_invites) = (invites(&mut first), invites(&mut second));
    assert_eq!((first_invites.len(), second_invites.len()), (1, 1));
    assert_ne!(first_invites[0].0, second_invites[0].0);
    // Nothing preloaded: no Route on either.
    assert!(first_invites[0].1.is_empty() && second_invites[0].1.is_empty());
    phone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shutdowns_at_once_both_wait_for_one_removal() {
    let (first_port, mut first) = registrar(200).await;
    let (second_port, _second) = registrar(200).await;
    let dns = two_servers(first_port, second_port);
    let (phone, mut events) = phone(&dns).await;
    registered(&mut events, "registered").await;
    let other = phone.clone();
    let (a, b) = tokio::join!(phone.shutdown(), other.shutdown());
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    // The REGISTER and one removal, not two.
    let count = std::iter::from_fn(|| first.try_recv().ok()).count();
    assert_eq!(count, 2);
}

/// RFC 5922 §3.1: a TLS registrar is verified for the name in its URI.
/// Its certificate names `pbx.test` only, as public certificates do (no IP
/// address): the REGISTER must go over a connection verified for that
/// name. Before, the phone's connect check used the name but the REGISTER
/// went over a second connection verified for the IP address, which the
/// certificate refused, so the account never registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5922_a_tls_registrar_is_verified_for_its_name_not_its_address() {
    use sip_tokio::{
        IncomingEvent, ListenerOptions, TlsServerConfig, TransportConfig, TransportKind, Transports,
    };
    let ca = testkit::TestCa::new().unwrap();
    let cert = ca.issue("pbx", &["pbx.test"]).unwrap();
    let (server, mut requests) = Transports::new(TransportConfig::default());
    let tls = TlsServerConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
    let addr = server
        .bind(
            TransportKind::Tls,
            "127.0.0.1:0".parse().unwrap(),
            ListenerOptions::new().with_tls(tls),
        )
        .await
        .unwrap();
    // Answers each REGISTER 200, granting what was asked.
    tokio::spawn(async move {
        // Bounded: a registration and its removal.
        for _ in 0..20 {
            let Some(incoming) = requests.recv().await else {
                return;
            };
            let IncomingEvent::Message(request) = &incoming.event else {
                continue;
            };
            if request.method() != Some(&sip_core::Method::Register) {
                continue;
            }
            let contact = request.header("Contact").unwrap_or("").to_owned();
            let ok = Message::response_to(request, 200, "OK")
                .unwrap()
                .to_tag("pbx")
                .header("Contact", &format!("{contact};expires=600"))
                .unwrap()
                .build()
                .unwrap();
            let _ = server.send(incoming.reply(ok.to_bytes())).await;
        }
    });
    let dns =
        Arc::new(StaticResolver::new().with_ip("pbx.test", [IpAddr::V4(Ipv4Addr::LOCALHOST)]));
    let mut account = Account::new(
        "office",
        "alice",
        format!("sip:pbx.test:{};transport=tls", addr.port()),
    );
    account.transport = config_export::Transport::Tls;
    let mut pc = PhoneConfig::new(Config::default());
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.dns = Dns::Custom(dns);
    pc.config.accounts.push(account);
    pc.config.tls.trust.push(config_export::TrustAnchor::File(
        ca.ca_cert_path().display().to_string(),
    ));
    let (phone, mut events) = Phone::start(pc).await.unwrap();
    registered(&mut events, "registered over TLS").await;
    phone.shutdown().await.unwrap();
}
