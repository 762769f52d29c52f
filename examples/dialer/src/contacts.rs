//! `contacts sync|search|lookup|add|remove`, and the contacts part of the
//! privacy export and erase.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use contacts::{
    Contact, ContactId, ContactNumber, Contacts, DATABASE_FILE, LdapSource, NumberKind, Password,
    Region,
};
use serde_json::{Value, json};

use crate::options::UsageError;

/// The source name of a directory synced from the command line.
const MANUAL_DIRECTORY: &str = "directory";

fn open(profile: &Path) -> Result<Contacts> {
    Contacts::open(profile).context("opening the contacts")
}

fn region(text: Option<&str>) -> Result<Option<Region>> {
    text.map(|r| {
        Region::from_str(&r.to_ascii_uppercase()).map_err(|_| {
            UsageError(format!("--region {r:?}: use a two-letter country code")).into()
        })
    })
    .transpose()
}

fn print_contact(c: &Contact) {
    let numbers: Vec<String> = c
        .numbers
        .iter()
        .map(|n| format!("{} {}", kind_name(n.kind), n.number))
        .collect();
    println!(
        "{}{}  {}  [{}]",
        c.display_name,
        c.organization
            .as_ref()
            .map(|o| format!(" ({o})"))
            .unwrap_or_default(),
        numbers.join(", "),
        c.source
    );
}

fn kind_name(k: NumberKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".into())
}

/// Sync options of `contacts sync`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SyncArgs {
    /// The directory, ldap:// or ldaps://.
    #[arg(long)]
    pub(crate) ldap: Option<String>,
    /// Base DN to search under.
    #[arg(long)]
    pub(crate) base: Option<String>,
    /// Bind DN (anonymous without).
    #[arg(long)]
    pub(crate) bind: Option<String>,
    /// Bind password.
    #[arg(long, env = "DIALER_LDAP_PASSWORD", hide_env_values = true)]
    pub(crate) bind_password: Option<String>,
    /// A CA certificate (PEM) the directory must chain to.
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// Upgrade ldap:// with StartTLS.
    #[arg(long)]
    pub(crate) starttls: bool,
    /// Default region for numbers written in national form.
    #[arg(long)]
    pub(crate) region: Option<String>,
}

fn ldap_source(
    name: &str,
    url: &str,
    base: &str,
    bind: Option<(&str, &str)>,
    ca: Option<&Path>,
    starttls: bool,
    region: Option<Region>,
) -> Result<LdapSource> {
    let mut s = LdapSource::new(name, url, base)?
        .with_starttls(starttls)
        .with_default_region(region);
    if let Some((dn, password)) = bind {
        s = s.with_simple_bind(dn, Password::new(password));
    }
    if let Some(ca) = ca {
        let pem = std::fs::read_to_string(ca)
            .map_err(|e| UsageError(format!("--ca {}: {e}", ca.display())))?;
        s = s.with_trusted_pem(&pem)?;
    }
    Ok(s)
}

pub(crate) async fn sync(profile: &Path, args: &SyncArgs) -> Result<bool> {
    let region = region(args.region.as_deref())?;
    let mut sources = Vec::new();
    match (&args.ldap, &args.base) {
        (Some(url), Some(base)) => {
            let bind = match (&args.bind, &args.bind_password) {
                (Some(dn), Some(p)) => Some((dn.as_str(), p.as_str())),
                (Some(_), None) => bail!(UsageError("--bind needs --bind-password".into())),
                _ => None,
            };
            sources.push(ldap_source(
                MANUAL_DIRECTORY,
                url,
                base,
                bind,
                args.ca.as_deref(),
                args.starttls,
                region,
            )?);
        }
        (None, None) => {
            // The configuration's directories.
            let config = crate::profile::effective(profile)?.unwrap_or_default();
            for src in &config.contacts.sources {
                if let config_export::ContactSource::Ldap(l) = src {
                    let password = l.bind_password.as_ref().map(|p| p.expose().to_owned());
                    let bind = match (&l.bind_dn, &password) {
                        (Some(dn), Some(p)) => Some((dn.as_str(), p.as_str())),
                        _ => None,
                    };
                    let mut s = ldap_source(
                        &l.id,
                        &l.url,
                        &l.base,
                        bind,
                        args.ca.as_deref(),
                        args.starttls,
                        region,
                    )?;
                    if let Some(f) = &l.filter {
                        s = s.with_filter(f);
                    }
                    sources.push(s);
                }
            }
            if sources.is_empty() {
                bail!(UsageError(
                    "no directory: give --ldap URL --base DN, or configure one".into()
                ));
            }
        }
        _ => bail!(UsageError("--ldap and --base go together".into())),
    }
    let mut book = open(profile)?;
    let mut ok = true;
    for s in &sources {
        match book.sync_ldap(s).await {
            Ok(r) => println!(
                "synced {}: {} entries read; {:?}",
                s.name(),
                r.fetched,
                r.counts
            ),
            Err(e) => {
                ok = false;
                println!("sync of {} failed, stored contacts kept: {e}", s.name());
            }
        }
    }
    println!("{} contacts in the store", book.len());
    Ok(ok)
}

