//! RTP packets (RFC 3550 §5) and sequence/timestamp unwrapping.
//!
//! [`RtpPacket::parse`] accepts any byte slice and either returns a packet or
//! a typed [`RtpParseError`]; it never panics. [`RtpPacket::write_to`] is the
//! inverse: `parse(write(p)) == p` for every packet that writes without error.
//!
//! Sequence numbers are 16 bits and timestamps 32 bits on the wire; both wrap
//! during a long call. [`SequenceUnwrapper`] and [`TimestampUnwrapper`] turn
//! them into monotone 64-bit values that tolerate reordering.

use std::fmt;

use thiserror::Error;

/// Size of the fixed RTP header in bytes (RFC 3550 §5.1).
pub const RTP_FIXED_HEADER_LEN: usize = 12;

/// The only RTP version this crate speaks (RFC 3550 §5.1).
pub const RTP_VERSION: u8 = 2;

/// Most CSRC identifiers a header can carry: the CC field has 4 bits.
pub const MAX_CSRC_COUNT: usize = 15;

/// A synchronization source identifier (RFC 3550 §3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ssrc(pub u32);

impl fmt::Debug for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ssrc({:#010x})", self.0)
    }
}

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

impl From<u32> for Ssrc {
    fn from(value: u32) -> Self {
        Ssrc(value)
    }
}

/// An RTP header extension (RFC 3550 §5.3.1): a 16-bit profile-defined
/// value and a body whose length is a multiple of four bytes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HeaderExtension {
    /// The profile-defined 16 bits (for example `0xBEDE` for RFC 8285
    /// one-byte extensions).
    pub profile: u16,
    /// The extension body, without the four-byte extension header.
    pub data: Vec<u8>,
}

/// One RTP packet, owned.
///
/// ```
/// use media_engine::rtp::{RtpPacket, Ssrc};
///
/// let packet = RtpPacket::new(0, 7, 160, Ssrc(0x1234_5678), vec![0xFF; 160]);
/// let bytes = packet.to_bytes().unwrap();
/// assert_eq!(RtpPacket::parse(&bytes).unwrap(), packet);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RtpPacket {
    /// The marker bit; for audio it flags the first packet of a talk spurt
    /// (RFC 3551 §4.1).
    pub marker: bool,
    /// The 7-bit payload type.
    pub payload_type: u8,
    /// The 16-bit sequence number.
    pub sequence_number: u16,
    /// The 32-bit media timestamp.
    pub timestamp: u32,
    /// The synchronization source.
    pub ssrc: Ssrc,
    /// Contributing sources, at most [`MAX_CSRC_COUNT`].
    pub csrc: Vec<u32>,
    /// The header extension, if the X bit is set.
    pub extension: Option<HeaderExtension>,
    /// The payload, without padding.
    pub payload: Vec<u8>,
    /// Number of padding bytes at the end of the packet, including the
    /// final count byte; 0 means the P bit is clear.
    pub padding: u8,
}

/// Why bytes are not an RTP packet.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtpParseError {
    /// Fewer bytes than the fixed header.
    #[error("rtp packet too short: {len} bytes, need at least {RTP_FIXED_HEADER_LEN}")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The version field is not 2.
    #[error("unsupported rtp version {version}")]
    BadVersion {
        /// The version found.
        version: u8,
    },
    /// The CSRC list runs past the end of the packet.
    #[error("csrc list of {count} entries truncated: packet has {len} bytes")]
    CsrcTruncated {
        /// The CC field.
        count: usize,
        /// Bytes received.
        len: usize,
    },
    /// The header extension runs past the end of the packet.
    #[error("header extension truncated: needs {needed} bytes, packet has {len}")]
    ExtensionTruncated {
        /// Bytes the header says it needs.
        needed: usize,
        /// Bytes received.
        len: usize,
    },
    /// The padding count is zero or larger than the bytes after the header.
    #[error("invalid padding count {count}: {available} bytes follow the header")]
    BadPadding {
        /// The final padding count byte.
        count: u8,
        /// Bytes between the header and the end of the packet.
        available: usize,
    },
}

