//! `shell`: a command run with `sh -c` in its own process group. At least
//! once: a worker that dies after the command's effect but before its
//! success is recorded runs it again, so the command gets `HXJOBS_RUN_ID`
//! and `HXJOBS_TRY` to make itself idempotent. Its stdout and stderr go,
//! line by line, to the attempt's log.
//!
//! Parameters are values, never code: each is in the environment as
//! `HXJOBS_PARAM_<NAME>`; in the command line a string parameter is
//! allowed only as `{{ params.NAME | quote }}` outside any quotes (one
//! shell word, quoted by hxjobs), checked when the job file loads.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use tokio::io::AsyncBufReadExt;

use super::{Failure, JobInfo, Kind, TaskContext};
use crate::dag::params::{Param, ParamType};
use crate::tasklog::{AttemptLog, Stream};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Shell {
    /// `{{ interval_start }}` etc. are replaced before it runs.
    command: String,
    /// Give the command `DATABASE_URL` (hxjobs's own database, password
    /// included) in its environment, so no job file holds credentials.
    #[serde(default)]
    pass_database_url: bool,
}

pub(super) fn parse(table: toml::Table, _: &JobInfo) -> Result<Arc<dyn Kind>, String> {
    let shell: Shell = super::params("shell", table)?;
    if shell.command.trim().is_empty() {
        return Err("a shell task needs a `command`".into());
    }
    Ok(Arc::new(shell))
}

impl Kind for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn templates(&self) -> Vec<(&'static str, String)> {
        vec![("command", self.command.clone())]
    }

    fn unsafe_params(&self, params: &[Param]) -> Vec<(&'static str, usize, String)> {
        let mut out = Vec::new();
        for (var, offset) in super::template_vars(&self.command) {
            let Some(p) = super::param_of(params, &var) else {
                continue;
            };
            let quoted_by_hxjobs = super::split_filter(&var).1 == Some("quote");
            let env = env_name(&p.name);
            if p.kind == ParamType::String && !quoted_by_hxjobs {
                out.push((
                    "command",
                    offset,
                    format!(
                        "`{{{{ {var} }}}}` would paste a string parameter into the command line; \
                         use \"${env}\" (in the environment) or `{{{{ params.{} | quote }}}}`",
                        p.name
                    ),
                ));
            } else if quoted_by_hxjobs && quoted_at(&self.command, offset) {
                out.push((
                    "command",
                    offset,
                    format!(
                        "`{{{{ {var} }}}}` is inside quotes; hxjobs quotes it itself: write it outside them"
                    ),
                ));
            }
        }
        out
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext<'a>) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            // A string is one quoted word whatever the template says (the
            // job file's check refuses anything else before it runs).
            let command = ctx.render(&self.command, |_, _, value| match value {
                serde_json::Value::String(s) => super::shell_quote(s),
                other => super::param_text(other),
            })?;
            // Its own process group, killed whole when the attempt is
            // dropped (timeout, shutdown, fenced out): no orphans left
            // from `a | b` or `a; b`.
            let mut child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(GUARD)
                .arg("hxjobs-shell-task")
                .arg(&command)
                .arg(std::process::id().to_string())
                .env("HXJOBS_JOB", ctx.job)
                .env("HXJOBS_RUN_ID", ctx.run_id.to_string())
                .env("HXJOBS_TRY", ctx.attempt.to_string())
                .env("HXJOBS_INTERVAL_START", ctx.interval.start.to_rfc3339())
                .env("HXJOBS_INTERVAL_END", ctx.interval.end.to_rfc3339())
                .envs(
                    ctx.params
                        .iter()
                        .map(|(name, value)| (env_name(name), super::param_text(value))),
                )
                .envs(
                    self.pass_database_url
                        .then(|| ("DATABASE_URL", ctx.config.database.url.expose())),
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Failure::fatal(anyhow::anyhow!("starting sh: {e}")))?;
            let mut group = ProcessGroup(child.id());
            let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
            let (status, out, err) = tokio::join!(
                child.wait(),
                read_lines(stdout, Stream::Stdout, ctx.log.as_ref()),
                read_lines(stderr, Stream::Stderr, ctx.log.as_ref()),
            );
            let status = status.map_err(Failure::of)?;
            group.0 = None;
            let last = String::from_utf8_lossy(&err.last).into_owned();
            if status.success() {
                Ok(format!(
                    "exit 0, {} bytes of output, {} on stderr",
                    out.bytes, err.bytes
                ))
            } else {
                Err(Failure::Retry(anyhow::anyhow!("{status} ({last})")))
            }
        })
    }
}

