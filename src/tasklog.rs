//! Task logs: everything an attempt says, kept in PostgreSQL while it runs.
//!
//! A shell task's stdout and stderr lines, and the `tracing` events (info
//! and above) a built-in task emits inside its attempt's span, go to the
//! attempt's [`AttemptLog`]; its [`LogWriter`] stores them as chunks every
//! [`FLUSH_EVERY`], so a follower sees a line within a second. Past
//! `logs.max_bytes_per_attempt` lines are counted, not kept. An attempt
//! that says nothing writes nothing; the lines saying what was dropped and
//! how the attempt ended are made from its ledger row when the log is read
//! ([`crate::ledger::logs::closing_lines`]). Bytes that are not UTF-8, and
//! NULs, are stored escaped (`\xff`, `\0`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::ledger;

/// How often a running attempt's new lines are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// The span an attempt runs in; its `log_key` field names the log.
pub const SPAN: &str = "task_attempt";

/// Where a line came from.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "out  ",
            Stream::Stderr => "err  ",
        }
    }
}

/// The log of one attempt; cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct AttemptLog(Arc<Shared>);

struct Shared {
    max_bytes: u64,
    buffer: Mutex<Buffer>,
}

#[derive(Default)]
struct Buffer {
    /// Lines not yet written.
    pending: String,
    /// Bytes accepted so far (written or pending).
    kept: u64,
    dropped_bytes: u64,
    dropped_lines: u64,
    /// The second the cached time prefix is of, and the prefix.
    second: i64,
    prefix: String,
}

impl AttemptLog {
    fn new(max_bytes: u64) -> AttemptLog {
        AttemptLog(Arc::new(Shared {
            max_bytes,
            buffer: Mutex::new(Buffer::default()),
        }))
    }

    /// A line of a task's own output (without its line end).
    pub fn line(&self, stream: Stream, bytes: &[u8]) {
        self.push(stream.tag(), bytes);
    }

    /// A line of text with a tag (a log level).
    pub fn text(&self, tag: &str, text: &str) {
        self.push(tag, text.as_bytes());
    }

    /// A block of a task's output read at once: every line in it (each
    /// ending with a line end, the last one may not), under one lock and
    /// one time stamp.
    pub fn lines(&self, stream: Stream, block: &[u8]) {
        let Ok(mut b) = self.0.buffer.lock() else {
            return;
        };
        // Plain text (the usual case) is copied as it is.
        let plain = memchr::memchr(0, block).is_none() && std::str::from_utf8(block).is_ok();
        stamp(&mut b);
        let mut start = 0;
        while start < block.len() {
            let end = memchr::memchr(b'\n', &block[start..]).map_or(block.len(), |i| start + i);
            let line = &block[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Self::push_locked(&mut b, self.0.max_bytes, stream.tag(), line, plain);
            start = end + 1;
        }
    }

    fn push(&self, tag: &str, bytes: &[u8]) {
        let Ok(mut b) = self.0.buffer.lock() else {
            return;
        };
        stamp(&mut b);
        Self::push_locked(&mut b, self.0.max_bytes, tag, bytes, false);
    }

    /// Adds one line; `plain`: it is UTF-8 without NULs (no escaping).
    fn push_locked(b: &mut Buffer, max_bytes: u64, tag: &str, bytes: &[u8], plain: bool) {
        let len = bytes.len();
        // Stored: time (24 bytes), tag, body, spaces and line end.
        let size = (len + tag.len() + 27) as u64;
        if b.dropped_lines > 0 || b.kept + size > max_bytes {
            // What the task said, with its line end.
            b.dropped_bytes += len as u64 + 1;
            b.dropped_lines += 1;
            return;
        }
        b.kept += size;
        let Buffer {
            pending, prefix, ..
        } = b;
        pending.push_str(prefix);
        pending.push(' ');
        pending.push_str(tag);
        pending.push(' ');
        match plain.then(|| std::str::from_utf8(bytes).ok()).flatten() {
            Some(text) => pending.push_str(text),
            None => escape_into(pending, bytes),
        }
        pending.push('\n');
    }

    /// Lines not yet written, and the bytes and lines dropped so far.
    fn take(&self) -> (String, u64, u64) {
        match self.0.buffer.lock() {
            Ok(mut b) => (
                crate::redact::text(&std::mem::take(&mut b.pending)),
                b.dropped_bytes,
                b.dropped_lines,
            ),
            Err(_) => (String::new(), 0, 0),
        }
    }

    /// Puts back lines whose write failed, before any newer ones.
    fn put_back(&self, mut text: String) {
        if let Ok(mut b) = self.0.buffer.lock() {
            text.push_str(&b.pending);
            b.pending = text;
        }
    }

    /// A `tracing` event as a log line: level, message, fields.
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARN ",
            tracing::Level::INFO => "INFO ",
            tracing::Level::DEBUG => "DEBUG",
            tracing::Level::TRACE => "TRACE",
        };
        fields.message.push_str(&fields.rest);
        self.text(level, &fields.message);
    }
}

