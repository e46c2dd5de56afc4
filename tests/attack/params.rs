//! Finding 2: a string parameter was pasted into `sql` and `shell` tasks as
//! written, so whoever could trigger a run could run SQL and commands.

use std::process::Output;

use crate::common::TestEnv;
use crate::{config, note_job};

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_values_never_code() {
    let env = TestEnv::new("attack_params").await;
    let dir = env.dir.path().to_path_buf();
    let pwned = dir.join("pwned");
    let port = crate::http::free_port();
    let cfg = config(&env, &[("note", note_job(&dir))], port, "", "");
    // Values that were code: SQL that ends the statement, shell that
    // substitutes a command, quotes of every kind.
    let hostile = [
        "x'); DROP TABLE notes; --".to_string(),
        format!("$(touch {})", pwned.display()),
        format!("`touch {}`", pwned.display()),
        format!("'; touch {}; echo '", pwned.display()),
        format!("\"; touch {}; echo \"", pwned.display()),
        "{{ run_id }} \\ $HOME".to_string(),
    ];
    let run = |day: &str, param: &str| {
        env.hxjobs(
            &cfg,
            &["run", "note", "--interval-start", day, "--param", param],
        )
        .output()
        .expect("run")
    };
    for (day, value) in hostile.iter().enumerate() {
        let out = run(&format!("2026-02-{:02}", day + 1), &format!("note={value}"));
        assert!(out.status.success(), "{value}: {}", err(&out));
    }
    assert!(!pwned.exists(), "a parameter ran a command");
    let stored: Vec<String> = sqlx::query_scalar("SELECT note FROM notes ORDER BY note")
        .fetch_all(&env.pool)
        .await
        .expect("the table is still there");
    let mut expected = hostile.to_vec();
    expected.sort();
    assert_eq!(stored, expected, "each value stored as it was written");
    // The shell task saw each value as one word, in its environment and
    // quoted by hxjobs.
    for file in ["env.txt", "word.txt"] {
        let text = std::fs::read_to_string(dir.join(file)).expect(file);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            hostile.iter().map(String::as_str).collect::<Vec<_>>(),
            "{file}"
        );
    }

    // Job files that would paste a value are refused when they load, with
    // the line.
    for (task, says) in [
        (
            "kind = \"sql\"\nsql = \"SELECT '{{ params.note }}'\"",
            "inside quotes",
        ),
        (
            "kind = \"shell\"\ncommand = \"echo {{ params.note }}\"",
            "HXJOBS_PARAM_NOTE",
        ),
        (
            "kind = \"shell\"\ncommand = \"echo \\\"{{ params.note | quote }}\\\"\"",
            "inside quotes",
        ),
        (
            "kind = \"sql\"\nsql = \"SELECT {{ params.note | quote }}\"",
            "no filter",
        ),
    ] {
        let job = format!(
            "name = \"bad\"\nschedule = \"0 0 1 1 *\"\ninterval = \"day\"\nstart_date = \"2026-01-01\"\n\
             [params.note]\ntype = \"string\"\ndefault = \"x\"\n[tasks.t]\n{task}\n"
        );
        let bad = env.config_with_jobs("bad", &[("bad", job)], "");
        let out = env
            .hxjobs(&bad, &["jobs", "check"])
            .output()
            .expect("check");
        assert_eq!(out.status.code(), Some(1), "{task}: {}", err(&out));
        assert!(err(&out).contains(says), "{task}: {}", err(&out));
        assert!(err(&out).contains("bad.toml:10"), "the line: {}", err(&out));
    }

    // Constraints are checked before anything is queued.
    let before = env.count("SELECT count(*) FROM job_runs").await;
    let out = run("2026-03-01", "limit=5000");
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(err(&out).contains("at most 1000"), "{}", err(&out));
    assert_eq!(env.count("SELECT count(*) FROM job_runs").await, before);
    env.cleanup().await;
}
