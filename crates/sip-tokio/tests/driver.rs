//! Driver tests over loopback: real sockets, real TLS and WebSocket
//! handshakes, every wait bounded.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use sip_core::{Message, ParseErrorKind, ParseLimits};
use sip_tokio::{
    CloseReason, Incoming, IncomingEvent, ListenerOptions, OutboundMessage, TlsClientConfig,
    TlsServerConfig, TransportConfig, TransportError, TransportKind, Transports,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc::Receiver;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn request(call_id: &str, transport: &str) -> Bytes {
    Bytes::from(format!(
        "OPTIONS sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 127.0.0.1;branch=z9hG4bK{call_id};rport\r\n\
         From: <sip:alice@example.com>;tag=a\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

fn ok_to(request: &Message) -> Bytes {
    Message::response_to(request, 200, "OK")
        .unwrap()
        .build()
        .unwrap()
        .to_bytes()
}

async fn next(rx: &mut Receiver<Incoming>) -> Incoming {
    timeout(WAIT, rx.recv())
        .await
        .expect("no event in time")
        .expect("event channel closed")
}

fn message(incoming: &Incoming) -> &Message {
    match &incoming.event {
        IncomingEvent::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn call_id(incoming: &Incoming) -> &str {
    message(incoming).call_id().unwrap()
}

async fn layer(config: TransportConfig) -> (Transports, Receiver<Incoming>) {
    Transports::new(config)
}

async fn listener(
    kind: TransportKind,
    config: TransportConfig,
    options: ListenerOptions,
) -> (Transports, Receiver<Incoming>, SocketAddr) {
    let (t, rx) = layer(config).await;
    let addr = t.bind(kind, any_port(), options).await.unwrap();
    (t, rx, addr)
}

/// Reads until `n` bytes arrived.
async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("no bytes in time")
        .unwrap();
    buf
}

/// Waits for the peer to close: EOF or a reset.
async fn assert_closed_by_peer(stream: &mut TcpStream) {
    let mut buf = [0; 64];
    loop {
        match timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("still open")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

// ---------------------------------------------------------------- UDP

#[tokio::test]
async fn udp_round_trip_answers_the_source_address() {
    let (server, mut server_rx, server_addr) = listener(
        TransportKind::Udp,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    let (client, mut client_rx) = layer(TransportConfig::default()).await;
    let client_addr = client
        .bind(TransportKind::Udp, any_port(), ListenerOptions::new())
        .await
        .unwrap();

    let sent = client
        .send(OutboundMessage::new(
            TransportKind::Udp,
            server_addr,
            request("udp-1", "UDP"),
        ))
        .await
        .unwrap();
    assert_eq!(sent.local, client_addr);
    assert_eq!(sent.connection, None);

    let incoming = next(&mut server_rx).await;
    assert_eq!(incoming.kind, TransportKind::Udp);
    assert_eq!(incoming.remote, client_addr, "source address for rport");
    assert_eq!(incoming.local, server_addr);
    assert_eq!(incoming.connection, None);
    assert_eq!(call_id(&incoming), "udp-1");
    // The layer leaves the Via alone: received/rport are the core's job.
    assert_eq!(
        message(&incoming).header("Via"),
        Some("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKudp-1;rport")
    );

    let reply = incoming.reply(ok_to(message(&incoming)));
    assert_eq!(reply.destination, client_addr);
    assert_eq!(reply.local, Some(server_addr));
    server.send(reply).await.unwrap();

    let answer = next(&mut client_rx).await;
    assert_eq!(answer.remote, server_addr);
    assert_eq!(message(&answer).status(), Some(200));
}

#[tokio::test]
async fn udp_malformed_datagram_is_reported_and_not_answered() {
    let (_server, mut server_rx, server_addr) = listener(
        TransportKind::Udp,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    let peer = UdpSocket::bind(any_port()).await.unwrap();
    peer.send_to(b"NOT SIP AT ALL\r\n\r\n", server_addr)
        .await
        .unwrap();

    let incoming = next(&mut server_rx).await;
    assert!(matches!(incoming.event, IncomingEvent::BadMessage { .. }));
    assert_eq!(incoming.remote, peer.local_addr().unwrap());

    let mut buf = [0; 1500];
    let answer = timeout(Duration::from_millis(300), peer.recv_from(&mut buf)).await;
    assert!(answer.is_err(), "the transport layer must not answer");
}

#[tokio::test]
async fn udp_datagram_over_listener_limit_is_refused() {
    let options = ListenerOptions::new().with_limits(ParseLimits {
        max_message_size: 200,
        max_headers: 64,
    });
    let (_server, mut server_rx, server_addr) =
        listener(TransportKind::Udp, TransportConfig::default(), options).await;
    let peer = UdpSocket::bind(any_port()).await.unwrap();
    peer.send_to(&request("udp-big", "UDP"), server_addr)
        .await
        .unwrap();
    let incoming = next(&mut server_rx).await;
    assert!(matches!(
        incoming.event,
        IncomingEvent::BadMessage { error: ref e, .. } if matches!(e.kind, ParseErrorKind::MessageTooLarge { .. })
    ));
}

#[tokio::test]
async fn udp_send_without_a_socket_is_an_error() {
    let (client, _rx) = layer(TransportConfig::default()).await;
    let err = client
        .send(OutboundMessage::new(
            TransportKind::Udp,
            "127.0.0.1:5060".parse().unwrap(),
            request("none", "UDP"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::NoUdpSocket));
}

// ---------------------------------------------------------------- TCP framing

#[tokio::test]
async fn rfc3261_18_3_tcp_message_arriving_one_byte_at_a_time() {
    let (_server, mut server_rx, server_addr) = listener(
        TransportKind::Tcp,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    let mut peer = TcpStream::connect(server_addr).await.unwrap();
    peer.set_nodelay(true).unwrap();
    let bytes = request("tcp-bytes", "TCP");
    for byte in bytes.iter() {
        peer.write_all(std::slice::from_ref(byte)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let incoming = next(&mut server_rx).await;
    assert_eq!(incoming.kind, TransportKind::Tcp);
    assert_eq!(incoming.remote, peer.local_addr().unwrap());
    assert!(incoming.connection.is_some());
    assert_eq!(message(&incoming).to_bytes(), bytes);
}

#[tokio::test]
async fn rfc3261_18_3_two_messages_in_one_write() {
    let (_server, mut server_rx, server_addr) = listener(
        TransportKind::Tcp,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    let mut peer = TcpStream::connect(server_addr).await.unwrap();
    let mut both = request("first", "TCP").to_vec();
    both.extend_from_slice(&request("second", "TCP"));
    peer.write_all(&both).await.unwrap();

    let first = next(&mut server_rx).await;
    let second = next(&mut server_rx).await;
    assert_eq!(call_id(&first), "first");
    assert_eq!(call_id(&second), "second");
    assert_eq!(first.connection, second.connection);
}

#[tokio::test]
async fn rfc3261_18_3_bad_message_is_skipped_and_stream_continues() {
    let (_server, mut server_rx, server_addr) = listener(
        TransportKind::Tcp,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    let mut peer = TcpStream::connect(server_addr).await.unwrap();
    // Framed correctly (Content-Length 0) but missing mandatory headers.
    let mut bytes = b"OPTIONS sip:bob@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n".to_vec();
    bytes.extend_from_slice(&request("after-bad", "TCP"));
    peer.write_all(&bytes).await.unwrap();

    assert!(matches!(
        next(&mut server_rx).await.event,
        IncomingEvent::BadMessage { .. }
    ));
    assert_eq!(call_id(&next(&mut server_rx).await), "after-bad");
}

#[tokio::test]
async fn oversize_message_is_refused_and_connection_closed() {
    let options = ListenerOptions::new().with_limits(ParseLimits {
        max_message_size: 1024,
        max_headers: 64,
    });
    let (server, mut server_rx, server_addr) =
        listener(TransportKind::Tcp, TransportConfig::default(), options).await;
    let mut peer = TcpStream::connect(server_addr).await.unwrap();
    peer.write_all(
        b"MESSAGE sip:bob@example.com SIP/2.0\r\nContent-Length: 100000\r\n\r\nxxxxxxxx",
    )
    .await
    .unwrap();

    let bad = next(&mut server_rx).await;
    assert!(matches!(
        bad.event,
        IncomingEvent::BadMessage { error: ref e, .. } if matches!(e.kind, ParseErrorKind::MessageTooLarge { .. })
    ));
    let closed = next(&mut server_rx).await;
    assert_eq!(closed.connection, bad.connection);
    assert!(matches!(
        closed.event,
        IncomingEvent::ConnectionClosed(CloseReason::FramingError)
    ));
    assert_closed_by_peer(&mut peer).await;
    assert!(server.connections().is_empty());
}

// ---------------------------------------------------------------- keep-alive

#[tokio::test]
async fn rfc5626_4_4_1_ping_is_answered_and_pong_is_reported() {
    let (server, mut server_rx, server_addr) = listener(
        TransportKind::Tcp,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    let mut peer = TcpStream::connect(server_addr).await.unwrap();

    // The peer pings: the layer answers with a single CRLF by itself.
    peer.write_all(b"\r\n\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut peer, 2).await, b"\r\n");

    // A message tells the core the connection id; the core pings.
    peer.write_all(&request("ka", "TCP")).await.unwrap();
    let incoming = next(&mut server_rx).await;
    assert_eq!(call_id(&incoming), "ka");
    let id = incoming.connection.unwrap();
    server.ping(id).await.unwrap();
    assert_eq!(read_exactly(&mut peer, 4).await, b"\r\n\r\n");

    peer.write_all(b"\r\n").await.unwrap();
    let pong = next(&mut server_rx).await;
    assert_eq!(pong.connection, Some(id));
    assert!(matches!(pong.event, IncomingEvent::Pong));

    // A ping sent as plain bytes is a ping too: its pong is reported.
    let ping = OutboundMessage::new(
        TransportKind::Tcp,
        peer.local_addr().unwrap(),
        &b"\r\n\r\n"[..],
    )
    .with_connection(id);
    server.send(ping).await.unwrap();
    assert_eq!(read_exactly(&mut peer, 4).await, b"\r\n\r\n");
    peer.write_all(b"\r\n").await.unwrap();
    assert!(matches!(
        next(&mut server_rx).await.event,
        IncomingEvent::Pong
    ));

    // The peer's ping in two writes is one ping: one pong goes back, and
    // no pong of ours is reported.
    peer.write_all(b"\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    peer.write_all(b"\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut peer, 2).await, b"\r\n");
    peer.write_all(&request("after", "TCP")).await.unwrap();
    assert_eq!(call_id(&next(&mut server_rx).await), "after");
}

// ---------------------------------------------------------------- timeouts and caps

#[tokio::test(start_paused = true)]
async fn slowloris_connection_is_closed_after_the_read_timeout() {
    let config = TransportConfig::default()
        .with_read_timeout(Duration::from_secs(5))
        .with_idle_timeout(Some(Duration::from_secs(600)));
    let (_server, mut server_rx, server_addr) =
        listener(TransportKind::Tcp, config, ListenerOptions::new()).await;
    let mut peer = TcpStream::connect(server_addr).await.unwrap();
    peer.set_nodelay(true).unwrap();
    let start = Instant::now();
    peer.write_all(b"OPTIONS sip:bob@example.com SIP/2.0\r\n")
        .await
        .unwrap();
    // One byte a second keeps the connection busy but never ends the message.
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if peer.write_all(b"X").await.is_err() {
                return peer;
            }
        }
    });

    let closed = timeout(Duration::from_secs(60), server_rx.recv())
        .await
        .expect("slow peer was not cut off")
        .unwrap();
    assert!(matches!(
        closed.event,
        IncomingEvent::ConnectionClosed(CloseReason::ReadTimeout)
    ));
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(7),
        "closed after {elapsed:?}"
    );
    let mut peer = timeout(Duration::from_secs(60), trickle)
        .await
        .expect("peer kept writing")
        .unwrap();
    assert_closed_by_peer(&mut peer).await;
}

#[tokio::test(start_paused = true)]
async fn idle_connection_is_closed_after_the_idle_timeout() {
    let config = TransportConfig::default().with_idle_timeout(Some(Duration::from_secs(30)));
    let (_server, mut server_rx, server_addr) =
        listener(TransportKind::Tcp, config, ListenerOptions::new()).await;
    let mut peer = TcpStream::connect(server_addr).await.unwrap();
    peer.write_all(&request("idle", "TCP")).await.unwrap();
    let incoming = next(&mut server_rx).await;
    let start = Instant::now();

    let closed = timeout(Duration::from_secs(120), server_rx.recv())
        .await
        .expect("idle connection stayed open")
        .unwrap();
    assert_eq!(closed.connection, incoming.connection);
    assert!(matches!(
        closed.event,
        IncomingEvent::ConnectionClosed(CloseReason::IdleTimeout)
    ));
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(29) && elapsed <= Duration::from_secs(31),
        "closed after {elapsed:?}"
    );
    assert_closed_by_peer(&mut peer).await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let config = TransportConfig::default().with_max_connections(1);
    let (server, mut server_rx, server_addr) =
        listener(TransportKind::Tcp, config, ListenerOptions::new()).await;
    let mut first = TcpStream::connect(server_addr).await.unwrap();
    first.write_all(&request("kept", "TCP")).await.unwrap();
    assert_eq!(call_id(&next(&mut server_rx).await), "kept");

    let mut second = TcpStream::connect(server_addr).await.unwrap();
    assert_closed_by_peer(&mut second).await;
    assert_eq!(server.connections().len(), 1);

    // Outbound connections count against the same cap.
    let err = server
        .send(OutboundMessage::new(
            TransportKind::Tcp,
            "127.0.0.1:9".parse().unwrap(),
            request("out", "TCP"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TransportError::TooManyConnections { limit: 1 }
    ));
}

/// `layer` can still open a connection out: to a new listener, which gets
/// the message.
async fn assert_outbound_opens(layer: &Transports) {
    let (_other, mut other_rx, other_addr) = listener(
        TransportKind::Tcp,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    layer
        .send(OutboundMessage::new(
            TransportKind::Tcp,
            other_addr,
            request("out", "TCP"),
        ))
        .await
        .unwrap();
    assert_eq!(call_id(&next(&mut other_rx).await), "out");
}

/// One host opening connection after connection gets its share and no
/// more: the rest are closed at once, and outbound connections still open.
#[tokio::test]
async fn one_host_cannot_take_every_connection() {
    let config = TransportConfig::default()
        .with_max_connections(8)
        .with_max_connections_per_address(4);
    let (server, mut server_rx, server_addr) =
        listener(TransportKind::Tcp, config, ListenerOptions::new()).await;
    let mut kept = Vec::new();
    for k in 0..4 {
        let mut c = TcpStream::connect(server_addr).await.unwrap();
        c.write_all(&request(&format!("kept{k}"), "TCP"))
            .await
            .unwrap();
        assert_eq!(call_id(&next(&mut server_rx).await), format!("kept{k}"));
        kept.push(c);
    }
    for _ in 0..3 {
        let mut refused = TcpStream::connect(server_addr).await.unwrap();
        assert_closed_by_peer(&mut refused).await;
    }
    assert_eq!(server.connections().len(), 4);
    // Outbound still has room: to another listener.
    assert_outbound_opens(&server).await;
}

/// Accepted connections leave an eighth of the cap to outbound ones.
#[tokio::test]
async fn inbound_connections_leave_room_for_outbound() {
    let config = TransportConfig::default().with_max_connections(8);
    let (server, mut server_rx, server_addr) =
        listener(TransportKind::Tcp, config, ListenerOptions::new()).await;
    let mut kept = Vec::new();
    for k in 0..7 {
        let mut c = TcpStream::connect(server_addr).await.unwrap();
        c.write_all(&request(&format!("in{k}"), "TCP"))
            .await
            .unwrap();
        assert_eq!(call_id(&next(&mut server_rx).await), format!("in{k}"));
        kept.push(c);
    }
    let mut refused = TcpStream::connect(server_addr).await.unwrap();
    assert_closed_by_peer(&mut refused).await;
    assert_outbound_opens(&server).await;
}

#[tokio::test]
async fn connect_failure_is_returned_to_the_sender() {
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (client, _rx) = layer(TransportConfig::default()).await;
    let err = client
        .send(OutboundMessage::new(
            TransportKind::Tcp,
            port,
            request("refused", "TCP"),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Io {
                operation: "connect",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(client.connections().is_empty());
}

// ---------------------------------------------------------------- reuse

#[tokio::test]
async fn rfc3261_18_connections_are_reused_both_ways() {
    let (server, mut server_rx, server_addr) = listener(
        TransportKind::Tcp,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    // The client has no listener at all: everything comes back on its
    // outbound connection.
    let (client, mut client_rx) = layer(TransportConfig::default()).await;

    let first = client
        .send(OutboundMessage::new(
            TransportKind::Tcp,
            server_addr,
            request("reuse-1", "TCP"),
        ))
        .await
        .unwrap();
    let second = client
        .send(OutboundMessage::new(
            TransportKind::Tcp,
            server_addr,
            request("reuse-2", "TCP"),
        ))
        .await
        .unwrap();
    assert!(first.connection.is_some());
    assert_eq!(first.connection, second.connection);
    assert_eq!(client.connections().len(), 1);

    let one = next(&mut server_rx).await;
    let two = next(&mut server_rx).await;
    assert_eq!(one.connection, two.connection);
    assert_eq!(one.remote, first.local);

    // The response rides the inbound connection.
    server.send(one.reply(ok_to(message(&one)))).await.unwrap();
    let answer = next(&mut client_rx).await;
    assert_eq!(answer.connection, first.connection);
    assert_eq!(message(&answer).status(), Some(200));

    // A new request to the client's address, without naming a connection,
    // also takes the inbound connection instead of opening one.
    let sent = server
        .send(OutboundMessage::new(
            TransportKind::Tcp,
            one.remote,
            request("back", "TCP"),
        ))
        .await
        .unwrap();
    assert_eq!(sent.connection, one.connection);
    let back = next(&mut client_rx).await;
    assert_eq!(call_id(&back), "back");
    assert_eq!(back.connection, first.connection);
    assert_eq!(server.connections().len(), 1);
}

#[tokio::test]
async fn closing_a_connection_reports_it_and_forgets_it() {
    let (_server, mut server_rx, server_addr) = listener(
        TransportKind::Tcp,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    let (client, mut client_rx) = layer(TransportConfig::default()).await;
    let sent = client
        .send(OutboundMessage::new(
            TransportKind::Tcp,
            server_addr,
            request("close", "TCP"),
        ))
        .await
        .unwrap();
    let id = sent.connection.unwrap();
    next(&mut server_rx).await;

    client.close(id).await.unwrap();
    let closed = next(&mut client_rx).await;
    assert_eq!(closed.connection, Some(id));
    assert!(matches!(
        closed.event,
        IncomingEvent::ConnectionClosed(CloseReason::Local)
    ));
    let peer_side = next(&mut server_rx).await;
    assert!(matches!(
        peer_side.event,
        IncomingEvent::ConnectionClosed(CloseReason::PeerClosed)
    ));
    assert!(matches!(
        client.ping(id).await,
        Err(TransportError::UnknownConnection)
    ));

    // A message naming the closed connection goes to its destination anew.
    let again = client
        .send(
            OutboundMessage::new(TransportKind::Tcp, server_addr, request("again", "TCP"))
                .with_connection(id),
        )
        .await
        .unwrap();
    assert_ne!(again.connection, Some(id));
    assert_eq!(call_id(&next(&mut server_rx).await), "again");
}

// ---------------------------------------------------------------- TLS

struct TestPki {
    ca: String,
    cert: String,
    key: String,
}

/// A CA and a server certificate for `names`, made fresh for each test.
fn test_pki(names: &[&str]) -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "softphone test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &*ca)
        .unwrap();
    TestPki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn tls_listener_options(pki: &TestPki) -> ListenerOptions {
    ListenerOptions::new()
        .with_tls(TlsServerConfig::from_pem(pki.cert.as_bytes(), pki.key.as_bytes()).unwrap())
}

fn trusting(ca_pem: &str) -> TransportConfig {
    TransportConfig::default()
        .with_tls_client(TlsClientConfig::with_ca_pem(ca_pem.as_bytes()).unwrap())
}

async fn secure_exchange(kind: TransportKind) {
    let pki = test_pki(&["sip.example.test"]);
    let (server, mut server_rx, server_addr) =
        listener(kind, TransportConfig::default(), tls_listener_options(&pki)).await;
    let (client, mut client_rx) = layer(trusting(&pki.ca)).await;

    let sent = client
        .send(
            OutboundMessage::new(kind, server_addr, request("secure", kind.via_transport()))
                .with_server_name("sip.example.test"),
        )
        .await
        .unwrap();
    let incoming = next(&mut server_rx).await;
    assert_eq!(incoming.kind, kind);
    assert_eq!(call_id(&incoming), "secure");
    assert_eq!(incoming.remote, sent.local);

    server
        .send(incoming.reply(ok_to(message(&incoming))))
        .await
        .unwrap();
    let answer = next(&mut client_rx).await;
    assert_eq!(answer.connection, sent.connection);
    assert_eq!(message(&answer).status(), Some(200));

    let info = client.connections();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].server_name.as_deref(), Some("sip.example.test"));
}

#[tokio::test]
async fn tls_exchange_with_a_verified_server() {
    secure_exchange(TransportKind::Tls).await;
}

#[tokio::test]
async fn tls_wrong_server_name_is_refused() {
    let pki = test_pki(&["sip.example.test"]);
    let (_server, _server_rx, server_addr) = listener(
        TransportKind::Tls,
        TransportConfig::default(),
        tls_listener_options(&pki),
    )
    .await;
    let (client, _client_rx) = layer(trusting(&pki.ca)).await;
    let err = client
        .send(
            OutboundMessage::new(TransportKind::Tls, server_addr, request("x", "TLS"))
                .with_server_name("other.example.test"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls(_)), "{err:?}");
    assert!(client.connections().is_empty());
}

#[tokio::test]
async fn tls_untrusted_ca_is_refused() {
    let pki = test_pki(&["sip.example.test"]);
    let stranger = test_pki(&["sip.example.test"]);
    let (_server, mut server_rx, server_addr) = listener(
        TransportKind::Tls,
        TransportConfig::default(),
        tls_listener_options(&pki),
    )
    .await;
    let (client, _client_rx) = layer(trusting(&stranger.ca)).await;
    let err = client
        .send(
            OutboundMessage::new(TransportKind::Tls, server_addr, request("x", "TLS"))
                .with_server_name("sip.example.test"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls(_)), "{err:?}");
    // The server side reports the failed handshake, tied to no connection.
    let failed = next(&mut server_rx).await;
    assert!(matches!(failed.event, IncomingEvent::TransportError(_)));
    assert_eq!(failed.connection, None);
}

#[tokio::test]
async fn tls_without_server_name_verifies_the_ip_address() {
    let pki = test_pki(&["sip.example.test", "127.0.0.1"]);
    let (_server, mut server_rx, server_addr) = listener(
        TransportKind::Tls,
        TransportConfig::default(),
        tls_listener_options(&pki),
    )
    .await;
    let (client, _client_rx) = layer(trusting(&pki.ca)).await;
    client
        .send(OutboundMessage::new(
            TransportKind::Tls,
            server_addr,
            request("by-ip", "TLS"),
        ))
        .await
        .unwrap();
    assert_eq!(call_id(&next(&mut server_rx).await), "by-ip");

    // A certificate without the IP address does not do.
    let named_only = test_pki(&["sip.example.test"]);
    let (_other, _other_rx, other_addr) = listener(
        TransportKind::Tls,
        TransportConfig::default(),
        tls_listener_options(&named_only),
    )
    .await;
    let (client, _client_rx) = layer(trusting(&named_only.ca)).await;
    let err = client
        .send(OutboundMessage::new(
            TransportKind::Tls,
            other_addr,
            request("by-ip", "TLS"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls(_)), "{err:?}");
}

/// A TLS message without a server name wants a server verified for the
/// address: a connection verified for a name is not reused for it.
#[tokio::test]
async fn tls_without_server_name_does_not_reuse_a_connection_verified_for_a_name() {
    let pki = test_pki(&["sip.example.test"]);
    let (_server, mut server_rx, server_addr) = listener(
        TransportKind::Tls,
        TransportConfig::default(),
        tls_listener_options(&pki),
    )
    .await;
    let (client, _client_rx) = layer(trusting(&pki.ca)).await;
    client
        .send(
            OutboundMessage::new(TransportKind::Tls, server_addr, request("named", "TLS"))
                .with_server_name("sip.example.test"),
        )
        .await
        .unwrap();
    assert_eq!(call_id(&next(&mut server_rx).await), "named");
    let err = client
        .send(OutboundMessage::new(
            TransportKind::Tls,
            server_addr,
            request("by-ip", "TLS"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls(_)), "{err:?}");
}

#[tokio::test]
async fn tls_needs_a_client_configuration() {
    let (client, _rx) = layer(TransportConfig::default()).await;
    let err = client
        .send(OutboundMessage::new(
            TransportKind::Tls,
            "127.0.0.1:5061".parse().unwrap(),
            request("x", "TLS"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::NoTlsClientConfig { .. }));
    let err = client
        .bind(TransportKind::Tls, any_port(), ListenerOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::NoTlsServerConfig { .. }));
}

// ---------------------------------------------------------------- WebSocket

#[tokio::test]
async fn rfc7118_ws_exchange_with_the_sip_subprotocol() {
    let (server, mut server_rx, server_addr) = listener(
        TransportKind::Ws,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    let (client, mut client_rx) = layer(TransportConfig::default()).await;

    let sent = client
        .send(OutboundMessage::new(
            TransportKind::Ws,
            server_addr,
            request("ws-1", "WS"),
        ))
        .await
        .unwrap();
    let incoming = next(&mut server_rx).await;
    assert_eq!(incoming.kind, TransportKind::Ws);
    assert_eq!(call_id(&incoming), "ws-1");
    server
        .send(incoming.reply(ok_to(message(&incoming))))
        .await
        .unwrap();
    let answer = next(&mut client_rx).await;
    assert_eq!(answer.connection, sent.connection);
    assert_eq!(message(&answer).status(), Some(200));

    // Keep-alive over WebSocket: a ping frame, answered by a pong frame.
    client.ping(sent.connection.unwrap()).await.unwrap();
    let pong = next(&mut client_rx).await;
    assert!(matches!(pong.event, IncomingEvent::Pong));
}

#[tokio::test]
async fn rfc7118_ws_handshake_without_sip_subprotocol_is_refused() {
    let (_server, _server_rx, server_addr) = listener(
        TransportKind::Ws,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    let tcp = TcpStream::connect(server_addr).await.unwrap();
    let result = timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("ws://{server_addr}/"), tcp),
    )
    .await
    .unwrap();
    assert!(result.is_err(), "handshake without `sip` was accepted");
}

#[tokio::test]
async fn rfc7118_ws_binary_frame_and_crlf_keepalive() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Frame;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    let (_server, mut server_rx, server_addr) = listener(
        TransportKind::Ws,
        TransportConfig::default(),
        ListenerOptions::new(),
    )
    .await;
    let mut handshake = format!("ws://{server_addr}/")
        .into_client_request()
        .unwrap();
    handshake
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    let tcp = TcpStream::connect(server_addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(handshake, tcp)
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "sip"
    );

    ws.send(Frame::Binary(request("ws-bin", "WS")))
        .await
        .unwrap();
    assert_eq!(call_id(&next(&mut server_rx).await), "ws-bin");

    ws.send(Frame::text("\r\n\r\n")).await.unwrap();
    let pong = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong.into_data().as_ref(), b"\r\n");
}

#[tokio::test]
async fn rfc7118_wss_exchange_with_the_sip_subprotocol() {
    secure_exchange(TransportKind::Wss).await;
}

#[tokio::test(start_paused = true)]
async fn rfc7118_ws_trickled_frame_is_cut_off_after_the_read_timeout() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    let config = TransportConfig::default().with_read_timeout(Duration::from_secs(5));
    let (_server, mut server_rx, server_addr) =
        listener(TransportKind::Ws, config, ListenerOptions::new()).await;
    let mut handshake = format!("ws://{server_addr}/")
        .into_client_request()
        .unwrap();
    handshake
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    let tcp = TcpStream::connect(server_addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(handshake, tcp)
        .await
        .unwrap();
    let mut peer = ws.into_inner();
    peer.set_nodelay(true).unwrap();

    // A masked text frame announcing 100 bytes, whose payload then trickles.
    let start = Instant::now();
    peer.write_all(&[0x81, 0x80 | 100, 1, 2, 3, 4])
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if peer.write_all(b"X").await.is_err() {
                return;
            }
        }
    });
    let closed = timeout(Duration::from_secs(60), server_rx.recv())
        .await
        .expect("slow peer was not cut off")
        .unwrap();
    assert!(matches!(
        closed.event,
        IncomingEvent::ConnectionClosed(CloseReason::ReadTimeout)
    ));
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(7),
        "closed after {elapsed:?}"
    );
    timeout(Duration::from_secs(60), trickle)
        .await
        .expect("peer kept writing")
        .unwrap();
}

/// RFC 7118 over IPv6: a WSS server named by its IPv6 literal (as the
/// locator names a `sips:[::1];transport=ws` proxy) is reached: the
/// literal goes in brackets in the handshake's URI (RFC 3986 §3.2.2).
#[tokio::test]
async fn rfc7118_wss_to_an_ipv6_literal() {
    let pki = test_pki(&["::1"]);
    let (server, mut server_rx) = layer(TransportConfig::default()).await;
    let server_addr = server
        .bind(
            TransportKind::Wss,
            "[::1]:0".parse().unwrap(),
            tls_listener_options(&pki),
        )
        .await
        .expect("this test needs IPv6 loopback (::1)");
    let (client, _client_rx) = layer(trusting(&pki.ca)).await;
    client
        .send(
            OutboundMessage::new(TransportKind::Wss, server_addr, request("v6", "WSS"))
                .with_server_name("::1"),
        )
        .await
        .unwrap();
    assert_eq!(call_id(&next(&mut server_rx).await), "v6");
}
