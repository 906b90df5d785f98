"""The mlx-lm side of scripts/bench-lora: one `mlx_lm.lora --train` run in this process.

    python mlx_lm_train.py --result FILE --rank R --scale S --keys a,b [mlx_lm.lora flags...]

The flags after the first three are mlx_lm.lora's own (its `build_parser`), and the run is
what `mlx_lm.lora` does with them (`main` → `run` → `train_model`: load, datasets, LoRA
layers, `tuner.trainer.train` with its compiled step), with two additions that only measure:
- `lora_parameters` (rank, scale, keys) come from --rank/--scale/--keys instead of a YAML
  config file;
- a TrainingCallback records every report (run with --steps-per-report 1: one per step,
  mlx-lm's own `iterations_per_second`, `tokens_per_second`, `peak_memory`), and the peak
  is reset after the model and data are loaded, as gomlx's trainer does before its first step.
Writes a JSON object to --result.
"""

import argparse
import json
import os
import sys
import time
import types

import mlx.core as mx
import numpy as np
from mlx_lm import lora
from mlx_lm.tuner.trainer import TrainingCallback


class Record(TrainingCallback):
    def __init__(self):
        self.steps = []
        self.val = []

    def on_train_loss_report(self, info):
        self.steps.append(dict(info))

    def on_val_loss_report(self, info):
        self.val.append(dict(info))


def main():
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--result", required=True)
    pre.add_argument("--rank", type=int, required=True)
    pre.add_argument("--scale", type=float, required=True)
    pre.add_argument("--keys", required=True)
    ours, rest = pre.parse_known_args()
    args = vars(lora.build_parser().parse_args(rest))
    for k, v in lora.CONFIG_DEFAULTS.items():
        if args.get(k) is None:
            args[k] = v
    args["lora_parameters"] = {"rank": ours.rank, "scale": ours.scale, "dropout": 0.0, "keys": ours.keys.split(",")}
    args = types.SimpleNamespace(**args)

    # lora.run(args) without its reporting callbacks (None without --report-to).
    np.random.seed(args.seed)
    t = time.perf_counter()
    model, tokenizer = lora.load(args.model)
    load_s = time.perf_counter() - t
    train_set, valid_set, _ = lora.load_dataset(args, tokenizer)
    load_peak = mx.get_peak_memory()
    mx.reset_peak_memory()
    rec = Record()
    t = time.perf_counter()
    lora.train_model(args, model, train_set, valid_set, rec)
    wall = time.perf_counter() - t
    with open(ours.result, "w") as f:
        json.dump({"steps": rec.steps, "val": rec.val, "load_s": load_s, "load_peak_memory": load_peak,
                   "peak_memory": mx.get_peak_memory(), "train_wall_s": wall, "mlx": mx.__version__,
                   "blas": os.environ.get("LD_PRELOAD", "wheel")}, f)


if __name__ == "__main__":
    sys.exit(main())
