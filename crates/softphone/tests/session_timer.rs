//! Session timers (RFC 4028), and the keep-alive of a registration's
//! connection, on tokio's paused clock: the sockets are real (loopback),
//! time is virtual, so minutes of a call pass in moments.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed step should fail loudly"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use config_export::{Account, Config, SrtpPolicy};
use softphone::{AudioSetup, CallState, Events, Phone, PhoneConfig, PhoneEvent};

async fn phone(user: &str, session_expires: Option<Duration>) -> (Phone, Events) {
    let mut c = Config::default();
    c.accounts.push(Account::new(user, user, "sip:127.0.0.1"));
    c.media.codecs = vec!["PCMU".into()];
    c.media.srtp = SrtpPolicy::Off;
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.audio = AudioSetup::Null;
    pc.session_expires = session_expires;
    pc.quality_interval = Duration::from_secs(3600);
    Phone::start(pc).await.unwrap()
}

/// Every event until `limit` of virtual time passes.
async fn drain(events: &mut Events, limit: Duration) -> Vec<PhoneEvent> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.next()).await {
        out.push(e);
    }
    out
}

/// A 200 that makes the phone the refresher, every 90 s, by UPDATE.
const WE_REFRESH_UPDATE_90: [(&str, &str); 3] = [
    ("Allow", "INVITE, ACK, BYE, UPDATE"),
    ("Session-Expires", "90;refresher=uac"),
    ("Require", "timer"),
];

/// A peer that is a bare UDP socket, answering by hand.
struct BarePeer {
    socket: tokio::net::UdpSocket,
    buf: Vec<u8>,
}

