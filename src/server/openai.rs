//! The OpenAI API: `POST /v1/chat/completions`, `POST /v1/completions` (server-sent
//! events when `stream` is true, with `stream_options.include_usage`), `GET /v1/models`.

use super::errors::{ApiError, ApiResult};
use super::params::{object, type_name, Fields};
use super::run::{self, Choice, Format, Job, Piece, Sampling, TokenInfo};
use super::structured::{self, openai_call, Calls};
use super::{chat_prompt, chat_template, AppState, GENERATION_LOGGED};
use crate::engine::Engine;
use crate::sample::SamplerConfig;
use crate::text::{ChatMessage, ToolChoice, ToolFormat};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// The most choices one request may ask for.
pub const MAX_N: i64 = 16;
/// The most stop strings one request may give.
pub const MAX_STOP: usize = 16;

/// The body, or the 413/400 its extraction failed with.
pub fn body(b: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    b.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "body: the request body is larger than the server's limit (--max-body-bytes)").code("body_too_large")
        } else {
            ApiError::new(status, format!("body: {e}"))
        }
    })
}

/// The sampling fields common to both endpoints.
fn sampling(f: &Fields, cap: usize, chat: bool) -> ApiResult<Sampling> {
    let mut s = SamplerConfig { temperature: 1.0, ..Default::default() };
    if let Some(t) = f.number("temperature", 0.0, 2.0)? {
        s.temperature = t as f32;
    }
    if let Some(p) = f.number("top_p", 0.0, 1.0)? {
        if p <= 0.0 {
            return Err(ApiError::field("top_p", format!("must be greater than 0 and at most 1 (got {p})")));
        }
        s.top_p = p as f32;
    }
    if let Some(k) = f.integer("top_k", 0, i32::MAX as i64)? {
        s.top_k = k as usize;
    }
    if let Some(m) = f.number("min_p", 0.0, 1.0)? {
        s.min_p = m as f32;
    }
    if let Some(r) = f.number("repetition_penalty", 1e-6, 100.0)? {
        s.repetition_penalty = r as f32;
    }
    if let Some(p) = f.number("presence_penalty", -2.0, 2.0)? {
        s.presence_penalty = p as f32;
    }
    if let Some(p) = f.number("frequency_penalty", -2.0, 2.0)? {
        s.frequency_penalty = p as f32;
    }
    if let Some(seed) = f.integer("seed", i64::MIN, i64::MAX)? {
        s.seed = Some(seed as u64);
    }
    if let Some(bias) = f.object("logit_bias")? {
        for (k, v) in bias {
            let name = format!("logit_bias.{k}");
            let id: u32 = k.trim().parse().map_err(|_| ApiError::field(&name, "keys must be token ids"))?;
            let b = v.as_f64().ok_or_else(|| ApiError::field(&name, format!("expected a number, got {}", type_name(v))))?;
            if !(-100.0..=100.0).contains(&b) {
                return Err(ApiError::field(&name, format!("must be between -100 and 100 (got {b})")));
            }
            s.logit_bias.push((id, b as f32));
        }
    }
    if chat {
        s.logprobs = f.bool("logprobs")?.unwrap_or(false);
        if let Some(k) = f.integer("top_logprobs", 0, 20)? {
            if k > 0 && !s.logprobs {
                return Err(ApiError::field("top_logprobs", "requires logprobs: true"));
            }
            s.top_logprobs = k as usize;
        }
    } else if let Some(k) = f.integer("logprobs", 0, 5)? {
        s.logprobs = true;
        s.top_logprobs = k as usize;
    }
    let cap_i = cap as i64;
    let mut max_tokens = f.integer("max_tokens", 1, cap_i)?;
    if let Some(m) = f.integer("max_completion_tokens", 1, cap_i)? {
        max_tokens = Some(m);
    }
    let n = f.integer("n", 1, MAX_N)?.unwrap_or(1) as usize;
    Ok(Sampling { sampler: s, max_tokens: max_tokens.map(|m| m as usize), stop: f.stop("stop", MAX_STOP)?, n })
}

