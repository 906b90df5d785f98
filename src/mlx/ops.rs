//! The array operations a transformer and its training need. Each runs on the
//! calling thread's current stream and returns a new lazy array.

use super::array::{Array, Dtype};
use super::sys;
use super::vector::VectorArray;
use crate::Result;

fn opt_int(v: Option<i32>) -> sys::mlx_optional_int {
    sys::mlx_optional_int { value: v.unwrap_or(0), has_value: v.is_some() }
}

fn opt_dtype(v: Option<Dtype>) -> sys::mlx_optional_dtype {
    sys::mlx_optional_dtype { value: v.map(Dtype::raw).unwrap_or(sys::MLX_FLOAT32), has_value: v.is_some() }
}

fn null_array() -> sys::mlx_array {
    sys::mlx_array { ctx: std::ptr::null_mut() }
}

fn raw_or_null(a: Option<&Array>) -> sys::mlx_array {
    a.map(Array::raw).unwrap_or_else(null_array)
}

macro_rules! unary {
    ($($(#[$doc:meta])* $name:ident => $ffi:ident),* $(,)?) => {
        impl Array { $(
            $(#[$doc])*
            pub fn $name(&self) -> Result<Array> {
                Array::op(|r, s| unsafe { sys::$ffi(r, self.raw(), s) })
            }
        )* }
    };
}

macro_rules! binary {
    ($($(#[$doc:meta])* $name:ident => $ffi:ident),* $(,)?) => {
        impl Array { $(
            $(#[$doc])*
            pub fn $name(&self, other: &Array) -> Result<Array> {
                Array::op(|r, s| unsafe { sys::$ffi(r, self.raw(), other.raw(), s) })
            }
        )* }
    };
}

unary! {
    exp => mlx_exp, log => mlx_log, tanh => mlx_tanh, erf => mlx_erf, sigmoid => mlx_sigmoid,
    sqrt => mlx_sqrt, rsqrt => mlx_rsqrt, square => mlx_square, negative => mlx_negative,
    abs => mlx_abs, cos => mlx_cos, sin => mlx_sin, logical_not => mlx_logical_not,
    stop_gradient => mlx_stop_gradient, log1p => mlx_log1p, floor => mlx_floor,
    /// A copy that owns its own buffer.
    copy => mlx_copy,
}

binary! {
    add => mlx_add, subtract => mlx_subtract, multiply => mlx_multiply, divide => mlx_divide,
    matmul => mlx_matmul, maximum => mlx_maximum, minimum => mlx_minimum, power => mlx_power,
    greater => mlx_greater, greater_equal => mlx_greater_equal, less => mlx_less,
    less_equal => mlx_less_equal, equal => mlx_equal, not_equal => mlx_not_equal,
    logical_and => mlx_logical_and, logical_or => mlx_logical_or,
    floor_divide => mlx_floor_divide,
}

impl Array {
    /// `self * value` with `value` in self's dtype (no promotion).
    pub fn mul_scalar(&self, value: f32) -> Result<Array> {
        self.multiply(&Array::scalar_as(value, self.dtype())?)
    }

    /// `self + value` with `value` in self's dtype (no promotion).
    pub fn add_scalar(&self, value: f32) -> Result<Array> {
        self.add(&Array::scalar_as(value, self.dtype())?)
    }

    pub fn astype(&self, dtype: Dtype) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_astype(r, self.raw(), dtype.raw(), s) })
    }

    pub fn reshape(&self, shape: &[i32]) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_reshape(r, self.raw(), shape.as_ptr(), shape.len(), s) })
    }

    pub fn flatten(&self, start_axis: i32, end_axis: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_flatten(r, self.raw(), start_axis, end_axis, s) })
    }

    /// Permutes the axes; an empty `axes` reverses them.
    pub fn transpose(&self, axes: &[i32]) -> Result<Array> {
        if axes.is_empty() {
            return Array::op(|r, s| unsafe { sys::mlx_transpose(r, self.raw(), s) });
        }
        Array::op(|r, s| unsafe { sys::mlx_transpose_axes(r, self.raw(), axes.as_ptr(), axes.len(), s) })
    }

    pub fn swapaxes(&self, a: i32, b: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_swapaxes(r, self.raw(), a, b, s) })
    }

    pub fn expand_dims(&self, axes: &[i32]) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_expand_dims_axes(r, self.raw(), axes.as_ptr(), axes.len(), s) })
    }

    pub fn squeeze(&self, axes: &[i32]) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_squeeze_axes(r, self.raw(), axes.as_ptr(), axes.len(), s) })
    }

    pub fn broadcast_to(&self, shape: &[i32]) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_broadcast_to(r, self.raw(), shape.as_ptr(), shape.len(), s) })
    }

    /// Row-contiguous copy when self is a view, else self.
    pub fn contiguous(&self) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_contiguous(r, self.raw(), false, s) })
    }

    pub fn sum(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        if axes.is_empty() {
            return Array::op(|r, s| unsafe { sys::mlx_sum(r, self.raw(), keepdims, s) });
        }
        Array::op(|r, s| unsafe { sys::mlx_sum_axes(r, self.raw(), axes.as_ptr(), axes.len(), keepdims, s) })
    }

    pub fn mean(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_mean_axes(r, self.raw(), axes.as_ptr(), axes.len(), keepdims, s) })
    }

    pub fn max(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_max_axes(r, self.raw(), axes.as_ptr(), axes.len(), keepdims, s) })
    }

    pub fn min(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_min_axes(r, self.raw(), axes.as_ptr(), axes.len(), keepdims, s) })
    }

    pub fn argmax(&self, axis: i32, keepdims: bool) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_argmax_axis(r, self.raw(), axis, keepdims, s) })
    }

    /// Softmax along `axes`, computed in float32 internally (`precise`).
    pub fn softmax(&self, axes: &[i32]) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_softmax_axes(r, self.raw(), axes.as_ptr(), axes.len(), true, s) })
    }

    pub fn logsumexp(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_logsumexp_axes(r, self.raw(), axes.as_ptr(), axes.len(), keepdims, s) })
    }

    pub fn cumsum(&self, axis: i32, reverse: bool, inclusive: bool) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_cumsum_axis(r, self.raw(), axis, reverse, inclusive, opt_dtype(None), s) })
    }

    /// `self[start..stop:strides]` per axis (all three as long as ndim).
    pub fn slice(&self, start: &[i32], stop: &[i32], strides: &[i32]) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_slice(r, self.raw(), start.as_ptr(), start.len(), stop.as_ptr(), stop.len(), strides.as_ptr(), strides.len(), s) })
    }

    /// `self[..., start:stop]` on one axis.
    pub fn slice_axis(&self, axis: i32, start: i32, stop: i32) -> Result<Array> {
        let shape = self.shape();
        let n = shape.len() as i32;
        let axis = (if axis < 0 { axis + n } else { axis }) as usize;
        let mut lo = vec![0; shape.len()];
        let mut hi = shape.clone();
        lo[axis] = start;
        hi[axis] = stop;
        self.slice(&lo, &hi, &vec![1; shape.len()])
    }

    /// `self` with `update` written at `start..stop`.
    pub fn slice_update(&self, update: &Array, start: &[i32], stop: &[i32], strides: &[i32]) -> Result<Array> {
        Array::op(|r, s| unsafe {
            sys::mlx_slice_update(r, self.raw(), update.raw(), start.as_ptr(), start.len(), stop.as_ptr(), stop.len(), strides.as_ptr(), strides.len(), s)
        })
    }

    /// Slice starting at positions held in an array (no host sync for the offset).
    pub fn slice_dynamic(&self, start: &Array, axes: &[i32], sizes: &[i32]) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_slice_dynamic(r, self.raw(), start.raw(), axes.as_ptr(), axes.len(), sizes.as_ptr(), sizes.len(), s) })
    }

    pub fn slice_update_dynamic(&self, update: &Array, start: &Array, axes: &[i32]) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_slice_update_dynamic(r, self.raw(), update.raw(), start.raw(), axes.as_ptr(), axes.len(), s) })
    }

    pub fn take(&self, indices: &Array, axis: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_take_axis(r, self.raw(), indices.raw(), axis, s) })
    }

    pub fn take_along_axis(&self, indices: &Array, axis: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_take_along_axis(r, self.raw(), indices.raw(), axis, s) })
    }

    pub fn put_along_axis(&self, indices: &Array, values: &Array, axis: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_put_along_axis(r, self.raw(), indices.raw(), values.raw(), axis, s) })
    }

    pub fn scatter_add_axis(&self, indices: &Array, values: &Array, axis: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_scatter_add_axis(r, self.raw(), indices.raw(), values.raw(), axis, s) })
    }

    pub fn argsort(&self, axis: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_argsort_axis(r, self.raw(), axis, s) })
    }

    pub fn sort(&self, axis: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_sort_axis(r, self.raw(), axis, s) })
    }

    pub fn argpartition(&self, kth: i32, axis: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_argpartition_axis(r, self.raw(), kth, axis, s) })
    }

    /// The `k` largest values along `axis` (unordered).
    pub fn topk(&self, k: i32, axis: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_topk_axis(r, self.raw(), k, axis, s) })
    }

    pub fn tril(&self, k: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_tril(r, self.raw(), k, s) })
    }

    pub fn triu(&self, k: i32) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_triu(r, self.raw(), k, s) })
    }

    pub fn clip(&self, lo: Option<&Array>, hi: Option<&Array>) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_clip(r, self.raw(), raw_or_null(lo), raw_or_null(hi), s) })
    }

    pub fn split(&self, parts: i32, axis: i32) -> Result<Vec<Array>> {
        let mut out = VectorArray::new();
        super::status::check(unsafe { sys::mlx_split(out.raw_mut(), self.raw(), parts, axis, super::stream::current()) })?;
        out.into_vec()
    }

    pub fn split_at(&self, indices: &[i32], axis: i32) -> Result<Vec<Array>> {
        let mut out = VectorArray::new();
        super::status::check(unsafe { sys::mlx_split_sections(out.raw_mut(), self.raw(), indices.as_ptr(), indices.len(), axis, super::stream::current()) })?;
        out.into_vec()
    }
}

