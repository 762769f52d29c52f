//! # media-audio
//!
//! Audio input and output for the media path, behind one object-safe
//! [`AudioBackend`] trait:
//!
//! | backend | capture | playback | clock |
//! |---|---|---|---|
//! | [`CpalBackend`] | a sound device | a sound device | the device |
//! | [`NullBackend`] | silence | discarded | system clock, own thread |
//! | [`WavBackend`] | a WAV file (once or looped) or silence | a WAV file or discarded | system clock, own thread |
//! | [`ToneBackend`] | a sine tone | kept in memory ([`Recording`]) | system clock, own thread |
//! | [`PacedBackend`] | any [`CaptureSource`] | any [`PlaybackSink`] | system clock, own thread |
//!
//! [`select_backend`] picks one at run time; [`BackendChoice::Auto`] opens
//! the default sound device as a test and falls back to the null device
//! with a notice that says why (a machine without a sound card is normal:
//! servers, CI, containers). On Linux, ALSA itself prints diagnostics on
//! stderr while looking for a card that is not there.
//!
//! ## The rings
//!
//! Opening a backend starts it and returns an [`AudioDevice`]: the media
//! side's ends of two lock-free single-producer single-consumer rings
//! (`rtrb`), mono i16 at the device's real rate ([`AudioDevice::format`],
//! which may differ from the preferred one), plus an [`AudioGuard`] that
//! keeps the device running. The rings hold [`RING_DURATION`]; the capture
//! ring fills while nobody reads, so a reader that starts late should skip
//! what is stale. When the capture ring is full new samples are dropped;
//! when the playback ring is empty silence is played; both are counted in
//! [`AudioStats`].
//!
//! ## Real time
//!
//! The device callback (cpal) and the pacing loop (the other backends)
//! never allocate, lock or block once started: conversions iterate over the
//! callback's slice and the ring's chunks, paced periods work in a buffer
//! allocated before the thread starts, counters are relaxed atomics, events
//! go through a ring ([`AudioGuard::poll_event`]), a recording is a fixed
//! buffer of atomics, and a WAV sink is written by a separate thread fed by
//! another ring. `tests/realtime.rs` runs the paced backends under a
//! counting global allocator and asserts zero allocations after start.
//!
//! Paced backends wake at `start + k × period` (20 ms by default), so
//! timing does not drift; a stall longer than the ring is skipped and
//! counted ([`AudioStats::periods_skipped`]).
//!
//! ## Errors and device loss
//!
//! Opening fails with an [`AudioError`] (no device, no common rate, a bad
//! WAV file). Once running, a vanished device is an
//! [`AudioEvent::DeviceLost`] and [`AudioGuard::is_device_lost`], never a
//! panic; open the backend again to recover. A platform audio API this
//! crate does not wrap plugs in through [`AudioDevice::external`], whose
//! [`DeviceReporter`] reports the same events.
//!
//! Dropping the guard (or [`AudioGuard::stop`], which also reports errors)
//! stops threads and streams, each wait bounded; a WAV sink is finalized.
//!
//! ## Example
//!
//! ```
//! use media_audio::{AudioBackend, AudioFormat, ToneBackend, analysis};
//!
//! # fn main() -> Result<(), media_audio::AudioError> {
//! let mut backend = ToneBackend::new(1000.0);
//! let device = backend.open(AudioFormat::new(8000))?;
//! let (mut port, guard) = device.into_parts();
//! // The media side: one 20 ms frame per tick.
//! let mut heard = Vec::new();
//! let mut frame = [0i16; 160];
//! for _ in 0..50 {
//!     std::thread::sleep(std::time::Duration::from_millis(20));
//!     let (got, _) = port.capture.pop_partial_slice(&mut frame);
//!     heard.extend_from_slice(got);
//!     let _ = port.playback.push_partial_slice(&frame);
//! }
//! drop(guard); // stops the device
//! let frequency = analysis::dominant_frequency(&heard, port.sample_rate).unwrap();
//! assert!((frequency - 1000.0).abs() < 10.0);
//! # Ok(())
//! # }
//! ```

#[cfg(test)]
mod alloc_count;
pub mod analysis;
mod cpal_backend;
mod device;
mod error;
mod guard;
mod paced;
mod recording;
mod select;
mod source;

pub use cpal_backend::{CpalBackend, DeviceInfo};
pub use device::{
    AudioBackend, AudioDevice, AudioFormat, AudioPort, Direction, ExternalDeviceEnds, RING_DURATION,
};
pub use error::AudioError;
pub use guard::{AudioEvent, AudioGuard, AudioStats, DeviceReporter};
pub use paced::{
    CaptureSource, DEFAULT_PERIOD, NullBackend, PacedBackend, PlaybackSink, ToneBackend, WavBackend,
};
pub use recording::Recording;
pub use select::{BackendChoice, select_backend};
pub use source::{Tone, WavSource};

/// Re-exported so callers name the ring types without their own dependency.
pub use rtrb;
