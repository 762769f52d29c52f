//! [`TurnSocket`]: a UDP socket whose datagrams go through a TURN relay.
//!
//! It runs a [`TurnClient`] on a tokio task over one UDP socket to the
//! server and offers `send_to(data, peer)` / `recv_from(buf)` like
//! [`tokio::net::UdpSocket`], so RTP and RTCP can use the relayed address
//! unchanged. Peers see the relayed address as our address.
//!
//! ```no_run
//! use proxy_client::turn::{TurnConfig, TurnCredentials};
//! use proxy_client::turn_socket::TurnSocket;
//!
//! # async fn run() -> Result<(), proxy_client::turn_socket::TurnSocketError> {
//! let server = "127.0.0.1:3478".parse().unwrap();
//! let socket = TurnSocket::allocate(TurnConfig::new(server, TurnCredentials::long_term("alice", "secret"))).await?;
//! let relayed = socket.relayed_addr(); // put this in the SDP
//! let peer = "127.0.0.1:40000".parse().unwrap();
//! socket.add_peer(peer).await?; // let the peer reach us before we send
//! socket.send_to(b"rtp", peer).await?;
//! let mut buf = [0u8; 1500];
//! let (n, from) = socket.recv_from(&mut buf).await?;
//! # let _ = (relayed, n, from);
//! socket.close().await;
//! # Ok(()) }
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rustls_pki_types::ServerName;
use sip_tokio::TlsClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tracing::{Instrument, debug};

use crate::stun::{ChannelData, StunMessage};
use crate::turn::{
    AllocationState, TurnClient, TurnConfig, TurnCredentials, TurnError, TurnEvent, TurnStatistics,
};

/// Datagrams from peers held until [`TurnSocket::recv_from`] takes them;
/// beyond this, new ones are dropped (and counted).
const RECEIVE_QUEUE: usize = 1024;
/// How long [`TurnSocket::close`] waits for the server to confirm.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// Connecting (and the TLS handshake) to the TURN server must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A write to a TCP or TLS connection to the TURN server must finish
/// within this: a stalled connection is lost, not waited on for ever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the client reaches the TURN server. The relayed side is UDP in
/// every case (REQUESTED-TRANSPORT 17).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TurnTransport {
    /// UDP (port 3478 usually).
    Udp,
    /// TCP (RFC 8656 §3.1; usually port 3478).
    Tcp,
    /// TLS over TCP (usually port 5349 or 443), the certificate verified
    /// for `server_name`.
    Tls {
        /// The name the server's certificate must carry.
        server_name: String,
        /// Trusted roots.
        tls: TlsClientConfig,
    },
}

/// What can go wrong with a [`TurnSocket`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TurnSocketError {
    /// The TURN protocol failed (refused credentials, timeout, lost allocation...).
    #[error(transparent)]
    Turn(#[from] TurnError),
    /// A socket operation failed.
    #[error("{operation} failed: {source}")]
    Io {
        /// `bind`, `connect`, `TLS handshake`, `send` or `receive`.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The socket was closed.
    #[error("TURN socket closed")]
    Closed,
    /// [`TurnSocket::try_send_to`] found the send queue full (the path to
    /// the TURN server is stalled): the datagram was dropped.
    #[error("TURN send queue full: datagram dropped")]
    QueueFull,
    /// Connecting to the TURN server took too long.
    #[error("connecting to the TURN server timed out")]
    ConnectTimeout,
    /// The TLS server name is not a DNS name or IP address.
    #[error("invalid TLS server name {0:?}")]
    InvalidServerName(String),
}

/// REST-style credentials valid for `validity` from now (reads the system
/// clock; see [`TurnCredentials::rest`]).
#[must_use]
pub fn rest_credentials(shared_secret: &str, user: &str, validity: Duration) -> TurnCredentials {
    #[allow(
        clippy::disallowed_methods,
        reason = "the driver reads the wall clock for the credential's expiry"
    )]
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    TurnCredentials::rest(shared_secret, user, now + validity.as_secs())
}

