//! The transport layer's public face: kinds, messages in and out, the handle.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use sip_core::{Message, ParseError, ParseLimits};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{Instrument, debug};

use crate::connection::{self, Command};
use crate::tls::{TlsClientConfig, TlsServerConfig};
use crate::udp;

/// A SIP transport (RFC 3261 §18, RFC 7118).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportKind {
    /// Datagrams over UDP.
    Udp,
    /// A byte stream over TCP.
    Tcp,
    /// A byte stream over TLS over TCP.
    Tls,
    /// WebSocket (RFC 7118), one SIP message per WebSocket message.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl TransportKind {
    /// All kinds, UDP first.
    pub const ALL: [TransportKind; 5] = [
        TransportKind::Udp,
        TransportKind::Tcp,
        TransportKind::Tls,
        TransportKind::Ws,
        TransportKind::Wss,
    ];

    /// Whether the transport delivers in order and without loss (everything
    /// but UDP), which decides the transaction timers (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        self != TransportKind::Udp
    }

    /// Whether the transport is encrypted and the peer authenticated (TLS, WSS).
    pub fn is_secure(self) -> bool {
        matches!(self, TransportKind::Tls | TransportKind::Wss)
    }

    /// The transport token of a Via header: `UDP`, `TCP`, `TLS`, `WS`, `WSS`.
    pub fn via_transport(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
            TransportKind::Ws => "WS",
            TransportKind::Wss => "WSS",
        }
    }

    /// The port used when a URI or SRV record gives none: 5060 for UDP and
    /// TCP, 5061 for TLS (RFC 3261 §19.1.2), 80 and 443 for WS and WSS.
    pub fn default_port(self) -> u16 {
        match self {
            TransportKind::Udp | TransportKind::Tcp => 5060,
            TransportKind::Tls => 5061,
            TransportKind::Ws => 80,
            TransportKind::Wss => 443,
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_transport())
    }
}

/// Names one connection (TCP, TLS, WS or WSS) for as long as the layer lives.
///
/// Identifiers are never reused, so a stale one finds no connection rather
/// than a different one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// The number behind the identifier.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Timeouts and limits of the whole layer.
///
/// Built from [`Default`] and the `with_*` methods; the fields are public to
/// read.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransportConfig {
    /// Most open connections, inbound and outbound together (including those
    /// still in their handshake). Beyond it, accepted connections are closed
    /// at once and sends that need a new connection fail. An eighth of it is
    /// kept for outbound connections, so peers connecting in cannot leave
    /// none for the registrar or proxy. Default 1024.
    pub max_connections: usize,
    /// Most accepted connections from one IP address; more are closed at
    /// once, so one host cannot take every slot. Default 32.
    pub max_connections_per_address: usize,
    /// A connection with no traffic in either direction for this long is
    /// closed; `None` keeps idle connections. Default 10 minutes.
    pub idle_timeout: Option<Duration>,
    /// Once the first byte of a message has arrived, the whole message must
    /// arrive within this time or the connection is closed: a peer cannot
    /// hold a connection open by trickling bytes. Default 32 s (64 × T1).
    pub read_timeout: Duration,
    /// Opening an outbound connection, TLS and WebSocket handshakes
    /// included. Default 10 s.
    pub connect_timeout: Duration,
    /// The TLS and WebSocket handshakes of an accepted connection. Default 10 s.
    pub handshake_timeout: Duration,
    /// Writing one message to a connection. Default 10 s.
    pub write_timeout: Duration,
    /// Limits for messages on outbound connections (listeners have their own).
    pub limits: ParseLimits,
    /// How outbound TLS and WSS connections verify servers; without it they
    /// cannot be opened.
    pub tls_client: Option<TlsClientConfig>,
    /// The request path of outbound WebSocket handshakes. Default `/`.
    pub websocket_path: String,
    /// Depth of the channel of [`Incoming`] events. When the application
    /// falls behind, reading from the network waits. Default 1024.
    pub channel_capacity: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_connections: 1024,
            max_connections_per_address: 32,
            idle_timeout: Some(Duration::from_secs(600)),
            read_timeout: Duration::from_secs(32),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            limits: ParseLimits::default(),
            tls_client: None,
            websocket_path: "/".to_owned(),
            channel_capacity: 1024,
        }
    }
}

