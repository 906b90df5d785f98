//! The tensors of a model directory, by Hugging Face name.
//!
//! Reads one `*.safetensors` or the shards listed in `model.safetensors.index.json`
//! through mlx-c (no copy through Rust memory), normalises name prefixes of
//! multimodal checkpoints, and hands tensors out with their shapes checked.

use crate::mlx::{io, Array};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct Weights {
    tensors: BTreeMap<String, Array>,
    source: PathBuf,
}

/// Maps checkpoint names onto the `model.` / `lm_head.` layout; `None` drops
/// tensors that no text model uses (vision tower, projector, rotary caches).
pub(crate) fn normalise(name: &str) -> Option<String> {
    const DROP: &[&str] = &[
        "vision_tower.",
        "multi_modal_projector.",
        "model.vision_tower.",
        "model.multi_modal_projector.",
        // Qwen 3.5: the vision model and the multi-token-prediction head.
        "model.visual.",
        "mtp.",
        // Gemma 4: the audio and vision encoders and their projections.
        "model.audio_tower.",
        "model.embed_audio.",
        "model.embed_vision.",
    ];
    if DROP.iter().any(|p| name.starts_with(p)) || name.ends_with("rotary_emb.inv_freq") {
        return None;
    }
    for (from, to) in
        [("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."), ("model.language_model.", "model."), ("language_model.", "model.")]
    {
        if let Some(rest) = name.strip_prefix(from) {
            return Some(format!("{to}{rest}"));
        }
    }
    Some(name.to_string())
}

/// The safetensors files of a model directory, in load order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = crate::files::read_text(&index, crate::files::MAX_TEXT_FILE)?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Model(format!("{}: invalid JSON: {e}", index.display())))?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::Model(format!("{}: no 'weight_map' object", index.display())))?;
        let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
        files.sort();
        files.dedup();
        // Shards are files of this directory: no paths out of it.
        if let Some(bad) = files.iter().find(|f| f.is_empty() || f.contains(['/', '\\']) || f.as_str() == ".." || f.as_str() == ".") {
            return Err(Error::Model(format!("{}: weight_map names '{bad}', not a file name in the model directory", index.display())));
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Model(format!("{}: no *.safetensors weight files", dir.display())));
    }
    Ok(files)
}

impl Weights {
    pub fn load(dir: &Path) -> Result<Weights> {
        let mut tensors = BTreeMap::new();
        for file in weight_files(dir)? {
            for (name, array) in io::load_safetensors(&file)?.tensors {
                if let Some(name) = normalise(&name) {
                    tensors.insert(name, array);
                }
            }
        }
        Ok(Weights { tensors, source: dir.to_path_buf() })
    }

    /// This rank's part of a directory's tensors (`shard::Shard::part`): sliced
    /// tensors are read from the file's bytes (only their rows or row ranges, or
    /// only their columns of each row, are read), other experts' tensors not at all, and
    /// whole tensors lazily through MLX as in `load`.
    pub fn load_sharded(dir: &Path, shard: &super::shard::Shard) -> Result<Weights> {
        use super::shard::Part;
        let mut tensors = BTreeMap::new();
        for file in weight_files(dir)? {
            let header = crate::mlx::safetensors_header::read(&file)?;
            let (f, len) = crate::files::open_regular(&file)?;
            let data_start = len - header.data_len;
            let mut lazy: Option<BTreeMap<String, Array>> = None;
            for t in &header.tensors {
                let Some(name) = normalise(&t.name) else { continue };
                let to = match shard.part(&name, &t.shape)? {
                    Part::Skip => continue,
                    Part::Slice { axis, start, len, pad_to } => {
                        let a = read_slice(&f, &file, data_start, t, axis, start, len, pad_to)?;
                        tensors.insert(name, a);
                        continue;
                    }
                    Part::Ranges { axis, ranges } => {
                        let parts =
                            ranges.iter().map(|&(start, len)| read_slice(&f, &file, data_start, t, axis, start, len, len)).collect::<Result<Vec<_>>>()?;
                        tensors.insert(name, crate::mlx::concatenate(&parts.iter().collect::<Vec<_>>(), axis as i32)?);
                        continue;
                    }
                    Part::Whole => name,
                    Part::Rename(to) => to,
                };
                if lazy.is_none() {
                    lazy = Some(io::load_safetensors(&file)?.tensors);
                }
                let a = lazy
                    .as_mut()
                    .and_then(|m| m.remove(&t.name))
                    .ok_or_else(|| Error::Model(format!("{}: MLX did not read tensor '{}'", file.display(), t.name)))?;
                tensors.insert(to, a);
            }
        }
        Ok(Weights { tensors, source: dir.to_path_buf() })
    }

