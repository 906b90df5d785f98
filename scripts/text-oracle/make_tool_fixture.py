#!/usr/bin/env python3
"""Write the tool-call round-trip fixture (tests/fixtures/tools/qwen3_bytes/).

A model directory for the C, Go and Swift tool-call tests: the random-weight
qwen3_qknorm fixture (config.json and model.safetensors are symlinks to it)
with a byte-level tokenizer (ids 0..254 are the bytes 0x00..0xFE, 255 is
<|eos|>) and Qwen 3's own chat template, so the model writes Hermes
<tool_call> blocks. tool_reference.json holds what transformers'
apply_chat_template renders for the conversation the tests build (the oracle),
and the call a forced tool_choice must produce (the renders also as\nfirst_rendered.txt and round_trip_rendered.txt).

Re-run (from the repository root), with the pinned packages of requirements.txt:

    scripts/fetch-tokenizers
    python3 scripts/text-oracle/make_tool_fixture.py
"""

import json
import os

from transformers import AutoTokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "tools", "qwen3_bytes")
QWEN3 = os.path.join(ROOT, ".cache", "tokenizers", "qwen3", "tokenizer_config.json")


def byte_char(b):
    """GPT-2's byte-level alphabet."""
    printable = lambda x: 0x21 <= x <= 0x7E or 0xA1 <= x <= 0xAC or 0xAE <= x <= 0xFF
    if printable(b):
        return chr(b)
    return chr(256 + sum(1 for x in range(b) if not printable(x)))


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "enum": ["Paris"]}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}

FIRST = [{"role": "user", "content": "Weather in Paris?"}]
ROUND_TRIP = FIRST + [
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temperature\": 21.5}"},
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in ["config.json", "model.safetensors"]:
        link = os.path.join(OUT, f)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.join("..", "..", "models", "qwen3_qknorm", f), link)
    vocab = {byte_char(b): b for b in range(255)}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": 255, "content": "<|eos|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": vocab, "merges": [],
        },
    }
    with open(os.path.join(OUT, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    template = json.load(open(QWEN3))["chat_template"]
    with open(os.path.join(OUT, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|eos|>", "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template}, f, indent=1)

    t = AutoTokenizer.from_pretrained(OUT)
    first = t.apply_chat_template(FIRST, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    round_trip = t.apply_chat_template(ROUND_TRIP, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    ref = {
        "oracle": "transformers " + __import__("transformers").__version__ + " apply_chat_template",
        "tools": TOOLS,
        "first": FIRST,
        "first_rendered": first,
        "first_ids": t.encode(first, add_special_tokens=False),
        "call": CALL,
        "round_trip": ROUND_TRIP,
        "round_trip_rendered": round_trip,
    }
    with open(os.path.join(OUT, "tool_reference.json"), "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
        f.write("\n")
    # The same renders as plain files, for the C harness (which has no JSON parser).
    for name, text in [("first_rendered.txt", first), ("round_trip_rendered.txt", round_trip)]:
        with open(os.path.join(OUT, name), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
