#!/bin/bash
# On the GPU machine (files from scripts/gpu/pack): GPU oracle tests, the bench models, decode A/B.
exec > >(tee -a $OUT/log.txt) 2>&1
source .whl/dev2/device-setup.sh
step env; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; $B/gomlx info | head -4
step oracle-tf32
GOMLX_TEST_DEVICE=gpu timeout 150 $B/models_oracle --nocapture 2>&1 | grep -E -A2 "relative error|test result|FAIL|panick|rror" | grep -v "^--$" | head -80
step oracle-notf32
MLX_ENABLE_TF32=0 GOMLX_TEST_DEVICE=gpu timeout 150 $B/models_oracle --nocapture 2>&1 | grep -E -A2 "relative error|test result|FAIL|panick" | grep -v "^--$" | head -80
step concurrent
for t in concurrent_engines sample cache; do GOMLX_TEST_DEVICE=gpu timeout 120 $B/$t 2>&1 | grep -E -A2 "test result|panick|FAIL"; done
step models
timeout 240 python3 scripts/make_bench_models.py qwen3-0.6b-bf16 qwen3-0.6b-4bit llama-3.2-1b-bf16 llama-3.2-1b-4bit gemma-3-1b-bf16 gemma-3-1b-4bit smollm2-135m-bf16 smollm2-135m-4bit 2>&1 | grep -v INFO | tail -9
step logits-check
echo "The capital of France is" > /tmp/p.txt
for m in gemma-3-1b-4bit gemma-3-1b-bf16; do
  M=.cache/bench-models/$m
  for cfg in "" "GOMLX_FUSE_PROJECTIONS=1 GOMLX_COMPILE=1"; do echo "gomlx $m [$cfg] $(env $cfg $B/gomlx classify --model $M --file /tmp/p.txt --logprobs 2>&1 | head -1)"; done
  python3 -c "
from mlx_lm import load; import mlx.core as mx
m,t=load('$M'); ids=t.encode('The capital of France is'); lg=m(mx.array([ids]))[0,-1].astype(mx.float32); lp=lg-mx.logsumexp(lg)
print('mlx-lm $m', int(mx.argmax(lg).item()), float(lp.max().item()), ids[:4])"
done
step ab
P="Write a long story about a lighthouse keeper who keeps a journal of every ship."
for m in qwen3-0.6b-bf16 gemma-3-1b-bf16; do for cfg in "" "GOMLX_FUSE_PROJECTIONS=1" "GOMLX_COMPILE=1" "GOMLX_FUSE_PROJECTIONS=1 GOMLX_COMPILE=1" "MLX_MAX_OPS_PER_BUFFER=20" "MLX_MAX_OPS_PER_BUFFER=400"; do
  echo "--- $m [$cfg] $(env $cfg timeout 60 $B/gomlx generate --model .cache/bench-models/$m --prompt "$P" --max-tokens 200 --ignore-chat-template --verbose 2>&1 >/dev/null | grep -E "Generation|Decode step" | tr '\n' ' ')"
done; done
step ab-mlx-lm
for m in qwen3-0.6b-bf16 gemma-3-1b-bf16; do for cfg in "" "MLX_MAX_OPS_PER_BUFFER=100" "MLX_MAX_OPS_PER_BUFFER=400"; do
  echo "--- mlx-lm $m [$cfg] $(env $cfg timeout 60 python3 -m mlx_lm generate --model .cache/bench-models/$m --prompt "$P" --max-tokens 200 --ignore-chat-template 2>&1 | grep -E "Generation" | tr '\n' ' ')"
done; done
step done
