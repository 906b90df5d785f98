"""The mlx-lm side of `gomlx bench --compare mlx-lm`: one repetition in a fresh process.

    .venv/bin/python scripts/bench_mlx_lm.py MODEL_DIR WORKLOAD.json [ADAPTER_DIR]

Prints one JSON object on stdout. The workload (token ids, written by `gomlx bench`)
is the one the gomlx side runs, step for step, in the same order:

- load: `mlx_lm.load(dir)` (weights evaluated: lazy=False), tokenizer included, with
  `adapter_path=ADAPTER_DIR` when given (`gomlx bench --adapter-path`);
  timed from the call to its return, imports excluded (as gomlx's process start is).
  When gomlx's model is split over ranks (`gomlx launch ... gomlx bench`, which sets
  GOMLX_BENCH_SHARDED to the backend), every rank runs this script: the group of that
  backend, then `mlx_lm.utils.sharded_load(dir)` (mlx-lm's tensor parallel) instead.
- prefill / time to first token: `stream_generate(prompt=<prefill ids>, max_tokens=1)`,
  greedy; TTFT = wall time from the call to the first response; prefill tok/s =
  prompt tokens / TTFT.
- decode: `stream_generate(prompt=<decode prompt ids>, max_tokens=N)`, greedy, EOS ids
  cleared so all N tokens come; decode tok/s = (N - 1) / (time of the N-th response -
  time of the first).
- classify: the prompts right-padded into [batch, length] arrays of at most
  `classify_batch` rows (gomlx's cap per batch), one forward of
  `model.model` (causal mask: no real token sees the padding after it), each row's
  hidden state at its last real position projected by the LM head (the tied
  embedding's `as_linear` where tied), arg-max, read back. Prompts that share an
  instruction prefix are evaluated in full: mlx-lm has no shared-prefix reuse
  (that is what gomlx's classify adds).
- warm-up (unless `gomlx bench --no-warmup`): the prefill request and each classify
  run once untimed first, on both sides, so the rates are steady-state throughput
  (the first request's time to first token is reported as `ttft_cold_s`).
- peak memory: `mx.get_peak_memory()` over the whole run (reset before load).

It also reports what it ran: the dtype of the weights (the largest floating
parameter's; mlx-lm computes in it), their quantisation and bytes, the process's
peak resident set, and which library MLX's `cblas_sgemm` resolved to (the
wheel's reference BLAS unless something preloaded another).
"""

import ctypes
import json
import os
import resource
import sys
import time

import mlx.core as mx
from mlx_lm import load, stream_generate
from mlx_lm.utils import sharded_load
from mlx_lm.sample_utils import make_sampler
from mlx.utils import tree_flatten


def blas_library():
    """The file that holds the cblas_sgemm MLX calls (dlsym from libmlx, then dladdr)."""

    class DlInfo(ctypes.Structure):
        _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p), ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]

    try:
        libc = ctypes.CDLL(None)
        import mlx

        lib = next(iter(mlx.__path__)) + "/lib/libmlx.so"
        addr = ctypes.cast(ctypes.CDLL(lib).cblas_sgemm, ctypes.c_void_p).value
        info = DlInfo()
        libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
        if libc.dladdr(ctypes.c_void_p(addr), ctypes.byref(info)):
            return info.fname.decode()
    except (OSError, AttributeError, StopIteration):
        pass
    return None


def describe(model, config):
    params = [p for _, p in tree_flatten(model.parameters())]
    floats = [p for p in params if mx.issubdtype(p.dtype, mx.floating) and p.ndim >= 2]
    dtype = str(max(floats, key=lambda p: p.nbytes).dtype).replace("mlx.core.", "") if floats else "?"
    q = config.get("quantization") or config.get("quantization_config")
    weights = f"{q['bits']}-bit ({dtype} scales)" if q and "bits" in q else dtype
    return dtype, weights, sum(p.nbytes for p in params)


