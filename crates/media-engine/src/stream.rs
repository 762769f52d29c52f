//! [`AudioStream`]: one negotiated audio stream, sans IO.
//!
//! An `AudioStream` puts together what one call leg needs between the
//! socket and the sound card: the [`RtpSession`] (numbering, statistics,
//! RTCP reports), SRTP in both directions, the encoder and decoder of the
//! negotiated codec, the adaptive [`JitterBuffer`] with concealment, and
//! DTMF as RFC 4733 telephone-events. It opens no socket and reads no
//! clock; the driver ticks it once per packet time and moves datagrams.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::{Duration, Instant};
//! use media_engine::dtmf::Digit;
//! use media_engine::negotiation::{MediaNegotiation, MediaSettings};
//! use media_engine::rtcp::NtpTimestamp;
//! use media_engine::stream::{AudioStream, AudioStreamConfig, AudioStreamEvent};
//! use rand::{SeedableRng, rngs::StdRng};
//!
//! // Offer/answer between two local parties (SRTP by default).
//! let mut rng = StdRng::seed_from_u64(1);
//! let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
//! let mut alice = MediaNegotiation::new(MediaSettings::new(ip, 4000), &mut rng);
//! let mut bob = MediaNegotiation::new(MediaSettings::new(ip, 5000), &mut rng);
//! let answer = bob.handle_offer(&alice.create_offer().unwrap()).unwrap();
//! let at_alice = alice.handle_answer(&answer.description).unwrap();
//! let at_bob = answer.audio.unwrap();
//!
//! let mut now = Instant::now();
//! let wall = NtpTimestamp::from_unix(Duration::from_secs(1_800_000_000));
//! let config = |cname: &str| AudioStreamConfig::new(cname);
//! let mut a = AudioStream::new(now, wall, &at_alice, config("a@example.org"), &mut rng).unwrap();
//! let mut b = AudioStream::new(now, wall, &at_bob, config("b@example.org"), &mut rng).unwrap();
//!
//! a.send_dtmf(Digit::from_char('5').unwrap(), Duration::from_millis(100)).unwrap();
//! let silence = vec![0i16; a.frame_samples()];
//! let mut out = vec![0i16; b.frame_samples()];
//! for _ in 0..20 {
//!     // Each packet time: capture -> send, network -> receive, play.
//!     a.send_frame(now, &silence).unwrap();
//!     while let Some(t) = a.poll_transmit() {
//!         b.handle_datagram(now, &t.data);
//!     }
//!     b.play_frame(now, &mut out).unwrap();
//!     now += Duration::from_millis(20);
//! }
//! assert_eq!(b.poll_event(), Some(AudioStreamEvent::RemoteSourceStarted { ssrc: a.local_ssrc() }));
//! assert_eq!(b.poll_event(), Some(AudioStreamEvent::DtmfReceived(Digit::from_char('5').unwrap())));
//! assert_eq!(b.statistics().packets_received, 20);
//! ```
//!
//! ## Sending
//!
//! [`AudioStream::send_frame`] takes one packet time of PCM at the codec's
//! rate ([`AudioStream::frame_samples`] samples at
//! [`AudioStream::sample_rate`]) and queues one RTP packet, SRTP-protected
//! when keys were negotiated. The first packet of a talk spurt (the first
//! one, the first after hold and the first after a DTMF event) carries the
//! marker bit. The RTP timestamp advances on every call, also while
//! nothing is sent, so it keeps pace with real time across a hold.
//!
//! - When the direction does not let this side send (`recvonly`,
//!   `inactive`), nothing is sent.
//! - When muted, silence is encoded and sent in place of the captured
//!   audio: the peer's jitter buffer and NAT bindings stay warm and the
//!   RTCP sender reports keep counting, which a receiver that watches for
//!   dead media expects.
//! - After [`AudioStream::send_dtmf`], the next ticks send RFC 4733
//!   telephone-events instead of audio: a start packet with the marker bit,
//!   one continuation per packet time, then the end packet three times, all
//!   with the timestamp of the tick the press began on. Queued digits
//!   follow one another. The event's timestamps and durations are in the
//!   stream's RTP clock, as RFC 4733 §2.1 asks of an event sent in the
//!   audio's RTP stream.
//!
//! ## Receiving
//!
//! [`AudioStream::handle_datagram`] takes what arrived on the RTP port from
//! the peer's current address: RTP and, with rtcp-mux, RTCP (told apart as
//! RFC 5761 §4 says). [`AudioStream::handle_rtcp`] takes what arrived on a
//! separate RTCP port. SRTP and SRTCP that fail to authenticate, replays
//! and malformed packets are dropped and counted, never fatal.
//! Telephone-events become [`AudioStreamEvent::DtmfReceived`], once per
//! key press however many copies arrive; audio goes to the jitter buffer,
//! and [`AudioStream::play_frame`] takes one frame out per packet time,
//! decoding or concealing.
//!
//! [`AudioStream::handle_unverified_datagram`] takes a datagram from an
//! address that is not (yet) the peer's: it is used only if it proves to
//! come from the peer. With SRTP that means it authenticates; with plain
//! RTP, that it carries the remote SSRC already seen (any SSRC before the
//! first packet). The [`Received`] it returns tells the driver whether the
//! packet was genuine, which is what remote-address latching counts.
//!
//! ## Quality
//!
//! [`AudioStream::statistics`] reports counters, RFC 3550 loss and jitter,
//! round-trip time from RTCP, the jitter buffer's statistics, and an
//! E-model estimate ([`crate::quality`]): one-way delay taken as half the
//! round-trip time plus the jitter buffer's delay plus one packet time, and
//! loss counting late packets as lost. G.113 lists no loss robustness for
//! Opus, so Opus is rated with G.711-with-PLC's figures, which understate
//! it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;
use tracing::{debug, trace};

use crate::codec::{self, AudioDecoder, AudioEncoder, CodecError};
use crate::dtmf::{self, Digit, DtmfEvent, DtmfReceiver, EventPacket};
use crate::g711;
use crate::jitter::{
    JitterBuffer, JitterConfig, JitterConfigError, JitterPacket, JitterStatistics, Playout,
    PlayoutQueue,
};
use crate::negotiation::{Codec, NegotiatedAudio, NegotiatedSrtp};
use crate::quality::{self, CodecImpairment, QualityEstimate, QualityInput};
use crate::rtcp::NtpTimestamp;
use crate::rtp::{self, RtpPacket, RtpWriteError, Ssrc};
use crate::sdp::Direction;
use crate::session::{RtpDisposition, RtpSession, RtpSessionConfig, SessionEvent};
use crate::srtp::{SrtpConfig, SrtpContext, SrtpError, SrtpSuite};
use crate::timescale::time_scale;

/// Settings of an [`AudioStream`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AudioStreamConfig {
    /// The canonical name sent in RTCP SDES.
    pub cname: String,
    /// Jitter buffer settings; the clock rate and frame duration are set
    /// from the negotiated codec and packet time.
    pub jitter: JitterConfig,
    /// Nominal interval between RTCP reports.
    pub report_interval: Duration,
    /// SRTP settings (replay window).
    pub srtp: SrtpConfig,
    /// Power level of sent DTMF events, as -dBm0 (0 to 63).
    pub dtmf_volume: u8,
    /// Most digits waiting to be sent; [`AudioStream::send_dtmf`] refuses
    /// more.
    pub max_pending_digits: usize,
}

impl AudioStreamConfig {
    /// Defaults with this CNAME: the jitter buffer's defaults, RTCP every
    /// 5 s (RFC 3550 §6.2), a replay window of 128, DTMF at -10 dBm0, up
    /// to 32 queued digits.
    pub fn new(cname: impl Into<String>) -> Self {
        AudioStreamConfig {
            cname: cname.into(),
            jitter: JitterConfig::default(),
            report_interval: Duration::from_secs(5),
            srtp: SrtpConfig::default(),
            dtmf_volume: 10,
            max_pending_digits: 32,
        }
    }

    /// With these jitter buffer settings.
    pub fn with_jitter(mut self, jitter: JitterConfig) -> Self {
        self.jitter = jitter;
        self
    }

    /// With this nominal RTCP report interval.
    pub fn with_report_interval(mut self, interval: Duration) -> Self {
        self.report_interval = interval;
        self
    }

    /// With these SRTP settings.
    pub fn with_srtp(mut self, srtp: SrtpConfig) -> Self {
        self.srtp = srtp;
        self
    }
}

/// Why a stream could not be set up, or a call was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The codec could not be set up or failed on a frame.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// SRTP could not be set up, or a packet could not be protected.
    #[error("srtp: {0}")]
    Srtp(#[from] SrtpError),
    /// The jitter buffer refused its settings.
    #[error("jitter buffer: {0}")]
    Jitter(#[from] JitterConfigError),
    /// An RTP packet could not be written (a payload type above 127).
    #[error("rtp: {0}")]
    Rtp(#[from] RtpWriteError),
    /// The PCM buffer is not one frame.
    #[error("frame of {actual} samples, the stream takes {expected}")]
    FrameSize {
        /// Samples per frame.
        expected: usize,
        /// Samples given.
        actual: usize,
    },
    /// DTMF asked for, but the peer did not negotiate telephone-events;
    /// send the digit another way (SIP INFO).
    #[error("no telephone-event payload type was negotiated")]
    NoTelephoneEvent,
    /// DTMF asked for while the direction does not let this side send.
    #[error("the stream does not send while {direction:?}")]
    NotSending {
        /// The current direction.
        direction: Direction,
    },
    /// Too many digits are waiting to be sent.
    #[error("{pending} digits are already waiting to be sent")]
    DtmfQueueFull {
        /// Digits waiting.
        pending: usize,
    },
    /// The stream was closed.
    #[error("the stream is closed")]
    Closed,
}

/// What a datagram is, as [`Transmit::kind`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransmitKind {
    /// RTP (or SRTP): send to the peer's RTP address.
    Rtp,
    /// RTCP (or SRTCP): send to the peer's RTCP address, which is the RTP
    /// address with rtcp-mux.
    Rtcp,
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// RTP or RTCP.
    pub kind: TransmitKind,
    /// The bytes, protected when SRTP is on.
    pub data: Vec<u8>,
}

/// Something the application may want to react to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioStreamEvent {
    /// The first genuine packet from the peer arrived: media flows.
    RemoteSourceStarted {
        /// The peer's SSRC.
        ssrc: Ssrc,
    },
    /// The peer started sending with another SSRC; statistics restart.
    RemoteSsrcChanged {
        /// The SSRC before.
        old: Ssrc,
        /// The SSRC now.
        new: Ssrc,
    },
    /// A DTMF key press arrived (reported once per press).
    DtmfReceived(Digit),
    /// The peer sent an RTCP BYE for its source.
    RemoteBye {
        /// Its reason, if any.
        reason: Option<String>,
    },
    /// Packets failed SRTP/SRTCP authentication or were replays; reported
    /// at the 1st, 2nd, 4th, 8th... failure so a flood cannot flood the
    /// application too.
    DecryptFailed {
        /// Failures so far.
        total: u64,
    },
}

