//! Receiver statistics for one RTP source (RFC 3550 §A.1, §A.3, §A.8).
//!
//! [`ReceiverStatistics`] validates sequence numbers with the probation and
//! dropout rules of §A.1, counts loss as §A.3 does (cumulative and per
//! report interval), estimates interarrival jitter as §A.8 does, and builds
//! the [`ReportBlock`] that an SR or RR carries about the source.

use std::time::{Duration, Instant};

use crate::rtcp::{NtpTimestamp, ReportBlock};
use crate::rtp::Ssrc;

/// Sequential packets required before a new source is accepted (§A.1).
pub const MIN_SEQUENTIAL: u16 = 2;
/// Largest forward jump still treated as the same stream (§A.1).
pub const MAX_DROPOUT: u16 = 3000;
/// Largest backward jump still treated as reordering (§A.1).
pub const MAX_MISORDER: u16 = 100;

const SEQ_MOD: u32 = 1 << 16;

/// What [`ReceiverStatistics::handle_packet`] made of a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SequenceCheck {
    /// In sequence (or reordered within bounds): counted.
    Valid,
    /// The source is still on probation: not counted yet.
    Probation,
    /// A large jump: dropped unless the next packet confirms it.
    BadJump,
    /// The previous packet was a large jump and this one follows it: the
    /// sender restarted its sequence and the statistics were reset.
    Restarted,
}

/// Per-source reception state and statistics.
#[derive(Clone, Debug)]
pub struct ReceiverStatistics {
    ssrc: Ssrc,
    clock_rate: u32,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u16,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    epoch: Instant,
    transit: Option<i64>,
    /// Jitter scaled by 16, as in §A.8.
    jitter_q4: u32,
    last_sender_report: Option<(u32, Instant)>,
}

impl ReceiverStatistics {
    /// Starts tracking `ssrc` on its first packet (sequence number `seq`,
    /// arriving at `now`), on probation as §A.1 requires. `clock_rate` is
    /// the RTP clock of the payload (8000 for G.711).
    pub fn new(now: Instant, ssrc: Ssrc, seq: u16, clock_rate: u32) -> Self {
        let mut s = ReceiverStatistics {
            ssrc,
            clock_rate: clock_rate.max(1),
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: 0,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            epoch: now,
            transit: None,
            jitter_q4: 0,
            last_sender_report: None,
        };
        s.init_sequence(seq);
        s.max_seq = seq.wrapping_sub(1);
        s
    }

    /// The source tracked.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// Feeds one received packet: sequence validation (§A.1) and, for
    /// counted packets, the jitter estimate (§A.8).
    pub fn handle_packet(&mut self, now: Instant, seq: u16, timestamp: u32) -> SequenceCheck {
        let check = self.update_sequence(seq);
        if matches!(check, SequenceCheck::Valid | SequenceCheck::Restarted) {
            self.update_jitter(now, timestamp);
        }
        check
    }

    /// [`handle_packet`](Self::handle_packet) for a packet whose timestamp
    /// says nothing about its send time: RFC 4733 events keep the
    /// timestamp of the key press's start for all their packets. It counts
    /// for sequence and loss, not for jitter.
    pub fn handle_untimed_packet(&mut self, seq: u16) -> SequenceCheck {
        self.update_sequence(seq)
    }

    /// Records a sender report from this source, received at `now`, for the
    /// LSR/DLSR fields of later report blocks.
    pub fn handle_sender_report(&mut self, now: Instant, ntp: NtpTimestamp) {
        self.last_sender_report = Some((ntp.middle_32(), now));
    }

