//! sipp: scripted SIP traffic, one scenario per run.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitStatus,
    time::Duration,
};

use crate::{
    error::{PeerError, Result},
    net::{self, Protocol},
    process::{PeerProcess, SpawnSpec, WorkDir, find_binary, tail_lines},
};

/// A sipp scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// A scenario built into sipp (`-sn uac`, `-sn uas`, ...).
    Builtin(String),
    /// One of the scenario files shipped in `crates/testkit/peers/sipp/`.
    Shipped(ShippedScenario),
    /// Any XML scenario file (`-sf PATH`).
    File(PathBuf),
}

impl Scenario {
    /// `-sn uac`: INVITE, ACK, pause, BYE.
    #[must_use]
    pub fn uac() -> Self {
        Self::Builtin("uac".into())
    }

    /// `-sn uas`: answers the built-in UAC.
    #[must_use]
    pub fn uas() -> Self {
        Self::Builtin("uas".into())
    }

    fn args(&self) -> Result<Vec<OsString>> {
        Ok(match self {
            Self::Builtin(name) => vec!["-sn".into(), name.into()],
            Self::Shipped(shipped) => vec!["-sf".into(), shipped.path()?.into()],
            Self::File(path) => {
                if !path.is_file() {
                    return Err(PeerError::MissingFile { path: path.clone() });
                }
                vec!["-sf".into(), path.into()]
            }
        })
    }

    fn is_server(&self) -> bool {
        match self {
            Self::Builtin(name) => matches!(name.as_str(), "uas" | "regexp" | "branchs"),
            Self::Shipped(shipped) => shipped.is_server(),
            Self::File(path) => path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("uas")),
        }
    }
}

/// The scenario files shipped with the crate (`peers/sipp/*.xml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShippedScenario {
    /// REGISTER, answer the 401 challenge (`-au`/`-ap`), expect 200.
    UacRegisterAuth,
    /// Registrar: 401, then checks the digest (`-key user/pass/realm`), 200 or 403.
    UasRegisterAuth,
    /// INVITE with SDP, optional 401/407 answered, BYE after `-d` ms.
    UacInvite,
    /// INVITE and wait for the callee's BYE.
    UacInviteExpectBye,
    /// Callee: 100, 180, 200 with SDP, waits for BYE.
    UasInviteAnswer,
    /// Callee that sends BYE itself after `-d` ms.
    UasInviteFarBye,
    /// OPTIONS to `sip:SERVICE@remote`.
    UacOptions,
    /// OPTIONS to the server itself.
    UacOptionsServer,
    /// Answers one OPTIONS with 200.
    UasOptions,
}

impl ShippedScenario {
    /// Every shipped scenario.
    pub const ALL: [Self; 9] = [
        Self::UacRegisterAuth,
        Self::UasRegisterAuth,
        Self::UacInvite,
        Self::UacInviteExpectBye,
        Self::UasInviteAnswer,
        Self::UasInviteFarBye,
        Self::UacOptions,
        Self::UacOptionsServer,
        Self::UasOptions,
    ];

    /// The file name under `peers/sipp/`.
    #[must_use]
    pub fn file_name(self) -> &'static str {
        match self {
            Self::UacRegisterAuth => "uac_register_auth.xml",
            Self::UasRegisterAuth => "uas_register_auth.xml",
            Self::UacInvite => "uac_invite.xml",
            Self::UacInviteExpectBye => "uac_invite_expect_bye.xml",
            Self::UasInviteAnswer => "uas_invite_answer.xml",
            Self::UasInviteFarBye => "uas_invite_far_bye.xml",
            Self::UacOptions => "uac_options.xml",
            Self::UacOptionsServer => "uac_options_server.xml",
            Self::UasOptions => "uas_options.xml",
        }
    }

    /// The absolute path of the file, located through `CARGO_MANIFEST_DIR`.
    ///
    /// # Errors
    ///
    /// [`PeerError::MissingFile`] if the file is not there.
    pub fn path(self) -> Result<PathBuf> {
        let path = crate::peers_dir().join("sipp").join(self.file_name());
        if path.is_file() {
            Ok(path)
        } else {
            Err(PeerError::MissingFile { path })
        }
    }

    fn is_server(self) -> bool {
        self.file_name().starts_with("uas")
    }
}

