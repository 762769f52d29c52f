//! Network traces for evaluating the jitter buffer: a CSV format, a
//! deterministic generator of realistic conditions, and a replay that
//! measures what a listener would get.
//!
//! # Trace format
//!
//! A CSV file with the header `seq,rtp_ts,send_ms,arrival_ms` and one row
//! per packet sent: RTP sequence number, RTP timestamp (8 kHz clock, 20 ms
//! frames), send time and arrival time in milliseconds on the receiver's
//! clock. An empty `arrival_ms` means the network lost the packet; a
//! packet the network duplicated appears on two rows.
//!
//! # Replay
//!
//! [`replay`] feeds the packets to a [`JitterBuffer`] at their arrival
//! times on a virtual clock. An audio device takes 20 ms of audio per
//! tick; ticks fall on multiples of 20 ms of the receiver's clock, like a
//! device that knows nothing about the sender. Frames come from
//! [`JitterBuffer::pop_scaled`], possibly stretched or compressed, into a
//! [`PlayoutQueue`] the device plays from: at each tick, after the packets
//! that arrived by then are pushed, the queue is topped up to at least
//! 20 ms.
//! A frame's play time is when its first sample plays: the tick plus what
//! the queue held before it.
//! With time-scaling off every frame lasts 20 ms and plays at a tick. It
//! reports:
//!
//! - `mean_delay_ms`, `p95_delay_ms`: play time minus send time, over the
//!   frames played;
//! - `late_loss_pct`: frames that arrived but were never played (too late,
//!   or dropped to shrink the delay), in % of frames that arrived;
//! - `concealed_pct`: ticks between the first and the last frame played
//!   that had no frame to play, in % of all frames (the traces model a
//!   sender without silence suppression, so every such tick is a gap the
//!   listener hears concealed);
//! - `oracle_delay_ms`: the 99th percentile of network delay, the delay an
//!   omniscient fixed buffer would need for 1 % late loss.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::jitter::{
    JitterBuffer, JitterConfig, JitterConfigError, JitterPacket, JitterStatistics, Playout,
    PlayoutQueue,
};
use crate::rtp::{SequenceUnwrapper, Ssrc};

/// The CSV header line.
pub const TRACE_HEADER: &str = "seq,rtp_ts,send_ms,arrival_ms";

/// Frame duration of the traces, in milliseconds.
pub const FRAME_MS: f64 = 20.0;

/// RTP timestamp units per frame (8 kHz, 20 ms).
pub const FRAME_TICKS: u32 = 160;

/// One row of a trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TraceRecord {
    /// RTP sequence number.
    pub sequence_number: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Send time, ms, receiver's clock.
    pub send_ms: f64,
    /// Arrival time, ms, receiver's clock; `None` if lost.
    pub arrival_ms: Option<f64>,
}

/// Why a trace file could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The first line is not the expected header.
    #[error("line 1: expected header `{TRACE_HEADER}`, found `{found}`")]
    BadHeader {
        /// What the first line held.
        found: String,
    },
    /// A row does not have four fields.
    #[error("line {line}: expected 4 fields, found {found}")]
    FieldCount {
        /// 1-based line number.
        line: usize,
        /// Fields found.
        found: usize,
    },
    /// A field does not hold a valid value.
    #[error("line {line}: invalid {field} `{value}`")]
    BadField {
        /// 1-based line number.
        line: usize,
        /// The column.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// The file has no rows.
    #[error("trace has no packets")]
    Empty,
}

/// Why a replay could not run.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The buffer configuration was refused.
    #[error("jitter buffer configuration: {0}")]
    Config(#[from] JitterConfigError),
    /// No packet of the trace arrived.
    #[error("no packet of the trace arrived")]
    NothingArrived,
}

