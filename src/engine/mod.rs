//! The engine: a loaded model behind its own thread.
//!
//! Each `Engine` owns one engine thread that holds the model, its MLX stream
//! and every per-request state (KV caches, samplers). Calls from any thread
//! send a request over a channel and receive tokens or results back, which
//! gives thread safety, cancellation (a flag checked every step) and fair
//! interleaving of concurrent generations. See docs/engine.md.

mod batch;
mod classify;
mod generation;
mod lockstep;
mod metrics;
mod prefix;
mod replicas;
mod scheduler;
mod worker;

pub use classify::{ClassifyOptions, ClassifyResult};
pub use lockstep::distributed_rank;
pub use metrics::{BatchMetrics, Metrics};
pub use replicas::ReplicaStats;

use crate::mlx::{DeviceKind, Dtype};
use crate::models::{LoadOptions, ModelInfo};
use crate::sample::{Constraint, Grammars, SamplerConfig};
use crate::text::{ChatFormat, ChatMessage, ChatOptions, Tokenizer, ToolCallParser, ToolChoice, ToolFormat};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use worker::Command;

/// How to load a model into an engine.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Device to run on; None = GPU where MLX has one, else CPU.
    pub device: Option<DeviceKind>,
    /// Compute dtype; None: the checkpoint's on the GPU, float32 on the CPU when
    /// it fits the memory budget (`models::policy`, docs/cpu.md).
    pub dtype: Option<Dtype>,
    /// Longest sequence a request may reach (prompt + output); None = the model's.
    pub context_length: Option<usize>,
    /// CPU: widen the weights to the compute dtype at load (true) or keep them
    /// as stored (false); None: widened when that fits the memory budget
    /// (`LoadOptions::widen`, docs/cpu.md).
    pub widen: Option<bool>,
    /// A LoRA adapter directory in mlx-lm's layout (`adapters.safetensors` +
    /// `adapter_config.json`, as `gomlx lora` and `mlx_lm.lora` write) applied at load.
    pub adapter: Option<PathBuf>,
    /// Device-strategy knobs (`LoadOptions` documents each; docs/tuning.md):
    /// None takes the `GOMLX_*` environment variable, else the default.
    pub dequantize: Option<bool>,
    pub memory_budget: Option<u64>,
    pub fuse_projections: Option<bool>,
    pub compile: Option<bool>,
    pub cpu_dense_qmm_rows: Option<usize>,
    pub gpu_dense_qmm_rows: Option<usize>,
    pub cpu_split_out: Option<usize>,
    /// Split the model over the MLX distributed group of this backend (ring,
    /// nccl, mpi, jaccl, any; `LoadOptions::distributed`, docs/distributed.md).
    pub distributed: Option<String>,
    /// Mixture-of-experts blocks split by `columns` or whole `experts`
    /// (`LoadOptions::moe_split`).
    pub moe_split: Option<crate::models::shard::MoeSplit>,
    /// Most generations decoding in one batch; more wait for a row. None: 64
    /// on a GPU, 32 on the CPU (`DEFAULT_MAX_BATCH`).
    pub max_batch: Option<usize>,
    /// Bytes of KV the prefix cache may keep from finished requests, so new
    /// requests sharing a prompt prefix skip its prefill; None or 0: off.
    pub prefix_cache_bytes: Option<usize>,
    /// Engines (each a whole copy of the model) serving requests by least outstanding
    /// work: on a GPU replica i runs on MLX device i, on the CPU all share it. None: 1.
    pub replicas: Option<usize>,
}

/// The default `max_batch` on (CPU, GPU).
pub const DEFAULT_MAX_BATCH: (usize, usize) = (32, 64);

/// Prompts per classify job: a classify call is split into jobs that run
/// between decode steps, so open streams stall for one job at most.
pub const CLASSIFY_JOB_PROMPTS: usize = 256;

