//! Ollama's API, in the shapes its own clients (`github.com/ollama/ollama/api`)
//! read: `/api/chat` and `/api/generate` (NDJSON streams by default),
//! `/api/tags`, `/api/show`, `/api/ps`, `/api/version`.

use super::errors::{ApiError, ApiResult};
use super::openai::{body, messages};
use super::params::{object, Fields};
use super::registry::Entry;
use super::run::{self, Format, Job, Piece, Sampling};
use super::structured::{self, ollama_call, Calls, Wanted};
use super::{chat_prompt, chat_template, AppState, GENERATION_LOGGED};
use crate::sample::SamplerConfig;
use crate::text::{ChatMessage, ToolCall, ToolChoice, ToolFormat};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// The Ollama API version this server answers as (`/api/version`).
pub const OLLAMA_VERSION: &str = "0.5.0";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn ns(seconds: f64) -> u64 {
    (seconds * 1e9) as u64
}

/// Re-renders an error response in Ollama's shape, `{"error": "..."}`.
pub async fn reshape_error(r: Response) -> Response {
    let (parts, b) = r.into_parts();
    let bytes = axum::body::to_bytes(b, 1 << 20).await.unwrap_or_default();
    let msg = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let mut out = (parts.status, axum::Json(json!({"error": msg}))).into_response();
    for (k, v) in parts.headers.iter() {
        if k == header::RETRY_AFTER {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out.extensions_mut().extend(parts.extensions);
    out
}

/// `options` → sampling (Ollama's names; its defaults where they differ from gomlx's).
fn options(obj: Option<&serde_json::Map<String, Value>>, cap: usize) -> ApiResult<Sampling> {
    let mut s = SamplerConfig { temperature: 0.8, ..Default::default() };
    let mut max_tokens = None;
    let mut stop = Vec::new();
    if let Some(o) = obj {
        let f = Fields { obj: o, prefix: "options." };
        if let Some(t) = f.number("temperature", 0.0, 100.0)? {
            s.temperature = t as f32;
        }
        if let Some(p) = f.number("top_p", 0.0, 1.0)? {
            // Ollama treats top_p 0 as off.
            s.top_p = if p <= 0.0 { 1.0 } else { p as f32 };
        }
        if let Some(k) = f.integer("top_k", 0, i32::MAX as i64)? {
            s.top_k = k as usize;
        }
        if let Some(m) = f.number("min_p", 0.0, 1.0)? {
            s.min_p = m as f32;
        }
        if let Some(r) = f.number("repeat_penalty", 0.0, 100.0)? {
            s.repetition_penalty = if r <= 0.0 { 1.0 } else { r as f32 };
        }
        if let Some(n) = f.integer("repeat_last_n", -1, i32::MAX as i64)? {
            if n > 0 {
                s.repetition_context_size = n as usize;
            }
        }
        if let Some(p) = f.number("presence_penalty", -100.0, 100.0)? {
            s.presence_penalty = p as f32;
        }
        if let Some(p) = f.number("frequency_penalty", -100.0, 100.0)? {
            s.frequency_penalty = p as f32;
        }
        if let Some(seed) = f.integer("seed", i64::MIN, i64::MAX)? {
            s.seed = Some(seed as u64);
        }
        // -1 (for ever) and -2 (fill the context) are bounded by the server's cap.
        if let Some(n) = f.integer("num_predict", -2, i64::MAX)? {
            if n == 0 {
                return Err(ApiError::field("options.num_predict", "must not be 0 (-1 for no limit)"));
            }
            max_tokens = Some(if n < 0 { cap } else { (n as usize).min(cap) });
        }
        stop = f.stop("stop", super::openai::MAX_STOP)?;
    }
    Ok(Sampling { sampler: s, max_tokens, stop, n: 1 })
}

struct Common<'a> {
    model: &'a str,
    stream: bool,
    sampling: Sampling,
    started: Instant,
    format: Option<Wanted>,
    /// The format replies write tool calls in (chat with tools).
    calls: Option<ToolFormat>,
}

fn common<'a>(f: &Fields<'a>, cap: usize) -> ApiResult<Common<'a>> {
    let model = f.string("model")?.ok_or_else(|| ApiError::field("model", "is required"))?;
    let stream = f.bool("stream")?.unwrap_or(true);
    let format = structured::ollama_format(f)?;
    let sampling = options(f.object("options")?, cap)?;
    Ok(Common { model, stream, sampling, started: Instant::now(), format, calls: None })
}

