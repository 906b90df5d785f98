#!/bin/bash
# On the GPU machine (files from scripts/gpu/pack; install as in device-run-1.sh): the JSON
# Schema constraint's per-token overhead (issue 22) and the MoE-shaped rows against mlx-lm
# (issue 23: Qwen3-30B-A3B- and gpt-oss-20b-shaped random models with 2 layers). Each bench
# gets at most what is left of EXTRA_BUDGET (default 570 s). Markdown rows go to $OUT/extra.md.
exec > >(tee -a $OUT/log.txt) 2>&1
source scripts/gpu/device-setup.sh
end=$(( $(date +%s) - SECONDS + ${EXTRA_BUDGET:-570} ))
left() { echo $(( end - $(date +%s) )); }
models=${EXTRA_MODELS:-qwen3-moe-2l-bf16 qwen3-moe-2l-4bit gpt-oss-2l-bf16 gpt-oss-2l-mxfp4}
if [ -z "$SKIP_SCHEMA" ]; then
  step "JSON Schema overhead"
  timeout 150 $B/gomlx bench --model .cache/bench-models/qwen3-0.6b-bf16 --name qwen3-0.6b-bf16 --json-schema scripts/bench-schema.json \
    --reps 5 --classify-prompts 1 --decode-tokens 256 --json > $OUT/schema.json 2> $OUT/schema.err
  echo "rc=$?"; python3 -c "import json; m=json.load(open('$OUT/schema.json'))['metrics']; print({k: v for k, v in m.items() if 'constrain' in k or 'mask' in k or 'schema' in k.lower()})" || tail -3 $OUT/schema.err
fi
for m in $models; do
  step "model $m"
  timeout $(( $(left) > 120 ? 120 : $(left) )) python3 scripts/make_bench_models.py $m 2>&1 | grep -v INFO | tail -2
  l=$(left); if [ $l -lt 60 ]; then echo "$m: skipped, $l s left"; continue; fi
  timeout $(( l < 150 ? l - 5 : 150 )) $B/gomlx bench --model .cache/bench-models/$m --name $m --compare mlx-lm --python python3 --reps 2 \
    --json --markdown $OUT/extra.md > $OUT/bench-$m.json 2> $OUT/bench-$m.err
  report $OUT/bench-$m.json
  rm -rf .cache/bench-models/$m
done
step done
