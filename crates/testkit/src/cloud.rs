//! A fake of the documented subset of Google's People API, Microsoft
//! Graph's contacts delta query and an OAuth 2.0 authorization server with
//! PKCE, on plain HTTP on 127.0.0.1.
//!
//! What it checks and answers like the real services:
//! - `GET /authorize` needs `response_type=code`, a known `client_id`, a
//!   loopback `redirect_uri`, `code_challenge_method=S256`, a
//!   `code_challenge` and a `state`; it answers 302 to the redirect URI
//!   with `code` and the same `state` (what the browser would do after the
//!   user consents).
//! - `POST /token` with `grant_type=authorization_code` checks
//!   `BASE64URL(SHA-256(code_verifier)) == code_challenge`, the redirect URI
//!   and that the code is used once; `grant_type=refresh_token` issues a new
//!   access token (and, when rotating, a new refresh token that replaces
//!   the old one). Errors are 400 `{"error": "invalid_grant"}`.
//! - `GET /v1/people/me/connections` needs `personFields`; pages with
//!   `pageToken`/`nextPageToken`; `requestSyncToken=true` gives a
//!   `nextSyncToken` on the last page; `syncToken` lists the changes since,
//!   deleted people as `{"resourceName", "metadata": {"deleted": true}}`.
//!   An expired sync token gives 410 with reason `EXPIRED_SYNC_TOKEN`.
//! - `GET /v1.0/me/contacts/delta` pages with `@odata.nextLink` and ends
//!   with `@odata.deltaLink`; following the delta link lists the changes,
//!   deleted contacts as `{"id", "@removed": {"reason": "deleted"}}`; an
//!   expired delta token gives 410 `syncStateNotFound`.
//! - API calls without a valid bearer token get 401; scheduled faults give
//!   429 with `Retry-After` or a 5xx.
//! - `GET /photo/<0-255>` serves a small JPEG without a token.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::{self, BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{PeerError, Result};

/// The client id the fake authorization server knows.
pub const FAKE_CLIENT_ID: &str = "softphone-test-client";

/// How long the fake serves before it stops on its own.
const LIFETIME: Duration = Duration::from_secs(300);

/// A fault the next API request gets instead of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 Too Many Requests with `Retry-After: <seconds>`.
    RateLimited {
        /// The `Retry-After` value in seconds.
        retry_after: u64,
    },
    /// This status with an error body.
    Status(u16),
}

/// One API request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// Path and query.
    pub target: String,
    /// The status answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Debug, Default)]
struct Book {
    items: BTreeMap<String, Value>,
    /// (sequence number, id) of every change.
    log: Vec<(u64, String)>,
    seq: u64,
    /// Tokens for sequence numbers below this are expired.
    valid_from: u64,
}

impl Book {
    fn put(&mut self, id: &str, item: Value) {
        self.seq += 1;
        self.items.insert(id.to_owned(), item);
        self.log.push((self.seq, id.to_owned()));
    }

    fn delete(&mut self, id: &str) -> bool {
        let had = self.items.remove(id).is_some();
        if had {
            self.seq += 1;
            self.log.push((self.seq, id.to_owned()));
        }
        had
    }

    /// The ids changed after `since`, in change order, each once.
    fn changed_since(&self, since: u64) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (seq, id) in &self.log {
            if *seq > since && !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }
}

#[derive(Debug, Default)]
struct State {
    google: Book,
    graph: Book,
    page_size: usize,
    access_tokens: HashMap<String, bool>,
    refresh_tokens: Vec<String>,
    codes: HashMap<String, (String, String)>,
    faults: VecDeque<Option<Fault>>,
    api_log: Vec<ApiRequest>,
    token_grants: Vec<String>,
    counter: u64,
    rotate: bool,
    /// Photo requests still to fail with 503.
    photo_outages: u32,
}

impl State {
    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        let mut hasher = Sha256::new();
        hasher.update(format!("{prefix}{}{:?}", self.counter, Instant::now()));
        format!(
            "{prefix}-{}",
            URL_SAFE_NO_PAD.encode(&hasher.finalize()[..12])
        )
    }
}

