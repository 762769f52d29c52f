//! A TURN client (RFC 8656) as a sans-IO state machine: one allocation on
//! one server, long-term credentials (static or REST-style ephemeral),
//! refreshes, permissions, channels, Send/Data indications and ChannelData.
//!
//! The client never touches a socket or a clock. Feed it what the server
//! sent with [`TurnClient::handle_input`], the time with
//! [`TurnClient::handle_timeout`], and drain [`TurnClient::poll_transmit`]
//! and [`TurnClient::poll_event`] after every call.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use proxy_client::turn::{TurnClient, TurnConfig, TurnCredentials};
//! use rand::{SeedableRng, rngs::StdRng};
//!
//! let server = "127.0.0.1:3478".parse().unwrap();
//! let config = TurnConfig::new(server, TurnCredentials::long_term("alice", "secret"));
//! let mut client = TurnClient::new(config, StdRng::seed_from_u64(1));
//! let now = Instant::now();
//! client.allocate(now).unwrap();
//! let first = client.poll_transmit().unwrap(); // Allocate without credentials
//! assert_eq!(first.destination, server);
//! // ... send it, feed the 401 back with handle_input, send the next one ...
//! assert_eq!(client.poll_timeout(), Some(now + Duration::from_millis(500))); // retransmit
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sip_core::Secret;
use tracing::{debug, trace};

use crate::stun::{
    Attribute, ChannelData, Class, IntegrityKey, Method, StunMessage, TransactionId,
};

/// The protocol number of UDP in REQUESTED-TRANSPORT.
const UDP_PROTOCOL: u8 = 17;
/// First and last channel number (RFC 8656 §12).
const FIRST_CHANNEL: u16 = 0x4000;
const LAST_CHANNEL: u16 = 0x4FFF;
/// How many times in a row a 438 may be answered before giving up.
const MAX_STALE_RETRIES: u32 = 3;

/// TURN credentials: a user name and the password the long-term key is made of.
#[derive(Clone)]
pub struct TurnCredentials {
    username: String,
    password: Secret,
}

impl TurnCredentials {
    /// A static long-term user (coturn `user=NAME:PASSWORD`).
    #[must_use]
    pub fn long_term(username: &str, password: &str) -> TurnCredentials {
        TurnCredentials {
            username: username.to_owned(),
            password: Secret::new(password),
        }
    }

