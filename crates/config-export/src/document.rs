//! The XML document: reading it into a [`Config`], validating a [`Config`],
//! and writing one back.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use crate::error::{ConfigError, ErrorKind, Position};
use crate::model::{
    Account, Config, ContactSource, DEFAULT_EXPIRY, DtmfMode, Extra, LdapSource,
    MAX_CHECK_INTERVAL, MIN_CHECK_INTERVAL, Media, OAuthSource, Privacy, Provisioning, Push, ROOT,
    Relay, SrtpPolicy, Tls, Transport, TrustAnchor, Turn,
};
use crate::secret::Secret;
use crate::xml::{self, Element, Node};

/// The schema version this crate reads and writes.
pub const VERSION: &str = "1";

/// The text that replaces every secret in a redacted export. Import refuses
/// it wherever a secret is expected.
pub const REDACTED: &str = "[redacted]";

impl Config {
    /// Reads a provisioning document or a plaintext export.
    ///
    /// The whole document is checked before anything is returned: any
    /// error yields `Err` and no configuration. Errors name the element path
    /// and the line and column.
    ///
    /// ```
    /// let config = config_export::Config::from_xml(
    ///     r#"<softphone-config version="1">
    ///          <account id="alice">
    ///            <user>alice</user>
    ///            <registrar>sip:pbx.example.com</registrar>
    ///          </account>
    ///        </softphone-config>"#,
    /// )?;
    /// assert_eq!(config.accounts[0].user, "alice");
    /// # Ok::<(), config_export::ConfigError>(())
    /// ```
    pub fn from_xml(text: &str) -> Result<Self, ConfigError> {
        let root = xml::parse(text)?;
        let mut reader = Reader {
            text,
            locked: BTreeSet::new(),
            offsets: HashMap::new(),
        };
        let mut config = reader.config(&root)?;
        config.locked = std::mem::take(&mut reader.locked);
        // Just read within the limits: no need to read it back again.
        config.check_values().map_err(|mut e| {
            e.position = reader.position_of(&e.path);
            e
        })?;
        Ok(config)
    }

    /// Checks every value, identifier, lock path and extra fragment, and
    /// that the document written reads back within the reader's size and
    /// depth limits; the error names the element path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.checked_document().map(|_| ())
    }

    /// The document text, secrets included, once [`validate`](Self::validate)
    /// holds: one writing serves both.
    pub(crate) fn checked_document(&self) -> Result<String, ConfigError> {
        let (tree, _) = self.check_values()?;
        let text = xml::print_document(&tree);
        // What is written must read back: the reader's limits hold for the
        // whole document, extra fragments and all.
        xml::parse(&text)?;
        Ok(text)
    }

    /// The checks of [`validate`](Self::validate) short of reading the
    /// written document back; the tree written.
    fn check_values(&self) -> Result<(Element, BTreeSet<String>), ConfigError> {
        validate(self)?;
        let (tree, paths) = write(self, false);
        for path in &self.locked {
            if !paths.contains(path) {
                return Err(ConfigError::new(
                    path.clone(),
                    None,
                    ErrorKind::UnknownLockedPath,
                ));
            }
        }
        Ok((tree, paths))
    }

    /// The document text, secrets included, without validation.
    pub(crate) fn write_xml(&self, redact: bool) -> String {
        xml::print_document(&write(self, redact).0)
    }
}

// ---------------------------------------------------------------------------
// Reading

struct Reader<'t> {
    text: &'t str,
    locked: BTreeSet<String>,
    offsets: HashMap<String, usize>,
}