impl TransportConfig {
    /// Sets [`TransportConfig::max_connections`].
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets [`TransportConfig::max_connections_per_address`].
    pub fn with_max_connections_per_address(mut self, max: usize) -> Self {
        self.max_connections_per_address = max;
        self
    }

    /// Sets [`TransportConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`TransportConfig::read_timeout`].
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Sets [`TransportConfig::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`TransportConfig::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`TransportConfig::write_timeout`].
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets [`TransportConfig::limits`].
    pub fn with_limits(mut self, limits: ParseLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`TransportConfig::tls_client`].
    pub fn with_tls_client(mut self, tls: TlsClientConfig) -> Self {
        self.tls_client = Some(tls);
        self
    }

    /// Sets [`TransportConfig::websocket_path`].
    pub fn with_websocket_path(mut self, path: impl Into<String>) -> Self {
        self.websocket_path = path.into();
        self
    }

    /// Sets [`TransportConfig::channel_capacity`] (at least 1).
    pub fn with_channel_capacity(mut self, capacity: usize) -> Self {
        self.channel_capacity = capacity.max(1);
        self
    }
}

/// Settings of one listener.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ListenerOptions {
    /// Limits on the messages it receives; over streams they also bound the
    /// bytes buffered per connection.
    pub limits: ParseLimits,
    /// The certificate for TLS and WSS listeners (required for those).
    pub tls: Option<TlsServerConfig>,
}

