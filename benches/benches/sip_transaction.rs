//! `sip_transaction`: one whole call, INVITE/180/200/ACK/BYE/200, through two
//! sans-IO endpoints per iteration: building, serialising, parsing, matching
//! and the transaction state machines on both sides, on one core, until the
//! timers have ended every transaction of the call.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sip_core::endpoint::{Endpoint, EndpointConfig};

#[path = "support/sip_call.rs"]
mod sip_call;

use sip_call::{CALL_SPAN, call_to_the_end};

fn sip_transaction(c: &mut Criterion) {
    let start = Instant::now();
    let mut alice = Endpoint::new(EndpointConfig::default(), StdRng::seed_from_u64(1));
    let mut bob = Endpoint::new(EndpointConfig::default(), StdRng::seed_from_u64(2));
    // Every call reaches each side: 180, 200 (alice), ACK, BYE (bob), 200 BYE (alice).
    assert_eq!(call_to_the_end(start, &mut alice, &mut bob, 0), 5);
    // Transactions finish on their timers; none may leak past them.
    assert_eq!(alice.transaction_count(), (0, 0));
    assert_eq!(bob.transaction_count(), (0, 0));
    let mut n = 0u32;
    let mut group = c.benchmark_group("sip_transaction");
    group.bench_function("invite-180-200-ack-bye-200", |b| {
        b.iter(|| {
            n += 1;
            // Each call starts after the previous one has ended.
            let now = start + CALL_SPAN * n;
            black_box(call_to_the_end(now, &mut alice, &mut bob, u64::from(n)))
        })
    });
    group.finish();
    assert_eq!(alice.transaction_count(), (0, 0));
    assert_eq!(bob.transaction_count(), (0, 0));
}

criterion_group!(benches, sip_transaction);
criterion_main!(benches);
