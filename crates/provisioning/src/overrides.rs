//! Local overrides: the user's own changes laid over the provisioned
//! configuration, except where the administrator locked a field.

use std::str::FromStr;

use config_export::{
    Account, Config, ConfigError, ContactSource, DtmfMode, ErrorKind, Secret, SrtpPolicy, Transport,
};

const ROOT: &str = "softphone-config";

/// One local change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    /// Sets a value element (`softphone-config/media/srtp` to `mandatory`).
    Set(String),
    /// Removes an optional value element (`.../display-name`).
    Clear,
    /// Replaces a repeated value element as a whole
    /// (`softphone-config/media/codec`, `.../outbound-proxy`,
    /// `softphone-config/relay/proxy`).
    List(Vec<String>),
}

/// The user's changes, by element path (the paths of errors and locks,
/// without the index of repeated elements for a [`Override::List`]).
///
/// ```
/// use provisioning::LocalOverrides;
///
/// let mut overrides = LocalOverrides::new();
/// overrides
///     .set("softphone-config/account[office]/display-name", "Alice M.")
///     .set_list("softphone-config/media/codec", ["PCMU", "opus"]);
/// assert_eq!(overrides.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalOverrides {
    entries: Vec<(String, Override)>,
}

impl LocalOverrides {
    /// No overrides.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the value at `path`, replacing an earlier override of it.
    pub fn set(&mut self, path: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.insert(path.into(), Override::Set(value.into()))
    }

    /// Removes the optional value at `path`.
    pub fn clear(&mut self, path: impl Into<String>) -> &mut Self {
        self.insert(path.into(), Override::Clear)
    }

    /// Replaces the repeated value at `path` with `values`.
    pub fn set_list<I, S>(&mut self, path: impl Into<String>, values: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.insert(
            path.into(),
            Override::List(values.into_iter().map(Into::into).collect()),
        )
    }

    /// Adds `change` at `path`, replacing an earlier one of the same path.
    pub fn insert(&mut self, path: String, change: Override) -> &mut Self {
        match self.entries.iter_mut().find(|(p, _)| *p == path) {
            Some(slot) => slot.1 = change,
            None => self.entries.push((path, change)),
        }
        self
    }

    /// The overrides, in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Override)> {
        self.entries.iter().map(|(p, o)| (p.as_str(), o))
    }

    /// How many overrides there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The result of [`merge`]: the configuration to use, and what was and was
/// not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Merged {
    /// The provisioned configuration with the accepted overrides.
    pub config: Config,
    /// Paths of the overrides applied.
    pub applied: Vec<String>,
    /// Overrides left out, and why.
    pub refused: Vec<RefusedOverride>,
}

/// An override [`merge`] left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedOverride {
    /// Its path.
    pub path: String,
    /// Why.
    pub reason: Refusal,
}

/// Why an override was left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The administrator locked the field (or a section containing it).
    #[error("locked by the administrator")]
    Locked,
    /// The path names no field that can be overridden locally, or an
    /// account, source or section the configuration does not have.
    #[error("no such field")]
    UnknownPath,
    /// The kind of change does not fit the field (a list for a single
    /// value, clearing a required value).
    #[error("this change does not fit the field")]
    WrongKind,
    /// The value is not valid for the field.
    #[error("{0}")]
    Invalid(ConfigError),
}