impl ListenerOptions {
    /// Default limits, no TLS.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`ListenerOptions::limits`].
    pub fn with_limits(mut self, limits: ParseLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`ListenerOptions::tls`].
    pub fn with_tls(mut self, tls: TlsServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// A message to send, with where and how.
///
/// ```
/// use sip_tokio::{OutboundMessage, TransportKind};
///
/// let out = OutboundMessage::new(TransportKind::Tls, "192.0.2.10:5061".parse()?, "OPTIONS ...")
///     .with_server_name("pbx.example.com");
/// assert_eq!(out.server_name.as_deref(), Some("pbx.example.com"));
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutboundMessage {
    /// The transport.
    pub kind: TransportKind,
    /// Where to send. For connections, also where to connect when no
    /// connection can be reused.
    pub destination: SocketAddr,
    /// The name a TLS or WSS server must prove (sent as SNI). Without it, the
    /// certificate must be issued for the destination's IP address. Only
    /// connections verified for this name are reused.
    pub server_name: Option<String>,
    /// The serialised message.
    pub bytes: Bytes,
    /// The connection to use, typically the one a request arrived on. If it
    /// has closed, the message goes to `destination` like one without a
    /// connection (RFC 3261 §18.2.2).
    pub connection: Option<ConnectionId>,
    /// For UDP, the local socket to send from, typically the one a request
    /// arrived on (RFC 3581 §4). Default: the first UDP socket of the
    /// destination's address family.
    pub local: Option<SocketAddr>,
}

impl OutboundMessage {
    /// A message to `destination` over `kind`.
    pub fn new(kind: TransportKind, destination: SocketAddr, bytes: impl Into<Bytes>) -> Self {
        OutboundMessage {
            kind,
            destination,
            server_name: None,
            bytes: bytes.into(),
            connection: None,
            local: None,
        }
    }

    /// A parsed or built message, serialised.
    pub fn from_message(kind: TransportKind, destination: SocketAddr, message: &Message) -> Self {
        Self::new(kind, destination, message.to_bytes())
    }

    /// Sets [`OutboundMessage::server_name`].
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Sets [`OutboundMessage::connection`].
    pub fn with_connection(mut self, connection: ConnectionId) -> Self {
        self.connection = Some(connection);
        self
    }

    /// Sets [`OutboundMessage::local`].
    pub fn with_local(mut self, local: SocketAddr) -> Self {
        self.local = Some(local);
        self
    }
}

/// What a successful [`Transports::send`] used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sent {
    /// The connection, for connection-oriented transports.
    pub connection: Option<ConnectionId>,
    /// The local address the message left from.
    pub local: SocketAddr,
}

/// Something that arrived, or happened to a connection.
#[derive(Debug)]
#[non_exhaustive]
pub struct Incoming {
    /// The transport.
    pub kind: TransportKind,
    /// The local address (the listener's or the connection's).
    pub local: SocketAddr,
    /// The peer: for UDP the source address of the datagram, which the core
    /// compares with the top Via to add `received` and fill `rport`
    /// (RFC 3261 §18.2.1, RFC 3581 §4).
    pub remote: SocketAddr,
    /// The connection, for connection-oriented transports.
    pub connection: Option<ConnectionId>,
    /// What happened.
    pub event: IncomingEvent,
}

impl Incoming {
    /// An outbound message back to the peer: the same transport and
    /// connection, the same local UDP socket, to the source address (for UDP
    /// that is where responses go when the request asked for `rport`,
    /// RFC 3581 §4).
    pub fn reply(&self, bytes: impl Into<Bytes>) -> OutboundMessage {
        OutboundMessage {
            kind: self.kind,
            destination: self.remote,
            server_name: None,
            bytes: bytes.into(),
            connection: self.connection,
            local: (self.kind == TransportKind::Udp).then_some(self.local),
        }
    }
}

/// What an [`Incoming`] reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum IncomingEvent {
    /// A message that parsed. The layer does not touch it: adding `received`
    /// and `rport` to the top Via of a request is the core's job.
    Message(Message),
    /// Input that is not a valid message. Nothing is answered here; the
    /// core may answer 400 when enough of the request was readable. Over a
    /// connection, a message that was framed correctly (by its
    /// Content-Length, or one WebSocket message) but did not parse is
    /// skipped, with its bytes in `message`, and the connection stays open;
    /// a framing error (no or a broken Content-Length, a message over the
    /// size limit) is followed by [`IncomingEvent::ConnectionClosed`].
    BadMessage {
        /// What is wrong, and where.
        error: ParseError,
        /// The message's bytes, when it was framed on a connection.
        message: Option<Bytes>,
    },
    /// A keep-alive pong: a single CRLF on a stream (RFC 5626 §4.4.1) or a
    /// WebSocket pong frame. Pings from the peer are answered by the layer.
    Pong,
    /// The connection is gone; its identifier will not be used again.
    ConnectionClosed(CloseReason),
    /// A failure that closed nothing the core knew of: a UDP receive error
    /// (`remote` is then the local address), or a failed TLS or WebSocket
    /// handshake of an accepted connection (`connection` is then `None`).
    TransportError(TransportError),
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed it.
    PeerClosed,
    /// [`Transports::close`] was called.
    Local,
    /// No traffic for [`TransportConfig::idle_timeout`].
    IdleTimeout,
    /// A message did not complete within [`TransportConfig::read_timeout`].
    ReadTimeout,
    /// The stream could not be split into messages (reported just before as
    /// [`IncomingEvent::BadMessage`]), or the WebSocket protocol was broken.
    FramingError,
    /// A write did not complete within [`TransportConfig::write_timeout`].
    WriteTimeout,
    /// Reading or writing failed.
    Io(std::io::ErrorKind),
}