impl Reader<'_> {
    fn at(&self, element: &Element) -> Option<Position> {
        Some(Position::of_offset(self.text, element.offset))
    }

    fn error(&self, path: &str, element: &Element, kind: ErrorKind) -> ConfigError {
        ConfigError::new(path, self.at(element), kind)
    }

    /// The position of the deepest element on `path` that was read.
    fn position_of(&self, path: &str) -> Option<Position> {
        let mut prefix = path;
        loop {
            if let Some(&offset) = self.offsets.get(prefix) {
                return Some(Position::of_offset(self.text, offset));
            }
            prefix = &prefix[..prefix.rfind('/')?];
        }
    }

    /// Notes an element's path, position and lock.
    fn visit(&mut self, path: &str, element: &Element) -> Result<(), ConfigError> {
        self.offsets.insert(path.to_owned(), element.offset);
        match element.attribute("locked") {
            None | Some("false") => Ok(()),
            Some("true") => {
                self.locked.insert(path.to_owned());
                Ok(())
            }
            Some(_) => Err(self.error(path, element, ErrorKind::InvalidLocked)),
        }
    }

    fn config(&mut self, root: &Element) -> Result<Config, ConfigError> {
        if root.name != ROOT {
            return Err(self.error(
                "",
                root,
                ErrorKind::WrongRoot {
                    found: root.name.clone(),
                },
            ));
        }
        let version = root.attribute("version").unwrap_or_default();
        if version != VERSION {
            return Err(self.error(
                ROOT,
                root,
                ErrorKind::UnsupportedVersion {
                    found: version.to_owned(),
                },
            ));
        }
        let mut level = Level::open(self, root, ROOT.to_owned(), &["version"])?;
        let includes = level.values("include", self)?;
        let mut accounts = Vec::new();
        for element in level.elements("account") {
            accounts.push(self.account(element)?);
        }
        let tls = match level.single("tls", self)? {
            Some(e) => self.tls(e)?,
            None => Tls::default(),
        };
        let media = match level.single("media", self)? {
            Some(e) => self.media(e)?,
            None => Media::default(),
        };
        let contacts = match level.single("contacts", self)? {
            Some(e) => self.contacts(e)?,
            None => crate::model::Contacts::default(),
        };
        let relay = match level.single("relay", self)? {
            Some(e) => self.relay(e)?,
            None => Relay::default(),
        };
        let push = match level.single("push", self)? {
            Some(e) => Some(self.push(e)?),
            None => None,
        };
        let privacy = match level.single("privacy", self)? {
            Some(e) => self.privacy(e)?,
            None => Privacy::default(),
        };
        let provisioning = match level.single("provisioning", self)? {
            Some(e) => Some(self.provisioning(e)?),
            None => None,
        };
        Ok(Config {
            includes,
            accounts,
            tls,
            media,
            contacts,
            relay,
            push,
            privacy,
            provisioning,
            locked: BTreeSet::new(),
            extra: level.finish(),
        })
    }

    fn provisioning(&mut self, element: &Element) -> Result<Provisioning, ConfigError> {
        let mut level = Level::open(self, element, format!("{ROOT}/provisioning"), &[])?;
        Ok(Provisioning {
            check_interval: level.parsed("check-interval", "a number of seconds", self)?,
            extra: level.finish(),
        })
    }

    fn id(&self, path: &str, element: &Element) -> Result<String, ConfigError> {
        element.attribute("id").map(str::to_owned).ok_or_else(|| {
            self.error(
                path,
                element,
                ErrorKind::MissingAttribute { attribute: "id" },
            )
        })
    }

    fn account(&mut self, element: &Element) -> Result<Account, ConfigError> {
        let id = self.id(&format!("{ROOT}/account"), element)?;
        let mut level = Level::open(self, element, Config::account_path(&id), &["id"])?;
        Ok(Account {
            user: level.required("user", self)?,
            auth_user: level.value("auth-user", self)?,
            password: level.secret("password", self)?,
            display_name: level.value("display-name", self)?,
            registrar: level.required("registrar", self)?,
            outbound_proxies: level.values("outbound-proxy", self)?,
            transport: level
                .parsed("transport", Transport::EXPECTED, self)?
                .unwrap_or_default(),
            expiry: level
                .parsed("expiry", "a number of seconds", self)?
                .unwrap_or(DEFAULT_EXPIRY),
            id,
            extra: level.finish(),
        })
    }

    fn tls(&mut self, element: &Element) -> Result<Tls, ConfigError> {
        let mut level = Level::open(self, element, format!("{ROOT}/tls"), &[])?;
        let mut trust = Vec::new();
        let (mut files, mut pems) = (0, 0);
        for (index, child) in element.children.iter().enumerate() {
            let Node::Element(child) = child else {
                continue;
            };
            let anchor = match child.name.as_str() {
                "ca-file" => {
                    files += 1;
                    TrustAnchor::File(level.take_value(
                        index,
                        child,
                        format!("ca-file[{files}]"),
                        self,
                    )?)
                }
                "ca-pem" => {
                    pems += 1;
                    TrustAnchor::Pem(level.take_value(
                        index,
                        child,
                        format!("ca-pem[{pems}]"),
                        self,
                    )?)
                }
                _ => continue,
            };
            trust.push(anchor);
        }
        Ok(Tls {
            trust,
            extra: level.finish(),
        })
    }

    fn media(&mut self, element: &Element) -> Result<Media, ConfigError> {
        let mut level = Level::open(self, element, format!("{ROOT}/media"), &[])?;
        let defaults = Media::default();
        let codecs = level.values("codec", self)?;
        Ok(Media {
            codecs: if codecs.is_empty() {
                defaults.codecs
            } else {
                codecs
            },
            srtp: level
                .parsed("srtp", SrtpPolicy::EXPECTED, self)?
                .unwrap_or_default(),
            dtmf: level
                .parsed("dtmf", DtmfMode::EXPECTED, self)?
                .unwrap_or_default(),
            jitter_min_ms: level
                .parsed("jitter-min-ms", "a number of milliseconds", self)?
                .unwrap_or(defaults.jitter_min_ms),
            jitter_max_ms: level
                .parsed("jitter-max-ms", "a number of milliseconds", self)?
                .unwrap_or(defaults.jitter_max_ms),
            extra: level.finish(),
        })
    }

    fn contacts(&mut self, element: &Element) -> Result<crate::model::Contacts, ConfigError> {
        let path = format!("{ROOT}/contacts");
        let mut level = Level::open(self, element, path.clone(), &[])?;
        let mut sources = Vec::new();
        for (index, child) in element.children.iter().enumerate() {
            let Node::Element(child) = child else {
                continue;
            };
            let kind = child.name.as_str();
            if !matches!(kind, "ldap" | "google" | "exchange") {
                continue;
            }
            level.used[index] = true;
            let id = self.id(&format!("{path}/{kind}"), child)?;
            let mut source = Level::open(self, child, format!("{path}/{kind}[{id}]"), &["id"])?;
            sources.push(if kind == "ldap" {
                ContactSource::Ldap(LdapSource {
                    url: source.required("url", self)?,
                    base: source.required("base", self)?,
                    bind_dn: source.value("bind-dn", self)?,
                    bind_password: source.secret("bind-password", self)?,
                    filter: source.value("filter", self)?,
                    id,
                    extra: source.finish(),
                })
            } else {
                let oauth = OAuthSource {
                    client_id: source.required("client-id", self)?,
                    refresh_token: source.secret("refresh-token", self)?,
                    id,
                    extra: source.finish(),
                };
                if kind == "google" {
                    ContactSource::Google(oauth)
                } else {
                    ContactSource::Exchange(oauth)
                }
            });
        }
        Ok(crate::model::Contacts {
            sources,
            extra: level.finish(),
        })
    }

    fn relay(&mut self, element: &Element) -> Result<Relay, ConfigError> {
        let path = format!("{ROOT}/relay");
        let mut level = Level::open(self, element, path.clone(), &[])?;
        let proxies = level.values("proxy", self)?;
        let turn = match level.single("turn", self)? {
            Some(child) => {
                let mut turn = Level::open(self, child, format!("{path}/turn"), &[])?;
                Some(Turn {
                    server: turn.required("server", self)?,
                    user: turn.value("user", self)?,
                    password: turn.secret("password", self)?,
                    extra: turn.finish(),
                })
            }
            None => None,
        };
        Ok(Relay {
            proxies,
            turn,
            extra: level.finish(),
        })
    }

    fn push(&mut self, element: &Element) -> Result<Push, ConfigError> {
        let mut level = Level::open(self, element, format!("{ROOT}/push"), &[])?;
        let provider = level.required("provider", self)?;
        let Some(prid) = level.secret("prid", self)? else {
            return Err(self.error(&level.path, element, ErrorKind::Missing { element: "prid" }));
        };
        Ok(Push {
            provider,
            prid,
            param: level.value("param", self)?,
            extra: level.finish(),
        })
    }

    fn privacy(&mut self, element: &Element) -> Result<Privacy, ConfigError> {
        let mut level = Level::open(self, element, format!("{ROOT}/privacy"), &[])?;
        let defaults = Privacy::default();
        let flag = "true or false";
        let days = "a number of days";
        Ok(Privacy {
            crash_reports: level
                .parsed("crash-reports", flag, self)?
                .unwrap_or(defaults.crash_reports),
            log_personal_data: level
                .parsed("log-personal-data", flag, self)?
                .unwrap_or(defaults.log_personal_data),
            history_retention_days: level
                .parsed("history-retention-days", days, self)?
                .unwrap_or(defaults.history_retention_days),
            log_retention_days: level
                .parsed("log-retention-days", days, self)?
                .unwrap_or(defaults.log_retention_days),
            extra: level.finish(),
        })
    }
}

/// One element being read: which children were consumed, so that the rest
/// becomes [`Extra`].
struct Level<'e> {
    element: &'e Element,
    path: String,
    known_attributes: &'static [&'static str],
    used: Vec<bool>,
    value_attributes: std::collections::BTreeMap<String, Vec<(String, String)>>,
}

