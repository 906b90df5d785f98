//! mlx-c closures through the safe layer: apply, value_and_grad against
//! analytic gradients, checkpoint giving the same gradients, errors and panics
//! in the Rust callback coming back as `Err` (never unwinding into C++).

use gomlx::mlx::closure::{scoped, value_and_grad, Closure};
use gomlx::mlx::{Array, Dtype};
use gomlx::Error;

fn arr(v: &[f32], shape: &[i32]) -> Array {
    Array::from_slice(v, shape).unwrap()
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "index {i}: {x} vs {y}");
    }
}

#[test]
fn closure_apply_runs_the_rust_function() {
    let c = Closure::new(|args| Ok(vec![args[0].add(&args[1])?, args[0].multiply(&args[1])?])).unwrap();
    let out = c.apply(&[&arr(&[1.0, 2.0], &[2]), &arr(&[3.0, 4.0], &[2])]).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![4.0, 6.0]);
    assert_eq!(out[1].to_vec::<f32>().unwrap(), vec![3.0, 8.0]);
}

#[test]
fn value_and_grad_matches_analytic_gradients() {
    // f(x, w) = sum(sin(x) * w²) + sum(exp(w) / 2); df/dx = cos(x) w², df/dw = 2 sin(x) w + exp(w)/2
    let xs = [0.3f32, -1.2, 2.0, 0.7];
    let ws = [1.5f32, -0.5, 0.25, 2.0];
    let f = |a: &[Array]| -> gomlx::Result<Vec<Array>> {
        let (x, w) = (&a[0], &a[1]);
        let s = x.sin()?.multiply(&w.square()?)?.sum(&[], false)?;
        let e = w.exp()?.mul_scalar(0.5)?.sum(&[], false)?;
        Ok(vec![s.add(&e)?, x.sum(&[], false)?])
    };
    let (x, w) = (arr(&xs, &[4]), arr(&ws, &[4]));
    let (values, grads) = value_and_grad(&f, &[&x, &w], &[0, 1]).unwrap();
    let want: f32 = xs.iter().zip(&ws).map(|(x, w)| x.sin() * w * w + w.exp() / 2.0).sum();
    close(&[values[0].item::<f32>().unwrap()], &[want], 1e-5);
    // The auxiliary output comes back untouched.
    close(&[values[1].item::<f32>().unwrap()], &[xs.iter().sum()], 1e-6);
    let gx: Vec<f32> = xs.iter().zip(&ws).map(|(x, w)| x.cos() * w * w).collect();
    let gw: Vec<f32> = xs.iter().zip(&ws).map(|(x, w)| 2.0 * x.sin() * w + w.exp() / 2.0).collect();
    close(&grads[0].to_vec::<f32>().unwrap(), &gx, 1e-5);
    close(&grads[1].to_vec::<f32>().unwrap(), &gw, 1e-5);

    // Only the second argument.
    let (_, grads) = value_and_grad(&f, &[&x, &w], &[1]).unwrap();
    assert_eq!(grads.len(), 1);
    close(&grads[0].to_vec::<f32>().unwrap(), &gw, 1e-5);
}

#[test]
fn matmul_gradients_match_analytic() {
    // L = sum((x A) B); dL/dA = xᵀ 1 Bᵀ, dL/dB = (x A)ᵀ 1
    let x = arr(&[1.0, 2.0, 3.0, -1.0, 0.5, 2.0], &[2, 3]);
    let a = arr(&[0.1, 0.2, -0.3, 0.4, 0.5, -0.6], &[3, 2]);
    let b = arr(&[1.0, -2.0, 0.5, 3.0], &[2, 2]);
    let f = |p: &[Array]| -> gomlx::Result<Vec<Array>> { Ok(vec![p[0].matmul(&p[1])?.matmul(&p[2])?.sum(&[], false)?]) };
    let (_, g) = value_and_grad(&f, &[&x, &a, &b], &[1, 2]).unwrap();
    let ones = gomlx::mlx::ones(&[2, 2], Dtype::F32).unwrap();
    let ga = x.transpose(&[]).unwrap().matmul(&ones).unwrap().matmul(&b.transpose(&[]).unwrap()).unwrap();
    let gb = x.matmul(&a).unwrap().transpose(&[]).unwrap().matmul(&ones).unwrap();
    close(&g[0].to_vec::<f32>().unwrap(), &ga.to_vec::<f32>().unwrap(), 1e-6);
    close(&g[1].to_vec::<f32>().unwrap(), &gb.to_vec::<f32>().unwrap(), 1e-6);
}

