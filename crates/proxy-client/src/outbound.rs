//! SIP outbound (RFC 5626) flows as a sans-IO state machine.
//!
//! A [`FlowManager`] keeps `flows` registrations alive, each with its own
//! `reg-id` over its own connection (a *flow*) to one proxy of the
//! outbound-proxy set. It decides when to connect, where to (fail-over to
//! the next proxy), when to ping and when a flow is dead; it waits between
//! failed attempts as §4.5 says. It opens no socket and sends no REGISTER:
//! it asks the driver to through [`FlowAction`]s and is told the outcome.
//!
//! ```
//! use std::time::Instant;
//! use proxy_client::outbound::{FlowAction, FlowManager, OutboundConfig, ProxyTarget};
//! use sip_core::endpoint::Transport;
//! use rand::{SeedableRng, rngs::StdRng};
//!
//! let proxies = vec![
//!     ProxyTarget::new(Transport::Tls, "192.0.2.10:5061".parse().unwrap()),
//!     ProxyTarget::new(Transport::Tls, "192.0.2.11:5061".parse().unwrap()),
//! ];
//! let mut flows = FlowManager::new(OutboundConfig::new(proxies), StdRng::seed_from_u64(7)).unwrap();
//! let now = Instant::now();
//! flows.start(now);
//! let Some(FlowAction::Connect { flow, proxy: 0, .. }) = flows.poll_action() else { panic!() };
//! flows.handle_connect_failed(now, flow);                // first proxy dead
//! assert_eq!(flows.poll_action(), Some(FlowAction::Close { flow }));
//! assert!(matches!(flows.poll_action(), Some(FlowAction::FlowFailed { .. })));
//! assert!(matches!(flows.poll_action(), Some(FlowAction::Connect { proxy: 1, .. }))); // next proxy at once
//! ```
//!
//! ## The rules
//!
//! - Flow `k` has `reg-id` `k` (1-based). Each flow takes the first proxy, in
//!   the configured order, that no other flow uses and that is not backing
//!   off; with none left it waits for the earliest to become eligible.
//! - A flow is *up* once its REGISTER succeeded. Then keep-alives run: every
//!   80-100 % of the Flow-Timer the registrar returned (else of 120 s on
//!   streams, 30 s on UDP) a CRLF ping (a STUN Binding request on UDP); no
//!   pong within 10 s means the flow failed (§4.4.1).
//! - A flow that was up and fails is replaced at once, on the same proxy if
//!   it is eligible. A failure to *form* a flow (connect, TLS, REGISTER,
//!   or no REGISTER answer within the setup timeout) counts against the
//!   proxy: it is not tried again for `min(max, base * 2^failures)` times a
//!   random 50-100 %, where `base` is 30 s when no flow is up and 90 s
//!   otherwise, `max` 1800 s (§4.5). A 503 Retry-After can only lengthen
//!   the wait. Success resets the count. But when flows fail within
//!   `min_uptime` (30 s) of their registration twice or more in a row, the
//!   second counts as one failure to form a flow, the third as two, and so
//!   on: a relay that closes each connection right after the 200 is not
//!   sent REGISTERs in a loop.
//! - Recovery window: for 30 s after a flow that was up fails, a *connect*
//!   to the same proxy that is refused or unreachable does not count as a
//!   failure while no other proxy is eligible; the connect is tried again
//!   after 0.5, 1, 2, 4, 4 ... s (each times a random 50-100 %). A relay
//!   that restarts refuses connections for a few seconds; without this the
//!   first refused reconnect would cost 30-60 s of back-off. No REGISTER
//!   reaches the registrar during these retries, so the §4.5 wait, which
//!   protects it from registration storms, still governs every REGISTER
//!   failure, and the jitter spreads a relay's clients over its restart.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;
use sip_core::endpoint::Transport;
use tracing::debug;

use crate::stun::{Class, Method, StunMessage, TransactionId};

/// A proxy of the outbound-proxy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTarget {
    /// The transport of the flow.
    pub transport: Transport,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The name its TLS certificate must carry (TLS, WSS); `None` verifies the IP.
    pub server_name: Option<String>,
}

