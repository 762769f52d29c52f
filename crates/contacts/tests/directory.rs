//! Syncing from and searching a real slapd on 127.0.0.1 (testkit).
//!
//! slapd must be installed (`apt-get install slapd ldap-utils`); without it
//! these tests fail with that message.

#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "tests")]

use std::time::{Duration, Instant};

use contacts::{
    Contact, Contacts, LdapError, LdapSource, MatchKind, NumberKind, Password, Region, Source,
    SyncError, TlsTrust,
};
use testkit::{LDAP_ADMIN_DN, LDAP_ADMIN_PASSWORD, LDAP_PEOPLE_DN, Slapd, TestCa};

fn de() -> Option<Region> {
    "DE".parse().ok()
}

fn source(url: &str) -> LdapSource {
    LdapSource::new("corp", url, LDAP_PEOPLE_DN)
        .unwrap()
        .with_default_region(de())
        .with_page_size(Some(200))
        .with_time_limit(Duration::from_secs(60))
}

#[tokio::test]
async fn full_sync_pages_past_the_server_size_limit_and_is_idempotent() {
    let slapd = Slapd::builder()
        .with_generated_people(3000)
        .with_size_limit(500)
        .start()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut book = Contacts::open(profile.path())
        .unwrap()
        .with_default_region(de());
    let corp = source(&slapd.url());

    let started = Instant::now();
    let report = book.sync_ldap(&corp).await.unwrap();
    println!("first sync of 3000 entries: {:?}", started.elapsed());
    assert_eq!(
        report.fetched, 3000,
        "paged results must go past the 500 limit"
    );
    assert_eq!(report.counts.added, 3000);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.photos_rejected, 0);
    assert_eq!(book.len(), 3000);

    let people = slapd.people();
    // Numbers written in international, 00 and national form all normalise.
    for i in [42usize, 41, 40, 7] {
        let person = &people[i - 1];
        let found = book
            .lookup(&person.telephone_e164().unwrap(), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            found.display_name, person.common_name,
            "{}",
            person.telephone
        );
        assert_eq!(found.source, Source::Ldap("corp".into()));
        let by_mobile = book.lookup(&person.mobile, de()).unwrap().unwrap();
        assert_eq!(by_mobile.id, found.id);
    }
    let caller = book.lookup("030 1000041", de()).unwrap().unwrap();
    assert_eq!(caller.source_id.as_deref(), Some(people[40].dn().as_str()));
    // An internal extension does not normalise; it is found by its digits.
    assert_eq!(people[49].telephone, "7001");
    let ext = book.lookup("7001", de()).unwrap().unwrap();
    assert_eq!(ext.display_name, people[49].common_name);
    assert!(book.lookup("+49 30 9999999", de()).unwrap().is_none());

    // Search: accents and case ignored, every hit really matches.
    let braten = book.search("braten", 20).unwrap();
    assert_eq!(braten.len(), 20);
    assert!(
        braten
            .iter()
            .all(|h| h.contact.family_name.as_deref() == Some("Bråten"))
    );
    let mull = book.search("mull", 5).unwrap();
    assert!(
        mull.iter()
            .all(|h| h.contact.display_name.contains("Müller")),
        "{mull:?}"
    );
    let zoe_mey = book.search("zoe mey", 50).unwrap();
    assert!(!zoe_mey.is_empty());
    assert!(
        zoe_mey
            .iter()
            .all(|h| h.contact.display_name == "Zoë Meyer")
    );
    let by_digits = book.search("1000042", 5).unwrap();
    assert_eq!(by_digits[0].contact.display_name, people[41].common_name);
    assert_eq!(by_digits[0].kind, MatchKind::Infix);
    let exact = book.search("+49 30 1000042", 5).unwrap();
    assert_eq!(exact[0].kind, MatchKind::Exact);

    // The FTS5 path in the store gives the same answers as the index.
    for query in [
        "br", "braten", "mull", "soc gen", "zoe mey", "0301000", "2000042", "7", "ólafs",
    ] {
        let fts: Vec<_> = book
            .store()
            .search(query, 15)
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        let index: Vec<_> = book
            .search(query, 15)
            .unwrap()
            .iter()
            .map(|h| h.contact.id.unwrap())
            .collect();
        assert_eq!(fts, index, "{query}");
    }

    // Photos are cached by hash and match the directory's bytes.
    let with_photo = book
        .lookup(&people[4].mobile_e164(), None)
        .unwrap()
        .unwrap();
    let path = book.photo_path(&with_photo).unwrap();
    assert_eq!(
        std::fs::read(path).unwrap(),
        people[4].photo.clone().unwrap()
    );

    // JSON for the dialer.
    let json = serde_json::to_value(&exact[0]).unwrap();
    assert_eq!(json["display_name"], people[41].common_name.as_str());
    assert_eq!(json["organization"], people[41].organization.as_str());
    assert_eq!(json["source"], "ldap:corp");
    assert_eq!(json["numbers"][0]["type"], "work");
    assert_eq!(json["numbers"][0]["number"], "+49301000042");
    assert_eq!(json["numbers"][0]["raw"], "+49 30 1000042");
    assert_eq!(json["match"], "exact");

    // A second sync of the same directory changes nothing.
    let started = Instant::now();
    let again = book.sync_ldap(&corp).await.unwrap();
    println!("second sync (no change): {:?}", started.elapsed());
    assert_eq!(
        (
            again.counts.added,
            again.counts.updated,
            again.counts.removed,
            again.counts.unchanged
        ),
        (0, 0, 0, 3000)
    );
    assert_eq!(
        book.lookup("7001", de()).unwrap().unwrap().id,
        ext.id,
        "ids are stable"
    );

    // Changes at the source: one deleted, one modified, one added.
    let gone = &people[2];
    let changed = &people[3];
    slapd
        .modify(&format!(
            "dn: {}\nchangetype: delete\n\n\
             dn: {}\nchangetype: modify\nreplace: title\ntitle: Chief Listener\n\n\
             dn: uid=new1,{LDAP_PEOPLE_DN}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: new1\n\
             cn: Ådne Ærø\nsn: Ærø\ntelephoneNumber: 040 5551234\n",
            gone.dn(),
            changed.dn()
        ))
        .unwrap();
    let third = book.sync_ldap(&corp).await.unwrap();
    assert_eq!(
        (
            third.counts.added,
            third.counts.updated,
            third.counts.removed,
            third.counts.unchanged
        ),
        (1, 1, 1, 2998)
    );
    assert!(book.lookup(&gone.mobile_e164(), None).unwrap().is_none());
    let deletions = book.store().deletions(&corp.source()).unwrap();
    assert_eq!(deletions.len(), 1);
    assert_eq!(deletions[0].source_id, gone.dn());
    let changed_now = book.lookup(&changed.mobile_e164(), None).unwrap().unwrap();
    assert_eq!(changed_now.title.as_deref(), Some("Chief Listener"));
    assert_eq!(
        book.search("aero", 5).unwrap()[0].contact.display_name,
        "Ådne Ærø"
    );
    assert_eq!(
        book.lookup("+49 40 5551234", None)
            .unwrap()
            .unwrap()
            .display_name,
        "Ådne Ærø"
    );
    let state = book.sync_state(&corp.source()).unwrap().unwrap();
    assert_eq!(state.contacts, 3000);
}

