//! Kamailio: registrar and proxy with digest auth on loopback.

use std::{
    ffi::OsString,
    fs,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    ca::TestCa,
    error::{PeerError, Result},
    net::{self, Protocol},
    process::{PeerProcess, SpawnSpec, WorkDir, find_binary},
};

/// Where Debian and others put Kamailio's modules.
const MODULE_DIRS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/lib64/kamailio/modules",
];

/// The digest algorithm Kamailio announces in its challenges and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestAlgorithm {
    /// `algorithm=MD5` (what sipp and baresip 1.0 speak).
    #[default]
    Md5,
    /// `algorithm=SHA-256` (RFC 8760).
    Sha256,
}

impl DigestAlgorithm {
    /// The value of the `algorithm` parameter.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }
}

/// A user Kamailio knows: user name and plaintext password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUser {
    /// User part of the AoR and digest user name.
    pub name: String,
    /// Digest password.
    pub password: String,
}

impl SipUser {
    /// A user with the given password.
    #[must_use]
    pub fn new(name: &str, password: &str) -> Self {
        Self {
            name: name.to_owned(),
            password: password.to_owned(),
        }
    }
}

/// The users of [`KamailioBuilder::default`]: alice, bob, carol and dave,
/// each with the password `<name>-secret`.
#[must_use]
pub fn default_users() -> Vec<SipUser> {
    ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|n| SipUser::new(n, &format!("{n}-secret")))
        .collect()
}

/// Configures a [`Kamailio`].
#[derive(Debug, Clone)]
pub struct KamailioBuilder {
    users: Vec<SipUser>,
    algorithm: DigestAlgorithm,
    tls: Option<(String, String)>,
    websocket: bool,
    push_refused: bool,
    push: bool,
    lifetime: Duration,
    ready_timeout: Duration,
}

impl Default for KamailioBuilder {
    fn default() -> Self {
        Self {
            users: default_users(),
            algorithm: DigestAlgorithm::Md5,
            tls: None,
            websocket: false,
            push_refused: false,
            push: false,
            lifetime: Duration::from_secs(300),
            ready_timeout: Duration::from_secs(15),
        }
    }
}

impl KamailioBuilder {
    /// Replaces the user list.
    #[must_use]
    pub fn with_users(mut self, users: Vec<SipUser>) -> Self {
        self.users = users;
        self
    }

    /// Adds one user.
    #[must_use]
    pub fn with_user(mut self, name: &str, password: &str) -> Self {
        self.users.push(SipUser::new(name, password));
        self
    }

    /// The digest algorithm (default MD5).
    #[must_use]
    pub fn with_digest(mut self, algorithm: DigestAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Listens for TLS too, on its own port, with the CA's server certificate.
    #[must_use]
    pub fn with_tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some((ca.server().cert_pem.clone(), ca.server().key_pem.clone()));
        self
    }

    /// Listens for SIP over WebSocket (RFC 7118) too, on its own port, and
    /// over secure WebSocket when TLS is on (needs `kamailio-websocket-modules`).
    #[must_use]
    pub fn with_websocket(mut self) -> Self {
        self.websocket = true;
        self
    }

    /// Hard upper bound on the process's life (default 300 s).
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Answers a REGISTER whose Contact carries RFC 8599 push parameters
    /// (`pn-provider`) with `555 Push Notification Service Not Supported`,
    /// as a proxy without push support does.
    #[must_use]
    pub fn with_push_refused(mut self) -> Self {
        self.push_refused = true;
        self
    }

    /// Answers a REGISTER whose Contact carries RFC 8599 push parameters
    /// as a relay that sends pushes does: its 2xx names the service in
    /// `Feature-Caps: *;+sip.pns` (§4.1.1). Without this (or
    /// [`with_push_refused`](Self::with_push_refused)) the parameters are
    /// stored and nothing is promised.
    #[must_use]
    pub fn with_push(mut self) -> Self {
        self.push = true;
        self
    }