impl ProxyTarget {
    /// A proxy without a TLS server name.
    #[must_use]
    pub fn new(transport: Transport, addr: SocketAddr) -> ProxyTarget {
        ProxyTarget {
            transport,
            addr,
            server_name: None,
        }
    }

    /// Sets the TLS server name.
    #[must_use]
    pub fn with_server_name(mut self, name: &str) -> ProxyTarget {
        self.server_name = Some(name.to_owned());
        self
    }
}

/// The waits of §4.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Base time when every flow has failed (default 30 s).
    pub all_failed_base: Duration,
    /// Base time while some flow is up (default 90 s).
    pub some_up_base: Duration,
    /// Upper bound (default 1800 s).
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            all_failed_base: Duration::from_secs(30),
            some_up_base: Duration::from_secs(90),
            max: Duration::from_secs(1800),
        }
    }
}

impl BackoffConfig {
    /// The upper-bound wait `W = min(max, base * 2^failures)`.
    #[must_use]
    pub fn upper_bound(&self, all_failed: bool, failures: u32) -> Duration {
        let base = if all_failed {
            self.all_failed_base
        } else {
            self.some_up_base
        };
        base.saturating_mul(1u32 << failures.min(20)).min(self.max)
    }
}

/// The recovery window after a flow that was up failed (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long after the failure refused connects are retried without
    /// counting (default 30 s; zero turns the window off).
    pub window: Duration,
    /// The first retry's upper bound (default 500 ms); it doubles per retry.
    pub first_retry: Duration,
    /// The largest upper bound between retries (default 4 s).
    pub max_retry: Duration,
    /// A flow that fails sooner than this after its registration succeeded
    /// is *short-lived* (default 30 s). The first is replaced at once like
    /// any flow that was up; each further one in a row counts as a failure
    /// to form a flow, so a relay that closes every connection right after
    /// the 200 is not sent REGISTERs in a loop.
    pub min_uptime: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            window: Duration::from_secs(30),
            first_retry: Duration::from_millis(500),
            max_retry: Duration::from_secs(4),
            min_uptime: Duration::from_secs(30),
        }
    }
}

/// Keep-alive timing (§4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAliveConfig {
    /// Interval on streams without a Flow-Timer (default 120 s; pings go
    /// out after 80-100 % of it).
    pub stream_interval: Duration,
    /// Interval on UDP without a Flow-Timer (default 30 s).
    pub udp_interval: Duration,
    /// A flow whose pong is this late has failed (default 10 s).
    pub pong_timeout: Duration,
}

impl Default for KeepAliveConfig {
    fn default() -> Self {
        KeepAliveConfig {
            stream_interval: Duration::from_secs(120),
            udp_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
        }
    }
}

/// How to run the flows.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// The outbound-proxy set, in order of preference.
    pub proxies: Vec<ProxyTarget>,
    /// Simultaneous flows (reg-ids 1..=flows); at most one per proxy. Default 1.
    pub flows: usize,
    /// Back-off waits.
    pub backoff: BackoffConfig,
    /// Reconnects after a flow that was up failed.
    pub recovery: RecoveryConfig,
    /// Keep-alives.
    pub keepalive: KeepAliveConfig,
    /// Connecting and registering must finish within this (default 40 s,
    /// above the 32 s of a REGISTER's Timer F).
    pub setup_timeout: Duration,
}

impl OutboundConfig {
    /// One flow over the given proxies, with the RFC's defaults.
    #[must_use]
    pub fn new(proxies: Vec<ProxyTarget>) -> OutboundConfig {
        OutboundConfig {
            proxies,
            flows: 1,
            backoff: BackoffConfig::default(),
            recovery: RecoveryConfig::default(),
            keepalive: KeepAliveConfig::default(),
            setup_timeout: Duration::from_secs(40),
        }
    }
}

