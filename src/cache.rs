//! KV caches, one per attention layer, owned by the request (models hold no
//! per-request state).
//!
//! - `Growing`: a buffer allocated in steps of `STEP` positions and filled with
//!   slice updates (MLX updates in place when the buffer is not shared), never a
//!   concatenate per token.
//! - `Rotating`: a ring of `window` positions for sliding-window layers. Single
//!   token steps write in place; multi-token steps return the retained window
//!   plus the new tokens in temporal order so the caller can mask exactly.

use crate::mlx::{self, Array};
use crate::{Error, Result};

/// Positions added each time a growing cache fills up.
pub const STEP: i32 = 256;

pub enum KvCache {
    Growing(Growing),
    Rotating(Rotating),
}

/// The keys and values to attend over after an update, and how many of them
/// precede the new tokens (the `d` of the mask rule `j <= i + d`).
pub struct Attend {
    pub keys: Array,
    pub values: Array,
    pub preceding: usize,
    /// Set when the keys are a ring updated in place rather than in temporal
    /// order: the slot that holds the newest key.
    pub ring_slot: Option<usize>,
}

impl KvCache {
    pub fn growing() -> KvCache {
        KvCache::Growing(Growing { keys: None, values: None, offset: 0, exact: false })
    }

    /// This cache without spare capacity: a growing cache keeps exactly the
    /// positions written (no `STEP` rounding, no zero fill). For one-shot
    /// prefills such as classify, where the spare positions would only cost
    /// memory (30 layers × 256 positions per prompt on SmolLM2: ~12 MB a row).
    pub fn exact(mut self) -> KvCache {
        if let KvCache::Growing(c) = &mut self {
            c.exact = true;
        }
        self
    }

    pub fn rotating(window: usize) -> KvCache {
        KvCache::Rotating(Rotating { keys: None, values: None, offset: 0, window, idx: 0, len: 0 })
    }

    /// Tokens seen so far (the position of the next token).
    pub fn offset(&self) -> usize {
        match self {
            KvCache::Growing(c) => c.offset,
            KvCache::Rotating(c) => c.offset,
        }
    }

    /// Appends `k`, `v` (`[B, H, L, D]`) and returns what to attend over.
    pub fn update(&mut self, k: Array, v: Array) -> Result<Attend> {
        match self {
            KvCache::Growing(c) => c.update(k, v),
            KvCache::Rotating(c) => c.update(k, v),
        }
    }

    /// Forgets the last `n` tokens; returns how many were removed.
    pub fn trim(&mut self, n: usize) -> Result<usize> {
        match self {
            KvCache::Growing(c) => {
                let n = n.min(c.offset);
                c.offset -= n;
                Ok(n)
            }
            KvCache::Rotating(c) => c.trim(n),
        }
    }

    /// Whether `trim(n)` keeps the cache exact: a rotating cache that has
    /// already discarded positions cannot give back the ones a trim exposes.
    pub fn can_trim(&self, n: usize) -> bool {
        match self {
            KvCache::Growing(_) => true,
            KvCache::Rotating(c) => n == 0 || c.offset == c.filled(),
        }
    }

    /// Keeps only the batch rows `rows` (`[B']` indices), e.g. when finished
    /// sequences leave a batch.
    pub fn select_rows(&mut self, rows: &Array) -> Result<()> {
        let (k, v) = match self {
            KvCache::Growing(c) => (&mut c.keys, &mut c.values),
            KvCache::Rotating(c) => (&mut c.keys, &mut c.values),
        };
        for buf in [k, v] {
            if let Some(a) = buf.take() {
                *buf = Some(a.take(rows, 0)?);
            }
        }
        Ok(())
    }

    /// The cached keys and values in temporal order (`[B, H, T, D]`), or None if empty.
    pub fn state(&self) -> Result<Option<(Array, Array)>> {
        match self {
            KvCache::Growing(c) => match (&c.keys, &c.values) {
                (Some(k), Some(v)) if c.offset > 0 => {
                    let t = c.offset as i32;
                    Ok(Some((k.slice_axis(2, 0, t)?, v.slice_axis(2, 0, t)?)))
                }
                _ => Ok(None),
            },
            KvCache::Rotating(c) => c.ordered(),
        }
    }

