//! Sound devices through cpal.

use std::{sync::Arc, time::Duration};

use cpal::{
    FromSample, SampleFormat, SizedSample, SupportedStreamConfigRange,
    traits::{DeviceTrait, HostTrait, StreamTrait},
};
use rtrb::{Consumer, Producer};

use crate::{
    AudioBackend, AudioDevice, AudioError, AudioEvent, AudioFormat, AudioGuard, Direction,
    device::Rings,
    guard::{Shutdown, Status, emit, event_ring, join_within},
};

/// How long stop waits for cpal to close the streams.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sample formats converted in the callback, best first.
const FORMATS: [SampleFormat; 8] = [
    SampleFormat::I16,
    SampleFormat::F32,
    SampleFormat::I32,
    SampleFormat::F64,
    SampleFormat::U16,
    SampleFormat::I8,
    SampleFormat::U8,
    SampleFormat::U32,
];

/// Rates tried, besides the preferred one and the devices' own limits.
const COMMON_RATES: [u32; 12] = [
    8000, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 88_200, 96_000, 176_400, 192_000,
];

/// Sound devices of the system's default cpal host (ALSA on Linux,
/// CoreAudio, WASAPI).
///
/// `open` picks the capture and playback devices (by name substring, or
/// the defaults), negotiates one sample rate both support (the preferred
/// one when possible, else the nearest), and converts between the device's
/// channels and sample format and mono i16 in the callbacks, without
/// allocating, locking or blocking. Stream errors arrive as [`AudioEvent`]s
/// and [`AudioGuard::is_device_lost`].
#[derive(Debug, Clone, Default)]
pub struct CpalBackend {
    input: Option<String>,
    output: Option<String>,
}

/// A sound device as [`CpalBackend::list_devices`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// The name to match with [`CpalBackend::with_device`].
    pub name: String,
    /// It can capture.
    pub input: bool,
    /// It can play.
    pub output: bool,
    /// It is the default capture device.
    pub default_input: bool,
    /// It is the default playback device.
    pub default_output: bool,
}

