//! Tensor parallelism over an MLX distributed group (`mlx::distributed`):
//! which part of each checkpoint tensor a rank holds, and the per-rank config
//! the families build from. docs/distributed.md.
//!
//! Attention heads are split (q/k/v by rows, o_proj by columns then one
//! all_sum; with fewer kv heads than ranks each rank keeps the kv head its
//! query heads read), the dense MLP likewise (gate/up rows, down columns,
//! all_sum), the experts of a mixture-of-experts block by columns inside every
//! expert like the dense MLP (`MoeSplit::Columns`) or by whole experts (each
//! rank sums its experts' share, then all_sum), and the vocabulary of the
//! embedding (masked lookup, all_sum) and of the output head (all_gather of the
//! logits). Norms, routers and biases after a sum are whole on every rank.
//! Gemma 4 splits each layer by its own head size and kv heads, and its
//! per-layer input embeddings by vocabulary rows like the embedding.
//! Qwen 3.5's gated delta layers split by key heads with their value heads,
//! its shared expert like a dense MLP; fused checkpoint projections (`qkv_proj`,
//! `gate_up_proj`) are read as several row ranges (`Part::Ranges`).

use super::config::{Gemma4Layout, ModelConfig};
use super::linear_attention::LinearDims;
use crate::mlx::distributed::Group;
use crate::{Error, Result};
use std::sync::Arc;

/// This rank's place in a tensor-parallel group and the unsharded sizes.
#[derive(Clone)]
pub struct Shard {
    pub group: Arc<Group>,
    pub rank: usize,
    pub size: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    /// Experts of each sparse block (0 without).
    pub experts: usize,
    /// How the sparse blocks are split (`moe_split`).
    pub moe: MoeSplit,
    /// transformers' gpt-oss layout: fused experts stored `[E, in, out]`, gate
    /// and up interleaved along out (others: `[E, 2I, H]`, gate rows then up).
    pub experts_in_out: bool,
    pub gemma4: Option<Gemma4Shard>,
    /// The whole model's linear-attention sizes (Qwen 3.5's gated delta layers).
    pub linear: Option<LinearDims>,
    /// The whole MLP width, for fused `gate_up_proj` rows.
    pub intermediate: usize,
}

/// What a Gemma 4 split needs beyond the common sizes.
#[derive(Clone)]
pub struct Gemma4Shard {
    /// The whole model's layout (per-layer kv heads, the per-layer embedding's vocabulary).
    pub layout: Gemma4Layout,
    /// Layers whose dense MLP stays whole on every rank, where a column split
    /// would cut its quantisation groups (26B-A4B's 2112 columns in groups of 64).
    pub whole_mlp: Vec<bool>,
}

impl PartialEq for Shard {
    fn eq(&self, o: &Shard) -> bool {
        (self.rank, self.size) == (o.rank, o.size)
    }
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shard(rank {} of {})", self.rank, self.size)
    }
}

/// How a mixture-of-experts block is split over ranks (`tuning::moe_split`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoeSplit {
    /// Every rank holds all experts, 1/R of each one's width (gate/up rows,
    /// down columns): compute and memory both divide by R whatever the routing.
    Columns,
    /// Each rank holds E/R whole experts and runs every token's k choices, the
    /// others' as its expert 0 with weight 0: memory divides, compute does not.
    Experts,
}

impl MoeSplit {
    pub fn name(self) -> &'static str {
        match self {
            MoeSplit::Columns => "columns",
            MoeSplit::Experts => "experts",
        }
    }

    pub fn parse(v: &str) -> Option<MoeSplit> {
        match v.trim() {
            "columns" => Some(MoeSplit::Columns),
            "experts" => Some(MoeSplit::Experts),
            _ => None,
        }
    }
}

