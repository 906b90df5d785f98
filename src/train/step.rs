//! One training step: causal-LM cross-entropy over a padded batch with a loss
//! mask, `value_and_grad` over the LoRA parameters only (through mlx-c
//! closures), optional gradient checkpointing per decoder block.

use crate::mlx::closure::{self, Closure};
use crate::mlx::{self, random, Array, Dtype};
use crate::models::lora;
use crate::models::lora::Lora;
use crate::models::{Context, Model};
use crate::{Error, Result};

/// A padded batch in mlx-lm's form: `tokens` `[B, W]` (right-padded with 0),
/// and per row the first target position that counts (`offsets`, the prompt
/// length when the prompt is masked, else 0) and the real `lengths`.
#[derive(Clone, Debug)]
pub struct Batch {
    pub tokens: Vec<Vec<u32>>,
    pub offsets: Vec<usize>,
    pub lengths: Vec<usize>,
    pub width: usize,
}

impl Batch {
    /// Rows of token ids (each a whole example), right-padded to the longest.
    pub fn new(rows: Vec<Vec<u32>>, offsets: Vec<usize>) -> Result<Batch> {
        if rows.is_empty() || rows.len() != offsets.len() {
            return Err(Error::InvalidArgument(format!("a batch needs rows and one offset per row ({} rows, {} offsets)", rows.len(), offsets.len())));
        }
        let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
        let width = *lengths.iter().max().unwrap();
        if width < 2 {
            return Err(Error::InvalidArgument("a batch needs sequences of at least two tokens".into()));
        }
        Ok(Batch { tokens: rows, offsets, lengths, width })
    }

    /// Inputs `[B, W-1]`, targets `[B, W-1]` and the float32 loss mask `[B, W-1]`:
    /// target position j (predicting token j+1) counts when `offset <= j+1 <= length-1`
    /// — exactly mlx-lm's `steps >= offset & steps <= length` with `steps = 1..W-1`.
    pub fn arrays(&self) -> Result<(Array, Array, Array)> {
        let (b, w) = (self.tokens.len(), self.width);
        let mut flat = vec![0i32; b * w];
        for (r, row) in self.tokens.iter().enumerate() {
            for (c, &t) in row.iter().enumerate() {
                flat[r * w + c] = t as i32;
            }
        }
        let mut mask = vec![0f32; b * (w - 1)];
        for r in 0..b {
            for j in 0..w - 1 {
                let step = j + 1;
                if step >= self.offsets[r] && step < self.lengths[r] {
                    mask[r * (w - 1) + j] = 1.0;
                }
            }
        }
        let all = Array::from_slice(&flat, &[b as i32, w as i32])?;
        let inputs = all.slice_axis(1, 0, w as i32 - 1)?;
        let targets = all.slice_axis(1, 1, w as i32)?;
        Ok((inputs, targets, Array::from_slice(&mask, &[b as i32, w as i32 - 1])?))
    }

    /// Tokens that count in the loss.
    pub fn loss_tokens(&self) -> usize {
        (0..self.tokens.len()).map(|r| self.lengths[r].saturating_sub(self.offsets[r].max(1))).sum()
    }

    /// All real tokens (for throughput).
    pub fn real_tokens(&self) -> usize {
        self.lengths.iter().sum()
    }
}

/// How the loss's log-sum-exp is differentiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exponentials {
    /// MLX's LogSumExp, whose vjp computes `exp(logits - lse)` again: no extra memory.
    Recompute,
    /// The log-sum-exp written out (max-shifted, as MLX's): the gradient multiplies
    /// by the forward's exponentials, which stay alive for the backward pass
    /// (`B·L·V` floats, e.g. 96 MiB for 4×128 tokens of a 49k vocabulary).
    Keep,
}

impl Exponentials {
    /// Keep on the CPU, where MLX's exp is a scalar loop and recomputing all of
    /// them is the costliest elementwise work of a step (~7% of a SmolLM2 step,
    /// BENCHMARKS.md); recompute on the GPU, where it is cheap and memory is not.
    pub fn for_device(device: crate::mlx::DeviceKind) -> Exponentials {
        if device == crate::mlx::DeviceKind::Cpu {
            Exponentials::Keep
        } else {
            Exponentials::Recompute
        }
    }
}

