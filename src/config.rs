//! Configuration: every section's struct, loaded and validated once.
//!
//! Layers, later wins: the defaults embedded from `config/hxjobs.toml` →
//! the file named by `--config` / `HXJOBS_CONFIG` (only the keys it changes)
//! → the platform's environment variables (`KAFKA_BOOTSTRAP_SERVERS`,
//! `KAFKA_TOPIC_*`, `DATABASE_URL`, `BATCH_PROCESSING_API_PORT`, …).
//! Unknown keys and bad values are errors that name the key and where it
//! came from. Nothing outside this module reads the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::events::EventType;

/// The defaults, compiled in so the binary runs without its source tree.
pub const DEFAULTS: &str = include_str!("../config/hxjobs.toml");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("config: {0}")]
    Parse(String),
    #[error("config: `{key}` {problem} (from {source_name})")]
    Invalid {
        key: String,
        problem: String,
        source_name: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub database: DatabaseConfig,
    pub ingest: IngestConfig,
    pub dead_letters: DeadLettersConfig,
    pub jobs: JobsConfig,
    pub scheduler: SchedulerConfig,
    pub rollups: RollupsConfig,
    pub retention: RetentionConfig,
    pub api: ApiConfig,
    pub reports: ReportsConfig,
    pub capacity: CapacityConfig,
    pub live_stats: LiveStatsConfig,
    pub logs: LogsConfig,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    /// `[pools.NAME]`: caps on how many attempts of the tasks naming the
    /// pool run at once, across jobs and daemons.
    #[serde(default)]
    pub pools: std::collections::BTreeMap<String, PoolConfig>,
}

/// One pool (`crate::ledger::pools`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// How many attempts may hold a slot at once.
    pub slots: u32,
    /// What the pool protects, shown in the console.
    #[serde(default)]
    pub description: String,
}

/// Where reports and archived days are kept (`crate::storage`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`,
    /// `file:///dir`, or a directory under the working directory.
    pub url: String,
    /// A request to the store gives up after this long.
    pub timeout_secs: u64,
    /// Retries of a failed request (with backoff) before it fails.
    pub retries: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: "var/store".into(),
            timeout_secs: 30,
            retries: 3,
        }
    }
}

/// Where notifications go and which events send them to every job's
/// targets (a job file adds its own with the same keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default)]
    pub targets: Vec<NotifyTarget>,
    /// A run failed.
    #[serde(default)]
    pub on_failure: Vec<String>,
    /// A task failed after its retries.
    #[serde(default)]
    pub on_task_failure: Vec<String>,
    /// A run succeeded after a failed attempt (a retry, a lost worker, a clear).
    #[serde(default)]
    pub on_recovered: Vec<String>,
    /// An interval missed its job's `deadline`.
    #[serde(default)]
    pub on_late: Vec<String>,
    /// A data check failed or warned (`[checks.NAME]` in a job file).
    #[serde(default)]
    pub on_check_failure: Vec<String>,
    /// More dead letters than `dead_letters_per_hour`, or more gaps than
    /// `gaps_per_hour`, in an hour of ingest.
    #[serde(default)]
    pub on_ingest: Vec<String>,
    /// 0: no alert.
    #[serde(default)]
    pub dead_letters_per_hour: u64,
    /// 0: no alert.
    #[serde(default)]
    pub gaps_per_hour: u64,
    /// Delivery attempts before a notification is given up (each recorded).
    #[serde(default = "default_notify_attempts")]
    pub max_attempts: u32,
}

