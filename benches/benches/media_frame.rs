//! `media_frame`: one 20 ms frame through the whole media path of a call,
//! against the codec alone, for G.711 (PCMU) and Opus.
//!
//! - `codec_only`: encode one frame, decode the payload.
//! - `pipeline`: take a captured frame, `AudioStream::send_frame` (encode,
//!   RTP, SRTP protect with AES_CM_128_HMAC_SHA1_80), hand the datagram to
//!   the other side's `AudioStream::handle_datagram` (SRTP unprotect, RTP
//!   parse, statistics, jitter buffer push), then `play_frame` (jitter
//!   buffer pop, decode), with the RTCP timer run once per frame.
//!
//! - `transport_only`: the pipeline's steps without the codec, built from
//!   media-engine's parts with a payload the codec really produced: RTP
//!   packet from the session, SRTP protect, unprotect, parse, receiver
//!   statistics, jitter buffer push and pop. Opus costs hundreds of
//!   microseconds and varies by more than the overhead, so this is the
//!   direct measure of what the stream adds.
//!
//! `pipeline` minus `codec_only` is what the stream adds around the codec.
//! The streams and the clock live across iterations, as in a call; the
//! clock moves 20 ms per iteration.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use media_engine::codec;
use media_engine::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout};
use media_engine::negotiation::{Codec, MediaNegotiation, MediaSettings, NegotiatedAudio};
use media_engine::rtcp::NtpTimestamp;
use media_engine::rtp::RtpPacket;
use media_engine::session::{RtpSession, RtpSessionConfig};
use media_engine::srtp::SrtpSuite;
use media_engine::srtp::{SrtpConfig, SrtpContext, SrtpKeyMaterial};
use media_engine::stream::{AudioStream, AudioStreamConfig, PlayOutcome};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A second of a 440 Hz tone at `rate`, the "microphone".
fn tone(rate: u32) -> Vec<i16> {
    (0..rate)
        .map(|i| {
            let t = f64::from(i) / f64::from(rate);
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
        })
        .collect()
}

fn negotiate(codec: Codec) -> (NegotiatedAudio, NegotiatedAudio) {
    let mut rng = StdRng::seed_from_u64(5);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let settings = |port| {
        MediaSettings::new(ip, port)
            .with_codecs([codec])
            .with_crypto_suites([SrtpSuite::AesCm128HmacSha1_80])
    };
    let mut alice = MediaNegotiation::new(settings(4000), &mut rng);
    let mut bob = MediaNegotiation::new(settings(5000), &mut rng);
    let offer = alice.create_offer().expect("offer");
    let answer = bob.handle_offer(&offer).expect("answer");
    let at_alice = alice
        .handle_answer(&answer.description)
        .expect("answer taken");
    (at_alice, answer.audio.expect("audio accepted"))
}

/// Two streams wired back to back and the state of the call between them.
struct Call {
    sender: AudioStream,
    receiver: AudioStream,
    now: Instant,
    microphone: Vec<i16>,
    position: usize,
    captured: Vec<i16>,
    played: Vec<i16>,
}

impl Call {
    fn new(codec: Codec) -> Self {
        let (at_alice, at_bob) = negotiate(codec);
        let now = Instant::now();
        let wall = NtpTimestamp::from_unix(Duration::from_secs(1_800_000_000));
        let mut rng = StdRng::seed_from_u64(6);
        let config = AudioStreamConfig::new("bench@example.org");
        let sender = AudioStream::new(now, wall, &at_alice, config.clone(), &mut rng)
            .expect("stream starts");
        let receiver =
            AudioStream::new(now, wall, &at_bob, config, &mut rng).expect("stream starts");
        let frame = sender.frame_samples();
        Call {
            microphone: tone(sender.sample_rate()),
            sender,
            receiver,
            now,
            position: 0,
            captured: vec![0; frame],
            played: vec![0; frame],
        }
    }

    /// One frame: capture, send, deliver, play.
    fn frame(&mut self) -> PlayOutcome {
        let n = self.captured.len();
        if self.position + n > self.microphone.len() {
            self.position = 0;
        }
        self.captured
            .copy_from_slice(&self.microphone[self.position..self.position + n]);
        self.position += n;
        self.sender
            .send_frame(self.now, black_box(&self.captured))
            .expect("frame sent");
        self.sender.handle_timeout(self.now);
        while let Some(datagram) = self.sender.poll_transmit() {
            black_box(
                self.receiver
                    .handle_datagram(self.now, black_box(&datagram.data)),
            );
        }
        self.receiver.handle_timeout(self.now);
        while let Some(report) = self.receiver.poll_transmit() {
            self.sender.handle_datagram(self.now, &report.data);
        }
        let outcome = self
            .receiver
            .play_frame(self.now, &mut self.played)
            .expect("frame played");
        self.now += Duration::from_millis(20);
        outcome
    }
}

