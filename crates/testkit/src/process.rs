//! Spawning a peer with a bounded lifetime, its work dir and its log.

use std::{
    env,
    ffi::OsString,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use tempfile::TempDir;

use crate::error::{PeerError, Result};

/// Set this environment variable (to anything) to keep every work dir after
/// the test, for reading configs and logs by hand.
pub const KEEP_ENV: &str = "TESTKIT_KEEP";

/// How long a stopped peer gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Finds `binary` in `PATH`, then in `/usr/sbin`, `/sbin` and
/// `/usr/local/sbin` (daemons live there and a test's `PATH` may lack them).
///
/// # Errors
///
/// [`PeerError::NotInstalled`] naming the binary and the Debian `package`.
pub fn find_binary(binary: &'static str, package: &'static str) -> Result<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/local/sbin"]
        .iter()
        .map(PathBuf::from);
    env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
        .ok_or(PeerError::NotInstalled { binary, package })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A temporary directory for one launch: configs, logs, recordings.
///
/// Removed on drop, unless [`KEEP_ENV`] is set or [`WorkDir::keep`] was called.
#[derive(Debug)]
pub struct WorkDir {
    dir: Option<TempDir>,
    path: PathBuf,
}

impl WorkDir {
    /// Creates `testkit-<peer>-XXXXXX` in the system temp dir.
    ///
    /// # Errors
    ///
    /// [`PeerError::Io`] when the directory cannot be created.
    pub fn new(peer: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("testkit-{peer}-"))
            .tempdir()
            .map_err(|e| PeerError::io("creating a work dir", e))?;
        let path = dir.path().to_path_buf();
        Ok(Self {
            dir: Some(dir),
            path,
        })
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory after drop and returns its path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.path.clone()
    }

    /// Writes `contents` to `name` inside the directory and returns the path.
    ///
    /// # Errors
    ///
    /// [`PeerError::Io`] when the file cannot be written.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| PeerError::io(format!("creating {}", parent.display()), e))?;
        }
        fs::write(&path, contents)
            .map_err(|e| PeerError::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if env::var_os(KEEP_ENV).is_some() {
            self.keep();
        }
    }
}

/// What to run, for [`PeerProcess::spawn`].
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// Name used in errors and in the log file name (`<name>.log`).
    pub name: &'a str,
    /// The program, usually from [`find_binary`].
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Working directory; the log file is written here too.
    pub work_dir: &'a Path,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// Hard upper bound on the peer's life.
    pub lifetime: Duration,
}

/// A running peer, started under coreutils `timeout` so that it dies after
/// its lifetime even when the test process hangs or is killed.
///
/// `timeout` puts itself and the peer in a new process group and forwards
/// SIGTERM to that group, so [`PeerProcess::stop`] (and drop) ends the peer and
/// every worker it forked, and nothing else.
#[derive(Debug)]
pub struct PeerProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    status: Option<ExitStatus>,
    children_cpu: Option<f64>,
}

