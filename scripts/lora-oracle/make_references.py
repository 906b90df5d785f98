"""LoRA references from mlx-lm (the oracle) for gomlx's training tests.

For each fixture model in tests/fixtures/models/<case>, writes
tests/fixtures/lora/<case>/:
  adapter/             an adapter in mlx-lm's own format (adapters.safetensors +
                       adapter_config.json), A and B random and non-zero, written
                       the way mlx-lm's trainer saves them
  reference.safetensors
      tokens [B, W] int32, offsets [B], lengths [B]      the batch
      loss, ntoks                                         mlx-lm's default_loss
      grad.<param>                                        nn.value_and_grad w.r.t. every lora_a/lora_b
      logits [B, W, V]                                    model(tokens) with the adapter
      gomlx_logits                                        (when gomlx_adapter/ exists) model(tokens)
                                                          with the adapter gomlx saved, loaded by
                                                          mlx-lm's load_adapters
  reference.json      the numbers above for reading, and the versions used

gomlx's loss mask is `offset <= step <= length - 1` (the last real token has no
successor to predict); mlx-lm's default_loss uses `step <= length`, which also
trains on predicting the padding token after each row. The references pass
`length - 1` to default_loss so both compute the same, correct quantity.

Run: scripts/lora-oracle/setup-venv && <venv>/bin/python scripts/lora-oracle/make_references.py
"""

import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
from mlx.utils import tree_flatten
from mlx_lm.tuner.trainer import default_loss
from mlx_lm.tuner.utils import linear_to_lora_layers, load_adapters
from mlx_lm.utils import load_model

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests/fixtures/models"
OUT = ROOT / "tests/fixtures/lora"

CASES = {
    # case: (lora keys, rank, scale, num_layers)
    "llama_tied": (["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"], 4, 2.0, 2),
    "qwen3_qknorm_q4": (["self_attn.q_proj", "self_attn.v_proj"], 4, 2.0, 2),
    "gemma3_text": (["self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.up_proj"], 2, 1.5, 3),
}

# Two rows: a full one trained on everything, a shorter one whose first 3
# tokens are a masked prompt. Width 12 (no extra padding column needed).
ROWS = [
    [5, 17, 42, 99, 3, 250, 77, 8, 64, 128, 31, 2],
    [9, 200, 13, 55, 81, 6, 190, 2],
]
OFFSETS = [0, 3]


def batch():
    w = max(len(r) for r in ROWS)
    toks = [r + [0] * (w - len(r)) for r in ROWS]
    return mx.array(toks, dtype=mx.int32), mx.array(OFFSETS, dtype=mx.int32), mx.array([len(r) for r in ROWS], dtype=mx.int32)


def make_case(case, keys, rank, scale, num_layers):
    out = OUT / case
    out.mkdir(parents=True, exist_ok=True)
    model, _ = load_model(MODELS / case)
    model.freeze()
    lora_cfg = {"rank": rank, "scale": scale, "dropout": 0.0, "keys": keys}
    linear_to_lora_layers(model, num_layers, lora_cfg)
    # Non-zero A and B so every gradient is informative.
    mx.random.seed(1234)
    params = {}
    for name, p in tree_flatten(model.trainable_parameters()):
        params[name] = mx.random.normal(p.shape, dtype=mx.float32) * (0.3 if name.endswith("lora_a") else 0.2)
    model.load_weights(list(params.items()), strict=False)
    mx.eval(model.parameters())

    adapter = out / "adapter"
    adapter.mkdir(exist_ok=True)
    mx.save_safetensors(str(adapter / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))
    cfg = {"fine_tune_type": "lora", "num_layers": num_layers, "lora_parameters": lora_cfg, "model": f"tests/fixtures/models/{case}"}
    (adapter / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    tokens, offsets, lengths = batch()
    lens = mx.stack([offsets, lengths - 1], axis=1)
    loss_and_grad = nn.value_and_grad(model, default_loss)
    (loss, ntoks), grads = loss_and_grad(model, tokens, lens)
    logits = model(tokens)
    ref = {"tokens": tokens, "offsets": offsets, "lengths": lengths, "loss": loss, "ntoks": ntoks, "logits": logits}
    for name, g in tree_flatten(grads):
        ref[f"grad.{name}"] = g

    # gomlx -> mlx-lm: an adapter gomlx saved, loaded by mlx-lm itself.
    gomlx_adapter = out / "gomlx_adapter"
    if (gomlx_adapter / "adapters.safetensors").is_file():
        m2, _ = load_model(MODELS / case)
        m2.freeze()
        load_adapters(m2, str(gomlx_adapter))
        ref["gomlx_logits"] = m2(tokens)
    mx.eval(ref)
    mx.save_safetensors(str(out / "reference.safetensors"), ref)
    info = {
        "mlx": mx.__version__,
        "mlx_lm": mlx_lm.__version__,
        "loss": loss.item(),
        "ntoks": ntoks.item(),
        "lora_parameters": lora_cfg,
        "num_layers": num_layers,
        "grads": sorted(k for k in ref if k.startswith("grad.")),
        "has_gomlx_logits": "gomlx_logits" in ref,
    }
    (out / "reference.json").write_text(json.dumps(info, indent=2) + "\n")
    print(case, "loss", loss.item(), "ntoks", ntoks.item(), "grads", len(info["grads"]), "gomlx_logits", info["has_gomlx_logits"])


def make_tokenizer():
    """A tiny character-level tokenizer with a chat template, for data tests."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors, decoders

    specials = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    chars = [chr(c) for c in range(32, 127)]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.decoder = decoders.Fuse()
    d = OUT / "tokenizer"
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    template = (
        "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    (d / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "chat_template": template}, indent=2) + "\n"
    )
    print("tokenizer", len(vocab))


if __name__ == "__main__":
    make_tokenizer()
    for case, args in CASES.items():
        if len(sys.argv) > 1 and case not in sys.argv[1:]:
            continue
        make_case(case, *args)