/// What a rank does with one checkpoint tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// The whole tensor (norms, routers, biases added after a sum).
    Whole,
    /// `len` entries of `axis` from `start`, zero-padded to `pad_to` entries.
    Slice { axis: usize, start: u64, len: u64, pad_to: u64 },
    /// Another rank's expert: not read.
    Skip,
    /// This rank's expert, renamed to its local index (the tensor whole).
    Rename(String),
    /// Several `(start, len)` ranges of `axis`, concatenated in order: a fused
    /// projection's parts (`qkv_proj`: q, k, v; Qwen 3.5's `in_proj_qkv`), or
    /// each half of fused experts' gate then up rows (Gemma 4, Qwen 3.5).
    Ranges { axis: usize, ranges: Vec<(u64, u64)> },
}

/// Joins the group `backend` names (`ring`, `nccl`, `mpi`, `jaccl`, `any`):
/// None for a one-process group (nothing to shard).
pub fn join(backend: &str) -> Result<Option<Arc<Group>>> {
    let group = Group::init(backend, true)?;
    Ok(if group.size() > 1 { Some(Arc::new(group)) } else { None })
}

impl Shard {
    /// This rank's shard of `cfg`, refused with the reason when the model does not split.
    pub fn new(group: Arc<Group>, cfg: &ModelConfig) -> Result<Shard> {
        Shard::new_with(group, cfg, MoeSplit::Columns)
    }

    /// `new`, splitting mixture-of-experts blocks as `want` asks; columns that do
    /// not divide (or would cut the down projection's quantisation groups) fall
    /// back to whole experts.
    pub fn new_with(group: Arc<Group>, cfg: &ModelConfig, want: MoeSplit) -> Result<Shard> {
        let (rank, size) = (group.rank(), group.size());
        let refuse = |why: String| Err(Error::InvalidArgument(format!("cannot split {} over {size} ranks: {why}", cfg.model_type)));
        // Each rank keeps whole key heads with the value heads that read them.
        if let Some(d) = cfg.linear_attention.as_ref().map(|l| l.dims) {
            if !d.k_heads.is_multiple_of(size) {
                return refuse(format!("{} linear-attention key heads (linear_num_key_heads) do not divide by {size}", d.k_heads));
            }
        }
        if let Some(n) = cfg.shared_expert_size.filter(|n| !n.is_multiple_of(size)) {
            return refuse(format!("the shared expert width {n} does not divide by {size}"));
        }
        if !cfg.num_heads.is_multiple_of(size) {
            return refuse(format!("{} attention heads do not divide by {size}", cfg.num_heads));
        }
        let (nh, nkv) = (cfg.num_heads, cfg.num_kv_heads);
        // Fewer kv heads than ranks: a rank's query heads then all read one kv head.
        if nkv == 0 || !(nkv.is_multiple_of(size) || size.is_multiple_of(nkv)) {
            return refuse(format!("{nkv} key/value heads neither divide by {size} nor divide {size}"));
        }
        // Gemma 4: global layers have kv heads of their own.
        let mut gemma4 = None;
        if let Some(g) = &cfg.gemma4 {
            let splits = |k: usize| k.is_multiple_of(size) || size.is_multiple_of(k);
            if let Some((i, k)) = g.kv_heads.iter().copied().enumerate().find(|&(_, k)| !splits(k)) {
                return refuse(format!("layer {i}'s {k} key/value heads neither divide by {size} nor divide {size}"));
            }
            let n = cfg.num_layers;
            let whole_mlp = (0..n)
                .map(|i| {
                    let wide = g.double_wide_mlp && g.kv_shared_layers < n && i >= n - g.kv_shared_layers;
                    let cols = cfg.intermediate_size * if wide { 2 } else { 1 } / size;
                    cfg.quantization.for_module(&format!("model.layers.{i}.mlp.down_proj")).is_some_and(|q| !cols.is_multiple_of(q.group_size as usize))
                })
                .collect();
            gemma4 = Some(Gemma4Shard { layout: g.clone(), whole_mlp });
        }
        if !cfg.intermediate_size.is_multiple_of(size) {
            return refuse(format!("the MLP width {} does not divide by {size}", cfg.intermediate_size));
        }
        let experts = cfg.moe.as_ref().map_or(0, |m| m.experts);
        let columns_fail = columns_refusal(cfg, size);
        let moe = match (want, &columns_fail) {
            (MoeSplit::Columns, None) => MoeSplit::Columns,
            _ if experts.is_multiple_of(size) => MoeSplit::Experts,
            (MoeSplit::Columns, Some(why)) => return refuse(format!("{experts} experts do not divide by {size} and {why}")),
            (MoeSplit::Experts, _) => return refuse(format!("{experts} experts do not divide by {size}")),
        };
        let linear = cfg.linear_attention.as_ref().map(|l| l.dims);
        let experts_in_out = cfg.model_type == "gpt_oss";
        Ok(Shard {
            group,
            rank,
            size,
            heads: nh,
            kv_heads: nkv,
            vocab: cfg.vocab_size,
            experts,
            moe,
            experts_in_out,
            gemma4,
            linear,
            intermediate: cfg.intermediate_size,
        })
    }