/// Parses a trace from CSV text.
pub fn parse_csv(text: &str) -> Result<Vec<TraceRecord>, TraceError> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
    if header.trim_start_matches('\u{feff}') != TRACE_HEADER {
        return Err(TraceError::BadHeader {
            found: header.chars().take(80).collect(),
        });
    }
    let mut records = Vec::new();
    for (index, raw) in lines {
        let line = index + 1;
        let row = raw.trim();
        if row.is_empty() {
            continue;
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if fields.len() != 4 {
            return Err(TraceError::FieldCount {
                line,
                found: fields.len(),
            });
        }
        let bad = |field: &'static str, value: &str| TraceError::BadField {
            line,
            field,
            value: value.chars().take(40).collect(),
        };
        let sequence_number = fields[0].parse().map_err(|_| bad("seq", fields[0]))?;
        let timestamp = fields[1].parse().map_err(|_| bad("rtp_ts", fields[1]))?;
        let send_ms = parse_time(fields[2]).ok_or_else(|| bad("send_ms", fields[2]))?;
        let arrival_ms = if fields[3].is_empty() {
            None
        } else {
            Some(parse_time(fields[3]).ok_or_else(|| bad("arrival_ms", fields[3]))?)
        };
        records.push(TraceRecord {
            sequence_number,
            timestamp,
            send_ms,
            arrival_ms,
        });
    }
    if records.is_empty() {
        return Err(TraceError::Empty);
    }
    Ok(records)
}

/// Writes a trace as CSV text, times with microsecond precision.
pub fn write_csv(records: &[TraceRecord]) -> String {
    let mut out = String::with_capacity(32 * (records.len() + 1));
    out.push_str(TRACE_HEADER);
    out.push('\n');
    for r in records {
        let _ = write!(
            out,
            "{},{},{:.3},",
            r.sequence_number, r.timestamp, r.send_ms
        );
        if let Some(a) = r.arrival_ms {
            let _ = write!(out, "{a:.3}");
        }
        out.push('\n');
    }
    out
}

fn parse_time(field: &str) -> Option<f64> {
    field
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && v.abs() < 1e12)
}

/// What a replay measured.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Distinct frames in the trace.
    pub frames: usize,
    /// Distinct frames that arrived.
    pub arrived: usize,
    /// Frames played.
    pub played: usize,
    /// Mean of play time minus send time over played frames, ms.
    pub mean_delay_ms: f64,
    /// 95th percentile of the same, ms.
    pub p95_delay_ms: f64,
    /// Frames that arrived but were not played, % of arrived.
    pub late_loss_pct: f64,
    /// Ticks without a frame between the first and last frame played, %
    /// of all frames.
    pub concealed_pct: f64,
    /// 99th percentile of network delay, ms.
    pub oracle_delay_ms: f64,
    /// The buffer's own statistics at the end.
    pub statistics: JitterStatistics,
}

impl ReplayReport {
    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        let s = &self.statistics;
        format!(
            concat!(
                "{{\"frames\":{},\"arrived\":{},\"played\":{},",
                "\"mean_delay_ms\":{:.2},\"p95_delay_ms\":{:.2},",
                "\"late_loss_pct\":{:.3},\"concealed_pct\":{:.3},",
                "\"oracle_delay_ms\":{:.2},",
                "\"buffer\":{{\"late\":{},\"duplicates\":{},\"concealed\":{},",
                "\"stretched\":{},\"shrunk\":{},\"dropped_for_shrink\":{},",
                "\"scaled_longer\":{},\"scaled_shorter\":{},",
                "\"overflow\":{},\"resets\":{},\"target_delay_ms\":{:.1}}}}}"
            ),
            self.frames,
            self.arrived,
            self.played,
            self.mean_delay_ms,
            self.p95_delay_ms,
            self.late_loss_pct,
            self.concealed_pct,
            self.oracle_delay_ms,
            s.late,
            s.duplicates,
            s.concealed,
            s.stretched,
            s.shrunk,
            s.dropped_for_shrink,
            s.scaled_longer,
            s.scaled_shorter,
            s.overflow,
            s.resets,
            s.target_delay.as_secs_f64() * 1000.0,
        )
    }
}

