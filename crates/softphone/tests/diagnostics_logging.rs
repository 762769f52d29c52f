//! Log files: rotation by size, expiry by age, erasure, and the export
//! bundle that stays masked. (The global subscriber is tested in
//! `diagnostics_global.rs`, a process of its own.)

use std::fs::{self, File};
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use softphone::diagnostics::{
    RollingFile, Rotation, ScrubbingMakeWriter, erase_logs, export_logs, log_files, purge_old_logs,
    rfc3339,
};
use tracing_subscriber::fmt::MakeWriter as _;

const DAY: Duration = Duration::from_secs(86_400);

fn rotation(max_bytes: u64, max_files: usize, retention_days: u64) -> Rotation {
    Rotation {
        max_bytes,
        max_files,
        retention: DAY * u32::try_from(retention_days).expect("days fit"),
    }
}

fn age(path: &Path, days: u64) {
    let file = File::options()
        .append(true)
        .open(path)
        .expect("open to set its time");
    file.set_modified(SystemTime::now() - DAY * u32::try_from(days).expect("days fit"))
        .expect("set the modification time");
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read the directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn files_rotate_by_size_and_keep_max_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs").join("dialer.log");
    let file = Arc::new(RollingFile::open(&path, rotation(200, 2, 30)).unwrap());
    let writer = ScrubbingMakeWriter::new(Arc::clone(&file));
    for i in 0..21 {
        // 66 bytes a line once masked: three fit in 200.
        let padding = "x".repeat(23);
        writeln!(
            writer.make_writer(),
            "line {i:02} call to 0301234567 from 203.0.113.1 {padding}"
        )
        .unwrap();
    }
    assert_eq!(
        names(path.parent().unwrap()),
        ["dialer.log", "dialer.log.1", "dialer.log.2"]
    );
    for name in ["dialer.log", "dialer.log.1", "dialer.log.2"] {
        let text = fs::read_to_string(path.with_file_name(name)).unwrap();
        assert!(text.len() <= 200, "{name} has {} bytes", text.len());
        assert_eq!(text.lines().count(), 3, "{name}: {text}");
        assert!(
            !text.contains("0301234567") && !text.contains("203.0.113."),
            "{name}: {text}"
        );
    }
    // Newest lines in the current file, the oldest kept in .2; 0..11 dropped.
    let current = fs::read_to_string(&path).unwrap();
    assert!(
        current.starts_with("line 18 call to ********67 from 203.0.*.*"),
        "{current}"
    );
    assert!(
        fs::read_to_string(path.with_file_name("dialer.log.2"))
            .unwrap()
            .starts_with("line 12")
    );
    assert_eq!(log_files(&path).unwrap().len(), 3);
}

#[test]
fn expired_files_go_at_open_and_at_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dialer.log");
    for (name, days) in [
        ("dialer.log", 40),
        ("dialer.log.1", 31),
        ("dialer.log.2", 35),
        ("dialer.log.3", 2),
    ] {
        fs::write(dir.path().join(name), format!("{name}\n")).unwrap();
        age(&dir.path().join(name), days);
    }
    fs::write(dir.path().join("history.sqlite"), "not a log").unwrap();
    age(&dir.path().join("history.sqlite"), 400);

    let file = Arc::new(RollingFile::open(&path, rotation(100, 5, 30)).unwrap());
    // The stale current file and the expired rotated ones are gone; other
    // files in the directory are not touched.
    assert_eq!(
        names(dir.path()),
        ["dialer.log", "dialer.log.3", "history.sqlite"]
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "");

    age(&dir.path().join("dialer.log.3"), 31);
    let writer = ScrubbingMakeWriter::new(Arc::clone(&file));
    for _ in 0..3 {
        writeln!(writer.make_writer(), "{}", "x".repeat(40)).unwrap();
    }
    // The rotation shifted .3 to .4, then dropped it as expired.
    assert_eq!(
        names(dir.path()),
        ["dialer.log", "dialer.log.1", "history.sqlite"]
    );

    fs::write(dir.path().join("dialer.log.2"), "old\n").unwrap();
    age(&dir.path().join("dialer.log.2"), 10);
    assert_eq!(
        purge_old_logs(&path, 30).unwrap(),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        purge_old_logs(&path, 7).unwrap(),
        [dir.path().join("dialer.log.2")]
    );

    let erased = file.erase().unwrap();
    assert_eq!(erased.len(), 2);
    assert_eq!(names(dir.path()), ["dialer.log", "history.sqlite"]);
    assert_eq!(fs::read_to_string(&path).unwrap(), "");
    // Logging goes on into the emptied file.
    writeln!(writer.make_writer(), "after erase").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "after erase\n");
}

