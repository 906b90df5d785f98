//! A GGUF file as a gomlx model: tensors decoded (or repacked into MLX affine
//! quantisation) one at a time into MLX arrays under Hugging Face names, the
//! metadata mapped onto the same `ModelConfig` the safetensors path uses, and
//! the tokenizer built from the metadata.

use super::names::{fixup, unpermute_source_rows, Fixup};
use super::quants::TensorData;
use super::types::GgmlType;
use super::weights::GgufModel;
use crate::mlx::{self, Array};
use crate::models::config::{ModelConfig, Quant};
use crate::models::shard::{Part, Shard};
use crate::models::weights::Weights;
use crate::text::{SpecialTokens, Tokenizer};
use crate::{Error, Result};
use std::collections::BTreeMap;

fn dims(shape: &[usize]) -> Vec<i32> {
    shape.iter().map(|&d| d as i32).collect()
}

/// The MLX arrays of one decoded tensor, added to `out` under `name`
/// (`.weight`, plus `.scales`/`.biases` for affine data).
fn to_arrays(name: &str, data: TensorData, out: &mut BTreeMap<String, Array>) -> Result<Option<Quant>> {
    match data {
        TensorData::Float { shape, values } => {
            out.insert(name.to_string(), Array::from_slice(&values, &dims(&shape))?);
            Ok(None)
        }
        TensorData::Affine { shape, bits, group_size, weights, scales, biases } => {
            // A matrix, or a stack of them (llama.cpp's experts, `[E, rows, cols]`).
            let (lead, cols) = match shape.as_slice() {
                [lead @ .., c] if matches!(lead.len(), 1 | 2) => (dims(lead), *c as i32),
                _ => return Err(Error::Gguf(format!("quantised tensor '{name}' must be a matrix or a stack of matrices, has shape {shape:?}"))),
            };
            let base = name.strip_suffix(".weight").unwrap_or(name);
            let groups = cols / group_size as i32;
            let with = |last: i32| lead.iter().copied().chain([last]).collect::<Vec<i32>>();
            out.insert(name.to_string(), Array::from_slice(&weights, &with(cols * bits as i32 / 32))?);
            out.insert(format!("{base}.scales"), Array::from_slice(&scales, &with(groups))?);
            out.insert(format!("{base}.biases"), Array::from_slice(&biases, &with(groups))?);
            Ok(Some(Quant::affine(group_size as i32, bits as i32)))
        }
    }
}

/// The tokenizer described by the file's metadata.
pub fn tokenizer(g: &GgufModel) -> Result<Tokenizer> {
    let t = super::tokenizer::GgufTokenizer::from_gguf(&g.file)?;
    let specials = SpecialTokens { bos: t.bos, eos: t.eos, pad: t.pad, unk: t.unk, add_bos: t.add_bos, add_eos: t.add_eos };
    Tokenizer::from_parts(t.tokenizer, specials, t.chat_template)
}

/// Bits of the types MLX's own GGUF reader turns into MLX quantisation (None: float).
fn native_bits(ty: GgmlType) -> Option<Option<i32>> {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => Some(None),
        GgmlType::Q4_0 | GgmlType::Q4_1 => Some(Some(4)),
        GgmlType::Q8_0 => Some(Some(8)),
        _ => None,
    }
}

/// Whether every tensor of the file is one MLX's reader loads natively.
pub fn is_native(g: &GgufModel) -> Result<bool> {
    Ok(g.names()?.iter().all(|(_, info)| native_bits(info.ty).is_some()))
}

/// Tensors through MLX's reader (`mlx_load_gguf`): Q4_0/Q4_1/Q8_0 arrive as
/// MLX quantised triples; llama.cpp's conventions are then undone on the arrays.
fn native_weights(g: &GgufModel, config: &mut ModelConfig) -> Result<BTreeMap<String, Array>> {
    let mut raw = mlx::io::load_gguf(g.file.path())?;
    let heads = (config.num_heads, config.num_kv_heads);
    let mut out = BTreeMap::new();
    for (name, info) in g.names()? {
        let gguf_base = info.name.strip_suffix(".weight").unwrap_or(&info.name).to_string();
        let base = name.strip_suffix(".weight").unwrap_or(&name).to_string();
        let take = |raw: &mut BTreeMap<String, Array>, n: &str| raw.remove(n).ok_or_else(|| Error::Gguf(format!("MLX's reader gave no '{n}'")));
        let mut parts = vec![(name.clone(), take(&mut raw, &info.name)?)];
        let bits = native_bits(info.ty).flatten();
        if bits.is_some() {
            parts.push((format!("{base}.scales"), take(&mut raw, &format!("{gguf_base}.scales"))?));
            parts.push((format!("{base}.biases"), take(&mut raw, &format!("{gguf_base}.biases"))?));
        }
        let fix = fixup(g.arch, &info.name, heads.0, heads.1);
        for (n, mut a) in parts {
            match fix {
                Fixup::None => {}
                Fixup::SubtractOne => a = a.add_scalar(-1.0)?,
                Fixup::UnpermuteRows { heads } => {
                    let rows = a.dim(0) as usize;
                    let src: Vec<i32> = unpermute_source_rows(rows, heads)?.into_iter().map(|r| r as i32).collect();
                    a = a.take(&Array::from_slice(&src, &[rows as i32])?, 0)?;
                }
            }
            out.insert(n, a);
        }
        if name.ends_with(".weight") {
            config.quantization.overrides.insert(base, bits.map(|bits| Quant::affine(32, bits)));
        }
    }
    Ok(out)
}

