//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760), without I/O.
//!
//! - [`DigestClient`] answers 401 and 407 challenges: it picks the strongest
//!   Digest challenge it supports per realm (SHA-512-256, then SHA-256, then
//!   MD5; `-sess` variants included), computes the response and returns the
//!   `Authorization` or `Proxy-Authorization` value. It caches what it learnt
//!   so the next request to the same realm can be authorised up front, with
//!   the nonce count incremented. A challenge that comes back without
//!   `stale=true` after the request already carried our credentials means the
//!   password is wrong: [`AuthError::Rejected`].
//! - [`DigestVerifier`] is the other side, for tests and small servers: it
//!   issues challenges, checks credentials against a password lookup, and
//!   detects stale nonces and replayed nonce counts. Time is an argument
//!   (`now`); nothing here reads a clock.
//!
//! Client nonces, server nonces and the server's opaque value come from a
//! caller-supplied CSPRNG: any `rand::CryptoRng` (which implies
//! `rand::RngCore`).
//!
//! ```
//! use std::time::Instant;
//!
//! use rand::SeedableRng;
//! use sip_core::auth::{ChallengeKind, DigestClient, DigestVerifier, Verification};
//! use sip_core::{Message, Method, Secret};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A seeded generator keeps the example reproducible; use an OS-seeded one
//! // (`rand::rngs::StdRng::from_os_rng()`) for real traffic.
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now(); // the driver's clock
//!
//! let register = Message::request(Method::Register, "sip:example.com")
//!     .header("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKr1")?
//!     .header("From", "<sip:alice@example.com>;tag=a1")?
//!     .header("To", "<sip:alice@example.com>")?
//!     .header("Call-ID", "reg1@192.0.2.1")?
//!     .header("CSeq", "1 REGISTER")?
//!     .header("Max-Forwards", "70")?
//!     .build()?;
//!
//! // The registrar challenges.
//! let mut registrar = DigestVerifier::new(ChallengeKind::Server, "example.com", &mut rng);
//! let challenge = registrar
//!     .add_challenge(Message::response_to(&register, 401, "Unauthorized")?, now, false, &mut rng)?
//!     .build()?;
//!
//! // The phone answers on a copy of the request (a real retry also increments CSeq).
//! let mut phone = DigestClient::new("alice", "correct horse");
//! let mut retry = register.clone();
//! for credentials in phone.handle_challenge(&challenge, &register, &mut rng)? {
//!     credentials.add_to(&mut retry)?;
//! }
//!
//! let verdict = registrar.verify(now, &retry, |user| {
//!     (user == "alice").then(|| Secret::new("correct horse"))
//! });
//! assert_eq!(verdict, Verification::Authorized { username: "alice".into() });
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use md5::Md5;
use rand::CryptoRng;
use sha2::{Digest, Sha256, Sha512_256};

use crate::error::ParseError;
use crate::headers::Auth;
use crate::message::{BuildError, Message, ResponseBuilder};
use crate::secret::Secret;

/// The hash function behind a Digest algorithm. Variants are ordered weakest
/// first, so `Ord` ranks them by strength (RFC 8760 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DigestHash {
    /// MD5 (RFC 1321); kept for compatibility only.
    Md5,
    /// SHA-256 (FIPS 180-4).
    Sha256,
    /// SHA-512/256 (FIPS 180-4), named `SHA-512-256` on the wire.
    Sha512_256,
}

/// A Digest `algorithm` value: a hash, and whether it is the `-sess` variant
/// whose HA1 also covers the nonce and client nonce (RFC 7616 §3.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Algorithm {
    /// The hash function.
    pub hash: DigestHash,
    /// Whether this is the `-sess` variant.
    pub session: bool,
}

impl Algorithm {
    /// `MD5`, the default when a challenge names no algorithm.
    pub const MD5: Algorithm = Algorithm::new(DigestHash::Md5, false);
    /// `MD5-sess`.
    pub const MD5_SESS: Algorithm = Algorithm::new(DigestHash::Md5, true);
    /// `SHA-256`.
    pub const SHA_256: Algorithm = Algorithm::new(DigestHash::Sha256, false);
    /// `SHA-256-sess`.
    pub const SHA_256_SESS: Algorithm = Algorithm::new(DigestHash::Sha256, true);
    /// `SHA-512-256`.
    pub const SHA_512_256: Algorithm = Algorithm::new(DigestHash::Sha512_256, false);
    /// `SHA-512-256-sess`.
    pub const SHA_512_256_SESS: Algorithm = Algorithm::new(DigestHash::Sha512_256, true);

    /// An algorithm from its parts.
    pub const fn new(hash: DigestHash, session: bool) -> Self {
        Algorithm { hash, session }
    }

    /// Parses an `algorithm` value (case-insensitive); `None` for one this
    /// crate does not implement.
    pub fn parse(name: &str) -> Option<Algorithm> {
        let name = name.trim();
        let (base, session) = match name.len().checked_sub(5) {
            Some(cut)
                if name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case("-sess") =>
            {
                (&name[..cut], true)
            }
            _ => (name, false),
        };
        let hash = if base.eq_ignore_ascii_case("MD5") {
            DigestHash::Md5
        } else if base.eq_ignore_ascii_case("SHA-256") {
            DigestHash::Sha256
        } else if base.eq_ignore_ascii_case("SHA-512-256") {
            DigestHash::Sha512_256
        } else {
            return None;
        };
        Some(Algorithm { hash, session })
    }

    /// The name on the wire (RFC 7616 §3.3, RFC 8760 §2.1): `MD5`, `SHA-256-sess`…
    pub fn as_str(&self) -> &'static str {
        match (self.hash, self.session) {
            (DigestHash::Md5, false) => "MD5",
            (DigestHash::Md5, true) => "MD5-sess",
            (DigestHash::Sha256, false) => "SHA-256",
            (DigestHash::Sha256, true) => "SHA-256-sess",
            (DigestHash::Sha512_256, false) => "SHA-512-256",
            (DigestHash::Sha512_256, true) => "SHA-512-256-sess",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Quality of protection (RFC 7616 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    /// `auth`: the response covers method and Request-URI.
    Auth,
    /// `auth-int`: the response also covers the body.
    AuthInt,
}

impl Qop {
    /// Parses a qop token (case-insensitive).
    pub fn parse(token: &str) -> Option<Qop> {
        let token = token.trim();
        if token.eq_ignore_ascii_case("auth") {
            Some(Qop::Auth)
        } else if token.eq_ignore_ascii_case("auth-int") {
            Some(Qop::AuthInt)
        } else {
            None
        }
    }

    /// The token on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// Who challenges: a user agent or registrar (401) or a proxy (407)
/// (RFC 3261 §22.2, §22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    /// 401, `WWW-Authenticate`, answered with `Authorization`.
    Server,
    /// 407, `Proxy-Authenticate`, answered with `Proxy-Authorization`.
    Proxy,
}

impl ChallengeKind {
    /// The status code of the challenge: 401 or 407.
    pub fn status(self) -> u16 {
        match self {
            ChallengeKind::Server => 401,
            ChallengeKind::Proxy => 407,
        }
    }

    /// The reason phrase RFC 3261 §21.4 gives the status code.
    pub fn reason(self) -> &'static str {
        match self {
            ChallengeKind::Server => "Unauthorized",
            ChallengeKind::Proxy => "Proxy Authentication Required",
        }
    }

    /// `WWW-Authenticate` or `Proxy-Authenticate`.
    pub fn challenge_header(self) -> &'static str {
        match self {
            ChallengeKind::Server => "WWW-Authenticate",
            ChallengeKind::Proxy => "Proxy-Authenticate",
        }
    }

    /// `Authorization` or `Proxy-Authorization`.
    pub fn credentials_header(self) -> &'static str {
        match self {
            ChallengeKind::Server => "Authorization",
            ChallengeKind::Proxy => "Proxy-Authorization",
        }
    }
}

/// One Digest challenge, as read from a `WWW-Authenticate` or
/// `Proxy-Authenticate` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Which header it came from.
    pub kind: ChallengeKind,
    /// The protection space.
    pub realm: String,
    /// The server nonce.
    pub nonce: String,
    /// The opaque value to echo, if any.
    pub opaque: Option<String>,
    /// The algorithm (`MD5` when absent).
    pub algorithm: Algorithm,
    /// The qop values offered that this crate knows, in order; empty when the
    /// challenge has no qop (RFC 2069 compatibility).
    pub qop: Vec<Qop>,
    /// `stale=true`: the nonce expired, the credentials were right.
    pub stale: bool,
}

impl Challenge {
    /// Reads a challenge. Fails on another scheme, a missing realm or nonce,
    /// an algorithm or qop list this crate does not implement, and a `-sess`
    /// algorithm without qop (it needs a client nonce).
    pub fn from_auth(kind: ChallengeKind, auth: &Auth<'_>) -> Result<Challenge, AuthError> {
        if !auth.scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::NoDigestChallenge);
        }
        let realm = auth
            .param("realm")
            .ok_or(AuthError::MissingParameter { name: "realm" })?;
        let nonce = auth
            .param("nonce")
            .ok_or(AuthError::MissingParameter { name: "nonce" })?;
        let algorithm = match auth.param("algorithm") {
            None => Algorithm::MD5,
            Some(a) => Algorithm::parse(&a).ok_or_else(|| AuthError::UnsupportedAlgorithm {
                algorithm: a.into_owned(),
            })?,
        };
        let qop = match auth.param("qop") {
            None => Vec::new(),
            Some(list) => {
                let known: Vec<Qop> = list.split(',').filter_map(Qop::parse).collect();
                if known.is_empty() {
                    return Err(AuthError::UnsupportedQop {
                        qop: list.into_owned(),
                    });
                }
                known
            }
        };
        if algorithm.session && qop.is_empty() {
            return Err(AuthError::MissingParameter { name: "qop" });
        }
        Ok(Challenge {
            kind,
            realm: realm.into_owned(),
            nonce: nonce.into_owned(),
            opaque: auth.param("opaque").map(|o| o.into_owned()),
            algorithm,
            qop,
            stale: auth
                .param("stale")
                .is_some_and(|s| s.trim().eq_ignore_ascii_case("true")),
        })
    }
}

