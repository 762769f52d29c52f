//! The TURN client against a scripted server: challenges, stale nonces,
//! retransmission timing, refreshes, permissions, channels, indications.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proxy_client::stun::{Attribute, ChannelData, Class, IntegrityKey, Method, StunMessage};
use proxy_client::turn::{
    AllocationState, TurnClient, TurnConfig, TurnCredentials, TurnError, TurnEvent,
};

use crate::FixedRng;

const REALM: &str = "example.test";

fn server_addr() -> SocketAddr {
    "192.0.2.1:3478".parse().unwrap()
}

fn relayed() -> SocketAddr {
    "192.0.2.1:50000".parse().unwrap()
}

fn peer() -> SocketAddr {
    "198.51.100.7:4000".parse().unwrap()
}

/// A TURN server that knows one user, alice/secret.
struct Server {
    key: IntegrityKey,
    nonce: String,
    nonces_issued: u32,
    /// Answer the next authenticated request with 438.
    stale_next: bool,
    /// Answer ChannelBind and CreatePermission with 403.
    refuse_peers: bool,
    channels: HashMap<u16, SocketAddr>,
    requests: Vec<(Method, Option<u32>)>,
    relayed_data: Vec<(SocketAddr, Vec<u8>)>,
}

impl Server {
    fn new() -> Self {
        Server {
            key: IntegrityKey::long_term("alice", REALM, "secret"),
            nonce: "nonce-1".into(),
            nonces_issued: 1,
            stale_next: false,
            refuse_peers: false,
            channels: HashMap::new(),
            requests: Vec::new(),
            relayed_data: Vec::new(),
        }
    }

    fn error(&self, request: &StunMessage, code: u16, reason: &str) -> Vec<u8> {
        StunMessage::new(Class::Error, request.method, request.transaction_id)
            .with(Attribute::ErrorCode {
                code,
                reason: reason.into(),
            })
            .with(Attribute::Realm(REALM.into()))
            .with(Attribute::Nonce(self.nonce.clone()))
            .encode(None, true)
    }

    fn answer(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        if ChannelData::is_channel_data(data) {
            let frame = ChannelData::decode(data).unwrap();
            let peer = self.channels[&frame.channel];
            self.relayed_data.push((peer, frame.data.to_vec()));
            return None;
        }
        let request = StunMessage::decode(data).unwrap();
        if request.class == Class::Indication {
            assert_eq!(request.method, Method::SEND);
            self.relayed_data.push((
                request.peer_address().unwrap(),
                request.data().unwrap().to_vec(),
            ));
            return None;
        }
        self.requests.push((request.method, request.lifetime()));
        if !request.has_integrity() || !request.verify_integrity(&self.key) {
            return Some(self.error(&request, 401, "Unauthorized"));
        }
        if self.stale_next || request.nonce() != Some(self.nonce.as_str()) {
            self.stale_next = false;
            self.nonces_issued += 1;
            self.nonce = format!("nonce-{}", self.nonces_issued);
            return Some(self.error(&request, 438, "Stale Nonce"));
        }
        if self.refuse_peers
            && matches!(
                request.method,
                Method::CHANNEL_BIND | Method::CREATE_PERMISSION
            )
        {
            // Signed, as every error but 400, 401 and 438 must be.
            return Some(
                StunMessage::new(Class::Error, request.method, request.transaction_id)
                    .with(Attribute::ErrorCode {
                        code: 403,
                        reason: "Forbidden".into(),
                    })
                    .encode(Some(&self.key), true),
            );
        }
        let mut response = StunMessage::new(Class::Success, request.method, request.transaction_id);
        if request.method == Method::ALLOCATE {
            response = response
                .with(Attribute::XorRelayedAddress(relayed()))
                .with(Attribute::XorMappedAddress(
                    "203.0.113.9:61000".parse().unwrap(),
                ))
                .with(Attribute::Lifetime(600));
        } else if request.method == Method::REFRESH {
            response = response.with(Attribute::Lifetime(request.lifetime().unwrap()));
        } else if request.method == Method::CHANNEL_BIND {
            let channel = request
                .find(|a| match a {
                    Attribute::ChannelNumber(c) => Some(*c),
                    _ => None,
                })
                .unwrap();
            self.channels
                .insert(channel, request.peer_address().unwrap());
        }
        Some(response.encode(Some(&self.key), true))
    }
}

