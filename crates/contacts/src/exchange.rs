//! Exchange contacts through Microsoft Graph: `/me/contacts/delta` with
//! `@odata.nextLink`, `@odata.deltaLink` and `@removed` entries.

use serde_json::Value;

use crate::{
    model::{Contact, ContactNumber, ImAddress, NumberKind, PostalAddress, Source},
    number::Region,
    oauth::{Changes, CloudError, CloudHttp, MAX_PAGES, OAuthSession, finish_contact, same_origin},
};

/// The contact properties asked for.
pub const SELECT: &str = "displayName,givenName,surname,nickName,companyName,jobTitle,\
businessPhones,mobilePhone,homePhones,emailAddresses,imAddresses,businessHomePage,\
homeAddress,businessAddress";

/// An Exchange / Microsoft 365 account's contacts (default contacts
/// folder) through Microsoft Graph.
#[derive(Debug, Clone)]
pub struct ExchangeSource {
    account: String,
    api_base: String,
    page_size: u32,
    default_region: Option<Region>,
}

impl ExchangeSource {
    /// `https://graph.microsoft.com`.
    pub const API_BASE: &'static str = "https://graph.microsoft.com";

    /// The contacts of `account` (`exchange:<account>`).
    #[must_use]
    pub fn new(account: &str) -> Self {
        Self {
            account: account.to_owned(),
            api_base: Self::API_BASE.to_owned(),
            page_size: 500,
            default_region: None,
        }
    }

    /// Another API server (a test server).
    #[must_use]
    pub fn with_api_base(mut self, base: &str) -> Self {
        self.api_base = base.trim_end_matches('/').to_owned();
        self
    }

    /// Entries per page asked for (`Prefer: odata.maxpagesize`).
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

    /// `exchange:<account>`.
    #[must_use]
    pub fn source(&self) -> Source {
        Source::Exchange(self.account.clone())
    }

    /// Reads the changes since `delta_link` (the token of the last sync),
    /// or everything when there is none or it has expired.
    ///
    /// # Errors
    ///
    /// [`CloudError`] when a page cannot be read; nothing partial is
    /// returned.
    pub async fn fetch(
        &self,
        http: &CloudHttp,
        session: &mut OAuthSession,
        delta_link: Option<&str>,
    ) -> Result<Changes, CloudError> {
        if let Some(link) = delta_link {
            match self.read(http, session, Some(link)).await {
                Err(CloudError::SyncTokenExpired) => {
                    // The source names the account (an e-mail address): not logged.
                    tracing::info!("Exchange delta link expired; full sync");
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
        delta_link: Option<&str>,
    ) -> Result<Changes, CloudError> {
        let mut base = http.check_url(&format!("{}/v1.0/me/contacts/delta", self.api_base))?;
        let mut url = match delta_link {
            Some(link) => same_origin(&base, link)?,
            None => {
                base.query_pairs_mut().append_pair("$select", SELECT);
                base.clone()
            }
        };
        let prefer = format!("odata.maxpagesize={}", self.page_size);
        let source = self.source();
        let mut changes = Changes {
            full: delta_link.is_none(),
            ..Changes::default()
        };
        let mut entries = Vec::new();
        loop {
            if changes.pages >= MAX_PAGES {
                return Err(CloudError::TooManyPages(MAX_PAGES));
            }
            let page = http
                .get_json(session, &url, &[("Prefer", prefer.as_str())])
                .await?;
            changes.pages += 1;
            let Some(items) = page.get("value").and_then(Value::as_array) else {
                return Err(CloudError::Malformed {
                    url: crate::oauth::shown_url(url.as_str()),
                    message: "no value list".into(),
                });
            };
            for item in items {
                let Some(id) = item.get("id").and_then(Value::as_str) else {
                    changes.skipped += 1;
                    continue;
                };
                if item.get("@removed").is_some() {
                    entries.push((id.to_owned(), None));
                } else if let Some(contact) = graph_to_contact(item, &source, self.default_region) {
                    entries.push((id.to_owned(), Some((contact, None))));
                } else {
                    changes.skipped += 1;
                }
            }
            if let Some(next) = page.get("@odata.nextLink").and_then(Value::as_str) {
                url = same_origin(&base, next)?;
            } else if let Some(delta) = page.get("@odata.deltaLink").and_then(Value::as_str) {
                same_origin(&base, delta)?;
                changes.token = Some(delta.to_owned());
                changes.settle(entries);
                return Ok(changes);
            } else {
                return Err(CloudError::Malformed {
                    url: crate::oauth::shown_url(url.as_str()),
                    message: "neither @odata.nextLink nor @odata.deltaLink".into(),
                });
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

fn strings<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn address(v: &Value, key: &str, kind: NumberKind) -> Option<PostalAddress> {
    let a = v.get(key)?;
    let out = PostalAddress {
        kind,
        street: text(a, "street").unwrap_or_default().to_owned(),
        locality: text(a, "city").unwrap_or_default().to_owned(),
        region: text(a, "state").unwrap_or_default().to_owned(),
        postal_code: text(a, "postalCode").unwrap_or_default().to_owned(),
        country: text(a, "countryOrRegion").unwrap_or_default().to_owned(),
    };
    (out != PostalAddress {
        kind,
        ..PostalAddress::default()
    })
    .then_some(out)
}

/// A Graph `contact` as a contact; `None` when it has nothing to show.
#[must_use]
pub fn graph_to_contact(item: &Value, source: &Source, region: Option<Region>) -> Option<Contact> {
    let mut c = Contact {
        source: source.clone(),
        source_id: text(item, "id").map(str::to_owned),
        display_name: text(item, "displayName").unwrap_or_default().to_owned(),
        given_name: text(item, "givenName").map(str::to_owned),
        family_name: text(item, "surname").map(str::to_owned),
        nickname: text(item, "nickName").map(str::to_owned),
        organization: text(item, "companyName").map(str::to_owned),
        title: text(item, "jobTitle").map(str::to_owned),
        ..Contact::default()
    };
    for raw in strings(item, "businessPhones") {
        c.numbers
            .push(ContactNumber::new(NumberKind::Work, raw, region));
    }
    if let Some(raw) = text(item, "mobilePhone") {
        c.numbers
            .push(ContactNumber::new(NumberKind::Mobile, raw, region));
    }
    for raw in strings(item, "homePhones") {
        c.numbers
            .push(ContactNumber::new(NumberKind::Home, raw, region));
    }
    c.emails = item
        .get("emailAddresses")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|e| text(e, "address"))
        .map(str::to_owned)
        .collect();
    c.im = strings(item, "imAddresses")
        .map(|handle| ImAddress {
            service: if handle.starts_with("sip:") {
                "teams".into()
            } else {
                "other".into()
            },
            handle: handle.to_owned(),
        })
        .collect();
    c.urls = text(item, "businessHomePage")
        .map(str::to_owned)
        .into_iter()
        .collect();
    c.postal_addresses = [
        address(item, "businessAddress", NumberKind::Work),
        address(item, "homeAddress", NumberKind::Home),
    ]
    .into_iter()
    .flatten()
    .collect();
    finish_contact(c)
}
