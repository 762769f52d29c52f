//! LDAP and LDAPS directories: configuration, full fetch with paged
//! results, live search, and the mapping of entries to contacts.
//!
//! The network part ([`LdapSource::fetch`], [`LdapSource::search`]) runs on
//! tokio through `ldap3`. Everything that reads directory data
//! ([`DirectoryEntry::from_result_entry`], [`DirectoryEntry::to_contact`],
//! [`escape_filter_value`]) is pure and returns typed errors for bad input.

use std::{fmt, sync::Arc, time::Duration};

use ldap3::{
    LdapConnAsync, LdapConnSettings, Scope, SearchOptions,
    adapters::{Adapter, EntriesOnly, PagedResults},
    asn1::{PL, StructureTag},
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, pem::PemObject};

use crate::{
    fold::{self, Term},
    model::{Contact, ContactNumber, NumberKind, PostalAddress, Source},
    number::{self, Region},
};

/// Most entries one fetch accepts; a directory larger than this is refused
/// rather than filling memory.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Most values read from one attribute.
pub const MAX_VALUES: usize = 32;
/// Longest text value read (bytes); photos have their own limit.
pub const MAX_TEXT_LEN: usize = 4096;

/// A password that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    #[must_use]
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How to authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LdapBind {
    /// No bind: anonymous access.
    #[default]
    Anonymous,
    /// Simple bind with a DN and password.
    Simple {
        /// The bind DN.
        dn: String,
        /// Its password.
        password: Password,
    },
}

/// Which certificates a TLS connection (LDAPS or StartTLS) trusts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsTrust {
    /// The operating system's roots.
    #[default]
    SystemRoots,
    /// Only these CA certificates (DER), for a company CA.
    Certificates(Vec<Vec<u8>>),
}

/// Which attributes fill which contact fields. The defaults are the
/// inetOrgPerson ones; where a field lists several attributes the first
/// present one wins (numbers, e-mails and URLs take all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeMap {
    /// The source id; `None` uses the entry's DN.
    pub id: Option<String>,
    /// Display name (`displayName`, `cn`).
    pub display_name: Vec<String>,
    /// Given name (`givenName`).
    pub given_name: Vec<String>,
    /// Family name (`sn`).
    pub family_name: Vec<String>,
    /// Nickname (none by default).
    pub nickname: Vec<String>,
    /// Organisation (`o`).
    pub organization: Vec<String>,
    /// Title (`title`).
    pub title: Vec<String>,
    /// Numbers and their kind (`telephoneNumber` work, `mobile`, `homePhone`,
    /// `facsimileTelephoneNumber` fax).
    pub numbers: Vec<(String, NumberKind)>,
    /// E-mail (`mail`).
    pub emails: Vec<String>,
    /// SIP addresses (none by default).
    pub sip_addresses: Vec<String>,
    /// Web addresses (`labeledURI`, the URI before any label).
    pub urls: Vec<String>,
    /// Postal address (`postalAddress`, lines separated by `$`).
    pub postal_address: Vec<String>,
    /// Photo (`jpegPhoto`).
    pub photo: Vec<String>,
}

impl Default for AttributeMap {
    fn default() -> Self {
        let v = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect();
        Self {
            id: None,
            display_name: v(&["displayName", "cn"]),
            given_name: v(&["givenName"]),
            family_name: v(&["sn"]),
            nickname: Vec::new(),
            organization: v(&["o"]),
            title: v(&["title"]),
            numbers: vec![
                ("telephoneNumber".into(), NumberKind::Work),
                ("mobile".into(), NumberKind::Mobile),
                ("homePhone".into(), NumberKind::Home),
                ("facsimileTelephoneNumber".into(), NumberKind::Fax),
            ],
            emails: v(&["mail"]),
            sip_addresses: Vec::new(),
            urls: v(&["labeledURI"]),
            postal_address: v(&["postalAddress"]),
            photo: v(&["jpegPhoto"]),
        }
    }
}

impl AttributeMap {
    /// Every attribute to request, without duplicates.
    #[must_use]
    pub fn requested(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let all = self
            .id
            .iter()
            .chain(&self.display_name)
            .chain(&self.given_name)
            .chain(&self.family_name)
            .chain(&self.nickname)
            .chain(&self.organization)
            .chain(&self.title)
            .chain(self.numbers.iter().map(|(a, _)| a))
            .chain(&self.emails)
            .chain(&self.sip_addresses)
            .chain(&self.urls)
            .chain(&self.postal_address)
            .chain(&self.photo);
        for a in all {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(a)) {
                out.push(a.clone());
            }
        }
        out
    }

    fn name_attributes(&self) -> impl Iterator<Item = &String> {
        self.display_name
            .iter()
            .chain(&self.given_name)
            .chain(&self.family_name)
            .chain(&self.nickname)
            .chain(&self.organization)
    }
}

