//! slapd (OpenLDAP): a directory of generated people on loopback, over
//! ldap:// (StartTLS too) and ldaps://.

use std::{
    ffi::OsString,
    fs,
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use base64::Engine;

use crate::{
    ca::TestCa,
    error::{PeerError, Result},
    net::{self, Protocol},
    process::{PeerProcess, SpawnSpec, WorkDir, find_binary},
};

/// The directory's suffix.
pub const LDAP_BASE_DN: &str = "dc=example,dc=test";
/// Where the people are.
pub const LDAP_PEOPLE_DN: &str = "ou=people,dc=example,dc=test";
/// The rootdn, the only identity that may write.
pub const LDAP_ADMIN_DN: &str = "cn=admin,dc=example,dc=test";
/// The rootdn's password.
pub const LDAP_ADMIN_PASSWORD: &str = "secret";

const GIVEN: [&str; 22] = [
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
];
const FAMILY: [&str; 19] = [
    "Müller",
    "Bråten",
    "García",
    "Øster",
    "Dvořák",
    "Schmidt",
    "Łęcki",
    "Nguyễn",
    "O'Brien",
    "Fischer",
    "Weber",
    "Kovač",
    "Hoffmann",
    "Ólafsdóttir",
    "Meyer",
    "Strauß",
    "Lefèvre",
    "Jäger",
    "Ibáñez",
];
const ORGS: [&str; 6] = [
    "Acme GmbH",
    "Bäckerei Öztürk",
    "Globex AG",
    "Initech",
    "Société Générale de Test",
    "Umbrella KG",
];
const TITLES: [&str; 5] = ["Engineer", "Sales", "Support", "CEO", "Buchhaltung"];

/// One generated inetOrgPerson. Deterministic: person `i` is always the
/// same, so tests can predict what a client must find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryPerson {
    /// 1-based number.
    pub index: usize,
    /// `user0042`.
    pub uid: String,
    /// Given name (often with diacritics).
    pub given_name: String,
    /// Family name (often with diacritics).
    pub family_name: String,
    /// `cn`: given and family name.
    pub common_name: String,
    /// Organisation.
    pub organization: String,
    /// Title.
    pub title: String,
    /// E-mail.
    pub mail: String,
    /// `telephoneNumber` as written: `+49 30 1000042`, `030 1000042` or
    /// `0049 30 1000042` in turn; every 50th person has a 4-digit internal
    /// extension (`7001`) instead.
    pub telephone: String,
    /// `mobile` as written: `+49 170 2000042` or `0170 2000042`.
    pub mobile: String,
    /// `homePhone` of every third person: `089 3000042`.
    pub home: Option<String>,
    /// `jpegPhoto` of every fifth person: a valid 8×8 baseline JPEG.
    pub photo: Option<Vec<u8>>,
}

impl DirectoryPerson {
    /// Person number `i` (1-based).
    #[must_use]
    pub fn generate(i: usize) -> Self {
        let given = GIVEN[i % GIVEN.len()];
        let family = FAMILY[(i * 7) % FAMILY.len()];
        let work = 1_000_000 + i;
        let mobile = 2_000_000 + i;
        let telephone = if i.is_multiple_of(50) {
            format!("7{:03}", (i / 50) % 1000)
        } else {
            match i % 3 {
                0 => format!("+49 30 {work}"),
                1 => format!("030 {work}"),
                _ => format!("0049 30 {work}"),
            }
        };
        Self {
            index: i,
            uid: format!("user{i:04}"),
            given_name: given.to_owned(),
            family_name: family.to_owned(),
            common_name: format!("{given} {family}"),
            organization: ORGS[i % ORGS.len()].to_owned(),
            title: TITLES[i % TITLES.len()].to_owned(),
            mail: format!("user{i:04}@example.test"),
            telephone,
            mobile: if i.is_multiple_of(2) {
                format!("+49 170 {mobile}")
            } else {
                format!("0170 {mobile}")
            },
            home: i
                .is_multiple_of(3)
                .then(|| format!("089 {}", 3_000_000 + i)),
            photo: i
                .is_multiple_of(5)
                .then(|| tiny_jpeg(40 + ((i * 37) % 180) as u8)),
        }
    }

