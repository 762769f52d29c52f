//! The four transaction state machines of RFC 3261 §17, with the RFC 6026
//! Accepted state, as sans-IO values.
//!
//! A transaction is fed messages and time, and is drained with
//! [`poll_transmit`](ClientTransaction::poll_transmit),
//! [`poll_event`](ClientTransaction::poll_event) and
//! [`poll_timeout`](ClientTransaction::poll_timeout). It never reads a clock:
//! every input carries `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::message::Message;
use crate::name::Method;

/// Timer base values (RFC 3261 §17.1.1.1, table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network, 5 s.
    pub t4: Duration,
    /// When an INVITE server transaction sends 100 Trying if the TU has not
    /// answered (RFC 3261 §17.2.1), 200 ms.
    pub trying_delay: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            trying_delay: Duration::from_millis(200),
        }
    }
}

/// Whether the transport retransmits for us (TCP, TLS, WS) or not (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    /// TCP, TLS, WebSocket: no retransmissions, zero wait timers.
    Reliable,
    /// UDP: retransmissions and absorbing timers.
    Unreliable,
}

/// Transaction states, named as in RFC 3261 §17 and RFC 6026.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionState {
    /// INVITE client: request sent, no response yet.
    Calling,
    /// Non-INVITE client and server: request sent or received, no response yet.
    Trying,
    /// A provisional response was sent or received.
    Proceeding,
    /// A final non-2xx response was sent or received; absorbing retransmissions.
    Completed,
    /// INVITE server: the ACK for a non-2xx arrived.
    Confirmed,
    /// INVITE (RFC 6026): a 2xx was sent or received; absorbing retransmissions.
    Accepted,
    /// Done; the transaction can be dropped.
    Terminated,
}

/// What a transaction tells its user.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TransactionEvent {
    /// A response for the user (client transactions): provisional, final,
    /// and every 2xx in the Accepted state.
    Response(Message),
    /// A request retransmission or ACK for the user (server INVITE
    /// transactions pass ACKs for 2xx received in Accepted).
    Ack(Message),
    /// Timer B or F fired: no final response arrived (a 408 for the user).
    TimedOut,
    /// The transport reported a failure sending this transaction's message.
    TransportError,
    /// The transaction reached Terminated.
    Terminated,
}

/// A timer of RFC 3261 §17 (and RFC 6026's L and M).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmit (client, unreliable).
    A,
    /// INVITE transaction timeout (client).
    B,
    /// Wait for response retransmissions (client INVITE, Completed).
    D,
    /// Non-INVITE request retransmit (client, unreliable).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE final response retransmit (server, unreliable).
    G,
    /// Wait for ACK (server INVITE, Completed).
    H,
    /// Wait for ACK retransmissions (server INVITE, Confirmed).
    I,
    /// Wait for request retransmissions (server non-INVITE, Completed).
    J,
    /// Wait for response retransmissions (client non-INVITE, Completed).
    K,
    /// Wait in Accepted (server INVITE, RFC 6026).
    L,
    /// Wait in Accepted (client INVITE, RFC 6026).
    M,
    /// Send 100 Trying if the user has not answered (server INVITE).
    Trying,
}

/// How many timers can be armed at once. No state arms more than two (A and
/// B, E and F, G and H); a fixed array keeps them off the heap.
const TIMER_SLOTS: usize = 4;

/// A small set of armed timers.
#[derive(Debug, Clone, Default)]
struct Timers {
    armed: [Option<(Timer, Instant)>; TIMER_SLOTS],
}

impl Timers {
    fn set(&mut self, timer: Timer, at: Instant) {
        self.cancel(timer);
        let free = self.armed.iter().position(Option::is_none);
        // No state arms more than TIMER_SLOTS timers; in release builds the
        // newest timer would win over the last slot if one ever did.
        debug_assert!(free.is_some(), "more than {TIMER_SLOTS} timers armed");
        let slot = free.unwrap_or(TIMER_SLOTS - 1);
        self.armed[slot] = Some((timer, at));
    }

    fn cancel(&mut self, timer: Timer) {
        for slot in &mut self.armed {
            if slot.is_some_and(|(t, _)| t == timer) {
                *slot = None;
            }
        }
    }

    fn clear(&mut self) {
        self.armed = [None; TIMER_SLOTS];
    }

    fn next(&self) -> Option<Instant> {
        self.armed.iter().flatten().map(|(_, at)| *at).min()
    }

