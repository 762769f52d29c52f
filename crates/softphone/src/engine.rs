//! The phone's task: one loop that owns the SIP driver, the accounts and
//! the calls, and answers the handles' commands.
//!
//! Everything that changes state happens here, in order, so there are no
//! locks around the call table. Slow things (binding media sockets,
//! resolving a name) are awaited in the loop: they are bounded and rare.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use config_export::{Account, Config, DtmfMode};
use media_engine::negotiation::{MediaNegotiation, NegotiatedAudio};
use media_engine::sdp::{Direction, SessionDescription};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sip_core::auth::DigestClient;
use sip_core::dialog::{Dialog, UasInviteResponder};
use sip_core::endpoint::{
    ClientTxId, Destination, Endpoint, EndpointConfig, EndpointEvent, ServerTxId,
};
use sip_core::registration::{Registration, RegistrationConfig, RegistrationEvent};
use sip_core::transaction::TimerConfig;
use sip_core::{Host, Message, Method, SipUri, Uri};
use sip_tokio::{
    BoxFuture, Driver, DriverEvent, HickoryResolver, ListenerOptions, NaptrRecord, OutboundMessage,
    ResolveError, Resolver, ServerLocator, SrvRecord, TlsClientConfig, TransportConfig,
    TransportKind, Transports, core_transport,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

mod flows;

use crate::call::{Call, CallInfo};
use crate::config::{Dns, Listen, PhoneConfig};
use crate::diagnostics::Pii;
use crate::error::PhoneError;
use crate::event::{
    CallId, CallState, EndReason, Identity, PhoneEvent, QualityReport, RegistrationStatus,
};
use crate::history::{CallDirection, CallRecord, History};
use crate::media::{self, CallMedia, MediaEvent, PreparedMedia};
use crate::phone::{AccountInfo, Phone};

type Reply<T> = oneshot::Sender<Result<T, PhoneError>>;

/// What handles ask the task.
#[derive(Debug)]
pub(crate) enum Command {
    Dial {
        account: Option<String>,
        target: String,
        reply: Reply<CallId>,
    },
    Answer {
        call: CallId,
        reply: Reply<()>,
    },
    Reject {
        call: CallId,
        status: u16,
        reply: Reply<()>,
    },
    Hangup {
        call: CallId,
        reply: Reply<()>,
    },
    Hold {
        call: CallId,
        hold: bool,
        reply: Reply<()>,
    },
    Mute {
        call: CallId,
        muted: bool,
        reply: Reply<()>,
    },
    Dtmf {
        call: CallId,
        digits: String,
        reply: Reply<()>,
    },
    Transfer {
        call: CallId,
        target: String,
        reply: Reply<()>,
    },
    AttendedTransfer {
        call: CallId,
        other: CallId,
        reply: Reply<()>,
    },
    Info {
        call: CallId,
        reply: Reply<CallInfo>,
    },
    Calls {
        reply: Reply<Vec<CallInfo>>,
    },
    Accounts {
        reply: Reply<Vec<AccountInfo>>,
    },
    Wake {
        reply: Reply<()>,
    },
    SetPushToken {
        token: Option<proxy_client::push::PushToken>,
        reply: Reply<()>,
    },
    History {
        limit: usize,
        reply: Reply<Vec<CallRecord>>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

/// Gap between DTMF digits sent one after another.
const DTMF_GAP: Duration = Duration::from_millis(250);
/// How long a DTMF event lasts.
const DTMF_DURATION: Duration = Duration::from_millis(160);
/// Shutdown waits this long for un-REGISTER answers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Methods we accept, for Allow.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY, UPDATE";

struct AccountState {
    config: Account,
    aor: String,
    /// Where signalling may go, in order of preference: the outbound
    /// proxies, or the registrar. Never empty.
    servers: Vec<Server>,
    /// The one of `servers` signalling goes through now.
    current: usize,
    /// Our address for Via and Contact.
    local: Option<SocketAddr>,
    /// The connection to the server, over a stream transport without
    /// RFC 5626 flows (which keep their own alive).
    connection: Option<sip_tokio::ConnectionId>,
    /// After that connection closed: when a new one is next tried, the
    /// attempts since the last registration (for the back-off), and the
    /// number of the attempt under way (a report of any other is stale).
    reconnect_at: Option<Instant>,
    reconnects_in_row: u32,
    reconnect_attempt: Option<u64>,
    /// Since when `connection` has been up: one that lasted
    /// [`STABLE_CONNECTION`] starts the back-off afresh when it closes.
    connected_since: Option<Instant>,
    digest: DigestClient,
    registration: Option<Registration>,
    status: RegistrationStatus,
    /// Routes for requests outside a dialog (outbound proxy or Service-Route).
    route: Vec<String>,
    /// RFC 5626 flows when registering through stream-transport proxies.
    flows: Option<flows::AccountFlows>,
    /// The last REGISTER failed in a way that another server may not
    /// (no answer, or 503): RFC 3263 §4.3.
    failover_wanted: bool,
    /// Servers tried one after another since the last back-off.
    failovers_in_row: usize,
    /// The search for the next reachable server under way, by number.
    failover_search: Option<u64>,
}

/// An outbound proxy (or the registrar) an account can send through.
#[derive(Debug, Clone)]
struct Server {
    kind: TransportKind,
    addr: SocketAddr,
    name: Option<String>,
    /// The Route preloaded for requests outside a dialog.
    route: Vec<String>,
}

impl AccountState {
    /// Sends through `servers[k]` from now on.
    fn use_server(&mut self, k: usize) {
        self.current = k;
        self.route = self.servers[k].route.clone();
    }

    /// Where a call's INVITE goes through this account: the current server,
    /// then the others (RFC 3263 §4.3); an account on RFC 5626 flows
    /// leaves that to its flow manager.
    fn hops(&self) -> (Server, Vec<Server>) {
        let rest = if self.flows.is_some() {
            Vec::new()
        } else {
            self.next_servers().map(|(_, s)| s.clone()).collect()
        };
        (self.server().clone(), rest)
    }

    /// The server signalling goes through now.
    fn server(&self) -> &Server {
        &self.servers[self.current]
    }

    /// The other servers, in order after the current one (RFC 3263 §4.3),
    /// with their places in `servers`.
    fn next_servers(&self) -> impl Iterator<Item = (usize, &Server)> + '_ {
        let n = self.servers.len();
        (1..n)
            .map(move |step| (self.current + step) % n)
            .map(|k| (k, &self.servers[k]))
    }

    /// Our Contact for dialogs, at the account's connection.
    fn contact(&self) -> Option<String> {
        Some(self.contact_at(self.local?, self.server().kind.via_transport()))
    }

    /// Our Contact for REGISTERs: the dialogs' one with the push
    /// parameters, which go nowhere else (RFC 8599 §4.1: a peer that
    /// learnt the push token could wake the device as it likes).
    fn register_contact(&self) -> Option<String> {
        let push = self
            .flows
            .as_ref()
            .map(flows::AccountFlows::push_params)
            .unwrap_or_default();
        Some(self.contact()? + &push)
    }

    /// Our Contact for dialogs at `local` over `transport` (its Via token,
    /// `UDP`...): `;ob` through a relay's flow (RFC 5626 §4.3).
    fn contact_at(&self, local: SocketAddr, transport: &str) -> String {
        let user = &self.config.user;
        let outbound = if self.flows.is_some() { ";ob" } else { "" };
        if transport.eq_ignore_ascii_case("UDP") {
            format!("sip:{user}@{local}{outbound}")
        } else {
            format!(
                "sip:{user}@{local};transport={}{outbound}",
                transport.to_ascii_lowercase()
            )
        }
    }
}

/// Where a call's signalling stands; the public [`CallState`] is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Outgoing, INVITE sent, no answer.
    Calling,
    /// Incoming, not answered.
    Offered,
    /// 2xx sent or received.
    Confirmed,
    /// BYE/CANCEL sent or received.
    Ended,
}

/// An in-dialog client transaction and what it was for.
#[derive(Debug, Clone)]
enum Pending {
    Invite,
    ReInvite { hold: bool, request: Box<Message> },
    Update,
    Bye,
    Refer,
    Info,
    Notify,
}

/// An in-dialog request as sent: a proxy on the route or the peer may
/// challenge it (RFC 3261 §22.2, §22.3), and it is then sent once more with
/// credentials.
#[derive(Debug)]
struct SentInDialog {
    account: usize,
    dest: Destination,
    request: Message,
    /// It already answers a challenge: a second one is final.
    answered: bool,
}

#[derive(Debug)]
struct SessionTimer {
    interval: Duration,
    we_refresh: bool,
    /// When we refresh (refresher) or give up (not refresher).
    deadline: Instant,
    /// When the session expires without a refresh.
    ends: Instant,
    /// Refreshes of ours refused in a row (for the retry back-off).
    refused: u32,
    /// The peer listed `timer` in Supported: our 2xx may require it.
    peer_supports: bool,
}

impl SessionTimer {
    /// The timer a request we answer asks for (RFC 4028 §9): its
    /// Session-Expires (at least 90 s), refreshed by whom its `refresher`
    /// names, by the peer when it names none, and by us when the peer does
    /// not support timers (a proxy added the header).
    fn of_request(request: &Message, now: Instant) -> Option<SessionTimer> {
        let se = request.session_expires().ok().flatten()?;
        let interval = Duration::from_secs(u64::from(se.delta_seconds()?.max(90)));
        let peer_supports = request
            .supported()
            .filter_map(Result::ok)
            .any(|o| o.eq_ignore_ascii_case("timer"));
        let we_refresh = !peer_supports || se.refresher() == Some("uas");
        Some(SessionTimer::new(interval, we_refresh, peer_supports, now))
    }

    fn new(interval: Duration, we_refresh: bool, peer_supports: bool, now: Instant) -> Self {
        let mut timer = SessionTimer {
            interval,
            we_refresh,
            deadline: now,
            ends: now,
            refused: 0,
            peer_supports,
        };
        timer.rearm(now);
        timer
    }

    /// Starts the interval again at `now`: the refresher refreshes half-way,
    /// the other side gives up at its end.
    fn rearm(&mut self, now: Instant) {
        self.ends = now + self.interval;
        self.refused = 0;
        self.deadline = if self.we_refresh {
            now + self.interval / 2
        } else {
            self.ends
        };
    }

    /// Our refresh was refused for now (`retry_after`, if the peer said):
    /// the next goes after that or 5 s, doubling with each refusal in a
    /// row, while it can still reach the peer before it hangs up (RFC 4028
    /// §10: up to 32 s before the end).
    fn refused(&mut self, now: Instant, retry_after: Option<u32>) {
        let base = retry_after.map_or(5, |s| u64::from(s).clamp(1, 30));
        let wait = Duration::from_secs(base << self.refused.min(5));
        self.refused = self.refused.saturating_add(1);
        let last_useful = self
            .ends
            .checked_sub(Duration::from_secs(32).min(self.interval / 3))
            .unwrap_or(now);
        if now + wait < last_useful {
            self.deadline = now + wait;
        }
    }

    /// The Session-Expires of a response we send: we are its UAS.
    fn response_value(&self) -> String {
        let refresher = if self.we_refresh { "uas" } else { "uac" };
        format!("{};refresher={refresher}", self.interval.as_secs())
    }

    /// The headers of our 2xx to a request that refreshes the session:
    /// Session-Expires, and Require: timer of a peer that supports timers
    /// (only such a peer may be required to, RFC 4028 §9).
    fn response_headers(timer: Option<&SessionTimer>) -> Vec<(&'static str, String)> {
        let Some(t) = timer else {
            return Vec::new();
        };
        let mut headers = vec![("Session-Expires", t.response_value())];
        if t.peer_supports {
            headers.push(("Require", "timer".to_owned()));
        }
        headers
    }

    /// The Session-Expires of a re-INVITE or UPDATE we send: every one is
    /// a refresh (RFC 4028 §7.4), which keeps the interval and the roles.
    fn request_value(&self) -> String {
        let refresher = if self.we_refresh { "uac" } else { "uas" };
        format!("{};refresher={refresher}", self.interval.as_secs())
    }

    /// The timer after a 2xx to an INVITE, re-INVITE or UPDATE we sent
    /// (RFC 4028 §7.2): the interval and refresher it names (us, when it
    /// names none), or none at all when the 2xx has no Session-Expires.
    fn of_response(response: &Message, now: Instant) -> Option<SessionTimer> {
        let se = response.session_expires().ok().flatten()?;
        let interval = Duration::from_secs(u64::from(se.delta_seconds()?.max(90)));
        let we_refresh = se.refresher() != Some("uas");
        // A proxy may have put the header in for a peer without timers.
        let peer_supports = response
            .supported()
            .chain(response.require())
            .filter_map(Result::ok)
            .any(|o| o.eq_ignore_ascii_case("timer"));
        Some(SessionTimer::new(interval, we_refresh, peer_supports, now))
    }
}

struct CallLeg {
    id: CallId,
    account: usize,
    direction: CallDirection,
    phase: Phase,
    state: CallState,
    local: Identity,
    remote: Identity,
    dest: Destination,
    /// For a call of an account that signals to peers directly, our
    /// address towards this call's peer (see `Engine::direct_local`);
    /// otherwise the account's address is the call's.
    direct_local: Option<SocketAddr>,
    /// Our INVITE (outgoing) or theirs (incoming).
    invite: Message,
    /// The answer in a provisional response whose early media plays.
    early_answer: Option<SessionDescription>,
    invite_tx: Option<ClientTxId>,
    server_tx: Option<ServerTxId>,
    local_tag: String,
    dialog: Option<Dialog>,
    negotiation: MediaNegotiation,
    prepared: Option<PreparedMedia>,
    media: Option<CallMedia>,
    /// An incoming call's answer, made when the offer arrived; our offer
    /// when the INVITE had none.
    answer_sdp: Option<String>,
    /// Our 2xx to an INVITE or re-INVITE without SDP carried an offer: the
    /// answer comes in the ACK (RFC 3261 §13.2.1, RFC 3264).
    answer_in_ack: bool,
    responder: Option<(UasInviteResponder, Destination)>,
    last_2xx: Option<Message>,
    started: SystemTime,
    answered: Option<SystemTime>,
    local_hold: bool,
    remote_hold: bool,
    muted: bool,
    /// Why we cancel the INVITE, once we do (a hang-up, media that could
    /// not start): the call ends with this reason when the INVITE ends in
    /// a 487, a time-out or a transport error, or in a 2xx that is hung
    /// up at once; another final status ends it as refused.
    cancelled: Option<EndReason>,
    dtmf_queue: VecDeque<char>,
    next_dtmf: Option<Instant>,
    timer: Option<SessionTimer>,
    next_quality: Option<Instant>,
    last_quality: Option<QualityReport>,
    /// When we are the transferee: the call that asked for this one, and
    /// its REFER subscription to notify.
    transferred_from: Option<CallId>,
    /// When we are the transferor and the peer accepted our REFER.
    transferring: bool,
    /// A glare (491) retry of a hold/resume re-INVITE, or the re-offer
    /// after an unusable answer.
    reinvite_retry: Option<(Instant, bool)>,
    /// Unusable answers in a row to our re-INVITEs.
    unusable_answers: u8,
    /// Hung up while our 2xx waited for its ACK: the BYE follows the ACK
    /// (RFC 3261 §15) or the 2xx's give-up.
    bye_after_ack: bool,
    /// The peer refused an UPDATE (405, 501): refreshes go as re-INVITEs.
    update_refused: bool,
    /// The CSeq of the last REFER the peer sent in this call: its NOTIFYs
    /// name it (RFC 3515 §2.4.6), or a second REFER's could not be told
    /// from the first's.
    refer_seq: Option<u32>,
    end_reason: Option<EndReason>,
    /// An incoming call's negotiated media, started at the answer.
    pending_negotiated: Option<NegotiatedAudio>,
    /// An outgoing call: the To tag of the callee whose answer the media
    /// follows (a forked INVITE has one per callee).
    answer_tag: Option<String>,
    /// An outgoing call: where its INVITE goes next when the server it was
    /// sent to fails (no answer, a transport error, or 503), in order
    /// (RFC 3263 §4.3).
    next_hops: Vec<Server>,
    /// An outgoing call: its INVITE went again with the answer to a
    /// challenge (so a second refusal is a wrong password, not a nonce the
    /// server forgot).
    challenge_answered: bool,
}

impl CallLeg {
    /// Sets the direction our offers and answers use back to the hold
    /// state the call has, after a hold or resume that did not happen.
    fn keep_hold_state(&mut self) {
        self.negotiation
            .set_direction(hold_direction(self.local_hold));
    }

    fn info(&self) -> CallInfo {
        CallInfo {
            id: self.id,
            direction: self.direction,
            account: String::new(),
            local: self.local.clone(),
            remote: self.remote.clone(),
            state: self.state.clone(),
            started: self.started,
            answered: self.answered,
            muted: self.muted,
            quality: self
                .media
                .as_ref()
                .and_then(CallMedia::report)
                .or_else(|| self.last_quality.clone()),
        }
    }

    fn state_name(&self) -> String {
        format!("{:?}", self.state)
    }
}

struct Engine {
    config: PhoneConfig,
    /// Finds the servers of domains (RFC 3263).
    dns: Arc<dyn Resolver>,
    driver: Driver<StdRng>,
    rng: StdRng,
    accounts: Vec<AccountState>,
    calls: HashMap<CallId, CallLeg>,
    by_call_id: HashMap<String, CallId>,
    pending: HashMap<ClientTxId, (CallId, Pending)>,
    /// In-dialog requests awaiting a final response, kept to answer a
    /// challenge to them (a BYE's outlives its call).
    in_dialog: HashMap<ClientTxId, SentInDialog>,
    reg_tx: HashMap<ClientTxId, usize>,
    next_call: u64,
    events: mpsc::UnboundedSender<PhoneEvent>,
    media_tx: mpsc::UnboundedSender<MediaEvent>,
    history: History,
    /// The UDP listener: responses to UDP requests and our UDP requests.
    udp_local: SocketAddr,
    /// Shutting down until this instant; whoever asked is answered when
    /// done.
    shutting_down: Option<(Instant, Vec<Reply<()>>)>,
    handles: mpsc::WeakUnboundedSender<Command>,
    /// When calls older than the retention window are next purged.
    next_purge: Instant,
    /// When the last check-sync NOTIFY was passed on to the application.
    last_check_sync: Option<Instant>,
    /// The TLS trust, loaded when an account, proxy or TURN server needs it.
    tls: Option<TlsClientConfig>,
    /// Where outbound flows' connection attempts report back.
    flow_connects: mpsc::UnboundedSender<flows::FlowConnected>,
    /// Where searches for the next reachable server report back.
    failovers: mpsc::UnboundedSender<FailoverFound>,
    /// Searches started, to number the next.
    failover_searches: u64,
    /// When accounts' connections are next pinged.
    next_keepalive: Instant,
    /// Where media (and servers) prepared beside the engine report back.
    prepared: mpsc::UnboundedSender<Prepared>,
    /// Incoming INVITEs whose media is being prepared, by transaction.
    incoming: HashMap<ServerTxId, IncomingWaiting>,
}

/// A connection to an account's server up this long was no instant
/// failure: when it closes, reconnecting starts again without a wait.
const STABLE_CONNECTION: Duration = Duration::from_secs(60);

/// The wait before the next attempt to reconnect to an account's server,
/// after `attempts` since a connection last stayed up: none for the first, then
/// 1, 2, 4 ... up to 64 s.
fn reconnect_backoff(attempts: u32) -> Duration {
    match attempts {
        0 => Duration::ZERO,
        n => Duration::from_secs(1 << (n - 1).min(6)),
    }
}

/// How often an account's connection to its server is pinged: within
/// the transport's idle timeout (10 minutes) and the TCP timeouts of most
/// NATs, as RFC 5626 §4.4.1 suggests for connection-oriented flows.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(120);

/// How often the history is purged while the phone runs.
const PURGE_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Binds the listeners, opens the history and starts the task.
pub(crate) async fn start(
    config: PhoneConfig,
    events: mpsc::UnboundedSender<PhoneEvent>,
) -> Result<mpsc::UnboundedSender<Command>, PhoneError> {
    check_config(&config.config)?;
    let history = match &config.history {
        Some(path) => History::open(path)?,
        None => History::in_memory()?,
    };
    let mut transport_config = TransportConfig::default();
    let tls = if needs_tls(&config.config) {
        let tls = tls_client(&config.config)?;
        transport_config = transport_config.with_tls_client(tls.clone());
        Some(tls)
    } else {
        None
    };
    let (transports, incoming) = Transports::new(transport_config);
    let bind = SocketAddr::new(config.bind, config.sip_port);
    let udp_local = transports
        .bind(TransportKind::Udp, bind, ListenerOptions::new())
        .await
        .map_err(|e| PhoneError::Network(format!("binding SIP UDP on {bind}: {e}")))?;
    if config.listen == Listen::UdpAndTcp {
        let tcp = SocketAddr::new(config.bind, udp_local.port());
        transports
            .bind(TransportKind::Tcp, tcp, ListenerOptions::new())
            .await
            .map_err(|e| PhoneError::Network(format!("binding SIP TCP on {tcp}: {e}")))?;
    }
    let endpoint = Endpoint::new(EndpointConfig::default(), StdRng::from_os_rng());
    let mut driver = Driver::new(transports, incoming, endpoint);
    let mut rng = StdRng::from_os_rng();
    let push = push_token(&config.config)?;
    let dns = dns_resolver(&config.dns);
    let mut accounts = Vec::new();
    for account in &config.config.accounts {
        let mut state = account_state(account, &dns).await?;
        if config.register && !account.outbound_proxies.is_empty() {
            let instance = config
                .instance
                .unwrap_or_else(|| proxy_client::InstanceId::generate(&mut rng));
            state.flows =
                flows::AccountFlows::new(&state.servers, instance, push.clone(), &mut rng);
        }
        name_servers(&mut driver, &state.servers);
        accounts.push(state);
    }
    let (commands, commands_rx) = mpsc::unbounded_channel();
    let (media_tx, media_rx) = mpsc::unbounded_channel();
    let (flow_connects, flow_connects_rx) = mpsc::unbounded_channel();
    let (failovers, failovers_rx) = mpsc::unbounded_channel();
    let (prepared, prepared_rx) = mpsc::unbounded_channel();
    let mut engine = Engine {
        config,
        dns,
        driver,
        rng,
        accounts,
        calls: HashMap::new(),
        by_call_id: HashMap::new(),
        pending: HashMap::new(),
        in_dialog: HashMap::new(),
        reg_tx: HashMap::new(),
        next_call: 1,
        events,
        media_tx,
        history,
        udp_local,
        shutting_down: None,
        handles: commands.downgrade(),
        next_purge: sip_tokio::now(),
        last_check_sync: None,
        tls,
        flow_connects,
        failovers,
        failover_searches: 0,
        next_keepalive: sip_tokio::now() + STREAM_KEEPALIVE,
        prepared,
        incoming: HashMap::new(),
    };
    engine.purge_history();
    engine.open_accounts().await;
    tokio::spawn(engine.run(
        commands_rx,
        media_rx,
        flow_connects_rx,
        failovers_rx,
        prepared_rx,
    ));
    Ok(commands)
}

fn transport_kind(account: &Account) -> TransportKind {
    match account.transport {
        config_export::Transport::Tcp => TransportKind::Tcp,
        config_export::Transport::Tls => TransportKind::Tls,
        config_export::Transport::Ws => TransportKind::Ws,
        config_export::Transport::Wss => TransportKind::Wss,
        _ => TransportKind::Udp,
    }
}

/// What [`Phone::start`](crate::Phone::start) refuses in a configuration,
/// found without the network: each account's registrar and outbound
/// proxies as SIP URIs with a usable transport, the TLS trust anchors when
/// anything goes over TLS (files read, certificates decoded) and the push
/// token. A provisioned
/// document that passes this starts the phone as far as the configuration
/// goes (servers may still be unreachable): give it to
/// `provisioning::Settings::with_acceptance` so that a document the phone
/// could not start with never replaces a working one.
///
/// # Errors
///
/// [`PhoneError::Config`] naming the first problem.
pub fn check_config(config: &Config) -> Result<(), PhoneError> {
    for account in &config.accounts {
        let kind = transport_kind(account);
        let bad = |why: String| PhoneError::Config(format!("account {:?}: {why}", account.id));
        uri_target(&account.registrar, kind).map_err(bad)?;
        for p in &account.outbound_proxies {
            uri_target(p, kind).map_err(bad)?;
        }
    }
    if needs_tls(config) {
        tls_client(config)?;
    }
    push_token(config)?;
    Ok(())
}

/// Whether anything of `config` goes over TLS (an account's server or the
/// TURN server): only then is the TLS trust read.
fn needs_tls(config: &Config) -> bool {
    let secure = |k: TransportKind| matches!(k, TransportKind::Tls | TransportKind::Wss);
    config.accounts.iter().any(|a| {
        let kind = transport_kind(a);
        secure(kind)
            || uri_target(&a.registrar, kind).is_ok_and(|(_, _, k)| secure(k))
            || a.outbound_proxies
                .iter()
                .any(|p| uri_target(p, kind).is_ok_and(|(_, _, k)| secure(k)))
    }) || config
        .relay
        .turn
        .as_ref()
        .is_some_and(crate::turn::needs_tls)
}

/// The configuration's push token (RFC 8599), for registrations through a
/// relay.
fn push_token(config: &Config) -> Result<Option<proxy_client::push::PushToken>, PhoneError> {
    let Some(push) = &config.push else {
        return Ok(None);
    };
    let bad = |e: proxy_client::push::PushError| PhoneError::Config(format!("push: {e}"));
    let token =
        proxy_client::push::PushToken::new(&push.provider, push.prid.expose()).map_err(bad)?;
    Ok(Some(match &push.param {
        Some(p) => token.with_param(p).map_err(bad)?,
        None => token,
    }))
}

/// The TLS trust: every configured anchor (`<ca-file>` and `<ca-pem>`
/// alike) and nothing else, or the system's roots when none is configured.
fn tls_client(config: &Config) -> Result<TlsClientConfig, PhoneError> {
    use config_export::TrustAnchor;
    let anchors = &config.tls.trust;
    if anchors.is_empty() {
        return TlsClientConfig::with_system_roots()
            .map_err(|e| PhoneError::Config(format!("TLS trust: {e}")));
    }
    let mut pem = Vec::new();
    for anchor in anchors {
        match anchor {
            TrustAnchor::File(f) => {
                let text = std::fs::read(f)
                    .map_err(|e| PhoneError::Config(format!("TLS trust: {f}: {e}")))?;
                pem.extend_from_slice(&text);
            }
            TrustAnchor::Pem(text) => pem.extend_from_slice(text.as_bytes()),
        }
        pem.push(b'\n');
    }
    TlsClientConfig::with_ca_pem(&pem).map_err(|e| PhoneError::Config(format!("TLS trust: {e}")))
}

/// The host, port and transport a SIP URI points at.
fn uri_target(uri: &str, default: TransportKind) -> Result<(String, u16, TransportKind), String> {
    let parsed = Uri::parse(uri).map_err(|e| format!("{uri:?} is not a URI: {e}"))?;
    sip_target(as_sip(&parsed, uri)?, default)
}

/// The SIP URI `parsed` is (`uri` its text, for the error).
fn as_sip<'u>(parsed: &'u Uri<'u>, uri: &str) -> Result<&'u SipUri<'u>, String> {
    match parsed {
        Uri::Sip(sip) => Ok(sip),
        _ => Err(format!("{uri:?} is not a sip: or sips: URI")),
    }
}

