//! Logging: human-readable lines by default, JSON for machines. Colour
//! only where a person reads a terminal.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// When human-readable log lines carry ANSI colour codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    /// When standard error is a terminal (never in a file or a pipe).
    Auto,
    Always,
    Never,
}

impl Color {
    fn enabled(self) -> bool {
        match self {
            Color::Auto => std::io::stderr().is_terminal(),
            Color::Always => true,
            Color::Never => false,
        }
    }
}

/// The filter every `--log-level` is added to: librdkafka's own chatter
/// (reconnect attempts and the like) stays off, hxjobs reports unreachable
/// brokers itself, once, with the address; the cron library's start-up
/// lines ("Uninited", "Job creator created") are debug detail.
const BASE_FILTER: &str = "librdkafka=off,rdkafka=off,sqlx=warn,tokio_cron_scheduler=warn";

/// The progress bar log lines are printed above, when one is shown.
static BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Shows human log lines above `bar` while it is drawn (`None`: it is gone).
pub fn logs_above(bar: Option<&indicatif::ProgressBar>) {
    if let Ok(mut b) = BAR.lock() {
        *b = bar.cloned();
    }
}

/// Standard error, suspending the progress bar (if any) for each line.
struct AboveBar;

impl std::io::Write for AboveBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One formatted event per write: secrets and URL credentials go.
        let text = crate::redact::text(&String::from_utf8_lossy(buf));
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(text.as_bytes()))?,
            None => std::io::stderr().write_all(text.as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the global subscriber: log lines to standard error as
/// `--log-level` filters them, and every hxjobs event at info and above
/// inside a task attempt to that attempt's log ([`crate::tasklog`]),
/// whatever `--log-level` says.
pub fn init(format: LogFormat, color: Color, filter: &str) {
    let filter = EnvFilter::try_new(format!("{BASE_FILTER},{filter}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("{BASE_FILTER},info")));
    let stderr = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(|| AboveBar)
            .with_target(false)
            .with_ansi(color.enabled())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(|| AboveBar)
            .json()
            .flatten_event(true)
            .boxed(),
    };
    let captured = Targets::new().with_target("hxjobs", Level::INFO);
    let subscriber = tracing_subscriber::registry()
        .with(stderr.with_filter(filter))
        .with(crate::tasklog::CaptureLayer.with_filter(captured));
    // Not `try_init`: that also bridges the `log` crate, and a `log_enabled!`
    // check no record follows (librdkafka's, whenever a Kafka client is made)
    // leaves the per-layer filters' state set, so the next event on that
    // thread was lost to both stderr and the task log.
    let _ = tracing::subscriber::set_global_default(subscriber);
}
