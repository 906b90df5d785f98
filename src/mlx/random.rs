//! Seeded random numbers. Explicit keys make sampling reproducible per request.

use super::array::{Array, Dtype};
use super::ops::optional_raw;
use super::{status, sys};
use crate::Result;

/// A PRNG key from a seed.
pub fn key(seed: u64) -> Result<Array> {
    status::init();
    let mut raw = unsafe { sys::mlx_array_new() };
    let rc = unsafe { sys::mlx_random_key(&mut raw, seed) };
    let a = Array::from_raw(raw);
    status::check(rc).map(|_| a)
}

/// Splits a key into two fresh keys.
pub fn split(key: &Array) -> Result<(Array, Array)> {
    let mut a = unsafe { sys::mlx_array_new() };
    let mut b = unsafe { sys::mlx_array_new() };
    let rc = unsafe { sys::mlx_random_split(&mut a, &mut b, key.raw(), super::stream::current()) };
    let (a, b) = (Array::from_raw(a), Array::from_raw(b));
    status::check(rc).map(|_| (a, b))
}

/// One sample per row from unnormalised log-probabilities along `axis`.
pub fn categorical(logits: &Array, axis: i32, key: Option<&Array>) -> Result<Array> {
    Array::op(|r, s| unsafe { sys::mlx_random_categorical(r, logits.raw(), axis, optional_raw(key), s) })
}

/// Uniform samples in [low, high).
pub fn uniform(low: f32, high: f32, shape: &[i32], dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    let (lo, hi) = (Array::scalar(low), Array::scalar(high));
    Array::op(|r, s| unsafe { sys::mlx_random_uniform(r, lo.raw(), hi.raw(), shape.as_ptr(), shape.len(), dtype.raw(), optional_raw(key), s) })
}

pub fn normal(shape: &[i32], dtype: Dtype, loc: f32, scale: f32, key: Option<&Array>) -> Result<Array> {
    Array::op(|r, s| unsafe { sys::mlx_random_normal(r, shape.as_ptr(), shape.len(), dtype.raw(), loc, scale, optional_raw(key), s) })
}

pub fn bernoulli(p: f32, shape: &[i32], key: Option<&Array>) -> Result<Array> {
    let p = Array::scalar(p);
    Array::op(|r, s| unsafe { sys::mlx_random_bernoulli(r, p.raw(), shape.as_ptr(), shape.len(), optional_raw(key), s) })
}