#[derive(Debug)]
enum Command {
    Send {
        peer: SocketAddr,
        data: Vec<u8>,
    },
    AddPeer {
        peer: SocketAddr,
        reply: oneshot::Sender<Result<(), TurnError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

#[derive(Debug, Default)]
struct Shared {
    statistics: TurnStatistics,
    dropped_received: u64,
    failure: Option<TurnError>,
}

/// A relayed UDP socket. See the module docs. Dropping it releases the
/// allocation in the background.
#[derive(Debug)]
pub struct TurnSocket {
    commands: mpsc::Sender<Command>,
    data: tokio::sync::Mutex<mpsc::Receiver<(SocketAddr, Vec<u8>)>>,
    shared: Arc<Mutex<Shared>>,
    local: SocketAddr,
    relayed: SocketAddr,
    mapped: Option<SocketAddr>,
}

impl TurnSocket {
    /// Binds a UDP socket (on loopback for a loopback server, else on the
    /// unspecified address of the server's family) and allocates.
    ///
    /// # Errors
    ///
    /// [`TurnSocketError::Io`] when binding fails, [`TurnSocketError::Turn`]
    /// when the allocation fails ([`TurnError::Unauthorized`] for refused
    /// credentials, [`TurnError::Timeout`] without an answer).
    pub async fn allocate(config: TurnConfig) -> Result<TurnSocket, TurnSocketError> {
        let ip: IpAddr = match config.server.ip() {
            ip if ip.is_loopback() => ip,
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        Self::allocate_from(SocketAddr::new(ip, 0), config).await
    }

    /// As [`allocate`](Self::allocate), from the given local address.
    ///
    /// # Errors
    ///
    /// As [`allocate`](Self::allocate).
    pub async fn allocate_from(
        local: SocketAddr,
        config: TurnConfig,
    ) -> Result<TurnSocket, TurnSocketError> {
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| io_error("bind", e))?;
        let local = socket.local_addr().map_err(|e| io_error("bind", e))?;
        Self::start(Link::Udp(socket), local, config).await
    }

    /// Allocates over the given client-to-server transport: UDP as
    /// [`allocate`](Self::allocate), or a TCP or TLS connection to
    /// `config.server` for networks that let no UDP out.
    ///
    /// # Errors
    ///
    /// As [`allocate`](Self::allocate), plus [`TurnSocketError::ConnectTimeout`],
    /// [`TurnSocketError::InvalidServerName`] and connect or handshake failures.
    pub async fn allocate_over(
        transport: TurnTransport,
        config: TurnConfig,
    ) -> Result<TurnSocket, TurnSocketError> {
        let (tls, server_name) = match transport {
            TurnTransport::Udp => return Self::allocate(config).await,
            TurnTransport::Tcp => (None, None),
            TurnTransport::Tls { server_name, tls } => (Some(tls), Some(server_name)),
        };
        let connect = async {
            let stream = TcpStream::connect(config.server)
                .await
                .map_err(|e| io_error("connect", e))?;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().map_err(|e| io_error("connect", e))?;
            let link = match (tls, server_name) {
                (Some(tls), Some(name)) => {
                    let server_name = ServerName::try_from(name.clone())
                        .map_err(|_| TurnSocketError::InvalidServerName(name))?;
                    let stream = TlsConnector::from(tls.rustls().clone())
                        .connect(server_name, stream)
                        .await
                        .map_err(|e| io_error("TLS handshake", e))?;
                    Link::stream(stream)
                }
                _ => Link::stream(stream),
            };
            Ok::<_, TurnSocketError>((link, local))
        };
        let (link, local) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| TurnSocketError::ConnectTimeout)??;
        Self::start(link, local, config).await
    }

    async fn start(
        link: Link,
        local: SocketAddr,
        mut config: TurnConfig,
    ) -> Result<TurnSocket, TurnSocketError> {
        config.reliable = !matches!(link, Link::Udp(_));
        let server = config.server;
        let mut client = TurnClient::new(config, StdRng::from_os_rng());
        let now = crate::now();
        client.allocate(now)?;
        let (commands, command_rx) = mpsc::channel(256);
        let (data_tx, data_rx) = mpsc::channel(RECEIVE_QUEUE);
        let (ready_tx, ready_rx) = oneshot::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = Task {
            link,
            server,
            client,
            commands: command_rx,
            data: data_tx,
            shared: shared.clone(),
            ready: Some(ready_tx),
            waiters: Vec::new(),
            closing: None,
        };
        let span = tracing::debug_span!("turn_socket", server = %server);
        tokio::spawn(task.run().instrument(span));
        let (relayed, mapped) = ready_rx.await.map_err(|_| TurnSocketError::Closed)??;
        Ok(TurnSocket {
            commands,
            data: tokio::sync::Mutex::new(data_rx),
            shared,
            local,
            relayed,
            mapped,
        })
    }

    /// The relayed address: where peers send to reach us.
    #[must_use]
    pub fn relayed_addr(&self) -> SocketAddr {
        self.relayed
    }

    /// Our address as the TURN server saw it (server-reflexive).
    #[must_use]
    pub fn mapped_addr(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// The local address (of the UDP socket or the TCP connection).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Installs a permission (or binds a channel) for `peer` and waits for
    /// the server to confirm, so the peer can send first.
    ///
    /// # Errors
    ///
    /// [`TurnSocketError::Turn`] when the server refuses, [`TurnSocketError::Closed`].
    pub async fn add_peer(&self, peer: SocketAddr) -> Result<(), TurnSocketError> {
        let (reply, result) = oneshot::channel();
        self.commands
            .send(Command::AddPeer { peer, reply })
            .await
            .map_err(|_| self.closed())?;
        result.await.map_err(|_| self.closed())?.map_err(Into::into)
    }

    /// Sends a datagram to `peer` through the relay. Returns the length
    /// handed over; datagrams sent before the peer's permission exists are
    /// queued (a few) until it does.
    ///
    /// # Errors
    ///
    /// [`TurnError::FamilyMismatch`], [`TurnError::TooLarge`], the error
    /// that ended the allocation, or [`TurnSocketError::Closed`].
    pub async fn send_to(&self, data: &[u8], peer: SocketAddr) -> Result<usize, TurnSocketError> {
        let command = self.send_command(data, peer)?;
        self.commands
            .send(command)
            .await
            .map_err(|_| self.closed())?;
        Ok(data.len())
    }

    /// [`send_to`](Self::send_to) that never waits, for real-time media: a
    /// stalled path to the TURN server (a TCP or TLS connection whose
    /// writes block) fills the queue, and the datagram is dropped
    /// ([`TurnSocketError::QueueFull`]) rather than holding up its sender.
    ///
    /// # Errors
    ///
    /// As `send_to`, and `QueueFull`.
    pub fn try_send_to(&self, data: &[u8], peer: SocketAddr) -> Result<usize, TurnSocketError> {
        let command = self.send_command(data, peer)?;
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TurnSocketError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => self.closed(),
        })?;
        Ok(data.len())
    }

