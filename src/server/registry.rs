//! The models a server offers: named paths (from `--model` and `--models-dir`,
//! found by `models::discover`), each loaded into an `Engine` on first use,
//! kept while requests use it and for `keep_alive` after, then closed; at most
//! `max_loaded` at once (the least recently used idle one makes room).

use super::errors::{ApiError, ApiResult};
use crate::engine::{Engine, EngineOptions};
use crate::models::DiscoveredModel;
use axum::http::StatusCode;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// One model the server can serve.
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    /// "safetensors" or "gguf".
    pub format: &'static str,
    pub architecture: String,
    pub size_bytes: u64,
    pub quant: Option<String>,
    pub modified: SystemTime,
    slot: tokio::sync::Mutex<Option<Loaded>>,
    /// Requests using the engine now (a loaded model with users is never unloaded).
    active: Arc<AtomicUsize>,
    last_used: Mutex<Instant>,
    loaded: std::sync::atomic::AtomicBool,
}

struct Loaded {
    engine: Engine,
}

/// A model in use by one request: the engine, and a count that keeps it loaded.
pub struct Lease {
    pub engine: Engine,
    /// Seconds spent loading for this request (0 when it was loaded already).
    pub load_s: f64,
    pub user: User,
}

/// One counted use of an entry; the count drops with it.
pub struct User(pub Arc<Entry>);

