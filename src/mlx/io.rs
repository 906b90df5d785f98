//! Weight files: safetensors through mlx-c (no copy through Rust memory) and
//! GGUF through MLX's own reader.

use super::array::Array;
use super::{status, stream, sys};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::path::Path;

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.to_string_lossy().as_bytes()).map_err(|_| Error::InvalidArgument(format!("path contains a NUL byte: {}", path.display())))
}

struct ArrayMap(sys::mlx_map_string_to_array);

impl ArrayMap {
    fn new() -> ArrayMap {
        ArrayMap(unsafe { sys::mlx_map_string_to_array_new() })
    }

    fn entries(&self) -> Result<BTreeMap<String, Array>> {
        let mut out = BTreeMap::new();
        let it = unsafe { sys::mlx_map_string_to_array_iterator_new(self.0) };
        loop {
            let mut key: *const std::ffi::c_char = std::ptr::null();
            let mut value = unsafe { sys::mlx_array_new() };
            let rc = unsafe { sys::mlx_map_string_to_array_iterator_next(&mut key, &mut value, it) };
            let value = Array::from_raw(value);
            if rc != 0 || key.is_null() {
                break;
            }
            let name = unsafe { CStr::from_ptr(key) }.to_string_lossy().into_owned();
            out.insert(name, value);
        }
        unsafe { sys::mlx_map_string_to_array_iterator_free(it) };
        Ok(out)
    }
}

impl Drop for ArrayMap {
    fn drop(&mut self) {
        unsafe { sys::mlx_map_string_to_array_free(self.0) };
    }
}

struct StringMap(sys::mlx_map_string_to_string);

impl StringMap {
    fn new() -> StringMap {
        StringMap(unsafe { sys::mlx_map_string_to_string_new() })
    }

    fn entries(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let it = unsafe { sys::mlx_map_string_to_string_iterator_new(self.0) };
        loop {
            let mut key: *const std::ffi::c_char = std::ptr::null();
            let mut value: *const std::ffi::c_char = std::ptr::null();
            let rc = unsafe { sys::mlx_map_string_to_string_iterator_next(&mut key, &mut value, it) };
            if rc != 0 || key.is_null() {
                break;
            }
            let k = unsafe { CStr::from_ptr(key) }.to_string_lossy().into_owned();
            let v = if value.is_null() { String::new() } else { unsafe { CStr::from_ptr(value) }.to_string_lossy().into_owned() };
            out.insert(k, v);
        }
        unsafe { sys::mlx_map_string_to_string_iterator_free(it) };
        out
    }
}

impl Drop for StringMap {
    fn drop(&mut self) {
        unsafe { sys::mlx_map_string_to_string_free(self.0) };
    }
}

#[derive(Debug)]
/// Tensors and metadata of a safetensors file. The arrays are lazy: their data
/// is read when first evaluated.
pub struct Safetensors {
    pub tensors: BTreeMap<String, Array>,
    pub metadata: BTreeMap<String, String>,
}

pub fn load_safetensors(path: &Path) -> Result<Safetensors> {
    status::init();
    // MLX trusts the header; gomlx checks it first (regular file, lengths,
    // dtypes, shapes against byte ranges), so a hostile file gets a named error.
    super::safetensors_header::read(path)?;
    let c = c_path(path)?;
    let mut arrays = ArrayMap::new();
    let mut meta = StringMap::new();
    // MLX's reader loads on the CPU stream; arrays move to the GPU when used.
    let cpu = stream::Stream::default_for(stream::DeviceKind::Cpu)?;
    let rc = unsafe { sys::mlx_load_safetensors(&mut arrays.0, &mut meta.0, c.as_ptr(), cpu.raw()) };
    status::check(rc).map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
    Ok(Safetensors { tensors: arrays.entries()?, metadata: meta.entries() })
}

pub fn save_safetensors(path: &Path, tensors: &BTreeMap<String, Array>, metadata: &BTreeMap<String, String>) -> Result<()> {
    status::init();
    let c = c_path(path)?;
    let arrays = ArrayMap::new();
    for (k, v) in tensors {
        let key = CString::new(k.as_str()).map_err(|_| Error::InvalidArgument(format!("tensor name with NUL: {k:?}")))?;
        status::check(unsafe { sys::mlx_map_string_to_array_insert(arrays.0, key.as_ptr(), v.raw()) })?;
    }
    let meta = StringMap::new();
    for (k, v) in metadata {
        let key = CString::new(k.as_str()).map_err(|_| Error::InvalidArgument(format!("metadata key with NUL: {k:?}")))?;
        let val = CString::new(v.as_str()).map_err(|_| Error::InvalidArgument(format!("metadata value with NUL: {v:?}")))?;
        status::check(unsafe { sys::mlx_map_string_to_string_insert(meta.0, key.as_ptr(), val.as_ptr()) })?;
    }
    // Saving evaluates the arrays.
    super::transforms::serialized(|| status::check(unsafe { sys::mlx_save_safetensors(c.as_ptr(), arrays.0, meta.0) }))
        .map_err(|e| Error::Model(format!("writing {}: {e}", path.display())))
}

/// The tensors of a GGUF file as MLX's reader gives them: F32/F16/BF16 as is,
/// Q4_0/Q4_1/Q8_0 as MLX quantised triples (`name`, `name.scales`,
/// `name.biases`). MLX refuses files with other quantisation types; metadata
/// is read by gomlx's own GGUF reader.
pub fn load_gguf(path: &Path) -> Result<BTreeMap<String, Array>> {
    status::init();
    let c = c_path(path)?;
    let cpu = stream::Stream::default_for(stream::DeviceKind::Cpu)?;
    let mut g = unsafe { sys::mlx_io_gguf_new() };
    let rc = unsafe { sys::mlx_load_gguf(&mut g, c.as_ptr(), cpu.raw()) };
    let guard = GgufGuard(g);
    status::check(rc).map_err(|e| Error::Gguf(format!("{}: {e}", path.display())))?;
    let mut keys = unsafe { sys::mlx_vector_string_new() };
    status::check(unsafe { sys::mlx_io_gguf_get_keys(&mut keys, guard.0) })?;
    let n = unsafe { sys::mlx_vector_string_size(keys) };
    let mut tensors = BTreeMap::new();
    for i in 0..n {
        let mut key: *mut std::ffi::c_char = std::ptr::null_mut();
        unsafe { sys::mlx_vector_string_get(&mut key, keys, i) };
        let name = unsafe { CStr::from_ptr(key) }.to_owned();
        let mut raw = unsafe { sys::mlx_array_new() };
        let rc = unsafe { sys::mlx_io_gguf_get_array(&mut raw, guard.0, name.as_ptr()) };
        let arr = Array::from_raw(raw);
        status::check(rc)?;
        tensors.insert(name.to_string_lossy().into_owned(), arr);
    }
    unsafe { sys::mlx_vector_string_free(keys) };
    Ok(tensors)
}

struct GgufGuard(sys::mlx_io_gguf);

impl Drop for GgufGuard {
    fn drop(&mut self) {
        unsafe { sys::mlx_io_gguf_free(self.0) };
    }
}
