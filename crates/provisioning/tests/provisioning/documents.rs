//! Documents: bad ones leave the store alone, placeholders, includes, locks
//! and the export round trip.

use std::time::Duration;

use config_export::{Config, Export, Extra, Provisioning, SrtpPolicy};
use provisioning::{LocalOverrides, ProvisionError, Refusal, merge, provision};
use testkit::Resource;

use crate::{Fixture, document};

/// Provisions a good document first, so that there is something to keep.
async fn provisioned_fixture() -> (Fixture, Vec<u8>) {
    let f = Fixture::new();
    f.serve("/a.xml", Resource::document(document("good")));
    provision(f.profile(), f.settings("/a.xml")).await.unwrap();
    let before = f.stored_bytes().unwrap();
    (f, before)
}

#[tokio::test]
async fn malformed_xml_names_line_and_column_and_keeps_the_store() {
    let (f, before) = provisioned_fixture().await;
    let bad = "<?xml version=\"1.0\"?>\n<softphone-config version=\"1\">\n  <media>\n    <srtp>mandatory</srtp>\n  </medai>\n</softphone-config>\n";
    f.serve("/a.xml", Resource::document(bad));
    let error = provision(f.profile(), f.settings("/a.xml"))
        .await
        .unwrap_err();
    let ProvisionError::Document {
        line, column, url, ..
    } = &error
    else {
        panic!("expected a document error, got {error:?}");
    };
    assert_eq!((*line, *column), (Some(5), Some(3)), "{error}");
    assert!(url.ends_with("/a.xml"));
    assert!(error.to_string().contains("line 5, column 3"), "{error}");
    assert_eq!(
        f.stored_bytes().unwrap(),
        before,
        "stored configuration changed"
    );
}

#[tokio::test]
async fn a_document_cut_short_names_where_it_ends_and_keeps_the_store() {
    let (f, before) = provisioned_fixture().await;
    let full = document("cut");
    let cut = &full[..full.find("<registrar>").unwrap()];
    // A complete HTTP response whose XML stops in the middle.
    f.serve("/a.xml", Resource::document(cut));
    let error = provision(f.profile(), f.settings("/a.xml"))
        .await
        .unwrap_err();
    let ProvisionError::Document {
        line,
        column,
        source,
        ..
    } = &error
    else {
        panic!("expected a document error, got {error:?}");
    };
    assert_eq!(*line, Some(cut.lines().count()), "{error}");
    assert!(column.is_some());
    assert!(
        source.to_string().contains("unexpected end of document"),
        "{error}"
    );
    assert_eq!(f.stored_bytes().unwrap(), before);
}

#[tokio::test]
async fn an_invalid_value_names_its_element_and_keeps_the_store() {
    let (f, before) = provisioned_fixture().await;
    let bad = document("x").replace(
        "<transport>tls</transport>",
        "<transport>pigeon</transport>",
    );
    f.serve("/a.xml", Resource::document(bad));
    let error = provision(f.profile(), f.settings("/a.xml"))
        .await
        .unwrap_err();
    let ProvisionError::Document {
        line,
        column,
        source,
        ..
    } = &error
    else {
        panic!("expected a document error, got {error:?}");
    };
    assert_eq!((*line, *column), (Some(7), Some(5)));
    assert_eq!(source.path, "softphone-config/account[office]/transport");
    assert!(!error.to_string().contains("pigeon"));

    f.serve(
        "/a.xml",
        Resource::bytes(b"<softphone-config version=\"1\">\xff</softphone-config>".to_vec()),
    );
    let error = provision(f.profile(), f.settings("/a.xml"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProvisionError::NotUtf8 { .. }), "{error:?}");
    assert_eq!(f.stored_bytes().unwrap(), before);
}

/// A valid document that the application's own check refuses (here, as
/// the softphone would, an account whose sips: registrar is to be reached
/// over UDP) is not stored: the working configuration stays, and the error
/// gives the check's reason but not the token in the URL's query.
#[tokio::test]
async fn a_document_the_application_cannot_use_keeps_the_store() {
    let (f, before) = provisioned_fixture().await;
    let udp = document("udp").replace("<transport>tls</transport>", "<transport>udp</transport>");
    f.serve("/a.xml", Resource::document(udp));
    let settings = f
        .settings("/a.xml?token=s3cr3t-t0ken")
        .with_acceptance(|c| {
            match c
                .accounts
                .iter()
                .any(|a| a.transport == config_export::Transport::Udp)
            {
                true => Err("a sips: registrar cannot be reached over UDP".into()),
                false => Ok(()),
            }
        });
    let error = provision(f.profile(), settings).await.unwrap_err();
    assert!(
        matches!(&error, ProvisionError::Unusable { reason, .. } if reason.contains("UDP")),
        "{error:?}"
    );
    let shown = error.to_string();
    assert!(!shown.contains("s3cr3t-t0ken"), "{shown}");
    assert_eq!(
        f.stored_bytes().unwrap(),
        before,
        "stored configuration changed"
    );
}

