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
    /// e.g. an ingest that drains the present, not the backfilled past;
    /// its dependants count it as succeeded).
    pub in_backfill: bool,
    /// When it runs, from its upstream tasks' states.
    pub trigger_rule: super::rules::TriggerRule,
    /// The pool (`[pools.NAME]` in the configuration) whose slot each of
    /// its attempts holds while it runs.
    pub pool: Option<String>,
}

impl Job {
    /// When the schedule next fires after `now` (it then runs the interval
    /// complete at that time).
    /// `None` without a schedule.
    pub fn next_fire(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .as_ref()?
            .cron
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
    /// The first 12 hex digits of the file's SHA-256: which text of the
    /// file this job was loaded from.
    pub version: String,
    /// The file's text as loaded (kept with its version in `job_versions`).
    pub source: Arc<str>,
    /// `None` only for a job with `trigger = "complete"`.
    pub schedule: Option<Schedule>,
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
    /// What queues a run besides its schedule.
    pub trigger: Trigger,
    /// In an order where every task comes after its dependencies.
    pub tasks: Vec<Task>,
    /// Declared run parameters (`[params.NAME]`).
    pub params: Vec<super::params::Param>,
    /// An interval not succeeded this long after its end is late.
    pub deadline: Option<chrono::TimeDelta>,
    /// Notification targets of this job's own (added to `[notify]`'s).
    pub notify: JobNotify,
    /// Data checks (`[checks.NAME]`), each after the task it checks.
    pub checks: Vec<crate::checks::Check>,
}

/// A job's cron schedule, with its text as written.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: Cron,
    pub text: String,
}

/// What queues a job's run for an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule alone: an occurrence runs the interval complete then.
    Schedule,
    /// Also the moment the interval's data is complete: its `wait_for`
    /// jobs' runs inside it succeeded or, without `wait_for`, ingest has
    /// stored every event partition past its end plus `lateness_secs`.
    /// Its schedule, if it has one, still queues it at the latest.
    Complete { lateness_secs: u64 },
}

/// `on_failure`, `on_task_failure`, `on_recovered`, `on_late`,
/// `on_check_failure` in a job file.
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
    #[serde(default)]
    pub on_check_failure: Vec<String>,
}

