//! OAuth 2.0 for installed apps (RFC 8252): authorization code with PKCE
//! (S256) and a loopback redirect, token refresh, and the HTTP client the
//! cloud sources share (bearer token, one refresh on 401, bounded waits on
//! 429).

use std::{
    fmt, io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, TokenResponse, TokenUrl, basic::BasicClient, url::Url,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Contact;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long [`LoginFlow::finish`] waits for the browser by default.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest `Retry-After` that is waited for; longer ones fail the sync.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How many 429 answers one request waits through.
const MAX_RATE_LIMITED: usize = 3;
/// Pages one sync reads at most.
pub const MAX_PAGES: usize = 10_000;
/// Bytes of an error body kept for the error message.
const ERROR_BODY_LEN: usize = 300;

/// Why a cloud login or sync failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// A URL does not parse.
    #[error("invalid URL {url:?}: {message}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A plain `http://` URL was given without allowing it.
    #[error("refusing plain http URL {0} (https is required)")]
    InsecureUrl(String),
    /// The loopback redirect listener failed.
    #[error("loopback redirect listener: {0}")]
    Listener(io::Error),
    /// The browser did not come back in time.
    #[error("no authorization arrived on the loopback redirect within {0:?}")]
    LoginTimedOut(Duration),
    /// The redirect carried a different `state` (a forged or stale redirect).
    #[error("the authorization redirect carried the wrong state; refused")]
    StateMismatch,
    /// The user or the server refused the authorization.
    #[error("authorization refused: {0}")]
    Denied(String),
    /// The token endpoint refused the request.
    #[error("token endpoint: {0}")]
    Token(String),
    /// The server could not be reached or the answer not read.
    #[error("request to {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The underlying error.
        source: reqwest::Error,
    },
    /// An unexpected HTTP status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The access token was refused even after a refresh.
    #[error("{url} refused the access token (401) after a refresh; log in again")]
    Unauthorized {
        /// The URL.
        url: String,
    },
    /// Rate limited for longer than is waited.
    #[error("{url} is rate limiting (429), retry after {retry_after:?}")]
    RateLimited {
        /// The URL.
        url: String,
        /// The server's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// The sync token or delta link expired; a full sync is needed.
    #[error("the sync token has expired")]
    SyncTokenExpired,
    /// The answer is not what the API documents.
    #[error("{url}: malformed answer: {message}")]
    Malformed {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// More pages than [`MAX_PAGES`].
    #[error("more than {0} pages; giving up")]
    TooManyPages(usize),
    /// A next or delta link points at another server.
    #[error("the server sent a link to another origin: {0}")]
    ForeignLink(String),
    /// The token file could not be read or written.
    #[error("token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl CloudError {
    /// Whether trying again later may succeed: the request did not get
    /// through, or the server was unavailable, overloaded (429) or timed
    /// out (408).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            CloudError::Http { .. } | CloudError::RateLimited { .. } => true,
            CloudError::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            _ => false,
        }
    }
}

/// A refresh token. Never printed: `Debug` and `Display` show
/// `<redacted>`; [`RefreshToken::expose`] gives the text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// Wraps a token.
    #[must_use]
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token text, to send to the token endpoint or store.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

impl fmt::Display for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An OAuth client registration and the authorization server's endpoints.
#[derive(Clone)]
pub struct OAuthConfig {
    client_id: String,
    client_secret: Option<String>,
    auth_url: String,
    token_url: String,
    scopes: Vec<String>,
}

impl fmt::Debug for OAuthConfig {
    /// The client secret is shown only as present or not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("auth_url", &self.auth_url)
            .field("token_url", &self.token_url)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl OAuthConfig {
    /// Google's endpoints, read-only contacts scope.
    #[must_use]
    pub fn google(client_id: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: None,
            auth_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            token_url: "https://oauth2.googleapis.com/token".into(),
            scopes: vec!["https://www.googleapis.com/auth/contacts.readonly".into()],
        }
    }

