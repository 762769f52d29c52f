//! [`AudioChannel`]: the task that runs one [`AudioStream`] on real
//! sockets and audio rings.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use media_engine::dtmf::Digit;
use media_engine::negotiation::NegotiatedAudio;
use media_engine::resample::{ResampleError, Resampler};
use media_engine::stream::{
    AudioStream, AudioStreamEvent, Received, RefuseReason, StreamError, StreamStatistics,
    TransmitKind,
};
use rtrb::{Consumer, Producer};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Interval, MissedTickBehavior};
use tracing::{Instrument, debug, debug_span, trace};

use crate::latch::RemoteLatch;
use crate::socket::{MediaSockets, Transport, canonical, destination_for};

/// The audio device's side of a call: rings of mono 16-bit samples at the
/// device's rate. The device writes `capture`'s other end and reads
/// `playback`'s.
#[derive(Debug)]
pub struct AudioPort {
    /// Captured samples, from the microphone.
    pub capture: Consumer<i16>,
    /// Samples to play, to the speaker.
    pub playback: Producer<i16>,
    /// The device's sample rate in Hz.
    pub sample_rate: u32,
}

impl AudioPort {
    /// A port from the two ring ends and the device's rate.
    pub fn new(capture: Consumer<i16>, playback: Producer<i16>, sample_rate: u32) -> Self {
        AudioPort {
            capture,
            playback,
            sample_rate,
        }
    }
}

/// Settings of an [`AudioChannel`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelConfig {
    /// Consecutive genuine datagrams from a new address before media
    /// follows the peer there (see [`crate::latch`]).
    pub latch_packets: u32,
    /// Captured audio older than this is dropped, so a stall or a device
    /// clock running fast cannot build up delay.
    pub max_capture_backlog: Duration,
    /// Audio waiting in either ring beyond this is worn down by a
    /// millisecond a second: the sound card's clock and the packet clock
    /// drift apart by up to a few hundred ppm, which would otherwise add
    /// delay for the whole call, or fill the playback ring until whole
    /// frames are lost. More than a frame beyond it over a whole second is
    /// what a stall left, and is cut at once.
    pub target_device_backlog: Duration,
    /// Events kept for a subscriber that lags before the oldest are lost.
    pub event_capacity: usize,
}

impl Default for ChannelConfig {
    /// Three packets to latch, 100 ms of capture backlog, a 20 ms target
    /// in the rings, 64 events.
    fn default() -> Self {
        ChannelConfig {
            latch_packets: 3,
            max_capture_backlog: Duration::from_millis(100),
            target_device_backlog: Duration::from_millis(20),
            event_capacity: 64,
        }
    }
}

impl ChannelConfig {
    /// With this many genuine datagrams needed to latch.
    pub fn with_latch_packets(mut self, packets: u32) -> Self {
        self.latch_packets = packets.max(1);
        self
    }
}

/// What the channel reports: the stream's figures and the driver's.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ChannelStatistics {
    /// The stream's figures: packets, loss, jitter, RTT, MOS.
    pub stream: StreamStatistics,
    /// Where RTP goes now.
    pub remote_rtp: SocketAddr,
    /// Where RTCP goes now.
    pub remote_rtcp: SocketAddr,
    /// Times media followed the peer to a new address.
    pub address_switches: u64,
    /// Packet times run.
    pub ticks: u64,
    /// Ticks that found less than a frame captured (silence was sent).
    pub capture_underruns: u64,
    /// Captured samples dropped to bound the delay.
    pub capture_dropped: u64,
    /// Frames dropped because the playback ring was full.
    pub playback_overruns: u64,
    /// Samples left out of playback to keep the ring near its target
    /// (a device that plays slower than the packet clock).
    pub playback_dropped: u64,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
    /// Socket receive errors.
    pub receive_errors: u64,
    /// Whether the task still runs.
    pub running: bool,
}

/// Why a channel could not start or a command failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The stream refused (no telephone-event negotiated, bad update...).
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// No resampler between the device's and the codec's rate.
    #[error("no resampler from {from} Hz to {to} Hz: {source}")]
    Resample {
        /// The input rate.
        from: u32,
        /// The output rate.
        to: u32,
        /// Why.
        source: ResampleError,
    },
    /// Not called from within a tokio runtime.
    #[error("no tokio runtime to spawn the channel on")]
    NoRuntime,
    /// The task has ended.
    #[error("the audio channel has stopped")]
    Stopped,
}

