//! Values of MLX ops through the safe layer, against hand-computed results.

use gomlx::mlx::fast::{self, AttentionMask, Rope};
use gomlx::mlx::{self, io, random, Array, Dtype};
use std::collections::BTreeMap;

mod common;
use common::{arr, close, values};

#[test]
fn arithmetic_and_matmul() {
    let a = arr(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    let b = arr(&[7., 8., 9., 10., 11., 12.], &[3, 2]);
    assert_eq!(a.matmul(&b).unwrap().to_vec::<f32>().unwrap(), vec![58., 64., 139., 154.]);
    let c = arr(&[1., 1., 1.], &[3]);
    assert_eq!(a.add(&c).unwrap().to_vec::<f32>().unwrap(), vec![2., 3., 4., 5., 6., 7.]);
    assert_eq!(a.subtract(&c).unwrap().multiply(&a).unwrap().to_vec::<f32>().unwrap(), vec![0., 2., 6., 12., 20., 30.]);
    assert_eq!(a.divide(&arr(&[2.], &[1])).unwrap().to_vec::<f32>().unwrap(), vec![0.5, 1., 1.5, 2., 2.5, 3.]);
    assert_eq!(a.sum(&[1], false).unwrap().to_vec::<f32>().unwrap(), vec![6., 15.]);
    assert_eq!(a.mean(&[0], true).unwrap().shape(), vec![1, 3]);
    assert_eq!(a.max(&[1], false).unwrap().to_vec::<f32>().unwrap(), vec![3., 6.]);
    assert_eq!(a.argmax(1, false).unwrap().to_vec::<u32>().unwrap(), vec![2, 2]);
    // bf16 scalar ops keep the array's dtype.
    let h = a.astype(Dtype::BF16).unwrap().mul_scalar(0.5).unwrap();
    assert_eq!(h.dtype(), Dtype::BF16);
    assert_eq!(h.to_vec::<f32>().unwrap(), vec![0.5, 1., 1.5, 2., 2.5, 3.]);
}

#[test]
fn elementwise_functions() {
    let x = arr(&[-1.0, 0.0, 0.5, 2.0], &[4]);
    let xs = [-1.0f32, 0.0, 0.5, 2.0];
    close(&x.exp().unwrap().to_vec::<f32>().unwrap(), &xs.map(f32::exp), 1e-6);
    close(&x.tanh().unwrap().to_vec::<f32>().unwrap(), &xs.map(f32::tanh), 1e-6);
    close(&x.sigmoid().unwrap().to_vec::<f32>().unwrap(), &xs.map(|v| 1.0 / (1.0 + (-v).exp())), 1e-6);
    // erf(0.5) = 0.5204998778, erf(2) = 0.9953222650
    close(&x.erf().unwrap().to_vec::<f32>().unwrap(), &[-0.842_700_8, 0.0, 0.520_499_9, 0.995_322_3], 1e-6);
    let pos = arr(&[1.0, 4.0], &[2]);
    close(&pos.log().unwrap().to_vec::<f32>().unwrap(), &[0.0, 4f32.ln()], 1e-6);
    close(&pos.rsqrt().unwrap().to_vec::<f32>().unwrap(), &[1.0, 0.5], 1e-6);
    let m = x.maximum(&arr(&[0.0], &[1]));
    assert_eq!(m.unwrap().to_vec::<f32>().unwrap(), vec![0.0, 0.0, 0.5, 2.0]);
    let w = mlx::where_(&x.greater(&arr(&[0.0], &[1])).unwrap(), &x, &arr(&[9.0], &[1])).unwrap();
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![9.0, 9.0, 0.5, 2.0]);
}

#[test]
fn softmax_and_logsumexp() {
    let x = arr(&[1., 2., 3., 1., 1., 1.], &[2, 3]);
    let e: Vec<f32> = [1f32, 2., 3.].iter().map(|v| v.exp()).collect();
    let z: f32 = e.iter().sum();
    let want = [e[0] / z, e[1] / z, e[2] / z, 1. / 3., 1. / 3., 1. / 3.];
    close(&x.softmax(&[1]).unwrap().to_vec::<f32>().unwrap(), &want, 1e-6);
    close(&x.logsumexp(&[1], false).unwrap().to_vec::<f32>().unwrap(), &[z.ln(), 3f32.ln() + 1.0], 1e-6);
}

