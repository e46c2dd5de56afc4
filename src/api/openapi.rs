//! `/openapi.json`, built with utoipa from the table of endpoints.

use std::sync::OnceLock;

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::{InfoBuilder, OpenApiBuilder, PathsBuilder, Required, ResponseBuilder};

/// (method, path, summary, query parameters).
pub const ENDPOINTS: &[(&str, &str, &str, &[&str])] = &[
    (
        "GET",
        "/health",
        "Service health with database, broker and object-store checks (503 when one is down)",
        &[],
    ),
    ("GET", "/jobs", "Job definitions", &[]),
    (
        "GET",
        "/jobs/{job}/runs",
        "A job's runs, newest first",
        &["state", "limit"],
    ),
    (
        "POST",
        "/jobs/{job}/runs",
        "Queue a manual run; body {\"interval_start\", \"params\", \"reason\"}, all optional; 400 invalid_params",
        &[],
    ),
    (
        "POST",
        "/jobs/{job}/clear",
        "Queue again every failed run of the job in a range; body {\"from\", \"to\", \"reason\"}",
        &[],
    ),
    (
        "POST",
        "/jobs/{job}/pause",
        "Pause a job (no new scheduled runs, none starts); 409 when already paused",
        &[],
    ),
    (
        "POST",
        "/jobs/{job}/unpause",
        "Unpause a job (its catch-up policy decides); 409 when not paused",
        &[],
    ),
    (
        "POST",
        "/backfill",
        "Start a backfill; body {\"job\", \"from\", \"to\", \"reprocess\", \"parallel\"}; 202 with backfill_id; 409 backfill_running (with its backfill_id) while one of the job runs",
        &[],
    ),
    ("GET", "/backfills", "API backfills, newest first (?job=)", &[]),
    ("GET", "/backfills/{id}", "One API backfill: range, state, counts", &[]),
    (
        "DELETE",
        "/backfills/{id}",
        "Cancel a running API backfill (its runs in hand are handed back); 409 backfill_finished otherwise",
        &[],
    ),
    (
        "GET",
        "/runs/{id}",
        "A run with its task instances, attempts (try numbers), actions and notifications",
        &[],
    ),
    (
        "POST",
        "/runs/{id}/clear",
        "Queue a finished run again with tasks cleared; body {\"tasks\", \"downstream\", \"reason\"}; 409 when queued or running",
        &[],
    ),
    (
        "POST",
        "/runs/{id}/mark",
        "Mark a run, or one task of it, succeeded or failed; body {\"state\", \"task\", \"reason\"}",
        &[],
    ),
    (
        "POST",
        "/runs/{id}/cancel",
        "Cancel a queued or running run (its task is stopped, not retried); 409 when it has ended",
        &[],
    ),
    (
        "GET",
        "/runs/{id}/tasks/{task}/logs",
        "A task attempt's log as text (latest try unless ?try=N)",
        &["try"],
    ),
    (
        "GET",
        "/runs/{id}/tasks/{task}/logs/stream",
        "A task attempt's log as server-sent events (log, then end), following it while it runs",
        &["try"],
    ),
    (
        "POST",
        "/reports/generate",
        "Generate a report; body {\"report_type\", \"format\", \"period_start\", \"require_complete\"}; 409 period_incomplete with missing_hours, 422 period_in_future",
        &[],
    ),
    (
        "GET",
        "/jobs/{job}/grid",
        "A job's newest runs with every task's state and try (the console's grid)",
        &["runs"],
    ),
    (
        "GET",
        "/jobs/{job}/checks",
        "The latest result of each data check on the job's intervals starting in [from, to) (default: the seven days before now), newest interval first",
        &["from", "to", "limit"],
    ),
    (
        "GET",
        "/jobs/{job}/versions",
        "Every version of the job's file seen (the first 12 hex digits of its SHA-256), the newest first, with the runs that ran with each",
        &[],
    ),
    (
        "GET",
        "/jobs/{job}/versions/{version}",
        "One version's text",
        &[],
    ),
    (
        "GET",
        "/runs",
        "Runs of every job, newest first; job, state, and from/to on the interval's start filter them",
        &["job", "state", "from", "to", "limit"],
    ),
    (
        "GET",
        "/pools",
        "Every pool's slots, the task attempts holding them and those waiting",
        &[],
    ),
    (
        "GET",
        "/reports",
        "Generated reports, newest first",
        &["type", "limit"],
    ),
    ("GET", "/reports/{id}", "One report's record", &[]),
    (
        "GET",
        "/reports/{id}/download",
        "The report's file (PDF, JSON or CSV), streamed from the object store (503 storage_unavailable while it does not answer); inline=true to show it in the browser",
        &["inline"],
    ),
    (
        "GET",
        "/capacity/analysis",
        "Daily peak and p95 events/s, trend and forecast",
        &["to"],
    ),
    (
        "POST",
        "/retention/cleanup",
        "Apply retention; body {\"dry_run\": true} only reports",
        &[],
    ),
    (
        "GET",
        "/rollups",
        "Rollup rows",
        &[
            "grain",
            "from",
            "to",
            "event_type",
            "source",
            "subject",
            "limit",
        ],
    ),
    (
        "GET",
        "/stats",
        "Live stats: 1, 5 and 15-minute windows per topic and per model",
        &[],
    ),
    (
        "GET",
        "/stats/stream",
        "Live stats as Server-Sent Events: the snapshot at once, then each one published (within about 20 ms of events being counted, and every second); at most api.max_sse_streams at once (503 past it)",
        &[],
    ),
    (
        "GET",
        "/stats/ws",
        "The same live stats over a WebSocket, one text message per snapshot; at most api.max_websockets at once (503 past it); a page of another site is refused",
        &[],
    ),
    ("GET", "/metrics", "Prometheus metrics", &[]),
    ("GET", "/openapi.json", "This document", &[]),
    (
        "GET",
        "/audit",
        "The audit log, newest first: logins, refusals and every change (admins)",
        &["actor", "action", "outcome", "since", "before", "limit"],
    ),
];

/// The OpenAPI document, built once.
pub fn document() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(build).clone()
}

fn build() -> String {
    let mut paths = PathsBuilder::new();
    for (method, path, summary, query) in ENDPOINTS {
        let mut op = OperationBuilder::new()
            .summary(Some(*summary))
            .response("200", ResponseBuilder::new().description("success"))
            .response(
                "4XX",
                ResponseBuilder::new().description("{\"error\": code, \"message\": text}"),
            );
        let need = match super::policy::access(method, path) {
            Some(super::policy::Access::Public) => None,
            Some(super::policy::Access::Metrics) => Some("viewer, unless api.public_metrics"),
            Some(super::policy::Access::Needs(n)) => Some(n.role().as_str()),
            None => Some("admin"),
        };
        if let Some(role) = need {
            op = op
                .description(Some(format!(
                    "Needs Authorization: Bearer <token> of the role {role} or above (or an API on loopback only without tokens)."
                )))
                .response("401", ResponseBuilder::new().description("missing or wrong token"))
                .response("403", ResponseBuilder::new().description("the token's role or jobs do not allow it"));
        }
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True),
                );
            }
        }
        for name in *query {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False),
            );
        }
        let method = match *method {
            "POST" => HttpMethod::Post,
            "DELETE" => HttpMethod::Delete,
            _ => HttpMethod::Get,
        };
        paths = paths.path(*path, PathItem::new(method, op));
    }
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("hxjobs batch-processing API")
                .version(env!("CARGO_PKG_VERSION")),
        )
        .paths(paths)
        .build();
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
