//! Sample-rate conversion between the audio device and the codec, one
//! packet-time frame at a time (rubato's synchronous FFT resampler).
//!
//! A [`Resampler`] converts mono frames of a fixed duration (20 ms by
//! default) from one rate to another: 48 kHz and 44.1 kHz on the device
//! side, 48, 16 and 8 kHz on the codec side, or any pair of rates that
//! make whole frames. Each call takes exactly one input frame and yields
//! exactly one output frame, so it slots into the 20 ms audio loop. The
//! conversion delays the signal by [`Resampler::delay`] output samples.
//!
//! Buffers are allocated once at construction: `process_*` do not
//! allocate, so the audio thread may call them.
//!
//! ```
//! use media_engine::resample::Resampler;
//!
//! let mut to_codec = Resampler::new(44_100, 8_000, 20).unwrap();
//! let device_frame = vec![0.0f32; to_codec.input_frame_samples()];
//! let mut codec_frame = vec![0.0f32; to_codec.output_frame_samples()];
//! assert_eq!((device_frame.len(), codec_frame.len()), (882, 160));
//! to_codec.process_f32(&device_frame, &mut codec_frame).unwrap();
//! ```

use std::fmt;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};
use thiserror::Error;

/// Why a resampler could not be made or a frame converted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ResampleError {
    /// A rate or packet time that does not make whole frames.
    #[error("{rate} Hz does not give whole frames of {ptime} ms")]
    UnsupportedRate {
        /// The rate.
        rate: u32,
        /// The frame duration in milliseconds.
        ptime: u32,
    },
    /// The input is not exactly one frame.
    #[error("frame of {actual} samples, expected {expected}")]
    FrameSize {
        /// Samples per input frame.
        expected: usize,
        /// Samples given.
        actual: usize,
    },
    /// The output buffer is smaller than one output frame.
    #[error("output of {actual} samples holds less than {needed}")]
    OutputTooSmall {
        /// Samples per output frame.
        needed: usize,
        /// Samples given.
        actual: usize,
    },
    /// The resampling library refused.
    #[error("resampler: {message}")]
    Library {
        /// The library's message.
        message: String,
    },
}

/// Converts mono frames from one sample rate to another.
pub struct Resampler {
    from: u32,
    to: u32,
    input_frame: usize,
    output_frame: usize,
    /// `None` when both rates are equal: frames pass through.
    inner: Option<Fft<f32>>,
    scratch_in: Vec<f32>,
    scratch_out: Vec<f32>,
}

