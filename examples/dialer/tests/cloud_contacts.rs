//! `contacts google-login`, `contacts exchange-login` and `contacts sync`
//! end to end against testkit's fake Google / Microsoft servers: the
//! printed authorization URL is followed like a browser would, the refresh
//! token lands in the profile with mode 0600, and syncs use it.
#![allow(clippy::unwrap_used, reason = "a failed step should fail loudly")]

mod common;
use common::{Run, dialer};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use testkit::{FAKE_CLIENT_ID, FakeCloud};

/// A GET over plain HTTP, as a browser would send it; the raw answer.
fn get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn login(profile: &Path, fake: &FakeCloud, which: &str) -> String {
    login_as(profile, fake, which, "me")
}

fn login_as(profile: &Path, fake: &FakeCloud, which: &str, account: &str) -> String {
    let mut child = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_dialer"))
        .arg("--profile")
        .arg(profile)
        .args([
            "contacts",
            &format!("{which}-login"),
            "--client-id",
            FAKE_CLIENT_ID,
            "--account",
            account,
            "--timeout",
            "30",
            "--auth-url",
            &fake.auth_url(),
            "--token-url",
            &fake.token_url(),
            "--api-url",
            &fake.base_url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let url = loop {
        let line = lines.next().expect("the dialer printed no URL").unwrap();
        printed.push(line.clone());
        if line.starts_with(&fake.auth_url()) {
            break line;
        }
    };
    let answer = get(&url);
    assert!(answer.starts_with("HTTP/1.1 302"), "{answer}");
    let location = answer
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .unwrap()
        .trim()
        .to_owned();
    let page = get(&location);
    assert!(page.contains("Signed in"), "{page}");
    printed.extend(lines.map(Result::unwrap));
    let status = child.wait().unwrap();
    let out = printed.join("\n");
    assert!(status.success(), "{out}");
    out
}

#[test]
fn google_and_exchange_login_then_sync() {
    let fake = FakeCloud::start(2).unwrap();
    for (i, name) in ["Anna", "Bernd", "Clara"].iter().enumerate() {
        fake.put_person(
            &format!("c{i}"),
            json!({"names": [{"displayName": format!("{name} Müller")}],
                   "phoneNumbers": [{"value": format!("030 100004{i}"), "type": "work"}]}),
        );
        fake.put_graph_contact(
            &format!("AAMk{i}"),
            json!({"displayName": format!("{name} Meier"), "companyName": "Contoso",
                   "businessPhones": [format!("089 200005{i}")]}),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");

    let Run { ok, out, .. } = dialer(&profile, &["contacts", "sync", "--google"]);
    assert!(!ok && out.contains("google-login"), "{out}");

    let out = login(&profile, &fake, "google");
    eprintln!("{out}");
    assert!(out.contains("signed in to google:me"));
    let file = profile.join("oauth-google.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let Run { ok, out, .. } = dialer(
        &profile,
        &["contacts", "sync", "--google", "--region", "DE"],
    );
    eprintln!("{out}");
    assert!(ok, "{out}");
    assert!(out.contains("3 contacts in the store"), "{out}");

    fake.delete_person("c1");
    login(&profile, &fake, "exchange");
    assert!(profile.join("oauth-exchange.json").exists());
    // No flags: every signed-in account.
    let Run { ok, out, .. } = dialer(&profile, &["contacts", "sync", "--region", "DE"]);
    eprintln!("{out}");
    assert!(ok, "{out}");
    assert!(out.contains("synced google:me") && out.contains("synced exchange:me"));
    assert!(out.contains("5 contacts in the store"), "{out}");

    let Run { ok, out, .. } = dialer(&profile, &["contacts", "lookup", "+49 89 2000052"]);
    assert!(ok && out.contains("Clara Meier"), "{out}");
    let Run { ok, out, .. } = dialer(&profile, &["contacts", "search", "mull"]);
    assert!(
        ok && out.contains("Anna Müller") && !out.contains("Bernd"),
        "{out}"
    );

    // Signing in to another account: the old one's contacts go at once,
    // and the new one's sync reads its address book whole.
    let out = login_as(&profile, &fake, "google", "work");
    assert!(out.contains("removed 2 contacts of google:me"), "{out}");
    let Run { ok, out, .. } = dialer(&profile, &["contacts", "search", "mull"]);
    assert!(ok && !out.contains("Anna"), "{out}");
    let Run { ok, out, .. } = dialer(
        &profile,
        &["contacts", "sync", "--google", "--region", "DE"],
    );
    assert!(ok, "{out}");
    let Run { ok, out, .. } = dialer(&profile, &["contacts", "search", "mull"]);
    assert!(ok && out.contains("Anna Müller"), "{out}");
}