/// What went wrong in the transport layer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No UDP socket to send from: bind one first, or `local` names a socket
    /// that is not bound.
    #[error("no UDP socket bound to send from")]
    NoUdpSocket,
    /// TLS and WSS listeners need [`ListenerOptions::tls`].
    #[error("a {kind} listener needs a TLS server configuration")]
    NoTlsServerConfig {
        /// The listener's transport.
        kind: TransportKind,
    },
    /// Outbound TLS and WSS need [`TransportConfig::tls_client`].
    #[error("{kind} needs a TLS client configuration")]
    NoTlsClientConfig {
        /// The message's transport.
        kind: TransportKind,
    },
    /// A server name that is neither a DNS name nor an IP address.
    #[error("invalid TLS server name")]
    InvalidServerName,
    /// [`TransportConfig::max_connections`] connections are open.
    #[error("connection limit of {limit} reached")]
    TooManyConnections {
        /// The configured limit.
        limit: usize,
    },
    /// [`TransportConfig::max_connections_per_address`] connections from
    /// this address are open (or the inbound share of
    /// [`TransportConfig::max_connections`] is used up).
    #[error("inbound connection limit of {limit} reached for {address}")]
    TooManyInbound {
        /// The peer's address.
        address: IpAddr,
        /// The limit reached.
        limit: usize,
    },
    /// The connection named in the call is not open.
    #[error("no such connection")]
    UnknownConnection,
    /// The connection closed before the message was written.
    #[error("connection closed")]
    ConnectionClosed,
    /// An operation did not complete in time.
    #[error("{operation} timed out")]
    Timeout {
        /// `connect`, `handshake` or `write`.
        operation: &'static str,
    },
    /// The TLS handshake failed, for example because the certificate is not
    /// trusted or not issued for the server name.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] Arc<std::io::Error>),
    /// The WebSocket handshake failed, for example because the server did
    /// not accept the `sip` subprotocol.
    #[error("WebSocket handshake failed: {0}")]
    WebSocket(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// A socket operation failed.
    #[error("{operation} failed: {source}")]
    Io {
        /// `bind`, `connect`, `send`, `receive` or `accept`.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The layer was shut down.
    #[error("transport layer shut down")]
    Shutdown,
}

impl TransportError {
    pub(crate) fn io(operation: &'static str, source: std::io::Error) -> Self {
        TransportError::Io {
            operation,
            source: Arc::new(source),
        }
    }
}

/// A bound listener, as reported by [`Transports::listeners`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerInfo {
    /// The transport.
    pub kind: TransportKind,
    /// The bound address (with the port the system chose for port 0).
    pub local: SocketAddr,
}

/// An open connection, as reported by [`Transports::connections`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// Its identifier.
    pub id: ConnectionId,
    /// The transport.
    pub kind: TransportKind,
    /// The local address, once connected.
    pub local: Option<SocketAddr>,
    /// The peer.
    pub remote: SocketAddr,
    /// Whether the peer opened it.
    pub inbound: bool,
    /// The name the server's certificate was verified for (outbound TLS and
    /// WSS only).
    pub server_name: Option<String>,
}

/// The transport layer: listeners, connections, and the channel of what
/// arrives. Cheap to clone; the layer shuts down (every socket closed, every
/// task stopped) when the last clone is dropped or [`Transports::shutdown`]
/// is called.
#[derive(Debug, Clone)]
pub struct Transports {
    owner: Arc<Owner>,
}

/// A handle that does not keep the layer alive (see [`Transports`]).
#[derive(Debug, Clone)]
pub(crate) struct WeakTransports(std::sync::Weak<Owner>);

impl WeakTransports {
    /// The layer, unless it was dropped.
    pub(crate) fn upgrade(&self) -> Option<Transports> {
        self.0.upgrade().map(|owner| Transports { owner })
    }
}

impl Transports {
    /// A handle for tasks that must not keep the layer alive.
    pub(crate) fn downgrade(&self) -> WeakTransports {
        WeakTransports(Arc::downgrade(&self.owner))
    }

    /// A layer with no listener yet, and the receiver of everything that
    /// arrives (except UDP datagrams once a [`Driver`](crate::Driver) reads
    /// the sockets). `bind` and `send` spawn their tasks on the current
    /// tokio runtime.
    pub fn new(config: TransportConfig) -> (Transports, mpsc::Receiver<Incoming>) {
        let (events, receiver) = mpsc::channel(config.channel_capacity.max(1));
        let shared = Arc::new(Shared {
            config,
            events,
            next_id: AtomicU64::new(1),
            udp_generation: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        });
        (
            Transports {
                owner: Arc::new(Owner { shared }),
            },
            receiver,
        )
    }

    /// The configuration.
    pub fn config(&self) -> &TransportConfig {
        &self.owner.shared.config
    }