    /// Removes and returns the earliest timer due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let (idx, _) = self
            .armed
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| slot.map(|(_, at)| (i, at)))
            .filter(|(_, at)| *at <= now)
            .min_by_key(|(_, at)| *at)?;
        self.armed[idx].take().map(|(t, _)| t)
    }
}

/// A message waiting to be sent. The transaction's own request, ACK and last
/// response are named rather than copied: most are sent once.
#[derive(Debug, Clone)]
enum Out {
    /// Boxed: rare, and the queue of every transaction is sized for it.
    Message(Box<Message>),
    /// The client transaction's request.
    Request,
    /// The client transaction's ACK for a non-2xx final response.
    Ack,
    /// The server transaction's last response.
    LastResponse,
}

/// Output queues shared by every transaction kind.
#[derive(Debug, Clone, Default)]
struct Outputs {
    transmit: VecDeque<Out>,
    events: VecDeque<TransactionEvent>,
}

/// Where a server INVITE transaction's 100 Trying comes from.
#[derive(Debug, Clone)]
enum Trying {
    /// Built by the user.
    Ready(Message),
    /// Built from this request when Timer Trying fires: most INVITEs are
    /// answered before, and the copy costs less than a response.
    FromRequest(Message),
}

/// A client transaction: INVITE (§17.1.1) or non-INVITE (§17.1.2).
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    request: Message,
    invite: bool,
    config: TimerConfig,
    reliability: Reliability,
    state: TransactionState,
    timers: Timers,
    out: Outputs,
    /// Current retransmit interval (timers A and E).
    interval: Duration,
    /// The ACK for a non-2xx final response, resent on its retransmissions.
    ack: Option<Message>,
}

impl ClientTransaction {
    /// Starts a transaction: the request goes out at once.
    pub fn new(
        now: Instant,
        request: Message,
        config: TimerConfig,
        reliability: Reliability,
    ) -> Self {
        let invite = request.method() == Some(&Method::Invite);
        let mut tx = ClientTransaction {
            invite,
            config,
            reliability,
            state: if invite {
                TransactionState::Calling
            } else {
                TransactionState::Trying
            },
            timers: Timers::default(),
            out: Outputs::default(),
            interval: config.t1,
            ack: None,
            request,
        };
        tx.out.transmit.push_back(Out::Request);
        let retransmit = if invite { Timer::A } else { Timer::E };
        let timeout = if invite { Timer::B } else { Timer::F };
        if reliability == Reliability::Unreliable {
            tx.timers.set(retransmit, now + config.t1);
        }
        tx.timers.set(timeout, now + config.t1 * 64);
        tx
    }

    /// The request this transaction sends.
    pub fn request(&self) -> &Message {
        &self.request
    }

    /// The current state.
    pub fn state(&self) -> TransactionState {
        self.state
    }

    /// Whether this sends an INVITE.
    pub fn is_invite(&self) -> bool {
        self.invite
    }

    fn message_ref<'a>(&'a self, out: &'a Out) -> Option<&'a Message> {
        match out {
            Out::Message(m) => Some(&**m),
            Out::Request => Some(&self.request),
            Out::Ack => self.ack.as_ref(),
            Out::LastResponse => None,
        }
    }

