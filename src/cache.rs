//! KV caches, one per attention layer, owned by the request (models hold no
//! per-request state).
//!
//! - `Growing`: a buffer allocated in steps of `STEP` positions and filled with
//!   slice updates (MLX updates in place when the buffer is not shared), never a
//!   concatenate per token.
//! - `Rotating`: a ring of `window` positions for sliding-window layers. Single
//!   token steps write in place; multi-token steps return the retained window
//!   plus the new tokens in temporal order so the caller can mask exactly.
//! - `Recurrent`: the fixed-size state of a linear-attention layer (Qwen 3.5's
//!   gated delta net): its short convolution's last inputs and its recurrent
//!   matrix. It summarises every token seen, so it can be neither trimmed nor
//!   cut to a shorter prefix: only reused whole, at the position it was saved at.

use crate::mlx::{self, Array};
use crate::{Error, Result};

/// Positions added each time a growing cache fills up.
pub const STEP: i32 = 256;

pub enum KvCache {
    Growing(Growing),
    Rotating(Rotating),
    Recurrent(Recurrent),
}

/// A linear-attention layer's state after `offset` tokens: `conv` `[B, K-1, C]`
/// (the last inputs of the causal convolution) and `state` `[B, H, Dv, Dk]`
/// (float32). Both None before the first token.
pub struct Recurrent {
    conv: Option<Array>,
    state: Option<Array>,
    offset: usize,
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

    pub fn recurrent() -> KvCache {
        KvCache::Recurrent(Recurrent { conv: None, state: None, offset: 0 })
    }

    pub fn is_recurrent(&self) -> bool {
        matches!(self, KvCache::Recurrent(_))
    }

    /// A recurrent cache's convolution and recurrent states (None before the first token).
    pub fn recurrent_state(&self) -> Result<(Option<&Array>, Option<&Array>)> {
        match self {
            KvCache::Recurrent(r) => Ok((r.conv.as_ref(), r.state.as_ref())),
            _ => Err(Error::InvalidArgument("a linear-attention layer needs a recurrent cache".into())),
        }
    }

    /// Stores a recurrent layer's states after `new` more tokens.
    pub fn set_recurrent(&mut self, conv: Array, state: Array, new: usize) -> Result<()> {
        match self {
            KvCache::Recurrent(r) => {
                r.conv = Some(conv);
                r.state = Some(state);
                r.offset += new;
                Ok(())
            }
            _ => Err(Error::InvalidArgument("a linear-attention layer needs a recurrent cache".into())),
        }
    }

    /// Tokens seen so far (the position of the next token).
    pub fn offset(&self) -> usize {
        match self {
            KvCache::Growing(c) => c.offset,
            KvCache::Rotating(c) => c.offset,
            KvCache::Recurrent(c) => c.offset,
        }
    }

    /// Appends `k`, `v` (`[B, H, L, D]`) and returns what to attend over.
    pub fn update(&mut self, k: Array, v: Array) -> Result<Attend> {
        match self {
            KvCache::Growing(c) => c.update(k, v),
            KvCache::Rotating(c) => c.update(k, v),
            KvCache::Recurrent(_) => Err(Error::InvalidArgument("an attention layer cannot use a recurrent cache".into())),
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
            KvCache::Recurrent(_) if n == 0 => Ok(0),
            KvCache::Recurrent(_) => Err(Error::InvalidArgument("a recurrent state cannot forget tokens".into())),
        }
    }

    /// Whether `trim(n)` keeps the cache exact: a rotating cache that has
    /// already discarded positions cannot give back the ones a trim exposes.
    pub fn can_trim(&self, n: usize) -> bool {
        match self {
            KvCache::Growing(_) => true,
            KvCache::Rotating(c) => n == 0 || c.offset == c.filled(),
            KvCache::Recurrent(_) => n == 0,
        }
    }

    /// Whether `prefix(n)` can give the state after the first `n` tokens: a
    /// recurrent state exists only at the position it was saved at (or empty).
    pub fn has_prefix(&self, n: usize) -> bool {
        match self {
            KvCache::Recurrent(c) => n == 0 || n == c.offset,
            _ => n <= self.offset(),
        }
    }

