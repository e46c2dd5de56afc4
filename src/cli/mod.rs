//! The command line: one subcommand per capability, each in its own file.

mod audit;
#[cfg(feature = "bench")]
mod bench;
mod control;
mod demo;
mod jobs;
mod logs;
mod notify;
mod report;
mod retention;
mod run;
mod schedule;
mod serve;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "hxjobs",
    version,
    about = "Batch jobs for an LLM platform's event pipeline: exactly-once Kafka → PostgreSQL ingest, rollups, retention, reports.",
    long_about = None
)]
pub struct Cli {
    /// Configuration file layered over the built-in defaults (config/hxjobs.toml).
    #[arg(long, global = true, env = "HXJOBS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format: human-readable lines or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,

    /// Colour in log lines: `auto` only when standard error is a terminal.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub color: crate::telemetry::Color,

    /// Log filter, e.g. `info`, `debug`, `hxjobs=debug`. Default: `info`
    /// for `daemon` and `serve`; warnings only for other commands, which
    /// print their own progress and summary (`-v`: info, `-vv`: debug).
    #[arg(long, global = true, env = "HXJOBS_LOG")]
    pub log_level: Option<String>,

    /// More log lines from a command: `-v` info, `-vv` debug.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations (every command that needs them does this itself).
    Migrate,
    /// Job definitions: list them or validate them.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Create the configured Kafka topics that do not exist yet.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Run a job for one interval in the foreground (a manual run in the
    /// ledger); print each task's outcome. `ingest` drains every event topic
    /// up to the high watermark seen at start, exactly once.
    Run(run::RunArgs),
    /// The scheduler: enqueue due runs (catching up per policy), claim and
    /// run them, requeue runs of lost workers; with `ingest.mode =
    /// "continuous"` also ingest continuously, sharing the partitions with
    /// the other daemons. Any number of daemons may share one database.
    /// Ctrl-C / SIGTERM stops cleanly.
    Daemon(schedule::DaemonArgs),
    /// Run a job for every interval in [--from, --to), N runs at a time;
    /// interrupt and run again to resume.
    Backfill(schedule::BackfillArgs),
    /// List runs from the ledger, newest first.
    Runs(schedule::RunsArgs),
    /// The audit log: logins, refused requests and every change, newest first.
    Audit(audit::AuditArgs),
    /// What a run's task attempts said: a shell task's output, a built-in
    /// task's log events, how each attempt ended.
    Logs(logs::LogsArgs),
    /// Queue a finished run again with some or all of its tasks cleared
    /// (`--task T --downstream`), or every failed run of a job in a range.
    Clear(control::ClearArgs),
    /// Mark a run (or one task of a finished run) succeeded or failed.
    Mark(control::MarkArgs),
    /// Cancel a queued or running run: its task is stopped (a shell task's
    /// process group killed), the run is `cancelled` and not retried.
    Cancel(control::CancelArgs),
    /// Pause a job: no new scheduled runs, none of its runs starts.
    Pause(control::PauseArgs),
    /// Unpause a job; its catch-up policy decides what of the missed schedule runs.
    Unpause(control::PauseArgs),
    /// Notification targets: send a test message, list them.
    Notify {
        #[command(subcommand)]
        command: notify::NotifyCommand,
    },
    /// Archive raw event days past retention to Parquet and drop them;
    /// remove other data past its retention.
    Retention(retention::RetentionArgs),
    /// Archived raw events.
    Archive {
        #[command(subcommand)]
        command: retention::ArchiveCommand,
    },
    /// The object store (`[storage] url`).
    Storage {
        #[command(subcommand)]
        command: retention::StorageCommand,
    },
    /// Run single tasks.
    Tasks {
        #[command(subcommand)]
        command: run::TasksCommand,
    },
    /// Serve the REST API (and live stats) without the scheduler.
    Serve,
    /// Reports from the rollups (PDF, JSON or CSV).
    Report {
        #[command(subcommand)]
        command: report::ReportCommand,
    },
    /// Capacity analysis from the hourly rollups, as JSON.
    Capacity(report::CapacityArgs),
    /// Produce realistic demo events of all five types into Kafka.
    ProduceDemo(demo::ProduceDemoArgs),
    /// Show what is stored: events per type, dead letters per reason, lag per topic.
    Status,
    /// Measure throughput on this machine against baselines taken in the same run
    /// (built with `scripts/dist.sh --bench`).
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Print the effective configuration (defaults, file and environment merged; secrets hidden).
    Config,
}

impl Cli {
    /// The log filter in force: `--log-level`, else by command and `-v`.
    pub fn log_filter(&self) -> String {
        if let Some(level) = &self.log_level {
            return level.clone();
        }
        match (self.is_service(), self.verbose) {
            (true, 0) | (false, 1) => "info".into(),
            (false, 0) => "warn".into(),
            _ => "debug".into(),
        }
    }

