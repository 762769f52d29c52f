//! Dialogs (RFC 3261 §12-15): identity, route set, remote target, CSeq
//! rules, in-dialog requests, the 2xx/ACK exchange above the transaction
//! layer, and the re-INVITE glare back-off (§14.1).

use std::time::{Duration, Instant};

use rand::RngCore;

use crate::headers::NameAddr;
use crate::message::{Message, StartLine};
use crate::name::Method;
use crate::transaction::TimerConfig;
use crate::uri::{Uri, UriHeaders};

/// A dialog's identity (§12): Call-ID and both tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog a received request belongs to: To tag is ours, From tag theirs.
    pub fn of_request(request: &Message) -> Option<DialogId> {
        Some(DialogId {
            call_id: request.call_id().ok()?.to_owned(),
            local_tag: request.to().ok()?.tag()?.to_owned(),
            remote_tag: request.from().ok()?.tag()?.to_owned(),
        })
    }

    /// The dialog a received response belongs to: From tag is ours, To tag theirs.
    pub fn of_response(response: &Message) -> Option<DialogId> {
        Some(DialogId {
            call_id: response.call_id().ok()?.to_owned(),
            local_tag: response.from().ok()?.tag()?.to_owned(),
            remote_tag: response.to().ok()?.tag()?.to_owned(),
        })
    }
}

/// Early (after a 1xx with a tag) or confirmed (after a 2xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a provisional response.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
    /// Ended by BYE or a failure.
    Terminated,
}

/// An in-dialog request that breaks the dialog's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    /// The CSeq is lower than the last one seen (§12.2.2: answer 500).
    #[error("CSeq {got} is lower than {last}")]
    CSeqOutOfOrder {
        /// The last remote CSeq.
        last: u32,
        /// The CSeq received.
        got: u32,
    },
    /// A header needed to build or check the request is missing or malformed.
    #[error("malformed message for this dialog")]
    Malformed,
}

/// A dialog as seen by one side.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Identity.
    pub id: DialogId,
    /// Early, confirmed or terminated.
    pub state: DialogState,
    /// Our next CSeq is one above this.
    pub local_seq: u32,
    /// The last CSeq the peer used, once it sent an in-dialog request.
    pub remote_seq: Option<u32>,
    /// Our URI with our tag, as the From of our requests (name-addr text).
    pub local: String,
    /// The peer's URI with its tag, as the To of our requests (name-addr text).
    pub remote: String,
    /// Where in-dialog requests go: the peer's Contact URI.
    pub remote_target: String,
    /// Route set, in the order requests carry it (§12.1).
    pub route_set: Vec<String>,
    /// Our Contact, for target-refresh requests.
    pub local_contact: String,
    /// Whether the dialog was created with a SIPS Request-URI over TLS.
    pub secure: bool,
}

