//! The global subscriber from `init_logging`: one test, since a process
//! has one subscriber and one personal-data switch.

use std::fs;

use softphone::Pii;
use softphone::diagnostics::{
    LogConfig, PERSONAL_DATA_WARNING, init_logging, logs_personal_data, set_log_personal_data,
};

#[test]
fn log_lines_are_scrubbed_and_the_debug_switch_unmasks_all_but_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs").join("dialer.log");
    let guard = init_logging(
        LogConfig::new("debug")
            .with_file(&path)
            .with_log_personal_data(true),
    )
    .unwrap();
    assert!(logs_personal_data());
    assert_eq!(guard.file(), Some(path.as_path()));

    // The user's debug switch is on: personal data in the clear, secrets not.
    tracing::info!(to = %Pii::uri("sip:0301234567@pbx.example.com"), "dialing");
    tracing::debug!(
        sip = "REGISTER sip:pbx.example.com SIP/2.0\r\nAuthorization: Digest username=\"alice\", response=\"5ca1ab1e\"\r\n",
        "sent"
    );
    // Off again (the default): masked, wrapped in Pii or not.
    set_log_personal_data(false);
    tracing::info!(to = %Pii::uri("sip:0301234567@pbx.example.com"), "dialing");
    tracing::info!(
        from = %"\"Alice Smith\" <sip:alice@example.com>",
        addr = %"203.0.113.25:5060",
        "incoming call"
    );
    tracing::warn!("callback to +49 30 1234567 failed, password=hunter2");
    tracing::trace!("not logged at debug level");
    drop(guard);

    let text = fs::read_to_string(&path).unwrap();
    eprintln!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].ends_with(&format!(
        "WARN softphone::diagnostics: {PERSONAL_DATA_WARNING}"
    )));
    assert!(
        lines[1].ends_with("dialing to=sip:0301234567@pbx.example.com"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("Authorization: Digest ***"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].ends_with("dialing to=sip:********67@pbx.example.com"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].contains("from=\"A. S.\" <sip:***ce@example.com> addr=203.0.*.*:5060"),
        "{}",
        lines[4]
    );
    assert!(
        lines[5].ends_with("callback to +49 ** *****67 failed, password=***"),
        "{}",
        lines[5]
    );
    for secret in ["5ca1ab1e", "hunter2", "username"] {
        assert!(!text.contains(secret), "{secret} in the log");
    }
}