    /// Starts Kamailio and waits until it answers an OPTIONS over UDP with 200
    /// and its TCP (and TLS) ports listen.
    ///
    /// # Errors
    ///
    /// [`PeerError::NotInstalled`] (`kamailio`, or `kamailio-tls-modules` for
    /// TLS), [`PeerError::InvalidArgument`] for a user name or password with
    /// characters other than letters, digits, `-`, `_`, `.`, and the start and
    /// readiness errors of [`PeerProcess`].
    pub fn start(self) -> Result<Kamailio> {
        let program = find_binary("kamailio", "kamailio")?;
        if self.tls.is_some() && !module_installed("tls.so") {
            return Err(PeerError::NotInstalled {
                binary: "tls.so (kamailio module)",
                package: "kamailio-tls-modules",
            });
        }
        if self.websocket && !module_installed("websocket.so") {
            return Err(PeerError::NotInstalled {
                binary: "websocket.so (kamailio module)",
                package: "kamailio-websocket-modules",
            });
        }
        let mut users_cfg = String::new();
        for user in &self.users {
            if !is_plain(&user.name) || !is_plain(&user.password) {
                return Err(PeerError::InvalidArgument(format!(
                    "kamailio user {:?}: use letters, digits, '-', '_' and '.' only",
                    user.name
                )));
            }
            users_cfg.push_str(&format!(
                "\t$sht(users=>{}) = \"{}\";\n",
                user.name, user.password
            ));
        }

        let dir = WorkDir::new("kamailio")?;
        let sip_port = net::free_port()?;
        let tls_port = match self.tls {
            Some(_) => Some(net::free_port()?),
            None => None,
        };
        let ws_port = if self.websocket {
            Some(net::free_port()?)
        } else {
            None
        };
        let wss_port = if self.websocket && self.tls.is_some() {
            Some(net::free_port()?)
        } else {
            None
        };
        let run_dir = dir.path().to_string_lossy().into_owned();
        let fill = |template: &str| {
            template
                .replace("@SIP_PORT@", &sip_port.to_string())
                .replace("@TLS_PORT@", &tls_port.unwrap_or(0).to_string())
                .replace("@WS_PORT@", &ws_port.unwrap_or(0).to_string())
                .replace("@WSS_PORT@", &wss_port.unwrap_or(0).to_string())
                .replace("@RUN_DIR@", &run_dir)
                .replace("@DIGEST_ALGORITHM@", self.algorithm.as_str())
                .replace("@USERS@\n", &users_cfg)
        };
        let config = dir.write(
            "kamailio.cfg",
            fill(&crate::shipped("kamailio", "kamailio.cfg")?),
        )?;
        let mut args: Vec<OsString> = vec!["-f".into(), config.into()];
        args.extend(["-DD", "-E", "-m", "64", "-M", "8", "-Y"].map(OsString::from));
        args.push(dir.path().into());
        if let Some((cert, key)) = &self.tls {
            dir.write("tls.cfg", fill(&crate::shipped("kamailio", "tls.cfg")?))?;
            dir.write("tls/server.cert.pem", cert)?;
            dir.write("tls/server.key.pem", key)?;
            args.extend(["-A", "WITH_TLS"].map(OsString::from));
        }
        if self.push_refused {
            args.extend(["-A", "WITH_PUSH_REFUSED"].map(OsString::from));
        }
        if self.push {
            args.extend(["-A", "WITH_PUSH"].map(OsString::from));
        }
        if self.websocket {
            args.extend(["-A", "WITH_WS"].map(OsString::from));
        }

        let launch = Launch {
            program,
            args,
            lifetime: self.lifetime,
            ready_timeout: self.ready_timeout,
            extra_ports: ws_port.into_iter().chain(wss_port).collect(),
        };
        let process = launch.spawn(dir.path(), sip_port, tls_port)?;
        Ok(Kamailio {
            process,
            dir,
            sip_port,
            tls_port,
            ws_port,
            wss_port,
            users: self.users,
            algorithm: self.algorithm,
            launch,
        })
    }
}

/// How Kamailio was started, to start it again the same way.
#[derive(Debug, Clone)]
struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    lifetime: Duration,
    ready_timeout: Duration,
    /// WS and WSS listeners to wait for.
    extra_ports: Vec<u16>,
}

impl Launch {
    fn spawn(&self, dir: &Path, sip_port: u16, tls_port: Option<u16>) -> Result<PeerProcess> {
        let mut process = PeerProcess::spawn(SpawnSpec {
            name: "kamailio",
            program: self.program.clone(),
            args: self.args.clone(),
            work_dir: dir,
            env: Vec::new(),
            lifetime: self.lifetime,
        })?;
        let udp_addr = SocketAddr::from((net::LOCALHOST, sip_port));
        net::wait_until(
            &mut process,
            "an OPTIONS answer over UDP",
            self.ready_timeout,
            || Ok(options_ping(udp_addr, Duration::from_millis(200)).is_ok_and(|code| code == 200)),
        )?;
        net::wait_until(&mut process, "the TCP listener", self.ready_timeout, || {
            Ok(net::is_listening(Protocol::Tcp, sip_port))
        })?;
        if let Some(port) = tls_port {
            net::wait_until(&mut process, "the TLS listener", self.ready_timeout, || {
                Ok(net::is_listening(Protocol::Tcp, port))
            })?;
        }
        for &port in &self.extra_ports {
            net::wait_until(
                &mut process,
                "the WebSocket listener",
                self.ready_timeout,
                || Ok(net::is_listening(Protocol::Tcp, port)),
            )?;
        }
        Ok(process)
    }
}

