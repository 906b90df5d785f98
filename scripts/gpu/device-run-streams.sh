#!/bin/bash
# On the GPU machine (files from scripts/gpu/pack; install as in device-run-1.sh): continuous
# batching (issue 20) against mlx-lm's BatchGenerator, `gomlx bench --streams 1,4,16,64` with a
# mixed classify run beside 16 streams, then the bf16 batch-invariance bound on the GPU.
# STREAM_MODELS picks the bench models (made here by make_bench_models.py).
exec > >(tee -a $OUT/log.txt) 2>&1
source scripts/gpu/device-setup.sh
models=${STREAM_MODELS:-qwen3-0.6b-bf16 llama-3.2-1b-4bit}
step models
timeout 200 python3 scripts/make_bench_models.py $models 2>&1 | grep -v INFO | tail -4
step "bf16 bound on the GPU"
GOMLX_TEST_DEVICE=gpu timeout 120 $B/engine_batching --nocapture bf16_rows 2>&1 | grep -E "bf16 batched|test result|panick|FAIL" | head -8
for m in $models; do
  step "streams $m"
  timeout 240 $B/gomlx bench --model .cache/bench-models/$m --streams 1,4,16,64 --mixed-classify 256 --prompt-tokens 64 \
    --decode-tokens ${STREAM_TOKENS:-128} --compare mlx-lm --python python3 --json --markdown $OUT/streams.md > $OUT/streams-$m.json 2> $OUT/streams-$m.err
  echo "rc=$?"; tail -2 $OUT/streams-$m.err
done
step done
