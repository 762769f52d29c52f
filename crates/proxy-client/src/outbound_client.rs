//! [`OutboundClient`]: the tokio driver of [`FlowManager`] over sip-tokio's
//! transports. It opens the flows (TCP, TLS, WS, WSS), registers on each with
//! `+sip.instance`, `reg-id`, `ob` and the push parameters, answers
//! challenges, refreshes, pings, and replaces failed flows.
//!
//! ```no_run
//! use proxy_client::outbound::{OutboundConfig, ProxyTarget};
//! use proxy_client::outbound_client::{OutboundClient, OutboundClientConfig, OutboundEvent};
//! use proxy_client::InstanceId;
//! use sip_core::endpoint::Transport;
//!
//! # async fn run(instance: InstanceId) -> Result<(), Box<dyn std::error::Error>> {
//! // `instance` was generated once with InstanceId::generate and stored.
//! let proxies = vec![ProxyTarget::new(Transport::Tls, "192.0.2.10:5061".parse()?)
//!     .with_server_name("sip.example.com")];
//! let config = OutboundClientConfig::new("sip:example.com", "sip:alice@example.com", "alice",
//!         instance, OutboundConfig::new(proxies))
//!     .with_credentials("alice", "secret");
//! let (handle, mut events) = OutboundClient::spawn(config)?;
//! while let Some(event) = events.recv().await {
//!     if let OutboundEvent::Registered { reg_id, expires, .. } = event {
//!         println!("flow {reg_id} registered for {expires} s");
//!         break;
//!     }
//! }
//! handle.shutdown().await; // un-registers, closes the flows
//! # Ok(()) }
//! ```
//!
//! Signalling travels over the flows both ways: incoming requests (an INVITE
//! for this user) come out as [`OutboundEvent::Request`], answered with
//! [`OutboundHandle::respond`]; the app's own requests go with
//! [`OutboundHandle::send_request`] (responses as [`OutboundEvent::Response`]),
//! ACKs for 2xx with [`OutboundHandle::send_stateless`]. The dialog layer
//! stays with the app; [`OutboundEvent::FlowUp`] gives the Contact and Via
//! to put in its requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sip_core::auth::DigestClient;
use sip_core::endpoint::{
    self, ClientTxId, Destination, Endpoint, EndpointConfig, EndpointEvent, Input, ServerTxId,
    Transport,
};
use sip_core::registration::{
    Registration, RegistrationConfig, RegistrationEvent, RegistrationState,
};
use sip_core::{Message, Secret, Uri};
use sip_tokio::{
    ConnectionId, Incoming, IncomingEvent, OutboundMessage, Resolver, ServerLocator,
    TransportConfig, TransportKind, Transports, core_transport, driver_transport,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, warn};

use crate::InstanceId;
use crate::outbound::{
    FlowAction, FlowFailure, FlowId, FlowManager, FlowState, FlowStatus, OutboundConfig,
    OutboundError, ProxyTarget, contact_params, contact_uri,
};
use crate::push::{PushOutcome, PushState, PushToken};

/// How long [`OutboundHandle::shutdown`] waits for the un-registrations.
const UNREGISTER_WAIT: Duration = Duration::from_secs(3);

/// What the client registers and where.
#[derive(Debug, Clone)]
pub struct OutboundClientConfig {
    /// The registrar's URI (Request-URI of REGISTER), e.g. `sip:example.com`.
    pub registrar: String,
    /// The address of record, e.g. `sip:alice@example.com`.
    pub aor: String,
    /// The user part of our Contact.
    pub contact_user: String,
    /// Digest user name and password, if the registrar challenges.
    pub credentials: Option<(String, Secret)>,
    /// Requested registration expiry (default 600 s).
    pub expires: u32,
    /// This installation's instance ID (persisted by the app).
    pub instance: InstanceId,
    /// The flows.
    pub outbound: OutboundConfig,
    /// Transport settings (TLS client configuration for TLS and WSS).
    pub transport: TransportConfig,
    /// The push token, if the app has one.
    pub push: Option<PushToken>,
    /// Put the flow's proxy in a Route header with `lr` and `ob` (RFC 5626
    /// §4.2.1), for a relay proxy in front of a separate registrar.
    /// Default on.
    pub route_via_proxy: bool,
}

impl OutboundClientConfig {
    /// A configuration with the defaults of each field.
    #[must_use]
    pub fn new(
        registrar: &str,
        aor: &str,
        contact_user: &str,
        instance: InstanceId,
        outbound: OutboundConfig,
    ) -> OutboundClientConfig {
        OutboundClientConfig {
            registrar: registrar.to_owned(),
            aor: aor.to_owned(),
            contact_user: contact_user.to_owned(),
            credentials: None,
            expires: 600,
            instance,
            outbound,
            transport: TransportConfig::default(),
            push: None,
            route_via_proxy: true,
        }
    }

