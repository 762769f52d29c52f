//! RTCP compound packets (RFC 3550 §6): sender and receiver reports,
//! source descriptions, BYE, and round-trip time from LSR/DLSR.
//!
//! [`parse_compound`] validates a compound packet as RFC 3550 §A.2 asks
//! (version 2, the first packet a report, padding only on the last one,
//! lengths that add up) and returns each packet typed. Packet types this
//! crate does not interpret (APP, feedback, XR) are kept as
//! [`RtcpPacket::Other`] so they survive a round trip.

use std::time::Duration;

use thiserror::Error;

use crate::rtp::Ssrc;

/// RTCP packet type of a sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// RTCP packet type of a receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;
/// RTCP packet type of a source description (RFC 3550 §6.5).
pub const PT_SDES: u8 = 202;
/// RTCP packet type of a goodbye (RFC 3550 §6.6).
pub const PT_BYE: u8 = 203;

/// SDES item type of the canonical name (RFC 3550 §6.5.1).
pub const SDES_CNAME: u8 = 1;

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp: seconds since 1900 in the high 32 bits and the
/// fraction in the low 32 bits (RFC 3550 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// Converts a time since the Unix epoch (the wall clock, which the
    /// caller reads) into NTP format.
    pub fn from_unix(since_unix_epoch: Duration) -> Self {
        let secs = since_unix_epoch
            .as_secs()
            .wrapping_add(NTP_UNIX_OFFSET_SECS);
        let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTimestamp(secs << 32 | frac)
    }

    /// The middle 32 bits, the "compact" form used in LSR (RFC 3550 §6.4.1).
    pub fn middle_32(self) -> u32 {
        // Truncation is the point: bits 16..48.
        (self.0 >> 16) as u32
    }
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: Ssrc,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost, a signed 24-bit value.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_sequence: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received, or 0.
    pub last_sender_report: u32,
    /// Delay since that SR, in units of 1/65536 s.
    pub delay_since_last_sender_report: u32,
}

/// A sender report (RFC 3550 §6.4.1).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SenderReport {
    /// The sender.
    pub ssrc: Ssrc,
    /// Wall-clock time at which the report was sent.
    pub ntp_timestamp: NtpTimestamp,
    /// The same instant in RTP timestamp units.
    pub rtp_timestamp: u32,
    /// Packets sent since the start of transmission.
    pub packet_count: u32,
    /// Payload octets sent since the start of transmission.
    pub octet_count: u32,
    /// Reception reports, at most 31.
    pub reports: Vec<ReportBlock>,
}

/// A receiver report (RFC 3550 §6.4.2).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReceiverReport {
    /// The reporter.
    pub ssrc: Ssrc,
    /// Reception reports, at most 31.
    pub reports: Vec<ReportBlock>,
}

/// One SDES item (RFC 3550 §6.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdesItem {
    /// The item type ([`SDES_CNAME`] and so on), never 0.
    pub kind: u8,
    /// The value, at most 255 bytes (UTF-8 by the RFC, not checked here).
    pub value: Vec<u8>,
}

/// The SDES items of one source.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SdesChunk {
    /// The source described.
    pub ssrc: Ssrc,
    /// Its items.
    pub items: Vec<SdesItem>,
}

impl SdesChunk {
    /// A chunk carrying only a CNAME.
    pub fn cname(ssrc: Ssrc, cname: &str) -> Self {
        SdesChunk {
            ssrc,
            items: vec![SdesItem {
                kind: SDES_CNAME,
                value: cname.as_bytes().to_vec(),
            }],
        }
    }

    /// The CNAME item, if present and UTF-8.
    pub fn cname_value(&self) -> Option<&str> {
        self.items
            .iter()
            .find(|i| i.kind == SDES_CNAME)
            .and_then(|i| std::str::from_utf8(&i.value).ok())
    }
}

/// A goodbye (RFC 3550 §6.6).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Goodbye {
    /// Sources leaving, at most 31.
    pub sources: Vec<Ssrc>,
    /// Optional reason, at most 255 bytes.
    pub reason: Option<Vec<u8>>,
}

/// One packet of a compound RTCP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpPacket {
    /// SR.
    SenderReport(SenderReport),
    /// RR.
    ReceiverReport(ReceiverReport),
    /// SDES.
    SourceDescription(Vec<SdesChunk>),
    /// BYE.
    Goodbye(Goodbye),
    /// Any other packet type, kept verbatim.
    Other {
        /// The packet type.
        packet_type: u8,
        /// The 5-bit count/format field.
        count: u8,
        /// The body after the four-byte header, without padding.
        body: Vec<u8>,
    },
}

