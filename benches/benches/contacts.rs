//! `contacts_search` and `contacts_lookup` over 100 000 contacts.
//!
//! The contacts are generated (seeded): names from syllables and real given
//! names, a fifth with diacritics, 2 to 3 numbers each written in
//! international, `00` and national form, organisations, one contact in 50
//! a favourite. They are stored once through `Store::replace_source` into
//! a temporary profile, which `Contacts::open` then indexes.
//!
//! Besides criterion's figures, the bench prints latency percentiles
//! (p50, p99, max) of an as-you-type query mix, per path: the in-memory
//! index (`Contacts::search`) and the FTS5 store (`Store::search`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use contacts::{Contact, ContactNumber, Contacts, NumberKind, Region, Source, Store};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::StdRng};

const CONTACTS: usize = 100_000;
const LIMIT: usize = 20;

const SYLLABLES: [&str; 48] = [
    "ma", "mül", "ler", "an", "na", "ber", "schmi", "dt", "kla", "ra", "jo", "sé", "gar", "cía",
    "wag", "ner", "fi", "scher", "ko", "vač", "be", "cker", "lu", "kas", "ti", "bra", "ten", "ri",
    "ta", "o", "li", "ver", "son", "ha", "sen", "pe", "ter", "sø", "ren", "dvo", "řák", "lé",
    "fèv", "re", "ja", "ger", "ni", "el",
];
const GIVEN: [&str; 40] = [
    "Anna",
    "Jörg",
    "Zoë",
    "José",
    "Åsa",
    "Łukasz",
    "Renée",
    "Søren",
    "Çağla",
    "Ines",
    "Noah",
    "Olga",
    "François",
    "Mia",
    "Paul",
    "Björn",
    "Émilie",
    "Sven",
    "Núria",
    "Kai",
    "Dörte",
    "Ana",
    "Michael",
    "Sabine",
    "Thomas",
    "Julia",
    "Stefan",
    "Laura",
    "Andreas",
    "Katrin",
    "Peter",
    "Nina",
    "Markus",
    "Sandra",
    "Tobias",
    "Lea",
    "Jan",
    "Eva",
    "Felix",
    "Marie",
];
const ORG_SUFFIX: [&str; 5] = ["GmbH", "AG", "KG", "Ltd", "SE"];

fn name(rng: &mut StdRng) -> String {
    let parts = rng.random_range(2..=3);
    let mut s: String = (0..parts)
        .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
        .collect();
    if let Some(first) = s.chars().next() {
        let upper: String = first.to_uppercase().collect();
        s.replace_range(..first.len_utf8(), &upper);
    }
    s
}

fn number(rng: &mut StdRng, area: &str, subscriber: u32) -> String {
    match rng.random_range(0..3) {
        0 => format!("+49 {area} {subscriber}"),
        1 => format!("0{area} {subscriber}"),
        _ => format!("0049 {area} {subscriber}"),
    }
}

fn generate(region: Option<Region>) -> Vec<Contact> {
    let mut rng = StdRng::seed_from_u64(42);
    let orgs: Vec<String> = (0..500)
        .map(|i| format!("{} {}", name(&mut rng), ORG_SUFFIX[i % ORG_SUFFIX.len()]))
        .collect();
    let areas = [
        "30", "89", "40", "221", "69", "711", "170", "151", "160", "176",
    ];
    (0..CONTACTS)
        .map(|i| {
            let given = GIVEN[rng.random_range(0..GIVEN.len())];
            let family = name(&mut rng);
            let mut numbers = Vec::new();
            let count = rng.random_range(2..=3);
            for k in 0..count {
                let area = areas[rng.random_range(0..areas.len())];
                let subscriber = rng.random_range(1_000_000..9_999_999);
                let kind = [NumberKind::Work, NumberKind::Mobile, NumberKind::Home][k];
                numbers.push(ContactNumber::new(
                    kind,
                    &number(&mut rng, area, subscriber),
                    region,
                ));
            }
            Contact {
                source_id: Some(format!("uid=bench{i},ou=people")),
                given_name: Some(given.to_owned()),
                family_name: Some(family.clone()),
                organization: Some(orgs[rng.random_range(0..orgs.len())].clone()),
                numbers,
                emails: vec![format!("bench{i}@example.test")],
                ..Contact::new(&format!("{given} {family}"))
            }
        })
        .collect()
}

/// What people type: prefixes of family names (1 to 6 letters, folded or
/// with accents), given name plus family prefix, organisation prefixes,
/// 3 to 8 digits from the middle or start of a number.
fn query_mix(contacts: &[Contact]) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut queries = Vec::new();
    for _ in 0..100 {
        let c = &contacts[rng.random_range(0..contacts.len())];
        let family = c.family_name.clone().unwrap_or_default();
        let chars: Vec<char> = family.chars().collect();
        for len in 1..=chars.len().min(6) {
            queries.push(chars[..len].iter().collect::<String>());
        }
        let given = c.given_name.clone().unwrap_or_default();
        queries.push(format!(
            "{} {}",
            given,
            chars.iter().take(3).collect::<String>()
        ));
        let org: String = c
            .organization
            .clone()
            .unwrap_or_default()
            .chars()
            .take(4)
            .collect();
        queries.push(org);
        let digits: String = c.numbers[0]
            .raw
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let len = rng.random_range(3..=8.min(digits.len()));
        let start = rng.random_range(0..=digits.len() - len);
        queries.push(digits[start..start + len].to_owned());
    }
    queries
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    (at(0.50), at(0.99), at(1.0))
}

