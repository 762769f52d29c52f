//! TurnSocket against a real coturn on 127.0.0.1 (launched by testkit):
//! allocations with long-term and REST credentials, datagrams relayed both
//! ways and counted by coturn, refused credentials, stale nonces.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a failed interop step should fail loudly; the numbers measured are printed"
)]

use std::net::SocketAddr;
use std::time::Duration;

use proxy_client::turn::{TurnConfig, TurnCredentials, TurnError};
use proxy_client::turn_socket::{TurnSocket, TurnSocketError, TurnTransport, rest_credentials};
use sip_tokio::TlsClientConfig;
use testkit::Coturn;
use tokio::net::UdpSocket;
use tokio::time::timeout;

const DATAGRAMS: usize = 100;
const LIMIT: Duration = Duration::from_secs(10);

fn datagram(tag: u8, i: usize) -> Vec<u8> {
    let mut d = vec![tag; 160];
    d[..8].copy_from_slice(&(i as u64).to_be_bytes());
    d
}

/// Sends DATAGRAMS from the plain peer to the relayed address and back, and
/// checks every one arrived from the right address.
async fn exchange_with_plain_peer(socket: &TurnSocket, peer: &UdpSocket) {
    let peer_addr = peer.local_addr().unwrap();
    let relayed = socket.relayed_addr();
    socket.add_peer(peer_addr).await.unwrap();

    // Peer -> relay -> us.
    for i in 0..DATAGRAMS {
        peer.send_to(&datagram(1, i), relayed).await.unwrap();
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut buf = [0u8; 2048];
    for i in 0..DATAGRAMS {
        let (n, from) = timeout(LIMIT, socket.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("datagram {i} did not arrive through the relay"))
            .unwrap();
        assert_eq!(from, peer_addr);
        assert_eq!(&buf[..n], datagram(1, i).as_slice());
    }

    // Us -> relay -> peer, which sees the relayed address as the source.
    for i in 0..DATAGRAMS {
        socket.send_to(&datagram(2, i), peer_addr).await.unwrap();
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for i in 0..DATAGRAMS {
        let (n, from) = timeout(LIMIT, peer.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("datagram {i} did not reach the peer"))
            .unwrap();
        assert_eq!(from, relayed, "the peer sees the relayed address");
        assert_eq!(&buf[..n], datagram(2, i).as_slice());
    }
}

fn assert_relayed(coturn: &Coturn, username: &str, at_least: u64) {
    let sessions = coturn
        .wait_for_ended_sessions(username, Duration::from_secs(10))
        .unwrap();
    let peer = sessions
        .iter()
        .filter_map(|s| s.peer)
        .fold((0, 0, 0, 0), |a, u| {
            (
                a.0 + u.received_packets,
                a.1 + u.sent_packets,
                a.2 + u.received_bytes,
                a.3 + u.sent_bytes,
            )
        });
    println!(
        "coturn peer side for {username}: received {} packets / {} bytes, sent {} packets / {} bytes",
        peer.0, peer.2, peer.1, peer.3
    );
    assert!(
        peer.0 >= at_least,
        "coturn relayed {} packets from peers",
        peer.0
    );
    assert!(
        peer.1 >= at_least,
        "coturn relayed {} packets to peers",
        peer.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_term_credentials_relay_100_datagrams_each_way_through_channels() {
    let coturn = Coturn::start().unwrap();
    let config = TurnConfig::new(
        coturn.addr(),
        TurnCredentials::long_term("alice", "alice-secret"),
    );
    let socket = TurnSocket::allocate(config).await.unwrap();
    assert!(coturn.relay_ports().contains(&socket.relayed_addr().port()));
    assert_eq!(socket.mapped_addr(), Some(socket.local_addr()));

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    exchange_with_plain_peer(&socket, &peer).await;
    let stats = socket.statistics();
    assert!(stats.channel_data_sent >= DATAGRAMS as u64, "{stats:?}");
    assert_eq!(stats.send_indications_sent, 0);
    assert!(stats.data_received >= DATAGRAMS as u64);
    socket.close().await;

    assert_relayed(&coturn, "alice", DATAGRAMS as u64);
    assert!(
        coturn
            .sessions()
            .iter()
            .any(|s| s.username == "alice" && s.allocated)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_credentials_relay_between_two_turn_sockets_with_send_indications() {
    let coturn = Coturn::builder()
        .with_rest_secret("rest-shared-secret")
        .start()
        .unwrap();
    let alice_creds = rest_credentials("rest-shared-secret", "alice", Duration::from_secs(600));
    let alice_name = alice_creds.username().to_owned();
    assert!(alice_name.ends_with(":alice"));
    let mut alice_config = TurnConfig::new(coturn.addr(), alice_creds);
    alice_config.use_channels = false; // CreatePermission + Send/Data indications
    let alice = TurnSocket::allocate(alice_config).await.unwrap();
    let bob = TurnSocket::allocate(TurnConfig::new(
        coturn.addr(),
        rest_credentials("rest-shared-secret", "bob", Duration::from_secs(600)),
    ))
    .await
    .unwrap();
    let (a, b) = (alice.relayed_addr(), bob.relayed_addr());
    assert_ne!(a, b);
    alice.add_peer(b).await.unwrap();
    bob.add_peer(a).await.unwrap();

    let mut buf = [0u8; 2048];
    for i in 0..DATAGRAMS {
        alice.send_to(&datagram(3, i), b).await.unwrap();
        let (n, from) = timeout(LIMIT, bob.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((from, &buf[..n]), (a, datagram(3, i).as_slice()));
        bob.send_to(&datagram(4, i), a).await.unwrap();
        let (n, from) = timeout(LIMIT, alice.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((from, &buf[..n]), (b, datagram(4, i).as_slice()));
    }
    let s = alice.statistics();
    assert!(
        s.send_indications_sent >= DATAGRAMS as u64 && s.channel_data_sent == 0,
        "{s:?}"
    );
    // Bob sends by Send indication until its ChannelBind is answered
    // (RFC 8656 §12), so under load the first few may go that way.
    let s = bob.statistics();
    assert!(
        s.channel_data_sent > 0
            && s.channel_data_sent + s.send_indications_sent >= DATAGRAMS as u64,
        "{s:?}"
    );
    alice.close().await;
    bob.close().await;
    assert_relayed(&coturn, &alice_name, DATAGRAMS as u64);
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_a_typed_error() {
    let coturn = Coturn::start().unwrap();
    let config = TurnConfig::new(coturn.addr(), TurnCredentials::long_term("alice", "WRONG"));
    let error = timeout(LIMIT, TurnSocket::allocate(config))
        .await
        .unwrap()
        .unwrap_err();
    // The message, which goes to logs, does not name the user.
    assert!(!error.to_string().contains("alice"), "{error}");
    match error {
        TurnSocketError::Turn(TurnError::Unauthorized { username, realm }) => {
            assert_eq!(
                (username.as_str(), realm.as_str()),
                ("alice", coturn.realm())
            );
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert!(coturn.auth_failures() >= 1, "{}", coturn.log_tail(20));

    // A REST credential signed with the wrong secret is refused the same way.
    let rest = Coturn::builder()
        .with_rest_secret("right-secret")
        .start()
        .unwrap();
    let config = TurnConfig::new(
        rest.addr(),
        rest_credentials("wrong-secret", "alice", Duration::from_secs(600)),
    );
    let error = timeout(LIMIT, TurnSocket::allocate(config))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, TurnSocketError::Turn(TurnError::Unauthorized { .. })),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_nonce_is_renewed_without_losing_the_allocation() {
    let coturn = Coturn::builder()
        .with_nonce_lifetime(Duration::from_secs(1))
        .start()
        .unwrap();
    let config = TurnConfig::new(
        coturn.addr(),
        TurnCredentials::long_term("bob", "bob-secret"),
    );
    let socket = TurnSocket::allocate(config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The nonce is stale now: the ChannelBind gets 438 and is sent again.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr: SocketAddr = peer.local_addr().unwrap();
    timeout(LIMIT, socket.add_peer(peer_addr))
        .await
        .unwrap()
        .unwrap();
    let log = std::fs::read_to_string(coturn.log_path()).unwrap();
    assert!(
        log.contains("438"),
        "coturn never answered 438:\n{}",
        coturn.log_tail(30)
    );
    socket.send_to(b"after 438", peer_addr).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = timeout(LIMIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"after 438"[..], socket.relayed_addr())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_over_tcp_and_tls_relays_100_datagrams_each_way() {
    let ca = testkit::TestCa::new().unwrap();
    let coturn = Coturn::builder().with_tls(&ca).start().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let tcp = TurnSocket::allocate_over(
        TurnTransport::Tcp,
        TurnConfig::new(
            coturn.addr(),
            TurnCredentials::long_term("alice", "alice-secret"),
        ),
    )
    .await
    .unwrap();
    exchange_with_plain_peer(&tcp, &peer).await;
    assert_eq!(
        tcp.statistics().retransmissions,
        0,
        "no retransmissions over TCP"
    );
    tcp.close().await;
    assert_relayed(&coturn, "alice", DATAGRAMS as u64);

    let tls = TlsClientConfig::with_ca_pem(ca.ca_cert_pem().as_bytes()).unwrap();
    let over_tls = TurnSocket::allocate_over(
        TurnTransport::Tls {
            server_name: "localhost".into(),
            tls,
        },
        TurnConfig::new(
            coturn.tls_addr().unwrap(),
            TurnCredentials::long_term("bob", "bob-secret"),
        ),
    )
    .await
    .unwrap();
    exchange_with_plain_peer(&over_tls, &peer).await;
    over_tls.close().await;
    assert_relayed(&coturn, "bob", DATAGRAMS as u64);

    // A server whose certificate is not trusted is refused.
    let other = testkit::TestCa::new().unwrap();
    let untrusted = TlsClientConfig::with_ca_pem(other.ca_cert_pem().as_bytes()).unwrap();
    let error = TurnSocket::allocate_over(
        TurnTransport::Tls {
            server_name: "localhost".into(),
            tls: untrusted,
        },
        TurnConfig::new(
            coturn.tls_addr().unwrap(),
            TurnCredentials::long_term("bob", "bob-secret"),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            TurnSocketError::Io {
                operation: "TLS handshake",
                ..
            }
        ),
        "{error:?}"
    );
}
