//! The [`Call`] handle.

use std::time::SystemTime;

use crate::engine::Command;
use crate::error::PhoneError;
use crate::event::{CallId, CallState, Identity, QualityReport};
use crate::history::CallDirection;
use crate::phone::Phone;

/// A call: cheap to clone, usable from any thread. Every method asks the
/// phone's task and waits for its answer; a call that has ended answers
/// [`PhoneError::NoSuchCall`].
#[derive(Debug, Clone)]
pub struct Call {
    id: CallId,
    phone: Phone,
}

/// A snapshot of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallInfo {
    /// The call.
    pub id: CallId,
    /// Who called.
    pub direction: CallDirection,
    /// The account used.
    pub account: String,
    /// Us.
    pub local: Identity,
    /// The peer.
    pub remote: Identity,
    /// Where it stands.
    pub state: CallState,
    /// When it started.
    pub started: SystemTime,
    /// When it was answered.
    pub answered: Option<SystemTime>,
    /// Whether our microphone is muted.
    pub muted: bool,
    /// Media figures, once media flows.
    pub quality: Option<QualityReport>,
}

impl Call {
    pub(crate) fn new(id: CallId, phone: Phone) -> Self {
        Call { id, phone }
    }

    /// The call's identifier.
    pub fn id(&self) -> CallId {
        self.id
    }

    /// Answers an incoming call.
    pub async fn answer(&self) -> Result<(), PhoneError> {
        let call = self.id;
        self.phone
            .ask(|reply| Command::Answer { call, reply })
            .await
    }

    /// Declines an incoming call: 486 (busy here) or 603 (decline) are usual.
    pub async fn reject(&self, status: u16) -> Result<(), PhoneError> {
        let call = self.id;
        self.phone
            .ask(|reply| Command::Reject {
                call,
                status,
                reply,
            })
            .await
    }

    /// Ends the call: BYE once answered, CANCEL while an outgoing call
    /// rings, 603 for an incoming call not yet answered.
    pub async fn hangup(&self) -> Result<(), PhoneError> {
        let call = self.id;
        self.phone
            .ask(|reply| Command::Hangup { call, reply })
            .await
    }

    /// Puts the call on hold (re-INVITE with `sendonly`).
    pub async fn hold(&self) -> Result<(), PhoneError> {
        let call = self.id;
        self.phone
            .ask(|reply| Command::Hold {
                call,
                hold: true,
                reply,
            })
            .await
    }

    /// Takes the call off hold (re-INVITE with `sendrecv`).
    pub async fn resume(&self) -> Result<(), PhoneError> {
        let call = self.id;
        self.phone
            .ask(|reply| Command::Hold {
                call,
                hold: false,
                reply,
            })
            .await
    }

    /// Mutes or unmutes our microphone (no signalling).
    pub async fn set_muted(&self, muted: bool) -> Result<(), PhoneError> {
        let call = self.id;
        self.phone
            .ask(|reply| Command::Mute { call, muted, reply })
            .await
    }

    /// Sends DTMF digits (`0-9 * # A-D`): RFC 4733 events when negotiated,
    /// SIP INFO otherwise or when the configuration asks for it.
    pub async fn send_dtmf(&self, digits: &str) -> Result<(), PhoneError> {
        let call = self.id;
        let digits = digits.to_owned();
        self.phone
            .ask(|reply| Command::Dtmf {
                call,
                digits,
                reply,
            })
            .await
    }

    /// Blind transfer: asks the peer to call `target` (REFER, RFC 3515).
    /// Progress arrives as [`TransferProgress`](crate::PhoneEvent::TransferProgress);
    /// on success this call ends with [`Transferred`](crate::EndReason::Transferred).
    pub async fn transfer(&self, target: &str) -> Result<(), PhoneError> {
        let call = self.id;
        let target = target.to_owned();
        self.phone
            .ask(|reply| Command::Transfer {
                call,
                target,
                reply,
            })
            .await
    }

    /// Attended transfer: connects this call's peer with `other`'s peer
    /// (REFER with Replaces, RFC 3891), then both our legs end.
    pub async fn transfer_to_call(&self, other: &Call) -> Result<(), PhoneError> {
        let call = self.id;
        let other = other.id;
        self.phone
            .ask(|reply| Command::AttendedTransfer { call, other, reply })
            .await
    }

    /// A snapshot of the call.
    pub async fn info(&self) -> Result<CallInfo, PhoneError> {
        let call = self.id;
        self.phone.ask(|reply| Command::Info { call, reply }).await
    }
}