/// [`uri_target`] of a parsed SIP URI.
fn sip_target(
    sip: &SipUri<'_>,
    default: TransportKind,
) -> Result<(String, u16, TransportKind), String> {
    // A sips: URI's `transport=tcp` means TLS over TCP (RFC 3261 §26.2.2),
    // and its `transport=ws` secure WebSocket.
    let secure = sip.scheme == sip_core::SipScheme::Sips;
    let kind = match sip.transport().map(str::to_ascii_lowercase).as_deref() {
        Some("udp") if secure => {
            return Err(format!(
                "{sip}: a sips: URI cannot use UDP (RFC 3261 §26.2.1)"
            ));
        }
        Some("udp") => TransportKind::Udp,
        Some("tcp") if secure => TransportKind::Tls,
        Some("tcp") => TransportKind::Tcp,
        Some("tls") => TransportKind::Tls,
        Some("ws") if secure => TransportKind::Wss,
        Some("ws") => TransportKind::Ws,
        Some("wss") => TransportKind::Wss,
        _ if secure => TransportKind::Tls,
        _ => default,
    };
    let host = match sip.host {
        Host::Domain(d) => d.to_owned(),
        Host::Ipv4(a) => a.to_string(),
        Host::Ipv6(a) => a.to_string(),
    };
    Ok((host, sip.port.unwrap_or(kind.default_port()), kind))
}

pub(crate) async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    addrs.next().ok_or_else(|| format!("{host} has no address"))
}

async fn account_state(
    account: &Account,
    dns: &Arc<dyn Resolver>,
) -> Result<AccountState, PhoneError> {
    let kind = transport_kind(account);
    let bad = |why: String| PhoneError::Config(format!("account {:?}: {why}", account.id));
    let (host, _, _) = uri_target(&account.registrar, kind).map_err(bad)?;
    // Signalling goes to the first outbound proxy that can be reached, in
    // the configured order, else straight to the registrar; each of them
    // may stand for several servers (DNS SRV), tried in turn.
    let mut servers = Vec::new();
    for p in &account.outbound_proxies {
        servers.extend(
            locate(dns, p, kind, vec![format!("<{p};lr>")])
                .await
                .map_err(bad)?,
        );
    }
    if servers.is_empty() {
        servers = locate(dns, &account.registrar, kind, Vec::new())
            .await
            .map_err(bad)?;
    }
    let route = servers[0].route.clone();
    let auth_user = account.auth_user.as_deref().unwrap_or(&account.user);
    let password = account
        .password
        .as_ref()
        .map(|p| p.expose().to_owned())
        .unwrap_or_default();
    Ok(AccountState {
        aor: format!("sip:{}@{host}", account.user),
        config: account.clone(),
        servers,
        current: 0,
        local: None,
        connection: None,
        reconnect_at: None,
        reconnects_in_row: 0,
        reconnect_attempt: None,
        connected_since: None,
        digest: DigestClient::new(auth_user, password.as_str()),
        registration: None,
        status: RegistrationStatus::Unregistered,
        route,
        flows: None,
        failover_wanted: false,
        failovers_in_row: 0,
        failover_search: None,
    })
}

/// The resolver [`Dns`] names.
fn dns_resolver(dns: &Dns) -> Arc<dyn Resolver> {
    match dns {
        Dns::Custom(resolver) => resolver.clone(),
        Dns::System => Arc::new(SystemDns {
            dns: HickoryResolver::from_system_conf()
                .inspect_err(|e| warn!(error = %e, "no DNS configuration: host names only, no SRV"))
                .ok(),
        }),
    }
}

/// The system's DNS servers through hickory for NAPTR, SRV and A/AAAA,
/// and the system's host name lookup for names DNS does not know (the
/// hosts file, search domains, mDNS): what a host name meant before SRV.
struct SystemDns {
    dns: Option<HickoryResolver>,
}

impl Resolver for SystemDns {
    fn naptr<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<NaptrRecord>, ResolveError>> {
        match &self.dns {
            Some(dns) => dns.naptr(name),
            None => Box::pin(async { Ok(Vec::new()) }),
        }
    }

    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, ResolveError>> {
        match &self.dns {
            Some(dns) => dns.srv(name),
            None => Box::pin(async { Ok(Vec::new()) }),
        }
    }

    fn ip<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        Box::pin(async move {
            let found = match &self.dns {
                Some(dns) => dns.ip(name).await,
                None => Ok(Vec::new()),
            };
            match found {
                Ok(found) if !found.is_empty() => Ok(found),
                other => match tokio::net::lookup_host((name, 0)).await {
                    Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
                    // DNS's own answer (or error) says more.
                    Err(_) => other,
                },
            }
        })
    }
}

/// The servers for `uri`, best first (RFC 3263: NAPTR, SRV, A/AAAA) over
/// the account's transport, or the one the URI names (`transport=`,
/// `sips:`); each with `route` preloaded.
async fn locate(
    dns: &Arc<dyn Resolver>,
    uri: &str,
    default: TransportKind,
    route: Vec<String>,
) -> Result<Vec<Server>, String> {
    let parsed = Uri::parse(uri).map_err(|e| format!("{uri:?} is not a URI: {e}"))?;
    let sip = as_sip(&parsed, uri)?;
    let (host, port, kind) = sip_target(sip, default)?;
    let name = host.parse::<IpAddr>().is_err().then(|| host.clone());
    if matches!(kind, TransportKind::Ws | TransportKind::Wss) {
        // WebSocket servers have no SRV names of their own (RFC 7118 §7):
        // the host's addresses.
        let addr = resolve_with(dns, &host, port).await?;
        return Ok(vec![Server {
            kind,
            addr,
            name,
            route,
        }]);
    }
    let targets = ServerLocator::new(dns.clone())
        .with_transports([kind])
        .locate(sip)
        .await
        .map_err(|e| format!("cannot locate {host}: {e}"))?;
    Ok(targets
        .into_iter()
        .map(|t| Server {
            kind: t.kind,
            addr: t.addr,
            name: t.server_name.or_else(|| name.clone()),
            route: route.clone(),
        })
        .collect())
}

/// The first address of `host` through `dns`.
async fn resolve_with(
    dns: &Arc<dyn Resolver>,
    host: &str,
    port: u16,
) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    dns.ip(host)
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .first()
        .map(|ip| SocketAddr::new(*ip, port))
        .ok_or_else(|| format!("{host} has no address"))
}

/// Whether two requests carry the same From tag, Call-ID and CSeq: one
/// request that came two ways (RFC 3261 §8.2.2.2).
fn same_request(a: &Message, b: &Message) -> bool {
    let tag = |m: &Message| m.from().ok().and_then(|f| f.tag().map(str::to_owned));
    let cseq = |m: &Message| m.cseq().ok().map(|c| (c.seq, c.method_token.to_owned()));
    a.call_id().ok() == b.call_id().ok()
        && tag(a).is_some()
        && tag(a) == tag(b)
        && cseq(a) == cseq(b)
}

/// Tells the driver the names of secure servers, so that what it sends
/// them is verified for the name rather than the address.
fn name_servers<'a, R: rand::RngCore>(
    driver: &mut Driver<R>,
    servers: impl IntoIterator<Item = &'a Server>,
) {
    for s in servers {
        if let Some(name) = &s.name {
            driver.name_server(s.kind, s.addr, name.clone());
        }
    }
}

/// Opens (or reuses) a stream connection to `server` with a CRLF
/// keep-alive; its local end and its id.
async fn connect(
    transports: &Transports,
    server: &Server,
) -> Result<(SocketAddr, Option<sip_tokio::ConnectionId>), String> {
    let mut ping = OutboundMessage::new(server.kind, server.addr, &b"\r\n\r\n"[..]);
    if let Some(name) = &server.name {
        ping = ping.with_server_name(name.clone());
    }
    let sent = transports.send(ping).await.map_err(|e| {
        format!(
            "connecting to {} over {}: {e}",
            server.addr,
            server.kind.via_transport()
        )
    })?;
    Ok((sent.local, sent.connection))
}

/// Our address towards `server`: the UDP listener (with the interface that
/// routes there when bound to every interface), or a connection's local
/// end, with the connection a stream transport opened (or reused).
async fn reach(
    transports: &Transports,
    udp_local: SocketAddr,
    server: &Server,
) -> Result<(SocketAddr, Option<sip_tokio::ConnectionId>), String> {
    if server.kind == TransportKind::Udp {
        return Ok((towards(udp_local, server.addr)?, None));
    }
    connect(transports, server).await
}

/// The address `peer` sees us at for a socket bound to `bound`: on the
/// interface that routes to it when bound to every interface.
fn towards(bound: SocketAddr, peer: SocketAddr) -> Result<SocketAddr, String> {
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    let ip = interface_towards(bound.ip(), peer).map_err(|e| format!("no route to {peer}: {e}"))?;
    Ok(SocketAddr::new(ip, bound.port()))
}

/// The address of the interface that routes to `peer`, for a socket bound
/// to `any` (an unspecified address): what a connected UDP socket gets,
/// without sending anything.
fn interface_towards(any: IpAddr, peer: SocketAddr) -> std::io::Result<IpAddr> {
    let probe = std::net::UdpSocket::bind(SocketAddr::new(any, 0))?;
    probe.connect(peer)?;
    Ok(probe.local_addr()?.ip())
}

/// Who waits for a call being placed.
#[derive(Debug)]
enum Dialer {
    /// The application, through [`Phone::dial`](crate::Phone::dial).
    User(Reply<CallId>),
    /// A transfer the peer of this call asked for (REFER).
    Transfer(CallId),
}

/// A call to place, checked.
struct DialRequest {
    account: usize,
    target_uri: String,
    replaces: Option<String>,
    /// The server the INVITE goes to and those after it; `None` when
    /// calling directly, until the callee domain's servers are found.
    hops: Option<(Server, Vec<Server>)>,
    /// Our address towards the account's server.
    local: SocketAddr,
}

/// The slow part of placing a call ended.
struct DialPrepared {
    account: usize,
    target_uri: String,
    replaces: Option<String>,
    dialer: Dialer,
    /// Straight to the callee's domain rather than through the account.
    direct: bool,
    result: Result<((Server, Vec<Server>), media::PreparedMedia), PhoneError>,
}

/// What was prepared beside the engine.
enum Prepared {
    Dial(DialPrepared),
    /// The media for the incoming INVITE of this transaction.
    Incoming(ServerTxId, Result<media::PreparedMedia, PhoneError>),
    /// A new connection to an account's server after the last one closed:
    /// our address on it and its id.
    Reconnected {
        account: usize,
        /// The server it went to, and the attempt's number.
        server: usize,
        attempt: u64,
        result: Result<(SocketAddr, Option<sip_tokio::ConnectionId>), String>,
    },
}

/// An incoming INVITE waiting for its media.
struct IncomingWaiting {
    request: Message,
    source: Destination,
    account: usize,
    offer: Option<SessionDescription>,
}

/// How a search for the next reachable server ended (RFC 3263 §4.3).
struct FailoverFound {
    account: usize,
    search: u64,
    /// The server, our address towards it, how many places along the
    /// list from the one that failed it is, and the connection to it.
    found: Option<(usize, SocketAddr, usize, Option<sip_tokio::ConnectionId>)>,
}

enum Wake {
    Command(Option<Command>),
    Driver(Option<DriverEvent>),
    Media(Option<MediaEvent>),
    FlowConnected(flows::FlowConnected),
    FailoverFound(FailoverFound),
    Prepared(Prepared),
}

impl Engine {
    /// Removes calls older than the configured retention window.
    fn purge_history(&mut self) {
        self.next_purge = self.now() + PURGE_INTERVAL;
        let days = u64::from(self.config.config.privacy.history_retention_days);
        let cutoff = SystemTime::now()
            .checked_sub(Duration::from_secs(days * 24 * 3600))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match self.history.purge_before(cutoff) {
            Ok(0) => {}
            Ok(n) => info!(calls = n, days, "call history purged"),
            Err(e) => warn!(error = %e, "call history not purged"),
        }
        if let Some(log) = &self.config.log_file {
            let log_days = self.config.config.privacy.log_retention_days;
            match crate::diagnostics::purge_old_logs(log, log_days) {
                Ok(removed) if !removed.is_empty() => {
                    info!(
                        files = removed.len(),
                        days = log_days,
                        "old log files removed"
                    );
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "old log files not removed"),
            }
        }
    }

    fn emit(&self, event: PhoneEvent) {
        let _ = self.events.send(event);
    }

    fn now(&self) -> Instant {
        sip_tokio::now()
    }

