//! The `gomlx` command.

use gomlx::mlx::{self, Array};
use std::process::ExitCode;

fn info() -> gomlx::Result<()> {
    println!("gomlx {}", env!("CARGO_PKG_VERSION"));
    println!("mlx {}", mlx::version());
    let device = mlx::stream::thread_device();
    println!("device {}", device.name());
    println!("blas {}", mlx::blas::info().summary());
    // A small computation through the whole stack: softmax([1, 2, 3]) · [1, 2, 3].
    let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3])?;
    let y = x.softmax(&[0])?.multiply(&x)?.sum(&[], false)?;
    println!("softmax([1,2,3])·[1,2,3] = {:.6}", y.item::<f32>()?);
    Ok(())
}

fn main() -> ExitCode {
    match info() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gomlx: {e}");
            ExitCode::FAILURE
        }
    }
}
