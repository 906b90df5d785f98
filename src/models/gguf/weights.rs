//! A GGUF file's tensors under their Hugging Face names, with llama.cpp's conventions undone.

use serde_json::Value as Json;

use super::config::{hf_config, GgufArch};
use super::names::{fixup, hf_name, unpermute_source_rows, Fixup, Mapped};
use super::quants::{decode, decode_window, TensorData};
use super::reader::{GgufFile, TensorInfo};
use super::types::GgmlType;
use crate::Result;

/// One tensor ready for the model: Hugging Face name, source type, decoded data.
#[derive(Debug, Clone)]
pub struct HfTensor {
    pub name: String,
    pub gguf_name: String,
    pub ty: GgmlType,
    pub data: TensorData,
}

/// A GGUF file viewed as a Hugging Face checkpoint.
pub struct GgufModel {
    pub file: GgufFile,
    pub arch: &'static GgufArch,
    pub config: Json,
    heads: usize,
    kv_heads: usize,
}

impl GgufModel {
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::new(GgufFile::open(path)?)
    }

    pub fn new(file: GgufFile) -> Result<Self> {
        let arch = GgufArch::of(&file)?;
        let config = hf_config(&file)?;
        let heads = config["num_attention_heads"].as_u64().unwrap_or(0) as usize;
        let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(0) as usize;
        Ok(GgufModel { file, arch, config, heads, kv_heads })
    }

    /// (Hugging Face name, tensor info) of every tensor that maps to a parameter, in file order.
    pub fn names(&self) -> Result<Vec<(String, &TensorInfo)>> {
        let mut out = Vec::new();
        for t in &self.file.tensors {
            if let Mapped::Hf(n) = hf_name(self.arch, &t.name)? {
                out.push((n, t));
            }
        }
        Ok(out)
    }

    /// Decode one tensor and undo llama.cpp's conventions (q/k row permutation, Gemma +1).
    pub fn load(&self, info: &TensorInfo) -> Result<TensorData> {
        let mut data = decode(info.ty, self.file.tensor_bytes(info), &info.shape()).map_err(|e| self.file.error(format!("tensor '{}': {e}", info.name)))?;
        match fixup(self.arch, &info.name, self.heads, self.kv_heads) {
            Fixup::None => {}
            Fixup::SubtractOne => data.add_scalar(-1.0),
            Fixup::UnpermuteRows { heads } => {
                let rows = data.shape()[0];
                data.permute_rows(&unpermute_source_rows(rows, heads)?)?;
            }
        }
        Ok(data)
    }

    /// `load` of entries `start..start + len` of `axis` (0 or the last) only,
    /// zero-padded to `pad_to` rows, decoded from only the bytes that hold them
    /// (`quants::window`); with the number of bytes read. A q/k part must be whole
    /// heads: llama.cpp's row permutation stays within each head.
    pub fn load_slice(&self, info: &TensorInfo, axis: usize, start: usize, len: usize, pad_to: usize) -> Result<(TensorData, usize)> {
        let error = |e: &dyn std::fmt::Display| self.file.error(format!("tensor '{}': {e}", info.name));
        let shape = info.shape();
        let (mut data, read) = decode_window(info.ty, self.file.tensor_bytes(info), &shape, axis, start, len).map_err(|e| error(&e))?;
        match fixup(self.arch, &info.name, self.heads, self.kv_heads) {
            Fixup::None => {}
            Fixup::SubtractOne => data.add_scalar(-1.0),
            Fixup::UnpermuteRows { heads } => {
                let per_head = shape[0] / heads.max(1);
                if axis != 0 || per_head == 0 || !start.is_multiple_of(per_head) || !len.is_multiple_of(per_head) {
                    return Err(error(&format!("entries {start}..{} of axis {axis} are not whole heads of {per_head} rows", start + len)));
                }
                data.permute_rows(&unpermute_source_rows(len, len / per_head)?)?;
            }
        }
        if pad_to > len {
            if axis != 0 {
                return Err(error(&format!("padding of axis {axis}: only rows are padded")));
            }
            data.pad_rows(pad_to);
        }
        Ok((data, read))
    }

    /// The tensor with this Hugging Face name, decoded and fixed up.
    pub fn tensor(&self, hf: &str) -> Result<HfTensor> {
        for (name, info) in self.names()? {
            if name == hf {
                return Ok(HfTensor { name, gguf_name: info.name.clone(), ty: info.ty, data: self.load(info)? });
            }
        }
        Err(self.file.error(format!("no tensor maps to '{hf}'")))
    }

    /// Every parameter, decoded and fixed up, in file order.
    pub fn tensors(&self) -> Result<Vec<HfTensor>> {
        self.names()?.into_iter().map(|(name, info)| Ok(HfTensor { name, gguf_name: info.name.clone(), ty: info.ty, data: self.load(info)? })).collect()
    }
}
