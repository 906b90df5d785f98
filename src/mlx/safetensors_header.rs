//! The header of a safetensors file, checked before MLX reads the file.
//!
//! Layout: a little-endian u64 `N`, `N` bytes of JSON, then the data. The
//! JSON maps each tensor name to `{"dtype", "shape", "data_offsets": [begin,
//! end]}` (offsets relative to the data) and may hold `"__metadata__"`, a map
//! of strings. MLX's reader trusts the header; gomlx reads it first and
//! refuses, with the file and tensor named, a header longer than the file or
//! than `MAX_HEADER`, JSON that is not such a map, an unknown dtype, a shape
//! whose element count times the dtype's size overflows or differs from its
//! byte range, a byte range outside the data, and more than `MAX_TENSORS`
//! tensors. Pure Rust (no MLX call), so it is fuzzed (docs/fuzzing.md).

use crate::{Error, Result};
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// The safetensors crate's own bound on the header's JSON.
pub const MAX_HEADER: u64 = 100_000_000;
/// Tensors in one file (the largest mixture-of-experts shards hold some 10^4).
pub const MAX_TENSORS: usize = 1 << 20;
/// Dimensions of one tensor.
pub const MAX_NDIM: usize = 16;

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Byte range within the data section.
    pub begin: u64,
    pub end: u64,
}

/// A checked header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub tensors: Vec<TensorEntry>,
    pub metadata: Vec<(String, String)>,
    /// Bytes of the data section (file length - 8 - header length).
    pub data_len: u64,
}

/// Bytes per element of a safetensors dtype (those MLX reads).
pub fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" | "C64" => 8,
        _ => return None,
    })
}

/// Checks the header length `n` (the first 8 bytes) against the file's length.
pub fn check_length(n: u64, file_len: u64) -> std::result::Result<(), String> {
    if file_len < 8 {
        return Err(format!("not a safetensors file: {file_len} bytes, fewer than the 8 of the header length"));
    }
    if n > MAX_HEADER {
        return Err(format!("the header claims {n} bytes, more than the limit of {MAX_HEADER}"));
    }
    if n > file_len - 8 {
        return Err(format!("truncated file: the header claims {n} bytes but only {} follow", file_len - 8));
    }
    Ok(())
}

/// Parses and checks the header JSON of a file whose data section has `data_len` bytes.
pub fn parse_json(json: &[u8], data_len: u64) -> std::result::Result<Header, String> {
    let value: Value = serde_json::from_slice(json).map_err(|e| format!("the header is not valid JSON: {e}"))?;
    let Value::Object(map) = value else { return Err("the header is not a JSON object".into()) };
    if map.len() > MAX_TENSORS + 1 {
        return Err(format!("the header lists {} tensors, more than the limit of {MAX_TENSORS}", map.len()));
    }
    let mut header = Header { data_len, ..Default::default() };
    for (name, entry) in map {
        if name == "__metadata__" {
            // MLX writes null when there is none.
            let m = match entry {
                Value::Object(m) => m,
                Value::Null => continue,
                _ => return Err("__metadata__ is not a JSON object".into()),
            };
            for (k, v) in m {
                let Value::String(v) = v else { return Err(format!("__metadata__ value of '{k}' is not a string")) };
                header.metadata.push((k, v));
            }
            continue;
        }
        let bad = |what: &str| format!("tensor '{name}': {what}");
        let Value::Object(e) = entry else { return Err(bad("entry is not a JSON object")) };
        let dtype = e.get("dtype").and_then(Value::as_str).ok_or_else(|| bad("no string 'dtype'"))?;
        let size = dtype_size(dtype).ok_or_else(|| bad(&format!("unsupported dtype '{dtype}'")))?;
        let shape = e.get("shape").and_then(Value::as_array).ok_or_else(|| bad("no 'shape' list"))?;
        if shape.len() > MAX_NDIM {
            return Err(bad(&format!("{} dimensions, more than {MAX_NDIM}", shape.len())));
        }
        let shape: Vec<u64> = shape
            .iter()
            .map(|d| d.as_u64().filter(|&d| d <= crate::limits::MAX_DIM))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(&format!("shape {} is not a list of integers in 0..={}", Value::Array(shape.clone()), crate::limits::MAX_DIM)))?;
        let offsets = e.get("data_offsets").and_then(Value::as_array).ok_or_else(|| bad("no 'data_offsets' list"))?;
        let (begin, end) = match offsets.as_slice() {
            [b, e] => match (b.as_u64(), e.as_u64()) {
                (Some(b), Some(e)) => (b, e),
                _ => return Err(bad("data_offsets must be two non-negative integers")),
            },
            _ => return Err(bad("data_offsets must be two non-negative integers")),
        };
        if begin > end || end > data_len {
            return Err(bad(&format!("data_offsets [{begin}, {end}] lie outside the {data_len} bytes of data")));
        }
        let bytes = shape.iter().try_fold(size, |a, &d| a.checked_mul(d));
        match bytes {
            Some(b) if b == end - begin => {}
            Some(b) => return Err(bad(&format!("shape {shape:?} of {dtype} needs {b} bytes but data_offsets [{begin}, {end}] hold {}", end - begin))),
            None => return Err(bad(&format!("shape {shape:?} of {dtype} overflows the byte count"))),
        }
        header.tensors.push(TensorEntry { name, dtype: dtype.to_string(), shape, begin, end });
    }
    Ok(header)
}

/// Parses and checks the header of a whole file in memory.
pub fn parse(file: &[u8]) -> std::result::Result<Header, String> {
    let file_len = file.len() as u64;
    let n = if file.len() >= 8 { u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) } else { 0 };
    check_length(n, file_len)?;
    parse_json(&file[8..8 + n as usize], file_len - 8 - n)
}

/// Reads and checks the header of the safetensors file at `path` (a regular
/// file: see `crate::files`); the error names the file.
pub fn read(path: &Path) -> Result<Header> {
    let (mut file, len) = crate::files::open_regular(path)?;
    let named = |msg: String| Error::Model(format!("{}: {msg}", path.display()));
    let mut n = [0u8; 8];
    if len >= 8 {
        file.read_exact(&mut n).map_err(|e| Error::io(path, e))?;
    }
    let n = u64::from_le_bytes(n);
    check_length(n, len).map_err(named)?;
    let mut json = Vec::with_capacity(n as usize);
    file.take(n).read_to_end(&mut json).map_err(|e| Error::io(path, e))?;
    if json.len() as u64 != n {
        return Err(named(format!("truncated file: the header claims {n} bytes but only {} could be read", json.len())));
    }
    parse_json(&json, len - 8 - n).map_err(named)
}
