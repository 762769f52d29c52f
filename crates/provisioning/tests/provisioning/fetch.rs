//! Transport: TLS trust, plain HTTP, authentication, redirects, size and
//! truncation, conditional requests.

use provisioning::{Credentials, ProvisionError, Settings, UnauthorizedReason, provision};
use testkit::{DigestAlgorithm, HttpServer, Resource, TestCa};

use crate::{Fixture, document};

#[tokio::test]
async fn https_with_the_given_ca_provisions_and_stores_the_configuration() {
    let f = Fixture::new();
    f.serve("/alice.xml", Resource::document(document("2001")));
    let outcome = provision(f.profile(), f.settings("/alice.xml"))
        .await
        .unwrap();
    assert!(outcome.changed);
    assert_eq!(outcome.config.accounts[0].user, "2001");
    assert_eq!(outcome.documents.len(), 1);
    assert!(!outcome.documents[0].from_cache);
    assert_eq!(f.store().load().unwrap(), Some(outcome.config.clone()));

    // The same document again changes nothing on disk.
    let before = f.stored_bytes().unwrap();
    let again = provision(f.profile(), f.settings("/alice.xml"))
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(f.stored_bytes().unwrap(), before);
    let request = &f.server.requests_for("/alice.xml")[0];
    assert!(
        request
            .header("User-Agent")
            .unwrap()
            .starts_with("softphone-rs-provisioning/")
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_a_tls_error() {
    let trusted = TestCa::new().unwrap();
    let other = TestCa::new().unwrap();
    let server = HttpServer::https(other.server())
        .serve("/a.xml", Resource::document(document("1")))
        .start()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let settings = Settings::new(server.url("/a.xml"))
        .with_ca_file(trusted.ca_cert_path())
        .unwrap();
    let error = provision(profile.path(), settings).await.unwrap_err();
    let ProvisionError::Tls { reason, .. } = &error else {
        panic!("expected a TLS error, got {error:?}");
    };
    assert!(reason.contains("certificate"), "{reason}");
    assert!(
        server.requests().is_empty(),
        "no request may pass an untrusted handshake"
    );
    assert!(!profile.path().join(provisioning::CONFIG_FILE).exists());
}

#[tokio::test]
async fn the_system_roots_do_not_trust_the_test_ca() {
    let f = Fixture::new();
    f.serve("/a.xml", Resource::document(document("1")));
    let settings = Settings::new(f.server.url("/a.xml")); // no CA given
    let error = provision(f.profile(), settings).await.unwrap_err();
    let ProvisionError::Tls { reason, .. } = &error else {
        panic!("expected a TLS error, got {error:?}");
    };
    assert!(reason.contains("certificate"), "{reason}");
    assert!(f.server.requests().is_empty());
}

#[tokio::test]
async fn plain_http_is_refused_unless_dangerous() {
    let server = HttpServer::plain()
        .serve("/a.xml", Resource::document(document("7")))
        .start()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let error = provision(profile.path(), Settings::new(server.url("/a.xml")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProvisionError::PlainHttpRefused { .. }),
        "{error:?}"
    );
    assert!(server.requests().is_empty(), "nothing may be sent in clear");

    let settings = Settings::new(server.url("/a.xml"))
        .dangerous()
        .allow_plain_http();
    let outcome = provision(profile.path(), settings).await.unwrap();
    assert_eq!(outcome.config.accounts[0].user, "7");
}

#[tokio::test]
async fn a_redirect_from_https_to_plain_http_is_refused() {
    let f = Fixture::new();
    let plain = HttpServer::plain()
        .serve("/a.xml", Resource::document(document("7")))
        .start()
        .unwrap();
    f.serve("/start.xml", Resource::redirect(302, plain.url("/a.xml")));
    let error = provision(f.profile(), f.settings("/start.xml"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProvisionError::PlainHttpRefused { .. }),
        "{error:?}"
    );
    assert!(plain.requests().is_empty());
}

#[tokio::test]
async fn basic_authentication_with_right_wrong_and_no_credentials() {
    let f = Fixture::new();
    f.serve(
        "/a.xml",
        Resource::document(document("2001")).with_basic_auth("alice", "s3cret"),
    );
    let right = f
        .settings("/a.xml")
        .with_credentials(Credentials::new("alice", "s3cret"));
    provision(f.profile(), right).await.unwrap();
    let log = f.server.requests_for("/a.xml");
    assert_eq!(log.iter().map(|r| r.status).collect::<Vec<_>>(), [401, 200]);
    assert_eq!(log[0].header("Authorization"), None);
    assert!(
        log[1]
            .header("Authorization")
            .unwrap()
            .starts_with("Basic ")
    );

    let before = f.stored_bytes();
    let wrong = f
        .settings("/a.xml")
        .with_credentials(Credentials::new("alice", "guess"));
    let error = provision(f.profile(), wrong).await.unwrap_err();
    assert!(
        matches!(
            error,
            ProvisionError::Unauthorized {
                reason: UnauthorizedReason::Rejected,
                ..
            }
        ),
        "{error:?}"
    );
    let error = provision(f.profile(), f.settings("/a.xml"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ProvisionError::Unauthorized {
                reason: UnauthorizedReason::NoCredentials,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(f.stored_bytes(), before);
}

#[tokio::test]
async fn digest_authentication_prefers_sha256_and_speaks_md5() {
    let f = Fixture::new();
    f.serve(
        "/both.xml",
        Resource::document(document("1")).with_digest_auth(
            "alice",
            "s3cret",
            &[DigestAlgorithm::Md5, DigestAlgorithm::Sha256],
        ),
    );
    f.serve(
        "/md5.xml",
        Resource::document(document("2")).with_digest_auth(
            "alice",
            "s3cret",
            &[DigestAlgorithm::Md5],
        ),
    );
    let credentials = Credentials::new("alice", "s3cret");
    let outcome = provision(
        f.profile(),
        f.settings("/both.xml")
            .with_credentials(credentials.clone()),
    )
    .await
    .unwrap();
    assert_eq!(outcome.config.accounts[0].user, "1");
    let answer = f.server.requests_for("/both.xml")[1].clone();
    assert_eq!(answer.status, 200);
    let authorization = answer.header("Authorization").unwrap();
    assert!(authorization.starts_with("Digest "), "{authorization}");
    assert!(
        authorization.contains("algorithm=SHA-256"),
        "{authorization}"
    );
    assert!(authorization.contains("qop=auth"), "{authorization}");
    assert!(!authorization.contains("s3cret"));

    let outcome = provision(
        f.profile(),
        f.settings("/md5.xml?x=1").with_credentials(credentials),
    )
    .await
    .unwrap();
    assert_eq!(outcome.config.accounts[0].user, "2");
    let answer = f.server.requests_for("/md5.xml")[1].clone();
    assert!(
        answer
            .header("Authorization")
            .unwrap()
            .contains("algorithm=MD5")
    );
    assert!(
        answer
            .header("Authorization")
            .unwrap()
            .contains("uri=\"/md5.xml?x=1\"")
    );

    let before = f.stored_bytes();
    let error = provision(
        f.profile(),
        f.settings("/both.xml")
            .with_credentials(Credentials::new("alice", "wrong")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            ProvisionError::Unauthorized {
                reason: UnauthorizedReason::Rejected,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(f.stored_bytes(), before);
}

#[tokio::test]
async fn credentials_are_not_sent_to_another_origin() {
    let f = Fixture::new();
    // localhost is the same server under another name: another origin.
    f.serve(
        "/start.xml",
        Resource::redirect(302, f.server.localhost_url("/doc.xml")).with_basic_auth("alice", "pw"),
    );
    f.serve(
        "/doc.xml",
        Resource::document(document("1")).with_basic_auth("alice", "pw"),
    );
    refused_across_origins(&f, "/start.xml", "/doc.xml").await;
    let start = f.server.requests_for("/start.xml");
    assert_eq!(
        start.iter().map(|r| r.status).collect::<Vec<_>>(),
        [401, 302]
    );
}

/// Provisions from `start` with credentials, which fails as cross-origin:
/// `other`, on the same server under the name localhost, was asked once
/// and got no credentials.
async fn refused_across_origins(f: &Fixture, start: &str, other: &str) {
    let settings = f
        .settings(start)
        .with_credentials(Credentials::new("alice", "pw"));
    let error = provision(f.profile(), settings).await.unwrap_err();
    assert!(
        matches!(
            error,
            ProvisionError::Unauthorized {
                reason: UnauthorizedReason::CrossOrigin,
                ..
            }
        ),
        "{error:?}"
    );
    let asked = f.server.requests_for(other);
    assert_eq!(asked.len(), 1);
    assert!(asked[0].header("Host").unwrap().starts_with("localhost:"));
    assert_eq!(asked[0].header("Authorization"), None);
}

/// A document may include one from another origin; the credentials for
/// the provisioning URL do not go there, even when it asks for them.
#[tokio::test]
async fn credentials_are_not_sent_to_an_included_document_of_another_origin() {
    let f = Fixture::new();
    let include = f.server.localhost_url("/other.xml");
    f.serve(
        "/root.xml",
        Resource::document(format!(
            "<softphone-config version=\"1\"><include>{include}</include></softphone-config>"
        ))
        .with_basic_auth("alice", "pw"),
    );
    f.serve(
        "/other.xml",
        Resource::document(document("2")).with_basic_auth("alice", "pw"),
    );
    refused_across_origins(&f, "/root.xml", "/other.xml").await;
    let root = f.server.requests_for("/root.xml");
    assert_eq!(root.last().unwrap().status, 200);
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit_and_loops_are_caught() {
    let f = Fixture::new();
    f.serve("/doc.xml", Resource::document(document("9")));
    f.serve("/r1", Resource::redirect(301, "/r2"));
    f.serve("/r2", Resource::redirect(307, f.server.url("/doc.xml")));
    let outcome = provision(f.profile(), f.settings("/r1")).await.unwrap();
    assert_eq!(outcome.config.accounts[0].user, "9");
    assert_eq!(outcome.documents[0].url, f.server.url("/r1"));

    f.serve("/loop-a", Resource::redirect(302, "/loop-b"));
    f.serve("/loop-b", Resource::redirect(302, "/loop-a"));
    let error = provision(f.profile(), f.settings("/loop-a"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProvisionError::RedirectLoop { url } if url.ends_with("/loop-a")),
        "{error:?}"
    );

    for i in 0..10 {
        f.serve(
            &format!("/chain{i}"),
            Resource::redirect(302, format!("/chain{}", i + 1)),
        );
    }
    f.server.clear_log();
    let error = provision(f.profile(), f.settings("/chain0").with_max_redirects(3))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProvisionError::TooManyRedirects { limit: 3, url } if url.ends_with("/chain4")),
        "{error:?}"
    );
    // The first request and three redirects followed: four requests.
    assert_eq!(f.server.requests().len(), 4);
}

#[tokio::test]
async fn truncated_bodies_are_errors_and_keep_the_stored_configuration() {
    let f = Fixture::new();
    f.serve("/a.xml", Resource::document(document("first")));
    provision(f.profile(), f.settings("/a.xml")).await.unwrap();
    let before = f.stored_bytes().unwrap();

    let full = document("second");
    f.serve("/a.xml", Resource::truncated(full.clone(), 100));
    let error = provision(f.profile(), f.settings("/a.xml"))
        .await
        .unwrap_err();
    match error {
        ProvisionError::Truncated {
            received, expected, ..
        } => {
            assert!(received <= 100, "{received}");
            assert_eq!(expected, Some(full.len() as u64));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_eq!(
        f.stored_bytes().unwrap(),
        before,
        "stored configuration changed"
    );
}

#[tokio::test]
async fn oversize_bodies_are_cut_off_with_or_without_a_length() {
    let f = Fixture::new();
    let limit = 64 * 1024;
    f.serve("/a.xml", Resource::document(document("ok")));
    provision(f.profile(), f.settings("/a.xml")).await.unwrap();
    let before = f.stored_bytes().unwrap();

    f.serve("/declared.xml", Resource::filler(10 * 1024 * 1024));
    f.serve("/chunked.xml", Resource::filler(10 * 1024 * 1024).chunked());
    for path in ["/declared.xml", "/chunked.xml"] {
        let started = std::time::Instant::now();
        let error = provision(f.profile(), f.settings(path).with_max_body_bytes(limit))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProvisionError::TooLarge { limit: l, .. } if l == limit),
            "{path}: {error:?}"
        );
        // Cut off at the limit, not after 10 MiB.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
    assert_eq!(f.stored_bytes().unwrap(), before);
}

#[tokio::test]
async fn an_etag_makes_the_next_check_conditional_and_304_uses_the_cache() {
    let f = Fixture::new();
    let date = "Tue, 01 Dec 2026 10:00:00 GMT";
    f.serve(
        "/a.xml",
        Resource::document(document("v1"))
            .with_etag("\"v1\"")
            .with_last_modified(date),
    );
    let first = provision(f.profile(), f.settings("/a.xml")).await.unwrap();
    assert_eq!(f.server.requests()[0].header("If-None-Match"), None);

    let second = provision(f.profile(), f.settings("/a.xml")).await.unwrap();
    let request = f.server.requests()[1].clone();
    assert_eq!(request.header("If-None-Match"), Some("\"v1\""));
    assert_eq!(request.header("If-Modified-Since"), Some(date));
    assert_eq!(request.status, 304);
    assert!(second.documents[0].from_cache);
    assert!(!second.changed);
    assert_eq!(second.config, first.config);

    // A new version is fetched in full and replaces the stored one.
    f.serve(
        "/a.xml",
        Resource::document(document("v2")).with_etag("\"v2\""),
    );
    let third = provision(f.profile(), f.settings("/a.xml")).await.unwrap();
    assert_eq!(f.server.requests()[2].status, 200);
    assert!(third.changed && !third.documents[0].from_cache);
    assert_eq!(third.config.accounts[0].user, "v2");
}

#[tokio::test]
async fn last_modified_alone_makes_the_check_conditional() {
    let f = Fixture::new();
    let date = "Wed, 02 Dec 2026 08:30:00 GMT";
    f.serve(
        "/a.xml",
        Resource::document(document("d")).with_last_modified(date),
    );
    provision(f.profile(), f.settings("/a.xml")).await.unwrap();
    let second = provision(f.profile(), f.settings("/a.xml")).await.unwrap();
    let request = f.server.requests()[1].clone();
    assert_eq!(request.header("If-Modified-Since"), Some(date));
    assert_eq!(request.header("If-None-Match"), None);
    assert_eq!(request.status, 304);
    assert!(second.documents[0].from_cache);
}

#[tokio::test]
async fn http_errors_and_a_dead_server_are_typed() {
    let f = Fixture::new();
    f.serve("/gone.xml", Resource::status(503));
    let error = provision(f.profile(), f.settings("/gone.xml"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProvisionError::Http { status: 503, .. }),
        "{error:?}"
    );
    let error = provision(f.profile(), f.settings("/missing.xml"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProvisionError::Http { status: 404, .. }),
        "{error:?}"
    );

    let port = testkit::free_port().unwrap();
    let settings = Settings::new(format!("https://127.0.0.1:{port}/a.xml"))
        .with_ca_pem(f.ca.ca_cert_pem().as_bytes())
        .unwrap();
    let error = provision(f.profile(), settings).await.unwrap_err();
    assert!(matches!(error, ProvisionError::Network { .. }), "{error:?}");
}