/// `HXJOBS_PARAM_<NAME>`: where a parameter is in a shell task's environment.
pub fn env_name(param: &str) -> String {
    format!("HXJOBS_PARAM_{}", param.to_ascii_uppercase())
}

/// Whether byte `at` of a shell command is inside quotes (`'…'`, `"…"`).
fn quoted_at(command: &str, at: usize) -> bool {
    let (mut single, mut double, mut escaped) = (false, false, false);
    for (i, c) in command.char_indices() {
        if i >= at {
            break;
        }
        match c {
            _ if escaped => escaped = false,
            '\\' if !single => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ => {}
        }
    }
    single || double
}

/// What a stream carried: its size and its last line.
#[derive(Default)]
struct Output {
    bytes: u64,
    last: Vec<u8>,
}

/// Reads a stream to its end, its lines to the attempt's log (if any), a
/// block of complete lines at a time.
async fn read_lines(
    stream: Option<impl tokio::io::AsyncRead + Unpin>,
    which: Stream,
    log: Option<&AttemptLog>,
) -> Output {
    let mut output = Output::default();
    let Some(stream) = stream else {
        return output;
    };
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, stream);
    // A line longer than the buffer, or cut at its edge.
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let block = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(block) => block,
        };
        let n = block.len();
        output.bytes += n as u64;
        match memchr::memrchr(b'\n', block) {
            Some(last) => {
                let complete = if partial.is_empty() {
                    &block[..=last]
                } else {
                    partial.extend_from_slice(&block[..=last]);
                    &partial[..]
                };
                emit(log, which, complete);
                remember_last(&mut output.last, complete);
                let rest = block[last + 1..].to_vec();
                partial.clear();
                partial.extend_from_slice(&rest);
            }
            None => partial.extend_from_slice(block),
        }
        reader.consume(n);
    }
    if !partial.is_empty() {
        emit(log, which, &partial);
        remember_last(&mut output.last, &partial);
    }
    output
}

/// Lines to the attempt's log; outside the ledger (`hxjobs tasks test`),
/// to this process's own stdout or stderr, as the command wrote them.
fn emit(log: Option<&AttemptLog>, which: Stream, block: &[u8]) {
    use std::io::Write;
    match (log, which) {
        (Some(log), _) => log.lines(which, block),
        (None, Stream::Stdout) => {
            let _ = std::io::stdout().write_all(block);
        }
        (None, _) => {
            let _ = std::io::stderr().write_all(block);
        }
    }
}

/// Keeps the last non-empty line of `block` (for the error message).
fn remember_last(last: &mut Vec<u8>, block: &[u8]) {
    let trimmed = block.strip_suffix(b"\n").unwrap_or(block);
    let line = match memchr::memrchr(b'\n', trimmed) {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.is_empty() {
        last.clear();
        last.extend_from_slice(line);
    }
}

/// Runs the command (`$1`) in the background of a shell that leads the
/// task's process group and waits for it; a watcher kills the whole group
/// when the worker (`$2`) is gone, even killed with SIGKILL, so no task
/// outlives its worker. The command's exit status is the shell's.
const GUARD: &str = r#"sh -c "$1" &
c=$!
(while kill -0 "$2" 2>/dev/null; do sleep 1; done; kill -KILL 0) </dev/null >/dev/null 2>&1 &
g=$!
wait "$c"
s=$?
kill "$g" 2>/dev/null
exit "$s""#;

/// Kills a process group when dropped, unless disarmed (`.0 = None`).
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
