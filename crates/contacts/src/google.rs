//! Google People API: `people.connections.list` with paging and sync
//! tokens.

use oauth2::url::Url;
use serde_json::Value;

use crate::{
    model::{Contact, ContactNumber, ImAddress, NumberKind, PostalAddress, Source},
    number::Region,
    oauth::{Changes, CloudError, CloudHttp, MAX_PAGES, OAuthSession, finish_contact},
};

/// The fields asked for.
pub const PERSON_FIELDS: &str = "names,nicknames,phoneNumbers,sipAddresses,emailAddresses,\
imClients,addresses,organizations,urls,photos";

/// A Google account's contacts (People API, "My Contacts").
#[derive(Debug, Clone)]
pub struct GoogleSource {
    account: String,
    api_base: String,
    page_size: u32,
    default_region: Option<Region>,
}

impl GoogleSource {
    /// `https://people.googleapis.com`.
    pub const API_BASE: &'static str = "https://people.googleapis.com";

    /// The contacts of `account` (a name for the source: `google:<account>`).
    #[must_use]
    pub fn new(account: &str) -> Self {
        Self {
            account: account.to_owned(),
            api_base: Self::API_BASE.to_owned(),
            page_size: 1000,
            default_region: None,
        }
    }

    /// Another API server (a test server).
    #[must_use]
    pub fn with_api_base(mut self, base: &str) -> Self {
        self.api_base = base.trim_end_matches('/').to_owned();
        self
    }

    /// Entries per page (1 to 1000).
    #[must_use]
    pub fn with_page_size(mut self, size: u32) -> Self {
        self.page_size = size.clamp(1, 1000);
        self
    }

    /// The region numbers without a country code are in.
    #[must_use]
    pub fn with_default_region(mut self, region: Option<Region>) -> Self {
        self.default_region = region;
        self
    }

    /// `google:<account>`.
    #[must_use]
    pub fn source(&self) -> Source {
        Source::Google(self.account.clone())
    }

    /// Reads the changes since `sync_token`, or everything when there is
    /// none or it has expired (then [`Changes::full`] is set).
    ///
    /// # Errors
    ///
    /// [`CloudError`] when a page cannot be read; nothing partial is
    /// returned.
    pub async fn fetch(
        &self,
        http: &CloudHttp,
        session: &mut OAuthSession,
        sync_token: Option<&str>,
    ) -> Result<Changes, CloudError> {
        if let Some(token) = sync_token {
            match self.read(http, session, Some(token)).await {
                Err(CloudError::SyncTokenExpired) => {
                    // The source names the account (an e-mail address): not logged.
                    tracing::info!("Google sync token expired; full sync");
                }
                other => return other,
            }
        }
        self.read(http, session, None).await
    }

    async fn read(
        &self,
        http: &CloudHttp,
        session: &mut OAuthSession,
        sync_token: Option<&str>,
    ) -> Result<Changes, CloudError> {
        let base = http.check_url(&format!("{}/v1/people/me/connections", self.api_base))?;
        let source = self.source();
        let mut changes = Changes {
            full: sync_token.is_none(),
            ..Changes::default()
        };
        let mut entries = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            if changes.pages >= MAX_PAGES {
                return Err(CloudError::TooManyPages(MAX_PAGES));
            }
            let mut url: Url = base.clone();
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("personFields", PERSON_FIELDS)
                    .append_pair("pageSize", &self.page_size.to_string())
                    .append_pair("requestSyncToken", "true");
                if let Some(token) = sync_token {
                    q.append_pair("syncToken", token);
                }
                if let Some(token) = &page_token {
                    q.append_pair("pageToken", token);
                }
            }
            let page = http.get_json(session, &url, &[]).await?;
            changes.pages += 1;
            let people = match page.get("connections") {
                None => &[][..],
                Some(Value::Array(people)) => people.as_slice(),
                Some(_) => {
                    return Err(CloudError::Malformed {
                        url: crate::oauth::shown_url(url.as_str()),
                        message: "connections is not a list".into(),
                    });
                }
            };
            for person in people {
                let Some(name) = person.get("resourceName").and_then(Value::as_str) else {
                    changes.skipped += 1;
                    continue;
                };
                let deleted = person
                    .pointer("/metadata/deleted")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if deleted {
                    entries.push((name.to_owned(), None));
                } else if let Some(contact) =
                    person_to_contact(person, &source, self.default_region)
                {
                    // Google's placeholder pictures (initials) are marked default.
                    let photo = list(person, "photos")
                        .iter()
                        .find(|p| !p.get("default").and_then(Value::as_bool).unwrap_or(false));
                    let photo = photo.and_then(|p| text(p, "url")).map(str::to_owned);
                    entries.push((name.to_owned(), Some((contact, photo))));
                } else {
                    changes.skipped += 1;
                }
            }
            match page.get("nextPageToken").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => page_token = Some(next.to_owned()),
                _ => {
                    changes.token = page
                        .get("nextSyncToken")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    changes.settle(entries);
                    return Ok(changes);
                }
            }
        }
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

