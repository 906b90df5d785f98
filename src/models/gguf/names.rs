//! llama.cpp tensor names → Hugging Face names, and the llama.cpp conventions to undo.

use super::config::GgufArch;
use crate::{Error, Result};

/// What a GGUF tensor becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// The Hugging Face parameter name.
    Hf(String),
    /// A tensor llama.cpp derives from the config that has no Hugging Face parameter
    /// (e.g. `rope_freqs.weight`, the per-frequency factors of llama3 rope scaling).
    Skip,
}

/// How to fix a tensor's values after decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixup {
    None,
    /// Undo llama.cpp's interleaving of the rotary halves of each head's q/k rows, with
    /// this many heads.
    UnpermuteRows {
        heads: usize,
    },
    /// Subtract 1: Gemma's RMSNorm computes `x * (1 + w)`; llama.cpp stores `1 + w`.
    SubtractOne,
}

/// The Hugging Face name of a GGUF tensor.
pub fn hf_name(arch: &GgufArch, gguf: &str) -> Result<Mapped> {
    let unknown = || Error::Gguf(format!("unknown tensor name '{gguf}' for architecture {}", arch.name));
    match gguf {
        "token_embd.weight" => return Ok(Mapped::Hf("model.embed_tokens.weight".into())),
        "output_norm.weight" => return Ok(Mapped::Hf("model.norm.weight".into())),
        "output.weight" => return Ok(Mapped::Hf("lm_head.weight".into())),
        "rope_freqs.weight" => return Ok(Mapped::Skip),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.").ok_or_else(unknown)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unknown)?;
    let layer: usize = layer.parse().map_err(|_| unknown())?;
    let (base, suffix) = rest.rsplit_once('.').ok_or_else(unknown)?;
    if suffix != "weight" && suffix != "bias" {
        return Err(unknown());
    }
    let own = arch.block_names.iter().find(|(from, _)| *from == base).map(|(_, to)| *to);
    let hf = match own.unwrap_or(base) {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "attn_norm" => "input_layernorm",
        // Llama/Qwen: the norm before the MLP is HF's post_attention_layernorm
        // (families with other norms name theirs in `GgufArch::block_names`).
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        other if own.is_some() => other,
        _ => return Err(unknown()),
    };
    Ok(Mapped::Hf(format!("model.layers.{layer}.{hf}.{suffix}")))
}

/// The value fix-up a GGUF tensor needs to match the Hugging Face layout.
///
/// - `permuted_qk` (the `llama` architecture): llama.cpp's converter permutes the rows of `attn_q` (with the
///   attention head count) and `attn_k` (with the KV head count) so that each head's two
///   rotary halves are interleaved (GGML's "normal" rope works on adjacent pairs). Qwen 2/3
///   and Gemma 3 use NeoX-style rope in llama.cpp and are not permuted.
/// - `norm_plus_one` (`gemma3`): every `*norm.weight` (attn_norm, ffn_norm, post_attention_norm,
///   post_ffw_norm, attn_q_norm, attn_k_norm, output_norm) was stored as `1 + w`.
pub fn fixup(arch: &GgufArch, gguf: &str, n_heads: usize, n_kv_heads: usize) -> Fixup {
    if arch.permuted_qk && gguf.contains(".attn_q.") {
        Fixup::UnpermuteRows { heads: n_heads }
    } else if arch.permuted_qk && gguf.contains(".attn_k.") {
        Fixup::UnpermuteRows { heads: n_kv_heads }
    } else if arch.norm_plus_one && gguf.ends_with("norm.weight") {
        Fixup::SubtractOne
    } else {
        Fixup::None
    }
}

/// Source rows for undoing llama.cpp's q/k permutation of a matrix with `rows` rows.
///
/// llama.cpp's `permute` views each head's `head_dim = rows / heads` rows as `[2, head_dim/2]`
/// (first rotary half, second half) and transposes that to `[head_dim/2, 2]`, so GGUF row
/// `h*head_dim + 2*i + j` holds Hugging Face row `h*head_dim + j*head_dim/2 + i`. The inverse:
/// Hugging Face row `h*head_dim + j*half + i` comes from GGUF row `h*head_dim + 2*i + j`.
pub fn unpermute_source_rows(rows: usize, heads: usize) -> Result<Vec<usize>> {
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(Error::Gguf(format!("cannot undo the q/k permutation of {rows} rows over {heads} heads")));
    }
    let hd = rows / heads;
    let half = hd / 2;
    Ok((0..rows)
        .map(|r| {
            let (h, rem) = (r / hd, r % hd);
            let (j, i) = (rem / half, rem % half);
            h * hd + 2 * i + j
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch(name: &str) -> &'static GgufArch {
        GgufArch::find(name).unwrap()
    }

    #[test]
    fn names() {
        let m = |a, n| hf_name(a, n).unwrap();
        assert_eq!(m(arch("llama"), "token_embd.weight"), Mapped::Hf("model.embed_tokens.weight".into()));
        assert_eq!(m(arch("llama"), "blk.3.attn_q.weight"), Mapped::Hf("model.layers.3.self_attn.q_proj.weight".into()));
        assert_eq!(m(arch("qwen2"), "blk.0.attn_k.bias"), Mapped::Hf("model.layers.0.self_attn.k_proj.bias".into()));
        assert_eq!(m(arch("llama"), "blk.12.ffn_norm.weight"), Mapped::Hf("model.layers.12.post_attention_layernorm.weight".into()));
        assert_eq!(m(arch("gemma3"), "blk.1.ffn_norm.weight"), Mapped::Hf("model.layers.1.pre_feedforward_layernorm.weight".into()));
        assert_eq!(m(arch("gemma3"), "blk.1.post_attention_norm.weight"), Mapped::Hf("model.layers.1.post_attention_layernorm.weight".into()));
        assert_eq!(m(arch("gemma3"), "blk.1.post_ffw_norm.weight"), Mapped::Hf("model.layers.1.post_feedforward_layernorm.weight".into()));
        assert_eq!(m(arch("qwen3"), "blk.2.attn_k_norm.weight"), Mapped::Hf("model.layers.2.self_attn.k_norm.weight".into()));
        assert_eq!(m(arch("llama"), "output_norm.weight"), Mapped::Hf("model.norm.weight".into()));
        assert_eq!(m(arch("llama"), "output.weight"), Mapped::Hf("lm_head.weight".into()));
        assert_eq!(m(arch("llama"), "rope_freqs.weight"), Mapped::Skip);
        let e = hf_name(arch("llama"), "blk.0.post_ffw_norm.weight").unwrap_err().to_string();
        assert!(e.contains("blk.0.post_ffw_norm.weight"), "{e}");
        assert!(hf_name(arch("llama"), "blk.x.attn_q.weight").is_err());
    }

    #[test]
    fn unpermute_is_inverse_of_llama_cpp_permute() {
        // llama.cpp's permute written out: HF row (h, j, i) goes to GGUF row h*hd + 2i + j.
        let (heads, hd) = (3, 8);
        let rows = heads * hd;
        let mut gguf = vec![usize::MAX; rows];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    gguf[h * hd + 2 * i + j] = h * hd + j * (hd / 2) + i;
                }
            }
        }
        let src = unpermute_source_rows(rows, heads).unwrap();
        let hf: Vec<usize> = src.iter().map(|&s| gguf[s]).collect();
        assert_eq!(hf, (0..rows).collect::<Vec<_>>());
        // Spelled out for one head of 4: GGUF rows [0, 2, 1, 3] hold HF rows 0..4.
        assert_eq!(unpermute_source_rows(4, 1).unwrap(), vec![0, 2, 1, 3]);
        assert!(unpermute_source_rows(10, 3).is_err());
    }

    #[test]
    fn fixups() {
        assert_eq!(fixup(arch("llama"), "blk.0.attn_q.weight", 9, 3), Fixup::UnpermuteRows { heads: 9 });
        assert_eq!(fixup(arch("llama"), "blk.0.attn_k.weight", 9, 3), Fixup::UnpermuteRows { heads: 3 });
        assert_eq!(fixup(arch("llama"), "blk.0.attn_v.weight", 9, 3), Fixup::None);
        assert_eq!(fixup(arch("qwen2"), "blk.0.attn_q.weight", 9, 3), Fixup::None);
        assert_eq!(fixup(arch("gemma3"), "blk.0.attn_q_norm.weight", 4, 1), Fixup::SubtractOne);
        assert_eq!(fixup(arch("gemma3"), "output_norm.weight", 4, 1), Fixup::SubtractOne);
        assert_eq!(fixup(arch("llama"), "output_norm.weight", 4, 1), Fixup::None);
    }
}