    /// Feeds a response matched to this transaction (§17.1.3).
    pub fn handle_response(&mut self, now: Instant, response: Message) {
        let Some(status) = response.status() else {
            return;
        };
        use TransactionState::*;
        match (self.invite, self.state, status) {
            // INVITE client (§17.1.1.2, RFC 6026 §8.4).
            (true, Calling | Proceeding, 100..=199) => {
                // Timer B times out Calling only: a call may ring for
                // minutes. Once a CANCEL goes, `cancel_sent` sets it again.
                if self.state == Calling {
                    self.timers.cancel(Timer::A);
                    self.timers.cancel(Timer::B);
                }
                self.state = Proceeding;
                self.out
                    .events
                    .push_back(TransactionEvent::Response(response));
            }
            (true, Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                self.timers.clear();
                self.timers.set(Timer::M, now + self.config.t1 * 64);
                self.out
                    .events
                    .push_back(TransactionEvent::Response(response));
            }
            (true, Accepted, 200..=299) => {
                self.out
                    .events
                    .push_back(TransactionEvent::Response(response));
            }
            (true, Calling | Proceeding, _) => {
                self.state = Completed;
                self.timers.clear();
                if let Some(ack) = build_ack(&self.request, &response) {
                    self.ack = Some(ack);
                    self.out.transmit.push_back(Out::Ack);
                }
                let wait = match self.reliability {
                    Reliability::Unreliable => Duration::from_secs(32).max(self.config.t1 * 64),
                    Reliability::Reliable => Duration::ZERO,
                };
                self.timers.set(Timer::D, now + wait);
                self.out
                    .events
                    .push_back(TransactionEvent::Response(response));
                if wait.is_zero() {
                    self.handle_timeout(now);
                }
            }
            (true, Completed, 300..=699) if self.ack.is_some() => {
                self.out.transmit.push_back(Out::Ack);
            }
            // Non-INVITE client (§17.1.2.2).
            (false, Trying | Proceeding, 100..=199) => {
                if self.state == Trying {
                    self.state = Proceeding;
                }
                self.out
                    .events
                    .push_back(TransactionEvent::Response(response));
            }
            (false, Trying | Proceeding, _) => {
                self.state = Completed;
                self.timers.clear();
                let wait = match self.reliability {
                    Reliability::Unreliable => self.config.t4,
                    Reliability::Reliable => Duration::ZERO,
                };
                self.timers.set(Timer::K, now + wait);
                self.out
                    .events
                    .push_back(TransactionEvent::Response(response));
                if wait.is_zero() {
                    self.handle_timeout(now);
                }
            }
            // Retransmissions in Completed, Accepted or Terminated are absorbed.
            _ => {}
        }
    }

    /// Notes that a CANCEL for this INVITE was sent at `now`: without a
    /// final response 64*T1 later, the transaction ends as timed out
    /// (§9.1). Only an INVITE that is still Calling or Proceeding is
    /// affected.
    pub fn cancel_sent(&mut self, now: Instant) {
        if self.invite
            && matches!(
                self.state,
                TransactionState::Calling | TransactionState::Proceeding
            )
        {
            self.timers.set(Timer::B, now + self.config.t1 * 64);
        }
    }

    /// Fires every timer due at `now`. Safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::A if self.state == TransactionState::Calling => {
                    self.out.transmit.push_back(Out::Request);
                    self.interval *= 2;
                    self.timers.set(Timer::A, now + self.interval);
                }
                Timer::E
                    if matches!(
                        self.state,
                        TransactionState::Trying | TransactionState::Proceeding
                    ) =>
                {
                    self.out.transmit.push_back(Out::Request);
                    self.interval = if self.state == TransactionState::Proceeding {
                        self.config.t2
                    } else {
                        (self.interval * 2).min(self.config.t2)
                    };
                    self.timers.set(Timer::E, now + self.interval);
                }
                Timer::B | Timer::F => {
                    self.out.events.push_back(TransactionEvent::TimedOut);
                    self.terminate();
                }
                Timer::D | Timer::K | Timer::M => self.terminate(),
                _ => {}
            }
        }
    }
}

/// A server transaction: INVITE (§17.2.1) or non-INVITE (§17.2.2).
#[derive(Debug, Clone)]
pub struct ServerTransaction {
    invite: bool,
    config: TimerConfig,
    reliability: Reliability,
    state: TransactionState,
    timers: Timers,
    out: Outputs,
    /// The last response sent, resent on request retransmissions.
    last_response: Option<Message>,
    /// The 100 Trying to send if the user stays silent (INVITE only).
    trying: Option<Trying>,
    interval: Duration,
}

impl ServerTransaction {
    /// Starts a transaction for a received request.
    ///
    /// For an INVITE, `trying` is the 100 Trying to send if the user has not
    /// responded within [`TimerConfig::trying_delay`].
    pub fn new(
        now: Instant,
        request: &Message,
        trying: Option<Message>,
        config: TimerConfig,
        reliability: Reliability,
    ) -> Self {
        Self::with_trying(now, request, trying.map(Trying::Ready), config, reliability)
    }

    /// Starts a transaction for a received request whose 100 Trying, if it
    /// is due (INVITE, no response within [`TimerConfig::trying_delay`]), is
    /// built from `request` then.
    pub(crate) fn new_lazy_trying(
        now: Instant,
        request: &Message,
        config: TimerConfig,
        reliability: Reliability,
    ) -> Self {
        let trying = (request.method() == Some(&Method::Invite))
            .then(|| Trying::FromRequest(request.clone()));
        Self::with_trying(now, request, trying, config, reliability)
    }