    /// The E.164 form of [`Self::telephone`], `None` for the internal
    /// extensions.
    #[must_use]
    pub fn telephone_e164(&self) -> Option<String> {
        (!self.index.is_multiple_of(50)).then(|| format!("+4930{}", 1_000_000 + self.index))
    }

    /// The E.164 form of [`Self::mobile`].
    #[must_use]
    pub fn mobile_e164(&self) -> String {
        format!("+49170{}", 2_000_000 + self.index)
    }

    /// `uid=<uid>,ou=people,dc=example,dc=test`.
    #[must_use]
    pub fn dn(&self) -> String {
        format!("uid={},{LDAP_PEOPLE_DN}", self.uid)
    }

    /// The entry as LDIF (one record, blank line after).
    #[must_use]
    pub fn to_ldif(&self) -> String {
        let mut e = format!("dn: {}\nobjectClass: inetOrgPerson\n", self.dn());
        for (name, value) in [
            ("uid", &self.uid),
            ("givenName", &self.given_name),
            ("sn", &self.family_name),
            ("cn", &self.common_name),
            ("o", &self.organization),
            ("title", &self.title),
            ("mail", &self.mail),
            ("telephoneNumber", &self.telephone),
            ("mobile", &self.mobile),
        ] {
            e.push_str(&ldif_attribute(name, value.as_bytes()));
        }
        if let Some(home) = &self.home {
            e.push_str(&ldif_attribute("homePhone", home.as_bytes()));
        }
        if let Some(photo) = &self.photo {
            e.push_str(&ldif_attribute("jpegPhoto", photo));
        }
        e.push('\n');
        e
    }
}

/// People 1 to `n`.
#[must_use]
pub fn directory_people(n: usize) -> Vec<DirectoryPerson> {
    (1..=n).map(DirectoryPerson::generate).collect()
}

