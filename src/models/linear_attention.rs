//! Linear attention with the gated delta rule (Qwen 3.5's `linear_attn`
//! layers): a causal depthwise convolution over the projected q/k/v, then a
//! recurrent `[Dv, Dk]` matrix per value head that decays, is corrected
//! towards each new key's value (the delta rule) and is read by the query.
//! The state lives in the request's cache (`KvCache::Recurrent`); the layer
//! holds weights only. Padded positions of a left-padded batch (`valid`
//! false) leave the state untouched and feed zeros to the convolution, which
//! is what an empty state holds, so padding cannot change a row's output.

use super::config::ModelConfig;
use super::layers::{Context, Linear};
use super::weights::Weights;
use crate::cache::KvCache;
use crate::mlx::{self, fast, Array, Dtype};
use crate::{Error, Result};

/// The gated delta rule over `T` steps, one graph node chain per step.
///
/// - `q`, `k`: `[B, T, Hk, Dk]`, already L2-normalised (and `q` scaled by `Dk^-1/2`)
/// - `v`: `[B, T, Hv, Dv]`, `Hv` a multiple of `Hk` (each key head serves `Hv / Hk` consecutive value heads)
/// - `g`: `[B, T, Hv]` the decay in (0, 1]; `beta`: `[B, T, Hv]` the write strength
/// - `state`: `[B, Hv, Dv, Dk]` float32, None for zeros
/// - `mask`: `[B, T]` bool, false where a step must leave the state as it was
///
/// Per step: `S ← g·S; S ← S + β (v − S k) kᵀ; y = S q`. Returns `y`
/// `[B, T, Hv, Dv]` in `q`'s dtype and the final state.
pub fn gated_delta(q: &Array, k: &Array, v: &Array, g: &Array, beta: &Array, state: Option<&Array>, mask: Option<&Array>) -> Result<(Array, Array)> {
    let (b, t, hk, dk) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
    let (hv, dv) = (v.dim(2), v.dim(3));
    if hk == 0 || hv % hk != 0 || k.shape() != q.shape() || v.dim(0) != b || v.dim(1) != t {
        return Err(Error::InvalidArgument(format!("gated delta: q {:?}, k {:?}, v {:?} do not fit", q.shape(), k.shape(), v.shape())));
    }
    let repeat = |x: &Array| -> Result<Array> {
        if hv == hk {
            return Ok(x.clone());
        }
        x.expand_dims(&[3])?.broadcast_to(&[b, t, hk, hv / hk, dk])?.reshape(&[b, t, hv, dk])
    };
    let f32 = |x: &Array| if x.dtype() == Dtype::F32 { Ok(x.clone()) } else { x.astype(Dtype::F32) };
    // [B, Hv, T, D] so that step t is a slice of axis 2.
    let heads_first = |x: Array| x.transpose(&[0, 2, 1, 3]);
    let (qh, kh, vh) = (heads_first(f32(&repeat(q)?)?)?, heads_first(f32(&repeat(k)?)?)?, heads_first(f32(v)?)?);
    let (gh, bh) = (f32(g)?.transpose(&[0, 2, 1])?, f32(beta)?.transpose(&[0, 2, 1])?);
    let mut s = match state {
        Some(s) => f32(s)?,
        None => mlx::zeros(&[b, hv, dv, dk], Dtype::F32)?,
    };
    let mut ys = Vec::with_capacity(t as usize);
    for i in 0..t {
        let col = |x: &Array, d: i32| x.slice_axis(2, i, i + 1)?.reshape(&[b, hv, d, 1]);
        let (q_t, k_t, v_t) = (col(&qh, dk)?, col(&kh, dk)?, col(&vh, dv)?);
        let g_t = gh.slice_axis(2, i, i + 1)?.reshape(&[b, hv, 1, 1])?;
        let b_t = bh.slice_axis(2, i, i + 1)?.reshape(&[b, hv, 1, 1])?;
        let decayed = s.multiply(&g_t)?;
        // (v − S k) β: [B, Hv, Dv, 1]
        let delta = v_t.subtract(&decayed.matmul(&k_t)?)?.multiply(&b_t)?;
        let next = decayed.add(&delta.multiply(&k_t.reshape(&[b, hv, 1, dk])?)?)?;
        ys.push(next.matmul(&q_t)?.reshape(&[b, 1, hv, dv])?);
        s = match mask {
            Some(m) => mlx::where_(&m.slice_axis(1, i, i + 1)?.reshape(&[b, 1, 1, 1])?, &next, &s)?,
            None => next,
        };
    }
    let y = if ys.len() == 1 { ys.pop().expect("one step") } else { mlx::concatenate(&ys.iter().collect::<Vec<_>>(), 1)? };
    Ok((y.astype(q.dtype())?, s))
}