    /// The config this rank builds: its heads, MLP columns and experts.
    pub fn apply(&self, cfg: &mut ModelConfig) {
        cfg.num_heads = self.heads / self.size;
        cfg.num_kv_heads = (self.kv_heads / self.size).max(1);
        cfg.intermediate_size /= self.size;
        if let Some(m) = cfg.moe.as_mut() {
            match self.moe {
                MoeSplit::Columns => m.intermediate_size /= self.size,
                MoeSplit::Experts => m.experts = self.experts / self.size,
            }
        }
        if let Some(g) = cfg.gemma4.as_mut() {
            for k in &mut g.kv_heads {
                *k = (*k / self.size).max(1);
            }
        }
        if let Some(l) = cfg.linear_attention.as_mut() {
            l.dims.k_heads /= self.size;
            l.dims.v_heads /= self.size;
        }
        if let Some(n) = cfg.shared_expert_size.as_mut() {
            *n /= self.size;
        }
        cfg.build.shard = Some(self.clone());
    }

    /// Vocabulary rows per rank (the last rank's padded with zeros).
    pub fn vocab_rows(&self) -> usize {
        self.vocab.div_ceil(self.size)
    }

    /// The first vocabulary row of this rank.
    pub fn vocab_start(&self) -> usize {
        self.rank * self.vocab_rows()
    }

    /// The first expert of this rank.
    pub fn expert_start(&self) -> usize {
        self.rank * self.experts / self.size
    }

    /// This rank's part of a `vocab`-row table (start, real rows, rows padded): the
    /// embedding's vocabulary, or Gemma 4's per-layer one, which may differ.
    pub fn vocab_split(&self, vocab: usize) -> (usize, usize, usize) {
        let per = vocab.div_ceil(self.size);
        let start = (self.rank * per).min(vocab);
        (start, (start + per).min(vocab) - start, per)
    }

    /// The first kv head this rank holds of a layer with `kv_heads`.
    fn kv_start(&self, kv_heads: usize) -> usize {
        if kv_heads.is_multiple_of(self.size) {
            self.rank * kv_heads / self.size
        } else {
            // Fewer kv heads than ranks: the kv head of this rank's first query head.
            (self.rank * self.heads / self.size) / (self.heads / kv_heads)
        }
    }

    /// Gemma 4's own tensors: the per-layer embedding table by vocabulary rows,
    /// nothing of a KV-sharing layer's unused k/v projections, and the dense
    /// MLPs kept whole (`Gemma4Shard::whole_mlp`) whole.
    fn gemma4_part(&self, name: &str) -> Option<Part> {
        let g = self.gemma4.as_ref()?;
        if name.starts_with("model.embed_tokens_per_layer.") {
            let (start, len, per) = self.vocab_split(g.layout.per_layer_vocab);
            return Some(Part::Slice { axis: 0, start: start as u64, len: len as u64, pad_to: per as u64 });
        }
        let layer = layer_of(name)?;
        if g.whole_mlp.get(layer) == Some(&true) && name.contains(".mlp.") {
            return Some(Part::Whole);
        }
        let sharing = layer >= g.layout.kv_heads.len().saturating_sub(g.layout.kv_shared_layers);
        (sharing && (name.contains(".self_attn.k_proj.") || name.contains(".self_attn.v_proj."))).then_some(Part::Skip)
    }

