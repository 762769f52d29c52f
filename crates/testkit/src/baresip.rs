//! baresip: a headless SIP user agent driven over its `ctrl_tcp` socket.

use std::{
    ffi::OsString,
    fs,
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    error::{PeerError, Result},
    kamailio::Kamailio,
    net::{self, Protocol},
    process::{PeerProcess, SpawnSpec, WorkDir, find_binary},
};

/// How long a control command may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the user agent sends as its microphone.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioSource {
    /// A WAV file played by `aufile`, in a loop. Its rate and channels must
    /// be the codec's (8000/1 for PCMU and PCMA, 48000/2 for opus):
    /// `aufile` does not resample. See [`crate::audio::write_tone`].
    File(PathBuf),
    /// `ausine` at this frequency in Hz; 48 kHz only, so opus only.
    Sine(u32),
}

/// SIP transport of the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UaTransport {
    /// UDP.
    #[default]
    Udp,
    /// TCP.
    Tcp,
    /// TLS (the registrar must listen for TLS; see [`BaresipBuilder::with_ca_file`]).
    Tls,
}

impl UaTransport {
    fn param(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// Configures a [`Baresip`] instance.
#[derive(Debug, Clone)]
pub struct BaresipBuilder {
    name: String,
    account: Option<String>,
    auto_answer: bool,
    codecs: Vec<String>,
    audio_source: AudioSource,
    record: bool,
    ca_file: Option<PathBuf>,
    lifetime: Duration,
}

impl BaresipBuilder {
    /// The full account line (`<sip:user@host;transport=udp>;auth_pass=...`).
    /// Without one the UA does not register and is reached directly at
    /// `sip:<name>@127.0.0.1:<sip port>`.
    #[must_use]
    pub fn with_account(mut self, line: &str) -> Self {
        self.account = Some(line.to_owned());
        self
    }

    /// Registers as `user` with `kamailio` (password from its user list)
    /// over `transport`.
    ///
    /// # Errors
    ///
    /// [`PeerError::InvalidArgument`] for an unknown user, or TLS on a
    /// Kamailio without TLS.
    pub fn registering_with(
        self,
        kamailio: &Kamailio,
        user: &str,
        transport: UaTransport,
    ) -> Result<Self> {
        let password = &kamailio
            .user(user)
            .ok_or_else(|| PeerError::InvalidArgument(format!("kamailio has no user {user}")))?
            .password;
        let port = match transport {
            UaTransport::Tls => kamailio.tls_port().ok_or_else(|| {
                PeerError::InvalidArgument("kamailio was started without TLS".into())
            })?,
            UaTransport::Udp | UaTransport::Tcp => kamailio.sip_port(),
        };
        Ok(self.with_account(&format!(
            "<sip:{user}@127.0.0.1:{port};transport={}>;auth_pass={password};regint=600",
            transport.param()
        )))
    }

    /// Answers incoming calls at once (`answermode=auto`).
    #[must_use]
    pub fn with_auto_answer(mut self, on: bool) -> Self {
        self.auto_answer = on;
        self
    }

    /// Restricts the audio codecs, e.g. `["pcmu"]` (`audio_codecs=`).
    #[must_use]
    pub fn with_codecs(mut self, codecs: &[&str]) -> Self {
        self.codecs = codecs.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    /// What the UA sends (default a 440 Hz sine, opus only).
    #[must_use]
    pub fn with_audio_source(mut self, source: AudioSource) -> Self {
        self.audio_source = source;
        self
    }

    /// Records sent and received audio to WAV files (`sndfile`); see
    /// [`Baresip::received_audio`].
    #[must_use]
    pub fn with_recording(mut self, on: bool) -> Self {
        self.record = on;
        self
    }

    /// Trusts this CA file for SIP over TLS (`sip_cafile`).
    #[must_use]
    pub fn with_ca_file(mut self, path: &Path) -> Self {
        self.ca_file = Some(path.to_path_buf());
        self
    }

    /// Hard upper bound on the process's life (default 300 s).
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Writes the config, starts baresip and connects to its control socket.
    ///
    /// # Errors
    ///
    /// [`PeerError::NotInstalled`] (package `baresip-core`), the start and
    /// readiness errors of [`PeerProcess`], [`PeerError::Io`].
    pub fn start(self) -> Result<Baresip> {
        let program = find_binary("baresip", "baresip-core")?;
        if let AudioSource::File(path) = &self.audio_source
            && !path.is_file()
        {
            return Err(PeerError::MissingFile { path: path.clone() });
        }
        let dir = WorkDir::new(&format!("baresip-{}", self.name))?;
        let sip_port = net::free_port()?;
        let ctrl_port = net::free_port()?;
        let rtp = net::free_udp_range(20)?;
        let record_dir = dir.path().join("rec");
        fs::create_dir_all(&record_dir)
            .map_err(|e| PeerError::io("creating the recording dir", e))?;
        let xdg = dir.path().join("xdg");
        fs::create_dir_all(&xdg).map_err(|e| PeerError::io("creating the runtime dir", e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&xdg, fs::Permissions::from_mode(0o700))
                .map_err(|e| PeerError::io("restricting the runtime dir", e))?;
        }

        let template_path = crate::peers_dir().join("baresip").join("config");
        let template = fs::read_to_string(&template_path).map_err(|_| PeerError::MissingFile {
            path: template_path.clone(),
        })?;
        let audio_source = match &self.audio_source {
            AudioSource::File(path) => format!("aufile,{}", path.display()),
            AudioSource::Sine(hz) => format!("ausine,{hz}"),
        };
        let ca_line = match &self.ca_file {
            Some(path) => format!("sip_cafile\t\t{}", path.display()),
            None => "#sip_cafile".to_owned(),
        };
        let config = template
            .replace("@SIP_PORT@", &sip_port.to_string())
            .replace("@CTRL_PORT@", &ctrl_port.to_string())
            .replace("@RTP_PORTS@", &format!("{}-{}", rtp.start(), rtp.end()))
            .replace("@AUDIO_SOURCE@", &audio_source)
            .replace("@RECORD_DIR@", &record_dir.to_string_lossy())
            .replace("@SNDFILE@", if self.record { "" } else { "#" })
            .replace("@SIP_CAFILE@", &ca_line);
        dir.write("config", config)?;

        let mut account = self
            .account
            .clone()
            .unwrap_or_else(|| format!("<sip:{}@127.0.0.1:{sip_port}>;regint=0", self.name));
        if self.auto_answer {
            account.push_str(";answermode=auto");
        }
        if !self.codecs.is_empty() {
            account.push_str(&format!(";audio_codecs={}", self.codecs.join(",")));
        }
        dir.write("accounts", format!("{account}\n"))?;
        dir.write("contacts", "")?;

        let seconds = self.lifetime.as_secs().max(1);
        let mut process = PeerProcess::spawn(SpawnSpec {
            name: "baresip",
            program,
            args: vec![
                "-f".into(),
                dir.path().into(),
                "-t".into(),
                seconds.to_string().into(),
            ],
            work_dir: dir.path(),
            env: vec![
                (OsString::from("HOME"), dir.path().into()),
                (OsString::from("XDG_RUNTIME_DIR"), xdg.into()),
            ],
            lifetime: self.lifetime + Duration::from_secs(10),
        })?;
        net::wait_until(
            &mut process,
            "the ctrl_tcp socket",
            Duration::from_secs(10),
            || Ok(net::is_listening(Protocol::Tcp, ctrl_port)),
        )?;
        let control = Control::connect(ctrl_port)?;
        Ok(Baresip {
            name: self.name,
            account,
            control,
            process,
            sip_port,
            ctrl_port,
            record_dir,
            dir,
        })
    }
}

/// One event pushed by baresip (`{"event":true,"type":"CALL_ESTABLISHED",...}`).
#[derive(Debug, Clone, PartialEq)]
pub struct BaresipEvent {
    /// `type`: `REGISTER_OK`, `CALL_INCOMING`, `CALL_ESTABLISHED`,
    /// `CALL_CLOSED`, `CALL_DTMF_START`, ...
    pub kind: String,
    /// `param`: the reason of a close, the digit of a DTMF event, ...
    pub param: String,
    /// `peeruri`, when the event belongs to a call.
    pub peer_uri: String,
    /// The whole JSON object.
    pub raw: Value,
}

/// A running baresip instance: one account, a control connection opened at
/// start (so no event is missed), stopped on drop.
#[derive(Debug)]
pub struct Baresip {
    name: String,
    account: String,
    control: Control,
    process: PeerProcess,
    sip_port: u16,
    ctrl_port: u16,
    record_dir: PathBuf,
    dir: WorkDir,
}

impl Baresip {
    /// A builder for an instance called `name` (used for the work dir and,
    /// without an account, as the user part).
    #[must_use]
    pub fn builder(name: &str) -> BaresipBuilder {
        BaresipBuilder {
            name: name.to_owned(),
            account: None,
            auto_answer: false,
            codecs: Vec::new(),
            audio_source: AudioSource::Sine(440),
            record: false,
            ca_file: None,
            lifetime: Duration::from_secs(300),
        }
    }

    /// The instance name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The account line as written to the `accounts` file.
    #[must_use]
    pub fn account(&self) -> &str {
        &self.account
    }

    /// SIP listen port on 127.0.0.1.
    #[must_use]
    pub fn sip_port(&self) -> u16 {
        self.sip_port
    }

    /// ctrl_tcp port on 127.0.0.1.
    #[must_use]
    pub fn ctrl_port(&self) -> u16 {
        self.ctrl_port
    }

    /// PID of the baresip process.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The work dir (config, accounts, log, recordings).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of the log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Sends a long command (`dial`, `hangup`, `reginfo`, ...) and returns
    /// the `data` of the answer.
    ///
    /// # Errors
    ///
    /// [`PeerError::Control`] when baresip answers `ok: false`,
    /// [`PeerError::Timeout`] without an answer in 10 s.
    pub fn command(&self, command: &str, params: &str) -> Result<String> {
        self.control.command(command, params)
    }

    /// Calls `uri`.
    ///
    /// # Errors
    ///
    /// As [`Self::command`].
    pub fn dial(&self, uri: &str) -> Result<()> {
        self.command("dial", uri).map(|_| ())
    }

    /// Answers the incoming call.
    ///
    /// # Errors
    ///
    /// As [`Self::command`].
    pub fn answer(&self) -> Result<()> {
        self.command("accept", "").map(|_| ())
    }

    /// Hangs up the current call.
    ///
    /// # Errors
    ///
    /// As [`Self::command`].
    pub fn hangup(&self) -> Result<()> {
        self.command("hangup", "").map(|_| ())
    }

    /// Sends DTMF digits (`0-9`, `*`, `#`, `A-D`) in the current call
    /// (RFC 4733 events when negotiated).
    ///
    /// # Errors
    ///
    /// [`PeerError::InvalidArgument`] for other characters, else as
    /// [`Self::command`].
    pub fn send_dtmf(&self, digits: &str) -> Result<()> {
        if digits.is_empty()
            || !digits
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
        {
            return Err(PeerError::InvalidArgument(format!(
                "not DTMF digits: {digits:?}"
            )));
        }
        self.command("sndcode", digits).map(|_| ())
    }

    /// Every event received so far.
    #[must_use]
    pub fn events(&self) -> Vec<BaresipEvent> {
        self.control
            .lock()
            .events
            .iter()
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Waits for the first not yet taken event of `kind` (received before or
    /// after this call) and takes it.
    ///
    /// # Errors
    ///
    /// [`PeerError::Timeout`].
    pub fn wait_event(&self, kind: &str, limit: Duration) -> Result<BaresipEvent> {
        self.wait_event_matching(&format!("event {kind}"), limit, |e| e.kind == kind)
    }

    /// Like [`Self::wait_event`] with any predicate; `what` names it in the error.
    ///
    /// # Errors
    ///
    /// [`PeerError::Timeout`].
    pub fn wait_event_matching(
        &self,
        what: &str,
        limit: Duration,
        mut predicate: impl FnMut(&BaresipEvent) -> bool,
    ) -> Result<BaresipEvent> {
        let deadline = Instant::now() + limit;
        let mut inbox = self.control.lock();
        loop {
            if let Some((event, taken)) = inbox
                .events
                .iter_mut()
                .find(|(e, taken)| !*taken && predicate(e))
            {
                *taken = true;
                return Ok(event.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || inbox.closed {
                return Err(PeerError::Timeout {
                    peer: format!("baresip {}", self.name),
                    what: what.to_owned(),
                    waited: limit,
                });
            }
            inbox = self.control.wait(inbox, left);
        }
    }

    /// Waits until the account is registered: a `REGISTER_OK` event, or
    /// `reginfo` showing `OK`. A `REGISTER_FAIL` event or `ERR` in `reginfo`
    /// (for example after a wrong password) ends the wait with an error.
    ///
    /// # Errors
    ///
    /// [`PeerError::Control`] when the registration failed (with the reason),
    /// [`PeerError::Timeout`] (with the log tail in the message).
    pub fn wait_registered(&self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let events = self.events();
            if events.iter().any(|e| e.kind == "REGISTER_OK") {
                return Ok(());
            }
            if let Some(fail) = events.iter().find(|e| e.kind == "REGISTER_FAIL") {
                return Err(PeerError::Control {
                    peer: format!("baresip {}", self.name),
                    command: "register".into(),
                    message: format!("REGISTER_FAIL: {}", fail.param),
                });
            }
            let info = strip_ansi(&self.command("reginfo", "")?);
            let mut accounts = info.lines().filter(|l| l.starts_with('>'));
            if let Some(line) = accounts.clone().find(|l| l.contains(" ERR ")) {
                return Err(PeerError::Control {
                    peer: format!("baresip {}", self.name),
                    command: "register".into(),
                    message: format!("registration failed: {}", line.trim()),
                });
            }
            if accounts.any(|l| l.contains(" OK ")) {
                return Ok(());
            }
            if start.elapsed() >= limit {
                return Err(PeerError::Timeout {
                    peer: format!("baresip {}", self.name),
                    what: format!(
                        "registration; reginfo: {info}\nlast log lines:\n{}",
                        self.log_tail(20)
                    ),
                    waited: limit,
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The WAV files recorded so far (with [`BaresipBuilder::with_recording`]).
    #[must_use]
    pub fn recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.record_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "wav"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// The newest recording of received (decoded) audio, `*-dec.wav`.
    #[must_use]
    pub fn received_audio(&self) -> Option<PathBuf> {
        self.recordings()
            .into_iter()
            .rfind(|p| p.to_string_lossy().ends_with("-dec.wav"))
    }

    /// Sends `quit` (which un-registers), waits up to 3 s, then stops the
    /// process by its PID.
    ///
    /// # Errors
    ///
    /// As [`PeerProcess::stop`].
    pub fn stop(mut self) -> Result<()> {
        self.shutdown().map(|_| ())
    }

    fn shutdown(&mut self) -> Result<std::process::ExitStatus> {
        if self.process.is_running() {
            let _ = self.control.send("quit", "");
            let _ = self.process.wait_timeout(Duration::from_secs(3));
        }
        self.control.close();
        self.process.stop()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The netstring-framed JSON control connection (`LEN:JSON,`).
#[derive(Debug)]
struct Control {
    stream: TcpStream,
    shared: Arc<(Mutex<Inbox>, Condvar)>,
    next_token: Mutex<u64>,
}

#[derive(Debug, Default)]
struct Inbox {
    events: Vec<(BaresipEvent, bool)>,
    responses: Vec<Value>,
    closed: bool,
}

impl Control {
    fn connect(port: u16) -> Result<Self> {
        let stream = TcpStream::connect((net::LOCALHOST, port))
            .map_err(|e| PeerError::io(format!("connecting to ctrl_tcp on port {port}"), e))?;
        let reader = stream
            .try_clone()
            .map_err(|e| PeerError::io("duplicating the control socket", e))?;
        let shared = Arc::new((Mutex::new(Inbox::default()), Condvar::new()));
        let for_reader = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("baresip-ctrl-{port}"))
            .spawn(move || read_loop(reader, &for_reader))
            .map_err(|e| PeerError::io("starting the control reader", e))?;
        Ok(Self {
            stream,
            shared,
            next_token: Mutex::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Inbox>, limit: Duration) -> MutexGuard<'a, Inbox> {
        match self.shared.1.wait_timeout(guard, limit) {
            Ok((guard, _)) => guard,
            Err(e) => e.into_inner().0,
        }
    }

    fn send(&self, command: &str, params: &str) -> Result<String> {
        let token = {
            let mut next = self.next_token.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            format!("testkit-{next}")
        };
        let body = json!({ "command": command, "params": params, "token": token }).to_string();
        let frame = format!("{}:{body},", body.len());
        (&self.stream)
            .write_all(frame.as_bytes())
            .map_err(|e| PeerError::io(format!("sending `{command}` to baresip"), e))?;
        Ok(token)
    }

    fn command(&self, command: &str, params: &str) -> Result<String> {
        let token = self.send(command, params)?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let mut inbox = self.lock();
        loop {
            if let Some(i) = inbox
                .responses
                .iter()
                .position(|r| r.get("token").and_then(Value::as_str) == Some(token.as_str()))
            {
                let response = inbox.responses.remove(i);
                let data = response
                    .get("data")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if response.get("ok").and_then(Value::as_bool) == Some(true) {
                    return Ok(data);
                }
                return Err(PeerError::Control {
                    peer: "baresip".into(),
                    command: format!("{command} {params}"),
                    message: data,
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || inbox.closed {
                return Err(PeerError::Timeout {
                    peer: "baresip".into(),
                    what: format!("the answer to `{command}`"),
                    waited: COMMAND_TIMEOUT,
                });
            }
            inbox = self.wait(inbox, left);
        }
    }

    fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.close();
    }
}

fn read_loop(mut stream: TcpStream, shared: &(Mutex<Inbox>, Condvar)) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        let mut frames = Vec::new();
        loop {
            match take_netstring(&mut buffer) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(()) => {
                    buffer.clear();
                    break;
                }
            }
        }
        if frames.is_empty() {
            continue;
        }
        let mut inbox = shared.0.lock().unwrap_or_else(|e| e.into_inner());
        for frame in frames {
            let Ok(value) = serde_json::from_slice::<Value>(&frame) else {
                continue;
            };
            if value.get("event").and_then(Value::as_bool) == Some(true) {
                let text = |key: &str| {
                    value
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let event = BaresipEvent {
                    kind: text("type"),
                    param: text("param"),
                    peer_uri: text("peeruri"),
                    raw: value.clone(),
                };
                inbox.events.push((event, false));
            } else if value.get("response").and_then(Value::as_bool) == Some(true) {
                inbox.responses.push(value);
            }
        }
        shared.1.notify_all();
    }
    let mut inbox = shared.0.lock().unwrap_or_else(|e| e.into_inner());
    inbox.closed = true;
    shared.1.notify_all();
}

/// Removes terminal colour sequences (`ESC [ ... m`) from baresip's text.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Removes one complete netstring from the front of `buffer`.
/// `Ok(None)`: incomplete; `Err`: not a netstring.
fn take_netstring(buffer: &mut Vec<u8>) -> std::result::Result<Option<Vec<u8>>, ()> {
    let Some(colon) = buffer.iter().position(|&b| b == b':') else {
        return if buffer.len() > 10 { Err(()) } else { Ok(None) };
    };
    let len: usize = std::str::from_utf8(&buffer[..colon])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(())?;
    let end = colon + 1 + len;
    if buffer.len() <= end {
        return Ok(None);
    }
    if buffer[end] != b',' {
        return Err(());
    }
    let frame = buffer[colon + 1..end].to_vec();
    buffer.drain(..=end);
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstrings_are_split_across_reads() {
        let mut buffer = b"5:hello,3:ab".to_vec();
        assert_eq!(take_netstring(&mut buffer), Ok(Some(b"hello".to_vec())));
        assert_eq!(take_netstring(&mut buffer), Ok(None));
        buffer.extend_from_slice(b"c,");
        assert_eq!(take_netstring(&mut buffer), Ok(Some(b"abc".to_vec())));
        assert!(buffer.is_empty());
    }

    #[test]
    fn colour_sequences_are_stripped() {
        let line = "> sip:carol@127.0.0.1:5060  \u{1b}[31mERR\u{1b}[;m kamailio";
        assert_eq!(strip_ansi(line), "> sip:carol@127.0.0.1:5060  ERR kamailio");
    }

    #[test]
    fn a_broken_netstring_is_rejected() {
        assert_eq!(take_netstring(&mut b"3:abcX".to_vec()), Err(()));
        assert_eq!(take_netstring(&mut b"x:abc,".to_vec()), Err(()));
    }
}
