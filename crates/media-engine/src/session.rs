//! A sans-IO RTP session for one call leg (RFC 3550 §6, §8).
//!
//! [`RtpSession`] stamps outgoing packets with the local SSRC and sequence
//! numbers, tracks the remote source with [`ReceiverStatistics`], detects a
//! change of remote SSRC and an SSRC collision with ourselves (§8.2),
//! measures round-trip time from the report blocks the peer sends back, and
//! schedules compound RTCP reports (SR or RR, SDES CNAME, and BYE on close).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use media_engine::rtcp::NtpTimestamp;
//! use media_engine::session::{RtpSession, RtpSessionConfig};
//! use rand::{SeedableRng, rngs::StdRng};
//!
//! let mut rng = StdRng::seed_from_u64(7);
//! let mut now = Instant::now();
//! let wall = NtpTimestamp::from_unix(Duration::from_secs(1_800_000_000));
//! let mut session = RtpSession::new(now, wall, RtpSessionConfig::new("me@example.org"), &mut rng);
//! let packet = session.build_packet(now, 0, 0, true, vec![0xFF; 160]);
//! assert_eq!(packet.ssrc, session.local_ssrc());
//! // The driver's loop: wait for the deadline, then drain the queues.
//! now = session.poll_timeout().unwrap();
//! session.handle_timeout(now);
//! while let Some(rtcp) = session.poll_transmit() {
//!     assert!(media_engine::rtp::is_rtcp(&rtcp));
//! }
//! while let Some(_event) = session.poll_event() {}
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, trace, warn};

use crate::rtcp::{
    self, Goodbye, NtpTimestamp, ReceiverReport, RtcpPacket, RtcpParseError, SdesChunk,
    SenderReport,
};
use crate::rtp::{RtpPacket, Ssrc};
use crate::stats::{ReceiverStatistics, SequenceCheck};

/// Settings of an [`RtpSession`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RtpSessionConfig {
    /// The canonical name sent in SDES (RFC 3550 §6.5.1).
    pub cname: String,
    /// RTP clock rate of the payload (8000 for G.711 and telephone-events).
    pub clock_rate: u32,
    /// Nominal interval between compound RTCP reports; each actual interval
    /// is randomized between 0.5 and 1.5 times this (RFC 3550 §6.3.1).
    pub report_interval: Duration,
}

impl RtpSessionConfig {
    /// A configuration with the given CNAME, an 8 kHz clock and the 5 s
    /// minimum report interval of RFC 3550 §6.2.
    pub fn new(cname: impl Into<String>) -> Self {
        RtpSessionConfig {
            cname: cname.into(),
            clock_rate: 8000,
            report_interval: Duration::from_secs(5),
        }
    }

    /// Sets the RTP clock rate.
    pub fn with_clock_rate(mut self, clock_rate: u32) -> Self {
        self.clock_rate = clock_rate.max(1);
        self
    }

    /// Sets the nominal report interval.
    pub fn with_report_interval(mut self, interval: Duration) -> Self {
        self.report_interval = interval;
        self
    }
}

/// Something the application or driver may want to react to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The first packet from the remote source arrived.
    RemoteSourceStarted {
        /// Its SSRC.
        ssrc: Ssrc,
    },
    /// The remote side started sending with a different SSRC; statistics
    /// restart and a jitter buffer should be reset.
    RemoteSourceChanged {
        /// The SSRC before.
        old: Ssrc,
        /// The SSRC now.
        new: Ssrc,
    },
    /// A packet arrived carrying our own SSRC (RFC 3550 §8.2); we sent a BYE
    /// for the old identifier and continue with a new random one.
    SsrcCollision {
        /// The SSRC we had.
        old: Ssrc,
        /// The SSRC we use from now on.
        new: Ssrc,
    },
    /// A new round-trip time measurement from a report block.
    RoundTripTime(Duration),
    /// The remote source said goodbye.
    RemoteGoodbye {
        /// The source leaving.
        ssrc: Ssrc,
        /// Its reason, if any and UTF-8.
        reason: Option<String>,
    },
}

/// What [`RtpSession::handle_rtp`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtpDisposition {
    /// Counted; pass it on to the jitter buffer.
    Accepted,
    /// The source is on probation (RFC 3550 §A.1); the packet may still be
    /// played, but statistics do not count it yet.
    Probation,
    /// A sequence jump not yet confirmed; drop it.
    Dropped,
    /// It carried our own SSRC; drop it.
    Collision,
}