/// Why talking to a directory failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LdapError {
    /// The URL is not `ldap://host[:port]` or `ldaps://host[:port]`.
    #[error("directory URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The configuration cannot work (see the message).
    #[error("directory {name}: {reason}")]
    InvalidConfig {
        /// The source's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A trusted certificate could not be read.
    #[error("trusted certificate: {0}")]
    Certificate(String),
    /// The TLS handshake failed (an untrusted or mismatched certificate,
    /// for example).
    #[error("TLS with {url} failed: {message}")]
    Tls {
        /// The URL.
        url: String,
        /// The TLS error.
        message: String,
    },
    /// The connection could not be made (or StartTLS was refused).
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The underlying error.
        source: Box<ldap3::LdapError>,
    },
    /// The server refused the bind.
    #[error("bind as {dn:?} refused: result code {code} {message}")]
    Bind {
        /// The bind DN.
        dn: String,
        /// LDAP result code (49: invalid credentials).
        code: u32,
        /// The server's diagnostic text.
        message: String,
    },
    /// The search ended with an error result: 3 time limit exceeded, 4 size
    /// limit exceeded, 32 no such object, ...
    #[error("search under {base:?} failed: result code {code} {message}")]
    Search {
        /// The search base.
        base: String,
        /// LDAP result code.
        code: u32,
        /// The server's diagnostic text.
        message: String,
    },
    /// The connection broke or the server sent something unexpected.
    #[error("directory protocol error during {during}: {source}")]
    Protocol {
        /// The operation.
        during: &'static str,
        /// The underlying error.
        source: Box<ldap3::LdapError>,
    },
    /// The directory did not answer within the time limit.
    #[error("directory did not finish within {0:?}")]
    TimedOut(Duration),
    /// More entries than [`MAX_ENTRIES`].
    #[error("directory returned more than {0} entries")]
    TooManyEntries(usize),
    /// The server sent a response the LDAP client could not read (ldap3
    /// gives up on some malformed ones, such as a DN or referral that is
    /// not UTF-8, by panicking; the panic stays inside the operation).
    #[error("directory sent a response that could not be read during {during}")]
    Unreadable {
        /// The operation.
        during: &'static str,
    },
}

/// Why one directory entry was not turned into a contact. The entry is
/// skipped; the others are still synced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The BER structure is not a SearchResultEntry.
    #[error("malformed search result entry: {0}")]
    Malformed(&'static str),
    /// The DN is not UTF-8.
    #[error("entry DN is not UTF-8")]
    DnNotUtf8,
    /// A text attribute's value is not UTF-8.
    #[error("entry {dn}: attribute {attribute} is not UTF-8")]
    NotUtf8 {
        /// The entry.
        dn: String,
        /// The attribute.
        attribute: String,
    },
    /// A text value is longer than [`MAX_TEXT_LEN`].
    #[error("entry {dn}: attribute {attribute} has a value of {len} bytes")]
    ValueTooLong {
        /// The entry.
        dn: String,
        /// The attribute.
        attribute: String,
        /// Its length.
        len: usize,
    },
    /// No attribute gives the contact a name.
    #[error("entry {dn} has no name, organisation, e-mail or number")]
    NoName {
        /// The entry.
        dn: String,
    },
    /// The configured id attribute is missing.
    #[error("entry {dn} lacks the id attribute {attribute}")]
    MissingId {
        /// The entry.
        dn: String,
        /// The attribute.
        attribute: String,
    },
}

/// A directory entry: its DN and raw attribute values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The DN.
    pub dn: String,
    /// Attribute names (as the server sent them) and values.
    pub attributes: Vec<(String, Vec<Vec<u8>>)>,
}

impl DirectoryEntry {
    /// Reads a SearchResultEntry (RFC 4511 §4.5.2) from its BER structure,
    /// checking every level instead of panicking as `ldap3`'s
    /// `SearchEntry::construct` does.
    ///
    /// # Errors
    ///
    /// [`EntryError::Malformed`], [`EntryError::DnNotUtf8`].
    pub fn from_result_entry(tag: StructureTag) -> Result<Self, EntryError> {
        if tag.id != 4 {
            return Err(EntryError::Malformed(
                "not a SearchResultEntry (application 4)",
            ));
        }
        let PL::C(parts) = tag.payload else {
            return Err(EntryError::Malformed("entry is not constructed"));
        };
        let mut parts = parts.into_iter();
        let Some(StructureTag {
            payload: PL::P(dn), ..
        }) = parts.next()
        else {
            return Err(EntryError::Malformed("entry has no DN octet string"));
        };
        let dn = String::from_utf8(dn).map_err(|_| EntryError::DnNotUtf8)?;
        let Some(StructureTag {
            payload: PL::C(list),
            ..
        }) = parts.next()
        else {
            return Err(EntryError::Malformed("entry has no attribute list"));
        };
        let mut attributes = Vec::with_capacity(list.len());
        for attribute in list {
            let PL::C(pair) = attribute.payload else {
                return Err(EntryError::Malformed("attribute is not a sequence"));
            };
            let mut pair = pair.into_iter();
            let (
                Some(StructureTag {
                    payload: PL::P(name),
                    ..
                }),
                Some(StructureTag {
                    payload: PL::C(values),
                    ..
                }),
            ) = (pair.next(), pair.next())
            else {
                return Err(EntryError::Malformed(
                    "attribute lacks a type or a value set",
                ));
            };
            let name = String::from_utf8(name)
                .map_err(|_| EntryError::Malformed("attribute type is not UTF-8"))?;
            let mut bytes = Vec::with_capacity(values.len().min(MAX_VALUES));
            for value in values.into_iter().take(MAX_VALUES) {
                let PL::P(v) = value.payload else {
                    return Err(EntryError::Malformed(
                        "attribute value is not an octet string",
                    ));
                };
                bytes.push(v);
            }
            attributes.push((name, bytes));
        }
        Ok(Self { dn, attributes })
    }

