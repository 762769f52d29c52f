//! Command-line options shared by the commands, and turning them into a
//! phone configuration.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result};
use clap::Args;
use config_export::{Account, Config, Secret, SrtpPolicy, Transport, TrustAnchor};
use softphone::diagnostics::{
    CrashConfig, CrashGuard, LogConfig, LogGuard, PERSONAL_DATA_WARNING,
    init_logging as init_logging_with,
};
use softphone::{AudioSetup, Listen, PhoneConfig};

/// A mistake in the arguments (exit status 2).
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An error and its causes on one line, as `{:#}` prints them, leaving out
/// a cause whose text the link before already holds: the libraries' errors
/// name their cause in their own message and also return it as `source`.
pub(crate) fn describe(error: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if previous.is_empty() || !previous.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        previous = text;
    }
    out
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

#[derive(Args, Debug, Clone)]
pub(crate) struct AccountArgs {
    /// The registrar, e.g. sip:pbx.example.com or sip:127.0.0.1:5060.
    #[arg(long)]
    pub(crate) registrar: Option<String>,
    /// SIP user name (the user part of our address).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Digest password (prefer the DIALER_PASSWORD environment variable: the
    /// command line is visible to other users).
    #[arg(long, env = "DIALER_PASSWORD", hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// Digest user name when it differs from --user.
    #[arg(long)]
    pub(crate) auth_user: Option<String>,
    /// Our display name.
    #[arg(long)]
    pub(crate) display_name: Option<String>,
    /// udp, tcp, tls, ws or wss.
    #[arg(long, default_value = "udp")]
    pub(crate) transport: String,
    /// A CA certificate (PEM) that TLS servers must chain to; default: the system's roots.
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// Local address to bind SIP and RTP to.
    #[arg(long, default_value = "0.0.0.0")]
    pub(crate) bind: IpAddr,
    /// Local SIP port (0: any).
    #[arg(long, default_value_t = 0)]
    pub(crate) sip_port: u16,
    /// An outbound (relay) proxy that signalling goes through, e.g.
    /// sip:relay.example.com;transport=tls (repeat for several).
    #[arg(long = "proxy")]
    pub(crate) proxies: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct MediaArgs {
    /// Codec to use: pcmu, pcma or opus (default: opus, then pcmu, then pcma).
    #[arg(long)]
    pub(crate) codec: Option<String>,
    /// SRTP: off, optional or mandatory (default: the configuration's, else optional).
    #[arg(long)]
    pub(crate) srtp: Option<String>,
    /// Send this WAV file instead of the microphone.
    #[arg(long)]
    pub(crate) play: Option<PathBuf>,
    /// Record what the far end sends to this WAV file.
    #[arg(long)]
    pub(crate) record: Option<PathBuf>,
    /// RTP ports to use, LOW-HIGH.
    #[arg(long, default_value = "16384-32767")]
    pub(crate) rtp_ports: String,
    /// A TURN server that relays the call's media: host:port,
    /// turn:host:port[?transport=udp|tcp], or turns:host:port (TLS, the
    /// certificate checked against --ca or the system's roots).
    #[arg(long)]
    pub(crate) turn: Option<String>,
    /// TURN user (long-term credentials).
    #[arg(long)]
    pub(crate) turn_user: Option<String>,
    /// TURN password.
    #[arg(long, env = "DIALER_TURN_PASSWORD", hide_env_values = true)]
    pub(crate) turn_password: Option<String>,
}

/// The log file of this run (`--log-file`, else the profile's), which the
/// phone purges by the retention setting. Set once by `main`.
pub(crate) static LOG_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The phone configuration for the options: one account `cli`.
pub(crate) fn phone_config(
    profile: &Path,
    account: &AccountArgs,
    media: Option<&MediaArgs>,
    needs_registrar: bool,
) -> Result<PhoneConfig> {
    // Without account options, the profile's configuration (provisioned,
    // imported or set) is used; with them, its privacy settings still hold
    // (history and log retention, personal data in logs).
    let effective = match &account.registrar {
        None => crate::profile::effective(profile)?,
        // Main has said already when the profile's configuration is unusable.
        Some(_) => crate::profile::effective(profile).ok().flatten(),
    };
    let privacy = effective
        .as_ref()
        .map(|c| c.privacy.clone())
        .unwrap_or_default();
    let stored = match &account.registrar {
        None => effective.filter(|c| !c.accounts.is_empty()),
        Some(_) => None,
    };
    let transport = Transport::from_str(&account.transport.to_ascii_lowercase()).map_err(|_| {
        usage(format!(
            "--transport {:?}: use udp, tcp, tls, ws or wss",
            account.transport
        ))
    })?;
    let user = account.user.clone().unwrap_or_else(|| "dialer".to_owned());
    let register = account.registrar.is_some() || stored.is_some();
    if needs_registrar && !register {
        return Err(usage("--registrar, --user and --password are needed"));
    }
    let registrar = match &account.registrar {
        Some(r) => r.clone(),
        None => {
            let ip = if account.bind.is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                account.bind.to_string()
            };
            format!("sip:{ip}")
        }
    };
    if account.registrar.is_some() && account.user.is_none() {
        return Err(usage("--registrar needs --user"));
    }
    let mut acct = Account::new("cli", user, registrar);
    acct.outbound_proxies = account.proxies.clone();
    acct.password = account.password.clone().map(Secret::new);
    acct.auth_user = account.auth_user.clone();
    acct.display_name = account.display_name.clone();
    acct.transport = transport;
    let mut config = match stored {
        Some(c) => c,
        None => {
            let mut c = Config::default();
            c.accounts.push(acct);
            c.privacy = privacy;
            c
        }
    };
    if let Some(ca) = &account.ca {
        if !ca.is_file() {
            return Err(usage(format!("--ca {}: no such file", ca.display())));
        }
        config
            .tls
            .trust
            .push(TrustAnchor::File(ca.display().to_string()));
    }
    let mut audio = AudioSetup::Auto;
    let mut rtp_ports = None;
    if let Some(m) = media {
        if let Some(codec) = &m.codec {
            let name = match codec.to_ascii_lowercase().as_str() {
                "pcmu" => "PCMU",
                "pcma" => "PCMA",
                "opus" => "opus",
                other => return Err(usage(format!("--codec {other:?}: use pcmu, pcma or opus"))),
            };
            config.media.codecs = vec![name.to_owned()];
        }
        if let Some(srtp) = &m.srtp {
            config.media.srtp = SrtpPolicy::from_str(&srtp.to_ascii_lowercase())
                .map_err(|_| usage(format!("--srtp {srtp:?}: use off, optional or mandatory")))?;
        }
        let bad_ports = || {
            usage(format!(
                "--rtp-ports {:?}: use LOW-HIGH, e.g. 16384-32767",
                m.rtp_ports
            ))
        };
        let (lo, hi) = m.rtp_ports.split_once('-').ok_or_else(bad_ports)?;
        let (lo, hi): (u16, u16) = (
            lo.trim().parse().map_err(|_| bad_ports())?,
            hi.trim().parse().map_err(|_| bad_ports())?,
        );
        if lo >= hi {
            return Err(bad_ports());
        }
        rtp_ports = Some((lo, hi));
        if let Some(server) = &m.turn {
            config.relay.turn = Some(config_export::Turn {
                server: server.clone(),
                user: m.turn_user.clone(),
                password: m.turn_password.clone().map(Secret::new),
                extra: Default::default(),
            });
        }
        if m.play.is_some() || m.record.is_some() {
            if let Some(p) = &m.play
                && !p.is_file()
            {
                return Err(usage(format!("--play {}: no such file", p.display())));
            }
            audio = AudioSetup::Wav {
                play: m.play.clone(),
                record: m.record.clone(),
            };
        }
    }
    let mut pc = PhoneConfig::new(config);
    pc.bind = account.bind;
    pc.sip_port = account.sip_port;
    pc.listen = Listen::UdpAndTcp;
    pc.register = register;
    pc.audio = audio;
    pc.history = Some(profile.join("history.sqlite"));
    pc.contacts = Some(profile.join(contacts::DATABASE_FILE));
    pc.log_file = Some(
        LOG_FILE
            .get()
            .cloned()
            .unwrap_or_else(|| profile.join("logs").join("dialer.log")),
    );
    // Registrations through relay proxies carry this installation's
    // +sip.instance, kept in the profile like `dialer register`'s.
    if pc
        .config
        .accounts
        .iter()
        .any(|a| !a.outbound_proxies.is_empty())
    {
        pc.instance = Some(crate::relay::instance_id(profile)?);
    }
    if let Some(p) = rtp_ports {
        pc.rtp_ports = p;
    }
    Ok(pc)
}