#[tokio::test]
async fn a_sync_that_fails_part_way_keeps_what_was_stored() {
    let slapd = Slapd::builder()
        .with_generated_people(3000)
        .with_size_limit(500)
        .start()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut book = Contacts::open(profile.path()).unwrap();
    book.sync_ldap(&source(&slapd.url())).await.unwrap();
    let local = book
        .add(Contact::new("Local Friend").with_number(NumberKind::Mobile, "0171 1234567", de()))
        .unwrap();
    assert_eq!(book.len(), 3001);

    // Without paging the server stops after 500 entries with
    // sizeLimitExceeded: the sync must fail and remove nothing.
    let unpaged = source(&slapd.url()).with_page_size(None);
    let err = book.sync_ldap(&unpaged).await.unwrap_err();
    assert!(
        matches!(err, SyncError::Directory(LdapError::Search { code: 4, .. })),
        "{err}"
    );
    assert_eq!(book.len(), 3001);
    assert_eq!(book.store().len().unwrap(), 3001);
    assert!(
        book.store()
            .deletions(&Source::Ldap("corp".into()))
            .unwrap()
            .is_empty()
    );

    // A client-side size limit below the directory's size fails the same way.
    let capped = source(&slapd.url()).with_size_limit(100);
    assert!(book.sync_ldap(&capped).await.is_err());
    assert_eq!(book.len(), 3001);

    // The server gone: connection error, store intact, searches still work.
    let url = slapd.url();
    slapd.stop().unwrap();
    let err = book.sync_ldap(&source(&url)).await.unwrap_err();
    assert!(
        matches!(err, SyncError::Directory(LdapError::Connect { .. })),
        "{err}"
    );
    assert_eq!(book.len(), 3001);
    assert_eq!(
        book.search("local fr", 5).unwrap()[0].contact.id,
        Some(local)
    );
    assert!(book.lookup("+49 30 1000042", None).unwrap().is_some());

    // Reopening the profile finds everything.
    drop(book);
    let reopened = Contacts::open(profile.path()).unwrap();
    assert_eq!(reopened.len(), 3001);
}

