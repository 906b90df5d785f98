//! Caller-owned option structs and their conversion to the engine's options.
//!
//! Every options struct starts with `struct_size`; zero-initialising it and
//! setting `struct_size = sizeof(the struct)` gives the defaults (each field's
//! 0 means "default"). A NULL options pointer also means all defaults.

use super::{c_slice, c_str, c_strs, invalid, opt_c_str, read_opts, SizedStruct};
use crate::engine::{ClassifyOptions, EngineOptions, GenerateOptions};
use crate::mlx::{DeviceKind, Dtype};
use crate::models::shard::MoeSplit;
use crate::sample::{Constraint, SamplerConfig};
use crate::text::ToolChoice;
use crate::Result;
use std::ffi::c_char;
use std::path::PathBuf;

/// `gm_load_options.device`: GPU where MLX has one, else CPU.
pub const GM_DEVICE_DEFAULT: i32 = 0;
/// `gm_load_options.device`: the CPU.
pub const GM_DEVICE_CPU: i32 = 1;
/// `gm_load_options.device`: the GPU (Metal or CUDA); an error where MLX has none.
pub const GM_DEVICE_GPU: i32 = 2;

/// How to load a model (`gm_model_load`). Zero-initialise, set
/// `struct_size = sizeof(gm_load_options)`, then set what you need.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_load_options {
    /// `sizeof(gm_load_options)` as the caller was compiled with.
    pub struct_size: usize,
    /// `GM_DEVICE_DEFAULT` (0), `GM_DEVICE_CPU` or `GM_DEVICE_GPU`.
    pub device: i32,
    /// Compute dtype: "float32", "float16" or "bfloat16" (also "f32", "f16",
    /// "bf16"); NULL keeps the checkpoint's. Read during the call only.
    pub dtype: *const c_char,
    /// Longest sequence a request may reach (prompt + output); 0 = the model's.
    pub context_length: usize,
    /// If not 0, sets MLX's process-wide memory limit in bytes (as
    /// `gm_set_memory_limit`) before loading.
    pub memory_limit: usize,
    /// If not 0, sets MLX's process-wide buffer-cache limit in bytes (as
    /// `gm_set_cache_limit`) before loading. Use `gm_set_cache_limit(0)` to
    /// disable the cache.
    pub cache_limit: usize,
    /// A LoRA adapter directory in mlx-lm's layout (`adapters.safetensors` +
    /// `adapter_config.json`, as `gm_lora_train`, `gomlx lora` and
    /// `mlx_lm.lora` write it) to apply at load; NULL = none. An adapter that
    /// does not fit the model (missing or extra tensors, wrong shapes, more
    /// layers than the model has) fails the load with a message naming it.
    /// Read during the call only.
    pub adapter_path: *const c_char,
    // Device-strategy knobs (docs/tuning.md; callers built before they were added get the
    // defaults). 0 = the `GOMLX_*` environment variable, else the built-in default.
    /// CPU: widen floating weights to the compute dtype at load (`GM_ON`) or
    /// keep them as stored (`GM_OFF`); `GOMLX_CPU_WEIGHTS`.
    pub widen: i32,
    /// CPU: expand quantised matrices at load (`GM_ON`/`GM_OFF`); `GOMLX_CPU_DEQUANTIZE`.
    pub dequantize: i32,
    /// Bytes the widened weights may take on the CPU; `GOMLX_CPU_MEMORY_BUDGET`.
    pub memory_budget: u64,
    /// One matmul for q/k/v (`GM_ON`/`GM_OFF`); `GOMLX_FUSE_PROJECTIONS`.
    pub fuse_projections: i32,
    /// The MLP activation as one compiled kernel (`GM_ON`/`GM_OFF`); `GOMLX_COMPILE`.
    pub compile: i32,
    /// Input rows from which quantised products are dequantised on the CPU /
    /// on a GPU, and output rows from which a CPU product is split over two
    /// streams; negative = never; `GOMLX_CPU_DENSE_QMM_ROWS`,
    /// `GOMLX_GPU_DENSE_QMM_ROWS`, `GOMLX_CPU_SPLIT_OUT`.
    pub cpu_dense_qmm_rows: i64,
    pub gpu_dense_qmm_rows: i64,
    pub cpu_split_out: i64,
    /// Process-wide, like `memory_limit`: BLAS threads (`GOMLX_NUM_THREADS`)
    /// and single-row products sent to `sgemv` (`GM_ON`/`GM_OFF`; `GOMLX_BLAS_GEMV`).
    pub blas_threads: u32,
    pub blas_gemv: i32,
    /// Most generations decoding in one batch (continuous batching); more wait
    /// for a row. 0 = the default (`DEFAULT_MAX_BATCH`: 64 on a GPU, 32 on the CPU).
    pub max_batch: usize,
    /// Bytes of KV the prefix cache keeps from finished requests (requests
    /// sharing a prompt prefix skip its prefill); 0 = off.
    pub prefix_cache_bytes: usize,
    /// Replicas (data parallel): engines, each a whole copy of the model, that
    /// serve this handle's requests by least outstanding work; on a GPU replica
    /// i runs on MLX device i. 0 = 1.
    pub replicas: usize,
    /// Split the model over the ranks of an MLX distributed group (tensor
    /// parallel, docs/distributed.md): "ring", "nccl", "mpi", "jaccl" or
    /// "any"; "off" = not split; NULL = `GOMLX_DISTRIBUTED` (set by `gomlx
    /// launch`). On a rank other than 0 load with `gm_follow` instead.
    pub distributed: *const c_char,
    /// How a split model's mixture-of-experts blocks are split: "columns" (of
    /// every expert: compute and memory divide) or "experts" (whole experts per
    /// rank); NULL = `GOMLX_MOE_SPLIT`, else columns where they divide.
    pub moe_split: *const c_char,
}