impl<'e> Level<'e> {
    fn open(
        reader: &mut Reader<'_>,
        element: &'e Element,
        path: String,
        known_attributes: &'static [&'static str],
    ) -> Result<Self, ConfigError> {
        reader.visit(&path, element)?;
        Ok(Self {
            element,
            path,
            known_attributes,
            used: vec![false; element.children.len()],
            value_attributes: std::collections::BTreeMap::new(),
        })
    }

    fn indices(&self, name: &str) -> Vec<(usize, &'e Element)> {
        self.element
            .children
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                Node::Element(e) if e.name == name => Some((i, e)),
                _ => None,
            })
            .collect()
    }

    /// All children named `name`, marked as read.
    fn elements(&mut self, name: &str) -> Vec<&'e Element> {
        let found = self.indices(name);
        for (i, _) in &found {
            self.used[*i] = true;
        }
        found.into_iter().map(|(_, e)| e).collect()
    }

    /// The one child named `name`, if any.
    fn single(
        &mut self,
        name: &str,
        reader: &Reader<'_>,
    ) -> Result<Option<&'e Element>, ConfigError> {
        let found = self.elements(name);
        if let Some(second) = found.get(1) {
            return Err(reader.error(
                &format!("{}/{name}", self.path),
                second,
                ErrorKind::Duplicate {
                    element: name.to_owned(),
                },
            ));
        }
        Ok(found.first().copied())
    }

    /// Reads the value element at `index`, whose last path segment is
    /// `segment`.
    fn take_value(
        &mut self,
        index: usize,
        element: &Element,
        segment: String,
        reader: &mut Reader<'_>,
    ) -> Result<String, ConfigError> {
        self.used[index] = true;
        let path = format!("{}/{segment}", self.path);
        reader.visit(&path, element)?;
        if element.has_child_elements() {
            return Err(reader.error(&path, element, ErrorKind::NotAValue));
        }
        let unknown: Vec<_> = element
            .attributes
            .iter()
            .filter(|(n, _)| n != "locked")
            .cloned()
            .collect();
        if !unknown.is_empty() {
            self.value_attributes.insert(segment, unknown);
        }
        Ok(element.text())
    }

    fn value(
        &mut self,
        name: &str,
        reader: &mut Reader<'_>,
    ) -> Result<Option<String>, ConfigError> {
        let found = self.indices(name);
        if let Some((_, second)) = found.get(1) {
            return Err(reader.error(
                &format!("{}/{name}", self.path),
                second,
                ErrorKind::Duplicate {
                    element: name.to_owned(),
                },
            ));
        }
        match found.first() {
            Some(&(index, element)) => Ok(Some(self.take_value(
                index,
                element,
                name.to_owned(),
                reader,
            )?)),
            None => Ok(None),
        }
    }

    fn required(
        &mut self,
        name: &'static str,
        reader: &mut Reader<'_>,
    ) -> Result<String, ConfigError> {
        self.value(name, reader)?.ok_or_else(|| {
            reader.error(
                &self.path,
                self.element,
                ErrorKind::Missing { element: name },
            )
        })
    }

    fn values(&mut self, name: &str, reader: &mut Reader<'_>) -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::new();
        for (n, (index, element)) in self.indices(name).into_iter().enumerate() {
            out.push(self.take_value(index, element, format!("{name}[{}]", n + 1), reader)?);
        }
        Ok(out)
    }

    fn secret(
        &mut self,
        name: &str,
        reader: &mut Reader<'_>,
    ) -> Result<Option<Secret>, ConfigError> {
        let Some(value) = self.value(name, reader)? else {
            return Ok(None);
        };
        if value == REDACTED {
            let path = format!("{}/{name}", self.path);
            return Err(ConfigError::new(
                path.clone(),
                reader.position_of(&path),
                ErrorKind::RedactedSecret,
            ));
        }
        Ok(Some(Secret::new(value)))
    }

    fn parsed<T: Parse>(
        &mut self,
        name: &str,
        expected: &'static str,
        reader: &mut Reader<'_>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(text) = self.value(name, reader)? else {
            return Ok(None);
        };
        match T::parse(text.trim()) {
            Some(value) => Ok(Some(value)),
            None => {
                let path = format!("{}/{name}", self.path);
                Err(ConfigError::new(
                    path.clone(),
                    reader.position_of(&path),
                    ErrorKind::InvalidValue { expected },
                ))
            }
        }
    }

    fn finish(self) -> Extra {
        let attributes = self
            .element
            .attributes
            .iter()
            .filter(|(n, _)| n != "locked" && !self.known_attributes.contains(&n.as_str()))
            .cloned()
            .collect();
        let elements = self
            .element
            .children
            .iter()
            .zip(&self.used)
            .filter_map(|(child, used)| match child {
                Node::Element(e) if !used => Some(xml::print_compact(e)),
                _ => None,
            })
            .collect();
        Extra {
            attributes,
            elements,
            value_attributes: self.value_attributes,
        }
    }
}

trait Parse: Sized {
    fn parse(text: &str) -> Option<Self>;
}

