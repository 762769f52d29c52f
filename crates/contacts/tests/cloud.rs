//! Google People and Microsoft Graph sources against testkit's fake
//! servers on 127.0.0.1: paging, sync tokens, delta links, token refresh,
//! rate limits, partial failures and the PKCE login.

use std::time::{Duration, Instant};

use contacts::{
    CloudError, CloudHttp, Contacts, ExchangeSource, GoogleSource, LoginFlow, OAuthConfig,
    OAuthSession, RefreshToken, Source, StoredLogin, SyncError,
};
use serde_json::{Value, json};
use testkit::{FAKE_CLIENT_ID, FakeCloud, Fault};

fn person(given: &str, family: &str, phone: &str) -> Value {
    json!({
        "names": [{"displayName": format!("{given} {family}"), "givenName": given, "familyName": family}],
        "phoneNumbers": [{"value": phone, "type": "mobile"}],
        "emailAddresses": [{"value": format!("{}@example.com", given.to_lowercase())}],
        "organizations": [{"name": "Example GmbH", "title": "Engineer"}],
    })
}

fn graph_contact(given: &str, family: &str, phone: &str) -> Value {
    json!({
        "displayName": format!("{given} {family}"),
        "givenName": given,
        "surname": family,
        "companyName": "Contoso",
        "jobTitle": "Buyer",
        "businessPhones": [phone],
        "mobilePhone": null,
        "homePhones": [],
        "emailAddresses": [{"name": given, "address": format!("{}@contoso.example", given.to_lowercase())}],
    })
}

const NAMES: [&str; 7] = ["Anna", "Bernd", "Clara", "Dieter", "Emma", "Frank", "Greta"];

fn seed_google(fake: &FakeCloud) {
    for (i, name) in NAMES.iter().enumerate() {
        fake.put_person(
            &format!("c{i}"),
            person(name, "Müller", &format!("030 100004{i}")),
        );
    }
}

fn seed_graph(fake: &FakeCloud) {
    for (i, name) in NAMES.iter().enumerate() {
        fake.put_graph_contact(
            &format!("AAMk{i}"),
            graph_contact(name, "Meier", &format!("089 200005{i}")),
        );
    }
}

fn http() -> CloudHttp {
    CloudHttp::new()
        .expect("http client")
        .dangerous_allow_plain_http()
}

fn config(fake: &FakeCloud) -> OAuthConfig {
    OAuthConfig::google(FAKE_CLIENT_ID).with_endpoints(&fake.auth_url(), &fake.token_url())
}

fn session(fake: &FakeCloud) -> OAuthSession {
    OAuthSession::new(config(fake), RefreshToken::new(fake.issue_refresh_token()))
}

fn google(fake: &FakeCloud) -> GoogleSource {
    GoogleSource::new("me@example.com")
        .with_api_base(&fake.base_url())
        .with_page_size(3)
        .with_default_region("DE".parse().ok())
}

fn exchange(fake: &FakeCloud) -> ExchangeSource {
    ExchangeSource::new("me@contoso.example")
        .with_api_base(&fake.base_url())
        .with_page_size(3)
        .with_default_region("DE".parse().ok())
}

fn book() -> (tempfile::TempDir, Contacts) {
    let dir = tempfile::tempdir().expect("temp dir");
    let book = Contacts::open(dir.path()).expect("open");
    (dir, book)
}

