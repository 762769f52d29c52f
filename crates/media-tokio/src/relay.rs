//! A relayed media socket: RTP and RTCP through a relay (a TURN
//! allocation, RFC 8656) instead of a local UDP port.
//!
//! The relay is a trait so this crate needs no TURN client: the phone
//! implements it for its own. Peers see one relayed transport address
//! for both RTP and RTCP; RTCP goes to the peer's RTCP address through
//! the same relay.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

/// A boxed future that can move between threads.
pub type RelayFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A datagram socket whose public address is on a relay.
///
/// `recv_from` must be cancel-safe: the audio task polls it in a
/// `select!` and drops it when another branch wins.
pub trait RelaySocket: Debug + Send + Sync {
    /// The address peers send to: the one to write in SDP.
    fn relayed_addr(&self) -> SocketAddr;

    /// Lets `peer` send to us (a TURN permission or channel) and waits
    /// for the relay to confirm.
    fn permit(&self, peer: SocketAddr) -> RelayFuture<'_, io::Result<()>>;

    /// Sends one datagram to `peer` through the relay.
    fn send_to<'a>(
        &'a self,
        data: &'a [u8],
        peer: SocketAddr,
    ) -> RelayFuture<'a, io::Result<usize>>;

    /// The next datagram from a peer: its length (cut to `buf`) and the
    /// peer's address.
    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> RelayFuture<'a, io::Result<(usize, SocketAddr)>>;
}
