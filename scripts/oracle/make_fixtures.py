#!/usr/bin/env python3
"""Reference fixtures for gomlx's model tests (issue 3, item 7: the oracle).

For every case this builds a tiny random-weight model with Hugging Face
transformers (float32, seeded), saves it as a Hugging Face model directory
(config.json + model.safetensors), and records in
tests/fixtures/models/<case>/reference.safetensors:

  inputs  int32 [L]     fixed prompt token ids
  logits  float32 [L,V] reference logits at every prompt position
                        (transformers float32, or mlx-lm where transformers
                        cannot load the files: quantised and bf16 cases; see
                        reference.json "logits_source")
  greedy  int32 [32]    greedy continuation from mlx-lm 0.32.2 (KV-cached
                        generate_step with argmax sampling)

plus reference.json (metadata, versions, seeds, and the cross-checks between
mlx-lm and transformers that were measured while generating).

Run through scripts/oracle/run, which installs the pinned packages. The output
is deterministic: running it twice gives byte-identical files.
"""
import argparse
import contextlib
import copy
import io
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import AutoConfig, AutoModelForCausalLM

import mlx.core as mx
import mlx_lm

import mlx_lm.utils
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model

# mlx-lm 0.32.2's QuantizedSwitchLinear (quantised MoE experts) passes `global_scale=None`
# to mx.gather_qmm, a keyword mlx 0.32.2 (the pinned MLX, DESIGN.md) does not have yet.
# None is its default (no nvfp4 global scale), so dropping it changes nothing.
_gather_qmm = mx.gather_qmm


def _gather_qmm_compat(*args, global_scale=None, **kwargs):
    assert global_scale is None, "an nvfp4 global scale needs a newer mlx"
    return _gather_qmm(*args, **kwargs)


mx.gather_qmm = _gather_qmm_compat

N_GREEDY = 32
PROMPT_LEN = 24
MIN_DISTINCT_GREEDY = 6      # greedy continuation must not be one token repeated
MIN_MARGIN = 0.05            # top-1 minus top-2 logit along the greedy path (mlx-lm)
MIN_MARGIN_BF16 = 0.25       # bf16 logits are rounded to ~0.03 at |x| ~ 4
MAX_SEED_TRIES = 200
BLOCK_GAIN = 2.5             # extra scale on o_proj/down_proj so blocks outweigh the embedding in the
                             # residual stream (tied random models otherwise just repeat the last token)

COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    rms_norm_eps=1e-6,
)

