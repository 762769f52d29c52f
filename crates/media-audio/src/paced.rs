//! Backends without a sound card, paced by the system clock on their own
//! thread: null, WAV file, tone.
//!
//! Every period (20 ms by default) the thread produces one period of
//! capture and consumes one period of playback, like a sound card would.
//! Deadlines are counted from the start (`start + k * period`), so wake-up
//! jitter does not accumulate into drift; a late thread catches up, and one
//! that stalled longer than the ring holds skips ahead and counts it.

use std::{
    fs::File,
    io::BufWriter,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use rtrb::{Consumer, Producer, RingBuffer};

use crate::{
    AudioBackend, AudioDevice, AudioError, AudioEvent, AudioFormat, AudioGuard, RING_DURATION,
    Recording, Tone, WavSource,
    device::Rings,
    guard::{Shutdown, Status, StoppableThread, emit, event_ring},
    recording::RecordBuffer,
    source::{SourceState, load_wav},
};

/// The default period of a paced backend.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(20);

/// How long stop waits for the pacing thread (it wakes at once when told).
const PACED_STOP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long stop waits for a WAV sink to be written out and finalized.
const WRITER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the WAV writer drains its ring.
const WRITER_WAKE: Duration = Duration::from_millis(100);
/// How often the WAV writer rewrites the header, so a crash loses at most this much.
const WRITER_FLUSH: Duration = Duration::from_secs(1);
/// What the WAV writer's ring holds: many wake-ups' worth.
const WRITER_RING: Duration = Duration::from_secs(2);

/// What a paced backend captures.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CaptureSource {
    /// Silence.
    Silence,
    /// A WAV file; the device runs at the file's sample rate.
    Wav(WavSource),
    /// A sine tone.
    Tone(Tone),
}

/// Where a paced backend's playback goes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PlaybackSink {
    /// Nowhere.
    Discard,
    /// A mono 16-bit WAV file at the device rate, written by a background
    /// thread and finalized when the device stops.
    Wav(PathBuf),
    /// Memory, behind a shared handle.
    Record(Recording),
}

/// A backend paced by the system clock on its own thread, with any capture
/// source and playback sink. [`NullBackend`], [`WavBackend`] and
/// [`ToneBackend`] are the usual combinations.
#[derive(Debug, Clone)]
pub struct PacedBackend {
    name: &'static str,
    source: CaptureSource,
    sink: PlaybackSink,
    period: Duration,
}

impl PacedBackend {
    /// Captures `source` and plays into `sink`, every [`DEFAULT_PERIOD`].
    #[must_use]
    pub fn new(source: CaptureSource, sink: PlaybackSink) -> Self {
        Self {
            name: "paced",
            source,
            sink,
            period: DEFAULT_PERIOD,
        }
    }

    /// Another period (clamped to 1..=100 ms).
    #[must_use]
    pub fn with_period(mut self, period: Duration) -> Self {
        self.period = period.clamp(Duration::from_millis(1), Duration::from_millis(100));
        self
    }

    /// The capture source.
    #[must_use]
    pub fn source(&self) -> &CaptureSource {
        &self.source
    }

    /// The playback sink.
    #[must_use]
    pub fn sink(&self) -> &PlaybackSink {
        &self.sink
    }

    fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
}

impl AudioBackend for PacedBackend {
    fn name(&self) -> &str {
        self.name
    }

    fn open(&mut self, preferred: AudioFormat) -> Result<AudioDevice, AudioError> {
        open_paced(self, preferred)
    }
}

/// Silent capture, discarded playback, at the preferred rate.
#[derive(Debug, Clone)]
pub struct NullBackend(PacedBackend);

impl NullBackend {
    /// A null device.
    #[must_use]
    pub fn new() -> Self {
        Self(PacedBackend::new(CaptureSource::Silence, PlaybackSink::Discard).named("null"))
    }
}

impl Default for NullBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl AudioBackend for NullBackend {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn open(&mut self, preferred: AudioFormat) -> Result<AudioDevice, AudioError> {
        self.0.open(preferred)
    }
}

/// A WAV file as capture and a WAV file recording playback; either side
/// optional (silence, discard). With a source, the device runs at the
/// source file's sample rate; otherwise at the preferred rate. Each open
/// creates the sink file anew (mono 16-bit), and stopping the device
/// finalizes it; its header is also brought up to date every second.
#[derive(Debug, Clone)]
pub struct WavBackend(PacedBackend);

impl WavBackend {
    /// Plays `source` (once, then silence) and records playback into `sink`.
    #[must_use]
    pub fn new(source: Option<PathBuf>, sink: Option<PathBuf>) -> Self {
        let source = source.map_or(CaptureSource::Silence, |path| {
            CaptureSource::Wav(WavSource::new(path))
        });
        let sink = sink.map_or(PlaybackSink::Discard, PlaybackSink::Wav);
        Self(PacedBackend::new(source, sink).named("wav"))
    }

