//! Building blocks shared by every architecture: linear and embedding layers
//! (dense or MLX-quantised), RMSNorm, RoPE, attention with its KV cache and
//! masks, and the two MLP kinds.

use super::config::{AttnTemperature, ModelConfig, MoeAct, Quant, QuantMode, Rope as RopeConfig, RopeScaling};
use super::lora::Lora;
use super::strategy::{dense_product, quantized_product, Products};
use super::weights::Weights;
use crate::cache::{Attend, KvCache};
use crate::mlx::fast::{self, AttentionMask, Rope};
use crate::mlx::{self, Array};
use crate::{Error, Result};

/// `y = x Wᵀ (+ b)`, with W dense or MLX-affine-quantised, plus an optional
/// LoRA adapter: `y + scale · ((dropout(x) A) B)` (A `[in, r]`, B `[r, out]`,
/// mlx-lm's `lora_a`/`lora_b` layout). The base stays frozen (and quantised).
pub struct Linear {
    pub base: LinearBase,
    pub lora: Option<Lora>,
    /// How products run on this device (`strategy`).
    pub products: Products,
    /// The tensor-parallel step after the product (`shard`), before the bias.
    pub collective: Option<Collective>,
}

/// How a sharded projection's partial outputs become the whole one.
#[derive(Clone)]
pub enum Collective {
    /// Row-split (o_proj, down_proj): each rank's product is a partial sum.
    Sum(std::sync::Arc<mlx::distributed::Group>),
    /// Vocabulary-split output head: each rank's logits are its `rows`-wide
    /// slice of `vocab`, gathered in rank order.
    GatherVocab(std::sync::Arc<mlx::distributed::Group>, i32),
}

impl Collective {
    /// The collective of the projection at `path` under `cfg`'s shard, if any.
    fn of(cfg: &ModelConfig, path: &str) -> Option<Collective> {
        let s = cfg.build.shard.as_ref()?;
        if path.ends_with("self_attn.o_proj") || path.ends_with("mlp.down_proj") || path.ends_with("linear_attn.out_proj") {
            Some(Collective::Sum(s.group.clone()))
        } else if path == "lm_head" {
            Some(Collective::GatherVocab(s.group.clone(), s.vocab as i32))
        } else {
            None
        }
    }

    fn apply(&self, y: &Array) -> Result<Array> {
        match self {
            Collective::Sum(g) => g.all_sum(y),
            Collective::GatherVocab(g, vocab) => gather_vocab(g, y, *vocab),
        }
    }
}

/// Every rank's `[.., rows]` logits side by side as `[.., vocab]` (the last
/// rank's zero padding dropped): all_gather joins axis 0, so the vocabulary
/// axis goes first and back.
fn gather_vocab(g: &mlx::distributed::Group, y: &Array, vocab: i32) -> Result<Array> {
    let n = y.ndim() as i32;
    let front: Vec<i32> = std::iter::once(n - 1).chain(0..n - 1).collect();
    let back: Vec<i32> = (1..n).chain(std::iter::once(0)).collect();
    let all = g.all_gather(&y.transpose(&front)?.contiguous()?)?;
    all.slice_axis(0, 0, vocab)?.transpose(&back)
}

pub enum LinearBase {
    Dense { wt: Array, bias: Option<Array> },
    Quantized { w: Array, scales: Array, biases: Array, q: Quant, bias: Option<Array> },
}

/// Takes `path.weight` (and `path.scales`/`path.biases` when quantised).
type LoadedMatrix = (Array, Option<(Array, Array, Quant)>);

fn load_matrix(w: &mut Weights, path: &str, rows: usize, cols: usize, quant: Option<Quant>) -> Result<LoadedMatrix> {
    let name = format!("{path}.weight");
    if w.contains(&format!("{path}.scales")) {
        let q = quant.ok_or_else(|| Error::Model(format!("{}: '{path}' is quantised but config.json has no 'quantization' for it", w.source().display())))?;
        if q.mode != QuantMode::Affine {
            return Err(Error::Model(format!("'{path}': {:?} quantisation is read for mixture-of-experts weights only", q.mode)));
        }
        if !cols.is_multiple_of(q.group_size as usize) {
            return Err(Error::Model(format!("'{path}': {cols} columns are not a multiple of group size {}", q.group_size)));
        }
        let packed = w.take_shaped(&name, &[rows, cols * q.bits as usize / 32])?;
        let scales = w.take_shaped(&format!("{path}.scales"), &[rows, cols / q.group_size as usize])?;
        let biases = w.take_shaped(&format!("{path}.biases"), &[rows, cols / q.group_size as usize])?;
        return Ok((packed, Some((scales, biases, q))));
    }
    Ok((w.take_shaped(&name, &[rows, cols])?, None))
}

impl Linear {
    pub fn load(w: &mut Weights, cfg: &ModelConfig, path: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        let collective = Collective::of(cfg, path);
        // A vocabulary-split head holds its rank's rows (`shard`).
        let rows = match (&collective, &cfg.build.shard) {
            (Some(Collective::GatherVocab(..)), Some(s)) => s.vocab_rows(),
            _ => out_dim,
        };
        let (weight, quant) = load_matrix(w, path, rows, in_dim, cfg.quantization.for_module(path))?;
        let bias = if bias { Some(w.take_shaped(&format!("{path}.bias"), &[out_dim])?) } else { None };
        let base = match quant {
            Some((scales, biases, q)) => LinearBase::Quantized { w: weight, scales, biases, q, bias },
            None => LinearBase::Dense { wt: weight.transpose(&[])?, bias },
        };
        Ok(Linear { base, lora: None, products: cfg.build.products, collective })
    }

    /// The frozen base projection alone.
    pub fn forward_base(&self, x: &Array) -> Result<Array> {
        let (y, bias) = match &self.base {
            // wt is the transposed view of the [out, in] checkpoint matrix.
            LinearBase::Dense { wt, bias } if wt.dtype() == x.dtype() => (x.matmul(wt)?, bias),
            LinearBase::Dense { wt, bias } => (dense_product(x, &wt.transpose(&[])?)?, bias),
            LinearBase::Quantized { w, scales, biases, q, bias } => (quantized_product(x, w, scales, biases, q, &self.products)?, bias),
        };
        let y = match &self.collective {
            Some(c) => c.apply(&y)?,
            None => y,
        };
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        let y = self.forward_base(x)?;
        match &self.lora {
            Some(l) => y.add(&l.forward(x)?),
            None => Ok(y),
        }
    }

    /// (input, output) features.
    pub fn dims(&self) -> (i32, i32) {
        match &self.base {
            LinearBase::Dense { wt, .. } => (wt.dim(0), wt.dim(1)),
            LinearBase::Quantized { w, q, .. } => (w.dim(1) * 32 / q.bits, w.dim(0)),
        }
    }

    /// The base weight as a dense `[out, in]` matrix (dequantised when quantised).
    pub fn dense_weight(&self) -> Result<Array> {
        match &self.base {
            LinearBase::Dense { wt, .. } => wt.transpose(&[]),
            LinearBase::Quantized { w, scales, biases, q, .. } => mlx::dequantize(w, scales, biases, q.group_size, q.bits, None),
        }
    }