/// sipp's transport mode (`-t`). sipp has no TLS in the Debian build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SippTransport {
    /// `u1`: one UDP socket for all calls.
    #[default]
    UdpMono,
    /// `un`: one UDP socket per call.
    UdpMulti,
    /// `t1`: one TCP connection for all calls.
    TcpMono,
    /// `tn`: one TCP connection per call.
    TcpMulti,
}

impl SippTransport {
    fn flag(self) -> &'static str {
        match self {
            Self::UdpMono => "u1",
            Self::UdpMulti => "un",
            Self::TcpMono => "t1",
            Self::TcpMulti => "tn",
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            Self::UdpMono | Self::UdpMulti => Protocol::Udp,
            Self::TcpMono | Self::TcpMulti => Protocol::Tcp,
        }
    }
}

/// One sipp run, configured with `with_*` methods, started with
/// [`Sipp::spawn`] (returns at once; servers once they listen) or
/// [`Sipp::run`] (waits for the result).
///
/// Always passed: `-i 127.0.0.1 -ci 127.0.0.1 -cp <free> -nostdin -m <calls>
/// -timeout <N>s -timeout_error -trace_stat -stf <work dir>/stat.csv`.
#[derive(Debug, Clone)]
pub struct Sipp {
    scenario: Scenario,
    remote: Option<SocketAddr>,
    transport: SippTransport,
    local_port: Option<u16>,
    media_port: Option<u16>,
    rtp_echo: bool,
    calls: u64,
    rate: Option<f64>,
    rate_period: Option<Duration>,
    call_duration: Option<Duration>,
    timeout: Duration,
    recv_timeout: Option<Duration>,
    trace_err: bool,
    trace_msg: bool,
    service: Option<String>,
    auth: Option<(String, String)>,
    keys: Vec<(String, String)>,
    extra: Vec<OsString>,
}

impl Sipp {
    /// A run of `scenario`: one call, 30 s bound, UDP, free local port.
    #[must_use]
    pub fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            remote: None,
            transport: SippTransport::default(),
            local_port: None,
            media_port: None,
            rtp_echo: false,
            calls: 1,
            rate: None,
            rate_period: None,
            call_duration: None,
            timeout: Duration::from_secs(30),
            recv_timeout: None,
            trace_err: true,
            trace_msg: false,
            service: None,
            auth: None,
            keys: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// The remote side (clients).
    #[must_use]
    pub fn with_remote(mut self, remote: SocketAddr) -> Self {
        self.remote = Some(remote);
        self
    }

    /// `-t`.
    #[must_use]
    pub fn with_transport(mut self, transport: SippTransport) -> Self {
        self.transport = transport;
        self
    }

    /// `-p`; default a free port.
    #[must_use]
    pub fn with_local_port(mut self, port: u16) -> Self {
        self.local_port = Some(port);
        self
    }

    /// `-mi 127.0.0.1 -mp PORT`, and `-rtp_echo` when `echo`.
    #[must_use]
    pub fn with_media(mut self, port: u16, echo: bool) -> Self {
        self.media_port = Some(port);
        self.rtp_echo = echo;
        self
    }

    /// `-m`: stop after this many calls.
    #[must_use]
    pub fn with_calls(mut self, calls: u64) -> Self {
        self.calls = calls;
        self
    }

    /// `-r`: calls per rate period.
    #[must_use]
    pub fn with_rate(mut self, calls_per_period: f64) -> Self {
        self.rate = Some(calls_per_period);
        self
    }

