//! The backends running on real threads and clocks, seen from the media
//! side of their rings.

#![allow(clippy::unwrap_used, reason = "a failing check should fail loudly")]

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use media_audio::{
    AudioBackend, AudioError, AudioEvent, AudioFormat, AudioGuard, AudioPort, BackendChoice,
    CpalBackend, NullBackend, Recording, Tone, ToneBackend, WavBackend, analysis, select_backend,
};

/// How often the simulated media side runs (a real one ticks every 20 ms).
const TICK: Duration = Duration::from_millis(5);

/// What the media side saw over a run.
struct Run {
    captured: Vec<i16>,
    /// Samples the device took from the playback ring.
    played: usize,
    elapsed: Duration,
}

/// Plays the media side for `duration` from `start`: drains capture,
/// keeps the playback ring full from `next`, stops early when `done` says so.
fn run_media(
    port: &mut AudioPort,
    start: Instant,
    duration: Duration,
    mut next: impl FnMut() -> Option<i16>,
    mut done: impl FnMut(&[i16]) -> bool,
) -> Run {
    let mut captured = Vec::new();
    let mut pushed = 0;
    let mut frame = [0i16; 512];
    while start.elapsed() < duration {
        loop {
            let (got, _) = port.capture.pop_partial_slice(&mut frame);
            if got.is_empty() {
                break;
            }
            captured.extend_from_slice(got);
        }
        while port.playback.slots() > 0 {
            let Some(sample) = next() else { break };
            port.playback.push(sample).unwrap();
            pushed += 1;
        }
        if done(&captured) {
            break;
        }
        thread::sleep(TICK);
    }
    let waiting = port.playback.buffer().capacity() - port.playback.slots();
    Run {
        captured,
        played: pushed - waiting,
        elapsed: start.elapsed(),
    }
}

fn open(backend: &mut dyn AudioBackend, rate: u32) -> (AudioPort, AudioGuard, Instant) {
    let device = backend.open(AudioFormat::new(rate)).unwrap();
    let start = Instant::now();
    let (port, guard) = device.into_parts();
    (port, guard, start)
}

fn assert_near(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance * want,
        "{what}: got {got}, want {want} ± {}%",
        tolerance * 100.0
    );
}

fn write_wav(path: &Path, spec: hound::WavSpec, samples: impl IntoIterator<Item = i32>) {
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for sample in samples {
        writer.write_sample(sample).unwrap();
    }
    writer.finalize().unwrap();
}

#[test]
fn the_null_backend_runs_in_real_time() {
    for rate in [8000, 48_000] {
        let (mut port, guard, start) = open(&mut NullBackend::new(), rate);
        let run = run_media(
            &mut port,
            start,
            Duration::from_millis(500),
            || Some(7),
            |_| false,
        );
        let stats = guard.stats();
        let expected = run.elapsed.as_secs_f64() * f64::from(rate);
        // What the device produced and consumed, whether or not this
        // thread kept up with it.
        let produced = stats.capture_samples + stats.capture_dropped;
        let consumed = stats.playback_samples + stats.playback_silence;
        eprintln!(
            "null at {rate} Hz over {:?}: produced {produced}, consumed {consumed} \
             ({} of them pushed), expected {expected:.0}",
            run.elapsed, run.played
        );
        assert_near("produced", produced as f64, expected, 0.1);
        assert_near("consumed", consumed as f64, expected, 0.1);
        assert!(!run.captured.is_empty());
        assert!(
            run.captured.iter().all(|&s| s == 0),
            "null capture is silence"
        );
        assert_eq!(stats.playback_samples as usize, run.played);
        assert_eq!(guard.backend(), "null");
    }
}

#[test]
fn a_wav_source_delivers_the_file_mixed_to_mono_then_silence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.wav");
    // 8 kHz stereo, 0.5 s: left i, right i + 2, so the mix is i + 1.
    let frames: Vec<i32> = (0..4000).map(|i| (i * 7) % 20_000 - 10_000).collect();
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    write_wav(&path, spec, frames.iter().flat_map(|&s| [s, s + 2]));
    let expected: Vec<i16> = frames.iter().map(|&s| (s + 1) as i16).collect();

    let mut backend = WavBackend::new(Some(path), None);
    let device = backend.open(AudioFormat::new(16_000)).unwrap();
    assert_eq!(
        device.format.sample_rate, 8000,
        "the file's rate is reported"
    );
    let start = Instant::now();
    let (mut port, mut guard) = device.into_parts();
    let run = run_media(
        &mut port,
        start,
        Duration::from_secs(3),
        || None,
        |c| c.len() >= 4800,
    );
    assert!(
        run.captured.len() >= 4800,
        "captured {}",
        run.captured.len()
    );
    assert_eq!(&run.captured[..4000], &expected[..]);
    assert!(
        run.captured[4000..].iter().all(|&s| s == 0),
        "silence after the end"
    );
    assert_eq!(guard.poll_event(), Some(AudioEvent::SourceEnded));
    assert_eq!(guard.poll_event(), None);
}

