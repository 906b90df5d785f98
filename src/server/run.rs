//! Running generations for a request: admission against the queue bound, one
//! engine generation per choice, each drained on a blocking thread into an async
//! channel, and cancellation of every generation when the request goes away
//! (the client disconnected: its body stream, and so the `Job`, is dropped).

use super::errors::{ApiError, ApiResult};
use super::registry::Lease;
use super::ServerState as State;
use crate::engine::{FinishReason, GenerateOptions, Metrics};
use crate::sample::SamplerConfig;
use axum::http::StatusCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// A generated token for logprobs: its id, log-probability and the alternatives.
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// What a request's generations send back, tagged with the choice index.
#[derive(Debug)]
pub enum Piece {
    /// `is_token`: one generated token (false for text released at the end).
    Text {
        index: usize,
        text: String,
        token: Option<TokenInfo>,
        is_token: bool,
    },
    Done {
        index: usize,
        reason: FinishReason,
        metrics: Metrics,
    },
    Error {
        message: String,
    },
}

/// The sampling fields both APIs set, before the engine's types.
#[derive(Clone, Debug)]
pub struct Sampling {
    pub sampler: SamplerConfig,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub n: usize,
}

/// One request's running generations.
pub struct Job {
    rx: mpsc::UnboundedReceiver<Piece>,
    cancels: Vec<Arc<AtomicBool>>,
    open: usize,
    state: Arc<State>,
    pub lease: Lease,
    pub prompt_tokens: usize,
    pub created: u64,
    pub id: String,
    started: Instant,
    ttft_s: Option<f64>,
    generated: usize,
    finish: Option<&'static str>,
    endpoint: &'static str,
    n: usize,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A request id: the prefix, then the time and a counter in hex.
pub fn request_id(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{prefix}-{:x}{:04x}", unix_now(), N.fetch_add(1, Ordering::Relaxed) & 0xffff)
}

/// Starts `s.n` generations of `prompt`; a full queue is a 429 with Retry-After.
pub fn start(state: &Arc<State>, lease: Lease, prompt: Vec<u32>, s: &Sampling, endpoint: &'static str, id_prefix: &str, param: &str) -> ApiResult<Job> {
    let engine = lease.engine.clone();
    let ctx = engine.context_length();
    if prompt.is_empty() {
        return Err(ApiError::field(param, "the prompt is empty"));
    }
    if prompt.len() >= ctx {
        return Err(ApiError::field(param, format!("the prompt has {} tokens; the model's context length is {ctx}", prompt.len())));
    }
    let room = ctx - prompt.len();
    let max_tokens = s.max_tokens.unwrap_or(state.options.max_tokens_cap).min(room).max(1);
    s.sampler.validate_for_vocab(engine.info().vocab_size).map_err(ApiError::engine)?;
    let n = s.n;
    // Admission: the bound counts generations, so n choices take n places.
    let before = state.metrics.in_flight.fetch_add(n, Ordering::SeqCst);
    if before + n > state.options.max_queue {
        state.metrics.in_flight.fetch_sub(n, Ordering::SeqCst);
        state.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("the queue is full ({} generations running or waiting); retry later", state.options.max_queue),
        )
        .code("queue_full")
        .retry_after(1));
    }
    let started = Instant::now();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut job = Job {
        rx,
        cancels: Vec::new(),
        open: n,
        state: state.clone(),
        lease,
        prompt_tokens: prompt.len(),
        created: unix_now(),
        id: request_id(id_prefix),
        started,
        ttft_s: None,
        generated: 0,
        finish: None,
        endpoint,
        n,
    };
    for index in 0..n {
        let mut sampler = s.sampler.clone();
        // Choice i of a seeded request uses seed + i: distinct choices, reproducible.
        if let Some(seed) = sampler.seed {
            sampler.seed = Some(seed.wrapping_add(index as u64));
        }
        let opts = GenerateOptions { max_tokens, sampler, stop: s.stop.clone(), ..Default::default() };
        // On an error, dropping `job` releases the places taken above and cancels the started ones.
        let mut g = engine.generate_tokens(prompt.clone(), &opts).map_err(ApiError::engine)?;
        job.cancels.push(g.canceller());
        state.metrics.waiting.fetch_add(1, Ordering::SeqCst);
        let tx = tx.clone();
        let st = state.clone();
        tokio::task::spawn_blocking(move || {
            let mut last: Option<Instant> = None;
            let mut first = true;
            let mut first_event = || {
                if std::mem::take(&mut first) {
                    st.metrics.waiting.fetch_sub(1, Ordering::SeqCst);
                }
            };
            for t in g.by_ref() {
                first_event();
                match t {
                    Ok(t) => {
                        let now = Instant::now();
                        match last {
                            None => st.metrics.first_token(now.duration_since(started).as_secs_f64()),
                            Some(l) => st.metrics.inter_token(now.duration_since(l).as_secs_f64()),
                        }
                        last = Some(now);
                        st.metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
                        let token = t.logprob.map(|lp| TokenInfo { id: t.id, logprob: lp, top: t.top_logprobs.clone() });
                        if tx.send(Piece::Text { index, text: t.text, token, is_token: true }).is_err() {
                            // The request is gone: stop now rather than at the next token.
                            g.cancel();
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Piece::Error { message: e.to_string() });
                        return;
                    }
                }
            }
            first_event();
            if !g.tail().is_empty() {
                let _ = tx.send(Piece::Text { index, text: g.tail().to_string(), token: None, is_token: false });
            }
            let reason = g.finish_reason().unwrap_or(FinishReason::Cancelled);
            let metrics = g.metrics().cloned().unwrap_or_default();
            let _ = tx.send(Piece::Done { index, reason, metrics });
        });
    }
    state.metrics.prompt_tokens.fetch_add((job.prompt_tokens * n) as u64, Ordering::Relaxed);
    Ok(job)
}

