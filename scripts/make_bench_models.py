"""Random-weight models with the real shapes of Qwen3-0.6B, Llama-3.2-1B, Gemma-3-1B
(and, when named, SmolLM2-135M and bf16 Gemma) for `gomlx bench`, in mlx-lm's format.
Run through scripts/make-bench-models (which sets up the venv and tokenizers); any
Python with mlx and mlx-lm runs it directly: `python scripts/make_bench_models.py [NAME...]`.
"""
import json, shutil, sys
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_map
from mlx_lm.utils import _get_classes, quantize_model, save_config, save_model

OUT = Path(".cache/bench-models")
TOK = Path(".cache/tokenizers")

CONFIGS = {
    # Qwen/Qwen3-0.6B config.json
    "qwen3-0.6b": ("qwen3", {
        "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 1024,
        "num_hidden_layers": 28, "intermediate_size": 3072, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6, "vocab_size": 151936,
        "max_position_embeddings": 40960, "rope_theta": 1000000.0, "tie_word_embeddings": True,
        "attention_bias": False, "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151645,
    }),
    # meta-llama/Llama-3.2-1B-Instruct config.json
    "llama-3.2-1b": ("llama3_1", {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
        "num_hidden_layers": 16, "intermediate_size": 8192, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 64, "rms_norm_eps": 1e-5, "vocab_size": 128256,
        "max_position_embeddings": 131072, "rope_theta": 500000.0, "tie_word_embeddings": True,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    }),
    # SmolLM2-135M-Instruct (the config `gomlx convert` writes from its GGUF)
    "smollm2-135m": ("smollm2", {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
        "num_hidden_layers": 30, "intermediate_size": 1536, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 64, "rms_norm_eps": 1e-5, "vocab_size": 49152,
        "max_position_embeddings": 8192, "rope_theta": 100000.0, "tie_word_embeddings": True,
        "attention_bias": False, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
    }),
    # google/gemma-3-1b-it config.json
    "gemma-3-1b": ("gemma3", {
        "model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"], "hidden_size": 1152,
        "num_hidden_layers": 26, "intermediate_size": 6912, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 256, "rms_norm_eps": 1e-6, "vocab_size": 262144,
        "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
        "sliding_window": 512, "sliding_window_pattern": 6, "query_pre_attn_scalar": 256,
        "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
        "final_logit_softcapping": None, "bos_token_id": 2, "eos_token_id": [1, 106],
    }),
    # Qwen/Qwen3-30B-A3B config.json with 2 of its 48 layers (the MoE rows of issue 23: real
    # expert shapes, 128 experts of 768, 8 per token; the layer count fits this machine's memory)
    "qwen3-moe-2l": ("qwen3", {
        "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 2048,
        "num_hidden_layers": 2, "intermediate_size": 6144, "moe_intermediate_size": 768,
        "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": True, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
        "rms_norm_eps": 1e-6, "vocab_size": 151936, "max_position_embeddings": 40960,
        "rope_theta": 1000000.0, "tie_word_embeddings": False, "attention_bias": False,
        "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151645,
    }),
    # openai/gpt-oss-20b config.json with 2 of its 24 layers (one sliding, one full): 32 experts
    # of 2880, 4 per token, attention sinks. The vocabulary is Qwen3's (its tokenizer is the one
    # packed), 151 936 rows instead of 201 088: the expert shapes are what these rows measure.
    "gpt-oss-2l": ("qwen3", {
        "model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"], "hidden_size": 2880,
        "num_hidden_layers": 2, "intermediate_size": 2880, "num_local_experts": 32,
        "num_experts_per_tok": 4, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
        "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"],
        "rms_norm_eps": 1e-5, "vocab_size": 151936, "max_position_embeddings": 131072,
        "rope_theta": 150000, "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
        "beta_slow": 1.0, "original_max_position_embeddings": 4096, "truncate": False},
        "tie_word_embeddings": False, "swiglu_limit": 7.0, "bos_token_id": 151643, "eos_token_id": 151645,
    }),
    # Qwen/Qwen3.5-0.8B's text config, all 24 layers (18 gated delta, 6 gated full attention):
    # the hybrid rows of issue 23. The vocabulary is Qwen3's (its tokenizer is the one packed),
    # 151 936 rows instead of 248 320; the layers are the real ones.
    "qwen3.5-0.8b": ("qwen3", {
        "model_type": "qwen3_5", "architectures": ["Qwen3_5ForCausalLM"], "hidden_size": 1024,
        "num_hidden_layers": 24, "intermediate_size": 3584, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 256, "rms_norm_eps": 1e-6, "vocab_size": 151936,
        "max_position_embeddings": 262144, "tie_word_embeddings": True, "attention_bias": False,
        "full_attention_interval": 4, "linear_num_key_heads": 16, "linear_num_value_heads": 16,
        "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                            "mrope_section": [11, 11, 10], "mrope_interleaved": True},
        "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151645,
    }),
    # Qwen/Qwen3-8B config.json: fits one GPU (tensor-parallel scaling, docs/distributed.md).
    "qwen3-8b": ("qwen3", {
        "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 4096,
        "num_hidden_layers": 36, "intermediate_size": 12288, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6, "vocab_size": 151936,
        "max_position_embeddings": 40960, "rope_theta": 1000000.0, "tie_word_embeddings": False,
        "attention_bias": False, "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151645,
    }),
    # meta-llama/Llama-3.1-70B-Instruct config.json: 141 GB in bf16, more than one GPU holds.
    "llama-3.1-70b": ("llama3_1", {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8192,
        "num_hidden_layers": 80, "intermediate_size": 28672, "num_attention_heads": 64,
        "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-5, "vocab_size": 128256,
        "max_position_embeddings": 131072, "rope_theta": 500000.0, "tie_word_embeddings": False,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "hidden_act": "silu", "bos_token_id": 128000, "eos_token_id": 128009,
    }),
}
WANT = [("qwen3-0.6b", "bf16"), ("qwen3-0.6b", "4bit"), ("llama-3.2-1b", "bf16"),
        ("llama-3.2-1b", "4bit"), ("gemma-3-1b", "4bit")]

