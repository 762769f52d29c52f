//! What the client is told: where the document is, who asks, whom to trust,
//! and the limits.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use config_export::{Config, MAX_DOCUMENT_BYTES, Secret};

use crate::error::ProvisionError;

/// Default check interval when neither the document nor
/// [`Settings::with_check_interval`] says: one day.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Shortest check interval used, whatever the document or settings say.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Default limit on redirects followed for one document.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;
/// Default limit on include nesting (the provisioning URL's document is at
/// depth 0).
pub const DEFAULT_MAX_INCLUDE_DEPTH: usize = 4;
/// Limit on documents fetched in one check (the document and all includes).
pub const MAX_DOCUMENTS: usize = 32;
/// Default time limit of one HTTP exchange, body included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// User name and password for HTTP Basic or Digest authentication; which
/// one is used is the server's choice (Digest preferred when both are
/// offered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password; it never prints.
    pub password: Secret,
}

impl Credentials {
    /// Credentials for `user`.
    pub fn new(user: impl Into<String>, password: impl Into<Secret>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }
}

/// Which certificate authorities the HTTPS client trusts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Trust {
    /// The operating system's trust store.
    #[default]
    System,
    /// Only these CA certificates (DER), not the system's.
    Only(Vec<Vec<u8>>),
}

/// Where and how to fetch the provisioning document.
///
/// ```
/// use provisioning::{Credentials, Settings};
///
/// let settings = Settings::new("https://prov.example.com/{user}.xml")
///     .with_credentials(Credentials::new("alice", "secret"))
///     .with_max_redirects(3);
/// # let _ = settings;
/// ```
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) url: String,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) user: Option<String>,
    pub(crate) installation_id: Option<String>,
    pub(crate) trust: Trust,
    pub(crate) max_body_bytes: u64,
    pub(crate) max_redirects: usize,
    pub(crate) max_include_depth: usize,
    pub(crate) timeout: Duration,
    pub(crate) check_interval: Duration,
    pub(crate) allow_plain_http: bool,
    pub(crate) acceptance: Option<Acceptance>,
}

/// The application's own check of a configuration (see
/// [`Settings::with_acceptance`]).
#[derive(Clone)]
pub(crate) struct Acceptance(pub(crate) Arc<AcceptanceCheck>);

/// What [`Settings::with_acceptance`] takes: `Err` says why a configuration
/// cannot be used.
type AcceptanceCheck = dyn Fn(&Config) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for Acceptance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptance(..)")
    }
}

