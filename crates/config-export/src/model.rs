//! The typed configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::secret::Secret;

/// The whole configuration of a softphone: what one provisioning document or
/// one export file holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// URLs of other documents this one includes (`<include>`), in document
    /// order. The `provisioning` crate fetches and merges them; a
    /// configuration it stores has them resolved and this list empty.
    pub includes: Vec<String>,
    /// SIP accounts, in document order (`<account>`).
    pub accounts: Vec<Account>,
    /// Certificates trusted for TLS, in addition to or instead of the
    /// system's (`<tls>`).
    pub tls: Tls,
    /// Codecs, SRTP, DTMF and jitter buffer (`<media>`).
    pub media: Media,
    /// Directories searched for contacts (`<contacts>`).
    pub contacts: Contacts,
    /// The relay proxy and TURN server used to reach the PBX (`<relay>`).
    pub relay: Relay,
    /// Push notification registration (RFC 8599), if any (`<push>`).
    pub push: Option<Push>,
    /// Privacy settings (`<privacy>`).
    pub privacy: Privacy,
    /// How the provisioning client re-checks this document
    /// (`<provisioning>`), if the document says.
    pub provisioning: Option<Provisioning>,
    /// Paths of the elements an administrator locked with
    /// `locked="true"`, such as `softphone-config/media/srtp`. A locked
    /// element locks everything inside it: see [`Config::is_locked`].
    pub locked: BTreeSet<String>,
    /// Unknown attributes and elements of `<softphone-config>`.
    pub extra: Extra,
}

impl Config {
    /// Whether the element at `path` is locked, by itself or by an element
    /// that contains it.
    ///
    /// ```
    /// let mut config = config_export::Config::default();
    /// config.locked.insert("softphone-config/media".to_owned());
    /// assert!(config.is_locked("softphone-config/media/srtp"));
    /// assert!(!config.is_locked("softphone-config/privacy"));
    /// ```
    #[must_use]
    pub fn is_locked(&self, path: &str) -> bool {
        let mut prefix = path;
        loop {
            if self.locked.contains(prefix) {
                return true;
            }
            match prefix.rfind('/') {
                Some(i) => prefix = &prefix[..i],
                None => return false,
            }
        }
    }

    /// The path of the account with `id`, as used in errors and in
    /// [`Config::locked`].
    #[must_use]
    pub fn account_path(id: &str) -> String {
        format!("{ROOT}/account[{id}]")
    }
}

pub(crate) const ROOT: &str = "softphone-config";

/// What a document holds that this version of the schema does not know, kept
/// so that it survives a round trip.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extra {
    /// Unknown attributes of this element, as (name, value).
    pub attributes: Vec<(String, String)>,
    /// Unknown child elements, each as one XML fragment
    /// (`<x-vendor-option>1</x-vendor-option>`), in document order. They are
    /// written after the known children.
    pub elements: Vec<String>,
    /// Unknown attributes of this element's value children, by the child's
    /// last path segment (`password`, `outbound-proxy[2]`).
    pub value_attributes: BTreeMap<String, Vec<(String, String)>>,
}

impl Extra {
    /// Whether nothing unknown was kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty() && self.elements.is_empty() && self.value_attributes.is_empty()
    }
}

/// A SIP account (`<account id="...">`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Identifier, unique in the document: letters, digits, `.`, `_`, `-`.
    pub id: String,
    /// SIP user part of the address of record (`<user>`).
    pub user: String,
    /// User name for digest authentication, when it differs from `user`
    /// (`<auth-user>`).
    pub auth_user: Option<String>,
    /// Digest password (`<password>`).
    pub password: Option<Secret>,
    /// Display name (`<display-name>`).
    pub display_name: Option<String>,
    /// Registrar, a `sip:` or `sips:` URI (`<registrar>`).
    pub registrar: String,
    /// Outbound proxies in order of preference, `sip:` or `sips:` URIs
    /// (`<outbound-proxy>`).
    pub outbound_proxies: Vec<String>,
    /// Transport to the registrar (`<transport>`).
    pub transport: Transport,
    /// Requested registration expiry in seconds, 1 to 86400 (`<expiry>`).
    pub expiry: u32,
    /// Unknown attributes and elements of `<account>`.
    pub extra: Extra,
}

