//! The sans-IO SIP endpoint: transport-level processing (RFC 3261 §18) and
//! transaction matching (§17.1.3, §17.2.3) around the transaction state
//! machines.
//!
//! Bytes and time go in, transmissions, events and the next deadline come out:
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use rand::SeedableRng;
//! use sip_core::endpoint::{Endpoint, EndpointConfig, EndpointEvent, Input, Transport};
//!
//! let mut ep = Endpoint::new(EndpointConfig::default(), rand::rngs::StdRng::seed_from_u64(1));
//! let now = Instant::now();
//! ep.handle_input(now, Input::Datagram {
//!     transport: Transport::Udp,
//!     remote: "192.0.2.7:5060".parse().unwrap(),
//!     data: Bytes::from_static(b"OPTIONS sip:a@192.0.2.1 SIP/2.0\r\n\
//!         Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKx1;rport\r\n\
//!         From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@192.0.2.1>\r\n\
//!         Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"),
//! });
//! let Some(EndpointEvent::Request { transaction, request, .. }) = ep.poll_event() else { panic!() };
//! let ok = sip_core::Message::response_to(&request, 200, "OK").unwrap().to_tag("t").build().unwrap();
//! ep.send_response(now, transaction, ok).unwrap();
//! let t = ep.poll_transmit().unwrap();
//! assert_eq!(t.destination.addr, "192.0.2.7:5060".parse().unwrap());
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use rand::RngCore;

use crate::error::ParseError;
use crate::headers::Via;
use crate::message::{Framing, Message, ParseLimits, push_ip};
use crate::name::{HeaderName, Method};
use crate::stream::{StreamDecoder, StreamItem};
use crate::transaction::{
    ClientTransaction, Reliability, ServerTransaction, TimerConfig, TransactionEvent,
    TransactionState,
};
use crate::uri::Host;

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket (RFC 7118).
    Ws,
    /// Secure WebSocket (RFC 7118).
    Wss,
}

impl Transport {
    /// Whether the transport delivers reliably (everything but UDP).
    pub fn reliability(self) -> Reliability {
        match self {
            Transport::Udp => Reliability::Unreliable,
            _ => Reliability::Reliable,
        }
    }

    /// The Via transport token.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// Recognises a Via transport token (any case).
    pub fn from_token(token: &str) -> Option<Transport> {
        [
            Transport::Udp,
            Transport::Tcp,
            Transport::Tls,
            Transport::Ws,
            Transport::Wss,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(token))
    }
}

/// A connection chosen by the driver (a TCP, TLS or WebSocket stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// Where a message goes or came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The transport.
    pub transport: Transport,
    /// The peer's address.
    pub addr: SocketAddr,
    /// The connection to use or that carried the message, for stream transports.
    pub connection: Option<ConnectionId>,
}

/// Bytes for the driver to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// Where to.
    pub destination: Destination,
    /// The serialised message (or a keep-alive).
    pub payload: Bytes,
}

/// What the driver hands to the endpoint.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input {
    /// One datagram.
    Datagram {
        /// The transport (UDP).
        transport: Transport,
        /// The sender.
        remote: SocketAddr,
        /// The datagram.
        data: Bytes,
    },
    /// Bytes read from a stream connection, in any chunking.
    Stream {
        /// The transport (TCP or TLS).
        transport: Transport,
        /// The connection.
        connection: ConnectionId,
        /// The peer.
        remote: SocketAddr,
        /// The bytes.
        data: Bytes,
    },
    /// A message the driver framed itself: one WebSocket message (framed as
    /// a datagram is, RFC 7118), or a message framed by its Content-Length
    /// on another stream. One that does not parse is answered 400 when it
    /// can be.
    Message {
        /// The transport.
        transport: Transport,
        /// The connection, for stream transports.
        connection: Option<ConnectionId>,
        /// The peer.
        remote: SocketAddr,
        /// The frame.
        data: Bytes,
    },
    /// A message the driver already parsed (checked like any other).
    Parsed {
        /// The transport.
        transport: Transport,
        /// The connection, for stream transports.
        connection: Option<ConnectionId>,
        /// The peer.
        remote: SocketAddr,
        /// The message.
        message: Message,
    },
    /// A connection closed; its decoder is dropped, and a client
    /// transaction whose request went over it and has had no response yet
    /// (or, but for an INVITE, only a provisional one) fails as by a
    /// transport error (§17.1.4): its response has no way back over the
    /// connection, and a server that connects back instead (§18.2.2) does
    /// not get through the NAT a phone usually sits behind. An INVITE that
    /// got a provisional response reached its next hop, which goes on
    /// with it: Timer C or the callee ends it, not the connection.
    ConnectionClosed {
        /// The connection.
        connection: ConnectionId,
        /// Its transport.
        transport: Transport,
        /// The peer's address on it, when no other connection to that
        /// address is open: a request sent there without a connection of
        /// its own went over this one. `None` fails only the transactions
        /// whose destination names this connection.
        remote: Option<SocketAddr>,
    },
    /// Sending to a destination failed (§17.1.4, §17.2.4).
    TransportError {
        /// Where the failed message was going.
        destination: Destination,
    },
}

/// A client transaction handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(u64);

/// A server transaction handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(u64);

/// What the endpoint tells its user.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// A new request (not ACK, not CANCEL) with its server transaction.
    Request {
        /// Respond through this transaction.
        transaction: ServerTxId,
        /// The request, with `received`/`rport` filled in (RFC 3581).
        request: Message,
        /// Where it came from.
        source: Destination,
    },
    /// An ACK outside any transaction: the ACK for a 2xx (§13.3.1.4).
    Ack {
        /// The ACK.
        request: Message,
        /// Where it came from.
        source: Destination,
    },
    /// A CANCEL matched this INVITE transaction and was answered 200; the
    /// user should answer the INVITE with 487 (§9.2).
    Cancelled {
        /// The INVITE's transaction.
        invite: ServerTxId,
        /// The CANCEL, for its Reason (RFC 3326: `cause=200` when the call
        /// was answered elsewhere).
        cancel: Message,
    },
    /// A response for a client transaction.
    Response {
        /// The transaction.
        transaction: ClientTxId,
        /// The response.
        response: Message,
    },
    /// A 2xx to an INVITE whose transaction has ended: a retransmission for
    /// the dialog layer to ACK again (§13.2.2.4).
    StrayResponse {
        /// The response.
        response: Message,
    },
    /// Timer B or F: no final response (treat as 408).
    ClientTimedOut {
        /// The transaction.
        transaction: ClientTxId,
    },
    /// Timer H: the ACK for a final response never came.
    ServerTimedOut {
        /// The transaction.
        transaction: ServerTxId,
    },
    /// The transport failed for a client transaction.
    ClientTransportError {
        /// The transaction.
        transaction: ClientTxId,
    },
    /// The transport failed for a server transaction.
    ServerTransportError {
        /// The transaction.
        transaction: ServerTxId,
    },
    /// A CRLF keep-alive pong arrived (RFC 5626 §4.4.1).
    KeepAlivePong {
        /// The connection.
        connection: ConnectionId,
    },
    /// Input that could not be parsed was dropped (and answered 400 when a
    /// response was possible).
    BadMessage {
        /// Where it came from.
        source: Destination,
        /// What was wrong.
        error: ParseError,
    },
}

/// Misuse of the endpoint API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The message is a response where a request was expected, or vice versa.
    #[error("wrong kind of message for this operation")]
    WrongKind,
    /// The request's top Via has no RFC 3261 branch.
    #[error("request has no top Via with a z9hG4bK branch")]
    MissingBranch,
    /// A transaction with this branch and method exists already.
    #[error("a transaction with this branch exists already")]
    DuplicateTransaction,
    /// The transaction is unknown or has ended.
    #[error("unknown or terminated transaction")]
    UnknownTransaction,
    /// CANCEL is only for INVITE transactions that have no final response.
    #[error("the transaction cannot be cancelled")]
    NotCancellable,
    /// The response cannot be routed back (no usable Via).
    #[error("no route for the response")]
    NoRoute,
}