/// Google's number and address types (`mobile`, `work`, `homeFax`, ...).
fn kind_of(kind: Option<&str>) -> NumberKind {
    match kind.unwrap_or_default().to_ascii_lowercase().as_str() {
        "mobile" | "workmobile" => NumberKind::Mobile,
        "work" | "main" | "workpager" => NumberKind::Work,
        "home" => NumberKind::Home,
        "homefax" | "workfax" | "otherfax" => NumberKind::Fax,
        _ => NumberKind::Other,
    }
}

/// A People API `Person` as a contact; `None` when it has nothing to show.
#[must_use]
pub fn person_to_contact(
    person: &Value,
    source: &Source,
    region: Option<Region>,
) -> Option<Contact> {
    let mut c = Contact {
        source: source.clone(),
        source_id: text(person, "resourceName").map(str::to_owned),
        ..Contact::default()
    };
    if let Some(name) = list(person, "names").first() {
        c.display_name = text(name, "displayName").unwrap_or_default().to_owned();
        c.given_name = text(name, "givenName").map(str::to_owned);
        c.family_name = text(name, "familyName").map(str::to_owned);
    }
    c.nickname = list(person, "nicknames")
        .iter()
        .find_map(|n| text(n, "value"))
        .map(str::to_owned);
    if let Some(org) = list(person, "organizations").first() {
        c.organization = text(org, "name").map(str::to_owned);
        c.title = text(org, "title").map(str::to_owned);
    }
    c.numbers = list(person, "phoneNumbers")
        .iter()
        .filter_map(|n| {
            let raw = text(n, "value")?;
            Some(ContactNumber::new(kind_of(text(n, "type")), raw, region))
        })
        .collect();
    c.sip_addresses = list(person, "sipAddresses")
        .iter()
        .filter_map(|s| text(s, "value"))
        .map(|s| {
            if s.starts_with("sip:") || s.starts_with("sips:") {
                s.to_owned()
            } else {
                format!("sip:{s}")
            }
        })
        .collect();
    c.emails = list(person, "emailAddresses")
        .iter()
        .filter_map(|e| text(e, "value"))
        .map(str::to_owned)
        .collect();
    c.im = list(person, "imClients")
        .iter()
        .filter_map(|im| {
            Some(ImAddress {
                service: text(im, "protocol").unwrap_or("other").to_ascii_lowercase(),
                handle: text(im, "username")?.to_owned(),
            })
        })
        .collect();
    c.postal_addresses = list(person, "addresses")
        .iter()
        .map(|a| PostalAddress {
            kind: kind_of(text(a, "type")),
            street: text(a, "streetAddress").unwrap_or_default().to_owned(),
            locality: text(a, "city").unwrap_or_default().to_owned(),
            region: text(a, "region").unwrap_or_default().to_owned(),
            postal_code: text(a, "postalCode").unwrap_or_default().to_owned(),
            country: text(a, "country").unwrap_or_default().to_owned(),
        })
        .filter(|a| {
            *a != PostalAddress {
                kind: a.kind,
                ..PostalAddress::default()
            }
        })
        .collect();
    c.urls = list(person, "urls")
        .iter()
        .filter_map(|u| text(u, "value"))
        .map(str::to_owned)
        .collect();
    finish_contact(c)
}