impl Parse for u32 {
    fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl Parse for bool {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
}

macro_rules! parse_keyword {
    ($($t:ty),*) => {$(
        impl Parse for $t {
            fn parse(text: &str) -> Option<Self> {
                <$t>::from_str(text).ok()
            }
        }
    )*};
}
parse_keyword!(Transport, SrtpPolicy, DtmfMode);

// ---------------------------------------------------------------------------
// Validation

fn validate(config: &Config) -> Result<(), ConfigError> {
    let v = Validator;
    v.extra(
        ROOT,
        &config.extra,
        &[
            "include",
            "account",
            "tls",
            "media",
            "contacts",
            "relay",
            "push",
            "privacy",
            "provisioning",
        ],
        &["version"],
    )?;
    for (i, include) in config.includes.iter().enumerate() {
        let segment = format!("include[{}]", i + 1);
        v.text(ROOT, &segment, include, true)?;
        if include.contains(char::is_whitespace) {
            return Err(invalid(ROOT, &segment, "a URL without white space"));
        }
    }
    let mut ids = HashSet::new();
    for account in &config.accounts {
        v.id(&format!("{ROOT}/account"), &account.id, &mut ids)?;
        let path = Config::account_path(&account.id);
        v.text(&path, "user", &account.user, true)?;
        v.optional_text(&path, "auth-user", account.auth_user.as_deref())?;
        v.secret(&path, "password", account.password.as_ref())?;
        v.optional_text(&path, "display-name", account.display_name.as_deref())?;
        v.sip_uri(&path, "registrar", &account.registrar)?;
        for (i, proxy) in account.outbound_proxies.iter().enumerate() {
            v.sip_uri(&path, &format!("outbound-proxy[{}]", i + 1), proxy)?;
        }
        if !(1..=86_400).contains(&account.expiry) {
            return Err(invalid(&path, "expiry", "1 to 86400 seconds"));
        }
        v.extra(
            &path,
            &account.extra,
            &[
                "user",
                "auth-user",
                "password",
                "display-name",
                "registrar",
                "outbound-proxy",
                "transport",
                "expiry",
            ],
            &["id"],
        )?;
    }

    let path = format!("{ROOT}/tls");
    let (mut files, mut pems) = (0, 0);
    for anchor in &config.tls.trust {
        match anchor {
            TrustAnchor::File(file) => {
                files += 1;
                v.text(&path, &format!("ca-file[{files}]"), file, true)?;
            }
            TrustAnchor::Pem(pem) => {
                pems += 1;
                let segment = format!("ca-pem[{pems}]");
                v.text(&path, &segment, pem, true)?;
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid(
                        &path,
                        &segment,
                        "PEM text with a CERTIFICATE block",
                    ));
                }
            }
        }
    }
    v.extra(&path, &config.tls.extra, &["ca-file", "ca-pem"], &[])?;

    let path = format!("{ROOT}/media");
    let media = &config.media;
    if media.codecs.is_empty() {
        return Err(ConfigError::new(
            path,
            None,
            ErrorKind::Missing { element: "codec" },
        ));
    }
    let mut codecs = HashSet::new();
    for (i, codec) in media.codecs.iter().enumerate() {
        let segment = format!("codec[{}]", i + 1);
        v.text(&path, &segment, codec, true)?;
        if !codecs.insert(codec.to_ascii_lowercase()) {
            return Err(ConfigError::new(
                format!("{path}/{segment}"),
                None,
                ErrorKind::Duplicate {
                    element: "codec".to_owned(),
                },
            ));
        }
    }
    if media.jitter_max_ms > 2000 {
        return Err(invalid(&path, "jitter-max-ms", "at most 2000 milliseconds"));
    }
    if media.jitter_min_ms > media.jitter_max_ms {
        return Err(invalid(&path, "jitter-min-ms", "at most jitter-max-ms"));
    }
    v.extra(
        &path,
        &media.extra,
        &["codec", "srtp", "dtmf", "jitter-min-ms", "jitter-max-ms"],
        &[],
    )?;

    let contacts = format!("{ROOT}/contacts");
    let mut ids = HashSet::new();
    for source in &config.contacts.sources {
        match source {
            ContactSource::Ldap(ldap) => {
                v.id(&format!("{contacts}/ldap"), &ldap.id, &mut ids)?;
                let path = format!("{contacts}/ldap[{}]", ldap.id);
                v.text(&path, "url", &ldap.url, true)?;
                if !(ldap.url.starts_with("ldap://") || ldap.url.starts_with("ldaps://")) {
                    return Err(invalid(&path, "url", "an ldap:// or ldaps:// URL"));
                }
                v.text(&path, "base", &ldap.base, true)?;
                v.optional_text(&path, "bind-dn", ldap.bind_dn.as_deref())?;
                v.secret(&path, "bind-password", ldap.bind_password.as_ref())?;
                v.optional_text(&path, "filter", ldap.filter.as_deref())?;
                v.extra(
                    &path,
                    &ldap.extra,
                    &["url", "base", "bind-dn", "bind-password", "filter"],
                    &["id"],
                )?;
            }
            ContactSource::Google(oauth) | ContactSource::Exchange(oauth) => {
                let kind = if matches!(source, ContactSource::Google(_)) {
                    "google"
                } else {
                    "exchange"
                };
                v.id(&format!("{contacts}/{kind}"), &oauth.id, &mut ids)?;
                let path = format!("{contacts}/{kind}[{}]", oauth.id);
                v.text(&path, "client-id", &oauth.client_id, true)?;
                v.secret(&path, "refresh-token", oauth.refresh_token.as_ref())?;
                v.extra(
                    &path,
                    &oauth.extra,
                    &["client-id", "refresh-token"],
                    &["id"],
                )?;
            }
        }
    }
    v.extra(
        &contacts,
        &config.contacts.extra,
        &["ldap", "google", "exchange"],
        &[],
    )?;

    let path = format!("{ROOT}/relay");
    for (i, proxy) in config.relay.proxies.iter().enumerate() {
        v.sip_uri(&path, &format!("proxy[{}]", i + 1), proxy)?;
    }
    if let Some(turn) = &config.relay.turn {
        let path = format!("{path}/turn");
        v.text(&path, "server", &turn.server, true)?;
        if !(turn.server.starts_with("turn:") || turn.server.starts_with("turns:")) {
            return Err(invalid(&path, "server", "a turn: or turns: URI"));
        }
        v.optional_text(&path, "user", turn.user.as_deref())?;
        v.secret(&path, "password", turn.password.as_ref())?;
        v.extra(&path, &turn.extra, &["server", "user", "password"], &[])?;
    }
    v.extra(&path, &config.relay.extra, &["proxy", "turn"], &[])?;

    if let Some(push) = &config.push {
        let path = format!("{ROOT}/push");
        v.text(&path, "provider", &push.provider, true)?;
        v.secret(&path, "prid", Some(&push.prid))?;
        if push.prid.expose().is_empty() {
            return Err(invalid(&path, "prid", "a non-empty token"));
        }
        v.optional_text(&path, "param", push.param.as_deref())?;
        v.extra(&path, &push.extra, &["provider", "prid", "param"], &[])?;
    }

    let path = format!("{ROOT}/privacy");
    let privacy = &config.privacy;
    if privacy.history_retention_days > 36_500 {
        return Err(invalid(&path, "history-retention-days", "0 to 36500 days"));
    }
    if privacy.log_retention_days > 36_500 {
        return Err(invalid(&path, "log-retention-days", "0 to 36500 days"));
    }
    v.extra(
        &path,
        &privacy.extra,
        &[
            "crash-reports",
            "log-personal-data",
            "history-retention-days",
            "log-retention-days",
        ],
        &[],
    )?;

    if let Some(provisioning) = &config.provisioning {
        let path = format!("{ROOT}/provisioning");
        if provisioning
            .check_interval
            .is_some_and(|i| !(MIN_CHECK_INTERVAL..=MAX_CHECK_INTERVAL).contains(&i))
        {
            return Err(invalid(&path, "check-interval", "60 to 2592000 seconds"));
        }
        v.extra(&path, &provisioning.extra, &["check-interval"], &[])?;
    }
    Ok(())
}

fn invalid(path: &str, segment: &str, expected: &'static str) -> ConfigError {
    ConfigError::new(
        format!("{path}/{segment}"),
        None,
        ErrorKind::InvalidValue { expected },
    )
}

#[derive(Default)]
struct Validator;

impl Validator {
    fn id(&self, path: &str, id: &str, seen: &mut HashSet<String>) -> Result<(), ConfigError> {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(ConfigError::new(
                path,
                None,
                ErrorKind::InvalidValue {
                    expected: "an id of letters, digits, '.', '_', '-'",
                },
            ));
        }
        if !seen.insert(id.to_owned()) {
            return Err(ConfigError::new(
                path,
                None,
                ErrorKind::DuplicateId { id: id.to_owned() },
            ));
        }
        Ok(())
    }

    fn text(
        &self,
        path: &str,
        segment: &str,
        value: &str,
        required: bool,
    ) -> Result<(), ConfigError> {
        if required && value.trim().is_empty() {
            return Err(invalid(path, segment, "a non-empty value"));
        }
        if !is_xml_text(value) {
            return Err(invalid(path, segment, "text without control characters"));
        }
        Ok(())
    }

    fn optional_text(
        &self,
        path: &str,
        segment: &str,
        value: Option<&str>,
    ) -> Result<(), ConfigError> {
        value.map_or(Ok(()), |v| self.text(path, segment, v, false))
    }

    fn secret(&self, path: &str, segment: &str, value: Option<&Secret>) -> Result<(), ConfigError> {
        let Some(value) = value else { return Ok(()) };
        if value.expose() == REDACTED {
            return Err(ConfigError::new(
                format!("{path}/{segment}"),
                None,
                ErrorKind::RedactedSecret,
            ));
        }
        self.text(path, segment, value.expose(), false)
    }

    fn sip_uri(&self, path: &str, segment: &str, value: &str) -> Result<(), ConfigError> {
        self.text(path, segment, value, true)?;
        let rest = value
            .strip_prefix("sip:")
            .or_else(|| value.strip_prefix("sips:"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => Ok(()),
            _ => Err(invalid(path, segment, "a sip: or sips: URI")),
        }
    }

    fn extra(
        &self,
        path: &str,
        extra: &Extra,
        known_elements: &[&str],
        known_attributes: &[&str],
    ) -> Result<(), ConfigError> {
        let bad = |kind| Err(ConfigError::new(path, None, kind));
        let check_attributes = |attributes: &[(String, String)], known: &[&str]| {
            let mut names = HashSet::new();
            attributes.iter().all(|(n, value)| {
                is_xml_name(n)
                    && n != "locked"
                    && !known.contains(&n.as_str())
                    && names.insert(n)
                    && is_xml_text(value)
            })
        };
        if !check_attributes(&extra.attributes, known_attributes) {
            return bad(ErrorKind::InvalidExtra);
        }
        for attributes in extra.value_attributes.values() {
            if !check_attributes(attributes, &[]) {
                return bad(ErrorKind::InvalidExtra);
            }
        }
        for fragment in &extra.elements {
            match xml::parse(fragment) {
                Ok(element)
                    if !known_elements.contains(&element.name.as_str())
                        && xml::print_compact(&element) == *fragment => {}
                _ => return bad(ErrorKind::InvalidExtra),
            }
        }
        Ok(())
    }
}