    fn with_trying(
        now: Instant,
        request: &Message,
        trying: Option<Trying>,
        config: TimerConfig,
        reliability: Reliability,
    ) -> Self {
        let invite = request.method() == Some(&Method::Invite);
        let mut tx = ServerTransaction {
            invite,
            config,
            reliability,
            state: if invite {
                TransactionState::Proceeding
            } else {
                TransactionState::Trying
            },
            timers: Timers::default(),
            out: Outputs::default(),
            last_response: None,
            trying: None,
            interval: config.t1,
        };
        if invite && let Some(t) = trying {
            tx.trying = Some(t);
            tx.timers.set(Timer::Trying, now + config.trying_delay);
        }
        tx
    }

    /// The current state.
    pub fn state(&self) -> TransactionState {
        self.state
    }

    /// Whether this serves an INVITE.
    pub fn is_invite(&self) -> bool {
        self.invite
    }

    /// A retransmission of the request, or an ACK for an INVITE's final response.
    pub fn handle_request(&mut self, now: Instant, request: Message) {
        use TransactionState::*;
        let is_ack = request.method() == Some(&Method::Ack);
        match (self.state, is_ack) {
            (Proceeding | Completed, false) if self.last_response.is_some() => {
                self.out.transmit.push_back(Out::LastResponse);
            }
            (Completed, true) if self.invite => {
                self.state = Confirmed;
                self.timers.cancel(Timer::G);
                self.timers.cancel(Timer::H);
                let wait = match self.reliability {
                    Reliability::Unreliable => self.config.t4,
                    Reliability::Reliable => Duration::ZERO,
                };
                self.timers.set(Timer::I, now + wait);
                if wait.is_zero() {
                    self.handle_timeout(now);
                }
            }
            // RFC 6026: ACKs for the 2xx go to the user; INVITE retransmissions are absorbed.
            (Accepted, true) => self.out.events.push_back(TransactionEvent::Ack(request)),
            _ => {}
        }
    }

    /// A response from the user. Ignored once a final response was sent
    /// (except further 2xx in Accepted, which the user's core retransmits).
    pub fn send_response(&mut self, now: Instant, response: Message) {
        let Some(status) = response.status() else {
            return;
        };
        use TransactionState::*;
        match (self.invite, self.state, status) {
            (_, Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.timers.cancel(Timer::Trying);
                self.trying = None;
                self.set_last_response(response);
            }
            (true, Proceeding, 200..=299) => {
                self.state = Accepted;
                self.timers.clear();
                self.trying = None;
                self.timers.set(Timer::L, now + self.config.t1 * 64);
                self.set_last_response(response);
            }
            (true, Accepted, 200..=299) => self
                .out
                .transmit
                .push_back(Out::Message(Box::new(response))),
            (true, Proceeding, _) => {
                self.state = Completed;
                self.timers.clear();
                self.trying = None;
                self.set_last_response(response);
                if self.reliability == Reliability::Unreliable {
                    self.interval = self.config.t1;
                    self.timers.set(Timer::G, now + self.interval);
                }
                self.timers.set(Timer::H, now + self.config.t1 * 64);
            }
            (false, Trying | Proceeding, _) => {
                self.state = Completed;
                self.timers.clear();
                self.set_last_response(response);
                let wait = match self.reliability {
                    Reliability::Unreliable => self.config.t1 * 64,
                    Reliability::Reliable => Duration::ZERO,
                };
                self.timers.set(Timer::J, now + wait);
                if wait.is_zero() {
                    self.handle_timeout(now);
                }
            }
            _ => {}
        }
    }

    /// The last response sent, kept for retransmissions.
    pub fn last_response(&self) -> Option<&Message> {
        self.last_response.as_ref()
    }

    /// Queues `response` and keeps it for retransmissions. Queued copies of
    /// the response it replaces become copies of their own.
    fn set_last_response(&mut self, response: Message) {
        if let Some(old) = &self.last_response {
            for out in &mut self.out.transmit {
                if matches!(out, Out::LastResponse) {
                    *out = Out::Message(Box::new(old.clone()));
                }
            }
        }
        self.last_response = Some(response);
        self.out.transmit.push_back(Out::LastResponse);
    }

