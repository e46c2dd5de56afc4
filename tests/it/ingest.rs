//! Exactly-once ingest: counts, typed columns, duplicates, dead letters,
//! and drains killed at random points.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use hxjobs::demo::{DemoRecord, DemoSpec, Generator, RecordKind};
use hxjobs::events::{EventType, Reason};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqlx::Row;

use crate::common::{ts, TestEnv};

fn spec(events: u64, bad: f64, dup: f64, seed: u64) -> DemoSpec {
    DemoSpec {
        events,
        from: ts("2026-03-01"),
        to: ts("2026-03-04"),
        bad_ratio: bad,
        duplicate_ratio: dup,
        seed,
        max_event_bytes: 1 << 20,
    }
}

async fn drain(env: &TestEnv) -> hxjobs::ingest::Summary {
    hxjobs::ingest::drain(&env.config, &env.pool, CancellationToken::new())
        .await
        .expect("drain")
}

fn opt_f64(v: &Value) -> Option<f64> {
    v.as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_every_rejection_is_counted_exactly() {
    let env = TestEnv::new("all_types").await;
    let records: Vec<DemoRecord> = Generator::new(spec(3000, 0.08, 0.04, 11))
        .expect("spec")
        .collect();

    let mut expected_types: HashMap<&str, HashSet<String>> = HashMap::new();
    let mut expected_reasons: HashMap<&str, i64> = HashMap::new();
    let mut good: HashMap<String, Value> = HashMap::new();
    let mut duplicates = 0u64;
    for r in &records {
        match r.kind {
            RecordKind::Event => {
                let v: Value =
                    serde_json::from_slice(r.payload.as_deref().expect("payload")).expect("json");
                let id = v["event_id"].as_str().expect("id").to_string();
                expected_types
                    .entry(r.event_type.as_str())
                    .or_default()
                    .insert(id.clone());
                good.insert(id, v);
            }
            RecordKind::Duplicate => duplicates += 1,
            RecordKind::Bad(reason) => *expected_reasons.entry(reason.code()).or_default() += 1,
        }
    }
    assert_eq!(
        expected_reasons.len(),
        Reason::ALL.len(),
        "the data covers every rejected class"
    );
    let bad_total: i64 = expected_reasons.values().sum();
    env.produce(records).await;

    let summary = drain(&env).await;
    let total = summary.total();
    assert_eq!(total.stored as usize, good.len(), "{summary}");
    assert_eq!(total.duplicates, duplicates, "{summary}");
    assert_eq!(total.dead_letters as i64, bad_total, "{summary}");
    assert_eq!(total.gaps, 0);

    for t in EventType::ALL {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(t.as_str())
            .fetch_one(&env.pool)
            .await
            .expect("count");
        assert_eq!(
            n as usize,
            expected_types.get(t.as_str()).map_or(0, HashSet::len),
            "{t}"
        );
    }
    for reason in Reason::ALL {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE reason = $1")
            .bind(reason.code())
            .fetch_one(&env.pool)
            .await
            .expect("count");
        assert_eq!(
            n,
            expected_reasons.get(reason.code()).copied().unwrap_or(0),
            "{}",
            reason.code()
        );
    }
    // Dead letters keep the raw bytes whole.
    let sizes: i64 = env.count("SELECT count(*) FROM dead_letters WHERE reason = 'too_large' AND length(payload) > 1048576").await;
    assert_eq!(
        sizes,
        expected_reasons.get("too_large").copied().unwrap_or(0)
    );

    // Typed columns equal the input, checked from the JSON itself.
    let rows = sqlx::query(
        "SELECT event_id::text AS id, event_type, event_time, source, model, latency_ms, prompt_tokens,
                completion_tokens, cost_usd, status, rating, name, value, error_type, severity,
                user_id, session_id, request_id, model_id, priority, data, metadata, kafka_topic
         FROM events",
    )
    .fetch_all(&env.pool)
    .await
    .expect("rows");
    assert_eq!(rows.len(), good.len());
    for row in rows {
        let id: String = row.get("id");
        let v = good.get(&id).expect("stored event was produced");
        let d = &v["data"];
        let m = &v["metadata"];
        let event_type: String = row.get("event_type");
        assert_eq!(event_type, v["event_type"].as_str().expect("type"));
        let time: chrono::DateTime<chrono::Utc> = row.get("event_time");
        assert_eq!(time, ts(v["timestamp"].as_str().expect("ts")));
        assert_eq!(
            row.get::<String, _>("source"),
            v["source"].as_str().expect("source")
        );
        let topic: String = row.get("kafka_topic");
        let t = EventType::parse(&event_type).expect("known type");
        assert_eq!(topic, env.config.topics.topic_for(t));
        let data: Value = row.get("data");
        assert_eq!(&data, d);
        let metadata: Option<Value> = row.get("metadata");
        assert_eq!(metadata.as_ref(), Some(m));
        assert_eq!(
            row.get::<Option<String>, _>("user_id").as_deref(),
            m["user_id"].as_str()
        );
        assert_eq!(
            row.get::<Option<String>, _>("session_id").as_deref(),
            m["session_id"].as_str()
        );
        assert_eq!(
            row.get::<Option<String>, _>("request_id").as_deref(),
            m["request_id"].as_str()
        );
        assert_eq!(
            row.get::<Option<String>, _>("model_id").as_deref(),
            m["model_id"].as_str()
        );
        assert_eq!(
            row.get::<Option<String>, _>("priority").as_deref(),
            m["priority"].as_str()
        );
        match t {
            EventType::LlmRequest => {
                let model = d["model"].as_str().or(m["model_id"].as_str());
                assert_eq!(row.get::<Option<String>, _>("model").as_deref(), model);
                assert_eq!(
                    row.get::<Option<f64>, _>("latency_ms"),
                    opt_f64(&d["latency_ms"])
                );
                assert_eq!(
                    row.get::<Option<i64>, _>("prompt_tokens"),
                    d["prompt_tokens"].as_i64()
                );
                assert_eq!(
                    row.get::<Option<i64>, _>("completion_tokens"),
                    d["completion_tokens"].as_i64()
                );
                assert_eq!(
                    row.get::<Option<f64>, _>("cost_usd"),
                    opt_f64(&d["cost_usd"])
                );
                assert_eq!(
                    row.get::<Option<String>, _>("status").as_deref(),
                    d["status"].as_str()
                );
            }
            EventType::UserFeedback => {
                assert_eq!(row.get::<Option<f64>, _>("rating"), opt_f64(&d["rating"]));
                assert_eq!(
                    row.get::<Option<String>, _>("model").as_deref(),
                    d["model"].as_str()
                );
            }
            EventType::SystemMetric | EventType::BusinessEvent => {
                assert_eq!(
                    row.get::<Option<String>, _>("name").as_deref(),
                    d["name"].as_str()
                );
                assert_eq!(row.get::<Option<f64>, _>("value"), opt_f64(&d["value"]));
            }
            EventType::ErrorEvent => {
                assert_eq!(
                    row.get::<Option<String>, _>("error_type").as_deref(),
                    d["error_type"].as_str()
                );
                assert_eq!(
                    row.get::<Option<String>, _>("severity").as_deref(),
                    d["severity"].as_str()
                );
            }
        }
    }

    // Each rejected message also went to the dead-letter topic with its reason.
    let dlq = env.read_topic(&env.config.topics.dead_letter, bad_total as usize);
    assert_eq!(dlq.len() as i64, bad_total);
    let mut dlq_reasons: HashMap<String, i64> = HashMap::new();
    for (_, headers) in &dlq {
        let reason = headers
            .iter()
            .find(|(k, _)| k == "hxjobs-reason")
            .map(|(_, v)| v.clone())
            .expect("reason header");
        *dlq_reasons.entry(reason).or_default() += 1;
    }
    for (reason, n) in &expected_reasons {
        assert_eq!(dlq_reasons.get(*reason), Some(n), "{reason}");
    }

    // Offsets stored equal the broker's ends; a second drain does nothing.
    for (topic, _) in env.config.topics.event_topics() {
        let stored: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE topic = $1",
        )
        .bind(topic)
        .fetch_one(&env.pool)
        .await
        .expect("offsets");
        assert_eq!(stored, env.high_watermarks(topic), "{topic}");
    }
    let again = drain(&env).await;
    assert_eq!(again.total(), Default::default(), "{again}");
    assert_eq!(again.messages, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_is_stored_once() {
    let env = TestEnv::new("dup").await;
    let records: Vec<DemoRecord> = Generator::new(spec(40, 0.0, 0.0, 5))
        .expect("spec")
        .collect();
    let first = records[0].clone();
    // Twice in one batch, then again in a later drain (a new transaction).
    let mut batch = records.clone();
    batch.push(first.clone());
    env.produce(batch).await;
    let s1 = drain(&env).await;
    assert_eq!(s1.total().stored, 40, "{s1}");
    assert_eq!(s1.total().duplicates, 1, "{s1}");

    env.produce(vec![first.clone(), records[1].clone(), records[2].clone()])
        .await;
    let s2 = drain(&env).await;
    assert_eq!(s2.total().stored, 0, "{s2}");
    assert_eq!(s2.total().duplicates, 3, "{s2}");

    // A re-sent batch with one new event stores just that one.
    let new_one: Vec<DemoRecord> = Generator::new(spec(1, 0.0, 0.0, 99))
        .expect("spec")
        .collect();
    let mut mixed = vec![records[3].clone()];
    mixed.extend(new_one);
    env.produce(mixed).await;
    let s3 = drain(&env).await;
    assert_eq!(s3.total().stored, 1, "{s3}");
    assert_eq!(s3.total().duplicates, 1, "{s3}");

    assert_eq!(env.count("SELECT count(*) FROM events").await, 41);
    assert_eq!(
        env.count("SELECT count(DISTINCT event_id) FROM events")
            .await,
        41
    );
    // Only what was stored is staged for rollups, once.
    assert_eq!(
        env.count("SELECT sum(rows)::int8 FROM rollup_stage").await,
        41
    );
    env.cleanup().await;
}

/// Kills `hxjobs run ingest` at random instants; after every kill the stored
/// rows must equal exactly what the stored offsets cover, and a final run
/// must leave every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_killed_at_random_points_resumes_exactly_once() {
    let env = TestEnv::new("kill").await;
    let config_file =
        env.config_file("[ingest]\nbatch_size = 700\n[dead_letters]\npublish = false\n");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261122);
    let mut produced = 0i64;
    let mut seed = 3;

    let mut kills_mid_drain = 0;
    let mut attempts = 0;
    let mut delay_ms: u64 = 300;
    while kills_mid_drain < 10 && attempts < 60 {
        attempts += 1;
        let before = env.count("SELECT count(*) FROM events").await;
        if before == produced {
            // Everything is in: give the next runs more to chew on.
            seed += 1;
            env.produce(
                Generator::new(spec(15_000, 0.0, 0.0, seed))
                    .expect("spec")
                    .collect(),
            )
            .await;
            produced += 15_000;
        }
        let stderr_path = env.dir.path().join("stderr.txt");
        let mut child = env
            .command()
            .arg("--config")
            .arg(&config_file)
            .args(["run", "ingest"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn hxjobs");
        let wait = Duration::from_millis(delay_ms + rng.random_range(0..300));
        let started = Instant::now();
        let mut exited = false;
        while started.elapsed() < wait {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                assert!(
                    status.success(),
                    "attempt {attempts}: hxjobs failed: {stderr}"
                );
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if !exited {
            child.kill().expect("SIGKILL");
        }
        let _ = child.wait();
        let after = env.count("SELECT count(*) FROM events").await;
        // Atomicity at every instant: the rows are exactly what the offsets cover.
        let covered = env
            .count("SELECT COALESCE(sum(next_offset), 0)::bigint FROM consumer_offsets")
            .await;
        assert_eq!(
            after, covered,
            "after attempt {attempts}: rows and offsets disagree"
        );
        assert!(after <= produced);
        if !exited && after > before && after < produced {
            kills_mid_drain += 1;
        }
        if !exited && after == before {
            delay_ms += 100; // killed during start-up; give the next one longer
        }
    }
    assert!(
        kills_mid_drain >= 10,
        "only {kills_mid_drain} kills landed mid-drain in {attempts} attempts"
    );

    let out = env
        .command()
        .arg("--config")
        .arg(&config_file)
        .args(["run", "ingest"])
        .output()
        .expect("run hxjobs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.count("SELECT count(*) FROM events").await, produced);
    assert_eq!(
        env.count("SELECT count(DISTINCT event_id) FROM events")
            .await,
        produced
    );
    assert_eq!(env.count("SELECT count(*) FROM dead_letters").await, 0);
    env.cleanup().await;
}

/// When the broker hands back a later offset than the one asked for, the
/// skipped range is stored in `ingest_gaps` and counted, in the same
/// transaction as the batch. (The broker used here cannot delete records
/// on request: its DeleteRecords is not implemented, so the jump is fed to
/// the batch builder directly; the consumer loop passes every offset it
/// receives to the same `Batch::take`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_the_broker_skipped_are_recorded_as_a_gap() {
    use hxjobs::ingest::batch::{Batch, PartitionState};
    use hxjobs::ingest::writer::Writer;

    let env = TestEnv::new("gap").await;
    let topic = env.config.topics.llm_requests.clone();
    let group = env.config.kafka.group_id.clone();
    // Leased to this test's writer ("test") under epoch 1.
    sqlx::query("INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, owner, epoch) VALUES ($1, $2, 0, 10, 'test', 1)")
        .bind(&group)
        .bind(&topic)
        .execute(&env.pool)
        .await
        .expect("offset row");
    let mut part = PartitionState {
        topic: topic.clone(),
        partition: 0,
        next: 10,
        end: 100,
        epoch: 1,
    };
    let records: Vec<DemoRecord> = Generator::new(spec(3, 0.0, 0.0, 8))
        .expect("spec")
        .collect();
    let mut batch = Batch::new();
    // Offsets 10 and 11 arrive, then 17: 12..17 were never delivered.
    for (record, offset) in records.iter().zip([10, 11, 17]) {
        assert!(batch.take(&mut part, 0, offset, record.payload.as_deref(), 1 << 20));
    }
    let mut writer = Writer::new(env.pool.acquire().await.expect("conn"), &group, "test");
    let outcome = writer.write(batch).await.expect("write");
    let counts = outcome.get(&topic).expect("topic counts");
    assert_eq!(
        (counts.stored, counts.gaps, counts.skipped_offsets),
        (3, 1, 5)
    );
    let gap: (String, i32, i64, i64) =
        sqlx::query_as("SELECT topic, partition, from_offset, to_offset FROM ingest_gaps WHERE consumer_group = $1")
            .bind(&group)
            .fetch_one(&env.pool)
            .await
            .expect("one gap row");
    assert_eq!(gap, (topic.clone(), 0, 12, 17));
    let next: i64 =
        sqlx::query_scalar("SELECT next_offset FROM consumer_offsets WHERE consumer_group = $1")
            .bind(&group)
            .fetch_one(&env.pool)
            .await
            .expect("offset");
    assert_eq!(next, 18);
    assert_eq!(env.count("SELECT count(*) FROM events").await, 3);
    drop(writer);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_wait_in_the_outbox_while_their_topic_is_unavailable() {
    let mut env = TestEnv::new("ingest_outbox").await;
    let records: Vec<DemoRecord> = Generator::new(spec(2_000, 0.05, 0.0, 91))
        .expect("spec")
        .collect();
    let bad = records
        .iter()
        .filter(|r| matches!(r.kind, RecordKind::Bad(_)))
        .count() as i64;
    assert!(bad > 0);
    env.produce(records).await;
    // The dead-letter topic cannot be reached: ingest commits anyway.
    env.config.dead_letters.publish = false;
    let summary = drain(&env).await;
    assert_eq!(summary.total().dead_letters as i64, bad);
    let unpublished = "SELECT count(*) FROM dead_letters WHERE published_at IS NULL";
    assert_eq!(env.count(unpublished).await, bad);
    let mut away = env.config.clone();
    away.kafka.bootstrap_servers = format!("127.0.0.1:{}", crate::http::free_port());
    let p = hxjobs::ingest::outbox::publish_pending(&away, &env.pool)
        .await
        .expect("publish");
    assert_eq!((p.published, p.failed, p.pending), (0, bad as u64, bad));
    assert_eq!(
        env.count("SELECT count(*) FROM dead_letters WHERE publish_attempts = 1 AND publish_error IS NOT NULL AND publish_after > now()").await,
        bad,
        "each attempt recorded, retried later"
    );
    // Not due yet: nothing is tried again before its backoff.
    let p = hxjobs::ingest::outbox::publish_pending(&env.config, &env.pool)
        .await
        .expect("publish");
    assert_eq!((p.published, p.failed), (0, 0));
    // The backoff is over and the topic is back: the next drain publishes
    // every one once.
    sqlx::query("UPDATE dead_letters SET publish_after = now()")
        .execute(&env.pool)
        .await
        .expect("due");
    env.config.dead_letters.publish = true;
    let summary = drain(&env).await;
    assert_eq!(summary.dead_letters_published as i64, bad, "{summary}");
    assert_eq!(env.count(unpublished).await, 0);
    let dlq = env.read_topic(&env.config.topics.dead_letter, bad as usize);
    assert_eq!(dlq.len() as i64, bad);
    let again = drain(&env).await;
    assert_eq!(again.dead_letters_published, 0);
    env.cleanup().await;
}

/// A new day's partition is made and attached while another ingest
/// transaction is writing to `events` (CREATE TABLE ... PARTITION OF would
/// wait for it, and hold up every other writer meanwhile); it carries the
/// table's indexes and no statistics for the JSON documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_day_is_attached_while_ingest_writes() {
    let env = TestEnv::new("attach").await;
    env.ingest_demo(20, ts("2026-03-01"), ts("2026-03-02"), 3)
        .await;
    let mut writing = env.pool.begin().await.expect("begin");
    sqlx::query("UPDATE events SET ingested_at = now() WHERE event_day = '2026-03-01'")
        .execute(&mut *writing)
        .await
        .expect("a writer holds events");

    let mut other = env.pool.acquire().await.expect("connection");
    sqlx::query("SET lock_timeout = '5s'")
        .execute(&mut *other)
        .await
        .expect("lock timeout");
    sqlx::query("SELECT hxjobs_ensure_event_partition('2026-03-05')")
        .execute(&mut *other)
        .await
        .expect("the partition is made without waiting for the writer");
    // Twice is harmless.
    sqlx::query("SELECT hxjobs_ensure_event_partition('2026-03-05')")
        .execute(&mut *other)
        .await
        .expect("again");
    writing.commit().await.expect("commit");
    drop(other);

    assert_eq!(
        env.count(
            "SELECT count(*) FROM pg_inherits
             WHERE inhparent = 'events'::regclass AND inhrelid = 'events_p20260305'::regclass"
        )
        .await,
        1
    );
    let targets: Vec<(String, i32)> = sqlx::query_as(
        "SELECT c.relname::text, coalesce(a.attstattarget::int4, -1) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         WHERE c.relname IN ('events_p20260301', 'events_p20260305') AND a.attname IN ('data', 'metadata')
         ORDER BY 1, a.attname",
    )
    .fetch_all(&env.pool)
    .await
    .expect("statistics targets");
    assert_eq!(targets.len(), 4, "{targets:?}");
    assert!(targets.iter().all(|(_, t)| *t == 0), "{targets:?}");
    // The primary key and the BRIN index, as on every partition.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'events_p20260305'
             AND (indexdef LIKE '%UNIQUE%(event_day, event_id)%' OR indexdef LIKE '%brin (event_time)%')"
        )
        .await,
        2
    );
    // Events of that day are stored in it, once.
    env.ingest_demo(30, ts("2026-03-05"), ts("2026-03-06"), 4)
        .await;
    assert_eq!(env.count("SELECT count(*) FROM events_p20260305").await, 30);
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE event_day = '2026-03-05'")
            .await,
        30
    );
    env.cleanup().await;
}
