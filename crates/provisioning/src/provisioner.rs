//! The provisioning client: one check (fetch, include, validate, store) and
//! the periodic task around it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use config_export::Config;
use reqwest::Url;
use tokio::sync::{Mutex, Notify};

use crate::error::ProvisionError;
use crate::fetch::{self, FetchPolicy, Fetched};
use crate::layer::{Combined, Layer};
use crate::schedule::{RetryPolicy, Schedule};
use crate::settings::{MAX_DOCUMENTS, MIN_CHECK_INTERVAL, Settings, Trust};
use crate::store::{CachedDocument, Store};
use crate::template::{self, Placeholders};

/// Fetches the provisioning document (and its includes) and stores the
/// configuration in a profile directory.
///
/// Cloning is cheap and shares the client, the store and the check-sync
/// trigger. Checks never overlap: a second `check_now` waits for the first.
#[derive(Debug, Clone)]
pub struct Provisioner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    store: Store,
    client: reqwest::Client,
    policy: FetchPolicy,
    check_sync: Notify,
    running: Mutex<()>,
}

/// What a successful check did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outcome {
    /// The provisioned configuration, includes resolved (its `includes`
    /// list is empty), as stored.
    pub config: Config,
    /// Whether the stored configuration changed.
    pub changed: bool,
    /// The documents this check read, the provisioning URL's first, then
    /// its includes depth first.
    pub documents: Vec<DocumentSource>,
    /// When to check again: the document's `<check-interval>`, else the
    /// settings' interval.
    pub check_interval: Duration,
}

/// One document a check read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DocumentSource {
    /// Its URL, placeholders replaced, before redirects; its query (which
    /// often carries a token) shown as `?…`, as in errors.
    pub url: String,
    /// Whether the server answered 304 and the cached copy was used.
    pub from_cache: bool,
}

/// Asks a running [`Provisioner::run_periodic`] for a check now: call
/// [`CheckTrigger::check_sync`] when a SIP NOTIFY with `Event: check-sync`
/// arrives. Requests that arrive while a check runs are folded into one
/// more check.
#[derive(Debug, Clone)]
pub struct CheckTrigger {
    inner: Arc<Inner>,
}

impl CheckTrigger {
    /// Requests a check as soon as possible.
    pub fn check_sync(&self) {
        self.inner.check_sync.notify_one();
    }
}

/// Fetches the document at `settings`' URL once and stores the
/// configuration in `profile_dir`: what `dialer provision URL [--user U
/// --password P] [--ca FILE]` does.
///
/// On any error the stored configuration is left exactly as it was.
///
/// ```no_run
/// use provisioning::{Credentials, Settings};
///
/// # async fn run() -> Result<(), provisioning::ProvisionError> {
/// let settings = Settings::new("https://prov.example.com/{user}.xml")
///     .with_credentials(Credentials::new("alice", "secret"))
///     .with_ca_file("/etc/softphone/company-ca.pem")?;
/// let outcome = provisioning::provision("/home/alice/.local/share/softphone", settings).await?;
/// println!("{} account(s), changed: {}", outcome.config.accounts.len(), outcome.changed);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// Any [`ProvisionError`].
pub async fn provision(
    profile_dir: impl Into<PathBuf>,
    settings: Settings,
) -> Result<Outcome, ProvisionError> {
    Provisioner::new(profile_dir, settings)?.check_now().await
}