#[test]
fn checkpointed_function_gives_the_same_gradients() {
    let inner = Closure::new(|a| Ok(vec![a[0].tanh()?.multiply(&a[1])?.exp()?])).unwrap();
    let ckpt = inner.checkpoint().unwrap();
    let x = arr(&[0.1, -0.4, 0.9], &[3]);
    let w = arr(&[1.0, 2.0, -1.0], &[3]);
    let run = |c: &Closure| {
        let f = |a: &[Array]| -> gomlx::Result<Vec<Array>> {
            let y = c.apply(&[&a[0], &a[1]])?.remove(0);
            Ok(vec![y.square()?.sum(&[], false)?])
        };
        let (v, g) = value_and_grad(&f, &[&x, &w], &[0, 1]).unwrap();
        (v[0].item::<f32>().unwrap(), g[0].to_vec::<f32>().unwrap(), g[1].to_vec::<f32>().unwrap())
    };
    let (v1, gx1, gw1) = run(&inner);
    let (v2, gx2, gw2) = run(&ckpt);
    assert_eq!(v1, v2);
    close(&gx1, &gx2, 1e-7);
    close(&gw1, &gw2, 1e-7);
    // And against the analytic gradient: y = exp(tanh(x) w), L = Σ y²; dL/dw = 2 y² tanh(x)
    let xs = [0.1f32, -0.4, 0.9];
    let ws = [1.0f32, 2.0, -1.0];
    let want: Vec<f32> = xs.iter().zip(&ws).map(|(x, w)| 2.0 * (2.0 * x.tanh() * w).exp() * x.tanh()).collect();
    close(&gw2, &want, 1e-5);
}

#[test]
fn rust_errors_come_back_as_err() {
    let f = |_: &[Array]| -> gomlx::Result<Vec<Array>> { Err(Error::InvalidArgument("boom from rust".into())) };
    let x = arr(&[1.0], &[1]);
    let e = value_and_grad(&f, &[&x], &[0]).unwrap_err();
    assert!(e.to_string().contains("boom from rust"), "{e}");
    // MLX errors raised inside the callback keep MLX's message.
    let g = |a: &[Array]| -> gomlx::Result<Vec<Array>> { Ok(vec![a[0].reshape(&[7])?]) };
    let e = Closure::new(move |a| g(a)).unwrap().apply(&[&x]).unwrap_err();
    assert!(e.to_string().contains("reshape") || e.to_string().contains("Cannot"), "{e}");
    // The thread is still usable afterwards.
    let ok = Closure::new(|a| Ok(vec![a[0].add_scalar(1.0)?])).unwrap().apply(&[&x]).unwrap();
    assert_eq!(ok[0].item::<f32>().unwrap(), 2.0);
}

#[test]
fn panics_in_the_callback_do_not_unwind_into_cpp() {
    let f = |_: &[Array]| -> gomlx::Result<Vec<Array>> { panic!("deliberate panic") };
    let x = arr(&[1.0], &[1]);
    let e = value_and_grad(&f, &[&x], &[0]).unwrap_err();
    assert!(e.to_string().contains("deliberate panic"), "{e}");
}

#[test]
fn a_scoped_closure_fails_cleanly_after_its_scope() {
    let data = [2.0f32];
    let f = |a: &[Array]| -> gomlx::Result<Vec<Array>> { Ok(vec![a[0].mul_scalar(data[0])?]) };
    // Keep a checkpointed copy (which holds the inner closure) beyond the scope.
    let kept = scoped(&f, |c| c.checkpoint().unwrap()).unwrap();
    let e = kept.apply(&[&arr(&[1.0], &[1])]).unwrap_err();
    assert!(e.to_string().contains("scope"), "{e}");
}