impl Account {
    /// An account with the defaults: UDP, 3600 s expiry, no password.
    pub fn new(
        id: impl Into<String>,
        user: impl Into<String>,
        registrar: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            user: user.into(),
            auth_user: None,
            password: None,
            display_name: None,
            registrar: registrar.into(),
            outbound_proxies: Vec::new(),
            transport: Transport::default(),
            expiry: DEFAULT_EXPIRY,
            extra: Extra::default(),
        }
    }
}

pub(crate) const DEFAULT_EXPIRY: u32 = 3600;

macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident, $expected:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in schema order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The keyword in the document.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            pub(crate) const EXPECTED: &'static str = $expected;
        }

        impl FromStr for $name {
            type Err = UnknownKeyword;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownKeyword),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A keyword that names no value of the enumeration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown keyword")]
pub struct UnknownKeyword;

keyword_enum! {
    /// SIP transport (`udp`, `tcp`, `tls`, `ws`, `wss`).
    #[derive(Default)]
    Transport, "one of udp, tcp, tls, ws, wss" {
        /// UDP.
        #[default]
        Udp = "udp",
        /// TCP.
        Tcp = "tcp",
        /// TLS over TCP.
        Tls = "tls",
        /// WebSocket (RFC 7118).
        Ws = "ws",
        /// WebSocket over TLS.
        Wss = "wss",
    }
}

keyword_enum! {
    /// When media is encrypted with SRTP.
    #[derive(Default)]
    SrtpPolicy, "one of off, optional, mandatory" {
        /// Plain RTP only.
        Off = "off",
        /// Offer SRTP, accept plain RTP.
        #[default]
        Optional = "optional",
        /// SRTP or no call.
        Mandatory = "mandatory",
    }
}

keyword_enum! {
    /// How DTMF digits are sent.
    #[derive(Default)]
    DtmfMode, "one of rfc4733, info" {
        /// RTP telephone-events (RFC 4733).
        #[default]
        Rfc4733 = "rfc4733",
        /// SIP INFO requests.
        Info = "info",
    }
}

/// TLS trust (`<tls>`): certificate authorities to trust, as PEM file paths
/// or inline PEM, in document order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    /// Trust anchors.
    pub trust: Vec<TrustAnchor>,
    /// Unknown attributes and elements of `<tls>`.
    pub extra: Extra,
}

/// One certificate authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustAnchor {
    /// Path of a PEM file (`<ca-file>`).
    File(String),
    /// PEM text, one or more `CERTIFICATE` blocks (`<ca-pem>`).
    Pem(String),
}

/// Media settings (`<media>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Codec names in order of preference (`<codec>`), such as `opus`,
    /// `PCMU`, `PCMA`; no name twice (compared without case).
    pub codecs: Vec<String>,
    /// SRTP policy (`<srtp>`).
    pub srtp: SrtpPolicy,
    /// DTMF mode (`<dtmf>`).
    pub dtmf: DtmfMode,
    /// Smallest jitter buffer delay in milliseconds (`<jitter-min-ms>`).
    pub jitter_min_ms: u32,
    /// Largest jitter buffer delay in milliseconds, at most 2000
    /// (`<jitter-max-ms>`).
    pub jitter_max_ms: u32,
    /// Unknown attributes and elements of `<media>`.
    pub extra: Extra,
}

impl Default for Media {
    fn default() -> Self {
        Self {
            codecs: ["opus", "PCMU", "PCMA"].map(String::from).to_vec(),
            srtp: SrtpPolicy::default(),
            dtmf: DtmfMode::default(),
            jitter_min_ms: 20,
            jitter_max_ms: 200,
            extra: Extra::default(),
        }
    }
}

/// Contact directories (`<contacts>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contacts {
    /// Sources, in document order.
    pub sources: Vec<ContactSource>,
    /// Unknown attributes and elements of `<contacts>`.
    pub extra: Extra,
}

