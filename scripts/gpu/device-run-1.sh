#!/bin/bash
# On the GPU machine (files from scripts/gpu/pack): MLX's quantised kernels probed, then the
# GPU oracle tests (TF32 on; the fused/compiled test alone without TF32; ORACLE_QUICK=1 stops
# there), TF32 off; the quantised ones again with every product dequantised
# first and with none), the multi-engine tests.
exec > >(tee -a $OUT/log.txt) 2>&1
source scripts/gpu/device-setup.sh
step env; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; $B/gomlx info | head -4
step probe
PYTHONUNBUFFERED=1 timeout 90 python3 scripts/gpu/probe_quant.py 2>&1 | tail -20
# Test output: each case's error line, failures with the panic message and two lines after.
t() { grep -E -A3 "relative error|test result|FAIL|panick|rror" | grep -v "^--$" | head -${1:-80}; }
step oracle-tf32
GOMLX_TEST_DEVICE=gpu timeout 200 $B/models_oracle --nocapture 2>&1 | t 90
step "engine vs full forward, TF32, one test at a time (a race shows as a pass here)"
GOMLX_TEST_DEVICE=gpu timeout 90 $B/models_oracle --nocapture --test-threads=1 engine_tokens _q4 _q8 2>&1 | t 40
step fused-and-compiled-alone
MLX_ENABLE_TF32=0 GOMLX_TEST_DEVICE=gpu timeout 60 $B/models_oracle --nocapture --test-threads=1 fused_and_compiled 2>&1 | t 40
[ -n "$ORACLE_QUICK" ] && { step done; exit 0; }
step oracle-notf32
MLX_ENABLE_TF32=0 GOMLX_TEST_DEVICE=gpu timeout 120 $B/models_oracle --nocapture 2>&1 | t 90
for rows in 1 0; do
  step "oracle-quantised GOMLX_GPU_DENSE_QMM_ROWS=$rows"
  GOMLX_GPU_DENSE_QMM_ROWS=$rows MLX_ENABLE_TF32=0 GOMLX_TEST_DEVICE=gpu timeout 60 $B/models_oracle --nocapture _q4 _q8 2>&1 | t 30
done
step concurrent
for t in concurrent_engines sample cache; do GOMLX_TEST_DEVICE=gpu timeout 90 $B/$t 2>&1 | grep -E -A3 "test result|panick|FAIL"; done
step done
