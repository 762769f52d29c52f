//! STUN messages (RFC 8489) with the attributes TURN (RFC 8656) needs,
//! MESSAGE-INTEGRITY (HMAC-SHA1), FINGERPRINT (CRC-32), and TURN's
//! ChannelData framing.
//!
//! Decoding never panics: every malformed input is a [`StunError`] that says
//! what was wrong and at which byte offset.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

/// The fixed magic cookie of RFC 5389 and later.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;
/// XOR constant of the FINGERPRINT attribute.
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// The class of a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request.
    Request,
    /// An indication (no response).
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// A STUN method (12 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Method = Method(0x001);
    /// Allocate (RFC 8656).
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh.
    pub const REFRESH: Method = Method(0x004);
    /// Send (indication).
    pub const SEND: Method = Method(0x006);
    /// Data (indication).
    pub const DATA: Method = Method(0x007);
    /// CreatePermission.
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind.
    pub const CHANNEL_BIND: Method = Method(0x009);

    /// A method from its 12-bit number; `None` above 0xFFF.
    #[must_use]
    pub fn new(value: u16) -> Option<Method> {
        (value <= 0xFFF).then_some(Method(value))
    }

    /// The method number.
    #[must_use]
    pub fn value(self) -> u16 {
        self.0
    }
}

/// The 96-bit transaction ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// A fresh ID from `rng`.
    pub fn random(rng: &mut impl rand::RngCore) -> TransactionId {
        let mut id = [0u8; 12];
        rng.fill_bytes(&mut id);
        TransactionId(id)
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The attribute type numbers this module knows.
pub mod attr {
    /// MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME.
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// DONT-FRAGMENT.
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
}

/// One attribute, typed where this module knows the type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute {
    /// MAPPED-ADDRESS (plain, from old servers).
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS: our address as the server sees it.
    XorMappedAddress(SocketAddr),
    /// XOR-RELAYED-ADDRESS: the allocation's relayed address.
    XorRelayedAddress(SocketAddr),
    /// XOR-PEER-ADDRESS.
    XorPeerAddress(SocketAddr),
    /// USERNAME.
    Username(String),
    /// REALM.
    Realm(String),
    /// NONCE.
    Nonce(String),
    /// SOFTWARE.
    Software(String),
    /// ERROR-CODE: code 300-699 and reason.
    ErrorCode {
        /// The code.
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// UNKNOWN-ATTRIBUTES.
    UnknownAttributes(Vec<u16>),
    /// LIFETIME in seconds.
    Lifetime(u32),
    /// REQUESTED-TRANSPORT: the IANA protocol number (17 for UDP).
    RequestedTransport(u8),
    /// CHANNEL-NUMBER.
    ChannelNumber(u16),
    /// DATA.
    Data(Vec<u8>),
    /// DONT-FRAGMENT.
    DontFragment,
    /// Any other attribute, kept as it came.
    Other {
        /// The type number.
        kind: u16,
        /// The value (without padding).
        value: Vec<u8>,
    },
}

/// Why bytes are not a valid STUN message or ChannelData frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Fewer bytes than the header or a declared length needs.
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The two top bits are not zero or the magic cookie is wrong.
    #[error("not a STUN message (first byte {first_byte:#04x}, cookie {cookie:#010x})")]
    NotStun {
        /// The first byte.
        first_byte: u8,
        /// The cookie field.
        cookie: u32,
    },
    /// The header's length is not a multiple of 4.
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// The header's length disagrees with the bytes given.
    #[error("header declares {declared} bytes of attributes, {actual} follow")]
    LengthMismatch {
        /// What the header says.
        declared: usize,
        /// What follows the header.
        actual: usize,
    },
    /// An attribute runs past the end of the message.
    #[error("attribute {kind:#06x} at offset {offset} runs past the end")]
    AttributeOverrun {
        /// The attribute type.
        kind: u16,
        /// Its offset in the message.
        offset: usize,
    },
    /// An attribute's value is malformed.
    #[error("attribute {kind:#06x} at offset {offset}: {reason}")]
    BadAttribute {
        /// The attribute type.
        kind: u16,
        /// Its offset in the message.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// FINGERPRINT is not the last attribute, or its CRC is wrong.
    #[error("FINGERPRINT at offset {offset} is misplaced or wrong")]
    BadFingerprint {
        /// Its offset.
        offset: usize,
    },
    /// A ChannelData channel number outside 0x4000-0x4FFF.
    #[error("channel number {0:#06x} outside 0x4000-0x4FFF")]
    BadChannel(u16),
}

/// A decoded or to-be-encoded STUN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunMessage {
    /// The class.
    pub class: Class,
    /// The method.
    pub method: Method,
    /// The transaction ID.
    pub transaction_id: TransactionId,
    /// The attributes in order, without MESSAGE-INTEGRITY and FINGERPRINT
    /// (those are added by [`encode`](Self::encode) and checked on decode).
    pub attributes: Vec<Attribute>,
    /// Set by [`decode`](Self::decode) when the message carried
    /// MESSAGE-INTEGRITY: the bytes it covers and the HMAC it carried.
    integrity: Option<(Vec<u8>, [u8; 20])>,
    /// Set by decode when a valid FINGERPRINT was present.
    fingerprinted: bool,
}