/// Why bytes are not a valid compound RTCP packet.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtcpParseError {
    /// No bytes, or fewer than a header at `offset`.
    #[error("rtcp truncated at offset {offset}")]
    Truncated {
        /// Byte offset of the packet in the compound.
        offset: usize,
    },
    /// Version field is not 2.
    #[error("unsupported rtcp version {version} at offset {offset}")]
    BadVersion {
        /// Byte offset of the packet.
        offset: usize,
        /// The version found.
        version: u8,
    },
    /// The length field runs past the end of the compound.
    #[error("rtcp packet at offset {offset} declares {declared} bytes, {available} available")]
    LengthOverrun {
        /// Byte offset of the packet.
        offset: usize,
        /// Bytes declared by the length field.
        declared: usize,
        /// Bytes left in the compound.
        available: usize,
    },
    /// The first packet is neither SR nor RR (RFC 3550 §6.1).
    #[error("compound rtcp starts with packet type {packet_type}, not sr or rr")]
    FirstNotReport {
        /// Type of the first packet.
        packet_type: u8,
    },
    /// Padding on a packet other than the last one (RFC 3550 §6.4.1).
    #[error("padding on a packet that is not the last, at offset {offset}")]
    PaddingNotLast {
        /// Byte offset of the packet.
        offset: usize,
    },
    /// The padding count is zero or larger than the packet body.
    #[error("invalid rtcp padding count {count} at offset {offset}")]
    BadPadding {
        /// Byte offset of the packet.
        offset: usize,
        /// The padding count.
        count: u8,
    },
    /// The body is shorter than its count field requires.
    #[error("rtcp packet type {packet_type} at offset {offset} too short for its count")]
    BodyTooShort {
        /// The packet type.
        packet_type: u8,
        /// Byte offset of the packet.
        offset: usize,
    },
}

/// Why packets cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtcpWriteError {
    /// More than 31 report blocks, chunks or sources in one packet.
    #[error("{count} entries do not fit the 5-bit count field")]
    TooManyEntries {
        /// Entries given.
        count: usize,
    },
    /// An SDES value or BYE reason longer than 255 bytes, or an item type 0.
    #[error("sdes item or bye reason invalid: kind {kind}, {len} bytes")]
    BadText {
        /// Item type (0 for a BYE reason).
        kind: u8,
        /// Length given.
        len: usize,
    },
    /// An opaque body that is not a multiple of four bytes, or a count above 31.
    #[error("opaque rtcp packet body of {len} bytes or count {count} invalid")]
    BadOpaque {
        /// Body length.
        len: usize,
        /// Count field.
        count: u8,
    },
}

/// Parses a compound RTCP packet (RFC 3550 §6.1, validity checks of §A.2).
pub fn parse_compound(data: &[u8]) -> Result<Vec<RtcpPacket>, RtcpParseError> {
    let mut packets = Vec::new();
    let mut offset = 0;
    if data.is_empty() {
        return Err(RtcpParseError::Truncated { offset });
    }
    while offset < data.len() {
        let head = data
            .get(offset..offset + 4)
            .ok_or(RtcpParseError::Truncated { offset })?;
        let version = head[0] >> 6;
        if version != 2 {
            return Err(RtcpParseError::BadVersion { offset, version });
        }
        let padded = head[0] & 0x20 != 0;
        let count = head[0] & 0x1F;
        let packet_type = head[1];
        let declared = 4 * (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1);
        let available = data.len() - offset;
        let whole = data
            .get(offset..offset + declared)
            .ok_or(RtcpParseError::LengthOverrun {
                offset,
                declared,
                available,
            })?;
        if packets.is_empty() && packet_type != PT_SR && packet_type != PT_RR {
            return Err(RtcpParseError::FirstNotReport { packet_type });
        }
        let mut body = &whole[4..];
        if padded {
            if offset + declared != data.len() {
                return Err(RtcpParseError::PaddingNotLast { offset });
            }
            let pad = body.last().copied().unwrap_or(0);
            if pad == 0 || usize::from(pad) > body.len() {
                return Err(RtcpParseError::BadPadding { offset, count: pad });
            }
            body = &body[..body.len() - usize::from(pad)];
        }
        packets.push(parse_one(packet_type, count, body, offset)?);
        offset += declared;
    }
    Ok(packets)
}