    /// One projection computing `parts` side by side (outputs concatenated in
    /// order): the same arithmetic per output, one matmul instead of several.
    /// All parts must be dense, or quantised alike; adapters cannot be fused.
    pub fn fuse(parts: Vec<Linear>) -> Result<Linear> {
        if parts.iter().any(|p| p.lora.is_some()) {
            return Err(Error::InvalidArgument("a projection with a LoRA adapter cannot be fused".into()));
        }
        if parts.iter().any(|p| p.collective.is_some()) {
            return Err(Error::InvalidArgument("a row-split or vocabulary-split projection cannot be fused".into()));
        }
        let has_bias = |b: &LinearBase| match b {
            LinearBase::Dense { bias, .. } | LinearBase::Quantized { bias, .. } => bias.is_some(),
        };
        let with_bias = parts.iter().filter(|p| has_bias(&p.base)).count();
        if with_bias != 0 && with_bias != parts.len() {
            return Err(Error::InvalidArgument("cannot fuse projections where only some have a bias".into()));
        }
        let biases: Vec<&Array> = parts
            .iter()
            .filter_map(|p| match &p.base {
                LinearBase::Dense { bias, .. } | LinearBase::Quantized { bias, .. } => bias.as_ref(),
            })
            .collect();
        // The parts are read in first, like an unfused model's weights (see `join_at_load`).
        let inputs: Vec<&Array> = parts.iter().flat_map(|p| p.arrays()).collect();
        mlx::eval(&inputs)?;
        let fused = super::strategy::join_at_load(|| Linear::join(&parts, &biases))?;
        // Materialise now, so the separate matrices are freed layer by layer at load.
        mlx::eval(&fused.arrays())?;
        Ok(fused)
    }

    /// The concatenation behind `fuse` (checked there: no adapters, biases on all or none).
    fn join(parts: &[Linear], biases: &[&Array]) -> Result<Linear> {
        let bias = if biases.is_empty() { None } else { Some(mlx::concatenate(biases, 0)?) };
        let base = match &parts[0].base {
            LinearBase::Dense { .. } => {
                let mut wts = Vec::new();
                for p in parts {
                    match &p.base {
                        LinearBase::Dense { wt, .. } => wts.push(wt),
                        _ => return Err(Error::InvalidArgument("cannot fuse dense with quantised projections".into())),
                    }
                }
                // Stacked as [out, in] and viewed transposed, the layout of an unfused
                // projection: the row-major [in, out] concatenation gave wrong float32
                // products on MLX 0.32.2's CUDA backend with TF32 off (H200).
                let rows = wts.iter().map(|w| w.transpose(&[])).collect::<Result<Vec<_>>>()?;
                LinearBase::Dense { wt: mlx::concatenate(&rows.iter().collect::<Vec<_>>(), 0)?.transpose(&[])?, bias }
            }
            LinearBase::Quantized { q: q0, .. } => {
                let (mut ws, mut ss, mut bs) = (Vec::new(), Vec::new(), Vec::new());
                for p in parts {
                    match &p.base {
                        LinearBase::Quantized { w, scales, biases, q, .. } if q == q0 => {
                            ws.push(w);
                            ss.push(scales);
                            bs.push(biases);
                        }
                        _ => return Err(Error::InvalidArgument("cannot fuse projections quantised differently".into())),
                    }
                }
                LinearBase::Quantized { w: mlx::concatenate(&ws, 0)?, scales: mlx::concatenate(&ss, 0)?, biases: mlx::concatenate(&bs, 0)?, q: *q0, bias }
            }
        };
        Ok(Linear { base, lora: None, products: parts[0].products, collective: None })
    }

    pub fn arrays(&self) -> Vec<&Array> {
        match &self.base {
            LinearBase::Dense { wt, bias } => std::iter::once(wt).chain(bias.iter()).collect(),
            LinearBase::Quantized { w, scales, biases, bias, .. } => [w, scales, biases].into_iter().chain(bias.iter()).collect(),
        }
    }
}

