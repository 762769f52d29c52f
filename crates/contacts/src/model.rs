//! The contact model: plain data, serialisable to JSON.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{
    fold,
    number::{self, NormalizedNumber, Region},
};

/// The store's id of a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContactId(pub i64);

impl fmt::Display for ContactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a contact comes from. Printed and parsed as `local`,
/// `ldap:<name>`, `google:<account>`, `exchange:<account>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Source {
    /// Added on this device.
    #[default]
    Local,
    /// An LDAP directory, by the name given to it in the configuration.
    Ldap(String),
    /// A Google account (People API).
    Google(String),
    /// An Exchange account.
    Exchange(String),
}

impl Source {
    /// Whether the contact was added on this device (and can be edited).
    #[must_use]
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("local"),
            Self::Ldap(name) => write!(f, "ldap:{name}"),
            Self::Google(name) => write!(f, "google:{name}"),
            Self::Exchange(name) => write!(f, "exchange:{name}"),
        }
    }
}

/// A source name that is not `local` or `<kind>:<name>` with a known kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown contact source {0:?} (expected local, ldap:NAME, google:NAME or exchange:NAME)")]
pub struct UnknownSource(pub String);

impl FromStr for Source {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "local" {
            return Ok(Self::Local);
        }
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| UnknownSource(s.to_owned()))?;
        if name.is_empty() {
            return Err(UnknownSource(s.to_owned()));
        }
        match kind {
            "ldap" => Ok(Self::Ldap(name.to_owned())),
            "google" => Ok(Self::Google(name.to_owned())),
            "exchange" => Ok(Self::Exchange(name.to_owned())),
            _ => Err(UnknownSource(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Source {
    type Error = UnknownSource;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Source> for String {
    fn from(s: Source) -> Self {
        s.to_string()
    }
}

/// What a phone number is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberKind {
    /// Office.
    Work,
    /// Mobile.
    Mobile,
    /// Home.
    Home,
    /// Fax.
    Fax,
    /// Anything else.
    #[default]
    Other,
}

/// One phone number of a contact.
///
/// JSON: `{"type": "work", "number": "+49301000042", "raw": "030 1000042",
/// "e164": true}` plus `"extension"` when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactNumber {
    /// What it is for.
    #[serde(rename = "type")]
    pub kind: NumberKind,
    /// E.164 when the number could be normalised, otherwise the text as
    /// written (trimmed).
    pub number: String,
    /// The text as written at the source.
    pub raw: String,
    /// Whether `number` is E.164.
    #[serde(default)]
    pub e164: bool,
    /// The extension, when one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    /// National form digits with the trunk prefix (`0301000042`), when
    /// normalised; searched as typed digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub national: Option<String>,
}

impl ContactNumber {
    /// A number as written; normalised with `region` (needed for numbers in
    /// national form).
    #[must_use]
    pub fn new(kind: NumberKind, raw: &str, region: Option<Region>) -> Self {
        let normalized = number::normalize(raw, region);
        Self::from_normalized(kind, raw, normalized)
    }

    pub(crate) fn from_normalized(kind: NumberKind, raw: &str, n: NormalizedNumber) -> Self {
        let raw = raw.trim().to_owned();
        match n.e164 {
            Some(e164) => Self {
                kind,
                number: e164,
                raw,
                e164: true,
                extension: n.extension,
                national: n.national,
            },
            None => Self {
                kind,
                number: raw.clone(),
                raw,
                e164: false,
                extension: n.extension,
                national: None,
            },
        }
    }

    /// Normalises the raw text again (for example with another region).
    #[must_use]
    pub fn renormalized(&self, region: Option<Region>) -> Self {
        Self::new(self.kind, &self.raw, region)
    }

    /// The number as matching sees it: digits as written, and the E.164
    /// and national forms when it was normalised. Does not parse again.
    #[must_use]
    pub fn normalized(&self) -> NormalizedNumber {
        NormalizedNumber {
            e164: self.e164.then(|| self.number.clone()),
            extension: self.extension.clone(),
            digits: number::written_digits(&self.raw),
            national: self.national.clone().filter(|_| self.e164),
        }
    }
}

/// An instant-messaging address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImAddress {
    /// The service (`xmpp`, `matrix`, `teams`, ...).
    pub service: String,
    /// The handle on that service.
    pub handle: String,
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PostalAddress {
    /// What the address is for.
    #[serde(rename = "type")]
    pub kind: NumberKind,
    /// Street and house, one or more lines.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub street: String,
    /// Town or city.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// State or province.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Postal code.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub postal_code: String,
    /// Country.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub country: String,
}

/// A contact's photo, cached on disk by content hash (see
/// [`crate::PhotoCache`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhotoRef {
    /// SHA-256 of the image bytes, lower-case hex.
    pub sha256: String,
    /// `image/jpeg`, `image/png`, `image/gif` or `image/webp`.
    pub media_type: String,
}

/// A contact.
///
/// Only `display_name` (or something it can be made from) is required; the
/// rest is optional. JSON field names are the Rust field names, numbers as
/// described at [`ContactNumber`], `source` as described at [`Source`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Contact {
    /// The store's id; `None` until stored (and for live directory results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ContactId>,
    /// Where it comes from.
    pub source: Source,
    /// The id at the source (LDAP DN, People resource name); `None` for
    /// local contacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The name to show.
    pub display_name: String,
    /// Given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Nickname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    /// Organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Phone numbers.
    #[serde(default)]
    pub numbers: Vec<ContactNumber>,
    /// SIP addresses (`sip:alice@example.com`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sip_addresses: Vec<String>,
    /// E-mail addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// Instant-messaging addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub im: Vec<ImAddress>,
    /// Postal addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub postal_addresses: Vec<PostalAddress>,
    /// Web addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// The photo, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo: Option<PhotoRef>,
    /// Shown before other contacts in search results.
    #[serde(default)]
    pub favourite: bool,
}