/// `stream` and `stream_options.include_usage`.
fn streaming(f: &Fields) -> ApiResult<(bool, bool)> {
    let stream = f.bool("stream")?.unwrap_or(false);
    let usage = match f.object("stream_options")? {
        Some(o) => Fields { obj: o, prefix: "stream_options." }.bool("include_usage")?.unwrap_or(false),
        None => false,
    };
    Ok((stream, usage))
}

/// A message's text: a string, or the text parts of an array of content parts.
fn content_text(v: Option<&Value>, name: &str, may_be_null: bool) -> ApiResult<String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) if may_be_null => Ok(String::new()),
        None | Some(Value::Null) => Err(ApiError::field(name, "is required")),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, p) in parts.iter().enumerate() {
                let pn = format!("{name}[{i}]");
                let o = p.as_object().ok_or_else(|| ApiError::field(&pn, format!("expected an object, got {}", type_name(p))))?;
                match o.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        text.push_str(o.get("text").and_then(Value::as_str).ok_or_else(|| ApiError::field(&format!("{pn}.text"), "expected a string"))?)
                    }
                    Some(other) => return Err(ApiError::field(&format!("{pn}.type"), format!("'{other}' parts are not supported (text only)"))),
                    None => return Err(ApiError::field(&format!("{pn}.type"), "is required")),
                }
            }
            Ok(text)
        }
        Some(other) => Err(ApiError::field(name, format!("expected a string or an array of content parts, got {}", type_name(other)))),
    }
}