/// Why a packet cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtpWriteError {
    /// The payload type does not fit in 7 bits.
    #[error("payload type {payload_type} does not fit in 7 bits")]
    PayloadTypeOutOfRange {
        /// The payload type given.
        payload_type: u8,
    },
    /// More than [`MAX_CSRC_COUNT`] contributing sources.
    #[error("{count} csrc entries, at most {MAX_CSRC_COUNT} fit")]
    TooManyCsrc {
        /// Entries given.
        count: usize,
    },
    /// The extension body is not a multiple of four bytes or is too long.
    #[error("header extension body of {len} bytes is not a multiple of 4 below 262144")]
    BadExtensionLength {
        /// Body length given.
        len: usize,
    },
}

impl RtpPacket {
    /// A packet with no CSRC, no extension, no padding and the marker clear.
    pub fn new(
        payload_type: u8,
        sequence_number: u16,
        timestamp: u32,
        ssrc: Ssrc,
        payload: Vec<u8>,
    ) -> Self {
        RtpPacket {
            marker: false,
            payload_type,
            sequence_number,
            timestamp,
            ssrc,
            csrc: Vec::new(),
            extension: None,
            payload,
            padding: 0,
        }
    }

    /// Parses one RTP packet (RFC 3550 §5.1, §5.3.1).
    pub fn parse(data: &[u8]) -> Result<Self, RtpParseError> {
        let len = data.len();
        let fixed = data
            .get(..RTP_FIXED_HEADER_LEN)
            .ok_or(RtpParseError::TooShort { len })?;
        let version = fixed[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpParseError::BadVersion { version });
        }
        let has_padding = fixed[0] & 0x20 != 0;
        let has_extension = fixed[0] & 0x10 != 0;
        let csrc_count = usize::from(fixed[0] & 0x0F);
        let marker = fixed[1] & 0x80 != 0;
        let payload_type = fixed[1] & 0x7F;
        let sequence_number = u16::from_be_bytes([fixed[2], fixed[3]]);
        let timestamp = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let ssrc = Ssrc(u32::from_be_bytes([
            fixed[8], fixed[9], fixed[10], fixed[11],
        ]));

        let mut offset = RTP_FIXED_HEADER_LEN;
        let csrc_bytes =
            data.get(offset..offset + 4 * csrc_count)
                .ok_or(RtpParseError::CsrcTruncated {
                    count: csrc_count,
                    len,
                })?;
        let csrc = csrc_bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        offset += 4 * csrc_count;

        let extension = if has_extension {
            let head = data
                .get(offset..offset + 4)
                .ok_or(RtpParseError::ExtensionTruncated {
                    needed: offset + 4,
                    len,
                })?;
            let profile = u16::from_be_bytes([head[0], head[1]]);
            let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let end = offset + 4 + 4 * words;
            let body = data
                .get(offset + 4..end)
                .ok_or(RtpParseError::ExtensionTruncated { needed: end, len })?;
            offset = end;
            Some(HeaderExtension {
                profile,
                data: body.to_vec(),
            })
        } else {
            None
        };

        let rest = &data[offset..];
        let padding = if has_padding {
            let count = rest.last().copied().unwrap_or(0);
            if count == 0 || usize::from(count) > rest.len() {
                return Err(RtpParseError::BadPadding {
                    count,
                    available: rest.len(),
                });
            }
            count
        } else {
            0
        };
        let payload = rest[..rest.len() - usize::from(padding)].to_vec();

