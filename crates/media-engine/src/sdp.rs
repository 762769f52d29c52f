//! Session descriptions (SDP, RFC 8866): parse and write.
//!
//! [`SessionDescription::parse`] takes untrusted text and returns either a
//! typed description or an [`SdpParseError`] naming the line that was
//! wrong; it never panics. Writing ([`fmt::Display`]) is the inverse:
//! `parse(write(d)) == d` for every description the parser produces.
//!
//! The attributes a softphone acts on are typed ([`Attribute`]): `rtpmap`,
//! `fmtp`, `ptime`, `maxptime`, the direction attributes, `rtcp-mux`,
//! `rtcp` (RFC 3605) and `crypto` (RFC 4568). Every other attribute is kept
//! as [`Attribute::Other`] with its name and value, in its place, so a
//! description survives a round trip through this crate.
//!
//! Offer/answer on top of this lives in [`crate::negotiation`].
//!
//! ```
//! use media_engine::sdp::{Direction, SessionDescription};
//!
//! let text = "v=0\r\n\
//!     o=alice 2890844526 2890844526 IN IP4 198.51.100.1\r\n\
//!     s=-\r\n\
//!     c=IN IP4 198.51.100.1\r\n\
//!     t=0 0\r\n\
//!     m=audio 49170 RTP/AVP 0 8 101\r\n\
//!     a=rtpmap:101 telephone-event/8000\r\n\
//!     a=fmtp:101 0-16\r\n\
//!     a=ptime:20\r\n\
//!     a=sendonly\r\n";
//! let sdp = SessionDescription::parse(text).unwrap();
//! let audio = &sdp.media[0];
//! assert_eq!(audio.port, 49170);
//! assert_eq!(audio.direction(), Direction::SendOnly);
//! assert_eq!(audio.rtpmap(101).unwrap().encoding, "telephone-event");
//! assert_eq!(sdp.to_string(), text);
//! ```

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use thiserror::Error;

/// Longest description [`SessionDescription::parse`] accepts, in bytes.
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// Most media sections [`SessionDescription::parse`] accepts.
pub const MAX_MEDIA_SECTIONS: usize = 64;

/// A whole session description (RFC 8866 §5).
///
/// Fields appear in the order the RFC writes them. The protocol version
/// (`v=`) is always 0 and is not stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription {
    /// `o=`: who made the description and its version.
    pub origin: Origin,
    /// `s=`: the session name (`-` when there is none).
    pub session_name: String,
    /// `i=`: session information.
    pub information: Option<String>,
    /// `u=`: a URI with more information.
    pub uri: Option<String>,
    /// `e=` lines.
    pub emails: Vec<String>,
    /// `p=` lines.
    pub phones: Vec<String>,
    /// `c=` at session level: the default for media sections without one.
    pub connection: Option<Connection>,
    /// `b=` lines at session level.
    pub bandwidths: Vec<Bandwidth>,
    /// `t=` lines (at least one) with their `r=` lines.
    pub timing: Vec<Timing>,
    /// `z=`: time-zone adjustments, kept verbatim.
    pub time_zones: Option<String>,
    /// `k=`: obsolete encryption key line, kept verbatim.
    pub encryption_key: Option<String>,
    /// `a=` lines at session level, in order.
    pub attributes: Vec<Attribute>,
    /// `m=` sections, in order.
    pub media: Vec<MediaDescription>,
}

/// The `o=` line (RFC 8866 §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The user name, `-` when there is none.
    pub username: String,
    /// A numeric session id, unique for the originating host.
    pub session_id: u64,
    /// The description's version: it grows when the description changes
    /// (RFC 3264 §8).
    pub session_version: u64,
    /// The address of the originating host.
    pub address: Address,
}

/// A unicast address or host name with its address type (`IP4`/`IP6`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// An IPv4 or IPv6 address; the address type follows from it.
    Ip(IpAddr),
    /// A fully qualified domain name.
    Name {
        /// The address type written before the name.
        address_type: AddressType,
        /// The host name.
        name: String,
    },
}

/// The SDP address type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressType {
    /// `IP4`
    Ip4,
    /// `IP6`
    Ip6,
}

/// A `c=` line (RFC 8866 §5.7).
///
/// For IPv4 multicast, `ttl` and then `count` follow the address; for
/// IPv6 only `count`. A `ttl` on an IPv6 address, or a `count` without a
/// `ttl` on an IPv4 address, is not written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The connection address.
    pub address: Address,
    /// Multicast time to live (IPv4 only).
    pub ttl: Option<u8>,
    /// Number of consecutive multicast addresses.
    pub count: Option<u32>,
}

/// A `b=` line (RFC 8866 §5.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bandwidth {
    /// The modifier (`CT`, `AS`, `TIAS`, ...).
    pub modifier: String,
    /// The value, in the modifier's unit.
    pub value: u64,
}

/// A `t=` line with its `r=` lines (RFC 8866 §5.9, §5.10).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Timing {
    /// Start time (NTP seconds), 0 for an unbounded session.
    pub start: u64,
    /// Stop time (NTP seconds), 0 for an unbounded session.
    pub stop: u64,
    /// `r=` lines, kept verbatim.
    pub repeats: Vec<String>,
}

/// One `m=` section (RFC 8866 §5.14) with its own lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDescription {
    /// The media type.
    pub kind: MediaKind,
    /// The transport port; 0 marks a disabled or rejected stream.
    pub port: u16,
    /// The number of ports (`port/count`), if given.
    pub port_count: Option<u16>,
    /// The transport protocol.
    pub protocol: Protocol,
    /// The formats: RTP payload type numbers for RTP protocols.
    pub formats: Vec<String>,
    /// `i=`: media title.
    pub information: Option<String>,
    /// `c=` for this section.
    pub connection: Option<Connection>,
    /// `b=` lines for this section.
    pub bandwidths: Vec<Bandwidth>,
    /// `k=`: obsolete encryption key line, kept verbatim.
    pub encryption_key: Option<String>,
    /// `a=` lines, in order.
    pub attributes: Vec<Attribute>,
}

/// The media type of an `m=` line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `audio`
    Audio,
    /// `video`
    Video,
    /// `text`
    Text,
    /// `application`
    Application,
    /// `message`
    Message,
    /// Any other token.
    Other(String),
}

/// The transport protocol of an `m=` line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `RTP/AVP` (RFC 3551)
    RtpAvp,
    /// `RTP/SAVP` (RFC 3711)
    RtpSavp,
    /// `RTP/AVPF` (RFC 4585)
    RtpAvpf,
    /// `RTP/SAVPF` (RFC 5124)
    RtpSavpf,
    /// Any other protocol, verbatim.
    Other(String),
}

/// A media direction attribute (RFC 8866 §6.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `sendrecv`, the default.
    #[default]
    SendRecv,
    /// `sendonly`
    SendOnly,
    /// `recvonly`
    RecvOnly,
    /// `inactive`
    Inactive,
}

/// An `a=` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribute {
    /// `a=rtpmap` (RFC 8866 §6.6).
    RtpMap(RtpMap),
    /// `a=fmtp` (RFC 8866 §6.15).
    Fmtp(Fmtp),
    /// `a=ptime`: milliseconds of media per packet (RFC 8866 §6.4).
    Ptime(u32),
    /// `a=maxptime`: most milliseconds per packet (RFC 8866 §6.5).
    MaxPtime(u32),
    /// A direction attribute.
    Direction(Direction),
    /// `a=rtcp-mux` (RFC 5761 §5.1.1).
    RtcpMux,
    /// `a=rtcp` (RFC 3605).
    Rtcp(RtcpAttribute),
    /// `a=crypto` (RFC 4568 §9.1).
    Crypto(CryptoAttribute),
    /// Any other attribute, verbatim.
    Other {
        /// The attribute name.
        name: String,
        /// The value after the first `:`, if any.
        value: Option<String>,
    },
}

/// `a=rtpmap:<payload type> <encoding>/<clock rate>[/<channels>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type the map is for.
    pub payload_type: u8,
    /// Encoding name, as written (compare case-insensitively).
    pub encoding: String,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Channel count for audio, if given.
    pub channels: Option<u16>,
}

/// `a=fmtp:<format> <parameters>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fmtp {
    /// The format the parameters are for.
    pub format: String,
    /// The parameters, verbatim.
    pub parameters: String,
}