/// Endpoint settings.
#[derive(Debug, Clone, Default)]
pub struct EndpointConfig {
    /// Transaction timers.
    pub timers: TimerConfig,
    /// Limits for incoming messages.
    pub limits: ParseLimits,
}

/// Counters of what the endpoint did, for diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Messages dropped because they did not parse.
    pub malformed: u64,
    /// 400 responses sent for requests that parsed but broke a header grammar.
    pub bad_requests_answered: u64,
    /// Responses that matched no transaction.
    pub stray_responses: u64,
    /// Request retransmissions absorbed by server transactions.
    pub retransmissions_absorbed: u64,
}

/// A matching key (§17.1.3, §17.2.3) as one byte string: its fields, each
/// with its length before it, the method last. One allocation per
/// transaction, none per lookup (the endpoint writes lookups into a scratch
/// buffer), and one hash over one slice.
type Key = Box<[u8]>;

#[derive(Debug)]
struct ClientEntry {
    tx: ClientTransaction,
    destination: Destination,
    key: Key,
    /// CANCEL asked before any provisional response (§9.1): sent on the first one.
    cancel_pending: bool,
    /// The CANCEL went out: asking again sends no second one.
    cancel_sent: bool,
    /// The deadline already in the endpoint's heap, so it is queued once.
    scheduled: Option<Instant>,
}

/// Queues the client transaction's next deadline unless it is queued
/// already.
fn schedule(
    deadlines: &mut BinaryHeap<Reverse<(Instant, Kind)>>,
    entry: &mut ClientEntry,
    kind: Kind,
) {
    let next = entry.tx.poll_timeout();
    if next != entry.scheduled {
        if let Some(at) = next {
            deadlines.push(Reverse((at, kind)));
        }
        entry.scheduled = next;
    }
}

#[derive(Debug)]
struct ServerEntry {
    tx: ServerTransaction,
    source: Destination,
    key: Key,
    /// Over UDP: the request's top Via line (after RFC 3581) and where
    /// responses carrying that same line go (§18.2.2), worked out once.
    reply: Option<(ByteString, Destination)>,
    /// The deadline already in the endpoint's heap, so it is queued once.
    scheduled: Option<Instant>,
}

/// The SIP endpoint: transports in, transactions out. See the module docs.
pub struct Endpoint<R> {
    config: EndpointConfig,
    rng: R,
    next_id: u64,
    clients: HashMap<ClientTxId, ClientEntry, IdHasher>,
    client_keys: HashMap<Key, ClientTxId>,
    /// Boxed: an entry is most of a kilobyte and lives for Timer J or L
    /// (32 s over UDP); inline, the table's spare slots cost as much again.
    servers: HashMap<ServerTxId, Box<ServerEntry>, IdHasher>,
    server_keys: HashMap<Key, ServerTxId>,
    /// Where lookup keys are written.
    scratch: Vec<u8>,
    decoders: HashMap<ConnectionId, StreamDecoder>,
    deadlines: BinaryHeap<Reverse<(Instant, Kind)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<EndpointEvent>,
    stats: EndpointStats,
}

/// Hashes the endpoint's own sequential transaction ids. They are not
/// chosen by peers, so a multiplicative hash serves; keys taken from
/// messages keep the standard, seeded hasher.
#[derive(Debug, Clone, Copy, Default)]
struct IdHasher(u64);

impl std::hash::BuildHasher for IdHasher {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Client(ClientTxId),
    Server(ServerTxId),
}

