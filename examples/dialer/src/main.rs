//! `dialer`: the reference softphone for the terminal, built on the
//! `softphone` crate.
//!
//! ```text
//! dialer demo                         two phones on loopback call each other
//! dialer call TARGET --registrar URI --user U --password P [...]
//! dialer answer [--registrar URI --user U --password P] [--auto] [...]
//! dialer register --registrar URI --user U --password P [--stay S]
//! dialer shell [--registrar URI --user U --password P]
//! dialer history [--limit N]
//! ```
//!
//! Exit status: 0 when the job succeeded (a call answered and ended
//! normally, a registration held), 1 when it failed, 2 for bad arguments.
#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]
#![allow(
    clippy::print_stderr,
    reason = "a command-line tool reports errors on stderr"
)]

mod contacts;
mod demo;
mod options;
mod privacy;
mod profile;
mod relay;
mod session;
mod shell;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::options::{AccountArgs, MediaArgs};

#[derive(Parser, Debug)]
#[command(name = "dialer", version, about = "A softphone for the terminal")]
struct Cli {
    /// Where all state lives (call history); default: the platform's data directory.
    #[arg(long, global = true)]
    profile: Option<PathBuf>,
    /// Write logs to this file (rotated; personal data masked); default:
    /// `logs/dialer.log` in the profile.
    #[arg(long, global = true)]
    log_file: Option<PathBuf>,
    /// Log numbers, names and addresses unmasked, for debugging (passwords
    /// and tokens are never logged).
    #[arg(long, global = true)]
    log_pii: bool,
    /// Where crash reports go, when the user opted in
    /// (`config set crash_reports on`).
    #[arg(long, global = true, env = "DIALER_CRASH_DSN")]
    crash_dsn: Option<String>,
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum ContactsAction {
    /// Copy a directory's people into the store (the configuration's
    /// directories when no --ldap is given).
    Sync(contacts::SyncArgs),
    /// Sign in to a Google account (OAuth, loopback redirect): prints the
    /// address to open in a browser; `contacts sync` then includes it.
    GoogleLogin(contacts::LoginArgs),
    /// Sign in to an Exchange / Microsoft 365 account (Microsoft Graph).
    ExchangeLogin(contacts::LoginArgs),
    /// Search as you type: every word of the query matches the start of a
    /// name word, the organisation, or digits of a number.
    Search {
        /// The query.
        query: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Who has this number (exit 1 when nobody).
    Lookup {
        /// The number, in any common form.
        number: String,
        /// Region for a number in national form, e.g. DE.
        #[arg(long)]
        region: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a local contact.
    Add {
        /// Display name.
        name: String,
        /// A number, optionally with its type: `mobile:+49 170 1234567`.
        #[arg(long = "number")]
        numbers: Vec<String>,
        /// Organisation.
        #[arg(long)]
        organization: Option<String>,
        /// An e-mail address.
        #[arg(long = "email")]
        emails: Vec<String>,
        /// Region for numbers in national form.
        #[arg(long)]
        region: Option<String>,
    },
    /// Remove a local contact by id.
    Remove {
        /// The id `contacts search --json` shows.
        id: i64,
    },
}

#[derive(Subcommand, Debug)]
enum LogsAction {
    /// Bundle the log files into one file, personal data masked.
    Export {
        /// The bundle to write.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum DebugAction {
    /// Panic on purpose, through the crash-report hook (sent only after opt-in).
    Crash,
}

#[derive(Subcommand, Debug)]
enum PrivacyAction {
    /// Everything the profile holds about you, as JSON.
    Export {
        /// Where to write it.
        file: PathBuf,
    },
    /// Delete call history, contacts, caches, logs and push tokens for good.
    Erase {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Print the configuration in effect (secrets masked).
    Show {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a setting locally, e.g. `media/srtp mandatory` or
    /// `crash_reports on`; settings the administrator locked are refused.
    Set {
        /// The setting: an element path such as `media/srtp` or
        /// `account[office]/display-name`, or a short name.
        key: String,
        /// The new value.
        value: String,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Two phones in this process call each other over loopback with SRTP,
    /// each sending a tone and checking it hears the other's.
    Demo {
        /// Codec for the demo call.
        #[arg(long, default_value = "opus")]
        codec: String,
        /// How long the call lasts, in seconds.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Register and call TARGET; hang up after --hangup-after or on the far end's BYE.
    Call {
        /// A SIP URI, or a user/number on the registrar's domain.
        target: String,
        #[command(flatten)]
        account: AccountArgs,
        #[command(flatten)]
        media: MediaArgs,
        /// Hang up after this many seconds of conversation.
        #[arg(long)]
        hangup_after: Option<u64>,
        /// Send these DTMF digits once the call is answered.
        #[arg(long)]
        dtmf: Option<String>,
        /// Give up when nobody answers within this many seconds.
        #[arg(long, default_value_t = 60)]
        ring_timeout: u64,
    },
    /// Wait for calls (registering when a registrar is given).
    Answer {
        #[command(flatten)]
        account: AccountArgs,
        #[command(flatten)]
        media: MediaArgs,
        /// Answer calls automatically.
        #[arg(long)]
        auto: bool,
        /// Hang up each answered call after this many seconds.
        #[arg(long)]
        hangup_after: Option<u64>,
        /// Stop after this many calls ended.
        #[arg(long)]
        calls: Option<u32>,
        /// Stop after this many seconds in all.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Register and report each registration state change; through relay
    /// proxies (SIP outbound) with --proxy, with push parameters with --push-*.
    Register {
        #[command(flatten)]
        account: AccountArgs,
        #[command(flatten)]
        push: relay::PushArgs,
        /// Keep the registration alive this many seconds, then remove it.
        #[arg(long)]
        stay: Option<u64>,
    },
    /// An interactive phone: call, answer, hangup, hold, resume, transfer,
    /// dtmf, mute, status, history, quit.
    Shell {
        #[command(flatten)]
        account: AccountArgs,
        #[command(flatten)]
        media: MediaArgs,
    },
    /// Fetch the configuration from the provisioning server and store it in
    /// the profile (it replaces the stored one only when valid).
    Provision {
        /// The document's URL; `{user}` and `{installation_id}` are filled in.
        url: String,
        /// User for HTTP authentication (and `{user}`).
        #[arg(long)]
        user: Option<String>,
        /// Password for HTTP authentication.
        #[arg(long, env = "DIALER_PROVISIONING_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// A CA certificate (PEM) the server must chain to; default: the system's roots.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Show or change the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Export the configuration: encrypted with a passphrase (from
    /// DIALER_PASSPHRASE or asked), or in plaintext or redacted when asked.
    Export {
        /// Where to write it.
        file: PathBuf,
        /// Write passwords and tokens in clear text.
        #[arg(long, conflicts_with = "redacted")]
        plaintext: bool,
        /// Replace every secret (for support).
        #[arg(long)]
        redacted: bool,
    },
    /// Import an exported configuration; nothing changes unless all of it is valid.
    Import {
        /// The export file.
        file: PathBuf,
    },
    /// Contacts: sync from a directory, search, look up a number, add, remove.
    Contacts {
        #[command(subcommand)]
        action: ContactsAction,
    },
    /// Logs for support.
    Logs {
        #[command(subcommand)]
        action: LogsAction,
    },
    /// Diagnostics.
    Debug {
        #[command(subcommand)]
        action: DebugAction,
    },
    /// Your data: export all of it, or erase it.
    Privacy {
        #[command(subcommand)]
        action: PrivacyAction,
    },
    /// The most recent calls.
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let profile = match options::profile_dir(cli.profile.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dialer: {}", options::describe(&e));
            return ExitCode::from(2);
        }
    };
    // A configuration that does not load must not lock out the commands
    // that replace it (provision, import): they go on with the defaults
    // (personal data masked in logs, no crash reports); commands that need
    // it fail on their own with this error.
    let settings = match profile::effective(&profile) {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => {
            eprintln!(
                "dialer: the profile's configuration is unusable ({}); provision or import can replace it",
                options::describe(&e)
            );
            Default::default()
        }
    };
    let log_file = cli
        .log_file
        .clone()
        .unwrap_or_else(|| profile.join("logs").join("dialer.log"));
    let _ = options::LOG_FILE.set(log_file.clone());
    let _logs = match options::init_logging(
        &log_file,
        cli.verbose,
        cli.quiet,
        cli.log_pii,
        &settings.privacy,
    ) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("dialer: {}", options::describe(&e));
            return ExitCode::from(2);
        }
    };
    let _crash =
        match options::init_crash_reports(&profile, cli.crash_dsn.as_deref(), &settings.privacy) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("dialer: crash reports: {}", options::describe(&e));
                None
            }
        };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dialer: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo { codec, seconds } => demo::run(&codec, seconds).await,
            Command::Call {
                target,
                account,
                media,
                hangup_after,
                dtmf,
                ring_timeout,
            } => {
                session::call(
                    &profile,
                    &target,
                    &account,
                    &media,
                    hangup_after,
                    dtmf.as_deref(),
                    ring_timeout,
                )
                .await
            }
            Command::Answer {
                account,
                media,
                auto,
                hangup_after,
                calls,
                duration,
            } => {
                session::answer(
                    &profile,
                    &account,
                    &media,
                    auto,
                    hangup_after,
                    calls,
                    duration,
                )
                .await
            }
            Command::Register {
                account,
                push,
                stay,
            } => {
                // Through relay proxies (RFC 5626 flows) when proxies or push
                // parameters are given; a plain registration otherwise.
                if account.proxies.is_empty() && !push.is_set() {
                    session::register(&profile, &account, stay).await
                } else {
                    let proxies = account.proxies.clone();
                    relay::register(&profile, &account, &proxies, &push, stay).await
                }
            }
            Command::Shell { account, media } => shell::run(&profile, &account, &media).await,
            Command::History { limit } => session::history(&profile, limit),
            Command::Provision {
                url,
                user,
                password,
                ca,
            } => {
                profile::provision(
                    &profile,
                    &url,
                    user.as_deref(),
                    password.as_deref(),
                    ca.as_deref(),
                )
                .await
            }
            Command::Config {
                action: ConfigAction::Show { json },
            } => profile::show(&profile, json),
            Command::Config {
                action: ConfigAction::Set { key, value },
            } => profile::set(&profile, &key, &value),
            Command::Export {
                file,
                plaintext,
                redacted,
            } => profile::export(&profile, &file, plaintext, redacted),
            Command::Import { file } => profile::import(&profile, &file),
            Command::Contacts { action } => match action {
                ContactsAction::Sync(args) => contacts::sync(&profile, &args).await,
                ContactsAction::GoogleLogin(args) => {
                    contacts::login(&profile, contacts::Cloud::Google, &args).await
                }
                ContactsAction::ExchangeLogin(args) => {
                    contacts::login(&profile, contacts::Cloud::Exchange, &args).await
                }
                ContactsAction::Search { query, json, limit } => {
                    contacts::search(&profile, &query, json, limit)
                }
                ContactsAction::Lookup {
                    number,
                    region,
                    json,
                } => contacts::lookup(&profile, &number, region.as_deref(), json),
                ContactsAction::Add {
                    name,
                    numbers,
                    organization,
                    emails,
                    region,
                } => contacts::add(
                    &profile,
                    &name,
                    &numbers,
                    organization.as_deref(),
                    &emails,
                    region.as_deref(),
                ),
                ContactsAction::Remove { id } => contacts::remove(&profile, id),
            },
            Command::Logs {
                action: LogsAction::Export { file },
            } => options::export_logs(&log_file, &file),
            Command::Debug {
                action: DebugAction::Crash,
            } => Ok(options::debug_crash(_crash.is_some())),
            Command::Privacy {
                action: PrivacyAction::Export { file },
            } => privacy::export(&profile, &file),
            Command::Privacy {
                action: PrivacyAction::Erase { yes },
            } => privacy::erase(&profile, yes, &log_file),
        }
    });
    // Media and socket tasks end with the runtime; bound the wait.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("dialer: error: {}", options::describe(&e));
            if e.downcast_ref::<options::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
