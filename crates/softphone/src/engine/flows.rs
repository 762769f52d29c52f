//! SIP outbound (RFC 5626) for an account that registers through relay
//! proxies over TCP, TLS or WebSocket: proxy-client's sans-IO
//! [`FlowManager`] decides (which proxy, when to ping, when to re-form a
//! flow, how long to back off), this module carries its actions out on the
//! phone's own transports, so requests from the PBX arrive over the flow.

use std::net::SocketAddr;
use std::time::Duration;

use proxy_client::InstanceId;
use proxy_client::outbound::{
    FlowAction, FlowId, FlowManager, OutboundConfig, ProxyTarget, contact_params,
};
use proxy_client::push::{PushOutcome, PushState, PushToken};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sip_tokio::{ConnectionId, OutboundMessage, TransportKind, core_transport};
use tracing::{debug, info, warn};

use super::{Engine, Server};
use crate::diagnostics::Pii;
use crate::event::{PhoneEvent, RegistrationStatus};

/// One account's flow (reg-id 1) and what it registers with.
pub(super) struct AccountFlows {
    manager: FlowManager<StdRng>,
    instance: InstanceId,
    push: PushState,
    /// The flow being formed or up, and its connection once open.
    current: Option<(FlowId, Option<ConnectionId>)>,
    /// The Flow-Timer of the last successful REGISTER.
    flow_timer: Option<Duration>,
}

impl AccountFlows {
    /// Flows over `servers` when every one of them is a stream transport
    /// (a UDP flow needs STUN keep-alives, which the phone's UDP socket
    /// cannot take back).
    pub(super) fn new(
        servers: &[Server],
        instance: InstanceId,
        push: Option<PushToken>,
        rng: &mut StdRng,
    ) -> Option<AccountFlows> {
        if servers.is_empty() || servers.iter().any(|s| s.kind == TransportKind::Udp) {
            return None;
        }
        let targets = servers
            .iter()
            .map(|s| {
                let target = ProxyTarget::new(core_transport(s.kind), s.addr);
                match &s.name {
                    Some(name) => target.with_server_name(name),
                    None => target,
                }
            })
            .collect();
        let manager = FlowManager::new(OutboundConfig::new(targets), StdRng::from_rng(rng)).ok()?;
        Some(AccountFlows {
            manager,
            instance,
            push: PushState::new(push),
            current: None,
            flow_timer: None,
        })
    }

    /// The push parameters for the REGISTER's Contact URI.
    pub(super) fn push_params(&self) -> String {
        self.push.uri_params()
    }

    /// Whether the registrar said it will push (see `AccountInfo`).
    pub(super) fn push_confirmed(&self) -> Option<bool> {
        self.push.is_confirmed()
    }

    /// `+sip.instance` and `reg-id` for the Contact header.
    pub(super) fn header_params(&self) -> String {
        contact_params(&self.instance, 1)
    }

    /// The current flow when it runs over `connection`.
    fn flow_on(&self, connection: u64) -> Option<FlowId> {
        match self.current {
            Some((flow, Some(c))) if c.as_u64() == connection => Some(flow),
            _ => None,
        }
    }

    /// The current flow's connection.
    pub(super) fn connection(&self) -> Option<ConnectionId> {
        self.current.and_then(|(_, c)| c)
    }

    fn flow(&self) -> Option<FlowId> {
        self.current.map(|(f, _)| f)
    }

    pub(super) fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.manager.poll_timeout()
    }
}

/// How a flow's connection attempt ended.
pub(super) struct FlowConnected {
    account: usize,
    flow: FlowId,
    proxy: usize,
    result: Result<(SocketAddr, Option<ConnectionId>), String>,
}

impl Engine {
    /// A flow's connection attempt ended: the manager hears of it, unless
    /// the flow was given up meanwhile.
    pub(super) fn flow_connected(&mut self, done: FlowConnected) {
        let now = self.now();
        let id = self.accounts[done.account].config.id.clone();
        let a = &mut self.accounts[done.account];
        let Some(f) = a.flows.as_mut() else { return };
        if f.flow() != Some(done.flow) {
            return;
        }
        match done.result {
            Ok((local, connection)) => {
                a.local = Some(local);
                f.current = Some((done.flow, connection));
                f.manager.handle_connected(now, done.flow);
            }
            Err(e) => {
                warn!(account = %id, proxy = done.proxy + 1, error = %Pii::text(&e), "outbound proxy unreachable");
                f.manager.handle_connect_failed(now, done.flow);
            }
        }
    }

