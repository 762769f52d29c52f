//! # testkit
//!
//! Development-only helpers (`publish = false`) for the workspace's interop
//! tests: launchers that start real third-party peers on 127.0.0.1, and
//! audio checks for what a call carried.
//!
//! | launcher | peer | Debian package |
//! |---|---|---|
//! | [`Sipp`] | `sipp`, scripted SIP traffic, built-in or XML scenarios | `sip-tester` |
//! | [`Kamailio`] | registrar + proxy, digest auth (MD5 or SHA-256), UDP, TCP, TLS | `kamailio` (`kamailio-tls-modules` for TLS) |
//! | [`Baresip`] | a headless user agent, driven over its `ctrl_tcp` socket | `baresip-core` |
//! | [`Slapd`] | OpenLDAP directory of generated people, ldap://, StartTLS, ldaps:// | `slapd`, `ldap-utils` |
//! | [`Coturn`] | TURN relay (RFC 8656): long-term users or a REST secret, relayed traffic read from its log | `coturn` |
//! | [`TestCa`] | a CA and server certificates made with rcgen (no program needed) | — |
//! | [`HttpServer`] | HTTPS (or HTTP) on a thread: documents, Basic/Digest auth, redirects, 304, broken bodies, a request log | — |
//! | [`FakeCloud`] | Google People API, Microsoft Graph contacts delta and an OAuth 2.0 server with PKCE, on plain HTTP: pages, sync tokens, 401/410/429 | — |
//! | [`CrashCollector`] | a Sentry-compatible crash-report endpoint on plain HTTP: keeps the envelopes, hands over the events as JSON | — |
//!
//! ## What every launcher guarantees
//!
//! - **Loopback only.** Everything binds to 127.0.0.1, on ports picked free
//!   at launch ([`free_port`], [`free_udp_range`]), so tests run in parallel
//!   (nextest runs each test in its own process) without clashing.
//! - **Bounded lifetime.** Each peer runs under coreutils `timeout`, so it
//!   dies after its lifetime even if the test hangs or is killed.
//! - **Stops only what it started.** Dropping a launcher (or calling `stop`)
//!   sends SIGTERM to the process group of the PID it started, then SIGKILL
//!   after [`STOP_GRACE`]. Nothing is ever killed by name.
//! - **Readiness, not sleeps.** A start returns once the peer is usable: sipp
//!   servers once their port is bound, Kamailio once it answers an OPTIONS
//!   over UDP, baresip once its control socket is connected. A peer that
//!   exits or does not become ready in time gives a [`PeerError`] with the
//!   last lines of its log.
//! - **A missing peer fails loudly.** [`PeerError::NotInstalled`] names the
//!   binary and the apt package; a test never passes silently because a peer
//!   is absent.
//! - **One work dir per launch** (`/tmp/testkit-<peer>-XXXXXX`) holds the
//!   generated config, the log (`<peer>.log`) and any recordings; it is
//!   removed on drop unless `TESTKIT_KEEP` is set ([`KEEP_ENV`]).
//!
//! The configs and scenarios are shipped in `crates/testkit/peers/` and
//! located through `CARGO_MANIFEST_DIR` ([`peers_dir`]); the launchers fill
//! in ports and paths.
//!
//! ## Example: register with Kamailio, call through it, check the audio
//!
//! ```no_run
//! use std::time::Duration;
//! use testkit::{AudioSource, Baresip, Kamailio, Tone, UaTransport, analyze_wav, write_tone};
//!
//! # fn main() -> Result<(), testkit::PeerError> {
//! let kamailio = Kamailio::start()?; // users alice, bob, carol, dave
//! let dir = tempfile::tempdir().expect("temp dir");
//! let tone = dir.path().join("tone.wav");
//! write_tone(&tone, &Tone::narrowband(1000.0))?; // 8 kHz mono for PCMU
//!
//! let bob = Baresip::builder("bob")
//!     .registering_with(&kamailio, "bob", UaTransport::Udp)?
//!     .with_auto_answer(true)
//!     .with_codecs(&["pcmu"])
//!     .with_audio_source(AudioSource::File(tone.clone()))
//!     .with_recording(true)
//!     .start()?;
//! let alice = Baresip::builder("alice")
//!     .registering_with(&kamailio, "alice", UaTransport::Udp)?
//!     .with_codecs(&["pcmu"])
//!     .with_audio_source(AudioSource::File(tone))
//!     .start()?;
//! bob.wait_registered(Duration::from_secs(5))?;
//! alice.wait_registered(Duration::from_secs(5))?;
//!
//! alice.dial(&kamailio.aor("bob"))?;
//! alice.wait_event("CALL_ESTABLISHED", Duration::from_secs(10))?;
//! std::thread::sleep(Duration::from_secs(3));
//! alice.hangup()?;
//! bob.wait_event("CALL_CLOSED", Duration::from_secs(10))?;
//!
//! let heard = bob.received_audio().expect("a recording");
//! assert!(analyze_wav(&heard, Duration::from_millis(500))?.is_tone(1000.0, 0.05));
//! # Ok(())
//! # }
//! ```
//!
//! ## Example: sipp against sipp
//!
//! ```no_run
//! use testkit::{Scenario, Sipp};
//!
//! # fn main() -> Result<(), testkit::PeerError> {
//! let uas = Sipp::new(Scenario::uas()).spawn()?; // returns once it listens
//! let uac = Sipp::new(Scenario::uac()).with_remote(uas.addr()).run()?;
//! let uas = uas.wait()?;
//! assert!(uac.is_success() && uas.is_success(), "{}", uac.report());
//! assert_eq!(uac.stats.successful_calls, 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## What it is not
//!
//! Not a test framework: tests stay plain `#[test]` functions that use
//! `std` timeouts (every wait here takes a limit). Not for production: it
//! spawns processes and writes temp files freely. The launchers are
//! synchronous; no async runtime is needed.
//!
//! ## Known limits of the peers (Debian 12 versions)
//!
//! - sipp 3.6 has no TLS and computes digest responses with MD5 only.
//! - baresip 1.0 answers digest challenges with MD5 only; its `aufile`
//!   source does not resample (write the WAV at the codec's rate and
//!   channels), and `ausine` works at 48 kHz (opus) only.
//! - Kamailio announces one digest algorithm per instance
//!   ([`DigestAlgorithm`]).