#[test]
fn zero_retention_keeps_no_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dialer.log");
    fs::write(dir.path().join("dialer.log.1"), "yesterday\n").unwrap();
    age(&dir.path().join("dialer.log.1"), 1);
    let _file = RollingFile::open(&path, rotation(1000, 3, 0)).unwrap();
    assert_eq!(names(dir.path()), ["dialer.log"]);
}

#[test]
fn export_bundle_is_masked_even_when_logs_were_written_unmasked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dialer.log");
    // As written with personal-data logging on (secrets were removed then
    // too; the bundle removes them again in any case).
    fs::write(
        path.with_file_name("dialer.log.1"),
        "2026-11-20T08:00:00.000001Z  INFO dialing to=sip:0301234567@pbx.example.com\n\
         2026-11-20T08:00:01.000001Z DEBUG sent INVITE from [2001:db8:5::9]:5060\n",
    )
    .unwrap();
    fs::write(
        &path,
        "2026-11-21T09:00:00.000001Z  INFO incoming From: \"Alice Smith\" <sip:alice@example.com>\n\
         2026-11-21T09:00:02.000001Z TRACE Authorization: Digest username=\"alice\", response=\"1f2e3d4c\"\n",
    )
    .unwrap();
    let bundle = dir.path().join("support").join("logs.txt");
    fs::create_dir_all(bundle.parent().unwrap()).unwrap();
    let export = export_logs(&path, &bundle).unwrap();
    assert_eq!(
        export.files,
        [path.with_file_name("dialer.log.1"), path.clone()]
    );
    assert_eq!(export.lines, 4);

    let text = fs::read_to_string(&bundle).unwrap();
    eprintln!("{text}");
    for leaked in [
        "0301234567",
        "2001:db8:5::9",
        "Alice Smith",
        "alice@",
        "1f2e3d4c",
        "username",
    ] {
        assert!(!text.contains(leaked), "{leaked} in the bundle:\n{text}");
    }
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("# softphone service logs, exported "));
    assert!(lines[1].starts_with("===== dialer.log.1 ("), "{}", lines[1]);
    assert_eq!(
        lines[2],
        "2026-11-20T08:00:00.000001Z  INFO dialing to=sip:********67@pbx.example.com"
    );
    assert_eq!(
        lines[3],
        "2026-11-20T08:00:01.000001Z DEBUG sent INVITE from [2001:db8:*]:5060"
    );
    assert!(lines[4].starts_with("===== dialer.log ("), "{}", lines[4]);
    assert_eq!(
        lines[5],
        "2026-11-21T09:00:00.000001Z  INFO incoming From: \"A. S.\" <sip:***ce@example.com>"
    );
    assert_eq!(
        lines[6],
        "2026-11-21T09:00:02.000001Z TRACE Authorization: Digest ***"
    );
    // The originals are untouched, and no temporary file is left.
    assert!(fs::read_to_string(&path).unwrap().contains("Alice Smith"));
    assert_eq!(names(bundle.parent().unwrap()), ["logs.txt"]);

    assert_eq!(erase_logs(&path).unwrap().len(), 2);
    assert!(log_files(&path).unwrap().is_empty());
}