fn names(book: &Contacts, source: &Source) -> Vec<String> {
    let mut names: Vec<String> = book
        .store()
        .contacts_of(source)
        .expect("contacts")
        .into_iter()
        .map(|c| c.display_name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn google_full_sync_reads_every_page() {
    let fake = FakeCloud::start(3).expect("fake");
    seed_google(&fake);
    let (_dir, mut book) = book();
    let source = google(&fake);
    let report = book
        .sync_google(&source, &http(), &mut session(&fake))
        .await
        .expect("sync");
    assert_eq!(report.counts.added, 7);
    let pages = fake.api_requests();
    eprintln!("full sync: {} pages, {:?}", pages.len(), report.counts);
    assert_eq!(pages.len(), 3, "7 people in pages of 3");
    assert!(
        pages[0]
            .target
            .contains("personFields=names%2Cnicknames%2CphoneNumbers")
    );
    assert!(pages[1].target.contains("pageToken=page-3"));
    assert_eq!(names(&book, &source.source()).len(), 7);
    let state = book
        .sync_state(&source.source())
        .expect("state")
        .expect("synced");
    assert!(state.token.is_some_and(|t| t.starts_with("sync-")));
    assert_eq!(state.contacts, 7);
    let caller = book
        .lookup("+49 30 1000042", None)
        .expect("lookup")
        .expect("found");
    assert_eq!(caller.display_name, "Clara Müller");
    assert_eq!(caller.organization.as_deref(), Some("Example GmbH"));
    assert_eq!(caller.source_id.as_deref(), Some("people/c2"));
    let hits = book.search("mull", 10).expect("search");
    assert_eq!(hits.len(), 7);
}

#[tokio::test]
async fn google_incremental_sync_applies_changes_and_deletions() {
    let fake = FakeCloud::start(3).expect("fake");
    seed_google(&fake);
    let (_dir, mut book) = book();
    let source = google(&fake);
    let http = http();
    let mut session = session(&fake);
    book.sync_google(&source, &http, &mut session)
        .await
        .expect("first sync");
    let bernd = book
        .lookup("030 1000041", "DE".parse().ok())
        .expect("lookup")
        .expect("bernd");
    let bernd_id = bernd.id.expect("id");
    book.set_favourite(bernd_id, true).expect("favourite");

    fake.put_person("c1", person("Bernd", "Müller-Schmidt", "030 1000041"));
    fake.delete_person("c4");
    fake.put_person("c9", person("Heinz", "Neu", "0170 9999999"));
    let before = fake.api_requests().len();
    let report = book
        .sync_google(&source, &http, &mut session)
        .await
        .expect("second sync");
    eprintln!("incremental: {:?}", report.counts);
    assert_eq!(
        (
            report.counts.added,
            report.counts.updated,
            report.counts.removed
        ),
        (1, 1, 1)
    );
    let requests = fake.api_requests();
    assert_eq!(requests.len() - before, 1, "one page of changes");
    assert!(requests[before].target.contains("syncToken=sync-"));
    let all = names(&book, &source.source());
    assert_eq!(all.len(), 7);
    assert!(all.contains(&"Heinz Neu".to_owned()));
    assert!(!all.contains(&"Emma Müller".to_owned()));
    let bernd = book.get(bernd_id).expect("get").expect("still there");
    assert_eq!(bernd.display_name, "Bernd Müller-Schmidt");
    assert!(bernd.favourite, "favourite kept across an update");
    let deletions = book.store().deletions(&source.source()).expect("deletions");
    assert_eq!(deletions.len(), 1);
    assert_eq!(deletions[0].source_id, "people/c4");

    // Nothing changed: nothing to do.
    let report = book
        .sync_google(&source, &http, &mut session)
        .await
        .expect("third sync");
    assert_eq!(report.fetched, 0);
}

#[tokio::test]
async fn google_expired_sync_token_falls_back_to_a_full_sync() {
    let fake = FakeCloud::start(3).expect("fake");
    seed_google(&fake);
    let (_dir, mut book) = book();
    let source = google(&fake);
    let http = http();
    let mut session = session(&fake);
    book.sync_google(&source, &http, &mut session)
        .await
        .expect("first sync");
    let anna = book
        .lookup("030 1000040", "DE".parse().ok())
        .expect("lookup")
        .expect("anna");
    book.set_favourite(anna.id.expect("id"), true)
        .expect("favourite");

    fake.expire_sync_tokens();
    fake.delete_person("c6");
    let before = fake.api_requests().len();
    let report = book
        .sync_google(&source, &http, &mut session)
        .await
        .expect("resync");
    let requests = &fake.api_requests()[before..];
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    eprintln!("expired token: statuses {statuses:?}, {:?}", report.counts);
    assert_eq!(statuses, [410, 200, 200]);
    assert!(!requests[1].target.contains("syncToken"));
    assert_eq!((report.counts.unchanged, report.counts.removed), (6, 1));
    assert_eq!(names(&book, &source.source()).len(), 6);
    let anna_now = book.get(anna.id.expect("id")).expect("get").expect("kept");
    assert!(anna_now.favourite, "same contact, same id, favourite kept");
}

#[tokio::test]
async fn expired_access_token_is_refreshed_once() {
    let fake = FakeCloud::start(3).expect("fake");
    seed_google(&fake);
    let (_dir, mut book) = book();
    let source = google(&fake);
    let http = http();
    let mut session = session(&fake);
    book.sync_google(&source, &http, &mut session)
        .await
        .expect("first sync");
    fake.expire_access_tokens();
    fake.put_person("c8", person("Ida", "Neu", "030 1000048"));
    let before = fake.api_requests().len();
    let report = book
        .sync_google(&source, &http, &mut session)
        .await
        .expect("after refresh");
    assert_eq!(report.counts.added, 1);
    let statuses: Vec<u16> = fake.api_requests()[before..]
        .iter()
        .map(|r| r.status)
        .collect();
    eprintln!("401 then: {statuses:?}, grants {:?}", fake.token_grants());
    assert_eq!(statuses, [401, 200]);
    assert_eq!(fake.token_grants(), ["refresh_token", "refresh_token"]);
}

#[tokio::test]
async fn revoked_refresh_token_fails_without_changes() {
    let fake = FakeCloud::start(3).expect("fake");
    seed_google(&fake);
    let (_dir, mut book) = book();
    let mut session = OAuthSession::new(config(&fake), RefreshToken::new("rt-revoked"));
    let error = book
        .sync_google(&google(&fake), &http(), &mut session)
        .await
        .expect_err("refused");
    eprintln!("{error}");
    assert!(
        matches!(error, SyncError::Cloud(CloudError::Token(ref t)) if t.contains("invalid_grant"))
    );
    assert!(book.is_empty());
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after() {
    let fake = FakeCloud::start(3).expect("fake");
    seed_google(&fake);
    let (_dir, mut book) = book();
    fake.schedule([None, Some(Fault::RateLimited { retry_after: 1 })]);
    let started = Instant::now();
    let report = book
        .sync_google(&google(&fake), &http(), &mut session(&fake))
        .await
        .expect("sync");
    let took = started.elapsed();
    let statuses: Vec<u16> = fake.api_requests().iter().map(|r| r.status).collect();
    eprintln!("429: statuses {statuses:?}, took {took:?}");
    assert_eq!(statuses, [200, 429, 200, 200]);
    assert!(took >= Duration::from_secs(1), "waited Retry-After");
    let requests = fake.api_requests();
    assert!(requests[2].at.duration_since(requests[1].at) >= Duration::from_millis(990));
    assert_eq!(report.counts.added, 7);
}

#[tokio::test]
async fn rate_limit_longer_than_the_bound_fails_the_sync() {
    let fake = FakeCloud::start(3).expect("fake");
    seed_google(&fake);
    let (_dir, mut book) = book();
    fake.schedule([Some(Fault::RateLimited { retry_after: 3600 })]);
    let started = Instant::now();
    let error = book
        .sync_google(&google(&fake), &http(), &mut session(&fake))
        .await
        .expect_err("too long to wait");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        error,
        SyncError::Cloud(CloudError::RateLimited { retry_after: Some(d), .. }) if d == Duration::from_secs(3600)
    ));
}

#[tokio::test]
async fn a_sync_failing_half_way_keeps_what_was_stored() {
    let fake = FakeCloud::start(3).expect("fake");
    seed_google(&fake);
    let (_dir, mut book) = book();
    let source = google(&fake);
    let http = http();
    let mut session = session(&fake);
    book.sync_google(&source, &http, &mut session)
        .await
        .expect("first sync");
    let state = book
        .sync_state(&source.source())
        .expect("state")
        .expect("synced");

    fake.expire_sync_tokens();
    fake.delete_person("c0");
    fake.delete_person("c1");
    // 410 for the old token, first full page, then the second page fails.
    fake.schedule([
        None,
        None,
        Some(Fault::Status(503)),
        Some(Fault::Status(500)),
    ]);
    let error = book
        .sync_google(&source, &http, &mut session)
        .await
        .expect_err("fails");
    eprintln!("half way: {error}");
    assert!(matches!(
        error,
        SyncError::Cloud(CloudError::Status { status: 500, .. })
    ));
    assert_eq!(names(&book, &source.source()).len(), 7, "nothing removed");
    assert_eq!(
        book.sync_state(&source.source()).expect("state"),
        Some(state),
        "token kept"
    );

    let report = book
        .sync_google(&source, &http, &mut session)
        .await
        .expect("retry");
    assert_eq!(report.counts.removed, 2);
    assert_eq!(names(&book, &source.source()).len(), 5);
}

#[tokio::test]
async fn exchange_delta_sync_pages_changes_and_removals() {
    let fake = FakeCloud::start(3).expect("fake");
    seed_graph(&fake);
    let (_dir, mut book) = book();
    let source = exchange(&fake);
    let http = http();
    let mut session = session(&fake);
    let report = book
        .sync_exchange(&source, &http, &mut session)
        .await
        .expect("full");
    let requests = fake.api_requests();
    eprintln!("graph full: {} pages, {:?}", requests.len(), report.counts);
    assert_eq!(report.counts.added, 7);
    assert_eq!(requests.len(), 3);
    assert!(requests[0].target.contains("%24select=displayName"));
    assert!(requests[1].target.contains("$skiptoken="));
    let state = book
        .sync_state(&source.source())
        .expect("state")
        .expect("synced");
    let link = state.token.expect("delta link");
    assert!(link.starts_with(&fake.base_url()) && link.contains("$deltatoken="));
    let dora = book
        .lookup("+49 89 2000053", None)
        .expect("lookup")
        .expect("found");
    assert_eq!(dora.display_name, "Dieter Meier");
    assert_eq!(dora.organization.as_deref(), Some("Contoso"));
    assert_eq!(dora.title.as_deref(), Some("Buyer"));
    assert_eq!(dora.emails, ["dieter@contoso.example"]);

    fake.put_graph_contact("AAMk0", graph_contact("Anna", "Meier-Vogt", "089 2000050"));
    fake.delete_graph_contact("AAMk5");
    fake.put_graph_contact("AAMk7", graph_contact("Hanna", "Neu", "089 2000057"));
    let before = fake.api_requests().len();
    let report = book
        .sync_exchange(&source, &http, &mut session)
        .await
        .expect("delta");
    eprintln!("graph delta: {:?}", report.counts);
    assert_eq!(
        (
            report.counts.added,
            report.counts.updated,
            report.counts.removed
        ),
        (1, 1, 1)
    );
    assert!(fake.api_requests()[before].target.contains("$deltatoken="));
    let all = names(&book, &source.source());
    assert!(
        all.contains(&"Anna Meier-Vogt".to_owned()) && !all.contains(&"Frank Meier".to_owned())
    );
    assert_eq!(all.len(), 7);

    // An expired delta link: full round, nothing lost.
    fake.expire_sync_tokens();
    let before = fake.api_requests().len();
    let report = book
        .sync_exchange(&source, &http, &mut session)
        .await
        .expect("resync");
    let statuses: Vec<u16> = fake.api_requests()[before..]
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [410, 200, 200, 200]);
    assert_eq!((report.counts.unchanged, report.counts.removed), (7, 0));
}