    /// Replaces the contents with `keys`/`values` (`[B, H, T, D]`) covering
    /// positions `offset - T .. offset`.
    pub fn set_state(&mut self, keys: Array, values: Array, offset: usize) -> Result<()> {
        let t = keys.dim(2) as usize;
        if t > offset {
            return Err(Error::InvalidArgument(format!("cache state of {t} positions cannot end at offset {offset}")));
        }
        match self {
            KvCache::Growing(c) => {
                if t != offset {
                    return Err(Error::InvalidArgument("a growing cache state must start at position 0".into()));
                }
                c.keys = Some(keys);
                c.values = Some(values);
                c.offset = offset;
            }
            KvCache::Rotating(c) => {
                let keep = t.min(c.window) as i32;
                let (k, v) = (keys.slice_axis(2, t as i32 - keep, t as i32)?, values.slice_axis(2, t as i32 - keep, t as i32)?);
                c.keys = Some(k);
                c.values = Some(v);
                c.offset = offset;
                c.len = keep as usize;
                c.idx = keep as usize % c.window;
            }
        }
        Ok(())
    }

    /// Arrays whose evaluation materialises the cache (for `eval` after a step).
    pub fn arrays(&self) -> Vec<&Array> {
        let (k, v) = match self {
            KvCache::Growing(c) => (&c.keys, &c.values),
            KvCache::Rotating(c) => (&c.keys, &c.values),
        };
        k.iter().chain(v.iter()).collect()
    }

    /// Bytes held by this cache's buffers.
    pub fn nbytes(&self) -> usize {
        self.arrays().iter().map(|a| a.nbytes()).sum()
    }
}

pub struct Growing {
    keys: Option<Array>,
    values: Option<Array>,
    offset: usize,
    /// Append by concatenation with no spare capacity (see `KvCache::exact`).
    exact: bool,
}

fn grow(buf: Option<&Array>, like: &Array, used: i32, need: i32) -> Result<Array> {
    extend(buf, like, used, (need + STEP - 1) / STEP * STEP)
}

/// The first `used` positions of `buf` followed by zeros, `capacity` positions in all.
fn extend(buf: Option<&Array>, like: &Array, used: i32, capacity: i32) -> Result<Array> {
    let shape = like.shape();
    let (b, h, d) = (shape[0], shape[1], shape[3]);
    let fresh = mlx::zeros(&[b, h, capacity - used, d], like.dtype())?;
    match buf {
        Some(old) if used > 0 => mlx::concatenate(&[&old.slice_axis(2, 0, used)?, &fresh], 2),
        _ => Ok(fresh),
    }
}

impl Growing {
    fn update(&mut self, k: Array, v: Array) -> Result<Attend> {
        let l = k.dim(2);
        let start = self.offset as i32;
        let end = start + l;
        if self.exact {
            let join = |old: Option<&Array>, x: Array| -> Result<Array> {
                match old {
                    Some(o) if start > 0 => mlx::concatenate(&[&o.slice_axis(2, 0, start)?, &x], 2),
                    _ => Ok(x),
                }
            };
            let keys = join(self.keys.as_ref(), k)?;
            let values = join(self.values.as_ref(), v)?;
            self.keys = Some(keys.clone());
            self.values = Some(values.clone());
            self.offset = end as usize;
            return Ok(Attend { keys, values, preceding: start as usize, ring_slot: None });
        }
        let capacity = self.keys.as_ref().map_or(0, |a| a.dim(2));
        if end > capacity {
            self.keys = Some(grow(self.keys.as_ref(), &k, start, end)?);
            self.values = Some(grow(self.values.as_ref(), &v, start, end)?);
        }
        let write = |buf: &Array, x: &Array| {
            let s = buf.shape();
            buf.slice_update(x, &[0, 0, start, 0], &[s[0], s[1], end, s[3]], &[1, 1, 1, 1])
        };
        let keys = write(self.keys.as_ref().unwrap(), &k)?;
        let values = write(self.values.as_ref().unwrap(), &v)?;
        let out = Attend { keys: keys.slice_axis(2, 0, end)?, values: values.slice_axis(2, 0, end)?, preceding: start as usize, ring_slot: None };
        self.keys = Some(keys);
        self.values = Some(values);
        self.offset = end as usize;
        Ok(out)
    }
}

