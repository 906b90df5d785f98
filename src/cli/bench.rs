//! `gomlx bench`: load seconds, time to first token and prefill tok/s (a
//! `--prefill-tokens` prompt), decode tok/s (`--decode-tokens` greedy tokens),
//! classify prompts/s (`--classify-prompts` prompts of about `--prompt-tokens`
//! tokens, without and with a shared `--prefix-tokens` instruction prefix) and
//! peak MLX memory.
//!
//! Every repetition runs in a fresh process (`gomlx bench --worker`), so load
//! time and peak memory are those of a cold engine; the model files are read
//! once beforehand, untimed, so that every repetition of every side finds them
//! in the page cache. With `--compare mlx-lm` each repetition also runs
//! `scripts/bench_mlx_lm.py` (the project venv's mlx-lm) on the same files —
//! for a .gguf, on the directory `gomlx convert --keep-quant` makes of it (the
//! same quantised arrays, float32 scales) — the sides taking turns at going
//! first. `--gomlx` names the gomlx configurations to run against the same
//! mlx-lm runs (the CPU trades memory for speed: see `Variant`). Both sides get
//! the same token ids (built here from the model's tokenizer) and do the same
//! steps in the same order; the report holds medians and the ratio gomlx /
//! mlx-lm. What each side times exactly is written in scripts/bench_mlx_lm.py
//! and BENCHMARKS.md. `--lock FILE` holds an exclusive lock on FILE around each
//! measured process, so that a machine shared through that lock runs nothing
//! else meanwhile but can run other work between repetitions.

use super::{bar, check_model_path, out, runtime, usage, CliResult, DeviceArg, DtypeArg, ModelArgs, WeightsArg};
use gomlx::engine::{ClassifyOptions, Engine, GenerateOptions};
use gomlx::mlx::{self, memory, Dtype};
use gomlx::models::convert::{self, Mode, Plan};
use gomlx::sample::{Constraint, SamplerConfig};
use gomlx::text::Tokenizer;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Also measure this reference on the same files (only "mlx-lm").
    #[arg(long, value_parser = ["mlx-lm"])]
    pub compare: Option<String>,
    /// gomlx configurations to measure, each against the same mlx-lm runs:
    /// auto (the flags given, else the CPU policy), widened, stored, native
    /// (mlx-lm's own compute dtype and weights).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    pub gomlx: Vec<Variant>,
    /// Repetitions (each side, each in a fresh process); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Append rows to this Markdown file's table (default BENCHMARKS.md when given without a value).
    #[arg(long, num_args = 0..=1, default_missing_value = "BENCHMARKS.md", value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Name of the model in the report (default: the file or directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// Prompt length of the prefill / time-to-first-token measurement.
    #[arg(long, default_value_t = 512)]
    pub prefill_tokens: usize,
    /// Greedy tokens of the decode measurement.
    #[arg(long, default_value_t = 128)]
    pub decode_tokens: usize,
    /// Prompts of the classify measurement.
    #[arg(long, default_value_t = 64)]
    pub classify_prompts: usize,
    /// Mean length of a classify prompt (lengths vary by ±4).
    #[arg(long, default_value_t = 24)]
    pub prompt_tokens: usize,
    /// Classify prompt lengths vary by ± this many tokens around --prompt-tokens.
    #[arg(long, default_value_t = 4)]
    pub prompt_spread: usize,
    /// Length of the instruction prefix shared by the prompts of the second classify run.
    #[arg(long, default_value_t = 64)]
    pub prefix_tokens: usize,
    /// Measure load and classify only (no prefill/decode runs), e.g. for large classify workloads.
    #[arg(long)]
    pub classify_only: bool,
    /// Time the prefill request and each classify run cold, without first running them once untimed (both sides).
    #[arg(long)]
    pub no_warmup: bool,
    /// The directory mlx-lm loads (default: the model directory, or for a .gguf
    /// its `convert --keep-quant` directory under .cache/bench-models/converted/).
    #[arg(long, value_name = "DIR")]
    pub mlx_model: Option<PathBuf>,
    /// Python with mlx-lm (default: the project venv's, `$GOMLX_VENV` or .venv).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Hold an exclusive lock on this file around each measured process.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Internal: run one gomlx repetition of this workload file and print JSON.
    #[arg(long, hide = true, value_name = "FILE")]
    pub worker: Option<PathBuf>,
    /// Write the workload (token ids of every step) to FILE and exit: with
    /// `--worker FILE` one repetition can then be profiled on its own.
    #[arg(long, value_name = "FILE")]
    pub write_workload: Option<PathBuf>,
    /// Also decode under this JSON Schema (a file or the schema itself) with the
    /// decode prompt and token budget: constrained tok/s, its ratio to free
    /// decode and the host's mask time per token (issue 22's overhead figure).
    #[arg(long, value_name = "FILE|JSON")]
    pub json_schema: Option<String>,
    /// Concurrent streams instead of the single-request table: each level (e.g.
    /// 1,4,16,64) starts that many streams of --decode-tokens tokens at once.
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    pub streams: Option<Vec<usize>>,
    /// With --streams: classify calls of this many prompts run beside the
    /// 16-stream level; the streams' worst inter-token gap is reported.
    #[arg(long, value_name = "N")]
    pub mixed_classify: Option<usize>,
}