    /// Finds each account's local address and starts registering.
    async fn open_accounts(&mut self) {
        for i in 0..self.accounts.len() {
            if self.accounts[i].flows.is_some() {
                self.start_flows(i);
                continue;
            }
            // An account that calls peers directly has no server to reach:
            // its stand-in server (the dialer's without a registrar) names
            // no one to connect to.
            let mut local = if self.signals_directly(i) {
                towards(self.udp_local, self.accounts[i].server().addr).map(|a| (a, None))
            } else {
                self.local_address(i).await
            };
            // A proxy that cannot be reached: fail over to the next one.
            for k in 1..self.accounts[i].servers.len() {
                let Err(e) = &local else { break };
                warn!(account = %self.accounts[i].config.id, proxy = k, error = %Pii::text(e), "outbound proxy unreachable, trying the next");
                self.accounts[i].use_server(k);
                local = self.local_address(i).await;
            }
            match local {
                Ok((local, connection)) => {
                    self.accounts[i].local = Some(local);
                    self.accounts[i].connection = connection;
                    self.accounts[i].connected_since = Some(sip_tokio::now());
                }
                Err(e) => {
                    warn!(account = %self.accounts[i].config.id, error = %Pii::text(&e), "account unreachable");
                    self.accounts[i].status = RegistrationStatus::Failed {
                        status: 503,
                        reason: e,
                        will_retry: false,
                    };
                    self.emit(PhoneEvent::Registration {
                        account: self.accounts[i].config.id.clone(),
                        status: self.accounts[i].status.clone(),
                    });
                    continue;
                }
            }
            if self.config.register {
                self.start_registration(i);
            }
        }
        self.drive_flows().await;
    }

    /// The address the account's server sees us at, and the connection
    /// to it (see [`reach`]).
    async fn local_address(
        &mut self,
        i: usize,
    ) -> Result<(SocketAddr, Option<sip_tokio::ConnectionId>), String> {
        reach(
            self.driver.transports(),
            self.udp_local,
            self.accounts[i].server(),
        )
        .await
    }

    /// An account's connection to its server closed (the server restarted,
    /// a NAT forgot it): the registrar can no longer reach us over it, so
    /// a new one is opened and the binding moved to it, at once the first
    /// time and then after a back-off that grows until a registration
    /// succeeds on a connection that then stays up (a server that accepts,
    /// or even registers, and closes cannot make it spin), rather than at
    /// the next refresh up to an hour later.
    fn account_connection_closed(&mut self, connection: sip_tokio::ConnectionId) {
        if self.shutting_down.is_some() {
            return;
        }
        let now = self.now();
        for a in &mut self.accounts {
            if a.connection != Some(connection) {
                continue;
            }
            a.connection = None;
            if a.connected_since
                .take()
                .is_some_and(|t| now.saturating_duration_since(t) >= STABLE_CONNECTION)
            {
                a.reconnects_in_row = 0;
            }
            // Nothing to keep reachable for a registration that gave up
            // (a wrong password) or none at all.
            if a.registration
                .as_ref()
                .is_none_or(|r| r.state() == sip_core::registration::RegistrationState::Idle)
            {
                continue;
            }
            info!(account = %a.config.id, "connection to the server lost");
            a.reconnect_at = Some(now + reconnect_backoff(a.reconnects_in_row));
            a.reconnects_in_row = a.reconnects_in_row.saturating_add(1);
        }
    }

    /// The connections open now.
    fn live_connections(&self) -> Vec<sip_tokio::ConnectionId> {
        self.driver
            .transports()
            .connections()
            .into_iter()
            .map(|c| c.id)
            .collect()
    }

    /// Starts the reconnections that are due, each beside the engine.
    fn reconnect_due(&mut self, now: Instant) {
        if self.shutting_down.is_some() {
            return;
        }
        for i in 0..self.accounts.len() {
            let a = &mut self.accounts[i];
            if a.reconnect_at.is_none_or(|t| t > now) || a.reconnect_attempt.is_some() {
                continue;
            }
            a.reconnect_at = None;
            self.failover_searches += 1;
            let attempt = self.failover_searches;
            a.reconnect_attempt = Some(attempt);
            let (server, target) = (a.current, a.server().clone());
            let transports = self.driver.transports().clone();
            let udp_local = self.udp_local;
            let done = self.prepared.clone();
            tokio::spawn(async move {
                let result = reach(&transports, udp_local, &target).await;
                let _ = done.send(Prepared::Reconnected {
                    account: i,
                    server,
                    attempt,
                    result,
                });
            });
        }
    }

    /// A reconnection ended: the registration names the new connection, or
    /// another attempt follows the back-off. A report from an attempt
    /// overtaken by a fail-over (which opened a connection of its own) or
    /// by shutdown changes nothing.
    fn reconnected(
        &mut self,
        i: usize,
        server: usize,
        attempt: u64,
        result: Result<(SocketAddr, Option<sip_tokio::ConnectionId>), String>,
    ) {
        let now = self.now();
        let alive = self.live_connections();
        let Some(a) = self.accounts.get_mut(i) else {
            return;
        };
        if a.reconnect_attempt != Some(attempt) {
            return;
        }
        a.reconnect_attempt = None;
        if self.shutting_down.is_some() || a.current != server || a.connection.is_some() {
            return;
        }
        let found = result.and_then(|(local, connection)| match connection {
            // Closed again before this report: another attempt.
            Some(c) if !alive.contains(&c) => Err("the new connection closed at once".to_owned()),
            _ => Ok((local, connection)),
        });
        let (local, connection) = match found {
            Ok(found) => found,
            Err(e) => {
                warn!(account = %a.config.id, error = %Pii::text(&e), "server not reached again yet");
                a.reconnect_at = Some(now + reconnect_backoff(a.reconnects_in_row));
                a.reconnects_in_row = a.reconnects_in_row.saturating_add(1);
                return;
            }
        };
        a.local = Some(local);
        a.connection = connection;
        a.connected_since = Some(now);
        let via = format!("SIP/2.0/{} {local}", a.server().kind.via_transport());
        let Some(contact) = a.register_contact() else {
            return;
        };
        let route = a.route.clone();
        if let Some(reg) = a.registration.as_mut() {
            // A REGISTER out or a retry waiting takes the new Contact with
            // it; a registered binding moves now.
            reg.relocate(&contact, &via, &route);
            reg.refresh_now(&mut self.rng);
        }
        self.pump_registration(i);
    }

    /// Keeps each account's connection to its server open and its NAT
    /// binding alive with a CRLF ping (RFC 5626 §4.4.1, which servers
    /// without outbound ignore between messages, RFC 3261 §7.5): without
    /// traffic the transport closes a connection after its idle timeout,
    /// and the registrar could no longer reach us over it until the next
    /// refresh, up to an hour later.
    fn keep_connections_alive(&mut self, now: Instant) {
        if self.next_keepalive > now {
            return;
        }
        self.next_keepalive = now + STREAM_KEEPALIVE;
        if self.shutting_down.is_some() {
            return;
        }
        for a in &self.accounts {
            let Some(connection) = a.connection.filter(|_| a.flows.is_none()) else {
                continue;
            };
            let transports = self.driver.transports().clone();
            tokio::spawn(async move {
                if let Err(e) = transports.ping(connection).await {
                    debug!(error = %e, "keep-alive not sent");
                }
            });
        }
    }

    fn start_registration(&mut self, i: usize) {
        let Some(contact) = self.accounts[i].register_contact() else {
            return;
        };
        let a = &self.accounts[i];
        let Some(local) = a.local else { return };
        let mut rc = RegistrationConfig::new(
            &a.config.registrar,
            &a.aor,
            &contact,
            &format!("SIP/2.0/{} {local}", a.server().kind.via_transport()),
        );
        rc.expires = a.config.expiry;
        rc.route = a.route.clone();
        if let Some(f) = &a.flows {
            rc.contact_params = f.header_params();
        }
        rc.retry_base = Duration::from_secs(5);
        rc.retry_max = Duration::from_secs(300);
        let auth_user = a.config.auth_user.as_deref().unwrap_or(&a.config.user);
        let password = a
            .config
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        let mut reg = Registration::new(
            rc,
            Some(DigestClient::new(auth_user, password.as_str())),
            &mut self.rng,
        );
        reg.register(&mut self.rng);
        self.accounts[i].registration = Some(reg);
        self.set_reg_status(i, RegistrationStatus::Registering);
        self.pump_registration(i);
    }

    /// After a REGISTER that got no answer or a 503, the account's next
    /// server (RFC 3263 §4.3): at once while some of them have not been
    /// tried since the last back-off, otherwise when the registration's
    /// back-off runs out. The back-off carries on across servers.
    /// Looks for the next server that can be reached; one that cannot (a
    /// refused connection, or none before the connect timeout) is passed
    /// over, each at most once. Connecting can take up to the transport's
    /// connect timeout per server, so the search runs beside the engine,
    /// which carries on with calls and hears the outcome as a
    /// [`FailoverFound`]. Meanwhile signalling goes where it went.
    fn fail_over(&mut self, i: usize) {
        if !std::mem::take(&mut self.accounts[i].failover_wanted)
            || self.shutting_down.is_some()
            // The search under way relocates the registration.
            || self.accounts[i].failover_search.is_some()
        {
            return;
        }
        let a = &self.accounts[i];
        let candidates: Vec<(usize, Server)> =
            a.next_servers().map(|(k, s)| (k, s.clone())).collect();
        let id = a.config.id.clone();
        self.failover_searches += 1;
        let search = self.failover_searches;
        self.accounts[i].failover_search = Some(search);
        let transports = self.driver.transports().clone();
        let udp_local = self.udp_local;
        let done = self.failovers.clone();
        tokio::spawn(async move {
            let mut found = None;
            for (step, (k, server)) in candidates.into_iter().enumerate() {
                match reach(&transports, udp_local, &server).await {
                    Ok((local, connection)) => {
                        found = Some((k, local, step + 1, connection));
                        break;
                    }
                    Err(e) => {
                        warn!(account = %id, server = k, error = %Pii::text(&e), "server unreachable");
                    }
                }
            }
            let _ = done.send(FailoverFound {
                account: i,
                search,
                found,
            });
        });
    }

    /// A search for the next server ended: the registration moves there,
    /// unless it got through where it was meanwhile.
    fn failover_found(&mut self, done: FailoverFound) {
        let i = done.account;
        let now = self.now();
        let alive = self.live_connections();
        let Some(a) = self.accounts.get_mut(i) else {
            return;
        };
        if a.failover_search != Some(done.search) {
            return;
        }
        a.failover_search = None;
        // Meanwhile the back-off's retry may have got through, failed for
        // good, or be out: only a registration waiting to retry moves and
        // registers at once; one with a REGISTER out moves for the next.
        let state = a.registration.as_ref().map(Registration::state);
        let waiting = matches!(
            state,
            Some(sip_core::registration::RegistrationState::WaitingToRetry { .. })
        );
        let in_flight = matches!(
            state,
            Some(sip_core::registration::RegistrationState::Registering)
        );
        if self.shutting_down.is_some() || !(waiting || in_flight) {
            return;
        }
        let Some((next, local, steps, connection)) = done.found else {
            // None: the back-off's retry goes where it went, and a new
            // round starts after it.
            a.failovers_in_row = 0;
            return;
        };
        a.use_server(next);
        a.local = Some(local);
        a.connection = connection;
        a.connected_since = Some(now);
        // It connected afresh: a reconnection to the old server is moot,
        // unless this connection closed before the report came (its close
        // matched nothing): then one to the new server follows.
        a.reconnect_attempt = None;
        a.reconnect_at = None;
        if let Some(c) = connection
            && !alive.contains(&c)
        {
            a.connection = None;
            a.reconnect_at = Some(now);
        }
        a.failovers_in_row += steps;
        // Each server once since the last back-off; then the back-off.
        let now_too = a.failovers_in_row < a.servers.len();
        if !now_too {
            a.failovers_in_row = 0;
        }
        let via = format!("SIP/2.0/{} {local}", a.server().kind.via_transport());
        let Some(contact) = a.register_contact() else {
            return;
        };
        info!(account = %a.config.id, server = next, now = now_too, "registration fails over to the next server");
        let route = a.route.clone();
        if let Some(reg) = a.registration.as_mut() {
            if now_too && waiting {
                reg.fail_over(&contact, &via, &route, &mut self.rng);
            } else {
                reg.relocate(&contact, &via, &route);
            }
        }
        self.pump_registration(i);
    }

    fn set_reg_status(&mut self, i: usize, status: RegistrationStatus) {
        if self.accounts[i].status != status {
            self.accounts[i].status = status.clone();
            self.emit(PhoneEvent::Registration {
                account: self.accounts[i].config.id.clone(),
                status,
            });
        }
    }

    fn pump_registration(&mut self, i: usize) {
        let now = self.now();
        // The driver forgets names past a bound: named again as used.
        name_servers(&mut self.driver, std::iter::once(self.accounts[i].server()));
        let dest = Destination {
            transport: core_transport(self.accounts[i].server().kind),
            addr: self.accounts[i].server().addr,
            // Over the flow's own connection when there is one.
            connection: self.accounts[i]
                .flows
                .as_ref()
                .and_then(flows::AccountFlows::connection)
                .map(|c| sip_core::endpoint::ConnectionId(c.as_u64())),
        };
        let mut requests = Vec::new();
        let mut events = Vec::new();
        if let Some(reg) = self.accounts[i].registration.as_mut() {
            while let Some(r) = reg.poll_request() {
                requests.push(r);
            }
            while let Some(e) = reg.poll_event() {
                events.push(e);
            }
        }
        for r in requests {
            match self.driver.endpoint().send_request(now, r, dest) {
                Ok(tx) => {
                    self.reg_tx.insert(tx, i);
                }
                Err(e) => warn!(error = %e, "REGISTER not sent"),
            }
        }
        for e in events {
            let status = match e {
                RegistrationEvent::Registered { expires } => {
                    let sr: Vec<String> = self.accounts[i]
                        .registration
                        .as_ref()
                        .map(|r| r.service_route().to_vec())
                        .unwrap_or_default();
                    if !sr.is_empty() {
                        self.accounts[i].route = sr;
                    }
                    info!(
                        account = %self.accounts[i].config.id,
                        aor = %Pii::sip_uri(&self.accounts[i].aor),
                        expires,
                        "registered"
                    );
                    self.flow_registered(i);
                    self.accounts[i].failovers_in_row = 0;
                    RegistrationStatus::Registered { expires }
                }
                RegistrationEvent::Unregistered => RegistrationStatus::Unregistered,
                RegistrationEvent::Failed {
                    status,
                    reason,
                    will_retry,
                    retry_after,
                } => {
                    warn!(account = %self.accounts[i].config.id, status, will_retry, "registration failed");
                    let flows = self.accounts[i].flows.is_some();
                    self.set_reg_status(
                        i,
                        RegistrationStatus::Failed {
                            status,
                            reason,
                            will_retry,
                        },
                    );
                    // The flow manager re-forms the flow, after its back-off.
                    if flows && self.shutting_down.is_none() {
                        self.flow_registration_failed(i, status, retry_after);
                    }
                    let a = &mut self.accounts[i];
                    a.failover_wanted =
                        !flows && will_retry && a.servers.len() > 1 && matches!(status, 408 | 503);
                    if !a.failover_wanted {
                        a.failovers_in_row = 0;
                    }
                    continue;
                }
                _ => continue,
            };
            self.set_reg_status(i, status);
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut media_rx: mpsc::UnboundedReceiver<MediaEvent>,
        mut flow_connects: mpsc::UnboundedReceiver<flows::FlowConnected>,
        mut failovers: mpsc::UnboundedReceiver<FailoverFound>,
        mut prepared: mpsc::UnboundedReceiver<Prepared>,
    ) {
        loop {
            self.driver.flush().await;
            if let Some((deadline, _)) = &self.shutting_down {
                let regs_done = self.accounts.iter().all(|a| {
                    a.registration.as_ref().is_none_or(|r| {
                        matches!(
                            r.state(),
                            sip_core::registration::RegistrationState::Idle
                                | sip_core::registration::RegistrationState::WaitingToRetry { .. }
                        )
                    })
                });
                // Calls being cancelled end with their 487 (or a racing
                // 200, which gets its ACK and BYE).
                // A BYE (or NOTIFY) still out may be challenged and sent
                // again: its answer is waited for too.
                if regs_done && self.calls.is_empty() && self.in_dialog.is_empty()
                    || self.now() >= *deadline
                {
                    break;
                }
            }
            let wakeup = self.next_wakeup();
            let wake = tokio::select! {
                c = commands.recv() => Wake::Command(c),
                d = self.driver.next(wakeup) => Wake::Driver(d),
                m = media_rx.recv() => Wake::Media(m),
                Some(f) = flow_connects.recv() => Wake::FlowConnected(f),
                Some(f) = failovers.recv() => Wake::FailoverFound(f),
                Some(p) = prepared.recv() => Wake::Prepared(p),
            };
            match wake {
                Wake::Command(Some(c)) => self.command(c).await,
                Wake::Command(None) => {
                    // Every handle is gone: nobody can hear about calls any more.
                    if self.shutting_down.is_none() {
                        self.begin_shutdown(None).await;
                    }
                }
                Wake::Driver(Some(DriverEvent::Endpoint(e))) => self.endpoint_event(e).await,
                Wake::Driver(Some(DriverEvent::ConnectionClosed { connection, .. })) => {
                    self.flow_connection_closed(connection);
                    self.account_connection_closed(connection);
                }
                Wake::Driver(Some(DriverEvent::SendFailed { destination, error })) => {
                    debug!(to = %Pii::ip(destination.addr), error = %error, "send failed");
                }
                Wake::Driver(Some(_)) => {}
                Wake::Driver(None) => break,
                Wake::Media(Some(m)) => self.media_event(m),
                Wake::Media(None) => {}
                Wake::FlowConnected(f) => self.flow_connected(f),
                Wake::FailoverFound(f) => self.failover_found(f),
                Wake::Prepared(Prepared::Dial(d)) => self.dial_prepared(d),
                Wake::Prepared(Prepared::Incoming(tx, result)) => {
                    self.incoming_prepared(tx, result).await;
                }
                Wake::Prepared(Prepared::Reconnected {
                    account,
                    server,
                    attempt,
                    result,
                }) => self.reconnected(account, server, attempt, result),
            }
            self.timers().await;
        }
        // Out of time: what is left ends here, in the history too; a call
        // hung up while its 200 waited for the ACK gets its BYE now.
        let left: Vec<CallId> = self.calls.keys().copied().collect();
        for id in left {
            if self.calls.get(&id).is_some_and(|l| l.bye_after_ack) {
                self.send_bye(id);
                self.end_call(id, EndReason::LocalHangup).await;
            } else {
                self.end_call(id, EndReason::Cancelled).await;
            }
        }
        // The last messages (an ACK and BYE for a 200 that raced our
        // CANCEL, the BYEs) leave before the connections close.
        self.driver.flush().await;
        self.driver.settle(SHUTDOWN_GRACE).await;
        self.driver.transports().shutdown();
        for reply in self.shutting_down.take().into_iter().flat_map(|(_, r)| r) {
            let _ = reply.send(Ok(()));
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let mut times: Vec<Instant> = Vec::new();
        for a in &self.accounts {
            if let Some(t) = a.registration.as_ref().and_then(Registration::poll_timeout) {
                times.push(t);
            }
            times.extend(a.reconnect_at.filter(|_| a.reconnect_attempt.is_none()));
            if self.shutting_down.is_none() {
                times.extend(a.flows.as_ref().and_then(flows::AccountFlows::poll_timeout));
            }
        }
        for leg in self.calls.values() {
            if let Some((r, _)) = &leg.responder
                && let Some(t) = r.poll_timeout()
            {
                times.push(t);
            }
            times.extend(leg.next_dtmf);
            // The session timer runs once the call is answered (a ringing
            // call gets neither a refresh nor a BYE, RFC 3261 §14.1, §15).
            times.extend(
                leg.timer
                    .as_ref()
                    .filter(|_| leg.phase == Phase::Confirmed)
                    .map(|t| t.deadline),
            );
            times.extend(leg.next_quality);
            times.extend(leg.reinvite_retry.map(|(t, _)| t));
        }
        if let Some((d, _)) = &self.shutting_down {
            times.push(*d);
        }
        times.push(self.next_purge);
        if self.accounts.iter().any(|a| a.connection.is_some()) {
            times.push(self.next_keepalive);
        }
        times.into_iter().min()
    }

    async fn timers(&mut self) {
        let now = self.now();
        if self.next_purge <= now {
            self.purge_history();
        }
        self.keep_connections_alive(now);
        self.reconnect_due(now);
        self.drive_flows().await;
        for i in 0..self.accounts.len() {
            let due = self.accounts[i]
                .registration
                .as_ref()
                .and_then(Registration::poll_timeout)
                .is_some_and(|t| t <= now);
            if due {
                if let Some(reg) = self.accounts[i].registration.as_mut() {
                    reg.handle_timeout(now, &mut self.rng);
                }
                self.pump_registration(i);
            }
        }
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            self.call_timers(id, now).await;
        }
    }

    async fn call_timers(&mut self, id: CallId, now: Instant) {
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        // 2xx retransmissions until the ACK (§13.3.1.4).
        let mut resend = Vec::new();
        let mut ack_lost = false;
        if let Some((r, dest)) = leg.responder.as_mut() {
            r.handle_timeout(now);
            while let Some(m) = r.poll_transmit() {
                resend.push((*dest, m));
            }
            if r.is_acked() {
                leg.responder = None;
            } else if r.has_failed(now) {
                ack_lost = true;
                leg.responder = None;
            }
        }
        for (dest, m) in resend {
            self.driver.endpoint().send_stateless(dest, &m);
        }
        if ack_lost {
            warn!(call = %id, "no ACK for our 2xx: ending the call");
            let hung_up = self.calls.get(&id).is_some_and(|l| l.bye_after_ack);
            self.send_bye(id);
            let reason = if hung_up {
                EndReason::LocalHangup
            } else {
                EndReason::Failed("no ACK for the answer".into())
            };
            self.end_call(id, reason).await;
            return;
        }
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        if leg.next_dtmf.is_some_and(|t| t <= now) {
            self.send_next_dtmf(id, now).await;
        }
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        if leg.next_quality.is_some_and(|t| t <= now) {
            leg.next_quality = Some(now + self.config.quality_interval);
            if let Some(report) = leg.media.as_ref().and_then(CallMedia::report) {
                leg.last_quality = Some(report.clone());
                let _ = self.events.send(PhoneEvent::Quality { call: id, report });
            }
        }
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some((at, hold)) = leg.reinvite_retry
            && at <= now
        {
            leg.reinvite_retry = None;
            let _ = self.send_reinvite(id, hold);
        }
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(t) = &leg.timer
            && t.deadline <= now
            && leg.phase == Phase::Confirmed
        {
            if t.we_refresh {
                let interval = t.interval;
                if let Some(t) = leg.timer.as_mut() {
                    // Until the refresh answers; the answer re-arms.
                    t.deadline = now + interval / 2;
                }
                self.send_refresh(id);
            } else {
                info!(call = %id, "session timer expired");
                self.send_bye(id);
                self.end_call(id, EndReason::SessionExpired).await;
            }
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Dial {
                account,
                target,
                reply,
            } => self.dial(account.as_deref(), &target, None, Dialer::User(reply)),
            Command::Answer { call, reply } => {
                let r = self.answer(call).await;
                let _ = reply.send(r);
            }
            Command::Reject {
                call,
                status,
                reply,
            } => {
                let r = self.reject(call, status).await;
                let _ = reply.send(r);
            }
            Command::Hangup { call, reply } => {
                let r = self.hangup(call).await;
                let _ = reply.send(r);
            }
            Command::Hold { call, hold, reply } => {
                let r = self.hold(call, hold);
                let _ = reply.send(r);
            }
            Command::Mute { call, muted, reply } => {
                let r = match self.calls.get_mut(&call) {
                    Some(leg) => {
                        leg.muted = muted;
                        if let Some(m) = &leg.media {
                            // A held call stays silent until resumed.
                            m.set_muted(muted || leg.local_hold).await;
                        }
                        Ok(())
                    }
                    None => Err(PhoneError::NoSuchCall(call)),
                };
                let _ = reply.send(r);
            }
            Command::Dtmf {
                call,
                digits,
                reply,
            } => {
                let r = self.queue_dtmf(call, &digits);
                let _ = reply.send(r);
            }
            Command::Transfer {
                call,
                target,
                reply,
            } => {
                let r = self.transfer(call, &target, None);
                let _ = reply.send(r);
            }
            Command::AttendedTransfer { call, other, reply } => {
                let r = self.attended_transfer(call, other);
                let _ = reply.send(r);
            }
            Command::Info { call, reply } => {
                let r = self
                    .calls
                    .get(&call)
                    .map(|l| self.call_info(l))
                    .ok_or(PhoneError::NoSuchCall(call));
                let _ = reply.send(r);
            }
            Command::Calls { reply } => {
                let mut all: Vec<CallInfo> =
                    self.calls.values().map(|l| self.call_info(l)).collect();
                all.sort_by_key(|c| c.id);
                let _ = reply.send(Ok(all));
            }
            Command::Wake { reply } => {
                self.wake_flows();
                let _ = reply.send(Ok(()));
            }
            Command::SetPushToken { token, reply } => {
                self.set_push_token(token);
                let _ = reply.send(Ok(()));
            }
            Command::Accounts { reply } => {
                let all = self
                    .accounts
                    .iter()
                    .map(|a| AccountInfo {
                        id: a.config.id.clone(),
                        aor: a.aor.clone(),
                        status: a.status.clone(),
                        local: a.local,
                        push_confirmed: a
                            .flows
                            .as_ref()
                            .and_then(flows::AccountFlows::push_confirmed),
                    })
                    .collect();
                let _ = reply.send(Ok(all));
            }
            Command::History { limit, reply } => {
                let _ = reply.send(self.history.recent(limit).map_err(PhoneError::from));
            }
            Command::Shutdown { reply } => self.begin_shutdown(Some(reply)).await,
        }
    }

    fn call_info(&self, leg: &CallLeg) -> CallInfo {
        let mut info = leg.info();
        info.account = self.accounts[leg.account].config.id.clone();
        info
    }

    async fn begin_shutdown(&mut self, reply: Option<Reply<()>>) {
        // Asked again: answered with the first, which is under way (a
        // second round would send a second removal and move the deadline).
        if let Some((_, replies)) = &mut self.shutting_down {
            replies.extend(reply);
            return;
        }
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            let _ = self.hangup(id).await;
        }
        for (tx, waiting) in std::mem::take(&mut self.incoming) {
            self.respond(tx, &waiting.request, 480, "Temporarily Unavailable");
        }
        for i in 0..self.accounts.len() {
            let registered = matches!(
                self.accounts[i].status,
                RegistrationStatus::Registered { .. } | RegistrationStatus::Registering
            );
            if let Some(reg) = self.accounts[i].registration.as_mut() {
                if registered {
                    reg.unregister(&mut self.rng);
                } else {
                    self.accounts[i].registration = None;
                }
            }
            self.pump_registration(i);
        }
        let deadline = self.now() + SHUTDOWN_GRACE;
        self.shutting_down = Some((deadline, reply.into_iter().collect()));
    }

