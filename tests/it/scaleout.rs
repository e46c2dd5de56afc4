//! Continuous ingest by several daemons sharing the partitions: workers
//! killed, stopped, started and added while events are produced.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hxjobs::demo::{DemoRecord, DemoSpec, Generator, RecordKind};
use serde_json::Value;

use crate::common::{ts, TestEnv};

/// A daemon ingesting continuously (no API, no jobs), its log in `dir`.
fn worker(env: &TestEnv, config: &std::path::Path, name: &str) -> Child {
    let log = env.dir.path().join(format!("{name}.log"));
    let mut cmd: Command = env.hxjobs(config, &["daemon", "--no-api"]);
    cmd.env("HXJOBS_INGEST_MODE", "continuous")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    cmd.spawn().expect("spawn hxjobs daemon")
}

fn log_of(env: &TestEnv, name: &str) -> String {
    std::fs::read_to_string(env.dir.path().join(format!("{name}.log"))).unwrap_or_default()
}

/// SIGTERM, then wait for a clean exit.
fn stop(child: &mut Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "daemon exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("daemon did not stop within 30 s of SIGTERM");
}

async fn distinct_owners(env: &TestEnv) -> i64 {
    env.count(&format!(
        "SELECT count(DISTINCT owner) FROM consumer_offsets
         WHERE consumer_group = '{}' AND owner IS NOT NULL",
        env.config.kafka.group_id
    ))
    .await
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: not within {limit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_come_and_go_store_every_event_once() {
    let env = TestEnv::new("scaleout").await;
    assert_eq!(
        env.config.topics.partitions, 3,
        "5 topics × 3 = 15 partitions"
    );
    let config = env.config_with_jobs(
        "workers",
        &[],
        "[ingest]\nbatch_size = 500\nstale_after_secs = 4\nmax_batch_delay_ms = 200\n\
         [live_stats]\nenabled = false\n",
    );

    // What will be produced, in 30 rounds: good events, duplicates, bad ones.
    let mut rounds: Vec<Vec<DemoRecord>> = Vec::new();
    let mut good: HashSet<String> = HashSet::new();
    let mut bad = 0i64;
    for seed in 0..30u64 {
        let records: Vec<DemoRecord> = Generator::new(DemoSpec {
            events: 400,
            from: ts("2026-03-01"),
            to: ts("2026-03-02"),
            bad_ratio: 0.03,
            duplicate_ratio: 0.03,
            seed: 1000 + seed,
            max_event_bytes: 1 << 20,
        })
        .expect("spec")
        .collect();
        for r in &records {
            match r.kind {
                RecordKind::Event => {
                    let v: Value = serde_json::from_slice(r.payload.as_deref().expect("payload"))
                        .expect("json");
                    good.insert(v["event_id"].as_str().expect("id").to_string());
                }
                RecordKind::Duplicate => {}
                RecordKind::Bad(_) => bad += 1,
            }
        }
        rounds.push(records);
    }
    assert!(bad > 0);

    let producer = {
        let config = env.config.clone();
        tokio::spawn(async move {
            for records in rounds {
                let config = config.clone();
                tokio::task::spawn_blocking(move || {
                    hxjobs::demo::produce(&config, records.into_iter(), |_| {})
                })
                .await
                .expect("join")
                .expect("produce");
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
        })
    };

    let mut w1 = worker(&env, &config, "w1");
    let mut w2 = worker(&env, &config, "w2");
    let mut w3 = worker(&env, &config, "w3");
    wait_for(
        "three workers share the partitions",
        Duration::from_secs(60),
        async || distinct_owners(&env).await == 3,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // One dies without a word; its partitions move to the others.
    w1.kill().expect("SIGKILL");
    let _ = w1.wait();
    wait_for(
        "the killed worker's partitions move",
        Duration::from_secs(30),
        async || {
            env.count(&format!(
                "SELECT count(*) FROM consumer_offsets WHERE consumer_group = '{}'
             AND owner IN (SELECT worker FROM ingest_workers WHERE mode = 'continuous')",
                env.config.kafka.group_id
            ))
            .await
                == 15
                && distinct_owners(&env).await == 2
        },
    )
    .await;

    // One is stopped and started again.
    stop(&mut w2);
    let mut w2 = worker(&env, &config, "w2b");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A fourth joins and gets a share.
    let mut w4 = worker(&env, &config, "w4");
    wait_for(
        "three workers share the partitions again",
        Duration::from_secs(60),
        async || distinct_owners(&env).await == 3,
    )
    .await;

    producer.await.expect("producer");
    let produced_by = chrono::Utc::now();
    // Everything the broker holds is stored.
    let mut ends = 0;
    for t in env.config.topics.event_topic_names() {
        ends += env.high_watermarks(&t);
    }
    wait_for(
        "the workers catch up",
        Duration::from_secs(120),
        async || {
            env.count("SELECT COALESCE(sum(next_offset), 0)::int8 FROM consumer_offsets")
                .await
                == ends
        },
    )
    .await;
    // Hourly readiness across workers: every partition's stored position
    // passed the broker's end read after production stopped.
    let topics = env.config.topics.event_topic_names();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let group = env.config.kafka.group_id.clone();
    wait_for(
        "every partition caught up",
        Duration::from_secs(30),
        async || {
            hxjobs::ingest::lease::caught_up_through(&env.pool, &group, &names)
                .await
                .expect("caught up")
                .is_some_and(|t| t >= produced_by)
        },
    )
    .await;
    assert_eq!(
        hxjobs::rollup::readiness(
            &env.pool,
            &group,
            &names,
            produced_by,
            chrono::TimeDelta::hours(1),
            produced_by
        )
        .await
        .expect("readiness"),
        hxjobs::rollup::Readiness::Ready
    );
    for w in [&mut w2, &mut w3, &mut w4] {
        stop(w);
    }
    // Clean stops gave every partition back and left the group.
    assert_eq!(
        env.count("SELECT count(*) FROM consumer_offsets WHERE owner IS NOT NULL")
            .await,
        0,
        "{}",
        log_of(&env, "w4")
    );
    assert_eq!(env.count("SELECT count(*) FROM ingest_workers").await, 0);
    // Each daemon said it started, and so did its worker (these lines follow
    // the making of Kafka clients, which once swallowed them).
    for name in ["w2", "w3", "w4"] {
        let log = log_of(&env, name);
        for line in [
            "daemon started",
            "ingest worker started",
            "ingest worker stopped",
        ] {
            assert!(log.contains(line), "{name} did not log {line:?}:\n{log}");
        }
    }

    // Every good event once, every bad one a dead letter once, no gap.
    assert_eq!(
        env.count("SELECT count(*) FROM events").await,
        good.len() as i64
    );
    assert_eq!(
        env.count("SELECT count(DISTINCT event_id) FROM events")
            .await,
        good.len() as i64
    );
    let ids: Vec<String> = sqlx::query_scalar("SELECT event_id::text FROM events")
        .fetch_all(&env.pool)
        .await
        .expect("ids");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), good);
    assert_eq!(env.count("SELECT count(*) FROM dead_letters").await, bad);
    assert_eq!(env.count("SELECT count(*) FROM ingest_gaps").await, 0);

    // The commit log: per partition, the committed ranges follow each other
    // from 0 to the end with no overlap and no hole; epochs only rise along
    // the offsets; each epoch belongs to one worker. So at any offset, one
    // owner committed it.
    let commits: Vec<(String, i32, i64, String, i64, i64)> = sqlx::query_as(
        "SELECT topic, partition, epoch, worker, from_offset, to_offset FROM ingest_commits
         ORDER BY topic, partition, from_offset",
    )
    .fetch_all(&env.pool)
    .await
    .expect("commits");
    // (topic, partition) → [(epoch, worker, from, to)] in offset order.
    type Commits = Vec<(i64, String, i64, i64)>;
    let mut by_partition: HashMap<(String, i32), Commits> = HashMap::new();
    for (t, p, e, w, from, to) in commits {
        by_partition
            .entry((t, p))
            .or_default()
            .push((e, w, from, to));
    }
    assert_eq!(by_partition.len(), 15, "every partition had commits");
    let mut moved = 0;
    let mut workers_seen: HashSet<String> = HashSet::new();
    for ((topic, partition), list) in &by_partition {
        let mut next = 0;
        let mut epoch = 0;
        let mut owner_of: HashMap<i64, &str> = HashMap::new();
        for (e, w, from, to) in list {
            assert_eq!(
                *from, next,
                "{topic}/{partition}: a hole or an overlap at {from}"
            );
            assert!(to > from);
            assert!(*e >= epoch, "{topic}/{partition}: epoch {e} after {epoch}");
            assert_eq!(
                *owner_of.entry(*e).or_insert(w.as_str()),
                w.as_str(),
                "{topic}/{partition}: epoch {e} committed by two workers"
            );
            next = *to;
            epoch = *e;
            workers_seen.insert(w.clone());
        }
        let stored: i64 = sqlx::query_scalar(
            "SELECT next_offset FROM consumer_offsets WHERE topic = $1 AND partition = $2",
        )
        .bind(topic)
        .bind(partition)
        .fetch_one(&env.pool)
        .await
        .expect("offset");
        assert_eq!(next, stored, "{topic}/{partition}");
        if owner_of.len() > 1 {
            moved += 1;
        }
    }
    assert!(moved > 0, "some partition changed hands");
    assert_eq!(
        workers_seen.len(),
        5,
        "all five worker processes committed: {workers_seen:?}"
    );
    env.cleanup().await;
}

/// A steady load while two workers ingest continuously: every event
/// reaches PostgreSQL and the time each took is measured (the target, p99
/// <= 2 s over 60 s, is checked by `hxjobs bench latency`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_load_is_stored_as_it_arrives() {
    let env = TestEnv::new("latency").await;
    let config_path = env.config_with_jobs("workers", &[], "[live_stats]\nenabled = false\n");
    let mut w1 = worker(&env, &config_path, "w1");
    let mut w2 = worker(&env, &config_path, "w2");
    hxjobs::bench::scaleout::wait_owned(&env.pool, &env.config, 2, Duration::from_secs(60))
        .await
        .expect("two workers share the partitions");
    let latency = hxjobs::bench::scaleout::measure_latency(&env.config, &env.pool, 1000, 10)
        .await
        .expect("measured");
    println!("{latency}");
    assert_eq!(latency.produced, 10_000);
    assert_eq!(latency.visible, latency.produced, "{latency}");
    assert_eq!(env.count("SELECT count(*) FROM events").await, 10_000);

    // What /health and `hxjobs status` say about the partitions.
    let mut config = env.config.clone();
    config.ingest.mode = hxjobs::config::IngestMode::Continuous;
    let mut watch = hxjobs::web::StallWatch::default();
    let check = hxjobs::web::IngestCheck::read(&config, &env.pool, None, &mut watch)
        .await
        .expect("ingest check");
    assert_eq!((check.status, check.workers), ("ok", 2));
    assert_eq!(check.partitions.len(), 15);
    let owners: HashSet<String> = [w1.id(), w2.id()]
        .iter()
        .map(|pid| format!(":{pid}"))
        .collect();
    for p in &check.partitions {
        let owner = p.owner.as_deref().expect("owned");
        assert!(owners.iter().any(|o| owner.ends_with(o)), "{owner}");
        assert!(p.epoch >= 1 && p.lag.is_some() && p.last_commit_age_secs.is_some());
    }
    let out = env
        .hxjobs(&config_path, &["status"])
        .output()
        .expect("hxjobs status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for owner in &owners {
        assert!(text.contains(owner.as_str()), "{text}");
    }
    assert!(!text.contains("(none)"), "{text}");
    stop(&mut w1);
    stop(&mut w2);
    env.cleanup().await;
}

/// The end of a backlog commits as soon as a worker has read up to the
/// broker's ends, not when its batch delay runs out (here ten minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_backlog_commits_without_waiting_for_the_batch_delay() {
    let env = TestEnv::new("backlog_end").await;
    let spec = DemoSpec {
        events: 700,
        from: ts("2026-03-01"),
        to: ts("2026-03-02"),
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed: 11,
        max_event_bytes: 1 << 20,
    };
    env.produce(Generator::new(spec).expect("spec").collect())
        .await;
    let mut config = env.config.clone();
    config.ingest.batch_size = 100_000;
    config.ingest.max_batch_delay_ms = 600_000;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(hxjobs::ingest::worker::run(
        std::sync::Arc::new(config),
        env.pool.clone(),
        "backlog-end".into(),
        stop.clone(),
    ));
    wait_for("every event stored", Duration::from_secs(60), async || {
        env.count("SELECT count(*) FROM events").await == 700
    })
    .await;
    // In one transaction: nothing was handed over before the ends were reached.
    assert_eq!(
        env.count("SELECT sum(to_offset - from_offset)::int8 FROM ingest_commits")
            .await,
        700
    );
    assert_eq!(
        env.count("SELECT count(DISTINCT committed_at) FROM ingest_commits")
            .await,
        1
    );
    stop.cancel();
    worker.await.expect("worker stops");
    env.cleanup().await;
}