/// Projections that read the same input (q/k/v, gate/up): kept separate
/// (named, trainable, adapter-ready) or fused into one matmul whose output is
/// split (fewer kernels and graph nodes per decode step).
pub enum Fanout {
    Separate(Vec<(&'static str, Linear)>),
    Fused { linear: Linear, names: Vec<&'static str>, widths: Vec<i32> },
}

impl Fanout {
    /// Loads `path.{name}` for each `(name, out_dim)`, fused when `fuse`.
    pub fn load(w: &mut Weights, cfg: &ModelConfig, path: &str, parts: &[(&'static str, usize)], in_dim: usize, bias: bool, fuse: bool) -> Result<Fanout> {
        let linears =
            parts.iter().map(|&(name, out)| Ok((name, Linear::load(w, cfg, &format!("{path}.{name}"), in_dim, out, bias)?))).collect::<Result<Vec<_>>>()?;
        let quant_alike = {
            let q = |l: &Linear| match &l.base {
                LinearBase::Dense { .. } => None,
                LinearBase::Quantized { q, .. } => Some(*q),
            };
            linears.iter().all(|(_, l)| q(l) == q(&linears[0].1))
        };
        if !fuse || !quant_alike {
            return Ok(Fanout::Separate(linears));
        }
        let names = linears.iter().map(|(n, _)| *n).collect();
        let widths = parts.iter().map(|&(_, out)| out as i32).collect();
        Ok(Fanout::Fused { linear: Linear::fuse(linears.into_iter().map(|(_, l)| l).collect())?, names, widths })
    }

    /// Each projection of `x`, in load order.
    pub fn forward(&self, x: &Array) -> Result<Vec<Array>> {
        match self {
            Fanout::Separate(ls) => ls.iter().map(|(_, l)| l.forward(x)).collect(),
            Fanout::Fused { linear, widths, .. } => {
                let y = linear.forward(x)?;
                let mut at = 0;
                let mut cuts = Vec::new();
                for w in &widths[..widths.len() - 1] {
                    at += w;
                    cuts.push(at);
                }
                y.split_at(&cuts, -1)
            }
        }
    }

    /// The projections by name; none when fused (fused models are for inference only).
    pub fn linears(&self) -> Vec<(&'static str, &Linear)> {
        match self {
            Fanout::Separate(ls) => ls.iter().map(|(n, l)| (*n, l)).collect(),
            Fanout::Fused { .. } => Vec::new(),
        }
    }

    pub fn linears_mut(&mut self) -> Vec<(&'static str, &mut Linear)> {
        match self {
            Fanout::Separate(ls) => ls.iter_mut().map(|(n, l)| (*n, l)).collect(),
            Fanout::Fused { .. } => Vec::new(),
        }
    }

    pub fn arrays(&self) -> Vec<&Array> {
        match self {
            Fanout::Separate(ls) => ls.iter().flat_map(|(_, l)| l.arrays()).collect(),
            Fanout::Fused { linear, .. } => linear.arrays(),
        }
    }
}

/// Token embedding table; also the output projection when embeddings are tied.
/// `dtype` is the compute dtype: rows are cast to it (the table may be kept
/// narrower, see `policy`).
pub struct Embedding {
    table: Table,
    /// The vocabulary split across ranks (`shard`): this rank holds rows
    /// `start..start + rows` (zero-padded to the same count on every rank).
    split: Option<VocabSplit>,
}

enum Table {
    Dense { table: Array, dtype: mlx::Dtype },
    Quantized { w: Array, scales: Array, biases: Array, q: Quant, dtype: mlx::Dtype, products: Products },
}

struct VocabSplit {
    group: std::sync::Arc<mlx::distributed::Group>,
    start: i32,
    /// Real (unpadded) rows of this rank.
    rows: i32,
    vocab: i32,
}

impl Embedding {
    pub fn load(w: &mut Weights, cfg: &ModelConfig, path: &str) -> Result<Embedding> {
        Embedding::load_vocab(w, cfg, path, cfg.vocab_size, cfg.hidden_size)
    }

    /// A table of `vocab` rows × `cols`, split over ranks (`shard`) by
    /// vocabulary rows: this rank's (Gemma 4's per-layer table has its own vocabulary).
    pub fn load_vocab(w: &mut Weights, cfg: &ModelConfig, path: &str, vocab: usize, cols: usize) -> Result<Embedding> {
        let Some(s) = &cfg.build.shard else { return Embedding::load_sized(w, cfg, path, vocab, cols) };
        let (start, rows, per) = s.vocab_split(vocab);
        let split = VocabSplit { group: s.group.clone(), start: start as i32, rows: rows as i32, vocab: vocab as i32 };
        let mut e = Embedding::load_sized(w, cfg, path, per, cols)?;
        e.split = Some(split);
        Ok(e)
    }

    /// A whole table of `rows` × `cols`.
    pub fn load_sized(w: &mut Weights, cfg: &ModelConfig, path: &str, rows: usize, cols: usize) -> Result<Embedding> {
        let (weight, quant) = load_matrix(w, path, rows, cols, cfg.quantization.for_module(path))?;
        let dtype = cfg.dtype;
        let table = match quant {
            Some((scales, biases, q)) => Table::Quantized { w: weight, scales, biases, q, dtype, products: cfg.build.products },
            None => Table::Dense { table: weight, dtype },
        };
        Ok(Embedding { table, split: None })
    }

    /// Rows of `tokens` (`[B, L]`) → `[B, L, H]` in the compute dtype; quantised rows are dequantised.
    /// Split: each rank looks up the tokens it holds (zeros for the others) and the ranks sum.
    pub fn forward(&self, tokens: &Array) -> Result<Array> {
        let Some(s) = &self.split else { return self.table.rows(tokens) };
        let local = tokens.astype(mlx::Dtype::I32)?.subtract(&Array::scalar(s.start))?;
        let mine = local.greater_equal(&Array::scalar(0i32))?.logical_and(&local.less(&Array::scalar(s.rows))?)?;
        let idx = mlx::where_(&mine, &local, &Array::scalar(0i32))?;
        let rows = self.table.rows(&idx)?;
        let rows = rows.multiply(&mine.expand_dims(&[-1])?.astype(rows.dtype())?)?;
        s.group.all_sum(&rows)
    }

    /// `x Eᵀ`: logits through the tied table (widened in pieces where it is
    /// kept narrower than x, or quantised with several rows on the CPU);
    /// split, each rank's slice of the vocabulary gathered.
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        let y = self.table.as_linear(x)?;
        match &self.split {
            Some(s) => gather_vocab(&s.group, &y, s.vocab),
            None => Ok(y),
        }
    }

    pub fn arrays(&self) -> Vec<&Array> {
        self.table.arrays()
    }
}

impl Table {
    fn rows(&self, tokens: &Array) -> Result<Array> {
        match self {
            Table::Dense { table, dtype } => {
                let rows = table.take(tokens, 0)?;
                if rows.dtype() == *dtype {
                    Ok(rows)
                } else {
                    rows.astype(*dtype)
                }
            }
            Table::Quantized { w, scales, biases, q, dtype, .. } => {
                let (rw, rs, rb) = (w.take(tokens, 0)?, scales.take(tokens, 0)?, biases.take(tokens, 0)?);
                mlx::dequantize(&rw, &rs, &rb, q.group_size, q.bits, Some(*dtype))
            }
        }
    }

    fn as_linear(&self, x: &Array) -> Result<Array> {
        match self {
            Table::Dense { table, .. } => dense_product(x, table),
            Table::Quantized { w, scales, biases, q, products, .. } => quantized_product(x, w, scales, biases, q, products),
        }
    }

    fn arrays(&self) -> Vec<&Array> {
        match self {
            Table::Dense { table, .. } => vec![table],
            Table::Quantized { w, scales, biases, .. } => vec![w, scales, biases],
        }
    }
}

/// RMSNorm; Gemma's `(1 + w)` scaling is folded into the weight at load.
pub struct RmsNorm {
    weight: Array,
    eps: f32,
}

impl RmsNorm {
    pub fn load(w: &mut Weights, path: &str, dim: usize, eps: f32, plus_one: bool) -> Result<RmsNorm> {
        let weight = w.take_shaped(&format!("{path}.weight"), &[dim])?;
        let weight = if plus_one { weight.add_scalar(1.0)? } else { weight };
        Ok(RmsNorm { weight, eps })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        fast::rms_norm(x, Some(&self.weight), self.eps)
    }

    pub fn weight(&self) -> &Array {
        &self.weight
    }
}

/// RoPE of one layer kind: a base, or precomputed frequencies (Llama 3).
pub struct RotaryEmbedding {
    dims: i32,
    base: Option<f32>,
    scale: f32,
    freqs: Option<Array>,
    /// YaRN's attention factor on q and k (1 otherwise).
    mscale: f32,
}

impl RotaryEmbedding {
    pub fn new(cfg: &RopeConfig, dims: usize) -> Result<RotaryEmbedding> {
        let d = dims as i32;
        Ok(match cfg.scaling {
            RopeScaling::None => RotaryEmbedding { dims: d, base: Some(cfg.theta), scale: 1.0, freqs: None, mscale: 1.0 },
            RopeScaling::Linear { factor } => RotaryEmbedding { dims: d, base: Some(cfg.theta), scale: 1.0 / factor, freqs: None, mscale: 1.0 },
            RopeScaling::Yarn { factor, original_max_position, beta_fast, beta_slow, attention_factor, truncate } => {
                // The correction range: the dimensions that turn beta_fast and beta_slow
                // times over the original context (transformers' find_correction_range).
                let dim = dims as f32;
                let correction = |rotations: f32| dim * (original_max_position / (rotations * 2.0 * std::f32::consts::PI)).ln() / (2.0 * cfg.theta.ln());
                let (mut low, mut high) = (correction(beta_fast), correction(beta_slow));
                if truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
                if low == high {
                    high += 0.001;
                }
                let periods: Vec<f32> = (0..dims / 2)
                    .map(|i| {
                        let p = cfg.theta.powf(2.0 * i as f32 / dim);
                        // Weight of the original (extrapolated) frequency.
                        let extrapolate = 1.0 - ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                        let inv = (1.0 / (factor * p)) * (1.0 - extrapolate) + (1.0 / p) * extrapolate;
                        1.0 / inv
                    })
                    .collect();
                let freqs = Array::from_slice(&periods, &[periods.len() as i32])?;
                RotaryEmbedding { dims: d, base: None, scale: 1.0, freqs: Some(freqs), mscale: attention_factor }
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
                // Periods (1/inv_freq) per rotated pair, stretched by wavelength band.
                let low_wavelen = original_max_position / low_freq_factor;
                let high_wavelen = original_max_position / high_freq_factor;
                let periods: Vec<f32> = (0..dims / 2)
                    .map(|i| {
                        let p = cfg.theta.powf(2.0 * i as f32 / dims as f32);
                        let wavelen = 2.0 * std::f32::consts::PI * p;
                        if wavelen > low_wavelen {
                            p * factor
                        } else if wavelen < high_wavelen {
                            p
                        } else {
                            let smooth = (original_max_position / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            p / ((1.0 - smooth) / factor + smooth)
                        }
                    })
                    .collect();
                let freqs = Array::from_slice(&periods, &[periods.len() as i32])?;
                RotaryEmbedding { dims: d, base: None, scale: 1.0, freqs: Some(freqs), mscale: 1.0 }
            }
            RopeScaling::Proportional { factor, fraction } => {
                // An infinite period leaves its pair unrotated (cos 1, sin 0).
                let rotated = (fraction * dims as f32 / 2.0).floor() as usize;
                let periods: Vec<f32> =
                    (0..dims / 2).map(|i| if i < rotated { factor * cfg.theta.powf(2.0 * i as f32 / dims as f32) } else { f32::INFINITY }).collect();
                let freqs = Array::from_slice(&periods, &[periods.len() as i32])?;
                RotaryEmbedding { dims: d, base: None, scale: 1.0, freqs: Some(freqs), mscale: 1.0 }
            }
        })
    }

    pub fn forward(&self, x: &Array, offset: usize) -> Result<Array> {
        self.rope().apply(&self.prescale(x)?, offset as i32)
    }

    /// With each batch row's own first position (`[B]`).
    pub fn forward_rows(&self, x: &Array, positions: &Array) -> Result<Array> {
        self.rope().apply_dynamic(&self.prescale(x)?, positions)
    }

    /// YaRN scales the rotated dimensions by its attention factor (all of them
    /// here: YaRN checkpoints rotate whole heads).
    fn prescale(&self, x: &Array) -> Result<Array> {
        if self.mscale == 1.0 {
            Ok(x.clone())
        } else {
            x.mul_scalar(self.mscale)
        }
    }

    fn rope(&self) -> Rope<'_> {
        Rope { dims: self.dims, traditional: false, base: self.base, scale: self.scale, freqs: self.freqs.as_ref() }
    }
}

/// Per-forward inputs shared by all layers.
#[derive(Default)]
pub struct Context<'a> {
    /// Which absolute positions hold real tokens, `[B, offset + L]` bool (left
    /// padding of batches); None when every position is real.
    pub valid: Option<&'a Array>,
    /// Each row's position of its first new token (`[B]` int32) when rows of a
    /// left-padded batch differ; None: the cache's offset for every row.
    pub positions: Option<&'a Array>,
}

/// Multi-head attention with grouped KV heads, optional q/k norms, RoPE, and
/// a full or sliding-window KV cache.
pub struct Attention {
    /// q_proj, k_proj, v_proj.
    qkv: Fanout,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    /// None on layers without positions (SmolLM3's NoPE layers).
    rope: Option<RotaryEmbedding>,
    temperature: Option<AttnTemperature>,
    /// gpt-oss's per-head attention sinks (`[heads]`).
    sinks: Option<Array>,
    /// Qwen 3.5's output gate: q_proj gives each head's query and a gate, and
    /// the heads' outputs are scaled by σ(gate) before o_proj.
    output_gate: bool,
    /// Values are the key projection's output (Gemma 4's `attention_k_eq_v`).
    values_from_keys: bool,
    /// Values RMS-normed without a weight, with this epsilon (Gemma 4).
    value_norm: Option<f32>,
    /// No k/v projections: keys and values come from an earlier layer (Gemma 4).
    shared_kv: bool,
    heads: i32,
    kv_heads: i32,
    head_dim: i32,
    scale: f32,
    window: Option<usize>,
}

/// One attention layer's shape where it differs from the config's common one
/// (Gemma 4's global layers and KV-sharing layers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub head_dim: usize,
    pub kv_heads: usize,
    /// Leading dimensions of each head RoPE rotates.
    pub rope_dims: usize,
    pub values_from_keys: bool,
    pub value_norm: bool,
    pub shared_kv: bool,
}

impl AttnShape {
    /// The config's common shape.
    pub fn of(cfg: &ModelConfig) -> AttnShape {
        AttnShape { head_dim: cfg.head_dim, kv_heads: cfg.num_kv_heads, rope_dims: cfg.rope_dims, values_from_keys: false, value_norm: false, shared_kv: false }
    }
}

impl Attention {
    pub fn load(w: &mut Weights, cfg: &ModelConfig, layer: usize, norm_plus_one: bool) -> Result<Attention> {
        Attention::load_shaped(w, cfg, layer, norm_plus_one, AttnShape::of(cfg))
    }

    pub fn load_shaped(w: &mut Weights, cfg: &ModelConfig, layer: usize, norm_plus_one: bool, shape: AttnShape) -> Result<Attention> {
        let p = format!("model.layers.{layer}.self_attn");
        let (h, hd, nh, nkv) = (cfg.hidden_size, shape.head_dim, cfg.num_heads, shape.kv_heads);
        let sliding = cfg.sliding[layer];
        let rope_cfg = if sliding { cfg.rope_local.as_ref().unwrap_or(&cfg.rope) } else { &cfg.rope };
        let norm = |w: &mut Weights, name: &str| RmsNorm::load(w, &format!("{p}.{name}"), hd, cfg.rms_norm_eps, norm_plus_one);
        let gate = cfg.attn_output_gate;
        let mut parts = vec![("q_proj", nh * hd * if gate { 2 } else { 1 })];
        if !shape.shared_kv {
            parts.push(("k_proj", nkv * hd));
            if !shape.values_from_keys {
                parts.push(("v_proj", nkv * hd));
            }
        }
        let fuse = cfg.build.fuse_projections && !gate && parts.len() > 1;
        let own_k_norm = cfg.qk_norm && !shape.shared_kv;
        Ok(Attention {
            qkv: Fanout::load(w, cfg, &p, &parts, h, cfg.qkv_bias, fuse)?,
            o_proj: Linear::load(w, cfg, &format!("{p}.o_proj"), nh * hd, h, cfg.o_bias)?,
            q_norm: if cfg.qk_norm { Some(norm(w, "q_norm")?) } else { None },
            k_norm: if own_k_norm { Some(norm(w, "k_norm")?) } else { None },
            rope: if cfg.no_rope[layer] { None } else { Some(RotaryEmbedding::new(rope_cfg, shape.rope_dims)?) },
            temperature: cfg.attn_temperature,
            sinks: if cfg.attn_sinks { Some(w.take_shaped(&format!("{p}.sinks"), &[nh])?) } else { None },
            output_gate: gate,
            values_from_keys: shape.values_from_keys,
            value_norm: if shape.value_norm { Some(cfg.rms_norm_eps) } else { None },
            shared_kv: shape.shared_kv,
            heads: nh as i32,
            kv_heads: nkv as i32,
            head_dim: hd as i32,
            scale: cfg.attn_scale,
            window: if sliding { cfg.sliding_window } else { None },
        })
    }

    /// A fresh cache suited to this layer.
    pub fn new_cache(&self) -> KvCache {
        match self.window {
            Some(w) => KvCache::rotating(w),
            None => KvCache::growing(),
        }
    }

    /// Attention over `x`; without a cache (training) the keys are `x`'s own.
    pub fn forward(&self, x: &Array, cache: Option<&mut KvCache>, ctx: &Context) -> Result<Array> {
        Ok(self.forward_kv(x, None, cache, ctx)?.0)
    }

    /// `forward`, also giving this step's keys and values (`[B, kv_heads, L,
    /// head_dim]`, normed and rotated, before the cache); a layer without k/v
    /// projections attends with `shared` ones, another layer's (Gemma 4).
    pub fn forward_kv(&self, x: &Array, shared: Option<(Array, Array)>, cache: Option<&mut KvCache>, ctx: &Context) -> Result<(Array, (Array, Array))> {
        let (b, l) = (x.dim(0), x.dim(1));
        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let mut parts = self.project(x)?.into_iter();
        let q = parts.next().ok_or_else(|| Error::Model("q projection".into()))?;
        // Gated heads: [B, H, L, 2D] holds each head's query then its gate.
        let (q, gate) = if self.output_gate {
            let mut halves = q.split(2, -1)?;
            let g = halves.pop().expect("two halves");
            (halves.pop().expect("two halves"), Some(g))
        } else {
            (q, None)
        };
        let norm = |y: Array, n: &Option<RmsNorm>| match n {
            Some(nm) => nm.forward(&y),
            None => Ok(y),
        };
        let rope = |x: Array| match (&self.rope, ctx.positions) {
            (None, _) => Ok(x),
            (Some(r), Some(p)) => r.forward_rows(&x, p),
            (Some(r), None) => r.forward(&x, offset),
        };
        let q = rope(norm(q, &self.q_norm)?)?;
        let q = match &self.temperature {
            Some(t) => q.multiply(&temperature(t, l, offset, ctx.positions)?.astype(q.dtype())?)?,
            None => q,
        };
        let (k, v) = match (shared, self.shared_kv) {
            (Some(kv), true) => kv,
            (None, false) => {
                let k = parts.next().ok_or_else(|| Error::Model("k projection".into()))?;
                let v = if self.values_from_keys { k.clone() } else { parts.next().ok_or_else(|| Error::Model("v projection".into()))? };
                let v = match self.value_norm {
                    Some(eps) => fast::rms_norm(&v, None, eps)?,
                    None => v,
                };
                (rope(norm(k, &self.k_norm)?)?, v)
            }
            (_, true) => return Err(Error::Model("a layer sharing another's keys and values got none".into())),
            (Some(_), false) => return Err(Error::Model("a layer with its own keys and values got shared ones".into())),
        };
        let fresh = (k.clone(), v.clone());
        let att = match cache {
            Some(c) => c.update(k, v)?,
            None => Attend { keys: k, values: v, preceding: 0, ring_slot: None },
        };
        let positions = KeyPositions::of(&att, offset);
        let mask = build_mask(l as usize, att.preceding, att.keys.dim(2) as usize, self.window, ctx.valid, &positions)?;
        let mask_ref = match &mask {
            Mask::None => AttentionMask::None,
            Mask::Causal => AttentionMask::Causal,
            Mask::Array(a) => AttentionMask::Array(a),
        };
        let sinks = match &self.sinks {
            Some(s) if s.dtype() != q.dtype() => Some(s.astype(q.dtype())?),
            s => s.clone(),
        };
        let o = fast::scaled_dot_product_attention_sinks(&q, &att.keys, &att.values, self.scale, mask_ref, sinks.as_ref())?;
        // With one position, [B, H, 1, D] and [B, 1, H·D] share a memory layout.
        let o = match &gate {
            Some(g) => o.multiply(&g.sigmoid()?)?,
            None => o,
        };
        let o = if l == 1 { o } else { o.transpose(&[0, 2, 1, 3])? };
        Ok((self.o_proj.forward(&o.reshape(&[b, l, self.heads * self.head_dim])?)?, fresh))
    }

    /// Queries, keys and values of `x` (`[B, L, hidden]`) as `[B, heads, L, head_dim]`
    /// (queries only on a layer sharing another's keys; no values where they are the keys).
    /// A decode step (L = 1) gets there with one reshape per tensor instead of a
    /// reshape and a transpose, and fused q/k/v split along the head axis: every
    /// graph node costs host time in MLX's CUDA backend, where decode is host-bound.
    fn project(&self, x: &Array) -> Result<Vec<Array>> {
        let (b, l, d) = (x.dim(0), x.dim(1), self.head_dim);
        let q_width = if self.output_gate { 2 * d } else { d };
        let mut counts = vec![(self.heads, q_width)];
        if !self.shared_kv {
            counts.push((self.kv_heads, d));
            if !self.values_from_keys {
                counts.push((self.kv_heads, d));
            }
        }
        let heads = |y: &Array, n: i32, w: i32| -> Result<Array> {
            if l == 1 {
                y.reshape(&[b, n, 1, w])
            } else {
                y.reshape(&[b, l, n, w])?.transpose(&[0, 2, 1, 3])
            }
        };
        match (&self.qkv, l) {
            // Fused parts all have head_dim columns per head (no output gate).
            (Fanout::Fused { linear, .. }, 1) => {
                let all = heads(&linear.forward(x)?, counts.iter().map(|c| c.0).sum(), d)?;
                let mut cuts = Vec::new();
                let mut at = 0;
                for &(n, _) in &counts[..counts.len() - 1] {
                    at += n;
                    cuts.push(at);
                }
                all.split_at(&cuts, 1)
            }
            _ => self.qkv.forward(x)?.iter().zip(&counts).map(|(y, &(n, w))| heads(y, n, w)).collect(),
        }
    }

    /// The projections by name (`q_proj`, `k_proj`, `v_proj`, `o_proj`; only
    /// `o_proj` when q/k/v are fused).
    pub fn linears(&self) -> Vec<(&'static str, &Linear)> {
        let mut v = self.qkv.linears();
        v.push(("o_proj", &self.o_proj));
        v
    }

    pub fn linears_mut(&mut self) -> Vec<(&'static str, &mut Linear)> {
        let mut v = self.qkv.linears_mut();
        v.push(("o_proj", &mut self.o_proj));
        v
    }

    pub fn arrays(&self) -> Vec<&Array> {
        let mut v = self.qkv.arrays();
        v.extend(self.o_proj.arrays());
        for n in [&self.q_norm, &self.k_norm].into_iter().flatten() {
            v.push(n.weight());
        }
        v.extend(self.sinks.iter());
        v
    }

    /// Dimensions per head and KV heads (Gemma 4's layers differ).
    pub fn head_dim(&self) -> usize {
        self.head_dim as usize
    }

    pub fn kv_heads(&self) -> usize {
        self.kv_heads as usize
    }
}

/// Llama 4's query scale per position, `1 + beta · ln(1 + ⌊pos / original_max⌋)`,
/// shaped to broadcast over `[B, H, L, D]` queries.
fn temperature(t: &AttnTemperature, l: i32, offset: usize, positions: Option<&Array>) -> Result<Array> {
    let of = |pos: &Array| -> Result<Array> {
        pos.astype(mlx::Dtype::F32)?.divide(&Array::scalar_as(t.original_max_position, mlx::Dtype::F32)?)?.floor()?.log1p()?.mul_scalar(t.beta)?.add_scalar(1.0)
    };
    let steps = mlx::arange(0.0, l as f64, 1.0, mlx::Dtype::F32)?;
    match positions {
        // Each row's own positions: [B, 1] + [L] → [B, 1, L, 1].
        Some(p) => {
            let pos = p.astype(mlx::Dtype::F32)?.expand_dims(&[1])?.add(&steps)?;
            of(&pos)?.expand_dims(&[1, 3])
        }
        None => of(&steps.add_scalar(offset as f32)?)?.reshape(&[l, 1]),
    }
}

/// Absolute positions of the keys an update returned: temporal order from
/// `offset - preceding`, or a ring whose newest key (at `offset`) is in `slot`.
enum KeyPositions {
    Temporal { first: usize },
    Ring { newest: usize, slot: usize },
}

impl KeyPositions {
    fn of(att: &Attend, offset: usize) -> KeyPositions {
        match att.ring_slot {
            Some(slot) => KeyPositions::Ring { newest: offset, slot },
            None => KeyPositions::Temporal { first: offset - att.preceding },
        }
    }

    fn gather_index(&self, n: usize) -> Vec<i32> {
        match *self {
            KeyPositions::Temporal { first } => (0..n).map(|j| (first + j) as i32).collect(),
            KeyPositions::Ring { newest, slot } => (0..n).map(|s| (newest - (slot + n - s) % n) as i32).collect(),
        }
    }
}

enum Mask {
    None,
    Causal,
    Array(Array),
}

/// The attention mask for `l` queries over `n` keys of which `d` precede the
/// new tokens: key j is visible to query i when j <= i + d and, on sliding
/// layers, i + d - j < window; padded positions (`valid` false) are hidden.
fn build_mask(l: usize, d: usize, n: usize, window: Option<usize>, valid: Option<&Array>, pos: &KeyPositions) -> Result<Mask> {
    let needs_window = window.is_some_and(|w| l - 1 + d >= w);
    if valid.is_none() && !needs_window {
        return Ok(if l == 1 { Mask::None } else { Mask::Causal });
    }
    let mut keep = Vec::with_capacity(l * n);
    let ring = matches!(pos, KeyPositions::Ring { .. });
    for i in 0..l {
        for j in 0..n {
            let visible = ring || (j <= i + d && window.is_none_or(|w| i + d - j < w));
            keep.push(visible);
        }
    }
    let mut mask = Array::from_slice(&keep, &[1, 1, l as i32, n as i32])?;
    if let Some(valid) = valid {
        let idx = pos.gather_index(n);
        let idx = Array::from_slice(&idx, &[n as i32])?;
        // [B, T] → [B, 1, 1, n]
        let v = valid.take(&idx, 1)?.expand_dims(&[1, 2])?;
        mask = mask.logical_and(&v)?;
    }
    Ok(Mask::Array(mask))
}

/// The MLP kinds: SwiGLU (Llama/Qwen) and GELU-tanh gated (Gemma).
pub struct Mlp {
    /// gate_proj, up_proj.
    gate_up: Fanout,
    down: Linear,
    act: GatedAct,
}

impl Mlp {
    pub fn load(w: &mut Weights, cfg: &ModelConfig, layer: usize, gelu: bool) -> Result<Mlp> {
        Mlp::load_at(w, cfg, &format!("model.layers.{layer}.mlp"), cfg.intermediate_size, gelu)
    }

    /// The MLP at `p` (`gate_proj`, `up_proj`, `down_proj` below it) of width `i`.
    pub fn load_at(w: &mut Weights, cfg: &ModelConfig, p: &str, i: usize, gelu: bool) -> Result<Mlp> {
        let h = cfg.hidden_size;
        let parts = [("gate_proj", i), ("up_proj", i)];
        Ok(Mlp {
            // Not fused: one matmul plus two slices is more graph nodes than two matmuls.
            gate_up: Fanout::load(w, cfg, p, &parts, h, cfg.mlp_bias, false)?,
            down: Linear::load(w, cfg, &format!("{p}.down_proj"), i, h, cfg.mlp_bias)?,
            act: GatedAct::new(gelu, cfg.build.compile_activations)?,
        })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        let [g, u]: [Array; 2] = self.gate_up.forward(x)?.try_into().map_err(|_| Error::Model("gate/up projections".into()))?;
        self.down.forward(&self.act.forward(&g, &u)?)
    }

    /// Split over ranks, leaves down_proj's all_sum to the caller (to sum this
    /// output with another in one collective: Gemma 4's experts) and gives its
    /// group; None (nothing changed) when not split or down_proj has a bias.
    pub fn defer_sum(&mut self) -> Option<std::sync::Arc<mlx::distributed::Group>> {
        let (LinearBase::Dense { bias: None, .. } | LinearBase::Quantized { bias: None, .. }) = &self.down.base else { return None };
        match self.down.collective.take() {
            Some(Collective::Sum(g)) => Some(g),
            other => {
                self.down.collective = other;
                None
            }
        }
    }

    /// The projections by name (`gate_proj`, `up_proj`, `down_proj`; only
    /// `down_proj` when gate/up are fused).
    pub fn linears(&self) -> Vec<(&'static str, &Linear)> {
        let mut v = self.gate_up.linears();
        v.push(("down_proj", &self.down));
        v
    }

    pub fn linears_mut(&mut self) -> Vec<(&'static str, &mut Linear)> {
        let mut v = self.gate_up.linears_mut();
        v.push(("down_proj", &mut self.down));
        v
    }

    pub fn arrays(&self) -> Vec<&Array> {
        let mut v = self.gate_up.arrays();
        v.extend(self.down.arrays());
        v
    }
}

/// `act(g) · u` of a gated MLP: SiLU (SwiGLU) or GELU-tanh (Gemma). Compiled,
/// it is one fused kernel instead of 3 (SiLU) or 9 (GELU-tanh) per layer.
pub struct GatedAct {
    gelu: bool,
    compiled: Option<Compiled>,
}

/// A compiled closure owned by a model. An `mlx_closure` is a handle to a heap
/// `std::function`; moving it with its (`!Sync`) model to another thread is sound.
struct Compiled(mlx::Closure);
unsafe impl Send for Compiled {}

impl GatedAct {
    pub fn new(gelu: bool, compile: bool) -> Result<GatedAct> {
        let compiled = if compile {
            // Shapeless: an elementwise chain is valid for any shape, so one trace serves prefill and decode.
            let f = mlx::Closure::new(move |a: &[Array]| Ok(vec![gated(gelu, &a[0], &a[1])?]))?;
            Some(Compiled(f.compile(true)?))
        } else {
            None
        };
        Ok(GatedAct { gelu, compiled })
    }

    pub fn forward(&self, g: &Array, u: &Array) -> Result<Array> {
        match &self.compiled {
            Some(c) => c.0.apply(&[g, u])?.pop().ok_or_else(|| Error::Mlx("compiled activation returned nothing".into())),
            None => gated(self.gelu, g, u),
        }
    }
}

fn gated(gelu: bool, g: &Array, u: &Array) -> Result<Array> {
    let act = if gelu { gelu_tanh(g)? } else { g.multiply(&g.sigmoid()?)? };
    act.multiply(u)
}

/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), in x's dtype.
pub fn gelu_tanh(x: &Array) -> Result<Array> {
    let inner = x.add(&x.multiply(&x.square()?)?.mul_scalar(0.044715)?)?.mul_scalar((2.0 / std::f32::consts::PI).sqrt())?;
    x.mul_scalar(0.5)?.multiply(&inner.tanh()?.add_scalar(1.0)?)
}

/// Per-expert matrices stacked `[experts, out, in]`, dense or MLX-quantised
/// (affine, or MXFP4 for gpt-oss): one `gather_mm` / `gather_qmm` multiplies
/// each token by its experts' rows.
pub struct SwitchLinear {
    base: SwitchBase,
    /// Per-expert output biases `[E, out]` (gpt-oss).
    bias: Option<Array>,
}

enum SwitchBase {
    /// `[E, in, out]`: the transposed view of the checkpoint's `[E, out, in]`.
    Dense { wt: Array },
    /// Affine (with `biases`) or MXFP4 (without).
    Quantized { w: Array, scales: Array, biases: Option<Array>, q: Quant },
}

impl SwitchLinear {
    #[allow(clippy::too_many_arguments)]
    pub fn load(w: &mut Weights, cfg: &ModelConfig, path: &str, experts: usize, in_dim: usize, out_dim: usize, bias: bool) -> Result<SwitchLinear> {
        let bias = if bias { Some(w.take_shaped(&format!("{path}.bias"), &[experts, out_dim])?) } else { None };
        Ok(SwitchLinear { base: SwitchLinear::load_base(w, cfg, path, experts, in_dim, out_dim)?, bias })
    }

