//! Diagnostics that respect privacy: logs that mask personal data, log
//! files with rotation and a retention window, and crash reports that are
//! off until the user opts in and are scrubbed before they leave.
//!
//! | piece | what it does |
//! |---|---|
//! | [`Pii`] | wraps a number, URI, name, address or contact field: prints masked (`sip:***ce@example.com`, `+49*******67`, `A. S.`, `192.168.*.*`) unless [`set_log_personal_data`] is on |
//! | [`redact_secrets`] | removes `Authorization` values, digest `nonce`/`response`, passwords, tokens, URI passwords from free text, always |
//! | [`scrub`], [`mask_personal_data`] | the pattern-based safety net for text that did not use [`Pii`] |
//! | [`ScrubbingMakeWriter`] | runs every formatted log line through [`scrub`] |
//! | [`RollingFile`] | a log file rotated by size with an age limit |
//! | [`init_logging`] | installs the subscriber: filter, scrubber, file or stderr |
//! | [`log_files`], [`purge_old_logs`], [`export_logs`], [`erase_logs`] | the files behind the logs: list, expire, bundle for support (masked again), erase |
//! | [`init_crash_reports`] | opt-in Sentry reports of panics, scrubbed in the process |
//!
//! Secrets never reach a log, a bundle or a report, whether or not the user
//! turned on personal-data logging.
//!
//! ```no_run
//! use softphone::diagnostics::{CrashConfig, LogConfig, init_crash_reports, init_logging};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let privacy = config_export::Privacy::default();
//! let _crash = init_crash_reports(
//!     CrashConfig::new(concat!("dialer@", env!("CARGO_PKG_VERSION")))
//!         .with_privacy(&privacy)
//!         .with_dsn("https://public@crash.example.com/4"),
//! )?; // None: the user did not opt in
//! let logs = init_logging(
//!     LogConfig::new("info")
//!         .with_file("/home/alice/.local/share/dialer/logs/dialer.log")
//!         .with_privacy(&privacy),
//! )?;
//! tracing::info!(to = %softphone::Pii::uri("sip:bob@example.com"), "dialing");
//! # drop(logs);
//! # Ok(())
//! # }
//! ```

mod crash;
mod edit;
mod error;
mod files;
mod logging;
mod pii;
mod scrub;
mod secrets;

pub use crash::{
    CrashConfig, CrashGuard, TEST_PANIC_MESSAGE, init_crash_reports, trigger_test_panic,
};
pub use error::{CrashError, LogError};
pub use files::{LogExport, erase_logs, export_logs, log_files, purge_old_logs, rfc3339};
pub use logging::{
    LogConfig, LogGuard, PERSONAL_DATA_WARNING, RollingFile, Rotation, ScrubbingMakeWriter,
    ScrubbingWriter, init_logging,
};
pub use pii::{Pii, PiiKind, logs_personal_data, set_log_personal_data};
pub use scrub::{mask_personal_data, scrub};
pub use secrets::redact_secrets;