    /// Starts the account's flow manager: its first Connect follows.
    pub(super) fn start_flows(&mut self, i: usize) {
        let now = self.now();
        if let Some(f) = self.accounts[i].flows.as_mut() {
            f.manager.start(now);
        }
    }

    /// The REGISTER on the flow succeeded: keep-alives start.
    pub(super) fn flow_registered(&mut self, i: usize) {
        let now = self.now();
        if let Some(f) = self.accounts[i].flows.as_mut()
            && let Some(flow) = f.flow()
        {
            f.manager.handle_registered(now, flow, f.flow_timer);
        }
        // The push token changed while this REGISTER was out (the manager
        // re-registers only flows already up): the binding has the old
        // one, and pushes would go to it.
        let a = &self.accounts[i];
        let stale = a.flows.is_some()
            && a.registration.as_ref().map(|r| r.contact().to_owned()) != a.register_contact();
        if stale && self.shutting_down.is_none() {
            debug!(account = %a.config.id, "push token changed during the REGISTER: registering again");
            self.start_registration(i);
        }
    }

    /// The REGISTER on the flow failed. A 555 means the proxy takes no push:
    /// register again without the pn-* parameters (RFC 8599 §4.1.2);
    /// anything else fails the flow and the manager backs off.
    pub(super) fn flow_registration_failed(
        &mut self,
        i: usize,
        status: u16,
        retry_after: Option<std::time::Duration>,
    ) {
        let now = self.now();
        let Some(f) = self.accounts[i].flows.as_mut() else {
            return;
        };
        if f.push.handle_register_status(status) == PushOutcome::RetryWithoutPush {
            warn!(account = %self.accounts[i].config.id, "the proxy refused push (555); registering without it");
            self.start_registration(i);
            return;
        }
        if let Some(flow) = f.flow() {
            f.manager
                .handle_registration_failed(now, flow, status, retry_after);
        }
        self.accounts[i].registration = None;
    }

    /// Reads the Flow-Timer of a successful REGISTER response (§4.4.1).
    pub(super) fn note_flow_timer(&mut self, i: usize, response: &sip_core::Message) {
        if let Some(f) = self.accounts[i].flows.as_mut() {
            f.flow_timer = proxy_client::outbound::flow_timer(response);
        }
    }

    /// A 2xx to a REGISTER: with push parameters in it, whether the
    /// registrar said it will push (RFC 8599 §4.1.1). The user hears of it
    /// when it will not: the phone must then stay awake to take calls.
    pub(super) fn note_push_confirmation(&mut self, i: usize, response: &sip_core::Message) {
        if self.shutting_down.is_some() {
            return;
        }
        let a = &mut self.accounts[i];
        let (Some(f), Some(reg)) = (a.flows.as_mut(), a.registration.as_ref()) else {
            return;
        };
        if !f.push.handle_register_ok(response, reg.contact()) {
            return;
        }
        if f.push.is_confirmed() == Some(false) {
            warn!(account = %a.config.id, "the registrar does not confirm push notifications");
            let text = format!(
                "account {}: the server does not confirm push notifications; keep the app running to take calls",
                a.config.id
            );
            self.emit(PhoneEvent::Notice { text });
        } else {
            info!(account = %a.config.id, "push notifications confirmed");
        }
    }

    /// A CRLF pong arrived on `connection`.
    pub(super) fn flow_pong(&mut self, connection: u64) {
        let now = self.now();
        for a in &mut self.accounts {
            if let Some(f) = a.flows.as_mut()
                && let Some(flow) = f.flow_on(connection)
            {
                f.manager.handle_pong(now, flow);
            }
        }
    }

    /// A connection closed: the flow on it has failed.
    pub(super) fn flow_connection_closed(&mut self, connection: ConnectionId) {
        let now = self.now();
        for a in &mut self.accounts {
            if let Some(f) = a.flows.as_mut()
                && let Some(flow) = f.flow_on(connection.as_u64())
            {
                f.current = Some((flow, None));
                f.manager.handle_closed(now, flow);
            }
        }
    }

    /// Woken by a push (or the network came back): register again on the
    /// flow, or try a backing-off proxy now.
    pub(super) fn wake_flows(&mut self) {
        let now = self.now();
        for a in &mut self.accounts {
            if let Some(f) = a.flows.as_mut() {
                f.manager.wake(now);
            }
        }
    }

    /// A new push token (or none): register again with it.
    pub(super) fn set_push_token(&mut self, token: Option<PushToken>) {
        for a in &mut self.accounts {
            if let Some(f) = a.flows.as_mut()
                && f.push.set_token(token.clone())
            {
                f.manager.reregister();
            }
        }
    }

