//! The guard that keeps a device running, its events and statistics.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use rtrb::{Consumer, Producer, RingBuffer};

use crate::{AudioError, AudioFormat, Direction};

/// Something that happened to a running device, reported without blocking
/// the audio thread; read with [`AudioGuard::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioEvent {
    /// The device went away (unplugged, sound server gone) or its stream
    /// must be rebuilt. Nothing more flows in this direction; open the
    /// backend again to recover.
    DeviceLost {
        /// Which stream.
        direction: Direction,
    },
    /// A buffer overrun or underrun: a short gap, the stream continues.
    Xrun {
        /// Which stream.
        direction: Direction,
    },
    /// The system moved the stream to another device; it continues there.
    Rerouted {
        /// Which stream.
        direction: Direction,
    },
    /// Any other stream error; the stream continues.
    StreamError {
        /// Which stream.
        direction: Direction,
    },
    /// The capture source file reached its end and silence follows.
    SourceEnded,
    /// The playback sink file could not be written; [`AudioGuard::stop`]
    /// returns the error.
    SinkFailed,
}

/// Counters since the device was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AudioStats {
    /// Samples put into the capture ring.
    pub capture_samples: u64,
    /// Captured samples dropped because the capture ring was full (the media
    /// side did not read in time).
    pub capture_dropped: u64,
    /// Samples taken from the playback ring and played.
    pub playback_samples: u64,
    /// Samples of silence played because the playback ring was empty.
    pub playback_silence: u64,
    /// Periods a paced backend skipped after its thread stalled for longer
    /// than the ring holds.
    pub periods_skipped: u64,
    /// Played samples a file sink could not keep up with and dropped.
    pub sink_dropped: u64,
}

/// Counters and flags shared between the audio thread and the guard; only
/// relaxed atomic operations on the audio side.
#[derive(Debug, Default)]
pub(crate) struct Status {
    pub(crate) device_lost: AtomicBool,
    pub(crate) capture_samples: AtomicU64,
    pub(crate) capture_dropped: AtomicU64,
    pub(crate) playback_samples: AtomicU64,
    pub(crate) playback_silence: AtomicU64,
    pub(crate) periods_skipped: AtomicU64,
    pub(crate) sink_dropped: AtomicU64,
}

impl Status {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> AudioStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AudioStats {
            capture_samples: load(&self.capture_samples),
            capture_dropped: load(&self.capture_dropped),
            playback_samples: load(&self.playback_samples),
            playback_silence: load(&self.playback_silence),
            periods_skipped: load(&self.periods_skipped),
            sink_dropped: load(&self.sink_dropped),
        }
    }
}

/// Room for events between two polls; when full, newer events are dropped
/// (the status flag and counters still tell).
const EVENT_CAPACITY: usize = 32;

pub(crate) fn event_ring() -> (Producer<AudioEvent>, Consumer<AudioEvent>) {
    RingBuffer::new(EVENT_CAPACITY)
}

/// Reports `event` without blocking; dropped when the owner has not polled.
pub(crate) fn emit(events: &mut Producer<AudioEvent>, event: AudioEvent) {
    // A full ring means the owner is not polling; the flags still tell.
    let _ = events.push(event);
}

/// Reports what happens to a device that code outside this crate runs (see
/// [`AudioDevice::external`](crate::AudioDevice::external)). It never
/// blocks, locks or allocates, so a platform audio callback may call it.
pub struct DeviceReporter {
    events: Producer<AudioEvent>,
    status: Arc<Status>,
}

impl fmt::Debug for DeviceReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceReporter").finish_non_exhaustive()
    }
}

impl DeviceReporter {
    pub(crate) fn new(events: Producer<AudioEvent>, status: Arc<Status>) -> Self {
        Self { events, status }
    }

    /// Reports `event` to the guard's owner; [`AudioEvent::DeviceLost`]
    /// also sets [`AudioGuard::is_device_lost`], which stays set when the
    /// owner has not polled and the event ring is full.
    pub fn report(&mut self, event: AudioEvent) {
        if matches!(event, AudioEvent::DeviceLost { .. }) {
            self.status.device_lost.store(true, Ordering::Relaxed);
        }
        emit(&mut self.events, event);
    }
}

