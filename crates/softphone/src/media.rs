//! A call's media: RTP sockets (media-tokio), the audio stream
//! (media-engine) and the audio device (media-audio), put together.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use media_audio::{
    AudioBackend, AudioDevice, AudioEvent, AudioFormat, AudioGuard, BackendChoice, select_backend,
};
use media_engine::dtmf::Digit;
use media_engine::negotiation::{Codec, MediaSettings, NegotiatedAudio};
use media_engine::srtp::SrtpSuite;
use media_engine::stream::{AudioStream, AudioStreamConfig, AudioStreamEvent, StreamStatistics};
use media_tokio::{
    AudioChannel, AudioChannelHandle, ChannelConfig, ChannelError, ChannelStatistics, MediaSockets,
    PortRange,
};
use tokio::sync::{mpsc, oneshot};

use crate::diagnostics::Pii;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::AudioSetup;
use crate::error::PhoneError;
use crate::event::{CallId, QualityReport};

/// What media tells the phone's task.
#[derive(Debug)]
pub(crate) enum MediaEvent {
    /// An RFC 4733 digit arrived.
    Dtmf { call: CallId, digit: char },
    /// Something the user should know, e.g. that the call moved to another
    /// audio device.
    Notice { call: CallId, text: String },
}

/// How often a call looks at its audio device's events: a lost device is
/// replaced within about this long.
const DEVICE_CHECK: Duration = Duration::from_millis(200);

/// Device replacements in a row before the null device takes over, so
/// that a device lost again as soon as it opens cannot make the call spin.
const MAX_REOPENS: u32 = 5;

/// A device that ran this long was no instant failure: losing it starts
/// the count of replacements in a row again.
const STEADY_DEVICE: Duration = Duration::from_secs(10);

/// Sockets bound for a call before its offer or answer is written.
#[derive(Debug)]
pub(crate) struct PreparedMedia {
    sockets: MediaSockets,
}

impl PreparedMedia {
    /// The address for the SDP: the local RTP port, or the relayed address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.sockets.rtp_addr()
    }
}

/// Allocates a relayed address on the TURN server when one is configured,
/// else (or when the allocation fails, which is logged) binds an RTP/RTCP
/// port pair from the range.
pub(crate) async fn prepare(
    ip: IpAddr,
    ports: (u16, u16),
    turn: Option<&config_export::Turn>,
    tls: Option<&sip_tokio::TlsClientConfig>,
) -> Result<PreparedMedia, PhoneError> {
    if let Some(turn) = turn {
        match crate::turn::allocate(turn, tls).await {
            Ok(relay) => {
                let sockets = MediaSockets::relayed(Arc::new(relay));
                info!(relayed = %Pii::ip(sockets.rtp_addr()), "media through the TURN relay");
                return Ok(PreparedMedia { sockets });
            }
            Err(e) => warn!(error = %Pii::text(&e), "no TURN relay; media goes direct"),
        }
    }
    let range = PortRange::new(ports.0, ports.1)
        .map_err(|e| PhoneError::Config(format!("RTP ports {}-{}: {e}", ports.0, ports.1)))?;
    // RTCP gets its own port too: the answer may refuse rtcp-mux.
    let sockets = MediaSockets::bind(ip, range, false)
        .await
        .map_err(|e| PhoneError::Network(format!("RTP sockets on {ip}: {e}")))?;
    Ok(PreparedMedia { sockets })
}

fn codec_by_name(name: &str) -> Option<Codec> {
    match name.to_ascii_lowercase().as_str() {
        "opus" => Some(Codec::Opus),
        "pcmu" => Some(Codec::Pcmu),
        "pcma" => Some(Codec::Pcma),
        _ => None,
    }
}

/// Offer/answer settings from the configuration's media section.
pub(crate) fn settings(media: &config_export::Media, ip: IpAddr, port: u16) -> MediaSettings {
    let codecs: Vec<Codec> = media
        .codecs
        .iter()
        .filter_map(|c| codec_by_name(c))
        .collect();
    let mut s = MediaSettings::new(ip, port);
    if !codecs.is_empty() {
        s = s.with_codecs(codecs);
    }
    s = s.with_telephone_event(true);
    match media.srtp {
        config_export::SrtpPolicy::Mandatory => s.with_mandatory_srtp(),
        config_export::SrtpPolicy::Off => {
            s.dangerous().disable_srtp();
            s
        }
        _ => s.with_best_effort_srtp(),
    }
}

