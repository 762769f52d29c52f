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