impl Provisioner {
    /// A provisioner storing into `profile_dir` (created if missing).
    ///
    /// # Errors
    ///
    /// [`ProvisionError::Store`] when the directory cannot be created,
    /// [`ProvisionError::Certificate`] or [`ProvisionError::Client`] when
    /// the HTTPS client cannot be built.
    pub fn new(
        profile_dir: impl Into<PathBuf>,
        settings: Settings,
    ) -> Result<Self, ProvisionError> {
        let store = Store::open(profile_dir)?;
        let client = client(&settings)?;
        let policy = FetchPolicy {
            credentials: settings.credentials.clone(),
            max_body_bytes: settings.max_body_bytes,
            max_redirects: settings.max_redirects,
            allow_plain_http: settings.allow_plain_http,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                store,
                client,
                policy,
                check_sync: Notify::new(),
                running: Mutex::new(()),
            }),
        })
    }

    /// The profile directory's store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// A handle that requests a check from [`Provisioner::run_periodic`].
    #[must_use]
    pub fn trigger(&self) -> CheckTrigger {
        CheckTrigger {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Checks for a new document now: fetches it and its includes (with
    /// conditional requests where a cached copy exists), validates the
    /// whole, and replaces the stored configuration atomically if it
    /// changed. Cached copies are updated only after the configuration is
    /// stored.
    ///
    /// # Errors
    ///
    /// Any [`ProvisionError`]; the stored configuration is then unchanged.
    pub async fn check_now(&self) -> Result<Outcome, ProvisionError> {
        let _running = self.inner.running.lock().await;
        let inner = &self.inner;
        let settings = &inner.settings;
        let placeholders = Placeholders {
            user: settings
                .user
                .clone()
                .or_else(|| settings.credentials.as_ref().map(|c| c.user.clone())),
            installation_id: match &settings.installation_id {
                Some(id) => id.clone(),
                None => inner.store.installation_id()?,
            },
        };
        let root = template::resolve(&settings.url, &placeholders, None)?;
        let mut check = Check {
            inner,
            root: root.clone(),
            placeholders,
            documents: Vec::new(),
            cache_updates: Vec::new(),
        };
        let combined = check.load(root.clone(), 0, &mut Vec::new()).await?;
        let config = combined.config;
        config
            .validate()
            .map_err(|e| ProvisionError::document(&fetch::display(&root), e))?;
        if let Some(accept) = &settings.acceptance {
            (accept.0)(&config).map_err(|reason| ProvisionError::Unusable {
                url: fetch::display(&root),
                reason,
            })?;
        }
        let changed = inner.store.save(&config)?;
        for (url, entry) in &check.cache_updates {
            // A cache that cannot be written costs a full download next time.
            if let Err(error) = inner.store.save_cached(url, entry) {
                tracing::warn!(%error, "provisioning cache not updated");
            }
        }
        let check_interval = config
            .provisioning
            .as_ref()
            .and_then(|p| p.check_interval)
            .map_or(settings.check_interval, |s| {
                Duration::from_secs(u64::from(s))
            })
            .max(MIN_CHECK_INTERVAL);
        tracing::info!(
            changed,
            documents = check.documents.len(),
            "provisioning check done"
        );
        Ok(Outcome {
            config,
            changed,
            documents: check.documents,
            check_interval,
        })
    }

    /// Checks at once, then again after each interval (the document's
    /// `<check-interval>`, else the settings'), retrying failures with
    /// back-off ([`RetryPolicy::default`]), and whenever a [`CheckTrigger`]
    /// asks. `on_result` sees every check's result.
    ///
    /// It runs until the future is dropped (or its task aborted); a check
    /// cut off that way leaves the store as it was or fully updated. It
    /// sleeps on tokio's clock; the timing rules are [`Schedule`]'s.
    pub async fn run_periodic(&self, mut on_result: impl FnMut(&Result<Outcome, ProvisionError>)) {
        let now = || tokio::time::Instant::now().into_std();
        let mut schedule = Schedule::new(now(), RetryPolicy::default());
        let mut interval = self.inner.settings.check_interval;
        loop {
            if !schedule.is_due(now()) {
                let deadline = tokio::time::Instant::from_std(schedule.next_check());
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = self.inner.check_sync.notified() => schedule.handle_check_sync(now()),
                }
                continue;
            }
            let result = self.check_now().await;
            match &result {
                Ok(outcome) => {
                    interval = outcome.check_interval;
                    schedule.handle_success(now(), interval);
                }
                Err(_) => schedule.handle_failure(now(), interval),
            }
            on_result(&result);
        }
    }
}

fn client(settings: &Settings) -> Result<reqwest::Client, ProvisionError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        .user_agent(concat!(
            "softphone-rs-provisioning/",
            env!("CARGO_PKG_VERSION")
        ))
        .https_only(!settings.allow_plain_http);
    if let Trust::Only(certificates) = &settings.trust {
        let certificates = certificates
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ProvisionError::Certificate {
                reason: e.to_string(),
            })?;
        builder = builder.tls_certs_only(certificates);
    }
    builder.build().map_err(|e| ProvisionError::Client {
        reason: e.to_string(),
    })
}

/// The state of one check.
struct Check<'p> {
    inner: &'p Inner,
    /// The provisioning URL: only its origin is given credentials.
    root: Url,
    placeholders: Placeholders,
    documents: Vec<DocumentSource>,
    cache_updates: Vec<(String, CachedDocument)>,
}

type Loading<'a> = Pin<Box<dyn Future<Output = Result<Combined, ProvisionError>> + Send + 'a>>;

impl Check<'_> {
    /// Fetches `url`, then its includes, and lays them under it. `chain`
    /// holds the documents that include this one, for loop detection.
    fn load<'a>(&'a mut self, url: Url, depth: usize, chain: &'a mut Vec<Url>) -> Loading<'a> {
        Box::pin(async move {
            let shown = fetch::display(&url);
            if chain.contains(&url) {
                return Err(ProvisionError::IncludeLoop { url: shown });
            }
            let limit = self.inner.settings.max_include_depth;
            if depth > limit {
                return Err(ProvisionError::IncludeDepth { url: shown, limit });
            }
            if self.documents.len() >= MAX_DOCUMENTS {
                return Err(ProvisionError::TooManyDocuments {
                    limit: MAX_DOCUMENTS,
                });
            }
            let key = url.as_str().to_owned();
            let cached = self.inner.store.cached(&key);
            let fetched = fetch::fetch(
                &self.inner.client,
                &self.inner.policy,
                &url,
                &self.root,
                cached.as_ref(),
            )
            .await?;
            let (body, base, from_cache) = match (fetched, cached) {
                (
                    Fetched::Body {
                        body,
                        final_url,
                        etag,
                        last_modified,
                    },
                    _,
                ) => {
                    self.cache_updates.push((
                        key.clone(),
                        CachedDocument {
                            etag,
                            last_modified,
                            body: body.clone(),
                        },
                    ));
                    (body, final_url, false)
                }
                (Fetched::NotModified { final_url }, Some(cached)) => {
                    (cached.body, final_url, true)
                }
                // fetch answers NotModified only to a conditional request.
                (Fetched::NotModified { .. }, None) => {
                    return Err(ProvisionError::Http {
                        url: shown,
                        status: 304,
                    });
                }
            };
            self.documents.push(DocumentSource {
                url: shown.clone(),
                from_cache,
            });
            let text = String::from_utf8(body)
                .map_err(|_| ProvisionError::NotUtf8 { url: shown.clone() })?;
            let config =
                Config::from_xml(&text).map_err(|e| ProvisionError::document(&shown, e))?;
            let mut combined = Combined::default();
            chain.push(url);
            for include in &config.includes {
                let child = template::resolve(include, &self.placeholders, Some(&base))?;
                let sub = self.load(child, depth + 1, chain).await?;
                combined.apply(sub.into_layer());
            }
            chain.pop();
            combined.apply(Layer::new(config, &text));
            Ok(combined)
        })
    }
}