/// One LDIF attribute line; base64 (`::`) when the value is not plain ASCII
/// or starts with a character LDIF reserves.
#[must_use]
pub fn ldif_attribute(name: &str, value: &[u8]) -> String {
    let plain = value.iter().all(|&b| (32..127).contains(&b))
        && !value.starts_with(b" ")
        && !value.starts_with(b":")
        && !value.starts_with(b"<");
    if plain {
        format!("{name}: {}\n", String::from_utf8_lossy(value))
    } else {
        format!(
            "{name}:: {}\n",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    }
}

/// A valid baseline JPEG, 8×8 pixels of one grey level (about 170 bytes).
#[must_use]
pub fn tiny_jpeg(gray: u8) -> Vec<u8> {
    fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(payload.len() + 2).unwrap_or(u16::MAX);
        let mut out = vec![0xFF, marker];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
    // Standard luminance DC table; an AC table with only end-of-block.
    let dc_bits: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    let mut out = vec![0xFF, 0xD8];
    out.extend(segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
    let mut dqt = vec![0u8];
    dqt.extend([1u8; 64]);
    out.extend(segment(0xDB, &dqt));
    out.extend(segment(0xC0, &[8, 0, 8, 0, 8, 1, 1, 0x11, 0]));
    let mut dht_dc = vec![0x00];
    dht_dc.extend(dc_bits);
    dht_dc.extend(0u8..12);
    out.extend(segment(0xC4, &dht_dc));
    let mut dht_ac = vec![0x10, 1];
    dht_ac.extend([0u8; 15]);
    dht_ac.push(0);
    out.extend(segment(0xC4, &dht_ac));
    out.extend(segment(0xDA, &[1, 1, 0, 0, 0x3F, 0]));
    // DC coefficient of a flat block: 8 * (gray - 128); category + amplitude.
    let dc = 8 * (i32::from(gray) - 128);
    let category = 32 - dc.unsigned_abs().leading_zeros();
    let mut codes: Vec<String> = Vec::new();
    let mut code = 0u32;
    for (length, &count) in dc_bits.iter().enumerate() {
        for _ in 0..count {
            codes.push(format!("{code:0width$b}", width = length + 1));
            code += 1;
        }
        code <<= 1;
    }
    let amplitude = if category == 0 {
        String::new()
    } else {
        let v = if dc > 0 { dc } else { dc + (1 << category) - 1 };
        format!("{v:0width$b}", width = category as usize)
    };
    let mut bits = format!("{}{amplitude}0", codes[category as usize]);
    while bits.len() % 8 != 0 {
        bits.push('1');
    }
    for chunk in bits.as_bytes().chunks(8) {
        let byte = chunk
            .iter()
            .fold(0u8, |acc, &b| (acc << 1) | u8::from(b == b'1'));
        out.push(byte);
        if byte == 0xFF {
            out.push(0);
        }
    }
    out.extend([0xFF, 0xD9]);
    out
}

/// Configures a [`Slapd`].
#[derive(Debug, Clone)]
pub struct SlapdBuilder {
    people: Vec<DirectoryPerson>,
    extra_ldif: String,
    tls: Option<(String, String)>,
    size_limit: Option<u32>,
    lifetime: Duration,
    ready_timeout: Duration,
}

impl Default for SlapdBuilder {
    fn default() -> Self {
        Self {
            people: directory_people(100),
            extra_ldif: String::new(),
            tls: None,
            size_limit: None,
            lifetime: Duration::from_secs(300),
            ready_timeout: Duration::from_secs(15),
        }
    }
}

impl SlapdBuilder {
    /// [`directory_people`]`(n)` instead of the default 100.
    #[must_use]
    pub fn with_generated_people(mut self, n: usize) -> Self {
        self.people = directory_people(n);
        self
    }

    /// These people instead of the generated ones.
    #[must_use]
    pub fn with_people(mut self, people: Vec<DirectoryPerson>) -> Self {
        self.people = people;
        self
    }

    /// More LDIF records loaded after the people (entries under
    /// [`LDAP_PEOPLE_DN`], for example).
    #[must_use]
    pub fn with_ldif(mut self, ldif: &str) -> Self {
        self.extra_ldif.push_str(ldif);
        if !self.extra_ldif.ends_with("\n\n") {
            self.extra_ldif.push_str("\n\n");
        }
        self
    }

    /// Serves ldaps:// on its own port, and StartTLS on the ldap:// port,
    /// with the CA's server certificate.
    #[must_use]
    pub fn with_tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some((ca.server().cert_pem.clone(), ca.server().key_pem.clone()));
        self
    }

    /// Caps searches of everyone but the rootdn at `n` entries (the server
    /// then ends the search with result 4, sizeLimitExceeded), while a paged
    /// search (RFC 2696) may page past it. Without it there is no limit.
    #[must_use]
    pub fn with_size_limit(mut self, n: u32) -> Self {
        self.size_limit = Some(n);
        self
    }

    /// Hard upper bound on the process's life (default 300 s).
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Loads the entries with `slapadd`, starts slapd and waits until its
    /// ports accept connections.
    ///
    /// # Errors
    ///
    /// [`PeerError::NotInstalled`] (`slapd`), [`PeerError::Io`] when
    /// `slapadd` fails, and the start and readiness errors of
    /// [`PeerProcess`].
    pub fn start(self) -> Result<Slapd> {
        let program = find_binary("slapd", "slapd")?;
        let slapadd = find_binary("slapadd", "slapd")?;
        let timeout = find_binary("timeout", "coreutils")?;
        let dir = WorkDir::new("slapd")?;
        fs::create_dir_all(dir.path().join("db"))
            .map_err(|e| PeerError::io("creating the slapd db dir", e))?;
        let run_dir = dir.path().to_string_lossy().into_owned();
        let tls = match &self.tls {
            Some((cert, key)) => {
                let cert = dir.write("tls/server.cert.pem", cert)?;
                let key = dir.write("tls/server.key.pem", key)?;
                format!(
                    "TLSCertificateFile    {}\nTLSCertificateKeyFile {}",
                    cert.display(),
                    key.display()
                )
            }
            None => String::new(),
        };
        let size_limit = match self.size_limit {
            Some(n) => format!("sizelimit size.soft={n} size.hard={n} size.prtotal=unlimited"),
            None => "sizelimit unlimited".to_owned(),
        };
        let config = crate::shipped("slapd", "slapd.conf")?
            .replace("@DIR@", &run_dir)
            .replace("@TLS@", &tls)
            .replace("@SIZELIMIT@", &size_limit);
        let config = dir.write("slapd.conf", config)?;

        let mut ldif = format!(
            "dn: {LDAP_BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example Test\n\n\
             dn: {LDAP_PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n\n"
        );
        for person in &self.people {
            ldif.push_str(&person.to_ldif());
        }
        ldif.push_str(&self.extra_ldif);
        let data = dir.write("data.ldif", ldif)?;
        let output = Command::new(&timeout)
            .arg("120")
            .arg(slapadd)
            .arg("-q")
            .arg("-f")
            .arg(&config)
            .arg("-l")
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| PeerError::io("running slapadd", e))?;
        if !output.status.success() {
            return Err(PeerError::io(
                format!(
                    "slapadd failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ),
                std::io::Error::other("slapadd"),
            ));
        }

        let ldap_port = net::free_port()?;
        let ldaps_port = match self.tls {
            Some(_) => Some(net::free_port()?),
            None => None,
        };
        let mut urls = format!("ldap://127.0.0.1:{ldap_port}/");
        if let Some(port) = ldaps_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{port}/"));
        }
        let args: Vec<OsString> = vec![
            "-f".into(),
            config.into(),
            "-h".into(),
            urls.into(),
            "-d".into(),
            "0".into(),
        ];
        let mut process = PeerProcess::spawn(SpawnSpec {
            name: "slapd",
            program,
            args,
            work_dir: dir.path(),
            env: Vec::new(),
            lifetime: self.lifetime,
        })?;
        for port in std::iter::once(ldap_port).chain(ldaps_port) {
            net::wait_until(
                &mut process,
                "the LDAP listener",
                self.ready_timeout,
                || Ok(net::is_listening(Protocol::Tcp, port)),
            )?;
        }
        Ok(Slapd {
            process,
            dir,
            ldap_port,
            ldaps_port,
            people: self.people,
        })
    }
}