    fn account_index(&self, account: Option<&str>) -> Result<usize, PhoneError> {
        match account {
            Some(id) => self
                .accounts
                .iter()
                .position(|a| a.config.id == id)
                .ok_or_else(|| PhoneError::NoSuchAccount(id.to_owned())),
            None if self.accounts.is_empty() => Err(PhoneError::NoSuchAccount(String::new())),
            None => Ok(0),
        }
    }

    /// A Via with a new branch for a request of call `id`: over the
    /// transport its requests go (a direct call's may differ from the
    /// account's).
    fn via_for_call(&mut self, id: CallId) -> Option<String> {
        let leg = self.calls.get(&id)?;
        let local = leg.direct_local.or(self.accounts[leg.account].local)?;
        Some(self.via_at(local, leg.dest.transport.as_str()))
    }

    /// A Via with a new branch for a request sent over `kind`.
    fn via_over(&mut self, account: usize, kind: TransportKind) -> Option<String> {
        let local = self.accounts[account].local?;
        Some(self.via_at(local, kind.via_transport()))
    }

    /// A Via at `local` with a new branch, `transport` its token (`UDP`,
    /// `TLS`...).
    fn via_at(&mut self, local: SocketAddr, transport: &str) -> String {
        let branch = self.driver.endpoint().new_branch();
        format!("SIP/2.0/{transport} {local};branch={branch};rport")
    }

    /// Whether account `ai` signals to peers directly: no registration,
    /// no proxy.
    fn signals_directly(&self, ai: usize) -> bool {
        !self.config.register && self.accounts[ai].route.is_empty()
    }

    /// Our address for a call with `peer` when account `ai` signals to
    /// peers directly: on the interface that routes to the peer (the
    /// account's address is the one towards its stand-in server, which a
    /// peer elsewhere cannot reach), at our SIP port, so that the peer's
    /// requests, responses and media find us. `None` for an account that
    /// signals through its server, whose address is the call's.
    fn direct_local(&self, ai: usize, peer: SocketAddr) -> Option<SocketAddr> {
        if !self.signals_directly(ai) {
            return None;
        }
        towards(self.udp_local, peer)
            .inspect_err(|e| debug!(error = %Pii::text(e), "no interface towards the peer"))
            .ok()
    }

    /// Sends a call's INVITE again, to the next server, after the one it
    /// went to failed (RFC 3263 §4.3): the same request in a new
    /// transaction (a new branch), with that server's Route. False when
    /// there is none to try, the user hung up, or a callee already answered
    /// provisionally (the request got through).
    fn invite_elsewhere(&mut self, id: CallId) -> bool {
        let Some(leg) = self.calls.get_mut(&id) else {
            return false;
        };
        if leg.cancelled.is_some() || leg.dialog.is_some() || leg.next_hops.is_empty() {
            return false;
        }
        let hop = leg.next_hops.remove(0);
        let ai = leg.account;
        let Some(via) = self.via_over(ai, hop.kind) else {
            return false;
        };
        let Some(leg) = self.calls.get_mut(&id) else {
            return false;
        };
        let mut retry = leg.invite.clone();
        if retry.set_header("Via", &via).is_err() {
            return false;
        }
        // Outside a dialog the Route is the preloaded one: an outbound
        // proxy's own; a registrar's (the Service-Route) stays.
        if !hop.route.is_empty() {
            retry.remove_header("Route");
            for r in &hop.route {
                if retry.push_header("Route", r).is_err() {
                    return false;
                }
            }
        }
        // Credentials answered the last server's challenge: the next one
        // gets cached ones, if any, and challenges afresh otherwise.
        retry.remove_header("Authorization");
        retry.remove_header("Proxy-Authorization");
        let _ = self.accounts[ai]
            .digest
            .authorize_request(&mut retry, &mut self.rng);
        let Some(leg) = self.calls.get_mut(&id) else {
            return false;
        };
        leg.challenge_answered = false;
        let dest = Destination {
            transport: core_transport(hop.kind),
            addr: hop.addr,
            connection: None,
        };
        info!(call = %id, dest = %Pii::ip(dest.addr), "INVITE fails over to the next server");
        let now = self.now();
        match self
            .driver
            .endpoint()
            .send_request(now, retry.clone(), dest)
        {
            Ok(tx) => {
                if let Some(leg) = self.calls.get_mut(&id) {
                    leg.dest = dest;
                    leg.invite = retry;
                    leg.invite_tx = Some(tx);
                }
                self.pending.insert(tx, (id, Pending::Invite));
                true
            }
            Err(e) => {
                debug!(call = %id, error = %e, "INVITE not sent to the next server");
                false
            }
        }
    }

    fn local_identity(&self, account: usize) -> Identity {
        let a = &self.accounts[account];
        Identity {
            uri: a.aor.clone(),
            display_name: a.config.display_name.clone(),
        }
    }

    fn media_settings(&self, port: u16, ip: IpAddr) -> media_engine::negotiation::MediaSettings {
        media::settings(&self.config.config.media, ip, port)
    }

    /// Places a call. `replaces` carries the Replaces header of an
    /// attended transfer we were asked to complete. What can take seconds
    /// (the callee domain's servers when calling directly, a TURN
    /// allocation for the media) runs beside the engine, which carries on
    /// with other calls and commands; the INVITE goes when it is done
    /// ([`dial_prepared`](Self::dial_prepared)), and `dialer` hears then.
    fn dial(
        &mut self,
        account: Option<&str>,
        target: &str,
        replaces: Option<String>,
        dialer: Dialer,
    ) {
        let request = match self.dial_request(account, target, replaces) {
            Ok(request) => request,
            Err(e) => {
                self.dialled(dialer, Err(e));
                return;
            }
        };
        let DialRequest {
            account,
            target_uri,
            replaces,
            hops,
            local,
        } = request;
        let direct = hops.is_none();
        let dns = Arc::clone(&self.dns);
        let kind = self.accounts[account].server().kind;
        let rtp_ports = self.config.rtp_ports;
        let turn = self.config.config.relay.turn.clone();
        let tls = self.tls.clone();
        let done = self.prepared.clone();
        let bound = self.udp_local;
        tokio::spawn(async move {
            let result = async {
                let hops = match hops {
                    Some(hops) => hops,
                    None => {
                        let mut found = locate(&dns, &target_uri, kind, Vec::new())
                            .await
                            .map_err(PhoneError::Network)?
                            .into_iter();
                        let first = found.next().ok_or_else(|| {
                            PhoneError::Network(format!("no server for {target_uri}"))
                        })?;
                        (first, found.collect())
                    }
                };
                // A direct call's media goes out the interface towards the
                // callee, as its signalling does (see `direct_local`).
                let ip = if direct {
                    towards(bound, hops.0.addr).map_or(local.ip(), |a| a.ip())
                } else {
                    local.ip()
                };
                let prepared = media::prepare(ip, rtp_ports, turn.as_ref(), tls.as_ref()).await?;
                Ok((hops, prepared))
            }
            .await;
            let _ = done.send(Prepared::Dial(DialPrepared {
                account,
                target_uri,
                replaces,
                dialer,
                direct,
                result,
            }));
        });
    }

    /// What a call needs before anything slow: the account, the target as
    /// a URI and, unless calling directly, where the INVITE goes.
    fn dial_request(
        &mut self,
        account: Option<&str>,
        target: &str,
        replaces: Option<String>,
    ) -> Result<DialRequest, PhoneError> {
        if self.shutting_down.is_some() {
            return Err(PhoneError::Stopped);
        }
        let ai = self.account_index(account)?;
        let target_uri = self.normalise_target(ai, target)?;
        let a = &self.accounts[ai];
        let Some(local) = a.local else {
            return Err(PhoneError::Network(format!(
                "account {:?} has no connection to {}",
                a.config.id,
                a.server().addr
            )));
        };
        // Through the registrar (or outbound proxy) when registering, else
        // straight to the target's host. The servers after the first are
        // where the INVITE goes if that one fails; an account on RFC 5626
        // flows leaves that to its flow manager.
        let hops = if self.config.register || !a.route.is_empty() {
            Some(a.hops())
        } else {
            uri_target(&target_uri, a.server().kind).map_err(|v| PhoneError::InvalidInput {
                what: "target",
                value: v,
            })?;
            None
        };
        Ok(DialRequest {
            account: ai,
            target_uri,
            replaces,
            hops,
            local,
        })
    }

    /// The servers and media of a call being placed are ready (or failed):
    /// the INVITE goes, and whoever placed the call hears.
    fn dial_prepared(&mut self, p: DialPrepared) {
        let result = match p.result {
            Ok((hops, prepared)) => {
                // Through the account: where it signals now, which a
                // failover may have moved meanwhile.
                let (first, next_hops) = if p.direct {
                    hops
                } else {
                    self.accounts[p.account].hops()
                };
                self.send_invite(
                    p.account,
                    p.target_uri,
                    p.replaces,
                    first,
                    next_hops,
                    prepared,
                )
            }
            Err(e) => Err(e),
        };
        self.dialled(p.dialer, result);
    }

    /// Tells whoever placed a call how it went.
    fn dialled(&mut self, dialer: Dialer, result: Result<CallId, PhoneError>) {
        match dialer {
            Dialer::User(reply) => {
                let _ = reply.send(result);
            }
            Dialer::Transfer(id) => self.transfer_dialled(id, result),
        }
    }

    /// Builds and sends a call's INVITE.
    fn send_invite(
        &mut self,
        ai: usize,
        target_uri: String,
        replaces: Option<String>,
        first: Server,
        next_hops: Vec<Server>,
        prepared: media::PreparedMedia,
    ) -> Result<CallId, PhoneError> {
        // Meanwhile the phone may have begun to stop.
        if self.shutting_down.is_some() {
            return Err(PhoneError::Stopped);
        }
        let kind = first.kind;
        let dest = Destination {
            transport: core_transport(kind),
            addr: first.addr,
            connection: None,
        };
        name_servers(&mut self.driver, std::iter::once(&first).chain(&next_hops));
        let settings = self.media_settings(prepared.addr().port(), prepared.addr().ip());
        let mut negotiation = MediaNegotiation::new(settings, &mut self.rng);
        let offer = negotiation
            .create_offer()
            .map_err(|e| PhoneError::Media(e.to_string()))?;
        let local_id = self.local_identity(ai);
        let tag = self.driver.endpoint().new_tag();
        let call_id = self.driver.endpoint().new_call_id();
        let direct_local = self.direct_local(ai, first.addr);
        let (via, contact) = match direct_local {
            Some(local) => (
                self.via_at(local, kind.via_transport()),
                self.accounts[ai].contact_at(local, kind.via_transport()),
            ),
            None => (
                self.via_over(ai, kind).ok_or(PhoneError::Stopped)?,
                self.accounts[ai].contact().ok_or(PhoneError::Stopped)?,
            ),
        };
        let from = match &local_id.display_name {
            Some(name) => format!("\"{}\" <{}>;tag={tag}", quote(name), local_id.uri),
            None => format!("<{}>;tag={tag}", local_id.uri),
        };
        let mut b = Message::request(Method::Invite, &target_uri)
            .header("Via", &via)
            .and_then(|b| b.header("Max-Forwards", "70"))
            .and_then(|b| b.header("From", &from))
            .and_then(|b| b.header("To", &format!("<{target_uri}>")))
            .and_then(|b| b.header("Call-ID", &call_id))
            .and_then(|b| b.header("CSeq", "1 INVITE"))
            .and_then(|b| b.header("Contact", &format!("<{contact}>")))
            .and_then(|b| b.header("Allow", ALLOW))
            .and_then(|b| b.header("Supported", "replaces, timer"))
            .and_then(|b| b.header("User-Agent", &self.config.user_agent))
            .map_err(|e| PhoneError::InvalidInput {
                what: "target",
                value: e.to_string(),
            })?;
        for r in &self.accounts[ai].route {
            b = b
                .header("Route", r)
                .map_err(|e| PhoneError::Config(e.to_string()))?;
        }
        if let Some(se) = self.config.session_expires {
            b = b
                .header("Session-Expires", &se.as_secs().to_string())
                .and_then(|b| b.header("Min-SE", "90"))
                .map_err(|e| PhoneError::Config(e.to_string()))?;
        }
        if let Some(r) = &replaces {
            b = b
                .header("Replaces", r)
                .map_err(|_| PhoneError::InvalidInput {
                    what: "Replaces",
                    value: r.clone(),
                })?;
        }
        let mut invite = b
            .header("Content-Type", "application/sdp")
            .map(|b| b.body(offer.to_string().into_bytes()))
            .and_then(|b| b.build())
            .map_err(|e| PhoneError::InvalidInput {
                what: "target",
                value: e.to_string(),
            })?;
        // Credentials cached from the registration's challenge go along at once.
        let _ = self.accounts[ai]
            .digest
            .authorize_request(&mut invite, &mut self.rng);
        let now = self.now();
        let tx = self
            .driver
            .endpoint()
            .send_request(now, invite.clone(), dest)
            .map_err(|e| PhoneError::Network(e.to_string()))?;
        let id = CallId(self.next_call);
        self.next_call += 1;
        let leg_target_log = target_uri.clone();
        let leg_local_log = local_id.uri.clone();
        info!(call = %id, to = %Pii::sip_uri(&leg_target_log), from = %Pii::sip_uri(&leg_local_log), dest = %Pii::ip(dest.addr), "dialing");
        let leg = CallLeg {
            id,
            account: ai,
            direction: CallDirection::Outgoing,
            phase: Phase::Calling,
            state: CallState::Dialing,
            local: local_id,
            remote: Identity {
                uri: target_uri,
                display_name: None,
            },
            dest,
            direct_local,
            invite,
            early_answer: None,
            invite_tx: Some(tx),
            server_tx: None,
            local_tag: tag,
            dialog: None,
            negotiation,
            prepared: Some(prepared),
            media: None,
            answer_sdp: None,
            answer_in_ack: false,
            responder: None,
            last_2xx: None,
            started: SystemTime::now(),
            answered: None,
            local_hold: false,
            remote_hold: false,
            muted: false,
            cancelled: None,
            dtmf_queue: VecDeque::new(),
            next_dtmf: None,
            timer: None,
            next_quality: None,
            last_quality: None,
            transferred_from: None,
            transferring: false,
            reinvite_retry: None,
            unusable_answers: 0,
            bye_after_ack: false,
            update_refused: false,
            refer_seq: None,
            end_reason: None,
            pending_negotiated: None,
            answer_tag: None,
            next_hops,
            challenge_answered: false,
        };
        self.pending.insert(tx, (id, Pending::Invite));
        self.by_call_id.insert(call_id, id);
        self.calls.insert(id, leg);
        self.emit(PhoneEvent::CallState {
            call: id,
            state: CallState::Dialing,
        });
        Ok(id)
    }