    /// Keeps only the batch rows `rows` (`[B']` indices), e.g. when finished
    /// sequences leave a batch.
    pub fn select_rows(&mut self, rows: &Array) -> Result<()> {
        let (k, v) = match self {
            KvCache::Growing(c) => (&mut c.keys, &mut c.values),
            KvCache::Rotating(c) => (&mut c.keys, &mut c.values),
            KvCache::Recurrent(c) => (&mut c.conv, &mut c.state),
        };
        for buf in [k, v] {
            if let Some(a) = buf.take() {
                *buf = Some(a.take(rows, 0)?);
            }
        }
        Ok(())
    }

    /// The cached keys and values in temporal order (`[B, H, T, D]`), or None
    /// if empty; a recurrent cache's convolution and recurrent states.
    pub fn state(&self) -> Result<Option<(Array, Array)>> {
        match self {
            KvCache::Recurrent(c) => match (&c.conv, &c.state) {
                (Some(conv), Some(state)) if c.offset > 0 => Ok(Some((conv.clone(), state.clone()))),
                _ => Ok(None),
            },
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
        if let KvCache::Recurrent(c) = self {
            // A recurrent cache: the convolution and recurrent states after `offset` tokens.
            c.conv = Some(keys);
            c.state = Some(values);
            c.offset = offset;
            return Ok(());
        }
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
            KvCache::Recurrent(_) => unreachable!("handled above"),
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
            KvCache::Recurrent(c) => (&c.conv, &c.state),
        };
        k.iter().chain(v.iter()).collect()
    }

