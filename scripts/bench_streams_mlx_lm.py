"""mlx-lm's side of `gomlx bench --streams`: N concurrent requests through
mlx-lm's own continuous batching (mlx_lm.generate.BatchGenerator, as
`mlx_lm.server --decode-concurrency` uses it) on the same token ids.

usage: bench_streams_mlx_lm.py MODEL_DIR WORKLOAD.json  (JSON on stdout)
The workload: {"prompts": [[ids], ...], "levels": [1, 4, ...], "max_tokens": T}.
Per level: all N requests inserted at t=0; per request the arrival time of each
token; aggregate tokens/s over the wall time, TTFT and inter-token gaps.
"""

import json
import sys
import time

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import BatchGenerator


def pct(v, p):
    if not v:
        return float("nan")
    s = sorted(v)
    return s[round((len(s) - 1) * p)]


def run_level(model, prompts, max_tokens):
    n = len(prompts)
    mx.reset_peak_memory()
    gen = BatchGenerator(
        model,
        max_tokens=max_tokens,
        completion_batch_size=max(n, 32),
        prefill_batch_size=min(n, 8),
    )
    t0 = time.perf_counter()
    uids = gen.insert(prompts, max_tokens=[max_tokens] * n)
    times = {u: [] for u in uids}
    finished = set()
    while len(finished) < n:
        responses = gen.next_generated()
        now = time.perf_counter() - t0
        for r in responses:
            times[r.uid].append(now)
            if r.finish_reason is not None:
                finished.add(r.uid)
        if not responses and len(finished) < n and not gen._unprocessed_sequences and len(gen._generation_batch) == 0:
            break
    wall = time.perf_counter() - t0
    gen.close()
    mx.synchronize()
    peak, active = mx.get_peak_memory(), mx.get_active_memory()
    ttft = [t[0] for t in times.values() if t]
    gaps = [b - a for t in times.values() for a, b in zip(t, t[1:])]
    tokens = sum(len(t) for t in times.values())
    return {
        "streams": n,
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_p50_s": pct(ttft, 0.5),
        "ttft_p99_s": pct(ttft, 0.99),
        "itl_p50_s": pct(gaps, 0.5),
        "itl_p99_s": pct(gaps, 0.99),
        "worst_gap_s": max(gaps) if gaps else float("nan"),
        "classify_calls": 0,
        "peak_bytes": peak,
        "active_after_bytes": active,
    }


def main():
    model_dir, workload = sys.argv[1], sys.argv[2]
    w = json.load(open(workload))
    model, _ = load(model_dir)
    prompts, levels, max_tokens = w["prompts"], w["levels"], w["max_tokens"]
    run_level(model, prompts[: min(4, max(levels))], 4)  # warm-up, as the gomlx side
    out = [run_level(model, prompts[:n], max_tokens) for n in levels]
    mx.synchronize()
    print(json.dumps({"levels": out}))


if __name__ == "__main__":
    main()
