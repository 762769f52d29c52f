//! An HTTPS (or plain HTTP) server on 127.0.0.1 serving configured
//! resources, for provisioning tests.
//!
//! It speaks just enough HTTP/1.1 for a client under test: one request per
//! connection (`Connection: close`), GET, HEAD and POST, Basic and Digest
//! authentication (RFC 7617, RFC 7616 with MD5 and SHA-256, `qop=auth`),
//! redirects, `ETag` / `Last-Modified` with `304 Not Modified`, and the broken
//! answers a client must survive: a body shorter than its `Content-Length`,
//! and bodies of any size, with or without a declared length. Every request
//! is logged, with its body, so a test can check what the client sent.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use rustls::{
    ServerConfig, ServerConnection, StreamOwned,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use sha2::Sha256;

use crate::{
    ca::IssuedCert,
    error::{PeerError, Result},
    kamailio::DigestAlgorithm,
    net::{LOCALHOST, random},
};

/// How long a server runs unless told otherwise: it stops by itself after
/// this, even if the test that started it hangs.
pub const DEFAULT_HTTP_LIFETIME: Duration = Duration::from_secs(120);

/// The realm of every authentication challenge.
pub const HTTP_REALM: &str = "testkit";

/// Read and write timeout of one connection.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body kept; the rest is not read.
const MAX_BODY: u64 = 1 << 20;

/// What the server answers on one path.
///
/// ```
/// use testkit::{DigestAlgorithm, Resource};
///
/// let document = Resource::document("<softphone-config version=\"1\"/>")
///     .with_etag("\"v1\"")
///     .with_digest_auth("alice", "secret", &[DigestAlgorithm::Sha256, DigestAlgorithm::Md5]);
/// # let _ = document;
/// ```
#[derive(Debug, Clone)]
pub struct Resource {
    body: Body,
    content_type: String,
    etag: Option<String>,
    last_modified: Option<String>,
    auth: Option<Auth>,
    chunked: bool,
}

#[derive(Debug, Clone)]
enum Body {
    /// A complete body.
    Bytes(Vec<u8>),
    /// `Content-Length: declared`, then only `body`, then the connection closes.
    Truncated { body: Vec<u8>, declared: usize },
    /// `len` filler bytes, generated while sending.
    Filler(usize),
    /// A redirect.
    Redirect { status: u16, location: String },
    /// A bare status.
    Status(u16),
}

#[derive(Debug, Clone)]
enum Auth {
    Basic {
        user: String,
        password: String,
    },
    Digest {
        user: String,
        password: String,
        algorithms: Vec<DigestAlgorithm>,
    },
}

impl Resource {
    /// A complete `application/xml` document.
    pub fn document(text: impl Into<String>) -> Self {
        Self::bytes(text.into().into_bytes())
    }

    /// A complete body of any bytes.
    #[must_use]
    pub fn bytes(body: Vec<u8>) -> Self {
        Self::new(Body::Bytes(body))
    }

    /// `text` announced with its full `Content-Length`, of which only the
    /// first `sent` bytes are written before the connection is closed.
    pub fn truncated(text: impl Into<String>, sent: usize) -> Self {
        let mut body = text.into().into_bytes();
        let declared = body.len();
        body.truncate(sent);
        Self::new(Body::Truncated { body, declared })
    }

    /// `len` bytes of filler (`x`), with a `Content-Length` unless
    /// [`Resource::chunked`] is asked for.
    #[must_use]
    pub fn filler(len: usize) -> Self {
        Self::new(Body::Filler(len))
    }

    /// A redirect (`301`, `302`, `303`, `307` or `308`) to `location`,
    /// which is sent verbatim (absolute or relative).
    pub fn redirect(status: u16, location: impl Into<String>) -> Self {
        Self::new(Body::Redirect {
            status,
            location: location.into(),
        })
    }

    /// A bare status code with an empty body.
    #[must_use]
    pub fn status(status: u16) -> Self {
        Self::new(Body::Status(status))
    }

