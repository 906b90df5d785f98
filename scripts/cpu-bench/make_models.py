#!/usr/bin/env python3
"""Random-weight bf16 checkpoints with the real shapes of four small models.

Writes <out>/<name>/{config.json, model.safetensors} (Hugging Face layout,
bfloat16, seeded) for the CPU benchmark (scripts/cpu-bench/run). Each keeps its
model's real hidden size, heads, head_dim, MLP width, vocabulary, tied
embeddings, QK-norm / bias / sliding window, but only LAYERS decoder layers, so
a 2-core machine runs mlx-lm's slow path in seconds: what a layer costs and
what the vocabulary projection costs are the real ones. Nothing is committed.
"""
import json
import sys
from pathlib import Path

import mlx.core as mx

MODELS = {
    # name: (layers, config)
    "qwen3-0.6b-shape": (4, {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "hidden_size": 1024, "intermediate_size": 3072, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 40960,
        "tie_word_embeddings": True, "attention_bias": False, "hidden_act": "silu",
    }),
    "qwen2.5-0.5b-shape": (4, {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
        "num_key_value_heads": 2, "vocab_size": 151936, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "max_position_embeddings": 32768,
        "tie_word_embeddings": True, "hidden_act": "silu",
    }),
    "llama-3.2-1b-shape": (2, {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
    }),
    "gemma-3-1b-shape": (6, {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "hidden_size": 1152, "intermediate_size": 6912, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
        "max_position_embeddings": 32768, "sliding_window": 512, "sliding_window_pattern": 6,
        "query_pre_attn_scalar": 256, "hidden_activation": "gelu_pytorch_tanh",
        "final_logit_softcapping": None, "attn_logit_softcapping": None,
        "rope_scaling": None, "tie_word_embeddings": True,
    }),
}


def tensors(cfg, layers):
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", h // nh)
    gemma = cfg["model_type"].startswith("gemma")
    qwen3 = cfg["model_type"] == "qwen3"
    bias = cfg["model_type"] == "qwen2"
    t = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    for l in range(layers):
        p = f"model.layers.{l}."
        t[p + "self_attn.q_proj.weight"] = (nh * hd, h)
        t[p + "self_attn.k_proj.weight"] = (nkv * hd, h)
        t[p + "self_attn.v_proj.weight"] = (nkv * hd, h)
        t[p + "self_attn.o_proj.weight"] = (h, nh * hd)
        if bias:
            for n, d in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
                t[p + f"self_attn.{n}_proj.bias"] = (d,)
        if qwen3 or gemma:
            t[p + "self_attn.q_norm.weight"] = (hd,)
            t[p + "self_attn.k_norm.weight"] = (hd,)
        t[p + "mlp.gate_proj.weight"] = (i, h)
        t[p + "mlp.up_proj.weight"] = (i, h)
        t[p + "mlp.down_proj.weight"] = (h, i)
        t[p + "input_layernorm.weight"] = (h,)
        t[p + "post_attention_layernorm.weight"] = (h,)
        if gemma:
            t[p + "pre_feedforward_layernorm.weight"] = (h,)
            t[p + "post_feedforward_layernorm.weight"] = (h,)
    return t


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/cpu-bench")
    mx.set_default_device(mx.cpu)
    for name, (layers, cfg) in MODELS.items():
        d = out / name
        if (d / "model.safetensors").exists():
            continue
        d.mkdir(parents=True, exist_ok=True)
        cfg = dict(cfg, num_hidden_layers=layers, torch_dtype="bfloat16")
        if cfg["model_type"] == "gemma3_text":
            # every 6th layer global, as in Gemma 3 1B
            cfg["layer_types"] = ["full_attention" if (l + 1) % 6 == 0 else "sliding_attention" for l in range(layers)]
        key = mx.random.key(sum(map(ord, name)))
        arrays = {}
        for k, (n, shape) in enumerate(sorted(tensors(cfg, layers).items())):
            if n.endswith("norm.weight"):
                # Gemma norms scale by (1 + w): keep w near 0; others near 1.
                a = mx.zeros(shape) if cfg["model_type"].startswith("gemma") else mx.ones(shape)
            elif n.endswith(".bias"):
                a = mx.zeros(shape)
            else:
                a = 0.02 * mx.random.normal(shape, key=mx.random.fold_in(key, k) if hasattr(mx.random, "fold_in") else mx.random.split(key, k + 2)[k + 1])
            arrays[n] = a.astype(mx.bfloat16)
            mx.eval(arrays[n])
        mx.save_safetensors(str(d / "model.safetensors"), arrays, metadata={"format": "pt"})
        (d / "config.json").write_text(json.dumps(cfg, indent=1))
        params = sum(a.size for a in arrays.values())
        print(f"{name}: {layers} layers, {params / 1e6:.0f}M parameters", file=sys.stderr)


if __name__ == "__main__":
    main()
