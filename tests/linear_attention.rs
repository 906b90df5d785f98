//! The gated delta rule and the causal convolution of Qwen 3.5's linear
//! attention (`models::linear_attention`) against plain loops over `f32`
//! written here from the rule's definition: whole sequences, a sequence split
//! into a prefill and single decode steps through the carried state, grouped
//! heads, and masked (padded) steps that must leave the state untouched.

use gomlx::mlx::{Array, Dtype};
use gomlx::models::linear_attention::{causal_conv, gated_delta};

mod common;
use common::{arr, close, values};

struct Case {
    b: usize,
    t: usize,
    hk: usize,
    hv: usize,
    dk: usize,
    dv: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    g: Vec<f32>,
    beta: Vec<f32>,
}

impl Case {
    fn new(b: usize, t: usize, hk: usize, hv: usize, dk: usize, dv: usize, seed: u32) -> Case {
        let unit = |x: Vec<f32>| -> Vec<f32> {
            // Rows of unit length, as the layer feeds the rule.
            x.chunks(dk)
                .flat_map(|r| {
                    let n = r.iter().map(|a| a * a).sum::<f32>().sqrt();
                    r.iter().map(move |a| a / n).collect::<Vec<_>>()
                })
                .collect()
        };
        Case {
            b,
            t,
            hk,
            hv,
            dk,
            dv,
            q: unit(values(b * t * hk * dk, seed)),
            k: unit(values(b * t * hk * dk, seed + 1)),
            v: values(b * t * hv * dv, seed + 2),
            g: values(b * t * hv, seed + 3).iter().map(|x| 0.6 + 0.35 * x).collect(),
            beta: values(b * t * hv, seed + 4).iter().map(|x| 0.5 + 0.45 * x).collect(),
        }
    }

    /// The rule step by step: returns y `[B, T, Hv, Dv]` and the state `[B, Hv, Dv, Dk]`.
    fn reference(&self, mask: Option<&[bool]>) -> (Vec<f32>, Vec<f32>) {
        let (b, t, hk, hv, dk, dv) = (self.b, self.t, self.hk, self.hv, self.dk, self.dv);
        let mut s = vec![0f32; b * hv * dv * dk];
        let mut y = vec![0f32; b * t * hv * dv];
        for bi in 0..b {
            for ti in 0..t {
                if mask.is_some_and(|m| !m[bi * t + ti]) {
                    continue;
                }
                for h in 0..hv {
                    let kh = h / (hv / hk);
                    let q = &self.q[((bi * t + ti) * hk + kh) * dk..][..dk];
                    let k = &self.k[((bi * t + ti) * hk + kh) * dk..][..dk];
                    let v = &self.v[((bi * t + ti) * hv + h) * dv..][..dv];
                    let g = self.g[(bi * t + ti) * hv + h];
                    let beta = self.beta[(bi * t + ti) * hv + h];
                    let st = &mut s[(bi * hv + h) * dv * dk..][..dv * dk];
                    for x in st.iter_mut() {
                        *x *= g;
                    }
                    for i in 0..dv {
                        let row = &mut st[i * dk..(i + 1) * dk];
                        let mem: f32 = row.iter().zip(k).map(|(a, b)| a * b).sum();
                        let delta = (v[i] - mem) * beta;
                        for (r, kk) in row.iter_mut().zip(k) {
                            *r += delta * kk;
                        }
                        y[((bi * t + ti) * hv + h) * dv + i] = row.iter().zip(q).map(|(a, b)| a * b).sum();
                    }
                }
            }
        }
        (y, s)
    }

    /// Steps `from..to` as arrays.
    fn arrays(&self, from: usize, to: usize) -> [Array; 5] {
        let (b, t) = (self.b, self.t);
        let cut = |x: &[f32], per: usize| -> Vec<f32> { (0..b).flat_map(|bi| x[(bi * t + from) * per..(bi * t + to) * per].to_vec()).collect() };
        let n = (to - from) as i32;
        let (b, hk, hv, dk, dv) = (b as i32, self.hk as i32, self.hv as i32, self.dk as i32, self.dv as i32);
        [
            arr(&cut(&self.q, (hk * dk) as usize), &[b, n, hk, dk]),
            arr(&cut(&self.k, (hk * dk) as usize), &[b, n, hk, dk]),
            arr(&cut(&self.v, (hv * dv) as usize), &[b, n, hv, dv]),
            arr(&cut(&self.g, hv as usize), &[b, n, hv]),
            arr(&cut(&self.beta, hv as usize), &[b, n, hv]),
        ]
    }
}