    /// RFC 6026 §7.1: in Accepted the transaction never sends its 2xx again
    /// (the user's core does), so its copy goes once it went out, rather
    /// than staying for Timer L's 32 s.
    pub(crate) fn forget_sent_2xx(&mut self) {
        if self.state == TransactionState::Accepted && self.out.transmit.is_empty() {
            self.last_response = None;
        }
    }

    fn message_ref<'a>(&'a self, out: &'a Out) -> Option<&'a Message> {
        match out {
            Out::Message(m) => Some(&**m),
            Out::LastResponse => self.last_response.as_ref(),
            Out::Request | Out::Ack => None,
        }
    }

    /// Fires every timer due at `now`. Safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Trying if self.state == TransactionState::Proceeding => {
                    let trying = match self.trying.take() {
                        Some(Trying::Ready(t)) => Some(t),
                        Some(Trying::FromRequest(request)) => {
                            // §8.2.6.1: a Timestamp comes back in the 100.
                            let mut b = Message::response_to(&request, 100, "Trying");
                            if let Some(t) = request.header("Timestamp") {
                                b = b.and_then(|b| b.header("Timestamp", t));
                            }
                            b.and_then(|b| b.build()).ok()
                        }
                        None => None,
                    };
                    if let Some(t) = trying {
                        self.set_last_response(t);
                    }
                }
                Timer::G if self.state == TransactionState::Completed => {
                    if self.last_response.is_some() {
                        self.out.transmit.push_back(Out::LastResponse);
                    }
                    self.interval = (self.interval * 2).min(self.config.t2);
                    self.timers.set(Timer::G, now + self.interval);
                }
                Timer::H => {
                    // No ACK: the response was lost for good (§17.2.1).
                    self.out.events.push_back(TransactionEvent::TimedOut);
                    self.terminate();
                }
                Timer::I | Timer::J | Timer::L => self.terminate(),
                _ => {}
            }
        }
    }
}

/// The output side every transaction kind shares: draining and ending.
macro_rules! transaction_outputs {
    ($ty:ident, $failed:literal) => {
        impl $ty {
            #[doc = concat!("The transport failed to send ", $failed, ".")]
            pub fn handle_transport_error(&mut self, _now: Instant) {
                if self.state != TransactionState::Terminated {
                    self.out.events.push_back(TransactionEvent::TransportError);
                    self.terminate();
                }
            }

            /// The next instant `handle_timeout` has work.
            #[must_use]
            pub fn poll_timeout(&self) -> Option<Instant> {
                self.timers.next()
            }

            /// The next message to send.
            #[must_use]
            pub fn poll_transmit(&mut self) -> Option<Message> {
                self.poll_transmit_with(Message::clone)
            }

            /// The next message to send, lent to `f` rather than copied.
            pub(crate) fn poll_transmit_with<T>(
                &mut self,
                f: impl FnOnce(&Message) -> T,
            ) -> Option<T> {
                while let Some(out) = self.out.transmit.pop_front() {
                    if let Some(m) = self.message_ref(&out) {
                        return Some(f(m));
                    }
                }
                None
            }

            /// The next event for the user.
            #[must_use]
            pub fn poll_event(&mut self) -> Option<TransactionEvent> {
                self.out.events.pop_front()
            }

            fn terminate(&mut self) {
                if self.state != TransactionState::Terminated {
                    self.state = TransactionState::Terminated;
                    self.timers.clear();
                    self.out.events.push_back(TransactionEvent::Terminated);
                }
            }
        }
    };
}

transaction_outputs!(ClientTransaction, "this transaction's request (§17.1.4)");
transaction_outputs!(ServerTransaction, "a response (§17.2.4)");

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same
/// Request-URI, Call-ID, From, top Via and Route as the INVITE, the To of the
/// response, CSeq with the INVITE's number and method ACK.
pub fn build_ack(invite: &Message, response: &Message) -> Option<Message> {
    let uri = match invite.start_line() {
        crate::message::StartLine::Request { uri, .. } => uri,
        crate::message::StartLine::Response { .. } => return None,
    };
    let cseq = invite.cseq().ok()?;
    let mut b = Message::request(Method::Ack, uri);
    let top_via = invite.via().ok()?;
    b = b.header("Via", &top_via.to_string()).ok()?;
    b = b.header("Max-Forwards", "70").ok()?;
    b = b.header("From", invite.header("From")?).ok()?;
    b = b.header("To", response.header("To")?).ok()?;
    b = b.header("Call-ID", invite.header("Call-ID")?).ok()?;
    b = b.header("CSeq", &format!("{} ACK", cseq.seq)).ok()?;
    for route in invite.header_values("Route") {
        b = b.header("Route", route).ok()?;
    }
    b.build().ok()
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "each test takes one real instant as its epoch and advances it by hand"
)]
mod tests {
    use super::*;