/// Per-token cross-entropy `[B, L]` of `logits` `[B, L, V]` against `targets`
/// `[B, L]`: `logsumexp(logits) - logits[target]` (mlx's `cross_entropy`).
pub fn cross_entropy(logits: &Array, targets: &Array) -> Result<Array> {
    cross_entropy_with(logits, targets, Exponentials::Recompute)
}

/// `cross_entropy` with the log-sum-exp differentiated as `how` says (same value).
pub fn cross_entropy_with(logits: &Array, targets: &Array, how: Exponentials) -> Result<Array> {
    let score = logits.take_along_axis(&targets.expand_dims(&[-1])?, -1)?.squeeze(&[-1])?;
    let lse = match how {
        Exponentials::Recompute => logits.logsumexp(&[-1], false)?,
        Exponentials::Keep => {
            let max = logits.max(&[-1], true)?.stop_gradient()?;
            let sum = logits.subtract(&max)?.exp()?.sum(&[-1], false)?;
            sum.log()?.add(&max.squeeze(&[-1])?)?
        }
    };
    lse.subtract(&score)
}

/// Mean cross-entropy over the masked tokens and their count, as float32.
pub fn masked_loss(logits: &Array, targets: &Array, mask: &Array) -> Result<(Array, Array)> {
    masked_loss_with(logits, targets, mask, Exponentials::Recompute)
}

/// `masked_loss` with the log-sum-exp differentiated as `how` says.
pub fn masked_loss_with(logits: &Array, targets: &Array, mask: &Array, how: Exponentials) -> Result<(Array, Array)> {
    let ce = cross_entropy_with(logits, targets, how)?.multiply(&mask.astype(logits.dtype())?)?;
    let ntoks = mask.sum(&[], false)?;
    let loss = ce.astype(Dtype::F32)?.sum(&[], false)?.divide(&ntoks)?;
    Ok((loss, ntoks))
}

/// The forward pass of training: all positions, no KV cache, causal.
fn forward_logits(model: &Model, inputs: &Array, blocks: Option<&[(Closure, std::ops::Range<usize>)]>, params: &[Array]) -> Result<Array> {
    let ctx = Context { valid: None };
    let mut h = model.embed(inputs)?;
    for i in 0..model.config().num_layers {
        h = match blocks {
            Some(b) => {
                let (c, range) = &b[i];
                let mut args: Vec<&Array> = vec![&h];
                args.extend(params[range.clone()].iter());
                c.apply(&args)?.remove(0)
            }
            None => model.block(i, &h, None, &ctx)?,
        };
    }
    model.logits(&model.final_norm(&h)?)
}

/// The result of `loss_and_grad`, not yet evaluated.
pub struct StepOutput {
    pub loss: Array,
    pub ntoks: Array,
    /// Gradients in `lora::parameters` order.
    pub grads: Vec<Array>,
}

/// Restores the adapters' parameters when dropped (the closures leave traced
/// arrays in them).
struct Restore<'a> {
    loras: &'a [&'a Lora],
    saved: Vec<Array>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = lora::set_parameters(self.loras, &self.saved);
        for l in self.loras {
            l.set_dropout_key(None);
        }
    }
}

