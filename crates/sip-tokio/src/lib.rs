//! # sip-tokio (skeleton)
//!
//! The asynchronous driver for [`sip-core`]: it will own the sockets (UDP, TCP,
//! TLS through rustls, WebSocket and secure WebSocket per RFC 7118), locate
//! servers per RFC 3263 (NAPTR, SRV, A/AAAA) behind a resolver trait, reuse
//! connections, answer CRLF keep-alives (RFC 5626 §4.4.1), and feed bytes and
//! time into the sans-IO `sip_core` endpoint.
//!
//! **Status:** not implemented yet; this crate exports nothing. The work is
//! tracked as the "SIP transactions, dialogs, digest auth, registration and
//! transports" capability. Only this crate, the other drivers and the
//! application crates may depend on tokio (enforced in `deny.toml`).
