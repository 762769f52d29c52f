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
            pub fn from_bytes(name: &[u8]) -> HeaderName {
                if name.len() == 1 {
                    let c = name[0].to_ascii_lowercase();
                    $( $( if c == $compact { return HeaderName::$variant; } )? )*
                    return HeaderName::Other;
                }
                let mut lower = [0u8; 24];
                if name.len() > lower.len() {
                    return HeaderName::Other;
                }
                for (l, c) in lower.iter_mut().zip(name) {
                    *l = c.to_ascii_lowercase();
                }
                match &lower[..name.len()] {
                    $( $lower => HeaderName::$variant, )*
                    _ => HeaderName::Other,
                }
            }
        }
    };
}

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
    Timestamp => "Timestamp", b"timestamp";
}

impl HeaderName {
    /// Whether the header's grammar is a comma-separated list, so several
    /// values may share one line (RFC 3261 §7.3.1).
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