impl Dialog {
    /// The caller's dialog from its request and a 1xx (with To tag) or 2xx (§12.1.2).
    pub fn as_uac(request: &Message, response: &Message, local_contact: &str) -> Option<Dialog> {
        let id = DialogId::of_response(response)?;
        let status = response.status()?;
        let remote_target = contact_uri(response)?;
        let route_set = uac_route_set(response)?;
        Some(Dialog {
            id,
            state: if (200..300).contains(&status) {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local_seq: request.cseq().ok()?.seq,
            remote_seq: None,
            local: request.header("From")?.to_owned(),
            remote: response.header("To")?.to_owned(),
            remote_target,
            route_set,
            local_contact: local_contact.to_owned(),
            secure: request.request_uri().is_some_and(|u| u.scheme() == "sips"),
        })
    }

    /// The callee's dialog from the request and the tag it puts in its
    /// response (§12.1.1).
    pub fn as_uas(request: &Message, local_tag: &str, local_contact: &str) -> Option<Dialog> {
        let remote_target = contact_uri(request)?;
        let route_set: Vec<String> = request
            .record_routes()
            .map(|r| r.map(|r| r.to_string()))
            .collect::<Result<_, _>>()
            .ok()?;
        let to = request.header("To")?;
        Some(Dialog {
            id: DialogId {
                call_id: request.call_id().ok()?.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: request.from().ok()?.tag()?.to_owned(),
            },
            state: DialogState::Early,
            local_seq: 0,
            remote_seq: Some(request.cseq().ok()?.seq),
            local: if request.to().ok()?.tag().is_some() {
                to.to_owned()
            } else {
                format!("{to};tag={local_tag}")
            },
            remote: request.header("From")?.to_owned(),
            remote_target,
            route_set,
            local_contact: local_contact.to_owned(),
            secure: request.request_uri().is_some_and(|u| u.scheme() == "sips"),
        })
    }

    /// Applies a response to a request of this dialog: a 2xx to the INVITE
    /// confirms an early dialog and sets its route set anew from the 2xx
    /// (§13.2.2.4), a non-2xx final response to it ends an early dialog
    /// (§12.3), a 481 or 408 to any request ends the dialog (§12.2.1.2),
    /// and a target-refresh 2xx updates the remote target.
    pub fn handle_response(&mut self, response: &Message) {
        let Some(status) = response.status() else {
            return;
        };
        let Ok(method) = response.cseq().map(|c| c.method()) else {
            return;
        };
        let to_invite = method == Method::Invite;
        match status {
            200..=299 => {
                if to_invite && self.state == DialogState::Early {
                    self.state = DialogState::Confirmed;
                    if let Some(routes) = uac_route_set(response) {
                        self.route_set = routes;
                    }
                }
                if matches!(method, Method::Invite | Method::Update)
                    && let Some(target) = contact_uri(response)
                {
                    self.remote_target = target;
                }
            }
            408 | 481 => self.state = DialogState::Terminated,
            300..=699 if to_invite && self.state == DialogState::Early => {
                self.state = DialogState::Terminated;
            }
            _ => {}
        }
    }

    /// Checks an in-dialog request (§12.2.2) and applies a target refresh.
    pub fn handle_request(&mut self, request: &Message) -> Result<(), DialogError> {
        let cseq = request.cseq().map_err(|_| DialogError::Malformed)?;
        let method = cseq.method();
        if method != Method::Ack && method != Method::Cancel {
            if let Some(last) = self.remote_seq
                && cseq.seq < last
            {
                return Err(DialogError::CSeqOutOfOrder {
                    last,
                    got: cseq.seq,
                });
            }
            self.remote_seq = Some(cseq.seq);
        }
        if matches!(method, Method::Invite | Method::Update)
            && let Some(target) = contact_uri(request)
        {
            self.remote_target = target;
        }
        if method == Method::Bye {
            self.state = DialogState::Terminated;
        }
        Ok(())
    }

    /// Builds an in-dialog request (§12.2.1.1) with the next CSeq. `via` is
    /// the full Via value with a fresh branch.
    pub fn request(&mut self, method: Method, via: &str) -> Option<Message> {
        self.local_seq += 1;
        let seq = self.local_seq;
        self.build(method, via, seq)
    }

    /// The ACK for a 2xx to the INVITE with CSeq `invite_seq` (§13.2.2.4): a
    /// new transaction-less request with the INVITE's CSeq number.
    pub fn ack(&self, invite_seq: u32, via: &str) -> Option<Message> {
        self.build(Method::Ack, via, invite_seq)
    }

    fn build(&self, method: Method, via: &str, seq: u32) -> Option<Message> {
        // Loose routing: the Request-URI is the remote target and the routes
        // go as they are; a strict first route takes the Request-URI's place
        // (§12.2.1.1), without its display name and URI headers.
        let strict = match self.route_set.first() {
            None => None,
            Some(first) => strict_route_uri(first)?,
        };
        let (uri, routes): (String, Vec<String>) = match strict {
            None => (self.remote_target.clone(), self.route_set.clone()),
            Some(strict) => {
                let mut rest: Vec<String> = self.route_set[1..].to_vec();
                rest.push(format!("<{}>", self.remote_target));
                (strict, rest)
            }
        };
        let mut b = Message::request(method.clone(), &uri)
            .header("Via", via)
            .ok()?
            .header("Max-Forwards", "70")
            .ok()?
            .header("From", &self.local)
            .ok()?
            .header("To", &self.remote)
            .ok()?
            .header("Call-ID", &self.id.call_id)
            .ok()?
            .header("CSeq", &format!("{seq} {method}"))
            .ok()?;
        for r in &routes {
            b = b.header("Route", r).ok()?;
        }
        // Requests that may refresh the remote target carry ours, and so
        // must a NOTIFY (Contact is mandatory in it in RFC 3265's header
        // table, which RFC 6665 keeps): a transferor's stack may refuse a
        // transfer's progress reports without one.
        if matches!(
            method,
            Method::Invite | Method::Update | Method::Subscribe | Method::Refer | Method::Notify
        ) {
            b = b
                .header("Contact", &format!("<{}>", self.local_contact))
                .ok()?;
        }
        b.build().ok()
    }
}

/// The route set a UAC takes from a response: its Record-Route, reversed
/// (§12.1.2). `None` when a Record-Route is malformed.
fn uac_route_set(response: &Message) -> Option<Vec<String>> {
    let mut route_set: Vec<String> = response
        .record_routes()
        .map(|r| r.map(|r| r.to_string()))
        .collect::<Result<_, _>>()
        .ok()?;
    route_set.reverse();
    Some(route_set)
}

/// For a route (a name-addr): `Some(None)` for a loose router (`lr`, in
/// any case, among the URI's parameters), `Some(Some(uri))` for a strict
/// one with the URI to use as the Request-URI, `None` when malformed.
fn strict_route_uri(route: &str) -> Option<Option<String>> {
    let addr = NameAddr::parse(route).ok()?;
    match &addr.uri {
        Uri::Sip(sip) if sip.is_loose_router() => Some(None),
        Uri::Sip(sip) => {
            let mut uri = sip.clone();
            uri.headers = UriHeaders::default();
            Some(Some(Uri::Sip(uri).to_string()))
        }
        other => Some(Some(other.to_string())),
    }
}

fn contact_uri(m: &Message) -> Option<String> {
    let c = m.contact().ok()??;
    Some(c.address()?.uri.to_string())
}

/// The callee's side of the 2xx/ACK exchange (§13.3.1.4): the 2xx is resent
/// from T1 doubling to T2 until the ACK arrives, and given up after 64*T1
/// (then the call should be ended with BYE).
#[derive(Debug, Clone)]
pub struct UasInviteResponder {
    response: Message,
    config: TimerConfig,
    interval: Duration,
    next: Option<Instant>,
    give_up: Instant,
    acked: bool,
    pending: bool,
}

impl UasInviteResponder {
    /// Starts after the 2xx was handed to the transaction (sent once).
    pub fn new(now: Instant, response: Message, config: TimerConfig) -> Self {
        UasInviteResponder {
            response,
            config,
            interval: config.t1,
            next: Some(now + config.t1),
            give_up: now + config.t1 * 64,
            acked: false,
            pending: false,
        }
    }

