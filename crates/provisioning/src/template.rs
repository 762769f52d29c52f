//! URL templates: `{user}` and `{installation_id}` replaced by their
//! percent-encoded values.

use reqwest::Url;

use crate::error::ProvisionError;

/// The values placeholders stand for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Placeholders {
    pub(crate) user: Option<String>,
    pub(crate) installation_id: String,
}

/// Replaces the placeholders in `template`. Values are percent-encoded
/// (everything but RFC 3986 unreserved characters), so a value can neither
/// add a path segment nor a query parameter.
pub(crate) fn expand(template: &str, values: &Placeholders) -> Result<String, ProvisionError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        out.push_str(&rest[..open]);
        if rest[open..].starts_with('}') {
            return Err(ProvisionError::InvalidUrl {
                url: shown(template),
                reason: "`}` without `{`",
            });
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(ProvisionError::InvalidUrl {
                url: shown(template),
                reason: "`{` without `}`",
            });
        };
        let name = &after[..close];
        let value = match name {
            "user" => values
                .user
                .as_deref()
                .ok_or_else(|| ProvisionError::MissingPlaceholder {
                    template: shown(template),
                    name: "user",
                })?,
            "installation_id" => values.installation_id.as_str(),
            _ => {
                return Err(ProvisionError::UnknownPlaceholder {
                    template: shown(template),
                    name: name.to_owned(),
                });
            }
        };
        percent_encode(value, &mut out);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands `template` and resolves it against `base` (for includes given
/// relative to the including document), refusing what is not http(s) or
/// carries credentials.
pub(crate) fn resolve(
    template: &str,
    values: &Placeholders,
    base: Option<&Url>,
) -> Result<Url, ProvisionError> {
    let expanded = expand(template, values)?;
    let invalid = |reason| ProvisionError::InvalidUrl {
        url: shown(template),
        reason,
    };
    let url = match base {
        Some(base) => base.join(&expanded),
        None => Url::parse(&expanded),
    }
    .map_err(|_| invalid("not an absolute URL"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid("the scheme is neither https nor http"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL; give them as Credentials"));
    }
    if url.host().is_none() {
        return Err(invalid("no host"));
    }
    Ok(url)
}

/// A URL or template as errors show it: credentials and the query (which
/// often carries a token) replaced by `…`. Everything between the scheme
/// and the last `@` before the query is taken for credentials, whatever
/// the spelling (`https://u:p@h`, `https:u:p@h`, `//u:p@h`, a password
/// with `/` in it); an `@` in a path hides a little more than needed.
pub(crate) fn shown(template: &str) -> String {
    let end = template.find(['?', '#']).unwrap_or(template.len());
    let main = &template[..end];
    let query = template[end..].starts_with('?');
    let mut out = match main.rfind('@') {
        Some(at) => {
            let scheme = main.find(':').filter(|&c| {
                main.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                    && main[..c]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            });
            let mut start = scheme.map_or(0, |c| c + 1);
            while main[start..at].starts_with(['/', '\\']) {
                start += 1;
            }
            format!("{}…{}", &main[..start], &main[at..])
        }
        None => main.to_owned(),
    };
    if query {
        out.push_str("?…");
    }
    out
}

fn percent_encode(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Placeholders {
        Placeholders {
            user: Some("Zoë O'Neil/7?x=1&y".to_owned()),
            installation_id: "0f3a".to_owned(),
        }
    }

    #[test]
    fn placeholders_are_replaced_and_percent_encoded() {
        let url = expand(
            "https://p.example/{user}/cfg.xml?id={installation_id}",
            &values(),
        )
        .unwrap();
        assert_eq!(
            url,
            "https://p.example/Zo%C3%AB%20O%27Neil%2F7%3Fx%3D1%26y/cfg.xml?id=0f3a"
        );
        let parsed = resolve(&url, &values(), None).unwrap();
        assert_eq!(parsed.path_segments().unwrap().count(), 2);
        assert_eq!(parsed.query(), Some("id=0f3a"));
    }

    #[test]
    fn unknown_missing_and_unbalanced_placeholders_are_errors() {
        assert!(matches!(
            expand("https://p/{mac}.xml", &values()),
            Err(ProvisionError::UnknownPlaceholder { name, .. }) if name == "mac"
        ));
        let no_user = Placeholders::default();
        assert!(matches!(
            expand("https://p/{user}.xml", &no_user),
            Err(ProvisionError::MissingPlaceholder { name: "user", .. })
        ));
        assert!(expand("https://p/{user.xml", &values()).is_err());
        assert!(expand("https://p/user}.xml", &values()).is_err());
    }

    #[test]
    fn relative_urls_resolve_against_the_base_and_credentials_are_refused() {
        let base = Url::parse("https://p.example/site/a.xml").unwrap();
        let url = resolve("common/{installation_id}.xml", &values(), Some(&base)).unwrap();
        assert_eq!(url.as_str(), "https://p.example/site/common/0f3a.xml");
        assert!(matches!(
            resolve("https://u:pw@p.example/a.xml", &values(), None),
            Err(ProvisionError::InvalidUrl { .. })
        ));
        assert!(resolve("ftp://p.example/a.xml", &values(), None).is_err());
        assert!(resolve("a.xml", &values(), None).is_err());
    }

    #[test]
    fn errors_show_no_credentials_or_query_of_the_url() {
        for (template, leaked) in [
            ("https://alice:s3cret@p.example/a.xml", "s3cret"),
            ("https://alice:s3cret@p.example/{mac}.xml", "s3cret"),
            ("https://p.example/{user}.xml?token=T0KEN", "T0KEN"),
            ("https://p.example/{x.xml?token=T0KEN", "T0KEN"),
            ("ftp://p.example/a.xml?token=T0KEN#frag", "T0KEN"),
        ] {
            let err = resolve(template, &Placeholders::default(), None).unwrap_err();
            let text = err.to_string();
            assert!(!text.contains(leaked), "{template}: {text}");
            assert!(text.contains("p.example"), "{template}: {text}");
        }
        assert_eq!(
            shown("https://alice:pw@p.example:8443/cfg/{user}.xml?t=1"),
            "https://…@p.example:8443/cfg/{user}.xml?…"
        );
        for (odd, leaked) in [
            ("//alice:pw1@p.example/a.xml", "pw1"),
            ("https:alice:pw2@p.example/a.xml", "pw2"),
            ("https://alice:pa/ss3@p.example/a.xml", "ss3"),
            ("https:\\\\alice:pw4@p.example/a.xml", "pw4"),
        ] {
            let text = shown(odd);
            assert!(!text.contains(leaked), "{odd}: {text}");
            assert!(text.ends_with("@p.example/a.xml"), "{odd}: {text}");
        }
        assert_eq!(shown("https://p.example/a.xml"), "https://p.example/a.xml");
        let url = Url::parse("https://p.example/a.xml?token=T0KEN").unwrap();
        assert_eq!(crate::fetch::display(&url), "https://p.example/a.xml?…");
    }
}
