//! DTMF as RTP telephone-events (RFC 4733).
//!
//! [`TelephoneEvent`] is the four-byte payload. [`encode_press`] turns one
//! key press into the packets to send: a first packet with the marker bit,
//! continuation packets every packet interval with a growing duration, and
//! the final packet with the E bit sent three times (RFC 4733 §2.5.1.4).
//! All packets of one press carry the timestamp of its start, except that
//! a press longer than the 16-bit duration field can describe goes out in
//! segments of 0xFFFF timestamp units, each with its own timestamp
//! (§2.5.1.3); the caller adds [`EventPacket::timestamp_offset`] to the
//! press's timestamp, stamps sequence numbers and sends each packet at its
//! offset.
//!
//! [`DtmfReceiver`] turns received packets back into exactly one
//! [`DtmfEvent::Began`] and one [`DtmfEvent::Ended`] per press, ignoring
//! repeats and retransmissions, and joining the segments of a long press
//! (§2.5.2.3).
//!
//! ```
//! use std::time::Duration;
//! use media_engine::dtmf::{DtmfEvent, DtmfReceiver, Digit, encode_press};
//!
//! let packets = encode_press(Digit::from_char('5').unwrap(), 10, Duration::from_millis(100), Duration::from_millis(20), 8000);
//! let mut rx = DtmfReceiver::new();
//! let events: Vec<_> = packets.iter().flat_map(|p| rx.handle(4000, &p.event.to_bytes())).collect();
//! assert_eq!(events.len(), 2);
//! assert!(matches!(events[0], DtmfEvent::Began { digit, .. } if digit.to_char() == '5'));
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use thiserror::Error;

/// A DTMF key: events 0 to 15 of RFC 4733 §3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Digit(u8);

impl Digit {
    /// The key for `0`-`9`, `*`, `#`, `A`-`D` (lower case accepted).
    pub fn from_char(c: char) -> Option<Digit> {
        let code = match c.to_ascii_uppercase() {
            d @ '0'..='9' => d as u8 - b'0',
            '*' => 10,
            '#' => 11,
            l @ 'A'..='D' => l as u8 - b'A' + 12,
            _ => return None,
        };
        Some(Digit(code))
    }

    /// The key for an event code, if it is a DTMF event (0 to 15).
    pub fn from_event(code: u8) -> Option<Digit> {
        (code <= 15).then_some(Digit(code))
    }

    /// The event code.
    pub fn event(self) -> u8 {
        self.0
    }

    /// The key's character.
    pub fn to_char(self) -> char {
        match self.0 {
            d @ 0..=9 => char::from(b'0' + d),
            10 => '*',
            11 => '#',
            l => char::from(b'A' + l - 12),
        }
    }
}

/// The telephone-event payload (RFC 4733 §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0-15 for DTMF).
    pub event: u8,
    /// The E bit: the last packet(s) of the event.
    pub end: bool,
    /// Power level as -dBm0, 0 to 63.
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

/// Why a payload is not a telephone-event.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DtmfError {
    /// Fewer than four bytes.
    #[error("telephone-event payload of {len} bytes, need 4")]
    TooShort {
        /// Bytes given.
        len: usize,
    },
}

