//! `privacy export` and `privacy erase`: the user's rights of access,
//! portability and erasure (GDPR articles 15 to 20) over everything the
//! dialer keeps in its profile.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result, bail};
use provisioning::Store;
use serde_json::{Value, json};
use softphone::{CallDirection, History};

use crate::options::UsageError;

const HISTORY_FILE: &str = "history.sqlite";
/// Directories of the profile that hold caches or logs, removed by erase.
const ERASED_DIRS: &[&str] = &["logs", "provisioning-cache", "photos"];

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Files under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn history_json(profile: &Path) -> Result<Vec<Value>> {
    let path = profile.join(HISTORY_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let h = History::open(&path)?;
    Ok(h.recent(usize::MAX)?
        .into_iter()
        .map(|c| {
            json!({
                "direction": match c.direction {
                    CallDirection::Outgoing => "outgoing",
                    CallDirection::Incoming => "incoming",
                },
                "account": c.account,
                "local_identity": c.local_identity,
                "remote_identity": c.remote_identity,
                "remote_name": c.remote_name,
                "started": unix_seconds(c.started),
                "answered": c.answered.map(unix_seconds),
                "ended": unix_seconds(c.ended),
                "duration_seconds": c.duration().as_secs(),
                "end_reason": c.end_reason,
                "codec": c.codec,
                "srtp": c.srtp,
                "mos": c.mos,
            })
        })
        .collect())
}

/// Everything the profile holds about its user, as one JSON document.
pub(crate) fn export(profile: &Path, file: &Path) -> Result<bool> {
    let config = crate::profile::effective(profile)?.unwrap_or_default();
    let document = json!({
        "format": "softphone-rs personal data export",
        "version": 1,
        "profile": profile.display().to_string(),
        "configuration": crate::profile::config_json(&config),
        "accounts": config.accounts.iter().map(|a| json!({
            "id": a.id,
            "user": a.user,
            "display_name": a.display_name,
            "registrar": config_export::redact_uri(&a.registrar),
        })).collect::<Vec<_>>(),
        "call_history": history_json(profile)?,
        "contacts": crate::contacts::export_json(profile)?,
        "push_registrations": config.push.as_ref().map(|p| vec![json!({
            "provider": p.provider,
            "param": p.param,
            "token": "(registered; kept in the configuration)",
        })]).unwrap_or_default(),
        "log_files": files_under(&profile.join("logs"))
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
    });
    crate::profile::write_private(file, &serde_json::to_vec_pretty(&document)?)?;
    println!(
        "exported {} call(s), {} contact(s) and {} log file(s) to {}",
        document["call_history"].as_array().map_or(0, Vec::len),
        document["contacts"].as_array().map_or(0, Vec::len),
        document["log_files"].as_array().map_or(0, Vec::len),
        file.display()
    );
    Ok(true)
}

fn confirm() -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(UsageError(
            "privacy erase deletes call history, contacts, caches, logs and push tokens: \
             add --yes to confirm"
                .into()
        ));
    }
    print!("delete call history, contacts, caches, logs and push tokens for good? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Deletes the personal data of the profile so that nothing is recoverable
/// from its files: history and contacts through SQLite's secure_delete and
/// VACUUM, logs and caches removed, push tokens dropped from the stored
/// configuration. Accounts and settings stay.
pub(crate) fn erase(profile: &Path, yes: bool, log_file: &Path) -> Result<bool> {
    if !yes && !confirm()? {
        println!("nothing erased");
        return Ok(false);
    }
    let history_path = profile.join(HISTORY_FILE);
    let calls = if history_path.exists() {
        History::open(&history_path)?.erase()?
    } else {
        0
    };
    let contacts = crate::contacts::erase(profile)?;
    let mut files = softphone::diagnostics::erase_logs(log_file)?.len();
    for dir in ERASED_DIRS {
        let d = profile.join(dir);
        files += files_under(&d).len();
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    let store = Store::open(profile)?;
    let mut tokens = 0;
    if let Some(mut config) = store.load()?
        && config.push.is_some()
    {
        config.push = None;
        store.save(&config)?;
        tokens = 1;
    }
    if crate::profile::forget_push_overrides(profile)? > 0 {
        tokens = 1;
    }
    println!(
        "erased {calls} call(s), {contacts} contact(s), {files} log and cache file(s), {tokens} push token(s)"
    );
    Ok(true)
}