    /// Microsoft identity platform (`common` tenant), `Contacts.Read` and
    /// `offline_access` (for a refresh token).
    #[must_use]
    pub fn microsoft(client_id: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: None,
            auth_url: "https://login.microsoftonline.com/common/oauth2/v2.0/authorize".into(),
            token_url: "https://login.microsoftonline.com/common/oauth2/v2.0/token".into(),
            scopes: vec!["offline_access".into(), "Contacts.Read".into()],
        }
    }

    /// Other endpoints (another tenant, or a test server).
    #[must_use]
    pub fn with_endpoints(mut self, auth_url: &str, token_url: &str) -> Self {
        self.auth_url = auth_url.to_owned();
        self.token_url = token_url.to_owned();
        self
    }

    /// The client secret of an installed-app registration that has one
    /// (Google's desktop clients do; it is not confidential).
    #[must_use]
    pub fn with_client_secret(mut self, secret: &str) -> Self {
        self.client_secret = Some(secret.to_owned());
        self
    }

    /// The client id.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn client(&self, http: &CloudHttp, redirect: Option<&str>) -> Result<Client, CloudError> {
        http.check_url(&self.auth_url)?;
        http.check_url(&self.token_url)?;
        let bad = |url: &str| {
            let url = url.to_owned();
            move |e: oauth2::url::ParseError| CloudError::BadUrl {
                url,
                message: e.to_string(),
            }
        };
        let mut client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(AuthUrl::new(self.auth_url.clone()).map_err(bad(&self.auth_url))?)
            .set_token_uri(TokenUrl::new(self.token_url.clone()).map_err(bad(&self.token_url))?)
            .set_auth_type(AuthType::RequestBody);
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        if let Some(redirect) = redirect {
            client = client
                .set_redirect_uri(RedirectUrl::new(redirect.to_owned()).map_err(bad(redirect))?);
        }
        Ok(client)
    }
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The HTTP client of the cloud sources (reqwest, rustls). Redirects are
/// not followed (the token endpoint must not be redirected); `https` only
/// unless [`CloudHttp::dangerous_allow_plain_http`].
#[derive(Debug, Clone)]
pub struct CloudHttp {
    client: reqwest::Client,
    allow_http: bool,
    max_retry_after: Duration,
}

