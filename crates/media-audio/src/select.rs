//! Choosing a backend at run time, with a fallback when there is no sound card.

use std::path::PathBuf;

use crate::{
    AudioBackend, AudioFormat, CpalBackend, NullBackend, Recording, Tone, ToneBackend, WavBackend,
};

/// Which backend [`select_backend`] builds.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum BackendChoice {
    /// The default sound device when one can be opened, else the null
    /// device with a notice.
    #[default]
    Auto,
    /// A sound device, by name substring or the default; no fallback.
    Cpal {
        /// A substring of the device's name; `None` for the defaults.
        device: Option<String>,
    },
    /// Silence in, playback discarded.
    Null,
    /// WAV files: `source` played as capture (silence when `None`),
    /// playback recorded into `sink` (discarded when `None`).
    Wav {
        /// The file to capture from.
        source: Option<PathBuf>,
        /// The file to record playback into.
        sink: Option<PathBuf>,
        /// Loop the source instead of ending in silence.
        looped: bool,
    },
    /// A sine tone as capture, playback recorded into memory.
    Tone {
        /// Frequency in Hz.
        frequency: f64,
        /// Where playback goes; a fresh [`Recording`] when `None`.
        recording: Option<Recording>,
    },
}

/// The rate [`BackendChoice::Auto`] opens the sound device at to test it.
const PROBE_FORMAT: AudioFormat = AudioFormat::new(48_000);

/// Builds the backend for `choice`. For [`BackendChoice::Auto`], also a
/// notice for the user when no sound device is usable and the null device
/// stands in, saying why.
///
/// Never panics; explicit choices are not tested here, their errors come
/// from [`AudioBackend::open`].
#[must_use]
pub fn select_backend(choice: BackendChoice) -> (Box<dyn AudioBackend>, Option<String>) {
    match choice {
        BackendChoice::Auto => {
            let cpal = CpalBackend::new();
            match cpal.probe(PROBE_FORMAT) {
                Ok(_) => (Box::new(cpal), None),
                Err(error) => {
                    tracing::debug!(%error, "no usable sound device");
                    (
                        Box::new(NullBackend::new()),
                        Some(format!(
                            "no usable sound device ({error}); using the null audio device: \
                             capture is silence and playback is discarded"
                        )),
                    )
                }
            }
        }
        BackendChoice::Cpal { device } => (
            Box::new(device.map_or_else(CpalBackend::new, CpalBackend::with_device)),
            None,
        ),
        BackendChoice::Null => (Box::new(NullBackend::new()), None),
        BackendChoice::Wav {
            source,
            sink,
            looped,
        } => (Box::new(WavBackend::new(source, sink).looped(looped)), None),
        BackendChoice::Tone {
            frequency,
            recording,
        } => (
            Box::new(ToneBackend::with_recording(
                Tone::new(frequency),
                recording.unwrap_or_default(),
            )),
            None,
        ),
    }
}