    /// The values of an attribute (names compare case-insensitively, and an
    /// option such as `;binary` is ignored).
    #[must_use]
    pub fn values(&self, attribute: &str) -> &[Vec<u8>] {
        self.attributes
            .iter()
            .find(|(name, _)| {
                let base = name.split(';').next().unwrap_or(name);
                base.eq_ignore_ascii_case(attribute)
            })
            .map_or(&[], |(_, v)| v.as_slice())
    }

    fn texts(&self, attribute: &str) -> Result<Vec<String>, EntryError> {
        let mut out = Vec::new();
        for value in self.values(attribute) {
            if value.len() > MAX_TEXT_LEN {
                return Err(EntryError::ValueTooLong {
                    dn: self.dn.clone(),
                    attribute: attribute.to_owned(),
                    len: value.len(),
                });
            }
            let text = std::str::from_utf8(value).map_err(|_| EntryError::NotUtf8 {
                dn: self.dn.clone(),
                attribute: attribute.to_owned(),
            })?;
            let text = text.trim();
            if !text.is_empty() {
                out.push(text.to_owned());
            }
        }
        Ok(out)
    }

    fn first_text(&self, attributes: &[String]) -> Result<Option<String>, EntryError> {
        for attribute in attributes {
            if let Some(first) = self.texts(attribute)?.into_iter().next() {
                return Ok(Some(first));
            }
        }
        Ok(None)
    }

    fn all_texts(&self, attributes: &[String]) -> Result<Vec<String>, EntryError> {
        let mut out = Vec::new();
        for attribute in attributes {
            for text in self.texts(attribute)? {
                if !out.contains(&text) {
                    out.push(text);
                }
            }
        }
        Ok(out)
    }

    /// The id of the contact this entry becomes: the value of the map's id
    /// attribute, or the DN when there is none. Read on its own, so that an
    /// entry that cannot be mapped otherwise still names the contact it
    /// would update.
    ///
    /// # Errors
    ///
    /// [`EntryError::NotUtf8`], [`EntryError::ValueTooLong`] for the id
    /// attribute, [`EntryError::MissingId`].
    pub fn source_id(&self, map: &AttributeMap) -> Result<String, EntryError> {
        match &map.id {
            None => Ok(self.dn.clone()),
            Some(attribute) => self
                .first_text(std::slice::from_ref(attribute))?
                .ok_or_else(|| EntryError::MissingId {
                    dn: self.dn.clone(),
                    attribute: attribute.clone(),
                }),
        }
    }

    /// The entry as a contact of `source` (its photo bytes, unchecked, are
    /// returned beside it; see [`crate::PhotoCache`]). Numbers are
    /// normalised with `region`.
    ///
    /// # Errors
    ///
    /// [`EntryError::NotUtf8`], [`EntryError::ValueTooLong`],
    /// [`EntryError::NoName`], [`EntryError::MissingId`].
    pub fn to_contact(
        &self,
        map: &AttributeMap,
        source: &Source,
        region: Option<Region>,
    ) -> Result<(Contact, Option<Vec<u8>>), EntryError> {
        let source_id = self.source_id(map)?;
        let mut numbers = Vec::new();
        for (attribute, kind) in &map.numbers {
            for raw in self.texts(attribute)? {
                let n = ContactNumber::new(*kind, &raw, region);
                if !numbers
                    .iter()
                    .any(|m: &ContactNumber| m.number == n.number && m.kind == n.kind)
                {
                    numbers.push(n);
                }
            }
        }
        let urls = self
            .all_texts(&map.urls)?
            .into_iter()
            .filter_map(|u| u.split_whitespace().next().map(str::to_owned))
            .collect();
        let postal_addresses = self
            .all_texts(&map.postal_address)?
            .into_iter()
            .map(|text| PostalAddress {
                kind: NumberKind::Work,
                street: text
                    .split('$')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n"),
                ..PostalAddress::default()
            })
            .collect();
        let mut contact = Contact {
            id: None,
            source: source.clone(),
            source_id: Some(source_id),
            display_name: self.first_text(&map.display_name)?.unwrap_or_default(),
            given_name: self.first_text(&map.given_name)?,
            family_name: self.first_text(&map.family_name)?,
            nickname: self.first_text(&map.nickname)?,
            organization: self.first_text(&map.organization)?,
            title: self.first_text(&map.title)?,
            numbers,
            sip_addresses: self.all_texts(&map.sip_addresses)?,
            emails: self.all_texts(&map.emails)?,
            im: Vec::new(),
            postal_addresses,
            urls,
            photo: None,
            favourite: false,
        };
        contact.display_name =
            contact
                .derived_display_name()
                .ok_or_else(|| EntryError::NoName {
                    dn: self.dn.clone(),
                })?;
        let photo = map
            .photo
            .iter()
            .find_map(|a| self.values(a).first().cloned());
        Ok((contact, photo))
    }
}

/// An entry that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// The DN, when it could be read.
    pub dn: Option<String>,
    /// Why.
    pub error: EntryError,
}

/// Everything a fetch read.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The entries that could be read.
    pub entries: Vec<DirectoryEntry>,
    /// The ones that could not.
    pub skipped: Vec<SkippedEntry>,
}

