//! The run loop (`Driver`) over loopback UDP: requests reach the endpoint and
//! answers go back on the driver's own sockets, sockets bound after the
//! driver are read too, and retransmission timers run on tokio's clock.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::net::SocketAddr;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use sip_core::endpoint::{Destination, Endpoint, EndpointConfig, EndpointEvent, Transport};
use sip_core::{Message, Method};
use sip_tokio::{Driver, DriverEvent, ListenerOptions, TransportConfig, TransportKind, Transports};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn options(call_id: &str, branch: &str) -> Message {
    Message::request(Method::Options, "sip:uas@127.0.0.1")
        .header(
            "Via",
            &format!("SIP/2.0/UDP 127.0.0.1;branch={branch};rport"),
        )
        .and_then(|b| b.header("From", "<sip:peer@example.com>;tag=p1"))
        .and_then(|b| b.header("To", "<sip:uas@example.com>"))
        .and_then(|b| b.header("Call-ID", call_id))
        .and_then(|b| b.header("CSeq", "1 OPTIONS"))
        .and_then(|b| b.header("Max-Forwards", "70"))
        .and_then(|b| b.build())
        .unwrap()
}

/// A driver listening on TCP only, and its address.
async fn tcp_driver() -> (Driver<StdRng>, SocketAddr) {
    let (transports, incoming) = Transports::new(TransportConfig::default());
    let local = transports
        .bind(TransportKind::Tcp, any_port(), ListenerOptions::new())
        .await
        .unwrap();
    let endpoint = Endpoint::new(EndpointConfig::default(), StdRng::seed_from_u64(7));
    (Driver::new(transports, incoming, endpoint), local)
}

async fn driver() -> (Driver<StdRng>, SocketAddr) {
    let (transports, incoming) = Transports::new(TransportConfig::default());
    let local = transports
        .bind(TransportKind::Udp, any_port(), ListenerOptions::new())
        .await
        .unwrap();
    let endpoint = Endpoint::new(EndpointConfig::default(), StdRng::seed_from_u64(7));
    (Driver::new(transports, incoming, endpoint), local)
}

/// Waits for the next request the endpoint reports (input that did not
/// parse is passed over), answers it 200 and sends the answer; returns the
/// request's source.
async fn answer_next(driver: &mut Driver<StdRng>) -> Destination {
    let (transaction, request, source) = loop {
        let event = timeout(WAIT, driver.next(None)).await.unwrap().unwrap();
        match event {
            DriverEvent::Endpoint(EndpointEvent::Request {
                transaction,
                request,
                source,
            }) => break (transaction, request, source),
            DriverEvent::Endpoint(EndpointEvent::BadMessage { .. }) => {}
            other => panic!("expected a request, got {other:?}"),
        }
    };
    let ok = Message::response_to(&request, 200, "OK")
        .map(|b| b.to_tag("u1"))
        .and_then(|b| b.build())
        .unwrap();
    let now = sip_tokio::now();
    driver
        .endpoint()
        .send_response(now, transaction, ok)
        .unwrap();
    timeout(WAIT, driver.flush()).await.unwrap();
    source
}

async fn receive(peer: &UdpSocket) -> (Message, SocketAddr) {
    let mut buf = vec![0; 65_535];
    let (len, from) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    (Message::parse(buf[..len].to_vec()).unwrap(), from)
}

#[tokio::test]
async fn udp_request_is_answered_from_the_socket_it_arrived_on() {
    let (mut driver, first) = driver().await;
    // A socket bound after the driver started is read by the driver too.
    let second = driver
        .transports()
        .bind(TransportKind::Udp, any_port(), ListenerOptions::new())
        .await
        .unwrap();
    let peer = UdpSocket::bind(any_port()).await.unwrap();
    let peer_addr = peer.local_addr().unwrap();

    peer.send_to(&options("loop-1", "z9hG4bKloop1").to_bytes(), first)
        .await
        .unwrap();
    let source = answer_next(&mut driver).await;
    assert_eq!(source.transport, Transport::Udp);
    assert_eq!(source.addr, peer_addr);
    let (ok, from) = receive(&peer).await;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.call_id().unwrap(), "loop-1");
    assert_eq!(from, first);
    // RFC 3581: the response names the port the request came from.
    assert_eq!(ok.via().unwrap().rport(), Some(Some(peer_addr.port())));

    peer.send_to(&options("loop-2", "z9hG4bKloop2").to_bytes(), second)
        .await
        .unwrap();
    let source = answer_next(&mut driver).await;
    assert_eq!(source.addr, peer_addr);
    let (ok, from) = receive(&peer).await;
    assert_eq!(ok.call_id().unwrap(), "loop-2");
    // RFC 3581 §4: from the address the request went to, the second
    // socket, not the first.
    assert_eq!(from, second);

    // A retransmitted request is absorbed and answered again by its
    // transaction, without a second event.
    peer.send_to(&options("loop-2", "z9hG4bKloop2").to_bytes(), second)
        .await
        .unwrap();
    let soon = sip_tokio::now() + Duration::from_millis(100);
    let event = timeout(WAIT, driver.next(Some(soon))).await.unwrap();
    assert!(matches!(event, Some(DriverEvent::Wakeup)), "{event:?}");
    let (again, _) = receive(&peer).await;
    assert_eq!(again.status(), Some(200));
    assert_eq!(again.call_id().unwrap(), "loop-2");
}