#[test]
fn shape_ops() {
    let a = Array::from_slice(&(0..24).collect::<Vec<i32>>(), &[2, 3, 4]).unwrap();
    assert_eq!(a.transpose(&[2, 0, 1]).unwrap().shape(), vec![4, 2, 3]);
    assert_eq!(a.swapaxes(0, 2).unwrap().to_vec::<i32>().unwrap()[..4], [0, 12, 4, 16]);
    assert_eq!(a.expand_dims(&[0]).unwrap().shape(), vec![1, 2, 3, 4]);
    assert!(a.reshape(&[6, 4]).unwrap().squeeze(&[]).is_ok());
    let parts = a.split(2, 2).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].to_vec::<i32>().unwrap()[..2], [2, 3]);
    let cat = mlx::concatenate(&[&parts[1], &parts[0]], 2).unwrap();
    assert_eq!(cat.to_vec::<i32>().unwrap()[..4], [2, 3, 0, 1]);
    let st = mlx::stack(&[&parts[0], &parts[1]], 0).unwrap();
    assert_eq!(st.shape(), vec![2, 2, 3, 2]);
    let at = a.split_at(&[1, 3], 2).unwrap();
    assert_eq!(at.iter().map(|p| p.dim(2)).collect::<Vec<_>>(), vec![1, 2, 1]);
    // slice_update writes a block.
    let z = mlx::zeros(&[2, 4], Dtype::F32).unwrap();
    let u = z.slice_update(&arr(&[5., 6.], &[1, 2]), &[1, 1], &[2, 3], &[1, 1]).unwrap();
    assert_eq!(u.to_vec::<f32>().unwrap(), vec![0., 0., 0., 0., 0., 5., 6., 0.]);
    // take / take_along_axis / put_along_axis.
    let rows = a.reshape(&[6, 4]).unwrap();
    let idx = Array::from_slice(&[5i32, 0], &[2]).unwrap();
    assert_eq!(rows.take(&idx, 0).unwrap().to_vec::<i32>().unwrap(), vec![20, 21, 22, 23, 0, 1, 2, 3]);
    let along = Array::from_slice(&[3i32, 1], &[2, 1]).unwrap();
    let two = rows.slice_axis(0, 0, 2).unwrap();
    assert_eq!(two.take_along_axis(&along, 1).unwrap().to_vec::<i32>().unwrap(), vec![3, 5]);
    let put = two.put_along_axis(&along, &Array::from_slice(&[-1i32, -2], &[2, 1]).unwrap(), 1).unwrap();
    assert_eq!(put.to_vec::<i32>().unwrap(), vec![0, 1, 2, -1, 4, -2, 6, 7]);
    // Cumulative sum along an axis.
    let c = arr(&[1., 2., 3., 4.], &[2, 2]).cumsum(1, false, true).unwrap();
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![1., 3., 3., 7.]);
    let cr = arr(&[1., 2., 3.], &[3]).cumsum(0, true, true).unwrap();
    assert_eq!(cr.to_vec::<f32>().unwrap(), vec![6., 5., 3.]);
    assert_eq!(mlx::arange(0., 5., 2., Dtype::I32).unwrap().to_vec::<i32>().unwrap(), vec![0, 2, 4]);
    assert_eq!(mlx::full(&[2], 1.5, Dtype::F32).unwrap().to_vec::<f32>().unwrap(), vec![1.5, 1.5]);
    let tri = mlx::ones(&[3, 3], Dtype::F32).unwrap().tril(0).unwrap();
    assert_eq!(tri.to_vec::<f32>().unwrap(), vec![1., 0., 0., 1., 1., 0., 1., 1., 1.]);
}

#[test]
fn sorting_and_topk() {
    let x = arr(&[0.3, 0.1, 0.9, 0.5, 0.7], &[5]);
    assert_eq!(x.argsort(0).unwrap().to_vec::<u32>().unwrap(), vec![1, 0, 3, 4, 2]);
    assert_eq!(x.sort(0).unwrap().to_vec::<f32>().unwrap(), vec![0.1, 0.3, 0.5, 0.7, 0.9]);
    let mut top = x.topk(2, 0).unwrap().to_vec::<f32>().unwrap();
    top.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(top, vec![0.7, 0.9]);
    let part = x.argpartition(2, 0).unwrap().to_vec::<u32>().unwrap();
    assert_eq!(part[2], 3, "the third smallest (0.5) sits at index 2");
}

fn naive_rope(x: &[f32], l: usize, d: usize, base: f32, offset: usize) -> Vec<f32> {
    let half = d / 2;
    let mut out = x.to_vec();
    for p in 0..l {
        for i in 0..half {
            let theta = (offset + p) as f32 * base.powf(-2.0 * i as f32 / d as f32);
            let (a, b) = (x[p * d + i], x[p * d + i + half]);
            out[p * d + i] = a * theta.cos() - b * theta.sin();
            out[p * d + i + half] = a * theta.sin() + b * theta.cos();
        }
    }
    out
}

