//! Phones of this crate talking to each other on loopback, no server:
//! a second call while the first is on hold, attended transfer (REFER with
//! Replaces, RFC 3891) with every side played by this crate, DTMF both as
//! RFC 4733 events and as SIP INFO, mute, an audio device unplugged in a
//! call, a blind transfer to a busy target, and what the history keeps.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed step should fail loudly"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{LIMIT, call_state, hears, incoming, next_event};

use config_export::{Account, Config, DtmfMode, SrtpPolicy};
use media_audio::{
    AudioBackend, AudioDevice, AudioError, AudioEvent, AudioFormat, DeviceReporter, Direction,
    Recording, Tone, ToneBackend, analysis,
};
use softphone::{
    AudioSetup, Call, CallDirection, CallState, EndReason, Events, Listen, Phone, PhoneConfig,
    PhoneEvent,
};

struct Party {
    phone: Phone,
    events: Events,
    addr: SocketAddr,
    heard: Recording,
}

async fn party(user: &str, tone: f64, dtmf: DtmfMode) -> Party {
    let heard = Recording::new(Duration::from_secs(20));
    let rec = heard.clone();
    let audio = AudioSetup::Custom(Arc::new(move || {
        Ok(Box::new(ToneBackend::with_recording(
            Tone::new(tone),
            rec.clone(),
        )))
    }));
    party_with(user, dtmf, audio, heard).await
}

/// A party whose calls use `audio`; `heard` is what that records.
async fn party_with(user: &str, dtmf: DtmfMode, audio: AudioSetup, heard: Recording) -> Party {
    let mut c = Config::default();
    c.accounts.push(Account::new(user, user, "sip:127.0.0.1"));
    c.media.codecs = vec!["PCMU".into()];
    c.media.srtp = SrtpPolicy::Optional;
    c.media.dtmf = dtmf;
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.audio = audio;
    let (phone, events) = Phone::start(pc).await.unwrap();
    let addr = phone.accounts().await.unwrap()[0].local.unwrap();
    Party {
        phone,
        events,
        addr,
        heard,
    }
}