    /// Packets counted as received.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// The extended highest sequence number received (§A.1).
    pub fn extended_highest_sequence(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected since the first valid one (§A.3).
    pub fn expected(&self) -> u32 {
        self.extended_highest_sequence()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }

    /// Cumulative packets lost (§A.3): expected minus received, negative
    /// when duplicates arrived, clamped to the 24-bit field.
    pub fn cumulative_lost(&self) -> i32 {
        let lost = i64::from(self.expected()) - i64::from(self.received);
        // Clamped into i32 range, so the conversion cannot fail.
        i32::try_from(lost.clamp(-0x80_0000, 0x7F_FFFF)).unwrap_or(0)
    }

    /// The interarrival jitter in RTP timestamp units (§A.8).
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// The interarrival jitter as a duration.
    pub fn jitter_duration(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.jitter()) / f64::from(self.clock_rate))
    }

    /// Whether the source has passed probation.
    pub fn is_valid(&self) -> bool {
        self.probation == 0
    }

    /// The report block about this source at `now`; starts a new interval
    /// for the fraction lost (§A.3).
    pub fn report_block(&mut self, now: Instant) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            u8::try_from((lost_interval << 8) / i64::from(expected_interval)).unwrap_or(u8::MAX)
        };
        let (last_sender_report, delay_since_last_sender_report) = match self.last_sender_report {
            Some((lsr, at)) => {
                let delay = now.saturating_duration_since(at);
                let units = delay.as_nanos() * 65_536 / 1_000_000_000;
                (lsr, u32::try_from(units).unwrap_or(u32::MAX))
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost(),
            extended_highest_sequence: self.extended_highest_sequence(),
            jitter: self.jitter(),
            last_sender_report,
            delay_since_last_sender_report,
        }
    }

    fn init_sequence(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    fn update_sequence(&mut self, seq: u16) -> SequenceCheck {
        let delta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_sequence(seq);
                    self.received += 1;
                    return SequenceCheck::Valid;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SequenceCheck::Probation;
        }
        let mut check = SequenceCheck::Valid;
        if delta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(delta) <= SEQ_MOD - u32::from(MAX_MISORDER) {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a jump: the sender restarted.
                self.init_sequence(seq);
                self.transit = None;
                check = SequenceCheck::Restarted;
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD - 1);
                return SequenceCheck::BadJump;
            }
        }
        // Otherwise a duplicate or reordered packet: counted, as in §A.1.
        self.received += 1;
        check
    }

    fn update_jitter(&mut self, now: Instant, timestamp: u32) {
        let elapsed = now.saturating_duration_since(self.epoch);
        let arrival = elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000;
        // Modular arithmetic: only differences of transit times matter.
        let transit = i64::from((arrival as u32).wrapping_sub(timestamp) as i32);
        if let Some(prev) = self.transit {
            let d = i64::from(((transit - prev) as i32).unsigned_abs());
            let j = i64::from(self.jitter_q4);
            let next = j + d - ((j + 8) >> 4);
            self.jitter_q4 = u32::try_from(next.max(0)).unwrap_or(u32::MAX);
        }
        self.transit = Some(transit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `seqs` at 20 ms spacing with matching timestamps.
    fn feed(stats: &mut ReceiverStatistics, t0: Instant, seqs: &[u16]) -> Vec<SequenceCheck> {
        seqs.iter()
            .map(|&s| {
                let n = u64::from(s.wrapping_sub(seqs[0]));
                stats.handle_packet(t0 + ms(20 * n), s, (n as u32) * 160)
            })
            .collect()
    }

    #[test]
    fn rfc3550_a_1_new_source_needs_two_sequential_packets() {
        let t0 = crate::test_support::epoch();
        let mut s = ReceiverStatistics::new(t0, Ssrc(1), 100, 8000);
        assert!(!s.is_valid());
        assert_eq!(s.handle_packet(t0, 100, 0), SequenceCheck::Probation);
        assert_eq!(s.handle_packet(t0 + ms(20), 101, 160), SequenceCheck::Valid);
        assert!(s.is_valid());
        assert_eq!(s.received(), 1);
        assert_eq!(s.expected(), 1);
    }

    #[test]
    fn rfc3550_a_1_probation_restarts_on_a_gap() {
        let t0 = crate::test_support::epoch();
        let mut s = ReceiverStatistics::new(t0, Ssrc(1), 100, 8000);
        assert_eq!(s.handle_packet(t0, 100, 0), SequenceCheck::Probation);
        assert_eq!(s.handle_packet(t0, 105, 0), SequenceCheck::Probation);
        assert_eq!(s.handle_packet(t0, 106, 0), SequenceCheck::Valid);
    }

    #[test]
    fn rfc3550_a_3_counts_loss_across_sequence_wrap() {
        let t0 = crate::test_support::epoch();
        let seqs: Vec<u16> = (0..20u16)
            .map(|i| 65530u16.wrapping_add(i))
            .filter(|s| *s != 2 && *s != 65535)
            .collect();
        let mut s = ReceiverStatistics::new(t0, Ssrc(7), seqs[0], 8000);
        feed(&mut s, t0, &seqs);
        // Probation swallows the first packet; 65531..=13 expected.
        assert_eq!(s.extended_highest_sequence(), (1 << 16) + 13);
        assert_eq!(s.expected(), 19);
        assert_eq!(s.cumulative_lost(), 2);
        let block = s.report_block(t0);
        assert_eq!(block.cumulative_lost, 2);
        assert_eq!(block.fraction_lost, (2 * 256 / 19) as u8);
        assert_eq!(block.extended_highest_sequence, 65536 + 13);
        // A second report with nothing new has no fresh loss.
        assert_eq!(s.report_block(t0).fraction_lost, 0);
    }

    #[test]
    fn rfc3550_a_3_duplicates_make_loss_negative() {
        let t0 = crate::test_support::epoch();
        let mut s = ReceiverStatistics::new(t0, Ssrc(7), 10, 8000);
        feed(&mut s, t0, &[10, 11, 12, 12, 12]);
        assert_eq!(s.cumulative_lost(), -2);
        assert_eq!(s.report_block(t0).fraction_lost, 0);
    }

    #[test]
    fn rfc3550_a_1_large_jump_needs_confirmation() {
        let t0 = crate::test_support::epoch();
        let mut s = ReceiverStatistics::new(t0, Ssrc(7), 10, 8000);
        feed(&mut s, t0, &[10, 11, 12]);
        assert_eq!(s.handle_packet(t0, 20_000, 0), SequenceCheck::BadJump);
        assert_eq!(s.extended_highest_sequence(), 12);
        assert_eq!(s.handle_packet(t0, 20_001, 0), SequenceCheck::Restarted);
        assert_eq!(s.extended_highest_sequence(), 20_001);
        assert_eq!(s.received(), 1);
    }

    #[test]
    fn rfc3550_a_8_jitter_is_zero_for_perfect_spacing() {
        let t0 = crate::test_support::epoch();
        let seqs: Vec<u16> = (0..50).collect();
        let mut s = ReceiverStatistics::new(t0, Ssrc(1), 0, 8000);
        feed(&mut s, t0, &seqs);
        assert_eq!(s.jitter(), 0);
    }

    /// RFC 4733 events keep one timestamp for a whole key press: counted
    /// as untimed they leave a perfect path's jitter at zero (as timed
    /// packets they would add a packet time each).
    #[test]
    fn rfc4733_event_packets_do_not_count_for_jitter() {
        let t0 = crate::test_support::epoch();
        let mut s = ReceiverStatistics::new(t0, Ssrc(1), 0, 8000);
        let mut timed = ReceiverStatistics::new(t0, Ssrc(1), 0, 8000);
        // Up to the first audio packet after the press.
        for i in 0..48u32 {
            let at = t0 + ms(u64::from(i) * 20);
            if (40..47).contains(&i) {
                // A 140 ms press that started at packet 40.
                s.handle_untimed_packet(i as u16);
                timed.handle_packet(at, i as u16, 40 * 160);
            } else {
                s.handle_packet(at, i as u16, i * 160);
                timed.handle_packet(at, i as u16, i * 160);
            }
        }
        assert_eq!(s.jitter(), 0);
        assert!(timed.jitter() > 20, "{}", timed.jitter());
        assert_eq!(s.received(), timed.received());
    }

    #[test]
    fn rfc3550_a_8_jitter_converges_to_mean_deviation() {
        // Alternate arrivals 10 ms early and late: every transit difference
        // is 20 ms = 160 units, so the estimate converges to 160.
        let t0 = crate::test_support::epoch();
        let mut s = ReceiverStatistics::new(t0, Ssrc(1), 0, 8000);
        for i in 0..400u32 {
            let offset = if i % 2 == 0 { 0 } else { 20 };
            let at = t0 + ms(u64::from(i) * 20 + offset);
            s.handle_packet(at, i as u16, i * 160);
        }
        assert!((155..=160).contains(&s.jitter()), "jitter {}", s.jitter());
        let d = s.jitter_duration();
        assert!(d > ms(19) && d <= ms(20));
    }

    #[test]
    fn rfc3550_6_4_1_report_carries_lsr_and_dlsr() {
        let t0 = crate::test_support::epoch();
        let mut s = ReceiverStatistics::new(t0, Ssrc(1), 0, 8000);
        assert_eq!(s.report_block(t0).last_sender_report, 0);
        s.handle_sender_report(t0, NtpTimestamp(0x1234_5678_9ABC_DEF0));
        let block = s.report_block(t0 + ms(1500));
        assert_eq!(block.last_sender_report, 0x5678_9ABC);
        assert_eq!(block.delay_since_last_sender_report, 0x0001_8000);
    }
}
