//! Why a provisioning check failed.

use std::fmt;
use std::io;
use std::path::PathBuf;

use config_export::ConfigError;

/// Why fetching, checking or storing a provisioning document failed.
///
/// Whatever the error, the stored configuration is exactly as it was before
/// the check. URLs in messages never carry credentials nor a query (which
/// often carries a token): both show as `…`, even where the URL was refused
/// for carrying them. They may carry the user name a placeholder put in
/// the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The URL (after placeholders) is not an absolute `https:` URL this
    /// client can use.
    #[error("invalid provisioning url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL or template.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The URL template names a placeholder this client does not know.
    #[error(
        "unknown placeholder `{{{name}}}` in `{template}`; known: {{user}}, {{installation_id}}"
    )]
    UnknownPlaceholder {
        /// The template.
        template: String,
        /// The placeholder's name, without braces.
        name: String,
    },
    /// The URL template uses a placeholder that has no value.
    #[error("placeholder `{{{name}}}` in `{template}` has no value")]
    MissingPlaceholder {
        /// The template.
        template: String,
        /// The placeholder's name, without braces.
        name: &'static str,
    },
    /// A plain `http:` URL, or a redirect to one, without
    /// [`Settings::dangerous`](crate::Settings::dangerous)`().allow_plain_http()`.
    #[error("{url}: plain http refused; provisioning documents hold passwords, use https")]
    PlainHttpRefused {
        /// The refused URL.
        url: String,
    },
    /// The connection failed or broke (refused, reset, name not found).
    #[error("{url}: network error: {reason}")]
    Network {
        /// The URL being fetched.
        url: String,
        /// What the network layer said.
        reason: String,
    },
    /// The request did not complete in time.
    #[error("{url}: timed out")]
    Timeout {
        /// The URL being fetched.
        url: String,
    },
    /// The TLS handshake failed, typically because the server's certificate
    /// is not trusted or does not name the server.
    #[error("{url}: tls error: {reason}")]
    Tls {
        /// The URL being fetched.
        url: String,
        /// What TLS said, such as `invalid peer certificate: UnknownIssuer`.
        reason: String,
    },
    /// The server answered 401.
    #[error("{url}: unauthorized: {reason}")]
    Unauthorized {
        /// The URL being fetched.
        url: String,
        /// Why the client could not get past it.
        reason: UnauthorizedReason,
    },
    /// The server asks for an authentication scheme or digest variant this
    /// client does not implement.
    #[error("{url}: unsupported authentication challenge: {offered}")]
    UnsupportedAuthentication {
        /// The URL being fetched.
        url: String,
        /// The schemes offered.
        offered: String,
    },
    /// The server answered a status other than 200 (and not a redirect,
    /// 401 or an expected 304).
    #[error("{url}: http status {status}")]
    Http {
        /// The URL being fetched.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body is larger than the limit; reading stopped at the limit.
    #[error("{url}: document larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL being fetched.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The body ended before it was complete (the connection closed early).
    #[error("{url}: body ended after {received} bytes{}", .expected.map(|e| format!(" of {e}")).unwrap_or_default())]
    Truncated {
        /// The URL being fetched.
        url: String,
        /// Bytes received.
        received: u64,
        /// Bytes announced by `Content-Length`, if any.
        expected: Option<u64>,
    },
    /// More redirects than the limit.
    #[error("{url}: more than {limit} redirects")]
    TooManyRedirects {
        /// The URL the last redirect pointed to.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// A redirect led back to a URL already visited.
    #[error("{url}: redirect loop")]
    RedirectLoop {
        /// The URL visited twice.
        url: String,
    },
    /// A redirect without a usable `Location`.
    #[error("{url}: redirect without a usable location")]
    InvalidRedirect {
        /// The URL that answered with the redirect.
        url: String,
    },
    /// The document is not UTF-8.
    #[error("{url}: document is not utf-8")]
    NotUtf8 {
        /// The document's URL.
        url: String,
    },
    /// The document is not a valid configuration document: malformed XML, an
    /// invalid value, a missing element. `line` and `column` (from 1, the
    /// column in characters) say where, when the error comes from the text.
    #[error("{url}: {source}")]
    Document {
        /// The document's URL.
        url: String,
        /// Line of the error, from 1.
        line: Option<usize>,
        /// Column of the error, from 1, in characters.
        column: Option<usize>,
        /// The error, with the element path.
        source: Box<ConfigError>,
    },
    /// The document is valid, but the application's own check
    /// ([`Settings::with_acceptance`](crate::Settings::with_acceptance))
    /// refused it: the application could not start with it.
    #[error("{url}: the configuration cannot be used: {reason}")]
    Unusable {
        /// The provisioning document's URL.
        url: String,
        /// Why, as the application's check said.
        reason: String,
    },
    /// Includes are nested deeper than the limit.
    #[error("{url}: includes nested deeper than {limit}")]
    IncludeDepth {
        /// The include that was one too deep.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// A document includes itself, directly or through others.
    #[error("{url}: include loop")]
    IncludeLoop {
        /// The document included again.
        url: String,
    },
    /// One check would fetch more documents than the limit.
    #[error("more than {limit} documents in one provisioning check")]
    TooManyDocuments {
        /// The limit.
        limit: usize,
    },
    /// The stored configuration cannot be read back.
    #[error("stored configuration {path}: {source}")]
    Stored {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<ConfigError>,
    },
    /// Reading or writing the profile directory failed.
    #[error("{path}: {source}")]
    Store {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A certificate authority given to trust cannot be used.
    #[error("certificate authority: {reason}")]
    Certificate {
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("http client: {reason}")]
    Client {
        /// What the HTTP library said.
        reason: String,
    },
}

/// Why a 401 could not be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnauthorizedReason {
    /// The server asks for credentials and none were given.
    NoCredentials,
    /// The server refused the credentials.
    Rejected,
    /// A redirect led to another origin; credentials are only sent to the
    /// origin of the provisioning URL.
    CrossOrigin,
}

impl fmt::Display for UnauthorizedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoCredentials => "the server asks for credentials and none were given",
            Self::Rejected => "the server refused the credentials",
            Self::CrossOrigin => {
                "credentials are not sent to another origin than the provisioning url's"
            }
        })
    }
}

impl ProvisionError {
    pub(crate) fn document(url: &str, source: ConfigError) -> Self {
        Self::Document {
            url: url.to_owned(),
            line: source.position.map(|p| p.line),
            column: source.position.map(|p| p.column),
            source: Box::new(source),
        }
    }

    pub(crate) fn store(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Store {
            path: path.into(),
            source,
        }
    }
}
