//! `Array`: one owned MLX array, freed on drop.

use super::{status, stream, sys};
use crate::{Error, Result};
use half::{bf16, f16};
use std::ffi::{c_void, CStr};
use std::fmt;

/// Element types of MLX arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    BF16,
    Complex64,
}

impl Dtype {
    pub(crate) fn raw(self) -> sys::mlx_dtype {
        use Dtype::*;
        match self {
            Bool => sys::MLX_BOOL,
            U8 => sys::MLX_UINT8,
            U16 => sys::MLX_UINT16,
            U32 => sys::MLX_UINT32,
            U64 => sys::MLX_UINT64,
            I8 => sys::MLX_INT8,
            I16 => sys::MLX_INT16,
            I32 => sys::MLX_INT32,
            I64 => sys::MLX_INT64,
            F16 => sys::MLX_FLOAT16,
            F32 => sys::MLX_FLOAT32,
            F64 => sys::MLX_FLOAT64,
            BF16 => sys::MLX_BFLOAT16,
            Complex64 => sys::MLX_COMPLEX64,
        }
    }

    pub(crate) fn from_raw(raw: sys::mlx_dtype) -> Dtype {
        use Dtype::*;
        match raw {
            sys::MLX_BOOL => Bool,
            sys::MLX_UINT8 => U8,
            sys::MLX_UINT16 => U16,
            sys::MLX_UINT32 => U32,
            sys::MLX_UINT64 => U64,
            sys::MLX_INT8 => I8,
            sys::MLX_INT16 => I16,
            sys::MLX_INT32 => I32,
            sys::MLX_INT64 => I64,
            sys::MLX_FLOAT16 => F16,
            sys::MLX_FLOAT32 => F32,
            sys::MLX_FLOAT64 => F64,
            sys::MLX_BFLOAT16 => BF16,
            _ => Complex64,
        }
    }

    pub fn size(self) -> usize {
        unsafe { sys::mlx_dtype_size(self.raw()) }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::F32 | Dtype::F64 | Dtype::BF16)
    }

    pub fn name(self) -> &'static str {
        use Dtype::*;
        match self {
            Bool => "bool",
            U8 => "uint8",
            U16 => "uint16",
            U32 => "uint32",
            U64 => "uint64",
            I8 => "int8",
            I16 => "int16",
            I32 => "int32",
            I64 => "int64",
            F16 => "float16",
            F32 => "float32",
            F64 => "float64",
            BF16 => "bfloat16",
            Complex64 => "complex64",
        }
    }

    /// Parses the names used in config files and options ("bf16", "bfloat16", "float32", ...).
    pub fn parse(name: &str) -> Result<Dtype> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Dtype::F32,
            "f16" | "float16" | "half" => Dtype::F16,
            "bf16" | "bfloat16" => Dtype::BF16,
            "f64" | "float64" => Dtype::F64,
            other => return Err(Error::InvalidArgument(format!("unknown dtype '{other}' (expected float32, float16 or bfloat16)"))),
        })
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rust types that map one-to-one onto an MLX dtype.
pub trait Element: Copy + Default + 'static {
    const DTYPE: Dtype;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => { $(impl Element for $t { const DTYPE: Dtype = Dtype::$d; })* };
}
element!(bool => Bool, u8 => U8, u16 => U16, u32 => U32, u64 => U64, i8 => I8, i16 => I16,
         i32 => I32, i64 => I64, f16 => F16, f32 => F32, f64 => F64, bf16 => BF16);

/// An owned MLX array. Cloning shares the underlying buffer (MLX arrays are
/// reference counted); each Rust value frees its own handle on drop.
pub struct Array {
    raw: sys::mlx_array,
}

// MLX arrays are immutable, reference-counted graph nodes; handing one to
// another thread is sound, while using a stream from two threads is prevented
// by the engine-thread rule.
unsafe impl Send for Array {}

impl Drop for Array {
    fn drop(&mut self) {
        unsafe { sys::mlx_array_free(self.raw) };
    }
}