fn is_xml_text(value: &str) -> bool {
    value
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
}

fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

// ---------------------------------------------------------------------------
// Writing

/// Builds the document tree and the set of element paths it contains.
fn write(config: &Config, redact: bool) -> (Element, BTreeSet<String>) {
    let mut w = Writer {
        config,
        redact,
        paths: BTreeSet::new(),
    };
    let mut root = w.open(ROOT.to_owned(), ROOT);
    root.attributes
        .push(("version".to_owned(), VERSION.to_owned()));
    w.list(&mut root, ROOT, "include", &config.includes, &config.extra);
    for account in &config.accounts {
        let path = Config::account_path(&account.id);
        let mut e = w.open(path.clone(), "account");
        e.attributes.push(("id".to_owned(), account.id.clone()));
        let x = &account.extra;
        w.value(&mut e, &path, "user", "user", &account.user, x);
        w.optional(&mut e, &path, "auth-user", account.auth_user.as_deref(), x);
        w.secret(&mut e, &path, "password", account.password.as_ref(), x);
        w.optional(
            &mut e,
            &path,
            "display-name",
            account.display_name.as_deref(),
            x,
        );
        w.value(
            &mut e,
            &path,
            "registrar",
            "registrar",
            &account.registrar,
            x,
        );
        w.list(
            &mut e,
            &path,
            "outbound-proxy",
            &account.outbound_proxies,
            x,
        );
        w.value(
            &mut e,
            &path,
            "transport",
            "transport",
            account.transport.as_str(),
            x,
        );
        w.value(
            &mut e,
            &path,
            "expiry",
            "expiry",
            &account.expiry.to_string(),
            x,
        );
        root.children.push(Node::Element(w.close(e, x)));
    }

    let path = format!("{ROOT}/tls");
    let mut e = w.open(path.clone(), "tls");
    let (mut files, mut pems) = (0, 0);
    for anchor in &config.tls.trust {
        match anchor {
            TrustAnchor::File(file) => {
                files += 1;
                w.value(
                    &mut e,
                    &path,
                    &format!("ca-file[{files}]"),
                    "ca-file",
                    file,
                    &config.tls.extra,
                );
            }
            TrustAnchor::Pem(pem) => {
                pems += 1;
                w.value(
                    &mut e,
                    &path,
                    &format!("ca-pem[{pems}]"),
                    "ca-pem",
                    pem,
                    &config.tls.extra,
                );
            }
        }
    }
    root.children
        .push(Node::Element(w.close(e, &config.tls.extra)));

    let path = format!("{ROOT}/media");
    let media = &config.media;
    let x = &media.extra;
    let mut e = w.open(path.clone(), "media");
    w.list(&mut e, &path, "codec", &media.codecs, x);
    w.value(&mut e, &path, "srtp", "srtp", media.srtp.as_str(), x);
    w.value(&mut e, &path, "dtmf", "dtmf", media.dtmf.as_str(), x);
    w.value(
        &mut e,
        &path,
        "jitter-min-ms",
        "jitter-min-ms",
        &media.jitter_min_ms.to_string(),
        x,
    );
    w.value(
        &mut e,
        &path,
        "jitter-max-ms",
        "jitter-max-ms",
        &media.jitter_max_ms.to_string(),
        x,
    );
    root.children.push(Node::Element(w.close(e, x)));

    let contacts = format!("{ROOT}/contacts");
    let mut e = w.open(contacts.clone(), "contacts");
    for source in &config.contacts.sources {
        let child = match source {
            ContactSource::Ldap(ldap) => {
                let path = format!("{contacts}/ldap[{}]", ldap.id);
                let x = &ldap.extra;
                let mut s = w.open(path.clone(), "ldap");
                s.attributes.push(("id".to_owned(), ldap.id.clone()));
                w.value(&mut s, &path, "url", "url", &ldap.url, x);
                w.value(&mut s, &path, "base", "base", &ldap.base, x);
                w.optional(&mut s, &path, "bind-dn", ldap.bind_dn.as_deref(), x);
                w.secret(
                    &mut s,
                    &path,
                    "bind-password",
                    ldap.bind_password.as_ref(),
                    x,
                );
                w.optional(&mut s, &path, "filter", ldap.filter.as_deref(), x);
                w.close(s, x)
            }
            ContactSource::Google(oauth) | ContactSource::Exchange(oauth) => {
                let kind = if matches!(source, ContactSource::Google(_)) {
                    "google"
                } else {
                    "exchange"
                };
                let path = format!("{contacts}/{kind}[{}]", oauth.id);
                let x = &oauth.extra;
                let mut s = w.open(path.clone(), kind);
                s.attributes.push(("id".to_owned(), oauth.id.clone()));
                w.value(&mut s, &path, "client-id", "client-id", &oauth.client_id, x);
                w.secret(
                    &mut s,
                    &path,
                    "refresh-token",
                    oauth.refresh_token.as_ref(),
                    x,
                );
                w.close(s, x)
            }
        };
        e.children.push(Node::Element(child));
    }
    root.children
        .push(Node::Element(w.close(e, &config.contacts.extra)));

    let path = format!("{ROOT}/relay");
    let relay = &config.relay;
    let mut e = w.open(path.clone(), "relay");
    w.list(&mut e, &path, "proxy", &relay.proxies, &relay.extra);
    if let Some(turn) = &relay.turn {
        let path = format!("{path}/turn");
        let x = &turn.extra;
        let mut t = w.open(path.clone(), "turn");
        w.value(&mut t, &path, "server", "server", &turn.server, x);
        w.optional(&mut t, &path, "user", turn.user.as_deref(), x);
        w.secret(&mut t, &path, "password", turn.password.as_ref(), x);
        e.children.push(Node::Element(w.close(t, x)));
    }
    root.children.push(Node::Element(w.close(e, &relay.extra)));

    if let Some(push) = &config.push {
        let path = format!("{ROOT}/push");
        let x = &push.extra;
        let mut e = w.open(path.clone(), "push");
        w.value(&mut e, &path, "provider", "provider", &push.provider, x);
        w.secret(&mut e, &path, "prid", Some(&push.prid), x);
        w.optional(&mut e, &path, "param", push.param.as_deref(), x);
        root.children.push(Node::Element(w.close(e, x)));
    }

    let path = format!("{ROOT}/privacy");
    let privacy = &config.privacy;
    let x = &privacy.extra;
    let mut e = w.open(path.clone(), "privacy");
    w.value(
        &mut e,
        &path,
        "crash-reports",
        "crash-reports",
        &privacy.crash_reports.to_string(),
        x,
    );
    w.value(
        &mut e,
        &path,
        "log-personal-data",
        "log-personal-data",
        &privacy.log_personal_data.to_string(),
        x,
    );
    w.value(
        &mut e,
        &path,
        "history-retention-days",
        "history-retention-days",
        &privacy.history_retention_days.to_string(),
        x,
    );
    w.value(
        &mut e,
        &path,
        "log-retention-days",
        "log-retention-days",
        &privacy.log_retention_days.to_string(),
        x,
    );
    root.children.push(Node::Element(w.close(e, x)));

    if let Some(provisioning) = &config.provisioning {
        let path = format!("{ROOT}/provisioning");
        let x = &provisioning.extra;
        let mut e = w.open(path.clone(), "provisioning");
        if let Some(interval) = provisioning.check_interval {
            w.value(
                &mut e,
                &path,
                "check-interval",
                "check-interval",
                &interval.to_string(),
                x,
            );
        }
        root.children.push(Node::Element(w.close(e, x)));
    }

    let root = w.close(root, &config.extra);
    (root, w.paths)
}

