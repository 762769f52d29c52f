//! Log files on disk: listing, purging by age, erasing and exporting them
//! as one masked text bundle.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::LogError;
use super::scrub::mask_personal_data;
use super::secrets::redact_secrets;

/// What [`export_logs`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogExport {
    /// The bundle written.
    pub bundle: PathBuf,
    /// The log files it holds, oldest first.
    pub files: Vec<PathBuf>,
    /// Lines copied.
    pub lines: usize,
}

/// The log files of `log_file` that exist: its rotated files (`NAME.N`
/// .. `NAME.1`) and itself, oldest first.
///
/// # Errors
///
/// [`LogError::File`] when the directory cannot be read.
pub fn log_files(log_file: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut files: Vec<PathBuf> = rotated_files(log_file)?
        .into_iter()
        .rev()
        .map(|(_, path)| path)
        .collect();
    if log_file.is_file() {
        files.push(log_file.to_path_buf());
    }
    Ok(files)
}

/// Deletes the rotated files of `log_file` whose oldest line is more than
/// `retention_days` old (0: all of them), and empties the current file
/// when its oldest line is; returns what was deleted or emptied.
///
/// # Errors
///
/// [`LogError::File`] naming the file that could not be read or deleted.
pub fn purge_old_logs(log_file: &Path, retention_days: u32) -> Result<Vec<PathBuf>, LogError> {
    let retention = Duration::from_secs(u64::from(retention_days) * 86_400);
    let limit = cutoff(retention);
    let mut purged = remove_rotated_older_than(log_file, limit)?;
    // A quiet log may not have rotated: its lines past the retention go
    // too. Emptied, not deleted, as a logger may hold it open; it appends,
    // so later lines start at the new end.
    if retention_days > 0
        && let Ok(oldest) = oldest_line(log_file)
        && oldest < limit
    {
        OpenOptions::new()
            .write(true)
            .open(log_file)
            .and_then(|f| f.set_len(0))
            .map_err(|e| file_error("empty the expired log file", log_file, e))?;
        purged.push(log_file.to_path_buf());
    }
    Ok(purged)
}

/// Deletes `log_file` and its rotated files; returns what was deleted. For
/// a file the running logger writes to, use
/// [`LogGuard::erase`](super::LogGuard::erase) instead.
///
/// # Errors
///
/// [`LogError::File`] naming the file that could not be deleted.
pub fn erase_logs(log_file: &Path) -> Result<Vec<PathBuf>, LogError> {
    let files = log_files(log_file)?;
    for file in &files {
        fs::remove_file(file).map_err(|e| file_error("delete the log file", file, e))?;
    }
    Ok(files)
}

/// Writes the log files of `log_file` into one text file at `bundle`,
/// oldest first, each under a header line naming it, its size and when it
/// was last written. Every line is scrubbed again on the way, personal data
/// masked whatever the personal-data switch says, so the bundle can go to
/// support. The bundle is written to a temporary file first and readable by
/// its owner only.
///
/// # Errors
///
/// [`LogError::File`] naming the log file that could not be read or the
/// bundle that could not be written.
pub fn export_logs(log_file: &Path, bundle: &Path) -> Result<LogExport, LogError> {
    let files = log_files(log_file)?;
    let partial = bundle.with_extension("partial");
    let mut out =
        create_private(&partial).map_err(|e| file_error("create the log bundle", &partial, e))?;
    let written = (|| -> Result<usize, LogError> {
        let mut lines = 0;
        let write_error = |e| file_error("write the log bundle", &partial, e);
        writeln!(
            out,
            "# softphone service logs, exported {}; personal data masked, secrets removed",
            rfc3339(SystemTime::now())
        )
        .map_err(write_error)?;
        for file in &files {
            let data = fs::read(file).map_err(|e| file_error("read the log file", file, e))?;
            let modified = fs::metadata(file)
                .and_then(|m| m.modified())
                .map(rfc3339)
                .unwrap_or_else(|_| "unknown".to_owned());
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            writeln!(
                out,
                "===== {name} ({} bytes, last written {modified}) =====",
                data.len()
            )
            .map_err(write_error)?;
            for line in data.split(|b| *b == b'\n') {
                if line.is_empty() {
                    continue;
                }
                let text = String::from_utf8_lossy(line);
                let redacted = redact_secrets(&text);
                writeln!(out, "{}", mask_personal_data(&redacted)).map_err(write_error)?;
                lines += 1;
            }
        }
        out.sync_all().map_err(write_error)?;
        Ok(lines)
    })();
    let lines = match written {
        Ok(lines) => lines,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    fs::rename(&partial, bundle)
        .map_err(|e| file_error("move the log bundle into place", bundle, e))?;
    Ok(LogExport {
        bundle: bundle.to_path_buf(),
        files,
        lines,
    })
}

/// The rotated files of `log_file` (`NAME.k`), by `k` ascending.
pub(crate) fn rotated_files(log_file: &Path) -> Result<Vec<(usize, PathBuf)>, LogError> {
    let dir = match log_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(name) = log_file.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_error("read the log directory", dir, e)),
    };
    let mut rotated = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(index) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(name))
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|digits| digits.parse::<usize>().ok())
        else {
            continue;
        };
        rotated.push((index, entry.path()));
    }
    rotated.sort();
    Ok(rotated)
}