/// Lays `overrides` over `provisioned`, one at a time, in order.
///
/// An override is refused when its field is locked
/// ([`Config::is_locked`]; a list is also refused when one of its items is
/// locked), when its path names nothing, or when the configuration would
/// no longer validate with it. Refused overrides change nothing and are
/// reported; the others are applied. The result keeps the provisioned
/// locks.
///
/// ```
/// use provisioning::{LocalOverrides, Refusal, merge};
///
/// let provisioned = config_export::Config::from_xml(r#"<softphone-config version="1">
///   <media><srtp locked="true">mandatory</srtp></media>
///   <privacy><crash-reports>false</crash-reports></privacy>
/// </softphone-config>"#)?;
/// let mut overrides = LocalOverrides::new();
/// overrides
///     .set("softphone-config/media/srtp", "off")
///     .set("softphone-config/privacy/crash-reports", "true");
/// let merged = merge(&provisioned, &overrides);
/// assert_eq!(merged.config.media.srtp, config_export::SrtpPolicy::Mandatory);
/// assert!(merged.config.privacy.crash_reports);
/// assert_eq!(merged.refused[0].reason, Refusal::Locked);
/// # Ok::<(), config_export::ConfigError>(())
/// ```
#[must_use]
pub fn merge(provisioned: &Config, overrides: &LocalOverrides) -> Merged {
    let mut config = provisioned.clone();
    let mut applied = Vec::new();
    let mut refused = Vec::new();
    for (path, change) in overrides.iter() {
        let locked = provisioned.is_locked(path)
            || (matches!(change, Override::List(_))
                && provisioned
                    .locked
                    .iter()
                    .any(|l| l.strip_prefix(path).is_some_and(|r| r.starts_with('['))));
        let result = if locked {
            Err(Refusal::Locked)
        } else {
            let mut candidate = config.clone();
            apply(&mut candidate, path, change)
                .and_then(|()| candidate.validate().map_err(Refusal::Invalid))
                .map(|()| candidate)
        };
        match result {
            Ok(candidate) => {
                config = candidate;
                applied.push(path.to_owned());
            }
            Err(reason) => {
                tracing::debug!(%reason, "local override refused");
                refused.push(RefusedOverride {
                    path: path.to_owned(),
                    reason,
                });
            }
        }
    }
    Merged {
        config,
        applied,
        refused,
    }
}

fn apply(config: &mut Config, path: &str, change: &Override) -> Result<(), Refusal> {
    let rest = path
        .strip_prefix(ROOT)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or(Refusal::UnknownPath)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let field = Field { path, change };
    match segments.as_slice() {
        [account, name] if indexed(account, "account").is_some() => {
            let id = indexed(account, "account").unwrap_or_default();
            let account = config
                .accounts
                .iter_mut()
                .find(|a| a.id == id)
                .ok_or(Refusal::UnknownPath)?;
            account_field(account, name, &field)
        }
        ["media", name] => {
            let media = &mut config.media;
            match *name {
                "codec" => media.codecs = field.list()?,
                "srtp" => {
                    media.srtp = field.parse::<SrtpPolicy>("one of off, optional, mandatory")?
                }
                "dtmf" => media.dtmf = field.parse::<DtmfMode>("one of rfc4733, info")?,
                "jitter-min-ms" => media.jitter_min_ms = field.parse("a number of milliseconds")?,
                "jitter-max-ms" => media.jitter_max_ms = field.parse("a number of milliseconds")?,
                _ => return Err(Refusal::UnknownPath),
            }
            Ok(())
        }
        ["privacy", name] => {
            let privacy = &mut config.privacy;
            match *name {
                "crash-reports" => privacy.crash_reports = field.parse("true or false")?,
                "log-personal-data" => privacy.log_personal_data = field.parse("true or false")?,
                "history-retention-days" => {
                    privacy.history_retention_days = field.parse("a number of days")?;
                }
                "log-retention-days" => {
                    privacy.log_retention_days = field.parse("a number of days")?;
                }
                _ => return Err(Refusal::UnknownPath),
            }
            Ok(())
        }
        ["relay", "proxy"] => {
            config.relay.proxies = field.list()?;
            Ok(())
        }
        ["relay", "turn", name] => {
            let turn = config.relay.turn.as_mut().ok_or(Refusal::UnknownPath)?;
            match *name {
                "server" => turn.server = field.text()?,
                "user" => turn.user = field.optional()?,
                "password" => turn.password = field.optional()?.map(Secret::new),
                _ => return Err(Refusal::UnknownPath),
            }
            Ok(())
        }
        ["push", name] => {
            let push = config.push.as_mut().ok_or(Refusal::UnknownPath)?;
            match *name {
                "provider" => push.provider = field.text()?,
                "prid" => push.prid = Secret::new(field.text()?),
                "param" => push.param = field.optional()?,
                _ => return Err(Refusal::UnknownPath),
            }
            Ok(())
        }
        ["contacts", source, name] => {
            let source = config
                .contacts
                .sources
                .iter_mut()
                .find(|s| {
                    let kind = match s {
                        ContactSource::Ldap(_) => "ldap",
                        ContactSource::Google(_) => "google",
                        ContactSource::Exchange(_) => "exchange",
                    };
                    indexed(source, kind) == Some(s.id())
                })
                .ok_or(Refusal::UnknownPath)?;
            match (source, *name) {
                (ContactSource::Ldap(ldap), name) => match name {
                    "url" => ldap.url = field.text()?,
                    "base" => ldap.base = field.text()?,
                    "bind-dn" => ldap.bind_dn = field.optional()?,
                    "bind-password" => ldap.bind_password = field.optional()?.map(Secret::new),
                    "filter" => ldap.filter = field.optional()?,
                    _ => return Err(Refusal::UnknownPath),
                },
                (ContactSource::Google(oauth) | ContactSource::Exchange(oauth), name) => match name
                {
                    "client-id" => oauth.client_id = field.text()?,
                    "refresh-token" => {
                        oauth.refresh_token = field.optional()?.map(Secret::new);
                    }
                    _ => return Err(Refusal::UnknownPath),
                },
            }
            Ok(())
        }
        _ => Err(Refusal::UnknownPath),
    }
}