/// `value` with a URI's password (`sip:alice:pw@pbx`,
/// `https://u:pw@host`) and query (`?token=...`) replaced by
/// [`REDACTED`]; other text as it is. What the redacted export writes for
/// URI-valued settings, and what a front end should show for them.
pub fn redact_uri(value: &str) -> String {
    // A URI only when a scheme starts the value (RFC 3986 §3.1).
    let Some(colon) = value.find(':') else {
        return value.to_owned();
    };
    let scheme = &value[..colon];
    let is_scheme = scheme
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !is_scheme {
        return value.to_owned();
    }
    let sip = matches!(scheme.to_ascii_lowercase().as_str(), "sip" | "sips" | "tel");
    let mut rest = &value[colon + 1..];
    let mut out = String::from(&value[..=colon]);
    let hierarchical = rest.starts_with("//");
    if hierarchical {
        out.push_str("//");
        rest = &rest[2..];
    } else if !sip {
        return value.to_owned();
    }
    let (body, query) = match rest.find(['?', '#']) {
        Some(q) => (&rest[..q], true),
        None => (rest, false),
    };
    // The userinfo ends at the last `@` of the authority, which ends at the
    // path for `scheme://`; a SIP user part may hold `;` but never `@`.
    let authority_end = if hierarchical {
        body.find('/').unwrap_or(body.len())
    } else {
        body.len()
    };
    match body[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &body[..at];
            match userinfo.find(':') {
                Some(c) => {
                    out.push_str(&userinfo[..=c]);
                    out.push_str(REDACTED);
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&body[at..]);
        }
        None => out.push_str(body),
    }
    if query {
        out.push('?');
        out.push_str(REDACTED);
    }
    out
}

struct Writer<'c> {
    config: &'c Config,
    redact: bool,
    paths: BTreeSet<String>,
}