    fn invite() -> Message {
        Message::request(Method::Invite, "sip:bob@example.com")
            .header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1")
            .unwrap()
            .header("From", "<sip:alice@example.com>;tag=a")
            .unwrap()
            .header("To", "<sip:bob@example.com>")
            .unwrap()
            .header("Call-ID", "c1")
            .unwrap()
            .header("CSeq", "1 INVITE")
            .unwrap()
            .header("Max-Forwards", "70")
            .unwrap()
            .header("Route", "<sip:proxy.example.com;lr>")
            .unwrap()
            .build()
            .unwrap()
    }

    fn options() -> Message {
        Message::request(Method::Options, "sip:bob@example.com")
            .header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKopt1")
            .unwrap()
            .header("From", "<sip:alice@example.com>;tag=a")
            .unwrap()
            .header("To", "<sip:bob@example.com>")
            .unwrap()
            .header("Call-ID", "c2")
            .unwrap()
            .header("CSeq", "1 OPTIONS")
            .unwrap()
            .header("Max-Forwards", "70")
            .unwrap()
            .build()
            .unwrap()
    }

    fn response(req: &Message, status: u16) -> Message {
        Message::response_to(req, status, "X")
            .unwrap()
            .to_tag("b")
            .build()
            .unwrap()
    }

    /// A client transaction over UDP with the default timers.
    fn udp_client(start: Instant, request: Message) -> ClientTransaction {
        ClientTransaction::new(
            start,
            request,
            TimerConfig::default(),
            Reliability::Unreliable,
        )
    }

    /// Drives the transaction to its end, recording when each message left.
    fn run_client(
        mut tx: ClientTransaction,
        start: Instant,
    ) -> (Vec<Duration>, Vec<TransactionEvent>) {
        let mut now = start;
        let mut sent = Vec::new();
        let mut events = Vec::new();
        for _ in 0..100 {
            while tx.poll_transmit().is_some() {
                sent.push(now - start);
            }
            while let Some(e) = tx.poll_event() {
                events.push(e);
            }
            let Some(deadline) = tx.poll_timeout() else {
                break;
            };
            assert!(deadline >= now, "timeouts never go backwards");
            now = deadline;
            tx.handle_timeout(now);
        }
        (sent, events)
    }