fn client(password: &str, use_channels: bool) -> TurnClient<FixedRng> {
    let mut config = TurnConfig::new(server_addr(), TurnCredentials::long_term("alice", password));
    config.use_channels = use_channels;
    TurnClient::new(config, FixedRng::lowest())
}

/// Delivers everything the client sends to the server and back, until quiet.
fn exchange(c: &mut TurnClient<FixedRng>, s: &mut Server, now: Instant) -> Vec<TurnEvent> {
    for _ in 0..20 {
        let mut any = false;
        while let Some(t) = c.poll_transmit() {
            any = true;
            assert_eq!(t.destination, server_addr());
            if let Some(answer) = s.answer(&t.data) {
                c.handle_input(now, server_addr(), &answer);
            }
        }
        if !any {
            break;
        }
    }
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn rfc8656_7_allocate_answers_the_401_then_relays_through_a_channel() {
    let now = Instant::now();
    let (mut c, mut s) = (client("secret", true), Server::new());
    c.allocate(now).unwrap();
    let events = exchange(&mut c, &mut s, now);
    assert_eq!(
        events,
        [TurnEvent::Allocated {
            relayed: relayed(),
            mapped: Some("203.0.113.9:61000".parse().unwrap()),
            lifetime: Duration::from_secs(600)
        }]
    );
    assert_eq!(
        s.requests.len(),
        2,
        "unauthenticated, then with credentials"
    );
    assert!(matches!(c.state(), AllocationState::Allocated { .. }));

    // Sending before the channel exists queues; the ChannelBind's answer flushes.
    c.send_to(now, peer(), b"one").unwrap();
    c.send_to(now, peer(), b"two").unwrap();
    assert!(!c.is_peer_ready(peer()));
    let events = exchange(&mut c, &mut s, now);
    assert_eq!(
        events,
        [TurnEvent::ChannelBound {
            peer: peer(),
            channel: 0x4000
        }]
    );
    assert_eq!(
        s.relayed_data,
        [(peer(), b"one".to_vec()), (peer(), b"two".to_vec())]
    );
    assert_eq!(c.statistics().channel_data_sent, 2);

    // From the peer: as ChannelData and as a Data indication.
    c.handle_input(
        now,
        server_addr(),
        &ChannelData::encode(0x4000, b"back", false),
    );
    let indication = StunMessage::new(
        Class::Indication,
        Method::DATA,
        proxy_client::stun::TransactionId([3; 12]),
    )
    .with(Attribute::XorPeerAddress(peer()))
    .with(Attribute::Data(b"also".to_vec()))
    .encode(None, true);
    c.handle_input(now, server_addr(), &indication);
    // Not from the server: ignored.
    c.handle_input(now, peer(), &ChannelData::encode(0x4000, b"forged", false));
    assert_eq!(
        std::iter::from_fn(|| c.poll_event()).collect::<Vec<_>>(),
        [
            TurnEvent::Data {
                peer: peer(),
                data: b"back".to_vec()
            },
            TurnEvent::Data {
                peer: peer(),
                data: b"also".to_vec()
            }
        ]
    );
    assert_eq!(c.statistics().ignored_input, 1);
}

#[test]
fn rfc8656_send_indications_after_create_permission() {
    let now = Instant::now();
    let (mut c, mut s) = (client("secret", false), Server::new());
    c.allocate(now).unwrap();
    exchange(&mut c, &mut s, now);
    c.send_to(now, peer(), b"x").unwrap();
    let other_port: SocketAddr = "198.51.100.7:4002".parse().unwrap();
    c.send_to(now, other_port, b"y").unwrap(); // same IP: one permission
    let events = exchange(&mut c, &mut s, now);
    assert_eq!(
        events,
        [TurnEvent::PermissionInstalled { peer: peer().ip() }]
    );
    assert_eq!(
        s.relayed_data,
        [(peer(), b"x".to_vec()), (other_port, b"y".to_vec())]
    );
    assert_eq!(
        s.requests
            .iter()
            .filter(|r| r.0 == Method::CREATE_PERMISSION)
            .count(),
        1
    );
    assert_eq!(c.statistics().send_indications_sent, 2);
    assert!(matches!(
        c.send_to(now, "[2001:db8::1]:5".parse().unwrap(), b"z"),
        Err(TurnError::FamilyMismatch { .. })
    ));
}

#[test]
fn rfc8489_6_2_1_requests_are_retransmitted_then_time_out_after_39_5_s() {
    let t0 = Instant::now();
    let mut c = client("secret", true);
    c.allocate(t0).unwrap();
    let mut sent = Vec::new();
    let mut now = t0;
    loop {
        while c.poll_transmit().is_some() {
            sent.push((now - t0).as_millis());
        }
        let Some(deadline) = c.poll_timeout() else {
            break;
        };
        now = deadline;
        c.handle_timeout(now);
        if let Some(event) = c.poll_event() {
            assert_eq!(
                event,
                TurnEvent::Failed(TurnError::Timeout { method: "Allocate" })
            );
            break;
        }
    }
    assert_eq!(sent, [0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!((now - t0).as_millis(), 39_500);
    assert_eq!(c.state(), AllocationState::Closed);
}

#[test]
fn rfc8656_7_3_refresh_a_minute_before_expiry_through_a_stale_nonce() {
    let t0 = Instant::now();
    let (mut c, mut s) = (client("secret", true), Server::new());
    c.allocate(t0).unwrap();
    exchange(&mut c, &mut s, t0);
    c.add_peer(t0, peer()).unwrap();
    exchange(&mut c, &mut s, t0);
    // The channel (and its permission) is refreshed every 240 s ...
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(240)));
    let t = t0 + Duration::from_secs(240);
    c.handle_timeout(t);
    assert_eq!(
        exchange(&mut c, &mut s, t),
        [TurnEvent::ChannelBound {
            peer: peer(),
            channel: 0x4000
        }]
    );
    // ... and the allocation 60 s before its 600 s run out; the server
    // has changed its nonce (438), the client follows.
    let t = t0 + Duration::from_secs(480);
    c.handle_timeout(t);
    let _ = exchange(&mut c, &mut s, t);
    s.stale_next = true;
    let t = t0 + Duration::from_secs(540);
    assert_eq!(c.poll_timeout(), Some(t));
    c.handle_timeout(t);
    let events = exchange(&mut c, &mut s, t);
    assert_eq!(
        events,
        [TurnEvent::Refreshed {
            lifetime: Duration::from_secs(600)
        }]
    );
    let refreshes: Vec<_> = s
        .requests
        .iter()
        .filter(|r| r.0 == Method::REFRESH)
        .collect();
    assert_eq!(refreshes.len(), 2, "the 438 and the retry");
    match c.state() {
        AllocationState::Allocated { expires, .. } => {
            assert_eq!(expires, t + Duration::from_secs(600));
        }
        other => panic!("{other:?}"),
    }
    // Closing sends Refresh with lifetime 0.
    c.close(t);
    assert_eq!(exchange(&mut c, &mut s, t), [TurnEvent::Closed]);
    assert_eq!(s.requests.last(), Some(&(Method::REFRESH, Some(0))));
}

#[test]
fn rfc8656_a_refused_password_and_a_forged_response_are_told_apart() {
    let now = Instant::now();
    let (mut c, mut s) = (client("wrong", true), Server::new());
    c.allocate(now).unwrap();
    let events = exchange(&mut c, &mut s, now);
    assert_eq!(
        events,
        [TurnEvent::Failed(TurnError::Unauthorized {
            username: "alice".into(),
            realm: REALM.into()
        })]
    );

    // A success response signed with another key is dropped; the client
    // keeps waiting and retransmits.
    let (mut c, mut s) = (client("secret", true), Server::new());
    c.allocate(now).unwrap();
    let first = c.poll_transmit().unwrap();
    c.handle_input(now, server_addr(), &s.answer(&first.data).unwrap());
    let second = c.poll_transmit().unwrap();
    let request = StunMessage::decode(&second.data).unwrap();
    let forged = StunMessage::new(Class::Success, Method::ALLOCATE, request.transaction_id)
        .with(Attribute::XorRelayedAddress(relayed()))
        .encode(
            Some(&IntegrityKey::long_term("alice", REALM, "guess")),
            true,
        );
    c.handle_input(now, server_addr(), &forged);
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.statistics().ignored_input, 1);
    c.handle_timeout(now + Duration::from_millis(500));
    assert!(c.poll_transmit().is_some(), "retransmitted");
    // Garbage from the server is counted, not fatal.
    c.handle_input(now, server_addr(), &[0, 1, 0, 4, 0x21, 0x12]);
    assert_eq!(c.statistics().ignored_input, 2);
    assert_eq!(c.state(), AllocationState::Allocating);
}

