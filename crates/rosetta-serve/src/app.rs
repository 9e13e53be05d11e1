//! The server: shared state, the router, the request pipeline every API goes through (limits →
//! queue → batch → answer), and start-up and graceful shutdown.

use crate::batcher::{Batcher, Finished, Job, Rejected};
use crate::config::ServerConfig;
use crate::engine::Engine;
use crate::error::{ApiError, ServeError};
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use rosetta::translate::{SourceText, TranslateOptions};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// A model ready to serve.
#[derive(Clone)]
pub struct ServedModel {
    /// Its name in requests.
    pub name: String,
    /// The language pair it serves, when known.
    pub pair: Option<(String, String)>,
    /// The model directories it was loaded from.
    pub paths: Vec<std::path::PathBuf>,
    /// The model.
    pub engine: Arc<dyn Engine>,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel")
            .field("name", &self.name)
            .field("pair", &self.pair)
            .finish_non_exhaustive()
    }
}

/// What every handler sees.
#[derive(Debug)]
pub struct AppState {
    /// The settings.
    pub config: ServerConfig,
    /// The models, in configuration order.
    pub models: Vec<ServedModel>,
    /// The queue and its workers.
    pub batcher: Batcher,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Accepted API keys, when keys are required.
    pub api_keys: Option<HashSet<String>>,
}

/// Shared state.
pub type Shared = Arc<AppState>;

