//! `hxjobs bench …`.

use clap::Subcommand;

use super::CliResult;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce demo events, then time a bare consume, the drain into
    /// PostgreSQL and a plain COPY of the same rows; print rates and ratios.
    Ingest {
        /// Events to produce and drain.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Keep the bench databases and topics instead of removing them.
        #[arg(long)]
        keep: bool,
        /// Only the pipeline fed from memory, next to a plain COPY of its rows.
        #[arg(long)]
        without_broker: bool,
        /// Continuous workers instead of the drain: one run per count
        /// (e.g. `--workers 1,2,3`), each next to a bare consume.
        #[arg(long, value_delimiter = ',', conflicts_with = "without_broker")]
        workers: Vec<usize>,
    },
    /// How long a first and a second member take to get their partitions
    /// with Kafka's consumer-group protocol and with hxjobs's PostgreSQL leases.
    Membership {
        /// Keep the bench database instead of removing it.
        #[arg(long)]
        keep: bool,
    },
    /// Produce at a steady rate with continuous workers running; print the
    /// time from produce to visible in PostgreSQL (p50, p95, p99).
    Latency {
        /// Events per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds of production.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Continuous workers (in this process).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Keep the bench database instead of removing it.
        #[arg(long)]
        keep: bool,
    },
    /// Produce at a steady rate with continuous ingest and time, for minute
    /// intervals, an interval's end to its rollup being readable: queued by
    /// completeness next to queued by the clock; then a day's report after
    /// its last hour (fresh topics and database).
    Freshness {
        /// Events per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Minute boundaries to measure.
        #[arg(long, default_value_t = 5)]
        minutes: u64,
        /// Keep the bench database instead of removing it.
        #[arg(long)]
        keep: bool,
    },
    /// Count events at a steady rate and time each one to the WebSocket
    /// and server-sent-event clients of the live figures (on loopback),
    /// next to a subscriber in this process; then one more client of each
    /// past the caps.
    Stream {
        /// Events per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds of counting.
        #[arg(long, default_value_t = 20)]
        secs: u64,
        /// WebSocket clients (api.max_websockets is set to this).
        #[arg(long, default_value_t = 200)]
        sockets: usize,
        /// Server-sent-event clients (api.max_sse_streams is set to this).
        #[arg(long, default_value_t = 100)]
        streams: usize,
    },
    /// Archive one day of N events (read, Parquet, put, read back, verify)
    /// into the configured store and into a local directory, in
    /// alternating rounds; print both rates and their ratio.
    Archive {
        /// Events in the day.
        #[arg(long, default_value_t = 500_000)]
        events: u64,
        /// Rounds of each; medians are compared.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Keep the bench database instead of removing it.
        #[arg(long)]
        keep: bool,
    },
    /// Roll one hour of N events up with hxjobs and with one SQL statement.
    Rollup {
        /// Events in the hour.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Keep the bench database instead of removing it.
        #[arg(long)]
        keep: bool,
    },
    /// 35 days of rollups, then the weekly and monthly reports as PDF and JSON from stored rollups, and as PDF from hourly rollups alone.
    Reports {
        /// Synthetic events per day.
        #[arg(long, default_value_t = 50_000)]
        events_per_day: u64,
        /// Keep the bench database instead of removing it.
        #[arg(long)]
        keep: bool,
    },
    /// Live stats: parse and count events offered at a fixed rate; print
    /// throughput, lag and memory each second.
    Live {
        /// Events per second offered.
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
        /// Seconds to run.
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// /health and /stats of the real router under wrk, next to a bare axum handler.
    Api {
        /// Concurrent connections.
        #[arg(long, default_value_t = 64)]
        connections: u32,
        /// Seconds per endpoint.
        #[arg(long, default_value_t = 10)]
        secs: u32,
    },
    /// A shell task printing N lines with its output kept in its task log,
    /// next to the same task with its output dropped.
    Logs {
        /// Lines the task prints.
        #[arg(long, default_value_t = 100_000)]
        lines: u64,
        /// Rounds of each; medians are compared.
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
    /// The console's grid, calendar, durations and runs pages for a 5-task
    /// job with many runs, next to the JSON API call that returns the
    /// grid's data.
    Ui {
        /// Runs of the job in the ledger.
        #[arg(long, default_value_t = 100_000)]
        runs: usize,
        /// Requests per page; p50 and p95 are reported.
        #[arg(long, default_value_t = 50)]
        requests: usize,
    },
    /// Backfill hourly runs of a three-task no-op DAG and run the same
    /// statements without the ledger; print the per-task overhead.
    Scheduler {
        /// Hourly runs to backfill.
        #[arg(long, default_value_t = 8760)]
        runs: usize,
        /// Runs in flight at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Keep the bench database instead of removing it.
        #[arg(long)]
        keep: bool,
    },
}

pub async fn run(config: &Config, command: BenchCommand) -> CliResult {
    match command {
        BenchCommand::Ingest {
            events,
            keep,
            without_broker,
            workers,
        } => {
            if workers.contains(&0) {
                return Err(super::Failure {
                    code: 2,
                    message: "--workers takes counts of at least 1".into(),
                });
            }
            if !workers.is_empty() {
                let report =
                    crate::bench::scaleout::ingest_workers(config, events, &workers, keep).await?;
                println!("{report}");
            } else if without_broker {
                let report = crate::bench::ingest_without_broker(config, events, keep).await?;
                println!("{report}");
            } else {
                let report = crate::bench::ingest(config, events, keep).await?;
                println!("{report}");
            }
            Ok(())
        }
        BenchCommand::Membership { keep } => {
            let report = crate::bench::scaleout::membership(config, keep).await?;
            println!("{report}");
            Ok(())
        }
        BenchCommand::Latency {
            rate,
            secs,
            workers,
            keep,
        } => {
            if rate == 0 || secs == 0 || workers == 0 {
                return Err(super::Failure {
                    code: 2,
                    message: "--rate, --secs and --workers must be at least 1".into(),
                });
            }
            let report = crate::bench::scaleout::latency(config, rate, secs, workers, keep).await?;
            println!("{report}");
            let p99 = report.percentile(99.0);
            println!(
                "  target (p99 <= 2 s, every event visible): {}",
                if report.visible == report.produced && p99.is_some_and(|ms| ms <= 2000.0) {
                    "met"
                } else {
                    "NOT met"
                }
            );
            Ok(())
        }
        BenchCommand::Freshness {
            rate,
            minutes,
            keep,
        } => {
            if rate == 0 || minutes == 0 || minutes > 120 {
                return Err(super::Failure {
                    code: 2,
                    message: "--rate must be at least 1 and --minutes 1 to 120".into(),
                });
            }
            let report = crate::bench::freshness(config, rate, minutes, keep).await?;
            println!("{report}");
            println!(
                "  targets (p99 <= 5 s with every event, the day's report <= 60 s after its last hour): {}",
                if report.targets_met() { "met" } else { "NOT met" }
            );
            Ok(())
        }
        BenchCommand::Stream {
            rate,
            secs,
            sockets,
            streams,
        } => {
            if !(1..=100_000).contains(&rate)
                || !(1..=600).contains(&secs)
                || !(1..=1000).contains(&sockets)
                || !(1..=1000).contains(&streams)
            {
                return Err(super::Failure {
                    code: 2,
                    message: "--rate must be 1 to 100000, --secs 1 to 600, --sockets and --streams 1 to 1000".into(),
                });
            }
            let report = crate::bench::stream(config, rate, secs, sockets, streams).await?;
            println!("{report}");
            let met = ["WebSocket /stats/ws", "server-sent events /stats/stream"]
                .iter()
                .all(|t| report.p99(t).is_some_and(|ms| ms <= 100.0))
                && report.transports.iter().all(|t| t.longest_gap_ms <= 5000.0)
                && report.capped == (true, true);
            println!(
                "  targets (p99 <= 100 ms from counted to received, a snapshot at least every 5 s, 503 past the caps): {}",
                if met { "met" } else { "NOT met" }
            );
            Ok(())
        }
        BenchCommand::Archive {
            events,
            rounds,
            keep,
        } => {
            if events == 0 || rounds == 0 {
                return Err(super::Failure {
                    code: 2,
                    message: "--events and --rounds must be at least 1".into(),
                });
            }
            let report = crate::bench::archive(config, events, rounds, keep).await?;
            println!("{report}");
            Ok(())
        }
        BenchCommand::Rollup { events, keep } => {
            if events == 0 {
                return Err(super::Failure {
                    code: 2,
                    message: "--events must be at least 1".into(),
                });
            }
            let report = crate::bench::rollup(config, events, keep).await?;
            println!("{report}");
            Ok(())
        }
        BenchCommand::Reports {
            events_per_day,
            keep,
        } => {
            let report = crate::bench::reports(config, events_per_day.max(1), keep).await?;
            println!("{report}");
            Ok(())
        }
        BenchCommand::Live { rate, secs } => {
            if rate == 0 || secs == 0 {
                return Err(super::Failure {
                    code: 2,
                    message: "--rate and --secs must be at least 1".into(),
                });
            }
            let report = crate::bench::live(config, rate, secs).await?;
            println!("{report}");
            Ok(())
        }
        BenchCommand::Api { connections, secs } => {
            if connections == 0 || secs == 0 {
                return Err(super::Failure {
                    code: 2,
                    message: "--connections and --secs must be at least 1".into(),
                });
            }
            let report = crate::bench::api(config, connections, secs).await?;
            println!("{report}");
            Ok(())
        }
        BenchCommand::Ui { runs, requests } => {
            if runs < 200 || requests == 0 {
                return Err(super::Failure {
                    code: 2,
                    message: "--runs must be at least 200 and --requests at least 1".into(),
                });
            }
            let report = crate::bench::ui(config, runs, requests).await?;
            println!("{report}");
            Ok(())
        }
        BenchCommand::Logs { lines, rounds } => {
            if lines == 0 || rounds == 0 {
                return Err(super::Failure {
                    code: 2,
                    message: "--lines and --rounds must be at least 1".into(),
                });
            }
            let report = crate::bench::logs(config, lines, rounds).await?;
            println!("{report}");
            Ok(())
        }
        BenchCommand::Scheduler {
            runs,
            parallel,
            keep,
        } => {
            if runs == 0 || parallel == 0 {
                return Err(super::Failure {
                    code: 2,
                    message: "--runs and --parallel must be at least 1".into(),
                });
            }
            let report = crate::bench::scheduler(config, runs, parallel, keep).await?;
            println!("{report}");
            Ok(())
        }
    }
}