/// A misconfiguration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// No proxy given.
    #[error("the outbound-proxy set is empty")]
    NoProxies,
    /// More flows than proxies, or none.
    #[error("{flows} flows need between 1 and {proxies} (one per proxy)")]
    BadFlowCount {
        /// Flows asked for.
        flows: usize,
        /// Proxies given.
        proxies: usize,
    },
}

/// One connection attempt. A new flow gets a new ID, so late news about an
/// old one is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u64);

/// Why a flow failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowFailure {
    /// The connection (or its TLS/WebSocket handshake) failed.
    ConnectFailed,
    /// The REGISTER failed (status, 408 for a timeout).
    RegistrationFailed {
        /// The final status.
        status: u16,
    },
    /// Connecting and registering took longer than the setup timeout.
    SetupTimeout,
    /// The connection closed.
    Closed,
    /// No pong within the pong timeout.
    PongTimeout,
    /// The STUN keep-alive saw our public address change (NAT rebinding, §4.4.2).
    MappedAddressChanged,
}

/// What the driver must do, or should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowAction {
    /// Open a connection to the proxy, then call
    /// [`FlowManager::handle_connected`] or [`FlowManager::handle_connect_failed`].
    Connect {
        /// The new flow.
        flow: FlowId,
        /// Its reg-id.
        reg_id: u32,
        /// Index in the proxy set.
        proxy: usize,
        /// The proxy.
        target: ProxyTarget,
    },
    /// Send (or refresh) the REGISTER with this reg-id on the flow, then call
    /// [`FlowManager::handle_registered`] or
    /// [`FlowManager::handle_registration_failed`].
    Register {
        /// The flow.
        flow: FlowId,
        /// Its reg-id.
        reg_id: u32,
    },
    /// Send these bytes on the flow as a keep-alive ping: a double CRLF on a
    /// stream (a WebSocket ping frame does the same job), a STUN Binding
    /// request on UDP. The answer goes to [`FlowManager::handle_pong`] or
    /// [`FlowManager::handle_stun`].
    SendKeepAlive {
        /// The flow.
        flow: FlowId,
        /// The ping.
        payload: Vec<u8>,
    },
    /// Close the flow's connection (if it is still open).
    Close {
        /// The flow.
        flow: FlowId,
    },
    /// The flow is registered and kept alive.
    FlowUp {
        /// The flow.
        flow: FlowId,
        /// Its reg-id.
        reg_id: u32,
        /// Index in the proxy set.
        proxy: usize,
    },
    /// The flow failed; a replacement follows (a Connect or a BackingOff).
    FlowFailed {
        /// The flow.
        flow: FlowId,
        /// Its reg-id.
        reg_id: u32,
        /// Index in the proxy set.
        proxy: usize,
        /// Why.
        reason: FlowFailure,
    },
    /// No proxy is eligible for this reg-id until then.
    BackingOff {
        /// The reg-id.
        reg_id: u32,
        /// When the next attempt goes out.
        until: Instant,
    },
}

/// Where one reg-id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowState {
    /// Not started or stopped.
    Idle,
    /// Connecting to the proxy.
    Connecting,
    /// Connected, REGISTER out.
    Registering,
    /// Registered and kept alive.
    Up,
    /// Waiting for a proxy to become eligible.
    BackingOff {
        /// Until then.
        until: Instant,
    },
}

/// One reg-id's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowStatus {
    /// The reg-id.
    pub reg_id: u32,
    /// Its state.
    pub state: FlowState,
    /// The current flow, if any.
    pub flow: Option<FlowId>,
    /// The proxy it uses, if any.
    pub proxy: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Idle,
    Connecting {
        flow: FlowId,
        proxy: usize,
        deadline: Instant,
    },
    Registering {
        flow: FlowId,
        proxy: usize,
        deadline: Instant,
    },
    Up {
        flow: FlowId,
        proxy: usize,
        interval: Duration,
        next_ping: Instant,
        pong_due: Option<Instant>,
        stun: Option<TransactionId>,
        mapped: Option<SocketAddr>,
        /// When the registration succeeded (see [`RecoveryConfig::min_uptime`]).
        since: Instant,
    },
    Waiting {
        until: Instant,
    },
}

