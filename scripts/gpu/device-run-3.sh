#!/bin/bash
# On the GPU machine, after device-run-1.sh (its models): the 4-bit benches.
exec > >(tee -a $OUT/log.txt) 2>&1
source .whl/dev2/device-setup.sh
mkdir -p /tmp/res3
step bench-4bit
timeout 200 python3 scripts/make_bench_models.py smollm2-135m-4bit qwen3-0.6b-4bit llama-3.2-1b-4bit gemma-3-1b-4bit 2>&1 | grep -v INFO | tail -4
for m in smollm2-135m-4bit qwen3-0.6b-4bit llama-3.2-1b-4bit gemma-3-1b-4bit; do
  timeout 150 $B/gomlx bench --model .cache/bench-models/$m --name $m --compare mlx-lm --python python3 --reps 3 --json --markdown $OUT/rows.md > /tmp/res3/bench-$m.json 2> /tmp/res3/bench-$m.err
  report /tmp/res3/bench-$m.json
done
tar cJf $OUT/res3.tar.xz -C /tmp res3
step done