impl EngineOptions {
    /// Sets a device-strategy knob by its field name from text (`gomlx --tune
    /// name=value`): `widen`, `dequantize`, `fuse_projections`, `compile`
    /// (true/false), `memory_budget` (bytes, K/M/G suffixes), `cpu_dense_qmm_rows`,
    /// `gpu_dense_qmm_rows`, `cpu_split_out` (counts; 0 = never), `distributed`
    /// (a backend), `moe_split` (`columns` or `experts`).
    pub fn set_knob(&mut self, name: &str, value: &str) -> Result<()> {
        let bad = |what: &str| Error::InvalidArgument(format!("knob {name}: '{value}' is not {what}"));
        let flag = || crate::models::tuning::parse_flag(value).ok_or_else(|| bad("true or false"));
        let count = || value.trim().parse::<usize>().map_err(|_| bad("a count"));
        match name {
            "widen" => self.widen = Some(flag()?),
            "dequantize" => self.dequantize = Some(flag()?),
            "fuse_projections" => self.fuse_projections = Some(flag()?),
            "compile" => self.compile = Some(flag()?),
            "memory_budget" => self.memory_budget = Some(crate::models::tuning::parse_bytes(value).ok_or_else(|| bad("a byte count"))?),
            "cpu_dense_qmm_rows" => self.cpu_dense_qmm_rows = Some(count()?),
            "gpu_dense_qmm_rows" => self.gpu_dense_qmm_rows = Some(count()?),
            "cpu_split_out" => self.cpu_split_out = Some(count()?),
            "distributed" => self.distributed = Some(value.trim().to_string()),
            "moe_split" => self.moe_split = Some(crate::models::shard::MoeSplit::parse(value).ok_or_else(|| bad("columns or experts"))?),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown knob '{name}' (known: widen, dequantize, memory_budget, fuse_projections, compile, cpu_dense_qmm_rows, gpu_dense_qmm_rows, cpu_split_out, distributed, moe_split)"
                )))
            }
        }
        Ok(())
    }

    /// The models layer's options these describe.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            dtype: self.dtype,
            widen: self.widen,
            dequantize: self.dequantize,
            memory_budget: self.memory_budget,
            fuse_projections: self.fuse_projections,
            compile: self.compile,
            cpu_dense_qmm_rows: self.cpu_dense_qmm_rows,
            gpu_dense_qmm_rows: self.gpu_dense_qmm_rows,
            cpu_split_out: self.cpu_split_out,
            adapter: self.adapter.clone(),
            distributed: self.distributed.clone(),
            moe_split: self.moe_split,
        }
    }
}

/// Options of one generation.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Strings that end generation; they are not part of the output.
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Prompt tokens evaluated per step of prefill (bounds memory on long prompts).
    pub prefill_chunk: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_tokens: 256, sampler: SamplerConfig::default(), stop: Vec::new(), ignore_eos: false, prefill_chunk: 512 }
    }
}

/// One generated token and the text it adds.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub id: u32,
    /// Text this token adds to the output (may be empty while bytes of a
    /// character or a possible stop string are held back).
    pub text: String,
    pub logprob: Option<f32>,
    /// The most likely alternatives (id, logprob), when asked for.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Why a generation ended: the one finish reason of gomlx (the C ABI's
/// `GM_FINISH_*` codes and the CLI's names map from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    Eos,
    Length,
    Stop,
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Length => "length",
            FinishReason::Stop => "stop",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

impl From<crate::text::StreamEnd> for FinishReason {
    fn from(f: crate::text::StreamEnd) -> Self {
        match f {
            crate::text::StreamEnd::Eos(_) => FinishReason::Eos,
            crate::text::StreamEnd::Stop(_) => FinishReason::Stop,
        }
    }
}

/// What the engine thread sends to a generation's consumer.
pub(crate) enum Event {
    Token(Token),
    /// Text released at the end (held-back bytes) — delivered as a last token-less piece.
    Tail(String),
    Done(FinishReason, Metrics),
    Error(Error),
}

/// A streaming generation. Iterate for tokens; the stream ends with `None`,
/// after which `finish_reason()` and `metrics()` tell how it ended. An error
/// is yielded once as `Some(Err(..))`. Dropping it cancels the request.
pub struct Generation {
    rx: Receiver<Event>,
    cancel: Arc<AtomicBool>,
    reason: Option<FinishReason>,
    metrics: Option<Metrics>,
    tail: String,
    done: bool,
    /// Counted as outstanding on its replica until the stream ends.
    work: Option<replicas::Work>,
}

