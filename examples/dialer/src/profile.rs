//! The profile's configuration: the provisioned (or imported) document in
//! the provisioning store, with the user's local overrides on top.
//!
//! `provision`, `config show`, `config set`, `export` and `import`.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use config_export::{Config, Export, Import, Secret, redact_uri};
use provisioning::{Credentials, LocalOverrides, Override, Settings, Store, merge};
use serde_json::{Value, json};

use crate::options::UsageError;

const OVERRIDES_FILE: &str = "overrides.json";
const SOURCE_FILE: &str = "provisioning-source.json";
const ROOT: &str = "softphone-config/";

/// Short names for settings users change often.
fn expand_key(key: &str) -> String {
    match key {
        "crash_reports" => "softphone-config/privacy/crash-reports".into(),
        "log_personal_data" => "softphone-config/privacy/log-personal-data".into(),
        "srtp" => "softphone-config/media/srtp".into(),
        "dtmf" => "softphone-config/media/dtmf".into(),
        k if k.starts_with(ROOT) => k.into(),
        k => format!("{ROOT}{}", k.replace('.', "/")),
    }
}

fn expand_value(value: &str) -> String {
    match value {
        "on" | "yes" => "true".into(),
        "off" | "no" => "false".into(),
        v => v.into(),
    }
}

fn load_overrides(profile: &Path) -> Result<LocalOverrides> {
    let path = profile.join(OVERRIDES_FILE);
    let mut overrides = LocalOverrides::new();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(overrides),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let entries: Vec<Value> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON list of overrides", path.display()))?;
    for e in entries {
        let Some(p) = e.get("path").and_then(Value::as_str) else {
            bail!("{}: an override without a path", path.display());
        };
        if let Some(v) = e.get("set").and_then(Value::as_str) {
            overrides.set(p, v);
        } else if let Some(list) = e.get("list").and_then(Value::as_array) {
            overrides.set_list(p, list.iter().filter_map(Value::as_str));
        } else {
            overrides.clear(p);
        }
    }
    Ok(overrides)
}

/// Drops the local settings of the push token (`push/...`), as an erase
/// does: a provisioned `<push>` must not bring a set token back. Returns
/// how many there were.
pub(crate) fn forget_push_overrides(profile: &Path) -> Result<usize> {
    let overrides = load_overrides(profile)?;
    let mut kept = LocalOverrides::new();
    let mut dropped = 0;
    for (path, change) in overrides.iter() {
        let field = path.strip_prefix(ROOT).unwrap_or(path);
        if field == "push" || field.starts_with("push/") {
            dropped += 1;
        } else {
            kept.insert(path.to_owned(), change.clone());
        }
    }
    if dropped > 0 {
        save_overrides(profile, &kept)?;
    }
    Ok(dropped)
}

fn save_overrides(profile: &Path, overrides: &LocalOverrides) -> Result<()> {
    let list: Vec<Value> = overrides
        .iter()
        .map(|(p, o)| match o {
            Override::Set(v) => json!({"path": p, "set": v}),
            Override::List(l) => json!({"path": p, "list": l}),
            Override::Clear => json!({"path": p, "clear": true}),
        })
        .collect();
    // Local settings may hold passwords.
    write_private(
        &profile.join(OVERRIDES_FILE),
        &serde_json::to_vec_pretty(&list)?,
    )
}

/// Writes `bytes` to `path` readable by the owner only (mode 0600), all or
/// nothing: into a fresh temporary file beside it, synced, then renamed
/// over it. The temporary file goes when anything fails.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // tempfile creates it with O_EXCL and mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".dialer-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Whether a setting's path names a secret, whose value is never printed.
fn is_secret(path: &str) -> bool {
    matches!(
        path.rsplit('/').next(),
        Some("password" | "bind-password" | "refresh-token" | "prid")
    )
}

/// Paths of the switches only the user turns on, on this device: sending
/// crash reports and writing personal data into logs. A provisioning
/// document neither sets nor locks them.
const USER_ONLY: [&str; 2] = [
    "softphone-config/privacy/crash-reports",
    "softphone-config/privacy/log-personal-data",
];

/// The user's own value for a [`USER_ONLY`] switch: off unless set on.
fn user_switch(overrides: &LocalOverrides, path: &str) -> bool {
    overrides
        .iter()
        .any(|(p, o)| p == path && matches!(o, Override::Set(v) if v == "true"))
}

/// The configuration in effect: stored document plus local overrides.
/// `None` when nothing was provisioned, imported or set.
pub(crate) fn effective(profile: &Path) -> Result<Option<Config>> {
    let store = Store::open(profile)?;
    let base = store.load()?;
    let overrides = load_overrides(profile)?;
    if base.is_none() && overrides.is_empty() {
        return Ok(None);
    }
    let merged = merge(&base.unwrap_or_default(), &overrides);
    for r in merged
        .refused
        .iter()
        .filter(|r| !USER_ONLY.contains(&r.path.as_str()))
    {
        eprintln!("dialer: local setting {} ignored: {}", r.path, r.reason);
    }
    let mut config = merged.config;
    config.privacy.crash_reports = user_switch(&overrides, USER_ONLY[0]);
    config.privacy.log_personal_data = user_switch(&overrides, USER_ONLY[1]);
    Ok(Some(config))
}