/// The per-call RTP/RTCP state machine. See the module documentation.
#[derive(Debug)]
pub struct RtpSession {
    config: RtpSessionConfig,
    rng: StdRng,
    epoch: Instant,
    wall_at_epoch: NtpTimestamp,
    local_ssrc: Ssrc,
    next_sequence: u16,
    packets_sent: u32,
    octets_sent: u32,
    sent_since_report: bool,
    last_sent: Option<(Instant, u32)>,
    remote: Option<ReceiverStatistics>,
    remote_fraction_lost: Option<u8>,
    round_trip_time: Option<Duration>,
    next_report: Option<Instant>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<SessionEvent>,
}

impl RtpSession {
    /// Starts a session at `now`, when the wall clock reads `wall_now`. The
    /// SSRC, the first sequence number and the report timing are drawn from
    /// `rng`, so a seeded generator makes the session reproducible.
    pub fn new<R: Rng + ?Sized>(
        now: Instant,
        wall_now: NtpTimestamp,
        config: RtpSessionConfig,
        rng: &mut R,
    ) -> Self {
        let mut own = StdRng::seed_from_u64(rng.random());
        let local_ssrc = Ssrc(own.random());
        let next_sequence = own.random();
        let first = config.report_interval.mul_f64(own.random_range(0.25..0.75));
        RtpSession {
            config,
            rng: own,
            epoch: now,
            wall_at_epoch: wall_now,
            local_ssrc,
            next_sequence,
            packets_sent: 0,
            octets_sent: 0,
            sent_since_report: false,
            last_sent: None,
            remote: None,
            remote_fraction_lost: None,
            round_trip_time: None,
            next_report: Some(now + first),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Our SSRC.
    pub fn local_ssrc(&self) -> Ssrc {
        self.local_ssrc
    }

    /// The remote source's statistics, once a packet has arrived.
    pub fn remote_statistics(&self) -> Option<&ReceiverStatistics> {
        self.remote.as_ref()
    }

    /// The latest round-trip time measurement.
    pub fn round_trip_time(&self) -> Option<Duration> {
        self.round_trip_time
    }

    /// The fraction of our packets the peer reported lost in its latest
    /// report, in 1/256.
    pub fn remote_fraction_lost(&self) -> Option<u8> {
        self.remote_fraction_lost
    }

    /// Builds the next outgoing packet with our SSRC and the next sequence
    /// number, and counts it for sender reports.
    pub fn build_packet(
        &mut self,
        now: Instant,
        payload_type: u8,
        timestamp: u32,
        marker: bool,
        payload: Vec<u8>,
    ) -> RtpPacket {
        let mut packet = RtpPacket::new(
            payload_type,
            self.next_sequence,
            timestamp,
            self.local_ssrc,
            payload,
        );
        packet.marker = marker;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        let len = u32::try_from(packet.payload.len()).unwrap_or(u32::MAX);
        self.octets_sent = self.octets_sent.wrapping_add(len);
        self.sent_since_report = true;
        self.last_sent = Some((now, timestamp));
        trace!(seq = packet.sequence_number, timestamp, "rtp out");
        packet
    }

    /// Forgets the remote source: the next packet starts one, whatever
    /// its SSRC (media moved to another endpoint).
    pub fn forget_remote(&mut self) {
        self.remote = None;
        self.remote_fraction_lost = None;
    }

    /// Feeds a received RTP packet.
    pub fn handle_rtp(&mut self, now: Instant, packet: &RtpPacket) -> RtpDisposition {
        self.receive_rtp(now, packet, true)
    }

    /// [`handle_rtp`](Self::handle_rtp) for a packet whose timestamp is not
    /// its send time (RFC 4733 telephone-events): it is left out of the
    /// interarrival jitter, which such timestamps would inflate.
    pub fn handle_untimed_rtp(&mut self, now: Instant, packet: &RtpPacket) -> RtpDisposition {
        self.receive_rtp(now, packet, false)
    }

    fn receive_rtp(&mut self, now: Instant, packet: &RtpPacket, timed: bool) -> RtpDisposition {
        if packet.ssrc == self.local_ssrc {
            self.resolve_collision(now);
            return RtpDisposition::Collision;
        }
        match &self.remote {
            Some(stats) if stats.ssrc() == packet.ssrc => {}
            Some(stats) => {
                let old = stats.ssrc();
                debug!(%old, new = %packet.ssrc, "remote ssrc changed");
                self.events.push_back(SessionEvent::RemoteSourceChanged {
                    old,
                    new: packet.ssrc,
                });
                self.remote = Some(self.new_remote(now, packet));
            }
            None => {
                debug!(ssrc = %packet.ssrc, "remote source started");
                self.events
                    .push_back(SessionEvent::RemoteSourceStarted { ssrc: packet.ssrc });
                self.remote = Some(self.new_remote(now, packet));
            }
        }
        let Some(stats) = self.remote.as_mut() else {
            return RtpDisposition::Dropped;
        };
        let check = if timed {
            stats.handle_packet(now, packet.sequence_number, packet.timestamp)
        } else {
            stats.handle_untimed_packet(packet.sequence_number)
        };
        match check {
            SequenceCheck::Valid | SequenceCheck::Restarted => RtpDisposition::Accepted,
            SequenceCheck::Probation => RtpDisposition::Probation,
            _ => RtpDisposition::Dropped,
        }
    }

    /// Feeds a received compound RTCP packet.
    pub fn handle_rtcp(&mut self, now: Instant, data: &[u8]) -> Result<(), RtcpParseError> {
        let packets = rtcp::parse_compound(data)?;
        let arrival = self.wall_clock(now);
        for packet in packets {
            match packet {
                RtcpPacket::SenderReport(sr) => {
                    if sr.ssrc == self.local_ssrc {
                        self.resolve_collision(now);
                        continue;
                    }
                    if let Some(stats) = self.remote.as_mut().filter(|s| s.ssrc() == sr.ssrc) {
                        stats.handle_sender_report(now, sr.ntp_timestamp);
                    }
                    self.handle_blocks(arrival, &sr.reports);
                }
                RtcpPacket::ReceiverReport(rr) => {
                    if rr.ssrc == self.local_ssrc {
                        self.resolve_collision(now);
                        continue;
                    }
                    self.handle_blocks(arrival, &rr.reports);
                }
                RtcpPacket::Goodbye(bye) => {
                    for ssrc in bye.sources {
                        if self.remote.as_ref().is_some_and(|s| s.ssrc() == ssrc) {
                            let reason = bye
                                .reason
                                .as_ref()
                                .and_then(|r| String::from_utf8(r.clone()).ok());
                            self.events
                                .push_back(SessionEvent::RemoteGoodbye { ssrc, reason });
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Sends a compound report if one is due. Safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.next_report else { return };
        if now < due {
            return;
        }
        let report = self.compound_report(now, None);
        self.transmits.push_back(report);
        let factor = self.rng.random_range(0.5..1.5);
        self.next_report = Some(now + self.config.report_interval.mul_f64(factor));
    }

    /// Ends the session: queues a final report with a BYE (RFC 3550 §6.6)
    /// and stops the report timer.
    pub fn close(&mut self, now: Instant, reason: Option<&str>) {
        let bye = Goodbye {
            sources: vec![self.local_ssrc],
            reason: reason.map(|r| r.as_bytes().iter().copied().take(255).collect()),
        };
        let report = self.compound_report(now, Some(bye));
        self.transmits.push_back(report);
        self.next_report = None;
    }

    /// The next datagram of RTCP to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_report
    }

    fn new_remote(&self, now: Instant, packet: &RtpPacket) -> ReceiverStatistics {
        ReceiverStatistics::new(
            now,
            packet.ssrc,
            packet.sequence_number,
            self.config.clock_rate,
        )
    }

    fn wall_clock(&self, now: Instant) -> NtpTimestamp {
        let elapsed = now.saturating_duration_since(self.epoch);
        let ticks = (elapsed.as_nanos() << 32) / 1_000_000_000;
        NtpTimestamp(
            self.wall_at_epoch
                .0
                .wrapping_add(u64::try_from(ticks).unwrap_or(u64::MAX)),
        )
    }

    fn handle_blocks(&mut self, arrival: NtpTimestamp, blocks: &[rtcp::ReportBlock]) {
        for block in blocks.iter().filter(|b| b.ssrc == self.local_ssrc) {
            self.remote_fraction_lost = Some(block.fraction_lost);
            if let Some(rtt) = rtcp::round_trip_time(arrival, block) {
                trace!(rtt_ms = rtt.as_millis(), "round-trip time");
                self.round_trip_time = Some(rtt);
                self.events.push_back(SessionEvent::RoundTripTime(rtt));
            }
        }
    }

    fn resolve_collision(&mut self, now: Instant) {
        let old = self.local_ssrc;
        let bye = Goodbye {
            sources: vec![old],
            reason: Some(b"ssrc collision".to_vec()),
        };
        let report = self.compound_report(now, Some(bye));
        self.transmits.push_back(report);
        let mut new = Ssrc(self.rng.random());
        while new == old || self.remote.as_ref().is_some_and(|s| s.ssrc() == new) {
            new = Ssrc(self.rng.random());
        }
        warn!(%old, %new, "ssrc collision, choosing a new ssrc");
        self.local_ssrc = new;
        self.packets_sent = 0;
        self.octets_sent = 0;
        self.sent_since_report = false;
        self.events
            .push_back(SessionEvent::SsrcCollision { old, new });
    }

    fn compound_report(&mut self, now: Instant, bye: Option<Goodbye>) -> Vec<u8> {
        let reports: Vec<_> = self
            .remote
            .as_mut()
            .filter(|s| s.is_valid())
            .map(|s| s.report_block(now))
            .into_iter()
            .collect();
        let first = if self.sent_since_report {
            let rtp_timestamp = match self.last_sent {
                Some((at, ts)) => {
                    let since = now.saturating_duration_since(at);
                    let units =
                        since.as_nanos() * u128::from(self.config.clock_rate) / 1_000_000_000;
                    ts.wrapping_add(u32::try_from(units % (1 << 32)).unwrap_or(0))
                }
                None => 0,
            };
            RtcpPacket::SenderReport(SenderReport {
                ssrc: self.local_ssrc,
                ntp_timestamp: self.wall_clock(now),
                rtp_timestamp,
                packet_count: self.packets_sent,
                octet_count: self.octets_sent,
                reports,
            })
        } else {
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: self.local_ssrc,
                reports,
            })
        };
        self.sent_since_report = false;
        let mut packets = vec![
            first,
            RtcpPacket::SourceDescription(vec![SdesChunk::cname(
                self.local_ssrc,
                &self.config.cname,
            )]),
        ];
        if let Some(bye) = bye {
            packets.push(RtcpPacket::Goodbye(bye));
        }
        let mut out = Vec::new();
        // Every field was produced within its limits above: one block, one
        // chunk, a CNAME the caller chose (cut to 255 bytes below if needed).
        if rtcp::write_compound(&packets, &mut out).is_err() {
            out.clear();
            if let Some(RtcpPacket::SourceDescription(chunks)) = packets.get_mut(1) {
                for item in chunks.iter_mut().flat_map(|c| c.items.iter_mut()) {
                    item.value.truncate(255);
                }
            }
            let _ = rtcp::write_compound(&packets, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall() -> NtpTimestamp {
        NtpTimestamp::from_unix(Duration::from_secs(1_800_000_000))
    }

    fn pair(now: Instant) -> (RtpSession, RtpSession) {
        let mut rng = StdRng::seed_from_u64(42);
        let a = RtpSession::new(
            now,
            wall(),
            RtpSessionConfig::new("a@example.org"),
            &mut rng,
        );
        let b = RtpSession::new(
            now,
            wall(),
            RtpSessionConfig::new("b@example.org"),
            &mut rng,
        );
        (a, b)
    }

    #[test]
    fn rfc3550_8_identifiers_come_from_the_seeded_rng() {
        let now = crate::test_support::epoch();
        let (a1, b1) = pair(now);
        let (a2, _) = pair(now);
        assert_eq!(a1.local_ssrc(), a2.local_ssrc());
        assert_ne!(a1.local_ssrc(), b1.local_ssrc());
    }

    #[test]
    fn rfc3550_6_4_rtt_measured_through_sr_and_rr() {
        let t0 = crate::test_support::epoch();
        let (mut a, mut b) = pair(t0);
        let one_way = Duration::from_millis(40);
        let mut now = t0;
        // a sends media for a while, b receives it.
        for i in 0..100u32 {
            let p = a.build_packet(now, 0, i * 160, i == 0, vec![0xFF; 160]);
            b.handle_rtp(now + one_way, &p);
            now += Duration::from_millis(20);
        }
        // a sends an SR; b receives it 40 ms later.
        a.next_report = Some(now);
        a.handle_timeout(now);
        let sr = a.poll_transmit().unwrap();
        b.handle_rtcp(now + one_way, &sr).unwrap();
        // b answers with an RR 300 ms later; a receives it 40 ms after that.
        let later = now + one_way + Duration::from_millis(300);
        b.next_report = Some(later);
        b.handle_timeout(later);
        let rr = b.poll_transmit().unwrap();
        a.handle_rtcp(later + one_way, &rr).unwrap();
        let rtt = a.round_trip_time().unwrap();
        let err = rtt.abs_diff(2 * one_way);
        assert!(err < Duration::from_millis(1), "rtt {rtt:?}");
        assert_eq!(a.poll_event(), Some(SessionEvent::RoundTripTime(rtt)));
        assert!(matches!(
            b.poll_event(),
            Some(SessionEvent::RemoteSourceStarted { .. })
        ));
        assert_eq!(a.remote_fraction_lost(), Some(0));
    }

    #[test]
    fn rfc3550_6_4_2_sender_report_only_after_sending() {
        let t0 = crate::test_support::epoch();
        let (mut a, _) = pair(t0);
        let due = a.poll_timeout().unwrap();
        assert!(due > t0 && due <= t0 + Duration::from_secs(4));
        a.handle_timeout(t0); // early: nothing
        assert!(a.poll_transmit().is_none());
        a.handle_timeout(due);
        let packets = rtcp::parse_compound(&a.poll_transmit().unwrap()).unwrap();
        assert!(matches!(packets[0], RtcpPacket::ReceiverReport(_)));
        let RtcpPacket::SourceDescription(chunks) = &packets[1] else {
            panic!("no sdes");
        };
        assert_eq!(chunks[0].cname_value(), Some("a@example.org"));
        let next = a.poll_timeout().unwrap();
        assert!(next >= due + Duration::from_millis(2500));
        assert!(next <= due + Duration::from_millis(7500));
        let p = a.build_packet(next, 0, 0, false, vec![0; 160]);
        a.handle_timeout(next);
        let packets = rtcp::parse_compound(&a.poll_transmit().unwrap()).unwrap();
        let RtcpPacket::SenderReport(sr) = &packets[0] else {
            panic!("no sr");
        };
        assert_eq!((sr.ssrc, sr.packet_count, sr.octet_count), (p.ssrc, 1, 160));
    }

    #[test]
    fn rfc3550_8_2_collision_picks_new_ssrc_and_sends_bye() {
        let t0 = crate::test_support::epoch();
        let (mut a, _) = pair(t0);
        let old = a.local_ssrc();
        let echo = RtpPacket::new(0, 1, 0, old, vec![]);
        assert_eq!(a.handle_rtp(t0, &echo), RtpDisposition::Collision);
        let Some(SessionEvent::SsrcCollision { old: o, new }) = a.poll_event() else {
            panic!("no collision event");
        };
        assert_eq!(o, old);
        assert_ne!(new, old);
        assert_eq!(a.local_ssrc(), new);
        let packets = rtcp::parse_compound(&a.poll_transmit().unwrap()).unwrap();
        assert!(
            packets
                .iter()
                .any(|p| matches!(p, RtcpPacket::Goodbye(b) if b.sources == vec![old]))
        );
    }

    #[test]
    fn remote_ssrc_change_restarts_statistics() {
        let t0 = crate::test_support::epoch();
        let (mut a, _) = pair(t0);
        for i in 0..5 {
            a.handle_rtp(t0, &RtpPacket::new(0, i, 0, Ssrc(1), vec![]));
        }
        assert_eq!(a.remote_statistics().unwrap().received(), 4);
        a.handle_rtp(t0, &RtpPacket::new(0, 900, 0, Ssrc(2), vec![]));
        assert_eq!(
            a.poll_event(),
            Some(SessionEvent::RemoteSourceStarted { ssrc: Ssrc(1) })
        );
        assert_eq!(
            a.poll_event(),
            Some(SessionEvent::RemoteSourceChanged {
                old: Ssrc(1),
                new: Ssrc(2)
            })
        );
        assert_eq!(a.remote_statistics().unwrap().received(), 0);
        assert_eq!(a.remote_statistics().unwrap().ssrc(), Ssrc(2));
    }

    #[test]
    fn rfc3550_6_6_close_sends_bye_and_peer_sees_it() {
        let t0 = crate::test_support::epoch();
        let (mut a, mut b) = pair(t0);
        let p = a.build_packet(t0, 0, 0, true, vec![0; 160]);
        b.handle_rtp(t0, &p);
        let _ = b.poll_event();
        a.close(t0, Some("bye now"));
        assert_eq!(a.poll_timeout(), None);
        b.handle_rtcp(t0, &a.poll_transmit().unwrap()).unwrap();
        assert_eq!(
            b.poll_event(),
            Some(SessionEvent::RemoteGoodbye {
                ssrc: a.local_ssrc(),
                reason: Some("bye now".into())
            })
        );
    }
}