#[tokio::test]
async fn exchange_refreshes_after_401() {
    let fake = FakeCloud::start(3).expect("fake");
    seed_graph(&fake);
    let (_dir, mut book) = book();
    let source = exchange(&fake);
    let http = http();
    let mut session = session(&fake);
    book.sync_exchange(&source, &http, &mut session)
        .await
        .expect("full");
    fake.expire_access_tokens();
    fake.delete_graph_contact("AAMk1");
    let report = book
        .sync_exchange(&source, &http, &mut session)
        .await
        .expect("delta");
    assert_eq!(report.counts.removed, 1);
    assert_eq!(fake.token_grants().len(), 2);
}

async fn browse(authorize_url: &str, tamper_state: bool) -> (u16, String) {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser");
    let answer = browser.get(authorize_url).send().await.expect("authorize");
    assert_eq!(answer.status().as_u16(), 302);
    let mut location = answer
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("location")
        .to_owned();
    assert!(location.starts_with("http://127.0.0.1:"));
    if tamper_state {
        let at = location.find("state=").expect("state") + "state=".len();
        location.replace_range(at.., "forged");
    }
    let page = browser.get(&location).send().await.expect("loopback");
    (page.status().as_u16(), page.text().await.expect("page"))
}

#[tokio::test]
async fn login_with_pkce_and_loopback_redirect() {
    let fake = FakeCloud::start(3).expect("fake");
    seed_google(&fake);
    let http = http();
    let flow = LoginFlow::start(config(&fake), &http).await.expect("start");
    let url = flow.authorize_url().to_owned();
    eprintln!("authorize: {url}");
    assert!(url.starts_with(&fake.auth_url()));
    for part in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "response_type=code",
        "redirect_uri=http%3A%2F%2F127.0.0.1%3A",
    ] {
        assert!(url.contains(part), "{part} in {url}");
    }
    let (session, (status, page)) = tokio::join!(
        flow.finish(&http, Duration::from_secs(20)),
        browse(&url, false)
    );
    let mut session = session.expect("login");
    assert_eq!(status, 200);
    assert!(page.contains("Signed in"));
    assert_eq!(fake.token_grants(), ["authorization_code"]);
    assert!(!format!("{session:?}").contains(session.refresh_token().expose()));

    let (dir, mut book) = book();
    let path = dir.path().join("oauth-google.json");
    let login = StoredLogin::new("me@example.com", &session);
    login.save(&path).expect("save");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let loaded = StoredLogin::load(&path).expect("load").expect("there");
    assert_eq!(loaded, login);
    assert_eq!(&loaded.refresh_token, session.refresh_token());
    assert_eq!(loaded.token_url, fake.token_url());
    assert!(!format!("{loaded:?}").contains(session.refresh_token().expose()));
    let report = book
        .sync_google(&google(&fake), &http, &mut session)
        .await
        .expect("sync");
    assert_eq!(report.counts.added, 7);
    assert_eq!(
        fake.token_grants(),
        ["authorization_code"],
        "access token from the login used"
    );
}

