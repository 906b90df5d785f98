//! Training data: mlx-lm's three JSONL formats through a tiny character-level
//! tokenizer with a chat template (tests/fixtures/lora/tokenizer), prompt
//! masking, batching by length, seeded shuffling, truncation; and the
//! optimizer pieces (AdamW, schedule, clipping) against hand-computed values.

use gomlx::mlx::Array;
use gomlx::text::Tokenizer;
use gomlx::train::{data, optim, step, Batch, Batches, DataOptions, Example};
use std::path::PathBuf;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lora/tokenizer")).unwrap()
}

fn ids(tok: &Tokenizer, s: &str) -> Vec<u32> {
    tok.encode(s, false).unwrap()
}

fn write(dir: &std::path::Path, name: &str, lines: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gomlx-lora-data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn text_records_get_bos_and_eos() {
    let tok = tokenizer();
    let (bos, eos) = (tok.bos_id().unwrap(), tok.eos_ids()[0]);
    let v = serde_json::json!({"text": "hi!"});
    let ex = data::example_from_json(&tok, &v, &DataOptions::default()).unwrap();
    let mut want = vec![bos];
    want.extend(ids(&tok, "hi!"));
    want.push(eos);
    assert_eq!(ex, Example { tokens: want, offset: 0 });
    assert_eq!(ex.tokens.len(), 5);
    // Masking a text record is refused, as mlx-lm does.
    assert!(data::example_from_json(&tok, &v, &DataOptions { mask_prompt: true }).is_err());
}

#[test]
fn completion_and_chat_records_use_the_chat_template_and_mask_the_prompt() {
    let tok = tokenizer();
    let bos = tok.bos_id().unwrap();
    let user = tok.token_to_id("<|user|>").unwrap();
    let asst = tok.token_to_id("<|assistant|>").unwrap();
    let end = tok.token_to_id("<|end|>").unwrap();
    let mut want = vec![bos, user];
    want.extend(ids(&tok, "2+2?"));
    want.push(end);
    let prompt_len = want.len() + 1; // + <|assistant|> of the generation prompt
    want.push(asst);
    want.extend(ids(&tok, "4"));
    want.push(end);

    let pc = serde_json::json!({"prompt": "2+2?", "completion": "4"});
    let ex = data::example_from_json(&tok, &pc, &DataOptions::default()).unwrap();
    assert_eq!(ex, Example { tokens: want.clone(), offset: 0 });
    let ex = data::example_from_json(&tok, &pc, &DataOptions { mask_prompt: true }).unwrap();
    assert_eq!(ex, Example { tokens: want.clone(), offset: prompt_len });

    let chat = serde_json::json!({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]});
    let ex = data::example_from_json(&tok, &chat, &DataOptions { mask_prompt: true }).unwrap();
    assert_eq!(ex, Example { tokens: want.clone(), offset: prompt_len });
    // Only the completion ("4" and <|end|>) counts in the loss.
    let b = Batch::new(vec![ex.tokens.clone()], vec![ex.offset]).unwrap();
    assert_eq!(b.loss_tokens(), 2);
    let (_, targets, mask) = b.arrays().unwrap();
    let t = targets.to_vec::<i32>().unwrap();
    let m = mask.to_vec::<f32>().unwrap();
    let counted: Vec<i32> = t.iter().zip(&m).filter(|(_, &m)| m > 0.0).map(|(&t, _)| t).collect();
    assert_eq!(counted, vec![ids(&tok, "4")[0] as i32, end as i32]);
}

