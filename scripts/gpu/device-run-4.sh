#!/bin/bash
# On the GPU machine, after device-run-1.sh and -3.sh: go-i18n's 10 000 sentences, classify at 1024 prompts, the
# Gemma 4-bit bench (repeated from -3.sh), each within one 10-minute call.
exec > >(tee -a $OUT/log.txt) 2>&1
source scripts/gpu/device-setup.sh
mkdir -p /tmp/res5
step go-i18n
for m in gemma-3-1b-bf16 gemma-3-1b-4bit; do
  timeout 130 $B/gomlx bench --model .cache/bench-models/$m --name $m-i18n --compare mlx-lm --python python3 --reps 2 --classify-only --classify-prompts 10000 --prompt-tokens 20 --prompt-spread 10 --prefix-tokens 64 --json > /tmp/res5/i18n-$m.json 2> /tmp/res5/i18n-$m.err; report /tmp/res5/i18n-$m.json
done
step classify-1024
for m in qwen3-0.6b-bf16 gemma-3-1b-4bit; do
  timeout 80 $B/gomlx bench --model .cache/bench-models/$m --name $m-c1024 --compare mlx-lm --python python3 --reps 2 --classify-only --classify-prompts 1024 --json --markdown $OUT/rows.md > /tmp/res5/c1024-$m.json 2> /tmp/res5/c1024-$m.err; report /tmp/res5/c1024-$m.json
done
step gemma-4bit
timeout 110 $B/gomlx bench --model .cache/bench-models/gemma-3-1b-4bit --name gemma-3-1b-4bit --compare mlx-lm --python python3 --reps 2 --json --markdown $OUT/rows.md > /tmp/res5/bench-g4.json 2> /tmp/res5/bench-g4.err; report /tmp/res5/bench-g4.json
tar cJf $OUT/res5.tar.xz -C /tmp res5
step done
