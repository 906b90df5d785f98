#!/bin/bash
# On the GPU machine, after device-run-1.sh (its models and kernel cache): `gomlx bench
# --compare mlx-lm` for every bench model, BENCH_REPS repetitions (default 2). BENCH_MODELS
# replaces the list; a model is skipped when less than BENCH_NEED seconds (default 75) are
# left of the call's BENCH_BUDGET (default 570), so the call ends with its results.
exec > >(tee -a $OUT/log.txt) 2>&1
source scripts/gpu/device-setup.sh
mkdir -p /tmp/res
end=$(( $(date +%s) - SECONDS + ${BENCH_BUDGET:-570} ))
step bench
for m in ${BENCH_MODELS:-smollm2-135m-bf16 qwen3-0.6b-bf16 llama-3.2-1b-bf16 gemma-3-1b-bf16 smollm2-135m-4bit qwen3-0.6b-4bit llama-3.2-1b-4bit gemma-3-1b-4bit}; do
  left=$(( end - $(date +%s) ))
  if [ $left -lt ${BENCH_NEED:-75} ]; then echo "$m: skipped, $left s left"; continue; fi
  s=$(date +%s)
  timeout $(( left < 130 ? left - 5 : 130 )) $B/gomlx bench --model .cache/bench-models/$m --name $m --compare mlx-lm --python python3 --reps ${BENCH_REPS:-2} --json --markdown $OUT/rows.md > /tmp/res/bench-$m.json 2> /tmp/res/bench-$m.err
  echo "[$m: $(( $(date +%s) - s )) s]"; report /tmp/res/bench-$m.json
done
tar cJf $OUT/res2.tar.xz -C /tmp res
step done