    /// REST-style ephemeral credentials (coturn `use-auth-secret`, the
    /// "TURN REST API" draft): the user name is `EXPIRY:USER` with `EXPIRY`
    /// in seconds since the Unix epoch, the password
    /// `base64(HMAC-SHA1(secret, username))`. The caller reads the wall clock:
    /// `expires_at_unix` is usually now plus the credential's validity.
    #[must_use]
    pub fn rest(shared_secret: &str, user: &str, expires_at_unix: u64) -> TurnCredentials {
        let username = if user.is_empty() {
            expires_at_unix.to_string()
        } else {
            format!("{expires_at_unix}:{user}")
        };
        let password = match Hmac::<Sha1>::new_from_slice(shared_secret.as_bytes()) {
            Ok(mut mac) => {
                mac.update(username.as_bytes());
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        };
        TurnCredentials {
            username,
            password: Secret::new(password),
        }
    }

    /// The user name sent in USERNAME.
    #[must_use]
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password (the REST one is derived).
    #[must_use]
    pub fn password(&self) -> &Secret {
        &self.password
    }
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// How to run one allocation. [`TurnConfig::new`] has the RFC defaults.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// The TURN server.
    pub server: SocketAddr,
    /// Credentials.
    pub credentials: TurnCredentials,
    /// Requested allocation lifetime (default 600 s, RFC 8656 §3.2).
    pub lifetime: Duration,
    /// Bind a channel to each peer and send ChannelData (4 bytes of overhead)
    /// instead of Send indications (36 bytes and more). Default on.
    pub use_channels: bool,
    /// The client-server transport is reliable (TCP, TLS): no retransmissions
    /// and ChannelData padded to 4 bytes. Default off (UDP).
    pub reliable: bool,
    /// Initial retransmission timeout (RFC 8489 §6.2.1: 500 ms).
    pub rto: Duration,
    /// Transmissions of a request over UDP (Rc, default 7).
    pub max_transmits: u32,
    /// Wait after the last transmission, as a multiple of `rto` (Rm, default 16).
    pub last_wait_factor: u32,
    /// Refresh permissions and channels this often (default 240 s; they
    /// last 300 s and 600 s).
    pub permission_refresh: Duration,
    /// Datagrams held per peer while its permission or channel is being set
    /// up (default 32); older ones are dropped.
    pub queue_limit: usize,
    /// SOFTWARE attribute, if any.
    pub software: Option<String>,
}

impl TurnConfig {
    /// A configuration with the defaults described on each field.
    #[must_use]
    pub fn new(server: SocketAddr, credentials: TurnCredentials) -> TurnConfig {
        TurnConfig {
            server,
            credentials,
            lifetime: Duration::from_secs(600),
            use_channels: true,
            reliable: false,
            rto: Duration::from_millis(500),
            max_transmits: 7,
            last_wait_factor: 16,
            permission_refresh: Duration::from_secs(240),
            queue_limit: 32,
            software: None,
        }
    }
}

/// Why the allocation (or one of its operations) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// There is no allocation (not yet, or not any more).
    #[error("no TURN allocation")]
    NotAllocated,
    /// [`TurnClient::allocate`] was called twice.
    #[error("an allocation exists or is being made")]
    AlreadyAllocating,
    /// The server refused the credentials (401 to an authenticated request).
    /// The message leaves the user name out (it is often the SIP user or
    /// extension); the field has it.
    #[error("TURN server refused the credentials in realm {realm:?}")]
    Unauthorized {
        /// The user name sent.
        username: String,
        /// The realm of the challenge.
        realm: String,
    },
    /// The server answered with an error other than 401 and 438.
    #[error("{method} rejected: {code} {reason}")]
    Rejected {
        /// The request's method.
        method: &'static str,
        /// The error code.
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// 438 Stale Nonce kept coming back.
    #[error("{method}: the server kept answering 438 Stale Nonce")]
    StaleNonceLoop {
        /// The request's method.
        method: &'static str,
    },
    /// No response after every retransmission (39.5 s by default).
    #[error("{method}: no response from the TURN server")]
    Timeout {
        /// The request's method.
        method: &'static str,
    },
    /// A success response lacked something it must carry.
    #[error("{method} response: {what}")]
    BadResponse {
        /// The request's method.
        method: &'static str,
        /// What was missing or wrong.
        what: &'static str,
    },
    /// The allocation ran out or the server no longer knows it (437).
    #[error("the allocation was lost")]
    AllocationLost,
    /// A peer of another address family than the relayed address.
    #[error("peer {peer} is not in the relayed address family ({relayed})")]
    FamilyMismatch {
        /// The peer.
        peer: SocketAddr,
        /// The relayed address.
        relayed: SocketAddr,
    },
    /// All 4096 channel numbers are in use.
    #[error("no channel number left")]
    NoChannelLeft,
    /// The connection to the TURN server (TCP, TLS) closed.
    #[error("the connection to the TURN server closed")]
    ConnectionLost,
    /// The datagram is larger than TURN can carry (65535 bytes).
    #[error("datagram of {0} bytes is too large")]
    TooLarge(usize),
    /// The permission or channel for this peer failed lately; it is asked
    /// for again after `retry_in`, and datagrams until then are dropped.
    #[error("the relay refused peer {peer} lately; next try in {} s", .retry_in.as_secs())]
    PeerBackingOff {
        /// The peer.
        peer: SocketAddr,
        /// How long until the next try.
        retry_in: Duration,
    },
}

/// Where the allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationState {
    /// Nothing asked yet.
    Idle,
    /// Allocate sent, waiting for the answer.
    Allocating,
    /// Allocated until `expires`.
    Allocated {
        /// The relayed transport address peers send to.
        relayed: SocketAddr,
        /// Our address as the server saw it.
        mapped: Option<SocketAddr>,
        /// When the allocation runs out without a refresh.
        expires: Instant,
    },
    /// Refresh with lifetime 0 sent.
    Closing,
    /// Deallocated, failed or expired.
    Closed,
}