#[tokio::test]
async fn login_refuses_a_redirect_with_the_wrong_state() {
    let fake = FakeCloud::start(3).expect("fake");
    let http = http();
    let flow = LoginFlow::start(config(&fake), &http).await.expect("start");
    let url = flow.authorize_url().to_owned();
    let (result, (_, page)) = tokio::join!(
        flow.finish(&http, Duration::from_secs(20)),
        browse(&url, true)
    );
    assert!(matches!(result, Err(CloudError::StateMismatch)));
    assert!(page.contains("failed"));
    assert!(fake.token_grants().is_empty(), "no code exchanged");
}

/// A browser may open a connection it does not use at once (a
/// pre-connect); the redirect on the next connection is still taken,
/// within a login limit shorter than the wait for the idle one.
#[tokio::test]
async fn login_is_not_held_up_by_an_idle_connection() {
    let fake = FakeCloud::start(3).expect("fake");
    let http = http();
    let flow = LoginFlow::start(config(&fake), &http).await.expect("start");
    let url = flow.authorize_url().to_owned();
    let loopback = flow
        .redirect_uri()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let _idle = tokio::net::TcpStream::connect(&loopback)
        .await
        .expect("idle connection");
    let (session, (status, page)) = tokio::join!(
        flow.finish(&http, Duration::from_secs(5)),
        browse(&url, false)
    );
    session.expect("login");
    assert_eq!(status, 200);
    assert!(page.contains("Signed in"));
}