/// Refreshes the cached `2026-11-23T14:23:24.123Z` prefix.
fn stamp(b: &mut Buffer) {
    let now = chrono::Utc::now();
    let second = now.timestamp();
    if second != b.second || b.prefix.is_empty() {
        b.second = second;
        b.prefix = now.format("%Y-%m-%dT%H:%M:%S.").to_string();
    }
    b.prefix.truncate(20);
    let _ = write!(b.prefix, "{:03}Z", now.timestamp_subsec_millis().min(999));
}

/// `bytes` as text: UTF-8 as it is, every other byte as `\xNN`, NUL as `\0`.
fn escape_into(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        if valid.contains('\0') {
            out.push_str(&valid.replace('\0', "\\0"));
        } else {
            out.push_str(valid);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

/// Last writes of ended attempts' logs still under way.
static FLUSHING: LazyLock<Mutex<Vec<tokio::task::JoinHandle<()>>>> =
    LazyLock::new(Default::default);

/// Waits until every ended attempt's log is written (before a process
/// that ran tasks exits).
pub async fn flushed() {
    let pending = FLUSHING
        .lock()
        .map(|mut p| std::mem::take(&mut *p))
        .unwrap_or_default();
    for handle in pending {
        let _ = handle.await;
    }
}

/// Logs of the attempts running in this process, by log key.
static ACTIVE: LazyLock<Mutex<HashMap<u64, AttemptLog>>> = LazyLock::new(Default::default);

/// The next log key (the span field that names an attempt's log).
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Which `task_attempts` row a log belongs to.
enum Owner {
    Known(i64),
    /// Written when first needed; `Some(after)`: written after that long
    /// even if the attempt says nothing, so it shows as running.
    Deferred(Arc<ledger::Attempt>, Option<Duration>),
}

/// Writes an attempt's log to PostgreSQL while it runs.
pub struct LogWriter {
    key: u64,
    log: AttemptLog,
    done: CancellationToken,
    flusher: Option<tokio::task::JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the log of attempt `attempt_id`, kept to `max_bytes`.
    pub fn start(pool: PgPool, attempt_id: i64, max_bytes: u64) -> LogWriter {
        Self::spawn(pool, Owner::Known(attempt_id), max_bytes)
    }

    /// Starts the log of an attempt whose row may not be written yet: it
    /// is written with the first line, or after `record_after`.
    pub fn deferred(
        pool: PgPool,
        attempt: Arc<ledger::Attempt>,
        record_after: Option<Duration>,
        max_bytes: u64,
    ) -> LogWriter {
        Self::spawn(pool, Owner::Deferred(attempt, record_after), max_bytes)
    }

    fn spawn(pool: PgPool, owner: Owner, max_bytes: u64) -> LogWriter {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let log = AttemptLog::new(max_bytes);
        if let Ok(mut active) = ACTIVE.lock() {
            active.insert(key, log.clone());
        }
        let done = CancellationToken::new();
        let flusher = tokio::spawn(flush(pool, owner, log.clone(), done.clone()));
        LogWriter {
            key,
            log,
            done,
            flusher: Some(flusher),
        }
    }

    pub fn log(&self) -> &AttemptLog {
        &self.log
    }

    /// The span the attempt runs in: events inside it go to its log.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!("task_attempt", log_key = self.key)
    }

    /// Ends the log: what is left is written in the background, so the
    /// attempt does not wait for it (its reader sees the log end when it
    /// is in: `log_closed`). [`flushed`] waits for every such write.
    pub async fn finish(mut self) {
        self.done.cancel();
        if let Some(flusher) = self.flusher.take() {
            if let Ok(mut pending) = FLUSHING.lock() {
                pending.retain(|h| !h.is_finished());
                pending.push(flusher);
            }
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Dropped without `finish` (the attempt was dropped): what is
        // pending is still written.
        self.done.cancel();
        if let Ok(mut active) = ACTIVE.lock() {
            active.remove(&self.key);
        }
    }
}

/// The attempt's row id, written now if needed; `None` while it cannot be
/// (its claim is gone, or its seal is committing the row right now).
async fn owner_id(owner: &Owner) -> Option<i64> {
    match owner {
        Owner::Known(id) => Some(*id),
        Owner::Deferred(attempt, _) => match attempt.id().await {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(task = %attempt.task, error = %e, "attempt not recorded yet");
                None
            }
        },
    }
}

async fn flush(pool: PgPool, owner: Owner, log: AttemptLog, done: CancellationToken) {
    let mut seq = 0;
    let mut written_drops = (0, 0);
    let began = tokio::time::Instant::now();
    let mut recorded = matches!(owner, Owner::Known(_) | Owner::Deferred(_, None));
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(FLUSH_EVERY) => false,
            _ = done.cancelled() => true,
        };
        if !recorded && !last {
            if let Owner::Deferred(_, Some(after)) = &owner {
                if began.elapsed() >= *after {
                    recorded = owner_id(&owner).await.is_some();
                }
            }
        }
        let (body, dropped_bytes, dropped_lines) = log.take();
        let drops = (dropped_bytes, dropped_lines);
        if !body.is_empty() || drops != written_drops {
            let Some(attempt_id) = owner_id(&owner).await else {
                if last {
                    tracing::debug!("task log dropped: its attempt could not be recorded");
                    return;
                }
                log.put_back(body);
                continue;
            };
            let chunk = ledger::logs::Chunk {
                attempt_id,
                seq: seq + 1,
                body: &body,
                dropped_bytes,
                dropped_lines,
                last,
            };
            match ledger::logs::append(&pool, &chunk).await {
                Ok(()) => {
                    seq += 1;
                    written_drops = drops;
                }
                Err(e) => {
                    tracing::debug!(attempt_id, error = %e, "task log not written; trying again");
                    log.put_back(body);
                }
            }
        }
        if last {
            return;
        }
    }
}

