//! Opus (RFC 6716, RTP payload RFC 7587) through libopus: 48 kHz mono.
//!
//! [`OpusEncoder`] is set up for voice over IP: in-band forward error
//! correction, discontinuous transmission (DTX), bitrate and complexity
//! from [`OpusConfig`]. [`OpusDecoder`] decodes, conceals a lost packet
//! (libopus PLC), and recovers a lost packet from the FEC data in the
//! packet after it.
//!
//! With DTX on, the encoder turns silence into packets of at most
//! [`DTX_MAX_PACKET_LEN`] bytes; a sender may skip them and send one now
//! and then, and the receiver's jitter buffer sees the gap as a pause.
//!
//! ```
//! use media_engine::codec::{AudioDecoder, AudioEncoder};
//! use media_engine::opus::{OpusConfig, OpusDecoder, OpusEncoder};
//!
//! let mut encoder = OpusEncoder::new(OpusConfig::default().with_bitrate(24_000)).unwrap();
//! let mut decoder = OpusDecoder::new(20).unwrap();
//! let pcm = vec![0i16; 960];
//! let mut packet = [0u8; 1500];
//! let len = encoder.encode(&pcm, &mut packet).unwrap();
//! let mut out = [0i16; 960];
//! assert_eq!(decoder.decode(&packet[..len], &mut out).unwrap(), 960);
//! // Packet lost: conceal it.
//! assert_eq!(decoder.conceal(&mut out).unwrap(), 960);
//! ```

use std::fmt;

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Bitrate, Channels, SampleRate, Signal};

use crate::codec::{AudioDecoder, AudioEncoder, CodecError, check_frame};
use crate::negotiation::Codec;

/// Sample rate of the PCM the Opus wrappers take and give.
pub const OPUS_SAMPLE_RATE: u32 = 48_000;

/// Packets this short, from an encoder with DTX on, carry no audio.
pub const DTX_MAX_PACKET_LEN: usize = 2;

/// Largest Opus packet (RFC 6716 §3.2.1: 1275 bytes per frame).
pub const MAX_PACKET_LEN: usize = 1275;

/// Encoder settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpusConfig {
    /// Milliseconds per packet: 10, 20, 40 or 60.
    pub ptime: u32,
    /// Target bitrate in bits per second (6000 to 510000).
    pub bitrate: i32,
    /// Encoder complexity, 0 (fastest) to 10 (best).
    pub complexity: u8,
    /// In-band forward error correction.
    pub fec: bool,
    /// Expected packet loss in percent; FEC spends bits in proportion.
    pub expected_loss_percent: u8,
    /// Discontinuous transmission in silence.
    pub dtx: bool,
}

impl Default for OpusConfig {
    /// 20 ms, 32 kbit/s, complexity 9, FEC for 10 % loss, DTX off.
    fn default() -> Self {
        OpusConfig {
            ptime: 20,
            bitrate: 32_000,
            complexity: 9,
            fec: true,
            expected_loss_percent: 10,
            dtx: false,
        }
    }
}

impl OpusConfig {
    /// With this packet time in milliseconds.
    pub fn with_ptime(mut self, ptime: u32) -> Self {
        self.ptime = ptime;
        self
    }

    /// With this bitrate in bits per second.
    pub fn with_bitrate(mut self, bitrate: i32) -> Self {
        self.bitrate = bitrate;
        self
    }

    /// With this complexity (0 to 10).
    pub fn with_complexity(mut self, complexity: u8) -> Self {
        self.complexity = complexity;
        self
    }

    /// With FEC on or off, sized for `expected_loss_percent`.
    pub fn with_fec(mut self, fec: bool, expected_loss_percent: u8) -> Self {
        self.fec = fec;
        self.expected_loss_percent = expected_loss_percent;
        self
    }

    /// With DTX on or off.
    pub fn with_dtx(mut self, dtx: bool) -> Self {
        self.dtx = dtx;
        self
    }
}

/// Opus encoder, 48 kHz mono, VoIP application.
pub struct OpusEncoder {
    inner: Encoder,
    config: OpusConfig,
    frame: usize,
}

