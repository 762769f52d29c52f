//! OutboundClient over real sockets against a small registrar built on
//! sip-tokio: flows over secure WebSocket (RFC 7118) and TCP, keep-alives
//! paced by the registrar's Flow-Timer, and flows the registrar drops.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a failed driver step should fail loudly; what was sent is printed"
)]

use std::net::SocketAddr;
use std::time::Duration;

use proxy_client::InstanceId;
use proxy_client::outbound::{OutboundConfig, ProxyTarget};
use proxy_client::outbound_client::{OutboundClient, OutboundClientConfig, OutboundEvent};
use sip_core::endpoint::Transport;
use sip_core::{Message, Method};
use sip_tokio::{
    IncomingEvent, ListenerOptions, TlsClientConfig, TlsServerConfig, TransportConfig,
    TransportKind, Transports,
};
use testkit::TestCa;
use tokio::sync::mpsc;

/// A registrar that accepts every REGISTER with a Flow-Timer and reports
/// what it received.
async fn registrar(
    kind: TransportKind,
    ca: &TestCa,
    flow_timer: u32,
) -> (SocketAddr, Transports, mpsc::UnboundedReceiver<Message>) {
    registrar_answering_after(kind, ca, flow_timer, Duration::ZERO, false).await
}

/// [`registrar`], answering each request `delay` after it came, and a
/// REGISTER with push parameters 555 when `refuse_push`.
async fn registrar_answering_after(
    kind: TransportKind,
    ca: &TestCa,
    flow_timer: u32,
    delay: Duration,
    refuse_push: bool,
) -> (SocketAddr, Transports, mpsc::UnboundedReceiver<Message>) {
    let (server, mut incoming) = Transports::new(TransportConfig::default());
    let mut options = ListenerOptions::new();
    if kind.is_secure() {
        let tls = TlsServerConfig::from_pem(
            ca.server().cert_pem.as_bytes(),
            ca.server().key_pem.as_bytes(),
        )
        .unwrap();
        options = options.with_tls(tls);
    }
    let addr = server
        .bind(kind, "127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let responder = server.clone();
    tokio::spawn(async move {
        while let Some(i) = incoming.recv().await {
            let IncomingEvent::Message(message) = &i.event else {
                continue;
            };
            let _ = seen_tx.send(message.clone());
            if !message.is_request() {
                continue;
            }
            tokio::time::sleep(delay).await;
            let pushed = message.header("Contact").unwrap_or("").contains("pn-");
            if refuse_push && pushed {
                let refused =
                    Message::response_to(message, 555, "Push Notification Service Not Supported")
                        .unwrap()
                        .to_tag("reg")
                        .build()
                        .unwrap();
                let _ = responder.send(i.reply(refused.to_bytes())).await;
                continue;
            }
            let mut ok = Message::response_to(message, 200, "OK")
                .unwrap()
                .to_tag("reg");
            if message.method() == Some(&Method::Register) {
                let contact = message.header("Contact").unwrap_or("").to_owned();
                ok = ok
                    .header("Contact", &contact)
                    .unwrap()
                    .header("Flow-Timer", &flow_timer.to_string())
                    .unwrap()
                    .header("Require", "outbound")
                    .unwrap();
            }
            let _ = responder
                .send(i.reply(ok.build().unwrap().to_bytes()))
                .await;
            if message.method() == Some(&Method::Options) {
                // Our own request to the client, over its flow.
                let options = Message::request(Method::Options, "sip:alice@example.test")
                    .header("Via", "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKserver1")
                    .unwrap()
                    .header("From", "<sip:registrar@example.test>;tag=s1")
                    .unwrap()
                    .header("To", "<sip:alice@example.test>")
                    .unwrap()
                    .header("Call-ID", "server-options-1")
                    .unwrap()
                    .header("CSeq", "1 OPTIONS")
                    .unwrap()
                    .header("Max-Forwards", "70")
                    .unwrap()
                    .build()
                    .unwrap();
                let _ = responder.send(i.reply(options.to_bytes())).await;
            }
        }
    });
    (addr, server, seen_rx)
}

fn config(target: ProxyTarget, ca: &TestCa) -> OutboundClientConfig {
    let instance = InstanceId::parse("urn:uuid:6a1f0f4c-2d8e-4a57-9f11-0c2b9c1c2e10").unwrap();
    let tls = TlsClientConfig::with_ca_pem(ca.ca_cert_pem().as_bytes()).unwrap();
    OutboundClientConfig::new(
        "sip:example.test",
        "sip:alice@example.test",
        "alice",
        instance,
        OutboundConfig::new(vec![target]),
    )
    .with_transport(TransportConfig::default().with_tls_client(tls))
}

async fn next_event(events: &mut mpsc::Receiver<OutboundEvent>) -> OutboundEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event in time")
        .expect("the client runs")
}

