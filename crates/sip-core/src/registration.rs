//! Client registration (RFC 3261 §10) as a sans-IO state machine: REGISTER
//! with an expiry, refresh before it runs out, 423 Min-Expires, digest
//! challenges, un-registration, retries with back-off, and the Path and
//! Service-Route of RFC 3327 and RFC 3608.
//!
//! The registration builds complete requests (its own Via branch, Call-ID,
//! tag and CSeq); the caller sends each through an
//! [`Endpoint`](crate::endpoint::Endpoint) and feeds back the final
//! response or the timeout.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::{CryptoRng, RngCore};

use crate::auth::{Credentials, DigestClient};
use crate::headers::{Contact, NameAddr};
use crate::message::Message;
use crate::name::Method;
use crate::uri::Uri;

/// What to register and how.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// The registrar's URI (Request-URI), e.g. `sip:pbx.example.com`.
    pub registrar: String,
    /// The address of record, e.g. `sip:alice@example.com`.
    pub aor: String,
    /// Our contact URI, e.g. `sip:alice@192.0.2.4:5060;transport=tcp`.
    pub contact: String,
    /// Extra Contact header parameters (e.g. `;+sip.instance="<urn:uuid:…>";reg-id=1`).
    pub contact_params: String,
    /// The Via sent-by and transport of our requests, e.g. `SIP/2.0/TCP 192.0.2.4:5060`.
    pub via_prefix: String,
    /// Requested expiry in seconds.
    pub expires: u32,
    /// Outbound proxies for the Route header (name-addr text), in order.
    pub route: Vec<String>,
    /// First retry after a failure.
    pub retry_base: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
}

impl RegistrationConfig {
    /// A configuration with the usual defaults: 3600 s, retries from 30 s up to 30 min.
    pub fn new(registrar: &str, aor: &str, contact: &str, via_prefix: &str) -> Self {
        RegistrationConfig {
            registrar: registrar.to_owned(),
            aor: aor.to_owned(),
            contact: contact.to_owned(),
            contact_params: String::new(),
            via_prefix: via_prefix.to_owned(),
            expires: 3600,
            route: Vec::new(),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(1800),
        }
    }
}

/// Where the registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not registered and not trying.
    Idle,
    /// A REGISTER is on its way.
    Registering,
    /// Registered until the instant given.
    Registered {
        /// When the binding runs out.
        until: Instant,
    },
    /// Removing the binding.
    Unregistering,
    /// The last attempt failed; the next is scheduled.
    WaitingToRetry {
        /// When the next attempt goes out.
        at: Instant,
    },
}

/// What the registration reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationEvent {
    /// The registrar accepted the binding for this many seconds.
    Registered {
        /// Granted expiry.
        expires: u32,
    },
    /// The binding was removed.
    Unregistered,
    /// An attempt failed; a retry is scheduled unless the failure is final.
    Failed {
        /// The status code (408 for a timeout).
        status: u16,
        /// The reason phrase or what went wrong.
        reason: String,
        /// Whether a retry is scheduled.
        will_retry: bool,
        /// The Retry-After the registrar sent (RFC 3261 §20.33); the retry
        /// waits at least this long, up to `retry_max`.
        retry_after: Option<Duration>,
    },
}

/// A client registration. See the module docs.
#[derive(Debug)]
pub struct Registration {
    config: RegistrationConfig,
    auth: Option<DigestClient>,
    state: RegistrationState,
    call_id: String,
    tag: String,
    cseq: u32,
    expires: u32,
    failures: u32,
    refresh_at: Option<Instant>,
    outgoing: VecDeque<Message>,
    events: VecDeque<RegistrationEvent>,
    /// The request in flight, for challenges.
    in_flight: Option<Message>,
    service_route: Vec<String>,
    path: Vec<String>,
    auth_retries: u32,
    unregister_after: bool,
    /// The retry that is waiting is a removal (Expires: 0), not a REGISTER.
    retry_removal: bool,
    /// Credentials answering the last challenge, for the next REGISTER:
    /// the first use of a nonce carries nc=00000001 (RFC 7616 §3.4).
    answer: Vec<Credentials>,
}

/// How often a removal that failed is tried again before the binding is
/// left to expire on its own.
const REMOVAL_RETRIES: u32 = 2;

