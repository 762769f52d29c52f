//! Scenario tests of the sans-IO cores with a virtual clock: outbound flows
//! (fail-over, back-off schedules, keep-alives) and the TURN client against
//! a scripted server.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "tests take one real instant as their epoch and advance it by hand"
)]

mod outbound;
mod turn;

use rand::RngCore;

/// An RNG whose `next_u32` is fixed, so jitter is exact; bytes still vary so
/// transaction IDs differ.
#[derive(Debug, Clone)]
pub struct FixedRng {
    value: u32,
    counter: u8,
}

impl FixedRng {
    /// Jitter at its lowest (50 % of a back-off, 80 % of a keep-alive).
    pub fn lowest() -> Self {
        FixedRng {
            value: 0,
            counter: 0,
        }
    }

    /// Jitter at its highest (100 %).
    pub fn highest() -> Self {
        FixedRng {
            value: u32::MAX,
            counter: 0,
        }
    }
}

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        self.value
    }

    fn next_u64(&mut self) -> u64 {
        u64::from(self.value)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            self.counter = self.counter.wrapping_add(1);
            *b = self.counter;
        }
    }
}
