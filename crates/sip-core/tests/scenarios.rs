//! Scenario tests: several sans-IO endpoints on a simulated network (loss,
//! delay, reordering, duplication) and a virtual clock. No sockets, no
//! sleeping: minutes of SIP time run in milliseconds.
#![allow(clippy::unwrap_used, reason = "a scenario failure should fail loudly")]
#![allow(
    clippy::disallowed_methods,
    reason = "each scenario takes one real instant as its epoch and advances it by hand"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sip_core::auth::{ChallengeKind, DigestClient, DigestVerifier, Verification};
use sip_core::dialog::{Dialog, DialogId, UasInviteResponder, glare_backoff};
use sip_core::endpoint::{
    ClientTxId, Destination, Endpoint, EndpointConfig, EndpointEvent, Input, ServerTxId, Transport,
};
use sip_core::transaction::TimerConfig;
use sip_core::{Message, Method, Secret};

/// A packet in flight.
#[derive(Debug, Clone)]
struct Packet {
    at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    data: Bytes,
}

/// The simulated network: every packet gets a delay; some are lost or doubled.
struct Network {
    rng: StdRng,
    in_flight: Vec<Packet>,
    base_delay: Duration,
    jitter: Duration,
    loss: f64,
    duplicate: f64,
    /// Drop exactly the packet with this send index (counted from 0).
    drop_index: Option<usize>,
    sent: usize,
    log: Vec<String>,
}

impl Network {
    fn new(seed: u64) -> Self {
        Network {
            rng: StdRng::seed_from_u64(seed),
            in_flight: Vec::new(),
            base_delay: Duration::from_millis(20),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            drop_index: None,
            sent: 0,
            log: Vec::new(),
        }
    }

    fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: Bytes) {
        let index = self.sent;
        self.sent += 1;
        let first_line = String::from_utf8_lossy(&data[..data.len().min(40)])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        if self.drop_index == Some(index) || self.rng.random_bool(self.loss) {
            self.log.push(format!("#{index} lost: {first_line}"));
            return;
        }
        self.log
            .push(format!("#{index} {from} -> {to}: {first_line}"));
        let copies = if self.rng.random_bool(self.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let extra = if self.jitter.is_zero() {
                Duration::ZERO
            } else {
                self.rng.random_range(Duration::ZERO..self.jitter)
            };
            self.in_flight.push(Packet {
                at: now + self.base_delay + extra,
                from,
                to,
                data: data.clone(),
            });
        }
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.iter().map(|p| p.at).min()
    }

    fn due(&mut self, now: Instant) -> Vec<Packet> {
        let mut due: Vec<Packet> = Vec::new();
        self.in_flight.retain(|p| {
            if p.at <= now {
                due.push(p.clone());
                false
            } else {
                true
            }
        });
        due.sort_by_key(|p| p.at);
        due
    }
}

/// What a user agent does with what it receives.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// 180 then 200 after this long.
    After(Duration),
    /// 180 and never answer (to be cancelled).
    Ring,
    /// 486 Busy Here.
    Busy,
}

/// A user agent on top of the endpoint: just enough UAC and UAS core for
/// calls, registration and re-INVITEs.
struct Agent {
    name: &'static str,
    addr: SocketAddr,
    ep: Endpoint<StdRng>,
    rng: StdRng,
    answer: Answer,
    dialogs: HashMap<DialogId, Dialog>,
    /// UAC: the INVITE we sent and its transaction.
    invite: Option<(ClientTxId, Message)>,
    /// UAS: the INVITE being answered.
    incoming: Option<(ServerTxId, Message, String)>,
    answer_at: Option<Instant>,
    responder: Option<UasInviteResponder>,
    /// A re-INVITE of ours waiting for its final response.
    reinvite: Option<ClientTxId>,
    reinvite_at: Option<Instant>,
    owns_call_id: bool,
    verifier: Option<DigestVerifier>,
    client: Option<DigestClient>,
    register: Option<(ClientTxId, Message)>,
    log: Vec<String>,
}

