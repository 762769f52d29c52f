//! Played audio kept in memory, readable while the device runs.

use std::{
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI16, AtomicU64, Ordering, fence},
    },
    time::Duration,
};

/// A shared handle on what a paced backend played: the latest
/// `max_duration` of it, mono i16.
///
/// Clone it before handing it to a backend; read it from any thread while
/// the device runs or after it stopped. Opening the backend again starts a
/// new recording.
#[derive(Clone)]
pub struct Recording {
    shared: Arc<Shared>,
}

struct Shared {
    max_duration: Duration,
    buffer: Mutex<Option<Arc<RecordBuffer>>>,
}

impl Recording {
    /// How much a recording keeps by default.
    pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(30);

    /// A recording that keeps the latest `max_duration` (at least one
    /// sample).
    #[must_use]
    pub fn new(max_duration: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_duration,
                buffer: Mutex::new(None),
            }),
        }
    }

    /// How much it keeps.
    #[must_use]
    pub fn max_duration(&self) -> Duration {
        self.shared.max_duration
    }

    /// The sample rate, once a device was opened.
    #[must_use]
    pub fn sample_rate(&self) -> Option<u32> {
        self.buffer().map(|b| b.sample_rate)
    }

    /// Samples played since the device was opened, including those no
    /// longer kept.
    #[must_use]
    pub fn recorded_samples(&self) -> u64 {
        self.buffer()
            .map_or(0, |b| b.written.load(Ordering::Acquire))
    }

    /// Everything kept, oldest first.
    #[must_use]
    pub fn samples(&self) -> Vec<i16> {
        self.buffer()
            .map_or_else(Vec::new, |b| b.latest(usize::MAX))
    }

    /// The latest `duration` kept, oldest first.
    #[must_use]
    pub fn latest(&self, duration: Duration) -> Vec<i16> {
        self.buffer().map_or_else(Vec::new, |b| {
            let wanted = duration.as_secs_f64() * f64::from(b.sample_rate);
            b.latest(wanted as usize)
        })
    }

    /// Starts a new recording at `sample_rate`; the returned buffer is the
    /// audio thread's only handle on it.
    pub(crate) fn start(&self, sample_rate: u32) -> Arc<RecordBuffer> {
        let capacity = (self.shared.max_duration.as_secs_f64() * f64::from(sample_rate)) as usize;
        let buffer = Arc::new(RecordBuffer::new(sample_rate, capacity.max(1)));
        *self
            .shared
            .buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&buffer));
        buffer
    }

    fn buffer(&self) -> Option<Arc<RecordBuffer>> {
        self.shared
            .buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Default for Recording {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_DURATION)
    }
}

impl fmt::Debug for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recording")
            .field("max_duration", &self.shared.max_duration)
            .field("sample_rate", &self.sample_rate())
            .field("recorded_samples", &self.recorded_samples())
            .finish()
    }
}

/// A fixed ring of samples with one writer (the audio thread) and any
/// number of readers, lock-free: the writer announces how far it will
/// write before writing (`claimed`) and publishes after (`written`), so a
/// reader can tell which of the samples it copied were overwritten meanwhile.
pub(crate) struct RecordBuffer {
    sample_rate: u32,
    slots: Box<[AtomicI16]>,
    claimed: AtomicU64,
    written: AtomicU64,
}

impl RecordBuffer {
    fn new(sample_rate: u32, capacity: usize) -> Self {
        Self {
            sample_rate,
            slots: (0..capacity).map(|_| AtomicI16::new(0)).collect(),
            claimed: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Appends `samples`. One writer only; never allocates or blocks.
    pub(crate) fn write(&self, samples: &[i16]) {
        let capacity = self.slots.len();
        let start = self.written.load(Ordering::Relaxed);
        let end = start + samples.len() as u64;
        // Only the last `capacity` samples of a long write survive anyway.
        let skip = samples.len().saturating_sub(capacity);
        self.claimed.store(end, Ordering::Relaxed);
        fence(Ordering::Release);
        for (index, &sample) in (start + skip as u64..).zip(&samples[skip..]) {
            self.slots[(index % capacity as u64) as usize].store(sample, Ordering::Relaxed);
        }
        self.written.store(end, Ordering::Release);
    }

    /// Up to `max` of the latest samples, oldest first.
    fn latest(&self, max: usize) -> Vec<i16> {
        let capacity = self.slots.len() as u64;
        let end = self.written.load(Ordering::Acquire);
        let len = end.min(capacity).min(max as u64);
        let start = end - len;
        let mut out: Vec<i16> = (start..end)
            .map(|i| self.slots[(i % capacity) as usize].load(Ordering::Relaxed))
            .collect();
        fence(Ordering::Acquire);
        // Samples below `claimed - capacity` may have been overwritten while
        // they were copied.
        let valid_from = self
            .claimed
            .load(Ordering::Relaxed)
            .saturating_sub(capacity);
        if valid_from > start {
            let stale = usize::try_from(valid_from - start).map_or(out.len(), |s| s.min(out.len()));
            out.drain(..stale);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_samples_up_to_its_capacity() {
        let recording = Recording::new(Duration::from_millis(1)); // 8 samples at 8 kHz
        assert_eq!(recording.samples(), Vec::<i16>::new());
        let buffer = recording.start(8000);
        buffer.write(&[1, 2, 3]);
        assert_eq!(recording.samples(), vec![1, 2, 3]);
        buffer.write(&[4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(recording.samples(), vec![3, 4, 5, 6, 7, 8, 9, 10]);
        buffer.write(&(100..120).collect::<Vec<_>>());
        assert_eq!(recording.samples(), (112..120).collect::<Vec<_>>());
        assert_eq!(recording.recorded_samples(), 30);
        assert_eq!(recording.latest(Duration::from_micros(250)), vec![118, 119]);
        assert_eq!(recording.sample_rate(), Some(8000));
    }

    #[test]
    fn a_reader_never_sees_a_torn_sequence_while_the_writer_runs() {
        let recording = Recording::new(Duration::from_millis(8)); // 64 samples at 8 kHz
        let buffer = recording.start(8000);
        let writer = std::thread::spawn(move || {
            let mut next = 0i16;
            for _ in 0..20_000 {
                let block: Vec<i16> = (0..7).map(|i| next.wrapping_add(i)).collect();
                buffer.write(&block);
                next = next.wrapping_add(7);
            }
        });
        let mut reads = 0;
        while !writer.is_finished() && reads < 100_000 {
            let seen = recording.samples();
            for pair in seen.windows(2) {
                assert_eq!(pair[1], pair[0].wrapping_add(1), "torn read: {seen:?}");
            }
            reads += 1;
        }
        writer.join().unwrap();
    }
}