impl Generation {
    /// Asks the engine to stop this generation; takes effect within one step.
    /// The handle can be shared with another thread through `canceller()`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// A flag that cancels this generation when set, usable from any thread.
    pub fn canceller(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.reason
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// Text released when the stream ended (bytes held back for a possible stop
    /// string that did not complete). Empty in most cases.
    pub fn tail(&self) -> &str {
        &self.tail
    }

    /// Drains the stream: the concatenated text and the token ids.
    pub fn collect_text(&mut self) -> Result<(String, Vec<u32>)> {
        let mut text = String::new();
        let mut ids = Vec::new();
        for t in self.by_ref() {
            let t = t?;
            text.push_str(&t.text);
            ids.push(t.id);
        }
        text.push_str(&self.tail);
        Ok((text, ids))
    }
}

impl Iterator for Generation {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Result<Token>> {
        while !self.done {
            match self.rx.recv() {
                Ok(Event::Token(t)) => return Some(Ok(t)),
                Ok(Event::Tail(s)) => self.tail.push_str(&s),
                Ok(Event::Done(reason, m)) => {
                    self.done = true;
                    self.work = None;
                    self.reason = Some(reason);
                    self.metrics = Some(m);
                }
                Ok(Event::Error(e)) => {
                    self.done = true;
                    self.work = None;
                    return Some(Err(e));
                }
                Err(_) => {
                    self.done = true;
                    return Some(Err(Error::Engine("the engine stopped before the generation ended".into())));
                }
            }
        }
        None
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if !self.done {
            self.cancel();
        }
    }
}

/// A conversation whose KV cache the engine keeps between turns, so each turn
/// encodes only the tokens after the longest prefix it shares with the cache.
pub struct ChatSession {
    id: u64,
    /// The replica holding its cache.
    replica: usize,
    // Weak: an open session must not keep a closed engine's thread alive.
    engine: std::sync::Weak<Shared>,
}

/// The error a generation cut short by `Engine::close` ends with.
pub const CLOSED_WHILE_RUNNING: &str = "the model was closed while this generation was running";

impl Drop for ChatSession {
    fn drop(&mut self) {
        if let Some(shared) = self.engine.upgrade() {
            if let Some(tx) = shared.tx.lock().unwrap().as_ref() {
                let _ = tx.send(Command::DropSession(self.id));
            }
        }
    }
}

pub(crate) struct Shared {
    tx: Mutex<Option<Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set by `close`; the engine thread then ends running generations with `CLOSED_WHILE_RUNNING`.
    closed: Arc<AtomicBool>,
}

/// A loaded model and its engine thread. Cheap to clone; every clone talks to
/// the same thread. `close()` (or dropping the last clone) stops the thread
/// and frees the weights once running requests have ended.
#[derive(Clone)]
pub struct Engine {
    replicas: Arc<replicas::Replicas>,
    info: Arc<ModelInfo>,
    tokenizer: Option<Arc<Tokenizer>>,
    device: DeviceKind,
    path: PathBuf,
    context_length: usize,
    /// The tokenizer's vocabulary compiled for constrained decoding, built on first use.
    grammars: Arc<OnceLock<std::result::Result<Arc<Grammars>, String>>>,
    /// A rank > 0 under `gomlx launch`: its engine follows rank 0 and takes no requests.
    follower: Option<usize>,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

impl Engine {
    /// Loads a model directory (config.json + safetensors, tokenizer files
    /// optional) or a `.gguf` file on a new engine thread.
    pub fn load(path: &Path, opts: &EngineOptions) -> Result<Engine> {
        let device = opts.device.unwrap_or_else(crate::mlx::default_device);
        if let Some(n) = opts.context_length.filter(|&n| n < 2) {
            return Err(Error::InvalidArgument(format!(
                "context_length {n} is too short: a request needs at least one prompt token and one generated position"
            )));
        }
        if let Some(dir) = &opts.adapter {
            // Before the engine thread starts: a wrong path should not cost a thread.
            crate::models::adapters::check_adapter_dir(dir)?;
        }
        let max_rows = opts.max_batch.unwrap_or(if device == DeviceKind::Gpu { DEFAULT_MAX_BATCH.1 } else { DEFAULT_MAX_BATCH.0 });
        if max_rows == 0 {
            return Err(Error::InvalidArgument("max_batch must be at least 1".into()));
        }
        let n = opts.replicas.unwrap_or(1);
        if n == 0 {
            return Err(Error::InvalidArgument("replicas must be at least 1".into()));
        }
        if n > 1 && crate::models::tuning::distributed(&opts.load_options()).is_some() {
            // Each replica would join the same group: a rank runs one engine.
            return Err(Error::InvalidArgument("replicas: a rank of a distributed group (gomlx launch, --distributed) runs one engine".into()));
        }
        if device == DeviceKind::Gpu && n > 1 {
            let gpus = crate::mlx::device_count(DeviceKind::Gpu);
            if n > gpus {
                return Err(Error::InvalidArgument(format!("replicas {n}: MLX sees {gpus} GPU(s); GPU replicas take one GPU each")));
            }
        }
        // Every replica loads at once, each on its own engine thread.
        let mut started = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::channel();
            let (ready_tx, ready_rx) = mpsc::channel();
            let device_index = if device == DeviceKind::Gpu { i } else { 0 };
            let load = worker::LoadRequest {
                path: path.to_path_buf(),
                device,
                device_index,
                load: opts.load_options(),
                context_length: opts.context_length,
                max_rows,
                prefix_bytes: opts.prefix_cache_bytes.unwrap_or(0),
            };
            let closed = Arc::new(AtomicBool::new(false));
            let closed_flag = closed.clone();
            let thread = std::thread::Builder::new()
                .name(if n == 1 { "gomlx-engine".into() } else { format!("gomlx-engine-{i}") })
                .spawn(move || worker::run(load, rx, ready_tx, closed_flag))
                .map_err(|e| Error::Engine(format!("cannot start the engine thread: {e}")))?;
            started.push((Arc::new(Shared { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), closed }), device_index, ready_rx));
        }
        let mut ready = None;
        let mut failed = None;
        let mut list = Vec::with_capacity(n);
        for (i, (shared, device_index, ready_rx)) in started.into_iter().enumerate() {
            let what = if n == 1 { String::new() } else { format!("replica {i}: ") };
            match ready_rx.recv() {
                Ok(Ok(v)) => {
                    ready.get_or_insert(v);
                }
                Ok(Err(e)) => {
                    failed.get_or_insert(if n == 1 { e } else { Error::Engine(format!("{what}{e}")) });
                }
                Err(_) => {
                    failed.get_or_insert(Error::Engine(format!("{what}the engine thread stopped while loading")));
                }
            }
            list.push((shared, device_index));
        }
        if let Some(e) = failed {
            // Dropping the replicas that loaded stops their threads and frees their weights.
            drop(list);
            return Err(e);
        }
        let (info, tokenizer, context_length) = ready.ok_or_else(|| Error::Engine("no replica loaded".into()))?;
        Ok(Engine {
            replicas: Arc::new(replicas::Replicas::new(list)),
            info: Arc::new(info),
            tokenizer,
            device,
            path: path.to_path_buf(),
            context_length,
            grammars: Arc::new(OnceLock::new()),
            follower: lockstep::distributed_rank(&opts.load_options()).filter(|&r| r > 0),
        })
    }

