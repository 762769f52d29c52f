//! Replays a network trace through the jitter buffer on a virtual clock.
//!
//! ```text
//! jitter-sim --trace FILE.csv [--buffer adaptive|fixed:MS] [--stall MS:PACKETS:SHARE] [--grid RATE:GAP:BAND_MS] [--json]
//! jitter-sim --sweep FIRST-LAST [--buffer adaptive|fixed:MS] [--stall MS:PACKETS:SHARE] [--grid RATE:GAP:BAND_MS]
//! ```
//!
//! The trace format and the figures reported are described in
//! `media_engine::trace`. `--sweep` generates every scenario for the seeds
//! FIRST to LAST (9000 frames, as `jitter-trace-gen` writes them; seed 1
//! gives the committed traces), prints one line per trace and the traces
//! that miss the goal (late loss <= 1.5 %, mean delay <= 1.2 x oracle),
//! and exits with status 1 if any does. Exit status 2 means a usage or
//! input error.
//!
//! `--stall MS:PACKETS:SHARE` overrides the stall detector's settings
//! (`0:0:0` turns it off) and `--grid RATE:GAP:BAND_MS` the grid-aware
//! late aim's (`grid_late_rate`, `grid_gap`, `settled_band`; a band of 0
//! turns it off).
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use media_engine::jitter::{DelayMode, JitterConfig};
use media_engine::trace::{self, Scenario};

const USAGE: &str = "usage: jitter-sim --trace FILE.csv [--buffer adaptive|fixed:MS] [--stall MS:PACKETS:SHARE] [--grid RATE:GAP:BAND_MS] [--json]\n       jitter-sim --sweep FIRST-LAST [--buffer adaptive|fixed:MS] [--stall MS:PACKETS:SHARE] [--grid RATE:GAP:BAND_MS]";

struct Args {
    trace: Source,
    mode: DelayMode,
    /// Stall detector override: threshold ms and run length.
    stall: Option<(u64, u32, f64)>,
    /// Grid-aware late aim override: rate, gap (of a frame), band ms.
    grid: Option<(f64, f64, u64)>,
    json: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut trace = None;
    let mut sweep = None;
    let mut mode = DelayMode::Adaptive;
    let mut json = false;
    let mut stall = None;
    let mut grid = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--trace" => trace = Some(args.next().ok_or("--trace needs a file")?),
            "--buffer" => {
                let value = args.next().ok_or("--buffer needs a value")?;
                mode = parse_mode(&value)?;
            }
            "--sweep" => {
                let value = args.next().ok_or("--sweep needs FIRST-LAST")?;
                sweep = Some(parse_seeds(&value)?);
            }
            "--stall" => {
                let value = args.next().ok_or("--stall needs MS:PACKETS:SHARE")?;
                stall = Some(parse_triple(&value, "--stall", "MS:PACKETS:SHARE")?);
            }
            "--grid" => {
                let value = args.next().ok_or("--grid needs RATE:GAP:BAND_MS")?;
                grid = Some(parse_triple(&value, "--grid", "RATE:GAP:BAND_MS")?);
            }
            "--json" => json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let trace = match (trace, sweep) {
        (Some(file), None) => Source::File(file),
        (None, Some((first, last))) => Source::Sweep(first, last),
        _ => return Err("give one of --trace and --sweep".into()),
    };
    Ok(Args {
        trace,
        mode,
        stall,
        grid,
        json,
    })
}

enum Source {
    File(String),
    Sweep(u64, u64),
}

fn parse_seeds(value: &str) -> Result<(u64, u64), String> {
    let bad = || format!("--sweep must be FIRST-LAST, not `{value}`");
    let (first, last) = value.split_once('-').ok_or_else(bad)?;
    let first: u64 = first.parse().map_err(|_| bad())?;
    let last: u64 = last.parse().map_err(|_| bad())?;
    if first > last {
        return Err(bad());
    }
    Ok((first, last))
}

