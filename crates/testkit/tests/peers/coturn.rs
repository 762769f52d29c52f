use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use testkit::{Coturn, PeerError, Protocol, is_listening};

#[test]
fn listens_on_udp_and_tcp_and_counts_relayed_traffic_of_turnutils() {
    let coturn = Coturn::start().unwrap();
    let port = coturn.addr().port();
    assert!(is_listening(Protocol::Udp, port) && is_listening(Protocol::Tcp, port));
    // coturn's own client and echo peer: 20 messages through the relay.
    let peer_port = testkit::free_port().unwrap().to_string();
    let mut peer = Command::new("timeout")
        .args(["20", "turnutils_peer", "-L", "127.0.0.1", "-p", &peer_port])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("timeout")
        .args([
            "25",
            "turnutils_uclient",
            "-u",
            "alice",
            "-w",
            "alice-secret",
            "-e",
            "127.0.0.1",
        ])
        .args([
            "-r",
            &peer_port,
            "-n",
            "10",
            "-m",
            "1",
            "-l",
            "100",
            "-p",
            &port.to_string(),
        ])
        .arg("127.0.0.1")
        .output()
        .unwrap();
    // SIGTERM to `timeout`, which forwards it to the peer it started.
    let pid = Pid::from_raw(i32::try_from(peer.id()).unwrap()).unwrap();
    let _ = kill_process(pid, Signal::TERM);
    let _ = peer.wait();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let ended = coturn
        .wait_for_ended_sessions("alice", Duration::from_secs(10))
        .unwrap();
    let relayed: u64 = ended
        .iter()
        .filter_map(|s| s.peer)
        .map(|u| u.sent_packets)
        .sum();
    assert!(relayed >= 10, "{ended:?}");
    assert_eq!(coturn.auth_failures(), 0);
}

#[test]
fn settings_with_odd_characters_are_refused() {
    let error = Coturn::builder()
        .with_rest_secret("has space")
        .start()
        .unwrap_err();
    assert!(matches!(error, PeerError::InvalidArgument(_)), "{error}");
}
