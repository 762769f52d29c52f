//! `dialer register` through a relay proxy: Kamailio over TLS with the
//! outbound (`+sip.instance`, `reg-id`, `ob`) and push (`pn-*`) parameters
//! visible in the registrar's binding, and a dead first proxy skipped, by
//! registrations and by calls.
#![allow(
    clippy::unwrap_used,
    reason = "a failed interop step should fail loudly"
)]

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use testkit::{Kamailio, TestCa};

#[test]
fn registration_through_a_tls_relay_with_push_and_fail_over() {
    let ca = TestCa::new().unwrap();
    let kamailio = Kamailio::builder()
        .with_tls(&ca)
        .with_lifetime(Duration::from_secs(90))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dead = testkit::free_port().unwrap();
    let args: Vec<String> = vec![
        "--profile".into(),
        dir.path().display().to_string(),
        "register".into(),
        "--registrar".into(),
        format!("sip:127.0.0.1:{}", kamailio.sip_port()),
        "--user".into(),
        "alice".into(),
        "--password".into(),
        kamailio.user("alice").unwrap().password.clone(),
        "--proxy".into(),
        format!("sip:127.0.0.1:{dead};transport=tls"),
        "--proxy".into(),
        format!(
            "sip:127.0.0.1:{};transport=tls",
            kamailio.tls_port().unwrap()
        ),
        "--ca".into(),
        ca.ca_cert_path().display().to_string(),
        "--push-provider".into(),
        "fcm".into(),
        "--push-prid".into(),
        "device-token-1".into(),
        "--push-param".into(),
        "proj-7".into(),
        "--stay".into(),
        "6".into(),
    ];
    let child = thread::spawn(move || {
        Command::new("timeout")
            .arg("60")
            .arg(env!("CARGO_BIN_EXE_dialer"))
            .args(&args)
            .output()
            .unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let binding = loop {
        let found = kamailio
            .registered_bindings("alice")
            .unwrap_or_default()
            .into_iter()
            .next();
        if let Some(b) = found {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "no binding:\n{}",
            kamailio.log_tail(30)
        );
        thread::sleep(Duration::from_millis(200));
    };
    let out = child.join().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("flow up through proxy 2"), "{text}");
    assert!(binding.address.contains(";ob"), "{binding:?}");
    assert!(binding.address.contains("pn-provider=fcm"), "{binding:?}");
    assert!(
        binding.address.contains("pn-prid=device-token-1"),
        "{binding:?}"
    );
    assert!(binding.address.contains("pn-param=proj-7"), "{binding:?}");
    assert!(binding.address.contains("transport=tls"), "{binding:?}");
    assert!(
        binding
            .instance
            .as_deref()
            .is_some_and(|i| i.contains("urn:uuid:")),
        "{binding:?}"
    );
    assert_eq!(binding.reg_id, Some(1), "{binding:?}");
    // The instance id is kept in the profile for the next start.
    let id = std::fs::read_to_string(dir.path().join("instance-id")).unwrap();
    assert!(
        binding
            .instance
            .unwrap()
            .contains(id.trim().trim_start_matches("urn:uuid:"))
    );
}

#[test]
fn a_call_through_the_second_tls_proxy_with_media_through_turn() {
    use testkit::{AudioSource, Baresip, Coturn, Tone, UaTransport, analyze_wav, write_tone};
    let ca = TestCa::new().unwrap();
    let kamailio = Kamailio::builder()
        .with_tls(&ca)
        .with_lifetime(Duration::from_secs(90))
        .start()
        .unwrap();
    let coturn = Coturn::builder()
        .with_users(&[("media", "media-secret")])
        .with_lifetime(Duration::from_secs(90))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tone = |name: &str, f: f64| {
        let p = dir.path().join(name);
        let mut t = Tone::narrowband(f);
        t.duration = Duration::from_secs(10);
        write_tone(&p, &t).unwrap();
        p
    };
    let bob_wav = tone("bob.wav", 1000.0);
    let alice_wav = tone("alice.wav", 440.0);
    let bob = Baresip::builder("bob")
        .registering_with(&kamailio, "bob", UaTransport::Udp)
        .unwrap()
        .with_auto_answer(true)
        .with_codecs(&["pcmu"])
        .with_audio_source(AudioSource::File(bob_wav))
        .with_recording(true)
        .with_lifetime(Duration::from_secs(60))
        .start()
        .unwrap();
    bob.wait_registered(Duration::from_secs(10)).unwrap();
    let heard = dir.path().join("heard.wav");
    // The first proxy is dead: the call fails over to the second.
    let dead = testkit::free_port().unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_dialer"))
        .arg("--profile")
        .arg(dir.path())
        .args([
            "call",
            &format!("sip:bob@127.0.0.1:{}", kamailio.sip_port()),
            "--registrar",
            &format!("sip:127.0.0.1:{}", kamailio.sip_port()),
            "--proxy",
            &format!("sip:127.0.0.1:{dead};transport=tls"),
            "--proxy",
            &format!(
                "sip:127.0.0.1:{};transport=tls",
                kamailio.tls_port().unwrap()
            ),
            "--transport",
            "tls",
            "--user",
            "alice",
            "--password",
            &kamailio.user("alice").unwrap().password,
            "--bind",
            "127.0.0.1",
            "--codec",
            "pcmu",
            "--turn",
            &coturn.addr().to_string(),
            "--turn-user",
            "media",
            "--turn-password",
            "media-secret",
            "--play",
            alice_wav.to_str().unwrap(),
            "--record",
            heard.to_str().unwrap(),
            "--hangup-after",
            "2",
        ])
        .arg("--ca")
        .arg(ca.ca_cert_path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}\n--- baresip ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        bob.log_tail(20)
    );
    assert!(out.status.success(), "{text}");
    let a = analyze_wav(&heard, Duration::from_millis(500)).unwrap();
    assert!(
        a.is_tone_heard(1000.0, 0.02),
        "the dialer heard {:.1} Hz\n{text}",
        a.dominant_frequency
    );
    let sessions = coturn
        .wait_for_ended_sessions("media", Duration::from_secs(10))
        .unwrap();
    let peer = sessions[0].peer.unwrap();
    assert!(
        peer.received_packets > 40 && peer.sent_packets > 40,
        "coturn relayed {peer:?}\n{text}"
    );
    // baresip heard the dialer through the relay.
    let deadline = Instant::now() + Duration::from_secs(5);
    let recorded = loop {
        if let Some(p) = bob.received_audio() {
            break p;
        }
        assert!(Instant::now() < deadline, "baresip recorded nothing");
        thread::sleep(Duration::from_millis(100));
    };
    let b = analyze_wav(&recorded, Duration::from_millis(500)).unwrap();
    assert!(
        b.is_tone_heard(440.0, 0.02),
        "baresip heard {:.1} Hz\n{text}",
        b.dominant_frequency
    );
}

#[test]
fn registration_through_a_secure_websocket_relay() {
    let ca = TestCa::new().unwrap();
    let kamailio = Kamailio::builder()
        .with_tls(&ca)
        .with_websocket()
        .with_lifetime(Duration::from_secs(60))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_dialer"))
        .arg("--profile")
        .arg(dir.path())
        .args([
            "register",
            "--registrar",
            &format!("sip:127.0.0.1:{}", kamailio.sip_port()),
            "--user",
            "alice",
            "--password",
            &kamailio.user("alice").unwrap().password,
            "--proxy",
            &format!(
                "sip:127.0.0.1:{};transport=wss",
                kamailio.wss_port().unwrap()
            ),
            "--push-provider",
            "apns",
            "--push-prid",
            "tok-9",
        ])
        .arg("--ca")
        .arg(ca.ca_cert_path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        kamailio.log_tail(20)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("registered (expires"), "{text}");
}