impl<R> fmt::Debug for Endpoint<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("client_transactions", &self.clients.len())
            .field("server_transactions", &self.servers.len())
            .field("connections", &self.decoders.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<R: RngCore> Endpoint<R> {
    /// An endpoint with its settings and the generator for branches, tags
    /// and Call-IDs (seed it in tests; these are identifiers, not keys).
    pub fn new(config: EndpointConfig, rng: R) -> Self {
        Endpoint {
            config,
            rng,
            next_id: 1,
            clients: HashMap::default(),
            client_keys: HashMap::new(),
            servers: HashMap::default(),
            server_keys: HashMap::new(),
            scratch: Vec::with_capacity(64),
            decoders: HashMap::new(),
            deadlines: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Live transactions (client, server).
    pub fn transaction_count(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }

    /// A fresh Via branch with the RFC 3261 magic cookie.
    pub fn new_branch(&mut self) -> String {
        let mut b = String::with_capacity(17);
        b.push_str("z9hG4bK");
        self.push_token(&mut b, 10);
        b
    }

    /// A fresh From or To tag.
    pub fn new_tag(&mut self) -> String {
        self.token(8)
    }

    /// A fresh Call-ID.
    pub fn new_call_id(&mut self) -> String {
        self.token(16)
    }

    fn token(&mut self, len: usize) -> String {
        let mut t = String::with_capacity(len);
        self.push_token(&mut t, len);
        t
    }

    fn push_token(&mut self, out: &mut String, len: usize) {
        const ALPHABET: &[u8; 62] =
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        for _ in 0..len {
            out.push(char::from(ALPHABET[(self.rng.next_u32() % 62) as usize]));
        }
    }

    /// Sends a request in a new client transaction. The request carries its
    /// own top Via with a fresh branch (see [`new_branch`](Self::new_branch)).
    /// An ACK for a 2xx has no transaction: use [`send_stateless`](Self::send_stateless).
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Message,
        destination: Destination,
    ) -> Result<ClientTxId, EndpointError> {
        let method = request.method().cloned().ok_or(EndpointError::WrongKind)?;
        if method == Method::Ack {
            return Err(EndpointError::WrongKind);
        }
        let via = request.via().ok();
        let branch = via
            .as_ref()
            .and_then(|v| v.branch().filter(|b| b.starts_with("z9hG4bK")))
            .ok_or(EndpointError::MissingBranch)?;
        client_key(&mut self.scratch, branch, &method);
        if self.client_keys.contains_key(&self.scratch[..]) {
            return Err(EndpointError::DuplicateTransaction);
        }
        let key: Key = self.scratch.as_slice().into();
        let id = ClientTxId(self.next());
        let tx = ClientTransaction::new(
            now,
            request,
            self.config.timers,
            destination.transport.reliability(),
        );
        self.client_keys.insert(key.clone(), id);
        self.clients.insert(
            id,
            ClientEntry {
                tx,
                destination,
                key,
                cancel_pending: false,
                cancel_sent: false,
                scheduled: None,
            },
        );
        self.drain_client(now, id);
        Ok(id)
    }

    /// Sends a message outside any transaction (the ACK for a 2xx, a
    /// stateless response).
    pub fn send_stateless(&mut self, destination: Destination, message: &Message) {
        self.transmits.push_back(Transmit {
            destination,
            payload: message.to_bytes(),
        });
    }

    /// Sends a CRLF keep-alive ping on a stream connection (RFC 5626 §4.4.1).
    pub fn send_keepalive(&mut self, destination: Destination) {
        let payload = if destination.transport == Transport::Udp {
            Bytes::from_static(b"\r\n")
        } else {
            // WebSocket keep-alives are frames, not bytes on a decoder.
            if let Some(connection) = destination.connection
                && matches!(destination.transport, Transport::Tcp | Transport::Tls)
            {
                let limits = self.config.limits;
                self.decoders
                    .entry(connection)
                    .or_insert_with(|| StreamDecoder::new(limits))
                    .ping_sent();
            }
            Bytes::from_static(b"\r\n\r\n")
        };
        self.transmits.push_back(Transmit {
            destination,
            payload,
        });
    }

    /// Responds through a server transaction.
    pub fn send_response(
        &mut self,
        now: Instant,
        transaction: ServerTxId,
        response: Message,
    ) -> Result<(), EndpointError> {
        if response.is_request() {
            return Err(EndpointError::WrongKind);
        }
        let entry = self
            .servers
            .get_mut(&transaction)
            .ok_or(EndpointError::UnknownTransaction)?;
        entry.tx.send_response(now, response);
        self.drain_server(transaction);
        Ok(())
    }

    /// Cancels an INVITE client transaction (§9.1): sends CANCEL now if a
    /// provisional response arrived, otherwise as soon as one does.
    pub fn cancel(&mut self, now: Instant, transaction: ClientTxId) -> Result<(), EndpointError> {
        let entry = self
            .clients
            .get_mut(&transaction)
            .ok_or(EndpointError::UnknownTransaction)?;
        if entry.tx.request().method() != Some(&Method::Invite) {
            return Err(EndpointError::NotCancellable);
        }
        if entry.cancel_sent || entry.cancel_pending {
            // Asked already: one CANCEL per INVITE, its own transaction
            // retransmits it.
            return Ok(());
        }
        match entry.tx.state() {
            TransactionState::Calling => {
                entry.cancel_pending = true;
                Ok(())
            }
            TransactionState::Proceeding => self.send_cancel(now, transaction),
            _ => Err(EndpointError::NotCancellable),
        }
    }

    /// Feeds input from the driver.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Datagram {
                transport,
                remote,
                data,
            } => {
                let source = Destination {
                    transport,
                    addr: remote,
                    connection: None,
                };
                if data.iter().all(|&b| b == b'\r' || b == b'\n') {
                    // A keep-alive over UDP (RFC 5626 §4.4.2 uses STUN; CRLF is tolerated).
                    return;
                }
                match Message::parse_with(data.clone(), &self.config.limits, Framing::Datagram) {
                    Ok(m) => self.handle_message(now, m, source),
                    Err(error) => {
                        self.answer_unparsed(&data, source, &error);
                        self.malformed(source, error);
                    }
                }
            }
            Input::Stream {
                transport,
                connection,
                remote,
                data,
            } => {
                let source = Destination {
                    transport,
                    addr: remote,
                    connection: Some(connection),
                };
                let limits = self.config.limits;
                let decoder = self
                    .decoders
                    .entry(connection)
                    .or_insert_with(|| StreamDecoder::new(limits));
                decoder.push(&data);
                let mut items = Vec::new();
                while let Some(item) = decoder.next_item() {
                    let rejected = decoder.take_rejected();
                    items.push((item, rejected));
                }
                for (item, rejected) in items {
                    match item {
                        Ok(StreamItem::Message(m)) => self.handle_message(now, m, source),
                        Ok(StreamItem::Ping) => self.transmits.push_back(Transmit {
                            destination: source,
                            payload: Bytes::from_static(b"\r\n"),
                        }),
                        Ok(StreamItem::Pong) => {
                            self.events
                                .push_back(EndpointEvent::KeepAlivePong { connection });
                        }
                        Err(error) => {
                            if let Some(data) = rejected {
                                self.answer_unparsed(&data, source, &error);
                            }
                            self.malformed(source, error);
                        }
                    }
                }
            }
            Input::Message {
                transport,
                connection,
                remote,
                data,
            } => {
                let source = Destination {
                    transport,
                    addr: remote,
                    connection,
                };
                let framing = match transport {
                    Transport::Ws | Transport::Wss => Framing::Datagram,
                    _ => Framing::Stream,
                };
                match Message::parse_with(data.clone(), &self.config.limits, framing) {
                    Ok(m) => self.handle_message(now, m, source),
                    Err(error) => {
                        self.answer_unparsed(&data, source, &error);
                        self.malformed(source, error);
                    }
                }
            }
            Input::Parsed {
                transport,
                connection,
                remote,
                message,
            } => {
                let source = Destination {
                    transport,
                    addr: remote,
                    connection,
                };
                self.handle_message(now, message, source);
            }
            Input::ConnectionClosed {
                connection,
                transport,
                remote,
            } => {
                self.decoders.remove(&connection);
                self.fail_clients(now, |e| {
                    let waiting = match e.tx.state() {
                        TransactionState::Calling | TransactionState::Trying => true,
                        TransactionState::Proceeding => !e.tx.is_invite(),
                        _ => false,
                    };
                    waiting
                        && e.destination.transport == transport
                        && match e.destination.connection {
                            Some(c) => c == connection,
                            None => Some(e.destination.addr) == remote,
                        }
                });
            }
            Input::TransportError { destination } => {
                self.fail_clients(now, |e| same_target(&e.destination, &destination));
                let servers: Vec<ServerTxId> = self
                    .servers
                    .iter()
                    .filter(|(_, e)| same_target(&e.source, &destination))
                    .map(|(id, _)| *id)
                    .collect();
                for id in servers {
                    if let Some(e) = self.servers.get_mut(&id) {
                        e.tx.handle_transport_error(now);
                    }
                    self.drain_server(id);
                }
            }
        }
    }

    /// Fails the client transactions `lost` picks with a transport error.
    fn fail_clients(&mut self, now: Instant, lost: impl Fn(&ClientEntry) -> bool) {
        let clients: Vec<ClientTxId> = self
            .clients
            .iter()
            .filter(|(_, e)| lost(e))
            .map(|(id, _)| *id)
            .collect();
        for id in clients {
            if let Some(e) = self.clients.get_mut(&id) {
                e.tx.handle_transport_error(now);
            }
            self.drain_client(now, id);
        }
    }

    /// Fires every timer due at `now`. Safe to call early or repeatedly.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, kind))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            match kind {
                Kind::Client(id) => {
                    if let Some(e) = self.clients.get_mut(&id) {
                        if e.scheduled == Some(at) {
                            e.scheduled = None;
                        }
                        e.tx.handle_timeout(now);
                        self.drain_client(now, id);
                    }
                }
                Kind::Server(id) => {
                    if let Some(e) = self.servers.get_mut(&id) {
                        if e.scheduled == Some(at) {
                            e.scheduled = None;
                        }
                        e.tx.handle_timeout(now);
                        self.drain_server(id);
                    }
                }
            }
        }
        self.prune_deadlines();
    }

    /// Drops deadlines at the top of the heap that no transaction waits for
    /// any more (a cancelled Timer Trying, a timer moved, an ended
    /// transaction), so [`poll_timeout`](Self::poll_timeout) never asks the
    /// driver to wake for nothing.
    /// [`prune_deadlines`](Self::prune_deadlines) after one transaction's
    /// timers changed or it ended: only its own deadline can have gone stale
    /// at the top (deeper ones are pruned when they surface).
    fn prune_deadlines_of(&mut self, kind: Kind) {
        if self
            .deadlines
            .peek()
            .is_some_and(|Reverse((_, top))| *top == kind)
        {
            self.prune_deadlines();
        }
    }

    fn prune_deadlines(&mut self) {
        while let Some(Reverse((at, kind))) = self.deadlines.peek().copied() {
            let live = match kind {
                Kind::Client(id) => self.clients.get(&id).map(|e| e.scheduled),
                Kind::Server(id) => self.servers.get(&id).map(|e| e.scheduled),
            };
            if live == Some(Some(at)) {
                break;
            }
            self.deadlines.pop();
        }
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// The next bytes to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    fn next(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn malformed(&mut self, source: Destination, error: ParseError) {
        self.stats.malformed += 1;
        self.events
            .push_back(EndpointEvent::BadMessage { source, error });
    }

    fn handle_message(&mut self, now: Instant, message: Message, source: Destination) {
        if message.is_request() {
            self.handle_request(now, message, source);
        } else {
            self.handle_response(now, message);
        }
    }

    fn handle_response(&mut self, now: Instant, response: Message) {
        // §18.1.2: drop a response whose top Via is not ours is the driver's
        // job; here the branch and CSeq method pick the transaction.
        let id = match (response.via(), response.cseq()) {
            (Ok(v), Ok(c)) => v.branch().and_then(|b| {
                client_key(&mut self.scratch, b, &c.method());
                self.client_keys.get(&self.scratch[..]).copied()
            }),
            _ => None,
        };
        match id {
            Some(id) => {
                if let Some(e) = self.clients.get_mut(&id) {
                    e.tx.handle_response(now, response);
                }
                self.drain_client(now, id);
            }
            None => {
                self.stats.stray_responses += 1;
                let is_invite_2xx = matches!(response.status(), Some(200..=299))
                    && response.cseq().is_ok_and(|c| c.method() == Method::Invite);
                if is_invite_2xx {
                    self.events
                        .push_back(EndpointEvent::StrayResponse { response });
                }
            }
        }
    }

    fn handle_request(&mut self, now: Instant, request: Message, source: Destination) {
        if let Err(error) = request.validate() {
            // The 400 goes where any response would (RFC 3581 §4).
            let (request, _) = fill_received(request, source.addr);
            self.answer_bad_request(&request, source, &error);
            self.malformed(source, error);
            return;
        }
        let (request, reply_to) = fill_received(request, source.addr);
        let mut key = std::mem::take(&mut self.scratch);
        self.handle_request_keyed(now, request, source, reply_to, &mut key);
        self.scratch = key;
    }

    fn handle_request_keyed(
        &mut self,
        now: Instant,
        request: Message,
        source: Destination,
        reply_to: Option<SocketAddr>,
        key: &mut Vec<u8>,
    ) {
        let Some(method_at) = server_key(&request, key) else {
            return;
        };
        let method = request.method().cloned().unwrap_or(Method::Ack);
        if let Some(&id) = self.server_keys.get(&key[..]) {
            self.stats.retransmissions_absorbed += u64::from(method != Method::Ack);
            if let Some(e) = self.servers.get_mut(&id) {
                e.tx.handle_request(now, request);
            }
            self.drain_server(id);
            return;
        }
        match method {
            Method::Ack => {
                self.events
                    .push_back(EndpointEvent::Ack { request, source });
            }
            Method::Cancel => self.handle_cancel(now, request, source, key, method_at),
            _ => {
                let reply = reply_to
                    .filter(|_| source.transport == Transport::Udp)
                    .and_then(|addr| {
                        // A copy, not a slice: the transaction outlives the
                        // request by Timer J or L, and a slice would keep
                        // the whole request's buffer.
                        let via = ByteString::from(&*request.top_via_value_shared()?);
                        Some((
                            via,
                            Destination {
                                transport: source.transport,
                                addr,
                                connection: None,
                            },
                        ))
                    });
                let id = self.new_server(now, &request, source, key, reply);
                self.events.push_back(EndpointEvent::Request {
                    transaction: id,
                    request,
                    source,
                });
                self.drain_server(id);
            }
        }
    }

    fn handle_cancel(
        &mut self,
        now: Instant,
        cancel: Message,
        source: Destination,
        key: &mut Vec<u8>,
        method_at: usize,
    ) {
        let id = self.new_server(now, &cancel, source, key, None);
        // The INVITE's key: the same fields, method INVITE.
        key.truncate(method_at);
        push_field(key, Method::Invite.as_str().as_bytes());
        let invite = self.server_keys.get(&key[..]).copied();
        let (status, reason) = if invite.is_some() {
            (200, "OK")
        } else {
            (481, "Call/Transaction Does Not Exist")
        };
        // The To tag the INVITE's responses carry, when one went out
        // (§9.2: the two SHOULD be the same).
        let tag = invite
            .and_then(|i| self.servers.get(&i))
            .and_then(|e| e.tx.last_response())
            .and_then(|r| r.to().ok().and_then(|t| t.tag().map(str::to_owned)))
            .unwrap_or_else(|| self.token(8));
        if let Ok(resp) = Message::response_to(&cancel, status, reason)
            .map(|b| b.to_tag(&tag))
            .and_then(|b| b.build())
            && let Some(e) = self.servers.get_mut(&id)
        {
            e.tx.send_response(now, resp);
        }
        self.drain_server(id);
        if let Some(invite) = invite {
            let proceeding = self
                .servers
                .get(&invite)
                .is_some_and(|e| e.tx.state() == TransactionState::Proceeding);
            if proceeding {
                self.events
                    .push_back(EndpointEvent::Cancelled { invite, cancel });
            }
        }
    }

    fn new_server(
        &mut self,
        now: Instant,
        request: &Message,
        source: Destination,
        key: &[u8],
        reply: Option<(ByteString, Destination)>,
    ) -> ServerTxId {
        let id = ServerTxId(self.next());
        let tx = ServerTransaction::new_lazy_trying(
            now,
            request,
            self.config.timers,
            source.transport.reliability(),
        );
        let key: Key = key.into();
        self.server_keys.insert(key.clone(), id);
        self.servers.insert(
            id,
            Box::new(ServerEntry {
                tx,
                source,
                key,
                reply,
                scheduled: None,
            }),
        );
        id
    }

    /// A 400 for a request that did not parse, when the lines a response
    /// copies (Via, From, To, Call-ID, CSeq) are readable (RFC 3261 §18.3,
    /// §21.4.1): a request without Max-Forwards, with a CSeq method other
    /// than its own, a second To or a Content-Length past its end would
    /// otherwise be retransmitted for 32 s and end in a 408 without a clue.
    /// Nothing for a response, an ACK, or a request whose routing lines are
    /// broken too.
    fn answer_unparsed(&mut self, data: &[u8], source: Destination, error: &ParseError) {
        let Some(copied) = lines_for_a_response(data) else {
            return;
        };
        let reason = format!("Bad Request ({})", error.kind);
        let mut builder = Message::response(400, &reason);
        for (name, value) in copied {
            let Ok(b) = builder.header(name.canonical().unwrap_or(""), value) else {
                return;
            };
            builder = b;
        }
        // A final response gets a To tag unless the request had one (§8.2.6.2).
        let Ok(resp) = builder.to_tag(&self.token(8)).build() else {
            return;
        };
        // The Via as the request's would have been filled in (RFC 3581).
        let (resp, _) = fill_received(resp, source.addr);
        if let Some(destination) = response_destination(&resp, source) {
            self.stats.bad_requests_answered += 1;
            self.send_stateless(destination, &resp);
        }
    }

    fn answer_bad_request(&mut self, request: &Message, source: Destination, error: &ParseError) {
        if request.method() == Some(&Method::Ack) {
            return;
        }
        let reason = format!("Bad Request ({})", error.kind);
        let Ok(builder) = Message::response_to(request, 400, &reason) else {
            return;
        };
        // A final response to a request without a To tag gets one (§8.2.6.2).
        let has_tag = request.to().is_ok_and(|t| t.tag().is_some());
        let builder = if has_tag {
            builder
        } else {
            builder.to_tag(&self.token(8))
        };
        let Ok(resp) = builder.build() else { return };
        if let Some(destination) = response_destination(&resp, source) {
            self.stats.bad_requests_answered += 1;
            self.send_stateless(destination, &resp);
        }
    }

    fn send_cancel(&mut self, now: Instant, invite_tx: ClientTxId) -> Result<(), EndpointError> {
        let entry = self
            .clients
            .get_mut(&invite_tx)
            .ok_or(EndpointError::UnknownTransaction)?;
        entry.cancel_pending = false;
        let destination = entry.destination;
        let cancel = build_cancel(entry.tx.request()).ok_or(EndpointError::NotCancellable)?;
        self.send_request(now, cancel, destination)?;
        // Without a final response 64*T1 from now the INVITE gives up (§9.1).
        if let Some(e) = self.clients.get_mut(&invite_tx) {
            // Only once it went: a CANCEL that could not be sent may be
            // asked for again.
            e.cancel_sent = true;
            e.tx.cancel_sent(now);
            schedule(&mut self.deadlines, e, Kind::Client(invite_tx));
        }
        Ok(())
    }

    fn drain_client(&mut self, now: Instant, id: ClientTxId) {
        let mut send_cancel = false;
        let mut ended = false;
        if let Some(e) = self.clients.get_mut(&id) {
            while let Some(payload) = e.tx.poll_transmit_with(Message::to_bytes) {
                self.transmits.push_back(Transmit {
                    destination: e.destination,
                    payload,
                });
            }
            while let Some(ev) = e.tx.poll_event() {
                match ev {
                    TransactionEvent::Response(response) => {
                        if e.cancel_pending && matches!(response.status(), Some(100..=199)) {
                            send_cancel = true;
                        }
                        if !matches!(response.status(), Some(100..=199)) {
                            e.cancel_pending = false;
                        }
                        self.events.push_back(EndpointEvent::Response {
                            transaction: id,
                            response,
                        });
                    }
                    TransactionEvent::TimedOut => self
                        .events
                        .push_back(EndpointEvent::ClientTimedOut { transaction: id }),
                    TransactionEvent::TransportError => self
                        .events
                        .push_back(EndpointEvent::ClientTransportError { transaction: id }),
                    TransactionEvent::Terminated => ended = true,
                    _ => {}
                }
            }
            schedule(&mut self.deadlines, e, Kind::Client(id));
        }
        if ended {
            if let Some(e) = self.clients.remove(&id) {
                self.client_keys.remove(&e.key);
            }
        } else if send_cancel {
            // A CANCEL waiting for the first provisional response goes now.
            let _ = self.send_cancel(now, id);
        }
        self.prune_deadlines_of(Kind::Client(id));
    }

    fn drain_server(&mut self, id: ServerTxId) {
        let mut ended = false;
        if let Some(e) = self.servers.get_mut(&id) {
            let (source, reply) = (e.source, &e.reply);
            while let Some((destination, payload)) = e.tx.poll_transmit_with(|m| {
                let destination = match reply {
                    Some((via, d)) if m.top_via_value() == Some(&**via) => Some(*d),
                    _ => response_destination(m, source),
                };
                (destination, m.to_bytes())
            }) {
                if let Some(destination) = destination {
                    self.transmits.push_back(Transmit {
                        destination,
                        payload,
                    });
                }
            }
            e.tx.forget_sent_2xx();
            while let Some(ev) = e.tx.poll_event() {
                match ev {
                    TransactionEvent::Ack(request) => self.events.push_back(EndpointEvent::Ack {
                        request,
                        source: e.source,
                    }),
                    TransactionEvent::TimedOut => self
                        .events
                        .push_back(EndpointEvent::ServerTimedOut { transaction: id }),
                    TransactionEvent::TransportError => self
                        .events
                        .push_back(EndpointEvent::ServerTransportError { transaction: id }),
                    TransactionEvent::Terminated => ended = true,
                    _ => {}
                }
            }
            let next = e.tx.poll_timeout();
            if next != e.scheduled {
                if let Some(at) = next {
                    self.deadlines.push(Reverse((at, Kind::Server(id))));
                }
                e.scheduled = next;
            }
        }
        if ended && let Some(e) = self.servers.remove(&id) {
            self.server_keys.remove(&e.key);
        }
        self.prune_deadlines_of(Kind::Server(id));
    }
}

