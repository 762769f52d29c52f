//! # media-tokio (skeleton)
//!
//! The driver that will own RTP and RTCP sockets for `media-engine`: ports from
//! a range, rtcp-mux, symmetric RTP (RFC 4961) and remote-address latching that
//! a stray packet cannot hijack, optionally through a TURN relay.
//!
//! **Status:** not implemented yet; this crate exports nothing.