/// Appends the wire form of `packets`, in order, to `out`.
pub fn write_compound(packets: &[RtcpPacket], out: &mut Vec<u8>) -> Result<(), RtcpWriteError> {
    for packet in packets {
        write_one(packet, out)?;
    }
    Ok(())
}

/// Round-trip time from a report block about our own stream (RFC 3550
/// §6.4.1): arrival time minus LSR minus DLSR. `None` when the peer has not
/// received a sender report from us yet (LSR is 0) or the figures are
/// inconsistent (the result would be negative).
pub fn round_trip_time(arrival: NtpTimestamp, block: &ReportBlock) -> Option<Duration> {
    if block.last_sender_report == 0 {
        return None;
    }
    let a = arrival.middle_32();
    let rtt = a
        .wrapping_sub(block.last_sender_report)
        .wrapping_sub(block.delay_since_last_sender_report);
    if rtt > u32::MAX / 2 {
        return None;
    }
    Some(Duration::from_nanos(
        u64::from(rtt) * 1_000_000_000 / 65_536,
    ))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn parse_report_blocks(
    body: &[u8],
    count: u8,
    packet_type: u8,
    offset: usize,
) -> Result<Vec<ReportBlock>, RtcpParseError> {
    let n = usize::from(count);
    let bytes = body.get(..24 * n).ok_or(RtcpParseError::BodyTooShort {
        packet_type,
        offset,
    })?;
    Ok(bytes
        .chunks_exact(24)
        .map(|b| {
            // Sign-extend the 24-bit cumulative loss.
            let lost = i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8;
            ReportBlock {
                ssrc: Ssrc(be32(&b[0..4])),
                fraction_lost: b[4],
                cumulative_lost: lost,
                extended_highest_sequence: be32(&b[8..12]),
                jitter: be32(&b[12..16]),
                last_sender_report: be32(&b[16..20]),
                delay_since_last_sender_report: be32(&b[20..24]),
            }
        })
        .collect())
}

fn parse_one(
    packet_type: u8,
    count: u8,
    body: &[u8],
    offset: usize,
) -> Result<RtcpPacket, RtcpParseError> {
    let short = RtcpParseError::BodyTooShort {
        packet_type,
        offset,
    };
    match packet_type {
        PT_SR => {
            let head = body.get(..24).ok_or(short)?;
            let ntp = u64::from(be32(&head[4..8])) << 32 | u64::from(be32(&head[8..12]));
            Ok(RtcpPacket::SenderReport(SenderReport {
                ssrc: Ssrc(be32(&head[0..4])),
                ntp_timestamp: NtpTimestamp(ntp),
                rtp_timestamp: be32(&head[12..16]),
                packet_count: be32(&head[16..20]),
                octet_count: be32(&head[20..24]),
                reports: parse_report_blocks(&body[24..], count, packet_type, offset)?,
            }))
        }
        PT_RR => {
            let head = body.get(..4).ok_or(short)?;
            Ok(RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: Ssrc(be32(head)),
                reports: parse_report_blocks(&body[4..], count, packet_type, offset)?,
            }))
        }
        PT_SDES => parse_sdes(body, count, offset).map(RtcpPacket::SourceDescription),
        PT_BYE => {
            let n = usize::from(count);
            let ids = body.get(..4 * n).ok_or(short.clone())?;
            let sources = ids.chunks_exact(4).map(|c| Ssrc(be32(c))).collect();
            let rest = &body[4 * n..];
            let reason = match rest.first() {
                Some(&len) if len > 0 => {
                    let text = rest.get(1..1 + usize::from(len)).ok_or(short)?;
                    Some(text.to_vec())
                }
                _ => None,
            };
            Ok(RtcpPacket::Goodbye(Goodbye { sources, reason }))
        }
        _ => Ok(RtcpPacket::Other {
            packet_type,
            count,
            body: body.to_vec(),
        }),
    }
}