/// Runs an [`AudioStream`] on its sockets and an [`AudioPort`]: one tokio
/// task per call. See the crate documentation.
#[derive(Debug)]
pub struct AudioChannel {
    _private: (),
}

impl AudioChannel {
    /// Spawns the task on the current tokio runtime. Media goes to the
    /// addresses in `stream.negotiated()` until the peer is latched
    /// elsewhere.
    pub fn spawn(
        stream: AudioStream,
        sockets: MediaSockets,
        audio: AudioPort,
        config: ChannelConfig,
    ) -> Result<AudioChannelHandle, ChannelError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ChannelError::NoRuntime)?;
        let frames = Frames::for_stream(audio.sample_rate, stream.negotiated())?;
        let negotiated = stream.negotiated();
        let rtp_latch = RemoteLatch::new(negotiated.remote_rtp, config.latch_packets);
        let rtcp_latch = RemoteLatch::new(negotiated.remote_rtcp, config.latch_packets);
        let (events, first_events) = broadcast::channel(config.event_capacity.max(1));
        let (commands, command_rx) = mpsc::channel(32);
        let mut driver = Driver {
            stream,
            sockets,
            rtp_latch,
            rtcp_latch,
            audio,
            frames,
            config,
            counters: Counters::default(),
            drift: Drift::default(),
            peer_heard: None,
            learning_until: tokio::time::Instant::now().into_std() + PEER_LEARNING,
            events: events.clone(),
            statistics: None,
        };
        let (statistics, statistics_rx) = watch::channel(driver.snapshot(true));
        driver.statistics = Some(statistics);
        let span = debug_span!("audio_channel", port = driver.sockets.rtp_addr().port());
        runtime.spawn(driver.run(command_rx).instrument(span));
        Ok(AudioChannelHandle {
            commands,
            statistics: statistics_rx,
            events,
            first_events: Arc::new(Mutex::new(Some(first_events))),
        })
    }
}

/// Controls a running [`AudioChannel`]. Clones control the same task; when
/// the last clone is dropped, the task sends a BYE and ends.
#[derive(Clone, Debug)]
pub struct AudioChannelHandle {
    commands: mpsc::Sender<Command>,
    statistics: watch::Receiver<ChannelStatistics>,
    events: broadcast::Sender<AudioStreamEvent>,
    first_events: Arc<Mutex<Option<broadcast::Receiver<AudioStreamEvent>>>>,
}

impl AudioChannelHandle {
    /// Sends a DTMF key press as RFC 4733 events. Fails with
    /// [`StreamError::NoTelephoneEvent`] when the peer did not negotiate
    /// them: send SIP INFO instead.
    pub async fn send_dtmf(&self, digit: Digit, duration: Duration) -> Result<(), ChannelError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::SendDtmf {
            digit,
            duration,
            reply,
        })
        .await?;
        Ok(answer.await.map_err(|_| ChannelError::Stopped)??)
    }

    /// Mutes or unmutes the microphone (silence is sent while muted).
    pub async fn set_muted(&self, muted: bool) -> Result<(), ChannelError> {
        self.command(Command::SetMuted(muted)).await
    }

    /// Applies a new negotiation (re-INVITE): direction, codec, keys, and
    /// a new remote address if the SDP names one.
    pub async fn update(&self, negotiated: NegotiatedAudio) -> Result<(), ChannelError> {
        self.ask(|reply| Command::Update {
            negotiated: Box::new(negotiated),
            reply,
        })
        .await
    }

    /// Moves the call to another device, e.g. after its own went away
    /// (unplugged): from the next packet time on, capture comes from and
    /// playback goes to `audio`, at its own rate. The old port is dropped.
    pub async fn replace_audio(&self, audio: AudioPort) -> Result<(), ChannelError> {
        self.ask(|reply| Command::ReplaceAudio {
            audio: Box::new(audio),
            reply,
        })
        .await
    }

    /// The latest figures, refreshed every packet time.
    pub fn statistics(&self) -> ChannelStatistics {
        self.statistics.borrow().clone()
    }

    /// A receiver of the stream's events. The first call gets every event
    /// since the channel started; later calls get those from then on.
    pub fn events(&self) -> broadcast::Receiver<AudioStreamEvent> {
        let first = self
            .first_events
            .lock()
            .map_or(None, |mut first| first.take());
        first.unwrap_or_else(|| self.events.subscribe())
    }

    /// Whether the task still runs.
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Sends an RTCP BYE, ends the task and returns the final figures.
    /// On a channel that already ended, returns its last figures.
    pub async fn stop(&self) -> ChannelStatistics {
        let (reply, answer) = oneshot::channel();
        if self.command(Command::Stop { reply }).await.is_ok()
            && let Ok(statistics) = answer.await
        {
            return statistics;
        }
        self.statistics()
    }

    /// Sends the command `make` builds around a reply channel and awaits
    /// the task's answer.
    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), ChannelError>>) -> Command,
    ) -> Result<(), ChannelError> {
        let (reply, answer) = oneshot::channel();
        self.command(make(reply)).await?;
        answer.await.map_err(|_| ChannelError::Stopped)?
    }

    async fn command(&self, command: Command) -> Result<(), ChannelError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ChannelError::Stopped)
    }
}

