#!/usr/bin/env python3
"""One mlx-lm measurement for the CPU benchmark (scripts/cpu-bench/run).

    python mlx_lm_bench.py MODEL_DIR [--prompt 128] [--gen 32] [--runs 2] [--dtype float32]

Loads the model with mlx_lm.utils.load_model on the CPU (optionally casting every
floating weight to --dtype), runs the same prompt ids as examples/cpu_bench.rs
through mlx_lm.generate.generate_step (greedy), and prints one JSON line. Prefill
tok/s = prompt tokens / time to the first token; decode tok/s = (generated - 1) /
time after it (mlx-lm's own prompt_tps / generation_tps). It also reports which
library MLX's cblas_sgemm resolved to in this process (dlsym + dladdr), so a run
"with OpenBLAS" (LD_PRELOAD, set by the caller) is checked, not assumed.
"""
import argparse
import ctypes
import json
import os
import time
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_map
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model


class DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def blas_library():
    libc = ctypes.CDLL(None)
    libc.dlsym.restype = ctypes.c_void_p
    libc.dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    addr = libc.dlsym(None, b"cblas_sgemm")
    if not addr:
        # libmlx is loaded RTLD_LOCAL by Python: ask from its handle.
        import mlx.core as core
        lib = Path(core.__file__).parent / "lib" / "libmlx.so"
        h = ctypes.CDLL(str(lib))
        addr = ctypes.cast(h.cblas_sgemm, ctypes.c_void_p).value
        # A global definition (LD_PRELOAD) wins over the one in libmlx's own tree.
        g = libc.dlsym(None, b"cblas_sgemm")
        addr = g or addr
    info = DlInfo()
    libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
    if not libc.dladdr(ctypes.c_void_p(addr), ctypes.byref(info)):
        return "not found"
    return os.path.realpath(info.dli_fname.decode())


def prompt(n, vocab):
    return [(i * 7919 + 13) % (min(vocab, 32000) - 100) + 100 for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--dtype", default=None, help="cast floating weights (e.g. float32)")
    a = ap.parse_args()
    mx.set_default_device(mx.cpu)
    model, config = load_model(Path(a.model))
    if a.dtype:
        dt = getattr(mx, a.dtype)
        model.update(tree_map(lambda p: p.astype(dt) if mx.issubdtype(p.dtype, mx.floating) else p, model.parameters()))
    mx.eval(model.parameters())
    vocab = config.get("vocab_size") or config["text_config"]["vocab_size"]
    weight_bytes = sum(p.nbytes for _, p in __import__("mlx.utils", fromlist=["tree_flatten"]).tree_flatten(model.parameters()))

    def run(n_prompt, n_gen):
        ids = mx.array(prompt(n_prompt, vocab))
        t0 = time.perf_counter()
        out, t1 = [], None
        for tok, _ in generate_step(ids, model, max_tokens=n_gen):
            if t1 is None:
                t1 = time.perf_counter()
            out.append(int(tok))
        t2 = time.perf_counter()
        return n_prompt / (t1 - t0), (len(out) - 1) / (t2 - t1), out

    run(16, 4)  # warm-up
    best_p = best_d = 0.0
    first = []
    for _ in range(a.runs):
        p, d, out = run(a.prompt, a.gen)
        best_p, best_d, first = max(best_p, p), max(best_d, d), out[:8]
    dtype = str(next(iter(v for k, v in __import__("mlx.utils", fromlist=["tree_flatten"]).tree_flatten(model.parameters()) if k.endswith("weight"))).dtype).replace("mlx.core.", "")
    print(json.dumps({
        "engine": "mlx-lm", "model": a.model, "dtype": dtype, "weight_bytes": weight_bytes,
        "prompt": a.prompt, "gen": a.gen, "prefill_tps": best_p, "decode_tps": best_d,
        "first_ids": first, "blas": blas_library(),
    }))


if __name__ == "__main__":
    main()
