//! Streaming generation and chat: start, next, cancel, metrics, free; and
//! chat sessions that keep their KV cache between turns.

use super::handles::{self, Handle};
use super::metrics::{finish_code, write_metrics, GM_FINISH_ERROR, GM_FINISH_NONE};
use super::model::{gm_model, ModelState};
use super::options::{self, gm_generate_options, gm_message};
use super::{c_slice, c_str, cstring, guard, invalid, write_sized, SizedStruct, GM_ERROR};
use crate::engine::GenerateOptions;
use crate::engine::{ChatSession, Engine, Generation, Metrics};
use crate::text::{ChatMessage, ChatOptions, ToolCall, ToolCallParser, ToolChoice};
use crate::Result;
use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// `gm_token.id` of a text-only piece: text released when the stream ended
/// (held back for a possible stop string or an incomplete character).
pub const GM_NO_TOKEN: u32 = u32::MAX;

/// One alternative token and its log-probability.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_top_logprob {
    pub id: u32,
    pub logprob: f32,
}

/// A token handed out by `gm_generate_next`. The caller owns the struct and
/// sets `struct_size = sizeof(gm_token)`; `text` and `top_logprobs` point
/// into the generation and stay valid until the next `gm_generate_next` or
/// `gm_generation_free` on it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_token {
    pub struct_size: usize,
    /// The token id, or `GM_NO_TOKEN` for a final text-only piece.
    pub id: u32,
    /// NUL-terminated UTF-8 text this token adds to the output; may be empty
    /// while bytes of a character or a possible stop string are held back.
    pub text: *const c_char,
    /// `strlen(text)`.
    pub text_len: usize,
    /// The token's log-probability when `gm_generate_options.logprobs` was
    /// set, else NaN.
    pub logprob: f32,
    /// The most likely alternatives (`gm_generate_options.top_logprobs` of
    /// them), NULL when not asked for.
    pub top_logprobs: *const gm_top_logprob,
    pub n_top_logprobs: usize,
    /// Chat with `gm_generate_options.tools`: the tool calls this token
    /// completed, as a NUL-terminated JSON array of
    /// `{"id": "call_1", "type": "function", "function": {"name": ..., "arguments": {...}}}`
    /// (the shape an assistant message's `tool_calls` takes back); NULL when
    /// none. Owned by the generation like `text`. With tools, `text` carries
    /// only the reply's text outside calls. (Added after the first release:
    /// a caller whose `struct_size` ends before it never gets it.)
    pub tool_calls: *const c_char,
}

impl SizedStruct for gm_token {
    const NAME: &'static str = "gm_token";
    const MIN_SIZE: usize = std::mem::offset_of!(gm_token, tool_calls);
}

struct TokenStream {
    gen: Option<Generation>,
    /// Storage for the last token handed out.
    text: CString,
    tops: Vec<gm_top_logprob>,
    /// The reply's tool-call parser (a chat with tools), and the calls of the last token.
    tools: Option<ToolCallParser>,
    calls: Option<CString>,
    tail_sent: bool,
    /// GM_FINISH_* once ended.
    reason: i32,
    metrics: Option<Metrics>,
}

pub(crate) struct GenerationState {
    /// The generation's cancel flag, settable while another thread waits in `gm_generate_next`.
    cancel: Arc<AtomicBool>,
    stream: Mutex<TokenStream>,
}

/// A running generation (opaque). Created by `gm_generate_start`,
/// `gm_generate_tokens_start`, `gm_chat_start` or `gm_session_chat_start`;
/// freed by `gm_generation_free`.
pub struct gm_generation {
    state: Arc<GenerationState>,
}

impl Handle for gm_generation {
    const KIND: &'static str = "gm_generation";
    type State = GenerationState;
    fn new(state: Arc<GenerationState>) -> Self {
        gm_generation { state }
    }
    fn state(&self) -> &Arc<GenerationState> {
        &self.state
    }
}

fn start(model: &Arc<ModelState>, f: impl FnOnce(&Engine) -> Result<Generation>) -> Result<*mut gm_generation> {
    start_with_tools(model, None, f)
}

