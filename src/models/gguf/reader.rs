//! GGUF container reader: header, metadata, tensor infos, and the memory-mapped data.
//!
//! Layout (all little-endian; GGUF v2 and v3, v1 used 32-bit counts and is refused):
//! `"GGUF"`, u32 version, u64 tensor count, u64 metadata count, the metadata key/values
//! (string key, u32 value type, value), the tensor infos (string name, u32 n_dims, u64 dims
//! innermost-first, u32 ggml type, u64 offset relative to the data section), padding up to
//! `general.alignment` (default 32), then the tensor data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::types::GgmlType;
use crate::{Error, Result};

/// The default alignment of the tensor data section and of each tensor in it.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Metadata entries and tensor infos a header may declare (real files: about
/// 50 entries and a few thousand tensors); checked before the loops that read them.
pub const MAX_METADATA: u64 = 1 << 20;
pub const MAX_TENSORS: u64 = 1 << 20;
/// Array elements in all metadata together (a 262k vocabulary's tokens,
/// scores, types and merges are about 10^6): bounds the memory of the parsed
/// values whatever the file's size.
pub const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;
/// Bytes of a metadata key or a tensor name (the GGUF specification: 65 535).
pub const MAX_NAME: u64 = 65_535;
/// `general.alignment` (ggml uses 32; MLX and llama.cpp accept powers of two).
pub const MAX_ALIGNMENT: u64 = 1 << 16;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The name of the value's GGUF type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "uint8",
            Value::I8(_) => "int8",
            Value::U16(_) => "uint16",
            Value::I16(_) => "int16",
            Value::U32(_) => "uint32",
            Value::I32(_) => "int32",
            Value::U64(_) => "uint64",
            Value::I64(_) => "int64",
            Value::F32(_) => "float32",
            Value::F64(_) => "float64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }

    /// Any integer type as u64 (negative values are refused).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type as i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().map(|v| v as i64),
        }
    }

    /// Any numeric type as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// One tensor's description. `dims` are GGUF's, innermost first: a Hugging Face `[out, in]`
/// matrix is stored with `dims == [in, out]`. `shape()` gives the outermost-first order.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Shape outermost-first (row-major, as MLX and PyTorch write it).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// What `parse_bytes` finds in a file.
struct Parsed {
    version: u32,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

fn err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Gguf(format!("{}: {msg}", path.display()))
}

/// A bounds-checked little-endian cursor; every read names what it was reading.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// Array elements still allowed (`MAX_ARRAY_ELEMENTS` in all).
    elements: u64,
}

/// The fewest bytes a value of GGUF type `ty` takes in the file.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,  // a string: its u64 length
        9 => 12, // an array: u32 type + u64 count
        _ => return None,
    })
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let end = (self.pos as u64).checked_add(n);
        match end {
            Some(end) if end <= self.buf.len() as u64 => {
                let s = &self.buf[self.pos..end as usize];
                self.pos = end as usize;
                Ok(s)
            }
            _ => Err(err(self.path, format!("truncated file: {} needs {n} bytes at offset {} but the file has {} bytes", what(), self.pos, self.buf.len()))),
        }
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| err(self.path, format!("{} is not valid UTF-8", what())))
    }

    /// A key or a name: a string of at most `MAX_NAME` bytes.
    fn name(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let start = self.pos;
        let len = self.u64(what)?;
        if len > MAX_NAME {
            return Err(err(self.path, format!("{} at offset {start} is {len} bytes long, more than the limit of {MAX_NAME}", what())));
        }
        self.pos = start;
        self.string(what)
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn value(&mut self, ty: u32, what: &dyn Fn() -> String, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8(what)?),
            1 => Value::I8(self.u8(what)? as i8),
            2 => Value::U16(self.u16(what)?),
            3 => Value::I16(self.u16(what)? as i16),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(self.u32(what)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(what)?)),
            7 => match self.u8(what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(err(self.path, format!("{} is a bool with byte value {b}", what()))),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth > 8 {
                    return Err(err(self.path, format!("{} nests arrays too deeply", what())));
                }
                let elem = self.u32(what)?;
                let n = self.u64(what)?;
                let Some(min) = min_value_bytes(elem) else {
                    return Err(err(self.path, format!("{} is an array of unknown value type {elem}", what())));
                };
                // Every element takes at least `min` bytes: a count past the end is a
                // truncation, found before allocating for it.
                if n.checked_mul(min).is_none_or(|b| b > self.remaining()) {
                    return Err(err(self.path, format!("truncated file: {} is an array of {n} elements but only {} bytes remain", what(), self.remaining())));
                }
                if n > self.elements {
                    return Err(err(
                        self.path,
                        format!("{} is an array of {n} elements: the metadata's arrays would exceed the limit of {MAX_ARRAY_ELEMENTS} elements in all", what()),
                    ));
                }
                self.elements -= n;
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem, what, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(self.u64(what)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(what)?)),
            t => return Err(err(self.path, format!("{} has unknown value type {t}", what()))),
        })
    }
}

