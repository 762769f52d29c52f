//! RTP and RTCP sockets from a port range.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rand::Rng;
use thiserror::Error;
use tokio::net::UdpSocket;
use tracing::{debug, trace};

use crate::relay::RelaySocket;

/// An inclusive range of UDP ports for media.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// The ports `first..=last`. The range must hold an even port, and room
    /// for its odd neighbour when RTCP is not multiplexed.
    pub fn new(first: u16, last: u16) -> Result<Self, BindError> {
        let invalid = |reason| BindError::InvalidRange {
            first,
            last,
            reason,
        };
        if first == 0 {
            return Err(invalid("port 0 is not a port"));
        }
        if first > last {
            return Err(invalid("first port above last"));
        }
        if first == last && first % 2 == 1 {
            return Err(invalid("no even port"));
        }
        Ok(PortRange { first, last })
    }

    /// The first port.
    pub fn first(self) -> u16 {
        self.first
    }

    /// The last port.
    pub fn last(self) -> u16 {
        self.last
    }

    /// Even ports usable for RTP: with separate RTCP, the next port must
    /// be in the range too.
    fn rtp_ports(self, rtcp_mux: bool) -> Vec<u16> {
        let start = self.first + self.first % 2;
        (u32::from(start)..=u32::from(self.last))
            .step_by(2)
            .filter(|&p| rtcp_mux || p < u32::from(self.last))
            .filter_map(|p| u16::try_from(p).ok())
            .collect()
    }
}

impl Default for PortRange {
    /// 16384 to 32767, the range many PBXs and phones use for RTP.
    fn default() -> Self {
        PortRange {
            first: 16384,
            last: 32767,
        }
    }
}

/// Why sockets could not be bound.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BindError {
    /// The port range cannot give an RTP port.
    #[error("port range {first}-{last} is unusable: {reason}")]
    InvalidRange {
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// Every usable port of the range is taken.
    #[error("no free port pair in {first}-{last}: {tried} tried")]
    RangeExhausted {
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
        /// RTP ports tried.
        tried: usize,
    },
    /// Binding failed for a reason other than a taken port (an address
    /// that is not local, for instance).
    #[error("binding {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
}

/// The sockets of one audio stream: UDP with RTP on an even port and,
/// unless RTCP is multiplexed, RTCP on the next port (RFC 3550 §11); or a
/// [`RelaySocket`] carrying both.
#[derive(Clone, Debug)]
pub struct MediaSockets {
    transport: Transport,
    rtp_addr: SocketAddr,
    rtcp_addr: SocketAddr,
}

/// Where datagrams really go.
#[derive(Clone, Debug)]
pub(crate) enum Transport {
    /// Local UDP sockets.
    Udp {
        rtp: Arc<UdpSocket>,
        rtcp: Option<Arc<UdpSocket>>,
    },
    /// Everything through one relay.
    Relay(Arc<dyn RelaySocket>),
}

impl MediaSockets {
    /// Binds on `ip` (IPv4 or IPv6) an even port of `range`, and the next
    /// port for RTCP unless `rtcp_mux`. Ports are tried from a random
    /// starting point, each once; taken ports are skipped.
    ///
    /// Bind with `rtcp_mux = false` unless the peer is known to accept
    /// rtcp-mux: the RTCP socket is then there if the answer refuses it.
    pub async fn bind(ip: IpAddr, range: PortRange, rtcp_mux: bool) -> Result<Self, BindError> {
        let ports = range.rtp_ports(rtcp_mux);
        if ports.is_empty() {
            return Err(BindError::InvalidRange {
                first: range.first,
                last: range.last,
                reason: "no even port with room for RTCP",
            });
        }
        let start = rand::rng().random_range(0..ports.len());
        for (tried, &port) in ports
            .iter()
            .cycle()
            .skip(start)
            .take(ports.len())
            .enumerate()
        {
            let rtp_addr = SocketAddr::new(ip, port);
            let Some(rtp) = bind_one(rtp_addr).await? else {
                continue;
            };
            let rtcp = if rtcp_mux {
                None
            } else {
                match bind_one(SocketAddr::new(ip, port + 1)).await? {
                    Some(socket) => Some(socket),
                    None => continue,
                }
            };
            let rtcp_addr = rtcp.as_ref().map_or(Ok(rtp_addr), |s| s.local_addr());
            let rtcp_addr = rtcp_addr.map_err(|source| BindError::Io {
                addr: rtp_addr,
                source,
            })?;
            debug!(port, tries = tried + 1, rtcp_mux, "media sockets bound");
            return Ok(MediaSockets {
                transport: Transport::Udp {
                    rtp: Arc::new(rtp),
                    rtcp: rtcp.map(Arc::new),
                },
                rtp_addr,
                rtcp_addr,
            });
        }
        Err(BindError::RangeExhausted {
            first: range.first,
            last: range.last,
            tried: ports.len(),
        })
    }

    /// Media through a relay: RTP and RTCP both leave from and arrive at
    /// its relayed address, so the SDP should offer rtcp-mux (a peer that
    /// refuses it sends RTCP to the next port, which the relay does not
    /// have; RTP is unaffected).
    pub fn relayed(relay: Arc<dyn RelaySocket>) -> Self {
        let addr = relay.relayed_addr();
        MediaSockets {
            transport: Transport::Relay(relay),
            rtp_addr: addr,
            rtcp_addr: addr,
        }
    }

