//! HTTP authentication: parsing `WWW-Authenticate` challenges (RFC 9110
//! §11) and answering them with Basic (RFC 7617) or Digest (RFC 7616: MD5,
//! SHA-256 and their `-sess` forms; `qop=auth`, or no qop for RFC 2069
//! servers; `userhash`). Pure: the client nonce is an argument.

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha2::Sha256;

/// One challenge: the scheme (lower-cased) and its parameters (names
/// lower-cased, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) scheme: String,
    pub(crate) params: HashMap<String, String>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Every challenge in the given `WWW-Authenticate` field values, in order.
pub(crate) fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for value in values {
        let mut lexer = Lexer {
            text: value.as_bytes(),
            pos: 0,
        };
        // Each round consumes at least one byte, so this ends.
        while lexer.pos < lexer.text.len() {
            lexer.skip_separators();
            let Some(scheme) = lexer.token() else {
                lexer.pos += 1;
                continue;
            };
            let mut params = HashMap::new();
            loop {
                let save = lexer.pos;
                lexer.skip_separators();
                let Some(name) = lexer.token() else {
                    lexer.pos = save;
                    break;
                };
                lexer.skip_spaces();
                if lexer.peek() != Some(b'=') {
                    lexer.pos = save;
                    break;
                }
                lexer.pos += 1;
                lexer.skip_spaces();
                let value = if lexer.peek() == Some(b'"') {
                    lexer.quoted()
                } else {
                    lexer.token68().unwrap_or_default()
                };
                params.insert(name.to_ascii_lowercase(), value);
            }
            out.push(Challenge {
                scheme: scheme.to_ascii_lowercase(),
                params,
            });
        }
    }
    out
}

struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, accept: impl Fn(u8) -> bool) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(&accept) {
            self.pos += 1;
        }
        (self.pos > start)
            .then(|| String::from_utf8_lossy(&self.text[start..self.pos]).into_owned())
    }

    fn token(&mut self) -> Option<String> {
        self.take_while(is_tchar)
    }

    fn token68(&mut self) -> Option<String> {
        self.take_while(|b| is_tchar(b) || matches!(b, b'/' | b'=' | b'+'))
    }

    fn quoted(&mut self) -> String {
        self.pos += 1; // opening quote
        let mut value = Vec::new();
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(escaped) = self.peek() {
                        value.push(escaped);
                        self.pos += 1;
                    }
                }
                b => value.push(b),
            }
        }
        String::from_utf8_lossy(&value).into_owned()
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A Digest hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Md5,
    Sha256,
}

impl Hash {
    fn hex(self, text: &str) -> String {
        match self {
            Self::Md5 => hex(&Md5::digest(text.as_bytes())),
            Self::Sha256 => hex(&Sha256::digest(text.as_bytes())),
        }
    }
}

/// A Digest challenge this client can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DigestChallenge {
    realm: String,
    nonce: String,
    opaque: Option<String>,
    algorithm: String,
    hash: Hash,
    session: bool,
    qop_auth: bool,
    userhash: bool,
    /// The server says the nonce expired, not the credentials failed.
    pub(crate) stale: bool,
}

impl DigestChallenge {
    /// The challenge as a Digest this client supports, or `None`.
    pub(crate) fn from_challenge(challenge: &Challenge) -> Option<Self> {
        if challenge.scheme != "digest" {
            return None;
        }
        let algorithm = challenge.param("algorithm").unwrap_or("MD5");
        let (hash, session) = match algorithm.to_ascii_uppercase().as_str() {
            "MD5" => (Hash::Md5, false),
            "MD5-SESS" => (Hash::Md5, true),
            "SHA-256" => (Hash::Sha256, false),
            "SHA-256-SESS" => (Hash::Sha256, true),
            _ => return None,
        };
        let qop_auth = match challenge.param("qop") {
            None => false,
            Some(qop) => {
                if !qop
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth"))
                {
                    return None; // auth-int only
                }
                true
            }
        };
        // RFC 2069 had neither qop nor -sess; a -sess without qop is not defined.
        if session && !qop_auth {
            return None;
        }
        Some(Self {
            realm: challenge.param("realm")?.to_owned(),
            nonce: challenge.param("nonce")?.to_owned(),
            opaque: challenge.param("opaque").map(str::to_owned),
            algorithm: algorithm.to_owned(),
            hash,
            session,
            qop_auth,
            userhash: challenge
                .param("userhash")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            stale: challenge
                .param("stale")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        })
    }