pub(crate) fn search(profile: &Path, query: &str, json_out: bool, limit: usize) -> Result<bool> {
    let book = open(profile)?;
    let hits = book.search(query, limit)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&hits)?);
    } else {
        if hits.is_empty() {
            println!("nobody matches {query:?}");
        }
        for h in &hits {
            print_contact(&h.contact);
        }
    }
    Ok(true)
}

/// Exit status 1 (false) when nobody has the number.
pub(crate) fn lookup(
    profile: &Path,
    number: &str,
    region_arg: Option<&str>,
    json_out: bool,
) -> Result<bool> {
    let book = open(profile)?;
    let found = book.lookup(number, region(region_arg)?)?;
    match (&found, json_out) {
        (Some(c), true) => println!("{}", serde_json::to_string_pretty(c)?),
        (Some(c), false) => print_contact(c),
        (None, true) => println!("null"),
        (None, false) => println!("nobody has {number}"),
    }
    Ok(found.is_some())
}

pub(crate) fn add(
    profile: &Path,
    name: &str,
    numbers: &[String],
    organization: Option<&str>,
    emails: &[String],
    region_arg: Option<&str>,
) -> Result<bool> {
    let region = region(region_arg)?;
    let mut c = Contact::new(name);
    c.organization = organization.map(str::to_owned);
    c.emails = emails.to_vec();
    for n in numbers {
        // `mobile:+49 170 1234567` or just the number (type other).
        let (kind, raw) = match n.split_once(':') {
            Some((k, rest)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphabetic()) => {
                let kind: NumberKind = serde_json::from_value(json!(k.to_ascii_lowercase()))
                    .map_err(|_| {
                        UsageError(format!(
                            "--number {n:?}: type is work, mobile, home, fax or other"
                        ))
                    })?;
                (kind, rest)
            }
            _ => (NumberKind::Other, n.as_str()),
        };
        c.numbers.push(ContactNumber::new(kind, raw, region));
    }
    let mut book = open(profile)?;
    let id = book.add(c)?;
    println!("added contact {}", id.0);
    Ok(true)
}

pub(crate) fn remove(profile: &Path, id: i64) -> Result<bool> {
    let mut book = open(profile)?;
    let removed = book.remove(ContactId(id))?;
    println!("removed {}", removed.display_name);
    Ok(true)
}

/// Every stored contact with its source, for the privacy export.
pub(crate) fn export_json(profile: &Path) -> Result<Vec<Value>> {
    if !profile.join(DATABASE_FILE).exists() {
        return Ok(Vec::new());
    }
    let book = open(profile)?;
    let mut out = Vec::new();
    for e in book.store().index_entries()? {
        if let Some(c) = book.get(e.id)? {
            out.push(serde_json::to_value(&c)?);
        }
    }
    Ok(out)
}

/// Deletes every contact so nothing is recoverable from the store: each
/// table emptied with secure_delete on, then VACUUM; photos removed by the
/// caller with the profile's caches.
pub(crate) fn erase(profile: &Path) -> Result<usize> {
    let path = profile.join(DATABASE_FILE);
    if !path.exists() {
        return Ok(0);
    }
    let count = open(profile)?.len();
    let conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    let tables: Vec<String> = {
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' AND name NOT IN ('schema_version', 'meta')",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let virtual_tables: Vec<String> = {
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for t in virtual_tables.iter().chain(tables.iter()) {
        // FTS5 shadow tables are emptied through their virtual table.
        if virtual_tables
            .iter()
            .any(|v| t != v && t.starts_with(&format!("{v}_")))
        {
            continue;
        }
        conn.execute(&format!("DELETE FROM \"{}\"", t.replace('"', "\"\"")), [])?;
    }
    conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(count)
}

/// Removes the cached contacts of directories the configuration no longer
/// names: remote contacts go with their source. Contacts added on this
/// device, and those of a directory synced by hand (`contacts sync --ldap`),
/// stay. Returns how many were removed.
pub(crate) fn prune_unconfigured(profile: &Path, config: &config_export::Config) -> Result<usize> {
    if !profile.join(DATABASE_FILE).exists() {
        return Ok(0);
    }
    let configured: Vec<String> = config
        .contacts
        .sources
        .iter()
        .filter_map(|s| match s {
            config_export::ContactSource::Ldap(l) => Some(l.id.clone()),
            _ => None,
        })
        .collect();
    let mut store = contacts::Store::open(&profile.join(DATABASE_FILE))?;
    let mut stale: Vec<contacts::Source> = Vec::new();
    for e in store.index_entries()? {
        if let contacts::Source::Ldap(name) = &e.source
            && name != MANUAL_DIRECTORY
            && !configured.contains(name)
            && !stale.contains(&e.source)
        {
            stale.push(e.source.clone());
        }
    }
    let mut removed = 0;
    for source in &stale {
        let counts = store.replace_source(source, &[], None)?;
        removed += counts.removed;
        println!(
            "removed {} contacts of {source}, no longer configured",
            counts.removed
        );
    }
    Ok(removed)
}
