"""LoRA training speed and memory: `gomlx lora` against `mlx_lm.lora`, side by side.

Run through scripts/bench-lora/run (it builds gomlx and converts the model first).

Both sides train the same model directory (a GGUF converted once by `gomlx convert`)
on the same generated JSONL data with the same settings: LoRA rank, scale and target
projections on all blocks, AdamW (lr, weight decay 0.01, no warm-up or decay), batch size,
maximum sequence length, iterations, seed; no gradient checkpointing, no validation
inside the timed steps. Repetitions alternate which side goes first; each run is a fresh
process. Reported per side (medians over the repetitions):

- tokens/s: real tokens trained per second of training-step time, over the steps after the
  first (the first step holds one-off work: mlx-lm traces and compiles its step, both
  sides allocate their buffers); "all steps" includes it. Every example is exactly
  --seq-len tokens, so every batch holds batch × seq-len real tokens on both sides and
  neither pads. Step time is each side's own: gomlx's `--progress-json` `seconds`
  (differences), mlx-lm's per-step `iterations_per_second` (steps_per_report 1), which
  leaves out its validation passes.
- peak memory: MLX's peak during training (reset after load, as gomlx's trainer does),
  and the process's maximum resident set size.
- ratios gomlx ÷ mlx-lm: of the medians, and the median of each repetition's own ratio
  (its two runs are adjacent, so a slow drift in the machine's load cancels out).

mlx-lm runs with the wheel's reference BLAS as pip installs it ("shipped") and/or with
Debian's OpenBLAS LD_PRELOADed ("openblas": the BLAS gomlx links), OPENBLAS_NUM_THREADS
set to the cores this process may use, as gomlx sets its own.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPENBLAS = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"

WORDS = (
    "the keeper climbed the narrow stairs of the old lighthouse every evening and trimmed the wick "
    "while the wind came in from the grey sea and the gulls circled above the rocks below the cliffs "
    "ships passed far out on the water carrying grain timber wool and coal to the southern ports "
    "in winter the storms were long and the nights were longer and the tower settled against the gales "
    "she wrote each vessel into her journal with the hour the weather and the colour of its lights"
).split()


def tokenizer_for(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def make_data(out, model_dir, n, seq_len, batch_size, seed):
    """n examples of exactly seq_len tokens each (text + EOS, as both trainers tokenise)."""
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer_for(model_dir)
    eos = tok.eos_token_id

    def length(text):
        ids = tok.encode(text)
        return len(ids) + (0 if ids and ids[-1] == eos else 1)

    rng = random.Random(seed)
    rows = []
    for _ in range(n + batch_size):
        words = []
        while length(" ".join(words + ["x"])) <= seq_len:
            words.append(rng.choice(WORDS))
        # Single-token fillers close the last gap exactly.
        while length(" ".join(words)) < seq_len:
            words.append("a")
        text = " ".join(words)
        if length(text) != seq_len:
            raise SystemExit(f"cannot make an example of exactly {seq_len} tokens")
        rows.append(json.dumps({"text": text}))
    (out / "train.jsonl").write_text("\n".join(rows[:n]) + "\n")
    # mlx-lm refuses to train without a validation set; neither side validates in the timed steps.
    (out / "valid.jsonl").write_text("\n".join(rows[n:]) + "\n")


def wait_with_rusage(cmd, env, timeout, log):
    """Runs cmd; returns (exit code, wall seconds, max RSS bytes)."""
    t = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = t + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                return -9, time.perf_counter() - t, ru.ru_maxrss * 1024
            time.sleep(0.05)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - t, ru.ru_maxrss * 1024


def summarise(step_times, step_tokens, peak, rss, first_loss, last_loss, own_tok_s):
    steady_t, steady_n = sum(step_times[1:]), sum(step_tokens[1:])
    return {
        "tok_s": steady_n / steady_t,
        "tok_s_all": sum(step_tokens) / sum(step_times),
        "first_step_s": step_times[0],
        "step_s": steady_t / max(len(step_times) - 1, 1),
        "peak_memory": peak,
        "max_rss": rss,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "own_tok_s": own_tok_s,
    }


def run_gomlx(a, model, data, work, tokens_per_step):
    out = work / "gomlx-run"
    prog = work / "gomlx-progress.jsonl"
    cmd = [str(a.gomlx), "lora", "--model", str(model), "--data", str(data), "--iters", str(a.iters),
           "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--rank", str(a.rank), "--scale", str(a.scale),
           "--targets", a.targets, "--max-seq-length", str(a.seq_len), "--val-every", "0",
           "--save-every", "1000000", "--adapter-path", str(out), "--seed", str(a.seed), "--progress-json", str(prog)]
    code, wall, rss = wait_with_rusage(cmd, dict(os.environ), a.timeout, work / "gomlx.log")
    if code != 0:
        raise RuntimeError(f"gomlx lora failed ({code}); see {work / 'gomlx.log'}")
    rows = [json.loads(l) for l in prog.read_text().splitlines()]
    secs = [r["seconds"] for r in rows]
    times = [secs[0]] + [b - a_ for a_, b in zip(secs, secs[1:])]
    toks = [r["trained_tokens"] for r in rows]
    per_step = [toks[0]] + [b - a_ for a_, b in zip(toks, toks[1:])]
    if any(t != tokens_per_step for t in per_step):
        raise RuntimeError(f"gomlx trained {per_step} tokens per step, expected {tokens_per_step}")
    r = summarise(times, per_step, rows[-1]["peak_memory"], rss, rows[0]["loss"], rows[-1]["loss"], rows[-1]["tokens_per_second"])
    r["wall_s"] = wall
    return r


def run_mlx_lm(a, model, data, work, tokens_per_step, blas):
    result = work / f"mlx-lm-{blas}.json"
    keys = ",".join(f"self_attn.{t}" if t in ("q_proj", "k_proj", "v_proj", "o_proj") else f"mlp.{t}" for t in a.targets.split(","))
    cmd = [str(a.python), str(ROOT / "scripts/bench-lora/mlx_lm_train.py"), "--result", str(result),
           "--rank", str(a.rank), "--scale", str(a.scale), "--keys", keys,
           "--model", str(model), "--train", "--data", str(data), "--fine-tune-type", "lora", "--optimizer", "adamw",
           "--num-layers", "-1", "--batch-size", str(a.batch_size), "--iters", str(a.iters), "--val-batches", "1",
           "--learning-rate", str(a.lr), "--steps-per-report", "1", "--steps-per-eval", "1000000",
           "--adapter-path", str(work / "mlx-lm-run"), "--save-every", "1000000",
           "--max-seq-length", str(a.seq_len), "--seed", str(a.seed)]
    env = dict(os.environ)
    if blas == "openblas":
        env["LD_PRELOAD"] = OPENBLAS
        env["OPENBLAS_NUM_THREADS"] = str(len(os.sched_getaffinity(0)))
    code, wall, rss = wait_with_rusage(cmd, env, a.timeout, work / f"mlx-lm-{blas}.log")
    if code != 0:
        raise RuntimeError(f"mlx-lm ({blas}) failed ({code}); see {work / f'mlx-lm-{blas}.log'}")
    r = json.loads(result.read_text())
    steps = r["steps"]
    if len(steps) != a.iters:
        raise RuntimeError(f"mlx-lm reported {len(steps)} of {a.iters} steps")
    times = [1.0 / s["iterations_per_second"] for s in steps]
    out = summarise(times, [tokens_per_step] * len(times), r["peak_memory"], rss, steps[0]["train_loss"], steps[-1]["train_loss"],
                    statistics.mean(s["tokens_per_second"] for s in steps[1:]) if len(steps) > 1 else steps[0]["tokens_per_second"])
    out["wall_s"] = wall
    return out


def machine():
    model = "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model directory both sides train")
    p.add_argument("--gomlx", type=Path, default=ROOT / "target/release/gomlx")
    p.add_argument("--python", type=Path, default=Path(sys.executable), help="Python with mlx-lm")
    p.add_argument("--work", type=Path, default=ROOT / ".cache/bench-lora/work")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128, help="tokens of every example (and the maximum sequence length)")
    p.add_argument("--examples", type=int, default=16)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--targets", default="q_proj,v_proj")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mlx-lm", choices=["openblas", "shipped", "both"], default="openblas")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--json", type=Path, help="write the full result here")
    a = p.parse_args()
    if a.examples % a.batch_size:
        raise SystemExit("--examples must be a multiple of --batch-size (both trainers drop a partial batch)")

    a.work.mkdir(parents=True, exist_ok=True)
    data = a.work / f"data-{a.seq_len}x{a.examples}"
    make_data(data, a.model, a.examples, a.seq_len, a.batch_size, a.seed)
    tokens_per_step = a.batch_size * a.seq_len
    sides = ["gomlx"] + (["mlx-lm-openblas", "mlx-lm-shipped"] if a.mlx_lm == "both" else [f"mlx-lm-{a.mlx_lm}"])
    runs = {s: [] for s in sides}
    info = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "model": str(a.model),
            "settings": {k: getattr(a, k) for k in ("iters", "batch_size", "seq_len", "examples", "rank", "scale", "targets", "lr", "seed", "reps")}}
    for rep in range(a.reps):
        order = sides if rep % 2 == 0 else sides[::-1]
        for side in order:
            print(f"rep {rep + 1}/{a.reps}: {side}", file=sys.stderr, flush=True)
            if side == "gomlx":
                r = run_gomlx(a, a.model, data, a.work, tokens_per_step)
            else:
                r = run_mlx_lm(a, a.model, data, a.work, tokens_per_step, side.split("-")[-1])
            print(f"  {r['tok_s']:.1f} tok/s (all steps {r['tok_s_all']:.1f}), step {r['step_s']:.3f} s, first {r['first_step_s']:.2f} s, "
                  f"peak {r['peak_memory'] / 2**20:.0f} MiB, RSS {r['max_rss'] / 2**20:.0f} MiB, loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}",
                  file=sys.stderr, flush=True)
            runs[side].append(r)
    med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in runs.items()}
    info["machine"]["load_after"] = os.getloadavg()
    info["median"] = med
    info["runs"] = runs
    # Ratio of the medians, and the median of each repetition's own ratio (its two runs
    # ran back to back, so a slow drift of the machine's load cancels out of it).
    ratios, paired = {}, {}
    for s in sides[1:]:
        ratios[s] = {k: med["gomlx"][k] / med[s][k] for k in ("tok_s", "tok_s_all", "peak_memory", "max_rss")}
        paired[s] = {k: statistics.median(g[k] / o[k] for g, o in zip(runs["gomlx"], runs[s])) for k in ratios[s]}
    info["ratio_gomlx_over"] = ratios
    info["paired_ratio_gomlx_over"] = paired
    if a.json:
        a.json.write_text(json.dumps(info, indent=1))
    mib = lambda b: f"{b / 2**20:.0f}"
    print(f"\n{info['date']} · {info['machine']['cpu']}, {info['machine']['cores']} cores · {a.model.name} · "
          f"rank {a.rank}, scale {a.scale:g}, {a.targets}, all blocks, batch {a.batch_size} × {a.seq_len} tokens, {a.iters} iters, "
          f"lr {a.lr:g}, {a.reps} reps (medians)\n")
    print("| side | tokens/s (steps 2..N) | tokens/s (all steps) | first step s | MLX peak MiB | max RSS MiB | loss first → last |")
    print("|---|---|---|---|---|---|---|")
    for s in sides:
        m = med[s]
        print(f"| {s} | {m['tok_s']:.1f} | {m['tok_s_all']:.1f} | {m['first_step_s']:.2f} | {mib(m['peak_memory'])} | {mib(m['max_rss'])} | "
              f"{m['first_loss']:.3f} → {m['last_loss']:.3f} |")
    for s, r in ratios.items():
        p_ = paired[s]
        print(f"| gomlx ÷ {s}: ratio of medians (median of per-rep ratios) | **{r['tok_s']:.2f}** ({p_['tok_s']:.2f}) | {r['tok_s_all']:.2f} ({p_['tok_s_all']:.2f}) | "
              f"| **{r['peak_memory']:.2f}** ({p_['peak_memory']:.2f}) | {r['max_rss']:.2f} ({p_['max_rss']:.2f}) | |")


if __name__ == "__main__":
    main()