/// A credentials header to add to a request: its name (`Authorization` or
/// `Proxy-Authorization`) and value. `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    kind: ChallengeKind,
    realm: String,
    value: String,
}

impl Credentials {
    /// `Authorization` or `Proxy-Authorization`.
    pub fn header_name(&self) -> &'static str {
        self.kind.credentials_header()
    }

    /// The header value, starting with `Digest `. Never log it.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The realm these credentials are for.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Which challenge these credentials answer.
    pub fn kind(&self) -> ChallengeKind {
        self.kind
    }

    /// Adds the header to `request`, replacing Digest credentials of the same
    /// kind and realm already there; others stay (RFC 3261 §22.3 allows one
    /// per realm).
    pub fn add_to(&self, request: &mut Message) -> Result<(), AuthError> {
        if !request.is_request() {
            return Err(AuthError::NotARequest);
        }
        let name = self.header_name();
        let keep: Vec<String> = request
            .header_values(name)
            .filter(|v| !Auth::parse(v).is_ok_and(|a| is_digest_for(&a, &self.realm)))
            .map(str::to_owned)
            .collect();
        request.remove_header(name);
        for v in &keep {
            request.push_header(name, v)?;
        }
        request.push_header(name, &self.value)?;
        Ok(())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("header", &self.header_name())
            .field("realm", &self.realm)
            .field("value", &"***")
            .finish()
    }
}

/// Why a challenge cannot be answered or credentials cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The message is not a 401 or 407 response.
    #[error("not a 401 or 407 response (status {status:?})")]
    NotAChallenge {
        /// The status code, `None` for a request.
        status: Option<u16>,
    },
    /// Credentials can only go into a request.
    #[error("not a request")]
    NotARequest,
    /// The response holds no Digest challenge.
    #[error("no digest challenge")]
    NoDigestChallenge,
    /// Every Digest challenge names an algorithm this crate does not implement.
    #[error("unsupported digest algorithm {algorithm}")]
    UnsupportedAlgorithm {
        /// The first algorithm seen.
        algorithm: String,
    },
    /// A challenge offers only qop values this crate does not implement.
    #[error("unsupported qop {qop}")]
    UnsupportedQop {
        /// The qop list as sent.
        qop: String,
    },
    /// A challenge lacks a parameter it needs.
    #[error("digest challenge without {name}")]
    MissingParameter {
        /// The parameter's name.
        name: &'static str,
    },
    /// A challenge header does not parse.
    #[error("malformed challenge: {0}")]
    Malformed(ParseError),
    /// The challenge is for another realm than the one configured.
    #[error("challenge for realm {realm:?}, expected {expected:?}")]
    UnexpectedRealm {
        /// The realm challenged.
        realm: String,
        /// The realm configured with [`DigestClient::with_realm`].
        expected: String,
    },
    /// The server challenged again without `stale=true` although the request
    /// carried our credentials: wrong username or password.
    #[error("credentials rejected for realm {realm:?}")]
    Rejected {
        /// The realm that rejected them.
        realm: String,
    },
    /// The nonce was used 2^32 - 1 times; a new challenge is needed.
    #[error("nonce count exhausted for realm {realm:?}")]
    NonceCountExhausted {
        /// The realm.
        realm: String,
    },
    /// A value that cannot be quoted (a control character in it).
    #[error("control character in {field}")]
    InvalidValue {
        /// The parameter's name.
        field: &'static str,
    },
    /// Adding the header to the message failed.
    #[error("cannot add the credentials: {0}")]
    Build(#[from] BuildError),
}

/// The client side: answers challenges for one username and password and
/// remembers them per realm to authorise later requests up front.
///
/// Use one client per account: [`DigestClient::authorize_request`] adds
/// credentials for every realm it has seen. Restrict it to one realm with
/// [`DigestClient::with_realm`].
#[derive(Debug, Clone)]
pub struct DigestClient {
    username: String,
    password: Secret,
    realm: Option<String>,
    preferred_qop: Qop,
    sessions: Vec<Session>,
}

/// What the client remembers of one (kind, realm): the last challenge and how
/// many times its nonce was used.
/// The most realms a client keeps credentials for, and answers in one
/// response: a peer that challenges with hundreds of realms would otherwise
/// make every later request carry hundreds of headers (RFC 3261 §22.3
/// expects a few: one per proxy or server on the path).
const MAX_REALMS: usize = 8;

#[derive(Debug, Clone)]
struct Session {
    challenge: Challenge,
    qop: Option<Qop>,
    nc: u32,
    /// For a `-sess` algorithm, the cnonce of the first request after the
    /// challenge: A1 uses it for every request with this nonce (RFC 7616
    /// §3.4.2).
    session_cnonce: Option<String>,
}

impl DigestClient {
    /// A client for `username` and `password`; `qop=auth` is preferred when a
    /// challenge offers both.
    pub fn new(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        DigestClient {
            username: username.into(),
            password: password.into(),
            realm: None,
            preferred_qop: Qop::Auth,
            sessions: Vec::new(),
        }
    }

    /// Answers only challenges for `realm`; others are ignored.
    pub fn with_realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// The qop to pick when a challenge offers both `auth` and `auth-int`.
    pub fn with_preferred_qop(mut self, qop: Qop) -> Self {
        self.preferred_qop = qop;
        self
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The realms with cached credentials.
    pub fn cached_realms(&self) -> impl Iterator<Item = &str> + '_ {
        self.sessions.iter().map(|s| s.challenge.realm.as_str())
    }

    /// Forgets the cached challenges for `realm`.
    pub fn forget(&mut self, realm: &str) {
        self.sessions.retain(|s| s.challenge.realm != realm);
    }

