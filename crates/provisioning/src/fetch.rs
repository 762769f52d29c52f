//! One document over HTTP(S): redirects followed by hand (bounded, loops
//! detected, credentials kept to the first origin), 401 answered with Basic
//! or Digest, conditional requests, and a streamed body cut off at the size
//! limit.

use std::error::Error as _;
use std::io;

use reqwest::header::{
    self, AUTHORIZATION, ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{StatusCode, Url};

use crate::auth::{self, Answer};
use crate::error::{ProvisionError, UnauthorizedReason};
use crate::settings::Credentials;
use crate::store::CachedDocument;

/// How the fetcher behaves.
#[derive(Debug, Clone)]
pub(crate) struct FetchPolicy {
    pub(crate) credentials: Option<Credentials>,
    pub(crate) max_body_bytes: u64,
    pub(crate) max_redirects: usize,
    pub(crate) allow_plain_http: bool,
}

/// What a fetch produced.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// A fresh body and its validators.
    Body {
        body: Vec<u8>,
        final_url: Url,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    /// 304: the cached copy is current.
    NotModified { final_url: Url },
}

/// Fetches `url`; `cached` supplies the validators for a conditional
/// request. Credentials go to the origin of `root` only: the provisioning
/// URL, also when fetching the documents it includes and their redirects.
pub(crate) async fn fetch(
    client: &reqwest::Client,
    policy: &FetchPolicy,
    url: &Url,
    root: &Url,
    cached: Option<&CachedDocument>,
) -> Result<Fetched, ProvisionError> {
    let origin = root.origin();
    let mut current = url.clone();
    let mut visited = vec![current.clone()];
    let mut authorization: Option<String> = None;
    let mut answered_stale = false;
    // Each round either returns or follows a redirect (bounded by
    // max_redirects) or answers a 401 (at most twice per URL).
    loop {
        check_scheme(&current, policy)?;
        let same_origin = current.origin() == origin;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/xml, text/xml;q=0.9, */*;q=0.1"),
        );
        if let Some(cached) = cached {
            if let Some(etag) = cached.etag.as_deref().and_then(header_value) {
                headers.insert(IF_NONE_MATCH, etag);
            }
            if let Some(date) = cached.last_modified.as_deref().and_then(header_value) {
                headers.insert(IF_MODIFIED_SINCE, date);
            }
        }
        if let Some(value) = authorization.as_deref().filter(|_| same_origin) {
            let mut value = header_value(value).ok_or_else(|| ProvisionError::Unauthorized {
                url: display(&current),
                reason: UnauthorizedReason::Rejected,
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut response = client
            .get(current.clone())
            .headers(headers)
            .send()
            .await
            .map_err(|e| transport_error(&current, &e))?;
        let status = response.status();
        tracing::debug!(
            host = current.host_str(),
            status = status.as_u16(),
            "provisioning response"
        );
        match status {
            StatusCode::OK => {
                let body = read_body(&mut response, &current, policy.max_body_bytes).await?;
                let text = |name| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                return Ok(Fetched::Body {
                    etag: text(ETAG),
                    last_modified: text(LAST_MODIFIED),
                    body,
                    final_url: current,
                });
            }
            StatusCode::NOT_MODIFIED if cached.is_some() => {
                return Ok(Fetched::NotModified { final_url: current });
            }
            StatusCode::UNAUTHORIZED => {
                let Some(credentials) = &policy.credentials else {
                    return Err(ProvisionError::Unauthorized {
                        url: display(&current),
                        reason: UnauthorizedReason::NoCredentials,
                    });
                };
                if !same_origin {
                    return Err(ProvisionError::Unauthorized {
                        url: display(&current),
                        reason: UnauthorizedReason::CrossOrigin,
                    });
                }
                let challenges = auth::parse_challenges(
                    response
                        .headers()
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok()),
                );
                let answer = auth::choose(&challenges);
                if authorization.is_some() {
                    // Answered already: only a stale nonce earns one more try.
                    let stale = matches!(&answer, Some(Answer::Digest(d)) if d.stale);
                    if !stale || answered_stale {
                        return Err(ProvisionError::Unauthorized {
                            url: display(&current),
                            reason: UnauthorizedReason::Rejected,
                        });
                    }
                    answered_stale = true;
                }
                let password = credentials.password.expose();
                authorization = Some(match answer {
                    Some(Answer::Digest(digest)) => digest.authorization(
                        &credentials.user,
                        password,
                        "GET",
                        &request_target(&current),
                        &format!("{:032x}", rand::random::<u128>()),
                    ),
                    Some(Answer::Basic) => auth::basic(&credentials.user, password),
                    None => {
                        let offered: Vec<_> = challenges.iter().map(|c| c.scheme.clone()).collect();
                        return Err(ProvisionError::UnsupportedAuthentication {
                            url: display(&current),
                            offered: if offered.is_empty() {
                                "none".to_owned()
                            } else {
                                offered.join(", ")
                            },
                        });
                    }
                });
            }
            StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT => {
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| current.join(l).ok())
                    .filter(|u| matches!(u.scheme(), "https" | "http"))
                    .ok_or_else(|| ProvisionError::InvalidRedirect {
                        url: display(&current),
                    })?;
                if visited.contains(&next) {
                    return Err(ProvisionError::RedirectLoop {
                        url: display(&next),
                    });
                }
                if visited.len() > policy.max_redirects {
                    return Err(ProvisionError::TooManyRedirects {
                        url: display(&next),
                        limit: policy.max_redirects,
                    });
                }
                visited.push(next.clone());
                current = next;
                // A digest answer covers one URI; a new one gets its own challenge.
                authorization = None;
                answered_stale = false;
            }
            other => {
                return Err(ProvisionError::Http {
                    url: display(&current),
                    status: other.as_u16(),
                });
            }
        }
    }
}

fn check_scheme(url: &Url, policy: &FetchPolicy) -> Result<(), ProvisionError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if policy.allow_plain_http => Ok(()),
        _ => Err(ProvisionError::PlainHttpRefused { url: display(url) }),
    }
}

fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

/// Path and query, the `uri` of a Digest answer.
fn request_target(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// The URL as shown in errors and reports: without credentials, query
/// (which often carries a token) and fragment.
pub(crate) fn display(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    let query = shown.query().is_some();
    shown.set_query(None);
    let mut text = String::from(shown);
    if query {
        text.push_str("?…");
    }
    text
}

async fn read_body(
    response: &mut reqwest::Response,
    url: &Url,
    limit: u64,
) -> Result<Vec<u8>, ProvisionError> {
    let declared = response.content_length();
    let too_large = || ProvisionError::TooLarge {
        url: display(url),
        limit,
    };
    if declared.is_some_and(|d| d > limit) {
        return Err(too_large());
    }
    // What the server declares is no reason to reserve it all up front.
    let capacity = declared.unwrap_or(0).min(limit).min(64 * 1024);
    let mut body = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(ProvisionError::Timeout { url: display(url) }),
            Err(e) => {
                if let Some(tls) = find_tls_error(&e) {
                    return Err(ProvisionError::Tls {
                        url: display(url),
                        reason: tls.to_string(),
                    });
                }
                return Err(ProvisionError::Truncated {
                    url: display(url),
                    received: body.len() as u64,
                    expected: declared,
                });
            }
        }
    }
}

/// Sorts a failed request into timeout, TLS or network.
fn transport_error(url: &Url, error: &reqwest::Error) -> ProvisionError {
    if error.is_timeout() {
        return ProvisionError::Timeout { url: display(url) };
    }
    if let Some(tls) = find_tls_error(error) {
        return ProvisionError::Tls {
            url: display(url),
            reason: tls.to_string(),
        };
    }
    let mut reason = String::new();
    let mut source = error.source();
    while let Some(e) = source {
        if !reason.is_empty() {
            reason.push_str(": ");
        }
        reason.push_str(&e.to_string());
        source = e.source();
    }
    if reason.is_empty() {
        // reqwest's message ends with the whole URL, query and all.
        reason = error.to_string();
        if let Some(at) = reason.find(" for url (") {
            reason.truncate(at);
        }
    }
    ProvisionError::Network {
        url: display(url),
        reason,
    }
}

/// The rustls error somewhere in the chain. `io::Error` hides its inner
/// error from `source()` (and may wrap another `io::Error`), so look inside.
fn find_tls_error<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    // Error chains are short; the bound guards against a cyclic one.
    for _ in 0..32 {
        let e = current?;
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            current = Some(inner);
            continue;
        }
        current = e.source();
    }
    None
}
