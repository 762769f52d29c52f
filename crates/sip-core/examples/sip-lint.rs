//! `sip-lint FILE...`: checks that each file holds one valid SIP message
//! (as one datagram), and says where the first problem is.
//!
//! Prints `FILE: ok` or `FILE: error: WHAT at line L, column C`. Exits 0 when
//! every file is valid, 1 when any is invalid, 2 on a usage or I/O error.
#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

use std::process::ExitCode;

use sip_core::Message;

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() || files.iter().any(|f| f == "-h" || f == "--help") {
        eprintln!(
            "usage: sip-lint FILE...\n\nChecks that each FILE holds one valid SIP message (one datagram)."
        );
        return ExitCode::from(2);
    }
    let mut invalid = false;
    let mut io_error = false;
    for file in &files {
        match std::fs::read(file) {
            Err(e) => {
                eprintln!("{file}: cannot read: {e}");
                io_error = true;
            }
            Ok(bytes) => match Message::parse(bytes).and_then(|m| m.validate()) {
                Ok(()) => println!("{file}: ok"),
                Err(e) => {
                    println!("{file}: error: {e}");
                    invalid = true;
                }
            },
        }
    }
    if io_error {
        ExitCode::from(2)
    } else if invalid {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