# What the two Qwen 3.5 cases share: three gated delta layers then one full
# attention layer, and their rope.
QWEN3_5_LAYERS = dict(head_dim=32, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                      linear_value_head_dim=8, linear_conv_kernel_dim=4,
                      layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"])
QWEN3_5_ROPE = dict(rope_type="default", rope_theta=10000000.0, partial_rotary_factor=0.25,
                    mrope_section=[2, 1, 1], mrope_interleaved=True)
# The two Gemma 4 cases' rope: default on sliding layers, proportional on global ones.
GEMMA4_ROPE = dict(
    sliding_attention=dict(rope_type="default", rope_theta=10000.0),
    full_attention=dict(rope_type="proportional", partial_rotary_factor=0.25, rope_theta=1000000.0),
)

# Each dense case: transformers config kwargs (transformers-5 native form),
# init scales, and which extra copies to derive from it.
DENSE_CASES = [
    dict(
        name="llama_rope_llama3",
        what="llama, untied lm_head, Llama 3 rope scaling (factor 8, original_max_position_embeddings 64)",
        config=dict(
            model_type="llama", num_hidden_layers=2, vocab_size=256, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=64),
        ),
        seed=1001, tf5_copy=True,
        # Same model with plain rope: shows that the scaling changes the logits.
        ablation=("rope_parameters", dict(rope_type="default", rope_theta=500000.0)),
    ),
    dict(
        name="llama_tied",
        what="llama, tie_word_embeddings (no lm_head tensor), rope_theta 10000, derived head_dim",
        config=dict(model_type="llama", num_hidden_layers=2, vocab_size=256, tie_word_embeddings=True,
                    rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
        seed=2001, hub_drop_head_dim=True, quantize=[(4, 32), (8, 64)],
    ),
    dict(
        name="mistral",
        what="model_type mistral (llama shape), untied, no sliding window",
        config=dict(model_type="mistral", num_hidden_layers=2, vocab_size=320, tie_word_embeddings=False,
                    sliding_window=None, rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        seed=3001,
    ),
    dict(
        name="qwen2_bias",
        what="qwen2: q/k/v projection biases, tied embeddings",
        config=dict(model_type="qwen2", num_hidden_layers=2, vocab_size=288, tie_word_embeddings=True,
                    use_sliding_window=False, sliding_window=None,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        seed=4001,
    ),
    dict(
        name="qwen3_qknorm",
        what="qwen3: q/k RMSNorm, explicit head_dim 32 (hidden/heads = 16), untied",
        config=dict(model_type="qwen3", num_hidden_layers=2, vocab_size=256, tie_word_embeddings=False,
                    head_dim=32, use_sliding_window=False, sliding_window=None,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        seed=5001, quantize=[(4, 32)], bf16_copy=True, lm_head_std=0.8,
    ),
    dict(
        name="gemma3_text",
        what="gemma3_text: 4 layers local/global (sliding_window 8, pattern 2), head_dim 32, "
             "query_pre_attn_scalar 24, local rope 10000 / global rope 1e6 with linear scaling 8, tied",
        config=dict(
            model_type="gemma3_text", num_hidden_layers=4, vocab_size=256, tie_word_embeddings=True,
            head_dim=32, query_pre_attn_scalar=24, sliding_window=8,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            final_logit_softcapping=None, attn_logit_softcapping=None,
            rope_parameters=dict(
                sliding_attention=dict(rope_type="default", rope_theta=10000.0),
                full_attention=dict(rope_type="linear", rope_theta=1000000.0, factor=8.0),
            ),
        ),
        seed=6001, tf5_copy=True, quantize=[(4, 32), (8, 64)],
        ablation=("sliding_window", 4096),
    ),
    dict(
        name="gemma3_text_softcap",
        what="gemma3_text with final_logit_softcapping 10 (2 layers: 1 local, 1 global); "
             "mlx-lm 0.32.2 ignores soft-capping, greedy is unaffected (tanh is monotonic)",
        config=dict(
            model_type="gemma3_text", num_hidden_layers=2, vocab_size=256, tie_word_embeddings=True,
            head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
            layer_types=["sliding_attention", "full_attention"],
            final_logit_softcapping=10.0, attn_logit_softcapping=None,
            rope_parameters=dict(
                sliding_attention=dict(rope_type="default", rope_theta=10000.0),
                full_attention=dict(rope_type="default", rope_theta=1000000.0),
            ),
        ),
        seed=7001,
    ),
    dict(
        name="phi3_fused",
        what="phi3: fused qkv_proj and gate_up_proj (split at load), partial_rotary_factor 0.5, untied",
        config=dict(model_type="phi3", num_hidden_layers=2, vocab_size=256, tie_word_embeddings=False,
                    sliding_window=None, pad_token_id=None, bos_token_id=None, eos_token_id=None,
                    rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5)),
        seed=8001, quantize=[(4, 32)],
    ),
    dict(
        name="smollm3_nope",
        what="smollm3: layers 1 and 3 without RoPE (no_rope_layer_interval 2 -> no_rope_layers [1, 0, 1, 0]), tied",
        config=dict(model_type="smollm3", num_hidden_layers=4, vocab_size=256, tie_word_embeddings=True,
                    no_rope_layer_interval=2, pad_token_id=None, bos_token_id=None, eos_token_id=None,
                    rope_parameters=dict(rope_type="default", rope_theta=2000000.0)),
        seed=9001,
        ablation=("no_rope_layers", [1, 1, 1, 1]),
    ),
    dict(
        name="ministral3_yarn",
        what="ministral3: YaRN rope (factor 4, original_max_position_embeddings 16, mscale 1, mscale_all_dim 0) and "
             "Llama 4 query temperature (llama_4_scaling_beta 0.1) over a 24-token prompt, head_dim 32, untied",
        config=dict(model_type="ministral3", num_hidden_layers=2, vocab_size=256, tie_word_embeddings=False,
                    head_dim=32, pad_token_id=None, bos_token_id=None, eos_token_id=None,
                    rope_parameters=dict(rope_type="yarn", rope_theta=1000000.0, factor=4.0,
                                         original_max_position_embeddings=16, beta_fast=32.0, beta_slow=1.0,
                                         mscale=1.0, mscale_all_dim=0.0, llama_4_scaling_beta=0.1)),
        seed=10001, hub_keeps_rope_parameters=True,
    ),
    dict(
        name="qwen3_moe",
        what="qwen3_moe: 8 experts, top 4 (96 token-expert pairs in the prompt: sorted by expert), norm_topk_prob, "
             "q/k norm, layer 1 dense (mlp_only_layers [1]), per-expert checkpoint tensors stacked at load",
        config=dict(model_type="qwen3_moe", num_hidden_layers=2, vocab_size=256, tie_word_embeddings=False,
                    num_experts=8, num_experts_per_tok=4, moe_intermediate_size=32, norm_topk_prob=True,
                    mlp_only_layers=[1], decoder_sparse_step=1, head_dim=16, pad_token_id=None, bos_token_id=None, eos_token_id=None,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        seed=11001, quantize=[(4, 32), (8, 64)],
    ),
    dict(
        name="mixtral",
        what="mixtral: 4 experts, top 2 (softmax over the chosen), block_sparse_moe.experts.{e}.w1/w2/w3 stacked at load",
        config=dict(model_type="mixtral", num_hidden_layers=2, vocab_size=256, tie_word_embeddings=False,
                    num_local_experts=4, num_experts_per_tok=2, intermediate_size=64, pad_token_id=None, bos_token_id=None, eos_token_id=None,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        seed=12001, quantize=[(4, 32), (8, 64)],
    ),
    dict(
        name="gpt_oss",
        what="gpt_oss: 4 experts of 32, top 2, biased router and experts, clamped SwiGLU, attention sinks, "
             "q/k/v/o biases, layers sliding (window 8) / full, YaRN (factor 4 over 16, truncate true), head_dim 16. "
             "model.safetensors in mlx-lm's layout (experts.{gate,up,down}_proj), the _tf5 copy in transformers' "
             "(experts.gate_up_proj [E, H, 2I] interleaved, down_proj [E, I, H])",
        config=dict(model_type="gpt_oss", num_hidden_layers=2, vocab_size=256, tie_word_embeddings=False,
                    num_local_experts=4, num_experts_per_tok=2, intermediate_size=32, head_dim=16,
                    sliding_window=8, layer_types=["sliding_attention", "full_attention"], pad_token_id=None, bos_token_id=None, eos_token_id=None,
                    rope_parameters=dict(rope_type="yarn", rope_theta=150000.0, factor=4.0,
                                         original_max_position_embeddings=16, beta_fast=32.0, beta_slow=1.0,
                                         truncate=True)),
        seed=13001, tf5_copy=True, hub_weights="gpt_oss_mlx_layout", mxfp4_copy=True,
    ),
    dict(
        name="qwen3_5",
        what="qwen3_5: layers 0-2 gated delta linear attention (2 key heads of 16, 4 value heads of 8, conv kernel 4), "
             "layer 3 gated full attention (q_proj = query + output gate per head, q/k norms), partial rotary 0.25 of "
             "head_dim 32, zero-centred RMSNorms (1 + w), untied. Hub layout: nested text_config, "
             "model.language_model.* tensors (as Qwen ships Qwen 3.5)",
        config=dict(model_type="qwen3_5_text", num_hidden_layers=4, vocab_size=256, tie_word_embeddings=False,
                    **QWEN3_5_LAYERS, pad_token_id=None, bos_token_id=None, eos_token_id=None,
                    rope_parameters=QWEN3_5_ROPE),
        seed=14001, hub_keeps_rope_parameters=True, hub_weights="qwen3_5_hub_layout", hub_config="qwen3_5_hub_config",
        quantize=[(4, 32)],
    ),
    dict(
        name="qwen3_5_moe",
        what="qwen3_5_moe: the qwen3_5 case's hybrid layers with sparse MLPs: 4 experts of 32, top 2 (renormalised), "
             "a shared expert of 48 gated by sigmoid(shared_expert_gate). Hub layout: nested text_config, "
             "model.language_model.*, experts fused (experts.gate_up_proj [E, 2I, H], experts.down_proj [E, H, I]); "
             "the _tf5 copy is what transformers 5.20.2 saves (flat qwen3_5_moe_text config, per-expert tensors)",
        config=dict(model_type="qwen3_5_moe_text", num_hidden_layers=4, vocab_size=256, tie_word_embeddings=False,
                    **QWEN3_5_LAYERS, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                    pad_token_id=None, bos_token_id=None, eos_token_id=None, rope_parameters=QWEN3_5_ROPE),
        seed=15001, tf5_copy=True, hub_keeps_rope_parameters=True, hub_weights="qwen3_5_hub_layout",
        hub_config="qwen3_5_hub_config", quantize=[(4, 32)],
    ),
    dict(
        name="gemma4",
        what="gemma4 (E2B/E4B shape): 6 layers sliding (window 8, head_dim 16, rope 1e4) / global (layers 2 and 5: "
             "global_head_dim 32, proportional rope on a quarter of it, theta 1e6), per-layer input embeddings of 32 "
             "per layer, layers 4 and 5 reuse the keys/values of layers 3 and 2 (num_kv_shared_layers 2) with "
             "double-wide MLPs, value RMSNorm, attention scale 1, random layer_scalar, final_logit_softcapping 30, "
             "tied. Hub layout: nested text_config with global_head_dim, model.language_model.* tensors; the _tf5 "
             "copy is what transformers 5.20.2 saves (flat gemma4_text, per_layer_config)",
        config=dict(model_type="gemma4_text", num_hidden_layers=6, vocab_size=256, tie_word_embeddings=True,
                    head_dim=16, global_head_dim=32, sliding_window=8,
                    layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                 "sliding_attention", "sliding_attention", "full_attention"],
                    num_kv_shared_layers=2, hidden_size_per_layer_input=32, vocab_size_per_layer_input=256,
                    use_double_wide_mlp=True, attention_k_eq_v=False, final_logit_softcapping=30.0,
                    pad_token_id=None, bos_token_id=None, eos_token_id=None,
                    rope_parameters=GEMMA4_ROPE),
        seed=16001, tf5_copy=True, hub_keeps_rope_parameters=True, hub_weights="gemma4_hub_layout",
        hub_config="gemma4_hub_config", quantize=[(4, 32)],
    ),
    dict(
        name="gemma4_moe",
        what="gemma4 (26B-A4B shape): 4 layers sliding (window 8, head_dim 16, 2 KV heads) / global (global_head_dim 32, "
             "keys = values: attention_k_eq_v with num_global_key_value_heads 1), beside each dense MLP 4 GELU-tanh "
             "experts of 32, top 2 (router on the RMS-normed residual scaled per feature, renormalised, scaled per "
             "expert), experts fused in transformers' layout (experts.gate_up_proj [E, 2I, H]); no per-layer inputs, "
             "no KV sharing. Hub layout as the gemma4 case",
        config=dict(model_type="gemma4_text", num_hidden_layers=4, vocab_size=256, tie_word_embeddings=True,
                    head_dim=16, global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=True, sliding_window=8,
                    layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                    num_kv_shared_layers=0, hidden_size_per_layer_input=0, vocab_size_per_layer_input=256,
                    enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=32,
                    final_logit_softcapping=30.0, pad_token_id=None, bos_token_id=None, eos_token_id=None,
                    rope_parameters=GEMMA4_ROPE),
        seed=17001, tf5_copy=True, hub_keeps_rope_parameters=True, hub_weights="gemma4_hub_layout",
        hub_config="gemma4_hub_config", quantize=[(4, 32)],
    ),
]


# --------------------------------------------------------------------------
# config dialects


def to_hub_dialect(cfg: dict) -> dict:
    """Rewrite a config.json written by transformers 5 into the hub / transformers 4
    dialect (rope_theta + rope_scaling, rope_local_base_freq, sliding_window_pattern,
    torch_dtype), with the same meaning."""
    cfg = copy.deepcopy(cfg)
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    rp = cfg.pop("rope_parameters", None)
    if cfg["model_type"] == "gemma3_text":
        layer_types = cfg.pop("layer_types")
        cfg.pop("_sliding_window_pattern", None)
        # Hub Gemma 3 configs describe the layout as "every Nth layer is global".
        n = layer_types.index("full_attention") + 1
        expect = ["full_attention" if (i + 1) % n == 0 else "sliding_attention" for i in range(len(layer_types))]
        assert expect == layer_types, layer_types
        cfg["sliding_window_pattern"] = n
        local, glob = dict(rp["sliding_attention"]), dict(rp["full_attention"])
        assert local.pop("rope_type") == "default" and set(local) == {"rope_theta"}, local
        cfg["rope_local_base_freq"] = local["rope_theta"]
        cfg["rope_theta"] = glob.pop("rope_theta")
        cfg["rope_scaling"] = None if glob.get("rope_type") == "default" else glob
    elif rp is not None:
        rp = dict(rp)
        if "partial_rotary_factor" in rp:
            # hub Phi-3/Phi-4 configs keep it at the top level
            cfg["partial_rotary_factor"] = rp.pop("partial_rotary_factor")
        cfg["rope_theta"] = rp.pop("rope_theta")
        cfg["rope_scaling"] = None if rp.get("rope_type") == "default" else rp
    if cfg["model_type"] == "qwen3_moe" and "num_local_experts" in cfg:
        # hub Qwen3-MoE configs (and mlx-lm) name the expert count num_experts
        cfg["num_experts"] = cfg.pop("num_local_experts")
    return dict(sorted(cfg.items()))


def tf5_rope(cfg: dict) -> dict:
    return cfg.get("rope_parameters")


# --------------------------------------------------------------------------
# model construction


def init_weights(model, arch: str, seed: int, tied: bool, block_gain: float, lm_head_std: float):
    """Deterministic init, independent of transformers' own init code.
    Scales are chosen so that activations stay O(1) and logits have a spread of a
    few units: greedy outputs are not degenerate and top-1/top-2 margins are wide."""
    g = torch.Generator().manual_seed(seed)
    gemma = arch.startswith("gemma")
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "norm" in name:
                # gemma (before 4) and qwen3_5 store w for (1 + w); the others (and qwen3_5's gated norm) store w
                zero_centred = (gemma and not arch.startswith("gemma4")) or (arch.startswith("qwen3_5") and "linear_attn.norm" not in name)
                base = 0.0 if zero_centred else 1.0
                if gemma and ("post_attention_layernorm" in name or "post_feedforward_layernorm" in name):
                    # (1 + 2) = 3x on the block outputs: after gemma's post-norms the blocks would
                    # otherwise be no larger than the scaled embedding, and a tied random model
                    # just repeats its last input token
                    base = 2.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                # gemma scales embeddings by sqrt(hidden) = 8
                if gemma:
                    std = 0.25 if tied else 0.125
                else:
                    std = 0.4 if tied else 1.0
                p.copy_(std * torch.randn(p.shape, generator=g))
            elif name.endswith(("router.scale", "router.per_expert_scale")):
                # Gemma 4's router scales (1 in transformers' init): near 1, not a fan-in draw
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name == "lm_head.weight":
                p.copy_(lm_head_std * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                gain = block_gain if name.endswith(("o_proj.weight", "down_proj.weight", "experts.down_proj")) else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        for name, b in sorted(model.named_buffers(), key=lambda kv: kv[0]):
            if name.endswith("layer_scalar"):
                # Gemma 4's learned per-layer scale (a saved buffer): not 1, so that loading it matters
                b.copy_(0.75 + 0.5 * torch.rand(b.shape, generator=g))
    if tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def make_config(case: dict):
    kw = dict(COMMON)
    kw.update(copy.deepcopy(case["config"]))
    model_type = kw.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **kw)
    cfg.dtype = torch.float32
    return cfg


def build_model(cfg, arch, seed, case):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    init_weights(model, arch, seed, cfg.tie_word_embeddings,
                 case.get("block_gain", BLOCK_GAIN), case.get("lm_head_std", 0.3))
    return model


def tf_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.tensor([list(ids)], dtype=torch.long), use_cache=False)
    return out.logits[0].float().numpy()


def tf_greedy(model, ids, n=N_GREEDY):
    seq = list(ids)
    for _ in range(n):
        seq.append(int(tf_logits(model, seq)[-1].argmax()))
    return seq[len(ids):]


def save_hf_dir(model, path: Path):
    model.save_pretrained(path, safe_serialization=True)
    for extra in ("generation_config.json",):
        (path / extra).unlink(missing_ok=True)
    names = sorted(os.listdir(path))
    assert names == ["config.json", "model.safetensors"], names


def write_json(path: Path, obj):
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    return json.loads(path.read_text())


# --------------------------------------------------------------------------
# mlx-lm side


def mlx_load(path: Path):
    model, config = load_model(Path(path))
    return model


def mlx_logits(model, ids) -> np.ndarray:
    out = model(mx.array([list(ids)], dtype=mx.int32))
    return np.array(out[0].astype(mx.float32))


def mlx_greedy(model, ids, n=N_GREEDY):
    """32 tokens from mlx-lm's own generation loop (prefill + KV cache, argmax).
    Returns tokens and the per-step logprobs (for margins / cross-checks)."""
    toks, lps = [], []
    sampler = lambda logprobs: mx.argmax(logprobs, axis=-1)
    for tok, logprobs in generate_step(mx.array(list(ids), dtype=mx.uint32), model, max_tokens=n, sampler=sampler):
        toks.append(int(tok))
        lps.append(np.array(logprobs.astype(mx.float32)).reshape(-1))
    return toks, np.stack(lps)


def margins(rows: np.ndarray) -> np.ndarray:
    s = np.sort(rows, axis=-1)
    return s[:, -1] - s[:, -2]


def compare(a: np.ndarray, ref: np.ndarray) -> dict:
    """Errors of a against ref ([L, V])."""
    diff = np.abs(a.astype(np.float64) - ref.astype(np.float64))
    scale = np.abs(ref.astype(np.float64)).max(axis=-1)  # per position
    return dict(
        max_abs=float(diff.max()),
        max_rel=float((diff.max(axis=-1) / scale).max()),  # max over positions of max|a-ref| / max|ref|
        rel_l2=float(np.linalg.norm(a - ref) / np.linalg.norm(ref)),
    )


def round_floats(obj, digits=6):
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    return obj


def mlx_convert(src: Path, dst: Path, bits: int, group_size: int):
    """mlx_lm.convert(quantize=True) on a directory that has no tokenizer:
    the fixtures carry none, so the tokenizer load/save is replaced by a no-op.
    Everything else (loading, dtype handling, quantize_model, save_model,
    save_config) is mlx_lm.convert's own code."""

    class NoTokenizer:
        def save_pretrained(self, path):
            pass

    orig = mlx_lm.utils.load_tokenizer
    mlx_lm.utils.load_tokenizer = lambda *a, **k: NoTokenizer()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            mlx_lm.convert(str(src), str(dst), quantize=True, q_bits=bits, q_group_size=group_size)
    finally:
        mlx_lm.utils.load_tokenizer = orig
    (dst / "README.md").unlink(missing_ok=True)  # model card naming the source path


# --------------------------------------------------------------------------


def versions():
    import safetensors
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "mlx": mx.__version__,
        "mlx-lm": mlx_lm.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }


def write_case(out: Path, name: str, model_dir: Path, inputs, logits, greedy, meta: dict, extra=None):
    d = out / name
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(model_dir, d)
    tensors = {
        "inputs": np.asarray(inputs, dtype=np.int32),
        "logits": np.ascontiguousarray(logits, dtype=np.float32),
        "greedy": np.asarray(greedy, dtype=np.int32),
    }
    for k, v in (extra or {}).items():
        tensors[k] = np.ascontiguousarray(v)
    save_file(tensors, str(d / "reference.safetensors"))
    meta = dict(meta, case=name, versions=versions(), n_prompt=len(inputs), n_greedy=len(greedy),
                tensors={k: f"{v.dtype} {list(v.shape)}" for k, v in sorted(tensors.items())})
    write_json(d / "reference.json", round_floats(meta))
    return d


def gpt_oss_mlx_layout(tensors: dict) -> dict:
    """transformers' gpt-oss experts ([E, in, out], gate/up interleaved along out)
    in mlx-lm's layout ([E, out, in] per projection): what mlx-lm 0.32.2 reads
    (its sanitize assumes OpenAI's [E, out, in] rows, and would silently
    mis-split a transformers-saved dense checkpoint of this shape)."""
    out = {}
    for k, v in tensors.items():
        if k.endswith("experts.gate_up_proj"):
            out[k.replace("gate_up_proj", "gate_proj.weight")] = np.ascontiguousarray(v[..., ::2].transpose(0, 2, 1))
            out[k.replace("gate_up_proj", "up_proj.weight")] = np.ascontiguousarray(v[..., 1::2].transpose(0, 2, 1))
        elif k.endswith("experts.down_proj"):
            out[k.replace("down_proj", "down_proj.weight")] = np.ascontiguousarray(v.transpose(0, 2, 1))
        elif k.endswith("experts.gate_up_proj_bias"):
            out[k.replace("gate_up_proj_bias", "gate_proj.bias")] = np.ascontiguousarray(v[..., ::2])
            out[k.replace("gate_up_proj_bias", "up_proj.bias")] = np.ascontiguousarray(v[..., 1::2])
        elif k.endswith("experts.down_proj_bias"):
            out[k.replace("down_proj_bias", "down_proj.bias")] = v
        else:
            out[k] = v
    return out


def qwen3_5_hub_layout(tensors: dict) -> dict:
    """Qwen 3.5 as Qwen ships it: the text model under model.language_model.*
    (lm_head stays), MoE experts fused per layer (experts.gate_up_proj [E, 2I, H]
    with the gate rows first, experts.down_proj [E, H, I]): the layout mlx-lm
    0.32.2's sanitize reads (it has no per-expert path)."""
    out, experts = {}, {}
    for k, v in tensors.items():
        parts = k.split(".")
        if ".mlp.experts." in k:
            # model.layers.{l}.mlp.experts.{e}.{proj}.weight
            layer, e, proj = int(parts[2]), int(parts[5]), parts[6]
            experts.setdefault(layer, {}).setdefault(proj, {})[e] = v
            continue
        out[k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k] = v
    for layer, projs in experts.items():
        n = len(projs["gate_proj"])
        stack = lambda p: np.stack([projs[p][e] for e in range(n)])
        p = f"model.language_model.layers.{layer}.mlp.experts."
        out[p + "gate_up_proj"] = np.ascontiguousarray(np.concatenate([stack("gate_proj"), stack("up_proj")], axis=1))
        out[p + "down_proj"] = np.ascontiguousarray(stack("down_proj"))
    return out


def qwen3_5_hub_config(cfg: dict) -> dict:
    """The hub's Qwen 3.5 config.json: the text settings nested under text_config
    of a `qwen3_5` / `qwen3_5_moe` model (no vision_config: text only)."""
    text = dict(cfg)
    outer = text["model_type"].removesuffix("_text")
    arch = "Qwen3_5MoeForConditionalGeneration" if outer.endswith("moe") else "Qwen3_5ForConditionalGeneration"
    text.pop("architectures", None)
    return dict(sorted({"architectures": [arch], "model_type": outer, "text_config": text,
                        "tie_word_embeddings": text["tie_word_embeddings"],
                        "torch_dtype": text.get("torch_dtype", "float32")}.items()))


def gemma4_hub_layout(tensors: dict) -> dict:
    """Gemma 4 as Google ships it (Gemma4ForConditionalGeneration): the text
    model under model.language_model.*."""
    return {k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k: v for k, v in tensors.items()}


def gemma4_hub_config(cfg: dict) -> dict:
    """The hub's Gemma 4 config.json: a `gemma4` model with the text settings
    under text_config, global layers described by global_head_dim (what
    transformers 5.20.2 turns into per_layer_config, and what mlx-lm reads);
    mlx-lm 0.32.2 takes the vocabulary size from the top level (262144 when absent)."""
    text = dict(cfg)
    per_layer = text.pop("per_layer_config")
    for key, hub_key in (("head_dim", "global_head_dim"), ("num_key_value_heads", "num_global_key_value_heads")):
        values = {v.get(key) for v in per_layer.values()}
        assert len(values) == 1, per_layer
        value = values.pop()
        if value is not None:
            text[hub_key] = value
    assert all(set(v) <= {"head_dim", "num_key_value_heads"} for v in per_layer.values()), per_layer
    text.pop("architectures", None)
    return dict(sorted({"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4", "text_config": text,
                        "tie_word_embeddings": text["tie_word_embeddings"], "vocab_size": text["vocab_size"],
                        "torch_dtype": text.get("torch_dtype", "float32")}.items()))


def rewrite_weights(d: Path, fn):
    from safetensors.numpy import load_file
    tensors = load_file(str(d / "model.safetensors"))
    save_file(fn(tensors), str(d / "model.safetensors"), metadata={"format": "pt"})


def make_gpt_oss_mxfp4(hub_dir: Path, tmp: Path, name: str) -> Path:
    """The experts of the mlx-layout checkpoint quantised with MLX's mxfp4 mode
    and stored as OpenAI ships gpt-oss: `*_blocks` uint8 [E, out, in/32, 16] and
    `*_scales` uint8 [E, out, in/32], gate/up rows interleaved into gate_up_proj,
    `quantization_config: {quant_method: mxfp4}`; the rest stays float32."""
    from safetensors.numpy import load_file
    d = tmp / f"{name}_mxfp4"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(hub_dir, d)
    t = load_file(str(d / "model.safetensors"))
    out = {}

    def q(w):
        wq, s = mx.quantize(mx.array(w), group_size=32, bits=4, mode="mxfp4")
        E, O, _ = w.shape
        blocks = np.array(wq).view(np.uint8).reshape(E, O, -1, 16)
        return blocks, np.array(s)

    def interleave(a, b):
        o = np.empty((a.shape[0], a.shape[1] * 2) + a.shape[2:], dtype=a.dtype)
        o[:, ::2], o[:, 1::2] = a, b
        return o

    for k, v in t.items():
        if k.endswith("experts.gate_proj.weight"):
            p = k[: -len("gate_proj.weight")]
            (gb, gs), (ub, us) = q(v), q(t[p + "up_proj.weight"])
            out[p + "gate_up_proj_blocks"], out[p + "gate_up_proj_scales"] = interleave(gb, ub), interleave(gs, us)
            out[p + "gate_up_proj_bias"] = interleave(t[p + "gate_proj.bias"], t[p + "up_proj.bias"])
        elif k.endswith("experts.down_proj.weight"):
            p = k[: -len("down_proj.weight")]
            out[p + "down_proj_blocks"], out[p + "down_proj_scales"] = q(v)
            out[p + "down_proj_bias"] = t[p + "down_proj.bias"]
        elif ".experts." in k:
            continue
        else:
            out[k] = v
    save_file(out, str(d / "model.safetensors"), metadata={"format": "pt"})
    cfg = read_json(d / "config.json")
    cfg["quantization_config"] = {"quant_method": "mxfp4"}
    write_json(d / "config.json", cfg)
    return d


def save_both_dialects(case, model, tmp: Path):
    """tf5 dir: exactly what transformers 5 wrote; hub dir: same weights, config
    rewritten into the hub dialect."""
    name = case["name"]
    tf5_dir, hub_dir = tmp / f"{name}_tf5", tmp / f"{name}_hub"
    for d in (tf5_dir, hub_dir):
        if d.exists():
            shutil.rmtree(d)
    save_hf_dir(model, tf5_dir)
    shutil.copytree(tf5_dir, hub_dir)
    hub_cfg = read_json(tf5_dir / "config.json")
    if case.get("hub_keeps_rope_parameters"):
        # Ministral 3 was published with transformers 5: its hub configs (and
        # mlx-lm) use rope_parameters; only dtype gets the hub name.
        hub_cfg["torch_dtype"] = hub_cfg.pop("dtype")
        hub_cfg = dict(sorted(hub_cfg.items()))
    else:
        hub_cfg = to_hub_dialect(hub_cfg)
    if case.get("hub_weights"):
        rewrite_weights(hub_dir, globals()[case["hub_weights"]])
    if case.get("hub_config"):
        hub_cfg = globals()[case["hub_config"]](hub_cfg)
    if case.get("hub_drop_head_dim"):
        # old hub configs leave head_dim out when it is hidden_size / num_attention_heads
        assert hub_cfg["head_dim"] * hub_cfg["num_attention_heads"] == hub_cfg["hidden_size"]
        del hub_cfg["head_dim"]
    write_json(hub_dir / "config.json", hub_cfg)
    return tf5_dir, hub_dir


def make_quantized(hub_dir: Path, tmp: Path, name: str, bits: int, gs: int) -> Path:
    qdir = tmp / f"{name}_q{bits}"
    if qdir.exists():
        shutil.rmtree(qdir)
    mlx_convert(hub_dir, qdir, bits, gs)
    return qdir


def make_bf16(model, tmp: Path, name: str, case) -> Path:
    bdir = tmp / f"{name}_bf16"
    if bdir.exists():
        shutil.rmtree(bdir)
    save_hf_dir(copy.deepcopy(model).to(torch.bfloat16), bdir)
    cfg = to_hub_dialect(read_json(bdir / "config.json"))
    assert cfg["torch_dtype"] == "bfloat16", cfg["torch_dtype"]
    write_json(bdir / "config.json", cfg)
    return bdir


def pick_model(case, tmp: Path, log):
    """Try seeds seed, seed+1, ... until every greedy continuation stored for this
    case (dense, quantised, bf16) is varied and has top-1/top-2 margins wide
    enough to be robust to rounding differences between engines."""
    name = case["name"]
    arch = case["config"]["model_type"]
    cfg = make_config(case)
    V = cfg.vocab_size
    for k in range(MAX_SEED_TRIES):
        seed = case["seed"] + k
        model = build_model(cfg, arch, seed, case)
        rng = np.random.default_rng(seed)
        inputs = [int(t) for t in rng.integers(3, V, size=PROMPT_LEN)]
        tf5_dir, hub_dir = save_both_dialects(case, model, tmp)
        variants = {}
        ok = True
        todo = [("dense", hub_dir, MIN_MARGIN, MIN_DISTINCT_GREEDY)]
        for bits, gs in case.get("quantize", []):
            todo.append((f"q{bits}", (bits, gs), MIN_MARGIN, MIN_DISTINCT_GREEDY // 2))
        if case.get("bf16_copy"):
            todo.append(("bf16", None, MIN_MARGIN_BF16, MIN_DISTINCT_GREEDY // 2))
        if case.get("mxfp4_copy"):
            todo.append(("mxfp4", None, MIN_MARGIN, MIN_DISTINCT_GREEDY // 2))
        report = []
        for kind, src, min_margin, min_distinct in todo:
            if kind.startswith("q"):
                d = make_quantized(hub_dir, tmp, name, *src)
            elif kind == "mxfp4":
                d = make_gpt_oss_mxfp4(hub_dir, tmp, name)
            elif kind == "bf16":
                d = make_bf16(model, tmp, name, case)
            else:
                d = src
            mlxm = mlx_load(d)
            greedy, lps = mlx_greedy(mlxm, inputs)
            m = float(margins(lps).min())
            distinct = len(set(greedy))
            report.append(f"{kind}: distinct {distinct} margin {m:.3f}")
            variants[kind] = dict(dir=d, model=mlxm, greedy=greedy, lps=lps)
            if distinct < min_distinct or m < min_margin:
                ok = False
                break
        log(f"  seed {seed}: " + ", ".join(report) + ("  -> ok" if ok else ""))
        if ok:
            return cfg, model, seed, inputs, tf5_dir, hub_dir, k + 1, variants
    raise SystemExit(f"{case['name']}: no seed in {MAX_SEED_TRIES} tries met the criteria")


def run_dense(case, out: Path, tmp: Path, log, summary):
    name = case["name"]
    arch = case["config"]["model_type"]
    log(f"[{name}]")
    cfg, model, seed, inputs, tf5_dir, hub_dir, tries, variants = pick_model(case, tmp, log)

    ref = tf_logits(model, inputs)
    tf_greedy_toks = tf_greedy(model, inputs)

    # transformers must read both dialects to the same model
    dialect_check = {}
    for dialect, d in (("hub", hub_dir), ("tf5", tf5_dir)):
        if dialect == "hub" and case.get("hub_weights"):
            continue  # mlx-lm's tensor layout: transformers reads only the tf5 copy
        m2 = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
        dialect_check[dialect] = compare(tf_logits(m2, inputs), ref)["max_abs"]
    assert all(v == 0.0 for v in dialect_check.values()), dialect_check

    mlxm, greedy, lps = (variants["dense"][k] for k in ("model", "greedy", "lps"))
    mlx_full = mlx_logits(mlxm, inputs)
    # cached-path logprobs vs transformers on the whole sequence
    seq = inputs + greedy
    tf_seq = tf_logits(model, seq[:-1])[len(inputs) - 1:]
    tf_seq_lp = tf_seq - np.log(np.exp(tf_seq - tf_seq.max(-1, keepdims=True)).sum(-1, keepdims=True)) - tf_seq.max(-1, keepdims=True)
    # mlx-lm 0.32.2 soft-caps Gemma 4's logits, not Gemma 3's
    softcap = getattr(cfg, "final_logit_softcapping", None) if arch.startswith("gemma3") else None
    mlx_cmp_ref = ref
    if softcap:
        # mlx-lm 0.32.2's gemma3_text has no final soft-capping: compare against
        # transformers' logits before capping (atanh of the capped ones).
        mlx_cmp_ref = softcap * np.arctanh(np.clip(ref / softcap, -1 + 1e-7, 1 - 1e-7))
        tf_seq_uncapped = softcap * np.arctanh(np.clip(tf_seq / softcap, -1 + 1e-7, 1 - 1e-7))
        tf_seq_lp = tf_seq_uncapped - np.log(np.exp(tf_seq_uncapped - tf_seq_uncapped.max(-1, keepdims=True)).sum(-1, keepdims=True)) - tf_seq_uncapped.max(-1, keepdims=True)
    err_full = compare(mlx_full, mlx_cmp_ref)
    err_cached = compare(lps, tf_seq_lp)
    agree = greedy == tf_greedy_toks
    first_mismatch = next((i for i, (a, b) in enumerate(zip(greedy, tf_greedy_toks)) if a != b), None)
    min_margin = float(margins(lps).min())

    checks = {
        "mlx_lm_vs_transformers_prompt_logits": err_full,
        "mlx_lm_cached_vs_transformers_greedy_logprobs": err_cached,
        "greedy_matches_transformers_argmax": agree,
        "transformers_greedy": tf_greedy_toks,
        "first_greedy_mismatch": first_mismatch,
        "min_greedy_margin": min_margin,
        "logits_std": float(ref.std()),
        "transformers_reads_both_dialects_identically": not case.get("hub_weights"),
    }
    if softcap:
        checks["note"] = ("mlx-lm 0.32.2 gemma3_text ignores final_logit_softcapping; its logits were compared "
                          "with transformers' uncapped logits. `logits` here are transformers' (capped).")
    if "ablation" in case:
        key, val = case["ablation"]
        c2 = make_config(case)
        setattr(c2, key, val)
        if key == "rope_parameters":
            c2.rope_parameters = val
        m2 = build_model(c2, arch, seed, case)
        checks[f"effect_of_{key}"] = {
            "changed_to": val,
            "max_abs_logit_change": float(np.abs(tf_logits(m2, inputs) - ref).max()),
        }
    if case.get("tf5_copy"):
        try:
            r = compare(mlx_logits(mlx_load(tf5_dir), inputs), mlx_cmp_ref)
        except Exception as e:  # mlx-lm may not even run on it
            r = {"error": f"{type(e).__name__}: {e}"}
        checks["mlx_lm_reading_tf5_dialect_vs_transformers"] = r

    base_meta = {
        "architecture": arch,
        "what": case["what"],
        "seed": seed,
        "seed_tries": tries,
        "init": "see init_weights() in scripts/oracle/make_fixtures.py",
        "inputs_rng": f"numpy.random.default_rng({seed}).integers(3, vocab, {PROMPT_LEN})",
        "dtype": "float32",
        "logits_source": "transformers",
        "logits_note": "transformers float32 (eager attention, CPU), every prompt position",
        "greedy_source": "mlx-lm",
        "greedy_note": "mlx_lm.generate.generate_step on this directory, argmax sampler, KV cache",
        "checks": checks,
    }
    d = write_case(out, name, hub_dir, inputs, ref, greedy, dict(base_meta, config_dialect="hub"))
    summary.append(summarize(name, d, checks))
    if case.get("tf5_copy"):
        d = write_case(out, name + "_tf5", tf5_dir, inputs, ref, greedy, dict(
            base_meta, config_dialect="tf5",
            greedy_source=f"mlx-lm on ../{name} (same weights, hub-dialect config)",
            greedy_note=("mlx-lm 0.32.2 misreads the transformers-5 config dialect (rope_parameters / layer_types), "
                         f"so the greedy reference is taken from the hub-dialect copy `{name}` with identical weights; "
                         "see checks.mlx_lm_reading_tf5_dialect_vs_transformers for how far off mlx-lm is on this directory"),
            same_weights_as=name,
        ))
        summary.append(summarize(name + "_tf5", d, checks))

    for bits, gs in case.get("quantize", []):
        qname = f"{name}_q{bits}"
        v = variants[f"q{bits}"]
        qdir, qm, qgreedy, qlps = v["dir"], v["model"], v["greedy"], v["lps"]
        qlogits = mlx_logits(qm, inputs)
        qchecks = {
            "quantized_vs_dense_transformers_logits": compare(qlogits, ref),
            "mlx_lm_cached_vs_uncached_logprobs_first_step": float(np.abs(
                qlps[0] - (qlogits[-1] - np.log(np.exp(qlogits[-1] - qlogits[-1].max()).sum()) - qlogits[-1].max())).max()),
            "min_greedy_margin": float(margins(qlps).min()),
            "greedy_same_as_dense": qgreedy == greedy,
        }
        d = write_case(out, qname, qdir, inputs, qlogits, qgreedy, dict(
            base_meta, config_dialect="mlx (hub dialect + quantization)", dtype="float32 scales/biases",
            quantization={"bits": bits, "group_size": gs, "mode": "affine"},
            made_by=f"mlx_lm.convert(<{name}>, quantize=True, q_bits={bits}, q_group_size={gs})",
            quantized_from=name,
            logits_source="mlx-lm",
            logits_note="mlx-lm 0.32.2 float32 logits of this quantised model (transformers cannot load MLX quantisation)",
            checks=qchecks,
        ))
        summary.append(summarize(qname, d, qchecks))

    if case.get("mxfp4_copy"):
        xname = f"{name}_mxfp4"
        v = variants["mxfp4"]
        xlogits = mlx_logits(v["model"], inputs)
        xchecks = {
            "mxfp4_vs_dense_transformers_logits": compare(xlogits, ref),
            "min_greedy_margin": float(margins(v["lps"]).min()),
            "greedy_same_as_dense": v["greedy"] == greedy,
        }
        d = write_case(out, xname, v["dir"], inputs, xlogits, v["greedy"], dict(
            base_meta, config_dialect="hub + quantization_config {quant_method: mxfp4}",
            quantization={"bits": 4, "group_size": 32, "mode": "mxfp4", "modules": "experts only"},
            made_by="make_gpt_oss_mxfp4(): mx.quantize(mode='mxfp4') of the experts, stored as OpenAI's *_blocks/*_scales",
            quantized_from=name,
            logits_source="mlx-lm",
            logits_note="mlx-lm 0.32.2 float32 logits of this checkpoint (MXFP4 experts through mx.gather_qmm)",
            checks=xchecks,
        ))
        summary.append(summarize(xname, d, dict(xchecks, quantized_vs_dense_transformers_logits=xchecks["mxfp4_vs_dense_transformers_logits"])))

    if case.get("bf16_copy"):
        bname = f"{name}_bf16"
        v = variants["bf16"]
        bdir, bm, bgreedy, blps = v["dir"], v["model"], v["greedy"], v["lps"]
        blogits = mlx_logits(bm, inputs)
        # float32 computation on the bf16-rounded weights
        m32 = copy.deepcopy(model).to(torch.bfloat16).to(torch.float32)
        f32 = tf_logits(m32, inputs)
        bchecks = {
            "mlx_lm_bf16_vs_transformers_f32_of_bf16_weights": compare(blogits, f32),
            "min_greedy_margin": float(margins(blps).min()),
            "greedy_same_as_float32_case": bgreedy == greedy,
            "greedy_matches_transformers_f32_argmax": bgreedy == tf_greedy(m32, inputs),
        }
        d = write_case(out, bname, bdir, inputs, blogits, bgreedy, dict(
            base_meta, config_dialect="hub", dtype="bfloat16",
            weights_from=f"{name} cast to bfloat16",
            logits_source="mlx-lm",
            logits_note=("mlx-lm 0.32.2 logits computed in bfloat16 (its native dtype for these weights), stored as "
                         "float32; logits_f32 = transformers float32 on the bf16 weights upcast to float32"),
            checks=bchecks,
        ), extra={"logits_f32": f32.astype(np.float32)})
        summary.append(summarize(bname, d, bchecks))


def summarize(name, d: Path, checks):
    size = sum(f.stat().st_size for f in d.iterdir())
    return dict(case=name, bytes=size, checks=checks)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "models"))
    ap.add_argument("--only", nargs="*", help="case names (dense base names) to build")
    args = ap.parse_args()

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    mx.set_default_device(mx.cpu)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    summary = []
    with tempfile.TemporaryDirectory(prefix="gomlx-oracle-") as tmp:
        for case in DENSE_CASES:
            if args.only and case["name"] not in args.only:
                continue
            run_dense(case, out, Path(tmp), log, summary)
    log("")
    log(f"{'case':28} {'bytes':>9}  mlx-lm vs transformers (max_rel / max_abs)  greedy==tf  min margin")
    for s in summary:
        c = s["checks"]
        e = c.get("mlx_lm_vs_transformers_prompt_logits") or c.get("mlx_lm_bf16_vs_transformers_f32_of_bf16_weights") \
            or c.get("quantized_vs_dense_transformers_logits")
        g = c.get("greedy_matches_transformers_argmax", c.get("greedy_same_as_dense", c.get("greedy_matches_transformers_f32_argmax")))
        log(f"{s['case']:28} {s['bytes']:9d}  {e['max_rel']:.3e} / {e['max_abs']:.3e}               {str(g):5}       {c['min_greedy_margin']:.4f}")


if __name__ == "__main__":
    main()