    /// The command that sends `data` to `peer`, once checked.
    fn send_command(&self, data: &[u8], peer: SocketAddr) -> Result<Command, TurnSocketError> {
        if peer.is_ipv4() != self.relayed.is_ipv4() {
            return Err(TurnError::FamilyMismatch {
                peer,
                relayed: self.relayed,
            }
            .into());
        }
        if data.len() > usize::from(u16::MAX) - 36 {
            return Err(TurnError::TooLarge(data.len()).into());
        }
        Ok(Command::Send {
            peer,
            data: data.to_vec(),
        })
    }

    /// Receives the next datagram from a peer: its length (cut to `buf`)
    /// and the peer's address.
    ///
    /// # Errors
    ///
    /// The error that ended the allocation, or [`TurnSocketError::Closed`].
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), TurnSocketError> {
        let mut data = self.data.lock().await;
        match data.recv().await {
            Some((peer, datagram)) => {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok((n, peer))
            }
            None => Err(self.closed()),
        }
    }

    /// The client's counters, plus datagrams dropped because nobody read them.
    #[must_use]
    pub fn statistics(&self) -> TurnStatistics {
        let shared = lock(&self.shared);
        let mut s = shared.statistics;
        s.dropped += shared.dropped_received;
        s
    }

    /// Releases the allocation and waits (up to 3 s) for the server to confirm.
    pub async fn close(self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Close { reply }).await.is_ok() {
            let _ = tokio::time::timeout(CLOSE_WAIT + Duration::from_secs(1), done).await;
        }
    }

    fn closed(&self) -> TurnSocketError {
        match lock(&self.shared).failure.clone() {
            Some(error) => TurnSocketError::Turn(error),
            None => TurnSocketError::Closed,
        }
    }
}