/// The fake server. Stops when dropped.
#[derive(Debug)]
pub struct FakeCloud {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeCloud {
    /// Starts the fake on a free port of 127.0.0.1, with pages of
    /// `page_size` entries.
    ///
    /// # Errors
    ///
    /// [`PeerError::Io`] when the port cannot be bound.
    pub fn start(page_size: usize) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| PeerError::io("binding the fake cloud", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| PeerError::io("fake cloud address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| PeerError::io("fake cloud listener", e))?;
        let state = Arc::new(Mutex::new(State {
            page_size: page_size.max(1),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            thread::spawn(move || accept_loop(&listener, addr, &state, &stop))
        };
        Ok(Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The authorization endpoint.
    #[must_use]
    pub fn auth_url(&self) -> String {
        format!("{}/authorize", self.base_url())
    }

    /// The token endpoint.
    #[must_use]
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }

    /// Adds or changes a Google person (`resourceName` `people/<id>`).
    pub fn put_person(&self, id: &str, person: Value) {
        let name = format!("people/{id}");
        let mut person = person;
        if let Some(map) = person.as_object_mut() {
            map.insert("resourceName".into(), Value::String(name.clone()));
            map.insert("etag".into(), Value::String(format!("%{id}")));
        }
        lock(&self.state).google.put(&name, person);
    }

    /// Deletes a Google person; whether it existed.
    pub fn delete_person(&self, id: &str) -> bool {
        lock(&self.state).google.delete(&format!("people/{id}"))
    }

    /// Adds or changes a Graph contact.
    pub fn put_graph_contact(&self, id: &str, contact: Value) {
        let mut contact = contact;
        if let Some(map) = contact.as_object_mut() {
            map.insert("id".into(), Value::String(id.to_owned()));
        }
        lock(&self.state).graph.put(id, contact);
    }

    /// Deletes a Graph contact; whether it existed.
    pub fn delete_graph_contact(&self, id: &str) -> bool {
        lock(&self.state).graph.delete(id)
    }

    /// Makes every sync token and delta link issued so far expired (410).
    pub fn expire_sync_tokens(&self) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        for book in [&mut state.google, &mut state.graph] {
            book.seq += 1;
            book.valid_from = book.seq;
        }
    }

    /// The next `count` photo requests fail with 503 Service Unavailable,
    /// as a photo host's blip would.
    pub fn fail_photos(&self, count: u32) {
        lock(&self.state).photo_outages += count;
    }

    /// Makes every access token issued so far expired (401).
    pub fn expire_access_tokens(&self) {
        for valid in lock(&self.state).access_tokens.values_mut() {
            *valid = false;
        }
    }

    /// A valid refresh token, as if a login had happened.
    pub fn issue_refresh_token(&self) -> String {
        let mut state = lock(&self.state);
        let token = state.fresh("rt");
        state.refresh_tokens.push(token.clone());
        token
    }

    /// Whether a refresh issues a new refresh token and retires the old one
    /// (as Microsoft's identity platform does).
    pub fn rotate_refresh_tokens(&self, rotate: bool) {
        lock(&self.state).rotate = rotate;
    }

    /// The faults the next API requests get, in order; `None` answers
    /// normally.
    pub fn schedule(&self, faults: impl IntoIterator<Item = Option<Fault>>) {
        lock(&self.state).faults.extend(faults);
    }

    /// The API requests answered so far.
    #[must_use]
    pub fn api_requests(&self) -> Vec<ApiRequest> {
        lock(&self.state).api_log.clone()
    }

    /// The grant types of the token requests answered so far.
    #[must_use]
    pub fn token_grants(&self) -> Vec<String> {
        lock(&self.state).token_grants.clone()
    }
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, addr: SocketAddr, state: &Mutex<State>, stop: &AtomicBool) {
    let deadline = Instant::now() + LIFETIME;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(error) = serve(stream, addr, state) {
                    eprintln!("fake cloud: {error}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                eprintln!("fake cloud accept: {e}");
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

fn serve(stream: TcpStream, addr: SocketAddr, state: &Mutex<State>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let request = read_request(&mut reader)?;
    let answer = route(&request, addr, state);
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} X\r\n", answer.status);
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        answer.body.len()
    ));
    out.write_all(head.as_bytes())?;
    out.write_all(&answer.body)?;
    out.flush()
}

fn read_request(reader: &mut impl BufRead) -> io::Result<Request> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    for _ in 0..100 {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Ok(Request {
        method,
        path: path.to_owned(),
        query: form(query),
        target: target.clone(),
        headers,
        body,
    })
}

fn form(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| char::from(c).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn route(request: &Request, addr: SocketAddr, state: &Mutex<State>) -> Answer {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/authorize") => authorize(request, state),
        ("POST", "/token") => token(request, state),
        ("GET", "/v1/people/me/connections") => api(request, state, people),
        ("GET", path) if path.starts_with("/photo/") => {
            let mut state = lock(state);
            if state.photo_outages > 0 {
                state.photo_outages -= 1;
                Answer::json(503, &json!({"error": "photo host unavailable"}))
            } else {
                photo(path)
            }
        }
        ("GET", "/v1.0/me/contacts/delta") => api(request, state, |r, s| graph(r, s, addr)),
        _ => Answer::json(
            404,
            &json!({"error": {"code": 404, "message": "not found"}}),
        ),
    }
}

fn oauth_error(error: &str, description: &str) -> Answer {
    Answer::json(
        400,
        &json!({"error": error, "error_description": description}),
    )
}

fn authorize(request: &Request, state: &Mutex<State>) -> Answer {
    let q = &request.query;
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    if get("response_type") != "code" {
        return oauth_error("unsupported_response_type", "response_type must be code");
    }
    if get("client_id") != FAKE_CLIENT_ID {
        return oauth_error("invalid_client", "unknown client_id");
    }
    let redirect = get("redirect_uri");
    if !(redirect.starts_with("http://127.0.0.1:") || redirect.starts_with("http://[::1]:")) {
        return oauth_error("invalid_request", "redirect_uri must be a loopback address");
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").len() < 43 {
        return oauth_error("invalid_request", "PKCE S256 code_challenge required");
    }
    if get("state").is_empty() {
        return oauth_error("invalid_request", "state required");
    }
    let mut s = lock(state);
    let code = s.fresh("code");
    s.codes.insert(
        code.clone(),
        (get("code_challenge").to_owned(), redirect.to_owned()),
    );
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let location = format!(
        "{redirect}{sep}code={}&state={}",
        encode(&code),
        encode(get("state"))
    );
    Answer {
        status: 302,
        headers: vec![("Location".into(), location)],
        body: Vec::new(),
    }
}

fn client_of(request: &Request, params: &HashMap<String, String>) -> Option<String> {
    if let Some(id) = params.get("client_id") {
        return Some(id.clone());
    }
    let basic = request
        .headers
        .get("authorization")?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(decode(text.split(':').next()?))
}

fn token(request: &Request, state: &Mutex<State>) -> Answer {
    let params = form(&String::from_utf8_lossy(&request.body));
    if client_of(request, &params).as_deref() != Some(FAKE_CLIENT_ID) {
        return Answer::json(401, &json!({"error": "invalid_client"}));
    }
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    let mut s = lock(state);
    s.token_grants.push(get("grant_type").to_owned());
    let refresh = match get("grant_type") {
        "authorization_code" => {
            let Some((challenge, redirect)) = s.codes.remove(get("code")) else {
                return oauth_error("invalid_grant", "unknown or used code");
            };
            if redirect != get("redirect_uri") {
                return oauth_error("invalid_grant", "redirect_uri mismatch");
            }
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(get("code_verifier").as_bytes()));
            if computed != challenge {
                return oauth_error("invalid_grant", "PKCE verification failed");
            }
            let rt = s.fresh("rt");
            s.refresh_tokens.push(rt.clone());
            Some(rt)
        }
        "refresh_token" => {
            let Some(at) = s
                .refresh_tokens
                .iter()
                .position(|t| t == get("refresh_token"))
            else {
                return oauth_error("invalid_grant", "unknown refresh token");
            };
            if s.rotate {
                s.refresh_tokens.remove(at);
                let rt = s.fresh("rt");
                s.refresh_tokens.push(rt.clone());
                Some(rt)
            } else {
                None
            }
        }
        _ => return oauth_error("unsupported_grant_type", "unsupported grant_type"),
    };
    let access = s.fresh("at");
    s.access_tokens.insert(access.clone(), true);
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 3599,
        "scope": "contacts",
    });
    if let Some(rt) = refresh {
        body["refresh_token"] = Value::String(rt);
    }
    Answer::json(200, &body)
}

fn api(
    request: &Request,
    state: &Mutex<State>,
    handler: impl FnOnce(&Request, &mut State) -> Answer,
) -> Answer {
    let mut s = lock(state);
    let bearer = request
        .headers
        .get("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_owned);
    let answer = if bearer.is_none_or(|t| s.access_tokens.get(&t) != Some(&true)) {
        Answer {
            status: 401,
            headers: vec![(
                "WWW-Authenticate".into(),
                "Bearer error=\"invalid_token\"".into(),
            )],
            body: json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}})
                .to_string()
                .into_bytes(),
        }
    } else {
        match s.faults.pop_front().flatten() {
            Some(Fault::RateLimited { retry_after }) => Answer {
                status: 429,
                headers: vec![("Retry-After".into(), retry_after.to_string())],
                body: json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}})
                    .to_string()
                    .into_bytes(),
            },
            Some(Fault::Status(status)) => Answer::json(
                status,
                &json!({"error": {"code": status, "message": "fault"}}),
            ),
            None => handler(request, &mut s),
        }
    };
    s.api_log.push(ApiRequest {
        target: request.target.clone(),
        status: answer.status,
        at: Instant::now(),
    });
    answer
}