#[tokio::test]
async fn placeholders_are_filled_in_percent_encoded() {
    let f = Fixture::new();
    f.serve(
        "/users/Zo%C3%AB%20O%27Neil/cfg.xml",
        Resource::document(document("zoe")),
    );
    let settings = provisioning::Settings::new(
        f.server
            .url("/users/{user}/cfg.xml?install={installation_id}"),
    )
    .with_ca_pem(f.ca.ca_cert_pem().as_bytes())
    .unwrap()
    .with_user("Zoë O'Neil");
    let outcome = provision(f.profile(), settings.clone()).await.unwrap();
    assert_eq!(outcome.config.accounts[0].user, "zoe");
    let id = f.store().installation_id().unwrap();
    let request = &f.server.requests()[0];
    assert_eq!(
        request.target,
        format!("/users/Zo%C3%AB%20O%27Neil/cfg.xml?install={id}")
    );

    provision(f.profile(), settings.with_installation_id("fixed-1"))
        .await
        .unwrap();
    assert!(f.server.requests()[1].target.ends_with("?install=fixed-1"));
}

const BASE: &str = r#"<softphone-config version="1">
  <tls><ca-file>/etc/softphone/company-ca.pem</ca-file></tls>
  <privacy><crash-reports>true</crash-reports></privacy>
  <provisioning><check-interval>600</check-interval></provisioning>
</softphone-config>"#;

const COMMON: &str = r#"<softphone-config version="1">
  <include>/base.xml</include>
  <account id="shared"><user>reception</user><registrar>sips:pbx.example.com</registrar></account>
  <media locked="true"><codec>PCMA</codec><srtp>mandatory</srtp></media>
</softphone-config>"#;

const ALICE: &str = r#"<softphone-config version="1">
  <include>common.xml</include>
  <account id="alice">
    <user>2001</user>
    <registrar locked="true">sips:pbx.example.com</registrar>
  </account>
  <privacy><crash-reports>false</crash-reports></privacy>
</softphone-config>"#;

#[tokio::test]
async fn includes_are_fetched_relative_and_laid_under_the_including_document() {
    let f = Fixture::new();
    f.serve("/base.xml", Resource::document(BASE));
    f.serve("/site/common.xml", Resource::document(COMMON));
    f.serve("/site/alice.xml", Resource::document(ALICE));
    let outcome = provision(f.profile(), f.settings("/site/alice.xml"))
        .await
        .unwrap();
    let config = &outcome.config;
    let urls: Vec<_> = outcome.documents.iter().map(|d| d.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            f.server.url("/site/alice.xml"),
            f.server.url("/site/common.xml"),
            f.server.url("/base.xml")
        ]
    );
    let ids: Vec<_> = config.accounts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["shared", "alice"]);
    assert_eq!(config.media.srtp, SrtpPolicy::Mandatory);
    assert_eq!(config.tls.trust.len(), 1);
    assert!(!config.privacy.crash_reports, "the including document wins");
    assert!(config.includes.is_empty());
    assert!(config.is_locked("softphone-config/media/codec[1]"));
    assert!(config.is_locked("softphone-config/account[alice]/registrar"));
    assert_eq!(outcome.check_interval, Duration::from_secs(600));
    assert_eq!(f.store().load().unwrap().as_ref(), Some(config));
}