#[test]
fn a_looped_24_bit_wav_source_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loop.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 24,
        sample_format: hound::SampleFormat::Int,
    };
    // 0.05 s; 24-bit values scale down by 256.
    let samples: Vec<i32> = (0..2400)
        .map(|i| (i * 911 % 4_000_000) - 2_000_000)
        .collect();
    write_wav(&path, spec, samples.iter().copied());
    let expected: Vec<i16> = samples.iter().map(|&s| (s >> 8) as i16).collect();

    let mut backend = WavBackend::new(Some(path), None).looped(true);
    let (mut port, _guard, start) = open(&mut backend, 8000);
    assert_eq!(port.sample_rate, 48_000);
    let run = run_media(
        &mut port,
        start,
        Duration::from_secs(3),
        || None,
        |c| c.len() >= 3 * 2400,
    );
    for (i, chunk) in run.captured.chunks_exact(2400).take(3).enumerate() {
        assert_eq!(chunk, &expected[..], "repetition {i}");
    }
}

#[test]
fn a_wav_sink_records_exactly_what_was_played_into_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    for explicit_stop in [true, false] {
        let path = dir.path().join(format!("sink-{explicit_stop}.wav"));
        let mut backend = WavBackend::new(None, Some(path.clone()));
        let (mut port, guard, start) = open(&mut backend, 16_000);
        // 0.5 s of a ramp that is never zero.
        let ramp: Vec<i16> = (0..8000).map(|i| (i % 30_000 + 1) as i16).collect();
        let mut next = ramp.iter().copied();
        let run = run_media(
            &mut port,
            start,
            Duration::from_millis(800),
            || next.next(),
            |_| false,
        );
        assert_eq!(run.played, ramp.len(), "everything pushed was played");
        if explicit_stop {
            guard.stop().unwrap();
        } else {
            drop(guard);
        }

        let mut reader = hound::WavReader::open(&path).unwrap();
        let spec = reader.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (1, 16_000, 16)
        );
        let declared = reader.len() as usize;
        let written: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(written.len(), declared, "the header is finalized");
        let first = written.iter().position(|&s| s != 0).unwrap();
        assert_eq!(&written[first..first + ramp.len()], &ramp[..]);
        assert!(written[first + ramp.len()..].iter().all(|&s| s == 0));
        eprintln!(
            "sink ({}) over {:?}: {} samples, {first} of leading silence",
            if explicit_stop { "stop" } else { "drop" },
            run.elapsed,
            written.len()
        );
        assert_near(
            "file length",
            written.len() as f64,
            run.elapsed.as_secs_f64() * 16_000.0,
            0.1,
        );
    }
}

#[test]
fn the_tone_backend_captures_its_frequency() {
    for (rate, frequency) in [(8000, 1000.0), (16_000, 440.0), (48_000, 2500.0)] {
        let mut backend = ToneBackend::new(frequency);
        let (mut port, _guard, start) = open(&mut backend, rate);
        let wanted = rate as usize * 3 / 10;
        let run = run_media(
            &mut port,
            start,
            Duration::from_secs(3),
            || None,
            |c| c.len() >= wanted,
        );
        let measured = analysis::dominant_frequency(&run.captured, rate).unwrap();
        let level = analysis::rms(&run.captured);
        eprintln!("tone {frequency} Hz at {rate} Hz: measured {measured:.2} Hz, rms {level:.0}");
        assert_near("frequency", measured, frequency, 0.01);
        assert_near(
            "rms",
            level,
            f64::from(Tone::DEFAULT_AMPLITUDE) / 2f64.sqrt(),
            0.02,
        );
    }
}

#[test]
fn two_tone_backends_wired_back_to_back_hear_each_other() {
    let rate = 16_000;
    let mut a =
        ToneBackend::with_recording(Tone::new(600.0), Recording::new(Duration::from_secs(1)));
    let mut b = ToneBackend::new(1000.0);
    let (heard_by_a, heard_by_b) = (a.recording(), b.recording());
    let (mut port_a, _guard_a, start) = open(&mut a, rate);
    let (mut port_b, _guard_b, _) = open(&mut b, rate);
    let mut frame = [0i16; 256];
    while start.elapsed() < Duration::from_millis(700) {
        let (got, _) = port_a.capture.pop_partial_slice(&mut frame);
        let _ = port_b.playback.push_partial_slice(got);
        let (got, _) = port_b.capture.pop_partial_slice(&mut frame);
        let _ = port_a.playback.push_partial_slice(got);
        thread::sleep(TICK);
    }
    for (recording, frequency) in [(&heard_by_a, 1000.0), (&heard_by_b, 600.0)] {
        assert_eq!(recording.sample_rate(), Some(rate));
        let latest = recording.latest(Duration::from_millis(300));
        assert!(latest.len() >= 4000, "recorded {}", latest.len());
        let measured = analysis::dominant_frequency(&latest, rate).unwrap();
        eprintln!(
            "heard {measured:.2} Hz (sent {frequency} Hz), rms {:.0}",
            analysis::rms(&latest)
        );
        assert_near("heard", measured, frequency, 0.01);
        assert!(analysis::rms(&latest) > 4000.0);
    }
    // A's recording is capped at one second.
    assert!(heard_by_a.samples().len() <= rate as usize);
}