    /// Digest credentials.
    #[must_use]
    pub fn with_credentials(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_owned(), Secret::new(password)));
        self
    }

    /// The transport settings.
    #[must_use]
    pub fn with_transport(mut self, transport: TransportConfig) -> Self {
        self.transport = transport;
        self
    }

    /// A push token for the Contact.
    #[must_use]
    pub fn with_push(mut self, token: PushToken) -> Self {
        self.push = Some(token);
        self
    }
}

/// What the client reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum OutboundEvent {
    /// A flow is registered and kept alive.
    FlowUp {
        /// Its reg-id.
        reg_id: u32,
        /// Index of its proxy.
        proxy: usize,
        /// The Contact URI for dialog-forming requests on it: the registered
        /// one without the push parameters, which go on REGISTERs only (RFC
        /// 8599 §4.1: the peer must not learn the device's push token).
        contact: String,
        /// The Via sent-by of requests on this flow, e.g. `SIP/2.0/TLS 192.0.2.4:40312`.
        via: String,
    },
    /// A flow failed; a replacement is on its way or backing off.
    FlowFailed {
        /// Its reg-id.
        reg_id: u32,
        /// Index of its proxy.
        proxy: usize,
        /// Why.
        reason: FlowFailure,
    },
    /// No proxy is eligible for the reg-id until then.
    BackingOff {
        /// The reg-id.
        reg_id: u32,
        /// When the next attempt goes out.
        until: Instant,
    },
    /// A REGISTER on a flow succeeded (first or refresh).
    Registered {
        /// The reg-id.
        reg_id: u32,
        /// Granted expiry in seconds.
        expires: u32,
        /// The Contact URI for dialog-forming requests, as in
        /// [`OutboundEvent::FlowUp`].
        contact: String,
    },
    /// A REGISTER failed; the flow is replaced.
    RegistrationFailed {
        /// The reg-id.
        reg_id: u32,
        /// The status (408 without an answer).
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The proxy answered 555: registering again without push parameters.
    PushRefused {
        /// The reg-id.
        reg_id: u32,
    },
    /// Whether the registrar said it will push (its 2xx named the token's
    /// service in `Feature-Caps: *;+sip.pns`, RFC 8599 §4.1.1): sent when
    /// that changes. Without it the app must not count on pushes and
    /// should stay awake to take calls.
    PushConfirmation {
        /// The reg-id of the flow the 2xx came on.
        reg_id: u32,
        /// Whether pushes will come.
        confirmed: bool,
    },
    /// A response to a request sent with [`OutboundHandle::send_request`]
    /// (provisional ones too; the last one is final).
    Response {
        /// The request's identifier.
        request: RequestId,
        /// The response.
        response: Message,
    },
    /// A 2xx retransmission for an INVITE whose transaction has ended: the
    /// dialog layer sends its ACK again.
    StrayResponse {
        /// The response.
        response: Message,
    },
    /// A request sent with [`OutboundHandle::send_request`] got no final
    /// response: no flow was up, the transport failed, or Timer B/F fired.
    RequestFailed {
        /// The request's identifier.
        request: RequestId,
        /// What happened.
        reason: RequestFailure,
    },
    /// A request arrived on a flow; answer it with [`OutboundHandle::respond`].
    Request {
        /// The flow's reg-id, if it came on one.
        reg_id: Option<u32>,
        /// The server transaction to answer through.
        transaction: ServerTxId,
        /// The request.
        request: Message,
    },
}

/// Names a request sent with [`OutboundHandle::send_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

/// Why a request sent over a flow got no final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestFailure {
    /// No flow was up (or not the one asked for).
    NoFlow,
    /// The request was refused by the transaction layer (no Via branch,
    /// duplicate branch, a response instead of a request).
    Rejected,
    /// The flow's transport failed.
    TransportError,
    /// No final response in time (Timer B or F).
    TimedOut,
}

/// The client is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the outbound client has stopped")]
pub struct ClientStopped;

#[derive(Debug)]
enum Command {
    SendRequest {
        id: RequestId,
        request: Message,
        reg_id: Option<u32>,
    },
    SendStateless {
        message: Message,
        reg_id: Option<u32>,
    },
    Cancel(RequestId),
    SetPush(Option<PushToken>),
    Wake,
    Respond(ServerTxId, Message),
    Shutdown(oneshot::Sender<()>),
}

/// Controls a running [`OutboundClient`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboundHandle {
    commands: mpsc::UnboundedSender<Command>,
    next_request: Arc<std::sync::atomic::AtomicU64>,
    status: Arc<Mutex<Vec<FlowStatus>>>,
    transports: Transports,
}

impl OutboundHandle {
    /// Hands over a new push token (or removes it with `None`). If the
    /// Contact changes, every flow registers again.
    ///
    /// # Errors
    ///
    /// [`ClientStopped`].
    pub fn set_push_token(&self, token: Option<PushToken>) -> Result<(), ClientStopped> {
        self.commands
            .send(Command::SetPush(token))
            .map_err(|_| ClientStopped)
    }

