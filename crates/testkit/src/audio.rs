//! Audio checks: write a test tone, measure what arrived.

use std::{f64::consts::PI, fs, path::Path, time::Duration};

use crate::error::{PeerError, Result};

/// A sine tone to write as 16-bit PCM WAV.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tone {
    /// Sample rate in Hz (8000 for G.711, 16000 for G.722, 48000 for opus).
    pub sample_rate: u32,
    /// Channels (1, or 2 for opus); every channel carries the same tone.
    pub channels: u16,
    /// Length.
    pub duration: Duration,
    /// Frequency in Hz.
    pub frequency: f64,
    /// Peak amplitude, 0..=32767.
    pub amplitude: i16,
}

impl Tone {
    /// 1 kHz, 8 kHz mono, 10 s: what PCMU/PCMA carry.
    #[must_use]
    pub fn narrowband(frequency: f64) -> Self {
        Self {
            sample_rate: 8000,
            channels: 1,
            duration: Duration::from_secs(10),
            frequency,
            amplitude: 12_000,
        }
    }

    /// 48 kHz stereo, 10 s: what opus carries.
    #[must_use]
    pub fn fullband(frequency: f64) -> Self {
        Self {
            sample_rate: 48_000,
            channels: 2,
            ..Self::narrowband(frequency)
        }
    }
}