    fn load_base(w: &mut Weights, cfg: &ModelConfig, path: &str, experts: usize, in_dim: usize, out_dim: usize) -> Result<SwitchBase> {
        let name = format!("{path}.weight");
        if w.contains(&format!("{path}.scales")) {
            let q = cfg
                .quantization
                .for_module(path)
                .ok_or_else(|| Error::Model(format!("{}: '{path}' is quantised but config.json has no 'quantization' for it", w.source().display())))?;
            if !in_dim.is_multiple_of(q.group_size as usize) {
                return Err(Error::Model(format!("'{path}': {in_dim} columns are not a multiple of group size {}", q.group_size)));
            }
            let packed = w.take_shaped(&name, &[experts, out_dim, in_dim * q.bits as usize / 32])?;
            let groups = in_dim / q.group_size as usize;
            let scales = w.take_shaped(&format!("{path}.scales"), &[experts, out_dim, groups])?;
            let biases = match q.mode {
                QuantMode::Affine => Some(w.take_shaped(&format!("{path}.biases"), &[experts, out_dim, groups])?),
                QuantMode::Mxfp4 => None,
            };
            return Ok(SwitchBase::Quantized { w: packed, scales, biases, q });
        }
        let weight = w.take_shaped(&name, &[experts, out_dim, in_dim])?;
        Ok(SwitchBase::Dense { wt: weight.swapaxes(-1, -2)? })
    }