    /// Loops the source file instead of ending in silence.
    #[must_use]
    pub fn looped(mut self, looped: bool) -> Self {
        if let CaptureSource::Wav(source) = &mut self.0.source {
            source.looped = looped;
        }
        self
    }
}

impl AudioBackend for WavBackend {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn open(&mut self, preferred: AudioFormat) -> Result<AudioDevice, AudioError> {
        self.0.open(preferred)
    }
}

/// A sine tone as capture; playback recorded into memory
/// ([`ToneBackend::recording`]).
#[derive(Debug, Clone)]
pub struct ToneBackend {
    inner: PacedBackend,
    recording: Recording,
}

impl ToneBackend {
    /// Captures a tone at `frequency` Hz (default amplitude) and records
    /// the latest [`Recording::DEFAULT_MAX_DURATION`] of playback.
    #[must_use]
    pub fn new(frequency: f64) -> Self {
        Self::with_recording(Tone::new(frequency), Recording::default())
    }

    /// Captures `tone` and records playback into `recording`.
    #[must_use]
    pub fn with_recording(tone: Tone, recording: Recording) -> Self {
        let inner = PacedBackend::new(
            CaptureSource::Tone(tone),
            PlaybackSink::Record(recording.clone()),
        )
        .named("tone");
        Self { inner, recording }
    }

    /// The handle on what was played.
    #[must_use]
    pub fn recording(&self) -> Recording {
        self.recording.clone()
    }
}

impl AudioBackend for ToneBackend {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn open(&mut self, preferred: AudioFormat) -> Result<AudioDevice, AudioError> {
        self.inner.open(preferred)
    }
}

fn open_paced(backend: &PacedBackend, preferred: AudioFormat) -> Result<AudioDevice, AudioError> {
    let preferred = preferred.validate()?;
    let (source, format) = match &backend.source {
        CaptureSource::Silence => (SourceState::Silence, preferred),
        CaptureSource::Wav(wav) => {
            let loaded = load_wav(&wav.path)?;
            (
                SourceState::samples(loaded.samples, wav.looped),
                AudioFormat::new(loaded.sample_rate),
            )
        }
        CaptureSource::Tone(tone) => (SourceState::tone(*tone, preferred.sample_rate)?, preferred),
    };
    let status = Arc::new(Status::default());
    let (paced_events, paced_events_out) = event_ring();
    let mut events = vec![paced_events_out];
    let mut writer = None;
    let sink = match &backend.sink {
        PlaybackSink::Discard => SinkState::Discard,
        PlaybackSink::Record(recording) => SinkState::Record(recording.start(format.sample_rate)),
        PlaybackSink::Wav(path) => {
            let (spill, spill_out) = RingBuffer::new(format.samples_in(WRITER_RING).max(1));
            let (writer_events, writer_events_out) = event_ring();
            events.push(writer_events_out);
            writer = Some(spawn_wav_writer(
                path.clone(),
                format,
                spill_out,
                writer_events,
            )?);
            SinkState::Spill(spill)
        }
    };
    let rings = Rings::new(format);
    let mut paced = PacedLoop::new(
        format,
        backend.period,
        source,
        sink,
        rings.capture_in,
        rings.playback_out,
        Arc::clone(&status),
        paced_events,
    );
    let period = backend.period;
    let rate = format.sample_rate;
    let pacer = StoppableThread::spawn("media-audio-paced", PACED_STOP_TIMEOUT, move |stop| {
        run_paced(&mut paced, period, rate, &stop);
        Ok(())
    });
    let pacer = match pacer {
        Ok(pacer) => pacer,
        Err(error) => {
            if let Some(writer) = writer {
                // Finalizes the (empty) sink file.
                let _ = Box::new(writer).shutdown();
            }
            return Err(error);
        }
    };
    let mut workers: Vec<Box<dyn Shutdown>> = vec![Box::new(pacer)];
    if let Some(writer) = writer {
        workers.push(Box::new(writer));
    }
    let guard = AudioGuard::new(backend.name, format, status, events, workers);
    Ok(AudioDevice::new(
        rings.capture_out,
        rings.playback_in,
        format,
        guard,
    ))
}

/// The pacing loop: sleeps to each deadline, then runs the periods due.
fn run_paced(paced: &mut PacedLoop, period: Duration, rate: u32, stop: &AtomicBool) {
    // Periods behind before the loop gives up catching up: what the rings hold.
    let max_behind = (RING_DURATION.as_nanos() / period.as_nanos()).max(1) as u64;
    let period_nanos = period.as_nanos();
    let samples_until = |k: u64| -> u64 {
        (u128::from(k) * period_nanos * u128::from(rate) / 1_000_000_000) as u64
    };
    let mut start = Instant::now();
    let mut done: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        let next = start + Duration::from_nanos((u128::from(done + 1) * period_nanos) as u64);
        let now = Instant::now();
        if now < next {
            // Wakes early on stop (unpark) or spuriously; the loop re-checks.
            thread::park_timeout(next - now);
            continue;
        }
        let due = ((now - start).as_nanos() / period_nanos) as u64;
        if due - done > max_behind {
            Status::add(&paced.status.periods_skipped, (due - done) as usize);
            start = now;
            done = 0;
            continue;
        }
        while done < due {
            let samples = samples_until(done + 1) - samples_until(done);
            paced.run_period(samples as usize);
            done += 1;
        }
    }
}