/// What the client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnEvent {
    /// The allocation exists.
    Allocated {
        /// The relayed address to give peers (e.g. in SDP).
        relayed: SocketAddr,
        /// Our server-reflexive address.
        mapped: Option<SocketAddr>,
        /// The lifetime granted.
        lifetime: Duration,
    },
    /// A refresh succeeded.
    Refreshed {
        /// The lifetime granted.
        lifetime: Duration,
    },
    /// A permission for this peer address is installed (or refreshed).
    PermissionInstalled {
        /// The peer's IP.
        peer: IpAddr,
    },
    /// A channel is bound to the peer (permission included).
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// A permission or channel for a peer could not be set up; datagrams
    /// queued for it were dropped.
    PeerFailed {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        error: TurnError,
    },
    /// A datagram from a peer, through the relay.
    Data {
        /// The peer that sent it to the relayed address.
        peer: SocketAddr,
        /// The datagram.
        data: Vec<u8>,
    },
    /// The allocation failed or was lost; nothing more will be relayed.
    Failed(TurnError),
    /// The allocation was released (after [`TurnClient::close`]).
    Closed,
}

/// Bytes for the driver to send to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnTransmit {
    /// The server's address.
    pub destination: SocketAddr,
    /// A STUN message or a ChannelData frame.
    pub data: Vec<u8>,
}

/// Counters, for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnStatistics {
    /// Requests sent, retransmissions included.
    pub requests_sent: u64,
    /// Retransmissions.
    pub retransmissions: u64,
    /// Datagrams sent as ChannelData.
    pub channel_data_sent: u64,
    /// Datagrams sent in Send indications.
    pub send_indications_sent: u64,
    /// Datagrams received (Data indications and ChannelData).
    pub data_received: u64,
    /// Datagrams dropped: queue overflow, failed peer, unknown channel.
    pub dropped: u64,
    /// Input dropped: not from the server, malformed, failed integrity, no
    /// matching transaction.
    pub ignored_input: u64,
}

#[derive(Debug, Clone)]
enum Operation {
    Allocate,
    Refresh { lifetime: u32 },
    CreatePermission { peer: SocketAddr },
    ChannelBind { peer: SocketAddr, channel: u16 },
}

impl Operation {
    fn method(&self) -> Method {
        match self {
            Operation::Allocate => Method::ALLOCATE,
            Operation::Refresh { .. } => Method::REFRESH,
            Operation::CreatePermission { .. } => Method::CREATE_PERMISSION,
            Operation::ChannelBind { .. } => Method::CHANNEL_BIND,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Operation::Allocate => "Allocate",
            Operation::Refresh { .. } => "Refresh",
            Operation::CreatePermission { .. } => "CreatePermission",
            Operation::ChannelBind { .. } => "ChannelBind",
        }
    }
}

#[derive(Debug)]
struct Pending {
    operation: Operation,
    bytes: Vec<u8>,
    transmits: u32,
    next_at: Instant,
    interval: Duration,
    authenticated: bool,
    stale_retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    /// The request is out.
    Pending,
    /// Installed; refreshed at the instant.
    Ready { refresh_at: Instant },
    /// Refused or unanswered and no longer installed: asked for again, on
    /// the next datagram, from the instant on.
    Failed { retry_at: Instant },
}

/// How long a permission lasts on the server (RFC 8656 §9); a channel
/// binding's 10 minutes include a permission that needs the same refresh.
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);

/// The wait after a peer's `failures`-th failure in a row: 5 s doubling up
/// to 5 minutes, so a refused peer costs one request per wait, not one per
/// datagram.
fn peer_retry_wait(failures: u32) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(300))
}

#[derive(Debug)]
struct Peer {
    state: PeerState,
    /// The channel, when channels are used. The peer keeps it for the
    /// allocation's life, so neither is ever bound to another (RFC 8656
    /// §12 forbids that for 5 minutes after a binding expires).
    channel: Option<u16>,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Failures in a row of its permission or channel requests.
    failures: u32,
    /// Until when the server holds the last permission it granted.
    installed_until: Option<Instant>,
}

/// The TURN client. See the module docs.
#[derive(Debug)]
pub struct TurnClient<R> {
    config: TurnConfig,
    rng: R,
    state: AllocationState,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<IntegrityKey>,
    transactions: HashMap<TransactionId, Pending>,
    /// Keyed by peer address with channels, by IP (port 0) without.
    peers: HashMap<SocketAddr, Peer>,
    channels: HashMap<u16, SocketAddr>,
    next_channel: u16,
    refresh_at: Option<Instant>,
    transmits: VecDeque<TurnTransmit>,
    events: VecDeque<TurnEvent>,
    stats: TurnStatistics,
}

