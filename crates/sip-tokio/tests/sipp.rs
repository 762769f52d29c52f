//! sip-uas and sip-register against sipp's scenarios on 127.0.0.1: OPTIONS,
//! a call the far end (sip-uas) hangs up, and a registrar that challenges
//! with 401 and checks the digest itself.
#![allow(
    clippy::unwrap_used,
    reason = "a failed interop step should fail loudly"
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{Scenario, ShippedScenario, Sipp, free_port};

fn example(name: &str) -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let bin = target
        .parent()
        .unwrap()
        .join(profile)
        .join("examples")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p sip-tokio --example {name}`",
        bin.display()
    );
    bin
}

/// A sip-uas process, bounded in time and killed (by its PID) on drop.
struct Uas {
    child: Child,
    port: u16,
}

impl Uas {
    fn start(extra: &[&str]) -> Uas {
        let port = free_port().unwrap();
        let child = Command::new(example("sip-uas"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--transport",
                "udp",
                "--duration",
                "60",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Ready once the socket is bound.
        for _ in 0..100 {
            if testkit::is_listening(testkit::Protocol::Udp, port) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Uas { child, port }
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sipp_options_is_answered_200() {
    let uas = Uas::start(&[]);
    let out = Sipp::new(Scenario::Shipped(ShippedScenario::UacOptions))
        .with_remote(format!("127.0.0.1:{}", uas.port).parse().unwrap())
        .with_service("uas")
        .with_timeout(Duration::from_secs(15))
        .run()
        .unwrap();
    assert!(out.is_success(), "{}", out.report());
}

#[test]
fn sipp_caller_sees_the_far_end_hang_up() {
    let uas = Uas::start(&["--hangup-after", "500"]);
    let out = Sipp::new(Scenario::Shipped(ShippedScenario::UacInviteExpectBye))
        .with_remote(format!("127.0.0.1:{}", uas.port).parse().unwrap())
        .with_service("uas")
        .with_key("caller", "alice")
        .with_calls(3)
        .with_timeout(Duration::from_secs(30))
        .run()
        .unwrap();
    assert!(out.is_success(), "{}", out.report());
    assert_eq!(out.stats.successful_calls, 3, "{}", out.report());
}

#[test]
fn sipp_registrar_checks_our_digest_after_401() {
    for (password, expect) in [("secret", true), ("wrong", false)] {
        let registrar = Sipp::new(Scenario::Shipped(ShippedScenario::UasRegisterAuth))
            .with_key("user", "alice")
            .with_key("pass", "secret")
            .with_key("realm", "sip.test")
            .with_timeout(Duration::from_secs(20))
            .spawn()
            .unwrap();
        let out = Command::new("timeout")
            .arg("60")
            .arg(example("sip-register"))
            .args(["--registrar", &format!("sip:{}", registrar.addr())])
            .args(["--user", "alice", "--password", password, "--once"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), expect, "password {password}: {text}");
        let outcome = registrar.wait().unwrap();
        assert_eq!(
            outcome.is_success(),
            expect,
            "sipp's verdict on {password}: {}",
            outcome.report()
        );
    }
}