impl TelephoneEvent {
    /// Parses the first four bytes of a payload. Further bytes (redundant
    /// blocks carried some other way) are ignored.
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        let b = payload
            .get(..4)
            .ok_or(DtmfError::TooShort { len: payload.len() })?;
        Ok(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The wire form; the reserved bit is zero and the volume is cut to
    /// six bits.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            u8::from(self.end) << 7 | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// One packet of a key press, as [`encode_press`] plans it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventPacket {
    /// When to send it, from the start of the press.
    pub offset: Duration,
    /// Added to the press's RTP timestamp: 0, or for the later segments of
    /// a long press a multiple of 0xFFFF (RFC 4733 §2.5.1.3).
    pub timestamp_offset: u32,
    /// The RTP marker bit (set on the first packet only).
    pub marker: bool,
    /// The payload.
    pub event: TelephoneEvent,
}

/// The longest key press [`encode_press`] plans; longer ones are cut.
pub const MAX_PRESS: Duration = Duration::from_secs(60);

/// Timestamp units one segment of a long event covers (RFC 4733 §2.5.1.3).
const SEGMENT: u64 = u16::MAX as u64;

/// Plans the packets of one key press lasting `duration` (at most
/// [`MAX_PRESS`]), one every `interval` (the packet time, typically 20 ms
/// or 50 ms), at `clock_rate` (8000 for narrowband). A press longer than
/// 0xFFFF timestamp units (about 8 s at 8 kHz, 1.4 s at 48 kHz) goes out in
/// segments: the tick that would pass the limit reports 0xFFFF, and the
/// next one starts a segment 0xFFFF units later (RFC 4733 §2.5.1.3).
pub fn encode_press(
    digit: Digit,
    volume: u8,
    duration: Duration,
    interval: Duration,
    clock_rate: u32,
) -> Vec<EventPacket> {
    let units = |d: Duration| -> u64 {
        let n = d.as_nanos() * u128::from(clock_rate) / 1_000_000_000;
        u64::try_from(n).unwrap_or(u64::MAX)
    };
    let interval = interval.max(Duration::from_millis(1));
    let total = units(duration.min(MAX_PRESS)).max(1);
    let step = units(interval).max(1);
    let volume = volume.min(63);
    let mut packets = Vec::new();
    let mut elapsed = Duration::ZERO;
    let mut push = |packets: &mut Vec<EventPacket>, segment: u64, duration: u64, end: bool| {
        packets.push(EventPacket {
            offset: elapsed,
            // Segments start at multiples of 0xFFFF below 2^32 (MAX_PRESS
            // keeps `total` far below).
            timestamp_offset: u32::try_from(segment).unwrap_or(u32::MAX),
            marker: packets.is_empty(),
            event: TelephoneEvent {
                event: digit.event(),
                end,
                volume,
                duration: u16::try_from(duration).unwrap_or(u16::MAX),
            },
        });
        elapsed += interval;
    };
    // Start and continuation packets, each reporting the duration so far
    // within its segment.
    let mut segment = 0u64;
    let mut reported = 0u64;
    loop {
        let so_far = reported + step;
        if so_far >= total {
            break;
        }
        if so_far - segment > SEGMENT {
            // The segment at its longest; the next tick starts the next.
            push(&mut packets, segment, SEGMENT, false);
            segment += SEGMENT;
        } else {
            push(&mut packets, segment, so_far - segment, false);
        }
        reported = so_far;
    }
    while total - segment > SEGMENT {
        push(&mut packets, segment, SEGMENT, false);
        segment += SEGMENT;
    }
    // The end, three times for robustness (RFC 4733 §2.5.1.4).
    for _ in 0..3 {
        push(&mut packets, segment, total - segment, true);
    }
    packets
}

/// What the receiver reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtmfEvent {
    /// A key press started (reported once per press).
    Began {
        /// The key.
        digit: Digit,
        /// RTP timestamp of the press, its identity.
        timestamp: u32,
    },
    /// The key press ended (reported once per press).
    Ended {
        /// The key.
        digit: Digit,
        /// Its total duration in timestamp units, all segments together.
        duration: u32,
        /// RTP timestamp of the press (of its first segment).
        timestamp: u32,
    },
}

/// What one packet revealed: nothing, one event, or both the begin and the
/// end of a press whose only surviving packet was an end packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DtmfEvents {
    events: [Option<DtmfEvent>; 2],
    next: usize,
}

impl DtmfEvents {
    fn one(event: DtmfEvent) -> Self {
        DtmfEvents {
            events: [Some(event), None],
            next: 0,
        }
    }
}

impl Iterator for DtmfEvents {
    type Item = DtmfEvent;

    fn next(&mut self) -> Option<DtmfEvent> {
        let event = self.events.get_mut(self.next)?.take();
        self.next += 1;
        event
    }
}

/// Turns received telephone-event packets into one begin and one end per
/// key press. Presses are told apart by their RTP timestamp (RFC 4733
/// §2.5.2.1); a packet of the same key 0xFFFF units after an unfinished
/// press continues it (§2.5.2.3). Non-DTMF events and malformed payloads
/// are ignored.
#[derive(Clone, Debug, Default)]
pub struct DtmfReceiver {
    presses: VecDeque<Press>,
}

/// A press the receiver remembers.
#[derive(Clone, Copy, Debug)]
struct Press {
    /// The timestamp of its first segment: its identity.
    start: u32,
    /// The timestamp of its latest segment.
    segment: u32,
    /// Timestamp units in the segments before the latest.
    before: u32,
    digit: Digit,
    ended: bool,
}

const REMEMBERED_PRESSES: usize = 16;