/// What [`AudioStream::handle_datagram`] and its siblings made of a
/// datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Received {
    /// A genuine RTP packet from this source (authenticated with SRTP).
    Rtp {
        /// Its SSRC.
        ssrc: Ssrc,
    },
    /// A genuine RTCP packet.
    Rtcp,
    /// Dropped.
    Refused(RefuseReason),
}

impl Received {
    /// Whether the datagram came from the peer as far as the stream can
    /// tell: what remote-address latching counts.
    pub fn is_genuine(self) -> bool {
        !matches!(self, Received::Refused(_))
    }
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefuseReason {
    /// Not RTP or RTCP, or broken.
    Malformed,
    /// SRTP/SRTCP authentication failed.
    Authentication,
    /// An SRTP/SRTCP replay.
    Replayed,
    /// Plain RTP/RTCP from an unverified address with an SSRC other than
    /// the peer's.
    UnknownSource,
    /// It carried our own SSRC (a loop, or a collision, RFC 3550 §8.2).
    Collision,
}

/// What [`AudioStream::send_frame`] sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SendOutcome {
    /// An audio packet (silence when muted).
    Audio,
    /// A telephone-event packet in place of audio.
    Dtmf,
    /// Nothing: the direction does not let this side send.
    Nothing,
}

/// What [`AudioStream::play_frame`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PlayOutcome {
    /// A received frame, decoded.
    Played,
    /// A missing frame, filled by packet-loss concealment.
    Concealed,
    /// Silence: nothing to play yet, a pause, hold, or a long loss.
    Silence,
}

/// A snapshot of a stream's figures.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StreamStatistics {
    /// The codec in use.
    pub codec: Codec,
    /// The SRTP suite, or `None` for plain RTP.
    pub srtp_suite: Option<SrtpSuite>,
    /// The current direction.
    pub direction: Direction,
    /// Whether the microphone is muted.
    pub muted: bool,
    /// Our SSRC.
    pub local_ssrc: Ssrc,
    /// The peer's SSRC, once a packet arrived.
    pub remote_ssrc: Option<Ssrc>,
    /// RTP packets sent (audio and telephone-events).
    pub packets_sent: u64,
    /// Bytes of those packets on the wire (headers and SRTP tags included).
    pub bytes_sent: u64,
    /// Genuine RTP packets received.
    pub packets_received: u64,
    /// Bytes of those packets on the wire.
    pub bytes_received: u64,
    /// DTMF key presses sent.
    pub dtmf_sent: u64,
    /// DTMF key presses received.
    pub dtmf_received: u64,
    /// Packets lost since the peer's source started (RFC 3550 §A.3;
    /// negative when duplicates outnumber losses).
    pub packets_lost: i64,
    /// `packets_lost` as a percentage of the packets expected.
    pub loss_percent: f64,
    /// Interarrival jitter (RFC 3550 §A.8), in milliseconds.
    pub jitter_ms: f64,
    /// Round-trip time from the peer's latest report block.
    pub round_trip_time: Option<Duration>,
    /// The share of our packets the peer reported lost in its latest
    /// report, in percent.
    pub remote_loss_percent: Option<f64>,
    /// The jitter buffer's counters and gauges.
    pub jitter_buffer: JitterStatistics,
    /// SRTP/SRTCP packets that failed authentication or were replays.
    pub decrypt_failures: u64,
    /// Datagrams dropped as malformed.
    pub malformed: u64,
    /// Plain packets from an unverified address that were not the peer's.
    pub unknown_source: u64,
    /// Received frames the decoder refused (concealed instead).
    pub decode_errors: u64,
    /// E-model estimate (R and MOS) from delay and loss.
    pub quality: QualityEstimate,
}

/// One negotiated audio stream. See the module documentation.
#[derive(Debug)]
pub struct AudioStream {
    negotiated: NegotiatedAudio,
    config: AudioStreamConfig,
    rng: StdRng,
    epoch: Instant,
    wall_at_epoch: NtpTimestamp,
    session: RtpSession,
    srtp: Option<SrtpContext>,
    encoder: Box<dyn AudioEncoder>,
    decoder: Box<dyn AudioDecoder>,
    jitter: JitterBuffer<Vec<u8>>,
    dtmf_receiver: DtmfReceiver,
    direction: Direction,
    muted: bool,
    closed: bool,
    next_timestamp: u32,
    talk_spurt_start: bool,
    pending_digits: VecDeque<(Digit, Duration)>,
    press: Option<Press>,
    encode_buffer: Vec<u8>,
    /// Decoded, time-scaled audio not played yet (less than a frame
    /// between calls unless a frame was stretched), and its accounting.
    playout_queue: Vec<i16>,
    playout: PlayoutQueue,
    /// One decoded frame before time-scaling.
    decode_scratch: Vec<i16>,
    /// The length of the peer's packets in timestamp units: the jitter
    /// buffer's frame. The negotiated ptime until packets of another
    /// length arrive.
    receive_frame_ticks: u64,
    /// Another packet length seen in a row of packets.
    length_candidate: Option<LengthCandidate>,
    /// A packet length the jitter buffer refused: not tried again.
    refused_length: Option<u64>,
    /// Whether an audio packet reached the jitter buffer since the codec
    /// was set up.
    heard_audio: bool,
    /// What the audio at the front of the queue came from.
    queued_outcome: PlayOutcome,
    silence: Vec<i16>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<AudioStreamEvent>,
    counters: Counters,
}

/// A packet length other than the jitter buffer's frame, seen on
/// consecutive packets.
#[derive(Clone, Copy, Debug)]
struct LengthCandidate {
    /// The length, timestamp units.
    ticks: u64,
    /// Packets in a row with it.
    seen: u8,
    /// The timestamp of the first of them.
    first_timestamp: u32,
    /// The sequence number of the last of them.
    last_sequence: u16,
}

/// A key press being sent.
#[derive(Debug)]
struct Press {
    packets: Vec<EventPacket>,
    next: usize,
    timestamp: u32,
}

#[derive(Debug, Default)]
struct Counters {
    packets_sent: u64,
    bytes_sent: u64,
    packets_received: u64,
    bytes_received: u64,
    dtmf_sent: u64,
    dtmf_received: u64,
    decrypt_failures: u64,
    malformed: u64,
    unknown_source: u64,
    decode_errors: u64,
}

/// Whether a datagram came from the peer's current address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trust {
    Remote,
    Unverified,
}

/// Largest encoded frame: an Opus packet of 1275 bytes is the worst case.
const ENCODE_BUFFER: usize = 1500;

impl AudioStream {
    /// A stream for `negotiated`, starting at `now` when the wall clock
    /// reads `wall_now` (for RTCP's NTP timestamps). The SSRC, the first
    /// sequence number and timestamp come from `rng`.
    pub fn new<R: Rng + ?Sized>(
        now: Instant,
        wall_now: NtpTimestamp,
        negotiated: &NegotiatedAudio,
        config: AudioStreamConfig,
        rng: &mut R,
    ) -> Result<Self, StreamError> {
        let mut rng = StdRng::seed_from_u64(rng.random());
        let parts = CodecParts::new(negotiated, &config)?;
        let srtp = srtp_context(negotiated.srtp.as_ref(), &config)?;
        let session = RtpSession::new(
            now,
            wall_now,
            session_config(&config, negotiated.codec),
            &mut rng,
        );
        let next_timestamp = rng.random();
        let frame = parts.encoder.frame_samples();
        let decoder_frame = parts.decoder.frame_samples();
        let decoder_rate = parts.decoder.sample_rate();
        Ok(AudioStream {
            negotiated: negotiated.clone(),
            config,
            rng,
            epoch: now,
            wall_at_epoch: wall_now,
            session,
            srtp,
            encoder: parts.encoder,
            decoder: parts.decoder,
            jitter: parts.jitter,
            dtmf_receiver: DtmfReceiver::new(),
            direction: negotiated.direction,
            muted: false,
            closed: false,
            next_timestamp,
            talk_spurt_start: true,
            pending_digits: VecDeque::new(),
            press: None,
            encode_buffer: vec![0; ENCODE_BUFFER],
            playout_queue: Vec::new(),
            playout: PlayoutQueue::with_sample_rate(decoder_frame, decoder_rate),
            decode_scratch: Vec::new(),
            receive_frame_ticks: ptime_ticks(negotiated),
            length_candidate: None,
            refused_length: None,
            heard_audio: false,
            queued_outcome: PlayOutcome::Silence,
            silence: vec![0; frame],
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        })
    }

    /// The negotiated stream this one runs.
    pub fn negotiated(&self) -> &NegotiatedAudio {
        &self.negotiated
    }

    /// The codec in use.
    pub fn codec(&self) -> Codec {
        self.negotiated.codec
    }

    /// Sample rate of the PCM that [`send_frame`](Self::send_frame) takes
    /// and [`play_frame`](Self::play_frame) gives: 8000 for G.711, 48000
    /// for Opus.
    pub fn sample_rate(&self) -> u32 {
        self.encoder.sample_rate()
    }

    /// Samples in one frame: one packet time at [`sample_rate`](Self::sample_rate).
    pub fn frame_samples(&self) -> usize {
        self.encoder.frame_samples()
    }

    /// The packet time in milliseconds: how often to call
    /// [`send_frame`](Self::send_frame) and [`play_frame`](Self::play_frame).
    pub fn ptime(&self) -> u32 {
        self.negotiated.ptime
    }

    /// The packet time as a duration.
    pub fn frame_duration(&self) -> Duration {
        Duration::from_millis(u64::from(self.negotiated.ptime))
    }

    /// Our SSRC.
    pub fn local_ssrc(&self) -> Ssrc {
        self.session.local_ssrc()
    }

    /// The peer's SSRC, once a genuine packet arrived.
    pub fn remote_ssrc(&self) -> Option<Ssrc> {
        self.session.remote_statistics().map(|s| s.ssrc())
    }

    /// Forgets the peer's SSRC, as when a re-offer moves media to another
    /// endpoint: the next source heard is taken as the peer. Its DTMF
    /// timestamps start anywhere, so the last press heard is forgotten too
    /// (the new endpoint's presses could look older and be dropped).
    pub fn forget_remote_source(&mut self) {
        self.session.forget_remote();
        self.dtmf_receiver = DtmfReceiver::new();
    }

