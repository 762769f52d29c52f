//! Replays a network trace through the jitter buffer on a virtual clock.
//!
//! ```text
//! jitter-sim --trace FILE.csv [--buffer adaptive|fixed:MS] [--json]
//! ```
//!
//! The trace format and the figures reported are described in
//! `media_engine::trace`. Exit status 2 means a usage or input error.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use media_engine::jitter::{DelayMode, JitterConfig};
use media_engine::trace;

const USAGE: &str = "usage: jitter-sim --trace FILE.csv [--buffer adaptive|fixed:MS] [--json]";

struct Args {
    trace: String,
    mode: DelayMode,
    json: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut trace = None;
    let mut mode = DelayMode::Adaptive;
    let mut json = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--trace" => trace = Some(args.next().ok_or("--trace needs a file")?),
            "--buffer" => {
                let value = args.next().ok_or("--buffer needs a value")?;
                mode = parse_mode(&value)?;
            }
            "--json" => json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let trace = trace.ok_or("--trace is required")?;
    Ok(Args { trace, mode, json })
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
    let text = match std::fs::read_to_string(&args.trace) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("jitter-sim: cannot read {}: {e}", args.trace);
            return ExitCode::from(2);
        }
    };
    let records = match trace::parse_csv(&text) {
        Ok(records) => records,
        Err(e) => {
            eprintln!("jitter-sim: {}: {e}", args.trace);
            return ExitCode::from(2);
        }
    };
    // The only clock read: an arbitrary origin for the virtual clock.
    #[allow(clippy::disallowed_methods)]
    let epoch = Instant::now();
    let config = JitterConfig::default().with_mode(args.mode);
    let report = match trace::replay(&records, config, epoch) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("jitter-sim: {}: {e}", args.trace);
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!(
            "{}: {} frames, {} arrived, {} played\n  mean delay {:.1} ms, p95 {:.1} ms, oracle (p99 network) {:.1} ms\n  late loss {:.2} %, concealed {:.2} %",
            args.trace,
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