/// `cond ? x : y`, elementwise with broadcasting.
pub fn where_(cond: &Array, x: &Array, y: &Array) -> Result<Array> {
    Array::op(|r, s| unsafe { sys::mlx_where(r, cond.raw(), x.raw(), y.raw(), s) })
}

pub fn concatenate(arrays: &[&Array], axis: i32) -> Result<Array> {
    let v = VectorArray::from_arrays(arrays);
    Array::op(|r, s| unsafe { sys::mlx_concatenate_axis(r, v.raw(), axis, s) })
}

pub fn stack(arrays: &[&Array], axis: i32) -> Result<Array> {
    let v = VectorArray::from_arrays(arrays);
    Array::op(|r, s| unsafe { sys::mlx_stack_axis(r, v.raw(), axis, s) })
}

pub fn zeros(shape: &[i32], dtype: Dtype) -> Result<Array> {
    Array::op(|r, s| unsafe { sys::mlx_zeros(r, shape.as_ptr(), shape.len(), dtype.raw(), s) })
}

pub fn ones(shape: &[i32], dtype: Dtype) -> Result<Array> {
    Array::op(|r, s| unsafe { sys::mlx_ones(r, shape.as_ptr(), shape.len(), dtype.raw(), s) })
}

pub fn full(shape: &[i32], value: f32, dtype: Dtype) -> Result<Array> {
    let v = Array::scalar(value);
    Array::op(|r, s| unsafe { sys::mlx_full(r, shape.as_ptr(), shape.len(), v.raw(), dtype.raw(), s) })
}