    /// Whether `ack` acknowledges this 2xx: its CSeq number is the
    /// INVITE's (§13.2.2.4). A retransmitted ACK of an earlier 2xx in the
    /// dialog has an older one and must not end these retransmissions.
    pub fn acknowledges(&self, ack: &Message) -> bool {
        matches!(
            (ack.cseq(), self.response.cseq()),
            (Ok(a), Ok(ours)) if a.seq == ours.seq
        )
    }

    /// The ACK arrived: stop.
    pub fn handle_ack(&mut self) {
        self.acked = true;
        self.next = None;
    }

    /// Whether the ACK arrived.
    pub fn is_acked(&self) -> bool {
        self.acked
    }

    /// Whether the exchange failed: no ACK within 64*T1.
    pub fn has_failed(&self, now: Instant) -> bool {
        !self.acked && now >= self.give_up
    }

    /// Fires the retransmit timer if due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(at) = self.next {
            if at > now || self.acked {
                break;
            }
            if at >= self.give_up {
                self.next = None;
                break;
            }
            self.pending = true;
            self.interval = (self.interval * 2).min(self.config.t2);
            self.next = Some(at + self.interval);
        }
    }

    /// The 2xx to resend, once per fired timer.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Message> {
        if std::mem::take(&mut self.pending) {
            Some(self.response.clone())
        } else {
            None
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next (including
    /// the give-up instant while unacknowledged).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.acked {
            return None;
        }
        Some(self.next.map_or(self.give_up, |n| n.min(self.give_up)))
    }
}

/// How long to wait before retrying a re-INVITE that got 491 (§14.1): 2.1 to
/// 4 s when we own the Call-ID (we sent the initial INVITE), 0 to 2 s when not,
/// in 10 ms units.
pub fn glare_backoff(owns_call_id: bool, rng: &mut impl RngCore) -> Duration {
    let units = if owns_call_id {
        210 + rng.next_u32() % 191
    } else {
        rng.next_u32() % 201
    };
    Duration::from_millis(u64::from(units) * 10)
}

