//! AdamW and the learning-rate schedule (linear warm-up, then constant or cosine decay).

use crate::mlx::{self, Array};
use crate::{Error, Result};

/// AdamW as MLX's `optimizers.AdamW` computes it: decoupled weight decay
/// `p ← p·(1 − lr·wd)`, then the Adam step, with optional bias correction.
#[derive(Clone, Debug)]
pub struct AdamWConfig {
    pub betas: (f32, f32),
    pub eps: f32,
    pub weight_decay: f32,
    /// MLX's default is no bias correction; mlx-lm inherits it.
    pub bias_correction: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.01, bias_correction: false }
    }
}

pub struct AdamW {
    pub config: AdamWConfig,
    m: Vec<Array>,
    v: Vec<Array>,
    /// Updates applied so far.
    pub step: usize,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> AdamW {
        AdamW { config, m: Vec::new(), v: Vec::new(), step: 0 }
    }

    /// The moment estimates (to evaluate together with the parameters).
    pub fn state(&self) -> Vec<&Array> {
        self.m.iter().chain(self.v.iter()).collect()
    }

    /// New parameters after one update with learning rate `lr` (lazy).
    pub fn update(&mut self, params: &[Array], grads: &[Array], lr: f32) -> Result<Vec<Array>> {
        if params.len() != grads.len() {
            return Err(Error::InvalidArgument(format!("{} parameters, {} gradients", params.len(), grads.len())));
        }
        if self.m.is_empty() {
            self.m = params.iter().map(|p| mlx::zeros(&p.shape(), p.dtype())).collect::<Result<_>>()?;
            self.v = self.m.clone();
        }
        let (b1, b2) = self.config.betas;
        self.step += 1;
        let t = self.step as i32;
        let mut out = Vec::with_capacity(params.len());
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let dt = g.dtype();
            let s = |x: f32| Array::scalar_as(x, dt);
            let p = p.multiply(&s(1.0 - lr * self.config.weight_decay)?)?;
            let m = self.m[i].multiply(&s(b1)?)?.add(&g.multiply(&s(1.0 - b1)?)?)?;
            let v = self.v[i].multiply(&s(b2)?)?.add(&g.square()?.multiply(&s(1.0 - b2)?)?)?;
            let new = if self.config.bias_correction {
                let c1 = lr / (1.0 - b1.powi(t));
                let c2 = 1.0 / (1.0 - b2.powi(t)).sqrt();
                p.subtract(&m.multiply(&s(c1)?)?.divide(&v.sqrt()?.multiply(&s(c2)?)?.add(&s(self.config.eps)?)?)?)?
            } else {
                p.subtract(&m.multiply(&s(lr)?)?.divide(&v.sqrt()?.add(&s(self.config.eps)?)?)?)?
            };
            self.m[i] = m;
            self.v[i] = v;
            out.push(new);
        }
        Ok(out)
    }
}

/// Learning rate by update index, MLX's `join_schedules([linear warm-up,
/// cosine_decay], [warmup + 1])` semantics: update 0 uses `warmup_init`, update
/// `warmup` reaches `lr`, then cosine decay to `min_lr` over `decay_steps`.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub lr: f32,
    pub warmup: usize,
    pub warmup_init: f32,
    /// Cosine decay length in updates after warm-up; None keeps `lr` constant.
    pub decay_steps: Option<usize>,
    pub min_lr: f32,
}

impl Schedule {
    pub fn constant(lr: f32) -> Schedule {
        Schedule { lr, warmup: 0, warmup_init: 0.0, decay_steps: None, min_lr: 0.0 }
    }

    pub fn at(&self, step: usize) -> f32 {
        let after = |s: usize| -> f32 {
            match self.decay_steps {
                Some(n) if n > 0 => {
                    let s = s.min(n) as f32;
                    let decay = 0.5 * (1.0 + (std::f32::consts::PI * s / n as f32).cos());
                    self.min_lr + decay * (self.lr - self.min_lr)
                }
                _ => self.lr,
            }
        };
        if self.warmup == 0 {
            return after(step);
        }
        if step < self.warmup + 1 {
            let s = step.min(self.warmup) as f32;
            return self.warmup_init + s * (self.lr - self.warmup_init) / self.warmup as f32;
        }
        after(step - (self.warmup + 1))
    }
}
