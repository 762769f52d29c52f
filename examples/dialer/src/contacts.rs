//! `contacts sync|search|lookup|add|remove`, and the contacts part of the
//! privacy export and erase.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use std::time::Duration;

use contacts::{
    CloudHttp, Contact, ContactId, ContactNumber, Contacts, DATABASE_FILE, ExchangeSource,
    GoogleSource, LdapSource, LoginFlow, NumberKind, OAuthConfig, Password, Region, StoredLogin,
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
    /// Sync the Google account signed in to with `contacts google-login`.
    #[arg(long)]
    pub(crate) google: bool,
    /// Sync the Exchange account signed in to with `contacts exchange-login`.
    #[arg(long)]
    pub(crate) exchange: bool,
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
    if args.google || args.exchange {
        let chosen: Vec<Cloud> = Cloud::ALL
            .into_iter()
            .filter(|c| {
                (*c == Cloud::Google && args.google) || (*c == Cloud::Exchange && args.exchange)
            })
            .collect();
        let mut book = open(profile)?;
        let ok = sync_clouds(profile, &mut book, &chosen, true, region).await?;
        println!("{} contacts in the store", book.len());
        return Ok(ok);
    }
    let signed_in = Cloud::ALL.iter().any(|c| c.login_file(profile).exists());
    let mut sources = Vec::new();
    let mut unusable = false;
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
                    // One directory the configuration describes badly
                    // must not keep the others from syncing.
                    match ldap_source(
                        &l.id,
                        &l.url,
                        &l.base,
                        bind,
                        args.ca.as_deref(),
                        args.starttls,
                        region,
                    ) {
                        Ok(s) => sources.push(match &l.filter {
                            Some(f) => s.with_filter(f),
                            None => s,
                        }),
                        Err(e) if e.downcast_ref::<UsageError>().is_some() => return Err(e),
                        Err(e) => {
                            unusable = true;
                            println!(
                                "directory {} is unusable, not synced: {}",
                                l.id,
                                crate::options::describe(&e)
                            );
                        }
                    }
                }
            }
            if sources.is_empty() && !signed_in && !unusable {
                bail!(UsageError(
                    "no directory: give --ldap URL --base DN, configure one, or sign in with \
                     contacts google-login / exchange-login"
                        .into()
                ));
            }
        }
        _ => bail!(UsageError("--ldap and --base go together".into())),
    }
    let mut book = open(profile)?;
    let mut ok = !unusable;
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
    if args.ldap.is_none() {
        ok &= sync_clouds(profile, &mut book, &Cloud::ALL, false, region).await?;
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
    for cloud in Cloud::ALL {
        match std::fs::remove_file(cloud.login_file(profile)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
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
    for t in &virtual_tables {
        // A DELETE on a contentless FTS5 table only marks its rows deleted
        // (the words stay in its index until a merge): 'delete-all' drops
        // the index itself.
        let quoted = format!("\"{}\"", t.replace('"', "\"\""));
        conn.execute(
            &format!("INSERT INTO {quoted}({quoted}) VALUES('delete-all')"),
            [],
        )?;
    }
    for t in &tables {
        // FTS5 shadow tables went with their virtual table.
        if virtual_tables
            .iter()
            .any(|v| t.starts_with(&format!("{v}_")))
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
    let stale: Vec<contacts::Source> = store
        .sources()?
        .into_iter()
        .filter(|s| {
            matches!(s, contacts::Source::Ldap(name)
                if name != MANUAL_DIRECTORY && !configured.contains(name))
        })
        .collect();
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

/// A cloud address book the dialer can sign in to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cloud {
    Google,
    Exchange,
}

impl Cloud {
    const ALL: [Self; 2] = [Self::Google, Self::Exchange];

    fn name(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Exchange => "exchange",
        }
    }

    /// `profile/oauth-<name>.json`, mode 0600: the refresh token.
    fn login_file(self, profile: &Path) -> PathBuf {
        profile.join(format!("oauth-{}.json", self.name()))
    }

    fn config(self, client_id: &str) -> OAuthConfig {
        match self {
            Self::Google => OAuthConfig::google(client_id),
            Self::Exchange => OAuthConfig::microsoft(client_id),
        }
    }

    /// The contacts' source of a login under `account`.
    fn source(self, account: &str) -> contacts::Source {
        match self {
            Self::Google => contacts::Source::Google(account.to_owned()),
            Self::Exchange => contacts::Source::Exchange(account.to_owned()),
        }
    }
}

/// Makes the next sync of a cloud signed in to afresh read it whole: the
/// new login may be another user, even under the same account name, and
/// must not go on from the old one's sync token (a full sync then removes
/// what the new address book lacks, keeping favourites of what it has).
/// The contacts of every other account of that cloud go at once: only the
/// account signed in to is synced from now on, and nothing else would
/// ever remove them. Nothing here stops the login: a store that cannot be
/// opened is reported and passed over.
fn forget_previous_login(profile: &Path, cloud: Cloud, account: &str) {
    let forget = || -> Result<()> {
        if !profile.join(DATABASE_FILE).exists() {
            return Ok(());
        }
        let current = cloud.source(account);
        let mut store = contacts::Store::open(&profile.join(DATABASE_FILE))?;
        store.forget_sync_token(&current)?;
        for source in store.sources()? {
            let of_this_cloud = matches!(
                (&source, cloud),
                (contacts::Source::Google(_), Cloud::Google)
                    | (contacts::Source::Exchange(_), Cloud::Exchange)
            );
            if !of_this_cloud || source == current {
                continue;
            }
            let counts = store.replace_source(&source, &[], None)?;
            println!(
                "removed {} contacts of {source}, signed in to another account",
                counts.removed
            );
        }
        Ok(())
    };
    if let Err(e) = forget() {
        eprintln!(
            "dialer: the previous {} login not cleaned up: {}",
            cloud.name(),
            crate::options::describe(&e)
        );
    }
}

/// Options of `contacts google-login` and `contacts exchange-login`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LoginArgs {
    /// The OAuth client id of the app registration (installed / desktop app).
    #[arg(long)]
    pub(crate) client_id: String,
    /// The client secret, for desktop clients that have one (Google's).
    #[arg(long, env = "DIALER_OAUTH_CLIENT_SECRET", hide_env_values = true)]
    pub(crate) client_secret: Option<String>,
    /// A name for the account; the contacts' source is `google:NAME`.
    #[arg(long, default_value = "default")]
    pub(crate) account: String,
    /// Seconds to wait for the browser to come back (at most 600).
    #[arg(long, default_value_t = 300)]
    pub(crate) timeout: u64,
    #[arg(long, hide = true)]
    pub(crate) auth_url: Option<String>,
    #[arg(long, hide = true)]
    pub(crate) token_url: Option<String>,
    #[arg(long, hide = true)]
    pub(crate) api_url: Option<String>,
}

/// Plain http only to a loopback test server.
fn cloud_http(urls: &[Option<&str>]) -> Result<CloudHttp> {
    let http = CloudHttp::new()?;
    // The host as a URL parser reads it: `http://127.0.0.1:x@host/` is `host`.
    let loopback = |u: &str| contacts::is_loopback_url(u);
    let plain: Vec<&str> = urls
        .iter()
        .flatten()
        .copied()
        .filter(|u| u.starts_with("http:"))
        .collect();
    if plain.is_empty() {
        Ok(http)
    } else if plain.iter().all(|u| loopback(u)) {
        Ok(http.dangerous_allow_plain_http())
    } else {
        bail!(UsageError(format!(
            "plain http is only allowed to loopback: {plain:?}"
        )))
    }
}

/// Prints the authorization URL, waits for the loopback redirect and keeps
/// the refresh token in the profile.
pub(crate) async fn login(profile: &Path, cloud: Cloud, args: &LoginArgs) -> Result<bool> {
    let http = cloud_http(&[
        args.auth_url.as_deref(),
        args.token_url.as_deref(),
        args.api_url.as_deref(),
    ])?;
    let mut config = cloud.config(&args.client_id);
    if let (Some(auth), Some(token)) = (&args.auth_url, &args.token_url) {
        config = config.with_endpoints(auth, token);
    }
    if let Some(secret) = &args.client_secret {
        config = config.with_client_secret(secret);
    }
    let flow = LoginFlow::start(config, &http).await?;
    println!("Open this address in a browser and sign in:");
    println!("{}", flow.authorize_url());
    println!("Waiting for the browser on {} ...", flow.redirect_uri());
    std::io::Write::flush(&mut std::io::stdout())?;
    let limit = Duration::from_secs(args.timeout.clamp(1, 600));
    let session = flow.finish(&http, limit).await?;
    std::fs::create_dir_all(profile)?;
    forget_previous_login(profile, cloud, &args.account);
    let mut stored = StoredLogin::new(&args.account, &session);
    stored.api_url.clone_from(&args.api_url);
    let path = cloud.login_file(profile);
    stored.save(&path)?;
    println!(
        "signed in to {}:{}; refresh token kept in {} (mode 0600)",
        cloud.name(),
        args.account,
        path.display()
    );
    Ok(true)
}

/// Syncs the given clouds (or every one signed in to when `explicit` is
/// false). Whether all succeeded.
async fn sync_clouds(
    profile: &Path,
    book: &mut Contacts,
    clouds: &[Cloud],
    explicit: bool,
    region: Option<Region>,
) -> Result<bool> {
    let mut ok = true;
    for &cloud in clouds {
        let path = cloud.login_file(profile);
        let Some(mut stored) = StoredLogin::load(&path)? else {
            if explicit {
                bail!(UsageError(format!(
                    "not signed in to {0}: run `contacts {0}-login --client-id ID` first",
                    cloud.name()
                )));
            }
            continue;
        };
        let http = cloud_http(&[
            Some(stored.auth_url.as_str()),
            Some(stored.token_url.as_str()),
            stored.api_url.as_deref(),
        ])?;
        let mut session = stored.session(cloud.config(&stored.client_id));
        let result = match cloud {
            Cloud::Google => {
                let mut s = GoogleSource::new(&stored.account).with_default_region(region);
                if let Some(api) = &stored.api_url {
                    s = s.with_api_base(api);
                }
                book.sync_google(&s, &http, &mut session).await
            }
            Cloud::Exchange => {
                let mut s = ExchangeSource::new(&stored.account).with_default_region(region);
                if let Some(api) = &stored.api_url {
                    s = s.with_api_base(api);
                }
                book.sync_exchange(&s, &http, &mut session).await
            }
        };
        // Providers may rotate the refresh token.
        if session.refresh_token() != &stored.refresh_token {
            stored.refresh_token = session.refresh_token().clone();
            stored.save(&path)?;
        }
        match result {
            Ok(r) => println!(
                "synced {}: {} changes read; {:?}",
                r.source, r.fetched, r.counts
            ),
            Err(e) => {
                ok = false;
                println!(
                    "sync of {}:{} failed, stored contacts kept: {e}",
                    cloud.name(),
                    stored.account
                );
            }
        }
    }
    Ok(ok)
}