def last_logits(model, h):
    lm_head = getattr(model, "lm_head", None)
    if lm_head is not None:
        return lm_head(h)
    return model.model.embed_tokens.as_linear(h)


def classify_batch(model, prompts):
    lengths = [len(p) for p in prompts]
    width = max(lengths)
    rows = [p + [0] * (width - len(p)) for p in prompts]
    x = mx.array(rows, dtype=mx.int32)
    h = model.model(x)
    idx = mx.array([n - 1 for n in lengths])
    last = h[mx.arange(len(prompts)), idx]
    return mx.argmax(last_logits(model, last).astype(mx.float32), axis=-1)


def classify(model, prompts, batch):
    # Batches of at most `batch` rows (gomlx's own cap), each queued before the
    # previous one is read back.
    out, pending = [], None
    for i in range(0, len(prompts), batch):
        ids = classify_batch(model, prompts[i:i + batch])
        mx.async_eval(ids)
        if pending is not None:
            out.extend(pending.tolist())
        pending = ids
    out.extend(pending.tolist())
    return out


def main():
    model_dir, workload_path = sys.argv[1], sys.argv[2]
    adapter = sys.argv[3] if len(sys.argv) > 3 else None
    with open(workload_path) as f:
        w = json.load(f)
    out = {}

    mx.reset_peak_memory()
    t = time.perf_counter()
    backend = os.environ.get("GOMLX_BENCH_SHARDED")
    if backend:
        group = mx.distributed.init(strict=True, backend=backend)
        model, tokenizer, config = sharded_load(model_dir, tensor_group=group, return_config=True)
        mx.eval(model.parameters())
        out["ranks"] = group.size()
    else:
        model, tokenizer, config = load(model_dir, adapter_path=adapter, return_config=True)
    out["load_s"] = time.perf_counter() - t
    out["dtype"], out["weights"], out["weight_bytes"] = describe(model, config)
    steps = {"load": mx.get_peak_memory()}

    if w.get("generate", True):
        generate_steps(model, tokenizer, w, out, steps)

    for key, name in (("classify", "classify_prompts_s"), ("classify_prefixed", "classify_prefixed_prompts_s")):
        prompts = w[key]
        batch = w.get("classify_batch", len(prompts))
        if w.get("warmup", False):
            classify(model, prompts, batch)
        t = time.perf_counter()
        ids = classify(model, prompts, batch)
        out[name] = len(prompts) / (time.perf_counter() - t)
        out[key + "_ids"] = ids
        steps[key] = mx.get_peak_memory()
    out["peak_after"] = steps

    out["peak_memory_bytes"] = mx.get_peak_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["max_rss_bytes"] = rss if sys.platform == "darwin" else rss * 1024
    out["blas"] = blas_library()
    json.dump(out, sys.stdout)
    print()


def generate_steps(model, tokenizer, w, out, steps):
    greedy = make_sampler(temp=0.0)
    prompt = w["prefill"]

    def first_token():
        t = time.perf_counter()
        for _ in stream_generate(model, tokenizer, prompt, max_tokens=1, sampler=greedy):
            return time.perf_counter() - t

    if w.get("warmup", False):
        out["ttft_cold_s"] = first_token()
    out["ttft_s"] = first_token()
    out["prefill_tok_s"] = len(prompt) / out["ttft_s"]
    steps["prefill"] = mx.get_peak_memory()

    tokenizer.eos_token_ids = set()
    n = w["decode_tokens"]
    times = []
    tokens = []
    for r in stream_generate(model, tokenizer, w["decode_prompt"], max_tokens=n, sampler=greedy):
        times.append(time.perf_counter())
        tokens.append(r.token)
    out["decode_tokens"] = len(tokens)
    out["decode_tok_s"] = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    out["decode_ids"] = tokens
    steps["decode"] = mx.get_peak_memory()


if __name__ == "__main__":
    main()
