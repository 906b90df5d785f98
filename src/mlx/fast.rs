//! MLX's fused kernels: RMSNorm, LayerNorm, RoPE, scaled dot-product attention.

use super::array::Array;
use super::ops::optional_raw;
use super::sys;
use crate::Result;

pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Array> {
    Array::op(|r, s| unsafe { sys::mlx_fast_rms_norm(r, x.raw(), optional_raw(weight), eps, s) })
}

pub fn layer_norm(x: &Array, weight: Option<&Array>, bias: Option<&Array>, eps: f32) -> Result<Array> {
    Array::op(|r, s| unsafe { sys::mlx_fast_layer_norm(r, x.raw(), optional_raw(weight), optional_raw(bias), eps, s) })
}

/// Rotary embedding over the last axis of `x` (`[B, H, L, D]`), positions
/// starting at `offset`. Give `base` or precomputed `freqs` (e.g. Llama 3 scaling).
pub struct Rope<'a> {
    pub dims: i32,
    pub traditional: bool,
    pub base: Option<f32>,
    pub scale: f32,
    pub freqs: Option<&'a Array>,
}

impl Rope<'_> {
    pub fn apply(&self, x: &Array, offset: i32) -> Result<Array> {
        let base = sys::mlx_optional_float { value: self.base.unwrap_or(0.0), has_value: self.base.is_some() };
        Array::op(|r, s| unsafe { sys::mlx_fast_rope(r, x.raw(), self.dims, self.traditional, base, self.scale, offset, optional_raw(self.freqs), s) })
    }

    /// Same with the offset held in an array (one per batch row, or a scalar).
    pub fn apply_dynamic(&self, x: &Array, offset: &Array) -> Result<Array> {
        let base = sys::mlx_optional_float { value: self.base.unwrap_or(0.0), has_value: self.base.is_some() };
        Array::op(|r, s| unsafe {
            sys::mlx_fast_rope_dynamic(r, x.raw(), self.dims, self.traditional, base, self.scale, offset.raw(), optional_raw(self.freqs), s)
        })
    }
}

/// The mask of an attention call.
pub enum AttentionMask<'a> {
    None,
    /// Lower-triangular, aligned to the end of the keys (queries are the last L positions).
    Causal,
    /// Additive float mask or boolean keep-mask, broadcastable to `[B, H, Lq, Lk]`.
    Array(&'a Array),
}

/// softmax(q kᵀ · scale + mask) v over `[B, H, L, D]` inputs; grouped-query
/// attention (fewer KV heads) is handled by the kernel.
pub fn scaled_dot_product_attention(q: &Array, k: &Array, v: &Array, scale: f32, mask: AttentionMask) -> Result<Array> {
    scaled_dot_product_attention_sinks(q, k, v, scale, mask, None)
}

/// The same with attention sinks (gpt-oss): one learned logit per query head
/// joins each softmax's denominator, so a head may attend to nothing.
pub fn scaled_dot_product_attention_sinks(q: &Array, k: &Array, v: &Array, scale: f32, mask: AttentionMask, sinks: Option<&Array>) -> Result<Array> {
    let (mode, arr) = match mask {
        AttentionMask::None => (c"", None),
        AttentionMask::Causal => (c"causal", None),
        AttentionMask::Array(a) => (c"array", Some(a)),
    };
    Array::op(|r, s| unsafe {
        sys::mlx_fast_scaled_dot_product_attention(r, q.raw(), k.raw(), v.raw(), scale, mode.as_ptr(), optional_raw(arr), optional_raw(sinks), false, s)
    })
}
