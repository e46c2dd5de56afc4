//! Reports and archives in an object store every node reaches: two nodes
//! (separate working directories, one database, one S3-compatible store)
//! serve each other's reports and restore each other's archives; DuckDB
//! reads an archived day with the counts PostgreSQL had; with the store
//! down nothing is dropped, the retention run fails and retries, and
//! downloads answer 503; files written before the store are migrated once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hxjobs::dag::catalog::Catalog;
use hxjobs::db::Pools;
use hxjobs::ops::{Actor, Ops};
use sha2::{Digest, Sha256};

use crate::common::{file_url, ts, TestEnv};
use crate::http::{free_port, request};

/// The S3-compatible server (moto's server mode, from PyPI) that
/// `scripts/services.sh s3` installs; each test starts its own.
struct S3 {
    child: Option<Child>,
    port: u16,
}

fn s3_venv() -> PathBuf {
    std::env::var_os("HXJOBS_S3_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/hxjobs-s3")
        })
}

impl S3 {
    fn start() -> S3 {
        let mut s3 = S3 {
            child: None,
            port: free_port(),
        };
        s3.up();
        s3
    }

    /// Starts the server (empty: moto keeps objects in memory).
    fn up(&mut self) {
        let server = s3_venv().join("bin/moto_server");
        assert!(
            server.is_file(),
            "{} is missing: run scripts/services.sh s3",
            server.display()
        );
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "the S3 server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn bucket(&self, name: &str) {
        let r = request(self.port, "PUT", &format!("/{name}"), None, None);
        assert_eq!(r.status, 200, "create bucket: {}", r.text());
    }

