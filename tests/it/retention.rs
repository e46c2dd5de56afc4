//! Retention: dry run changes nothing; raw days are archived to verified
//! Parquet files before their partitions go; a failed archive removes
//! nothing; a restored day is row for row what was stored.

use std::sync::Arc;

use chrono::NaiveDate;
use hxjobs::config::StorageConfig;
use hxjobs::dag::catalog::Catalog;
use hxjobs::db::Pools;
use hxjobs::ops::{Actor, Kind, Means, Ops, Role};
use hxjobs::retention::{self, archive};
use hxjobs::storage::Store;

use crate::common::{file_url, ts, TestEnv};

fn day(s: &str) -> NaiveDate {
    s.parse().expect("date")
}

/// Every stored column of a day's events, as PostgreSQL prints them.
async fn rows_of(env: &TestEnv, d: NaiveDate) -> Vec<String> {
    sqlx::query_scalar("SELECT e::text FROM events e WHERE event_day = $1 ORDER BY event_id")
        .bind(d)
        .fetch_all(&env.pool)
        .await
        .expect("rows")
}

async fn partition_exists(env: &TestEnv, d: NaiveDate) -> bool {
    sqlx::query_scalar::<_, Option<String>>("SELECT to_regclass($1)::text")
        .bind(archive::partition_name(d))
        .fetch_one(&env.pool)
        .await
        .expect("regclass")
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_days_are_archived_verified_dropped_and_restored() {
    let env = TestEnv::new("retention").await;
    env.ingest_demo(3000, ts("2026-03-01"), ts("2026-03-04"), 7)
        .await;
    sqlx::query(
        "INSERT INTO dead_letters (kafka_topic, kafka_partition, kafka_offset, reason, detail, received_at)
         VALUES ('t', 0, 1, 'invalid_json', 'x', '2026-01-01'), ('t', 0, 2, 'invalid_json', 'x', '2026-03-09')",
    )
    .execute(&env.pool)
    .await
    .expect("dead letters");

    let (d1, d2, d3) = (day("2026-03-01"), day("2026-03-02"), day("2026-03-03"));
    let first = rows_of(&env, d1).await;
    let total = env.count("SELECT count(*) FROM events").await;
    assert!(!first.is_empty());

    let config = env.config.retention.clone();
    let reports_dir = env.dir.path().join("reports");
    // Reports past retention go with their files; a recorded path outside
    // the reports directory is never removed.
    std::fs::create_dir_all(&reports_dir).expect("reports dir");
    std::fs::write(reports_dir.join("old.pdf"), b"%PDF-old").expect("old report");
    std::fs::write(reports_dir.join("new.pdf"), b"%PDF-new").expect("new report");
    std::fs::write(env.dir.path().join("outside.txt"), b"keep").expect("outside");
    sqlx::query(
        "INSERT INTO reports (report_type, period_start, period_end, format, status, path, created_at)
         VALUES ('weekly_summary', '2024-12-30', '2025-01-06', 'pdf', 'done', 'old.pdf', '2025-01-06'),
                ('weekly_summary', '2024-12-30', '2025-01-06', 'pdf', 'done', '../outside.txt', '2025-01-06'),
                ('weekly_summary', '2026-03-02', '2026-03-09', 'pdf', 'done', 'new.pdf', '2026-03-09')",
    )
    .execute(&env.pool)
    .await
    .expect("reports");
    // Seven days before 2026-03-10: the 1st and 2nd are past retention.
    let now = ts("2026-03-10T12:00:00Z");
    let plan = retention::plan(&env.pool, &config, now)
        .await
        .expect("plan");
    let days: Vec<NaiveDate> = plan.event_days.iter().map(|(d, _)| *d).collect();
    assert_eq!(days, vec![d1, d2]);
    assert_eq!(plan.event_days[0].1, first.len() as i64);
    let dead = plan
        .classes
        .iter()
        .find(|c| c.name == "dead letters")
        .expect("class");
    assert_eq!(dead.rows, 1);
    // Planning is the dry run: it changed nothing.
    assert_eq!(env.count("SELECT count(*) FROM events").await, total);
    assert_eq!(env.count("SELECT count(*) FROM dead_letters").await, 2);

    // A store that refuses the archive: nothing is removed.
    let broken_dir = env.dir.path().join("broken-store");
    let broken = Store::open(&StorageConfig {
        url: file_url(&broken_dir),
        ..env.config.storage.clone()
    })
    .expect("store");
    std::fs::remove_dir_all(&broken_dir).expect("remove");
    std::fs::write(&broken_dir, b"a file").expect("file");
    let e = retention::apply(&env.pool, &broken, &reports_dir, &plan, None)
        .await
        .expect_err("refused");
    assert!(
        matches!(e, archive::Error::Storage(_)),
        "{e}: the store's refusal"
    );
    assert!(e.to_string().contains("nothing was removed"), "{e}");
    assert!(partition_exists(&env, d1).await);
    assert_eq!(env.count("SELECT count(*) FROM events").await, total);
    assert_eq!(env.count("SELECT count(*) FROM event_archives").await, 0);

    let store = Store::open(&env.config.storage).expect("store");
    let archived = retention::apply(&env.pool, &store, &reports_dir, &plan, None)
        .await
        .expect("apply");
    assert_eq!(archived.len(), 2);
    assert!(!partition_exists(&env, d1).await && !partition_exists(&env, d2).await);
    assert!(partition_exists(&env, d3).await);
    assert_eq!(
        env.count("SELECT sum(rows)::int8 FROM event_archives")
            .await
            + env.count("SELECT count(*) FROM events").await,
        total
    );
    assert_eq!(env.count("SELECT count(*) FROM dead_letters").await, 1);
    assert_eq!(
        env.count("SELECT count(*) FROM reports WHERE path = 'new.pdf'")
            .await,
        1
    );
    assert_eq!(env.count("SELECT count(*) FROM reports").await, 1);
    assert!(
        !reports_dir.join("old.pdf").exists(),
        "the old report's file is gone"
    );
    assert!(reports_dir.join("new.pdf").exists());
    assert!(
        env.dir.path().join("outside.txt").exists(),
        "nothing outside the reports dir"
    );
    // The dropped days' staged rollup columns went with them.
    assert_eq!(
        env.count(
            "SELECT coalesce(sum(rows), 0)::int8 FROM rollup_stage WHERE event_day < '2026-03-03'"
        )
        .await,
        0
    );
    // Hive-style keys in the store, each a Parquet file.
    assert_eq!(
        archived[0].key,
        "events/event_date=2026-03-01/events-2026-03-01.parquet"
    );
    let bytes = std::fs::read(env.dir.path().join("store").join(&archived[0].key))
        .expect("the archive in the test's store");
    assert_eq!(&bytes[..4], b"PAR1", "a Parquet file");
    assert_eq!(
        env.count(
            "SELECT count(*) FROM event_archives WHERE storage_key LIKE 'events/event_date=%'"
        )
        .await,
        2
    );

    // Restoring is for admins: a viewer or an operator restores nothing,
    // and every try is in the audit log.
    let ops = Ops::new(
        Arc::new(env.config.clone()),
        Pools::new(env.pool.clone()),
        Arc::new(Catalog::fixed(Vec::new())),
    );
    for role in [Role::Viewer, Role::Operator] {
        let who = Actor::new("api:reader", Means::Token, role);
        let e = ops.restore_archive(&who, d1).await.expect_err("refused");
        assert_eq!(e.kind, Kind::Forbidden);
    }
    assert!(!partition_exists(&env, d1).await, "nothing restored");
    let admin = Actor::new("api:admin", Means::Token, Role::Admin);
    let restored = ops.restore_archive(&admin, d1).await.expect("restore");
    assert_eq!(restored as usize, first.len());
    assert_eq!(
        env.count(
            "SELECT count(*) FROM audit WHERE action = 'archive_restore' AND target = '2026-03-01'
               AND ((actor = 'api:reader' AND outcome = 'refused')
                    OR (actor = 'api:admin' AND outcome = 'ok'))"
        )
        .await,
        3
    );
    assert_eq!(rows_of(&env, d1).await, first, "byte-identical typed rows");
    // The restored day is staged for rollups again.
    assert_eq!(
        env.count("SELECT sum(rows)::int8 FROM rollup_stage WHERE event_day = '2026-03-01'")
            .await,
        first.len() as i64
    );
    let e = ops
        .restore_archive(&admin, d3)
        .await
        .expect_err("not archived");
    assert_eq!((e.kind, e.code), (Kind::NotFound, "not_archived"));
    env.cleanup().await;
}