    fn new(body: Body) -> Self {
        Self {
            body,
            content_type: "application/xml".to_owned(),
            etag: None,
            last_modified: None,
            auth: None,
            chunked: false,
        }
    }

    /// Sends an `ETag` and answers a matching `If-None-Match` with 304.
    #[must_use]
    pub fn with_etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = Some(etag.into());
        self
    }

    /// Sends `Last-Modified` and answers an `If-Modified-Since` holding the
    /// same text (and no `If-None-Match`) with 304.
    #[must_use]
    pub fn with_last_modified(mut self, date: impl Into<String>) -> Self {
        self.last_modified = Some(date.into());
        self
    }

    /// Requires HTTP Basic authentication.
    #[must_use]
    pub fn with_basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some(Auth::Basic {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// Requires HTTP Digest authentication (`qop=auth`), with one challenge
    /// per algorithm, in the given order.
    #[must_use]
    pub fn with_digest_auth(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
        algorithms: &[DigestAlgorithm],
    ) -> Self {
        self.auth = Some(Auth::Digest {
            user: user.into(),
            password: password.into(),
            algorithms: algorithms.to_vec(),
        });
        self
    }

    /// Sends the body with `Transfer-Encoding: chunked`, without a
    /// `Content-Length`.
    #[must_use]
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// Sets the `Content-Type` (default `application/xml`).
    #[must_use]
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }
}

/// One request the server received and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Header fields in the order received.
    pub headers: Vec<(String, String)>,
    /// The status answered.
    pub status: u16,
    /// The request body (up to 1 MiB), such as a POSTed document.
    pub body: Vec<u8>,
}