/// A knob of `gm_load_options` switched on.
pub const GM_ON: i32 = 1;
/// A knob of `gm_load_options` switched off (0 is its default).
pub const GM_OFF: i32 = -1;

impl SizedStruct for gm_load_options {
    const NAME: &'static str = "gm_load_options";
    // The first release ended after `adapter_path`.
    const MIN_SIZE: usize = std::mem::offset_of!(gm_load_options, widen);
}

fn switch(v: i32, what: &str) -> Result<Option<bool>> {
    match v {
        0 => Ok(None),
        GM_ON => Ok(Some(true)),
        GM_OFF => Ok(Some(false)),
        other => Err(invalid(format!("gm_load_options.{what} is {other} (expected 0, GM_ON or GM_OFF)"))),
    }
}

fn rows(v: i64) -> Option<usize> {
    match v {
        0 => None,
        n if n < 0 => Some(0),
        n => Some(n as usize),
    }
}

/// The engine's options and the process-wide limits to set first.
pub(crate) struct LoadSettings {
    pub engine: EngineOptions,
    pub memory_limit: usize,
    pub cache_limit: usize,
    pub blas_threads: usize,
    pub blas_gemv: Option<bool>,
}

impl LoadSettings {
    /// Sets the process-wide limits the options carry (before a load).
    pub(crate) fn apply_process_wide(&self) -> Result<()> {
        if self.memory_limit != 0 {
            crate::mlx::memory::set_memory_limit(self.memory_limit)?;
        }
        if self.cache_limit != 0 {
            crate::mlx::memory::set_cache_limit(self.cache_limit)?;
        }
        if self.blas_threads != 0 {
            crate::mlx::blas::set_threads(self.blas_threads);
        }
        if let Some(on) = self.blas_gemv {
            crate::mlx::blas::set_gemv_forwarding(on);
        }
        Ok(())
    }
}