/// One contact binding as `kamcmd ul.lookup` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI, with its URI parameters (`ob`, `pn-*`).
    pub address: String,
    /// The `+sip.instance` value (e.g. `<urn:uuid:…>`), if any.
    pub instance: Option<String>,
    /// The `reg-id`, if any (0 means none).
    pub reg_id: Option<u32>,
    /// Seconds until the binding expires.
    pub expires: Option<u32>,
    /// The source address the REGISTER came from (`sip:IP:PORT;transport=…`).
    pub received: Option<String>,
    /// The User-Agent.
    pub user_agent: Option<String>,
}

/// A running Kamailio: registrar (digest auth against a static user list,
/// in-memory location table) and record-routing proxy that forwards requests
/// for registered users to their contacts.
///
/// Listens on 127.0.0.1, UDP and TCP on [`Kamailio::sip_port`], TLS on
/// [`Kamailio::tls_port`] when built [`KamailioBuilder::with_tls`]. The realm
/// is the From domain (`127.0.0.1` for AoRs such as [`Kamailio::aor`]).
/// Stopped on drop.
#[derive(Debug)]
pub struct Kamailio {
    process: PeerProcess,
    dir: WorkDir,
    sip_port: u16,
    tls_port: Option<u16>,
    ws_port: Option<u16>,
    wss_port: Option<u16>,
    users: Vec<SipUser>,
    algorithm: DigestAlgorithm,
    launch: Launch,
}

impl Kamailio {
    /// A builder with the default users and MD5.
    #[must_use]
    pub fn builder() -> KamailioBuilder {
        KamailioBuilder::default()
    }

    /// Starts with the defaults (see [`KamailioBuilder`]).
    ///
    /// # Errors
    ///
    /// As [`KamailioBuilder::start`].
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// UDP and TCP port.
    #[must_use]
    pub fn sip_port(&self) -> u16 {
        self.sip_port
    }

    /// TLS port, when enabled.
    #[must_use]
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The WebSocket port (with [`KamailioBuilder::with_websocket`]).
    #[must_use]
    pub fn ws_port(&self) -> Option<u16> {
        self.ws_port
    }

    /// The secure WebSocket port (with WebSocket and TLS).
    #[must_use]
    pub fn wss_port(&self) -> Option<u16> {
        self.wss_port
    }