fn parse_sdes(body: &[u8], count: u8, offset: usize) -> Result<Vec<SdesChunk>, RtcpParseError> {
    let short = RtcpParseError::BodyTooShort {
        packet_type: PT_SDES,
        offset,
    };
    let mut chunks = Vec::with_capacity(usize::from(count));
    let mut pos = 0;
    for _ in 0..count {
        let id = body.get(pos..pos + 4).ok_or(short.clone())?;
        let mut chunk = SdesChunk {
            ssrc: Ssrc(be32(id)),
            items: Vec::new(),
        };
        pos += 4;
        loop {
            let kind = *body.get(pos).ok_or(short.clone())?;
            if kind == 0 {
                // The null item ends the chunk; skip to the next word boundary.
                pos += 1;
                pos = pos.div_ceil(4) * 4;
                break;
            }
            let len = usize::from(*body.get(pos + 1).ok_or(short.clone())?);
            let value = body.get(pos + 2..pos + 2 + len).ok_or(short.clone())?;
            chunk.items.push(SdesItem {
                kind,
                value: value.to_vec(),
            });
            pos += 2 + len;
        }
        chunks.push(chunk);
    }
    Ok(chunks)
}

fn count_field(count: usize) -> Result<u8, RtcpWriteError> {
    u8::try_from(count)
        .ok()
        .filter(|&c| c <= 31)
        .ok_or(RtcpWriteError::TooManyEntries { count })
}

/// Writes the common header with a placeholder length, returning where it
/// starts so the length can be patched once the body is written.
fn begin(out: &mut Vec<u8>, count: u8, packet_type: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0x80 | count, packet_type, 0, 0]);
    start
}

fn finish(out: &mut Vec<u8>, start: usize) {
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    let words = u16::try_from((out.len() - start) / 4 - 1).unwrap_or(u16::MAX);
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

fn write_blocks(out: &mut Vec<u8>, blocks: &[ReportBlock]) {
    for b in blocks {
        out.extend_from_slice(&b.ssrc.0.to_be_bytes());
        out.push(b.fraction_lost);
        let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF).to_be_bytes();
        out.extend_from_slice(&lost[1..]);
        out.extend_from_slice(&b.extended_highest_sequence.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.last_sender_report.to_be_bytes());
        out.extend_from_slice(&b.delay_since_last_sender_report.to_be_bytes());
    }
}

