//! Evaluation of lazy arrays.

use super::array::Array;
use super::vector::VectorArray;
use super::{status, sys};
use crate::Result;

/// Computes all `arrays` (sharing common subgraphs) and waits.
pub fn eval(arrays: &[&Array]) -> Result<()> {
    status::init();
    let v = VectorArray::from_arrays(arrays);
    status::check(unsafe { sys::mlx_eval(v.raw()) })
}

/// Queues the computation of `arrays` and returns at once; reading them later
/// waits for the result. Lets step n+1 be built while step n computes.
pub fn async_eval(arrays: &[&Array]) -> Result<()> {
    status::init();
    let v = VectorArray::from_arrays(arrays);
    status::check(unsafe { sys::mlx_async_eval(v.raw()) })
}