impl CpalBackend {
    /// The default capture and playback devices.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The capture and playback devices whose names contain `name`
    /// (case-insensitive).
    #[must_use]
    pub fn with_device(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            input: Some(name.clone()),
            output: Some(name),
        }
    }

    /// The capture device whose name contains `name`.
    #[must_use]
    pub fn with_input_device(mut self, name: impl Into<String>) -> Self {
        self.input = Some(name.into());
        self
    }

    /// The playback device whose name contains `name`.
    #[must_use]
    pub fn with_output_device(mut self, name: impl Into<String>) -> Self {
        self.output = Some(name.into());
        self
    }

    /// The devices of the default host.
    ///
    /// # Errors
    ///
    /// [`AudioError::Host`] when the sound system cannot list them.
    pub fn list_devices() -> Result<Vec<DeviceInfo>, AudioError> {
        let host = cpal::default_host();
        let default_input = host.default_input_device();
        let default_output = host.default_output_device();
        let devices = host
            .devices()
            .map_err(|source| AudioError::Host { source })?;
        Ok(devices
            .map(|device| DeviceInfo {
                name: device.to_string(),
                input: device.supports_input(),
                output: device.supports_output(),
                default_input: default_input.as_ref() == Some(&device),
                default_output: default_output.as_ref() == Some(&device),
            })
            .collect())
    }

    /// Opens the streams without starting them and closes them again: the
    /// check [`select_backend`](crate::select_backend) makes.
    pub(crate) fn probe(&self, preferred: AudioFormat) -> Result<AudioFormat, AudioError> {
        let device = self.open_streams(preferred, false)?;
        Ok(device.format)
    }

    fn open_streams(&self, preferred: AudioFormat, play: bool) -> Result<AudioDevice, AudioError> {
        let preferred = preferred.validate()?;
        let host = cpal::default_host();
        let input = find_device(&host, Direction::Capture, self.input.as_deref())?;
        let output = find_device(&host, Direction::Playback, self.output.as_deref())?;
        let input_name = input.to_string();
        let output_name = output.to_string();

        let input_ranges: Vec<_> = input
            .supported_input_configs()
            .map_err(|source| AudioError::Device {
                direction: Direction::Capture,
                device: input_name.clone(),
                operation: "querying configurations",
                source,
            })?
            .collect();
        let output_ranges: Vec<_> = output
            .supported_output_configs()
            .map_err(|source| AudioError::Device {
                direction: Direction::Playback,
                device: output_name.clone(),
                operation: "querying configurations",
                source,
            })?
            .collect();
        let choice =
            negotiate(&input_ranges, &output_ranges, preferred.sample_rate).map_err(|failure| {
                match failure {
                    Unusable::Capture => AudioError::NoUsableConfig {
                        direction: Direction::Capture,
                        device: input_name.clone(),
                    },
                    Unusable::Playback => AudioError::NoUsableConfig {
                        direction: Direction::Playback,
                        device: output_name.clone(),
                    },
                    Unusable::NoCommonRate => AudioError::NoCommonRate {
                        input: input_name.clone(),
                        output: output_name.clone(),
                    },
                }
            })?;
        let format = AudioFormat::new(choice.sample_rate);
        // Device names stay out of logs: they often carry a person's name
        // ("Jane's headset").
        tracing::debug!(
            rate = choice.sample_rate,
            input_channels = choice.input.channels,
            input_format = ?choice.input.format,
            output_channels = choice.output.channels,
            output_format = ?choice.output.format,
            "audio configuration negotiated"
        );

        let status = Arc::new(Status::default());
        let rings = Rings::new(format);
        let (input_events, input_events_out) = event_ring();
        let (output_events, output_events_out) = event_ring();
        let input_stream = build_input(
            &input,
            choice.input,
            choice.sample_rate,
            rings.capture_in,
            Arc::clone(&status),
            input_events,
        )
        .map_err(|source| AudioError::Device {
            direction: Direction::Capture,
            device: input_name.clone(),
            operation: "building the stream",
            source,
        })?;
        let output_stream = build_output(
            &output,
            choice.output,
            choice.sample_rate,
            rings.playback_out,
            Arc::clone(&status),
            output_events,
        )
        .map_err(|source| AudioError::Device {
            direction: Direction::Playback,
            device: output_name.clone(),
            operation: "building the stream",
            source,
        })?;
        let streams = CpalStreams(vec![input_stream, output_stream]);
        if play {
            for (stream, direction, device) in [
                (&streams.0[0], Direction::Capture, &input_name),
                (&streams.0[1], Direction::Playback, &output_name),
            ] {
                stream.play().map_err(|source| AudioError::Device {
                    direction,
                    device: device.clone(),
                    operation: "starting the stream",
                    source,
                })?;
            }
        }
        let guard = AudioGuard::new(
            "cpal",
            format,
            status,
            vec![input_events_out, output_events_out],
            vec![Box::new(streams)],
        );
        Ok(AudioDevice::new(
            rings.capture_out,
            rings.playback_in,
            format,
            guard,
        ))
    }
}

impl AudioBackend for CpalBackend {
    fn name(&self) -> &str {
        "cpal"
    }

    fn open(&mut self, preferred: AudioFormat) -> Result<AudioDevice, AudioError> {
        self.open_streams(preferred, true)
    }
}

fn find_device(
    host: &cpal::Host,
    direction: Direction,
    wanted: Option<&str>,
) -> Result<cpal::Device, AudioError> {
    let no_device = || AudioError::NoDevice {
        direction,
        wanted: wanted.map(str::to_owned),
    };
    let Some(wanted) = wanted else {
        return match direction {
            Direction::Capture => host.default_input_device(),
            Direction::Playback => host.default_output_device(),
        }
        .ok_or_else(no_device);
    };
    let needle = wanted.to_lowercase();
    let mut devices = host
        .devices()
        .map_err(|source| AudioError::Host { source })?;
    devices
        .find(|device| {
            device.to_string().to_lowercase().contains(&needle)
                && match direction {
                    Direction::Capture => device.supports_input(),
                    Direction::Playback => device.supports_output(),
                }
        })
        .ok_or_else(no_device)
}

/// The streams of a running device; dropped on a helper thread so a stuck
/// driver cannot hang the owner.
struct CpalStreams(Vec<cpal::Stream>);