/// The key for MESSAGE-INTEGRITY.
#[derive(Clone, PartialEq, Eq)]
pub struct IntegrityKey(Vec<u8>);

impl IntegrityKey {
    /// The long-term key (RFC 8489 §9.2.2): MD5(username ":" realm ":" password).
    #[must_use]
    pub fn long_term(username: &str, realm: &str, password: &str) -> IntegrityKey {
        let mut md5 = Md5::new();
        md5.update(username.as_bytes());
        md5.update(b":");
        md5.update(realm.as_bytes());
        md5.update(b":");
        md5.update(password.as_bytes());
        IntegrityKey(md5.finalize().to_vec())
    }

    /// A short-term key: the password itself.
    #[must_use]
    pub fn short_term(password: &str) -> IntegrityKey {
        IntegrityKey(password.as_bytes().to_vec())
    }

    fn hmac(&self, parts: &[&[u8]]) -> [u8; 20] {
        // HMAC accepts keys of any length.
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&self.0) else {
            return [0; 20];
        };
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IntegrityKey(***)")
    }
}

impl StunMessage {
    /// A message with no attributes.
    #[must_use]
    pub fn new(class: Class, method: Method, transaction_id: TransactionId) -> StunMessage {
        StunMessage {
            class,
            method,
            transaction_id,
            attributes: Vec::new(),
            integrity: None,
            fingerprinted: false,
        }
    }

    /// Adds an attribute (builder style).
    #[must_use]
    pub fn with(mut self, attribute: Attribute) -> StunMessage {
        self.attributes.push(attribute);
        self
    }

    /// Whether `data` starts like a STUN message (RFC 7983 demultiplexing:
    /// first byte 0-3 and the magic cookie).
    #[must_use]
    pub fn is_stun(data: &[u8]) -> bool {
        data.len() >= HEADER_LEN
            && data[0] < 4
            && u32::from_be_bytes([data[4], data[5], data[6], data[7]]) == MAGIC_COOKIE
    }

    /// The total length of the message at the start of `data` (header plus
    /// attributes), for framing a stream; `None` until 4 bytes are there.
    #[must_use]
    pub fn frame_len(data: &[u8]) -> Option<usize> {
        let len = u16::from_be_bytes([*data.get(2)?, *data.get(3)?]);
        Some(HEADER_LEN + usize::from(len))
    }