fn binds(s: &Server) -> usize {
    s.requests
        .iter()
        .filter(|r| r.0 == Method::CHANNEL_BIND)
        .count()
}

/// A refused ChannelBind is asked for again after 5, 10, 20 ... s, not on
/// every datagram, and always with the peer's first channel number (RFC
/// 8656 §12: a number and an address are never rebound to others).
#[test]
fn rfc8656_12_a_refused_channel_is_retried_after_a_wait_with_the_same_number() {
    let t0 = Instant::now();
    let (mut c, mut s) = (client("secret", true), Server::new());
    c.allocate(t0).unwrap();
    exchange(&mut c, &mut s, t0);
    s.refuse_peers = true;
    c.send_to(t0, peer(), b"first").unwrap();
    let events = exchange(&mut c, &mut s, t0);
    assert!(
        matches!(events[..], [TurnEvent::PeerFailed { .. }]),
        "{events:?}"
    );
    assert_eq!(binds(&s), 1);
    // A second of 20 ms packets: each dropped, no request.
    for k in 0..50 {
        let at = t0 + Duration::from_millis(20 * k);
        assert!(matches!(
            c.send_to(at, peer(), b"rtp"),
            Err(TurnError::PeerBackingOff { .. })
        ));
        exchange(&mut c, &mut s, at);
    }
    assert_eq!(binds(&s), 1, "no ChannelBind per datagram");
    let mut t = t0;
    for wait in [5, 10, 20] {
        t += Duration::from_secs(wait);
        c.send_to(t, peer(), b"again").unwrap();
        let events = exchange(&mut c, &mut s, t);
        assert!(matches!(events[..], [TurnEvent::PeerFailed { .. }]));
        assert!(
            c.send_to(t + Duration::from_secs(wait * 2 - 1), peer(), b"x")
                .is_err()
        );
    }
    assert_eq!(binds(&s), 4);
    // The relay relents: the channel is the one first asked for.
    s.refuse_peers = false;
    t += Duration::from_secs(40);
    c.send_to(t, peer(), b"through").unwrap();
    let events = exchange(&mut c, &mut s, t);
    assert_eq!(
        events,
        [TurnEvent::ChannelBound {
            peer: peer(),
            channel: 0x4000
        }]
    );
    assert_eq!(s.relayed_data, [(peer(), b"through".to_vec())]);
}

