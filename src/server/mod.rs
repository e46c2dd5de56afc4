//! The HTTP server: the JSON API and the console on one port, behind the
//! checks every request passes, on hxjobs's own accept loop (a header-read
//! timeout, a connection cap).

pub mod guard;
#[cfg(test)]
mod router_tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::api::ApiError;
use crate::web::{is_loopback, spawn_health_checks, ApiState};

/// The checks every request passes, in one layer: where it comes from
/// ([`guard`]), then the handler within `api.request_timeout_secs` (503
/// past it; retention and report generation run to their end), a panic
/// answered 500 with an error id (the panic goes to the log through the
/// panic hook), never an empty reply.
async fn checks(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    use futures::FutureExt;
    if let Some(refused) = guard::refusal(&state.ops.config.api, &request) {
        return refused;
    }
    let to_the_end = RUN_TO_THE_END.contains(&request.uri().path());
    let handled = std::panic::AssertUnwindSafe(next.run(request)).catch_unwind();
    let limit = Duration::from_secs(state.ops.config.api.request_timeout_secs);
    let outcome = if to_the_end {
        Ok(handled.await)
    } else {
        tokio::time::timeout(limit, handled).await
    };
    match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            ApiError::internal_as("internal", format!("handler panicked: {what}")).into_response()
        }
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!(
                "the request was not answered within api.request_timeout_secs ({} s)",
                limit.as_secs()
            ),
        )
        .into_response(),
    }
}

/// Counts requests per route and status.
async fn count_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("hxjobs_api_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("hxjobs_api_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Every route of the API and the console, with the checks every request
/// passes: where it comes from, how long it may take, a panic's answer.
pub fn router(state: ApiState) -> Router {
    let limit = state.ops.config.api.max_body_bytes;
    routes(state.clone())
        .layer(axum::middleware::from_fn_with_state(state.clone(), checks))
        .layer(axum::middleware::from_fn(count_requests))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The same routes without the per-request checks [`router`] adds: only
/// `hxjobs bench api` serves it, as the baseline the checks are weighed
/// against.
#[doc(hidden)]
pub fn router_without_checks(state: ApiState) -> Router {
    let limit = state.ops.config.api.max_body_bytes;
    routes(state.clone())
        .layer(axum::middleware::from_fn(count_requests))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The API's routes and the console's.
fn routes(state: ApiState) -> Router<ApiState> {
    crate::api::routes(state.clone()).merge(crate::ui::router(state))
}

/// Listens on `api.host:api.port`; fails at once with the address and why.
pub async fn bind(api: &crate::config::ApiConfig) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = format!("{}:{}", api.host, api.port);
    tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves the API on `listener` until `stop` turns true; connections still
/// open `grace` after that are closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    grace: Duration,
) -> anyhow::Result<()> {
    let local: SocketAddr = listener.local_addr()?;
    tracing::info!(address = %local, "API listening");
    if !crate::web::any_token(&state.ops.config.api) && !is_loopback(&state.ops.config.api.host) {
        tracing::warn!("no API token configured (HXJOBS_API_TOKEN): only /health answers");
    }
    crate::metrics::install();
    spawn_health_checks(&state, Duration::from_secs(2));
    crate::metrics::spawn_refresher(
        state.ops.pools.data.clone(),
        state.ops.config.clone(),
        Duration::from_secs(5),
        state.ops.stop.clone(),
    );
    let stop = state.ops.stop.clone();
    let limits = Limits::of(&state.ops.config.api);
    let app = router(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    // Open connections, and the signal that asks them to finish: each
    // finishes the request in hand, then closes.
    let connections = tokio_util::task::TaskTracker::new();
    let (close, closing) = tokio::sync::watch::channel(false);
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, never spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let counted = Counted::new(&open);
        if counted.n > limits.max_connections * 2 {
            // Far past the cap: closed unanswered.
            continue;
        }
        let full = counted.n > limits.max_connections;
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let app = app.clone();
                async move {
                    let path = request.uri().path();
                    if full && path != "/health" && path != "/metrics" {
                        let mut r = ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too_many_connections",
                            "the API holds api.max_connections connections; try again shortly",
                        )
                        .into_response();
                        r.headers_mut().insert(
                            header::CONNECTION,
                            header::HeaderValue::from_static("close"),
                        );
                        return Ok::<_, std::convert::Infallible>(r);
                    }
                    tower::ServiceExt::oneshot(app, request.map(axum::body::Body::new)).await
                }
            },
        );
        // With upgrades: the live figures' WebSocket.
        let conn = http
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .with_upgrades();
        let mut closing = closing.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = asked_to_close(&mut closing) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(counted);
        });
    }
    let _ = close.send(true);
    connections.close();
    tokio::select! {
        _ = connections.wait() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::info!(grace_secs = grace.as_secs(), "API connections still open after the grace; closed");
        }
    }
    Ok(())
}

/// Resolves once the server asks its connections to close.
async fn asked_to_close(closing: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *closing.borrow_and_update() {
            return;
        }
        if closing.changed().await.is_err() {
            return;
        }
    }
}

/// How much one client, or all of them, may hold.
struct Limits {
    max_connections: usize,
    header_timeout: Duration,
}

impl Limits {
    fn of(api: &crate::config::ApiConfig) -> Limits {
        Limits {
            max_connections: api.max_connections,
            header_timeout: Duration::from_secs(api.header_timeout_secs),
        }
    }
}

/// One open connection, counted while it lives.
struct Counted {
    open: Arc<std::sync::atomic::AtomicUsize>,
    n: usize,
}

impl Counted {
    fn new(open: &Arc<std::sync::atomic::AtomicUsize>) -> Counted {
        let n = open.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        crate::metrics::api_connections(n);
        Counted {
            open: open.clone(),
            n,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let n = self.open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        crate::metrics::api_connections(n.saturating_sub(1));
    }
}

/// Work a request may start that runs to its end however long it takes
/// (stopping it halfway would only waste what was done): retention and
/// report generation. Their bodies are small and capped.
const RUN_TO_THE_END: [&str; 3] = [
    "/retention/cleanup",
    "/reports/generate",
    "/ui/reports/generate",
];