/// Where played samples go, on the audio thread.
pub(crate) enum SinkState {
    Discard,
    Spill(Producer<i16>),
    Record(Arc<RecordBuffer>),
}

/// All the state one period needs, allocated before the thread starts.
pub(crate) struct PacedLoop {
    source: SourceState,
    sink: SinkState,
    capture: Producer<i16>,
    playback: Consumer<i16>,
    scratch: Box<[i16]>,
    status: Arc<Status>,
    events: Producer<AudioEvent>,
}

impl PacedLoop {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        format: AudioFormat,
        period: Duration,
        source: SourceState,
        sink: SinkState,
        capture: Producer<i16>,
        playback: Consumer<i16>,
        status: Arc<Status>,
        events: Producer<AudioEvent>,
    ) -> Self {
        // A period's samples round up to this at most.
        let scratch = vec![0; format.samples_in(period) + 1].into_boxed_slice();
        Self {
            source,
            sink,
            capture,
            playback,
            scratch,
            status,
            events,
        }
    }

    /// One period of `samples` in each direction: never allocates, locks or
    /// blocks (ring operations and relaxed atomics only).
    pub(crate) fn run_period(&mut self, samples: usize) {
        let n = samples.min(self.scratch.len());
        let block = &mut self.scratch[..n];

        if self.source.fill(block) {
            emit(&mut self.events, AudioEvent::SourceEnded);
        }
        let (pushed, _) = self.capture.push_partial_slice(block);
        Status::add(&self.status.capture_samples, pushed.len());
        Status::add(&self.status.capture_dropped, n - pushed.len());

        let (popped, rest) = self.playback.pop_partial_slice(block);
        let played = popped.len();
        rest.fill(0);
        Status::add(&self.status.playback_samples, played);
        Status::add(&self.status.playback_silence, n - played);

        match &mut self.sink {
            SinkState::Discard => {}
            SinkState::Record(buffer) => buffer.write(block),
            SinkState::Spill(spill) => {
                let (kept, _) = spill.push_partial_slice(block);
                Status::add(&self.status.sink_dropped, n - kept.len());
            }
        }
    }
}

/// Drains the sink ring into the WAV file off the paced thread.
fn spawn_wav_writer(
    path: PathBuf,
    format: AudioFormat,
    mut spill: Consumer<i16>,
    mut events: Producer<AudioEvent>,
) -> Result<StoppableThread, AudioError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: format.sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let wav_error = {
        let path = path.clone();
        move |source| AudioError::Wav {
            path: path.clone(),
            source,
        }
    };
    // Created here so a bad path fails the open, not later.
    let mut writer = hound::WavWriter::create(&path, spec).map_err(&wav_error)?;
    StoppableThread::spawn("media-audio-wav-sink", WRITER_STOP_TIMEOUT, move |stop| {
        let mut failed: Option<hound::Error> = None;
        let mut last_flush = Instant::now();
        loop {
            // Read the flag first: after it is set, one more drain gets all.
            let stopping = stop.load(Ordering::Acquire);
            drain_into(&mut spill, &mut writer, &mut failed, &mut events);
            if stopping {
                break;
            }
            if failed.is_none() && last_flush.elapsed() >= WRITER_FLUSH {
                if let Err(error) = writer.flush() {
                    fail(&mut failed, error, &mut events);
                }
                last_flush = Instant::now();
            }
            thread::park_timeout(WRITER_WAKE);
        }
        let finalized = writer.finalize();
        match (failed, finalized) {
            (Some(error), _) | (None, Err(error)) => Err(wav_error(error)),
            (None, Ok(())) => Ok(()),
        }
    })
}

fn drain_into(
    spill: &mut Consumer<i16>,
    writer: &mut hound::WavWriter<BufWriter<File>>,
    failed: &mut Option<hound::Error>,
    events: &mut Producer<AudioEvent>,
) {
    let Ok(chunk) = spill.read_chunk(spill.slots()) else {
        return;
    };
    if failed.is_none() {
        let (first, second) = chunk.as_slices();
        for &sample in first.iter().chain(second) {
            if let Err(error) = writer.write_sample(sample) {
                fail(failed, error, events);
                break;
            }
        }
    }
    chunk.commit_all();
}

fn fail(failed: &mut Option<hound::Error>, error: hound::Error, events: &mut Producer<AudioEvent>) {
    tracing::debug!(%error, "WAV sink failed");
    *failed = Some(error);
    emit(events, AudioEvent::SinkFailed);
}