pub struct Rotating {
    /// Buffers of `[B, H, cap, D]`, cap <= window; only the first `len` slots
    /// hold positions until the ring is full.
    keys: Option<Array>,
    values: Option<Array>,
    offset: usize,
    window: usize,
    /// Next write position in the ring (equals `len` until it wraps).
    idx: usize,
    /// Slots holding positions: in temporal order while below `window`, a ring once full.
    len: usize,
}

impl Rotating {
    fn filled(&self) -> usize {
        self.len
    }

    fn capacity(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.dim(2) as usize)
    }

    /// The retained positions in temporal order.
    fn ordered(&self) -> Result<Option<(Array, Array)>> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else { return Ok(None) };
        let n = self.len;
        if n == 0 {
            return Ok(None);
        }
        if n < self.window {
            if n == self.capacity() {
                return Ok(Some((k.clone(), v.clone())));
            }
            return Ok(Some((k.slice_axis(2, 0, n as i32)?, v.slice_axis(2, 0, n as i32)?)));
        }
        if self.idx == 0 {
            return Ok(Some((k.clone(), v.clone())));
        }
        let order =
            |a: &Array| -> Result<Array> { mlx::concatenate(&[&a.slice_axis(2, self.idx as i32, n as i32)?, &a.slice_axis(2, 0, self.idx as i32)?], 2) };
        Ok(Some((order(k)?, order(v)?)))
    }

    fn update(&mut self, k: Array, v: Array) -> Result<Attend> {
        let l = k.dim(2) as usize;
        if l == 1 && self.len == self.window {
            // Full ring: overwrite the oldest position in place.
            let i = self.idx as i32;
            let write = |buf: &Array, x: &Array| {
                let s = buf.shape();
                buf.slice_update(x, &[0, 0, i, 0], &[s[0], s[1], i + 1, s[3]], &[1, 1, 1, 1])
            };
            let keys = write(self.keys.as_ref().unwrap(), &k)?;
            let values = write(self.values.as_ref().unwrap(), &v)?;
            self.keys = Some(keys.clone());
            self.values = Some(values.clone());
            self.idx = (self.idx + 1) % self.window;
            self.offset += 1;
            // All `window` retained positions are within the window of the one query.
            return Ok(Attend { keys, values, preceding: self.window - 1, ring_slot: Some(i as usize) });
        }
        if l == 1 && self.len > 0 {
            // Not yet full, one token: append in place like a growing cache
            // (spare slots allocated in steps, up to the window).
            let n = self.len as i32;
            if self.capacity() == self.len {
                let cap = ((self.len as i32 + STEP) / STEP * STEP).min(self.window as i32);
                self.keys = Some(extend(self.keys.as_ref(), &k, n, cap)?);
                self.values = Some(extend(self.values.as_ref(), &v, n, cap)?);
            }
            let write = |buf: &Array, x: &Array| {
                let s = buf.shape();
                buf.slice_update(x, &[0, 0, n, 0], &[s[0], s[1], n + 1, s[3]], &[1, 1, 1, 1])
            };
            let keys = write(self.keys.as_ref().unwrap(), &k)?;
            let values = write(self.values.as_ref().unwrap(), &v)?;
            let out = Attend { keys: keys.slice_axis(2, 0, n + 1)?, values: values.slice_axis(2, 0, n + 1)?, preceding: self.len, ring_slot: None };
            self.keys = Some(keys);
            self.values = Some(values);
            self.len += 1;
            self.idx = self.len % self.window;
            self.offset += 1;
            return Ok(out);
        }
        // Multi-token step (or the first token): temporal order, then append.
        // The first new query sees at most window-1 older positions.
        let (keys, values, preceding) = match self.ordered()? {
            Some((ok, ov)) => {
                let n = ok.dim(2) as usize;
                let keep = n.min(self.window - 1);
                let from = (n - keep) as i32;
                let (ok, ov) = (ok.slice_axis(2, from, n as i32)?, ov.slice_axis(2, from, n as i32)?);
                (mlx::concatenate(&[&ok, &k], 2)?, mlx::concatenate(&[&ov, &v], 2)?, keep)
            }
            None => (k, v, 0),
        };
        self.offset += l;
        let total = keys.dim(2) as usize;
        let stored = total.min(self.window);
        let from = (total - stored) as i32;
        self.keys = Some(keys.slice_axis(2, from, total as i32)?);
        self.values = Some(values.slice_axis(2, from, total as i32)?);
        // Stored in temporal order: the next write goes after the newest (or over the oldest when full).
        self.len = stored;
        self.idx = stored % self.window;
        Ok(Attend { keys, values, preceding, ring_slot: None })
    }

    fn trim(&mut self, n: usize) -> Result<usize> {
        let Some((k, v)) = self.ordered()? else { return Ok(0) };
        let filled = k.dim(2) as usize;
        let n = n.min(filled);
        let keep = (filled - n) as i32;
        self.keys = Some(k.slice_axis(2, 0, keep)?);
        self.values = Some(v.slice_axis(2, 0, keep)?);
        self.offset -= n;
        self.len = keep as usize;
        self.idx = keep as usize % self.window;
        Ok(n)
    }
}