/// A channel refresh that is refused while the binding still holds keeps
/// the media flowing and is tried again 5 s later.
#[test]
fn rfc8656_12_a_refused_refresh_keeps_the_channel_until_it_runs_out() {
    let t0 = Instant::now();
    let (mut c, mut s) = (client("secret", true), Server::new());
    c.allocate(t0).unwrap();
    exchange(&mut c, &mut s, t0);
    c.send_to(t0, peer(), b"one").unwrap();
    exchange(&mut c, &mut s, t0);
    s.refuse_peers = true;
    // The refresh goes out 240 s on; the permission lasts 300 s.
    let t = t0 + Duration::from_secs(240);
    c.handle_timeout(t);
    assert!(exchange(&mut c, &mut s, t).is_empty(), "no PeerFailed yet");
    assert_eq!(binds(&s), 2);
    c.send_to(t, peer(), b"two").unwrap();
    assert!(c.is_peer_ready(peer()));
    assert_eq!(c.poll_timeout(), Some(t + Duration::from_secs(5)));
    s.refuse_peers = false;
    let t = t + Duration::from_secs(5);
    c.handle_timeout(t);
    let events = exchange(&mut c, &mut s, t);
    assert!(matches!(
        events[..],
        [TurnEvent::ChannelBound {
            channel: 0x4000,
            ..
        }]
    ));
    assert_eq!(binds(&s), 3);
    assert_eq!(
        s.relayed_data,
        [(peer(), b"one".to_vec()), (peer(), b"two".to_vec())]
    );
}
