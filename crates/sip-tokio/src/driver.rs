//! The loop that joins the transports to the sans-IO endpoint of `sip-core`:
//! what arrives is fed in with tokio's clock, what the endpoint wants sent
//! goes out, its timers are slept on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rand::RngCore;
use sip_core::endpoint::{self, Destination, Endpoint, EndpointEvent, Input, Transport};
use tokio::sync::mpsc;

use crate::transport::{
    CloseReason, ConnectionId, Incoming, IncomingEvent, OutboundMessage, TransportError,
    TransportKind, Transports,
};

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
#[derive(Debug)]
pub struct Driver<R> {
    transports: Transports,
    incoming: mpsc::Receiver<Incoming>,
    endpoint: Endpoint<R>,
    connections: HashMap<u64, ConnectionId>,
    udp_local: Option<SocketAddr>,
    pending: Vec<DriverEvent>,
    /// The transmit being sent, kept until the send returns so a caller
    /// that drops [`Driver::next`] mid-send (in a `select!`) loses nothing.
    sending: Option<endpoint::Transmit>,
}

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
        Driver {
            transports,
            incoming,
            endpoint,
            connections: HashMap::new(),
            udp_local,
            pending: Vec::new(),
            sending: None,
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

    /// Sends everything the endpoint has queued.
    ///
    /// Cancel-safe: a transmit whose send was interrupted is sent again by
    /// the next call (at worst a duplicate datagram, which SIP absorbs).
    pub async fn flush(&mut self) {
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
            let mut out = OutboundMessage::new(kind, t.destination.addr, t.payload);
            if let Some(c) = t
                .destination
                .connection
                .and_then(|c| self.connections.get(&c.0))
            {
                out = out.with_connection(*c);
            }
            if kind == TransportKind::Udp
                && let Some(local) = self.udp_local
            {
                out = out.with_local(local);
            }
            let result = self.transports.send(out).await;
            self.sending = None;
            match result {
                Ok(sent) => {
                    if let Some(c) = sent.connection {
                        self.connections.insert(c.as_u64(), c);
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
                    self.pending.push(DriverEvent::SendFailed {
                        destination: t.destination,
                        error,
                    });
                }
            }
        }
    }

    /// Runs I/O and timers until the endpoint has an event, `wakeup` passes,
    /// or the transports shut down (`None`). Cancel-safe (see [`flush`](Self::flush)),
    /// so it can race a command channel in `select!`.
    pub async fn next(&mut self, wakeup: Option<Instant>) -> Option<DriverEvent> {
        loop {
            self.flush().await;
            if !self.pending.is_empty() {
                return Some(self.pending.remove(0));
            }
            if let Some(ev) = self.endpoint.poll_event() {
                return Some(DriverEvent::Endpoint(ev));
            }
            let now = now();
            if wakeup.is_some_and(|w| w <= now) {
                return Some(DriverEvent::Wakeup);
            }
            let deadline = [self.endpoint.poll_timeout(), wakeup]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                incoming = self.incoming.recv() => {
                    let incoming = incoming?;
                    self.feed(incoming);
                }
                () = sleep => {
                    let now = self::now();
                    self.endpoint.handle_timeout(now);
                }
            }
        }
    }

    fn feed(&mut self, incoming: Incoming) {
        let now = now();
        let transport = core_transport(incoming.kind);
        let connection = incoming.connection.map(|c| {
            self.connections.insert(c.as_u64(), c);
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
                    self.endpoint
                        .handle_input(now, Input::ConnectionClosed { connection: c });
                    if let Some(connection) = closed {
                        self.pending.push(DriverEvent::ConnectionClosed {
                            connection,
                            remote: incoming.remote,
                            reason,
                        });
                    }
                }
            }
            IncomingEvent::Pong => {
                if let Some(c) = connection {
                    self.pending
                        .push(DriverEvent::Endpoint(EndpointEvent::KeepAlivePong {
                            connection: c,
                        }));
                }
            }
            // Unparseable input was counted by the transport; a transport
            // error on receive has no transaction to tell.
            _ => {}
        }
    }
}
