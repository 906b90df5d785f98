//! LoRA fine-tuning: the training step (`step`: masked causal-LM loss,
//! `value_and_grad` over the adapter parameters through mlx-c closures,
//! per-block gradient checkpointing), AdamW with warm-up + cosine schedule and
//! global-norm clipping (`optim`), JSONL data (`data`) and whole runs (`run`).
//! The adapter layer and its files live in the models layer
//! (`models::lora`, `models::adapters`), shared with inference.
//! See docs/training.md.

pub mod data;
pub mod optim;
pub mod run;
pub mod step;

pub use crate::models::adapters::{self, fuse, load_adapters, save_adapters, FuseMode};
pub use crate::models::lora::{self, apply_lora, LoraConfig};
pub use data::{Batches, DataOptions, Example};
pub use optim::{AdamW, AdamWConfig, Schedule};
pub use step::{loss_and_grad, Batch};

use crate::mlx::{self, memory, random, Array};
use crate::models::Model;
use crate::{Error, Result};
use std::path::PathBuf;
use std::time::Instant;

/// Everything a training run needs besides the model and data.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub lora: LoraConfig,
    pub iters: usize,
    pub batch_size: usize,
    pub max_seq_length: usize,
    pub schedule: Schedule,
    pub adamw: AdamWConfig,
    /// Clip gradients to this global norm (None: no clipping).
    pub grad_clip: Option<f32>,
    pub grad_checkpoint: bool,
    /// Seed of the data shuffle and dropout.
    pub seed: u64,
    /// Validate every this many steps (and at the first and last); 0 = never.
    pub val_every: usize,
    /// Validation batches per evaluation (None: the whole validation set).
    pub val_batches: Option<usize>,
    /// Where to save adapters (at the end, and every `save_every` steps); None = don't.
    pub adapter_path: Option<PathBuf>,
    pub save_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lora: LoraConfig::default(),
            iters: 100,
            batch_size: 4,
            max_seq_length: 2048,
            schedule: Schedule::constant(1e-5),
            adamw: AdamWConfig::default(),
            grad_clip: None,
            grad_checkpoint: false,
            seed: 0,
            val_every: 200,
            val_batches: Some(25),
            adapter_path: None,
            save_every: 100,
        }
    }
}

impl TrainConfig {
    /// Peak `lr` after `warmup` linear steps, then constant or (with `cosine`)
    /// decaying to `min_lr` by the last step: the schedule of `gomlx lora` and
    /// `gm_lora_train`.
    pub fn set_schedule(&mut self, lr: f32, warmup: usize, cosine: bool, min_lr: f32) {
        let decay_steps = if cosine { Some(self.iters.saturating_sub(warmup + 1).max(1)) } else { None };
        self.schedule = Schedule { lr, warmup, warmup_init: 0.0, decay_steps, min_lr };
    }
}

/// What the progress callback sees after every step (and validation).
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// 1-based step just finished.
    pub step: usize,
    pub iters: usize,
    pub loss: f32,
    /// Validation loss, on steps where it was computed.
    pub val_loss: Option<f32>,
    pub learning_rate: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Tokens that counted in this step's loss, and all real tokens trained on so far.
    pub step_tokens: usize,
    pub trained_tokens: usize,
    /// Real (non-padding) tokens per second over the run so far.
    pub tokens_per_second: f64,
    /// Seconds since training started (after loading), this step included.
    pub seconds: f64,
    pub peak_memory: usize,
    pub active_memory: usize,
    /// Examples cut to the maximum sequence length so far.
    pub truncated: usize,
}

/// What the callback returns: go on or stop after this step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// The outcome of `train`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainReport {
    pub steps: usize,
    pub stopped_early: bool,
    pub first_loss: f32,
    pub last_loss: f32,
    pub last_val_loss: Option<f32>,
    pub trained_tokens: usize,
    pub seconds: f64,
    pub peak_memory: usize,
    pub truncated: usize,
}

/// A training run's mutable state: optimizer, step counter, shuffled data.
pub struct Trainer<'m> {
    pub model: &'m Model,
    pub config: TrainConfig,
    pub optimizer: AdamW,
    dropout_key: Array,
}

