#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from the
repository's fixtures and, for the GGUF targets, from the metadata of the two
GGUF models scripts/fetch-models downloads (tokenizer and config keys, the
vocabulary cut to its first tokens, small tensors of every decoded type).

Run from the repository root after scripts/fetch-models and
scripts/fetch-tokenizers; the output is committed, so the fuzz targets and the
smoke test need neither the models nor Python.
"""
import glob
import json
import os
import random
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
rng = random.Random(25)


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- GGUF reading and writing ---------------------------------------------------

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf_metadata(path):
    with open(path, "rb") as f:
        buf = f.read(64 << 20)
    pos = 4
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, pos)
    pos += 20

    def string():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", buf, pos)
        pos += 8
        s = buf[pos:pos + n].decode("utf-8")
        pos += n
        return s

    def value(ty):
        nonlocal pos
        if ty in SCALAR:
            fmt = SCALAR[ty]
            (v,) = struct.unpack_from(fmt, buf, pos)
            pos += struct.calcsize(fmt)
            return v
        if ty == 8:
            return string()
        if ty == 9:
            (et, n) = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            return (et, [value(et) for _ in range(n)])
        raise ValueError(ty)

    kv = []
    for _ in range(n_kv):
        k = string()
        (ty,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        kv.append((k, ty, value(ty)))
    return kv


def enc_value(ty, v):
    if ty in SCALAR:
        return struct.pack(SCALAR[ty], v)
    if ty == 8:
        b = v.encode("utf-8")
        return struct.pack("<Q", len(b)) + b
    if ty == 9:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(enc_value(et, x) for x in items)
    raise ValueError(ty)


# (elements per block, bytes per block) of the types the seeds use.
BLOCK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         12: (256, 144), 13: (256, 176), 14: (256, 210)}


def write_gguf(kv, tensors, align=32):
    """kv: [(key, type, value)]; tensors: [(name, dims innermost-first, ggml type)] with random data."""
    b = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, ty, v in kv:
        b += enc_value(8, k) + struct.pack("<I", ty) + enc_value(ty, v)
    datas, offset, infos = [], 0, b""
    for name, dims, ty in tensors:
        n = 1
        for d in dims:
            n *= d
        per, size = BLOCK[ty]
        nbytes = n // per * size
        data = bytes(rng.getrandbits(8) for _ in range(nbytes))
        if ty in (1, 30):  # keep f16/bf16 values finite
            data = bytes(x & 0x3F if i % 2 else x for i, x in enumerate(data))
        infos += enc_value(8, name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", ty, offset)
        datas.append((offset, data))
        offset = (offset + nbytes + align - 1) // align * align
    b += infos
    b += b"\0" * ((-len(b)) % align)
    start = len(b)
    out = bytearray(b)
    out += b"\0" * offset
    for off, data in datas:
        out[start + off:start + off + len(data)] = data
    return bytes(out)


def reduced_tokenizer_kv(kv, keep):
    """Tokenizer keys with the vocabulary cut to its first `keep` tokens."""
    d = {k: (ty, v) for k, ty, v in kv}
    out = []
    tokens = d["tokenizer.ggml.tokens"][1][1][:keep]
    vocab = set(tokens)
    for k, ty, v in kv:
        if not k.startswith("tokenizer."):
            continue
        if k in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            v = (v[0], v[1][:keep])
        elif k == "tokenizer.ggml.merges":
            merges = []
            for m in v[1]:
                l, _, r = m.partition(" ")
                if l in vocab and r in vocab and (l + r) in vocab:
                    merges.append(m)
            v = (v[0], merges)
        elif k.endswith("_token_id") and isinstance(v, int) and v >= keep:
            v = 0
        out.append((k, ty, v))
    return out


def arch_keys(arch, h, ffn, nh, nkv, hd):
    keys = [("embedding_length", 4, h), ("block_count", 4, 1), ("attention.head_count", 4, nh),
            ("attention.head_count_kv", 4, nkv), ("feed_forward_length", 4, ffn), ("context_length", 4, 256)]
    if arch == "gemma3":
        keys += [("attention.key_length", 4, hd), ("attention.value_length", 4, hd), ("attention.sliding_window", 4, 64)]
    else:
        keys += [("attention.layer_norm_rms_epsilon", 6, 1e-5), ("rope.freq_base", 6, 10000.0)]
    return keys


def model_tensors(arch, vocab, types, h, ffn, nh, nkv, hd):
    t = [("token_embd.weight", [h, vocab], types[0]), ("output_norm.weight", [h], 0)]
    blk = "blk.0."
    t += [(blk + "attn_norm.weight", [h], 0), (blk + "ffn_norm.weight", [h], 0),
          (blk + "attn_q.weight", [h, nh * hd], types[1]), (blk + "attn_k.weight", [h, nkv * hd], types[1]),
          (blk + "attn_v.weight", [h, nkv * hd], types[2]), (blk + "attn_output.weight", [nh * hd, h], types[1]),
          (blk + "ffn_gate.weight", [h, ffn], types[2]), (blk + "ffn_up.weight", [h, ffn], types[2]),
          (blk + "ffn_down.weight", [ffn, h], types[2])]
    if arch == "qwen2":
        t += [(blk + "attn_q.bias", [nh * hd], 0), (blk + "attn_k.bias", [nkv * hd], 0), (blk + "attn_v.bias", [nkv * hd], 0)]
    if arch == "gemma3":
        t += [(blk + "attn_q_norm.weight", [hd], 0), (blk + "attn_k_norm.weight", [hd], 0),
              (blk + "post_attention_norm.weight", [h], 0), (blk + "post_ffw_norm.weight", [h], 0)]
    return t


def gguf_seeds():
    models = os.path.join(ROOT, ".cache", "models")
    sources = [("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llama"), ("gemma3", "gemma-3-270m-q4_k_m.gguf", "gemma3")]
    for name, file, arch in sources:
        path = os.path.join(models, file)
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run scripts/fetch-models first")
        kv = read_gguf_metadata(path)
        for keep in (300, 1200):
            tok = reduced_tokenizer_kv(kv, keep)
            head = [("general.architecture", 8, arch)]
            put("gguf_tokenizer", f"{name}_{keep}.gguf", write_gguf(head + tok, []))
        tok = reduced_tokenizer_kv(kv, 300)
        # A gpt2 tokenizer under qwen2 as well (other pre-tokenizer regex).
        if name == "smollm2":
            q = [(k, ty, "qwen2" if k == "tokenizer.ggml.pre" else v) for k, ty, v in tok]
            put("gguf_tokenizer", "qwen2_300.gguf", write_gguf([("general.architecture", 8, "qwen2")] + q, []))
        vocab = 64
        small = reduced_tokenizer_kv(kv, vocab)
        for arch2 in ("llama", "qwen2", "gemma3"):
            for types, tag in (((0, 0, 0), "f32"), ((1, 30, 1), "f16"), ((2, 3, 8), "q4_0"), ((6, 7, 8), "q5"),
                               ((12, 1, 1), "q4k"), ((13, 1, 1), "q5k"), ((14, 1, 1), "q6k")):
                # k-quant rows are multiples of 256 elements: only the embedding is one.
                h, ffn, nh, nkv, hd = (256, 16, 2, 1, 8) if tag.endswith("k") else (32, 64, 4, 2, 8)
                meta = [("general.architecture", 8, arch2)]
                meta += [(f"{arch2}.{k}", ty, v) for k, ty, v in arch_keys(arch2, h, ffn, nh, nkv, hd)]
                meta += [(f"{arch2}.vocab_size", 4, vocab)]
                tensors = model_tensors(arch2, vocab, types, h, ffn, nh, nkv, hd)
                put("gguf", f"{name}_{arch2}_{tag}.gguf", write_gguf(meta + small, tensors))


# --- the other targets -----------------------------------------------------------

def safetensors_shrunk(path):
    """The file's header with every tensor cut to at most 2 elements per dimension."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "U8": 1, "I8": 1, "I64": 8, "U16": 2, "BOOL": 1}
    out, offset = {}, 0
    for k, v in header.items():
        if k == "__metadata__":
            out[k] = v
            continue
        shape = [min(d, 2) for d in v["shape"]]
        count = 1
        for d in shape:
            count *= d
        size = count * sizes[v["dtype"]]
        out[k] = {"dtype": v["dtype"], "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(out).encode()
    return struct.pack("<Q", len(text)) + text + bytes(offset)


def other_seeds():
    fx = os.path.join(ROOT, "tests", "fixtures")
    for cfg in sorted(glob.glob(os.path.join(fx, "models", "*", "config.json"))):
        put("config", os.path.basename(os.path.dirname(cfg)) + ".json", open(cfg, "rb").read())
    for st in sorted(glob.glob(os.path.join(fx, "models", "*", "*.safetensors"))):
        name = os.path.basename(os.path.dirname(st)) + "_" + os.path.basename(st)
        put("safetensors", name, safetensors_shrunk(st))
    for d in sorted(glob.glob(os.path.join(fx, "lora", "*", "*adapter"))):
        cfg = open(os.path.join(d, "adapter_config.json"), "rb").read()
        st = open(os.path.join(d, "adapters.safetensors"), "rb").read()
        name = os.path.basename(os.path.dirname(d)) + "_" + os.path.basename(d)
        put("adapter", name, struct.pack("<I", len(cfg)) + cfg + st)
        put("safetensors", name + ".safetensors", st)
    templates = {}
    for tc in sorted(glob.glob(os.path.join(ROOT, ".cache", "tokenizers", "*", "tokenizer_config.json"))):
        t = json.load(open(tc)).get("chat_template")
        if isinstance(t, str):
            templates[os.path.basename(os.path.dirname(tc))] = t
    t = json.load(open(os.path.join(fx, "lora", "tokenizer", "tokenizer_config.json")))["chat_template"]
    templates["lora_fixture"] = t
    templates["loops"] = ("{% for m in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{{ m.role | upper }}: "
                          "{{ m.content | trim }}{% if not loop.last %}\n{% endif %}{% endfor %}"
                          "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    templates["macros"] = ("{% macro say(x) %}[{{ x | tojson }}]{% endmacro %}{% set ns = namespace(n=0) %}"
                           "{% for m in messages %}{% set ns.n = ns.n + 1 %}{{ say(m) }}{{ ns.n }}{% endfor %}"
                           "{{ strftime_now('%Y-%m-%d') }}{{ raise_exception('x') if false }}")
    for name, t in templates.items():
        put("chat_template", name + ".jinja", t)
        put("chat_template", name + "_msg.jinja", t + "\0" + "héllo {{ }} {% %} 世界")


def main():
    gguf_seeds()
    other_seeds()
    for t in sorted(os.listdir(OUT)):
        files = os.listdir(os.path.join(OUT, t))
        size = sum(os.path.getsize(os.path.join(OUT, t, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    main()