impl BarePeer {
    async fn bind() -> BarePeer {
        BarePeer {
            socket: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            buf: vec![0u8; 65_536],
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// The next SIP message and where it came from.
    async fn recv(&mut self) -> (sip_core::Message, std::net::SocketAddr) {
        loop {
            let (n, from) = self.socket.recv_from(&mut self.buf).await.unwrap();
            if let Ok(m) = sip_core::Message::parse(self.buf[..n].to_vec()) {
                return (m, from);
            }
        }
    }

    /// The next request of `method` within `limit` of virtual time.
    async fn request(&mut self, method: sip_core::Method, limit: Duration) -> sip_core::Message {
        tokio::time::timeout(limit, async {
            loop {
                let (m, _) = self.recv().await;
                if m.method() == Some(&method) {
                    return m;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {method} within {limit:?}"))
    }

    async fn send(&self, message: &sip_core::Message, to: std::net::SocketAddr) {
        self.socket.send_to(&message.to_bytes(), to).await.unwrap();
    }

    /// A 200 to `request` with the peer's Contact, `headers`, and SDP in
    /// `direction`; with a To tag when the request had none.
    fn ok(
        &self,
        request: &sip_core::Message,
        headers: &[(&str, &str)],
        direction: &str,
    ) -> sip_core::Message {
        let mut b = sip_core::Message::response_to(request, 200, "OK").unwrap();
        if request.header("To").is_some_and(|t| !t.contains("tag=")) {
            b = b.to_tag("bob1");
        }
        b = b
            .header("Contact", &format!("<sip:bob@{}>", self.addr()))
            .unwrap();
        for (name, value) in headers {
            b = b.header(name, value).unwrap();
        }
        b.header("Content-Type", "application/sdp")
            .unwrap()
            .body(self.sdp(direction))
            .build()
            .unwrap()
    }

    /// `phone` calls this peer, which answers 200 with `headers`: the call
    /// and the phone's address.
    async fn answered_call(
        &mut self,
        phone: &Phone,
        headers: &[(&str, &str)],
    ) -> (softphone::Call, std::net::SocketAddr) {
        let call = phone
            .dial(None, &format!("sip:bob@{}", self.addr()))
            .await
            .unwrap();
        let (invite, phone_addr) = self.recv().await;
        assert_eq!(invite.method(), Some(&sip_core::Method::Invite));
        let ok = self.ok(&invite, headers, "sendrecv");
        self.send(&ok, phone_addr).await;
        (call, phone_addr)
    }

    /// A final response to `request` without a body.
    fn answer(
        &self,
        request: &sip_core::Message,
        status: u16,
        headers: &[(&str, &str)],
    ) -> sip_core::Message {
        let mut b = sip_core::Message::response_to(request, status, "Answered").unwrap();
        for (name, value) in headers {
            b = b.header(name, value).unwrap();
        }
        b.build().unwrap()
    }

    /// An SDP answer or offer for PCMU on a port next to the peer's.
    fn sdp(&self, direction: &str) -> Vec<u8> {
        format!(
            "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n",
            self.addr().port() + 2
        )
        .into_bytes()
    }
}

#[tokio::test(start_paused = true)]
async fn a_refreshed_session_outlives_its_interval_several_times() {
    let (alice, mut alice_events) = phone("alice", Some(Duration::from_secs(90))).await;
    let (bob, mut bob_events) = phone("bob", None).await;
    let bob_addr = bob.accounts().await.unwrap()[0].local.unwrap();
    let call = alice
        .dial(None, &format!("sip:bob@{bob_addr}"))
        .await
        .unwrap();
    let incoming = loop {
        if let Some(PhoneEvent::IncomingCall { call, .. }) = bob_events.next().await {
            break call;
        }
    };
    incoming.answer().await.unwrap();
    // Five intervals: without refreshes Bob's timer would end the call at 90 s.
    let seen = drain(&mut bob_events, Duration::from_secs(450)).await;
    let ended: Vec<_> = seen
        .iter()
        .filter(|e| {
            matches!(
                e,
                PhoneEvent::CallState {
                    state: CallState::Ended(_),
                    ..
                }
            )
        })
        .collect();
    assert!(ended.is_empty(), "the call ended: {ended:?}");
    assert_eq!(incoming.info().await.unwrap().state, CallState::Connected);
    assert_eq!(call.info().await.unwrap().state, CallState::Connected);
    drop(alice_events.try_next());
    call.hangup().await.unwrap();
    alice.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
}

/// The refresher's UPDATE answered 481 (the peer lost the dialog, after a
/// restart say) ends the call with a BYE, as a re-INVITE's 481 does,
/// instead of leaving a dead call up and refreshing it forever. The peer
/// is a bare UDP socket answering by hand.
#[tokio::test(start_paused = true)]
async fn a_refresh_update_answered_481_ends_the_call() {
    use sip_core::Method;
    let (alice, mut events) = phone("alice", Some(Duration::from_secs(90))).await;
    let mut peer = BarePeer::bind().await;
    let (call, alice_addr) = peer.answered_call(&alice, &WE_REFRESH_UPDATE_90).await;
    // The ACK, then (45 s on) the refresh: an UPDATE, answered 481.
    let update = peer.request(Method::Update, Duration::from_secs(120)).await;
    let gone = peer.answer(&update, 481, &[]);
    peer.send(&gone, alice_addr).await;
    // Bounded: without the fix no BYE ever comes, only more UPDATEs.
    let bye = peer.request(Method::Bye, Duration::from_secs(120)).await;
    let bye_ok = peer.answer(&bye, 200, &[]);
    peer.send(&bye_ok, alice_addr).await;
    let seen = drain(&mut events, Duration::from_secs(5)).await;
    let ended = seen.iter().find_map(|e| match e {
        PhoneEvent::CallState {
            state: CallState::Ended(reason),
            ..
        } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        matches!(&ended, Some(softphone::EndReason::Failed(why)) if why.contains("481")),
        "{ended:?}"
    );
    assert!(call.info().await.is_err(), "the call is gone");
    alice.shutdown().await.unwrap();
}

/// A refresh the peer cannot take now (503 with Retry-After) is tried again
/// after that wait, not at the end of the interval, when the peer would
/// already have hung up; an UPDATE the peer does not implement (501) makes
/// the next refresh a re-INVITE.
#[tokio::test(start_paused = true)]
async fn rfc4028_a_refused_refresh_is_tried_again_soon() {
    use sip_core::Method;
    let (alice, mut events) = phone("alice", Some(Duration::from_secs(90))).await;
    let mut peer = BarePeer::bind().await;
    let (call, alice_addr) = peer.answered_call(&alice, &WE_REFRESH_UPDATE_90).await;
    let first = peer.request(Method::Update, Duration::from_secs(60)).await;
    let busy = peer.answer(&first, 503, &[("Retry-After", "2")]);
    let refused_at = tokio::time::Instant::now();
    peer.send(&busy, alice_addr).await;
    let second = peer.request(Method::Update, Duration::from_secs(10)).await;
    let waited = refused_at.elapsed();
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    let not_implemented = peer.answer(&second, 501, &[]);
    peer.send(&not_implemented, alice_addr).await;
    let reinvite = peer.request(Method::Invite, Duration::from_secs(10)).await;
    assert_eq!(
        reinvite.header("Session-Expires"),
        Some("90;refresher=uac"),
        "{reinvite:?}"
    );
    let ok = peer.ok(
        &reinvite,
        &[("Session-Expires", "90;refresher=uac")],
        "sendrecv",
    );
    peer.send(&ok, alice_addr).await;
    // Refreshed: the next one comes half an interval on, as a re-INVITE.
    peer.request(Method::Invite, Duration::from_secs(50)).await;
    let seen = drain(&mut events, Duration::from_secs(1)).await;
    assert!(
        !seen.iter().any(|e| matches!(
            e,
            PhoneEvent::CallState {
                state: CallState::Ended(_),
                ..
            }
        )),
        "{seen:?}"
    );
    drop(call);
    alice.shutdown().await.unwrap();
}

/// A peer that refuses every refresh gets a few retries, further apart
/// each time and none once it would hang up anyway, not a request every
/// five seconds for the rest of the call.
#[tokio::test(start_paused = true)]
async fn rfc4028_refused_refreshes_back_off() {
    use sip_core::Method;
    let (alice, _events) = phone("alice", Some(Duration::from_secs(90))).await;
    let mut peer = BarePeer::bind().await;
    let (_call, alice_addr) = peer
        .answered_call(
            &alice,
            &[
                ("Allow", "INVITE, ACK, BYE, UPDATE"),
                ("Session-Expires", "90;refresher=uac"),
            ],
        )
        .await;
    let mut refreshes = 0;
    let window = tokio::time::Instant::now() + Duration::from_secs(200);
    while let Ok((m, _)) = tokio::time::timeout_at(window, peer.recv()).await {
        if m.method() == Some(&Method::Update) {
            refreshes += 1;
            let busy = peer.answer(&m, 503, &[]);
            peer.send(&busy, alice_addr).await;
        }
    }
    // At 45 s, a retry at 50 s, then one per half interval: 95, 140, 185.
    assert!(
        (3..=6).contains(&refreshes),
        "{refreshes} refreshes in 200 s"
    );
    alice.shutdown().await.unwrap();
}

/// RFC 4028 §7.4 and §7.2: a hold re-INVITE is a session refresh, so it
/// carries the timer (Session-Expires with the roles as they are, and
/// Supported: timer); a 2xx without Session-Expires turns the timer off.
/// Before, the re-INVITE carried neither, a PBX that refreshes (Asterisk)
/// stopped refreshing, and the phone hung up at the end of the interval.
#[tokio::test(start_paused = true)]
async fn rfc4028_a_hold_carries_the_timer_and_a_2xx_without_one_turns_it_off() {
    use sip_core::Method;
    let (alice, mut events) = phone("alice", None).await;
    let mut peer = BarePeer::bind().await;
    // The peer refreshes, every 90 s.
    let (call, alice_addr) = peer
        .answered_call(
            &alice,
            &[
                ("Session-Expires", "90;refresher=uas"),
                ("Require", "timer"),
            ],
        )
        .await;
    peer.request(Method::Ack, Duration::from_secs(5)).await;
    call.hold().await.unwrap();
    let hold = peer.request(Method::Invite, Duration::from_secs(5)).await;
    assert_eq!(
        hold.header("Session-Expires"),
        Some("90;refresher=uas"),
        "{hold:?}"
    );
    assert!(
        hold.supported()
            .filter_map(Result::ok)
            .any(|o| o.eq_ignore_ascii_case("timer")),
        "{hold:?}"
    );
    // Answered without Session-Expires: no session expiration from now.
    let ok = peer.ok(&hold, &[], "recvonly");
    peer.send(&ok, alice_addr).await;
    peer.request(Method::Ack, Duration::from_secs(5)).await;
    // Five of the old intervals pass without a refresh: no BYE.
    let seen = drain(&mut events, Duration::from_secs(450)).await;
    assert!(
        !seen.iter().any(|e| matches!(
            e,
            PhoneEvent::CallState {
                state: CallState::Ended(_),
                ..
            }
        )),
        "{seen:?}"
    );
    assert!(matches!(
        call.info().await.unwrap().state,
        CallState::OnHold { local: true, .. }
    ));
    alice.shutdown().await.unwrap();
}

/// RFC 3261 §15: hung up before the caller's ACK of our 200, the phone
/// keeps resending the 200 and sends its BYE only once the ACK came.
#[tokio::test(start_paused = true)]
async fn rfc3261_15_a_hang_up_before_the_ack_sends_the_bye_after_it() {
    use sip_core::Method;
    let (alice, mut events) = phone("alice", None).await;
    let alice_addr = alice.accounts().await.unwrap()[0].local.unwrap();
    let mut peer = BarePeer::bind().await;
    let invite = format!(
        "INVITE sip:alice@{alice_addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {peer};branch=z9hG4bKbye-after-ack\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@{peer}>;tag=b1\r\nTo: <sip:alice@{alice_addr}>\r\n\
         Call-ID: bye-after-ack\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{peer}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n",
        peer = peer.addr(),
        len = peer.sdp("sendrecv").len()
    );
    let mut bytes = invite.into_bytes();
    bytes.extend(peer.sdp("sendrecv"));
    let invite = sip_core::Message::parse(bytes).unwrap();
    peer.send(&invite, alice_addr).await;
    let incoming = loop {
        if let Some(PhoneEvent::IncomingCall { call, .. }) = events.next().await {
            break call;
        }
    };
    incoming.answer().await.unwrap();
    let (ok, _) = loop {
        let (m, from) = peer.recv().await;
        if m.status() == Some(200) {
            break (m, from);
        }
    };
    incoming.hangup().await.unwrap();
    // Two seconds without an ACK: the 200 comes again, no BYE.
    let waited = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let (m, _) = peer.recv().await;
            assert_ne!(m.method(), Some(&Method::Bye), "a BYE before the ACK");
        }
    })
    .await;
    assert!(waited.is_err());
    let ack = format!(
        "ACK sip:alice@{alice_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {peer};branch=z9hG4bKack1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@{peer}>;tag=b1\r\nTo: {to}\r\n\
         Call-ID: bye-after-ack\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        peer = peer.addr(),
        to = ok.header("To").unwrap()
    );
    peer.send(
        &sip_core::Message::parse(ack.into_bytes()).unwrap(),
        alice_addr,
    )
    .await;
    let bye = peer.request(Method::Bye, Duration::from_secs(5)).await;
    let bye_ok = peer.answer(&bye, 200, &[]);
    peer.send(&bye_ok, alice_addr).await;
    let seen = drain(&mut events, Duration::from_secs(2)).await;
    assert!(
        seen.iter().any(|e| matches!(
            e,
            PhoneEvent::CallState {
                state: CallState::Ended(softphone::EndReason::LocalHangup),
                ..
            }
        )),
        "{seen:?}"
    );
    alice.shutdown().await.unwrap();
}

/// An account registered over TCP without outbound proxies keeps its
/// connection: the phone pings it every two minutes, so neither the
/// transport's 10-minute idle timeout nor a NAT closes it, and the
/// registrar can still reach the phone over it. Before, the phone's own
/// transport closed it after 10 quiet minutes, and calls could not reach
/// the phone until the next refresh. Virtual time: 11 minutes pass.
#[tokio::test(start_paused = true)]
async fn a_tcp_registration_connection_is_kept_open_with_pings() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let registrar = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = registrar.local_addr().unwrap().port();
    let (phone, _events) = tcp_phone(port).await;
    let (mut stream, _) = registrar.accept().await.unwrap();
    // The REGISTER (after the phone's connect ping), answered 200 for an hour.
    let register = next_register(&mut stream).await;
    stream.write_all(&register_ok(&register)).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(11 * 60);
    let mut pings = 0;
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => {
                pings += String::from_utf8_lossy(&buf[..n])
                    .matches("\r\n\r\n")
                    .count()
            }
        }
    };
    assert!(!closed, "the phone closed its registration connection");
    assert!(pings >= 4, "{pings} keep-alives in 11 minutes");
    phone.shutdown().await.unwrap();
}

/// A phone registering over TCP with the registrar on loopback `port`.
async fn tcp_phone(port: u16) -> (Phone, Events) {
    let mut c = Config::default();
    let mut account = Account::new(
        "alice",
        "alice",
        format!("sip:127.0.0.1:{port};transport=tcp"),
    );
    account.transport = config_export::Transport::Tcp;
    c.accounts.push(account);
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.audio = AudioSetup::Null;
    Phone::start(pc).await.unwrap()
}

/// A TCP registrar on loopback, a phone (and its events) registering with it, the
/// phone's connection (and its address) and the first REGISTER on it.
async fn first_register() -> (
    tokio::net::TcpListener,
    (Phone, Events),
    tokio::net::TcpStream,
    std::net::SocketAddr,
    sip_core::Message,
) {
    let registrar = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = registrar.local_addr().unwrap().port();
    let phone = tcp_phone(port).await;
    let limit = Duration::from_secs(10);
    let (mut first, peer) = tokio::time::timeout(limit, registrar.accept())
        .await
        .unwrap()
        .unwrap();
    let register = tokio::time::timeout(limit, next_register(&mut first))
        .await
        .unwrap();
    (registrar, phone, first, peer, register)
}

/// The registrar's 200 to `register`, granting an hour.
fn register_ok(register: &sip_core::Message) -> bytes::Bytes {
    let contact = register.header("Contact").unwrap().to_owned();
    sip_core::Message::response_to(register, 200, "OK")
        .unwrap()
        .to_tag("reg")
        .header("Contact", &format!("{contact};expires=3600"))
        .unwrap()
        .build()
        .unwrap()
        .to_bytes()
}

/// Reads the next REGISTER on `stream` (keep-alives before it skipped).
async fn next_register(stream: &mut tokio::net::TcpStream) -> sip_core::Message {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 65_536];
    let mut got = Vec::new();
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the REGISTER");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(start) = text.find("REGISTER ")
            && text[start..].contains("\r\n\r\n")
        {
            return sip_core::Message::parse(got[start..].to_vec()).unwrap();
        }
    }
}