mod audio;
mod baresip;
mod ca;
mod capture;
mod cloud;
mod coturn;
mod crash;
mod error;
mod https;
mod kamailio;
mod net;
mod process;
mod sipp;
mod slapd;

use std::path::PathBuf;

pub use audio::{
    Tone, WavAnalysis, analyze_wav, dominant_frequency, goertzel_power, rms, write_tone,
    zero_crossing_frequency,
};
pub use baresip::{AudioSource, Baresip, BaresipBuilder, BaresipEvent, UaTransport};
pub use ca::{IssuedCert, SERVER_NAMES, TestCa};
pub use capture::{Capture, UdpFlow};
pub use cloud::{ApiRequest, FAKE_CLIENT_ID, FakeCloud, Fault};
pub use coturn::{Coturn, CoturnBuilder, TURN_REALM, TurnAuth, TurnSession, TurnUsage};
pub use crash::{CRASH_KEY, CRASH_PROJECT, CrashCollector, Envelope, EnvelopeItem};
pub use error::{PeerError, Result};
pub use https::{
    DEFAULT_HTTP_LIFETIME, HTTP_REALM, HttpServer, HttpServerBuilder, LoggedRequest, Resource,
};
pub use kamailio::{
    Binding, DigestAlgorithm, Kamailio, KamailioBuilder, SipUser, default_users, options_ping,
};
pub use net::{
    LOCALHOST, Protocol, free_port, free_udp_range, is_listening, tcp_connects, wait_for_log_line,
    wait_until,
};
pub use process::{
    KEEP_ENV, PeerProcess, STOP_GRACE, SpawnSpec, WorkDir, cpu_seconds, cpu_seconds_with_children,
    find_binary, tail_lines,
};
pub use sipp::{Scenario, ShippedScenario, Sipp, SippOutcome, SippRun, SippStats, SippTransport};
pub use slapd::{
    DirectoryPerson, LDAP_ADMIN_DN, LDAP_ADMIN_PASSWORD, LDAP_BASE_DN, LDAP_PEOPLE_DN, Slapd,
    SlapdBuilder, directory_people, ldif_attribute, tiny_jpeg,
};

/// `crates/testkit/peers/`: the shipped configs and scenarios.
#[must_use]
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// A file shipped for `peer` under [`peers_dir`].
fn shipped(peer: &str, name: &str) -> Result<String> {
    let path = peers_dir().join(peer).join(name);
    std::fs::read_to_string(&path).map_err(|_| PeerError::MissingFile { path })
}
