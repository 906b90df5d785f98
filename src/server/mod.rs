//! `gomlx serve`: an HTTP server over the engine's Rust API. OpenAI's API
//! (`/v1/...`), Ollama's (`/api/...`), operations (`/health`, `/metrics`) and a
//! web chat page (`/`), on tokio + axum. The engine does the batching: every
//! request is one or more `Engine` generations (docs/server.md).

mod errors;
mod metrics;
mod ollama;
mod openai;
mod page;
mod params;
mod registry;
mod run;
mod structured;

pub use params::constant_time_eq;
pub use registry::model_name;

use crate::engine::{Engine, EngineOptions};
use crate::text::{ChatFormat, ChatMessage, ChatOptions, ChatTemplate};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use errors::{ApiError, ApiResult, Dialect};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything `gomlx serve` is told.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub model: Option<PathBuf>,
    pub models_dir: Option<PathBuf>,
    pub engine: EngineOptions,
    pub host: String,
    pub port: u16,
    /// Required as `Authorization: Bearer KEY` (or `x-api-key`) on the API routes.
    pub api_key: Option<String>,
    /// How long an idle model stays loaded; None: for ever.
    pub keep_alive: Option<Duration>,
    pub max_loaded_models: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for (and the default).
    pub max_tokens_cap: usize,
    /// Most generations running or waiting; more get 429.
    pub max_queue: usize,
    /// How long SIGTERM waits for running requests before closing.
    pub drain_timeout: Duration,
    /// Load the models before listening (rather than on first use).
    pub preload: bool,
    /// Shut down (as on SIGTERM) when standard input reaches its end: a supervisor
    /// (a test harness) that dies takes the server with it.
    pub stop_on_stdin_eof: bool,
    /// A chat template used instead of the models' own (`--chat-template`),
    /// e.g. one that renders tools for a model whose template does not.
    pub chat_template: Option<ChatTemplate>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            model: None,
            models_dir: None,
            engine: EngineOptions::default(),
            host: "127.0.0.1".into(),
            port: 8090,
            api_key: None,
            keep_alive: Some(Duration::from_secs(300)),
            max_loaded_models: 1,
            max_body_bytes: 4 << 20,
            max_tokens_cap: 4096,
            max_queue: 256,
            drain_timeout: Duration::from_secs(30),
            preload: false,
            stop_on_stdin_eof: false,
            chat_template: None,
        }
    }
}

pub struct ServerState {
    pub options: ServeOptions,
    registry: registry::Registry,
    metrics: metrics::Metrics,
    draining: AtomicBool,
    started: Instant,
}

type AppState = Arc<ServerState>;

/// Marks a response whose request logs its own line when its generation ends.
#[derive(Clone, Copy)]
struct GenerationLogged;
const GENERATION_LOGGED: GenerationLogged = GenerationLogged;

/// The `system_fingerprint` of responses: the gomlx version.
fn fingerprint() -> String {
    format!("gomlx-{}", env!("CARGO_PKG_VERSION"))
}

/// The template a chat renders with: `--chat-template`, else the model's own (its
/// `tool_use` template when tools are shown and it has one, as transformers picks);
/// None: the model has none.
fn chat_template(state: &ServerState, engine: &Engine, tools: bool) -> Option<ChatTemplate> {
    if let Some(t) = &state.options.chat_template {
        return Some(t.clone());
    }
    let tok = engine.tokenizer()?;
    tok.named_template("tool_use").filter(|_| tools).or_else(|| tok.chat_template()).cloned()
}

/// A chat's prompt ids: the template (`chat_template`), or "role: content" lines
/// for a model without one (as `gomlx chat` does).
fn chat_prompt(engine: &Engine, template: Option<ChatTemplate>, messages: &[ChatMessage], tools: Option<Vec<serde_json::Value>>) -> ApiResult<Vec<u32>> {
    let tok = engine.tokenizer().ok_or_else(|| ApiError::field("model", "this model has no tokenizer, so it cannot chat"))?;
    let opts = ChatOptions { add_generation_prompt: true, tools, ..Default::default() };
    let format = template.map_or(ChatFormat::Plain, ChatFormat::Custom);
    tok.encode_chat(messages, &opts, &format).map_err(|e| match e {
        crate::Error::Template(m) => ApiError::field("messages", format!("the chat template failed: {m}")),
        other => ApiError::field("messages", other.to_string()),
    })
}

/// The router of every endpoint (tests and `serve` use it).
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/version", get(ollama::version))
        .route("/metrics", get(metrics_text))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(page::index))
        .route("/health", get(health))
        .merge(api)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(state.options.max_body_bytes))
        .with_state(state)
}

fn dialect(path: &str) -> Dialect {
    if path.starts_with("/api/") {
        Dialect::Ollama
    } else {
        Dialect::OpenAi
    }
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_string();
    ApiError::new(StatusCode::NOT_FOUND, format!("no route for {} {path}", req.method())).dialect(dialect(&path)).into_response()
}

/// The API key check: `Authorization: Bearer KEY` or `x-api-key: KEY`, compared in constant time.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.options.api_key {
        let h = req.headers();
        let given = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .or_else(|| h.get("x-api-key").and_then(|v| v.to_str().ok()))
            .unwrap_or("");
        if !constant_time_eq(given.trim().as_bytes(), key.as_bytes()) {
            let d = dialect(req.uri().path());
            return ApiError::new(StatusCode::UNAUTHORIZED, "a valid API key is required (Authorization: Bearer KEY)")
                .code("invalid_api_key")
                .dialect(d)
                .into_response();
        }
    }
    next.run(req).await
}