/// Starts a generation whose text goes through `tools` (a chat with tools).
pub(crate) fn start_with_tools(
    model: &Arc<ModelState>,
    tools: Option<ToolCallParser>,
    f: impl FnOnce(&Engine) -> Result<Generation>,
) -> Result<*mut gm_generation> {
    let gen = f(model.engine()?)?;
    let state = GenerationState {
        cancel: gen.canceller(),
        stream: Mutex::new(TokenStream {
            gen: Some(gen),
            text: CString::default(),
            tops: Vec::new(),
            tools,
            calls: None,
            tail_sent: false,
            reason: GM_FINISH_NONE,
            metrics: None,
        }),
    };
    Ok(handles::register::<gm_generation>(Arc::new(state)))
}

/// Starts generating a continuation of a text prompt (encoded with the
/// model's tokenizer, special tokens such as BOS added as it declares).
///
/// `prompt` (NUL-terminated UTF-8) and `opts` (NULL = defaults) are read
/// during the call only. Returns a new generation owned by the caller (free
/// it with `gm_generation_free`); NULL on error (see `gm_last_error`: model
/// not live or closed, no tokenizer, bad options, empty prompt, ...).
/// The work runs on the model's engine thread; read tokens with
/// `gm_generate_next`.
#[no_mangle]
pub extern "C" fn gm_generate_start(model: *mut gm_model, prompt: *const c_char, opts: *const gm_generate_options) -> *mut gm_generation {
    guard(std::ptr::null_mut(), || {
        let m = handles::get(model)?;
        let prompt = c_str(prompt, "prompt")?;
        let s = options::generate_settings(opts)?;
        s.without_tools("gm_generate_start")?;
        start(&m, |e| e.generate(prompt, &s.opts))
    })
}

/// Like `gm_generate_start` with the prompt given as `n` token ids (read
/// during the call only); works for models without a tokenizer (then the
/// tokens' text is empty and end-of-sequence is not detected).
#[no_mangle]
pub extern "C" fn gm_generate_tokens_start(model: *mut gm_model, ids: *const u32, n: usize, opts: *const gm_generate_options) -> *mut gm_generation {
    guard(std::ptr::null_mut(), || {
        let m = handles::get(model)?;
        let ids = c_slice(ids, n, "ids")?.to_vec();
        let s = options::generate_settings(opts)?;
        s.without_tools("gm_generate_tokens_start")?;
        start(&m, |e| e.generate_tokens(ids, &s.opts))
    })
}

/// A chat's template options, sampler options and tool-call parser: `tools`
/// reach the template unless `tool_choice` is none; required or a named
/// function adds the grammar that forces the call (`Engine::tool_constraint`).
/// As the server does: a reply under a caller's constraint is not searched for
/// calls, and tools for a template without a known call format are an error.
pub(crate) fn chat_request(engine: &Engine, s: &options::GenerateSettings) -> Result<(ChatOptions, GenerateOptions, Option<ToolCallParser>)> {
    let mut chat = ChatOptions { add_generation_prompt: true, extra: s.template_args.clone(), ..Default::default() };
    let mut opts = s.opts.clone();
    let Some(tools) = s.tools.as_ref().filter(|t| !t.is_empty() && s.tool_choice != ToolChoice::None) else { return Ok((chat, opts, None)) };
    let Some(parser) = engine.tool_parser() else {
        return Err(invalid(
            "gm_generate_options.tools: this model's chat template writes no tool calls gomlx can parse (Qwen <tool_call>, Llama 3 JSON, Mistral [TOOL_CALLS], Gemma tool_code)",
        ));
    };
    let caller_constraint = opts.sampler.constraint.is_some();
    if let Some(forced) = engine.tool_constraint(tools, &s.tool_choice)? {
        if caller_constraint {
            return Err(invalid("gm_generate_options.constraint and a tool_choice that forces a call cannot be used together"));
        }
        opts.sampler.constraint = Some(forced);
    }
    chat.tools = Some(tools.clone());
    Ok((chat, opts, (!caller_constraint).then_some(parser)))
}

