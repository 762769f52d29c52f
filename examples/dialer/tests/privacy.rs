//! Privacy end to end with the dialer binary: logs that hold none of the
//! identities a call used and no credentials, crash reports only after
//! opt-in and scrubbed, the personal data export, and erasure.
#![allow(clippy::unwrap_used, reason = "a failed step should fail loudly")]

mod common;
use common::dialer_with;

use std::time::Duration;

use testkit::{AudioSource, Baresip, CrashCollector, Kamailio, Tone, UaTransport, write_tone};

#[test]
fn the_demo_log_holds_none_of_the_identities_it_printed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let run = dialer_with(
        dir.path(),
        &["--log-file", log.to_str().unwrap(), "demo"],
        &[("RUST_LOG", "debug")],
    );
    assert!(run.ok, "{}", run.out);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().count() > 10,
        "the debug log is nearly empty:\n{text}"
    );
    // The identities the demo printed: `alice: sip:alice@127.0.0.1 at 127.0.0.1:PORT`.
    let mut identities = Vec::new();
    for line in run.out.lines() {
        if let Some(rest) = line
            .strip_prefix("alice: sip:")
            .or_else(|| line.strip_prefix("bob:   sip:"))
        {
            let mut parts = rest.split(" at ");
            identities.push(format!("sip:{}", parts.next().unwrap()));
            identities.push(parts.next().unwrap().trim().to_owned());
        }
    }
    assert_eq!(identities.len(), 4, "{}", run.out);
    identities.extend(["Demo alice".to_owned(), "Demo bob".to_owned()]);
    for id in &identities {
        assert!(!text.contains(id.as_str()), "the log holds {id:?}");
    }
    assert!(!text.contains("Authorization: Digest"));
    // With the switch on, the same identities appear (the masking is real).
    let log2 = dir.path().join("demo-pii.log");
    let run = dialer_with(
        dir.path(),
        &["--log-file", log2.to_str().unwrap(), "--log-pii", "demo"],
        &[("RUST_LOG", "debug")],
    );
    assert!(run.ok, "{}", run.out);
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(text.contains(identities[0].as_str()), "{text}");
}

