use std::{process::Command, sync::Arc};

use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use testkit::{SERVER_NAMES, TestCa};

fn server_config(ca: &TestCa) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::from_pem_slice(ca.server().key_pem.as_bytes()).unwrap();
    let cert = CertificateDer::from(ca.server().cert_der.clone());
    Arc::new(
        ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap(),
    )
}

pub(crate) fn client_config(trusted: &TestCa) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(trusted.ca_cert_der().to_vec()))
        .unwrap();
    Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Runs a TLS handshake in memory; returns the client's error if any.
fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut client = ClientConnection::new(client, name).unwrap();
    let mut server = ServerConnection::new(server).unwrap();
    for _ in 0..20 {
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes).unwrap();
        }
        let mut input = &bytes[..];
        while !input.is_empty() {
            server.read_tls(&mut input).unwrap();
        }
        server.process_new_packets()?;
        let mut bytes = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut bytes).unwrap();
        }
        let mut input = &bytes[..];
        while !input.is_empty() {
            client.read_tls(&mut input).unwrap();
        }
        client.process_new_packets()?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn server_certificate_verifies_with_rustls_for_every_name() {
    let ca = TestCa::new().unwrap();
    for name in SERVER_NAMES {
        handshake(server_config(&ca), client_config(&ca), name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn server_certificate_is_refused_by_a_client_trusting_another_ca() {
    let ca = TestCa::new().unwrap();
    let other = TestCa::new().unwrap();
    let err = handshake(server_config(&ca), client_config(&other), "sip.test").unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}

#[test]
fn server_certificate_is_refused_for_a_name_it_does_not_carry() {
    let ca = TestCa::new().unwrap();
    let err = handshake(server_config(&ca), client_config(&ca), "example.org").unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}

#[test]
fn openssl_verifies_the_pem_files() {
    let ca = TestCa::new().unwrap();
    let openssl = testkit::find_binary("openssl", "openssl").unwrap();
    let output = Command::new(openssl)
        .args(["verify", "-purpose", "sslserver", "-CAfile"])
        .arg(ca.ca_cert_path())
        .arg(&ca.server().cert_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && text.contains(": OK"), "{text}");
    assert!(ca.server().key_path.is_file());
}