/// Whether this is a request line for a method that creates a dialog.
pub fn creates_dialog(request: &Message) -> bool {
    matches!(
        request.start_line(),
        StartLine::Request {
            method: Method::Invite | Method::Subscribe | Method::Refer,
            ..
        }
    ) && request.to().is_ok_and(|t| t.tag().is_none())
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "each test takes one real instant as its epoch and advances it by hand"
)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn invite() -> Message {
        Message::request(Method::Invite, "sip:bob@example.com")
            .header("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1")
            .unwrap()
            .header("From", "\"Alice\" <sip:alice@example.com>;tag=a1")
            .unwrap()
            .header("To", "<sip:bob@example.com>")
            .unwrap()
            .header("Call-ID", "call-1")
            .unwrap()
            .header("CSeq", "7 INVITE")
            .unwrap()
            .header("Max-Forwards", "70")
            .unwrap()
            .header("Contact", "<sip:alice@192.0.2.1:5060>")
            .unwrap()
            .header(
                "Record-Route",
                "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            )
            .unwrap()
            .build()
            .unwrap()
    }

    fn ok(invite: &Message) -> Message {
        Message::response_to(invite, 200, "OK")
            .unwrap()
            .header("Contact", "<sip:bob@192.0.2.2:5062>")
            .unwrap()
            .header(
                "Record-Route",
                "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            )
            .unwrap()
            .to_tag("b1")
            .build()
            .unwrap()
    }

    #[test]
    fn rfc3261_12_1_2_uac_route_set_is_reversed_record_route() {
        let inv = invite();
        let mut d = Dialog::as_uac(&inv, &ok(&inv), "sip:alice@192.0.2.1:5060").unwrap();
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.id.remote_tag, "b1");
        assert_eq!(
            d.route_set,
            vec!["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
        );
        let bye = d
            .request(Method::Bye, "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2")
            .unwrap();
        assert_eq!(
            bye.request_uri().unwrap().to_string(),
            "sip:bob@192.0.2.2:5062"
        );
        assert_eq!(bye.cseq().unwrap().seq, 8);
        assert_eq!(
            bye.routes().next().unwrap().unwrap().to_string(),
            "<sip:p2.example.com;lr>"
        );
        assert_eq!(bye.to().unwrap().tag(), Some("b1"));
        assert_eq!(bye.from().unwrap().tag(), Some("a1"));
        let ack = d.ack(7, "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK3").unwrap();
        assert_eq!(ack.cseq().unwrap().seq, 7);
        assert_eq!(ack.method(), Some(&Method::Ack));
        // A BYE names no Contact; a NOTIFY (a transfer's progress) must.
        assert_eq!(bye.header("Contact"), None);
        let notify = d
            .request(Method::Notify, "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK4")
            .unwrap();
        assert!(notify.header("Contact").is_some());
    }

    #[test]
    fn rfc3261_12_1_1_uas_route_set_in_order_and_cseq_rules() {
        let inv = invite();
        let mut d = Dialog::as_uas(&inv, "b1", "sip:bob@192.0.2.2:5062").unwrap();
        assert_eq!(
            d.route_set,
            vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        assert_eq!(d.remote_target, "sip:alice@192.0.2.1:5060");
        assert_eq!(d.local, "<sip:bob@example.com>;tag=b1");
        // A request with a lower CSeq is refused (§12.2.2).
        let mut old = Dialog::as_uac(&inv, &ok(&inv), "x").unwrap();
        old.local_seq = 2;
        let stale = old
            .request(Method::Info, "SIP/2.0/UDP h;branch=z9hG4bK9")
            .unwrap();
        assert!(matches!(
            d.handle_request(&stale),
            Err(DialogError::CSeqOutOfOrder { last: 7, got: 3 })
        ));
    }

    fn provisional(invite: &Message, record_route: &str) -> Message {
        Message::response_to(invite, 180, "Ringing")
            .unwrap()
            .header("Contact", "<sip:bob@192.0.2.2:5062>")
            .unwrap()
            .header("Record-Route", record_route)
            .unwrap()
            .to_tag("b1")
            .build()
            .unwrap()
    }

    /// §13.2.2.4: the 2xx that confirms an early dialog sets the route set
    /// anew; a 2xx to another request in the early dialog confirms nothing.
    #[test]
    fn rfc3261_13_2_2_4_confirming_2xx_recomputes_the_route_set() {
        let inv = invite();
        let mut d =
            Dialog::as_uac(&inv, &provisional(&inv, "<sip:p1;lr>"), "sip:a@192.0.2.1").unwrap();
        assert_eq!(d.state, DialogState::Early);
        assert_eq!(d.route_set, vec!["<sip:p1;lr>"]);
        let prack = d
            .request(Method::Prack, "SIP/2.0/UDP h;branch=z9hG4bK5")
            .unwrap();
        let prack_ok = Message::response_to(&prack, 200, "OK")
            .unwrap()
            .build()
            .unwrap();
        d.handle_response(&prack_ok);
        assert_eq!(d.state, DialogState::Early, "a 200 to PRACK");
        let ok = Message::response_to(&inv, 200, "OK")
            .unwrap()
            .header("Contact", "<sip:bob@192.0.2.2:5062>")
            .unwrap()
            .header("Record-Route", "<sip:p2;lr>, <sip:p1;lr>")
            .unwrap()
            .to_tag("b1")
            .build()
            .unwrap();
        d.handle_response(&ok);
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.route_set, vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
    }

    /// §12.3: a non-2xx final response to the INVITE ends its early
    /// dialogs; §12.2.1.2: a 481 ends a confirmed one.
    #[test]
    fn rfc3261_12_3_failure_ends_the_early_dialog() {
        let inv = invite();
        let mut d =
            Dialog::as_uac(&inv, &provisional(&inv, "<sip:p1;lr>"), "sip:a@192.0.2.1").unwrap();
        let busy = Message::response_to(&inv, 486, "Busy Here")
            .unwrap()
            .to_tag("b1")
            .build()
            .unwrap();
        d.handle_response(&busy);
        assert_eq!(d.state, DialogState::Terminated);

        let mut confirmed = Dialog::as_uac(&inv, &ok(&inv), "sip:a@192.0.2.1").unwrap();
        let info = confirmed
            .request(Method::Info, "SIP/2.0/UDP h;branch=z9hG4bK6")
            .unwrap();
        let gone = Message::response_to(&info, 481, "Call/Transaction Does Not Exist")
            .unwrap()
            .build()
            .unwrap();
        confirmed.handle_response(&gone);
        assert_eq!(confirmed.state, DialogState::Terminated);
    }

    /// `lr` in any case marks a loose router; a strict one gives the
    /// Request-URI without its display name (§12.2.1.1).
    #[test]
    fn rfc3261_12_2_1_1_loose_and_strict_routes() {
        let inv = invite();
        let mut d = Dialog::as_uac(&inv, &ok(&inv), "sip:a@192.0.2.1").unwrap();
        d.route_set = vec!["<sip:p1.example.com;LR>".to_owned()];
        let bye = d
            .request(Method::Bye, "SIP/2.0/UDP h;branch=z9hG4bK7")
            .unwrap();
        assert_eq!(
            bye.request_uri().unwrap().to_string(),
            "sip:bob@192.0.2.2:5062"
        );
        assert_eq!(bye.routes().count(), 1);

        d.route_set = vec![
            "\"Edge\" <sip:p1.example.com;transport=tcp>".to_owned(),
            "<sip:p2.example.com;lr>".to_owned(),
        ];
        let bye = d
            .request(Method::Bye, "SIP/2.0/UDP h;branch=z9hG4bK8")
            .unwrap();
        assert_eq!(
            bye.request_uri().unwrap().to_string(),
            "sip:p1.example.com;transport=tcp"
        );
        let routes: Vec<String> = bye.routes().map(|r| r.unwrap().to_string()).collect();
        assert_eq!(
            routes,
            vec!["<sip:p2.example.com;lr>", "<sip:bob@192.0.2.2:5062>"]
        );
    }

    #[test]
    fn rfc3261_12_2_1_2_target_refresh_updates_remote_target() {
        let inv = invite();
        let mut d = Dialog::as_uac(&inv, &ok(&inv), "sip:alice@192.0.2.1").unwrap();
        let reinvite = d
            .request(Method::Invite, "SIP/2.0/UDP h;branch=z9hG4bK4")
            .unwrap();
        let moved = Message::response_to(&reinvite, 200, "OK")
            .unwrap()
            .header("Contact", "<sip:bob@198.51.100.9:5070>")
            .unwrap()
            .build()
            .unwrap();
        d.handle_response(&moved);
        assert_eq!(d.remote_target, "sip:bob@198.51.100.9:5070");
    }

    #[test]
    fn rfc3261_13_3_1_4_uas_resends_2xx_until_ack() {
        let start = Instant::now();
        let inv = invite();
        let mut r = UasInviteResponder::new(start, ok(&inv), TimerConfig::default());
        let mut sent = Vec::new();
        while let Some(t) = r.poll_timeout() {
            if r.has_failed(t) {
                break;
            }
            r.handle_timeout(t);
            while r.poll_transmit().is_some() {
                sent.push((t - start).as_millis());
            }
            if t - start >= Duration::from_millis(7500) {
                r.handle_ack();
            }
        }
        assert_eq!(sent, vec![500, 1500, 3500, 7500]);
        assert!(r.is_acked());
    }

    #[test]
    fn rfc3261_14_1_glare_backoff_ranges() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let owner = glare_backoff(true, &mut rng);
            assert!(owner >= Duration::from_millis(2100) && owner <= Duration::from_secs(4));
            let other = glare_backoff(false, &mut rng);
            assert!(other <= Duration::from_secs(2));
        }
    }
}
