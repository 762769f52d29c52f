//! Crash reports: off unless the user opted in; when on, a panic becomes a
//! Sentry event that is scrubbed in the process before it is sent.

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use sentry::protocol::{
    AppContext, Context, DeviceContext, Event, Frame, Map, OsContext, Stacktrace,
};
use sentry::types::{Dsn, Scheme};
use sentry::{ClientOptions, Transport, TransportFactory, TransportOptions};

use super::error::CrashError;
use super::scrub::mask_personal_data;
use super::secrets::redact_secrets;

/// The message of [`trigger_test_panic`].
pub const TEST_PANIC_MESSAGE: &str = "test crash requested by the user";

/// Whether and where crash reports go.
///
/// ```
/// use softphone::diagnostics::CrashConfig;
///
/// let privacy = config_export::Privacy::default(); // crash_reports: false
/// let config = CrashConfig::new(concat!("dialer@", env!("CARGO_PKG_VERSION")))
///     .with_privacy(&privacy)
///     .with_dsn("https://public@crash.example.com/4");
/// assert!(!config.enabled);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CrashConfig {
    /// The user's opt-in (`<privacy><crash-reports>`); off by default.
    pub enabled: bool,
    /// Where reports go (`https://KEY@HOST/PROJECT`); plain `http` only to
    /// a loopback address.
    pub dsn: Option<String>,
    /// The release the report names, such as `dialer@0.1.0`.
    pub release: String,
    /// The environment the report names (`production`, `staging`).
    pub environment: Option<String>,
    /// Directories whose paths are replaced by `<private>` in reports (the
    /// profile directory); the home directory is replaced by `~` anyway.
    pub private_paths: Vec<PathBuf>,
    /// How long sending may hold up a crashing process or the guard's drop.
    pub shutdown_timeout: Duration,
}

impl CrashConfig {
    /// Off, no DSN, the given release.
    pub fn new(release: impl Into<String>) -> Self {
        Self {
            enabled: false,
            dsn: None,
            release: release.into(),
            environment: None,
            private_paths: Vec::new(),
            shutdown_timeout: Duration::from_secs(2),
        }
    }

    /// Takes the opt-in from the configuration's `<privacy>`.
    #[must_use]
    pub fn with_privacy(mut self, privacy: &config_export::Privacy) -> Self {
        self.enabled = privacy.crash_reports;
        self
    }

    /// Turns reports on or off.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sends reports to `dsn`.
    #[must_use]
    pub fn with_dsn(mut self, dsn: impl Into<String>) -> Self {
        self.dsn = Some(dsn.into());
        self
    }

    /// Names the environment.
    #[must_use]
    pub fn with_environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// Hides paths under `dir` in reports.
    #[must_use]
    pub fn with_private_path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.private_paths.push(dir.into());
        self
    }

    /// Bounds the time spent sending at a crash and at shutdown.
    #[must_use]
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }
}

/// Turns crash reports on when the user opted in; otherwise returns
/// `Ok(None)` and installs nothing (no panic hook, no client, no thread), so
/// nothing can be sent, whatever the environment (`SENTRY_DSN`) says.
///
/// When on, a panic in any thread becomes one event: the panic message and
/// stack frames, the release, environment, OS, architecture and Rust
/// version. Before it leaves the process it is scrubbed: user, request,
/// host name, breadcrumbs, extra data, local variables and source lines are
/// removed; numbers, URIs, names and IP addresses in messages are masked;
/// secrets removed; home and private directories in paths replaced. Reports
/// go over the workspace's HTTPS client (rustls, certificates verified).
///
/// Call it once, first thing in `main` (reports from other threads go
/// through the client bound here), and keep the guard until the program
/// ends.
///
/// # Errors
///
/// [`CrashError::MissingDsn`], [`CrashError::InvalidDsn`],
/// [`CrashError::InsecureDsn`] and [`CrashError::Client`]; none when the
/// user did not opt in.
pub fn init_crash_reports(config: CrashConfig) -> Result<Option<CrashGuard>, CrashError> {
    if !config.enabled {
        return Ok(None);
    }
    let dsn_text = config.dsn.as_deref().ok_or(CrashError::MissingDsn)?;
    let dsn: Dsn = dsn_text
        .parse()
        .map_err(|e: sentry::types::ParseDsnError| CrashError::InvalidDsn {
            reason: e.to_string(),
        })?;
    if dsn.scheme() != Scheme::Https && !is_loopback_host(dsn.host()) {
        return Err(CrashError::InsecureDsn);
    }
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| CrashError::Client {
            reason: e.to_string(),
        })?;
    let scrubber = Arc::new(EventScrubber::from_environment(&config.private_paths));
    let mut options = ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = Some(Cow::Owned(config.release));
    options.environment = config.environment.map(Cow::Owned);
    // Only what a crash needs: the panic hook, stack traces and the
    // OS/device/runtime contexts.
    options.default_integrations = false;
    options.integrations = vec![
        Arc::new(sentry::integrations::contexts::ContextIntegration::new()),
        Arc::new(sentry::integrations::panic::PanicIntegration::new()),
        Arc::new(sentry::integrations::backtrace::ProcessStacktraceIntegration),
    ];
    options.send_default_pii = false;
    options.max_breadcrumbs = 0;
    options.attach_stacktrace = false;
    options.auto_session_tracking = false;
    options.shutdown_timeout = config.shutdown_timeout;
    options.before_send = Some(Arc::new(move |event| Some(scrubber.scrub_event(event))));
    options.transport = Some(Arc::new(HttpsTransportFactory { client }));
    let guard = sentry::init(options);
    Ok(Some(CrashGuard { guard }))
}