fn same_target(a: &Destination, b: &Destination) -> bool {
    a.transport == b.transport
        && (a.connection.is_some() && a.connection == b.connection || a.addr == b.addr)
}

/// Appends one key field: its length, then its bytes.
fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(field);
}

/// RFC 3261 §17.1.3 matching key for a response: branch and CSeq method.
fn client_key(out: &mut Vec<u8>, branch: &str, method: &Method) {
    out.clear();
    push_field(out, branch.as_bytes());
    push_field(out, method.as_str().as_bytes());
}

/// RFC 3261 §17.2.3 matching key for a request, written to `out` (ACK and
/// CANCEL keep their method here; ACK is mapped to INVITE so it finds the
/// INVITE transaction). Returns where the method field starts.
fn server_key(request: &Message, out: &mut Vec<u8>) -> Option<usize> {
    out.clear();
    let via = request.via().ok()?;
    let method = match request.method()? {
        Method::Ack => &Method::Invite,
        m => m,
    };
    match via.branch() {
        Some(b) if b.starts_with("z9hG4bK") => {
            // RFC 3261: branch, sent-by and method.
            out.push(b'3');
            push_field(out, b.as_bytes());
            // sent-by: the host, tagged by kind (an address in binary is
            // its canonical text's equal), then the port if written.
            match &via.host {
                Host::Domain(d) => {
                    out.push(b'd');
                    push_field(out, d.as_bytes());
                }
                Host::Ipv4(a) => {
                    out.push(b'4');
                    out.extend_from_slice(&a.octets());
                }
                Host::Ipv6(a) => {
                    out.push(b'6');
                    out.extend_from_slice(&a.octets());
                }
            }
            match via.port {
                Some(p) => {
                    out.push(b':');
                    out.extend_from_slice(&p.to_le_bytes());
                }
                None => out.push(b'-'),
            }
        }
        _ => {
            // RFC 2543 (no magic cookie): §17.2.3's fallback fields.
            out.push(b'2');
            push_field(out, request.request_uri()?.to_string().as_bytes());
            push_field(out, request.from().ok()?.tag().unwrap_or("").as_bytes());
            push_field(out, request.call_id().ok()?.as_bytes());
            out.extend_from_slice(&request.cseq().ok()?.seq.to_le_bytes());
            push_field(out, via.to_string().as_bytes());
        }
    }
    let method_at = out.len();
    push_field(out, method.as_str().as_bytes());
    Some(method_at)
}

