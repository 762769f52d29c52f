//! A throwaway certificate authority for TLS, HTTPS and LDAPS peers.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{error::Result, process::WorkDir};

/// The names every server certificate of [`TestCa::new`] is valid for.
pub const SERVER_NAMES: [&str; 4] = ["127.0.0.1", "::1", "localhost", "sip.test"];

/// A certificate and its private key, both as PEM, and where they were written.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its PKCS#8 private key, PEM.
    pub key_pem: String,
    /// File holding `cert_pem`.
    pub cert_path: PathBuf,
    /// File holding `key_pem`.
    pub key_path: PathBuf,
}

/// A certificate authority made fresh for one test, with a server
/// certificate for [`SERVER_NAMES`] signed by it. Keys are ECDSA P-256.
///
/// Everything is written as PEM into the CA's own work dir; trust
/// [`TestCa::ca_cert_path`] (and nothing else) in the client under test.
#[derive(Debug)]
pub struct TestCa {
    dir: WorkDir,
    issuer: Issuer<'static, KeyPair>,
    ca_cert_pem: String,
    ca_cert_der: Vec<u8>,
    ca_cert_path: PathBuf,
    server: IssuedCert,
}

impl TestCa {
    /// Creates the CA and its server certificate.
    ///
    /// # Errors
    ///
    /// [`crate::PeerError::Certificate`] or [`crate::PeerError::Io`].
    pub fn new() -> Result<Self> {
        let dir = WorkDir::new("ca")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "softphone-rs testkit CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "softphone-rs");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca_cert_pem = cert.pem();
        let ca_cert_der = cert.der().to_vec();
        let ca_cert_path = dir.write("ca.cert.pem", &ca_cert_pem)?;
        let issuer = Issuer::new(params, key);
        let mut ca = Self {
            dir,
            issuer,
            ca_cert_pem,
            ca_cert_der,
            ca_cert_path,
            server: IssuedCert {
                cert_pem: String::new(),
                cert_der: Vec::new(),
                key_pem: String::new(),
                cert_path: PathBuf::new(),
                key_path: PathBuf::new(),
            },
        };
        ca.server = ca.issue("server", &SERVER_NAMES)?;
        Ok(ca)
    }

    /// Issues a leaf certificate for `names` (IP addresses or DNS names),
    /// usable by servers and clients, written as `<stem>.cert.pem` and
    /// `<stem>.key.pem`.
    ///
    /// # Errors
    ///
    /// [`crate::PeerError::Certificate`] for a name that is neither an IP
    /// address nor a DNS name, or [`crate::PeerError::Io`].
    pub fn issue(&self, stem: &str, names: &[&str]) -> Result<IssuedCert> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        let common_name = names.first().map_or(stem, String::as_str);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let cert_path = self.dir.write(&format!("{stem}.cert.pem"), &cert_pem)?;
        let key_path = self.dir.write(&format!("{stem}.key.pem"), &key_pem)?;
        Ok(IssuedCert {
            cert_pem,
            cert_der: cert.der().to_vec(),
            key_pem,
            cert_path,
            key_path,
        })
    }

    /// The CA certificate, PEM.
    #[must_use]
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA certificate, DER (a trust anchor for rustls).
    #[must_use]
    pub fn ca_cert_der(&self) -> &[u8] {
        &self.ca_cert_der
    }

    /// File holding the CA certificate (`sip_cafile`, `LDAPTLS_CACERT`, ...).
    #[must_use]
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_cert_path
    }

    /// The server certificate for [`SERVER_NAMES`].
    #[must_use]
    pub fn server(&self) -> &IssuedCert {
        &self.server
    }

    /// The directory holding all PEM files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
