//! The dialer end to end against real peers on 127.0.0.1: Kamailio as the
//! registrar and proxy, baresip as the far end. Audio is checked in both
//! directions by measuring each side's recording.
#![allow(
    clippy::unwrap_used,
    reason = "a failed interop step should fail loudly"
)]

mod common;
use common::dialer;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use testkit::{
    AudioSource, Baresip, Capture, Kamailio, TestCa, Tone, UaTransport, analyze_wav, write_tone,
};

const DIALER_TONE: f64 = 440.0;
const BARESIP_TONE: f64 = 1000.0;

fn tone_file(dir: &Path, name: &str, tone: Tone) -> PathBuf {
    let path = dir.join(name);
    write_tone(&path, &tone).unwrap();
    path
}

fn narrowband(frequency: f64, seconds: u64) -> Tone {
    let mut t = Tone::narrowband(frequency);
    t.duration = Duration::from_secs(seconds);
    t
}

fn assert_tone(path: &Path, expected: f64, who: &str, log: &str) {
    let a = analyze_wav(path, Duration::from_millis(500))
        .unwrap_or_else(|e| panic!("{who}: cannot read {}: {e}\n{log}", path.display()));
    assert!(
        a.is_tone_heard(expected, 0.02),
        "{who} heard {:.1} Hz (zero crossings {:.1} Hz, rms {:.0}), expected {expected} Hz\n{log}",
        a.dominant_frequency,
        a.zero_crossing_frequency,
        a.rms
    );
}

fn baresip_heard(b: &Baresip) -> PathBuf {
    // sndfile closes its files when the call ends; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(p) = b.received_audio() {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "baresip recorded nothing:\n{}",
            b.log_tail(40)
        );
        thread::sleep(Duration::from_millis(100));
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    kamailio: Kamailio,
}

fn setup(tls: Option<&TestCa>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = Kamailio::builder().with_lifetime(Duration::from_secs(120));
    if let Some(ca) = tls {
        builder = builder.with_tls(ca);
    }
    Setup {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        kamailio: builder.start().unwrap(),
    }
}

fn registrar_args(k: &Kamailio, transport: &str) -> Vec<String> {
    let port = if transport == "tls" {
        k.tls_port().unwrap()
    } else {
        k.sip_port()
    };
    vec![
        "--registrar".into(),
        format!("sip:127.0.0.1:{port}"),
        "--user".into(),
        "alice".into(),
        "--password".into(),
        k.user("alice").unwrap().password.clone(),
        "--transport".into(),
        transport.into(),
        "--bind".into(),
        "127.0.0.1".into(),
    ]
}

/// A call from the dialer through Kamailio to baresip with a tone each way.
fn call_baresip(
    transport: &str,
    codec: &str,
    srtp: &str,
    ca: Option<&TestCa>,
    capture_plain: Option<bool>,
) {
    let s = setup(ca);
    let ua_transport = match transport {
        "tcp" => UaTransport::Tcp,
        "tls" => UaTransport::Tls,
        _ => UaTransport::Udp,
    };
    let bs_source = if codec == "opus" {
        AudioSource::Sine(BARESIP_TONE as u32)
    } else {
        AudioSource::File(tone_file(&s.dir, "bs.wav", narrowband(BARESIP_TONE, 10)))
    };
    let mut builder = Baresip::builder("bob")
        .registering_with(&s.kamailio, "bob", ua_transport)
        .unwrap()
        .with_auto_answer(true)
        .with_codecs(&[codec])
        .with_audio_source(bs_source)
        .with_recording(true)
        .with_lifetime(Duration::from_secs(90));
    if let Some(ca) = ca {
        builder = builder.with_ca_file(ca.ca_cert_path());
    }
    if srtp == "mandatory" {
        let port = s.kamailio.tls_port().unwrap();
        let password = &s.kamailio.user("bob").unwrap().password;
        builder = builder.with_account(&format!(
            "<sip:bob@127.0.0.1:{port};transport=tls>;auth_pass={password};regint=600;mediaenc=srtp-mand"
        ));
    }
    let bob = builder.start().unwrap();
    bob.wait_registered(Duration::from_secs(10)).unwrap();

    let play = tone_file(&s.dir, "alice.wav", narrowband(DIALER_TONE, 10));
    let heard = s.dir.join("alice-heard.wav");
    let rtp = testkit::free_udp_range(10).unwrap();
    let rtp_ports = format!("{}-{}", rtp.start(), rtp.end());
    let capture = capture_plain.map(|_| {
        Capture::start(
            &format!("udp portrange {}-{}", rtp.start(), rtp.end()),
            Duration::from_secs(60),
        )
        .unwrap()
    });
    let mut owned = registrar_args(&s.kamailio, transport);
    if let Some(ca) = ca {
        owned.push("--ca".into());
        owned.push(ca.ca_cert_path().display().to_string());
    }
    let target = format!("sip:bob@127.0.0.1:{}", s.kamailio.sip_port());
    let play_s = play.display().to_string();
    let heard_s = heard.display().to_string();
    let mut args: Vec<&str> = vec![
        "call",
        &target,
        "--codec",
        codec,
        "--srtp",
        srtp,
        "--play",
        &play_s,
        "--record",
        &heard_s,
        "--hangup-after",
        "3",
        "--rtp-ports",
        &rtp_ports,
    ];
    args.extend(owned.iter().map(String::as_str));
    let run = dialer(&s.dir, &args);
    let log = format!("{}\n--- baresip ---\n{}", run.out, bob.log_tail(30));
    assert!(run.ok, "the dialer's call failed:\n{log}");
    assert!(run.out.contains("answered"), "{log}");
    assert!(run.out.contains("quality: codec"), "{log}");
    assert_tone(&heard, BARESIP_TONE, "the dialer", &log);
    assert_tone(&baresip_heard(&bob), DIALER_TONE, "baresip", &log);
    if let (Some(capture), Some(expect_plain)) = (capture, capture_plain) {
        let flows = capture.stop().unwrap();
        let outgoing: Vec<_> = flows
            .iter()
            .filter(|f| rtp.contains(&f.src_port) && f.rtp_packets >= 20)
            .collect();
        assert!(
            !outgoing.is_empty(),
            "no RTP from the dialer captured: {flows:?}"
        );
        for f in outgoing {
            assert_eq!(
                !f.looks_encrypted(),
                expect_plain,
                "RTP from port {} has payload entropy {:.2} bits/byte",
                f.src_port,
                f.payload_entropy
            );
        }
    }
}

