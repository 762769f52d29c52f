//! The audio threads never allocate once started.
//!
//! A counting global allocator sees every allocation in this process. The
//! test opens paced backends (null, tone with a recording, a looped WAV
//! source with a WAV sink), lets them settle, then runs them for half a
//! second while the media side moves samples through fixed buffers only:
//! the count must not move. One test per binary, so no other test thread
//! allocates meanwhile.

#![allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; this one only counts and forwards to the system allocator"
)]
#![allow(clippy::unwrap_used, reason = "a failing check should fail loudly")]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use media_audio::{
    AudioBackend, AudioFormat, AudioPort, NullBackend, PacedBackend, ToneBackend, WavBackend,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to `System`; counting has no effect
// on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Moves samples through every port for `duration` with stack buffers only.
fn pump(ports: &mut [AudioPort], duration: Duration) -> usize {
    let start = Instant::now();
    let mut frame = [0i16; 480];
    let mut moved = 0;
    while start.elapsed() < duration {
        for port in ports.iter_mut() {
            let (got, _) = port.capture.pop_partial_slice(&mut frame);
            moved += got.len();
            let (pushed, _) = port.playback.push_partial_slice(got);
            moved += pushed.len();
        }
        thread::sleep(Duration::from_millis(5));
    }
    moved
}

#[test]
fn paced_backends_do_not_allocate_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&source, spec).unwrap();
    for i in 0..3200 {
        writer.write_sample((i % 200) as i16).unwrap();
    }
    writer.finalize().unwrap();

    let tone = ToneBackend::new(440.0);
    let recording = tone.recording();
    let backends: Vec<Box<dyn AudioBackend>> = vec![
        Box::new(NullBackend::new()),
        Box::new(tone),
        Box::new(WavBackend::new(Some(source), Some(dir.path().join("sink.wav"))).looped(true)),
        Box::new(PacedBackend::new(
            media_audio::CaptureSource::Silence,
            media_audio::PlaybackSink::Discard,
        )),
    ];
    let mut ports = Vec::new();
    let mut guards = Vec::new();
    for (mut backend, rate) in backends.into_iter().zip([8000, 48_000, 16_000, 44_100]) {
        let (port, guard) = backend.open(AudioFormat::new(rate)).unwrap().into_parts();
        ports.push(port);
        guards.push(guard);
    }
    // Let every thread reach its steady loop.
    pump(&mut ports, Duration::from_millis(150));

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let moved = pump(&mut ports, Duration::from_millis(500));
    let after = ALLOCATIONS.load(Ordering::SeqCst);

    eprintln!(
        "moved {moved} samples; allocations while running: {}",
        after - before
    );
    assert!(moved > 50_000, "the backends were running (moved {moved})");
    assert_eq!(after, before, "an audio thread allocated");
    let stats: Vec<_> = guards.iter().map(|g| g.stats()).collect();
    assert!(stats.iter().all(|s| s.playback_samples > 0), "{stats:?}");
    assert!(recording.recorded_samples() > 0);
}
