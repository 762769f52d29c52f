//! The backend trait and what opening a device hands back.

use std::{fmt, sync::Arc, time::Duration};

use rtrb::{Consumer, Producer, RingBuffer};

use crate::guard::{DeviceReporter, Status, StopHook, event_ring};
use crate::{AudioError, AudioGuard};

/// How much audio each ring holds: enough for a device that asks for 100 ms
/// at a time while the media side adds 20 ms per tick.
pub const RING_DURATION: Duration = Duration::from_millis(200);

/// The format on the ring side: mono, signed 16-bit, at `sample_rate`.
///
/// Backends convert channel counts and sample formats internally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// Samples per second.
    pub sample_rate: u32,
}

impl AudioFormat {
    /// Lowest sample rate a backend accepts.
    pub const MIN_SAMPLE_RATE: u32 = 1000;
    /// Highest sample rate a backend accepts.
    pub const MAX_SAMPLE_RATE: u32 = 384_000;

    /// Mono i16 at `sample_rate`.
    #[must_use]
    pub const fn new(sample_rate: u32) -> Self {
        Self { sample_rate }
    }

    /// Samples in `duration` at this rate, rounded down.
    #[must_use]
    pub fn samples_in(&self, duration: Duration) -> usize {
        usize::try_from(duration.as_nanos() * u128::from(self.sample_rate) / 1_000_000_000)
            .unwrap_or(usize::MAX)
    }

    /// The ring capacity for this rate ([`RING_DURATION`]).
    #[must_use]
    pub fn ring_capacity(&self) -> usize {
        self.samples_in(RING_DURATION).max(1)
    }

    pub(crate) fn validate(self) -> Result<Self, AudioError> {
        if (Self::MIN_SAMPLE_RATE..=Self::MAX_SAMPLE_RATE).contains(&self.sample_rate) {
            Ok(self)
        } else {
            Err(AudioError::InvalidFormat {
                sample_rate: self.sample_rate,
            })
        }
    }
}

/// Capture (microphone side) or playback (speaker side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Audio coming in from a device or source.
    Capture,
    /// Audio going out to a device or sink.
    Playback,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Capture => "capture",
            Self::Playback => "playback",
        })
    }
}

/// A source and sink of audio that can be opened into an [`AudioDevice`].
///
/// Object safe, so an application can pick one at run time
/// ([`select_backend`](crate::select_backend)).
pub trait AudioBackend: Send + fmt::Debug {
    /// A short name: `"cpal"`, `"null"`, `"wav"`, `"tone"`.
    fn name(&self) -> &str;

    /// Starts capture and playback, as close to `preferred` as the backend
    /// can; the device's real format is in [`AudioDevice::format`].
    ///
    /// # Errors
    ///
    /// [`AudioError`]: no device, no usable configuration, an unreadable
    /// file, a thread that could not start.
    fn open(&mut self, preferred: AudioFormat) -> Result<AudioDevice, AudioError>;
}

/// A running device: the media side's ends of the two rings, and the guard
/// that keeps the device running.
///
/// Dropping it stops the device. To hand the rings to one task and keep the
/// guard elsewhere, use [`AudioDevice::into_parts`].
#[derive(Debug)]
pub struct AudioDevice {
    /// Captured audio, mono i16 at `format.sample_rate`.
    pub capture: Consumer<i16>,
    /// Audio to play, mono i16 at `format.sample_rate`.
    pub playback: Producer<i16>,
    /// The format the device really runs at.
    pub format: AudioFormat,
    guard: AudioGuard,
}

impl AudioDevice {
    pub(crate) fn new(
        capture: Consumer<i16>,
        playback: Producer<i16>,
        format: AudioFormat,
        guard: AudioGuard,
    ) -> Self {
        Self {
            capture,
            playback,
            format,
            guard,
        }
    }