    /// KV heads of the layer `name` belongs to (Gemma 4's global layers have their own).
    fn kv_heads_of(&self, name: &str) -> usize {
        let layer = |g: &Gemma4Shard| layer_of(name).and_then(|i| g.layout.kv_heads.get(i).copied());
        self.gemma4.as_ref().and_then(layer).unwrap_or(self.kv_heads)
    }

    /// What this rank reads of the tensor `name` (normalised checkpoint name) of `shape`.
    pub fn part(&self, name: &str, shape: &[u64]) -> Result<Part> {
        let r = self.size as u64;
        let rows = |start: u64, len: u64| Part::Slice { axis: 0, start, len, pad_to: len };
        let dim0 = shape.first().copied().unwrap_or(0);
        let uneven = |axis: usize, n: u64| {
            let what = if name.ends_with(".scales") || name.ends_with(".biases") || (name.ends_with(".weight") && shape.len() >= 2 && axis > 0) {
                " (a split there would cut a quantisation group or packed word)"
            } else {
                ""
            };
            Error::InvalidArgument(format!("cannot split tensor '{name}' of shape {shape:?} over {} ranks: axis {axis} has {n} entries{what}", self.size))
        };
        let even_rows = || -> Result<Part> {
            if !dim0.is_multiple_of(r) {
                return Err(uneven(0, dim0));
            }
            Ok(rows(self.rank as u64 * dim0 / r, dim0 / r))
        };
        let last_cols = || -> Result<Part> {
            let axis = shape.len().saturating_sub(1);
            let n = shape.last().copied().unwrap_or(0);
            if shape.len() < 2 {
                return Ok(Part::Whole);
            }
            if !n.is_multiple_of(r) {
                return Err(uneven(axis, n));
            }
            Ok(Part::Slice { axis, start: self.rank as u64 * n / r, len: n / r, pad_to: n / r })
        };
        let is_bias = name.ends_with(".bias");
        if let Some(part) = self.fused_part(name, dim0)? {
            return Ok(part);
        }
        if let Some(p) = self.gemma4_part(name) {
            return Ok(p);
        }
        if name.starts_with("model.embed_tokens.") || name.starts_with("lm_head.") {
            let per = self.vocab_rows() as u64;
            let start = (self.vocab_start() as u64).min(dim0);
            return Ok(Part::Slice { axis: 0, start, len: (start + per).min(dim0) - start, pad_to: per });
        }
        if self.moe == MoeSplit::Columns && (name.contains(".experts.") || name.contains(".switch_mlp.")) {
            return self.expert_columns(name, shape);
        }
        // Per-expert tensors (`...experts.{e}.name.suffix`): this rank's experts, renumbered.
        if let Some(at) = name.find(".experts.") {
            let rest = &name[at + ".experts.".len()..];
            if let Some((num, tail)) = rest.split_once('.') {
                if let Ok(e) = num.parse::<usize>() {
                    let (first, per) = (self.expert_start(), self.experts / self.size);
                    if e < first || e >= first + per {
                        return Ok(Part::Skip);
                    }
                    return Ok(Part::Rename(format!("{}.experts.{}.{tail}", &name[..at], e - first)));
                }
            }
        }
        // Stacked experts `[E, ...]` (mlx-lm's switch_mlp): this rank's experts.
        if name.contains(".switch_mlp.") || name.contains(".experts.") {
            return even_rows();
        }
        let proj = |p: &str| name.contains(p);
        // gpt-oss's per-head attention sinks go with their heads.
        if proj(".self_attn.q_proj.") || proj(".mlp.gate_proj.") || proj(".mlp.up_proj.") || name.ends_with(".self_attn.sinks") {
            return even_rows();
        }
        if proj(".self_attn.k_proj.") || proj(".self_attn.v_proj.") {
            let nkv = self.kv_heads_of(name);
            if !dim0.is_multiple_of(nkv as u64) {
                return Err(uneven(0, dim0));
            }
            let per_head = dim0 / nkv as u64;
            let heads = (nkv / self.size).max(1) as u64;
            return Ok(rows(self.kv_start(nkv) as u64 * per_head, heads * per_head));
        }
        if (proj(".self_attn.o_proj.") || proj(".mlp.down_proj.")) && !is_bias {
            return last_cols();
        }
        // Qwen 3.5 MoE's shared expert: a dense MLP (its σ gate is whole).
        if proj(".mlp.shared_expert.gate_proj.") || proj(".mlp.shared_expert.up_proj.") {
            return even_rows();
        }
        if proj(".mlp.shared_expert.down_proj.") && !is_bias {
            return last_cols();
        }
        // Gated delta layers: z, b, a and the decay are per value head; the norm
        // (per head dimension) is whole; out_proj reads this rank's heads.
        if proj(".linear_attn.in_proj_z.") || proj(".linear_attn.in_proj_b.") || proj(".linear_attn.in_proj_a.") {
            return even_rows();
        }
        if name.ends_with(".linear_attn.A_log") || name.ends_with(".linear_attn.dt_bias") {
            return even_rows();
        }
        if proj(".linear_attn.out_proj.") && !is_bias {
            return last_cols();
        }
        Ok(Part::Whole)
    }