    /// A full SIP URI for what the user typed: a URI as it is, `user@host`
    /// with `sip:`, a bare user or number on the account's domain.
    fn normalise_target(&self, ai: usize, target: &str) -> Result<String, PhoneError> {
        let t = target.trim();
        let invalid = || PhoneError::InvalidInput {
            what: "target",
            value: target.to_owned(),
        };
        if t.is_empty()
            || t.chars()
                .any(|c| c.is_control() || c == ' ' || c == '<' || c == '>')
        {
            return Err(invalid());
        }
        let uri = if t.starts_with("sip:") || t.starts_with("sips:") || t.starts_with("tel:") {
            t.to_owned()
        } else if t.contains('@') {
            format!("sip:{t}")
        } else {
            let domain = self.accounts[ai]
                .aor
                .split_once('@')
                .map(|(_, d)| d.to_owned())
                .ok_or_else(invalid)?;
            let user: String = t
                .chars()
                .filter(|c| !matches!(c, '-' | '(' | ')' | '.'))
                .collect();
            format!("sip:{user}@{domain}")
        };
        Uri::parse(&uri).map_err(|_| invalid())?;
        Ok(uri)
    }

    async fn answer(&mut self, id: CallId) -> Result<(), PhoneError> {
        let now = self.now();
        let leg = self.calls.get_mut(&id).ok_or(PhoneError::NoSuchCall(id))?;
        if leg.phase != Phase::Offered {
            return Err(PhoneError::InvalidState {
                call: id,
                action: "answer",
                state: leg.state_name(),
            });
        }
        if leg.server_tx.is_none() {
            return Err(PhoneError::NoSuchCall(id));
        }
        // Media first: a call whose media cannot start is refused rather
        // than answered and hung up before the caller's ACK (§15).
        self.start_media(id).await;
        let leg = self.calls.get_mut(&id).ok_or_else(|| {
            PhoneError::Media("the call's media did not start; the call was refused".into())
        })?;
        let Some(tx) = leg.server_tx else {
            return Err(PhoneError::NoSuchCall(id));
        };
        let sdp = leg.answer_sdp.clone().unwrap_or_default();
        let contact = call_contact(&self.accounts, leg);
        let mut b = Message::response_to(&leg.invite, 200, "OK")
            .and_then(|b| b.record_route_of(&leg.invite))
            .and_then(|b| b.header("Contact", &format!("<{contact}>")))
            .and_then(|b| b.header("Allow", ALLOW))
            .and_then(|b| b.header("Supported", "replaces, timer"))
            .map_err(|e| PhoneError::Media(e.to_string()))?
            .to_tag(&leg.local_tag);
        for (name, value) in SessionTimer::response_headers(leg.timer.as_ref()) {
            b = b
                .header(name, &value)
                .map_err(|e| PhoneError::Media(e.to_string()))?;
        }
        let ok = b
            .header("Content-Type", "application/sdp")
            .map(|b| b.body(sdp.into_bytes()))
            .and_then(|b| b.build())
            .map_err(|e| PhoneError::Media(e.to_string()))?;
        self.driver
            .endpoint()
            .send_response(now, tx, ok.clone())
            .map_err(|e| PhoneError::Network(e.to_string()))?;
        let leg = self.calls.get_mut(&id).ok_or(PhoneError::NoSuchCall(id))?;
        // Resent until the ACK on every transport (§13.3.1.4): a proxy may
        // forward over UDP, and without an ACK the call ends.
        leg.responder = Some((
            UasInviteResponder::new(now, ok, TimerConfig::default()),
            response_destination(&leg.invite, leg.dest),
        ));
        if let Some(d) = leg.dialog.as_mut() {
            d.state = sip_core::dialog::DialogState::Confirmed;
        }
        leg.phase = Phase::Confirmed;
        leg.answered = Some(SystemTime::now());
        if let Some(t) = leg.timer.as_mut() {
            // The interval starts with the answer; when we are the
            // refresher, the refresh comes half-way.
            t.rearm(now);
        }
        info!(call = %id, "answered");
        self.set_state(id, CallState::Connected);
        Ok(())
    }

    async fn reject(&mut self, id: CallId, status: u16) -> Result<(), PhoneError> {
        if !(300..700).contains(&status) {
            return Err(PhoneError::InvalidInput {
                what: "reject status",
                value: status.to_string(),
            });
        }
        let leg = self.calls.get(&id).ok_or(PhoneError::NoSuchCall(id))?;
        if leg.phase != Phase::Offered {
            return Err(PhoneError::InvalidState {
                call: id,
                action: "reject",
                state: leg.state_name(),
            });
        }
        let reason = match status {
            486 => "Busy Here",
            603 => "Decline",
            480 => "Temporarily Unavailable",
            _ => "Rejected",
        };
        self.refuse_offered(id, status, reason);
        self.end_call(id, EndReason::Declined { status }).await;
        Ok(())
    }

    async fn hangup(&mut self, id: CallId) -> Result<(), PhoneError> {
        let now = self.now();
        let leg = self.calls.get_mut(&id).ok_or(PhoneError::NoSuchCall(id))?;
        match leg.phase {
            Phase::Calling => {
                leg.cancelled.get_or_insert(EndReason::Cancelled);
                if let Some(tx) = leg.invite_tx {
                    let _ = self.driver.endpoint().cancel(now, tx);
                }
                // The call ends when the 487 (or a racing 2xx) arrives.
                Ok(())
            }
            Phase::Offered => self.reject(id, 603).await,
            // §15: no BYE before the ACK of our 2xx (the 2xx is still
            // being resent); it follows the ACK. The media stops now.
            Phase::Confirmed if leg.responder.is_some() => {
                leg.bye_after_ack = true;
                if let Some(media) = leg.media.take() {
                    let report = media.stop().await;
                    if let Some(leg) = self.calls.get_mut(&id) {
                        leg.last_quality = report.or(leg.last_quality.take());
                    }
                }
                Ok(())
            }
            Phase::Confirmed => {
                self.send_bye(id);
                self.end_call(id, EndReason::LocalHangup).await;
                Ok(())
            }
            Phase::Ended => Err(PhoneError::NoSuchCall(id)),
        }
    }

    /// A new in-dialog request with a fresh Via.
    fn dialog_request(&mut self, id: CallId, method: Method) -> Option<Message> {
        let via = self.via_for_call(id)?;
        let leg = self.calls.get_mut(&id)?;
        leg.dialog.as_mut()?.request(method, &via)
    }

    fn send_in_dialog(&mut self, id: CallId, request: Message, what: Pending) -> bool {
        let now = self.now();
        let Some(leg) = self.calls.get(&id) else {
            return false;
        };
        let (account, dest) = (leg.account, leg.dest);
        let sent = SentInDialog {
            account,
            dest,
            request: request.clone(),
            answered: false,
        };
        match self.driver.endpoint().send_request(now, request, dest) {
            Ok(tx) => {
                self.pending.insert(tx, (id, what));
                self.in_dialog.insert(tx, sent);
                true
            }
            Err(e) => {
                warn!(call = %id, error = %e, "in-dialog request not sent");
                false
            }
        }
    }

    fn send_bye(&mut self, id: CallId) {
        if let Some(bye) = self.dialog_request(id, Method::Bye) {
            self.send_in_dialog(id, bye, Pending::Bye);
        }
        if let Some(leg) = self.calls.get_mut(&id) {
            leg.phase = Phase::Ended;
        }
    }

    fn hold(&mut self, id: CallId, hold: bool) -> Result<(), PhoneError> {
        let leg = self.calls.get_mut(&id).ok_or(PhoneError::NoSuchCall(id))?;
        if leg.phase != Phase::Confirmed || leg.media.is_none() {
            return Err(PhoneError::InvalidState {
                call: id,
                action: if hold { "hold" } else { "resume" },
                state: leg.state_name(),
            });
        }
        // The user's latest wish replaces a re-INVITE waiting out a 491.
        leg.reinvite_retry = None;
        self.send_reinvite(id, hold)
    }

    fn send_reinvite(&mut self, id: CallId, hold: bool) -> Result<(), PhoneError> {
        let leg = self.calls.get_mut(&id).ok_or(PhoneError::NoSuchCall(id))?;
        // One offer at a time (RFC 3264 §4, RFC 3261 §14.1): the direction
        // stays what the pending offer asked, which its answer applies.
        if leg.negotiation.is_offer_pending() {
            return Err(PhoneError::InvalidState {
                call: id,
                action: if hold { "hold" } else { "resume" },
                state: "an offer is waiting for its answer".into(),
            });
        }
        leg.negotiation.set_direction(hold_direction(hold));
        let offer = match leg.negotiation.create_offer() {
            Ok(offer) => offer,
            Err(e) => {
                leg.keep_hold_state();
                return Err(PhoneError::InvalidState {
                    call: id,
                    action: if hold { "hold" } else { "resume" },
                    state: e.to_string(),
                });
            }
        };
        let timer = leg.timer.as_ref().map(SessionTimer::request_value);
        let Some(mut request) = self.dialog_request(id, Method::Invite) else {
            return Err(PhoneError::NoSuchCall(id));
        };
        let _ = request.push_header("Allow", ALLOW);
        let _ = request.push_header("Supported", "replaces, timer");
        if let Some(value) = timer {
            let _ = request.push_header("Session-Expires", &value);
        }
        let _ = request.set_body(
            Some("application/sdp"),
            bytes::Bytes::from(offer.to_string()),
        );
        if !self.send_in_dialog(
            id,
            request.clone(),
            Pending::ReInvite {
                hold,
                request: Box::new(request.clone()),
            },
        ) {
            if let Some(leg) = self.calls.get_mut(&id) {
                leg.negotiation.cancel_offer();
                leg.keep_hold_state();
            }
            return Err(PhoneError::Network("re-INVITE not sent".into()));
        }
        Ok(())
    }

    /// A session refresh: UPDATE when the peer allows it (no offer needed),
    /// otherwise a re-INVITE with the current direction.
    fn send_refresh(&mut self, id: CallId) {
        let Some(leg) = self.calls.get(&id) else {
            return;
        };
        let peer_allows_update = !leg.update_refused
            && leg
                .last_2xx
                .as_ref()
                .or(Some(&leg.invite))
                .and_then(|m| m.header("Allow"))
                .is_some_and(|a| {
                    a.split(',')
                        .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
                });
        let value = leg.timer.as_ref().map_or_else(
            || "1800;refresher=uac".to_owned(),
            SessionTimer::request_value,
        );
        if peer_allows_update {
            if let Some(mut update) = self.dialog_request(id, Method::Update) {
                let _ = update.push_header("Session-Expires", &value);
                let _ = update.push_header("Supported", "timer");
                self.send_in_dialog(id, update, Pending::Update);
            }
        } else {
            let hold = leg.local_hold;
            let _ = self.send_reinvite(id, hold);
        }
    }

    fn queue_dtmf(&mut self, id: CallId, digits: &str) -> Result<(), PhoneError> {
        let valid = !digits.is_empty()
            && digits
                .chars()
                .all(|c| media_engine::dtmf::Digit::from_char(c).is_some());
        if !valid {
            return Err(PhoneError::InvalidInput {
                what: "DTMF digits",
                value: digits.to_owned(),
            });
        }
        let now = self.now();
        let leg = self.calls.get_mut(&id).ok_or(PhoneError::NoSuchCall(id))?;
        if leg.phase != Phase::Confirmed {
            return Err(PhoneError::InvalidState {
                call: id,
                action: "send DTMF",
                state: leg.state_name(),
            });
        }
        leg.dtmf_queue
            .extend(digits.chars().map(|c| c.to_ascii_uppercase()));
        if leg.next_dtmf.is_none() {
            leg.next_dtmf = Some(now);
        }
        Ok(())
    }

    async fn send_next_dtmf(&mut self, id: CallId, now: Instant) {
        let use_info = self.config.config.media.dtmf == DtmfMode::Info;
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(digit) = leg.dtmf_queue.pop_front() else {
            leg.next_dtmf = None;
            return;
        };
        leg.next_dtmf = if leg.dtmf_queue.is_empty() {
            None
        } else {
            Some(now + DTMF_GAP)
        };
        let sent_in_band = match (&leg.media, use_info) {
            (Some(m), false) => m.send_dtmf(digit, DTMF_DURATION).await,
            _ => false,
        };
        if sent_in_band {
            return;
        }
        // SIP INFO (application/dtmf-relay): the widely deployed fallback.
        if let Some(mut info) = self.dialog_request(id, Method::Info) {
            let body = format!(
                "Signal={digit}\r\nDuration={}\r\n",
                DTMF_DURATION.as_millis()
            );
            let _ = info.set_body(Some("application/dtmf-relay"), bytes::Bytes::from(body));
            self.send_in_dialog(id, info, Pending::Info);
        }
    }

    fn transfer(
        &mut self,
        id: CallId,
        target: &str,
        replaces: Option<String>,
    ) -> Result<(), PhoneError> {
        let leg = self.calls.get(&id).ok_or(PhoneError::NoSuchCall(id))?;
        if leg.phase != Phase::Confirmed {
            return Err(PhoneError::InvalidState {
                call: id,
                action: "transfer",
                state: leg.state_name(),
            });
        }
        let target = self.normalise_target(leg.account, target)?;
        let referred_by = leg.local.uri.clone();
        let refer_to = match replaces {
            Some(r) => format!("<{target}?Replaces={}>", percent_encode(&r)),
            None => format!("<{target}>"),
        };
        let mut refer = self
            .dialog_request(id, Method::Refer)
            .ok_or(PhoneError::NoSuchCall(id))?;
        refer
            .push_header("Refer-To", &refer_to)
            .and_then(|()| refer.push_header("Referred-By", &format!("<{referred_by}>")))
            .map_err(|_| PhoneError::InvalidInput {
                what: "transfer target",
                value: target.clone(),
            })?;
        if !self.send_in_dialog(id, refer, Pending::Refer) {
            return Err(PhoneError::Network("REFER not sent".into()));
        }
        info!(call = %id, "transfer requested");
        Ok(())
    }

    fn attended_transfer(&mut self, id: CallId, other: CallId) -> Result<(), PhoneError> {
        let o = self
            .calls
            .get(&other)
            .ok_or(PhoneError::NoSuchCall(other))?;
        let Some(d) = o.dialog.as_ref().filter(|_| o.phase == Phase::Confirmed) else {
            return Err(PhoneError::InvalidState {
                call: other,
                action: "be the target of a transfer",
                state: o.state_name(),
            });
        };
        // RFC 3891 §3: the recipient compares to-tag with its local tag, so
        // the to-tag is the peer's tag in our dialog.
        let replaces = format!(
            "{};to-tag={};from-tag={}",
            d.id.call_id, d.id.remote_tag, d.id.local_tag
        );
        let target = o.remote.uri.clone();
        self.transfer(id, &target, Some(replaces))
    }

    fn set_state(&mut self, id: CallId, state: CallState) {
        if let Some(leg) = self.calls.get_mut(&id)
            && leg.state != state
        {
            leg.state = state.clone();
            let _ = self.events.send(PhoneEvent::CallState { call: id, state });
        }
    }

    fn hold_state(&mut self, id: CallId) {
        let Some(leg) = self.calls.get(&id) else {
            return;
        };
        if leg.phase != Phase::Confirmed {
            return;
        }
        let state = if leg.local_hold || leg.remote_hold {
            CallState::OnHold {
                local: leg.local_hold,
                remote: leg.remote_hold,
            }
        } else {
            CallState::Connected
        };
        self.set_state(id, state);
    }

    /// Starts or updates media from the negotiation's outcome.
    async fn apply_negotiated(&mut self, id: CallId, negotiated: NegotiatedAudio) {
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        leg.remote_hold = matches!(
            negotiated.direction,
            Direction::RecvOnly | Direction::Inactive
        ) && !leg.local_hold;
        // On hold we still send (sendonly keeps the NAT binding and the
        // peer's jitter buffer fed), but silence: the held party must not
        // hear what the user says meanwhile.
        let silent = leg.muted || leg.local_hold;
        if let Some(m) = &leg.media {
            m.update(&negotiated).await;
            m.set_muted(silent).await;
            return;
        }
        let Some(prepared) = leg.prepared.take() else {
            return;
        };
        let first_report = sip_tokio::now() + self.config.quality_interval;
        match CallMedia::start(
            id,
            prepared,
            &negotiated,
            &self.config.audio,
            &self.config.config.media,
            self.media_tx.clone(),
        ) {
            Ok((m, notice)) => {
                if silent {
                    m.set_muted(true).await;
                }
                leg.media = Some(m);
                leg.next_quality = Some(first_report);
                if let Some(text) = notice {
                    let _ = self.events.send(PhoneEvent::Notice { text });
                }
            }
            Err(e) => {
                warn!(call = %id, error = %e, "media did not start");
                self.media_failed(id, format!("media did not start: {e}"))
                    .await;
            }
        }
    }

    /// Ends a call whose media cannot start, rather than leave it silent:
    /// a BYE once answered; before that a CANCEL, after which the call
    /// ends with `problem` as its reason.
    async fn media_failed(&mut self, id: CallId, problem: String) {
        let now = self.now();
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        match leg.phase {
            Phase::Calling => {
                leg.cancelled.get_or_insert(EndReason::Failed(problem));
                if let Some(tx) = leg.invite_tx {
                    let _ = self.driver.endpoint().cancel(now, tx);
                }
            }
            // Answering starts media before the 200.
            Phase::Offered => {
                self.refuse_offered(id, 488, "Not Acceptable Here");
                self.end_call(id, EndReason::Failed(problem)).await;
            }
            Phase::Confirmed => {
                self.send_bye(id);
                self.end_call(id, EndReason::Failed(problem)).await;
            }
            Phase::Ended => {}
        }
    }

    /// For an incoming call: media starts at the answer.
    async fn start_media(&mut self, id: CallId) {
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(n) = leg.pending_negotiated.take() {
            self.apply_negotiated(id, n).await;
        }
    }

    /// Answers an incoming call's INVITE with 487, as its caller gave it up
    /// (CANCEL, §9.2; BYE in the early dialog, §15.1.2).
    fn terminate_offered(&mut self, id: CallId) {
        self.refuse_offered(id, 487, "Request Terminated");
    }

    /// Answers an incoming call's INVITE, not answered yet, with a final
    /// non-2xx `status`.
    fn refuse_offered(&mut self, id: CallId, status: u16, reason: &str) {
        let now = self.now();
        if let Some(leg) = self.calls.get(&id)
            && leg.phase == Phase::Offered
            && let Some(tx) = leg.server_tx
            && let Ok(resp) = Message::response_to(&leg.invite, status, reason)
                .map(|b| b.to_tag(&leg.local_tag))
                .and_then(|b| b.build())
        {
            let _ = self.driver.endpoint().send_response(now, tx, resp);
        }
    }