impl JobNotify {
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.on_failure
            .iter()
            .chain(&self.on_task_failure)
            .chain(&self.on_recovered)
            .chain(&self.on_late)
            .chain(&self.on_check_failure)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    schedule: Option<Spanned<String>>,
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
    #[serde(default)]
    trigger: Option<Spanned<String>>,
    #[serde(default)]
    complete: Option<Spanned<RawComplete>>,
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
    #[serde(default)]
    on_check_failure: Vec<String>,
    #[serde(default)]
    checks: BTreeMap<String, Spanned<toml::Table>>,
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
struct RawComplete {
    #[serde(default)]
    lateness_secs: u64,
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
    #[serde(default)]
    trigger_rule: super::rules::TriggerRule,
    pool: Option<String>,
}

const COMMON_KEYS: [&str; 9] = [
    "kind",
    "depends_on",
    "retries",
    "retry_delay_secs",
    "retry_delay_max_secs",
    "timeout_secs",
    "in_backfill",
    "trigger_rule",
    "pool",
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

/// Parses and validates one job file's text; the first error only (see
/// [`parse_all`]).
pub fn parse(file: &Path, text: &str) -> Result<Job, Error> {
    parse_all(file, text).map_err(|mut errors| errors.remove(0))
}

/// Parses and validates one job file's text, reporting every error it
/// finds, each with its own line (a file that is not TOML at all has one).
/// The error list is never empty.
pub fn parse_all(file: &Path, text: &str) -> Result<Job, Vec<Error>> {
    let err = |span: Option<std::ops::Range<usize>>, message: String| Error {
        file: file.to_path_buf(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let raw: RawJob =
        toml::from_str(text).map_err(|e| vec![err(e.span(), e.message().to_string())])?;
    let mut errors: Vec<Error> = Vec::new();

    let name = raw.name.get_ref().clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        errors.push(err(
            Some(raw.name.span()),
            format!("job name `{name}` must be letters, digits, _ or -"),
        ));
    }
    // `Some(None)`: no schedule (allowed with trigger = "complete").
    let schedule = match &raw.schedule {
        None => Some(None),
        Some(written) => {
            let text = written.get_ref().trim().to_string();
            Cron::from_str(&text)
                .map_err(|e| {
                    errors.push(err(
                        Some(written.span()),
                        format!("bad cron expression `{text}`: {e}"),
                    ))
                })
                .ok()
                .map(|cron| Some(Schedule { cron, text }))
        }
    };
    let timezone = match &raw.timezone {
        None => chrono_tz::UTC,
        Some(tz) => tz.get_ref().parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
            errors.push(err(
                Some(tz.span()),
                format!("unknown timezone `{}`", tz.get_ref()),
            ));
            chrono_tz::UTC
        }),
    };
    let start_date = crate::time::parse_instant(raw.start_date.get_ref())
        .map_err(|e| errors.push(err(Some(raw.start_date.span()), format!("start_date: {e}"))))
        .ok();
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
        errors.push(err(None, "catchup.max_intervals must be at least 1".into()));
    }
    if raw.max_active_runs == 0 {
        errors.push(err(None, "max_active_runs must be at least 1".into()));
    }
    if raw.tasks.is_empty() {
        errors.push(err(None, "a job needs at least one task".into()));
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
                errors.push(err(
                    Some(span),
                    "wait_for names other jobs, not this one and not an empty name".into(),
                ));
            }
            names
        }
    };
    let trigger = match raw
        .trigger
        .as_ref()
        .map(|t| (t.get_ref().as_str(), t.span()))
    {
        None | Some(("schedule", _)) => {
            if let Some(c) = &raw.complete {
                errors.push(err(
                    Some(c.span()),
                    "[complete] applies to trigger = \"complete\" only".into(),
                ));
            }
            Trigger::Schedule
        }
        Some(("complete", _)) => Trigger::Complete {
            lateness_secs: raw
                .complete
                .as_ref()
                .map_or(0, |c| c.get_ref().lateness_secs),
        },
        Some((other, span)) => {
            errors.push(err(
                Some(span),
                format!("trigger `{other}`: expected \"schedule\" or \"complete\""),
            ));
            Trigger::Schedule
        }
    };
    if raw.schedule.is_none() && trigger == Trigger::Schedule {
        errors.push(err(
            None,
            "a job needs a schedule, unless trigger = \"complete\" queues it".into(),
        ));
    }
    let params = super::params::declare(raw.params)
        .map_err(|m| errors.push(err(None, m)))
        .unwrap_or_default();
    // What a template may name: hxjobs's own values and the declared parameters.
    let mut known_vars: Vec<String> = tasks::TEMPLATE_VARS.iter().map(|v| v.to_string()).collect();
    known_vars.extend(params.iter().map(|p| format!("params.{}", p.name)));

    let info = JobInfo {
        interval: raw.interval,
        dir: file.parent().unwrap_or(Path::new(".")),
    };
    let job_params = params.clone();
    let mut tasks: HashMap<String, (Task, std::ops::Range<usize>)> = HashMap::new();
    let mut dangling = false;
    for (id, spanned) in &raw.tasks {
        let span = spanned.span();
        let fields = spanned.get_ref();
        let at = |key: &str| Some(fields.get(key).map_or(span.clone(), |v| v.span()));
        // A key that is one or two letters off a common key is a typo of
        // it, not a parameter of the kind.
        let mut typos = false;
        for key in fields.keys() {
            if COMMON_KEYS.contains(&key.as_str()) {
                continue;
            }
            if let Some(meant) = COMMON_KEYS.iter().find(|k| edit_distance(k, key) <= 2) {
                typos = true;
                errors.push(err(
                    at(key),
                    format!("task `{id}`: unknown key `{key}` (did you mean `{meant}`?)"),
                ));
            }
        }
        let (common, params): (toml::Table, toml::Table) = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .partition(|(k, _)| COMMON_KEYS.contains(&k.as_str()));
        let t: RawTask = match toml::Value::Table(common).try_into() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                errors.push(err(
                    at("kind"),
                    format!("task `{id}`: {}", e.message().trim()),
                ));
                continue;
            }
        };
        let kind = match tasks::parse(&t.kind, params, &info) {
            Ok(kind) => Some(kind),
            // Already reported as a typo of a common key.
            Err(_) if typos => None,
            Err(m) => {
                // An unknown key is reported at its own line.
                let line_key = unknown_field(&m).filter(|k| fields.contains_key(*k));
                errors.push(err(
                    line_key.map_or_else(|| at("kind"), at),
                    format!("task `{id}`: {m}"),
                ));
                None
            }
        };
        if t.timeout_secs == 0 {
            errors.push(err(
                at("timeout_secs"),
                format!("task `{id}`: timeout_secs must be at least 1"),
            ));
        }
        for dep in &t.depends_on {
            if !raw.tasks.contains_key(dep) {
                dangling = true;
                errors.push(err(
                    at("depends_on"),
                    format!("task `{id}` depends on `{dep}`, which is not a task of this job"),
                ));
            }
        }
        let Some(kind) = kind else { continue };
        let templates = kind.templates();
        // The line inside the value when the template is the value itself
        // (an inline `sql` or `command`).
        let line_in = |key: &str, offset: usize| {
            let template = templates
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("", |(_, t)| t.as_str());
            match fields.get(key) {
                Some(v) if v.get_ref().as_str() == Some(template) => {
                    let start = v.span().start;
                    let opening = text.get(start..).unwrap_or_default();
                    let multi_line = opening.starts_with("\"\"\"") || opening.starts_with("'''");
                    let skipped = usize::from(
                        multi_line && opening.get(3..).is_some_and(|r| r.starts_with('\n')),
                    );
                    let inside = template.get(..offset).unwrap_or("").matches('\n').count();
                    Some(line_of(text, start) + skipped + inside)
                }
                _ => at(key).map(|s| line_of(text, s.start)),
            }
        };
        for (key, template) in &templates {
            for (var, offset) in tasks::template_vars(template) {
                let (name, filter) = tasks::split_filter(&var);
                let filter_ok = filter
                    .is_none_or(|f| tasks::FILTERS.contains(&f) && name.starts_with("params."));
                if known_vars.iter().any(|k| k == name) && filter_ok {
                    continue;
                }
                let message = if known_vars.iter().any(|k| k == name) {
                    format!(
                        "task `{id}`: unknown filter in `{{{{ {var} }}}}` in `{key}` (a parameter may take: {})",
                        tasks::FILTERS.join(", ")
                    )
                } else {
                    format!(
                        "task `{id}`: unknown template variable `{{{{ {var} }}}}` in `{key}` (known: {})",
                        known_vars.join(", ")
                    )
                };
                errors.push(Error {
                    file: file.to_path_buf(),
                    line: line_in(key, offset),
                    message,
                });
            }
        }
        for (key, offset, why) in kind.unsafe_params(&job_params) {
            errors.push(Error {
                file: file.to_path_buf(),
                line: line_in(key, offset),
                message: format!("task `{id}`: {why} (in `{key}`)"),
            });
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
                    trigger_rule: t.trigger_rule,
                    pool: t.pool,
                },
                span,
            ),
        );
    }
    let deadline = match &raw.deadline {
        None => None,
        Some(d) => crate::time::parse_duration(d.get_ref())
            .map_err(|e| errors.push(err(Some(d.span()), format!("deadline: {e}"))))
            .ok(),
    };
    let notify = JobNotify {
        on_failure: raw.on_failure,
        on_task_failure: raw.on_task_failure,
        on_recovered: raw.on_recovered,
        on_late: raw.on_late,
        on_check_failure: raw.on_check_failure,
    };
    let task_ids: Vec<&str> = raw.tasks.keys().map(String::as_str).collect();
    let mut checks = Vec::new();
    for (name, table) in raw.checks {
        let span = table.span();
        match crate::checks::parse(&name, table.into_inner(), raw.interval, &task_ids) {
            Ok(c) => checks.push(c),
            Err(m) => errors.push(err(Some(span), m)),
        }
    }
    // Only when every task parsed and every dependency exists: a missing
    // one would look like a cycle.
    let ordered = if tasks.len() == raw.tasks.len() && !dangling {
        topological(&tasks)
            .map_err(|(id, span)| {
                errors.push(err(
                    Some(span),
                    format!("dependency cycle through task `{id}`"),
                ))
            })
            .ok()
    } else {
        None
    };
    errors.sort_by_key(|e| e.line.unwrap_or(0));
    match (schedule, start_date, ordered) {
        (Some(schedule), Some(start_date), Some(ordered)) if errors.is_empty() => Ok(Job {
            name,
            description: raw.description,
            file: file.to_path_buf(),
            version: version_of(text),
            source: Arc::from(text),
            schedule,
            timezone,
            interval: raw.interval,
            start_date,
            catchup,
            max_active_runs: raw.max_active_runs,
            wait_for,
            wait_timeout_secs: raw.wait_timeout_secs,
            trigger,
            tasks: ordered,
            params,
            deadline,
            notify,
            checks,
        }),
        _ => Err(errors),
    }
}

