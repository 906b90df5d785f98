"""Writes target/soak/tiny: llama_tied's fixture weights with the embedding cut to
the 102 tokens of the fixtures' character tokenizer (tests/fixtures/lora/tokenizer),
so every generated id decodes. A fast model for the soak's memory figures: a leak
per request or per token shows the same on it as on a large model."""
import json
import os
import shutil
import sys

import mlx.core as mx

root = sys.argv[1]
out = os.path.join(root, "target", "soak", "tiny")
os.makedirs(out, exist_ok=True)
src = os.path.join(root, "tests", "fixtures", "models", "llama_tied")
tok = os.path.join(root, "tests", "fixtures", "lora", "tokenizer")
w = mx.load(os.path.join(src, "model.safetensors"))
vocab = len(json.load(open(os.path.join(tok, "tokenizer.json")))["model"]["vocab"])
w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"][:vocab]
mx.save_safetensors(os.path.join(out, "model.safetensors"), w, metadata={"format": "mlx"})
cfg = json.load(open(os.path.join(src, "config.json")))
cfg["vocab_size"] = vocab
cfg["bos_token_id"], cfg["eos_token_id"] = 1, 2
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(tok, f), os.path.join(out, f))
print(out)
