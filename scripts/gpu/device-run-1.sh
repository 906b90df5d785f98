#!/bin/bash
# On the GPU machine, after device-setup (scripts/gpu/pack): GPU oracle tests, the bench models, decode A/B, bf16 benches.
exec > >(tee -a $OUT/log.txt) 2>&1
source .whl/dev2/device-setup.sh
step env; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; $B/gomlx info | head -4
step oracle-tf32
GOMLX_TEST_DEVICE=gpu timeout 240 $B/models_oracle --nocapture 2>&1 | grep -E "relative error|test result|FAIL|panick|rror" | head -50
step oracle-notf32
MLX_ENABLE_TF32=0 GOMLX_TEST_DEVICE=gpu timeout 240 $B/models_oracle --nocapture 2>&1 | grep -E "relative error|test result|FAIL|panick" | head -40
step concurrent
for t in concurrent_engines sample cache; do GOMLX_TEST_DEVICE=gpu timeout 120 $B/$t 2>&1 | grep -E "test result|panick|FAIL"; done
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
for m in qwen3-0.6b-bf16 gemma-3-1b-bf16; do for cfg in "" "GOMLX_FUSE_PROJECTIONS=1" "GOMLX_COMPILE=1" "GOMLX_FUSE_PROJECTIONS=1 GOMLX_COMPILE=1" "MLX_MAX_OPS_PER_BUFFER=20"; do
  echo "--- $m [$cfg] $(env $cfg timeout 60 $B/gomlx generate --model .cache/bench-models/$m --prompt "$P" --max-tokens 200 --ignore-chat-template --verbose 2>&1 >/dev/null | grep -E "Generation|Decode step" | tr '\n' ' ')"
done; done
mkdir -p /tmp/res
step bench
for m in smollm2-135m-bf16 qwen3-0.6b-bf16 llama-3.2-1b-bf16 gemma-3-1b-bf16; do
  timeout 150 $B/gomlx bench --model .cache/bench-models/$m --name $m --compare mlx-lm --python python3 --reps 3 --json --markdown $OUT/rows.md > /tmp/res/bench-$m.json 2> /tmp/res/bench-$m.err
  python3 -c "
import json; r=json.load(open('/tmp/res/bench-$m.json'))
print('$m', ', '.join(f\"{k} {v['gomlx']:.4g}/{v['mlx_lm']:.4g}={v['ratio']:.2f}\" for k, v in r['metrics'].items()))
print('  profile', [x.get('decode_profile_ms') for v in r['runs']['gomlx'].values() for x in v], 'agree', r['greedy_agreement'])" || tail -3 /tmp/res/bench-$m.err
done
tar cJf $OUT/res2.tar.xz -C /tmp res
step done
