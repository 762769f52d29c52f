//! # sip-tokio
//!
//! The network side of the softphone's SIP stack, on tokio: UDP, TCP, TLS,
//! WebSocket and secure WebSocket (RFC 7118) transports, connection reuse,
//! CRLF keep-alives (RFC 5626 §4.4.1) and server location (RFC 3263).
//!
//! It moves [`sip_core::Message`]s and bytes between the network and a
//! channel, and nothing more. It is **not** the transaction layer: it keeps
//! no transaction state, retransmits nothing, does not rewrite Via headers
//! and answers no request. The sans-IO endpoint of `sip-core` does all of
//! that; a small loop feeds it what this crate receives and hands this crate
//! what it wants sent.
//!
//! ## The run loop
//!
//! [`Transports::new`] returns the handle and the receiver of [`Incoming`]
//! events; [`Transports::bind`] opens listeners; [`Transports::send`] sends.
//!
//! ```
//! use sip_core::Message;
//! use sip_tokio::{IncomingEvent, ListenerOptions, OutboundMessage, TransportConfig,
//!     TransportKind, Transports};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let any_port = "127.0.0.1:0".parse()?;
//! let (server, mut server_rx) = Transports::new(TransportConfig::default());
//! let server_addr = server.bind(TransportKind::Udp, any_port, ListenerOptions::new()).await?;
//! let (client, mut client_rx) = Transports::new(TransportConfig::default());
//! client.bind(TransportKind::Udp, any_port, ListenerOptions::new()).await?;
//!
//! let options = Message::request(sip_core::Method::Options, "sip:bob@127.0.0.1")
//!     .header("Via", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1;rport")?
//!     .header("From", "<sip:alice@example.com>;tag=1")?
//!     .header("To", "<sip:bob@example.com>")?
//!     .header("Call-ID", "doc-1")?
//!     .header("CSeq", "1 OPTIONS")?
//!     .header("Max-Forwards", "70")?
//!     .build()?;
//! client.send(OutboundMessage::from_message(TransportKind::Udp, server_addr, &options)).await?;
//!
//! // The server's loop: hand messages to the core, send what it answers.
//! let incoming = server_rx.recv().await.ok_or("closed")?;
//! if let IncomingEvent::Message(request) = &incoming.event {
//!     // The core adds received/rport from `incoming.remote` (RFC 3581).
//!     let ok = Message::response_to(request, 200, "OK")?.build()?;
//!     server.send(incoming.reply(ok.to_bytes())).await?;
//! }
//!
//! let answer = client_rx.recv().await.ok_or("closed")?;
//! assert!(matches!(answer.event, IncomingEvent::Message(m) if m.status() == Some(200)));
//! # Ok(())
//! # }
//! ```
//!
//! [`Driver`] is that loop for `sip-core`'s sans-IO endpoint. It reads the
//! UDP sockets itself, in the task that awaits [`Driver::next`]: a datagram
//! goes from the socket through the parser into the endpoint, and the
//! answers out on the same socket, without a task switch or a channel in
//! between. Once a driver exists, datagrams no longer come through the
//! [`Incoming`] channel (everything from connections still does).
//!
//! ## What comes in
//!
//! Every [`Incoming`] names its transport, local and remote address, and for
//! connections a [`ConnectionId`]. Its [`IncomingEvent`] is one of:
//!
//! - `Message`: a parsed message, untouched;
//! - `BadMessage`: input that did not parse. The layer answers nothing;
//!   the core answers a request 400 when the lines a response needs are
//!   readable (the driver hands it a connection's message with its bytes).
//!   Over a stream, a framing error (no or a broken Content-Length, a
//!   message over [`ParseLimits::max_message_size`](sip_core::ParseLimits))
//!   also closes the connection, while a well-framed message that fails to
//!   parse is skipped;
//! - `Pong`: a keep-alive answer;
//! - `ConnectionClosed` with a [`CloseReason`];
//! - `TransportError`: a UDP receive error or a failed inbound handshake.
//!
//! ## UDP and RFC 3581
//!
//! Datagrams are parsed with [`Framing::Datagram`](sip_core::Framing). The
//! layer does not add `received` or `rport` to the top Via of a request:
//! [`Incoming::remote`] is the datagram's source address, and the core adds
//! them. Responses go where [`OutboundMessage::destination`] says;
//! [`Incoming::reply`] picks the source address and the socket the request
//! arrived on (RFC 3581 §4). Choosing TCP for a request over the path MTU
//! (RFC 3261 §18.1.1) is the core's decision.
//!
//! ## Connections
//!
//! TCP and TLS are byte streams split by
//! [`StreamDecoder`](sip_core::StreamDecoder); over WS and WSS each
//! WebSocket message (text or binary) is one SIP message, and the handshake
//! requires the `sip` subprotocol in both directions. A send reuses the
//! named connection, else any open connection of the kind to or from the
//! destination (an inbound connection from that address too, RFC 3261 §18),
//! else opens one. For TLS and WSS with a server name, only a connection
//! verified for that name is reused.
//!
//! Keep-alives: a double CRLF from the peer is answered with a single CRLF;
//! [`Transports::ping`] sends a double CRLF (a ping frame on WebSocket) and
//! the pong arrives as [`IncomingEvent::Pong`].
//!
//! Limits, all in [`TransportConfig`] and [`ListenerOptions`]: message size
//! and header count per listener (which also bound the bytes buffered per
//! connection), a cap on open connections, an idle timeout, a handshake
//! timeout, and a read timeout that runs from the first byte of a message
//! until its last, so a peer that trickles bytes is cut off.
//!
//! ## TLS
//!
//! rustls with the aws-lc-rs provider. Clients verify the server's chain
//! against the system's roots ([`TlsClientConfig::with_system_roots`]) or a
//! given CA ([`TlsClientConfig::with_ca_file`]) and the name in
//! [`OutboundMessage::server_name`] (sent as SNI), or the destination's IP
//! address without one. There is no switch to skip verification. Servers
//! present a PEM certificate chain and key ([`TlsServerConfig::from_pem_files`]).
//!
//! ## Locating servers
//!
//! [`ServerLocator::locate`] turns a SIP URI into ordered [`Target`]s per
//! RFC 3263 (NAPTR, SRV, A/AAAA; numeric hosts and explicit ports
//! short-circuit; `sips` means TLS). DNS sits behind the [`Resolver`] trait:
//! [`HickoryResolver`] asks the system's DNS servers, [`StaticResolver`]
//! answers from fixed records in tests.
//!
//! ## Time model
//!
//! The tasks read tokio's clock only (`tokio::time::Instant`, `sleep_until`,
//! `timeout`), so `#[tokio::test(start_paused = true)]` controls every
//! timeout of this crate.
//!
//! ## Logging
//!
//! `tracing` spans per listener (`sip_listener`) and per connection
//! (`sip_connection`, with its id and transport). Nothing personal is logged
//! at info level or above: no message text, no addresses. Debug events carry
//! methods, status codes, sizes and parse error kinds.
//!
//! ## Feature flags
//!
//! None.

mod connection;
mod driver;
mod hickory;
mod resolve;
mod tls;
mod transport;
mod udp;

pub use driver::{Driver, DriverEvent, core_transport, driver_transport, now};
pub use hickory::HickoryResolver;
pub use resolve::{
    BoxFuture, NaptrRecord, ResolveError, Resolver, ServerLocator, SrvRecord, StaticResolver,
    Target, order_srv,
};
pub use tls::{TlsClientConfig, TlsConfigError, TlsServerConfig};
pub use transport::{
    CloseReason, ConnectionId, ConnectionInfo, Incoming, IncomingEvent, ListenerInfo,
    ListenerOptions, OutboundMessage, Sent, TransportConfig, TransportError, TransportKind,
    Transports,
};