/// The NDJSON stream of `/api/chat` (chat) or `/api/generate`.
struct Ndjson {
    chat: bool,
    model: String,
    reason: &'static str,
    error: Option<String>,
    started: Instant,
    load_s: f64,
    metrics: crate::engine::Metrics,
    calls: Calls,
}

impl Ndjson {
    /// A line; the last (`done`) carries the counts: tokens handed out, as OpenAI's usage counts them.
    fn line(&self, text: &str, done: bool, job: &Job) -> Value {
        let mut v = if self.chat {
            json!({"model": self.model, "created_at": now(), "message": {"role": "assistant", "content": text}, "done": done})
        } else {
            json!({"model": self.model, "created_at": now(), "response": text, "done": done})
        };
        if done {
            let m = &self.metrics;
            v["done_reason"] = json!(self.reason);
            v["total_duration"] = json!(ns(self.started.elapsed().as_secs_f64()));
            v["load_duration"] = json!(ns(self.load_s));
            v["prompt_eval_count"] = json!(job.prompt_tokens);
            v["prompt_eval_duration"] = json!(ns(m.prefill_s));
            v["eval_count"] = json!(job.generated());
            v["eval_duration"] = json!(ns(m.decode_s));
        }
        v
    }

    /// A chat line holding tool calls, numbered from `first`.
    fn calls_line(&self, calls: &[ToolCall], first: usize, job: &Job) -> Value {
        let mut v = self.line("", false, job);
        v["message"]["tool_calls"] = calls.iter().enumerate().map(|(k, c)| ollama_call(c, first + k)).collect();
        v
    }

    /// The lines of a piece of the reply: its text, then the calls it completed.
    fn lines(&mut self, text: &str, end: bool, job: &Job) -> String {
        let (text, calls) = if end { self.calls.finish() } else { self.calls.push(text) };
        let mut out = String::new();
        if !text.is_empty() {
            out.push_str(&format!("{}\n", self.line(&text, false, job)));
        }
        if !calls.is_empty() {
            out.push_str(&format!("{}\n", self.calls_line(&calls, self.calls.count - calls.len(), job)));
        }
        out
    }

    fn final_value(&self, job: &Job) -> Value {
        match &self.error {
            Some(e) => json!({"error": e}),
            None => self.line("", true, job),
        }
    }
}

impl Format for Ndjson {
    fn piece(&mut self, job: &Job, p: Piece) -> String {
        match p {
            Piece::Text { text, .. } => self.lines(&text, false, job),
            Piece::Done { reason, metrics, .. } => {
                self.reason = run::finish_name(reason);
                self.metrics = metrics;
                String::new()
            }
            Piece::Error { message, .. } => {
                self.error = Some(message);
                String::new()
            }
        }
    }

    fn end(&mut self, job: &Job) -> String {
        let rest = if self.error.is_none() { self.lines("", true, job) } else { String::new() };
        format!("{rest}{}\n", self.final_value(job))
    }
}

async fn respond(state: &AppState, c: Common<'_>, entry: Arc<Entry>, prompt: Vec<u32>, chat: bool, param: &str) -> ApiResult<Response> {
    let lease = state.registry.lease(&entry).await?;
    let load_s = lease.load_s;
    let prompt = match prompt.is_empty() {
        true => return Err(ApiError::field(param, "is empty")),
        false => prompt,
    };
    let endpoint = if chat { "/api/chat" } else { "/api/generate" };
    let mut job = run::start(state, lease, prompt, &c.sampling, endpoint, "ollama", param)?;
    let calls = Calls::new(c.calls, &job.id, 0);
    let mut fmt = Ndjson { chat, model: entry.name.clone(), reason: "stop", error: None, started: c.started, load_s, metrics: Default::default(), calls };
    let mut r = if c.stream {
        ([(header::CONTENT_TYPE, "application/x-ndjson")], run::stream_body(job, fmt)).into_response()
    } else {
        let mut text = String::new();
        while let Some(p) = job.next().await {
            if let Piece::Text { text: t, .. } = &p {
                text.push_str(t);
            }
            fmt.piece(&job, p);
        }
        if let Some(e) = fmt.error {
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e));
        }
        let (text, calls) = fmt.calls.whole(&text);
        let mut v = fmt.line(&text, true, &job);
        if chat && !calls.is_empty() {
            v["message"]["tool_calls"] = calls.iter().enumerate().map(|(k, c)| ollama_call(c, k)).collect();
        }
        v["created_at"] = json!(now());
        axum::Json(v).into_response()
    };
    r.extensions_mut().insert(GENERATION_LOGGED);
    Ok(r)
}