/// Waits (within `limit`) for the phone's next connection and the REGISTER
/// on it (`what` names that wait), checks that its Contact names the new
/// connection, and answers it 200.
async fn registered_again(registrar: &tokio::net::TcpListener, limit: Duration, what: &str) {
    use tokio::io::AsyncWriteExt;
    let (mut second, second_peer) = tokio::time::timeout(limit, registrar.accept())
        .await
        .expect("the phone reconnects")
        .unwrap();
    let again = tokio::time::timeout(limit, next_register(&mut second))
        .await
        .expect(what);
    let contact = again.header("Contact").unwrap();
    assert!(
        contact.contains(&format!(":{};", second_peer.port())),
        "{contact} names the new connection {second_peer}"
    );
    second.write_all(&register_ok(&again)).await.unwrap();
}

/// The registrar's side of a TCP connection closing (a restart, a NAT
/// that forgot it) moves the binding to a new connection at once: the
/// phone reconnects and registers again with a Contact naming the new
/// connection, instead of staying unreachable until the next refresh, up
/// to an hour later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_registration_connection_is_replaced_and_registered_again_at_once() {
    use tokio::io::AsyncWriteExt;
    let (registrar, (phone, _events), mut first, first_peer, register) = first_register().await;
    let limit = Duration::from_secs(10);
    assert!(
        register
            .header("Contact")
            .unwrap()
            .contains(&first_peer.port().to_string())
    );
    first.write_all(&register_ok(&register)).await.unwrap();
    // Registered; now the registrar drops the connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first);
    registered_again(&registrar, limit, "and registers again at once").await;
    phone.shutdown().await.unwrap();
}