impl PeerProcess {
    /// Starts the program with stdin closed and stdout and stderr appended to
    /// `<work_dir>/<name>.log`.
    ///
    /// # Errors
    ///
    /// [`PeerError::NotInstalled`] when coreutils `timeout` is missing,
    /// [`PeerError::Io`] when the process cannot be started.
    pub fn spawn(spec: SpawnSpec<'_>) -> Result<Self> {
        let timeout = find_binary("timeout", "coreutils")?;
        let log_path = spec.work_dir.join(format!("{}.log", spec.name));
        let log = File::create(&log_path)
            .map_err(|e| PeerError::io(format!("creating {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| PeerError::io("duplicating the log file handle", e))?;
        let seconds = spec.lifetime.as_secs().max(1);
        let child = Command::new(timeout)
            .arg(format!("--kill-after={}", STOP_GRACE.as_secs()))
            .arg(format!("{seconds}s"))
            .arg(&spec.program)
            .args(&spec.args)
            .current_dir(spec.work_dir)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| PeerError::io(format!("starting {}", spec.program.display()), e))?;
        Ok(Self {
            name: spec.name.to_owned(),
            child,
            log_path,
            status: None,
            children_cpu: None,
        })
    }

    /// The peer's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// PID of the `timeout` wrapper (the leader of the peer's process group).
    #[must_use]
    pub fn wrapper_pid(&self) -> u32 {
        self.child.id()
    }

    /// PID of the peer program itself, once the wrapper has started it.
    /// `None` after it exited.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        let w = self.child.id();
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let children = fs::read_to_string(format!("/proc/{w}/task/{w}/children"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()));
            if children.is_some() || self.status.is_some() || Instant::now() > deadline {
                return children;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The combined stdout and stderr log.
    #[must_use]
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        tail_lines(&self.log_path, lines)
    }

    /// Whether the peer is still running.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// The exit status if the peer has exited; never blocks.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let w = self.child.id();
        if let Ok(stat) = ProcStat::read(w)
            && stat.state == 'Z'
        {
            // The wrapper has exited but is not reaped, so its PID (and the
            // group id) cannot have been reused. Its reaped-children CPU time
            // is the peer's total; anything left in its group is ours.
            self.children_cpu = Some(stat.children_cpu_seconds());
            self.sweep_group(stat);
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.status = Some(status);
        }
        self.status
    }

    /// SIGKILLs whatever is left in the wrapper's process group. A signal
    /// that reaches the wrapper in the instant between its fork and its
    /// bookkeeping makes it exit without forwarding it; the peer would
    /// outlive it.
    fn sweep_group(&self, wrapper: ProcStat) {
        let w = self.child.id();
        if wrapper.process_group == w
            && let Some(group) = Pid::from_raw(w as i32)
        {
            let _ = kill_process_group(group, Signal::KILL);
        }
    }

    /// Waits up to `limit` for the peer to exit.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.poll_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU seconds (user + system) the peer used in total, known once it has
    /// exited and was reaped by its wrapper.
    #[must_use]
    pub fn total_cpu_seconds(&self) -> Option<f64> {
        self.children_cpu
    }

    /// Fails with [`PeerError::Exited`] if the peer is no longer running.
    ///
    /// # Errors
    ///
    /// [`PeerError::Exited`] with the log tail.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.poll_exit() {
            None => Ok(()),
            Some(status) => Err(self.exited_error(status)),
        }
    }

    pub(crate) fn exited_error(&self, status: ExitStatus) -> PeerError {
        PeerError::Exited {
            peer: self.name.clone(),
            status: status.to_string(),
            log_tail: self.log_tail(30),
        }
    }

    /// Stops the peer: SIGTERM to its process group, then SIGKILL after
    /// [`STOP_GRACE`]. Returns its exit status.
    ///
    /// # Errors
    ///
    /// [`PeerError::Io`] when the wrapper cannot be waited for.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.poll_exit() {
            return Ok(status);
        }
        let w = self.child.id();
        if let Some(pid) = Pid::from_raw(w as i32) {
            // The wrapper forwards SIGTERM to the peer and its workers.
            let _ = kill_process(pid, Signal::TERM);
            if self.wait_timeout(STOP_GRACE).is_none() {
                match ProcStat::read(w) {
                    Ok(stat) if stat.process_group == w => {
                        let _ = kill_process_group(pid, Signal::KILL);
                    }
                    _ => {
                        let _ = kill_process(pid, Signal::KILL);
                    }
                }
            }
        }
        let status = self
            .child
            .wait()
            .map_err(|e| PeerError::io(format!("waiting for {}", self.name), e))?;
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The last `lines` lines of a text file (lossy UTF-8); empty if unreadable.
#[must_use]
pub fn tail_lines(path: &Path, lines: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// CPU seconds (user + system) process `pid` has used so far, from
/// `/proc/PID/stat`. Children are not included; see
/// [`cpu_seconds_with_children`].
///
/// # Errors
///
/// [`PeerError::Io`] when the process does not exist (any more).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    Ok(ProcStat::read(pid)?.cpu_seconds())
}

/// Like [`cpu_seconds`], plus the CPU time of the children the process has
/// already waited for.
///
/// # Errors
///
/// [`PeerError::Io`] when the process does not exist (any more).
pub fn cpu_seconds_with_children(pid: u32) -> Result<f64> {
    let stat = ProcStat::read(pid)?;
    Ok(stat.cpu_seconds() + stat.children_cpu_seconds())
}

/// The fields of `/proc/PID/stat` the launchers use.
#[derive(Debug, Clone, Copy)]
struct ProcStat {
    state: char,
    process_group: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/stat");
        let text =
            fs::read_to_string(&path).map_err(|e| PeerError::io(format!("reading {path}"), e))?;
        Self::parse(&text).ok_or_else(|| {
            PeerError::io(
                format!("parsing {path}"),
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )
        })
    }

    fn parse(text: &str) -> Option<Self> {
        // The command name is in parentheses and may contain spaces.
        let after = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        Some(Self {
            state: fields.first()?.chars().next()?,
            process_group: u32::try_from(number(2)?).ok()?,
            utime: number(11)?,
            stime: number(12)?,
            cutime: number(13)?,
            cstime: number(14)?,
        })
    }

    fn cpu_seconds(&self) -> f64 {
        ticks_to_seconds(self.utime + self.stime)
    }

    fn children_cpu_seconds(&self) -> f64 {
        ticks_to_seconds(self.cutime + self.cstime)
    }
}

fn ticks_to_seconds(ticks: u64) -> f64 {
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    ticks as f64 / per_second as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parses_a_command_name_with_spaces_and_parentheses() {
        let line =
            "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 100 0 0";
        let stat = ProcStat::parse(line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.process_group, 4242);
        assert_eq!(
            (stat.utime, stat.stime, stat.cutime, stat.cstime),
            (250, 50, 7, 3)
        );
    }

    #[test]
    fn missing_binary_names_the_package() {
        let err = find_binary("testkit-no-such-program", "no-such-package").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("testkit-no-such-program"), "{text}");
        assert!(text.contains("apt-get install no-such-package"), "{text}");
    }

    #[test]
    fn cpu_time_grows_while_the_process_computes() {
        let me = std::process::id();
        let before = cpu_seconds(me).unwrap();
        let start = Instant::now();
        let mut x = 0u64;
        while cpu_seconds(me).unwrap() <= before && start.elapsed() < Duration::from_secs(5) {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        assert!(x != 1);
        assert!(cpu_seconds(me).unwrap() > before);
        assert!(cpu_seconds_with_children(me).unwrap() >= cpu_seconds(me).unwrap());
    }

    #[test]
    fn cpu_time_of_a_missing_process_is_an_error() {
        assert!(cpu_seconds(u32::MAX).is_err());
    }
}
