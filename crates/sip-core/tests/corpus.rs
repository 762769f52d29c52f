//! The torture corpus in tests/data: every valid message parses, validates,
//! serialises back byte for byte and survives a canonical round trip; every
//! invalid one is refused with the expected complaint.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on a broken fixture"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sip_core::Message;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn files(kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir().join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .collect();
    v.sort();
    v
}

/// `invalid/NAME.sip` -> the text its error must contain, from README.md.
fn expectations() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(data_dir().join("README.md")).unwrap();
    readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let file = cells.get(1)?.trim_matches('`');
            let expect = cells.get(2)?.trim_matches('`');
            file.starts_with("invalid/")
                .then(|| (file.to_owned(), expect.to_owned()))
        })
        .collect()
}

#[test]
fn every_valid_message_parses_validates_and_round_trips() {
    let valid = files("valid");
    assert!(valid.len() >= 40, "corpus too small: {}", valid.len());
    for path in valid {
        let raw = std::fs::read(&path).unwrap();
        let msg = Message::parse(raw.clone()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        msg.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Unmodified: the original bytes (up to the declared body end).
        let out = msg.to_bytes();
        assert!(
            raw.starts_with(&out),
            "{}: not byte for byte",
            path.display()
        );
        // Canonical form parses to an equal message.
        let again = Message::parse(msg.canonical())
            .unwrap_or_else(|e| panic!("{} (canonical): {e}", path.display()));
        assert_eq!(again, msg, "{}", path.display());
        again
            .validate()
            .unwrap_or_else(|e| panic!("{} (canonical): {e}", path.display()));
        // The typed headers every transaction reads.
        assert!(msg.via().is_ok(), "{}", path.display());
        assert!(msg.from().is_ok() && msg.to().is_ok(), "{}", path.display());
        assert!(
            msg.call_id().is_ok() && msg.cseq().is_ok(),
            "{}",
            path.display()
        );
    }
}

#[test]
fn every_invalid_message_is_refused_with_the_expected_complaint() {
    let expect = expectations();
    let invalid = files("invalid");
    assert!(invalid.len() >= 40, "corpus too small: {}", invalid.len());
    for path in invalid {
        let name = format!("invalid/{}", path.file_name().unwrap().to_string_lossy());
        let want = expect
            .get(&name)
            .unwrap_or_else(|| panic!("{name} has no expectation in README.md"));
        let raw = std::fs::read(&path).unwrap();
        let err = Message::parse(raw)
            .and_then(|m| m.validate())
            .expect_err(&name);
        let text = err.to_string();
        assert!(
            text.contains(want.as_str()),
            "{name}: {text:?} lacks {want:?}"
        );
        assert!(err.position.line >= 1 && err.position.column >= 1, "{name}");
    }
}

#[test]
fn typed_values_from_the_corpus() {
    let read = |f: &str| Message::parse(std::fs::read(data_dir().join(f)).unwrap()).unwrap();
    let m = read("valid/register-outbound-push-params.sip");
    let c = m.contact().unwrap().unwrap();
    let a = c.address().unwrap();
    assert!(a.sip_instance().unwrap().starts_with("urn:uuid:"));
    assert!(a.pn_provider().is_some() && a.pn_prid().is_some());
    let m = read("valid/register-unregister-star.sip");
    assert_eq!(m.contact().unwrap(), Some(sip_core::Contact::Any));
    assert_eq!(m.expires().unwrap(), Some(0));
    let m = read("valid/via-comma-separated-list.sip");
    assert!(m.vias().count() >= 4);
    assert!(m.vias().all(|v| v.is_ok()));
    let m = read("valid/content-length-smaller-than-body.sip");
    assert_eq!(m.body().len(), 12);
}