    /// Binds a listener and returns its address. UDP binds a socket that
    /// also sends; the others accept connections. TLS and WSS need
    /// [`ListenerOptions::tls`].
    pub async fn bind(
        &self,
        kind: TransportKind,
        addr: SocketAddr,
        options: ListenerOptions,
    ) -> Result<SocketAddr, TransportError> {
        let shared = &self.owner.shared;
        if kind.is_secure() && options.tls.is_none() {
            return Err(TransportError::NoTlsServerConfig { kind });
        }
        let span = tracing::info_span!("sip_listener", kind = %kind);
        if kind == TransportKind::Udp {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|e| TransportError::io("bind", e))?;
            let local = socket
                .local_addr()
                .map_err(|e| TransportError::io("bind", e))?;
            let socket = Arc::new(socket);
            let mut state = shared.lock()?;
            // A driver that reads the UDP sockets itself takes this one too.
            let task = (!state.udp_claimed).then(|| {
                tokio::spawn(
                    udp::receive_loop(shared.clone(), socket.clone(), local, options.limits)
                        .instrument(span),
                )
                .abort_handle()
            });
            state.listeners.push(Listener {
                kind,
                local,
                udp: Some(socket),
                limits: options.limits,
                task,
            });
            shared.udp_generation.fetch_add(1, Ordering::Release);
            debug!(kind = %kind, "listener bound");
            return Ok(local);
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| TransportError::io("bind", e))?;
        let local = listener
            .local_addr()
            .map_err(|e| TransportError::io("bind", e))?;
        let limits = options.limits;
        let task = tokio::spawn(
            connection::accept_loop(shared.clone(), kind, listener, local, options)
                .instrument(span),
        );
        let mut state = shared.lock()?;
        state.listeners.push(Listener {
            kind,
            local,
            udp: None,
            limits,
            task: Some(task.abort_handle()),
        });
        debug!(kind = %kind, "listener bound");
        Ok(local)
    }

    /// Sends a message and waits until it was handed to the socket.
    ///
    /// UDP goes out from [`OutboundMessage::local`] or the first UDP socket
    /// of the destination's family. Connection-oriented transports use, in
    /// this order: the named connection if it is still open; an open
    /// connection of the same kind to or from the destination (an inbound
    /// connection from that address counts, RFC 3261 §18; for TLS and WSS
    /// with a server name, only a connection verified for that name); a new
    /// connection. Messages sent while a connection is being opened wait for
    /// it, so concurrent sends to one destination share one connection.
    pub async fn send(&self, message: OutboundMessage) -> Result<Sent, TransportError> {
        let shared = &self.owner.shared;
        if message.kind == TransportKind::Udp {
            return udp::send(shared, &message).await;
        }
        let (reply, result) = oneshot::channel();
        let id = shared.route(
            &message,
            Command::Send {
                bytes: message.bytes.clone(),
                reply,
            },
        )?;
        let id = match id {
            Route::Existing(id, commands, command) => {
                commands
                    .send(command)
                    .await
                    .map_err(|_| TransportError::ConnectionClosed)?;
                id
            }
            Route::Opening(id) => id,
        };
        let local = result
            .await
            .map_err(|_| TransportError::ConnectionClosed)??;
        Ok(Sent {
            connection: Some(id),
            local,
        })
    }

    /// Sends a keep-alive ping on a connection: a double CRLF on TCP and TLS
    /// (RFC 5626 §4.4.1), a ping frame on WebSocket. The pong arrives as
    /// [`IncomingEvent::Pong`].
    pub async fn ping(&self, connection: ConnectionId) -> Result<(), TransportError> {
        let commands = self.owner.shared.commands(connection)?;
        let (reply, result) = oneshot::channel();
        commands
            .send(Command::Ping { reply })
            .await
            .map_err(|_| TransportError::ConnectionClosed)?;
        result
            .await
            .map_err(|_| TransportError::ConnectionClosed)?
            .map(|_| ())
    }

    /// Closes a connection after the messages queued before this call. Its
    /// [`IncomingEvent::ConnectionClosed`] follows.
    pub async fn close(&self, connection: ConnectionId) -> Result<(), TransportError> {
        let commands = self.owner.shared.commands(connection)?;
        commands
            .send(Command::Close)
            .await
            .map_err(|_| TransportError::ConnectionClosed)
    }

    /// The bound listeners.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        let Ok(state) = self.owner.shared.lock() else {
            return Vec::new();
        };
        state
            .listeners
            .iter()
            .map(|l| ListenerInfo {
                kind: l.kind,
                local: l.local,
            })
            .collect()
    }

    /// The open connections (including those in their handshake).
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let Ok(state) = self.owner.shared.lock() else {
            return Vec::new();
        };
        let mut all: Vec<ConnectionInfo> = state
            .connections
            .iter()
            .map(|(id, c)| ConnectionInfo {
                id: *id,
                kind: c.kind,
                local: c.local,
                remote: c.remote,
                inbound: c.inbound,
                server_name: c.server_name.clone(),
            })
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Closes every socket and stops every task at once, without
    /// [`IncomingEvent::ConnectionClosed`] events. Later calls fail with
    /// [`TransportError::Shutdown`].
    pub fn shutdown(&self) {
        self.owner.shared.shutdown();
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }
}