/// `messages` → chat messages, every fault named by its index.
pub fn messages(v: Option<&Value>) -> ApiResult<Vec<ChatMessage>> {
    let list = match v {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(ApiError::field("messages", "is required")),
        Some(other) => return Err(ApiError::field("messages", format!("expected an array, got {}", type_name(other)))),
    };
    if list.is_empty() {
        return Err(ApiError::field("messages", "must hold at least one message"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let name = format!("messages[{i}]");
        let o = m.as_object().ok_or_else(|| ApiError::field(&name, format!("expected an object, got {}", type_name(m))))?;
        let role = match o.get("role") {
            Some(Value::String(r)) => r.as_str(),
            Some(other) => return Err(ApiError::field(&format!("{name}.role"), format!("expected a string, got {}", type_name(other)))),
            None => return Err(ApiError::field(&format!("{name}.role"), "is required")),
        };
        let role = match role {
            "system" | "user" | "assistant" | "tool" => role,
            "developer" => "system",
            other => return Err(ApiError::field(&format!("{name}.role"), format!("'{other}' is not one of system, developer, user, assistant, tool"))),
        };
        let calls = match o.get("tool_calls").filter(|c| !c.is_null()) {
            Some(c) if role == "assistant" => Some(structured::message_tool_calls(c, &format!("{name}.tool_calls"))?),
            Some(_) => return Err(ApiError::field(&format!("{name}.tool_calls"), "only assistant messages carry tool calls")),
            None => None,
        };
        let content = content_text(o.get("content"), &format!("{name}.content"), role == "assistant")?;
        let mut msg = ChatMessage::new(role, content);
        if let Some(c) = calls {
            msg = msg.with("tool_calls", c);
        }
        // A tool result names the call it answers (OpenAI) or the tool (Ollama); templates read either.
        for key in ["tool_call_id", "name", "tool_name"] {
            match o.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => msg = msg.with(key, s.as_str()),
                Some(other) => return Err(ApiError::field(&format!("{name}.{key}"), format!("expected a string, got {}", type_name(other)))),
            }
        }
        out.push(msg);
    }
    Ok(out)
}

fn model_field(f: &Fields) -> ApiResult<Option<String>> {
    Ok(f.string("model")?.map(str::to_string))
}

fn usage(job: &Job) -> Value {
    let c = job.generated();
    json!({"prompt_tokens": job.prompt_tokens, "completion_tokens": c, "total_tokens": job.prompt_tokens + c})
}

fn token_text(engine: &Engine, id: u32) -> String {
    engine.tokenizer().and_then(|t| t.decode(&[id], false).ok()).unwrap_or_default()
}

fn chat_logprob(engine: &Engine, t: &TokenInfo) -> Value {
    let entry = |id: u32, lp: f32| {
        let s = token_text(engine, id);
        json!({"token": s, "logprob": lp, "bytes": s.as_bytes()})
    };
    let mut e = entry(t.id, t.logprob);
    e["top_logprobs"] = Value::Array(t.top.iter().map(|&(id, lp)| entry(id, lp)).collect());
    e
}

fn completion_logprobs(engine: &Engine, tokens: &[TokenInfo], offset0: usize) -> Value {
    let mut offset = offset0;
    let (mut toks, mut lps, mut tops, mut offs) = (vec![], vec![], vec![], vec![]);
    for t in tokens {
        let s = token_text(engine, t.id);
        offs.push(offset);
        offset += s.len();
        toks.push(s);
        lps.push(t.logprob);
        let top: Map<String, Value> = t.top.iter().map(|&(id, lp)| (token_text(engine, id), json!(lp))).collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs})
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// Server-sent events of a chat or text completion.
struct Sse {
    chat: bool,
    include_usage: bool,
    model: String,
    errored: bool,
    offsets: Vec<usize>,
    /// Per choice: its reply split into text and tool calls (chat only).
    calls: Vec<Calls>,
}

impl Sse {
    fn new(job: &Job, chat: bool, include_usage: bool, model: String, n: usize, format: Option<ToolFormat>) -> Sse {
        let calls = (0..n).map(|i| Calls::new(format, &job.id, i)).collect();
        Sse { chat, include_usage, model, errored: false, offsets: vec![0; n], calls }
    }

    /// The content and tool-call deltas of a piece of choice `index`'s reply.
    fn chat_deltas(&mut self, job: &Job, index: usize, text: &str, token: Option<&TokenInfo>, end: bool) -> String {
        let (text, calls) = if end { self.calls[index].finish() } else { self.calls[index].push(text) };
        let mut out = String::new();
        if !text.is_empty() || token.is_some() {
            let lp = token.map(|t| json!({"content": [chat_logprob(&job.lease.engine, t)]})).unwrap_or(Value::Null);
            out.push_str(&sse(&self.chunk(job, json!([{"index": index, "delta": {"content": text}, "logprobs": lp, "finish_reason": null}]))));
        }
        if !calls.is_empty() {
            // Each call whole in one delta (its id, name and all its arguments), as clients accumulate them by index.
            let first = self.calls[index].count - calls.len();
            let deltas: Vec<Value> = calls.iter().enumerate().map(|(k, c)| openai_call(c, Some(first + k))).collect();
            out.push_str(&sse(&self.chunk(job, json!([{"index": index, "delta": {"tool_calls": deltas}, "logprobs": null, "finish_reason": null}]))));
        }
        out
    }

    fn chunk(&self, job: &Job, choices: Value) -> Value {
        let object = if self.chat { "chat.completion.chunk" } else { "text_completion" };
        let mut c = json!({"id": job.id, "object": object, "created": job.created, "model": self.model, "system_fingerprint": super::fingerprint(), "choices": choices});
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }
}

impl Format for Sse {
    fn head(&mut self, job: &Job) -> String {
        if !self.chat {
            return String::new();
        }
        let choices: Vec<Value> = (0..self.offsets.len())
            .map(|i| json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}))
            .collect();
        sse(&self.chunk(job, Value::Array(choices)))
    }

    fn piece(&mut self, job: &Job, p: Piece) -> String {
        let engine = &job.lease.engine;
        match p {
            Piece::Text { index, text, token, .. } => {
                if self.chat {
                    return self.chat_deltas(job, index, &text, token.as_ref(), false);
                }
                if text.is_empty() && token.is_none() {
                    return String::new();
                }
                let choice = {
                    let lp = match &token {
                        Some(t) => completion_logprobs(engine, std::slice::from_ref(t), self.offsets[index]),
                        None => Value::Null,
                    };
                    self.offsets[index] += text.len();
                    json!({"index": index, "text": text, "logprobs": lp, "finish_reason": null})
                };
                sse(&self.chunk(job, json!([choice])))
            }
            Piece::Done { index, reason, .. } => {
                if self.chat {
                    let mut out = self.chat_deltas(job, index, "", None, true);
                    let reason = if self.calls[index].count > 0 { "tool_calls" } else { run::finish_name(reason) };
                    out.push_str(&sse(&self.chunk(job, json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": reason}]))));
                    return out;
                }
                sse(&self.chunk(job, json!([{"index": index, "text": "", "logprobs": null, "finish_reason": run::finish_name(reason)}])))
            }
            Piece::Error { message, .. } => {
                if std::mem::replace(&mut self.errored, true) {
                    return String::new();
                }
                sse(&ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message).body())
            }
        }
    }

    fn end(&mut self, job: &Job) -> String {
        let mut out = String::new();
        if self.include_usage && !self.errored {
            let mut c = self.chunk(job, json!([]));
            c["usage"] = usage(job);
            out.push_str(&sse(&c));
        }
        out.push_str("data: [DONE]\n\n");
        out
    }
}

fn sse_response(job: Job, fmt: Sse) -> Response {
    let mut r =
        ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], axum::body::Body::new(run::stream_body(job, fmt))).into_response();
    r.extensions_mut().insert(GENERATION_LOGGED);
    r
}