fn suite_name(s: SrtpSuite) -> String {
    s.crypto_suite().as_str().to_owned()
}

fn report(channel: &ChannelStatistics) -> QualityReport {
    let stats: &StreamStatistics = &channel.stream;
    QualityReport {
        codec: stats.codec.encoding_name().to_owned(),
        srtp: stats.srtp_suite.map(suite_name),
        packets_sent: stats.packets_sent,
        packets_received: stats.packets_received,
        loss_percent: stats.loss_percent.max(0.0),
        jitter_ms: stats.jitter_ms,
        rtt_ms: stats.round_trip_time.map(|d| d.as_secs_f64() * 1000.0),
        mos: stats.quality.mos,
    }
}

/// A call's running media.
#[derive(Debug)]
pub(crate) struct CallMedia {
    channel: AudioChannelHandle,
    /// Ends the device watcher, which hands back the guard of the device
    /// in use then.
    stop_watcher: oneshot::Sender<()>,
    watcher: JoinHandle<AudioGuard>,
}

/// The backend for a call, and a notice for the user when the sound card
/// could not be used.
fn backend(setup: &AudioSetup) -> Result<(Box<dyn AudioBackend>, Option<String>), String> {
    match setup {
        AudioSetup::Auto => {
            let (b, notice) = select_backend(BackendChoice::Auto);
            if let Some(n) = &notice {
                info!(notice = %n, "audio");
            }
            Ok((b, notice))
        }
        AudioSetup::Null => Ok((select_backend(BackendChoice::Null).0, None)),
        AudioSetup::Wav { play, record } => Ok((
            select_backend(BackendChoice::Wav {
                source: play.clone(),
                sink: record.clone(),
                looped: false,
            })
            .0,
            None,
        )),
        AudioSetup::Custom(f) => f().map(|b| (b, None)),
    }
}

/// Opens the call's device at `rate`; the null device, with a notice for
/// the user, when that fails.
fn open_device(audio: &AudioSetup, rate: u32) -> Result<(AudioDevice, Option<String>), PhoneError> {
    let (mut backend, mut notice) = backend(audio).map_err(PhoneError::Media)?;
    let device = match backend.open(AudioFormat::new(rate)) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "audio device failed; using the null device");
            notice = Some(format!(
                "the audio device failed ({e}); using the null device: nothing is heard or sent"
            ));
            select_backend(BackendChoice::Null)
                .0
                .open(AudioFormat::new(rate))
                .map_err(|e| PhoneError::Media(format!("audio: {e}")))?
        }
    };
    Ok((device, notice))
}

fn media_port(port: media_audio::AudioPort) -> media_tokio::AudioPort {
    media_tokio::AudioPort::new(port.capture, port.playback, port.sample_rate)
}

/// Whether opening `audio` may take long: probing the sound system (or an
/// integrator's factory, which may do the same) can take seconds, so such
/// a device opens in the background while the call starts on the null
/// device. The null device and WAV files open at once.
fn opens_slowly(audio: &AudioSetup) -> bool {
    matches!(audio, AudioSetup::Auto | AudioSetup::Custom(_))
}

/// Why [`watch_device`] opens a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opening {
    /// The call's first device, which the call waited for on the null one.
    First,
    /// A replacement for a device that went away.
    Replacement,
}

