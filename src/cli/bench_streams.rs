//! `gomlx bench --streams 1,4,16,64`: N concurrent streams on one model —
//! aggregate tokens/s, time to first token and inter-token latency (p50/p99)
//! per level, side by side with mlx-lm's `BatchGenerator` on the same files
//! and token ids (`--compare mlx-lm`, scripts/bench_streams_mlx_lm.py). With
//! `--mixed-classify N`, classify calls of N prompts run beside the streams and
//! the streams' worst inter-token gap is reported. Results: BENCHMARKS.md.

use super::bench::{machine, mlx_dir, repo_file, venv_python, Args};
use super::{out, runtime, CliResult};
use gomlx::engine::{ClassifyOptions, Engine, EngineOptions, GenerateOptions};
use gomlx::text::Tokenizer;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// The timing of one level on one side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Level {
    pub streams: usize,
    pub tokens: usize,
    pub wall_s: f64,
    pub ttft: Vec<f64>,
    pub gaps: Vec<f64>,
    pub worst_gap_s: f64,
    pub classify_calls: usize,
    /// MLX's peak memory during the level and its active memory after it (bytes).
    pub peak_bytes: usize,
    pub active_after_bytes: usize,
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

impl Level {
    fn json(&self) -> Value {
        json!({
            "streams": self.streams, "tokens": self.tokens, "wall_s": self.wall_s,
            "tokens_per_s": self.tokens as f64 / self.wall_s,
            "ttft_p50_s": pct(&self.ttft, 0.5), "ttft_p99_s": pct(&self.ttft, 0.99),
            "itl_p50_s": pct(&self.gaps, 0.5), "itl_p99_s": pct(&self.gaps, 0.99),
            "worst_gap_s": self.worst_gap_s, "classify_calls": self.classify_calls,
            "peak_bytes": self.peak_bytes, "active_after_bytes": self.active_after_bytes,
        })
    }
}

/// Distinct prompts of about `len` tokens, one per stream.
fn prompts(tok: &Tokenizer, n: usize, len: usize) -> gomlx::Result<Vec<Vec<u32>>> {
    const TOPICS: [&str; 8] = ["a lighthouse", "a river", "a mountain town", "a library", "a market", "a storm", "a garden", "a train"];
    (0..n)
        .map(|i| {
            let text = format!("Story {}: write about {} and the people who lived near it, in the old days when", i + 1, TOPICS[i % 8]);
            let mut ids = tok.encode(&text, true)?;
            while ids.len() < len {
                let more = tok.encode(" and the days were long", false)?;
                ids.extend(more);
            }
            ids.truncate(len.max(4));
            Ok(ids)
        })
        .collect()
}