#[tokio::test]
async fn a_driver_on_ipv4_and_ipv6_answers_each_peer_over_its_own_family() {
    let (mut driver, v4) = driver().await;
    let v6 = driver
        .transports()
        .bind(
            TransportKind::Udp,
            "[::1]:0".parse().unwrap(),
            ListenerOptions::new(),
        )
        .await
        .unwrap();
    let peer = UdpSocket::bind("[::1]:0").await.unwrap();
    let request = Message::request(Method::Options, "sip:uas@[::1]")
        .header("Via", "SIP/2.0/UDP [::1];branch=z9hG4bKsix;rport")
        .and_then(|b| b.header("From", "<sip:peer@example.com>;tag=p6"))
        .and_then(|b| b.header("To", "<sip:uas@example.com>"))
        .and_then(|b| b.header("Call-ID", "six"))
        .and_then(|b| b.header("CSeq", "1 OPTIONS"))
        .and_then(|b| b.header("Max-Forwards", "70"))
        .and_then(|b| b.build())
        .unwrap();
    peer.send_to(&request.to_bytes(), v6).await.unwrap();
    answer_next(&mut driver).await;
    let (ok, from) = receive(&peer).await;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(from, v6);

    // A request of ours to an IPv6 peer that never wrote to us leaves from
    // the IPv6 socket, though the IPv4 one was bound first.
    let other = UdpSocket::bind("[::1]:0").await.unwrap();
    let now = sip_tokio::now();
    let to = Destination {
        transport: Transport::Udp,
        addr: other.local_addr().unwrap(),
        connection: None,
    };
    driver
        .endpoint()
        .send_request(now, options("six-out", "z9hG4bKsixout"), to)
        .unwrap();
    timeout(WAIT, driver.flush()).await.unwrap();
    let (out, from) = receive(&other).await;
    assert_eq!(out.call_id().unwrap(), "six-out");
    assert_eq!(from, v6);
    assert_ne!(from, v4);
}

#[tokio::test]
async fn keep_alives_and_garbage_do_not_stall_the_socket() {
    let (mut driver, local) = driver().await;
    let peer = UdpSocket::bind(any_port()).await.unwrap();
    // More than the driver reads in one round, none of them a message.
    for i in 0..40 {
        let junk: &[u8] = if i % 2 == 0 { b"\r\n\r\n" } else { b"not sip" };
        peer.send_to(junk, local).await.unwrap();
    }
    peer.send_to(&options("after-junk", "z9hG4bKjunk").to_bytes(), local)
        .await
        .unwrap();
    answer_next(&mut driver).await;
    let (ok, _) = receive(&peer).await;
    assert_eq!(ok.call_id().unwrap(), "after-junk");
}

/// RFC 3261 §17.1.2.2: over UDP a non-INVITE request goes out at 0, 0.5,
/// 1.5, 3.5, 7.5 s and then every 4 s (T2) until Timer F at 64·T1 = 32 s.
#[tokio::test(start_paused = true)]
async fn rfc3261_17_1_2_2_request_is_retransmitted_until_timer_f() {
    let (mut driver, _) = driver().await;
    let peer = UdpSocket::bind(any_port()).await.unwrap();
    let start = tokio::time::Instant::now();
    let branch = driver.endpoint().new_branch();
    let destination = Destination {
        transport: Transport::Udp,
        addr: peer.local_addr().unwrap(),
        connection: None,
    };
    let tx = driver
        .endpoint()
        .send_request(
            sip_tokio::now(),
            options("silent-peer", &branch),
            destination,
        )
        .unwrap();
    let event = timeout(Duration::from_secs(60), driver.next(None))
        .await
        .unwrap();
    let Some(DriverEvent::Endpoint(EndpointEvent::ClientTimedOut { transaction })) = event else {
        panic!("expected Timer F, got {event:?}");
    };
    assert_eq!(transaction, tx);
    let elapsed = start.elapsed();
    assert!(
        (Duration::from_secs(32)..Duration::from_millis(32_100)).contains(&elapsed),
        "{elapsed:?}"
    );
    let mut sent = 0;
    let mut buf = vec![0; 65_535];
    while let Ok((len, _)) = peer.try_recv_from(&mut buf) {
        let m = Message::parse(buf[..len].to_vec()).unwrap();
        assert_eq!(m.call_id().unwrap(), "silent-peer");
        sent += 1;
    }
    assert_eq!(sent, 11);
}