/// A gomlx configuration. On the CPU, bf16 and quantised checkpoints either
/// run widened to float32 at load (fastest, 2-7x the memory) or with the
/// weights kept as stored and widened per use (the checkpoint's memory);
/// mlx-lm computes in the checkpoint's dtype with MLX's own bf16/quantised
/// kernels, which `native` reproduces to compare the engines alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// The flags given (--dtype, --weights), else the CPU policy's choice.
    Auto,
    /// Weights widened to float32 at load.
    Widened,
    /// Weights as the checkpoint stores them, float32 compute.
    Stored,
    /// mlx-lm's compute dtype and weights: bf16 checkpoints in bf16,
    /// quantised ones kept quantised in their scales' dtype.
    Native,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Auto => "auto",
            Variant::Widened => "widened",
            Variant::Stored => "stored",
            Variant::Native => "native",
        }
    }
}

// ---------------------------------------------------------------------------
// The workload: token ids both sides run.

const TEXT: &str = "The lighthouse stood at the edge of the northern cliffs, where the wind \
came in from the sea and the gulls circled above the rocks. Every evening the keeper climbed \
the narrow stairs, trimmed the wick, polished the great lens and watched the ships pass far \
out on the grey water. In the winter the storms were long and the nights were longer, and the \
keeper kept a journal of every vessel, every change of weather and every sound the old tower \
made as it settled against the gales. ";

const INSTRUCTION: &str = "You are a careful assistant that reads short customer reviews of \
products bought online and answers with exactly one word that gives the sentiment of the \
review: positive, negative or neutral. Read the whole review before you answer, ignore \
spelling mistakes, and do not explain your answer. ";

const ADJ: [&str; 8] = ["blue", "heavy", "small", "wooden", "cheap", "shiny", "folding", "electric"];
const NOUN: [&str; 8] = ["kettle", "lamp", "chair", "backpack", "keyboard", "blender", "tent", "scarf"];
const VERDICT: [&str; 8] = [
    "works better than I hoped",
    "broke after two days of use",
    "is fine for the price I paid",
    "smells strange and feels flimsy",
    "is exactly what the photos showed",
    "arrived late but works well enough",
    "is the best purchase of my year",
    "does not do what the page promised",
];

fn repeat_to(tok: &Tokenizer, text: &str, n: usize, specials: bool) -> gomlx::Result<Vec<u32>> {
    let mut reps = 1;
    loop {
        let ids = tok.encode(&text.repeat(reps), specials)?;
        if ids.len() >= n {
            return Ok(ids[..n].to_vec());
        }
        reps *= 2;
        if reps > 1 << 16 {
            return Err(gomlx::Error::InvalidArgument("the tokenizer cannot make a long enough prompt".into()));
        }
    }
}

/// Prompts start with their number, so without the instruction they share at most
/// the BOS token.
fn build_workload(tok: &Tokenizer, a: &Args, schema: Option<&Value>) -> gomlx::Result<Value> {
    let bos: Vec<u32> = if tok.specials().add_bos { tok.bos_id().into_iter().collect() } else { Vec::new() };
    let prefill = repeat_to(tok, TEXT, a.prefill_tokens, true)?;
    let decode_prompt = tok.encode("Once upon a time, in a small village by the sea, there lived", true)?;
    let prefix = repeat_to(tok, INSTRUCTION, a.prefix_tokens, false)?;
    let mut plain = Vec::new();
    let mut prefixed = Vec::new();
    for i in 0..a.classify_prompts {
        let sentence = format!(
            "{}) The {} {} arrived on a {} and it {}. {} Sentiment:",
            i + 1,
            ADJ[i % 8],
            NOUN[(i / 8) % 8],
            ["Monday", "Friday", "rainy day", "holiday"][i % 4],
            VERDICT[(i * 3) % 8],
            TEXT
        );
        let body = tok.encode(&sentence, false)?;
        let len = (a.prompt_tokens + i % (2 * a.prompt_spread + 1)).saturating_sub(a.prompt_spread).max(2);
        let body = &body[..len.saturating_sub(bos.len()).clamp(1, body.len())];
        plain.push([bos.as_slice(), body].concat());
        prefixed.push([bos.as_slice(), &prefix, body].concat());
    }
    Ok(json!({
        "prefill": prefill,
        "decode_prompt": decode_prompt,
        "decode_tokens": a.decode_tokens,
        "generate": !a.classify_only,
        // Prefill and classify once untimed first: steady-state throughput, without
        // one-time kernel compilation and cuDNN plan building for new shapes (both sides).
        "warmup": !a.no_warmup,
        // Rows per forward on the mlx-lm side: gomlx's own cap per batch.
        "classify_batch": 512,
        "classify": plain,
        "classify_prefixed": prefixed,
        "json_schema": schema,
    }))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect()).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// One gomlx repetition (in its own process).

/// The process's peak resident set (Linux `VmHWM`), for the report next to MLX's own count.
fn max_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb << 10)
}

