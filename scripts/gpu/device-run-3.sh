#!/bin/bash
# On the GPU machine, after device-run-1.sh (its models): the 4-bit benches.
exec > >(tee -a $OUT/log.txt) 2>&1
source .whl/dev2/device-setup.sh
mkdir -p /tmp/res3
step bench-4bit
timeout 200 python3 scripts/make_bench_models.py smollm2-135m-4bit qwen3-0.6b-4bit llama-3.2-1b-4bit gemma-3-1b-4bit 2>&1 | grep -v INFO | tail -4
for m in smollm2-135m-4bit qwen3-0.6b-4bit llama-3.2-1b-4bit gemma-3-1b-4bit; do
  timeout 150 $B/gomlx bench --model .cache/bench-models/$m --name $m --compare mlx-lm --python python3 --reps 3 --json --markdown $OUT/rows.md > /tmp/res3/bench-$m.json 2> /tmp/res3/bench-$m.err
  python3 -c "
import json; r=json.load(open('/tmp/res3/bench-$m.json'))
print('$m', ', '.join(f\"{k} {v['gomlx']:.4g}/{v['mlx_lm']:.4g}={v['ratio']:.2f}\" for k, v in r['metrics'].items()))
print('  profile', [x.get('decode_profile_ms') for v in r['runs']['gomlx'].values() for x in v], 'agree', r['greedy_agreement'])" || tail -3 /tmp/res3/bench-$m.err
done
tar cJf $OUT/res3.tar.xz -C /tmp res3
step done
