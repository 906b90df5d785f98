//! `gomlx serve`: the OpenAI- and Ollama-compatible HTTP server with its web
//! chat page (src/server/, docs/server.md).

use super::{check_model_path, usage, CliResult};
use gomlx::server::ServeOptions;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A model to serve: a Hugging Face style directory or a .gguf file (served under its name).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Serve every model found below this directory (directories and .gguf files), each loaded on first use.
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
    /// Require this key as "Authorization: Bearer KEY" (or x-api-key) on the API routes.
    #[arg(long, env = "GOMLX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// How long an idle model stays loaded: e.g. 30s, 5m, 1h; 0 unloads after each request; -1 keeps it for ever.
    #[arg(long, default_value = "5m", allow_hyphen_values = true)]
    pub keep_alive: String,
    /// Most models loaded at once; loading another unloads the least recently used idle one.
    #[arg(long, default_value_t = 1)]
    pub max_loaded_models: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Largest max_tokens a request may ask for (also the default when it asks for none).
    #[arg(long, default_value_t = 4096)]
    pub max_tokens: usize,
    /// Most generations running or waiting; further requests get 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Seconds SIGTERM waits for running requests to finish.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
    /// Load the models before listening instead of on first use.
    #[arg(long)]
    pub preload: bool,
    /// Shut down (draining, as on SIGTERM) when standard input ends: for supervisors and tests.
    #[arg(long)]
    pub stop_on_stdin_eof: bool,
    /// A Jinja chat template (a file) used instead of the models' own, e.g. one
    /// that renders tools for a model whose template does not.
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    #[command(flatten)]
    pub engine: super::EngineArgs,
    /// Most generations decoding in one batch (default: 64 on a GPU, 32 on the CPU).
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Bytes of KV the prefix cache keeps for prompts that share a prefix (K/M/G suffixes; default off).
    #[arg(long, value_name = "BYTES")]
    pub prefix_cache: Option<String>,
}

/// "5m", "30s", "1h", "250ms", a number of seconds; "-1" (any negative): None, for ever.
pub fn parse_duration(s: &str) -> Option<Option<Duration>> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('-') {
        return rest.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse::<f64>().ok().map(|_| None);
    }
    let (num, unit) = s.find(|c: char| c.is_ascii_alphabetic()).map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let x: f64 = num.trim().parse().ok()?;
    let secs = match unit {
        "ms" => x / 1000.0,
        "s" | "" => x,
        "m" => x * 60.0,
        "h" => x * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Some(Duration::from_secs_f64(secs)))
}

pub fn run(a: Args) -> CliResult {
    if a.model.is_none() && a.models_dir.is_none() {
        return Err(usage("give --model PATH (a model directory or a .gguf file) or --models-dir DIR"));
    }
    if let Some(m) = &a.model {
        check_model_path(m)?;
    }
    let keep_alive =
        parse_duration(&a.keep_alive).ok_or_else(|| usage(format!("--keep-alive {}: expected a duration such as 30s, 5m, 1h, 0 or -1", a.keep_alive)))?;
    for (flag, v) in
        [("--max-tokens", a.max_tokens), ("--max-queue", a.max_queue), ("--max-body-bytes", a.max_body_bytes), ("--max-loaded-models", a.max_loaded_models)]
    {
        if v == 0 {
            return Err(usage(format!("{flag} must be at least 1")));
        }
    }
    if a.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(usage("--api-key (or GOMLX_API_KEY) is empty"));
    }
    let mut engine = a.engine.engine_options()?;
    engine.max_batch = a.max_batch;
    if let Some(p) = &a.prefix_cache {
        let bytes = gomlx::models::tuning::parse_bytes(p).ok_or_else(|| usage(format!("--prefix-cache {p}: expected a byte count such as 256M")))?;
        engine.prefix_cache_bytes = Some(bytes as usize);
    }
    let chat_template = match &a.chat_template {
        Some(p) => {
            let text = gomlx::files::read_text(p, gomlx::files::MAX_TEXT_FILE).map_err(|e| usage(format!("--chat-template {}: {e}", p.display())))?;
            Some(gomlx::text::ChatTemplate::new(text).map_err(|e| usage(format!("--chat-template {}: {e}", p.display())))?)
        }
        None => None,
    };
    // Under `gomlx launch`: rank 0 serves one model, loaded before listening and kept
    // (unloading it would end the group's engine); the other ranks follow its steps.
    let distributed = gomlx::engine::distributed_rank(&engine.load_options());
    let (mut keep_alive, mut preload) = (keep_alive, a.preload);
    if let Some(rank) = distributed {
        let Some(model) = a.model.as_deref().filter(|_| a.models_dir.is_none()) else {
            return Err(usage("under gomlx launch, serve one model: give --model PATH (not --models-dir)"));
        };
        if rank > 0 {
            return super::follow(model, &engine);
        }
        keep_alive = None;
        preload = true;
    }
    let opts = ServeOptions {
        model: a.model,
        models_dir: a.models_dir,
        engine,
        host: a.host,
        port: a.port,
        api_key: a.api_key,
        keep_alive,
        max_loaded_models: a.max_loaded_models,
        max_body_bytes: a.max_body_bytes,
        max_tokens_cap: a.max_tokens,
        max_queue: a.max_queue,
        drain_timeout: Duration::from_secs(a.drain_timeout),
        preload,
        stop_on_stdin_eof: a.stop_on_stdin_eof,
        chat_template,
    };
    gomlx::server::serve(opts)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Some(Some(Duration::from_secs(300))));
        assert_eq!(parse_duration("30s"), Some(Some(Duration::from_secs(30))));
        assert_eq!(parse_duration("0"), Some(Some(Duration::ZERO)));
        assert_eq!(parse_duration("-1"), Some(None));
        assert_eq!(parse_duration("250ms"), Some(Some(Duration::from_millis(250))));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("abc"), None);
    }
}