impl Drop for User {
    fn drop(&mut self) {
        *self.0.last_used.lock().unwrap() = Instant::now();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Lease {
    pub fn entry(&self) -> &Arc<Entry> {
        &self.user.0
    }
}

pub struct Registry {
    pub entries: Vec<Arc<Entry>>,
    pub options: EngineOptions,
    /// How long an idle model stays loaded; None: for ever.
    pub keep_alive: Option<Duration>,
    pub max_loaded: usize,
    /// Serialises loads, so two first requests load a model once and budgets hold.
    load_lock: tokio::sync::Mutex<()>,
}

/// The name a path is served under: the directory's or the file's name without `.gguf`.
pub fn model_name(path: &Path) -> String {
    let n = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    n.strip_suffix(".gguf").map(str::to_string).unwrap_or(n)
}

fn entry(d: &DiscoveredModel) -> Entry {
    let quant = match (d.quant_bits, d.tensor_types.iter().max_by_key(|(_, n)| **n)) {
        (Some(b), _) => Some(format!("Q{b}")),
        (None, Some((t, _))) if d.format == "gguf" => Some(t.to_uppercase()),
        _ => None,
    };
    let modified = std::fs::metadata(&d.path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    Entry {
        name: model_name(&d.path),
        path: d.path.clone(),
        format: d.format,
        architecture: d.architecture.clone(),
        size_bytes: d.size_bytes,
        quant,
        modified,
        slot: tokio::sync::Mutex::new(None),
        active: Arc::new(AtomicUsize::new(0)),
        last_used: Mutex::new(Instant::now()),
        loaded: Default::default(),
    }
}

impl Registry {
    /// The models of `model` (one path) and `models_dir` (all supported ones below it).
    pub fn new(
        model: Option<&Path>,
        models_dir: Option<&Path>,
        options: EngineOptions,
        keep_alive: Option<Duration>,
        max_loaded: usize,
    ) -> crate::Result<Registry> {
        let mut found = Vec::new();
        if let Some(p) = model {
            let d = if p.is_dir() {
                crate::models::discover(p)?.into_iter().find(|d| d.path == p)
            } else {
                let parent = p.parent().filter(|x| !x.as_os_str().is_empty()).unwrap_or(Path::new("."));
                crate::models::discover(parent)?.into_iter().find(|d| d.path.file_name() == p.file_name())
            };
            let d =
                d.ok_or_else(|| crate::Error::InvalidArgument(format!("{}: not a model gomlx can serve (a model directory or a .gguf file)", p.display())))?;
            found.push(d);
        }
        if let Some(dir) = models_dir {
            found.extend(crate::models::discover(dir)?.into_iter().filter(|d| d.supported));
        }
        let mut entries: Vec<Arc<Entry>> = Vec::new();
        for d in &found {
            if !d.supported {
                return Err(crate::Error::InvalidArgument(format!("{}: architecture '{}' is not supported", d.path.display(), d.architecture)));
            }
            let e = entry(d);
            // Two models of one name: the later gets its parent directory's name in front.
            let name = if entries.iter().any(|x| x.name == e.name) {
                let parent = d.path.parent().map(model_name).unwrap_or_default();
                format!("{parent}/{}", e.name)
            } else {
                e.name.clone()
            };
            if entries.iter().any(|x| x.name == name) {
                continue;
            }
            entries.push(Arc::new(Entry { name, ..e }));
        }
        if entries.is_empty() {
            return Err(crate::Error::InvalidArgument("no model to serve: give --model PATH or a --models-dir holding models".into()));
        }
        Ok(Registry { entries, options, keep_alive, max_loaded: max_loaded.max(1), load_lock: tokio::sync::Mutex::new(()) })
    }

    /// The entry for a request's `model` (Ollama's `name:latest` is `name`).
    pub fn find(&self, name: &str) -> Option<&Arc<Entry>> {
        let bare = name.strip_suffix(":latest").unwrap_or(name);
        self.entries.iter().find(|e| e.name == name || e.name == bare)
    }

    /// The entry for `model`, or a 404 naming the field; an absent model is
    /// the only one when there is one.
    pub fn resolve(&self, name: Option<&str>) -> ApiResult<&Arc<Entry>> {
        match name {
            Some(n) => self.find(n).ok_or_else(|| {
                let known: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
                let mut e =
                    ApiError::new(StatusCode::NOT_FOUND, format!("model: '{n}' is not served here (known: {})", known.join(", "))).code("model_not_found");
                e.param = Some("model".into());
                e
            }),
            None if self.entries.len() == 1 => Ok(&self.entries[0]),
            None => Err(ApiError::field("model", "is required (this server has several models; GET /v1/models lists them)")),
        }
    }

    /// The engine of `entry`, loading it (on a blocking thread) when needed.
    pub async fn lease(&self, entry: &Arc<Entry>) -> ApiResult<Lease> {
        entry.active.fetch_add(1, Ordering::SeqCst);
        // From here the count is undone by the guard's drop, on every path.
        let user = User(entry.clone());
        let mut slot = entry.slot.lock().await;
        if let Some(l) = slot.as_ref() {
            return Ok(Lease { engine: l.engine.clone(), load_s: 0.0, user });
        }
        let _one = self.load_lock.lock().await;
        self.make_room(entry).await;
        let (path, opts) = (entry.path.clone(), self.options.clone());
        let t = Instant::now();
        let engine = tokio::task::spawn_blocking(move || Engine::load(&path, &opts))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("loading {}: {e}", entry.name)))?
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("loading {}: {e}", entry.name)))?;
        let load_s = t.elapsed().as_secs_f64();
        eprintln!("{}", serde_json::json!({"event": "model_loaded", "model": entry.name, "load_s": load_s}));
        *slot = Some(Loaded { engine: engine.clone() });
        entry.loaded.store(true, Ordering::SeqCst);
        Ok(Lease { engine, load_s, user })
    }

    /// Unloads idle models, least recently used first, until one more fits `max_loaded`.
    async fn make_room(&self, keep: &Arc<Entry>) {
        loop {
            let loaded: Vec<&Arc<Entry>> = self.entries.iter().filter(|e| e.is_loaded() && !Arc::ptr_eq(e, keep)).collect();
            if loaded.len() < self.max_loaded {
                return;
            }
            let idle = loaded.into_iter().filter(|e| e.active() == 0).min_by_key(|e| *e.last_used.lock().unwrap());
            match idle {
                Some(e) => e.unload("room for another model", false).await,
                // Every loaded model is in use: load over the budget rather than fail.
                None => return,
            }
        }
    }

    /// Unloads models idle for longer than `keep_alive` (called every second).
    pub async fn expire(&self) {
        let Some(keep) = self.keep_alive else { return };
        for e in &self.entries {
            if e.is_loaded() && e.active() == 0 && e.idle_for() >= keep {
                e.unload("keep-alive expired", false).await;
            }
        }
    }

    /// Closes every model, in use or not (after the drain): running generations end within
    /// one step, and no engine thread outlives the process's exit.
    pub async fn unload_all(&self) {
        for e in &self.entries {
            e.unload("shutdown", true).await;
        }
    }

    /// Loaded engines (for metrics and /api/ps).
    pub fn loaded(&self) -> Vec<&Arc<Entry>> {
        self.entries.iter().filter(|e| e.is_loaded()).collect()
    }
}

impl Entry {
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap().elapsed()
    }

    /// The engine when loaded, without loading it or counting a use.
    pub async fn engine_if_loaded(&self) -> Option<Engine> {
        self.slot.lock().await.as_ref().map(|l| l.engine.clone())
    }

    async fn unload(&self, why: &str, even_in_use: bool) {
        let mut slot = self.slot.lock().await;
        // Checked under the lock: a lease taken meanwhile holds the slot first.
        if self.active() > 0 && !even_in_use {
            return;
        }
        if let Some(l) = slot.take() {
            self.loaded.store(false, Ordering::SeqCst);
            let _ = tokio::task::spawn_blocking(move || l.engine.close()).await;
            eprintln!("{}", serde_json::json!({"event": "model_unloaded", "model": self.name, "reason": why, "idle_s": self.idle_for().as_secs_f64()}));
        }
    }
}
