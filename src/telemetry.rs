//! Logging: human-readable lines by default, JSON for machines.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Installs the global subscriber. librdkafka's own chatter (reconnect
/// attempts and the like) stays off unless named in `filter`: hxjobs
/// reports unreachable brokers itself, once, with the address.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(format!("librdkafka=off,rdkafka=off,sqlx=warn,{filter}"))
        .unwrap_or_else(|_| EnvFilter::new("info,librdkafka=off,rdkafka=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