    /// The local RTP address: the port to write in SDP.
    pub fn rtp_addr(&self) -> SocketAddr {
        self.rtp_addr
    }

    /// The local RTCP address (the RTP address when multiplexed).
    pub fn rtcp_addr(&self) -> SocketAddr {
        self.rtcp_addr
    }

    /// Whether there is no separate RTCP socket (always so on a relay).
    pub fn is_rtcp_mux(&self) -> bool {
        self.rtcp_socket().is_none()
    }

    /// The RTP socket; `None` on a relay.
    pub fn rtp_socket(&self) -> Option<&Arc<UdpSocket>> {
        match &self.transport {
            Transport::Udp { rtp, .. } => Some(rtp),
            Transport::Relay(_) => None,
        }
    }

    /// The RTCP socket, if RTCP has its own UDP port.
    pub fn rtcp_socket(&self) -> Option<&Arc<UdpSocket>> {
        match &self.transport {
            Transport::Udp { rtcp, .. } => rtcp.as_ref(),
            Transport::Relay(_) => None,
        }
    }

    /// The relay, when media goes through one.
    pub fn relay(&self) -> Option<&Arc<dyn RelaySocket>> {
        match &self.transport {
            Transport::Relay(relay) => Some(relay),
            Transport::Udp { .. } => None,
        }
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }
}

/// Binds one socket; `None` when the port is taken.
async fn bind_one(addr: SocketAddr) -> Result<Option<UdpSocket>, BindError> {
    match UdpSocket::bind(addr).await {
        Ok(socket) => Ok(Some(socket)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
            ) =>
        {
            trace!(port = addr.port(), "port taken");
            Ok(None)
        }
        Err(source) => Err(BindError::Io { addr, source }),
    }
}

/// The form to compare a datagram's source in: an IPv4-mapped IPv6
/// address (from a dual-stack socket) as plain IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The form to send to from `socket_addr`'s family: IPv4 as IPv4-mapped
/// IPv6 from an IPv6 socket.
pub(crate) fn destination_for(local: SocketAddr, remote: SocketAddr) -> SocketAddr {
    match (local.ip(), remote.ip()) {
        (IpAddr::V6(_), IpAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), remote.port())
        }
        _ => remote,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    #[test]
    fn ranges_need_an_even_port() {
        assert!(PortRange::new(0, 10).is_err());
        assert!(PortRange::new(10, 9).is_err());
        assert!(PortRange::new(11, 11).is_err());
        assert_eq!(PortRange::new(11, 16).unwrap().rtp_ports(false), [12, 14]);
        assert_eq!(
            PortRange::new(11, 16).unwrap().rtp_ports(true),
            [12, 14, 16]
        );
        assert_eq!(
            PortRange::new(65534, 65535).unwrap().rtp_ports(false),
            [65534]
        );
    }

    #[tokio::test]
    async fn rfc3550_11_rtp_on_an_even_port_rtcp_on_the_next() {
        for ip in [V4, V6] {
            let sockets = MediaSockets::bind(ip, PortRange::new(40000, 49999).unwrap(), false)
                .await
                .unwrap();
            let port = sockets.rtp_addr().port();
            assert_eq!(port % 2, 0);
            assert_eq!(sockets.rtcp_addr(), SocketAddr::new(ip, port + 1));
            assert_eq!(
                sockets.rtp_socket().unwrap().local_addr().unwrap(),
                sockets.rtp_addr()
            );
            assert!(!sockets.is_rtcp_mux());

            let muxed = MediaSockets::bind(ip, PortRange::new(40000, 49999).unwrap(), true)
                .await
                .unwrap();
            assert_eq!(muxed.rtcp_addr(), muxed.rtp_addr());
            assert!(muxed.rtcp_socket().is_none());
        }
    }

    #[tokio::test]
    async fn taken_ports_are_skipped_until_the_range_is_exhausted() {
        // Find a free pair, then take its RTP port and ask for the range
        // around it: the other pair is chosen.
        let first = MediaSockets::bind(V4, PortRange::new(50000, 59997).unwrap(), false)
            .await
            .unwrap();
        let port = first.rtp_addr().port();
        let range = PortRange::new(port, port + 3).unwrap();
        let mut bound = Vec::new();
        loop {
            match MediaSockets::bind(V4, range, false).await {
                Ok(sockets) => {
                    assert!([port, port + 2].contains(&sockets.rtp_addr().port()));
                    assert_ne!(sockets.rtp_addr().port(), port, "a taken port was bound");
                    bound.push(sockets);
                    assert!(bound.len() <= 1, "only one pair was free");
                }
                Err(BindError::RangeExhausted { tried, .. }) => {
                    assert_eq!(tried, 2);
                    break;
                }
                Err(other) => panic!("{other}"),
            }
        }
    }

    #[tokio::test]
    async fn an_address_that_is_not_local_is_an_error() {
        let not_local = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let result = MediaSockets::bind(not_local, PortRange::default(), true).await;
        assert!(matches!(result, Err(BindError::Io { .. })), "{result:?}");
    }

    #[test]
    fn mapped_addresses_compare_as_ipv4() {
        let v4: SocketAddr = "192.0.2.1:5004".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:5004".parse().unwrap();
        assert_eq!(canonical(mapped), v4);
        let local6: SocketAddr = "[::]:4000".parse().unwrap();
        let local4: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        assert_eq!(destination_for(local6, v4), mapped);
        assert_eq!(destination_for(local4, v4), v4);
    }
}
