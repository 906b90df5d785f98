//! `gomlx lora`: LoRA fine-tuning from JSONL with a progress line on stderr and
//! a summary on stdout. Unset flags keep the library's defaults (`TrainConfig`,
//! `LoraConfig`), which are written only there.

use super::{CliError, CliResult, DtypeArg};
use gomlx::train::run::{run as train, RunOptions};
use gomlx::train::{Control, FuseMode, Progress};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Model directory or .gguf file.
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// A directory with train.jsonl (and valid.jsonl), or one JSONL file.
    #[arg(long)]
    pub data: PathBuf,
    /// Training steps [default: 100].
    #[arg(long)]
    pub iters: Option<usize>,
    /// Examples per step [default: 4].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate [default: 1e-5].
    #[arg(long, visible_alias = "learning-rate")]
    pub lr: Option<f32>,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Cosine decay to --min-lr after warm-up.
    #[arg(long)]
    pub cosine: bool,
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f32,
    /// AdamW weight decay [default: 0.01].
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Clip gradients to this global norm.
    #[arg(long)]
    pub grad_clip: Option<f32>,
    /// LoRA rank [default: 8].
    #[arg(long)]
    pub rank: Option<i32>,
    /// LoRA scale [default: 20].
    #[arg(long, conflicts_with = "alpha")]
    pub scale: Option<f32>,
    /// LoRA alpha: scale = alpha / rank.
    #[arg(long)]
    pub alpha: Option<f32>,
    /// LoRA dropout [default: 0].
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Projections: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj [default: q_proj,v_proj].
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// Adapt the last N blocks [default: all].
    #[arg(long)]
    pub num_layers: Option<usize>,
    /// dtype of the adapter matrices [default: float32].
    #[arg(long, value_enum)]
    pub lora_dtype: Option<DtypeArg>,
    /// Compute dtype of the base model [default: the checkpoint's].
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Longest example in tokens [default: 2048].
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Train on completions only.
    #[arg(long)]
    pub mask_prompt: bool,
    /// Recompute activations per block in the backward pass.
    #[arg(long)]
    pub grad_checkpoint: bool,
    /// Seed of the shuffle, dropout and initialisation [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validate every N steps [default: 200].
    #[arg(long)]
    pub val_every: Option<usize>,
    /// Batches per validation; -1 = all [default: 25].
    #[arg(long, allow_hyphen_values = true)]
    pub val_batches: Option<i64>,
    /// Save adapters every N steps [default: 100].
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Where adapters.safetensors goes.
    #[arg(long, default_value = "adapters")]
    pub adapter_path: PathBuf,
    /// Start from saved adapters.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// After training, write the fused model here.
    #[arg(long)]
    pub fuse: Option<PathBuf>,
    /// Fuse into dense weights (quantised models).
    #[arg(long)]
    pub dequantize: bool,
    /// Also write every step as a JSON line (step, loss, tokens, seconds, memory).
    #[arg(long, value_name = "FILE")]
    pub progress_json: Option<PathBuf>,
}

impl Args {
    /// The run these flags describe, over the library's defaults.
    pub fn options(&self) -> RunOptions {
        let mut o = RunOptions::new(&self.model, &self.data);
        set(&mut o.train.iters, self.iters);
        set(&mut o.train.batch_size, self.batch_size);
        set(&mut o.train.lora.rank, self.rank);
        set(&mut o.train.lora.scale, self.scale);
        if let Some(a) = self.alpha {
            o.train.lora.scale = a / o.train.lora.rank as f32;
        }
        set(&mut o.train.lora.dropout, self.dropout);
        set(&mut o.train.lora.targets, self.targets.clone());
        o.train.lora.num_layers = self.num_layers.or(o.train.lora.num_layers);
        set(&mut o.train.lora.dtype, self.lora_dtype.map(DtypeArg::dtype));
        set(&mut o.train.lora.seed, self.seed);
        set(&mut o.train.adamw.weight_decay, self.weight_decay);
        o.train.grad_clip = self.grad_clip.or(o.train.grad_clip);
        set(&mut o.train.max_seq_length, self.max_seq_length);
        o.train.grad_checkpoint |= self.grad_checkpoint;
        set(&mut o.train.seed, self.seed);
        set(&mut o.train.val_every, self.val_every);
        if let Some(n) = self.val_batches {
            o.train.val_batches = usize::try_from(n).ok();
        }
        set(&mut o.train.save_every, self.save_every);
        let lr = self.lr.unwrap_or(o.train.schedule.lr);
        o.train.set_schedule(lr, self.warmup, self.cosine, self.min_lr);
        o.train.adapter_path = Some(self.adapter_path.clone());
        o.data_options.mask_prompt |= self.mask_prompt;
        o.dtype = self.dtype.map(DtypeArg::dtype);
        o.resume_adapter = self.resume.clone();
        o.fuse_to = self.fuse.clone();
        if self.dequantize {
            o.fuse_mode = FuseMode::Dequantize;
        }
        o
    }
}

