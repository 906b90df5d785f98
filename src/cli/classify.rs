//! `gomlx classify`: the next token after each prompt (one per line), from
//! batched prefills with a shared prefix evaluated once. JSON Lines out, one
//! object per non-empty input line, in input order.

use super::{bar, load_engine, out, read_stdin, usage, CliResult, ModelArgs};
use gomlx::engine::{BatchMetrics, ClassifyOptions, ClassifyResult};
use serde_json::{json, Map, Value};
use std::path::PathBuf;

/// Prompts per engine call when a progress bar is shown.
const CHUNK: usize = 256;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// File with one prompt per line ("-" or absent: stdin).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Restrict the answer to these labels (comma-separated; each by its first token).
    #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
    pub labels: Option<Vec<String>>,
    /// Add the log-probability of the chosen token.
    #[arg(long)]
    pub logprobs: bool,
    /// Prompts per batch (default: sized from --memory-budget).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Bytes a batch may use for activations and KV (default 1 GiB).
    #[arg(long)]
    pub memory_budget: Option<usize>,
    /// Evaluate every prompt in full even when they share a prefix.
    #[arg(long)]
    pub no_shared_prefix: bool,
    /// Print throughput and memory (stderr).
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

fn result_json(line: usize, prompt: &str, r: &ClassifyResult, labels: Option<&[String]>) -> Value {
    let mut o = Map::new();
    o.insert("line".into(), json!(line));
    o.insert("prompt".into(), json!(prompt));
    o.insert("token".into(), json!(r.token));
    o.insert("text".into(), json!(r.text));
    if let Some(lp) = r.logprob {
        o.insert("logprob".into(), json!(lp));
    }
    if let (Some(label), Some(probs), Some(names)) = (&r.label, &r.label_probs, labels) {
        o.insert("label".into(), json!(label));
        let p: Map<String, Value> = names.iter().zip(probs).map(|(n, p)| (n.clone(), json!(p))).collect();
        o.insert("label_probs".into(), Value::Object(p));
    }
    Value::Object(o)
}

pub fn run(a: Args) -> CliResult {
    let text = match a.file.as_deref() {
        Some(p) if p.as_os_str() != "-" => std::fs::read_to_string(p).map_err(|e| super::runtime(format!("{}: {e}", p.display())))?,
        _ => read_stdin("prompts")?,
    };
    let labels = a.labels.clone().map(|ls| ls.into_iter().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect::<Vec<_>>());
    if labels.as_ref().is_some_and(|l| l.is_empty()) {
        return Err(usage("--labels is empty"));
    }
    if a.batch_size == Some(0) {
        return Err(usage("--batch-size must be at least 1"));
    }
    // (line number, prompt) of the non-empty lines.
    let prompts: Vec<(usize, &str)> = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l)).collect();
    if prompts.is_empty() {
        return Err(usage("no prompts (one per line)"));
    }
    let (engine, _) = load_engine(&a.model)?;
    let opts = ClassifyOptions {
        labels: labels.clone(),
        logprobs: a.logprobs,
        batch_size: a.batch_size,
        memory_budget: a.memory_budget,
        no_shared_prefix: a.no_shared_prefix,
        ..Default::default()
    };
    let pb = if prompts.len() > CHUNK { bar(prompts.len() as u64, "classify".into()) } else { None };
    let chunk = if pb.is_some() { CHUNK } else { prompts.len() };
    let mut total = BatchMetrics::default();
    for part in prompts.chunks(chunk) {
        let texts: Vec<&str> = part.iter().map(|(_, p)| *p).collect();
        let (results, m) = engine.classify(&texts, &opts)?;
        let mut lines = String::new();
        for ((line, prompt), r) in part.iter().zip(&results) {
            lines.push_str(&result_json(*line, prompt, r, labels.as_deref()).to_string());
            lines.push('\n');
        }
        if let Some(pb) = &pb {
            pb.suspend(|| out(&lines))?;
            pb.inc(part.len() as u64);
        } else {
            out(&lines)?;
        }
        total.prompts += m.prompts;
        total.prompt_tokens += m.prompt_tokens;
        total.shared_prefix_tokens = m.shared_prefix_tokens;
        total.batches += m.batches;
        total.total_s += m.total_s;
        total.peak_memory_bytes = total.peak_memory_bytes.max(m.peak_memory_bytes);
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if a.verbose {
        eprintln!("==========");
        eprintln!(
            "Classified {} prompts ({} tokens, shared prefix {} tokens) in {} batches: {:.3} s, {:.2} prompts-per-sec",
            total.prompts,
            total.prompt_tokens,
            total.shared_prefix_tokens,
            total.batches,
            total.total_s,
            total.prompts as f64 / total.total_s.max(1e-9)
        );
        eprintln!("Peak memory: {:.3} GB", super::gib(total.peak_memory_bytes));
        if engine.replicas() > 1 {
            let jobs: Vec<String> = engine.replica_stats().iter().map(|r| format!("{}: {}", r.index, r.requests)).collect();
            eprintln!("Jobs per replica: {}", jobs.join(", "));
        }
    }
    Ok(())
}