impl<R: RngCore> TurnClient<R> {
    /// A client that has sent nothing yet; transaction IDs come from `rng`.
    pub fn new(config: TurnConfig, rng: R) -> TurnClient<R> {
        TurnClient {
            config,
            rng,
            state: AllocationState::Idle,
            realm: None,
            nonce: None,
            key: None,
            transactions: HashMap::new(),
            peers: HashMap::new(),
            channels: HashMap::new(),
            next_channel: FIRST_CHANNEL,
            refresh_at: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TurnStatistics::default(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &TurnConfig {
        &self.config
    }

    /// Where the allocation stands.
    #[must_use]
    pub fn state(&self) -> AllocationState {
        self.state
    }

    /// The relayed address, once allocated.
    #[must_use]
    pub fn relayed_address(&self) -> Option<SocketAddr> {
        match self.state {
            AllocationState::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// Whether `peer` has an installed permission (and its channel, when
    /// channels are used).
    #[must_use]
    pub fn is_peer_ready(&self, peer: SocketAddr) -> bool {
        self.peers
            .get(&self.peer_key(peer))
            .is_some_and(|p| matches!(p.state, PeerState::Ready { .. }))
    }

    /// The counters.
    #[must_use]
    pub fn statistics(&self) -> TurnStatistics {
        self.stats
    }

    /// Sends the Allocate request (first without credentials, as RFC 8656
    /// §7.1 expects, unless a realm and nonce are known).
    ///
    /// # Errors
    ///
    /// [`TurnError::AlreadyAllocating`] unless idle.
    pub fn allocate(&mut self, now: Instant) -> Result<(), TurnError> {
        if self.state != AllocationState::Idle {
            return Err(TurnError::AlreadyAllocating);
        }
        self.state = AllocationState::Allocating;
        self.start(now, Operation::Allocate);
        Ok(())
    }

    /// Releases the allocation (Refresh with LIFETIME 0). [`TurnEvent::Closed`]
    /// follows the answer or the timeout.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            AllocationState::Allocated { .. } => {
                self.transactions.clear();
                self.state = AllocationState::Closing;
                self.refresh_at = None;
                self.start(now, Operation::Refresh { lifetime: 0 });
            }
            AllocationState::Idle | AllocationState::Allocating => {
                self.transactions.clear();
                self.state = AllocationState::Closed;
                self.events.push_back(TurnEvent::Closed);
            }
            AllocationState::Closing | AllocationState::Closed => {}
        }
    }

    /// The stream to the server closed (TCP, TLS): the allocation is gone.
    pub fn handle_connection_lost(&mut self) {
        match self.state {
            AllocationState::Closed => {}
            AllocationState::Closing => self.finish_close(),
            _ => self.lose(TurnError::ConnectionLost),
        }
    }

    /// Installs a permission for `peer` (a channel when channels are used),
    /// so it can send to the relayed address before we send to it.
    ///
    /// # Errors
    ///
    /// [`TurnError::NotAllocated`], [`TurnError::FamilyMismatch`],
    /// [`TurnError::NoChannelLeft`].
    pub fn add_peer(&mut self, now: Instant, peer: SocketAddr) -> Result<(), TurnError> {
        self.ensure_peer(now, peer).map(|_| ())
    }

    /// Sends a datagram to `peer` through the relay: as ChannelData once the
    /// channel is bound, as a Send indication once the permission is
    /// installed, and otherwise queued until then.
    ///
    /// # Errors
    ///
    /// [`TurnError::NotAllocated`], [`TurnError::FamilyMismatch`],
    /// [`TurnError::NoChannelLeft`], [`TurnError::TooLarge`].
    pub fn send_to(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), TurnError> {
        if data.len() > usize::from(u16::MAX) - 36 {
            return Err(TurnError::TooLarge(data.len()));
        }
        let key = self.ensure_peer(now, peer)?;
        let limit = self.config.queue_limit.max(1);
        let Some(entry) = self.peers.get_mut(&key) else {
            return Err(TurnError::NotAllocated);
        };
        if matches!(entry.state, PeerState::Pending) {
            if entry.queue.len() >= limit {
                entry.queue.pop_front();
                self.stats.dropped += 1;
            }
            entry.queue.push_back((peer, data.to_vec()));
            return Ok(());
        }
        let channel = entry.channel;
        self.send_data(peer, channel, data);
        Ok(())
    }

    /// Feeds bytes that arrived from `from`. Anything not from the server,
    /// malformed or failing integrity is dropped and counted.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if from != self.config.server {
            self.stats.ignored_input += 1;
            return;
        }
        if ChannelData::is_channel_data(data) {
            match ChannelData::decode(data) {
                Ok(frame) => match self.channels.get(&frame.channel) {
                    Some(peer) => {
                        self.stats.data_received += 1;
                        self.events.push_back(TurnEvent::Data {
                            peer: *peer,
                            data: frame.data.to_vec(),
                        });
                    }
                    None => self.stats.dropped += 1,
                },
                Err(_) => self.stats.ignored_input += 1,
            }
            return;
        }
        let message = match StunMessage::decode(data) {
            Ok(m) => m,
            Err(error) => {
                debug!(%error, "malformed STUN from the TURN server");
                self.stats.ignored_input += 1;
                return;
            }
        };
        match message.class {
            Class::Indication if message.method == Method::DATA => {
                match (message.peer_address(), message.data()) {
                    (Some(peer), Some(payload)) => {
                        self.stats.data_received += 1;
                        self.events.push_back(TurnEvent::Data {
                            peer,
                            data: payload.to_vec(),
                        });
                    }
                    _ => self.stats.ignored_input += 1,
                }
            }
            Class::Success | Class::Error => self.handle_response(now, &message),
            _ => self.stats.ignored_input += 1,
        }
    }