type Ready = oneshot::Sender<Result<(SocketAddr, Option<SocketAddr>), TurnSocketError>>;

/// The path to the TURN server.
enum Link {
    Udp(UdpSocket),
    Stream {
        reader: Box<dyn AsyncRead + Unpin + Send>,
        writer: Box<dyn AsyncWrite + Unpin + Send>,
        /// Bytes read but not yet a whole frame.
        buffer: Vec<u8>,
    },
}

impl Link {
    fn stream<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S) -> Link {
        let (reader, writer) = tokio::io::split(stream);
        Link::Stream {
            reader: Box::new(reader),
            writer: Box::new(writer),
            buffer: Vec::new(),
        }
    }

    /// Waits for input: a datagram, or bytes on the stream cut into STUN
    /// messages and ChannelData frames (RFC 8656 §12.5). Cancel-safe: the
    /// only await is the read itself. An empty list with `Ok` means nothing
    /// complete yet; `Err` a closed or broken stream.
    async fn receive(
        &mut self,
        server: SocketAddr,
        scratch: &mut [u8],
    ) -> io::Result<Vec<(SocketAddr, Vec<u8>)>> {
        match self {
            Link::Udp(socket) => {
                let (n, from) = socket.recv_from(scratch).await?;
                Ok(vec![(from, scratch[..n].to_vec())])
            }
            Link::Stream { reader, buffer, .. } => {
                let n = reader.read(scratch).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buffer.extend_from_slice(&scratch[..n]);
                let mut frames = Vec::new();
                loop {
                    let length = if ChannelData::is_channel_data(buffer) {
                        ChannelData::frame_len(buffer)
                    } else if buffer.first().is_some_and(|b| *b < 0x40) {
                        StunMessage::frame_len(buffer)
                    } else if buffer.is_empty() {
                        None
                    } else {
                        return Err(io::ErrorKind::InvalidData.into());
                    };
                    match length {
                        Some(len) if buffer.len() >= len => {
                            let rest = buffer.split_off(len);
                            frames.push((server, std::mem::replace(buffer, rest)));
                        }
                        _ => break,
                    }
                }
                Ok(frames)
            }
        }
    }

    async fn send(&mut self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        match self {
            Link::Udp(socket) => socket.send_to(data, to).await.map(|_| ()),
            Link::Stream { writer, .. } => {
                tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(data))
                    .await
                    .unwrap_or_else(|_| {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "write to the TURN server stalled",
                        ))
                    })
            }
        }
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::Udp(_) => "Link::Udp",
            Link::Stream { .. } => "Link::Stream",
        })
    }
}

struct Task {
    link: Link,
    server: SocketAddr,
    client: TurnClient<StdRng>,
    commands: mpsc::Receiver<Command>,
    data: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    shared: Arc<Mutex<Shared>>,
    ready: Option<Ready>,
    waiters: Vec<(SocketAddr, oneshot::Sender<Result<(), TurnError>>)>,
    closing: Option<(tokio::time::Instant, Option<oneshot::Sender<()>>)>,
}

