//! Methods and header names.

use std::fmt;

/// A SIP method. Methods are case-sensitive (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE (RFC 3261)
    Invite,
    /// ACK (RFC 3261)
    Ack,
    /// BYE (RFC 3261)
    Bye,
    /// CANCEL (RFC 3261)
    Cancel,
    /// OPTIONS (RFC 3261)
    Options,
    /// REGISTER (RFC 3261)
    Register,
    /// PRACK (RFC 3262)
    Prack,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// PUBLISH (RFC 3903)
    Publish,
    /// INFO (RFC 6086)
    Info,
    /// REFER (RFC 3515)
    Refer,
    /// MESSAGE (RFC 3428)
    Message,
    /// UPDATE (RFC 3311)
    Update,
    /// Any other token.
    Extension(Box<str>),
}

impl Method {
    /// Classifies a method token; the caller has checked it is a token.
    pub fn from_token(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "UPDATE" => Method::Update,
            other => Method::Extension(other.into()),
        }
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Update => "UPDATE",
            Method::Extension(s) => s,
        }
    }

    /// Whether the token equals this method (byte for byte).
    pub(crate) fn matches(&self, token: &[u8]) -> bool {
        self.as_str().as_bytes() == token
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! header_names {
    ($( $variant:ident => $canonical:literal, $lower:literal $(, $compact:literal)? ; )*) => {
        /// A header field name. Known names are recognised case-insensitively and in
        /// their compact forms (RFC 3261 §7.3.3); others are [`HeaderName::Other`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum HeaderName {
            $(
                #[doc = concat!("`", $canonical, "`")]
                $variant,
            )*
            /// A header this crate does not know; compare its written name.
            Other,
        }

        impl HeaderName {
            /// The canonical spelling, or `None` for [`HeaderName::Other`].
            pub fn canonical(self) -> Option<&'static str> {
                match self {
                    $( HeaderName::$variant => Some($canonical), )*
                    HeaderName::Other => None,
                }
            }

            /// Recognises a header name (full or compact, any case).
            #[inline]
            pub fn from_bytes(name: &[u8]) -> HeaderName {
                if name.len() == 1 {
                    return match name[0].to_ascii_lowercase() {
                        $( $( $compact => HeaderName::$variant, )? )*
                        _ => HeaderName::Other,
                    };
                }
                let Some(&(from, to)) = BY_LENGTH.get(name.len()) else {
                    return HeaderName::Other;
                };
                let key = NameKey::read(name).lowercase();
                for known in &KNOWN[from as usize..to as usize] {
                    if known.0 == key {
                        return known.1;
                    }
                }
                HeaderName::Other
            }

            /// [`HeaderName::from_bytes`] for a name the parser has checked
            /// is a token: setting bit 5 lowers its letters and changes
            /// nothing that could make it equal a known name.
            #[inline]
            pub(crate) fn from_token_bytes(name: &[u8]) -> HeaderName {
                if name.len() == 1 {
                    return Self::from_bytes(name);
                }
                let Some(&(from, to)) = BY_LENGTH.get(name.len()) else {
                    return HeaderName::Other;
                };
                const BIT5: u64 = 0x2020_2020_2020_2020;
                let NameKey(head, mid, tail) = NameKey::read(name);
                let key = NameKey(head | BIT5, mid | BIT5, tail | BIT5);
                for known in &KNOWN_BIT5[from as usize..to as usize] {
                    if known.0 == key {
                        return known.1;
                    }
                }
                HeaderName::Other
            }
        }

        /// Every full name in lower case with its variant.
        const NAMES: &[(&[u8], HeaderName)] = &[ $( ($lower, HeaderName::$variant), )* ];
    };
}

/// A name condensed to at most three words read at fixed places (the first,
/// middle and last eight bytes, overlapping for short names), so a name
/// compares in a few instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameKey(u64, u64, u64);

impl NameKey {
    const fn of(n: &[u8]) -> NameKey {
        const fn word(n: &[u8], at: usize, width: usize) -> u64 {
            let mut w = 0u64;
            let mut i = 0;
            while i < width {
                w |= (n[at + i] as u64) << (8 * i);
                i += 1;
            }
            w
        }
        let len = n.len();
        let width = if len >= 8 {
            8
        } else if len >= 4 {
            4
        } else if len >= 2 {
            2
        } else {
            len
        };
        let mid = if len > 16 { word(n, 8, 8) } else { 0 };
        NameKey(word(n, 0, width), mid, word(n, len - width, width))
    }

    /// [`NameKey::of`] with whole-word loads.
    #[inline]
    fn read(n: &[u8]) -> NameKey {
        if let (Some(head), Some(tail)) = (n.first_chunk::<8>(), n.last_chunk::<8>()) {
            let mid = match n.get(8..16) {
                Some(m) if n.len() > 16 => {
                    m.first_chunk::<8>().map_or(0, |m| u64::from_le_bytes(*m))
                }
                _ => 0,
            };
            return NameKey(u64::from_le_bytes(*head), mid, u64::from_le_bytes(*tail));
        }
        if let (Some(head), Some(tail)) = (n.first_chunk::<4>(), n.last_chunk::<4>()) {
            return NameKey(
                u64::from(u32::from_le_bytes(*head)),
                0,
                u64::from(u32::from_le_bytes(*tail)),
            );
        }
        if let (Some(head), Some(tail)) = (n.first_chunk::<2>(), n.last_chunk::<2>()) {
            return NameKey(
                u64::from(u16::from_le_bytes(*head)),
                0,
                u64::from(u16::from_le_bytes(*tail)),
            );
        }
        NameKey::of(n)
    }