    /// Preference among challenges: SHA-256 before MD5 (RFC 7616 §3.7).
    fn strength(&self) -> u8 {
        match self.hash {
            Hash::Sha256 => 2,
            Hash::Md5 => 1,
        }
    }

    /// The `Authorization` value for `method` on `uri` (the request target,
    /// path and query) with client nonce `cnonce` and nonce count 1.
    pub(crate) fn authorization(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> String {
        let h = |text: &str| self.hash.hex(text);
        let nc = "00000001";
        let mut ha1 = h(&format!("{user}:{}:{password}", self.realm));
        if self.session {
            ha1 = h(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = h(&format!("{method}:{uri}"));
        let response = if self.qop_auth {
            h(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            h(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let username = if self.userhash {
            h(&format!("{user}:{}", self.realm))
        } else {
            user.to_owned()
        };
        let mut out = format!(
            "Digest username={}, realm={}, uri={}, algorithm={}, nonce={}",
            quote(&username),
            quote(&self.realm),
            quote(uri),
            self.algorithm,
            quote(&self.nonce),
        );
        if self.qop_auth {
            let _ = write!(out, ", qop=auth, nc={nc}, cnonce={}", quote(cnonce));
        }
        let _ = write!(out, ", response={}", quote(&response));
        if let Some(opaque) = &self.opaque {
            let _ = write!(out, ", opaque={}", quote(opaque));
        }
        if self.userhash {
            out.push_str(", userhash=true");
        }
        out
    }
}

/// What to answer a 401 with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Digest(DigestChallenge),
    Basic,
}

/// The strongest challenge this client can answer: Digest (SHA-256, then
/// MD5) before Basic.
pub(crate) fn choose(challenges: &[Challenge]) -> Option<Answer> {
    let digest = challenges
        .iter()
        .filter_map(DigestChallenge::from_challenge)
        .max_by_key(DigestChallenge::strength);
    if let Some(digest) = digest {
        return Some(Answer::Digest(digest));
    }
    challenges
        .iter()
        .any(|c| c.scheme == "basic")
        .then_some(Answer::Basic)
}

/// The `Authorization` value for Basic (UTF-8 user and password).
pub(crate) fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc7616(algorithm: &str) -> DigestChallenge {
        let header = format!(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
        );
        let challenges = parse_challenges([header.as_str()]);
        DigestChallenge::from_challenge(&challenges[0]).unwrap()
    }

    fn response_of(authorization: &str) -> String {
        let challenge = parse_challenges([authorization]).remove(0);
        challenge.params["response"].clone()
    }

    #[test]
    fn rfc7616_3_9_1_md5_and_sha256_examples() {
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let md5 = rfc7616("MD5").authorization(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            cnonce,
        );
        assert_eq!(response_of(&md5), "8ca523f5e9506fed4657c9700eebdbec");
        let sha = rfc7616("SHA-256").authorization(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            cnonce,
        );
        assert_eq!(
            response_of(&sha),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert!(sha.contains("qop=auth, nc=00000001"));
        assert!(sha.contains("opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""));
    }

    #[test]
    fn rfc2617_3_5_without_session_and_rfc2069_without_qop() {
        // RFC 2617 §3.5: Mufasa, realm testrealm@host.com.
        let header = r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let challenge = DigestChallenge::from_challenge(&parse_challenges([header])[0]).unwrap();
        let value = challenge.authorization(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
        );
        assert_eq!(response_of(&value), "6629fae49393a05397450978507c4ef1");
        // Without qop the response is H(HA1:nonce:HA2).
        let header = r#"Digest realm="r", nonce="n""#;
        let legacy = DigestChallenge::from_challenge(&parse_challenges([header])[0]).unwrap();
        let value = legacy.authorization("u", "p", "GET", "/", "c");
        let ha1 = Hash::Md5.hex("u:r:p");
        let ha2 = Hash::Md5.hex("GET:/");
        assert_eq!(
            response_of(&value),
            Hash::Md5.hex(&format!("{ha1}:n:{ha2}"))
        );
        assert!(!value.contains("qop"));
    }

    #[test]
    fn several_challenges_in_one_field_and_the_strongest_is_chosen() {
        let challenges = parse_challenges([
            r#"Basic realm="x", Digest realm="r", nonce="a", algorithm=MD5, qop="auth""#,
            r#"Digest realm="r", nonce="b", algorithm=SHA-256, qop="auth", Newauth realm="z""#,
        ]);
        let schemes: Vec<_> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "digest", "digest", "newauth"]);
        match choose(&challenges) {
            Some(Answer::Digest(d)) => assert_eq!((d.hash, d.nonce.as_str()), (Hash::Sha256, "b")),
            other => panic!("{other:?}"),
        }
        let basic_only = parse_challenges([r#"Basic realm="x", charset="UTF-8""#]);
        assert_eq!(choose(&basic_only), Some(Answer::Basic));
        assert_eq!(
            basic("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn unsupported_digests_are_not_chosen() {
        let challenges = parse_challenges([
            r#"Digest realm="r", nonce="a", algorithm=SHA-512-256, qop="auth""#,
            r#"Digest realm="r", nonce="a", qop="auth-int""#,
            r#"Bearer realm="r""#,
        ]);
        assert_eq!(choose(&challenges), None);
    }

    #[test]
    fn userhash_and_session_and_stale() {
        let header = r#"Digest realm="r", nonce="n", algorithm=SHA-256-sess, qop=auth, userhash=true, stale=TRUE"#;
        let challenge = DigestChallenge::from_challenge(&parse_challenges([header])[0]).unwrap();
        assert!(challenge.stale && challenge.session && challenge.userhash);
        let value = challenge.authorization("user", "pw", "GET", "/p?q=1", "cn");
        let parsed = parse_challenges([value.as_str()]).remove(0);
        assert_eq!(parsed.params["username"], Hash::Sha256.hex("user:r"));
        assert_eq!(parsed.params["uri"], "/p?q=1");
        let ha1 = Hash::Sha256.hex(&format!("{}:n:cn", Hash::Sha256.hex("user:r:pw")));
        let ha2 = Hash::Sha256.hex("GET:/p?q=1");
        assert_eq!(
            parsed.params["response"],
            Hash::Sha256.hex(&format!("{ha1}:n:00000001:cn:auth:{ha2}"))
        );
    }

    #[test]
    fn quotes_in_values_are_escaped() {
        let header = r#"Digest realm="a \"quoted\" realm", nonce="n", qop=auth"#;
        let challenge = DigestChallenge::from_challenge(&parse_challenges([header])[0]).unwrap();
        assert_eq!(challenge.realm, "a \"quoted\" realm");
        let value = challenge.authorization("us\"er", "p", "GET", "/", "c");
        assert!(value.contains(r#"username="us\"er""#));
        assert_eq!(
            parse_challenges([value.as_str()])[0].params["username"],
            "us\"er"
        );
    }

    #[test]
    fn garbage_does_not_loop_or_panic() {
        for input in [
            "",
            ",,,",
            "=",
            "\"",
            "Digest =\"",
            "Digest a=\"unterminated",
            "é ü",
        ] {
            let _ = parse_challenges([input]);
        }
    }
}