impl Contact {
    /// A local contact with a display name.
    #[must_use]
    pub fn new(display_name: &str) -> Self {
        Self {
            display_name: display_name.trim().to_owned(),
            ..Self::default()
        }
    }

    /// Adds a number (normalised with `region`).
    #[must_use]
    pub fn with_number(mut self, kind: NumberKind, raw: &str, region: Option<Region>) -> Self {
        self.numbers.push(ContactNumber::new(kind, raw, region));
        self
    }

    /// Sets the organisation.
    #[must_use]
    pub fn with_organization(mut self, organization: &str) -> Self {
        self.organization = Some(organization.to_owned());
        self
    }

    /// Adds an e-mail address.
    #[must_use]
    pub fn with_email(mut self, email: &str) -> Self {
        self.emails.push(email.to_owned());
        self
    }

    /// The name to show, made from the other fields when `display_name` is
    /// empty: given and family name, nickname, organisation, first e-mail,
    /// first number. `None` when there is nothing to show.
    #[must_use]
    pub fn derived_display_name(&self) -> Option<String> {
        let trimmed = self.display_name.trim();
        if !trimmed.is_empty() {
            return Some(trimmed.to_owned());
        }
        let name = [self.given_name.as_deref(), self.family_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let fallbacks = [
            Some(name.as_str()),
            self.nickname.as_deref(),
            self.organization.as_deref(),
            self.emails.first().map(String::as_str),
            self.numbers.first().map(|n| n.raw.as_str()),
        ];
        fallbacks
            .into_iter()
            .flatten()
            .map(str::trim)
            .find(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// The folded name words (display, given, family, nickname).
    #[must_use]
    pub fn name_words(&self) -> Vec<String> {
        let mut out = fold::words(&self.display_name);
        for part in [&self.given_name, &self.family_name, &self.nickname]
            .into_iter()
            .flatten()
        {
            for w in fold::words(part) {
                if !out.contains(&w) {
                    out.push(w);
                }
            }
        }
        out
    }

    /// The folded organisation words.
    #[must_use]
    pub fn organization_words(&self) -> Vec<String> {
        self.organization
            .as_deref()
            .map(fold::words)
            .unwrap_or_default()
    }

    /// The keys duplicates across sources are merged by: E.164 numbers
    /// (with their extension: two people at one company's main number are
    /// two people) and lower-case e-mail addresses.
    #[must_use]
    pub fn merge_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .numbers
            .iter()
            .filter(|n| n.e164)
            .map(|n| match &n.extension {
                Some(ext) => format!("{};ext={ext}", n.number),
                None => n.number.clone(),
            })
            .collect();
        keys.extend(
            self.emails
                .iter()
                .map(|e| e.trim().to_lowercase())
                .filter(|e| e.contains('@')),
        );
        keys.sort();
        keys.dedup();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_the_fields_the_dialer_reads() {
        let de = "DE".parse().ok();
        let contact = Contact::new("Jörg Müller")
            .with_organization("Acme GmbH")
            .with_number(NumberKind::Work, "030 1000042", de)
            .with_number(NumberKind::Other, "4711", de);
        let json: serde_json::Value = serde_json::to_value(&contact).unwrap();
        assert_eq!(json["display_name"], "Jörg Müller");
        assert_eq!(json["organization"], "Acme GmbH");
        assert_eq!(json["source"], "local");
        assert_eq!(json["numbers"][0]["type"], "work");
        assert_eq!(json["numbers"][0]["number"], "+49301000042");
        assert_eq!(json["numbers"][0]["raw"], "030 1000042");
        assert_eq!(json["numbers"][1]["number"], "4711");
        assert_eq!(json["numbers"][1]["e164"], false);
        let back: Contact = serde_json::from_value(json).unwrap();
        assert_eq!(back, contact);
    }

    #[test]
    fn sources_round_trip_as_text() {
        for s in ["local", "ldap:corp", "google:me@example.com", "exchange:x"] {
            assert_eq!(s.parse::<Source>().unwrap().to_string(), s);
        }
        assert!("ldap:".parse::<Source>().is_err());
        assert!("carddav:x".parse::<Source>().is_err());
        assert!(serde_json::from_str::<Source>("\"nope\"").is_err());
    }

    #[test]
    fn display_name_falls_back_to_other_fields() {
        let mut c = Contact::default();
        assert_eq!(c.derived_display_name(), None);
        c.organization = Some("Initech".into());
        assert_eq!(c.derived_display_name().as_deref(), Some("Initech"));
        c.family_name = Some("Bråten".into());
        c.given_name = Some("Åsa".into());
        assert_eq!(c.derived_display_name().as_deref(), Some("Åsa Bråten"));
    }

    #[test]
    fn merge_keys_are_e164_numbers_and_emails() {
        let de = "DE".parse().ok();
        let c = Contact::new("X")
            .with_number(NumberKind::Work, "030 1000042", de)
            .with_number(NumberKind::Other, "4711", de)
            .with_email(" Anna@Example.TEST ");
        assert_eq!(c.merge_keys(), ["+49301000042", "anna@example.test"]);
    }
}
