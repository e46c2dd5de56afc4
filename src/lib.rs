//! hxjobs: the batch side of an LLM platform's event pipeline in one binary.
//!
//! Dependencies point down: `cli` → `server` → `api`, `ui` → `web` → `ops`
//! → `dag`, `reports`, `retention`, `rollup`, `ingest` → `ledger`, `kafka`,
//! `db` → `config`. The CLI, the API and the console share the operations
//! of `ops`; everything the CLI does is callable from tests.

/// One field of every row, moved out of the rows, as a named Polars column.
macro_rules! take_column {
    ($rows:expr, $name:literal, $field:tt) => {
        Column::from(Series::new(
            $name.into(),
            $rows
                .iter_mut()
                .map(|r| std::mem::take(&mut r.$field))
                .collect::<Vec<_>>(),
        ))
    };
}

/// Runs CPU-heavy or blocking work (Polars, Parquet, sketches, fsync) on
/// tokio's blocking pool, so it never holds an async worker thread, where
/// heartbeats and the API run.
pub(crate) async fn off_runtime<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static + From<tokio::task::JoinError>,
{
    // In the caller's span: its log events still reach its task log.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f)).await?
}

/// `v` rounded to `decimals` decimal places (what reports, stats and
/// analyses show and serve).
pub fn round(v: f64, decimals: u32) -> f64 {
    let m = 10f64.powi(decimals as i32);
    (v * m).round() / m
}

pub mod api;
#[cfg(feature = "bench")]
pub mod bench;
pub mod capacity;
pub mod checks;
pub mod cli;
pub mod config;
pub mod dag;
pub mod db;
pub mod demo;
pub mod events;
pub mod ingest;
pub mod interval;
pub mod kafka;
pub mod ledger;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod redact;
pub mod reports;
pub mod retention;
pub mod rollup;
pub mod server;
pub mod status;
pub mod storage;
pub mod tasklog;
pub mod tasks;
pub mod telemetry;
pub mod time;
pub mod ui;
pub mod web;