    async fn end_call(&mut self, id: CallId, reason: EndReason) {
        let Some(mut leg) = self.calls.remove(&id) else {
            return;
        };
        leg.phase = Phase::Ended;
        self.by_call_id.retain(|_, c| *c != id);
        self.pending
            .retain(|_, (c, p)| *c != id || matches!(p, Pending::Bye | Pending::Notify));
        let pending = &self.pending;
        self.in_dialog.retain(|tx, _| pending.contains_key(tx));
        let final_report = match leg.media.take() {
            Some(m) => m.stop().await,
            None => None,
        }
        .or(leg.last_quality.clone());
        if let Some(report) = &final_report {
            self.emit(PhoneEvent::Quality {
                call: id,
                report: report.clone(),
            });
        }
        info!(call = %id, reason = %reason.as_text(), "call ended");
        let record = CallRecord {
            id: 0,
            direction: leg.direction,
            account: self.accounts[leg.account].config.id.clone(),
            local_identity: leg.local.uri.clone(),
            remote_identity: leg.remote.uri.clone(),
            remote_name: leg.remote.display_name.clone(),
            started: leg.started,
            answered: leg.answered,
            ended: SystemTime::now(),
            end_reason: reason.as_text(),
            codec: final_report.as_ref().map(|r| r.codec.clone()),
            srtp: final_report.as_ref().and_then(|r| r.srtp.clone()),
            mos: final_report.as_ref().map(|r| r.mos),
        };
        // A retention of 0 days: no history at all, not one kept for a day.
        if self.config.config.privacy.history_retention_days > 0
            && let Err(e) = self.history.record(&record)
        {
            warn!(error = %e, "call not written to the history");
        }
        leg.end_reason = Some(reason.clone());
        // A transfer we were asked for: tell the transferor how it went,
        // with the final status the transfer target gave (RFC 3515 §2.4.5).
        let transfer_outcome =
            leg.transferred_from
                .filter(|_| leg.answered.is_none())
                .map(|orig| match &reason {
                    EndReason::Refused { status, reason } => (orig, *status, reason.clone()),
                    EndReason::Timeout => (orig, 408, "Request Timeout".to_owned()),
                    EndReason::Failed(_) => (orig, 500, "Server Internal Error".to_owned()),
                    _ => (orig, 487, "Request Terminated".to_owned()),
                });
        self.emit(PhoneEvent::CallState {
            call: id,
            state: CallState::Ended(reason),
        });
        if let Some((orig, status, text)) = transfer_outcome {
            self.notify_transfer(orig, status, &text, true);
        }
    }

    fn media_event(&mut self, m: MediaEvent) {
        match m {
            MediaEvent::Dtmf { call, digit } => {
                if self.calls.contains_key(&call) {
                    self.emit(PhoneEvent::Dtmf { call, digit });
                }
            }
            MediaEvent::Notice { call, text } => {
                if self.calls.contains_key(&call) {
                    self.emit(PhoneEvent::Notice { text });
                }
            }
        }
    }

    async fn endpoint_event(&mut self, event: EndpointEvent) {
        match event {
            EndpointEvent::Request {
                transaction,
                request,
                source,
            } => self.request(transaction, request, source).await,
            EndpointEvent::Ack { request, .. } => self.ack(&request).await,
            EndpointEvent::Cancelled { invite, cancel } => {
                if let Some(waiting) = self.incoming.remove(&invite) {
                    self.respond(invite, &waiting.request, 487, "Request Terminated");
                    return;
                }
                let found = self
                    .calls
                    .values()
                    .find(|l| l.server_tx == Some(invite) && l.phase == Phase::Offered)
                    .map(|l| l.id);
                if let Some(id) = found {
                    self.terminate_offered(id);
                    let reason = if answered_elsewhere(&cancel) {
                        EndReason::AnsweredElsewhere
                    } else {
                        EndReason::RemoteCancelled
                    };
                    self.end_call(id, reason).await;
                }
            }
            EndpointEvent::Response {
                transaction,
                response,
            } => self.response(transaction, response).await,
            EndpointEvent::StrayResponse { response } => self.late_2xx(&response),
            EndpointEvent::ClientTimedOut { transaction }
            | EndpointEvent::ClientTransportError { transaction } => {
                if let Some(i) = self.reg_tx.remove(&transaction) {
                    let now = self.now();
                    if let Some(reg) = self.accounts[i].registration.as_mut() {
                        reg.handle_failure(now, &mut self.rng);
                    }
                    self.pump_registration(i);
                    self.fail_over(i);
                    return;
                }
                self.in_dialog.remove(&transaction);
                if let Some((id, what)) = self.pending.remove(&transaction) {
                    match what {
                        Pending::Invite if !self.invite_elsewhere(id) => {
                            let reason = self.calls.get(&id).and_then(|l| l.cancelled.clone());
                            self.end_call(id, reason.unwrap_or(EndReason::Timeout))
                                .await;
                        }
                        Pending::Invite => {}
                        Pending::ReInvite { .. } | Pending::Update => {
                            // §14.1 / RFC 4028: no answer to a refresh ends the call.
                            self.send_bye(id);
                            self.end_call(id, EndReason::Failed("no answer to a re-INVITE".into()))
                                .await;
                        }
                        _ => {}
                    }
                }
            }
            EndpointEvent::ServerTimedOut { .. } | EndpointEvent::ServerTransportError { .. } => {}
            EndpointEvent::KeepAlivePong { connection } => self.flow_pong(connection.0),
            EndpointEvent::BadMessage { source, error } => {
                debug!(from = %Pii::ip(source.addr), error = %error, "unparseable SIP input dropped");
            }
            _ => {}
        }
    }

    fn respond(&mut self, tx: ServerTxId, request: &Message, status: u16, reason: &str) {
        self.respond_with(tx, request, status, reason, &[]);
    }

    /// A response with `headers` added, with our tag unless the request
    /// had one.
    fn respond_with(
        &mut self,
        tx: ServerTxId,
        request: &Message,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
    ) {
        let now = self.now();
        let tag = self.driver.endpoint().new_tag();
        let has_tag = to_tag(request);
        let mut b = Message::response_to(request, status, reason);
        for (name, value) in headers {
            b = b.and_then(|b| b.header(name, value));
        }
        if let Ok(resp) = b
            .map(|b| b.to_tag(has_tag.as_deref().unwrap_or(&tag)))
            .and_then(|b| b.build())
        {
            let _ = self.driver.endpoint().send_response(now, tx, resp);
        }
    }