#[tokio::test]
async fn an_entry_that_cannot_be_read_keeps_its_stored_contact_under_an_id_attribute() {
    let slapd = Slapd::builder().with_generated_people(3).start().unwrap();
    let people = slapd.people().to_vec();
    let map = contacts::AttributeMap {
        id: Some("uid".into()),
        ..Default::default()
    };
    let corp = source(&slapd.url()).with_attributes(map);
    let profile = tempfile::tempdir().unwrap();
    let mut book = Contacts::open(profile.path()).unwrap();
    book.sync_ldap(&corp).await.unwrap();
    assert_eq!(book.len(), 3);

    // One entry gets a value the mapping refuses (a URL over 4096 bytes).
    let bad = &people[1];
    slapd
        .modify(&format!(
            "dn: {}\nchangetype: modify\nadd: labeledURI\nlabeledURI: https://x.example/{}\n",
            bad.dn(),
            "a".repeat(5000)
        ))
        .unwrap();
    let report = book.sync_ldap(&corp).await.unwrap();
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    // Skipped, not deleted: the stored version stays.
    assert_eq!(report.counts.removed, 0);
    assert_eq!(book.len(), 3);
    assert!(book.lookup(&bad.mobile_e164(), None).unwrap().is_some());
    assert!(book.store().deletions(&corp.source()).unwrap().is_empty());
}