/// Starts the assistant's reply to `n` chat messages, rendered with the
/// model's own chat template (and `opts->chat_template_args`).
///
/// `messages` and their strings and `opts` are read during the call only.
/// Returns a new generation owned by the caller, or NULL on error (see
/// `gm_last_error`), as `gm_generate_start`.
#[no_mangle]
pub extern "C" fn gm_chat_start(model: *mut gm_model, messages: *const gm_message, n: usize, opts: *const gm_generate_options) -> *mut gm_generation {
    guard(std::ptr::null_mut(), || {
        let m = handles::get(model)?;
        let msgs = options::messages(messages, n)?;
        let s = options::generate_settings(opts)?;
        chat_start(&m, &msgs, &s)
    })
}

/// Hands out the next token.
///
/// Returns 1 and fills `*out` with a token; 0 when the generation has ended
/// (see `gm_generation_metrics` / `gm_generation_finish_reason`), again on
/// every later call; -1 on error (see `gm_last_error`), after which the
/// generation has ended with `GM_FINISH_ERROR` and later calls return 0.
/// Blocks until the engine has the token. `out->text` stays valid until the
/// next call on this generation or its free. After the last token a final
/// text-only piece (`id == GM_NO_TOKEN`) may come with text that was held back.
///
/// Threads: calls on one generation are serialised (a call waits for another
/// thread's call to return); use one consumer thread per generation.
/// If the model is closed meanwhile, the tokens already made are handed out,
/// then -1 with "the model was closed".
#[no_mangle]
pub extern "C" fn gm_generate_next(gen: *mut gm_generation, out: *mut gm_token) -> i32 {
    guard(GM_ERROR, || {
        let g = handles::get(gen)?;
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        super::read_opts(out as *const gm_token)?;
        let mut s = g.stream.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *s;
        let Some(stream) = s.gen.as_mut() else { return Ok(0) };
        match stream.next() {
            Some(Ok(t)) => {
                let (text, calls) = s.through_tools(Some(&t.text));
                s.text = cstring(&text);
                s.calls = calls_json(&calls);
                s.tops = t.top_logprobs.iter().map(|&(id, logprob)| gm_top_logprob { id, logprob }).collect();
                let tops = if t.top_logprobs.is_empty() { std::ptr::null() } else { s.tops.as_ptr() };
                write_token(out, t.id, &s.text, t.logprob.unwrap_or(f32::NAN), tops, s.tops.len(), s.calls.as_ref())?;
                Ok(1)
            }
            Some(Err(e)) => Err(s.fail(e)),
            None => {
                if !s.tail_sent {
                    s.tail_sent = true;
                    let tail = stream.tail().to_string();
                    let (mut text, mut calls) = s.through_tools(Some(&tail));
                    let (end, more) = s.through_tools(None);
                    text.push_str(&end);
                    calls.extend(more);
                    if !text.is_empty() || !calls.is_empty() {
                        s.text = cstring(&text);
                        s.calls = calls_json(&calls);
                        s.tops.clear();
                        write_token(out, GM_NO_TOKEN, &s.text, f32::NAN, std::ptr::null(), 0, s.calls.as_ref())?;
                        return Ok(1);
                    }
                }
                let Some(stream) = s.gen.as_mut() else { return Ok(0) };
                let reason = stream.finish_reason().map(finish_code).unwrap_or(GM_FINISH_ERROR);
                s.metrics = stream.metrics().cloned();
                s.gen = None;
                s.reason = reason;
                Ok(0)
            }
        }
    })
}

impl TokenStream {
    /// A piece of the reply (None: its end) through the tool-call parser, if
    /// any: the text outside calls and the calls completed. A call the model
    /// wrote malformed is handed out as text, and parsing stops (as the server does).
    fn through_tools(&mut self, piece: Option<&str>) -> (String, Vec<ToolCall>) {
        let Some(p) = self.tools.as_mut() else { return (piece.unwrap_or_default().to_string(), Vec::new()) };
        let before = p.pending();
        let step = match piece {
            Some(s) => p.push(s),
            None => p.finish(),
        };
        match step {
            Ok(step) => (step.text, step.calls),
            Err(_) => {
                self.tools = None;
                (before + piece.unwrap_or_default(), Vec::new())
            }
        }
    }

    /// Ends the stream with an error.
    fn fail(&mut self, e: crate::Error) -> crate::Error {
        self.gen = None;
        self.reason = GM_FINISH_ERROR;
        e
    }
}

