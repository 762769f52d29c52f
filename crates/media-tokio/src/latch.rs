//! Remote-address latching: where to send, and when to follow the peer
//! to a new address.
//!
//! Media starts out going to the address in the peer's SDP. A peer behind
//! NAT sends from another address than it wrote, and a NAT may rebind the
//! peer's mapping mid-call; symmetric RTP (RFC 4961) lets this side follow
//! by sending to where the peer's packets come from. Following blindly
//! would let anyone who can send one datagram steal the call's media, so
//! [`RemoteLatch`] switches only on this rule:
//!
//! > A new source address becomes the remote address after
//! > [`required`](RemoteLatch::new) consecutive **genuine** datagrams from
//! > it, with no genuine datagram from the current address in between and
//! > no refused one from the new address. The address the SDP names is
//! > trusted: one genuine datagram from it brings the remote address back
//! > at once.
//!
//! "Genuine" is the stream's verdict
//! ([`Received::is_genuine`](media_engine::stream::Received::is_genuine)):
//! with SRTP, the packet authenticated (and was no replay), which a third
//! party cannot forge; with plain RTP, it carries the peer's SSRC, which
//! anyone on the path can read, so plain RTP is only as safe as the path.
//! Before any packet came from the current address, no SSRC is known: a
//! plain packet from elsewhere then counts as genuine for its address but
//! is neither played nor taken as the peer's SSRC until the address moves
//! there, so a stray packet cannot lock out a peer behind NAT. Stray
//! packets that win the race before a peer's first one (RTP bleed) hold
//! the flow only until the peer sends from its SDP address, whose packets
//! are taken as the peer's whatever SSRC was seen before; or, when that
//! address is unreachable (NAT), until they have been silent for two
//! seconds: in the first ten seconds of the media, the channel then counts
//! plain RTP with another SSRC as genuine for latching and, once moved,
//! takes the newcomer's SSRC as the peer's.

use std::net::SocketAddr;

/// Where one socket's datagrams go, and the count towards a switch. See
/// the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteLatch {
    current: SocketAddr,
    signalled: SocketAddr,
    candidate: Option<(SocketAddr, u32)>,
    required: u32,
    switches: u64,
}

impl RemoteLatch {
    /// Starts at `initial` (the SDP address); switching takes `required`
    /// consecutive genuine datagrams (at least 1).
    pub fn new(initial: SocketAddr, required: u32) -> Self {
        RemoteLatch {
            current: initial,
            signalled: initial,
            candidate: None,
            required: required.max(1),
            switches: 0,
        }
    }

    /// Where to send now.
    pub fn current(&self) -> SocketAddr {
        self.current
    }

    /// Whether `from` is the current remote address.
    pub fn is_current(&self, from: SocketAddr) -> bool {
        from == self.current
    }

    /// Whether `from` is the address the SDP names, whose datagrams are
    /// the peer's (see the module documentation).
    pub fn is_signalled(&self, from: SocketAddr) -> bool {
        from == self.signalled
    }

    /// How many times the address switched.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Records a datagram from `from` and whether it was genuine; returns
    /// `true` when this datagram moved the remote address to `from`.
    pub fn observe(&mut self, from: SocketAddr, genuine: bool) -> bool {
        if from == self.current {
            if genuine {
                self.candidate = None;
            }
            return false;
        }
        if !genuine {
            if self.candidate.is_some_and(|(addr, _)| addr == from) {
                self.candidate = None;
            }
            return false;
        }
        if from == self.signalled {
            self.current = from;
            self.candidate = None;
            self.switches += 1;
            return true;
        }
        let count = match self.candidate {
            Some((addr, n)) if addr == from => n + 1,
            _ => 1,
        };
        if count >= self.required {
            self.current = from;
            self.candidate = None;
            self.switches += 1;
            true
        } else {
            self.candidate = Some((from, count));
            false
        }
    }

    /// Starts over at `address`, as when a new SDP names another address.
    pub fn reset(&mut self, address: SocketAddr) {
        self.current = address;
        self.signalled = address;
        self.candidate = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn rfc4961_a_stray_datagram_never_moves_the_flow() {
        let mut latch = RemoteLatch::new(addr(4000), 3);
        for _ in 0..100 {
            assert!(!latch.observe(addr(6666), false));
        }
        assert!(!latch.observe(addr(6666), true));
        assert_eq!(latch.current(), addr(4000));
        assert_eq!(latch.switches(), 0);
    }

    #[test]
    fn rfc4961_three_genuine_datagrams_in_a_row_move_the_flow() {
        let mut latch = RemoteLatch::new(addr(4000), 3);
        assert!(!latch.observe(addr(5000), true));
        assert!(!latch.observe(addr(5000), true));
        assert!(latch.observe(addr(5000), true));
        assert_eq!(latch.current(), addr(5000));
        assert_eq!(latch.switches(), 1);
        // Another address is a stranger again...
        assert!(!latch.observe(addr(6000), true));
        assert_eq!(latch.current(), addr(5000));
        // ...but the SDP address is the peer's: one genuine datagram from
        // it brings the flow back.
        assert!(latch.observe(addr(4000), true));
        assert_eq!(latch.current(), addr(4000));
        assert_eq!(latch.switches(), 2);
        assert!(!latch.observe(addr(5000), false));
        assert_eq!(latch.current(), addr(4000));
    }

    #[test]
    fn the_run_restarts_on_the_current_address_or_a_refused_datagram() {
        let mut latch = RemoteLatch::new(addr(4000), 3);
        latch.observe(addr(5000), true);
        latch.observe(addr(5000), true);
        latch.observe(addr(4000), true); // the peer is still where it was
        latch.observe(addr(5000), true);
        latch.observe(addr(5000), true);
        latch.observe(addr(5000), false); // a forgery from the newcomer
        latch.observe(addr(5000), true);
        latch.observe(addr(6000), true); // someone else
        latch.observe(addr(5000), true);
        assert_eq!(latch.current(), addr(4000));
        // A refused datagram from the current address does not help a
        // candidate either way.
        latch.observe(addr(5000), true);
        latch.observe(addr(4000), false);
        assert!(latch.observe(addr(5000), true));
    }

    #[test]
    fn reset_follows_a_new_sdp_address() {
        let mut latch = RemoteLatch::new(addr(4000), 3);
        latch.observe(addr(5000), true);
        latch.reset(addr(7000));
        assert_eq!(latch.current(), addr(7000));
        latch.observe(addr(5000), true);
        latch.observe(addr(5000), true);
        assert_eq!(latch.current(), addr(7000));
    }
}
