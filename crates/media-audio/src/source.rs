//! What a paced backend captures: silence, a WAV file, or a sine tone.

use std::{
    f64::consts::TAU,
    path::{Path, PathBuf},
};

use crate::AudioError;

/// A sine tone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tone {
    /// Frequency in Hz; above 0 and below half the sample rate.
    pub frequency: f64,
    /// Peak amplitude on the i16 scale.
    pub amplitude: i16,
}

impl Tone {
    /// Default peak amplitude: about -12 dBFS.
    pub const DEFAULT_AMPLITUDE: i16 = 8000;

    /// A tone at `frequency` Hz with the default amplitude.
    #[must_use]
    pub const fn new(frequency: f64) -> Self {
        Self {
            frequency,
            amplitude: Self::DEFAULT_AMPLITUDE,
        }
    }
}

/// A WAV file to play as captured audio.
///
/// Any channel count (averaged to mono), 8/16/24/32-bit integer or 32-bit
/// float PCM, at most [`WavSource::MAX_DURATION_SECS`] long. The device
/// runs at the file's sample rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavSource {
    /// The file.
    pub path: PathBuf,
    /// Start again at the end (`true`), or continue with silence.
    pub looped: bool,
}

impl WavSource {
    /// Longest file accepted; it is read into memory when the device opens.
    pub const MAX_DURATION_SECS: u32 = 600;

    /// `path`, played once then silence.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            looped: false,
        }
    }

    /// Plays it in a loop instead.
    #[must_use]
    pub fn looped(mut self, looped: bool) -> Self {
        self.looped = looped;
        self
    }
}

/// A WAV file read into memory, mono.
pub(crate) struct LoadedWav {
    pub(crate) sample_rate: u32,
    pub(crate) samples: Box<[i16]>,
}

/// Reads `path` and mixes it down to mono i16.
pub(crate) fn load_wav(path: &Path) -> Result<LoadedWav, AudioError> {
    let wav_error = |source| AudioError::Wav {
        path: path.to_path_buf(),
        source,
    };
    let content_error = |reason: String| AudioError::WavContent {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = hound::WavReader::open(path).map_err(wav_error)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels);
    if channels == 0 {
        return Err(content_error("no channels".to_owned()));
    }
    if !(crate::AudioFormat::MIN_SAMPLE_RATE..=crate::AudioFormat::MAX_SAMPLE_RATE)
        .contains(&spec.sample_rate)
    {
        return Err(content_error(format!(
            "unsupported sample rate {} Hz",
            spec.sample_rate
        )));
    }
    let frames = reader.duration();
    if u64::from(frames) > u64::from(WavSource::MAX_DURATION_SECS) * u64::from(spec.sample_rate) {
        return Err(content_error(format!(
            "longer than {} s ({frames} frames at {} Hz)",
            WavSource::MAX_DURATION_SECS,
            spec.sample_rate
        )));
    }
    let interleaved: Vec<i32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            // Scale to the i16 range, whatever the width.
            let to_i16 = |s: i32| -> i32 {
                if bits > 16 {
                    s >> (bits - 16)
                } else {
                    s << (16 - bits)
                }
            };
            reader
                .samples::<i32>()
                .map(|s| s.map(to_i16))
                .collect::<Result<_, _>>()
                .map_err(wav_error)?
        }
        (hound::SampleFormat::Float, 32) => reader
            .samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0).round() as i32))
            .collect::<Result<_, _>>()
            .map_err(wav_error)?,
        (format, bits) => {
            return Err(content_error(format!(
                "unsupported sample format {format:?} with {bits} bits"
            )));
        }
    };
    let samples: Box<[i16]> = interleaved
        .chunks_exact(channels)
        .map(|frame| {
            let sum: i64 = frame.iter().map(|&s| i64::from(s)).sum();
            (sum / channels as i64).clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
        })
        .collect();
    if samples.is_empty() {
        return Err(content_error("no samples".to_owned()));
    }
    Ok(LoadedWav {
        sample_rate: spec.sample_rate,
        samples,
    })
}

/// The running state of a capture source; [`SourceState::fill`] is called
/// on the audio thread.
pub(crate) enum SourceState {
    Silence,
    Samples {
        samples: Box<[i16]>,
        position: usize,
        looped: bool,
        ended: bool,
    },
    Tone {
        phase: f64,
        step: f64,
        amplitude: f64,
    },
}

impl SourceState {
    pub(crate) fn tone(tone: Tone, sample_rate: u32) -> Result<Self, AudioError> {
        let nyquist = f64::from(sample_rate) / 2.0;
        if !(tone.frequency.is_finite() && tone.frequency > 0.0 && tone.frequency < nyquist) {
            return Err(AudioError::InvalidTone {
                frequency: tone.frequency,
                sample_rate,
            });
        }
        Ok(Self::Tone {
            phase: 0.0,
            step: TAU * tone.frequency / f64::from(sample_rate),
            amplitude: f64::from(tone.amplitude),
        })
    }

    pub(crate) fn samples(samples: Box<[i16]>, looped: bool) -> Self {
        Self::Samples {
            samples,
            position: 0,
            looped,
            ended: false,
        }
    }

    /// Fills `out` with the next samples. Returns `true` once, when a file
    /// played once has just run out.
    pub(crate) fn fill(&mut self, out: &mut [i16]) -> bool {
        match self {
            Self::Silence => {
                out.fill(0);
                false
            }
            Self::Samples {
                samples,
                position,
                looped,
                ended,
            } => {
                let mut filled = 0;
                while filled < out.len() {
                    if *position >= samples.len() {
                        if *looped && !samples.is_empty() {
                            *position = 0;
                        } else {
                            out[filled..].fill(0);
                            let just_ended = !*ended;
                            *ended = true;
                            return just_ended;
                        }
                    }
                    let n = (samples.len() - *position).min(out.len() - filled);
                    out[filled..filled + n].copy_from_slice(&samples[*position..*position + n]);
                    *position += n;
                    filled += n;
                }
                false
            }
            Self::Tone {
                phase,
                step,
                amplitude,
            } => {
                for sample in out.iter_mut() {
                    *sample = (*amplitude * phase.sin()).round() as i16;
                    *phase += *step;
                    if *phase >= TAU {
                        *phase -= TAU;
                    }
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_played_once_ends_in_silence_and_says_so_once() {
        let mut source = SourceState::samples(vec![1, 2, 3].into_boxed_slice(), false);
        let mut out = [9; 2];
        assert!(!source.fill(&mut out));
        assert_eq!(out, [1, 2]);
        assert!(source.fill(&mut out));
        assert_eq!(out, [3, 0]);
        assert!(!source.fill(&mut out));
        assert_eq!(out, [0, 0]);
    }

    #[test]
    fn a_looped_file_starts_again() {
        let mut source = SourceState::samples(vec![1, 2, 3].into_boxed_slice(), true);
        let mut out = [0; 7];
        assert!(!source.fill(&mut out));
        assert_eq!(out, [1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn a_tone_at_or_above_nyquist_is_refused() {
        assert!(SourceState::tone(Tone::new(4000.0), 8000).is_err());
        assert!(SourceState::tone(Tone::new(0.0), 8000).is_err());
        assert!(SourceState::tone(Tone::new(f64::NAN), 8000).is_err());
        assert!(SourceState::tone(Tone::new(3999.0), 8000).is_ok());
    }
}