#[test]
fn g711_over_udp_through_kamailio_to_baresip() {
    // The capture here is the control: plain RTP must look plain.
    call_baresip("udp", "pcmu", "off", None, Some(true));
}

#[test]
fn opus_over_tcp_through_kamailio_to_baresip() {
    call_baresip("tcp", "opus", "optional", None, None);
}

#[test]
fn g711_with_mandatory_srtp_over_tls() {
    let ca = TestCa::new().unwrap();
    call_baresip("tls", "pcmu", "mandatory", Some(&ca), Some(false));
}

#[test]
fn demo_call_passes() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = dialer(dir.path(), &["demo"]);
    assert!(run.ok, "{}", run.out);
    assert!(run.out.contains("audio flowed both ways"), "{}", run.out);
    assert!(run.out.contains("AES_CM_128_HMAC_SHA1_80"), "{}", run.out);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn baresip_calls_the_dialer_in_answer_mode() {
    let s = setup(None);
    let bob = Baresip::builder("bob")
        .registering_with(&s.kamailio, "bob", UaTransport::Udp)
        .unwrap()
        .with_codecs(&["pcmu"])
        .with_audio_source(AudioSource::File(tone_file(
            &s.dir,
            "bs.wav",
            narrowband(BARESIP_TONE, 10),
        )))
        .with_recording(true)
        .with_lifetime(Duration::from_secs(90))
        .start()
        .unwrap();
    bob.wait_registered(Duration::from_secs(10)).unwrap();
    let play = tone_file(&s.dir, "alice.wav", narrowband(DIALER_TONE, 10));
    let heard = s.dir.join("alice-heard.wav");
    let mut args: Vec<String> = [
        "answer",
        "--auto",
        "--calls",
        "1",
        "--hangup-after",
        "3",
        "--duration",
        "40",
        "--play",
        play.to_str().unwrap(),
        "--record",
        heard.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(registrar_args(&s.kamailio, "udp"));
    let profile = s.dir.clone();
    let handle = thread::spawn(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        dialer(&profile, &refs)
    });
    s.kamailio
        .wait_registered("alice", Duration::from_secs(15))
        .unwrap();
    bob.dial(&format!("sip:alice@127.0.0.1:{}", s.kamailio.sip_port()))
        .unwrap();
    let run = handle.join().unwrap();
    let log = format!("{}\n--- baresip ---\n{}", run.out, bob.log_tail(30));
    assert!(run.ok, "answer mode failed:\n{log}");
    assert!(run.out.contains("incoming call from bob"), "{log}");
    assert_tone(&heard, BARESIP_TONE, "the dialer", &log);
    assert_tone(&baresip_heard(&bob), DIALER_TONE, "baresip", &log);
}

#[test]
fn ctrl_c_while_registered_removes_the_binding() {
    use std::process::Stdio;
    let s = setup(None);
    let mut args: Vec<String> = vec![
        "--profile".into(),
        s.dir.to_string_lossy().into_owned(),
        "register".into(),
        "--stay".into(),
        "60".into(),
    ];
    args.extend(registrar_args(&s.kamailio, "udp"));
    let child = Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_dialer"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s.kamailio
        .wait_registered("alice", Duration::from_secs(15))
        .unwrap();
    // `timeout` passes the signal on to the dialer, as a terminal's Ctrl-C
    // reaches the process group.
    let interrupt = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("interrupted: un-registering"), "{text}");
    // Gone at once, not when it would have expired.
    assert!(
        s.kamailio.registered_contacts("alice").unwrap().is_empty(),
        "{text}"
    );
}

#[test]
fn the_shell_takes_commands_from_a_pipe() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_dialer"))
        .arg("--profile")
        .arg(dir.path())
        .args(["shell", "--bind", "127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"help\nstatus\nhangup\nfrobnicate\nhistory\nquit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("commands: call TARGET"), "{text}");
    assert!(text.contains("account cli:"), "{text}");
    assert!(text.contains("error: no call"), "{text}");
    assert!(text.contains("unknown command \"frobnicate\""), "{text}");
}
