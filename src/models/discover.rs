//! Finding models below a base directory: Hugging Face style directories and
//! `.gguf` files, as `gomlx discover`, `gm_discover` and the server list them.

use super::config::ModelConfig;
use super::gguf::{GgufArch, GgufFile};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// A model found by `discover`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DiscoveredModel {
    /// The model directory, or the `.gguf` file.
    pub path: PathBuf,
    /// "safetensors" (a directory) or "gguf".
    pub format: &'static str,
    /// `model_type` (directories) or `general.architecture` (GGUF).
    pub architecture: String,
    /// Whether gomlx loads this architecture.
    pub supported: bool,
    /// MLX quantisation of a directory (None: not quantised, or GGUF).
    pub quant_bits: Option<i32>,
    pub quant_group_size: Option<i32>,
    /// GGUF tensor types by count, e.g. {"q4_1": 211, "f32": 61}; empty for directories.
    pub tensor_types: BTreeMap<String, usize>,
    /// Bytes of the weight files.
    pub size_bytes: u64,
}

const MAX_DEPTH: usize = 6;

/// Every model at or below `base`, sorted by path: directories holding a
/// config.json of a supported architecture and safetensors weights, and
/// readable `.gguf` files (supported or not, as `supported` says). Symbolic
/// links are followed once: a directory reached twice is not walked again.
pub fn discover(base: &Path) -> Result<Vec<DiscoveredModel>> {
    if base.as_os_str().is_empty() {
        return Err(Error::InvalidArgument("the directory to search is empty".into()));
    }
    if !base.is_dir() {
        return Err(Error::InvalidArgument(format!("{}: not a directory", base.display())));
    }
    let mut found = Vec::new();
    walk(base, 0, &mut HashSet::new(), &mut found);
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

fn walk(dir: &Path, depth: usize, seen: &mut HashSet<PathBuf>, found: &mut Vec<DiscoveredModel>) {
    if !dir.canonicalize().is_ok_and(|real| seen.insert(real)) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut subdirs = Vec::new();
    let mut weights = 0u64;
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if meta.is_dir() {
            // Hidden directories below the base (.git, caches) are skipped.
            if depth == 0 || !e.file_name().to_string_lossy().starts_with('.') {
                subdirs.push(p);
            }
        } else if !meta.is_file() {
            // FIFOs, sockets, devices: never opened.
        } else if p.extension().is_some_and(|x| x == "safetensors") {
            weights += meta.len();
        } else if super::is_gguf(&p) {
            if let Some(m) = gguf_entry(&p, meta.len()) {
                found.push(m);
            }
        }
    }
    if weights > 0 {
        // Bounded, and never from a FIFO named config.json (crate::files).
        let cfg = crate::files::read_text(&dir.join("config.json"), crate::files::MAX_TEXT_FILE).ok().and_then(|t| ModelConfig::from_json_str(&t).ok());
        if let Some(cfg) = cfg {
            let q = cfg.quantization.default;
            found.push(DiscoveredModel {
                path: dir.to_path_buf(),
                format: "safetensors",
                architecture: cfg.model_type,
                supported: true,
                quant_bits: q.map(|q| q.bits),
                quant_group_size: q.map(|q| q.group_size),
                tensor_types: BTreeMap::new(),
                size_bytes: weights,
            });
        }
    }
    if depth < MAX_DEPTH {
        for d in subdirs {
            walk(&d, depth + 1, seen, found);
        }
    }
}

fn gguf_entry(path: &Path, size: u64) -> Option<DiscoveredModel> {
    let f = GgufFile::open(path).ok()?;
    let architecture = f.architecture().ok()?.to_string();
    let mut tensor_types = BTreeMap::new();
    for t in &f.tensors {
        *tensor_types.entry(t.ty.name().to_lowercase()).or_default() += 1;
    }
    Some(DiscoveredModel {
        path: path.to_path_buf(),
        format: "gguf",
        supported: GgufArch::find(&architecture).is_some(),
        architecture,
        quant_bits: None,
        quant_group_size: None,
        tensor_types,
        size_bytes: size,
    })
}