fn json_response(v: Value) -> Response {
    let mut r = axum::Json(v).into_response();
    r.extensions_mut().insert(GENERATION_LOGGED);
    r
}

/// The non-streaming response: every choice (a chat message with its tool calls
/// parsed out, or a completion's text), usage and the envelope both endpoints share.
fn full_response(job: &Job, model: &str, chat: bool, choices: &[Choice], logprobs: bool, calls: Option<ToolFormat>) -> Response {
    let engine = &job.lease.engine;
    let list: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut reason = c.reason.map(run::finish_name);
            if !chat {
                let lp = if logprobs { completion_logprobs(engine, &c.tokens, 0) } else { Value::Null };
                return json!({"index": i, "text": c.text, "logprobs": lp, "finish_reason": reason});
            }
            let (text, found) = Calls::new(calls, &job.id, i).whole(&c.text);
            let mut message = json!({"role": "assistant", "content": text});
            if !found.is_empty() {
                if text.trim().is_empty() {
                    message["content"] = Value::Null;
                }
                message["tool_calls"] = found.iter().map(|c| openai_call(c, None)).collect();
                reason = Some("tool_calls");
            }
            let lp = if logprobs { json!({"content": c.tokens.iter().map(|t| chat_logprob(engine, t)).collect::<Vec<_>>()}) } else { Value::Null };
            json!({"index": i, "message": message, "logprobs": lp, "finish_reason": reason})
        })
        .collect();
    json_response(json!({
        "id": job.id, "object": if chat { "chat.completion" } else { "text_completion" }, "created": job.created, "model": model,
        "system_fingerprint": super::fingerprint(), "choices": list, "usage": usage(job),
    }))
}

