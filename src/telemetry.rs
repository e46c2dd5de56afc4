//! Logging: human-readable lines by default, JSON for machines. Colour
//! only where a person reads a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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

/// Installs the global subscriber.
pub fn init(format: LogFormat, color: Color, filter: &str) {
    let filter = EnvFilter::try_new(format!("{BASE_FILTER},{filter}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("{BASE_FILTER},info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder
            .with_target(false)
            .with_ansi(color.enabled())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
