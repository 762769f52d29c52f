//! The loop that joins the transports to the sans-IO endpoint of `sip-core`:
//! what arrives is fed in with tokio's clock, what the endpoint wants sent
//! goes out, its timers are slept on.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use rand::RngCore;
use sip_core::endpoint::{self, Destination, Endpoint, EndpointEvent, Input, Transport};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tracing::debug;

use crate::transport::{
    CloseReason, ConnectionId, Incoming, IncomingEvent, OutboundMessage, TransportError,
    TransportKind, Transports, UdpReceiver, WeakTransports,
};
use crate::udp;

/// What [`Driver::next`] returns.
#[derive(Debug)]
#[non_exhaustive]
pub enum DriverEvent {
    /// Something from the endpoint.
    Endpoint(EndpointEvent),
    /// The caller's own deadline passed.
    Wakeup,
    /// A connection closed (by the peer, an error or idleness); the
    /// endpoint was told too. A flow's owner re-forms it from here.
    ConnectionClosed {
        /// The connection.
        connection: ConnectionId,
        /// The far end.
        remote: SocketAddr,
        /// Why.
        reason: CloseReason,
    },
    /// A send failed; the endpoint was told too.
    SendFailed {
        /// Where it was going.
        destination: Destination,
        /// Why.
        error: TransportError,
    },
}

/// Runs an [`Endpoint`] over [`Transports`].
///
/// The driver reads the UDP sockets itself, in the task that calls
/// [`Driver::next`]: a datagram goes from the socket through the parser into
/// the endpoint, and the answer out, without a task switch or a channel in
/// between. Connections still arrive through the [`Incoming`] channel.
#[derive(Debug)]
pub struct Driver<R> {
    transports: Transports,
    incoming: mpsc::Receiver<Incoming>,
    endpoint: Endpoint<R>,
    /// Connections the driver has seen, by the endpoint's number, with
    /// the peer's address.
    connections: HashMap<u64, (ConnectionId, SocketAddr)>,
    /// Past this many, closed ones are looked for and forgotten.
    connections_bound: usize,
    udp_local: Option<SocketAddr>,
    pending: VecDeque<DriverEvent>,
    /// The transmit being sent, kept until the send returns so a caller
    /// that drops [`Driver::next`] mid-send (in a `select!`) loses nothing.
    sending: Option<endpoint::Transmit>,
    /// The UDP sockets read here, as of `udp_generation`.
    udp: Vec<UdpReceiver>,
    udp_generation: Option<u64>,
    /// With more than one UDP socket: which one each peer last reached
    /// (peer to our address), so that what goes back leaves from the
    /// address the peer sent to (RFC 3261 §18.2.2, RFC 3581 §4).
    udp_peers: HashMap<SocketAddr, SocketAddr>,
    /// One receive buffer for every datagram.
    buf: Vec<u8>,
    /// One timer for the whole life of the driver, moved rather than
    /// re-created, and `armed` at this instant (`None`: not polled).
    sleep: Option<Pin<Box<Sleep>>>,
    armed: Option<Instant>,
    /// Messages for connections, each destination's in order on a task of
    /// its own, so a connect or write that hangs (up to the transport's
    /// 10 s timeouts) holds up only its destination, not the loop.
    streams: HashMap<StreamKey, StreamQueue>,
    stream_results_tx: mpsc::UnboundedSender<StreamSent>,
    stream_results: mpsc::UnboundedReceiver<StreamSent>,
    /// The names secure destinations' certificates are verified for.
    server_names: HashMap<(TransportKind, SocketAddr), String>,
}

/// One destination of connection messages: the transport and the peer's
/// address, that of the connection a message names when the driver knows
/// it. Requests and responses to one peer share it, whichever connection
/// each names and whatever address each would fall back to (a response's
/// is the peer's sent-by port, RFC 3261 §18.2.2), so they leave in the
/// order the endpoint queued them.
type StreamKey = (TransportKind, SocketAddr);

/// A message for a connection and the transmit it came from.
type StreamJob = (Destination, OutboundMessage);