    /// The session description `request` offers (`Ok(None)`: no body).
    /// A body that is neither SDP nor a multipart with an SDP part is
    /// answered 415 naming SDP (RFC 3261 §8.2.3) and is `Err`; a body
    /// without a Content-Type is tried as SDP.
    fn offered_sdp<'m>(
        &mut self,
        tx: ServerTxId,
        request: &'m Message,
    ) -> Result<Option<&'m [u8]>, ()> {
        if request.body().is_empty() {
            return Ok(None);
        }
        match sdp_of(request) {
            Some(sdp) => Ok(Some(sdp)),
            None => {
                self.respond_with(
                    tx,
                    request,
                    415,
                    "Unsupported Media Type",
                    &[("Accept", "application/sdp")],
                );
                Err(())
            }
        }
    }

    async fn request(&mut self, tx: ServerTxId, request: Message, source: Destination) {
        let Some(method) = request.method().cloned() else {
            return;
        };
        // §8.2.2.3: an extension we lack in Require is refused first.
        let unsupported: Vec<&str> = request
            .require()
            .flatten()
            .filter(|tag| !UNDERSTOOD.iter().any(|u| u.eq_ignore_ascii_case(tag)))
            .collect();
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            self.respond_with(
                tx,
                &request,
                420,
                "Bad Extension",
                &[("Unsupported", &list)],
            );
            return;
        }
        let in_dialog = to_tag(&request);
        if let Some(to_tag) = in_dialog {
            let id = self
                .call_of(&request)
                .filter(|id| self.calls.get(id).is_some_and(|l| l.local_tag == to_tag));
            match id {
                Some(id) => {
                    self.in_dialog_request(id, tx, request, method, source)
                        .await
                }
                None => self.respond(tx, &request, 481, "Call/Transaction Does Not Exist"),
            }
            return;
        }
        match method {
            Method::Invite => self.incoming_invite(tx, request, source).await,
            Method::Options => {
                let now = self.now();
                if let Ok(resp) = Message::response_to(&request, 200, "OK")
                    .and_then(|b| b.header("Allow", ALLOW))
                    .and_then(|b| b.header("Accept", "application/sdp"))
                    .map(|b| {
                        let tag = self.driver.endpoint().new_tag();
                        b.to_tag(&tag)
                    })
                    .and_then(|b| b.build())
                {
                    let _ = self.driver.endpoint().send_response(now, tx, resp);
                }
            }
            Method::Notify
                if request
                    .event()
                    .ok()
                    .flatten()
                    .is_some_and(|e| e.value.eq_ignore_ascii_case("check-sync")) =>
            {
                // Only the PBX may ask: anyone else on the network could
                // make the phone re-provision as often as it likes.
                let from_pbx = self
                    .accounts
                    .iter()
                    .any(|a| a.servers.iter().any(|s| s.addr.ip() == source.addr.ip()));
                if !from_pbx {
                    self.respond(tx, &request, 403, "Forbidden");
                    return;
                }
                self.respond(tx, &request, 200, "OK");
                let now = self.now();
                if self
                    .last_check_sync
                    .is_some_and(|t| now < t + CHECK_SYNC_INTERVAL)
                {
                    debug!("check-sync again within a minute: passed over");
                    return;
                }
                self.last_check_sync = Some(now);
                self.emit(PhoneEvent::CheckSync);
            }
            // Methods taken only inside a call: outside one there is no
            // dialog for them (§12.2.2; for BYE, §15.1.2).
            Method::Bye | Method::Info | Method::Update | Method::Refer | Method::Notify => {
                self.respond(tx, &request, 481, "Call/Transaction Does Not Exist");
            }
            // §8.2.1: a 405 lists what is allowed.
            _ => self.respond_with(tx, &request, 405, "Method Not Allowed", &[("Allow", ALLOW)]),
        }
    }

    /// Which account a request is for: the one whose user the Request-URI
    /// names, else the first.
    fn account_for(&self, request: &Message) -> usize {
        let user = request
            .request_uri()
            .and_then(|u| u.as_sip().and_then(|s| s.user.map(str::to_owned)));
        user.and_then(|u| self.accounts.iter().position(|a| a.config.user == u))
            .unwrap_or(0)
    }

    async fn incoming_invite(&mut self, tx: ServerTxId, request: Message, source: Destination) {
        if self.accounts.is_empty() || self.shutting_down.is_some() {
            self.respond(tx, &request, 480, "Temporarily Unavailable");
            return;
        }
        // RFC 3261 §8.2.2.2: the same INVITE reaching us a second way (a
        // proxy forked it and the branches met again) is a loop, not a
        // second call. Its own retransmissions never get here.
        if let Some(id) = self.call_of(&request)
            && let Some(leg) = self.calls.get(&id)
            && leg.direction == CallDirection::Incoming
            && same_request(&leg.invite, &request)
        {
            debug!(call = %id, "merged INVITE refused");
            self.respond(tx, &request, 482, "Loop Detected");
            return;
        }
        if self
            .incoming
            .values()
            .any(|w| same_request(&w.request, &request))
        {
            self.respond(tx, &request, 482, "Loop Detected");
            return;
        }
        let Ok(offered) = self.offered_sdp(tx, &request) else {
            return;
        };
        let ai = self.account_for(&request);
        // An INVITE without SDP (RFC 3261 §13.2.1, as from a PBX's call
        // pickup or third-party call control) gets our offer in the 200 and
        // its answer in the ACK.
        let offer = match offered.map(SessionDescription::parse_bytes) {
            None => None,
            Some(Ok(o)) => Some(o),
            Some(Err(_)) => {
                self.respond(tx, &request, 400, "Bad Request");
                return;
            }
        };
        let direct = self.direct_local(ai, source.addr);
        let Some(local) = direct.or(self.accounts[ai].local).or(Some(self.udp_local)) else {
            return;
        };
        // Bound to every interface: the one that routes to the caller (the
        // caller's own address only names an interface of ours when it
        // calls from this host).
        let ip = if local.ip().is_unspecified() {
            interface_towards(local.ip(), source.addr).unwrap_or(source.addr.ip())
        } else {
            local.ip()
        };
        let waiting = IncomingWaiting {
            request,
            source,
            account: ai,
            offer,
        };
        let Some(turn) = self.config.config.relay.turn.clone() else {
            // A port pair from the range: quick, nothing to wait beside.
            let result = media::prepare(ip, self.config.rtp_ports, None, None).await;
            self.ring(tx, waiting, result).await;
            return;
        };
        // A TURN allocation can take seconds: it runs beside the engine,
        // and the transaction's 100 Trying keeps the caller waiting.
        self.incoming.insert(tx, waiting);
        let rtp_ports = self.config.rtp_ports;
        let tls = self.tls.clone();
        let done = self.prepared.clone();
        tokio::spawn(async move {
            let result = media::prepare(ip, rtp_ports, Some(&turn), tls.as_ref()).await;
            let _ = done.send(Prepared::Incoming(tx, result));
        });
    }

    /// The media for an incoming INVITE is ready, unless the caller
    /// cancelled meanwhile.
    async fn incoming_prepared(
        &mut self,
        tx: ServerTxId,
        result: Result<media::PreparedMedia, PhoneError>,
    ) {
        if let Some(waiting) = self.incoming.remove(&tx) {
            self.ring(tx, waiting, result).await;
        }
    }

    /// An incoming call with its media: answered with our offer or answer
    /// in mind, ringing, and told to the application.
    async fn ring(
        &mut self,
        tx: ServerTxId,
        waiting: IncomingWaiting,
        result: Result<media::PreparedMedia, PhoneError>,
    ) {
        let IncomingWaiting {
            request,
            source,
            account: ai,
            offer,
        } = waiting;
        if self.shutting_down.is_some() {
            self.respond(tx, &request, 480, "Temporarily Unavailable");
            return;
        }
        let prepared = match result {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %Pii::text(&e.to_string()), "no media port for an incoming call");
                self.respond(tx, &request, 503, "Service Unavailable");
                return;
            }
        };
        let settings = self.media_settings(prepared.addr().port(), prepared.addr().ip());
        let mut negotiation = MediaNegotiation::new(settings, &mut self.rng);
        let (local_sdp, negotiated) = match &offer {
            Some(offer) => match negotiation.handle_offer(offer) {
                Ok(a) if a.audio.is_some() => (a.description, a.audio),
                Ok(_) | Err(_) => {
                    self.respond(tx, &request, 488, "Not Acceptable Here");
                    return;
                }
            },
            None => match negotiation.create_offer() {
                Ok(o) => (o, None),
                Err(e) => {
                    warn!(error = %e, "no offer for an INVITE without SDP");
                    self.respond(tx, &request, 500, "Server Internal Error");
                    return;
                }
            },
        };
        let tag = self.driver.endpoint().new_tag();
        let direct_local = self.direct_local(ai, source.addr);
        let contact = match direct_local {
            Some(local) => self.accounts[ai].contact_at(local, source.transport.as_str()),
            None => self.accounts[ai].contact().unwrap_or_else(|| {
                format!("sip:{}@{}", self.accounts[ai].config.user, self.udp_local)
            }),
        };
        let Some(dialog) = Dialog::as_uas(&request, &tag, &contact) else {
            self.respond(tx, &request, 400, "Bad Request");
            return;
        };
        let from = request.from().ok();
        let remote = Identity {
            uri: from.as_ref().map(|f| f.uri.to_string()).unwrap_or_default(),
            display_name: from
                .as_ref()
                .and_then(|f| f.display_name().map(|d| d.into_owned())),
        };
        let mut remote = remote;
        if let Some(name) = self.caller_name(&remote) {
            remote.display_name = Some(name);
        }
        let to = Identity {
            uri: request
                .request_uri()
                .map(|u| u.to_string())
                .unwrap_or_default(),
            display_name: None,
        };
        let session_timer = SessionTimer::of_request(&request, self.now());
        let replaces = request.replaces().ok().flatten().map(|r| {
            (
                r.value.to_owned(),
                r.to_tag().map(str::to_owned),
                r.from_tag().map(str::to_owned),
            )
        });
        let id = CallId(self.next_call);
        self.next_call += 1;
        let call_id = request.call_id().map(str::to_owned).unwrap_or_default();
        let leg = CallLeg {
            id,
            account: ai,
            direction: CallDirection::Incoming,
            phase: Phase::Offered,
            state: CallState::Incoming,
            local: self.local_identity(ai),
            remote: remote.clone(),
            dest: source,
            direct_local,
            invite: request.clone(),
            early_answer: None,
            invite_tx: None,
            server_tx: Some(tx),
            local_tag: tag.clone(),
            dialog: Some(dialog),
            negotiation,
            prepared: Some(prepared),
            media: None,
            answer_sdp: Some(local_sdp.to_string()),
            answer_in_ack: offer.is_none(),
            responder: None,
            last_2xx: None,
            started: SystemTime::now(),
            answered: None,
            local_hold: false,
            remote_hold: false,
            muted: false,
            cancelled: None,
            dtmf_queue: VecDeque::new(),
            next_dtmf: None,
            timer: session_timer,
            next_quality: None,
            last_quality: None,
            transferred_from: None,
            transferring: false,
            reinvite_retry: None,
            unusable_answers: 0,
            bye_after_ack: false,
            update_refused: false,
            refer_seq: None,
            end_reason: None,
            pending_negotiated: negotiated,
            answer_tag: None,
            next_hops: Vec::new(),
            challenge_answered: false,
        };
        self.calls.insert(id, leg);
        self.by_call_id.insert(call_id, id);
        // Attended transfer (RFC 3891): the new call takes the old one's place.
        if let Some((cid, to_tag, from_tag)) = replaces {
            let replaced = self
                .calls
                .values()
                .find(|l| {
                    l.id != id
                        && l.dialog.as_ref().is_some_and(|d| {
                            d.id.call_id == cid
                                && to_tag.as_deref() == Some(d.id.local_tag.as_str())
                                && from_tag.as_deref() == Some(d.id.remote_tag.as_str())
                        })
                })
                .map(|l| l.id);
            match replaced {
                Some(old) => {
                    info!(call = %id, replaces = %old, "call replaces another");
                    let _ = self.answer(id).await;
                    self.send_bye(old);
                    self.end_call(old, EndReason::Replaced).await;
                    self.emit(PhoneEvent::TransferCall {
                        original: old,
                        call: Call::new(id, self.phone()),
                    });
                    return;
                }
                None => {
                    self.calls.remove(&id);
                    self.respond(tx, &request, 481, "Call/Transaction Does Not Exist");
                    return;
                }
            }
        }
        // Ringing, with our tag: an early dialog.
        let from_log = remote.to_string();
        let now = self.now();
        if let Ok(ringing) = Message::response_to(&request, 180, "Ringing")
            .and_then(|b| b.record_route_of(&request))
            .and_then(|b| b.header("Contact", &format!("<{contact}>")))
            .map(|b| b.to_tag(&tag))
            .and_then(|b| b.build())
        {
            let _ = self.driver.endpoint().send_response(now, tx, ringing);
        }
        info!(
            call = %id,
            from = %Pii::name_addr(&from_log),
            source = %Pii::ip(source.addr),
            "incoming call"
        );
        self.emit(PhoneEvent::IncomingCall {
            call: Call::new(id, self.phone()),
            from: remote,
            to,
        });
    }

    /// The caller's name from the contacts, looked up by the number or user
    /// part of their address; `None` when no store is configured or nobody
    /// has that number.
    fn caller_name(&self, caller: &Identity) -> Option<String> {
        let path = self.config.contacts.as_ref()?;
        if !path.exists() {
            return None;
        }
        let store = match contacts::Store::open(path) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "contacts unavailable for caller lookup");
                return None;
            }
        };
        match store.lookup(caller.user(), None) {
            Ok(found) => found.map(|c| c.display_name),
            Err(e) => {
                warn!(error = %e, "caller lookup failed");
                None
            }
        }
    }

    fn phone(&self) -> Phone {
        Phone {
            commands: self
                .handles
                .upgrade()
                .unwrap_or_else(|| mpsc::unbounded_channel().0),
        }
    }

    async fn in_dialog_request(
        &mut self,
        id: CallId,
        tx: ServerTxId,
        request: Message,
        method: Method,
        source: Destination,
    ) {
        let check = self
            .calls
            .get_mut(&id)
            .and_then(|l| l.dialog.as_mut())
            .map(|d| d.handle_request(&request));
        if let Some(Err(e)) = check {
            debug!(call = %id, error = %e, "in-dialog request refused");
            self.respond(tx, &request, 500, "Server Internal Error");
            return;
        }
        match method {
            Method::Bye => {
                self.respond(tx, &request, 200, "OK");
                let answered = self
                    .calls
                    .get(&id)
                    .is_some_and(|l| l.phase == Phase::Confirmed);
                if answered {
                    self.end_call(id, EndReason::RemoteHangup).await;
                } else {
                    self.terminate_offered(id);
                    self.end_call(id, EndReason::RemoteCancelled).await;
                }
            }
            Method::Invite => self.reinvite(id, tx, request, source).await,
            Method::Update => self.update(id, tx, request).await,
            Method::Info => {
                let digit = request
                    .content_type()
                    .ok()
                    .flatten()
                    .filter(|c| c.is("application", "dtmf-relay"))
                    .and_then(|_| parse_dtmf_relay(request.body()));
                self.respond(tx, &request, 200, "OK");
                if let Some(digit) = digit {
                    self.emit(PhoneEvent::Dtmf { call: id, digit });
                }
            }
            Method::Refer => self.incoming_refer(id, tx, request).await,
            Method::Notify => {
                self.respond(tx, &request, 200, "OK");
                let is_refer = request
                    .event()
                    .ok()
                    .flatten()
                    .is_some_and(|e| e.value.eq_ignore_ascii_case("refer"));
                if is_refer && let Some(status) = sipfrag_status(request.body()) {
                    self.emit(PhoneEvent::TransferProgress { call: id, status });
                    let transferring = self.calls.get(&id).is_some_and(|l| l.transferring);
                    if transferring && (200..300).contains(&status) {
                        self.send_bye(id);
                        self.end_call(id, EndReason::Transferred).await;
                    }
                }
            }
            Method::Options => self.respond(tx, &request, 200, "OK"),
            // §8.2.1: a 405 lists what is allowed.
            _ => self.respond_with(tx, &request, 405, "Method Not Allowed", &[("Allow", ALLOW)]),
        }
    }

    fn refresh_timer(&mut self, id: CallId, request: &Message) {
        let now = self.now();
        if let Some(leg) = self.calls.get_mut(&id) {
            if let Some(timer) = SessionTimer::of_request(request, now) {
                leg.timer = Some(timer);
            } else if let Some(t) = leg.timer.as_mut() {
                t.rearm(now);
            }
        }
    }

    async fn reinvite(
        &mut self,
        id: CallId,
        tx: ServerTxId,
        request: Message,
        source: Destination,
    ) {
        let now = self.now();
        let Ok(offered) = self.offered_sdp(tx, &request) else {
            return;
        };
        if self.refuse_before_answer(id, tx, &request) {
            return;
        }
        self.refresh_timer(id, &request);
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        if leg.negotiation.is_offer_pending() {
            // Glare (§14.2): both sides re-INVITEd at once.
            self.respond(tx, &request, 491, "Request Pending");
            return;
        }
        let result = match offered.map(SessionDescription::parse_bytes) {
            // No offer: ours goes in the 200 and the answer comes in the
            // ACK; the current session stays until then.
            None => leg.negotiation.create_offer().map(|sdp| (sdp, None)),
            Some(Ok(offer)) => leg
                .negotiation
                .handle_offer(&offer)
                .map(|a| (a.description, a.audio)),
            Some(Err(_)) => {
                self.respond(tx, &request, 400, "Bad Request");
                return;
            }
        };
        let Ok((sdp, negotiated)) = result else {
            self.respond(tx, &request, 488, "Not Acceptable Here");
            return;
        };
        leg.answer_in_ack = offered.is_none();
        let contact = call_contact(&self.accounts, leg);
        let mut b = Message::response_to(&request, 200, "OK")
            .and_then(|b| b.header("Contact", &format!("<{contact}>")))
            .and_then(|b| b.header("Allow", ALLOW));
        for (name, value) in SessionTimer::response_headers(leg.timer.as_ref()) {
            b = b.and_then(|b| b.header(name, &value));
        }
        let ok = b
            .and_then(|b| b.header("Content-Type", "application/sdp"))
            .map(|b| b.body(sdp.to_string().into_bytes()))
            .and_then(|b| b.build());
        let Ok(ok) = ok else { return };
        let _ = self.driver.endpoint().send_response(now, tx, ok.clone());
        leg.responder = Some((
            UasInviteResponder::new(now, ok, TimerConfig::default()),
            response_destination(&request, source),
        ));
        if let Some(n) = negotiated {
            self.apply_negotiated(id, n).await;
            self.hold_state(id);
        }
    }

    /// An offer in the early dialog of a call we have not answered: the
    /// INVITE's offer is still unanswered on the wire, so it gets 500 with
    /// Retry-After 0-10 s (RFC 3311 §5.2, RFC 3261 §14.2), and no media
    /// starts before the user answers. True when refused.
    fn refuse_before_answer(&mut self, id: CallId, tx: ServerTxId, request: &Message) -> bool {
        if self
            .calls
            .get(&id)
            .is_none_or(|l| l.phase != Phase::Offered)
        {
            return false;
        }
        let wait = self.rng.random_range(0..=10u8).to_string();
        self.respond_with(
            tx,
            request,
            500,
            "Server Internal Error",
            &[("Retry-After", &wait)],
        );
        true
    }

    /// An in-dialog UPDATE (RFC 3311): a session refresh, and with SDP an
    /// offer whose answer goes in the 2xx (§5.2).
    async fn update(&mut self, id: CallId, tx: ServerTxId, request: Message) {
        let Ok(offered) = self.offered_sdp(tx, &request) else {
            return;
        };
        if offered.is_some() && self.refuse_before_answer(id, tx, &request) {
            return;
        }
        self.refresh_timer(id, &request);
        let now = self.now();
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        let mut negotiated = None;
        let mut answer = None;
        if let Some(sdp) = offered {
            if leg.negotiation.is_offer_pending() {
                // An offer of ours is open (§5.2): the peer tries later.
                self.respond(tx, &request, 491, "Request Pending");
                return;
            }
            let Ok(offer) = SessionDescription::parse_bytes(sdp) else {
                self.respond(tx, &request, 400, "Bad Request");
                return;
            };
            match leg.negotiation.handle_offer(&offer) {
                Ok(a) => {
                    answer = Some(a.description.to_string());
                    negotiated = a.audio;
                }
                Err(_) => {
                    self.respond(tx, &request, 488, "Not Acceptable Here");
                    return;
                }
            }
        }
        let timer_headers = SessionTimer::response_headers(leg.timer.as_ref());
        let mut b = Message::response_to(&request, 200, "OK");
        for (name, value) in timer_headers {
            b = b.and_then(|b| b.header(name, &value));
        }
        if let Some(sdp) = answer {
            b = b
                .and_then(|b| b.header("Content-Type", "application/sdp"))
                .map(|b| b.body(sdp.into_bytes()));
        }
        if let Ok(resp) = b.and_then(|b| b.build()) {
            let _ = self.driver.endpoint().send_response(now, tx, resp);
        }
        if let Some(n) = negotiated {
            self.apply_negotiated(id, n).await;
            self.hold_state(id);
        }
    }

    /// The call a message belongs to, by its Call-ID.
    fn call_of(&self, message: &Message) -> Option<CallId> {
        let cid = message.call_id().ok()?;
        self.by_call_id.get(cid).copied()
    }

    /// An ACK for our 2xx: it ends the 2xx's retransmissions, and after
    /// an offer in that 2xx it carries the answer.
    async fn ack(&mut self, request: &Message) {
        let Some(id) = self.call_of(request) else {
            return;
        };
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        // Only the ACK of the 2xx being resent counts: a retransmitted ACK
        // of an earlier one (after a re-INVITE) carries no answer to our
        // latest offer.
        let Some((r, _)) = leg.responder.as_mut() else {
            return;
        };
        if !r.acknowledges(request) {
            debug!(call = %id, "an ACK for an earlier 2xx");
            return;
        }
        r.handle_ack();
        leg.responder = None;
        if leg.bye_after_ack {
            self.send_bye(id);
            self.end_call(id, EndReason::LocalHangup).await;
            return;
        }
        if !std::mem::take(&mut leg.answer_in_ack) {
            return;
        }
        let answer = sdp_of(request).and_then(|b| SessionDescription::parse_bytes(b).ok());
        let problem = match answer.map(|a| leg.negotiation.handle_answer(&a)) {
            Some(Ok(n)) => {
                self.apply_negotiated(id, n).await;
                self.hold_state(id);
                return;
            }
            Some(Err(e)) => format!("the answer in the ACK is unusable: {e}"),
            None => "no answer in the ACK for our offer".to_owned(),
        };
        leg.negotiation.cancel_offer();
        warn!(call = %id, "{problem}");
        // A re-INVITE's session stays as it was; a new call without an
        // answer has no media at all (its ports are still unused), so it
        // ends.
        if leg.prepared.is_some() {
            self.send_bye(id);
            self.end_call(id, EndReason::Failed(problem)).await;
        }
    }

    async fn incoming_refer(&mut self, id: CallId, tx: ServerTxId, request: Message) {
        let target = request.refer_to().ok().flatten().map(|r| r.uri.to_string());
        let Some(target) = target else {
            self.respond(tx, &request, 400, "Bad Request");
            return;
        };
        // Refer-To may carry headers for the new INVITE (Replaces for an
        // attended transfer); the rest of the URI is the target.
        let (uri, headers) = match target.split_once('?') {
            Some((u, h)) => (u.to_owned(), h.to_owned()),
            None => (target.clone(), String::new()),
        };
        let replaces = headers
            .split('&')
            .filter_map(|h| h.split_once('='))
            .find(|(n, _)| n.eq_ignore_ascii_case("Replaces"))
            .map(|(_, v)| percent_decode(v));
        self.respond(tx, &request, 202, "Accepted");
        if let Some(leg) = self.calls.get_mut(&id) {
            leg.refer_seq = request.cseq().ok().map(|c| c.seq);
        }
        self.notify_transfer(id, 100, "Trying", false);
        let account = self
            .calls
            .get(&id)
            .map(|l| self.accounts[l.account].config.id.clone());
        self.dial(account.as_deref(), &uri, replaces, Dialer::Transfer(id));
    }

    /// The call a peer's REFER asked for was placed, or could not be.
    fn transfer_dialled(&mut self, id: CallId, result: Result<CallId, PhoneError>) {
        match result {
            Ok(new) => {
                if let Some(leg) = self.calls.get_mut(&new) {
                    leg.transferred_from = Some(id);
                }
                info!(call = %id, new = %new, "transferred by the peer");
                self.emit(PhoneEvent::TransferCall {
                    original: id,
                    call: Call::new(new, self.phone()),
                });
            }
            Err(e) => {
                warn!(call = %id, error = %Pii::text(e.to_string()), "transfer target not callable");
                self.notify_transfer(id, 503, "Service Unavailable", true);
            }
        }
    }

    /// NOTIFY for the implicit REFER subscription (RFC 3515 §2.4.4).
    fn notify_transfer(&mut self, id: CallId, status: u16, reason: &str, last: bool) {
        let event = match self.calls.get(&id).and_then(|l| l.refer_seq) {
            Some(seq) => format!("refer;id={seq}"),
            None => "refer".to_owned(),
        };
        let Some(mut notify) = self.dialog_request(id, Method::Notify) else {
            return;
        };
        let state = if last {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let _ = notify.push_header("Event", &event);
        let _ = notify.push_header("Subscription-State", state);
        let _ = notify.set_body(
            Some("message/sipfrag;version=2.0"),
            bytes::Bytes::from(format!("SIP/2.0 {status} {reason}\r\n")),
        );
        self.send_in_dialog(id, notify, Pending::Notify);
    }

    /// A 2xx to an INVITE after the first final response (§13.2.2.4): the
    /// same one again, when our ACK was lost, gets the ACK again; one from
    /// another fork gets its ACK and, as the call already has its dialog,
    /// a BYE.
    fn late_2xx(&mut self, response: &Message) {
        let Some(id) = self.call_of(response) else {
            return;
        };
        let Some(leg) = self.calls.get(&id) else {
            return;
        };
        let tag = to_tag(response);
        let same = leg
            .dialog
            .as_ref()
            .is_some_and(|d| Some(&d.id.remote_tag) == tag.as_ref());
        if same {
            self.send_ack(id, response, None);
            return;
        }
        let dest = leg.dest;
        let invite = leg.invite.clone();
        let contact = call_contact(&self.accounts, leg);
        let Some(mut other) = Dialog::as_uac(&invite, response, &contact) else {
            return;
        };
        let Some(seq) = response.cseq().ok().map(|c| c.seq) else {
            return;
        };
        let (Some(ack_via), Some(bye_via)) = (self.via_for_call(id), self.via_for_call(id)) else {
            return;
        };
        debug!(call = %id, "2xx from another fork: acknowledged and ended");
        if let Some(mut ack) = other.ack(seq, &ack_via) {
            copy_credentials(&invite, seq, &mut ack);
            self.driver.endpoint().send_stateless(dest, &ack);
        }
        if let Some(bye) = other.request(Method::Bye, &bye_via) {
            let now = self.now();
            let _ = self.driver.endpoint().send_request(now, bye, dest);
        }
    }

    /// The ACK for a 2xx to the call's INVITE, or to `reinvite` when given.
    fn send_ack(&mut self, id: CallId, response: &Message, reinvite: Option<&Message>) {
        let Some(via) = self.via_for_call(id) else {
            return;
        };
        let Some(leg) = self.calls.get(&id) else {
            return;
        };
        let Some(seq) = response.cseq().ok().map(|c| c.seq) else {
            return;
        };
        let Some(dialog) = leg.dialog.as_ref() else {
            return;
        };
        if let Some(mut ack) = dialog.ack(seq, &via) {
            copy_credentials(reinvite.unwrap_or(&leg.invite), seq, &mut ack);
            let dest = leg.dest;
            self.driver.endpoint().send_stateless(dest, &ack);
        }
    }

    /// Answers a 401 or 407 to an in-dialog request: the same request again
    /// in a new transaction, with credentials and the dialog's next CSeq
    /// (RFC 3261 §22.2), once. False when it was not ours to answer, was
    /// answered before, or cannot be answered: the response then counts
    /// as the request's failure.
    fn answer_in_dialog_challenge(&mut self, tx: ClientTxId, response: &Message) -> bool {
        let Some(sent) = self.in_dialog.get(&tx).filter(|s| !s.answered) else {
            return false;
        };
        let (account, dest, request) = (sent.account, sent.dest, sent.request.clone());
        let Some((id, what)) = self.pending.get(&tx).cloned() else {
            return false;
        };
        if !may_answer(&self.accounts[account], dest, response) {
            warn!(call = %id, "challenged by a server that is not the account's: not answered");
            return false;
        }
        let digest = &mut self.accounts[account].digest;
        let creds = match digest.handle_challenge(response, &request, &mut self.rng) {
            Ok(creds) => creds,
            Err(e) => {
                debug!(call = %id, error = %e, "in-dialog challenge not answered");
                return false;
            }
        };
        let local = self.calls.get(&id).and_then(|l| l.direct_local);
        let Some(local) = local.or(self.accounts[account].local) else {
            return false;
        };
        let via = self.via_at(local, dest.transport.as_str());
        let Ok(cseq) = request.cseq() else {
            return false;
        };
        let (old, method) = (cseq.seq, cseq.method_token.to_owned());
        // The next number of the dialog (§22.1), which the call may have
        // moved on since; a BYE's call is gone, and nothing follows it.
        let seq = match self.calls.get_mut(&id).and_then(|l| l.dialog.as_mut()) {
            Some(dialog) => {
                dialog.local_seq = dialog.local_seq.max(old) + 1;
                dialog.local_seq
            }
            // Past every request of the call still out (a NOTIFY and a BYE
            // may both be challenged after it ended).
            None => {
                let call_id = request.call_id().ok();
                self.in_dialog
                    .values()
                    .filter(|s| s.request.call_id().ok() == call_id)
                    .filter_map(|s| s.request.cseq().ok().map(|c| c.seq))
                    .fold(old, u32::max)
                    + 1
            }
        };
        let retry = with_credentials(request, &via, seq, &creds);
        let what = match what {
            // Its ACK carries these credentials too.
            Pending::ReInvite { hold, .. } => Pending::ReInvite {
                hold,
                request: Box::new(retry.clone()),
            },
            other => other,
        };
        let now = self.now();
        match self
            .driver
            .endpoint()
            .send_request(now, retry.clone(), dest)
        {
            Ok(new_tx) => {
                debug!(call = %id, %method, "in-dialog request sent again with credentials");
                self.pending.remove(&tx);
                self.in_dialog.remove(&tx);
                self.pending.insert(new_tx, (id, what));
                self.in_dialog.insert(
                    new_tx,
                    SentInDialog {
                        account,
                        dest,
                        request: retry,
                        answered: true,
                    },
                );
                true
            }
            Err(e) => {
                warn!(call = %id, error = %e, "in-dialog request not sent again");
                false
            }
        }
    }

    async fn response(&mut self, tx: ClientTxId, response: Message) {
        let now = self.now();
        if let Some(&i) = self.reg_tx.get(&tx) {
            if response.status().is_some_and(|s| s >= 200) {
                self.reg_tx.remove(&tx);
                if response.status().is_some_and(|s| s < 300) {
                    self.note_flow_timer(i, &response);
                    self.note_push_confirmation(i, &response);
                }
                if let Some(reg) = self.accounts[i].registration.as_mut() {
                    reg.handle_response(now, &response, &mut self.rng);
                }
                self.pump_registration(i);
                self.fail_over(i);
            }
            return;
        }
        let Some((id, what)) = self.pending.get(&tx).cloned() else {
            // The INVITE transaction passes up every 2xx for 64*T1 after
            // the first final response (RFC 6026 §8.4).
            if matches!(response.status(), Some(200..=299))
                && response.cseq().is_ok_and(|c| c.method() == Method::Invite)
            {
                self.late_2xx(&response);
            }
            return;
        };
        let status = response.status().unwrap_or(0);
        if matches!(status, 401 | 407) && self.answer_in_dialog_challenge(tx, &response) {
            return;
        }
        if status >= 200 {
            self.pending.remove(&tx);
            self.in_dialog.remove(&tx);
        }
        // A 2xx to a target-refresh request moves the remote target
        // (RFC 3261 §12.2.1.2, RFC 3311 §5.1) and says what becomes of the
        // session timer (RFC 4028 §7.2).
        if (200..300).contains(&status)
            && matches!(what, Pending::ReInvite { .. } | Pending::Update)
            && let Some(leg) = self.calls.get_mut(&id)
        {
            if let Some(d) = leg.dialog.as_mut() {
                d.handle_response(&response);
            }
            leg.timer = SessionTimer::of_response(&response, now);
        }
        let update_unknown = matches!(what, Pending::Update) && matches!(status, 405 | 501);
        if (status >= 500 || status == 405)
            && !update_unknown
            && matches!(what, Pending::ReInvite { .. } | Pending::Update)
        {
            self.refresh_again_soon(id, &response, now);
        }
        match what {
            Pending::Invite => self.invite_response(id, tx, response, status).await,
            Pending::ReInvite { hold, request } => {
                self.reinvite_response(id, response, status, hold, *request)
                    .await
            }
            Pending::Refer => {
                if let Some(leg) = self.calls.get_mut(&id) {
                    if (200..300).contains(&status) {
                        leg.transferring = true;
                        self.emit(PhoneEvent::TransferProgress { call: id, status });
                    } else if status >= 300 {
                        self.emit(PhoneEvent::TransferProgress { call: id, status });
                    }
                }
            }
            Pending::Update => {
                if update_unknown && let Some(leg) = self.calls.get_mut(&id) {
                    // The refresh goes again at once, as a re-INVITE.
                    leg.update_refused = true;
                    if let Some(t) = leg.timer.as_mut().filter(|t| t.we_refresh) {
                        t.deadline = now;
                    }
                } else if matches!(status, 408 | 481) {
                    // The peer no longer knows the dialog (§12.2.1.2).
                    self.send_bye(id);
                    self.end_call(id, EndReason::Failed(format!("UPDATE answered {status}")))
                        .await;
                }
            }
            Pending::Bye | Pending::Info | Pending::Notify => {}
        }
    }

    /// A refused re-INVITE or UPDATE (a 500 while the peer has its own
    /// INVITE out, a 503): when we refresh the session, the next refresh
    /// comes soon rather than at the end of the interval, where the peer
    /// hangs up first (see `SessionTimer::refused`).
    fn refresh_again_soon(&mut self, id: CallId, response: &Message, now: Instant) {
        let retry_after = response.retry_after().ok().flatten().map(|r| r.seconds);
        if let Some(t) = self.calls.get_mut(&id).and_then(|l| l.timer.as_mut())
            && t.we_refresh
        {
            t.refused(now, retry_after);
        }
    }

    async fn invite_response(
        &mut self,
        id: CallId,
        tx: ClientTxId,
        response: Message,
        status: u16,
    ) {
        let now = self.now();
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        match status {
            100 => {}
            101..=199 => {
                let contact = call_contact(&self.accounts, leg);
                if leg.dialog.is_none() && response.to().ok().and_then(|t| t.tag()).is_some() {
                    leg.dialog = Dialog::as_uac(&leg.invite, &response, &contact);
                }
                let mut state = CallState::Ringing;
                if leg.negotiation.is_offer_pending()
                    && let Some(Ok(answer)) = sdp_of(&response).map(SessionDescription::parse_bytes)
                {
                    match leg.negotiation.handle_answer(&answer) {
                        Ok(n) => {
                            leg.answer_tag = to_tag(&response);
                            leg.early_answer = Some(answer.clone());
                            self.apply_negotiated(id, n).await;
                            // Media that could not start cancels the call.
                            if self.calls.get(&id).is_none_or(|l| l.cancelled.is_some()) {
                                return;
                            }
                            state = CallState::EarlyMedia;
                        }
                        Err(e) => debug!(call = %id, error = %e, "early media refused"),
                    }
                } else if self.calls.get(&id).is_some_and(|l| l.media.is_some()) {
                    state = CallState::EarlyMedia;
                }
                if status == 183 || status == 180 || state == CallState::EarlyMedia {
                    self.set_state(id, state);
                }
            }
            200..=299 => {
                let contact = call_contact(&self.accounts, leg);
                match leg.dialog.as_mut() {
                    Some(d)
                        if d.id.remote_tag
                            == response.to().ok().and_then(|t| t.tag()).unwrap_or("") =>
                    {
                        // Confirms the early dialog and takes the 2xx's
                        // route set (§13.2.2.4).
                        d.handle_response(&response);
                    }
                    _ => leg.dialog = Dialog::as_uac(&leg.invite, &response, &contact),
                }
                leg.last_2xx = Some(response.clone());
                let first = leg.phase == Phase::Calling;
                leg.phase = Phase::Confirmed;
                // A 2xx that won the race with our CANCEL is hung up at
                // once: the call was never answered for the history.
                if first && leg.cancelled.is_none() {
                    leg.answered = Some(SystemTime::now());
                }
                // RFC 4028: who refreshes, and how often.
                leg.timer = SessionTimer::of_response(&response, now);
                let tag = to_tag(&response);
                let forked = leg.answer_tag.is_some() && leg.answer_tag != tag;
                let answer =
                    sdp_of(&response).and_then(|b| SessionDescription::parse_bytes(b).ok());
                let negotiated = if leg.negotiation.is_offer_pending() {
                    Some(answer.map_or(
                        Err(media_engine::negotiation::NegotiationError::NoPendingOffer),
                        |a| leg.negotiation.handle_answer(&a),
                    ))
                } else if let Some(answer) = answer
                    && leg.early_answer.as_ref() != Some(&answer)
                {
                    // §13.2.1 makes the first SDP the answer and has later
                    // ones ignored, but a 2xx that differs is taken when it
                    // can be used: another callee of a forked INVITE, an
                    // early answer that was unusable, or a gateway whose
                    // announcement was sendonly and whose call is not (RFC
                    // 6337 §3.1.1 notes such peers). Within the early
                    // media's dialog, one that cannot be used leaves the
                    // early session as it was.
                    if forked {
                        info!(call = %id, "answered by another callee than the early media's");
                    }
                    match leg.negotiation.handle_forked_answer(&answer) {
                        Err(e)
                            if !forked
                                && leg.answer_tag.is_some()
                                && leg.early_answer.is_some() =>
                        {
                            debug!(call = %id, error = %e, "the 2xx's other answer is unusable: the early one stays");
                            None
                        }
                        result => Some(result),
                    }
                } else {
                    None
                };
                if negotiated.as_ref().is_some_and(Result::is_ok) {
                    leg.answer_tag = tag;
                }
                let cancelled = leg.cancelled.clone();
                self.send_ack(id, &response, None);
                if let Some(reason) = cancelled {
                    // The 2xx won the race with our CANCEL (§9.1): hang up.
                    self.send_bye(id);
                    self.end_call(id, reason).await;
                    return;
                }
                // A transfer's target answered: the transferor hears so
                // (RFC 3515 §2.4.5) whatever becomes of the media.
                if first && let Some(orig) = self.calls.get(&id).and_then(|l| l.transferred_from) {
                    self.notify_transfer(orig, 200, "OK", true);
                }
                match negotiated {
                    Some(Ok(n)) => self.apply_negotiated(id, n).await,
                    Some(Err(e)) => {
                        warn!(call = %id, error = %e, "the answer's media is unusable");
                        self.send_bye(id);
                        self.end_call(id, EndReason::Failed(format!("media: {e}")))
                            .await;
                        return;
                    }
                    None => {}
                }
                if first {
                    info!(call = %id, "answered by the peer");
                    // Nothing when media failed and ended the call.
                    self.set_state(id, CallState::Connected);
                }
            }
            401 | 407 if leg.cancelled.is_some() => {
                // Hung up while the challenge was on its way: no second
                // INVITE, so the callee never rings.
                let reason = leg.cancelled.clone().unwrap_or(EndReason::Cancelled);
                self.end_call(id, reason).await;
            }
            401 | 407 => {
                let ai = leg.account;
                let invite = leg.invite.clone();
                let trusted = may_answer(&self.accounts[ai], leg.dest, &response);
                let digest = &mut self.accounts[ai].digest;
                // An INVITE that answered no challenge went with cached
                // credentials, whose nonce the server may have forgotten:
                // answered afresh once.
                let creds = if !trusted {
                    warn!(call = %id, "challenged by a server that is not the account's: not answered");
                    None
                } else if leg.challenge_answered {
                    digest
                        .handle_challenge(&response, &invite, &mut self.rng)
                        .ok()
                } else {
                    digest
                        .handle_challenge_afresh(&response, &invite, &mut self.rng)
                        .ok()
                };
                let Some(creds) = creds else {
                    self.end_call(
                        id,
                        EndReason::Refused {
                            status,
                            reason: response.reason().unwrap_or("").to_owned(),
                        },
                    )
                    .await;
                    return;
                };
                let Some(via) = self.via_for_call(id) else {
                    return;
                };
                let Some(leg) = self.calls.get_mut(&id) else {
                    return;
                };
                let seq = leg.invite.cseq().map(|c| c.seq).unwrap_or(1) + 1;
                let retry = with_credentials(leg.invite.clone(), &via, seq, &creds);
                let dest = leg.dest;
                leg.invite = retry.clone();
                leg.challenge_answered = true;
                leg.negotiation.cancel_offer();
                // The offer stays the same; the negotiation expects it pending again.
                let _ = leg.negotiation.create_offer();
                match self.driver.endpoint().send_request(now, retry, dest) {
                    Ok(new_tx) => {
                        if let Some(leg) = self.calls.get_mut(&id) {
                            leg.invite_tx = Some(new_tx);
                        }
                        self.pending.insert(new_tx, (id, Pending::Invite));
                    }
                    Err(e) => {
                        self.end_call(id, EndReason::Failed(format!("INVITE retry: {e}")))
                            .await;
                    }
                }
                let _ = tx;
            }
            503 if self.invite_elsewhere(id) => {}
            _ => {
                let Some(leg) = self.calls.get(&id) else {
                    return;
                };
                let reason = if let Some(reason) = leg.cancelled.clone().filter(|_| status == 487) {
                    reason
                } else {
                    EndReason::Refused {
                        status,
                        reason: response.reason().unwrap_or("").to_owned(),
                    }
                };
                self.end_call(id, reason).await;
            }
        }
    }

    async fn reinvite_response(
        &mut self,
        id: CallId,
        response: Message,
        status: u16,
        hold: bool,
        request: Message,
    ) {
        let now = self.now();
        if status < 200 {
            return;
        }
        let Some(leg) = self.calls.get_mut(&id) else {
            return;
        };
        if (200..300).contains(&status) {
            self.send_ack(id, &response, Some(&request));
            let Some(leg) = self.calls.get_mut(&id) else {
                return;
            };
            let negotiated = sdp_of(&response)
                .and_then(|b| SessionDescription::parse_bytes(b).ok())
                .map(|a| leg.negotiation.handle_answer(&a));
            match negotiated {
                Some(Ok(n)) => {
                    leg.local_hold = hold;
                    leg.unusable_answers = 0;
                    self.apply_negotiated(id, n).await;
                    self.hold_state(id);
                }
                _ => {
                    // The peer took our offer and thinks its answer holds;
                    // we cannot use it and keep what the call had. A new
                    // offer of that puts both sides back in step; if its
                    // answer is unusable too, the session cannot go on.
                    leg.negotiation.cancel_offer();
                    leg.keep_hold_state();
                    leg.unusable_answers = leg.unusable_answers.saturating_add(1);
                    if leg.unusable_answers >= 2 {
                        warn!(call = %id, "re-INVITE answers unusable: hanging up");
                        self.send_bye(id);
                        self.end_call(
                            id,
                            EndReason::Failed(
                                "the far end's answers to our offers are unusable".into(),
                            ),
                        )
                        .await;
                    } else {
                        warn!(call = %id, "re-INVITE answer unusable: offering the call's media again");
                        leg.reinvite_retry = Some((now, leg.local_hold));
                    }
                }
            }
            return;
        }
        leg.negotiation.cancel_offer();
        leg.unusable_answers = 0;
        // The hold or resume did not happen: later offers and answers keep
        // the direction the call has.
        leg.keep_hold_state();
        if status == 491 {
            // §14.1: try again after a random wait.
            let owns = leg.direction == CallDirection::Outgoing;
            let wait = sip_core::dialog::glare_backoff(owns, &mut self.rng);
            leg.reinvite_retry = Some((now + wait, hold));
        } else if matches!(status, 408 | 481) {
            self.send_bye(id);
            self.end_call(
                id,
                EndReason::Failed(format!("re-INVITE answered {status}")),
            )
            .await;
        }
    }
}