/// Polls `/health` (every 200 ms, `tries` times) until it answers `status`
/// with `checks.ingest.status` = `ingest`; its body.
async fn health_until(port: u16, status: u16, ingest: &str, tries: u32) -> Value {
    let mut last = Value::Null;
    for _ in 0..tries {
        let reply = crate::http::request(port, "GET", "/health", None, None);
        last = reply.json();
        if reply.status == status && last["checks"]["ingest"]["status"] == ingest {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("/health never answered {status} with ingest {ingest}: {last}");
}

/// `n` clean demo events over one day.
fn clean_events(n: u64, seed: u64) -> Vec<DemoRecord> {
    Generator::new(DemoSpec {
        events: n,
        from: ts("2026-03-01"),
        to: ts("2026-03-02"),
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed,
        max_event_bytes: 1 << 20,
    })
    .expect("spec")
    .collect()
}

/// Ends every PostgreSQL session of the test's database but the caller's,
/// as a restart or a failover does.
async fn terminate_sessions(env: &TestEnv) -> i64 {
    let admin = hxjobs::config::Config::load(None).expect("config");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin.database.url.expose())
        .await
        .expect("admin connection");
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()) t",
    )
    .bind(&env.name)
    .fetch_one(&mut conn)
    .await
    .expect("terminate sessions")
}

