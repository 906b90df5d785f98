#!/bin/bash
# On a machine with several GPUs (issue 26, docs/distributed.md), after the install of
# device-run-1.sh: one part per call, DIST_STEP (each fits a 10-minute call, DIST_BUDGET s):
#   tp        qwen3-8b-bf16 (fits one GPU) on 1 GPU and split over 2, 4, 8 (those present):
#             gomlx (`gomlx launch --backend nccl`) against mlx-lm's sharded_load on the same ranks
#   big-make  writes llama-3.1-70b-bf16 (random weights, Llama-3.1-70B's shape, 141 GB)
#   big       that model over the GPU counts whose memory holds it, gomlx against mlx-lm
#   replicas  go-i18n's classify (10 000 sentences, gemma-3-1b-bf16) with --replicas 1, 2, 4, 8
# Markdown rows go to $OUT/dist.md, reports to $OUT/*.json.
exec > >(tee -a $OUT/log.txt) 2>&1
source scripts/gpu/device-setup.sh
end=$(( $(date +%s) - SECONDS + ${DIST_BUDGET:-570} ))
left() { echo $(( end - $(date +%s) )); }
gpus=$(nvidia-smi -L | wc -l)
gib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n1 | awk '{print int($1/1024)}')
echo "$gpus GPU(s) of $gib GiB"
# One bench of model $1 over $2 ranks (1 = no launch), named $3, at most $4 seconds.
bench_over() {
  local m=$1 n=$2 name=$3 t=$4 run=()
  [ "$n" -gt 1 ] && run=($B/gomlx launch -n "$n" --backend nccl --)
  timeout "$t" "${run[@]}" $B/gomlx bench --model .cache/bench-models/$m --name "$name" --compare mlx-lm --python python3 \
    --reps 2 --json --markdown $OUT/dist.md > $OUT/$name.json 2> $OUT/$name.err
  echo "rc=$?"; report $OUT/$name.json
}
case ${DIST_STEP:-tp} in
tp)
  step "model qwen3-8b-bf16"; timeout 200 python3 scripts/make_bench_models.py qwen3-8b-bf16 2>&1 | grep -v INFO | tail -2
  for n in 1 2 4 8; do
    [ $n -le $gpus ] || break; [ $(left) -lt 90 ] && { echo "tp$n: skipped, $(left) s left"; break; }
    step "qwen3-8b-bf16 over $n GPU(s)"; bench_over qwen3-8b-bf16 $n qwen3-8b-bf16-tp$n $(( $(left) < 200 ? $(left) - 5 : 200 ))
  done ;;
big-make)
  step "model llama-3.1-70b-bf16"; timeout $(( $(left) - 5 )) python3 scripts/make_bench_models.py llama-3.1-70b-bf16 2>&1 | grep -v INFO | tail -2
  du -sh .cache/bench-models/llama-3.1-70b-bf16 ;;
big)
  for n in 2 4 8; do
    # 141 GB of weights plus room for the activations and KV of the bench.
    [ $n -le $gpus ] || break; [ $(( n * gib )) -lt 160 ] && { echo "tp$n: $(( n * gib )) GiB cannot hold 141 GB"; continue; }
    [ $(left) -lt 150 ] && { echo "tp$n: skipped, $(left) s left"; break; }
    step "llama-3.1-70b-bf16 over $n GPUs"; bench_over llama-3.1-70b-bf16 $n llama-3.1-70b-bf16-tp$n $(( $(left) - 5 ))
  done ;;
replicas)
  step "model gemma-3-1b-bf16"; timeout 120 python3 scripts/make_bench_models.py gemma-3-1b-bf16 2>&1 | grep -v INFO | tail -2
  for n in 1 2 4 8; do
    [ $n -le $gpus ] || break; [ $(left) -lt 60 ] && { echo "replicas $n: skipped, $(left) s left"; break; }
    step "go-i18n classify, $n replica(s)"
    timeout 150 $B/gomlx bench --model .cache/bench-models/gemma-3-1b-bf16 --name gemma-3-1b-bf16-i18n-r$n --replicas $n --compare mlx-lm --python python3 \
      --reps 2 --classify-only --classify-prompts 10000 --prompt-tokens 20 --prompt-spread 10 --prefix-tokens 64 --json --markdown $OUT/dist.md \
      > $OUT/i18n-r$n.json 2> $OUT/i18n-r$n.err
    echo "rc=$?"; report $OUT/i18n-r$n.json
  done ;;
esac
step done