    /// Long-running services (their log is their output).
    pub fn is_service(&self) -> bool {
        matches!(self.command, Command::Daemon(_) | Command::Serve)
    }
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create missing topics with the configured partitions and retention.
    Create,
}

/// A failure with its exit code: 2 for configuration and usage, 1 otherwise.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            message: e.to_string(),
        }
    }
}

pub type CliResult = Result<(), Failure>;

/// The operations for one command: the database (migrated) and the jobs.
pub(crate) async fn ops(config: &Config) -> Result<crate::ops::Ops, Failure> {
    let catalog = std::sync::Arc::new(catalog(config)?);
    let pools = crate::db::Pools::new(crate::db::connect_and_migrate(&config.database).await?);
    Ok(crate::ops::Ops::new(
        std::sync::Arc::new(config.clone()),
        pools,
        catalog,
    ))
}

/// An operation's refusal as the command line says it: exit 2 for what the
/// command asked, naming the flag that would allow it; 1 for a failure.
pub(crate) fn refused(e: crate::ops::Error) -> Failure {
    use crate::ops::Kind;
    let code = match e.kind {
        Kind::NotFound | Kind::Conflict | Kind::Invalid | Kind::Forbidden => 2,
        Kind::Unavailable | Kind::Internal => 1,
    };
    let mut message = e.message;
    if let (Kind::Invalid, Some(field)) = (&e.kind, e.field) {
        if matches!(
            field,
            "ignore_start_date" | "allow_unfinished" | "max_intervals" | "reprocess" | "parallel"
        ) {
            message.push_str(&format!(" (--{})", field.replace('_', "-")));
        }
    }
    Failure { code, message }
}

/// Why a loaded job is still refused: it names notification targets the
/// configuration lacks.
fn undefined_names(config: &Config, job: &crate::dag::Job) -> Option<String> {
    let unknown = crate::notify::unknown_targets(config, job);
    let mut pools: Vec<&str> = job
        .tasks
        .iter()
        .filter_map(|t| t.pool.as_deref())
        .filter(|p| !config.pools.contains_key(*p))
        .collect();
    pools.dedup();
    let mut problems = Vec::new();
    if !unknown.is_empty() {
        problems.push(format!(
            "names notification targets that [notify] does not define: {}",
            unknown.join(", ")
        ));
    }
    if !pools.is_empty() {
        problems.push(format!(
            "names pools that the configuration does not define ([pools.NAME]): {}",
            pools.join(", ")
        ));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// The jobs in `jobs.dir` for one command. Invalid files are logged (each
/// with file:line); the valid jobs still load.
pub(crate) fn load_jobs(config: &Config) -> Result<crate::dag::job::Loaded, Failure> {
    let mut loaded = crate::dag::job::load(&config.jobs.dir).map_err(|e| Failure {
        code: 2,
        message: e.to_string(),
    })?;
    let (ok, bad): (Vec<_>, Vec<_>) = std::mem::take(&mut loaded.jobs)
        .into_iter()
        .partition(|j| undefined_names(config, j).is_none());
    for job in bad {
        loaded.errors.push(crate::dag::job::Error {
            file: job.file.clone(),
            line: None,
            message: undefined_names(config, &job).unwrap_or_default(),
        });
    }
    loaded.jobs = ok;
    for e in &loaded.errors {
        tracing::warn!(file = %e.file.display(), line = e.line, "invalid job file, not loaded: {e}");
    }
    Ok(loaded)
}

/// The jobs in `jobs.dir` as a reloadable catalog (daemons and the API),
/// with [`undefined_names`] as its extra check. Invalid files are logged
/// (each with file:line); the catalog counts them in
/// `hxjobs_job_files_invalid`; the valid jobs still load.
pub(crate) fn catalog(config: &Config) -> Result<crate::dag::catalog::Catalog, Failure> {
    let targets = config.clone();
    let check: crate::dag::catalog::Check = Box::new(move |job| undefined_names(&targets, job));
    let catalog =
        crate::dag::catalog::Catalog::load(config.jobs.dir.clone(), check).map_err(|e| {
            Failure {
                code: 2,
                message: e.to_string(),
            }
        })?;
    for e in &catalog.current().errors {
        tracing::error!("invalid job file, not loaded: {e}");
    }
    // Report definitions are checked at start too, not first when a
    // report of that type is due.
    for e in crate::reports::definition::check_all(&config.reports.definitions_dir) {
        tracing::error!("invalid report definition: {e}");
    }
    Ok(catalog)
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    Config::load(cli.config.as_deref()).map_err(|e| Failure {
        code: 2,
        message: e.to_string(),
    })
}

/// A token cancelled on Ctrl-C, SIGTERM or SIGHUP (the terminal
/// closed); a second signal exits at once. For commands a person runs.
pub fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let flag = stop.clone();
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            let name = wait_for_signal(true).await;
            signals += 1;
            if signals > 1 {
                eprintln!("hxjobs: second signal ({name}), exiting now");
                std::process::exit(130);
            }
            tracing::warn!(
                signal = name,
                "stopping after the work in hand; send the signal again to exit now"
            );
            flag.cancel();
        }
    });
    stop
}

