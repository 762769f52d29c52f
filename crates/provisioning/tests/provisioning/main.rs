//! Provisioning against a real HTTPS server on 127.0.0.1 (testkit's
//! `HttpServer` with a fresh `TestCa`): TLS trust, authentication, limits,
//! caching, includes, locks, atomic storage and re-checks.

#![allow(
    clippy::unwrap_used,
    reason = "shared test helpers fail the test loudly, like the tests themselves"
)]

mod documents;
mod fetch;
mod periodic;

use std::path::Path;

use provisioning::{Settings, Store};
use tempfile::TempDir;
use testkit::{HttpServer, Resource, TestCa};

/// A CA, an HTTPS server with its certificate, and an empty profile.
pub(crate) struct Fixture {
    pub(crate) ca: TestCa,
    pub(crate) server: HttpServer,
    pub(crate) profile: TempDir,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let ca = TestCa::new().unwrap();
        let server = HttpServer::https(ca.server()).start().unwrap();
        Self {
            ca,
            server,
            profile: tempfile::tempdir().unwrap(),
        }
    }

    /// Settings for `path` on the server, trusting only the test CA.
    pub(crate) fn settings(&self, path: &str) -> Settings {
        Settings::new(self.server.url(path))
            .with_ca_pem(self.ca.ca_cert_pem().as_bytes())
            .unwrap()
    }

    pub(crate) fn serve(&self, path: &str, resource: Resource) {
        self.server.serve(path, resource);
    }

    pub(crate) fn profile(&self) -> &Path {
        self.profile.path()
    }

    pub(crate) fn store(&self) -> Store {
        Store::open(self.profile()).unwrap()
    }

    /// The stored configuration file's bytes, if any.
    pub(crate) fn stored_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.store().config_path()).ok()
    }
}

/// A small valid document with one account.
pub(crate) fn document(user: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<softphone-config version="1">
  <account id="office">
    <user>{user}</user>
    <password>change-me</password>
    <registrar>sips:pbx.example.com</registrar>
    <transport>tls</transport>
  </account>
</softphone-config>
"#
    )
}