fn default_notify_attempts() -> u32 {
    10
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            targets: Vec::new(),
            on_failure: Vec::new(),
            on_task_failure: Vec::new(),
            on_recovered: Vec::new(),
            on_late: Vec::new(),
            on_check_failure: Vec::new(),
            on_ingest: Vec::new(),
            dead_letters_per_hour: 0,
            gaps_per_hour: 0,
            max_attempts: default_notify_attempts(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum NotifyTarget {
    /// An HTTP POST of a Slack-compatible JSON body (`text`, and the event
    /// under `hxjobs`), signed with HMAC-SHA256 when `secret` is set
    /// (`X-Hxjobs-Signature-256: sha256=<hex>`).
    Webhook {
        name: String,
        /// A secret: its userinfo, query and path tokens never print.
        url: Secret,
        #[serde(default)]
        secret: Option<Secret>,
    },
    /// A mail over SMTP.
    Email {
        name: String,
        host: String,
        #[serde(default)]
        port: Option<u16>,
        /// `starttls` (port 587), `tls` (implicit, port 465) or `none`
        /// (loopback relays only).
        #[serde(default = "default_smtp_security")]
        security: SmtpSecurity,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<Secret>,
        from: String,
        to: Vec<String>,
    },
}

fn default_smtp_security() -> SmtpSecurity {
    SmtpSecurity::Starttls
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    Starttls,
    Tls,
    None,
}

impl NotifyTarget {
    pub fn name(&self) -> &str {
        match self {
            NotifyTarget::Webhook { name, .. } | NotifyTarget::Email { name, .. } => name,
        }
    }
}

impl NotifyConfig {
    /// Checks targets and rules; the error names the key.
    fn check(&self) -> std::result::Result<(), (String, String)> {
        for (i, t) in self.targets.iter().enumerate() {
            let key = |k: &str| format!("notify.targets[{i}].{k}");
            if t.name().trim().is_empty() {
                return Err((key("name"), "must not be empty".into()));
            }
            if self.targets[..i].iter().any(|o| o.name() == t.name()) {
                return Err((
                    key("name"),
                    format!("target `{}` is defined twice", t.name()),
                ));
            }
            match t {
                NotifyTarget::Webhook { url, secret, .. } => {
                    let url = url.expose();
                    let ok = (url.starts_with("https://") || url.starts_with("http://"))
                        && url.split("://").nth(1).is_some_and(|rest| {
                            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
                            !host.is_empty() && !host.contains(' ')
                        });
                    if !ok {
                        return Err((
                            key("url"),
                            format!("`{}` is not an http(s) URL", crate::redact::url(url)),
                        ));
                    }
                    if secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
                        return Err((
                            key("secret"),
                            "is empty (leave it out to send unsigned)".into(),
                        ));
                    }
                }
                NotifyTarget::Email {
                    host,
                    from,
                    to,
                    username,
                    password,
                    ..
                } => {
                    if host.trim().is_empty() {
                        return Err((key("host"), "must not be empty".into()));
                    }
                    if !from.contains('@') {
                        return Err((key("from"), format!("`{from}` is not a mail address")));
                    }
                    if to.is_empty() {
                        return Err((key("to"), "needs at least one address".into()));
                    }
                    if let Some(bad) = to.iter().find(|a| !a.contains('@')) {
                        return Err((key("to"), format!("`{bad}` is not a mail address")));
                    }
                    if username.is_some() != password.is_some() {
                        return Err((key("password"), "username and password go together".into()));
                    }
                }
            }
        }
        for (rule, names) in [
            ("notify.on_failure", &self.on_failure),
            ("notify.on_task_failure", &self.on_task_failure),
            ("notify.on_recovered", &self.on_recovered),
            ("notify.on_late", &self.on_late),
            ("notify.on_check_failure", &self.on_check_failure),
            ("notify.on_ingest", &self.on_ingest),
        ] {
            if let Some(n) = names.iter().find(|n| self.target(n).is_none()) {
                return Err((rule.to_string(), format!("names no target: `{n}`")));
            }
        }
        if self.max_attempts == 0 {
            return Err(("notify.max_attempts".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    pub fn target(&self, name: &str) -> Option<&NotifyTarget> {
        self.targets.iter().find(|t| t.name() == name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// What one task attempt's log keeps; the rest is counted and dropped.
    pub max_bytes_per_attempt: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// One definition file per report type (`<type>.toml`).
    pub definitions_dir: PathBuf,
    /// Where reports were written before the object store (read by
    /// `hxjobs storage migrate` and for reports not yet migrated).
    pub output_dir: PathBuf,
    /// The availability objective the BI report measures against, in percent.
    #[serde(default = "default_slo")]
    pub availability_slo_pct: f64,
}

fn default_slo() -> f64 {
    99.5
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// The sustained events/s the platform is built for.
    pub events_per_sec: f64,
    /// Days of hourly rollups the analysis looks back over.
    pub days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveStatsConfig {
    /// Run the live consumer next to the API.
    pub enabled: bool,
    /// Its own consumer group; it starts at the latest offsets.
    pub consumer_group: String,
    /// Models tracked one by one; the rest are counted under "other".
    pub max_models: usize,
}

/// Days each data class is kept; 0 keeps it forever.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Where archived days went before the object store (their recorded
    /// paths are what `hxjobs storage migrate` reads).
    pub archive_dir: PathBuf,
    pub raw_events_days: u32,
    pub dead_letters_days: u32,
    pub hourly_rollups_days: u32,
    pub daily_rollups_days: u32,
    pub weekly_rollups_days: u32,
    pub monthly_rollups_days: u32,
    pub run_ledger_days: u32,
    /// `ingest_commits`: which worker moved which partition's offset.
    pub ingest_commits_days: u32,
    pub reports_days: u32,
    /// The audit log: logins, refusals and every state change.
    pub audit_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupsConfig {
    /// An hourly rollup waits until ingest has stored everything the broker
    /// held after the hour ended; past this many seconds after the hour's
    /// end it runs anyway.
    pub ready_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How often the daemon looks for due schedules, queued runs and dead workers.
    pub poll_secs: u64,
    /// How often a running run writes its heartbeat.
    pub heartbeat_secs: u64,
    /// A running run without a heartbeat for this long has lost its worker.
    pub stale_after_secs: u64,
    /// A run whose worker was lost this many times is marked failed.
    pub max_run_attempts: u32,
    /// Runs one daemon executes at once, over all jobs.
    pub max_parallel_runs: usize,
    /// On Ctrl-C / SIGTERM, how long running runs may take to finish before
    /// they are stopped and handed back to the queue.
    pub shutdown_grace_secs: u64,
    /// How often a daemon with `trigger = "complete"` jobs looks whether
    /// ingest has completed their next interval.
    pub complete_poll_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Directory of job definitions (`*.toml`).
    pub dir: PathBuf,
    /// How often daemons and `hxjobs serve` look for added, changed and
    /// removed job files (SIGHUP: at once).
    pub reload_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    pub client_id: String,
    /// Names this deployment's offsets in PostgreSQL.
    pub group_id: String,
    /// Where a partition with no stored offset starts.
    pub auto_offset_reset: OffsetReset,
    /// Deadline for metadata, watermark and produce calls.
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    pub llm_requests: String,
    pub user_feedback: String,
    pub system_metrics: String,
    pub business_events: String,
    pub error_events: String,
    pub dead_letter: String,
    pub partitions: i32,
    pub dead_letter_partitions: i32,
    pub replication_factor: i32,
    pub retention_ms: i64,
    pub cleanup_policy: String,
}

impl TopicsConfig {
    /// The event topics in contract order, each with the event type it carries.
    pub fn event_topics(&self) -> [(&str, EventType); 5] {
        [
            (self.llm_requests.as_str(), EventType::LlmRequest),
            (self.user_feedback.as_str(), EventType::UserFeedback),
            (self.system_metrics.as_str(), EventType::SystemMetric),
            (self.business_events.as_str(), EventType::BusinessEvent),
            (self.error_events.as_str(), EventType::ErrorEvent),
        ]
    }

    /// The event topics' names.
    pub fn event_topic_names(&self) -> Vec<String> {
        self.event_topics()
            .iter()
            .map(|(t, _)| t.to_string())
            .collect()
    }

    /// Puts `prefix` before every topic name, the dead-letter topic too
    /// (separate topic sets for tests and benchmarks on one broker).
    pub fn prefix_names(&mut self, prefix: &str) {
        for name in [
            &mut self.llm_requests,
            &mut self.user_feedback,
            &mut self.system_metrics,
            &mut self.business_events,
            &mut self.error_events,
            &mut self.dead_letter,
        ] {
            *name = format!("{prefix}{name}");
        }
    }

    /// The topic that carries `event_type`.
    pub fn topic_for(&self, event_type: EventType) -> &str {
        match event_type {
            EventType::LlmRequest => &self.llm_requests,
            EventType::UserFeedback => &self.user_feedback,
            EventType::SystemMetric => &self.system_metrics,
            EventType::BusinessEvent => &self.business_events,
            EventType::ErrorEvent => &self.error_events,
        }
    }
}

/// A value that must not reach logs or output: its `Debug`, `Display` and
/// `Serialize` show `***` (a URL shows itself without its credentials,
/// [`crate::redact::url`]); the value itself only through
/// [`Secret::expose`]. Written as the value, or as `{ env = "NAME" }` or
/// `{ file = "/path" }` to keep it out of the configuration file.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Secret, D::Error> {
        use serde::de::Error as _;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Value(String),
            From(SecretSource),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SecretSource {
            env: Option<String>,
            file: Option<PathBuf>,
        }
        let value = match Written::deserialize(d)? {
            Written::Value(v) => v,
            Written::From(SecretSource {
                env: Some(name),
                file: None,
            }) => std::env::var(&name).map_err(|_| {
                D::Error::custom(format!("the environment variable {name} is not set"))
            })?,
            Written::From(SecretSource {
                env: None,
                file: Some(path),
            }) => std::fs::read_to_string(&path)
                .map(|t| t.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| {
                    D::Error::custom(format!(
                        "cannot read the secret file {}: {e}",
                        path.display()
                    ))
                })?,
            Written::From(_) => {
                return Err(D::Error::custom(
                    "a secret is a string, { env = \"NAME\" } or { file = \"/path\" }",
                ))
            }
        };
        Ok(Secret(value))
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn shown(&self) -> String {
        if self.0.contains("://") {
            crate::redact::url(&self.0)
        } else {
            "***".to_string()
        }
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Its password is a secret: shown as `***`.
    pub url: Secret,
    pub max_connections: u32,
    pub connect_timeout_secs: u64,
}

impl DatabaseConfig {
    /// The URL with any password replaced, fit for logs and error messages.
    pub fn redacted_url(&self) -> String {
        crate::redact::url(self.url.expose())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Events written per PostgreSQL transaction.
    pub batch_size: usize,
    /// Larger messages become dead letters.
    pub max_event_bytes: usize,
    /// A drain that receives nothing for this long while data is still expected fails.
    pub stall_timeout_secs: u64,
    /// How the daemon ingests (HXJOBS_INGEST_MODE).
    pub mode: IngestMode,
    /// A continuous worker commits a batch when it is full, this old, or at
    /// the broker's ends as last read.
    pub max_batch_delay_ms: u64,
    /// How long a caught-up continuous worker's fetch may wait at the
    /// broker for data (one far behind waits longer).
    pub fetch_wait_ms: u64,
    /// A worker that stops renewing its partition leases loses them after
    /// this long (at once when its process dies).
    pub stale_after_secs: u64,
    /// A partition with data on the broker past its stored position whose
    /// position has not moved for this long is stalled: `/health` answers
    /// 503 and `hxjobs_ingest_partitions_stalled` counts it.
    pub stalled_after_secs: u64,
    /// How often a continuous worker reads the broker's ends of its
    /// partitions and records how far its stored positions have passed
    /// them (`caught_up_through`: what completeness triggers wait on).
    #[serde(default = "default_marks_ms")]
    pub marks_ms: u64,
}

fn default_marks_ms() -> u64 {
    500
}

/// How a daemon ingests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestMode {
    /// The daemon runs a worker that shares the partitions with the other
    /// daemons' and commits as events arrive.
    Continuous,
    /// Only the `ingest` job's drains (one a minute) store events.
    Drain,
    /// This daemon does not ingest (its `ingest` job still drains).
    Off,
}

impl IngestConfig {
    /// How long a partition lease lasts without renewal.
    pub fn stale_after(&self) -> Duration {
        Duration::from_secs(self.stale_after_secs)
    }

    /// How often a worker renews its leases and rebalances: five times per
    /// lease.
    pub fn beat_every(&self) -> Duration {
        self.stale_after() / 5
    }

    pub fn max_batch_delay(&self) -> Duration {
        Duration::from_millis(self.max_batch_delay_ms)
    }

    /// How often a worker records its partitions' completeness marks: at
    /// most every beat, at least every 50 ms.
    pub fn marks_every(&self) -> Duration {
        Duration::from_millis(self.marks_ms.max(50)).min(self.beat_every())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersConfig {
    /// Also publish rejected messages to the dead-letter topic.
    pub publish: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub host: String,
    pub port: u16,
    /// Bearer token for mutating endpoints (HXJOBS_API_TOKEN). Without one
    /// they are refused unless the API listens on loopback only.
    #[serde(default)]
    pub token: Option<Secret>,
    /// More bearer tokens, each with the name the ledger records for what
    /// it did (`api:<name>`; the single `token` is `api:token`).
    #[serde(default)]
    pub tokens: Vec<NamedToken>,
    /// Where people reach this API (e.g. `https://hxjobs.example.com`):
    /// notifications link to runs under it. Unset: they name the run id.
    #[serde(default)]
    pub public_url: Option<String>,
    /// More names this API answers to (a leading dot: any name under it),
    /// besides loopback names, `host` and the host of `public_url`. A
    /// request naming another host is refused (421).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Open connections served in full; past this, only `/health` and
    /// `/metrics` are answered (others 503) and past twice this, new ones
    /// are closed unanswered.
    pub max_connections: usize,
    /// A client has this long to send a request's headers (idle
    /// keep-alive connections close after it too).
    pub header_timeout_secs: u64,
    /// A request not answered within this is answered 503 (a stream, once
    /// started, runs on).
    pub request_timeout_secs: u64,
    /// Server-sent event streams open at once (SSE_MAX_CONNECTIONS); past
    /// it, 503.
    pub max_sse_streams: usize,
    /// WebSocket streams open at once (WEBSOCKET_MAX_CONNECTIONS); past
    /// it, 503.
    pub max_websockets: usize,
    /// A console login lasts this long (it ends sooner at logout).
    pub session_hours: u64,
    /// Failed console logins from one address within 5 minutes before it
    /// is refused (429) until they age out.
    pub max_failed_logins: u32,
    /// The most intervals one backfill, or its preview, may cover through
    /// the API or the console (`hxjobs backfill --max-intervals` may go past).
    pub max_backfill_intervals: usize,
    /// `/metrics` answers without credentials on an API that listens
    /// beyond loopback (for scrapers on a private network).
    #[serde(default)]
    pub public_metrics: bool,
    /// Console login through an OpenID provider (authorization code with
    /// PKCE); token login stays.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

/// An OpenID provider people log in to the console with. Its ID token's
/// `role_claim` (a string or a list) names groups; the first role (admin,
/// then operator, then viewer) one of whose groups it names is theirs; a
/// person in none is refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is under it).
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Asked for besides `openid`.
    #[serde(default = "oidc_scopes")]
    pub scopes: Vec<String>,
    /// The claim with the person's groups or roles.
    #[serde(default = "oidc_role_claim")]
    pub role_claim: String,
    #[serde(default)]
    pub admin: Vec<String>,
    #[serde(default)]
    pub operator: Vec<String>,
    #[serde(default)]
    pub viewer: Vec<String>,
    /// What the login button says.
    #[serde(default = "oidc_label")]
    pub label: String,
}

fn oidc_scopes() -> Vec<String> {
    vec!["email".into(), "groups".into()]
}

fn oidc_role_claim() -> String {
    "groups".into()
}

fn oidc_label() -> String {
    "Log in with single sign-on".into()
}

impl OidcConfig {
    /// The role the groups in `claim` map to, if any.
    pub fn role_of(&self, claim: &serde_json::Value) -> Option<Role> {
        let groups: Vec<&str> = match claim {
            serde_json::Value::String(s) => vec![s.as_str()],
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        let has = |names: &[String]| names.iter().any(|n| groups.contains(&n.as_str()));
        if has(&self.admin) {
            Some(Role::Admin)
        } else if has(&self.operator) {
            Some(Role::Operator)
        } else if has(&self.viewer) {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    pub name: String,
    pub token: Secret,
    /// What it may do: `viewer` (reads; the default), `operator` (also
    /// trigger, clear, mark, cancel, pause, backfill, generate reports) or
    /// `admin` (also retention, notification tests, the audit log).
    #[serde(default = "viewer")]
    pub role: Role,
    /// The jobs it may act on (globs: `hourly_*`); unset: every job.
    #[serde(default)]
    pub jobs: Option<Vec<String>>,
}

fn viewer() -> Role {
    Role::Viewer
}

/// A role, in increasing order of what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Environment variables from the platform's specification and the keys they set.
fn env_key(name: &str) -> Option<String> {
    let name = name.to_ascii_uppercase();
    let key = match name.as_str() {
        "DATABASE_URL" => "database.url".to_string(),
        "BATCH_PROCESSING_API_PORT" => "api.port".to_string(),
        "HXJOBS_API_TOKEN" => "api.token".to_string(),
        "SSE_MAX_CONNECTIONS" => "api.max_sse_streams".to_string(),
        "WEBSOCKET_MAX_CONNECTIONS" => "api.max_websockets".to_string(),
        "HXJOBS_INGEST_MODE" => "ingest.mode".to_string(),
        "HXJOBS_STORAGE_URL" => "storage.url".to_string(),
        "KAFKA_BOOTSTRAP_SERVERS"
        | "KAFKA_CLIENT_ID"
        | "KAFKA_GROUP_ID"
        | "KAFKA_AUTO_OFFSET_RESET" => format!("kafka.{}", name["KAFKA_".len()..].to_lowercase()),
        _ => {
            let topic_key = name.strip_prefix("KAFKA_TOPIC_")?.to_lowercase();
            const TOPIC_KEYS: [&str; 11] = [
                "llm_requests",
                "user_feedback",
                "system_metrics",
                "business_events",
                "error_events",
                "dead_letter",
                "partitions",
                "dead_letter_partitions",
                "replication_factor",
                "retention_ms",
                "cleanup_policy",
            ];
            if !TOPIC_KEYS.contains(&topic_key.as_str()) {
                return None;
            }
            format!("topics.{topic_key}")
        }
    };
    Some(key)
}

/// The names of every environment variable that overrides a key.
pub fn env_names() -> Vec<&'static str> {
    vec![
        "DATABASE_URL",
        "BATCH_PROCESSING_API_PORT",
        "HXJOBS_STORAGE_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_CLIENT_ID",
        "KAFKA_GROUP_ID",
        "KAFKA_AUTO_OFFSET_RESET",
        "KAFKA_TOPIC_LLM_REQUESTS",
        "KAFKA_TOPIC_USER_FEEDBACK",
        "KAFKA_TOPIC_SYSTEM_METRICS",
        "KAFKA_TOPIC_BUSINESS_EVENTS",
        "KAFKA_TOPIC_ERROR_EVENTS",
        "KAFKA_TOPIC_DEAD_LETTER",
        "KAFKA_TOPIC_PARTITIONS",
        "KAFKA_TOPIC_DEAD_LETTER_PARTITIONS",
        "KAFKA_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TOPIC_RETENTION_MS",
        "KAFKA_TOPIC_CLEANUP_POLICY",
        "HXJOBS_INGEST_MODE",
    ]
}

impl Config {
    /// Defaults → `file` → environment, validated.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Error::Missing(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment =
            figment.merge(Env::raw().filter_map(|name| env_key(name.as_str()).map(Into::into)));
        Self::extract(figment)
    }

    /// The embedded defaults alone, with no file and no environment.
    pub fn defaults() -> Result<Config> {
        Self::extract(Figment::from(Toml::string(DEFAULTS)))
    }

    fn extract(figment: Figment) -> Result<Config> {
        let config: Config = figment.extract().map_err(|e| Error::Parse(describe(e)))?;
        config.notify.check().map_err(|(key, problem)| {
            let source_name = figment
                .find_metadata("notify.targets")
                .or_else(|| figment.find_metadata("notify"))
                .map(|m| source_of(m, &key))
                .unwrap_or_else(|| "defaults".to_string());
            Error::Invalid {
                key,
                problem,
                source_name,
            }
        })?;
        config.validate().map_err(|(key, problem)| {
            let source_name = figment
                .find_metadata(key)
                .map(|m| source_of(m, key))
                .unwrap_or_else(|| "defaults".to_string());
            Error::Invalid {
                key: key.to_string(),
                problem,
                source_name,
            }
        })?;
        config.register_secrets();
        Ok(config)
    }

    /// Tells [`crate::redact`] every secret of this configuration, so no
    /// error, log line or page prints one.
    pub fn register_secrets(&self) {
        use crate::redact::register;
        let db = self.database.url.expose();
        // A password equal to its user (a local default such as
        // hxjobs:hxjobs) is shown with the user anyway: hiding that word
        // everywhere would hide nothing.
        if let Some((user, password)) = db
            .split_once("://")
            .and_then(|(_, rest)| rest.split(['/', '?']).next())
            .and_then(|authority| authority.rsplit_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
        {
            if password != user {
                register(password);
            }
        }
        for t in self
            .api
            .token
            .iter()
            .chain(self.api.tokens.iter().map(|t| &t.token))
            .chain(
                self.api
                    .oidc
                    .iter()
                    .filter_map(|o| o.client_secret.as_ref()),
            )
        {
            register(t.expose());
        }
        for target in &self.notify.targets {
            match target {
                NotifyTarget::Webhook { url, secret, .. } => {
                    register(url.expose());
                    if let Some(s) = secret {
                        register(s.expose());
                    }
                }
                NotifyTarget::Email { password, .. } => {
                    if let Some(p) = password {
                        register(p.expose());
                    }
                }
            }
        }
    }

    /// Checks what serde cannot: ranges, names, consistency.
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        fn nonempty(key: &'static str, v: &str) -> std::result::Result<(), (&'static str, String)> {
            if v.trim().is_empty() {
                Err((key, "must not be empty".into()))
            } else {
                Ok(())
            }
        }
        for (name, p) in &self.pools {
            if !(1..=10_000).contains(&p.slots) {
                return Err(("pools", format!("pool `{name}`: slots must be 1 to 10000")));
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err((
                    "pools",
                    format!("pool `{name}`: a name is letters, digits, `_` and `-`"),
                ));
            }
        }
        nonempty("kafka.bootstrap_servers", &self.kafka.bootstrap_servers)?;
        nonempty("kafka.client_id", &self.kafka.client_id)?;
        nonempty("kafka.group_id", &self.kafka.group_id)?;
        if self.kafka.request_timeout_ms == 0 {
            return Err(("kafka.request_timeout_ms", "must be at least 1".into()));
        }
        let t = &self.topics;
        let named: [(&'static str, &str); 6] = [
            ("topics.llm_requests", &t.llm_requests),
            ("topics.user_feedback", &t.user_feedback),
            ("topics.system_metrics", &t.system_metrics),
            ("topics.business_events", &t.business_events),
            ("topics.error_events", &t.error_events),
            ("topics.dead_letter", &t.dead_letter),
        ];
        for (i, (key, name)) in named.iter().enumerate() {
            if let Err(problem) = check_topic_name(name) {
                return Err((key, problem));
            }
            if named[..i].iter().any(|(_, other)| other == name) {
                return Err((key, format!("topic `{name}` is configured twice")));
            }
        }
        if t.partitions < 1 {
            return Err(("topics.partitions", "must be at least 1".into()));
        }
        if t.dead_letter_partitions < 1 {
            return Err(("topics.dead_letter_partitions", "must be at least 1".into()));
        }
        if t.replication_factor < 1 {
            return Err(("topics.replication_factor", "must be at least 1".into()));
        }
        if t.retention_ms < -1 || t.retention_ms == 0 {
            return Err((
                "topics.retention_ms",
                "must be positive, or -1 for no limit".into(),
            ));
        }
        if !["delete", "compact", "compact,delete", "delete,compact"]
            .contains(&t.cleanup_policy.as_str())
        {
            return Err((
                "topics.cleanup_policy",
                format!("must be delete or compact, not `{}`", t.cleanup_policy),
            ));
        }
        let url = self.database.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err((
                "database.url",
                "must be a postgres:// or postgresql:// URL".into(),
            ));
        }
        crate::storage::check_url(&self.storage.url).map_err(|e| ("storage.url", e))?;
        if self.storage.timeout_secs == 0 {
            return Err(("storage.timeout_secs", "must be at least 1".into()));
        }
        if self.database.max_connections < 2 {
            return Err(("database.max_connections", "must be at least 2".into()));
        }
        if self.ingest.batch_size == 0 {
            return Err(("ingest.batch_size", "must be at least 1".into()));
        }
        if self.ingest.max_event_bytes < 64 {
            return Err(("ingest.max_event_bytes", "must be at least 64".into()));
        }
        if self.ingest.stale_after_secs < 2 {
            return Err(("ingest.stale_after_secs", "must be at least 2".into()));
        }
        if self.jobs.reload_secs == 0 {
            return Err(("jobs.reload_secs", "must be at least 1".into()));
        }
        if self.ingest.stalled_after_secs < 2 {
            return Err(("ingest.stalled_after_secs", "must be at least 2".into()));
        }
        if !(1..=10_000).contains(&self.ingest.fetch_wait_ms) {
            return Err(("ingest.fetch_wait_ms", "must be 1 to 10000".into()));
        }
        if self.ingest.max_batch_delay_ms == 0 {
            return Err(("ingest.max_batch_delay_ms", "must be at least 1".into()));
        }
        if self.ingest.stall_timeout_secs == 0 {
            return Err(("ingest.stall_timeout_secs", "must be at least 1".into()));
        }
        let s = &self.scheduler;
        for (key, value) in [
            ("scheduler.poll_secs", s.poll_secs),
            ("scheduler.complete_poll_ms", s.complete_poll_ms),
            ("scheduler.heartbeat_secs", s.heartbeat_secs),
            ("scheduler.max_run_attempts", u64::from(s.max_run_attempts)),
            ("scheduler.max_parallel_runs", s.max_parallel_runs as u64),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if s.stale_after_secs < 2 * s.heartbeat_secs {
            return Err((
                "scheduler.stale_after_secs",
                format!(
                    "must be at least twice scheduler.heartbeat_secs ({})",
                    s.heartbeat_secs
                ),
            ));
        }
        nonempty("api.host", &self.api.host)?;
        for (key, value) in [
            ("api.max_connections", self.api.max_connections as u64),
            ("api.header_timeout_secs", self.api.header_timeout_secs),
            ("api.request_timeout_secs", self.api.request_timeout_secs),
            ("api.max_sse_streams", self.api.max_sse_streams as u64),
            ("api.max_websockets", self.api.max_websockets as u64),
            ("api.session_hours", self.api.session_hours),
            (
                "api.max_failed_logins",
                u64::from(self.api.max_failed_logins),
            ),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if self.api.max_backfill_intervals == 0 {
            return Err(("api.max_backfill_intervals", "must be at least 1".into()));
        }
        if self.api.max_body_bytes == 0 {
            return Err(("api.max_body_bytes", "must be at least 1".into()));
        }
        if !(self.capacity.events_per_sec.is_finite() && self.capacity.events_per_sec > 0.0) {
            return Err((
                "capacity.events_per_sec",
                "must be a positive number".into(),
            ));
        }
        if self.capacity.days < 2 {
            return Err(("capacity.days", "must be at least 2".into()));
        }
        nonempty("live_stats.consumer_group", &self.live_stats.consumer_group)?;
        if self.live_stats.max_models == 0 {
            return Err(("live_stats.max_models", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Kafka's rule for topic names: 1–249 of `[a-zA-Z0-9._-]`.
fn check_topic_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err("must be 1 to 249 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "has `{c}`; topic names take only letters, digits, . _ -"
        ));
    }
    Ok(())
}

/// Where `key`'s value came from: the file, the environment variable, or
/// the layer's name.
fn source_of(meta: &figment::Metadata, key: &str) -> String {
    if let Some(source) = &meta.source {
        return source.to_string();
    }
    let var = env_names()
        .into_iter()
        .find(|n| env_key(n).as_deref() == Some(key));
    match var {
        Some(var) if meta.name.contains("environment") => format!("environment variable {var}"),
        _ => meta.name.to_string(),
    }
}

/// One line per figment error, each naming the key and its source.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let mut line = e.kind.to_string();
            if !e.path.is_empty() {
                line = format!("`{}`: {line}", e.path.join("."));
            }
            if let Some(meta) = &e.metadata {
                line.push_str(&format!(" (in {})", source_of(meta, &e.path.join("."))));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Who runs a command-line control, as the ledger records it:
/// `cli:<login name>` (`$USER`, else `$LOGNAME`, else the uid).
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.trim().is_empty());
    match user.or_else(os_account) {
        Some(u) => format!("cli:{}", u.trim()),
        None => format!("cli:uid {}", current_uid()),
    }
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The name of the process's OS account (the password database's entry).
fn os_account() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf's length is passed.
    let rc = unsafe {
        libc::getpwuid_r(
            current_uid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points at a NUL-terminated string in buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let c = Config::defaults().expect("embedded defaults are valid");
        assert_eq!(c.api.port, 9101);
        assert_eq!(c.topics.partitions, 3);
        assert_eq!(c.topics.llm_requests, "llm-requests");
        assert_eq!(c.kafka.auto_offset_reset, OffsetReset::Earliest);
    }

    #[test]
    fn env_names_map_to_keys() {
        assert_eq!(
            env_key("KAFKA_BOOTSTRAP_SERVERS").as_deref(),
            Some("kafka.bootstrap_servers")
        );
        assert_eq!(
            env_key("KAFKA_TOPIC_LLM_REQUESTS").as_deref(),
            Some("topics.llm_requests")
        );
        assert_eq!(
            env_key("KAFKA_TOPIC_PARTITIONS").as_deref(),
            Some("topics.partitions")
        );
        assert_eq!(
            env_key("BATCH_PROCESSING_API_PORT").as_deref(),
            Some("api.port")
        );
        assert_eq!(env_key("KAFKA_API_PORT"), None);
        assert_eq!(env_key("KAFKA_TOPIC_NOPE"), None);
        for name in env_names() {
            assert!(env_key(name).is_some(), "{name}");
        }
    }

    fn load_str(toml: &str) -> Result<Config> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, toml).expect("write");
        let figment = Figment::from(Toml::string(DEFAULTS)).merge(Toml::file(&path));
        Config::extract(figment)
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = load_str("[ingest]\nbatch_sise = 3\n").expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("batch_sise"), "{msg}");
        assert!(msg.contains("bad.toml"), "{msg}");
    }

    #[test]
    fn bad_value_names_key_and_file() {
        let err = load_str("[api]\nport = \"ninety\"\n").expect_err("bad type");
        let msg = err.to_string();
        assert!(msg.contains("api.port"), "{msg}");
        assert!(msg.contains("bad.toml"), "{msg}");

        let err = load_str("[ingest]\nbatch_size = 0\n").expect_err("bad range");
        let msg = err.to_string();
        assert!(msg.contains("ingest.batch_size"), "{msg}");
        assert!(msg.contains("bad.toml"), "{msg}");

        let err = load_str("[topics]\nllm_requests = \"a b\"\n").expect_err("bad topic");
        assert!(err.to_string().contains("topics.llm_requests"));
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = load_str("[ingest]\nbatch_size = 7\n").expect("valid");
        assert_eq!(c.ingest.batch_size, 7);
        assert_eq!(c.api.port, 9101);
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            crate::redact::url("postgres://u:secret@127.0.0.1:5432/db"),
            "postgres://u:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            crate::redact::url("postgres://127.0.0.1/db"),
            "postgres://127.0.0.1/db"
        );
    }

    #[test]
    fn secrets_never_print() {
        let mut c = Config::defaults().expect("defaults");
        c.database.url = Secret::new("postgres://u:pa55word@127.0.0.1:5432/db");
        c.api.token = Some(Secret::new("t0ken-value"));
        let debug = format!("{c:?} {:?} {:?}", c.database, c.api);
        let json = serde_json::to_string(&c).expect("json");
        for shown in [debug, json, c.database.url.to_string()] {
            assert!(!shown.contains("pa55word"), "{shown}");
            assert!(!shown.contains("t0ken-value"), "{shown}");
        }
        let json = serde_json::to_value(&c).expect("json");
        assert_eq!(
            json["database"]["url"],
            "postgres://u:***@127.0.0.1:5432/db"
        );
        assert_eq!(json["api"]["token"], "***");
        assert_eq!(
            c.api.token.as_ref().map(Secret::expose),
            Some("t0ken-value")
        );
    }
}