impl LoggedRequest {
    /// The first header field named `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path, without the query.
    #[must_use]
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// Builds an [`HttpServer`].
#[derive(Debug)]
pub struct HttpServerBuilder {
    cert: Option<IssuedCert>,
    lifetime: Duration,
    resources: HashMap<String, Resource>,
}

impl HttpServerBuilder {
    /// Stops the server by itself after `lifetime` (default
    /// [`DEFAULT_HTTP_LIFETIME`]).
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Serves `resource` on `path` (such as `/alice.xml`; the query is not
    /// part of the match).
    #[must_use]
    pub fn serve(mut self, path: impl Into<String>, resource: Resource) -> Self {
        self.resources.insert(path.into(), resource);
        self
    }

    /// Binds a free port on 127.0.0.1 and starts serving; returns once the
    /// port accepts connections.
    ///
    /// # Errors
    ///
    /// [`PeerError::Io`] when binding fails, [`PeerError::InvalidArgument`]
    /// when the certificate or key cannot be used.
    pub fn start(self) -> Result<HttpServer> {
        let tls = match &self.cert {
            Some(cert) => Some(server_config(cert)?),
            None => None,
        };
        let listener = TcpListener::bind(SocketAddrV4::new(LOCALHOST, 0))
            .map_err(|e| PeerError::io("bind the HTTP server on 127.0.0.1", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| PeerError::io("read the HTTP server's address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| PeerError::io("make the HTTP listener non-blocking", e))?;
        let shared = Arc::new(Shared {
            resources: Mutex::new(self.resources),
            log: Mutex::new(Vec::new()),
            nonces: Mutex::new(HashSet::new()),
            stop: AtomicBool::new(false),
        });
        let deadline = Instant::now() + self.lifetime;
        let accept = {
            let shared = Arc::clone(&shared);
            let tls = tls.clone();
            thread::Builder::new()
                .name("testkit-http".to_owned())
                .spawn(move || accept_loop(&listener, &shared, tls.as_ref(), deadline))
                .map_err(|e| PeerError::io("spawn the HTTP server thread", e))?
        };
        Ok(HttpServer {
            addr,
            tls: tls.is_some(),
            shared,
            accept: Some(accept),
        })
    }
}

/// An HTTP/1.1 server on 127.0.0.1, over TLS with a [`TestCa`](crate::TestCa)
/// certificate or in plain text. It stops when dropped, or by itself at the
/// end of its lifetime.
///
/// ```no_run
/// use testkit::{HttpServer, Resource, TestCa};
///
/// # fn main() -> Result<(), testkit::PeerError> {
/// let ca = TestCa::new()?;
/// let server = HttpServer::https(ca.server())
///     .serve("/alice.xml", Resource::document("<softphone-config version=\"1\"/>").with_etag("\"1\""))
///     .start()?;
/// let url = server.url("/alice.xml"); // https://127.0.0.1:PORT/alice.xml
/// // ... fetch it, trusting ca.ca_cert_path() ...
/// assert_eq!(server.requests_for("/alice.xml").len(), 1);
/// # let _ = url;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    resources: Mutex<HashMap<String, Resource>>,
    log: Mutex<Vec<LoggedRequest>>,
    nonces: Mutex<HashSet<String>>,
    stop: AtomicBool,
}

impl HttpServer {
    /// An HTTPS server presenting `cert` (such as [`TestCa::server`](crate::TestCa::server)).
    #[must_use]
    pub fn https(cert: &IssuedCert) -> HttpServerBuilder {
        HttpServerBuilder {
            cert: Some(cert.clone()),
            lifetime: DEFAULT_HTTP_LIFETIME,
            resources: HashMap::new(),
        }
    }

    /// A plain-text HTTP server.
    #[must_use]
    pub fn plain() -> HttpServerBuilder {
        HttpServerBuilder {
            cert: None,
            lifetime: DEFAULT_HTTP_LIFETIME,
            resources: HashMap::new(),
        }
    }

    /// The address the server listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT{path}` (or `http://` for a plain server).
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme(), self.addr)
    }

    /// The same server named `localhost`: another origin than
    /// [`HttpServer::url`], for cross-origin redirects.
    #[must_use]
    pub fn localhost_url(&self, path: &str) -> String {
        format!("{}://localhost:{}{path}", self.scheme(), self.addr.port())
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Serves `resource` on `path` from now on, replacing what was there.
    pub fn serve(&self, path: impl Into<String>, resource: Resource) {
        lock(&self.shared.resources).insert(path.into(), resource);
    }

    /// Every request received so far, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.shared.log).clone()
    }

    /// The requests whose path (without query) is `path`.
    #[must_use]
    pub fn requests_for(&self, path: &str) -> Vec<LoggedRequest> {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.path() == path)
            .cloned()
            .collect()
    }

    /// Forgets the requests logged so far.
    pub fn clear_log(&self) {
        lock(&self.shared.log).clear();
    }