#[test]
fn a_call_is_exported_then_erased_and_credentials_never_logged() {
    let kamailio = Kamailio::builder()
        .with_lifetime(Duration::from_secs(90))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tone = dir.path().join("t.wav");
    let mut t = Tone::narrowband(1000.0);
    t.duration = Duration::from_secs(5);
    write_tone(&tone, &t).unwrap();
    let bob = Baresip::builder("bob")
        .registering_with(&kamailio, "bob", UaTransport::Udp)
        .unwrap()
        .with_auto_answer(true)
        .with_codecs(&["pcmu"])
        .with_audio_source(AudioSource::File(tone.clone()))
        .with_lifetime(Duration::from_secs(60))
        .start()
        .unwrap();
    bob.wait_registered(Duration::from_secs(10)).unwrap();
    let profile = dir.path().join("profile");
    let log = dir.path().join("call.log");
    let password = kamailio.user("alice").unwrap().password.clone();
    let registrar = format!("sip:127.0.0.1:{}", kamailio.sip_port());
    let target = format!("sip:bob@127.0.0.1:{}", kamailio.sip_port());
    let run = dialer_with(
        &profile,
        &[
            "--log-file",
            log.to_str().unwrap(),
            "call",
            &target,
            "--registrar",
            &registrar,
            "--user",
            "alice",
            "--bind",
            "127.0.0.1",
            "--codec",
            "pcmu",
            "--play",
            tone.to_str().unwrap(),
            "--hangup-after",
            "1",
        ],
        &[
            ("RUST_LOG", "trace"),
            ("DIALER_PASSWORD", password.as_str()),
        ],
    );
    assert!(run.ok, "{}", run.out);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("REGISTER") || text.lines().count() > 20,
        "trace log too thin"
    );
    assert!(
        !text.contains(password.as_str()),
        "the password is in the log"
    );
    for line in text.lines().filter(|l| l.contains("Authorization:")) {
        assert!(
            !line.contains("response=") && !line.contains("nonce="),
            "an Authorization value is in the log: {line}"
        );
    }
    assert!(
        !text.contains("sip:alice@"),
        "alice's address is in the log"
    );

    let r = dialer_with(
        &profile,
        &[
            "contacts",
            "add",
            "Bob Builder",
            "--number",
            "mobile:+44 20 7946 0018",
        ],
        &[],
    );
    assert!(r.ok, "{}", r.out);
    let export = dir.path().join("mine.json");
    let r = dialer_with(
        &profile,
        &["privacy", "export", export.to_str().unwrap()],
        &[],
    );
    assert!(r.ok, "{}", r.out);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    let calls = doc["call_history"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{doc:#}");
    assert_eq!(calls[0]["remote_identity"], target);
    assert_eq!(doc["contacts"].as_array().unwrap().len(), 1);
    assert!(!doc.to_string().contains(password.as_str()));
    assert!(!doc["log_files"].as_array().unwrap().is_empty() || log.exists());

    let r = dialer_with(&profile, &["privacy", "erase"], &[]);
    assert!(
        !r.ok,
        "erase without --yes and without a terminal must refuse: {}",
        r.out
    );
    // A push token, provisioned and then set by the user, is personal data
    // too: erase drops both, so a later provisioning cannot bring the
    // user's back.
    let with_push = dir.path().join("push.xml");
    std::fs::write(
        &with_push,
        "<softphone-config version=\"1\"><account id=\"office\"><user>alice</user>\
         <registrar>sip:127.0.0.1</registrar></account>\
         <push><provider>fcm</provider><prid>provisioned-token</prid></push></softphone-config>",
    )
    .unwrap();
    let r = dialer_with(&profile, &["import", with_push.to_str().unwrap()], &[]);
    assert!(r.ok, "{}", r.out);
    let r = dialer_with(
        &profile,
        &["config", "set", "push/prid", "device-secret-77"],
        &[],
    );
    assert!(r.ok, "{}", r.out);
    let r = dialer_with(&profile, &["privacy", "erase", "--yes"], &[]);
    assert!(r.ok, "{}", r.out);
    let overrides = std::fs::read_to_string(profile.join("overrides.json")).unwrap_or_default();
    assert!(!overrides.contains("device-secret-77"), "{overrides}");
    let r = dialer_with(
        &profile,
        &["privacy", "export", export.to_str().unwrap()],
        &[],
    );
    assert!(r.ok, "{}", r.out);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    assert_eq!(doc["call_history"].as_array().unwrap().len(), 0, "{doc:#}");
    assert_eq!(doc["contacts"].as_array().unwrap().len(), 0, "{doc:#}");
    // Nothing of the erased records is left in the store files.
    for name in ["history.sqlite", "contacts.sqlite3"] {
        let p = profile.join(name);
        if p.exists() {
            let bytes = std::fs::read(&p).unwrap();
            // The name as written, and as the search index keeps its
            // words (lower case; a term may be stored after the prefix it
            // shares with the one before, "b").
            for needle in [&b"Bob Builder"[..], b"uilder"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{name} still holds a contact ({})",
                    String::from_utf8_lossy(needle)
                );
            }
            let needle = target.as_bytes();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{name} still holds the call"
            );
        }
    }
}

#[test]
fn crash_reports_only_after_opt_in_and_scrubbed() {
    let collector = CrashCollector::start().unwrap();
    let dsn = collector.dsn();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile-of-alice-4930123456");
    let r = dialer_with(&profile, &["--crash-dsn", &dsn, "debug", "crash"], &[]);
    assert!(r.ok, "{}", r.out);
    assert!(r.out.contains("no report was sent"), "{}", r.out);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        collector.events().unwrap().is_empty(),
        "a report arrived without opt-in"
    );

    let r = dialer_with(&profile, &["config", "set", "crash_reports", "on"], &[]);
    assert!(r.ok, "{}", r.out);
    let r = dialer_with(&profile, &["--crash-dsn", &dsn, "debug", "crash"], &[]);
    assert!(r.ok, "{}", r.out);
    let events = collector
        .wait_for_events(1, Duration::from_secs(10))
        .unwrap();
    assert_eq!(events.len(), 1);
    let text = events[0].to_string();
    assert!(text.contains("dialer@"), "no release in {text}");
    assert!(
        !text.contains("4930123456"),
        "the profile path leaked: {text}"
    );
    assert!(
        !text.contains(profile.to_str().unwrap()),
        "a user path leaked: {text}"
    );
}
