//! # media-engine
//!
//! The pure media core of the softphone: SDP offer/answer (RFC 8866,
//! RFC 3264), RTP and RTCP (RFC 3550/3551) with receiver statistics and a
//! call-quality estimate, SRTP with SDES keys (RFC 3711, RFC 4568), G.711
//! and Opus behind one codec interface, resampling, an adaptive jitter
//! buffer, and DTMF as RFC 4733 telephone-events. It opens no socket,
//! spawns no task and reads no clock: every input that depends on time
//! takes `now` as an argument, so tests drive it on a virtual clock,
//! exactly and fast.
//!
//! ## What is here
//!
//! | module | job |
//! |---|---|
//! | [`rtp`] | [`RtpPacket`](rtp::RtpPacket) parse/write (CSRC, header extension, padding), RTP/RTCP demultiplexing, sequence and timestamp unwrapping |
//! | [`rtcp`] | compound RTCP: SR, RR, SDES (CNAME), BYE, unknown types kept verbatim; round-trip time from LSR/DLSR |
//! | [`stats`] | per-source receiver statistics (RFC 3550 A.1 probation, A.3 loss, A.8 jitter) and report blocks |
//! | [`session`] | [`RtpSession`](session::RtpSession): SSRC and sequence numbering from a seeded RNG, remote SSRC change and collision detection, RTCP report scheduling, BYE |
//! | [`quality`] | simplified ITU-T G.107 E-model: R-factor and MOS from delay, loss and codec |
//! | [`g711`] | mu-law and A-law, bit-exact with G.711, and [`Concealer`](g711::Concealer) for lost frames |
//! | [`jitter`] | [`JitterBuffer`](jitter::JitterBuffer): adaptive playout delay, reordering, duplicates, loss, DTX, drift, statistics |
//! | [`dtmf`] | RFC 4733 telephone-event payloads, a key-press encoder and a de-duplicating decoder |
//! | [`trace`] | network traces (CSV), a deterministic generator of network conditions, and a replay that scores the jitter buffer |
//! | [`sdp`] | [`SessionDescription`](sdp::SessionDescription) parse/write: origin, connection (IPv4/IPv6), timing, media sections, `rtpmap`, `fmtp`, `ptime`, direction, `rtcp-mux`, `rtcp`, `crypto`; unknown attributes kept |
//! | [`negotiation`] | [`MediaNegotiation`](negotiation::MediaNegotiation): RFC 3264 offer/answer for audio, codec and payload-type choice, hold, RTCP multiplexing, SRTP policy and crypto suite choice, re-offers |
//! | [`srtp`] | [`SrtpContext`](srtp::SrtpContext) over webrtc-srtp: AES_CM_128_HMAC_SHA1_80/_32 and AEAD_AES_128_GCM, keys from the OS CSPRNG, replay protection, SRTCP |
//! | [`codec`] | [`AudioEncoder`](codec::AudioEncoder)/[`AudioDecoder`](codec::AudioDecoder) with concealment and FEC recovery; G.711 implementations |
//! | [`opus`] | Opus at 48 kHz mono through libopus: bitrate, complexity, in-band FEC, DTX, PLC |
//! | [`resample`] | [`Resampler`](resample::Resampler): fixed-size frames between device and codec rates (rubato) |
//! | [`stream`] | [`AudioStream`](stream::AudioStream): one negotiated audio stream put together (RTP session, SRTP, codec, jitter buffer, DTMF), ticked once per packet time; statistics with a MOS estimate |
//!
//! Sockets live in `media-tokio`, audio devices in `media-audio`.
//!
//! ## Dependencies worth knowing
//!
//! SRTP is webrtc-srtp's; that crate depends on tokio for parts this crate
//! does not use, so tokio appears in the dependency tree although nothing
//! here runs on it. Opus links the system libopus through `audiopus`
//! (`pkg-config` and `libopus-dev` on Debian).
//!
//! ## The receive loop
//!
//! A driver feeds packets and time in and takes frames out; this loop runs
//! as written (the "network" is a vector, the "clock" an `Instant` moved by
//! hand):
//!
//! ```
//! use std::time::{Duration, Instant};
//! use media_engine::g711::{self, Concealer};
//! use media_engine::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout};
//! use media_engine::rtp::{RtpPacket, Ssrc};
//!
//! // What arrives: 50 PCMU packets, every 20 ms, packet 7 lost.
//! let datagrams: Vec<Vec<u8>> = (0..50u16)
//!     .filter(|&i| i != 7)
//!     .map(|i| RtpPacket::new(0, i, u32::from(i) * 160, Ssrc(9), vec![0xFF; 160]).to_bytes().unwrap())
//!     .collect();
//!
//! let mut jitter = JitterBuffer::new(JitterConfig::default()).unwrap();
//! let mut plc = Concealer::new();
//! let start = Instant::now();
//! let mut pcm = [0i16; 160];
//! let (mut played, mut concealed) = (0, 0);
//! for tick in 0..53u64 {
//!     let now = start + Duration::from_millis(20 * tick);
//!     // Network side: parse and buffer what arrived by now.
//!     for bytes in datagrams.iter().filter(|d| u64::from(u16::from_be_bytes([d[2], d[3]])) == tick) {
//!         let Ok(rtp) = RtpPacket::parse(bytes) else { continue };
//!         let packet = JitterPacket::new(rtp.ssrc, rtp.sequence_number, rtp.timestamp, rtp.marker, rtp.payload);
//!         jitter.push(now, packet);
//!     }
//!     // Audio side: one frame per 20 ms tick.
//!     match jitter.pop(now) {
//!         Playout::Frame(frame) => {
//!             g711::decode_ulaw(&frame.payload, &mut pcm);
//!             plc.good_frame(&mut pcm);
//!             played += 1;
//!         }
//!         Playout::Conceal => {
//!             plc.conceal(&mut pcm);
//!             concealed += 1;
//!         }
//!         Playout::Silence => pcm.fill(0),
//!     }
//! }
//! assert_eq!((played, concealed), (49, 1));
//! assert_eq!(jitter.statistics().concealed, 1);
//! ```
//!
//! ## Time model
//!
//! Time is a [`std::time::Instant`] passed in by the caller; durations are
//! measured between the instants given. State machines with timers
//! ([`session::RtpSession`]) follow the workspace's shape:
//! `handle_*(now, ..)` feeds input, `poll_transmit`, `poll_event` and
//! `poll_timeout` are drained after every input, and `handle_timeout(now)`
//! is idempotent. Wall-clock time, needed only for RTCP's NTP timestamps,
//! is read once by the driver and handed to the session when it starts.
//! Identifiers (SSRC, initial sequence number, report jitter) come from an
//! injected, seedable RNG.
//!
//! ## Bad input
//!
//! Every parser takes untrusted bytes and returns a typed error, never
//! panics (property tests feed them random bytes). Buffers are bounded:
//! the jitter buffer holds at most [`jitter::JitterConfig::capacity`]
//! packets and a bounded window of measurements.
//!
//! ## Tools
//!
//! - `cargo run -p media-engine --example jitter-sim -- --trace FILE.csv
//!   [--buffer adaptive|fixed:MS] --json` replays a trace and prints the
//!   playout delay and loss figures (see [`trace`]); `--sweep 1-19`
//!   does so for every scenario of generated seeds 1 to 19 and lists the
//!   traces that miss the goal.
//! - `cargo run -p media-engine --example jitter-trace-gen -- --out DIR`
//!   regenerates the traces committed under `tests/data/traces`.
//!
//! ## Feature flags
//!
//! None.

pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod negotiation;
pub mod opus;
pub mod quality;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod session;
pub mod srtp;
pub mod stats;
pub mod stream;
pub mod timescale;
pub mod trace;

#[cfg(test)]
mod test_support {
    use std::time::Instant;

    /// The one real instant a test starts from; everything after it is
    /// advanced by hand.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn epoch() -> Instant {
        Instant::now()
    }
}