/// Loss (mean masked cross-entropy) and its gradients with respect to every
/// LoRA parameter of `model`, for one batch. With `checkpoint`, each decoder
/// block runs as a checkpointed closure whose adapter parameters are explicit
/// inputs, so gradients equal the plain ones while activations inside blocks
/// are recomputed in the backward pass. `dropout_key` draws the adapters'
/// dropout masks (None: no dropout).
pub fn loss_and_grad(model: &Model, batch: &Batch, checkpoint: bool, dropout_key: Option<&Array>) -> Result<StepOutput> {
    let named = lora::adapters(model);
    if named.is_empty() {
        return Err(Error::InvalidArgument("the model has no LoRA adapters to train".into()));
    }
    let loras: Vec<&Lora> = named.iter().map(|(_, l)| *l).collect();
    let params: Vec<Array> = lora::parameters(model).into_iter().map(|(_, a)| a).collect();
    let (inputs, targets, mask) = batch.arrays()?;
    let _restore = Restore { loras: &loras, saved: params.clone() };

    if let Some(k) = dropout_key {
        let mut key = k.clone();
        for l in &loras {
            let (a, b) = random::split(&key)?;
            l.set_dropout_key(Some(a));
            key = b;
        }
    }

    // Which parameters (indices into `params`) belong to each block.
    let n_layers = model.config().num_layers;
    let mut ranges = Vec::with_capacity(n_layers);
    let mut at = 0;
    for i in 0..n_layers {
        let n = model.block_linears(i).iter().filter(|(_, l)| l.lora.is_some()).count();
        ranges.push(at..at + 2 * n);
        at += 2 * n;
    }
    let loras_ref = &loras;
    let how = Exponentials::for_device(mlx::stream::thread_device());

    closure::scope(|s| -> Result<StepOutput> {
        let blocks = if checkpoint {
            let mut v = Vec::with_capacity(n_layers);
            for (i, range) in ranges.iter().enumerate() {
                let layer_loras: Vec<&Lora> = loras_ref[range.start / 2..range.end / 2].to_vec();
                let f = s.lend(move |args: &[Array]| {
                    lora::set_parameters(&layer_loras, &args[1..])?;
                    Ok(vec![model.block(i, &args[0], None, &Context { valid: None })?])
                })?;
                v.push((f.checkpoint()?, range.clone()));
            }
            Some(v)
        } else {
            None
        };
        let (inputs, targets, mask) = (&inputs, &targets, &mask);
        let loss_fn = s.lend(move |args: &[Array]| {
            lora::set_parameters(loras_ref, args)?;
            let logits = forward_logits(model, inputs, blocks.as_deref(), args)?;
            let (loss, ntoks) = masked_loss_with(&logits, targets, mask, how)?;
            Ok(vec![loss, ntoks])
        })?;
        let argnums: Vec<i32> = (0..params.len() as i32).collect();
        let refs: Vec<&Array> = params.iter().collect();
        let (mut values, grads) = loss_fn.value_and_grad(&argnums)?.apply(&refs)?;
        let ntoks = values.pop().ok_or_else(|| Error::Mlx("loss closure returned nothing".into()))?;
        let loss = values.pop().ok_or_else(|| Error::Mlx("loss closure returned one output".into()))?;
        Ok(StepOutput { loss, ntoks, grads })
    })
}

/// Loss only (no gradients), e.g. for validation.
pub fn loss(model: &Model, batch: &Batch) -> Result<(Array, Array)> {
    let (inputs, targets, mask) = batch.arrays()?;
    let logits = forward_logits(model, &inputs, None, &[])?;
    masked_loss(&logits, &targets, &mask)
}

/// Global L2 norm of `grads` (float32 scalar).
pub fn global_norm(grads: &[Array]) -> Result<Array> {
    let mut total = Array::scalar(0f32);
    for g in grads {
        total = total.add(&g.astype(Dtype::F32)?.square()?.sum(&[], false)?)?;
    }
    total.sqrt()
}

/// Scales `grads` so their global norm is at most `max_norm` (mlx's `clip_grad_norm`).
/// Returns the clipped gradients and the norm before clipping.
pub fn clip_grad_norm(grads: &[Array], max_norm: f32) -> Result<(Vec<Array>, Array)> {
    let norm = global_norm(grads)?;
    let factor = Array::scalar(max_norm).divide(&norm.add_scalar(1e-6)?)?.minimum(&Array::scalar(1f32))?;
    let clipped = grads.iter().map(|g| g.multiply(&factor.astype(g.dtype())?)).collect::<Result<_>>()?;
    Ok((clipped, norm))
}

/// Evaluates a list of arrays (helper for callers holding owned values).
pub fn eval_all(arrays: &[&Array]) -> Result<()> {
    mlx::eval(arrays)
}