    /// The app was woken by a push notification: re-register at once on the
    /// live flows, and reconnect the others without waiting out the back-off.
    ///
    /// # Errors
    ///
    /// [`ClientStopped`].
    pub fn woken_by_push(&self) -> Result<(), ClientStopped> {
        self.commands.send(Command::Wake).map_err(|_| ClientStopped)
    }

    /// Sends a request (INVITE, MESSAGE, OPTIONS, BYE, ...) in a client
    /// transaction over the flow with `reg_id`, or any flow that is up. The
    /// request carries its own top Via with a `z9hG4bK` branch, built from
    /// the flow's [`OutboundEvent::FlowUp`] `via`; dialog-forming requests use
    /// its `contact`. Responses come as [`OutboundEvent::Response`], failures
    /// as [`OutboundEvent::RequestFailed`].
    ///
    /// # Errors
    ///
    /// [`ClientStopped`].
    pub fn send_request(
        &self,
        request: Message,
        reg_id: Option<u32>,
    ) -> Result<RequestId, ClientStopped> {
        let id = RequestId(
            self.next_request
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        self.commands
            .send(Command::SendRequest {
                id,
                request,
                reg_id,
            })
            .map_err(|_| ClientStopped)?;
        Ok(id)
    }

    /// Sends a message outside any transaction over a flow (the ACK for a
    /// 2xx). Dropped when no flow is up.
    ///
    /// # Errors
    ///
    /// [`ClientStopped`].
    pub fn send_stateless(
        &self,
        message: Message,
        reg_id: Option<u32>,
    ) -> Result<(), ClientStopped> {
        self.commands
            .send(Command::SendStateless { message, reg_id })
            .map_err(|_| ClientStopped)
    }

    /// Cancels an INVITE sent with [`send_request`](Self::send_request)
    /// (CANCEL goes once a provisional response arrived).
    ///
    /// # Errors
    ///
    /// [`ClientStopped`].
    pub fn cancel(&self, request: RequestId) -> Result<(), ClientStopped> {
        self.commands
            .send(Command::Cancel(request))
            .map_err(|_| ClientStopped)
    }

    /// Answers a request from [`OutboundEvent::Request`].
    ///
    /// # Errors
    ///
    /// [`ClientStopped`].
    pub fn respond(&self, transaction: ServerTxId, response: Message) -> Result<(), ClientStopped> {
        self.commands
            .send(Command::Respond(transaction, response))
            .map_err(|_| ClientStopped)
    }

    /// Every reg-id's state.
    #[must_use]
    pub fn status(&self) -> Vec<FlowStatus> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The transports the flows run on (to inspect connections).
    #[must_use]
    pub fn transports(&self) -> &Transports {
        &self.transports
    }

    /// Un-registers every flow (waiting up to 3 s for the answers), closes
    /// the flows and stops.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown(reply)).is_ok() {
            let _ = tokio::time::timeout(UNREGISTER_WAIT + Duration::from_secs(2), done).await;
        }
    }
}

/// Finds the outbound-proxy set for a SIP URI through DNS (RFC 3263: NAPTR,
/// SRV, A/AAAA), keeping the stream transports a flow can use.
///
/// # Errors
///
/// The locator's [`sip_tokio::ResolveError`], or `NotFound` when the URI
/// does not parse or no stream target is left.
pub async fn discover_proxies<R: Resolver>(
    locator: &ServerLocator<R>,
    uri: &str,
) -> Result<Vec<ProxyTarget>, sip_tokio::ResolveError> {
    let parsed = Uri::parse(uri).map_err(|_| sip_tokio::ResolveError::NotFound)?;
    let sip = parsed.as_sip().ok_or(sip_tokio::ResolveError::NotFound)?;
    let targets = locator.locate(sip).await?;
    let proxies: Vec<ProxyTarget> = targets
        .into_iter()
        .filter(|t| t.kind != TransportKind::Udp)
        .map(|t| ProxyTarget {
            transport: core_transport(t.kind),
            addr: t.addr,
            server_name: t.server_name,
        })
        .collect();
    if proxies.is_empty() {
        return Err(sip_tokio::ResolveError::NotFound);
    }
    Ok(proxies)
}

/// The driver. See the module docs.
#[derive(Debug)]
pub struct OutboundClient;