#[test]
fn auto_selection_gives_a_working_device_or_null_with_the_reason() {
    let (mut backend, notice) = select_backend(BackendChoice::Auto);
    match backend.name() {
        "cpal" => assert_eq!(notice, None),
        "null" => {
            let notice = notice.expect("a fallback comes with a notice");
            eprintln!("notice: {notice}");
            // The reason is the error opening the default sound device gives.
            let error = CpalBackend::new()
                .open(AudioFormat::new(48_000))
                .unwrap_err();
            assert!(notice.starts_with("no usable sound device ("), "{notice}");
            assert!(notice.contains(&error.to_string()), "{notice} / {error}");
            assert!(notice.contains("null audio device"), "{notice}");
        }
        other => panic!("auto selected {other}"),
    }
    // Either way it opens and runs.
    let (mut port, _guard, start) = open(backend.as_mut(), 8000);
    let run = run_media(
        &mut port,
        start,
        Duration::from_millis(200),
        || Some(0),
        |_| false,
    );
    assert!(
        !run.captured.is_empty(),
        "the selected device produced no capture"
    );
}

#[test]
fn explicit_choices_build_the_named_backend() {
    let dir = tempfile::tempdir().unwrap();
    for (choice, name) in [
        (BackendChoice::Null, "null"),
        (BackendChoice::Cpal { device: None }, "cpal"),
        (
            BackendChoice::Wav {
                source: None,
                sink: Some(dir.path().join("x.wav")),
                looped: false,
            },
            "wav",
        ),
        (
            BackendChoice::Tone {
                frequency: 440.0,
                recording: None,
            },
            "tone",
        ),
    ] {
        let (backend, notice) = select_backend(choice);
        assert_eq!(backend.name(), name);
        assert_eq!(notice, None);
    }
}

#[test]
fn dropping_the_guard_stops_each_backend_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    write_wav(&source, spec, (0..800).map(|i| i % 100));
    let backends: Vec<Box<dyn AudioBackend>> = vec![
        Box::new(NullBackend::new()),
        Box::new(ToneBackend::new(440.0)),
        Box::new(WavBackend::new(Some(source), Some(dir.path().join("sink.wav"))).looped(true)),
    ];
    for mut backend in backends {
        let (mut port, guard, start) = open(backend.as_mut(), 8000);
        run_media(
            &mut port,
            start,
            Duration::from_millis(100),
            || Some(1),
            |_| false,
        );
        assert!(!port.capture.is_abandoned());
        let before = Instant::now();
        drop(guard);
        let took = before.elapsed();
        eprintln!("{}: stopped in {took:?}", backend.name());
        assert!(
            took < Duration::from_millis(500),
            "{} took {took:?}",
            backend.name()
        );
        // The device thread let go of its ring ends: it is gone.
        assert!(port.capture.is_abandoned() && port.playback.is_abandoned());
    }
}

#[test]
fn bad_requests_are_errors_that_say_what() {
    let error = NullBackend::new().open(AudioFormat::new(0)).unwrap_err();
    assert!(
        matches!(error, AudioError::InvalidFormat { sample_rate: 0 }),
        "{error}"
    );

    let error = ToneBackend::new(5000.0)
        .open(AudioFormat::new(8000))
        .unwrap_err();
    assert!(matches!(error, AudioError::InvalidTone { .. }), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wav");
    let error = WavBackend::new(Some(missing), None)
        .open(AudioFormat::new(8000))
        .unwrap_err();
    assert!(error.to_string().contains("missing.wav"), "{error}");

    let unwritable = dir.path().join("no-such-dir").join("sink.wav");
    let error = WavBackend::new(None, Some(unwritable))
        .open(AudioFormat::new(8000))
        .unwrap_err();
    assert!(error.to_string().contains("sink.wav"), "{error}");

    let empty = dir.path().join("empty.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    write_wav(&empty, spec, []);
    let error = WavBackend::new(Some(empty), None)
        .open(AudioFormat::new(8000))
        .unwrap_err();
    assert!(error.to_string().contains("no samples"), "{error}");

    let error = CpalBackend::with_device("no such device 4f1c")
        .open(AudioFormat::new(8000))
        .unwrap_err();
    eprintln!("cpal, unknown device: {error}");
    assert!(
        matches!(&error, AudioError::NoDevice { wanted: Some(w), .. } if w == "no such device 4f1c")
            || matches!(error, AudioError::Host { .. }),
        "{error}"
    );
}