fn bench(c: &mut Criterion) {
    for (codec, name) in [(Codec::Pcmu, "pcmu"), (Codec::Opus, "opus")] {
        let mut group = c.benchmark_group(format!("media_frame/{name}"));
        group.throughput(Throughput::Elements(1));

        group.bench_function("codec_only", |b| {
            let mut encoder = codec::encoder(codec, 20).expect("encoder");
            let mut decoder = codec::decoder(codec, 20).expect("decoder");
            let microphone = tone(encoder.sample_rate());
            let frame = encoder.frame_samples();
            let mut payload = vec![0u8; 1500];
            let mut played = vec![0i16; frame];
            let mut position = 0;
            b.iter(|| {
                if position + frame > microphone.len() {
                    position = 0;
                }
                let pcm = &microphone[position..position + frame];
                position += frame;
                let len = encoder
                    .encode(black_box(pcm), &mut payload)
                    .expect("encodes");
                decoder
                    .decode(black_box(&payload[..len]), &mut played)
                    .expect("decodes")
            });
        });

        group.bench_function("transport_only", |b| {
            let mut encoder = codec::encoder(codec, 20).expect("encoder");
            let microphone = tone(encoder.sample_rate());
            let mut encoded = vec![0u8; 1500];
            let len = encoder
                .encode(&microphone[..encoder.frame_samples()], &mut encoded)
                .expect("encodes");
            encoded.truncate(len);
            let frame = u32::try_from(encoder.frame_samples()).expect("small frame");
            let suite = SrtpSuite::AesCm128HmacSha1_80;
            let (a_key, b_key) = (
                SrtpKeyMaterial::generate(suite).expect("key"),
                SrtpKeyMaterial::generate(suite).expect("key"),
            );
            let mut a_srtp = SrtpContext::new(&a_key, &b_key, SrtpConfig::default()).expect("srtp");
            let mut b_srtp = SrtpContext::new(&b_key, &a_key, SrtpConfig::default()).expect("srtp");
            let mut now = Instant::now();
            let wall = NtpTimestamp::from_unix(Duration::from_secs(1_800_000_000));
            let mut rng = StdRng::seed_from_u64(7);
            let session_config =
                || RtpSessionConfig::new("bench@example.org").with_clock_rate(codec.clock_rate());
            let mut a_session = RtpSession::new(now, wall, session_config(), &mut rng);
            let mut b_session = RtpSession::new(now, wall, session_config(), &mut rng);
            let mut jitter = JitterBuffer::new(
                JitterConfig::default().with_clock(codec.clock_rate(), Duration::from_millis(20)),
            )
            .expect("jitter buffer");
            let mut timestamp = 0u32;
            b.iter(|| {
                let packet =
                    a_session.build_packet(now, 0, timestamp, false, black_box(encoded.clone()));
                timestamp = timestamp.wrapping_add(frame);
                let wire = a_srtp
                    .protect_rtp(&packet.to_bytes().expect("writes"))
                    .expect("protects");
                let plain = b_srtp.unprotect_rtp(black_box(&wire)).expect("unprotects");
                let received = RtpPacket::parse(&plain).expect("parses");
                b_session.handle_rtp(now, &received);
                jitter.push(
                    now,
                    JitterPacket::new(
                        received.ssrc,
                        received.sequence_number,
                        received.timestamp,
                        received.marker,
                        received.payload,
                    ),
                );
                let played = match jitter.pop(now) {
                    Playout::Frame(frame) => frame.payload.len(),
                    Playout::Conceal | Playout::Silence => 0,
                };
                now += Duration::from_millis(20);
                played
            });
        });

        group.bench_function("pipeline", |b| {
            let mut call = Call::new(codec);
            // Past the jitter buffer's start-up, every frame is decoded.
            for _ in 0..50 {
                call.frame();
            }
            let played = (0..200)
                .filter(|_| call.frame() == PlayOutcome::Played)
                .count();
            assert_eq!(played, 200, "the pipeline must decode every frame");
            b.iter(|| call.frame());
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
