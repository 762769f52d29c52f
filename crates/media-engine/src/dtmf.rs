//! DTMF as RTP telephone-events (RFC 4733).
//!
//! [`TelephoneEvent`] is the four-byte payload. [`encode_press`] turns one
//! key press into the packets to send: a first packet with the marker bit,
//! continuation packets every packet interval with a growing duration, and
//! the final packet with the E bit sent three times (RFC 4733 §2.5.1.4).
//! All packets of one press carry the timestamp of its start; the caller
//! stamps sequence numbers and sends each packet at its offset.
//!
//! [`DtmfReceiver`] turns received packets back into exactly one
//! [`DtmfEvent::Began`] and one [`DtmfEvent::Ended`] per press, ignoring
//! repeats and retransmissions.
//!
//! ```
//! use std::time::Duration;
//! use media_engine::dtmf::{DtmfEvent, DtmfReceiver, Digit, encode_press};
//!
//! let packets = encode_press(Digit::from_char('5').unwrap(), 10, Duration::from_millis(100), Duration::from_millis(20), 8000);
//! let mut rx = DtmfReceiver::new();
//! let events: Vec<_> = packets.iter().filter_map(|p| rx.handle(4000, &p.event.to_bytes())).collect();
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
    /// The RTP marker bit (set on the first packet only).
    pub marker: bool,
    /// The payload.
    pub event: TelephoneEvent,
}

/// Plans the packets of one key press lasting `duration`, one every
/// `interval` (the packet time, typically 20 ms or 50 ms), at `clock_rate`
/// (8000 for narrowband). The press is cut at 65535 timestamp units (about
/// 8 s at 8 kHz), the longest one packet can describe.
pub fn encode_press(
    digit: Digit,
    volume: u8,
    duration: Duration,
    interval: Duration,
    clock_rate: u32,
) -> Vec<EventPacket> {
    let units = |d: Duration| -> u16 {
        let n = d.as_nanos() * u128::from(clock_rate) / 1_000_000_000;
        u16::try_from(n).unwrap_or(u16::MAX)
    };
    let interval = interval.max(Duration::from_millis(1));
    let total = units(duration).max(1);
    let step = units(interval).max(1);
    let volume = volume.min(63);
    let mut packets = Vec::new();
    let mut elapsed = Duration::ZERO;
    let mut sent = 0u16;
    // Start and continuation packets, each reporting the duration so far.
    loop {
        let so_far = sent.saturating_add(step);
        if so_far >= total {
            break;
        }
        packets.push(EventPacket {
            offset: elapsed,
            marker: packets.is_empty(),
            event: TelephoneEvent {
                event: digit.event(),
                end: false,
                volume,
                duration: so_far,
            },
        });
        sent = so_far;
        elapsed += interval;
    }
    // The end, three times for robustness (RFC 4733 §2.5.1.4).
    for k in 0..3 {
        packets.push(EventPacket {
            offset: elapsed,
            marker: packets.is_empty() && k == 0,
            event: TelephoneEvent {
                event: digit.event(),
                end: true,
                volume,
                duration: total,
            },
        });
        elapsed += interval;
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
        /// Its total duration in timestamp units.
        duration: u16,
        /// RTP timestamp of the press.
        timestamp: u32,
    },
}

/// Turns received telephone-event packets into one begin and one end per
/// key press. Presses are told apart by their RTP timestamp (RFC 4733
/// §2.5.2.1); non-DTMF events and malformed payloads are ignored.
#[derive(Clone, Debug, Default)]
pub struct DtmfReceiver {
    /// Recent presses: (timestamp, ended).
    presses: VecDeque<(u32, bool)>,
}

const REMEMBERED_PRESSES: usize = 16;

impl DtmfReceiver {
    /// A receiver that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one packet's RTP timestamp and payload; returns what it
    /// revealed, if anything new.
    pub fn handle(&mut self, timestamp: u32, payload: &[u8]) -> Option<DtmfEvent> {
        let event = TelephoneEvent::parse(payload).ok()?;
        let digit = Digit::from_event(event.event)?;
        match self.presses.iter_mut().find(|(ts, _)| *ts == timestamp) {
            Some((_, ended)) => {
                if event.end && !*ended {
                    *ended = true;
                    return Some(DtmfEvent::Ended {
                        digit,
                        duration: event.duration,
                        timestamp,
                    });
                }
                None
            }
            None => {
                // A press older than the newest one seen is a straggler.
                if self
                    .presses
                    .back()
                    .is_some_and(|(last, _)| (timestamp.wrapping_sub(*last) as i32) < 0)
                {
                    return None;
                }
                if self.presses.len() == REMEMBERED_PRESSES {
                    self.presses.pop_front();
                }
                // Only the end survived: report the press as begun now; its
                // end follows from the next copy of the end packet.
                self.presses.push_back((timestamp, false));
                Some(DtmfEvent::Began { digit, timestamp })
            }
        }
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
        assert!(matches!(
            rx.handle(5000, &end),
            Some(DtmfEvent::Began { .. })
        ));
        assert!(matches!(
            rx.handle(5000, &end),
            Some(DtmfEvent::Ended { .. })
        ));
        assert_eq!(rx.handle(5000, &end), None);
        // A packet of an older press arriving late is not a new press.
        assert_eq!(rx.handle(1000, &end), None);
        // Non-DTMF events and garbage are ignored.
        assert_eq!(rx.handle(9000, &[70, 0, 0, 160]), None);
        assert_eq!(rx.handle(9000, &[1]), None);
    }
}
