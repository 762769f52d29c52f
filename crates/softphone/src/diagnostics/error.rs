//! What can go wrong setting up logs and crash reports.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why logging could not be set up, or log files not be handled.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    /// The filter directive does not parse.
    #[error("invalid log filter {filter:?}: {reason}")]
    InvalidFilter {
        /// The directive given.
        filter: String,
        /// What the parser said.
        reason: String,
    },
    /// A rotation size of 0 bytes.
    #[error("log rotation needs a maximum file size above 0 bytes")]
    InvalidRotation,
    /// The process already has a global `tracing` subscriber.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
    /// A log file or directory could not be used.
    #[error("cannot {action} {path}: {source}")]
    File {
        /// What was tried.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

/// Why crash reports could not be turned on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CrashError {
    /// The user opted in, but there is no DSN to send reports to.
    #[error("crash reports are on but no report address (DSN) is configured")]
    MissingDsn,
    /// The DSN does not parse (it is not repeated: it holds a key).
    #[error("invalid crash-report DSN: {reason}")]
    InvalidDsn {
        /// What was wrong.
        reason: String,
    },
    /// A DSN with plain `http` to a host other than loopback.
    #[error("crash reports must go over https (plain http only to a loopback address)")]
    InsecureDsn,
    /// The HTTPS client could not be built.
    #[error("cannot build the HTTPS client for crash reports: {reason}")]
    Client {
        /// What the client builder said.
        reason: String,
    },
}
