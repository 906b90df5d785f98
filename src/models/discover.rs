//! Finding model directories below a base directory.

use super::config::ModelConfig;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A model directory found by `discover`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DiscoveredModel {
    pub path: PathBuf,
    pub architecture: String,
    pub quant_bits: Option<i32>,
    pub quant_group_size: Option<i32>,
}

const MAX_DEPTH: usize = 6;

/// Every directory below `base` (and `base` itself) holding a config.json of a
/// supported architecture and at least one safetensors file, sorted by path.
pub fn discover(base: &Path) -> Result<Vec<DiscoveredModel>> {
    if !base.is_dir() {
        return Err(Error::InvalidArgument(format!("{}: not a directory", base.display())));
    }
    let mut found = Vec::new();
    walk(base, 0, &mut found);
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

fn walk(dir: &Path, depth: usize, found: &mut Vec<DiscoveredModel>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut subdirs = Vec::new();
    let mut has_weights = false;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            subdirs.push(p);
        } else if p.extension().is_some_and(|x| x == "safetensors") {
            has_weights = true;
        }
    }
    if has_weights {
        if let Some(cfg) = std::fs::read_to_string(dir.join("config.json")).ok().and_then(|t| ModelConfig::from_json_str(&t).ok()) {
            let q = cfg.quantization.default;
            found.push(DiscoveredModel {
                path: dir.to_path_buf(),
                architecture: cfg.model_type,
                quant_bits: q.map(|q| q.bits),
                quant_group_size: q.map(|q| q.group_size),
            });
        }
    }
    if depth < MAX_DEPTH {
        for d in subdirs {
            walk(&d, depth + 1, found);
        }
    }
}
