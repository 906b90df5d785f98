//! `gomlx bench`: load seconds, time to first token and prefill tok/s (a
//! `--prefill-tokens` prompt), decode tok/s (`--decode-tokens` greedy tokens),
//! classify prompts/s (`--classify-prompts` prompts of about `--prompt-tokens`
//! tokens, without and with a shared `--prefix-tokens` instruction prefix) and
//! peak MLX memory.
//!
//! Every repetition runs in a fresh process (`gomlx bench --worker`), so load
//! time and peak memory are those of a cold engine. With `--compare mlx-lm` each
//! repetition also runs `scripts/bench_mlx_lm.py` (the project venv's mlx-lm) on
//! the same files — for a .gguf, on the directory `gomlx convert --keep-quant`
//! makes of it (the same quantised arrays, in gomlx's compute dtype) — the two
//! sides alternating which goes first. Both sides get the same token ids (built
//! here from the model's tokenizer) and do the same steps in the same order; the
//! report holds medians and the ratio gomlx / mlx-lm. What each side does exactly
//! is written in scripts/bench_mlx_lm.py and BENCHMARKS.md.

use super::convert::{self, Mode, Plan};
use super::{bar, check_model_path, out, runtime, usage, CliResult, DeviceArg, DtypeArg, ModelArgs};
use gomlx::engine::{ClassifyOptions, Engine, GenerateOptions};
use gomlx::mlx::{self, memory, Dtype};
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
    /// Repetitions (each side, each in a fresh process); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Append a row to this Markdown file's table (default BENCHMARKS.md when given without a value).
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
    /// Time each classify run cold, without first running it once untimed (both sides).
    #[arg(long)]
    pub no_warmup: bool,
    /// The directory mlx-lm loads (default: the model directory, or for a .gguf
    /// its `convert --keep-quant` directory under .cache/bench-models/converted/).
    #[arg(long, value_name = "DIR")]
    pub mlx_model: Option<PathBuf>,
    /// Python with mlx-lm (default: the project venv's).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Internal: run one gomlx repetition of this workload file and print JSON.
    #[arg(long, hide = true, value_name = "FILE")]
    pub worker: Option<PathBuf>,
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
fn build_workload(tok: &Tokenizer, a: &Args) -> gomlx::Result<Value> {
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
        // Classify once untimed first: steady-state throughput, without one-time
        // kernel compilation and cuDNN plan building for new shapes (both sides).
        "warmup": !a.no_warmup,
        // Rows per forward on the mlx-lm side: gomlx's own cap per batch.
        "classify_batch": 512,
        "classify": plain,
        "classify_prefixed": prefixed,
    }))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect()).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// One gomlx repetition (in its own process).

fn worker(a: &Args, path: &Path) -> CliResult {
    let text = std::fs::read_to_string(path).map_err(|e| runtime(format!("{}: {e}", path.display())))?;
    let w: Value = serde_json::from_str(&text).map_err(|e| runtime(format!("{}: {e}", path.display())))?;
    let mut o = Map::new();
    memory::reset_peak()?;
    let t = Instant::now();
    let engine = Engine::load(&a.model.model, &a.model.engine_options())?;
    o.insert("load_s".into(), json!(t.elapsed().as_secs_f64()));
    // Peak memory after each step, to tell where it is reached.
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
    o.insert("peak_after".into(), Value::Object(steps));
    o.insert("peak_memory_bytes".into(), json!(memory::peak()?));
    o.insert("weight_bytes".into(), json!(engine.info().weight_bytes));
    o.insert("dtype".into(), json!(engine.info().dtype));
    out(&format!("{}\n", Value::Object(o)))
}

