//! `hxjobs run <job>`.

use clap::Args;

use super::{stop_on_signal, CliResult, Failure};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job to run. `ingest`: drain every event topic into PostgreSQL, exactly once.
    pub job: String,
}

pub async fn run(config: &Config, args: RunArgs) -> CliResult {
    match args.job.as_str() {
        "ingest" => {
            let pool = crate::db::connect_and_migrate(&config.database).await?;
            let stop = stop_on_signal();
            let summary = crate::ingest::drain(config, &pool, stop).await?;
            println!("{summary}");
            if summary.interrupted {
                return Err(Failure {
                    code: 130,
                    message: "interrupted; the next run resumes from the last committed batch"
                        .into(),
                });
            }
            Ok(())
        }
        other => Err(Failure {
            code: 2,
            message: format!("unknown job `{other}` (known jobs: ingest)"),
        }),
    }
}
