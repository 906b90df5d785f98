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
/// Symlinked directories are followed once each (a loop is not walked again),
/// and only regular files are read.
pub fn discover(base: &Path) -> Result<Vec<DiscoveredModel>> {
    if base.as_os_str().is_empty() {
        return Err(Error::InvalidArgument("the directory to search is empty (pass a path)".into()));
    }
    if !base.is_dir() {
        return Err(Error::InvalidArgument(format!("{}: not a directory", base.display())));
    }
    let mut found = Vec::new();
    walk_dirs(base, &mut |dir, files| {
        if !files.iter().any(|p| p.extension().is_some_and(|x| x == "safetensors")) {
            return;
        }
        let cfg = crate::files::read_text(&dir.join("config.json"), crate::files::MAX_TEXT_FILE)
            .ok()
            .and_then(|t| ModelConfig::from_json_str(&t).ok());
        if let Some(cfg) = cfg {
            let q = cfg.quantization.default;
            found.push(DiscoveredModel {
                path: dir.to_path_buf(),
                architecture: cfg.model_type,
                quant_bits: q.map(|q| q.bits),
                quant_group_size: q.map(|q| q.group_size),
            });
        }
    });
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Visits `base` and the directories below it (at most `MAX_DEPTH` levels,
/// sorted by name) with the regular files each holds. Each directory is
/// visited once, by its canonical path, so symlink loops end; entries that
/// are neither directories nor regular files (FIFOs, sockets) are skipped.
pub fn walk_dirs(base: &Path, visit: &mut dyn FnMut(&Path, &[PathBuf])) {
    let mut seen = std::collections::HashSet::new();
    walk(base, 0, &mut seen, visit);
}

fn walk(dir: &Path, depth: usize, seen: &mut std::collections::HashSet<PathBuf>, visit: &mut dyn FnMut(&Path, &[PathBuf])) {
    let Ok(canonical) = std::fs::canonicalize(dir) else { return };
    if !seen.insert(canonical) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut subdirs = Vec::new();
    let mut files = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        // Follows symlinks; a dangling one is neither.
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if meta.is_dir() {
            subdirs.push(p);
        } else if meta.is_file() {
            files.push(p);
        }
    }
    subdirs.sort();
    files.sort();
    visit(dir, &files);
    if depth < MAX_DEPTH {
        for d in subdirs {
            walk(&d, depth + 1, seen, visit);
        }
    }
}