/// Watches a call's device until told to stop, then returns the guard of
/// the device in use. With `first_open`, the call runs on the null device
/// until the device of `audio` is open (see [`opens_slowly`]); a failure
/// leaves it on the null device and tells the user. A device that goes
/// away (a headset unplugged, the sound server restarted) is opened again
/// from the same setup, which for [`AudioSetup::Auto`] is the system's
/// default device now, and the call moves there; the user gets a notice.
#[allow(clippy::too_many_arguments)]
async fn watch_device(
    call: CallId,
    mut guard: AudioGuard,
    audio: AudioSetup,
    rate: u32,
    channel: AudioChannelHandle,
    events: mpsc::UnboundedSender<MediaEvent>,
    mut stop: oneshot::Receiver<()>,
    first_open: bool,
) -> AudioGuard {
    let mut checks = tokio::time::interval(DEVICE_CHECK);
    let mut reopens = 0;
    let mut opened_at = tokio::time::Instant::now();
    let mut due = first_open.then_some(Opening::First);
    loop {
        if due.is_none() {
            tokio::select! {
                _ = &mut stop => return guard,
                _ = checks.tick() => {}
            }
            while let Some(event) = guard.poll_event() {
                match event {
                    AudioEvent::DeviceLost { direction } => {
                        warn!(call = %call, %direction, "audio device lost");
                    }
                    AudioEvent::Rerouted { direction } => {
                        info!(call = %call, %direction, "the system moved the audio to another device");
                    }
                    other => debug!(call = %call, event = ?other, "audio device"),
                }
            }
            if !guard.is_device_lost() {
                continue;
            }
            due = Some(Opening::Replacement);
        }
        let Some(why) = due.take() else { continue };
        let setup = if why == Opening::First {
            audio.clone()
        } else {
            if opened_at.elapsed() >= STEADY_DEVICE {
                reopens = 0;
            }
            // From this attempt on: attempts that fail count as in a row.
            opened_at = tokio::time::Instant::now();
            reopens += 1;
            if reopens > MAX_REOPENS {
                AudioSetup::Null
            } else {
                audio.clone()
            }
        };
        // Opening may take seconds on a wedged system: a hang-up must not
        // wait for it. A device opened after that is dropped on the
        // blocking thread.
        let mut opening = tokio::task::spawn_blocking(move || open_device(&setup, rate));
        let opened = tokio::select! {
            _ = &mut stop => {
                // Not begun yet: it never will.
                opening.abort();
                return guard;
            }
            opened = &mut opening => opened,
        };
        let failed = |e: String| match why {
            Opening::First => Some(format!(
                "the audio device failed ({e}); using the null device: nothing is heard or sent"
            )),
            Opening::Replacement => None,
        };
        let (device, notice) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                warn!(call = %call, error = %e, ?why, "no audio device");
                if !tell(&events, call, failed(e.to_string())) {
                    return guard;
                }
                continue;
            }
            Err(e) => {
                warn!(call = %call, error = %e, ?why, "opening an audio device failed");
                if !tell(&events, call, failed(e.to_string())) {
                    return guard;
                }
                continue;
            }
        };
        let name = device.guard().backend().to_owned();
        let (port, fresh) = device.into_parts();
        match channel.replace_audio(media_port(port)).await {
            Ok(()) => {
                let old = std::mem::replace(&mut guard, fresh);
                // Stopping joins the old device's threads: off the runtime.
                drop(tokio::task::spawn_blocking(move || old.stop()));
                opened_at = tokio::time::Instant::now();
            }
            Err(ChannelError::Stopped) => {
                // The call's media ended meanwhile; `stop` follows.
                drop(tokio::task::spawn_blocking(move || fresh.stop()));
                let _ = (&mut stop).await;
                return guard;
            }
            Err(e) => {
                // The channel cannot run at this device's rate: the null
                // device (at the codec's rate) stays, or takes over at the
                // next check.
                warn!(call = %call, backend = %name, error = %e, "the audio device is unusable");
                drop(tokio::task::spawn_blocking(move || fresh.stop()));
                reopens = MAX_REOPENS;
                if !tell(&events, call, failed(e.to_string())) {
                    return guard;
                }
                continue;
            }
        }
        let text = match why {
            Opening::First => {
                info!(call = %call, backend = %name, "audio device open");
                notice
            }
            Opening::Replacement => {
                info!(call = %call, backend = %name, "the call moved to another audio device");
                Some(notice.unwrap_or_else(|| {
                    format!("the audio device went away; the call goes on with the {name} device")
                }))
            }
        };
        if !tell(&events, call, text) {
            return guard;
        }
    }
}