impl Settings {
    /// Settings for the document at `url`, a template that may hold
    /// `{user}` and `{installation_id}` (replaced percent-encoded).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            credentials: None,
            user: None,
            installation_id: None,
            trust: Trust::System,
            max_body_bytes: MAX_DOCUMENT_BYTES as u64,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            max_include_depth: DEFAULT_MAX_INCLUDE_DEPTH,
            timeout: DEFAULT_TIMEOUT,
            check_interval: DEFAULT_CHECK_INTERVAL,
            allow_plain_http: false,
            acceptance: None,
        }
    }

    /// The URL template.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers 401 challenges with these credentials. They are sent only to
    /// the origin (scheme, host, port) of the provisioning URL.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The value of `{user}`; the credentials' user name when not set.
    #[must_use]
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The value of `{installation_id}`; the profile's own
    /// ([`Store::installation_id`](crate::Store::installation_id)) when not
    /// set.
    #[must_use]
    pub fn with_installation_id(mut self, id: impl Into<String>) -> Self {
        self.installation_id = Some(id.into());
        self
    }

    /// Trusts only the CA certificates in `pem` (one or more `CERTIFICATE`
    /// blocks), not the system's.
    ///
    /// # Errors
    ///
    /// [`ProvisionError::Certificate`] when `pem` holds no certificate.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, ProvisionError> {
        let certificates = pem_certificates(pem)?;
        self.trust = Trust::Only(certificates);
        Ok(self)
    }

    /// Trusts only the CA certificates in the PEM file at `path`.
    ///
    /// # Errors
    ///
    /// [`ProvisionError::Store`] when the file cannot be read,
    /// [`ProvisionError::Certificate`] when it holds no certificate.
    pub fn with_ca_file(self, path: impl AsRef<Path>) -> Result<Self, ProvisionError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| ProvisionError::store(path, e))?;
        self.with_ca_pem(&pem)
    }

    /// Sets which certificate authorities are trusted.
    #[must_use]
    pub fn with_trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// Largest document accepted, in bytes (default
    /// [`MAX_DOCUMENT_BYTES`]). A larger body is cut off and refused.
    #[must_use]
    pub fn with_max_body_bytes(mut self, limit: u64) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Most redirects followed for one document (default
    /// [`DEFAULT_MAX_REDIRECTS`]).
    #[must_use]
    pub fn with_max_redirects(mut self, limit: usize) -> Self {
        self.max_redirects = limit;
        self
    }

    /// Deepest include nesting accepted (default
    /// [`DEFAULT_MAX_INCLUDE_DEPTH`]).
    #[must_use]
    pub fn with_max_include_depth(mut self, limit: usize) -> Self {
        self.max_include_depth = limit;
        self
    }

    /// Time limit of one HTTP exchange, body included (default
    /// [`DEFAULT_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Check interval when the document has no `<check-interval>` (default
    /// [`DEFAULT_CHECK_INTERVAL`], at least [`MIN_CHECK_INTERVAL`]).
    #[must_use]
    pub fn with_check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval.max(MIN_CHECK_INTERVAL);
        self
    }

    /// A check the configuration must pass, besides its own validation,
    /// before it replaces the stored one: the application's (for the
    /// softphone, `softphone::check_config`), so that a document the
    /// application could not start with is refused
    /// ([`ProvisionError::Unusable`]) and the last good configuration
    /// kept. `Err` says why, without secrets.
    #[must_use]
    pub fn with_acceptance(
        mut self,
        check: impl Fn(&Config) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.acceptance = Some(Acceptance(Arc::new(check)));
        self
    }

    /// Options that weaken security, for tests and lab set-ups.
    #[must_use]
    pub fn dangerous(self) -> DangerousSettings {
        DangerousSettings { settings: self }
    }
}

/// Options that weaken security: reached through [`Settings::dangerous`].
#[derive(Debug, Clone)]
pub struct DangerousSettings {
    settings: Settings,
}

impl DangerousSettings {
    /// Accepts plain `http:` URLs and redirects to them. The document and
    /// Basic credentials then cross the network in clear.
    #[must_use]
    pub fn allow_plain_http(mut self) -> Settings {
        self.settings.allow_plain_http = true;
        self.settings
    }
}

/// The DER certificates in `pem`.
fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, ProvisionError> {
    use base64::Engine as _;

    let text = std::str::from_utf8(pem).map_err(|_| ProvisionError::Certificate {
        reason: "the PEM text is not utf-8".to_owned(),
    })?;
    let mut out = Vec::new();
    let mut rest = text;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let end = after.find(END).ok_or_else(|| ProvisionError::Certificate {
            reason: "a CERTIFICATE block has no end line".to_owned(),
        })?;
        let base64: String = after[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(base64)
            .map_err(|_| ProvisionError::Certificate {
                reason: "a CERTIFICATE block is not base64".to_owned(),
            })?;
        out.push(der);
        rest = &after[end + END.len()..];
    }
    if out.is_empty() {
        return Err(ProvisionError::Certificate {
            reason: "no CERTIFICATE block found".to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_decoded_and_garbage_is_refused() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBAU=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            pem_certificates(pem.as_bytes()).unwrap(),
            [vec![0, 1, 2, 3], vec![4, 5]]
        );
        assert!(pem_certificates(b"nothing here").is_err());
        assert!(
            pem_certificates(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----")
                .is_err()
        );
        assert!(pem_certificates(b"-----BEGIN CERTIFICATE-----\nAAEC").is_err());
    }

    #[test]
    fn plain_http_needs_the_dangerous_door() {
        assert!(!Settings::new("http://x/").allow_plain_http);
        assert!(
            Settings::new("http://x/")
                .dangerous()
                .allow_plain_http()
                .allow_plain_http
        );
    }
}