pub fn arange(start: f64, stop: f64, step: f64, dtype: Dtype) -> Result<Array> {
    Array::op(|r, s| unsafe { sys::mlx_arange(r, start, stop, step, dtype.raw(), s) })
}

/// Affine quantisation of `w` along its last axis: (packed weights, scales, biases).
pub fn quantize(w: &Array, group_size: i32, bits: i32) -> Result<(Array, Array, Array)> {
    let mut out = VectorArray::new();
    let mode = c"affine";
    super::status::check(unsafe {
        sys::mlx_quantize(out.raw_mut(), w.raw(), opt_int(Some(group_size)), opt_int(Some(bits)), mode.as_ptr(), null_array(), super::stream::current())
    })?;
    let mut v = out.into_vec()?.into_iter();
    match (v.next(), v.next(), v.next()) {
        (Some(q), Some(s), Some(b)) => Ok((q, s, b)),
        _ => Err(crate::Error::Mlx("quantize returned fewer than three arrays".into())),
    }
}

/// The dense matrix of MLX affine-quantised `w`, in `dtype` (default: the scales').
///
/// With a `dtype` other than the scales', the scales and biases are cast to it
/// first: MLX computes `q · scale + bias` in the scales' dtype and casts after,
/// which for bf16/f16 scales on the CPU is emulated half-precision arithmetic
/// (45% of loading a Q4_1 GGUF as float32 went to it) and rounds every weight
/// to half precision before widening it.
pub fn dequantize(w: &Array, scales: &Array, biases: &Array, group_size: i32, bits: i32, dtype: Option<Dtype>) -> Result<Array> {
    let mode = c"affine";
    let widen = |a: &Array| match dtype {
        Some(d) if d != a.dtype() && d.size() > a.dtype().size() => a.astype(d),
        _ => Ok(a.clone()),
    };
    let (scales, biases) = (widen(scales)?, widen(biases)?);
    Array::op(|r, s| unsafe {
        sys::mlx_dequantize(
            r,
            w.raw(),
            scales.raw(),
            biases.raw(),
            opt_int(Some(group_size)),
            opt_int(Some(bits)),
            mode.as_ptr(),
            null_array(),
            opt_dtype(dtype),
            s,
        )
    })
}

