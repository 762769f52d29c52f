//! Service logs: a scrubbing writer under the `tracing` formatter, a
//! size-rotated file with an age limit, and the global set-up of both.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::error::LogError;
use super::files::{
    cutoff, file_error, oldest_line, remove_rotated_older_than, rfc3339, rotated_files,
};
use super::pii::set_log_personal_data;
use super::scrub::scrub;

/// Where logs go, how much is kept and whether personal data is masked.
///
/// ```
/// use softphone::diagnostics::LogConfig;
///
/// let privacy = config_export::Privacy::default();
/// let config = LogConfig::new("info")
///     .with_file("/var/tmp/softphone/softphone.log")
///     .with_privacy(&privacy); // 30 days, masked
/// assert_eq!(config.retention_days, 30);
/// assert!(!config.log_personal_data);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogConfig {
    /// The log file (rotated files sit beside it as `NAME.1` .. `NAME.N`);
    /// `None` logs to stderr.
    pub file: Option<PathBuf>,
    /// A file is rotated before it would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub max_files: usize,
    /// Files older than this many days are deleted at start and at each
    /// rotation; 0 keeps no old file.
    pub retention_days: u32,
    /// What to log, as an `EnvFilter` directive (`warn`,
    /// `softphone=debug,sip_tokio=trace`).
    pub filter: String,
    /// Write numbers, names and addresses unmasked (secrets stay removed).
    pub log_personal_data: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            file: None,
            max_bytes: 10 * 1024 * 1024,
            max_files: 5,
            retention_days: 30,
            filter: "warn".to_owned(),
            log_personal_data: false,
        }
    }
}

impl LogConfig {
    /// Stderr, the given filter, 10 MiB x 5 files, 30 days, masked.
    pub fn new(filter: impl Into<String>) -> Self {
        Self {
            filter: filter.into(),
            ..Self::default()
        }
    }

    /// Logs into `file` instead of stderr.
    #[must_use]
    pub fn with_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }

    /// Rotates at `max_bytes` and keeps `max_files` rotated files.
    #[must_use]
    pub fn with_rotation(mut self, max_bytes: u64, max_files: usize) -> Self {
        self.max_bytes = max_bytes;
        self.max_files = max_files;
        self
    }

    /// Deletes log files older than `days`.
    #[must_use]
    pub fn with_retention_days(mut self, days: u32) -> Self {
        self.retention_days = days;
        self
    }

    /// Writes personal data unmasked (the user's debug switch).
    #[must_use]
    pub fn with_log_personal_data(mut self, on: bool) -> Self {
        self.log_personal_data = on;
        self
    }

    /// Takes the retention and the personal-data switch from the
    /// configuration's `<privacy>`.
    #[must_use]
    pub fn with_privacy(mut self, privacy: &config_export::Privacy) -> Self {
        self.retention_days = privacy.log_retention_days;
        self.log_personal_data = privacy.log_personal_data;
        self
    }

    fn rotation(&self) -> Rotation {
        Rotation {
            max_bytes: self.max_bytes,
            max_files: self.max_files,
            retention: Duration::from_secs(u64::from(self.retention_days) * 86_400),
        }
    }
}

/// The warning written when personal data logging is on.
pub const PERSONAL_DATA_WARNING: &str = "personal data logging is on: numbers, names and addresses \
    are written unmasked (passwords and tokens are still removed)";

/// Installs the process's `tracing` subscriber: the formatter writes through
/// the scrubber ([`ScrubbingMakeWriter`]) into a [`RollingFile`] or stderr;
/// old files are purged first. Sets the process-wide personal-data switch
/// from the configuration, and when it is on writes a warning line whatever
/// the filter.
///
/// An application calls this once, early in `main`; libraries never do.
/// Keep the guard alive for as long as the program logs.
///
/// # Errors
///
/// [`LogError::InvalidFilter`], [`LogError::InvalidRotation`],
/// [`LogError::File`] when the log file cannot be opened, and
/// [`LogError::AlreadyInstalled`] when the process has a subscriber.
pub fn init_logging(config: LogConfig) -> Result<LogGuard, LogError> {
    let filter = EnvFilter::try_new(&config.filter).map_err(|e| LogError::InvalidFilter {
        filter: config.filter.clone(),
        reason: e.to_string(),
    })?;
    let file = match &config.file {
        Some(path) => Some(Arc::new(RollingFile::open(path, config.rotation())?)),
        None => None,
    };
    let installed = match &file {
        Some(file) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(ScrubbingMakeWriter::new(Arc::clone(file)))
            .try_init(),
        // No colours: the scrubber would take them out again.
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(ScrubbingMakeWriter::new(io::stderr))
            .try_init(),
    };
    installed.map_err(|_| LogError::AlreadyInstalled)?;
    set_log_personal_data(config.log_personal_data);
    if config.log_personal_data {
        let line = format!(
            "{}  WARN softphone::diagnostics: {PERSONAL_DATA_WARNING}\n",
            rfc3339(SystemTime::now())
        );
        // A warning that cannot be written is no reason to fail start-up.
        let _ = match &file {
            Some(file) => file.as_ref().write_all(line.as_bytes()),
            None => io::stderr().write_all(line.as_bytes()),
        };
    }
    Ok(LogGuard { file })
}