fn worker(a: &Args, path: &Path) -> CliResult {
    let text = std::fs::read_to_string(path).map_err(|e| runtime(format!("{}: {e}", path.display())))?;
    let w: Value = serde_json::from_str(&text).map_err(|e| runtime(format!("{}: {e}", path.display())))?;
    if a.model.engine.is_follower() {
        // A split model: this rank runs the steps rank 0's worker sends; rank 0 measures.
        super::follow(&a.model.model, &a.model.engine_options()?)?;
        return out("{}\n");
    }
    let mut o = Map::new();
    memory::reset_peak()?;
    let t = Instant::now();
    let engine = Engine::load(&a.model.model, &a.model.engine_options()?)?;
    o.insert("load_s".into(), json!(t.elapsed().as_secs_f64()));
    // MLX's peak after each step, to tell where it is reached. Classify resets
    // the peak for its own metrics, so the run's peak is the largest of these.
    let mut steps = Map::new();
    steps.insert("load".into(), json!(memory::peak()?));

    if w["generate"].as_bool().unwrap_or(true) {
        generate_steps(&engine, &w, &mut o, &mut steps)?;
    }

    for (key, name) in [("classify", "classify_prompts_s"), ("classify_prefixed", "classify_prefixed_prompts_s")] {
        let prompts: Vec<Vec<u32>> = w[key].as_array().map(|a| a.iter().map(ids).collect()).unwrap_or_default();
        let n = prompts.len();
        if w["warmup"].as_bool().unwrap_or(false) {
            engine.classify_tokens(prompts.clone(), None, &ClassifyOptions::default())?;
        }
        let t = Instant::now();
        let (results, _) = engine.classify_tokens(prompts, None, &ClassifyOptions::default())?;
        o.insert(name.into(), json!(n as f64 / t.elapsed().as_secs_f64()));
        o.insert(format!("{key}_ids"), json!(results.iter().map(|r| r.token).collect::<Vec<_>>()));
        steps.insert(key.into(), json!(memory::peak()?));
    }
    let peak = steps.values().filter_map(Value::as_u64).max().unwrap_or(0);
    o.insert("peak_after".into(), Value::Object(steps));
    o.insert("peak_memory_bytes".into(), json!(peak));
    o.insert("max_rss_bytes".into(), json!(max_rss()));
    let info = engine.info();
    o.insert("weight_bytes".into(), json!(info.weight_bytes));
    o.insert("ranks".into(), json!(info.ranks));
    o.insert("dtype".into(), json!(info.dtype));
    o.insert("weights".into(), json!(weights_label(&info.weights_dtype, info.quant_bits.filter(|_| !info.dequantized))));
    out(&format!("{}\n", Value::Object(o)))
}

/// Time to first token and prefill rate (a long prompt, one token), then decode rate.
fn generate_steps(engine: &Engine, w: &Value, o: &mut Map<String, Value>, steps: &mut Map<String, Value>) -> CliResult {
    let prompt = ids(&w["prefill"]);
    let opts = GenerateOptions { max_tokens: 1, ignore_eos: true, ..Default::default() };
    let first_token = || -> gomlx::Result<f64> {
        let t = Instant::now();
        let mut g = engine.generate_tokens(prompt.clone(), &opts)?;
        g.next().ok_or_else(|| gomlx::Error::Engine("prefill produced no token".into()))??;
        let s = t.elapsed().as_secs_f64();
        g.for_each(drop);
        Ok(s)
    };
    // With warm-up the first request (one-time kernel compilation and GPU
    // start-up) is reported apart, and TTFT/prefill are a second one's.
    if w["warmup"].as_bool().unwrap_or(false) {
        o.insert("ttft_cold_s".into(), json!(first_token()?));
    }
    let ttft = first_token()?;
    o.insert("ttft_s".into(), json!(ttft));
    o.insert("prefill_tok_s".into(), json!(prompt.len() as f64 / ttft));
    steps.insert("prefill".into(), json!(memory::peak()?));

    let n = w["decode_tokens"].as_u64().unwrap_or(128) as usize;
    let opts = GenerateOptions { max_tokens: n, ignore_eos: true, ..Default::default() };
    let mut g = engine.generate_tokens(ids(&w["decode_prompt"]), &opts)?;
    let mut times = Vec::new();
    let mut tokens = Vec::new();
    for t in g.by_ref() {
        tokens.push(t?.id);
        times.push(Instant::now());
    }
    if let Some(m) = g.metrics() {
        // The engine's own split of a decode step (graph build / queue / wait), per token.
        let per = |s: f64| 1e3 * s / tokens.len().saturating_sub(1).max(1) as f64;
        o.insert(
            "decode_profile_ms".into(),
            json!({"step": per(m.decode_s), "build": per(m.decode_build_s), "queue": per(m.decode_queue_s), "wait": per(m.decode_wait_s)}),
        );
    }
    let rate = if times.len() > 1 { (times.len() - 1) as f64 / (times[times.len() - 1] - times[0]).as_secs_f64() } else { 0.0 };
    o.insert("decode_tokens".into(), json!(tokens.len()));
    o.insert("decode_tok_s".into(), json!(rate));
    o.insert("decode_ids".into(), json!(tokens));
    steps.insert("decode".into(), json!(memory::peak()?));
    if let Some(schema) = w.get("json_schema").filter(|s| !s.is_null()) {
        constrained_decode(engine, w, schema, rate, o)?;
    }
    Ok(())
}