#[derive(Debug)]
enum Command {
    SendDtmf {
        digit: Digit,
        duration: Duration,
        reply: oneshot::Sender<Result<(), StreamError>>,
    },
    SetMuted(bool),
    Update {
        negotiated: Box<NegotiatedAudio>,
        reply: oneshot::Sender<Result<(), ChannelError>>,
    },
    ReplaceAudio {
        audio: Box<AudioPort>,
        reply: oneshot::Sender<Result<(), ChannelError>>,
    },
    Stop {
        reply: oneshot::Sender<ChannelStatistics>,
    },
}

#[derive(Debug, Default)]
struct Counters {
    ticks: u64,
    capture_underruns: u64,
    capture_dropped: u64,
    playback_overruns: u64,
    playback_dropped: u64,
    send_errors: u64,
    receive_errors: u64,
}

/// Wears down audio that waits in the rings beyond the target, which the
/// drift between the sound card's clock and the packet clock builds up.
/// Each side's lowest level over a second is its floor (the level between
/// device periods, whatever their size); a floor above the target loses a
/// millisecond, at most once a second: room for 1000 ppm of drift, and a
/// cut rare enough not to be heard. A floor more than a frame above the
/// target is no drift but what a stall left (a device that delivered late
/// all at once): it is cut to the target at once, one audible skip rather
/// than a call a few tens of milliseconds behind for a minute.
#[derive(Debug, Default)]
struct Drift {
    capture_floor: Option<usize>,
    playback_floor: Option<usize>,
    ticks: u32,
    capture_due: usize,
    playback_due: usize,
}

/// Ticks in one measuring window of [`Drift`].
const DRIFT_WINDOW: u32 = 50;

impl Drift {
    /// Notes the capture backlog after this tick's frame; returns the
    /// samples to drop from it now. Once a window, works out what each
    /// side loses next: `step` of what the floor holds beyond `target`.
    fn capture(&mut self, backlog: usize, target: usize, step: usize, frame: usize) -> usize {
        self.capture_floor = Some(self.capture_floor.map_or(backlog, |f| f.min(backlog)));
        self.ticks += 1;
        if self.ticks >= DRIFT_WINDOW {
            self.ticks = 0;
            let over = |floor: Option<usize>| match floor.unwrap_or(0).saturating_sub(target) {
                stalled if stalled > frame => stalled,
                drifted => drifted.min(step),
            };
            self.capture_due = over(self.capture_floor.take());
            self.playback_due = over(self.playback_floor.take());
        }
        std::mem::take(&mut self.capture_due).min(backlog)
    }

    /// Notes the playback ring's level before this tick's frame; returns
    /// the samples (at most `frame`) to leave out of the frame; more due
    /// is left out of the frames that follow.
    fn playback(&mut self, waiting: usize, frame: usize) -> usize {
        self.playback_floor = Some(self.playback_floor.map_or(waiting, |f| f.min(waiting)));
        let trim = self.playback_due.min(frame);
        self.playback_due -= trim;
        trim
    }
}

/// How many samples `duration` holds at `rate`.
fn samples_in(rate: u32, duration: Duration) -> usize {
    usize::try_from(u128::from(rate) * duration.as_millis() / 1000).unwrap_or(usize::MAX)
}