    /// `-rp`: the rate period (default 1 s).
    #[must_use]
    pub fn with_rate_period(mut self, period: Duration) -> Self {
        self.rate_period = Some(period);
        self
    }

    /// `-d`: pause length inside calls (built-in uac, shipped INVITE scenarios).
    #[must_use]
    pub fn with_call_duration(mut self, duration: Duration) -> Self {
        self.call_duration = Some(duration);
        self
    }

    /// `-timeout` with `-timeout_error`: sipp fails (exit 255) when the run
    /// is not done in time. The process is killed 10 s later regardless.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `-recv_timeout`: bound on each expected message.
    #[must_use]
    pub fn with_recv_timeout(mut self, timeout: Duration) -> Self {
        self.recv_timeout = Some(timeout);
        self
    }

    /// `-trace_err` (on by default): unexpected messages in `*_errors.log`.
    #[must_use]
    pub fn with_trace_err(mut self, on: bool) -> Self {
        self.trace_err = on;
        self
    }

    /// `-trace_msg`: every message in `*_messages.log`.
    #[must_use]
    pub fn with_trace_msg(mut self, on: bool) -> Self {
        self.trace_msg = on;
        self
    }

    /// `-s`: the `[service]` (Request-URI / AoR user part).
    #[must_use]
    pub fn with_service(mut self, user: &str) -> Self {
        self.service = Some(user.to_owned());
        self
    }

    /// `-au`/`-ap`: digest credentials (MD5 only in sipp).
    #[must_use]
    pub fn with_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// `-key NAME VALUE` (a `[NAME]` keyword in the scenario).
    #[must_use]
    pub fn with_key(mut self, name: &str, value: &str) -> Self {
        self.keys.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Any other sipp argument, appended as given.
    #[must_use]
    pub fn with_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// Starts sipp. A server scenario (`uas*`) is waited for until its local
    /// port is bound (5 s at most), so a client can be started right after.
    ///
    /// # Errors
    ///
    /// [`PeerError::NotInstalled`] (package `sip-tester`), or the start and
    /// readiness errors of [`PeerProcess`].
    pub fn spawn(self) -> Result<SippRun> {
        let program = find_binary("sipp", "sip-tester")?;
        let dir = WorkDir::new("sipp")?;
        let local_port = match self.local_port {
            Some(port) => port,
            None => net::free_port()?,
        };
        let control_port = net::free_port()?;
        let stat_path = dir.path().join("stat.csv");
        let mut args: Vec<OsString> = self.scenario.args()?;
        if let Some(remote) = self.remote {
            args.push(remote.to_string().into());
        }
        let seconds = self.timeout.as_secs().max(1);
        for arg in [
            "-i",
            "127.0.0.1",
            "-ci",
            "127.0.0.1",
            "-cp",
            &control_port.to_string(),
            "-p",
            &local_port.to_string(),
            "-t",
            self.transport.flag(),
            "-m",
            &self.calls.to_string(),
            "-nostdin",
            "-timeout",
            &format!("{seconds}s"),
            "-timeout_error",
            "-trace_stat",
            "-fd",
            "1",
        ] {
            args.push(arg.into());
        }
        args.push("-stf".into());
        args.push(stat_path.clone().into());
        if let Some(port) = self.media_port {
            args.extend(["-mi", "127.0.0.1", "-mp"].map(OsString::from));
            args.push(port.to_string().into());
            if self.rtp_echo {
                args.push("-rtp_echo".into());
            }
        }
        if let Some(rate) = self.rate {
            args.push("-r".into());
            args.push(rate.to_string().into());
        }
        if let Some(period) = self.rate_period {
            args.push("-rp".into());
            args.push(period.as_millis().to_string().into());
        }
        if let Some(duration) = self.call_duration {
            args.push("-d".into());
            args.push(duration.as_millis().to_string().into());
        }
        if let Some(timeout) = self.recv_timeout {
            args.push("-recv_timeout".into());
            args.push(timeout.as_millis().to_string().into());
        }
        if self.trace_err {
            args.push("-trace_err".into());
        }
        if self.trace_msg {
            args.push("-trace_msg".into());
        }
        if let Some(service) = &self.service {
            args.push("-s".into());
            args.push(service.into());
        }
        if let Some((user, password)) = &self.auth {
            args.extend(["-au".into(), user.into(), "-ap".into(), password.into()]);
        }
        for (name, value) in &self.keys {
            args.extend(["-key".into(), name.into(), value.into()]);
        }
        args.extend(self.extra.iter().cloned());

        let mut process = PeerProcess::spawn(SpawnSpec {
            name: "sipp",
            program,
            args,
            work_dir: dir.path(),
            env: Vec::new(),
            lifetime: self.timeout + Duration::from_secs(10),
        })?;
        if self.scenario.is_server() {
            let protocol = self.transport.protocol();
            net::wait_until(
                &mut process,
                &format!("sipp listening on port {local_port}"),
                Duration::from_secs(5),
                || Ok(net::is_listening(protocol, local_port)),
            )?;
        }
        let pid = process.pid();
        Ok(SippRun {
            process,
            dir,
            stat_path,
            local_port,
            pid,
            limit: self.timeout + Duration::from_secs(15),
        })
    }

    /// [`Sipp::spawn`], then [`SippRun::wait`].
    ///
    /// # Errors
    ///
    /// As [`Sipp::spawn`] and [`SippRun::wait`].
    pub fn run(self) -> Result<SippOutcome> {
        self.spawn()?.wait()
    }
}

/// A running sipp.
#[derive(Debug)]
pub struct SippRun {
    process: PeerProcess,
    dir: WorkDir,
    stat_path: PathBuf,
    local_port: u16,
    pid: Option<u32>,
    limit: Duration,
}

impl SippRun {
    /// The local SIP port (`-p`).
    #[must_use]
    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// The address clients send to: 127.0.0.1:[`Self::local_port`].
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((net::LOCALHOST, self.local_port))
    }

