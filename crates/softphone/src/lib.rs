//! # softphone (skeleton)
//!
//! The thin composition an integrator embeds: `Phone`, accounts with their
//! registration state, `Call` with hold, transfer and DTMF, an event stream,
//! call history in SQLite, and the privacy features (redacted logs, opt-in crash
//! reports, retention, export and erasure).
//!
//! **Status:** not implemented yet; this crate exports nothing.
