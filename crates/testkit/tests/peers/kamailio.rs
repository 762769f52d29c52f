use std::{
    io::{Read, Write},
    net::{TcpStream, UdpSocket},
    time::Duration,
};

use rustls::{ClientConnection, StreamOwned, pki_types::ServerName};
use sha2::{Digest, Sha256};
use testkit::{DigestAlgorithm, Kamailio, Scenario, ShippedScenario, Sipp, SippTransport, TestCa};

fn register_with_sipp(kamailio: &Kamailio, user: &str, password: &str) -> testkit::SippOutcome {
    Sipp::new(Scenario::Shipped(ShippedScenario::UacRegisterAuth))
        .with_remote(kamailio.addr())
        .with_service(user)
        .with_auth(user, password)
        .with_timeout(Duration::from_secs(10))
        .run()
        .unwrap()
}

#[test]
fn answers_options_addressed_to_itself() {
    let kamailio = Kamailio::start().unwrap();
    assert_eq!(kamailio.options_ping().unwrap(), 200);
    assert!(kamailio.pid().is_some());
    let outcome = Sipp::new(Scenario::Shipped(ShippedScenario::UacOptionsServer))
        .with_remote(kamailio.addr())
        .run()
        .unwrap();
    assert!(outcome.is_success(), "{}", outcome.report());
}

#[test]
fn md5_register_succeeds_with_the_password_and_fails_without() {
    let kamailio = Kamailio::start().unwrap();
    let alice = kamailio.user("alice").unwrap().password.clone();

    let ok = register_with_sipp(&kamailio, "alice", &alice);
    assert!(
        ok.is_success(),
        "{}\n{}",
        ok.report(),
        kamailio.log_tail(20)
    );
    assert_eq!(ok.stats.successful_calls, 1);
    let contacts = kamailio.registered_contacts("alice").unwrap();
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert!(
        contacts[0].starts_with("sip:alice@127.0.0.1:"),
        "{contacts:?}"
    );

    let bad = register_with_sipp(&kamailio, "bob", "not-bobs-password");
    assert_eq!(bad.exit_code(), Some(1), "{}", bad.report());
    assert_eq!(bad.stats.failed_calls, 1, "{}", bad.report());
    assert!(kamailio.registered_contacts("bob").unwrap().is_empty());
}

#[test]
fn register_over_tcp_succeeds() {
    let kamailio = Kamailio::start().unwrap();
    let outcome = Sipp::new(Scenario::Shipped(ShippedScenario::UacRegisterAuth))
        .with_transport(SippTransport::TcpMono)
        .with_remote(kamailio.addr())
        .with_service("carol")
        .with_auth("carol", "carol-secret")
        .with_timeout(Duration::from_secs(10))
        .run()
        .unwrap();
    assert!(outcome.is_success(), "{}", outcome.report());
    let contacts = kamailio.registered_contacts("carol").unwrap();
    assert!(
        contacts.iter().any(|c| c.contains("transport=TCP")),
        "{contacts:?}"
    );
}

#[test]
fn call_is_forwarded_to_the_registered_callee() {
    let kamailio = Kamailio::start().unwrap();
    let bob_port = testkit::free_port().unwrap();
    // bob registers 127.0.0.1:<bob_port>, then a sipp callee answers there
    let registered = Sipp::new(Scenario::Shipped(ShippedScenario::UacRegisterAuth))
        .with_remote(kamailio.addr())
        .with_local_port(bob_port)
        .with_service("bob")
        .with_auth("bob", "bob-secret")
        .run()
        .unwrap();
    assert!(registered.is_success(), "{}", registered.report());
    drop(registered);
    let callee = Sipp::new(Scenario::Shipped(ShippedScenario::UasInviteAnswer))
        .with_local_port(bob_port)
        .with_timeout(Duration::from_secs(20))
        .spawn()
        .unwrap();
    let caller = Sipp::new(Scenario::Shipped(ShippedScenario::UacInvite))
        .with_remote(kamailio.addr())
        .with_service("bob")
        .with_key("caller", "alice")
        .with_auth("alice", "alice-secret")
        .with_call_duration(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(20))
        .run()
        .unwrap();
    let callee = callee.wait().unwrap();
    assert!(
        caller.is_success(),
        "{}\n{}",
        caller.report(),
        kamailio.log_tail(30)
    );
    assert!(callee.is_success(), "{}", callee.report());
}