pub(crate) async fn provision(
    profile: &Path,
    url: &str,
    user: Option<&str>,
    password: Option<&str>,
    ca: Option<&Path>,
) -> Result<bool> {
    // A document the phone could not start with never replaces a working one.
    let mut settings = Settings::new(url)
        .with_acceptance(|c| softphone::check_config(c).map_err(|e| e.to_string()));
    match (user, password) {
        (Some(u), Some(p)) => settings = settings.with_credentials(Credentials::new(u, p)),
        (Some(u), None) => settings = settings.with_user(u),
        (None, Some(_)) => bail!(UsageError("--password needs --user".into())),
        (None, None) => {}
    }
    if let Some(ca) = ca {
        settings = settings.with_ca_file(ca)?;
    }
    let outcome = provisioning::provision(profile, settings).await?;
    // Kept for re-checks the PBX asks for (NOTIFY check-sync); the password
    // is not stored: a re-check takes it from DIALER_PROVISIONING_PASSWORD.
    let source = json!({"url": url, "user": user, "ca": ca.map(|c| c.display().to_string())});
    write_private(
        &profile.join(SOURCE_FILE),
        &serde_json::to_vec_pretty(&source)?,
    )
    .context("remembering the provisioning URL")?;
    println!(
        "provisioned {} account(s) from {} document(s){}",
        outcome.config.accounts.len(),
        outcome.documents.len(),
        if outcome.changed { "" } else { " (unchanged)" }
    );
    for a in &outcome.config.accounts {
        println!("account {}: registrar {}", a.id, redact_uri(&a.registrar));
    }
    // An unchanged configuration names the same directories as before.
    if outcome.changed
        && let Some(config) = effective(profile)?
    {
        crate::contacts::prune_unconfigured(profile, &config)?;
    }
    Ok(true)
}

/// Provisions again from the URL of the last `provision`, as the PBX asked
/// with a NOTIFY check-sync. False when the profile was never provisioned.
pub(crate) async fn recheck(profile: &Path) -> Result<bool> {
    let Ok(text) = std::fs::read(profile.join(SOURCE_FILE)) else {
        return Ok(false);
    };
    let source: Value = serde_json::from_slice(&text).context("reading the provisioning source")?;
    let Some(url) = source.get("url").and_then(Value::as_str) else {
        return Ok(false);
    };
    let user = source.get("user").and_then(Value::as_str);
    let ca = source.get("ca").and_then(Value::as_str).map(Path::new);
    let password = std::env::var("DIALER_PROVISIONING_PASSWORD").ok();
    provision(profile, url, user, password.as_deref(), ca).await
}

fn masked(s: &Option<Secret>) -> Value {
    match s {
        Some(_) => json!("********"),
        None => Value::Null,
    }
}

pub(crate) fn config_json(c: &Config) -> Value {
    json!({
        "accounts": c.accounts.iter().map(|a| json!({
            "id": a.id,
            "user": a.user,
            "auth_user": a.auth_user,
            "password": masked(&a.password),
            "display_name": a.display_name,
            "registrar": redact_uri(&a.registrar),
            "outbound_proxies": a.outbound_proxies.iter().map(|p| redact_uri(p)).collect::<Vec<_>>(),
            "transport": a.transport.as_str(),
            "expiry": a.expiry,
        })).collect::<Vec<_>>(),
        "media": {
            "codecs": c.media.codecs,
            "srtp": c.media.srtp.as_str(),
            "dtmf": c.media.dtmf.as_str(),
            "jitter_min_ms": c.media.jitter_min_ms,
            "jitter_max_ms": c.media.jitter_max_ms,
        },
        "relay": { "proxies": c.relay.proxies.iter().map(|p| redact_uri(p)).collect::<Vec<_>>(), "turn": c.relay.turn.as_ref().map(|t| json!({
            "server": redact_uri(&t.server), "user": t.user, "password": masked(&t.password),
        })) },
        "push": c.push.as_ref().map(|p| json!({"provider": p.provider, "prid": "********", "param": p.param})),
        "privacy": {
            "crash_reports": c.privacy.crash_reports,
            "log_personal_data": c.privacy.log_personal_data,
            "history_retention_days": c.privacy.history_retention_days,
            "log_retention_days": c.privacy.log_retention_days,
        },
        "locked": c.locked.iter().collect::<Vec<_>>(),
    })
}

pub(crate) fn show(profile: &Path, as_json: bool) -> Result<bool> {
    let config = effective(profile)?.unwrap_or_default();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&config_json(&config))?);
    } else {
        print!("{}", Export::new(&config).redacted()?);
    }
    Ok(true)
}