/// `maddr` comes first (§18.2.2), with the sent-by port, when it is an
/// address: the endpoint has no resolver for a name there, and then
/// answers as if it were absent.
fn maddr_destination(via: &Via<'_>) -> Option<SocketAddr> {
    let maddr = via.maddr()?;
    let ip = maddr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()?;
    Some(SocketAddr::new(ip, via.port.unwrap_or(5060)))
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: records the source address in the
/// top Via. Also returns where responses with this top Via go over UDP
/// (§18.2.2, what [`response_destination`] would find in it), known here at
/// no cost.
fn fill_received(mut request: Message, source: SocketAddr) -> (Message, Option<SocketAddr>) {
    let Ok(via) = request.via() else {
        return (request, None);
    };
    // Adding `received` leaves `maddr` as it is.
    let maddr = maddr_destination(&via);
    let host_is_source = match via.host {
        Host::Ipv4(a) => IpAddr::V4(a) == source.ip(),
        Host::Ipv6(a) => IpAddr::V6(a) == source.ip(),
        Host::Domain(_) => false,
    };
    let rport = via.rport();
    let wants_rport = rport == Some(None);
    let port = match rport {
        Some(None) => Some(source.port()),
        Some(Some(p)) => Some(p),
        None => None,
    };
    let reply_port = port.or(via.port).unwrap_or(5060);
    if host_is_source && !wants_rport {
        // Unchanged: a `received` the sender wrote still wins.
        let ip = via.received().unwrap_or(source.ip());
        return (request, maddr.or(Some(SocketAddr::new(ip, reply_port))));
    }
    // From here on `received` is the source address.
    let reply_to = maddr.or(Some(SocketAddr::new(source.ip(), reply_port)));
    if request.set_via_received(source.ip(), port) {
        return (request, reply_to);
    }
    let Ok(via) = request.via() else {
        return (request, None);
    };
    let mut value = String::with_capacity(via.params.as_str().len() + 96);
    value.push_str(via.protocol);
    value.push('/');
    value.push_str(via.version);
    value.push('/');
    value.push_str(via.transport);
    value.push(' ');
    push_sent_by(&mut value, &via.host, via.port);
    let mut params = via.params.iter();
    while let Some((name, written, _)) = params.next_written() {
        if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
            continue;
        }
        value.push(';');
        value.push_str(written);
    }
    value.push_str(";received=");
    push_ip(&mut value, source.ip());
    if wants_rport {
        value.push_str(";rport=");
        push_decimal(&mut value, u64::from(source.port()));
    } else if let Some(Some(p)) = rport {
        value.push_str(";rport=");
        push_decimal(&mut value, u64::from(p));
    }
    // Only a control character could fail, and a parsed Via has none.
    match request.replace_top_via(&value) {
        Ok(()) => (request, reply_to),
        Err(_) => (request, None),
    }
}

/// `host[:port]` as written in a Via.
fn push_sent_by(out: &mut String, host: &Host<'_>, port: Option<u16>) {
    match host {
        Host::Domain(d) => out.push_str(d),
        Host::Ipv4(a) => push_ip(out, IpAddr::V4(*a)),
        Host::Ipv6(a) => {
            out.push('[');
            push_ip(out, IpAddr::V6(*a));
            out.push(']');
        }
    }
    if let Some(p) = port {
        out.push(':');
        push_decimal(out, u64::from(p));
    }
}

fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    for &d in crate::message::decimal(n, &mut digits) {
        out.push(char::from(d));
    }
}

/// The header lines a response to the request in `data` copies, read line
/// by line without parsing the message: every Via, then the first From,
/// To, Call-ID and CSeq. `None` for a response, an ACK (never answered),
/// input that is not text, folded header lines, or when one is missing.
fn lines_for_a_response(data: &[u8]) -> Option<Vec<(HeaderName, &str)>> {
    let text = std::str::from_utf8(data).ok()?;
    let mut lines = text.split("\r\n");
    let start = lines.next()?;
    let method = start.split(' ').next()?;
    if start.starts_with("SIP/") || method.is_empty() || method == "ACK" {
        return None;
    }
    let mut vias = Vec::new();
    let mut others: [Option<&str>; 4] = [None; 4];
    const OTHERS: [HeaderName; 4] = [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ];
    // Bounded by the datagram's lines.
    for line in lines {
        if line.is_empty() {
            break;
        }
        // A folded line would need unfolding: give up rather than guess.
        if line.starts_with([' ', '\t']) {
            return None;
        }
        let (name, value) = line.split_once(':')?;
        let kind = HeaderName::from_bytes(name.trim_end().as_bytes());
        let value = value.trim();
        if kind == HeaderName::Via {
            vias.push((kind, value));
        } else if let Some(i) = OTHERS.iter().position(|k| *k == kind) {
            others[i].get_or_insert(value);
        }
    }
    if vias.is_empty() {
        return None;
    }
    for (kind, value) in OTHERS.iter().zip(others) {
        vias.push((*kind, value?));
    }
    Some(vias)
}

/// RFC 3261 §18.2.2 and RFC 3581 §4: where a response goes.
fn response_destination(response: &Message, source: Destination) -> Option<Destination> {
    match source.transport {
        Transport::Udp => {}
        // A WebSocket peer listens nowhere: its connection or nothing.
        Transport::Ws | Transport::Wss => return Some(source),
        Transport::Tcp | Transport::Tls => {
            // Back over the connection the request came in on; should it
            // be gone, a new one goes to the source address (the Via's
            // `received`) at the sent-by port, or the transport's default:
            // the port the peer listens on, not the one it connected from
            // (§18.2.2).
            let default = if source.transport == Transport::Tls {
                5061
            } else {
                5060
            };
            // A Via that does not parse (a 400 for it) names no port: the
            // connection only.
            let Ok(via) = response.via() else {
                return Some(source);
            };
            let port = via.port.unwrap_or(default);
            return Some(Destination {
                addr: SocketAddr::new(source.addr.ip(), port),
                ..source
            });
        }
    }
    let via = response.via().ok()?;
    if let Some(addr) = maddr_destination(&via) {
        return Some(Destination {
            transport: source.transport,
            addr,
            connection: None,
        });
    }
    let ip = via
        .received()
        .or(match via.host {
            Host::Ipv4(a) => Some(IpAddr::V4(a)),
            Host::Ipv6(a) => Some(IpAddr::V6(a)),
            Host::Domain(_) => None,
        })
        .unwrap_or(source.addr.ip());
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(5060),
    };
    Some(Destination {
        transport: source.transport,
        addr: SocketAddr::new(ip, port),
        connection: None,
    })
}

/// The CANCEL for an INVITE (§9.1): same Request-URI, Call-ID, To, From,
/// top Via and Route, CSeq with the same number and method CANCEL.
pub fn build_cancel(invite: &Message) -> Option<Message> {
    let uri = match invite.start_line() {
        crate::message::StartLine::Request { uri, .. } => uri,
        crate::message::StartLine::Response { .. } => return None,
    };
    let cseq = invite.cseq().ok()?;
    let mut b = Message::request(Method::Cancel, uri)
        .header("Via", &invite.via().ok()?.to_string())
        .ok()?
        .header("Max-Forwards", "70")
        .ok()?
        .header("From", invite.header("From")?)
        .ok()?
        .header("To", invite.header("To")?)
        .ok()?
        .header("Call-ID", invite.header("Call-ID")?)
        .ok()?
        .header("CSeq", &format!("{} CANCEL", cseq.seq))
        .ok()?;
    for route in invite.header_values("Route") {
        b = b.header("Route", route).ok()?;
    }
    b.build().ok()
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "a test takes one real instant as its epoch"
)]
mod tests {
    use super::*;

    fn request(via: &str) -> Message {
        Message::request(Method::Options, "sip:a@192.0.2.1")
            .header("Via", via)
            .and_then(|b| b.header("From", "<sip:b@example.com>;tag=1"))
            .and_then(|b| b.header("To", "<sip:a@192.0.2.1>"))
            .and_then(|b| b.header("Call-ID", "c1"))
            .and_then(|b| b.header("CSeq", "1 OPTIONS"))
            .and_then(|b| b.header("Max-Forwards", "70"))
            .and_then(|b| b.build())
            .unwrap()
    }

    /// The reply address worked out while filling in `received` is the one
    /// §18.2.2 and RFC 3581 give for the filled-in Via.
    #[test]
    fn reply_address_matches_response_destination() {
        let source: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let udp = Destination {
            transport: Transport::Udp,
            addr: source,
            connection: None,
        };
        for via in [
            "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKa",
            "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKa;rport",
            "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKa",
            "SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bKa;rport=5999",
            "SIP/2.0/UDP 192.0.2.7:5070;received=198.51.100.1;branch=z9hG4bKa",
            "SIP/2.0/UDP 10.0.0.1:5080;branch=z9hG4bKa",
            "SIP/2.0/UDP 10.0.0.1:5080;branch=z9hG4bKa;rport",
            "SIP/2.0/UDP host.example.com;branch=z9hG4bKa",
            "SIP/2.0/UDP host.example.com:5062;rport;branch=z9hG4bKa",
            "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa;rport",
            "SIP/2.0/UDP 10.0.0.1:5080;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2",
            "SIP/2.0/UDP 192.0.2.7:5060;maddr=239.1.1.1;branch=z9hG4bKa",
            "SIP/2.0/UDP 10.0.0.1;maddr=192.0.2.99;rport;branch=z9hG4bKa",
            "SIP/2.0/UDP 10.0.0.1:5080;maddr=proxy.example.com;rport;branch=z9hG4bKa",
            "SIP/2.0/UDP 10.0.0.1:5080;rport;branch=z9hG4bKa;x=\"a, b\"",
        ] {
            let (filled, reply_to) = fill_received(request(via), source);
            let expected = response_destination(&filled, udp).map(|d| d.addr);
            assert_eq!(reply_to, expected, "{via}");
            // The filled-in Via parses, its other parameters as written.
            let again = Message::parse(filled.to_bytes()).unwrap();
            assert_eq!(again.via().unwrap().branch(), Some("z9hG4bKa"), "{via}");
            if via.contains("x=") {
                assert_eq!(again.via().unwrap().params.get("x"), Some(Some("a, b")));
            }
        }
    }

    /// §18.2.2: a Via with an IP `maddr` sends the response there, at the
    /// sent-by port; a name in `maddr`, which needs DNS, is passed over.
    #[test]
    fn rfc3261_18_2_2_maddr_comes_first() {
        let udp = Destination {
            transport: Transport::Udp,
            addr: "192.0.2.7:40000".parse().unwrap(),
            connection: None,
        };
        let cases = [
            (
                "SIP/2.0/UDP 192.0.2.7:5070;maddr=239.1.1.1;branch=z9hG4bKa",
                "239.1.1.1:5070",
            ),
            (
                "SIP/2.0/UDP 192.0.2.7;maddr=192.0.2.99;rport=40000;branch=z9hG4bKa",
                "192.0.2.99:5060",
            ),
            (
                "SIP/2.0/UDP 192.0.2.7:5070;maddr=proxy.example.com;branch=z9hG4bKa",
                "192.0.2.7:5070",
            ),
        ];
        for (via, expected) in cases {
            let got = response_destination(&request(via), udp).unwrap().addr;
            assert_eq!(got, expected.parse::<SocketAddr>().unwrap(), "{via}");
        }
    }