impl Agent {
    fn new(name: &'static str, port: u16, seed: u64, answer: Answer) -> Self {
        let config = EndpointConfig {
            timers: TimerConfig::default(),
            ..EndpointConfig::default()
        };
        Agent {
            name,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            ep: Endpoint::new(config, StdRng::seed_from_u64(seed)),
            rng: StdRng::seed_from_u64(seed + 1000),
            answer,
            dialogs: HashMap::new(),
            invite: None,
            incoming: None,
            answer_at: None,
            responder: None,
            reinvite: None,
            reinvite_at: None,
            owns_call_id: false,
            verifier: None,
            client: None,
            register: None,
            log: Vec::new(),
        }
    }

    fn dest(&self, to: SocketAddr) -> Destination {
        Destination {
            transport: Transport::Udp,
            addr: to,
            connection: None,
        }
    }

    fn via(&mut self) -> String {
        format!(
            "SIP/2.0/UDP {};branch={};rport",
            self.addr,
            self.ep.new_branch()
        )
    }

    fn contact(&self) -> String {
        format!("sip:{}@{}", self.name, self.addr)
    }

    fn call(&mut self, now: Instant, to: &Agent) {
        let via = self.via();
        let tag = self.ep.new_tag();
        let call_id = self.ep.new_call_id();
        let invite = Message::request(Method::Invite, &to.contact())
            .header("Via", &via)
            .unwrap()
            .header("Max-Forwards", "70")
            .unwrap()
            .header(
                "From",
                &format!("<sip:{}@example.com>;tag={tag}", self.name),
            )
            .unwrap()
            .header("To", &format!("<sip:{}@example.com>", to.name))
            .unwrap()
            .header("Call-ID", &call_id)
            .unwrap()
            .header("CSeq", "1 INVITE")
            .unwrap()
            .header("Contact", &format!("<{}>", self.contact()))
            .unwrap()
            .body(&b"v=0\r\n"[..])
            .build()
            .unwrap();
        let tx = self
            .ep
            .send_request(now, invite.clone(), self.dest(to.addr))
            .unwrap();
        self.owns_call_id = true;
        self.invite = Some((tx, invite));
    }

    fn hang_up(&mut self, now: Instant, to: SocketAddr) {
        let via = self.via();
        let d = self.dialogs.values_mut().next().unwrap();
        let bye = d.request(Method::Bye, &via).unwrap();
        self.ep
            .send_request(
                now,
                bye,
                Destination {
                    transport: Transport::Udp,
                    addr: to,
                    connection: None,
                },
            )
            .unwrap();
    }

    fn reinvite(&mut self, now: Instant, to: SocketAddr) {
        let via = self.via();
        let d = self.dialogs.values_mut().next().unwrap();
        let re = d.request(Method::Invite, &via).unwrap();
        let tx = self.ep.send_request(now, re, self.dest(to)).unwrap();
        self.reinvite = Some(tx);
    }

    fn register(
        &mut self,
        now: Instant,
        registrar: SocketAddr,
        cseq: u32,
        call_id: &str,
        tag: &str,
    ) {
        let via = self.via();
        let mut req = Message::request(Method::Register, &format!("sip:{registrar}"))
            .header("Via", &via)
            .unwrap()
            .header("Max-Forwards", "70")
            .unwrap()
            .header(
                "From",
                &format!("<sip:{}@example.com>;tag={tag}", self.name),
            )
            .unwrap()
            .header("To", &format!("<sip:{}@example.com>", self.name))
            .unwrap()
            .header("Call-ID", call_id)
            .unwrap()
            .header("CSeq", &format!("{cseq} REGISTER"))
            .unwrap()
            .header("Contact", &format!("<{}>;expires=600", self.contact()))
            .unwrap()
            .build()
            .unwrap();
        if let Some(c) = &mut self.client {
            c.authorize_request(&mut req, &mut self.rng).unwrap();
        }
        let tx = self
            .ep
            .send_request(now, req.clone(), self.dest(registrar))
            .unwrap();
        self.register = Some((tx, req));
    }

