#!/bin/bash
# On the GPU machine, after device-run-2.sh (its models): the 4-bit benches, then classify at
# 1024 prompts (4-bit: the dense-product rule at scale). BENCH_REPS (default 2);
# GOMLX_GPU_DENSE_QMM_ROWS as set by the caller.
exec > >(tee -a $OUT/log.txt) 2>&1
source scripts/gpu/device-setup.sh
mkdir -p /tmp/res3
step bench-4bit
# The first 4-bit model pays MLX's NVRTC compilation of each quantised kernel shape (cached in
# /tmp/mlx): one short generation per engine first, so the bench measures warm kernels.
P="Write a long story about a lighthouse keeper."
for m in smollm2-135m-4bit qwen3-0.6b-4bit llama-3.2-1b-4bit gemma-3-1b-4bit; do
  timeout 90 $B/gomlx generate --model .cache/bench-models/$m --prompt "$P" --max-tokens 8 --ignore-chat-template >/dev/null 2>&1
  timeout 90 python3 -m mlx_lm generate --model .cache/bench-models/$m --prompt "$P" --max-tokens 8 --ignore-chat-template >/dev/null 2>&1
done
for m in smollm2-135m-4bit qwen3-0.6b-4bit llama-3.2-1b-4bit gemma-3-1b-4bit; do
  timeout 120 $B/gomlx bench --model .cache/bench-models/$m --name $m --compare mlx-lm --python python3 --reps ${BENCH_REPS:-2} --json --markdown $OUT/rows.md > /tmp/res3/bench-$m.json 2> /tmp/res3/bench-$m.err
  report /tmp/res3/bench-$m.json
done
step classify-1024
for m in qwen3-0.6b-4bit gemma-3-1b-4bit gemma-3-1b-bf16; do
  timeout 80 $B/gomlx bench --model .cache/bench-models/$m --name $m-c1024 --compare mlx-lm --python python3 --reps 2 --classify-only --classify-prompts 1024 --json --markdown $OUT/rows.md > /tmp/res3/c1024-$m.json 2> /tmp/res3/c1024-$m.err; report /tmp/res3/c1024-$m.json
done
tar cJf $OUT/res3.tar.xz -C /tmp res3
step done