impl<'m> Trainer<'m> {
    /// A trainer over a model that already has adapters (`apply_lora` or `load_adapters`).
    pub fn new(model: &'m Model, config: TrainConfig) -> Result<Trainer<'m>> {
        if lora::adapters(model).is_empty() {
            return Err(Error::InvalidArgument("the model has no LoRA adapters (apply_lora first)".into()));
        }
        let dropout_key = random::key(config.seed ^ 0x5eed)?;
        Ok(Trainer { model, optimizer: AdamW::new(config.adamw.clone()), config, dropout_key })
    }

    /// One optimizer update on `batch`. Returns (loss, gradient norm before clipping).
    pub fn step(&mut self, batch: &Batch) -> Result<(f32, f32)> {
        let key = if self.config.lora.dropout > 0.0 || lora::adapters(self.model).iter().any(|(_, l)| l.dropout > 0.0) {
            let (k, next) = random::split(&self.dropout_key)?;
            self.dropout_key = next;
            Some(k)
        } else {
            None
        };
        let out = loss_and_grad(self.model, batch, self.config.grad_checkpoint, key.as_ref())?;
        let (grads, norm) = match self.config.grad_clip {
            Some(max) => step::clip_grad_norm(&out.grads, max)?,
            None => {
                let n = step::global_norm(&out.grads)?;
                (out.grads, n)
            }
        };
        let named = lora::adapters(self.model);
        let loras: Vec<_> = named.iter().map(|(_, l)| *l).collect();
        let params: Vec<Array> = lora::parameters(self.model).into_iter().map(|(_, a)| a).collect();
        let lr = self.config.schedule.at(self.optimizer.step);
        let new = self.optimizer.update(&params, &grads, lr)?;
        let mut all: Vec<&Array> = new.iter().collect();
        all.extend(self.optimizer.state());
        all.push(&out.loss);
        all.push(&norm);
        mlx::eval(&all)?;
        lora::set_parameters(&loras, &new)?;
        Ok((out.loss.item::<f32>()?, norm.item::<f32>()?))
    }

    /// Mean loss over up to `max_batches` batches of `examples` (token-weighted).
    pub fn evaluate(&self, examples: &[Example], max_batches: Option<usize>) -> Result<f32> {
        let bs = self.config.batch_size.min(examples.len()).max(1);
        let mut batches = Batches::new(examples, bs, self.config.max_seq_length, 0, false)?;
        let n = max_batches.map_or(batches.len(), |m| m.min(batches.len()));
        let (mut total, mut toks) = (0f64, 0f64);
        for _ in 0..n {
            let b = batches.next_batch()?;
            let (l, t) = step::loss(self.model, &b)?;
            mlx::eval(&[&l, &t])?;
            let t = t.item::<f32>()? as f64;
            total += l.item::<f32>()? as f64 * t;
            toks += t;
        }
        Ok(if toks > 0.0 { (total / toks) as f32 } else { f32::NAN })
    }
}

/// Trains the model's adapters (adding fresh ones from `config.lora` when it
/// has none) on `train_set`, validating on `valid_set`, saving adapters to
/// `config.adapter_path`. `progress` runs after every step and may stop the run.
pub fn train(
    model: &mut Model,
    train_set: &[Example],
    valid_set: Option<&[Example]>,
    config: &TrainConfig,
    mut progress: impl FnMut(&Progress) -> Control,
) -> Result<TrainReport> {
    if config.iters == 0 {
        return Err(Error::InvalidArgument("iters must be at least 1".into()));
    }
    let setup = crate::mlx::gpu_guard();
    if lora::adapters(model).is_empty() {
        lora::apply_lora(model, &config.lora)?;
    }
    let model: &Model = model;
    let mut trainer = Trainer::new(model, config.clone())?;
    let mut batches = Batches::new(train_set, config.batch_size, config.max_seq_length, config.seed, true)?;
    memory::reset_peak()?;
    let start = Instant::now();
    let mut report = TrainReport {
        steps: 0,
        stopped_early: false,
        first_loss: f32::NAN,
        last_loss: f32::NAN,
        last_val_loss: None,
        trained_tokens: 0,
        seconds: 0.0,
        peak_memory: 0,
        truncated: 0,
    };
    let save = |model: &Model, step: usize| -> Result<()> {
        if let Some(dir) = &config.adapter_path {
            let mut extra = serde_json::Map::new();
            extra.insert("iters".into(), serde_json::json!(config.iters));
            extra.insert("step".into(), serde_json::json!(step));
            extra.insert("batch_size".into(), serde_json::json!(config.batch_size));
            extra.insert("learning_rate".into(), serde_json::json!(config.schedule.lr));
            extra.insert("max_seq_length".into(), serde_json::json!(config.max_seq_length));
            extra.insert("grad_checkpoint".into(), serde_json::json!(config.grad_checkpoint));
            extra.insert("seed".into(), serde_json::json!(config.seed));
            adapters::save_adapters(model, dir, Some(&extra))?;
        }
        Ok(())
    };
    drop(setup);
    for it in 1..=config.iters {
        // A CUDA build's MLX must not be used by two threads at once (mlx::GpuGuard);
        // released before the progress callback, which may use other models.
        let gpu = crate::mlx::gpu_guard();
        let batch = batches.next_batch()?;
        let lr = config.schedule.at(trainer.optimizer.step);
        let (loss, norm) = trainer.step(&batch)?;
        if !loss.is_finite() {
            return Err(Error::InvalidArgument(format!("loss became {loss} at step {it} (learning rate too high?)")));
        }
        report.steps = it;
        report.trained_tokens += batch.real_tokens();
        if it == 1 {
            report.first_loss = loss;
        }
        report.last_loss = loss;
        let val_loss = match valid_set {
            Some(v) if config.val_every > 0 && (it == 1 || it % config.val_every == 0 || it == config.iters) => Some(trainer.evaluate(v, config.val_batches)?),
            _ => None,
        };
        if val_loss.is_some() {
            report.last_val_loss = val_loss;
        }
        if config.save_every > 0 && it % config.save_every == 0 && it != config.iters {
            save(model, it)?;
        }
        drop(gpu);
        let secs = start.elapsed().as_secs_f64();
        let p = Progress {
            step: it,
            iters: config.iters,
            loss,
            val_loss,
            learning_rate: lr,
            grad_norm: norm,
            step_tokens: batch.loss_tokens(),
            trained_tokens: report.trained_tokens,
            tokens_per_second: report.trained_tokens as f64 / secs.max(1e-9),
            seconds: secs,
            peak_memory: memory::peak()?,
            active_memory: memory::active()?,
            truncated: batches.truncated,
        };
        if progress(&p) == Control::Stop {
            report.stopped_early = it != config.iters;
            break;
        }
    }
    let _gpu = crate::mlx::gpu_guard();
    save(model, report.steps)?;
    report.seconds = start.elapsed().as_secs_f64();
    report.peak_memory = memory::peak()?;
    report.truncated = batches.truncated;
    Ok(report)
}