/// Writes the caches of a sequence (one per layer) and its token ids to a
/// safetensors file: tensors `layers.N.keys` / `layers.N.values`, metadata
/// with each layer's kind and offset and the tokens.
pub fn save(path: &std::path::Path, caches: &[KvCache], tokens: &[u32]) -> Result<()> {
    use std::collections::BTreeMap;
    let mut tensors = BTreeMap::new();
    let mut layers = Vec::new();
    for (i, c) in caches.iter().enumerate() {
        let (kind, window) = match c {
            KvCache::Growing(_) => ("growing", 0),
            KvCache::Rotating(r) => ("rotating", r.window),
        };
        layers.push(serde_json::json!({"kind": kind, "window": window, "offset": c.offset()}));
        if let Some((k, v)) = c.state()? {
            tensors.insert(format!("layers.{i}.keys"), k);
            tensors.insert(format!("layers.{i}.values"), v);
        }
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "gomlx-kv-cache-1".to_string());
    meta.insert("layers".to_string(), serde_json::Value::Array(layers).to_string());
    meta.insert("tokens".to_string(), serde_json::to_string(tokens).expect("ids serialise"));
    crate::mlx::io::save_safetensors(path, &tensors, &meta)
}

/// Reads what `save` wrote: the caches and the token ids they hold.
pub fn load(path: &std::path::Path) -> Result<(Vec<KvCache>, Vec<u32>)> {
    let st = crate::mlx::io::load_safetensors(path)?;
    let bad = |what: &str| Error::InvalidArgument(format!("{}: not a gomlx KV cache file ({what})", path.display()));
    if st.metadata.get("format").map(String::as_str) != Some("gomlx-kv-cache-1") {
        return Err(bad("format"));
    }
    let layers: Vec<serde_json::Value> = serde_json::from_str(st.metadata.get("layers").ok_or_else(|| bad("layers"))?).map_err(|_| bad("layers"))?;
    let tokens: Vec<u32> = serde_json::from_str(st.metadata.get("tokens").ok_or_else(|| bad("tokens"))?).map_err(|_| bad("tokens"))?;
    let mut tensors = st.tensors;
    let mut caches = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let offset = l["offset"].as_u64().ok_or_else(|| bad("offset"))? as usize;
        let mut c = match l["kind"].as_str() {
            Some("growing") => KvCache::growing(),
            Some("rotating") => KvCache::rotating(l["window"].as_u64().filter(|&w| w > 0).ok_or_else(|| bad("window"))? as usize),
            _ => return Err(bad("kind")),
        };
        if let (Some(k), Some(v)) = (tensors.remove(&format!("layers.{i}.keys")), tensors.remove(&format!("layers.{i}.values"))) {
            c.set_state(k, v, offset)?;
        }
        caches.push(c);
    }
    Ok((caches, tokens))
}
