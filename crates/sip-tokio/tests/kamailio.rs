//! `sip-register` against a real Kamailio registrar on 127.0.0.1 (launched by
//! testkit): MD5 and SHA-256 digest, over UDP, TCP and TLS with the
//! certificate verified against the test CA; a wrong password fails.
#![allow(
    clippy::unwrap_used,
    reason = "a failed interop step should fail loudly"
)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use testkit::{DigestAlgorithm, Kamailio, TestCa};

/// The example binary `cargo test` builds next to the test binaries.
fn sip_register() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = target.parent().unwrap();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let bin = dir.join(profile).join("examples").join("sip-register");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p sip-tokio --example sip-register`",
        bin.display()
    );
    bin
}

fn register(kamailio: &Kamailio, ca: &TestCa, transport: &str, password: &str) -> (bool, String) {
    let (port, scheme) = match transport {
        "tls" => (kamailio.tls_port().unwrap(), "sip"),
        "ws" => (kamailio.ws_port().unwrap(), "sip"),
        "wss" => (kamailio.wss_port().unwrap(), "sip"),
        _ => (kamailio.sip_port(), "sip"),
    };
    let out = Command::new("timeout")
        .arg("60")
        .arg(sip_register())
        .args(["--registrar", &format!("{scheme}:127.0.0.1:{port}")])
        .args(["--user", "alice", "--password", password])
        .args(["--transport", transport, "--expires", "300", "--once"])
        .arg("--ca")
        .arg(ca.ca_cert_path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn check_algorithm(algorithm: DigestAlgorithm) {
    let ca = TestCa::new().unwrap();
    let kamailio = Kamailio::builder()
        .with_user("alice", "alice-pw")
        .with_digest(algorithm)
        .with_tls(&ca)
        .start()
        .unwrap();
    for transport in ["udp", "tcp", "tls"] {
        let (ok, text) = register(&kamailio, &ca, transport, "alice-pw");
        assert!(
            ok,
            "{algorithm:?} over {transport}: {text}\n{}",
            kamailio.log_tail(20)
        );
        assert!(text.contains("registered: expires"), "{text}");
        let contacts = kamailio
            .wait_registered("alice", Duration::from_secs(5))
            .unwrap();
        assert!(!contacts.is_empty());
    }
    let (ok, text) = register(&kamailio, &ca, "udp", "wrong");
    assert!(!ok, "a wrong password must fail: {text}");
    assert!(text.contains("rejected the credentials"), "{text}");
}

#[test]
fn md5_registration_over_udp_tcp_and_tls() {
    check_algorithm(DigestAlgorithm::Md5);
}

#[test]
fn sha256_registration_over_udp_tcp_and_tls() {
    check_algorithm(DigestAlgorithm::Sha256);
}

#[test]
fn tls_with_an_untrusted_ca_fails() {
    let ca = TestCa::new().unwrap();
    let other = TestCa::new().unwrap();
    let kamailio = Kamailio::builder()
        .with_user("alice", "alice-pw")
        .with_tls(&ca)
        .start()
        .unwrap();
    let (ok, text) = register(&kamailio, &other, "tls", "alice-pw");
    assert!(!ok, "{text}");
    assert!(
        text.contains("TLS") || text.contains("certificate") || text.contains("connecting"),
        "{text}"
    );
}

#[test]
fn registration_over_websocket_and_secure_websocket() {
    let ca = TestCa::new().unwrap();
    let kamailio = Kamailio::builder()
        .with_user("alice", "alice-pw")
        .with_tls(&ca)
        .with_websocket()
        .with_lifetime(std::time::Duration::from_secs(60))
        .start()
        .unwrap();
    for transport in ["ws", "wss"] {
        let (ok, text) = register(&kamailio, &ca, transport, "alice-pw");
        assert!(ok, "{transport}: {text}\n{}", kamailio.log_tail(30));
        assert!(text.contains("registered: expires"), "{transport}: {text}");
        let contacts = kamailio
            .wait_registered("alice", std::time::Duration::from_secs(5))
            .unwrap();
        assert!(
            contacts
                .iter()
                .any(|c| c.contains(&format!("transport={transport}"))),
            "{transport}: {contacts:?}"
        );
    }
}
