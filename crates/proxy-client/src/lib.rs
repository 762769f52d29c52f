//! # proxy-client
//!
//! The client side of reaching a PBX through a relay proxy, without a VPN:
//!
//! | module | what | RFC |
//! |---|---|---|
//! | [`outbound`] | sans-IO [`FlowManager`](outbound::FlowManager): flows to one or more proxies, keep-alives, fail-over, the §4.5 back-off; `+sip.instance`/`reg-id`/`ob` Contact helpers | RFC 5626 |
//! | [`outbound_client`] | the tokio driver: flows over TCP, TLS, WS, WSS on sip-tokio, REGISTER with digest auth, push, incoming requests | RFC 5626, RFC 7118 |
//! | [`push`] | `pn-provider`/`pn-prid`/`pn-param` Contact URI parameters, token changes, 555 | RFC 8599 |
//! | [`InstanceId`] | the installation's UUID URN | RFC 5626 §4.1 |
//! | [`stun`] | STUN messages, MESSAGE-INTEGRITY, FINGERPRINT, ChannelData | RFC 8489 |
//! | [`turn`] | sans-IO [`TurnClient`](turn::TurnClient): Allocate (long-term and REST credentials), Refresh, CreatePermission, ChannelBind, Send/Data | RFC 8656 |
//! | [`turn_socket`] | [`TurnSocket`](turn_socket::TurnSocket): `send_to`/`recv_from` through a TURN relay on tokio, reached over UDP, TCP or TLS | RFC 8656 |
//!
//! It is not a user agent: calls, dialogs and media stay with the caller.
//! The outbound client hands incoming requests over and registers; the
//! TURN socket moves datagrams. docs/relay.md explains the deployment
//! (Kamailio in front of the PBX, coturn for media).
//!
//! ## The run loop of a sans-IO core
//!
//! Both cores take time as an argument and do no I/O. A driver feeds them
//! and drains them after every input:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use proxy_client::outbound::{FlowAction, FlowManager, OutboundConfig, ProxyTarget};
//! use rand::{SeedableRng, rngs::StdRng};
//! use sip_core::endpoint::Transport;
//!
//! let proxy = ProxyTarget::new(Transport::Tls, "192.0.2.10:5061".parse().unwrap());
//! let mut flows = FlowManager::new(OutboundConfig::new(vec![proxy]), StdRng::seed_from_u64(1)).unwrap();
//! let mut now = Instant::now();
//! flows.start(now);
//! for _ in 0..3 {
//!     while let Some(action) = flows.poll_action() {
//!         match action {
//!             FlowAction::Connect { flow, .. } => flows.handle_connect_failed(now, flow), // nobody there
//!             _ => {}
//!         }
//!     }
//!     let Some(next) = flows.poll_timeout() else { break };
//!     now = next;
//!     flows.handle_timeout(now);
//! }
//! assert_eq!(flows.proxy_failures(), [3]); // three attempts, backing off in between
//! ```
//!
//! ## Time model
//!
//! The cores (`outbound`, `push`, `stun`, `turn`) read no clock; `clippy.toml`
//! forbids it. Jitter and transaction IDs come from an injected RNG, so tests
//! with a fixed RNG get exact schedules. The drivers read tokio's clock, so
//! `#[tokio::test(start_paused = true)]` controls them; only
//! [`turn_socket::rest_credentials`] reads the wall clock (for the expiry in
//! the REST user name).
//!
//! ## Feature flags
//!
//! | flag | default | what |
//! |---|---|---|
//! | `tokio` | on | [`outbound_client`] and [`turn_socket`] (tokio, sip-tokio). Off: only the sans-IO cores. |

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