/// The profile directory, created when missing.
pub(crate) fn profile_dir(given: Option<&Path>) -> Result<PathBuf> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => directories::ProjectDirs::from("org", "softphone-rs", "dialer")
            .map(|p| p.data_dir().to_path_buf())
            .ok_or_else(|| usage("no home directory: pass --profile DIR"))?,
    };
    // The profile holds the history, contacts and settings: the owner's only.
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&dir)
        .with_context(|| format!("creating the profile directory {}", dir.display()))?;
    Ok(dir)
}

/// Logs to a rotating file with personal data masked; RUST_LOG overrides
/// -v/-q. Log files older than the retention window are removed.
pub(crate) fn init_logging(
    file: &Path,
    verbose: u8,
    quiet: bool,
    log_pii: bool,
    privacy: &config_export::Privacy,
) -> Result<LogGuard> {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    if let Some(dir) = file.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| usage(format!("--log-file {}: {e}", file.display())))?;
    }
    let mut config = LogConfig::new(filter).with_file(file).with_privacy(privacy);
    if log_pii {
        eprintln!("dialer: warning: {PERSONAL_DATA_WARNING}");
        config = config.with_log_personal_data(true);
    }
    init_logging_with(config).map_err(|e| usage(format!("logging: {e}")))
}

/// Crash reports, only when the user opted in and a DSN is known.
pub(crate) fn init_crash_reports(
    profile: &Path,
    dsn: Option<&str>,
    privacy: &config_export::Privacy,
) -> Result<Option<CrashGuard>> {
    let mut config = CrashConfig::new(concat!("dialer@", env!("CARGO_PKG_VERSION")))
        .with_privacy(privacy)
        .with_private_path(profile);
    if let Some(dsn) = dsn {
        config = config.with_dsn(dsn);
    }
    Ok(softphone::diagnostics::init_crash_reports(config)?)
}