impl Task {
    async fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        loop {
            if !self.pump().await {
                break;
            }
            let deadline = [
                self.client
                    .poll_timeout()
                    .map(tokio::time::Instant::from_std),
                self.closing.as_ref().map(|(d, _)| *d),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.link.receive(self.server, &mut buf) => match received {
                    Ok(frames) => {
                        let now = crate::now();
                        for (from, frame) in frames {
                            self.client.handle_input(now, from, &frame);
                        }
                    }
                    Err(error) if matches!(self.link, Link::Udp(_)) => {
                        // ICMP errors surface here on Linux; the transaction timers decide.
                        debug!(%error, "TURN socket receive error");
                    }
                    Err(error) => {
                        debug!(%error, "TURN connection closed");
                        self.client.handle_connection_lost();
                    }
                },
                command = self.commands.recv(), if self.closing.is_none() => match command {
                    Some(command) => self.command(command),
                    None => self.start_close(None),
                },
                () = sleep => {
                    if self.closing.as_ref().is_some_and(|(d, _)| *d <= tokio::time::Instant::now()) {
                        break;
                    }
                    self.client.handle_timeout(crate::now());
                }
            }
        }
        if let Some((_, Some(reply))) = self.closing.take() {
            let _ = reply.send(());
        }
    }

    fn command(&mut self, command: Command) {
        let now = crate::now();
        match command {
            Command::Send { peer, data } => {
                if let Err(error) = self.client.send_to(now, peer, &data) {
                    debug!(%error, "TURN send refused");
                }
            }
            Command::AddPeer { peer, reply } => match self.client.add_peer(now, peer) {
                Ok(()) => {
                    if self.client.is_peer_ready(peer) {
                        let _ = reply.send(Ok(()));
                    } else {
                        self.waiters.push((peer, reply));
                    }
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
            Command::Close { reply } => self.start_close(Some(reply)),
        }
    }

    fn start_close(&mut self, reply: Option<oneshot::Sender<()>>) {
        self.client.close(crate::now());
        self.closing = Some((tokio::time::Instant::now() + CLOSE_WAIT, reply));
    }

    /// Sends what the client queued and handles its events; false once the
    /// allocation is over.
    async fn pump(&mut self) -> bool {
        // Counted before the bytes leave, so a peer that has them never
        // sees counters that lack them.
        lock(&self.shared).statistics = self.client.statistics();
        while let Some(t) = self.client.poll_transmit() {
            if let Err(error) = self.link.send(&t.data, t.destination).await {
                debug!(%error, "TURN socket send error");
                if !matches!(self.link, Link::Udp(_)) {
                    self.client.handle_connection_lost();
                    break;
                }
            }
        }
        let mut alive = true;
        while let Some(event) = self.client.poll_event() {
            match event {
                TurnEvent::Allocated {
                    relayed, mapped, ..
                } => {
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Ok((relayed, mapped)));
                    }
                }
                TurnEvent::Data { peer, data } => {
                    let full = self.data.try_send((peer, data)).is_err();
                    if full {
                        lock(&self.shared).dropped_received += 1;
                    }
                }
                TurnEvent::ChannelBound { peer, .. } => self.answer(|p| p == peer, Ok(())),
                TurnEvent::PermissionInstalled { peer } => {
                    self.answer(|p| p.ip() == peer, Ok(()));
                }
                TurnEvent::PeerFailed { peer, error } => {
                    self.answer(|p| p == peer || p.ip() == peer.ip(), Err(error));
                }
                TurnEvent::Failed(error) => {
                    debug!(%error, "TURN allocation over");
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Err(error.clone().into()));
                    }
                    self.answer(|_| true, Err(error.clone()));
                    lock(&self.shared).failure = Some(error);
                    alive = false;
                }
                TurnEvent::Closed => {
                    self.answer(|_| true, Err(TurnError::NotAllocated));
                    alive = false;
                }
                _ => {}
            }
        }
        lock(&self.shared).statistics = self.client.statistics();
        alive && self.client.state() != AllocationState::Closed
    }

    fn answer(&mut self, matches: impl Fn(SocketAddr) -> bool, result: Result<(), TurnError>) {
        let mut keep = Vec::new();
        for (peer, reply) in self.waiters.drain(..) {
            if matches(peer) {
                let _ = reply.send(result.clone());
            } else {
                keep.push((peer, reply));
            }
        }
        self.waiters = keep;
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn io_error(operation: &'static str, source: io::Error) -> TurnSocketError {
    TurnSocketError::Io {
        operation,
        source: Arc::new(source),
    }
}
