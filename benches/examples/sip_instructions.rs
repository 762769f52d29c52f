//! A fixed number of iterations of the `sip_parse` and `sip_transaction`
//! workloads, for instruction counts under `valgrind --tool=callgrind`, which
//! are steadier than wall-clock time on a shared machine.
//!
//! ```text
//! cargo build --profile bench -p benches --example sip_instructions
//! valgrind --tool=callgrind target/release/examples/sip_instructions ours-all 100
//! valgrind --tool=callgrind target/release/examples/sip_instructions ours-all 300
//! ```
//!
//! The figure per iteration is the difference of the two totals divided by
//! 200, which removes start-up and the checks done once.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sip_core::endpoint::{Endpoint, EndpointConfig};

use benches::sip_corpus;

#[path = "../benches/support/sip_fields.rs"]
mod sip_fields;

#[path = "../benches/support/sip_call.rs"]
mod sip_call;

const USAGE: &str = "usage: sip_instructions ours-all|rsip-all|ours-invite|rsip-invite|parse-all|parse-invite|call|name-addr|via ITERATIONS";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(Ok(n))) = (args.first(), args.get(1).map(|n| n.parse::<u64>())) else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let corpus: Vec<Bytes> = sip_corpus::ALL
        .iter()
        .map(|(_, m)| Bytes::from_static(m))
        .collect();
    let invite = Bytes::from_static(sip_corpus::INVITE);
    match mode.as_str() {
        "ours-all" => {
            for _ in 0..n {
                for raw in &corpus {
                    black_box(sip_fields::with_sip_core(black_box(raw)));
                }
            }
        }
        "rsip-all" => {
            for _ in 0..n {
                for raw in &corpus {
                    black_box(sip_fields::with_rsip(black_box(raw)));
                }
            }
        }
        "ours-invite" => {
            for _ in 0..n {
                black_box(sip_fields::with_sip_core(black_box(&invite)));
            }
        }
        "parse-all" => {
            for _ in 0..n {
                for raw in &corpus {
                    black_box(sip_core::Message::parse(black_box(raw.clone())).is_ok());
                }
            }
        }
        "parse-invite" => {
            for _ in 0..n {
                black_box(sip_core::Message::parse(black_box(invite.clone())).is_ok());
            }
        }
        "rsip-invite" => {
            for _ in 0..n {
                black_box(sip_fields::with_rsip(black_box(&invite)));
            }
        }
        "call" => {
            let start = Instant::now();
            let mut alice = Endpoint::new(EndpointConfig::default(), StdRng::seed_from_u64(1));
            let mut bob = Endpoint::new(EndpointConfig::default(), StdRng::seed_from_u64(2));
            for i in 0..n {
                let now = start + sip_call::CALL_SPAN * u32::try_from(i).unwrap_or(u32::MAX);
                black_box(sip_call::call_to_the_end(now, &mut alice, &mut bob, i));
            }
        }
        "name-addr" => {
            let from = "\"Alice Liddell\" <sip:alice@atlanta.example.com>;tag=9fxced76sl";
            for _ in 0..n {
                black_box(
                    sip_core::NameAddr::parse(black_box(from))
                        .map(|a| a.tag())
                        .ok(),
                );
            }
        }
        "via" => {
            let via = "SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;rport";
            for _ in 0..n {
                black_box(
                    sip_core::Via::parse(black_box(via))
                        .map(|v| v.branch())
                        .ok(),
                );
            }
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
