//! One interface for every audio codec: [`AudioEncoder`] and
//! [`AudioDecoder`], implemented for G.711 here and for Opus in
//! [`crate::opus`].
//!
//! Both work on one packet's worth of mono 16-bit PCM at the codec's own
//! sample rate ([`AudioEncoder::sample_rate`]); [`crate::resample`]
//! converts to and from the device's rate. Neither allocates per frame:
//! callers pass the output buffers, so a real-time thread can run them.
//!
//! Loss handling is part of the decoder: [`AudioDecoder::conceal`] fills
//! a missing frame, and [`AudioDecoder::recover`] rebuilds a missing frame
//! from the packet after it when the codec carries forward error
//! correction (Opus in-band FEC); codecs without FEC conceal instead.
//!
//! ```
//! use media_engine::codec::{self, AudioDecoder, AudioEncoder};
//! use media_engine::negotiation::Codec;
//!
//! let mut encoder = codec::encoder(Codec::Pcmu, 20).unwrap();
//! let mut decoder = codec::decoder(Codec::Pcmu, 20).unwrap();
//! let pcm = vec![1000i16; encoder.frame_samples()];
//! let mut packet = [0u8; 1500];
//! let len = encoder.encode(&pcm, &mut packet).unwrap();
//! assert_eq!(len, 160);
//! let mut out = vec![0i16; decoder.frame_samples()];
//! assert_eq!(decoder.decode(&packet[..len], &mut out).unwrap(), 160);
//! assert_eq!(decoder.conceal(&mut out).unwrap(), 160);
//! ```

use std::fmt;

use thiserror::Error;

use crate::g711::{self, Concealer};
use crate::negotiation::Codec;
use crate::opus::{OpusConfig, OpusDecoder, OpusEncoder};

/// Why a frame could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input is not exactly one frame.
    #[error("frame of {actual} samples, the codec takes {expected}")]
    FrameSize {
        /// Samples per frame.
        expected: usize,
        /// Samples given.
        actual: usize,
    },
    /// The output buffer is too small.
    #[error("output buffer of {actual} holds less than the {needed} needed")]
    OutputTooSmall {
        /// Size needed.
        needed: usize,
        /// Size given.
        actual: usize,
    },
    /// The packet time is not one the codec supports.
    #[error("unsupported packet time of {ptime} ms")]
    UnsupportedPtime {
        /// The packet time asked for.
        ptime: u32,
    },
    /// The payload is empty or malformed.
    #[error("invalid payload of {len} bytes")]
    InvalidPayload {
        /// Bytes given.
        len: usize,
    },
    /// The Opus library refused.
    #[error("opus: {message}")]
    Opus {
        /// The library's message.
        message: String,
    },
}

/// Turns PCM frames into payloads.
pub trait AudioEncoder: Send + fmt::Debug {
    /// The codec.
    fn codec(&self) -> Codec;

    /// Sample rate of the PCM it takes, in Hz.
    fn sample_rate(&self) -> u32;

    /// Samples in one frame (one packet).
    fn frame_samples(&self) -> usize;

    /// Encodes exactly one frame into `out`; returns the payload length.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError>;
}

/// Turns payloads into PCM frames and hides losses.
pub trait AudioDecoder: Send + fmt::Debug {
    /// The codec.
    fn codec(&self) -> Codec;

    /// Sample rate of the PCM it produces, in Hz.
    fn sample_rate(&self) -> u32;

    /// Samples in one frame (one packet).
    fn frame_samples(&self) -> usize;

    /// Decodes one payload into `out`; returns the samples written.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError>;

    /// The samples `payload` decodes to, as far as the payload itself
    /// tells: a peer may send packets of another length than the
    /// negotiated ptime (RFC 3264 §6.1 makes ptime a wish). `None` for a
    /// payload that does not parse.
    fn packet_samples(&self, payload: &[u8]) -> Option<usize>;

    /// Fills `out`, one missing frame (of [`frame_samples`](Self::frame_samples)
    /// samples, or of the peer's packet length when that differs), by
    /// packet-loss concealment.
    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError>;

    /// Rebuilds the missing frame just before `next_payload` from the
    /// forward error correction that `next_payload` carries. Codecs
    /// without FEC conceal instead. Decode `next_payload` itself
    /// afterwards, as usual.
    fn recover(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let _ = next_payload;
        self.conceal(out)
    }
}

