//! The `jitter_buffer` benchmark's loop as a plain binary, for counting
//! instructions per push + pop under callgrind:
//!
//! ```text
//! valgrind --tool=callgrind target/release/examples/jitter-instructions 20000
//! valgrind --tool=callgrind target/release/examples/jitter-instructions 120000
//! ```
//!
//! The difference of the two totals divided by 100 000 is the cost of one
//! push + pop, start-up excluded. A second argument picks the API:
//! `instant` (the default, `push` and `pop`), `micros` (`push_micros` and
//! `pop_micros`) or `scaled` (`push_micros`, and frames taken through a
//! `PlayoutQueue` with `pop_scaled` as a time-scaling audio side does).
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use media_engine::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout, PlayoutQueue};
use media_engine::rtp::Ssrc;

fn main() {
    let packets: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    // 0: `Instant`, 1: µs, 2: µs and a `PlayoutQueue`.
    let api = match std::env::args().nth(2).as_deref() {
        Some("micros") => 1,
        Some("scaled") => 2,
        _ => 0,
    };
    let Ok(mut buffer) = JitterBuffer::new(JitterConfig::default()) else {
        return;
    };
    // The only clock read: an arbitrary origin for the virtual clock.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut played = 0u64;
    let mut queue = PlayoutQueue::new(160);
    for i in 0..packets {
        // Truncation is the wrap-around the wire does.
        let packet = JitterPacket::new(Ssrc(1), i as u16, (i * 160) as u32, i == 0, i as u32);
        let tick_us = 20_000 * i;
        let arrival_us = tick_us + 1000 * (i * 7 % 8);
        let playout = match api {
            1 => {
                buffer.push_micros(arrival_us, black_box(packet));
                buffer.pop_micros(tick_us + 20_000)
            }
            2 => {
                buffer.push_micros(arrival_us, black_box(packet));
                let mut playout = Playout::Silence;
                while let Some(frame) = queue.next_micros(&mut buffer, tick_us + 20_000) {
                    playout = frame.playout;
                }
                queue.advance();
                playout
            }
            _ => {
                let tick = start + Duration::from_millis(20 * i);
                let arrival = tick + Duration::from_millis(i * 7 % 8);
                buffer.push(arrival, black_box(packet));
                buffer.pop(tick + Duration::from_millis(20))
            }
        };
        if let Playout::Frame(frame) = playout {
            played += u64::from(black_box(frame.payload) > 0);
        }
    }
    println!("{packets} packets, {played} frames played");
}
