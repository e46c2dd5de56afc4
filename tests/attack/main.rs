//! The attack suite: hxjobs attacked as a hostile client would, on
//! loopback, with the built binary against the real PostgreSQL and broker
//! (docs/security.md says what each test defends). Run by the test command
//! like every other suite.

#[allow(dead_code)]
#[path = "../it/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../it/http.rs"]
mod http;

mod bounds;
mod checks;
mod fuzz;
mod origin;
mod params;
mod secrets;
mod sessions;
mod storage;
mod views;
mod websocket;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::TestEnv;

/// A `hxjobs serve` or `daemon` of a test's own, its log in a file.
pub struct Server {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    /// Starts `hxjobs --config CFG <command>` and waits until it answers.
    pub fn start(env: &TestEnv, cfg: &Path, command: &str, port: u16) -> Server {
        let log = env.dir.path().join(format!("{command}-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = env
            .hxjobs(cfg, &[command])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("hxjobs starts");
        let server = Server { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "hxjobs {command} did not listen: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory of the process, in MiB.
    pub fn rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config of the test's own: `jobs`, an API on `port` on loopback, then
/// `extra` (more keys of `[api]` first, then other sections).
pub fn config(
    env: &TestEnv,
    jobs: &[(&str, String)],
    port: u16,
    api: &str,
    extra: &str,
) -> PathBuf {
    env.config_with_jobs(
        &format!("attack-{port}"),
        jobs,
        &format!(
            "[api]\nhost = \"127.0.0.1\"\nport = {port}\n{api}\n[live_stats]\nenabled = false\n{extra}"
        ),
    )
}

/// One request written as given (head lines after the request line, then
/// the body), answered or not.
pub fn raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<http::Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    http::try_parse(&out)
}

/// The CSRF token in a console page's form.
pub fn csrf_of(r: &http::Reply) -> String {
    let t = r.text();
    let at = t.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    t[at..at + 64].to_string()
}

/// The whole `Set-Cookie` value that sets cookie `name`, if one does.
pub fn cookie_of(r: &http::Reply, name: &str) -> Option<String> {
    r.headers
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.starts_with(&format!("{name}=")))
        .map(|(_, v)| v.clone())
}

/// `hxjobs_visitor=…` as a page set it, to send back.
pub fn visitor_of(r: &http::Reply) -> String {
    cookie_of(r, "hxjobs_visitor")
        .and_then(|c| c.split(';').next().map(str::to_string))
        .expect("a visitor cookie")
}

/// A daily job with a `sql` and a `shell` task that use a string
/// parameter the safe ways, and an int one.
pub fn note_job(marker_dir: &Path) -> String {
    format!(
        r#"name = "note"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-01-01"
[params.note]
type = "string"
default = "plain"
[params.limit]
type = "int"
default = 10
max = 1000
[tasks.store]
kind = "sql"
sql = "CREATE TABLE IF NOT EXISTS notes (note text, n bigint); INSERT INTO notes VALUES ({{{{ params.note }}}}, {{{{ params.limit }}}})"
[tasks.echo]
kind = "shell"
depends_on = ["store"]
command = "printf '%s\n' \"$HXJOBS_PARAM_NOTE\" >> {dir}/env.txt; printf '%s\n' {{{{ params.note | quote }}}} >> {dir}/word.txt"
"#,
        dir = marker_dir.display()
    )
}

/// Waits for `check` to hold, up to `secs`.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
