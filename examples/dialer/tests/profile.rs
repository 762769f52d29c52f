//! The dialer's configuration commands end to end: `provision` from a real
//! HTTPS server (testkit, test CA, Basic auth), `register` with the
//! provisioned account against Kamailio, `config show` and `config set`
//! (locked fields refused), `export` and `import` (encrypted by default, a
//! wrong passphrase changes nothing), and export -> provision losslessly.
#![allow(clippy::unwrap_used, reason = "a failed step should fail loudly")]

mod common;
use common::dialer_with;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use testkit::{HttpServer, Kamailio, Resource, TestCa};

fn document(kamailio: &Kamailio) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<softphone-config version="1">
  <account id="office">
    <user>alice</user>
    <password>{}</password>
    <display-name>Alice Example</display-name>
    <registrar>sip:127.0.0.1:{}</registrar>
    <transport>udp</transport>
    <expiry>300</expiry>
  </account>
  <media>
    <codec>PCMU</codec>
    <srtp locked="true">optional</srtp>
  </media>
  <privacy>
    <crash-reports locked="true">true</crash-reports>
    <log-personal-data>true</log-personal-data>
  </privacy>
</softphone-config>
"#,
        kamailio.user("alice").unwrap().password,
        kamailio.sip_port()
    )
}

#[test]
fn provision_register_configure_export_and_import() {
    let ca = TestCa::new().unwrap();
    let kamailio = Kamailio::builder()
        .with_lifetime(Duration::from_secs(90))
        .start()
        .unwrap();
    let doc = document(&kamailio);
    let server = HttpServer::https(ca.server())
        .serve(
            "/alice.xml",
            Resource::document(doc).with_basic_auth("alice", "web-pw"),
        )
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");
    let ca_path = ca.ca_cert_path().display().to_string();
    let url = server.url("/alice.xml");

    // Wrong credentials: nothing stored.
    let r = dialer_with(
        &profile,
        &[
            "provision",
            &url,
            "--user",
            "alice",
            "--password",
            "nope",
            "--ca",
            &ca_path,
        ],
        &[],
    );
    assert!(!r.ok, "{}", r.out);
    assert!(!profile.join("provisioned.xml").exists());
    // Without the CA the certificate is not trusted.
    let r = dialer_with(
        &profile,
        &["provision", &url, "--user", "alice", "--password", "web-pw"],
        &[],
    );
    assert!(!r.ok, "{}", r.out);

    let r = dialer_with(
        &profile,
        &[
            "provision",
            &url,
            "--user",
            "alice",
            "--password",
            "web-pw",
            "--ca",
            &ca_path,
        ],
        &[],
    );
    assert!(r.ok, "{}", r.out);
    assert!(r.out.contains("provisioned 1 account"), "{}", r.out);

    // The provisioned account registers with no account options given.
    let r = dialer_with(&profile, &["register"], &[]);
    assert!(r.ok, "{}\n{}", r.out, kamailio.log_tail(20));
    assert!(r.out.contains("registered (expires"), "{}", r.out);

    // Secrets never show.
    let password = kamailio.user("alice").unwrap().password.clone();
    let r = dialer_with(&profile, &["config", "show", "--json"], &[]);
    assert!(r.ok, "{}", r.out);
    assert!(r.out.contains("\"registrar\""), "{}", r.out);
    assert!(!r.out.contains(&password), "the password leaked: {}", r.out);
    let r = dialer_with(&profile, &["config", "show"], &[]);
    assert!(!r.out.contains(&password), "the password leaked: {}", r.out);

    // Crash reports and personal data in logs are the user's choice: the
    // document's "on" (even locked) counts for nothing.
    let r = dialer_with(&profile, &["config", "show", "--json"], &[]);
    assert!(r.out.contains("\"crash_reports\": false"), "{}", r.out);
    assert!(r.out.contains("\"log_personal_data\": false"), "{}", r.out);

    // Local settings: a free one is kept, a locked one refused; the user
    // opts in to crash reports whatever the document locked.
    let r = dialer_with(&profile, &["config", "set", "crash_reports", "on"], &[]);
    assert!(r.ok, "{}", r.out);
    let r = dialer_with(&profile, &["config", "set", "media/srtp", "off"], &[]);
    assert_eq!(r.code, Some(2), "{}", r.out);
    let r = dialer_with(&profile, &["config", "show", "--json"], &[]);
    assert!(r.out.contains("\"crash_reports\": true"), "{}", r.out);
    assert!(r.out.contains("\"srtp\": \"optional\""), "{}", r.out);

    // Encrypted export, then import elsewhere.
    let export = dir.path().join("alice.age");
    let r = dialer_with(&profile, &["export", export.to_str().unwrap()], &[]);
    assert_eq!(
        r.code,
        Some(2),
        "no passphrase must be a usage error: {}",
        r.out
    );
    let pass = [("DIALER_PASSPHRASE", "correct horse")];
    let r = dialer_with(&profile, &["export", export.to_str().unwrap()], &pass);
    assert!(r.ok, "{}", r.out);
    let bytes = std::fs::read(&export).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains(&password));
    let other = dir.path().join("other");
    let r = dialer_with(
        &other,
        &["import", export.to_str().unwrap()],
        &[("DIALER_PASSPHRASE", "wrong")],
    );
    assert!(!r.ok, "{}", r.out);
    assert!(
        !other.join("provisioned.xml").exists(),
        "a failed import stored something"
    );
    let r = dialer_with(&other, &["import", export.to_str().unwrap()], &pass);
    assert!(r.ok, "{}", r.out);
    let a = dialer_with(&profile, &["config", "show", "--json"], &[]);
    let b = dialer_with(&other, &["config", "show", "--json"], &[]);
    assert_eq!(a.out, b.out, "import did not reproduce the export");

    // A plaintext export is itself a provisioning document.
    let plain = dir.path().join("alice.xml");
    let r = dialer_with(
        &profile,
        &["export", plain.to_str().unwrap(), "--plaintext"],
        &[],
    );
    assert!(r.ok && r.out.contains("warning"), "{}", r.out);
    // A file in clear may be anyone's: importing it does not opt the user
    // in to crash reports, it only says the file asks for them.
    let fourth = dir.path().join("fourth");
    let r = dialer_with(&fourth, &["import", plain.to_str().unwrap()], &[]);
    assert!(r.ok && r.out.contains("not taken"), "{}", r.out);
    let r = dialer_with(&fourth, &["config", "show", "--json"], &[]);
    assert!(r.out.contains("\"crash_reports\": false"), "{}", r.out);
    // Exports and the profile are the owner's only, and no temporary file
    // is left beside them.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&plain), 0o600, "plaintext export");
    assert_eq!(mode(&export), 0o600, "encrypted export");
    assert_eq!(mode(&profile), 0o700, "profile directory");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    server.serve(
        "/exported.xml",
        Resource::document(std::fs::read_to_string(&plain).unwrap()),
    );
    let third = dir.path().join("third");
    let r = dialer_with(
        &third,
        &["provision", &server.url("/exported.xml"), "--ca", &ca_path],
        &[],
    );
    assert!(r.ok, "{}", r.out);
    // Provisioned, the export's crash-report opt-in is not the user's here.
    let r = dialer_with(&third, &["config", "set", "crash_reports", "on"], &[]);
    assert!(r.ok, "{}", r.out);
    let c = dialer_with(&third, &["config", "show", "--json"], &[]);
    assert_eq!(a.out, c.out, "export -> provision lost something");

    // A stored configuration that no longer loads (written by a newer
    // version, damaged) does not lock out the command that replaces it.
    std::fs::write(
        third.join("provisioned.xml"),
        "<softphone-config version=\"99\"/>",
    )
    .unwrap();
    let r = dialer_with(&third, &["config", "show", "--json"], &[]);
    assert!(!r.ok, "{}", r.out);
    let r = dialer_with(
        &third,
        &["provision", &server.url("/exported.xml"), "--ca", &ca_path],
        &[],
    );
    assert!(r.ok, "{}", r.out);
    let c = dialer_with(&third, &["config", "show", "--json"], &[]);
    assert_eq!(a.out, c.out, "provisioning did not repair the profile");

    // A redacted export has no secrets at all.
    let redacted = dir.path().join("support.xml");
    let r = dialer_with(
        &profile,
        &["export", redacted.to_str().unwrap(), "--redacted"],
        &[],
    );
    assert!(r.ok, "{}", r.out);
    assert!(
        !std::fs::read_to_string(&redacted)
            .unwrap()
            .contains(&password)
    );

    // A password set locally is not printed back.
    let r = dialer_with(
        &profile,
        &["config", "set", "account[office]/password", "hunter2-local"],
        &[],
    );
    assert!(r.ok && r.out.contains("***"), "{}", r.out);
    assert!(!r.out.contains("hunter2-local"), "{}", r.out);
}