impl CloudHttp {
    /// A client with a 30 s request timeout.
    ///
    /// # Errors
    ///
    /// [`CloudError::Http`] when the TLS setup fails.
    pub fn new() -> Result<Self, CloudError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| CloudError::Http {
                url: String::new(),
                source: source.without_url(),
            })?;
        Ok(Self {
            client,
            allow_http: false,
            max_retry_after: MAX_RETRY_AFTER,
        })
    }

    /// Allows plain `http://` endpoints. Tokens then travel unencrypted:
    /// only for test servers on loopback.
    #[must_use]
    pub fn dangerous_allow_plain_http(mut self) -> Self {
        self.allow_http = true;
        self
    }

    /// The longest `Retry-After` waited for ([`MAX_RETRY_AFTER`] by default).
    #[must_use]
    pub fn with_max_retry_after(mut self, limit: Duration) -> Self {
        self.max_retry_after = limit;
        self
    }

    pub(crate) fn check_url(&self, url: &str) -> Result<Url, CloudError> {
        let parsed = Url::parse(url).map_err(|e| CloudError::BadUrl {
            url: shown_url(url),
            message: e.to_string(),
        })?;
        match parsed.scheme() {
            "https" => Ok(parsed),
            // Plain http only ever to this machine (a test server), whatever
            // the URL's user-info or path says.
            "http" if self.allow_http && loopback_host(&parsed) => Ok(parsed),
            "http" => Err(CloudError::InsecureUrl(shown_url(url))),
            other => Err(CloudError::BadUrl {
                url: shown_url(url),
                message: format!("unsupported scheme {other}"),
            }),
        }
    }

    /// GETs JSON with the session's bearer token: one refresh on 401,
    /// bounded waits on 429 (`Retry-After`), 410 as
    /// [`CloudError::SyncTokenExpired`].
    pub(crate) async fn get_json(
        &self,
        session: &mut OAuthSession,
        url: &Url,
        headers: &[(&str, &str)],
    ) -> Result<Value, CloudError> {
        // Sync and page tokens ride in the query: errors and logs leave it out.
        let text = shown_url(url.as_str());
        let mut refreshed = false;
        let mut limited = 0;
        loop {
            let token = session.access_token(self).await?;
            let mut request = self.client.get(url.clone()).bearer_auth(token);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.map_err(|source| CloudError::Http {
                url: text.clone(),
                source: source.without_url(),
            })?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.bytes().await.map_err(|source| CloudError::Http {
                url: text.clone(),
                source: source.without_url(),
            })?;
            match status {
                200..=299 => {
                    return serde_json::from_slice(&body).map_err(|e| CloudError::Malformed {
                        url: text,
                        message: e.to_string(),
                    });
                }
                401 if !refreshed => {
                    tracing::debug!(url = %text, "access token refused; refreshing");
                    session.refresh(self).await?;
                    refreshed = true;
                }
                401 => return Err(CloudError::Unauthorized { url: text }),
                410 => return Err(CloudError::SyncTokenExpired),
                429 | 503 if limited < MAX_RATE_LIMITED => {
                    let wait = retry_after.unwrap_or(Duration::from_secs(1));
                    if wait > self.max_retry_after {
                        return Err(CloudError::RateLimited {
                            url: text,
                            retry_after,
                        });
                    }
                    tracing::info!(url = %text, ?wait, "rate limited; waiting");
                    limited += 1;
                    tokio::time::sleep(wait).await;
                }
                429 => {
                    return Err(CloudError::RateLimited {
                        url: text,
                        retry_after,
                    });
                }
                _ => {
                    let body = String::from_utf8_lossy(&body);
                    if body.contains("EXPIRED_SYNC_TOKEN") {
                        return Err(CloudError::SyncTokenExpired);
                    }
                    return Err(CloudError::Status {
                        url: text,
                        status,
                        body: body.chars().take(ERROR_BODY_LEN).collect(),
                    });
                }
            }
        }
    }

    /// GETs a photo without credentials, at most `limit` bytes.
    pub(crate) async fn get_photo(&self, url: &str, limit: usize) -> Result<Vec<u8>, CloudError> {
        let parsed = self.check_url(url)?;
        // A photo's URL opens it without logging in: errors name the host.
        let shown = format!(
            "{}://{}/…",
            parsed.scheme(),
            parsed.host_str().unwrap_or("")
        );
        let mut response =
            self.client
                .get(parsed)
                .send()
                .await
                .map_err(|source| CloudError::Http {
                    url: shown.clone(),
                    source: source.without_url(),
                })?;
        if !response.status().is_success() {
            return Err(CloudError::Status {
                url: shown.clone(),
                status: response.status().as_u16(),
                body: String::new(),
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|source| CloudError::Http {
            url: shown.clone(),
            source: source.without_url(),
        })? {
            if bytes.len() + chunk.len() > limit {
                return Err(CloudError::Malformed {
                    url: shown.clone(),
                    message: format!("photo larger than {limit} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, reqwest::Error> {
        let (parts, body) = request.into_parts();
        let response = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let mut out = HttpResponse::new(bytes.to_vec());
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

fn token_error<E: std::error::Error + 'static>(
    error: RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
) -> CloudError {
    match error {
        RequestTokenError::ServerResponse(response) => CloudError::Token(response.to_string()),
        RequestTokenError::Request(e) => CloudError::Token(format!("request failed: {e}")),
        RequestTokenError::Parse(e, _) => CloudError::Token(format!("malformed answer: {e}")),
        RequestTokenError::Other(text) => CloudError::Token(text),
    }
}

/// Access to one account: a refresh token and the current access token.
pub struct OAuthSession {
    config: OAuthConfig,
    refresh: RefreshToken,
    access: Option<(String, Option<Instant>)>,
}

impl fmt::Debug for OAuthSession {
    /// The bearer token is a secret: shown only as present or not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthSession")
            .field("config", &self.config)
            .field("refresh", &self.refresh)
            .field(
                "access",
                &self.access.as_ref().map(|(_, expires)| ("***", expires)),
            )
            .finish()
    }
}

impl OAuthSession {
    /// A session from a stored refresh token; the first request gets an
    /// access token.
    #[must_use]
    pub fn new(config: OAuthConfig, refresh: RefreshToken) -> Self {
        Self {
            config,
            refresh,
            access: None,
        }
    }

    /// The refresh token (servers may rotate it on refresh: store it again
    /// after a sync).
    #[must_use]
    pub fn refresh_token(&self) -> &RefreshToken {
        &self.refresh
    }

    /// A valid access token, refreshed when missing or about to expire.
    ///
    /// # Errors
    ///
    /// As [`OAuthSession::refresh`].
    pub async fn access_token(&mut self, http: &CloudHttp) -> Result<String, CloudError> {
        let margin = Duration::from_secs(60);
        match &self.access {
            Some((token, expiry))
                if expiry
                    .is_none_or(|at| at.saturating_duration_since(Instant::now()) > margin) =>
            {
                Ok(token.clone())
            }
            _ => {
                self.refresh(http).await?;
                self.access
                    .as_ref()
                    .map(|(t, _)| t.clone())
                    .ok_or_else(|| CloudError::Token("no access token".into()))
            }
        }
    }

    /// Gets a new access token with the refresh token.
    ///
    /// # Errors
    ///
    /// [`CloudError::Token`] when the token endpoint refuses (log in
    /// again), [`CloudError::InsecureUrl`].
    pub async fn refresh(&mut self, http: &CloudHttp) -> Result<(), CloudError> {
        let client = self.config.client(http, None)?;
        let adapter = |request| http.send(request);
        let response = client
            .exchange_refresh_token(&oauth2::RefreshToken::new(self.refresh.0.clone()))
            .request_async(&adapter)
            .await
            .map_err(token_error)?;
        self.access = Some((
            response.access_token().secret().clone(),
            response.expires_in().map(|d| Instant::now() + d),
        ));
        if let Some(rotated) = response.refresh_token() {
            self.refresh = RefreshToken::new(rotated.secret().clone());
        }
        Ok(())
    }
}

/// A login in progress: a loopback listener and the authorization URL
/// (PKCE S256, random state) to open in a browser.
#[derive(Debug)]
pub struct LoginFlow {
    config: OAuthConfig,
    listener: tokio::net::TcpListener,
    redirect_uri: String,
    url: Url,
    state: CsrfToken,
    verifier: PkceCodeVerifier,
}

impl LoginFlow {
    /// Binds the loopback listener on 127.0.0.1 (a free port) and builds
    /// the authorization URL.
    ///
    /// # Errors
    ///
    /// [`CloudError::Listener`], [`CloudError::BadUrl`],
    /// [`CloudError::InsecureUrl`].
    pub async fn start(config: OAuthConfig, http: &CloudHttp) -> Result<Self, CloudError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(CloudError::Listener)?;
        let port = listener.local_addr().map_err(CloudError::Listener)?.port();
        let redirect_uri = format!("http://127.0.0.1:{port}/");
        let client = config.client(http, Some(&redirect_uri))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(config.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Self {
            config,
            listener,
            redirect_uri,
            url,
            state,
            verifier,
        })
    }

    /// The URL to open in a browser.
    #[must_use]
    pub fn authorize_url(&self) -> &str {
        self.url.as_str()
    }

    /// The loopback redirect URI (`http://127.0.0.1:PORT/`).
    #[must_use]
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits up to `limit` for the browser's redirect, checks its state and
    /// exchanges the code (with the PKCE verifier) for tokens.
    ///
    /// # Errors
    ///
    /// [`CloudError::LoginTimedOut`], [`CloudError::StateMismatch`],
    /// [`CloudError::Denied`], [`CloudError::Token`].
    pub async fn finish(
        self,
        http: &CloudHttp,
        limit: Duration,
    ) -> Result<OAuthSession, CloudError> {
        let code = tokio::time::timeout(limit, self.wait_for_code())
            .await
            .map_err(|_| CloudError::LoginTimedOut(limit))??;
        let client = self.config.client(http, Some(&self.redirect_uri))?;
        let adapter = |request| http.send(request);
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(self.verifier)
            .request_async(&adapter)
            .await
            .map_err(token_error)?;
        let refresh = response
            .refresh_token()
            .map(|t| RefreshToken::new(t.secret().clone()))
            .ok_or_else(|| CloudError::Token("the token endpoint gave no refresh token".into()))?;
        Ok(OAuthSession {
            config: self.config,
            refresh,
            access: Some((
                response.access_token().secret().clone(),
                response.expires_in().map(|d| Instant::now() + d),
            )),
        })
    }

    async fn wait_for_code(&self) -> Result<String, CloudError> {
        // Connections are read side by side: an idle one (a browser's
        // pre-connect) must not hold up the redirect behind it. Browsers
        // may ask for other paths first (favicon); bounded.
        let mut reading = tokio::task::JoinSet::new();
        let mut accepted = 0;
        loop {
            tokio::select! {
                conn = self.listener.accept(), if accepted < MAX_LOOPBACK_CONNECTIONS => {
                    let (stream, _) = conn.map_err(CloudError::Listener)?;
                    accepted += 1;
                    reading.spawn(read_request_target(stream));
                }
                Some(read) = reading.join_next() => {
                    // A connection that sent no request in time is dropped.
                    let Ok(Some((stream, target))) = read else {
                        continue;
                    };
                    if let Some(outcome) = self.answer(stream, &target).await {
                        return outcome;
                    }
                }
                else => {
                    return Err(CloudError::Denied(
                        "no authorization redirect among the requests".into(),
                    ));
                }
            }
        }
    }

    /// Answers one request for `target`: the outcome when it is the
    /// authorization redirect, `None` (after a 404) for anything else.
    async fn answer(
        &self,
        mut stream: tokio::net::TcpStream,
        target: &str,
    ) -> Option<Result<String, CloudError>> {
        let url = Url::parse(&format!("http://127.0.0.1{target}")).ok()?;
        let params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if url.path() != "/" || (get("code").is_none() && get("error").is_none()) {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return None;
        }
        let outcome = if get("state").as_deref() != Some(self.state.secret().as_str()) {
            Err(CloudError::StateMismatch)
        } else if let Some(error) = get("error") {
            Err(CloudError::Denied(error))
        } else {
            get("code").ok_or_else(|| CloudError::Denied("no code".into()))
        };
        let page = if outcome.is_ok() {
            "Signed in. You can close this window."
        } else {
            "Sign-in failed. You can close this window."
        };
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        Some(outcome)
    }
}

/// Connections the loopback listener takes during one login.
const MAX_LOOPBACK_CONNECTIONS: usize = 16;

/// Reads one request head from `stream` (at most 8 KiB, within 10 s) and
/// returns the stream and the request target of a GET; `None` when the
/// peer sent nothing usable in time.
async fn read_request_target(
    mut stream: tokio::net::TcpStream,
) -> Option<(tokio::net::TcpStream, String)> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf[len..]))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let target = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("GET "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    Some((stream, target))
}

/// A login kept on disk: the client, the endpoints used and the refresh
/// token. A file with mode 0600 in the profile (a desktop keyring is not
/// available on headless machines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogin {
    /// The account's name for the source (`google:<account>`).
    pub account: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The client secret of installed-app clients that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The authorization endpoint.
    pub auth_url: String,
    /// The token endpoint.
    pub token_url: String,
    /// The API server, when not the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The refresh token.
    pub refresh_token: RefreshToken,
}

impl StoredLogin {
    /// The login of a session.
    #[must_use]
    pub fn new(account: &str, session: &OAuthSession) -> Self {
        Self {
            account: account.to_owned(),
            client_id: session.config.client_id.clone(),
            client_secret: session.config.client_secret.clone(),
            auth_url: session.config.auth_url.clone(),
            token_url: session.config.token_url.clone(),
            api_url: None,
            refresh_token: session.refresh.clone(),
        }
    }

    /// A session from this login, with `base`'s scopes
    /// ([`OAuthConfig::google`] or [`OAuthConfig::microsoft`]).
    #[must_use]
    pub fn session(&self, base: OAuthConfig) -> OAuthSession {
        let mut config = base.with_endpoints(&self.auth_url, &self.token_url);
        config.client_id.clone_from(&self.client_id);
        config.client_secret.clone_from(&self.client_secret);
        OAuthSession::new(config, self.refresh_token.clone())
    }

    /// Writes the file with mode 0600 (replacing it atomically).
    ///
    /// # Errors
    ///
    /// [`CloudError::TokenFile`].
    pub fn save(&self, path: &Path) -> Result<(), CloudError> {
        let err = |source| CloudError::TokenFile {
            path: path.to_path_buf(),
            source,
        };
        let body = serde_json::to_string_pretty(self)
            .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        // A temporary file of our own beside it: created afresh (never one
        // left over, a link planted there, or another login's), readable
        // by its owner only, then renamed over the file.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut attempt = 0u32;
        let (tmp, mut file) = loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let tmp = dir.join(format!(
                ".{name}.{}.{nanos:08x}{attempt}.tmp",
                std::process::id()
            ));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&tmp) {
                Ok(file) => break (tmp, file),
                // Bounded: a name taken eight times in a row is no accident.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 8 => {
                    attempt += 1;
                }
                Err(e) => return Err(err(e)),
            }
        };
        let written = io::Write::write_all(&mut file, body.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| {
                drop(file);
                std::fs::rename(&tmp, path)
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        Ok(())
    }

    /// Reads a file written by [`StoredLogin::save`]; `None` when there is
    /// none.
    ///
    /// # Errors
    ///
    /// [`CloudError::TokenFile`].
    pub fn load(path: &Path) -> Result<Option<Self>, CloudError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CloudError::TokenFile {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CloudError::TokenFile {
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })
    }
}