/// A continuous worker whose PostgreSQL sessions are all terminated takes
/// its partitions again and stores what arrives after, and `/health` stays
/// healthy because ingest really moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_recovers_its_partitions_after_its_sessions_are_terminated() {
    let env = TestEnv::new("session_lost").await;
    let config_path = env.config_with_jobs(
        "workers",
        &[],
        "[ingest]\nstale_after_secs = 4\nmax_batch_delay_ms = 200\nstalled_after_secs = 5\n\
         [api]\nhost = \"127.0.0.1\"\n[live_stats]\nenabled = false\n",
    );
    let log = env.dir.path().join("daemon.log");
    let port = crate::http::free_port();
    let child = env
        .hxjobs(&config_path, &["daemon"])
        .env("HXJOBS_INGEST_MODE", "continuous")
        .env("BATCH_PROCESSING_API_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("daemon");
    let server = crate::api::Server { child, port };

    env.produce(clean_events(300, 21)).await;
    wait_for(
        "the first events stored",
        Duration::from_secs(60),
        async || env.count("SELECT count(*) FROM events").await == 300,
    )
    .await;
    let ended = terminate_sessions(&env).await;
    assert!(ended > 0, "the daemon had sessions to end");

    env.produce(clean_events(300, 22)).await;
    wait_for(
        "events produced after the sessions ended stored",
        Duration::from_secs(60),
        async || env.count("SELECT count(*) FROM events").await == 600,
    )
    .await;
    let log_text = crate::operator::read(&log);
    assert!(
        log_text.contains("ingest worker stopped; starting again"),
        "{log_text}"
    );
    // Every partition owned again, by the one live daemon.
    assert_eq!(distinct_owners(&env).await, 1);
    // Health agrees: nothing stalled.
    health_until(port, 200, "ok", 50).await;
    drop(server);
    env.cleanup().await;
}

