//! `sip_parse`: parse typical messages and read the fields a transaction layer
//! needs (top Via branch, From tag, To tag, Call-ID, CSeq, Contact URI,
//! Content-Length), sip-core next to rsip 0.4 over the same inputs.

use std::hint::black_box;

use benches::sip_corpus;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "support/sip_fields.rs"]
mod sip_fields;

use sip_fields::{Fields, with_rsip, with_sip_core};

fn sip_parse(c: &mut Criterion) {
    let corpus: Vec<(&str, Bytes)> = sip_corpus::ALL
        .iter()
        .map(|(n, m)| (*n, Bytes::from_static(m)))
        .collect();
    // Both read the same values; a parser that skipped work would differ here.
    for (name, raw) in &corpus {
        let ours = with_sip_core(raw);
        let theirs = with_rsip(raw);
        assert_eq!(ours.cseq, theirs.cseq, "{name}");
        assert_eq!(ours.content_length, theirs.content_length, "{name}");
        // rsip 0.4 cannot read a Contact with a quoted +sip.instance (REGISTER),
        // so the Contact field is compared only where it succeeds.
        assert_eq!(
            Fields { contact: 0, ..ours },
            Fields {
                contact: 0,
                ..theirs
            },
            "{name}"
        );
        assert!(
            theirs.contact == 0 || theirs.contact == ours.contact,
            "{name}"
        );
        assert!(
            ours.branch > 0 && ours.from_tag > 0 && ours.contact > 0,
            "{name}"
        );
    }
    let bytes: usize = corpus.iter().map(|(_, m)| m.len()).sum();

    let mut group = c.benchmark_group("sip_parse");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("sip-core", |b| {
        b.iter(|| {
            for (_, raw) in &corpus {
                black_box(with_sip_core(black_box(raw)));
            }
        })
    });
    group.bench_function("rsip", |b| {
        b.iter(|| {
            for (_, raw) in &corpus {
                black_box(with_rsip(black_box(raw)));
            }
        })
    });
    group.finish();

    let invite = Bytes::from_static(sip_corpus::INVITE);
    let mut group = c.benchmark_group("sip_parse_invite");
    group.throughput(Throughput::Bytes(invite.len() as u64));
    group.bench_function("sip-core", |b| {
        b.iter(|| black_box(with_sip_core(black_box(&invite))))
    });
    group.bench_function("rsip", |b| {
        b.iter(|| black_box(with_rsip(black_box(&invite))))
    });
    group.finish();
}

criterion_group!(benches, sip_parse);
criterion_main!(benches);