fn meets_goal(report: &trace::ReplayReport) -> bool {
    report.late_loss_pct <= 1.5 && report.mean_delay_ms <= 1.2 * report.oracle_delay_ms
}

fn sweep(first: u64, last: u64, args: &Args, epoch: Instant) -> ExitCode {
    let mut misses = Vec::new();
    let mut total = 0;
    println!("seed scenario           late_loss_pct mean_delay_ms oracle_delay_ms ratio");
    for seed in first..=last {
        for scenario in Scenario::ALL {
            let records = scenario.generate(seed, 9000);
            let config = configure(args);
            let report = match trace::replay(&records, config, epoch) {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("jitter-sim: seed {seed} {}: {e}", scenario.name());
                    return ExitCode::from(2);
                }
            };
            let line = format!(
                "{seed:>4} {:<18} {:>13.2} {:>13.1} {:>15.1} {:>5.2}",
                scenario.name(),
                report.late_loss_pct,
                report.mean_delay_ms,
                report.oracle_delay_ms,
                report.mean_delay_ms / report.oracle_delay_ms,
            );
            println!("{line}");
            total += 1;
            if !meets_goal(&report) {
                misses.push(line);
            }
        }
    }
    println!("{} of {total} traces miss the goal", misses.len());
    for line in &misses {
        println!("miss {line}");
    }
    if misses.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn configure(args: &Args) -> JitterConfig {
    let mut config = JitterConfig::default().with_mode(args.mode);
    if let Some((ms, packets, share)) = args.stall {
        config.stall_threshold = Duration::from_millis(ms);
        config.stall_packets = packets;
        config.stall_share = share;
    }
    if let Some((rate, gap, band)) = args.grid {
        config.grid_late_rate = rate;
        config.grid_gap = gap;
        config.settled_band = Duration::from_millis(band);
    }
    config
}

/// Parses `A:B:C` for the option `option`, whose value's form is `form`.
fn parse_triple<A, B, C>(value: &str, option: &str, form: &str) -> Result<(A, B, C), String>
where
    A: std::str::FromStr,
    B: std::str::FromStr,
    C: std::str::FromStr,
{
    let bad = || format!("{option} must be {form}, not `{value}`");
    let mut parts = value.split(':');
    let mut part = || parts.next().ok_or_else(bad);
    let (a, b, c) = (part()?, part()?, part()?);
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok((
        a.parse().map_err(|_| bad())?,
        b.parse().map_err(|_| bad())?,
        c.parse().map_err(|_| bad())?,
    ))
}

fn parse_mode(value: &str) -> Result<DelayMode, String> {
    if value == "adaptive" {
        return Ok(DelayMode::Adaptive);
    }
    let ms = value
        .strip_prefix("fixed:")
        .and_then(|ms| ms.parse::<u64>().ok())
        .ok_or_else(|| format!("--buffer must be `adaptive` or `fixed:MS`, not `{value}`"))?;
    Ok(DelayMode::Fixed(Duration::from_millis(ms)))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("jitter-sim: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The only clock read: an arbitrary origin for the virtual clock.
    #[allow(clippy::disallowed_methods)]
    let epoch = Instant::now();
    let path = match &args.trace {
        Source::File(path) => path.clone(),
        Source::Sweep(first, last) => return sweep(*first, *last, &args, epoch),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("jitter-sim: cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let records = match trace::parse_csv(&text) {
        Ok(records) => records,
        Err(e) => {
            eprintln!("jitter-sim: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let config = configure(&args);
    let report = match trace::replay(&records, config, epoch) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("jitter-sim: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!(
            "{}: {} frames, {} arrived, {} played\n  mean delay {:.1} ms, p95 {:.1} ms, oracle (p99 network) {:.1} ms\n  late loss {:.2} %, concealed {:.2} %",
            path,
            report.frames,
            report.arrived,
            report.played,
            report.mean_delay_ms,
            report.p95_delay_ms,
            report.oracle_delay_ms,
            report.late_loss_pct,
            report.concealed_pct,
        );
    }
    ExitCode::SUCCESS
}