/// A partition whose lease a live session holds but which nobody reads
/// turns `/health` unhealthy (`stalled`), the metric counts it and the
/// console says so; once it is read again, health recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_owned_but_not_moving_turns_health_red() {
    let env = TestEnv::new("stalled").await;
    env.ingest_demo(200, ts("2026-03-01"), ts("2026-03-02"), 31)
        .await;
    let config_path = env.config_with_jobs(
        "serve",
        &[],
        "[ingest]\nstalled_after_secs = 2\n[api]\nhost = \"127.0.0.1\"\n[live_stats]\nenabled = false\n",
    );
    let log = env.dir.path().join("serve.log");
    let server = crate::operator::start_api(&env, &config_path, "serve", &log);
    let port = server.port;

    // A "worker" that holds every lease through a live session and reads nothing.
    let mut holder = env.pool.acquire().await.expect("connection").detach();
    sqlx::query(
        "INSERT INTO ingest_workers (consumer_group, worker, mode, backend_pid, backend_start)
         SELECT $1, 'hung-worker', 'continuous', pid, backend_start
         FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    )
    .bind(&env.config.kafka.group_id)
    .execute(&mut holder)
    .await
    .expect("join");
    sqlx::query(
        "UPDATE consumer_offsets SET owner = 'hung-worker', epoch = epoch + 1,
         lease_expires_at = now() + interval '1 hour' WHERE consumer_group = $1",
    )
    .bind(&env.config.kafka.group_id)
    .execute(&mut holder)
    .await
    .expect("hold the leases");
    env.produce(clean_events(100, 32)).await;

    let stalled = health_until(port, 503, "stalled", 100).await;
    assert_eq!(stalled["status"], "unhealthy", "{stalled}");
    assert!(!stalled["checks"]["ingest"]["stalled"]
        .as_array()
        .expect("stalled list")
        .is_empty());
    let metrics = crate::http::request(port, "GET", "/metrics", None, None).text();
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("hxjobs_ingest_partitions_stalled "))
        .expect("the stalled gauge");
    let count: f64 = gauge
        .split_whitespace()
        .nth(1)
        .expect("value")
        .parse()
        .expect("number");
    assert!(count >= 1.0, "{gauge}");
    let page = crate::http::request(port, "GET", "/ui/", None, None).text();
    assert!(page.contains("id=\"ingest-stalled\""), "{page}");

    // The hung worker goes away; a drain stores the rest; health recovers.
    drop(holder);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = env
        .command()
        .args(["run", "ingest"])
        .output()
        .expect("drain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.count("SELECT count(*) FROM events").await, 300);
    health_until(port, 200, "ok", 50).await;
    drop(server);
    env.cleanup().await;
}