#[tokio::test]
async fn include_depth_loops_and_failures_are_errors_that_keep_the_store() {
    let (f, before) = provisioned_fixture().await;
    for i in 0..6 {
        f.serve(
            &format!("/d{i}.xml"),
            Resource::document(format!(
                "<softphone-config version=\"1\"><include>/d{}.xml</include></softphone-config>",
                i + 1
            )),
        );
    }
    let error = provision(f.profile(), f.settings("/d0.xml").with_max_include_depth(2))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProvisionError::IncludeDepth { limit: 2, url } if url.ends_with("/d3.xml")),
        "{error:?}"
    );
    assert!(
        f.server.requests_for("/d3.xml").is_empty(),
        "nothing past the limit is fetched"
    );

    f.serve(
        "/l0.xml",
        Resource::document(
            "<softphone-config version=\"1\"><include>/l1.xml</include></softphone-config>",
        ),
    );
    f.serve(
        "/l1.xml",
        Resource::document(
            "<softphone-config version=\"1\"><include>l0.xml</include></softphone-config>",
        ),
    );
    let error = provision(f.profile(), f.settings("/l0.xml"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProvisionError::IncludeLoop { url } if url.ends_with("/l0.xml")),
        "{error:?}"
    );

    f.serve(
        "/broken.xml",
        Resource::document(
            "<softphone-config version=\"1\"><include>/nowhere.xml</include></softphone-config>",
        ),
    );
    let error = provision(f.profile(), f.settings("/broken.xml"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProvisionError::Http { status: 404, url } if url.ends_with("/nowhere.xml")),
        "{error:?}"
    );
    f.serve(
        "/bad-include.xml",
        Resource::document(
            "<softphone-config version=\"1\"><include>{mac}.xml</include></softphone-config>",
        ),
    );
    let error = provision(f.profile(), f.settings("/bad-include.xml"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProvisionError::UnknownPlaceholder { .. }),
        "{error:?}"
    );
    assert_eq!(f.stored_bytes().unwrap(), before);
}

#[tokio::test]
async fn locked_fields_cannot_be_overridden_locally() {
    let f = Fixture::new();
    f.serve("/site/alice.xml", Resource::document(ALICE));
    f.serve("/site/common.xml", Resource::document(COMMON));
    f.serve("/base.xml", Resource::document(BASE));
    provision(f.profile(), f.settings("/site/alice.xml"))
        .await
        .unwrap();
    let provisioned = f.store().load().unwrap().unwrap();

    let mut overrides = LocalOverrides::new();
    overrides
        .set(
            "softphone-config/account[alice]/registrar",
            "sip:elsewhere.example.net",
        )
        .set("softphone-config/media/srtp", "off")
        .set_list("softphone-config/media/codec", ["PCMU"])
        .set(
            "softphone-config/account[alice]/display-name",
            "Alice Martin",
        )
        .set("softphone-config/privacy/crash-reports", "true");
    let merged = merge(&provisioned, &overrides);
    assert_eq!(merged.config.accounts[1].registrar, "sips:pbx.example.com");
    assert_eq!(merged.config.media.srtp, SrtpPolicy::Mandatory);
    assert_eq!(merged.config.media.codecs, ["PCMA"]);
    assert_eq!(
        merged.config.accounts[1].display_name.as_deref(),
        Some("Alice Martin")
    );
    assert!(merged.config.privacy.crash_reports);
    let refused: Vec<_> = merged
        .refused
        .iter()
        .map(|r| (r.path.as_str(), r.reason.clone()))
        .collect();
    assert_eq!(
        refused,
        [
            ("softphone-config/account[alice]/registrar", Refusal::Locked),
            ("softphone-config/media/srtp", Refusal::Locked),
            ("softphone-config/media/codec", Refusal::Locked),
        ]
    );
    merged.config.validate().unwrap();
}

#[tokio::test]
async fn an_exported_configuration_provisions_to_an_equal_one() {
    let mut config =
        Config::from_xml(include_str!("../../../../docs/examples/provisioning.xml")).unwrap();
    config.provisioning = Some(Provisioning {
        check_interval: Some(3600),
        extra: Extra {
            elements: vec!["<x-window>night</x-window>".to_owned()],
            ..Extra::default()
        },
    });
    config
        .extra
        .elements
        .push("<x-branding><logo>https://example.com/l.png</logo></x-branding>".to_owned());
    config.accounts[1]
        .extra
        .attributes
        .push(("x-tenant".to_owned(), "7".to_owned()));
    config.locked.insert("softphone-config/privacy".to_owned());
    config.validate().unwrap();

    let f = Fixture::new();
    let export = Export::new(&config).plaintext().unwrap();
    f.serve(
        "/export.xml",
        Resource::document(export.document).with_etag("\"e1\""),
    );
    let outcome = provision(f.profile(), f.settings("/export.xml"))
        .await
        .unwrap();
    assert_eq!(outcome.config, config);
    assert_eq!(f.store().load().unwrap(), Some(config.clone()));
    assert_eq!(outcome.check_interval, Duration::from_secs(3600));

    // And again through the cache.
    let again = provision(f.profile(), f.settings("/export.xml"))
        .await
        .unwrap();
    assert!(again.documents[0].from_cache);
    assert_eq!(again.config, config);
}
