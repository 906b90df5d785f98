//! The safe MLX layer: arrays, dtypes, views, errors and memory.

use gomlx::mlx::{self, Array, Dtype};
use half::{bf16, f16};

#[test]
fn from_slice_shape_and_values() {
    let a = Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    assert_eq!(a.shape(), vec![2, 3]);
    assert_eq!(a.dtype(), Dtype::I32);
    assert_eq!(a.size(), 6);
    assert_eq!(a.to_vec::<i32>().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    assert!(Array::from_slice(&[1.0f32, 2.0], &[3]).is_err());
}

#[test]
fn scalars_and_items() {
    assert_eq!(Array::scalar(7u32).item::<u32>().unwrap(), 7);
    assert_eq!(Array::scalar(-3i64).item::<i64>().unwrap(), -3);
    assert!(Array::scalar(true).item::<bool>().unwrap());
    assert_eq!(Array::scalar(2.5f32).item::<f32>().unwrap(), 2.5);
    // item() of a multi-element array is an error, not a guess.
    assert!(Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap().item::<f32>().is_err());
}

#[test]
fn dtype_round_trips() {
    let vals = [0.5f32, -1.25, 3.0, 1024.0];
    let h: Vec<f16> = vals.iter().map(|&v| f16::from_f32(v)).collect();
    let b: Vec<bf16> = vals.iter().map(|&v| bf16::from_f32(v)).collect();
    let ah = Array::from_slice(&h, &[4]).unwrap();
    let ab = Array::from_slice(&b, &[4]).unwrap();
    assert_eq!(ah.dtype(), Dtype::F16);
    assert_eq!(ab.dtype(), Dtype::BF16);
    assert_eq!(ah.to_vec::<f16>().unwrap(), h);
    assert_eq!(ab.to_vec::<bf16>().unwrap(), b);
    // Conversions through astype: all four values are exact in both 16-bit types.
    assert_eq!(ah.to_vec::<f32>().unwrap(), vals);
    assert_eq!(ab.astype(Dtype::F32).unwrap().to_vec::<f32>().unwrap(), vals);
    assert_eq!(Array::from_slice(&vals, &[4]).unwrap().to_vec::<bf16>().unwrap(), b);
    let i = Array::from_slice(&[1.9f32, -2.7], &[2]).unwrap().astype(Dtype::I32).unwrap();
    assert_eq!(i.to_vec::<i32>().unwrap(), vec![1, -2]);
    let u = Array::from_slice(&[1u8, 255], &[2]).unwrap();
    assert_eq!(u.to_vec::<i64>().unwrap(), vec![1, 255]);
}

#[test]
fn to_vec_of_views() {
    let a = Array::from_slice(&(0..12).map(|v| v as f32).collect::<Vec<_>>(), &[3, 4]).unwrap();
    // Transpose: column-major reading of the original.
    let t = a.transpose(&[]).unwrap();
    assert_eq!(t.shape(), vec![4, 3]);
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]);
    // Strided slice: rows 1..3, every second column.
    let s = a.slice(&[1, 0], &[3, 4], &[1, 2]).unwrap();
    assert_eq!(s.to_vec::<f32>().unwrap(), vec![4., 6., 8., 10.]);
    // Broadcast of a row.
    let row = Array::from_slice(&[1i32, 2, 3], &[1, 3]).unwrap();
    let b = row.broadcast_to(&[2, 3]).unwrap();
    assert_eq!(b.to_vec::<i32>().unwrap(), vec![1, 2, 3, 1, 2, 3]);
    // A slice of the last column of a transposed view.
    let c = t.slice_axis(1, 2, 3).unwrap();
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![8., 9., 10., 11.]);
}

#[test]
fn shape_mismatch_is_an_error_with_mlx_message() {
    let a = Array::from_slice(&[1.0f32; 6], &[2, 3]).unwrap();
    let b = Array::from_slice(&[1.0f32; 6], &[2, 3]).unwrap();
    let err = a.matmul(&b).unwrap_err().to_string();
    assert!(err.starts_with("mlx: "), "{err}");
    assert!(err.contains("matmul") || err.contains("shape"), "{err}");
    let err = a.reshape(&[4, 2]).unwrap_err().to_string();
    assert!(err.contains("reshape"), "{err}");
    // The thread keeps working after an error.
    assert_eq!(a.add(&b).unwrap().sum(&[], false).unwrap().item::<f32>().unwrap(), 12.0);
}

#[test]
fn errors_stay_on_their_thread() {
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let a = Array::from_slice(&[1.0f32; 4], &[2, 2]).unwrap();
                let bad = Array::from_slice(&[1.0f32; 3], &[3]).unwrap();
                let err = a.add(&bad).unwrap_err().to_string();
                let ok = a.mul_scalar(i as f32).unwrap().sum(&[], false).unwrap().item::<f32>().unwrap();
                (err, ok)
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (err, ok) = h.join().unwrap();
        assert!(err.contains("broadcast") || err.contains("shape"), "{err}");
        assert_eq!(ok, 4.0 * i as f32);
    }
}

#[test]
fn version_and_device() {
    assert_eq!(mlx::version(), "0.32.2");
    let d = mlx::stream::thread_device();
    assert_eq!(d, mlx::default_device());
    let cpu = mlx::Stream::new(mlx::DeviceKind::Cpu).unwrap();
    assert_eq!(cpu.device(), mlx::DeviceKind::Cpu);
    cpu.synchronize().unwrap();
}