    /// PID of the sipp process, for [`crate::cpu_seconds`] while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The work dir (stat CSV, error and message traces, log).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits for sipp to finish (its `-timeout` plus a margin) and collects
    /// the result.
    ///
    /// # Errors
    ///
    /// [`PeerError::Timeout`] if sipp outlived its own timeout, which only a
    /// wedged process does.
    pub fn wait(mut self) -> Result<SippOutcome> {
        let Some(status) = self.process.wait_timeout(self.limit) else {
            let _ = self.process.stop();
            return Err(PeerError::Timeout {
                peer: "sipp".into(),
                what: "the end of the run".into(),
                waited: self.limit,
            });
        };
        let stats = SippStats::from_csv_file(&self.stat_path)
            .or_else(|| SippStats::from_screen(&self.process.log_tail(200)))
            .unwrap_or_default();
        let errors = collect_errors(self.dir.path());
        Ok(SippOutcome {
            status,
            stats,
            pid: self.pid,
            cpu_seconds: self.process.total_cpu_seconds(),
            log_tail: self.process.log_tail(40),
            errors,
            _dir: self.dir,
        })
    }
}

/// What a finished sipp run reported.
#[derive(Debug)]
pub struct SippOutcome {
    /// Exit status: 0 every call succeeded, 1 some failed, 99 no call was
    /// processed, 255 fatal error (also the global timeout), 254 bind failed.
    pub status: ExitStatus,
    /// Final statistics.
    pub stats: SippStats,
    /// PID sipp had.
    pub pid: Option<u32>,
    /// CPU seconds sipp used in total (user + system).
    pub cpu_seconds: Option<f64>,
    /// The last lines of sipp's output (the final screen).
    pub log_tail: String,
    /// The contents of sipp's `*_errors.log` files (unexpected messages).
    pub errors: String,
    _dir: WorkDir,
}