    /// `x` `[..., 1, in]` times the experts `idx` (broadcast against x's batch axes) → `[..., 1, out]`.
    pub fn forward(&self, x: &Array, idx: &Array, sorted: bool) -> Result<Array> {
        let y = match &self.base {
            SwitchBase::Dense { wt } if wt.dtype() == x.dtype() => mlx::gather_mm(x, wt, None, Some(idx), sorted)?,
            // Kept narrower than x (stored weights): widen only the chosen experts when
            // few are chosen (decode reads k experts, not all), else the whole stack.
            SwitchBase::Dense { wt } if !sorted => x.matmul(&wt.take(idx, 0)?.astype(x.dtype())?)?,
            SwitchBase::Dense { wt } => mlx::gather_mm(x, &wt.astype(x.dtype())?, None, Some(idx), sorted)?,
            SwitchBase::Quantized { w, scales, biases, q } => {
                mlx::gather_qmm(x, w, scales, biases.as_ref(), Some(idx), true, q.group_size, q.bits, q.mode.name(), sorted)?
            }
        };
        match &self.bias {
            // The chosen experts' biases, [..., out] → [..., 1, out] like y.
            Some(b) => y.add(&b.take(idx, 0)?.expand_dims(&[-2])?.astype(y.dtype())?),
            None => Ok(y),
        }
    }