# Named on the command line only (the GPU benchmark's extra rows): bf16 Gemma and
# random-weight SmolLM2-shaped models (same timing as the real weights).
EXTRA = [("gemma-3-1b", "bf16"), ("smollm2-135m", "bf16"), ("smollm2-135m", "4bit"), ("qwen3-moe-2l", "fp32"),
         ("qwen3-moe-2l", "bf16"), ("qwen3-moe-2l", "4bit"), ("gpt-oss-2l", "fp32"), ("gpt-oss-2l", "bf16"), ("gpt-oss-2l", "mxfp4"),
         ("qwen3.5-0.8b", "bf16"), ("qwen3.5-0.8b", "4bit"), ("qwen3-8b", "bf16"), ("llama-3.1-70b", "bf16"),
         ("llama-3.1-70b", "4bit")]

only = set(sys.argv[1:])
mx.random.seed(0)
for base, kind in WANT + [e for e in EXTRA if f"{e[0]}-{e[1]}" in only]:
    name = f"{base}-{kind}"
    if only and name not in only:
        continue
    out = OUT / name
    index = out / "model.safetensors.index.json"
    # Written before the lm_head fix below: a tied model with its own head.
    stale = CONFIGS[base][1].get("tie_word_embeddings") and index.is_file() and any(k.startswith("lm_head.") for k in json.loads(index.read_text())["weight_map"])
    if not stale and (out / "config.json").is_file() and (out / "tokenizer.json").is_file() and any(out.glob("*.safetensors")):
        print(f"{name}: present", file=sys.stderr)
        continue
    tok_name, config = CONFIGS[base]
    # float32 where asked: MLX 0.32.2's CPU gather_mm (mixture of experts) takes float32 only.
    dtype = mx.float32 if kind == "fp32" else mx.bfloat16
    config = dict(config, torch_dtype="float32" if kind == "fp32" else "bfloat16")
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    # mlx-lm's Gemma 3 builds an lm_head even when the config ties it (its loader
    # drops it only when the file has none); saved, it would give mlx-lm its own
    # random output projection while transformers and gomlx use the embeddings.
    if config.get("tie_word_embeddings") and "lm_head" in model:
        model.pop("lm_head")
    # Random init (mlx.nn defaults), small enough that activations stay finite.
    model.update(tree_map(lambda p: (p * 0.02 if p.ndim >= 2 else p).astype(dtype), model.parameters()))
    mx.eval(model.parameters())
    if kind == "4bit":
        model, config = quantize_model(model, config, group_size=64, bits=4)
    elif kind == "mxfp4":
        model, config = quantize_model(model, config, group_size=32, bits=4, mode="mxfp4")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_model(out, model)
    save_config(config, out / "config.json")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOK / tok_name / f, out / f)
    print(f"{name}: written to {out}", file=sys.stderr)
    del model
    mx.clear_cache()