impl SippOutcome {
    /// Whether sipp exited 0.
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.status.success()
    }

    /// sipp's exit code, if it exited normally.
    #[must_use]
    pub fn exit_code(&self) -> Option<i32> {
        self.status.code()
    }

    /// A summary for assertion messages.
    #[must_use]
    pub fn report(&self) -> String {
        format!(
            "sipp {}: {} successful, {} failed calls\n--- output ---\n{}\n--- errors ---\n{}",
            self.status,
            self.stats.successful_calls,
            self.stats.failed_calls,
            self.log_tail,
            self.errors
        )
    }
}

/// Cumulative statistics of a sipp run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SippStats {
    /// `SuccessfulCall(C)`.
    pub successful_calls: u64,
    /// `FailedCall(C)`.
    pub failed_calls: u64,
    /// `TotalCallCreated`.
    pub created_calls: u64,
    /// `Retransmissions(C)`.
    pub retransmissions: u64,
    /// Every column of the last CSV row, by header name.
    pub columns: BTreeMap<String, String>,
}

impl SippStats {
    /// Parses the last row of a `-trace_stat` CSV (`;`-separated).
    #[must_use]
    pub fn from_csv(text: &str) -> Option<Self> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next()?.split(';').collect();
        let last: Vec<&str> = lines.next_back()?.split(';').collect();
        let columns: BTreeMap<String, String> = header
            .iter()
            .zip(&last)
            .map(|(h, v)| ((*h).to_owned(), (*v).to_owned()))
            .collect();
        let number = |name: &str| {
            columns
                .get(name)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Some(Self {
            successful_calls: number("SuccessfulCall(C)"),
            failed_calls: number("FailedCall(C)"),
            created_calls: number("TotalCallCreated"),
            retransmissions: number("Retransmissions(C)"),
            columns,
        })
    }

    fn from_csv_file(path: &Path) -> Option<Self> {
        Self::from_csv(&fs::read_to_string(path).ok()?)
    }

    /// Parses the final statistics screen sipp prints on exit
    /// (`Successful call | <periodic> | <cumulative>`).
    #[must_use]
    pub fn from_screen(text: &str) -> Option<Self> {
        let cumulative = |label: &str| -> Option<u64> {
            let line = text
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with(label))?;
            line.split('|').nth(2)?.trim().parse().ok()
        };
        Some(Self {
            successful_calls: cumulative("Successful call")?,
            failed_calls: cumulative("Failed call")?,
            ..Self::default()
        })
    }
}

fn collect_errors(dir: &Path) -> String {
    let Ok(entries) = fs::read_dir(dir) else {
        return String::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("_errors.log"))
        .map(|p| tail_lines(&p, 60))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_come_from_the_last_csv_row() {
        let csv = "StartTime;TotalCallCreated;SuccessfulCall(C);FailedCall(C);Retransmissions(C);\n\
                   x;0;0;0;0;\n\
                   y;5;4;1;2;\n";
        let stats = SippStats::from_csv(csv).unwrap();
        assert_eq!(
            (
                stats.created_calls,
                stats.successful_calls,
                stats.failed_calls,
                stats.retransmissions
            ),
            (5, 4, 1, 2)
        );
        assert_eq!(stats.columns["StartTime"], "y");
    }

    #[test]
    fn stats_come_from_the_final_screen() {
        let screen = "  Successful call        |        0                  |        3                  \n  \
                      Failed call            |        0                  |        1                  \n";
        let stats = SippStats::from_screen(screen).unwrap();
        assert_eq!((stats.successful_calls, stats.failed_calls), (3, 1));
    }

    #[test]
    fn every_shipped_scenario_is_present() {
        for scenario in ShippedScenario::ALL {
            let path = scenario.path().unwrap();
            let text = fs::read_to_string(path).unwrap();
            assert!(text.contains("<scenario"), "{}", scenario.file_name());
        }
    }
}
