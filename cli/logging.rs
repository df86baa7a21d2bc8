//! The daemon's logs, made for years of unattended running.
//!
//! - stderr carries colour only when it is a terminal; under systemd
//!   (`JOURNAL_STREAM` set) events go to journald natively with their
//!   fields (`GSYNC_PATH=...`), or, without its socket, as stderr lines
//!   starting with a `<N>` syslog priority (journald's PRIORITY) and no
//!   timestamp of their own;
//! - `<state>/log/gsyncd.log` never holds escape codes, rotates daily or by
//!   size keeping the newest N files (`gsyncd.log.1` the most recent), and
//!   is reopened on SIGHUP so an external logrotate can move it away;
//! - control characters inside an event (a file name with a newline or an
//!   escape sequence) are written as `\n`, `\x1b`..., so one event is always
//!   one line;
//! - the file watcher's internal chatter is filtered unless RUST_LOG asks
//!   for it.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use tracing::Level;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Name of the log file in `<state>/log/`.
pub const LOG_NAME: &str = "gsyncd.log";

/// When the log file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Never (an external logrotate moves it and sends SIGHUP).
    Never,
    /// At the first write after midnight UTC.
    Daily,
    /// Before a write would make the file larger than this many bytes.
    Size(u64),
}

impl Rotation {
    /// Parses `never`, `daily`, or a size such as `64M`, `1G`, `500k`,
    /// `1048576`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "never" => return Ok(Self::Never),
            "daily" => return Ok(Self::Daily),
            _ => {}
        }
        let t = s.trim_end_matches(['b', 'B']).trim_end_matches(['i', 'I']);
        let (digits, mult) = match t.chars().last() {
            Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
            Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
            Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
            _ => (t, 1),
        };
        match digits.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Self::Size(n.saturating_mul(mult))),
            _ => bail!("--log-rotate {s}: expected never, daily or a size such as 64M"),
        }
    }
}

/// Days since the epoch (UTC), for daily rotation.
fn today() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// The log file: appends, rotates, reopens on request.
pub struct LogFile {
    path: PathBuf,
    rotation: Rotation,
    keep: usize,
    file: Option<File>,
    size: u64,
    day: u64,
    reopen: Arc<AtomicBool>,
}

impl LogFile {
    /// Opens (appending) `dir/gsyncd.log`.
    pub fn open(dir: &Path, rotation: Rotation, keep: usize) -> Result<Self> {
        let mut f = Self {
            path: dir.join(LOG_NAME),
            rotation,
            keep,
            file: None,
            size: 0,
            day: today(),
            reopen: Arc::new(AtomicBool::new(false)),
        };
        f.reopen_now()
            .with_context(|| format!("log file {}", f.path.display()))?;
        Ok(f)
    }

    /// Set to true to make the next write reopen the file (SIGHUP).
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }

    fn reopen_now(&mut self) -> std::io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata().map_or(0, |m| m.len());
        self.day = today();
        self.file = Some(file);
        Ok(())
    }

    fn rotated(&self, i: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{i}"));
        PathBuf::from(s)
    }

    /// gsyncd.log -> .1 -> .2 ... -> .keep (the oldest is removed).
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for i in (1..self.keep).rev() {
                let _ = std::fs::rename(self.rotated(i), self.rotated(i + 1));
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        self.reopen_now()
    }

    fn due(&self, incoming: usize) -> bool {
        match self.rotation {
            Rotation::Never => false,
            Rotation::Daily => today() != self.day && self.size > 0,
            Rotation::Size(max) => self.size > 0 && self.size + incoming as u64 > max,
        }
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.reopen.swap(false, Ordering::SeqCst) || self.file.is_none() {
            self.reopen_now()?;
        }
        if self.due(buf.len()) {
            self.rotate()?;
        }
        let line = escape_controls(buf, false);
        match self.file.as_mut() {
            Some(f) => f.write_all(&line)?,
            None => return Err(std::io::Error::other("log file closed")),
        }
        self.size += line.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

/// Escapes control characters so one event is one line: a trailing newline
/// stays, every other control byte becomes `\n`, `\r`, `\t` or `\xNN`
/// (ESC is kept when `keep_esc`, for colour on a terminal).
pub fn escape_controls(buf: &[u8], keep_esc: bool) -> std::borrow::Cow<'_, [u8]> {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let bad = |b: &u8| (*b < 0x20 || *b == 0x7f) && !(keep_esc && *b == 0x1b);
    if !body.iter().any(bad) {
        return std::borrow::Cow::Borrowed(buf);
    }
    let mut out = Vec::with_capacity(buf.len() + 16);
    for b in body {
        match *b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if bad(&c) => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
            c => out.push(c),
        }
    }
    if body.len() < buf.len() {
        out.push(b'\n');
    }
    std::borrow::Cow::Owned(out)
}