/// A running slapd with the people of its builder under [`LDAP_PEOPLE_DN`].
/// Anyone may read (anonymously too); [`LDAP_ADMIN_DN`] may write. Stopped
/// on drop.
#[derive(Debug)]
pub struct Slapd {
    process: PeerProcess,
    dir: WorkDir,
    ldap_port: u16,
    ldaps_port: Option<u16>,
    people: Vec<DirectoryPerson>,
}

impl Slapd {
    /// A builder: 100 generated people, no TLS, no size limit.
    #[must_use]
    pub fn builder() -> SlapdBuilder {
        SlapdBuilder::default()
    }

    /// `ldap://127.0.0.1:<port>` (StartTLS too, when built with TLS).
    #[must_use]
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// `ldaps://127.0.0.1:<port>`, when built with TLS.
    #[must_use]
    pub fn ldaps_url(&self) -> Option<String> {
        self.ldaps_port.map(|p| format!("ldaps://127.0.0.1:{p}"))
    }

    /// The ldap:// port.
    #[must_use]
    pub fn ldap_port(&self) -> u16 {
        self.ldap_port
    }

    /// The ldaps:// port, when built with TLS.
    #[must_use]
    pub fn ldaps_port(&self) -> Option<u16> {
        self.ldaps_port
    }

    /// The generated people loaded at start.
    #[must_use]
    pub fn people(&self) -> &[DirectoryPerson] {
        &self.people
    }