    /// ASCII lower case of every byte, eight at a time.
    #[inline]
    fn lowercase(self) -> NameKey {
        const fn lower(x: u64) -> u64 {
            const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
            const HIGH: u64 = 0x8080_8080_8080_8080;
            let heptets = x & LOW7;
            let at_least_a = heptets + 0x3f3f_3f3f_3f3f_3f3f;
            let beyond_z = heptets + 0x2525_2525_2525_2525;
            let upper = at_least_a & !beyond_z & !x & HIGH;
            x | (upper >> 2)
        }
        NameKey(lower(self.0), lower(self.1), lower(self.2))
    }
}

/// Longest known full name.
const MAX_NAME: usize = 24;

/// [`NAMES`] as keys, ordered by length.
static KNOWN: [(NameKey, HeaderName); NAMES.len()] = {
    let mut out = [(NameKey(0, 0, 0), HeaderName::Other); NAMES.len()];
    let mut k = 0;
    let mut len = 0;
    while len <= MAX_NAME {
        let mut i = 0;
        while i < NAMES.len() {
            if NAMES[i].0.len() == len {
                out[k] = (NameKey::of(NAMES[i].0), NAMES[i].1);
                k += 1;
            }
            i += 1;
        }
        len += 1;
    }
    assert!(
        k == NAMES.len(),
        "a known header name is longer than MAX_NAME"
    );
    out
};

/// [`KNOWN`] with bit 5 set in every byte of the key, padding included.
static KNOWN_BIT5: [(NameKey, HeaderName); NAMES.len()] = {
    const BIT5: u64 = 0x2020_2020_2020_2020;
    let mut out = KNOWN;
    let mut i = 0;
    while i < out.len() {
        let NameKey(h, m, t) = out[i].0;
        out[i].0 = NameKey(h | BIT5, m | BIT5, t | BIT5);
        i += 1;
    }
    out
};

/// For each name length, the range of [`KNOWN`] holding names that long.
static BY_LENGTH: [(u8, u8); MAX_NAME + 1] = {
    let mut out = [(0u8, 0u8); MAX_NAME + 1];
    let mut start = 0;
    let mut len = 0;
    while len <= MAX_NAME {
        let mut count = 0;
        let mut i = 0;
        while i < NAMES.len() {
            if NAMES[i].0.len() == len {
                count += 1;
            }
            i += 1;
        }
        out[len] = (start as u8, (start + count) as u8);
        start += count;
        len += 1;
    }
    out
};

header_names! {
    Via => "Via", b"via", b'v';
    From => "From", b"from", b'f';
    To => "To", b"to", b't';
    CallId => "Call-ID", b"call-id", b'i';
    CSeq => "CSeq", b"cseq";
    MaxForwards => "Max-Forwards", b"max-forwards";
    Contact => "Contact", b"contact", b'm';
    ContentLength => "Content-Length", b"content-length", b'l';
    ContentType => "Content-Type", b"content-type", b'c';
    ContentEncoding => "Content-Encoding", b"content-encoding", b'e';
    Route => "Route", b"route";
    RecordRoute => "Record-Route", b"record-route";
    Expires => "Expires", b"expires";
    MinExpires => "Min-Expires", b"min-expires";
    WwwAuthenticate => "WWW-Authenticate", b"www-authenticate";
    Authorization => "Authorization", b"authorization";
    ProxyAuthenticate => "Proxy-Authenticate", b"proxy-authenticate";
    ProxyAuthorization => "Proxy-Authorization", b"proxy-authorization";
    Allow => "Allow", b"allow";
    Supported => "Supported", b"supported", b'k';
    Require => "Require", b"require";
    ProxyRequire => "Proxy-Require", b"proxy-require";
    Unsupported => "Unsupported", b"unsupported";
    Event => "Event", b"event", b'o';
    AllowEvents => "Allow-Events", b"allow-events", b'u';
    SubscriptionState => "Subscription-State", b"subscription-state";
    ReferTo => "Refer-To", b"refer-to", b'r';
    ReferredBy => "Referred-By", b"referred-by", b'b';
    Replaces => "Replaces", b"replaces";
    SessionExpires => "Session-Expires", b"session-expires", b'x';
    MinSe => "Min-SE", b"min-se";
    PAssertedIdentity => "P-Asserted-Identity", b"p-asserted-identity";
    Subject => "Subject", b"subject", b's';
    Path => "Path", b"path";
    ServiceRoute => "Service-Route", b"service-route";
    UserAgent => "User-Agent", b"user-agent";
    Server => "Server", b"server";
    RetryAfter => "Retry-After", b"retry-after";
    Reason => "Reason", b"reason";
    Timestamp => "Timestamp", b"timestamp";
}

impl HeaderName {
    /// Whether the header's grammar is a comma-separated list, so several
    /// values may share one line (RFC 3261 §7.3.1).
    #[inline]
    pub fn is_list(self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Allow
                | HeaderName::Supported
                | HeaderName::Require
                | HeaderName::ProxyRequire
                | HeaderName::Unsupported
                | HeaderName::AllowEvents
                | HeaderName::PAssertedIdentity
                | HeaderName::Path
                | HeaderName::ServiceRoute
                | HeaderName::ContentEncoding
                | HeaderName::Reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3261_7_3_3_compact_forms_and_case() {
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"I"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"cAlL-iD"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"x-custom"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"q"), HeaderName::Other);
        assert_eq!(HeaderName::CallId.canonical(), Some("Call-ID"));
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::from_token("INVITE"), Method::Invite);
        assert_eq!(
            Method::from_token("invite"),
            Method::Extension("invite".into())
        );
    }
}