/// Has the endpoint send an OPTIONS with Call-ID `call_id` over a
/// connection transport to `addr`.
fn send_options(
    driver: &mut Driver<StdRng>,
    transport: Transport,
    addr: SocketAddr,
    call_id: &str,
) {
    let branch = format!("z9hG4bK{call_id}");
    let mut out = options(call_id, &branch);
    let via = format!("SIP/2.0/{} 127.0.0.1;branch={branch}", transport.as_str());
    out.set_header("Via", &via).unwrap();
    driver
        .endpoint()
        .send_request(
            sip_tokio::now(),
            out,
            Destination {
                transport,
                addr,
                connection: None,
            },
        )
        .unwrap();
}

/// A connection whose handshake hangs (a proxy that accepts TCP and never
/// answers the WebSocket upgrade) holds up only its own messages: a UDP
/// request that arrives meanwhile is served at once, not after the 10 s
/// connect timeout.
#[tokio::test]
async fn a_hanging_connection_does_not_hold_up_the_loop() {
    let (mut driver, local) = driver().await;
    let silent = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (stream, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(stream);
    });
    send_options(&mut driver, Transport::Ws, silent_addr, "hangs");
    let peer = UdpSocket::bind(any_port()).await.unwrap();
    peer.send_to(&options("udp", "z9hG4bKudp").to_bytes(), local)
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let source = timeout(Duration::from_secs(2), answer_next(&mut driver))
        .await
        .expect("the UDP request waited for the hanging connection");
    assert_eq!(source.addr, peer.local_addr().unwrap());
    let (answer, _) = receive(&peer).await;
    assert_eq!(answer.status(), Some(200));
    assert!(start.elapsed() < Duration::from_secs(2));
    hold.abort();
}

/// Messages for connections leave from a queue of their own; `settle`
/// waits for them, so what is sent just before the transports shut down
/// (a BYE at the end of a session) still arrives.
#[tokio::test]
async fn settle_lets_the_last_connection_messages_out() {
    use tokio::io::AsyncReadExt;
    let (mut driver, _) = driver().await;
    let peer = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    send_options(&mut driver, Transport::Tcp, peer_addr, "last");
    driver.flush().await;
    driver.settle(WAIT).await;
    driver.transports().shutdown();
    let (mut stream, _) = timeout(WAIT, peer.accept()).await.unwrap().unwrap();
    let mut got = Vec::new();
    let _ = timeout(WAIT, stream.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("Call-ID: last"), "{text:?}");
}

/// RFC 3261 §18.2.2: a response whose connection closed before it was sent
/// goes over a new connection to the peer's address at the Via's sent-by
/// port, where the peer listens, not to the port it connected from.
#[tokio::test]
async fn rfc3261_18_2_2_a_response_after_its_connection_closed_goes_to_the_sent_by_port() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut driver, local) = tcp_driver().await;
    // The peer listens here, and connects from another port.
    let listening = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let sent_by = listening.local_addr().unwrap();
    let request = Message::request(Method::Options, "sip:uas@127.0.0.1")
        .header("Via", &format!("SIP/2.0/TCP {sent_by};branch=z9hG4bKlost"))
        .and_then(|b| b.header("From", "<sip:peer@example.com>;tag=p1"))
        .and_then(|b| b.header("To", "<sip:uas@example.com>"))
        .and_then(|b| b.header("Call-ID", "lost"))
        .and_then(|b| b.header("CSeq", "1 OPTIONS"))
        .and_then(|b| b.header("Max-Forwards", "70"))
        .and_then(|b| b.build())
        .unwrap();
    let mut first = tokio::net::TcpStream::connect(local).await.unwrap();
    first.write_all(&request.to_bytes()).await.unwrap();
    let event = timeout(WAIT, driver.next(None)).await.unwrap().unwrap();
    let DriverEvent::Endpoint(EndpointEvent::Request {
        transaction,
        request,
        source,
    }) = event
    else {
        panic!("expected a request, got {event:?}");
    };
    assert_ne!(source.addr, sent_by);
    // The peer goes away before the answer.
    drop(first);
    let closed = timeout(WAIT, async {
        loop {
            match driver.next(None).await {
                Some(DriverEvent::ConnectionClosed { .. }) | None => return,
                Some(_) => {}
            }
        }
    });
    closed.await.expect("the close is seen");
    let ok = Message::response_to(&request, 200, "OK")
        .map(|b| b.to_tag("u1"))
        .and_then(|b| b.build())
        .unwrap();
    driver
        .endpoint()
        .send_response(sip_tokio::now(), transaction, ok)
        .unwrap();
    driver.flush().await;
    let (mut stream, _) = timeout(WAIT, listening.accept())
        .await
        .expect("a connection to the sent-by port")
        .unwrap();
    let mut got = vec![0; 4096];
    let n = timeout(WAIT, stream.read(&mut got)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&got[..n]);
    assert!(text.starts_with("SIP/2.0 200"), "{text:?}");
    assert!(text.contains("Call-ID: lost"), "{text:?}");
}