    /// A growing cache holding the first `n` positions of this one's (temporal
    /// order), sharing its arrays until either is written.
    /// A recurrent cache gives its state only whole (`n` = its offset) or empty.
    pub fn prefix(&self, n: usize) -> Result<KvCache> {
        if let KvCache::Recurrent(c) = self {
            if n == 0 {
                return Ok(KvCache::recurrent());
            }
            if n != c.offset {
                return Err(Error::InvalidArgument(format!("a recurrent state after {} tokens has no prefix of {n}", c.offset)));
            }
            return Ok(KvCache::Recurrent(Recurrent { conv: c.conv.clone(), state: c.state.clone(), offset: n }));
        }
        let mut out = KvCache::growing();
        if n > 0 {
            let (k, v) = self.state()?.ok_or_else(|| Error::InvalidArgument("an empty cache has no prefix".into()))?;
            let t = self.offset();
            if n > t || k.dim(2) as usize != t {
                return Err(Error::InvalidArgument(format!("a prefix of {n} positions from a cache of {t} (holding {})", k.dim(2))));
            }
            out.set_state(k.slice_axis(2, 0, n as i32)?, v.slice_axis(2, 0, n as i32)?, n)?;
        }
        Ok(out)
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
/// safetensors file: tensors `layers.N.keys` / `layers.N.values` (a recurrent
/// layer's convolution and recurrent states under the same names), metadata
/// with each layer's kind and offset and the tokens.
pub fn save(path: &std::path::Path, caches: &[KvCache], tokens: &[u32]) -> Result<()> {
    use std::collections::BTreeMap;
    let mut tensors = BTreeMap::new();
    let mut layers = Vec::new();
    for (i, c) in caches.iter().enumerate() {
        let (kind, window) = match c {
            KvCache::Growing(_) => ("growing", 0),
            KvCache::Rotating(r) => ("rotating", r.window),
            KvCache::Recurrent(_) => ("recurrent", 0),
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
            Some("recurrent") => KvCache::recurrent(),
            _ => return Err(bad("kind")),
        };
        if let (Some(k), Some(v)) = (tensors.remove(&format!("layers.{i}.keys")), tensors.remove(&format!("layers.{i}.values"))) {
            c.set_state(k, v, offset)?;
        }
        caches.push(c);
    }
    Ok((caches, tokens))
}

/// The KV caches of a decoding batch: one growing cache per attention layer
/// holding `[B, H, T, D]`, rows left-padded to the common length `T`. Row i's
/// tokens are the columns `pads[i]..T`, so its next position is `T - pads[i]`;
/// the padding is hidden by the valid mask and RoPE takes each row's own
/// position (`positions`). Linear-attention layers hold one recurrent state per
/// row instead (`[B, ...]`, no columns, so no padding reaches them). Rows join
/// (`join`) and leave (`keep`) between steps; joining copies the batch once,
/// leaving copies the kept rows once.
pub struct BatchKv {
    pub layers: Vec<KvCache>,
    pads: Vec<usize>,
}

impl BatchKv {
    pub fn new(layers: usize) -> BatchKv {
        BatchKv { layers: (0..layers).map(|_| KvCache::growing()).collect(), pads: Vec::new() }
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.pads.len()
    }

    /// Columns per row (`T`) of the attention layers.
    pub fn len(&self) -> usize {
        self.layers.iter().find(|c| !c.is_recurrent()).map_or(0, KvCache::offset)
    }

    pub fn is_empty(&self) -> bool {
        self.pads.is_empty()
    }

    /// Tokens cached for row `i` (its position for the next token).
    pub fn row_len(&self, i: usize) -> usize {
        self.len() - self.pads[i]
    }

    /// Appends rows, each given as one cache per layer (growing `[1, H, L, D]`
    /// with offset L, or recurrent after L tokens), in one concatenation per layer.
    pub fn join(&mut self, rows: Vec<Vec<KvCache>>) -> Result<()> {
        let mut lens = Vec::with_capacity(rows.len());
        for row in &rows {
            let l = row.first().map_or(0, KvCache::offset);
            let kinds_ok = row.iter().zip(&rows[0]).all(|(c, first)| c.is_recurrent() == first.is_recurrent() && !matches!(c, KvCache::Rotating(_)));
            if row.len() != self.layers.len() || l == 0 || !kinds_ok || row.iter().any(|c| c.offset() != l) {
                return Err(Error::InvalidArgument(format!("a joining row needs {} growing or recurrent caches of one non-zero length", self.layers.len())));
            }
            lens.push(l);
        }
        if rows.is_empty() {
            return Ok(());
        }
        let t = self.len();
        let end = lens.iter().copied().max().unwrap_or(0).max(t);
        let join = |parts: &[Array]| if parts.len() == 1 { Ok(parts[0].clone()) } else { mlx::concatenate(&parts.iter().collect::<Vec<_>>(), 0) };
        for (li, batch) in self.layers.iter_mut().enumerate() {
            if rows[0][li].is_recurrent() {
                // One state per row, in row order: no columns to align.
                let (mut cs, mut ss) = (Vec::new(), Vec::new());
                if self.pads.is_empty() {
                    *batch = KvCache::recurrent();
                } else if let Some((c, s)) = batch.state()? {
                    cs.push(c);
                    ss.push(s);
                }
                for row in &rows {
                    let (c, s) = row[li].state()?.ok_or_else(|| Error::Engine("an empty recurrent state in a joining row".into()))?;
                    cs.push(c);
                    ss.push(s);
                }
                batch.set_state(join(&cs)?, join(&ss)?, end)?;
                continue;
            }
            let (mut ks, mut vs) = (Vec::new(), Vec::new());
            if let Some((k, v)) = batch.state()? {
                ks.push(pad_front(&k, end - t)?);
                vs.push(pad_front(&v, end - t)?);
            }
            for (row, &l) in rows.iter().zip(&lens) {
                let (rk, rv) = row[li].state()?.ok_or_else(|| Error::Engine("an empty cache in a joining row".into()))?;
                ks.push(pad_front(&rk, end - l)?);
                vs.push(pad_front(&rv, end - l)?);
            }
            batch.set_state(join(&ks)?, join(&vs)?, end)?;
        }
        for p in &mut self.pads {
            *p += end - t;
        }
        self.pads.extend(lens.iter().map(|&l| end - l));
        Ok(())
    }

    /// Keeps the rows `keep` (indices, in the new order) and drops the columns
    /// that pad every kept row.
    pub fn keep(&mut self, keep: &[usize]) -> Result<()> {
        if keep.len() == self.rows() && keep.iter().enumerate().all(|(i, &k)| i == k) {
            return Ok(());
        }
        if keep.is_empty() {
            *self = BatchKv::new(self.layers.len());
            return Ok(());
        }
        let idx = Array::from_slice(&keep.iter().map(|&i| i as i32).collect::<Vec<_>>(), &[keep.len() as i32])?;
        let pads: Vec<usize> = keep.iter().map(|&i| self.pads[i]).collect();
        let drop = *pads.iter().min().unwrap_or(&0);
        let t = self.len();
        for c in &mut self.layers {
            let Some((k, v)) = c.state()? else { continue };
            let (k, v) = (k.take(&idx, 0)?, v.take(&idx, 0)?);
            if c.is_recurrent() {
                let offset = c.offset();
                c.set_state(k, v, offset)?;
                continue;
            }
            let (k, v) = if drop > 0 { (k.slice_axis(2, drop as i32, t as i32)?, v.slice_axis(2, drop as i32, t as i32)?) } else { (k, v) };
            c.set_state(k, v, t - drop)?;
        }
        self.pads = pads.into_iter().map(|p| p - drop).collect();
        Ok(())
    }

    /// Row `i`'s caches alone, without its padding (`[1, H, L, D]` growing
    /// caches, or its recurrent states), copied out and evaluated: a view would
    /// keep the batch's buffers shared and make the next step copy them instead
    /// of writing in place.
    pub fn extract(&self, i: usize) -> Result<Vec<KvCache>> {
        let (t, pad) = (self.len() as i32, self.pads[i] as i32);
        let caches = self
            .layers
            .iter()
            .map(|c| {
                let mut out = if c.is_recurrent() { KvCache::recurrent() } else { KvCache::growing() };
                if let Some((k, v)) = c.state()? {
                    let one = |a: &Array| a.slice_axis(0, i as i32, i as i32 + 1);
                    if c.is_recurrent() {
                        out.set_state(one(&k)?.contiguous()?, one(&v)?.contiguous()?, (t - pad) as usize)?;
                    } else {
                        let row = |a: &Array| one(a)?.slice_axis(2, pad, t)?.contiguous();
                        out.set_state(row(&k)?, row(&v)?, (t - pad) as usize)?;
                    }
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()?;
        mlx::eval(&caches.iter().flat_map(|c| c.arrays()).collect::<Vec<_>>())?;
        Ok(caches)
    }

    /// For a step of `new` tokens per row: each row's position of its first new
    /// token (`[B]` int32) and which of the `T + new` columns hold real tokens
    /// (`[B, T + new]` bool). None when no row is padded (every row's position is `T`).
    pub fn positions(&self, new: usize) -> Result<Option<(Array, Array)>> {
        if self.pads.iter().all(|&p| p == 0) {
            return Ok(None);
        }
        let t = self.len();
        let b = self.rows() as i32;
        let pos: Vec<i32> = self.pads.iter().map(|&p| (t - p) as i32).collect();
        let pads: Vec<i32> = self.pads.iter().map(|&p| p as i32).collect();
        let cols = mlx::arange(0.0, (t + new) as f64, 1.0, crate::mlx::Dtype::I32)?.reshape(&[1, (t + new) as i32])?;
        let valid = cols.greater_equal(&Array::from_slice(&pads, &[b, 1])?)?;
        Ok(Some((Array::from_slice(&pos, &[b])?, valid)))
    }

    /// Every array the batch holds.
    pub fn arrays(&self) -> Vec<&Array> {
        self.layers.iter().flat_map(|c| c.arrays()).collect()
    }
}

/// `a` (`[B, H, T, D]`) with `n` zero columns in front.
fn pad_front(a: &Array, n: usize) -> Result<Array> {
    if n == 0 {
        return Ok(a.clone());
    }
    let s = a.shape();
    let zeros = mlx::zeros(&[s[0], s[1], n as i32, s[3]], a.dtype())?;
    mlx::concatenate(&[&zeros, a], 2)
}