/// Per request: refuse new work while draining, count it, log one line unless the
/// generation logs its own, and turn errors into the called API's error shape.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let t = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let d = dialect(&path);
    let endpoint = endpoint_label(&path);
    if state.draining.load(Ordering::SeqCst) && path != "/health" && path != "/metrics" {
        state.metrics.request(endpoint, 503);
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down").retry_after(5).dialect(d).into_response();
    }
    let mut r = next.run(req).await;
    // Errors were rendered in OpenAI's shape; Ollama's clients read {"error": "..."}.
    if d == Dialect::Ollama && (r.status().is_client_error() || r.status().is_server_error()) {
        r = ollama::reshape_error(r).await;
    }
    let status = r.status().as_u16();
    state.metrics.request(endpoint, status);
    if r.extensions().get::<GenerationLogged>().is_none() {
        let line = serde_json::json!({
            "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "method": method, "path": path, "status": status,
            "duration_ms": (t.elapsed().as_secs_f64() * 1000.0).round(),
        });
        eprintln!("{line}");
    }
    r
}

/// A bounded set of metric labels: known routes, else "other".
fn endpoint_label(path: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "/",
        "/health",
        "/metrics",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/api/chat",
        "/api/generate",
        "/api/tags",
        "/api/show",
        "/api/ps",
        "/api/version",
    ];
    KNOWN.iter().find(|k| **k == path).copied().unwrap_or("other")
}

async fn health(State(state): State<AppState>) -> Response {
    let draining = state.draining.load(Ordering::SeqCst);
    let body = serde_json::json!({
        "status": if draining { "draining" } else { "ok" },
        "models": state.registry.entries.len(),
        "models_loaded": state.registry.loaded().len(),
        "in_flight": state.metrics.in_flight.load(Ordering::Relaxed),
        "uptime_s": state.started.elapsed().as_secs(),
    });
    let status = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let loaded = state.registry.loaded();
    let mut text = state.metrics.render(loaded.len());
    // Per replica of each loaded model: work in flight now and work given since its load.
    let mut replicas = Vec::new();
    for e in &loaded {
        if let Some(engine) = e.engine_if_loaded().await {
            replicas.push((e.name.clone(), engine.replica_stats()));
        }
    }
    metrics::render_replicas(&replicas, &mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Runs the server until SIGTERM or Ctrl-C, then stops accepting, lets running
/// requests finish (up to `drain_timeout`) and closes the models.
pub fn serve(options: ServeOptions) -> crate::Result<()> {
    let registry = registry::Registry::new(
        options.model.as_deref(),
        options.models_dir.as_deref(),
        options.engine.clone(),
        options.keep_alive,
        options.max_loaded_models,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gomlx-http")
        .build()
        .map_err(|e| crate::Error::Engine(format!("cannot start the HTTP runtime: {e}")))?;
    let state = Arc::new(ServerState { options, registry, metrics: Default::default(), draining: AtomicBool::new(false), started: Instant::now() });
    let r = rt.block_on(run_server(state));
    // Requests have drained; a blocking reader of stdin (--stop-on-stdin-eof) never ends by itself.
    rt.shutdown_background();
    r
}

async fn run_server(state: AppState) -> crate::Result<()> {
    let addr = format!("{}:{}", state.options.host, state.options.port);
    if state.options.preload {
        for e in &state.registry.entries {
            state.registry.lease(e).await.map_err(|e| crate::Error::Engine(e.message))?;
        }
    }
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| crate::Error::io(PathBuf::from(&addr), e))?;
    let local = listener.local_addr().map_err(|e| crate::Error::io(PathBuf::from(&addr), e))?;
    let names: Vec<&str> = state.registry.entries.iter().map(|e| e.name.as_str()).collect();
    eprintln!("{}", serde_json::json!({"event": "listening", "address": format!("http://{local}"), "models": names}));
    // Idle models are unloaded once their keep-alive has passed.
    let expirer = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut served = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                state.registry.expire().await;
                // Idle after a burst: hand the freed KV memory back to the OS.
                let now = state.metrics.generated_tokens.load(Ordering::Relaxed);
                if now != served && state.metrics.in_flight.load(Ordering::SeqCst) == 0 {
                    served = now;
                    trim_heap();
                }
            }
        })
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal_state = state.clone();
    let stdin_eof = state.options.stop_on_stdin_eof;
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = stdin_closed(), if stdin_eof => {}
        }
        signal_state.draining.store(true, Ordering::SeqCst);
        eprintln!("{}", serde_json::json!({"event": "draining", "in_flight": signal_state.metrics.in_flight.load(Ordering::SeqCst)}));
        let _ = stop_tx.send(true);
    });
    let mut rx = stop_rx.clone();
    let server = axum::serve(listener, router(state.clone())).with_graceful_shutdown(async move {
        let _ = rx.wait_for(|s| *s).await;
    });
    let mut rx2 = stop_rx;
    let drain = state.options.drain_timeout;
    tokio::select! {
        r = server => r.map_err(|e| crate::Error::Engine(format!("the HTTP server failed: {e}")))?,
        _ = async move {
            let _ = rx2.wait_for(|s| *s).await;
            tokio::time::sleep(drain).await;
        } => {
            eprintln!("{}", serde_json::json!({"event": "drain_timeout", "in_flight": state.metrics.in_flight.load(Ordering::SeqCst)}));
        }
    }
    expirer.abort();
    state.registry.unload_all().await;
    eprintln!("{}", serde_json::json!({"event": "stopped"}));
    Ok(())
}

/// Returns free heap pages to the OS (glibc keeps freed KV buffers of a burst in
/// the process otherwise); a no-op elsewhere.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only releases free memory of glibc's heap; it takes no pointers.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Completes when standard input reaches its end (or fails).
async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while std::io::Read::read(&mut stdin, &mut sink).is_ok_and(|n| n > 0) {}
    })
    .await;
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
