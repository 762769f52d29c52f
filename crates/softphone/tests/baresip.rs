//! The softphone against real peers on 127.0.0.1: it registers with
//! Kamailio and talks to baresip through it. Hold and resume, DTMF that
//! baresip reports, blind transfer to a third user agent, BYE from either
//! side, CANCEL before the answer, 486 busy, and a call from baresip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed interop step should fail loudly"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

mod common;
use common::{LIMIT, call_state, next_event, tone_file};

use config_export::{Account, Config, Secret, SrtpPolicy};
use softphone::{
    AudioSetup, CallState, EndReason, Events, Phone, PhoneConfig, PhoneEvent, RegistrationStatus,
};
use testkit::{AudioSource, Baresip, Kamailio, UaTransport, analyze_wav};

struct Peers {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    kamailio: Kamailio,
}

fn peers() -> Peers {
    let dir = tempfile::tempdir().unwrap();
    let kamailio = Kamailio::builder()
        .with_lifetime(Duration::from_secs(120))
        .start()
        .unwrap();
    Peers {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        kamailio,
    }
}

fn baresip(p: &Peers, user: &str, auto_answer: bool) -> Baresip {
    let b = Baresip::builder(user)
        .registering_with(&p.kamailio, user, UaTransport::Udp)
        .unwrap()
        .with_auto_answer(auto_answer)
        .with_codecs(&["pcmu"])
        .with_audio_source(AudioSource::File(tone_file(
            &p.dir,
            &format!("{user}.wav"),
            1000.0,
        )))
        .with_recording(true)
        .with_lifetime(Duration::from_secs(90))
        .start()
        .unwrap();
    b.wait_registered(Duration::from_secs(10)).unwrap();
    b
}

async fn phone(p: &Peers, record: Option<PathBuf>) -> (Phone, Events) {
    let mut config = Config::default();
    let mut account = Account::new(
        "office",
        "alice",
        format!("sip:127.0.0.1:{}", p.kamailio.sip_port()),
    );
    account.password = Some(Secret::new(
        p.kamailio.user("alice").unwrap().password.clone(),
    ));
    config.accounts.push(account);
    config.media.codecs = vec!["PCMU".into()];
    config.media.srtp = SrtpPolicy::Off;
    let mut pc = PhoneConfig::new(config);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.audio = AudioSetup::Wav {
        play: Some(tone_file(&p.dir, "alice.wav", 440.0)),
        record,
    };
    pc.history = Some(p.dir.join("history.sqlite"));
    let (phone, mut events) = Phone::start(pc).await.unwrap();
    let registered = next_event(&mut events, "registration", |e| {
        matches!(
            e,
            PhoneEvent::Registration {
                status: RegistrationStatus::Registered { .. } | RegistrationStatus::Failed { .. },
                ..
            }
        )
    })
    .await;
    assert!(
        matches!(
            registered,
            PhoneEvent::Registration {
                status: RegistrationStatus::Registered { .. },
                ..
            }
        ),
        "{registered:?}\n{}",
        p.kamailio.log_tail(30)
    );
    (phone, events)
}