#[tokio::test]
async fn ldaps_and_starttls_trust_only_the_configured_ca() {
    let ca = TestCa::new().unwrap();
    let slapd = Slapd::builder()
        .with_generated_people(250)
        .with_tls(&ca)
        .start()
        .unwrap();
    let ldaps = slapd.ldaps_url().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut book = Contacts::open(profile.path()).unwrap();

    let trusted = source(&ldaps).with_trusted_pem(ca.ca_cert_pem()).unwrap();
    let report = book.sync_ldap(&trusted).await.unwrap();
    assert_eq!(report.fetched, 250);

    let starttls = source(&slapd.url())
        .with_starttls(true)
        .with_trusted_pem(ca.ca_cert_pem())
        .unwrap()
        .with_simple_bind(LDAP_ADMIN_DN, Password::new(LDAP_ADMIN_PASSWORD));
    let report = book.sync_ldap(&starttls).await.unwrap();
    assert_eq!(report.counts.unchanged, 250);

    let other = TestCa::new().unwrap();
    for untrusted in [
        source(&ldaps)
            .with_trusted_pem(other.ca_cert_pem())
            .unwrap(),
        source(&ldaps).with_trust(TlsTrust::SystemRoots),
        source(&slapd.url())
            .with_starttls(true)
            .with_trusted_pem(other.ca_cert_pem())
            .unwrap(),
    ] {
        let err = book.sync_ldap(&untrusted).await.unwrap_err();
        match err {
            SyncError::Directory(LdapError::Tls { ref message, .. }) => {
                assert!(message.contains("certificate"), "{message}");
            }
            SyncError::Directory(LdapError::Certificate(_)) => {} // no system roots at all
            other => panic!("expected a TLS error, got {other}"),
        }
    }
    assert_eq!(book.len(), 250, "failed syncs changed nothing");

    let wrong_password = source(&slapd.url())
        .with_starttls(true)
        .with_trusted_pem(ca.ca_cert_pem())
        .unwrap()
        .with_simple_bind(LDAP_ADMIN_DN, Password::new("wrong"));
    let err = book.sync_ldap(&wrong_password).await.unwrap_err();
    assert!(
        matches!(err, SyncError::Directory(LdapError::Bind { code: 49, .. })),
        "{err}"
    );

    let cleartext =
        source(&slapd.url()).with_simple_bind(LDAP_ADMIN_DN, Password::new(LDAP_ADMIN_PASSWORD));
    assert!(matches!(
        book.sync_ldap(&cleartext).await,
        Err(SyncError::Directory(LdapError::InvalidConfig { .. }))
    ));
    let allowed = cleartext.with_cleartext_bind_allowed(true);
    assert_eq!(
        book.sync_ldap(&allowed).await.unwrap().counts.unchanged,
        250
    );
}

#[tokio::test]
async fn live_directory_search_escapes_user_input() {
    let tricky = format!(
        "dn: uid=tricky,{LDAP_PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: tricky\n\
         cn: Ann (Sales) *Star*\nsn: Star\ntelephoneNumber: +49 30 7770001\n\n\
         dn: uid=mia,{LDAP_PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: mia\n\
         cn: Mia Switchboard\nsn: Switchboard\ntelephoneNumber: +49 30 7770000\n\n\
         dn: uid=mio,{LDAP_PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: mio\n\
         cn: Mio Switchboard\nsn: Switchboard\ntelephoneNumber: +49 30 7770000\n"
    );
    let slapd = Slapd::builder()
        .with_generated_people(300)
        .with_ldif(&tricky)
        .start()
        .unwrap();
    let corp = source(&slapd.url());
    let profile = tempfile::tempdir().unwrap();
    let mut book = Contacts::open(profile.path()).unwrap();

    // Nothing synced: the directory answers.
    let found = book
        .search_with_directory("(Sales) *Star", 10, &corp)
        .await
        .unwrap();
    assert!(found.directory_error.is_none(), "{found:?}");
    let hits = found.hits;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].contact.display_name, "Ann (Sales) *Star*");
    assert_eq!(hits[0].contact.id, None);

    // Two people of the directory who share the main line are two
    // people, as in a local search (one contact per source in a hit).
    let hits = book
        .search_with_directory("switchboard", 10, &corp)
        .await
        .unwrap()
        .hits;
    let mut names: Vec<&str> = hits
        .iter()
        .map(|h| h.contact.display_name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Mia Switchboard", "Mio Switchboard"]);

    // Filter metacharacters are data, not filter syntax.
    for injection in [
        "*)(objectClass=*",
        "*",
        "x)(|(cn=*",
        "\\2a",
        "*)(uid=tricky",
    ] {
        let hits = book
            .search_with_directory(injection, 10, &corp)
            .await
            .unwrap()
            .hits;
        assert!(hits.is_empty(), "{injection}: {hits:?}");
        assert!(
            corp.search(injection, 10).await.unwrap().is_empty(),
            "{injection}"
        );
    }
    assert!(
        corp.query_filter("*)(objectClass=*")
            .unwrap()
            .contains("\\2a\\29\\28objectClass=\\2a")
    );

    // Words and numbers, ranked like local search.
    let people = slapd.people();
    let by_number = corp.search("030 1000042", 5).await.unwrap();
    assert_eq!(by_number[0].display_name, people[41].common_name);
    let by_name = corp.search("Bråten", 500).await.unwrap();
    let expected = people.iter().filter(|p| p.family_name == "Bråten").count();
    assert_eq!(by_name.len(), expected);

    // After a sync the store answers; the directory is asked only to fill up.
    book.sync_ldap(&corp).await.unwrap();
    let hits = book
        .search_with_directory("ann (sales)", 10, &corp)
        .await
        .unwrap()
        .hits;
    assert_eq!(hits.len(), 1);
    assert!(hits[0].contact.id.is_some(), "the stored copy is returned");
}