impl Clone for Array {
    fn clone(&self) -> Array {
        let mut raw = unsafe { sys::mlx_array_new() };
        unsafe { sys::mlx_array_set(&mut raw, self.raw) };
        Array { raw }
    }
}

impl Array {
    /// Takes ownership of a raw handle.
    pub(crate) fn from_raw(raw: sys::mlx_array) -> Array {
        Array { raw }
    }

    pub(crate) fn raw(&self) -> sys::mlx_array {
        self.raw
    }

    /// Runs an mlx-c op that writes one array, on the thread's current stream.
    pub(crate) fn op(f: impl FnOnce(*mut sys::mlx_array, sys::mlx_stream) -> i32) -> Result<Array> {
        status::init();
        let mut raw = unsafe { sys::mlx_array_new() };
        let rc = f(&mut raw, stream::current());
        let out = Array { raw };
        status::check(rc)?;
        Ok(out)
    }

    /// An array copied from `data` with the given shape.
    pub fn from_slice<T: Element>(data: &[T], shape: &[i32]) -> Result<Array> {
        let n: i64 = shape.iter().map(|&d| d as i64).product();
        if shape.iter().any(|&d| d < 0) || n as usize != data.len() {
            return Err(Error::InvalidArgument(format!("shape {shape:?} holds {n} elements but {} were given", data.len())));
        }
        status::init();
        let raw = unsafe { sys::mlx_array_new_data(data.as_ptr() as *const c_void, shape.as_ptr(), shape.len() as i32, T::DTYPE.raw()) };
        Ok(Array { raw })
    }

    /// An array copied from raw little-endian `bytes` of `dtype` with the given shape
    /// (e.g. a slice of a safetensors file).
    pub fn from_bytes(bytes: &[u8], shape: &[i32], dtype: Dtype) -> Result<Array> {
        let n: i64 = shape.iter().map(|&d| d as i64).product();
        if shape.iter().any(|&d| d < 0) || n as usize * dtype.size() != bytes.len() {
            return Err(Error::InvalidArgument(format!("shape {shape:?} of {dtype} takes {} bytes but {} were given", n as usize * dtype.size(), bytes.len())));
        }
        status::init();
        let raw = unsafe { sys::mlx_array_new_data(bytes.as_ptr() as *const c_void, shape.as_ptr(), shape.len() as i32, dtype.raw()) };
        Ok(Array { raw })
    }

    /// A 0-d array holding `value`.
    pub fn scalar<T: Element>(value: T) -> Array {
        Array::from_slice(&[value], &[]).expect("a scalar always has a valid shape")
    }

    /// A 0-d float array of `value` in `dtype`, so that mixing with arrays of
    /// that dtype does not promote them (MLX would promote bf16 * f32 to f32).
    pub fn scalar_as(value: f32, dtype: Dtype) -> Result<Array> {
        Array::scalar(value).astype(dtype)
    }

    pub fn ndim(&self) -> usize {
        unsafe { sys::mlx_array_ndim(self.raw) }
    }

    pub fn shape(&self) -> Vec<i32> {
        let n = self.ndim();
        if n == 0 {
            return Vec::new();
        }
        unsafe { std::slice::from_raw_parts(sys::mlx_array_shape(self.raw), n) }.to_vec()
    }

    /// Size of one axis; negative axes count from the end.
    pub fn dim(&self, axis: i32) -> i32 {
        let shape = self.shape();
        let n = shape.len() as i32;
        let axis = if axis < 0 { axis + n } else { axis };
        shape[axis as usize]
    }

    pub fn size(&self) -> usize {
        unsafe { sys::mlx_array_size(self.raw) }
    }

    pub fn nbytes(&self) -> usize {
        unsafe { sys::mlx_array_nbytes(self.raw) }
    }

    pub fn dtype(&self) -> Dtype {
        Dtype::from_raw(unsafe { sys::mlx_array_dtype(self.raw) })
    }

