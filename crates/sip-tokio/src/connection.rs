//! Connections: accepting, opening (TCP, TLS, WebSocket handshakes) and one
//! task per connection that reads, writes and keeps time.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use sip_core::{
    Framing, Message, ParseError, ParseErrorKind, ParseLimits, Position, StreamDecoder, StreamItem,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as Frame, Utf8Bytes};
use tracing::{Instrument, debug, trace};

use crate::transport::{
    CloseReason, ConnectionId, Incoming, IncomingEvent, ListenerOptions, Shared, TransportConfig,
    TransportError, TransportKind, connection_span,
};

/// What the handle asks of a connection task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Write a message; the reply carries the local address.
    Send {
        bytes: Bytes,
        reply: oneshot::Sender<Result<SocketAddr, TransportError>>,
    },
    /// Send a keep-alive ping.
    Ping {
        reply: oneshot::Sender<Result<SocketAddr, TransportError>>,
    },
    /// Close after what was queued before.
    Close,
}

/// Bytes read from the socket per call.
const READ_CHUNK: usize = 16 * 1024;
/// How long a closing connection waits for its TLS close_notify or
/// WebSocket close frame to leave.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A deadline far enough away to mean "none".
const NO_DEADLINE: Duration = Duration::from_secs(24 * 3600);

const PING: &[u8] = b"\r\n\r\n";
const PONG: &[u8] = b"\r\n";

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;

/// An established connection, after its handshakes.
enum Link {
    Stream(BoxIo),
    WebSocket(Box<WebSocketStream<Watched>>, Arc<ReadWatch>),
}

/// The fixed facts about a connection, for events.
#[derive(Debug, Clone, Copy)]
struct Peer {
    id: ConnectionId,
    kind: TransportKind,
    local: SocketAddr,
    remote: SocketAddr,
    limits: ParseLimits,
}

impl Peer {
    fn incoming(&self, event: IncomingEvent) -> Incoming {
        Incoming {
            kind: self.kind,
            local: self.local,
            remote: self.remote,
            connection: Some(self.id),
            event,
        }
    }
}

/// Accepts connections until the layer shuts down.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    kind: TransportKind,
    listener: TcpListener,
    local: SocketAddr,
    options: ListenerOptions,
) {
    let acceptor = options
        .tls
        .as_ref()
        .map(|tls| TlsAcceptor::from(tls.rustls().clone()));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off a little.
                debug!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (id, commands) = match shared.register_inbound(kind, local, remote) {
            Ok(registered) => registered,
            Err(TransportError::Shutdown) => return,
            Err(error) => {
                debug!(error = %error, "connection refused");
                continue;
            }
        };
        let task = tokio::spawn(
            inbound(
                shared.clone(),
                Peer {
                    id,
                    kind,
                    local,
                    remote,
                    limits: options.limits,
                },
                tcp,
                acceptor.clone(),
                commands,
            )
            .instrument(connection_span(id, kind)),
        );
        shared.set_task(id, task.abort_handle());
    }
}

async fn inbound(
    shared: Arc<Shared>,
    peer: Peer,
    tcp: TcpStream,
    acceptor: Option<TlsAcceptor>,
    commands: mpsc::Receiver<Command>,
) {
    debug!("connection accepted");
    let _ = tcp.set_nodelay(true);
    let handshake = accept_handshake(peer.kind, tcp, acceptor, peer.limits);
    let link = match timeout(shared.config.handshake_timeout, handshake).await {
        Ok(Ok(link)) => link,
        Ok(Err(error)) => return handshake_failed(&shared, peer, commands, error).await,
        Err(_) => {
            let error = TransportError::Timeout {
                operation: "handshake",
            };
            return handshake_failed(&shared, peer, commands, error).await;
        }
    };
    run(shared, peer, link, commands).await;
}

async fn handshake_failed(
    shared: &Shared,
    peer: Peer,
    commands: mpsc::Receiver<Command>,
    error: TransportError,
) {
    debug!(error = %error, "handshake of accepted connection failed");
    shared.remove(peer.id);
    fail_queued(commands, &error);
    let incoming = Incoming {
        connection: None,
        ..peer.incoming(IncomingEvent::TransportError(error))
    };
    shared.emit(incoming).await;
}