/// The registrar's side closing the connection while the REGISTER is out
/// (a restart mid-request): the REGISTER has failed, as its answer has no
/// way back, so the phone registers again over a new connection within
/// the retry back-off (2.5 to 5 s) rather than after waiting out Timer F
/// (32 s) for an answer that cannot come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_17_1_4_a_register_whose_connection_closed_is_sent_again_on_a_new_one() {
    let (registrar, (phone, _events), first, _, _) = first_register().await;
    drop(first);
    let limit = Duration::from_secs(15);
    registered_again(
        &registrar,
        limit,
        "and sends the REGISTER again without waiting out Timer F",
    )
    .await;
    phone.shutdown().await.unwrap();
}

/// A registrar that takes one REGISTER per connection, answers it 200 and
/// closes (a misconfigured balancer): each new connection registers, but
/// none stays up, so the back-off keeps growing instead of starting afresh
/// with every success, and the phone does not spin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_registers_and_closes_every_connection_is_retried_with_a_back_off() {
    use tokio::io::AsyncWriteExt;
    let (registrar, (phone, _events), mut first, _, register) = first_register().await;
    first.write_all(&register_ok(&register)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first);
    let mut registered = 0;
    let watch = tokio::time::sleep(Duration::from_secs(6));
    tokio::pin!(watch);
    loop {
        tokio::select! {
            () = &mut watch => break,
            conn = registrar.accept() => {
                let (mut stream, _) = conn.unwrap();
                let answered = tokio::time::timeout(Duration::from_secs(2), next_register(&mut stream)).await;
                if let Ok(register) = answered {
                    stream.write_all(&register_ok(&register)).await.unwrap();
                    registered += 1;
                }
                drop(stream);
            }
        }
    }
    // Back-off 0, 1, 2, 4 s: three or four rounds in 6 s.
    assert!(registered >= 2, "{registered}: the phone gave up");
    assert!(registered <= 6, "{registered} registrations in 6 s");
    phone.shutdown().await.unwrap();
}

/// A registrar that accepts connections and closes them at once (a load
/// balancer without a backend, a server at its connection limit) gets new
/// connections after a growing back-off, not as fast as they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_every_connection_is_retried_with_a_back_off() {
    use tokio::io::AsyncWriteExt;
    let (registrar, (phone, _events), mut first, _, register) = first_register().await;
    first.write_all(&register_ok(&register)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first);
    // From now on every connection is closed as soon as it comes.
    let mut accepted = 0;
    let watch = tokio::time::sleep(Duration::from_secs(4));
    tokio::pin!(watch);
    loop {
        tokio::select! {
            () = &mut watch => break,
            conn = registrar.accept() => {
                drop(conn.unwrap());
                accepted += 1;
            }
        }
    }
    assert!(accepted >= 2, "{accepted}: the phone gave up reconnecting");
    assert!(accepted <= 10, "{accepted} connections in 4 s");
    phone.shutdown().await.unwrap();
}
