//! # proxy-client
//!
//! The client side of reaching a PBX through a relay proxy: SIP outbound flows
//! (RFC 5626) over TLS, TCP and secure WebSocket with keep-alives, fail-over and
//! back-off; push registration (RFC 8599); and TURN allocations (RFC 8656) for
//! media.

mod instance;
pub mod outbound;
#[cfg(feature = "tokio")]
pub mod outbound_client;
pub mod push;
pub mod stun;
pub mod turn;
#[cfg(feature = "tokio")]
pub mod turn_socket;

pub use instance::{InstanceId, InstanceIdError};

/// tokio's clock as the `std` instant the cores take, so paused tests control it.
#[cfg(feature = "tokio")]
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