/// N streams started together on `engine`; with `classify`, classify calls of
/// that many prompts run on another thread until the streams end.
fn run_level(engine: &Engine, prompts: &[Vec<u32>], max_tokens: usize, classify: Option<&[Vec<u32>]>) -> gomlx::Result<Level> {
    let n = prompts.len();
    gomlx::mlx::memory::reset_peak()?;
    let barrier = Arc::new(Barrier::new(n + 1));
    let opts = GenerateOptions { max_tokens, ignore_eos: true, ..Default::default() };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let classifier = classify.map(|c| {
        let (engine, c, done) = (engine.clone(), c.to_vec(), done.clone());
        std::thread::spawn(move || -> gomlx::Result<usize> {
            let mut calls = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                engine.classify_tokens(c.clone(), None, &ClassifyOptions::default())?;
                calls += 1;
            }
            Ok(calls)
        })
    });
    let threads: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (engine, p, opts, barrier) = (engine.clone(), p.clone(), opts.clone(), barrier.clone());
            std::thread::spawn(move || -> gomlx::Result<(f64, Vec<f64>)> {
                barrier.wait();
                let t0 = Instant::now();
                let mut times = Vec::with_capacity(max_tokens);
                for t in engine.generate_tokens(p, &opts)? {
                    t?;
                    times.push(t0.elapsed().as_secs_f64());
                }
                let ttft = times.first().copied().unwrap_or(f64::NAN);
                Ok((ttft, times.windows(2).map(|w| w[1] - w[0]).collect()))
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    let mut level = Level { streams: n, ..Default::default() };
    for t in threads {
        let (ttft, gaps) = t.join().map_err(|_| gomlx::Error::Engine("a stream thread panicked".into()))??;
        level.tokens += gaps.len() + 1;
        level.ttft.push(ttft);
        level.worst_gap_s = gaps.iter().copied().fold(level.worst_gap_s, f64::max);
        level.gaps.extend(gaps);
    }
    level.wall_s = t0.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(c) = classifier {
        level.classify_calls = c.join().map_err(|_| gomlx::Error::Engine("the classify thread panicked".into()))??;
    }
    level.peak_bytes = gomlx::mlx::memory::peak()?;
    level.active_after_bytes = gomlx::mlx::memory::active()?;
    Ok(level)
}

pub fn run(a: &Args, levels: &[usize]) -> CliResult {
    if levels.is_empty() || levels.contains(&0) || a.decode_tokens < 2 {
        return Err(super::usage("--streams takes counts >= 1; --decode-tokens must be >= 2"));
    }
    let max = *levels.iter().max().unwrap_or(&1);
    super::check_model_path(&a.model.model)?;
    // Every level's streams fit one batch.
    let mut eo: EngineOptions = a.model.engine_options()?;
    eo.max_batch = Some(eo.max_batch.unwrap_or(0).max(max));
    let engine = Engine::load(&a.model.model, &eo)?;
    let tok = engine.tokenizer().ok_or_else(|| runtime("--streams needs a model with a tokenizer"))?.clone();
    let all = prompts(&tok, max, a.prompt_tokens)?;
    let classify: Option<Vec<Vec<u32>>> = a.mixed_classify.map(|n| (0..n).map(|i| all[i % all.len()][..all[i % all.len()].len().min(24)].to_vec()).collect());
    // Warm-up: kernels and buffers for every batch size on the way up.
    run_level(&engine, &all[..max.min(4)], 4, None)?;
    let baseline = gomlx::mlx::memory::active()?;
    let mut rows = Vec::new();
    for &n in levels {
        let l = run_level(&engine, &all[..n], a.decode_tokens, None)?;
        rows.push(json!({"side": "gomlx", "level": l.json()}));
        // The mixed run beside the 16-stream level (or the largest below it).
        if let Some(c) = classify.as_deref().filter(|_| n == levels.iter().copied().filter(|&x| x <= 16).max().unwrap_or(n)) {
            let mixed = run_level(&engine, &all[..n], a.decode_tokens, Some(c))?;
            rows.push(json!({"side": "gomlx", "mixed_classify": c.len(), "level": mixed.json()}));
        }
    }
    engine.close();
    if a.compare.is_some() {
        let dir = mlx_dir(a)?;
        let tmp = std::env::temp_dir().join(format!("gomlx-streams-{}.json", std::process::id()));
        let workload = json!({"prompts": all, "levels": levels, "max_tokens": a.decode_tokens});
        std::fs::write(&tmp, workload.to_string()).map_err(|e| runtime(format!("{}: {e}", tmp.display())))?;
        let python = a.python.clone().unwrap_or_else(venv_python);
        let o = Command::new(&python)
            .arg(repo_file("scripts/bench_streams_mlx_lm.py"))
            .arg(&dir)
            .arg(&tmp)
            .output()
            .map_err(|e| runtime(format!("{}: {e}", python.display())))?;
        let _ = std::fs::remove_file(&tmp);
        if !o.status.success() {
            return Err(runtime(format!("mlx-lm streams bench failed: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""))));
        }
        let v: Value = serde_json::from_slice(&o.stdout).map_err(|e| runtime(format!("mlx-lm streams bench output: {e}")))?;
        for l in v["levels"].as_array().into_iter().flatten() {
            rows.push(json!({"side": "mlx-lm", "level": l}));
        }
    }
    let report = json!({"machine": machine(), "model": a.model.model, "prompt_tokens": a.prompt_tokens, "max_tokens": a.decode_tokens,
        "active_baseline_bytes": baseline, "rows": rows});
    if let Some(md) = &a.markdown {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(md).map_err(|e| runtime(format!("{}: {e}", md.display())))?;
        writeln!(f, "{}", table(&report)).map_err(|e| runtime(format!("{}: {e}", md.display())))?;
    }
    if a.json {
        return out(&format!("{report}\n"));
    }
    out(&table(&report))
}

/// The report as a Markdown table: one line per side and level, ratios against mlx-lm.
pub fn table(r: &Value) -> String {
    let mut s = format!(
        "{} — {} prompt tokens, {} generated per stream\n\n| side | streams | tok/s | ×1 stream | vs mlx-lm | TTFT p50 / p99 (s) | ITL p50 / p99 (ms) | worst gap (ms) | peak / after (MiB) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        r["model"].as_str().unwrap_or(""),
        r["prompt_tokens"],
        r["max_tokens"]
    );
    let rows = r["rows"].as_array().cloned().unwrap_or_default();
    let rate = |side: &str, n: u64| {
        rows.iter()
            .find(|x| x["side"] == side && x["mixed_classify"].is_null() && x["level"]["streams"].as_u64() == Some(n))
            .and_then(|x| x["level"]["tokens_per_s"].as_f64())
    };
    for x in &rows {
        let l = &x["level"];
        let (side, n) = (x["side"].as_str().unwrap_or(""), l["streams"].as_u64().unwrap_or(0));
        let tps = l["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
        let single = rate(side, 1).map_or("–".to_string(), |one| format!("{:.1}", tps / one));
        let versus = match (side, rate("mlx-lm", n)) {
            ("gomlx", Some(m)) if x["mixed_classify"].is_null() => format!("{:.2}", tps / m),
            _ => "–".into(),
        };
        let name = if x["mixed_classify"].is_null() { side.to_string() } else { format!("{side} + classify {}", x["mixed_classify"]) };
        let f = |k: &str| l[k].as_f64().unwrap_or(f64::NAN);
        s += &format!(
            "| {name} | {n} | {tps:.1} | {single} | {versus} | {:.3} / {:.3} | {:.1} / {:.1} | {:.0} | {:.0} / {:.0} |\n",
            f("ttft_p50_s"),
            f("ttft_p99_s"),
            1e3 * f("itl_p50_s"),
            1e3 * f("itl_p99_s"),
            1e3 * f("worst_gap_s"),
            f("peak_bytes") / 1048576.0,
            f("active_after_bytes") / 1048576.0
        );
    }
    s
}