impl GgufFile {
    /// Map and parse a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        // Regular files only: opening a FIFO named x.gguf would block forever.
        let (file, _) = crate::files::open_regular(path)?;
        // SAFETY: the map is read-only; like every mmap-based model loader we rely on the file
        // not being truncated underneath us while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path.to_path_buf(), map)
    }

    /// A GGUF file from bytes in memory (copied into an anonymous map), as
    /// if read from `path`; for tests and the fuzz targets.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: &[u8]) -> Result<Self> {
        let path = path.into();
        let mut map = memmap2::MmapMut::map_anon(bytes.len().max(1)).map_err(|e| Error::io(&path, e))?;
        map[..bytes.len()].copy_from_slice(bytes);
        let map = map.make_read_only().map_err(|e| Error::io(&path, e))?;
        let parsed = Self::parse_bytes(&path, &map[..bytes.len()])?;
        let Parsed { version, metadata, index, tensors, tensor_index, alignment, data_offset } = parsed;
        Ok(GgufFile { path, map, version, metadata, index, tensors, tensor_index, alignment, data_offset })
    }

    fn parse(path: PathBuf, map: Mmap) -> Result<Self> {
        let parsed = Self::parse_bytes(&path, &map)?;
        let Parsed { version, metadata, index, tensors, tensor_index, alignment, data_offset } = parsed;
        Ok(GgufFile { path, map, version, metadata, index, tensors, tensor_index, alignment, data_offset })
    }

    /// Parses and checks a whole file held in memory (header, metadata, tensor
    /// infos, data bounds); `p` names it in errors. Fuzzed (docs/fuzzing.md).
    fn parse_bytes(p: &Path, buf: &[u8]) -> Result<Parsed> {
        if buf.len() < 4 || &buf[..4] != b"GGUF" {
            let got = &buf[..buf.len().min(4)];
            return Err(err(p, format!("not a GGUF file (bad magic {got:02x?}, expected \"GGUF\")")));
        }
        let mut c = Cursor { buf, pos: 4, path: p, elements: MAX_ARRAY_ELEMENTS };
        let version = c.u32(&|| "the header's version".into())?;
        match version {
            2 | 3 => {}
            1 => return Err(err(p, "unsupported GGUF version 1 (only versions 2 and 3 are supported)")),
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => return Err(err(p, "unsupported big-endian GGUF file (only little-endian files are supported)")),
            v => return Err(err(p, format!("unsupported GGUF version {v} (only versions 2 and 3 are supported)"))),
        }
        let n_tensors = c.u64(&|| "the header's tensor count".into())?;
        let n_kv = c.u64(&|| "the header's metadata count".into())?;
        if n_tensors > MAX_TENSORS {
            return Err(err(p, format!("the header's tensor count {n_tensors} exceeds the limit of {MAX_TENSORS}")));
        }
        if n_kv > MAX_METADATA {
            return Err(err(p, format!("the header's metadata count {n_kv} exceeds the limit of {MAX_METADATA}")));
        }

        let mut metadata = Vec::new();
        let mut index = HashMap::new();
        for i in 0..n_kv {
            let key = c.name(&|| format!("metadata key #{i}"))?;
            let ty = c.u32(&|| format!("the type of metadata key '{key}'"))?;
            let value = c.value(ty, &|| format!("the value of metadata key '{key}'"), 0)?;
            index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= MAX_ALIGNMENT => a,
                _ => return Err(err(p, format!("general.alignment must be a power of two up to {MAX_ALIGNMENT}, got {v:?}"))),
            },
        };

        let mut tensors = Vec::new();
        let mut tensor_index = HashMap::new();
        for i in 0..n_tensors {
            let name = c.name(&|| format!("the name of tensor info #{i}"))?;
            let what = || format!("the info of tensor '{name}'");
            let n_dims = c.u32(&what)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(err(p, format!("tensor '{name}' has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&what)?);
            }
            let type_id = c.u32(&what)?;
            let offset = c.u64(&what)?;
            let ty = GgmlType::from_id(type_id).ok_or_else(|| err(p, format!("tensor '{name}' has unknown ggml tensor type id {type_id}")))?;
            if let Some(&d) = dims.iter().find(|&&d| d == 0 || d > crate::limits::MAX_DIM) {
                return Err(err(p, format!("tensor '{name}' has dimensions {dims:?}: {d} is not in 1..={}", crate::limits::MAX_DIM)));
            }
            let n: u64 = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| err(p, format!("tensor '{name}' has dimensions {dims:?} whose product overflows")))?;
            let (block, bytes) = ty.block();
            if dims[0] % block as u64 != 0 {
                return Err(err(
                    p,
                    format!("tensor '{name}' of type {} has a row of {} elements, not a multiple of its block size {block}", ty.name(), dims[0]),
                ));
            }
            // Checked: element count × block bytes wraps u64 for dimensions near 2^62.
            let size = (n / block as u64)
                .checked_mul(bytes as u64)
                .ok_or_else(|| err(p, format!("tensor '{name}' of type {} with dimensions {dims:?} has a byte size that overflows", ty.name())))?;
            if offset % alignment != 0 {
                return Err(err(p, format!("tensor '{name}' data offset {offset} is not aligned to {alignment}")));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(err(p, format!("tensor '{name}' appears twice")));
            }
            tensors.push(TensorInfo { name, dims, ty, offset, size });
        }

        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = buf.len() as u64;
        if !tensors.is_empty() && data_offset > file_len {
            return Err(err(p, format!("truncated file: the tensor data would start at {data_offset}, past the end ({file_len} bytes)")));
        }
        for t in &tensors {
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.size));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(err(
                        p,
                        format!(
                            "truncated file: the data of tensor '{}' ({} bytes at offset {}) runs past the end of the file ({file_len} bytes)",
                            t.name,
                            t.size,
                            data_offset.saturating_add(t.offset)
                        ),
                    ))
                }
            }
        }

        Ok(Parsed { version, metadata, index, tensors, tensor_index, alignment, data_offset })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A metadata value that must be present.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| self.error(format!("missing required metadata key '{key}'")))
    }

    fn wrong_type(&self, key: &str, want: &str, v: &Value) -> Error {
        self.error(format!("metadata key '{key}' should be {want}, found {}", v.type_name()))
    }

    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|v| v.as_u64().ok_or_else(|| self.wrong_type(key, "an unsigned integer", v))).transpose()
    }
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| self.wrong_type(key, "an unsigned integer", v))
    }
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| self.wrong_type(key, "a number", v))).transpose()
    }
    pub fn require_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.wrong_type(key, "a number", v))
    }
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| self.wrong_type(key, "a bool", v))).transpose()
    }
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| self.wrong_type(key, "a string", v))).transpose()
    }
    pub fn require_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.wrong_type(key, "a string", v))
    }
    /// An array of strings that must be present.
    pub fn require_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.require(key)?;
        let arr = v.as_array().ok_or_else(|| self.wrong_type(key, "an array of strings", v))?;
        arr.iter().map(|e| e.as_str().ok_or_else(|| self.wrong_type(key, "an array of strings", e))).collect()
    }
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        self.require_str_array(key).map(Some)
    }
    pub fn get_f64_array(&self, key: &str) -> Result<Option<Vec<f64>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let arr = v.as_array().ok_or_else(|| self.wrong_type(key, "an array of numbers", v))?;
        arr.iter().map(|e| e.as_f64().ok_or_else(|| self.wrong_type(key, "an array of numbers", e))).collect::<Result<Vec<_>>>().map(Some)
    }
    pub fn get_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let arr = v.as_array().ok_or_else(|| self.wrong_type(key, "an array of integers", v))?;
        arr.iter().map(|e| e.as_i64().ok_or_else(|| self.wrong_type(key, "an array of integers", e))).collect::<Result<Vec<_>>>().map(Some)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.require_str("general.architecture")
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (bounds were checked when the file was opened).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + t.offset) as usize;
        &self.map[start..start + t.size as usize]
    }

    /// An error about this file.
    pub fn error(&self, msg: impl std::fmt::Display) -> Error {
        err(&self.path, msg)
    }
}