async fn accept_handshake(
    kind: TransportKind,
    tcp: TcpStream,
    acceptor: Option<TlsAcceptor>,
    limits: ParseLimits,
) -> Result<Link, TransportError> {
    let io: BoxIo = if kind.is_secure() {
        let acceptor = acceptor.ok_or(TransportError::NoTlsServerConfig { kind })?;
        let tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| TransportError::Tls(Arc::new(e)))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    if !matches!(kind, TransportKind::Ws | TransportKind::Wss) {
        return Ok(Link::Stream(io));
    }
    let watch = Arc::new(ReadWatch::default());
    let watched = Watched {
        inner: io,
        watch: watch.clone(),
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        watched,
        require_sip_subprotocol,
        Some(websocket_config(limits)),
    )
    .await
    .map_err(|e| TransportError::WebSocket(Arc::new(e)))?;
    watch.boundary();
    Ok(Link::WebSocket(Box::new(ws), watch))
}

/// Accepts a WebSocket handshake only for the `sip` subprotocol (RFC 7118 §4).
#[allow(clippy::result_large_err)] // the signature tungstenite asks for
fn require_sip_subprotocol(
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    let offers_sip = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case("sip"));
    if !offers_sip {
        debug!("WebSocket handshake without the sip subprotocol refused");
        let mut refusal = ErrorResponse::new(Some("the sip subprotocol is required".to_owned()));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("sip"),
    );
    Ok(response)
}

/// Opens an outbound connection and runs it.
pub(crate) async fn outbound(
    shared: Arc<Shared>,
    id: ConnectionId,
    kind: TransportKind,
    destination: SocketAddr,
    server_name: Option<String>,
    commands: mpsc::Receiver<Command>,
) {
    let config = &shared.config;
    let opened = timeout(
        config.connect_timeout,
        open(config, kind, destination, server_name.as_deref()),
    )
    .await
    .unwrap_or(Err(TransportError::Timeout {
        operation: "connect",
    }));
    let (link, local) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            debug!(error = %error, "connection could not be opened");
            shared.remove(id);
            fail_queued(commands, &error);
            return;
        }
    };
    shared.set_local(id, local);
    let limits = config.limits;
    let peer = Peer {
        id,
        kind,
        local,
        remote: destination,
        limits,
    };
    run(shared, peer, link, commands).await;
}

async fn open(
    config: &TransportConfig,
    kind: TransportKind,
    destination: SocketAddr,
    server_name: Option<&str>,
) -> Result<(Link, SocketAddr), TransportError> {
    let tcp = TcpStream::connect(destination)
        .await
        .map_err(|e| TransportError::io("connect", e))?;
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .map_err(|e| TransportError::io("connect", e))?;
    let io: BoxIo = if kind.is_secure() {
        let tls = config
            .tls_client
            .as_ref()
            .ok_or(TransportError::NoTlsClientConfig { kind })?;
        let name = match server_name {
            Some(name) => ServerName::try_from(name.to_owned())
                .map_err(|_| TransportError::InvalidServerName)?,
            None => ServerName::IpAddress(destination.ip().into()),
        };
        let stream = TlsConnector::from(tls.rustls().clone())
            .connect(name, tcp)
            .await
            .map_err(|e| TransportError::Tls(Arc::new(e)))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    if !matches!(kind, TransportKind::Ws | TransportKind::Wss) {
        return Ok((Link::Stream(io), local));
    }
    let scheme = if kind == TransportKind::Wss {
        "wss"
    } else {
        "ws"
    };
    // An IPv6 literal goes in brackets in a URI's authority (RFC 3986
    // §3.2.2), as `SocketAddr` writes it.
    let host = match server_name {
        Some(name) if name.parse::<std::net::Ipv6Addr>().is_ok() => {
            format!("[{name}]:{}", destination.port())
        }
        Some(name) => format!("{name}:{}", destination.port()),
        None => destination.to_string(),
    };
    let path = if config.websocket_path.starts_with('/') {
        config.websocket_path.clone()
    } else {
        format!("/{}", config.websocket_path)
    };
    let mut request = format!("{scheme}://{host}{path}")
        .into_client_request()
        .map_err(|e| TransportError::WebSocket(Arc::new(e)))?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("sip"),
    );
    let watch = Arc::new(ReadWatch::default());
    let watched = Watched {
        inner: io,
        watch: watch.clone(),
    };
    // tungstenite checks that the server picked the `sip` subprotocol.
    let (ws, _response) = tokio_tungstenite::client_async_with_config(
        request,
        watched,
        Some(websocket_config(config.limits)),
    )
    .await
    .map_err(|e| TransportError::WebSocket(Arc::new(e)))?;
    watch.boundary();
    Ok((Link::WebSocket(Box::new(ws), watch), local))
}