    /// Under `gomlx launch`, a rank other than 0: loads the model and runs the steps rank 0's
    /// engine sends until rank 0's engine stops; returns the turns followed and the
    /// generations run. An error on rank 0 (it leads: load its `Engine` as usual).
    pub fn follow(path: &Path, opts: &EngineOptions) -> Result<(u64, u64)> {
        match lockstep::distributed_rank(&opts.load_options()) {
            Some(r) if r > 0 => {}
            _ => return Err(Error::InvalidArgument("Engine::follow: this process is not a follower rank (MLX_RANK > 0 under GOMLX_DISTRIBUTED)".into())),
        }
        let engine = Engine::load(path, opts)?;
        let thread = engine.replicas.list[0].shared.thread.lock().unwrap().take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        lockstep::take_report()
    }

    /// How the model writes tool calls, read from its chat template; None when
    /// the template has no tool format gomlx knows.
    pub fn tool_format(&self) -> Option<ToolFormat> {
        self.tokenizer.as_ref()?.chat_template().and_then(|t| ToolFormat::from_template(t.source()))
    }

    /// A parser for the tool calls in this model's replies (`tool_format`).
    pub fn tool_parser(&self) -> Option<ToolCallParser> {
        self.tool_format().map(ToolCallParser::new)
    }

    /// The constraint `tool_choice` asks for: None for auto/none, a grammar that
    /// forces one call in the model's format for required or a named function.
    /// An error when the model's template has no known tool format.
    pub fn tool_constraint(&self, tools: &[serde_json::Value], choice: &ToolChoice) -> Result<Option<Constraint>> {
        let only = match choice {
            ToolChoice::Auto | ToolChoice::None => return Ok(None),
            ToolChoice::Required => None,
            ToolChoice::Function(name) => Some(name.as_str()),
        };
        let format = self
            .tool_format()
            .ok_or_else(|| Error::InvalidArgument(format!("tool_choice: the chat template of {} writes no tool calls gomlx can parse", self.path.display())))?;
        Ok(Some(Constraint::Lark(format.forced_call_grammar(tools, only)?)))
    }

