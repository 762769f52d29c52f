//! Free ports on 127.0.0.1 and readiness checks.

use std::{
    collections::hash_map::RandomState,
    fs,
    hash::{BuildHasher, Hasher},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    ops::RangeInclusive,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    error::{PeerError, Result},
    process::PeerProcess,
};

/// The loopback address every peer binds to.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Ports handed out by this process, so two launchers in one test binary
/// never get the same one even before the first has bound it.
static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// A port that is free on 127.0.0.1 for both UDP and TCP (SIP listens on
/// both). The kernel picks it (bind to port 0); the sockets are released
/// before returning, so a peer can bind it next.
///
/// # Errors
///
/// [`PeerError::NoFreePort`] when 200 candidates were all taken.
pub fn free_port() -> Result<u16> {
    for _ in 0..200 {
        let Ok(udp) = UdpSocket::bind(SocketAddrV4::new(LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = udp.local_addr() else { continue };
        let port = addr.port();
        if TcpListener::bind(SocketAddrV4::new(LOCALHOST, port)).is_ok() && claim(&[port]) {
            return Ok(port);
        }
    }
    Err(PeerError::NoFreePort {
        what: "UDP+TCP port",
        attempts: 200,
    })
}

/// A contiguous range of `len` ports, each free for UDP on 127.0.0.1, below
/// the kernel's ephemeral range (for RTP).
///
/// # Errors
///
/// [`PeerError::NoFreePort`] when 200 random candidates were all taken.
pub fn free_udp_range(len: u16) -> Result<RangeInclusive<u16>> {
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    if len == 0 || len > 1000 {
        return Err(PeerError::InvalidArgument(format!(
            "port range length {len} not in 1..=1000"
        )));
    }
    for _ in 0..200 {
        let span = u64::from(HIGH - LOW - len);
        let start = LOW + (random() % span) as u16;
        let ports: Vec<u16> = (start..start + len).collect();
        let all_free = ports
            .iter()
            .all(|&p| UdpSocket::bind(SocketAddrV4::new(LOCALHOST, p)).is_ok());
        if all_free && claim(&ports) {
            return Ok(start..=start + len - 1);
        }
    }
    Err(PeerError::NoFreePort {
        what: "UDP port range",
        attempts: 200,
    })
}

/// Whether something listens on 127.0.0.1:`port` (or the wildcard address),
/// read from `/proc/net/{udp,tcp}`, without connecting to it.
#[must_use]
pub fn is_listening(protocol: Protocol, port: u16) -> bool {
    let (file, wanted_state) = match protocol {
        // UDP sockets that are bound but unconnected show state 07 (CLOSE).
        Protocol::Udp => ("/proc/net/udp", "07"),
        Protocol::Tcp => ("/proc/net/tcp", "0A"),
    };
    let Ok(table) = fs::read_to_string(file) else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(local), Some(_remote), Some(state)) =
            (fields.nth(1), fields.next(), fields.next())
        else {
            return false;
        };
        let Some((ip, hex_port)) = local.split_once(':') else {
            return false;
        };
        let loopback_or_any = ip == "0100007F" || ip == "00000000";
        loopback_or_any
            && u16::from_str_radix(hex_port, 16) == Ok(port)
            && state.eq_ignore_ascii_case(wanted_state)
    })
}

/// Whether a TCP connection to 127.0.0.1:`port` succeeds right now.
#[must_use]
pub fn tcp_connects(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddrV4::new(LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Polls `ready` every 50 ms until it returns true, the process exits
/// ([`PeerError::Exited`]) or `limit` passes ([`PeerError::NotReady`]); both
/// errors carry the log tail.
///
/// # Errors
///
/// As above, or whatever `ready` returns.
pub fn wait_until(
    process: &mut PeerProcess,
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if ready()? {
            return Ok(());
        }
        process.ensure_running()?;
        if start.elapsed() >= limit {
            return Err(PeerError::NotReady {
                peer: process.name().to_owned(),
                what: what.to_owned(),
                waited: limit,
                log_tail: process.log_tail(30),
            });
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the process's log contains `needle`.
///
/// # Errors
///
/// As [`wait_until`].
pub fn wait_for_log_line(process: &mut PeerProcess, needle: &str, limit: Duration) -> Result<()> {
    let path = process.log_path().to_path_buf();
    wait_until(process, &format!("log line `{needle}`"), limit, || {
        Ok(fs::read(&path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)))
    })
}

fn claim(ports: &[u16]) -> bool {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    if ports.iter().any(|p| handed_out.contains(p)) {
        return false;
    }
    handed_out.extend_from_slice(ports);
    true
}

pub(crate) fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
        UdpSocket::bind(SocketAddrV4::new(LOCALHOST, a)).unwrap();
        TcpListener::bind(SocketAddrV4::new(LOCALHOST, a)).unwrap();
    }

    #[test]
    fn free_range_has_the_requested_length() {
        let range = free_udp_range(10).unwrap();
        assert_eq!(range.clone().count(), 10);
        assert!(*range.start() >= 20_000 && *range.end() < 32_000);
    }

    #[test]
    fn listening_sockets_are_seen_in_proc() {
        let udp = UdpSocket::bind(SocketAddrV4::new(LOCALHOST, 0)).unwrap();
        let tcp = TcpListener::bind(SocketAddrV4::new(LOCALHOST, 0)).unwrap();
        let (u, t) = (
            udp.local_addr().unwrap().port(),
            tcp.local_addr().unwrap().port(),
        );
        assert!(is_listening(Protocol::Udp, u));
        assert!(is_listening(Protocol::Tcp, t));
        drop((udp, tcp));
        assert!(!is_listening(Protocol::Tcp, t));
    }
}