/// Deletes the rotated files of `log_file` whose oldest line is from
/// before `limit` (see [`oldest_line`]).
pub(crate) fn remove_rotated_older_than(
    log_file: &Path,
    limit: SystemTime,
) -> Result<Vec<PathBuf>, LogError> {
    let mut removed = Vec::new();
    for (_, file) in rotated_files(log_file)? {
        let oldest =
            oldest_line(&file).map_err(|e| file_error("read the age of the log file", &file, e))?;
        if oldest < limit {
            fs::remove_file(&file)
                .map_err(|e| file_error("delete the expired log file", &file, e))?;
            removed.push(file);
        }
    }
    Ok(removed)
}

/// When the oldest line of a log file was written: the time its first line
/// starts with (as the formatter writes it, `2026-11-28T03:54:13.525422Z`),
/// or, when it starts with none, when the file was last written. A file
/// written to for weeks is as old as its first line, not its last.
pub(crate) fn oldest_line(file: &Path) -> io::Result<SystemTime> {
    use std::io::Read as _;
    let modified = fs::metadata(file)?.modified()?;
    let mut head = Vec::with_capacity(32);
    // Unreadable (another owner's file): its time is what there is.
    if let Ok(f) = fs::File::open(file) {
        let _ = f.take(32).read_to_end(&mut head);
    }
    Ok(parse_rfc3339(&head).map_or(modified, |t| t.min(modified)))
}

/// The `YYYY-MM-DDTHH:MM:SS` at the start of `text` (UTC, as
/// [`rfc3339`] writes it); `None` when it does not start with one.
pub(crate) fn parse_rfc3339(text: &[u8]) -> Option<SystemTime> {
    let t = text.get(..19)?;
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = t.get(range)?;
        digits.iter().all(u8::is_ascii_digit).then(|| {
            digits
                .iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
        })
    };
    if t[4] != b'-' || t[7] != b'-' || t[10] != b'T' || t[13] != b':' || t[16] != b':' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days since 1970-01-01 from the civil date (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Now minus `retention`.
pub(crate) fn cutoff(retention: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(retention)
        .unwrap_or(UNIX_EPOCH)
}

pub(crate) fn file_error(action: &'static str, path: &Path, source: io::Error) -> LogError {
    LogError::File {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn create_private(path: &Path) -> io::Result<fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

/// `2026-11-26T10:20:30Z` (UTC, whole seconds): how log lines and the
/// export bundle write time, and what log expiry reads back.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_read_back() {
        for secs in [0, 951_782_400 + 3_723, 1_795_000_000, 4_102_444_799] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(rfc3339(t).as_bytes()), Some(t), "{secs}");
        }
        assert_eq!(
            parse_rfc3339(b"2026-11-28T03:54:13.525422Z  WARN x"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_838_053))
        );
        for bad in [
            &b"2026-13-28T03:54:13Z"[..],
            b"line 1",
            b"",
            b"2026-11-28 03:54:13Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None);
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T01:02:03Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(later), "2026-11-18T11:06:40Z");
    }
}