impl AppState {
    /// Validates the config, reads the API keys and starts the decoding threads.
    pub fn new(config: ServerConfig, models: Vec<ServedModel>) -> Result<Self, ServeError> {
        config.validate()?;
        let api_keys = match &config.api_keys_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ServeError::Io {
                    path: path.clone(),
                    source: e,
                })?;
                let keys: HashSet<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect();
                if keys.is_empty() {
                    return Err(ServeError::Config(format!(
                        "{} holds no API key (one per line)",
                        path.display()
                    )));
                }
                Some(keys)
            }
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let batcher = Batcher::start(
            config.worker_count(),
            config.limits.queue_texts,
            config.batch.clone(),
            Arc::clone(&metrics),
        )
        .map_err(|e| ServeError::Config(format!("cannot start the decoding threads: {e}")))?;
        Ok(AppState {
            config,
            models,
            batcher,
            metrics,
            api_keys,
        })
    }

    /// Checks an API key when keys are required: `Err(true)` when one is missing, `Err(false)`
    /// when it is wrong.
    pub fn check_key(&self, key: Option<&str>) -> Result<(), bool> {
        match (&self.api_keys, key) {
            (None, _) => Ok(()),
            (Some(_), None | Some("")) => Err(true),
            (Some(keys), Some(k)) if keys.contains(k) => Ok(()),
            (Some(_), Some(_)) => Err(false),
        }
    }

    /// Index of the model serving `source` → `target`.
    pub fn model_for_pair(&self, source: &str, target: &str) -> Option<usize> {
        self.models.iter().position(|m| {
            m.pair
                .as_ref()
                .is_some_and(|(s, t)| s == source && t == target)
        })
    }

    /// Index of the model named `name`.
    pub fn model_named(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }

    /// Checks the request-size limits on a list of texts.
    pub fn check_texts(&self, texts: &[String]) -> Result<(), ApiError> {
        let limits = &self.config.limits;
        if texts.len() > limits.max_texts {
            return Err(ApiError::bad_request(format!(
                "Invalid request: request ({}) exceeds text limit ({})",
                texts.len(),
                limits.max_texts
            )));
        }
        if let Some(chars) = texts
            .iter()
            .map(|t| t.chars().count())
            .find(|&n| n > limits.max_chars)
        {
            return Err(ApiError::bad_request(format!(
                "Invalid request: request ({chars}) exceeds text limit ({})",
                limits.max_chars
            )));
        }
        Ok(())
    }

    /// Queues texts for a model and waits for their translations: the one path every API uses.
    pub async fn translate(
        &self,
        model_index: usize,
        texts: Vec<String>,
        options: TranslateOptions,
    ) -> Result<Finished, ApiError> {
        self.translate_read(model_index, options, |engine| {
            texts.iter().map(|t| engine.read_source(t)).collect()
        })
        .await
    }

    /// [`AppState::translate`] for texts already read by the model (`Engine::read_source`), as the
    /// LibreTranslate API reads them to decide whether to split them.
    pub async fn translate_sources(
        &self,
        model_index: usize,
        sources: Vec<SourceText>,
        options: TranslateOptions,
    ) -> Result<Finished, ApiError> {
        self.translate_read(model_index, options, |_| Ok(sources))
            .await
    }

    /// Checks the options, reads the texts (`read`), and queues them.
    async fn translate_read(
        &self,
        model_index: usize,
        mut options: TranslateOptions,
        read: impl FnOnce(&dyn Engine) -> rosetta::Result<Vec<SourceText>>,
    ) -> Result<Finished, ApiError> {
        let model = self
            .models
            .get(model_index)
            .ok_or_else(|| ApiError::bad_request("no such model"))?;
        options.max_tokens_per_batch = self.config.batch.max_tokens;
        options
            .validate()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let limits = &self.config.limits;
        if options.search.beam > limits.max_beam {
            return Err(ApiError::bad_request(format!(
                "beam {} is above this server's limit of {}",
                options.search.beam, limits.max_beam
            )));
        }
        let sources = read(model.engine.as_ref()).map_err(unreadable)?;
        // The request's own longest source, not the longest the model could read: an imported
        // OPUS-MT model (511 source pieces, max_len_a 2) asked 1,032 pieces of every request.
        let source = sources.iter().map(|s| s.pieces.len()).max().unwrap_or(0);
        let (a, b) = model.engine.max_len(&options);
        let longest =
            rosetta::search::max_output_len(a, b, source, usize::MAX).max(options.search.min_len);
        if longest > limits.max_output_len {
            return Err(ApiError::bad_request(format!(
                "the output length asked for (max_len_a · {source} + max_len_b = {longest}, or min_len) is above this server's limit of {} pieces",
                limits.max_output_len
            )));
        }
        let (reply, answer) = oneshot::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        // A client that goes away (or times out) drops this future: its job is then skipped if it
        // is still queued.
        let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancelled));
        let sentence_ids = (0..sources.len() as u64).collect();
        let job = Job {
            model: Arc::clone(&model.engine),
            model_index,
            sources,
            options,
            sentence_ids,
            cancelled: Arc::clone(&cancelled),
            reply,
            enqueued: Instant::now(),
        };
        match self.batcher.submit(job) {
            Ok(()) => {}
            Err(Rejected::Full) => {
                return Err(ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: format!(
                        "Slowdown: the translation queue is full ({} texts); retry shortly",
                        self.config.limits.queue_texts
                    ),
                    retry_after: Some(1),
                });
            }
            Err(Rejected::Closed) => {
                return Err(ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: "the server is shutting down".into(),
                    retry_after: Some(1),
                });
            }
        }
        let timeout = Duration::from_secs_f64(self.config.limits.timeout_s);
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(Ok(finished))) => Ok(finished),
            Ok(Ok(Err(message))) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)),
            Ok(Err(_)) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the decoding thread stopped before answering",
            )),
            // The guard above marks the job cancelled as this function returns.
            Err(_) => Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "the translation took longer than this server's {} s limit; retry later or send less text",
                    self.config.limits.timeout_s
                ),
                retry_after: Some(1),
            }),
        }
    }
}

/// A text the model cannot read: a 400.
pub fn unreadable(e: rosetta::Error) -> ApiError {
    ApiError::bad_request(format!("cannot read the text: {e}"))
}

/// Marks a job cancelled when the request waiting for it ends, however it ends (answered, timed out,
/// or dropped because the client disconnected); an answered job is no longer queued, so the mark
/// then changes nothing.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How long a whole request may take: the translation wait's limit and 10 s to send the body and
/// the answer.
fn whole_request_limit(state: &AppState) -> Duration {
    Duration::from_secs_f64(state.config.limits.timeout_s + 10.0)
}

/// The timeout layer answers 408 with an empty body; every other error of this server is JSON
/// (`{"error": …}`), which clients parse, so this one is too.
fn with_timeout_message(response: Response, limit: Duration) -> Response {
    if response.status() != StatusCode::REQUEST_TIMEOUT
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request took longer than {:.1} s (sending its body included)",
            limit.as_secs_f64()
        ),
    )
    .into_response()
}

