//! coturn: a TURN relay (RFC 8656) on loopback, with long-term users or a
//! REST-API shared secret, and the relayed traffic read back from its log.

use std::{
    ffi::OsString,
    fs,
    net::SocketAddr,
    ops::RangeInclusive,
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    ca::TestCa,
    error::{PeerError, Result},
    net::{self, Protocol},
    process::{PeerProcess, SpawnSpec, WorkDir, find_binary},
};

/// The realm of [`CoturnBuilder::default`].
pub const TURN_REALM: &str = "example.test";

/// How clients authenticate. coturn accepts one of the two per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnAuth {
    /// Static long-term users: name and password.
    Users(Vec<(String, String)>),
    /// REST-style ephemeral credentials (`use-auth-secret`): user name
    /// `EXPIRY:USER`, password `base64(HMAC-SHA1(secret, username))`.
    RestSecret(String),
}

/// Configures a [`Coturn`].
#[derive(Debug, Clone)]
pub struct CoturnBuilder {
    auth: TurnAuth,
    realm: String,
    relay_ports: u16,
    tls: Option<(String, String)>,
    nonce_lifetime: Option<Duration>,
    lifetime: Duration,
    ready_timeout: Duration,
}

impl Default for CoturnBuilder {
    /// Users alice and bob (passwords `alice-secret`, `bob-secret`), realm
    /// [`TURN_REALM`], 20 relay ports, UDP and TCP only, 300 s lifetime.
    fn default() -> Self {
        Self {
            auth: TurnAuth::Users(vec![
                ("alice".into(), "alice-secret".into()),
                ("bob".into(), "bob-secret".into()),
            ]),
            realm: TURN_REALM.into(),
            relay_ports: 20,
            tls: None,
            nonce_lifetime: None,
            lifetime: Duration::from_secs(300),
            ready_timeout: Duration::from_secs(15),
        }
    }
}

impl CoturnBuilder {
    /// Replaces the users (static long-term credentials).
    #[must_use]
    pub fn with_users(mut self, users: &[(&str, &str)]) -> Self {
        self.auth = TurnAuth::Users(
            users
                .iter()
                .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
                .collect(),
        );
        self
    }

    /// REST-style ephemeral credentials with this shared secret, instead of
    /// static users.
    #[must_use]
    pub fn with_rest_secret(mut self, secret: &str) -> Self {
        self.auth = TurnAuth::RestSecret(secret.to_owned());
        self
    }

    /// The realm (default [`TURN_REALM`]).
    #[must_use]
    pub fn with_realm(mut self, realm: &str) -> Self {
        self.realm = realm.to_owned();
        self
    }

    /// How many relay ports to reserve (default 20).
    #[must_use]
    pub fn with_relay_ports(mut self, count: u16) -> Self {
        self.relay_ports = count.max(2);
        self
    }

