//! `dialer contacts` against a real slapd: sync of a configured directory,
//! search as you type, number lookup (exit 1 for nobody), and the cached
//! directory contacts going away with their source when the configuration
//! drops it.
#![allow(clippy::unwrap_used, reason = "a failed step should fail loudly")]

mod common;
use common::dialer;

use std::time::Duration;

use testkit::{LDAP_PEOPLE_DN, Slapd};

fn config(ldap: Option<&str>) -> String {
    let contacts = ldap.map_or_else(String::new, |url| {
        format!(
            "<contacts><ldap id=\"corp\"><url>{url}</url><base>{LDAP_PEOPLE_DN}</base></ldap></contacts>"
        )
    });
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<softphone-config version=\"1\">\
         <account id=\"office\"><user>alice</user><registrar>sip:127.0.0.1</registrar></account>\
         {contacts}</softphone-config>\n"
    )
}

#[test]
fn sync_search_lookup_and_contacts_leave_with_their_source() {
    let slapd = Slapd::builder()
        .with_generated_people(200)
        .with_lifetime(Duration::from_secs(120))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");
    let with = dir.path().join("with.xml");
    std::fs::write(&with, config(Some(&slapd.url()))).unwrap();
    let r = dialer(&profile, &["import", with.to_str().unwrap()]);
    assert!(r.ok, "{}", r.out);

    let r = dialer(&profile, &["contacts", "sync", "--region", "DE"]);
    assert!(r.ok, "{}", r.out);
    assert!(r.out.contains("200 contacts in the store"), "{}", r.out);

    // Search as you type: the start of a name word, accents folded.
    let someone = &slapd.people()[7];
    let prefix: String = someone.family_name.chars().take(3).collect();
    let r = dialer(&profile, &["contacts", "search", &prefix, "--json"]);
    assert!(r.ok, "{}", r.out);
    let hits: serde_json::Value = serde_json::from_str(r.out.trim()).unwrap();
    assert!(
        hits.as_array()
            .unwrap()
            .iter()
            .any(|h| h["display_name"] == someone.common_name.as_str()),
        "{prefix:?} did not find {:?}: {}",
        someone.common_name,
        r.out
    );
    let first = &hits[0];
    assert!(
        first["numbers"].is_array() && first["source"] == "ldap:corp",
        "{first}"
    );

    // Lookup by number in another written form; nobody -> exit 1.
    // Person 7's office number is written in national form in the directory.
    let number = someone.mobile.replace(' ', "").replace("+49", "0049");
    let r = dialer(
        &profile,
        &["contacts", "lookup", &number, "--region", "DE", "--json"],
    );
    assert!(r.ok, "{number}: {}", r.out);
    assert!(r.out.contains(&someone.common_name), "{}", r.out);
    let r = dialer(
        &profile,
        &["contacts", "lookup", "+1 202 555 0199", "--json"],
    );
    assert_eq!(r.code, Some(1), "{}", r.out);

    // A local contact stays; the directory's go when the source is dropped.
    let r = dialer(
        &profile,
        &[
            "contacts",
            "add",
            "Zoë Local",
            "--number",
            "mobile:+49 170 5550100",
        ],
    );
    assert!(r.ok, "{}", r.out);
    let without = dir.path().join("without.xml");
    std::fs::write(&without, config(None)).unwrap();
    let r = dialer(&profile, &["import", without.to_str().unwrap()]);
    assert!(r.ok, "{}", r.out);
    assert!(
        r.out.contains("removed 200 contacts of ldap:corp"),
        "{}",
        r.out
    );
    let r = dialer(&profile, &["contacts", "search", "zoe", "--json"]);
    assert!(r.out.contains("Zoë Local"), "{}", r.out);
    let r = dialer(&profile, &["contacts", "search", &prefix, "--json"]);
    assert!(!r.out.contains("ldap:corp"), "{}", r.out);
}

/// A configured directory that cannot be used (no host in its URL) is
/// reported and skipped: the others still sync, and the exit status says
/// not everything did.
#[test]
fn one_unusable_directory_does_not_stop_the_others() {
    let slapd = Slapd::builder()
        .with_generated_people(20)
        .with_lifetime(Duration::from_secs(60))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");
    let document = config(Some(&slapd.url())).replace(
        "<contacts>",
        &format!(
            "<contacts><ldap id=\"broken\"><url>ldap:///</url><base>{LDAP_PEOPLE_DN}</base></ldap>"
        ),
    );
    let file = dir.path().join("two.xml");
    std::fs::write(&file, document).unwrap();
    let r = dialer(&profile, &["import", file.to_str().unwrap()]);
    assert!(r.ok, "{}", r.out);
    let r = dialer(&profile, &["contacts", "sync", "--region", "DE"]);
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("directory broken is unusable"), "{}", r.out);
    assert!(r.out.contains("synced corp: 20 entries read"), "{}", r.out);
    assert!(r.out.contains("20 contacts in the store"), "{}", r.out);
}