/// Writes `tone` to `path` (16-bit PCM WAV).
///
/// # Errors
///
/// [`PeerError::Wav`].
pub fn write_tone(path: &Path, tone: &Tone) -> Result<()> {
    let wav_error = |source| PeerError::Wav {
        path: path.to_path_buf(),
        source,
    };
    let spec = hound::WavSpec {
        channels: tone.channels,
        sample_rate: tone.sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(wav_error)?;
    let frames = (tone.duration.as_secs_f64() * f64::from(tone.sample_rate)).round() as u64;
    let step = 2.0 * PI * tone.frequency / f64::from(tone.sample_rate);
    for i in 0..frames {
        let value = (f64::from(tone.amplitude) * (step * i as f64).sin()).round() as i16;
        for _ in 0..tone.channels {
            writer.write_sample(value).map_err(wav_error)?;
        }
    }
    writer.finalize().map_err(wav_error)
}

/// What [`analyze_wav`] measured on the first channel.
#[derive(Debug, Clone, PartialEq)]
pub struct WavAnalysis {
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Channels in the file.
    pub channels: u16,
    /// Length of the whole file.
    pub duration: Duration,
    /// RMS level of the analysed part (16-bit scale); below 100 is silence.
    pub rms: f64,
    /// Dominant frequency by zero crossings, in Hz.
    pub zero_crossing_frequency: f64,
    /// Dominant frequency by a Goertzel scan (50 Hz to Nyquist, 10 Hz steps).
    pub dominant_frequency: f64,
}

impl WavAnalysis {
    /// Whether the signal is louder than silence (RMS at least 100).
    #[must_use]
    pub fn is_audible(&self) -> bool {
        self.rms >= 100.0
    }

    /// Whether it is audible and both estimates are within `tolerance`
    /// (a fraction, e.g. 0.05) of `frequency`.
    #[must_use]
    pub fn is_tone(&self, frequency: f64, tolerance: f64) -> bool {
        let near = |f: f64| (f - frequency).abs() <= tolerance * frequency;
        self.is_audible() && near(self.zero_crossing_frequency) && near(self.dominant_frequency)
    }

    /// Whether a tone came through a call: audible, the dominant frequency
    /// within `tolerance` of `frequency`, and the zero-crossing estimate
    /// within five times that. A call's recording may hold a few concealed
    /// or dropped frames (network or scheduling hiccups); each phase jump
    /// adds zero crossings but hardly moves the spectrum's peak.
    #[must_use]
    pub fn is_tone_heard(&self, frequency: f64, tolerance: f64) -> bool {
        let near = |f: f64, t: f64| (f - frequency).abs() <= t * frequency;
        self.is_audible()
            && near(self.dominant_frequency, tolerance)
            && near(self.zero_crossing_frequency, 5.0 * tolerance)
    }
}

/// Measures the first channel of a 16-bit PCM WAV file, skipping its first
/// `skip` (call set-up, jitter buffer fill).
///
/// Recorders killed mid-call leave the header's length fields at zero; such
/// files are read up to their end.
///
/// # Errors
///
/// [`PeerError::Io`], [`PeerError::Wav`], or [`PeerError::InvalidArgument`]
/// when nothing is left after `skip`.
pub fn analyze_wav(path: &Path, skip: Duration) -> Result<WavAnalysis> {
    let (sample_rate, channels, samples) = read_first_channel(path)?;
    let duration = Duration::from_secs_f64(samples.len() as f64 / f64::from(sample_rate));
    let skipped = (skip.as_secs_f64() * f64::from(sample_rate)) as usize;
    let part = samples.get(skipped..).unwrap_or_default();
    if part.len() < 2 {
        return Err(PeerError::InvalidArgument(format!(
            "{}: no audio after the first {skip:?}",
            path.display()
        )));
    }
    Ok(WavAnalysis {
        sample_rate,
        channels,
        duration,
        rms: rms(part),
        zero_crossing_frequency: zero_crossing_frequency(part, sample_rate),
        dominant_frequency: dominant_frequency(part, sample_rate, 50.0, 10.0),
    })
}

/// RMS level of `samples`.
#[must_use]
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// Frequency estimate from the number of sign changes.
#[must_use]
pub fn zero_crossing_frequency(samples: &[i16], sample_rate: u32) -> f64 {
    if samples.len() < 2 {
        return 0.0;
    }
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    crossings as f64 / 2.0 / (samples.len() as f64 / f64::from(sample_rate))
}

/// Power of `frequency` in `samples` (Goertzel algorithm), normalised by
/// the number of samples.
#[must_use]
pub fn goertzel_power(samples: &[i16], sample_rate: u32, frequency: f64) -> f64 {
    let coefficient = 2.0 * (2.0 * PI * frequency / f64::from(sample_rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    power / (samples.len().max(1) as f64).powi(2)
}

/// The frequency with the most power, scanning from `from` Hz to Nyquist in
/// `step` Hz. At most one second of `samples` is scanned.
#[must_use]
pub fn dominant_frequency(samples: &[i16], sample_rate: u32, from: f64, step: f64) -> f64 {
    let window = &samples[..samples.len().min(sample_rate as usize)];
    let nyquist = f64::from(sample_rate) / 2.0;
    let mut best = (0.0, f64::MIN);
    let mut frequency = from;
    while frequency < nyquist {
        let power = goertzel_power(window, sample_rate, frequency);
        if power > best.1 {
            best = (frequency, power);
        }
        frequency += step;
    }
    best.0
}

fn read_first_channel(path: &Path) -> Result<(u32, u16, Vec<i16>)> {
    let wav_error = |source| PeerError::Wav {
        path: path.to_path_buf(),
        source,
    };
    let reader = hound::WavReader::open(path).map_err(wav_error)?;
    let spec = reader.spec();
    if spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
        return Err(PeerError::InvalidArgument(format!(
            "{}: only 16-bit PCM is analysed",
            path.display()
        )));
    }
    let channels = usize::from(spec.channels.max(1));
    let mut samples: Vec<i16> = reader
        .into_samples::<i16>()
        .step_by(channels)
        .collect::<std::result::Result<_, _>>()
        .map_err(wav_error)?;
    if samples.is_empty() {
        // Header never finalised: the data runs to the end of the file.
        let bytes =
            fs::read(path).map_err(|e| PeerError::io(format!("reading {}", path.display()), e))?;
        let start = bytes
            .windows(4)
            .position(|w| w == b"data")
            .map_or(44, |p| p + 8);
        samples = bytes
            .get(start..)
            .unwrap_or_default()
            .chunks_exact(2 * channels)
            .map(|frame| i16::from_le_bytes([frame[0], frame[1]]))
            .collect();
    }
    Ok((spec.sample_rate, spec.channels, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_tone_measures_at_its_frequency() {
        let dir = tempfile::tempdir().unwrap();
        for (tone, hz) in [
            (Tone::narrowband(1000.0), 1000.0),
            (Tone::fullband(440.0), 440.0),
        ] {
            let path = dir.path().join("tone.wav");
            write_tone(
                &path,
                &Tone {
                    duration: Duration::from_secs(2),
                    ..tone
                },
            )
            .unwrap();
            let analysis = analyze_wav(&path, Duration::from_millis(500)).unwrap();
            assert_eq!(analysis.sample_rate, tone.sample_rate);
            assert_eq!(analysis.channels, tone.channels);
            assert!(analysis.is_tone(hz, 0.02), "{analysis:?}");
            assert!(
                (analysis.rms - 12_000.0 / 2f64.sqrt()).abs() < 100.0,
                "{analysis:?}"
            );
        }
    }

    #[test]
    fn silence_is_not_audible() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silence.wav");
        let tone = Tone {
            amplitude: 0,
            duration: Duration::from_secs(1),
            ..Tone::narrowband(1000.0)
        };
        write_tone(&path, &tone).unwrap();
        let analysis = analyze_wav(&path, Duration::ZERO).unwrap();
        assert!(!analysis.is_audible());
        assert!(!analysis.is_tone(1000.0, 0.05));
    }

    #[test]
    fn an_unfinalised_header_is_read_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.wav");
        let tone = Tone {
            duration: Duration::from_secs(1),
            ..Tone::narrowband(500.0)
        };
        write_tone(&path, &tone).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[40..44].copy_from_slice(&0u32.to_le_bytes()); // data chunk length
        fs::write(&path, bytes).unwrap();
        let analysis = analyze_wav(&path, Duration::from_millis(100)).unwrap();
        assert!(analysis.is_tone(500.0, 0.02), "{analysis:?}");
    }

    #[test]
    fn goertzel_picks_the_strongest_of_two_tones() {
        let rate = 8000;
        let samples: Vec<i16> = (0..rate)
            .map(|i| {
                let t = f64::from(i) / f64::from(rate);
                (8000.0 * (2.0 * PI * 697.0 * t).sin() + 3000.0 * (2.0 * PI * 1209.0 * t).sin())
                    as i16
            })
            .collect();
        let f = dominant_frequency(&samples, rate, 600.0, 1.0);
        assert!((f - 697.0).abs() <= 1.0, "{f}");
        assert!(
            goertzel_power(&samples, rate, 1209.0) > 10.0 * goertzel_power(&samples, rate, 941.0)
        );
    }
}