    /// Also listens for TURN over TLS with the CA's server certificate.
    #[must_use]
    pub fn with_tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some((ca.server().cert_pem.clone(), ca.server().key_pem.clone()));
        self
    }

    /// Nonces go stale after this long, so clients see 438 Stale Nonce
    /// (coturn `stale-nonce`; off by default).
    #[must_use]
    pub fn with_nonce_lifetime(mut self, lifetime: Duration) -> Self {
        self.nonce_lifetime = Some(lifetime);
        self
    }

    /// Hard upper bound on the process's life (default 300 s).
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Starts turnserver and waits until its UDP and TCP (and TLS) ports listen.
    ///
    /// # Errors
    ///
    /// [`PeerError::NotInstalled`] (`turnserver`, package `coturn`),
    /// [`PeerError::InvalidArgument`] for a user, password, secret or realm
    /// with characters other than letters, digits, `-`, `_`, `.`, and the
    /// start and readiness errors of [`PeerProcess`].
    pub fn start(self) -> Result<Coturn> {
        let program = find_binary("turnserver", "coturn")?;
        let mut auth = String::new();
        let mut check = vec![self.realm.as_str()];
        match &self.auth {
            TurnAuth::Users(users) => {
                for (u, p) in users {
                    check.extend([u.as_str(), p.as_str()]);
                    auth.push_str(&format!("user={u}:{p}\n"));
                }
            }
            TurnAuth::RestSecret(secret) => {
                check.push(secret.as_str());
                auth.push_str(&format!("use-auth-secret\nstatic-auth-secret={secret}\n"));
            }
        }
        if let Some(bad) = check.iter().find(|s| !is_plain(s)) {
            return Err(PeerError::InvalidArgument(format!(
                "coturn setting {bad:?}: use letters, digits, '-', '_' and '.' only"
            )));
        }

        let dir = WorkDir::new("coturn")?;
        let port = net::free_port()?;
        let relay = net::free_udp_range(self.relay_ports)?;
        let tls_port = match self.tls {
            Some(_) => Some(net::free_port()?),
            None => None,
        };
        let mut extra = String::new();
        match (&self.tls, tls_port) {
            (Some((cert, key)), Some(tls_port)) => {
                let cert = dir.write("tls/server.cert.pem", cert)?;
                let key = dir.write("tls/server.key.pem", key)?;
                extra.push_str(&format!(
                    "tls-listening-port={tls_port}\ncert={}\npkey={}\n",
                    cert.display(),
                    key.display()
                ));
            }
            _ => extra.push_str("no-tls\n"),
        }
        if let Some(n) = self.nonce_lifetime {
            extra.push_str(&format!("stale-nonce={}\n", n.as_secs().max(1)));
        }
        let run_dir = dir.path().to_string_lossy().into_owned();
        let config = crate::shipped("coturn", "turnserver.conf")?
            .replace("@PORT@", &port.to_string())
            .replace("@MIN_PORT@", &relay.start().to_string())
            .replace("@MAX_PORT@", &relay.end().to_string())
            .replace("@REALM@", &self.realm)
            .replace("@RUN_DIR@", &run_dir)
            .replace("@AUTH@\n", &auth)
            .replace("@EXTRA@\n", &extra);
        let config = dir.write("turnserver.conf", config)?;
        let args: Vec<OsString> = vec!["-c".into(), config.into()];
        let mut process = PeerProcess::spawn(SpawnSpec {
            name: "coturn",
            program,
            args,
            work_dir: dir.path(),
            env: Vec::new(),
            lifetime: self.lifetime,
        })?;
        net::wait_until(
            &mut process,
            "the UDP and TCP listeners",
            self.ready_timeout,
            || Ok(net::is_listening(Protocol::Udp, port) && net::is_listening(Protocol::Tcp, port)),
        )?;
        if let Some(tls_port) = tls_port {
            net::wait_until(&mut process, "the TLS listener", self.ready_timeout, || {
                Ok(net::is_listening(Protocol::Tcp, tls_port))
            })?;
        }
        Ok(Coturn {
            process,
            dir,
            port,
            tls_port,
            relay,
            realm: self.realm,
            auth: self.auth,
        })
    }
}

/// Packets and bytes one side of a TURN session moved, as coturn logs them
/// when the session ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnUsage {
    /// Packets received (`rp`).
    pub received_packets: u64,
    /// Bytes received (`rb`).
    pub received_bytes: u64,
    /// Packets sent (`sp`).
    pub sent_packets: u64,
    /// Bytes sent (`sb`).
    pub sent_bytes: u64,
}

/// One TURN session as read from coturn's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnSession {
    /// coturn's session number.
    pub id: String,
    /// The user name of the allocation (empty before authentication).
    pub username: String,
    /// Whether an allocation was made in it.
    pub allocated: bool,
    /// Client side: what the client sent to and got from the server
    /// (logged when the session ends).
    pub client: Option<TurnUsage>,
    /// Peer side: what went between the relayed address and peers (logged
    /// when the session ends). Non-zero only if traffic was relayed.
    pub peer: Option<TurnUsage>,
}

/// A running coturn. Stopped on drop.
#[derive(Debug)]
pub struct Coturn {
    process: PeerProcess,
    dir: WorkDir,
    port: u16,
    tls_port: Option<u16>,
    relay: RangeInclusive<u16>,
    realm: String,
    auth: TurnAuth,
}

impl Coturn {
    /// A builder with the defaults (see [`CoturnBuilder::default`]).
    #[must_use]
    pub fn builder() -> CoturnBuilder {
        CoturnBuilder::default()
    }