/// Shuts the layer down when the last [`Transports`] clone goes.
#[derive(Debug)]
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

/// What the tasks share with the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: TransportConfig,
    events: mpsc::Sender<Incoming>,
    next_id: AtomicU64,
    /// Moves whenever the set of UDP sockets a driver reads may have changed
    /// (a bind, a claim, a shutdown), so the driver looks again.
    udp_generation: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    shut_down: bool,
    /// A driver reads the UDP sockets itself: no receive tasks.
    udp_claimed: bool,
    listeners: Vec<Listener>,
    connections: HashMap<ConnectionId, ConnectionEntry>,
}

#[derive(Debug)]
struct Listener {
    kind: TransportKind,
    local: SocketAddr,
    udp: Option<Arc<UdpSocket>>,
    limits: ParseLimits,
    /// The receive or accept task; none for a UDP socket a driver reads.
    task: Option<AbortHandle>,
}

/// A UDP socket that a driver reads itself.
#[derive(Debug, Clone)]
pub(crate) struct UdpReceiver {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) local: SocketAddr,
    pub(crate) limits: ParseLimits,
}

#[derive(Debug)]
struct ConnectionEntry {
    kind: TransportKind,
    local: Option<SocketAddr>,
    remote: SocketAddr,
    inbound: bool,
    server_name: Option<String>,
    commands: mpsc::Sender<Command>,
    task: Option<AbortHandle>,
}

/// Where a message goes.
enum Route {
    /// An open connection (or one being opened) takes the command.
    Existing(ConnectionId, mpsc::Sender<Command>, Command),
    /// A new connection, with the command already queued.
    Opening(ConnectionId),
}

/// Commands queued per connection.
pub(crate) const COMMAND_QUEUE: usize = 64;