/// A directory that never answers costs a live search its time limit,
/// not the connect and search timeouts, and the stored hits still come.
#[tokio::test]
async fn a_silent_directory_leaves_the_stored_hits_after_the_live_time_limit() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}", listener.local_addr().unwrap());
    // Accepts and holds the connection, never answering.
    let server = tokio::spawn(async move {
        let held = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(held);
    });
    let profile = tempfile::tempdir().unwrap();
    let mut book = Contacts::open(profile.path()).unwrap();
    book.add(Contact::new("Kept Contact")).unwrap();
    let silent = source(&url).with_live_time_limit(Duration::from_millis(500));
    let started = tokio::time::Instant::now();
    let found = tokio::time::timeout(
        Duration::from_secs(5),
        book.search_with_directory("kept", 10, &silent),
    )
    .await
    .expect("the live time limit holds")
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(found.hits.len(), 1);
    assert_eq!(found.hits[0].contact.display_name, "Kept Contact");
    assert!(
        matches!(found.directory_error, Some(LdapError::TimedOut(_))),
        "{:?}",
        found.directory_error
    );
    server.abort();
}

/// A server whose answers ldap3 cannot read (a matched DN that is not
/// UTF-8: ldap3 0.12 panics on it, in the caller's task for a bind) ends
/// the fetch and the live search with an error; the caller and the stored
/// contacts carry on.
#[tokio::test]
async fn a_response_ldap3_cannot_read_is_an_error_not_a_crash() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        // A BindResponse (application 1) to the fetch's bind, a
        // SearchResultDone (application 5) to the anonymous search.
        for op in [0x61, 0x65] {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            // LDAPMessage: SEQUENCE, its length, then INTEGER messageID.
            let mut k = 1;
            if buf[k] & 0x80 != 0 {
                k += usize::from(buf[k] & 0x7f);
            }
            k += 1;
            assert!(
                n > k + 2 && buf[k] == 0x02 && buf[k + 1] == 1,
                "a small message id"
            );
            let id = buf[k + 2];
            // Success, matchedDN 0xff, no diagnostic message.
            let answer = [
                0x30, 0x0d, 0x02, 0x01, id, op, 0x08, 0x0a, 0x01, 0x00, 0x04, 0x01, 0xff, 0x04,
                0x00,
            ];
            conn.write_all(&answer).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await;
        }
    });
    let profile = tempfile::tempdir().unwrap();
    let mut book = Contacts::open(profile.path()).unwrap();
    let kept = book.add(Contact::new("Kept Contact")).unwrap();
    let bound = source(&url)
        .with_simple_bind("cn=reader", Password::new("x"))
        .with_cleartext_bind_allowed(true)
        .with_time_limit(Duration::from_secs(10));
    let err = book.sync_ldap(&bound).await.unwrap_err();
    println!("fetch: {err}");
    assert!(
        matches!(err, SyncError::Directory(LdapError::Unreadable { .. })),
        "{err}"
    );
    let anonymous = source(&url).with_time_limit(Duration::from_secs(10));
    let err = anonymous.search("anyone", 5).await.unwrap_err();
    println!("search: {err}");
    assert!(
        matches!(
            err,
            LdapError::Unreadable { .. } | LdapError::Protocol { .. }
        ),
        "{err}"
    );
    assert_eq!(book.len(), 1);
    assert_eq!(book.search("kept", 5).unwrap()[0].contact.id, Some(kept));
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}