/// Sends the events of an attempt's span (and its children) to its log.
pub struct CaptureLayer;

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != SPAN {
            return;
        }
        struct LogKey(Option<u64>);
        impl Visit for LogKey {
            fn record_u64(&mut self, field: &Field, value: u64) {
                if field.name() == "log_key" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
        }
        let mut found = LogKey(None);
        attrs.record(&mut found);
        let log = found
            .0
            .and_then(|a| ACTIVE.lock().ok().and_then(|m| m.get(&a).cloned()));
        if let (Some(log), Some(span)) = (log, ctx.span(id)) {
            span.extensions_mut().insert(log);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(log) = span.extensions().get::<AttemptLog>() {
                log.event(event);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(log: &AttemptLog) -> String {
        log.take().0
    }

    #[test]
    fn bad_bytes_and_nuls_are_escaped() {
        let log = AttemptLog::new(1 << 20);
        log.line(Stream::Stdout, b"ok \xff\xfe then\0nul \xc3\xa9");
        let t = text(&log);
        assert!(t.ends_with(" out   ok \\xff\\xfe then\\0nul é\n"), "{t:?}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(&t[..24]).is_ok(),
            "{t:?}"
        );
    }

    #[test]
    fn past_the_cap_lines_are_counted_not_kept() {
        let log = AttemptLog::new(100);
        log.line(Stream::Stdout, b"first line");
        log.line(Stream::Stderr, b"second line");
        log.line(Stream::Stdout, b"third line, dropped");
        log.line(Stream::Stdout, b"4");
        let (t, bytes, lines) = log.take();
        let kept: Vec<&str> = t.lines().collect();
        assert_eq!(kept.len(), 2, "{t}");
        assert!(kept[0].ends_with("out   first line"));
        assert!(kept[1].ends_with("err   second line"));
        // What the task said, line ends included.
        assert_eq!((bytes, lines), (22, 2));
    }
}