#[tokio::test]
async fn login_times_out_when_the_browser_never_comes_back() {
    let fake = FakeCloud::start(3).expect("fake");
    let http = http();
    let flow = LoginFlow::start(config(&fake), &http).await.expect("start");
    let result = flow.finish(&http, Duration::from_millis(300)).await;
    assert!(matches!(result, Err(CloudError::LoginTimedOut(_))));
}

#[tokio::test]
async fn plain_http_is_refused_unless_allowed() {
    let fake = FakeCloud::start(3).expect("fake");
    let strict = CloudHttp::new().expect("http");
    let error = LoginFlow::start(config(&fake), &strict)
        .await
        .expect_err("refused");
    assert!(matches!(error, CloudError::InsecureUrl(_)));
    let secret = RefreshToken::new("1//very-secret");
    assert_eq!(
        format!("{secret:?} {secret}"),
        "RefreshToken(<redacted>) <redacted>"
    );
}

#[tokio::test]
async fn the_token_endpoint_checks_the_pkce_verifier() {
    let fake = FakeCloud::start(3).expect("fake");
    let http = http();
    let flow = LoginFlow::start(config(&fake), &http).await.expect("start");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser");
    let answer = browser
        .get(flow.authorize_url())
        .send()
        .await
        .expect("authorize");
    let location = answer
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("location")
        .to_owned();
    let code = location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .expect("code")
        .to_owned();
    let post = |verifier: &str| {
        browser
            .post(fake.token_url())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=authorization_code&code={code}&client_id={FAKE_CLIENT_ID}\
                 &redirect_uri={}&code_verifier={verifier}",
                flow.redirect_uri().replace(':', "%3A").replace('/', "%2F")
            ))
            .send()
    };
    let wrong = post("a-verifier-that-does-not-match-the-challenge-at-all-0123")
        .await
        .expect("post");
    assert_eq!(wrong.status().as_u16(), 400);
    let body = wrong.text().await.expect("body");
    eprintln!("wrong verifier: {body}");
    assert!(body.contains("invalid_grant") && body.contains("PKCE"));
}

