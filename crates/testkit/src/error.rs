//! The one error type of every launcher.

use std::{io, path::PathBuf, time::Duration};

/// Why a peer could not be started, driven or checked.
///
/// Every message names the peer and, where there is one, ends with the last
/// lines of its log, so a failing test explains itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The peer's program is not on this machine. Tests that need it fail
    /// with this error; they never pass silently.
    #[error(
        "`{binary}` not found in PATH, /usr/sbin or /sbin: install it with `apt-get install {package}`"
    )]
    NotInstalled {
        /// The program that was looked for.
        binary: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The peer exited while it was expected to run.
    #[error("{peer} exited early ({status}); last log lines:\n{log_tail}")]
    Exited {
        /// Which peer.
        peer: String,
        /// Its exit status as printed by the OS.
        status: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The peer did not become ready in time.
    #[error("{peer}: {what} not ready after {waited:?}; last log lines:\n{log_tail}")]
    NotReady {
        /// Which peer.
        peer: String,
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// The last lines of its log.
        log_tail: String,
    },
    /// Something expected from a running peer did not happen in time.
    #[error("{peer}: timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// Which peer.
        peer: String,
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// A control command was refused or answered with nonsense.
    #[error("{peer}: control command `{command}` failed: {message}")]
    Control {
        /// Which peer.
        peer: String,
        /// The command.
        command: String,
        /// What went wrong.
        message: String,
    },
    /// No free port (or port range) could be found on 127.0.0.1.
    #[error("no free {what} on 127.0.0.1 after {attempts} attempts")]
    NoFreePort {
        /// What kind of port was looked for.
        what: &'static str,
        /// How many candidates were tried.
        attempts: u32,
    },
    /// A file the launcher ships (config, scenario) is missing.
    #[error("shipped file {path} is missing")]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
    },
    /// Generating a certificate failed.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Reading or writing a WAV file failed.
    #[error("wav file {path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: hound::Error,
    },
    /// A launcher was given an argument it cannot use.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A server received something it could not make sense of.
    #[error("{peer}: received a malformed {what}: {message}")]
    Malformed {
        /// Which server.
        peer: String,
        /// What was received.
        what: String,
        /// What was wrong with it.
        message: String,
    },
}

impl PeerError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias used across the crate.
pub type Result<T, E = PeerError> = std::result::Result<T, E>;