    /// Stops accepting connections and waits for the accept thread.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn server_config(cert: &IssuedCert) -> Result<Arc<ServerConfig>> {
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| PeerError::InvalidArgument(format!("server key: {e}")))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.cert_der.clone())], key)
        .map_err(|e| PeerError::InvalidArgument(format!("server certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tls: Option<&Arc<ServerConfig>>,
    deadline: Instant,
) {
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = Arc::clone(shared);
                let tls = tls.cloned();
                // A connection ends by its I/O timeouts at the latest.
                let _ = thread::Builder::new()
                    .name("testkit-http-conn".to_owned())
                    .spawn(move || {
                        let _ = serve_connection(stream, &shared, tls);
                    });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve_connection(
    stream: TcpStream,
    shared: &Shared,
    tls: Option<Arc<ServerConfig>>,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    match tls {
        Some(config) => {
            let connection = ServerConnection::new(config).map_err(io::Error::other)?;
            let mut tls = StreamOwned::new(connection, stream);
            let result = exchange(&mut tls, shared);
            tls.conn.send_close_notify();
            let _ = tls.flush();
            let _ = tls.sock.shutdown(Shutdown::Both);
            result
        }
        None => {
            let mut plain = stream;
            let result = exchange(&mut plain, shared);
            let _ = plain.flush();
            let _ = plain.shutdown(Shutdown::Both);
            result
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request and writes its answer.
fn exchange(stream: &mut (impl Read + Write), shared: &Shared) -> io::Result<()> {
    let request = {
        let mut reader = BufReader::new(&mut *stream);
        read_request(&mut reader)?
    };
    let path = request.target.split('?').next().unwrap_or_default();
    let resource = lock(&shared.resources).get(path).cloned();
    let answer = match resource {
        None => Answer::status(404),
        Some(resource) => answer(&request, &resource, shared),
    };
    lock(&shared.log).push(LoggedRequest {
        method: request.method.clone(),
        target: request.target.clone(),
        headers: request.headers.clone(),
        status: answer.status,
        body: request.body.clone(),
    });
    answer.write(stream, request.method == "HEAD")
}

fn read_request(reader: &mut impl BufRead) -> io::Result<Request> {
    let mut head = Vec::new();
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader.take(MAX_HEAD as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("request head too large"));
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let mut lines = lines.into_iter();
    let start = lines.next().unwrap_or_default();
    let mut parts = start.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    reader.take(length.min(MAX_BODY)).read_to_end(&mut body)?;
    Ok(Request {
        method,
        target,
        headers,
        body,
    })
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
    chunked: bool,
}

impl Answer {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
            chunked: false,
        }
    }

    fn write(self, stream: &mut impl Write, head_only: bool) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let (declared, body): (usize, &[u8]) = match &self.body {
            Body::Bytes(b) => (b.len(), b),
            Body::Truncated { body, declared } => (*declared, body),
            Body::Filler(len) => (*len, &[]),
            Body::Redirect { .. } | Body::Status(_) => (0, &[]),
        };
        if self.chunked {
            head.push_str("Transfer-Encoding: chunked\r\n");
        } else if self.status != 304 {
            let _ = write!(head, "Content-Length: {declared}\r\n");
        }
        head.push_str("Connection: close\r\n\r\n");
        stream.write_all(head.as_bytes())?;
        if head_only || self.status == 304 {
            return stream.flush();
        }
        let mut send = |chunk: &[u8]| -> io::Result<()> {
            if chunk.is_empty() {
                return Ok(());
            }
            if self.chunked {
                stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                stream.write_all(chunk)?;
                stream.write_all(b"\r\n")
            } else {
                stream.write_all(chunk)
            }
        };
        if let Body::Filler(len) = &self.body {
            let block = [b'x'; 16 * 1024];
            let mut left = *len;
            while left > 0 {
                let n = left.min(block.len());
                send(&block[..n])?;
                left -= n;
            }
        } else {
            send(body)?;
        }
        if self.chunked && !matches!(self.body, Body::Truncated { .. }) {
            stream.write_all(b"0\r\n\r\n")?;
        }
        stream.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn answer(request: &Request, resource: &Resource, shared: &Shared) -> Answer {
    if let Some(auth) = &resource.auth
        && !authorized(request, auth, shared)
    {
        let mut answer = Answer::status(401);
        answer.headers = challenges(auth, shared)
            .into_iter()
            .map(|c| ("WWW-Authenticate".to_owned(), c))
            .collect();
        return answer;
    }
    let mut validators = Vec::new();
    if let Some(etag) = &resource.etag {
        validators.push(("ETag".to_owned(), etag.clone()));
    }
    if let Some(date) = &resource.last_modified {
        validators.push(("Last-Modified".to_owned(), date.clone()));
    }
    if not_modified(request, resource) {
        let mut answer = Answer::status(304);
        answer.headers = validators;
        return answer;
    }
    match &resource.body {
        Body::Redirect { status, location } => {
            let mut answer = Answer::status(*status);
            answer
                .headers
                .push(("Location".to_owned(), location.clone()));
            answer
        }
        Body::Status(status) => Answer::status(*status),
        body => {
            let mut headers = vec![("Content-Type".to_owned(), resource.content_type.clone())];
            headers.extend(validators);
            Answer {
                status: 200,
                headers,
                body: body.clone(),
                chunked: resource.chunked,
            }
        }
    }
}

fn not_modified(request: &Request, resource: &Resource) -> bool {
    if let Some(tags) = request.header("If-None-Match") {
        return resource.etag.as_deref().is_some_and(|etag| {
            tags.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
        });
    }
    match (request.header("If-Modified-Since"), &resource.last_modified) {
        (Some(since), Some(date)) => since == date,
        _ => false,
    }
}

fn challenges(auth: &Auth, shared: &Shared) -> Vec<String> {
    match auth {
        Auth::Basic { .. } => vec![format!("Basic realm=\"{HTTP_REALM}\", charset=\"UTF-8\"")],
        Auth::Digest { algorithms, .. } => algorithms
            .iter()
            .map(|algorithm| {
                let nonce = format!("{:016x}{:016x}", random(), random());
                lock(&shared.nonces).insert(nonce.clone());
                format!(
                    "Digest realm=\"{HTTP_REALM}\", qop=\"auth\", algorithm={}, nonce=\"{nonce}\", opaque=\"{:016x}\"",
                    algorithm.as_str(),
                    random()
                )
            })
            .collect(),
    }
}

fn authorized(request: &Request, auth: &Auth, shared: &Shared) -> bool {
    let Some(header) = request.header("Authorization") else {
        return false;
    };
    match auth {
        Auth::Basic { user, password } => {
            let Some(encoded) = header.strip_prefix("Basic ") else {
                return false;
            };
            let expected =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            encoded.trim() == expected
        }
        Auth::Digest {
            user,
            password,
            algorithms,
        } => {
            let Some(params) = header.strip_prefix("Digest ") else {
                return false;
            };
            let params = parse_params(params);
            let get = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
            let algorithm = match get("algorithm") {
                "" | "MD5" => DigestAlgorithm::Md5,
                "SHA-256" => DigestAlgorithm::Sha256,
                _ => return false,
            };
            let nonce = get("nonce");
            algorithms.contains(&algorithm)
                && get("username") == user
                && get("realm") == HTTP_REALM
                && get("uri") == request.target
                && get("qop") == "auth"
                && !get("nc").is_empty()
                && !get("cnonce").is_empty()
                && lock(&shared.nonces).contains(nonce)
                && get("response")
                    == digest_response(
                        algorithm,
                        user,
                        HTTP_REALM,
                        password,
                        &request.method,
                        &request.target,
                        nonce,
                        get("nc"),
                        get("cnonce"),
                    )
        }
    }
}

/// The RFC 7616 `response` for `qop=auth`.
#[allow(clippy::too_many_arguments, reason = "the digest formula's own inputs")]
fn digest_response(
    algorithm: DigestAlgorithm,
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
) -> String {
    let hash = |text: String| match algorithm {
        DigestAlgorithm::Md5 => hex(&Md5::digest(text.as_bytes())),
        DigestAlgorithm::Sha256 => hex(&Sha256::digest(text.as_bytes())),
    };
    let ha1 = hash(format!("{user}:{realm}:{password}"));
    let ha2 = hash(format!("{method}:{uri}"));
    hash(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `name=value, name="quoted value"` pairs, names lower-cased.
fn parse_params(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let name = name
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.insert(name, value);
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7616_3_9_1_digest_responses() {
        let response = |algorithm| {
            digest_response(
                algorithm,
                "Mufasa",
                "http-auth@example.org",
                "Circle of Life",
                "GET",
                "/dir/index.html",
                "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                "00000001",
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            )
        };
        assert_eq!(
            response(DigestAlgorithm::Md5),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
        assert_eq!(
            response(DigestAlgorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn parameters_with_quotes_and_commas_parse() {
        let params =
            parse_params(r#"username="a\"b", realm="r, s", nc=00000001, qop=auth, uri="/x?y=1""#);
        assert_eq!(params["username"], "a\"b");
        assert_eq!(params["realm"], "r, s");
        assert_eq!(params["nc"], "00000001");
        assert_eq!(params["qop"], "auth");
        assert_eq!(params["uri"], "/x?y=1");
    }
}
