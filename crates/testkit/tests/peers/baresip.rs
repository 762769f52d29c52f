use std::time::Duration;

use testkit::{
    AudioSource, Baresip, Kamailio, PeerError, Tone, UaTransport, analyze_wav, write_tone,
};

#[test]
fn registers_with_kamailio() {
    let kamailio = Kamailio::start().unwrap();
    let bob = Baresip::builder("bob")
        .registering_with(&kamailio, "bob", UaTransport::Udp)
        .unwrap()
        .start()
        .unwrap();
    bob.wait_registered(Duration::from_secs(10)).unwrap();
    let contacts = kamailio
        .wait_registered("bob", Duration::from_secs(5))
        .unwrap();
    assert!(
        contacts[0].contains(&format!("127.0.0.1:{}", bob.sip_port())),
        "{contacts:?}"
    );
}

#[test]
fn wrong_password_is_reported_as_a_failed_registration() {
    let kamailio = Kamailio::start().unwrap();
    let port = kamailio.sip_port();
    let carol = Baresip::builder("carol")
        .with_account(&format!(
            "<sip:carol@127.0.0.1:{port};transport=udp>;auth_pass=wrong;regint=600"
        ))
        .start()
        .unwrap();
    let err = carol.wait_registered(Duration::from_secs(10)).unwrap_err();
    assert!(matches!(err, PeerError::Control { .. }), "{err}");
    assert!(kamailio.registered_contacts("carol").unwrap().is_empty());
}

#[test]
fn call_through_kamailio_carries_the_tone_and_dtmf() {
    let kamailio = Kamailio::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tone = dir.path().join("tone-1000.wav");
    write_tone(&tone, &Tone::narrowband(1000.0)).unwrap();

    let bob = Baresip::builder("bob")
        .registering_with(&kamailio, "bob", UaTransport::Tcp)
        .unwrap()
        .with_auto_answer(true)
        .with_codecs(&["pcmu"])
        .with_audio_source(AudioSource::File(tone.clone()))
        .with_recording(true)
        .start()
        .unwrap();
    let alice = Baresip::builder("alice")
        .registering_with(&kamailio, "alice", UaTransport::Udp)
        .unwrap()
        .with_codecs(&["pcmu"])
        .with_audio_source(AudioSource::File(tone))
        .start()
        .unwrap();
    bob.wait_registered(Duration::from_secs(10)).unwrap();
    alice.wait_registered(Duration::from_secs(10)).unwrap();

    alice.dial(&kamailio.aor("bob")).unwrap();
    alice
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", alice.log_tail(30)));
    bob.wait_event("CALL_ESTABLISHED", Duration::from_secs(5))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    alice.send_dtmf("5").unwrap();
    let dtmf = bob
        .wait_event("CALL_DTMF_START", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", bob.log_tail(30)));
    assert_eq!(dtmf.param, "5");
    std::thread::sleep(Duration::from_secs(1));
    alice.hangup().unwrap();
    bob.wait_event("CALL_CLOSED", Duration::from_secs(10))
        .unwrap();
    alice
        .wait_event("CALL_CLOSED", Duration::from_secs(5))
        .unwrap();

    let received = bob
        .received_audio()
        .unwrap_or_else(|| panic!("no recording in {:?}", bob.recordings()));
    let analysis = analyze_wav(&received, Duration::from_millis(500)).unwrap();
    assert!(analysis.is_tone(1000.0, 0.05), "{analysis:?}");
    assert_eq!(analysis.sample_rate, 8000);
}

#[test]
fn invalid_dtmf_is_refused_before_reaching_baresip() {
    let ua = Baresip::builder("dave").start().unwrap();
    let err = ua.send_dtmf("5x").unwrap_err();
    assert!(matches!(err, PeerError::InvalidArgument(_)), "{err}");
    assert!(ua.command("reginfo", "").is_ok());
}

#[test]
fn registers_over_tls_trusting_the_test_ca() {
    let ca = testkit::TestCa::new().unwrap();
    let kamailio = Kamailio::builder().with_tls(&ca).start().unwrap();
    let bob = Baresip::builder("bob")
        .registering_with(&kamailio, "bob", UaTransport::Tls)
        .unwrap()
        .with_ca_file(ca.ca_cert_path())
        .start()
        .unwrap();
    bob.wait_registered(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", kamailio.log_tail(20)));
    let contacts = kamailio
        .wait_registered("bob", Duration::from_secs(5))
        .unwrap();
    assert!(
        contacts[0].to_ascii_lowercase().contains("transport=tls"),
        "{contacts:?}"
    );
}