/// Frame buffers and resamplers between the device's rate and the codec's.
#[derive(Debug)]
struct Frames {
    to_codec: Option<Resampler>,
    to_device: Option<Resampler>,
    device_in: Vec<i16>,
    codec_in: Vec<i16>,
    codec_out: Vec<i16>,
    device_out: Vec<i16>,
}

impl Frames {
    fn new(device_rate: u32, codec_rate: u32, ptime: u32) -> Result<Self, ChannelError> {
        let resampler = |from, to| {
            if from == to {
                return Ok(None);
            }
            Resampler::new(from, to, ptime)
                .map(Some)
                .map_err(|source| ChannelError::Resample { from, to, source })
        };
        let to_codec = resampler(device_rate, codec_rate)?;
        let to_device = resampler(codec_rate, device_rate)?;
        let samples =
            |rate: u32| usize::try_from(u64::from(rate) * u64::from(ptime) / 1000).unwrap_or(0);
        let (device, codec) = (samples(device_rate), samples(codec_rate));
        Ok(Frames {
            to_codec,
            to_device,
            device_in: vec![0; device],
            codec_in: vec![0; codec],
            codec_out: vec![0; codec],
            device_out: vec![0; device],
        })
    }

    fn for_stream(device_rate: u32, negotiated: &NegotiatedAudio) -> Result<Self, ChannelError> {
        Frames::new(device_rate, negotiated.codec.clock_rate(), negotiated.ptime)
    }
}

/// The largest datagram read; RTP audio packets are far smaller.
const RECEIVE_BUFFER: usize = 2048;

/// How long the peer's current addresses may stay silent before plain RTP
/// from a newcomer with another SSRC counts towards moving there, within
/// [`PEER_LEARNING`]. A stray that took the flow before the peer's first
/// packet (RTP bleed, with the peer's SDP address unreachable behind NAT)
/// would otherwise hold it for the whole call and fix its SSRC as the
/// peer's. Longer than the pauses of a talking peer with DTX (Opus sends
/// every 400 ms).
const PEER_SILENCE: Duration = Duration::from_secs(2);

/// How long after the media starts (or moves, with a re-offer) the rule of
/// [`PEER_SILENCE`] holds. Later a silent peer (on hold, with silence
/// suppression) must not lose its media to whoever sends three plain
/// packets to the port.
const PEER_LEARNING: Duration = Duration::from_secs(10);

struct Driver {
    stream: AudioStream,
    sockets: MediaSockets,
    rtp_latch: RemoteLatch,
    rtcp_latch: RemoteLatch,
    audio: AudioPort,
    frames: Frames,
    config: ChannelConfig,
    counters: Counters,
    drift: Drift,
    /// When the last genuine datagram came from the peer's current
    /// addresses (see [`PEER_SILENCE`]).
    peer_heard: Option<std::time::Instant>,
    /// Until when a silent peer's flow may move (see [`PEER_LEARNING`]).
    learning_until: std::time::Instant,
    events: broadcast::Sender<AudioStreamEvent>,
    statistics: Option<watch::Sender<ChannelStatistics>>,
}

