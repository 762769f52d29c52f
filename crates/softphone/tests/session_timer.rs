//! Session timers (RFC 4028) on tokio's paused clock: the sockets are real
//! (loopback), time is virtual, so minutes of a call pass in moments.
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