pub(crate) fn load_settings(ptr: *const gm_load_options) -> Result<LoadSettings> {
    let Some(o) = read_opts(ptr)? else {
        return Ok(LoadSettings { engine: EngineOptions::default(), memory_limit: 0, cache_limit: 0, blas_threads: 0, blas_gemv: None });
    };
    let device = match o.device {
        GM_DEVICE_DEFAULT => None,
        GM_DEVICE_CPU => Some(DeviceKind::Cpu),
        GM_DEVICE_GPU => {
            if !crate::mlx::gpu_available() {
                return Err(invalid("gm_load_options.device is GM_DEVICE_GPU but MLX has no GPU on this machine"));
            }
            Some(DeviceKind::Gpu)
        }
        other => return Err(invalid(format!("gm_load_options.device is {other} (expected GM_DEVICE_DEFAULT, GM_DEVICE_CPU or GM_DEVICE_GPU)"))),
    };
    let dtype = opt_c_str(o.dtype, "gm_load_options.dtype")?.map(Dtype::parse).transpose()?;
    let context_length = if o.context_length == 0 { None } else { Some(o.context_length) };
    let adapter = opt_c_str(o.adapter_path, "gm_load_options.adapter_path")?.map(PathBuf::from);
    let engine = EngineOptions {
        device,
        dtype,
        context_length,
        adapter,
        widen: switch(o.widen, "widen")?,
        dequantize: switch(o.dequantize, "dequantize")?,
        memory_budget: (o.memory_budget != 0).then_some(o.memory_budget),
        fuse_projections: switch(o.fuse_projections, "fuse_projections")?,
        compile: switch(o.compile, "compile")?,
        cpu_dense_qmm_rows: rows(o.cpu_dense_qmm_rows),
        gpu_dense_qmm_rows: rows(o.gpu_dense_qmm_rows),
        cpu_split_out: rows(o.cpu_split_out),
        distributed: opt_c_str(o.distributed, "gm_load_options.distributed")?.map(distributed_backend).transpose()?,
        moe_split: opt_c_str(o.moe_split, "gm_load_options.moe_split")?
            .map(|v| MoeSplit::parse(v).ok_or_else(|| invalid(format!("gm_load_options.moe_split is '{v}' (expected columns or experts)"))))
            .transpose()?,
        max_batch: (o.max_batch != 0).then_some(o.max_batch),
        prefix_cache_bytes: (o.prefix_cache_bytes != 0).then_some(o.prefix_cache_bytes),
        replicas: (o.replicas != 0).then_some(o.replicas),
    };
    let blas_gemv = switch(o.blas_gemv, "blas_gemv")?;
    Ok(LoadSettings { engine, memory_limit: o.memory_limit, cache_limit: o.cache_limit, blas_threads: o.blas_threads as usize, blas_gemv })
}

/// A `gm_load_options.distributed` value: a backend MLX knows, or "off".
fn distributed_backend(name: &str) -> Result<String> {
    if name == "off" || crate::mlx::distributed::BACKENDS.contains(&name) {
        Ok(name.to_string())
    } else {
        Err(invalid(format!("gm_load_options.distributed is '{name}' (expected off, {})", crate::mlx::distributed::BACKENDS.join(", "))))
    }
}

/// An additive bias on one token's logit (`-INFINITY` bans the token).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_logit_bias {
    pub token: u32,
    pub bias: f32,
}