/// What one read of a cloud source gave.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Whether this is the whole address book (a full sync) rather than
    /// the changes since the token.
    pub full: bool,
    /// Contacts added or changed (all contacts for a full sync).
    pub changed: Vec<Contact>,
    /// Source ids deleted at the source.
    pub deleted: Vec<String>,
    /// The token for the next incremental sync.
    pub token: Option<String>,
    /// Entries with nothing to show (no name, organisation, e-mail or
    /// number), left out.
    pub skipped: usize,
    /// Pages read.
    pub pages: usize,
    /// Photos to download: (source id, URL). Fetched without the access
    /// token (Google serves them from another host).
    pub photos: Vec<(String, String)>,
}

/// One item a cloud read gave: its source id, and its contact with the URL
/// of its photo, or `None` when it was deleted.
pub(crate) type Entry = (String, Option<(Contact, Option<String>)>);

impl Changes {
    /// Sets `changed`, `deleted` and `photos` from the entries read, in the
    /// order the server sent them (a source id and its contact with the URL
    /// of its photo, if any, or `None` when it was deleted). The same id
    /// may come more than once (Microsoft Graph says so of delta queries):
    /// its last entry is the current one, so an item deleted and then added
    /// again stays, and the later of two copies is stored, with its own
    /// photo or none.
    pub(crate) fn settle(&mut self, entries: Vec<Entry>) {
        let last: std::collections::HashMap<String, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i))
            .collect();
        for (i, (id, entry)) in entries.into_iter().enumerate() {
            if last.get(&id) != Some(&i) {
                continue;
            }
            match entry {
                Some((contact, photo)) => {
                    if let Some(url) = photo {
                        self.photos.push((id, url));
                    }
                    self.changed.push(contact);
                }
                None => self.deleted.push(id),
            }
        }
    }
}