/// A proxy inside its recovery window: a flow through it was up and failed.
#[derive(Debug, Clone, Copy)]
struct Recovery {
    until: Instant,
    retries: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct ProxyHealth {
    failures: u32,
    /// Flows in a row that failed within `min_uptime` of coming up.
    short_lived: u32,
    not_before: Option<Instant>,
    recovery: Option<Recovery>,
}

/// The flow state machine. See the module docs.
#[derive(Debug)]
pub struct FlowManager<R> {
    config: OutboundConfig,
    rng: R,
    slots: Vec<Slot>,
    proxies: Vec<ProxyHealth>,
    next_flow: u64,
    actions: VecDeque<FlowAction>,
}

impl<R: RngCore> FlowManager<R> {
    /// A manager with nothing started. Jitter and STUN transaction IDs come
    /// from `rng`.
    ///
    /// # Errors
    ///
    /// [`OutboundError`] for an empty proxy set or a bad flow count.
    pub fn new(config: OutboundConfig, rng: R) -> Result<FlowManager<R>, OutboundError> {
        if config.proxies.is_empty() {
            return Err(OutboundError::NoProxies);
        }
        if config.flows == 0 || config.flows > config.proxies.len() {
            return Err(OutboundError::BadFlowCount {
                flows: config.flows,
                proxies: config.proxies.len(),
            });
        }
        Ok(FlowManager {
            slots: vec![Slot::Idle; config.flows],
            proxies: vec![ProxyHealth::default(); config.proxies.len()],
            config,
            rng,
            next_flow: 1,
            actions: VecDeque::new(),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    /// Starts every idle reg-id.
    pub fn start(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            if matches!(self.slots[i], Slot::Idle) {
                self.try_connect(now, i);
            }
        }
    }

    /// Stops everything: every open flow is closed, nothing is retried.
    /// (Un-register before, if the bindings should go.)
    pub fn stop(&mut self) {
        for i in 0..self.slots.len() {
            if let Some(flow) = self.flow_of(i) {
                self.actions.push_back(FlowAction::Close { flow });
            }
            self.slots[i] = Slot::Idle;
        }
        for health in &mut self.proxies {
            health.recovery = None;
        }
    }

    /// The connection for `flow` is open: the REGISTER goes next.
    pub fn handle_connected(&mut self, now: Instant, flow: FlowId) {
        let Some(i) = self.slot_of(flow) else { return };
        if let Slot::Connecting {
            proxy, deadline, ..
        } = self.slots[i]
        {
            self.slots[i] = Slot::Registering {
                flow,
                proxy,
                deadline,
            };
            let reg_id = reg_id(i);
            self.actions
                .push_back(FlowAction::Register { flow, reg_id });
        }
        let _ = now;
    }

    /// The connection for `flow` could not be opened.
    pub fn handle_connect_failed(&mut self, now: Instant, flow: FlowId) {
        if let Some(i) = self.slot_of(flow) {
            self.fail(now, i, FlowFailure::ConnectFailed, None);
        }
    }

    /// The REGISTER on `flow` succeeded, with the Flow-Timer the registrar
    /// returned (if any). Also call it after each refresh.
    pub fn handle_registered(&mut self, now: Instant, flow: FlowId, flow_timer: Option<Duration>) {
        let Some(i) = self.slot_of(flow) else { return };
        match self.slots[i] {
            Slot::Registering { proxy, .. } => {
                // Short-lived flows are counted until one stays up.
                self.proxies[proxy] = ProxyHealth {
                    short_lived: self.proxies[proxy].short_lived,
                    ..ProxyHealth::default()
                };
                let interval = self.keepalive_interval(proxy, flow_timer);
                let next_ping = now + self.jitter(interval, 0.8);
                self.slots[i] = Slot::Up {
                    flow,
                    proxy,
                    interval,
                    next_ping,
                    pong_due: None,
                    stun: None,
                    mapped: None,
                    since: now,
                };
                debug!(reg_id = reg_id(i), proxy, "outbound flow up");
                self.actions.push_back(FlowAction::FlowUp {
                    flow,
                    reg_id: reg_id(i),
                    proxy,
                });
            }
            Slot::Up { proxy, .. } => {
                let new = self.keepalive_interval(proxy, flow_timer);
                if let Slot::Up { interval, .. } = &mut self.slots[i] {
                    *interval = new;
                }
            }
            _ => {}
        }
    }

    /// The REGISTER on `flow` failed with `status` (408 for no answer);
    /// `retry_after` from a 503 can lengthen the wait.
    pub fn handle_registration_failed(
        &mut self,
        now: Instant,
        flow: FlowId,
        status: u16,
        retry_after: Option<Duration>,
    ) {
        if let Some(i) = self.slot_of(flow) {
            self.fail(
                now,
                i,
                FlowFailure::RegistrationFailed { status },
                retry_after,
            );
        }
    }

    /// The connection of `flow` closed.
    pub fn handle_closed(&mut self, now: Instant, flow: FlowId) {
        if let Some(i) = self.slot_of(flow) {
            self.fail(now, i, FlowFailure::Closed, None);
        }
    }

    /// A pong (CRLF, WebSocket pong) arrived on `flow`.
    pub fn handle_pong(&mut self, now: Instant, flow: FlowId) {
        let Some(i) = self.slot_of(flow) else { return };
        if let Slot::Up {
            interval,
            ref mut pong_due,
            ref mut next_ping,
            ref mut stun,
            ..
        } = self.slots[i]
            && pong_due.is_some()
        {
            *pong_due = None;
            *stun = None;
            let wait = jitter(&mut self.rng, interval, 0.8);
            *next_ping = now + wait;
        }
    }

    /// A STUN message arrived on the UDP `flow`: a Binding response to our
    /// keep-alive is its pong; a changed XOR-MAPPED-ADDRESS fails the flow.
    /// Returns false when `data` is not a response to our keep-alive.
    pub fn handle_stun(&mut self, now: Instant, flow: FlowId, data: &[u8]) -> bool {
        let Some(i) = self.slot_of(flow) else {
            return false;
        };
        let Ok(message) = StunMessage::decode(data) else {
            return false;
        };
        let Slot::Up {
            stun, mapped: seen, ..
        } = self.slots[i]
        else {
            return false;
        };
        if stun != Some(message.transaction_id)
            || message.method != Method::BINDING
            || message.class != Class::Success
        {
            return false;
        }
        let mapped = message.mapped_address();
        if let (Some(before), Some(now_mapped)) = (seen, mapped)
            && before != now_mapped
        {
            self.fail(now, i, FlowFailure::MappedAddressChanged, None);
            return true;
        }
        if let Slot::Up { mapped: m, .. } = &mut self.slots[i] {
            *m = mapped.or(*m);
        }
        self.handle_pong(now, flow);
        true
    }

    /// The app was woken by a push notification (or the network came
    /// back): register again on every flow that is up, and try the others
    /// now instead of waiting out their back-off.
    pub fn wake(&mut self, now: Instant) {
        for p in &mut self.proxies {
            p.not_before = None;
        }
        for i in 0..self.slots.len() {
            match &mut self.slots[i] {
                Slot::Up {
                    flow,
                    next_ping,
                    pong_due,
                    ..
                } => {
                    // The connection may have died while the device slept
                    // (a NAT binding expired, no FIN came): a keep-alive
                    // now finds out within the pong timeout, where the
                    // REGISTER alone waits for its transaction to time out
                    // (32 s), longer than a relay holds the pushed call.
                    if pong_due.is_none() {
                        *next_ping = now;
                    }
                    let flow = *flow;
                    self.actions.push_back(FlowAction::Register {
                        flow,
                        reg_id: reg_id(i),
                    });
                }
                Slot::Waiting { .. } | Slot::Idle => self.try_connect(now, i),
                _ => {}
            }
        }
    }

    /// Register again on every flow that is up (the Contact changed, e.g. a
    /// new push token).
    pub fn reregister(&mut self) {
        for i in 0..self.slots.len() {
            if let Slot::Up { flow, .. } = self.slots[i] {
                self.actions.push_back(FlowAction::Register {
                    flow,
                    reg_id: reg_id(i),
                });
            }
        }
    }

    /// Pings, pong and setup timeouts, and the end of back-offs, as due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            match self.slots[i] {
                Slot::Connecting { deadline, .. } | Slot::Registering { deadline, .. }
                    if deadline <= now =>
                {
                    self.fail(now, i, FlowFailure::SetupTimeout, None);
                }
                Slot::Up {
                    pong_due: Some(due),
                    ..
                } if due <= now => {
                    self.fail(now, i, FlowFailure::PongTimeout, None);
                }
                Slot::Up {
                    flow,
                    proxy,
                    next_ping,
                    pong_due: None,
                    ..
                } if next_ping <= now => {
                    let udp = self.config.proxies[proxy].transport == Transport::Udp;
                    let (payload, stun) = if udp {
                        let id = TransactionId::random(&mut self.rng);
                        let ping = StunMessage::new(Class::Request, Method::BINDING, id)
                            .encode(None, true);
                        (ping, Some(id))
                    } else {
                        (b"\r\n\r\n".to_vec(), None)
                    };
                    let timeout = self.config.keepalive.pong_timeout;
                    if let Slot::Up {
                        pong_due, stun: s, ..
                    } = &mut self.slots[i]
                    {
                        *pong_due = Some(now + timeout);
                        *s = stun;
                    }
                    self.actions
                        .push_back(FlowAction::SendKeepAlive { flow, payload });
                }
                Slot::Waiting { until } if until <= now => self.try_connect(now, i),
                _ => {}
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match *s {
                Slot::Connecting { deadline, .. } | Slot::Registering { deadline, .. } => {
                    Some(deadline)
                }
                Slot::Up {
                    pong_due: Some(due),
                    ..
                } => Some(due),
                Slot::Up { next_ping, .. } => Some(next_ping),
                Slot::Waiting { until } => Some(until),
                Slot::Idle => None,
            })
            .min()
    }

