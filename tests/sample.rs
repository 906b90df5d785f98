//! Sampling: greedy, seeded draws, filters and temperature against hand-computed
//! distributions, logits processors against hand-computed values, logprobs.

use gomlx::mlx::{Array, Dtype};
use gomlx::sample::{Sampler, SamplerConfig};
use gomlx::Error;

fn arr(v: &[f32], shape: &[i32]) -> Array {
    Array::from_slice(v, shape).unwrap()
}

fn ids(v: &[u32]) -> Array {
    Array::from_slice(v, &[v.len() as i32]).unwrap()
}

fn f32s(a: &Array) -> Vec<f32> {
    a.to_vec::<f32>().unwrap()
}

fn u32s(a: &Array) -> Vec<u32> {
    a.to_vec::<u32>().unwrap()
}

fn sampler(c: SamplerConfig, vocab: usize) -> Sampler {
    Sampler::new(c, vocab).unwrap()
}

fn sampling(temperature: f32, seed: u64) -> SamplerConfig {
    SamplerConfig { temperature, seed: Some(seed), ..Default::default() }
}

/// Deterministic pseudo-random values in [-scale, scale).
fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            ((s as f32 / u32::MAX as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

fn host_argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

fn host_log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// softmax(row / t) restricted to `keep`, renormalised.
fn renormalised(row: &[f32], keep: &[usize], t: f64) -> Vec<f64> {
    let mut p = vec![0f64; row.len()];
    let m = keep.iter().map(|&i| row[i] as f64).fold(f64::NEG_INFINITY, f64::max);
    for &i in keep {
        p[i] = ((row[i] as f64 - m) / t).exp();
    }
    let z: f64 = p.iter().sum();
    p.iter().map(|x| x / z).collect()
}

const N: usize = 20_000;

/// Empirical token frequencies of `N` draws: one call on a batch of `N`
/// identical rows.
fn frequencies(config: SamplerConfig, row: &[f32]) -> Vec<f64> {
    let v = row.len();
    let logits = arr(row, &[1, v as i32]).broadcast_to(&[N as i32, v as i32]).unwrap();
    let mut s = sampler(config, v);
    let out = s.sample(&logits).unwrap();
    assert_eq!(out.tokens.shape(), vec![N as i32]);
    assert_eq!(out.tokens.dtype(), Dtype::U32);
    let mut counts = vec![0usize; v];
    for t in u32s(&out.tokens) {
        counts[t as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / N as f64).collect()
}

/// Each frequency within 4 binomial standard deviations of `expected`;
/// tokens of probability 0 never drawn.
fn assert_matches(freq: &[f64], expected: &[f64]) {
    for (i, (&f, &p)) in freq.iter().zip(expected).enumerate() {
        if p == 0.0 {
            assert_eq!(f, 0.0, "token {i} is filtered out but was drawn (freq {f}); freq {freq:?}");
        } else {
            let sd = (p * (1.0 - p) / N as f64).sqrt();
            assert!((f - p).abs() <= 4.0 * sd + 1e-9, "token {i}: freq {f} vs p {p} (4sd = {}); {freq:?} vs {expected:?}", 4.0 * sd);
        }
    }
}

// Probabilities (T = 1): id 2: 0.5609, 4: 0.2063, 0: 0.1252, 5: 0.0759, 3: 0.0279, 1: 0.0038.
const ROW: [f32; 6] = [0.5, -3.0, 2.0, -1.0, 1.0, 0.0];

#[test]
fn default_config_is_greedy() {
    let c = SamplerConfig::default();
    assert!(c.is_greedy());
    assert!(!c.has_processors());
    assert_eq!(c, SamplerConfig::greedy());
    assert_eq!((c.top_k, c.top_p, c.min_p, c.repetition_penalty, c.repetition_context_size), (0, 1.0, 0.0, 1.0, 20));
    c.validate().unwrap();
}

#[test]
fn greedy_is_argmax() {
    let (b, v) = (5usize, 37usize);
    let data = values(b * v, 7, 4.0);
    let expected: Vec<u32> = data.chunks(v).map(host_argmax).collect();
    for dtype in [Dtype::F32, Dtype::BF16, Dtype::F16] {
        let logits = arr(&data, &[b as i32, v as i32]).astype(dtype).unwrap();
        // bf16/f16 rounding may change the arg-max: compare with the rounded values.
        let rounded = logits.to_vec::<f32>().unwrap();
        let want: Vec<u32> = rounded.chunks(v).map(host_argmax).collect();
        if dtype == Dtype::F32 {
            assert_eq!(want, expected);
        }
        let mut s = sampler(SamplerConfig::default(), v);
        let out = s.sample(&logits).unwrap();
        assert_eq!(out.tokens.dtype(), Dtype::U32);
        assert_eq!(u32s(&out.tokens), want, "{dtype}");
        assert!(out.logprobs.is_none() && out.top_ids.is_none() && out.top_logprobs.is_none());
        // Greedy draws are the same every time.
        assert_eq!(u32s(&s.sample(&logits).unwrap().tokens), want);
    }
}

#[test]
fn top_k_one_equals_greedy_for_many_seeds() {
    let (b, v) = (16usize, 50usize);
    let data = values(b * v, 3, 2.0);
    let logits = arr(&data, &[b as i32, v as i32]);
    let greedy: Vec<u32> = data.chunks(v).map(host_argmax).collect();
    for seed in 0..25 {
        let mut s = sampler(SamplerConfig { top_k: 1, ..sampling(1.0, seed) }, v);
        for _ in 0..2 {
            assert_eq!(u32s(&s.sample(&logits).unwrap().tokens), greedy, "seed {seed}");
        }
    }
}

fn draws(seed: Option<u64>, steps: usize) -> Vec<u32> {
    let v = 8;
    let logits = arr(&values(v, 11, 0.5), &[1, v as i32]);
    let mut s = sampler(SamplerConfig { temperature: 1.0, seed, ..Default::default() }, v);
    (0..steps).map(|_| u32s(&s.sample(&logits).unwrap().tokens)[0]).collect()
}

#[test]
fn same_seed_same_sequence_different_seed_different_sequence() {
    let a = draws(Some(42), 50);
    assert_eq!(a, draws(Some(42), 50));
    // The key is split every step: the sequence is not one token repeated.
    assert!(a.iter().any(|&t| t != a[0]), "{a:?}");
    let b = draws(Some(43), 50);
    assert_ne!(a, b);
    assert_ne!(a, draws(Some(0), 50));
    // Without a seed the key comes from the clock; it still samples.
    assert_eq!(draws(None, 5).len(), 5);
}

#[test]
fn temperature_matches_softmax_over_t() {
    let all: Vec<usize> = (0..6).collect();
    for (t, seed) in [(1.0f32, 1u64), (0.7, 2), (2.5, 3)] {
        let f = frequencies(sampling(t, seed), &ROW);
        assert_matches(&f, &renormalised(&ROW, &all, t as f64));
    }
}

#[test]
fn top_k_keeps_the_k_most_likely() {
    let f = frequencies(SamplerConfig { top_k: 2, ..sampling(1.0, 5) }, &ROW);
    assert_matches(&f, &renormalised(&ROW, &[2, 4], 1.0));
    // Filters act before the temperature: top-4 then softmax(logits / 1.5).
    let f = frequencies(SamplerConfig { top_k: 4, ..sampling(1.5, 6) }, &ROW);
    assert_matches(&f, &renormalised(&ROW, &[2, 4, 0, 5], 1.5));
    // top_k >= V is off.
    let f = frequencies(SamplerConfig { top_k: 6, ..sampling(1.0, 7) }, &ROW);
    assert_matches(&f, &renormalised(&ROW, &[0, 1, 2, 3, 4, 5], 1.0));
}

#[test]
fn top_p_keeps_the_nucleus() {
    // Mass above each token (descending): id 2: 0, 4: 0.561, 0: 0.767, 5: 0.892, ...
    // top_p 0.8 keeps those with mass-above < 0.8: {2, 4, 0}.
    let f = frequencies(SamplerConfig { top_p: 0.8, ..sampling(1.0, 8) }, &ROW);
    assert_matches(&f, &renormalised(&ROW, &[2, 4, 0], 1.0));
    // top_p 0.5: only the top token.
    let f = frequencies(SamplerConfig { top_p: 0.5, ..sampling(1.0, 9) }, &ROW);
    assert_matches(&f, &renormalised(&ROW, &[2], 1.0));
    // top_p 0.95 keeps {2, 4, 0, 5}, here at temperature 0.8.
    let f = frequencies(SamplerConfig { top_p: 0.95, ..sampling(0.8, 10) }, &ROW);
    assert_matches(&f, &renormalised(&ROW, &[2, 4, 0, 5], 0.8));
}

#[test]
fn min_p_keeps_tokens_near_the_top() {
    // p_max = 0.5609; min_p 0.3 → threshold 0.168: {2 (0.561), 4 (0.206)}.
    let f = frequencies(SamplerConfig { min_p: 0.3, ..sampling(1.0, 11) }, &ROW);
    assert_matches(&f, &renormalised(&ROW, &[2, 4], 1.0));
    // min_p 0.2 → threshold 0.112: {2, 4, 0 (0.125)}.
    let f = frequencies(SamplerConfig { min_p: 0.2, ..sampling(1.0, 12) }, &ROW);
    assert_matches(&f, &renormalised(&ROW, &[2, 4, 0], 1.0));
    // min_tokens_to_keep 4 overrides the threshold.
    let f = frequencies(SamplerConfig { min_p: 0.3, min_tokens_to_keep: 4, ..sampling(1.0, 13) }, &ROW);
    assert_matches(&f, &renormalised(&ROW, &[2, 4, 0, 5], 1.0));
}

#[test]
fn filters_combine() {
    // top_p 0.95 → {2, 4, 0, 5}; min_p 0.1 (threshold 0.056) → {2, 4, 0, 5}; top_k 3 → {2, 4, 0}.
    let c = SamplerConfig { top_p: 0.95, min_p: 0.1, top_k: 3, ..sampling(1.2, 14) };
    let f = frequencies(c, &ROW);
    assert_matches(&f, &renormalised(&ROW, &[2, 4, 0], 1.2));
}

#[test]
fn logit_bias_adds_and_bans() {
    let c = SamplerConfig { logit_bias: vec![(1, 2.5), (3, -1.0), (1, 0.5), (2, f32::NEG_INFINITY)], ..Default::default() };
    let s = sampler(c.clone(), 6);
    let x = s.process_logits(&arr(&ROW, &[1, 6])).unwrap();
    assert_eq!(x.dtype(), Dtype::F32);
    assert_eq!(f32s(&x), vec![0.5, 0.0, f32::NEG_INFINITY, -2.0, 1.0, 0.0]);
    // The banned arg-max is never chosen, greedy or sampled.
    let mut s = sampler(c.clone(), 6);
    assert_eq!(u32s(&s.sample(&arr(&ROW, &[1, 6])).unwrap().tokens), vec![4]);
    let f = frequencies(SamplerConfig { temperature: 1.0, seed: Some(15), ..c }, &ROW);
    assert_eq!(f[2], 0.0);
    assert_matches(&f, &renormalised(&[0.5, 0.0, f32::NEG_INFINITY, -2.0, 1.0, 0.0], &[0, 1, 3, 4, 5], 1.0));
}

#[test]
fn repetition_penalty_over_the_context_window() {
    let logits = arr(&[2.0, -1.0, 0.5, -2.0, 1.0, 0.0], &[1, 6]);
    let mut s = sampler(SamplerConfig { repetition_penalty: 2.0, repetition_context_size: 3, ..Default::default() }, 6);
    // Nothing observed yet: unchanged.
    assert_eq!(f32s(&s.process_logits(&logits).unwrap()), vec![2.0, -1.0, 0.5, -2.0, 1.0, 0.0]);
    // History 4, 0, 1 (prompt), 3, 0 (generated): the window is the last 3 = {1, 3, 0}.
    s.observe_prompt(&ids(&[4, 0, 1])).unwrap();
    s.observe(&ids(&[3])).unwrap();
    s.observe(&ids(&[0])).unwrap();
    assert_eq!(u32s(s.history().0.unwrap()), vec![1, 3, 0]);
    assert_eq!(f32s(&s.process_logits(&logits).unwrap()), vec![1.0, -2.0, 0.5, -4.0, 1.0, 0.0]);
    // Per-row windows in a batch; duplicates penalise once.
    let mut s = sampler(SamplerConfig { repetition_penalty: 1.5, ..Default::default() }, 6);
    s.observe_prompt(&Array::from_slice(&[2u32, 2, 2, 5, 1, 0], &[2, 3]).unwrap()).unwrap();
    let two = arr(&[3.0, 3.0, 3.0, 3.0, 3.0, -3.0, 3.0, 3.0, 3.0, 3.0, 3.0, -3.0], &[2, 6]);
    assert_eq!(f32s(&s.process_logits(&two).unwrap()), vec![3.0, 3.0, 2.0, 3.0, 3.0, -3.0, 2.0, 2.0, 3.0, 3.0, 3.0, -4.5]);
    // Keeping only row 1 of the history.
    s.select_rows(&ids(&[1])).unwrap();
    assert_eq!(u32s(s.history().0.unwrap()), vec![5, 1, 0]);
}

#[test]
fn presence_and_frequency_penalties_count_generated_tokens() {
    let logits = arr(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], &[1, 6]);
    let mut s = sampler(SamplerConfig { presence_penalty: 0.5, frequency_penalty: 0.25, ..Default::default() }, 6);
    // Prompt tokens do not count (OpenAI semantics).
    s.observe_prompt(&ids(&[1, 1, 4])).unwrap();
    assert_eq!(f32s(&s.process_logits(&logits).unwrap()), vec![1.0; 6]);
    s.observe(&ids(&[2])).unwrap();
    s.observe(&ids(&[2])).unwrap();
    s.observe(&Array::from_slice(&[5u32, 2], &[1, 2]).unwrap()).unwrap();
    // 2: count 3 → 1 - 0.5 - 0.75; 5: count 1 → 1 - 0.5 - 0.25.
    assert_eq!(f32s(&s.process_logits(&logits).unwrap()), vec![1.0, 1.0, -0.25, 1.0, 1.0, 0.25]);
    assert_eq!(f32s(s.history().1.unwrap()), vec![0.0, 0.0, 3.0, 0.0, 0.0, 1.0]);
    // Only presence / only frequency.
    let mut p = sampler(SamplerConfig { presence_penalty: -1.0, ..Default::default() }, 6);
    p.observe(&ids(&[0])).unwrap();
    p.observe(&ids(&[0])).unwrap();
    assert_eq!(f32s(&p.process_logits(&logits).unwrap()), vec![2.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    let mut f = sampler(SamplerConfig { frequency_penalty: 0.5, ..Default::default() }, 6);
    f.observe(&ids(&[3])).unwrap();
    f.observe(&ids(&[3])).unwrap();
    assert_eq!(f32s(&f.process_logits(&logits).unwrap()), vec![1.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
}

#[test]
fn processors_apply_in_mlx_lm_order() {
    // bias, then repetition, then presence/frequency:
    // id 0: 1.0 - 3 = -2 → ×2 = -4 → -1 (presence) - 0.5 (frequency) = -5.5.
    // id 1: 4.0 + 0 → /2 = 2 → -1 - 2×0.5 = 0.
    let c = SamplerConfig { logit_bias: vec![(0, -3.0)], repetition_penalty: 2.0, presence_penalty: 1.0, frequency_penalty: 0.5, ..Default::default() };
    let mut s = sampler(c, 3);
    s.observe(&ids(&[0])).unwrap();
    s.observe(&ids(&[1])).unwrap();
    s.observe(&ids(&[1])).unwrap();
    let x = s.process_logits(&arr(&[1.0, 4.0, 0.5], &[1, 3]).astype(Dtype::BF16).unwrap()).unwrap();
    assert_eq!(x.dtype(), Dtype::F32);
    assert_eq!(f32s(&x), vec![-5.5, 0.0, 0.5]);
}

#[test]
fn sample_records_its_tokens() {
    // Greedy with a frequency penalty alternates between the two top tokens.
    let logits = arr(&[3.0, 2.9, 0.0, 0.0], &[1, 4]);
    let mut s = sampler(SamplerConfig { frequency_penalty: 1.0, ..Default::default() }, 4);
    let seq: Vec<u32> = (0..4).map(|_| u32s(&s.sample(&logits).unwrap().tokens)[0]).collect();
    assert_eq!(seq, vec![0, 1, 0, 1]);
    // Repetition penalty: 0 is chosen, then penalised below 1.
    let mut s = sampler(SamplerConfig { repetition_penalty: 1.1, ..Default::default() }, 4);
    let seq: Vec<u32> = (0..2).map(|_| u32s(&s.sample(&logits).unwrap().tokens)[0]).collect();
    assert_eq!(seq, vec![0, 1]);
}

fn check_logprobs(config: SamplerConfig, data: &[f32], b: usize, v: usize, processed: &[f32]) {
    let n = config.top_logprobs;
    let mut s = sampler(config, v);
    let out = s.sample(&arr(data, &[b as i32, v as i32])).unwrap();
    let tokens = u32s(&out.tokens);
    let lp = f32s(out.logprobs.as_ref().unwrap());
    assert_eq!(lp.len(), b);
    let top_ids = u32s(out.top_ids.as_ref().unwrap());
    let top_lp = f32s(out.top_logprobs.as_ref().unwrap());
    assert_eq!(out.top_ids.as_ref().unwrap().shape(), vec![b as i32, n as i32]);
    for r in 0..b {
        let want = host_log_softmax(&processed[r * v..(r + 1) * v]);
        let t = tokens[r] as usize;
        assert!((lp[r] as f64 - want[t]).abs() < 1e-5, "row {r}: {} vs {}", lp[r], want[t]);
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&a, &b| want[b].partial_cmp(&want[a]).unwrap());
        let ids_r = &top_ids[r * n..(r + 1) * n];
        let lp_r = &top_lp[r * n..(r + 1) * n];
        assert_eq!(ids_r.iter().map(|&i| i as usize).collect::<Vec<_>>(), order[..n].to_vec(), "row {r}");
        for j in 0..n {
            assert!((lp_r[j] as f64 - want[ids_r[j] as usize]).abs() < 1e-5);
            if j > 0 {
                assert!(lp_r[j - 1] >= lp_r[j]);
            }
        }
    }
}

#[test]
fn logprobs_are_log_softmax_of_processed_logits() {
    let (b, v) = (4usize, 40usize);
    let data = values(b * v, 21, 3.0);
    // Greedy.
    check_logprobs(SamplerConfig { logprobs: true, top_logprobs: 5, ..Default::default() }, &data, b, v, &data);
    // Sampled with temperature and a filter: the logprob is pre-filter, pre-temperature.
    let c = SamplerConfig { logprobs: true, top_logprobs: 3, top_k: 4, ..sampling(2.0, 17) };
    check_logprobs(c, &data, b, v, &data);
    // With a processor: the logprob is of the biased logits.
    let mut biased = data.clone();
    for r in 0..b {
        biased[r * v + 7] += 5.0;
    }
    let c = SamplerConfig { logprobs: true, top_logprobs: v, logit_bias: vec![(7, 5.0)], ..sampling(1.0, 18) };
    check_logprobs(c, &data, b, v, &biased);
    // logprobs without alternatives.
    let mut s = sampler(SamplerConfig { logprobs: true, ..Default::default() }, v);
    let out = s.sample(&arr(&data, &[b as i32, v as i32])).unwrap();
    assert!(out.logprobs.is_some() && out.top_ids.is_none() && out.top_logprobs.is_none());
}

fn err_of(c: SamplerConfig) -> String {
    match Sampler::new(c, 10) {
        Err(Error::InvalidArgument(m)) => m,
        Err(e) => panic!("expected InvalidArgument, got {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn bad_configs_name_the_field() {
    let d = SamplerConfig::default;
    let cases: Vec<(&str, SamplerConfig)> = vec![
        ("temperature", SamplerConfig { temperature: -0.5, ..d() }),
        ("temperature", SamplerConfig { temperature: f32::NAN, ..d() }),
        ("temperature", SamplerConfig { temperature: f32::INFINITY, ..d() }),
        ("top_p", SamplerConfig { top_p: 0.0, ..d() }),
        ("top_p", SamplerConfig { top_p: 1.5, ..d() }),
        ("top_p", SamplerConfig { top_p: f32::NAN, ..d() }),
        ("min_p", SamplerConfig { min_p: -0.1, ..d() }),
        ("min_p", SamplerConfig { min_p: 1.1, ..d() }),
        ("min_p", SamplerConfig { min_p: f32::NAN, ..d() }),
        ("min_tokens_to_keep", SamplerConfig { min_tokens_to_keep: 0, ..d() }),
        ("repetition_penalty", SamplerConfig { repetition_penalty: 0.0, ..d() }),
        ("repetition_penalty", SamplerConfig { repetition_penalty: f32::NAN, ..d() }),
        ("repetition_context_size", SamplerConfig { repetition_context_size: 0, ..d() }),
        ("presence_penalty", SamplerConfig { presence_penalty: f32::NAN, ..d() }),
        ("frequency_penalty", SamplerConfig { frequency_penalty: f32::INFINITY, ..d() }),
        ("logit_bias", SamplerConfig { logit_bias: vec![(1, f32::NAN)], ..d() }),
        ("logit_bias", SamplerConfig { logit_bias: vec![(1, f32::INFINITY)], ..d() }),
        ("logit_bias", SamplerConfig { logit_bias: vec![(10, 1.0)], ..d() }),
        ("top_logprobs", SamplerConfig { top_logprobs: 2, ..d() }),
        ("top_logprobs", SamplerConfig { logprobs: true, top_logprobs: 11, ..d() }),
    ];
    for (field, c) in cases {
        let m = err_of(c.clone());
        assert!(m.starts_with(field), "{c:?}: '{m}' should name {field}");
    }
    // Edge values that are fine.
    for c in [
        SamplerConfig { top_p: 1.0, min_p: 1.0, top_k: 1000, ..sampling(0.1, 1) },
        SamplerConfig { logit_bias: vec![(9, f32::NEG_INFINITY)], logprobs: true, top_logprobs: 10, ..d() },
    ] {
        Sampler::new(c, 10).unwrap();
    }
}

#[test]
fn bad_inputs_are_errors() {
    let mut s = sampler(SamplerConfig::default(), 6);
    assert!(matches!(s.sample(&arr(&ROW, &[6])), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.sample(&arr(&ROW, &[2, 3])), Err(Error::InvalidArgument(_))));
    let int_logits = Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[1, 6]).unwrap();
    assert!(matches!(s.sample(&int_logits), Err(Error::InvalidArgument(_))));
    assert!(matches!(Sampler::new(SamplerConfig::default(), 0), Err(Error::InvalidArgument(_))));
    // History of 2 rows, logits of 1.
    let mut s = sampler(SamplerConfig { frequency_penalty: 1.0, ..Default::default() }, 6);
    s.observe(&ids(&[1, 2])).unwrap();
    assert!(matches!(s.sample(&arr(&ROW, &[1, 6])), Err(Error::InvalidArgument(_))));
    s.reset();
    s.sample(&arr(&ROW, &[1, 6])).unwrap();
}

#[test]
fn config_round_trips_through_json() {
    let c = SamplerConfig { temperature: 0.7, top_p: 0.9, logit_bias: vec![(3, -1.5)], seed: Some(7), logprobs: true, top_logprobs: 2, ..Default::default() };
    let j = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<SamplerConfig>(&j).unwrap(), c);
    // Missing fields take their defaults; unknown ones are rejected.
    let partial: SamplerConfig = serde_json::from_str(r#"{"temperature": 0.5, "logit_bias": [[1, 2.0]]}"#).unwrap();
    assert_eq!(partial, SamplerConfig { temperature: 0.5, logit_bias: vec![(1, 2.0)], ..Default::default() });
    assert!(serde_json::from_str::<SamplerConfig>(r#"{"temp": 0.5}"#).is_err());
}
