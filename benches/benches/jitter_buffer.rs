//! `jitter_buffer`: one packet through the adaptive jitter buffer, a push
//! when it arrives and a pop on the next 20 ms tick, in a steady stream
//! with light jitter. The buffer and the clock live across iterations, as
//! in a call.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use media_engine::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout, PlayoutQueue};
use media_engine::rtp::Ssrc;

/// A steady sender: packet `i` is sent at `20 i` ms and arrives 0 to 7 ms
/// later.
struct Stream {
    start: Instant,
    index: u64,
}

impl Stream {
    fn next<P>(&mut self, payload: P) -> (Instant, Instant, JitterPacket<P>) {
        let i = self.index;
        self.index += 1;
        let tick = self.start + Duration::from_millis(20 * i);
        let arrival = tick + Duration::from_millis(i * 7 % 8);
        // Truncation is the wrap-around the wire does.
        let packet = JitterPacket::new(Ssrc(1), i as u16, (i * 160) as u32, i == 0, payload);
        (arrival, tick + Duration::from_millis(20), packet)
    }
}

/// Packet `i` of the same stream with times in µs: (arrival, next tick,
/// packet).
fn micros_packet(index: &mut u64) -> (u64, u64, JitterPacket<u32>) {
    let i = *index;
    *index += 1;
    let tick = 20_000 * i;
    // Truncation is the wrap-around the wire does.
    let packet = JitterPacket::new(Ssrc(1), i as u16, (i * 160) as u32, i == 0, i as u32);
    (tick + 1000 * (i * 7 % 8), tick + 20_000, packet)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("jitter_buffer");
    group.throughput(Throughput::Elements(1));

    group.bench_function("push_pop/handle", |b| {
        let mut buffer =
            JitterBuffer::new(JitterConfig::default()).expect("default config is valid");
        let mut stream = Stream {
            start: Instant::now(),
            index: 0,
        };
        b.iter(|| {
            let (arrival, tick, packet) = stream.next(stream.index as u32);
            buffer.push(arrival, black_box(packet));
            match buffer.pop(tick) {
                Playout::Frame(frame) => black_box(frame.payload),
                Playout::Conceal | Playout::Silence => 0,
            }
        });
    });

    group.bench_function("push_pop/160_byte_payload", |b| {
        let mut buffer =
            JitterBuffer::new(JitterConfig::default()).expect("default config is valid");
        let mut stream = Stream {
            start: Instant::now(),
            index: 0,
        };
        b.iter(|| {
            let (arrival, tick, packet) = stream.next(vec![0xFFu8; 160]);
            buffer.push(arrival, black_box(packet));
            match buffer.pop(tick) {
                Playout::Frame(frame) => black_box(frame.payload.len()),
                Playout::Conceal | Playout::Silence => 0,
            }
        });
    });
    // The same stream with time as integer µs (`push_micros`, `pop_micros`),
    // and taking frames the way a time-scaling audio side does (through a
    // `PlayoutQueue`, which calls `pop_scaled`).
    group.bench_function("push_pop_micros/handle", |b| {
        let mut buffer =
            JitterBuffer::new(JitterConfig::default()).expect("default config is valid");
        let mut i = 0u64;
        b.iter(|| {
            let (arrival, tick, packet) = micros_packet(&mut i);
            buffer.push_micros(arrival, black_box(packet));
            match buffer.pop_micros(tick) {
                Playout::Frame(frame) => black_box(frame.payload),
                Playout::Conceal | Playout::Silence => 0,
            }
        });
    });

    group.bench_function("push_playout_queue_micros/handle", |b| {
        let mut buffer =
            JitterBuffer::new(JitterConfig::default()).expect("default config is valid");
        let mut i = 0u64;
        let mut queue = PlayoutQueue::new(160);
        b.iter(|| {
            let (arrival, tick, packet) = micros_packet(&mut i);
            buffer.push_micros(arrival, black_box(packet));
            let mut played = 0;
            while let Some(frame) = queue.next_micros(&mut buffer, tick) {
                if let Playout::Frame(frame) = frame.playout {
                    played += black_box(frame.payload);
                }
            }
            queue.advance();
            played
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