fn websocket_config(limits: ParseLimits) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_size))
        .max_frame_size(Some(limits.max_message_size))
}

/// Runs an established connection until it closes, then reports that.
async fn run(shared: Arc<Shared>, peer: Peer, link: Link, mut commands: mpsc::Receiver<Command>) {
    debug!("connection open");
    let reason = match link {
        Link::Stream(io) => drive_stream(&shared, &peer, io, &mut commands).await,
        Link::WebSocket(ws, watch) => {
            drive_websocket(&shared, &peer, *ws, &watch, &mut commands).await
        }
    };
    shared.remove(peer.id);
    fail_queued(commands, &TransportError::ConnectionClosed);
    if let Some(reason) = reason {
        debug!(reason = ?reason, "connection closed");
        shared
            .emit(peer.incoming(IncomingEvent::ConnectionClosed(reason)))
            .await;
    }
}

/// Answers whatever is still queued with `error`, refusing anything new.
fn fail_queued(mut commands: mpsc::Receiver<Command>, error: &TransportError) {
    commands.close();
    while let Ok(command) = commands.try_recv() {
        match command {
            Command::Send { reply, .. } | Command::Ping { reply } => {
                let _ = reply.send(Err(error.clone()));
            }
            Command::Close => {}
        }
    }
}

/// When the connection must next be looked at: the end of the read timeout
/// while a message is arriving, else the end of the idle timeout.
fn next_deadline(
    config: &TransportConfig,
    last_activity: Instant,
    started: Option<Instant>,
) -> Instant {
    match (started, config.idle_timeout) {
        (Some(started), _) => started + config.read_timeout,
        (None, Some(idle)) => last_activity + idle,
        (None, None) => Instant::now() + NO_DEADLINE,
    }
}

/// Which timeout, if any, has run out.
fn expired(
    config: &TransportConfig,
    last_activity: Instant,
    started: Option<Instant>,
) -> Option<CloseReason> {
    let now = Instant::now();
    match (started, config.idle_timeout) {
        (Some(started), _) if now >= started + config.read_timeout => {
            Some(CloseReason::ReadTimeout)
        }
        (None, Some(idle)) if now >= last_activity + idle => Some(CloseReason::IdleTimeout),
        _ => None,
    }
}

fn close_reason(error: &TransportError) -> CloseReason {
    match error {
        TransportError::Timeout { .. } => CloseReason::WriteTimeout,
        TransportError::Io { source, .. } => CloseReason::Io(source.kind()),
        _ => CloseReason::Io(std::io::ErrorKind::Other),
    }
}

async fn write_bytes(io: &mut BoxIo, bytes: &[u8], limit: Duration) -> Result<(), TransportError> {
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    match timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(TransportError::io("send", error)),
        Err(_) => Err(TransportError::Timeout { operation: "write" }),
    }
}

