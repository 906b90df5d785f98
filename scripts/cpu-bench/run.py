#!/usr/bin/env python3
"""Runs the CPU benchmark's measurements one after another (see ./run) and
prints the BENCHMARKS.md table. Each row's engines run back to back, so a
shared machine's load hits them alike; every number is the best of --runs runs in each of --rounds interleaved rounds."""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OPENBLAS = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"

MODELS = [
    # (row label, safetensors dir under out, gguf file or None)
    ("Qwen3-0.6B shape (4 of 28 layers)", "qwen3-0.6b-shape", None),
    ("Qwen2.5-0.5B shape (4 of 24 layers)", "qwen2.5-0.5b-shape", None),
    ("Llama-3.2-1B shape (2 of 16 layers)", "llama-3.2-1b-shape", None),
    ("Gemma-3-1B shape (6 of 26 layers)", "gemma-3-1b-shape", None),
    ("SmolLM2-135M (real, Q4_1 GGUF → bf16)", "SmolLM2-135M-Instruct.Q4_1-bf16", ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("Gemma 3 270M (real, Q4_K_M GGUF → bf16)", "gemma-3-270m-q4_k_m-bf16", ".cache/models/gemma-3-270m-q4_k_m.gguf"),
]


def run_json(cmd, env=None, timeout=300, tries=2):
    e = dict(os.environ)
    e.update(env or {})
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=e, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        # Seen once: mlx-lm under LD_PRELOAD'ed OpenBLAS hung in a futex wait
        # (two OpenBLAS copies in one process: numpy's and the preloaded one).
        if tries > 1:
            print(f"  timed out, again: {' '.join(map(str, cmd))}", file=sys.stderr)
            return run_json(cmd, env, timeout, tries - 1)
        raise SystemExit(f"timed out: {' '.join(map(str, cmd))}")
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".cache/cpu-bench")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every engine")
    ap.add_argument("--models", default="", help="comma-separated dir names (default: all present)")
    a = ap.parse_args()
    out = Path(a.out)
    py = str(out / "venv/bin/python")
    gomlx = str(ROOT / "target/release/examples/cpu_bench")
    common = ["--prompt", str(a.prompt), "--gen", str(a.gen), "--runs", str(a.runs)]
    threads = str(os.cpu_count())
    def bandwidth():
        # Best of one thread and one per core: what streaming reads reach right now
        # (a shared machine's load moves it, so it is measured again for every row).
        return max(run_json([str(out / "membw"), n])["read_gb_per_s"] for n in ("1", threads))

    bw = bandwidth()
    print(f"memory bandwidth (read): {bw:.1f} GB/s", file=sys.stderr)
    pick = set(filter(None, a.models.split(",")))
    results = []
    log = open(out / "results.jsonl", "a")
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    for label, d, gguf in MODELS:
        path = out / d
        if (pick and d not in pick) or not (path / "config.json").exists():
            continue
        row = {"label": label, "dir": d}
        jobs = {
            "shipped": ([py, HERE / "mlx_lm_bench.py", path], {}),
            "same": ([py, HERE / "mlx_lm_bench.py", path, "--dtype", "float32"],
                     {"LD_PRELOAD": OPENBLAS, "OPENBLAS_NUM_THREADS": threads}),
            "gomlx": ([gomlx, path], {}),
            # The same without gomlx's sgemv forwarding: what the BLAS alone gives.
            "gomlx_gemm": ([gomlx, path], {"GOMLX_BLAS_GEMV": "0"}),
        }
        if gguf and (ROOT / gguf).exists():
            jobs["gguf_q"] = ([gomlx, gguf], {"GOMLX_CPU_DEQUANTIZE": "0"})
            jobs["gguf_deq"] = ([gomlx, gguf], {"GOMLX_CPU_DEQUANTIZE": "1"})
        # Rounds interleave the engines, so a burst of load from other users of
        # a shared machine does not land on one engine only; best of all rounds.
        row["bw_gb_s"] = 0.0
        for _ in range(a.rounds):
            row["bw_gb_s"] = max(row["bw_gb_s"], bandwidth())
            for k, (cmd, env) in jobs.items():
                r = run_json(cmd + common, env)
                if k in row:
                    for f in ("prefill_tps", "decode_tps"):
                        row[k][f] = max(row[k][f], r[f])
                else:
                    row[k] = r
        row["loadavg"] = os.getloadavg()[0]
        row["time"] = stamp
        log.write(json.dumps(row) + "\n")
        log.flush()
        results.append(row)
        g, s, m = row["gomlx"], row["shipped"], row["same"]
        print(f"{d}: gomlx {g['prefill_tps']:.0f}/{g['decode_tps']:.1f}  shipped {s['prefill_tps']:.0f}/{s['decode_tps']:.1f}"
              f"  same {m['prefill_tps']:.0f}/{m['decode_tps']:.1f} (prefill/decode tok/s)", file=sys.stderr)
        for k in ("shipped", "same"):
            if row[k]["first_ids"] != g["first_ids"]:
                print(f"  note: greedy ids differ from mlx-lm {k}: {row[k]['first_ids']} vs {g['first_ids']}", file=sys.stderr)

    bws = [r["bw_gb_s"] for r in results] or [bw]
    print(f"\nMachine: {cpu_name()}, {threads} cores; read bandwidth {min(bws):.1f}–{max(bws):.1f} GB/s (measured before each row); "
          f"prompt {a.prompt} tokens, {a.gen} decoded, best of {a.runs} runs × {a.rounds} interleaved rounds; {stamp}\n")
    print("| model | params | mlx-lm shipped (bf16, ref BLAS) prefill / decode | mlx-lm f32 + OpenBLAS prefill / decode "
          "| gomlx (f32, OpenBLAS) prefill / decode | gomlx ÷ shipped | gomlx ÷ same | gomlx decode, sgemv forwarding off "
          "| decode floor (f32 bytes ÷ bandwidth) | decode ÷ floor |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        g, s, m = r["gomlx"], r["shipped"], r["same"]
        params = g["weight_bytes"] / 4 / 1e6
        floor = r["bw_gb_s"] * 1e9 / g["weight_bytes"]
        print(f"| {r['label']} | {params:.0f}M | {s['prefill_tps']:.0f} / {s['decode_tps']:.1f} | {m['prefill_tps']:.0f} / {m['decode_tps']:.1f} "
              f"| {g['prefill_tps']:.0f} / {g['decode_tps']:.1f} | {g['prefill_tps'] / s['prefill_tps']:.1f}× / {g['decode_tps'] / s['decode_tps']:.1f}× "
              f"| {g['prefill_tps'] / m['prefill_tps']:.2f}× / {g['decode_tps'] / m['decode_tps']:.2f}× | {r['gomlx_gemm']['decode_tps']:.1f} | {floor:.1f} tok/s | {floor / g['decode_tps']:.2f}× |")
    q = [r for r in results if "gguf_q" in r]
    if q:
        print("\n| GGUF model (gomlx) | kept 4-bit (quantized_matmul) prefill / decode, weights | dequantised to f32 at load prefill / decode, weights |")
        print("|---|---|---|")
        for r in q:
            k, d = r["gguf_q"], r["gguf_deq"]
            print(f"| {r['label'].split(' (')[0]} | {k['prefill_tps']:.0f} / {k['decode_tps']:.1f}, {k['weight_bytes'] / 2**20:.0f} MiB "
                  f"| {d['prefill_tps']:.0f} / {d['decode_tps']:.1f}, {d['weight_bytes'] / 2**20:.0f} MiB |")


if __name__ == "__main__":
    main()