impl Writer<'_> {
    fn open(&mut self, path: String, name: &str) -> Element {
        let mut element = Element::new(name);
        if self.config.locked.contains(&path) {
            element
                .attributes
                .push(("locked".to_owned(), "true".to_owned()));
        }
        self.paths.insert(path);
        element
    }

    fn close(&self, mut element: Element, extra: &Extra) -> Element {
        element.attributes.extend(
            extra
                .attributes
                .iter()
                .map(|(n, v)| (n.clone(), self.shown(v))),
        );
        element
            .children
            .extend(extra.elements.iter().map(|f| Node::Raw(self.fragment(f))));
        element
    }

    /// A value as written: in a redacted export unknown values are
    /// blanked and URIs lose their passwords and queries.
    fn shown(&self, value: &str) -> String {
        if self.redact {
            REDACTED.to_owned()
        } else {
            value.to_owned()
        }
    }

    /// An extra fragment as written: in a redacted export its structure
    /// stays, every text and attribute value is blanked (what a vendor's
    /// option holds is not known to be harmless).
    fn fragment(&self, fragment: &str) -> String {
        fn blank(element: &mut Element) {
            for (_, value) in &mut element.attributes {
                *value = REDACTED.to_owned();
            }
            for child in &mut element.children {
                match child {
                    Node::Element(e) => blank(e),
                    Node::Text(t) | Node::Raw(t) => *t = REDACTED.to_owned(),
                }
            }
        }
        if !self.redact {
            return fragment.to_owned();
        }
        match xml::parse(fragment) {
            Ok(mut element) => {
                blank(&mut element);
                xml::print_compact(&element)
            }
            // Validation refuses such fragments; never copy one blind.
            Err(_) => String::new(),
        }
    }

    fn value(
        &mut self,
        parent: &mut Element,
        path: &str,
        segment: &str,
        name: &str,
        value: &str,
        extra: &Extra,
    ) {
        let mut element = self.open(format!("{path}/{segment}"), name);
        if let Some(attributes) = extra.value_attributes.get(segment) {
            element
                .attributes
                .extend(attributes.iter().map(|(n, v)| (n.clone(), self.shown(v))));
        }
        if !value.is_empty() {
            let value = if self.redact && value != REDACTED {
                redact_uri(value)
            } else {
                value.to_owned()
            };
            element.children.push(Node::Text(value));
        }
        parent.children.push(Node::Element(element));
    }

    fn optional(
        &mut self,
        parent: &mut Element,
        path: &str,
        name: &str,
        value: Option<&str>,
        extra: &Extra,
    ) {
        if let Some(value) = value {
            self.value(parent, path, name, name, value, extra);
        }
    }

    fn secret(
        &mut self,
        parent: &mut Element,
        path: &str,
        name: &str,
        value: Option<&Secret>,
        extra: &Extra,
    ) {
        if let Some(value) = value {
            let text = if self.redact {
                REDACTED
            } else {
                value.expose()
            };
            self.value(parent, path, name, name, text, extra);
        }
    }

    fn list(
        &mut self,
        parent: &mut Element,
        path: &str,
        name: &str,
        values: &[String],
        extra: &Extra,
    ) {
        for (i, value) in values.iter().enumerate() {
            self.value(
                parent,
                path,
                &format!("{name}[{}]", i + 1),
                name,
                value,
                extra,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Export;
    use crate::model::ContactSource;

    const EXAMPLE: &str = include_str!("../../../docs/examples/provisioning.xml");

    fn minimal(account_body: &str) -> String {
        format!(
            "<softphone-config version=\"1\">\n  <account id=\"a\">\n{account_body}\n  </account>\n</softphone-config>"
        )
    }

    #[test]
    fn example_document_parses_completely() {
        let config = Config::from_xml(EXAMPLE).unwrap();
        assert_eq!(config.accounts.len(), 2);
        let office = &config.accounts[0];
        assert_eq!(office.auth_user.as_deref(), Some("2001-auth"));
        assert_eq!(office.password.as_ref().unwrap().expose(), "change-me");
        assert_eq!(office.outbound_proxies.len(), 2);
        assert_eq!(office.transport, Transport::Tls);
        assert_eq!(office.expiry, 600);
        assert_eq!(config.accounts[1].expiry, DEFAULT_EXPIRY);
        assert_eq!(config.tls.trust.len(), 2);
        assert_eq!(config.media.codecs, ["opus", "PCMA", "PCMU"]);
        assert_eq!(config.media.srtp, SrtpPolicy::Mandatory);
        assert_eq!(config.media.jitter_max_ms, 300);
        assert_eq!(config.contacts.sources.len(), 3);
        assert!(
            matches!(&config.contacts.sources[2], ContactSource::Exchange(s) if s.refresh_token.is_none())
        );
        assert_eq!(
            config.relay.turn.as_ref().unwrap().server,
            "turns:turn.example.com:5349"
        );
        assert_eq!(config.push.as_ref().unwrap().provider, "apns");
        assert_eq!(config.privacy.history_retention_days, 365);
        assert_eq!(
            config.provisioning.as_ref().unwrap().check_interval,
            Some(86_400)
        );
        assert!(config.is_locked("softphone-config/account[office]/registrar"));
        assert!(config.is_locked("softphone-config/media/codec[2]"));
        assert!(!config.is_locked("softphone-config/account[home]/registrar"));
        assert!(config.extra.is_empty());
        assert_eq!(Config::from_xml(&config.write_xml(false)).unwrap(), config);
    }

    #[test]
    fn missing_sections_take_defaults() {
        let config = Config::from_xml("<softphone-config version=\"1\"/>").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.privacy.history_retention_days, 365);
        assert!(!config.privacy.crash_reports);
    }

    #[test]
    fn unknown_elements_and_attributes_survive_a_round_trip() {
        let text = r#"<softphone-config version="1" x-generator="pbx 9.1">
  <account id="a" x-tenant="7">
    <user x-hint="ext">2001</user>
    <registrar>sip:pbx</registrar>
    <x-presence><server>sip:presence</server><mode>auto</mode></x-presence>
  </account>
  <media><codec>opus</codec><x-vad aggressive="yes">on</x-vad></media>
  <x-branding><logo>https://example.com/logo.png</logo></x-branding>
</softphone-config>"#;
        let config = Config::from_xml(text).unwrap();
        assert_eq!(
            config.extra.attributes,
            [("x-generator".to_owned(), "pbx 9.1".to_owned())]
        );
        assert_eq!(
            config.extra.elements,
            ["<x-branding><logo>https://example.com/logo.png</logo></x-branding>"]
        );
        let account = &config.accounts[0];
        assert_eq!(
            account.extra.attributes,
            [("x-tenant".to_owned(), "7".to_owned())]
        );
        assert_eq!(
            account.extra.elements,
            ["<x-presence><server>sip:presence</server><mode>auto</mode></x-presence>"]
        );
        assert_eq!(
            account.extra.value_attributes["user"],
            [("x-hint".to_owned(), "ext".to_owned())]
        );
        assert_eq!(
            config.media.extra.elements,
            ["<x-vad aggressive=\"yes\">on</x-vad>"]
        );

        let written = config.write_xml(false);
        assert!(written.contains("<x-vad aggressive=\"yes\">on</x-vad>"));
        assert!(written.contains("<user x-hint=\"ext\">2001</user>"));
        assert_eq!(Config::from_xml(&written).unwrap(), config);
    }

    #[test]
    fn locked_attribute_is_recorded_and_written_back() {
        let text = minimal(
            "<user>u</user><registrar locked=\"true\">sip:pbx</registrar><expiry locked=\"false\">60</expiry>",
        );
        let config = Config::from_xml(&text).unwrap();
        assert_eq!(
            config.locked.iter().collect::<Vec<_>>(),
            ["softphone-config/account[a]/registrar"]
        );
        assert!(
            config
                .write_xml(false)
                .contains("<registrar locked=\"true\">sip:pbx</registrar>")
        );
        assert_eq!(Config::from_xml(&config.write_xml(false)).unwrap(), config);
    }

    #[test]
    fn invalid_locked_value_is_an_error_with_path() {
        let error = Config::from_xml(&minimal("<user locked=\"yes\">u</user>")).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidLocked);
        assert_eq!(error.path, "softphone-config/account[a]/user");
        assert_eq!(error.position, Some(Position { line: 3, column: 1 }));
    }

    #[test]
    fn lock_on_a_missing_element_does_not_validate() {
        let mut config = Config::default();
        config.locked.insert("softphone-config/push".to_owned());
        let error = config.validate().unwrap_err();
        assert_eq!(error.kind, ErrorKind::UnknownLockedPath);
        assert_eq!(error.path, "softphone-config/push");
    }

    #[test]
    fn missing_required_element_names_path_line_and_column() {
        let error = Config::from_xml(&minimal("    <user>u</user>")).unwrap_err();
        assert_eq!(
            error.kind,
            ErrorKind::Missing {
                element: "registrar"
            }
        );
        assert_eq!(error.path, "softphone-config/account[a]");
        assert_eq!(error.position, Some(Position { line: 2, column: 3 }));
    }

    #[test]
    fn invalid_value_is_located_without_repeating_it() {
        let text = minimal(
            "    <user>u</user>\n    <registrar>sip:pbx</registrar>\n    <transport>carrier-pigeon</transport>",
        );
        let error = Config::from_xml(&text).unwrap_err();
        assert_eq!(error.path, "softphone-config/account[a]/transport");
        assert_eq!(error.position, Some(Position { line: 5, column: 5 }));
        assert!(!error.to_string().contains("pigeon"));
        assert!(error.to_string().contains("one of udp, tcp, tls, ws, wss"));
    }

    #[test]
    fn semantic_errors_get_the_position_of_the_element() {
        let text = minimal("    <user>u</user>\n    <registrar>http://pbx</registrar>");
        let error = Config::from_xml(&text).unwrap_err();
        assert_eq!(error.path, "softphone-config/account[a]/registrar");
        assert_eq!(error.position, Some(Position { line: 4, column: 5 }));
        let text = "<softphone-config version=\"1\">\n<media>\n<jitter-min-ms>500</jitter-min-ms>\n</media>\n</softphone-config>";
        let error = Config::from_xml(text).unwrap_err();
        assert_eq!(error.path, "softphone-config/media/jitter-min-ms");
        assert_eq!(error.position, Some(Position { line: 3, column: 1 }));
    }

    #[test]
    fn duplicates_are_refused() {
        let error = Config::from_xml(&minimal(
            "<user>u</user><user>v</user><registrar>sip:p</registrar>",
        ))
        .unwrap_err();
        assert_eq!(
            error.kind,
            ErrorKind::Duplicate {
                element: "user".to_owned()
            }
        );
        let text = "<softphone-config version=\"1\"><account id=\"a\"><user>u</user><registrar>sip:p</registrar></account>\
                    <account id=\"a\"><user>u</user><registrar>sip:p</registrar></account></softphone-config>";
        assert_eq!(
            Config::from_xml(text).unwrap_err().kind,
            ErrorKind::DuplicateId { id: "a".to_owned() }
        );
    }

    #[test]
    fn version_and_root_are_checked() {
        assert_eq!(
            Config::from_xml("<softphone-config version=\"2\"/>")
                .unwrap_err()
                .kind,
            ErrorKind::UnsupportedVersion {
                found: "2".to_owned()
            }
        );
        assert_eq!(
            Config::from_xml("<softphone-config/>").unwrap_err().kind,
            ErrorKind::UnsupportedVersion {
                found: String::new()
            }
        );
        assert!(matches!(
            Config::from_xml("<config version=\"1\"/>")
                .unwrap_err()
                .kind,
            ErrorKind::WrongRoot { .. }
        ));
    }

    #[test]
    fn redacted_document_is_refused_as_a_secret() {
        let text =
            minimal("<user>u</user><registrar>sip:p</registrar><password>[redacted]</password>");
        let error = Config::from_xml(&text).unwrap_err();
        assert_eq!(error.kind, ErrorKind::RedactedSecret);
        assert_eq!(error.path, "softphone-config/account[a]/password");
        assert!(error.position.is_some());
    }

    #[test]
    fn redacted_output_holds_no_secret() {
        let config = Config::from_xml(EXAMPLE).unwrap();
        let redacted = config.write_xml(true);
        for secret in [
            "change-me",
            "ldap-secret",
            "1//refresh-token",
            "turn-secret",
            "00fc13adff78",
        ] {
            assert!(!redacted.contains(secret), "{secret} leaked");
            assert!(EXAMPLE.contains(secret));
        }
        assert_eq!(redacted.matches(REDACTED).count(), 5);
    }

    #[test]
    fn redacted_output_hides_unknown_values_and_uri_secrets() {
        let mut config = Config::from_xml(EXAMPLE).unwrap();
        config.media.extra.elements.push(
            r#"<x-voicemail pin="pin-4711x"><x-code>code-9876x</x-code></x-voicemail>"#.to_owned(),
        );
        config
            .extra
            .attributes
            .push(("x-site-key".to_owned(), "zz-key".to_owned()));
        config
            .includes
            .push("https://u:incpw@p.example/x.xml?token=abc123".to_owned());
        config.accounts[0].registrar = "sip:alice:regpw@pbx.example.com".to_owned();
        config.validate().unwrap();
        let redacted = config.write_xml(true);
        for secret in [
            "pin-4711x",
            "code-9876x",
            "zz-key",
            "incpw",
            "abc123",
            "regpw",
        ] {
            assert!(!redacted.contains(secret), "{secret} leaked:\n{redacted}");
        }
        // What is there stays readable for support.
        for kept in [
            "x-voicemail",
            "x-code",
            "p.example/x.xml",
            "sip:alice:",
            "@pbx.example.com",
        ] {
            assert!(redacted.contains(kept), "{kept} lost:\n{redacted}");
        }
        assert_eq!(
            redact_uri("sip:bob@pbx;transport=tcp"),
            "sip:bob@pbx;transport=tcp"
        );
        assert_eq!(redact_uri("plain text: a@b"), "plain text: a@b");
        // Text that only contains a URI, and an `@` in a path, stay.
        for kept in [
            "Help? see https://x.example",
            "https://host:8443/u/bob@example.com/x",
            "Ünïcödé: ok",
        ] {
            assert_eq!(redact_uri(kept), kept);
        }
        assert_eq!(
            redact_uri("sip:+49-30;postd=pp22:pw@gw.example;user=phone"),
            "sip:+49-30;postd=pp22:[redacted]@gw.example;user=phone"
        );
        // Any known value goes through it; one like this panicked.
        let mut config = Config::from_xml(EXAMPLE).unwrap();
        config.accounts[0].display_name = Some("Help? see https://x.example".to_owned());
        assert!(
            config
                .write_xml(true)
                .contains("Help? see https://x.example")
        );
    }

    #[test]
    fn includes_and_provisioning_round_trip() {
        let text = r#"<softphone-config version="1">
  <include>https://prov.example.com/common.xml</include>
  <include x-note="site">site/{user}.xml</include>
  <provisioning locked="true">
    <check-interval>3600</check-interval>
    <x-jitter>5</x-jitter>
  </provisioning>
</softphone-config>"#;
        let config = Config::from_xml(text).unwrap();
        assert_eq!(
            config.includes,
            ["https://prov.example.com/common.xml", "site/{user}.xml"]
        );
        let provisioning = config.provisioning.as_ref().unwrap();
        assert_eq!(provisioning.check_interval, Some(3600));
        assert_eq!(provisioning.extra.elements, ["<x-jitter>5</x-jitter>"]);
        assert!(config.is_locked("softphone-config/provisioning/check-interval"));
        assert_eq!(
            config.extra.value_attributes["include[2]"],
            [("x-note".to_owned(), "site".to_owned())]
        );
        let written = config.write_xml(false);
        assert!(written.contains("<include x-note=\"site\">site/{user}.xml</include>"));
        assert_eq!(Config::from_xml(&written).unwrap(), config);
        let empty =
            Config::from_xml("<softphone-config version=\"1\"><provisioning/></softphone-config>")
                .unwrap();
        assert_eq!(empty.provisioning, Some(Provisioning::default()));
        assert_eq!(Config::from_xml(&empty.write_xml(false)).unwrap(), empty);
    }

    #[test]
    fn include_and_interval_values_are_checked() {
        let text = "<softphone-config version=\"1\">\n<provisioning>\n<check-interval>5</check-interval>\n</provisioning>\n</softphone-config>";
        let error = Config::from_xml(text).unwrap_err();
        assert_eq!(error.path, "softphone-config/provisioning/check-interval");
        assert_eq!(error.position, Some(Position { line: 3, column: 1 }));
        let text = "<softphone-config version=\"1\">\n<include>a.xml</include>\n<include>b c.xml</include>\n</softphone-config>";
        let error = Config::from_xml(text).unwrap_err();
        assert_eq!(error.path, "softphone-config/include[2]");
        assert_eq!(error.position, Some(Position { line: 3, column: 1 }));
    }

    #[test]
    fn extra_fragments_are_validated() {
        let mut config = Config::default();
        config.media.extra.elements.push("<x-a>".to_owned());
        assert_eq!(config.validate().unwrap_err().kind, ErrorKind::InvalidExtra);
        let mut config = Config::default();
        config
            .media
            .extra
            .elements
            .push("<srtp>off</srtp>".to_owned());
        assert_eq!(config.validate().unwrap_err().kind, ErrorKind::InvalidExtra);
        let mut config = Config::default();
        config
            .extra
            .attributes
            .push(("version".to_owned(), "3".to_owned()));
        assert_eq!(config.validate().unwrap_err().kind, ErrorKind::InvalidExtra);
    }

    #[test]
    fn a_config_that_would_not_read_back_does_not_validate() {
        // Each fragment is fine alone; together they pass the reader's
        // size limit once written.
        let mut config = Config::default();
        let big = format!("<x-blob>{}</x-blob>", "a".repeat(1024 * 1024));
        config.media.extra.elements = vec![big; 5];
        assert!(matches!(
            config.validate().unwrap_err().kind,
            ErrorKind::TooLarge { .. }
        ));
        assert!(Export::new(&config).plaintext().is_err());
        // A fragment of 31 levels sits 33 deep under the root and media.
        let mut config = Config::default();
        let deep = format!("{}1{}", "<x-d>".repeat(31), "</x-d>".repeat(31));
        config.media.extra.elements.push(deep);
        let err = config.validate().unwrap_err();
        assert!(matches!(err.kind, ErrorKind::TooDeep { .. }), "{err}");
        // Within the limits it reads back.
        let mut config = Config::default();
        config
            .media
            .extra
            .elements
            .push("<x-d><x-e>1</x-e></x-d>".to_owned());
        let text = Export::new(&config).plaintext().unwrap().document;
        assert_eq!(
            Config::from_xml(&text).unwrap().media.extra,
            config.media.extra
        );
    }
}