/// Time to first token and prefill rate (a long prompt, one token), then decode rate.
fn generate_steps(engine: &Engine, w: &Value, o: &mut Map<String, Value>, steps: &mut Map<String, Value>) -> CliResult {
    let prompt = ids(&w["prefill"]);
    let opts = GenerateOptions { max_tokens: 1, ignore_eos: true, ..Default::default() };
    let t = Instant::now();
    let mut g = engine.generate_tokens(prompt.clone(), &opts)?;
    g.next().ok_or_else(|| runtime("prefill produced no token"))??;
    let ttft = t.elapsed().as_secs_f64();
    g.for_each(drop);
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
        o.insert("decode_profile_ms".into(), json!({"step": per(m.decode_s), "build": per(m.decode_build_s), "queue": per(m.decode_queue_s), "wait": per(m.decode_wait_s)}));
    }
    let rate = if times.len() > 1 { (times.len() - 1) as f64 / (times[times.len() - 1] - times[0]).as_secs_f64() } else { 0.0 };
    o.insert("decode_tokens".into(), json!(tokens.len()));
    o.insert("decode_tok_s".into(), json!(rate));
    o.insert("decode_ids".into(), json!(tokens));
    steps.insert("decode".into(), json!(memory::peak()?));
    Ok(())
}

// ---------------------------------------------------------------------------
// The coordinator.