/// A job file's version: the first 12 hex digits of its text's SHA-256.
pub fn version_of(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The field a deserializer's "unknown field `x`" message names.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = &message[message.find("unknown field `")? + "unknown field `".len()..];
    rest.find('`').map(|end| &rest[..end])
}

/// Levenshtein distance, for "did you mean" (short ASCII keys).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
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
    load_dir_preferring(dir, &HashMap::new())
}

/// [`load_dir`], where a job name two files define stays with the file in
/// `prefer` (the one loaded before a reload).
pub fn load_dir_preferring(dir: &Path, prefer: &HashMap<String, PathBuf>) -> Result<Loaded, Error> {
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
    Ok(collect(files, prefer))
}

fn collect(
    files: impl Iterator<Item = (PathBuf, Result<String, String>)>,
    prefer: &HashMap<String, PathBuf>,
) -> Loaded {
    let mut loaded = Loaded::default();
    let mut valid: Vec<Job> = Vec::new();
    for (path, text) in files {
        let parsed = text
            .map_err(|message| Error {
                file: path.clone(),
                line: None,
                message,
            })
            .map_err(|e| vec![e])
            .and_then(|text| parse_all(&path, &text));
        match parsed {
            Ok(job) => valid.push(job),
            Err(errors) => loaded.errors.extend(errors),
        }
    }
    // Two files with one job name: the one already running keeps it, else
    // the file named after the job, else the first by name. Both are named.
    let mut names: Vec<String> = valid.iter().map(|j| j.name.clone()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let claimants: Vec<usize> = (0..valid.len())
            .filter(|&i| valid[i].name == name)
            .collect();
        if claimants.len() < 2 {
            continue;
        }
        let own_file = |i: &usize| {
            valid[*i]
                .file
                .file_stem()
                .is_some_and(|s| s == name.as_str())
        };
        let winner = claimants
            .iter()
            .copied()
            .find(|&i| prefer.get(&name) == Some(&valid[i].file))
            .or_else(|| claimants.iter().copied().find(own_file))
            .unwrap_or(claimants[0]);
        for &i in claimants.iter().filter(|&&i| i != winner) {
            loaded.errors.push(Error {
                file: valid[i].file.clone(),
                line: None,
                message: format!(
                    "job name `{name}` is already defined by {}, which stays loaded; this file is not loaded",
                    valid[winner].file.display()
                ),
            });
        }
        let winner_file = valid[winner].file.clone();
        valid.retain(|j| j.name != name || j.file == winner_file);
    }
    loaded.jobs = valid;
    // wait_for names a loaded job whose intervals tile this job's (the
    // same grain or a finer one) or one whose interval covers it.
    let grains: HashMap<String, Grain> = loaded
        .jobs
        .iter()
        .map(|j| (j.name.clone(), j.interval))
        .collect();
    let mut kept = Vec::new();
    for job in std::mem::take(&mut loaded.jobs) {
        let bad = job.wait_for.iter().find_map(|w| match grains.get(w) {
            None => Some(format!("wait_for: no job named `{w}` is loaded")),
            Some(g) if !g.tiles(job.interval) && !g.covers(job.interval) => Some(format!(
                "wait_for: `{w}` runs per {}, which neither tiles nor covers this job's {}",
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
    // Jobs that wait for each other in a circle would each wait out their
    // timeout: none of them loads.
    let waits: HashMap<&str, &[String]> = kept
        .iter()
        .map(|j| (j.name.as_str(), j.wait_for.as_slice()))
        .collect();
    let circular: Vec<String> = kept
        .iter()
        .filter(|j| waits_on_itself(&j.name, &waits))
        .map(|j| j.name.clone())
        .collect();
    for job in std::mem::take(&mut kept) {
        if circular.contains(&job.name) {
            loaded.errors.push(Error {
                file: job.file.clone(),
                line: None,
                message: format!(
                    "wait_for: `{}` waits for itself through {}",
                    job.name,
                    circular.join(" → ")
                ),
            });
        } else {
            kept.push(job);
        }
    }
    loaded.jobs = kept;
    loaded
}

/// Whether following `wait_for` from `start` leads back to it.
fn waits_on_itself(start: &str, waits: &HashMap<&str, &[String]>) -> bool {
    let mut seen: Vec<&str> = Vec::new();
    let mut todo: Vec<&str> = waits
        .get(start)
        .into_iter()
        .flat_map(|w| w.iter().map(String::as_str))
        .collect();
    while let Some(name) = todo.pop() {
        if name == start {
            return true;
        }
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        if let Some(next) = waits.get(name) {
            todo.extend(next.iter().map(String::as_str));
        }
    }
    false
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
    load_preferring(dir, &HashMap::new())
}

/// [`load`] with [`load_dir_preferring`]'s rule for a name two files define.
pub fn load_preferring(dir: &Path, prefer: &HashMap<String, PathBuf>) -> Result<Loaded, Error> {
    if dir.exists() {
        return load_dir_preferring(dir, prefer);
    }
    tracing::debug!(dir = %dir.display(), "no jobs directory; using the shipped jobs");
    Ok(collect(
        SHIPPED.iter().map(|(name, text)| {
            (
                Path::new("(built in) jobs").join(name),
                Ok(text.to_string()),
            )
        }),
        prefer,
    ))
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

    #[test]
    fn triggers_parse_and_bad_ones_name_their_line() {
        assert_eq!(p(GOOD).expect("schedule").trigger, Trigger::Schedule);
        let complete = GOOD.replace(
            "interval = \"hour\"",
            "interval = \"hour\"\ntrigger = \"complete\"\ncomplete = { lateness_secs = 30 }",
        );
        assert_eq!(
            p(&complete).expect("complete").trigger,
            Trigger::Complete { lateness_secs: 30 }
        );
        let e = p(&GOOD.replace(
            "interval = \"hour\"",
            "interval = \"hour\"\ntrigger = \"data\"",
        ))
        .expect_err("unknown trigger");
        assert!(e.message.contains("trigger `data`"), "{e}");
        assert_eq!(e.line, Some(5));
        let e = p(&format!("{GOOD}\n[complete]\nlateness_secs = 5\n")).expect_err("stray");
        assert!(e.message.contains("trigger = \"complete\" only"), "{e}");
        let e = p(&GOOD.replace(
            "interval = \"hour\"",
            "interval = \"hour\"\ntrigger = \"complete\"\ncomplete = { lateness_secs = -1 }",
        ))
        .expect_err("negative lateness");
        assert_eq!(e.line, Some(6), "{e}");
        // Without a schedule: only when completeness queues it.
        let unscheduled = GOOD.replace("schedule = \"5 * * * *\"\n", "");
        let e = p(&unscheduled).expect_err("no schedule, no trigger");
        assert!(e.message.contains("needs a schedule"), "{e}");
        let job = p(&unscheduled.replace(
            "interval = \"hour\"",
            "interval = \"hour\"\ntrigger = \"complete\"",
        ))
        .expect("completeness alone");
        assert!(job.schedule.is_none() && job.next_fire(Utc::now()).is_none());
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
        assert!(lines.contains("is already defined by"), "{lines}");
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

    #[test]
    fn a_second_file_with_a_job_name_never_replaces_the_loaded_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_shipped(dir.path()).expect("shipped");
        let ingest = SHIPPED
            .iter()
            .find(|(n, _)| *n == "ingest.toml")
            .map(|(_, t)| *t)
            .expect("shipped ingest");
        // Sorts before ingest.toml: at first load the file named after the
        // job keeps it anyway.
        let impostor = ingest.replace("[tasks.ingest]", "[tasks.impostor]");
        std::fs::write(dir.path().join("aaa_mine.toml"), &impostor).expect("write");
        let loaded = load(dir.path()).expect("reads");
        let job = loaded
            .jobs
            .iter()
            .find(|j| j.name == "ingest")
            .expect("ingest");
        assert!(job.file.ends_with("ingest.toml"), "{}", job.file.display());
        assert_eq!(job.tasks[0].id, "ingest");
        let lines = loaded.error_lines();
        assert!(lines.contains("aaa_mine.toml"), "{lines}");
        assert!(lines.contains("ingest.toml, which stays loaded"), "{lines}");
        // On a reload, the file loaded before keeps the name whatever its file name.
        let mut prefer = HashMap::new();
        prefer.insert("ingest".to_string(), dir.path().join("aaa_mine.toml"));
        let reloaded = load_preferring(dir.path(), &prefer).expect("reads");
        let job = reloaded
            .jobs
            .iter()
            .find(|j| j.name == "ingest")
            .expect("ingest");
        assert!(job.file.ends_with("aaa_mine.toml"));
        assert!(reloaded
            .error_lines()
            .contains("ingest.toml: job name `ingest`"));
    }

    #[test]
    fn every_error_of_a_file_is_listed_on_its_own_line() {
        let text = r#"name = "demo"
schedule = "61 * * * *"
interval = "hour"
start_date = "2026-01-01"

[tasks.a]
kind = "sql"
sql = "SELECT '{{ interval_begin }}'"

[tasks.b]
kind = "shell"
command = "echo {{ job }}"
depend_on = ["a"]

[tasks.c]
kind = "shell"
command = """
echo {{ run_id }}
echo {{ params.nope }}
"""
"#;
        let errors = parse_all(Path::new("jobs/demo.toml"), text).expect_err("invalid");
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let all = lines.join("\n");
        assert_eq!(errors.len(), 4, "{all}");
        assert!(all.contains("demo.toml:2: bad cron expression"), "{all}");
        assert!(
            all.contains(
                "demo.toml:8: task `a`: unknown template variable `{{ interval_begin }}` in `sql`"
            ),
            "{all}"
        );
        assert!(
            all.contains(
                "demo.toml:13: task `b`: unknown key `depend_on` (did you mean `depends_on`?)"
            ),
            "{all}"
        );
        assert!(
            all.contains("demo.toml:19: task `c`: unknown template variable `{{ params.nope }}`"),
            "{all}"
        );
        // The valid ones pass, including a declared parameter.
        let ok = GOOD.replace(
            "command = \"true\"",
            "command = \"echo {{ params.model | quote }} {{interval_end}}\"",
        ) + "\n[params.model]\ntype = \"string\"\ndefault = \"all\"\n";
        parse_all(Path::new("jobs/demo.toml"), &ok).expect("valid");
        // An unknown key of a kind points at its own line.
        let unknown = GOOD.replace("sql = \"SELECT 1\"", "sql = \"SELECT 1\"\nbogus_key = 1");
        let e = parse(Path::new("jobs/demo.toml"), &unknown).expect_err("unknown key");
        let line = unknown
            .lines()
            .position(|l| l.starts_with("bogus_key"))
            .expect("line")
            + 1;
        assert_eq!(e.line, Some(line), "{e}");
    }
}