    /// An expert tensor split by columns (`MoeSplit::Columns`): 1/R of the
    /// expert width of each expert, stacked (`[E, ...]`) or not (`experts.{e}.`).
    fn expert_columns(&self, name: &str, shape: &[u64]) -> Result<Part> {
        let (r, rank) = (self.size as u64, self.rank as u64);
        let after = |pat: &str| name.rsplit_once(pat).map(|(_, t)| t);
        let tail = after(".switch_mlp.").or_else(|| after(".experts.")).unwrap_or(name);
        // `experts.{e}.` names one expert; without an index the experts are stacked.
        let (tail, stacked) = match tail.split_once('.') {
            Some((n, t)) if n.parse::<u64>().is_ok() => (t, false),
            _ => (tail, true),
        };
        let tail = tail.strip_prefix("switch_glu.").unwrap_or(tail);
        let e0 = usize::from(stacked);
        let slice = |axis: usize| -> Result<Part> {
            let n = shape.get(axis).copied().unwrap_or(0);
            if n == 0 || !n.is_multiple_of(r) {
                return Err(Error::InvalidArgument(format!(
                    "cannot split expert tensor '{name}' of shape {shape:?} by columns over {} ranks: axis {axis} has {n} entries",
                    self.size
                )));
            }
            Ok(Part::Slice { axis, start: rank * n / r, len: n / r, pad_to: n / r })
        };
        let (role, _) = tail.split_once('.').unwrap_or((tail, ""));
        match role {
            // Rows of the expert width (quantisation groups run along the input).
            "w1" | "w3" | "gate_proj" | "up_proj" => slice(e0),
            // gpt-oss: gate and up interleaved row by row (or, dense, column by column):
            // a contiguous run holds this rank's pairs.
            "gate_up_proj_blocks" | "gate_up_proj_scales" | "gate_up_proj_bias" => slice(1),
            "gate_up_proj" if self.experts_in_out => slice(2),
            "gate_up_proj" => {
                // Gemma 4, Qwen 3.5: [E, 2I, H], gate rows then up rows.
                let n = shape.get(1).copied().unwrap_or(0);
                if !n.is_multiple_of(2 * r) {
                    return Err(Error::InvalidArgument(format!(
                        "cannot split '{name}' of shape {shape:?}: {n} rows are not gate and up halves over {} ranks",
                        self.size
                    )));
                }
                let per = n / 2 / r;
                Ok(Part::Ranges { axis: 1, ranges: vec![(rank * per, per), (n / 2 + rank * per, per)] })
            }
            // The sum over the expert width: its columns. Biases after the sum are whole
            // (added on one rank: `MoeBlock`).
            "down_proj_bias" => Ok(Part::Whole),
            "w2" | "down_proj" if name.ends_with(".bias") => Ok(Part::Whole),
            // transformers' gpt-oss: [E, I, H].
            "down_proj" if tail == "down_proj" && self.experts_in_out => slice(1),
            // MXFP4 blocks [E, H, I/32, 16]: whole groups of 32.
            "down_proj_blocks" => slice(2),
            "w2" | "down_proj" | "down_proj_scales" => slice(shape.len().saturating_sub(1)),
            _ => Ok(Part::Whole),
        }
    }