    /// Reacts to everything the endpoint reported.
    fn process(&mut self, now: Instant) {
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                EndpointEvent::Request {
                    transaction,
                    request,
                    source,
                } => self.on_request(now, transaction, request, source),
                EndpointEvent::Ack { request, .. } => {
                    self.log
                        .push(format!("ACK {}", request.cseq().unwrap().seq));
                    if let Some(r) = &mut self.responder {
                        r.handle_ack();
                    }
                }
                EndpointEvent::Cancelled { invite, .. } => {
                    self.log.push("CANCELLED".into());
                    if let Some((tx, req, tag)) = self.incoming.take() {
                        assert_eq!(tx, invite);
                        let resp = Message::response_to(&req, 487, "Request Terminated")
                            .unwrap()
                            .to_tag(&tag)
                            .build()
                            .unwrap();
                        self.ep.send_response(now, tx, resp).unwrap();
                        self.answer_at = None;
                    }
                }
                EndpointEvent::Response {
                    transaction,
                    response,
                } => self.on_response(now, transaction, response),
                EndpointEvent::StrayResponse { response } => {
                    // A retransmitted 2xx: ACK it again (§13.2.2.4).
                    self.ack(now, &response);
                }
                EndpointEvent::ClientTimedOut { .. } => self.log.push("TIMEOUT".into()),
                other => self.log.push(format!("{other:?}")),
            }
        }
    }

    fn on_request(&mut self, now: Instant, tx: ServerTxId, req: Message, source: Destination) {
        let method = req.method().unwrap().clone();
        self.log.push(format!("got {method}"));
        let in_dialog = DialogId::of_request(&req).filter(|id| self.dialogs.contains_key(id));
        match (method, in_dialog) {
            (Method::Invite, None) => {
                let tag = self.ep.new_tag();
                let ring = Message::response_to(&req, 180, "Ringing")
                    .unwrap()
                    .header("Contact", &format!("<{}>", self.contact()))
                    .unwrap()
                    .to_tag(&tag)
                    .build()
                    .unwrap();
                self.ep.send_response(now, tx, ring).unwrap();
                match self.answer {
                    Answer::Busy => {
                        let busy = Message::response_to(&req, 486, "Busy Here")
                            .unwrap()
                            .to_tag(&tag)
                            .build()
                            .unwrap();
                        self.ep.send_response(now, tx, busy).unwrap();
                    }
                    Answer::After(d) => {
                        self.answer_at = Some(now + d);
                        self.incoming = Some((tx, req, tag));
                    }
                    Answer::Ring => self.incoming = Some((tx, req, tag)),
                }
                let _ = source;
            }
            (Method::Invite, Some(id)) => {
                // A re-INVITE: glare if ours is pending (§14.2).
                let glare = self.reinvite.is_some();
                let status = if glare { 491 } else { 200 };
                let mut b = Message::response_to(
                    &req,
                    status,
                    if glare { "Request Pending" } else { "OK" },
                )
                .unwrap();
                if !glare {
                    b = b
                        .header("Contact", &format!("<{}>", self.contact()))
                        .unwrap();
                    self.dialogs
                        .get_mut(&id)
                        .unwrap()
                        .handle_request(&req)
                        .unwrap();
                }
                let resp = b.build().unwrap();
                self.ep.send_response(now, tx, resp.clone()).unwrap();
                if !glare {
                    self.responder =
                        Some(UasInviteResponder::new(now, resp, TimerConfig::default()));
                }
            }
            (Method::Bye, Some(id)) => {
                self.dialogs
                    .get_mut(&id)
                    .unwrap()
                    .handle_request(&req)
                    .unwrap();
                let ok = Message::response_to(&req, 200, "OK")
                    .unwrap()
                    .build()
                    .unwrap();
                self.ep.send_response(now, tx, ok).unwrap();
                self.dialogs.remove(&id);
                self.log.push("HUNG UP by peer".into());
            }
            (Method::Register, _) => {
                let verifier = self.verifier.as_mut().unwrap();
                let resp = match verifier.verify(now, &req, |user| {
                    (user == "alice").then(|| Secret::new("s3cret"))
                }) {
                    Verification::Authorized { .. } => Message::response_to(&req, 200, "OK")
                        .unwrap()
                        .header("Contact", req.header("Contact").unwrap())
                        .unwrap()
                        .to_tag("reg")
                        .build()
                        .unwrap(),
                    other => {
                        let stale = matches!(other, Verification::Stale);
                        let b = Message::response_to(&req, 401, "Unauthorized")
                            .unwrap()
                            .to_tag("reg");
                        verifier
                            .add_challenge(b, now, stale, &mut self.rng)
                            .unwrap()
                            .build()
                            .unwrap()
                    }
                };
                self.ep.send_response(now, tx, resp).unwrap();
            }
            (_, _) => {
                let resp = Message::response_to(&req, 481, "Call/Transaction Does Not Exist")
                    .unwrap()
                    .build()
                    .unwrap();
                self.ep.send_response(now, tx, resp).unwrap();
            }
        }
    }

    fn on_response(&mut self, now: Instant, tx: ClientTxId, resp: Message) {
        let status = resp.status().unwrap();
        let method = resp.cseq().unwrap().method();
        self.log.push(format!("{status} {method}"));
        if method == Method::Invite && Some(tx) == self.invite.as_ref().map(|i| i.0) {
            if (200..300).contains(&status) {
                let (_, invite) = self.invite.clone().unwrap();
                let id = DialogId::of_response(&resp).unwrap();
                self.dialogs
                    .entry(id)
                    .or_insert_with(|| {
                        Dialog::as_uac(&invite, &resp, &format!("sip:{}", self.addr)).unwrap()
                    })
                    .handle_response(&resp);
                self.ack(now, &resp);
            }
            return;
        }
        if method == Method::Invite && Some(tx) == self.reinvite {
            if status == 491 {
                let wait = glare_backoff(self.owns_call_id, &mut self.rng);
                self.log
                    .push(format!("glare, retry in {} ms", wait.as_millis()));
                self.reinvite = None;
                self.reinvite_at = Some(now + wait);
            } else if status >= 200 {
                self.reinvite = None;
                self.ack(now, &resp);
            }
            return;
        }
        if method == Method::Register && status == 401 {
            let (_, req) = self.register.clone().unwrap();
            let creds = self
                .client
                .as_mut()
                .unwrap()
                .handle_challenge(&resp, &req, &mut self.rng);
            match creds {
                Ok(_) => {
                    let seq = req.cseq().unwrap().seq + 1;
                    let call_id = req.call_id().unwrap().to_owned();
                    let tag = req.from().unwrap().tag().unwrap().to_owned();
                    let to = self.register.as_ref().map(|_| ()).map(|()| resp.clone());
                    let _ = to;
                    self.register(
                        now,
                        SocketAddr::from(([127, 0, 0, 1], 5070)),
                        seq,
                        &call_id,
                        &tag,
                    );
                }
                Err(e) => self.log.push(format!("auth failed: {e}")),
            }
        }
    }

    fn ack(&mut self, now: Instant, resp: &Message) {
        let id = DialogId::of_response(resp).unwrap();
        let seq = resp.cseq().unwrap().seq;
        let via = self.via();
        let Some(d) = self.dialogs.get(&id) else {
            return;
        };
        let ack = d.ack(seq, &via).unwrap();
        let to: SocketAddr = d
            .remote_target
            .trim_start_matches("sip:")
            .split('@')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let _ = now;
        self.ep.send_stateless(self.dest(to), &ack);
    }

    /// Actions due at `now`: answering, resending 2xx, retrying a re-INVITE.
    fn tick(&mut self, now: Instant, peer: SocketAddr) {
        if self.answer_at.is_some_and(|t| t <= now) {
            self.answer_at = None;
            if let Some((tx, req, tag)) = self.incoming.take() {
                let ok = Message::response_to(&req, 200, "OK")
                    .unwrap()
                    .header("Contact", &format!("<{}>", self.contact()))
                    .unwrap()
                    .to_tag(&tag)
                    .build()
                    .unwrap();
                let dialog = Dialog::as_uas(&req, &tag, &self.contact()).unwrap();
                self.dialogs.insert(dialog.id.clone(), dialog);
                self.ep.send_response(now, tx, ok.clone()).unwrap();
                self.responder = Some(UasInviteResponder::new(now, ok, TimerConfig::default()));
            }
        }
        let dest = self.dest(peer);
        if let Some(r) = &mut self.responder {
            r.handle_timeout(now);
            while let Some(m) = r.poll_transmit() {
                self.ep.send_stateless(dest, &m);
            }
        }
        if self.reinvite_at.is_some_and(|t| t <= now) {
            self.reinvite_at = None;
            self.reinvite(now, peer);
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        [
            self.ep.poll_timeout(),
            self.answer_at,
            self.reinvite_at,
            self.responder
                .as_ref()
                .and_then(UasInviteResponder::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Runs two agents and the network until nothing is left to do or `limit` passes.
fn run(
    net: &mut Network,
    a: &mut Agent,
    b: &mut Agent,
    start: Instant,
    now: &mut Instant,
    limit: Duration,
) {
    for _ in 0..100_000 {
        for agent in [&mut *a, &mut *b] {
            agent.process(*now);
            while let Some(t) = agent.ep.poll_transmit() {
                net.send(*now, agent.addr, t.destination.addr, t.payload);
            }
        }
        let next = [net.next_delivery(), a.next_wakeup(), b.next_wakeup()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { return };
        if next - start > limit {
            return;
        }
        assert!(next >= *now, "time never goes backwards");
        *now = next;
        for p in net.due(*now) {
            let agent = if p.to == a.addr { &mut *a } else { &mut *b };
            agent.ep.handle_input(
                *now,
                Input::Datagram {
                    transport: Transport::Udp,
                    remote: p.from,
                    data: p.data,
                },
            );
        }
        let (pa, pb) = (b.addr, a.addr);
        a.ep.handle_timeout(*now);
        b.ep.handle_timeout(*now);
        a.tick(*now, pa);
        b.tick(*now, pb);
    }
    panic!("scenario did not settle");
}

/// A whole call: INVITE, 180, 200, ACK, then BYE from the caller.
fn call_and_hang_up(net: &mut Network) -> (Agent, Agent) {
    let start = Instant::now();
    let mut now = start;
    let mut alice = Agent::new("alice", 5060, 1, Answer::After(Duration::ZERO));
    let mut bob = Agent::new("bob", 5062, 2, Answer::After(Duration::from_secs(1)));
    alice.call(now, &bob);
    run(
        net,
        &mut alice,
        &mut bob,
        start,
        &mut now,
        Duration::from_secs(40),
    );
    assert_eq!(
        alice.dialogs.len(),
        1,
        "alice: {:?}\n{:#?}",
        alice.log,
        net.log
    );
    assert!(
        bob.responder.as_ref().unwrap().is_acked(),
        "bob: {:?}\n{:#?}",
        bob.log,
        net.log
    );
    alice.hang_up(now, bob.addr);
    run(
        net,
        &mut alice,
        &mut bob,
        start,
        &mut now,
        Duration::from_secs(200),
    );
    (alice, bob)
}

#[test]
fn rfc3261_basic_call_completes() {
    let mut net = Network::new(1);
    let (alice, bob) = call_and_hang_up(&mut net);
    assert!(alice.log.contains(&"180 INVITE".to_owned()));
    assert!(alice.log.contains(&"200 BYE".to_owned()), "{:?}", alice.log);
    assert!(bob.log.contains(&"HUNG UP by peer".to_owned()));
    // INVITE, 100? no: 180 and 200 come before 200 ms, so no 100 Trying.
    assert!(!net.log.iter().any(|l| l.contains("100 Trying")));
}

#[test]
fn rfc3261_17_2_1_slow_answer_sends_100_trying() {
    let start = Instant::now();
    let mut now = start;
    let mut net = Network::new(2);
    let mut alice = Agent::new("alice", 5060, 1, Answer::After(Duration::ZERO));
    let mut bob = Agent::new("bob", 5062, 2, Answer::Busy);
    // Bob's endpoint gets the INVITE but the agent only looks at it later.
    alice.call(now, &bob);
    while let Some(t) = alice.ep.poll_transmit() {
        net.send(now, alice.addr, t.destination.addr, t.payload);
    }
    now += Duration::from_millis(20);
    for p in net.due(now) {
        bob.ep.handle_input(
            now,
            Input::Datagram {
                transport: Transport::Udp,
                remote: p.from,
                data: p.data,
            },
        );
    }
    now += Duration::from_millis(200);
    bob.ep.handle_timeout(now);
    let trying = bob.ep.poll_transmit().unwrap();
    assert!(trying.payload.starts_with(b"SIP/2.0 100 Trying"));
    run(
        &mut net,
        &mut alice,
        &mut bob,
        start,
        &mut now,
        Duration::from_secs(60),
    );
    assert!(
        alice.log.contains(&"486 INVITE".to_owned()),
        "{:?}",
        alice.log
    );
}

/// Timer B bounds Calling only (§17.1.1.2): a call that rings for 45 s,
/// longer than 64*T1, is still answered and acknowledged.
#[test]
fn rfc3261_17_1_1_2_a_call_may_ring_past_timer_b() {
    let start = Instant::now();
    let mut now = start;
    let mut net = Network::new(3);
    let mut alice = Agent::new("alice", 5060, 1, Answer::After(Duration::ZERO));
    let mut bob = Agent::new("bob", 5062, 2, Answer::After(Duration::from_secs(45)));
    alice.call(now, &bob);
    run(
        &mut net,
        &mut alice,
        &mut bob,
        start,
        &mut now,
        Duration::from_secs(60),
    );
    assert!(
        !alice.log.contains(&"TIMEOUT".to_owned()),
        "{:?}",
        alice.log
    );
    assert!(
        alice.log.contains(&"200 INVITE".to_owned()),
        "{:?}",
        alice.log
    );
    assert!(bob.responder.as_ref().unwrap().is_acked());
}

#[test]
fn every_message_of_a_call_can_be_lost_once() {
    // Count the packets of a clean call, then lose each one in turn.
    let mut clean = Network::new(3);
    call_and_hang_up(&mut clean);
    let packets = clean.sent;
    assert_eq!(packets, 6, "INVITE 180 200 ACK BYE 200");
    for k in 0..packets {
        let mut net = Network::new(3);
        net.drop_index = Some(k);
        let (alice, bob) = call_and_hang_up(&mut net);
        assert!(
            alice.log.contains(&"200 BYE".to_owned()),
            "lost #{k}: alice {:?}\n{:#?}",
            alice.log,
            net.log
        );
        assert!(
            bob.log.contains(&"HUNG UP by peer".to_owned()),
            "lost #{k}: bob {:?}",
            bob.log
        );
    }
}

#[test]
fn a_call_survives_jitter_reordering_and_duplication() {
    for seed in 0..20 {
        let mut net = Network::new(100 + seed);
        net.jitter = Duration::from_millis(300);
        net.duplicate = 0.3;
        net.loss = 0.1;
        let (alice, bob) = call_and_hang_up(&mut net);
        assert!(
            alice.log.contains(&"200 BYE".to_owned()),
            "seed {seed}: {:?}\n{:#?}",
            alice.log,
            net.log
        );
        assert!(
            bob.log.contains(&"HUNG UP by peer".to_owned()),
            "seed {seed}"
        );
        // Duplicates never reach the user as new requests.
        assert_eq!(
            bob.log.iter().filter(|l| *l == "got INVITE").count(),
            1,
            "seed {seed}: {:?}",
            bob.log
        );
    }
}

#[test]
fn rfc3261_9_cancel_before_answer_ends_with_487() {
    let start = Instant::now();
    let mut now = start;
    let mut net = Network::new(4);
    let mut alice = Agent::new("alice", 5060, 1, Answer::After(Duration::ZERO));
    let mut bob = Agent::new("bob", 5062, 2, Answer::Ring);
    alice.call(now, &bob);
    // CANCEL asked at once: held until the 180 arrives (§9.1).
    let tx = alice.invite.as_ref().unwrap().0;
    alice.ep.cancel(now, tx).unwrap();
    run(
        &mut net,
        &mut alice,
        &mut bob,
        start,
        &mut now,
        Duration::from_secs(60),
    );
    assert!(bob.log.contains(&"CANCELLED".to_owned()), "{:?}", bob.log);
    assert!(
        alice.log.contains(&"200 CANCEL".to_owned()),
        "{:?}",
        alice.log
    );
    assert!(
        alice.log.contains(&"487 INVITE".to_owned()),
        "{:?}",
        alice.log
    );
    let cancel_at = net
        .log
        .iter()
        .position(|l| l.contains("CANCEL sip"))
        .unwrap();
    let ringing_at = net
        .log
        .iter()
        .position(|l| l.contains("180 Ringing"))
        .unwrap();
    assert!(
        cancel_at > ringing_at,
        "CANCEL waits for a provisional response"
    );
}

#[test]
fn rfc3261_9_1_cancelling_again_sends_no_second_cancel() {
    let start = Instant::now();
    let mut now = start;
    let mut net = Network::new(4);
    let mut alice = Agent::new("alice", 5060, 1, Answer::After(Duration::ZERO));
    let mut bob = Agent::new("bob", 5062, 2, Answer::Ring);
    alice.call(now, &bob);
    let tx = alice.invite.as_ref().unwrap().0;
    // Once before the 180, and three times after it, as an impatient user
    // or a loop would.
    alice.ep.cancel(now, tx).unwrap();
    run(
        &mut net,
        &mut alice,
        &mut bob,
        start,
        &mut now,
        Duration::from_millis(100),
    );
    for _ in 0..3 {
        alice.ep.cancel(now, tx).unwrap();
    }
    run(
        &mut net,
        &mut alice,
        &mut bob,
        start,
        &mut now,
        Duration::from_secs(60),
    );
    assert!(
        alice.log.contains(&"487 INVITE".to_owned()),
        "{:?}",
        alice.log
    );
    let cancels = net.log.iter().filter(|l| l.contains("CANCEL sip")).count();
    assert_eq!(cancels, 1, "{:#?}", net.log);
}

#[test]
fn rfc3261_9_1_cancel_racing_the_200_leaves_an_acked_call() {
    let start = Instant::now();
    let mut now = start;
    let mut net = Network::new(5);
    let mut alice = Agent::new("alice", 5060, 1, Answer::After(Duration::ZERO));
    // Bob answers 60 ms after ringing; Alice cancels when the 180 arrives,
    // so CANCEL and 200 cross in the network.
    let mut bob = Agent::new("bob", 5062, 2, Answer::After(Duration::from_millis(30)));
    alice.call(now, &bob);
    let tx = alice.invite.as_ref().unwrap().0;
    alice.ep.cancel(now, tx).unwrap();
    run(
        &mut net,
        &mut alice,
        &mut bob,
        start,
        &mut now,
        Duration::from_secs(60),
    );
    // The 200 won: Alice has a dialog, acknowledged, and can end it with BYE.
    assert!(
        alice.log.contains(&"200 INVITE".to_owned()),
        "{:?}\n{:#?}",
        alice.log,
        net.log
    );
    assert!(bob.responder.as_ref().unwrap().is_acked());
    alice.hang_up(now, bob.addr);
    run(
        &mut net,
        &mut alice,
        &mut bob,
        start,
        &mut now,
        Duration::from_secs(200),
    );
    assert!(alice.log.contains(&"200 BYE".to_owned()));
}

#[test]
fn rfc3261_14_1_reinvite_glare_backs_off_and_both_complete() {
    let start = Instant::now();
    let mut now = start;
    let mut net = Network::new(6);
    let (mut alice, mut bob) = {
        let mut a = Agent::new("alice", 5060, 1, Answer::After(Duration::ZERO));
        let mut b = Agent::new("bob", 5062, 2, Answer::After(Duration::ZERO));
        a.call(now, &b);
        run(
            &mut net,
            &mut a,
            &mut b,
            start,
            &mut now,
            Duration::from_secs(40),
        );
        (a, b)
    };
    assert_eq!(alice.dialogs.len(), 1);
    assert_eq!(bob.dialogs.len(), 1);
    // Both re-INVITE at the same instant.
    alice.reinvite(now, bob.addr);
    bob.reinvite(now, alice.addr);
    let glare_start = now;
    run(
        &mut net,
        &mut alice,
        &mut bob,
        start,
        &mut now,
        Duration::from_secs(300),
    );
    for agent in [&alice, &bob] {
        assert!(
            agent.log.iter().any(|l| l.starts_with("491 INVITE")),
            "{}: {:?}",
            agent.name,
            agent.log
        );
        assert!(
            agent.log.iter().any(|l| l == "200 INVITE"),
            "{}: {:?}",
            agent.name,
            agent.log
        );
    }
    // The Call-ID owner waits 2.1-4 s, the other 0-2 s, so they do not collide again.
    let retry = |agent: &Agent| -> u128 {
        agent
            .log
            .iter()
            .find_map(|l| {
                l.strip_prefix("glare, retry in ")?
                    .strip_suffix(" ms")?
                    .parse()
                    .ok()
            })
            .unwrap()
    };
    assert!((2100..=4000).contains(&retry(&alice)));
    assert!(retry(&bob) <= 2000);
    assert!(now - glare_start < Duration::from_secs(40));
}

#[test]
fn rfc3261_22_register_is_retried_after_401() {
    let start = Instant::now();
    let mut now = start;
    let mut net = Network::new(7);
    let mut alice = Agent::new("alice", 5060, 1, Answer::After(Duration::ZERO));
    let mut registrar = Agent::new("registrar", 5070, 2, Answer::Busy);
    let mut rng = StdRng::seed_from_u64(9);
    registrar.verifier = Some(DigestVerifier::new(
        ChallengeKind::Server,
        "example.com",
        &mut rng,
    ));
    alice.client = Some(DigestClient::new("alice", "s3cret"));
    alice.register(now, registrar.addr, 1, "reg-call-1", "rt1");
    run(
        &mut net,
        &mut alice,
        &mut registrar,
        start,
        &mut now,
        Duration::from_secs(60),
    );
    assert_eq!(
        alice
            .log
            .iter()
            .filter(|l| l.ends_with("REGISTER"))
            .cloned()
            .collect::<Vec<_>>(),
        vec!["401 REGISTER", "200 REGISTER"]
    );

    // A wrong password: the second 401 is final.
    let mut mallory = Agent::new("alice", 5064, 3, Answer::Busy);
    mallory.client = Some(DigestClient::new("alice", "guess"));
    mallory.register(now, registrar.addr, 1, "reg-call-2", "mt1");
    run(
        &mut net,
        &mut mallory,
        &mut registrar,
        start,
        &mut now,
        Duration::from_secs(200),
    );
    assert!(
        mallory.log.iter().any(|l| l.starts_with("auth failed")),
        "{:?}",
        mallory.log
    );
    assert!(!mallory.log.contains(&"200 REGISTER".to_owned()));
}
