#!/bin/bash
# On the GPU machine, after device-run-1.sh (its models): the bf16 benches.
exec > >(tee -a $OUT/log.txt) 2>&1
source .whl/dev2/device-setup.sh
mkdir -p /tmp/res
step bench-bf16
timeout 200 python3 scripts/make_bench_models.py smollm2-135m-bf16 qwen3-0.6b-bf16 llama-3.2-1b-bf16 gemma-3-1b-bf16 2>&1 | grep -v INFO | tail -4
for m in smollm2-135m-bf16 qwen3-0.6b-bf16 llama-3.2-1b-bf16 gemma-3-1b-bf16; do
  timeout 150 $B/gomlx bench --model .cache/bench-models/$m --name $m --compare mlx-lm --python python3 --reps 3 --json --markdown $OUT/rows.md > /tmp/res/bench-$m.json 2> /tmp/res/bench-$m.err
  report /tmp/res/bench-$m.json
done
tar cJf $OUT/res2.tar.xz -C /tmp res
step done