impl fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// An encoder with these settings.
    pub fn new(config: OpusConfig) -> Result<Self, CodecError> {
        let frame = opus_frame(config.ptime)?;
        let mut inner = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)
            .map_err(opus_error)?;
        inner.set_signal(Signal::Voice).map_err(opus_error)?;
        let mut encoder = OpusEncoder {
            inner,
            config: config.clone(),
            frame,
        };
        encoder.set_bitrate(config.bitrate)?;
        encoder.set_complexity(config.complexity)?;
        encoder.set_fec(config.fec, config.expected_loss_percent)?;
        encoder.set_dtx(config.dtx)?;
        Ok(encoder)
    }

    /// The settings in force.
    pub fn config(&self) -> &OpusConfig {
        &self.config
    }

    /// Changes the target bitrate (bits per second, 6000 to 510000).
    pub fn set_bitrate(&mut self, bitrate: i32) -> Result<(), CodecError> {
        if !(6_000..=510_000).contains(&bitrate) {
            return Err(CodecError::Opus {
                message: format!("bitrate {bitrate} out of range"),
            });
        }
        self.inner
            .set_bitrate(Bitrate::BitsPerSecond(bitrate))
            .map_err(opus_error)?;
        self.config.bitrate = bitrate;
        Ok(())
    }

    /// Changes the complexity (0 to 10).
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), CodecError> {
        if complexity > 10 {
            return Err(CodecError::Opus {
                message: format!("complexity {complexity} out of range"),
            });
        }
        self.inner.set_complexity(complexity).map_err(opus_error)?;
        self.config.complexity = complexity;
        Ok(())
    }

    /// Turns in-band FEC on or off and sets the loss it plans for (the
    /// peer's reported loss is a good value).
    pub fn set_fec(&mut self, fec: bool, expected_loss_percent: u8) -> Result<(), CodecError> {
        self.inner.set_inband_fec(fec).map_err(opus_error)?;
        self.inner
            .set_packet_loss_perc(expected_loss_percent.min(100))
            .map_err(opus_error)?;
        self.config.fec = fec;
        self.config.expected_loss_percent = expected_loss_percent.min(100);
        Ok(())
    }

    /// Turns DTX on or off.
    pub fn set_dtx(&mut self, dtx: bool) -> Result<(), CodecError> {
        self.inner
            .set_encoder_ctl_request(audiopus::ffi::OPUS_SET_DTX_REQUEST, i32::from(dtx))
            .map_err(opus_error)?;
        self.config.dtx = dtx;
        Ok(())
    }

    /// The bitrate libopus reports, in bits per second.
    pub fn bitrate(&self) -> Result<i32, CodecError> {
        match self.inner.bitrate().map_err(opus_error)? {
            Bitrate::BitsPerSecond(b) => Ok(b),
            Bitrate::Max | Bitrate::Auto => Err(CodecError::Opus {
                message: "bitrate not explicit".to_owned(),
            }),
        }
    }

    /// The complexity libopus reports.
    pub fn complexity(&self) -> Result<u8, CodecError> {
        self.inner.complexity().map_err(opus_error)
    }

    /// Whether libopus reports in-band FEC on.
    pub fn is_fec_enabled(&self) -> Result<bool, CodecError> {
        self.inner.inband_fec().map_err(opus_error)
    }

    /// Whether libopus reports DTX on.
    pub fn is_dtx_enabled(&self) -> Result<bool, CodecError> {
        self.inner
            .encoder_ctl_request(audiopus::ffi::OPUS_GET_DTX_REQUEST)
            .map(|v| v != 0)
            .map_err(opus_error)
    }
}

impl AudioEncoder for OpusEncoder {
    fn codec(&self) -> Codec {
        Codec::Opus
    }

    fn sample_rate(&self) -> u32 {
        OPUS_SAMPLE_RATE
    }

    fn frame_samples(&self) -> usize {
        self.frame
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame(self.frame, pcm.len())?;
        if out.is_empty() {
            return Err(CodecError::OutputTooSmall {
                needed: MAX_PACKET_LEN,
                actual: 0,
            });
        }
        self.inner.encode(pcm, out).map_err(opus_error)
    }
}

/// Opus decoder, 48 kHz mono, with PLC and FEC recovery.
pub struct OpusDecoder {
    inner: Decoder,
    frame: usize,
}

impl fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("frame", &self.frame)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// A decoder for packets of `ptime` milliseconds (10, 20, 40 or 60):
    /// the length it conceals and recovers.
    pub fn new(ptime: u32) -> Result<Self, CodecError> {
        Ok(OpusDecoder {
            inner: Decoder::new(SampleRate::Hz48000, Channels::Mono).map_err(opus_error)?,
            frame: opus_frame(ptime)?,
        })
    }
}

impl AudioDecoder for OpusDecoder {
    fn codec(&self) -> Codec {
        Codec::Opus
    }

    fn sample_rate(&self) -> u32 {
        OPUS_SAMPLE_RATE
    }

    fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Decodes a packet; `out` must hold the packet's duration (up to
    /// 120 ms, 5760 samples).
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if payload.is_empty() {
            return Err(CodecError::InvalidPayload { len: 0 });
        }
        self.inner
            .decode(Some(payload), out, false)
            .map_err(|_| CodecError::InvalidPayload { len: payload.len() })
    }

    fn packet_samples(&self, payload: &[u8]) -> Option<usize> {
        if payload.is_empty() {
            return None;
        }
        // libopus reports a malformed packet as a negative count.
        audiopus::packet::nb_samples(payload, SampleRate::Hz48000)
            .ok()
            .filter(|&n| (1..=MAX_PACKET_SAMPLES).contains(&n))
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let out = self.frame_buffer(out)?;
        self.inner
            .decode(None::<&[u8]>, out, false)
            .map_err(opus_error)
    }

    fn recover(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if next_payload.is_empty() {
            return self.conceal(out);
        }
        let out = self.frame_buffer(out)?;
        self.inner
            .decode(Some(next_payload), out, true)
            .map_err(|_| CodecError::InvalidPayload {
                len: next_payload.len(),
            })
    }
}

/// Longest Opus packet: 120 ms at 48 kHz (RFC 6716 §3.2.5).
const MAX_PACKET_SAMPLES: usize = 5760;
/// Shortest Opus frame, 2.5 ms: concealment lengths are whole multiples.
const MIN_FRAME_SAMPLES: usize = 120;

impl OpusDecoder {
    /// What concealment and recovery fill: all of `out` when it is a
    /// whole Opus duration (the peer's packet length), else one frame.
    fn frame_buffer<'a>(&self, out: &'a mut [i16]) -> Result<&'a mut [i16], CodecError> {
        let actual = out.len();
        if actual.is_multiple_of(MIN_FRAME_SAMPLES) && (1..=MAX_PACKET_SAMPLES).contains(&actual) {
            return Ok(out);
        }
        out.get_mut(..self.frame).ok_or(CodecError::OutputTooSmall {
            needed: self.frame,
            actual,
        })
    }
}

fn opus_frame(ptime: u32) -> Result<usize, CodecError> {
    match ptime {
        10 | 20 | 40 | 60 => Ok(ptime as usize * 48),
        _ => Err(CodecError::UnsupportedPtime { ptime }),
    }
}