    /// Applies LDIF change records (`changetype: add/modify/delete`) as the
    /// rootdn with `ldapmodify`.
    ///
    /// # Errors
    ///
    /// [`PeerError::NotInstalled`] (`ldap-utils`), [`PeerError::Control`]
    /// when ldapmodify fails.
    pub fn modify(&self, ldif: &str) -> Result<()> {
        let ldapmodify = find_binary("ldapmodify", "ldap-utils")?;
        let timeout = find_binary("timeout", "coreutils")?;
        let mut child = Command::new(timeout)
            .arg("30")
            .arg(ldapmodify)
            .args([
                "-x",
                "-H",
                &self.url(),
                "-D",
                LDAP_ADMIN_DN,
                "-w",
                LDAP_ADMIN_PASSWORD,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| PeerError::io("running ldapmodify", e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(ldif.as_bytes())
                .map_err(|e| PeerError::io("writing to ldapmodify", e))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| PeerError::io("waiting for ldapmodify", e))?;
        if !output.status.success() {
            return Err(PeerError::Control {
                peer: "slapd".into(),
                command: "ldapmodify".into(),
                message: format!(
                    "{}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        Ok(())
    }

    /// Counts the entries under [`LDAP_PEOPLE_DN`] matching `filter` with an
    /// anonymous `ldapsearch` (paged, so the size limit does not apply).
    ///
    /// # Errors
    ///
    /// [`PeerError::NotInstalled`] (`ldap-utils`), [`PeerError::Control`].
    pub fn count(&self, filter: &str) -> Result<usize> {
        let ldapsearch = find_binary("ldapsearch", "ldap-utils")?;
        let timeout = find_binary("timeout", "coreutils")?;
        let output = Command::new(timeout)
            .arg("30")
            .arg(ldapsearch)
            .args([
                "-x",
                "-LLL",
                "-H",
                &self.url(),
                "-b",
                LDAP_PEOPLE_DN,
                "-E",
                "pr=200/noprompt",
            ])
            .arg(filter)
            .arg("dn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| PeerError::io("running ldapsearch", e))?;
        if !output.status.success() {
            return Err(PeerError::Control {
                peer: "slapd".into(),
                command: format!("ldapsearch {filter}"),
                message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| l.starts_with("dn:"))
            .count())
    }

    /// PID of slapd.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The log.
    #[must_use]
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The last `lines` lines of the log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// The work dir (config, database, LDIF, TLS files).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops slapd (SIGTERM, then SIGKILL after a grace period).
    ///
    /// # Errors
    ///
    /// As [`PeerProcess::stop`].
    pub fn stop(mut self) -> Result<()> {
        self.process.stop().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_are_deterministic_and_varied() {
        let people = directory_people(300);
        assert_eq!(people[41], DirectoryPerson::generate(42));
        assert_eq!(people[41].telephone, "+49 30 1000042");
        assert_eq!(people[40].telephone, "0049 30 1000041");
        assert_eq!(people[39].telephone, "030 1000040");
        assert_eq!(people[49].telephone, "7001");
        assert_eq!(people[49].telephone_e164(), None);
        assert!(people.iter().any(|p| p.family_name == "Bråten"));
        assert!(people.iter().any(|p| p.family_name == "Müller"));
        assert_eq!(people.iter().filter(|p| p.photo.is_some()).count(), 60);
    }

    #[test]
    fn ldif_uses_base64_for_non_ascii() {
        assert_eq!(ldif_attribute("sn", b"Meyer"), "sn: Meyer\n");
        assert_eq!(ldif_attribute("sn", "Zoë".as_bytes()), "sn:: Wm/Dqw==\n");
        assert_eq!(ldif_attribute("x", b" lead"), "x:: IGxlYWQ=\n");
    }

    #[test]
    fn tiny_jpeg_matches_the_reference_bytes() {
        // Byte-for-byte what peers/ldap/gen_ldif.py's tiny_jpeg(40) makes.
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let head = "ffd8ffe000104a46494600010100000100010000ffdb00430001010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101ffc0000b080008000801011100ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc40014100100000000000000000000000000000000ffda0008010100003f00";
        assert_eq!(hex(tiny_jpeg(40)), format!("{head}fe4fdfffd9"));
        assert_eq!(hex(tiny_jpeg(200)), format!("{head}fe901fffd9"));
        assert_eq!(hex(tiny_jpeg(128)), format!("{head}1fffd9"));
    }
}