    /// Parses one complete message. MESSAGE-INTEGRITY is kept for
    /// [`verify_integrity`](Self::verify_integrity); a FINGERPRINT must be
    /// last and correct; attributes after MESSAGE-INTEGRITY other than
    /// FINGERPRINT are ignored (RFC 8489 §14.5).
    ///
    /// # Errors
    ///
    /// A [`StunError`] naming the problem and its offset.
    pub fn decode(data: &[u8]) -> Result<StunMessage, StunError> {
        if data.len() < HEADER_LEN {
            return Err(StunError::Truncated {
                needed: HEADER_LEN,
                available: data.len(),
            });
        }
        let kind = u16::from_be_bytes([data[0], data[1]]);
        let length = u16::from_be_bytes([data[2], data[3]]);
        let cookie = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        if kind & 0xC000 != 0 || cookie != MAGIC_COOKIE {
            return Err(StunError::NotStun {
                first_byte: data[0],
                cookie,
            });
        }
        if !length.is_multiple_of(4) {
            return Err(StunError::UnalignedLength(length));
        }
        if data.len() - HEADER_LEN != usize::from(length) {
            return Err(StunError::LengthMismatch {
                declared: usize::from(length),
                actual: data.len() - HEADER_LEN,
            });
        }
        let (class, method) = split_type(kind);
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&data[8..20]);
        let transaction_id = TransactionId(transaction_id);
        let mut message = StunMessage::new(class, method, transaction_id);