/// Messages queued for a destination that cannot be reached fail together
/// with the attempt they waited behind, instead of each waiting out the
/// connect timeout in turn: three requests to a proxy whose WebSocket
/// handshake never completes all fail after one 10 s timeout, not after
/// 30 s (a re-REGISTER queued behind two BYEs went out half a minute late,
/// its transaction nearly over). Virtual time.
#[tokio::test(start_paused = true)]
async fn messages_behind_a_failed_connect_fail_with_it() {
    let (mut driver, _) = driver().await;
    let silent = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: one connection per attempt.
        for _ in 0..8 {
            let Ok((stream, _)) = silent.accept().await else {
                return;
            };
            held.push(stream);
        }
    });
    let start = tokio::time::Instant::now();
    for name in ["bye-1", "bye-2", "register"] {
        send_options(&mut driver, Transport::Ws, silent_addr, name);
    }
    let mut failed = 0;
    while failed < 3 {
        match timeout(Duration::from_secs(60), driver.next(None)).await {
            Ok(Some(DriverEvent::SendFailed { .. })) => failed += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("only {failed} of 3 sends failed"),
        }
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "{took:?} until all three failed"
    );
    hold.abort();
}

/// The same over TCP: a request framed by its Content-Length that does not
/// parse (no Max-Forwards) is answered 400 on its connection, which stays
/// open for the next request. It used to be dropped in silence, and the
/// sender waited 32 s for its transaction to time out.
#[tokio::test]
async fn a_tcp_request_that_does_not_parse_is_answered_400_on_its_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut driver, local) = tcp_driver().await;
    let mut peer = tokio::net::TcpStream::connect(local).await.unwrap();
    let bad = format!(
        "OPTIONS sip:uas@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/TCP {};branch=z9hG4bKbad\r\n\
         From: <sip:peer@example.com>;tag=p1\r\n\
         To: <sip:uas@example.com>\r\n\
         Call-ID: unparsed\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        peer.local_addr().unwrap()
    );
    peer.write_all(bad.as_bytes()).await.unwrap();
    let event = timeout(WAIT, driver.next(None)).await.unwrap().unwrap();
    assert!(
        matches!(
            event,
            DriverEvent::Endpoint(EndpointEvent::BadMessage { .. })
        ),
        "{event:?}"
    );
    driver.flush().await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let answer = timeout(WAIT, async {
        loop {
            let n = peer.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed instead of a 400");
            got.extend_from_slice(&buf[..n]);
            if let Ok(m) = Message::parse(got.clone()) {
                return m;
            }
        }
    })
    .await
    .expect("a 400 on the connection");
    assert_eq!(answer.status(), Some(400));
    assert_eq!(answer.call_id().unwrap(), "unparsed");
    // The connection still carries requests.
    let good = options("still-open", "z9hG4bKgood");
    peer.write_all(&good.to_bytes()).await.unwrap();
    let next = timeout(WAIT, driver.next(None)).await.unwrap().unwrap();
    assert!(
        matches!(next, DriverEvent::Endpoint(EndpointEvent::Request { ref request, .. })
            if request.call_id().unwrap() == "still-open"),
        "{next:?}"
    );
}

/// A request that does not parse (here, no Max-Forwards) reaching the
/// driver over UDP is answered 400 by the endpoint behind it, naming the
/// problem: the driver used to drop it, and the sender retransmitted for
/// 32 s without a clue.
#[tokio::test]
async fn a_udp_request_that_does_not_parse_is_answered_400() {
    let (mut driver, local) = driver().await;
    let peer = UdpSocket::bind(any_port()).await.unwrap();
    let raw = format!(
        "OPTIONS sip:uas@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {};branch=z9hG4bKbad;rport\r\n\
         From: <sip:peer@example.com>;tag=p1\r\n\
         To: <sip:uas@example.com>\r\n\
         Call-ID: unparsed\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        peer.local_addr().unwrap()
    );
    peer.send_to(raw.as_bytes(), local).await.unwrap();
    let event = timeout(WAIT, driver.next(None)).await.unwrap().unwrap();
    assert!(
        matches!(
            event,
            DriverEvent::Endpoint(EndpointEvent::BadMessage { .. })
        ),
        "{event:?}"
    );
    driver.flush().await;
    let (answer, _) = receive(&peer).await;
    assert_eq!(answer.status(), Some(400));
    assert_eq!(answer.call_id().unwrap(), "unparsed");
}