/// Replays `records` through a jitter buffer configured by `config` (its
/// clock must be 8 kHz with 20 ms frames to match the trace). `epoch` is
/// the instant that stands for 0 ms; the replay reads no clock.
pub fn replay(
    records: &[TraceRecord],
    config: JitterConfig,
    epoch: Instant,
) -> Result<ReplayReport, ReplayError> {
    let mut buffer: JitterBuffer<u64> = JitterBuffer::new(config)?;

    // Identify frames by extended sequence number, in send order.
    let mut unwrapper = SequenceUnwrapper::new();
    let mut frames: BTreeMap<u64, (f64, Option<f64>)> = BTreeMap::new();
    let mut arrivals: Vec<(f64, JitterPacket<u64>)> = Vec::new();
    let mut previous: Option<(u16, u32)> = None;
    for r in records {
        let id = unwrapper.unwrap(r.sequence_number);
        let marker = match previous {
            None => true,
            Some((seq, ts)) => {
                let seq_gap = u32::from(r.sequence_number.wrapping_sub(seq));
                let ts_gap = r.timestamp.wrapping_sub(ts);
                seq_gap > 0 && ts_gap > seq_gap.saturating_mul(FRAME_TICKS)
            }
        };
        previous = Some((r.sequence_number, r.timestamp));
        let entry = frames.entry(id).or_insert((r.send_ms, None));
        if let Some(a) = r.arrival_ms {
            entry.1 = Some(entry.1.map_or(a, |first: f64| first.min(a)));
            let packet = JitterPacket::new(Ssrc(1), r.sequence_number, r.timestamp, marker, id);
            arrivals.push((a, packet));
        }
    }
    if arrivals.is_empty() {
        return Err(ReplayError::NothingArrived);
    }
    arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));

    // Shift all times by a whole number of ticks so none is negative.
    let earliest = records
        .iter()
        .map(|r| r.send_ms.min(r.arrival_ms.unwrap_or(r.send_ms)))
        .fold(f64::INFINITY, f64::min);
    let shift = if earliest < 0.0 {
        (-earliest / FRAME_MS).ceil() * FRAME_MS
    } else {
        0.0
    };
    let instant = |t: f64| epoch + Duration::from_secs_f64((t + shift).max(0.0) / 1000.0);

    let first_arrival = arrivals[0].0;
    let last_arrival = arrivals[arrivals.len() - 1].0;
    let mut tick = ((first_arrival + shift) / FRAME_MS).ceil() * FRAME_MS - shift;
    let end = last_arrival + 20_000.0;
    let mut pending = arrivals.into_iter().peekable();
    let mut delays = Vec::new();
    let mut played = 0usize;
    let mut gap_ticks = 0usize;
    let mut gaps_before_last_frame = 0usize;
    let mut started = false;
    // Time-scaled frames do not fill whole ticks: a frame starts playing
    // after the audio the device still holds at the tick.
    let mut queue = PlayoutQueue::new(FRAME_TICKS as usize);
    while tick <= end {
        while let Some((a, packet)) = pending.next_if(|(a, _)| *a <= tick) {
            let _ = buffer.push(instant(a), packet);
        }
        while let Some(out) = queue.next(&mut buffer, instant(tick)) {
            let play_at = tick + out.offset.as_secs_f64() * 1000.0;
            match out.playout {
                Playout::Frame(frame) => {
                    if let Some((send, _)) = frames.get(&frame.payload) {
                        delays.push(play_at - send);
                    }
                    played += 1;
                    started = true;
                    gaps_before_last_frame = gap_ticks;
                }
                Playout::Conceal | Playout::Silence => {
                    if started {
                        gap_ticks += 1;
                    }
                }
            }
        }
        queue.advance();
        if pending.peek().is_none() && buffer.is_empty() {
            break;
        }
        tick += FRAME_MS;
    }

    let arrived = frames.values().filter(|(_, a)| a.is_some()).count();
    let mut network: Vec<f64> = frames
        .values()
        .filter_map(|&(send, arrival)| arrival.map(|a| a - send))
        .collect();
    network.sort_by(f64::total_cmp);
    let mut sorted = delays.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = if delays.is_empty() {
        0.0
    } else {
        delays.iter().sum::<f64>() / delays.len() as f64
    };
    let frames_total = frames.len();
    Ok(ReplayReport {
        frames: frames_total,
        arrived,
        played,
        mean_delay_ms: mean,
        p95_delay_ms: percentile(&sorted, 0.95),
        late_loss_pct: 100.0 * (arrived.saturating_sub(played)) as f64 / arrived.max(1) as f64,
        concealed_pct: 100.0 * gaps_before_last_frame as f64 / frames_total.max(1) as f64,
        oracle_delay_ms: percentile(&network, 0.99),
        statistics: buffer.statistics(),
    })
}