    /// Computes the array (and what it depends on) now.
    pub fn eval(&self) -> Result<()> {
        status::init();
        super::transforms::serialized(|| status::check(unsafe { sys::mlx_array_eval(self.raw) }))
    }

    /// The single value of a one-element array, converted to `T`'s dtype first if needed.
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.size() != 1 {
            return Err(Error::InvalidArgument(format!("item() of an array of shape {:?}", self.shape())));
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// All elements in row-major order, converted to `T`'s dtype if needed.
    /// Correct for views (transposes, slices, broadcasts): they are made
    /// row-contiguous first.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        // Already the right dtype and row-contiguous once computed: read it in place.
        // Adding ops here (a copy, a cast) would queue them behind whatever the
        // stream has queued since, e.g. the next decode step, and wait for all of it.
        if self.dtype() == T::DTYPE && !matches!(T::DTYPE, Dtype::F16 | Dtype::BF16) {
            self.eval()?;
            let mut row_contiguous = false;
            unsafe { sys::_mlx_array_is_row_contiguous(&mut row_contiguous, self.raw) };
            if row_contiguous {
                let n = self.size();
                if n == 0 {
                    return Ok(Vec::new());
                }
                let ptr = data_ptr(self, T::DTYPE);
                if !ptr.is_null() {
                    return Ok(unsafe { std::slice::from_raw_parts(ptr as *const T, n) }.to_vec());
                }
            }
        }
        let typed = if self.dtype() == T::DTYPE { self.clone() } else { self.astype(T::DTYPE)? };
        let mut dense = Array::op(|res, s| unsafe { sys::mlx_contiguous(res, typed.raw, false, s) })?;
        // mlx-c has typed accessors for 16-bit floats only on Arm: read their bits as u16.
        let read_as = match T::DTYPE {
            Dtype::F16 | Dtype::BF16 => {
                dense = Array::op(|res, s| unsafe { sys::mlx_view(res, dense.raw, sys::MLX_UINT16, s) })?;
                Dtype::U16
            }
            d => d,
        };
        dense.eval()?;
        let n = dense.size();
        if n == 0 {
            return Ok(Vec::new());
        }
        let ptr = data_ptr(&dense, read_as);
        if ptr.is_null() {
            return Err(Error::Mlx("array has no data after evaluation".into()));
        }
        Ok(unsafe { std::slice::from_raw_parts(ptr as *const T, n) }.to_vec())
    }

    /// MLX's printed form, for debugging.
    pub fn describe(&self) -> String {
        let mut s = unsafe { sys::mlx_string_new() };
        unsafe { sys::mlx_array_tostring(&mut s, self.raw) };
        let text = unsafe { CStr::from_ptr(sys::mlx_string_data(s)) }.to_string_lossy().into_owned();
        unsafe { sys::mlx_string_free(s) };
        text
    }
}

fn data_ptr(a: &Array, dtype: Dtype) -> *const c_void {
    use Dtype::*;
    let r = a.raw;
    unsafe {
        match dtype {
            Bool => sys::mlx_array_data_bool(r) as _,
            U8 => sys::mlx_array_data_uint8(r) as _,
            U16 => sys::mlx_array_data_uint16(r) as _,
            U32 => sys::mlx_array_data_uint32(r) as _,
            U64 => sys::mlx_array_data_uint64(r) as _,
            I8 => sys::mlx_array_data_int8(r) as _,
            I16 => sys::mlx_array_data_int16(r) as _,
            I32 => sys::mlx_array_data_int32(r) as _,
            I64 => sys::mlx_array_data_int64(r) as _,
            F32 => sys::mlx_array_data_float32(r) as _,
            F64 => sys::mlx_array_data_float64(r) as _,
            Complex64 => sys::mlx_array_data_complex64(r) as _,
            F16 | BF16 => unreachable!("16-bit floats are read as u16"),
        }
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Array({:?}, {})", self.shape(), self.dtype())
    }
}