#[tokio::test]
async fn a_rotated_refresh_token_replaces_the_old_one() {
    let fake = FakeCloud::start(3).expect("fake");
    fake.rotate_refresh_tokens(true);
    seed_graph(&fake);
    let (_dir, mut book) = book();
    let source = exchange(&fake);
    let http = http();
    let first = RefreshToken::new(fake.issue_refresh_token());
    let mut session = OAuthSession::new(config(&fake), first.clone());
    book.sync_exchange(&source, &http, &mut session)
        .await
        .expect("sync");
    assert_ne!(session.refresh_token(), &first, "rotated");
    fake.expire_access_tokens();
    book.sync_exchange(&source, &http, &mut session)
        .await
        .expect("second refresh uses the new token");
    let mut stale = OAuthSession::new(config(&fake), first);
    assert!(matches!(
        stale.refresh(&http).await,
        Err(CloudError::Token(ref t)) if t.contains("invalid_grant")
    ));
}

#[tokio::test]
async fn google_photos_are_cached_and_placeholders_skipped() {
    let fake = FakeCloud::start(3).expect("fake");
    let base = fake.base_url();
    let mut with_photo = person("Anna", "Bild", "030 1000070");
    with_photo["photos"] =
        json!([{"url": format!("{base}/photo/200"), "metadata": {"primary": true}}]);
    fake.put_person("p0", with_photo);
    let mut placeholder = person("Bernd", "Bild", "030 1000071");
    placeholder["photos"] = json!([{"url": format!("{base}/photo/10"), "default": true}]);
    fake.put_person("p1", placeholder);
    let mut broken = person("Clara", "Bild", "030 1000072");
    broken["photos"] = json!([{"url": format!("{base}/photo/none")}]);
    fake.put_person("p2", broken);
    let (_dir, mut book) = book();
    let report = book
        .sync_google(&google(&fake), &http(), &mut session(&fake))
        .await
        .expect("sync");
    assert_eq!((report.counts.added, report.photos_rejected), (3, 1));
    let de = "DE".parse().ok();
    let anna = book
        .lookup("030 1000070", de)
        .expect("lookup")
        .expect("anna");
    let photo = anna.photo.as_ref().expect("photo");
    assert_eq!(photo.media_type, "image/jpeg");
    let path = book.photo_path(&anna).expect("cached");
    assert_eq!(std::fs::read(path).expect("file"), testkit::tiny_jpeg(200));
    let bernd = book
        .lookup("030 1000071", de)
        .expect("lookup")
        .expect("bernd");
    assert!(bernd.photo.is_none(), "placeholder not kept");
    let clara = book
        .lookup("030 1000072", de)
        .expect("lookup")
        .expect("clara");
    assert!(clara.photo.is_none(), "synced without the broken photo");
}