/// Bob hangs up `ba`; alice sees `ab` end remotely; both phones stop.
async fn bob_hangs_up(mut alice: Party, bob: Party, ab: &Call, ba: &Call) {
    ba.hangup().await.unwrap();
    let ended = call_state(&mut alice.events, Some(ab), "the end", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
    assert_eq!(ended, CallState::Ended(EndReason::RemoteHangup));
    alice.phone.shutdown().await.unwrap();
    bob.phone.shutdown().await.unwrap();
}

/// Alice calls `to` and `to` answers; returns both ends.
async fn connect(alice: &mut Party, to: &mut Party, user: &str) -> (Call, Call) {
    let a = alice
        .phone
        .dial(None, &format!("sip:{user}@{}", to.addr))
        .await
        .unwrap();
    let b = incoming(&mut to.events).await;
    b.answer().await.unwrap();
    call_state(&mut alice.events, Some(&a), "the answer", |s| {
        *s == CallState::Connected
    })
    .await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attended_transfer_with_a_second_call_while_the_first_is_held() {
    let mut alice = party("alice", 440.0, DtmfMode::Rfc4733).await;
    let mut bob = party("bob", 700.0, DtmfMode::Rfc4733).await;
    let mut carol = party("carol", 1200.0, DtmfMode::Rfc4733).await;

    let (ab, _ba) = connect(&mut alice, &mut bob, "bob").await;
    ab.hold().await.unwrap();
    let held = call_state(&mut alice.events, Some(&ab), "hold", |s| {
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

    // A second call while the first waits on hold.
    let (ac, ca) = connect(&mut alice, &mut carol, "carol").await;
    until_heard(&alice.heard, 1200.0, "alice (carol)").await;
    let calls = alice.phone.calls().await.unwrap();
    assert_eq!(calls.len(), 2);

    // Bob is asked to call Carol in place of Alice.
    ab.transfer_to_call(&ac).await.unwrap();
    let PhoneEvent::TransferCall { call: new_bob, .. } =
        next_event(&mut bob.events, "bob's transfer call", |e| {
            matches!(e, PhoneEvent::TransferCall { .. })
        })
        .await
    else {
        unreachable!()
    };
    let new_carol = match next_event(&mut carol.events, "carol's replacing call", |e| {
        matches!(e, PhoneEvent::TransferCall { .. })
    })
    .await
    {
        PhoneEvent::TransferCall { original, call } => {
            assert_eq!(original, ca.id());
            call
        }
        _ => unreachable!(),
    };
    // Both of Alice's calls end, in whichever order the messages cross.
    let mut ends = std::collections::HashMap::new();
    while ends.len() < 2 {
        if let PhoneEvent::CallState {
            call,
            state: CallState::Ended(reason),
        } = next_event(&mut alice.events, "alice's calls ending", |e| {
            matches!(
                e,
                PhoneEvent::CallState {
                    state: CallState::Ended(_),
                    ..
                }
            )
        })
        .await
        {
            ends.insert(call, reason);
        }
    }
    assert_eq!(ends[&ab.id()], EndReason::Transferred);
    assert_eq!(ends[&ac.id()], EndReason::RemoteHangup);
    assert!(alice.phone.calls().await.unwrap().is_empty());

    // Bob and Carol now talk.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(new_bob.info().await.unwrap().state, CallState::Connected);
    assert_eq!(new_carol.info().await.unwrap().state, CallState::Connected);
    until_heard(&bob.heard, 1200.0, "bob (carol)").await;
    until_heard(&carol.heard, 700.0, "carol (bob)").await;

    new_bob.hangup().await.unwrap();
    call_state(&mut carol.events, Some(&new_carol), "the end", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
    let history = alice.phone.history(10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(
        history
            .iter()
            .all(|h| h.direction == CallDirection::Outgoing)
    );
    assert!(history.iter().any(|h| h.end_reason == "transferred"));
    for p in [&alice, &bob, &carol] {
        p.phone.shutdown().await.unwrap();
    }
}

async fn dtmf_round(mode: DtmfMode) {
    let mut alice = party("alice", 440.0, mode).await;
    let mut bob = party("bob", 700.0, DtmfMode::Rfc4733).await;
    let (ab, ba) = connect(&mut alice, &mut bob, "bob").await;
    ab.send_dtmf("42*#").await.unwrap();
    assert!(ab.send_dtmf("4x").await.is_err(), "bad digits are refused");
    let mut got = String::new();
    while got.len() < 4 {
        match next_event(&mut bob.events, "a digit", |e| {
            matches!(e, PhoneEvent::Dtmf { .. })
        })
        .await
        {
            PhoneEvent::Dtmf { call, digit } => {
                assert_eq!(call, ba.id());
                got.push(digit);
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(got, "42*#");
    ab.hangup().await.unwrap();
    call_state(&mut bob.events, Some(&ba), "the end", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
    alice.phone.shutdown().await.unwrap();
    bob.phone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_as_rtp_events() {
    dtmf_round(DtmfMode::Rfc4733).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_as_sip_info() {
    dtmf_round(DtmfMode::Info).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_silences_what_the_peer_hears() {
    let mut alice = party("alice", 440.0, DtmfMode::Rfc4733).await;
    let mut bob = party("bob", 700.0, DtmfMode::Rfc4733).await;
    let (ab, ba) = connect(&mut alice, &mut bob, "bob").await;
    until_heard(&bob.heard, 440.0, "bob").await;
    ab.set_muted(true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rms = analysis::rms(&bob.heard.latest(Duration::from_millis(300)));
    assert!(
        rms < 50.0,
        "bob still hears alice while muted: rms {rms:.0}"
    );
    assert!(ab.info().await.unwrap().muted);
    ab.set_muted(false).await.unwrap();
    until_heard(&bob.heard, 440.0, "bob after unmuting").await;
    bob_hangs_up(alice, bob, &ab, &ba).await;
}

/// A call we put on hold sends silence: the held party does not hear
/// what the user says to someone else meanwhile, and hears the user again
/// once the call is resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_held_party_does_not_hear_the_microphone() {
    let mut alice = party("alice", 440.0, DtmfMode::Rfc4733).await;
    let mut bob = party("bob", 700.0, DtmfMode::Rfc4733).await;
    let (ab, ba) = connect(&mut alice, &mut bob, "bob").await;
    until_heard(&bob.heard, 440.0, "bob").await;
    ab.hold().await.unwrap();
    call_state(&mut alice.events, Some(&ab), "hold", |s| {
        matches!(s, CallState::OnHold { local: true, .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rms = analysis::rms(&bob.heard.latest(Duration::from_millis(300)));
    assert!(rms < 50.0, "bob hears alice while held: rms {rms:.0}");
    ab.resume().await.unwrap();
    call_state(&mut alice.events, Some(&ab), "resume", |s| {
        *s == CallState::Connected
    })
    .await;
    until_heard(&bob.heard, 440.0, "bob after the resume").await;
    bob_hangs_up(alice, bob, &ab, &ba).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_unknown_or_ended_calls_are_typed_errors() {
    let mut alice = party("alice", 440.0, DtmfMode::Rfc4733).await;
    let mut bob = party("bob", 700.0, DtmfMode::Rfc4733).await;
    assert!(alice.phone.dial(None, "").await.is_err());
    assert!(alice.phone.dial(Some("nobody"), "bob").await.is_err());
    let (ab, ba) = connect(&mut alice, &mut bob, "bob").await;
    assert!(ba.answer().await.is_err(), "answering twice is refused");
    ab.hangup().await.unwrap();
    call_state(&mut bob.events, Some(&ba), "the end", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
    assert!(matches!(
        ab.hold().await,
        Err(softphone::PhoneError::NoSuchCall(_))
    ));
    alice.phone.shutdown().await.unwrap();
    bob.phone.shutdown().await.unwrap();
    assert!(matches!(
        alice.phone.calls().await,
        Err(softphone::PhoneError::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_older_than_the_retention_window_are_purged_at_start() {
    use softphone::{CallRecord, History};
    use std::time::SystemTime;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.sqlite");
    let day = Duration::from_secs(24 * 3600);
    let record = |age_days: u32, who: &str| {
        let started = SystemTime::now() - day * age_days;
        CallRecord {
            id: 0,
            direction: CallDirection::Incoming,
            account: "alice".into(),
            local_identity: "sip:alice@127.0.0.1".into(),
            remote_identity: format!("sip:{who}@127.0.0.1"),
            remote_name: None,
            started,
            answered: None,
            ended: started,
            end_reason: "missed".into(),
            codec: None,
            srtp: None,
            mos: None,
        }
    };
    {
        let h = History::open(&path).unwrap();
        h.record(&record(400, "old")).unwrap();
        h.record(&record(10, "recent")).unwrap();
    }
    let mut c = Config::default();
    c.accounts
        .push(Account::new("alice", "alice", "sip:127.0.0.1"));
    c.privacy.history_retention_days = 30;
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.audio = AudioSetup::Null;
    pc.history = Some(path.clone());
    let (phone, _events) = Phone::start(pc).await.unwrap();
    let kept = phone.history(10).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].remote_identity, "sip:recent@127.0.0.1");
    phone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_retention_of_zero_days_keeps_no_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.sqlite");
    // A callee that is busy.
    let callee = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let callee_addr = callee.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        // Bounded: the INVITE, perhaps retransmitted, and the ACK.
        for _ in 0..5 {
            let Ok((len, from)) = callee.recv_from(&mut buf).await else {
                return;
            };
            let Ok(request) = sip_core::Message::parse(buf[..len].to_vec()) else {
                continue;
            };
            if request.method() != Some(&sip_core::Method::Invite) {
                continue;
            }
            let busy = sip_core::Message::response_to(&request, 486, "Busy Here")
                .unwrap()
                .to_tag("busy")
                .build()
                .unwrap();
            let _ = callee.send_to(&busy.to_bytes(), from).await;
        }
    });
    let mut c = Config::default();
    c.accounts
        .push(Account::new("alice", "alice", "sip:127.0.0.1"));
    c.privacy.history_retention_days = 0;
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.audio = AudioSetup::Null;
    pc.history = Some(path.clone());
    let (phone, mut events) = Phone::start(pc).await.unwrap();
    let call = phone
        .dial(None, &format!("sip:bob@{callee_addr}"))
        .await
        .unwrap();
    let ended = call_state(&mut events, Some(&call), "the busy call to end", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
    assert!(
        matches!(
            ended,
            CallState::Ended(EndReason::Refused { status: 486, .. })
        ),
        "{ended:?}"
    );
    assert!(phone.history(10).await.unwrap().is_empty());
    phone.shutdown().await.unwrap();
    // Nor on disk.
    let h = softphone::History::open(&path).unwrap();
    assert!(h.recent(10).unwrap().is_empty());
}

/// Sends NOTIFY check-sync number `n` from `socket` to the phone at `to`
/// and returns the status line's start, e.g. `SIP/2.0 200`.
async fn check_sync(socket: &tokio::net::UdpSocket, to: SocketAddr, n: u32) -> String {
    let notify = format!(
        "NOTIFY sip:alice@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKcheck{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:pbx@127.0.0.1>;tag=pbx{n}\r\n\
         To: <sip:alice@127.0.0.1>\r\n\
         Call-ID: check-sync-{n}@127.0.0.1\r\n\
         CSeq: 1 NOTIFY\r\n\
         Event: check-sync\r\n\
         Subscription-State: terminated\r\n\
         Content-Length: 0\r\n\r\n",
        local = socket.local_addr().unwrap()
    );
    socket.send_to(notify.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (len, _) = tokio::time::timeout(LIMIT, socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..len])
        .chars()
        .take(11)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_sync_notify_is_answered_and_reported() {
    let mut alice = party("alice", 440.0, DtmfMode::Rfc4733).await;
    // The account's server is 127.0.0.1: the PBX. 127.0.0.2 is someone else.
    let pbx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    assert_eq!(check_sync(&stranger, alice.addr, 1).await, "SIP/2.0 403");
    assert_eq!(check_sync(&pbx, alice.addr, 2).await, "SIP/2.0 200");
    next_event(&mut alice.events, "the check-sync event", |e| {
        matches!(e, PhoneEvent::CheckSync)
    })
    .await;
    // Asked again at once: answered, but one re-check a minute is enough.
    assert_eq!(check_sync(&pbx, alice.addr, 3).await, "SIP/2.0 200");
    let again = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(e) = alice.events.next().await {
            if matches!(e, PhoneEvent::CheckSync) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        !again.unwrap_or(false),
        "a second check-sync within a minute"
    );
    alice.phone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_call_is_named_from_the_contacts() {
    use contacts::{Contact, ContactNumber, Contacts, NumberKind};
    let dir = tempfile::tempdir().unwrap();
    {
        let mut book = Contacts::open(dir.path()).unwrap();
        let mut c = Contact::new("Alice Example");
        c.numbers
            .push(ContactNumber::new(NumberKind::Work, "+49 30 1234567", None));
        book.add(c).unwrap();
    }
    let start = |user: &'static str, contacts: Option<std::path::PathBuf>| async move {
        let mut c = Config::default();
        c.accounts.push(Account::new(user, user, "sip:127.0.0.1"));
        c.media.codecs = vec!["PCMU".into()];
        let mut pc = PhoneConfig::new(c);
        pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
        pc.register = false;
        pc.audio = AudioSetup::Null;
        pc.contacts = contacts;
        Phone::start(pc).await.unwrap()
    };
    let (alice, _alice_events) = start("+49301234567", None).await;
    let (bob, mut bob_events) = start("bob", Some(dir.path().join(contacts::DATABASE_FILE))).await;
    let bob_addr = bob.accounts().await.unwrap()[0].local.unwrap();
    alice
        .dial(None, &format!("sip:bob@{bob_addr}"))
        .await
        .unwrap();
    let PhoneEvent::IncomingCall { call, from, .. } =
        next_event(&mut bob_events, "the incoming call", |e| {
            matches!(e, PhoneEvent::IncomingCall { .. })
        })
        .await
    else {
        unreachable!()
    };
    assert_eq!(from.display_name.as_deref(), Some("Alice Example"));
    call.reject(486).await.unwrap();
    let history = bob.history(5).await.unwrap();
    assert_eq!(history[0].remote_name.as_deref(), Some("Alice Example"));
    alice.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
}

/// RFC 3515 §2.4.5: a blind transfer whose target is busy is reported to
/// the transferor with the target's final status, 486, not a stock 487.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_transfer_to_a_busy_target_reports_busy() {
    let mut alice = party("alice", 440.0, DtmfMode::Rfc4733).await;
    let mut bob = party("bob", 700.0, DtmfMode::Rfc4733).await;
    let mut carol = party("carol", 1200.0, DtmfMode::Rfc4733).await;
    let (ab, ba) = connect(&mut alice, &mut bob, "bob").await;
    ab.transfer(&format!("sip:carol@{}", carol.addr))
        .await
        .unwrap();
    incoming(&mut carol.events).await.reject(486).await.unwrap();
    let PhoneEvent::TransferProgress { status, .. } = next_event(
        &mut alice.events,
        "the transfer's outcome",
        |e| matches!(e, PhoneEvent::TransferProgress { status, .. } if *status >= 300),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(status, 486);
    carol.phone.shutdown().await.unwrap();
    bob_hangs_up(alice, bob, &ab, &ba).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_logs_older_than_their_window_are_removed_at_start() {
    use std::time::SystemTime;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dialer.log");
    std::fs::write(&log, "current\n").unwrap();
    let old = dir.path().join("dialer.log.2");
    let recent = dir.path().join("dialer.log.1");
    for p in [&old, &recent] {
        std::fs::write(p, "rotated\n").unwrap();
    }
    let day = Duration::from_secs(24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - day * 40)
        .unwrap();
    let mut c = Config::default();
    c.accounts
        .push(Account::new("alice", "alice", "sip:127.0.0.1"));
    c.privacy.log_retention_days = 30;
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.audio = AudioSetup::Null;
    pc.log_file = Some(log.clone());
    let (phone, _events) = Phone::start(pc).await.unwrap();
    assert!(
        !old.exists(),
        "a 40-day-old rotated log survived a 30-day window"
    );
    assert!(recent.exists() && log.exists());
    phone.shutdown().await.unwrap();
}

/// A headset that captures nothing; the test unplugs it through the
/// reporter it leaves behind.
#[derive(Debug)]
struct Headset {
    unplug: Arc<Mutex<Option<DeviceReporter>>>,
}

impl AudioBackend for Headset {
    fn name(&self) -> &str {
        "headset"
    }

    fn open(&mut self, preferred: AudioFormat) -> Result<AudioDevice, AudioError> {
        let (device, ends) = AudioDevice::external("headset", preferred, || {});
        *self.unplug.lock().unwrap() = Some(ends.reporter);
        Ok(device)
    }
}

/// A headset unplugged in a call: the call moves to the device the setup
/// gives now (here a 440 Hz tone standing in for the laptop's microphone),
/// the user is told, and the peer hears the new microphone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_headset_moves_the_call_to_another_device() {
    let unplug = Arc::new(Mutex::new(None));
    let opens = Arc::new(AtomicUsize::new(0));
    let heard = Recording::new(Duration::from_secs(20));
    let audio = {
        let (unplug, opens, heard) = (Arc::clone(&unplug), Arc::clone(&opens), heard.clone());
        AudioSetup::Custom(Arc::new(move || {
            let backend: Box<dyn AudioBackend> = if opens.fetch_add(1, Ordering::SeqCst) == 0 {
                Box::new(Headset {
                    unplug: Arc::clone(&unplug),
                })
            } else {
                Box::new(ToneBackend::with_recording(Tone::new(440.0), heard.clone()))
            };
            Ok(backend)
        }))
    };
    let mut alice = party_with("alice", DtmfMode::Rfc4733, audio, heard).await;
    let mut bob = party("bob", 700.0, DtmfMode::Rfc4733).await;
    let (ab, ba) = connect(&mut alice, &mut bob, "bob").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !hears(&bob.heard, 440.0),
        "bob hears a tone the headset never captured"
    );
    let reporter = unplug.lock().unwrap().take();
    reporter
        .expect("the call never opened the headset")
        .report(AudioEvent::DeviceLost {
            direction: Direction::Capture,
        });
    let notice = next_event(&mut alice.events, "a notice of the lost device", |e| {
        matches!(e, PhoneEvent::Notice { .. })
    })
    .await;
    let PhoneEvent::Notice { text } = notice else {
        unreachable!()
    };
    assert!(text.contains("audio device went away"), "{text}");
    until_heard(&bob.heard, 440.0, "bob (alice's new microphone)").await;
    assert_eq!(opens.load(Ordering::SeqCst), 2);
    bob_hangs_up(alice, bob, &ab, &ba).await;
}

/// A sound system that takes its time: every device opens only once the
/// test opens the gate (or after 30 s, so nothing waits for ever).
#[derive(Clone, Default)]
struct SlowSoundSystem(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl SlowSoundSystem {
    fn wait(&self) {
        let (open, changed) = &*self.0;
        let guard = open.lock().unwrap();
        let _ = changed
            .wait_timeout_while(guard, Duration::from_secs(30), |open| !*open)
            .unwrap();
    }

    fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().unwrap() = true;
        changed.notify_all();
    }

    /// A party whose device, once open, plays `tone`.
    async fn party(&self, user: &str, tone: f64) -> Party {
        let heard = Recording::new(Duration::from_secs(20));
        let (sound, rec) = (self.clone(), heard.clone());
        let audio = AudioSetup::Custom(Arc::new(move || {
            sound.wait();
            Ok(Box::new(ToneBackend::with_recording(
                Tone::new(tone),
                rec.clone(),
            )))
        }));
        party_with(user, DtmfMode::Rfc4733, audio, heard).await
    }
}

/// Waits (bounded) until `r` holds `frequency`.
async fn until_heard(r: &Recording, frequency: f64, who: &str) {
    // The tone has to fill the half second `hears` looks at, behind the
    // jitter buffer; a loaded machine takes longer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !hears(r, frequency) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{who} does not hear the {frequency} Hz tone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opening the sound card can take seconds: the call is placed, answered
/// and connected meanwhile, the phones take commands, each call runs on
/// the null device until its card is open, and then the audio comes in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sound_card_holds_up_neither_the_call_nor_the_phone() {
    let (alice_sound, bob_sound) = (SlowSoundSystem::default(), SlowSoundSystem::default());
    let mut alice = alice_sound.party("alice", 440.0).await;
    let mut bob = bob_sound.party("bob", 700.0).await;
    let (ab, ba) = connect(&mut alice, &mut bob, "bob").await;
    let accounts = tokio::time::timeout(LIMIT, alice.phone.accounts()).await;
    assert!(
        matches!(accounts, Ok(Ok(ref a)) if a.len() == 1),
        "alice's phone does not answer while her sound card opens: {accounts:?}"
    );
    // Alice's card opens; Bob's call still runs on the null device.
    alice_sound.open();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !hears(&alice.heard, 700.0),
        "alice hears bob's microphone before it is open"
    );
    bob_sound.open();
    until_heard(&alice.heard, 700.0, "alice").await;
    until_heard(&bob.heard, 440.0, "bob").await;
    bob_hangs_up(alice, bob, &ab, &ba).await;
}

/// A sound card that cannot be opened: the call goes on without it, and
/// the user is told why nothing is heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sound_card_that_fails_to_open_is_named_to_the_user() {
    let heard = Recording::new(Duration::from_secs(20));
    let audio = AudioSetup::Custom(Arc::new(|| Err("the sound server is not running".into())));
    let mut alice = party_with("alice", DtmfMode::Rfc4733, audio, heard).await;
    let mut bob = party("bob", 700.0, DtmfMode::Rfc4733).await;
    let (ab, ba) = connect(&mut alice, &mut bob, "bob").await;
    let notice = next_event(&mut alice.events, "a notice of the failed device", |e| {
        matches!(e, PhoneEvent::Notice { .. })
    })
    .await;
    let PhoneEvent::Notice { text } = notice else {
        unreachable!()
    };
    assert!(
        text.contains("the sound server is not running") && text.contains("null device"),
        "{text}"
    );
    bob_hangs_up(alice, bob, &ab, &ba).await;
}

/// A phone without a registrar that listens on UDP and TCP, its account
/// server `server` over `transport`.
async fn listening_party(user: &str, server: &str, transport: config_export::Transport) -> Party {
    let heard = Recording::new(Duration::from_secs(20));
    let mut c = Config::default();
    let mut account = Account::new(user, user, server);
    account.transport = transport;
    c.accounts.push(account);
    c.media.codecs = vec!["PCMU".into()];
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.listen = Listen::UdpAndTcp;
    pc.audio = AudioSetup::Null;
    let (phone, events) = Phone::start(pc).await.unwrap();
    let addr = phone.accounts().await.unwrap()[0]
        .local
        .expect("a local address without a server to reach");
    Party {
        phone,
        events,
        addr,
        heard,
    }
}

/// A phone that calls peers directly (no registrar) over TCP has no
/// server to connect to at start: the call goes straight to the callee
/// over TCP, and the callee's BYE finds the caller at its Contact. The
/// phone used to connect to its stand-in server first, and every call
/// failed with "no connection".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_call_over_tcp_needs_no_registrar() {
    // The stand-in server of a phone without a registrar: nothing listens.
    let mut alice =
        listening_party("alice", "sip:127.0.0.1:9", config_export::Transport::Tcp).await;
    let mut bob = listening_party("bob", "sip:127.0.0.1", config_export::Transport::Udp).await;
    let a = alice
        .phone
        .dial(None, &format!("sip:bob@{};transport=tcp", bob.addr))
        .await
        .expect("the call goes out over TCP");
    let b = incoming(&mut bob.events).await;
    b.answer().await.unwrap();
    call_state(&mut alice.events, Some(&a), "the answer", |s| {
        *s == CallState::Connected
    })
    .await;
    bob_hangs_up(alice, bob, &a, &b).await;
}

/// An INVITE from `socket` to the phone at `to` with this Via branch; the
/// same Call-ID, From tag and CSeq each time.
fn forked_invite(socket: &tokio::net::UdpSocket, to: SocketAddr, branch: &str) -> String {
    format!(
        "INVITE sip:alice@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@127.0.0.1>;tag=carol1\r\n\
         To: <sip:alice@127.0.0.1>\r\n\
         Call-ID: forked-1@127.0.0.1\r\n\
         CSeq: 7 INVITE\r\n\
         Contact: <sip:carol@{local}>\r\n\
         Content-Length: 0\r\n\r\n",
        local = socket.local_addr().unwrap()
    )
}

/// The status of the next response on `socket` for the Via branch `branch`.
async fn status_for(socket: &tokio::net::UdpSocket, branch: &str) -> u16 {
    let mut buf = vec![0u8; 65_536];
    // Bounded: a handful of responses per INVITE.
    for _ in 0..20 {
        let (len, _) = tokio::time::timeout(LIMIT, socket.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..len]);
        if text.contains(&format!("branch=z9hG4bK{branch}")) {
            return text[8..11].parse().unwrap();
        }
    }
    panic!("no response for {branch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_8_2_2_2_an_invite_that_arrives_twice_by_two_paths_is_one_call() {
    let mut alice = party("alice", 440.0, DtmfMode::Rfc4733).await;
    let carol = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let first = forked_invite(&carol, alice.addr, "path1");
    carol.send_to(first.as_bytes(), alice.addr).await.unwrap();
    let call = incoming(&mut alice.events).await;
    assert_eq!(status_for(&carol, "path1").await / 100, 1);
    // The same request through the other branch of a fork.
    let second = forked_invite(&carol, alice.addr, "path2");
    carol.send_to(second.as_bytes(), alice.addr).await.unwrap();
    assert_eq!(status_for(&carol, "path2").await, 482);
    let again = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(e) = alice.events.next().await {
            if matches!(e, PhoneEvent::IncomingCall { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(!again.unwrap_or(false), "a second incoming call");
    assert_eq!(alice.phone.calls().await.unwrap().len(), 1);
    call.reject(486).await.unwrap();
    alice.phone.shutdown().await.unwrap();
}

/// A PBX on loopback that demands Digest of every REGISTER and INVITE and
/// answers an INVITE it can verify with 486. When the second call comes it
/// has restarted: it forgets every nonce it gave and challenges that
/// INVITE (which carries the credentials cached from the first call)
/// without stale=true.
async fn forgetful_pbx() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<u16>) {
    use rand::SeedableRng;
    use sip_core::auth::{ChallengeKind, DigestVerifier};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let mut verifier = DigestVerifier::new(ChallengeKind::Server, "pbx.test", &mut rng);
        let mut calls: Vec<String> = Vec::new();
        let mut branches: Vec<String> = Vec::new();
        let password = |_: &str| Some(sip_core::Secret::new("s3cret"));
        let mut buf = vec![0u8; 65_536];
        // Bounded: a registration and a call.
        for _ in 0..20 {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(request) = sip_core::Message::parse(buf[..len].to_vec()) else {
                continue;
            };
            let method = request.method().cloned();
            let now = std::time::Instant::now();
            if method == Some(sip_core::Method::Invite) {
                let call_id = request.call_id().unwrap_or("").to_owned();
                if !calls.contains(&call_id) {
                    calls.push(call_id);
                    if calls.len() == 2 {
                        verifier = DigestVerifier::new(ChallengeKind::Server, "pbx.test", &mut rng);
                    }
                }
            }
            let status = match method {
                Some(sip_core::Method::Register | sip_core::Method::Invite) => {
                    if verifier.verify(now, &request, password).is_authorized() {
                        if method == Some(sip_core::Method::Register) {
                            200
                        } else {
                            486
                        }
                    } else {
                        401
                    }
                }
                _ => continue,
            };
            // One per transaction: a retransmission is answered again
            // but not counted.
            let branch = request
                .via()
                .ok()
                .and_then(|v| v.branch().map(str::to_owned))
                .unwrap_or_default();
            if !branches.contains(&branch) {
                branches.push(branch);
                let _ = tx.send(status);
            }
            let mut b = sip_core::Message::response_to(&request, status, "Answer")
                .unwrap()
                .to_tag("pbx");
            if status == 200 {
                let contact = request.header("Contact").unwrap_or("").to_owned();
                b = b
                    .header("Contact", &format!("{contact};expires=600"))
                    .unwrap();
            }
            if status == 401 {
                // No stale=true, as some servers do after a restart.
                b = verifier.add_challenge(b, now, false, &mut rng).unwrap();
            }
            let response = b.build().unwrap();
            let _ = socket.send_to(&response.to_bytes(), from).await;
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_credentials_a_restarted_pbx_forgot_are_answered_afresh() {
    let (pbx, mut seen) = forgetful_pbx().await;
    let mut c = Config::default();
    let mut account = Account::new("office", "alice", format!("sip:{pbx}"));
    account.password = Some(config_export::Secret::new("s3cret"));
    c.accounts.push(account);
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.audio = AudioSetup::Null;
    let (phone, mut events) = Phone::start(pc).await.unwrap();
    next_event(&mut events, "registered", |e| {
        matches!(
            e,
            PhoneEvent::Registration {
                status: softphone::RegistrationStatus::Registered { .. },
                ..
            }
        )
    })
    .await;
    for round in 0..2 {
        let call = phone.dial(None, "sip:bob@pbx.test").await.unwrap();
        let ended = call_state(&mut events, Some(&call), "the call to end", |s| {
            matches!(s, CallState::Ended(_))
        })
        .await;
        // The PBX verified the answer and said busy: not "refused 401".
        assert!(
            matches!(
                ended,
                CallState::Ended(EndReason::Refused { status: 486, .. })
            ),
            "call {round}: {ended:?}"
        );
    }
    let statuses: Vec<u16> = std::iter::from_fn(|| seen.try_recv().ok()).collect();
    // REGISTER challenged and accepted; each INVITE challenged once (the
    // second carried the credentials the restarted PBX forgot), then busy.
    assert_eq!(statuses, [401, 200, 401, 486, 401, 486]);
    phone.shutdown().await.unwrap();
}

/// A proxy on loopback (played by a bare UDP socket) that answers the call
/// itself and demands Digest (407) of every INVITE, re-INVITE and BYE, as
/// proxies that authenticate each request they route do.
struct AuthProxy {
    socket: tokio::net::UdpSocket,
    verifier: sip_core::auth::DigestVerifier,
    rng: rand::rngs::StdRng,
    phone: Option<SocketAddr>,
}

impl AuthProxy {
    async fn new() -> Self {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let verifier = sip_core::auth::DigestVerifier::new(
            sip_core::auth::ChallengeKind::Proxy,
            "proxy.test",
            &mut rng,
        );
        AuthProxy {
            socket: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            verifier,
            rng,
            phone: None,
        }
    }

    /// The next request with `method` (other requests and
    /// retransmissions are passed over).
    async fn next(
        &mut self,
        method: sip_core::Method,
        seen: &mut Vec<String>,
    ) -> sip_core::Message {
        let mut buf = vec![0u8; 65_536];
        tokio::time::timeout(LIMIT, async {
            loop {
                let (n, from) = self.socket.recv_from(&mut buf).await.unwrap();
                let Ok(m) = sip_core::Message::parse(buf[..n].to_vec()) else {
                    continue;
                };
                let branch = m.via().ok().and_then(|v| v.branch().map(str::to_owned));
                let key = format!("{:?}{:?}", m.method(), branch);
                if m.method() == Some(&method) && !seen.contains(&key) {
                    seen.push(key);
                    self.phone = Some(from);
                    return m;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {method:?} came"))
    }

    fn authorized(&mut self, request: &sip_core::Message) -> bool {
        let password = |_: &str| Some(sip_core::Secret::new("s3cret"));
        self.verifier
            .verify(std::time::Instant::now(), request, password)
            .is_authorized()
    }

    async fn challenge(&mut self, request: &sip_core::Message) {
        let b = sip_core::Message::response_to(request, 407, "Proxy Authentication Required")
            .unwrap()
            .to_tag("proxy");
        let b = self
            .verifier
            .add_challenge(b, std::time::Instant::now(), false, &mut self.rng)
            .unwrap();
        self.send(b.build().unwrap()).await;
    }

    /// 200 with an audio answer, `direction` its attribute.
    async fn answer(&mut self, request: &sip_core::Message, direction: &str) {
        let addr = self.socket.local_addr().unwrap();
        let sdp = format!(
            "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n",
            addr.port() + 2
        );
        let ok = sip_core::Message::response_to(request, 200, "OK")
            .unwrap()
            .to_tag("bob1")
            .header("Contact", &format!("<sip:bob@{addr}>"))
            .unwrap()
            .header("Content-Type", "application/sdp")
            .unwrap()
            .body(sdp.into_bytes())
            .build()
            .unwrap();
        self.send(ok).await;
    }

    async fn send(&self, response: sip_core::Message) {
        let to = self.phone.unwrap();
        self.socket.send_to(&response.to_bytes(), to).await.unwrap();
    }
}

/// A phone with account `alice` (password `s3cret`) on `server`, which
/// does not register; PCMU without SRTP.
async fn phone_with_password(server: &str) -> (Phone, Events) {
    let mut c = Config::default();
    let mut account = Account::new("office", "alice", server);
    account.password = Some(config_export::Secret::new("s3cret"));
    c.accounts.push(account);
    c.media.codecs = vec!["PCMU".into()];
    c.media.srtp = SrtpPolicy::Off;
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.audio = AudioSetup::Null;
    Phone::start(pc).await.unwrap()
}

fn cseq_of(m: &sip_core::Message) -> u32 {
    m.cseq().unwrap().seq
}

/// RFC 3261 §22: a proxy may challenge any request it routes, not only the
/// first INVITE. A challenged re-INVITE (hold) and BYE are sent again with
/// credentials and the dialog's next CSeq, and each ACK for a 2xx carries
/// the credentials of the INVITE it acknowledges (§22.1), since an ACK
/// cannot be challenged. Before, hold failed, and the BYE's 407 was taken
/// as its answer: the proxy and the callee kept the call up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_22_requests_in_a_call_a_proxy_challenges_go_again_with_credentials() {
    use sip_core::Method;
    let mut proxy = AuthProxy::new().await;
    let proxy_addr = proxy.socket.local_addr().unwrap();
    let (phone, mut events) = phone_with_password(&format!("sip:{proxy_addr}")).await;
    let mut seen = Vec::new();

    let call = phone
        .dial(None, &format!("sip:bob@{proxy_addr}"))
        .await
        .unwrap();
    let invite = proxy.next(Method::Invite, &mut seen).await;
    proxy.challenge(&invite).await;
    let invite = proxy.next(Method::Invite, &mut seen).await;
    assert!(proxy.authorized(&invite), "the INVITE's answer");
    proxy.answer(&invite, "sendrecv").await;
    // The ACK for the 407 has no to-tag of ours; the 2xx's has bob1.
    let ack = loop {
        let ack = proxy.next(Method::Ack, &mut seen).await;
        if ack.header("To").is_some_and(|t| t.contains("bob1")) {
            break ack;
        }
    };
    assert_eq!(cseq_of(&ack), cseq_of(&invite));
    assert!(invite.header("Proxy-Authorization").is_some());
    assert_eq!(
        ack.header("Proxy-Authorization"),
        invite.header("Proxy-Authorization"),
        "the ACK carries the INVITE's credentials"
    );
    call_state(&mut events, Some(&call), "connected", |s| {
        *s == CallState::Connected
    })
    .await;

    call.hold().await.unwrap();
    let reinvite = proxy.next(Method::Invite, &mut seen).await;
    assert!(
        reinvite.header("To").unwrap().contains("bob1"),
        "in the dialog"
    );
    proxy.challenge(&reinvite).await;
    let again = proxy.next(Method::Invite, &mut seen).await;
    assert!(proxy.authorized(&again), "the re-INVITE's answer");
    assert_eq!(cseq_of(&again), cseq_of(&reinvite) + 1);
    assert_eq!(again.body(), reinvite.body(), "the same offer");
    proxy.answer(&again, "recvonly").await;
    let ack = proxy.next(Method::Ack, &mut seen).await;
    assert_eq!(cseq_of(&ack), cseq_of(&again));
    assert_eq!(
        ack.header("Proxy-Authorization"),
        again.header("Proxy-Authorization")
    );
    call_state(&mut events, Some(&call), "held", |s| {
        matches!(s, CallState::OnHold { local: true, .. })
    })
    .await;

    call.hangup().await.unwrap();
    let bye = proxy.next(Method::Bye, &mut seen).await;
    proxy.challenge(&bye).await;
    let bye_again = proxy.next(Method::Bye, &mut seen).await;
    assert!(proxy.authorized(&bye_again), "the BYE's answer");
    assert_eq!(cseq_of(&bye_again), cseq_of(&bye) + 1);
    let ok = sip_core::Message::response_to(&bye_again, 200, "OK")
        .unwrap()
        .build()
        .unwrap();
    proxy.send(ok).await;
    phone.shutdown().await.unwrap();
}

/// A TURN server that never answers costs each call up to the allocation's
/// time limit (5 s) before its media goes direct. Meanwhile the phone
/// answers its user and goes on with other calls: the allocation runs
/// beside it. Before, the whole phone froze for those seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_turn_server_does_not_freeze_the_phone_while_a_call_is_placed() {
    use sip_core::{Message, Method};
    let silent_turn = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let callee = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let callee_addr = callee.local_addr().unwrap();
    let mut c = Config::default();
    c.accounts
        .push(Account::new("alice", "alice", "sip:127.0.0.1"));
    c.relay.turn = Some(config_export::Turn {
        server: format!("turn:{}", silent_turn.local_addr().unwrap()),
        user: Some("alice".into()),
        password: Some(config_export::Secret::new("turn-secret")),
        extra: Default::default(),
    });
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.audio = AudioSetup::Null;
    let (phone, _events) = Phone::start(pc).await.unwrap();

    let dialing = phone.clone();
    let target = format!("sip:bob@{callee_addr}");
    let dial = tokio::spawn(async move { dialing.dial(None, &target).await });
    // The allocation is under way: the phone still answers at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!dial.is_finished(), "the call waits for its media");
    let calls = tokio::time::timeout(Duration::from_secs(1), phone.calls())
        .await
        .expect("the phone answers while a call's media is being prepared")
        .unwrap();
    assert!(calls.is_empty());

    // Then the call goes, with direct media.
    let call = tokio::time::timeout(Duration::from_secs(10), dial)
        .await
        .expect("the call is placed after the allocation's limit")
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let invite = tokio::time::timeout(LIMIT, async {
        loop {
            let (n, _) = callee.recv_from(&mut buf).await.unwrap();
            if let Ok(m) = Message::parse(buf[..n].to_vec())
                && m.method() == Some(&Method::Invite)
            {
                return m;
            }
        }
    })
    .await
    .expect("the INVITE");
    let sdp = String::from_utf8_lossy(invite.body()).into_owned();
    assert!(sdp.contains("c=IN IP4 127.0.0.1"), "{sdp}");
    call.hangup().await.unwrap();
    phone.shutdown().await.unwrap();
}

/// An INVITE (or its CANCEL) from `socket` to the phone at `to`; `name`
/// makes its Call-ID and Via branch.
fn invite_named(
    socket: &tokio::net::UdpSocket,
    to: SocketAddr,
    name: &str,
    cancel: bool,
) -> String {
    let method = if cancel { "CANCEL" } else { "INVITE" };
    format!(
        "{method} sip:alice@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{name}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@127.0.0.1>;tag=carol-{name}\r\n\
         To: <sip:alice@127.0.0.1>\r\n\
         Call-ID: {name}@127.0.0.1\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:carol@{local}>\r\n\
         Content-Length: 0\r\n\r\n",
        local = socket.local_addr().unwrap()
    )
}

/// The same for incoming calls: while a TURN server that never answers
/// holds up their media, the phone answers its user, the callers hear 100
/// Trying, and a caller that gives up meanwhile gets its 487 at once and
/// never rings the user. The other call rings once its media goes direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_turn_server_does_not_freeze_the_phone_while_a_call_comes_in() {
    let silent_turn = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let carol = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut c = Config::default();
    c.accounts
        .push(Account::new("alice", "alice", "sip:127.0.0.1"));
    c.relay.turn = Some(config_export::Turn {
        server: format!("turn:{}", silent_turn.local_addr().unwrap()),
        user: Some("alice".into()),
        password: Some(config_export::Secret::new("turn-secret")),
        extra: Default::default(),
    });
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.audio = AudioSetup::Null;
    let (phone, mut events) = Phone::start(pc).await.unwrap();
    let alice = phone.accounts().await.unwrap()[0].local.unwrap();

    for name in ["kept", "dropped"] {
        let invite = invite_named(&carol, alice, name, false);
        carol.send_to(invite.as_bytes(), alice).await.unwrap();
    }
    assert_eq!(status_for(&carol, "kept").await, 100);
    assert_eq!(status_for(&carol, "dropped").await, 100);
    let calls = tokio::time::timeout(Duration::from_secs(1), phone.calls())
        .await
        .expect("the phone answers while a call's media is being prepared")
        .unwrap();
    assert!(calls.is_empty());
    let cancel = invite_named(&carol, alice, "dropped", true);
    carol.send_to(cancel.as_bytes(), alice).await.unwrap();
    // The CANCEL's 200 and the INVITE's 487 share the branch.
    let mut got = vec![
        status_for(&carol, "dropped").await,
        status_for(&carol, "dropped").await,
    ];
    got.sort_unstable();
    assert_eq!(got, [200, 487]);

    // The call kept rings after the allocation's 5 s limit; only it does.
    let ringing = tokio::time::timeout(Duration::from_secs(10), status_for(&carol, "kept"))
        .await
        .expect("the kept call rings");
    assert_eq!(ringing, 180);
    let offered = next_event(&mut events, "the incoming call", |e| {
        matches!(e, PhoneEvent::IncomingCall { .. })
    })
    .await;
    let PhoneEvent::IncomingCall { call, .. } = offered else {
        unreachable!()
    };
    assert_eq!(
        phone.calls().await.unwrap().len(),
        1,
        "the cancelled one never rang"
    );
    call.reject(486).await.unwrap();
    phone.shutdown().await.unwrap();
}

/// The response from the phone with `status` (others are passed over).
async fn response_with(socket: &tokio::net::UdpSocket, status: u16) -> sip_core::Message {
    let mut buf = vec![0u8; 65_536];
    tokio::time::timeout(LIMIT, async {
        loop {
            let (n, _) = socket.recv_from(&mut buf).await.unwrap();
            if let Ok(m) = sip_core::Message::parse(buf[..n].to_vec())
                && m.status() == Some(status)
            {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {status}"))
}

/// RFC 3261 §12.1.1: the phone's 180 and 200 to an INVITE that came
/// through record-routing proxies carry their Record-Route values in
/// order, so the caller's ACK, BYE and re-INVITEs go through those proxies
/// too. Before, both left them out: behind a NAT or an SBC the caller's
/// ACK went straight to the phone's Contact, never arrived, and the phone
/// hung up after 32 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_12_1_1_ringing_and_the_answer_keep_the_proxies_record_route() {
    let mut alice = party("alice", 440.0, DtmfMode::Rfc4733).await;
    let proxy = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let invite = invite_named(&proxy, alice.addr, "routed", false).replacen(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\n\
         Record-Route: <sip:edge.test;lr>, <sip:core.test;lr>\r\n\
         Record-Route: <sip:last.test;lr;ftag=carol>\r\n",
        1,
    );
    proxy.send_to(invite.as_bytes(), alice.addr).await.unwrap();
    let expected = [
        "<sip:edge.test;lr>, <sip:core.test;lr>",
        "<sip:last.test;lr;ftag=carol>",
    ];
    let ringing = response_with(&proxy, 180).await;
    let routes: Vec<&str> = ringing.header_values("Record-Route").collect();
    assert_eq!(routes, expected, "the 180");
    let call = incoming(&mut alice.events).await;
    call.answer().await.unwrap();
    let ok = response_with(&proxy, 200).await;
    let routes: Vec<&str> = ok.header_values("Record-Route").collect();
    assert_eq!(routes, expected, "the 200");
    call.hangup().await.unwrap();
    alice.phone.shutdown().await.unwrap();
}

/// RFC 3261 §8.2.1: a method the phone does not support is answered 405
/// with an Allow header listing those it does (it had none); one it
/// supports only inside a call is answered 481 outside one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_8_2_1_a_405_lists_the_allowed_methods() {
    let alice = party("alice", 440.0, DtmfMode::Rfc4733).await;
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let publish = invite_named(&peer, alice.addr, "pub", false).replace("INVITE", "PUBLISH");
    peer.send_to(publish.as_bytes(), alice.addr).await.unwrap();
    let refused = response_with(&peer, 405).await;
    let allow = refused.header("Allow").expect("an Allow header");
    for method in ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"] {
        assert!(allow.contains(method), "{allow}");
    }
    assert!(!allow.contains("PUBLISH"), "{allow}");
    // A method it takes only inside a call, outside one: no such dialog
    // (§15.1.2), not a 405 whose Allow lists the method.
    let bye = invite_named(&peer, alice.addr, "stray-bye", false).replace("INVITE", "BYE");
    peer.send_to(bye.as_bytes(), alice.addr).await.unwrap();
    response_with(&peer, 481).await;
    alice.phone.shutdown().await.unwrap();
}

/// A digest answer lets whoever asked for it guess the password offline,
/// so the account's password answers only its own servers (registrar,
/// outbound proxies) and realms they use. A callee reached directly that
/// challenges the INVITE gets no answer: the call ends refused. Before,
/// any peer the user called could collect one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_that_is_not_the_accounts_server_gets_no_answer_to_its_challenge() {
    use sip_core::Method;
    let mut stranger = AuthProxy::new().await;
    let stranger_addr = stranger.socket.local_addr().unwrap();
    let mut c = Config::default();
    // The account's server is elsewhere (nothing listens there).
    let mut account = Account::new("office", "alice", "sip:127.0.0.1:9");
    account.password = Some(config_export::Secret::new("s3cret"));
    c.accounts.push(account);
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.audio = AudioSetup::Null;
    let (phone, mut events) = Phone::start(pc).await.unwrap();
    let mut seen = Vec::new();
    let call = phone
        .dial(None, &format!("sip:bob@{stranger_addr}"))
        .await
        .unwrap();
    let invite = stranger.next(Method::Invite, &mut seen).await;
    stranger.challenge(&invite).await;
    let ended = call_state(&mut events, Some(&call), "the call to end", |s| {
        matches!(s, CallState::Ended(_))
    })
    .await;
    assert!(
        matches!(
            ended,
            CallState::Ended(EndReason::Refused { status: 407, .. })
        ),
        "{ended:?}"
    );
    // No second INVITE with credentials.
    let mut buf = vec![0u8; 65_536];
    let again = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let (n, _) = stranger.socket.recv_from(&mut buf).await.unwrap();
            if let Ok(m) = sip_core::Message::parse(buf[..n].to_vec())
                && m.method() == Some(&Method::Invite)
                && m.header("Proxy-Authorization").is_some()
            {
                return m;
            }
        }
    })
    .await;
    assert!(again.is_err(), "the stranger got a digest of the password");
    phone.shutdown().await.unwrap();
}

/// Quitting during a call whose proxy challenges the BYE: the phone waits
/// (within its shutdown grace) to send the BYE again with credentials, so
/// the call does not stay up at the proxy. Before, the engine stopped as
/// soon as its calls were gone and the challenge went unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_answers_a_challenge_to_the_bye() {
    use sip_core::Method;
    let mut proxy = AuthProxy::new().await;
    let proxy_addr = proxy.socket.local_addr().unwrap();
    let (phone, mut events) = phone_with_password(&format!("sip:{proxy_addr}")).await;
    let mut seen = Vec::new();
    let call = phone
        .dial(None, &format!("sip:bob@{proxy_addr}"))
        .await
        .unwrap();
    let invite = proxy.next(Method::Invite, &mut seen).await;
    proxy.answer(&invite, "sendrecv").await;
    call_state(&mut events, Some(&call), "connected", |s| {
        *s == CallState::Connected
    })
    .await;
    let stopping = phone.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    let bye = proxy.next(Method::Bye, &mut seen).await;
    proxy.challenge(&bye).await;
    let again = proxy.next(Method::Bye, &mut seen).await;
    assert!(proxy.authorized(&again), "the BYE's answer");
    let ok = sip_core::Message::response_to(&again, 200, "OK")
        .unwrap()
        .build()
        .unwrap();
    proxy.send(ok).await;
    tokio::time::timeout(LIMIT, shutdown)
        .await
        .expect("the phone stops")
        .unwrap()
        .unwrap();
}