fn bob_uri(p: &Peers, user: &str) -> String {
    format!("sip:{user}@127.0.0.1:{}", p.kamailio.sip_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_resume_dtmf_and_far_end_bye() {
    let p = peers();
    let bob = baresip(&p, "bob", true);
    let heard = p.dir.join("heard.wav");
    let (phone, mut events) = phone(&p, Some(heard.clone())).await;
    let call = phone.dial(None, &bob_uri(&p, "bob")).await.unwrap();
    call_state(&mut events, None, "answer", |s| *s == CallState::Connected).await;
    bob.wait_event("CALL_ESTABLISHED", LIMIT).unwrap();

    call.hold().await.unwrap();
    let held = call_state(&mut events, None, "hold", |s| {
        matches!(s, CallState::OnHold { .. })
    })
    .await;
    assert_eq!(
        held,
        CallState::OnHold {
            local: true,
            remote: false
        }
    );
    call.resume().await.unwrap();
    call_state(&mut events, None, "resume", |s| *s == CallState::Connected).await;

    call.send_dtmf("159#").await.unwrap();
    let mut digits = String::new();
    for _ in 0..4 {
        let e = bob
            .wait_event_matching("a DTMF digit", LIMIT, |e| e.kind == "CALL_DTMF_START")
            .unwrap();
        digits.push_str(&e.param);
    }
    assert_eq!(digits, "159#", "{}", bob.log_tail(30));

    // The far end hangs up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    bob.hangup().unwrap();
    let ended = call_state(&mut events, None, "the far end's BYE", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
    assert_eq!(ended, CallState::Ended(EndReason::RemoteHangup));
    let a = analyze_wav(&heard, Duration::from_millis(500)).unwrap();
    assert!(
        a.is_tone_heard(1000.0, 0.02),
        "heard {:.1} Hz",
        a.dominant_frequency
    );
    let history = phone.history(5).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].end_reason, "remote hangup");
    assert_eq!(history[0].codec.as_deref(), Some("PCMU"));
    assert!(history[0].answered.is_some());
    phone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_answer_and_busy() {
    let p = peers();
    let bob = baresip(&p, "bob", false);
    let (phone, mut events) = phone(&p, None).await;

    // CANCEL while it rings.
    let call = phone.dial(None, &bob_uri(&p, "bob")).await.unwrap();
    bob.wait_event("CALL_INCOMING", LIMIT).unwrap();
    call_state(&mut events, None, "ringing", |s| *s == CallState::Ringing).await;
    call.hangup().await.unwrap();
    let ended = call_state(&mut events, None, "the cancel", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
    assert_eq!(ended, CallState::Ended(EndReason::Cancelled));
    bob.wait_event("CALL_CLOSED", LIMIT).unwrap();

    // Busy: baresip declines.
    phone.dial(None, &bob_uri(&p, "bob")).await.unwrap();
    bob.wait_event("CALL_INCOMING", LIMIT).unwrap();
    bob.hangup().unwrap();
    let ended = call_state(&mut events, None, "the refusal", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
    match ended {
        CallState::Ended(EndReason::Refused { status, .. }) => {
            assert!((400..700).contains(&status), "status {status}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    phone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_transfer_to_a_third_user_agent() {
    let p = peers();
    let bob = baresip(&p, "bob", true);
    let carol = baresip(&p, "carol", true);
    let (phone, mut events) = phone(&p, None).await;
    let call = phone.dial(None, &bob_uri(&p, "bob")).await.unwrap();
    call_state(&mut events, None, "answer", |s| *s == CallState::Connected).await;
    bob.wait_event("CALL_ESTABLISHED", LIMIT).unwrap();
    call.transfer(&bob_uri(&p, "carol")).await.unwrap();
    let ended = call_state(&mut events, None, "the transfer", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
    assert_eq!(
        ended,
        CallState::Ended(EndReason::Transferred),
        "{}",
        bob.log_tail(40)
    );
    let e = carol.wait_event("CALL_ESTABLISHED", LIMIT).unwrap();
    assert!(e.peer_uri.contains("bob"), "carol talks to {}", e.peer_uri);
    phone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_from_baresip_is_answered() {
    let p = peers();
    let bob = baresip(&p, "bob", false);
    let heard = p.dir.join("heard.wav");
    let (phone, mut events) = phone(&p, Some(heard.clone())).await;
    bob.dial(&bob_uri(&p, "alice")).unwrap();
    let incoming = next_event(&mut events, "the incoming call", |e| {
        matches!(e, PhoneEvent::IncomingCall { .. })
    })
    .await;
    let PhoneEvent::IncomingCall { call, from, .. } = incoming else {
        unreachable!()
    };
    assert_eq!(from.user(), "bob");
    call.answer().await.unwrap();
    bob.wait_event("CALL_ESTABLISHED", LIMIT).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    call.hangup().await.unwrap();
    bob.wait_event("CALL_CLOSED", LIMIT).unwrap();
    let a = analyze_wav(&heard, Duration::from_millis(500)).unwrap();
    assert!(
        a.is_tone_heard(1000.0, 0.02),
        "heard {:.1} Hz",
        a.dominant_frequency
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let bs = loop {
        if let Some(p) = bob.received_audio() {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "baresip recorded nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let a = analyze_wav(&bs, Duration::from_millis(500)).unwrap();
    assert!(
        a.is_tone_heard(440.0, 0.02),
        "baresip heard {:.1} Hz",
        a.dominant_frequency
    );
    phone.shutdown().await.unwrap();
}
