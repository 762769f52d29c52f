//! # media-tokio
//!
//! The network side of a call's audio, on tokio: RTP and RTCP sockets
//! from a port range, symmetric RTP with remote-address latching that a
//! stray packet cannot hijack, and [`AudioChannel`], the task that ticks a
//! [`media_engine::stream::AudioStream`] once per packet time between the
//! sockets and the audio device's rings.
//!
//! It is **not** the media engine: packets, SRTP, codecs, the jitter
//! buffer, DTMF and statistics are `media-engine`'s, and this crate only
//! moves bytes, samples and time. It does not open audio devices either:
//! `media-audio` (or a test) owns the other ends of the rings in
//! [`AudioPort`].
//!
//! ## A call's audio
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use media_engine::dtmf::Digit;
//! use media_engine::negotiation::{MediaNegotiation, MediaSettings};
//! use media_engine::rtcp::NtpTimestamp;
//! use media_engine::stream::{AudioStream, AudioStreamConfig, AudioStreamEvent};
//! use media_tokio::{AudioChannel, AudioPort, ChannelConfig, MediaSockets, PortRange};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
//! let range = PortRange::new(30000, 39999)?;
//! // 1. Sockets first: their port goes into the SDP.
//! let alice_sockets = MediaSockets::bind(ip, range, true).await?;
//! let bob_sockets = MediaSockets::bind(ip, range, true).await?;
//! // 2. Offer/answer (SRTP by default).
//! let mut rng = rand::rng();
//! let mut alice = MediaNegotiation::new(MediaSettings::new(ip, alice_sockets.rtp_addr().port()), &mut rng);
//! let mut bob = MediaNegotiation::new(MediaSettings::new(ip, bob_sockets.rtp_addr().port()), &mut rng);
//! let answer = bob.handle_offer(&alice.create_offer()?)?;
//! let at_alice = alice.handle_answer(&answer.description)?;
//! let at_bob = answer.audio.ok_or("refused")?;
//! // 3. One stream and one channel per side; the rings' far ends belong
//! //    to the audio device (here: nobody, so silence is sent).
//! let now = tokio::time::Instant::now().into_std();
//! let wall = NtpTimestamp::from_unix(SystemTime::now().duration_since(UNIX_EPOCH)?);
//! let mut channel = |audio, sockets, cname: &str| -> Result<_, Box<dyn std::error::Error>> {
//!     let stream = AudioStream::new(now, wall, audio, AudioStreamConfig::new(cname), &mut rng)?;
//!     let (_mic, capture) = rtrb::RingBuffer::new(4800);
//!     let (playback, _speaker) = rtrb::RingBuffer::new(4800);
//!     let port = AudioPort::new(capture, playback, 48_000);
//!     Ok((AudioChannel::spawn(stream, sockets, port, ChannelConfig::default())?, _mic, _speaker))
//! };
//! let (alice_call, _a_mic, _a_speaker) = channel(&at_alice, alice_sockets, "alice@example.org")?;
//! let (bob_call, _b_mic, _b_speaker) = channel(&at_bob, bob_sockets, "bob@example.org")?;
//! let mut bob_events = bob_call.events();
//!
//! alice_call.send_dtmf(Digit::from_char('7').ok_or("digit")?, Duration::from_millis(60)).await?;
//! let digit = tokio::time::timeout(Duration::from_secs(2), async {
//!     loop {
//!         if let AudioStreamEvent::DtmfReceived(d) = bob_events.recv().await? {
//!             return Ok::<_, tokio::sync::broadcast::error::RecvError>(d);
//!         }
//!     }
//! })
//! .await??;
//! assert_eq!(digit.to_char(), '7');
//! let last = alice_call.stop().await;
//! assert!(!last.running && last.stream.packets_sent > 0);
//! bob_call.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Sockets
//!
//! [`MediaSockets::bind`] takes an even port of a [`PortRange`] for RTP
//! and the next one for RTCP unless RTCP is multiplexed (RFC 3550 §11,
//! RFC 5761), on IPv4 or IPv6, trying the range's ports from a random
//! start and skipping taken ones; an exhausted range is
//! [`BindError::RangeExhausted`].
//!
//! ## Through a relay
//!
//! [`MediaSockets::relayed`] wraps a [`RelaySocket`] (a TURN allocation,
//! implemented outside this crate): RTP and RTCP then leave from and
//! arrive at its one relayed address, which goes in the SDP. The task
//! asks the relay to permit the peer's RTP and RTCP addresses when it
//! starts and whenever an update changes them, without blocking on the
//! answer. Datagrams from the peer's RTCP address (when RTCP is not
//! multiplexed) are RTCP; all others are RTP, demultiplexed as usual.
//!
//! ## Symmetric RTP and latching
//!
//! Media is sent from the port it is received on (RFC 4961), to the
//! address the peer's SDP names, until the peer proves to be elsewhere:
//! [`latch::RemoteLatch`] switches to a new source address after three
//! (configurable) consecutive genuine datagrams from it, with no genuine
//! datagram from the current address in between. Genuine means SRTP that
//! authenticates, or plain RTP with the peer's SSRC; a single stray packet,
//! a forged one, or a flood of them never moves the flow once the peer
//! has been heard. In the clear, strays that arrive before the peer's
//! first packet can take the flow (nothing tells them apart yet), but the
//! address the SDP names is trusted: one genuine datagram from it brings
//! the flow back at once. RTP and RTCP (when not multiplexed) latch
//! separately. A new SDP address from a re-INVITE restarts latching there
//! and forgets the old peer's SSRC, so a new endpoint behind NAT is
//! followed.
//!
//! ## The channel task
//!
//! [`AudioChannel::spawn`] starts one task per call. Every packet time
//! (a tokio interval; missed ticks are skipped, see below) it:
//!
//! 1. takes one frame of captured samples from [`AudioPort::capture`] at
//!    the device's rate (silence and a counted underrun if too few have
//!    arrived; a backlog beyond
//!    [`ChannelConfig::max_capture_backlog`] is dropped and counted),
//! 2. resamples it to the codec's rate when they differ and hands it to
//!    `send_frame`,
//! 3. runs the stream's timers (RTCP reports),
//! 4. takes the frame to play from `play_frame`, resamples it to the
//!    device's rate and pushes it into [`AudioPort::playback`] (dropped
//!    and counted when the ring is full).
//!
//! Between ticks it receives from its sockets and serves the
//! [`AudioChannelHandle`]'s commands. Missed ticks are skipped rather than
//! burst or delayed: after a stall the task stays on the original grid and
//! sends no burst of packets, which the peer's jitter buffer would take
//! for a delay spike.
//!
//! The task ends when [`AudioChannelHandle::stop`] is called or the last
//! handle is dropped; either way it sends an RTCP BYE first. Every loop is
//! bounded: the select loop blocks on the tick, the sockets and the
//! commands, and each turn drains queues that the turn itself filled.
//!
//! ## Time model
//!
//! The task reads tokio's clock (`tokio::time::Instant::now()`), so paused
//! time in tests controls the ticks; the stream underneath is given that
//! time and reads no clock itself.
//!
//! ## Feature flags
//!
//! None.

mod channel;
pub mod latch;
pub mod relay;
mod socket;

pub use channel::{
    AudioChannel, AudioChannelHandle, AudioPort, ChannelConfig, ChannelError, ChannelStatistics,
};
pub use relay::{RelayFuture, RelaySocket};
pub use socket::{BindError, MediaSockets, PortRange};