#[tokio::test]
async fn rfc7118_flow_over_secure_websocket_registers_and_keeps_alive() {
    let ca = TestCa::new().unwrap();
    let (addr, _server, mut seen) = registrar(TransportKind::Wss, &ca, 2).await;
    let target = ProxyTarget::new(Transport::Wss, addr).with_server_name("sip.test");
    let mut config = config(target, &ca);
    // A missing pong would fail the flow 1 s after a ping.
    config.outbound.keepalive.pong_timeout = Duration::from_secs(1);
    let (handle, mut events) = OutboundClient::spawn(config).unwrap();

    let register = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    let contact = register.header("Contact").unwrap().to_owned();
    println!("Contact over WSS: {contact}");
    assert!(contact.contains(".invalid;transport=wss;ob>"), "{contact}");
    assert!(
        contact.contains("+sip.instance=\"<urn:uuid:6a1f0f4c-2d8e-4a57-9f11-0c2b9c1c2e10>\""),
        "{contact}"
    );
    assert!(contact.contains(";reg-id=1"), "{contact}");
    assert!(register.header("Via").unwrap().starts_with("SIP/2.0/WSS "));
    assert!(register.header("Route").unwrap().contains(";lr;ob"));
    assert!(register.header("Supported").unwrap().contains("outbound"));

    assert!(matches!(
        next_event(&mut events).await,
        OutboundEvent::Registered { reg_id: 1, .. }
    ));
    assert!(matches!(
        next_event(&mut events).await,
        OutboundEvent::FlowUp { proxy: 0, .. }
    ));
    // Flow-Timer 2 s: pings go out every 1.6-2 s, WebSocket pongs come
    // back within the 1 s pong timeout, and the flow stays up over several
    // intervals.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let status = handle.status();
    assert_eq!(
        status[0].state,
        proxy_client::outbound::FlowState::Up,
        "{status:?}"
    );
    assert!(events.try_recv().is_err(), "no flow failure");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_tcp_flow_the_registrar_drops_is_replaced() {
    let ca = TestCa::new().unwrap();
    let (addr, server, mut seen) = registrar(TransportKind::Tcp, &ca, 120).await;
    let (handle, mut events) =
        OutboundClient::spawn(config(ProxyTarget::new(Transport::Tcp, addr), &ca)).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        first
            .header("Contact")
            .unwrap()
            .contains(";transport=tcp;ob")
    );
    assert!(matches!(
        next_event(&mut events).await,
        OutboundEvent::Registered { .. }
    ));
    assert!(matches!(
        next_event(&mut events).await,
        OutboundEvent::FlowUp { .. }
    ));

    // The server closes the connection: the flow fails and a new one
    // registers at once (it had been up, so no back-off).
    for c in server.connections() {
        server.close(c.id).await.unwrap();
    }
    assert!(matches!(
        next_event(&mut events).await,
        OutboundEvent::FlowFailed {
            reason: proxy_client::outbound::FlowFailure::Closed,
            ..
        }
    ));
    let second = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        first.header("Contact"),
        second.header("Contact"),
        "a new connection, a new local port"
    );
    assert!(matches!(
        next_event(&mut events).await,
        OutboundEvent::Registered { .. }
    ));
    assert!(matches!(
        next_event(&mut events).await,
        OutboundEvent::FlowUp { .. }
    ));

    // Dropped again right after the 200: the second short-lived flow in a
    // row backs off (30-60 s) instead of registering again in a loop.
    let dropped = tokio::time::Instant::now().into_std();
    for c in server.connections() {
        server.close(c.id).await.unwrap();
    }
    assert!(matches!(
        next_event(&mut events).await,
        OutboundEvent::FlowFailed { .. }
    ));
    let OutboundEvent::BackingOff { until, .. } = next_event(&mut events).await else {
        panic!("no back-off after the second short-lived flow");
    };
    assert!(
        until >= dropped + Duration::from_secs(29),
        "{:?}",
        until - dropped
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(1), seen.recv())
            .await
            .is_err(),
        "no REGISTER while backing off"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn requests_travel_both_ways_over_the_flow() {
    let ca = TestCa::new().unwrap();
    let (addr, _server, mut seen) = registrar(TransportKind::Tcp, &ca, 120).await;
    let (handle, mut events) =
        OutboundClient::spawn(config(ProxyTarget::new(Transport::Tcp, addr), &ca)).unwrap();
    let _register = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap();
    let via = loop {
        if let OutboundEvent::FlowUp { via, contact, .. } = next_event(&mut events).await {
            assert!(contact.contains(";transport=tcp;ob"));
            break via;
        }
    };
    assert!(via.starts_with("SIP/2.0/TCP 127.0.0.1:"), "{via}");

    // Client -> registrar, over the flow.
    let options = Message::request(Method::Options, "sip:example.test")
        .header("Via", &format!("{via};branch=z9hG4bKclient1;rport"))
        .unwrap()
        .header("From", "<sip:alice@example.test>;tag=c1")
        .unwrap()
        .header("To", "<sip:example.test>")
        .unwrap()
        .header("Call-ID", "client-options-1")
        .unwrap()
        .header("CSeq", "1 OPTIONS")
        .unwrap()
        .header("Max-Forwards", "70")
        .unwrap()
        .build()
        .unwrap();
    let id = handle.send_request(options, Some(1)).unwrap();
    let mut answered = false;
    let mut incoming = None;
    while !(answered && incoming.is_some()) {
        match next_event(&mut events).await {
            OutboundEvent::Response { request, response } => {
                assert_eq!((request, response.status()), (id, Some(200)));
                answered = true;
            }
            OutboundEvent::Request {
                reg_id,
                transaction,
                request,
            } => {
                // Registrar -> client, over the same flow.
                assert_eq!(reg_id, Some(1));
                assert_eq!(request.call_id().unwrap(), "server-options-1");
                incoming = Some((transaction, request));
            }
            _ => {}
        }
    }
    let (transaction, request) = incoming.unwrap();
    let ok = Message::response_to(&request, 200, "OK")
        .unwrap()
        .to_tag("c")
        .build()
        .unwrap();
    handle.respond(transaction, ok).unwrap();
    let response = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .unwrap()
            .unwrap();
        if !m.is_request() {
            break m;
        }
    };
    assert_eq!(response.status(), Some(200));
    assert_eq!(response.call_id().unwrap(), "server-options-1");

    // A request for a flow that does not exist fails at once.
    let orphan = Message::request(Method::Options, "sip:example.test")
        .header("Via", &format!("{via};branch=z9hG4bKclient2"))
        .unwrap()
        .header("From", "<sip:alice@example.test>;tag=c2")
        .unwrap()
        .header("To", "<sip:example.test>")
        .unwrap()
        .header("Call-ID", "client-options-2")
        .unwrap()
        .header("CSeq", "1 OPTIONS")
        .unwrap()
        .header("Max-Forwards", "70")
        .unwrap()
        .build()
        .unwrap();
    let id = handle.send_request(orphan, Some(7)).unwrap();
    loop {
        if let OutboundEvent::RequestFailed { request, reason } = next_event(&mut events).await {
            assert_eq!(
                (request, reason),
                (id, proxy_client::outbound_client::RequestFailure::NoFlow)
            );
            break;
        }
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn rfc8599_a_push_token_given_while_registering_reaches_the_registrar() {
    let ca = TestCa::new().unwrap();
    let (addr, _server, mut seen) = registrar_answering_after(
        TransportKind::Tcp,
        &ca,
        120,
        Duration::from_millis(300),
        false,
    )
    .await;
    let (handle, mut events) =
        OutboundClient::spawn(config(ProxyTarget::new(Transport::Tcp, addr), &ca)).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!first.header("Contact").unwrap().contains("pn-prid"));
    // The app's push token arrives while the first REGISTER waits for its
    // answer, as it does at start-up.
    handle
        .set_push_token(Some(
            proxy_client::push::PushToken::new("fcm", "token-one").unwrap(),
        ))
        .unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        OutboundEvent::Registered { .. }
    ));
    // A REGISTER with the token follows at once, not at the refresh.
    let second = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = seen.recv().await.unwrap();
            if m.method() == Some(&Method::Register) {
                return m;
            }
        }
    })
    .await
    .expect("a REGISTER with the new token");
    let contact = second.header("Contact").unwrap();
    assert!(contact.contains("pn-prid=token-one"), "{contact}");
    // The Contact the app is told to put in dialogs has no push
    // parameters (RFC 8599 §4.1: the peer must not learn the token).
    let dialog_contact = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match next_event(&mut events).await {
                OutboundEvent::Registered { contact, .. }
                | OutboundEvent::FlowUp { contact, .. } => {
                    return contact;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the registration with the token");
    assert!(dialog_contact.ends_with(";ob"), "{dialog_contact}");
    assert!(!dialog_contact.contains("pn-"), "{dialog_contact}");
    handle.shutdown().await;
}

#[tokio::test]
async fn rfc8599_a_555_on_each_of_two_flows_is_no_flow_failure() {
    let ca = TestCa::new().unwrap();
    let (one, _s1, _seen1) =
        registrar_answering_after(TransportKind::Tcp, &ca, 120, Duration::ZERO, true).await;
    let (two, _s2, _seen2) =
        registrar_answering_after(TransportKind::Tcp, &ca, 120, Duration::ZERO, true).await;
    let mut config = config(ProxyTarget::new(Transport::Tcp, one), &ca);
    config
        .outbound
        .proxies
        .push(ProxyTarget::new(Transport::Tcp, two));
    config.outbound.flows = 2;
    config.push = Some(proxy_client::push::PushToken::new("fcm", "token-one").unwrap());
    let (handle, mut events) = OutboundClient::spawn(config).unwrap();
    let mut registered = Vec::new();
    let mut seen = Vec::new();
    // Bounded: both flows refuse push once and register without it.
    while registered.len() < 2 && seen.len() < 20 {
        let event = next_event(&mut events).await;
        if let OutboundEvent::Registered {
            reg_id, contact, ..
        } = &event
        {
            assert!(!contact.contains("pn-"), "{contact}");
            registered.push(*reg_id);
        }
        seen.push(format!("{event:?}"));
    }
    registered.sort_unstable();
    assert_eq!(registered, [1, 2], "{seen:#?}");
    assert!(
        !seen
            .iter()
            .any(|e| e.contains("FlowFailed") || e.contains("RegistrationFailed")),
        "{seen:#?}"
    );
    handle.shutdown().await;
}
