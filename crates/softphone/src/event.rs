//! What a [`Phone`](crate::Phone) reports: registration changes, incoming
//! calls, call state, DTMF and quality.

use std::fmt;

use crate::call::Call;

/// A call's identifier, unique within one phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub(crate) u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// A party of a call: its SIP or tel URI and display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The address, e.g. `sip:alice@example.com`.
    pub uri: String,
    /// The display name, when the party sent one.
    pub display_name: Option<String>,
}

impl Identity {
    /// The user part of a SIP URI (the number or name), else the whole URI.
    pub fn user(&self) -> &str {
        let rest = self
            .uri
            .strip_prefix("sips:")
            .or_else(|| self.uri.strip_prefix("sip:"))
            .or_else(|| self.uri.strip_prefix("tel:"));
        match rest {
            Some(r) => r.split(['@', ';', '?']).next().unwrap_or(r),
            None => &self.uri,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.display_name {
            Some(name) => write!(f, "\"{name}\" <{}>", self.uri),
            None => write!(f, "<{}>", self.uri),
        }
    }
}

/// Where an account's registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationStatus {
    /// Not registering (registration is off, or it was removed).
    Unregistered,
    /// A REGISTER is on its way.
    Registering,
    /// The registrar accepted the binding for this many seconds.
    Registered {
        /// The granted expiry.
        expires: u32,
    },
    /// An attempt failed.
    Failed {
        /// The status code (408 for no answer).
        status: u16,
        /// The reason phrase or what went wrong.
        reason: String,
        /// Whether another attempt is scheduled.
        will_retry: bool,
    },
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// We hung up.
    LocalHangup,
    /// The peer hung up.
    RemoteHangup,
    /// We cancelled before the answer.
    Cancelled,
    /// The caller cancelled before we answered.
    RemoteCancelled,
    /// Another phone took the call before we answered (a CANCEL with
    /// `Reason: SIP;cause=200`, RFC 3326): not a missed call.
    AnsweredElsewhere,
    /// We declined the incoming call with this status.
    Declined {
        /// 486, 603...
        status: u16,
    },
    /// The far end or a proxy refused the call.
    Refused {
        /// The final status, e.g. 486 busy, 404 not found.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// No final answer came in time.
    Timeout,
    /// The call was transferred away (REFER succeeded).
    Transferred,
    /// An attended transfer replaced this call with another.
    Replaced,
    /// The session timer ran out without a refresh (RFC 4028).
    SessionExpired,
    /// Media could not be set up, or signalling broke.
    Failed(String),
}

impl EndReason {
    /// A short text for logs and the call history.
    pub fn as_text(&self) -> String {
        match self {
            EndReason::LocalHangup => "local hangup".into(),
            EndReason::RemoteHangup => "remote hangup".into(),
            EndReason::Cancelled => "cancelled".into(),
            EndReason::RemoteCancelled => "missed".into(),
            EndReason::AnsweredElsewhere => "answered elsewhere".into(),
            EndReason::Declined { status } => format!("declined {status}"),
            EndReason::Refused { status, reason } => format!("refused {status} {reason}"),
            EndReason::Timeout => "no answer".into(),
            EndReason::Transferred => "transferred".into(),
            EndReason::Replaced => "replaced".into(),
            EndReason::SessionExpired => "session expired".into(),
            EndReason::Failed(why) => format!("failed: {why}"),
        }
    }

    /// Whether the call ended the ordinary way (a hang-up by either side or
    /// a transfer), as opposed to a refusal or failure.
    pub fn is_normal(&self) -> bool {
        matches!(
            self,
            EndReason::LocalHangup
                | EndReason::RemoteHangup
                | EndReason::Transferred
                | EndReason::Replaced
        )
    }
}

/// A call's state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallState {
    /// Outgoing: the INVITE is on its way.
    Dialing,
    /// Outgoing: the far end is ringing.
    Ringing,
    /// Outgoing: the far end sends early media (183).
    EarlyMedia,
    /// Incoming: waiting for [`Call::answer`] or [`Call::reject`].
    Incoming,
    /// Talking.
    Connected,
    /// Connected, with media held by one or both sides.
    OnHold {
        /// We put the call on hold.
        local: bool,
        /// The peer put the call on hold.
        remote: bool,
    },
    /// Over.
    Ended(EndReason),
}

/// Media quality of a call so far.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityReport {
    /// The codec, e.g. `PCMU`, `opus`.
    pub codec: String,
    /// The SRTP suite, or `None` for plain RTP.
    pub srtp: Option<String>,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// Packets lost in the network, as a percentage of those expected.
    pub loss_percent: f64,
    /// Interarrival jitter (RFC 3550), milliseconds.
    pub jitter_ms: f64,
    /// Round-trip time from RTCP, when known.
    pub rtt_ms: Option<f64>,
    /// Estimated mean opinion score (E-model, ITU-T G.107), 1 to 4.5.
    pub mos: f64,
}

impl fmt::Display for QualityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "codec {}, {}, sent {} received {} packets, loss {:.1}%, jitter {:.1} ms, ",
            self.codec,
            self.srtp.as_deref().unwrap_or("no SRTP"),
            self.packets_sent,
            self.packets_received,
            self.loss_percent,
            self.jitter_ms
        )?;
        if let Some(rtt) = self.rtt_ms {
            write!(f, "rtt {rtt:.1} ms, ")?;
        }
        write!(f, "MOS {:.2}", self.mos)
    }
}

/// Something that happened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PhoneEvent {
    /// An account's registration changed.
    Registration {
        /// The account's id.
        account: String,
        /// The new status.
        status: RegistrationStatus,
    },
    /// A call arrived; answer or reject it through the handle.
    IncomingCall {
        /// The call.
        call: Call,
        /// The caller.
        from: Identity,
        /// Whom it was for.
        to: Identity,
    },
    /// The phone placed a call on its own: the far end asked us to call a
    /// transfer target (REFER, RFC 3515).
    TransferCall {
        /// The call that was transferred.
        original: CallId,
        /// The new call to the transfer target.
        call: Call,
    },
    /// A call changed state.
    CallState {
        /// The call.
        call: CallId,
        /// Its new state.
        state: CallState,
    },
    /// A DTMF digit arrived (RFC 4733 or SIP INFO).
    Dtmf {
        /// The call.
        call: CallId,
        /// `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
    },
    /// A transfer we asked for progressed: the status line the transferee
    /// reported (100 trying, 200 done, 4xx-6xx failed).
    TransferProgress {
        /// The call being transferred.
        call: CallId,
        /// The reported status.
        status: u16,
    },
    /// Media quality, every few seconds while media flows, and once at the end.
    Quality {
        /// The call.
        call: CallId,
        /// The figures.
        report: QualityReport,
    },
    /// The PBX asked for a provisioning re-check (NOTIFY Event: check-sync).
    CheckSync,
    /// Something the user should know that is not an error, e.g. that no
    /// sound card was found and the null device is used.
    Notice {
        /// What to show.
        text: String,
    },
}