/// Checks that a link from the server stays on the API's origin.
pub(crate) fn same_origin(base: &Url, link: &str) -> Result<Url, CloudError> {
    // The link carries the sync or page token: errors show it without.
    let url = Url::parse(link).map_err(|e| CloudError::BadUrl {
        url: shown_url(link),
        message: e.to_string(),
    })?;
    if url.origin() == base.origin() {
        Ok(url)
    } else {
        Err(CloudError::ForeignLink(shown_url(link)))
    }
}

/// A contact is kept only when it has something to show.
pub(crate) fn finish_contact(mut contact: Contact) -> Option<Contact> {
    let name = contact.derived_display_name()?;
    contact.display_name = name;
    Some(contact)
}

/// Whether `url` parses and its host (as a URL parser reads it, so not a
/// user-info part) is `localhost` or a loopback address.
#[must_use]
pub fn is_loopback_url(url: &str) -> bool {
    Url::parse(url).is_ok_and(|u| loopback_host(&u))
}

/// A URL as errors and logs show it: without credentials, query (sync and
/// page tokens) and fragment.
pub(crate) fn shown_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            let query = parsed.query().is_some();
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            let mut text = String::from(parsed);
            if query {
                text.push_str("?…");
            }
            text
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

fn loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(oauth2::url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(oauth2::url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(oauth2::url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_login_is_saved_through_a_file_of_its_own() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth-google.json");
        let session = OAuthSession::new(
            OAuthConfig::google("client-1"),
            RefreshToken::new("refresh-planted"),
        );
        let login = StoredLogin::new("me", &session);
        // Left by someone else where the old code wrote its temporary
        // file: a link to a file they can read.
        let stolen = dir.path().join("stolen");
        std::os::unix::fs::symlink(&stolen, dir.path().join("oauth-google.tmp")).unwrap();
        login.save(&path).unwrap();
        assert!(!stolen.exists(), "the token went through the planted link");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(StoredLogin::load(&path).unwrap(), Some(login.clone()));
        // Saved again over itself, and no temporary file is left behind.
        login.save(&path).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["oauth-google.json", "oauth-google.tmp"]);
    }

    #[test]
    fn urls_in_errors_carry_no_token() {
        assert_eq!(
            shown_url(
                "https://people.example/v1/people/me/connections?syncToken=SECRET&pageToken=P"
            ),
            "https://people.example/v1/people/me/connections?…"
        );
        assert_eq!(
            shown_url("https://u:pw@graph.example/v1.0/me/contacts/delta?$deltatoken=D#x"),
            "https://graph.example/v1.0/me/contacts/delta?…"
        );
        assert_eq!(shown_url("not a url"), "(not a URL)");
        let http = CloudHttp::new().unwrap();
        let err = http
            .check_url("ftp://h.example/p?token=SECRET")
            .unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
        // A next or delta link the server sends, refused, shows no token.
        let base = Url::parse("https://graph.example/v1.0/me/contacts").unwrap();
        for link in [
            "https://evil.example/v1.0/me/contacts/delta?$deltatoken=SECRET",
            "https://graph.example:99999/delta?$skiptoken=SECRET",
        ] {
            let err = same_origin(&base, link).unwrap_err();
            assert!(!err.to_string().contains("SECRET"), "{err}");
        }
    }

    /// Delta queries may name an item more than once: its last entry
    /// counts, whether a deletion after a change, a change after a
    /// deletion, or the later of two copies.
    #[test]
    fn the_last_entry_for_an_item_counts() {
        let named = |id: &str, name: &str| {
            let mut c = Contact::new(name);
            c.source_id = Some(id.into());
            Some((c, Some(format!("https://photos.example/{name}"))))
        };
        let mut changes = Changes::default();
        changes.settle(vec![
            ("a".into(), named("a", "Ada")),
            ("b".into(), named("b", "Bob old")),
            ("a".into(), None),
            ("b".into(), named("b", "Bob new")),
            ("c".into(), None),
            ("c".into(), named("c", "Cyd")),
        ]);
        let names: Vec<&str> = changes
            .changed
            .iter()
            .map(|c| c.display_name.as_str())
            .collect();
        assert_eq!(names, ["Bob new", "Cyd"]);
        assert_eq!(changes.deleted, ["a"]);
        let photos: Vec<&str> = changes.photos.iter().map(|(_, url)| url.as_str()).collect();
        assert_eq!(
            photos,
            [
                "https://photos.example/Bob new",
                "https://photos.example/Cyd"
            ]
        );
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let mut session = OAuthSession::new(
            OAuthConfig::google("client-1").with_client_secret("client-secret-planted"),
            RefreshToken::new("refresh-planted"),
        );
        session.access = Some(("access-planted".into(), None));
        let shown = format!("{session:?}");
        assert!(shown.contains("client-1"), "{shown}");
        for secret in ["client-secret-planted", "refresh-planted", "access-planted"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn plain_http_goes_only_to_this_machine() {
        let http = CloudHttp::new().unwrap().dangerous_allow_plain_http();
        assert!(http.check_url("http://127.0.0.1:8080/token").is_ok());
        assert!(http.check_url("http://[::1]:8080/token").is_ok());
        assert!(http.check_url("http://localhost:8080/token").is_ok());
        // A user-info part that looks like loopback does not make the host so.
        assert!(matches!(
            http.check_url("http://127.0.0.1:x@evil.example/token"),
            Err(CloudError::InsecureUrl(_))
        ));
        assert!(!is_loopback_url("http://127.0.0.1:x@evil.example/token"));
        assert!(is_loopback_url("http://127.0.0.1:9/"));
        let strict = CloudHttp::new().unwrap();
        assert!(matches!(
            strict.check_url("http://127.0.0.1:8080/token"),
            Err(CloudError::InsecureUrl(_))
        ));
    }
}
