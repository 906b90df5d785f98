#!/bin/bash
# On the GPU machine, after device-run-1.sh: the bench models, SmolLM2 4-bit alone (it timed
# out in a bench before), a decode A/B, the bf16 benches. BENCH_REPS (default 2); BENCH_MODELS
# (default all four bf16 models); NO_AB=1 skips the SmolLM2 check and the A/B.
exec > >(tee -a $OUT/log.txt) 2>&1
source scripts/gpu/device-setup.sh
mkdir -p /tmp/res
step models
timeout 200 python3 scripts/make_bench_models.py qwen3-0.6b-bf16 qwen3-0.6b-4bit llama-3.2-1b-bf16 llama-3.2-1b-4bit gemma-3-1b-bf16 gemma-3-1b-4bit smollm2-135m-bf16 smollm2-135m-4bit 2>&1 | grep -v INFO | tail -9
if [ -z "$NO_AB" ]; then
step smollm2-4bit
P="Write a long story about a lighthouse keeper who keeps a journal of every ship."
M=.cache/bench-models/smollm2-135m-4bit
echo "gomlx: $(timeout 60 $B/gomlx generate --model $M --prompt "$P" --max-tokens 64 --ignore-chat-template --verbose 2>&1 >/dev/null | grep -E "Generation|rror" | tr '\n' ' ') rc=$?"
echo "mlx-lm: $(timeout 60 python3 -m mlx_lm generate --model $M --prompt "$P" --max-tokens 64 --ignore-chat-template 2>&1 | grep -E "Generation|rror" | tr '\n' ' ') rc=$?"
step ab
for m in qwen3-0.6b-bf16 llama-3.2-1b-bf16 gemma-3-1b-bf16; do for cfg in "" "GOMLX_COMPILE=0" "GOMLX_FUSE_PROJECTIONS=1"; do
  echo "--- $m [$cfg] $(env $cfg timeout 40 $B/gomlx generate --model .cache/bench-models/$m --prompt "$P" --max-tokens 200 --ignore-chat-template --verbose 2>&1 >/dev/null | grep -E "Generation|Decode step|rror" | tr '\n' ' ')"
done; done
fi
step bench-bf16
for m in ${BENCH_MODELS:-smollm2-135m-bf16 qwen3-0.6b-bf16 llama-3.2-1b-bf16 gemma-3-1b-bf16}; do
  timeout 120 $B/gomlx bench --model .cache/bench-models/$m --name $m --compare mlx-lm --python python3 --reps ${BENCH_REPS:-2} --json --markdown $OUT/rows.md > /tmp/res/bench-$m.json 2> /tmp/res/bench-$m.err
  report /tmp/res/bench-$m.json
done
tar cJf $OUT/res2.tar.xz -C /tmp res
step done
