//! Attaching LoRA adapters to a model's projections and reading/writing
//! their parameters in mlx-lm's naming (`model.layers.{i}.{key}.lora_a`);
//! the adapter layer itself (`Lora`), shared by inference and training.

use crate::mlx::{random, Array, Dtype};
use crate::models::Model;
use crate::{Error, Result};
use std::sync::Mutex;

/// A LoRA adapter on one `Linear`. The matrices sit behind mutexes so that a
/// training step can swap in the traced arguments of `value_and_grad` (and a
/// checkpointed layer its own) while the model is shared immutably.
pub struct Lora {
    a: Mutex<Array>,
    b: Mutex<Array>,
    pub scale: f32,
    pub dropout: f32,
    /// Set during training steps: the PRNG key of this step's dropout mask.
    /// Keeping it fixed for a step makes a checkpoint's recomputation see the same mask.
    dropout_key: Mutex<Option<Array>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Lora {
    /// `a`: `[in, r]`, `b`: `[r, out]`.
    pub fn new(a: Array, b: Array, scale: f32, dropout: f32) -> Result<Lora> {
        if a.ndim() != 2 || b.ndim() != 2 || a.dim(1) != b.dim(0) {
            return Err(Error::InvalidArgument(format!("LoRA shapes {:?} and {:?} do not chain", a.shape(), b.shape())));
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(Error::InvalidArgument(format!("LoRA dropout must be in [0, 1), got {dropout}")));
        }
        Ok(Lora { a: Mutex::new(a), b: Mutex::new(b), scale, dropout, dropout_key: Mutex::new(None) })
    }

    pub fn rank(&self) -> i32 {
        lock(&self.a).dim(1)
    }

    /// (A, B) as they are now (cheap handle copies).
    pub fn params(&self) -> (Array, Array) {
        (lock(&self.a).clone(), lock(&self.b).clone())
    }

    pub fn set_params(&self, a: Array, b: Array) {
        *lock(&self.a) = a;
        *lock(&self.b) = b;
    }

    pub fn set_dropout_key(&self, key: Option<Array>) {
        *lock(&self.dropout_key) = key;
    }

    /// `scale · ((dropout(x) A) B)` in x's dtype.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let (a, b) = self.params();
        let key = lock(&self.dropout_key).clone();
        let x_in = match key {
            Some(k) if self.dropout > 0.0 => {
                let keep = 1.0 - self.dropout;
                let mask = crate::mlx::random::bernoulli(keep, &x.shape(), Some(&k))?.astype(x.dtype())?;
                x.multiply(&mask)?.mul_scalar(1.0 / keep)?
            }
            _ => x.clone(),
        };
        let z = x_in.matmul(&a)?.matmul(&b)?;
        z.multiply(&Array::scalar_as(self.scale, z.dtype())?)?.astype(x.dtype())
    }

    /// `scale · Bᵀ Aᵀ`: the `[out, in]` weight delta, in float32.
    pub fn delta(&self) -> Result<Array> {
        let (a, b) = self.params();
        b.astype(crate::mlx::Dtype::F32)?.transpose(&[])?.mul_scalar(self.scale)?.matmul(&a.astype(crate::mlx::Dtype::F32)?.transpose(&[])?)
    }
}

/// The projections a LoRA can target, as mlx-lm names them within a block.
pub const ALL_TARGETS: &[&str] =
    &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];

/// Where and how big the adapters are.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: i32,
    /// Multiplier of the low-rank update (mlx-lm's `scale`; `alpha / rank` in PEFT terms).
    pub scale: f32,
    pub dropout: f32,
    /// Block-relative module names (`self_attn.q_proj`) or short ones (`q_proj`).
    pub targets: Vec<String>,
    /// Adapt the last `num_layers` blocks; None = all.
    pub num_layers: Option<usize>,
    /// dtype of A and B (float32 or bfloat16).
    pub dtype: Dtype,
    /// Seed of A's initialisation.
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            scale: 20.0,
            dropout: 0.0,
            targets: vec!["self_attn.q_proj".into(), "self_attn.v_proj".into()],
            num_layers: None,
            dtype: Dtype::F32,
            seed: 0,
        }
    }
}

impl LoraConfig {
    /// `scale = alpha / rank`, the PEFT convention.
    pub fn with_alpha(mut self, alpha: f32) -> Self {
        self.scale = alpha / self.rank as f32;
        self
    }

