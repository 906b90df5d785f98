#!/bin/bash
# On the GPU machine, after device-run-1.sh (its models): the bf16 benches.
exec > >(tee -a $OUT/log.txt) 2>&1
source .whl/dev2/device-setup.sh
mkdir -p /tmp/res
step bench-bf16
timeout 200 python3 scripts/make_bench_models.py smollm2-135m-bf16 qwen3-0.6b-bf16 llama-3.2-1b-bf16 gemma-3-1b-bf16 2>&1 | grep -v INFO | tail -4
for m in smollm2-135m-bf16 qwen3-0.6b-bf16 llama-3.2-1b-bf16 gemma-3-1b-bf16; do
  timeout 150 $B/gomlx bench --model .cache/bench-models/$m --name $m --compare mlx-lm --python python3 --reps 3 --json --markdown $OUT/rows.md > /tmp/res/bench-$m.json 2> /tmp/res/bench-$m.err
  python3 -c "
import json; r=json.load(open('/tmp/res/bench-$m.json'))
print('$m', ', '.join(f\"{k} {v['gomlx']:.4g}/{v['mlx_lm']:.4g}={v['ratio']:.2f}\" for k, v in r['metrics'].items()))
print('  profile', [x.get('decode_profile_ms') for v in r['runs']['gomlx'].values() for x in v], 'agree', r['greedy_agreement'])" || tail -3 /tmp/res/bench-$m.err
done
tar cJf $OUT/res2.tar.xz -C /tmp res
step done
