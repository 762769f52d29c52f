//! Writes deterministic network traces for `jitter-sim`.
//!
//! ```text
//! jitter-trace-gen [--scenario NAME|all] [--seed N] [--frames N] [--out DIR]
//! ```
//!
//! Scenarios: uniform-jitter, wifi-spikes, congestion-ramps, drift-fast,
//! drift-slow, bursty-loss (see `media_engine::trace::Scenario`). Each is
//! written to `DIR/NAME.csv`. The committed traces under
//! `tests/data/traces` come from the defaults: seed 1, 9000 frames (3 min).
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use media_engine::trace::{self, Scenario};

const USAGE: &str =
    "usage: jitter-trace-gen [--scenario NAME|all] [--seed N] [--frames N] [--out DIR]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("jitter-trace-gen: {message}");
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(mut args: impl Iterator<Item = String>) -> Result<(), String> {
    let mut scenarios = Scenario::ALL.to_vec();
    let mut seed = 1u64;
    let mut frames = 9000usize;
    let mut out = PathBuf::from(".");
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--scenario" => {
                let name = value()?;
                if name != "all" {
                    let s =
                        Scenario::from_name(&name).ok_or(format!("unknown scenario `{name}`"))?;
                    scenarios = vec![s];
                }
            }
            "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--frames" => frames = value()?.parse().map_err(|e| format!("--frames: {e}"))?,
            "--out" => out = PathBuf::from(value()?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    for scenario in scenarios {
        let path = out.join(format!("{}.csv", scenario.name()));
        let text = trace::write_csv(&scenario.generate(seed, frames));
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}