#[test]
fn rope_matches_naive_rotation() {
    let (l, d) = (5usize, 8usize);
    let v = values(l * d, 7);
    let x = arr(&v, &[1, 1, l as i32, d as i32]);
    let rope = Rope { dims: d as i32, traditional: false, base: Some(10000.0), scale: 1.0, freqs: None };
    close(&rope.apply(&x, 0).unwrap().to_vec::<f32>().unwrap(), &naive_rope(&v, l, d, 10000.0, 0), 1e-5);
    close(&rope.apply(&x, 11).unwrap().to_vec::<f32>().unwrap(), &naive_rope(&v, l, d, 10000.0, 11), 1e-5);
    let off = Array::scalar(11i32);
    close(&rope.apply_dynamic(&x, &off).unwrap().to_vec::<f32>().unwrap(), &naive_rope(&v, l, d, 10000.0, 11), 1e-5);
}

#[allow(clippy::too_many_arguments)] // the reference keeps attention's own parameter list
fn naive_attention(q: &[f32], k: &[f32], v: &[f32], lq: usize, lk: usize, d: usize, scale: f32, causal: bool) -> Vec<f32> {
    let mut out = vec![0.0; lq * d];
    for i in 0..lq {
        let mut s: Vec<f32> = (0..lk).map(|j| (0..d).map(|t| q[i * d + t] * k[j * d + t]).sum::<f32>() * scale).collect();
        if causal {
            for (j, sj) in s.iter_mut().enumerate() {
                if j > i + (lk - lq) {
                    *sj = f32::NEG_INFINITY;
                }
            }
        }
        let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f32 = e.iter().sum();
        for t in 0..d {
            out[i * d + t] = (0..lk).map(|j| e[j] / z * v[j * d + t]).sum();
        }
    }
    out
}

#[test]
fn sdpa_matches_naive_attention() {
    let (l, d) = (6usize, 16usize);
    let (qv, kv, vv) = (values(l * d, 1), values(l * d, 2), values(l * d, 3));
    let shape = [1, 1, l as i32, d as i32];
    let (q, k, v) = (arr(&qv, &shape), arr(&kv, &shape), arr(&vv, &shape));
    let scale = 1.0 / (d as f32).sqrt();
    let causal = fast::scaled_dot_product_attention(&q, &k, &v, scale, AttentionMask::Causal).unwrap();
    close(&causal.to_vec::<f32>().unwrap(), &naive_attention(&qv, &kv, &vv, l, l, d, scale, true), 1e-5);
    let full = fast::scaled_dot_product_attention(&q, &k, &v, scale, AttentionMask::None).unwrap();
    close(&full.to_vec::<f32>().unwrap(), &naive_attention(&qv, &kv, &vv, l, l, d, scale, false), 1e-5);
    // An additive array mask equal to the causal one gives the same result.
    let mut mask = vec![0.0f32; l * l];
    for i in 0..l {
        for j in i + 1..l {
            mask[i * l + j] = f32::NEG_INFINITY;
        }
    }
    let m = arr(&mask, &[l as i32, l as i32]);
    let masked = fast::scaled_dot_product_attention(&q, &k, &v, scale, AttentionMask::Array(&m)).unwrap();
    close(&masked.to_vec::<f32>().unwrap(), &causal.to_vec::<f32>().unwrap(), 1e-6);
    // Grouped-query attention: 4 query heads over 2 KV heads.
    let q4 = arr(&values(4 * l * d, 4), &[1, 4, l as i32, d as i32]);
    let k2 = arr(&values(2 * l * d, 5), &[1, 2, l as i32, d as i32]);
    let v2 = arr(&values(2 * l * d, 6), &[1, 2, l as i32, d as i32]);
    let g = fast::scaled_dot_product_attention(&q4, &k2, &v2, scale, AttentionMask::Causal).unwrap();
    assert_eq!(g.shape(), vec![1, 4, l as i32, d as i32]);
    let gv = g.to_vec::<f32>().unwrap();
    let (qh, kh, vh) = (values(4 * l * d, 4), values(2 * l * d, 5), values(2 * l * d, 6));
    let n = l * d;
    let head3 = naive_attention(&qh[3 * n..4 * n], &kh[n..2 * n], &vh[n..2 * n], l, l, d, scale, true);
    close(&gv[3 * n..4 * n], &head3, 1e-5);
}

#[test]
fn norms() {
    let x = arr(&[1., 2., 3., 4.], &[1, 4]);
    let w = arr(&[1., 1., 2., 0.5], &[4]);
    let rms = (30.0f32 / 4.0 + 1e-5).sqrt();
    let want: Vec<f32> = [1., 2., 6., 2.].iter().map(|v| v / rms).collect();
    close(&fast::rms_norm(&x, Some(&w), 1e-5).unwrap().to_vec::<f32>().unwrap(), &want, 1e-5);
    let ln = fast::layer_norm(&x, None, None, 0.0).unwrap().to_vec::<f32>().unwrap();
    let sd = 1.25f32.sqrt();
    close(&ln, &[-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd], 1e-5);
}