/// Sends `text`, if any, as a notice for the user; false when the phone's
/// task is gone.
fn tell(events: &mpsc::UnboundedSender<MediaEvent>, call: CallId, text: Option<String>) -> bool {
    match text {
        Some(text) => events.send(MediaEvent::Notice { call, text }).is_ok(),
        None => true,
    }
}

impl CallMedia {
    /// Starts media on the prepared sockets. A device that may take long
    /// to open (see [`opens_slowly`]) opens in the background: the phone's
    /// task does not wait for the sound system.
    pub(crate) fn start(
        call: CallId,
        prepared: PreparedMedia,
        negotiated: &NegotiatedAudio,
        audio: &AudioSetup,
        media: &config_export::Media,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> Result<(CallMedia, Option<String>), PhoneError> {
        let jitter = media_engine::jitter::JitterConfig::default().with_delay_bounds(
            Duration::from_millis(u64::from(media.jitter_min_ms)),
            Duration::from_millis(u64::from(media.jitter_max_ms.max(media.jitter_min_ms))),
        );
        let config = AudioStreamConfig::new(format!("softphone-{}", call.0)).with_jitter(jitter);
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let stream = AudioStream::new(
            sip_tokio::now(),
            media_engine::rtcp::NtpTimestamp::from_unix(wall),
            negotiated,
            config,
            &mut rand::rng(),
        )
        .map_err(|e| PhoneError::Media(e.to_string()))?;
        let rate = stream.sample_rate();
        let later = opens_slowly(audio);
        let (device, notice) = if later {
            open_device(&AudioSetup::Null, rate)?
        } else {
            open_device(audio, rate)?
        };
        let (port, guard) = device.into_parts();
        let channel = AudioChannel::spawn(
            stream,
            prepared.sockets,
            media_port(port),
            ChannelConfig::default(),
        )
        .map_err(|e| PhoneError::Media(e.to_string()))?;
        let (stop_watcher, stopped) = oneshot::channel();
        let watcher = tokio::spawn(watch_device(
            call,
            guard,
            audio.clone(),
            rate,
            channel.clone(),
            events.clone(),
            stopped,
            later,
        ));
        let mut rx = channel.events();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(AudioStreamEvent::DtmfReceived(d)) => {
                        let digit = d.to_char();
                        if events.send(MediaEvent::Dtmf { call, digit }).is_err() {
                            break;
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        });
        Ok((
            CallMedia {
                channel,
                stop_watcher,
                watcher,
            },
            notice,
        ))
    }

    /// The figures so far.
    pub(crate) fn report(&self) -> Option<QualityReport> {
        Some(report(&self.channel.statistics()))
    }

    /// Applies a new offer/answer outcome (hold, resume, new address).
    pub(crate) async fn update(&self, negotiated: &NegotiatedAudio) {
        if let Err(e) = self.channel.update(negotiated.clone()).await {
            warn!(error = %e, "media update refused");
        }
    }

    pub(crate) async fn set_muted(&self, muted: bool) {
        let _ = self.channel.set_muted(muted).await;
    }

    /// Sends one digit as RFC 4733 events; false when telephone-events were
    /// not negotiated (the caller falls back to SIP INFO).
    pub(crate) async fn send_dtmf(&self, digit: char, duration: Duration) -> bool {
        let Some(d) = Digit::from_char(digit) else {
            return false;
        };
        self.channel.send_dtmf(d, duration).await.is_ok()
    }

    /// Stops media (RTCP BYE) and the device; returns the final figures.
    pub(crate) async fn stop(self) -> Option<QualityReport> {
        // The watcher first: it may be opening a device, which a hang-up
        // must not wait for.
        let _ = self.stop_watcher.send(());
        let stats = self.channel.stop().await;
        if let Ok(guard) = self.watcher.await {
            // Joining the device thread is bounded (about a second at most).
            let _ = tokio::task::spawn_blocking(move || guard.stop()).await;
        }
        Some(report(&stats))
    }
}