/// Stopping a device run outside this crate: the integrator's own code.
pub(crate) struct StopHook(pub(crate) Box<dyn FnOnce() + Send>);

impl Shutdown for StopHook {
    fn shutdown(self: Box<Self>) -> Result<(), AudioError> {
        (self.0)();
        Ok(())
    }
}

/// A part of a running device that can be stopped.
pub(crate) trait Shutdown: Send {
    /// Stops it; bounded in time.
    fn shutdown(self: Box<Self>) -> Result<(), AudioError>;
}

/// Keeps a device running; dropping it (or [`AudioGuard::stop`]) stops the
/// device's threads or streams within a bounded time.
pub struct AudioGuard {
    backend: &'static str,
    format: AudioFormat,
    status: Arc<Status>,
    events: Vec<Consumer<AudioEvent>>,
    /// Stopped in order: producers of audio before the sinks they feed.
    workers: Vec<Box<dyn Shutdown>>,
}

impl fmt::Debug for AudioGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioGuard")
            .field("backend", &self.backend)
            .field("format", &self.format)
            .field("stats", &self.status.snapshot())
            .field("running", &!self.workers.is_empty())
            .finish_non_exhaustive()
    }
}

impl AudioGuard {
    pub(crate) fn new(
        backend: &'static str,
        format: AudioFormat,
        status: Arc<Status>,
        events: Vec<Consumer<AudioEvent>>,
        workers: Vec<Box<dyn Shutdown>>,
    ) -> Self {
        Self {
            backend,
            format,
            status,
            events,
            workers,
        }
    }

    /// The backend's name.
    #[must_use]
    pub fn backend(&self) -> &str {
        self.backend
    }

    /// The format the device runs at.
    #[must_use]
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// The next event, if any. Never blocks.
    pub fn poll_event(&mut self) -> Option<AudioEvent> {
        self.events.iter_mut().find_map(|events| events.pop().ok())
    }

    /// Whether a stream reported that its device went away.
    #[must_use]
    pub fn is_device_lost(&self) -> bool {
        self.status.device_lost.load(Ordering::Relaxed)
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> AudioStats {
        self.status.snapshot()
    }

    /// Stops the device and reports what went wrong doing so: a sink file
    /// that could not be finalized, a thread that did not stop in time.
    ///
    /// # Errors
    ///
    /// The first [`AudioError`] met; every part is stopped regardless.
    pub fn stop(mut self) -> Result<(), AudioError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), AudioError> {
        let mut first = Ok(());
        for worker in self.workers.drain(..) {
            if let Err(error) = worker.shutdown()
                && first.is_ok()
            {
                first = Err(error);
            }
        }
        first
    }
}

impl Drop for AudioGuard {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(backend = self.backend, %error, "audio device did not stop cleanly");
        }
    }
}

/// A thread that runs until its stop flag is set, then returns its result.
pub(crate) struct StoppableThread {
    name: &'static str,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<(), AudioError>>,
    timeout: Duration,
}

impl StoppableThread {
    /// Spawns `body` with the flag it must watch; `timeout` bounds the wait
    /// on stop.
    pub(crate) fn spawn<F>(
        name: &'static str,
        timeout: Duration,
        body: F,
    ) -> Result<Self, AudioError>
    where
        F: FnOnce(Arc<AtomicBool>) -> Result<(), AudioError> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || body(flag))
            .map_err(|source| AudioError::Spawn {
                thread: name,
                source,
            })?;
        Ok(Self {
            name,
            stop,
            handle,
            timeout,
        })
    }
}

impl Shutdown for StoppableThread {
    fn shutdown(self: Box<Self>) -> Result<(), AudioError> {
        self.stop.store(true, Ordering::Release);
        self.handle.thread().unpark();
        join_within(self.handle, self.name, self.timeout)?
    }
}

/// Joins `handle` if it finishes within `timeout`; otherwise leaves it
/// running detached and says so.
pub(crate) fn join_within<T>(
    handle: JoinHandle<T>,
    thread: &'static str,
    timeout: Duration,
) -> Result<T, AudioError> {
    let deadline = Instant::now() + timeout;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return Err(AudioError::StopTimeout { thread, timeout });
        }
        thread::sleep(Duration::from_millis(1));
    }
    handle
        .join()
        .map_err(|_| AudioError::ThreadPanicked { thread })
}
