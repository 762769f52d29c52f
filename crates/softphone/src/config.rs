//! How a [`Phone`](crate::Phone) is set up: the configuration document's
//! typed [`Config`] (accounts, media, TLS trust) plus what only a running
//! program knows (where to bind, where to keep state, which audio device).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use config_export::Config;
use media_audio::AudioBackend;

/// Builds an audio backend for each call.
pub type AudioFactory = Arc<dyn Fn() -> Result<Box<dyn AudioBackend>, String> + Send + Sync>;

/// Where a call's audio comes from and goes to.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum AudioSetup {
    /// The default sound card; the null device (with a notice) when there is none.
    #[default]
    Auto,
    /// Silence out, nothing heard: paced by the clock.
    Null,
    /// Play a WAV file as the microphone and/or record what is heard.
    Wav {
        /// The file sent to the peer (silence when `None`).
        play: Option<PathBuf>,
        /// Where what the peer sends is written.
        record: Option<PathBuf>,
    },
    /// A backend of the integrator's own, made fresh for each call. The
    /// factory and the backend's `open` run on a blocking thread while the
    /// call starts on the null device, and may still run after a call that
    /// ended at once (the device is then closed unused).
    Custom(AudioFactory),
}

impl fmt::Debug for AudioSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioSetup::Auto => f.write_str("Auto"),
            AudioSetup::Null => f.write_str("Null"),
            AudioSetup::Wav { play, record } => f
                .debug_struct("Wav")
                .field("play", play)
                .field("record", record)
                .finish(),
            AudioSetup::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// How the phone finds the servers of a SIP domain (RFC 3263: NAPTR, SRV,
/// then A/AAAA), for registrars and proxies named by domain.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Dns {
    /// The system's DNS servers (`/etc/resolv.conf`); host name lookups
    /// only (A/AAAA through the system resolver) where there is no such
    /// configuration.
    #[default]
    System,
    /// A resolver of the integrator's own (or a
    /// [`StaticResolver`](sip_tokio::StaticResolver) in tests).
    Custom(Arc<dyn sip_tokio::Resolver>),
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dns::System => f.write_str("System"),
            Dns::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// Which SIP listeners the phone opens besides the connections it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// UDP only (always open: responses and requests over UDP need it).
    Udp,
    /// UDP and TCP on the same port.
    UdpAndTcp,
}

/// Everything a phone needs to start.
#[derive(Debug, Clone)]
pub struct PhoneConfig {
    /// Accounts, media and TLS settings (the provisioning document's model).
    pub config: Config,
    /// The local address for SIP and RTP sockets. The default,
    /// `0.0.0.0`, binds every interface and advertises the one that routes
    /// to the registrar.
    pub bind: IpAddr,
    /// The SIP port (0: any free port).
    pub sip_port: u16,
    /// Listeners to open.
    pub listen: Listen,
    /// RTP ports to choose from (even RTP, odd RTCP).
    pub rtp_ports: (u16, u16),
    /// Whether accounts register at start.
    pub register: bool,
    /// Audio devices for calls.
    pub audio: AudioSetup,
    /// The call history database; `None` keeps history in memory only.
    pub history: Option<PathBuf>,
    /// The service log file whose rotated files older than the privacy
    /// settings' log retention the phone removes daily (see
    /// [`crate::diagnostics::purge_old_logs`]); `None` leaves logs alone.
    pub log_file: Option<PathBuf>,
    /// The contacts database (the `contacts` crate's store) that names the
    /// callers of incoming calls; `None` leaves names as the caller sent them.
    pub contacts: Option<PathBuf>,
    /// Session timer interval we ask for (RFC 4028); `None` turns session
    /// timers off.
    pub session_expires: Option<Duration>,
    /// How often a [`Quality`](crate::PhoneEvent::Quality) event is sent during a call.
    pub quality_interval: Duration,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// This installation's `+sip.instance` (RFC 5626), used when an account
    /// registers through outbound proxies. Keep it across starts (the
    /// dialer stores it in its profile); `None` makes a new one per start,
    /// so the registrar sees a new device each time.
    pub instance: Option<proxy_client::InstanceId>,
    /// How registrars and proxies named by domain are found.
    pub dns: Dns,
}

impl PhoneConfig {
    /// Defaults around a configuration: bind everything, any SIP port,
    /// RTP ports 16384-32767, register, sound card, 30-minute session
    /// timers, quality every 5 s.
    pub fn new(config: Config) -> Self {
        PhoneConfig {
            config,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            sip_port: 0,
            listen: Listen::Udp,
            rtp_ports: (16384, 32767),
            register: true,
            audio: AudioSetup::Auto,
            history: None,
            contacts: None,
            log_file: None,
            session_expires: Some(Duration::from_secs(1800)),
            quality_interval: Duration::from_secs(5),
            user_agent: format!("softphone-rs/{}", env!("CARGO_PKG_VERSION")),
            instance: None,
            dns: Dns::System,
        }
    }
}
