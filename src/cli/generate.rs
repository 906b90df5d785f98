//! `gomlx generate`: one prompt, streamed to stdout (flags after mlx_lm.generate).

use super::{gib, load_engine, out, read_stdin, runtime, usage, CliResult, ModelArgs, SamplingArgs};
use gomlx::engine::{Engine, GenerateOptions, Generation, Metrics};
use gomlx::text::{ChatMessage, ChatOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt; "-" or absent reads it from stdin.
    #[arg(long, short = 'p')]
    pub prompt: Option<String>,
    /// A system message (with the chat template).
    #[arg(long, alias = "system-prompt")]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, short = 'm', default_value_t = 256)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Use the prompt as it is, without the model's chat template.
    #[arg(long)]
    pub ignore_chat_template: bool,
    /// A string that ends generation (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Print prompt/generation speed, time to first token and peak memory (stderr).
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// Starts a generation the way `generate` does: the chat template when the
/// model has one (and it is not ignored), else the raw prompt.
pub fn start(engine: &Engine, prompt: &str, system: Option<&str>, ignore_template: bool, opts: &GenerateOptions) -> CliResult<Generation> {
    let tok = engine.tokenizer().ok_or_else(|| runtime(format!("{}: the model has no tokenizer", engine.path().display())))?;
    if !ignore_template && tok.chat_template().is_some() {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(ChatMessage::system(s));
        }
        messages.push(ChatMessage::user(prompt));
        return Ok(engine.chat(&messages, opts, &ChatOptions::default(), None)?);
    }
    if system.is_some() && !ignore_template {
        eprintln!("gomlx: warning: the model has no chat template; --system is ignored");
    }
    Ok(engine.generate(prompt, opts)?)
}

/// Streams a generation's text to stdout; returns the text and the metrics.
pub fn stream(g: &mut Generation) -> CliResult<(String, Metrics)> {
    let mut text = String::new();
    for t in g.by_ref() {
        let t = t?;
        out(&t.text)?;
        text.push_str(&t.text);
    }
    let tail = g.tail().to_string();
    out(&tail)?;
    text.push_str(&tail);
    let m = g.metrics().cloned().unwrap_or_default();
    Ok((text, m))
}

pub fn print_metrics(m: &Metrics, reason: Option<&str>) {
    eprintln!("==========");
    let cached = m.prompt_tokens - m.prompt_tokens_evaluated;
    let note = if cached > 0 { format!(" ({cached} reused from the cache)") } else { String::new() };
    eprintln!("Prompt: {} tokens{note}, {:.3} tokens-per-sec", m.prompt_tokens, m.prefill_tokens_per_s);
    eprintln!("Generation: {} tokens, {:.3} tokens-per-sec", m.generated_tokens, m.decode_tokens_per_s);
    eprintln!("Time to first token: {:.3} s", m.time_to_first_token_s);
    if m.generated_tokens > 1 {
        // Where a decode step's time went (see engine::Metrics).
        let per = |s: f64| 1e3 * s / (m.generated_tokens - 1) as f64;
        let other = m.decode_s - m.decode_build_s - m.decode_queue_s - m.decode_wait_s;
        eprintln!(
            "Decode step: {:.3} ms (graph build {:.3}, queue {:.3}, wait {:.3}, other {:.3})",
            per(m.decode_s),
            per(m.decode_build_s),
            per(m.decode_queue_s),
            per(m.decode_wait_s),
            per(other)
        );
    }
    if m.constraint_masks > 0 {
        eprintln!(
            "Constraint masks: {}, {:.3} ms each (host, beside the device's forward)",
            m.constraint_masks,
            1e3 * m.constraint_mask_s / m.constraint_masks as f64
        );
    }
    eprintln!("Peak memory: {:.3} GB", gib(m.peak_memory_bytes));
    if let Some(r) = reason {
        eprintln!("Finish reason: {r}");
    }
}

pub fn run(a: Args) -> CliResult {
    let sampler = a.sampling.config()?;
    if a.max_tokens == 0 {
        return Err(usage("--max-tokens must be at least 1"));
    }
    let prompt = match a.prompt.as_deref() {
        Some("-") | None => read_stdin("prompt")?,
        Some(p) => p.to_string(),
    };
    if prompt.is_empty() {
        return Err(usage("the prompt is empty"));
    }
    let (engine, load_s) = load_engine(&a.model)?;
    let opts = GenerateOptions { max_tokens: a.max_tokens, sampler, stop: a.stop.clone(), ..Default::default() };
    let mut g = start(&engine, &prompt, a.system.as_deref(), a.ignore_chat_template, &opts)?;
    let (text, m) = stream(&mut g)?;
    if !text.ends_with('\n') {
        out("\n")?;
    }
    if a.verbose {
        print_metrics(&m, g.finish_reason().map(|r| r.as_str()));
        eprintln!("Load: {load_s:.3} s ({})", engine.device().name());
    }
    Ok(())
}