impl OutboundClient {
    /// Starts the client on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`OutboundError`] for a bad outbound configuration.
    pub fn spawn(
        config: OutboundClientConfig,
    ) -> Result<(OutboundHandle, mpsc::Receiver<OutboundEvent>), OutboundError> {
        let flows = FlowManager::new(config.outbound.clone(), StdRng::from_os_rng())?;
        let (transports, incoming) = Transports::new(config.transport.clone());
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::channel(256);
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(flows.status()));
        let push = PushState::new(config.push.clone());
        let task = Task {
            config,
            flows,
            endpoint: Endpoint::new(EndpointConfig::default(), StdRng::from_os_rng()),
            rng: StdRng::from_os_rng(),
            transports: transports.clone(),
            incoming,
            commands: command_rx,
            events,
            internal_tx,
            internal_rx,
            status: status.clone(),
            push,
            contexts: HashMap::new(),
            connections: HashMap::new(),
            closing: HashMap::new(),
            deferred: Vec::new(),
            requests: HashMap::new(),
            shutdown: None,
        };
        tokio::spawn(task.run().instrument(tracing::debug_span!("sip_outbound")));
        Ok((
            OutboundHandle {
                commands,
                next_request: Arc::new(std::sync::atomic::AtomicU64::new(1)),
                status,
                transports,
            },
            event_rx,
        ))
    }
}

struct Connected {
    flow: FlowId,
    result: Result<sip_tokio::Sent, sip_tokio::TransportError>,
}

struct FlowContext {
    reg_id: u32,
    target: ProxyTarget,
    connection: Option<ConnectionId>,
    local: Option<SocketAddr>,
    /// Host for the Contact and Via when the local address is unknown (WS).
    invalid_host: String,
    registration: Option<Registration>,
    contact: String,
    /// The push parameters `contact` was built with (RFC 8599 §4.1.2).
    push_params: String,
    transaction: Option<ClientTxId>,
    flow_timer: Option<Duration>,
}

impl FlowContext {
    /// `contact` without the push parameters, which end it.
    fn dialog_contact(&self) -> &str {
        self.contact
            .strip_suffix(self.push_params.as_str())
            .unwrap_or(&self.contact)
    }

    /// `SIP/2.0/TLS 192.0.2.4:40312`, or the .invalid host on WebSocket.
    fn via(&self) -> String {
        let host = match self.local {
            Some(local) => local.to_string(),
            None => self.invalid_host.clone(),
        };
        format!("SIP/2.0/{} {host}", self.target.transport.as_str())
    }

    fn destination(&self) -> Destination {
        Destination {
            transport: self.target.transport,
            addr: self.target.addr,
            connection: self.connection.map(|c| endpoint::ConnectionId(c.as_u64())),
        }
    }
}

struct Task {
    config: OutboundClientConfig,
    flows: FlowManager<StdRng>,
    endpoint: Endpoint<StdRng>,
    rng: StdRng,
    transports: Transports,
    incoming: mpsc::Receiver<Incoming>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<OutboundEvent>,
    internal_tx: mpsc::UnboundedSender<Connected>,
    internal_rx: mpsc::UnboundedReceiver<Connected>,
    status: Arc<Mutex<Vec<FlowStatus>>>,
    push: PushState,
    contexts: HashMap<FlowId, FlowContext>,
    connections: HashMap<u64, ConnectionId>,
    /// Connections being closed, with their proxy.
    closing: HashMap<u64, (Transport, SocketAddr)>,
    /// New flows waiting for an old connection to the same proxy to close.
    deferred: Vec<(FlowId, ProxyTarget)>,
    /// The app's requests in flight.
    requests: HashMap<ClientTxId, RequestId>,
    shutdown: Option<(tokio::time::Instant, oneshot::Sender<()>)>,
}

