//! UDP: one task per socket, one message per datagram.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use sip_core::{Framing, Message, ParseLimits};
use tokio::net::UdpSocket;
use tracing::{debug, trace};

use crate::transport::{
    Incoming, IncomingEvent, OutboundMessage, Sent, Shared, TransportError, TransportKind,
};

/// The largest UDP payload.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// Receives datagrams until the layer shuts down or nobody listens.
pub(crate) async fn receive_loop(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    limits: ParseLimits,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, remote) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                debug!(error = %error, "UDP receive failed");
                let incoming = Incoming {
                    kind: TransportKind::Udp,
                    local,
                    remote: local,
                    connection: None,
                    event: IncomingEvent::TransportError(TransportError::io("receive", error)),
                };
                if !shared.emit(incoming).await {
                    return;
                }
                continue;
            }
        };
        let Some(event) = datagram_event(&buf[..len], &limits) else {
            continue;
        };
        let incoming = Incoming {
            kind: TransportKind::Udp,
            local,
            remote,
            connection: None,
            event,
        };
        if !shared.emit(incoming).await {
            return;
        }
    }
}

/// What a datagram holds: a message or a parse error; `None` for a
/// keep-alive.
pub(crate) fn datagram_event(data: &[u8], limits: &ParseLimits) -> Option<IncomingEvent> {
    // CRLF-only datagrams are keep-alives some peers send over UDP.
    if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
        trace!(size = data.len(), "UDP keep-alive ignored");
        return None;
    }
    // A copy the size of the datagram, so a message the core keeps does
    // not pin a whole receive buffer.
    let datagram = Bytes::copy_from_slice(data);
    Some(
        match Message::parse_with(datagram, limits, Framing::Datagram) {
            Ok(message) => {
                debug!(
                    method = ?message.method(),
                    status = ?message.status(),
                    size = data.len(),
                    "UDP message received"
                );
                IncomingEvent::Message(message)
            }
            Err(error) => {
                // No answer from here: the core may answer 400 if it can.
                debug!(error = %error.kind, size = data.len(), "malformed UDP message");
                IncomingEvent::BadMessage {
                    error,
                    message: None,
                }
            }
        },
    )
}

/// Sends one datagram.
pub(crate) async fn send(
    shared: &Shared,
    message: &OutboundMessage,
) -> Result<Sent, TransportError> {
    let (socket, local) = shared.udp_socket(message.local, message.destination)?;
    send_from(&socket, local, &message.bytes, message.destination).await
}

/// Sends one datagram from `socket`, bound at `local`.
pub(crate) async fn send_from(
    socket: &UdpSocket,
    local: SocketAddr,
    bytes: &[u8],
    destination: SocketAddr,
) -> Result<Sent, TransportError> {
    socket
        .send_to(bytes, destination)
        .await
        .map_err(|e| TransportError::io("send", e))?;
    trace!(size = bytes.len(), "UDP message sent");
    Ok(Sent {
        connection: None,
        local,
    })
}
