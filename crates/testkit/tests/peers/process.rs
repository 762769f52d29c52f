use std::{
    path::Path,
    time::{Duration, Instant},
};

use testkit::{PeerProcess, Scenario, Sipp, SpawnSpec, WorkDir};

fn is_alive(pid: u32) -> bool {
    // a zombie has finished running; only its parent has not reaped it yet
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// A signal is delivered asynchronously: give the process a moment to die.
fn is_dead_soon(pid: u32) -> bool {
    let start = Instant::now();
    while is_alive(pid) {
        if start.elapsed() > Duration::from_secs(2) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn sleeper(dir: &Path, lifetime: Duration) -> PeerProcess {
    PeerProcess::spawn(SpawnSpec {
        name: "sleep",
        program: testkit::find_binary("sleep", "coreutils").unwrap(),
        args: vec!["60".into()],
        work_dir: dir,
        env: Vec::new(),
        lifetime,
    })
    .unwrap()
}

#[test]
fn a_peer_dies_at_the_end_of_its_lifetime() {
    let dir = WorkDir::new("lifetime").unwrap();
    let mut process = sleeper(dir.path(), Duration::from_secs(1));
    let pid = process.pid().expect("sleep pid");
    let start = Instant::now();
    let status = process
        .wait_timeout(Duration::from_secs(10))
        .expect("ended by its lifetime bound");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(124), "coreutils timeout's exit code");
    assert!(is_dead_soon(pid));
}

#[test]
fn dropping_a_launcher_ends_the_process_it_started() {
    let dir = WorkDir::new("drop").unwrap();
    let process = sleeper(dir.path(), Duration::from_secs(60));
    let pid = process.pid().expect("sleep pid");
    let wrapper = process.wrapper_pid();
    assert!(is_alive(pid));
    drop(process);
    assert!(is_dead_soon(pid), "sleep {pid} survived the drop");
    assert!(is_dead_soon(wrapper));
}

#[test]
fn dropping_a_running_sipp_stops_it() {
    let uas = Sipp::new(Scenario::uas()).spawn().unwrap();
    let pid = uas.pid().expect("sipp pid");
    assert!(is_alive(pid));
    assert!(testkit::cpu_seconds(pid).is_ok());
    drop(uas);
    assert!(is_dead_soon(pid), "sipp {pid} survived the drop");
}

#[test]
fn readiness_by_log_line_and_its_timeout() {
    let dir = WorkDir::new("log-line").unwrap();
    let mut process = PeerProcess::spawn(SpawnSpec {
        name: "shell",
        program: testkit::find_binary("sh", "dash").unwrap(),
        args: vec![
            "-c".into(),
            "echo starting; sleep 0.2; echo ready now; sleep 30".into(),
        ],
        work_dir: dir.path(),
        env: Vec::new(),
        lifetime: Duration::from_secs(20),
    })
    .unwrap();
    testkit::wait_for_log_line(&mut process, "ready now", Duration::from_secs(5)).unwrap();
    let err = testkit::wait_for_log_line(&mut process, "never printed", Duration::from_millis(300))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, testkit::PeerError::NotReady { .. }), "{text}");
    assert!(
        text.contains("starting\nready now"),
        "the error carries the log tail: {text}"
    );
}

#[test]
fn a_peer_that_exits_early_is_reported_with_its_log() {
    let dir = WorkDir::new("early-exit").unwrap();
    let mut process = PeerProcess::spawn(SpawnSpec {
        name: "shell",
        program: testkit::find_binary("sh", "dash").unwrap(),
        args: vec!["-c".into(), "echo cannot bind; exit 3".into()],
        work_dir: dir.path(),
        env: Vec::new(),
        lifetime: Duration::from_secs(20),
    })
    .unwrap();
    let err = testkit::wait_until(&mut process, "a port", Duration::from_secs(5), || Ok(false))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, testkit::PeerError::Exited { .. }), "{text}");
    assert!(
        text.contains("exit status: 3") && text.contains("cannot bind"),
        "{text}"
    );
}
