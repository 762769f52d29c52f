//! What can go wrong opening or stopping an audio device.

use std::{path::PathBuf, time::Duration};

use crate::Direction;

/// Why an audio device could not be opened, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The requested format cannot be served.
    #[error("invalid audio format: sample rate {sample_rate} Hz (expected 1000..=384000)")]
    InvalidFormat {
        /// The rate that was asked for.
        sample_rate: u32,
    },
    /// A tone outside what the sample rate can carry.
    #[error("invalid tone: {frequency} Hz at {sample_rate} Hz sampling (must be above 0 and below {})", sample_rate / 2)]
    InvalidTone {
        /// The tone's frequency.
        frequency: f64,
        /// The device's sample rate.
        sample_rate: u32,
    },
    /// No device for a direction: none by default, or none whose name contains `wanted`.
    #[error("no {direction} sound device{}", match wanted { Some(w) => format!(" whose name contains {w:?}"), None => String::new() })]
    NoDevice {
        /// Capture or playback.
        direction: Direction,
        /// The name substring that was asked for, if any.
        wanted: Option<String>,
    },
    /// The sound system could not list its devices.
    #[error("listing sound devices: {source}")]
    Host {
        /// cpal's error.
        #[source]
        source: cpal::Error,
    },
    /// A device refused an operation.
    #[error("{direction} device {device:?}: {operation}: {source}")]
    Device {
        /// Capture or playback.
        direction: Direction,
        /// The device's name.
        device: String,
        /// What was being done.
        operation: &'static str,
        /// cpal's error.
        #[source]
        source: cpal::Error,
    },
    /// A device offers no configuration with a sample format this crate converts.
    #[error("{direction} device {device:?} offers no usable configuration (integer or float PCM)")]
    NoUsableConfig {
        /// Capture or playback.
        direction: Direction,
        /// The device's name.
        device: String,
    },
    /// The capture and playback devices share no sample rate.
    #[error("capture device {input:?} and playback device {output:?} share no sample rate")]
    NoCommonRate {
        /// The capture device's name.
        input: String,
        /// The playback device's name.
        output: String,
    },
    /// A WAV file could not be read or written.
    #[error("WAV file {}: {source}", path.display())]
    Wav {
        /// The file.
        path: PathBuf,
        /// hound's error.
        #[source]
        source: hound::Error,
    },
    /// A WAV file that can be read but not used as a source.
    #[error("WAV file {}: {reason}", path.display())]
    WavContent {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A worker thread could not be started.
    #[error("starting the {thread} thread: {source}")]
    Spawn {
        /// Which thread.
        thread: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A worker thread did not finish in time on stop; it was left to finish alone.
    #[error("the {thread} thread did not stop within {timeout:?}")]
    StopTimeout {
        /// Which thread.
        thread: &'static str,
        /// How long stop waited.
        timeout: Duration,
    },
    /// A worker thread panicked.
    #[error("the {thread} thread panicked")]
    ThreadPanicked {
        /// Which thread.
        thread: &'static str,
    },
}