        Ok(RtpPacket {
            marker,
            payload_type,
            sequence_number,
            timestamp,
            ssrc,
            csrc,
            extension,
            payload,
            padding,
        })
    }

    /// Length of the packet on the wire.
    pub fn wire_len(&self) -> usize {
        RTP_FIXED_HEADER_LEN
            + 4 * self.csrc.len()
            + self.extension.as_ref().map_or(0, |e| 4 + e.data.len())
            + self.payload.len()
            + usize::from(self.padding)
    }

    /// Appends the packet's wire form to `out`. Padding bytes are zero
    /// except the last, which holds the count (RFC 3550 §5.1).
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<(), RtpWriteError> {
        if self.payload_type > 0x7F {
            return Err(RtpWriteError::PayloadTypeOutOfRange {
                payload_type: self.payload_type,
            });
        }
        if self.csrc.len() > MAX_CSRC_COUNT {
            return Err(RtpWriteError::TooManyCsrc {
                count: self.csrc.len(),
            });
        }
        let extension_words = match &self.extension {
            Some(ext) => {
                let len = ext.data.len();
                if !len.is_multiple_of(4) || len / 4 > usize::from(u16::MAX) {
                    return Err(RtpWriteError::BadExtensionLength { len });
                }
                Some(u16::try_from(len / 4).unwrap_or(u16::MAX))
            }
            None => None,
        };
        out.reserve(self.wire_len());
        // The count fits: csrc.len() <= 15 was checked above.
        let cc = u8::try_from(self.csrc.len()).unwrap_or(0) & 0x0F;
        let mut first = RTP_VERSION << 6 | cc;
        if self.padding > 0 {
            first |= 0x20;
        }
        if extension_words.is_some() {
            first |= 0x10;
        }
        out.push(first);
        out.push(u8::from(self.marker) << 7 | self.payload_type);
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
        for c in &self.csrc {
            out.extend_from_slice(&c.to_be_bytes());
        }
        if let (Some(ext), Some(words)) = (&self.extension, extension_words) {
            out.extend_from_slice(&ext.profile.to_be_bytes());
            out.extend_from_slice(&words.to_be_bytes());
            out.extend_from_slice(&ext.data);
        }
        out.extend_from_slice(&self.payload);
        if self.padding > 0 {
            out.extend(std::iter::repeat_n(0, usize::from(self.padding) - 1));
            out.push(self.padding);
        }
        Ok(())
    }

    /// The packet's wire form in a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, RtpWriteError> {
        let mut out = Vec::with_capacity(self.wire_len());
        self.write_to(&mut out)?;
        Ok(out)
    }
}

/// Whether bytes look like RTCP rather than RTP when both share one port
/// (RFC 5761 §4: RTCP packet types 192..=223 occupy the second byte).
pub fn is_rtcp(data: &[u8]) -> bool {
    matches!(data.get(1), Some(&pt) if (192..=223).contains(&pt))
}

/// Turns 16-bit sequence numbers into monotone 64-bit extended sequence
/// numbers (RFC 3550 §A.1), tolerating reordering of up to half the space.
///
/// The first value maps to itself plus `1 << 16`, so a packet reordered
/// before the first one still maps to a non-negative value. A value is
/// extended to the one nearest the highest seen; one exactly half the
/// space (2^15) away counts as older.
#[derive(Clone, Debug, Default)]
pub struct SequenceUnwrapper {
    /// The highest extended value seen; zero before the first, which no
    /// extended value can be (they never drop below 2^15).
    last: u64,
}

impl SequenceUnwrapper {
    /// An unwrapper that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The extended value of `seq`: the 64-bit value congruent to `seq`
    /// modulo 2^16 that is closest to the highest value seen so far.
    #[inline]
    pub fn unwrap(&mut self, seq: u16) -> u64 {
        let value = self.peek(seq);
        if value > self.last {
            self.last = value;
        }
        value
    }

    /// The extended value `seq` would get, without recording it.
    #[inline]
    pub fn peek(&self, seq: u16) -> u64 {
        if self.last == 0 {
            return (1 << 16) + u64::from(seq);
        }
        // In -2^15..2^15: the exact half is older.
        let delta = seq.wrapping_sub(self.last as u16) as i16;
        self.last.wrapping_add_signed(i64::from(delta))
    }

    /// The highest extended value seen, if any.
    pub fn highest(&self) -> Option<u64> {
        (self.last != 0).then_some(self.last)
    }
}

/// Turns 32-bit RTP timestamps into monotone 64-bit values, tolerating
/// reordering of up to half the space (about 3 days at 8 kHz).
///
/// The first value maps to itself plus `1 << 32`. As for
/// [`SequenceUnwrapper`], one exactly half the space (2^31) away from the
/// highest seen counts as older.
#[derive(Clone, Debug, Default)]
pub struct TimestampUnwrapper {
    /// As in [`SequenceUnwrapper`]: zero before the first value.
    last: u64,
}

impl TimestampUnwrapper {
    /// An unwrapper that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The extended value of `timestamp`, recording it.
    #[inline]
    pub fn unwrap(&mut self, timestamp: u32) -> u64 {
        let value = self.peek(timestamp);
        self.record(value);
        value
    }

