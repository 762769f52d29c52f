//! `dialer demo`: two phones in this process, on loopback, no server. Alice
//! calls Bob with SRTP; each sends a tone (Alice 440 Hz, Bob 1000 Hz) and
//! checks that it hears the other's. Exit 0 when audio flowed both ways.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use config_export::{Account, Config, SrtpPolicy};
use media_audio::{Recording, Tone, ToneBackend, analysis};
use softphone::{AudioSetup, CallState, Events, Phone, PhoneConfig, PhoneEvent, QualityReport};
use tokio::time::{Instant, timeout_at};

const ALICE_TONE: f64 = 440.0;
const BOB_TONE: f64 = 1000.0;
/// How far a measured tone may be from the sent one.
const TOLERANCE: f64 = 0.02;

fn config(user: &str, tone: f64, recording: &Recording, codec: &str) -> Result<PhoneConfig> {
    let codec = match codec.to_ascii_lowercase().as_str() {
        "opus" => "opus",
        "pcmu" => "PCMU",
        "pcma" => "PCMA",
        other => bail!(crate::options::UsageError(format!(
            "--codec {other:?}: use pcmu, pcma or opus"
        ))),
    };
    let mut c = Config::default();
    let mut account = Account::new(user, user, "sip:127.0.0.1");
    account.display_name = Some(format!("Demo {user}"));
    c.accounts.push(account);
    c.media.codecs = vec![codec.to_owned()];
    c.media.srtp = SrtpPolicy::Mandatory;
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.quality_interval = Duration::from_secs(1);
    let recording = recording.clone();
    pc.audio = AudioSetup::Custom(Arc::new(move || {
        Ok(Box::new(ToneBackend::with_recording(
            Tone::new(tone),
            recording.clone(),
        )))
    }));
    Ok(pc)
}

/// Waits until `pred` accepts an event, or the deadline.
async fn wait_for(
    events: &mut Events,
    deadline: Instant,
    what: &str,
    mut pred: impl FnMut(&PhoneEvent) -> bool,
) -> Result<PhoneEvent> {
    loop {
        match timeout_at(deadline, events.next()).await {
            Err(_) => bail!("timed out waiting for {what}"),
            Ok(None) => bail!("the phone stopped while waiting for {what}"),
            Ok(Some(ev)) if pred(&ev) => return Ok(ev),
            Ok(Some(_)) => {}
        }
    }
}

fn heard(name: &str, recording: &Recording, expected: f64) -> bool {
    let rate = recording.sample_rate().unwrap_or(48_000);
    let samples = recording.latest(Duration::from_secs(1));
    match analysis::dominant_frequency(&samples, rate) {
        Some(f) if (f - expected).abs() <= expected * TOLERANCE => {
            println!("{name} hears {f:.1} Hz (expected {expected:.0} Hz): ok");
            true
        }
        Some(f) => {
            println!("{name} hears {f:.1} Hz, expected {expected:.0} Hz: FAILED");
            false
        }
        None => {
            println!("{name} hears nothing: FAILED");
            false
        }
    }
}

fn print_report(name: &str, r: Option<&QualityReport>) {
    match r {
        Some(r) => println!("{name}: {r}"),
        None => println!("{name}: no media figures"),
    }
}

pub(crate) async fn run(codec: &str, seconds: u64) -> Result<bool> {
    let alice_heard = Recording::new(Duration::from_secs(30));
    let bob_heard = Recording::new(Duration::from_secs(30));
    let (alice, mut alice_events) = Phone::start(config("alice", ALICE_TONE, &alice_heard, codec)?)
        .await
        .context("starting Alice's phone")?;
    let (bob, mut bob_events) = Phone::start(config("bob", BOB_TONE, &bob_heard, codec)?)
        .await
        .context("starting Bob's phone")?;
    let bob_account = bob
        .accounts()
        .await?
        .into_iter()
        .next()
        .context("Bob has no account")?;
    let alice_account = alice
        .accounts()
        .await?
        .into_iter()
        .next()
        .context("Alice has no account")?;
    let bob_addr = bob_account.local.context("Bob has no SIP address")?;
    println!(
        "alice: {} at {}",
        alice_account.aor,
        alice_account
            .local
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    println!("bob:   {} at {bob_addr}", bob_account.aor);

    let deadline = Instant::now() + Duration::from_secs(15);
    let call = alice
        .dial(None, &format!("sip:bob@{bob_addr}"))
        .await
        .context("Alice dials Bob")?;
    let incoming = wait_for(&mut bob_events, deadline, "Bob's incoming call", |e| {
        matches!(e, PhoneEvent::IncomingCall { .. })
    })
    .await?;
    let PhoneEvent::IncomingCall {
        call: bob_call,
        from,
        ..
    } = incoming
    else {
        unreachable!("filtered above")
    };
    println!("bob: incoming call from {from}");
    bob_call.answer().await.context("Bob answers")?;
    let id = call.id();
    wait_for(
        &mut alice_events,
        deadline,
        "the answer",
        |e| matches!(e, PhoneEvent::CallState { call, state: CallState::Connected } if *call == id),
    )
    .await?;
    println!("alice: call answered; talking for {seconds} s");
    tokio::time::sleep(Duration::from_secs(seconds)).await;

    let a_info = call.info().await?;
    let b_info = bob_call.info().await?;
    let alice_ok = heard("alice", &alice_heard, BOB_TONE);
    let bob_ok = heard("bob", &bob_heard, ALICE_TONE);
    call.hangup().await.context("Alice hangs up")?;
    let end_deadline = Instant::now() + Duration::from_secs(5);
    let bob_id = bob_call.id();
    wait_for(&mut bob_events, end_deadline, "Bob's end of call", |e| {
        matches!(e, PhoneEvent::CallState { call, state: CallState::Ended(_) } if *call == bob_id)
    })
    .await?;
    print_report("alice", a_info.quality.as_ref());
    print_report("bob", b_info.quality.as_ref());
    let encrypted = [&a_info, &b_info]
        .iter()
        .all(|i| i.quality.as_ref().is_some_and(|q| q.srtp.is_some()));
    if !encrypted {
        println!("demo: media was not encrypted: FAILED");
    }
    let _ = tokio::join!(alice.shutdown(), bob.shutdown());
    let ok = alice_ok && bob_ok && encrypted;
    println!(
        "demo: {}",
        if ok {
            "audio flowed both ways"
        } else {
            "FAILED"
        }
    );
    Ok(ok)
}