fn write_one(packet: &RtcpPacket, out: &mut Vec<u8>) -> Result<(), RtcpWriteError> {
    match packet {
        RtcpPacket::SenderReport(sr) => {
            let start = begin(out, count_field(sr.reports.len())?, PT_SR);
            out.extend_from_slice(&sr.ssrc.0.to_be_bytes());
            out.extend_from_slice(&sr.ntp_timestamp.0.to_be_bytes());
            out.extend_from_slice(&sr.rtp_timestamp.to_be_bytes());
            out.extend_from_slice(&sr.packet_count.to_be_bytes());
            out.extend_from_slice(&sr.octet_count.to_be_bytes());
            write_blocks(out, &sr.reports);
            finish(out, start);
        }
        RtcpPacket::ReceiverReport(rr) => {
            let start = begin(out, count_field(rr.reports.len())?, PT_RR);
            out.extend_from_slice(&rr.ssrc.0.to_be_bytes());
            write_blocks(out, &rr.reports);
            finish(out, start);
        }
        RtcpPacket::SourceDescription(chunks) => {
            for item in chunks.iter().flat_map(|c| &c.items) {
                if item.kind == 0 || item.value.len() > 255 {
                    return Err(RtcpWriteError::BadText {
                        kind: item.kind,
                        len: item.value.len(),
                    });
                }
            }
            let start = begin(out, count_field(chunks.len())?, PT_SDES);
            for chunk in chunks {
                let chunk_start = out.len();
                out.extend_from_slice(&chunk.ssrc.0.to_be_bytes());
                for item in &chunk.items {
                    out.push(item.kind);
                    out.push(u8::try_from(item.value.len()).unwrap_or(u8::MAX));
                    out.extend_from_slice(&item.value);
                }
                // At least one null octet, then up to the word boundary.
                out.push(0);
                while !(out.len() - chunk_start).is_multiple_of(4) {
                    out.push(0);
                }
            }
            finish(out, start);
        }
        RtcpPacket::Goodbye(bye) => {
            if let Some(reason) = &bye.reason
                && reason.len() > 255
            {
                return Err(RtcpWriteError::BadText {
                    kind: 0,
                    len: reason.len(),
                });
            }
            let start = begin(out, count_field(bye.sources.len())?, PT_BYE);
            for s in &bye.sources {
                out.extend_from_slice(&s.0.to_be_bytes());
            }
            if let Some(reason) = &bye.reason
                && !reason.is_empty()
            {
                out.push(u8::try_from(reason.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(reason);
            }
            finish(out, start);
        }
        RtcpPacket::Other {
            packet_type,
            count,
            body,
        } => {
            if !body.len().is_multiple_of(4)
                || *count > 31
                || body.len() / 4 >= usize::from(u16::MAX)
            {
                return Err(RtcpWriteError::BadOpaque {
                    len: body.len(),
                    count: *count,
                });
            }
            let start = begin(out, *count, *packet_type);
            out.extend_from_slice(body);
            finish(out, start);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc: Ssrc(ssrc),
            fraction_lost: 25,
            cumulative_lost: -3,
            extended_highest_sequence: 0x0001_0005,
            jitter: 42,
            last_sender_report: 0xB705_2000,
            delay_since_last_sender_report: 0x0005_4000,
        }
    }

    fn sample_compound() -> Vec<RtcpPacket> {
        vec![
            RtcpPacket::SenderReport(SenderReport {
                ssrc: Ssrc(1),
                ntp_timestamp: NtpTimestamp(0x0123_4567_89AB_CDEF),
                rtp_timestamp: 160,
                packet_count: 10,
                octet_count: 1600,
                reports: vec![block(2)],
            }),
            RtcpPacket::SourceDescription(vec![SdesChunk::cname(Ssrc(1), "alice@example.org")]),
            RtcpPacket::Goodbye(Goodbye {
                sources: vec![Ssrc(1)],
                reason: Some(b"hangup".to_vec()),
            }),
        ]
    }

    #[test]
    fn rfc3550_6_1_compound_sr_sdes_bye_round_trip() {
        let packets = sample_compound();
        let mut bytes = Vec::new();
        write_compound(&packets, &mut bytes).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(parse_compound(&bytes).unwrap(), packets);
    }

    #[test]
    fn rfc3550_6_4_2_receiver_report_layout() {
        let rr = RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: Ssrc(0xAABB_CCDD),
            reports: vec![],
        });
        let mut bytes = Vec::new();
        write_compound(&[rr], &mut bytes).unwrap();
        assert_eq!(bytes, [0x80, 201, 0, 1, 0xAA, 0xBB, 0xCC, 0xDD]);
    }

    #[test]
    fn rfc3550_6_4_1_cumulative_loss_is_signed_24_bits() {
        let mut b = block(9);
        b.cumulative_lost = 10_000_000; // clamps to 0x7FFFFF
        let rr = RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: Ssrc(1),
            reports: vec![b, block(8)],
        });
        let mut bytes = Vec::new();
        write_compound(std::slice::from_ref(&rr), &mut bytes).unwrap();
        let RtcpPacket::ReceiverReport(back) = &parse_compound(&bytes).unwrap()[0] else {
            panic!("not a receiver report");
        };
        assert_eq!(back.reports[0].cumulative_lost, 0x7F_FFFF);
        assert_eq!(back.reports[1].cumulative_lost, -3);
    }

    #[test]
    fn rfc3550_6_4_1_round_trip_time_example() {
        // The worked example under Figure 2 of RFC 3550 §6.4.1.
        let arrival = NtpTimestamp(0xB710_8000_u64 << 16);
        let rtt = round_trip_time(arrival, &block(1)).unwrap();
        assert_eq!(rtt, Duration::from_millis(6125));
    }

    #[test]
    fn round_trip_time_needs_a_sender_report() {
        let mut b = block(1);
        b.last_sender_report = 0;
        assert_eq!(round_trip_time(NtpTimestamp(1 << 48), &b), None);
        // LSR + DLSR after the arrival time is inconsistent.
        let b = block(1);
        assert_eq!(
            round_trip_time(NtpTimestamp(0xB705_2000_u64 << 16), &b),
            None
        );
    }

    #[test]
    fn ntp_from_unix_epoch() {
        let t = NtpTimestamp::from_unix(Duration::from_millis(1500));
        assert_eq!(t.0 >> 32, NTP_UNIX_OFFSET_SECS + 1);
        assert_eq!(t.0 & 0xFFFF_FFFF, 0x8000_0000);
        assert_eq!(
            t.middle_32(),
            ((NTP_UNIX_OFFSET_SECS + 1) as u32) << 16 | 0x8000
        );
    }

    #[test]
    fn rfc3550_a_2_first_packet_must_be_a_report() {
        let mut bytes = Vec::new();
        write_compound(
            &[RtcpPacket::SourceDescription(vec![SdesChunk::cname(
                Ssrc(1),
                "x",
            )])],
            &mut bytes,
        )
        .unwrap();
        assert_eq!(
            parse_compound(&bytes),
            Err(RtcpParseError::FirstNotReport {
                packet_type: PT_SDES
            })
        );
    }

    #[test]
    fn rfc3550_a_2_rejects_bad_length_version_and_padding() {
        let mut bytes = Vec::new();
        write_compound(&sample_compound(), &mut bytes).unwrap();
        assert!(matches!(
            parse_compound(&bytes[..bytes.len() - 4]),
            Err(RtcpParseError::LengthOverrun { .. })
        ));
        let mut bad = bytes.clone();
        bad[0] = 0x40;
        assert!(matches!(
            parse_compound(&bad),
            Err(RtcpParseError::BadVersion { version: 1, .. })
        ));
        let mut padded_first = bytes.clone();
        padded_first[0] |= 0x20;
        assert!(matches!(
            parse_compound(&padded_first),
            Err(RtcpParseError::PaddingNotLast { offset: 0 })
        ));
        assert!(matches!(
            parse_compound(&[]),
            Err(RtcpParseError::Truncated { offset: 0 })
        ));
    }

    #[test]
    fn rfc3550_6_1_padding_on_last_packet_is_removed() {
        // RR with no blocks, padded by 4 bytes.
        let bytes = [0xA0, 201, 0, 2, 0, 0, 0, 7, 0, 0, 0, 4];
        assert_eq!(
            parse_compound(&bytes).unwrap(),
            vec![RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: Ssrc(7),
                reports: vec![]
            })]
        );
    }

    #[test]
    fn unknown_packet_types_survive_a_round_trip() {
        let packets = vec![
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: Ssrc(5),
                reports: vec![],
            }),
            RtcpPacket::Other {
                packet_type: 205,
                count: 1,
                body: vec![0, 0, 0, 5, 0, 0, 0, 6],
            },
        ];
        let mut bytes = Vec::new();
        write_compound(&packets, &mut bytes).unwrap();
        assert_eq!(parse_compound(&bytes).unwrap(), packets);
    }

    #[test]
    fn sdes_cname_lookup_and_limits() {
        let chunk = SdesChunk::cname(Ssrc(3), "bob");
        assert_eq!(chunk.cname_value(), Some("bob"));
        let long = RtcpPacket::SourceDescription(vec![SdesChunk {
            ssrc: Ssrc(3),
            items: vec![SdesItem {
                kind: SDES_CNAME,
                value: vec![b'a'; 256],
            }],
        }]);
        assert!(matches!(
            write_compound(&[long], &mut Vec::new()),
            Err(RtcpWriteError::BadText { len: 256, .. })
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_compound(&data);
        }

        #[test]
        fn parse_never_panics_on_valid_header_prefix(
            mut data in proptest::collection::vec(any::<u8>(), 4..300),
            pt in prop_oneof![Just(PT_SR), Just(PT_RR)],
            second in 200u8..=206,
        ) {
            data[0] = 0x80 | (data[0] & 0x3F);
            data[1] = pt;
            let words = u16::try_from(data.len() / 4 - 1).unwrap();
            data[2..4].copy_from_slice(&words.to_be_bytes());
            data.truncate(4 * (usize::from(words) + 1));
            let mut with_second = data.clone();
            with_second.extend_from_slice(&[0x81, second, 0, 0]);
            let _ = parse_compound(&data);
            let _ = parse_compound(&with_second);
        }

        #[test]
        fn sdes_round_trip(cname in "[a-z0-9@.]{0,40}", ssrc in any::<u32>()) {
            let packets = vec![
                RtcpPacket::ReceiverReport(ReceiverReport { ssrc: Ssrc(ssrc), reports: vec![] }),
                RtcpPacket::SourceDescription(vec![SdesChunk::cname(Ssrc(ssrc), &cname)]),
            ];
            let mut bytes = Vec::new();
            write_compound(&packets, &mut bytes).unwrap();
            prop_assert_eq!(parse_compound(&bytes).unwrap(), packets);
        }
    }
}
