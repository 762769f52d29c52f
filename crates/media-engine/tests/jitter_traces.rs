//! The jitter buffer against the committed network traces.
//!
//! Goal on every trace (20 ms playout tick, default adaptive settings):
//! at most 1.5 % of the frames that arrive are lost to lateness, and the
//! mean playout delay stays within 1.2 times the 99th percentile of network
//! delay. The traces come from `jitter-trace-gen` with seed 1 and 9000
//! frames; the first test checks they still regenerate bit for bit.

use std::path::PathBuf;
use std::time::Instant;

use media_engine::jitter::{DelayMode, JitterConfig};
use media_engine::trace::{self, ReplayReport, Scenario};

fn trace_path(scenario: Scenario) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/traces")
        .join(format!("{}.csv", scenario.name()))
}

/// The one real instant the replays start from.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn replay(scenario: Scenario, config: JitterConfig) -> ReplayReport {
    let text = std::fs::read_to_string(trace_path(scenario)).expect("committed trace is readable");
    let records = trace::parse_csv(&text).expect("committed trace parses");
    trace::replay(&records, config, epoch()).expect("trace replays")
}

fn assert_goal(scenario: Scenario) {
    let report = replay(scenario, JitterConfig::default());
    let json = report.to_json();
    assert!(
        report.late_loss_pct <= 1.5,
        "{}: late loss {:.2} % > 1.5 %: {json}",
        scenario.name(),
        report.late_loss_pct
    );
    assert!(
        report.mean_delay_ms <= 1.2 * report.oracle_delay_ms,
        "{}: mean delay {:.1} ms > 1.2 x oracle {:.1} ms: {json}",
        scenario.name(),
        report.mean_delay_ms,
        report.oracle_delay_ms
    );
    assert!(report.played > report.frames * 9 / 10, "{json}");
}

#[test]
fn committed_traces_regenerate_bit_for_bit() {
    for scenario in Scenario::ALL {
        let text = std::fs::read_to_string(trace_path(scenario)).unwrap();
        assert_eq!(
            text,
            trace::write_csv(&scenario.generate(1, 9000)),
            "{} changed: regenerate with jitter-trace-gen",
            scenario.name()
        );
    }
}

#[test]
fn goal_uniform_jitter_with_2_percent_loss() {
    assert_goal(Scenario::UniformJitter);
}

#[test]
fn goal_wifi_spikes() {
    assert_goal(Scenario::WifiSpikes);
}

#[test]
fn goal_congestion_ramps() {
    assert_goal(Scenario::CongestionRamps);
}

#[test]
fn goal_sender_clock_half_percent_fast() {
    assert_goal(Scenario::DriftFast);
}

#[test]
fn goal_sender_clock_half_percent_slow() {
    assert_goal(Scenario::DriftSlow);
}

#[test]
fn goal_gilbert_elliott_bursty_loss() {
    assert_goal(Scenario::BurstyLoss);
}

/// Generated traces, as seed and scenario.
type Traces = Vec<(u64, Scenario)>;

/// The generated traces of `seeds` (all scenarios) that miss the goal:
/// those over 1.5 % late, and those over 1.2 x the oracle's delay.
fn goal_misses(seeds: std::ops::RangeInclusive<u64>) -> (Traces, Traces) {
    let mut late = Vec::new();
    let mut slow = Vec::new();
    for seed in seeds {
        for scenario in Scenario::ALL {
            let records = scenario.generate(seed, 9000);
            let report =
                trace::replay(&records, JitterConfig::default(), epoch()).expect("trace replays");
            let ratio = report.mean_delay_ms / report.oracle_delay_ms;
            if report.late_loss_pct > 1.5 || ratio > 1.2 {
                eprintln!(
                    "miss: seed {seed} {} ratio {ratio:.4}: {}",
                    scenario.name(),
                    report.to_json()
                );
            }
            if report.late_loss_pct > 1.5 {
                late.push((seed, scenario));
            }
            if ratio > 1.2 {
                slow.push((seed, scenario));
            }
        }
    }
    (late, slow)
}

/// The same goal on the traces of seeds 2 to 19 (as
/// `jitter-sim --sweep 2-19` prints them): every one meets it.
#[test]
fn generated_traces_of_seeds_2_to_19() {
    let (late, slow) = goal_misses(2..=19);
    assert!(late.is_empty(), "late loss over 1.5 %: {late:?}");
    assert!(slow.is_empty(), "traces over 1.2 x the oracle: {slow:?}");
}

#[test]
fn adaptive_beats_a_fixed_buffer_of_the_same_mean_delay_on_congestion() {
    // A fixed buffer sized for quiet periods loses far more on a path whose
    // queue builds up; the adaptive one follows it.
    let adaptive = replay(Scenario::CongestionRamps, JitterConfig::default());
    let fixed = replay(
        Scenario::CongestionRamps,
        JitterConfig::default().with_mode(DelayMode::Fixed(std::time::Duration::from_millis(60))),
    );
    assert!(
        fixed.late_loss_pct > 5.0 * adaptive.late_loss_pct,
        "fixed {} adaptive {}",
        fixed.to_json(),
        adaptive.to_json()
    );
}

/// Seeds 20 to 100: the hold-out of the stall detector's settings, which
/// were chosen on seeds 2 to 19; the grid-aware late aim's settings were
/// chosen on seeds 2 to 100, so for those this is a regression test (the
/// far hold-outs, seeds 101 to 500, are in docs/benchmarks.md). Every
/// trace meets the goal.
#[test]
fn traces_of_seeds_20_to_100() {
    let (late, slow) = goal_misses(20..=100);
    assert!(late.is_empty(), "late loss over 1.5 %: {late:?}");
    assert!(slow.is_empty(), "traces over 1.2 x the oracle: {slow:?}");
}

/// Seed 24's bursty-loss trace puts the two cut-off positions around its
/// 99th percentile 2 ms below it and 18 ms above. At a 1 % late aim the
/// buffer spends most of the call at the upper one and comes to 1.20 x
/// the oracle; aiming at 1.25 % there brings the delay down, still well
/// within the late budget.
#[test]
fn an_expensive_frame_grid_trades_a_little_late_loss_for_delay() {
    let records = Scenario::BurstyLoss.generate(24, 9000);
    let mut plain = JitterConfig::default();
    plain.settled_band = std::time::Duration::ZERO;
    let plain = trace::replay(&records, plain, epoch()).expect("trace replays");
    let grid = trace::replay(&records, JitterConfig::default(), epoch()).expect("trace replays");
    let ratio = |r: &ReplayReport| r.mean_delay_ms / r.oracle_delay_ms;
    assert!(ratio(&plain) > 1.2, "{}", plain.to_json());
    assert!(ratio(&grid) <= 1.2, "{}", grid.to_json());
    assert!(
        grid.mean_delay_ms < plain.mean_delay_ms - 1.0,
        "{} against {}",
        grid.to_json(),
        plain.to_json()
    );
    assert!(grid.late_loss_pct <= 1.3, "{}", grid.to_json());
}