/// TCP and TLS: bytes through a [`StreamDecoder`].
async fn drive_stream(
    shared: &Shared,
    peer: &Peer,
    mut io: BoxIo,
    commands: &mut mpsc::Receiver<Command>,
) -> Option<CloseReason> {
    let config = &shared.config;
    let mut decoder = StreamDecoder::new(peer.limits);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut last_activity = Instant::now();
    let mut started: Option<Instant> = None;
    loop {
        let deadline = next_deadline(config, last_activity, started);
        let reason = tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Send { bytes, reply }) => {
                    let result = write_bytes(&mut io, &bytes, config.write_timeout).await;
                    // A ping sent as plain bytes is a ping all the same:
                    // its pong is the next lone CRLF.
                    if result.is_ok() && bytes.as_ref() == PING {
                        decoder.ping_sent();
                    }
                    last_activity = Instant::now();
                    trace!(size = bytes.len(), "message sent");
                    let failed = result.as_ref().err().map(close_reason);
                    let _ = reply.send(result.map(|()| peer.local));
                    failed
                }
                Some(Command::Ping { reply }) => {
                    let result = write_bytes(&mut io, PING, config.write_timeout).await;
                    if result.is_ok() {
                        decoder.ping_sent();
                    }
                    last_activity = Instant::now();
                    let failed = result.as_ref().err().map(close_reason);
                    let _ = reply.send(result.map(|()| peer.local));
                    failed
                }
                Some(Command::Close) | None => Some(CloseReason::Local),
            },
            read = io.read(&mut buf) => match read {
                Ok(0) => Some(CloseReason::PeerClosed),
                Ok(n) => {
                    let now = Instant::now();
                    last_activity = now;
                    decoder.push(&buf[..n]);
                    let mut completed = false;
                    let mut failed = None;
                    while let Some(item) = decoder.next_item() {
                        completed = true;
                        let event = match item {
                            Ok(StreamItem::Message(message)) => {
                                debug!(
                                    method = ?message.method(),
                                    status = ?message.status(),
                                    size = message.to_bytes().len(),
                                    "message received"
                                );
                                IncomingEvent::Message(message)
                            }
                            Ok(StreamItem::Ping) => {
                                trace!("keep-alive ping answered");
                                if let Err(error) =
                                    write_bytes(&mut io, PONG, config.write_timeout).await
                                {
                                    failed = Some(close_reason(&error));
                                    break;
                                }
                                continue;
                            }
                            Ok(StreamItem::Pong) => IncomingEvent::Pong,
                            Ok(_) => continue,
                            Err(error) => {
                                debug!(error = %error.kind, "bad message on stream");
                                if decoder.is_failed() {
                                    failed = Some(CloseReason::FramingError);
                                }
                                IncomingEvent::BadMessage {
                                    error,
                                    message: decoder.take_rejected(),
                                }
                            }
                        };
                        if !shared.emit(peer.incoming(event)).await {
                            return None;
                        }
                        if failed.is_some() {
                            break;
                        }
                    }
                    started = if decoder.buffered() == 0 {
                        None
                    } else if completed {
                        Some(now)
                    } else {
                        started.or(Some(now))
                    };
                    failed
                }
                Err(error) => Some(CloseReason::Io(error.kind())),
            },
            () = sleep_until(deadline) => expired(config, last_activity, started),
        };
        if let Some(reason) = reason {
            let _ = timeout(CLOSE_GRACE, io.shutdown()).await;
            return Some(reason);
        }
    }
}

async fn send_frame(
    ws: &mut WebSocketStream<Watched>,
    frame: Frame,
    limit: Duration,
) -> Result<(), TransportError> {
    match timeout(limit, ws.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(tungstenite::Error::Io(error))) => Err(TransportError::io("send", error)),
        Ok(Err(error)) => Err(TransportError::WebSocket(Arc::new(error))),
        Err(_) => Err(TransportError::Timeout { operation: "write" }),
    }
}

/// WebSocket: one SIP message per WebSocket message (RFC 7118 §5).
async fn drive_websocket(
    shared: &Shared,
    peer: &Peer,
    mut ws: WebSocketStream<Watched>,
    watch: &ReadWatch,
    commands: &mut mpsc::Receiver<Command>,
) -> Option<CloseReason> {
    let config = &shared.config;
    let mut last_activity = Instant::now();
    loop {
        let started = watch.pending_since();
        let deadline = next_deadline(config, last_activity, started);
        let reason = tokio::select! {
            // A message started arriving: look at the deadline again.
            () = watch.started.notified() => None,
            command = commands.recv() => match command {
                Some(Command::Send { bytes, reply }) => {
                    let size = bytes.len();
                    // Text frames for UTF-8 messages, binary frames otherwise.
                    let frame = match Utf8Bytes::try_from(bytes.clone()) {
                        Ok(text) => Frame::Text(text),
                        Err(_) => Frame::Binary(bytes),
                    };
                    let result = send_frame(&mut ws, frame, config.write_timeout).await;
                    last_activity = Instant::now();
                    trace!(size, "message sent");
                    let failed = result.as_ref().err().map(close_reason);
                    let _ = reply.send(result.map(|()| peer.local));
                    failed
                }
                Some(Command::Ping { reply }) => {
                    let result =
                        send_frame(&mut ws, Frame::Ping(Bytes::new()), config.write_timeout).await;
                    last_activity = Instant::now();
                    let failed = result.as_ref().err().map(close_reason);
                    let _ = reply.send(result.map(|()| peer.local));
                    failed
                }
                Some(Command::Close) | None => Some(CloseReason::Local),
            },
            frame = ws.next() => {
                watch.boundary();
                last_activity = Instant::now();
                let payload = match frame {
                    None => Some(Err(CloseReason::PeerClosed)),
                    Some(Ok(Frame::Text(text))) => Some(Ok(Bytes::from(text))),
                    Some(Ok(Frame::Binary(data))) => Some(Ok(data)),
                    Some(Ok(Frame::Ping(_))) => {
                        // tungstenite queued the pong; let it out.
                        match timeout(config.write_timeout, ws.flush()).await {
                            Ok(Ok(())) => None,
                            Ok(Err(_)) | Err(_) => Some(Err(CloseReason::WriteTimeout)),
                        }
                    }
                    Some(Ok(Frame::Pong(_))) => {
                        if !shared.emit(peer.incoming(IncomingEvent::Pong)).await {
                            return None;
                        }
                        None
                    }
                    // The close handshake completes on the next read.
                    Some(Ok(Frame::Close(_) | Frame::Frame(_))) => None,
                    Some(Err(error)) => Some(Err(websocket_error(shared, peer, error).await?)),
                };
                match payload {
                    Some(Ok(data)) => {
                        handle_websocket_message(shared, peer, &mut ws, data).await?
                    }
                    Some(Err(reason)) => Some(reason),
                    None => None,
                }
            },
            () = sleep_until(deadline) => expired(config, last_activity, started),
        };
        if let Some(reason) = reason {
            let _ = timeout(CLOSE_GRACE, ws.close(None)).await;
            return Some(reason);
        }
    }
}

