//! The object store: a report's recorded key or name never leads a
//! download outside the store or the reports directory, and a storage URL
//! carrying credentials is refused without repeating them.

use crate::common::TestEnv;
use crate::http::{free_port, request};
use crate::{config, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_keys_and_names_never_leave_the_store() {
    let env = TestEnv::new("attack_storage").await;
    let port = free_port();
    let cfg = config(&env, &[], port, "", "");
    let store = env.dir.path().join("store");
    std::fs::create_dir_all(store.join("reports")).expect("store");
    // What an attacker would like served: files beside and above the store.
    std::fs::write(env.dir.path().join("secret.txt"), b"top-secret-bytes").expect("secret");
    std::fs::write(store.join("secret.txt"), b"top-secret-bytes").expect("secret");
    let _server = Server::start(&env, &cfg, "serve", port);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO reports (report_type, period_start, period_end, format, status, path)
         VALUES ('daily_summary', '2026-03-01', '2026-03-02', 'json', 'done', 'x.json') RETURNING id",
    )
    .fetch_one(&env.pool)
    .await
    .expect("report");
    let escapes = [
        "../secret.txt",
        "reports/../secret.txt",
        "reports/../../secret.txt",
        "/etc/passwd",
        "reports/%2e%2e/secret.txt",
        ".hidden",
        "reports//x.json",
        "",
    ];
    for bad in escapes {
        // As a stored key, and as an old local name without one.
        for (path, key) in [("x.json", Some(bad)), (bad, None)] {
            sqlx::query("UPDATE reports SET path = $2, storage_key = $3 WHERE id = $1")
                .bind(id)
                .bind(path)
                .bind(key)
                .execute(&env.pool)
                .await
                .expect("tamper");
            let r = request(port, "GET", &format!("/reports/{id}/download"), None, None);
            assert_eq!(r.status, 410, "{bad:?} {key:?}: {}", r.text());
            assert_eq!(r.json()["error"], "report_file_missing");
            assert!(!r.text().contains("top-secret-bytes"), "{bad:?}");
        }
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_url_with_credentials_is_refused_and_never_repeated() {
    let env = TestEnv::new("attack_storage_url").await;
    for url in [
        "s3://AKIAEXAMPLE:wJalrXUtnFEMI-secret@bucket/prefix",
        "az://account:wJalrXUtnFEMI-secret@container",
        "s3://bucket/prefix?X-Amz-Signature=wJalrXUtnFEMI-secret",
    ] {
        let out = env
            .command()
            .env("HXJOBS_STORAGE_URL", url)
            .args(["jobs", "list"])
            .output()
            .expect("hxjobs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{url}: {text}");
        assert!(text.contains("storage.url"), "{text}");
        assert!(!text.contains("wJalrXUtnFEMI-secret"), "{text}");
    }
    env.cleanup().await;
}