/// The decode measurement again under a JSON Schema: the same prompt, budget and
/// greedy sampler, the grammar's mask computed on the host each step. The
/// grammar may end the output before the budget (reported as its token count).
fn constrained_decode(engine: &Engine, w: &Value, schema: &Value, free_rate: f64, o: &mut Map<String, Value>) -> CliResult {
    let n = w["decode_tokens"].as_u64().unwrap_or(128) as usize;
    let sampler = SamplerConfig { constraint: Some(Constraint::JsonSchema(schema.clone())), ..SamplerConfig::default() };
    let opts = GenerateOptions { max_tokens: n, ignore_eos: true, sampler, ..Default::default() };
    let mut g = engine.generate_tokens(ids(&w["decode_prompt"]), &opts)?;
    let mut times = Vec::new();
    let mut tokens = Vec::new();
    for t in g.by_ref() {
        tokens.push(t?.id);
        times.push(Instant::now());
    }
    let rate = if times.len() > 1 { (times.len() - 1) as f64 / (times[times.len() - 1] - times[0]).as_secs_f64() } else { 0.0 };
    let mask_ms = g.metrics().filter(|m| m.constraint_masks > 0).map(|m| 1e3 * m.constraint_mask_s / m.constraint_masks as f64);
    o.insert("constrained_decode_tok_s".into(), json!(rate));
    o.insert("constrained_decode_tokens".into(), json!(tokens.len()));
    o.insert("constrained_text".into(), json!(engine.tokenizer().map(|t| t.decode(&tokens, true)).transpose()?));
    o.insert("mask_ms_per_token".into(), json!(mask_ms));
    // Free over constrained rate: 1.05 means a constrained token takes 5 % longer.
    o.insert("constrained_step_ratio".into(), json!(if rate > 0.0 { free_rate / rate } else { f64::NAN }));
    Ok(())
}

/// "bfloat16", or "4-bit (bfloat16 scales)" for kept quantisation.
fn weights_label(dtype: &str, bits: Option<i32>) -> String {
    match bits {
        Some(b) => format!("{b}-bit ({dtype} scales)"),
        None => dtype.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The coordinator.

/// (key, label)
const METRICS: [(&str, &str); 7] = [
    ("load_s", "load s"),
    ("ttft_s", "TTFT s"),
    ("prefill_tok_s", "prefill tok/s"),
    ("decode_tok_s", "decode tok/s"),
    ("classify_prompts_s", "classify prompts/s"),
    ("classify_prefixed_prompts_s", "classify shared-prefix prompts/s"),
    ("peak_memory_bytes", "peak memory MiB"),
];

/// The `--json-schema` measurement's figures (gomlx only; not in the Markdown table).
const CONSTRAINED: [(&str, &str); 4] = [
    ("constrained_decode_tok_s", "JSON Schema decode tok/s"),
    ("constrained_step_ratio", "JSON Schema / free step time"),
    ("mask_ms_per_token", "mask ms/token (host)"),
    ("constrained_decode_tokens", "JSON Schema tokens"),
];

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(super) fn repo_file(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The project venv's Python: `$GOMLX_VENV` (as scripts/setup and build.rs use it), else .venv.
pub(super) fn venv_python() -> PathBuf {
    match std::env::var_os("GOMLX_VENV") {
        Some(v) => PathBuf::from(v).join("bin/python"),
        None => repo_file(".venv/bin/python"),
    }
}

/// Holds an exclusive lock on `path` while alive (none without a path).
struct Lock(#[allow(dead_code)] Option<std::fs::File>);

fn lock(path: Option<&Path>) -> CliResult<Lock> {
    let Some(p) = path else { return Ok(Lock(None)) };
    let f = std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(|e| runtime(format!("{}: {e}", p.display())))?;
    f.lock().map_err(|e| runtime(format!("cannot lock {}: {e}", p.display())))?;
    Ok(Lock(Some(f)))
}

fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// (busy, of which niced) CPU seconds of the whole machine so far (Linux `/proc/stat`; busy includes steal).
fn machine_cpu() -> Option<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<f64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...; USER_HZ = 100 on Linux.
    let busy = v.iter().take(8).sum::<f64>() - v.get(3)? - v.get(4)?;
    Some((busy / 100.0, v.get(1).copied().unwrap_or(0.0) / 100.0))
}

/// This process's nice level (`/proc/self/stat` field 19); its children share it.
fn own_nice() -> i64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    s.rfind(')').and_then(|i| s[i + 2..].split_whitespace().nth(16)?.parse().ok()).unwrap_or(0)
}

/// CPU seconds of this process's waited-for children (`/proc/self/stat` cutime + cstime).
fn children_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 16 and 17 of stat(5), counted from 3 after the command name.
    Some((f.get(13)?.parse::<f64>().ok()? + f.get(14)?.parse::<f64>().ok()?) / 100.0)
}

/// Share of one core that others (and the hypervisor, as steal) used while a
/// measured process ran above which the repetition is run again.
const CONTAMINATED: f64 = 0.15;

/// Runs a measurement process and reads its JSON line. The machine's CPU use
/// outside that process during the run is recorded (`other_cpu_share`: CPU
/// seconds used by anything else, steal included, per second of the run; of it
/// `niced_cpu_share` at a positive nice level); a run that shared the machine
/// beyond `CONTAMINATED` (and beyond all but the run's ~2 cores of the machine)
/// is repeated, up to three times, keeping the least
/// disturbed. Others' niced work does not count toward that when the bench
/// itself runs at nice 0: the scheduler gives it only the cycles the measured
/// process leaves idle (a nice-19 process gets ~1.5% of a core against a
/// nice-0 one), which on this backend is mostly the second core while MLX's
/// single worker thread runs.
fn run_json(mut make: impl FnMut() -> Command, what: &str, lock_path: Option<&Path>, attempts: usize) -> CliResult<Value> {
    let _held = lock(lock_path)?;
    let mut best: Option<Value> = None;
    for attempt in 0..attempts {
        // The 1-minute load average when the measurement starts (with the lock held).
        let load = loadavg();
        let (m0, c0, t0) = (machine_cpu(), children_cpu(), Instant::now());
        let o = make().output().map_err(|e| runtime(format!("cannot run {what}: {e}")))?;
        let wall = t0.elapsed().as_secs_f64();
        let (m1, c1) = (machine_cpu(), children_cpu());
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
            return Err(runtime(format!("{what} failed ({}): {last}", o.status)));
        }
        let text = String::from_utf8_lossy(&o.stdout);
        let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
        let mut v: Value = serde_json::from_str(line).map_err(|e| runtime(format!("{what}: unreadable result ({e})")))?;
        let other = match (m0, m1, c0, c1) {
            (Some((b0, _)), Some((b1, _)), Some(c0), Some(c1)) => Some(((b1 - b0) - (c1 - c0)).max(0.0) / wall.max(1e-3)),
            _ => None,
        };
        let niced = match (m0, m1) {
            (Some((_, n0)), Some((_, n1))) if own_nice() == 0 => (n1 - n0).max(0.0) / wall.max(1e-3),
            _ => 0.0,
        };
        v["loadavg_at_start"] = json!(load);
        v["other_cpu_share"] = json!(other);
        v["niced_cpu_share"] = json!(niced);
        v["attempt"] = json!(attempt + 1);
        let share = (other.unwrap_or(0.0) - niced).max(0.0);
        let counted = |b: &Value| (b["other_cpu_share"].as_f64().unwrap_or(f64::INFINITY) - b["niced_cpu_share"].as_f64().unwrap_or(0.0)).max(0.0);
        let better = best.as_ref().is_none_or(|b| share < counted(b));
        if better {
            best = Some(v);
        }
        // Others' work contends only where it leaves the run fewer than its ~2 cores.
        if share <= CONTAMINATED || share <= cores() as f64 - 2.0 || attempt + 1 == attempts {
            break;
        }
        eprintln!("gomlx bench: {what} shared the CPU ({:.0}% of a core used by others); again", share * 100.0);
        std::thread::sleep(std::time::Duration::from_secs(20));
    }
    Ok(best.unwrap())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Reads every file under `path` once (untimed), so that the first repetition
/// does not pay for the disk and later ones not: every side then loads from
/// the page cache.
fn warm_page_cache(path: &Path) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
            if e.path().is_file() {
                warm_page_cache(&e.path());
            }
        }
    } else if let Ok(mut f) = std::fs::File::open(path) {
        let _ = std::io::copy(&mut f, &mut std::io::sink());
    }
}