fn set<T>(field: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *field = v;
    }
}

/// One step as a JSON object (`--progress-json`), for scripts such as scripts/bench-lora.
fn progress_json(p: &Progress) -> serde_json::Value {
    serde_json::json!({
        "step": p.step, "iters": p.iters, "loss": p.loss, "val_loss": p.val_loss, "learning_rate": p.learning_rate,
        "grad_norm": p.grad_norm, "step_tokens": p.step_tokens, "trained_tokens": p.trained_tokens,
        "seconds": p.seconds, "tokens_per_second": p.tokens_per_second,
        "peak_memory": p.peak_memory, "active_memory": p.active_memory,
    })
}

fn gb(bytes: usize) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// One progress line: bar, step, loss, validation loss, tokens/s, peak memory.
fn progress_line(p: &Progress) -> String {
    let width = 24;
    let done = (p.step * width).checked_div(p.iters).unwrap_or(width);
    let bar: String = (0..width).map(|i| if i < done { '#' } else { '.' }).collect();
    let val = p.val_loss.map(|v| format!(" val {v:.3}")).unwrap_or_default();
    format!("[{bar}] {}/{} loss {:.3}{val} lr {:.2e} | {:.0} tok/s | peak {}", p.step, p.iters, p.loss, p.learning_rate, p.tokens_per_second, gb(p.peak_memory))
}

/// Trains and prints progress to stderr, a summary to stdout.
pub fn run(a: Args) -> CliResult {
    let opts = a.options();
    let mut json = match &a.progress_json {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(|e| gomlx::Error::io(p, e))?)),
        None => None,
    };
    let mut err = std::io::stderr();
    let mut json_err = None;
    let report = train(&opts, |p| {
        let _ = write!(err, "\r{}", progress_line(p));
        if p.val_loss.is_some() || p.step == p.iters {
            let _ = writeln!(err);
        }
        if let Some(w) = json.as_mut() {
            if let Err(e) = writeln!(w, "{}", progress_json(p)).and_then(|_| w.flush()) {
                json_err = Some(e);
                return Control::Stop;
            }
        }
        Control::Continue
    })
    .map_err(|e| match e {
        gomlx::Error::InvalidArgument(m) => CliError::Usage(m),
        other => CliError::from(other),
    })?;
    if let (Some(e), Some(p)) = (json_err, &a.progress_json) {
        return Err(gomlx::Error::io(p, e).into());
    }
    println!(
        "trained {} steps, loss {:.3} -> {:.3}{}, {} tokens in {:.1} s ({:.0} tok/s), peak memory {}",
        report.steps,
        report.first_loss,
        report.last_loss,
        report.last_val_loss.map(|v| format!(", validation {v:.3}")).unwrap_or_default(),
        report.trained_tokens,
        report.seconds,
        report.trained_tokens as f64 / report.seconds.max(1e-9),
        gb(report.peak_memory)
    );
    if report.truncated > 0 {
        println!("{} examples were truncated to {} tokens", report.truncated, opts.train.max_seq_length);
    }
    if let Some(d) = &opts.train.adapter_path {
        println!("adapters: {}", d.display());
    }
    if let Some(d) = &opts.fuse_to {
        println!("fused model: {}", d.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Args;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("lora").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn flags_map_onto_the_run_options() {
        let a = parse(&[
            "--model",
            "m",
            "--data",
            "d",
            "--iters",
            "12",
            "--lr",
            "1e-2",
            "--warmup",
            "2",
            "--cosine",
            "--rank",
            "4",
            "--alpha",
            "16",
            "--targets",
            "q_proj,v_proj,down_proj",
            "--mask-prompt",
            "--grad-checkpoint",
            "--grad-clip",
            "1.0",
            "--val-batches",
            "-1",
        ])
        .unwrap();
        let o = a.options();
        assert_eq!(o.train.lora.scale, 4.0);
        assert_eq!(o.train.schedule.decay_steps, Some(9));
        assert_eq!(o.train.schedule.lr, 1e-2);
        assert!(o.data_options.mask_prompt && o.train.grad_checkpoint);
        assert_eq!(o.train.grad_clip, Some(1.0));
        assert_eq!(o.train.val_batches, None);
        assert_eq!(o.train.lora.targets, ["q_proj", "v_proj", "down_proj"]);
        // Unset flags keep the library's defaults.
        let d = parse(&["--model", "m", "--data", "d"]).unwrap().options();
        let lib = gomlx::train::run::RunOptions::new("m", "d");
        assert_eq!(
            (d.train.iters, d.train.batch_size, d.train.lora.rank, d.train.lora.scale),
            (lib.train.iters, lib.train.batch_size, lib.train.lora.rank, lib.train.lora.scale)
        );
        assert_eq!(d.train.schedule, lib.train.schedule);
        assert!(parse(&["--model"]).is_err());
        assert!(parse(&["--model", "m", "--data", "d", "--rank", "x"]).is_err());
    }
}
