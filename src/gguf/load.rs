//! A GGUF file as a gomlx model: tensors decoded (or repacked into MLX affine
//! quantisation) one at a time into MLX arrays under Hugging Face names, the
//! metadata mapped onto the same `ModelConfig` the safetensors path uses, and
//! the tokenizer built from the metadata.

use super::quants::TensorData;
use super::weights::GgufModel;
use crate::mlx::{Array, Dtype};
use crate::models::config::{ModelConfig, Quant};
use crate::models::weights::Weights;
use crate::models::{LoadOptions, Model};
use crate::text::{SpecialTokens, Tokenizer};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

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
            let (rows, cols) = match shape.as_slice() {
                [r, c] => (*r as i32, *c as i32),
                _ => return Err(Error::Gguf(format!("quantised tensor '{name}' must be a matrix, has shape {shape:?}"))),
            };
            let base = name.strip_suffix(".weight").unwrap_or(name);
            let groups = cols / group_size as i32;
            out.insert(name.to_string(), Array::from_slice(&weights, &[rows, cols * bits as i32 / 32])?);
            out.insert(format!("{base}.scales"), Array::from_slice(&scales, &[rows, groups])?);
            out.insert(format!("{base}.biases"), Array::from_slice(&biases, &[rows, groups])?);
            Ok(Some(Quant { group_size: group_size as i32, bits: bits as i32 }))
        }
    }
}

/// The tokenizer described by the file's metadata.
pub fn tokenizer(g: &GgufModel) -> Result<Tokenizer> {
    let t = super::tokenizer::GgufTokenizer::from_gguf(&g.file)?;
    let specials = SpecialTokens { bos: t.bos, eos: t.eos, pad: t.pad, unk: t.unk, add_bos: t.add_bos, add_eos: t.add_eos };
    Tokenizer::from_parts(t.tokenizer, specials, t.chat_template)
}

/// The model config and weights of a GGUF file, ready for `Model::from_weights`.
pub fn config_and_weights(g: &GgufModel) -> Result<(ModelConfig, Weights)> {
    let mut config = ModelConfig::from_value(&g.config)?;
    let mut tensors = BTreeMap::new();
    for (name, info) in g.names()? {
        let data = g.load(info)?;
        // Each quantised module carries its own bits (files mix Q4_K, Q5_0, Q8_0, ...).
        let quant = to_arrays(&name, data, &mut tensors)?;
        if let Some(module) = name.strip_suffix(".weight") {
            config.quantization.overrides.insert(module.to_string(), quant);
        }
    }
    Ok((config, Weights::from_map(tensors, g.file.path().to_path_buf())))
}

/// Loads a `.gguf` file as a model and its tokenizer. The compute dtype
/// defaults to float32 (the file's quantisation scales are exact in it).
pub fn load_model(path: &Path, opts: &LoadOptions) -> Result<(Model, Tokenizer)> {
    let g = GgufModel::open(path)?;
    let tokenizer = tokenizer(&g)?;
    let (config, weights) = config_and_weights(&g)?;
    let opts = LoadOptions { dtype: Some(opts.dtype.unwrap_or(Dtype::F32)) };
    let model = Model::from_weights(config, weights, &opts)?;
    Ok((model, tokenizer))
}