    #[test]
    fn rfc3261_17_1_1_2_timer_a_doubles_and_timer_b_times_out() {
        let start = Instant::now();
        let tx = udp_client(start, invite());
        let (sent, events) = run_client(tx, start);
        let ms: Vec<u128> = sent.iter().map(Duration::as_millis).collect();
        // A: 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; B fires at 32 s.
        assert_eq!(ms, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(
            events,
            vec![TransactionEvent::TimedOut, TransactionEvent::Terminated]
        );
    }

    /// Timer B ends Calling only: a call that rings for longer than 64*T1
    /// still gets its final response, and a 486 after a minute is ACKed.
    #[test]
    fn rfc3261_17_1_1_2_ringing_outlives_timer_b() {
        let start = Instant::now();
        let req = invite();
        let mut tx = udp_client(start, req.clone());
        let _ = tx.poll_transmit();
        tx.handle_response(start + Duration::from_millis(100), response(&req, 180));
        let _ = tx.poll_event();
        assert_eq!(tx.poll_timeout(), None, "nothing runs while it rings");
        tx.handle_timeout(start + Duration::from_secs(40));
        assert_eq!(tx.state(), TransactionState::Proceeding);
        assert_eq!(tx.poll_event(), None);
        tx.handle_response(start + Duration::from_secs(60), response(&req, 486));
        assert_eq!(tx.state(), TransactionState::Completed);
        let ack = tx.poll_transmit().expect("the 486 is acknowledged");
        assert_eq!(ack.method(), Some(&Method::Ack));
    }

    /// §9.1: 64*T1 after a CANCEL without a final response, the INVITE
    /// transaction gives up; a CANCEL before any 1xx leaves Timer B as it was.
    #[test]
    fn rfc3261_9_1_no_final_response_64_t1_after_cancel() {
        let start = Instant::now();
        let req = invite();
        let mut tx = udp_client(start, req.clone());
        let _ = tx.poll_transmit();
        tx.handle_response(start + Duration::from_millis(100), response(&req, 180));
        let _ = tx.poll_event();
        let cancelled = start + Duration::from_secs(50);
        tx.cancel_sent(cancelled);
        assert_eq!(tx.poll_timeout(), Some(cancelled + Duration::from_secs(32)));
        tx.handle_timeout(cancelled + Duration::from_secs(31));
        assert_eq!(tx.state(), TransactionState::Proceeding);
        tx.handle_timeout(cancelled + Duration::from_secs(32));
        assert_eq!(tx.poll_event(), Some(TransactionEvent::TimedOut));
        assert_eq!(tx.state(), TransactionState::Terminated);

        let mut done = udp_client(start, req.clone());
        done.handle_response(start, response(&req, 486));
        done.cancel_sent(start + Duration::from_secs(1));
        assert_eq!(done.state(), TransactionState::Completed);
        assert_eq!(
            done.poll_timeout(),
            Some(start + Duration::from_secs(32)),
            "Timer D alone"
        );
    }

    #[test]
    fn rfc3261_17_1_2_2_timer_e_caps_at_t2_and_timer_f_times_out() {
        let start = Instant::now();
        let tx = udp_client(start, options());
        let (sent, events) = run_client(tx, start);
        let ms: Vec<u128> = sent.iter().map(Duration::as_millis).collect();
        // E: 0.5, 1, 2, 4, then every T2 = 4 s until F at 32 s.
        assert_eq!(
            ms,
            vec![
                0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(
            events,
            vec![TransactionEvent::TimedOut, TransactionEvent::Terminated]
        );
    }

    #[test]
    fn rfc3261_17_1_2_2_proceeding_retransmits_every_t2() {
        let start = Instant::now();
        let req = options();
        let mut tx = udp_client(start, req.clone());
        let _ = tx.poll_transmit();
        tx.handle_response(start + Duration::from_millis(100), response(&req, 180));
        assert_eq!(tx.state(), TransactionState::Proceeding);
        let mut sent = Vec::new();
        while let Some(t) = tx.poll_timeout() {
            if t > start + Duration::from_secs(12) {
                break;
            }
            let now = t;
            tx.handle_timeout(now);
            while tx.poll_transmit().is_some() {
                sent.push((now - start).as_millis());
            }
        }
        // The first E (armed at T1) fires, then the interval is T2.
        assert_eq!(sent, vec![500, 4500, 8500]);
    }

    #[test]
    fn reliable_transport_sends_once_and_waits_64_t1() {
        let start = Instant::now();
        let tx = ClientTransaction::new(
            start,
            options(),
            TimerConfig::default(),
            Reliability::Reliable,
        );
        let (sent, events) = run_client(tx, start);
        assert_eq!(sent, vec![Duration::ZERO]);
        assert_eq!(events[0], TransactionEvent::TimedOut);
    }

    #[test]
    fn rfc3261_17_1_1_3_non_2xx_is_acked_in_the_transaction() {
        let start = Instant::now();
        let inv = invite();
        let mut tx = udp_client(start, inv.clone());
        let _ = tx.poll_transmit();
        let busy = response(&inv, 486);
        tx.handle_response(start, busy.clone());
        let ack = tx.poll_transmit().unwrap();
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.via().unwrap().branch(), Some("z9hG4bKinv1"));
        assert_eq!(ack.to().unwrap().tag(), Some("b"));
        assert_eq!(ack.cseq().unwrap().seq, 1);
        assert_eq!(ack.routes().count(), 1);
        assert_eq!(tx.state(), TransactionState::Completed);
        // A retransmitted 486 is answered with the same ACK, not passed up.
        let _ = tx.poll_event();
        tx.handle_response(start + Duration::from_secs(1), busy);
        assert!(tx.poll_transmit().is_some());
        assert_eq!(tx.poll_event(), None);
        // Timer D: 32 s.
        assert_eq!(tx.poll_timeout(), Some(start + Duration::from_secs(32)));
    }

    #[test]
    fn rfc6026_accepted_passes_every_2xx_and_ends_on_timer_m() {
        let start = Instant::now();
        let inv = invite();
        let mut tx = udp_client(start, inv.clone());
        let _ = tx.poll_transmit();
        let ok = response(&inv, 200);
        tx.handle_response(start, ok.clone());
        tx.handle_response(start + Duration::from_secs(1), ok);
        assert_eq!(tx.state(), TransactionState::Accepted);
        assert!(matches!(
            tx.poll_event(),
            Some(TransactionEvent::Response(_))
        ));
        assert!(matches!(
            tx.poll_event(),
            Some(TransactionEvent::Response(_))
        ));
        // No ACK from the transaction for a 2xx.
        assert!(tx.poll_transmit().is_none());
        assert_eq!(tx.poll_timeout(), Some(start + Duration::from_secs(32)));
    }

    /// §8.2.6.1: the 100 Trying built from the INVITE carries its Timestamp.
    #[test]
    fn rfc3261_8_2_6_1_the_trying_copies_the_timestamp() {
        let start = Instant::now();
        let mut inv = invite();
        inv.push_header("Timestamp", "54").unwrap();
        let mut tx = ServerTransaction::new_lazy_trying(
            start,
            &inv,
            TimerConfig::default(),
            Reliability::Unreliable,
        );
        tx.handle_timeout(start + Duration::from_millis(200));
        let trying = tx.poll_transmit().unwrap();
        assert_eq!(trying.status(), Some(100));
        assert_eq!(trying.header("Timestamp"), Some("54"));
    }

    #[test]
    fn rfc3261_17_2_1_trying_after_200_ms_and_timer_g_h() {
        let start = Instant::now();
        let inv = invite();
        let trying = response(&inv, 100);
        let mut tx = ServerTransaction::new(
            start,
            &inv,
            Some(trying),
            TimerConfig::default(),
            Reliability::Unreliable,
        );
        assert_eq!(tx.poll_timeout(), Some(start + Duration::from_millis(200)));
        tx.handle_timeout(start + Duration::from_millis(200));
        assert_eq!(tx.poll_transmit().unwrap().status(), Some(100));
        // A retransmitted INVITE gets the 100 again.
        tx.handle_request(start + Duration::from_millis(500), inv.clone());
        assert_eq!(tx.poll_transmit().unwrap().status(), Some(100));
        // A final 486: G retransmits at 0.5, 1, 2, 4, 4... until H at 32 s.
        let t0 = start + Duration::from_secs(1);
        tx.send_response(t0, response(&inv, 486));
        let _ = tx.poll_transmit();
        let mut sent = Vec::new();
        let mut now = t0;
        while let Some(t) = tx.poll_timeout() {
            now = t;
            tx.handle_timeout(now);
            while tx.poll_transmit().is_some() {
                sent.push((now - t0).as_millis());
            }
        }
        assert_eq!(&sent[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(now - t0, Duration::from_secs(32));
        assert_eq!(tx.poll_event(), Some(TransactionEvent::TimedOut));
    }

    #[test]
    fn rfc3261_17_2_1_ack_confirms_and_timer_i_ends() {
        let start = Instant::now();
        let inv = invite();
        let mut tx = ServerTransaction::new(
            start,
            &inv,
            None,
            TimerConfig::default(),
            Reliability::Unreliable,
        );
        tx.send_response(start, response(&inv, 603));
        let ack = build_ack(&inv, &response(&inv, 603)).unwrap();
        tx.handle_request(start + Duration::from_millis(10), ack);
        assert_eq!(tx.state(), TransactionState::Confirmed);
        assert_eq!(
            tx.poll_timeout(),
            Some(start + Duration::from_millis(10) + Duration::from_secs(5))
        );
    }

    #[test]
    fn rfc3261_17_2_2_non_invite_server_absorbs_then_timer_j() {
        let start = Instant::now();
        let req = options();
        let mut tx = ServerTransaction::new(
            start,
            &req,
            None,
            TimerConfig::default(),
            Reliability::Unreliable,
        );
        tx.send_response(start, response(&req, 200));
        assert!(tx.poll_transmit().is_some());
        tx.handle_request(start + Duration::from_secs(1), req);
        assert!(
            tx.poll_transmit().is_some(),
            "retransmitted request gets the response again"
        );
        assert_eq!(tx.poll_timeout(), Some(start + Duration::from_secs(32)));
    }
}
