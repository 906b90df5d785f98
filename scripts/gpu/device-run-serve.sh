#!/bin/bash
# On the GPU machine (files from scripts/gpu/pack; install as in device-run-1.sh): `gomlx serve`
# against `mlx_lm.server` on the same random-weight bench model (SERVE_MODEL, default
# qwen3-0.6b-bf16, made here by make_bench_models.py), with scripts/bench_server.py as the one
# client for both, at CLIENTS concurrent streaming clients (default 1,8,32,64); both servers
# decode up to BATCH rows (default 64) per step. Markdown rows go to $OUT/serve.md.
exec > >(tee -a $OUT/log.txt) 2>&1
source scripts/gpu/device-setup.sh
m=${SERVE_MODEL:-qwen3-0.6b-bf16}
clients=${CLIENTS:-1,8,32,64}
batch=${BATCH:-64}
max_tokens=${MAX_TOKENS:-64}
step "model $m"
timeout 200 python3 scripts/make_bench_models.py $m 2>&1 | grep -v INFO | tail -2
model=$PWD/.cache/bench-models/$m
up() { python3 - "$1" <<'PY'
import sys, time, urllib.request
for _ in range(600):
    try:
        urllib.request.urlopen(sys.argv[1] + "/v1/models", timeout=2); sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit(1)
PY
}
rows=$OUT/serve.md
echo "| server | clients | requests | requests/s | tokens/s (all clients) | TTFT p50 (s) | TTFT p99 (s) |" > $rows
echo "| --- | --- | --- | --- | --- | --- | --- |" >> $rows
step "gomlx serve"
$B/gomlx serve --model $model --port 8391 --max-batch $batch --preload 2> $OUT/serve-gomlx.log &
pid=$!
if up http://127.0.0.1:8391; then
  timeout 240 python3 scripts/bench_server.py gomlx http://127.0.0.1:8391 $m $clients $max_tokens 2 >> $rows
else tail -5 $OUT/serve-gomlx.log; fi
kill -TERM $pid; wait $pid
step "mlx_lm.server"
python3 -m mlx_lm.server --model $model --port 8392 --decode-concurrency $batch --log-level WARNING 2> $OUT/serve-mlx-lm.log &
pid=$!
if up http://127.0.0.1:8392; then
  timeout 240 python3 scripts/bench_server.py mlx_lm.server http://127.0.0.1:8392 $model $clients $max_tokens 2 >> $rows
else tail -5 $OUT/serve-mlx-lm.log; fi
kill -TERM $pid; wait $pid
cat $rows
step done