impl Shutdown for CpalStreams {
    fn shutdown(self: Box<Self>) -> Result<(), AudioError> {
        let streams = self.0;
        let closer = std::thread::Builder::new()
            .name("media-audio-close".to_owned())
            .spawn(move || drop(streams));
        match closer {
            Ok(handle) => join_within(handle, "media-audio-close", CLOSE_TIMEOUT),
            Err(source) => Err(AudioError::Spawn {
                thread: "media-audio-close",
                source,
            }),
        }
    }
}

/// One direction's negotiated stream shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamChoice {
    pub(crate) channels: u16,
    pub(crate) format: SampleFormat,
}

/// The configuration both directions run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub(crate) sample_rate: u32,
    pub(crate) input: StreamChoice,
    pub(crate) output: StreamChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unusable {
    Capture,
    Playback,
    NoCommonRate,
}

/// Picks the sample rate nearest `preferred` that both directions support,
/// then for each the fewest channels (mono, then stereo, then more) and the
/// best sample format at that rate.
pub(crate) fn negotiate(
    input: &[SupportedStreamConfigRange],
    output: &[SupportedStreamConfigRange],
    preferred: u32,
) -> Result<Negotiated, Unusable> {
    let usable = |ranges: &[SupportedStreamConfigRange]| -> Vec<SupportedStreamConfigRange> {
        ranges
            .iter()
            .filter(|r| r.channels() > 0 && FORMATS.contains(&r.sample_format()))
            .copied()
            .collect()
    };
    let input = usable(input);
    let output = usable(output);
    if input.is_empty() {
        return Err(Unusable::Capture);
    }
    if output.is_empty() {
        return Err(Unusable::Playback);
    }
    let mut rates: Vec<u32> = COMMON_RATES
        .iter()
        .copied()
        .chain([preferred])
        .chain(
            input
                .iter()
                .chain(&output)
                .flat_map(|r| [r.min_sample_rate(), r.max_sample_rate()]),
        )
        .collect();
    // Rates that make whole frames at every packet time first (11 025 Hz
    // is 220.5 samples in 20 ms, which the media path cannot frame); then
    // nearest first; between two equally near, the higher.
    rates.sort_by_key(|&r| {
        (
            !r.is_multiple_of(100),
            r.abs_diff(preferred),
            std::cmp::Reverse(r),
        )
    });
    rates.dedup();
    rates
        .into_iter()
        .find_map(|rate| {
            Some(Negotiated {
                sample_rate: rate,
                input: best_at(&input, rate)?,
                output: best_at(&output, rate)?,
            })
        })
        .ok_or(Unusable::NoCommonRate)
}

fn best_at(ranges: &[SupportedStreamConfigRange], rate: u32) -> Option<StreamChoice> {
    let channel_rank = |c: u16| match c {
        1 => 0,
        2 => 1,
        n => u32::from(n),
    };
    let format_rank = |f: SampleFormat| FORMATS.iter().position(|&g| g == f).unwrap_or(usize::MAX);
    ranges
        .iter()
        .filter(|r| r.contains_rate(rate))
        .min_by_key(|r| (channel_rank(r.channels()), format_rank(r.sample_format())))
        .map(|r| StreamChoice {
            channels: r.channels(),
            format: r.sample_format(),
        })
}

/// Runs `$body` with `$t` bound to the Rust type of `$format`.
macro_rules! with_sample_type {
    ($format:expr, $t:ident => $body:expr, $otherwise:expr) => {
        match $format {
            SampleFormat::I16 => {
                type $t = i16;
                $body
            }
            SampleFormat::F32 => {
                type $t = f32;
                $body
            }
            SampleFormat::I32 => {
                type $t = i32;
                $body
            }
            SampleFormat::F64 => {
                type $t = f64;
                $body
            }
            SampleFormat::U16 => {
                type $t = u16;
                $body
            }
            SampleFormat::I8 => {
                type $t = i8;
                $body
            }
            SampleFormat::U8 => {
                type $t = u8;
                $body
            }
            SampleFormat::U32 => {
                type $t = u32;
                $body
            }
            _ => $otherwise,
        }
    };
}