impl Registration {
    /// A registration with its identifiers drawn from `rng` and optional credentials.
    pub fn new(
        config: RegistrationConfig,
        auth: Option<DigestClient>,
        rng: &mut impl RngCore,
    ) -> Self {
        let expires = config.expires;
        Registration {
            config,
            auth,
            state: RegistrationState::Idle,
            call_id: token(rng, 20),
            tag: token(rng, 10),
            cseq: 0,
            expires,
            failures: 0,
            refresh_at: None,
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            in_flight: None,
            service_route: Vec::new(),
            path: Vec::new(),
            auth_retries: 0,
            unregister_after: false,
            retry_removal: false,
            answer: Vec::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.state
    }

    /// The Service-Route the registrar returned (RFC 3608): the route for
    /// requests sent with this registration.
    pub fn service_route(&self) -> &[String] {
        &self.service_route
    }

    /// The Path the registrar returned (RFC 3327).
    pub fn path(&self) -> &[String] {
        &self.path
    }

    /// The Contact URI this registration binds.
    pub fn contact(&self) -> &str {
        &self.config.contact
    }

    /// The Call-ID all REGISTERs of this registration share.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Sends the next REGISTER with this Contact URI, Via prefix and Route
    /// (see [`RegistrationConfig`]): for a registrar reached another way,
    /// such as the next server of its domain after this one failed (RFC
    /// 3263 §4.3). The Call-ID, CSeq and back-off carry on.
    pub fn relocate(&mut self, contact: &str, via_prefix: &str, route: &[String]) {
        contact.clone_into(&mut self.config.contact);
        via_prefix.clone_into(&mut self.config.via_prefix);
        route.clone_into(&mut self.config.route);
    }

    /// Registers again at once with this Contact URI and Via prefix: with
    /// the next server of the registrar's domain after this one failed
    /// (RFC 3263 §4.3). The failure does not count towards the back-off,
    /// so it grows once per round of the domain's servers, not per server.
    pub fn fail_over(
        &mut self,
        contact: &str,
        via_prefix: &str,
        route: &[String],
        rng: &mut impl CryptoRng,
    ) {
        self.relocate(contact, via_prefix, route);
        self.failures = self.failures.saturating_sub(1);
        self.register(rng);
    }

    /// Refreshes a registered binding at once, with the Contact and Via as
    /// they are now (see [`relocate`](Self::relocate)): after the
    /// connection it named was lost and another opened. Nothing in any
    /// other state: a retry waiting (its back-off and any Retry-After
    /// stand) or a REGISTER out goes on with the new Contact next time.
    pub fn refresh_now(&mut self, rng: &mut impl CryptoRng) {
        if self.in_flight.is_some() || !matches!(self.state, RegistrationState::Registered { .. }) {
            return;
        }
        self.refresh_at = None;
        self.send(self.expires, rng);
    }

    /// Starts registering now.
    pub fn register(&mut self, rng: &mut impl CryptoRng) {
        self.unregister_after = false;
        self.retry_removal = false;
        self.send(self.expires, rng);
        self.state = RegistrationState::Registering;
    }

    /// Removes the binding (Expires: 0). While a REGISTER is in flight (a
    /// first one or a refresh), the removal follows its answer: one
    /// REGISTER at a time (RFC 3261 §10.2), so a late copy of the refresh
    /// cannot bring the binding back after the removal.
    pub fn unregister(&mut self, rng: &mut impl CryptoRng) {
        self.refresh_at = None;
        self.failures = 0;
        if self.in_flight.is_some() && self.state != RegistrationState::Unregistering {
            self.unregister_after = true;
            return;
        }
        self.send(0, rng);
        self.state = RegistrationState::Unregistering;
    }

    /// The final response to the last REGISTER.
    pub fn handle_response(&mut self, now: Instant, response: &Message, rng: &mut impl CryptoRng) {
        let Some(status) = response.status() else {
            return;
        };
        if status < 200 {
            return;
        }
        let Some(request) = self.in_flight.take() else {
            return;
        };
        if response.cseq().map(|c| c.seq).ok() != request.cseq().map(|c| c.seq).ok() {
            self.in_flight = Some(request);
            return;
        }
        let unregistering = self.state == RegistrationState::Unregistering;
        match status {
            200..=299 if unregistering => {
                self.state = RegistrationState::Idle;
                self.events.push_back(RegistrationEvent::Unregistered);
            }
            200..=299 => {
                let ours = self.our_grant(response);
                if ours == Some(0) && !self.unregister_after {
                    // No time granted: refreshing at once would loop; back off.
                    self.fail(
                        now,
                        status,
                        "the registrar granted no time",
                        true,
                        None,
                        rng,
                    );
                    return;
                }
                self.failures = 0;
                self.auth_retries = 0;
                // When none of the listed bindings is recognisably ours,
                // the shortest that is not 0, so the refresh is never late
                // and another device's binding on its way out cannot make
                // ours fail.
                let granted = ours
                    .or_else(|| {
                        response
                            .contacts()
                            .filter_map(Result::ok)
                            .filter_map(|c| c.address().and_then(NameAddr::expires))
                            .filter(|&e| e > 0)
                            .min()
                    })
                    .unwrap_or(self.expires);
                self.service_route = response
                    .service_routes()
                    .filter_map(|r| r.ok().map(|r| r.to_string()))
                    .collect();
                self.path = response
                    .paths()
                    .filter_map(|r| r.ok().map(|r| r.to_string()))
                    .collect();
                let until = now + Duration::from_secs(u64::from(granted));
                self.state = RegistrationState::Registered { until };
                // Refresh half-way for short bindings, else a margin before expiry.
                let lead = if granted <= 64 {
                    Duration::from_secs(u64::from(granted) / 2)
                } else {
                    Duration::from_secs(u64::from(granted).min(600) / 4 + 16)
                        .min(Duration::from_secs(u64::from(granted) / 2))
                };
                self.refresh_at = Some(until - lead);
                self.events
                    .push_back(RegistrationEvent::Registered { expires: granted });
                if self.unregister_after {
                    self.unregister_after = false;
                    self.unregister(rng);
                }
            }
            401 | 407 => {
                let answered = match self.auth.as_mut() {
                    // The challenge is cached by realm; the next REGISTER
                    // carries these credentials, later ones get theirs
                    // through `authorize_request`. Method, Request-URI and
                    // (empty) body stay the same, so they fit it.
                    Some(client) if self.auth_retries < 3 => {
                        // A REGISTER that answered no challenge went with
                        // cached credentials (a refresh): a server that
                        // forgot their nonce refuses them without
                        // stale=true, so it is answered afresh once; a
                        // refusal of an answer is a wrong password.
                        let answered = if self.auth_retries == 0 {
                            client.handle_challenge_afresh(response, &request, rng)
                        } else {
                            client.handle_challenge(response, &request, rng)
                        };
                        match answered {
                            Ok(answer) => {
                                self.answer = answer;
                                true
                            }
                            Err(_) => false,
                        }
                    }
                    _ => false,
                };
                if answered {
                    self.auth_retries += 1;
                    let expires = if unregistering { 0 } else { self.expires };
                    self.send(expires, rng);
                } else {
                    self.fail(
                        now,
                        status,
                        response.reason().unwrap_or(""),
                        false,
                        None,
                        rng,
                    );
                }
            }
            423 => {
                // Interval Too Brief: ask again with at least Min-Expires (§10.2.8).
                match response.min_expires() {
                    Ok(Some(min)) if min > self.expires => {
                        self.expires = min;
                        self.send(self.expires, rng);
                    }
                    _ => self.fail(
                        now,
                        status,
                        "423 without a usable Min-Expires",
                        true,
                        None,
                        rng,
                    ),
                }
            }
            _ => {
                let retry = !matches!(status, 403 | 404 | 603);
                // A Retry-After that does not parse is as good as none.
                let retry_after = response
                    .retry_after()
                    .ok()
                    .flatten()
                    .map(|r| Duration::from_secs(u64::from(r.seconds)));
                self.fail(
                    now,
                    status,
                    response.reason().unwrap_or(""),
                    retry,
                    retry_after,
                    rng,
                );
            }
        }
    }

    /// The REGISTER got no final response (Timer F) or could not be sent.
    pub fn handle_failure(&mut self, now: Instant, rng: &mut impl CryptoRng) {
        if self.in_flight.take().is_some() {
            self.fail(now, 408, "no response from the registrar", true, None, rng);
        }
    }

    /// Runs refreshes and retries that are due.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl CryptoRng) {
        if self.refresh_at.is_some_and(|t| t <= now) && self.in_flight.is_none() {
            self.refresh_at = None;
            self.send(self.expires, rng);
            if !matches!(self.state, RegistrationState::Registered { .. }) {
                self.state = RegistrationState::Registering;
            }
        }
        if let RegistrationState::WaitingToRetry { at } = self.state
            && at <= now
        {
            if self.retry_removal {
                self.send(0, rng);
                self.state = RegistrationState::Unregistering;
            } else {
                self.send(self.expires, rng);
                self.state = RegistrationState::Registering;
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            RegistrationState::WaitingToRetry { at } => Some(at),
            _ => self.refresh_at,
        }
    }

    /// The next REGISTER to send through the endpoint.
    #[must_use]
    pub fn poll_request(&mut self) -> Option<Message> {
        let m = self.outgoing.pop_front()?;
        self.in_flight = Some(m.clone());
        Some(m)
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<RegistrationEvent> {
        self.events.pop_front()
    }

    fn fail(
        &mut self,
        now: Instant,
        status: u16,
        reason: &str,
        retry: bool,
        retry_after: Option<Duration>,
        rng: &mut impl CryptoRng,
    ) {
        if std::mem::take(&mut self.unregister_after) {
            // Asked to be removed while this REGISTER was out: the removal
            // goes now rather than a retry of it.
            self.failures = 0;
            self.auth_retries = 0;
            self.send(0, rng);
            self.state = RegistrationState::Unregistering;
            return;
        }
        self.failures += 1;
        self.auth_retries = 0;
        // A removal that fails is tried again as a removal, a few times:
        // the user asked to be unreachable, so it never turns back into a
        // REGISTER (§10.2.2).
        let removing = self.state == RegistrationState::Unregistering;
        let retry = retry && (!removing || self.failures <= REMOVAL_RETRIES);
        self.retry_removal = removing && retry;
        let will_retry = retry;
        if retry {
            // Exponential back-off with up to half of it random (RFC 5626 §4.5 in spirit).
            let exp = self.failures.min(16) - 1;
            let wait = self
                .config
                .retry_base
                .saturating_mul(1 << exp)
                .min(self.config.retry_max);
            let jitter = wait.mul_f64(0.5 * f64::from(rng.next_u32()) / f64::from(u32::MAX));
            // An overloaded registrar's Retry-After is a floor, bounded so
            // that a bad value cannot keep the phone away for days.
            let asked = retry_after.map_or(Duration::ZERO, |r| r.min(self.config.retry_max));
            let wait = (wait - jitter).max(asked);
            self.state = RegistrationState::WaitingToRetry { at: now + wait };
        } else {
            self.state = RegistrationState::Idle;
        }
        self.refresh_at = None;
        self.events.push_back(RegistrationEvent::Failed {
            status,
            reason: reason.to_owned(),
            will_retry,
            retry_after,
        });
    }

    /// The expiry the registrar gave our binding (§10.2.4): its Contact's `expires`,
    /// found by instance (`+sip.instance` and `reg-id`, RFC 5626 §6, which
    /// survive a registrar rewriting the URI for NAT) or else by URI (by
    /// equivalence, §19.1.4, so a registrar that reorders parameters or
    /// writes an address differently still matches); else the Expires
    /// header.
    fn our_grant(&self, response: &Message) -> Option<u32> {
        let ours = Uri::parse(&self.config.contact).ok();
        let header = format!("<{}>{}", self.config.contact, self.config.contact_params);
        let our_instance = NameAddr::parse(&header)
            .ok()
            .and_then(|a| a.sip_instance().map(|i| (i.to_owned(), a.reg_id())));
        let same = |theirs: &Uri<'_>| match (&ours, theirs) {
            (Some(Uri::Sip(a)), Uri::Sip(b)) => a.equivalent(b),
            (Some(a), b) => a.to_string().eq_ignore_ascii_case(&b.to_string()),
            (None, _) => false,
        };
        let contacts: Vec<_> = response.contacts().filter_map(Result::ok).collect();
        let listed: Vec<&NameAddr<'_>> = contacts.iter().filter_map(Contact::address).collect();
        let by_instance = our_instance.as_ref().and_then(|(instance, reg_id)| {
            listed.iter().find_map(|a| {
                let matches = a.sip_instance() == Some(instance.as_str())
                    && (reg_id.is_none() || a.reg_id() == *reg_id);
                matches.then(|| a.expires()).flatten()
            })
        });
        let by_uri = || {
            listed
                .iter()
                .find_map(|a| same(&a.uri).then(|| a.expires()).flatten())
        };
        by_instance
            .or_else(by_uri)
            .or_else(|| response.expires().ok().flatten())
    }

    fn send(&mut self, expires: u32, rng: &mut impl CryptoRng) {
        self.cseq += 1;
        let branch = format!("z9hG4bK{}", token(rng, 12));
        let mut b = Message::request(Method::Register, &self.config.registrar);
        let contact = format!(
            "<{}>{};expires={expires}",
            self.config.contact, self.config.contact_params
        );
        let headers = [
            (
                "Via",
                format!("{};branch={branch};rport", self.config.via_prefix),
            ),
            ("Max-Forwards", "70".to_owned()),
            ("From", format!("<{}>;tag={}", self.config.aor, self.tag)),
            ("To", format!("<{}>", self.config.aor)),
            ("Call-ID", self.call_id.clone()),
            ("CSeq", format!("{} REGISTER", self.cseq)),
            ("Contact", contact),
            ("Expires", expires.to_string()),
            ("Supported", "path, outbound".to_owned()),
        ];
        for (name, value) in &headers {
            b = match b.header(name, value) {
                Ok(b) => b,
                Err(_) => return,
            };
        }
        for r in &self.config.route {
            b = match b.header("Route", r) {
                Ok(b) => b,
                Err(_) => return,
            };
        }
        let Ok(mut request) = b.build() else { return };
        let answer = std::mem::take(&mut self.answer);
        if answer.is_empty() {
            if let Some(client) = self.auth.as_mut() {
                let _ = client.authorize_request(&mut request, rng);
            }
        } else {
            for credentials in answer {
                let _ = credentials.add_to(&mut request);
            }
        }
        self.outgoing.push_back(request);
    }
}

fn token(rng: &mut impl RngCore, len: usize) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..len)
        .map(|_| ALPHABET[(rng.next_u32() % 36) as usize] as char)
        .collect()
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "each test takes one real instant as its epoch and advances it by hand"
)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::auth::{ChallengeKind, DigestVerifier, Verification};
    use crate::secret::Secret;

    fn config() -> RegistrationConfig {
        RegistrationConfig::new(
            "sip:pbx.example.com",
            "sip:alice@example.com",
            "sip:alice@192.0.2.4:5060",
            "SIP/2.0/UDP 192.0.2.4:5060",
        )
    }

    fn reply(req: &Message, status: u16, extra: &[(&str, &str)]) -> Message {
        let mut b = Message::response_to(req, status, "X").unwrap().to_tag("r");
        for (n, v) in extra {
            b = b.header(n, v).unwrap();
        }
        b.build().unwrap()
    }

    #[test]
    fn rfc3261_10_2_register_refreshes_before_expiry() {
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut reg = Registration::new(config(), None, &mut rng);
        reg.register(&mut rng);
        let req = reg.poll_request().unwrap();
        assert_eq!(req.expires().unwrap(), Some(3600));
        assert!(req.contact().unwrap().unwrap().address().unwrap().expires() == Some(3600));
        let ok = reply(
            &req,
            200,
            &[
                ("Contact", "<sip:alice@192.0.2.4:5060>;expires=120"),
                ("Service-Route", "<sip:orig@sr.example.com;lr>"),
            ],
        );
        reg.handle_response(now, &ok, &mut rng);
        assert_eq!(
            reg.poll_event(),
            Some(RegistrationEvent::Registered { expires: 120 })
        );
        assert_eq!(reg.service_route(), ["<sip:orig@sr.example.com;lr>"]);
        let refresh = reg.poll_timeout().unwrap();
        assert!(refresh > now && refresh < now + Duration::from_secs(120));
        reg.handle_timeout(refresh, &mut rng);
        let again = reg.poll_request().unwrap();
        assert_eq!(
            again.call_id().unwrap(),
            req.call_id().unwrap(),
            "same Call-ID (§10.2.4)"
        );
        assert_eq!(again.cseq().unwrap().seq, 2, "CSeq increases");
    }

    #[test]
    fn rfc3261_10_2_8_423_raises_the_expiry() {
        let mut rng = StdRng::seed_from_u64(2);
        let now = Instant::now();
        let mut cfg = config();
        cfg.expires = 60;
        let mut reg = Registration::new(cfg, None, &mut rng);
        reg.register(&mut rng);
        let req = reg.poll_request().unwrap();
        reg.handle_response(now, &reply(&req, 423, &[("Min-Expires", "300")]), &mut rng);
        let retry = reg.poll_request().unwrap();
        assert_eq!(retry.expires().unwrap(), Some(300));
    }

    #[test]
    fn rfc3261_22_challenge_is_answered_and_wrong_password_fails() {
        let mut rng = StdRng::seed_from_u64(3);
        let now = Instant::now();
        let mut verifier = DigestVerifier::new(ChallengeKind::Server, "example.com", &mut rng);
        for (password, ok) in [("right", true), ("wrong", false)] {
            let mut reg = Registration::new(
                config(),
                Some(DigestClient::new("alice", password)),
                &mut rng,
            );
            reg.register(&mut rng);
            let mut outcome = None;
            for attempt in 0..4 {
                let Some(req) = reg.poll_request() else { break };
                if attempt == 1 {
                    // The first use of the new nonce (RFC 7616 §3.4).
                    let auth = req.authorization().next().unwrap().unwrap();
                    assert_eq!(auth.param("nc").as_deref(), Some("00000001"));
                }
                let resp = match verifier.verify(now, &req, |_| Some(Secret::new("right"))) {
                    Verification::Authorized { .. } => reply(&req, 200, &[("Expires", "600")]),
                    _ => {
                        let b = Message::response_to(&req, 401, "Unauthorized")
                            .unwrap()
                            .to_tag("r");
                        verifier
                            .add_challenge(b, now, false, &mut rng)
                            .unwrap()
                            .build()
                            .unwrap()
                    }
                };
                reg.handle_response(now, &resp, &mut rng);
                if let Some(e) = reg.poll_event() {
                    outcome = Some(e);
                    break;
                }
            }
            match (ok, outcome) {
                (true, Some(RegistrationEvent::Registered { expires: 600 })) => {}
                (
                    false,
                    Some(RegistrationEvent::Failed {
                        status: 401,
                        will_retry: false,
                        ..
                    }),
                ) => {}
                (ok, other) => panic!("password ok={ok}: {other:?}"),
            }
        }
    }

    /// A refresh carries the cached nonce; the registrar restarted and no
    /// longer knows it, and challenges without stale=true. The refresh is
    /// answered afresh rather than taken for a wrong password.
    #[test]
    fn rfc3261_22_a_refresh_a_restarted_registrar_challenges_is_answered_afresh() {
        let mut rng = StdRng::seed_from_u64(14);
        let now = Instant::now();
        let challenge =
            |verifier: &mut DigestVerifier, req: &Message, at: Instant, rng: &mut StdRng| {
                let b = Message::response_to(req, 401, "Unauthorized")
                    .unwrap()
                    .to_tag("r");
                verifier
                    .add_challenge(b, at, false, rng)
                    .unwrap()
                    .build()
                    .unwrap()
            };
        let right = |_: &str| Some(Secret::new("right"));
        let mut verifier = DigestVerifier::new(ChallengeKind::Server, "example.com", &mut rng);
        let mut reg = Registration::new(
            config(),
            Some(DigestClient::new("alice", "right")),
            &mut rng,
        );
        reg.register(&mut rng);
        let first = reg.poll_request().unwrap();
        reg.handle_response(
            now,
            &challenge(&mut verifier, &first, now, &mut rng),
            &mut rng,
        );
        let answer = reg.poll_request().unwrap();
        assert!(verifier.verify(now, &answer, right).is_authorized());
        reg.handle_response(now, &reply(&answer, 200, &[("Expires", "600")]), &mut rng);
        assert!(matches!(
            reg.poll_event(),
            Some(RegistrationEvent::Registered { .. })
        ));

        let due = reg.poll_timeout().unwrap();
        reg.handle_timeout(due, &mut rng);
        let refresh = reg.poll_request().unwrap();
        assert!(refresh.authorization().next().is_some(), "pre-authorised");
        let mut restarted = DigestVerifier::new(ChallengeKind::Server, "example.com", &mut rng);
        assert!(!restarted.verify(due, &refresh, right).is_authorized());
        reg.handle_response(
            due,
            &challenge(&mut restarted, &refresh, due, &mut rng),
            &mut rng,
        );
        assert_eq!(reg.poll_event(), None, "not a failure");
        let fresh = reg.poll_request().unwrap();
        assert!(restarted.verify(due, &fresh, right).is_authorized());
        reg.handle_response(due, &reply(&fresh, 200, &[("Expires", "600")]), &mut rng);
        assert!(matches!(
            reg.poll_event(),
            Some(RegistrationEvent::Registered { .. })
        ));

        // A wrong password after all: refused again, and that is final.
        let due = reg.poll_timeout().unwrap();
        reg.handle_timeout(due, &mut rng);
        let refresh = reg.poll_request().unwrap();
        let mut strict = DigestVerifier::new(ChallengeKind::Server, "example.com", &mut rng);
        reg.handle_response(
            due,
            &challenge(&mut strict, &refresh, due, &mut rng),
            &mut rng,
        );
        let again = reg.poll_request().unwrap();
        reg.handle_response(
            due,
            &challenge(&mut strict, &again, due, &mut rng),
            &mut rng,
        );
        assert!(matches!(
            reg.poll_event(),
            Some(RegistrationEvent::Failed {
                status: 401,
                will_retry: false,
                ..
            })
        ));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_maximum() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut now = Instant::now();
        let mut reg = Registration::new(config(), None, &mut rng);
        reg.register(&mut rng);
        let mut waits = Vec::new();
        for _ in 0..8 {
            let _ = reg.poll_request().unwrap();
            reg.handle_failure(now, &mut rng);
            let at = reg.poll_timeout().unwrap();
            waits.push((at - now).as_secs_f64());
            now = at;
            reg.handle_timeout(now, &mut rng);
        }
        // base 30 s doubling, minus up to half as jitter, capped at 1800 s.
        for (k, w) in waits.iter().enumerate() {
            let full = (30.0 * 2f64.powi(k as i32)).min(1800.0);
            assert!(
                *w <= full && *w >= full / 2.0,
                "attempt {k}: {w} s of {full}"
            );
        }
    }

    /// RFC 3263 §4.3: after a failure the next server is asked at once,
    /// with the Contact and Via that reach it, and the back-off grows once
    /// per round of servers, not once per server.
    #[test]
    fn rfc3263_4_3_fail_over_registers_at_once_elsewhere_without_growing_the_back_off() {
        let mut rng = StdRng::seed_from_u64(6);
        let now = Instant::now();
        let mut reg = Registration::new(config(), None, &mut rng);
        reg.register(&mut rng);
        let first = reg.poll_request().unwrap();
        reg.handle_failure(now, &mut rng);
        assert!(matches!(
            reg.state(),
            RegistrationState::WaitingToRetry { .. }
        ));
        reg.fail_over(
            "sip:alice@192.0.2.99:5070;transport=tcp",
            "SIP/2.0/TCP 192.0.2.99:5070",
            &["<sip:proxy2.example.com;lr>".to_owned()],
            &mut rng,
        );
        assert_eq!(reg.state(), RegistrationState::Registering);
        let second = reg.poll_request().expect("sent at once");
        assert!(
            second
                .via()
                .unwrap()
                .to_string()
                .starts_with("SIP/2.0/TCP 192.0.2.99:5070")
        );
        assert!(
            second
                .header("Contact")
                .unwrap()
                .contains("192.0.2.99:5070;transport=tcp"),
            "{:?}",
            second.header("Contact")
        );
        assert_eq!(second.header("Route"), Some("<sip:proxy2.example.com;lr>"));
        assert_eq!(second.call_id().unwrap(), first.call_id().unwrap());
        assert_eq!(second.cseq().unwrap().seq, first.cseq().unwrap().seq + 1);
        // The second server fails too: the first step of the back-off
        // (base 30 s, up to half off), not the second.
        reg.handle_failure(now, &mut rng);
        let wait = reg.poll_timeout().unwrap() - now;
        assert!(
            wait >= Duration::from_secs(15) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }

    /// An overloaded registrar's 503 Retry-After (RFC 3261 §21.5.4) is
    /// waited out, up to `retry_max`, and reported with the failure.
    #[test]
    fn rfc3261_21_5_4_a_503_retry_after_is_waited_out() {
        let mut rng = StdRng::seed_from_u64(8);
        let now = Instant::now();
        let mut reg = Registration::new(config(), None, &mut rng);
        for (header, floor) in [("600 (overloaded)", 600), ("86400", 1800)] {
            reg.register(&mut rng);
            let req = reg.poll_request().unwrap();
            let busy = reply(&req, 503, &[("Retry-After", header)]);
            reg.handle_response(now, &busy, &mut rng);
            let Some(RegistrationEvent::Failed {
                status: 503,
                will_retry: true,
                retry_after: Some(asked),
                ..
            }) = reg.poll_event()
            else {
                panic!("no failure event for Retry-After {header}");
            };
            let header_secs: u64 = header.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(asked, Duration::from_secs(header_secs));
            let wait = reg.poll_timeout().unwrap() - now;
            // Without the header the first retry comes after 15-30 s.
            assert!(
                wait >= Duration::from_secs(floor) && wait <= Duration::from_secs(1800),
                "Retry-After {header}: retried after {wait:?}"
            );
        }
    }

    #[test]
    fn unregister_sends_expires_zero() {
        let mut rng = StdRng::seed_from_u64(5);
        let now = Instant::now();
        let mut reg = Registration::new(config(), None, &mut rng);
        reg.register(&mut rng);
        let req = reg.poll_request().unwrap();
        reg.handle_response(now, &reply(&req, 200, &[("Expires", "600")]), &mut rng);
        let _ = reg.poll_event();
        reg.unregister(&mut rng);
        let bye = reg.poll_request().unwrap();
        assert_eq!(bye.expires().unwrap(), Some(0));
        reg.handle_response(now, &reply(&bye, 200, &[]), &mut rng);
        assert_eq!(reg.poll_event(), Some(RegistrationEvent::Unregistered));
        assert_eq!(reg.state(), RegistrationState::Idle);
    }

    #[test]
    fn rfc3261_10_2_an_unregister_during_a_refresh_waits_for_its_answer() {
        let mut rng = StdRng::seed_from_u64(11);
        let now = Instant::now();
        let mut reg = Registration::new(config(), None, &mut rng);
        reg.register(&mut rng);
        let req = reg.poll_request().unwrap();
        reg.handle_response(now, &reply(&req, 200, &[("Expires", "600")]), &mut rng);
        let _ = reg.poll_event();
        let due = reg.poll_timeout().unwrap();
        reg.handle_timeout(due, &mut rng);
        let refresh = reg.poll_request().unwrap();
        // The user quits while the refresh is out: nothing goes yet.
        reg.unregister(&mut rng);
        assert!(reg.poll_request().is_none(), "one REGISTER at a time");
        // The refresh's answer comes; then the removal goes.
        reg.handle_response(due, &reply(&refresh, 200, &[("Expires", "600")]), &mut rng);
        let removal = reg.poll_request().unwrap();
        assert_eq!(removal.expires().unwrap(), Some(0));
        assert!(removal.cseq().unwrap().seq > refresh.cseq().unwrap().seq);
        reg.handle_response(due, &reply(&removal, 200, &[]), &mut rng);
        assert_eq!(reg.state(), RegistrationState::Idle);

        // The same when the refresh fails: the removal still goes, no retry.
        let mut reg = Registration::new(config(), None, &mut rng);
        reg.register(&mut rng);
        let req = reg.poll_request().unwrap();
        reg.handle_response(now, &reply(&req, 200, &[("Expires", "600")]), &mut rng);
        let due = reg.poll_timeout().unwrap();
        reg.handle_timeout(due, &mut rng);
        let refresh = reg.poll_request().unwrap();
        reg.unregister(&mut rng);
        reg.handle_response(due, &reply(&refresh, 503, &[]), &mut rng);
        let removal = reg.poll_request().unwrap();
        assert_eq!(removal.expires().unwrap(), Some(0));
        assert_eq!(reg.state(), RegistrationState::Unregistering);
    }

    #[test]
    fn a_200_that_grants_no_time_backs_off_instead_of_refreshing_at_once() {
        let mut rng = StdRng::seed_from_u64(12);
        let now = Instant::now();
        let mut reg = Registration::new(config(), None, &mut rng);
        reg.register(&mut rng);
        let req = reg.poll_request().unwrap();
        reg.handle_response(
            now,
            &reply(
                &req,
                200,
                &[("Contact", "<sip:alice@192.0.2.4:5060>;expires=0")],
            ),
            &mut rng,
        );
        assert!(matches!(
            reg.poll_event(),
            Some(RegistrationEvent::Failed {
                will_retry: true,
                ..
            })
        ));
        assert!(reg.poll_timeout().unwrap() >= now + Duration::from_secs(1));
        reg.handle_timeout(now, &mut rng);
        assert!(
            reg.poll_request().is_none(),
            "no REGISTER before the back-off"
        );
    }

    #[test]
    fn rfc5626_6_our_binding_is_found_by_instance_when_its_uri_was_rewritten() {
        let mut rng = StdRng::seed_from_u64(13);
        let now = Instant::now();
        let mut cfg = config();
        cfg.contact_params =
            ";+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000000000001>\";reg-id=1".into();
        let mut reg = Registration::new(cfg, None, &mut rng);
        reg.register(&mut rng);
        let req = reg.poll_request().unwrap();
        // The registrar rewrote our Contact to the address it saw (NAT), and
        // lists another phone of the account on our private address.
        let ok = reply(
            &req,
            200,
            &[
                (
                    "Contact",
                    "<sip:alice@192.0.2.4:5060>;expires=3000;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000000000002>\";reg-id=1",
                ),
                (
                    "Contact",
                    "<sip:alice@198.51.100.7:40312>;expires=300;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000000000001>\";reg-id=1",
                ),
            ],
        );
        reg.handle_response(now, &ok, &mut rng);
        assert_eq!(
            reg.poll_event(),
            Some(RegistrationEvent::Registered { expires: 300 })
        );

        // No instance, no URI of ours, no Expires: the shortest listed.
        let mut reg = Registration::new(config(), None, &mut rng);
        reg.register(&mut rng);
        let req = reg.poll_request().unwrap();
        let ok = reply(
            &req,
            200,
            &[
                ("Contact", "<sip:alice@198.51.100.7:40312>;expires=300"),
                ("Contact", "<sip:alice@203.0.113.9:5060>;expires=1800"),
            ],
        );
        reg.handle_response(now, &ok, &mut rng);
        assert_eq!(
            reg.poll_event(),
            Some(RegistrationEvent::Registered { expires: 300 })
        );
    }

    /// The registrar's Contact is matched as a URI (§10.2.4, §19.1.4): its
    /// parameters in another order still give our binding's expiry.
    #[test]
    fn rfc3261_10_2_4_granted_expiry_matches_the_contact_as_a_uri() {
        let mut rng = StdRng::seed_from_u64(7);
        let now = Instant::now();
        let mut cfg = config();
        cfg.contact = "sip:alice@192.0.2.4;transport=tcp;ob".to_owned();
        let mut reg = Registration::new(cfg, None, &mut rng);
        reg.register(&mut rng);
        let req = reg.poll_request().unwrap();
        let ok = reply(
            &req,
            200,
            &[
                ("Contact", "<sip:bob@192.0.2.9>;expires=900"),
                (
                    "Contact",
                    "<sip:alice@192.0.2.4;OB;Transport=TCP>;expires=60",
                ),
            ],
        );
        reg.handle_response(now, &ok, &mut rng);
        assert_eq!(
            reg.poll_event(),
            Some(RegistrationEvent::Registered { expires: 60 })
        );
    }

    /// A removal that gets no answer is tried again as a removal, twice,
    /// and then left to expire: it never turns back into a REGISTER.
    #[test]
    fn rfc3261_10_2_2_a_failed_removal_is_retried_as_a_removal() {
        let mut rng = StdRng::seed_from_u64(6);
        let mut now = Instant::now();
        let mut reg = Registration::new(config(), None, &mut rng);
        reg.register(&mut rng);
        let req = reg.poll_request().unwrap();
        reg.handle_response(now, &reply(&req, 200, &[("Expires", "600")]), &mut rng);
        let _ = reg.poll_event();
        reg.unregister(&mut rng);
        let mut sent = Vec::new();
        for _ in 0..5 {
            let Some(req) = reg.poll_request() else { break };
            sent.push(req.expires().unwrap());
            reg.handle_failure(now, &mut rng);
            let _ = reg.poll_event();
            let Some(at) = reg.poll_timeout() else { break };
            now = at;
            reg.handle_timeout(now, &mut rng);
        }
        assert_eq!(sent, vec![Some(0), Some(0), Some(0)]);
        assert_eq!(reg.state(), RegistrationState::Idle);
        assert_eq!(reg.poll_timeout(), None);
    }
}