fn setup() -> (tempfile::TempDir, Contacts, Vec<Contact>) {
    let region: Option<Region> = "DE".parse().ok();
    let started = Instant::now();
    let generated = generate(region);
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut store = Store::open(&dir.path().join(contacts::DATABASE_FILE)).expect("store");
        store
            .replace_source(&Source::Ldap("bench".into()), &generated, None)
            .expect("bulk load");
    }
    let stored = started.elapsed();
    let started = Instant::now();
    let mut book = Contacts::open(dir.path())
        .expect("open")
        .with_default_region(region);
    let opened = started.elapsed();
    let ids: Vec<_> = (1..=CONTACTS as i64)
        .step_by(50)
        .map(contacts::ContactId)
        .collect();
    for id in ids {
        book.set_favourite(id, true).expect("favourite");
    }
    eprintln!(
        "contacts: generated and stored {CONTACTS} contacts in {stored:.2?}; Contacts::open (index build) {opened:.2?}"
    );
    (dir, book, generated)
}

fn bench(c: &mut Criterion) {
    let (_dir, book, generated) = setup();
    let queries = query_mix(&generated);

    // Latency distribution of the mix: the full search (index, then the
    // matched contacts loaded from the store), the index alone, and the
    // FTS5 path (one pass: its one-letter queries are slow).
    let index = book.index();
    type Run<'a> = &'a dyn Fn(&str) -> usize;
    let paths: [(&str, usize, Run<'_>); 3] = [
        ("index", 3, &|q| {
            book.search(q, LIMIT).map(|h| h.len()).unwrap_or(0)
        }),
        ("index_ids_only", 3, &|q| index.search(q, LIMIT).len()),
        ("fts5", 1, &|q| {
            book.store().search(q, LIMIT).map(|h| h.len()).unwrap_or(0)
        }),
    ];
    for (path, rounds, run) in paths {
        let mut samples = Vec::with_capacity(queries.len() * rounds);
        let mut per_query = vec![Duration::MAX; queries.len()];
        for _ in 0..rounds {
            for (k, q) in queries.iter().enumerate() {
                let t = Instant::now();
                black_box(run(q));
                let took = t.elapsed();
                samples.push(took);
                per_query[k] = per_query[k].min(took);
            }
        }
        let (p50, p99, max) = percentiles(samples);
        let mut slowest: Vec<(Duration, &String)> = per_query.into_iter().zip(&queries).collect();
        slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
        let slowest: Vec<String> = slowest
            .iter()
            .take(4)
            .map(|(d, q)| format!("{q:?} {d:.2?}"))
            .collect();
        eprintln!(
            "contacts_search/{path}: {} queries x{rounds}, limit {LIMIT}: p50 {p50:.2?}, p99 {p99:.2?}, max {max:.2?}; slowest (best of runs): {}",
            queries.len(),
            slowest.join(", ")
        );
    }

    let mut group = c.benchmark_group("contacts_search");
    let mut i = 0;
    group.bench_function("index/mix", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(book.search(black_box(&queries[i]), LIMIT).expect("search"))
        });
    });
    let mut i = 0;
    group.bench_function("fts5/mix", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(
                book.store()
                    .search(black_box(&queries[i]), LIMIT)
                    .expect("search"),
            )
        });
    });
    for q in ["m", "mül", "anna mül", "0301", "4567"] {
        group.bench_function(format!("index/{q}"), |b| {
            b.iter(|| black_box(book.search(black_box(q), LIMIT).expect("search")));
        });
    }
    group.finish();

    let region: Option<Region> = "DE".parse().ok();
    let known = &generated[12_345].numbers[0];
    let national = known.national.clone().expect("normalised");
    assert!(book.lookup(&known.number, None).expect("lookup").is_some());
    let mut group = c.benchmark_group("contacts_lookup");
    group.bench_function("e164_hit", |b| {
        b.iter(|| black_box(book.lookup(black_box(&known.number), None).expect("lookup")));
    });
    group.bench_function("national_hit", |b| {
        b.iter(|| black_box(book.lookup(black_box(&national), region).expect("lookup")));
    });
    group.bench_function("miss", |b| {
        b.iter(|| {
            black_box(
                book.lookup(black_box("+49 30 0000001"), region)
                    .expect("lookup"),
            )
        });
    });
    group.bench_function("extension_miss", |b| {
        b.iter(|| black_box(book.lookup(black_box("4711"), region).expect("lookup")));
    });
    group.finish();

    let mut samples = Vec::new();
    for c in generated.iter().step_by(97).take(1000) {
        let t = Instant::now();
        black_box(book.lookup(&c.numbers[0].raw, region).expect("lookup"));
        samples.push(t.elapsed());
    }
    let (p50, p99, max) = percentiles(samples);
    eprintln!("contacts_lookup: 1000 raw numbers: p50 {p50:.2?}, p99 {p99:.2?}, max {max:.2?}");

    // Misses, each a different number in an area code no contact has, in
    // the three written forms: their last 7 digits are random, so some
    // share them with a stored number and take the full path.
    let mut rng = StdRng::seed_from_u64(11);
    let mut samples = Vec::new();
    let mut found = 0;
    for _ in 0..1000 {
        let subscriber = rng.random_range(1_000_000..9_999_999);
        let raw = number(&mut rng, "33", subscriber);
        let t = Instant::now();
        let hit = book.lookup(black_box(&raw), region).expect("lookup");
        samples.push(t.elapsed());
        found += usize::from(hit.is_some());
    }
    assert_eq!(found, 0, "numbers in area 33 are not stored");
    let (p50, p99, max) = percentiles(samples);
    eprintln!(
        "contacts_lookup: 1000 different misses: p50 {p50:.2?}, p99 {p99:.2?}, max {max:.2?}"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
