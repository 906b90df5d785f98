//! The one entry that turns a path into a model: a Hugging Face style directory
//! (config.json + safetensors, tokenizer files optional) or a `.gguf` file, with
//! load options and an optional LoRA adapter, into a `Model` and its tokenizer.
//! The engine, training and the CLI all load through here.

use super::gguf::{self, GgufModel};
use super::shard::Shard;
use super::{adapters, LoadOptions, Model};
use crate::mlx::distributed::Group;
use crate::mlx::Dtype;
use crate::text::Tokenizer;
use crate::{Error, Result};
use std::path::Path;
use std::sync::Arc;

/// A loaded model and its tokenizer (None for a directory without tokenizer files).
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
}

/// Whether `path` names a GGUF file (by extension, as llama.cpp and Ollama name them).
pub fn is_gguf(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Loads the model at `path` and its tokenizer, then `opts.adapter` if set.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Loaded> {
    load_parts(path, opts, true)
}

pub(super) fn load_parts(path: &Path, opts: &LoadOptions, want_tokenizer: bool) -> Result<Loaded> {
    if path.as_os_str().is_empty() {
        return Err(Error::InvalidArgument("the model path is empty".into()));
    }
    if let Some(dir) = &opts.adapter {
        // Before the weights load: a wrong path should not cost a model load.
        adapters::check_adapter_dir(dir)?;
    }
    // Adapters attach to each projection, so a model with one keeps q/k/v separate.
    let opts = &LoadOptions { fuse_projections: if opts.adapter.is_some() { Some(false) } else { opts.fuse_projections }, ..opts.clone() };
    let group = match super::tuning::distributed(opts) {
        Some(backend) if opts.adapter.is_some() => {
            return Err(Error::InvalidArgument(format!("a LoRA adapter cannot be applied to a model split over ranks (distributed '{backend}')")))
        }
        Some(backend) => super::shard::join(&backend)?,
        None => None,
    };
    let mut loaded = if is_gguf(path) { load_gguf(path, opts, want_tokenizer, group)? } else { load_dir(path, opts, want_tokenizer, group)? };
    if let Some(dir) = &opts.adapter {
        adapters::apply_adapter_dir(&mut loaded.model, dir, path)?;
    }
    Ok(loaded)
}

/// A directory: the tokenizer (0.2-0.9 s of JSON parsing for 128k-262k
/// vocabularies) is built on a second thread while this one, which owns the MLX
/// stream, reads the weights; it touches no MLX state.
fn load_dir(dir: &Path, opts: &LoadOptions, want_tokenizer: bool, group: Option<Arc<Group>>) -> Result<Loaded> {
    std::thread::scope(|scope| {
        let tokenizer = match want_tokenizer && dir.join("tokenizer.json").is_file() {
            true => Some(tokenizer_thread(scope, dir, || Tokenizer::from_dir(dir))?),
            false => None,
        };
        let model = Model::load_dir(dir, opts, group);
        // The model's error first: it is the more fundamental one.
        let tokenizer = tokenizer.map(|t| join_tokenizer(t, dir)).transpose();
        Ok(Loaded { model: model?, tokenizer: tokenizer? })
    })
}

/// A GGUF file: the compute dtype defaults to float32 (the file's quantisation
/// scales are exact in it); the tokenizer is built from the metadata on a
/// second thread while this one converts the tensors.
fn load_gguf(path: &Path, opts: &LoadOptions, want_tokenizer: bool, group: Option<Arc<Group>>) -> Result<Loaded> {
    let g = GgufModel::open(path)?;
    let opts = LoadOptions { dtype: Some(opts.dtype.unwrap_or(Dtype::F32)), ..opts.clone() };
    std::thread::scope(|scope| {
        let tok = match want_tokenizer {
            true => Some(tokenizer_thread(scope, path, || gguf::tokenizer(&g))?),
            false => None,
        };
        // Split: each tensor decoded from this rank's bytes only (docs/distributed.md).
        let model = match group {
            Some(group) => gguf::config(&g).and_then(|config| {
                // By whole experts: a column split is not checked against GGUF's blocks yet.
                let shard = Shard::new_with(group, &config, super::shard::MoeSplit::Experts)?;
                let split = gguf::split_weights(&g, config, &shard)?;
                Model::build(split.config, split.weights, &opts, Some(shard))
            }),
            None => gguf::config_and_weights(&g, gguf::Reader::Auto).and_then(|(config, weights)| Model::from_weights(config, weights, &opts)),
        };
        // The model's error first: it is the more fundamental one.
        let tokenizer = tok.map(|t| join_tokenizer(t, path)).transpose();
        Ok(Loaded { model: model?, tokenizer: tokenizer? })
    })
}

type TokenizerThread<'scope> = std::thread::ScopedJoinHandle<'scope, std::result::Result<Result<Tokenizer>, String>>;

/// The tokenizer built on a `gomlx-tokenizer` thread: a panic in the
/// `tokenizers` crate prints nothing (`crate::panics`) and becomes an error.
fn tokenizer_thread<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    path: &Path,
    build: impl FnOnce() -> Result<Tokenizer> + Send + 'scope,
) -> Result<TokenizerThread<'scope>> {
    crate::panics::thread("tokenizer")
        .spawn_scoped(scope, move || crate::panics::catch(build))
        .map_err(|e| Error::Tokenizer(format!("{}: cannot start the tokenizer thread: {e}", path.display())))
}

fn join_tokenizer(t: TokenizerThread<'_>, path: &Path) -> Result<Tokenizer> {
    t.join()
        .map_err(|_| Error::Tokenizer(format!("{}: the tokenizer thread panicked", path.display())))?
        .map_err(|what| Error::Tokenizer(format!("{}: building the tokenizer failed: internal error (panic): {what}", path.display())))?
}
