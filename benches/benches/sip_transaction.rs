//! `sip_transaction`: one whole call, INVITE/180/200/ACK/BYE/200, through two
//! sans-IO endpoints per iteration: building, serialising, parsing, matching
//! and the transaction state machines on both sides, on one core.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sip_core::endpoint::{Endpoint, EndpointConfig};

#[path = "support/sip_call.rs"]
mod sip_call;

use sip_call::call;

fn sip_transaction(c: &mut Criterion) {
    let now = Instant::now();
    let mut alice = Endpoint::new(EndpointConfig::default(), StdRng::seed_from_u64(1));
    let mut bob = Endpoint::new(EndpointConfig::default(), StdRng::seed_from_u64(2));
    // Every call reaches each side: 180, 200 (alice), ACK, BYE (bob), 200 BYE (alice).
    assert_eq!(call(now, &mut alice, &mut bob, 0), 5);
    let mut n = 1;
    let mut group = c.benchmark_group("sip_transaction");
    group.bench_function("invite-180-200-ack-bye-200", |b| {
        b.iter(|| {
            n += 1;
            black_box(call(now, &mut alice, &mut bob, n))
        })
    });
    group.finish();
    // Transactions finish on their timers; none may leak past them.
    let later = now + std::time::Duration::from_secs(64);
    alice.handle_timeout(later);
    bob.handle_timeout(later);
    assert_eq!(alice.transaction_count(), (0, 0));
    assert_eq!(bob.transaction_count(), (0, 0));
}

criterion_group!(benches, sip_transaction);
criterion_main!(benches);