/// One contact directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactSource {
    /// An LDAP or LDAPS directory (`<ldap>`).
    Ldap(LdapSource),
    /// A Google account through the People API (`<google>`).
    Google(OAuthSource),
    /// An Exchange account (`<exchange>`).
    Exchange(OAuthSource),
}

impl ContactSource {
    /// The source's identifier.
    #[must_use]
    pub fn id(&self) -> &str {
        match self {
            Self::Ldap(s) => &s.id,
            Self::Google(s) | Self::Exchange(s) => &s.id,
        }
    }
}

/// An LDAP directory (`<ldap id="...">`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapSource {
    /// Identifier, unique among contact sources.
    pub id: String,
    /// `ldap://` or `ldaps://` URL (`<url>`).
    pub url: String,
    /// Search base DN (`<base>`).
    pub base: String,
    /// DN to bind as; anonymous bind when absent (`<bind-dn>`).
    pub bind_dn: Option<String>,
    /// Bind password (`<bind-password>`).
    pub bind_password: Option<Secret>,
    /// Search filter (`<filter>`).
    pub filter: Option<String>,
    /// Unknown attributes and elements of `<ldap>`.
    pub extra: Extra,
}

/// An account reached with OAuth 2.0 (`<google id="...">`,
/// `<exchange id="...">`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSource {
    /// Identifier, unique among contact sources.
    pub id: String,
    /// OAuth client identifier (`<client-id>`).
    pub client_id: String,
    /// Refresh token, once the user has consented (`<refresh-token>`).
    pub refresh_token: Option<Secret>,
    /// Unknown attributes and elements.
    pub extra: Extra,
}

/// The relay used to reach the PBX without a VPN (`<relay>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Relay {
    /// Relay proxies in order of preference, `sip:` or `sips:` URIs
    /// (`<proxy>`).
    pub proxies: Vec<String>,
    /// TURN server for media (`<turn>`).
    pub turn: Option<Turn>,
    /// Unknown attributes and elements of `<relay>`.
    pub extra: Extra,
}

/// A TURN server (`<turn>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// `turn:` or `turns:` URI (`<server>`).
    pub server: String,
    /// User name (`<user>`).
    pub user: Option<String>,
    /// Password (`<password>`).
    pub password: Option<Secret>,
    /// Unknown attributes and elements of `<turn>`.
    pub extra: Extra,
}

/// Push notification registration, RFC 8599 (`<push>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// `pn-provider`, such as `apns` or `fcm` (`<provider>`).
    pub provider: String,
    /// `pn-prid`, the device token (`<prid>`).
    pub prid: Secret,
    /// `pn-param` (`<param>`).
    pub param: Option<String>,
    /// Unknown attributes and elements of `<push>`.
    pub extra: Extra,
}

/// Privacy settings (`<privacy>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privacy {
    /// Send crash reports; off unless the user opts in (`<crash-reports>`).
    pub crash_reports: bool,
    /// Write numbers, names and addresses into service logs
    /// (`<log-personal-data>`).
    pub log_personal_data: bool,
    /// Days call history is kept, 0 to 36500 (`<history-retention-days>`).
    pub history_retention_days: u32,
    /// Days service logs are kept, 0 to 36500 (`<log-retention-days>`).
    pub log_retention_days: u32,
    /// Unknown attributes and elements of `<privacy>`.
    pub extra: Extra,
}

impl Default for Privacy {
    fn default() -> Self {
        Self {
            crash_reports: false,
            log_personal_data: false,
            history_retention_days: 365,
            log_retention_days: 30,
            extra: Extra::default(),
        }
    }
}

/// How the provisioning client keeps the document fresh (`<provisioning>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provisioning {
    /// Seconds between two checks for a new document, 60 to 2592000
    /// (`<check-interval>`); the client's own default when absent.
    pub check_interval: Option<u32>,
    /// Unknown attributes and elements of `<provisioning>`.
    pub extra: Extra,
}

/// Shortest accepted `<check-interval>`, in seconds.
pub const MIN_CHECK_INTERVAL: u32 = 60;
/// Longest accepted `<check-interval>`, in seconds (30 days).
pub const MAX_CHECK_INTERVAL: u32 = 2_592_000;