    /// The next thing to do.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<FlowAction> {
        self.actions.pop_front()
    }

    /// Every reg-id's status.
    #[must_use]
    pub fn status(&self) -> Vec<FlowStatus> {
        (0..self.slots.len())
            .map(|i| {
                let (state, proxy) = match self.slots[i] {
                    Slot::Idle => (FlowState::Idle, None),
                    Slot::Connecting { proxy, .. } => (FlowState::Connecting, Some(proxy)),
                    Slot::Registering { proxy, .. } => (FlowState::Registering, Some(proxy)),
                    Slot::Up { proxy, .. } => (FlowState::Up, Some(proxy)),
                    Slot::Waiting { until } => (FlowState::BackingOff { until }, None),
                };
                FlowStatus {
                    reg_id: reg_id(i),
                    state,
                    flow: self.flow_of(i),
                    proxy,
                }
            })
            .collect()
    }

    /// Whether at least one flow is up.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.slots.iter().any(|s| matches!(s, Slot::Up { .. }))
    }

    /// The reg-id and proxy of a current flow.
    #[must_use]
    pub fn flow(&self, flow: FlowId) -> Option<(u32, usize)> {
        let i = self.slot_of(flow)?;
        let (Slot::Connecting { proxy, .. }
        | Slot::Registering { proxy, .. }
        | Slot::Up { proxy, .. }) = self.slots[i]
        else {
            return None;
        };
        Some((reg_id(i), proxy))
    }

    /// Consecutive failures to form a flow to each proxy.
    #[must_use]
    pub fn proxy_failures(&self) -> Vec<u32> {
        self.proxies.iter().map(|p| p.failures).collect()
    }

    fn keepalive_interval(&self, proxy: usize, flow_timer: Option<Duration>) -> Duration {
        match flow_timer {
            Some(timer) => timer.min(MAX_FLOW_TIMER),
            None if self.config.proxies[proxy].transport == Transport::Udp => {
                self.config.keepalive.udp_interval
            }
            None => self.config.keepalive.stream_interval,
        }
    }

    fn jitter(&mut self, value: Duration, low: f64) -> Duration {
        jitter(&mut self.rng, value, low)
    }

    fn flow_of(&self, i: usize) -> Option<FlowId> {
        match self.slots[i] {
            Slot::Connecting { flow, .. }
            | Slot::Registering { flow, .. }
            | Slot::Up { flow, .. } => Some(flow),
            _ => None,
        }
    }

    fn slot_of(&self, flow: FlowId) -> Option<usize> {
        (0..self.slots.len()).find(|&i| self.flow_of(i) == Some(flow))
    }

    fn proxy_of(&self, i: usize) -> Option<usize> {
        match self.slots[i] {
            Slot::Connecting { proxy, .. }
            | Slot::Registering { proxy, .. }
            | Slot::Up { proxy, .. } => Some(proxy),
            _ => None,
        }
    }

    fn fail(&mut self, now: Instant, i: usize, reason: FlowFailure, retry_after: Option<Duration>) {
        let (Some(flow), Some(proxy)) = (self.flow_of(i), self.proxy_of(i)) else {
            return;
        };
        // The second short-lived flow in a row, and each after it, counts
        // as a failure to form one: 1, 2, 3 ... failures.
        let mut flapping = 0;
        let was_up = match self.slots[i] {
            Slot::Up { since, .. } => {
                let health = &mut self.proxies[proxy];
                if now.saturating_duration_since(since) < self.config.recovery.min_uptime {
                    health.short_lived = health.short_lived.saturating_add(1);
                    flapping = health.short_lived - 1;
                } else {
                    health.short_lived = 0;
                }
                flapping == 0
            }
            _ => false,
        };
        self.slots[i] = Slot::Idle;
        debug!(
            reg_id = reg_id(i),
            proxy,
            ?reason,
            was_up,
            "outbound flow failed"
        );
        self.actions.push_back(FlowAction::Close { flow });
        self.actions.push_back(FlowAction::FlowFailed {
            flow,
            reg_id: reg_id(i),
            proxy,
            reason,
        });
        if was_up {
            let window = self.config.recovery.window;
            self.proxies[proxy].recovery = (!window.is_zero()).then_some(Recovery {
                until: now + window,
                retries: 0,
            });
        } else if reason == FlowFailure::ConnectFailed && self.retry_in_window(now, i, proxy) {
            return;
        } else {
            // A failure to form a flow counts against the proxy (§4.5).
            let all_failed = !self.is_up();
            let health = &mut self.proxies[proxy];
            health.failures = if flapping > 0 {
                flapping
            } else {
                health.failures.saturating_add(1)
            };
            let failures = health.failures;
            let bound = self.config.backoff.upper_bound(all_failed, failures);
            let mut wait = jitter(&mut self.rng, bound, 0.5);
            // A Retry-After can lengthen the wait up to the back-off's
            // longest, never beyond: a bad value must not end the flow.
            if let Some(r) = retry_after {
                wait = wait.max(r.min(self.config.backoff.max));
            }
            self.proxies[proxy].not_before = Some(now + wait);
        }
        self.try_connect(now, i);
    }

    /// Inside the recovery window with no other proxy to go to: wait a
    /// short, growing, jittered step and connect to the same proxy again.
    fn retry_in_window(&mut self, now: Instant, i: usize, proxy: usize) -> bool {
        let Some(recovery) = self.proxies[proxy].recovery else {
            return false;
        };
        if now >= recovery.until || self.other_proxy_eligible(now, i, proxy) {
            return false;
        }
        let recovery_config = self.config.recovery;
        let bound = recovery_config
            .first_retry
            .saturating_mul(1u32 << recovery.retries.min(20))
            .min(recovery_config.max_retry);
        let until = now + self.jitter(bound, 0.5);
        self.proxies[proxy].recovery = Some(Recovery {
            retries: recovery.retries.saturating_add(1),
            ..recovery
        });
        debug!(
            reg_id = reg_id(i),
            proxy, "connect refused in the recovery window"
        );
        self.slots[i] = Slot::Waiting { until };
        self.actions.push_back(FlowAction::BackingOff {
            reg_id: reg_id(i),
            until,
        });
        true
    }

    /// Whether a proxy other than `proxy`, unused by other reg-ids, may be
    /// tried now.
    fn other_proxy_eligible(&self, now: Instant, i: usize, proxy: usize) -> bool {
        (0..self.proxies.len())
            .filter(|&p| p != proxy)
            .filter(|&p| !(0..self.slots.len()).any(|j| j != i && self.proxy_of(j) == Some(p)))
            .any(|p| self.proxies[p].not_before.is_none_or(|t| t <= now))
    }

    fn try_connect(&mut self, now: Instant, i: usize) {
        let in_use: Vec<usize> = (0..self.slots.len())
            .filter(|&j| j != i)
            .filter_map(|j| self.proxy_of(j))
            .collect();
        let candidates = (0..self.proxies.len()).filter(|p| !in_use.contains(p));
        let mut earliest: Option<Instant> = None;
        for p in candidates {
            match self.proxies[p].not_before {
                Some(t) if t > now => earliest = Some(earliest.map_or(t, |e| e.min(t))),
                _ => {
                    let flow = FlowId(self.next_flow);
                    self.next_flow += 1;
                    self.slots[i] = Slot::Connecting {
                        flow,
                        proxy: p,
                        deadline: now + self.config.setup_timeout,
                    };
                    self.actions.push_back(FlowAction::Connect {
                        flow,
                        reg_id: reg_id(i),
                        proxy: p,
                        target: self.config.proxies[p].clone(),
                    });
                    return;
                }
            }
        }
        match earliest {
            Some(until) => {
                self.slots[i] = Slot::Waiting { until };
                self.actions.push_back(FlowAction::BackingOff {
                    reg_id: reg_id(i),
                    until,
                });
            }
            None => self.slots[i] = Slot::Idle,
        }
    }
}