    pub fn arrays(&self) -> Vec<&Array> {
        let mut v = match &self.base {
            SwitchBase::Dense { wt } => vec![wt],
            SwitchBase::Quantized { w, scales, biases, .. } => [w, scales].into_iter().chain(biases.iter()).collect(),
        };
        v.extend(self.bias.iter());
        v
    }
}

/// Tokens × chosen experts at or above this count are sorted by expert first,
/// so each expert's matrix is read once for its run of tokens (prefill);
/// below it (decode) the gather reads only the few experts picked.
pub const MOE_SORT_AT: i32 = 64;

/// A sparse gated MLP: a router (kept as the checkpoint has it: mlx-lm
/// quantises it at 8 bits where the experts get 4) scores the experts, softmax
/// in float32, the `top_k` best run and their outputs are summed with those
/// probabilities (renormalised over the chosen ones with `norm_topk_prob`,
/// which equals a softmax over the chosen logits: Mixtral, gpt-oss).
pub struct MoeBlock {
    router: Linear,
    gate_proj: SwitchLinear,
    up_proj: SwitchLinear,
    down_proj: SwitchLinear,
    top_k: i32,
    norm_topk_prob: bool,
    act: ExpertAct,
    /// Split over ranks (`shard`): by whole experts or by columns of each.
    split: Option<ExpertSplit>,
}

struct ExpertSplit {
    group: std::sync::Arc<mlx::distributed::Group>,
    /// Whole experts `first..first + count` (else every expert's columns: routing unchanged).
    by_experts: bool,
    first: i32,
    count: i32,
    /// The block ends with the all_sum (else its caller sums: `defer_sum`).
    sum: bool,
}

/// An expert's activation: the gated MLP's (SiLU or GELU-tanh), or gpt-oss's clamped variant.
enum ExpertAct {
    Gated(GatedAct),
    Clamped { alpha: f32, limit: f32 },
}

impl ExpertAct {
    fn forward(&self, g: &Array, u: &Array) -> Result<Array> {
        match self {
            ExpertAct::Gated(a) => a.forward(g, u),
            ExpertAct::Clamped { alpha, limit } => {
                let dt = g.dtype();
                let (hi, lo) = (Array::scalar_as(*limit, dt)?, Array::scalar_as(-*limit, dt)?);
                let g = g.minimum(&hi)?;
                let u = u.clip(Some(&lo), Some(&hi))?;
                g.multiply(&g.mul_scalar(*alpha)?.sigmoid()?)?.multiply(&u.add_scalar(1.0)?)
            }
        }
    }
}

impl MoeBlock {
    /// Loads `model.layers.{layer}.{moe.path}`: the router (`gate`) and the
    /// stacked experts `switch_mlp.{gate,up,down}_proj` (see
    /// `Weights::stack_experts`), or the names `moe` gives.
    pub fn load(w: &mut Weights, cfg: &ModelConfig, layer: usize) -> Result<MoeBlock> {
        let moe = cfg.moe.as_ref().ok_or_else(|| Error::Model("a sparse MLP without a mixture-of-experts config".into()))?;
        let p = format!("model.layers.{layer}.{}", moe.path);
        MoeBlock::load_at(w, cfg, &format!("{p}.{}", moe.router), &format!("{p}.{}", moe.experts_path))
    }