    /// The vocabulary compiled for constrained decoding (built once, on the first call).
    pub fn grammars(&self) -> Result<Arc<Grammars>> {
        let tok = self.require_tokenizer()?;
        let vocab = self.info.vocab_size;
        self.grammars.get_or_init(|| Grammars::new(tok, vocab).map(Arc::new).map_err(|e| e.to_string())).clone().map_err(Error::InvalidArgument)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn device(&self) -> DeviceKind {
        self.device
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The longest sequence a request may reach (prompt + output): the load
    /// option, else the model's.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Whether `close` was called (on any clone).
    pub fn is_closed(&self) -> bool {
        self.replicas.list.iter().any(|r| r.shared.closed.load(Ordering::SeqCst))
    }

    /// How many engines (whole copies of the model) serve this model's requests.
    pub fn replicas(&self) -> usize {
        self.replicas.list.len()
    }

    /// Each replica's outstanding and total work (all-time counts since the load).
    pub fn replica_stats(&self) -> Vec<ReplicaStats> {
        self.replicas.stats(self.device)
    }

    /// The model's tokenizer, if it has one.
    pub fn tokenizer(&self) -> Option<&Arc<Tokenizer>> {
        self.tokenizer.as_ref()
    }

    fn require_tokenizer(&self) -> Result<&Arc<Tokenizer>> {
        self.tokenizer.as_ref().ok_or_else(|| Error::Tokenizer(format!("{}: the model has no tokenizer", self.path.display())))
    }

    fn sender(&self, replica: usize) -> Result<Sender<Command>> {
        if let Some(rank) = self.follower {
            return Err(Error::Engine(format!("this process is rank {rank} of a distributed group: its engine follows rank 0's and takes no requests")));
        }
        let r = self.replicas.list.get(replica).ok_or_else(|| Error::Engine(format!("no replica {replica}")))?;
        r.shared.tx.lock().unwrap().clone().ok_or_else(|| Error::Engine("the model is closed".into()))
    }

    fn send(&self, replica: usize, cmd: Command) -> Result<()> {
        self.sender(replica)?.send(cmd).map_err(|_| Error::Engine("the engine thread has stopped".into()))
    }

    /// Streams a generation from prompt token ids.
    pub fn generate_tokens(&self, prompt: Vec<u32>, opts: &GenerateOptions) -> Result<Generation> {
        self.start(prompt, opts, None)
    }

    /// Streams a generation from a text prompt (special tokens such as BOS added
    /// as the tokenizer declares).
    pub fn generate(&self, prompt: &str, opts: &GenerateOptions) -> Result<Generation> {
        let ids = self.require_tokenizer()?.encode(prompt, true)?;
        self.start(ids, opts, None)
    }

    /// Renders `messages` with the model's chat template and generates the
    /// assistant's reply. With a session, the KV cache of earlier turns is reused.
    pub fn chat(&self, messages: &[ChatMessage], opts: &GenerateOptions, chat: &ChatOptions, session: Option<&ChatSession>) -> Result<Generation> {
        let ids = self.encode_chat(messages, chat)?;
        self.start(ids, opts, session)
    }

    /// The token ids `chat` starts from: `messages` rendered with the model's
    /// chat template (bounded: `crate::limits`) and encoded, on the calling
    /// thread; callers render before they take a lock of their own.
    pub fn encode_chat(&self, messages: &[ChatMessage], chat: &ChatOptions) -> Result<Vec<u32>> {
        let tok = self.require_tokenizer()?;
        let mut chat = chat.clone();
        chat.add_generation_prompt = true;
        tok.encode_chat(messages, &chat, &ChatFormat::Model)
    }

    /// Generation from prompt ids through a session's prompt cache.
    pub fn generate_in_session(&self, prompt: Vec<u32>, opts: &GenerateOptions, session: &ChatSession) -> Result<Generation> {
        self.start(prompt, opts, Some(session))
    }

    /// Writes a session's cache (its tokens and every layer's keys and values)
    /// to `path` as safetensors (`cache::save`'s format). Fails while a
    /// generation runs in the session, or before anything was generated in it.
    pub fn save_session(&self, session: &ChatSession, path: &Path) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.send(session.replica, Command::SaveSession(session.id, path.to_path_buf(), tx))?;
        rx.recv().map_err(|_| Error::Engine("the engine thread stopped".into()))?
    }

    /// A new session that starts from a cache saved by `save_session` (checked
    /// against this model: layers, heads, head size, vocabulary).
    pub fn load_session(&self, path: &Path) -> Result<ChatSession> {
        let s = self.new_session()?;
        let (tx, rx) = mpsc::channel();
        self.send(s.replica, Command::LoadSession(s.id, path.to_path_buf(), tx))?;
        rx.recv().map_err(|_| Error::Engine("the engine thread stopped".into()))??;
        Ok(s)
    }

    /// A new conversation whose KV cache lives on the engine thread.
    pub fn new_session(&self) -> Result<ChatSession> {
        // A session's cache lives on one replica: the least loaded when it opens.
        let replica = self.replicas.least_loaded();
        self.sender(replica)?;
        let shared = &self.replicas.list[replica].shared;
        Ok(ChatSession { id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed), replica, engine: Arc::downgrade(shared) })
    }