    /// An object's bytes, read by another S3 client (boto3, which moto
    /// installs).
    fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = Command::new(s3_venv().join("bin/python"))
            .args([
                "-c",
                "import boto3, sys\n\
                 s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                     aws_access_key_id='hxjobs-test', aws_secret_access_key='hxjobs-test-secret')\n\
                 sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[2], Key=sys.argv[3])['Body'].read())",
                &format!("http://127.0.0.1:{}", self.port),
                bucket,
                key,
            ])
            .output()
            .expect("python with boto3 (scripts/services.sh s3)");
        assert!(
            out.status.success(),
            "{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The environment a node needs to reach `s3://bucket/prefix` here.
    fn env(&self, url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("HXJOBS_STORAGE_URL", url.to_string()),
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "hxjobs-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "hxjobs-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.down();
    }
}

/// One machine of a team's set-up: its own working directory and port.
struct Node {
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    env: Vec<(&'static str, String)>,
}

/// `hxjobs serve`, stopped when dropped.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Node {
    fn new(env: &TestEnv, name: &str, storage: Vec<(&'static str, String)>, extra: &str) -> Node {
        let dir = env.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let port = free_port();
        let config = dir.join("hxjobs.toml");
        let jobs = env.dir.path().join("shipped-jobs");
        let text = if extra.contains("[jobs]") {
            String::new()
        } else {
            format!("[jobs]\ndir = {:?}\n", jobs.display().to_string())
        };
        std::fs::write(
            &config,
            format!(
                "{text}[api]\nhost = \"127.0.0.1\"\nport = {port}\n\
                 [reports]\ndefinitions_dir = {:?}\noutput_dir = \"var/reports\"\n\
                 [storage]\ntimeout_secs = 5\nretries = 0\n{extra}",
                concat!(env!("CARGO_MANIFEST_DIR"), "/reports")
            ),
        )
        .expect("config");
        Node {
            dir,
            config,
            port,
            env: storage,
        }
    }

    fn command(&self, env: &TestEnv, args: &[&str]) -> Command {
        let mut cmd = env.hxjobs(&self.config, args);
        cmd.current_dir(&self.dir);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, env: &TestEnv, args: &[&str]) -> String {
        let out = self.command(env, args).output().expect("hxjobs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "hxjobs {args:?}: {text}");
        assert!(!text.contains("hxjobs-test-secret"), "{text}");
        text
    }

    fn serve(&self, env: &TestEnv) -> Serving {
        let child = self
            .command(env, &["serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve");
        let serving = Serving(child);
        let until = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "the API did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        serving
    }
}

/// Events of a day by type, as PostgreSQL has them.
async fn counts_by_type(env: &TestEnv, day: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT event_type, count(*) FROM events WHERE event_day = $1::date GROUP BY 1 ORDER BY 1",
    )
    .bind(day)
    .fetch_all(&env.pool)
    .await
    .expect("counts")
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_each_others_reports_and_restore_each_others_archives() {
    let env = TestEnv::new("storage_two_nodes").await;
    env.ingest_demo(3000, ts("2026-03-01"), ts("2026-03-03"), 29)
        .await;
    let s3 = S3::start();
    s3.bucket("hxjobs-team");
    let url = "s3://hxjobs-team/prod";
    let a = Node::new(&env, "node-a", s3.env(url), "");
    let b = Node::new(&env, "node-b", s3.env(url), "");
    let (_a, _b) = (a.serve(&env), b.serve(&env));

    // Node B's health shows the store up, with its latency.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let health = request(b.port, "GET", "/health", None, None).json();
        if health["checks"]["storage"]["status"] == "up" {
            assert!(health["checks"]["storage"]["latency_ms"].as_f64().is_some());
            break;
        }
        assert!(Instant::now() < until, "storage never up: {health}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // A report generated through node A's API is served by node B's.
    let made = request(
        a.port,
        "POST",
        "/reports/generate",
        None,
        Some(br#"{"report_type": "daily_summary", "format": "pdf", "period_start": "2026-03-01"}"#),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let id = made.json()["report_id"].as_i64().expect("id");
    let record = request(b.port, "GET", &format!("/reports/{id}"), None, None).json();
    let key = record["storage_key"].as_str().expect("key").to_string();
    let from_b = request(
        b.port,
        "GET",
        &format!("/reports/{id}/download"),
        None,
        None,
    );
    assert_eq!(from_b.status, 200, "{}", from_b.text());
    assert!(from_b.body.starts_with(b"%PDF-"));
    assert_eq!(Some(sha(&from_b.body).as_str()), record["sha256"].as_str());
    assert_eq!(
        s3.object("hxjobs-team", &format!("prod/{key}")),
        from_b.body
    );
    // Nothing of it on either machine's disk; the CLI on B copies it out.
    assert!(!a.dir.join("var/reports").exists() && !a.dir.join("var/store").exists());
    let copy = b.dir.join("copy.pdf");
    b.run(
        &env,
        &[
            "report",
            "get",
            &id.to_string(),
            "-o",
            copy.to_str().expect("path"),
        ],
    );
    assert_eq!(std::fs::read(&copy).expect("copy"), from_b.body);

    // The daily job's report task renders on node A; node B serves it.
    a.run(
        &env,
        &[
            "tasks",
            "test",
            "hxp_daily_aggregation",
            "rollup",
            "--at",
            "2026-03-02T00:30:00Z",
        ],
    );
    let said = a.run(
        &env,
        &[
            "tasks",
            "test",
            "hxp_daily_aggregation",
            "report",
            "--at",
            "2026-03-02T00:30:00Z",
        ],
    );
    assert!(
        said.contains("s3://hxjobs-team/prod/reports/daily_summary-"),
        "{said}"
    );
    let daily: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM reports WHERE report_type = 'daily_summary' AND id <> $1 AND status = 'done'",
    )
    .bind(id)
    .fetch_all(&env.pool)
    .await
    .expect("the job's report");
    assert!(!daily.is_empty());
    for rid in daily {
        let r = request(
            b.port,
            "GET",
            &format!("/reports/{rid}/download"),
            None,
            None,
        );
        assert_eq!(r.status, 200, "report {rid}: {}", r.text());
        assert!(!r.body.is_empty());
    }

    // Retention on node A archives both days into the store and drops them.
    let day1 = counts_by_type(&env, "2026-03-01").await;
    let day2 = counts_by_type(&env, "2026-03-02").await;
    assert!(day1.len() >= 4, "{day1:?}");
    let said = a.run(&env, &["retention"]);
    assert!(said.contains("events/event_date=2026-03-01/"), "{said}");
    assert_eq!(env.count("SELECT count(*) FROM events").await, 0);
    let listed = b.run(&env, &["archive", "list"]);
    assert!(
        listed.contains(
            "s3://hxjobs-team/prod/events/event_date=2026-03-02/events-2026-03-02.parquet"
        ),
        "{listed}"
    );

    // DuckDB reads the archived day with the counts PostgreSQL had: the
    // objects as the store serves them, in their Hive layout.
    let lake = env.dir.path().join("lake");
    for d in ["2026-03-01", "2026-03-02"] {
        let key = format!("events/event_date={d}/events-{d}.parquet");
        let file = lake.join(&key);
        std::fs::create_dir_all(file.parent().expect("dir")).expect("lake");
        std::fs::write(&file, s3.object("hxjobs-team", &format!("prod/{key}"))).expect("copy");
    }
    let query = format!(
        "SELECT event_type, count(*) FROM read_parquet('{}/events/*/*.parquet', hive_partitioning = true) \
         WHERE event_date = '2026-03-01' GROUP BY 1 ORDER BY 1",
        lake.display()
    );
    let out = Command::new(s3_venv().join("bin/python"))
        .args([
            "-c",
            "import duckdb, sys\nfor t, n in duckdb.sql(sys.argv[1]).fetchall(): print(f'{t} {n}')",
            &query,
        ])
        .output()
        .expect("python with duckdb (scripts/services.sh s3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Vec<(String, i64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (t, n) = l.split_once(' ').expect("type count");
            (t.to_string(), n.parse().expect("count"))
        })
        .collect();
    assert_eq!(read, day1, "DuckDB and PostgreSQL agree per event type");

    // Node B restores a day node A archived.
    let said = b.run(&env, &["archive", "restore", "--day", "2026-03-02"]);
    assert!(said.contains("restored"), "{said}");
    assert_eq!(counts_by_type(&env, "2026-03-02").await, day2);

    // Bytes written (by A's API) and read (by B's) are counted.
    let counted = |port: u16, direction: &str| {
        let metrics = request(port, "GET", "/metrics", None, None).text();
        let line = format!("hxjobs_storage_bytes_total{{direction=\"{direction}\"}}");
        metrics
            .lines()
            .find(|l| l.starts_with(&line))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{line} in {metrics}"))
    };
    assert!(counted(a.port, "written") >= from_b.body.len() as f64);
    assert!(counted(b.port, "read") >= from_b.body.len() as f64);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_nothing_is_dropped_and_the_run_retries_until_it_is_back() {
    let env = TestEnv::new("storage_down").await;
    env.ingest_demo(1500, ts("2026-03-01"), ts("2026-03-03"), 31)
        .await;
    let mut s3 = S3::start();
    s3.bucket("hxjobs-down");
    let jobs = env.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).expect("jobs");
    std::fs::write(
        jobs.join("retention_now.toml"),
        r#"name = "retention_now"
schedule = "0 4 * * *"
interval = "day"
start_date = "2026-01-01"

[tasks.retention]
kind = "retention"
retries = 8
retry_delay_secs = 2
retry_delay_max_secs = 2
"#,
    )
    .expect("job");
    let node = Node::new(
        &env,
        "node",
        s3.env("s3://hxjobs-down/x"),
        &format!("[jobs]\ndir = {:?}\n", jobs.display().to_string()),
    );
    let _serving = node.serve(&env);
    let said = node.run(
        &env,
        &[
            "report",
            "generate",
            "--type",
            "daily_summary",
            "--period-start",
            "2026-03-01",
        ],
    );
    assert!(said.contains("s3://hxjobs-down/x/reports/"), "{said}");
    let id: i64 = sqlx::query_scalar("SELECT max(id) FROM reports")
        .fetch_one(&env.pool)
        .await
        .expect("id");
    let total = env.count("SELECT count(*) FROM events").await;

    s3.down();
    // A download while the store is down: 503 with a code that says so.
    let r = request(
        node.port,
        "GET",
        &format!("/reports/{id}/download"),
        None,
        None,
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "storage_unavailable", "{}", r.text());
    assert!(!r.text().contains("hxjobs-test-secret"));

    // The retention run fails while the store is down and drops nothing.
    let run = node
        .command(&env, &["run", "retention_now"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let until = Instant::now() + Duration::from_secs(60);
    let error: String = loop {
        let failed: Option<String> = sqlx::query_scalar(
            "SELECT error FROM task_attempts WHERE task = 'retention' AND outcome = 'failed' LIMIT 1",
        )
        .fetch_optional(&env.pool)
        .await
        .expect("attempts");
        if let Some(e) = failed {
            break e;
        }
        assert!(Instant::now() < until, "no failed attempt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.contains("nothing was removed"), "{error}");
    assert!(error.contains("s3://hxjobs-down/x"), "{error}");
    assert_eq!(env.count("SELECT count(*) FROM events").await, total);
    assert_eq!(env.count("SELECT count(*) FROM event_archives").await, 0);

    // The store is back: the next attempt archives and drops.
    s3.up();
    s3.bucket("hxjobs-down");
    let out = tokio::task::spawn_blocking(move || run.wait_with_output())
        .await
        .expect("join")
        .expect("run output");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.count("SELECT count(*) FROM events").await, 0);
    assert_eq!(
        env.count("SELECT sum(rows)::int8 FROM event_archives WHERE storage_key IS NOT NULL")
            .await,
        total
    );
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM task_attempts WHERE task = 'retention' ORDER BY id",
    )
    .fetch_all(&env.pool)
    .await
    .expect("outcomes");
    assert_eq!(outcomes.first().map(String::as_str), Some("failed"));
    assert_eq!(outcomes.last().map(String::as_str), Some("success"));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_from_before_the_store_are_migrated_once_and_verified() {
    let mut env = TestEnv::new("storage_migrate").await;
    env.ingest_demo(800, ts("2026-03-01"), ts("2026-03-02"), 37)
        .await;
    let rows = env.count("SELECT count(*) FROM events").await;
    // As an older hxjobs left them: a report in reports.output_dir and an
    // archived day in a local file, neither with a key in the store.
    let old_store = hxjobs::storage::Store::open(&hxjobs::config::StorageConfig {
        url: file_url(&env.dir.path().join("old-archive")),
        ..env.config.storage.clone()
    })
    .expect("old");
    let plan = hxjobs::retention::plan(&env.pool, &env.config.retention, ts("2026-04-01"))
        .await
        .expect("plan");
    let reports_dir = env.dir.path().join("old-reports");
    hxjobs::retention::apply(&env.pool, &old_store, &reports_dir, &plan, None)
        .await
        .expect("archive");
    let local: PathBuf = env
        .dir
        .path()
        .join("old-archive/events/event_date=2026-03-01/events-2026-03-01.parquet");
    sqlx::query("UPDATE event_archives SET storage_key = NULL, path = $1")
        .bind(local.display().to_string())
        .execute(&env.pool)
        .await
        .expect("legacy archive");
    // A recorded archive its file does not match: never copied.
    sqlx::query(
        "INSERT INTO event_archives (day, path, rows, checksum, bytes)
         VALUES ('2026-02-27', $1, 1, 0, 10)",
    )
    .bind(local.display().to_string())
    .execute(&env.pool)
    .await
    .expect("mismatched archive");
    std::fs::create_dir_all(&reports_dir).expect("dir");
    let pdf = b"%PDF-1.7 an old report".to_vec();
    std::fs::write(reports_dir.join("old-1.pdf"), &pdf).expect("old report");
    sqlx::query(
        "INSERT INTO reports (report_type, period_start, period_end, format, status, path, size, sha256)
         VALUES ('daily_summary', '2026-03-01', '2026-03-02', 'pdf', 'done', 'old-1.pdf', $1, $2),
                ('daily_summary', '2026-03-01', '2026-03-02', 'pdf', 'done', 'elsewhere.pdf', 1, 'x')",
    )
    .bind(pdf.len() as i64)
    .bind(sha(&pdf))
    .execute(&env.pool)
    .await
    .expect("legacy reports");

    env.config.reports.output_dir = reports_dir;
    let ops = Ops::new(
        Arc::new(env.config.clone()),
        Pools::new(env.pool.clone()),
        Arc::new(Catalog::fixed(Vec::new())),
    );
    let admin = Actor::cli();
    let done = ops.migrate_storage(&admin).await.expect("migrate");
    assert_eq!(done.reports.len(), 1, "{done:?}");
    assert_eq!(done.archives.len(), 1, "{done:?}");
    assert_eq!(done.skipped.len(), 2, "{done:?}");
    assert!(done.skipped[0].contains("elsewhere.pdf"), "{done:?}");
    assert!(done.skipped[1].contains("did not verify"), "{done:?}");
    assert!(!env
        .dir
        .path()
        .join("store/events/event_date=2026-02-27")
        .exists());
    let store_dir: &Path = &env.dir.path().join("store");
    assert_eq!(
        std::fs::read(store_dir.join("reports/old-1.pdf")).expect("in the store"),
        pdf
    );
    assert!(store_dir
        .join("events/event_date=2026-03-01/events-2026-03-01.parquet")
        .is_file());
    // Served and restored from the store once the local files are gone.
    std::fs::remove_dir_all(env.dir.path().join("old-archive")).expect("rm");
    std::fs::remove_file(env.config.reports.output_dir.join("old-1.pdf")).expect("rm");
    let id: i64 = sqlx::query_scalar("SELECT id FROM reports WHERE path = 'old-1.pdf'")
        .fetch_one(&env.pool)
        .await
        .expect("id");
    let (_, mut stream) = ops.report_file(&admin, id).await.expect("served");
    let mut got = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        got.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(got, pdf);
    let restored = ops
        .restore_archive(&admin, "2026-03-01".parse().expect("day"))
        .await
        .expect("restore");
    assert_eq!(restored as i64, rows);
    // A second run changes nothing.
    let again = ops.migrate_storage(&admin).await.expect("again");
    assert!(
        again.reports.is_empty() && again.archives.is_empty(),
        "{again:?}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit WHERE action = 'storage_migrate' AND outcome = 'ok'")
            .await,
        2
    );
    env.cleanup().await;
}
