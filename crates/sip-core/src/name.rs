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
    ($( $variant:ident => $canonical:literal $(, $compact:literal)? ; )*) => {
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
                $( if name.len() == $canonical.len() && name.eq_ignore_ascii_case($canonical.as_bytes()) {
                    return HeaderName::$variant;
                } )*
                HeaderName::Other
            }
        }
    };
}

header_names! {
    Via => "Via", b'v';
    From => "From", b'f';
    To => "To", b't';
    CallId => "Call-ID", b'i';
    CSeq => "CSeq";
    MaxForwards => "Max-Forwards";
    Contact => "Contact", b'm';
    ContentLength => "Content-Length", b'l';
    ContentType => "Content-Type", b'c';
    ContentEncoding => "Content-Encoding", b'e';
    Route => "Route";
    RecordRoute => "Record-Route";
    Expires => "Expires";
    MinExpires => "Min-Expires";
    WwwAuthenticate => "WWW-Authenticate";
    Authorization => "Authorization";
    ProxyAuthenticate => "Proxy-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    Allow => "Allow";
    Supported => "Supported", b'k';
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Unsupported => "Unsupported";
    Event => "Event", b'o';
    AllowEvents => "Allow-Events", b'u';
    SubscriptionState => "Subscription-State";
    ReferTo => "Refer-To", b'r';
    ReferredBy => "Referred-By", b'b';
    Replaces => "Replaces";
    SessionExpires => "Session-Expires", b'x';
    MinSe => "Min-SE";
    PAssertedIdentity => "P-Asserted-Identity";
    Subject => "Subject", b's';
    Path => "Path";
    ServiceRoute => "Service-Route";
    UserAgent => "User-Agent";
    Server => "Server";
    RetryAfter => "Retry-After";
    Timestamp => "Timestamp";
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
