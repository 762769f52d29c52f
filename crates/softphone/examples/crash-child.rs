//! `crash-child`: the crashing process of the crash-report tests
//! (tests/diagnostics_crash.rs). With `SOFTPHONE_CRASH_CHILD` set to `off`,
//! `on` or `test-report` and `SOFTPHONE_CRASH_DSN` naming a collector, it
//! sets up crash reports that way and panics with personal data and
//! secrets in the message (or, for `test-report`, sends a test report).
#![allow(clippy::expect_used, reason = "a test fixture fails loudly")]

use std::time::Duration;

use softphone::diagnostics::{CrashConfig, init_crash_reports};

const RELEASE: &str = concat!("softphone-crash-test@", env!("CARGO_PKG_VERSION"));
/// Marks the planted panic in stderr.
const MARKER: &str = "crash-test-marker";

fn main() {
    let mode = std::env::var("SOFTPHONE_CRASH_CHILD")
        .expect("SOFTPHONE_CRASH_CHILD: off, on or test-report");
    let dsn =
        std::env::var("SOFTPHONE_CRASH_DSN").expect("SOFTPHONE_CRASH_DSN: the collector's DSN");
    let home = std::env::var("HOME").expect("a HOME");
    let config = CrashConfig::new(RELEASE)
        .with_enabled(mode != "off")
        .with_dsn(dsn)
        .with_private_path(format!("{home}/.local/share/dialer"))
        .with_shutdown_timeout(Duration::from_secs(5));
    let guard = init_crash_reports(config).expect("crash reports set up");
    assert_eq!(guard.is_some(), mode != "off");
    if mode == "test-report" {
        let guard = guard.expect("on");
        assert!(
            guard.send_test_report(Duration::from_secs(5)),
            "test report not sent"
        );
        return;
    }
    panic!(
        "{MARKER}: call from \"Jane Plantedname\" <sip:jane.planted@pbx.example.com> \
         (+49 30 98765432, callback +4930987654321) via 198.51.100.77 and [2001:db8:77::42]:5060 \
         failed; history {home}/.local/share/dialer/history.sqlite, notes {home}/Documents/notes.txt, \
         password=hunter2-planted, Authorization: Digest username=\"jane\", response=\"deadbeefplanted\""
    );
}