/// How to generate (`gm_generate_start`, `gm_chat_start`, `gm_batch_generate`).
/// Zero-initialise, set `struct_size = sizeof(gm_generate_options)`, then set
/// what you need: every 0 / NULL field means its default. Pointers are read
/// during the call only.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_generate_options {
    /// `sizeof(gm_generate_options)` as the caller was compiled with.
    pub struct_size: usize,
    /// Most tokens to generate; 0 = 256.
    pub max_tokens: usize,
    /// Softmax temperature; 0 = greedy (arg-max).
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Nucleus sampling mass in (0, 1]; 0 = off (1.0).
    pub top_p: f32,
    /// Min-p filter in [0, 1]; 0 = off.
    pub min_p: f32,
    /// Repetition penalty (> 0); 0 = off (1.0).
    pub repetition_penalty: f32,
    /// Tokens the repetition penalty looks back over; 0 = 20.
    pub repetition_context_size: usize,
    /// OpenAI-style presence penalty; 0 = off.
    pub presence_penalty: f32,
    /// OpenAI-style frequency penalty; 0 = off.
    pub frequency_penalty: f32,
    /// PRNG seed, used when `has_seed` is true (else seeded from the clock).
    pub seed: u64,
    pub has_seed: bool,
    /// Report each token's log-probability in `gm_token.logprob`.
    pub logprobs: bool,
    /// Also report this many most likely alternatives (needs `logprobs`).
    pub top_logprobs: usize,
    /// Strings that end generation (not part of the output); `n_stop` of them.
    pub stop: *const *const c_char,
    pub n_stop: usize,
    /// Keep generating past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Prompt tokens evaluated per prefill step; 0 = 512.
    pub prefill_chunk: usize,
    /// Logit biases; `n_logit_bias` of them.
    pub logit_bias: *const gm_logit_bias,
    pub n_logit_bias: usize,
    /// Chat only: a JSON object of extra chat-template variables, e.g.
    /// `{"enable_thinking": false}`; NULL = none.
    pub chat_template_args: *const c_char,
    // Structured output and tools (callers built before they were added get the defaults).
    /// What the output must be, as JSON (docs/sampling.md): `{"json_schema": {...}}`,
    /// `"json_object"`, `{"regex": "..."}`, `{"lark": "..."}` or
    /// `{"choice": ["a", "b"]}`; NULL = unconstrained. A schema or grammar the
    /// engine cannot support fails the start with an error naming it.
    pub constraint: *const c_char,
    /// Chat only: a JSON array of tool definitions (OpenAI's
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`),
    /// passed to the chat template as `tools`; the reply's tool calls then come
    /// back parsed in `gm_token.tool_calls`. NULL = no tools.
    pub tools: *const c_char,
    /// Chat only: `"auto"` (NULL: the model decides), `"none"` (the tools are not
    /// shown), `"required"` (a call of one of the tools, forced by a grammar) or
    /// a function to call, as OpenAI writes it:
    /// `{"type": "function", "function": {"name": "get_weather"}}`.
    pub tool_choice: *const c_char,
}

impl SizedStruct for gm_generate_options {
    const NAME: &'static str = "gm_generate_options";
    // The first release ended after `chat_template_args`.
    const MIN_SIZE: usize = std::mem::offset_of!(gm_generate_options, constraint);
}

pub(crate) struct GenerateSettings {
    pub opts: GenerateOptions,
    pub template_args: serde_json::Map<String, serde_json::Value>,
    /// `tools`, when given.
    pub tools: Option<Vec<serde_json::Value>>,
    pub tool_choice: ToolChoice,
}

impl GenerateSettings {
    /// Refuses tools where no chat template is rendered (`what` is the entry point).
    pub fn without_tools(&self, what: &str) -> Result<()> {
        if self.tools.is_some() || self.tool_choice != ToolChoice::Auto {
            return Err(invalid(format!("gm_generate_options.tools / tool_choice need a chat (gm_chat_start); {what} renders no template")));
        }
        Ok(())
    }
}

/// `gm_generate_options.constraint`: a `Constraint` in its JSON form.
fn constraint(text: &str) -> Result<Constraint> {
    let c: Constraint = serde_json::from_str(text).map_err(|e| {
        invalid(format!(
            "gm_generate_options.constraint is not a constraint ({e}); expected {{\"json_schema\": {{...}}}}, \"json_object\", {{\"regex\": \"...\"}}, {{\"lark\": \"...\"}} or {{\"choice\": [...]}}"
        ))
    })?;
    c.validate().map_err(|e| match e {
        crate::Error::InvalidArgument(m) => invalid(format!("gm_generate_options.{m}")),
        other => other,
    })?;
    Ok(c)
}

/// `gm_generate_options.tools`: a JSON array of objects.
fn tools(text: &str) -> Result<Vec<serde_json::Value>> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Array(a)) if a.iter().all(serde_json::Value::is_object) => Ok(a),
        Ok(_) => Err(invalid("gm_generate_options.tools must be a JSON array of tool objects")),
        Err(e) => Err(invalid(format!("gm_generate_options.tools is not JSON: {e}"))),
    }
}

/// `gm_generate_options.tool_choice`: a keyword or OpenAI's named-function object.
fn tool_choice(text: &str) -> Result<ToolChoice> {
    match text.trim() {
        "auto" => return Ok(ToolChoice::Auto),
        "none" => return Ok(ToolChoice::None),
        "required" => return Ok(ToolChoice::Required),
        _ => {}
    }
    let bad = || {
        invalid(format!("gm_generate_options.tool_choice is {text:?}; expected \"auto\", \"none\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": \"...\"}}}}"))
    };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
    match v.pointer("/function/name").or_else(|| v.get("name")).and_then(serde_json::Value::as_str) {
        Some(name) if !name.is_empty() => Ok(ToolChoice::Function(name.to_string())),
        _ => Err(bad()),
    }
}

pub(crate) fn generate_settings(ptr: *const gm_generate_options) -> Result<GenerateSettings> {
    let Some(o) = read_opts(ptr)? else {
        return Ok(GenerateSettings { opts: GenerateOptions::default(), template_args: Default::default(), tools: None, tool_choice: ToolChoice::Auto });
    };
    let d = GenerateOptions::default();
    let s = SamplerConfig::default();
    let or = |v: usize, def: usize| if v == 0 { def } else { v };
    let orf = |v: f32, def: f32| if v == 0.0 { def } else { v };
    let stop = c_strs(o.stop, o.n_stop, "gm_generate_options.stop")?.into_iter().map(String::from).collect();
    let logit_bias = c_slice(o.logit_bias, o.n_logit_bias, "gm_generate_options.logit_bias")?.iter().map(|b| (b.token, b.bias)).collect();
    let sampler = SamplerConfig {
        temperature: o.temperature,
        top_k: o.top_k,
        top_p: orf(o.top_p, s.top_p),
        min_p: o.min_p,
        min_tokens_to_keep: s.min_tokens_to_keep,
        repetition_penalty: orf(o.repetition_penalty, s.repetition_penalty),
        repetition_context_size: or(o.repetition_context_size, s.repetition_context_size),
        presence_penalty: o.presence_penalty,
        frequency_penalty: o.frequency_penalty,
        logit_bias,
        seed: if o.has_seed { Some(o.seed) } else { None },
        logprobs: o.logprobs,
        top_logprobs: o.top_logprobs,
        constraint: opt_c_str(o.constraint, "gm_generate_options.constraint")?.map(constraint).transpose()?,
    };
    sampler.validate()?;
    let template_args = match opt_c_str(o.chat_template_args, "gm_generate_options.chat_template_args")? {
        None => Default::default(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => return Err(invalid("gm_generate_options.chat_template_args must be a JSON object")),
            Err(e) => return Err(invalid(format!("gm_generate_options.chat_template_args is not JSON: {e}"))),
        },
    };
    let opts = GenerateOptions {
        max_tokens: or(o.max_tokens, d.max_tokens),
        sampler,
        stop,
        ignore_eos: o.ignore_eos,
        prefill_chunk: or(o.prefill_chunk, d.prefill_chunk),
    };
    let tools = opt_c_str(o.tools, "gm_generate_options.tools")?.map(tools).transpose()?;
    let tool_choice = opt_c_str(o.tool_choice, "gm_generate_options.tool_choice")?.map(tool_choice).transpose()?.unwrap_or_default();
    if tools.is_none() && matches!(tool_choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return Err(invalid("gm_generate_options.tool_choice asks for a call but gm_generate_options.tools is NULL"));
    }
    Ok(GenerateSettings { opts, template_args, tools, tool_choice })
}

/// How to classify (`gm_classify`). Zero-initialise, set
/// `struct_size = sizeof(gm_classify_options)`; every 0 / NULL field means
/// its default. Pointers are read during the call only.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_classify_options {
    /// `sizeof(gm_classify_options)` as the caller was compiled with.
    pub struct_size: usize,
    /// Restrict the answer to these labels (each by its first token; labels
    /// must start with different tokens); their probabilities are
    /// renormalised over the set. NULL / 0 = the whole vocabulary.
    pub labels: *const *const c_char,
    pub n_labels: usize,
    /// Report the log-probability of each answer (over the whole vocabulary).
    pub logprobs: bool,
    /// Return each prompt's full last-position logits (float32, vocab-sized).
    pub logits: bool,
    /// At most this many prompts per batch; 0 = sized from `memory_budget`.
    pub batch_size: usize,
    /// Bytes a batch may use for activations and KV; 0 = 1 GiB.
    pub memory_budget: usize,
    /// Evaluate every prompt in full even when they share a prefix.
    pub no_shared_prefix: bool,
}

impl SizedStruct for gm_classify_options {
    const NAME: &'static str = "gm_classify_options";
}

pub(crate) fn classify_settings(ptr: *const gm_classify_options) -> Result<ClassifyOptions> {
    let Some(o) = read_opts(ptr)? else { return Ok(ClassifyOptions::default()) };
    let labels = if o.n_labels == 0 && o.labels.is_null() {
        None
    } else {
        if o.n_labels == 0 {
            return Err(invalid("gm_classify_options.labels is set but n_labels is 0"));
        }
        Some(c_strs(o.labels, o.n_labels, "gm_classify_options.labels")?.into_iter().map(String::from).collect())
    };
    Ok(ClassifyOptions {
        labels,
        logprobs: o.logprobs,
        return_logits: o.logits,
        batch_size: if o.batch_size == 0 { None } else { Some(o.batch_size) },
        memory_budget: if o.memory_budget == 0 { None } else { Some(o.memory_budget) },
        no_shared_prefix: o.no_shared_prefix,
    })
}

/// One chat message. Both strings are read during the call only.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_message {
    /// "system", "user", "assistant" (or any role the model's template knows).
    pub role: *const c_char,
    pub content: *const c_char,
}

pub(crate) fn messages(ptr: *const gm_message, n: usize) -> Result<Vec<crate::text::ChatMessage>> {
    if n == 0 {
        return Err(invalid("a chat needs at least one message"));
    }
    c_slice(ptr, n, "messages")?
        .iter()
        .enumerate()
        .map(|(i, m)| Ok(crate::text::ChatMessage::new(c_str(m.role, &format!("messages[{i}].role"))?, c_str(m.content, &format!("messages[{i}].content"))?)))
        .collect()
}

/// Chat messages as a JSON array of message objects (`role`, `content`, and
/// whatever else the template reads: `tool_calls`, `tool_call_id`, `name`, ...).
pub(crate) fn messages_json(ptr: *const c_char) -> Result<Vec<crate::text::ChatMessage>> {
    let text = c_str(ptr, "messages_json")?;
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(format!("messages_json is not JSON: {e}")))?;
    let serde_json::Value::Array(items) = v else { return Err(invalid("messages_json must be a JSON array of message objects")) };
    if items.is_empty() {
        return Err(invalid("a chat needs at least one message"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if !m.get("role").is_some_and(serde_json::Value::is_string) {
                return Err(invalid(format!("messages_json[{i}] has no \"role\" string")));
            }
            let mut m = m;
            object_arguments(&mut m, i)?;
            crate::text::ChatMessage::from_json(m).map_err(|_| invalid(format!("messages_json[{i}] is not a JSON object")))
        })
        .collect()
}

/// Templates read a call's `arguments` as an object; OpenAI sends them as a JSON
/// string, which becomes the object here (as the server does).
fn object_arguments(m: &mut serde_json::Value, i: usize) -> Result<()> {
    let Some(calls) = m.get_mut("tool_calls").and_then(serde_json::Value::as_array_mut) else { return Ok(()) };
    for (j, c) in calls.iter_mut().enumerate() {
        if let Some(args) = c.pointer_mut("/function/arguments") {
            if let serde_json::Value::String(text) = args {
                *args = serde_json::from_str(text)
                    .map_err(|e| invalid(format!("messages_json[{i}].tool_calls[{j}].function.arguments is a string but not JSON: {e}")))?;
            }
        }
    }
    Ok(())
}