/// Runs one directory operation on a task of its own, within `limit`: a
/// panic in ldap3 over a malformed response ends the operation with
/// [`LdapError::Unreadable`] instead of taking the caller down, and the
/// task ends with the operation however the caller stops waiting.
async fn guarded<T: Send + 'static>(
    during: &'static str,
    limit: Duration,
    operation: impl Future<Output = Result<T, LdapError>> + Send + 'static,
) -> Result<T, LdapError> {
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(tokio::spawn(operation));
    match tokio::time::timeout(limit, &mut task.0).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(LdapError::Unreadable { during }),
        Err(_) => Err(LdapError::TimedOut(limit)),
    }
}

/// An LDAP or LDAPS directory to sync from and search.
///
/// ```
/// use std::time::Duration;
/// use contacts::{LdapSource, Password};
///
/// let source = LdapSource::new("corp", "ldaps://ldap.example.com", "ou=people,dc=example,dc=com")
///     .unwrap()
///     .with_simple_bind("cn=phone,dc=example,dc=com", Password::new("secret"))
///     .with_page_size(Some(500))
///     .with_time_limit(Duration::from_secs(30));
/// assert_eq!(source.source().to_string(), "ldap:corp");
/// ```
#[derive(Debug, Clone)]
pub struct LdapSource {
    name: String,
    url: String,
    tls: bool,
    starttls: bool,
    bind: LdapBind,
    base_dn: String,
    filter: String,
    attributes: AttributeMap,
    trust: TlsTrust,
    page_size: Option<u32>,
    size_limit: u32,
    time_limit: Duration,
    live_time_limit: Duration,
    connect_timeout: Duration,
    default_region: Option<Region>,
    cleartext_bind_allowed: bool,
}

impl LdapSource {
    /// A source named `name` (its contacts' source is `ldap:<name>`) at
    /// `url` (`ldap://` or `ldaps://`), searching the subtree under
    /// `base_dn` for `(objectClass=inetOrgPerson)`, anonymously, 500
    /// entries a page, at most 60 s.
    ///
    /// # Errors
    ///
    /// [`LdapError::InvalidUrl`], [`LdapError::InvalidConfig`] for an empty
    /// name.
    pub fn new(name: &str, url: &str, base_dn: &str) -> Result<Self, LdapError> {
        let invalid = |reason| LdapError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let lower = url.to_ascii_lowercase();
        let tls = if lower.starts_with("ldaps://") {
            true
        } else if lower.starts_with("ldap://") {
            false
        } else {
            return Err(invalid("the scheme must be ldap:// or ldaps://"));
        };
        let rest = &url[if tls { 8 } else { 7 }..];
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        if name.trim().is_empty() || name.contains(char::is_whitespace) {
            return Err(LdapError::InvalidConfig {
                name: name.to_owned(),
                reason: "the source name must be one word".into(),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            url: url.to_owned(),
            tls,
            starttls: false,
            bind: LdapBind::Anonymous,
            base_dn: base_dn.to_owned(),
            filter: "(objectClass=inetOrgPerson)".into(),
            attributes: AttributeMap::default(),
            trust: TlsTrust::SystemRoots,
            page_size: Some(500),
            size_limit: 0,
            time_limit: Duration::from_secs(60),
            live_time_limit: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(10),
            default_region: None,
            cleartext_bind_allowed: false,
        })
    }

    /// Upgrades an `ldap://` connection with StartTLS (RFC 4513 §3).
    #[must_use]
    pub fn with_starttls(mut self, starttls: bool) -> Self {
        self.starttls = starttls;
        self
    }

    /// Binds with a DN and password (simple bind).
    #[must_use]
    pub fn with_simple_bind(mut self, dn: &str, password: Password) -> Self {
        self.bind = LdapBind::Simple {
            dn: dn.to_owned(),
            password,
        };
        self
    }

    /// Allows a simple bind over `ldap://` without StartTLS, which sends the
    /// password in clear. Refused unless allowed.
    #[must_use]
    pub fn with_cleartext_bind_allowed(mut self, allowed: bool) -> Self {
        self.cleartext_bind_allowed = allowed;
        self
    }

    /// The search filter (RFC 4515), such as
    /// `(&(objectClass=inetOrgPerson)(telephoneNumber=*))`.
    #[must_use]
    pub fn with_filter(mut self, filter: &str) -> Self {
        self.filter = filter.to_owned();
        self
    }

    /// The attribute mapping.
    #[must_use]
    pub fn with_attributes(mut self, attributes: AttributeMap) -> Self {
        self.attributes = attributes;
        self
    }

    /// Which CA certificates TLS trusts.
    #[must_use]
    pub fn with_trust(mut self, trust: TlsTrust) -> Self {
        self.trust = trust;
        self
    }

    /// Trusts only the CA certificates in `pem` (one or more PEM blocks).
    ///
    /// # Errors
    ///
    /// [`LdapError::Certificate`] when no certificate can be read.
    pub fn with_trusted_pem(self, pem: &str) -> Result<Self, LdapError> {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LdapError::Certificate(e.to_string()))?;
        if certs.is_empty() {
            return Err(LdapError::Certificate(
                "no CERTIFICATE block in the PEM text".into(),
            ));
        }
        Ok(self.with_trust(TlsTrust::Certificates(certs)))
    }