fn account_field(account: &mut Account, name: &str, field: &Field<'_>) -> Result<(), Refusal> {
    match name {
        "user" => account.user = field.text()?,
        "auth-user" => account.auth_user = field.optional()?,
        "password" => account.password = field.optional()?.map(Secret::new),
        "display-name" => account.display_name = field.optional()?,
        "registrar" => account.registrar = field.text()?,
        "outbound-proxy" => account.outbound_proxies = field.list()?,
        "transport" => {
            account.transport = field.parse::<Transport>("one of udp, tcp, tls, ws, wss")?
        }
        "expiry" => account.expiry = field.parse("a number of seconds")?,
        _ => return Err(Refusal::UnknownPath),
    }
    Ok(())
}

/// `name[id]` -> `id`.
fn indexed<'s>(segment: &'s str, name: &str) -> Option<&'s str> {
    segment
        .strip_prefix(name)?
        .strip_prefix('[')?
        .strip_suffix(']')
}

struct Field<'a> {
    path: &'a str,
    change: &'a Override,
}

impl Field<'_> {
    fn text(&self) -> Result<String, Refusal> {
        match self.change {
            Override::Set(value) => Ok(value.clone()),
            _ => Err(Refusal::WrongKind),
        }
    }

    fn optional(&self) -> Result<Option<String>, Refusal> {
        match self.change {
            Override::Set(value) => Ok(Some(value.clone())),
            Override::Clear => Ok(None),
            Override::List(_) => Err(Refusal::WrongKind),
        }
    }

    fn list(&self) -> Result<Vec<String>, Refusal> {
        match self.change {
            Override::List(values) => Ok(values.clone()),
            _ => Err(Refusal::WrongKind),
        }
    }

    fn parse<T: FromStr>(&self, expected: &'static str) -> Result<T, Refusal> {
        self.text()?.trim().parse().map_err(|_| {
            Refusal::Invalid(ConfigError {
                path: self.path.to_owned(),
                position: None,
                kind: ErrorKind::InvalidValue { expected },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provisioned() -> Config {
        Config::from_xml(
            r#"<softphone-config version="1">
  <account id="office">
    <user>2001</user>
    <registrar locked="true">sips:pbx.example.com</registrar>
    <outbound-proxy>sips:edge1.example.com</outbound-proxy>
    <outbound-proxy locked="true">sips:edge2.example.com</outbound-proxy>
  </account>
  <media locked="true"><codec>opus</codec><codec>PCMA</codec></media>
  <contacts><ldap id="dir"><url>ldaps://ldap.example.com</url><base>dc=example</base></ldap></contacts>
</softphone-config>"#,
        )
        .unwrap()
    }

    #[test]
    fn locked_fields_keep_the_provisioned_value_and_are_reported() {
        let mut overrides = LocalOverrides::new();
        overrides
            .set(
                "softphone-config/account[office]/registrar",
                "sip:evil.example.com",
            )
            .set("softphone-config/account[office]/display-name", "Alice")
            .set_list("softphone-config/media/codec", ["PCMU"])
            .set("softphone-config/media/srtp", "off")
            .set_list("softphone-config/account[office]/outbound-proxy", ["sip:x"])
            .set("softphone-config/contacts/ldap[dir]/filter", "(cn=*)");
        let merged = merge(&provisioned(), &overrides);
        let config = &merged.config;
        assert_eq!(config.accounts[0].registrar, "sips:pbx.example.com");
        assert_eq!(config.accounts[0].display_name.as_deref(), Some("Alice"));
        assert_eq!(config.media.codecs, ["opus", "PCMA"]);
        assert_eq!(config.accounts[0].outbound_proxies.len(), 2);
        assert_eq!(
            merged.applied,
            [
                "softphone-config/account[office]/display-name",
                "softphone-config/contacts/ldap[dir]/filter"
            ]
        );
        let refused: Vec<_> = merged
            .refused
            .iter()
            .map(|r| (r.path.as_str(), &r.reason))
            .collect();
        assert_eq!(
            refused,
            [
                (
                    "softphone-config/account[office]/registrar",
                    &Refusal::Locked
                ),
                ("softphone-config/media/codec", &Refusal::Locked),
                ("softphone-config/media/srtp", &Refusal::Locked),
                (
                    "softphone-config/account[office]/outbound-proxy",
                    &Refusal::Locked
                ),
            ]
        );
        assert_eq!(config.locked, provisioned().locked);
    }

    #[test]
    fn invalid_unknown_and_ill_fitting_overrides_are_refused() {
        let mut overrides = LocalOverrides::new();
        overrides
            .set("softphone-config/account[office]/expiry", "0")
            .set("softphone-config/account[office]/transport", "pigeon")
            .set("softphone-config/account[home]/user", "x")
            .clear("softphone-config/account[office]/user")
            .set("softphone-config/privacy/colour", "blue")
            .set("softphone-config/push/prid", "abc")
            .set("softphone-config/privacy/log-retention-days", "7");
        let merged = merge(&provisioned(), &overrides);
        let reasons: Vec<_> = merged.refused.iter().map(|r| &r.reason).collect();
        assert!(
            matches!(reasons[0], Refusal::Invalid(e) if e.path == "softphone-config/account[office]/expiry")
        );
        assert!(
            matches!(reasons[1], Refusal::Invalid(e) if e.path == "softphone-config/account[office]/transport")
        );
        assert_eq!(
            reasons[2..],
            [
                &Refusal::UnknownPath,
                &Refusal::WrongKind,
                &Refusal::UnknownPath,
                &Refusal::UnknownPath
            ]
        );
        assert_eq!(
            merged.applied,
            ["softphone-config/privacy/log-retention-days"]
        );
        assert_eq!(merged.config.privacy.log_retention_days, 7);
        assert_eq!(merged.config.accounts[0].expiry, 3600);
    }

    #[test]
    fn a_later_override_of_the_same_path_replaces_the_earlier() {
        let mut overrides = LocalOverrides::new();
        overrides
            .set("softphone-config/privacy/crash-reports", "true")
            .set("softphone-config/privacy/crash-reports", "false");
        assert_eq!(overrides.len(), 1);
        let merged = merge(&provisioned(), &overrides);
        assert!(!merged.config.privacy.crash_reports);
    }
}