#[test]
fn jsonl_files_load_with_line_numbers_in_errors() {
    let tok = tokenizer();
    let dir = temp("files");
    write(&dir, "train.jsonl", &[r#"{"text": "abc"}"#, "", r#"{"text": "de"}"#]);
    write(&dir, "valid.jsonl", &[r#"{"text": "x"}"#]);
    let (train, valid) = data::load_data(&dir, &tok, &DataOptions::default()).unwrap();
    assert_eq!(train.len(), 2);
    assert_eq!(valid.unwrap().len(), 1);
    let bad = write(&dir, "bad.jsonl", &[r#"{"text": "abc"}"#, r#"{"nothing": 1}"#]);
    let e = data::load_jsonl(&bad, &tok, &DataOptions::default()).unwrap_err();
    assert!(e.to_string().contains("bad.jsonl:2"), "{e}");
    let bad = write(&dir, "bad2.jsonl", &["{not json"]);
    assert!(data::load_jsonl(&bad, &tok, &DataOptions::default()).unwrap_err().to_string().contains(":1"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn examples(lens: &[usize]) -> Vec<Example> {
    lens.iter().enumerate().map(|(i, &n)| Example { tokens: vec![i as u32 + 1; n], offset: 0 }).collect()
}

#[test]
fn batches_group_by_length_shuffle_with_a_seed_and_report_truncation() {
    let ex = examples(&[5, 9, 3, 7, 4, 8, 6, 30, 2]);
    let mut b = Batches::new(&ex, 2, 16, 42, true).unwrap();
    assert_eq!(b.len(), 4); // 9 examples, batches of 2, the longest left over
    let mut widths = Vec::new();
    for _ in 0..4 {
        let batch = b.next_batch().unwrap();
        assert_eq!(batch.tokens.len(), 2);
        // Similar lengths together: sorted 2,3 | 4,5 | 6,7 | 8,9.
        let mut l = batch.lengths.clone();
        l.sort();
        assert_eq!(l[1] - l[0], 1);
        widths.push(batch.width);
    }
    let mut sorted = widths.clone();
    sorted.sort();
    assert_eq!(sorted, vec![3, 5, 7, 9]);
    // Same seed, same order; another seed, another order (for this data).
    let order = |seed| {
        let mut b = Batches::new(&ex, 2, 16, seed, true).unwrap();
        (0..8).map(|_| b.next_batch().unwrap().width).collect::<Vec<_>>()
    };
    assert_eq!(order(42), order(42));
    assert_eq!(&order(42)[..4], &widths[..]);
    assert_ne!(order(42), order(7));
    // Truncation: the 30-token example in a batch of one, cut to 16.
    let ex = examples(&[30, 4]);
    let mut b = Batches::new(&ex, 1, 16, 0, false).unwrap();
    let mut got = [b.next_batch().unwrap(), b.next_batch().unwrap()];
    got.sort_by_key(|x| x.width);
    assert_eq!(got[1].width, 16);
    assert_eq!(b.truncated, 1);
    assert!(Batches::new(&ex, 3, 16, 0, true).is_err());
}

#[test]
fn loss_mask_matches_the_rule() {
    // Row 0: 5 tokens, everything after the first counts; row 1: 3 tokens, offset 2.
    let b = Batch::new(vec![vec![1, 2, 3, 4, 5], vec![6, 7, 8]], vec![0, 2]).unwrap();
    let (inputs, targets, mask) = b.arrays().unwrap();
    assert_eq!(inputs.to_vec::<i32>().unwrap(), vec![1, 2, 3, 4, 6, 7, 8, 0]);
    assert_eq!(targets.to_vec::<i32>().unwrap(), vec![2, 3, 4, 5, 7, 8, 0, 0]);
    assert_eq!(mask.to_vec::<f32>().unwrap(), vec![1., 1., 1., 1., 0., 1., 0., 0.]);
    assert_eq!(b.loss_tokens(), 5);
}

#[test]
fn cross_entropy_matches_hand_computation() {
    let logits = Array::from_slice(&[1.0f32, 2.0, 0.5, -1.0, 0.0, 3.0], &[1, 2, 3]).unwrap();
    let targets = Array::from_slice(&[1i32, 2], &[1, 2]).unwrap();
    let mask = Array::from_slice(&[1.0f32, 1.0], &[1, 2]).unwrap();
    let (loss, n) = step::masked_loss(&logits, &targets, &mask).unwrap();
    let lse = |v: &[f32]| v.iter().map(|x| x.exp()).sum::<f32>().ln();
    let want = ((lse(&[1.0, 2.0, 0.5]) - 2.0) + (lse(&[-1.0, 0.0, 3.0]) - 3.0)) / 2.0;
    assert!((loss.item::<f32>().unwrap() - want).abs() < 1e-6);
    assert_eq!(n.item::<f32>().unwrap(), 2.0);
}

#[test]
fn adamw_matches_hand_computation() {
    let p = Array::from_slice(&[1.0f32, -2.0], &[2]).unwrap();
    let g = Array::from_slice(&[0.5f32, 0.1], &[2]).unwrap();
    for bias_correction in [false, true] {
        let cfg = optim::AdamWConfig { betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.1, bias_correction };
        let mut opt = optim::AdamW::new(cfg);
        let (lr, mut pv, mut m, mut v) = (0.01f32, vec![1.0f32, -2.0], [0f32; 2], [0f32; 2]);
        let gv = [0.5f32, 0.1];
        let mut params = vec![p.clone()];
        for t in 1..=3 {
            params = opt.update(&params, std::slice::from_ref(&g), lr).unwrap();
            for i in 0..2 {
                let q = pv[i] * (1.0 - lr * 0.1);
                m[i] = 0.9 * m[i] + 0.1 * gv[i];
                v[i] = 0.999 * v[i] + 0.001 * gv[i] * gv[i];
                pv[i] = if bias_correction {
                    q - (lr / (1.0 - 0.9f32.powi(t))) * m[i] / (v[i].sqrt() / (1.0 - 0.999f32.powi(t)).sqrt() + 1e-8)
                } else {
                    q - lr * m[i] / (v[i].sqrt() + 1e-8)
                };
            }
            let got = params[0].to_vec::<f32>().unwrap();
            for i in 0..2 {
                assert!((got[i] - pv[i]).abs() < 1e-6, "step {t}: {got:?} vs {pv:?}");
            }
        }
        assert_eq!(opt.step, 3);
    }
}

#[test]
fn schedule_warms_up_then_decays_like_mlx() {
    let s = optim::Schedule { lr: 1.0, warmup: 4, warmup_init: 0.0, decay_steps: Some(10), min_lr: 0.1 };
    let want_warm = [0.0, 0.25, 0.5, 0.75, 1.0];
    for (i, w) in want_warm.iter().enumerate() {
        assert!((s.at(i) - w).abs() < 1e-6, "step {i}");
    }
    assert!((s.at(5) - 1.0).abs() < 1e-6); // cosine(0)
    assert!((s.at(10) - (0.1 + 0.9 * 0.5)).abs() < 1e-6); // halfway
    assert!((s.at(15) - 0.1).abs() < 1e-6);
    assert!((s.at(100) - 0.1).abs() < 1e-6);
    assert_eq!(optim::Schedule::constant(3e-4).at(1000), 3e-4);
}

#[test]
fn clipping_scales_to_the_global_norm() {
    let a = Array::from_slice(&[3.0f32, 0.0], &[2]).unwrap();
    let b = Array::from_slice(&[4.0f32], &[1]).unwrap();
    let (clipped, norm) = step::clip_grad_norm(&[a.clone(), b.clone()], 1.0).unwrap();
    assert!((norm.item::<f32>().unwrap() - 5.0).abs() < 1e-6);
    let c: Vec<f32> = clipped.iter().flat_map(|x| x.to_vec::<f32>().unwrap()).collect();
    for (x, y) in c.iter().zip([0.6, 0.0, 0.8]) {
        assert!((x - y).abs() < 1e-5);
    }
    // Under the limit: unchanged.
    let (same, _) = step::clip_grad_norm(&[a, b], 10.0).unwrap();
    assert_eq!(same[1].to_vec::<f32>().unwrap(), vec![4.0]);
}

/// The two ways of differentiating the loss's log-sum-exp (the CPU keeps the
/// forward's exponentials, the GPU recomputes them; tests/train_lora.rs checks
/// the CPU's against mlx-lm) give the same loss and logits gradient.
#[test]
fn kept_and_recomputed_exponentials_agree() {
    use gomlx::mlx::{closure, random, Dtype};
    use step::Exponentials;
    let key = random::key(7).unwrap();
    // Spread-out logits (scale 8) so the max shift matters.
    let logits = random::normal(&[2, 5, 50], Dtype::F32, 0.0, 8.0, Some(&key)).unwrap();
    let targets = Array::from_slice(&[3i32, 0, 49, 7, 7, 12, 1, 2, 30, 44], &[2, 5]).unwrap();
    let mask = Array::from_slice(&[1f32, 1., 1., 0., 1., 0., 1., 1., 1., 1.], &[2, 5]).unwrap();
    let run = |how: Exponentials| {
        let f = |a: &[Array]| Ok(vec![step::masked_loss_with(&a[0], &targets, &mask, how)?.0]);
        let (v, g) = closure::value_and_grad(&f, &[&logits], &[0]).unwrap();
        (v[0].item::<f32>().unwrap(), g[0].to_vec::<f32>().unwrap())
    };
    let ((lk, gk), (lr, gr)) = (run(Exponentials::Keep), run(Exponentials::Recompute));
    assert!((lk - lr).abs() <= 1e-6 * lr.abs(), "loss {lk} vs {lr}");
    let scale = gr.iter().fold(0f32, |m, x| m.max(x.abs()));
    let err = gk.iter().zip(&gr).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 0.0 && err <= 1e-6 * scale, "gradient differs by {err} (scale {scale})");
}