    /// Runs the managers' timers and carries out their actions.
    pub(super) async fn drive_flows(&mut self) {
        // Shutting down: the un-REGISTERs go over the flows as they are.
        if self.shutting_down.is_some() {
            return;
        }
        let now = self.now();
        for i in 0..self.accounts.len() {
            let Some(f) = self.accounts[i].flows.as_mut() else {
                continue;
            };
            if f.manager.poll_timeout().is_some_and(|t| t <= now) {
                f.manager.handle_timeout(now);
            }
            // Bounded: each action is carried out once; a burst of
            // failures ends in a BackingOff.
            for _ in 0..64 {
                let Some(action) = self.accounts[i]
                    .flows
                    .as_mut()
                    .and_then(|f| f.manager.poll_action())
                else {
                    break;
                };
                self.flow_action(i, action).await;
            }
        }
    }

    async fn flow_action(&mut self, i: usize, action: FlowAction) {
        let id = self.accounts[i].config.id.clone();
        match action {
            FlowAction::Connect { flow, proxy, .. } => {
                // Connecting (TCP, then TLS or WebSocket) can take up to the
                // transport's connect timeout: it runs beside the engine,
                // which carries on with calls and hears the outcome as a
                // `FlowConnected`.
                let a = &mut self.accounts[i];
                a.use_server(proxy);
                let Some(f) = a.flows.as_mut() else { return };
                f.current = Some((flow, None));
                let transports = self.driver.transports().clone();
                let server = a.server().clone();
                let done = self.flow_connects.clone();
                tokio::spawn(async move {
                    let result = super::connect(&transports, &server).await;
                    let _ = done.send(FlowConnected {
                        account: i,
                        flow,
                        proxy,
                        result,
                    });
                });
            }
            FlowAction::Register { flow, .. } => {
                // A registration exists only on the current flow (closing
                // a flow drops it); it stands if its Contact is unchanged.
                let a = &self.accounts[i];
                let same = a.flows.as_ref().is_some_and(|f| f.flow() == Some(flow))
                    && a.registration.as_ref().map(|r| r.contact().to_owned())
                        == a.register_contact();
                match self.accounts[i].registration.as_mut() {
                    // The binding stands; refresh it with the same Call-ID.
                    Some(reg) if same => {
                        reg.register(&mut self.rng);
                        self.pump_registration(i);
                    }
                    _ => self.start_registration(i),
                }
            }
            FlowAction::SendKeepAlive { flow, payload } => {
                let a = &self.accounts[i];
                let Some(connection) = a
                    .flows
                    .as_ref()
                    .and_then(|f| f.current)
                    .filter(|(f, _)| *f == flow)
                    .and_then(|(_, c)| c)
                else {
                    return;
                };
                let ping = OutboundMessage::new(a.server().kind, a.server().addr, payload)
                    .with_connection(connection);
                if self.driver.transports().send(ping).await.is_err() {
                    let now = self.now();
                    if let Some(f) = self.accounts[i].flows.as_mut() {
                        f.manager.handle_closed(now, flow);
                    }
                }
            }
            FlowAction::Close { flow } => {
                let Some(f) = self.accounts[i].flows.as_mut() else {
                    return;
                };
                if let Some((current, connection)) = f.current
                    && current == flow
                {
                    f.current = None;
                    // The binding went with the flow; a new flow registers anew.
                    self.accounts[i].registration = None;
                    if let Some(c) = connection {
                        let _ = self.driver.transports().close(c).await;
                    }
                }
            }
            FlowAction::FlowUp { proxy, .. } => {
                info!(account = %id, proxy = proxy + 1, "outbound flow up");
            }
            FlowAction::FlowFailed { proxy, reason, .. } => {
                // A replacement is formed at once (or a BackingOff follows).
                warn!(account = %id, proxy = proxy + 1, ?reason, "outbound flow failed");
                self.set_reg_status(i, RegistrationStatus::Registering);
            }
            FlowAction::BackingOff { until, .. } => {
                let wait = until.saturating_duration_since(self.now());
                info!(account = %id, wait_ms = wait.as_millis(), "outbound flows backing off");
                self.set_reg_status(
                    i,
                    RegistrationStatus::Failed {
                        status: 503,
                        reason: format!(
                            "no relay proxy reachable; trying again in {} ms",
                            wait.as_millis()
                        ),
                        will_retry: true,
                    },
                );
            }
            _ => {}
        }
    }
}
