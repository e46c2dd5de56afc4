//! Shared helpers: a private database and topic set per test.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hxjobs::config::Config;
use hxjobs::demo::{self, DemoRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{Connection, PgConnection, PgPool};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A message read back: its value and its headers as (key, value) pairs.
pub type ReadMessage = (Option<Vec<u8>>, Vec<(String, String)>);

pub struct TestEnv {
    pub config: Config,
    pub pool: PgPool,
    pub name: String,
    admin_url: String,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    /// A fresh database and topics named after the test.
    pub async fn new(test: &str) -> TestEnv {
        let base = Config::load(None).expect("configuration loads");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "t{}_{}_{}_{n}",
            chrono::Utc::now().format("%H%M%S"),
            std::process::id(),
            test.replace('-', "_")
        )
        .to_lowercase();
        let mut config = base.clone();
        config.topics.prefix_names(&format!("{name}-"));
        config.kafka.group_id = format!("{name}-group");
        config.ingest.batch_size = 500;
        config.ingest.stall_timeout_secs = 30;
        config.database.url = hxjobs::db::with_database(base.database.url.expose(), &name).into();

        let mut admin = PgConnection::connect(base.database.url.expose())
            .await
            .expect("PostgreSQL is up (scripts/services.sh up)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let pool = hxjobs::db::connect_and_migrate(&config.database)
            .await
            .expect("connect and migrate");
        hxjobs::kafka::ensure_topics(&config)
            .await
            .expect("Kafka is up (scripts/services.sh up)");
        // The shipped jobs only: an operator's own files in jobs/ are not
        // this suite's business.
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = dir.path().join("shipped-jobs");
        hxjobs::dag::job::write_shipped(&jobs).expect("shipped jobs");
        config.jobs.dir = jobs;
        // Reports and archives in the test's own directory, never the
        // working directory's store.
        config.storage.url = file_url(&dir.path().join("store"));
        std::fs::write(dir.path().join("base.toml"), jobs_section(&config)).expect("base config");
        TestEnv {
            config,
            pool,
            name,
            admin_url: base.database.url.expose().to_string(),
            dir,
        }
    }

    /// Produces records and waits for every acknowledgement.
    pub async fn produce(&self, records: Vec<DemoRecord>) {
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || demo::produce(&config, records.into_iter(), |_| {}))
            .await
            .expect("join")
            .expect("produce");
    }

    /// Produces `events` clean demo events over `[from, to)` and drains them.
    pub async fn ingest_demo(
        &self,
        events: u64,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
        seed: u64,
    ) {
        let spec = demo::DemoSpec {
            events,
            from,
            to,
            bad_ratio: 0.0,
            duplicate_ratio: 0.0,
            seed,
            max_event_bytes: 1 << 20,
        };
        let records = demo::Generator::new(spec).expect("spec").collect();
        self.produce(records).await;
        let stop = tokio_util::sync::CancellationToken::new();
        hxjobs::ingest::drain(&self.config, &self.pool, stop)
            .await
            .expect("drain");
    }

    /// A generated report's file in the test's store.
    pub fn stored(&self, report: &hxjobs::reports::Record) -> PathBuf {
        self.dir.path().join("store").join(
            report
                .storage_key
                .as_deref()
                .expect("a report in the store"),
        )
    }

    /// Environment for running the hxjobs binary against this test's resources.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        let t = &self.config.topics;
        vec![
            (
                "DATABASE_URL",
                self.config.database.url.expose().to_string(),
            ),
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                self.config.kafka.bootstrap_servers.clone(),
            ),
            ("KAFKA_GROUP_ID", self.config.kafka.group_id.clone()),
            ("KAFKA_TOPIC_LLM_REQUESTS", t.llm_requests.clone()),
            ("KAFKA_TOPIC_USER_FEEDBACK", t.user_feedback.clone()),
            ("KAFKA_TOPIC_SYSTEM_METRICS", t.system_metrics.clone()),
            ("KAFKA_TOPIC_BUSINESS_EVENTS", t.business_events.clone()),
            ("KAFKA_TOPIC_ERROR_EVENTS", t.error_events.clone()),
            ("KAFKA_TOPIC_DEAD_LETTER", t.dead_letter.clone()),
            ("HXJOBS_STORAGE_URL", self.config.storage.url.clone()),
            // Daemons store events only through the `ingest` job's drains,
            // unless a test asks for continuous ingest.
            ("HXJOBS_INGEST_MODE", "drain".to_string()),
        ]
    }

    /// Writes a config file for the binary and returns its path. Without a
    /// `[jobs]` section of its own it points at the shipped jobs.
    pub fn config_file(&self, toml: &str) -> PathBuf {
        let path = self.dir.path().join("hxjobs.toml");
        let text = if toml.contains("[jobs]") {
            toml.to_string()
        } else {
            format!("{}{toml}", jobs_section(&self.config))
        };
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// A config file `<name>.toml` of its own whose jobs directory
    /// (`<name>-jobs/`) holds `jobs` (file stem, text), then `extra`.
    pub fn config_with_jobs(&self, name: &str, jobs: &[(&str, String)], extra: &str) -> PathBuf {
        let dir = self.dir.path().join(format!("{name}-jobs"));
        std::fs::create_dir_all(&dir).expect("jobs dir");
        for (stem, text) in jobs {
            std::fs::write(dir.join(format!("{stem}.toml")), text).expect("job file");
        }
        let path = self.dir.path().join(format!("{name}.toml"));
        let jobs_dir = dir.display().to_string();
        std::fs::write(&path, format!("[jobs]\ndir = {jobs_dir:?}\n{extra}")).expect("config");
        path
    }

    /// `hxjobs --config CONFIG ARGS…` with this test's environment, to run.
    pub fn hxjobs(&self, config: &std::path::Path, args: &[&str]) -> std::process::Command {
        let mut cmd = self.command();
        cmd.arg("--config").arg(config).args(args);
        cmd
    }

    /// Runs hxjobs with `config` as the login name `user` (what the ledger
    /// and the audit log record as `cli:<user>`) and waits for it.
    pub fn run_as(
        &self,
        config: &std::path::Path,
        user: &str,
        args: &[&str],
    ) -> std::process::Output {
        self.hxjobs(config, args)
            .env("USER", user)
            .output()
            .expect("run hxjobs")
    }

    /// A `Command` for the hxjobs binary with this test's environment.
    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hxjobs"));
        // The shipped jobs unless a test passes a --config of its own.
        cmd.env("HXJOBS_CONFIG", self.dir.path().join("base.toml"));
        for (k, v) in self.env_vars() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Sum of high watermarks over one topic's partitions.
    pub fn high_watermarks(&self, topic: &str) -> i64 {
        let consumer =
            hxjobs::kafka::build_consumer(&self.config.kafka, "watermarks").expect("consumer");
        hxjobs::kafka::partitions_of(&consumer, &self.config.kafka, topic)
            .expect("partitions")
            .into_iter()
            .map(|p| {
                hxjobs::kafka::watermarks(&consumer, &self.config.kafka, topic, p)
                    .expect("watermarks")
                    .1
            })
            .sum()
    }

    /// Every message on `topic` from the start: (payload, headers as pairs).
    /// A reader that gets nothing for 5 s is replaced by a new one at the
    /// next offset (the Nisshi broker sometimes stops serving one reader).
    pub fn read_topic(&self, topic: &str, expected: usize) -> Vec<ReadMessage> {
        use rdkafka::message::Headers;
        use rdkafka::Message;
        let partitions =
            hxjobs::kafka::partitions_of(&self.build_reader(), &self.config.kafka, topic)
                .expect("partitions");
        let mut next: Vec<i64> = vec![0; partitions.len()];
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while out.len() < expected && std::time::Instant::now() < deadline {
            let consumer = self.build_reader();
            let mut tpl = TopicPartitionList::new();
            for (i, p) in partitions.iter().enumerate() {
                tpl.add_partition_offset(topic, *p, Offset::Offset(next[i]))
                    .expect("tpl");
            }
            consumer.assign(&tpl).expect("assign");
            let mut last = std::time::Instant::now();
            while out.len() < expected && last.elapsed() < Duration::from_secs(5) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                last = std::time::Instant::now();
                if let Some(i) = partitions.iter().position(|p| *p == m.partition()) {
                    next[i] = m.offset() + 1;
                }
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((m.payload().map(<[u8]>::to_vec), headers));
            }
        }
        out
    }

    fn build_reader(&self) -> BaseConsumer {
        hxjobs::kafka::build_consumer_with(
            &self.config.kafka,
            "reader",
            hxjobs::kafka::LARGE_FETCH_BYTES,
        )
        .expect("consumer")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect(sql)
    }

    /// Drops the database. Topics stay: deleting one topic on the Nisshi
    /// broker can remove other topics too.
    pub async fn cleanup(self) {
        // Closing waits for every connection a test still holds; a test
        // that forgot one is not left hanging (the database is dropped
        // with FORCE below).
        if tokio::time::timeout(std::time::Duration::from_secs(15), self.pool.close())
            .await
            .is_err()
        {
            eprintln!(
                "cleanup: a connection of {} was still checked out",
                self.name
            );
        }
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await;
        }
    }
}

fn jobs_section(config: &Config) -> String {
    format!(
        "[jobs]\ndir = {:?}\n",
        config.jobs.dir.display().to_string()
    )
}

/// `file:///…/` for a local directory.
pub fn file_url(dir: &std::path::Path) -> String {
    url::Url::from_directory_path(dir)
        .expect("an absolute directory")
        .to_string()
}

pub fn ts(s: &str) -> chrono::DateTime<chrono::Utc> {
    hxjobs::time::parse_instant(s).expect("valid time")
}