#[test]
fn quantize_dequantize_error_is_bounded() {
    let (rows, cols) = (8, 128);
    let v = values(rows * cols, 9);
    let w = arr(&v, &[rows as i32, cols as i32]);
    for (bits, group) in [(4, 64), (8, 32), (4, 32)] {
        let (q, s, b) = mlx::quantize(&w, group, bits).unwrap();
        assert_eq!(q.dtype(), Dtype::U32);
        assert_eq!(q.shape(), vec![rows as i32, (cols * bits as usize / 32) as i32]);
        assert_eq!(s.shape(), vec![rows as i32, cols as i32 / group]);
        let back = mlx::dequantize(&q, &s, &b, group, bits, None).unwrap().to_vec::<f32>().unwrap();
        let steps = ((1 << bits) - 1) as f32;
        for g in 0..rows * cols / group as usize {
            let chunk = &v[g * group as usize..(g + 1) * group as usize];
            let range = chunk.iter().cloned().fold(f32::MIN, f32::max) - chunk.iter().cloned().fold(f32::MAX, f32::min);
            for (i, x) in chunk.iter().enumerate() {
                let err = (back[g * group as usize + i] - x).abs();
                // MLX shifts the grid so that zero is exact: at most one step off.
                assert!(err <= range / steps + 1e-4, "bits {bits}: err {err} range {range}");
            }
        }
        // quantized_matmul equals a matmul with the dequantised weights.
        let x = arr(&values(3 * cols, 10), &[3, cols as i32]);
        let qm = mlx::quantized_matmul(&x, &q, &s, &b, true, group, bits).unwrap();
        let deq = arr(&back, &[rows as i32, cols as i32]);
        let dm = x.matmul(&deq.transpose(&[]).unwrap()).unwrap();
        close(&qm.to_vec::<f32>().unwrap(), &dm.to_vec::<f32>().unwrap(), 1e-4);
    }
}

#[test]
fn random_is_reproducible_with_a_key() {
    let k = random::key(42).unwrap();
    let a = random::uniform(0.0, 1.0, &[8], Dtype::F32, Some(&k)).unwrap().to_vec::<f32>().unwrap();
    let b = random::uniform(0.0, 1.0, &[8], Dtype::F32, Some(&k)).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(a, b);
    assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
    let (k1, k2) = random::split(&k).unwrap();
    let c = random::uniform(0.0, 1.0, &[8], Dtype::F32, Some(&k1)).unwrap().to_vec::<f32>().unwrap();
    let d = random::uniform(0.0, 1.0, &[8], Dtype::F32, Some(&k2)).unwrap().to_vec::<f32>().unwrap();
    assert_ne!(c, d);
    // A categorical over a one-hot distribution always picks the hot index.
    let logits = arr(&[-1e9, -1e9, 0.0, -1e9], &[1, 4]);
    let s = random::categorical(&logits, -1, Some(&k)).unwrap();
    assert_eq!(s.to_vec::<u32>().unwrap(), vec![2]);
    let n = random::normal(&[4096], Dtype::F32, 0.0, 1.0, Some(&k)).unwrap();
    let mean = n.mean(&[0], false).unwrap().item::<f32>().unwrap();
    assert!(mean.abs() < 0.1, "mean {mean}");
}

#[test]
fn safetensors_round_trip_and_errors() {
    let dir = std::env::temp_dir().join(format!("gomlx-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.safetensors");
    let mut tensors = BTreeMap::new();
    tensors.insert("a".to_string(), arr(&[1., 2., 3., 4.], &[2, 2]));
    tensors.insert("b".to_string(), Array::from_slice(&[7i32], &[1]).unwrap());
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "mlx".to_string());
    io::save_safetensors(&path, &tensors, &meta).unwrap();
    let back = io::load_safetensors(&path).unwrap();
    assert_eq!(back.metadata.get("format").map(String::as_str), Some("mlx"));
    assert_eq!(back.tensors["a"].to_vec::<f32>().unwrap(), vec![1., 2., 3., 4.]);
    assert_eq!(back.tensors["b"].to_vec::<i32>().unwrap(), vec![7]);

    let missing = io::load_safetensors(&dir.join("nope.safetensors")).unwrap_err().to_string();
    assert!(missing.contains("nope.safetensors"), "{missing}");
    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let err = io::load_safetensors(&corrupt).unwrap_err().to_string();
    assert!(err.contains("corrupt.safetensors"), "{err}");
    let truncated = dir.join("truncated.safetensors");
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&truncated, &full[..full.len() - 8]).unwrap();
    let r = io::load_safetensors(&truncated).and_then(|st| st.tensors["a"].to_vec::<f32>().map(|_| ()));
    assert!(r.is_err(), "a truncated file must not load");
    std::fs::remove_dir_all(&dir).ok();
}
