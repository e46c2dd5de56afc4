//! `ingest`: drains the topics into PostgreSQL, exactly once (each batch
//! commits its events with its offsets).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Failure, JobInfo, Kind, TaskContext};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ingest {}

pub(super) fn parse(table: toml::Table, _: &JobInfo) -> Result<Arc<dyn Kind>, String> {
    Ok(Arc::new(super::params::<Ingest>("ingest", table)?))
}

impl Kind for Ingest {
    fn name(&self) -> &'static str {
        "ingest"
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext<'a>) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            let summary = crate::ingest::drain(ctx.config, ctx.pool, ctx.stop.clone())
                .await
                .map_err(Failure::of)?;
            for (topic, c) in &summary.topics {
                tracing::info!(
                    topic = %topic, stored = c.stored, duplicates_skipped = c.duplicates,
                    dead_letters = c.dead_letters, gaps = c.gaps, skipped_offsets = c.skipped_offsets,
                    "topic drained"
                );
            }
            if summary.interrupted {
                return Err(Failure::Interrupted);
            }
            Ok(summary.to_string())
        })
    }
}