/// Counts every request by route and status, with its latency.
async fn track(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = with_timeout_message(next.run(request).await, whole_request_limit(&state));
    state.metrics.record(
        &endpoint,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(state): State<Shared>) -> Response {
    if state.batcher.is_open() {
        axum::Json(serde_json::json!({
            "status": "ready",
            "models": state.models.len(),
            "queued_texts": state.batcher.queued_texts(),
        }))
        .into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// The routes, with body limits, CORS and metrics.
pub fn router(state: Shared) -> Router {
    let cors = &state.config.cors_origins;
    let cors_layer = (!cors.is_empty()).then(|| {
        let origin = if cors.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                cors.iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect::<Vec<_>>(),
            )
        };
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::HeaderName::from_static("x-api-key"),
            ])
    });
    let limit = state.config.limits.max_body_bytes;
    let router = Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(crate::native::models))
        .route("/v1/translate", post(crate::native::translate))
        .route("/translate", post(crate::libre::translate))
        .route(
            "/languages",
            get(crate::libre::languages).post(crate::libre::languages),
        )
        .route("/detect", post(crate::libre::detect))
        .route("/frontend/settings", get(crate::libre::settings))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        // Bounds every request, a slowly sent body included, so shutdown cannot wait forever on
        // one; the translation wait inside has its own, shorter limit (503).
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            whole_request_limit(&state),
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            track,
        ))
        .with_state(state);
    match cors_layer {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Maps a body that could not be read (too large, broken connection) to a JSON error.
pub fn body_error(rejection: axum::extract::rejection::BytesRejection, limit: usize) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            format!("the request body is larger than this server's limit of {limit} bytes"),
        )
    } else {
        ApiError::new(status, format!("cannot read the request body: {rejection}"))
    }
}

/// The API key a request carries in a header (`Authorization: Bearer KEY` or `X-API-Key`).
pub fn header_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .map(|_| &v[7..])
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(|k| k.trim().to_owned())
}

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    state: Shared,
    listener: tokio::net::TcpListener,
}

impl Server {
    /// Starts the workers and binds the address in `config` (port 0 picks a free port).
    pub async fn bind(config: ServerConfig, models: Vec<ServedModel>) -> Result<Self, ServeError> {
        let addr = config.addr;
        let state = Arc::new(AppState::new(config, models)?);
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::Listen {
                    addr: addr.to_string(),
                    source: e,
                })?;
        Ok(Server { state, listener })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state (metrics, queue), e.g. for an embedding program.
    pub fn state(&self) -> Shared {
        Arc::clone(&self.state)
    }

    /// Serves until `shutdown` completes, then stops accepting connections, answers every request
    /// already accepted, and stops the decoding threads.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self
            .listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let app = router(Arc::clone(&self.state));
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        let state = self.state;
        // Every request has had its answer; the queue is empty unless a client went away early.
        tokio::task::spawn_blocking(move || state.batcher.shutdown())
            .await
            .map_err(|e| {
                ServeError::Config(format!("the decoding threads did not stop cleanly: {e}"))
            })?;
        served.map_err(|e| ServeError::Listen { addr, source: e })
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Runs the server on its own runtime until Ctrl-C or SIGTERM: what `rosetta serve` calls.
/// `on_ready` gets the bound address once it accepts connections.
pub fn run_until_signal(
    config: ServerConfig,
    models: Vec<ServedModel>,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rosetta-http")
        .enable_all()
        .build()
        .map_err(|e| ServeError::Config(format!("cannot start the HTTP runtime: {e}")))?;
    runtime.block_on(async move {
        let server = Server::bind(config, models).await?;
        if let Ok(addr) = server.local_addr() {
            on_ready(addr);
        }
        server.run(shutdown_signal()).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timeout layer's 408 had an empty body, unlike every other error this server sends.
    #[test]
    fn regression_the_whole_request_timeout_had_no_json_error() {
        let empty = StatusCode::REQUEST_TIMEOUT.into_response();
        let answer = with_timeout_message(empty, Duration::from_secs(70));
        assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            answer.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("application/json")
        );
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(axum::body::to_bytes(answer.into_body(), 1 << 16))
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            json["error"],
            "the request took longer than 70.0 s (sending its body included)"
        );
        // Anything else passes as it is.
        let ok = with_timeout_message(StatusCode::OK.into_response(), Duration::from_secs(70));
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