/// Tensors through gomlx's own decoders, one at a time: every type the
/// reader knows, repacked losslessly into MLX quantisation where possible.
fn decoded_weights(g: &GgufModel, config: &mut ModelConfig) -> Result<BTreeMap<String, Array>> {
    let mut tensors = BTreeMap::new();
    for (name, info) in g.names()? {
        let data = g.load(info)?;
        // Each quantised module carries its own bits (files mix Q4_K, Q5_0, Q8_0, ...).
        let quant = to_arrays(&name, data, &mut tensors)?;
        if let Some(module) = name.strip_suffix(".weight") {
            config.quantization.overrides.insert(module.to_string(), quant);
        }
    }
    Ok(tensors)
}

/// How the tensors of a GGUF file are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// MLX's reader when every tensor type allows it, else gomlx's decoders.
    Auto,
    Mlx,
    Gomlx,
}

/// The model config the file's metadata describes.
pub fn config(g: &GgufModel) -> Result<ModelConfig> {
    let config = ModelConfig::from_value(&g.config).map_err(|e| g.file.error(format!("the model described by the metadata: {e}")))?;
    // Block-quantised tensors are matrices in every model; MLX's reader fails
    // on others with a message that names neither the tensor nor the file.
    for (_, info) in g.names()? {
        if info.ty.block().0 > 1 && info.dims.len() != 2 {
            return Err(g.file.error(format!(
                "tensor '{}' is {} with {} dimension(s) {:?}; quantised tensors must be matrices",
                info.name,
                info.ty.name(),
                info.dims.len(),
                info.dims
            )));
        }
    }
    Ok(config)
}

/// The model config and weights of a GGUF file, ready for `Model::from_weights`.
pub fn config_and_weights(g: &GgufModel, reader: Reader) -> Result<(ModelConfig, Weights)> {
    let mut config = config(g)?;
    let native = match reader {
        Reader::Auto => is_native(g)?,
        Reader::Mlx => {
            if !is_native(g)? {
                return Err(g.file.error("MLX's GGUF reader handles only F32, F16, BF16, Q4_0, Q4_1 and Q8_0 tensors"));
            }
            true
        }
        Reader::Gomlx => false,
    };
    let tensors = if native { native_weights(g, &mut config)? } else { decoded_weights(g, &mut config)? };
    Ok((config, Weights::from_map(tensors, g.file.path().to_path_buf())))
}

/// A rank's part of a GGUF model (`split_weights`).
pub struct Split {
    pub config: ModelConfig,
    pub weights: Weights,
    /// Bytes of tensor data read, by Hugging Face name (0: another rank's).
    pub read: BTreeMap<String, u64>,
}

/// This rank's part of the file's tensors (`Shard::part`), each decoded by
/// gomlx's decoders from only the bytes of its rows or columns (MLX's reader
/// would read the whole file); `config` from `config`.
pub fn split_weights(g: &GgufModel, mut config: ModelConfig, shard: &Shard) -> Result<Split> {
    let (mut tensors, mut read) = (BTreeMap::new(), BTreeMap::new());
    for (name, info) in g.names()? {
        let shape = info.shape();
        let hf_shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let (to, data, bytes) = match shard.part(&name, &hf_shape)? {
            Part::Skip => {
                read.insert(name, 0);
                continue;
            }
            Part::Whole => (name.clone(), g.load(info)?, info.size as usize),
            Part::Rename(to) => (to, g.load(info)?, info.size as usize),
            // Several projections' rows in one tensor (Phi-3's qkv_proj, Qwen 3.5's
            // in_proj_qkv), fused experts by columns: no GGUF architecture read here stores them so.
            Part::Ranges { .. } => {
                return Err(Error::InvalidArgument(format!("cannot split tensor '{name}' of a GGUF file: it holds several projections")));
            }
            Part::Slice { axis, start, len, pad_to } => {
                let block = info.ty.block().0 as u64;
                if axis + 1 == shape.len() && !(start.is_multiple_of(block) && len.is_multiple_of(block)) {
                    return Err(Error::InvalidArgument(format!(
                        "cannot split tensor '{name}' ({}) of shape {shape:?} over {} ranks: columns {start}..{} would cut its {} blocks of {block} values",
                        info.ty,
                        shard.size,
                        start + len,
                        info.ty
                    )));
                }
                let (data, bytes) = g.load_slice(info, axis, start as usize, len as usize, pad_to as usize)?;
                (name.clone(), data, bytes)
            }
        };
        let quant = to_arrays(&to, data, &mut tensors)?;
        if let Some(module) = to.strip_suffix(".weight") {
            config.quantization.overrides.insert(module.to_string(), quant);
        }
        read.insert(name, bytes as u64);
    }
    Ok(Split { config, weights: Weights::from_map(tensors, g.file.path().to_path_buf()), read })
}