    /// §18.2.2: over a connection the response goes back on it; should it
    /// be gone, the new one goes to the source address at the Via's
    /// sent-by port (or the transport's default), not to the port the peer
    /// connected from. A WebSocket peer listens nowhere: its connection
    /// only.
    #[test]
    fn rfc3261_18_2_2_a_response_over_a_lost_connection_goes_to_the_sent_by_port() {
        let from = |transport| Destination {
            transport,
            addr: "192.0.2.7:49152".parse().unwrap(),
            connection: Some(ConnectionId(3)),
        };
        let cases = [
            (
                Transport::Tcp,
                "SIP/2.0/TCP 192.0.2.7:5070;branch=z9hG4bKa",
                "192.0.2.7:5070",
            ),
            (
                Transport::Tcp,
                "SIP/2.0/TCP 10.0.0.1;received=192.0.2.7;branch=z9hG4bKa",
                "192.0.2.7:5060",
            ),
            (
                Transport::Tls,
                "SIP/2.0/TLS host.example.com;branch=z9hG4bKa",
                "192.0.2.7:5061",
            ),
            (
                Transport::Ws,
                "SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKa",
                "192.0.2.7:49152",
            ),
        ];
        for (transport, via, expected) in cases {
            let got = response_destination(&request(via), from(transport)).unwrap();
            assert_eq!(got.addr, expected.parse::<SocketAddr>().unwrap(), "{via}");
            assert_eq!(got.connection, Some(ConnectionId(3)), "{via}");
            assert_eq!(got.transport, transport);
        }
        // A Via that does not parse (the 400 about it) still goes back
        // over the connection.
        let bad = Message::parse(
            &b"OPTIONS sip:a@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/TCP [bad;branch=z9hG4bKa\r\n\
               From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@192.0.2.1>\r\nCall-ID: c1\r\n\
               CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"[..],
        )
        .unwrap();
        assert!(bad.via().is_err());
        let got = response_destination(&bad, from(Transport::Tcp)).unwrap();
        assert_eq!(got, from(Transport::Tcp));
    }

    /// An INVITE from 192.0.2.7 with the given top Via.
    fn invite(via: &str) -> Message {
        Message::request(Method::Invite, "sip:a@192.0.2.1")
            .header("Via", via)
            .and_then(|b| b.header("From", "<sip:b@example.com>;tag=1"))
            .and_then(|b| b.header("To", "<sip:a@192.0.2.1>"))
            .and_then(|b| b.header("Call-ID", "c1"))
            .and_then(|b| b.header("CSeq", "1 INVITE"))
            .and_then(|b| b.header("Contact", "<sip:b@192.0.2.7:5060>"))
            .and_then(|b| b.header("Max-Forwards", "70"))
            .and_then(|b| b.build())
            .unwrap()
    }

    fn endpoint() -> Endpoint<rand::rngs::StdRng> {
        use rand::SeedableRng;
        Endpoint::new(
            EndpointConfig::default(),
            rand::rngs::StdRng::seed_from_u64(1),
        )
    }

    /// RFC 3581 §4: the 400 for a malformed request goes to the address
    /// and port it came from when the Via asks for rport, as any response.
    #[test]
    fn rfc3581_4_a_bad_request_is_answered_to_the_source() {
        let now = Instant::now();
        let mut ep = endpoint();
        let raw = "OPTIONS sip:a@192.0.2.1 SIP/2.0\r\n\
                   Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKx\r\n\
                   From: <sip:b@example.com>;tag=1\r\n\
                   To: <sip:a@192.0.2.1>\r\n\
                   Call-ID: c9\r\n\
                   CSeq: 1 OPTIONS\r\n\
                   Max-Forwards: 70\r\n\
                   Contact: <sip:b@[bad>\r\n\
                   Content-Length: 0\r\n\r\n";
        ep.handle_input(
            now,
            Input::Datagram {
                transport: Transport::Udp,
                remote: "203.0.113.5:40000".parse().unwrap(),
                data: Bytes::from(raw),
            },
        );
        let sent = ep.poll_transmit().expect("a 400 goes out");
        assert!(sent.payload.starts_with(b"SIP/2.0 400"));
        assert_eq!(
            sent.destination.addr,
            "203.0.113.5:40000".parse::<SocketAddr>().unwrap()
        );
        // §8.2.6.2: the request had no To tag, the final response has one.
        let resp = Message::parse(sent.payload).unwrap();
        assert!(resp.to().unwrap().tag().is_some_and(|t| !t.is_empty()));
    }

    /// §18.3, §21.4.1: requests that do not parse at all (no Max-Forwards,
    /// a CSeq method other than the request's, a second To, a body shorter
    /// than its Content-Length) get a 400 naming the problem when the lines
    /// a response copies are readable, instead of silence. Responses, ACKs,
    /// text without them and folded lines get nothing.
    #[test]
    fn rfc3261_21_4_1_a_request_that_does_not_parse_is_answered_400() {
        let head = "INVITE sip:a@192.0.2.1 SIP/2.0\r\n\
                    Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKu\r\n\
                    From: <sip:b@example.com>;tag=1\r\n\
                    To: <sip:a@192.0.2.1>\r\n\
                    Call-ID: c10\r\n";
        let answered = [
            format!("{head}CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"),
            format!("{head}CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"),
            format!(
                "{head}To: <sip:c@192.0.2.1>\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
                 Content-Length: 0\r\n\r\n"
            ),
            format!(
                "{head}CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 99\r\n\r\nv=0\r\n"
            ),
        ];
        // A fresh endpoint that got `raw` as one datagram.
        let fed = |raw: &str| {
            let mut ep = endpoint();
            ep.handle_input(
                Instant::now(),
                Input::Datagram {
                    transport: Transport::Udp,
                    remote: "203.0.113.5:40000".parse().unwrap(),
                    data: Bytes::from(raw.to_owned()),
                },
            );
            ep
        };
        for raw in &answered {
            let mut ep = fed(raw);
            let sent = ep
                .poll_transmit()
                .unwrap_or_else(|| panic!("no 400 for {raw}"));
            assert_eq!(
                sent.destination.addr,
                "203.0.113.5:40000".parse::<SocketAddr>().unwrap()
            );
            let resp = Message::parse(sent.payload).unwrap();
            assert_eq!(resp.status(), Some(400), "{raw}");
            assert!(resp.reason().unwrap().starts_with("Bad Request ("), "{raw}");
            assert_eq!(resp.call_id().unwrap(), "c10");
            assert_eq!(resp.via().unwrap().branch(), Some("z9hG4bKu"));
            assert_eq!(resp.to().unwrap().uri.to_string(), "sip:a@192.0.2.1");
            assert!(resp.to().unwrap().tag().is_some());
            assert_eq!(ep.stats().bad_requests_answered, 1);
            assert!(matches!(
                ep.poll_event(),
                Some(EndpointEvent::BadMessage { .. })
            ));
        }
        let ignored = [
            // An ACK is never answered; a response is not a request.
            format!("{}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n", head.replacen("INVITE", "ACK", 1)),
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu\r\nContent-Length: 9\r\n\r\n"
                .to_owned(),
            // No Call-ID, and a folded line.
            "INVITE sip:a@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu\r\n\r\n".to_owned(),
            format!("{head}CSeq: 1\r\n INVITE\r\n\r\n"),
            "\u{fffd}garbage\r\n\r\n".to_owned(),
        ];
        for raw in &ignored {
            let mut ep = fed(raw);
            assert!(ep.poll_transmit().is_none(), "answered {raw}");
            assert_eq!(ep.stats().malformed, 1, "{raw}");
        }
    }