fn opus_error(error: audiopus::Error) -> CodecError {
    CodecError::Opus {
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voiced, speech-like signal: a 140 Hz fundamental with harmonics,
    /// its loudness moving like syllables.
    fn voice(frame: usize, len: usize) -> Vec<i16> {
        (0..len)
            .map(|i| {
                let t = (frame * len + i) as f32 / 48_000.0;
                let envelope = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
                let s: f32 = (1..=8)
                    .map(|h| (2.0 * std::f32::consts::PI * 140.0 * h as f32 * t).sin() / h as f32)
                    .sum();
                // A little breath noise from a fixed hash, as in real speech.
                let n = ((frame * len + i) as u32).wrapping_mul(2_654_435_761) >> 16;
                let noise = n as f32 / 65_536.0 - 0.5;
                (6000.0 * envelope * s + 2000.0 * noise) as i16
            })
            .collect()
    }

    fn encode_all(encoder: &mut OpusEncoder, frames: usize) -> Vec<Vec<u8>> {
        (0..frames)
            .map(|f| {
                let mut packet = [0u8; MAX_PACKET_LEN];
                let len = encoder.encode(&voice(f, 960), &mut packet).unwrap();
                packet[..len].to_vec()
            })
            .collect()
    }

    fn energy(pcm: &[i16]) -> f64 {
        pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64
    }

    fn distance(a: &[i16], b: &[i16]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum::<f64>()
            / a.len() as f64
    }

    #[test]
    fn rfc7587_encodes_and_decodes_20_ms_mono_at_48_khz() {
        let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
        let mut decoder = OpusDecoder::new(20).unwrap();
        assert_eq!(
            (encoder.sample_rate(), encoder.frame_samples()),
            (48_000, 960)
        );
        let packets = encode_all(&mut encoder, 25);
        let mut decoded = Vec::new();
        for p in &packets {
            let mut out = [0i16; 960];
            assert_eq!(decoder.decode(p, &mut out).unwrap(), 960);
            decoded.extend_from_slice(&out);
        }
        // After the codec's start-up, the output carries the input's energy.
        let original: Vec<i16> = (0..25).flat_map(|f| voice(f, 960)).collect();
        let ratio = energy(&decoded[9600..]) / energy(&original[9600..]);
        assert!((0.5..2.0).contains(&ratio), "energy ratio {ratio}");
    }

    #[test]
    fn settings_reach_libopus() {
        let encoder = OpusEncoder::new(
            OpusConfig::default()
                .with_bitrate(16_000)
                .with_complexity(3)
                .with_fec(true, 20)
                .with_dtx(true),
        )
        .unwrap();
        assert_eq!(encoder.bitrate().unwrap(), 16_000);
        assert_eq!(encoder.complexity().unwrap(), 3);
        assert!(encoder.is_fec_enabled().unwrap());
        assert!(encoder.is_dtx_enabled().unwrap());
        assert!(OpusEncoder::new(OpusConfig::default().with_complexity(11)).is_err());
        assert!(OpusEncoder::new(OpusConfig::default().with_bitrate(1000)).is_err());
        assert!(matches!(
            OpusEncoder::new(OpusConfig::default().with_ptime(30)),
            Err(CodecError::UnsupportedPtime { ptime: 30 })
        ));
    }

    #[test]
    fn rfc6716_bitrate_setting_changes_packet_size() {
        let mean = |bitrate| {
            let mut encoder = OpusEncoder::new(
                OpusConfig::default()
                    .with_bitrate(bitrate)
                    .with_fec(false, 0),
            )
            .unwrap();
            let packets = encode_all(&mut encoder, 50);
            packets.iter().map(Vec::len).sum::<usize>() / packets.len()
        };
        let (low, high) = (mean(12_000), mean(64_000));
        // 20 ms at 12 kbit/s is 30 bytes, at 64 kbit/s 160 bytes.
        assert!(low < 45 && high > 120, "low {low} high {high}");
    }

    #[test]
    fn rfc7587_3_1_3_dtx_shrinks_silent_packets() {
        let silent_sizes = |dtx| {
            let mut encoder = OpusEncoder::new(OpusConfig::default().with_dtx(dtx)).unwrap();
            (0..50)
                .map(|_| {
                    let mut packet = [0u8; MAX_PACKET_LEN];
                    encoder.encode(&[0i16; 960], &mut packet).unwrap()
                })
                .collect::<Vec<_>>()
        };
        // libopus still sends a comfort-noise update every 400 ms.
        let with_dtx = silent_sizes(true);
        let skipped = with_dtx[10..]
            .iter()
            .filter(|&&len| len <= DTX_MAX_PACKET_LEN)
            .count();
        assert!(skipped >= 36, "{with_dtx:?}");
        let without = silent_sizes(false);
        assert!(
            without[10..].iter().all(|&len| len > DTX_MAX_PACKET_LEN),
            "{without:?}"
        );
    }

    #[test]
    fn rfc6716_plc_conceals_a_lost_packet_with_continuing_sound() {
        let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
        let mut decoder = OpusDecoder::new(20).unwrap();
        let packets = encode_all(&mut encoder, 20);
        let mut out = [0i16; 960];
        for p in &packets[..15] {
            decoder.decode(p, &mut out).unwrap();
        }
        let before = energy(&out);
        assert_eq!(decoder.conceal(&mut out).unwrap(), 960);
        let concealed = energy(&out);
        assert!(
            concealed > before * 0.05,
            "concealed {concealed} before {before}"
        );
        // Decoding resumes normally.
        assert_eq!(decoder.decode(&packets[16], &mut out).unwrap(), 960);
        assert!(matches!(
            decoder.conceal(&mut [0i16; 100]),
            Err(CodecError::OutputTooSmall { .. })
        ));
    }

    #[test]
    fn rfc6716_fec_recovers_the_previous_frame_better_than_plc() {
        let config = OpusConfig::default()
            .with_bitrate(16_000)
            .with_fec(true, 30);
        let mut encoder = OpusEncoder::new(config).unwrap();
        let packets = encode_all(&mut encoder, 20);
        let (mut fec_error, mut plc_error) = (0.0, 0.0);
        for lost in [8, 10, 12, 14, 16] {
            // What a decoder that lost nothing plays for the lost frame.
            let mut reference = OpusDecoder::new(20).unwrap();
            let mut expected = [0i16; 960];
            for p in &packets[..=lost] {
                reference.decode(p, &mut expected).unwrap();
            }
            let play_with = |use_fec: bool| {
                let mut decoder = OpusDecoder::new(20).unwrap();
                let mut out = [0i16; 960];
                for p in &packets[..lost] {
                    decoder.decode(p, &mut out).unwrap();
                }
                if use_fec {
                    decoder.recover(&packets[lost + 1], &mut out).unwrap();
                } else {
                    decoder.conceal(&mut out).unwrap();
                }
                out
            };
            fec_error += distance(&play_with(true), &expected);
            plc_error += distance(&play_with(false), &expected);
        }
        // The FEC copy is coarser than the frame itself, but far closer than a guess.
        assert!(
            fec_error < plc_error * 0.7,
            "fec error {fec_error}, plc error {plc_error}"
        );
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        let mut decoder = OpusDecoder::new(20).unwrap();
        let mut out = [0i16; 5760];
        assert_eq!(
            decoder.decode(&[], &mut out),
            Err(CodecError::InvalidPayload { len: 0 })
        );
        for bytes in [&[0xFFu8, 0xFF, 0xFF][..], &[0x03, 0xFF], &[0x0B; 2000]] {
            let _ = decoder.decode(bytes, &mut out);
            let _ = decoder.recover(bytes, &mut out);
        }
    }
}