/// A destination's queue as the driver sees it.
#[derive(Debug)]
struct StreamQueue {
    jobs: mpsc::UnboundedSender<StreamJob>,
    /// Messages handed over whose outcome has not come back.
    in_flight: usize,
    last_used: Instant,
}

/// How a connection send ended.
#[derive(Debug)]
struct StreamSent {
    key: StreamKey,
    destination: Destination,
    result: Result<Option<ConnectionId>, TransportError>,
}

/// A queue with nothing in flight for this long is closed (its task ends);
/// the driver alone decides, so no message can be left behind in it.
const STREAM_QUEUE_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends one destination's connection messages in order and reports each
/// outcome, until the driver closes the queue or the layer is gone.
async fn stream_sender(
    key: StreamKey,
    transports: WeakTransports,
    mut jobs: mpsc::UnboundedReceiver<StreamJob>,
    results: mpsc::UnboundedSender<StreamSent>,
) {
    while let Some((destination, out)) = jobs.recv().await {
        let result = send_job(&transports, out).await;
        let unreachable = result
            .as_ref()
            .err()
            .filter(|e| failed_to_connect(e))
            .cloned();
        if !report(&results, key, destination, result) {
            return;
        }
        // The destination could not be reached: what waited behind that
        // attempt for a new connection fails with it, rather than each
        // trying (and waiting out the connect timeout) in turn, so that a
        // message queued later is not held up for tens of seconds.
        // Messages for a connection that exists still go.
        let Some(error) = unreachable else { continue };
        let mut kept = Vec::new();
        while let Ok((destination, out)) = jobs.try_recv() {
            if out.connection.is_some() {
                kept.push((destination, out));
            } else if !report(&results, key, destination, Err(error.clone())) {
                return;
            }
        }
        for (destination, out) in kept {
            let result = send_job(&transports, out).await;
            if !report(&results, key, destination, result) {
                return;
            }
        }
    }
}

async fn send_job(
    transports: &WeakTransports,
    out: OutboundMessage,
) -> Result<Option<ConnectionId>, TransportError> {
    match transports.upgrade() {
        Some(layer) => layer.send(out).await.map(|sent| sent.connection),
        None => Err(TransportError::Shutdown),
    }
}

/// Passes a send's outcome to the driver; false once the driver is gone.
fn report(
    results: &mpsc::UnboundedSender<StreamSent>,
    key: StreamKey,
    destination: Destination,
    result: Result<Option<ConnectionId>, TransportError>,
) -> bool {
    results
        .send(StreamSent {
            key,
            destination,
            result,
        })
        .is_ok()
}

/// Whether a send failed because no connection could be opened.
fn failed_to_connect(error: &TransportError) -> bool {
    match error {
        TransportError::Timeout { operation } => matches!(*operation, "connect" | "handshake"),
        TransportError::Io { operation, .. } => *operation == "connect",
        // A WebSocket error may come from a frame on an open connection.
        TransportError::Tls(_) => true,
        _ => false,
    }
}

/// What one round of waiting brought.
enum Step {
    /// Input was fed to the endpoint.
    Fed,
    /// The timer fired.
    Timer,
    /// The transports shut down.
    Closed,
}

/// Datagrams read from one socket before the driver sends what they caused.
const UDP_BATCH: usize = 16;
/// Peers whose socket a driver with several UDP sockets remembers; past
/// this it starts afresh (a forgotten peer is answered from the socket of
/// its address family).
const UDP_PEERS: usize = 4096;

/// Connections the driver keeps track of before it forgets closed ones.
const KNOWN_CONNECTIONS: usize = 4096;

/// Named secure destinations a driver remembers; past this it starts
/// afresh (the caller names its servers again as it uses them).
const SERVER_NAMES: usize = 65_536;

/// Events taken from the channel in one round.
const CHANNEL_BATCH: usize = 16;