    /// Answers a 401 or 407 `response` to `request` (the request that was
    /// challenged; its method, Request-URI and body enter the digest).
    ///
    /// Returns one [`Credentials`] per challenged realm (RFC 3261 §22.3), for
    /// the strongest challenge supported in each (the local preference RFC
    /// 8760 §2.4 allows over taking the topmost). Unknown schemes and
    /// algorithms are skipped; when nothing is left the error says why.
    /// When `request` already carried our credentials for a realm and the
    /// challenge lacks `stale=true`, the password is wrong:
    /// [`AuthError::Rejected`], and the realm is forgotten.
    pub fn handle_challenge(
        &mut self,
        response: &Message,
        request: &Message,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<Credentials>, AuthError> {
        self.answer(response, request, true, rng)
    }

    /// [`handle_challenge`](Self::handle_challenge) for a request that went
    /// with cached credentials ([`authorize_request`](Self::authorize_request))
    /// rather than as the answer to a challenge: a refusal without
    /// `stale=true` is answered anyway, as the server may have forgotten the
    /// nonce (a restart, or a cluster node that never saw it). Use it once;
    /// a refusal of its answer is a wrong password.
    pub fn handle_challenge_afresh(
        &mut self,
        response: &Message,
        request: &Message,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<Credentials>, AuthError> {
        self.answer(response, request, false, rng)
    }

    /// Answers a challenge; `judge`: a refusal of our own credentials
    /// without `stale=true` is [`AuthError::Rejected`].
    fn answer(
        &mut self,
        response: &Message,
        request: &Message,
        judge: bool,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<Credentials>, AuthError> {
        let status = response.status();
        if !matches!(status, Some(401 | 407)) {
            return Err(AuthError::NotAChallenge { status });
        }
        let RequestLine { method, uri } = request_parts(request)?;
        let chosen = self.select(response)?;

        // Decide rejection before changing anything.
        for c in &chosen {
            if judge && !c.stale && carries_credentials(request, c.kind, &c.realm, &self.username) {
                let realm = c.realm.clone();
                self.forget(&realm);
                return Err(AuthError::Rejected { realm });
            }
        }

        let challenged: Vec<(ChallengeKind, String)> =
            chosen.iter().map(|c| (c.kind, c.realm.clone())).collect();
        let mut out = Vec::with_capacity(chosen.len());
        for c in chosen {
            let qop = self.pick_qop(&c.qop);
            let slot = self
                .sessions
                .iter()
                .position(|s| s.challenge.kind == c.kind && s.challenge.realm == c.realm);
            // A nonce seen before keeps counting (RFC 7616 §3.4: nc never repeats).
            let nc = match slot {
                Some(i)
                    if self.sessions[i].challenge.nonce == c.nonce
                        && self.sessions[i].challenge.algorithm == c.algorithm =>
                {
                    self.sessions[i].nc
                }
                _ => 0,
            };
            let session = Session {
                challenge: c,
                qop,
                nc,
                session_cnonce: None,
            };
            let i = match slot {
                Some(i) => {
                    self.sessions[i] = session;
                    i
                }
                None => {
                    // The realm cached longest goes first, unless this
                    // challenge names it too: its nonce count must go on.
                    if self.sessions.len() >= MAX_REALMS
                        && let Some(old) = self.sessions.iter().position(|s| {
                            !challenged
                                .iter()
                                .any(|(k, r)| *k == s.challenge.kind && *r == s.challenge.realm)
                        })
                    {
                        self.sessions.remove(old);
                    }
                    self.sessions.push(session);
                    self.sessions.len() - 1
                }
            };
            out.push(self.next_credentials(i, &method, &uri, request.body(), rng)?);
        }
        Ok(out)
    }

    /// Authorises a new request up front with every cached challenge, each
    /// with its nonce count incremented (RFC 3261 §22.3, RFC 7616 §3.4);
    /// returns how many headers were added. A server that has since expired
    /// the nonce answers with `stale=true`, which
    /// [`handle_challenge`](Self::handle_challenge) retries.
    pub fn authorize_request(
        &mut self,
        request: &mut Message,
        rng: &mut impl CryptoRng,
    ) -> Result<usize, AuthError> {
        let RequestLine { method, uri } = request_parts(request)?;
        let body = request.body().to_vec();
        let mut added = 0;
        for i in 0..self.sessions.len() {
            if self.sessions[i].nc == u32::MAX {
                continue;
            }
            let credentials = self.next_credentials(i, &method, &uri, &body, rng)?;
            credentials.add_to(request)?;
            added += 1;
        }
        Ok(added)
    }

    /// The best usable challenge per (kind, realm), in the order first seen.
    fn select(&self, response: &Message) -> Result<Vec<Challenge>, AuthError> {
        let parsed = response
            .www_authenticate()
            .map(|a| (ChallengeKind::Server, a))
            .chain(
                response
                    .proxy_authenticate()
                    .map(|a| (ChallengeKind::Proxy, a)),
            );
        let mut best: Vec<Challenge> = Vec::new();
        let mut first_error = None;
        let mut malformed = None;
        for (kind, auth) in parsed {
            let auth = match auth {
                Ok(a) => a,
                Err(e) => {
                    malformed.get_or_insert(AuthError::Malformed(e));
                    continue;
                }
            };
            if !auth.scheme.eq_ignore_ascii_case("Digest") {
                continue;
            }
            let c = match Challenge::from_auth(kind, &auth) {
                Ok(c) => c,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            if let Some(expected) = &self.realm
                && *expected != c.realm
            {
                first_error.get_or_insert(AuthError::UnexpectedRealm {
                    realm: c.realm,
                    expected: expected.clone(),
                });
                continue;
            }
            let full = best.len() >= MAX_REALMS;
            match best
                .iter_mut()
                .find(|b| b.kind == c.kind && b.realm == c.realm)
            {
                Some(b) if c.algorithm.hash > b.algorithm.hash => *b = c,
                Some(_) => {}
                None if !full => best.push(c),
                None => {}
            }
        }
        if best.is_empty() {
            return Err(first_error
                .or(malformed)
                .unwrap_or(AuthError::NoDigestChallenge));
        }
        Ok(best)
    }

    fn pick_qop(&self, offered: &[Qop]) -> Option<Qop> {
        if offered.contains(&self.preferred_qop) {
            Some(self.preferred_qop)
        } else {
            offered.first().copied()
        }
    }

    /// Credentials from session `i` with its nonce count incremented.
    fn next_credentials(
        &mut self,
        i: usize,
        method: &str,
        uri: &str,
        body: &[u8],
        rng: &mut impl CryptoRng,
    ) -> Result<Credentials, AuthError> {
        let session = &mut self.sessions[i];
        session.nc = session
            .nc
            .checked_add(1)
            .ok_or_else(|| AuthError::NonceCountExhausted {
                realm: session.challenge.realm.clone(),
            })?;
        let cnonce = random_hex(rng, 16);
        if session.challenge.algorithm.session && session.session_cnonce.is_none() {
            session.session_cnonce = Some(cnonce.clone());
        }
        let session = &self.sessions[i];
        credentials(
            &self.username,
            &self.password,
            session,
            method,
            uri,
            body,
            &cnonce,
        )
    }
}

/// The outcome of [`DigestVerifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verification {
    /// The credentials are right.
    Authorized {
        /// Who was authenticated.
        username: String,
    },
    /// No Digest credentials for this realm: send a challenge.
    Missing,
    /// The response is right but the nonce expired or is unknown: challenge
    /// again with `stale=true`.
    Stale,
    /// Wrong, replayed or malformed credentials: challenge again without
    /// `stale` (or refuse).
    Rejected {
        /// Why.
        reason: RejectReason,
    },
}

impl Verification {
    /// Whether the request is authorised.
    pub fn is_authorized(&self) -> bool {
        matches!(self, Verification::Authorized { .. })
    }
}

/// Why [`DigestVerifier::verify`] rejected credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// A parameter is missing or does not parse.
    Malformed,
    /// An algorithm that was not offered.
    UnsupportedAlgorithm,
    /// A qop that was not offered (or none when one was required).
    UnsupportedQop,
    /// The opaque value is not the one sent.
    OpaqueMismatch,
    /// The `uri` parameter is not the Request-URI.
    UriMismatch,
    /// The lookup knows no such user.
    UnknownUser,
    /// The response digest is wrong: wrong password (or tampering).
    WrongResponse,
    /// This nonce count was already used with this nonce.
    ReplayedNonceCount,
}

/// The server side, for tests and small servers: issues challenges and checks
/// credentials. Nonces live for a lifetime measured on the caller's clock.
#[derive(Debug, Clone)]
pub struct DigestVerifier {
    kind: ChallengeKind,
    realm: String,
    opaque: String,
    algorithms: Vec<Algorithm>,
    qop: Vec<Qop>,
    nonce_lifetime: Duration,
    max_nonces: usize,
    nonces: HashMap<String, NonceState>,
}

#[derive(Debug, Clone)]
struct NonceState {
    issued: Instant,
    /// Highest nonce count accepted, and a bitmap of the 64 below it
    /// (bit k set: `highest - k` was used).
    highest_nc: u32,
    seen: u64,
    /// For `-sess`: the cnonce of the first request accepted with this
    /// nonce, which A1 keeps (RFC 7616 §3.4.2).
    session_cnonce: Option<String>,
}

impl DigestVerifier {
    /// A verifier for `realm` answering as a server (401) or proxy (407).
    /// Defaults: challenges for SHA-512-256, SHA-256 and MD5 in that order
    /// (RFC 8760 §2.3), `qop=auth`, nonces valid for 5 minutes, at most 1024
    /// nonces outstanding. Control characters are removed from the realm.
    pub fn new(kind: ChallengeKind, realm: impl Into<String>, rng: &mut impl CryptoRng) -> Self {
        let mut realm = realm.into();
        realm.retain(|c| !c.is_control());
        DigestVerifier {
            kind,
            realm,
            opaque: random_hex(rng, 8),
            algorithms: vec![Algorithm::SHA_512_256, Algorithm::SHA_256, Algorithm::MD5],
            qop: vec![Qop::Auth],
            nonce_lifetime: Duration::from_secs(300),
            max_nonces: 1024,
            nonces: HashMap::new(),
        }
    }

    /// The algorithms to challenge with, most preferred first (one challenge
    /// each).
    pub fn with_algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// The qop values to offer; none for RFC 2069 style challenges.
    pub fn with_qop(mut self, qop: impl IntoIterator<Item = Qop>) -> Self {
        self.qop = qop.into_iter().collect();
        self
    }

    /// How long a nonce stays valid after it was issued.
    pub fn with_nonce_lifetime(mut self, lifetime: Duration) -> Self {
        self.nonce_lifetime = lifetime;
        self
    }

    /// How many nonces to remember; the oldest is dropped beyond that.
    pub fn with_max_nonces(mut self, max: usize) -> Self {
        self.max_nonces = max.max(1);
        self
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Server (401) or proxy (407).
    pub fn kind(&self) -> ChallengeKind {
        self.kind
    }

    /// Issues a fresh nonce at `now` and returns the challenge values, one per
    /// algorithm, for the header named by
    /// [`ChallengeKind::challenge_header`]. Set `stale` after
    /// [`Verification::Stale`].
    pub fn challenge(
        &mut self,
        now: Instant,
        stale: bool,
        rng: &mut impl CryptoRng,
    ) -> Vec<String> {
        self.prune(now);
        if self.nonces.len() >= self.max_nonces
            && let Some(oldest) = self
                .nonces
                .iter()
                .min_by_key(|(_, s)| s.issued)
                .map(|(n, _)| n.clone())
        {
            self.nonces.remove(&oldest);
        }
        let nonce = random_hex(rng, 16);
        self.nonces.insert(
            nonce.clone(),
            NonceState {
                issued: now,
                highest_nc: 0,
                seen: 0,
                session_cnonce: None,
            },
        );
        self.algorithms
            .iter()
            .map(|a| self.challenge_value(&nonce, *a, stale))
            .collect()
    }

    /// Adds the challenge headers of [`challenge`](Self::challenge) to a
    /// response under construction (a 401 or 407 made with
    /// [`Message::response_to`]).
    pub fn add_challenge(
        &mut self,
        mut response: ResponseBuilder,
        now: Instant,
        stale: bool,
        rng: &mut impl CryptoRng,
    ) -> Result<ResponseBuilder, BuildError> {
        for value in self.challenge(now, stale, rng) {
            response = response.header(self.kind.challenge_header(), &value)?;
        }
        Ok(response)
    }

    /// Checks the request's Digest credentials for this realm (in the header
    /// named by [`ChallengeKind::credentials_header`]) at `now`. `password`
    /// looks a username up.
    pub fn verify(
        &mut self,
        now: Instant,
        request: &Message,
        password: impl FnOnce(&str) -> Option<Secret>,
    ) -> Verification {
        self.prune(now);
        let Ok(RequestLine { method, uri }) = request_parts(request) else {
            return Verification::Missing;
        };
        let name = self.kind.credentials_header();
        let Some(auth) = request
            .header_values(name)
            .filter_map(|v| Auth::parse(v).ok())
            .find(|a| is_digest_for(a, &self.realm))
        else {
            return Verification::Missing;
        };
        let reject = |reason| Verification::Rejected { reason };
        let (Some(username), Some(nonce), Some(digest_uri), Some(response)) = (
            auth.param("username"),
            auth.param("nonce"),
            auth.param("uri"),
            auth.param("response"),
        ) else {
            return reject(RejectReason::Malformed);
        };
        let algorithm = match auth.param("algorithm") {
            None => Some(Algorithm::MD5),
            Some(a) => Algorithm::parse(&a),
        };
        let Some(algorithm) = algorithm.filter(|a| self.algorithms.contains(a)) else {
            return reject(RejectReason::UnsupportedAlgorithm);
        };
        let qop = match auth.param("qop") {
            None if self.qop.is_empty() && !algorithm.session => None,
            None => return reject(RejectReason::UnsupportedQop),
            Some(q) => match Qop::parse(&q).filter(|q| self.qop.contains(q)) {
                Some(q) => {
                    let nc = auth.param("nc").and_then(|n| parse_nc(&n));
                    let Some((nc, cnonce)) = nc.zip(auth.param("cnonce")) else {
                        return reject(RejectReason::Malformed);
                    };
                    Some((q, nc, cnonce))
                }
                None => return reject(RejectReason::UnsupportedQop),
            },
        };
        if auth.param("opaque").as_deref() != Some(self.opaque.as_str()) {
            return reject(RejectReason::OpaqueMismatch);
        }
        if digest_uri != uri {
            return reject(RejectReason::UriMismatch);
        }
        let Some(secret) = password(&username) else {
            return reject(RejectReason::UnknownUser);
        };
        // A `-sess` A1 keeps the cnonce of the nonce's first request.
        let session_cnonce = self
            .nonces
            .get(nonce.as_ref())
            .and_then(|s| s.session_cnonce.clone())
            .filter(|_| algorithm.session);
        let expected = response_digest(&DigestInput {
            algorithm,
            username: &username,
            realm: &self.realm,
            password: secret.expose(),
            method: &method,
            uri: &digest_uri,
            nonce: &nonce,
            qop: qop.as_ref().map(|(q, nc, c)| (*q, *nc, c.as_ref())),
            session_cnonce: session_cnonce.as_deref(),
            body: request.body(),
        });
        if !constant_time_eq_hex(expected.as_bytes(), response.as_bytes()) {
            return reject(RejectReason::WrongResponse);
        }
        // The response is right; now whether this nonce may still be used.
        let Some(state) = self.nonces.get_mut(nonce.as_ref()) else {
            return Verification::Stale;
        };
        if let Some((_, nc, _)) = qop
            && !accept_nc(state, nc)
        {
            return reject(RejectReason::ReplayedNonceCount);
        }
        if algorithm.session
            && state.session_cnonce.is_none()
            && let Some((_, _, cnonce)) = &qop
        {
            state.session_cnonce = Some(cnonce.to_string());
        }
        Verification::Authorized {
            username: username.into_owned(),
        }
    }

    /// Drops nonces older than their lifetime.
    fn prune(&mut self, now: Instant) {
        let lifetime = self.nonce_lifetime;
        self.nonces
            .retain(|_, s| now.saturating_duration_since(s.issued) < lifetime);
    }

    fn challenge_value(&self, nonce: &str, algorithm: Algorithm, stale: bool) -> String {
        let mut v = String::from("Digest ");
        push_quoted_lossy(&mut v, "realm", &self.realm);
        v.push_str(", ");
        push_quoted_lossy(&mut v, "nonce", nonce);
        v.push_str(", ");
        push_quoted_lossy(&mut v, "opaque", &self.opaque);
        v.push_str(", algorithm=");
        v.push_str(algorithm.as_str());
        if !self.qop.is_empty() {
            let list: Vec<&str> = self.qop.iter().map(|q| q.as_str()).collect();
            v.push_str(", qop=\"");
            v.push_str(&list.join(","));
            v.push('"');
        }
        if stale {
            v.push_str(", stale=true");
        }
        v
    }
}

/// The Request line's method and URI, owned so the request can change after.
struct RequestLine {
    method: String,
    uri: String,
}

fn request_parts(request: &Message) -> Result<RequestLine, AuthError> {
    match request.start_line() {
        crate::StartLine::Request { method, uri } => Ok(RequestLine {
            method: method.as_str().to_owned(),
            uri: uri.to_owned(),
        }),
        crate::StartLine::Response { .. } => Err(AuthError::NotARequest),
    }
}

/// Whether `auth` holds Digest credentials for `realm`.
fn is_digest_for(auth: &Auth<'_>, realm: &str) -> bool {
    auth.scheme.eq_ignore_ascii_case("Digest") && auth.param("realm").as_deref() == Some(realm)
}

/// Whether `request` already carries `username`'s Digest credentials for
/// `realm` in the header answering `kind`.
fn carries_credentials(
    request: &Message,
    kind: ChallengeKind,
    realm: &str,
    username: &str,
) -> bool {
    request
        .header_values(kind.credentials_header())
        .filter_map(|v| Auth::parse(v).ok())
        .any(|a| is_digest_for(&a, realm) && a.param("username").as_deref() == Some(username))
}

/// Builds the credentials value for one use of a session (its `nc` already
/// incremented).
fn credentials(
    username: &str,
    password: &Secret,
    session: &Session,
    method: &str,
    uri: &str,
    body: &[u8],
    cnonce: &str,
) -> Result<Credentials, AuthError> {
    let c = &session.challenge;
    let qop = session.qop.map(|q| (q, session.nc, cnonce));
    let response = response_digest(&DigestInput {
        algorithm: c.algorithm,
        username,
        realm: &c.realm,
        password: password.expose(),
        method,
        uri,
        nonce: &c.nonce,
        qop,
        session_cnonce: session.session_cnonce.as_deref(),
        body,
    });
    let mut v = String::from("Digest ");
    push_quoted(&mut v, "username", username)?;
    v.push_str(", ");
    push_quoted(&mut v, "realm", &c.realm)?;
    v.push_str(", ");
    push_quoted(&mut v, "nonce", &c.nonce)?;
    v.push_str(", ");
    push_quoted(&mut v, "uri", uri)?;
    v.push_str(", ");
    push_quoted(&mut v, "response", &response)?;
    v.push_str(", algorithm=");
    v.push_str(c.algorithm.as_str());
    if let Some((q, nc, cnonce)) = qop {
        v.push_str(", ");
        push_quoted(&mut v, "cnonce", cnonce)?;
        v.push_str(", qop=");
        v.push_str(q.as_str());
        v.push_str(&format!(", nc={nc:08x}"));
    }
    if let Some(opaque) = &c.opaque {
        v.push_str(", ");
        push_quoted(&mut v, "opaque", opaque)?;
    }
    Ok(Credentials {
        kind: c.kind,
        realm: c.realm.clone(),
        value: v,
    })
}

/// What a Digest response covers (RFC 7616 §3.4.1-§3.4.3).
struct DigestInput<'a> {
    algorithm: Algorithm,
    username: &'a str,
    realm: &'a str,
    password: &'a str,
    method: &'a str,
    uri: &'a str,
    nonce: &'a str,
    /// qop with its nonce count and client nonce; `None` for RFC 2069 style.
    qop: Option<(Qop, u32, &'a str)>,
    /// For `-sess`: the cnonce A1 was first computed with, when it is not
    /// this request's.
    session_cnonce: Option<&'a str>,
    body: &'a [u8],
}

/// The `response` value, lower-case hex.
fn response_digest(i: &DigestInput<'_>) -> String {
    let hash = i.algorithm.hash;
    let mut ha1 = h(
        hash,
        &[
            i.username.as_bytes(),
            i.realm.as_bytes(),
            i.password.as_bytes(),
        ],
    );
    if i.algorithm.session {
        let cnonce = i.session_cnonce.or(i.qop.map(|(_, _, c)| c)).unwrap_or("");
        ha1 = h(
            hash,
            &[ha1.as_bytes(), i.nonce.as_bytes(), cnonce.as_bytes()],
        );
    }
    let ha2 = match i.qop {
        Some((Qop::AuthInt, _, _)) => {
            let body = h(hash, &[i.body]);
            h(
                hash,
                &[i.method.as_bytes(), i.uri.as_bytes(), body.as_bytes()],
            )
        }
        _ => h(hash, &[i.method.as_bytes(), i.uri.as_bytes()]),
    };
    match i.qop {
        Some((qop, nc, cnonce)) => {
            let nc = format!("{nc:08x}");
            h(
                hash,
                &[
                    ha1.as_bytes(),
                    i.nonce.as_bytes(),
                    nc.as_bytes(),
                    cnonce.as_bytes(),
                    qop.as_str().as_bytes(),
                    ha2.as_bytes(),
                ],
            )
        }
        None => h(hash, &[ha1.as_bytes(), i.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// H(part1 ":" part2 ":" …) in lower-case hex.
fn h(hash: DigestHash, parts: &[&[u8]]) -> String {
    match hash {
        DigestHash::Md5 => hex_digest::<Md5>(parts),
        DigestHash::Sha256 => hex_digest::<Sha256>(parts),
        DigestHash::Sha512_256 => hex_digest::<Sha512_256>(parts),
    }
}

fn hex_digest<D: Digest>(parts: &[&[u8]]) -> String {
    let mut d = D::new();
    for (k, part) in parts.iter().enumerate() {
        if k > 0 {
            d.update(b":");
        }
        d.update(part);
    }
    hex(&d.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn random_hex(rng: &mut impl CryptoRng, len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// Appends `name="value"`, escaping `"` and `\` (RFC 3261 §25.1 quoted-pair).
fn push_quoted(out: &mut String, name: &'static str, value: &str) -> Result<(), AuthError> {
    if value.chars().any(|c| c.is_control()) {
        return Err(AuthError::InvalidValue { field: name });
    }
    push_quoted_lossy(out, name, value);
    Ok(())
}

/// Like [`push_quoted`], dropping control characters.
fn push_quoted_lossy(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// `nc`: exactly 8 hex digits.
fn parse_nc(value: &str) -> Option<u32> {
    if value.len() != 8 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(value, 16).ok()
}

/// Records `nc` for a nonce; false when it was used before or is too old to
/// tell.
fn accept_nc(state: &mut NonceState, nc: u32) -> bool {
    if nc == 0 {
        return false;
    }
    if nc > state.highest_nc {
        let shift = nc - state.highest_nc;
        state.seen = if shift >= 64 { 0 } else { state.seen << shift };
        state.seen |= 1;
        state.highest_nc = nc;
        return true;
    }
    let back = state.highest_nc - nc;
    if back >= 64 {
        return false;
    }
    let bit = 1u64 << back;
    if state.seen & bit != 0 {
        return false;
    }
    state.seen |= bit;
    true
}

/// Compares an expected lower-case hex digest with a received one (any case)
/// without stopping at the first difference.
fn constant_time_eq_hex(expected: &[u8], received: &[u8]) -> bool {
    if expected.len() != received.len() {
        return false;
    }
    expected
        .iter()
        .zip(received)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()))
        == 0
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::Method;

    /// The one real instant a test starts from; everything after it is
    /// advanced by hand.
    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x5eed)
    }

    fn request(method: Method, uri: &str, body: &'static [u8]) -> Message {
        let mut b = Message::request(method.clone(), uri)
            .header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1")
            .unwrap()
            .header("From", "<sip:bob@biloxi.com>;tag=f1")
            .unwrap()
            .header("To", "<sip:bob@biloxi.com>")
            .unwrap()
            .header("Call-ID", "a84b4c76e66710@192.0.2.1")
            .unwrap()
            .header("CSeq", &format!("1 {}", method.as_str()))
            .unwrap()
            .header("Max-Forwards", "70")
            .unwrap();
        if !body.is_empty() {
            b = b
                .header("Content-Type", "application/sdp")
                .unwrap()
                .body(body);
        }
        b.build().unwrap()
    }

    fn challenge_response(req: &Message, status: u16, headers: &[&str]) -> Message {
        let (name, reason) = if status == 407 {
            ("Proxy-Authenticate", "Proxy Authentication Required")
        } else {
            ("WWW-Authenticate", "Unauthorized")
        };
        let mut b = Message::response_to(req, status, reason)
            .unwrap()
            .to_tag("t1");
        for h in headers {
            b = b.header(name, h).unwrap();
        }
        b.build().unwrap()
    }

    fn param(value: &str, name: &str) -> String {
        Auth::parse(value)
            .unwrap()
            .param(name)
            .unwrap_or_else(|| panic!("no {name} in {value}"))
            .into_owned()
    }

    /// Answers the single challenge in `text` with a fixed client nonce.
    fn answer_with_cnonce(
        text: &str,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &str,
    ) -> Credentials {
        let auth = Auth::parse(text).unwrap();
        let challenge = Challenge::from_auth(ChallengeKind::Server, &auth).unwrap();
        let client = DigestClient::new(username, password);
        let qop = client.pick_qop(&challenge.qop);
        let session = Session {
            challenge,
            qop,
            nc: 1,
            session_cnonce: None,
        };
        credentials(
            username,
            &Secret::new(password),
            &session,
            method,
            uri,
            body,
            cnonce,
        )
        .unwrap()
    }

    #[test]
    fn rfc2617_3_5_md5_qop_auth_example() {
        let c = answer_with_cnonce(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            b"",
            "0a4f113b",
        );
        assert_eq!(
            param(c.value(), "response"),
            "6629fae49393a05397450978507c4ef1"
        );
        assert!(c.value().contains("qop=auth, nc=00000001"), "{c:?}");
        assert!(c.value().contains("cnonce=\"0a4f113b\""));
        assert!(
            c.value()
                .contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"")
        );
        assert!(c.value().contains("algorithm=MD5,"));
    }

    #[test]
    fn rfc7616_3_9_1_md5_and_sha256_examples() {
        for (algorithm, expected) in [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            (
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let c = answer_with_cnonce(
                &format!(
                    "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
                     algorithm={algorithm}, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
                     opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
                ),
                "Mufasa",
                "Circle of Life",
                "GET",
                "/dir/index.html",
                b"",
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            );
            assert_eq!(param(c.value(), "response"), expected, "{algorithm}");
            assert_eq!(param(c.value(), "algorithm"), algorithm);
            assert_eq!(param(c.value(), "qop"), "auth");
            assert_eq!(param(c.value(), "nc"), "00000001");
        }
    }

    #[test]
    fn rfc7616_3_9_quoting_of_credentials() {
        // username, realm, nonce, uri, response, cnonce, opaque quoted;
        // algorithm, qop, nc not (RFC 7616 §3.4).
        let c = answer_with_cnonce(
            "Digest realm=\"r\\\"q\", nonce=\"n\", qop=auth, algorithm=SHA-256, opaque=\"o\"",
            "a\"b\\c",
            "pw",
            "INVITE",
            "sip:bob@biloxi.com",
            b"",
            "c1",
        );
        let v = c.value();
        assert!(v.starts_with("Digest username=\"a\\\"b\\\\c\", realm=\"r\\\"q\", nonce=\"n\", uri=\"sip:bob@biloxi.com\", response=\""), "{v}");
        assert!(
            v.ends_with(", algorithm=SHA-256, cnonce=\"c1\", qop=auth, nc=00000001, opaque=\"o\""),
            "{v}"
        );
        let parsed = Auth::parse(v).unwrap();
        assert_eq!(parsed.param("username").unwrap(), "a\"b\\c");
        assert_eq!(parsed.param("realm").unwrap(), "r\"q");
        assert_eq!(
            format!("{c:?}"),
            "Credentials { header: \"Authorization\", realm: \"r\\\"q\", value: \"***\" }"
        );
        let err = DigestClient::new("bad\u{7f}name", "pw")
            .handle_challenge(
                &challenge_response(
                    &request(Method::Register, "sip:biloxi.com", b""),
                    401,
                    &["Digest realm=\"r\", nonce=\"n\""],
                ),
                &request(Method::Register, "sip:biloxi.com", b""),
                &mut rng(),
            )
            .unwrap_err();
        assert_eq!(err, AuthError::InvalidValue { field: "username" });
    }

    #[test]
    fn rfc8760_2_1_algorithm_names() {
        for (name, a) in [
            ("MD5", Algorithm::MD5),
            ("MD5-sess", Algorithm::MD5_SESS),
            ("SHA-256", Algorithm::SHA_256),
            ("SHA-256-sess", Algorithm::SHA_256_SESS),
            ("SHA-512-256", Algorithm::SHA_512_256),
            ("SHA-512-256-sess", Algorithm::SHA_512_256_SESS),
        ] {
            assert_eq!(Algorithm::parse(name), Some(a));
            assert_eq!(Algorithm::parse(&name.to_lowercase()), Some(a));
            assert_eq!(a.to_string(), name);
        }
        for unknown in [
            "SHA-1",
            "SHA-512",
            "",
            "-sess",
            "MD5-",
            "AKAv1-MD5",
            "é-sess",
        ] {
            assert_eq!(Algorithm::parse(unknown), None, "{unknown}");
        }
        assert!(DigestHash::Sha512_256 > DigestHash::Sha256);
        assert!(DigestHash::Sha256 > DigestHash::Md5);
    }

    #[test]
    fn rfc8760_2_4_strongest_of_several_challenges() {
        let req = request(Method::Register, "sip:biloxi.com", b"");
        let resp = challenge_response(
            &req,
            401,
            &[
                "Digest realm=\"biloxi.com\", nonce=\"n-md5\", algorithm=MD5, qop=\"auth\"",
                "Basic realm=\"biloxi.com\"",
                "Digest realm=\"biloxi.com\", nonce=\"n-x\", algorithm=SHA-1024, qop=\"auth\"",
                "Digest realm=\"biloxi.com\", nonce=\"n-512\", algorithm=SHA-512-256, qop=\"auth\"",
                "Digest realm=\"biloxi.com\", nonce=\"n-256\", algorithm=SHA-256, qop=\"auth\"",
                "Newscheme realm=\"biloxi.com\", x=y",
            ],
        );
        let mut client = DigestClient::new("bob", "zanzibar");
        let out = client.handle_challenge(&resp, &req, &mut rng()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].header_name(), "Authorization");
        assert_eq!(param(out[0].value(), "algorithm"), "SHA-512-256");
        assert_eq!(param(out[0].value(), "nonce"), "n-512");
        assert_eq!(param(out[0].value(), "response").len(), 64);

        // Without the SHA-512-256 one, SHA-256 wins over MD5.
        let resp = challenge_response(
            &req,
            401,
            &[
                "Digest realm=\"biloxi.com\", nonce=\"n-md5\", qop=\"auth\"",
                "Digest realm=\"biloxi.com\", nonce=\"n-256\", algorithm=sha-256-SESS, qop=\"auth\"",
            ],
        );
        let out = DigestClient::new("bob", "zanzibar")
            .handle_challenge(&resp, &req, &mut rng())
            .unwrap();
        assert_eq!(param(out[0].value(), "algorithm"), "SHA-256-sess");
    }

    /// A peer that challenges with 300 realms gets answers for the first
    /// eight, and the cache that authorises later requests stays at eight.
    #[test]
    fn rfc3261_22_3_realms_are_bounded() {
        let req = request(Method::Invite, "sip:bob@biloxi.com", b"");
        let mut client = DigestClient::new("bob", "zanzibar");
        for round in 0..3 {
            let challenges: Vec<String> = (0..100)
                .map(|k| format!("Digest realm=\"r{round}-{k}\", nonce=\"n{k}\", qop=\"auth\""))
                .collect();
            let refs: Vec<&str> = challenges.iter().map(String::as_str).collect();
            let resp = challenge_response(&req, 401, &refs);
            let out = client.handle_challenge(&resp, &req, &mut rng()).unwrap();
            assert_eq!(out.len(), MAX_REALMS);
        }
        assert_eq!(client.cached_realms().count(), MAX_REALMS);
        let mut next = request(Method::Invite, "sip:carol@biloxi.com", b"");
        assert_eq!(
            client.authorize_request(&mut next, &mut rng()).unwrap(),
            MAX_REALMS
        );
        assert_eq!(next.header_values("Authorization").count(), MAX_REALMS);
        // Seven new realms and, last, the oldest cached one with its nonce:
        // room is made elsewhere, and its nonce count goes on (RFC 7616
        // §3.4: a count is never sent twice for one nonce).
        let mut challenges: Vec<String> = (0..7)
            .map(|k| format!("Digest realm=\"x{k}\", nonce=\"m{k}\", qop=\"auth\""))
            .collect();
        challenges.push("Digest realm=\"r2-0\", nonce=\"n0\", qop=\"auth\"".to_owned());
        let refs: Vec<&str> = challenges.iter().map(String::as_str).collect();
        let out = client
            .handle_challenge(&challenge_response(&req, 401, &refs), &req, &mut rng())
            .unwrap();
        let again = out
            .iter()
            .find(|c| param(c.value(), "realm") == "r2-0")
            .unwrap();
        assert_eq!(param(again.value(), "nc"), "00000003");
    }

    #[test]
    fn rfc3261_22_3_proxy_challenge_gets_proxy_authorization() {
        let req = request(Method::Invite, "sip:bob@biloxi.com", b"v=0\r\n");
        let resp = challenge_response(
            &req,
            407,
            &[
                "Digest realm=\"atlanta.com\", nonce=\"wf84f1ceczx41ae6cbe5aea9c8e88d359\", opaque=\"\", qop=\"auth\"",
            ],
        );
        let mut client = DigestClient::new("alice", "secret");
        let out = client.handle_challenge(&resp, &req, &mut rng()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].header_name(), "Proxy-Authorization");
        assert_eq!(out[0].kind(), ChallengeKind::Proxy);
        assert_eq!(out[0].realm(), "atlanta.com");
        let mut retry = req.clone();
        out[0].add_to(&mut retry).unwrap();
        assert_eq!(retry.proxy_authorization().count(), 1);
        assert_eq!(retry.authorization().count(), 0);
        let again = Message::parse(retry.to_bytes()).unwrap();
        let creds = again.proxy_authorization().next().unwrap().unwrap();
        assert_eq!(creds.param("uri").unwrap(), "sip:bob@biloxi.com");
        assert_eq!(creds.param("opaque").unwrap(), "");
        assert_eq!(again.body(), b"v=0\r\n");
    }

    #[test]
    fn rfc3261_22_3_one_answer_per_realm() {
        // A forking proxy gathers challenges from two realms (RFC 3261 §16.7).
        let req = request(Method::Invite, "sip:bob@biloxi.com", b"");
        let mut b = Message::response_to(&req, 407, "Proxy Authentication Required")
            .unwrap()
            .to_tag("t");
        for h in [
            "Digest realm=\"atlanta.com\", nonce=\"a1\", qop=auth",
            "Digest realm=\"biloxi.com\", nonce=\"b1\", qop=auth",
            "Digest realm=\"atlanta.com\", nonce=\"a2\", algorithm=SHA-256, qop=auth",
        ] {
            b = b.header("Proxy-Authenticate", h).unwrap();
        }
        b = b
            .header(
                "WWW-Authenticate",
                "Digest realm=\"biloxi.com\", nonce=\"u1\"",
            )
            .unwrap();
        let resp = b.build().unwrap();
        let mut client = DigestClient::new("alice", "secret");
        let out = client.handle_challenge(&resp, &req, &mut rng()).unwrap();
        let summary: Vec<(&str, &str, String)> = out
            .iter()
            .map(|c| (c.header_name(), c.realm(), param(c.value(), "nonce")))
            .collect();
        assert_eq!(
            summary,
            [
                ("Authorization", "biloxi.com", "u1".to_owned()),
                ("Proxy-Authorization", "atlanta.com", "a2".to_owned()),
                ("Proxy-Authorization", "biloxi.com", "b1".to_owned()),
            ]
        );
        // No qop: RFC 2069 style, without cnonce and nc.
        assert!(!out[0].value().contains("cnonce"));
        assert!(!out[0].value().contains("nc="));
        let mut retry = req.clone();
        for c in &out {
            c.add_to(&mut retry).unwrap();
        }
        assert_eq!(retry.proxy_authorization().count(), 2);
        assert_eq!(retry.authorization().count(), 1);

        // with_realm restricts the answers.
        let mut only = DigestClient::new("alice", "secret").with_realm("biloxi.com");
        let out = only.handle_challenge(&resp, &req, &mut rng()).unwrap();
        assert!(out.iter().all(|c| c.realm() == "biloxi.com"));
        assert_eq!(out.len(), 2);
        let mut other = DigestClient::new("alice", "secret").with_realm("chicago.com");
        assert!(matches!(
            other.handle_challenge(&resp, &req, &mut rng()),
            Err(AuthError::UnexpectedRealm { .. })
        ));
    }

    #[test]
    fn rfc7616_3_4_nonce_count_increments_per_use_of_a_nonce() {
        let mut rng = rng();
        let req = request(Method::Register, "sip:biloxi.com", b"");
        let resp = challenge_response(
            &req,
            401,
            &["Digest realm=\"biloxi.com\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth\""],
        );
        let mut client = DigestClient::new("bob", "zanzibar");
        let first = client.handle_challenge(&resp, &req, &mut rng).unwrap();
        assert_eq!(param(first[0].value(), "nc"), "00000001");

        // Pre-authorised requests reuse the nonce with nc 2, 3…
        let mut cnonces = vec![param(first[0].value(), "cnonce")];
        for expected in ["00000002", "00000003"] {
            let mut next = request(Method::Register, "sip:biloxi.com", b"");
            assert_eq!(client.authorize_request(&mut next, &mut rng).unwrap(), 1);
            let creds = next.authorization().next().unwrap().unwrap();
            assert_eq!(creds.param("nc").unwrap(), expected);
            assert_eq!(creds.param("nonce").unwrap(), "n1");
            cnonces.push(creds.param("cnonce").unwrap().into_owned());
        }
        cnonces.dedup();
        assert_eq!(cnonces.len(), 3, "a fresh cnonce each time");

        // The server challenges a request without credentials with the same
        // nonce: counting goes on.
        let again = client.handle_challenge(&resp, &req, &mut rng).unwrap();
        assert_eq!(param(again[0].value(), "nc"), "00000004");

        // A new nonce starts at 1.
        let resp2 = challenge_response(
            &req,
            401,
            &["Digest realm=\"biloxi.com\", nonce=\"n2\", algorithm=SHA-256, qop=\"auth\""],
        );
        let fresh = client.handle_challenge(&resp2, &req, &mut rng).unwrap();
        assert_eq!(param(fresh[0].value(), "nc"), "00000001");
        assert_eq!(client.cached_realms().collect::<Vec<_>>(), ["biloxi.com"]);

        // Re-authorising replaces the old header instead of adding one.
        let mut next = req.clone();
        fresh[0].add_to(&mut next).unwrap();
        client.authorize_request(&mut next, &mut rng).unwrap();
        assert_eq!(next.authorization().count(), 1);
        assert_eq!(
            next.authorization()
                .next()
                .unwrap()
                .unwrap()
                .param("nc")
                .unwrap(),
            "00000002"
        );

        client.forget("biloxi.com");
        let mut bare = req.clone();
        assert_eq!(client.authorize_request(&mut bare, &mut rng).unwrap(), 0);
        assert_eq!(bare.authorization().count(), 0);
    }

    #[test]
    fn rfc7616_3_3_stale_nonce_is_retried_wrong_password_is_rejected() {
        let mut rng = rng();
        let now = epoch();
        let req = request(Method::Register, "sip:biloxi.com", b"");
        let mut server = DigestVerifier::new(ChallengeKind::Server, "biloxi.com", &mut rng)
            .with_nonce_lifetime(Duration::from_secs(30));
        let lookup = |u: &str| (u == "bob").then(|| Secret::new("zanzibar"));

        let resp = server
            .add_challenge(
                Message::response_to(&req, 401, "Unauthorized").unwrap(),
                now,
                false,
                &mut rng,
            )
            .unwrap()
            .build()
            .unwrap();
        let mut client = DigestClient::new("bob", "zanzibar");
        let mut retry = req.clone();
        for c in client.handle_challenge(&resp, &req, &mut rng).unwrap() {
            c.add_to(&mut retry).unwrap();
        }
        assert!(server.verify(now, &retry, lookup).is_authorized());

        // 31 s later the nonce has expired: the right answer is Stale.
        let later = now + Duration::from_secs(31);
        let mut next = req.clone();
        client.authorize_request(&mut next, &mut rng).unwrap();
        assert_eq!(server.verify(later, &next, lookup), Verification::Stale);
        let stale = server
            .add_challenge(
                Message::response_to(&next, 401, "Unauthorized").unwrap(),
                later,
                true,
                &mut rng,
            )
            .unwrap()
            .build()
            .unwrap();
        // The request carried our credentials, but stale=true: retry, no error.
        let creds = client.handle_challenge(&stale, &next, &mut rng).unwrap();
        let mut retry2 = req.clone();
        creds[0].add_to(&mut retry2).unwrap();
        assert_eq!(param(creds[0].value(), "nc"), "00000001");
        assert!(server.verify(later, &retry2, lookup).is_authorized());

        // Wrong password: the server challenges again without stale.
        let mut wrong = DigestClient::new("bob", "zanzibar!");
        let mut retry3 = req.clone();
        for c in wrong.handle_challenge(&resp, &req, &mut rng).unwrap() {
            c.add_to(&mut retry3).unwrap();
        }
        assert_eq!(
            server.verify(later, &retry3, lookup),
            Verification::Rejected {
                reason: RejectReason::WrongResponse
            }
        );
        let again = server
            .add_challenge(
                Message::response_to(&retry3, 401, "Unauthorized").unwrap(),
                later,
                false,
                &mut rng,
            )
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            wrong.handle_challenge(&again, &retry3, &mut rng),
            Err(AuthError::Rejected {
                realm: "biloxi.com".into()
            })
        );
        assert_eq!(wrong.cached_realms().count(), 0, "rejected realm forgotten");
        // The same nonce repeated after we answered it is a rejection too.
        let mut wrong = DigestClient::new("bob", "nope");
        let mut retry4 = req.clone();
        for c in wrong.handle_challenge(&resp, &req, &mut rng).unwrap() {
            c.add_to(&mut retry4).unwrap();
        }
        assert!(matches!(
            wrong.handle_challenge(&resp, &retry4, &mut rng),
            Err(AuthError::Rejected { .. })
        ));
    }

    #[test]
    fn rfc8760_2_3_sha512_256_round_trip_with_verifier() {
        let mut rng = rng();
        let now = epoch();
        let req = request(Method::Register, "sip:biloxi.com", b"");
        let mut server = DigestVerifier::new(ChallengeKind::Proxy, "biloxi.com", &mut rng)
            .with_qop([Qop::Auth, Qop::AuthInt]);
        let values = server.challenge(now, false, &mut rng);
        assert_eq!(values.len(), 3);
        assert!(values[0].contains("algorithm=SHA-512-256"));
        assert!(values[0].contains("qop=\"auth,auth-int\""));
        let mut b = Message::response_to(&req, 407, "Proxy Authentication Required").unwrap();
        // Weakest first on the wire: the client still picks SHA-512-256.
        for v in values.iter().rev() {
            b = b.header("Proxy-Authenticate", v).unwrap();
        }
        let resp = b.build().unwrap();
        let mut client = DigestClient::new("bob", "zanzibar");
        let creds = client.handle_challenge(&resp, &req, &mut rng).unwrap();
        assert_eq!(param(creds[0].value(), "algorithm"), "SHA-512-256");
        let mut retry = req.clone();
        creds[0].add_to(&mut retry).unwrap();
        let lookup = |u: &str| (u == "bob").then(|| Secret::new("zanzibar"));
        assert_eq!(
            server.verify(now, &retry, lookup),
            Verification::Authorized {
                username: "bob".into()
            }
        );
        // The same credentials again: replayed nc.
        assert_eq!(
            server.verify(now, &retry, lookup),
            Verification::Rejected {
                reason: RejectReason::ReplayedNonceCount
            }
        );
        // The next pre-authorised request (nc=2) passes; so does the -sess variant.
        let mut next = req.clone();
        client.authorize_request(&mut next, &mut rng).unwrap();
        assert!(server.verify(now, &next, lookup).is_authorized());

        let mut sess = DigestVerifier::new(ChallengeKind::Server, "biloxi.com", &mut rng)
            .with_algorithms([Algorithm::SHA_512_256_SESS]);
        let resp = sess
            .add_challenge(
                Message::response_to(&req, 401, "Unauthorized").unwrap(),
                now,
                false,
                &mut rng,
            )
            .unwrap()
            .build()
            .unwrap();
        let mut retry = req.clone();
        for c in DigestClient::new("bob", "zanzibar")
            .handle_challenge(&resp, &req, &mut rng)
            .unwrap()
        {
            c.add_to(&mut retry).unwrap();
        }
        assert!(sess.verify(now, &retry, lookup).is_authorized());
    }

    /// RFC 7616 §3.4.2: with a `-sess` algorithm, A1 takes the cnonce of
    /// the first request after the challenge, and keeps it for the next
    /// requests with the same nonce (each with its own cnonce in the
    /// response). Recomputed here from the formula; the verifier agrees.
    #[test]
    fn rfc7616_3_4_2_sess_a1_keeps_the_first_cnonce() {
        let mut rng = rng();
        let now = epoch();
        let lookup = |_: &str| Some(Secret::new("zanzibar"));
        let req = request(Method::Register, "sip:biloxi.com", b"");
        let mut server = DigestVerifier::new(ChallengeKind::Server, "biloxi.com", &mut rng)
            .with_algorithms([Algorithm::SHA_256_SESS]);
        let challenge = server
            .add_challenge(
                Message::response_to(&req, 401, "Unauthorized").unwrap(),
                now,
                false,
                &mut rng,
            )
            .unwrap()
            .build()
            .unwrap();
        let mut client = DigestClient::new("bob", "zanzibar");
        let mut first = req.clone();
        for c in client.handle_challenge(&challenge, &req, &mut rng).unwrap() {
            c.add_to(&mut first).unwrap();
        }
        assert!(server.verify(now, &first, lookup).is_authorized());
        let mut second = req.clone();
        client.authorize_request(&mut second, &mut rng).unwrap();
        assert!(server.verify(now, &second, lookup).is_authorized());

        let param = |m: &Message, name: &str| {
            m.authorization()
                .next()
                .unwrap()
                .unwrap()
                .param(name)
                .unwrap()
                .into_owned()
        };
        let (nonce, cnonce1, cnonce2) = (
            param(&first, "nonce"),
            param(&first, "cnonce"),
            param(&second, "cnonce"),
        );
        assert_ne!(cnonce1, cnonce2);
        let sha = DigestHash::Sha256;
        let secret = h(sha, &[b"bob", b"biloxi.com", b"zanzibar"]);
        let ha1 = h(
            sha,
            &[secret.as_bytes(), nonce.as_bytes(), cnonce1.as_bytes()],
        );
        let ha2 = h(sha, &[b"REGISTER", b"sip:biloxi.com"]);
        let expected = h(
            sha,
            &[
                ha1.as_bytes(),
                nonce.as_bytes(),
                b"00000002",
                cnonce2.as_bytes(),
                b"auth",
                ha2.as_bytes(),
            ],
        );
        assert_eq!(param(&second, "response"), expected);
    }

    #[test]
    fn rfc7616_3_4_3_auth_int_covers_the_body() {
        let mut rng = rng();
        let now = epoch();
        let req = request(
            Method::Invite,
            "sip:bob@biloxi.com",
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n",
        );
        let mut server = DigestVerifier::new(ChallengeKind::Server, "biloxi.com", &mut rng)
            .with_algorithms([Algorithm::SHA_256])
            .with_qop([Qop::Auth, Qop::AuthInt]);
        let resp = server
            .add_challenge(
                Message::response_to(&req, 401, "Unauthorized").unwrap(),
                now,
                false,
                &mut rng,
            )
            .unwrap()
            .build()
            .unwrap();
        let lookup = |u: &str| (u == "bob").then(|| Secret::new("zanzibar"));

        // auth is chosen when both are offered, unless auth-int is preferred.
        let plain = DigestClient::new("bob", "zanzibar")
            .handle_challenge(&resp, &req, &mut rng)
            .unwrap();
        assert_eq!(param(plain[0].value(), "qop"), "auth");
        let mut client = DigestClient::new("bob", "zanzibar").with_preferred_qop(Qop::AuthInt);
        let creds = client.handle_challenge(&resp, &req, &mut rng).unwrap();
        assert_eq!(param(creds[0].value(), "qop"), "auth-int");
        let mut retry = req.clone();
        creds[0].add_to(&mut retry).unwrap();
        assert!(server.verify(now, &retry, lookup).is_authorized());

        // The same credentials on a changed body do not verify.
        let mut tampered = req.clone();
        creds[0].add_to(&mut tampered).unwrap();
        tampered
            .set_body(
                Some("application/sdp"),
                bytes::Bytes::from_static(b"v=0\r\n"),
            )
            .unwrap();
        assert_eq!(
            server.verify(now, &tampered, lookup),
            Verification::Rejected {
                reason: RejectReason::WrongResponse
            }
        );

        // Against the formula, step by step: HA2 = H(method:uri:H(body)).
        let sha = |s: &str| hex(&Sha256::digest(s.as_bytes()));
        let ha1 = sha("bob:biloxi.com:zanzibar");
        let body_hash = hex(&Sha256::digest(req.body()));
        let ha2 = sha(&format!("INVITE:sip:bob@biloxi.com:{body_hash}"));
        let nonce = param(creds[0].value(), "nonce");
        let cnonce = param(creds[0].value(), "cnonce");
        assert_eq!(
            param(creds[0].value(), "response"),
            sha(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth-int:{ha2}"))
        );
    }

    #[test]
    fn rfc7616_3_3_verifier_rejects_wrong_password_and_unknown_user() {
        let mut rng = rng();
        let now = epoch();
        let req = request(Method::Register, "sip:biloxi.com", b"");
        let mut server = DigestVerifier::new(ChallengeKind::Server, "biloxi.com", &mut rng);
        assert_eq!(server.verify(now, &req, |_| None), Verification::Missing);
        let resp = server
            .add_challenge(
                Message::response_to(&req, 401, "Unauthorized").unwrap(),
                now,
                false,
                &mut rng,
            )
            .unwrap()
            .build()
            .unwrap();
        for (user, password, expected) in [
            (
                "bob",
                "wrong",
                Verification::Rejected {
                    reason: RejectReason::WrongResponse,
                },
            ),
            (
                "eve",
                "zanzibar",
                Verification::Rejected {
                    reason: RejectReason::UnknownUser,
                },
            ),
        ] {
            let mut retry = req.clone();
            for c in DigestClient::new(user, password)
                .handle_challenge(&resp, &req, &mut rng)
                .unwrap()
            {
                c.add_to(&mut retry).unwrap();
            }
            let verdict = server.verify(now, &retry, |u| {
                (u == "bob").then(|| Secret::new("zanzibar"))
            });
            assert_eq!(verdict, expected, "{user}");
        }

        // Tampered fields.
        let mut retry = req.clone();
        let creds = DigestClient::new("bob", "zanzibar")
            .handle_challenge(&resp, &req, &mut rng)
            .unwrap();
        creds[0].add_to(&mut retry).unwrap();
        let value = creds[0].value();
        let lookup = |u: &str| (u == "bob").then(|| Secret::new("zanzibar"));
        for (from, to, reason) in [
            (
                "uri=\"sip:biloxi.com\"",
                "uri=\"sip:other.com\"",
                RejectReason::UriMismatch,
            ),
            ("opaque=\"", "opaque=\"x", RejectReason::OpaqueMismatch),
            (
                "algorithm=SHA-512-256",
                "algorithm=SHA-1",
                RejectReason::UnsupportedAlgorithm,
            ),
            ("qop=auth", "qop=auth-int", RejectReason::UnsupportedQop),
            ("nc=00000001", "nc=1", RejectReason::Malformed),
        ] {
            let mut bad = req.clone();
            bad.push_header("Authorization", &value.replace(from, to))
                .unwrap();
            assert_eq!(
                server.verify(now, &bad, lookup),
                Verification::Rejected { reason },
                "{from}"
            );
        }
        // Credentials for another realm are not ours to judge.
        let mut elsewhere = req.clone();
        elsewhere
            .push_header(
                "Authorization",
                &value.replace("realm=\"biloxi.com\"", "realm=\"x\""),
            )
            .unwrap();
        assert_eq!(
            server.verify(now, &elsewhere, lookup),
            Verification::Missing
        );
        // A nonce the server never issued, with a right response: stale.
        let mut forged_nonce = DigestClient::new("bob", "zanzibar");
        let fake = challenge_response(
            &req,
            401,
            &[&server.challenge_value("0123", Algorithm::SHA_512_256, false)],
        );
        let mut retry = req.clone();
        for c in forged_nonce
            .handle_challenge(&fake, &req, &mut rng)
            .unwrap()
        {
            c.add_to(&mut retry).unwrap();
        }
        assert_eq!(server.verify(now, &retry, lookup), Verification::Stale);
    }

    #[test]
    fn rfc7616_3_3_only_unknown_algorithms_is_a_typed_error() {
        let req = request(Method::Register, "sip:biloxi.com", b"");
        let resp = challenge_response(
            &req,
            401,
            &[
                "Digest realm=\"biloxi.com\", nonce=\"n\", algorithm=SHA-1, qop=auth",
                "Digest realm=\"biloxi.com\", nonce=\"n\", algorithm=AKAv1-MD5, qop=auth",
            ],
        );
        assert_eq!(
            DigestClient::new("bob", "z").handle_challenge(&resp, &req, &mut rng()),
            Err(AuthError::UnsupportedAlgorithm {
                algorithm: "SHA-1".into()
            })
        );
    }

    #[test]
    fn malformed_challenges_are_typed_errors_not_panics() {
        let req = request(Method::Register, "sip:biloxi.com", b"");
        let cases: [(&[&str], AuthError); 6] = [
            (&["Basic realm=\"x\""], AuthError::NoDigestChallenge),
            (&[], AuthError::NoDigestChallenge),
            (
                &["Digest nonce=\"n\""],
                AuthError::MissingParameter { name: "realm" },
            ),
            (
                &["Digest realm=\"r\""],
                AuthError::MissingParameter { name: "nonce" },
            ),
            (
                &["Digest realm=\"r\", nonce=\"n\", qop=\"foo,bar\""],
                AuthError::UnsupportedQop {
                    qop: "foo,bar".into(),
                },
            ),
            (
                &["Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess"],
                AuthError::MissingParameter { name: "qop" },
            ),
        ];
        for (headers, expected) in cases {
            let resp = challenge_response(&req, 401, headers);
            assert_eq!(
                DigestClient::new("bob", "z").handle_challenge(&resp, &req, &mut rng()),
                Err(expected),
                "{headers:?}"
            );
        }
        // A header that does not parse at all (the parser accepts the
        // message; the typed value is checked on access).
        let raw = format!(
            "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1\r\n\
             From: <sip:bob@biloxi.com>;tag=f1\r\nTo: <sip:bob@biloxi.com>;tag=t\r\n\
             Call-ID: c\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: {}\r\nContent-Length: 0\r\n\r\n",
            "Digest realm=\"open"
        );
        let resp = Message::parse(raw.into_bytes()).unwrap();
        assert!(matches!(
            DigestClient::new("bob", "z").handle_challenge(&resp, &req, &mut rng()),
            Err(AuthError::Malformed(_))
        ));
        // Not a challenge, not a request.
        let ok = Message::response_to(&req, 200, "OK")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            DigestClient::new("bob", "z").handle_challenge(&ok, &req, &mut rng()),
            Err(AuthError::NotAChallenge { status: Some(200) })
        );
        let resp = challenge_response(&req, 401, &["Digest realm=\"r\", nonce=\"n\""]);
        assert_eq!(
            DigestClient::new("bob", "z").handle_challenge(&resp, &resp, &mut rng()),
            Err(AuthError::NotARequest)
        );
        let mut not_req = resp;
        assert_eq!(
            DigestClient::new("bob", "z").authorize_request(&mut not_req, &mut rng()),
            Err(AuthError::NotARequest)
        );
    }

    #[test]
    fn verifier_bounds_its_nonces() {
        let mut rng = rng();
        let now = epoch();
        let mut server =
            DigestVerifier::new(ChallengeKind::Server, "r\r\n", &mut rng).with_max_nonces(2);
        assert_eq!(server.realm(), "r");
        for k in 0..5 {
            server.challenge(now + Duration::from_secs(k), false, &mut rng);
        }
        assert_eq!(server.nonces.len(), 2);
        server.challenge(now + Duration::from_secs(1000), true, &mut rng);
        assert_eq!(server.nonces.len(), 1, "expired nonces pruned");
        assert!(
            server
                .challenge(now + Duration::from_secs(1000), true, &mut rng)
                .iter()
                .all(|v| v.ends_with(", stale=true"))
        );
    }

    #[test]
    fn rfc7616_3_4_nonce_count_window() {
        let mut s = NonceState {
            issued: epoch(),
            highest_nc: 0,
            seen: 0,
            session_cnonce: None,
        };
        assert!(!accept_nc(&mut s, 0));
        assert!(accept_nc(&mut s, 1));
        assert!(accept_nc(&mut s, 3));
        assert!(accept_nc(&mut s, 2), "out of order but new");
        assert!(!accept_nc(&mut s, 2));
        assert!(!accept_nc(&mut s, 1));
        assert!(accept_nc(&mut s, 100));
        assert!(!accept_nc(&mut s, 3), "older than the window");
        assert!(accept_nc(&mut s, 99));
        assert!(accept_nc(&mut s, u32::MAX));
        assert_eq!(parse_nc("0000000a"), Some(10));
        assert_eq!(parse_nc("+0000000"), None);
        assert_eq!(parse_nc("000000001"), None);
    }
}