    /// A device that code outside this crate runs: a platform audio API
    /// this crate does not wrap, or a test double. The returned
    /// [`ExternalDeviceEnds`] are the device's side of the two rings, sized
    /// for `format`, and a [`DeviceReporter`] for its events; `stop` runs
    /// once, when the guard is stopped or dropped.
    ///
    /// ```
    /// use media_audio::{AudioDevice, AudioEvent, AudioFormat, Direction};
    ///
    /// let (device, mut ends) = AudioDevice::external("platform", AudioFormat::new(16_000), || {});
    /// // The platform's capture callback:
    /// let _ = ends.capture.push_partial_slice(&[0i16; 320]);
    /// // The headset was unplugged:
    /// ends.reporter.report(AudioEvent::DeviceLost { direction: Direction::Playback });
    /// let (port, mut guard) = device.into_parts();
    /// assert_eq!(port.capture.slots(), 320);
    /// assert!(guard.is_device_lost());
    /// assert!(matches!(guard.poll_event(), Some(AudioEvent::DeviceLost { .. })));
    /// ```
    pub fn external(
        backend: &'static str,
        format: AudioFormat,
        stop: impl FnOnce() + Send + 'static,
    ) -> (AudioDevice, ExternalDeviceEnds) {
        let rings = Rings::new(format);
        let status = Arc::new(Status::default());
        let (producer, consumer) = event_ring();
        let guard = AudioGuard::new(
            backend,
            format,
            Arc::clone(&status),
            vec![consumer],
            vec![Box::new(StopHook(Box::new(stop)))],
        );
        let device = AudioDevice::new(rings.capture_out, rings.playback_in, format, guard);
        let ends = ExternalDeviceEnds {
            capture: rings.capture_in,
            playback: rings.playback_out,
            reporter: DeviceReporter::new(producer, status),
        };
        (device, ends)
    }

    /// The guard: events, status and statistics.
    #[must_use]
    pub fn guard(&self) -> &AudioGuard {
        &self.guard
    }

    /// The guard, to poll events.
    pub fn guard_mut(&mut self) -> &mut AudioGuard {
        &mut self.guard
    }

    /// Splits the ring ends from the guard. The device runs until the guard
    /// is dropped or stopped.
    #[must_use]
    pub fn into_parts(self) -> (AudioPort, AudioGuard) {
        let port = AudioPort {
            capture: self.capture,
            playback: self.playback,
            sample_rate: self.format.sample_rate,
        };
        (port, self.guard)
    }
}

/// The device's side of an [`AudioDevice::external`]: what it captured
/// goes into `capture`, what it plays comes from `playback`, mono i16 at
/// the device's rate.
#[derive(Debug)]
pub struct ExternalDeviceEnds {
    /// Where the device puts what it captured.
    pub capture: Producer<i16>,
    /// Where the device takes what it plays.
    pub playback: Consumer<i16>,
    /// Where the device reports loss, xruns and errors.
    pub reporter: DeviceReporter,
}

/// The media side's ends of a device's rings.
#[derive(Debug)]
pub struct AudioPort {
    /// Captured audio, mono i16 at `sample_rate`.
    pub capture: Consumer<i16>,
    /// Audio to play, mono i16 at `sample_rate`.
    pub playback: Producer<i16>,
    /// Samples per second on both rings.
    pub sample_rate: u32,
}

/// Both rings for a format: the device's ends and the media side's ends.
pub(crate) struct Rings {
    pub(crate) capture_in: Producer<i16>,
    pub(crate) capture_out: Consumer<i16>,
    pub(crate) playback_in: Producer<i16>,
    pub(crate) playback_out: Consumer<i16>,
}

impl Rings {
    pub(crate) fn new(format: AudioFormat) -> Self {
        let (capture_in, capture_out) = RingBuffer::new(format.ring_capacity());
        let (playback_in, playback_out) = RingBuffer::new(format.ring_capacity());
        Self {
            capture_in,
            capture_out,
            playback_in,
            playback_out,
        }
    }
}
