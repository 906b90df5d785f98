#!/bin/bash
# On the GPU machine, after device-run-1.sh: go-i18n's workload (10 000 sentences of 10-30
# tokens behind a 64-token shared instruction prefix, Gemma-3-1B-shaped bf16), classify at
# 1024 prompts (C1024_MODELS), and a decode A/B of the engine's layer options (NO_AB=1 skips
# it), within one call (BENCH_BUDGET seconds, default 570).
exec > >(tee -a $OUT/log.txt) 2>&1
source scripts/gpu/device-setup.sh
mkdir -p /tmp/res3
end=$(( $(date +%s) - SECONDS + ${BENCH_BUDGET:-570} ))
left() { echo $(( end - $(date +%s) )); }
step go-i18n
timeout 150 $B/gomlx bench --model .cache/bench-models/gemma-3-1b-bf16 --name gemma-3-1b-bf16-i18n --compare mlx-lm --python python3 --reps 2 --classify-only --classify-prompts 10000 --prompt-tokens 20 --prompt-spread 10 --prefix-tokens 64 --json --markdown $OUT/rows.md > /tmp/res3/i18n.json 2> /tmp/res3/i18n.err; report /tmp/res3/i18n.json
step classify-1024
for m in ${C1024_MODELS:-qwen3-0.6b-bf16 qwen3-0.6b-4bit gemma-3-1b-bf16 gemma-3-1b-4bit llama-3.2-1b-bf16 llama-3.2-1b-4bit smollm2-135m-bf16 smollm2-135m-4bit}; do
  [ $(left) -lt 60 ] && { echo "$m: skipped, $(left) s left"; continue; }
  s=$(date +%s)
  timeout 80 $B/gomlx bench --model .cache/bench-models/$m --name $m-c1024 --compare mlx-lm --python python3 --reps 2 --classify-only --classify-prompts 1024 --json --markdown $OUT/rows.md > /tmp/res3/c1024-$m.json 2> /tmp/res3/c1024-$m.err
  echo "[$m: $(( $(date +%s) - s )) s]"; report /tmp/res3/c1024-$m.json
done
if [ -z "$NO_AB" ]; then
step "decode A/B (gomlx generate --verbose, 200 tokens, one run each)"
P="Write a long story about a lighthouse keeper who keeps a journal of every ship."
for m in qwen3-0.6b-bf16 llama-3.2-1b-bf16 gemma-3-1b-bf16; do for cfg in "" "GOMLX_COMPILE=0" "GOMLX_FUSE_PROJECTIONS=1"; do
  [ $(left) -lt 15 ] && break 2
  echo "--- $m [$cfg] $(env $cfg timeout 30 $B/gomlx generate --model .cache/bench-models/$m --prompt "$P" --max-tokens 200 --ignore-chat-template --verbose 2>&1 >/dev/null | grep -E "Generation|Decode step|rror" | tr '\n' ' ')"
done; done
fi
tar cJf $OUT/res3.tar.xz -C /tmp res3
step done