    /// Weights from already loaded arrays (e.g. converted from GGUF).
    pub fn from_map(tensors: BTreeMap<String, Array>, source: PathBuf) -> Weights {
        Weights { tensors, source }
    }

    /// Casts floating tensors to `dtype` (quantised weights keep their packing):
    /// all of them with `widen`, else only those `policy::casts` names
    /// (vectors, and tensors wider than `dtype`).
    pub fn cast_floats(&mut self, dtype: crate::mlx::Dtype, widen: bool) -> Result<()> {
        for a in self.tensors.values_mut() {
            if a.dtype().is_float() && super::policy::casts(a.ndim(), a.dtype(), dtype, widen) {
                *a = a.astype(dtype)?;
            }
        }
        Ok(())
    }

    /// Every tensor by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Array)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Replaces every MLX-quantised matrix (`X.weight` + `X.scales` + `X.biases`)
    /// with the dense `dtype` matrix it stands for; `quant` gives each module's
    /// group size and bits. Returns how many were expanded.
    pub fn dequantize_all(&mut self, quant: &dyn Fn(&str) -> Option<crate::models::config::Quant>, dtype: crate::mlx::Dtype) -> Result<usize> {
        Ok(self.dequantize_where(quant, dtype, &|_| true)?.len())
    }

    /// `dequantize_all` for the matrices whose quantisation `pick` accepts;
    /// returns their module paths.
    pub fn dequantize_where(
        &mut self,
        quant: &dyn Fn(&str) -> Option<crate::models::config::Quant>,
        dtype: crate::mlx::Dtype,
        pick: &dyn Fn(&crate::models::config::Quant) -> bool,
    ) -> Result<Vec<String>> {
        let bases: Vec<String> = self.tensors.keys().filter_map(|k| k.strip_suffix(".scales").map(str::to_string)).collect();
        let mut picked = Vec::with_capacity(bases.len());
        for base in bases {
            let q = quant(&base)
                .ok_or_else(|| Error::Model(format!("{}: '{base}' is quantised but config.json has no 'quantization' for it", self.source.display())))?;
            if !pick(&q) {
                continue;
            }
            let w = self.take(&format!("{base}.weight"))?;
            let scales = self.take(&format!("{base}.scales"))?;
            let dense = match q.mode {
                crate::models::config::QuantMode::Affine => {
                    let biases = self.take(&format!("{base}.biases"))?;
                    crate::mlx::dequantize(&w, &scales, &biases, q.group_size, q.bits, Some(dtype))?
                }
                mode => crate::mlx::dequantize_mode(&w, &scales, None, q.group_size, q.bits, mode.name(), Some(dtype))?,
            };
            // Materialise now, so the packed arrays are freed one matrix at a time.
            dense.eval()?;
            self.tensors.insert(format!("{base}.weight"), dense);
            picked.push(base);
        }
        Ok(picked)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Removes and returns a tensor that must exist.
    pub fn take(&mut self, name: &str) -> Result<Array> {
        self.tensors.remove(name).ok_or_else(|| Error::Model(format!("{}: missing tensor '{name}'", self.source.display())))
    }

    /// Like `take`, also checking the shape.
    pub fn take_shaped(&mut self, name: &str, shape: &[usize]) -> Result<Array> {
        let a = self.take(name)?;
        check_shape(&self.source, name, &a, shape)?;
        Ok(a)
    }

    pub fn take_optional(&mut self, name: &str) -> Option<Array> {
        self.tensors.remove(name)
    }

    /// Adds (or replaces) a tensor: a family's `sanitize` renaming, splitting or stacking.
    pub fn insert(&mut self, name: String, array: Array) {
        self.tensors.insert(name, array);
    }

    /// Splits the rows (axis 0) of `from`'s `weight` (and `scales`/`biases` when
    /// quantised, `bias` when present) into `to` parts of the given row counts:
    /// checkpoints that store fused projections (Phi-3's `qkv_proj`, `gate_up_proj`).
    pub fn split_rows(&mut self, from: &str, to: &[(&str, usize)]) -> Result<()> {
        let total: usize = to.iter().map(|&(_, n)| n).sum();
        for suffix in ["weight", "scales", "biases", "bias"] {
            let Some(a) = self.take_optional(&format!("{from}.{suffix}")) else { continue };
            if a.ndim() == 0 || a.dim(0) as usize != total {
                return Err(Error::Model(format!("{}: tensor '{from}.{suffix}' has shape {:?}, expected {total} rows", self.source.display(), a.shape())));
            }
            let mut at = 0;
            for &(name, rows) in to {
                self.insert(format!("{name}.{suffix}"), a.slice_axis(0, at as i32, (at + rows) as i32)?);
                at += rows;
            }
        }
        Ok(())
    }

    /// Stacks per-expert matrices `{prefix}.{e}.{name}.*` (e < `experts`) into one
    /// `[experts, ...]` tensor named `{to}.*` per suffix (weight, and scales/biases
    /// when quantised); a no-op when expert 0 is absent (already stacked).
    pub fn stack_experts(&mut self, prefix: &str, name: &str, experts: usize, to: &str) -> Result<()> {
        for suffix in ["weight", "scales", "biases", "bias"] {
            if !self.contains(&format!("{prefix}.0.{name}.{suffix}")) {
                continue;
            }
            let parts = (0..experts).map(|e| self.take(&format!("{prefix}.{e}.{name}.{suffix}"))).collect::<Result<Vec<_>>>()?;
            let stacked = crate::mlx::stack(&parts.iter().collect::<Vec<_>>(), 0)?;
            self.insert(format!("{to}.{suffix}"), stacked);
        }
        Ok(())
    }

    /// Names of tensors nobody took (reported, since they hint at a wrong mapping).
    pub fn remaining(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    pub fn source(&self) -> &Path {
        &self.source
    }
}

pub fn check_shape(source: &Path, name: &str, a: &Array, shape: &[usize]) -> Result<()> {
    let found: Vec<usize> = a.shape().iter().map(|&d| d as usize).collect();
    if found != shape {
        return Err(Error::Model(format!("{}: tensor '{name}' has shape {found:?}, expected {shape:?}", source.display())));
    }
    Ok(())
}

/// The MLX dtype of a safetensors dtype name.
fn dtype_of(name: &str) -> Option<crate::mlx::Dtype> {
    use crate::mlx::Dtype::*;
    Some(match name {
        "BOOL" => Bool,
        "U8" => U8,
        "I8" => I8,
        "U16" => U16,
        "I16" => I16,
        "F16" => F16,
        "BF16" => BF16,
        "U32" => U32,
        "I32" => I32,
        "F32" => F32,
        "U64" => U64,
        "I64" => I64,
        "F64" => F64,
        _ => return None,
    })
}

/// Reads `len` entries from `start` along `axis` (0 or the last) of tensor `t`,
/// zero-padded to `pad_to` entries, from the file's bytes.
#[allow(clippy::too_many_arguments)]
fn read_slice(
    f: &std::fs::File,
    path: &Path,
    data_start: u64,
    t: &crate::mlx::safetensors_header::TensorEntry,
    axis: usize,
    start: u64,
    len: u64,
    pad_to: u64,
) -> Result<Array> {
    use std::os::unix::fs::FileExt;
    let dtype = dtype_of(&t.dtype).ok_or_else(|| Error::Model(format!("{}: tensor '{}' of dtype {} cannot be sharded", path.display(), t.name, t.dtype)))?;
    let elem = dtype.size() as u64;
    let dim = t.shape.get(axis).copied().unwrap_or(0);
    if axis >= t.shape.len() || start + len > dim {
        return Err(Error::Model(format!(
            "{}: tensor '{}' of shape {:?} has no part {start}..{} on axis {axis}",
            path.display(),
            t.name,
            t.shape,
            start + len
        )));
    }
    // Bytes of one entry of `axis` (all later axes), and how many runs precede it.
    let inner: u64 = t.shape[axis + 1..].iter().product::<u64>() * elem;
    let outer: u64 = t.shape[..axis].iter().product();
    let mut out = vec![0u8; (outer * pad_to * inner) as usize];
    let base = data_start + t.begin;
    let run = (len * inner) as usize;
    for o in 0..outer {
        let at = base + o * dim * inner + start * inner;
        let dst = (o * pad_to * inner) as usize;
        f.read_exact_at(&mut out[dst..dst + run], at).map_err(|e| Error::io(path, e))?;
    }
    let mut shape: Vec<i32> = t.shape.iter().map(|&d| d as i32).collect();
    shape[axis] = pad_to as i32;
    Array::from_bytes(&out, &shape, dtype)
}
