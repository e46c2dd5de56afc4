//! Job files (`jobs/*.toml`) → validated jobs with their tasks in a
//! dependency order. Pure: no database, no clock.
//!
//! Every error names the file and, where it points at a value, the line.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use croner::Cron;
use serde::Deserialize;
use toml::Spanned;

use crate::interval::Grain;
use crate::tasks::{self, JobInfo, Kind};

#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct Error {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// What happens to intervals missed while no daemon ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchupPolicy {
    /// Run every missed occurrence (the newest `max_intervals` of them).
    All,
    /// Run only the newest occurrence, even when it was missed.
    Latest,
    /// Run an occurrence only when it is seen on time (within
    /// `grace_secs` of its fire time); missed ones are skipped.
    None,
}

#[derive(Debug, Clone)]
pub struct Catchup {
    pub policy: CatchupPolicy,
    pub max_intervals: u32,
    /// An occurrence seen this long after its fire time was missed (the
    /// daemon was down); under `none` it is skipped.
    pub grace_secs: u64,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    /// Its kind with the kind's own parameters, validated.
    pub kind: Arc<dyn Kind>,
    pub depends_on: Vec<String>,
    pub retries: u32,
    pub retry_delay_secs: u64,
    pub retry_delay_max_secs: u64,
    /// Wall-clock deadline of one attempt.
    pub timeout_secs: u64,
    /// Whether the task runs in backfill runs (`false`: recorded `skipped`,
    /// e.g. an ingest that drains the present, not the backfilled past).
    pub in_backfill: bool,
}

impl Job {
    /// When the schedule next fires after `now` (it then runs the interval
    /// complete at that time).
    pub fn next_fire(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .find_next_occurrence(&now.with_timezone(&self.timezone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Each task's id and kind, in order (as the ledger opens a run's tasks).
    pub fn task_kinds(&self) -> Vec<(&str, &str)> {
        self.tasks
            .iter()
            .map(|t| (t.id.as_str(), t.kind.name()))
            .collect()
    }

    /// What a clear of `tasks` runs again: those, and with `downstream`
    /// every task after them (depending on one, directly or not), in the
    /// job's order. An unknown task is an error only with `downstream`
    /// (otherwise the run's own tasks are the judge).
    pub fn to_clear(&self, tasks: &[String], downstream: bool) -> Result<Vec<String>, String> {
        if !downstream {
            return Ok(tasks.to_vec());
        }
        if let Some(t) = tasks
            .iter()
            .find(|t| !self.tasks.iter().any(|x| &x.id == *t))
        {
            return Err(format!("job {} has no task `{t}`", self.name));
        }
        let mut found: Vec<String> = Vec::new();
        for t in &self.tasks {
            let after = t.depends_on.iter().any(|d| found.contains(d));
            if tasks.contains(&t.id) || after {
                found.push(t.id.clone());
            }
        }
        Ok(found)
    }
}

impl Task {
    /// Delay before attempt `attempt` (1-based retries): doubling, capped.
    pub fn retry_delay(&self, attempt: u32) -> std::time::Duration {
        let factor = 2u64.saturating_pow(attempt.saturating_sub(1));
        std::time::Duration::from_secs(
            self.retry_delay_secs
                .saturating_mul(factor)
                .min(self.retry_delay_max_secs),
        )
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub schedule: Cron,
    pub schedule_text: String,
    pub timezone: chrono_tz::Tz,
    pub interval: Grain,
    pub start_date: DateTime<Utc>,
    pub catchup: Catchup,
    pub max_active_runs: u32,
    /// Jobs of a finer interval whose runs inside this job's interval must
    /// all have succeeded before a scheduled or manual run of it starts.
    pub wait_for: Vec<String>,
    /// After the interval's end plus this, a run starts without them.
    pub wait_timeout_secs: u64,
    /// In an order where every task comes after its dependencies.
    pub tasks: Vec<Task>,
    /// Declared run parameters (`[params.NAME]`).
    pub params: Vec<super::params::Param>,
    /// An interval not succeeded this long after its end is late.
    pub deadline: Option<chrono::TimeDelta>,
    /// Notification targets of this job's own (added to `[notify]`'s).
    pub notify: JobNotify,
}

/// `on_failure`, `on_task_failure`, `on_recovered`, `on_late` in a job file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobNotify {
    #[serde(default)]
    pub on_failure: Vec<String>,
    #[serde(default)]
    pub on_task_failure: Vec<String>,
    #[serde(default)]
    pub on_recovered: Vec<String>,
    #[serde(default)]
    pub on_late: Vec<String>,
}

impl JobNotify {
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.on_failure
            .iter()
            .chain(&self.on_task_failure)
            .chain(&self.on_recovered)
            .chain(&self.on_late)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    schedule: Spanned<String>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    interval: Grain,
    start_date: Spanned<String>,
    #[serde(default)]
    catchup: Option<RawCatchup>,
    #[serde(default = "one")]
    max_active_runs: u32,
    #[serde(default)]
    wait_for: Option<Spanned<OneOrMany>>,
    #[serde(default = "default_wait_timeout")]
    wait_timeout_secs: u64,
    tasks: BTreeMap<String, Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    #[serde(default)]
    params: BTreeMap<String, super::params::RawParam>,
    #[serde(default)]
    deadline: Option<Spanned<String>>,
    #[serde(default)]
    on_failure: Vec<String>,
    #[serde(default)]
    on_task_failure: Vec<String>,
    #[serde(default)]
    on_recovered: Vec<String>,
    #[serde(default)]
    on_late: Vec<String>,
}

/// `"a"` or `["a", "b"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn default_wait_timeout() -> u64 {
    6 * 3600
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatchup {
    policy: CatchupPolicy,
    #[serde(default = "default_max_intervals")]
    max_intervals: u32,
    #[serde(default = "default_grace")]
    grace_secs: u64,
}

fn default_grace() -> u64 {
    300
}

fn default_max_intervals() -> u32 {
    168
}

/// The keys every task has; the others are its kind's parameters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    kind: String,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    retries: u32,
    #[serde(default = "default_retry_delay")]
    retry_delay_secs: u64,
    #[serde(default = "default_retry_delay_max")]
    retry_delay_max_secs: u64,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "yes")]
    in_backfill: bool,
}