/// `debug crash`: a panic through the crash hook, on a thread of its own.
pub(crate) fn debug_crash(reporting: bool) -> bool {
    let panicked = softphone::diagnostics::trigger_test_panic();
    println!(
        "test panic {}; {}",
        if panicked { "raised" } else { "did not happen" },
        if reporting {
            "a scrubbed crash report was sent"
        } else {
            "no report was sent (crash reports are off: `config set crash_reports on` and --crash-dsn)"
        }
    );
    panicked
}

/// `logs export`: the log files in one bundle, personal data masked.
pub(crate) fn export_logs(log_file: &Path, bundle: &Path) -> Result<bool> {
    let export = softphone::diagnostics::export_logs(log_file, bundle)?;
    println!(
        "exported {} log file(s), {} line(s), to {}",
        export.files.len(),
        export.lines,
        export.bundle.display()
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-off account on the command line keeps the profile's privacy
    /// settings: with history off, no call is recorded.
    #[test]
    fn account_options_keep_the_profiles_privacy_settings() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            account: AccountArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        crate::profile::set(&profile, "privacy/history-retention-days", "0").unwrap();
        crate::profile::set(&profile, "privacy/log-retention-days", "3").unwrap();
        let cli = <Cli as clap::Parser>::parse_from([
            "dialer",
            "--registrar",
            "sip:127.0.0.1",
            "--user",
            "alice",
        ]);
        let pc = phone_config(&profile, &cli.account, None, true).unwrap();
        assert_eq!(pc.config.accounts[0].user, "alice");
        assert_eq!(pc.config.privacy.history_retention_days, 0);
        assert_eq!(pc.config.privacy.log_retention_days, 3);
    }

    #[test]
    fn an_error_shows_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no entry for you");
        let store = provisioning::ProvisionError::Store {
            path: PathBuf::from("/p/provisioned.xml"),
            source: io,
        };
        let error = anyhow::Error::new(store).context("provisioning");
        assert_eq!(
            describe(&error),
            "provisioning: /p/provisioned.xml: no entry for you"
        );
        // A cause the message does not name still shows.
        let error = anyhow::anyhow!("low level").context("high level");
        assert_eq!(describe(&error), "high level: low level");
    }
}