    /// Entries per page of the paged-results control (RFC 2696); `None`
    /// asks for all entries in one search, which servers cap at their size
    /// limit.
    #[must_use]
    pub fn with_page_size(mut self, page_size: Option<u32>) -> Self {
        self.page_size = page_size.filter(|&n| n > 0);
        self
    }

    /// The most entries the server should return (0: no client limit).
    #[must_use]
    pub fn with_size_limit(mut self, size_limit: u32) -> Self {
        self.size_limit = size_limit;
        self
    }

    /// The longest a fetch (a sync) may take; also sent to the server as
    /// its time limit.
    #[must_use]
    pub fn with_time_limit(mut self, time_limit: Duration) -> Self {
        self.time_limit = time_limit.max(Duration::from_secs(1));
        self
    }

    /// The longest a live [`search`](Self::search) may take, connecting
    /// included (3 s unless set): it runs while the user types, so a slow
    /// or unreachable directory must not hold the answer up for long.
    #[must_use]
    pub fn with_live_time_limit(mut self, time_limit: Duration) -> Self {
        self.live_time_limit = time_limit.max(Duration::from_millis(100));
        self
    }

    /// The longest connecting may take.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The region numbers written in national form are read in.
    #[must_use]
    pub fn with_default_region(mut self, region: Option<Region>) -> Self {
        self.default_region = region;
        self
    }

    /// The source's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source its contacts carry: `ldap:<name>`.
    #[must_use]
    pub fn source(&self) -> Source {
        Source::Ldap(self.name.clone())
    }

    /// The URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The attribute mapping.
    #[must_use]
    pub fn attributes(&self) -> &AttributeMap {
        &self.attributes
    }

    /// The region for national numbers.
    #[must_use]
    pub fn default_region(&self) -> Option<Region> {
        self.default_region
    }

    /// Reads every entry under the base DN that matches the filter, page by
    /// page. Either the whole result set is returned or an error: a search
    /// that ends with a non-success result (size or time limit exceeded,
    /// for example) is an error, so a partial directory is never mistaken
    /// for a complete one.
    ///
    /// # Errors
    ///
    /// Any [`LdapError`].
    pub async fn fetch(&self) -> Result<Fetched, LdapError> {
        let this = self.clone();
        guarded("fetch", self.time_limit, async move {
            this.fetch_inner(&this.filter, this.size_limit, None).await
        })
        .await
    }

    /// Searches the directory live for what a user typed, for queries the
    /// store cannot answer: every word must be part of a name or
    /// organisation attribute, digits part of a number attribute. Input is
    /// escaped (RFC 4515). Returns at most `limit` contacts, ranked like
    /// [`crate::Contacts::search`]. Photos are neither asked for nor read,
    /// and at most `4 limit` (at most 500) entries are read whatever the
    /// server's size limit; the whole search is bounded by
    /// [`with_live_time_limit`](Self::with_live_time_limit).
    ///
    /// # Errors
    ///
    /// Any [`LdapError`]; a size limit is not an error here.
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<Contact>, LdapError> {
        let Some(filter) = self.query_filter(query) else {
            return Ok(Vec::new());
        };
        let size = u32::try_from(limit.saturating_mul(4).clamp(1, 500)).unwrap_or(500);
        let this = self.clone();
        let live = self.live_time_limit;
        let fetched = guarded("search", live, async move {
            this.fetch_inner(&filter, size, Some(live)).await
        })
        .await?;
        let source = self.source();
        let mut map = self.attributes.clone();
        map.photo.clear();
        let contacts: Vec<Contact> = fetched
            .entries
            .iter()
            .filter_map(|e| e.to_contact(&map, &source, self.default_region).ok())
            .map(|(c, _)| c)
            .collect();
        let entries = contacts
            .iter()
            .enumerate()
            .map(|(i, c)| crate::IndexEntry::from_contact(crate::ContactId(i as i64), c));
        let index = crate::SearchIndex::from_entries(entries);
        Ok(index
            .search(query, limit)
            .into_iter()
            .filter_map(|hit| {
                usize::try_from(hit.id.0)
                    .ok()
                    .and_then(|i| contacts.get(i))
                    .cloned()
            })
            .collect())
    }

    /// The filter [`LdapSource::search`] sends for `query`: the configured
    /// filter ANDed with one clause per term. `None` for an empty query.
    #[must_use]
    pub fn query_filter(&self, query: &str) -> Option<String> {
        let terms = raw_terms(query);
        if terms.is_empty() {
            return None;
        }
        let mut filter = format!("(&{}", parenthesized(&self.filter));
        for term in terms {
            filter.push_str("(|");
            match term {
                RawTerm::Words(word) => {
                    let value = escape_filter_value(&word);
                    for attribute in self.attributes.name_attributes() {
                        filter.push_str(&format!("({attribute}=*{value}*)"));
                    }
                }
                RawTerm::Digits(digits) => {
                    let core = self.digits_core(&digits);
                    let value = escape_filter_value(&core);
                    for (attribute, _) in &self.attributes.numbers {
                        filter.push_str(&format!("({attribute}=*{value}*)"));
                    }
                }
            }
            filter.push(')');
        }
        filter.push(')');
        Some(filter)
    }

