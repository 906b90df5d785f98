//! Shared helpers for the text tests: fixture and tokenizer locations.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use gomlx::text::Tokenizer;
use serde_json::Value;

pub const NAMES: [&str; 4] = ["qwen3", "llama3", "llama3_1", "gemma3"];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tokenizer_dir(name: &str) -> PathBuf {
    root().join(".cache/tokenizers").join(name)
}

/// The real tokenizers are fetched, not committed: a missing one fails loudly.
/// Each is loaded once per test binary (the Gemma one is 33 MB of JSON).
pub fn load(name: &str) -> Arc<Tokenizer> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Tokenizer>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(t) = cache.lock().unwrap().get(name) {
        return t.clone();
    }
    let t = load_uncached(name);
    cache.lock().unwrap().insert(name.to_string(), t.clone());
    t
}

pub fn load_uncached(name: &str) -> Arc<Tokenizer> {
    let dir = tokenizer_dir(name);
    assert!(dir.join("tokenizer.json").is_file(), "{} is missing: run scripts/fetch-tokenizers before cargo test", dir.join("tokenizer.json").display());
    Arc::new(Tokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("loading {name}: {e}")))
}

pub fn fixture(file: &str) -> Value {
    let path = root().join("tests/fixtures/text").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (regenerate with scripts/text-oracle/make_references.py)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn corpus() -> Vec<String> {
    fixture("corpus.json")["lines"]
        .as_array()
        .expect("corpus.json has lines")
        .iter()
        .map(|v| v.as_str().expect("corpus lines are strings").to_string())
        .collect()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("an id list").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}