/// Nearest-rank percentile of sorted values; 0 for none.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The network conditions the generator can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scenario {
    /// 30 ms base delay, uniform jitter of 0 to 60 ms per packet (so
    /// packets reorder), 2 % independent loss.
    UniformJitter,
    /// A Wi-Fi link: 12 ms base delay, a few ms of jitter, 5 % of packets
    /// retransmitted at the link layer (2 to 25 ms extra), and stalls
    /// (scans, power save, interference) about every 8 s lasting 80 to
    /// 300 ms, after which the queued packets arrive in a burst; 0.5 %
    /// loss, 0.3 % duplicates.
    WifiSpikes,
    /// A bottleneck shared with bulk traffic: 40 ms base delay, 0 to 20 ms
    /// jitter, and congestion episodes about every 15 s in which the queue
    /// builds over 2 to 6 s up to 80 to 250 ms, wanders for 3 to 10 s and
    /// drains within 0.5 to 2 s; 0.3 % loss, 2 % while the queue is full.
    CongestionRamps,
    /// The sender's clock runs 0.5 % fast; 30 ms base delay, 0 to 40 ms
    /// jitter, 1 % loss.
    DriftFast,
    /// The sender's clock runs 0.5 % slow; otherwise as [`Self::DriftFast`].
    DriftSlow,
    /// Bursty loss from a Gilbert-Elliott channel (good to bad 1 %, bad to
    /// good 35 %, loss 0.2 % in good and 80 % in bad, about 2.4 % overall);
    /// 35 ms base delay, 0 to 40 ms jitter plus up to 30 ms more in the bad
    /// state.
    BurstyLoss,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 6] = [
        Scenario::UniformJitter,
        Scenario::WifiSpikes,
        Scenario::CongestionRamps,
        Scenario::DriftFast,
        Scenario::DriftSlow,
        Scenario::BurstyLoss,
    ];

    /// A short file-friendly name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::UniformJitter => "uniform-jitter",
            Scenario::WifiSpikes => "wifi-spikes",
            Scenario::CongestionRamps => "congestion-ramps",
            Scenario::DriftFast => "drift-fast",
            Scenario::DriftSlow => "drift-slow",
            Scenario::BurstyLoss => "bursty-loss",
        }
    }

    /// The scenario with this name.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Generates `frames` packets of this scenario. The same seed always
    /// gives the same trace, on every platform and version: the generator
    /// uses its own fixed pseudo-random sequence.
    pub fn generate(self, seed: u64, frames: usize) -> Vec<TraceRecord> {
        let mut rng = TraceRng::new(seed ^ (self as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let seq0 = (rng.next_u64() & 0xFFFF) as u16;
        let ts0 = (rng.next_u64() & 0xFFFF_FFFF) as u32;
        let start = 1000.0 + rng.range(0.0, FRAME_MS);
        let interval = match self {
            Scenario::DriftFast => FRAME_MS / 1.005,
            Scenario::DriftSlow => FRAME_MS / 0.995,
            _ => FRAME_MS,
        };
        let mut network = Network::new(self, &mut rng, start);
        let mut records = Vec::with_capacity(frames + frames / 100);
        for i in 0..frames {
            let send_ms = start + i as f64 * interval;
            let sequence_number = seq0.wrapping_add((i & 0xFFFF) as u16);
            let timestamp = ts0.wrapping_add((i as u32).wrapping_mul(FRAME_TICKS));
            let (arrival, duplicate) = network.deliver(&mut rng, send_ms);
            let record = TraceRecord {
                sequence_number,
                timestamp,
                send_ms: round_us(send_ms),
                arrival_ms: arrival.map(round_us),
            };
            records.push(record);
            if let (Some(a), Some(extra)) = (arrival, duplicate) {
                records.push(TraceRecord {
                    arrival_ms: Some(round_us(a + extra)),
                    ..record
                });
            }
        }
        records
    }
}

fn round_us(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// SplitMix64: small, fast, and fixed forever, so committed traces can be
/// regenerated bit for bit.
#[derive(Clone, Debug)]
struct TraceRng(u64);

impl TraceRng {
    fn new(seed: u64) -> Self {
        TraceRng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// Per-scenario network state.
#[derive(Debug)]
struct Network {
    scenario: Scenario,
    /// Wi-Fi: the next stall (start, end) in ms.
    stall: (f64, f64),
    /// Congestion: the current episode's shape.
    episode: Episode,
    /// Gilbert-Elliott: whether the channel is in the bad state.
    bad: bool,
    /// Arrival of the previous packet through a FIFO queue.
    last_queued: f64,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    start: f64,
    ramp_end: f64,
    hold_end: f64,
    drain_end: f64,
    peak: f64,
    /// Slow wander of the queue while full.
    wander: f64,
}

impl Episode {
    fn after(rng: &mut TraceRng, t: f64) -> Episode {
        let start = t + rng.exponential(15_000.0);
        let ramp_end = start + rng.range(2_000.0, 6_000.0);
        let hold_end = ramp_end + rng.range(3_000.0, 10_000.0);
        let drain_end = hold_end + rng.range(500.0, 2_000.0);
        Episode {
            start,
            ramp_end,
            hold_end,
            drain_end,
            peak: rng.range(80.0, 250.0),
            wander: 0.0,
        }
    }

    /// Queueing delay at time `t`.
    fn queue(&self, t: f64) -> f64 {
        if t < self.start || t >= self.drain_end {
            0.0
        } else if t < self.ramp_end {
            self.peak * (t - self.start) / (self.ramp_end - self.start)
        } else if t < self.hold_end {
            (self.peak + self.wander).max(0.0)
        } else {
            self.peak * (self.drain_end - t) / (self.drain_end - self.hold_end)
        }
    }
}

impl Network {
    fn new(scenario: Scenario, rng: &mut TraceRng, start: f64) -> Self {
        let stall_start = start + rng.exponential(8_000.0);
        Network {
            scenario,
            stall: (stall_start, stall_start + rng.range(80.0, 300.0)),
            episode: Episode::after(rng, start),
            bad: false,
            last_queued: f64::MIN,
        }
    }

    /// Arrival time of a packet sent at `send` (None if lost), and the
    /// extra delay of a duplicate copy if the network duplicated it.
    fn deliver(&mut self, rng: &mut TraceRng, send: f64) -> (Option<f64>, Option<f64>) {
        match self.scenario {
            Scenario::UniformJitter => {
                let arrival = send + 30.0 + rng.range(0.0, 60.0);
                (
                    if rng.chance(0.02) {
                        None
                    } else {
                        Some(arrival)
                    },
                    None,
                )
            }
            Scenario::DriftFast | Scenario::DriftSlow => {
                let arrival = send + 30.0 + rng.range(0.0, 40.0);
                (
                    if rng.chance(0.01) {
                        None
                    } else {
                        Some(arrival)
                    },
                    None,
                )
            }
            Scenario::BurstyLoss => {
                self.bad = if self.bad {
                    !rng.chance(0.35)
                } else {
                    rng.chance(0.01)
                };
                let extra = if self.bad { rng.range(0.0, 30.0) } else { 0.0 };
                let arrival = send + 35.0 + rng.range(0.0, 40.0) + extra;
                let loss = if self.bad { 0.8 } else { 0.002 };
                (
                    if rng.chance(loss) {
                        None
                    } else {
                        Some(arrival)
                    },
                    None,
                )
            }
            Scenario::WifiSpikes => {
                while send >= self.stall.1 {
                    let next = self.stall.1 + rng.exponential(8_000.0);
                    self.stall = (next, next + rng.range(80.0, 300.0));
                }
                let mut air = send + rng.range(0.0, 6.0);
                if rng.chance(0.05) {
                    air += rng.range(2.0, 25.0);
                }
                if send >= self.stall.0 {
                    // Queued during the stall, released when it ends.
                    air = air.max(self.stall.1);
                }
                // The link is a FIFO: a packet cannot overtake the previous
                // one, and each takes about half a millisecond to send.
                let air = air.max(self.last_queued + 0.5);
                self.last_queued = air;
                let arrival = air + 12.0;
                let lost = rng.chance(0.005);
                let duplicate = rng.chance(0.003).then(|| rng.range(0.5, 5.0));
                (if lost { None } else { Some(arrival) }, duplicate)
            }
            Scenario::CongestionRamps => {
                while send >= self.episode.drain_end {
                    self.episode = Episode::after(rng, self.episode.drain_end);
                }
                let e = &mut self.episode;
                if send >= e.ramp_end && send < e.hold_end {
                    e.wander = (e.wander + rng.range(-2.0, 2.0)).clamp(-40.0, 40.0);
                }
                let queue = e.queue(send);
                let full = send >= e.ramp_end && send < e.hold_end;
                let arrival = send + 40.0 + queue + rng.range(0.0, 20.0);
                let loss = if full { 0.02 } else { 0.003 };
                (
                    if rng.chance(loss) {
                        None
                    } else {
                        Some(arrival)
                    },
                    None,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::epoch;

    #[test]
    fn csv_round_trip() {
        let trace = Scenario::WifiSpikes.generate(1, 500);
        let text = write_csv(&trace);
        assert!(text.starts_with("seq,rtp_ts,send_ms,arrival_ms\n"));
        assert_eq!(parse_csv(&text).unwrap(), trace);
    }

    #[test]
    fn csv_errors_name_the_line() {
        assert!(matches!(parse_csv(""), Err(TraceError::BadHeader { .. })));
        assert!(matches!(
            parse_csv("a,b\n"),
            Err(TraceError::BadHeader { .. })
        ));
        assert_eq!(parse_csv(TRACE_HEADER), Err(TraceError::Empty));
        let text = format!("{TRACE_HEADER}\n1,160,20,40\n2,320,40\n");
        assert_eq!(
            parse_csv(&text),
            Err(TraceError::FieldCount { line: 3, found: 3 })
        );
        let text = format!("{TRACE_HEADER}\n1,160,20,40\n\n70000,320,40,60\n");
        assert!(matches!(
            parse_csv(&text),
            Err(TraceError::BadField {
                line: 4,
                field: "seq",
                ..
            })
        ));
        let text = format!("{TRACE_HEADER}\n1,160,NaN,40\n");
        assert!(matches!(
            parse_csv(&text),
            Err(TraceError::BadField {
                line: 2,
                field: "send_ms",
                ..
            })
        ));
        let text = format!("{TRACE_HEADER}\n1,160,20,\n");
        assert_eq!(parse_csv(&text).unwrap()[0].arrival_ms, None);
    }

    #[test]
    fn generation_is_deterministic() {
        for s in Scenario::ALL {
            assert_eq!(s.generate(9, 300), s.generate(9, 300), "{}", s.name());
            assert_ne!(s.generate(9, 300), s.generate(10, 300), "{}", s.name());
            assert_eq!(Scenario::from_name(s.name()), Some(s));
        }
    }

    #[test]
    fn scenarios_have_their_advertised_character() {
        let loss = |t: &[TraceRecord]| {
            t.iter().filter(|r| r.arrival_ms.is_none()).count() as f64 / t.len() as f64
        };
        let uniform = Scenario::UniformJitter.generate(3, 20_000);
        let l = loss(&uniform);
        assert!((0.015..0.025).contains(&l), "uniform loss {l}");
        let delays: Vec<f64> = uniform
            .iter()
            .filter_map(|r| r.arrival_ms.map(|a| a - r.send_ms))
            .collect();
        assert!(delays.iter().all(|d| (29.99..90.01).contains(d)));
        let bursty = Scenario::BurstyLoss.generate(3, 20_000);
        let l = loss(&bursty);
        assert!((0.015..0.035).contains(&l), "bursty loss {l}");
        let fast = Scenario::DriftFast.generate(3, 1001);
        let span = fast[1000].send_ms - fast[0].send_ms;
        assert!((span - 20_000.0 / 1.005).abs() < 0.01);
        let wifi = Scenario::WifiSpikes.generate(3, 20_000);
        let spikes = wifi
            .iter()
            .filter(|r| r.arrival_ms.is_some_and(|a| a - r.send_ms > 100.0))
            .count();
        assert!(spikes > 100, "wifi spike packets {spikes}");
    }

    #[test]
    fn replay_of_a_clean_path_plays_everything_quickly() {
        let trace: Vec<TraceRecord> = (0..500u16)
            .map(|i| TraceRecord {
                sequence_number: i,
                timestamp: u32::from(i) * 160,
                send_ms: f64::from(i) * 20.0 + 3.0,
                arrival_ms: Some(f64::from(i) * 20.0 + 13.0),
            })
            .collect();
        let report = replay(&trace, JitterConfig::default(), epoch()).unwrap();
        // The buffer starts at its initial 60 ms and then drops a couple of
        // frames to come down to the measured (zero) jitter.
        assert!(report.played >= 495, "{}", report.to_json());
        assert!(report.late_loss_pct <= 1.0);
        assert_eq!(report.concealed_pct, 0.0);
        assert!((report.oracle_delay_ms - 10.0).abs() < 1e-9);
        // The frame waits for the next tick: 17 ms after sending.
        assert!(report.mean_delay_ms < 40.0, "{}", report.to_json());
    }

    #[test]
    fn replay_needs_an_arrival() {
        let trace = vec![TraceRecord {
            sequence_number: 1,
            timestamp: 0,
            send_ms: 0.0,
            arrival_ms: None,
        }];
        assert_eq!(
            replay(&trace, JitterConfig::default(), epoch()),
            Err(ReplayError::NothingArrived)
        );
    }
}