/// A causal depthwise convolution of `x` `[B, L, C]` with `weight` `[K, C]`
/// (tap j multiplies the input j − (K−1) steps back), continuing from `state`
/// `[B, K−1, C]` (the previous inputs; None for zeros). Returns the output
/// `[B, L, C]` and the new state (the last K−1 inputs).
pub fn causal_conv(x: &Array, weight: &Array, state: Option<&Array>) -> Result<(Array, Array)> {
    let (b, l, c) = (x.dim(0), x.dim(1), x.dim(2));
    let k = weight.dim(0);
    if weight.ndim() != 2 || weight.dim(1) != c || k < 1 {
        return Err(Error::InvalidArgument(format!("causal conv: weight {:?} for {c} channels", weight.shape())));
    }
    let prev = match state {
        Some(s) if s.shape() == [b, k - 1, c] => s.astype(x.dtype())?,
        Some(s) => return Err(Error::InvalidArgument(format!("causal conv: state {:?}, expected [{b}, {}, {c}]", s.shape(), k - 1))),
        None => mlx::zeros(&[b, k - 1, c], x.dtype())?,
    };
    let all = if k > 1 { mlx::concatenate(&[&prev, x], 1)? } else { x.clone() };
    let w = weight.astype(x.dtype())?;
    let mut out: Option<Array> = None;
    for j in 0..k {
        let term = all.slice_axis(1, j, j + l)?.multiply(&w.slice_axis(0, j, j + 1)?)?;
        out = Some(match out {
            Some(o) => o.add(&term)?,
            None => term,
        });
    }
    let total = l + k - 1;
    let next = all.slice_axis(1, total - (k - 1), total)?;
    Ok((out.expect("k >= 1"), next))
}

/// Qwen 3.5's gated delta net: in_proj_qkv → causal conv → SiLU → q, k, v;
/// in_proj_a/b → decay and write strength; the rule; a gated RMSNorm by
/// in_proj_z; out_proj.
pub struct GatedDeltaNet {
    in_qkv: Linear,
    in_z: Linear,
    in_b: Linear,
    in_a: Linear,
    out: Linear,
    /// `[K, C]` taps (from the checkpoint's `[C, 1, K]` or mlx-lm's `[C, K, 1]`).
    conv: Array,
    /// `−exp(A_log)` `[Hv]` float32.
    neg_a: Array,
    dt_bias: Array,
    norm: Array,
    eps: f32,
    k_heads: i32,
    v_heads: i32,
    k_dim: i32,
    v_dim: i32,
}

/// The linear-attention sizes of config.json (`linear_*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearDims {
    pub k_heads: usize,
    pub v_heads: usize,
    pub k_dim: usize,
    pub v_dim: usize,
    pub conv_kernel: usize,
}

impl GatedDeltaNet {
    pub fn load(w: &mut Weights, cfg: &ModelConfig, dims: &LinearDims, layer: usize) -> Result<GatedDeltaNet> {
        let p = format!("model.layers.{layer}.linear_attn");
        let (h, kd, vd) = (cfg.hidden_size, dims.k_heads * dims.k_dim, dims.v_heads * dims.v_dim);
        let c = 2 * kd + vd;
        let conv = w.take(&format!("{p}.conv1d.weight"))?;
        let taps = dims.conv_kernel as i32;
        let conv = match conv.shape().as_slice() {
            [ch, 1, kk] | [ch, kk, 1] if *ch as usize == c && *kk == taps => conv.reshape(&[c as i32, taps])?.transpose(&[1, 0])?.contiguous()?,
            s => return Err(Error::Model(format!("'{p}.conv1d.weight' has shape {s:?}, expected [{c}, 1, {taps}]"))),
        };
        let a_log = w.take_shaped(&format!("{p}.A_log"), &[dims.v_heads])?;
        Ok(GatedDeltaNet {
            in_qkv: Linear::load(w, cfg, &format!("{p}.in_proj_qkv"), h, c, false)?,
            in_z: Linear::load(w, cfg, &format!("{p}.in_proj_z"), h, vd, false)?,
            in_b: Linear::load(w, cfg, &format!("{p}.in_proj_b"), h, dims.v_heads, false)?,
            in_a: Linear::load(w, cfg, &format!("{p}.in_proj_a"), h, dims.v_heads, false)?,
            out: Linear::load(w, cfg, &format!("{p}.out_proj"), vd, h, false)?,
            conv,
            neg_a: a_log.astype(Dtype::F32)?.exp()?.negative()?,
            dt_bias: w.take_shaped(&format!("{p}.dt_bias"), &[dims.v_heads])?.astype(Dtype::F32)?,
            norm: w.take_shaped(&format!("{p}.norm.weight"), &[dims.v_dim])?,
            eps: cfg.rms_norm_eps,
            k_heads: dims.k_heads as i32,
            v_heads: dims.v_heads as i32,
            k_dim: dims.k_dim as i32,
            v_dim: dims.v_dim as i32,
        })
    }