/// The endpoint's view of a transport kind.
pub fn core_transport(kind: TransportKind) -> Transport {
    match kind {
        TransportKind::Udp => Transport::Udp,
        TransportKind::Tcp => Transport::Tcp,
        TransportKind::Tls => Transport::Tls,
        TransportKind::Ws => Transport::Ws,
        TransportKind::Wss => Transport::Wss,
    }
}

/// This crate's view of an endpoint transport.
pub fn driver_transport(transport: Transport) -> TransportKind {
    match transport {
        Transport::Udp => TransportKind::Udp,
        Transport::Tcp => TransportKind::Tcp,
        Transport::Tls => TransportKind::Tls,
        Transport::Ws => TransportKind::Ws,
        Transport::Wss => TransportKind::Wss,
    }
}

/// tokio's clock as the `std` instant the core takes, so paused tests control it.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl<R: RngCore> Driver<R> {
    /// A driver for transports (already bound as needed) and an endpoint.
    pub fn new(
        transports: Transports,
        incoming: mpsc::Receiver<Incoming>,
        endpoint: Endpoint<R>,
    ) -> Self {
        let udp_local = transports
            .listeners()
            .into_iter()
            .find(|l| l.kind == TransportKind::Udp)
            .map(|l| l.local);
        transports.shared().claim_udp();
        let (stream_results_tx, stream_results) = mpsc::unbounded_channel();
        Driver {
            transports,
            incoming,
            endpoint,
            connections: HashMap::new(),
            connections_bound: KNOWN_CONNECTIONS,
            udp_local,
            pending: VecDeque::new(),
            sending: None,
            udp: Vec::new(),
            udp_generation: None,
            udp_peers: HashMap::new(),
            buf: Vec::new(),
            sleep: None,
            armed: None,
            streams: HashMap::new(),
            stream_results_tx,
            stream_results,
            server_names: HashMap::new(),
        }
    }

    /// Names the server at `addr` for `kind` (TLS or WSS): messages the
    /// driver sends there verify its certificate for `name` (the host of
    /// the SIP URI or the SRV target, RFC 5922 §3.1) and go over a
    /// connection verified for it, such as one opened with
    /// [`OutboundMessage::with_server_name`]. The endpoint's destinations
    /// carry only addresses; without a name a secure connection is
    /// verified for the IP address, which certificates seldom list.
    pub fn name_server(&mut self, kind: TransportKind, addr: SocketAddr, name: impl Into<String>) {
        if kind.is_secure() {
            // Bounded: a long-running phone names one entry per TLS peer
            // it called directly.
            if self.server_names.len() >= SERVER_NAMES
                && !self.server_names.contains_key(&(kind, addr))
            {
                self.server_names.clear();
            }
            self.server_names.insert((kind, addr), name.into());
        }
    }

    /// The endpoint, to send requests and responses.
    pub fn endpoint(&mut self) -> &mut Endpoint<R> {
        &mut self.endpoint
    }

    /// The transports, to bind or inspect.
    pub fn transports(&self) -> &Transports {
        &self.transports
    }

    /// Sends everything the endpoint has queued: datagrams at once, and
    /// messages for connections through their destination's queue, whose
    /// outcome [`next`](Self::next) reports (a failure as
    /// [`DriverEvent::SendFailed`]).
    ///
    /// Cancel-safe: a transmit whose send was interrupted is sent again by
    /// the next call (at worst a duplicate datagram, which SIP absorbs).
    pub async fn flush(&mut self) {
        self.refresh_udp();
        loop {
            let t = match self.sending.take() {
                Some(t) => t,
                None => match self.endpoint.poll_transmit() {
                    Some(t) => t,
                    None => break,
                },
            };
            self.sending = Some(t.clone());
            let kind = driver_transport(t.destination.transport);
            let result = match self.udp_socket(kind, t.destination.addr) {
                // The socket this driver reads: no lookup in the layer.
                Some((socket, local)) => {
                    udp::send_from(&socket, local, &t.payload, t.destination.addr).await
                }
                None => {
                    let mut out = OutboundMessage::new(kind, t.destination.addr, t.payload.clone());
                    if let Some(name) = self.server_names.get(&(kind, t.destination.addr)) {
                        out = out.with_server_name(name.clone());
                    }
                    if let Some(c) = t
                        .destination
                        .connection
                        .and_then(|c| self.connections.get(&c.0))
                    {
                        out = out.with_connection(c.0);
                    }
                    if kind != TransportKind::Udp {
                        self.queue_stream(kind, t.destination, out);
                        self.sending = None;
                        continue;
                    }
                    if let Some(local) = self.udp_local
                        && local.is_ipv4() == t.destination.addr.is_ipv4()
                    {
                        out = out.with_local(local);
                    }
                    self.transports.send(out).await
                }
            };
            self.sending = None;
            match result {
                Ok(sent) => {
                    if let Some(c) = sent.connection {
                        self.connections.insert(c.as_u64(), (c, t.destination.addr));
                    }
                }
                Err(error) => {
                    let now = now();
                    self.endpoint.handle_input(
                        now,
                        Input::TransportError {
                            destination: t.destination,
                        },
                    );
                    self.pending.push_back(DriverEvent::SendFailed {
                        destination: t.destination,
                        error,
                    });
                }
            }
        }
    }

    /// Hands a connection message to its destination's queue, starting the
    /// queue's task when there is none; then closes queues idle for
    /// [`STREAM_QUEUE_IDLE`] with nothing in flight.
    fn queue_stream(
        &mut self,
        kind: TransportKind,
        destination: Destination,
        out: OutboundMessage,
    ) {
        let now = now();
        let peer = destination
            .connection
            .and_then(|c| self.connections.get(&c.0))
            .map_or(destination.addr, |(_, remote)| *remote);
        let key = (kind, peer);
        // Idle queues are looked for only when a new one is due, not on
        // every message.
        if !self.streams.contains_key(&key) {
            self.streams.retain(|_, q| {
                q.in_flight > 0 || now.saturating_duration_since(q.last_used) < STREAM_QUEUE_IDLE
            });
        }
        let queue = self.streams.entry(key).or_insert_with(|| {
            let (jobs, receiver) = mpsc::unbounded_channel();
            tokio::spawn(stream_sender(
                key,
                self.transports.downgrade(),
                receiver,
                self.stream_results_tx.clone(),
            ));
            StreamQueue {
                jobs,
                in_flight: 0,
                last_used: now,
            }
        });
        queue.last_used = now;
        match queue.jobs.send((destination, out)) {
            Ok(()) => queue.in_flight += 1,
            // The task ended with the layer: the send fails as it would have.
            Err(_) => self.pending.push_back(DriverEvent::SendFailed {
                destination,
                error: TransportError::Shutdown,
            }),
        }
    }

    /// Waits, at most `limit`, until every connection message handed over
    /// has been sent or has failed, handling the outcomes: before the
    /// transports shut down, so the last messages (an ACK, a BYE) still
    /// leave.
    pub async fn settle(&mut self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.streams.values().any(|q| q.in_flight > 0) {
            match tokio::time::timeout_at(deadline, self.stream_results.recv()).await {
                Ok(Some(sent)) => self.stream_sent(sent),
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// What a connection send reported: the connection it used, or a failure
    /// the endpoint and the caller hear of.
    fn stream_sent(&mut self, sent: StreamSent) {
        if let Some(queue) = self.streams.get_mut(&sent.key) {
            queue.in_flight = queue.in_flight.saturating_sub(1);
        }
        match sent.result {
            Ok(Some(c)) => {
                // A connection named by the message keeps the remote it
                // was known by; a new one's is where it was opened to.
                self.connections
                    .entry(c.as_u64())
                    .or_insert((c, sent.destination.addr));
                // A send reported after its connection's close puts a
                // closed one back: those go when the map grows.
                if self.connections.len() > self.connections_bound {
                    let open: std::collections::HashSet<u64> = self
                        .transports
                        .connections()
                        .iter()
                        .map(|c| c.id.as_u64())
                        .collect();
                    self.connections.retain(|id, _| open.contains(id));
                    // As many open as that: look again at twice as many.
                    self.connections_bound = (self.connections.len() * 2).max(KNOWN_CONNECTIONS);
                }
            }
            Ok(None) => {}
            Err(error) => {
                self.endpoint.handle_input(
                    now(),
                    Input::TransportError {
                        destination: sent.destination,
                    },
                );
                self.pending.push_back(DriverEvent::SendFailed {
                    destination: sent.destination,
                    error,
                });
            }
        }
    }

    /// Runs I/O and timers until the endpoint has an event, `wakeup` passes,
    /// or the transports shut down (`None`). Cancel-safe (see [`flush`](Self::flush)),
    /// so it can race a command channel in `select!`.
    pub async fn next(&mut self, wakeup: Option<Instant>) -> Option<DriverEvent> {
        loop {
            self.flush().await;
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if let Some(ev) = self.endpoint.poll_event() {
                return Some(DriverEvent::Endpoint(ev));
            }
            let now = now();
            if wakeup.is_some_and(|w| w <= now) {
                return Some(DriverEvent::Wakeup);
            }
            // Timers already due run now, even while input keeps coming.
            if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                self.endpoint.handle_timeout(now);
                continue;
            }
            let deadline = [self.endpoint.poll_timeout(), wakeup]
                .into_iter()
                .flatten()
                .min();
            self.arm(deadline);
            match std::future::poll_fn(|cx| self.poll_input(cx)).await {
                Step::Fed => {}
                Step::Timer => {
                    self.armed = None;
                    self.endpoint.handle_timeout(self::now());
                }
                Step::Closed => return None,
            }
        }
    }

    /// Points the timer at `deadline`. Moving a tokio timer later costs
    /// nothing; it is re-registered only when it moves earlier.
    fn arm(&mut self, deadline: Option<Instant>) {
        let Some(at) = deadline else {
            self.armed = None;
            return;
        };
        if self.armed == Some(at) {
            return;
        }
        let at_tokio = tokio::time::Instant::from_std(at);
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(at_tokio),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at_tokio))),
        }
        self.armed = Some(at);
    }

    /// Picks up UDP sockets bound since, and drops them after a shutdown.
    fn refresh_udp(&mut self) {
        let generation = self.transports.shared().udp_generation();
        if self.udp_generation != Some(generation) {
            self.udp = self.transports.shared().udp_receivers();
            self.udp_generation = Some(generation);
        }
    }

    /// The UDP socket of ours to send `kind` to `destination` from, if it
    /// is UDP: the one the peer last reached, else the first bound if it
    /// is of the destination's address family, else the first that is.
    fn udp_socket(
        &self,
        kind: TransportKind,
        destination: SocketAddr,
    ) -> Option<(Arc<UdpSocket>, SocketAddr)> {
        if kind != TransportKind::Udp {
            return None;
        }
        let first = self.udp_local?;
        let bound = |local: SocketAddr| self.udp.iter().find(|r| r.local == local);
        let family = destination.is_ipv4();
        self.udp_peers
            .get(&destination)
            .and_then(|local| bound(*local))
            .or_else(|| (first.is_ipv4() == family).then(|| bound(first)).flatten())
            .or_else(|| self.udp.iter().find(|r| r.local.is_ipv4() == family))
            .map(|r| (r.socket.clone(), r.local))
    }

    /// Reads what is ready: datagrams from the UDP sockets (a few per
    /// socket, each into the endpoint at once), then the channel, then the
    /// timer.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        self.refresh_udp();
        let mut fed = false;
        if !self.udp.is_empty() && self.buf.is_empty() {
            self.buf = vec![0; udp::MAX_DATAGRAM];
        }
        let several = self.udp.len() > 1;
        for receiver in &self.udp {
            for _ in 0..UDP_BATCH {
                let mut buf = ReadBuf::new(&mut self.buf);
                match receiver.socket.poll_recv_from(cx, &mut buf) {
                    Poll::Ready(Ok(remote)) => {
                        fed = true;
                        if several {
                            if self.udp_peers.len() >= UDP_PEERS {
                                self.udp_peers.clear();
                            }
                            self.udp_peers.insert(remote, receiver.local);
                        }
                        match udp::datagram_event(buf.filled(), &receiver.limits) {
                            Some(IncomingEvent::Message(message)) => self.endpoint.handle_input(
                                now(),
                                Input::Parsed {
                                    transport: Transport::Udp,
                                    connection: None,
                                    remote,
                                    message,
                                },
                            ),
                            // The endpoint reads it again, answers 400 when
                            // the lines a response needs are readable, and
                            // counts it.
                            Some(IncomingEvent::BadMessage { .. }) => self.endpoint.handle_input(
                                now(),
                                Input::Datagram {
                                    transport: Transport::Udp,
                                    remote,
                                    data: bytes::Bytes::copy_from_slice(buf.filled()),
                                },
                            ),
                            _ => {}
                        }
                    }
                    // Nothing to tell the endpoint: no transaction is behind
                    // a failed receive.
                    Poll::Ready(Err(error)) => {
                        debug!(error = %error, "UDP receive failed");
                        fed = true;
                    }
                    Poll::Pending => break,
                }
            }
        }
        while let Poll::Ready(Some(sent)) = self.stream_results.poll_recv(cx) {
            self.stream_sent(sent);
            fed = true;
        }
        for _ in 0..CHANNEL_BATCH {
            match self.incoming.poll_recv(cx) {
                Poll::Ready(Some(incoming)) => {
                    self.feed(incoming);
                    fed = true;
                }
                Poll::Ready(None) if fed => break,
                Poll::Ready(None) => return Poll::Ready(Step::Closed),
                Poll::Pending => break,
            }
        }
        // Also after datagrams that fed nothing (keep-alives, garbage): the
        // socket may hold more, and no wake-up was registered for it.
        if fed || !self.pending.is_empty() {
            return Poll::Ready(Step::Fed);
        }
        if self.armed.is_some()
            && let Some(sleep) = &mut self.sleep
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Step::Timer);
        }
        Poll::Pending
    }

    fn feed(&mut self, incoming: Incoming) {
        let now = now();
        let transport = core_transport(incoming.kind);
        let connection = incoming.connection.map(|c| {
            self.connections.insert(c.as_u64(), (c, incoming.remote));
            endpoint::ConnectionId(c.as_u64())
        });
        match incoming.event {
            IncomingEvent::Message(message) => self.endpoint.handle_input(
                now,
                Input::Parsed {
                    transport,
                    connection,
                    remote: incoming.remote,
                    message,
                },
            ),
            IncomingEvent::ConnectionClosed(reason) => {
                if let Some(c) = connection {
                    let closed = self.connections.remove(&c.0);
                    // With another connection to the peer open, requests
                    // sent there may have gone over that one.
                    let another = self
                        .connections
                        .values()
                        .any(|(_, r)| *r == incoming.remote);
                    self.endpoint.handle_input(
                        now,
                        Input::ConnectionClosed {
                            connection: c,
                            transport,
                            remote: (!another).then_some(incoming.remote),
                        },
                    );
                    if let Some((connection, _)) = closed {
                        self.pending.push_back(DriverEvent::ConnectionClosed {
                            connection,
                            remote: incoming.remote,
                            reason,
                        });
                    }
                }
            }
            // A message framed on a connection that did not parse: the
            // endpoint reads it again and answers 400 when it can.
            IncomingEvent::BadMessage {
                message: Some(data),
                ..
            } => self.endpoint.handle_input(
                now,
                Input::Message {
                    transport,
                    connection,
                    remote: incoming.remote,
                    data,
                },
            ),
            IncomingEvent::Pong => {
                if let Some(c) = connection {
                    self.pending
                        .push_back(DriverEvent::Endpoint(EndpointEvent::KeepAlivePong {
                            connection: c,
                        }));
                }
            }
            // Other unparseable input was counted by the transport; a
            // transport error on receive has no transaction to tell.
            _ => {}
        }
    }
}