/// The calls as `gm_token.tool_calls` hands them out; None when there are none.
fn calls_json(calls: &[ToolCall]) -> Option<CString> {
    (!calls.is_empty()).then(|| cstring(&serde_json::Value::Array(calls.iter().map(ToolCall::to_message_json).collect()).to_string()))
}

fn write_token(out: *mut gm_token, id: u32, text: &CString, logprob: f32, tops: *const gm_top_logprob, n_tops: usize, calls: Option<&CString>) -> Result<()> {
    let tool_calls = calls.map_or(std::ptr::null(), |c| c.as_ptr());
    write_sized(
        out,
        "out",
        gm_token { struct_size: 0, id, text: text.as_ptr(), text_len: text.as_bytes().len(), logprob, top_logprobs: tops, n_top_logprobs: n_tops, tool_calls },
    )
}

/// Asks the generation to stop; the engine stops within one step, and
/// `gm_generate_next` then hands out what was already made and returns 0 with
/// `GM_FINISH_CANCELLED`. Any thread, any time, also while another thread is
/// blocked in `gm_generate_next`; never blocks. NULL, an ended or a freed
/// generation: no-op (a non-live pointer is reported by `gm_last_error`).
#[no_mangle]
pub extern "C" fn gm_generation_cancel(gen: *mut gm_generation) {
    guard((), || {
        if gen.is_null() {
            return Ok(());
        }
        let g = handles::get(gen)?;
        g.cancel.store(true, Ordering::SeqCst);
        Ok(())
    })
}

/// How the generation went: returns 0 and fills `*out` (caller-owned,
/// `struct_size = sizeof(gm_metrics)`) once `gm_generate_next` has returned
/// 0; -1 (see `gm_last_error`) before that, after an error, or on bad
/// arguments. Waits for a `gm_generate_next` running on another thread.
#[no_mangle]
pub extern "C" fn gm_generation_metrics(gen: *const gm_generation, out: *mut gm_metrics) -> i32 {
    super::guard_status(|| {
        let g = handles::get(gen)?;
        let s = g.stream.lock().unwrap_or_else(|p| p.into_inner());
        match &s.metrics {
            Some(m) if s.gen.is_none() => write_metrics(out, s.reason, m),
            _ if s.reason == GM_FINISH_ERROR => Err(invalid("the generation ended with an error; it has no metrics")),
            _ => Err(invalid("the generation has not finished (call gm_generate_next until it returns 0)")),
        }
    })
}

use super::metrics::gm_metrics;

/// Why the generation ended: one of `GM_FINISH_*` (`GM_FINISH_NONE` while it
/// runs, i.e. until `gm_generate_next` returned 0 or -1). -1 when `gen` is
/// not a live generation (see `gm_last_error`).
#[no_mangle]
pub extern "C" fn gm_generation_finish_reason(gen: *const gm_generation) -> i32 {
    guard(GM_ERROR, || {
        let g = handles::get(gen)?;
        let s = g.stream.lock().unwrap_or_else(|p| p.into_inner());
        Ok(s.reason)
    })
}

/// Frees a generation, cancelling it if it is still running. NULL is a
/// no-op; a pointer that is not a live generation (freed twice) is detected
/// where possible and reported by `gm_last_error` without touching memory.
/// Token text handed out by it is invalid afterwards. Any thread; a
/// `gm_generate_next` blocked on another thread returns soon after.
#[no_mangle]
pub extern "C" fn gm_generation_free(gen: *mut gm_generation) {
    guard((), || {
        if gen.is_null() {
            return Ok(());
        }
        let g = handles::take(gen)?;
        g.cancel.store(true, Ordering::SeqCst);
        Ok(())
    })
}

pub(crate) struct SessionState {
    model: Arc<ModelState>,
    session: Mutex<Option<ChatSession>>,
}

/// A chat session (opaque): the engine keeps its KV cache between turns, so
/// each turn evaluates only the tokens after the prefix it shares with the
/// previous turns. Created by `gm_session_new`, freed by `gm_session_free`.
pub struct gm_session {
    state: Arc<SessionState>,
}

impl Handle for gm_session {
    const KIND: &'static str = "gm_session";
    type State = SessionState;
    fn new(state: Arc<SessionState>) -> Self {
        gm_session { state }
    }
    fn state(&self) -> &Arc<SessionState> {
        &self.state
    }
}