    /// The current direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether the stream sends silence in place of captured audio.
    pub fn is_muted(&self) -> bool {
        self.muted
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Mutes or unmutes: muted, silence is encoded and sent in place of
    /// the captured audio (see the module documentation). DTMF still goes
    /// out.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Changes the direction, as for a local hold. Leaving a sending
    /// direction drops any DTMF not yet sent; the first packet after
    /// resuming carries the marker bit.
    pub fn set_direction(&mut self, direction: Direction) {
        if direction != self.direction {
            debug!(from = ?self.direction, to = ?direction, "stream direction");
        }
        self.direction = direction;
        if !direction.sends() {
            self.stop_dtmf();
        }
    }

    /// Applies a new negotiation (re-INVITE): direction, codec, payload
    /// types, packet time, SRTP keys. Only the parts that changed are
    /// rebuilt: a new codec gets a new encoder, decoder and jitter buffer,
    /// a new RTP clock rate a new RTP session (so a new SSRC, RFC 3550
    /// §5.1), new keys a new SRTP context. On error nothing changed.
    pub fn update(
        &mut self,
        now: Instant,
        negotiated: &NegotiatedAudio,
    ) -> Result<(), StreamError> {
        let old = &self.negotiated;
        let codec_changed = old.codec != negotiated.codec || old.ptime != negotiated.ptime;
        let parts = if codec_changed {
            Some(CodecParts::new(negotiated, &self.config)?)
        } else {
            None
        };
        // New keys for a context that stays SRTP change only the direction
        // whose key changed (see `SrtpContext::rekey`).
        let srtp = match (&mut self.srtp, &negotiated.srtp) {
            _ if old.srtp == negotiated.srtp => None,
            // Media at a new address is a new receiver: everything starts
            // again (the negotiation gave our side a new key for it).
            (Some(context), Some(keys))
                if context.suite() == keys.local.suite()
                    && old.remote_rtp == negotiated.remote_rtp =>
            {
                context.rekey(&keys.local, &keys.remote)?;
                None
            }
            _ => Some(srtp_context(negotiated.srtp.as_ref(), &self.config)?),
        };
        let clock_changed = old.codec.clock_rate() != negotiated.codec.clock_rate();
        if let Some(parts) = parts {
            debug!(codec = ?negotiated.codec, ptime = negotiated.ptime, "stream codec changed");
            self.silence = vec![0; parts.encoder.frame_samples()];
            self.encoder = parts.encoder;
            self.decoder = parts.decoder;
            self.jitter = parts.jitter;
            self.playout_queue.clear();
            self.playout = PlayoutQueue::with_sample_rate(
                self.decoder.frame_samples(),
                self.decoder.sample_rate(),
            );
            self.receive_frame_ticks = ptime_ticks(negotiated);
            self.length_candidate = None;
            self.refused_length = None;
            self.heard_audio = false;
            self.talk_spurt_start = true;
        }
        if clock_changed {
            let wall = self.wall_clock(now);
            self.session = RtpSession::new(
                now,
                wall,
                session_config(&self.config, negotiated.codec),
                &mut self.rng,
            );
            self.next_timestamp = self.rng.random();
            self.dtmf_receiver = DtmfReceiver::new();
            self.stop_dtmf();
        }
        if let Some(srtp) = srtp {
            debug!(suite = ?srtp.as_ref().map(SrtpContext::suite), "stream keys changed");
            self.srtp = srtp;
        }
        if negotiated.send_telephone_event.is_none() {
            self.stop_dtmf();
        }
        self.negotiated = negotiated.clone();
        self.set_direction(negotiated.direction);
        Ok(())
    }

    /// Sends one packet time of audio captured at `now`: `pcm` holds
    /// [`frame_samples`](Self::frame_samples) samples at
    /// [`sample_rate`](Self::sample_rate). Queues one RTP packet (audio,
    /// or a DTMF event in its place), or nothing when the direction does
    /// not let this side send.
    pub fn send_frame(&mut self, now: Instant, pcm: &[i16]) -> Result<SendOutcome, StreamError> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        let expected = self.encoder.frame_samples();
        if pcm.len() != expected {
            return Err(StreamError::FrameSize {
                expected,
                actual: pcm.len(),
            });
        }
        let timestamp = self.next_timestamp;
        // Both codecs' RTP clocks run at their sample rates (RFC 3551,
        // RFC 7587), so one frame advances the timestamp by its samples.
        self.next_timestamp = timestamp.wrapping_add(u32::try_from(expected).unwrap_or(0));
        if !self.direction.sends() {
            self.talk_spurt_start = true;
            return Ok(SendOutcome::Nothing);
        }
        if self.press.is_none()
            && let Some((digit, duration)) = self.pending_digits.pop_front()
        {
            let packets = dtmf::encode_press(
                digit,
                self.config.dtmf_volume,
                duration,
                self.frame_duration(),
                self.negotiated.telephone_event_rate,
            );
            trace!(digit = %digit.to_char(), packets = packets.len(), "dtmf press starts");
            self.counters.dtmf_sent += 1;
            self.press = Some(Press {
                packets,
                next: 0,
                timestamp,
            });
        }
        if let Some(sent) = self.send_press_packet(now)? {
            return Ok(sent);
        }
        let input = if self.muted { &self.silence } else { pcm };
        let len = self.encoder.encode(input, &mut self.encode_buffer)?;
        let payload = self.encode_buffer[..len].to_vec();
        let marker = std::mem::take(&mut self.talk_spurt_start);
        let packet = self.session.build_packet(
            now,
            self.negotiated.send_payload_type,
            timestamp,
            marker,
            payload,
        );
        self.send_rtp(&packet)?;
        Ok(SendOutcome::Audio)
    }

