//! # testkit (skeleton)
//!
//! Development-only helpers: launchers for real peers on 127.0.0.1 with bounded
//! lifetimes (sipp, kamailio, baresip, slapd, coturn, an HTTPS server), a
//! simulated network (loss, delay, reorder, duplication) and audio checks.
//!
//! **Status:** not implemented yet; this crate exports nothing.