const COMMON_KEYS: [&str; 7] = [
    "kind",
    "depends_on",
    "retries",
    "retry_delay_secs",
    "retry_delay_max_secs",
    "timeout_secs",
    "in_backfill",
];

fn yes() -> bool {
    true
}

fn default_retry_delay() -> u64 {
    10
}
fn default_retry_delay_max() -> u64 {
    600
}
fn default_timeout() -> u64 {
    3600
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Parses and validates one job file's text.
pub fn parse(file: &Path, text: &str) -> Result<Job, Error> {
    let err = |span: Option<std::ops::Range<usize>>, message: String| Error {
        file: file.to_path_buf(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let raw: RawJob = toml::from_str(text).map_err(|e| err(e.span(), e.message().to_string()))?;

    let name = raw.name.get_ref().clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(err(
            Some(raw.name.span()),
            format!("job name `{name}` must be letters, digits, _ or -"),
        ));
    }
    let schedule_text = raw.schedule.get_ref().trim().to_string();
    let schedule = Cron::from_str(&schedule_text).map_err(|e| {
        err(
            Some(raw.schedule.span()),
            format!("bad cron expression `{schedule_text}`: {e}"),
        )
    })?;
    let timezone = match &raw.timezone {
        None => chrono_tz::UTC,
        Some(tz) => tz.get_ref().parse::<chrono_tz::Tz>().map_err(|_| {
            err(
                Some(tz.span()),
                format!("unknown timezone `{}`", tz.get_ref()),
            )
        })?,
    };
    let start_date = crate::time::parse_instant(raw.start_date.get_ref())
        .map_err(|e| err(Some(raw.start_date.span()), format!("start_date: {e}")))?;
    let catchup = match raw.catchup {
        Some(c) => Catchup {
            policy: c.policy,
            max_intervals: c.max_intervals,
            grace_secs: c.grace_secs,
        },
        None => Catchup {
            policy: CatchupPolicy::Latest,
            max_intervals: default_max_intervals(),
            grace_secs: default_grace(),
        },
    };
    if catchup.max_intervals == 0 {
        return Err(err(None, "catchup.max_intervals must be at least 1".into()));
    }
    if raw.max_active_runs == 0 {
        return Err(err(None, "max_active_runs must be at least 1".into()));
    }
    if raw.tasks.is_empty() {
        return Err(err(None, "a job needs at least one task".into()));
    }
    let wait_for = match raw.wait_for {
        None => Vec::new(),
        Some(w) => {
            let span = w.span();
            let names = match w.into_inner() {
                OneOrMany::One(n) => vec![n],
                OneOrMany::Many(v) => v,
            };
            if names.iter().any(|n| n.trim().is_empty() || *n == name) {
                return Err(err(
                    Some(span),
                    "wait_for names other jobs, not this one and not an empty name".into(),
                ));
            }
            names
        }
    };

    let info = JobInfo {
        interval: raw.interval,
        dir: file.parent().unwrap_or(Path::new(".")),
    };
    let mut tasks: HashMap<String, (Task, std::ops::Range<usize>)> = HashMap::new();
    for (id, spanned) in &raw.tasks {
        let span = spanned.span();
        let fields = spanned.get_ref();
        let at = |key: &str| Some(fields.get(key).map_or(span.clone(), |v| v.span()));
        let (common, params): (toml::Table, toml::Table) = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .partition(|(k, _)| COMMON_KEYS.contains(&k.as_str()));
        let t: RawTask = toml::Value::Table(common)
            .try_into()
            .map_err(|e: toml::de::Error| {
                err(at("kind"), format!("task `{id}`: {}", e.message().trim()))
            })?;
        let kind = tasks::parse(&t.kind, params, &info)
            .map_err(|m| err(at("kind"), format!("task `{id}`: {m}")))?;
        if t.timeout_secs == 0 {
            return Err(err(
                at("timeout_secs"),
                format!("task `{id}`: timeout_secs must be at least 1"),
            ));
        }
        for dep in &t.depends_on {
            if !raw.tasks.contains_key(dep) {
                return Err(err(
                    at("depends_on"),
                    format!("task `{id}` depends on `{dep}`, which is not a task of this job"),
                ));
            }
        }
        tasks.insert(
            id.clone(),
            (
                Task {
                    id: id.clone(),
                    kind,
                    depends_on: t.depends_on,
                    retries: t.retries,
                    retry_delay_secs: t.retry_delay_secs,
                    retry_delay_max_secs: t.retry_delay_max_secs.max(t.retry_delay_secs),
                    timeout_secs: t.timeout_secs,
                    in_backfill: t.in_backfill,
                },
                span,
            ),
        );
    }
    let params = super::params::declare(raw.params).map_err(|m| err(None, m))?;
    let deadline = match &raw.deadline {
        None => None,
        Some(d) => Some(
            crate::time::parse_duration(d.get_ref())
                .map_err(|e| err(Some(d.span()), format!("deadline: {e}")))?,
        ),
    };
    let notify = JobNotify {
        on_failure: raw.on_failure,
        on_task_failure: raw.on_task_failure,
        on_recovered: raw.on_recovered,
        on_late: raw.on_late,
    };
    let ordered = topological(&tasks)
        .map_err(|(id, span)| err(Some(span), format!("dependency cycle through task `{id}`")))?;

    Ok(Job {
        name,
        description: raw.description,
        file: file.to_path_buf(),
        schedule,
        schedule_text,
        timezone,
        interval: raw.interval,
        start_date,
        catchup,
        max_active_runs: raw.max_active_runs,
        wait_for,
        wait_timeout_secs: raw.wait_timeout_secs,
        tasks: ordered,
        params,
        deadline,
        notify,
    })
}

/// Kahn's algorithm, ties broken by task id so the order is stable.
fn topological(
    tasks: &HashMap<String, (Task, std::ops::Range<usize>)>,
) -> Result<Vec<Task>, (String, std::ops::Range<usize>)> {
    let mut remaining: BTreeMap<&str, usize> = tasks
        .iter()
        .map(|(id, (t, _))| (id.as_str(), t.depends_on.len()))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    while !remaining.is_empty() {
        let Some(ready) = remaining
            .iter()
            .find(|(_, &n)| n == 0)
            .map(|(id, _)| id.to_string())
        else {
            let (id, _) = remaining
                .iter()
                .next()
                .map(|(id, n)| (id.to_string(), *n))
                .unwrap_or_default();
            let span = tasks.get(&id).map(|(_, s)| s.clone()).unwrap_or(0..0);
            return Err((id, span));
        };
        remaining.remove(ready.as_str());
        for (id, (t, _)) in tasks {
            if t.depends_on.iter().any(|d| d == &ready) {
                if let Some(n) = remaining.get_mut(id.as_str()) {
                    *n -= t.depends_on.iter().filter(|d| *d == &ready).count().min(*n);
                }
            }
        }
        if let Some((t, _)) = tasks.get(&ready) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// The outcome of loading a jobs directory: the valid jobs, and an error
/// for every file that is not one. One bad file never hides the others.
#[derive(Debug, Default)]
pub struct Loaded {
    pub jobs: Vec<Job>,
    pub errors: Vec<Error>,
}

impl Loaded {
    /// Every error, one per line, for a person to read.
    pub fn error_lines(&self) -> String {
        self.errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The valid jobs, or all the errors when any file is invalid (for
    /// callers, such as tests and benchmarks, that want the whole set).
    pub fn all_valid(self) -> Result<Vec<Job>, Error> {
        match self.errors.into_iter().next() {
            None => Ok(self.jobs),
            Some(first) => Err(first),
        }
    }

    /// The error of the file that would define `name` (`<name>.toml`), if
    /// that file is invalid.
    pub fn error_for(&self, name: &str) -> Option<&Error> {
        self.errors
            .iter()
            .find(|e| e.file.file_stem().is_some_and(|s| s == name))
    }
}

/// Loads and validates every `*.toml` in `dir`. A file that does not parse
/// or validate, or whose job name another file already uses, becomes an
/// error in [`Loaded::errors`]; the others load. Fails only when the
/// directory itself cannot be read.
pub fn load_dir(dir: &Path) -> Result<Loaded, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error {
        file: dir.to_path_buf(),
        line: None,
        message: format!("cannot read the jobs directory: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let files = paths.into_iter().map(|path| {
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string());
        (path, text)
    });
    Ok(collect(files))
}

fn collect(files: impl Iterator<Item = (PathBuf, Result<String, String>)>) -> Loaded {
    let mut loaded = Loaded::default();
    for (path, text) in files {
        let parsed = text
            .map_err(|message| Error {
                file: path.clone(),
                line: None,
                message,
            })
            .and_then(|text| parse(&path, &text));
        let job = match parsed {
            Ok(job) => job,
            Err(e) => {
                loaded.errors.push(e);
                continue;
            }
        };
        if let Some(other) = loaded.jobs.iter().find(|j| j.name == job.name) {
            loaded.errors.push(Error {
                file: path,
                line: None,
                message: format!(
                    "job name `{}` is also used by {}",
                    job.name,
                    other.file.display()
                ),
            });
            continue;
        }
        loaded.jobs.push(job);
    }
    // wait_for must name a loaded job of a finer interval that divides this one.
    let grains: HashMap<String, Grain> = loaded
        .jobs
        .iter()
        .map(|j| (j.name.clone(), j.interval))
        .collect();
    let mut kept = Vec::new();
    for job in std::mem::take(&mut loaded.jobs) {
        let bad = job.wait_for.iter().find_map(|w| match grains.get(w) {
            None => Some(format!("wait_for: no job named `{w}` is loaded")),
            Some(g) if !divides(*g, job.interval) => Some(format!(
                "wait_for: `{w}` runs per {}, which does not divide this job's {}",
                g.as_str(),
                job.interval.as_str()
            )),
            Some(_) => None,
        });
        match bad {
            Some(message) => loaded.errors.push(Error {
                file: job.file.clone(),
                line: None,
                message,
            }),
            None => kept.push(job),
        }
    }
    loaded.jobs = kept;
    loaded
}

/// Whether intervals of `finer` tile intervals of `coarser` exactly.
fn divides(finer: Grain, coarser: Grain) -> bool {
    let rank = |g: Grain| match g {
        Grain::Minute => 0,
        Grain::Hour => 1,
        Grain::Day => 2,
        Grain::Week => 3,
        Grain::Month => 4,
    };
    rank(finer) < rank(coarser) && !(finer == Grain::Week && coarser == Grain::Month)
}

/// The job files shipped in `jobs/`, compiled in for when the configured
/// directory does not exist (the binary runs without its source tree).
pub const SHIPPED: [(&str, &str); 6] = [
    ("ingest.toml", include_str!("../../jobs/ingest.toml")),
    (
        "hxp_hourly_aggregation.toml",
        include_str!("../../jobs/hxp_hourly_aggregation.toml"),
    ),
    (
        "hxp_daily_aggregation.toml",
        include_str!("../../jobs/hxp_daily_aggregation.toml"),
    ),
    (
        "hxp_weekly_aggregation.toml",
        include_str!("../../jobs/hxp_weekly_aggregation.toml"),
    ),
    (
        "hxp_monthly_aggregation.toml",
        include_str!("../../jobs/hxp_monthly_aggregation.toml"),
    ),
    (
        "hxp_retention.toml",
        include_str!("../../jobs/hxp_retention.toml"),
    ),
];

/// The jobs in `dir`, or the shipped ones when `dir` does not exist.
pub fn load(dir: &Path) -> Result<Loaded, Error> {
    if dir.exists() {
        return load_dir(dir);
    }
    tracing::debug!(dir = %dir.display(), "no jobs directory; using the shipped jobs");
    Ok(collect(SHIPPED.iter().map(|(name, text)| {
        (
            Path::new("(built in) jobs").join(name),
            Ok(text.to_string()),
        )
    })))
}

/// Writes the shipped job files into `dir` (for tests and benchmarks that
/// must not see an operator's own jobs).
pub fn write_shipped(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in SHIPPED {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "demo"
schedule = "5 * * * *"
interval = "hour"
start_date = "2026-01-01"

[catchup]
policy = "all"
max_intervals = 24

[tasks.b]
kind = "sql"
sql = "SELECT 1"
depends_on = ["a"]

[tasks.a]
kind = "ingest"
retries = 2

[tasks.c]
kind = "shell"
command = "true"
depends_on = ["a", "b"]
"#;

    fn p(text: &str) -> Result<Job, Error> {
        parse(Path::new("jobs/demo.toml"), text)
    }

    #[test]
    fn parses_and_orders() {
        let job = p(GOOD).expect("valid");
        let order: Vec<&str> = job.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(job.interval, Grain::Hour);
        assert_eq!(job.catchup.policy, CatchupPolicy::All);
        assert_eq!(job.catchup.max_intervals, 24);
        assert_eq!(job.timezone, chrono_tz::UTC);
        let a = &job.tasks[0];
        assert_eq!(a.retry_delay(1).as_secs(), 10);
        assert_eq!(a.retry_delay(3).as_secs(), 40);
        assert_eq!(a.retry_delay(30).as_secs(), 600);
    }

    #[test]
    fn errors_name_file_and_line() {
        let cycle = GOOD.replace(
            "kind = \"ingest\"",
            "kind = \"ingest\"\ndepends_on = [\"c\"]",
        );
        let e = p(&cycle).expect_err("cycle");
        assert!(e.message.contains("cycle"), "{e}");
        assert!(e.to_string().starts_with("jobs/demo.toml:"), "{e}");

        let e = p(&GOOD.replace("kind = \"ingest\"", "kind = \"ingestt\"")).expect_err("kind");
        assert!(e.message.contains("unknown kind `ingestt`"), "{e}");
        assert_eq!(e.line, Some(17));

        let e = p(&GOOD.replace("depends_on = [\"a\"]", "depends_on = [\"zz\"]"))
            .expect_err("dangling");
        assert!(e.message.contains("`zz`"), "{e}");
        assert_eq!(e.line, Some(14));

        let e = p(&GOOD.replace("5 * * * *", "61 * * * *")).expect_err("cron");
        assert!(e.message.contains("bad cron"), "{e}");
        assert_eq!(e.line, Some(3));

        let e = p(&GOOD.replace("sql = \"SELECT 1\"", "")).expect_err("params");
        assert!(e.message.contains("sql task"), "{e}");
        assert_eq!(e.line, Some(12), "the task's kind line: {e}");

        let e = p(&GOOD.replace("command = \"true\"", "comand = \"true\""))
            .expect_err("a misspelt parameter");
        assert!(e.message.contains("unknown field `comand`"), "{e}");

        let e = p(&format!("{GOOD}\nbogus = 1\n")).expect_err("unknown key");
        assert!(e.to_string().contains("jobs/demo.toml"), "{e}");
    }

    /// Every job file git tracks in `jobs/` is compiled in, and the same
    /// text; files an operator adds there are not looked at.
    #[test]
    fn built_in_jobs_are_the_shipped_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let built_in = load(Path::new("/nonexistent/jobs")).expect("built-in jobs");
        assert!(built_in.errors.is_empty(), "{}", built_in.error_lines());
        assert_eq!(built_in.jobs.len(), SHIPPED.len());
        for (name, text) in SHIPPED {
            let on_disk = std::fs::read_to_string(root.join("jobs").join(name)).expect(name);
            assert_eq!(on_disk, text, "{name}");
        }
        let tracked = std::process::Command::new("git")
            .args(["ls-files", "jobs"])
            .current_dir(root)
            .output();
        if let Some(out) = tracked
            .ok()
            .filter(|o| o.status.success() && !o.stdout.is_empty())
        {
            let listed = String::from_utf8_lossy(&out.stdout);
            for file in listed.lines().filter(|f| f.ends_with(".toml")) {
                let name = file.trim_start_matches("jobs/");
                assert!(
                    SHIPPED.iter().any(|(n, _)| *n == name),
                    "{file} is shipped but not compiled in (SHIPPED)"
                );
            }
        }
    }

    #[test]
    fn one_bad_file_does_not_hide_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_shipped(dir.path()).expect("shipped");
        std::fs::write(dir.path().join("mine.toml"), format!("{GOOD}\nbogus = 1\n")).expect("bad");
        std::fs::write(
            dir.path().join("zz_broken.toml"),
            "name = \"broken\"\nschedule = \"61 * * * *\"\n",
        )
        .expect("bad");
        let copy = GOOD.replace("name = \"demo\"", "name = \"ingest\"");
        std::fs::write(dir.path().join("zz_same_name.toml"), copy).expect("dup");
        let loaded = load(dir.path()).expect("directory reads");
        assert_eq!(loaded.jobs.len(), SHIPPED.len(), "{}", loaded.error_lines());
        let lines = loaded.error_lines();
        assert_eq!(loaded.errors.len(), 3, "{lines}");
        assert!(lines.contains("mine.toml:"), "{lines}");
        assert!(lines.contains("zz_broken.toml"), "{lines}");
        assert!(lines.contains("also used by"), "{lines}");
        assert!(loaded.error_for("mine").is_some());
        assert!(loaded.error_for("ingest").is_none());
        assert!(loaded.all_valid().is_err());
    }

    #[test]
    fn shipped_jobs_are_valid() {
        let jobs = load(Path::new("/nonexistent/jobs"))
            .and_then(Loaded::all_valid)
            .expect("shipped jobs are valid");
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        for wanted in [
            "ingest",
            "hxp_hourly_aggregation",
            "hxp_daily_aggregation",
            "hxp_weekly_aggregation",
            "hxp_monthly_aggregation",
            "hxp_retention",
        ] {
            assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
        }
    }
}