pub async fn chat_completions(State(state): State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let b = body(b)?;
    let obj = object(&b)?;
    let f = Fields::new(&obj);
    let model = model_field(&f)?;
    let msgs = messages(f.get("messages"))?;
    let mut s = sampling(&f, state.options.max_tokens_cap, true)?;
    let (stream, include_usage) = streaming(&f)?;
    let wanted = structured::response_format(&f)?;
    let tools = structured::tools(&f)?;
    let choice = structured::tool_choice(&f, &tools)?;
    // Accepted; a forced call is one call, an unforced reply may hold several.
    f.bool("parallel_tool_calls")?;
    let entry = state.registry.resolve(model.as_deref())?.clone();
    let lease = state.registry.lease(&entry).await?;
    let template = chat_template(&state, &lease.engine, !tools.is_empty() && choice != ToolChoice::None);
    let plan = structured::plan(&lease.engine, template.as_ref().map(|t| t.source()), tools, choice, wanted)?;
    let prompt = chat_prompt(&lease.engine, template, &msgs, plan.template_tools.clone())?;
    s.sampler.constraint = plan.constraint;
    let mut job = run::start(&state, lease, prompt, &s, "/v1/chat/completions", "chatcmpl", "messages")?;
    if stream {
        let fmt = Sse::new(&job, true, include_usage, entry.name.clone(), s.n, plan.calls);
        return Ok(sse_response(job, fmt));
    }
    let choices = job.collect().await?;
    Ok(full_response(&job, &entry.name, true, &choices, s.sampler.logprobs, plan.calls))
}

/// `prompt`: a string, an array of one string, or an array of token ids.
fn completion_prompt(engine: &Engine, v: Option<&Value>) -> ApiResult<Vec<u32>> {
    let text = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or_default().to_string(),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_u64) => {
            return a
                .iter()
                .map(|x| {
                    x.as_u64().filter(|&id| id < u32::MAX as u64).map(|id| id as u32).ok_or_else(|| ApiError::field("prompt", "token ids must be below 2^32"))
                })
                .collect();
        }
        Some(Value::Array(_)) => return Err(ApiError::field("prompt", "expected a string, an array of one string, or an array of token ids")),
        None | Some(Value::Null) => return Err(ApiError::field("prompt", "is required")),
        Some(other) => return Err(ApiError::field("prompt", format!("expected a string, got {}", type_name(other)))),
    };
    if text.is_empty() {
        return Err(ApiError::field("prompt", "is empty"));
    }
    let tok = engine.tokenizer().ok_or_else(|| ApiError::field("prompt", "this model has no tokenizer: give token ids"))?;
    tok.encode(&text, true).map_err(|e| ApiError::field("prompt", e.to_string()))
}

pub async fn completions(State(state): State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let b = body(b)?;
    let obj = object(&b)?;
    let f = Fields::new(&obj);
    let model = model_field(&f)?;
    let mut s = sampling(&f, state.options.max_tokens_cap, false)?;
    let (stream, include_usage) = streaming(&f)?;
    if f.bool("echo")?.unwrap_or(false) {
        return Err(ApiError::field("echo", "is not supported"));
    }
    if f.get("prompt").is_none() {
        return Err(ApiError::field("prompt", "is required"));
    }
    let wanted = structured::response_format(&f)?;
    let entry = state.registry.resolve(model.as_deref())?.clone();
    let lease = state.registry.lease(&entry).await?;
    let prompt = completion_prompt(&lease.engine, f.get("prompt"))?;
    s.sampler.constraint = structured::plan(&lease.engine, None, Vec::new(), ToolChoice::Auto, wanted)?.constraint;
    let mut job = run::start(&state, lease, prompt, &s, "/v1/completions", "cmpl", "prompt")?;
    if stream {
        let fmt = Sse::new(&job, false, include_usage, entry.name.clone(), s.n, None);
        return Ok(sse_response(job, fmt));
    }
    let choices = job.collect().await?;
    Ok(full_response(&job, &entry.name, false, &choices, s.sampler.logprobs, None))
}

pub async fn models(State(state): State<AppState>) -> Response {
    let data: Vec<Value> = state
        .registry
        .entries
        .iter()
        .map(|e| {
            let created = e.modified.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            json!({"id": e.name, "object": "model", "created": created, "owned_by": "gomlx", "format": e.format, "architecture": e.architecture, "loaded": e.is_loaded()})
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}