impl fmt::Debug for Resampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("input_frame", &self.input_frame)
            .field("output_frame", &self.output_frame)
            .finish_non_exhaustive()
    }
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz for frames of `ptime`
    /// milliseconds.
    pub fn new(from: u32, to: u32, ptime: u32) -> Result<Self, ResampleError> {
        let input_frame = frame_samples(from, ptime)?;
        let output_frame = frame_samples(to, ptime)?;
        let inner = if from == to {
            None
        } else {
            Some(
                Fft::<f32>::new(from as usize, to as usize, input_frame, 1, FixedSync::Both)
                    .map_err(|e| ResampleError::Library {
                        message: e.to_string(),
                    })?,
            )
        };
        if let Some(fft) = &inner
            && (fft.input_frames_next() != input_frame || fft.output_frames_next() != output_frame)
        {
            return Err(ResampleError::UnsupportedRate { rate: to, ptime });
        }
        Ok(Resampler {
            from,
            to,
            input_frame,
            output_frame,
            inner,
            scratch_in: vec![0.0; input_frame],
            scratch_out: vec![0.0; output_frame],
        })
    }

    /// The input rate in Hz.
    pub fn input_rate(&self) -> u32 {
        self.from
    }

    /// The output rate in Hz.
    pub fn output_rate(&self) -> u32 {
        self.to
    }

    /// Samples in one input frame.
    pub fn input_frame_samples(&self) -> usize {
        self.input_frame
    }

    /// Samples in one output frame.
    pub fn output_frame_samples(&self) -> usize {
        self.output_frame
    }

    /// How many output samples the signal comes out late.
    pub fn delay(&self) -> usize {
        self.inner.as_ref().map_or(0, |r| r.output_delay())
    }

    /// Forgets past input, as after a stream change.
    pub fn reset(&mut self) {
        if let Some(r) = &mut self.inner {
            r.reset();
        }
    }

    /// Converts one frame of samples in `[-1, 1]`; returns the samples
    /// written to `output`.
    pub fn process_f32(
        &mut self,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<usize, ResampleError> {
        self.check(input.len(), output.len())?;
        let output = &mut output[..self.output_frame];
        let Some(inner) = &mut self.inner else {
            output.copy_from_slice(input);
            return Ok(self.output_frame);
        };
        let library = |e: &dyn fmt::Display| ResampleError::Library {
            message: e.to_string(),
        };
        let adapter_in =
            InterleavedSlice::new(input, 1, self.input_frame).map_err(|e| library(&e))?;
        let mut adapter_out =
            InterleavedSlice::new_mut(output, 1, self.output_frame).map_err(|e| library(&e))?;
        inner
            .process_into_buffer(&adapter_in, &mut adapter_out, None)
            .map_err(|e| library(&e))?;
        Ok(self.output_frame)
    }

    /// Converts one frame of 16-bit samples; the output is rounded and
    /// clipped.
    pub fn process_i16(
        &mut self,
        input: &[i16],
        output: &mut [i16],
    ) -> Result<usize, ResampleError> {
        self.check(input.len(), output.len())?;
        let mut scratch_in = std::mem::take(&mut self.scratch_in);
        let mut scratch_out = std::mem::take(&mut self.scratch_out);
        for (s, &x) in scratch_in.iter_mut().zip(input) {
            *s = f32::from(x) / 32768.0;
        }
        let result = self.process_f32(&scratch_in, &mut scratch_out);
        if result.is_ok() {
            for (o, &y) in output.iter_mut().zip(&scratch_out) {
                // In range after the clamp, so the cast cannot wrap.
                *o = (y * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
            }
        }
        self.scratch_in = scratch_in;
        self.scratch_out = scratch_out;
        result
    }

    fn check(&self, input: usize, output: usize) -> Result<(), ResampleError> {
        if input != self.input_frame {
            return Err(ResampleError::FrameSize {
                expected: self.input_frame,
                actual: input,
            });
        }
        if output < self.output_frame {
            return Err(ResampleError::OutputTooSmall {
                needed: self.output_frame,
                actual: output,
            });
        }
        Ok(())
    }
}

fn frame_samples(rate: u32, ptime: u32) -> Result<usize, ResampleError> {
    let samples = u64::from(rate) * u64::from(ptime);
    if rate == 0 || ptime == 0 || rate > 384_000 || ptime > 120 || !samples.is_multiple_of(1000) {
        return Err(ResampleError::UnsupportedRate { rate, ptime });
    }
    usize::try_from(samples / 1000).map_err(|_| ResampleError::UnsupportedRate { rate, ptime })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [u32; 4] = [48_000, 44_100, 16_000, 8_000];

    fn tone(rate: u32, hz: f64, seconds: f64) -> Vec<f32> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as f32
            })
            .collect()
    }

    /// Frequency from rising and falling zero crossings.
    fn frequency(signal: &[f32], rate: u32) -> f64 {
        let crossings = signal
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        crossings as f64 / 2.0 / (signal.len() as f64 / f64::from(rate))
    }

    fn rms(signal: &[f32]) -> f64 {
        (signal.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / signal.len() as f64).sqrt()
    }

    fn run_f32(resampler: &mut Resampler, input: &[f32]) -> Vec<f32> {
        let mut output = Vec::new();
        let mut frame = vec![0.0; resampler.output_frame_samples()];
        for chunk in input.chunks_exact(resampler.input_frame_samples()) {
            assert_eq!(
                resampler.process_f32(chunk, &mut frame).unwrap(),
                frame.len()
            );
            output.extend_from_slice(&frame);
        }
        output
    }

    #[test]
    fn a_1_khz_tone_keeps_its_frequency_across_every_conversion() {
        for from in RATES {
            for to in RATES {
                let mut resampler = Resampler::new(from, to, 20).unwrap();
                let output = run_f32(&mut resampler, &tone(from, 1000.0, 1.0));
                assert_eq!(output.len(), to as usize);
                // Skip the start-up delay plus a frame.
                let settled = &output[resampler.delay() + resampler.output_frame_samples()..];
                let hz = frequency(settled, to);
                assert!((hz - 1000.0).abs() < 10.0, "{from} -> {to}: {hz} Hz");
                let level = rms(settled);
                assert!(
                    (level - 0.5 / 2f64.sqrt()).abs() < 0.03,
                    "{from} -> {to}: rms {level}"
                );
            }
        }
    }

    #[test]
    fn a_1_khz_tone_keeps_its_frequency_in_16_bit_samples() {
        for (from, to) in [
            (48_000, 8_000),
            (8_000, 48_000),
            (44_100, 16_000),
            (16_000, 44_100),
        ] {
            let mut resampler = Resampler::new(from, to, 20).unwrap();
            let input: Vec<i16> = tone(from, 1000.0, 0.5)
                .iter()
                .map(|&s| (s * 32767.0) as i16)
                .collect();
            let mut output = Vec::new();
            let mut frame = vec![0i16; resampler.output_frame_samples()];
            for chunk in input.chunks_exact(resampler.input_frame_samples()) {
                resampler.process_i16(chunk, &mut frame).unwrap();
                output.extend(frame.iter().map(|&s| f32::from(s) / 32768.0));
            }
            let settled = &output[resampler.delay() + resampler.output_frame_samples()..];
            let hz = frequency(settled, to);
            assert!((hz - 1000.0).abs() < 10.0, "{from} -> {to}: {hz} Hz");
        }
    }

    #[test]
    fn a_frequency_above_the_new_nyquist_is_filtered_out() {
        // 6 kHz cannot exist at 8 kHz; it must not fold back as 2 kHz.
        let mut resampler = Resampler::new(48_000, 8_000, 20).unwrap();
        let output = run_f32(&mut resampler, &tone(48_000, 6000.0, 0.5));
        assert!(rms(&output[400..]) < 0.01, "rms {}", rms(&output[400..]));
    }

    #[test]
    fn equal_rates_pass_frames_through() {
        let mut resampler = Resampler::new(16_000, 16_000, 20).unwrap();
        let input: Vec<f32> = (0..320).map(|i| i as f32 / 320.0).collect();
        let mut output = vec![0.0; 320];
        resampler.process_f32(&input, &mut output).unwrap();
        assert_eq!(output, input);
        assert_eq!(resampler.delay(), 0);
    }

    #[test]
    fn bad_rates_and_frame_sizes_are_errors() {
        assert_eq!(Resampler::new(44_100, 8_000, 10).map(|_| ()), Ok(()));
        assert!(matches!(
            Resampler::new(44_100, 8_000, 5),
            Err(ResampleError::UnsupportedRate {
                rate: 44_100,
                ptime: 5
            })
        ));
        assert!(matches!(
            Resampler::new(0, 8_000, 20),
            Err(ResampleError::UnsupportedRate { .. })
        ));
        let mut resampler = Resampler::new(48_000, 8_000, 20).unwrap();
        assert_eq!(
            resampler.process_f32(&[0.0; 100], &mut [0.0; 160]),
            Err(ResampleError::FrameSize {
                expected: 960,
                actual: 100
            })
        );
        assert_eq!(
            resampler.process_i16(&[0; 960], &mut [0; 10]),
            Err(ResampleError::OutputTooSmall {
                needed: 160,
                actual: 10
            })
        );
    }
}