        let mut offset = HEADER_LEN;
        let mut after_integrity = false;
        while offset < data.len() {
            let Some(head) = data.get(offset..offset + 4) else {
                return Err(StunError::Truncated {
                    needed: offset + 4,
                    available: data.len(),
                });
            };
            let kind = u16::from_be_bytes([head[0], head[1]]);
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let start = offset + 4;
            let Some(value) = data.get(start..start + len) else {
                return Err(StunError::AttributeOverrun { kind, offset });
            };
            let padded = start + len.div_ceil(4) * 4;
            if padded > data.len() {
                return Err(StunError::AttributeOverrun { kind, offset });
            }
            match kind {
                attr::FINGERPRINT => {
                    if padded != data.len() || len != 4 {
                        return Err(StunError::BadFingerprint { offset });
                    }
                    let carried = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                    // The CRC covers everything before the attribute, with the
                    // header length as it is (it already includes FINGERPRINT).
                    if carried != crc32(&data[..offset]) ^ FINGERPRINT_XOR {
                        return Err(StunError::BadFingerprint { offset });
                    }
                    message.fingerprinted = true;
                }
                _ if after_integrity => {}
                attr::MESSAGE_INTEGRITY => {
                    if len != 20 {
                        return Err(StunError::BadAttribute {
                            kind,
                            offset,
                            reason: "MESSAGE-INTEGRITY is not 20 bytes",
                        });
                    }
                    // Covered: the message up to the attribute, with the
                    // length field counting up to the end of the attribute.
                    let mut covered = data[..offset].to_vec();
                    let covered_len = (padded - HEADER_LEN) as u16;
                    covered[2..4].copy_from_slice(&covered_len.to_be_bytes());
                    let mut hmac = [0u8; 20];
                    hmac.copy_from_slice(value);
                    message.integrity = Some((covered, hmac));
                    after_integrity = true;
                }
                _ => {
                    let attribute =
                        decode_attribute(kind, value, &transaction_id).map_err(|reason| {
                            StunError::BadAttribute {
                                kind,
                                offset,
                                reason,
                            }
                        })?;
                    message.attributes.push(attribute);
                }
            }
            offset = padded;
        }
        Ok(message)
    }

    /// Serialises the message, with MESSAGE-INTEGRITY when a key is given and
    /// FINGERPRINT when asked.
    #[must_use]
    pub fn encode(&self, integrity: Option<&IntegrityKey>, fingerprint: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&join_type(self.class, self.method).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.0);
        for a in &self.attributes {
            encode_attribute(&mut out, a, &self.transaction_id);
        }
        if let Some(key) = integrity {
            set_len(&mut out, 24);
            let hmac = key.hmac(&[&out]);
            put_attr(&mut out, attr::MESSAGE_INTEGRITY, &hmac);
        }
        if fingerprint {
            set_len(&mut out, 8);
            let crc = crc32(&out) ^ FINGERPRINT_XOR;
            put_attr(&mut out, attr::FINGERPRINT, &crc.to_be_bytes());
        }
        set_len(&mut out, 0);
        out
    }

    /// Whether the message carried MESSAGE-INTEGRITY.
    #[must_use]
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether the message carried a (correct) FINGERPRINT.
    #[must_use]
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprinted
    }

    /// Checks MESSAGE-INTEGRITY with `key`; false when absent or wrong.
    #[must_use]
    pub fn verify_integrity(&self, key: &IntegrityKey) -> bool {
        match &self.integrity {
            Some((covered, carried)) => {
                let expected = key.hmac(&[covered]);
                // Constant time is not needed for a client checking server replies,
                // but costs nothing.
                expected
                    .iter()
                    .zip(carried)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            }
            None => false,
        }
    }

    /// The first attribute the closure picks.
    pub fn find<'a, T>(&'a self, pick: impl Fn(&'a Attribute) -> Option<T>) -> Option<T> {
        self.attributes.iter().find_map(pick)
    }

    /// ERROR-CODE's code and reason.
    #[must_use]
    pub fn error_code(&self) -> Option<(u16, &str)> {
        self.find(|a| match a {
            Attribute::ErrorCode { code, reason } => Some((*code, reason.as_str())),
            _ => None,
        })
    }

    /// REALM.
    #[must_use]
    pub fn realm(&self) -> Option<&str> {
        self.find(|a| match a {
            Attribute::Realm(r) => Some(r.as_str()),
            _ => None,
        })
    }

    /// NONCE.
    #[must_use]
    pub fn nonce(&self) -> Option<&str> {
        self.find(|a| match a {
            Attribute::Nonce(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// LIFETIME.
    #[must_use]
    pub fn lifetime(&self) -> Option<u32> {
        self.find(|a| match a {
            Attribute::Lifetime(l) => Some(*l),
            _ => None,
        })
    }

    /// XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS.
    #[must_use]
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorMappedAddress(s) => Some(*s),
            _ => None,
        })
        .or_else(|| {
            self.find(|a| match a {
                Attribute::MappedAddress(s) => Some(*s),
                _ => None,
            })
        })
    }

    /// XOR-RELAYED-ADDRESS.
    #[must_use]
    pub fn relayed_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorRelayedAddress(s) => Some(*s),
            _ => None,
        })
    }

    /// XOR-PEER-ADDRESS.
    #[must_use]
    pub fn peer_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorPeerAddress(s) => Some(*s),
            _ => None,
        })
    }

    /// DATA.
    #[must_use]
    pub fn data(&self) -> Option<&[u8]> {
        self.find(|a| match a {
            Attribute::Data(d) => Some(d.as_slice()),
            _ => None,
        })
    }
}