/// An encoder for `codec` with `ptime` milliseconds per packet, with
/// default settings.
pub fn encoder(codec: Codec, ptime: u32) -> Result<Box<dyn AudioEncoder>, CodecError> {
    Ok(match codec {
        Codec::Pcmu => Box::new(G711Encoder::new(G711Law::MuLaw, ptime)?),
        Codec::Pcma => Box::new(G711Encoder::new(G711Law::ALaw, ptime)?),
        Codec::Opus => Box::new(OpusEncoder::new(OpusConfig::default().with_ptime(ptime))?),
    })
}

/// A decoder for `codec` with `ptime` milliseconds per packet.
pub fn decoder(codec: Codec, ptime: u32) -> Result<Box<dyn AudioDecoder>, CodecError> {
    Ok(match codec {
        Codec::Pcmu => Box::new(G711Decoder::new(G711Law::MuLaw, ptime)?),
        Codec::Pcma => Box::new(G711Decoder::new(G711Law::ALaw, ptime)?),
        Codec::Opus => Box::new(OpusDecoder::new(ptime)?),
    })
}

/// Which G.711 law.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum G711Law {
    /// mu-law (PCMU).
    MuLaw,
    /// A-law (PCMA).
    ALaw,
}

/// G.711 at 8 kHz.
#[derive(Clone, Debug)]
pub struct G711Encoder {
    law: G711Law,
    frame: usize,
}

impl G711Encoder {
    /// An encoder with `ptime` ms per packet (1 to 120).
    pub fn new(law: G711Law, ptime: u32) -> Result<Self, CodecError> {
        Ok(G711Encoder {
            law,
            frame: g711_frame(ptime)?,
        })
    }
}

impl AudioEncoder for G711Encoder {
    fn codec(&self) -> Codec {
        g711_codec(self.law)
    }

    fn sample_rate(&self) -> u32 {
        8000
    }

    fn frame_samples(&self) -> usize {
        self.frame
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame(self.frame, pcm.len())?;
        let actual = out.len();
        let out = out
            .get_mut(..self.frame)
            .ok_or(CodecError::OutputTooSmall {
                needed: self.frame,
                actual,
            })?;
        match self.law {
            G711Law::MuLaw => g711::encode_ulaw(pcm, out),
            G711Law::ALaw => g711::encode_alaw(pcm, out),
        }
        Ok(self.frame)
    }
}

/// G.711 at 8 kHz with the [`Concealer`] for lost frames.
///
/// Every decoded frame passes through the concealer, which holds back
/// [`Concealer::delay_samples`] samples so a loss can blend in smoothly.
#[derive(Clone, Debug)]
pub struct G711Decoder {
    law: G711Law,
    frame: usize,
    concealer: Concealer,
}

impl G711Decoder {
    /// A decoder with `ptime` ms per packet.
    pub fn new(law: G711Law, ptime: u32) -> Result<Self, CodecError> {
        Ok(G711Decoder {
            law,
            frame: g711_frame(ptime)?,
            concealer: Concealer::new(),
        })
    }
}

impl AudioDecoder for G711Decoder {
    fn codec(&self) -> Codec {
        g711_codec(self.law)
    }

    fn sample_rate(&self) -> u32 {
        8000
    }

    fn frame_samples(&self) -> usize {
        self.frame
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if payload.is_empty() {
            return Err(CodecError::InvalidPayload { len: 0 });
        }
        let actual = out.len();
        let out = out
            .get_mut(..payload.len())
            .ok_or(CodecError::OutputTooSmall {
                needed: payload.len(),
                actual,
            })?;
        match self.law {
            G711Law::MuLaw => g711::decode_ulaw(payload, out),
            G711Law::ALaw => g711::decode_alaw(payload, out),
        }
        self.concealer.good_frame(out);
        Ok(payload.len())
    }

    fn packet_samples(&self, payload: &[u8]) -> Option<usize> {
        // One byte per sample.
        (!payload.is_empty()).then_some(payload.len())
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        if out.is_empty() {
            return Err(CodecError::OutputTooSmall {
                needed: self.frame,
                actual: 0,
            });
        }
        self.concealer.conceal(out);
        Ok(out.len())
    }
}

fn g711_codec(law: G711Law) -> Codec {
    match law {
        G711Law::MuLaw => Codec::Pcmu,
        G711Law::ALaw => Codec::Pcma,
    }
}

fn g711_frame(ptime: u32) -> Result<usize, CodecError> {
    if !(1..=120).contains(&ptime) {
        return Err(CodecError::UnsupportedPtime { ptime });
    }
    Ok(ptime as usize * 8)
}