/// A new chat session on `model`, owned by the caller (free with
/// `gm_session_free`, before or after closing the model). NULL on error.
#[no_mangle]
pub extern "C" fn gm_session_new(model: *mut gm_model) -> *mut gm_session {
    guard(std::ptr::null_mut(), || {
        let m = handles::get(model)?;
        let session = m.engine()?.new_session()?;
        Ok(handles::register::<gm_session>(Arc::new(SessionState { model: m, session: Mutex::new(Some(session)) })))
    })
}

/// Like `gm_chat_start`, through a session: pass the whole conversation each
/// turn (earlier messages, the assistant's replies, the new message); the
/// cached prefix is reused. One generation per session at a time (a second
/// one fails when it starts). NULL on error (see `gm_last_error`).
#[no_mangle]
pub extern "C" fn gm_session_chat_start(
    session: *mut gm_session,
    messages: *const gm_message,
    n: usize,
    opts: *const gm_generate_options,
) -> *mut gm_generation {
    guard(std::ptr::null_mut(), || {
        let ss = handles::get(session)?;
        let msgs = options::messages(messages, n)?;
        let s = options::generate_settings(opts)?;
        session_chat_start(&ss, &msgs, &s)
    })
}

/// A chat's generation on `model` (`gm_chat_start`, `gm_chat_start_json`).
pub(crate) fn chat_start(model: &Arc<ModelState>, msgs: &[ChatMessage], s: &options::GenerateSettings) -> Result<*mut gm_generation> {
    let (chat, opts, tools) = chat_request(model.engine()?, s)?;
    start_with_tools(model, tools, |e| e.chat(msgs, &opts, &chat, None))
}

/// A chat's generation in a session (`gm_session_chat_start`, `gm_session_chat_start_json`).
pub(crate) fn session_chat_start(ss: &Arc<SessionState>, msgs: &[ChatMessage], s: &options::GenerateSettings) -> Result<*mut gm_generation> {
    let engine = ss.model.engine()?;
    let (chat, opts, tools) = chat_request(engine, s)?;
    // Rendered and encoded before the session's lock is taken (gm_session_free needs it).
    let ids = engine.encode_chat(msgs, &chat)?;
    let guard = ss.session.lock().unwrap_or_else(|p| p.into_inner());
    let Some(session) = guard.as_ref() else { return Err(invalid("the session is freed")) };
    start_with_tools(&ss.model, tools, |e| e.generate_in_session(ids, &opts, session))
}

/// Writes the session's cache (its tokens and KV) to the file `path`
/// (safetensors); `gm_session_load` starts a session from it, also in another
/// process. Returns 0, or -1 (see `gm_last_error`: a generation is running in
/// the session, nothing was generated in it yet, the file cannot be written).
#[no_mangle]
pub extern "C" fn gm_session_save(session: *mut gm_session, path: *const c_char) -> i32 {
    super::guard_status(|| {
        let ss = handles::get(session)?;
        let path = c_str(path, "path")?;
        let guard = ss.session.lock().unwrap_or_else(|p| p.into_inner());
        let Some(session) = guard.as_ref() else { return Err(invalid("the session is freed")) };
        ss.model.engine()?.save_session(session, std::path::Path::new(path))
    })
}

/// A new session of `model` starting from a cache saved by `gm_session_save`
/// (checked against the model: layers, heads, head size, vocabulary). The
/// caller owns the session (`gm_session_free`); NULL on error.
#[no_mangle]
pub extern "C" fn gm_session_load(model: *mut gm_model, path: *const c_char) -> *mut gm_session {
    guard(std::ptr::null_mut(), || {
        let m = handles::get(model)?;
        let path = c_str(path, "path")?;
        let session = m.engine()?.load_session(std::path::Path::new(path))?;
        Ok(handles::register::<gm_session>(Arc::new(SessionState { model: m, session: Mutex::new(Some(session)) })))
    })
}

/// Frees a session and its cache. NULL is a no-op; freeing twice is detected
/// where possible (reported by `gm_last_error`). A generation running in it
/// goes on; the cache is dropped when it ends.
#[no_mangle]
pub extern "C" fn gm_session_free(session: *mut gm_session) {
    guard((), || {
        if session.is_null() {
            return Ok(());
        }
        let s = handles::take(session)?;
        s.session.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    })
}
