//! What can go wrong when using a [`Phone`](crate::Phone).

use thiserror::Error;

use crate::event::CallId;
use crate::history::HistoryError;

/// Errors of the phone's API.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// The phone has stopped.
    #[error("the phone has stopped")]
    Stopped,
    /// The configuration cannot be used; the text says which field and why.
    #[error("configuration: {0}")]
    Config(String),
    /// No account with this id (or no account at all).
    #[error("no account {0:?}")]
    NoSuchAccount(String),
    /// The call has ended or never existed.
    #[error("no call {0}")]
    NoSuchCall(CallId),
    /// The call is not in a state where this can be done.
    #[error("{call}: cannot {action} while the call is {state}")]
    InvalidState {
        /// The call.
        call: CallId,
        /// What was asked.
        action: &'static str,
        /// Where the call stands.
        state: String,
    },
    /// A dial target, transfer target or DTMF string is malformed.
    #[error("invalid {what}: {value:?}")]
    InvalidInput {
        /// Which input.
        what: &'static str,
        /// What was given.
        value: String,
    },
    /// A SIP listener, media socket or connection could not be opened.
    #[error("network: {0}")]
    Network(String),
    /// Offer/answer or media setup failed.
    #[error("media: {0}")]
    Media(String),
    /// The call history failed.
    #[error(transparent)]
    History(#[from] HistoryError),
}