fn reg_id(slot: usize) -> u32 {
    u32::try_from(slot + 1).unwrap_or(u32::MAX)
}

/// `value` times a uniform random fraction in `[low, 1]`.
fn jitter(rng: &mut impl RngCore, value: Duration, low: f64) -> Duration {
    let u = f64::from(rng.next_u32()) / f64::from(u32::MAX);
    value.mul_f64(low + (1.0 - low) * u)
}

/// The longest Flow-Timer taken: a day. A larger value from the network
/// would overflow the clock arithmetic of the keep-alive schedule.
pub const MAX_FLOW_TIMER: Duration = Duration::from_secs(86_400);

/// The Flow-Timer of a REGISTER response (§4.4.1, seconds), if it holds a
/// usable one, at most [`MAX_FLOW_TIMER`].
#[must_use]
pub fn flow_timer(response: &sip_core::Message) -> Option<Duration> {
    response
        .header("Flow-Timer")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map(|s| Duration::from_secs(s).min(MAX_FLOW_TIMER))
}

/// The Contact header parameters of an outbound registration (§4.2):
/// `;+sip.instance="<urn:uuid:…>";reg-id=N`, for
/// `RegistrationConfig::contact_params`.
#[must_use]
pub fn contact_params(instance: &crate::InstanceId, reg_id: u32) -> String {
    format!(";{};reg-id={reg_id}", instance.contact_param())
}

/// A Contact URI for a flow: `sip:USER@HOST:PORT;transport=T;ob`, followed by
/// `extra_uri_params` (the pn-* parameters of RFC 8599). The `ob` parameter
/// tells the proxy that we support outbound (§4.2.1 and §5.4). UDP has no
/// transport parameter.
#[must_use]
pub fn contact_uri(
    user: &str,
    local: SocketAddr,
    transport: Transport,
    extra_uri_params: &str,
) -> String {
    let transport = match transport {
        Transport::Udp => String::new(),
        t => format!(";transport={}", t.as_str().to_ascii_lowercase()),
    };
    format!("sip:{user}@{local}{transport};ob{extra_uri_params}")
}