pub async fn chat(State(state): State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let b = body(b)?;
    let obj = object(&b)?;
    let f = Fields::new(&obj);
    let c = common(&f, state.options.max_tokens_cap)?;
    let entry = state.registry.resolve(Some(c.model))?.clone();
    // An empty message list only loads the model (as Ollama does).
    if f.array("messages")?.is_none_or(|m| m.is_empty()) {
        let lease = state.registry.lease(&entry).await?;
        let mut r = axum::Json(json!({"model": entry.name, "created_at": now(), "message": {"role": "assistant", "content": ""}, "done_reason": "load", "done": true, "load_duration": ns(lease.load_s)})).into_response();
        r.extensions_mut().insert(GENERATION_LOGGED);
        return Ok(r);
    }
    let msgs = messages(f.get("messages"))?;
    let tools = structured::tools(&f)?;
    // Ollama has no tool_choice (the model decides); gomlx reads one from `options`
    // (OpenAI's values), which Ollama's clients can send unchanged.
    let choice = match f.object("options")? {
        Some(o) => structured::tool_choice(&Fields { obj: o, prefix: "options." }, &tools)?,
        None => ToolChoice::Auto,
    };
    let lease = state.registry.lease(&entry).await?;
    let template = chat_template(&state, &lease.engine, !tools.is_empty() && choice != ToolChoice::None);
    let mut c = c;
    let plan = structured::plan(&lease.engine, template.as_ref().map(|t| t.source()), tools, choice, c.format.take())?;
    let prompt = chat_prompt(&lease.engine, template, &msgs, plan.template_tools)?;
    drop(lease);
    c.sampling.sampler.constraint = plan.constraint;
    c.calls = plan.calls;
    respond(&state, c, entry, prompt, true, "messages").await
}

pub async fn generate(State(state): State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let b = body(b)?;
    let obj = object(&b)?;
    let f = Fields::new(&obj);
    let c = common(&f, state.options.max_tokens_cap)?;
    let entry = state.registry.resolve(Some(c.model))?.clone();
    let prompt_text = f.string("prompt")?.unwrap_or("");
    let system = f.string("system")?;
    let raw = f.bool("raw")?.unwrap_or(false);
    if f.get("context").is_some() {
        return Err(ApiError::field("context", "is not supported (send the conversation to /api/chat)"));
    }
    let lease = state.registry.lease(&entry).await?;
    if prompt_text.is_empty() {
        // An empty prompt only loads the model (as Ollama does).
        let mut r = axum::Json(
            json!({"model": entry.name, "created_at": now(), "response": "", "done_reason": "load", "done": true, "load_duration": ns(lease.load_s)}),
        )
        .into_response();
        r.extensions_mut().insert(GENERATION_LOGGED);
        return Ok(r);
    }
    let engine = lease.engine.clone();
    let mut c = c;
    c.sampling.sampler.constraint = structured::plan(&engine, None, Vec::new(), ToolChoice::Auto, c.format.take())?.constraint;
    let tok = engine.tokenizer().ok_or_else(|| ApiError::field("model", "this model has no tokenizer"))?;
    // Not raw: the prompt is a user turn in the model's template, as Ollama renders it.
    let template = chat_template(&state, &engine, false);
    let prompt = if raw || template.is_none() {
        tok.encode(prompt_text, true).map_err(|e| ApiError::field("prompt", e.to_string()))?
    } else {
        let mut msgs: Vec<ChatMessage> = system.map(ChatMessage::system).into_iter().collect();
        msgs.push(ChatMessage::user(prompt_text));
        chat_prompt(&engine, template, &msgs, None).map_err(|e| ApiError { param: Some("prompt".into()), ..e })?
    };
    drop(lease);
    respond(&state, c, entry, prompt, false, "prompt").await
}

fn parameter_size(params: Option<u64>, bytes: u64) -> String {
    let n = params.unwrap_or(bytes / 2) as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else {
        format!("{:.0}M", n / 1e6)
    }
}