fn offset_of(token: Option<&String>) -> Option<usize> {
    match token {
        None => Some(0),
        Some(t) => t.strip_prefix("page-")?.parse().ok(),
    }
}

fn people(request: &Request, s: &mut State) -> Answer {
    let q = &request.query;
    if q.get("personFields").is_none_or(String::is_empty) {
        return Answer::json(
            400,
            &json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                "message": "personFields mask is required"}}),
        );
    }
    let Some(offset) = offset_of(q.get("pageToken")) else {
        return Answer::json(
            400,
            &json!({"error": {"code": 400, "message": "bad pageToken"}}),
        );
    };
    let page_size = q
        .get("pageSize")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(100)
        .min(s.page_size);
    let book = &s.google;
    let entries: Vec<Value> = match q.get("syncToken") {
        Some(token) => {
            let since = token
                .strip_prefix("sync-")
                .and_then(|n| n.parse::<u64>().ok());
            match since {
                Some(since) if since >= book.valid_from => book
                    .changed_since(since)
                    .iter()
                    .map(|id| {
                        book.items.get(id).cloned().unwrap_or_else(
                            || json!({"resourceName": id, "metadata": {"deleted": true}}),
                        )
                    })
                    .collect(),
                _ => {
                    return Answer::json(
                        410,
                        &json!({"error": {"code": 410, "status": "FAILED_PRECONDITION",
                            "message": "Sync token is expired. Clear local cache and retry call without the sync token.",
                            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "reason": "EXPIRED_SYNC_TOKEN"}]}}),
                    );
                }
            }
        }
        None => book.items.values().cloned().collect(),
    };
    let page: Vec<Value> = entries
        .iter()
        .skip(offset)
        .take(page_size)
        .cloned()
        .collect();
    let mut body = json!({"totalItems": entries.len(), "totalPeople": entries.len()});
    if !page.is_empty() {
        body["connections"] = Value::Array(page);
    }
    if offset + page_size < entries.len() {
        body["nextPageToken"] = Value::String(format!("page-{}", offset + page_size));
    } else if q.get("requestSyncToken").is_some_and(|v| v == "true") || q.contains_key("syncToken")
    {
        body["nextSyncToken"] = Value::String(format!("sync-{}", book.seq));
    }
    Answer::json(200, &body)
}

