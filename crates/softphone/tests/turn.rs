//! Calls whose RTP goes through coturn (a TURN relay on loopback): each
//! side hears the other's tone, and coturn's own counters show the
//! packets relayed each way.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed step should fail loudly"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{call_state, heard_frequency, next_event};

use config_export::{Account, Config, Secret, SrtpPolicy, TrustAnchor, Turn};
use media_audio::{Recording, Tone, ToneBackend};
use softphone::{AudioSetup, CallState, Events, Phone, PhoneConfig, PhoneEvent};
use testkit::{Coturn, TestCa};
use tokio::time::sleep;

struct Party {
    phone: Phone,
    events: Events,
    addr: SocketAddr,
    heard: Recording,
}

/// A phone on 127.0.0.1 sending `tone`, through `turn` when given.
async fn party(user: &str, tone: f64, turn: Option<(&Coturn, &str, &str)>) -> Party {
    party_with(user, tone, turn, None).await
}

/// As [`party`]; with `ca`, the TURN server is reached over TLS (`turns:`)
/// and its certificate verified against that CA.
async fn party_with(
    user: &str,
    tone: f64,
    turn: Option<(&Coturn, &str, &str)>,
    ca: Option<&TestCa>,
) -> Party {
    let mut c = Config::default();
    c.accounts.push(Account::new(user, user, "sip:127.0.0.1"));
    c.media.codecs = vec!["PCMU".into()];
    c.media.srtp = SrtpPolicy::Optional;
    c.relay.turn = turn.map(|(coturn, name, password)| Turn {
        server: match ca {
            Some(_) => format!("turns:{}", coturn.tls_addr().expect("coturn with TLS")),
            None => format!("turn:{}", coturn.addr()),
        },
        user: Some(name.into()),
        password: Some(Secret::new(password)),
        extra: Default::default(),
    });
    if let Some(ca) = ca {
        // As provisioned inline (`<ca-pem>`); relay.rs covers `<ca-file>`.
        c.tls.trust = vec![TrustAnchor::Pem(
            std::fs::read_to_string(ca.ca_cert_path()).unwrap(),
        )];
    }
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    let heard = Recording::new(Duration::from_secs(20));
    let rec = heard.clone();
    pc.audio = AudioSetup::Custom(Arc::new(move || {
        Ok(Box::new(ToneBackend::with_recording(
            Tone::new(tone),
            rec.clone(),
        )))
    }));
    let (phone, events) = Phone::start(pc).await.unwrap();
    let addr = phone.accounts().await.unwrap()[0].local.unwrap();
    Party {
        phone,
        events,
        addr,
        heard,
    }
}

fn assert_hears(who: &str, r: &Recording, frequency: f64) {
    let heard = heard_frequency(r);
    eprintln!("{who} hears {heard:?} Hz (expects {frequency} Hz)");
    assert!(
        heard.is_some_and(|f| (f - frequency).abs() < frequency * 0.02),
        "{who} heard {heard:?}, not {frequency} Hz"
    );
}

/// coturn's peer-side counters of `user`'s ended sessions: packets from
/// peers to the relayed address, and from it to peers.
fn relayed(coturn: &Coturn, user: &str) -> (u64, u64) {
    let sessions = tokio::task::block_in_place(|| {
        coturn.wait_for_ended_sessions(user, Duration::from_secs(10))
    })
    .unwrap_or_else(|e| panic!("{e}; coturn log:\n{}", coturn.log_tail(40)));
    let counts = sessions
        .iter()
        .filter_map(|s| s.peer)
        .fold((0, 0), |(r, s), u| {
            (r + u.received_packets, s + u.sent_packets)
        });
    eprintln!(
        "coturn relayed for {user}: {} packets from peers, {} to peers",
        counts.0, counts.1
    );
    counts
}

/// coturn relayed more than 40 packets (0.8 s of audio) each way for `user`.
fn assert_relayed_both_ways(coturn: &Coturn, user: &str) {
    let (from_peers, to_peers) = relayed(coturn, user);
    assert!(
        from_peers > 40,
        "{user}: only {from_peers} packets relayed in"
    );
    assert!(to_peers > 40, "{user}: only {to_peers} packets relayed out");
}

/// Alice calls Bob, a second of tones both ways, Alice hangs up.
async fn call_for_a_second(alice: &mut Party, bob: &mut Party) {
    let a = alice
        .phone
        .dial(None, &format!("sip:bob@{}", bob.addr))
        .await
        .unwrap();
    let PhoneEvent::IncomingCall { call: b, .. } =
        next_event(&mut bob.events, "the incoming call", |e| {
            matches!(e, PhoneEvent::IncomingCall { .. })
        })
        .await
    else {
        unreachable!("only an incoming call matches")
    };
    b.answer().await.unwrap();
    call_state(&mut alice.events, Some(&a), "the answer", |s| {
        *s == CallState::Connected
    })
    .await;
    sleep(Duration::from_millis(1200)).await;
    assert_hears("alice", &alice.heard, 700.0);
    assert_hears("bob", &bob.heard, 440.0);
    a.hangup().await.unwrap();
    call_state(&mut alice.events, Some(&a), "alice's end", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
    call_state(&mut bob.events, Some(&b), "bob's end", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_through_coturn_to_a_direct_peer_carries_audio_both_ways() {
    let coturn = Coturn::start().expect("coturn (turnserver) is needed for this test");
    let mut alice = party("alice", 440.0, Some((&coturn, "alice", "alice-secret"))).await;
    let mut bob = party("bob", 700.0, None).await;
    call_for_a_second(&mut alice, &mut bob).await;

    assert_relayed_both_ways(&coturn, "alice");
    alice.phone.shutdown().await.unwrap();
    bob.phone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_between_two_relayed_phones_carries_audio_both_ways() {
    let coturn = Coturn::start().expect("coturn (turnserver) is needed for this test");
    let mut alice = party("alice", 440.0, Some((&coturn, "alice", "alice-secret"))).await;
    let mut bob = party("bob", 700.0, Some((&coturn, "bob", "bob-secret"))).await;
    call_for_a_second(&mut alice, &mut bob).await;

    for user in ["alice", "bob"] {
        assert_relayed_both_ways(&coturn, user);
    }
    alice.phone.shutdown().await.unwrap();
    bob.phone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_through_coturn_over_tls_carries_audio_both_ways() {
    let ca = TestCa::new().unwrap();
    let coturn = Coturn::builder()
        .with_users(&[("alice", "alice-secret")])
        .with_tls(&ca)
        .start()
        .expect("coturn (turnserver) is needed for this test");
    let mut alice = party_with(
        "alice",
        440.0,
        Some((&coturn, "alice", "alice-secret")),
        Some(&ca),
    )
    .await;
    let mut bob = party("bob", 700.0, None).await;
    call_for_a_second(&mut alice, &mut bob).await;

    assert_relayed_both_ways(&coturn, "alice");
    alice.phone.shutdown().await.unwrap();
    bob.phone.shutdown().await.unwrap();
}