/// Keeps the log file open; flushes it to disk when dropped.
#[derive(Debug)]
pub struct LogGuard {
    file: Option<Arc<RollingFile>>,
}

impl LogGuard {
    /// The current log file, when logging to a file.
    #[must_use]
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref().map(RollingFile::path)
    }

    /// The log files on disk, oldest first (empty when logging to stderr).
    ///
    /// # Errors
    ///
    /// [`LogError::File`] when the directory cannot be read.
    pub fn files(&self) -> Result<Vec<PathBuf>, LogError> {
        match &self.file {
            Some(file) => super::files::log_files(file.path()),
            None => Ok(Vec::new()),
        }
    }

    /// Erases every log: empties the current file (logging goes on into it)
    /// and deletes the rotated ones. Returns the files deleted or emptied.
    ///
    /// # Errors
    ///
    /// [`LogError::File`] naming the file that could not be erased.
    pub fn erase(&self) -> Result<Vec<PathBuf>, LogError> {
        match &self.file {
            Some(file) => file.erase(),
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            let _ = file.sync();
        }
    }
}

/// When a [`RollingFile`] rotates and what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The file is rotated before it would grow past this many bytes (> 0).
    pub max_bytes: u64,
    /// Rotated files kept (`NAME.1` is the newest).
    pub max_files: usize,
    /// Files whose oldest line is older than this are deleted at open, at
    /// each rotation and by [`purge_old_logs`](super::purge_old_logs)
    /// (which empties the current file when its oldest line is). The file
    /// is also rotated once its oldest line is a quarter of this old (a
    /// day when this is 0), so a file's lines go at most that early.
    pub retention: Duration,
}

impl Rotation {
    /// How old the current file's oldest line may get before it rotates.
    fn age_limit(&self) -> Duration {
        if self.retention.is_zero() {
            // Nothing is kept past a restart; rotating every line would
            // keep nothing at all.
            Duration::from_secs(86_400)
        } else {
            // A quarter: the files kept (5 by default) still cover the
            // whole retention, and each goes at most a quarter early.
            self.retention / 4
        }
    }
}

/// A log file rotated by size (`NAME`, `NAME.1` .. `NAME.N`) with an age
/// limit, created readable by its owner only. Each write goes to disk
/// unbuffered, so a crash loses no line. Use it as a `MakeWriter` through
/// an `Arc` (`Arc<RollingFile>`), under [`ScrubbingMakeWriter`].
#[derive(Debug)]
pub struct RollingFile {
    path: PathBuf,
    rotation: Rotation,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    written: u64,
    /// When the oldest line of the file was written (`None`: empty).
    started: Option<SystemTime>,
}