fn graph(request: &Request, s: &mut State, addr: SocketAddr) -> Answer {
    let q = &request.query;
    let book = &s.graph;
    let base = format!("http://{addr}/v1.0/me/contacts/delta");
    // $skiptoken = "<since>.<offset>" (since = "full" for the initial round).
    let (since, offset) = if let Some(skip) = q.get("$skiptoken") {
        let Some((since, offset)) = skip.split_once('.') else {
            return Answer::json(400, &json!({"error": {"code": "badRequest"}}));
        };
        let Ok(offset) = offset.parse::<usize>() else {
            return Answer::json(400, &json!({"error": {"code": "badRequest"}}));
        };
        (since.parse::<u64>().ok(), offset)
    } else if let Some(delta) = q.get("$deltatoken") {
        match delta.parse::<u64>() {
            Ok(since) if since >= book.valid_from => (Some(since), 0),
            _ => {
                return Answer::json(
                    410,
                    &json!({"error": {"code": "syncStateNotFound",
                        "message": "The sync state generation is not found. Perform a full sync."}}),
                );
            }
        }
    } else {
        (None, 0)
    };
    let entries: Vec<Value> = match since {
        Some(since) => book
            .changed_since(since)
            .iter()
            .map(|id| {
                book.items
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| json!({"id": id, "@removed": {"reason": "deleted"}}))
            })
            .collect(),
        None => book.items.values().cloned().collect(),
    };
    let page: Vec<Value> = entries
        .iter()
        .skip(offset)
        .take(s.page_size)
        .cloned()
        .collect();
    let mut body = json!({"value": page});
    if offset + s.page_size < entries.len() {
        let since_text = since.map_or_else(|| "full".to_owned(), |n| n.to_string());
        body["@odata.nextLink"] = Value::String(format!(
            "{base}?$skiptoken={since_text}.{}",
            offset + s.page_size
        ));
    } else {
        body["@odata.deltaLink"] = Value::String(format!("{base}?$deltatoken={}", book.seq));
    }
    Answer::json(200, &body)
}

/// `/photo/<gray>`: a small JPEG of that grey level (0-255), no token
/// needed (like Google's photo host).
fn photo(path: &str) -> Answer {
    match path.trim_start_matches("/photo/").parse::<u8>() {
        Ok(gray) => Answer {
            status: 200,
            headers: vec![("Content-Type".into(), "image/jpeg".into())],
            body: crate::tiny_jpeg(gray),
        },
        Err(_) => Answer::json(404, &json!({"error": "no such photo"})),
    }
}