fn details(e: &Entry, params: Option<u64>) -> Value {
    json!({
        "parent_model": "",
        "format": e.format,
        "family": e.architecture,
        "families": [e.architecture],
        "parameter_size": parameter_size(params, e.size_bytes),
        "quantization_level": e.quant.clone().unwrap_or_else(|| "F32".into()),
    })
}

/// A stable digest-like id: a hash of the path, size and modification time (not the file's sha256).
fn digest(e: &Entry) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e.path.hash(&mut h);
    e.size_bytes.hash(&mut h);
    e.modified.hash(&mut h);
    let a = h.finish();
    e.name.hash(&mut h);
    format!("{a:016x}{:016x}{a:016x}{:016x}", h.finish(), a.rotate_left(17))
}

fn modified_at(e: &Entry) -> String {
    chrono::DateTime::<chrono::Utc>::from(e.modified).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub async fn tags(State(state): State<AppState>) -> Response {
    let models: Vec<Value> = state
        .registry
        .entries
        .iter()
        .map(
            |e| json!({"name": e.name, "model": e.name, "modified_at": modified_at(e), "size": e.size_bytes, "digest": digest(e), "details": details(e, None)}),
        )
        .collect();
    axum::Json(json!({"models": models})).into_response()
}

pub async fn ps(State(state): State<AppState>) -> Response {
    let mut models = Vec::new();
    for e in state.registry.loaded() {
        let Some(engine) = e.engine_if_loaded().await else { continue };
        let expires = match state.registry.keep_alive {
            Some(k) if e.active() == 0 => chrono::Utc::now() + chrono::Duration::from_std(k.saturating_sub(e.idle_for())).unwrap_or_default(),
            // In use, or kept for ever: far ahead, as Ollama reports.
            _ => chrono::Utc::now() + chrono::Duration::days(365 * 100),
        };
        let on_gpu = engine.device() == crate::mlx::DeviceKind::Gpu;
        let size = engine.info().weight_bytes;
        models.push(json!({
            "name": e.name, "model": e.name, "size": size, "digest": digest(e),
            "details": details(e, Some(engine.info().parameters)),
            "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "size_vram": if on_gpu { size } else { 0 },
            "context_length": engine.context_length(),
        }));
    }
    axum::Json(json!({"models": models})).into_response()
}

pub async fn show(State(state): State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let b = body(b)?;
    let obj = object(&b)?;
    let f = Fields::new(&obj);
    // `name` is the field's old spelling, still sent by older clients.
    let name = match f.string("model")? {
        Some(m) if !m.is_empty() => m,
        _ => f.string("name")?.ok_or_else(|| ApiError::field("model", "is required"))?,
    };
    let entry = state.registry.resolve(Some(name))?.clone();
    let lease = state.registry.lease(&entry).await?;
    let info = lease.engine.info().clone();
    let template = chat_template(&state, &lease.engine, false).map(|t| t.source().to_string()).unwrap_or_default();
    let tools_template = chat_template(&state, &lease.engine, true);
    let mut capabilities = vec!["completion"];
    if tools_template.is_some_and(|t| ToolFormat::from_template(t.source()).is_some()) {
        capabilities.push("tools");
    }
    let arch = &info.architecture;
    let mut model_info = serde_json::Map::new();
    model_info.insert("general.architecture".into(), json!(arch));
    model_info.insert("general.parameter_count".into(), json!(info.parameters));
    model_info.insert(format!("{arch}.context_length"), json!(lease.engine.context_length()));
    model_info.insert(format!("{arch}.embedding_length"), json!(info.hidden_size));
    model_info.insert(format!("{arch}.block_count"), json!(info.num_layers));
    model_info.insert(format!("{arch}.attention.head_count"), json!(info.num_heads));
    model_info.insert(format!("{arch}.attention.head_count_kv"), json!(info.num_kv_heads));
    model_info.insert("general.vocab_size".into(), json!(info.vocab_size));
    Ok(axum::Json(json!({
        "modelfile": format!("FROM {}\n", entry.path.display()),
        "parameters": "",
        "template": template,
        "details": details(&entry, Some(info.parameters)),
        "model_info": model_info,
        "capabilities": capabilities,
        "modified_at": modified_at(&entry),
    }))
    .into_response())
}

pub async fn version() -> Response {
    axum::Json(json!({"version": OLLAMA_VERSION, "gomlx": env!("CARGO_PKG_VERSION")})).into_response()
}