/// A writer into a buffer the test reads afterwards.
#[derive(Clone, Default)]
struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_formatter_with_colours_does_not_get_fields_past_the_scrubber() {
    let out = Shared::default();
    let sink = out.clone();
    // As the docs compose it, with the formatter's colours on: it puts
    // escape sequences between a field's name, its `=` and its value.
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(true)
        .with_writer(ScrubbingMakeWriter::new(move || sink.clone()))
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(
            to = %"203.0.113.25:5060",
            password = %"hunter2",
            caller = %"+49 30 1234567",
            "calling"
        );
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("calling"), "{text}");
    for secret in ["203.0.113.25", "hunter2", "1234567"] {
        assert!(!text.contains(secret), "{secret} in {text:?}");
    }
}

/// A line as the formatter writes it, `days` ago.
fn line_from(days: u64) -> String {
    let at = SystemTime::now() - DAY * u32::try_from(days).expect("days fit");
    format!("{}  WARN dialer: a line\n", rfc3339(at))
}

#[test]
fn a_file_written_to_every_day_expires_by_its_oldest_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dialer.log");
    // Written to yesterday, but its first line is 40 days old: expired.
    fs::write(&path, format!("{}{}", line_from(40), line_from(1))).unwrap();
    // A rotated file from 35 days ago to 2 days ago: expired too.
    fs::write(
        dir.path().join("dialer.log.1"),
        format!("{}{}", line_from(35), line_from(2)),
    )
    .unwrap();
    // A rotated file of 3 days ago stays.
    fs::write(dir.path().join("dialer.log.2"), line_from(3)).unwrap();
    let file = Arc::new(RollingFile::open(&path, rotation(1_000_000, 5, 30)).unwrap());
    assert_eq!(names(dir.path()), ["dialer.log", "dialer.log.2"]);
    assert_eq!(fs::read_to_string(&path).unwrap(), "");
    drop(file);

    // A current file whose first line is eight days old is rotated at the
    // next line (after a quarter of the 30-day retention), however small
    // it is, so its lines expire with it rather than with the newest line.
    // One two days old is not.
    fs::write(&path, line_from(2)).unwrap();
    let file = Arc::new(RollingFile::open(&path, rotation(1_000_000, 5, 30)).unwrap());
    writeln!(
        ScrubbingMakeWriter::new(Arc::clone(&file)).make_writer(),
        "today"
    )
    .unwrap();
    assert_eq!(names(dir.path()), ["dialer.log", "dialer.log.2"]);
    drop(file);
    let eight_days_ago = line_from(8);
    fs::write(&path, &eight_days_ago).unwrap();
    let file = Arc::new(RollingFile::open(&path, rotation(1_000_000, 5, 30)).unwrap());
    let writer = ScrubbingMakeWriter::new(Arc::clone(&file));
    writeln!(writer.make_writer(), "today").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "today\n");
    assert_eq!(
        fs::read_to_string(dir.path().join("dialer.log.1")).unwrap(),
        eight_days_ago
    );
    // A second line today stays in the same file.
    writeln!(writer.make_writer(), "later today").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "today\nlater today\n");
    // What the phone purges daily goes by the oldest line too.
    fs::write(
        dir.path().join("dialer.log.3"),
        format!("{}{}", line_from(9), line_from(0)),
    )
    .unwrap();
    // (The rotated eight-day-old line goes as well.)
    assert_eq!(
        purge_old_logs(&path, 7).unwrap(),
        [
            dir.path().join("dialer.log.1"),
            dir.path().join("dialer.log.3")
        ]
    );
    // A quiet current file whose only line is past the retention is
    // emptied by the purge, though nothing was written to rotate it.
    fs::write(&path, line_from(40)).unwrap();
    assert_eq!(
        purge_old_logs(&path, 30).unwrap(),
        std::slice::from_ref(&path)
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "");
}
