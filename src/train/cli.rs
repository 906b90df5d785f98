//! `gomlx lora ...`: argument parsing and the progress display, as a function
//! the command-line front end calls with the arguments after `lora`.

use super::run::{run, RunOptions};
use super::{Control, FuseMode, Progress, Schedule};
use crate::mlx::Dtype;
use crate::{Error, Result};
use std::io::Write;
use std::path::PathBuf;

pub const USAGE: &str = "usage: gomlx lora --model DIR --data DIR|FILE [options]
  --iters N             training steps (100)
  --batch-size N        examples per step (4)
  --lr X                peak learning rate (1e-5)
  --warmup N            linear warm-up steps (0)
  --cosine              cosine decay to --min-lr after warm-up
  --min-lr X            (0)
  --weight-decay X      AdamW weight decay (0.01)
  --grad-clip X         clip gradients to this global norm
  --rank N              LoRA rank (8)
  --scale X | --alpha X LoRA scale (20), or alpha with scale = alpha / rank
  --dropout X           LoRA dropout (0)
  --targets a,b,...     projections: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj (q_proj,v_proj)
  --num-layers N        adapt the last N blocks (all)
  --lora-dtype T        float32 or bfloat16 (float32)
  --dtype T             compute dtype of the base model (checkpoint's)
  --max-seq-length N    (2048)
  --mask-prompt         train on completions only
  --grad-checkpoint     recompute activations per block in the backward pass
  --seed N              (0)
  --val-every N         validate every N steps (200)
  --val-batches N       batches per validation (25; -1 = all)
  --save-every N        save adapters every N steps (100)
  --adapter-path DIR    where adapters.safetensors goes (adapters)
  --resume DIR          start from saved adapters
  --fuse DIR            after training, write the fused model here
  --dequantize          fuse into dense weights (quantised models)
  --progress-json FILE  also write every step as a JSON line (step, loss, tokens, seconds, memory)";

fn value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str> {
    *i += 1;
    args.get(*i).map(String::as_str).ok_or_else(|| Error::InvalidArgument(format!("{flag} needs a value\n{USAGE}")))
}

fn num<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T> {
    s.parse().map_err(|_| Error::InvalidArgument(format!("{flag}: '{s}' is not a valid number")))
}

/// Parses the arguments after `lora` (without the front end's own `--progress-json`).
pub fn parse_args(args: &[String]) -> Result<RunOptions> {
    Ok(parse(args)?.0)
}

/// The run options and the `--progress-json` file.
fn parse(args: &[String]) -> Result<(RunOptions, Option<PathBuf>)> {
    let mut progress_json = None;
    let (mut model, mut data) = (None, None);
    let mut o = RunOptions::new("", "");
    o.train.adapter_path = Some(PathBuf::from("adapters"));
    let (mut lr, mut warmup, mut cosine, mut min_lr, mut alpha, mut scale) = (1e-5f32, 0usize, false, 0f32, None, None);
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--model" => model = Some(PathBuf::from(value(args, &mut i, flag)?)),
            "--data" => data = Some(PathBuf::from(value(args, &mut i, flag)?)),
            "--iters" => o.train.iters = num(value(args, &mut i, flag)?, flag)?,
            "--batch-size" => o.train.batch_size = num(value(args, &mut i, flag)?, flag)?,
            "--lr" | "--learning-rate" => lr = num(value(args, &mut i, flag)?, flag)?,
            "--warmup" => warmup = num(value(args, &mut i, flag)?, flag)?,
            "--cosine" => cosine = true,
            "--min-lr" => min_lr = num(value(args, &mut i, flag)?, flag)?,
            "--weight-decay" => o.train.adamw.weight_decay = num(value(args, &mut i, flag)?, flag)?,
            "--grad-clip" => o.train.grad_clip = Some(num(value(args, &mut i, flag)?, flag)?),
            "--rank" => o.train.lora.rank = num(value(args, &mut i, flag)?, flag)?,
            "--scale" => scale = Some(num(value(args, &mut i, flag)?, flag)?),
            "--alpha" => alpha = Some(num::<f32>(value(args, &mut i, flag)?, flag)?),
            "--dropout" => o.train.lora.dropout = num(value(args, &mut i, flag)?, flag)?,
            "--targets" => o.train.lora.targets = value(args, &mut i, flag)?.split(',').map(|s| s.trim().to_string()).collect(),
            "--num-layers" => o.train.lora.num_layers = Some(num(value(args, &mut i, flag)?, flag)?),
            "--lora-dtype" => o.train.lora.dtype = Dtype::parse(value(args, &mut i, flag)?)?,
            "--dtype" => o.dtype = Some(Dtype::parse(value(args, &mut i, flag)?)?),
            "--max-seq-length" => o.train.max_seq_length = num(value(args, &mut i, flag)?, flag)?,
            "--mask-prompt" => o.data_options.mask_prompt = true,
            "--grad-checkpoint" => o.train.grad_checkpoint = true,
            "--seed" => o.train.seed = num(value(args, &mut i, flag)?, flag)?,
            "--val-every" => o.train.val_every = num(value(args, &mut i, flag)?, flag)?,
            "--val-batches" => {
                let n: i64 = num(value(args, &mut i, flag)?, flag)?;
                o.train.val_batches = if n < 0 { None } else { Some(n as usize) };
            }
            "--save-every" => o.train.save_every = num(value(args, &mut i, flag)?, flag)?,
            "--adapter-path" => o.train.adapter_path = Some(PathBuf::from(value(args, &mut i, flag)?)),
            "--resume" => o.resume_adapter = Some(PathBuf::from(value(args, &mut i, flag)?)),
            "--fuse" => o.fuse_to = Some(PathBuf::from(value(args, &mut i, flag)?)),
            "--dequantize" => o.fuse_mode = FuseMode::Dequantize,
            "--progress-json" => progress_json = Some(PathBuf::from(value(args, &mut i, flag)?)),
            other => return Err(Error::InvalidArgument(format!("unknown option '{other}'\n{USAGE}"))),
        }
        i += 1;
    }
    o.model = model.ok_or_else(|| Error::InvalidArgument(format!("--model is required\n{USAGE}")))?;
    o.data = data.ok_or_else(|| Error::InvalidArgument(format!("--data is required\n{USAGE}")))?;
    if let Some(s) = scale {
        o.train.lora.scale = s;
    }
    if let Some(a) = alpha {
        o.train.lora.scale = a / o.train.lora.rank as f32;
    }
    let decay = if cosine { Some(o.train.iters.saturating_sub(warmup + 1).max(1)) } else { None };
    o.train.schedule = Schedule { lr, warmup, warmup_init: 0.0, decay_steps: decay, min_lr };
    Ok((o, progress_json))
}

/// One step as a JSON object (`--progress-json`), for scripts such as scripts/bench-lora.
pub fn progress_json(p: &Progress) -> serde_json::Value {
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
pub fn progress_line(p: &Progress) -> String {
    let width = 24;
    let done = (p.step * width).checked_div(p.iters).unwrap_or(width);
    let bar: String = (0..width).map(|i| if i < done { '#' } else { '.' }).collect();
    let val = p.val_loss.map(|v| format!(" val {v:.3}")).unwrap_or_default();
    format!(
        "[{bar}] {}/{} loss {:.3}{val} lr {:.2e} | {:.0} tok/s | peak {}",
        p.step,
        p.iters,
        p.loss,
        p.learning_rate,
        p.tokens_per_second,
        gb(p.peak_memory)
    )
}

/// `gomlx lora ...`: trains and prints progress to stderr, a summary to stdout.
pub fn lora_command(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let (opts, json_path) = parse(args)?;
    let mut json = match &json_path {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(|e| Error::io(p, e))?)),
        None => None,
    };
    let mut err = std::io::stderr();
    let mut json_err = None;
    let report = run(&opts, |p| {
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
    })?;
    if let (Some(e), Some(p)) = (json_err, &json_path) {
        return Err(Error::io(p, e));
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