#[test]
fn gated_delta_whole_sequence_matches_the_rule() {
    for (hk, hv) in [(2, 2), (1, 3), (2, 4)] {
        let c = Case::new(2, 7, hk, hv, 8, 6, 11 + hv as u32);
        let [q, k, v, g, beta] = c.arrays(0, c.t);
        let (y, s) = gated_delta(&q, &k, &v, &g, &beta, None, None).unwrap();
        let (ry, rs) = c.reference(None);
        assert_eq!(y.shape(), vec![2, 7, hv as i32, 6]);
        assert_eq!(s.shape(), vec![2, hv as i32, 6, 8]);
        assert_eq!(s.dtype(), Dtype::F32);
        close(&y.to_vec::<f32>().unwrap(), &ry, 1e-5);
        close(&s.to_vec::<f32>().unwrap(), &rs, 1e-5);
    }
}

#[test]
fn gated_delta_prefill_then_decode_steps_carry_the_state() {
    let c = Case::new(2, 9, 2, 4, 8, 4, 5);
    let (ry, rs) = c.reference(None);
    let [q, k, v, g, beta] = c.arrays(0, 5);
    let (y0, mut s) = gated_delta(&q, &k, &v, &g, &beta, None, None).unwrap();
    let mut ys = vec![y0];
    for t in 5..9 {
        let [q, k, v, g, beta] = c.arrays(t, t + 1);
        let (y, s2) = gated_delta(&q, &k, &v, &g, &beta, Some(&s), None).unwrap();
        ys.push(y);
        s = s2;
    }
    let y = gomlx::mlx::concatenate(&ys.iter().collect::<Vec<_>>(), 1).unwrap();
    close(&y.to_vec::<f32>().unwrap(), &ry, 1e-5);
    close(&s.to_vec::<f32>().unwrap(), &rs, 1e-5);
}

#[test]
fn gated_delta_masked_steps_leave_the_state_alone() {
    let c = Case::new(2, 6, 1, 2, 4, 4, 21);
    // Row 0 left-padded by 3 positions, row 1 not at all.
    let mask: Vec<bool> = (0..12).map(|i| i >= 3).collect();
    let (ry, rs) = c.reference(Some(&mask));
    let [q, k, v, g, beta] = c.arrays(0, c.t);
    let m = Array::from_slice(&mask, &[2, 6]).unwrap();
    let (y, s) = gated_delta(&q, &k, &v, &g, &beta, None, Some(&m)).unwrap();
    close(&s.to_vec::<f32>().unwrap(), &rs, 1e-5);
    // Outputs of the real positions only (padded ones are never read).
    let y = y.to_vec::<f32>().unwrap();
    let per = 2 * 4;
    for (i, keep) in mask.iter().enumerate() {
        if *keep {
            close(&y[i * per..(i + 1) * per], &ry[i * per..(i + 1) * per], 1e-5);
        }
    }
}

#[test]
fn causal_conv_matches_the_definition_and_carries_its_state() {
    let (b, l, c, k) = (2usize, 6usize, 5usize, 4usize);
    let x = values(b * l * c, 3);
    let w = values(k * c, 4);
    // y[t, ch] = Σ_j w[j, ch] · x[t + j − (K−1), ch], zero before the start.
    let mut want = vec![0f32; b * l * c];
    for bi in 0..b {
        for t in 0..l {
            for ch in 0..c {
                let mut acc = 0.0;
                for j in 0..k {
                    let src = t as isize + j as isize - (k as isize - 1);
                    if src >= 0 {
                        acc += w[j * c + ch] * x[(bi * l + src as usize) * c + ch];
                    }
                }
                want[(bi * l + t) * c + ch] = acc;
            }
        }
    }
    let wa = arr(&w, &[k as i32, c as i32]);
    let xa = arr(&x, &[b as i32, l as i32, c as i32]);
    let (y, state) = causal_conv(&xa, &wa, None).unwrap();
    close(&y.to_vec::<f32>().unwrap(), &want, 1e-6);
    // The state is the last K−1 inputs.
    let last: Vec<f32> = (0..b).flat_map(|bi| x[(bi * l + l - (k - 1)) * c..(bi * l + l) * c].to_vec()).collect();
    assert_eq!(state.to_vec::<f32>().unwrap(), last);
    // Two positions, then one at a time from the carried state: the same outputs.
    let (y0, mut s) = causal_conv(&xa.slice_axis(1, 0, 2).unwrap(), &wa, None).unwrap();
    let mut parts = vec![y0];
    for t in 2..l as i32 {
        let (y, s2) = causal_conv(&xa.slice_axis(1, t, t + 1).unwrap(), &wa, Some(&s)).unwrap();
        parts.push(y);
        s = s2;
    }
    let y = gomlx::mlx::concatenate(&parts.iter().collect::<Vec<_>>(), 1).unwrap();
    close(&y.to_vec::<f32>().unwrap(), &want, 1e-6);
    assert!(causal_conv(&xa, &wa, Some(&arr(&[0.0; 5], &[1, 1, 5]))).is_err());
}