    /// Queues a DTMF key press of `duration` as RFC 4733 telephone-events;
    /// the next frame ticks carry it in place of audio. Fails when no
    /// telephone-event was negotiated (send SIP INFO instead), when the
    /// stream does not send, or when too many digits wait.
    pub fn send_dtmf(&mut self, digit: Digit, duration: Duration) -> Result<(), StreamError> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        if self.negotiated.send_telephone_event.is_none() {
            return Err(StreamError::NoTelephoneEvent);
        }
        if !self.direction.sends() {
            return Err(StreamError::NotSending {
                direction: self.direction,
            });
        }
        let pending = self.pending_digits.len();
        if pending >= self.config.max_pending_digits {
            return Err(StreamError::DtmfQueueFull { pending });
        }
        self.pending_digits.push_back((digit, duration));
        Ok(())
    }

    /// Feeds a datagram that arrived at `now` on the RTP port from the
    /// peer's current address: RTP, or RTCP multiplexed on the same port
    /// (RFC 5761 §4).
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8]) -> Received {
        self.receive(now, data, Trust::Remote)
    }

    /// Feeds a datagram that arrived on a separate RTCP port from the
    /// peer's current address.
    pub fn handle_rtcp(&mut self, now: Instant, data: &[u8]) -> Received {
        self.receive_rtcp(now, data, Trust::Remote)
    }

    /// Feeds a datagram (RTP or RTCP) from an address that is not the
    /// peer's current one. It is used only if it proves genuine: SRTP or
    /// SRTCP that authenticates, or plain RTP/RTCP from the peer's SSRC
    /// (any SSRC before the first packet). The result says which, for the
    /// driver's address latching.
    pub fn handle_unverified_datagram(&mut self, now: Instant, data: &[u8]) -> Received {
        self.receive(now, data, Trust::Unverified)
    }

    /// Fills `out` with the frame to play at `now`, one call per packet
    /// time: `out` holds [`frame_samples`](Self::frame_samples) samples.
    ///
    /// Frames come from the jitter buffer time-scaled (stretched or
    /// compressed by a few milliseconds while the buffer moves its delay,
    /// see [`JitterBuffer::pop_scaled`] and [`PlayoutQueue`]) into a
    /// queue this takes one
    /// frame's worth of samples from; the outcome is that of the first
    /// frame taken in this call, or of the queued audio if none was.
    pub fn play_frame(
        &mut self,
        now: Instant,
        out: &mut [i16],
    ) -> Result<PlayOutcome, StreamError> {
        let expected = self.decoder.frame_samples();
        if out.len() != expected {
            return Err(StreamError::FrameSize {
                expected,
                actual: out.len(),
            });
        }
        // Frames come time-scaled (see `JitterBuffer::pop_scaled`) into a
        // queue; each call plays one frame's worth from it.
        let mut first_outcome = None;
        // One of the peer's packets, which may be longer or shorter than
        // our frame.
        let packet_samples = self.receive_frame_samples();
        while let Some(queued) = self.playout.next(&mut self.jitter, now) {
            let mut frame = std::mem::take(&mut self.decode_scratch);
            frame.clear();
            frame.resize(packet_samples, 0);
            let outcome = self.decode_into(queued.playout, &mut frame);
            first_outcome.get_or_insert(outcome);
            time_scale(&frame, queued.samples, &mut self.playout_queue);
            self.decode_scratch = frame;
            if self.playout_queue.len() >= expected {
                self.queued_outcome = outcome;
            }
        }
        self.playout.advance();
        debug_assert_eq!(
            self.playout_queue.len().saturating_sub(expected),
            self.playout.queued()
        );
        // Short only if the queue could not be filled (a frame of a
        // sample or two): the rest of the tick is silent.
        if self.playout_queue.len() < expected {
            self.playout_queue.resize(expected, 0);
        }
        out.copy_from_slice(&self.playout_queue[..expected]);
        self.playout_queue.drain(..expected);
        Ok(first_outcome.unwrap_or(self.queued_outcome))
    }

    /// Decodes (or conceals, or silences) one frame into `out`.
    fn decode_into(&mut self, playout: Playout<Vec<u8>>, out: &mut [i16]) -> PlayOutcome {
        match playout {
            Playout::Frame(frame) => match self.decode_whole(&frame.payload, out) {
                Ok(written) => {
                    // An odd packet shorter than the frame: the rest is
                    // concealed rather than a gap.
                    if let Some(rest) = out.get_mut(written..)
                        && !rest.is_empty()
                        && self.decoder.conceal(rest).is_err()
                    {
                        rest.fill(0);
                    }
                    PlayOutcome::Played
                }
                Err(error) => {
                    trace!(%error, "frame not decodable, concealed");
                    self.counters.decode_errors += 1;
                    self.conceal(out)
                }
            },
            Playout::Conceal => self.conceal(out),
            Playout::Silence => {
                out.fill(0);
                PlayOutcome::Silence
            }
        }
    }

    /// Decodes `payload` into `out`; an odd packet longer than the frame
    /// plays its start (the frames after it follow on the sender's grid).
    fn decode_whole(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let needed = self.decoder.packet_samples(payload).unwrap_or(0);
        if needed <= out.len() {
            return self.decoder.decode(payload, out);
        }
        let mut long = vec![0i16; needed];
        let written = self.decoder.decode(payload, &mut long)?.min(out.len());
        out[..written].copy_from_slice(&long[..written]);
        Ok(written)
    }

    /// Sends an RTCP report if one is due. Safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        self.drain_session();
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            None
        } else {
            self.session.poll_timeout()
        }
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<AudioStreamEvent> {
        self.events.pop_front()
    }

    /// Ends the stream: queues a last RTCP report with a BYE (RFC 3550
    /// §6.6). Afterwards nothing more is sent; received packets are still
    /// counted. Calling it again does nothing.
    pub fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.session.close(now, None);
        self.drain_session();
        self.closed = true;
        self.stop_dtmf();
    }

    /// The stream's figures now.
    pub fn statistics(&self) -> StreamStatistics {
        let remote = self.session.remote_statistics();
        let expected = remote.map_or(0, |s| u64::from(s.expected()));
        let lost = remote.map_or(0, |s| i64::from(s.cumulative_lost()));
        let jitter = remote.map_or(Duration::ZERO, |s| s.jitter_duration());
        let jitter_buffer = self.jitter.statistics();
        let percent = |n: f64| {
            if expected == 0 {
                0.0
            } else {
                (100.0 * n / expected as f64).clamp(0.0, 100.0)
            }
        };
        let loss_percent = percent(lost.max(0) as f64);
        let round_trip_time = self.session.round_trip_time();
        let one_way_delay = round_trip_time.unwrap_or_default() / 2
            + jitter_buffer.current_delay
            + self.frame_duration();
        let quality = quality::estimate(&QualityInput {
            one_way_delay,
            packet_loss_percent: percent(lost.max(0) as f64 + jitter_buffer.late as f64),
            burst_ratio: 1.0,
            codec: impairment(self.negotiated.codec),
        });
        StreamStatistics {
            codec: self.negotiated.codec,
            srtp_suite: self.srtp.as_ref().map(SrtpContext::suite),
            direction: self.direction,
            muted: self.muted,
            local_ssrc: self.session.local_ssrc(),
            remote_ssrc: self.remote_ssrc(),
            packets_sent: self.counters.packets_sent,
            bytes_sent: self.counters.bytes_sent,
            packets_received: self.counters.packets_received,
            bytes_received: self.counters.bytes_received,
            dtmf_sent: self.counters.dtmf_sent,
            dtmf_received: self.counters.dtmf_received,
            packets_lost: lost,
            loss_percent,
            jitter_ms: jitter.as_secs_f64() * 1000.0,
            round_trip_time,
            remote_loss_percent: self
                .session
                .remote_fraction_lost()
                .map(|f| f64::from(f) * 100.0 / 256.0),
            jitter_buffer,
            decrypt_failures: self.counters.decrypt_failures,
            malformed: self.counters.malformed,
            unknown_source: self.counters.unknown_source,
            decode_errors: self.counters.decode_errors,
            quality,
        }
    }

    fn send_press_packet(&mut self, now: Instant) -> Result<Option<SendOutcome>, StreamError> {
        let (Some(press), Some(payload_type)) =
            (self.press.as_mut(), self.negotiated.send_telephone_event)
        else {
            return Ok(None);
        };
        let Some(planned) = press.packets.get(press.next).copied() else {
            self.press = None;
            return Ok(None);
        };
        press.next += 1;
        let timestamp = press.timestamp.wrapping_add(planned.timestamp_offset);
        if press.next == press.packets.len() {
            self.press = None;
            // Audio after an event starts a new talk spurt.
            self.talk_spurt_start = true;
        }
        let packet = self.session.build_packet(
            now,
            payload_type,
            timestamp,
            planned.marker,
            planned.event.to_bytes().to_vec(),
        );
        self.send_rtp(&packet)?;
        Ok(Some(SendOutcome::Dtmf))
    }

    fn send_rtp(&mut self, packet: &RtpPacket) -> Result<(), StreamError> {
        let mut data = packet.to_bytes()?;
        if let Some(srtp) = &mut self.srtp {
            data = srtp.protect_rtp(&data)?;
        }
        self.counters.packets_sent += 1;
        self.counters.bytes_sent += data.len() as u64;
        self.transmits.push_back(Transmit {
            kind: TransmitKind::Rtp,
            data,
        });
        Ok(())
    }

    fn stop_dtmf(&mut self) {
        if self.press.take().is_some() {
            self.talk_spurt_start = true;
        }
        self.pending_digits.clear();
    }

    fn conceal(&mut self, out: &mut [i16]) -> PlayOutcome {
        match self.decoder.conceal(out) {
            Ok(written) => {
                if let Some(rest) = out.get_mut(written..) {
                    rest.fill(0);
                }
                PlayOutcome::Concealed
            }
            Err(_) => {
                out.fill(0);
                PlayOutcome::Silence
            }
        }
    }

    fn receive(&mut self, now: Instant, data: &[u8], trust: Trust) -> Received {
        if rtp::is_rtcp(data) {
            self.receive_rtcp(now, data, trust)
        } else {
            self.receive_rtp(now, data, trust)
        }
    }

    fn receive_rtp(&mut self, now: Instant, data: &[u8], trust: Trust) -> Received {
        let decrypted;
        let bytes = match &mut self.srtp {
            Some(srtp) => match srtp.unprotect_rtp(data) {
                Ok(plain) => {
                    decrypted = plain;
                    decrypted.as_slice()
                }
                Err(error) => return self.refuse_srtp(&error),
            },
            None => data,
        };
        let Ok(packet) = RtpPacket::parse(bytes) else {
            return self.refuse(RefuseReason::Malformed);
        };
        if trust == Trust::Unverified && self.srtp.is_none() {
            match self.remote_ssrc() {
                Some(s) if s != packet.ssrc => {
                    self.counters.unknown_source += 1;
                    trace!(ssrc = %packet.ssrc, "plain rtp from an unverified address refused");
                    return Received::Refused(RefuseReason::UnknownSource);
                }
                Some(_) => {}
                // No source known yet: the packet counts towards moving the
                // remote address there, but neither fixes the SSRC nor
                // plays until it has moved, so one stray packet cannot lock
                // out the peer (a peer behind NAT sends from an address
                // its SDP does not show).
                None => return Received::Rtp { ssrc: packet.ssrc },
            }
        }
        // Events come on our number for them, or (a peer that renumbered
        // them in its answer) on its own, as audio may (RFC 3264 §6.1).
        let pt = packet.payload_type;
        let is_event = Some(pt) == self.negotiated.receive_telephone_event
            || (Some(pt) == self.negotiated.send_telephone_event
                && pt != self.negotiated.receive_payload_type
                && pt != self.negotiated.send_payload_type);
        let disposition = if is_event {
            self.session.handle_untimed_rtp(now, &packet)
        } else {
            self.session.handle_rtp(now, &packet)
        };
        self.drain_session();
        if disposition == RtpDisposition::Collision {
            return Received::Refused(RefuseReason::Collision);
        }
        self.counters.packets_received += 1;
        self.counters.bytes_received += data.len() as u64;
        let received = Received::Rtp { ssrc: packet.ssrc };
        if disposition == RtpDisposition::Dropped || !self.direction.receives() {
            return received;
        }
        let payload_type = packet.payload_type;
        if is_event {
            for event in self.dtmf_receiver.handle(packet.timestamp, &packet.payload) {
                if let DtmfEvent::Began { digit, .. } = event {
                    debug!(digit = %digit.to_char(), "dtmf received");
                    self.counters.dtmf_received += 1;
                    self.events.push_back(AudioStreamEvent::DtmfReceived(digit));
                }
            }
        } else if payload_type == self.negotiated.receive_payload_type
            || payload_type == self.negotiated.send_payload_type
        {
            let frame = JitterPacket::new(
                packet.ssrc,
                packet.sequence_number,
                packet.timestamp,
                packet.marker,
                packet.payload,
            );
            self.push_audio(now, frame);
        } else if let Some(payload) =
            other_law(self.negotiated.codec, payload_type, &packet.payload)
        {
            // The peer moved to the other G.711 law, which both sides
            // listed (RFC 3264 §5.1 lets it): same clock and frames, so
            // the bytes are turned into our law and play on.
            let frame = JitterPacket::new(
                packet.ssrc,
                packet.sequence_number,
                packet.timestamp,
                packet.marker,
                payload,
            );
            self.push_audio(now, frame);
        } else {
            trace!(payload_type, "rtp with an unknown payload type ignored");
        }
        received
    }

    /// Hands an audio packet to the jitter buffer, first following the
    /// peer's packet length when it differs from the buffer's frame.
    fn push_audio(&mut self, now: Instant, frame: JitterPacket<Vec<u8>>) {
        self.follow_packet_length(now, &frame);
        self.heard_audio = true;
        self.jitter.push(now, frame);
    }

    /// A peer may send packets of another length than the ptime we asked
    /// for (RFC 3264 §6.1: the receiver should take them). The jitter
    /// buffer then plays the peer's packets as its frames: two packets in
    /// a row (consecutive sequence numbers) of the new length move it, so
    /// an odd one out or its duplicate does not; the first packet of the
    /// stream moves it at once.
    fn follow_packet_length(&mut self, now: Instant, packet: &JitterPacket<Vec<u8>>) {
        let Some(ticks) = self.packet_ticks(&packet.payload) else {
            return;
        };
        if ticks == self.receive_frame_ticks {
            self.length_candidate = None;
            return;
        }
        let clock = u64::from(self.negotiated.codec.clock_rate());
        // Whole multiples of 2.5 ms up to 120 ms: every Opus length, and
        // every G.711 packet time a sender would choose.
        let step = clock / 400;
        if step == 0
            || !ticks.is_multiple_of(step)
            || ticks == 0
            || ticks > step * 48
            || self.refused_length == Some(ticks)
        {
            return;
        }
        let candidate = match self.length_candidate {
            Some(c)
                if c.ticks == ticks
                    && packet.sequence_number == c.last_sequence.wrapping_add(1) =>
            {
                LengthCandidate {
                    seen: c.seen.saturating_add(1),
                    last_sequence: packet.sequence_number,
                    ..c
                }
            }
            Some(c) if c.ticks == ticks && packet.sequence_number == c.last_sequence => c,
            _ => LengthCandidate {
                ticks,
                seen: 1,
                first_timestamp: packet.timestamp,
                last_sequence: packet.sequence_number,
            },
        };
        self.length_candidate = Some(candidate);
        if candidate.seen < 2 && self.heard_audio {
            return;
        }
        let duration = Duration::from_nanos(ticks * 1_000_000_000 / clock);
        let mut config = self
            .config
            .jitter
            .clone()
            .with_clock(self.negotiated.codec.clock_rate(), duration);
        // Frames are taken on our own tick, up to a tick before they play.
        let tick = Duration::from_millis(u64::from(self.negotiated.ptime));
        if duration != tick {
            config.min_delay = config.min_delay.max(tick);
        }
        // Time-scaling changes a frame by at most half of it.
        config.time_scale_limit = config.time_scale_limit.min(duration / 2);
        // Packets of the old length would put the new frames off their
        // grid: the new length plays from its first packet.
        let first = candidate.first_timestamp;
        let from_first = |p: &JitterPacket<Vec<u8>>| p.timestamp.wrapping_sub(first) < 1 << 31;
        match self.jitter.reconfigure(config, from_first) {
            Ok(held) => {
                debug!(
                    from_ms = self.receive_frame_ticks * 1000 / clock,
                    to_ms = duration.as_secs_f64() * 1000.0,
                    "peer's packet length followed"
                );
                self.receive_frame_ticks = ticks;
                self.length_candidate = None;
                for packet in held {
                    self.jitter.push(now, packet);
                }
            }
            Err(error) => {
                debug!(%error, "peer's packet length not playable");
                self.refused_length = Some(ticks);
                self.length_candidate = None;
            }
        }
    }

    /// The length of a payload in timestamp units, as the codec reads it.
    fn packet_ticks(&self, payload: &[u8]) -> Option<u64> {
        let samples = self.decoder.packet_samples(payload)?;
        let clock = u64::from(self.negotiated.codec.clock_rate());
        let rate = u64::from(self.decoder.sample_rate()).max(1);
        Some(samples as u64 * clock / rate)
    }

    /// Decoded samples in one of the peer's packets.
    fn receive_frame_samples(&self) -> usize {
        let clock = u64::from(self.negotiated.codec.clock_rate()).max(1);
        let samples = self.receive_frame_ticks * u64::from(self.decoder.sample_rate()) / clock;
        usize::try_from(samples).unwrap_or(usize::MAX)
    }

    fn receive_rtcp(&mut self, now: Instant, data: &[u8], trust: Trust) -> Received {
        let decrypted;
        let bytes = match &mut self.srtp {
            Some(srtp) => match srtp.unprotect_rtcp(data) {
                Ok(plain) => {
                    decrypted = plain;
                    decrypted.as_slice()
                }
                Err(error) => return self.refuse_srtp(&error),
            },
            None => data,
        };
        if trust == Trust::Unverified && self.srtp.is_none() {
            // Every compound packet starts with an SR or RR whose sender
            // SSRC is at bytes 4..8 (RFC 3550 §6.1).
            let sender = bytes
                .get(4..8)
                .map(|b| Ssrc(u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
            if sender.is_none() || self.remote_ssrc().is_some_and(|s| Some(s) != sender) {
                self.counters.unknown_source += 1;
                return Received::Refused(RefuseReason::UnknownSource);
            }
        }
        if let Err(error) = self.session.handle_rtcp(now, bytes) {
            trace!(%error, "malformed rtcp dropped");
            return self.refuse(RefuseReason::Malformed);
        }
        self.drain_session();
        Received::Rtcp
    }

    fn refuse(&mut self, reason: RefuseReason) -> Received {
        if reason == RefuseReason::Malformed {
            self.counters.malformed += 1;
        }
        Received::Refused(reason)
    }

    fn refuse_srtp(&mut self, error: &SrtpError) -> Received {
        let reason = match error {
            SrtpError::Malformed { .. } => return self.refuse(RefuseReason::Malformed),
            SrtpError::Replayed => RefuseReason::Replayed,
            _ => RefuseReason::Authentication,
        };
        self.counters.decrypt_failures += 1;
        let total = self.counters.decrypt_failures;
        if total.is_power_of_two() {
            debug!(total, "srtp packets refused");
            self.events
                .push_back(AudioStreamEvent::DecryptFailed { total });
        }
        Received::Refused(reason)
    }

    /// Moves the session's RTCP out (protected) and turns its events into
    /// the stream's.
    fn drain_session(&mut self) {
        while let Some(rtcp) = self.session.poll_transmit() {
            if self.closed {
                continue;
            }
            let data = match &mut self.srtp {
                Some(srtp) => match srtp.protect_rtcp(&rtcp) {
                    Ok(data) => data,
                    Err(error) => {
                        debug!(%error, "rtcp report not protected, not sent");
                        continue;
                    }
                },
                None => rtcp,
            };
            self.transmits.push_back(Transmit {
                kind: TransmitKind::Rtcp,
                data,
            });
        }
        while let Some(event) = self.session.poll_event() {
            match event {
                SessionEvent::RemoteSourceStarted { ssrc } => {
                    self.events
                        .push_back(AudioStreamEvent::RemoteSourceStarted { ssrc });
                }
                SessionEvent::RemoteSourceChanged { old, new } => {
                    // Timestamps restart with the new source; old presses
                    // would make its first ones look like stragglers.
                    self.dtmf_receiver = DtmfReceiver::new();
                    self.events
                        .push_back(AudioStreamEvent::RemoteSsrcChanged { old, new });
                }
                SessionEvent::RemoteGoodbye { reason, .. } => {
                    self.events
                        .push_back(AudioStreamEvent::RemoteBye { reason });
                }
                SessionEvent::SsrcCollision { .. } => self.talk_spurt_start = true,
                _ => {}
            }
        }
    }

    fn wall_clock(&self, now: Instant) -> NtpTimestamp {
        let elapsed = now.saturating_duration_since(self.epoch);
        let ticks = (elapsed.as_nanos() << 32) / 1_000_000_000;
        NtpTimestamp(
            self.wall_at_epoch
                .0
                .wrapping_add(u64::try_from(ticks).unwrap_or(u64::MAX)),
        )
    }
}

/// The codec-dependent parts, built together so an update either gets all
/// of them or none.
struct CodecParts {
    encoder: Box<dyn AudioEncoder>,
    decoder: Box<dyn AudioDecoder>,
    jitter: JitterBuffer<Vec<u8>>,
}

impl CodecParts {
    fn new(negotiated: &NegotiatedAudio, config: &AudioStreamConfig) -> Result<Self, StreamError> {
        let encoder = codec::encoder(negotiated.codec, negotiated.ptime)?;
        let decoder = codec::decoder(negotiated.codec, negotiated.ptime)?;
        let jitter = JitterBuffer::new(config.jitter.clone().with_clock(
            negotiated.codec.clock_rate(),
            Duration::from_millis(u64::from(negotiated.ptime)),
        ))?;
        Ok(CodecParts {
            encoder,
            decoder,
            jitter,
        })
    }
}

/// The negotiated packet time in timestamp units.
fn ptime_ticks(negotiated: &NegotiatedAudio) -> u64 {
    u64::from(negotiated.ptime) * u64::from(negotiated.codec.clock_rate()) / 1000
}

fn session_config(config: &AudioStreamConfig, codec: Codec) -> RtpSessionConfig {
    RtpSessionConfig::new(config.cname.clone())
        .with_clock_rate(codec.clock_rate())
        .with_report_interval(config.report_interval)
}

/// A payload of the other G.711 law (static payload type 0 or 8, RFC 3551)
/// in the law `codec` decodes; `None` for anything else.
fn other_law(codec: Codec, payload_type: u8, payload: &[u8]) -> Option<Vec<u8>> {
    match (codec, payload_type) {
        (Codec::Pcmu, 8) => Some(
            payload
                .iter()
                .map(|&a| g711::linear_to_ulaw(g711::alaw_to_linear(a)))
                .collect(),
        ),
        (Codec::Pcma, 0) => Some(
            payload
                .iter()
                .map(|&u| g711::linear_to_alaw(g711::ulaw_to_linear(u)))
                .collect(),
        ),
        _ => None,
    }
}

fn srtp_context(
    keys: Option<&NegotiatedSrtp>,
    config: &AudioStreamConfig,
) -> Result<Option<SrtpContext>, StreamError> {
    keys.map(|k| SrtpContext::new(&k.local, &k.remote, config.srtp.clone()))
        .transpose()
        .map_err(StreamError::from)
}

fn impairment(codec: Codec) -> CodecImpairment {
    match codec {
        // G.113 gives no Ie/Bpl for Opus; G.711 with PLC is the stand-in
        // (see the module documentation).
        Codec::Pcmu | Codec::Pcma | Codec::Opus => CodecImpairment::G711_PLC,
    }
}

#[cfg(test)]
mod tests {
    use std::f64::consts::PI;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::dtmf::TelephoneEvent;
    use crate::negotiation::{MediaNegotiation, MediaSettings};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn wall() -> NtpTimestamp {
        NtpTimestamp::from_unix(Duration::from_secs(1_800_000_000))
    }

    fn settings(port: u16, codec: Codec, suite: Option<SrtpSuite>) -> MediaSettings {
        let mut settings = MediaSettings::new(LOCALHOST, port).with_codecs([codec]);
        match suite {
            Some(suite) => settings = settings.with_crypto_suites([suite]),
            None => {
                settings.dangerous().disable_srtp();
            }
        }
        settings
    }

    /// Both ends of an offer/answer, and what each side negotiated.
    struct Negotiated {
        alice: MediaNegotiation,
        bob: MediaNegotiation,
        at_alice: NegotiatedAudio,
        at_bob: NegotiatedAudio,
    }

    fn negotiate(alice: MediaSettings, bob: MediaSettings, rng: &mut StdRng) -> Negotiated {
        let mut alice = MediaNegotiation::new(alice, rng);
        let mut bob = MediaNegotiation::new(bob, rng);
        let answer = bob.handle_offer(&alice.create_offer().unwrap()).unwrap();
        let at_alice = alice.handle_answer(&answer.description).unwrap();
        Negotiated {
            alice,
            bob,
            at_alice,
            at_bob: answer.audio.unwrap(),
        }
    }

    /// One end of a call: a stream fed with a tone, and what it played.
    struct Side {
        stream: AudioStream,
        frequency: f64,
        phase: usize,
        sent: Vec<Transmit>,
        played: Vec<i16>,
        outcomes: Vec<PlayOutcome>,
    }

    impl Side {
        fn new(stream: AudioStream, frequency: f64) -> Self {
            Side {
                stream,
                frequency,
                phase: 0,
                sent: Vec::new(),
                played: Vec::new(),
                outcomes: Vec::new(),
            }
        }

        fn next_frame(&mut self) -> Vec<i16> {
            let frame = tone(
                self.frequency,
                self.stream.sample_rate(),
                self.phase,
                self.stream.frame_samples(),
            );
            self.phase += frame.len();
            frame
        }

        /// The last `frames` frames played, if all were decoded frames.
        fn tail(&self, frames: usize) -> &[i16] {
            let n = self.stream.frame_samples();
            assert!(
                self.outcomes[self.outcomes.len() - frames..]
                    .iter()
                    .all(|o| *o == PlayOutcome::Played),
                "not all played: {:?}",
                &self.outcomes[self.outcomes.len() - frames..]
            );
            &self.played[self.played.len() - frames * n..]
        }
    }

    fn tone(frequency: f64, rate: u32, start: usize, len: usize) -> Vec<i16> {
        (start..start + len)
            .map(|i| (8000.0 * (2.0 * PI * frequency * i as f64 / f64::from(rate)).sin()) as i16)
            .collect()
    }

    /// Frequency from the first and last upward zero crossing, located
    /// between samples by linear interpolation.
    fn frequency(samples: &[i16], rate: u32) -> f64 {
        let mut crossings = samples.windows(2).enumerate().filter_map(|(i, w)| {
            let (x0, x1) = (f64::from(w[0]), f64::from(w[1]));
            (x0 < 0.0 && x1 >= 0.0).then(|| i as f64 + -x0 / (x1 - x0))
        });
        let first = crossings.next().unwrap();
        let (count, last) = crossings.fold((0, first), |(n, _), t| (n + 1, t));
        f64::from(count) / ((last - first) / f64::from(rate))
    }

    fn rms(samples: &[i16]) -> f64 {
        let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
        (sum / samples.len().max(1) as f64).sqrt()
    }

    fn assert_frequency(samples: &[i16], rate: u32, expected: f64) {
        let f = frequency(samples, rate);
        assert!(
            (f - expected).abs() <= expected * 0.02,
            "measured {f:.1} Hz, sent {expected} Hz"
        );
        assert!(rms(samples) > 2000.0, "too quiet: rms {}", rms(samples));
    }

    /// Which way a datagram goes.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Way {
        AliceToBob,
        BobToAlice,
    }

    /// A call between two streams over a simulated network that delivers
    /// within the packet time; `network` says how many copies of each
    /// datagram arrive (0 drops it).
    struct Call {
        a: Side,
        b: Side,
        now: Instant,
        rtcp_separate: bool,
    }

    impl Call {
        fn new(
            at_alice: &NegotiatedAudio,
            at_bob: &NegotiatedAudio,
            config: AudioStreamConfig,
        ) -> Self {
            let now = crate::test_support::epoch();
            let mut rng = StdRng::seed_from_u64(9);
            let mut config_a = config.clone();
            config_a.cname = "alice@example.org".into();
            let mut config_b = config;
            config_b.cname = "bob@example.org".into();
            let a = AudioStream::new(now, wall(), at_alice, config_a, &mut rng).unwrap();
            let b = AudioStream::new(now, wall(), at_bob, config_b, &mut rng).unwrap();
            Call {
                a: Side::new(a, 1000.0),
                b: Side::new(b, 440.0),
                now,
                rtcp_separate: !at_alice.rtcp_mux,
            }
        }

        fn run(&mut self, ticks: usize, mut network: impl FnMut(Way, &Transmit) -> usize) {
            for _ in 0..ticks {
                let now = self.now;
                for side in [&mut self.a, &mut self.b] {
                    let frame = side.next_frame();
                    side.stream.send_frame(now, &frame).unwrap();
                    side.stream.handle_timeout(now);
                }
                for way in [Way::AliceToBob, Way::BobToAlice] {
                    let (from, to) = match way {
                        Way::AliceToBob => (&mut self.a, &mut self.b),
                        Way::BobToAlice => (&mut self.b, &mut self.a),
                    };
                    while let Some(t) = from.stream.poll_transmit() {
                        for _ in 0..network(way, &t) {
                            if self.rtcp_separate && t.kind == TransmitKind::Rtcp {
                                to.stream.handle_rtcp(now, &t.data);
                            } else {
                                to.stream.handle_datagram(now, &t.data);
                            }
                        }
                        from.sent.push(t);
                    }
                }
                for side in [&mut self.a, &mut self.b] {
                    let mut out = vec![0i16; side.stream.frame_samples()];
                    let outcome = side.stream.play_frame(now, &mut out).unwrap();
                    side.outcomes.push(outcome);
                    side.played.extend_from_slice(&out);
                }
                self.now += Duration::from_millis(20);
            }
        }
    }

    fn events(stream: &mut AudioStream) -> Vec<AudioStreamEvent> {
        std::iter::from_fn(|| stream.poll_event()).collect()
    }

    /// The DTMF digits `stream` reported since last asked.
    fn digits_received(stream: &mut AudioStream) -> Vec<char> {
        events(stream)
            .into_iter()
            .filter_map(|e| match e {
                AudioStreamEvent::DtmfReceived(d) => Some(d.to_char()),
                _ => None,
            })
            .collect()
    }

    fn start_call(codec: Codec, suite: Option<SrtpSuite>) -> (Call, Negotiated) {
        let mut rng = StdRng::seed_from_u64(1);
        let n = negotiate(
            settings(4000, codec, suite),
            settings(5000, codec, suite),
            &mut rng,
        );
        let call = Call::new(&n.at_alice, &n.at_bob, AudioStreamConfig::new("x"));
        (call, n)
    }

    /// A tone crosses both ways; with SRTP the payload on the wire is not
    /// the codec's output.
    fn assert_tone_crosses(codec: Codec, suite: Option<SrtpSuite>) {
        let (mut call, _) = start_call(codec, suite);
        call.run(50, |_, _| 1);
        let (a, b) = (&call.a, &call.b);
        let rate = a.stream.sample_rate();
        assert_eq!(rate, codec.clock_rate());
        assert_frequency(b.tail(25), rate, 1000.0);
        assert_frequency(a.tail(25), rate, 440.0);

        // What the first packet would carry in the clear.
        let mut encoder = codec::encoder(codec, 20).unwrap();
        let mut plain = vec![0u8; ENCODE_BUFFER];
        let len = encoder
            .encode(&tone(1000.0, rate, 0, a.stream.frame_samples()), &mut plain)
            .unwrap();
        let first = &a.sent[0];
        assert_eq!(first.kind, TransmitKind::Rtp);
        let overhead = suite.map_or(0, SrtpSuite::rtp_overhead);
        assert_eq!(first.data.len(), 12 + len + overhead);
        let on_wire = &first.data[12..12 + len];
        if suite.is_some() {
            assert_ne!(on_wire, &plain[..len], "srtp payload sent in the clear");
        } else {
            assert_eq!(on_wire, &plain[..len]);
        }
        let stats = b.stream.statistics();
        assert_eq!(stats.codec, codec);
        assert_eq!(stats.srtp_suite, suite);
        assert_eq!(stats.packets_received, 50);
        assert_eq!(stats.packets_lost, 0);
        assert_eq!(stats.decrypt_failures, 0);
        assert!(stats.quality.mos > 4.0, "{:?}", stats.quality);
    }

    /// RFC 3264 §5.1: a peer that switches to the other G.711 law it
    /// listed, without a new offer, is still heard (here Alice sends PCMA
    /// on 8 to a Bob that decodes PCMU).
    #[test]
    fn rfc3264_5_1_the_other_g711_law_plays_without_a_new_offer() {
        let (_, n) = start_call(Codec::Pcmu, None);
        let mut at_alice = n.at_alice.clone();
        at_alice.codec = Codec::Pcma;
        at_alice.send_payload_type = 8;
        at_alice.receive_payload_type = 8;
        let mut call = Call::new(&at_alice, &n.at_bob, AudioStreamConfig::new("x"));
        call.run(50, |_, _| 1);
        assert_eq!(call.a.sent[0].data[1] & 0x7f, 8);
        assert_frequency(call.b.tail(25), 8000, 1000.0);
        assert_eq!(call.b.stream.statistics().packets_received, 50);
    }

    /// RFC 3264 §6.1: a peer that renumbered telephone-event in its
    /// answer and sends events on its own number (not ours) is heard, as
    /// audio on the peer's number is.
    #[test]
    fn rfc3264_6_1_events_on_the_peers_own_number_are_heard() {
        let (_, n) = start_call(Codec::Pcmu, None);
        let (mut at_alice, mut at_bob) = (n.at_alice.clone(), n.at_bob);
        at_alice.send_telephone_event = Some(96);
        at_bob.send_telephone_event = Some(96);
        assert_ne!(at_bob.receive_telephone_event, Some(96));
        let mut call = Call::new(&at_alice, &at_bob, AudioStreamConfig::new("x"));
        call.a
            .stream
            .send_dtmf(Digit::from_char('7').unwrap(), Duration::from_millis(100))
            .unwrap();
        call.run(20, |_, _| 1);
        assert_eq!(digits_received(&mut call.b.stream), ['7']);
    }

    #[test]
    fn pcmu_plain_rtp_carries_a_tone_both_ways() {
        assert_tone_crosses(Codec::Pcmu, None);
    }

    #[test]
    fn pcma_aes_cm_128_hmac_sha1_80_carries_a_tone_encrypted() {
        assert_tone_crosses(Codec::Pcma, Some(SrtpSuite::AesCm128HmacSha1_80));
    }

    #[test]
    fn pcmu_aead_aes_128_gcm_carries_a_tone_encrypted() {
        assert_tone_crosses(Codec::Pcmu, Some(SrtpSuite::AeadAes128Gcm));
    }

    #[test]
    fn opus_plain_rtp_carries_a_tone_both_ways() {
        assert_tone_crosses(Codec::Opus, None);
    }

    #[test]
    fn opus_aes_cm_128_hmac_sha1_80_carries_a_tone_encrypted() {
        assert_tone_crosses(Codec::Opus, Some(SrtpSuite::AesCm128HmacSha1_80));
    }

    #[test]
    fn opus_aead_aes_128_gcm_carries_a_tone_encrypted() {
        assert_tone_crosses(Codec::Opus, Some(SrtpSuite::AeadAes128Gcm));
    }

    #[test]
    fn rfc4733_digits_arrive_once_each_despite_duplicates() {
        for suite in [None, Some(SrtpSuite::AesCm128HmacSha1_80)] {
            let (mut call, n) = start_call(Codec::Pcmu, suite);
            let te = n.at_alice.send_telephone_event.unwrap();
            for c in ['1', '#', '9'] {
                let digit = Digit::from_char(c).unwrap();
                call.a
                    .stream
                    .send_dtmf(digit, Duration::from_millis(100))
                    .unwrap();
            }
            // Every datagram arrives twice; with SRTP the copy is a replay.
            call.run(40, |_, _| 2);
            assert_eq!(
                digits_received(&mut call.b.stream),
                ['1', '#', '9'],
                "suite {suite:?}"
            );

            // The first press on the wire: start with the marker, four
            // continuations, three ends, one timestamp.
            let press: Vec<RtpPacket> = call
                .a
                .sent
                .iter()
                .filter(|t| t.kind == TransmitKind::Rtp)
                .map(|t| RtpPacket::parse(&t.data).unwrap())
                .skip_while(|p| p.payload_type != te)
                .take_while(|p| p.payload_type == te)
                .collect();
            let events: Vec<TelephoneEvent> = press
                .iter()
                .map(|p| TelephoneEvent::parse(&p.payload[..4]).unwrap())
                .collect();
            if suite.is_none() {
                assert_eq!(press.len(), 3 * (4 + 3), "three presses back to back");
                let first = &press[..7];
                assert!(first[0].marker && first[1..].iter().all(|p| !p.marker));
                assert!(first.iter().all(|p| p.timestamp == first[0].timestamp));
                let durations: Vec<u16> = events[..7].iter().map(|e| e.duration).collect();
                assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800]);
                assert!(
                    events[..7]
                        .iter()
                        .map(|e| e.end)
                        .eq([false, false, false, false, true, true, true])
                );
                assert_eq!(events[7].event, 11, "then '#'");
                assert_ne!(press[7].timestamp, press[0].timestamp);
            }
            let stats = call.b.stream.statistics();
            assert_eq!(stats.dtmf_received, 3);
            assert_eq!(call.a.stream.statistics().dtmf_sent, 3);
            if suite.is_some() {
                assert_eq!(
                    stats.decrypt_failures, stats.packets_received,
                    "every copy refused"
                );
            }
            // Audio resumes after the presses with a new talk spurt.
            let audio_after: Vec<RtpPacket> = call
                .a
                .sent
                .iter()
                .filter(|t| t.kind == TransmitKind::Rtp)
                .map(|t| RtpPacket::parse(&t.data).unwrap())
                .skip_while(|p| p.payload_type != te)
                .skip_while(|p| p.payload_type == te)
                .collect();
            assert!(audio_after[0].marker);
        }
    }

    #[test]
    fn dtmf_without_telephone_event_is_refused_for_sip_info() {
        let mut rng = StdRng::seed_from_u64(1);
        let n = negotiate(
            settings(4000, Codec::Pcmu, None).with_telephone_event(false),
            settings(5000, Codec::Pcmu, None),
            &mut rng,
        );
        let mut call = Call::new(&n.at_alice, &n.at_bob, AudioStreamConfig::new("x"));
        let digit = Digit::from_char('5').unwrap();
        assert_eq!(
            call.a.stream.send_dtmf(digit, Duration::from_millis(100)),
            Err(StreamError::NoTelephoneEvent)
        );
        assert_eq!(
            call.b.stream.send_dtmf(digit, Duration::from_millis(100)),
            Err(StreamError::NoTelephoneEvent)
        );
    }

    #[test]
    fn rfc3264_8_4_hold_stops_sending_and_resume_restarts_the_talk_spurt() {
        let (mut call, mut n) = start_call(Codec::Pcmu, Some(SrtpSuite::AesCm128HmacSha1_80));
        call.run(10, |_, _| 1);
        let rtp_sent = |side: &Side| {
            side.sent
                .iter()
                .filter(|t| t.kind == TransmitKind::Rtp)
                .count()
        };

        // Alice puts Bob on hold: re-offer sendonly, Bob answers recvonly.
        let reinvite = |n: &mut Negotiated, call: &mut Call, direction: Direction| {
            n.alice.set_direction(direction);
            let answer = n
                .bob
                .handle_offer(&n.alice.create_offer().unwrap())
                .unwrap();
            let at_alice = n.alice.handle_answer(&answer.description).unwrap();
            let at_bob = answer.audio.unwrap();
            call.a.stream.update(call.now, &at_alice).unwrap();
            call.b.stream.update(call.now, &at_bob).unwrap();
            (at_alice.direction, at_bob.direction)
        };
        assert_eq!(
            reinvite(&mut n, &mut call, Direction::SendOnly),
            (Direction::SendOnly, Direction::RecvOnly)
        );
        let (a_before, b_before) = (rtp_sent(&call.a), rtp_sent(&call.b));
        call.run(10, |_, _| 1);
        assert_eq!(rtp_sent(&call.b), b_before, "bob sent on hold");
        assert_eq!(rtp_sent(&call.a), a_before + 10, "music on hold flows");
        assert_eq!(
            call.b
                .stream
                .send_dtmf(Digit::from_char('1').unwrap(), Duration::from_millis(50)),
            Err(StreamError::NotSending {
                direction: Direction::RecvOnly
            })
        );
        let frame = call.b.next_frame();
        assert_eq!(
            call.b.stream.send_frame(call.now, &frame),
            Ok(SendOutcome::Nothing)
        );

        assert_eq!(
            reinvite(&mut n, &mut call, Direction::Inactive),
            (Direction::Inactive, Direction::Inactive)
        );
        let (a_before, b_before) = (rtp_sent(&call.a), rtp_sent(&call.b));
        call.run(10, |_, _| 1);
        assert_eq!((rtp_sent(&call.a), rtp_sent(&call.b)), (a_before, b_before));

        assert_eq!(
            reinvite(&mut n, &mut call, Direction::SendRecv),
            (Direction::SendRecv, Direction::SendRecv)
        );
        let b_before = rtp_sent(&call.b);
        call.run(30, |_, _| 1);
        let resumed: Vec<RtpPacket> = call.b.sent[..]
            .iter()
            .filter(|t| t.kind == TransmitKind::Rtp)
            .skip(b_before)
            .map(|t| RtpPacket::parse(&t.data).unwrap())
            .collect();
        assert_eq!(resumed.len(), 30);
        assert!(resumed[0].marker && !resumed[1].marker);
        // The timestamp kept pace with the 21 ticks on hold.
        let before_hold = RtpPacket::parse(
            &call
                .b
                .sent
                .iter()
                .filter(|t| t.kind == TransmitKind::Rtp)
                .nth(b_before - 1)
                .unwrap()
                .data,
        )
        .unwrap();
        assert_eq!(
            resumed[0].timestamp.wrapping_sub(before_hold.timestamp),
            22 * 160
        );
        assert_frequency(call.a.tail(10), 8000, 440.0);
        assert_frequency(call.b.tail(10), 8000, 1000.0);
    }

    #[test]
    fn lost_packets_are_concealed_and_counted() {
        let (mut clean, _) = start_call(Codec::Pcmu, None);
        clean.run(100, |_, _| 1);
        let (mut call, _) = start_call(Codec::Pcmu, None);
        let mut index = 0;
        let mut dropped = 0;
        call.run(100, |way, t| {
            if way == Way::BobToAlice || t.kind == TransmitKind::Rtcp {
                return 1;
            }
            index += 1;
            // Every tenth packet after the first few is lost.
            if index > 10 && index % 10 == 5 {
                dropped += 1;
                0
            } else {
                1
            }
        });
        assert_eq!(dropped, 9);
        let stats = call.b.stream.statistics();
        assert_eq!(stats.packets_lost, 9);
        assert!(
            (stats.loss_percent - 9.0).abs() < 0.5,
            "{}",
            stats.loss_percent
        );
        let concealed = call
            .b
            .outcomes
            .iter()
            .filter(|o| **o == PlayOutcome::Concealed)
            .count();
        // Each gap is concealed, unless the buffer was shrinking its delay
        // (from the initial 60 ms on this jitter-free link) and skipped it.
        assert!(concealed >= 7, "concealed {concealed}");
        assert!(
            concealed as u64 + stats.jitter_buffer.shrunk >= 9,
            "{:?}",
            stats.jitter_buffer
        );
        assert_eq!(stats.jitter_buffer.concealed, concealed as u64);
        let clean_mos = clean.b.stream.statistics().quality.mos;
        assert!(
            stats.quality.mos < clean_mos - 0.5,
            "{} vs {clean_mos}",
            stats.quality.mos
        );
        // The concealed signal keeps the tone.
        let n = 160;
        assert_frequency(&call.b.played[call.b.played.len() - 40 * n..], 8000, 1000.0);
    }

    /// Bob asked for 20 ms packets; Alice sends packets of each phase's
    /// length for that long (RFC 3264 §6.1 lets her), a new phase through
    /// an update of her stream. Bob plays 20 ms frames on his own tick;
    /// returns what he played and how.
    fn play_packet_lengths(
        codec: Codec,
        phases: &[(u32, u32)],
    ) -> (Vec<i16>, Vec<PlayOutcome>, AudioStream) {
        let (_, n) = start_call(codec, None);
        let mut at_alice = n.at_alice.clone();
        at_alice.ptime = phases[0].0;
        assert_eq!(n.at_bob.ptime, 20);
        let now = crate::test_support::epoch();
        let mut rng = StdRng::seed_from_u64(3);
        let mut alice = AudioStream::new(
            now,
            wall(),
            &at_alice,
            AudioStreamConfig::new("a"),
            &mut rng,
        )
        .unwrap();
        let mut bob = AudioStream::new(
            now,
            wall(),
            &n.at_bob,
            AudioStreamConfig::new("b"),
            &mut rng,
        )
        .unwrap();
        let rate = alice.sample_rate();
        let (mut phase, mut played, mut outcomes) = (0, Vec::new(), Vec::new());
        let mut ms = 0u32;
        let mut next_send = 0u32;
        for &(ptime, duration) in phases {
            if at_alice.ptime != ptime {
                at_alice.ptime = ptime;
                alice
                    .update(now + Duration::from_millis(u64::from(ms)), &at_alice)
                    .unwrap();
            }
            // On a 5 ms clock.
            let end = ms + duration;
            while ms < end {
                let at = now + Duration::from_millis(u64::from(ms));
                if ms >= next_send {
                    let frame = tone(1000.0, rate, phase, alice.frame_samples());
                    phase += frame.len();
                    alice.send_frame(at, &frame).unwrap();
                    while let Some(t) = alice.poll_transmit() {
                        bob.handle_datagram(at, &t.data);
                    }
                    next_send = ms + ptime;
                }
                if ms.is_multiple_of(20) {
                    let mut out = vec![0i16; bob.frame_samples()];
                    outcomes.push(bob.play_frame(at, &mut out).unwrap());
                    played.extend_from_slice(&out);
                }
                ms += 5;
            }
        }
        (played, outcomes, bob)
    }

    /// The last second of what Bob played is the tone throughout, and at
    /// most `concealed` frames were concealed over the call.
    fn assert_plays_whole(
        (played, outcomes, bob): &(Vec<i16>, Vec<PlayOutcome>, AudioStream),
        what: &str,
        concealed: u64,
    ) {
        let rate = bob.sample_rate();
        let last_second = &outcomes[outcomes.len() - 50..];
        assert!(
            last_second.iter().all(|o| *o == PlayOutcome::Played),
            "{what}: {last_second:?}"
        );
        let stats = bob.statistics().jitter_buffer;
        assert!(stats.concealed <= concealed, "{what}: {stats:?}");
        let tail = &played[played.len() - rate as usize..];
        assert_frequency(tail, rate, 1000.0);
        // No gaps: every 5 ms of the last second carries the tone.
        for (i, chunk) in tail.chunks(rate as usize / 200).enumerate() {
            assert!(rms(chunk) > 2000.0, "{what}: quiet at {} ms", i * 5);
        }
    }

    #[test]
    fn rfc3264_6_1_packets_longer_or_shorter_than_the_ptime_asked_for_play_whole() {
        for (codec, ptime) in [
            (Codec::Pcmu, 10),
            (Codec::Pcmu, 30),
            (Codec::Pcmu, 40),
            (Codec::Pcmu, 60),
            (Codec::Opus, 10),
            (Codec::Opus, 40),
            (Codec::Opus, 60),
        ] {
            let run = play_packet_lengths(codec, &[(ptime, 2000)]);
            let what = format!("{codec:?} at {ptime} ms");
            // Before the first packets settle in, a frame or two.
            assert_plays_whole(&run, &what, 3);
            assert!(run.2.statistics().jitter_buffer.late <= 1, "{what}");
        }
    }

    #[test]
    fn a_peer_that_changes_its_packet_length_mid_call_is_followed() {
        for (codec, to) in [(Codec::Pcmu, 30), (Codec::Pcmu, 10), (Codec::Opus, 40)] {
            let run = play_packet_lengths(codec, &[(20, 1000), (to, 2000)]);
            let what = format!("{codec:?} from 20 to {to} ms");
            // The switch costs a frame or two.
            assert_plays_whole(&run, &what, 4);
        }
    }

    #[test]
    fn one_odd_packet_neither_moves_the_frame_nor_puts_the_stream_off_its_grid() {
        for (codec, odd) in [(Codec::Pcmu, 10), (Codec::Pcmu, 30), (Codec::Opus, 10)] {
            let run = play_packet_lengths(codec, &[(20, 1000), (odd, odd), (20, 2000)]);
            let what = format!("{codec:?} with one {odd} ms packet");
            assert_plays_whole(&run, &what, 3);
            // Every packet played but one dropped to shrink the delay:
            // none left behind the buffer's grid.
            let stats = run.2.statistics().jitter_buffer;
            assert_eq!(
                stats.played + stats.dropped_for_shrink,
                stats.received,
                "{what}: {stats:?}"
            );
        }
    }

    #[test]
    fn unverified_packets_are_taken_only_when_genuine() {
        // Plain RTP: the remote SSRC is the only proof.
        let (mut call, _) = start_call(Codec::Pcmu, None);
        call.run(5, |_, _| 1);
        let b = &mut call.b.stream;
        let _ = events(b);
        let alice = call.a.stream.local_ssrc();
        let stray = RtpPacket::new(0, 77, 1234, Ssrc(alice.0 ^ 1), vec![0xFF; 160]);
        assert_eq!(
            b.handle_unverified_datagram(call.now, &stray.to_bytes().unwrap()),
            Received::Refused(RefuseReason::UnknownSource)
        );
        assert_eq!(b.remote_ssrc(), Some(alice));
        assert_eq!(events(b), []);
        let forged_bye = call.b.stream.statistics().unknown_source;
        assert_eq!(forged_bye, 1);
        let next = &call.a.sent[4];
        let mut moved = RtpPacket::parse(&next.data).unwrap();
        moved.sequence_number = moved.sequence_number.wrapping_add(1);
        moved.timestamp = moved.timestamp.wrapping_add(160);
        assert_eq!(
            call.b
                .stream
                .handle_unverified_datagram(call.now, &moved.to_bytes().unwrap()),
            Received::Rtp { ssrc: alice }
        );

        // SRTP: only what authenticates, once.
        let (mut call, _) = start_call(Codec::Pcmu, Some(SrtpSuite::AeadAes128Gcm));
        call.run(5, |_, _| 1);
        let b = &mut call.b.stream;
        let _ = events(b);
        let forged = RtpPacket::new(0, 77, 1234, call.a.stream.local_ssrc(), vec![0xFF; 176]);
        assert_eq!(
            b.handle_unverified_datagram(call.now, &forged.to_bytes().unwrap()),
            Received::Refused(RefuseReason::Authentication)
        );
        assert_eq!(
            b.handle_unverified_datagram(call.now, &call.a.sent[4].data),
            Received::Refused(RefuseReason::Replayed)
        );
        assert_eq!(
            b.handle_datagram(call.now, &[0x80, 0, 0]),
            Received::Refused(RefuseReason::Malformed)
        );
        assert_eq!(
            events(b),
            [
                AudioStreamEvent::DecryptFailed { total: 1 },
                AudioStreamEvent::DecryptFailed { total: 2 }
            ]
        );
        let stats = b.statistics();
        assert_eq!(
            (
                stats.decrypt_failures,
                stats.malformed,
                stats.packets_received
            ),
            (2, 1, 5)
        );
    }

    #[test]
    fn rfc3550_reports_measure_round_trip_and_close_sends_bye() {
        for mux in [true, false] {
            let mut rng = StdRng::seed_from_u64(1);
            let suite = Some(SrtpSuite::AesCm128HmacSha1_80);
            let n = negotiate(
                settings(4000, Codec::Pcmu, suite).with_rtcp_mux(mux),
                settings(5000, Codec::Pcmu, suite).with_rtcp_mux(mux),
                &mut rng,
            );
            assert_eq!(n.at_alice.rtcp_mux, mux);
            let config =
                AudioStreamConfig::new("x").with_report_interval(Duration::from_millis(500));
            let mut call = Call::new(&n.at_alice, &n.at_bob, config);
            call.run(150, |_, _| 1);
            let rtcp = call
                .a
                .sent
                .iter()
                .filter(|t| t.kind == TransmitKind::Rtcp)
                .count();
            assert!((3..=12).contains(&rtcp), "{rtcp} reports in 3 s");
            let stats = call.a.stream.statistics();
            // Delivery within the tick: the round trip is below a tick.
            assert!(
                stats.round_trip_time.unwrap() < Duration::from_millis(25),
                "mux {mux}"
            );
            assert_eq!(stats.remote_loss_percent, Some(0.0));
            assert_eq!(stats.malformed + stats.decrypt_failures, 0);

            let _ = events(&mut call.b.stream);
            call.a.stream.close(call.now);
            assert!(call.a.stream.is_closed());
            assert_eq!(call.a.stream.poll_timeout(), None);
            let bye = call.a.stream.poll_transmit().unwrap();
            assert_eq!(bye.kind, TransmitKind::Rtcp);
            let received = if mux {
                call.b.stream.handle_datagram(call.now, &bye.data)
            } else {
                call.b.stream.handle_rtcp(call.now, &bye.data)
            };
            assert_eq!(received, Received::Rtcp);
            assert_eq!(
                events(&mut call.b.stream),
                [AudioStreamEvent::RemoteBye { reason: None }]
            );
            let frame = call.a.next_frame();
            assert_eq!(
                call.a.stream.send_frame(call.now, &frame),
                Err(StreamError::Closed)
            );
        }
    }

    #[test]
    fn muted_stream_sends_silence() {
        let (mut call, _) = start_call(Codec::Opus, None);
        call.a.stream.set_muted(true);
        call.run(30, |_, _| 1);
        let stats = call.a.stream.statistics();
        assert!(stats.muted);
        assert_eq!(stats.packets_sent, 30);
        assert!(rms(call.b.tail(10)) < 50.0, "rms {}", rms(call.b.tail(10)));
        call.a.stream.set_muted(false);
        call.run(30, |_, _| 1);
        assert_frequency(call.b.tail(10), 48_000, 1000.0);
    }

    #[test]
    fn update_to_another_codec_rebuilds_the_stream() {
        let (mut call, n) = start_call(Codec::Pcmu, Some(SrtpSuite::AeadAes128Gcm));
        call.run(10, |_, _| 1);
        let old_ssrc = call.a.stream.local_ssrc();
        let to_opus = |audio: &NegotiatedAudio| {
            let mut audio = audio.clone();
            audio.codec = Codec::Opus;
            audio.send_payload_type = 111;
            audio.receive_payload_type = 111;
            audio
        };
        call.a
            .stream
            .update(call.now, &to_opus(&n.at_alice))
            .unwrap();
        call.b.stream.update(call.now, &to_opus(&n.at_bob)).unwrap();
        assert_eq!(
            (call.a.stream.sample_rate(), call.a.stream.frame_samples()),
            (48_000, 960)
        );
        // The new clock rate comes with a new source, on both sides.
        assert_ne!(call.a.stream.local_ssrc(), old_ssrc);
        assert_eq!(call.b.stream.remote_ssrc(), None);
        let _ = events(&mut call.b.stream);
        call.a.played.clear();
        call.a.outcomes.clear();
        call.b.played.clear();
        call.b.outcomes.clear();
        call.run(40, |_, _| 1);
        assert_eq!(
            events(&mut call.b.stream).first(),
            Some(&AudioStreamEvent::RemoteSourceStarted {
                ssrc: call.a.stream.local_ssrc()
            })
        );
        assert_frequency(call.b.tail(20), 48_000, 1000.0);
        assert_frequency(call.a.tail(20), 48_000, 440.0);

        // A codec that cannot be built leaves the stream as it was.
        let mut bad = to_opus(&n.at_alice);
        bad.ptime = 30;
        assert!(matches!(
            call.a.stream.update(call.now, &bad),
            Err(StreamError::Codec(CodecError::UnsupportedPtime {
                ptime: 30
            }))
        ));
        assert_eq!(call.a.stream.ptime(), 20);
    }

    #[test]
    fn rfc3550_8_a_new_remote_source_is_reported_and_played() {
        let (mut call, n) = start_call(Codec::Pcmu, Some(SrtpSuite::AesCm128HmacSha1_80));
        call.run(20, |_, _| 1);
        let old = call.a.stream.local_ssrc();
        let _ = events(&mut call.b.stream);
        // The peer restarts its stream (a new SSRC, same keys), as after a
        // transfer on a media server.
        let mut rng = StdRng::seed_from_u64(77);
        let restarted = AudioStream::new(
            call.now,
            wall(),
            &n.at_alice,
            AudioStreamConfig::new("a2"),
            &mut rng,
        )
        .unwrap();
        let new = restarted.local_ssrc();
        assert_ne!(new, old);
        call.a.stream = restarted;
        call.run(30, |_, _| 1);
        assert_eq!(
            events(&mut call.b.stream).first(),
            Some(&AudioStreamEvent::RemoteSsrcChanged { old, new })
        );
        assert_eq!(call.b.stream.remote_ssrc(), Some(new));
        assert_frequency(call.b.tail(10), 8000, 1000.0);
    }

    #[test]
    fn frames_of_the_wrong_size_are_refused() {
        let (mut call, _) = start_call(Codec::Pcmu, None);
        let now = call.now;
        assert_eq!(
            call.a.stream.send_frame(now, &[0; 159]),
            Err(StreamError::FrameSize {
                expected: 160,
                actual: 159
            })
        );
        assert_eq!(
            call.a.stream.play_frame(now, &mut [0; 960]),
            Err(StreamError::FrameSize {
                expected: 160,
                actual: 960
            })
        );
    }
}