/// One choice's whole output (non-streaming responses).
#[derive(Default, Debug)]
pub struct Choice {
    pub text: String,
    pub tokens: Vec<TokenInfo>,
    pub reason: Option<FinishReason>,
    pub metrics: Metrics,
}

impl Job {
    /// The next piece; None when every generation has ended.
    pub async fn next(&mut self) -> Option<Piece> {
        if self.open == 0 {
            return None;
        }
        let p = self.rx.recv().await;
        match &p {
            Some(Piece::Text { is_token, .. }) => {
                if self.ttft_s.is_none() {
                    self.ttft_s = Some(self.started.elapsed().as_secs_f64());
                }
                self.generated += *is_token as usize;
            }
            Some(Piece::Done { reason, .. }) => {
                self.open -= 1;
                self.finish = Some(finish_name(*reason));
            }
            Some(Piece::Error { .. }) => {
                self.open -= 1;
                self.finish = Some("error");
            }
            None => self.open = 0,
        }
        p
    }

    /// Drains every choice (non-streaming).
    pub async fn collect(&mut self) -> ApiResult<Vec<Choice>> {
        let mut out: Vec<Choice> = (0..self.n).map(|_| Choice::default()).collect();
        while let Some(p) = self.next().await {
            match p {
                Piece::Text { index, text, token, .. } => {
                    out[index].text.push_str(&text);
                    out[index].tokens.extend(token);
                }
                Piece::Done { index, reason, metrics } => {
                    out[index].reason = Some(reason);
                    out[index].metrics = metrics;
                }
                Piece::Error { message, .. } => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)),
            }
        }
        Ok(out)
    }

    /// Tokens generated so far over every choice.
    pub fn generated(&self) -> usize {
        self.generated
    }
}

/// OpenAI's finish reason for the engine's.
pub fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let cancelled = self.open > 0;
        if cancelled {
            for c in &self.cancels {
                c.store(true, Ordering::SeqCst);
            }
            self.state.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        self.state.metrics.in_flight.fetch_sub(self.n, Ordering::SeqCst);
        let line = serde_json::json!({
            "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "id": self.id,
            "endpoint": self.endpoint,
            "model": self.lease.entry().name,
            "n": self.n,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.generated,
            "ttft_ms": self.ttft_s.map(|s| (s * 1000.0).round()),
            "duration_ms": (self.started.elapsed().as_secs_f64() * 1000.0).round(),
            "load_ms": (self.lease.load_s * 1000.0).round(),
            "finish": if cancelled { "client_gone" } else { self.finish.unwrap_or("none") },
        });
        eprintln!("{line}");
    }
}

/// How a streaming response writes a job's pieces (SSE for OpenAI, NDJSON for Ollama).
pub trait Format: Send + 'static {
    /// Written before the first piece.
    fn head(&mut self, _job: &Job) -> String {
        String::new()
    }
    fn piece(&mut self, job: &Job, p: Piece) -> String;
    /// Written after the last piece.
    fn end(&mut self, job: &Job) -> String;
}

/// The response body streaming `job` through `fmt`; dropping it (the client went
/// away) drops the job, which cancels its generations.
pub fn stream_body<F: Format>(job: Job, fmt: F) -> axum::body::Body {
    let s = futures_util::stream::unfold((job, fmt, 0u8), |(mut job, mut fmt, phase)| async move {
        let mut phase = phase;
        loop {
            let out = match phase {
                0 => {
                    phase = 1;
                    fmt.head(&job)
                }
                1 => match job.next().await {
                    Some(p) => fmt.piece(&job, p),
                    None => {
                        phase = 2;
                        fmt.end(&job)
                    }
                },
                _ => return None,
            };
            if !out.is_empty() {
                return Some((Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(out)), (job, fmt, phase)));
            }
        }
    });
    axum::body::Body::from_stream(s)
}
