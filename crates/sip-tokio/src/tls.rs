//! TLS configuration: rustls with the aws-lc-rs provider, certificates verified.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What went wrong while building a TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// PEM input that does not hold what was expected.
    #[error("invalid PEM ({what}): {reason}")]
    Pem {
        /// What was being read: certificates or a private key.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The PEM input holds no certificate.
    #[error("no certificate found in the PEM input")]
    NoCertificates,
    /// No trusted root certificate could be loaded.
    #[error("no trusted root certificate could be loaded")]
    NoRootCertificates,
    /// rustls refused the configuration (for example a key that does not match).
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How outbound TLS and WSS connections verify the server.
///
/// The certificate chain is always verified against the configured roots and
/// the server name (SNI) given with the message, or the destination's IP
/// address when no name is given. There is no switch that turns verification
/// off.
///
/// ```no_run
/// use sip_tokio::TlsClientConfig;
///
/// let system = TlsClientConfig::with_system_roots()?;
/// let company = TlsClientConfig::with_ca_file("/etc/softphone/pbx-ca.pem")?;
/// # Ok::<(), sip_tokio::TlsConfigError>(())
/// ```
#[derive(Clone)]
pub struct TlsClientConfig {
    config: Arc<rustls::ClientConfig>,
}

impl TlsClientConfig {
    /// Trusts the operating system's root certificates.
    pub fn with_system_roots() -> Result<Self, TlsConfigError> {
        let loaded = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            return Err(TlsConfigError::NoRootCertificates);
        }
        Self::with_roots(roots)
    }

    /// Trusts the CA certificates in a PEM file (and nothing else).
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        Self::with_ca_pem(&read(path.as_ref())?)
    }

    /// Trusts the CA certificates in PEM text (and nothing else).
    pub fn with_ca_pem(pem: &[u8]) -> Result<Self, TlsConfigError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(pem)? {
            roots.add(cert)?;
        }
        Self::with_roots(roots)
    }

    /// Uses a rustls configuration built elsewhere, for client certificates or
    /// a custom verifier. Its verifier is used as it is.
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> Self {
        TlsClientConfig { config }
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    fn with_roots(roots: RootCertStore) -> Result<Self, TlsConfigError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClientConfig {
            config: Arc::new(config),
        })
    }
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig").finish_non_exhaustive()
    }
}

/// The certificate and key a TLS or WSS listener presents.
#[derive(Clone)]
pub struct TlsServerConfig {
    config: Arc<rustls::ServerConfig>,
}

impl TlsServerConfig {
    /// A certificate chain (leaf first) and its private key, both PEM.
    pub fn from_pem(cert_chain: &[u8], private_key: &[u8]) -> Result<Self, TlsConfigError> {
        let chain = certificates(cert_chain)?;
        let key = PrivateKeyDer::from_pem_slice(private_key).map_err(|e| TlsConfigError::Pem {
            what: "private key",
            reason: e.to_string(),
        })?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(TlsServerConfig {
            config: Arc::new(config),
        })
    }

    /// [`TlsServerConfig::from_pem`] reading two files.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<Self, TlsConfigError> {
        Self::from_pem(&read(cert_chain.as_ref())?, &read(private_key.as_ref())?)
    }

    /// Uses a rustls configuration built elsewhere (client authentication,
    /// certificate resolvers).
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        TlsServerConfig { config }
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig").finish_non_exhaustive()
    }
}

/// The one crypto provider of the workspace.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Pem {
            what: "certificates",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificates);
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_pem_without_certificates_is_refused() {
        assert!(matches!(
            TlsClientConfig::with_ca_pem(b"not a certificate"),
            Err(TlsConfigError::NoCertificates)
        ));
    }

    #[test]
    fn missing_ca_file_names_the_file() {
        let err = TlsClientConfig::with_ca_file("/nonexistent/ca.pem").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
    }
}