/// stderr with the same escaping.
struct Stderr {
    ansi: bool,
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(&escape_controls(buf, self.ansi))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Prefixes each event with its syslog priority for journald (`<3>` error
/// ... `<7>` trace) and leaves the rest to the default format.
struct JournalFormat<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalFormat<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prio = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{prio}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Targets whose logs are internal chatter at the level an operator runs.
const QUIET: &[(&str, &str)] = &[
    ("quinn", "warn"),
    ("quinn_proto", "warn"),
    ("rustls", "warn"),
    // The consensus library warns of every unreachable peer and backoff;
    // the node's own lines already say which peer is unreachable.
    ("openraft", "error"),
    ("notify", "error"),
    ("inotify", "error"),
    ("mio", "error"),
];

fn filter(level: &str) -> EnvFilter {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| level.to_string());
    let mut f = EnvFilter::try_new(&base).unwrap_or_else(|_| EnvFilter::new("info"));
    for (target, lvl) in QUIET {
        // RUST_LOG naming a target keeps the operator's choice for it.
        if !base.contains(target) {
            if let Ok(d) = format!("{target}={lvl}").parse() {
                f = f.add_directive(d);
            }
        }
    }
    f
}

/// Settings of the daemon's logging.
pub struct LogSettings<'a> {
    /// Level (RUST_LOG overrides).
    pub level: &'a str,
    /// Rotation of the file.
    pub rotation: Rotation,
    /// Rotated files kept.
    pub keep: usize,
}

/// What keeps logging alive: the writer thread's guard and the SIGHUP flag.
pub struct LogHandle {
    _guard: tracing_appender::non_blocking::WorkerGuard,
    reopen: Arc<AtomicBool>,
}

impl LogHandle {
    /// Reopens the log file on each SIGHUP (for logrotate), for the life of
    /// the process.
    pub fn reopen_on_sighup(&self) {
        use tokio::signal::unix::{signal, SignalKind};
        let flag = self.reopen.clone();
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        flag.store(true, Ordering::SeqCst);
                        tracing::info!("SIGHUP: log file reopened");
                    }
                });
            }
            Err(e) => tracing::warn!("cannot watch SIGHUP: {e}"),
        }
    }
}

/// Installs the daemon's subscriber: stderr and `<state>/log/gsyncd.log`.
pub fn init(state: &Path, s: &LogSettings<'_>) -> Result<LogHandle> {
    let log_dir = state.join("log");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("log dir {}", log_dir.display()))?;
    let file = LogFile::open(&log_dir, s.rotation, s.keep)?;
    let reopen = file.reopen_flag();
    let (file, guard) = tracing_appender::non_blocking(file);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = !journald && std::io::stderr().is_terminal();
    // Under systemd, events go to journald natively when its socket is
    // there: each field of an event (path, peer, volume...) becomes a
    // journal field (GSYNC_PATH=...), searchable with journalctl.
    let native = journald
        .then(|| {
            tracing_journald::layer()
                .ok()
                .map(|l| l.with_field_prefix(Some("GSYNC".into())))
        })
        .flatten();
    let stderr_layer = if let Some(native) = native {
        native.with_filter(filter(s.level)).boxed()
    } else if journald {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(|| Stderr { ansi: false })
            .event_format(JournalFormat(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .with_filter(filter(s.level))
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(move || Stderr { ansi })
            .with_filter(filter(s.level))
            .boxed()
    };
    tracing_subscriber::registry()
        .with(crate::metrics::CountLayer)
        .with(stderr_layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(file)
                .with_filter(filter(s.level)),
        )
        .try_init()
        .map_err(|e| anyhow!("logging: {e}"))?;
    Ok(LogHandle {
        _guard: guard,
        reopen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_settings_parse() {
        let cases = [
            ("never", Some(Rotation::Never)),
            ("daily", Some(Rotation::Daily)),
            ("64M", Some(Rotation::Size(64 << 20))),
            ("64MiB", Some(Rotation::Size(64 << 20))),
            ("1g", Some(Rotation::Size(1 << 30))),
            ("500k", Some(Rotation::Size(500 << 10))),
            ("4096", Some(Rotation::Size(4096))),
            ("0", None),
            ("weekly", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(Rotation::parse(s).ok(), want, "{s}");
        }
    }

    #[test]
    fn control_characters_are_escaped_and_the_final_newline_kept() {
        let cases: [(&[u8], bool, &[u8]); 5] = [
            (b"plain line\n", false, b"plain line\n"),
            (b"path a\nb\n", false, b"path a\\nb\n"),
            (b"x\x1b[31mred\n", false, b"x\\x1b[31mred\n"),
            (b"x\x1b[31mred\n", true, b"x\x1b[31mred\n"),
            (b"tab\there\r\x7f", false, b"tab\\there\\r\\x7f"),
        ];
        for (input, keep_esc, want) in cases {
            assert_eq!(&*escape_controls(input, keep_esc), want);
        }
    }

    #[test]
    fn size_rotation_keeps_the_newest_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = LogFile::open(dir.path(), Rotation::Size(100), 2).expect("open");
        for i in 0..20 {
            f.write_all(format!("line {i:02} {}\n", "x".repeat(30)).as_bytes())
                .expect("write");
        }
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap_or_default();
        assert!(read("gsyncd.log").contains("line 19"));
        assert!(read("gsyncd.log.1").contains("line 17"));
        assert!(!read("gsyncd.log.2").is_empty());
        assert!(!dir.path().join("gsyncd.log.3").exists());
        for n in ["gsyncd.log", "gsyncd.log.1", "gsyncd.log.2"] {
            assert!(read(n).len() <= 100, "{n} is {} bytes", read(n).len());
        }
    }
}