/// Which socket a datagram came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    Rtp,
    Rtcp,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let transport = self.sockets.transport().clone();
        let rtcp = self.sockets.rtcp_socket().cloned();
        let mut rtp_buffer = vec![0u8; RECEIVE_BUFFER];
        let mut rtcp_buffer = vec![0u8; RECEIVE_BUFFER];
        let mut ticker = ticker(self.stream.frame_duration());
        let (remote_rtp, remote_rtcp) = (self.rtp_latch.current(), self.rtcp_latch.current());
        self.permit(remote_rtp, remote_rtcp);
        debug!("audio channel started");
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                received = receive_main(&transport, &mut rtp_buffer) => match received {
                    Ok((len, from)) => {
                        let port = self.port_of(from);
                        self.receive(port, from, &rtp_buffer[..len]);
                    }
                    Err(error) => self.receive_error(&error),
                },
                received = receive(rtcp.as_deref(), &mut rtcp_buffer) => match received {
                    Ok((len, from)) => self.receive(Port::Rtcp, from, &rtcp_buffer[..len]),
                    Err(error) => self.receive_error(&error),
                },
                command = commands.recv() => match command {
                    Some(Command::Stop { reply }) => {
                        let statistics = self.finish().await;
                        let _ = reply.send(statistics);
                        break;
                    }
                    Some(command) => {
                        let period = self.stream.frame_duration();
                        self.command(command);
                        if self.stream.frame_duration() != period {
                            ticker = self::ticker(self.stream.frame_duration());
                        }
                    }
                    None => {
                        // Every handle is gone: nobody can stop us any more.
                        self.finish().await;
                        break;
                    }
                },
            }
            self.flush().await;
        }
        debug!("audio channel ended");
    }

    /// One packet time: capture -> send, receive -> play.
    fn tick(&mut self) {
        let now = tokio::time::Instant::now().into_std();
        self.counters.ticks += 1;
        self.capture();
        let frames = &mut self.frames;
        let pcm = match &mut frames.to_codec {
            Some(resampler) => match resampler.process_i16(&frames.device_in, &mut frames.codec_in)
            {
                Ok(_) => &frames.codec_in,
                Err(error) => {
                    debug!(%error, "capture resampling failed");
                    frames.codec_in.fill(0);
                    &frames.codec_in
                }
            },
            None => &frames.device_in,
        };
        if let Err(error) = self.stream.send_frame(now, pcm) {
            debug!(%error, "frame not sent");
        }
        self.stream.handle_timeout(now);
        if let Err(error) = self.stream.play_frame(now, &mut frames.codec_out) {
            debug!(%error, "frame not played");
            frames.codec_out.fill(0);
        }
        let out = match &mut frames.to_device {
            Some(resampler) => {
                match resampler.process_i16(&frames.codec_out, &mut frames.device_out) {
                    Ok(_) => &frames.device_out,
                    Err(error) => {
                        debug!(%error, "playback resampling failed");
                        frames.device_out.fill(0);
                        &frames.device_out
                    }
                }
            }
            None => &frames.codec_out,
        };
        let playback = &mut self.audio.playback;
        let waiting = playback.buffer().capacity() - playback.slots();
        let trim = self.drift.playback(waiting, out.len());
        if playback
            .push_entire_slice(&out[..out.len() - trim])
            .is_err()
        {
            self.counters.playback_overruns += 1;
            trace!("playback ring full, frame dropped");
        } else {
            self.counters.playback_dropped += trim as u64;
        }
    }

    /// Takes one device frame from the capture ring into `device_in`.
    fn capture(&mut self) {
        let frame = self.frames.device_in.len();
        let capture = &mut self.audio.capture;
        let backlog = samples_in(self.audio.sample_rate, self.config.max_capture_backlog);
        let available = capture.slots();
        // All beyond the most allowed (a stall), else what the drift
        // control takes (a device clock running fast).
        let excess = match available.saturating_sub(frame + backlog) {
            0 => self.drift.capture(
                available.saturating_sub(frame),
                samples_in(self.audio.sample_rate, self.config.target_device_backlog),
                samples_in(self.audio.sample_rate, Duration::from_millis(1)),
                frame,
            ),
            over => over,
        };
        if excess > 0
            && let Ok(chunk) = capture.read_chunk(excess)
        {
            chunk.commit_all();
            self.counters.capture_dropped += excess as u64;
            trace!(excess, "capture backlog trimmed");
        }
        let available = capture.slots();
        if available >= frame {
            if capture
                .pop_entire_slice(&mut self.frames.device_in)
                .is_err()
            {
                self.frames.device_in.fill(0);
            }
            return;
        }
        // A device running slow leaves a frame short now and then: what
        // came is used and its last sample held, a gap of a millisecond
        // or so instead of a frame of silence.
        self.counters.capture_underruns += 1;
        let (got, rest) = self.frames.device_in.split_at_mut(available);
        if capture.pop_entire_slice(got).is_err() {
            got.fill(0);
        }
        let hold = got.last().copied().unwrap_or(0);
        rest.fill(hold);
    }

    fn receive(&mut self, port: Port, from: SocketAddr, data: &[u8]) {
        let now = tokio::time::Instant::now().into_std();
        let from = canonical(from);
        let latch = match port {
            Port::Rtp => &mut self.rtp_latch,
            Port::Rtcp => &mut self.rtcp_latch,
        };
        if latch.is_current(from) || latch.is_signalled(from) {
            let received = match port {
                Port::Rtp => self.stream.handle_datagram(now, data),
                Port::Rtcp => self.stream.handle_rtcp(now, data),
            };
            // A genuine datagram from where the peer is breaks any run a
            // newcomer was building; one from the SDP address brings the
            // flow back there (see `RemoteLatch`).
            if received.is_genuine() {
                self.peer_heard = Some(now);
            }
            if latch.observe(from, received.is_genuine()) {
                debug!(?port, "remote address back at the signalled one");
            }
            return;
        }
        let received = self.stream.handle_unverified_datagram(now, data);
        trace!(
            port = from.port(),
            ?received,
            "datagram from another address"
        );
        // Plain RTP from another source counts once the peer has gone
        // silent (see `PEER_SILENCE`); SRTP must authenticate whatever.
        let peer_silent = now < self.learning_until
            && self
                .peer_heard
                .is_none_or(|heard| now.saturating_duration_since(heard) >= PEER_SILENCE);
        let another_source = matches!(received, Received::Refused(RefuseReason::UnknownSource));
        if latch.observe(
            from,
            received.is_genuine() || (peer_silent && another_source),
        ) {
            debug!(?port, to_port = from.port(), "remote address latched");
            self.peer_heard = Some(now);
            if another_source && port == Port::Rtp {
                // The newcomer's packets are taken as the peer's from now.
                self.stream.forget_remote_source();
            }
        }
    }

    /// Which stream a datagram on the main socket belongs to: through a
    /// relay, one address carries both, so the peer's RTCP address tells
    /// RTCP apart when it is not multiplexed.
    fn port_of(&self, from: SocketAddr) -> Port {
        let from = canonical(from);
        let relayed = matches!(self.sockets.transport(), Transport::Relay(_));
        if relayed
            && !self.stream.negotiated().rtcp_mux
            && from == self.rtcp_latch.current()
            && from != self.rtp_latch.current()
        {
            Port::Rtcp
        } else {
            Port::Rtp
        }
    }

    /// Asks the relay, if any, to let the peer's addresses in. In the
    /// background: a slow relay must not stall the audio.
    fn permit(&self, rtp: SocketAddr, rtcp: SocketAddr) {
        let Transport::Relay(relay) = self.sockets.transport() else {
            return;
        };
        let mut peers = vec![rtp];
        if rtcp != rtp {
            peers.push(rtcp);
        }
        for peer in peers {
            if peer.ip().is_unspecified() || peer.port() == 0 {
                continue;
            }
            let relay = Arc::clone(relay);
            tokio::spawn(async move {
                match relay.permit(peer).await {
                    Ok(()) => debug!(%peer, "relay permits the peer"),
                    Err(error) => debug!(%peer, %error, "relay permission failed"),
                }
            });
        }
    }

    fn receive_error(&mut self, error: &std::io::Error) {
        self.counters.receive_errors += 1;
        trace!(%error, "receive failed");
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::SendDtmf {
                digit,
                duration,
                reply,
            } => {
                let _ = reply.send(self.stream.send_dtmf(digit, duration));
            }
            Command::SetMuted(muted) => self.stream.set_muted(muted),
            Command::Update { negotiated, reply } => {
                let _ = reply.send(self.update(&negotiated));
            }
            Command::ReplaceAudio { audio, reply } => {
                let result =
                    Frames::for_stream(audio.sample_rate, self.stream.negotiated()).map(|frames| {
                        debug!(sample_rate = audio.sample_rate, "audio device replaced");
                        self.frames = frames;
                        self.audio = *audio;
                    });
                let _ = reply.send(result);
            }
            // Handled by the loop.
            Command::Stop { .. } => {}
        }
    }

    fn update(&mut self, negotiated: &NegotiatedAudio) -> Result<(), ChannelError> {
        let now = tokio::time::Instant::now().into_std();
        let old = self.stream.negotiated().clone();
        let frames = if old.codec != negotiated.codec || old.ptime != negotiated.ptime {
            Some(Frames::for_stream(self.audio.sample_rate, negotiated)?)
        } else {
            None
        };
        self.stream.update(now, negotiated)?;
        if let Some(frames) = frames {
            self.frames = frames;
        }
        if old.remote_rtp != negotiated.remote_rtp {
            self.rtp_latch.reset(negotiated.remote_rtp);
            self.learning_until = now + PEER_LEARNING;
            self.peer_heard = None;
            // Media moves to another endpoint (a transfer, direct media):
            // its SSRC is not the old peer's, and behind NAT its packets
            // must count towards latching.
            self.stream.forget_remote_source();
        }
        if old.remote_rtcp != negotiated.remote_rtcp {
            self.rtcp_latch.reset(negotiated.remote_rtcp);
        }
        if old.remote_rtp != negotiated.remote_rtp || old.remote_rtcp != negotiated.remote_rtcp {
            self.permit(negotiated.remote_rtp, negotiated.remote_rtcp);
        }
        Ok(())
    }

    /// Sends what the stream queued, passes its events on, publishes the
    /// figures.
    async fn flush(&mut self) {
        while let Some(transmit) = self.stream.poll_transmit() {
            let multiplexed = self.stream.negotiated().rtcp_mux;
            let remote = match transmit.kind {
                TransmitKind::Rtp => self.rtp_latch.current(),
                TransmitKind::Rtcp if multiplexed => self.rtp_latch.current(),
                TransmitKind::Rtcp => self.rtcp_latch.current(),
            };
            // An old-style hold address (0.0.0.0) or port 0: nowhere to send.
            if remote.ip().is_unspecified() || remote.port() == 0 {
                continue;
            }
            let sent = match self.sockets.transport() {
                Transport::Relay(relay) => relay.send_to(&transmit.data, remote).await,
                Transport::Udp { rtp, rtcp } => {
                    let (socket, local) = match (transmit.kind, rtcp) {
                        (TransmitKind::Rtcp, Some(rtcp)) if !multiplexed => {
                            (rtcp, self.sockets.rtcp_addr())
                        }
                        _ => (rtp, self.sockets.rtp_addr()),
                    };
                    socket
                        .send_to(&transmit.data, destination_for(local, remote))
                        .await
                }
            };
            if let Err(error) = sent {
                self.counters.send_errors += 1;
                trace!(%error, "send failed");
            }
        }
        while let Some(event) = self.stream.poll_event() {
            // No subscriber is fine: events are for whoever listens.
            let _ = self.events.send(event);
        }
        self.publish(true);
    }

    /// Closes the stream (RTCP BYE), sends what is left and publishes the
    /// final figures.
    async fn finish(&mut self) -> ChannelStatistics {
        let now = tokio::time::Instant::now().into_std();
        self.stream.close(now);
        self.flush().await;
        self.publish(false)
    }

    fn publish(&mut self, running: bool) -> ChannelStatistics {
        let snapshot = self.snapshot(running);
        if let Some(statistics) = &self.statistics {
            statistics.send_replace(snapshot.clone());
        }
        snapshot
    }

    fn snapshot(&self, running: bool) -> ChannelStatistics {
        ChannelStatistics {
            stream: self.stream.statistics(),
            remote_rtp: self.rtp_latch.current(),
            remote_rtcp: self.rtcp_latch.current(),
            address_switches: self.rtp_latch.switches() + self.rtcp_latch.switches(),
            ticks: self.counters.ticks,
            capture_underruns: self.counters.capture_underruns,
            capture_dropped: self.counters.capture_dropped,
            playback_overruns: self.counters.playback_overruns,
            playback_dropped: self.counters.playback_dropped,
            send_errors: self.counters.send_errors,
            receive_errors: self.counters.receive_errors,
            running,
        }
    }
}

/// The packet-time clock. Missed ticks are skipped, not burst: after a
/// stall the task resumes on the original 20 ms grid instead of sending
/// several packets at once (a burst the peer's jitter buffer would see as
/// a delay spike and our playback ring as an overflow); the capture
/// backlog the stall left is trimmed to `max_capture_backlog`.
fn ticker(period: Duration) -> Interval {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    ticker
}

/// Receives on the RTP socket or the relay.
async fn receive_main(
    transport: &Transport,
    buffer: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match transport {
        Transport::Udp { rtp, .. } => rtp.recv_from(buffer).await,
        Transport::Relay(relay) => {
            let received = relay.recv_from(buffer).await;
            if received.is_err() {
                // A failed relay fails at once: pause so it cannot spin the loop.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            received
        }
    }
}

/// Receives on the RTCP socket, or waits forever without one.
async fn receive(
    socket: Option<&UdpSocket>,
    buffer: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buffer).await,
        None => std::future::pending().await,
    }
}