/// `a=rtcp:<port> [IN <addrtype> <address>]` (RFC 3605 §2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtcpAttribute {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, if not the media address.
    pub address: Option<Address>,
}

/// `a=crypto:<tag> <suite> <key params> [<session params>]` (RFC 4568 §9.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag that names this line in offer/answer.
    pub tag: u32,
    /// The crypto suite.
    pub suite: CryptoSuite,
    /// One or more keys, separated by `;` on the wire.
    pub keys: Vec<KeyParams>,
    /// Session parameters, verbatim, in order.
    pub session_params: Vec<String>,
}

/// An SDES crypto suite name (RFC 4568 §6.2, RFC 7714 §12).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CryptoSuite {
    /// `AES_CM_128_HMAC_SHA1_80`
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`
    AesCm128HmacSha1_32,
    /// `AEAD_AES_128_GCM`
    AeadAes128Gcm,
    /// Any other suite, verbatim.
    Other(String),
}

/// One `inline:` key parameter of a crypto attribute (RFC 4568 §6.1).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyParams {
    /// The master key followed by the master salt.
    pub key_salt: Vec<u8>,
    /// The master key lifetime, if given.
    pub lifetime: Option<KeyLifetime>,
    /// The master key identifier, if given.
    pub mki: Option<Mki>,
}

/// A master key lifetime: `2^n` or a decimal count of packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyLifetime {
    /// `2^n` packets.
    PowerOfTwo(u8),
    /// A packet count written in decimal.
    Packets(u64),
}

/// A master key identifier: `value:length` (length in bytes, 1 to 128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mki {
    /// The MKI value.
    pub value: u64,
    /// Its length on the wire, in bytes.
    pub length: u8,
}

/// Why text is not a session description. Line numbers count from 1.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SdpParseError {
    /// Longer than [`MAX_SDP_LEN`].
    #[error("session description of {len} bytes exceeds the limit of {MAX_SDP_LEN}")]
    TooLarge {
        /// Bytes given.
        len: usize,
    },
    /// The bytes are not UTF-8.
    #[error("line {line}: not utf-8")]
    NotUtf8 {
        /// The line with the bad byte.
        line: usize,
    },
    /// A line is not `<letter>=<value>`.
    #[error("line {line}: not of the form <type>=<value>")]
    MalformedLine {
        /// The line.
        line: usize,
    },
    /// A line type letter this parser does not know (RFC 8866 §5 says to
    /// reject the description).
    #[error("line {line}: unknown line type '{kind}'")]
    UnknownLineType {
        /// The line.
        line: usize,
        /// The letter.
        kind: char,
    },
    /// A known line in a place it may not appear.
    #[error("line {line}: '{kind}=' not allowed here")]
    UnexpectedLine {
        /// The line.
        line: usize,
        /// The letter.
        kind: char,
    },
    /// A line that may appear once appears again.
    #[error("line {line}: second '{kind}=' line")]
    DuplicateLine {
        /// The line.
        line: usize,
        /// The letter.
        kind: char,
    },
    /// A required line is missing.
    #[error("missing '{kind}=' line")]
    MissingLine {
        /// The letter.
        kind: char,
    },
    /// `v=` is not 0.
    #[error("line {line}: unsupported version")]
    BadVersion {
        /// The line.
        line: usize,
    },
    /// A field of a line is missing or invalid.
    #[error("line {line}: invalid {field}")]
    InvalidField {
        /// The line.
        line: usize,
        /// Which field.
        field: &'static str,
    },
    /// A typed attribute's value is invalid.
    #[error("line {line}: invalid a={name}: {reason}")]
    InvalidAttribute {
        /// The line.
        line: usize,
        /// The attribute name.
        name: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// More than [`MAX_MEDIA_SECTIONS`] media sections.
    #[error("line {line}: more than {MAX_MEDIA_SECTIONS} media sections")]
    TooManyMediaSections {
        /// The line of the first section over the limit.
        line: usize,
    },
}

impl SessionDescription {
    /// A minimal description: origin, session name `-`, `t=0 0`, nothing
    /// else.
    pub fn new(origin: Origin) -> Self {
        SessionDescription {
            origin,
            session_name: "-".to_owned(),
            information: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: None,
            bandwidths: Vec::new(),
            timing: vec![Timing::default()],
            time_zones: None,
            encryption_key: None,
            attributes: Vec::new(),
            media: Vec::new(),
        }
    }

    /// Parses a description. Lines end in CRLF or LF; blank lines are
    /// skipped.
    pub fn parse(text: &str) -> Result<Self, SdpParseError> {
        if text.len() > MAX_SDP_LEN {
            return Err(SdpParseError::TooLarge { len: text.len() });
        }
        Parser::default().run(text)
    }

    /// Parses a description from bytes (a SIP body), checking UTF-8 first.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, SdpParseError> {
        if bytes.len() > MAX_SDP_LEN {
            return Err(SdpParseError::TooLarge { len: bytes.len() });
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse(text),
            Err(e) => {
                let line = 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                Err(SdpParseError::NotUtf8 { line })
            }
        }
    }

    /// The session-level direction attribute, `sendrecv` when absent.
    pub fn direction(&self) -> Direction {
        direction_of(&self.attributes).unwrap_or_default()
    }
}

impl Address {
    /// The address type written for this address.
    pub fn address_type(&self) -> AddressType {
        match self {
            Address::Ip(IpAddr::V4(_)) => AddressType::Ip4,
            Address::Ip(IpAddr::V6(_)) => AddressType::Ip6,
            Address::Name { address_type, .. } => *address_type,
        }
    }

    /// The IP address, if this is not a host name.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Ip(ip) => Some(*ip),
            Address::Name { .. } => None,
        }
    }
}

impl From<IpAddr> for Address {
    fn from(ip: IpAddr) -> Self {
        Address::Ip(ip)
    }
}

impl Connection {
    /// A unicast connection to `ip`.
    pub fn new(ip: IpAddr) -> Self {
        Connection {
            address: Address::Ip(ip),
            ttl: None,
            count: None,
        }
    }
}

impl MediaDescription {
    /// A section with no lines besides `m=`.
    pub fn new(kind: MediaKind, port: u16, protocol: Protocol, formats: Vec<String>) -> Self {
        MediaDescription {
            kind,
            port,
            port_count: None,
            protocol,
            formats,
            information: None,
            connection: None,
            bandwidths: Vec::new(),
            encryption_key: None,
            attributes: Vec::new(),
        }
    }

    /// The formats that are RTP payload type numbers, in order.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok().filter(|&pt| pt <= 127))
    }

    /// The `rtpmap` for a payload type.
    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::RtpMap(m) if m.payload_type == payload_type => Some(m),
            _ => None,
        })
    }

    /// The `fmtp` parameters for a payload type.
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Fmtp(f) if f.format.parse::<u8>().ok() == Some(payload_type) => {
                Some(f.parameters.as_str())
            }
            _ => None,
        })
    }

    /// `a=ptime`, if present.
    pub fn ptime(&self) -> Option<u32> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Ptime(p) => Some(*p),
            _ => None,
        })
    }

    /// `a=maxptime`, if present.
    pub fn max_ptime(&self) -> Option<u32> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::MaxPtime(p) => Some(*p),
            _ => None,
        })
    }

    /// The section's direction attribute, `sendrecv` when absent. Use
    /// [`effective_direction`](Self::effective_direction) to fall back to
    /// the session level.
    pub fn direction(&self) -> Direction {
        direction_of(&self.attributes).unwrap_or_default()
    }

    /// The section's direction, else the session's, else `sendrecv`
    /// (RFC 8866 §6.7).
    pub fn effective_direction(&self, session: &SessionDescription) -> Direction {
        direction_of(&self.attributes)
            .or_else(|| direction_of(&session.attributes))
            .unwrap_or_default()
    }

    /// Whether `a=rtcp-mux` is present.
    pub fn is_rtcp_mux(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| matches!(a, Attribute::RtcpMux))
    }

    /// `a=rtcp`, if present.
    pub fn rtcp(&self) -> Option<&RtcpAttribute> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Rtcp(r) => Some(r),
            _ => None,
        })
    }

    /// The `a=crypto` lines, in order (the offerer's preference).
    pub fn crypto(&self) -> impl Iterator<Item = &CryptoAttribute> + '_ {
        self.attributes.iter().filter_map(|a| match a {
            Attribute::Crypto(c) => Some(c),
            _ => None,
        })
    }

    /// The first attribute named `name` that is kept verbatim, with its
    /// value.
    pub fn other_attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Other { name: n, value } if n == name => Some(value.as_deref()),
            _ => None,
        })
    }
}

impl MediaKind {
    /// The token written in the `m=` line.
    pub fn as_str(&self) -> &str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Text => "text",
            MediaKind::Application => "application",
            MediaKind::Message => "message",
            MediaKind::Other(s) => s,
        }
    }

    fn from_token(token: &str) -> Self {
        match token {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            "text" => MediaKind::Text,
            "application" => MediaKind::Application,
            "message" => MediaKind::Message,
            other => MediaKind::Other(other.to_owned()),
        }
    }
}

impl Protocol {
    /// The token written in the `m=` line.
    pub fn as_str(&self) -> &str {
        match self {
            Protocol::RtpAvp => "RTP/AVP",
            Protocol::RtpSavp => "RTP/SAVP",
            Protocol::RtpAvpf => "RTP/AVPF",
            Protocol::RtpSavpf => "RTP/SAVPF",
            Protocol::Other(s) => s,
        }
    }

    fn from_token(token: &str) -> Self {
        match token {
            "RTP/AVP" => Protocol::RtpAvp,
            "RTP/SAVP" => Protocol::RtpSavp,
            "RTP/AVPF" => Protocol::RtpAvpf,
            "RTP/SAVPF" => Protocol::RtpSavpf,
            other => Protocol::Other(other.to_owned()),
        }
    }
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// From whether media is sent and received.
    pub fn from_flags(send: bool, recv: bool) -> Self {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Whether this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction as the other side sees it: `sendonly` becomes
    /// `recvonly` and the other way round.
    pub fn reversed(self) -> Self {
        Direction::from_flags(self.receives(), self.sends())
    }
}

impl CryptoSuite {
    /// The suite name as written.
    pub fn as_str(&self) -> &str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            CryptoSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            CryptoSuite::Other(s) => s,
        }
    }

    fn from_token(token: &str) -> Self {
        match token {
            "AES_CM_128_HMAC_SHA1_80" => CryptoSuite::AesCm128HmacSha1_80,
            "AES_CM_128_HMAC_SHA1_32" => CryptoSuite::AesCm128HmacSha1_32,
            "AEAD_AES_128_GCM" => CryptoSuite::AeadAes128Gcm,
            other => CryptoSuite::Other(other.to_owned()),
        }
    }
}

impl fmt::Debug for KeyParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyParams")
            .field("key_salt", &"***")
            .field("lifetime", &self.lifetime)
            .field("mki", &self.mki)
            .finish()
    }
}

impl fmt::Display for SessionDescription {
    /// Writes the description with CRLF line ends. Line breaks inside text
    /// fields are dropped, so no field can start a line of its own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=0\r\n")?;
        let o = &self.origin;
        line(
            f,
            'o',
            format_args!(
                "{} {} {} {}",
                Clean(&o.username),
                o.session_id,
                o.session_version,
                AddressField(&o.address)
            ),
        )?;
        line(f, 's', Clean(&self.session_name))?;
        if let Some(i) = &self.information {
            line(f, 'i', Clean(i))?;
        }
        if let Some(u) = &self.uri {
            line(f, 'u', Clean(u))?;
        }
        for e in &self.emails {
            line(f, 'e', Clean(e))?;
        }
        for p in &self.phones {
            line(f, 'p', Clean(p))?;
        }
        if let Some(c) = &self.connection {
            line(f, 'c', c)?;
        }
        for b in &self.bandwidths {
            line(f, 'b', b)?;
        }
        if self.timing.is_empty() {
            f.write_str("t=0 0\r\n")?;
        }
        for t in &self.timing {
            line(f, 't', format_args!("{} {}", t.start, t.stop))?;
            for r in &t.repeats {
                line(f, 'r', Clean(r))?;
            }
        }
        if let Some(z) = &self.time_zones {
            line(f, 'z', Clean(z))?;
        }
        if let Some(k) = &self.encryption_key {
            line(f, 'k', Clean(k))?;
        }
        for a in &self.attributes {
            line(f, 'a', a)?;
        }
        for m in &self.media {
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("m=")?;
        Clean(self.kind.as_str()).fmt(f)?;
        write!(f, " {}", self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        f.write_char(' ')?;
        Clean(self.protocol.as_str()).fmt(f)?;
        for format in &self.formats {
            f.write_char(' ')?;
            Clean(format).fmt(f)?;
        }
        f.write_str("\r\n")?;
        if let Some(i) = &self.information {
            line(f, 'i', Clean(i))?;
        }
        if let Some(c) = &self.connection {
            line(f, 'c', c)?;
        }
        for b in &self.bandwidths {
            line(f, 'b', b)?;
        }
        if let Some(k) = &self.encryption_key {
            line(f, 'k', Clean(k))?;
        }
        for a in &self.attributes {
            line(f, 'a', a)?;
        }
        Ok(())
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        AddressField(&self.address).fmt(f)?;
        match self.address.address_type() {
            AddressType::Ip4 => {
                if let Some(ttl) = self.ttl {
                    write!(f, "/{ttl}")?;
                    if let Some(count) = self.count {
                        write!(f, "/{count}")?;
                    }
                }
            }
            AddressType::Ip6 => {
                if let Some(count) = self.count {
                    write!(f, "/{count}")?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Clean(&self.modifier), self.value)
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::RtpMap(m) => {
                write!(
                    f,
                    "rtpmap:{} {}/{}",
                    m.payload_type,
                    Clean(&m.encoding),
                    m.clock_rate
                )?;
                if let Some(c) = m.channels {
                    write!(f, "/{c}")?;
                }
                Ok(())
            }
            Attribute::Fmtp(p) => {
                write!(f, "fmtp:{} {}", Clean(&p.format), Clean(&p.parameters))
            }
            Attribute::Ptime(p) => write!(f, "ptime:{p}"),
            Attribute::MaxPtime(p) => write!(f, "maxptime:{p}"),
            Attribute::Direction(d) => f.write_str(d.as_str()),
            Attribute::RtcpMux => f.write_str("rtcp-mux"),
            Attribute::Rtcp(r) => {
                write!(f, "rtcp:{}", r.port)?;
                if let Some(a) = &r.address {
                    write!(f, " {}", AddressField(a))?;
                }
                Ok(())
            }
            Attribute::Crypto(c) => write!(f, "crypto:{c}"),
            Attribute::Other { name, value } => {
                Clean(name).fmt(f)?;
                if let Some(v) = value {
                    write!(f, ":{}", Clean(v))?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for CryptoAttribute {
    /// The attribute value (after `crypto:`). Key material is printed:
    /// this is the wire form, not a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.tag, Clean(self.suite.as_str()))?;
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_char(';')?;
            }
            write!(
                f,
                "inline:{}",
                general_purpose::STANDARD.encode(&key.key_salt)
            )?;
            match key.lifetime {
                Some(KeyLifetime::PowerOfTwo(n)) => write!(f, "|2^{n}")?,
                Some(KeyLifetime::Packets(n)) => write!(f, "|{n}")?,
                None => {}
            }
            if let Some(mki) = key.mki {
                write!(f, "|{}:{}", mki.value, mki.length)?;
            }
        }
        for p in &self.session_params {
            write!(f, " {}", Clean(p))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Private helpers: writing.

fn line(f: &mut fmt::Formatter<'_>, kind: char, value: impl fmt::Display) -> fmt::Result {
    write!(f, "{kind}={value}\r\n")
}

/// Text with CR, LF and NUL removed.
struct Clean<'a>(&'a str);

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.contains(['\r', '\n', '\0']) {
            return f.write_str(self.0);
        }
        for c in self.0.chars().filter(|c| !matches!(c, '\r' | '\n' | '\0')) {
            f.write_char(c)?;
        }
        Ok(())
    }
}

/// `IN <addrtype> <address>`.
struct AddressField<'a>(&'a Address);

impl fmt::Display for AddressField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0.address_type() {
            AddressType::Ip4 => "IP4",
            AddressType::Ip6 => "IP6",
        };
        match self.0 {
            Address::Ip(ip) => write!(f, "IN {kind} {ip}"),
            Address::Name { name, .. } => write!(f, "IN {kind} {}", Clean(name)),
        }
    }
}

fn direction_of(attributes: &[Attribute]) -> Option<Direction> {
    attributes.iter().find_map(|a| match a {
        Attribute::Direction(d) => Some(*d),
        _ => None,
    })
}

// ---------------------------------------------------------------------------
// Private helpers: parsing.

/// Where in the description the parser is.
#[derive(Default)]
struct Parser {
    seen_version: bool,
    origin: Option<Origin>,
    session: Option<SessionDescription>,
}

type Fields<'a> = std::str::SplitAsciiWhitespace<'a>;

impl Parser {
    fn run(mut self, text: &str) -> Result<SessionDescription, SdpParseError> {
        let mut media: Option<MediaDescription> = None;
        for (index, raw) in text.split('\n').enumerate() {
            let number = index + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.trim().is_empty() {
                continue;
            }
            if raw.contains(['\r', '\0']) {
                return Err(SdpParseError::MalformedLine { line: number });
            }
            let bytes = raw.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_alphabetic() {
                return Err(SdpParseError::MalformedLine { line: number });
            }
            let kind = char::from(bytes[0]);
            // White space some peers leave at the end of a line (`a=sendrecv `,
            // `b=AS:64 `) is not part of a structured value; free text
            // keeps it (`s= `).
            let value = match kind {
                'a' | 'b' | 'c' | 'm' | 'o' | 't' => raw[2..].trim_end_matches([' ', '\t']),
                _ => &raw[2..],
            };
            if !self.seen_version {
                if kind != 'v' {
                    return Err(SdpParseError::MissingLine { kind: 'v' });
                }
                if value.trim() != "0" {
                    return Err(SdpParseError::BadVersion { line: number });
                }
                self.seen_version = true;
                continue;
            }
            match self.session.as_mut() {
                None => self.header_line(number, kind, value)?,
                Some(session) => {
                    if kind == 'm' {
                        if let Some(done) = media.take() {
                            session.media.push(done);
                        }
                        if session.media.len() >= MAX_MEDIA_SECTIONS {
                            return Err(SdpParseError::TooManyMediaSections { line: number });
                        }
                        media = Some(parse_media_line(number, value)?);
                    } else if let Some(m) = media.as_mut() {
                        media_line(m, number, kind, value)?;
                    } else {
                        session_line(session, number, kind, value)?;
                    }
                }
            }
        }
        if !self.seen_version {
            return Err(SdpParseError::MissingLine { kind: 'v' });
        }
        let Some(mut session) = self.session else {
            return Err(SdpParseError::MissingLine {
                kind: if self.origin.is_none() { 'o' } else { 's' },
            });
        };
        if let Some(done) = media.take() {
            session.media.push(done);
        }
        if session.timing.is_empty() {
            return Err(SdpParseError::MissingLine { kind: 't' });
        }
        Ok(session)
    }

    /// `o=` and `s=` come first, in that order.
    fn header_line(&mut self, number: usize, kind: char, value: &str) -> Result<(), SdpParseError> {
        match (kind, &self.origin) {
            ('o', None) => {
                self.origin = Some(parse_origin(number, value)?);
                Ok(())
            }
            ('s', Some(origin)) => {
                let mut session = SessionDescription::new(origin.clone());
                session.session_name = value.to_owned();
                session.timing.clear();
                self.session = Some(session);
                Ok(())
            }
            ('o', Some(_)) => Err(SdpParseError::DuplicateLine { line: number, kind }),
            (_, None) if is_known_kind(kind) => Err(SdpParseError::MissingLine { kind: 'o' }),
            (_, Some(_)) if is_known_kind(kind) => Err(SdpParseError::MissingLine { kind: 's' }),
            _ => Err(SdpParseError::UnknownLineType { line: number, kind }),
        }
    }
}

fn is_known_kind(kind: char) -> bool {
    "vosiuepcbtrzkam".contains(kind)
}

fn session_line(
    session: &mut SessionDescription,
    number: usize,
    kind: char,
    value: &str,
) -> Result<(), SdpParseError> {
    let duplicate = SdpParseError::DuplicateLine { line: number, kind };
    match kind {
        'i' => set_once(&mut session.information, value.to_owned(), duplicate),
        'u' => set_once(&mut session.uri, value.to_owned(), duplicate),
        'e' => {
            session.emails.push(value.to_owned());
            Ok(())
        }
        'p' => {
            session.phones.push(value.to_owned());
            Ok(())
        }
        'c' => {
            let c = parse_connection(number, value)?;
            set_once(&mut session.connection, c, duplicate)
        }
        'b' => {
            session.bandwidths.push(parse_bandwidth(number, value)?);
            Ok(())
        }
        't' => {
            let mut fields = value.split_ascii_whitespace();
            let start = number_field(number, fields.next(), "start time")?;
            let stop = number_field(number, fields.next(), "stop time")?;
            no_more(number, fields, "timing")?;
            session.timing.push(Timing {
                start,
                stop,
                repeats: Vec::new(),
            });
            Ok(())
        }
        'r' => match session.timing.last_mut() {
            Some(t) => {
                t.repeats.push(value.to_owned());
                Ok(())
            }
            None => Err(SdpParseError::UnexpectedLine { line: number, kind }),
        },
        'z' => set_once(&mut session.time_zones, value.to_owned(), duplicate),
        'k' => set_once(&mut session.encryption_key, value.to_owned(), duplicate),
        'a' => {
            session.attributes.push(parse_attribute(number, value)?);
            Ok(())
        }
        'v' | 'o' | 's' => Err(duplicate),
        _ => Err(SdpParseError::UnknownLineType { line: number, kind }),
    }
}

fn media_line(
    media: &mut MediaDescription,
    number: usize,
    kind: char,
    value: &str,
) -> Result<(), SdpParseError> {
    let duplicate = SdpParseError::DuplicateLine { line: number, kind };
    match kind {
        'i' => set_once(&mut media.information, value.to_owned(), duplicate),
        'c' => {
            let c = parse_connection(number, value)?;
            set_once(&mut media.connection, c, duplicate)
        }
        'b' => {
            media.bandwidths.push(parse_bandwidth(number, value)?);
            Ok(())
        }
        'k' => set_once(&mut media.encryption_key, value.to_owned(), duplicate),
        'a' => {
            media.attributes.push(parse_attribute(number, value)?);
            Ok(())
        }
        k if is_known_kind(k) => Err(SdpParseError::UnexpectedLine { line: number, kind }),
        _ => Err(SdpParseError::UnknownLineType { line: number, kind }),
    }
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    duplicate: SdpParseError,
) -> Result<(), SdpParseError> {
    if slot.is_some() {
        return Err(duplicate);
    }
    *slot = Some(value);
    Ok(())
}

fn number_field<T: std::str::FromStr>(
    line: usize,
    token: Option<&str>,
    field: &'static str,
) -> Result<T, SdpParseError> {
    token
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or(SdpParseError::InvalidField { line, field })
}

fn no_more(line: usize, mut fields: Fields<'_>, field: &'static str) -> Result<(), SdpParseError> {
    match fields.next() {
        Some(_) => Err(SdpParseError::InvalidField { line, field }),
        None => Ok(()),
    }
}

fn parse_origin(line: usize, value: &str) -> Result<Origin, SdpParseError> {
    let mut fields = value.split_ascii_whitespace();
    let username = fields
        .next()
        .ok_or(SdpParseError::InvalidField {
            line,
            field: "origin username",
        })?
        .to_owned();
    let session_id = number_field(line, fields.next(), "origin session id")?;
    let session_version = number_field(line, fields.next(), "origin session version")?;
    let address = parse_address(line, &mut fields, "origin address")?;
    no_more(line, fields, "origin")?;
    Ok(Origin {
        username,
        session_id,
        session_version,
        address,
    })
}

/// `IN <addrtype> <address>`, the address without a multicast suffix.
fn parse_address(
    line: usize,
    fields: &mut Fields<'_>,
    field: &'static str,
) -> Result<Address, SdpParseError> {
    let invalid = SdpParseError::InvalidField { line, field };
    if fields.next() != Some("IN") {
        return Err(invalid);
    }
    let address_type = match fields.next() {
        Some("IP4") => AddressType::Ip4,
        Some("IP6") => AddressType::Ip6,
        _ => return Err(invalid),
    };
    let text = fields.next().ok_or(invalid.clone())?;
    address_from(text, address_type).ok_or(invalid)
}

fn address_from(text: &str, address_type: AddressType) -> Option<Address> {
    match (text.parse::<IpAddr>(), address_type) {
        (Ok(ip @ IpAddr::V4(_)), AddressType::Ip4) | (Ok(ip @ IpAddr::V6(_)), AddressType::Ip6) => {
            Some(Address::Ip(ip))
        }
        (Ok(_), _) => None,
        (Err(_), _) => {
            // A host name: letters, digits, '-', '.', and nothing that
            // could be read back as an address of the other type.
            let ok = !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            ok.then(|| Address::Name {
                address_type,
                name: text.to_owned(),
            })
        }
    }
}

fn parse_connection(line: usize, value: &str) -> Result<Connection, SdpParseError> {
    let invalid = SdpParseError::InvalidField {
        line,
        field: "connection address",
    };
    let mut fields = value.split_ascii_whitespace();
    if fields.next() != Some("IN") {
        return Err(invalid);
    }
    let address_type = match fields.next() {
        Some("IP4") => AddressType::Ip4,
        Some("IP6") => AddressType::Ip6,
        _ => return Err(invalid),
    };
    let text = fields.next().ok_or(invalid.clone())?;
    no_more(line, fields, "connection")?;
    let mut parts = text.split('/');
    let host = parts.next().unwrap_or_default();
    let address = address_from(host, address_type).ok_or(invalid.clone())?;
    let mut connection = Connection {
        address,
        ttl: None,
        count: None,
    };
    let first = parts.next();
    let second = parts.next();
    if parts.next().is_some() {
        return Err(invalid);
    }
    match address_type {
        AddressType::Ip4 => {
            connection.ttl = first
                .map(|t| number_field(line, Some(t), "connection ttl"))
                .transpose()?;
            connection.count = second
                .map(|t| number_field(line, Some(t), "connection count"))
                .transpose()?;
        }
        AddressType::Ip6 => {
            if second.is_some() {
                return Err(invalid);
            }
            connection.count = first
                .map(|t| number_field(line, Some(t), "connection count"))
                .transpose()?;
        }
    }
    Ok(connection)
}

fn parse_bandwidth(line: usize, value: &str) -> Result<Bandwidth, SdpParseError> {
    let invalid = SdpParseError::InvalidField {
        line,
        field: "bandwidth",
    };
    let (modifier, amount) = value.split_once(':').ok_or(invalid.clone())?;
    if !is_token(modifier) {
        return Err(invalid);
    }
    Ok(Bandwidth {
        modifier: modifier.to_owned(),
        value: number_field(line, Some(amount), "bandwidth")?,
    })
}

fn parse_media_line(line: usize, value: &str) -> Result<MediaDescription, SdpParseError> {
    let mut fields = value.split_ascii_whitespace();
    let kind = fields
        .next()
        .filter(|k| is_token(k))
        .ok_or(SdpParseError::InvalidField {
            line,
            field: "media type",
        })?;
    let port_text = fields.next().ok_or(SdpParseError::InvalidField {
        line,
        field: "media port",
    })?;
    let (port, port_count) = match port_text.split_once('/') {
        Some((p, n)) => (
            number_field(line, Some(p), "media port")?,
            Some(number_field(line, Some(n), "media port count")?),
        ),
        None => (number_field(line, Some(port_text), "media port")?, None),
    };
    let protocol = fields
        .next()
        .filter(|p| p.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(SdpParseError::InvalidField {
            line,
            field: "media protocol",
        })?;
    let formats: Vec<String> = fields.map(str::to_owned).collect();
    if formats.is_empty() {
        return Err(SdpParseError::InvalidField {
            line,
            field: "media formats",
        });
    }
    Ok(MediaDescription {
        port_count,
        ..MediaDescription::new(
            MediaKind::from_token(kind),
            port,
            Protocol::from_token(protocol),
            formats,
        )
    })
}

/// A token: printable ASCII without spaces or `:` (RFC 8866 §9 allows a
/// little less; this is what a round trip needs).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

fn parse_attribute(line: usize, text: &str) -> Result<Attribute, SdpParseError> {
    let (name, value) = match text.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (text, None),
    };
    let flag = |attribute: Attribute, name: &'static str| match value {
        None => Ok(attribute),
        Some(_) => Err(SdpParseError::InvalidAttribute {
            line,
            name,
            reason: "takes no value",
        }),
    };
    let needs = |name: &'static str| {
        value.ok_or(SdpParseError::InvalidAttribute {
            line,
            name,
            reason: "missing value",
        })
    };
    match name {
        "rtpmap" => parse_rtpmap(line, needs("rtpmap")?).map(Attribute::RtpMap),
        "fmtp" => {
            let value = needs("fmtp")?;
            let (format, parameters) = value.split_once(' ').unwrap_or((value, ""));
            if !is_token(format) {
                return Err(SdpParseError::InvalidAttribute {
                    line,
                    name: "fmtp",
                    reason: "bad format",
                });
            }
            Ok(Attribute::Fmtp(Fmtp {
                format: format.to_owned(),
                parameters: parameters.to_owned(),
            }))
        }
        "ptime" => Ok(Attribute::Ptime(milliseconds(
            line,
            needs("ptime")?,
            "ptime",
        )?)),
        "maxptime" => Ok(Attribute::MaxPtime(milliseconds(
            line,
            needs("maxptime")?,
            "maxptime",
        )?)),
        "sendrecv" => flag(Attribute::Direction(Direction::SendRecv), "sendrecv"),
        "sendonly" => flag(Attribute::Direction(Direction::SendOnly), "sendonly"),
        "recvonly" => flag(Attribute::Direction(Direction::RecvOnly), "recvonly"),
        "inactive" => flag(Attribute::Direction(Direction::Inactive), "inactive"),
        "rtcp-mux" => flag(Attribute::RtcpMux, "rtcp-mux"),
        "rtcp" => parse_rtcp(line, needs("rtcp")?).map(Attribute::Rtcp),
        "crypto" => parse_crypto(line, needs("crypto")?).map(Attribute::Crypto),
        _ => {
            if !is_token(name) {
                return Err(SdpParseError::InvalidField {
                    line,
                    field: "attribute name",
                });
            }
            Ok(Attribute::Other {
                name: name.to_owned(),
                value: value.map(str::to_owned),
            })
        }
    }
}

/// A `ptime` or `maxptime` value: RFC 8866 §9 allows a real
/// (`non-zero-int-or-real`, as in `20.0` or `2.5`); a fraction is rounded
/// to the nearest millisecond, at least 1. The value only recommends a
/// packet length, and the receiver follows what arrives.
fn milliseconds(line: usize, value: &str, name: &'static str) -> Result<u32, SdpParseError> {
    let invalid = |reason| SdpParseError::InvalidAttribute { line, name, reason };
    let value = value.trim();
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || (value.contains('.') && fraction.is_empty())
    {
        return Err(invalid("not a number of milliseconds"));
    }
    let whole: u32 = whole.parse().map_err(|_| invalid("out of range"))?;
    let round_up = fraction.as_bytes().first().is_some_and(|&d| d >= b'5');
    let ms = whole
        .checked_add(u32::from(round_up))
        .ok_or(invalid("out of range"))?;
    if ms == 0 && !fraction.bytes().any(|d| d != b'0') {
        return Err(invalid("zero"));
    }
    Ok(ms.max(1))
}

fn parse_rtpmap(line: usize, value: &str) -> Result<RtpMap, SdpParseError> {
    let invalid = |reason| SdpParseError::InvalidAttribute {
        line,
        name: "rtpmap",
        reason,
    };
    let mut fields = value.split_ascii_whitespace();
    let payload_type = fields
        .next()
        .and_then(|t| number_field::<u8>(line, Some(t), "").ok())
        .filter(|&pt| pt <= 127)
        .ok_or(invalid("bad payload type"))?;
    let mapping = fields.next().ok_or(invalid("missing encoding"))?;
    if fields.next().is_some() {
        return Err(invalid("trailing fields"));
    }
    let mut parts = mapping.split('/');
    let encoding = parts
        .next()
        .filter(|e| !e.is_empty())
        .ok_or(invalid("missing encoding"))?;
    let clock_rate = parts
        .next()
        .and_then(|t| number_field(line, Some(t), "").ok())
        .ok_or(invalid("bad clock rate"))?;
    let channels = parts
        .next()
        .map(|t| number_field(line, Some(t), "").map_err(|_| invalid("bad channel count")))
        .transpose()?;
    if parts.next().is_some() {
        return Err(invalid("trailing fields"));
    }
    Ok(RtpMap {
        payload_type,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

fn parse_rtcp(line: usize, value: &str) -> Result<RtcpAttribute, SdpParseError> {
    let mut fields = value.split_ascii_whitespace();
    let port = fields
        .next()
        .and_then(|t| number_field(line, Some(t), "").ok())
        .ok_or(SdpParseError::InvalidAttribute {
            line,
            name: "rtcp",
            reason: "bad port",
        })?;
    let address = if fields.clone().next().is_some() {
        Some(
            parse_address(line, &mut fields, "rtcp address").map_err(|_| {
                SdpParseError::InvalidAttribute {
                    line,
                    name: "rtcp",
                    reason: "bad address",
                }
            })?,
        )
    } else {
        None
    };
    if fields.next().is_some() {
        return Err(SdpParseError::InvalidAttribute {
            line,
            name: "rtcp",
            reason: "trailing fields",
        });
    }
    Ok(RtcpAttribute { port, address })
}

/// Standard base64 that accepts a missing final padding.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest `key||salt` accepted: AES-256 key plus salt, with room to spare.
const MAX_KEY_SALT_LEN: usize = 64;

fn parse_crypto(line: usize, value: &str) -> Result<CryptoAttribute, SdpParseError> {
    let invalid = |reason| SdpParseError::InvalidAttribute {
        line,
        name: "crypto",
        reason,
    };
    let mut fields = value.split_ascii_whitespace();
    let tag_text = fields.next().ok_or(invalid("missing tag"))?;
    let tag = number_field::<u32>(line, Some(tag_text), "")
        .ok()
        .filter(|_| tag_text.len() <= 9)
        .ok_or(invalid("bad tag"))?;
    let suite = fields
        .next()
        .filter(|s| is_token(s))
        .ok_or(invalid("missing crypto suite"))?;
    let key_text = fields.next().ok_or(invalid("missing key parameters"))?;
    let mut keys = Vec::new();
    for param in key_text.split(';') {
        let inline = param
            .strip_prefix("inline:")
            .ok_or(invalid("key method is not inline"))?;
        let mut parts = inline.split('|');
        let encoded = parts.next().unwrap_or_default();
        if encoded.is_empty() || encoded.len() > MAX_KEY_SALT_LEN * 2 {
            return Err(invalid("bad key length"));
        }
        let key_salt = KEY_BASE64
            .decode(encoded)
            .map_err(|_| invalid("key is not base64"))?;
        if key_salt.is_empty() || key_salt.len() > MAX_KEY_SALT_LEN {
            return Err(invalid("bad key length"));
        }
        let mut key = KeyParams {
            key_salt,
            lifetime: None,
            mki: None,
        };
        let rest: Vec<&str> = parts.collect();
        match rest.as_slice() {
            [] => {}
            [one] if one.contains(':') => key.mki = Some(parse_mki(one).ok_or(invalid("bad mki"))?),
            [one] => key.lifetime = Some(parse_lifetime(one).ok_or(invalid("bad lifetime"))?),
            [lifetime, mki] => {
                key.lifetime = Some(parse_lifetime(lifetime).ok_or(invalid("bad lifetime"))?);
                key.mki = Some(parse_mki(mki).ok_or(invalid("bad mki"))?);
            }
            _ => return Err(invalid("too many key fields")),
        }
        keys.push(key);
    }
    Ok(CryptoAttribute {
        tag,
        suite: CryptoSuite::from_token(suite),
        keys,
        session_params: fields.map(str::to_owned).collect(),
    })
}

fn parse_lifetime(text: &str) -> Option<KeyLifetime> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(exponent) = text.strip_prefix("2^") {
        return digits(exponent)
            .then(|| exponent.parse().ok())
            .flatten()
            .filter(|&n: &u8| n <= 64)
            .map(KeyLifetime::PowerOfTwo);
    }
    digits(text)
        .then(|| text.parse().ok())
        .flatten()
        .map(KeyLifetime::Packets)
}

fn parse_mki(text: &str) -> Option<Mki> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let (value, length) = text.split_once(':')?;
    if !digits(value) || !digits(length) {
        return None;
    }
    let length: u8 = length.parse().ok().filter(|l| (1..=128).contains(l))?;
    Some(Mki {
        value: value.parse().ok()?,
        length,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    const OFFER: &str = "v=0\r\n\
        o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\n\
        s=SDP Seminar\r\n\
        i=A Seminar on the session description protocol\r\n\
        u=http://www.example.com/seminars/sdp.pdf\r\n\
        e=j.doe@example.com (Jane Doe)\r\n\
        c=IN IP4 224.2.17.12/127\r\n\
        t=2873397496 2873404696\r\n\
        a=recvonly\r\n\
        m=audio 49170 RTP/AVP 0\r\n\
        m=video 51372 RTP/AVP 99\r\n\
        c=IN IP6 2001:db8::2\r\n\
        a=rtpmap:99 h263-1998/90000\r\n";

    #[test]
    fn rfc8866_5_example_parses_and_writes_back() {
        let sdp = SessionDescription::parse(OFFER).unwrap();
        assert_eq!(sdp.origin.username, "jdoe");
        assert_eq!(sdp.origin.session_id, 2_890_844_526);
        assert_eq!(sdp.origin.session_version, 2_890_842_807);
        assert_eq!(
            sdp.origin.address,
            Address::Ip(IpAddr::V4(Ipv4Addr::new(10, 47, 16, 5)))
        );
        assert_eq!(sdp.session_name, "SDP Seminar");
        assert_eq!(sdp.emails, ["j.doe@example.com (Jane Doe)"]);
        let c = sdp.connection.as_ref().unwrap();
        assert_eq!(c.ttl, Some(127));
        assert_eq!(sdp.timing[0].start, 2_873_397_496);
        assert_eq!(sdp.direction(), Direction::RecvOnly);
        assert_eq!(sdp.media.len(), 2);
        assert_eq!(sdp.media[0].kind, MediaKind::Audio);
        assert_eq!(sdp.media[0].protocol, Protocol::RtpAvp);
        assert_eq!(sdp.media[0].effective_direction(&sdp), Direction::RecvOnly);
        assert_eq!(sdp.media[1].kind, MediaKind::Video);
        assert_eq!(
            sdp.media[1].connection.as_ref().unwrap().address,
            Address::Ip(IpAddr::V6("2001:db8::2".parse::<Ipv6Addr>().unwrap()))
        );
        assert_eq!(sdp.media[1].rtpmap(99).unwrap().clock_rate, 90000);
        assert_eq!(sdp.to_string(), OFFER);
    }

    #[test]
    fn rfc8866_5_accepts_bare_lf_and_writes_crlf() {
        let lf = OFFER.replace("\r\n", "\n");
        let sdp = SessionDescription::parse(&lf).unwrap();
        assert_eq!(sdp.to_string(), OFFER);
    }

    #[test]
    fn rfc8866_5_7_ipv6_connection_with_count() {
        let text = "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ff15::101/3\r\nt=0 0\r\n";
        let sdp = SessionDescription::parse(text).unwrap();
        let c = sdp.connection.as_ref().unwrap();
        assert_eq!(c.count, Some(3));
        assert_eq!(c.ttl, None);
        assert_eq!(sdp.to_string(), text);
    }

    #[test]
    fn rfc8866_5_7_host_name_connection_kept() {
        let text = "v=0\r\no=- 1 1 IN IP4 pbx.example.com\r\ns=-\r\nc=IN IP4 media.example.com\r\nt=0 0\r\n";
        let sdp = SessionDescription::parse(text).unwrap();
        assert_eq!(
            sdp.connection.as_ref().unwrap().address,
            Address::Name {
                address_type: AddressType::Ip4,
                name: "media.example.com".into()
            }
        );
        assert_eq!(sdp.to_string(), text);
    }

    #[test]
    fn rfc8866_5_7_address_type_must_match_address() {
        let text = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 ::1\r\nt=0 0\r\n";
        assert_eq!(
            SessionDescription::parse(text),
            Err(SdpParseError::InvalidField {
                line: 4,
                field: "connection address"
            })
        );
    }

    const AUDIO: &str = "v=0\r\n\
        o=- 7 1 IN IP4 192.0.2.10\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.10\r\n\
        t=0 0\r\n\
        m=audio 4000 RTP/SAVP 111 0 8 101\r\n\
        a=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=ptime:20\r\n\
        a=maxptime:120\r\n\
        a=sendonly\r\n\
        a=rtcp-mux\r\n\
        a=rtcp:4001 IN IP4 192.0.2.11\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n\
        a=crypto:2 AEAD_AES_128_GCM inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHA==\r\n\
        a=ssrc:12345 cname:alice\r\n\
        a=x-custom\r\n";

    /// Trailing white space, which some peers leave on lines, does not
    /// make the description unreadable.
    #[test]
    fn trailing_white_space_on_a_line_is_not_part_of_its_value() {
        let sdp = SessionDescription::parse(
            "v=0 \r\no=- 1 1 IN IP4 192.0.2.1 \r\ns= \r\nc=IN IP4 192.0.2.1\t\r\nt=0 0 \r\n\
             m=audio 4000 RTP/AVP 0 \r\nb=AS:64 \r\na=rtpmap:0 PCMU/8000 \r\na=sendonly \r\na=rtcp-mux \r\n",
        )
        .unwrap();
        let m = &sdp.media[0];
        assert_eq!(m.direction(), Direction::SendOnly);
        assert!(m.is_rtcp_mux());
        assert_eq!(m.rtpmap(0).unwrap().encoding, "PCMU");
    }

    #[test]
    fn rfc8866_9_ptime_and_maxptime_may_be_reals() {
        let with = |ptime: &str, maxptime: &str| {
            SessionDescription::parse(&format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                 m=audio 4000 RTP/AVP 0\r\na=ptime:{ptime}\r\na=maxptime:{maxptime}\r\n"
            ))
            .map(|sdp| (sdp.media[0].ptime(), sdp.media[0].max_ptime()))
        };
        assert_eq!(with("20.0", "22.5"), Ok((Some(20), Some(23))));
        assert_eq!(with("0.4", "120.49"), Ok((Some(1), Some(120))));
        for bad in [
            "0",
            "0.0",
            ".5",
            "20.",
            "2.5.0",
            "-20",
            "20ms",
            "4294967295.5",
        ] {
            assert!(with(bad, "40").is_err(), "ptime {bad} accepted");
        }
    }

    #[test]
    fn rfc8866_6_typed_attributes_parse() {
        let sdp = SessionDescription::parse(AUDIO).unwrap();
        let m = &sdp.media[0];
        assert_eq!(m.payload_types().collect::<Vec<_>>(), [111, 0, 8, 101]);
        let opus = m.rtpmap(111).unwrap();
        assert_eq!(
            (opus.encoding.as_str(), opus.clock_rate, opus.channels),
            ("opus", 48000, Some(2))
        );
        assert_eq!(m.fmtp(111), Some("minptime=10;useinbandfec=1"));
        assert_eq!(m.fmtp(101), Some("0-16"));
        assert_eq!(m.ptime(), Some(20));
        assert_eq!(m.max_ptime(), Some(120));
        assert_eq!(m.direction(), Direction::SendOnly);
        assert!(m.is_rtcp_mux());
        assert_eq!(
            m.rtcp(),
            Some(&RtcpAttribute {
                port: 4001,
                address: Some(Address::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11))))
            })
        );
        assert_eq!(m.other_attribute("ssrc"), Some(Some("12345 cname:alice")));
        assert_eq!(m.other_attribute("x-custom"), Some(None));
        assert_eq!(sdp.to_string(), AUDIO);
    }

    #[test]
    fn rfc4568_9_1_crypto_attribute_parses() {
        let sdp = SessionDescription::parse(AUDIO).unwrap();
        let crypto: Vec<_> = sdp.media[0].crypto().collect();
        assert_eq!(crypto.len(), 2);
        assert_eq!(crypto[0].tag, 1);
        assert_eq!(crypto[0].suite, CryptoSuite::AesCm128HmacSha1_80);
        assert_eq!(crypto[0].keys[0].key_salt.len(), 30);
        assert_eq!(
            crypto[0].keys[0].lifetime,
            Some(KeyLifetime::PowerOfTwo(20))
        );
        assert_eq!(
            crypto[0].keys[0].mki,
            Some(Mki {
                value: 1,
                length: 4
            })
        );
        assert_eq!(crypto[1].suite, CryptoSuite::AeadAes128Gcm);
        assert_eq!(crypto[1].keys[0].key_salt.len(), 28);
    }

    #[test]
    fn rfc4568_6_1_multiple_keys_and_session_params_round_trip() {
        let line = "a=crypto:7 AES_256_CM_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|1048576;inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk|2^31|2:2 KDR=1 UNENCRYPTED_SRTCP";
        let text = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/SAVP 0\r\n{line}\r\n"
        );
        let sdp = SessionDescription::parse(&text).unwrap();
        let c = sdp.media[0].crypto().next().unwrap();
        assert_eq!(
            c.suite,
            CryptoSuite::Other("AES_256_CM_HMAC_SHA1_32".into())
        );
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.keys[0].lifetime, Some(KeyLifetime::Packets(1_048_576)));
        assert_eq!(
            c.keys[1].mki,
            Some(Mki {
                value: 2,
                length: 2
            })
        );
        assert_eq!(c.session_params, ["KDR=1", "UNENCRYPTED_SRTCP"]);
        assert_eq!(sdp.to_string(), text);
    }

    #[test]
    fn rfc4568_key_material_is_not_in_debug_output() {
        let sdp = SessionDescription::parse(AUDIO).unwrap();
        let debug = format!("{sdp:?}");
        assert!(!debug.contains("WVNfX19z"));
        assert!(debug.contains("***"));
    }

    #[test]
    fn rfc4568_9_1_bad_crypto_is_an_error_with_line() {
        for (bad, reason) in [
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 uri:http://x",
                "key method is not inline",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
                "key is not base64",
            ),
            ("a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:QUJD", "bad tag"),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|2^x",
                "bad lifetime",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|1:0",
                "bad mki",
            ),
            ("a=crypto:1", "missing crypto suite"),
        ] {
            let text = format!(
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/SAVP 0\r\n{bad}\r\n"
            );
            assert_eq!(
                SessionDescription::parse(&text),
                Err(SdpParseError::InvalidAttribute {
                    line: 6,
                    name: "crypto",
                    reason
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn rfc8866_5_errors_name_the_line() {
        let cases: &[(&str, SdpParseError)] = &[
            ("", SdpParseError::MissingLine { kind: 'v' }),
            ("v=1\r\n", SdpParseError::BadVersion { line: 1 }),
            (
                "o=- 1 1 IN IP4 1.2.3.4\r\n",
                SdpParseError::MissingLine { kind: 'v' },
            ),
            ("v=0\r\ns=-\r\n", SdpParseError::MissingLine { kind: 'o' }),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n",
                SdpParseError::MissingLine { kind: 's' },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n",
                SdpParseError::MissingLine { kind: 't' },
            ),
            (
                "v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n",
                SdpParseError::InvalidField {
                    line: 2,
                    field: "origin session id",
                },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio x RTP/AVP 0\r\n",
                SdpParseError::InvalidField {
                    line: 5,
                    field: "media port",
                },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP\r\n",
                SdpParseError::InvalidField {
                    line: 5,
                    field: "media formats",
                },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nq=1\r\n",
                SdpParseError::UnknownLineType { line: 5, kind: 'q' },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\nt=0 0\r\n",
                SdpParseError::UnexpectedLine { line: 6, kind: 't' },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\n",
                SdpParseError::DuplicateLine { line: 5, kind: 'c' },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nbogus\r\n",
                SdpParseError::MalformedLine { line: 5 },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\na=ptime:2.5.0\r\n",
                SdpParseError::InvalidAttribute {
                    line: 5,
                    name: "ptime",
                    reason: "not a number of milliseconds",
                },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\na=rtpmap:200 x/8000\r\n",
                SdpParseError::InvalidAttribute {
                    line: 5,
                    name: "rtpmap",
                    reason: "bad payload type",
                },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\na=sendonly:yes\r\n",
                SdpParseError::InvalidAttribute {
                    line: 5,
                    name: "sendonly",
                    reason: "takes no value",
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                SessionDescription::parse(text).as_ref(),
                Err(expected),
                "{text:?}"
            );
        }
    }

    #[test]
    fn rfc8866_5_rejects_oversized_and_non_utf8_input() {
        let big = "a".repeat(MAX_SDP_LEN + 1);
        assert_eq!(
            SessionDescription::parse(&big),
            Err(SdpParseError::TooLarge {
                len: MAX_SDP_LEN + 1
            })
        );
        assert_eq!(
            SessionDescription::parse_bytes(b"v=0\r\no=\xff\r\n"),
            Err(SdpParseError::NotUtf8 { line: 2 })
        );
    }

    #[test]
    fn writer_drops_line_breaks_inside_fields() {
        let mut sdp = SessionDescription::parse(OFFER).unwrap();
        sdp.session_name = "evil\r\nm=video 1 RTP/AVP 0".into();
        let text = sdp.to_string();
        let back = SessionDescription::parse(&text).unwrap();
        assert_eq!(back.media.len(), 2);
        assert_eq!(back.session_name, "evilm=video 1 RTP/AVP 0");
    }

    // --- property tests ---------------------------------------------------

    fn token() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9][a-zA-Z0-9._+-]{0,8}"
    }

    fn text() -> impl Strategy<Value = String> {
        "[ -~]{0,16}".prop_map(|s| s)
    }

    /// An attribute's value: the parser drops white space at the end of an
    /// `a=` line (peers leave it there), so no value ends in it.
    fn attribute_value(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[ -~]{{0,{max}}}"))
            .expect("a valid pattern")
            .prop_map(|s| s.trim_end_matches([' ', '\t']).to_owned())
    }

    fn address() -> impl Strategy<Value = Address> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| Address::Ip(IpAddr::from(b))),
            any::<[u8; 16]>().prop_map(|b| Address::Ip(IpAddr::from(b))),
            ("[a-z][a-z0-9.-]{0,10}", any::<bool>()).prop_map(|(name, v6)| Address::Name {
                address_type: if v6 {
                    AddressType::Ip6
                } else {
                    AddressType::Ip4
                },
                name,
            }),
        ]
    }

    fn connection() -> impl Strategy<Value = Connection> {
        (
            address(),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(address, ttl, count)| {
                let (ttl, count) = match address.address_type() {
                    AddressType::Ip4 => (ttl, ttl.and(count)),
                    AddressType::Ip6 => (None, count),
                };
                Connection {
                    address,
                    ttl,
                    count,
                }
            })
    }

    fn crypto() -> impl Strategy<Value = CryptoAttribute> {
        let suite = prop_oneof![
            Just(CryptoSuite::AesCm128HmacSha1_80),
            Just(CryptoSuite::AesCm128HmacSha1_32),
            Just(CryptoSuite::AeadAes128Gcm),
            "[A-Z][A-Z0-9_]{0,20}".prop_map(|s| CryptoSuite::from_token(&s)),
        ];
        let key = (
            proptest::collection::vec(any::<u8>(), 1..=MAX_KEY_SALT_LEN),
            proptest::option::of(prop_oneof![
                (0u8..=64).prop_map(KeyLifetime::PowerOfTwo),
                any::<u64>().prop_map(KeyLifetime::Packets),
            ]),
            proptest::option::of(
                (any::<u64>(), 1u8..=128).prop_map(|(value, length)| Mki { value, length }),
            ),
        )
            .prop_map(|(key_salt, lifetime, mki)| KeyParams {
                key_salt,
                lifetime,
                mki,
            });
        (
            0u32..=999_999_999,
            suite,
            proptest::collection::vec(key, 1..3),
            proptest::collection::vec("[A-Z][A-Z_=0-9]{0,10}", 0..3),
        )
            .prop_map(|(tag, suite, keys, session_params)| CryptoAttribute {
                tag,
                suite,
                keys,
                session_params,
            })
    }

    fn attribute() -> impl Strategy<Value = Attribute> {
        prop_oneof![
            (
                0u8..=127,
                token(),
                any::<u32>(),
                proptest::option::of(any::<u16>())
            )
                .prop_map(|(payload_type, encoding, clock_rate, channels)| {
                    Attribute::RtpMap(RtpMap {
                        payload_type,
                        encoding: encoding.replace('/', ""),
                        clock_rate,
                        channels,
                    })
                }),
            (token(), attribute_value(20))
                .prop_map(|(format, parameters)| Attribute::Fmtp(Fmtp { format, parameters })),
            any::<u32>().prop_map(Attribute::Ptime),
            any::<u32>().prop_map(Attribute::MaxPtime),
            (any::<bool>(), any::<bool>())
                .prop_map(|(s, r)| Attribute::Direction(Direction::from_flags(s, r))),
            Just(Attribute::RtcpMux),
            (any::<u16>(), proptest::option::of(address()))
                .prop_map(|(port, address)| Attribute::Rtcp(RtcpAttribute { port, address })),
            crypto().prop_map(Attribute::Crypto),
            (
                "x-[a-z0-9-]{0,10}",
                proptest::option::of(attribute_value(16))
            )
                .prop_map(|(name, value)| Attribute::Other { name, value }),
        ]
    }

    fn media() -> impl Strategy<Value = MediaDescription> {
        (
            prop_oneof![
                Just(MediaKind::Audio),
                Just(MediaKind::Video),
                "x[a-z]{0,5}".prop_map(|s| MediaKind::from_token(&s))
            ],
            any::<u16>(),
            proptest::option::of(any::<u16>()),
            prop_oneof![
                Just(Protocol::RtpAvp),
                Just(Protocol::RtpSavp),
                Just(Protocol::RtpAvpf),
                "UDP/[A-Z]{1,4}".prop_map(|s| Protocol::from_token(&s))
            ],
            proptest::collection::vec(token(), 1..5),
            proptest::option::of(text()),
            proptest::option::of(connection()),
            proptest::collection::vec(attribute(), 0..8),
        )
            .prop_map(
                |(
                    kind,
                    port,
                    port_count,
                    protocol,
                    formats,
                    information,
                    connection,
                    attributes,
                )| MediaDescription {
                    kind,
                    port,
                    port_count,
                    protocol,
                    formats,
                    information,
                    connection,
                    bandwidths: vec![Bandwidth {
                        modifier: "AS".into(),
                        value: 64,
                    }],
                    encryption_key: None,
                    attributes,
                },
            )
    }

    fn description() -> impl Strategy<Value = SessionDescription> {
        (
            (token(), any::<u64>(), any::<u64>(), address()),
            text(),
            proptest::option::of(text()),
            proptest::option::of(connection()),
            proptest::collection::vec(
                (
                    any::<u64>(),
                    any::<u64>(),
                    proptest::collection::vec("[0-9dhms ]{1,10}", 0..2),
                ),
                1..3,
            ),
            proptest::collection::vec(attribute(), 0..4),
            proptest::collection::vec(media(), 0..4),
        )
            .prop_map(
                |(
                    (username, id, version, address),
                    session_name,
                    information,
                    connection,
                    timing,
                    attributes,
                    media,
                )| {
                    let mut sdp = SessionDescription::new(Origin {
                        username,
                        session_id: id,
                        session_version: version,
                        address,
                    });
                    sdp.session_name = session_name;
                    sdp.information = information;
                    sdp.connection = connection;
                    sdp.timing = timing
                        .into_iter()
                        .map(|(start, stop, repeats)| Timing {
                            start,
                            stop,
                            repeats,
                        })
                        .collect();
                    sdp.attributes = attributes;
                    sdp.media = media;
                    sdp
                },
            )
    }

    proptest! {
        #[test]
        fn rfc8866_parse_of_write_is_identity(sdp in description()) {
            let text = sdp.to_string();
            let back = SessionDescription::parse(&text);
            prop_assert_eq!(back.as_ref(), Ok(&sdp), "{}", text);
        }

        #[test]
        fn rfc8866_parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SessionDescription::parse_bytes(&bytes);
        }

        #[test]
        fn rfc8866_parse_never_panics_on_mutated_descriptions(
            cut in 0..AUDIO.len(),
            insert in "[ -~\r\n]{0,12}",
        ) {
            let mut text = AUDIO.as_bytes()[..cut].to_vec();
            text.extend_from_slice(insert.as_bytes());
            text.extend_from_slice(&AUDIO.as_bytes()[cut..]);
            if let Ok(sdp) = SessionDescription::parse_bytes(&text) {
                let again = SessionDescription::parse(&sdp.to_string());
                prop_assert_eq!(again, Ok(sdp));
            }
        }
    }
}