    fn start(&self, prompt: Vec<u32>, opts: &GenerateOptions, session: Option<&ChatSession>) -> Result<Generation> {
        opts.sampler.validate_for_vocab(self.info.vocab_size)?;
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= self.info.vocab_size) {
            return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary (size {})", self.info.vocab_size)));
        }
        // Compiled here, on the caller's thread: a bad grammar fails the call,
        // and compiling a large schema does not stall the other rows.
        let constraint = match &opts.sampler.constraint {
            Some(c) => Some(self.grammars()?.compile(c)?),
            None => None,
        };
        let (tx, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let (replica, work) = self.replicas.pick(session.map(|s| s.replica));
        self.send(
            replica,
            Command::Generate(Box::new(worker::GenerateRequest {
                prompt,
                opts: opts.clone(),
                session: session.map(|s| s.id),
                events: tx,
                cancel: cancel.clone(),
                constraint,
                lockstep: false,
            })),
        )?;
        Ok(Generation { rx, cancel, reason: None, metrics: None, tail: String::new(), done: false, work: Some(work) })
    }

    /// Classifies `prompts` by their next token in batched prefills (no decode).
    pub fn classify(&self, prompts: &[&str], opts: &ClassifyOptions) -> Result<(Vec<ClassifyResult>, BatchMetrics)> {
        let tok = self.require_tokenizer()?;
        let ids = tok.encode_batch(prompts, true)?;
        let labels = match &opts.labels {
            Some(labels) => Some(classify::label_tokens(tok, labels)?),
            None => None,
        };
        self.classify_tokens(ids, labels, opts)
    }

    /// `classify` on token ids; `labels` are (label, first token id) pairs.
    pub fn classify_tokens(
        &self,
        prompts: Vec<Vec<u32>>,
        labels: Option<Vec<(String, u32)>>,
        opts: &ClassifyOptions,
    ) -> Result<(Vec<ClassifyResult>, BatchMetrics)> {
        if prompts.iter().any(|p| p.is_empty()) {
            return Err(Error::InvalidArgument("a prompt is empty".into()));
        }
        let start = std::time::Instant::now();
        let n = prompts.len();
        let mut replies = Vec::new();
        let mut rest = prompts;
        // With replicas a call is split so that each can take a part.
        let job = if self.replicas() > 1 { n.div_ceil(self.replicas()).clamp(1, CLASSIFY_JOB_PROMPTS) } else { CLASSIFY_JOB_PROMPTS };
        loop {
            let tail = rest.split_off(rest.len().min(job));
            let (tx, rx) = mpsc::channel();
            let (replica, work) = self.replicas.pick(None);
            self.send(replica, Command::Classify(Box::new(classify::Request { prompts: rest, labels: labels.clone(), opts: opts.clone(), reply: tx })))?;
            replies.push((rx, work));
            if tail.is_empty() {
                break;
            }
            rest = tail;
        }
        let mut results = Vec::with_capacity(n);
        let mut m = BatchMetrics::default();
        for (rx, _work) in replies {
            let (r, part) = rx.recv().map_err(|_| Error::Engine("the engine thread stopped during classify".into()))??;
            results.extend(r);
            m.merge(&part);
        }
        m.finish(start.elapsed().as_secs_f64());
        Ok((results, m))
    }