    /// The router at `router` and the stacked experts at `x` (Gemma 4 keeps them apart).
    pub fn load_at(w: &mut Weights, cfg: &ModelConfig, router: &str, x: &str) -> Result<MoeBlock> {
        let moe = cfg.moe.as_ref().ok_or_else(|| Error::Model("a sparse MLP without a mixture-of-experts config".into()))?;
        let (h, i, e, b) = (cfg.hidden_size, moe.intermediate_size, moe.experts, moe.bias);
        // Split: the router scores every expert; by experts `e` are this rank's,
        // by columns `i` is this rank's part of every expert's width.
        let split = cfg.build.shard.as_ref().map(|s| ExpertSplit {
            group: s.group.clone(),
            by_experts: s.moe == super::shard::MoeSplit::Experts,
            first: s.expert_start() as i32,
            count: e as i32,
            sum: true,
        });
        let all = cfg.build.shard.as_ref().map_or(e, |s| s.experts);
        let mut down_proj = SwitchLinear::load(w, cfg, &format!("{x}.down_proj"), e, i, h, b)?;
        // By columns each rank's output is a partial sum: the bias is added on rank 0 only.
        if cfg.build.shard.as_ref().is_some_and(|s| s.moe == super::shard::MoeSplit::Columns && s.rank != 0) {
            down_proj.bias = None;
        }
        Ok(MoeBlock {
            split,
            router: Linear::load(w, cfg, router, h, all, b)?,
            gate_proj: SwitchLinear::load(w, cfg, &format!("{x}.gate_proj"), e, h, i, b)?,
            up_proj: SwitchLinear::load(w, cfg, &format!("{x}.up_proj"), e, h, i, b)?,
            down_proj,
            top_k: moe.top_k as i32,
            norm_topk_prob: moe.norm_topk_prob,
            act: match moe.act {
                MoeAct::Silu => ExpertAct::Gated(GatedAct::new(false, cfg.build.compile_activations)?),
                MoeAct::GeluTanh => ExpertAct::Gated(GatedAct::new(true, cfg.build.compile_activations)?),
                MoeAct::SwigluClamped { alpha, limit } => ExpertAct::Clamped { alpha, limit },
            },
        })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        let k = self.top_k;
        let probs = self.router.forward(x)?.astype(mlx::Dtype::F32)?.softmax(&[-1])?;
        // The k largest probabilities: the first k of a partition of their negatives.
        let idx = probs.negative()?.argpartition(k - 1, -1)?.slice_axis(2, 0, k)?;
        let mut scores = probs.take_along_axis(&idx, -1)?;
        if self.norm_topk_prob {
            scores = scores.divide(&scores.sum(&[-1], true)?)?;
        }
        self.forward_routed(x, &idx, &scores)
    }

