//! Interop tests: every launcher started for real on 127.0.0.1.
//!
//! A peer that is not installed makes its tests fail with the apt package to
//! install; nothing is skipped. Every wait is bounded and every port is
//! picked free at launch, so the tests run in parallel.

#![allow(
    clippy::unwrap_used,
    reason = "shared test helpers fail the test loudly, like the tests themselves"
)]

mod baresip;
mod ca;
mod coturn;
mod kamailio;
mod process;
mod sipp;
mod slapd;