/// A photo host's blip during a sync loses no photo: the changed contact
/// keeps the photo it had, and the next sync reads the change again and
/// fetches the new photo.
#[tokio::test]
async fn a_photo_that_could_not_be_fetched_is_kept_and_fetched_next_sync() {
    let fake = FakeCloud::start(3).expect("fake");
    let base = fake.base_url();
    let mut anna = person("Anna", "Bild", "030 1000070");
    anna["photos"] = json!([{"url": format!("{base}/photo/200"), "metadata": {"primary": true}}]);
    fake.put_person("p0", anna.clone());
    let (_dir, mut book) = book();
    let (source, http, mut session) = (google(&fake), http(), session(&fake));
    book.sync_google(&source, &http, &mut session)
        .await
        .expect("first sync");
    let de = "DE".parse().ok();
    let photo_of = |book: &Contacts| {
        let anna = book
            .lookup("030 1000070", de)
            .expect("lookup")
            .expect("anna");
        std::fs::read(book.photo_path(&anna).expect("a photo")).expect("photo file")
    };
    assert_eq!(photo_of(&book), testkit::tiny_jpeg(200));

    // A new photo, and a second number; the photo host is down once.
    anna["photos"] = json!([{"url": format!("{base}/photo/100"), "metadata": {"primary": true}}]);
    anna["phoneNumbers"]
        .as_array_mut()
        .expect("numbers")
        .push(json!({"value": "030 1000079", "type": "work"}));
    fake.put_person("p0", anna);
    fake.fail_photos(1);
    let report = book
        .sync_google(&source, &http, &mut session)
        .await
        .expect("the sync goes on without the photo");
    assert_eq!(report.counts.updated, 1, "{report:?}");
    assert!(book.lookup("030 1000079", de).expect("lookup").is_some());
    assert_eq!(
        photo_of(&book),
        testkit::tiny_jpeg(200),
        "the old photo kept"
    );

    book.sync_google(&source, &http, &mut session)
        .await
        .expect("next sync");
    assert_eq!(
        photo_of(&book),
        testkit::tiny_jpeg(100),
        "the new photo fetched"
    );
}