/// (key, label, higher is better)
const METRICS: [(&str, &str, bool); 7] = [
    ("load_s", "load s", false),
    ("ttft_s", "TTFT s", false),
    ("prefill_tok_s", "prefill tok/s", true),
    ("decode_tok_s", "decode tok/s", true),
    ("classify_prompts_s", "classify prompts/s", true),
    ("classify_prefixed_prompts_s", "classify shared-prefix prompts/s", true),
    ("peak_memory_bytes", "peak memory MiB", false),
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

fn repo_file(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn run_json(mut cmd: Command, what: &str) -> CliResult<Value> {
    let o = cmd.output().map_err(|e| runtime(format!("cannot run {what}: {e}")))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(runtime(format!("{what} failed ({}): {last}", o.status)));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    serde_json::from_str(line).map_err(|e| runtime(format!("{what}: unreadable result ({e})")))
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .or_else(|| {
            Command::new("sysctl").args(["-n", "machdep.cpu.brand_string"]).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let gpu = if mlx::gpu_available() { if cfg!(target_os = "macos") { "Apple GPU (Metal)" } else { "NVIDIA GPU (CUDA)" } } else { "none" };
    let backend = if mlx::default_device() == mlx::DeviceKind::Gpu { if cfg!(target_os = "macos") { "metal" } else { "cuda" } } else { "cpu" };
    json!({"cpu": cpu, "cores": cores, "gpu": gpu, "backend": backend, "mlx": mlx::version(), "os": std::env::consts::OS})
}

/// The directory mlx-lm loads for the model.
fn mlx_dir(a: &Args) -> CliResult<PathBuf> {
    if let Some(d) = &a.mlx_model {
        return Ok(d.clone());
    }
    let m = &a.model.model;
    if m.is_dir() {
        return Ok(m.clone());
    }
    // A .gguf: its arrays as gomlx loads them (quantised blocks kept, compute dtype f32
    // unless --dtype says otherwise).
    let dtype = a.model.dtype.map(DtypeArg::dtype).unwrap_or(Dtype::F32);
    let stem = m.file_stem().unwrap_or_default().to_string_lossy();
    let dir = repo_file(".cache").join("bench-models/converted").join(format!("{stem}-keep-{}", dtype.name()));
    if !dir.join("config.json").is_file() || !dir.join("model.safetensors").is_file() {
        convert::convert(m, &dir, Plan { mode: Mode::Keep, dtype }, true)?;
    }
    Ok(dir)
}

fn fmt(key: &str, v: f64) -> String {
    match key {
        "peak_memory_bytes" => format!("{:.0}", v / (1u64 << 20) as f64),
        "load_s" | "ttft_s" => format!("{v:.3}"),
        _ if v >= 100.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

pub fn run(a: Args) -> CliResult {
    if let Some(w) = &a.worker {
        return worker(&a, w);
    }
    if a.reps == 0 || a.prefill_tokens == 0 || a.decode_tokens < 2 || a.classify_prompts == 0 || a.prompt_tokens < 4 {
        return Err(usage("--reps, --prefill-tokens, --classify-prompts must be >= 1, --decode-tokens >= 2, --prompt-tokens >= 4"));
    }
    check_model_path(&a.model.model)?;
    // The workload, from the model's own tokenizer.
    let tok = if a.model.model.is_file() {
        gomlx::gguf::tokenizer(&gomlx::gguf::GgufModel::open(&a.model.model)?)?
    } else {
        Tokenizer::from_dir(&a.model.model)?
    };
    let workload = build_workload(&tok, &a)?;
    let tmp = std::env::temp_dir().join(format!("gomlx-bench-{}.json", std::process::id()));
    std::fs::write(&tmp, workload.to_string()).map_err(|e| runtime(format!("{}: {e}", tmp.display())))?;

    let compare = a.compare.is_some();
    let mlx_model = if compare { Some(mlx_dir(&a)?) } else { None };
    let python = a.python.clone().unwrap_or_else(|| repo_file(".venv/bin/python"));
    let script = repo_file("scripts/bench_mlx_lm.py");
    let exe = std::env::current_exe().map_err(|e| runtime(format!("cannot find the gomlx binary: {e}")))?;

    let gomlx_cmd = || {
        let mut c = Command::new(&exe);
        c.arg("bench").arg("--model").arg(&a.model.model).arg("--worker").arg(&tmp);
        if let Some(d) = a.model.dtype {
            c.arg("--dtype").arg(match d {
                DtypeArg::Bf16 => "bf16",
                DtypeArg::F16 => "f16",
                DtypeArg::F32 => "f32",
            });
        }
        if let Some(d) = a.model.device {
            c.arg("--device").arg(match d {
                DeviceArg::Cpu => "cpu",
                DeviceArg::Gpu => "gpu",
            });
        }
        if let Some(d) = &a.model.adapter_path {
            c.arg("--adapter-path").arg(d);
        }
        c
    };
    let mlx_cmd = || {
        let mut c = Command::new(&python);
        c.arg(&script).arg(mlx_model.as_ref().unwrap()).arg(&tmp);
        if let Some(d) = &a.model.adapter_path {
            c.arg(d);
        }
        // mlx-lm runs with MLX's own defaults, not the CUDA graph size gomlx picks for itself.
        if mlx::ops_per_graph_is_gomlx_default() {
            c.env_remove("MLX_MAX_OPS_PER_BUFFER");
        }
        c
    };

    let runs = a.reps * if compare { 2 } else { 1 };
    let pb = bar(runs as u64, "bench".into());
    let mut ours: Vec<Value> = Vec::new();
    let mut theirs: Vec<Value> = Vec::new();
    for rep in 0..a.reps {
        // Alternate which side goes first.
        let order: &[bool] = if !compare { &[true] } else if rep % 2 == 0 { &[true, false] } else { &[false, true] };
        for &is_ours in order {
            if let Some(pb) = &pb {
                pb.set_message(format!("rep {}/{} {}", rep + 1, a.reps, if is_ours { "gomlx" } else { "mlx-lm" }));
            }
            if is_ours {
                ours.push(run_json(gomlx_cmd(), "the gomlx run")?);
            } else {
                theirs.push(run_json(mlx_cmd(), "the mlx-lm run")?);
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

    let med = |runs: &[Value], k: &str| median(runs.iter().filter_map(|r| r[k].as_f64()).collect());
    let mut metrics = Map::new();
    for (k, _, _) in METRICS {
        let g = med(&ours, k);
        let mut m = json!({"gomlx": g});
        if compare {
            let r = med(&theirs, k);
            m["mlx_lm"] = json!(r);
            m["ratio"] = json!(g / r);
        }
        metrics.insert(k.into(), m);
    }
    // Do both sides pick the same greedy tokens? (same arrays, same dtype: they should,
    // up to reduction order.)
    let agree = |k: &str| -> Option<Value> {
        let (g, r) = (ids(&ours[0][k]), ids(&theirs.first()?[k]));
        let same = g.iter().zip(&r).take_while(|(x, y)| x == y).count();
        Some(json!({"same_prefix": same, "of": g.len()}))
    };
    let weight_bytes = ours[0]["weight_bytes"].as_u64().unwrap_or(0);
    let name = a.name.clone().unwrap_or_else(|| {
        let model = a.model.model.file_name().unwrap_or_default().to_string_lossy().into_owned();
        match &a.model.adapter_path {
            Some(d) => format!("{model} + adapter {}", d.file_name().unwrap_or_default().to_string_lossy()),
            None => model,
        }
    });
    let report = json!({
        "model": name,
        "path": a.model.model,
        "adapter": a.model.adapter_path,
        "mlx_lm_model": mlx_model,
        "dtype": ours[0]["dtype"],
        "weight_bytes": weight_bytes,
        "machine": machine(),
        "date": chrono::Local::now().format("%Y-%m-%d").to_string(),
        "reps": a.reps,
        "workload": {"prefill_tokens": a.prefill_tokens, "decode_tokens": a.decode_tokens, "classify_prompts": a.classify_prompts,
                     "prompt_tokens": a.prompt_tokens, "prefix_tokens": a.prefix_tokens},
        "metrics": metrics,
        "greedy_agreement": if compare { json!({"decode": agree("decode_ids"), "classify": agree("classify_ids")}) } else { Value::Null },
        "runs": {"gomlx": ours, "mlx_lm": theirs},
    });

    if a.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&report).unwrap()))?;
    } else {
        let mut s = format!("{name} ({}, {:.0} MiB of weights), {} reps, medians\n", report["dtype"].as_str().unwrap_or("?"), weight_bytes as f64 / (1u64 << 20) as f64, a.reps);
        s.push_str(&format!("{:<34} {:>12}", "", "gomlx"));
        if compare {
            s.push_str(&format!(" {:>12} {:>8}", "mlx-lm", "ratio"));
        }
        s.push('\n');
        for (k, label, _) in METRICS {
            let m = &metrics[k];
            s.push_str(&format!("{label:<34} {:>12}", fmt(k, m["gomlx"].as_f64().unwrap_or(f64::NAN))));
            if compare {
                s.push_str(&format!(" {:>12} {:>8.2}", fmt(k, m["mlx_lm"].as_f64().unwrap_or(f64::NAN)), m["ratio"].as_f64().unwrap_or(f64::NAN)));
            }
            s.push('\n');
        }
        if compare {
            let d = &report["greedy_agreement"]["decode"];
            s.push_str(&format!("greedy decode tokens identical: {}/{}\n", d["same_prefix"], d["of"]));
        }
        out(&s)?;
    }
    if let Some(md) = &a.markdown {
        append_markdown(md, &report, compare)?;
    }
    Ok(())
}

const MD_HEADER: &str = "| date | machine | MLX backend | model | dtype | workload P/D/C | reps | load s | TTFT s | prefill tok/s | decode tok/s | classify p/s | classify shared-prefix p/s | peak MiB | greedy decode same |\n\
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/// Appends one row (cells "gomlx / mlx-lm (ratio)") to the table at the end of `path`.
fn append_markdown(path: &Path, r: &Value, compare: bool) -> CliResult {
    let m = &r["machine"];
    let w = &r["workload"];
    let mut row = format!(
        "| {} | {}, {} cores, GPU: {} | {} (MLX {}) | {} | {} | {}/{}/{}×{}+{} | {} |",
        r["date"].as_str().unwrap_or(""),
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        m["gpu"].as_str().unwrap_or(""),
        m["backend"].as_str().unwrap_or(""),
        m["mlx"].as_str().unwrap_or(""),
        r["model"].as_str().unwrap_or(""),
        r["dtype"].as_str().unwrap_or(""),
        w["prefill_tokens"],
        w["decode_tokens"],
        w["classify_prompts"],
        w["prompt_tokens"],
        w["prefix_tokens"],
        r["reps"],
    );
    for (k, _, _) in METRICS {
        let x = &r["metrics"][k];
        let g = fmt(k, x["gomlx"].as_f64().unwrap_or(f64::NAN));
        if compare {
            row.push_str(&format!(" {g} / {} (**{:.2}**) |", fmt(k, x["mlx_lm"].as_f64().unwrap_or(f64::NAN)), x["ratio"].as_f64().unwrap_or(f64::NAN)));
        } else {
            row.push_str(&format!(" {g} |"));
        }
    }
    let d = &r["greedy_agreement"]["decode"];
    row.push_str(&if compare { format!(" {}/{} |\n", d["same_prefix"], d["of"]) } else { " – |\n".to_string() });
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let mut text = existing.clone();
    if !existing.contains(MD_HEADER.lines().next().unwrap()) {
        if !text.is_empty() && !text.ends_with("\n\n") {
            text.push_str(if text.ends_with('\n') { "\n" } else { "\n\n" });
        }
        text.push_str(MD_HEADER);
    } else if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&row);
    std::fs::write(path, text).map_err(|e| runtime(format!("{}: {e}", path.display())))
}
