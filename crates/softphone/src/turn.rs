//! Media through the configured TURN server: a [`TurnSocket`] from
//! proxy-client as media-tokio's [`RelaySocket`].

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use media_tokio::{RelayFuture, RelaySocket};
use proxy_client::turn::{TurnConfig, TurnCredentials};
use proxy_client::turn_socket::{TurnSocket, TurnTransport};
use sip_tokio::TlsClientConfig;

/// How long a call waits for an allocation before going without one.
const ALLOCATE_LIMIT: Duration = Duration::from_secs(5);

/// One call's TURN allocation.
#[derive(Debug)]
pub(crate) struct TurnRelay(TurnSocket);

impl RelaySocket for TurnRelay {
    fn relayed_addr(&self) -> SocketAddr {
        self.0.relayed_addr()
    }

    fn permit(&self, peer: SocketAddr) -> RelayFuture<'_, io::Result<()>> {
        Box::pin(async move { self.0.add_peer(peer).await.map_err(io::Error::other) })
    }

    fn send_to<'a>(
        &'a self,
        data: &'a [u8],
        peer: SocketAddr,
    ) -> RelayFuture<'a, io::Result<usize>> {
        // Media never waits for a stalled relay: a full queue drops the
        // datagram, as the network would.
        Box::pin(async move { self.0.try_send_to(data, peer).map_err(io::Error::other) })
    }

    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> RelayFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(async move { self.0.recv_from(buf).await.map_err(io::Error::other) })
    }
}

/// How the client reaches the TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerTransport {
    Udp,
    Tcp,
    Tls,
}

/// Where a `<turn><server>` points: `host:port`, `host`, or a `turn:` or
/// `turns:` URI (RFC 7065) with an optional `?transport=udp|tcp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TurnServer {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) transport: ServerTransport,
}

impl TurnServer {
    pub(crate) fn parse(server: &str) -> Result<TurnServer, String> {
        let server = server.trim();
        let lower = server.to_ascii_lowercase();
        let (rest, secure) = if lower.starts_with("turns:") {
            (&server[6..], true)
        } else if lower.starts_with("turn:") {
            (&server[5..], false)
        } else {
            (server, false)
        };
        let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
        let transport = match (query.to_ascii_lowercase().as_str(), secure) {
            ("" | "transport=udp", false) => ServerTransport::Udp,
            ("transport=tcp", false) => ServerTransport::Tcp,
            ("" | "transport=tcp", true) => ServerTransport::Tls,
            ("transport=udp", true) => {
                return Err(format!(
                    "{server:?}: turns: runs over TLS, not UDP (RFC 7065)"
                ));
            }
            (other, _) => return Err(format!("{server:?}: unknown parameter {other:?}")),
        };
        let (host, port) =
            split_host_port(hostport).ok_or_else(|| format!("{server:?} is not host[:port]"))?;
        Ok(TurnServer {
            host: host.to_owned(),
            port: port.unwrap_or(if secure { 5349 } else { 3478 }),
            transport,
        })
    }
}

/// Whether `<turn><server>` asks for TLS, so the phone needs its trust
/// settings loaded.
pub(crate) fn needs_tls(turn: &config_export::Turn) -> bool {
    TurnServer::parse(&turn.server).is_ok_and(|s| s.transport == ServerTransport::Tls)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            _ => (s, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    match port {
        Some(p) => Some((host, Some(p.parse().ok().filter(|&p| p != 0)?))),
        None => Some((host, None)),
    }
}

/// Allocates a relayed address on the configured server; `tls` is the
/// phone's trust for a `turns:` server (its certificate is verified for
/// the host name in the URI).
pub(crate) async fn allocate(
    turn: &config_export::Turn,
    tls: Option<&TlsClientConfig>,
) -> Result<TurnRelay, String> {
    let server = TurnServer::parse(&turn.server)?;
    let addr = crate::engine::resolve(&server.host, server.port).await?;
    let user = turn.user.as_deref().unwrap_or_default();
    let password = turn.password.as_ref().map_or("", |p| p.expose());
    let config = TurnConfig::new(addr, TurnCredentials::long_term(user, password));
    let (transport, what) = match server.transport {
        ServerTransport::Udp => (TurnTransport::Udp, "UDP"),
        ServerTransport::Tcp => (TurnTransport::Tcp, "TCP"),
        ServerTransport::Tls => {
            let tls = tls.ok_or("a turns: server needs the phone's TLS trust settings")?;
            (
                TurnTransport::Tls {
                    server_name: server.host.clone(),
                    tls: tls.clone(),
                },
                "TLS",
            )
        }
    };
    let socket = tokio::time::timeout(ALLOCATE_LIMIT, TurnSocket::allocate_over(transport, config))
        .await
        .map_err(|_| {
            format!("TURN server {addr} ({what}) did not answer within {ALLOCATE_LIMIT:?}")
        })?
        .map_err(|e| format!("TURN allocation on {addr} ({what}): {e}"))?;
    Ok(TurnRelay(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> Result<(String, u16, bool), String> {
        TurnServer::parse(s).map(|t| (t.host, t.port, t.transport == ServerTransport::Tcp))
    }

    #[test]
    fn rfc7065_server_forms() {
        assert_eq!(
            parsed("turn.example.org"),
            Ok(("turn.example.org".into(), 3478, false))
        );
        assert_eq!(
            parsed("127.0.0.1:3479"),
            Ok(("127.0.0.1".into(), 3479, false))
        );
        assert_eq!(
            parsed("turn:turn.example.org:443?transport=tcp"),
            Ok(("turn.example.org".into(), 443, true))
        );
        assert_eq!(parsed("TURN:[::1]:3480"), Ok(("::1".into(), 3480, false)));
        assert_eq!(parsed("turn:[::1]"), Ok(("::1".into(), 3478, false)));
        let tls = |s: &str| TurnServer::parse(s).map(|t| (t.port, t.transport));
        assert_eq!(
            tls("turns:turn.example.org"),
            Ok((5349, ServerTransport::Tls))
        );
        assert_eq!(
            tls("TURNS:turn.example.org:443?transport=tcp"),
            Ok((443, ServerTransport::Tls))
        );
        assert!(parsed("turns:turn.example.org?transport=udp").is_err());
        assert!(parsed("turn:host:0").is_err());
        assert!(parsed("turn:host:x").is_err());
        assert!(parsed("turn:host?transport=sctp").is_err());
        assert!(parsed("turn::3478").is_err());
    }
}