    /// Generates for several prompts together; returns each one's text, ids and finish reason.
    /// Classifies `prompts` by generating one of `labels` under a choice constraint
    /// (rows of one batch; greedy unless `opts` samples). Unlike `classify`, labels
    /// may share their first tokens: each is written out whole. Returns each
    /// prompt's label index.
    pub fn classify_choice(&self, prompts: &[&str], labels: &[String], opts: &GenerateOptions) -> Result<(Vec<usize>, BatchMetrics)> {
        if labels.is_empty() {
            return Err(Error::InvalidArgument("classify: the label set is empty".into()));
        }
        if opts.sampler.constraint.is_some() {
            return Err(Error::InvalidArgument("classify with a choice of labels sets its own constraint; pass none".into()));
        }
        let mut opts = opts.clone();
        opts.sampler.constraint = Some(Constraint::Choice(labels.to_vec()));
        let (outputs, m) = self.batch_generate(prompts, &opts)?;
        let picks = outputs
            .iter()
            .map(|o| {
                labels
                    .iter()
                    .position(|l| *l == o.text)
                    .ok_or_else(|| Error::InvalidArgument(format!("classify: the output {:?} is not a whole label (max_tokens too small?)", o.text)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((picks, m))
    }

    pub fn batch_generate(&self, prompts: &[&str], opts: &GenerateOptions) -> Result<(Vec<batch::Output>, BatchMetrics)> {
        let ids = self.require_tokenizer()?.encode_batch(prompts, true)?;
        self.batch_generate_tokens(ids, opts)
    }

    pub fn batch_generate_tokens(&self, prompts: Vec<Vec<u32>>, opts: &GenerateOptions) -> Result<(Vec<batch::Output>, BatchMetrics)> {
        opts.sampler.validate_for_vocab(self.info.vocab_size)?;
        if prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
            return Err(Error::InvalidArgument("batch generate needs at least one non-empty prompt".into()));
        }
        let start = std::time::Instant::now();
        let mut m = BatchMetrics { prompts: prompts.len(), prompt_tokens: prompts.iter().map(Vec::len).sum(), batches: 1, ..Default::default() };
        // Every prompt is a row of the running batch; all are queued before any is read.
        let gens = prompts.into_iter().map(|p| self.start(p, opts, None)).collect::<Result<Vec<_>>>()?;
        let mut outputs = Vec::with_capacity(gens.len());
        for mut g in gens {
            let (text, tokens) = g.collect_text()?;
            let finish_reason = g.finish_reason().ok_or_else(|| Error::Engine("a batch row ended without a reason".into()))?;
            if let Some(gm) = g.metrics() {
                m.peak_memory_bytes = m.peak_memory_bytes.max(gm.peak_memory_bytes);
                m.active_memory_bytes = gm.active_memory_bytes;
            }
            m.generated_tokens += tokens.len();
            outputs.push(batch::Output { text, tokens, finish_reason });
        }
        m.finish(start.elapsed().as_secs_f64());
        Ok((outputs, m))
    }

    /// Empties the prefix cache (every replica's); returns the bytes it held.
    pub fn clear_prefix_cache(&self) -> Result<usize> {
        let mut total = 0;
        for i in 0..self.replicas() {
            let (tx, rx) = mpsc::channel();
            self.send(i, Command::ClearPrefixCache(tx))?;
            total += rx.recv().map_err(|_| Error::Engine("the engine thread stopped".into()))?;
        }
        Ok(total)
    }

    /// Closes the model: running generations end within one step with the
    /// error `CLOSED_WHILE_RUNNING` (after the tokens already made), a running
    /// or queued classify or batch call finishes, then the engine thread stops
    /// and frees the weights. Later calls on any clone fail with "the model is
    /// closed". Blocks until the thread has ended; idempotent.
    pub fn close(&self) {
        // Every replica is told first, so they wind down together, then each is joined.
        for r in &self.replicas.list {
            r.shared.closed.store(true, Ordering::SeqCst);
            r.shared.tx.lock().unwrap().take();
        }
        for r in &self.replicas.list {
            if let Some(t) = r.shared.thread.lock().unwrap().take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last clone is gone: nobody reads the generations any more.
        self.closed.store(true, Ordering::SeqCst);
        self.tx.lock().unwrap().take();
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

pub use batch::Output as BatchOutput;
