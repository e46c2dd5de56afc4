//! `retention`: archives and drops raw event days past retention and
//! deletes the other classes' old rows; the deletions commit with the
//! task's success.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Failure, JobInfo, Kind, TaskContext};
use crate::retention::archive;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Retention {}

pub(super) fn parse(table: toml::Table, _: &JobInfo) -> Result<Arc<dyn Kind>, String> {
    Ok(Arc::new(super::params::<Retention>("retention", table)?))
}

fn failure(e: archive::Error) -> Failure {
    match e {
        archive::Error::Seal(s) => s.into(),
        archive::Error::Verify { .. }
        | archive::Error::File { .. }
        | archive::Error::Storage(crate::storage::Error::Config { .. }) => Failure::fatal(e),
        // A store that is down or refuses: nothing was dropped; retried.
        archive::Error::Storage(_) => Failure::of(e),
        other => Failure::of(other),
    }
}

impl Kind for Retention {
    fn name(&self) -> &'static str {
        "retention"
    }

    fn seals(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext<'a>) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            let config = &ctx.config.retention;
            let plan = crate::retention::plan(ctx.pool, config, chrono::Utc::now())
                .await
                .map_err(Failure::of)?;
            tracing::info!(
                raw_event_days = plan.event_days.len(),
                other_classes = plan.classes.len(),
                "retention plan: what is past its retention"
            );
            let store =
                crate::storage::Store::open(&ctx.config.storage).map_err(|e| failure(e.into()))?;
            let archived = crate::retention::apply(
                ctx.pool,
                &store,
                &ctx.config.reports.output_dir,
                &plan,
                ctx.seal.as_ref(),
            )
            .await
            .map_err(failure)?;
            let removed: i64 = plan.classes.iter().map(|c| c.rows).sum();
            Ok(format!(
                "{} raw event days archived and dropped, about {removed} other rows removed",
                archived.len()
            ))
        })
    }
}