impl RollingFile {
    /// Opens (appends to) `path`, creating its directory. Rotated files
    /// with lines older than the retention are deleted first, and so is
    /// the file itself when its oldest line is.
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidRotation`] for `max_bytes == 0`, [`LogError::File`]
    /// when the directory or file cannot be created or opened.
    pub fn open(path: impl Into<PathBuf>, rotation: Rotation) -> Result<Self, LogError> {
        let path = path.into();
        if rotation.max_bytes == 0 {
            return Err(LogError::InvalidRotation);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| file_error("create the log directory", dir, e))?;
        }
        let limit = cutoff(rotation.retention);
        remove_rotated_older_than(&path, limit)?;
        if let Ok(oldest) = oldest_line(&path)
            && oldest < limit
        {
            fs::remove_file(&path)
                .map_err(|e| file_error("delete the expired log file", &path, e))?;
        }
        let file = open_log(&path).map_err(|e| file_error("open the log file", &path, e))?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        let started = if written > 0 {
            oldest_line(&path).ok()
        } else {
            None
        };
        Ok(Self {
            path,
            rotation,
            state: Mutex::new(State {
                file,
                written,
                started,
            }),
        })
    }

    /// The current file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Empties the current file and deletes the rotated ones; returns them
    /// all.
    ///
    /// # Errors
    ///
    /// [`LogError::File`] naming the file that could not be erased.
    pub fn erase(&self) -> Result<Vec<PathBuf>, LogError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut erased = Vec::new();
        for (_, rotated) in rotated_files(&self.path)? {
            fs::remove_file(&rotated)
                .map_err(|e| file_error("delete the log file", &rotated, e))?;
            erased.push(rotated);
        }
        state
            .file
            .set_len(0)
            .map_err(|e| file_error("empty the log file", &self.path, e))?;
        state.written = 0;
        state.started = None;
        erased.push(self.path.clone());
        Ok(erased)
    }

    fn sync(&self) -> io::Result<()> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.file.sync_data()
    }

    fn write_record(&self, buf: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let len = buf.len() as u64;
        let now = SystemTime::now();
        let full = state.written.saturating_add(len) > self.rotation.max_bytes;
        let old = state.started.is_some_and(|started| {
            now.duration_since(started)
                .is_ok_and(|age| age >= self.rotation.age_limit())
        });
        if state.written > 0 && (full || old) {
            // A failed rotation keeps writing to the old file rather than
            // lose lines.
            if let Ok(file) = self.rotate() {
                state.file = file;
                state.written = 0;
                state.started = None;
            }
        }
        state.file.write_all(buf)?;
        state.written = state.written.saturating_add(len);
        state.started.get_or_insert(now);
        Ok(())
    }

    /// Shifts `NAME.k` to `NAME.k+1` (dropping those past `max_files`),
    /// `NAME` to `NAME.1`, deletes expired files and opens a new `NAME`.
    fn rotate(&self) -> io::Result<File> {
        let rotated = rotated_files(&self.path).map_err(io::Error::other)?;
        for (index, file) in rotated.iter().rev() {
            if *index >= self.rotation.max_files {
                fs::remove_file(file)?;
            } else {
                fs::rename(file, numbered(&self.path, index + 1))?;
            }
        }
        if self.rotation.max_files == 0 {
            fs::remove_file(&self.path)?;
        } else {
            fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        remove_rotated_older_than(&self.path, cutoff(self.rotation.retention))
            .map_err(io::Error::other)?;
        open_log(&self.path)
    }
}

impl Write for &RollingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_record(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `NAME.index` beside `path`.
pub(crate) fn numbered(path: &Path, index: usize) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{index}"));
    path.with_file_name(name)
}

/// Appends, so that writes after an erase (`set_len(0)`) start at 0.
fn open_log(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

/// A `MakeWriter` that runs everything written through [`scrub`] before it
/// reaches the inner writer: the safety net under log statements that
/// forgot [`Pii`](super::Pii). Terminal escape sequences (the colours a
/// formatter with ANSI on puts between a field's name, its `=` and its
/// value) are taken out first, as they would hide fields from the
/// scrubber. Compose it into your own subscriber:
///
/// ```
/// use softphone::diagnostics::ScrubbingMakeWriter;
///
/// let subscriber = tracing_subscriber::fmt()
///     .with_writer(ScrubbingMakeWriter::new(std::io::stderr))
///     .finish();
/// # let _ = subscriber;
/// ```
#[derive(Debug, Clone)]
pub struct ScrubbingMakeWriter<M> {
    inner: M,
}

impl<M> ScrubbingMakeWriter<M> {
    /// Scrubs what goes into `inner`.
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for ScrubbingMakeWriter<M> {
    type Writer = ScrubbingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter::new(self.inner.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        ScrubbingWriter::new(self.inner.make_writer_for(meta))
    }
}

/// Scrubs complete lines on their way to `W`; a partial line waits for its
/// end, or for the writer to be flushed or dropped.
#[derive(Debug)]
pub struct ScrubbingWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> ScrubbingWriter<W> {
    /// Scrubs what goes into `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }

    fn emit(&mut self, record: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(record);
        let plain = strip_escapes(&text);
        self.inner.write_all(scrub(&plain).as_bytes())
    }

    fn emit_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.emit(&pending)
    }
}

impl<W: Write> Write for ScrubbingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatter hands over a whole event ending in a newline: the
        // common case needs no copy.
        if self.pending.is_empty() && buf.ends_with(b"\n") {
            self.emit(buf)?;
            return Ok(buf.len());
        }
        self.pending.extend_from_slice(buf);
        if self.pending.ends_with(b"\n") {
            self.emit_pending()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit_pending()?;
        self.inner.flush()
    }
}

/// `text` without terminal escape sequences: CSI sequences (`ESC [`,
/// parameter and intermediate bytes from 0x20 to 0x3F, a final byte from
/// `@` to `~`) and any other `ESC` with the character after it. A line
/// break is never taken as part of one, so records stay apart.
fn strip_escapes(text: &str) -> Cow<'_, str> {
    if !text.contains('\u{1b}') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                while chars.next_if(|c| (' '..='?').contains(c)).is_some() {}
                chars.next_if(|c| ('@'..='~').contains(c));
            }
            Some('\n' | '\r') | None => {}
            Some(_) => {
                chars.next();
            }
        }
    }
    Cow::Owned(out)
}

impl<W: Write> Drop for ScrubbingWriter<W> {
    fn drop(&mut self) {
        let _ = self.emit_pending();
    }
}

#[cfg(test)]
mod escape_tests {
    use super::strip_escapes;

    #[test]
    fn escapes_go_and_line_breaks_stay() {
        assert_eq!(strip_escapes("\u{1b}[3mto\u{1b}[0m=1"), "to=1");
        assert_eq!(strip_escapes("a\u{1b}\nb"), "a\nb");
        // An unterminated sequence ends at the first byte that cannot be
        // part of it.
        assert_eq!(strip_escapes("a\u{1b}[12\nb"), "a\nb");
        assert_eq!(strip_escapes("a\u{1b}(Bc"), "aBc");
        assert_eq!(strip_escapes("plain"), "plain");
    }
}