impl Shared {
    fn lock(&self) -> Result<MutexGuard<'_, State>, TransportError> {
        // A panic while holding the lock leaves plain data behind; keep going.
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.shut_down {
            return Err(TransportError::Shutdown);
        }
        Ok(state)
    }

    fn shutdown(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.shut_down = true;
        for listener in state.listeners.drain(..) {
            if let Some(task) = listener.task {
                task.abort();
            }
        }
        self.udp_generation.fetch_add(1, Ordering::Release);
        for (_, connection) in state.connections.drain() {
            if let Some(task) = connection.task {
                task.abort();
            }
        }
    }

    /// Hands every UDP socket, bound now or later, to a driver that reads
    /// them itself (no task, no channel between the socket and the
    /// endpoint). Their receive tasks stop; a datagram one of them had read
    /// but not yet delivered is lost, as UDP may lose any.
    pub(crate) fn claim_udp(&self) {
        if let Ok(mut state) = self.lock() {
            state.udp_claimed = true;
            for listener in &mut state.listeners {
                if listener.udp.is_some()
                    && let Some(task) = listener.task.take()
                {
                    task.abort();
                }
            }
        }
        self.udp_generation.fetch_add(1, Ordering::Release);
    }

    /// See [`Shared::udp_receivers`].
    pub(crate) fn udp_generation(&self) -> u64 {
        self.udp_generation.load(Ordering::Acquire)
    }

    /// The UDP sockets a driver that claimed them reads; none after shutdown.
    pub(crate) fn udp_receivers(&self) -> Vec<UdpReceiver> {
        let Ok(state) = self.lock() else {
            return Vec::new();
        };
        if !state.udp_claimed {
            return Vec::new();
        }
        state
            .listeners
            .iter()
            .filter_map(|l| {
                l.udp.as_ref().map(|socket| UdpReceiver {
                    socket: socket.clone(),
                    local: l.local,
                    limits: l.limits,
                })
            })
            .collect()
    }

    /// Delivers an event; `false` when nobody listens any more.
    pub(crate) async fn emit(&self, incoming: Incoming) -> bool {
        self.events.send(incoming).await.is_ok()
    }

    /// The UDP socket to send from.
    pub(crate) fn udp_socket(
        &self,
        local: Option<SocketAddr>,
        destination: SocketAddr,
    ) -> Result<(Arc<UdpSocket>, SocketAddr), TransportError> {
        let state = self.lock()?;
        let mut sockets = state
            .listeners
            .iter()
            .filter_map(|l| l.udp.as_ref().map(|s| (s, l.local)));
        let found = match local {
            Some(local) => sockets.find(|(_, addr)| *addr == local),
            None => {
                let all: Vec<_> = sockets.collect();
                all.iter()
                    .find(|(_, addr)| addr.is_ipv4() == destination.is_ipv4())
                    .or(all.first())
                    .copied()
            }
        };
        found
            .map(|(socket, addr)| (socket.clone(), addr))
            .ok_or(TransportError::NoUdpSocket)
    }

    fn commands(&self, id: ConnectionId) -> Result<mpsc::Sender<Command>, TransportError> {
        let state = self.lock()?;
        state
            .connections
            .get(&id)
            .map(|c| c.commands.clone())
            .ok_or(TransportError::UnknownConnection)
    }

    /// Finds a connection to reuse for `message`, or starts opening one with
    /// `command` queued first.
    fn route(
        self: &Arc<Self>,
        message: &OutboundMessage,
        command: Command,
    ) -> Result<Route, TransportError> {
        let mut state = self.lock()?;
        if let Some(id) = message.connection
            && let Some(c) = state.connections.get(&id)
            && c.kind == message.kind
        {
            return Ok(Route::Existing(id, c.commands.clone(), command));
        }
        let reusable = state
            .connections
            .iter()
            .filter(|(_, c)| {
                c.kind == message.kind
                    && c.remote == message.destination
                    && match &message.server_name {
                        // A secure message without a name wants a server
                        // verified for the address: an outbound
                        // connection opened that way, never an inbound one
                        // (whose peer proved nothing) or one verified for
                        // a name.
                        None => {
                            !message.kind.is_secure() || (!c.inbound && c.server_name.is_none())
                        }
                        Some(name) => c.server_name.as_deref() == Some(name.as_str()),
                    }
            })
            .min_by_key(|(id, _)| **id);
        if let Some((id, c)) = reusable {
            return Ok(Route::Existing(*id, c.commands.clone(), command));
        }
        if message.kind.is_secure() && self.config.tls_client.is_none() {
            return Err(TransportError::NoTlsClientConfig { kind: message.kind });
        }
        let (id, commands, receiver) = self.register(
            &mut state,
            message.kind,
            message.destination,
            false,
            message.server_name.clone(),
        )?;
        // The queue is new and empty: this cannot fail.
        commands
            .try_send(command)
            .map_err(|_| TransportError::ConnectionClosed)?;
        let span = connection_span(id, message.kind);
        let task = tokio::spawn(
            connection::outbound(
                self.clone(),
                id,
                message.kind,
                message.destination,
                message.server_name.clone(),
                receiver,
            )
            .instrument(span),
        );
        if let Some(entry) = state.connections.get_mut(&id) {
            entry.task = Some(task.abort_handle());
        }
        debug!(connection = %id, kind = %message.kind, "opening connection");
        Ok(Route::Opening(id))
    }

    /// Registers a connection that was just accepted, within the cap.
    pub(crate) fn register_inbound(
        &self,
        kind: TransportKind,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<(ConnectionId, mpsc::Receiver<Command>), TransportError> {
        let mut state = self.lock()?;
        let (id, _, receiver) = self.register(&mut state, kind, remote, true, None)?;
        if let Some(entry) = state.connections.get_mut(&id) {
            entry.local = Some(local);
        }
        Ok((id, receiver))
    }

    /// Records the task of an accepted connection so shutdown can stop it.
    pub(crate) fn set_task(&self, id: ConnectionId, task: AbortHandle) {
        match self.lock() {
            Ok(mut state) => match state.connections.get_mut(&id) {
                Some(entry) => entry.task = Some(task),
                None => task.abort(),
            },
            Err(_) => task.abort(),
        }
    }

    /// Records the local address of an outbound connection once connected.
    pub(crate) fn set_local(&self, id: ConnectionId, local: SocketAddr) {
        if let Ok(mut state) = self.lock()
            && let Some(entry) = state.connections.get_mut(&id)
        {
            entry.local = Some(local);
        }
    }

    /// Forgets a connection: no new command can reach it.
    pub(crate) fn remove(&self, id: ConnectionId) {
        if let Ok(mut state) = self.lock() {
            state.connections.remove(&id);
        }
    }

    fn register(
        &self,
        state: &mut State,
        kind: TransportKind,
        remote: SocketAddr,
        inbound: bool,
        server_name: Option<String>,
    ) -> Result<(ConnectionId, mpsc::Sender<Command>, mpsc::Receiver<Command>), TransportError>
    {
        let open = state.connections.len();
        let max = self.config.max_connections;
        if open >= max {
            return Err(TransportError::TooManyConnections { limit: max });
        }
        if inbound {
            let inbound_limit = max - max / 8;
            let from_address = state
                .connections
                .values()
                .filter(|c| c.inbound && c.remote.ip() == remote.ip())
                .count();
            let limit = if open >= inbound_limit {
                Some(inbound_limit)
            } else {
                (from_address >= self.config.max_connections_per_address)
                    .then_some(self.config.max_connections_per_address)
            };
            if let Some(limit) = limit {
                return Err(TransportError::TooManyInbound {
                    address: remote.ip(),
                    limit,
                });
            }
        }
        let id = ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        state.connections.insert(
            id,
            ConnectionEntry {
                kind,
                local: None,
                remote,
                inbound,
                server_name,
                commands: commands.clone(),
                task: None,
            },
        );
        Ok((id, commands, receiver))
    }
}