    /// Retransmits, refreshes and times out what is due. Safe to call early.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Retransmissions and transaction timeouts.
        let due: Vec<TransactionId> = self
            .transactions
            .iter()
            .filter(|(_, p)| p.next_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(mut pending) = self.transactions.remove(&id) else {
                continue;
            };
            let limit = if self.config.reliable {
                1
            } else {
                self.config.max_transmits.max(1)
            };
            if pending.transmits < limit {
                pending.transmits += 1;
                self.stats.requests_sent += 1;
                self.stats.retransmissions += 1;
                trace!(
                    op = pending.operation.name(),
                    n = pending.transmits,
                    "retransmit"
                );
                self.transmits.push_back(TurnTransmit {
                    destination: self.config.server,
                    data: pending.bytes.clone(),
                });
                pending.interval *= 2;
                pending.next_at = now + self.wait_after(pending.transmits, pending.interval);
                self.transactions.insert(id, pending);
            } else {
                let error = TurnError::Timeout {
                    method: pending.operation.name(),
                };
                self.operation_failed(now, pending.operation, error);
            }
        }
        if let AllocationState::Allocated { expires, .. } = self.state
            && expires <= now
        {
            self.lose(TurnError::AllocationLost);
            return;
        }
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            let lifetime = self.config.lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
            self.start(now, Operation::Refresh { lifetime });
        }
        let refresh: Vec<(SocketAddr, Option<u16>)> = self
            .peers
            .iter()
            .filter(
                |(_, p)| matches!(p.state, PeerState::Ready { refresh_at } if refresh_at <= now),
            )
            .map(|(k, p)| (*k, p.channel))
            .collect();
        for (key, channel) in refresh {
            if let Some(p) = self.peers.get_mut(&key) {
                // Stays usable while the refresh is out: the old one lasts.
                p.state = PeerState::Ready {
                    refresh_at: now + self.config.permission_refresh,
                };
            }
            let operation = match channel {
                Some(channel) => Operation::ChannelBind { peer: key, channel },
                None => Operation::CreatePermission { peer: key },
            };
            self.start(now, operation);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expires = match self.state {
            AllocationState::Allocated { expires, .. } => Some(expires),
            _ => None,
        };
        self.transactions
            .values()
            .map(|p| p.next_at)
            .chain(self.refresh_at)
            .chain(expires)
            .chain(self.peers.values().filter_map(|p| match p.state {
                PeerState::Ready { refresh_at } => Some(refresh_at),
                PeerState::Pending | PeerState::Failed { .. } => None,
            }))
            .min()
    }

    /// The next bytes to send to the server.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<TurnTransmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    fn wait_after(&self, transmits: u32, interval: Duration) -> Duration {
        let limit = if self.config.reliable {
            1
        } else {
            self.config.max_transmits.max(1)
        };
        if transmits >= limit {
            if self.config.reliable {
                // RFC 8489 §6.2.2: Ti = 39.5 s over reliable transports.
                Duration::from_millis(39_500)
            } else {
                self.config.rto * self.config.last_wait_factor
            }
        } else {
            interval
        }
    }

    /// The key for `peers`: the full address with channels, the IP otherwise.
    fn peer_key(&self, peer: SocketAddr) -> SocketAddr {
        if self.config.use_channels {
            peer
        } else {
            SocketAddr::new(peer.ip(), 0)
        }
    }

    fn ensure_peer(&mut self, now: Instant, peer: SocketAddr) -> Result<SocketAddr, TurnError> {
        let AllocationState::Allocated { relayed, .. } = self.state else {
            return Err(TurnError::NotAllocated);
        };
        if relayed.is_ipv4() != peer.is_ipv4() {
            return Err(TurnError::FamilyMismatch { peer, relayed });
        }
        let key = self.peer_key(peer);
        if let Some(entry) = self.peers.get_mut(&key) {
            let PeerState::Failed { retry_at } = entry.state else {
                return Ok(key);
            };
            if now < retry_at {
                self.stats.dropped += 1;
                return Err(TurnError::PeerBackingOff {
                    peer,
                    retry_in: retry_at - now,
                });
            }
            entry.state = PeerState::Pending;
            let operation = match entry.channel {
                Some(channel) => Operation::ChannelBind { peer, channel },
                None => Operation::CreatePermission { peer: key },
            };
            self.start(now, operation);
            return Ok(key);
        }
        let channel = if self.config.use_channels {
            Some(self.free_channel().ok_or(TurnError::NoChannelLeft)?)
        } else {
            None
        };
        self.peers.insert(
            key,
            Peer {
                state: PeerState::Pending,
                channel,
                queue: VecDeque::new(),
                failures: 0,
                installed_until: None,
            },
        );
        let operation = match channel {
            Some(channel) => {
                self.channels.insert(channel, peer);
                Operation::ChannelBind { peer, channel }
            }
            None => Operation::CreatePermission { peer: key },
        };
        self.start(now, operation);
        Ok(key)
    }

    fn free_channel(&mut self) -> Option<u16> {
        for _ in FIRST_CHANNEL..=LAST_CHANNEL {
            let c = self.next_channel;
            self.next_channel = if c >= LAST_CHANNEL {
                FIRST_CHANNEL
            } else {
                c + 1
            };
            if !self.channels.contains_key(&c) {
                return Some(c);
            }
        }
        None
    }

    fn send_data(&mut self, peer: SocketAddr, channel: Option<u16>, data: &[u8]) {
        let bytes = match channel {
            Some(channel) => {
                self.stats.channel_data_sent += 1;
                ChannelData::encode(channel, data, self.config.reliable)
            }
            None => {
                self.stats.send_indications_sent += 1;
                let id = TransactionId::random(&mut self.rng);
                StunMessage::new(Class::Indication, Method::SEND, id)
                    .with(Attribute::XorPeerAddress(peer))
                    .with(Attribute::Data(data.to_vec()))
                    .encode(None, false)
            }
        };
        self.transmits.push_back(TurnTransmit {
            destination: self.config.server,
            data: bytes,
        });
    }

    fn build(&mut self, operation: &Operation, id: TransactionId) -> (Vec<u8>, bool) {
        let mut m = StunMessage::new(Class::Request, operation.method(), id);
        match operation {
            Operation::Allocate => {
                m = m.with(Attribute::RequestedTransport(UDP_PROTOCOL));
                let lifetime = self.config.lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
                m = m.with(Attribute::Lifetime(lifetime));
            }
            Operation::Refresh { lifetime } => m = m.with(Attribute::Lifetime(*lifetime)),
            Operation::CreatePermission { peer } => m = m.with(Attribute::XorPeerAddress(*peer)),
            Operation::ChannelBind { peer, channel } => {
                m = m
                    .with(Attribute::ChannelNumber(*channel))
                    .with(Attribute::XorPeerAddress(*peer));
            }
        }
        if let Some(software) = &self.config.software {
            m = m.with(Attribute::Software(software.clone()));
        }
        match (&self.realm, &self.nonce, &self.key) {
            (Some(realm), Some(nonce), Some(key)) => {
                m = m
                    .with(Attribute::Username(
                        self.config.credentials.username.clone(),
                    ))
                    .with(Attribute::Realm(realm.clone()))
                    .with(Attribute::Nonce(nonce.clone()));
                (m.encode(Some(key), true), true)
            }
            _ => (m.encode(None, true), false),
        }
    }

    fn start(&mut self, now: Instant, operation: Operation) {
        self.start_with(now, operation, 0);
    }

    fn start_with(&mut self, now: Instant, operation: Operation, stale_retries: u32) {
        let id = TransactionId::random(&mut self.rng);
        let (bytes, authenticated) = self.build(&operation, id);
        debug!(op = operation.name(), authenticated, "TURN request");
        self.stats.requests_sent += 1;
        self.transmits.push_back(TurnTransmit {
            destination: self.config.server,
            data: bytes.clone(),
        });
        let interval = self.config.rto;
        let next_at = now + self.wait_after(1, interval);
        self.transactions.insert(
            id,
            Pending {
                operation,
                bytes,
                transmits: 1,
                next_at,
                interval,
                authenticated,
                stale_retries,
            },
        );
    }

    fn handle_response(&mut self, now: Instant, message: &StunMessage) {
        let Some(pending) = self.transactions.get(&message.transaction_id) else {
            self.stats.ignored_input += 1;
            return;
        };
        if pending.operation.method() != message.method {
            self.stats.ignored_input += 1;
            return;
        }
        // RFC 8489 §9.2.5: an answer to an authenticated request must carry a
        // valid MESSAGE-INTEGRITY unless it is a 400, 401 or 438 (which the
        // server cannot sign for a key it does not accept).
        let code = message.error_code().map(|(c, _)| c);
        let unsigned_ok = matches!(code, Some(400 | 401 | 438));
        if pending.authenticated && !unsigned_ok {
            let valid = self
                .key
                .as_ref()
                .is_some_and(|k| message.verify_integrity(k));
            if !valid {
                debug!("TURN response failed the integrity check");
                self.stats.ignored_input += 1;
                return;
            }
        }
        let Some(pending) = self.transactions.remove(&message.transaction_id) else {
            return;
        };
        match message.class {
            Class::Success => self.succeeded(now, pending.operation, message),
            _ => {
                let (code, reason) = message
                    .error_code()
                    .map_or((0, String::new()), |(c, r)| (c, r.to_owned()));
                self.rejected(now, pending, code, reason, message);
            }
        }
    }

    fn rejected(
        &mut self,
        now: Instant,
        pending: Pending,
        code: u16,
        reason: String,
        message: &StunMessage,
    ) {
        let method = pending.operation.name();
        match code {
            401 if !pending.authenticated => {
                let (Some(realm), Some(nonce)) = (message.realm(), message.nonce()) else {
                    let error = TurnError::BadResponse {
                        method,
                        what: "401 without REALM and NONCE",
                    };
                    return self.operation_failed(now, pending.operation, error);
                };
                self.set_challenge(realm, nonce);
                self.start(now, pending.operation);
            }
            401 => {
                let realm = self.realm.clone().unwrap_or_default();
                let error = TurnError::Unauthorized {
                    username: self.config.credentials.username.clone(),
                    realm,
                };
                self.operation_failed(now, pending.operation, error);
            }
            438 => {
                if pending.stale_retries >= MAX_STALE_RETRIES {
                    return self.operation_failed(
                        now,
                        pending.operation,
                        TurnError::StaleNonceLoop { method },
                    );
                }
                match message.nonce() {
                    Some(nonce) => {
                        let realm = message
                            .realm()
                            .map(str::to_owned)
                            .or_else(|| self.realm.clone())
                            .unwrap_or_default();
                        self.set_challenge(&realm, nonce);
                        self.start_with(now, pending.operation, pending.stale_retries + 1);
                    }
                    None => self.operation_failed(
                        now,
                        pending.operation,
                        TurnError::BadResponse {
                            method,
                            what: "438 without NONCE",
                        },
                    ),
                }
            }
            437 if !matches!(pending.operation, Operation::Allocate) => {
                self.operation_failed(now, pending.operation, TurnError::AllocationLost);
            }
            _ => {
                let error = TurnError::Rejected {
                    method,
                    code,
                    reason,
                };
                self.operation_failed(now, pending.operation, error);
            }
        }
    }

    fn set_challenge(&mut self, realm: &str, nonce: &str) {
        if self.realm.as_deref() != Some(realm) || self.key.is_none() {
            let creds = &self.config.credentials;
            self.key = Some(IntegrityKey::long_term(
                &creds.username,
                realm,
                creds.password.expose(),
            ));
        }
        self.realm = Some(realm.to_owned());
        self.nonce = Some(nonce.to_owned());
    }

    fn succeeded(&mut self, now: Instant, operation: Operation, message: &StunMessage) {
        match operation {
            Operation::Allocate => {
                let Some(relayed) = message.relayed_address() else {
                    return self.lose(TurnError::BadResponse {
                        method: "Allocate",
                        what: "no XOR-RELAYED-ADDRESS",
                    });
                };
                let lifetime = Duration::from_secs(u64::from(message.lifetime().unwrap_or(600)));
                let mapped = message.mapped_address();
                self.state = AllocationState::Allocated {
                    relayed,
                    mapped,
                    expires: now + lifetime,
                };
                self.refresh_at = Some(now + refresh_after(lifetime));
                debug!(lifetime = lifetime.as_secs(), "TURN allocation made");
                self.events.push_back(TurnEvent::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                });
            }
            Operation::Refresh { lifetime: 0 } => {
                self.finish_close();
            }
            Operation::Refresh { .. } => {
                let lifetime = Duration::from_secs(u64::from(message.lifetime().unwrap_or(600)));
                if let AllocationState::Allocated { expires, .. } = &mut self.state {
                    *expires = now + lifetime;
                }
                self.refresh_at = Some(now + refresh_after(lifetime));
                self.events.push_back(TurnEvent::Refreshed { lifetime });
            }
            Operation::CreatePermission { peer } => {
                self.peer_ready(now, peer);
                self.events
                    .push_back(TurnEvent::PermissionInstalled { peer: peer.ip() });
            }
            Operation::ChannelBind { peer, channel } => {
                self.peer_ready(now, peer);
                self.events
                    .push_back(TurnEvent::ChannelBound { peer, channel });
            }
        }
    }

    fn peer_ready(&mut self, now: Instant, key: SocketAddr) {
        let refresh_at = now + self.config.permission_refresh;
        let Some(entry) = self.peers.get_mut(&key) else {
            return;
        };
        entry.failures = 0;
        entry.installed_until = Some(now + PERMISSION_LIFETIME);
        if !matches!(entry.state, PeerState::Ready { .. }) {
            entry.state = PeerState::Ready { refresh_at };
        }
        let channel = entry.channel;
        let queued: Vec<(SocketAddr, Vec<u8>)> = entry.queue.drain(..).collect();
        for (peer, data) in queued {
            self.send_data(peer, channel, &data);
        }
    }

    fn operation_failed(&mut self, now: Instant, operation: Operation, error: TurnError) {
        debug!(op = operation.name(), %error, "TURN operation failed");
        match operation {
            Operation::Allocate => self.lose(error),
            Operation::Refresh { lifetime: 0 } => self.finish_close(),
            Operation::Refresh { .. } => {
                // The allocation lasts until it expires; without a refresh
                // it is as good as gone.
                self.lose(error);
            }
            Operation::CreatePermission { peer } | Operation::ChannelBind { peer, .. } => {
                let key = self.peer_key(peer);
                let Some(entry) = self.peers.get_mut(&key) else {
                    return;
                };
                entry.failures = entry.failures.saturating_add(1);
                let retry_at = now + peer_retry_wait(entry.failures);
                if entry.installed_until.is_some_and(|until| retry_at < until) {
                    // A refresh failed, but what it refreshes lasts past
                    // the next try: keep sending.
                    entry.state = PeerState::Ready {
                        refresh_at: retry_at,
                    };
                    return;
                }
                entry.state = PeerState::Failed { retry_at };
                entry.installed_until = None;
                self.stats.dropped += entry.queue.len() as u64;
                entry.queue.clear();
                self.events.push_back(TurnEvent::PeerFailed { peer, error });
            }
        }
    }

    fn lose(&mut self, error: TurnError) {
        self.state = AllocationState::Closed;
        self.transactions.clear();
        self.refresh_at = None;
        self.peers.clear();
        self.channels.clear();
        self.events.push_back(TurnEvent::Failed(error));
    }

    fn finish_close(&mut self) {
        self.state = AllocationState::Closed;
        self.transactions.clear();
        self.peers.clear();
        self.channels.clear();
        self.events.push_back(TurnEvent::Closed);
    }
}

/// Refresh a minute before expiry, or half-way for short lifetimes.
fn refresh_after(lifetime: Duration) -> Duration {
    if lifetime > Duration::from_secs(120) {
        lifetime - Duration::from_secs(60)
    } else {
        lifetime / 2
    }
}