    /// Targets in their full block-relative form (`q_proj` → `self_attn.q_proj`).
    pub fn normalised_targets(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for t in &self.targets {
            let full = ALL_TARGETS
                .iter()
                .find(|k| **k == t.as_str() || k.rsplit('.').next() == Some(t.as_str()))
                .ok_or_else(|| Error::InvalidArgument(format!("unknown LoRA target '{t}' (expected one of {})", ALL_TARGETS.join(", "))))?;
            if !out.iter().any(|o: &String| o == full) {
                out.push(full.to_string());
            }
        }
        if out.is_empty() {
            return Err(Error::InvalidArgument("no LoRA targets".into()));
        }
        Ok(out)
    }

    fn validate(&self) -> Result<()> {
        if self.rank < 1 {
            return Err(Error::InvalidArgument(format!("LoRA rank must be at least 1, got {}", self.rank)));
        }
        if !matches!(self.dtype, Dtype::F32 | Dtype::BF16 | Dtype::F16) {
            return Err(Error::InvalidArgument(format!("LoRA dtype must be float32, bfloat16 or float16, not {}", self.dtype)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidArgument(format!("LoRA dropout must be in [0, 1), got {}", self.dropout)));
        }
        Ok(())
    }
}

/// The first block that gets adapters when the last `num_layers` do.
pub fn first_layer(model: &Model, num_layers: Option<usize>) -> Result<usize> {
    let n = model.config().num_layers;
    match num_layers {
        None => Ok(0),
        Some(k) if k <= n => Ok(n - k),
        Some(k) => Err(Error::InvalidArgument(format!("{k} LoRA layers requested but the model has {n}"))),
    }
}

/// Adds fresh adapters (A uniform in ±1/√in as mlx-lm draws it, B zero, so
/// the model's output is unchanged) on the configured projections; replaces
/// any adapter already there. Returns how many projections were adapted.
pub fn apply_lora(model: &mut Model, cfg: &LoraConfig) -> Result<usize> {
    cfg.validate()?;
    let targets = cfg.normalised_targets()?;
    let first = first_layer(model, cfg.num_layers)?;
    let mut key = random::key(cfg.seed)?;
    let mut count = 0;
    for i in first..model.config().num_layers {
        for (name, lin) in model.block_linears_mut(i) {
            if !targets.contains(&name) {
                continue;
            }
            let (input, output) = lin.dims();
            let (k, next) = random::split(&key)?;
            key = next;
            let bound = 1.0 / (input as f32).sqrt();
            let a = random::uniform(-bound, bound, &[input, cfg.rank], Dtype::F32, Some(&k))?.astype(cfg.dtype)?;
            let b = crate::mlx::zeros(&[cfg.rank, output], cfg.dtype)?;
            crate::mlx::eval(&[&a, &b])?;
            lin.lora = Some(Lora::new(a, b, cfg.scale, cfg.dropout)?);
            count += 1;
        }
    }
    Ok(count)
}

/// Removes every adapter.
pub fn remove_lora(model: &mut Model) {
    for i in 0..model.config().num_layers {
        for (_, lin) in model.block_linears_mut(i) {
            lin.lora = None;
        }
    }
}

/// The adapters of a model in a fixed order (by block, then projection), with
/// their module names (`model.layers.3.self_attn.q_proj`).
pub fn adapters(model: &Model) -> Vec<(String, &Lora)> {
    let mut out = Vec::new();
    for i in 0..model.config().num_layers {
        for (name, lin) in model.block_linears(i) {
            if let Some(l) = &lin.lora {
                out.push((format!("model.layers.{i}.{name}"), l));
            }
        }
    }
    out
}

/// The trainable parameters in `adapters` order: `[A₀, B₀, A₁, B₁, ...]`, named
/// as mlx-lm names them (`...q_proj.lora_a`, `...q_proj.lora_b`).
pub fn parameters(model: &Model) -> Vec<(String, Array)> {
    let mut out = Vec::new();
    for (name, l) in adapters(model) {
        let (a, b) = l.params();
        out.push((format!("{name}.lora_a"), a));
        out.push((format!("{name}.lora_b"), b));
    }
    out
}

/// Sets the parameters (same order and count as `parameters`).
pub fn set_parameters(loras: &[&Lora], params: &[Array]) -> Result<()> {
    if params.len() != 2 * loras.len() {
        return Err(Error::InvalidArgument(format!("{} arrays for {} adapters", params.len(), loras.len())));
    }
    for (l, ab) in loras.iter().zip(params.chunks(2)) {
        l.set_params(ab[0].clone(), ab[1].clone());
    }
    Ok(())
}

/// Number of trainable scalars.
pub fn parameter_count(model: &Model) -> usize {
    parameters(model).iter().map(|(_, a)| a.size()).sum()
}