/// The span every connection task runs in. It names no address: those are
/// personal data.
pub(crate) fn connection_span(id: ConnectionId, kind: TransportKind) -> tracing::Span {
    tracing::info_span!("sip_connection", id = id.0, kind = %kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn handle_and_futures_can_move_between_threads() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let (transports, receiver) = Transports::new(TransportConfig::default());
        assert_send(&transports);
        assert_send(&receiver);
        let addr: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        assert_send(&transports.bind(TransportKind::Udp, addr, ListenerOptions::new()));
        assert_send(&transports.send(OutboundMessage::new(TransportKind::Tcp, addr, "x")));
        assert_send(&transports.ping(ConnectionId(1)));
    }

    #[test]
    fn incoming_reply_goes_back_the_way_it_came() {
        let udp = Incoming {
            kind: TransportKind::Udp,
            local: "192.0.2.1:5060".parse().unwrap(),
            remote: "198.51.100.7:40000".parse().unwrap(),
            connection: None,
            event: IncomingEvent::Pong,
        };
        let reply = udp.reply("SIP/2.0 200 OK");
        assert_eq!(reply.destination, udp.remote);
        assert_eq!(reply.local, Some(udp.local));
        assert_eq!(reply.connection, None);

        let tcp = Incoming {
            kind: TransportKind::Tcp,
            connection: Some(ConnectionId(9)),
            ..udp
        };
        let reply = tcp.reply("SIP/2.0 200 OK");
        assert_eq!(reply.kind, TransportKind::Tcp);
        assert_eq!(reply.connection, Some(ConnectionId(9)));
        assert_eq!(reply.local, None);
    }
}