/// One WebSocket message: a SIP message, or a CRLF keep-alive.
///
/// `None` when nobody listens any more; `Some(Some(reason))` to close.
async fn handle_websocket_message(
    shared: &Shared,
    peer: &Peer,
    ws: &mut WebSocketStream<Watched>,
    data: Bytes,
) -> Option<Option<CloseReason>> {
    if data.as_ref() == PING {
        trace!("keep-alive ping answered");
        let pong = Frame::Text(Utf8Bytes::from_static("\r\n"));
        return Some(
            send_frame(ws, pong, shared.config.write_timeout)
                .await
                .err()
                .map(|e| close_reason(&e)),
        );
    }
    let event = if data.as_ref() == PONG {
        IncomingEvent::Pong
    } else {
        let size = data.len();
        // A WebSocket message delimits the SIP message as a datagram does.
        match Message::parse_with(data.clone(), &peer.limits, Framing::Datagram) {
            Ok(message) => {
                debug!(
                    method = ?message.method(),
                    status = ?message.status(),
                    size,
                    "message received"
                );
                IncomingEvent::Message(message)
            }
            Err(error) => {
                debug!(error = %error.kind, size, "bad message on WebSocket");
                IncomingEvent::BadMessage {
                    error,
                    message: Some(data),
                }
            }
        }
    };
    if shared.emit(peer.incoming(event)).await {
        Some(None)
    } else {
        None
    }
}

/// Reports a WebSocket read error and says how the connection ends; `None`
/// when nobody listens any more.
async fn websocket_error(
    shared: &Shared,
    peer: &Peer,
    error: tungstenite::Error,
) -> Option<CloseReason> {
    match error {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            Some(CloseReason::PeerClosed)
        }
        tungstenite::Error::Io(error) => Some(CloseReason::Io(error.kind())),
        tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            size,
            max_size,
        }) => {
            debug!(size, limit = max_size, "oversize WebSocket message");
            let error = ParseError {
                kind: ParseErrorKind::MessageTooLarge {
                    size,
                    limit: max_size,
                },
                position: Position { line: 1, column: 1 },
            };
            if !shared
                .emit(peer.incoming(IncomingEvent::BadMessage {
                    error,
                    message: None,
                }))
                .await
            {
                return None;
            }
            Some(CloseReason::FramingError)
        }
        error => {
            debug!(error = %error, "WebSocket protocol error");
            Some(CloseReason::FramingError)
        }
    }
}

/// Notes when bytes of a WebSocket message started arriving, so a peer that
/// trickles a frame meets the read timeout. Bytes read together with the end
/// of the previous message count from the next read on.
#[derive(Debug, Default)]
struct ReadWatch {
    pending_since: Mutex<Option<Instant>>,
    started: Notify,
}

impl ReadWatch {
    fn pending_since(&self) -> Option<Instant> {
        *self
            .pending_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn boundary(&self) {
        *self
            .pending_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn bytes_read(&self) {
        let mut pending = self
            .pending_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.is_none() {
            *pending = Some(Instant::now());
            self.started.notify_one();
        }
    }
}

/// The stream under a WebSocket, reporting reads to a [`ReadWatch`].
struct Watched {
    inner: BoxIo,
    watch: Arc<ReadWatch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watch.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
