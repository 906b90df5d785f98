#!/usr/bin/env python3
"""Reference fixtures for the GGUF tests, from transformers loading the GGUF files.

Run from the repository root after scripts/fetch-models and scripts/gguf-oracle/setup-venv:
    .cache/gguf-oracle-venv/bin/python scripts/gguf-oracle/make_references.py
Writes small JSON files into tests/fixtures/gguf/ (committed); the Rust tests read them.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
import gguf
import tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, ".cache", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")
SMOL = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = "gemma-3-270m-q4_k_m.gguf"

VERSIONS = {
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "gguf": getattr(gguf, "__version__", "0.19.0"),
    "tokenizers": tokenizers.__version__,
}

# ASCII, accents, CJK, emoji, whitespace runs, special tokens, code, numbers.
CORPUS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space and trailing space ",
    "Ünïcödé àccênts: café, naïve, Straße, Ærøskøbing, İstanbul",
    "日本語のテキストと中文文本，还有한국어 문장.",
    "Emoji: 😀🎉👍🏽 and flags 🇫🇷🇯🇵, ZWJ 👩‍👩‍👧‍👦",
    "tabs\tand\nnewlines\n\n\nand    four spaces,  two,   three",
    "    indented code:\n\tdef f(x):\n\t\treturn x**2  # comment",
    "Numbers 1234567890, 3.14159, -42, 1e-9, $1,000,000",
    "It's we'll they've I'M DON'T",
    "<|im_start|>user\nHi<|im_end|>\n<|endoftext|>",
    "<bos><start_of_turn>user\nHi<end_of_turn>\n<eos>",
    "Mixed: Привет мир! مرحبا بالعالم שלום עולם नमस्ते दुनिया",
    "URL https://example.com/a/b?c=d&e=f#g and email a.b@c.de",
    "",
    " ",
    "\n",
    "a" * 50,
    "ʻOkina, Ǆ, ﬁ ligature, ½, Ⅻ, ㈱, ℃",
]


def f32(x):
    return float(np.float32(x))


def checksum(t, indices):
    a = t.detach().to(torch.float32).contiguous().numpy()
    flat = a.reshape(-1)
    return {
        "shape": list(a.shape),
        "sum": float(flat.astype(np.float64).sum()),
        "first8": [f32(v) for v in flat[:8]],
        "at": {str(i): f32(flat[i]) for i in indices if i < flat.size},
    }


def tokenizer_refs(name, tok):
    rows = []
    for text in CORPUS:
        rows.append({
            "text": text,
            "ids": tok(text).input_ids,  # with the tokenizer's default special tokens
            "ids_no_special": tok(text, add_special_tokens=False).input_ids,
        })
    return {
        "file": name,
        "versions": VERSIONS,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "corpus": rows,
    }


def greedy(model, tok, ids, n=32):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, num_beams=1,
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    new = out[0, len(ids):].tolist()
    return new, tok.decode(new)


def write(name, obj):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", os.path.join(OUT, name))


def main():
    torch.manual_seed(0)
    idx = [0, 1, 7, 63, 64, 100, 575, 1000, 4095, 12345]

    # --- SmolLM2 (llama, Q4_1 matrices, Q8_0 embedding, gpt2 tokenizer) ---
    tok = AutoTokenizer.from_pretrained(MODELS, gguf_file=SMOL)
    write("smollm2_tokenizer.json", tokenizer_refs(SMOL, tok))
    model = AutoModelForCausalLM.from_pretrained(MODELS, gguf_file=SMOL, dtype=torch.float32).eval()
    sd = model.state_dict()
    tensors = {}
    for n in ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
              "model.layers.0.self_attn.v_proj.weight", "model.layers.29.self_attn.q_proj.weight",
              "model.layers.0.mlp.down_proj.weight", "model.embed_tokens.weight",
              "model.layers.0.input_layernorm.weight", "model.norm.weight"]:
        tensors[n] = checksum(sd[n], idx)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(rendered, add_special_tokens=False).input_ids
    new, text = greedy(model, tok, ids)
    write("smollm2_reference.json", {
        "file": SMOL, "versions": VERSIONS, "dtype": "float32",
        "config": {k: v for k, v in model.config.to_dict().items() if isinstance(v, (int, float, str, bool)) or v is None},
        "tensors": tensors,
        "chat": {"messages": messages, "rendered": rendered, "ids": ids, "greedy_ids": new, "greedy_text": text},
    })
    del model, sd

    # --- Gemma 3 270M (Q8_0, Q5_0, Q4_K, Q6_K, F32; SentencePiece tokenizer) ---
    tok = AutoTokenizer.from_pretrained(MODELS, gguf_file=GEMMA)
    write("gemma3_tokenizer.json", tokenizer_refs(GEMMA, tok))
    model = AutoModelForCausalLM.from_pretrained(MODELS, gguf_file=GEMMA, dtype=torch.float32).eval()
    sd = model.state_dict()
    tensors = {}
    for n in ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
              "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
              "model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.gate_proj.weight",
              "model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
              "model.layers.0.post_attention_layernorm.weight", "model.layers.0.pre_feedforward_layernorm.weight",
              "model.layers.0.post_feedforward_layernorm.weight", "model.layers.0.self_attn.q_norm.weight",
              "model.layers.0.self_attn.k_norm.weight", "model.norm.weight"]:
        tensors[n] = checksum(sd[n], idx)
    prompt = "The capital of France is"
    ids = tok(prompt).input_ids
    new, text = greedy(model, tok, ids)
    write("gemma3_reference.json", {
        "file": GEMMA, "versions": VERSIONS, "dtype": "float32",
        "config": {k: v for k, v in model.config.to_dict().items() if isinstance(v, (int, float, str, bool)) or v is None},
        "tensors": tensors,
        "plain": {"prompt": prompt, "ids": ids, "greedy_ids": new, "greedy_text": text},
    })


if __name__ == "__main__":
    sys.exit(main())
