//! Times the fully-connected forward pass, SIMD direct path against the `gemm` crate,
//! over batch sizes: the data behind `DenseAlgorithm::Auto`'s crossover.
//!
//! `cargo run --release -p simdconv --example fc_timing`

use std::time::Instant;

use simdconv::{fully_connected, DenseAlgorithm, Exec, FcGeometry, FcOptions};

fn main() -> Result<(), simdconv::Error> {
    let ex = Exec::new();
    println!("instruction set (direct path): {}", ex.isa());
    let shapes = [
        (1usize, 4096usize, 4096usize),
        (4, 4096, 4096),
        (8, 4096, 4096),
        (16, 4096, 4096),
        (32, 4096, 4096),
        (1, 25088, 4096),
        (4, 256, 256),
        (16, 256, 256),
        (32, 256, 256),
        (64, 256, 256),
    ];
    for (nb, ni, no) in shapes {
        let g = FcGeometry::new(nb, ni, no)?;
        let x: Vec<f32> = (0..nb * ni).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..ni * no).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut y = vec![0.0f32; nb * no];
        let flops = 2.0 * (nb * ni * no) as f64;
        for algorithm in [DenseAlgorithm::Direct, DenseAlgorithm::Gemm] {
            let opts = FcOptions { algorithm, ..Default::default() };
            fully_connected(&ex, &g, &opts, &x, &w, &mut y)?;
            let reps = (2e8 / flops).max(1.0) as usize;
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..reps {
                    fully_connected(&ex, &g, &opts, &x, &w, &mut y)?;
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            println!(
                "batch {nb:>3} inputs {ni:>5} outputs {no:>5} {:<6}: {:>6.1} GFLOP/s ({:.3} ms)",
                format!("{algorithm:?}"),
                flops / best / 1e9,
                best * 1e3
            );
        }
    }
    Ok(())
}