impl Task {
    async fn run(mut self) {
        self.flows.start(crate::now());
        loop {
            self.settle().await;
            if let Some((deadline, _)) = &self.shutdown {
                let pending = self.contexts.values().any(|c| {
                    c.registration
                        .as_ref()
                        .is_some_and(|r| r.state() == RegistrationState::Unregistering)
                });
                if !pending || tokio::time::Instant::now() >= *deadline {
                    break;
                }
            }
            let deadline = [
                self.flows.poll_timeout(),
                self.endpoint.poll_timeout(),
                self.contexts
                    .values()
                    .filter_map(|c| c.registration.as_ref()?.poll_timeout())
                    .min(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
            let deadline = match (&self.shutdown, deadline) {
                (Some((s, _)), Some(d)) => Some(d.min(*s)),
                (Some((s, _)), None) => Some(*s),
                (None, d) => d,
            };
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                incoming = self.incoming.recv() => match incoming {
                    Some(incoming) => self.feed(incoming),
                    None => break,
                },
                connected = self.internal_rx.recv() => {
                    if let Some(c) = connected {
                        self.connected(c);
                    }
                }
                command = self.commands.recv(), if self.shutdown.is_none() => match command {
                    Some(command) => self.command(command),
                    None => self.begin_shutdown(None),
                },
                () = sleep => {
                    let now = crate::now();
                    self.flows.handle_timeout(now);
                    self.endpoint.handle_timeout(now);
                    for c in self.contexts.values_mut() {
                        if let Some(r) = c.registration.as_mut() {
                            r.handle_timeout(now, &mut self.rng);
                        }
                    }
                }
            }
        }
        self.flows.stop();
        self.settle().await;
        self.transports.shutdown();
        if let Some((_, reply)) = self.shutdown.take() {
            let _ = reply.send(());
        }
    }

    /// Runs flow actions, registrations, endpoint events and sends until
    /// nothing is left to do.
    async fn settle(&mut self) {
        for _ in 0..64 {
            let mut busy = false;
            while let Some(action) = self.flows.poll_action() {
                busy = true;
                self.action(action).await;
            }
            busy |= self.pump_registrations();
            while let Some(event) = self.endpoint.poll_event() {
                busy = true;
                self.endpoint_event(event);
            }
            busy |= self.flush().await;
            if !busy {
                break;
            }
        }
        if let Ok(mut s) = self.status.lock() {
            *s = self.flows.status();
        }
    }

    fn emit(&self, event: OutboundEvent) {
        if self.events.try_send(event).is_err() {
            debug!("outbound event dropped: nobody is reading");
        }
    }

    async fn action(&mut self, action: FlowAction) {
        let now = crate::now();
        match action {
            FlowAction::Connect {
                flow,
                reg_id,
                target,
                ..
            } => {
                let mut token = [0u8; 6];
                self.rng.fill_bytes(&mut token);
                let invalid_host: String = token.iter().map(|b| format!("{b:02x}")).collect();
                self.contexts.insert(
                    flow,
                    FlowContext {
                        reg_id,
                        target: target.clone(),
                        connection: None,
                        local: None,
                        invalid_host: format!("{invalid_host}.invalid"),
                        registration: None,
                        contact: String::new(),
                        push_params: String::new(),
                        transaction: None,
                        flow_timer: None,
                    },
                );
                // A send reuses any open connection to the proxy: wait until
                // the old flow's connection is gone before opening the new one.
                let busy = self
                    .closing
                    .values()
                    .any(|(t, a)| *t == target.transport && *a == target.addr);
                if busy {
                    self.deferred.push((flow, target));
                } else {
                    self.open(flow, target);
                }
            }
            FlowAction::Register { flow, .. } => self.register(flow),
            FlowAction::SendKeepAlive { flow, .. } => {
                let connection = self.contexts.get(&flow).and_then(|c| c.connection);
                match connection {
                    Some(c) => {
                        if self.transports.ping(c).await.is_err() {
                            self.flows.handle_closed(now, flow);
                        }
                    }
                    None => self.flows.handle_closed(now, flow),
                }
            }
            FlowAction::Close { flow } => {
                if let Some(ctx) = self.contexts.remove(&flow)
                    && let Some(c) = ctx.connection
                {
                    self.connections.remove(&c.as_u64());
                    if self.transports.close(c).await.is_ok() {
                        self.closing
                            .insert(c.as_u64(), (ctx.target.transport, ctx.target.addr));
                    }
                }
            }
            FlowAction::FlowUp {
                flow,
                reg_id,
                proxy,
            } => {
                let (contact, via) = self
                    .contexts
                    .get(&flow)
                    .map(|c| (c.dialog_contact().to_owned(), c.via()))
                    .unwrap_or_default();
                info!(reg_id, proxy, "outbound flow up");
                self.emit(OutboundEvent::FlowUp {
                    reg_id,
                    proxy,
                    contact,
                    via,
                });
            }
            FlowAction::FlowFailed {
                reg_id,
                proxy,
                reason,
                ..
            } => {
                info!(reg_id, proxy, ?reason, "outbound flow failed");
                self.emit(OutboundEvent::FlowFailed {
                    reg_id,
                    proxy,
                    reason,
                });
            }
            FlowAction::BackingOff { reg_id, until } => {
                self.emit(OutboundEvent::BackingOff { reg_id, until });
            }
        }
    }

    /// Opens the connection of a new flow.
    fn open(&mut self, flow: FlowId, target: ProxyTarget) {
        let now = crate::now();
        if matches!(target.transport, Transport::Ws | Transport::Wss) {
            // RFC 7118: the first REGISTER opens the connection; the
            // Contact uses an .invalid host.
            self.flows.handle_connected(now, flow);
        } else if target.transport == Transport::Udp {
            warn!("UDP flows are not driven by this client");
            self.flows.handle_connect_failed(now, flow);
        } else {
            let mut ping = OutboundMessage::new(
                driver_transport(target.transport),
                target.addr,
                &b"\r\n\r\n"[..],
            );
            if let Some(name) = &target.server_name {
                ping = ping.with_server_name(name.clone());
            }
            let transports = self.transports.clone();
            let tx = self.internal_tx.clone();
            tokio::spawn(async move {
                let result = transports.send(ping).await;
                let _ = tx.send(Connected { flow, result });
            });
        }
    }

    fn connected(&mut self, connected: Connected) {
        let now = crate::now();
        let Some(ctx) = self.contexts.get_mut(&connected.flow) else {
            return;
        };
        match connected.result {
            Ok(sent) => {
                ctx.local = Some(sent.local);
                if let Some(c) = sent.connection {
                    ctx.connection = Some(c);
                    self.connections.insert(c.as_u64(), c);
                }
                self.flows.handle_connected(now, connected.flow);
            }
            Err(error) => {
                debug!(%error, "flow connect failed");
                self.flows.handle_connect_failed(now, connected.flow);
            }
        }
    }

    /// Sends (or refreshes) the REGISTER of a flow, with a new Registration
    /// when the Contact changed.
    fn register(&mut self, flow: FlowId) {
        let push_params = self.push.uri_params();
        let Some(ctx) = self.contexts.get_mut(&flow) else {
            return;
        };
        let host = match ctx.local {
            Some(local) => local.to_string(),
            None => ctx.invalid_host.clone(),
        };
        let transport = ctx.target.transport;
        let contact = match ctx.local {
            Some(local) => contact_uri(&self.config.contact_user, local, transport, &push_params),
            None => format!(
                "sip:{}@{host};transport={};ob{push_params}",
                self.config.contact_user,
                transport.as_str().to_ascii_lowercase()
            ),
        };
        let same = ctx.registration.is_some() && ctx.contact == contact;
        if !same {
            let via = ctx.via();
            let mut rc =
                RegistrationConfig::new(&self.config.registrar, &self.config.aor, &contact, &via);
            rc.contact_params = contact_params(&self.config.instance, ctx.reg_id);
            rc.expires = self.config.expires;
            if self.config.route_via_proxy {
                rc.route = vec![format!(
                    "<sip:{};transport={};lr;ob>",
                    ctx.target.addr,
                    transport.as_str().to_ascii_lowercase()
                )];
            }
            let auth = self
                .config
                .credentials
                .as_ref()
                .map(|(user, password)| DigestClient::new(user, password.expose()));
            ctx.registration = Some(Registration::new(rc, auth, &mut self.rng));
            ctx.contact = contact;
            ctx.push_params = push_params;
        }
        if let Some(r) = ctx.registration.as_mut() {
            r.register(&mut self.rng);
        }
    }

    /// Sends what the registrations queued and handles their events.
    fn pump_registrations(&mut self) -> bool {
        let now = crate::now();
        let mut busy = false;
        let mut outcomes = Vec::new();
        for (flow, ctx) in &mut self.contexts {
            let Some(reg) = ctx.registration.as_mut() else {
                continue;
            };
            while let Some(request) = reg.poll_request() {
                busy = true;
                let destination = Destination {
                    transport: ctx.target.transport,
                    addr: ctx.target.addr,
                    connection: ctx.connection.map(|c| endpoint::ConnectionId(c.as_u64())),
                };
                match self.endpoint.send_request(now, request, destination) {
                    Ok(tx) => ctx.transaction = Some(tx),
                    Err(error) => warn!(%error, "REGISTER not sent"),
                }
            }
            while let Some(event) = reg.poll_event() {
                busy = true;
                outcomes.push((*flow, event));
            }
        }
        for (flow, event) in outcomes {
            self.registration_event(now, flow, event);
        }
        busy
    }

    fn registration_event(&mut self, now: Instant, flow: FlowId, event: RegistrationEvent) {
        let Some(ctx) = self.contexts.get(&flow) else {
            return;
        };
        let reg_id = ctx.reg_id;
        match event {
            RegistrationEvent::Registered { expires } => {
                let (timer, contact) = (ctx.flow_timer, ctx.dialog_contact().to_owned());
                // The push token changed while this REGISTER was out: the
                // binding has the old one (or none), so register again.
                let stale = ctx.push_params != self.push.uri_params();
                self.flows.handle_registered(now, flow, timer);
                self.emit(OutboundEvent::Registered {
                    reg_id,
                    expires,
                    contact,
                });
                if stale && self.shutdown.is_none() {
                    self.register(flow);
                }
            }
            RegistrationEvent::Failed {
                status,
                reason,
                retry_after,
                ..
            } => {
                let retry =
                    self.push.handle_register_status(status) == PushOutcome::RetryWithoutPush;
                // Another flow's 555 turned push off already: this flow's
                // REGISTER still carried it, and is no failure either.
                let pushed = status == 555 && !ctx.push_params.is_empty();
                if retry || pushed {
                    if retry {
                        info!(reg_id, "proxy does not support push (555)");
                        self.emit(OutboundEvent::PushRefused { reg_id });
                    }
                    self.register(flow);
                    return;
                }
                if let Some(ctx) = self.contexts.get_mut(&flow) {
                    ctx.registration = None;
                }
                self.emit(OutboundEvent::RegistrationFailed {
                    reg_id,
                    status,
                    reason,
                });
                if self.shutdown.is_none() {
                    self.flows
                        .handle_registration_failed(now, flow, status, retry_after);
                }
            }
            _ => {}
        }
    }

    fn endpoint_event(&mut self, event: EndpointEvent) {
        let now = crate::now();
        match event {
            EndpointEvent::Response {
                transaction,
                response,
            } if self.requests.contains_key(&transaction) => {
                let final_response = response.status().is_some_and(|s| s >= 200);
                let request = if final_response {
                    self.requests.remove(&transaction)
                } else {
                    self.requests.get(&transaction).copied()
                };
                if let Some(request) = request {
                    self.emit(OutboundEvent::Response { request, response });
                }
            }
            EndpointEvent::ClientTimedOut { transaction }
                if self.requests.contains_key(&transaction) =>
            {
                if let Some(request) = self.requests.remove(&transaction) {
                    self.emit(OutboundEvent::RequestFailed {
                        request,
                        reason: RequestFailure::TimedOut,
                    });
                }
            }
            EndpointEvent::ClientTransportError { transaction }
                if self.requests.contains_key(&transaction) =>
            {
                if let Some(request) = self.requests.remove(&transaction) {
                    self.emit(OutboundEvent::RequestFailed {
                        request,
                        reason: RequestFailure::TransportError,
                    });
                }
            }
            EndpointEvent::StrayResponse { response } => {
                self.emit(OutboundEvent::StrayResponse { response });
            }
            EndpointEvent::Response {
                transaction,
                response,
            } => {
                let Some(ctx) = self
                    .contexts
                    .values_mut()
                    .find(|c| c.transaction == Some(transaction))
                else {
                    return;
                };
                if response.status().is_some_and(|s| s >= 200) {
                    ctx.flow_timer = crate::outbound::flow_timer(&response);
                }
                // A 2xx to a REGISTER with the current push parameters says
                // whether the network will push (RFC 8599 §4.1.1).
                let ok = response.status().is_some_and(|s| (200..300).contains(&s));
                let (reg_id, shutting_down) = (ctx.reg_id, self.shutdown.is_some());
                let push_news =
                    ok && !shutting_down && self.push.handle_register_ok(&response, &ctx.contact);
                if let Some(reg) = ctx.registration.as_mut() {
                    reg.handle_response(now, &response, &mut self.rng);
                }
                if push_news {
                    let confirmed = self.push.is_confirmed() == Some(true);
                    if !confirmed {
                        warn!(reg_id, "the registrar does not confirm push notifications");
                    }
                    self.emit(OutboundEvent::PushConfirmation { reg_id, confirmed });
                }
            }
            EndpointEvent::ClientTimedOut { transaction }
            | EndpointEvent::ClientTransportError { transaction } => {
                if let Some(reg) = self
                    .contexts
                    .values_mut()
                    .find(|c| c.transaction == Some(transaction))
                    .and_then(|c| c.registration.as_mut())
                {
                    reg.handle_failure(now, &mut self.rng);
                }
            }
            EndpointEvent::Request {
                transaction,
                request,
                source,
            } => {
                let reg_id = source.connection.and_then(|c| {
                    self.contexts
                        .values()
                        .find(|ctx| ctx.connection.map(|x| x.as_u64()) == Some(c.0))
                        .map(|ctx| ctx.reg_id)
                });
                self.emit(OutboundEvent::Request {
                    reg_id,
                    transaction,
                    request,
                });
            }
            _ => {}
        }
    }

    /// Sends what the endpoint queued. Returns whether anything was sent.
    async fn flush(&mut self) -> bool {
        let mut busy = false;
        while let Some(t) = self.endpoint.poll_transmit() {
            busy = true;
            let kind = driver_transport(t.destination.transport);
            let mut out = OutboundMessage::new(kind, t.destination.addr, t.payload);
            if let Some(c) = t
                .destination
                .connection
                .and_then(|c| self.connections.get(&c.0))
            {
                out = out.with_connection(*c);
            }
            let flow = self.contexts.iter().find_map(|(id, c)| {
                (c.target.addr == t.destination.addr
                    && c.target.transport == t.destination.transport)
                    .then_some(*id)
            });
            if let Some(name) = flow
                .and_then(|f| self.contexts.get(&f))
                .and_then(|c| c.target.server_name.clone())
            {
                out = out.with_server_name(name);
            }
            match self.transports.send(out).await {
                Ok(sent) => {
                    if let (Some(c), Some(f)) = (sent.connection, flow) {
                        self.connections.insert(c.as_u64(), c);
                        if let Some(ctx) = self.contexts.get_mut(&f)
                            && ctx.connection.is_none()
                        {
                            ctx.connection = Some(c);
                        }
                    }
                }
                Err(error) => {
                    debug!(%error, "send failed");
                    self.endpoint.handle_input(
                        crate::now(),
                        Input::TransportError {
                            destination: t.destination,
                        },
                    );
                }
            }
        }
        busy
    }

    fn flow_of_connection(&self, connection: ConnectionId) -> Option<FlowId> {
        self.contexts
            .iter()
            .find_map(|(f, c)| (c.connection == Some(connection)).then_some(*f))
    }

    fn feed(&mut self, incoming: Incoming) {
        let now = crate::now();
        let transport = core_transport(incoming.kind);
        if let Some(c) = incoming.connection {
            self.connections.insert(c.as_u64(), c);
        }
        let connection = incoming
            .connection
            .map(|c| endpoint::ConnectionId(c.as_u64()));
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
            // Framed but not parsed: the endpoint answers 400 when it can.
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
                if let Some(flow) = incoming.connection.and_then(|c| self.flow_of_connection(c)) {
                    self.flows.handle_pong(now, flow);
                }
            }
            IncomingEvent::ConnectionClosed(reason) => {
                if let Some(c) = incoming.connection {
                    self.connections.remove(&c.as_u64());
                    if self.closing.remove(&c.as_u64()).is_some() {
                        self.open_deferred();
                    }
                    if let Some(flow) = self.flow_of_connection(c) {
                        debug!(?reason, "flow connection closed");
                        if let Some(ctx) = self.contexts.get_mut(&flow) {
                            ctx.connection = None;
                        }
                        self.flows.handle_closed(now, flow);
                    }
                }
                if let Some(c) = connection {
                    self.endpoint.handle_input(
                        now,
                        // One connection per proxy at a time (see
                        // `open_deferred`): unpinned requests to its
                        // address went over this one.
                        Input::ConnectionClosed {
                            connection: c,
                            transport,
                            remote: Some(incoming.remote),
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// Opens the deferred flows whose proxy has no closing connection left.
    fn open_deferred(&mut self) {
        let deferred = std::mem::take(&mut self.deferred);
        for (flow, target) in deferred {
            let busy = self
                .closing
                .values()
                .any(|(t, a)| *t == target.transport && *a == target.addr);
            if busy {
                self.deferred.push((flow, target));
            } else if self.contexts.contains_key(&flow) {
                self.open(flow, target);
            }
        }
    }

    /// The flow to send the app's messages on: `reg_id`'s if it is up, else
    /// the first one up.
    fn flow_for(&self, reg_id: Option<u32>) -> Option<&FlowContext> {
        let up: Vec<FlowId> = self
            .flows
            .status()
            .into_iter()
            .filter(|s| s.state == FlowState::Up && reg_id.is_none_or(|r| r == s.reg_id))
            .filter_map(|s| s.flow)
            .collect();
        up.first().and_then(|f| self.contexts.get(f))
    }

    fn command(&mut self, command: Command) {
        let now = crate::now();
        match command {
            Command::SendRequest {
                id,
                request,
                reg_id,
            } => {
                let Some(destination) = self.flow_for(reg_id).map(FlowContext::destination) else {
                    self.emit(OutboundEvent::RequestFailed {
                        request: id,
                        reason: RequestFailure::NoFlow,
                    });
                    return;
                };
                match self.endpoint.send_request(now, request, destination) {
                    Ok(tx) => {
                        self.requests.insert(tx, id);
                    }
                    Err(error) => {
                        debug!(%error, "request refused");
                        self.emit(OutboundEvent::RequestFailed {
                            request: id,
                            reason: RequestFailure::Rejected,
                        });
                    }
                }
            }
            Command::SendStateless { message, reg_id } => {
                if let Some(destination) = self.flow_for(reg_id).map(FlowContext::destination) {
                    self.endpoint.send_stateless(destination, &message);
                }
            }
            Command::Cancel(id) => {
                let tx = self
                    .requests
                    .iter()
                    .find_map(|(tx, r)| (*r == id).then_some(*tx));
                if let Some(tx) = tx
                    && let Err(error) = self.endpoint.cancel(now, tx)
                {
                    debug!(%error, "cancel refused");
                }
            }
            Command::SetPush(token) => {
                if self.push.set_token(token) {
                    self.flows.reregister();
                }
            }
            Command::Wake => self.flows.wake(now),
            Command::Respond(transaction, response) => {
                if let Err(error) = self.endpoint.send_response(now, transaction, response) {
                    debug!(%error, "response not sent");
                }
            }
            Command::Shutdown(reply) => self.begin_shutdown(Some(reply)),
        }
    }

    fn begin_shutdown(&mut self, reply: Option<oneshot::Sender<()>>) {
        for ctx in self.contexts.values_mut() {
            if let Some(r) = ctx.registration.as_mut()
                && matches!(
                    r.state(),
                    RegistrationState::Registered { .. } | RegistrationState::Registering
                )
            {
                r.unregister(&mut self.rng);
            }
        }
        let (tx, _rx) = oneshot::channel();
        self.shutdown = Some((
            tokio::time::Instant::now() + UNREGISTER_WAIT,
            reply.unwrap_or(tx),
        ));
    }
}