    /// The digits to look for inside directory numbers: the national
    /// significant number when the query normalises (directories write
    /// numbers in many forms, and telephoneNumber matching ignores spaces
    /// and hyphens), else the digits typed.
    fn digits_core(&self, digits: &str) -> String {
        let n = number::normalize(digits, self.default_region);
        match n.national {
            Some(national) => national.trim_start_matches('0').to_owned(),
            None => digits.to_owned(),
        }
    }

    fn tls_config(&self) -> Result<Arc<ClientConfig>, LdapError> {
        let mut roots = RootCertStore::empty();
        match &self.trust {
            TlsTrust::SystemRoots => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
            }
            TlsTrust::Certificates(certs) => {
                for der in certs {
                    roots
                        .add(CertificateDer::from(der.clone()))
                        .map_err(|e| LdapError::Certificate(e.to_string()))?;
                }
            }
        }
        if roots.is_empty() {
            return Err(LdapError::Certificate("no trusted CA certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| LdapError::Certificate(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    async fn connect(&self) -> Result<ldap3::Ldap, LdapError> {
        if self.tls && self.starttls {
            return Err(LdapError::InvalidConfig {
                name: self.name.clone(),
                reason: "StartTLS is for ldap:// URLs; ldaps:// is TLS already".into(),
            });
        }
        let secure = self.tls || self.starttls;
        if !secure && matches!(self.bind, LdapBind::Simple { .. }) && !self.cleartext_bind_allowed {
            return Err(LdapError::InvalidConfig {
                name: self.name.clone(),
                reason: "a simple bind over ldap:// without StartTLS sends the password in clear; \
                         use ldaps:// or StartTLS, or allow it explicitly"
                    .into(),
            });
        }
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.connect_timeout);
        if secure {
            settings = settings
                .set_config(self.tls_config()?)
                .set_starttls(self.starttls);
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|source| connect_error(&self.url, source))?;
        ldap3::drive!(conn);
        if let LdapBind::Simple { dn, password } = &self.bind {
            let result = ldap
                .simple_bind(dn, password.expose())
                .await
                .map_err(|source| LdapError::Protocol {
                    during: "bind",
                    source: Box::new(source),
                })?;
            if result.rc != 0 {
                return Err(LdapError::Bind {
                    dn: dn.clone(),
                    code: result.rc,
                    message: result.text,
                });
            }
        }
        Ok(ldap)
    }

    /// Reads the entries `filter` matches. `live`: a live search with this
    /// time limit, which reads at most `size_limit` entries (a size limit
    /// is no error then) and no photos; otherwise a whole fetch.
    async fn fetch_inner(
        &self,
        filter: &str,
        size_limit: u32,
        live: Option<Duration>,
    ) -> Result<Fetched, LdapError> {
        let partial_ok = live.is_some();
        let time_limit = live.unwrap_or(self.time_limit);
        let mut ldap = self.connect().await?;
        let attributes = if partial_ok {
            let mut map = self.attributes.clone();
            map.photo.clear();
            map.requested()
        } else {
            self.attributes.requested()
        };
        // The server counts whole seconds; zero would mean no limit.
        let seconds = i32::try_from(time_limit.as_secs().max(1)).unwrap_or(i32::MAX);
        let options = SearchOptions::new()
            .sizelimit(i32::try_from(size_limit).unwrap_or(i32::MAX))
            .timelimit(seconds);
        let mut adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> =
            vec![Box::new(EntriesOnly::new())];
        if let (Some(page), false) = (self.page_size, partial_ok) {
            adapters.push(Box::new(PagedResults::new(
                i32::try_from(page).unwrap_or(i32::MAX),
            )));
        }
        let protocol = |during| {
            move |source| LdapError::Protocol {
                during,
                source: Box::new(source),
            }
        };
        let mut stream = ldap
            .with_search_options(options)
            .with_timeout(time_limit)
            .streaming_search_with(adapters, &self.base_dn, Scope::Subtree, filter, attributes)
            .await
            .map_err(protocol("search"))?;
        let mut fetched = Fetched::default();
        // A live search stops at its size limit even if the server does not.
        let mut capped = false;
        loop {
            let read = fetched.entries.len() + fetched.skipped.len();
            if partial_ok && size_limit > 0 && read >= size_limit as usize {
                capped = true;
                break;
            }
            let Some(entry) = stream.next().await.map_err(protocol("reading entries"))? else {
                break;
            };
            if read >= MAX_ENTRIES {
                return Err(LdapError::TooManyEntries(MAX_ENTRIES));
            }
            match DirectoryEntry::from_result_entry(entry.0) {
                Ok(e) => fetched.entries.push(e),
                Err(error) => fetched.skipped.push(SkippedEntry { dn: None, error }),
            }
        }
        let result = stream.finish().await;
        let _ = ldap.unbind().await;
        // 4: size limit exceeded, acceptable for a live search only; one
        // this side stopped is left unfinished (the unbind ends it).
        if result.rc != 0 && !capped && !(partial_ok && result.rc == 4) {
            return Err(LdapError::Search {
                base: self.base_dn.clone(),
                code: result.rc,
                message: result.text,
            });
        }
        tracing::debug!(
            entries = fetched.entries.len(),
            skipped = fetched.skipped.len(),
            "directory search done"
        );
        Ok(fetched)
    }
}

/// Escapes a value for use inside an LDAP search filter (RFC 4515 §3):
/// `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`, so
/// user input can never change the filter's structure.
#[must_use]
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum RawTerm {
    Words(String),
    Digits(String),
}

/// The query's terms as typed (not folded: the server compares them), with
/// the same phone-number rule as [`fold::query_terms`].
fn raw_terms(query: &str) -> Vec<RawTerm> {
    let folded = fold::query_terms(query);
    if let [Term::Digits(d)] = folded.as_slice()
        && query.split_whitespace().count() > 1
    {
        return vec![RawTerm::Digits(d.clone())];
    }
    query
        .split_whitespace()
        .filter(|t| t.chars().any(char::is_alphanumeric))
        .take(8)
        .map(|t| {
            if t.chars().all(|c| c.is_ascii_digit() || c == '+') {
                RawTerm::Digits(t.chars().filter(char::is_ascii_digit).collect())
            } else {
                RawTerm::Words(t.to_owned())
            }
        })
        .collect()
}

fn parenthesized(filter: &str) -> String {
    let f = filter.trim();
    if f.starts_with('(') {
        f.to_owned()
    } else {
        format!("({f})")
    }
}

fn connect_error(url: &str, source: ldap3::LdapError) -> LdapError {
    if let Some(message) = tls_message(&source) {
        return LdapError::Tls {
            url: url.to_owned(),
            message,
        };
    }
    LdapError::Connect {
        url: url.to_owned(),
        source: Box::new(source),
    }
}

/// The rustls error inside an ldap3 error, if the failure was TLS.
fn tls_message(error: &ldap3::LdapError) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls.to_string());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use ldap3::asn1::TagClass;
    use proptest::prelude::*;

    use super::*;

    fn prim(id: u64, bytes: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::P(bytes.to_vec()),
        }
    }

    fn cons(class: TagClass, id: u64, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(inner),
        }
    }

    fn entry_tag(dn: &[u8], attrs: &[(&str, &[&[u8]])]) -> StructureTag {
        let list = attrs
            .iter()
            .map(|(name, values)| {
                cons(
                    TagClass::Universal,
                    16,
                    vec![
                        prim(4, name.as_bytes()),
                        cons(
                            TagClass::Universal,
                            17,
                            values.iter().map(|v| prim(4, v)).collect(),
                        ),
                    ],
                )
            })
            .collect();
        cons(
            TagClass::Application,
            4,
            vec![prim(4, dn), cons(TagClass::Universal, 16, list)],
        )
    }

    fn de() -> Option<Region> {
        "DE".parse().ok()
    }

    #[test]
    fn an_inet_org_person_becomes_a_contact() {
        let tag = entry_tag(
            b"uid=u1,ou=people,dc=example,dc=test",
            &[
                ("cn", &["Zo\u{eb} Meyer".as_bytes()]),
                ("givenName", &["Zo\u{eb}".as_bytes()]),
                ("SN", &[b"Meyer"]),
                ("o", &[b"Initech"]),
                ("title", &[b"CEO"]),
                ("telephoneNumber", &[b"030 1000042", b"+49 30 1000042"]),
                ("mobile", &[b"+49 170 2000042"]),
                ("mail", &[b"zoe@example.test"]),
                ("jpegPhoto;binary", &[&[0xFF, 0xD8, 0xFF, 0xE0]]),
            ],
        );
        let entry = DirectoryEntry::from_result_entry(tag).unwrap();
        let source = Source::Ldap("corp".into());
        let (c, photo) = entry
            .to_contact(&AttributeMap::default(), &source, de())
            .unwrap();
        assert_eq!(c.display_name, "Zoë Meyer");
        assert_eq!(c.family_name.as_deref(), Some("Meyer"));
        assert_eq!(c.organization.as_deref(), Some("Initech"));
        assert_eq!(
            c.source_id.as_deref(),
            Some("uid=u1,ou=people,dc=example,dc=test")
        );
        let numbers: Vec<(&str, NumberKind)> = c
            .numbers
            .iter()
            .map(|n| (n.number.as_str(), n.kind))
            .collect();
        assert_eq!(
            numbers,
            [
                ("+49301000042", NumberKind::Work),
                ("+491702000042", NumberKind::Mobile)
            ],
            "the same number written twice is kept once"
        );
        assert_eq!(c.emails, ["zoe@example.test"]);
        assert_eq!(photo.unwrap(), [0xFF, 0xD8, 0xFF, 0xE0]);
    }

    #[test]
    fn bad_entries_give_typed_errors() {
        let not_entry = cons(TagClass::Application, 5, vec![]);
        assert!(matches!(
            DirectoryEntry::from_result_entry(not_entry),
            Err(EntryError::Malformed(_))
        ));
        let primitive = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::P(vec![1, 2]),
        };
        assert!(DirectoryEntry::from_result_entry(primitive).is_err());
        let bad_dn = entry_tag(&[0xFF, 0xFE], &[]);
        assert_eq!(
            DirectoryEntry::from_result_entry(bad_dn),
            Err(EntryError::DnNotUtf8)
        );
        let no_values = cons(
            TagClass::Application,
            4,
            vec![
                prim(4, b"uid=x"),
                cons(
                    TagClass::Universal,
                    16,
                    vec![cons(TagClass::Universal, 16, vec![prim(4, b"cn")])],
                ),
            ],
        );
        assert!(DirectoryEntry::from_result_entry(no_values).is_err());

        let map = AttributeMap::default();
        let source = Source::Ldap("x".into());
        let latin1 =
            DirectoryEntry::from_result_entry(entry_tag(b"uid=a", &[("cn", &[b"M\xfcller"])]))
                .unwrap();
        assert!(matches!(
            latin1.to_contact(&map, &source, None),
            Err(EntryError::NotUtf8 { .. })
        ));
        let nameless =
            DirectoryEntry::from_result_entry(entry_tag(b"uid=b", &[("title", &[b"CEO"])]))
                .unwrap();
        assert!(matches!(
            nameless.to_contact(&map, &source, None),
            Err(EntryError::NoName { .. })
        ));
        let long = vec![b'a'; MAX_TEXT_LEN + 1];
        let huge =
            DirectoryEntry::from_result_entry(entry_tag(b"uid=c", &[("cn", &[&long])])).unwrap();
        assert!(matches!(
            huge.to_contact(&map, &source, None),
            Err(EntryError::ValueTooLong { .. })
        ));
        let id_map = AttributeMap {
            id: Some("entryUUID".into()),
            ..AttributeMap::default()
        };
        let no_id =
            DirectoryEntry::from_result_entry(entry_tag(b"uid=d", &[("cn", &[b"D"])])).unwrap();
        assert!(matches!(
            no_id.to_contact(&id_map, &source, None),
            Err(EntryError::MissingId { .. })
        ));
    }

    #[test]
    fn rfc4515_escaping() {
        assert_eq!(
            escape_filter_value("a*b(c)d\\e\0"),
            "a\\2ab\\28c\\29d\\5ce\\00"
        );
        assert_eq!(escape_filter_value("Müller"), "Müller");
    }

    #[test]
    fn query_filters_escape_user_input() {
        let source = LdapSource::new("corp", "ldap://127.0.0.1:389", "dc=x").unwrap();
        let filter = source.query_filter("*)(objectClass=*").unwrap();
        assert!(
            filter.starts_with(
                "(&(objectClass=inetOrgPerson)(|(displayName=*\\2a\\29\\28objectClass=\\2a*)"
            ),
            "{filter}"
        );
        assert_eq!(filter.matches('(').count(), filter.matches(')').count());
        assert!(source.query_filter("  ").is_none());
        let digits = source
            .with_default_region(de())
            .query_filter("030 1000042")
            .unwrap();
        assert!(digits.contains("(telephoneNumber=*301000042*)"), "{digits}");
    }

    #[test]
    fn configuration_is_checked() {
        assert!(matches!(
            LdapSource::new("corp", "http://x", "dc=x"),
            Err(LdapError::InvalidUrl { .. })
        ));
        assert!(LdapSource::new("corp", "ldaps://", "dc=x").is_err());
        assert!(LdapSource::new("two words", "ldap://x", "dc=x").is_err());
        let password = Password::new("hunter2");
        assert_eq!(format!("{password:?}"), "***");
        let source = LdapSource::new("corp", "ldap://x", "dc=x")
            .unwrap()
            .with_simple_bind("cn=a", password);
        assert!(!format!("{source:?}").contains("hunter2"));
        assert!(matches!(
            LdapSource::new("corp", "ldap://x", "dc=x")
                .unwrap()
                .with_trusted_pem("nothing"),
            Err(LdapError::Certificate(_))
        ));
    }

    #[tokio::test]
    async fn a_cleartext_simple_bind_is_refused_before_connecting() {
        let source = LdapSource::new("corp", "ldap://127.0.0.1:9", "dc=x")
            .unwrap()
            .with_simple_bind("cn=a", Password::new("p"));
        assert!(matches!(
            source.fetch().await,
            Err(LdapError::InvalidConfig { .. })
        ));
        let both = LdapSource::new("corp", "ldaps://127.0.0.1:9", "dc=x")
            .unwrap()
            .with_starttls(true);
        assert!(matches!(
            both.fetch().await,
            Err(LdapError::InvalidConfig { .. })
        ));
    }

    fn arb_tag() -> impl Strategy<Value = StructureTag> {
        let leaf = (0u64..20, prop::collection::vec(any::<u8>(), 0..12)).prop_map(|(id, b)| {
            StructureTag {
                class: TagClass::Universal,
                id,
                payload: PL::P(b),
            }
        });
        leaf.prop_recursive(4, 32, 4, |inner| {
            (0u64..20, prop::collection::vec(inner, 0..4)).prop_map(|(id, v)| StructureTag {
                class: TagClass::Application,
                id,
                payload: PL::C(v),
            })
        })
    }

    proptest! {
        #[test]
        fn any_ber_structure_parses_or_errs(tag in arb_tag()) {
            if let Ok(entry) = DirectoryEntry::from_result_entry(tag) {
                let _ = entry.to_contact(&AttributeMap::default(), &Source::Ldap("p".into()), de());
            }
        }

        #[test]
        fn escaped_values_have_no_filter_metacharacters(value in ".{0,40}") {
            let escaped = escape_filter_value(&value);
            prop_assert!(!escaped.contains(['*', '(', ')', '\0']));
            prop_assert!(escaped.replace("\\2a", "").replace("\\28", "").replace("\\29", "").replace("\\5c", "").replace("\\00", "").matches('\\').count() == 0);
        }
    }
}
