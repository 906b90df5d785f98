#!/bin/bash
# On the GPU machine, after device-run-1.sh (its models): 4-bit benches, classify at 1024 prompts, go-i18n's 10 000 sentences.
exec > >(tee -a $OUT/log.txt) 2>&1
source .whl/dev2/device-setup.sh
mkdir -p /tmp/res3
step bench-4bit
for m in smollm2-135m-4bit qwen3-0.6b-4bit llama-3.2-1b-4bit gemma-3-1b-4bit; do
  timeout 150 $B/gomlx bench --model .cache/bench-models/$m --name $m --compare mlx-lm --python python3 --reps 3 --json --markdown $OUT/rows.md > /tmp/res3/bench-$m.json 2> /tmp/res3/bench-$m.err
  python3 -c "
import json; r=json.load(open('/tmp/res3/bench-$m.json'))
print('$m', ', '.join(f\"{k} {v['gomlx']:.4g}/{v['mlx_lm']:.4g}={v['ratio']:.2f}\" for k, v in r['metrics'].items()))
print('  profile', [x.get('decode_profile_ms') for v in r['runs']['gomlx'].values() for x in v], 'agree', r['greedy_agreement'])" || tail -3 /tmp/res3/bench-$m.err
done
step classify-1024
for m in qwen3-0.6b-bf16 llama-3.2-1b-bf16 gemma-3-1b-bf16 gemma-3-1b-4bit; do
  timeout 120 $B/gomlx bench --model .cache/bench-models/$m --name $m-c1024 --compare mlx-lm --python python3 --reps 3 --classify-only --classify-prompts 1024 --json --markdown $OUT/rows.md > /tmp/res3/c1024-$m.json 2> /tmp/res3/c1024-$m.err
  python3 -c "
import json; r=json.load(open('/tmp/res3/c1024-$m.json')); x=r['metrics']
print('$m 1024', {k: round(x[k]['ratio'],2) for k in ('classify_prompts_s','classify_prefixed_prompts_s','load_s','peak_memory_bytes')}, x['classify_prompts_s'], x['classify_prefixed_prompts_s'], 'agree', r['greedy_agreement']['classify'])" || tail -3 /tmp/res3/c1024-$m.err
done
step go-i18n
for m in gemma-3-1b-bf16 gemma-3-1b-4bit; do
  timeout 200 $B/gomlx bench --model .cache/bench-models/$m --name $m-i18n --compare mlx-lm --python python3 --reps 3 --classify-only --classify-prompts 10000 --prompt-tokens 20 --prompt-spread 10 --prefix-tokens 64 --json > /tmp/res3/i18n-$m.json 2> /tmp/res3/i18n-$m.err
  python3 -c "
import json; r=json.load(open('/tmp/res3/i18n-$m.json')); x=r['metrics']
print('$m i18n 10000', 'plain', x['classify_prompts_s'], 'shared prefix', x['classify_prefixed_prompts_s'], 'agree', r['greedy_agreement']['classify'])" || tail -3 /tmp/res3/i18n-$m.err
done
tar cJf $OUT/res3.tar.xz -C /tmp res3
step done