/// `dequantize` in any of MLX's modes (`mxfp4` has no biases).
pub fn dequantize_mode(
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    group_size: i32,
    bits: i32,
    mode: &std::ffi::CStr,
    dtype: Option<Dtype>,
) -> Result<Array> {
    Array::op(|r, s| unsafe {
        sys::mlx_dequantize(
            r,
            w.raw(),
            scales.raw(),
            raw_or_null(biases),
            opt_int(Some(group_size)),
            opt_int(Some(bits)),
            mode.as_ptr(),
            null_array(),
            opt_dtype(dtype),
            s,
        )
    })
}

/// `x @ dequantize(w).T` (with `transpose`) without materialising the weights.
pub fn quantized_matmul(x: &Array, w: &Array, scales: &Array, biases: &Array, transpose: bool, group_size: i32, bits: i32) -> Result<Array> {
    let mode = c"affine";
    Array::op(|r, s| unsafe {
        sys::mlx_quantized_matmul(r, x.raw(), w.raw(), scales.raw(), biases.raw(), transpose, opt_int(Some(group_size)), opt_int(Some(bits)), mode.as_ptr(), s)
    })
}

pub(crate) fn optional_raw(a: Option<&Array>) -> sys::mlx_array {
    raw_or_null(a)
}

/// `a @ b` with the matrices picked per batch element: `b[rhs_indices]` (and
/// `a[lhs_indices]`) over the batch axes; the mixture-of-experts product, each
/// token times its chosen experts' matrices. `sorted_indices` promises that
/// `rhs_indices` is sorted (tokens grouped by expert), which lets the kernel
/// read each expert's matrix once.
pub fn gather_mm(a: &Array, b: &Array, lhs_indices: Option<&Array>, rhs_indices: Option<&Array>, sorted_indices: bool) -> Result<Array> {
    Array::op(|r, s| unsafe { sys::mlx_gather_mm(r, a.raw(), b.raw(), raw_or_null(lhs_indices), raw_or_null(rhs_indices), sorted_indices, s) })
}

/// A quantised weight of `gather_mm`: `x @ dequantize(w[rhs_indices]).T` (with
/// `transpose`) in MLX's `mode` (`affine` with `biases`, `mxfp4` without).
#[allow(clippy::too_many_arguments)]
pub fn gather_qmm(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    rhs_indices: Option<&Array>,
    transpose: bool,
    group_size: i32,
    bits: i32,
    mode: &std::ffi::CStr,
    sorted_indices: bool,
) -> Result<Array> {
    Array::op(|r, s| unsafe {
        sys::mlx_gather_qmm(
            r,
            x.raw(),
            w.raw(),
            scales.raw(),
            raw_or_null(biases),
            null_array(),
            raw_or_null(rhs_indices),
            transpose,
            opt_int(Some(group_size)),
            opt_int(Some(bits)),
            mode.as_ptr(),
            sorted_indices,
            s,
        )
    })
}

impl Array {
    /// The same bytes read as `dtype` (the last axis scales by the size ratio).
    pub fn view(&self, dtype: Dtype) -> Result<Array> {
        Array::op(|r, s| unsafe { sys::mlx_view(r, self.raw(), dtype.raw(), s) })
    }
}