    /// The layer on `x` `[B, L, hidden]`; with a cache it continues from and
    /// updates the cache's states (an empty growing cache is replaced by a
    /// recurrent one: callers that know no layer kinds can pass fresh caches).
    pub fn forward(&self, x: &Array, cache: Option<&mut KvCache>, ctx: &Context) -> Result<Array> {
        let (b, l) = (x.dim(0), x.dim(1));
        let (hk, hv, dk, dv) = (self.k_heads, self.v_heads, self.k_dim, self.v_dim);
        let mut cache = cache;
        if let Some(c) = cache.as_deref_mut() {
            if !c.is_recurrent() && c.offset() == 0 {
                *c = KvCache::recurrent();
            }
        }
        // Which of the new positions hold real tokens (left padding of a batch); a
        // decode step's one token is always real.
        let mask = match ctx.valid {
            Some(v) if l > 1 => {
                let n = v.dim(1);
                Some(v.slice_axis(1, n - l, n)?)
            }
            _ => None,
        };
        let mut qkv = self.in_qkv.forward(x)?;
        if let Some(m) = &mask {
            qkv = mlx::where_(&m.expand_dims(&[2])?, &qkv, &Array::scalar_as(0.0, qkv.dtype())?)?;
        }
        let z = self.in_z.forward(x)?.reshape(&[b, l, hv, dv])?;
        let beta = self.in_b.forward(x)?.sigmoid()?;
        let a = self.in_a.forward(x)?.astype(Dtype::F32)?.add(&self.dt_bias)?;
        let g = softplus(&a)?.multiply(&self.neg_a)?.exp()?;
        let (conv_state, state) = match cache.as_deref() {
            Some(c) => c.recurrent_state()?,
            None => (None, None),
        };
        let (conv_out, next_conv) = causal_conv(&qkv, &self.conv, conv_state)?;
        let conv_out = conv_out.multiply(&conv_out.sigmoid()?)?;
        let parts = conv_out.split_at(&[hk * dk, 2 * hk * dk], -1)?;
        let q = parts[0].reshape(&[b, l, hk, dk])?;
        let k = parts[1].reshape(&[b, l, hk, dk])?;
        let v = parts[2].reshape(&[b, l, hv, dv])?;
        // L2 norms as RMS norms: rms_norm(x, ε/D) = √D · x / √(Σx² + ε).
        let inv = 1.0 / (dk as f32).sqrt();
        let q = fast::rms_norm(&q, None, 1e-6 / dk as f32)?.mul_scalar(inv * inv)?;
        let k = fast::rms_norm(&k, None, 1e-6 / dk as f32)?.mul_scalar(inv)?;
        if let Some(s) = state {
            if s.shape() != [b, hv, dv, dk] {
                return Err(Error::InvalidArgument(format!("recurrent state {:?}, expected [{b}, {hv}, {dv}, {dk}]", s.shape())));
            }
        }
        let (y, next_state) = gated_delta(&q, &k, &v, &g, &beta, state, mask.as_ref())?;
        if let Some(c) = cache {
            c.set_recurrent(next_conv, next_state, l as usize)?;
        }
        // Gated RMSNorm: norm(y) · w, times SiLU(z) in float32.
        let normed = fast::rms_norm(&y, Some(&self.norm), self.eps)?;
        let z32 = z.astype(Dtype::F32)?;
        let gated = normed.astype(Dtype::F32)?.multiply(&z32.multiply(&z32.sigmoid()?)?)?.astype(x.dtype())?;
        self.out.forward(&gated.reshape(&[b, l, hv * dv])?)
    }

    /// The projections by name within the layer (`in_proj_qkv`, ..., `out_proj`).
    pub fn linears(&self) -> Vec<(&'static str, &Linear)> {
        vec![("in_proj_qkv", &self.in_qkv), ("in_proj_z", &self.in_z), ("in_proj_b", &self.in_b), ("in_proj_a", &self.in_a), ("out_proj", &self.out)]
    }

    pub fn linears_mut(&mut self) -> Vec<(&'static str, &mut Linear)> {
        vec![
            ("in_proj_qkv", &mut self.in_qkv),
            ("in_proj_z", &mut self.in_z),
            ("in_proj_b", &mut self.in_b),
            ("in_proj_a", &mut self.in_a),
            ("out_proj", &mut self.out),
        ]
    }

    pub fn arrays(&self) -> Vec<&Array> {
        let mut v: Vec<&Array> = self.linears().into_iter().flat_map(|(_, l)| l.arrays()).collect();
        v.extend([&self.conv, &self.neg_a, &self.dt_bias, &self.norm]);
        v
    }
}

/// `ln(1 + eˣ)` without overflow: `max(x, 0) + ln(1 + e^−|x|)`.
fn softplus(x: &Array) -> Result<Array> {
    let zero = Array::scalar_as(0.0, x.dtype())?;
    x.maximum(&zero)?.add(&x.abs()?.negative()?.exp()?.log1p()?)
}