impl DtmfReceiver {
    /// A receiver that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one packet's RTP timestamp and payload; returns what it
    /// revealed that is new (nothing for repeats).
    pub fn handle(&mut self, timestamp: u32, payload: &[u8]) -> DtmfEvents {
        let Ok(event) = TelephoneEvent::parse(payload) else {
            return DtmfEvents::default();
        };
        let Some(digit) = Digit::from_event(event.event) else {
            return DtmfEvents::default();
        };
        let ended = |press: &mut Press| {
            press.ended = true;
            DtmfEvent::Ended {
                digit: press.digit,
                duration: press.before.saturating_add(u32::from(event.duration)),
                timestamp: press.start,
            }
        };
        if let Some(press) = self.presses.iter_mut().find(|p| p.segment == timestamp) {
            if event.end && !press.ended {
                return DtmfEvents::one(ended(press));
            }
            return DtmfEvents::default();
        }
        if let Some(last) = self.presses.back_mut() {
            // A press older than the newest one seen is a straggler.
            if (timestamp.wrapping_sub(last.segment) as i32) < 0 {
                return DtmfEvents::default();
            }
            // The next segment of a long press (§2.5.2.3): the same key,
            // unfinished, one whole segment later.
            if !last.ended
                && last.digit == digit
                && u64::from(timestamp.wrapping_sub(last.segment)) == SEGMENT
            {
                last.before = last.before.saturating_add(u16::MAX.into());
                last.segment = timestamp;
                if event.end {
                    return DtmfEvents::one(ended(last));
                }
                return DtmfEvents::default();
            }
        }
        if self.presses.len() == REMEMBERED_PRESSES {
            self.presses.pop_front();
        }
        let mut press = Press {
            start: timestamp,
            segment: timestamp,
            before: 0,
            digit,
            ended: false,
        };
        let began = DtmfEvent::Began { digit, timestamp };
        // Only an end packet survived: the press began and ended.
        let events = if event.end {
            DtmfEvents {
                events: [Some(began), Some(ended(&mut press))],
                next: 0,
            }
        } else {
            DtmfEvents::one(began)
        };
        self.presses.push_back(press);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4733_3_2_digit_codes() {
        let keys = "0123456789*#ABCD";
        for (code, c) in keys.chars().enumerate() {
            let d = Digit::from_char(c).unwrap();
            assert_eq!(usize::from(d.event()), code);
            assert_eq!(d.to_char(), c);
        }
        assert_eq!(Digit::from_char('a'), Digit::from_char('A'));
        assert_eq!(Digit::from_char('x'), None);
        assert_eq!(Digit::from_event(16), None);
    }

    #[test]
    fn rfc4733_2_3_payload_layout() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(e.to_bytes(), [11, 0x80 | 10, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()).unwrap(), e);
        // The reserved bit is ignored on input.
        assert_eq!(
            TelephoneEvent::parse(&[11, 0xC0 | 10, 0x03, 0x20]).unwrap(),
            e
        );
        assert_eq!(
            TelephoneEvent::parse(&[1, 2]),
            Err(DtmfError::TooShort { len: 2 })
        );
    }

    #[test]
    fn rfc4733_2_5_1_press_is_start_continuations_and_three_ends() {
        let packets = encode_press(
            Digit::from_char('1').unwrap(),
            10,
            Duration::from_millis(100),
            Duration::from_millis(20),
            8000,
        );
        // 160, 320, 480, 640 while pressed, then 800 with E three times.
        let durations: Vec<u16> = packets.iter().map(|p| p.event.duration).collect();
        assert_eq!(durations, vec![160, 320, 480, 640, 800, 800, 800]);
        assert!(packets[0].marker);
        assert!(packets[1..].iter().all(|p| !p.marker));
        assert_eq!(packets.iter().filter(|p| p.event.end).count(), 3);
        assert!(packets[..4].iter().all(|p| !p.event.end));
        let offsets: Vec<u64> = packets
            .iter()
            .map(|p| p.offset.as_millis() as u64)
            .collect();
        assert_eq!(offsets, vec![0, 20, 40, 60, 80, 100, 120]);
    }

    #[test]
    fn very_short_press_is_only_end_packets_with_marker() {
        let packets = encode_press(
            Digit::from_char('#').unwrap(),
            10,
            Duration::from_millis(10),
            Duration::from_millis(20),
            8000,
        );
        assert_eq!(packets.len(), 3);
        assert!(packets[0].marker && packets[0].event.end);
    }

