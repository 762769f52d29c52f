use std::process::Command;

use testkit::{LDAP_PEOPLE_DN, Slapd, TestCa};

fn ldapsearch_count(
    url: &str,
    ca: Option<&std::path::Path>,
    starttls: bool,
    filter: &str,
) -> (bool, usize, String) {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "30",
        "ldapsearch",
        "-x",
        "-LLL",
        "-H",
        url,
        "-b",
        LDAP_PEOPLE_DN,
    ]);
    if starttls {
        cmd.arg("-ZZ");
    }
    cmd.args([filter, "dn"]);
    match ca {
        Some(path) => cmd
            .env("LDAPTLS_CACERT", path)
            .env("LDAPTLS_REQCERT", "demand"),
        None => cmd.env("LDAPTLS_REQCERT", "demand"),
    };
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    (
        out.status.success(),
        text.lines().filter(|l| l.starts_with("dn:")).count(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serves_generated_people_over_ldap_starttls_and_ldaps() {
    let ca = TestCa::new().unwrap();
    let slapd = Slapd::builder()
        .with_generated_people(120)
        .with_tls(&ca)
        .start()
        .unwrap();
    assert_eq!(slapd.count("(objectClass=inetOrgPerson)").unwrap(), 120);
    assert_eq!(
        slapd.count("(sn=Bråten)").unwrap(),
        slapd
            .people()
            .iter()
            .filter(|p| p.family_name == "Bråten")
            .count()
    );
    let ldaps = slapd.ldaps_url().unwrap();
    let (ok, n, err) = ldapsearch_count(&ldaps, Some(ca.ca_cert_path()), false, "(jpegPhoto=*)");
    assert!(ok, "{err}\n{}", slapd.log_tail(20));
    assert_eq!(n, 24);
    let (ok, n, err) = ldapsearch_count(&slapd.url(), Some(ca.ca_cert_path()), true, "(mobile=*)");
    assert!(ok, "{err}");
    assert_eq!(n, 120);
    let other = TestCa::new().unwrap();
    let (ok, _, _) = ldapsearch_count(&ldaps, Some(other.ca_cert_path()), false, "(mobile=*)");
    assert!(!ok, "a certificate from another CA must be refused");
}

#[test]
fn size_limit_stops_plain_searches_but_not_paged_ones() {
    let slapd = Slapd::builder()
        .with_generated_people(130)
        .with_size_limit(50)
        .start()
        .unwrap();
    let (ok, n, _) = ldapsearch_count(&slapd.url(), None, false, "(objectClass=inetOrgPerson)");
    assert!(!ok, "sizeLimitExceeded must end the plain search");
    assert_eq!(n, 50);
    assert_eq!(slapd.count("(objectClass=inetOrgPerson)").unwrap(), 130);
}

#[test]
fn modify_applies_change_records() {
    let slapd = Slapd::builder().with_generated_people(10).start().unwrap();
    let dn = slapd.people()[2].dn();
    slapd
        .modify(&format!("dn: {dn}\nchangetype: delete\n"))
        .unwrap();
    assert_eq!(slapd.count("(objectClass=inetOrgPerson)").unwrap(), 9);
    assert!(
        slapd
            .modify("dn: uid=nobody,ou=people,dc=example,dc=test\nchangetype: delete\n")
            .is_err()
    );
}