fn stream_config(choice: StreamChoice, sample_rate: u32) -> cpal::StreamConfig {
    // The device picks its period; the rings absorb it.
    cpal::StreamConfig {
        channels: choice.channels,
        sample_rate,
        buffer_size: cpal::BufferSize::Default,
    }
}

fn unsupported(format: SampleFormat) -> cpal::Error {
    cpal::Error::with_message(
        cpal::ErrorKind::UnsupportedConfig,
        format!("sample format {format:?} is not converted"),
    )
}

fn build_input(
    device: &cpal::Device,
    choice: StreamChoice,
    sample_rate: u32,
    mut ring: Producer<i16>,
    status: Arc<Status>,
    mut events: Producer<AudioEvent>,
) -> Result<cpal::Stream, cpal::Error> {
    let channels = usize::from(choice.channels);
    let errors = Arc::clone(&status);
    with_sample_type!(
        choice.format,
        T => device.build_input_stream::<T, _, _>(
            stream_config(choice, sample_rate),
            move |data: &[T], _| capture_block(data, channels, &mut ring, &status),
            move |error| on_stream_error(error.kind(), Direction::Capture, &errors, &mut events),
            None,
        ),
        Err(unsupported(choice.format))
    )
}

fn build_output(
    device: &cpal::Device,
    choice: StreamChoice,
    sample_rate: u32,
    mut ring: Consumer<i16>,
    status: Arc<Status>,
    mut events: Producer<AudioEvent>,
) -> Result<cpal::Stream, cpal::Error> {
    let channels = usize::from(choice.channels);
    let errors = Arc::clone(&status);
    with_sample_type!(
        choice.format,
        T => device.build_output_stream::<T, _, _>(
            stream_config(choice, sample_rate),
            move |data: &mut [T], _| playback_block(data, channels, &mut ring, &status),
            move |error| on_stream_error(error.kind(), Direction::Playback, &errors, &mut events),
            None,
        ),
        Err(unsupported(choice.format))
    )
}

/// Capture callback body: mixes each frame of `data` down to mono i16 and
/// pushes what fits into the ring. Iterators over the callback's slice and
/// the ring's chunk only: no allocation, lock or wait.
pub(crate) fn capture_block<T>(
    data: &[T],
    channels: usize,
    ring: &mut Producer<i16>,
    status: &Status,
) where
    T: SizedSample,
    i16: FromSample<T>,
{
    let channels = channels.max(1);
    let frames = data.len() / channels;
    let writable = frames.min(ring.slots());
    let written = match ring.write_chunk_uninit(writable) {
        Ok(chunk) => chunk.fill_from_iter(data.chunks_exact(channels).map(mix_down)),
        Err(_) => 0,
    };
    Status::add(&status.capture_samples, written);
    Status::add(&status.capture_dropped, frames - written);
}

fn mix_down<T>(frame: &[T]) -> i16
where
    T: SizedSample,
    i16: FromSample<T>,
{
    if let [only] = frame {
        return only.to_sample::<i16>();
    }
    let sum: i32 = frame.iter().map(|s| i32::from(s.to_sample::<i16>())).sum();
    (sum / frame.len().max(1) as i32) as i16
}

/// Playback callback body: takes up to one sample per frame from the ring,
/// writes it to every channel, and fills the rest with silence.
pub(crate) fn playback_block<T>(
    data: &mut [T],
    channels: usize,
    ring: &mut Consumer<i16>,
    status: &Status,
) where
    T: SizedSample + FromSample<i16>,
{
    let channels = channels.max(1);
    let frames = data.len() / channels;
    let readable = frames.min(ring.slots());
    let mut out = data.chunks_exact_mut(channels);
    let mut played = 0;
    if let Ok(chunk) = ring.read_chunk(readable) {
        let (first, second) = chunk.as_slices();
        for (&sample, frame) in first.iter().chain(second).zip(out.by_ref()) {
            frame.fill(T::from_sample(sample));
            played += 1;
        }
        chunk.commit_all();
    }
    for frame in out.by_ref() {
        frame.fill(T::EQUILIBRIUM);
    }
    out.into_remainder().fill(T::EQUILIBRIUM);
    Status::add(&status.playback_samples, played);
    Status::add(&status.playback_silence, frames - played);
}