    /// The row ranges of a tensor holding several projections' rows in a row:
    /// Qwen 3.5's `in_proj_qkv` and conv taps (`[q | k | v]` by key and value
    /// heads), Phi-3's `qkv_proj` (`[q | k | v]`) and `gate_up_proj`.
    fn fused_part(&self, name: &str, dim0: u64) -> Result<Option<Part>> {
        let (rank, r) = (self.rank as u64, self.size as u64);
        let mismatch = |expected: u64| Error::InvalidArgument(format!("cannot split tensor '{name}': {dim0} rows, expected {expected}"));
        if name.contains(".linear_attn.in_proj_qkv.") || name.ends_with(".linear_attn.conv1d.weight") {
            let d = self.linear.ok_or_else(|| Error::InvalidArgument(format!("cannot split tensor '{name}': the config has no linear-attention sizes")))?;
            let (kd, vd) = ((d.k_heads * d.k_dim) as u64, (d.v_heads * d.v_dim) as u64);
            if dim0 != 2 * kd + vd {
                return Err(mismatch(2 * kd + vd));
            }
            let (kp, vp) = (kd / r, vd / r);
            return Ok(Some(Part::Ranges { axis: 0, ranges: vec![(rank * kp, kp), (kd + rank * kp, kp), (2 * kd + rank * vp, vp)] }));
        }
        if name.contains(".self_attn.qkv_proj.") {
            let (nh, nkv) = (self.heads as u64, self.kv_heads as u64);
            if !dim0.is_multiple_of(nh + 2 * nkv) {
                return Err(Error::InvalidArgument(format!("cannot split tensor '{name}': {dim0} rows are not {nh} query and 2 × {nkv} key/value heads")));
            }
            let hd = dim0 / (nh + 2 * nkv);
            let (q, kv) = (nh / r * hd, (self.kv_heads / self.size).max(1) as u64 * hd);
            let kv_at = self.kv_start(self.kv_heads) as u64 * hd;
            return Ok(Some(Part::Ranges { axis: 0, ranges: vec![(rank * q, q), (nh * hd + kv_at, kv), ((nh + nkv) * hd + kv_at, kv)] }));
        }
        if name.contains(".mlp.gate_up_proj.") {
            let i = self.intermediate as u64;
            if dim0 != 2 * i {
                return Err(mismatch(2 * i));
            }
            let per = i / r;
            return Ok(Some(Part::Ranges { axis: 0, ranges: vec![(rank * per, per), (i + rank * per, per)] }));
        }
        Ok(None)
    }
}

/// Why the experts of `cfg` cannot split by columns over `size` ranks, if so:
/// the expert width must divide, and quantised, each rank's down_proj columns
/// must be whole quantisation groups.
fn columns_refusal(cfg: &ModelConfig, size: usize) -> Option<String> {
    let m = cfg.moe.as_ref()?;
    let i = m.intermediate_size;
    if !i.is_multiple_of(size) {
        return Some(format!("the expert width {i} does not divide by {size}"));
    }
    let q = &cfg.quantization;
    let downs = q.overrides.iter().filter(|(k, _)| k.ends_with("down_proj") && (k.contains("expert") || k.contains("switch"))).filter_map(|(_, q)| q.as_ref());
    let cols = i / size;
    let cut = q.default.iter().chain(downs).find(|q| !cols.is_multiple_of(q.group_size as usize))?;
    Some(format!("the expert width {i} over {size} ranks ({cols} columns each) would cut its quantisation groups of {}", cut.group_size))
}

/// The layer index of `model.layers.{i}.…`.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?.split_once('.')?.0.parse().ok()
}