    /// The extended value `timestamp` would get, without recording it.
    #[inline]
    pub fn peek(&self, timestamp: u32) -> u64 {
        if self.last == 0 {
            return (1 << 32) + u64::from(timestamp);
        }
        let delta = timestamp.wrapping_sub(self.last as u32) as i32;
        self.last.wrapping_add_signed(i64::from(delta))
    }

    /// Records a value [`peek`](Self::peek) returned, as
    /// [`unwrap`](Self::unwrap) would.
    #[inline]
    pub fn record(&mut self, value: u64) {
        if value > self.last {
            self.last = value;
        }
    }

    /// The highest extended value seen, if any.
    pub fn highest(&self) -> Option<u64> {
        (self.last != 0).then_some(self.last)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn full_packet() -> RtpPacket {
        RtpPacket {
            marker: true,
            payload_type: 96,
            sequence_number: 0xFFFF,
            timestamp: 0xDEAD_BEEF,
            ssrc: Ssrc(0x0102_0304),
            csrc: vec![1, 2, 3],
            extension: Some(HeaderExtension {
                profile: 0xBEDE,
                data: vec![0x10, 0xAA, 0, 0],
            }),
            payload: vec![1, 2, 3, 4, 5],
            padding: 3,
        }
    }

    #[test]
    fn rfc3550_5_1_fixed_header_layout() {
        let p = RtpPacket::new(0, 0x1234, 0x5678_9ABC, Ssrc(0xCAFE_BABE), vec![0xD5]);
        let bytes = p.to_bytes().unwrap();
        assert_eq!(
            bytes,
            [
                0x80, 0x00, 0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xCA, 0xFE, 0xBA, 0xBE, 0xD5
            ]
        );
    }

    #[test]
    fn rfc3550_5_1_csrc_extension_and_padding_round_trip() {
        let p = full_packet();
        let bytes = p.to_bytes().unwrap();
        assert_eq!(bytes.len(), p.wire_len());
        assert_eq!(bytes[0], 0x80 | 0x20 | 0x10 | 3);
        assert_eq!(bytes[1], 0x80 | 96);
        assert_eq!(*bytes.last().unwrap(), 3);
        assert_eq!(RtpPacket::parse(&bytes).unwrap(), p);
    }

    #[test]
    fn rfc3550_5_1_rejects_version_other_than_2() {
        let mut bytes = RtpPacket::new(0, 1, 1, Ssrc(1), vec![]).to_bytes().unwrap();
        bytes[0] = 0x40;
        assert_eq!(
            RtpPacket::parse(&bytes),
            Err(RtpParseError::BadVersion { version: 1 })
        );
    }

    #[test]
    fn rfc3550_5_1_rejects_truncated_csrc_and_extension() {
        let mut bytes = full_packet().to_bytes().unwrap();
        assert!(matches!(
            RtpPacket::parse(&bytes[..20]),
            Err(RtpParseError::CsrcTruncated { count: 3, len: 20 })
        ));
        assert!(matches!(
            RtpPacket::parse(&bytes[..26]),
            Err(RtpParseError::ExtensionTruncated { .. })
        ));
        // Claim a longer extension than the packet holds.
        bytes[27] = 200;
        assert!(matches!(
            RtpPacket::parse(&bytes),
            Err(RtpParseError::ExtensionTruncated { .. })
        ));
    }

    #[test]
    fn rfc3550_5_1_rejects_zero_or_oversized_padding() {
        let mut bytes = full_packet().to_bytes().unwrap();
        let last = bytes.len() - 1;
        bytes[last] = 0;
        assert!(matches!(
            RtpPacket::parse(&bytes),
            Err(RtpParseError::BadPadding { count: 0, .. })
        ));
        bytes[last] = 200;
        assert!(matches!(
            RtpPacket::parse(&bytes),
            Err(RtpParseError::BadPadding { count: 200, .. })
        ));
    }

    #[test]
    fn write_rejects_out_of_range_fields() {
        let mut p = RtpPacket::new(128, 0, 0, Ssrc(0), vec![]);
        assert!(matches!(
            p.to_bytes(),
            Err(RtpWriteError::PayloadTypeOutOfRange { payload_type: 128 })
        ));
        p.payload_type = 0;
        p.csrc = vec![0; 16];
        assert!(matches!(
            p.to_bytes(),
            Err(RtpWriteError::TooManyCsrc { count: 16 })
        ));
        p.csrc.clear();
        p.extension = Some(HeaderExtension {
            profile: 1,
            data: vec![0; 3],
        });
        assert!(matches!(
            p.to_bytes(),
            Err(RtpWriteError::BadExtensionLength { len: 3 })
        ));
    }

    #[test]
    fn rfc5761_4_demultiplexes_rtcp_by_second_byte() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 203, 0, 1]));
        assert!(!is_rtcp(&[0x80, 0x00]));
        assert!(!is_rtcp(&[0x80, 0x80 | 96]));
        assert!(!is_rtcp(&[]));
    }

    #[test]
    fn rfc3550_a_1_sequence_unwrap_crosses_wrap_forward_and_back() {
        let mut u = SequenceUnwrapper::new();
        let a = u.unwrap(65534);
        let b = u.unwrap(65535);
        let c = u.unwrap(0);
        let d = u.unwrap(1);
        assert_eq!((b - a, c - b, d - c), (1, 1, 1));
        // A late packet from before the wrap maps below the current value.
        assert_eq!(u.unwrap(65533), a - 1);
        assert_eq!(u.highest(), Some(d));
    }

    #[test]
    fn timestamp_unwrap_crosses_wrap() {
        let mut u = TimestampUnwrapper::new();
        let a = u.unwrap(u32::MAX - 159);
        let b = u.unwrap(0);
        let c = u.unwrap(160);
        assert_eq!((b - a, c - b), (160, 160));
        assert_eq!(u.unwrap(u32::MAX - 319), a - 160);
    }

    #[test]
    fn unwrap_at_exactly_half_the_space_counts_as_older() {
        // Wherever the highest value lies in its 2^16 block, a value
        // exactly 2^15 away maps below it; one less maps above.
        for start in [0u16, 1, 10_000, 32_767, 32_768, 40_000, 65_535] {
            let mut u = SequenceUnwrapper::new();
            let base = u.unwrap(start);
            assert_eq!(u.peek(start.wrapping_add(32_768)), base - 32_768);
            assert_eq!(u.peek(start.wrapping_add(32_767)), base + 32_767);
            assert_eq!(u.unwrap(start.wrapping_add(32_768)), base - 32_768);
            assert_eq!(u.highest(), Some(base));
        }
        for start in [0u32, 1, 1 << 31, (1 << 31) + 160, u32::MAX] {
            let mut u = TimestampUnwrapper::new();
            let base = u.unwrap(start);
            assert_eq!(u.peek(start.wrapping_add(1 << 31)), base - (1 << 31));
            assert_eq!(
                u.peek(start.wrapping_add((1 << 31) - 1)),
                base + (1 << 31) - 1
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = RtpPacket::parse(&data);
        }

        #[test]
        fn parse_of_write_is_identity(
            marker in any::<bool>(),
            payload_type in 0u8..128,
            sequence_number in any::<u16>(),
            timestamp in any::<u32>(),
            ssrc in any::<u32>(),
            csrc in proptest::collection::vec(any::<u32>(), 0..=15),
            ext in proptest::option::of((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..4usize).prop_map(|w| w.repeat(4)))),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            padding in any::<u8>(),
        ) {
            let p = RtpPacket {
                marker, payload_type, sequence_number, timestamp, ssrc: Ssrc(ssrc), csrc,
                extension: ext.map(|(profile, data)| HeaderExtension { profile, data }),
                payload, padding,
            };
            let bytes = p.to_bytes().unwrap();
            prop_assert_eq!(RtpPacket::parse(&bytes).unwrap(), p);
        }

        #[test]
        fn sequence_unwrap_is_monotone_for_in_order_input(start in any::<u16>(), steps in proptest::collection::vec(1u16..1000, 1..200)) {
            let mut u = SequenceUnwrapper::new();
            let mut seq = start;
            let mut prev = u.unwrap(seq);
            for s in steps {
                seq = seq.wrapping_add(s);
                let next = u.unwrap(seq);
                prop_assert_eq!(next - prev, u64::from(s));
                prev = next;
            }
        }
    }
}