    #[test]
    fn rfc4733_2_5_2_one_digit_per_press_despite_repeats() {
        let mut rx = DtmfReceiver::new();
        let mut events = Vec::new();
        for (ts, key) in [(1000u32, '4'), (9000, '2'), (17_000, '4')] {
            let packets = encode_press(
                Digit::from_char(key).unwrap(),
                10,
                Duration::from_millis(120),
                Duration::from_millis(20),
                8000,
            );
            for p in &packets {
                // Every packet is delivered twice.
                events.extend(rx.handle(ts, &p.event.to_bytes()));
                events.extend(rx.handle(ts, &p.event.to_bytes()));
            }
        }
        let began: String = events
            .iter()
            .filter_map(|e| match e {
                DtmfEvent::Began { digit, .. } => Some(digit.to_char()),
                _ => None,
            })
            .collect();
        assert_eq!(began, "424");
        let ended = events
            .iter()
            .filter(|e| matches!(e, DtmfEvent::Ended { duration: 960, .. }))
            .count();
        assert_eq!(ended, 3);
    }

    #[test]
    fn rfc4733_2_5_2_lost_start_still_yields_the_digit_and_stragglers_are_ignored() {
        let mut rx = DtmfReceiver::new();
        let end = TelephoneEvent {
            event: 7,
            end: true,
            volume: 10,
            duration: 800,
        }
        .to_bytes();
        // Only one copy of the end arrives: the press begins and ends.
        let events: Vec<DtmfEvent> = rx.handle(5000, &end).collect();
        assert!(matches!(
            events[..],
            [
                DtmfEvent::Began { .. },
                DtmfEvent::Ended {
                    duration: 800,
                    timestamp: 5000,
                    ..
                }
            ]
        ));
        assert_eq!(rx.handle(5000, &end).count(), 0);
        // A packet of an older press arriving late is not a new press.
        assert_eq!(rx.handle(1000, &end).count(), 0);
        // Non-DTMF events and garbage are ignored.
        assert_eq!(rx.handle(9000, &[70, 0, 0, 160]).count(), 0);
        assert_eq!(rx.handle(9000, &[1]).count(), 0);
    }

    /// RFC 4733 §2.5.1.3 and §2.5.2.3: a 2 s press at 48 kHz (96 000
    /// units) goes out in two segments 0xFFFF apart, and comes back as one
    /// press of the whole length.
    #[test]
    fn rfc4733_2_5_1_3_a_long_press_is_sent_in_segments_and_read_as_one() {
        let packets = encode_press(
            Digit::from_char('5').unwrap(),
            10,
            Duration::from_secs(2),
            Duration::from_millis(20),
            48_000,
        );
        let offsets: Vec<u32> = packets.iter().map(|p| p.timestamp_offset).collect();
        assert!(offsets.iter().all(|&o| o == 0 || o == 0xFFFF));
        let first_of_second = offsets.iter().position(|&o| o == 0xFFFF).unwrap();
        assert_eq!(packets[first_of_second - 1].event.duration, 0xFFFF);
        let ends: Vec<&EventPacket> = packets.iter().filter(|p| p.event.end).collect();
        assert_eq!(ends.len(), 3);
        assert!(ends.iter().all(
            |p| p.timestamp_offset == 0xFFFF && u32::from(p.event.duration) == 96_000 - 0xFFFF
        ));
        assert_eq!(packets.iter().filter(|p| p.marker).count(), 1);
        // Durations grow within each segment.
        for w in packets.windows(2) {
            if w[0].timestamp_offset == w[1].timestamp_offset {
                assert!(w[0].event.duration <= w[1].event.duration);
            }
        }

        let start = 4_294_900_000u32; // the second segment's timestamp wraps
        let mut rx = DtmfReceiver::new();
        let events: Vec<DtmfEvent> = packets
            .iter()
            .flat_map(|p| rx.handle(start.wrapping_add(p.timestamp_offset), &p.event.to_bytes()))
            .collect();
        assert!(
            matches!(
                events[..],
                [
                    DtmfEvent::Began { timestamp: s, .. },
                    DtmfEvent::Ended {
                        duration: 96_000,
                        timestamp: e,
                        ..
                    }
                ] if s == start && e == start
            ),
            "{events:?}"
        );
        // A different key 0xFFFF later is a new press, not a continuation.
        let other = TelephoneEvent {
            event: 6,
            end: false,
            volume: 10,
            duration: 160,
        }
        .to_bytes();
        let next = start.wrapping_add(2 * 0xFFFF);
        assert!(matches!(
            rx.handle(next, &other).next(),
            Some(DtmfEvent::Began { .. })
        ));
    }
}
