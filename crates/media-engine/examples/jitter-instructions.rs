//! The `jitter_buffer` benchmark's loop as a plain binary, for counting
//! instructions per push + pop under callgrind:
//!
//! ```text
//! valgrind --tool=callgrind target/release/examples/jitter-instructions 20000
//! valgrind --tool=callgrind target/release/examples/jitter-instructions 120000
//! ```
//!
//! The difference of the two totals divided by 100 000 is the cost of one
//! push + pop, start-up excluded.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use media_engine::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout};
use media_engine::rtp::Ssrc;

fn main() {
    let packets: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let Ok(mut buffer) = JitterBuffer::new(JitterConfig::default()) else {
        return;
    };
    // The only clock read: an arbitrary origin for the virtual clock.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut played = 0u64;
    for i in 0..packets {
        let tick = start + Duration::from_millis(20 * i);
        let arrival = tick + Duration::from_millis(i * 7 % 8);
        // Truncation is the wrap-around the wire does.
        let packet = JitterPacket::new(Ssrc(1), i as u16, (i * 160) as u32, i == 0, i as u32);
        buffer.push(arrival, black_box(packet));
        if let Playout::Frame(frame) = buffer.pop(tick + Duration::from_millis(20)) {
            played += u64::from(black_box(frame.payload) > 0);
        }
    }
    println!("{packets} packets, {played} frames played");
}
