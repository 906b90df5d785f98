#!/bin/bash
# On the GPU machine (files from scripts/gpu/pack), the first call after the one that copies
# the wheel's first part: the install, the machine's numbers (GPU, driver, CUDA, copy
# bandwidth), the GPU oracle tests, then the bench models and MLX's kernel cache for the
# 4-bit ones (for device-run-2.sh). Order: the engine-vs-forward diagnostics alone on a cold
# kernel cache with TF32 (MLX's default), the whole oracle with TF32 (parallel test threads),
# the fused/compiled test alone and the whole oracle with MLX_ENABLE_TF32=0, the multi-engine
# tests. ORACLE_ONLY=1 stops before the models; PROBE=1 adds MLX's quantised-kernel probe;
# DENSE=1 the quantised cases with every product dequantised first and with none.
exec > >(tee -a $OUT/log.txt) 2>&1
source scripts/gpu/device-setup.sh
step env
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
nvcc --version | tail -2; $B/gomlx info | head -4
python3 -c "
import torch, time
x = torch.empty(2 << 30, dtype=torch.uint8, device='cuda'); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): y.copy_(x)
torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 20
print(f'device-to-device copy of 2 GiB: {2 * x.numel() / dt / 1e12:.2f} TB/s (bytes read + written)')"
if [ -n "$PROBE" ]; then step probe; PYTHONUNBUFFERED=1 timeout 90 python3 scripts/gpu/probe_quant.py 2>&1 | tail -20; fi
# Test output: each case's error line, failures with the panic message and the lines after.
t() { grep -E -A12 "relative error|below the best|test result|FAIL|panick|rror" | grep -v "^--$" | head -${1:-80}; }
step "engine vs full forward and causal prefix, TF32, one test at a time, cold kernel cache"
GOMLX_TEST_DEVICE=gpu timeout 100 $B/models_oracle --nocapture --test-threads=1 engine_tokens prefix_logits 2>&1 | t 140
step oracle-tf32
GOMLX_TEST_DEVICE=gpu timeout 150 $B/models_oracle --nocapture 2>&1 | grep -v "log-probability off by" | t 120
step fused-and-compiled-alone-notf32
MLX_ENABLE_TF32=0 GOMLX_TEST_DEVICE=gpu timeout 60 $B/models_oracle --nocapture --test-threads=1 fused_and_compiled 2>&1 | t 40
step oracle-notf32
MLX_ENABLE_TF32=0 GOMLX_TEST_DEVICE=gpu timeout 120 $B/models_oracle --nocapture 2>&1 | grep -v "log-probability off by" | t 90
if [ -n "$DENSE" ]; then for rows in 1 0; do
  step "oracle-quantised GOMLX_GPU_DENSE_QMM_ROWS=$rows"
  GOMLX_GPU_DENSE_QMM_ROWS=$rows MLX_ENABLE_TF32=0 GOMLX_TEST_DEVICE=gpu timeout 60 $B/models_oracle --nocapture _q4 _q8 2>&1 | t 30
done; fi
step concurrent
for x in concurrent_engines sample cache; do GOMLX_TEST_DEVICE=gpu timeout 90 $B/$x 2>&1 | grep -E -A3 "test result|panick|FAIL"; done
[ -n "$ORACLE_ONLY" ] && { step done; exit 0; }
step models
timeout 200 python3 scripts/make_bench_models.py qwen3-0.6b-bf16 qwen3-0.6b-4bit llama-3.2-1b-bf16 llama-3.2-1b-4bit gemma-3-1b-bf16 gemma-3-1b-4bit smollm2-135m-bf16 smollm2-135m-4bit 2>&1 | grep -v INFO | tail -9
step "4-bit kernels: MLX compiles each quantised kernel shape with NVRTC on first use (cached in /tmp/mlx)"
P="Write a long story about a lighthouse keeper."
for m in smollm2-135m-4bit qwen3-0.6b-4bit llama-3.2-1b-4bit gemma-3-1b-4bit; do
  s=$(date +%s)
  timeout 90 $B/gomlx generate --model .cache/bench-models/$m --prompt "$P" --max-tokens 8 --ignore-chat-template >/dev/null 2>&1; g=$?
  timeout 90 python3 -m mlx_lm generate --model .cache/bench-models/$m --prompt "$P" --max-tokens 8 --ignore-chat-template >/dev/null 2>&1
  echo "$m: gomlx rc=$g, mlx-lm rc=$?, $(( $(date +%s) - s )) s"
done
step done