    /// §9.2: the 200 to a CANCEL carries the To tag of the INVITE's
    /// provisional response.
    #[test]
    fn rfc3261_9_2_cancel_200_has_the_invites_to_tag() {
        let now = Instant::now();
        let mut ep = endpoint();
        let source: SocketAddr = "192.0.2.7:5060".parse().unwrap();
        let invite = invite("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKinv");
        let parsed = |message: Message| Input::Parsed {
            transport: Transport::Udp,
            connection: None,
            remote: source,
            message,
        };
        ep.handle_input(now, parsed(invite.clone()));
        let Some(EndpointEvent::Request { transaction, .. }) = ep.poll_event() else {
            panic!("the INVITE is not reported");
        };
        let ringing = Message::response_to(&invite, 180, "Ringing")
            .map(|b| b.to_tag("ring7"))
            .and_then(|b| b.build())
            .unwrap();
        ep.send_response(now, transaction, ringing).unwrap();
        while ep.poll_transmit().is_some() {}
        ep.handle_input(now, parsed(build_cancel(&invite).unwrap()));
        let ok = std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| Message::parse(t.payload).unwrap())
            .find(|m| m.cseq().is_ok_and(|c| c.method() == Method::Cancel))
            .expect("the CANCEL is answered");
        assert_eq!(ok.status(), Some(200));
        assert_eq!(ok.to().unwrap().tag(), Some("ring7"));
    }

    /// A Timer Trying cancelled by a quick 180 is not a wake-up: once the
    /// INVITE is answered, the next deadline is the transaction's own.
    #[test]
    fn rfc3261_17_2_1_cancelled_trying_is_no_deadline() {
        let now = Instant::now();
        let mut ep = endpoint();
        let invite = invite("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKinv;rport");
        ep.handle_input(
            now,
            Input::Parsed {
                transport: Transport::Udp,
                connection: None,
                remote: "192.0.2.7:5060".parse().unwrap(),
                message: invite.clone(),
            },
        );
        let trying_at = now + TimerConfig::default().trying_delay;
        assert_eq!(ep.poll_timeout(), Some(trying_at));
        let Some(EndpointEvent::Request {
            transaction,
            request,
            ..
        }) = ep.poll_event()
        else {
            panic!("the INVITE is not reported");
        };
        let ringing = Message::response_to(&request, 180, "Ringing")
            .map(|b| b.to_tag("t1"))
            .and_then(|b| b.build())
            .unwrap();
        ep.send_response(now, transaction, ringing).unwrap();
        assert_eq!(ep.poll_timeout(), None, "the 180 cancelled Timer Trying");
        let ok = Message::response_to(&request, 200, "OK")
            .map(|b| b.to_tag("t1"))
            .and_then(|b| b.build())
            .unwrap();
        ep.send_response(now, transaction, ok).unwrap();
        assert_eq!(
            ep.poll_timeout(),
            Some(now + TimerConfig::default().t1 * 64)
        );
        // Nothing fires at the old Timer Trying instant.
        ep.handle_timeout(trying_at);
        let sent: Vec<_> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        assert_eq!(sent.len(), 2, "the 180 and the 200, no 100 Trying");
        // RFC 6026: in Accepted a retransmitted INVITE is absorbed; the 2xx
        // is resent by the user's core, not by the transaction.
        ep.handle_input(
            trying_at,
            Input::Parsed {
                transport: Transport::Udp,
                connection: None,
                remote: "192.0.2.7:5060".parse().unwrap(),
                message: invite,
            },
        );
        assert!(ep.poll_transmit().is_none());
        assert!(ep.poll_event().is_none());
        assert_eq!(ep.stats().retransmissions_absorbed, 1);
    }

    /// §17.1.4: a request whose connection closed before its final
    /// response fails at once as a transport error instead of waiting out
    /// Timer F; one on another connection or transport, or one already
    /// answered, goes on.
    #[test]
    fn rfc3261_17_1_4_a_request_whose_connection_closed_fails_at_once() {
        let now = Instant::now();
        let mut ep = endpoint();
        let server: SocketAddr = "192.0.2.9:5060".parse().unwrap();
        let to = |transport, connection| Destination {
            transport,
            addr: server,
            connection,
        };
        let tcp = to(Transport::Tcp, None);
        let lost = ep
            .send_request(
                now,
                request("SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKlost"),
                tcp,
            )
            .unwrap();
        let pinned = ep
            .send_request(
                now,
                request("SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKpinned"),
                to(Transport::Tcp, Some(ConnectionId(3))),
            )
            .unwrap();
        let udp = ep
            .send_request(
                now,
                request("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKudp"),
                to(Transport::Udp, None),
            )
            .unwrap();
        let elsewhere = ep
            .send_request(
                now,
                request("SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKelse"),
                to(Transport::Tcp, Some(ConnectionId(8))),
            )
            .unwrap();
        let call = invite("SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKcall");
        let answered = ep.send_request(now, call.clone(), tcp).unwrap();
        let ok = Message::response_to(&call, 200, "OK")
            .map(|b| b.to_tag("t9"))
            .and_then(|b| b.build())
            .unwrap();
        ep.handle_input(
            now,
            Input::Parsed {
                transport: Transport::Tcp,
                connection: Some(ConnectionId(3)),
                remote: server,
                message: ok,
            },
        );
        assert!(matches!(
            ep.poll_event(),
            Some(EndpointEvent::Response { transaction, .. }) if transaction == answered
        ));
        // An INVITE that is ringing reached its next hop, which goes on.
        let ring = invite("SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKring");
        let ringing = ep.send_request(now, ring.clone(), tcp).unwrap();
        let response = Message::response_to(&ring, 180, "Ringing")
            .map(|b| b.to_tag("t8"))
            .and_then(|b| b.build())
            .unwrap();
        ep.handle_input(
            now,
            Input::Parsed {
                transport: Transport::Tcp,
                connection: Some(ConnectionId(3)),
                remote: server,
                message: response,
            },
        );
        assert!(matches!(
            ep.poll_event(),
            Some(EndpointEvent::Response { transaction, .. }) if transaction == ringing
        ));
        let mut closed = |connection, remote| {
            ep.handle_input(
                now,
                Input::ConnectionClosed {
                    connection: ConnectionId(connection),
                    transport: Transport::Tcp,
                    remote,
                },
            );
            let mut failed: Vec<ClientTxId> = std::iter::from_fn(|| ep.poll_event())
                .filter_map(|e| match e {
                    EndpointEvent::ClientTransportError { transaction } => Some(transaction),
                    _ => None,
                })
                .collect();
            failed.sort();
            failed
        };
        // Another connection to the server is open: only the requests
        // pinned to the closed one fail.
        assert_eq!(closed(8, None), vec![elsewhere]);
        let mut expected = vec![lost, pinned];
        expected.sort();
        assert_eq!(closed(3, Some(server)), expected, "udp {udp:?}");
    }

    /// On a stream, a request framed by its Content-Length that does not
    /// parse is answered 400 over its connection, and the message after
    /// it is read as usual.
    #[test]
    fn rfc3261_21_4_1_a_stream_request_that_does_not_parse_is_answered_400() {
        let now = Instant::now();
        let mut ep = endpoint();
        let bad = "OPTIONS sip:a@192.0.2.1 SIP/2.0\r\n\
                   Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKs1\r\n\
                   From: <sip:b@example.com>;tag=1\r\n\
                   To: <sip:a@192.0.2.1>\r\n\
                   Call-ID: s1\r\n\
                   CSeq: 1 OPTIONS\r\n\
                   Content-Length: 0\r\n\r\n";
        let good = request("SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKs2");
        let mut data = bad.as_bytes().to_vec();
        data.extend_from_slice(&good.to_bytes());
        ep.handle_input(
            now,
            Input::Stream {
                transport: Transport::Tcp,
                connection: ConnectionId(5),
                remote: "10.0.0.1:40000".parse().unwrap(),
                data: Bytes::from(data),
            },
        );
        let sent = ep.poll_transmit().expect("a 400 goes out");
        assert_eq!(sent.destination.connection, Some(ConnectionId(5)));
        let resp = Message::parse(sent.payload).unwrap();
        assert_eq!(resp.status(), Some(400));
        assert_eq!(resp.call_id().unwrap(), "s1");
        assert!(matches!(
            ep.poll_event(),
            Some(EndpointEvent::BadMessage { .. })
        ));
        assert!(matches!(
            ep.poll_event(),
            Some(EndpointEvent::Request { request, .. }) if request.call_id().unwrap() == "c1"
        ));
    }
}