    /// 127.0.0.1:[`Self::sip_port`].
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((net::LOCALHOST, self.sip_port))
    }

    /// The users and their passwords.
    #[must_use]
    pub fn users(&self) -> &[SipUser] {
        &self.users
    }

    /// One user by name.
    #[must_use]
    pub fn user(&self, name: &str) -> Option<&SipUser> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The digest algorithm in use.
    #[must_use]
    pub fn digest_algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// `sip:<user>@127.0.0.1:<sip port>`.
    #[must_use]
    pub fn aor(&self, user: &str) -> String {
        format!("sip:{user}@127.0.0.1:{}", self.sip_port)
    }

    /// Sends an OPTIONS to the proxy itself over UDP; returns the status code.
    ///
    /// # Errors
    ///
    /// [`PeerError::Timeout`] without an answer within 2 s.
    pub fn options_ping(&self) -> Result<u16> {
        options_ping(self.addr(), Duration::from_secs(2))
    }

    /// The contact addresses registered for `user`, read over Kamailio's
    /// control socket (`kamcmd ul.lookup`).
    ///
    /// # Errors
    ///
    /// [`PeerError::NotInstalled`] without `kamcmd`, [`PeerError::Io`].
    pub fn registered_contacts(&self, user: &str) -> Result<Vec<String>> {
        let text = self.ul_lookup(user)?;
        Ok(text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Address: "))
            .map(str::to_owned)
            .collect())
    }

    fn ul_lookup(&self, user: &str) -> Result<String> {
        let kamcmd = find_binary("kamcmd", "kamailio")?;
        let timeout = find_binary("timeout", "coreutils")?;
        let socket = format!("unix:{}/kamailio_ctl", self.dir.path().display());
        let output = Command::new(timeout)
            .arg("5")
            .arg(kamcmd)
            .args(["-s", &socket, "ul.lookup", "location", user])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| PeerError::io("running kamcmd", e))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Waits until `user` has at least one registered contact.
    ///
    /// # Errors
    ///
    /// [`PeerError::Timeout`], or as [`Self::registered_contacts`].
    pub fn wait_registered(&self, user: &str, limit: Duration) -> Result<Vec<String>> {
        let start = Instant::now();
        loop {
            let contacts = self.registered_contacts(user)?;
            if !contacts.is_empty() {
                return Ok(contacts);
            }
            if start.elapsed() >= limit {
                return Err(PeerError::Timeout {
                    peer: "kamailio".into(),
                    what: format!("a registration of {user}"),
                    waited: limit,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The bindings registered for `user`, with the fields RFC 5626 and
    /// RFC 8599 care about, read over the control socket (`kamcmd ul.lookup`).
    ///
    /// # Errors
    ///
    /// [`PeerError::NotInstalled`] without `kamcmd`, [`PeerError::Io`].
    pub fn registered_bindings(&self, user: &str) -> Result<Vec<Binding>> {
        Ok(parse_bindings(&self.ul_lookup(user)?))
    }

    /// Stops Kamailio and starts it again on the same ports with the same
    /// configuration (the in-memory location table starts empty). The old
    /// log is kept as `kamailio.log.1`.
    ///
    /// # Errors
    ///
    /// As [`KamailioBuilder::start`].
    pub fn restart(&mut self) -> Result<()> {
        self.restart_after(Duration::ZERO)
    }

    /// As [`restart`](Self::restart), with Kamailio down for `down` (at
    /// most 60 s) between the stop and the start, as during an upgrade.
    ///
    /// # Errors
    ///
    /// As [`KamailioBuilder::start`].
    pub fn restart_after(&mut self, down: Duration) -> Result<()> {
        self.process.stop()?;
        std::thread::sleep(down.min(Duration::from_secs(60)));
        let log = self.process.log_path().to_path_buf();
        let _ = fs::rename(&log, log.with_extension("log.1"));
        self.process = self
            .launch
            .spawn(self.dir.path(), self.sip_port, self.tls_port)?;
        Ok(())
    }

    /// PID of the main Kamailio process.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The log (stderr, `debug=2`).
    #[must_use]
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The last `lines` lines of the log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// The work dir (config, control socket, TLS files).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops Kamailio (SIGTERM, then SIGKILL after a grace period).
    ///
    /// # Errors
    ///
    /// As [`PeerProcess::stop`].
    pub fn stop(mut self) -> Result<()> {
        self.process.stop().map(|_| ())
    }
}

/// Sends one OPTIONS for `sip:<addr>` over UDP from a fresh socket and
/// returns the status code of the first final answer.
///
/// # Errors
///
/// [`PeerError::Timeout`] without an answer within `limit`, [`PeerError::Io`].
pub fn options_ping(to: SocketAddr, limit: Duration) -> Result<u16> {
    let socket = UdpSocket::bind((net::LOCALHOST, 0))
        .map_err(|e| PeerError::io("binding a UDP socket", e))?;
    let local = socket
        .local_addr()
        .map_err(|e| PeerError::io("reading the local address", e))?;
    let tag = net::random();
    let request = format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{tag:x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:testkit@{local}>;tag={tag:x}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: {tag:x}@testkit\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    socket
        .send_to(request.as_bytes(), to)
        .map_err(|e| PeerError::io("sending OPTIONS", e))?;
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(PeerError::Timeout {
                peer: to.to_string(),
                what: "an answer to OPTIONS".into(),
                waited: limit,
            });
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| PeerError::io("setting a read timeout", e))?;
        let Ok((len, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..len]);
        let code = text
            .strip_prefix("SIP/2.0 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|c| c.parse::<u16>().ok());
        if let Some(code) = code
            && code >= 200
        {
            return Ok(code);
        }
    }
}

/// Reads `kamcmd ul.lookup` output: one `Contact: {` block per binding with
/// `Address:`, `Expires:`, `Received:`, `User-Agent:`, `Instance:`, `Reg-Id:`.
fn parse_bindings(text: &str) -> Vec<Binding> {
    let mut bindings: Vec<Binding> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        let value = value.trim();
        if key == "Address" {
            bindings.push(Binding {
                address: value.to_owned(),
                ..Binding::default()
            });
            continue;
        }
        let Some(b) = bindings.last_mut() else {
            continue;
        };
        let present = !value.is_empty() && value != "[not set]";
        match key {
            "Instance" if present => b.instance = Some(value.to_owned()),
            "Reg-Id" => b.reg_id = value.parse().ok(),
            "Expires" => b.expires = value.parse().ok(),
            "Received" if present => b.received = Some(value.to_owned()),
            "User-Agent" if present => b.user_agent = Some(value.to_owned()),
            _ => {}
        }
    }
    bindings
}

fn module_installed(module: &str) -> bool {
    MODULE_DIRS
        .iter()
        .any(|dir| Path::new(dir).join(module).is_file())
}

fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