pub(crate) fn check_frame(expected: usize, actual: usize) -> Result<(), CodecError> {
    if expected == actual {
        Ok(())
    } else {
        Err(CodecError::FrameSize { expected, actual })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(samples: usize, rate: f32, hz: f32, offset: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| {
                let t = (i + offset) as f32 / rate;
                (8000.0 * (2.0 * std::f32::consts::PI * hz * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn rfc3551_4_5_14_g711_round_trips_through_the_trait() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut encoder = encoder(codec, 20).unwrap();
            let mut decoder = decoder(codec, 20).unwrap();
            assert_eq!(
                (encoder.sample_rate(), encoder.frame_samples()),
                (8000, 160)
            );
            let mut decoded = Vec::new();
            for frame in 0..5 {
                let pcm = tone(160, 8000.0, 1000.0, frame * 160);
                let mut packet = [0u8; 160];
                assert_eq!(encoder.encode(&pcm, &mut packet).unwrap(), 160);
                let mut out = [0i16; 160];
                decoder.decode(&packet, &mut out).unwrap();
                decoded.extend_from_slice(&out);
            }
            // The concealer delays by a fixed amount; compare after it.
            let delay = Concealer::delay_samples();
            let reference = tone(800, 8000.0, 1000.0, 0);
            let error: f64 = decoded[delay..]
                .iter()
                .zip(&reference)
                .map(|(&a, &b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                / (800 - delay) as f64;
            assert!(
                error.sqrt() < 200.0,
                "{codec:?}: rms error {}",
                error.sqrt()
            );
        }
    }

    #[test]
    fn g711_concealment_continues_the_signal_instead_of_silence() {
        let mut decoder = decoder(Codec::Pcmu, 20).unwrap();
        let mut encoder = encoder(Codec::Pcmu, 20).unwrap();
        for frame in 0..5 {
            let mut packet = [0u8; 160];
            encoder
                .encode(&tone(160, 8000.0, 300.0, frame * 160), &mut packet)
                .unwrap();
            decoder.decode(&packet, &mut [0i16; 160]).unwrap();
        }
        let mut out = [0i16; 160];
        assert_eq!(decoder.recover(&[0xFF; 160], &mut out).unwrap(), 160);
        assert!(out.iter().any(|&s| s.abs() > 1000));
    }

    #[test]
    fn packet_lengths_other_than_the_ptime_are_read_and_concealed_whole() {
        let mut g711 = decoder(Codec::Pcmu, 20).unwrap();
        assert_eq!(g711.packet_samples(&[0xFF; 240]), Some(240));
        assert_eq!(g711.packet_samples(&[]), None);
        let mut out = [1i16; 240];
        assert_eq!(g711.decode(&[0x80; 240], &mut out).unwrap(), 240);
        assert_eq!(g711.conceal(&mut out).unwrap(), 240);
        assert!(g711.conceal(&mut []).is_err());

        let mut opus_encoder = encoder(Codec::Opus, 40).unwrap();
        let mut packet = [0u8; 1500];
        let len = opus_encoder.encode(&[0i16; 1920], &mut packet).unwrap();
        let mut opus = decoder(Codec::Opus, 20).unwrap();
        assert_eq!(opus.packet_samples(&packet[..len]), Some(1920));
        assert_eq!(opus.packet_samples(&[]), None);
        // Code 3 with no frame count byte: malformed.
        assert_eq!(opus.packet_samples(&[0x03]), None);
        let mut out = vec![0i16; 1920];
        assert_eq!(opus.decode(&packet[..len], &mut out).unwrap(), 1920);
        assert_eq!(opus.conceal(&mut out).unwrap(), 1920);
        // Not a whole Opus duration: one negotiated frame.
        assert_eq!(opus.conceal(&mut vec![0i16; 1000]).unwrap(), 960);
    }

    #[test]
    fn wrong_frame_size_and_small_buffers_are_errors() {
        let mut encoder = encoder(Codec::Pcma, 20).unwrap();
        assert_eq!(
            encoder.encode(&[0; 100], &mut [0; 200]),
            Err(CodecError::FrameSize {
                expected: 160,
                actual: 100
            })
        );
        assert_eq!(
            encoder.encode(&[0; 160], &mut [0; 10]),
            Err(CodecError::OutputTooSmall {
                needed: 160,
                actual: 10
            })
        );
        let mut decoder = decoder(Codec::Pcma, 20).unwrap();
        assert_eq!(
            decoder.decode(&[], &mut [0; 160]),
            Err(CodecError::InvalidPayload { len: 0 })
        );
        assert!(matches!(
            super::encoder(Codec::Pcmu, 0),
            Err(CodecError::UnsupportedPtime { ptime: 0 })
        ));
    }
}