/// Error callback body: turns cpal's error into a flag and an event.
pub(crate) fn on_stream_error(
    kind: cpal::ErrorKind,
    direction: Direction,
    status: &Status,
    events: &mut Producer<AudioEvent>,
) {
    use cpal::ErrorKind as Kind;
    let event = match kind {
        Kind::DeviceNotAvailable
        | Kind::HostUnavailable
        | Kind::StreamInvalidated
        | Kind::PermissionDenied => {
            status
                .device_lost
                .store(true, std::sync::atomic::Ordering::Relaxed);
            AudioEvent::DeviceLost { direction }
        }
        Kind::Xrun => AudioEvent::Xrun { direction },
        Kind::DeviceChanged => AudioEvent::Rerouted { direction },
        _ => AudioEvent::StreamError { direction },
    };
    emit(events, event);
}

#[cfg(test)]
mod tests {
    use cpal::SupportedBufferSize;

    use super::*;

    fn range(
        channels: u16,
        min: u32,
        max: u32,
        format: SampleFormat,
    ) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(channels, min, max, SupportedBufferSize::Unknown, format)
    }

    #[test]
    fn the_preferred_rate_is_used_when_both_sides_support_it() {
        let input = [
            range(2, 8000, 96_000, SampleFormat::F32),
            range(1, 8000, 96_000, SampleFormat::I16),
        ];
        let output = [range(2, 44_100, 48_000, SampleFormat::F32)];
        let chosen = negotiate(&input, &output, 48_000).unwrap();
        assert_eq!(chosen.sample_rate, 48_000);
        assert_eq!(
            chosen.input,
            StreamChoice {
                channels: 1,
                format: SampleFormat::I16
            }
        );
        assert_eq!(
            chosen.output,
            StreamChoice {
                channels: 2,
                format: SampleFormat::F32
            }
        );
    }

    #[test]
    fn the_nearest_common_rate_is_used_otherwise() {
        // A 16 kHz call on a card that runs 44.1 and 48 kHz only.
        let input = [
            range(2, 44_100, 44_100, SampleFormat::I16),
            range(2, 48_000, 48_000, SampleFormat::I16),
        ];
        let output = [range(2, 44_100, 48_000, SampleFormat::F32)];
        assert_eq!(
            negotiate(&input, &output, 16_000).unwrap().sample_rate,
            44_100
        );
        // An odd hardware rate is found from the range limits.
        let odd = [range(1, 22_000, 22_000, SampleFormat::I16)];
        assert_eq!(negotiate(&odd, &odd, 16_000).unwrap().sample_rate, 22_000);
    }

    /// 11 025 Hz is nearer 8 kHz than 48 kHz, but a 20 ms frame of it is
    /// 220.5 samples: the card's 48 kHz is taken instead.
    #[test]
    fn rates_that_make_whole_frames_come_first() {
        let card = [
            range(1, 11_025, 11_025, SampleFormat::I16),
            range(1, 48_000, 48_000, SampleFormat::I16),
        ];
        assert_eq!(negotiate(&card, &card, 8_000).unwrap().sample_rate, 48_000);
        // With nothing else, the odd rate is still tried.
        let only = [range(1, 22_050, 22_050, SampleFormat::I16)];
        assert_eq!(negotiate(&only, &only, 8_000).unwrap().sample_rate, 22_050);
    }

    #[test]
    fn unusable_devices_say_which_side() {
        let dsd = [range(2, 44_100, 44_100, SampleFormat::DsdU8)];
        let fine = [range(2, 48_000, 48_000, SampleFormat::F32)];
        assert_eq!(negotiate(&dsd, &fine, 48_000), Err(Unusable::Capture));
        assert_eq!(negotiate(&fine, &dsd, 48_000), Err(Unusable::Playback));
        let other = [range(2, 44_100, 44_100, SampleFormat::F32)];
        assert_eq!(
            negotiate(&fine, &other, 48_000),
            Err(Unusable::NoCommonRate)
        );
    }

    #[test]
    fn stereo_float_capture_becomes_mono_i16() {
        let status = Status::default();
        let (mut ring, mut out) = rtrb::RingBuffer::new(3);
        // Four frames, L/R; the ring holds three.
        let data = [0.5f32, 0.5, -1.0, -1.0, 1.0, 0.0, 0.25, 0.25];
        capture_block(&data, 2, &mut ring, &status);
        let got: Vec<i16> = std::iter::from_fn(|| out.pop().ok()).collect();
        // Full-scale +1.0 saturates at 32767 before the average.
        assert_eq!(got, vec![16384, -32768, 16383]);
        assert_eq!(
            status
                .capture_samples
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
        assert_eq!(
            status
                .capture_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn mono_i16_plays_on_every_channel_then_silence() {
        let status = Status::default();
        let (mut ring, mut out) = rtrb::RingBuffer::new(8);
        ring.push(16384).unwrap();
        ring.push(-32768).unwrap();
        let mut data = [9.0f32; 7]; // three stereo frames and a stray sample
        playback_block(&mut data, 2, &mut out, &status);
        assert_eq!(data, [0.5, 0.5, -1.0, -1.0, 0.0, 0.0, 0.0]);
        assert_eq!(
            status
                .playback_samples
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert_eq!(
            status
                .playback_silence
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let mut unsigned = [0u16; 2];
        playback_block(&mut unsigned, 1, &mut out, &status);
        assert_eq!(unsigned, [32768, 32768]);
    }

    fn callbacks_of<T>(channels: usize, capture: &mut [T], playback: &mut [T], rounds: usize)
    where
        T: SizedSample + FromSample<i16>,
        i16: FromSample<T>,
    {
        let status = Status::default();
        let (mut capture_in, mut capture_out) = rtrb::RingBuffer::new(1024);
        let (mut playback_in, mut playback_out) = rtrb::RingBuffer::new(1024);
        let (mut events, _events_out) = event_ring();
        let mut media = [0i16; 256];
        let before = crate::alloc_count::allocations();
        for round in 0..rounds {
            capture_block(capture, channels, &mut capture_in, &status);
            let (got, _) = capture_out.pop_partial_slice(&mut media);
            // Every other round the media side falls behind: overrun and underrun paths.
            if round % 2 == 0 {
                let _ = playback_in.push_partial_slice(got);
            }
            playback_block(playback, channels, &mut playback_out, &status);
            on_stream_error(
                cpal::ErrorKind::Xrun,
                Direction::Capture,
                &status,
                &mut events,
            );
        }
        assert_eq!(
            crate::alloc_count::allocations(),
            before,
            "{}",
            std::any::type_name::<T>()
        );
        assert!(
            status
                .playback_samples
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
        assert!(
            status
                .playback_silence
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
    }

    #[test]
    fn callbacks_never_allocate() {
        let probe = crate::alloc_count::allocations();
        drop(std::hint::black_box(vec![0u8; 16]));
        assert!(
            crate::alloc_count::allocations() > probe,
            "the counter counts"
        );
        let mut f32_in: Vec<f32> = (0..960).map(|i| (i as f32 / 960.0) - 0.5).collect();
        callbacks_of(2, &mut f32_in, &mut vec![0.0f32; 960], 200);
        callbacks_of(1, &mut vec![100i16; 480], &mut vec![0i16; 480], 200);
        callbacks_of(2, &mut vec![40_000u16; 882], &mut vec![0u16; 882], 200);
        callbacks_of(6, &mut vec![1i32 << 20; 1536], &mut vec![0i32; 1536], 200);
        callbacks_of(2, &mut vec![0.25f64; 320], &mut vec![0.0f64; 320], 200);
    }

    #[test]
    fn a_vanished_device_is_an_event_and_a_flag() {
        let status = Status::default();
        let (mut events, mut out) = event_ring();
        on_stream_error(
            cpal::ErrorKind::Xrun,
            Direction::Playback,
            &status,
            &mut events,
        );
        assert!(
            !status
                .device_lost
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        on_stream_error(
            cpal::ErrorKind::DeviceNotAvailable,
            Direction::Capture,
            &status,
            &mut events,
        );
        assert!(
            status
                .device_lost
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        assert_eq!(
            out.pop(),
            Ok(AudioEvent::Xrun {
                direction: Direction::Playback
            })
        );
        assert_eq!(
            out.pop(),
            Ok(AudioEvent::DeviceLost {
                direction: Direction::Capture
            })
        );
    }
}
