//! Crash reports end to end: a child process (the `crash-child` example)
//! panics with personal data in its message, and a local collector shows
//! what left the process.

use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use softphone::diagnostics::TEST_PANIC_MESSAGE;
use testkit::CrashCollector;

/// Selects the child's mode: `on`, `off` or `test-report`.
const MODE_ENV: &str = "SOFTPHONE_CRASH_CHILD";
/// The collector's DSN, for the child.
const DSN_ENV: &str = "SOFTPHONE_CRASH_DSN";
const RELEASE: &str = concat!("softphone-crash-test@", env!("CARGO_PKG_VERSION"));
/// Marks the planted panic in the child's stderr (as the example writes it).
const MARKER: &str = "crash-test-marker";
const OS_USER: &str = "jdoe-planted";

/// What must not be in anything the collector received.
fn planted_secrets(home: &str) -> Vec<String> {
    let mut planted: Vec<String> = [
        "Plantedname",
        "jane.planted",
        "98765432",
        "987654321",
        "198.51.100.77",
        "2001:db8:77::42",
        OS_USER,
        "hunter2-planted",
        "deadbeefplanted",
        "username",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    planted.push(home.to_owned());
    // The machine's name, when it is distinctive enough to search for.
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if host.len() >= 6 {
            planted.push(host.to_owned());
        }
    }
    planted
}

/// The `crash-child` example, which cargo builds beside the test binaries.
fn crash_child() -> std::path::PathBuf {
    let target = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let bin = target
        .parent()
        .expect("the target directory")
        .join(profile)
        .join("examples")
        .join("crash-child");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p softphone --example crash-child`",
        bin.display()
    );
    bin
}

struct Child {
    output: Output,
    home: String,
}

/// Runs `crash_child` in a new process with a planted home and user name.
fn run_child(mode: &str, collector: &CrashCollector) -> Child {
    let home = tempfile::tempdir().expect("temp dir");
    let home = home.path().join("users").join(OS_USER);
    let home = home.to_str().expect("utf-8 path").to_owned();
    let mut child = Command::new(crash_child())
        .env(MODE_ENV, mode)
        .env(DSN_ENV, collector.dsn())
        // The environment cannot turn reports on behind the user's back.
        .env("SENTRY_DSN", collector.dsn())
        .env("HOME", &home)
        .env("USER", OS_USER)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("child status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the crashing child did not end within 60 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("child output");
    Child { output, home }
}

fn stderr(child: &Child) -> String {
    String::from_utf8_lossy(&child.output.stderr).into_owned()
}

#[test]
fn crash_reports_off_send_nothing_after_a_panic() {
    let collector = CrashCollector::start().expect("collector");
    let child = run_child("off", &collector);
    assert_eq!(child.output.status.code(), Some(101), "{}", stderr(&child));
    assert!(
        stderr(&child).contains(MARKER),
        "the child did not panic: {}",
        stderr(&child)
    );
    thread::sleep(Duration::from_millis(300));
    let requests = collector.requests();
    assert!(
        requests.is_empty(),
        "{} requests arrived: {requests:?}",
        requests.len()
    );
}

#[test]
fn crash_reports_on_send_one_scrubbed_event() {
    let collector = CrashCollector::start().expect("collector");
    let child = run_child("on", &collector);
    assert_eq!(child.output.status.code(), Some(101), "{}", stderr(&child));
    assert!(
        stderr(&child).contains(MARKER),
        "the child did not panic: {}",
        stderr(&child)
    );

    let events = collector
        .wait_for_events(1, Duration::from_secs(5))
        .expect("the crash event");
    assert_eq!(events.len(), 1, "exactly one event: {events:#?}");
    let event = &events[0];
    let text = event.to_string();
    eprintln!("event as received: {text}");

    // Nothing personal anywhere in what was sent, headers included.
    for request in collector.requests() {
        let body = String::from_utf8_lossy(&request.body);
        for planted in planted_secrets(&child.home) {
            assert!(!body.contains(&planted), "{planted:?} was sent: {body}");
        }
    }
    assert!(event.get("server_name").is_none(), "host name sent");
    assert!(event.get("user").is_none(), "user context sent");

    // What support needs is there.
    assert_eq!(event["release"], RELEASE);
    assert_eq!(event["level"], "fatal");
    let value = event["exception"]["values"][0]["value"]
        .as_str()
        .expect("the panic message");
    assert!(value.starts_with(MARKER), "{value}");
    assert!(
        value.contains("\"J. P.\" <sip:**********ed@pbx.example.com>"),
        "{value}"
    );
    assert!(
        value.contains("+49 ** ******32") && value.contains("198.51.*.*"),
        "{value}"
    );
    assert!(
        value.contains("<private>/history.sqlite") && value.contains("~/Documents/notes.txt"),
        "{value}"
    );
    assert!(
        value.contains("password=***") && value.contains("Authorization: Digest ***"),
        "{value}"
    );
    let frames = event["exception"]["values"][0]["stacktrace"]["frames"]
        .as_array()
        .expect("stack frames");
    assert!(
        frames.iter().any(|f| f["function"]
            .as_str()
            .is_some_and(|n| n.contains("crash_child"))),
        "the panicking function is in the stack trace"
    );
    assert!(event["contexts"]["os"]["name"].is_string(), "OS name");
    assert!(
        event["contexts"]["device"]["arch"].is_string(),
        "architecture"
    );
    assert!(
        event["contexts"]["device"].get("name").is_none(),
        "device name"
    );
}

#[test]
fn a_test_report_goes_through_the_same_hook_and_the_caller_goes_on() {
    let collector = CrashCollector::start().expect("collector");
    let child = run_child("test-report", &collector);
    assert!(
        child.output.status.success(),
        "the caller survives: {}",
        stderr(&child)
    );
    let events = collector
        .wait_for_events(1, Duration::from_secs(5))
        .expect("the test event");
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        events[0]["exception"]["values"][0]["value"],
        TEST_PANIC_MESSAGE
    );
    assert_eq!(events[0]["release"], RELEASE);
}
