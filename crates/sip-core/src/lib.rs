//! # sip-core
//!
//! The SIP message layer of the softphone stack, with no I/O and no runtime:
//! a zero-copy parser over [`bytes::Bytes`], typed headers parsed lazily on
//! access, URIs (`sip`, `sips`, `tel`, any other scheme kept whole), a writer
//! and builder, and a stream decoder for TCP, TLS and WebSocket.
//!
//! Above the messages, as sans-IO state machines: the four transactions of
//! RFC 3261 §17 with RFC 6026 ([`transaction`]), the [`endpoint`] that
//! matches messages to them and handles CANCEL, rport/received and 100
//! Trying, [`dialog`]s with the 2xx/ACK exchange and glare back-off, digest
//! [`auth`] (client and verifier, MD5, SHA-256, SHA-512-256) and client
//! [`registration`]. The sockets live in `sip-tokio`.
//!
//! ## What parsing checks
//!
//! [`Message::parse`] splits a datagram into start line, headers and body and
//! enforces what every message must satisfy: CRLF line endings, a UTF-8 header
//! section, the mandatory headers (RFC 3261 §8.1.1), single From, To, Call-ID,
//! CSeq, Max-Forwards and Content-Length, CSeq below 2^31 with the request's
//! method, status codes 100-699, Max-Forwards up to 255, a Request-URI that
//! parses, and a Content-Length within the bytes received. Limits on message
//! size and header count come from [`ParseLimits`]. [`Message::validate`]
//! additionally parses every header this crate knows.
//!
//! Errors carry the line and column where the input went wrong:
//!
//! ```
//! use sip_core::Message;
//!
//! let err = Message::parse(&b"SIP/2.0 700 Odd\r\n\r\n"[..]).unwrap_err();
//! assert_eq!(err.to_string(), "status code out of range 100-699 at line 1, column 9");
//! ```
//!
//! ## Writing
//!
//! An unmodified message serialises back byte for byte; a modified one in
//! canonical form (full header names, unfolded values). Builders produce
//! canonical messages and check them like received ones.
//!
//! ```
//! use sip_core::{Message, Method};
//!
//! let bye = Message::request(Method::Bye, "sip:bob@192.0.2.4")
//!     .header("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKbye1")?
//!     .header("From", "<sip:alice@example.com>;tag=a")?
//!     .header("To", "<sip:bob@example.com>;tag=b")?
//!     .header("Call-ID", "c1@192.0.2.1")?
//!     .header("CSeq", "2 BYE")?
//!     .header("Max-Forwards", "70")?
//!     .build()?;
//! assert!(bye.to_bytes().ends_with(b"Content-Length: 0\r\n\r\n"));
//! # Ok::<(), sip_core::BuildError>(())
//! ```
//!
//! ## Time model
//!
//! Nothing here reads a clock or touches a socket; `clippy.toml` forbids it.
//!
//! ## Feature flags
//!
//! None.

pub mod auth;
pub mod dialog;
pub mod endpoint;
mod error;
mod grammar;
mod headers;
mod message;
mod name;
pub mod registration;
mod secret;
mod stream;
pub mod transaction;
mod uri;

pub use error::{ParseError, ParseErrorKind, Position};
pub use headers::{
    Auth, AuthParams, CSeq, Contact, ContentType, Event, NameAddr, ParamIter, Params, Replaces,
    RetryAfter, SessionExpires, SubscriptionState, TokenParams, Via,
};
pub use message::{
    BuildError, Framing, HeaderField, Message, ParseLimits, RequestBuilder, ResponseBuilder,
    StartLine,
};
pub use name::{HeaderName, Method};
pub use secret::Secret;
pub use stream::{StreamDecoder, StreamItem};
pub use uri::{AbsoluteUri, Host, SipScheme, SipUri, TelUri, Uri, UriHeaders, UriParams};