pub(crate) fn set(profile: &Path, key: &str, value: &str) -> Result<bool> {
    let store = Store::open(profile)?;
    let base = store.load()?.unwrap_or_default();
    let path = expand_key(key);
    let mut overrides = load_overrides(profile)?;
    let mut trial = overrides.clone();
    trial.set(path.clone(), expand_value(value));
    let merged = merge(&base, &trial);
    let user_only = USER_ONLY.contains(&path.as_str());
    if let Some(r) = merged.refused.iter().find(|r| r.path == path)
        && !user_only
    {
        bail!(UsageError(format!("{key}: {}", r.reason)));
    }
    overrides.set(path.clone(), expand_value(value));
    save_overrides(profile, &overrides)?;
    if path == USER_ONLY[0] && user_switch(&overrides, &path) {
        println!("crash reports on: reports are scrubbed of personal data before they are sent");
    }
    if is_secret(&path) {
        println!("{path} = ***");
    } else {
        println!("{path} = {}", expand_value(value));
    }
    Ok(true)
}

/// The export passphrase: DIALER_PASSPHRASE, else asked without echo.
fn passphrase(confirm: bool) -> Result<Secret> {
    if let Ok(p) = std::env::var("DIALER_PASSPHRASE") {
        if p.is_empty() {
            bail!(UsageError("DIALER_PASSPHRASE is empty".into()));
        }
        return Ok(Secret::new(p));
    }
    if !std::io::stdin().is_terminal() {
        bail!(UsageError(
            "no passphrase: set DIALER_PASSPHRASE or run on a terminal".into()
        ));
    }
    let p = rpassword::prompt_password("passphrase: ")?;
    if confirm {
        let again = rpassword::prompt_password("again: ")?;
        if again != p {
            bail!(UsageError("the passphrases differ".into()));
        }
    }
    if p.is_empty() {
        bail!(UsageError("an empty passphrase".into()));
    }
    Ok(Secret::new(p))
}

pub(crate) fn export(profile: &Path, file: &Path, plaintext: bool, redacted: bool) -> Result<bool> {
    let config =
        effective(profile)?.context("nothing to export: the profile has no configuration")?;
    let text = if redacted {
        Export::new(&config).redacted()?
    } else if plaintext {
        eprintln!("dialer: warning: the export holds passwords and tokens in clear text");
        Export::new(&config).plaintext()?.document
    } else {
        Export::new(&config).encrypt(&passphrase(true)?)?
    };
    // Even encrypted, an export is the user's own: nobody else reads it.
    write_private(file, text.as_bytes())?;
    println!(
        "exported {} account(s) to {} ({})",
        config.accounts.len(),
        file.display(),
        if redacted {
            "redacted"
        } else if plaintext {
            "plaintext"
        } else {
            "encrypted"
        }
    );
    Ok(true)
}

pub(crate) fn import(profile: &Path, file: &Path) -> Result<bool> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let encrypted = Import::is_encrypted(&bytes);
    let secret;
    let mut import = Import::new();
    if encrypted {
        secret = passphrase(false)?;
        import = import.with_passphrase(&secret);
    }
    // Import validates everything before the store is touched.
    let config = import
        .import(&bytes)
        .with_context(|| format!("importing {}", file.display()))?;
    Store::open(profile)?.save(&config)?;
    // An encrypted file is the user's own export (made with their
    // passphrase): their privacy choices come along as theirs. A file in
    // clear may be anyone's (a PBX's document), and opting in takes the
    // user's own act.
    let mut overrides = load_overrides(profile)?;
    for ((path, on), key) in USER_ONLY
        .iter()
        .zip([
            config.privacy.crash_reports,
            config.privacy.log_personal_data,
        ])
        .zip(["crash_reports", "log_personal_data"])
    {
        match (on, encrypted) {
            (true, true) => {
                overrides.set(*path, "true");
                println!("{key} on, as in your export");
            }
            (true, false) => println!(
                "the file turns {key} on; not taken from a file in clear: \
                 `dialer config set {key} on` does it"
            ),
            (false, _) => {}
        }
    }
    save_overrides(profile, &overrides)?;
    if let Some(effective) = effective(profile)? {
        crate::contacts::prune_unconfigured(profile, &effective)?;
    }
    println!(
        "imported {} account(s) from {}",
        config.accounts.len(),
        file.display()
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_configuration_hides_passwords_and_tokens_in_uris() {
        let mut account = config_export::Account::new("office", "alice", "sip:alice:acct-pw@pbx");
        account.outbound_proxies = vec!["sip:edge:proxy-pw@edge.example;lr".to_owned()];
        let mut config = Config::default();
        config.accounts.push(account);
        config.relay.proxies =
            vec!["https://u:relay-pw@relay.example/?token=relay-token".to_owned()];
        let shown = config_json(&config).to_string();
        for secret in ["acct-pw", "proxy-pw", "relay-pw", "relay-token"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains("@pbx"), "{shown}");
        assert!(shown.contains("edge.example;lr"), "{shown}");
    }
}
