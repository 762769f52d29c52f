//! Running the dialer binary from a test, bounded in time.
#![allow(dead_code, reason = "each test binary uses some of these")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed step should fail loudly"
)]

use std::path::Path;
use std::process::Command;

/// The longest one dialer command may run (coreutils `timeout` stops it).
const LIMIT_SECONDS: &str = "120";

/// How one dialer command ended.
pub(crate) struct Run {
    /// Exit status 0.
    pub(crate) ok: bool,
    /// The exit code, when it exited.
    pub(crate) code: Option<i32>,
    /// Its standard output, then its standard error.
    pub(crate) out: String,
}

/// `dialer --profile PROFILE ARGS...`.
pub(crate) fn dialer(profile: &Path, args: &[&str]) -> Run {
    dialer_with(profile, args, &[])
}

/// As [`dialer`], with `env` set. Settings the dialer reads from its
/// environment (log filter, crash DSN, passphrase, passwords) are cleared
/// first, so a developer's shell does not change what a test sees.
pub(crate) fn dialer_with(profile: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.arg(LIMIT_SECONDS)
        .arg(env!("CARGO_BIN_EXE_dialer"))
        .arg("--profile")
        .arg(profile)
        .args(args);
    for name in [
        "RUST_LOG",
        "DIALER_CRASH_DSN",
        "DIALER_LDAP_PASSWORD",
        "DIALER_OAUTH_CLIENT_SECRET",
        "DIALER_PASSPHRASE",
        "DIALER_PASSWORD",
        "DIALER_PROVISIONING_PASSWORD",
        "DIALER_TURN_PASSWORD",
    ] {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    Run {
        ok: o.status.success(),
        code: o.status.code(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}