#[test]
fn unregistered_callee_is_not_found() {
    let kamailio = Kamailio::start().unwrap();
    let caller = Sipp::new(Scenario::Shipped(ShippedScenario::UacInvite))
        .with_remote(kamailio.addr())
        .with_service("dave")
        .with_key("caller", "alice")
        .with_auth("alice", "alice-secret")
        .with_timeout(Duration::from_secs(10))
        .run()
        .unwrap();
    assert_eq!(caller.exit_code(), Some(1), "{}", caller.report());
    assert!(caller.errors.contains("404"), "{}", caller.report());
}

/// One REGISTER over UDP; returns the response text.
fn send_register(
    socket: &UdpSocket,
    kamailio: &Kamailio,
    cseq: u32,
    authorization: &str,
) -> String {
    let local = socket.local_addr().unwrap();
    let port = kamailio.sip_port();
    let request = format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKsha{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:dave@127.0.0.1:{port}>;tag=sha256test\r\n\
         To: <sip:dave@127.0.0.1:{port}>\r\n\
         Call-ID: sha256-register@testkit\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:dave@{local}>\r\n\
         {authorization}\
         Expires: 60\r\n\
         Content-Length: 0\r\n\r\n"
    );
    socket.send_to(request.as_bytes(), kamailio.addr()).unwrap();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, _) = socket.recv_from(&mut buf).expect("an answer to REGISTER");
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        if !text.starts_with("SIP/2.0 100") {
            return text;
        }
    }
}

fn parameter(header: &str, name: &str) -> String {
    let start = header.find(&format!("{name}=")).unwrap() + name.len() + 1;
    let rest = &header[start..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted[..quoted.find('"').unwrap()].to_owned(),
        None => rest
            .split([',', '\r', '\n', ' '])
            .next()
            .unwrap()
            .to_owned(),
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn sha256_challenge_is_answered_with_an_rfc8760_digest() {
    let kamailio = Kamailio::builder()
        .with_digest(DigestAlgorithm::Sha256)
        .start()
        .unwrap();
    assert_eq!(kamailio.digest_algorithm(), DigestAlgorithm::Sha256);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();

    let challenge = send_register(&socket, &kamailio, 1, "");
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let header = challenge
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .unwrap();
    assert!(header.contains("algorithm=SHA-256"), "{header}");
    let (realm, nonce) = (parameter(header, "realm"), parameter(header, "nonce"));

    let respond = |password: &str| {
        let uri = format!("sip:127.0.0.1:{}", kamailio.sip_port());
        let ha1 = sha256_hex(&format!("dave:{realm}:{password}"));
        let ha2 = sha256_hex(&format!("REGISTER:{uri}"));
        let response = sha256_hex(&format!("{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}"));
        format!(
            "Authorization: Digest username=\"dave\", realm=\"{realm}\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{response}\", algorithm=SHA-256, qop=auth, \
             nc=00000001, cnonce=\"0a4f113b\"\r\n"
        )
    };
    let wrong = send_register(&socket, &kamailio, 2, &respond("dave-wrong"));
    assert!(wrong.starts_with("SIP/2.0 401"), "{wrong}");
    let accepted = send_register(&socket, &kamailio, 3, &respond("dave-secret"));
    assert!(
        accepted.starts_with("SIP/2.0 200"),
        "{accepted}\n{}",
        kamailio.log_tail(20)
    );
    assert_eq!(kamailio.registered_contacts("dave").unwrap().len(), 1);
}

#[test]
fn tls_port_presents_the_test_ca_certificate() {
    let ca = TestCa::new().unwrap();
    let kamailio = Kamailio::builder().with_tls(&ca).start().unwrap();
    let port = kamailio.tls_port().unwrap();
    assert_ne!(port, kamailio.sip_port());

    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("sip.test").unwrap();
    let connection = ClientConnection::new(crate::ca::client_config(&ca), name).unwrap();
    let mut tls = StreamOwned::new(connection, tcp);
    let port_sip = kamailio.sip_port();
    // an OPTIONS over TLS proves the handshake and that SIP is served there
    let request = format!(
        "OPTIONS sip:127.0.0.1:{port_sip} SIP/2.0\r\n\
         Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:testkit@127.0.0.1>;tag=tls1\r\n\
         To: <sip:127.0.0.1:{port_sip}>\r\n\
         Call-ID: tls-options@testkit\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let len = tls.read(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..len]);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    let presented = tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
    assert_eq!(presented, ca.server().cert_der);
}

#[test]
fn stop_ends_the_process_group() {
    let kamailio = Kamailio::start().unwrap();
    let pid = kamailio.pid().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let port = kamailio.sip_port();
    kamailio.stop().unwrap();
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    };
    let start = std::time::Instant::now();
    while !gone(pid) && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(gone(pid), "kamailio {pid} still runs after stop");
    // its workers (same process group) are gone too: nobody holds the port
    assert!(!testkit::is_listening(testkit::Protocol::Udp, port));
}
