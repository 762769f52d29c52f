//! The jitter buffer under arbitrary arrivals: a sender whose clock runs
//! one frame per tick, packets that arrive reordered, duplicated, lost,
//! skewed, after sequence wrap-around, timestamp jumps and SSRC changes,
//! and an audio device that pops once per 20 ms tick, or, with `scaled`,
//! one that time-scales: it takes frames through a `PlayoutQueue`
//! (`pop_scaled` until it holds a frame) and stretches or compresses them
//! with `timescale::time_scale`.
//!
//! Checked after every operation: no panic; frames come out in timestamp
//! order between resets; no packet is held longer than a timestamp jump
//! the buffer tolerates plus its largest delay; the buffer never holds
//! more than its capacity; a scaled frame's length is within the
//! configured limit of a frame and `time_scale` produces exactly it.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use media_engine::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout, PlayoutQueue};
use media_engine::rtp::{Ssrc, TimestampUnwrapper};
use media_engine::timescale::time_scale;

const FRAME: Duration = Duration::from_millis(20);
const FRAME_TICKS: u32 = 160;

#[derive(Arbitrary, Debug)]
enum Op {
    /// A packet arrives `delay_ms` (0..20) into the current tick.
    Push {
        seq_delta: i8,
        skew_frames: i8,
        marker: bool,
        delay_ms: u8,
    },
    /// One audio tick: the clock moves 20 ms and the device pops a frame.
    Tick,
    /// Several ticks with nothing arriving (a loss burst or a pause).
    Ticks(u8),
    /// The sender's timestamp jumps.
    TimestampJump(u32),
    /// The sender's sequence number jumps (as around a wrap).
    SequenceJump(u16),
    /// A new sender.
    NewSsrc,
}

#[derive(Arbitrary, Debug)]
struct Input {
    capacity: u8,
    scaled: bool,
    /// Audio for `time_scale`, repeated to a frame.
    pcm: Vec<i16>,
    ops: Vec<Op>,
}

struct Harness {
    buffer: JitterBuffer<Instant>,
    config: JitterConfig,
    now: Instant,
    /// Arrivals never go back in time.
    last_arrival: Instant,
    ssrc: u32,
    base_seq: u16,
    base_ts: u32,
    /// Order check, restarted on every reset or SSRC change.
    order: TimestampUnwrapper,
    last_played: Option<u64>,
    resets: u64,
    played_ssrc: Option<Ssrc>,
    scaled: bool,
    /// Audio the time-scaling device holds, one sample per timestamp
    /// unit.
    queue: PlayoutQueue,
    pcm: Vec<i16>,
    out: Vec<i16>,
}

impl Harness {
    fn tick(&mut self) {
        self.now += FRAME;
        self.base_seq = self.base_seq.wrapping_add(1);
        self.base_ts = self.base_ts.wrapping_add(FRAME_TICKS);
        if self.scaled {
            self.scaled_tick();
            return;
        }
        let playout = self.buffer.pop(self.now);
        self.check(playout);
    }

    /// The device played a frame of its queue; it takes frames until the
    /// queue holds one again.
    fn scaled_tick(&mut self) {
        self.queue.advance();
        let limit = usize::try_from(self.config.time_scale_limit.as_micros() / 125).unwrap();
        let frame = FRAME_TICKS as usize;
        while let Some(queued) = self.queue.next(&mut self.buffer, self.now) {
            let samples = queued.samples;
            assert!(
                samples >= frame - limit && samples <= frame + limit,
                "frame scaled to {samples}"
            );
            self.out.clear();
            time_scale(&self.pcm, samples, &mut self.out);
            assert_eq!(self.out.len(), samples);
            self.check(queued.playout);
        }
        assert!(self.queue.queued() >= frame, "queue short of a frame");
    }

    fn check(&mut self, playout: Playout<Instant>) {
        let resets = self.buffer.statistics().resets;
        if resets != self.resets {
            self.resets = resets;
            self.restart_order();
        }
        if let Playout::Frame(frame) = playout {
            if self.played_ssrc != Some(frame.ssrc) {
                self.played_ssrc = Some(frame.ssrc);
                self.restart_order();
            }
            let ts = self.order.unwrap(frame.timestamp);
            if let Some(last) = self.last_played {
                assert!(ts > last, "frame {ts} played after {last}");
            }
            self.last_played = Some(ts);
            let held = self.now - frame.payload;
            let bound = self.config.jump_threshold
                + self.config.max_delay
                + self.config.boost_limit
                + 4 * FRAME;
            assert!(held <= bound, "held {held:?} > {bound:?}");
        }
        assert!(self.buffer.len() <= self.config.capacity);
    }

    fn restart_order(&mut self) {
        self.order = TimestampUnwrapper::new();
        self.last_played = None;
    }
}

fuzz_target!(|input: Input| {
    let config = JitterConfig::default().with_capacity(usize::from(input.capacity).max(1));
    let mut pcm = input.pcm;
    pcm.truncate(FRAME_TICKS as usize);
    if pcm.is_empty() {
        pcm.push(0);
    }
    let pcm = pcm.iter().copied().cycle().take(FRAME_TICKS as usize).collect();
    let Ok(buffer) = JitterBuffer::new(config.clone()) else {
        return;
    };
    let epoch = Instant::now();
    let mut h = Harness {
        buffer,
        config,
        now: epoch,
        last_arrival: epoch,
        ssrc: 1,
        base_seq: 0,
        base_ts: 0,
        order: TimestampUnwrapper::new(),
        last_played: None,
        resets: 0,
        played_ssrc: None,
        scaled: input.scaled,
        queue: PlayoutQueue::new(FRAME_TICKS as usize),
        pcm,
        out: Vec::new(),
    };
    for op in input.ops.into_iter().take(4096) {
        match op {
            Op::Push {
                seq_delta,
                skew_frames,
                marker,
                delay_ms,
            } => {
                let seq = h.base_seq.wrapping_add_signed(i16::from(seq_delta));
                let ts = h
                    .base_ts
                    .wrapping_add_signed(i32::from(seq_delta) * FRAME_TICKS as i32)
                    .wrapping_add_signed(i32::from(skew_frames) * FRAME_TICKS as i32);
                let arrival =
                    (h.now + Duration::from_millis(u64::from(delay_ms % 20))).max(h.last_arrival);
                h.last_arrival = arrival;
                let packet = JitterPacket::new(Ssrc(h.ssrc), seq, ts, marker, arrival);
                h.buffer.push(arrival, packet);
                assert!(h.buffer.len() <= h.config.capacity);
            }
            Op::Tick => h.tick(),
            Op::Ticks(n) => {
                for _ in 0..n {
                    h.tick();
                }
            }
            Op::TimestampJump(ts) => h.base_ts = ts,
            Op::SequenceJump(seq) => h.base_seq = seq,
            Op::NewSsrc => h.ssrc = h.ssrc.wrapping_add(1),
        }
    }
});