/// A TURN ChannelData message (RFC 8656 §12.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number, 0x4000-0x4FFF.
    pub channel: u16,
    /// The application data.
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Whether the first byte marks ChannelData (0x40-0x4F).
    #[must_use]
    pub fn is_channel_data(data: &[u8]) -> bool {
        data.first().is_some_and(|b| (0x40..=0x4F).contains(b))
    }

    /// Parses one frame. Over UDP trailing padding is allowed; over a
    /// stream use [`frame_len`](Self::frame_len) to cut the frame first.
    ///
    /// # Errors
    ///
    /// [`StunError::Truncated`] or [`StunError::BadChannel`].
    pub fn decode(data: &'a [u8]) -> Result<ChannelData<'a>, StunError> {
        if data.len() < 4 {
            return Err(StunError::Truncated {
                needed: 4,
                available: data.len(),
            });
        }
        let channel = u16::from_be_bytes([data[0], data[1]]);
        if !(0x4000..=0x4FFF).contains(&channel) {
            return Err(StunError::BadChannel(channel));
        }
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let Some(payload) = data.get(4..4 + len) else {
            return Err(StunError::Truncated {
                needed: 4 + len,
                available: data.len(),
            });
        };
        Ok(ChannelData {
            channel,
            data: payload,
        })
    }

    /// The frame length on a stream (padded to 4); `None` until 4 bytes are there.
    #[must_use]
    pub fn frame_len(data: &[u8]) -> Option<usize> {
        let len = usize::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?]));
        Some(4 + len.div_ceil(4) * 4)
    }

    /// Serialises the frame; `pad` adds the padding streams need.
    #[must_use]
    pub fn encode(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
        let len = data.len().min(usize::from(u16::MAX));
        let mut out = Vec::with_capacity(4 + len + 3);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&data[..len]);
        if pad {
            out.resize(4 + len.div_ceil(4) * 4, 0);
        }
        out
    }
}

/// CRC-32 (IEEE 802.3, as in FINGERPRINT).
#[must_use]
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc ^ 0xFFFF_FFFF
}

fn split_type(kind: u16) -> (Class, Method) {
    let class = match ((kind >> 7) & 0x2) | ((kind >> 4) & 0x1) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    let method = (kind & 0x000F) | ((kind >> 1) & 0x0070) | ((kind >> 2) & 0x0F80);
    (class, Method(method))
}

fn join_type(class: Class, method: Method) -> u16 {
    let c: u16 = match class {
        Class::Request => 0,
        Class::Indication => 1,
        Class::Success => 2,
        Class::Error => 3,
    };
    let m = method.0;
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn set_len(out: &mut [u8], extra: usize) {
    let len = (out.len() - HEADER_LEN + extra) as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = value.len().min(0xFFFF);
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&value[..len]);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn encode_attribute(out: &mut Vec<u8>, a: &Attribute, tid: &TransactionId) {
    match a {
        Attribute::MappedAddress(s) => put_attr(out, attr::MAPPED_ADDRESS, &address(*s, None)),
        Attribute::XorMappedAddress(s) => {
            put_attr(out, attr::XOR_MAPPED_ADDRESS, &address(*s, Some(tid)));
        }
        Attribute::XorRelayedAddress(s) => {
            put_attr(out, attr::XOR_RELAYED_ADDRESS, &address(*s, Some(tid)));
        }
        Attribute::XorPeerAddress(s) => {
            put_attr(out, attr::XOR_PEER_ADDRESS, &address(*s, Some(tid)));
        }
        Attribute::Username(v) => put_attr(out, attr::USERNAME, v.as_bytes()),
        Attribute::Realm(v) => put_attr(out, attr::REALM, v.as_bytes()),
        Attribute::Nonce(v) => put_attr(out, attr::NONCE, v.as_bytes()),
        Attribute::Software(v) => put_attr(out, attr::SOFTWARE, v.as_bytes()),
        Attribute::ErrorCode { code, reason } => {
            let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
            v.extend_from_slice(reason.as_bytes());
            put_attr(out, attr::ERROR_CODE, &v);
        }
        Attribute::UnknownAttributes(list) => {
            let v: Vec<u8> = list.iter().flat_map(|k| k.to_be_bytes()).collect();
            put_attr(out, attr::UNKNOWN_ATTRIBUTES, &v);
        }
        Attribute::Lifetime(l) => put_attr(out, attr::LIFETIME, &l.to_be_bytes()),
        Attribute::RequestedTransport(p) => {
            put_attr(out, attr::REQUESTED_TRANSPORT, &[*p, 0, 0, 0])
        }
        Attribute::ChannelNumber(c) => {
            let b = c.to_be_bytes();
            put_attr(out, attr::CHANNEL_NUMBER, &[b[0], b[1], 0, 0]);
        }
        Attribute::Data(d) => put_attr(out, attr::DATA, d),
        Attribute::DontFragment => put_attr(out, attr::DONT_FRAGMENT, &[]),
        Attribute::Other { kind, value } => put_attr(out, *kind, value),
    }
}

fn address(addr: SocketAddr, xor: Option<&TransactionId>) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = addr.port();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let mut v = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.push(1);
            v.extend_from_slice(&port.to_be_bytes());
            let mut o = ip.octets();
            if xor.is_some() {
                for (b, k) in o.iter_mut().zip(cookie) {
                    *b ^= k;
                }
            }
            v.extend_from_slice(&o);
        }
        IpAddr::V6(ip) => {
            v.push(2);
            v.extend_from_slice(&port.to_be_bytes());
            let mut o = ip.octets();
            if let Some(tid) = xor {
                let key = cookie.iter().chain(tid.0.iter());
                for (b, k) in o.iter_mut().zip(key) {
                    *b ^= k;
                }
            }
            v.extend_from_slice(&o);
        }
    }
    v
}