/// A service's signals: Ctrl-C and SIGTERM stop it (a second one exits at
/// once), SIGHUP reloads its job files, as daemons do.
pub struct Signals {
    pub stop: CancellationToken,
    pub reload: Arc<tokio::sync::Notify>,
    /// The signal that stopped it.
    pub cause: Arc<std::sync::OnceLock<&'static str>>,
}

pub fn service_signals() -> Signals {
    let signals = Signals {
        stop: CancellationToken::new(),
        reload: Arc::new(tokio::sync::Notify::new()),
        cause: Arc::new(std::sync::OnceLock::new()),
    };
    let (stop, reload, cause) = (
        signals.stop.clone(),
        signals.reload.clone(),
        signals.cause.clone(),
    );
    tokio::spawn(async move {
        loop {
            let name = wait_for_signal(false).await;
            if name == "SIGHUP" {
                tracing::info!(signal = name, "reloading job files");
                reload.notify_one();
                continue;
            }
            if stop.is_cancelled() {
                eprintln!("hxjobs: second signal ({name}), exiting now");
                std::process::exit(130);
            }
            let _ = cause.set(name);
            tracing::info!(
                signal = name,
                "stopping: no new runs; send the signal again to exit now"
            );
            stop.cancel();
        }
    });
    signals
}

/// Waits for Ctrl-C, SIGTERM or SIGHUP; the signal's name.
async fn wait_for_signal(hangup: bool) -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => if hangup { "SIGHUP (terminal closed)" } else { "SIGHUP" },
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Runs the parsed command line and maps the outcome to an exit code.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hxjobs: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // The terminal may be gone (SIGHUP): never panic on the last line.
            let _ = writeln!(
                std::io::stderr(),
                "hxjobs: error: {}",
                crate::redact::text(&f.message)
            );
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cli: Cli) -> CliResult {
    let config = load_config(&cli)?;
    match cli.command {
        Command::Migrate => {
            crate::db::connect_and_migrate(&config.database).await?;
            println!("migrations applied to {}", config.database.redacted_url());
            Ok(())
        }
        Command::Topics {
            command: TopicsCommand::Create,
        } => {
            crate::kafka::ensure_topics(&config).await?;
            println!("topics ready on {}", config.kafka.bootstrap_servers);
            Ok(())
        }
        Command::Jobs { command } => jobs::run(&config, command).await,
        Command::Run(args) => run::run(&config, args).await,
        Command::Daemon(args) => schedule::daemon(&config, args).await,
        Command::Backfill(args) => schedule::backfill(&config, args).await,
        Command::Runs(args) => schedule::runs(&config, args).await,
        Command::Audit(args) => audit::audit(&config, args).await,
        Command::Logs(args) => logs::logs(&config, args).await,
        Command::Clear(args) => control::clear(&config, args).await,
        Command::Mark(args) => control::mark(&config, args).await,
        Command::Cancel(args) => control::cancel(&config, args).await,
        Command::Pause(args) => control::pause(&config, args, true).await,
        Command::Unpause(args) => control::pause(&config, args, false).await,
        Command::Notify { command } => notify::notify(&config, command).await,
        Command::Retention(args) => retention::retention(&config, args).await,
        Command::Archive { command } => retention::archive(&config, command).await,
        Command::Storage { command } => retention::storage(&config, command).await,
        Command::Tasks { command } => run::test_task(&config, command).await,
        Command::ProduceDemo(args) => demo::run(&config, args).await,
        Command::Serve => serve::serve(&config).await,
        Command::Report { command } => report::report(&config, command).await,
        Command::Capacity(args) => report::capacity(&config, args).await,
        Command::Status => {
            let pool = crate::db::connect_and_migrate(&config.database).await?;
            let status = crate::status::gather(&config, &pool).await?;
            print!("{status}");
            Ok(())
        }
        #[cfg(feature = "bench")]
        Command::Bench { command } => bench::run(&config, command).await,
        Command::Config => {
            // Secrets serialize as ***.
            println!("{}", serde_json::to_string_pretty(&config)?);
            Ok(())
        }
    }
}