/// `request` sent again after a challenge (RFC 3261 §22.2): a new branch
/// in `via`, CSeq `seq`, and `creds` in place of any credentials it had.
fn with_credentials(
    mut request: Message,
    via: &str,
    seq: u32,
    creds: &[sip_core::auth::Credentials],
) -> Message {
    let method = request
        .cseq()
        .map(|c| c.method_token.to_owned())
        .unwrap_or_default();
    let _ = request.set_header("Via", via);
    let _ = request.set_header("CSeq", &format!("{seq} {method}"));
    request.remove_header("Authorization");
    request.remove_header("Proxy-Authorization");
    for c in creds {
        let _ = c.add_to(&mut request);
    }
    request
}

/// Whether account `a`'s password may answer `response`, a challenge to a
/// request that went to `dest`: the account's own servers (registrar,
/// outbound proxies) may ask, and so may whoever asks for a realm one of
/// them asked for. Anyone else, such as the callee of a direct call, would
/// get a digest of the password to attack offline.
/// Our Contact in a call: at the call's own address for a direct call
/// (see `Engine::direct_local`), else the account's.
fn call_contact(accounts: &[AccountState], leg: &CallLeg) -> String {
    let a = &accounts[leg.account];
    match leg.direct_local {
        Some(local) => a.contact_at(local, leg.dest.transport.as_str()),
        None => a.contact().unwrap_or_default(),
    }
}

fn may_answer(a: &AccountState, dest: Destination, response: &Message) -> bool {
    if a.servers.iter().any(|s| s.addr == dest.addr) {
        return true;
    }
    let mut realms = response
        .www_authenticate()
        .chain(response.proxy_authenticate())
        .filter_map(Result::ok)
        .map(|c| c.param("realm"))
        .peekable();
    realms.peek().is_some()
        && realms.all(|r| r.is_some_and(|r| a.digest.cached_realms().any(|k| k == r)))
}

/// The ACK for a 2xx carries the credentials of the INVITE it acknowledges
/// (RFC 3261 §22.1): a proxy that demanded them for the INVITE may demand
/// them for the ACK, which cannot be challenged. Copied only from the
/// INVITE with the ACK's CSeq number.
fn copy_credentials(invite: &Message, seq: u32, ack: &mut Message) {
    if !invite.cseq().is_ok_and(|c| c.seq == seq) {
        return;
    }
    for name in ["Authorization", "Proxy-Authorization"] {
        for value in invite.header_values(name) {
            let _ = ack.push_header(name, value);
        }
    }
}

/// The direction our offers and answers take on hold (RFC 3264 §8.4) or
/// off it.
fn hold_direction(hold: bool) -> Direction {
    if hold {
        Direction::SendOnly
    } else {
        Direction::SendRecv
    }
}

/// The option tags we act on when a request requires them (RFC 3261
/// §8.2.2.3): Replaces (RFC 3891) and session timers (RFC 4028).
const UNDERSTOOD: [&str; 2] = ["replaces", "timer"];

/// At most one check-sync NOTIFY a minute reaches the application,
/// however often the PBX sends them.
const CHECK_SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// The session description a message carries: its body, or the SDP part
/// of a multipart body (RFC 5621); `None` without one.
fn sdp_of(message: &Message) -> Option<&[u8]> {
    message.body_of_type("application", "sdp")
}

/// The To tag of a message; in a response, which callee sent it.
/// Whether a CANCEL says the call was answered elsewhere (RFC 3326:
/// `Reason: SIP;cause=200`), as when another phone of a group took it.
fn answered_elsewhere(cancel: &Message) -> bool {
    cancel
        .reasons()
        .flatten()
        .any(|r| r.value.eq_ignore_ascii_case("SIP") && r.params.value("cause") == Some("200"))
}

fn to_tag(message: &Message) -> Option<String> {
    message.to().ok().and_then(|t| t.tag().map(str::to_owned))
}

/// Where a stateless 2xx retransmission goes: back to the request's source
/// (RFC 3581).
fn response_destination(request: &Message, source: Destination) -> Destination {
    let Ok(via) = request.via() else {
        return source;
    };
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => source.addr.port(),
    };
    let ip = via.received().unwrap_or(source.addr.ip());
    Destination {
        addr: SocketAddr::new(ip, port),
        ..source
    }
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `Signal=5` from an application/dtmf-relay body.
fn parse_dtmf_relay(body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("signal") {
            return None;
        }
        let c = v.trim().chars().next()?.to_ascii_uppercase();
        (c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')).then_some(c)
    })
}

/// The status code of a message/sipfrag body (`SIP/2.0 200 OK`).
fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    if parts.next()? != "SIP/2.0" {
        return None;
    }
    parts
        .next()?
        .parse()
        .ok()
        .filter(|s| (100..700).contains(s))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'!' | b'*') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8599 §4.1: the push parameters go on REGISTERs only; the
    /// Contact of INVITEs and their answers has `;ob` and nothing of the
    /// device's token.
    #[tokio::test]
    async fn rfc8599_4_1_push_parameters_stay_out_of_dialog_contacts() {
        let mut account = Account::new("office", "alice", "sip:127.0.0.1:5061;transport=tls");
        account.transport = config_export::Transport::Tls;
        account.outbound_proxies = vec!["sip:127.0.0.1:5062;transport=tls".into()];
        let mut a = account_state(&account, &dns_resolver(&Dns::System))
            .await
            .unwrap();
        let token = proxy_client::push::PushToken::new("fcm", "device-token").unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let instance = proxy_client::InstanceId::generate(&mut rng);
        a.flows = flows::AccountFlows::new(&a.servers, instance, Some(token), &mut rng);
        assert!(a.flows.is_some(), "TLS proxies take flows");
        a.local = Some("127.0.0.1:40000".parse().unwrap());
        let dialog = a.contact().unwrap();
        let register = a.register_contact().unwrap();
        assert_eq!(dialog, "sip:alice@127.0.0.1:40000;transport=tls;ob");
        assert!(
            register.starts_with(&dialog) && register.contains("pn-prid=device-token"),
            "{register}"
        );
        assert!(!a.contact_at(a.local.unwrap(), "TLS").contains("pn-"));
    }

    #[test]
    fn dtmf_relay_bodies() {
        assert_eq!(parse_dtmf_relay(b"Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(parse_dtmf_relay(b"signal= #\r\n"), Some('#'));
        assert_eq!(parse_dtmf_relay(b"Signal=x\r\n"), None);
        assert_eq!(parse_dtmf_relay(b"Duration=160\r\n"), None);
        assert_eq!(parse_dtmf_relay(&[0xff, 0xfe]), None);
    }

    #[test]
    fn sipfrag_status_lines() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying"), Some(100));
        assert_eq!(sipfrag_status(b"HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 9999 X"), None);
        assert_eq!(sipfrag_status(b""), None);
    }

    #[test]
    fn replaces_survives_percent_encoding() {
        let r = "abc@host;to-tag=1;from-tag=2";
        let enc = percent_encode(r);
        assert!(!enc.contains(';') && !enc.contains('@') && !enc.contains('='));
        assert_eq!(percent_decode(&enc), r);
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn uri_targets() {
        assert_eq!(
            uri_target("sip:bob@127.0.0.1:5070", TransportKind::Udp).unwrap(),
            ("127.0.0.1".into(), 5070, TransportKind::Udp)
        );
        assert_eq!(
            uri_target("sip:pbx.example.com;transport=tcp", TransportKind::Udp).unwrap(),
            ("pbx.example.com".into(), 5060, TransportKind::Tcp)
        );
        assert_eq!(
            uri_target("sips:pbx.example.com", TransportKind::Udp).unwrap(),
            ("pbx.example.com".into(), 5061, TransportKind::Tls)
        );
        assert_eq!(
            uri_target("sips:pbx.example.com;transport=tcp", TransportKind::Udp).unwrap(),
            ("pbx.example.com".into(), 5061, TransportKind::Tls)
        );
        assert_eq!(
            uri_target("sips:pbx.example.com:8443;transport=ws", TransportKind::Udp).unwrap(),
            ("pbx.example.com".into(), 8443, TransportKind::Wss)
        );
        assert!(uri_target("sips:pbx.example.com;transport=udp", TransportKind::Udp).is_err());
        assert!(uri_target("tel:+123", TransportKind::Udp).is_err());
        assert!(uri_target("not a uri", TransportKind::Udp).is_err());
    }

    /// What the phone could not start with is found before a provisioned
    /// document replaces a working one: a sips: registrar over UDP, a CA
    /// file that is not there, a certificate that does not decode.
    #[test]
    fn check_config_refuses_what_start_would() {
        use config_export::{Transport, TrustAnchor};
        let mut good = Config::default();
        let mut account = Account::new("office", "alice", "sips:pbx.example.com");
        account.transport = Transport::Tls;
        good.accounts.push(account);
        check_config(&good).unwrap();
        let mut udp = good.clone();
        udp.accounts[0].registrar = "sips:pbx.example.com;transport=udp".into();
        let e = check_config(&udp).unwrap_err().to_string();
        assert!(e.contains("UDP"), "{e}");
        let mut proxy = good.clone();
        proxy.accounts[0].outbound_proxies = vec!["relay example".into()];
        assert!(check_config(&proxy).is_err());
        let mut missing = good.clone();
        missing
            .tls
            .trust
            .push(TrustAnchor::File("/nonexistent/company-ca.pem".into()));
        let e = check_config(&missing).unwrap_err().to_string();
        assert!(e.contains("company-ca.pem"), "{e}");
        let mut garbled = good.clone();
        garbled.tls.trust.push(TrustAnchor::Pem(
            "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n".into(),
        ));
        assert!(check_config(&garbled).is_err());
    }
}