fn parse_address(value: &[u8], xor: Option<&TransactionId>) -> Result<SocketAddr, &'static str> {
    if value.len() < 4 {
        return Err("address shorter than 4 bytes");
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    match value[1] {
        1 => {
            let Ok(mut o) = <[u8; 4]>::try_from(&value[4..]) else {
                return Err("IPv4 address is not 4 bytes");
            };
            if xor.is_some() {
                for (b, k) in o.iter_mut().zip(cookie) {
                    *b ^= k;
                }
            }
            Ok(SocketAddr::new(Ipv4Addr::from(o).into(), port))
        }
        2 => {
            let Ok(mut o) = <[u8; 16]>::try_from(&value[4..]) else {
                return Err("IPv6 address is not 16 bytes");
            };
            if let Some(tid) = xor {
                let key = cookie.iter().chain(tid.0.iter());
                for (b, k) in o.iter_mut().zip(key) {
                    *b ^= k;
                }
            }
            Ok(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => Err("unknown address family"),
    }
}

fn text(value: &[u8], max: usize) -> Result<String, &'static str> {
    if value.len() > max {
        return Err("text longer than allowed");
    }
    String::from_utf8(value.to_vec()).map_err(|_| "text is not UTF-8")
}

/// The reason phrase, repaired to UTF-8 and cut to 763 bytes (RFC 8489 §14.8).
fn reason_text(value: &[u8]) -> String {
    let mut reason = String::from_utf8_lossy(value).into_owned();
    if reason.len() > 763 {
        let mut end = 763;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

fn decode_attribute(
    kind: u16,
    value: &[u8],
    tid: &TransactionId,
) -> Result<Attribute, &'static str> {
    let u32_value = || -> Result<u32, &'static str> {
        <[u8; 4]>::try_from(value)
            .map(u32::from_be_bytes)
            .map_err(|_| "value is not 4 bytes")
    };
    Ok(match kind {
        attr::MAPPED_ADDRESS => Attribute::MappedAddress(parse_address(value, None)?),
        attr::XOR_MAPPED_ADDRESS => Attribute::XorMappedAddress(parse_address(value, Some(tid))?),
        attr::XOR_RELAYED_ADDRESS => Attribute::XorRelayedAddress(parse_address(value, Some(tid))?),
        attr::XOR_PEER_ADDRESS => Attribute::XorPeerAddress(parse_address(value, Some(tid))?),
        attr::USERNAME => Attribute::Username(text(value, 513)?),
        attr::REALM => Attribute::Realm(text(value, 763)?),
        attr::NONCE => Attribute::Nonce(text(value, 763)?),
        attr::SOFTWARE => Attribute::Software(text(value, 763)?),
        attr::ERROR_CODE => {
            if value.len() < 4 {
                return Err("ERROR-CODE shorter than 4 bytes");
            }
            let class = u16::from(value[2] & 0x07);
            let number = u16::from(value[3]);
            if !(3..=6).contains(&class) || number > 99 {
                return Err("error code outside 300-699");
            }
            Attribute::ErrorCode {
                code: class * 100 + number,
                reason: reason_text(&value[4..]),
            }
        }
        attr::UNKNOWN_ATTRIBUTES => {
            if !value.len().is_multiple_of(2) {
                return Err("odd length");
            }
            Attribute::UnknownAttributes(
                value
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect(),
            )
        }
        attr::LIFETIME => Attribute::Lifetime(u32_value()?),
        attr::REQUESTED_TRANSPORT => Attribute::RequestedTransport(u32_value()?.to_be_bytes()[0]),
        attr::CHANNEL_NUMBER => Attribute::ChannelNumber((u32_value()? >> 16) as u16),
        attr::DATA => Attribute::Data(value.to_vec()),
        attr::DONT_FRAGMENT => Attribute::DontFragment,
        _ => Attribute::Other {
            kind,
            value: value.to_vec(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 5769 §2.2: sample IPv4 response.
    #[test]
    fn rfc5769_2_2_ipv4_response_decodes_and_verifies() {
        let data = hex("0101 003c 2112a442 b7e7a701 bc34d686 fa87dfae
             8022 000b 74657374 20766563 746f7220
             0020 0008 0001a147 e112a643
             0008 0014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
             8028 0004 c07d4c96");
        let m = StunMessage::decode(&data).unwrap();
        assert_eq!(m.class, Class::Success);
        assert_eq!(m.method, Method::BINDING);
        assert_eq!(m.mapped_address(), Some("192.0.2.1:32853".parse().unwrap()));
        assert!(m.has_fingerprint());
        assert!(m.verify_integrity(&IntegrityKey::short_term("VOkJxbRl1RmTxUk/WvJxBt")));
        assert!(!m.verify_integrity(&IntegrityKey::short_term("wrong")));
    }

    /// RFC 5769 §2.3: sample IPv6 response.
    #[test]
    fn rfc5769_2_3_ipv6_response_decodes() {
        let data = hex("0101 0048 2112a442 b7e7a701 bc34d686 fa87dfae
             8022 000b 74657374 20766563 746f7220
             0020 0014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
             0008 0014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
             8028 0004 c8fb0b4c");
        let m = StunMessage::decode(&data).unwrap();
        assert_eq!(
            m.mapped_address(),
            Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            )
        );
        assert!(m.verify_integrity(&IntegrityKey::short_term("VOkJxbRl1RmTxUk/WvJxBt")));
    }

    /// RFC 5769 §2.4: request with long-term authentication.
    #[test]
    fn rfc5769_2_4_long_term_key_verifies() {
        let data = hex("0001 0060 2112a442 78ad3433 c6ad72c0 29da412e
             0006 0012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
             0015 001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
             0014 000b 6578616d 706c652e 6f726700
             0008 0014 f67024 65 6dd64a3e 02b8e071 2e85c9a2 8ca89666");
        let m = StunMessage::decode(&data).unwrap();
        assert_eq!(m.realm(), Some("example.org"));
        // The username is "マトリックス" and the password "TheMatrIX" after SASLprep.
        let key = IntegrityKey::long_term(
            "\u{30de}\u{30c8}\u{30ea}\u{30c3}\u{30af}\u{30b9}",
            "example.org",
            "TheMatrIX",
        );
        assert!(m.verify_integrity(&key));
    }

    #[test]
    fn encode_then_decode_keeps_every_attribute() {
        let tid = TransactionId([7; 12]);
        let m = StunMessage::new(Class::Request, Method::CHANNEL_BIND, tid)
            .with(Attribute::ChannelNumber(0x4001))
            .with(Attribute::XorPeerAddress("127.0.0.1:4000".parse().unwrap()))
            .with(Attribute::XorPeerAddress("[::1]:4000".parse().unwrap()))
            .with(Attribute::Lifetime(600))
            .with(Attribute::RequestedTransport(17))
            .with(Attribute::Username("1700000000:alice".into()))
            .with(Attribute::Data(vec![1, 2, 3]))
            .with(Attribute::ErrorCode {
                code: 438,
                reason: "Stale Nonce".into(),
            })
            .with(Attribute::DontFragment);
        let key = IntegrityKey::long_term("alice", "example.test", "secret");
        let bytes = m.encode(Some(&key), true);
        let back = StunMessage::decode(&bytes).unwrap();
        assert_eq!(back.attributes, m.attributes);
        assert_eq!(
            (back.class, back.method),
            (Class::Request, Method::CHANNEL_BIND)
        );
        assert!(back.verify_integrity(&key));
        assert!(back.has_fingerprint());
    }

    #[test]
    fn corrupted_fingerprint_and_integrity_are_caught() {
        let m = StunMessage::new(Class::Request, Method::BINDING, TransactionId([1; 12]))
            .with(Attribute::Software("x".into()));
        let key = IntegrityKey::short_term("pw");
        let mut bytes = m.encode(Some(&key), true);
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        assert!(matches!(
            StunMessage::decode(&bytes),
            Err(StunError::BadFingerprint { .. })
        ));
        let mut bytes = m.encode(Some(&key), false);
        bytes[HEADER_LEN + 4] ^= 1; // inside SOFTWARE, covered by the HMAC
        assert!(!StunMessage::decode(&bytes).unwrap().verify_integrity(&key));
    }

    #[test]
    fn malformed_input_gives_typed_errors() {
        assert!(matches!(
            StunMessage::decode(&[0; 3]),
            Err(StunError::Truncated { .. })
        ));
        let mut ok = StunMessage::new(Class::Request, Method::BINDING, TransactionId([0; 12]))
            .encode(None, false);
        ok[4] = 0;
        assert!(matches!(
            StunMessage::decode(&ok),
            Err(StunError::NotStun { .. })
        ));
        let mut m = StunMessage::new(Class::Request, Method::BINDING, TransactionId([0; 12]))
            .with(Attribute::Lifetime(1))
            .encode(None, false);
        m[HEADER_LEN + 3] = 40; // attribute longer than the message
        assert!(matches!(
            StunMessage::decode(&m),
            Err(StunError::AttributeOverrun {
                kind: 0x000D,
                offset: 20
            })
        ));
        m[HEADER_LEN + 3] = 3; // LIFETIME of 3 bytes
        assert!(matches!(
            StunMessage::decode(&m),
            Err(StunError::BadAttribute { kind: 0x000D, .. })
        ));
    }

    #[test]
    fn class_and_method_bits_interleave() {
        // RFC 8656: Allocate success is 0x0103, ChannelBind error 0x0119.
        assert_eq!(join_type(Class::Success, Method::ALLOCATE), 0x0103);
        assert_eq!(join_type(Class::Error, Method::CHANNEL_BIND), 0x0119);
        assert_eq!(join_type(Class::Indication, Method::DATA), 0x0017);
        for kind in 0..0x3FFFu16 {
            let (c, m) = split_type(kind);
            assert_eq!(join_type(c, m), kind);
        }
    }

    #[test]
    fn channel_data_round_trips_with_and_without_padding() {
        let f = ChannelData::encode(0x4001, b"hello", true);
        assert_eq!(f.len(), 12);
        assert_eq!(ChannelData::frame_len(&f), Some(12));
        let d = ChannelData::decode(&f).unwrap();
        assert_eq!((d.channel, d.data), (0x4001, &b"hello"[..]));
        assert_eq!(
            ChannelData::decode(&[0x30, 0, 0, 0]),
            Err(StunError::BadChannel(0x3000))
        );
        assert!(ChannelData::decode(&[0x40, 0, 0, 9, 1]).is_err());
    }

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