    /// The experts `idx` (`[B, L, k]`) of each token of `x`, summed with weights `scores`.
    pub fn forward_routed(&self, x: &Array, idx: &Array, scores: &Array) -> Result<Array> {
        let (b, l, h, k) = (x.dim(0), x.dim(1), x.dim(2), idx.dim(2));
        // Split by experts: other ranks' experts weigh 0 here (and run as local expert 0).
        let (idx, scores) = match &self.split {
            Some(s) if s.by_experts => {
                let local = idx.astype(mlx::Dtype::I32)?.subtract(&Array::scalar(s.first))?;
                let mine = local.greater_equal(&Array::scalar(0i32))?.logical_and(&local.less(&Array::scalar(s.count))?)?;
                let scores = scores.multiply(&mine.astype(scores.dtype())?)?;
                (mlx::where_(&mine, &local, &Array::scalar(0i32))?.astype(mlx::Dtype::U32)?, scores)
            }
            _ => (idx.clone(), scores.clone()),
        };
        let (idx, scores) = (&idx, &scores);
        let n = b * l * k;
        let y = if n >= MOE_SORT_AT {
            // One row per (token, expert) pair, ordered by expert.
            let flat = idx.reshape(&[n])?;
            let order = flat.argsort(0)?;
            let back = order.argsort(0)?;
            let token = order.floor_divide(&Array::scalar(k as u32))?;
            let xs = x.reshape(&[b * l, 1, h])?.take(&token, 0)?;
            let y = self.experts(&xs, &flat.take(&order, 0)?, true)?;
            y.take(&back, 0)?.reshape(&[b, l, k, h])?
        } else {
            self.experts(&x.reshape(&[b, l, 1, 1, h])?, idx, false)?.reshape(&[b, l, k, h])?
        };
        let y = y.multiply(&scores.astype(y.dtype())?.expand_dims(&[-1])?)?.sum(&[2], false)?;
        match &self.split {
            Some(s) if s.sum => s.group.all_sum(&y),
            _ => Ok(y),
        }
    }

    /// Split over ranks, leaves the block's all_sum to the caller (see
    /// `Mlp::defer_sum`) and gives its group; None when not split.
    pub fn defer_sum(&mut self) -> Option<std::sync::Arc<mlx::distributed::Group>> {
        let s = self.split.as_mut()?;
        s.sum = false;
        Some(s.group.clone())
    }

    fn experts(&self, x: &Array, idx: &Array, sorted: bool) -> Result<Array> {
        let g = self.gate_proj.forward(x, idx, sorted)?;
        let u = self.up_proj.forward(x, idx, sorted)?;
        self.down_proj.forward(&self.act.forward(&g, &u)?, idx, sorted)
    }

    /// The router, the one dense projection (adapters attach to attention here).
    pub fn router(&self) -> &Linear {
        &self.router
    }

    pub fn arrays(&self) -> Vec<&Array> {
        let mut v = self.router.arrays();
        for s in [&self.gate_proj, &self.up_proj, &self.down_proj] {
            v.extend(s.arrays());
        }
        v
    }
}