/// Crash reports are on while this lives; dropping it sends what is queued
/// (within the shutdown timeout) and turns them off.
pub struct CrashGuard {
    guard: sentry::ClientInitGuard,
}

impl std::fmt::Debug for CrashGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashGuard")
            .field("enabled", &self.guard.is_enabled())
            .finish()
    }
}

impl CrashGuard {
    /// Waits up to `timeout` for queued reports to be sent; true when the
    /// queue is empty.
    #[must_use]
    pub fn flush(&self, timeout: Duration) -> bool {
        self.guard.flush(Some(timeout))
    }

    /// Panics in a new thread through the same hook as a real crash, then
    /// waits up to `timeout` for the report to go out. True when the panic
    /// happened and the report was sent.
    #[must_use]
    pub fn send_test_report(&self, timeout: Duration) -> bool {
        trigger_test_panic() && self.flush(timeout)
    }
}

/// Panics in a thread of its own (named `crash-test`) with
/// [`TEST_PANIC_MESSAGE`] and returns once it has ended: true when it
/// panicked. With crash reports on, the panic is reported like any other;
/// the caller goes on running. For `dialer debug crash`.
#[must_use]
pub fn trigger_test_panic() -> bool {
    let spawned = thread::Builder::new()
        .name("crash-test".to_owned())
        .spawn(|| panic!("{TEST_PANIC_MESSAGE}"));
    match spawned {
        Ok(handle) => handle.join().is_err(),
        Err(_) => false,
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Sentry's reqwest transport over our own client: the workspace's
/// reqwest and rustls, certificates always verified (the `SSL_VERIFY`
/// environment variable cannot turn that off).
struct HttpsTransportFactory {
    client: reqwest::Client,
}

impl TransportFactory for HttpsTransportFactory {
    fn create_transport_with_options(&self, options: TransportOptions) -> Arc<dyn Transport> {
        Arc::new(
            sentry::transports::ReqwestHttpTransportOptions::from(options)
                .with_client(self.client.clone())
                .build(),
        )
    }
}

/// Removes from an event everything that could name the user.
#[derive(Debug)]
struct EventScrubber {
    /// Path prefixes and what replaces them, longest first.
    paths: Vec<(String, &'static str)>,
    /// The OS account name, replaced wherever it stands as a word.
    user: Option<String>,
}

impl EventScrubber {
    fn from_environment(private: &[PathBuf]) -> Self {
        let home = std::env::var("HOME")
            .ok()
            .or_else(|| std::env::var("USERPROFILE").ok());
        let user = std::env::var("USER")
            .ok()
            .or_else(|| std::env::var("USERNAME").ok());
        Self::new(home, user, private)
    }

    fn new(home: Option<String>, user: Option<String>, private: &[PathBuf]) -> Self {
        let mut paths: Vec<(String, &'static str)> = private
            .iter()
            .filter_map(|p| p.to_str())
            .map(|p| p.trim_end_matches(['/', '\\']).to_owned())
            .filter(|p| p.len() > 1)
            .map(|p| (p, "<private>"))
            .collect();
        if let Some(home) = home
            .map(|h| h.trim_end_matches(['/', '\\']).to_owned())
            .filter(|h| h.len() > 1)
        {
            paths.push((home, "~"));
        }
        paths.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        // A very short account name would hit ordinary words.
        let user = user.filter(|u| u.chars().count() >= 3);
        Self { paths, user }
    }

    fn scrub_event(&self, mut event: Event<'static>) -> Event<'static> {
        event.user = None;
        event.request = None;
        event.server_name = None;
        event.breadcrumbs.values.clear();
        event.extra.clear();
        event.template = None;
        event.debug_meta = Cow::Owned(Default::default());
        event.message = event.message.map(|m| self.scrub_text(&m));
        if let Some(entry) = &mut event.logentry {
            entry.message = self.scrub_text(&entry.message);
            entry.params.clear();
        }
        event.culprit = event.culprit.map(|c| self.scrub_text(&c));
        event.transaction = event.transaction.map(|t| self.scrub_text(&t));
        event.fingerprint = Cow::Owned(
            event
                .fingerprint
                .iter()
                .map(|f| Cow::Owned(self.scrub_text(f)))
                .collect(),
        );
        for value in event.tags.values_mut() {
            *value = self.scrub_text(value);
        }
        for exception in &mut event.exception.values {
            exception.value = exception.value.as_deref().map(|v| self.scrub_text(v));
            if let Some(mechanism) = &mut exception.mechanism {
                mechanism.description =
                    mechanism.description.as_deref().map(|d| self.scrub_text(d));
                mechanism.data.clear();
            }
            self.scrub_stacktrace(exception.stacktrace.as_mut());
            self.scrub_stacktrace(exception.raw_stacktrace.as_mut());
        }
        for thread in &mut event.threads.values {
            thread.name = thread.name.as_deref().map(|n| self.scrub_text(n));
            self.scrub_stacktrace(thread.stacktrace.as_mut());
            self.scrub_stacktrace(thread.raw_stacktrace.as_mut());
        }
        self.scrub_stacktrace(event.stacktrace.as_mut());
        event.contexts = scrub_contexts(std::mem::take(&mut event.contexts));
        event
    }

    fn scrub_stacktrace(&self, stacktrace: Option<&mut Stacktrace>) {
        let Some(stacktrace) = stacktrace else {
            return;
        };
        stacktrace.registers.clear();
        for frame in &mut stacktrace.frames {
            self.scrub_frame(frame);
        }
    }

    fn scrub_frame(&self, frame: &mut Frame) {
        frame.filename = frame.filename.as_deref().map(|p| self.scrub_path(p));
        frame.abs_path = frame.abs_path.as_deref().map(|p| self.scrub_path(p));
        frame.package = frame.package.as_deref().map(|p| self.scrub_path(p));
        frame.pre_context.clear();
        frame.context_line = None;
        frame.post_context.clear();
        frame.vars.clear();
    }

    /// Free text: paths first (masking would break their prefixes), then
    /// secrets and personal data.
    fn scrub_text(&self, text: &str) -> String {
        let paths = self.scrub_path(text);
        let redacted = redact_secrets(&paths);
        mask_personal_data(&redacted).into_owned()
    }

    fn scrub_path(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (prefix, with) in &self.paths {
            if out.contains(prefix.as_str()) {
                out = out.replace(prefix.as_str(), with);
            }
        }
        out = replace_home_segments(&out);
        if let Some(user) = &self.user {
            out = replace_word(&out, user, "<user>");
        }
        out
    }
}

/// `/home/NAME`, `/Users/NAME`, `C:\Users\NAME` -> `<user>` in place of
/// NAME; `/root/` -> `~/`.
fn replace_home_segments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for marker in ["/home/", "/Users/", "\\Users\\", "\\users\\"] {
            if rest.starts_with(marker) {
                out.push_str(marker);
                let after = &rest[marker.len()..];
                let end = after
                    .find(|c: char| {
                        matches!(c, '/' | '\\' | ' ' | '"' | '\'' | ':' | ')') || c.is_whitespace()
                    })
                    .unwrap_or(after.len());
                if end > 0 && !after[..end].starts_with('<') {
                    out.push_str("<user>");
                } else {
                    out.push_str(&after[..end]);
                }
                rest = &after[end..];
                continue 'outer;
            }
        }
        if rest.starts_with("/root/") && !out.ends_with(|c: char| c.is_alphanumeric()) {
            out.push_str("~/");
            rest = &rest["/root/".len()..];
            continue;
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// `word` replaced where it stands alone (not inside a longer word).
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(word) {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        let alone =
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric);
        if alone && at >= last {
            out.push_str(&text[last..at]);
            out.push_str(with);
            last = at + word.len();
        }
    }
    out.push_str(&text[last..]);
    out
}

/// Keeps the OS, device (model and architecture), runtime and app
/// (name and version) contexts, each without fields that could identify
/// the machine or its user; drops all others.
fn scrub_contexts(contexts: Map<String, Context>) -> Map<String, Context> {
    let mut kept = Map::new();
    for (key, context) in contexts {
        let context = match context {
            Context::Os(os) => Context::Os(Box::new(OsContext {
                name: os.name,
                version: os.version,
                build: os.build,
                kernel_version: os.kernel_version,
                ..OsContext::default()
            })),
            Context::Device(device) => Context::Device(Box::new(DeviceContext {
                family: device.family,
                model: device.model,
                arch: device.arch,
                simulator: device.simulator,
                ..DeviceContext::default()
            })),
            Context::Runtime(runtime) => Context::Runtime(runtime),
            Context::App(app) => Context::App(Box::new(AppContext {
                app_name: app.app_name,
                app_version: app.app_version,
                app_build: app.app_build,
                build_type: app.build_type,
                ..AppContext::default()
            })),
            _ => continue,
        };
        kept.insert(key, context);
    }
    kept
}

#[cfg(test)]
mod tests {
    use sentry::protocol::{Exception, User, Values};

    use super::*;

    fn scrubber() -> EventScrubber {
        EventScrubber::new(
            Some("/home/jdoe".to_owned()),
            Some("jdoe".to_owned()),
            &[PathBuf::from("/home/jdoe/.local/share/dialer")],
        )
    }

    #[test]
    fn events_lose_user_host_and_personal_text() {
        let mut event = Event::new();
        event.user = Some(User {
            username: Some("jdoe".to_owned()),
            ..User::default()
        });
        event.server_name = Some("jdoe-laptop".into());
        event.release = Some("dialer@0.1.0".into());
        event.exception = Values {
            values: vec![Exception {
                ty: "panic".to_owned(),
                value: Some(
                    "call from \"Jane Doe\" <sip:jane.doe@pbx.example.com> +4930123456789 \
                     via 203.0.113.5 failed: /home/jdoe/.local/share/dialer/history.sqlite; \
                     /home/jdoe/notes.txt; password=hunter2"
                        .to_owned(),
                ),
                stacktrace: Some(Stacktrace {
                    frames: vec![Frame {
                        abs_path: Some("/home/jdoe/src/app/main.rs".to_owned()),
                        context_line: Some("let secret = 1;".to_owned()),
                        ..Frame::default()
                    }],
                    ..Stacktrace::default()
                }),
                ..Exception::default()
            }],
        };
        let device = DeviceContext {
            name: Some("jdoe-laptop".to_owned()),
            arch: Some("x86_64".to_owned()),
            ..DeviceContext::default()
        };
        event
            .contexts
            .insert("device".to_owned(), Context::Device(Box::new(device)));
        event
            .contexts
            .insert("other".to_owned(), Context::Other(Map::new()));

        let event = scrubber().scrub_event(event);
        let json = serde_json_text(&event);
        for planted in [
            "jdoe",
            "Jane",
            "jane.doe",
            "0123456789",
            "203.0.113.5",
            "hunter2",
        ] {
            assert!(!json.contains(planted), "{planted} in {json}");
        }
        let value = event.exception.values[0].value.as_deref().unwrap();
        assert!(value.contains("<private>/history.sqlite"), "{value}");
        assert!(value.contains("~/notes.txt"), "{value}");
        let frame = &event.exception.values[0]
            .stacktrace
            .as_ref()
            .unwrap()
            .frames[0];
        assert_eq!(frame.abs_path.as_deref(), Some("~/src/app/main.rs"));
        assert_eq!(frame.context_line, None);
        assert!(json.contains("x86_64") && json.contains("dialer@0.1.0"));
        assert!(!event.contexts.contains_key("other"));
    }

    fn serde_json_text(event: &Event<'static>) -> String {
        serde_json::to_string(event).unwrap()
    }

    #[test]
    fn home_segments_of_other_accounts_are_replaced() {
        assert_eq!(
            replace_home_segments("at /home/alice/x.rs and C:\\Users\\Bob\\y and /root/.cargo/z"),
            "at /home/<user>/x.rs and C:\\Users\\<user>\\y and ~/.cargo/z"
        );
        assert_eq!(
            replace_word("jdoe jdoes /x/jdoe", "jdoe", "<user>"),
            "<user> jdoes /x/<user>"
        );
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        let off = init_crash_reports(CrashConfig::new("t").with_dsn("http://k@203.0.113.1/1"));
        assert!(
            matches!(off, Ok(None)),
            "off means nothing is checked or installed"
        );
        let insecure = init_crash_reports(
            CrashConfig::new("t")
                .with_enabled(true)
                .with_dsn("http://k@crash.example.com/1"),
        );
        assert!(matches!(insecure, Err(CrashError::InsecureDsn)));
        let missing = init_crash_reports(CrashConfig::new("t").with_enabled(true));
        assert!(matches!(missing, Err(CrashError::MissingDsn)));
        let invalid = init_crash_reports(
            CrashConfig::new("t")
                .with_enabled(true)
                .with_dsn("nonsense"),
        );
        assert!(matches!(invalid, Err(CrashError::InvalidDsn { .. })));
        assert!(
            is_loopback_host("127.0.0.1")
                && is_loopback_host("[::1]")
                && is_loopback_host("localhost")
        );
    }
}