    /// Starts with the defaults.
    ///
    /// # Errors
    ///
    /// As [`CoturnBuilder::start`].
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// 127.0.0.1:port for TURN over UDP and TCP.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((net::LOCALHOST, self.port))
    }

    /// 127.0.0.1:port for TURN over TLS, when enabled.
    #[must_use]
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port.map(|p| SocketAddr::from((net::LOCALHOST, p)))
    }

    /// The relay port range.
    #[must_use]
    pub fn relay_ports(&self) -> RangeInclusive<u16> {
        self.relay.clone()
    }

    /// The realm.
    #[must_use]
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// How clients authenticate.
    #[must_use]
    pub fn auth(&self) -> &TurnAuth {
        &self.auth
    }

    /// The sessions coturn logged so far, in order of first appearance.
    #[must_use]
    pub fn sessions(&self) -> Vec<TurnSession> {
        let log = fs::read(self.process.log_path()).unwrap_or_default();
        parse_sessions(&String::from_utf8_lossy(&log))
    }

    /// How many requests coturn refused for wrong or unknown credentials.
    #[must_use]
    pub fn auth_failures(&self) -> usize {
        let log = fs::read(self.process.log_path()).unwrap_or_default();
        String::from_utf8_lossy(&log)
            .lines()
            .filter(|l| {
                l.contains("check_stun_auth")
                    && (l.contains("incorrect") || l.contains("Cannot find credentials"))
            })
            .count()
    }

    /// Waits until a session of `username` has ended and returns the
    /// sessions of that user that ended so far (their usage is logged then).
    ///
    /// # Errors
    ///
    /// [`PeerError::Timeout`] when none ended within `limit`.
    pub fn wait_for_ended_sessions(
        &self,
        username: &str,
        limit: Duration,
    ) -> Result<Vec<TurnSession>> {
        let start = Instant::now();
        loop {
            let ended: Vec<TurnSession> = self
                .sessions()
                .into_iter()
                .filter(|s| s.username == username && s.peer.is_some())
                .collect();
            if !ended.is_empty() {
                return Ok(ended);
            }
            if start.elapsed() >= limit {
                return Err(PeerError::Timeout {
                    peer: "coturn".into(),
                    what: format!("the end of a TURN session of {username}"),
                    waited: limit,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// PID of turnserver.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The log (`verbose`).
    #[must_use]
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The last `lines` lines of the log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// The work dir (config, user db).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops turnserver (SIGTERM, then SIGKILL after a grace period).
    ///
    /// # Errors
    ///
    /// As [`PeerProcess::stop`].
    pub fn stop(mut self) -> Result<()> {
        self.process.stop().map(|_| ())
    }
}

fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads coturn's `verbose` log lines:
/// `session 000000000000000003: new, realm=<r>, username=<u>, lifetime=600`,
/// `session …: usage: realm=<r>, username=<u>, rp=16, rb=1820, sp=16, sb=1180`,
/// `session …: peer usage: realm=<r>, username=<u>, rp=5, rb=500, sp=5, sb=500`.
fn parse_sessions(log: &str) -> Vec<TurnSession> {
    let mut sessions: Vec<TurnSession> = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.split_once("session ").map(|(_, r)| r) else {
            continue;
        };
        let Some((id, what)) = rest.split_once(": ") else {
            continue;
        };
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let index = match sessions.iter().position(|s| s.id == id) {
            Some(i) => i,
            None => {
                sessions.push(TurnSession {
                    id: id.to_owned(),
                    username: String::new(),
                    allocated: false,
                    client: None,
                    peer: None,
                });
                sessions.len() - 1
            }
        };
        let session = &mut sessions[index];
        if let Some(user) = field(what, "username=<") {
            session.username = user.to_owned();
        }
        if what.starts_with("new,") {
            session.allocated = true;
        } else if let Some(counts) = what.strip_prefix("peer usage: ") {
            session.peer = Some(usage(counts));
        } else if let Some(counts) = what.strip_prefix("usage: ") {
            session.client = Some(usage(counts));
        }
    }
    sessions
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let end = text[start..].find('>')? + start;
    Some(&text[start..end])
}

fn usage(text: &str) -> TurnUsage {
    let number = |key: &str| -> u64 {
        text.split(", ")
            .find_map(|kv| kv.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    TurnUsage {
        received_packets: number("rp="),
        received_bytes: number("rb="),
        sent_packets: number("sp="),
        sent_bytes: number("sb="),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_lines_are_read_per_session() {
        let log = "\
1: : session 000000000000000003: new, realm=<example.test>, username=<1795750084:bob>, lifetime=777
1: : session 000000000000000003: realm <example.test> user <1795750084:bob>: incoming packet ALLOCATE processed, success
7: : session 000000000000000003: usage: realm=<example.test>, username=<1795750084:bob>, rp=16, rb=1820, sp=16, sb=1180
7: : session 000000000000000003: peer usage: realm=<example.test>, username=<1795750084:bob>, rp=5, rb=500, sp=5, sb=500
7: : session 000000000000000004: new, realm=<example.test>, username=<alice>, lifetime=600
";
        let s = parse_sessions(log);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].username, "1795750084:bob");
        assert!(s[0].allocated);
        assert_eq!(
            s[0].peer,
            Some(TurnUsage {
                received_packets: 5,
                received_bytes: 500,
                sent_packets: 5,
                sent_bytes: 500
            })
        );
        assert_eq!(s[0].client.map(|c| c.received_bytes), Some(1820));
        assert_eq!((s[1].username.as_str(), s[1].peer), ("alice", None));
    }
}