/// The GPU's name and driver as nvidia-smi reports them, e.g. "NVIDIA H100 80GB HBM3, driver 580.159.04".
fn nvidia_gpu() -> Option<String> {
    let out = Command::new("nvidia-smi").args(["--query-gpu=name,driver_version", "--format=csv,noheader", "--id=0"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (name, driver) = text.trim().split_once(", ")?;
    out.status.success().then(|| format!("{name}, driver {driver}"))
}

pub(super) fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .or_else(|| {
            Command::new("sysctl").args(["-n", "machdep.cpu.brand_string"]).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let gpu = match mlx::gpu_available() {
        false => "none".to_string(),
        true if cfg!(target_os = "macos") => "Apple GPU (Metal)".to_string(),
        true => nvidia_gpu().unwrap_or_else(|| "NVIDIA GPU (CUDA)".into()),
    };
    let backend = if mlx::default_device() == mlx::DeviceKind::Gpu {
        if cfg!(target_os = "macos") {
            "metal"
        } else {
            "cuda"
        }
    } else {
        "cpu"
    };
    let blas = if cfg!(target_os = "linux") { json!(mlx::blas::info().summary()) } else { Value::Null };
    json!({"cpu": cpu, "cores": cores, "gpu": gpu, "backend": backend, "mlx": mlx::version(), "os": std::env::consts::OS, "gomlx_blas": blas})
}

/// The directory mlx-lm loads for the model.
pub(super) fn mlx_dir(a: &Args) -> CliResult<PathBuf> {
    if let Some(d) = &a.mlx_model {
        return Ok(d.clone());
    }
    let m = &a.model.model;
    if m.is_dir() {
        return Ok(m.clone());
    }
    // A .gguf: its arrays as gomlx loads them (quantised blocks kept, compute dtype f32
    // unless --dtype says otherwise).
    let dtype = a.model.engine.dtype.map(DtypeArg::dtype).unwrap_or(Dtype::F32);
    let stem = m.file_stem().unwrap_or_default().to_string_lossy();
    let dir = repo_file(".cache").join("bench-models/converted").join(format!("{stem}-keep-{}", dtype.name()));
    if !dir.join("config.json").is_file() || !dir.join("model.safetensors").is_file() {
        let _held = lock(a.lock.as_deref())?;
        convert::convert(m, &dir, Plan { mode: Mode::Keep, dtype }, &mut |_, _| true)?;
    }
    Ok(dir)
}

/// The dtype mlx-lm computes in on `dir` (its config's `torch_dtype`/`dtype`),
/// float32 for a .gguf (what its converted directory holds).
fn checkpoint_dtype(dir: &Path) -> DtypeArg {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let name = v.get("torch_dtype").or_else(|| v.get("dtype")).and_then(Value::as_str).unwrap_or("float32");
    match name {
        "bfloat16" => DtypeArg::Bf16,
        "float16" => DtypeArg::F16,
        _ => DtypeArg::F32,
    }
}

fn fmt(key: &str, v: f64) -> String {
    match key {
        "peak_memory_bytes" => format!("{:.0}", v / (1u64 << 20) as f64),
        "load_s" | "ttft_s" | "mask_ms_per_token" | "constrained_step_ratio" => format!("{v:.3}"),
        _ if v >= 100.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

fn dtype_flag(d: DtypeArg) -> &'static str {
    match d {
        DtypeArg::Bf16 => "bf16",
        DtypeArg::F16 => "f16",
        DtypeArg::F32 => "f32",
    }
}

pub fn run(a: Args) -> CliResult {
    if let Some(w) = &a.worker {
        return worker(&a, w);
    }
    if let Some(levels) = &a.streams {
        return super::bench_streams::run(&a, levels);
    }
    if a.reps == 0 || a.prefill_tokens == 0 || a.decode_tokens < 2 || a.classify_prompts == 0 || a.prompt_tokens < 4 || a.gomlx.is_empty() {
        return Err(usage("--reps, --prefill-tokens, --classify-prompts must be >= 1, --decode-tokens >= 2, --prompt-tokens >= 4, --gomlx not empty"));
    }
    check_model_path(&a.model.model)?;
    // Split (docs/distributed.md): every rank runs the same processes in the same order
    // (their collectives must line up), so none is run again; rank 0 reports.
    let load_options = a.model.engine_options()?.load_options();
    let split = gomlx::engine::distributed_rank(&load_options).is_some();
    let attempts = if split { 1 } else { 3 };
    if a.model.engine.is_follower() {
        super::silence_stdout()?;
    }
    // The workload, from the model's own tokenizer.
    let tok = if a.model.model.is_file() {
        gomlx::models::gguf::tokenizer(&gomlx::models::gguf::GgufModel::open(&a.model.model)?)?
    } else {
        Tokenizer::from_dir(&a.model.model)?
    };
    let schema = a.json_schema.as_deref().map(super::read_schema).transpose()?;
    if let Some(s) = &schema {
        // An unsupported schema fails here, before any measured process starts.
        gomlx::sample::Grammars::new(&tok, tok.vocab_size())?.compile(&Constraint::JsonSchema(s.clone()))?;
    }
    let workload = build_workload(&tok, &a, schema.as_ref())?;
    if let Some(p) = &a.write_workload {
        return std::fs::write(p, workload.to_string()).map_err(|e| runtime(format!("{}: {e}", p.display())));
    }
    let tmp = std::env::temp_dir().join(format!("gomlx-bench-{}.json", std::process::id()));
    std::fs::write(&tmp, workload.to_string()).map_err(|e| runtime(format!("{}: {e}", tmp.display())))?;

    let compare = a.compare.is_some();
    let mlx_model = if compare { Some(mlx_dir(&a)?) } else { None };
    let python = a.python.clone().unwrap_or_else(venv_python);
    let script = repo_file("scripts/bench_mlx_lm.py");
    let exe = std::env::current_exe().map_err(|e| runtime(format!("cannot find the gomlx binary: {e}")))?;
    warm_page_cache(&a.model.model);
    if let Some(d) = &mlx_model {
        warm_page_cache(d);
    }
    let native_dtype = if a.model.model.is_dir() { checkpoint_dtype(mlx_model.as_deref().unwrap_or(&a.model.model)) } else { DtypeArg::F32 };

    let gomlx_cmd = |v: Variant| {
        let mut c = Command::new(&exe);
        c.arg("bench").arg("--model").arg(&a.model.model).arg("--worker").arg(&tmp);
        let (mut dtype, mut weights) = (a.model.engine.dtype, a.model.engine.weights);
        match v {
            Variant::Auto => {}
            Variant::Widened => weights = Some(WeightsArg::Widened),
            Variant::Stored => weights = Some(WeightsArg::Stored),
            Variant::Native => {
                weights = Some(WeightsArg::Stored);
                dtype = Some(native_dtype);
            }
        }
        if let Some(d) = dtype {
            c.arg("--dtype").arg(dtype_flag(d));
        }
        if let Some(w) = weights {
            c.arg("--weights").arg(if w == WeightsArg::Widened { "widened" } else { "stored" });
        }
        if let Some(d) = a.model.engine.device {
            c.arg("--device").arg(match d {
                DeviceArg::Cpu => "cpu",
                DeviceArg::Gpu => "gpu",
            });
        }
        if let Some(n) = a.model.engine.context_length {
            c.arg("--context-length").arg(n.to_string());
        }
        if let Some(d) = &a.model.engine.adapter_path {
            c.arg("--adapter-path").arg(d);
        }
        if let Some(d) = a.model.engine.distributed_name() {
            c.arg("--distributed").arg(d);
        }
        c
    };
    let mlx_cmd = || {
        let mut c = Command::new(&python);
        c.arg(&script).arg(mlx_model.as_ref().unwrap()).arg(&tmp);
        if let Some(d) = &a.model.engine.adapter_path {
            c.arg(d);
        }
        // mlx-lm runs with MLX's own defaults, not the CUDA graph size gomlx picks for itself.
        if mlx::ops_per_graph_is_gomlx_default() {
            c.env_remove("MLX_MAX_OPS_PER_BUFFER");
        }
        // Split: mlx-lm's own tensor parallel (sharded_load) over the same ranks.
        if let Some(backend) = gomlx::models::tuning::distributed(&load_options).filter(|_| split) {
            c.env("GOMLX_BENCH_SHARDED", backend);
        }
        c
    };

    // The sides of one repetition: each gomlx variant, then mlx-lm; every
    // repetition starts one further along, so no side is always first.
    let mut variants = a.gomlx.clone();
    variants.dedup();
    let sides: Vec<Option<Variant>> = variants.iter().copied().map(Some).chain(compare.then_some(None)).collect();
    let pb = bar((a.reps * sides.len()) as u64, "bench".into());
    let mut ours: Vec<Vec<Value>> = vec![Vec::new(); variants.len()];
    let mut theirs: Vec<Value> = Vec::new();
    for rep in 0..a.reps {
        for k in 0..sides.len() {
            let side = sides[(rep + k) % sides.len()];
            let what = side.map_or("mlx-lm", Variant::name);
            if let Some(pb) = &pb {
                pb.set_message(format!("rep {}/{} {what}", rep + 1, a.reps));
            }
            match side {
                Some(v) => {
                    let i = variants.iter().position(|&x| x == v).unwrap();
                    ours[i].push(run_json(|| gomlx_cmd(v), &format!("the gomlx run ({what})"), a.lock.as_deref(), attempts)?);
                }
                None => theirs.push(run_json(mlx_cmd, "the mlx-lm run", a.lock.as_deref(), attempts)?),
            }
            if let Some(pb) = &pb {
                pb.inc(1);
            }
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let _ = std::fs::remove_file(&tmp);
    if a.model.engine.is_follower() {
        return Ok(());
    }

    let med = |runs: &[Value], k: &str| median(runs.iter().filter_map(|r| r[k].as_f64()).collect());
    // How many leading ids two runs share.
    let agree = |ours: &[Value], k: &str| -> Option<Value> {
        let (g, r) = (ids(&ours.first()?[k]), ids(&theirs.first()?[k]));
        let same = if k == "decode_ids" { g.iter().zip(&r).take_while(|(x, y)| x == y).count() } else { g.iter().zip(&r).filter(|(x, y)| x == y).count() };
        Some(json!({"same": same, "of": g.len()}))
    };
    let mut rows = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let mut metrics = Map::new();
        for (k, _) in METRICS {
            let g = med(&ours[i], k);
            let mut m = json!({"gomlx": g});
            if compare {
                let r = med(&theirs, k);
                m["mlx_lm"] = json!(r);
                m["ratio"] = json!(g / r);
            }
            metrics.insert(k.into(), m);
        }
        if schema.is_some() {
            for (k, _) in CONSTRAINED {
                metrics.insert(k.into(), json!({"gomlx": med(&ours[i], k)}));
            }
        }
        let first = &ours[i][0];
        rows.push(json!({
            "variant": v.name(),
            // Ranks the model was split over (1: whole).
            "ranks": first["ranks"],
            "dtype": first["dtype"],
            "weights": first["weights"],
            "weight_bytes": first["weight_bytes"],
            "metrics": metrics,
            // Decode: the leading ids both sides share (they part where rounding
            // first changes an arg-max); classify: how many answers agree.
            "greedy_agreement": if compare { json!({"decode": agree(&ours[i], "decode_ids"), "classify": agree(&ours[i], "classify_ids")}) } else { Value::Null },
        }));
    }
    let name = a.name.clone().unwrap_or_else(|| {
        let model = a.model.model.file_name().unwrap_or_default().to_string_lossy().into_owned();
        match &a.model.engine.adapter_path {
            Some(d) => format!("{model} + adapter {}", d.file_name().unwrap_or_default().to_string_lossy()),
            None => model,
        }
    });
    let mlx_side = theirs.first().map(|r| json!({"dtype": r["dtype"], "weights": r["weights"], "weight_bytes": r["weight_bytes"], "blas": r["blas"]}));
    let loads: Vec<f64> = ours.iter().flatten().chain(&theirs).filter_map(|r| r["loadavg_at_start"].as_f64()).collect();
    let others: Vec<f64> = ours.iter().flatten().chain(&theirs).filter_map(|r| r["other_cpu_share"].as_f64()).collect();
    let report = json!({
        "model": name,
        "path": a.model.model,
        "adapter": a.model.engine.adapter_path,
        "mlx_lm_model": mlx_model,
        "machine": machine(),
        "date": chrono::Local::now().format("%Y-%m-%d").to_string(),
        "reps": a.reps,
        "workload": {"prefill_tokens": a.prefill_tokens, "decode_tokens": a.decode_tokens, "classify_prompts": a.classify_prompts,
                     "prompt_tokens": a.prompt_tokens, "prefix_tokens": a.prefix_tokens},
        "loadavg_at_start": {"min": loads.iter().copied().fold(f64::INFINITY, f64::min), "max": loads.iter().copied().fold(0.0, f64::max)},
        // CPU used by anything else during the measured processes, per second of them (0.15 = 15% of one core).
        "other_cpu_share": {"median": median(others.clone()), "max": others.iter().copied().fold(0.0, f64::max)},
        "gomlx": rows,
        "mlx_lm": mlx_side,
        // The first configuration's, for readers of one-row reports.
        "metrics": rows[0]["metrics"],
        "greedy_agreement": rows[0]["greedy_agreement"],
        "runs": {"gomlx": variants.iter().zip(&ours).map(|(v, r)| (v.name().to_string(), json!(r))).collect::<Map<_, _>>(), "mlx_lm": theirs},
    });

    if a.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&report).unwrap()))?;
    } else {
        let mut s = format!("{name}, {} reps, medians\n", a.reps);
        if let Some(m) = &report["mlx_lm"].as_object() {
            s.push_str(&format!(
                "mlx-lm: {} weights, {} compute, {:.0} MiB\n",
                m["weights"].as_str().unwrap_or("?"),
                m["dtype"].as_str().unwrap_or("?"),
                m["weight_bytes"].as_f64().unwrap_or(0.0) / (1u64 << 20) as f64
            ));
        }
        for r in &rows {
            s.push_str(&format!(
                "gomlx {}: {} weights, {} compute, {:.0} MiB\n",
                r["variant"].as_str().unwrap_or(""),
                r["weights"].as_str().unwrap_or("?"),
                r["dtype"].as_str().unwrap_or("?"),
                r["weight_bytes"].as_f64().unwrap_or(0.0) / (1u64 << 20) as f64
            ));
            s.push_str(&format!("{:<34} {:>12}", "", "gomlx"));
            if compare {
                s.push_str(&format!(" {:>12} {:>8}", "mlx-lm", "ratio"));
            }
            s.push('\n');
            for (k, label) in METRICS {
                let m = &r["metrics"][k];
                s.push_str(&format!("{label:<34} {:>12}", fmt(k, m["gomlx"].as_f64().unwrap_or(f64::NAN))));
                if compare {
                    s.push_str(&format!(" {:>12} {:>8.2}", fmt(k, m["mlx_lm"].as_f64().unwrap_or(f64::NAN)), m["ratio"].as_f64().unwrap_or(f64::NAN)));
                }
                s.push('\n');
            }
            if schema.is_some() {
                for (k, label) in CONSTRAINED {
                    s.push_str(&format!("{label:<34} {:>12}\n", fmt(k, r["metrics"][k]["gomlx"].as_f64().unwrap_or(f64::NAN))));
                }
            }
            if compare {
                let d = &r["greedy_agreement"]["decode"];
                s.push_str(&format!("greedy decode tokens identical: {}/{}\n", d["same"], d["of"]));
            }
        }
        out(&s)?;
    }
    if let Some(md) = &a.markdown {
        append_markdown(md, &report, compare)?;
    }
    Ok(())
}

const MD_HEADER: &str = "| date | machine | MLX backend | model | gomlx weights → compute | mlx-lm weights → compute | workload P/D/C | reps | load s | TTFT s | prefill tok/s | decode tok/s | classify p/s | classify shared-prefix p/s | peak MiB | greedy same (decode, classify) |\n\
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/// Appends one row per gomlx configuration (cells "gomlx / mlx-lm (ratio)") to
/// the table at the end of `path`.
fn append_markdown(path: &Path, r: &Value, compare: bool) -> CliResult {
    let m = &r["machine"];
    let w = &r["workload"];
    let mut rows = String::new();
    for v in r["gomlx"].as_array().into_iter().flatten() {
        let theirs = if compare {
            format!("{} → {}", r["mlx_lm"]["weights"].as_str().unwrap_or("?"), r["mlx_lm"]["dtype"].as_str().unwrap_or("?"))
        } else {
            "–".into()
        };
        let mut row = format!(
            "| {} | {}, {} cores, GPU: {} | {} (MLX {}) | {} | {} → {} ({}) | {} | {}/{}/{}×{}+{} | {} |",
            r["date"].as_str().unwrap_or(""),
            m["cpu"].as_str().unwrap_or(""),
            m["cores"],
            m["gpu"].as_str().unwrap_or(""),
            m["backend"].as_str().unwrap_or(""),
            m["mlx"].as_str().unwrap_or(""),
            match v["ranks"].as_u64() {
                Some(n) if n > 1 => format!("{}, split over {n} ranks", r["model"].as_str().unwrap_or("")),
                _ => r["model"].as_str().unwrap_or("").to_string(),
            },
            v["weights"].as_str().unwrap_or(""),
            v["dtype"].as_str().unwrap_or(""),
            v["variant"].as_str().unwrap_or(""),
            theirs,
            w["prefill_tokens"],
            w["decode_tokens"],
            w["classify_prompts"],
            w["prompt_tokens"],
            w["prefix_tokens"],
            r["reps"],
        );
        for (k, _) in METRICS {
            let x = &v["metrics"][k];
            // A step the workload skipped (--classify-only) has no value on either side.
            if x["gomlx"].is_null() {
                row.push_str(" – |");
                continue;
            }
            let g = fmt(k, x["gomlx"].as_f64().unwrap_or(f64::NAN));
            if compare {
                row.push_str(&format!(" {g} / {} (**{:.2}**) |", fmt(k, x["mlx_lm"].as_f64().unwrap_or(f64::NAN)), x["ratio"].as_f64().unwrap_or(f64::NAN)));
            } else {
                row.push_str(&format!(" {g} |"));
            }
        }
        let (d, c) = (&v["greedy_agreement"]["decode"], &v["greedy_agreement"]["classify"]);
        row.push_str(&if compare { format!(" {}/{}, {}/{} |\n", d["same"], d["of"], c["same"], c["of"]) } else { " – |\n".to_string() });
        rows.push_str(&row);
    }
    // Rows go at the end of the table with this header, wherever it is in the
    // file (BENCHMARKS.md has sections after it); a file without one gets the
    // table appended.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let header = MD_HEADER.lines().next().unwrap();
    let text = match text.find(header) {
        Some(at) => {
            let mut end = at;
            for line in text[at..].split_inclusive('\n') {
                if !line.starts_with('|') {
                    break;
                }
                end += line.len();
            }
            let mut t = text[..end].to_string();
            if !t.ends_with('\n') {
                t.push('\n');
            }
            t + &rows + &text[end..]
        }
        None => {
            let mut t = text;
            if !t.is_empty() && !t.ends_with("\n\n") {
                t.push_str(if t.ends_with('\n') { "\n" } else { "\n\n" });
            }
            t + MD_HEADER + &rows
        }
    };
    std::fs::write(path, text).map_err(|e| runtime(format!("{}: {e}", path.display())))
}
