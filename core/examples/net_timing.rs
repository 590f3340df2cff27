//! Times the network pieces: the fully-connected forward pass, SIMD direct path against
//! the `gemm` crate over batch sizes (the data behind `DenseAlgorithm::Auto`'s
//! crossover), AlexNet's LRN in both layouts, and a locally-connected layer.
//!
//! `cargo run --release -p simdconv --example net_timing`

use std::time::Instant;

use simdconv::{
    fully_connected, locally_connected, locally_connected_workspace_len, lrn, lrn_backward,
    lrn_backward_workspace_len, lrn_workspace_len, Conv2d, ConvGeometry, DenseAlgorithm, Dims, Exec,
    FcGeometry, FcOptions, Layout, Lrn, TensorView, TensorViewMut,
};

/// Best of 5 timings of `reps` calls, in seconds per call.
fn best_of(reps: usize, mut f: impl FnMut() -> Result<(), simdconv::Error>) -> Result<f64, simdconv::Error> {
    f()?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    Ok(best)
}

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
            let reps = (2e8 / flops).max(1.0) as usize;
            let best = best_of(reps, || fully_connected(&ex, &g, &opts, &x, &w, &mut y))?;
            println!(
                "batch {nb:>3} inputs {ni:>5} outputs {no:>5} {:<6}: {:>6.1} GFLOP/s ({:.3} ms)",
                format!("{algorithm:?}"),
                flops / best / 1e9,
                best * 1e3
            );
        }
    }

    // AlexNet's LRN after its first convolution: 55 x 55 x 96.
    let d = Dims::new(1, 96, 55, 55);
    let n = d.count()?;
    let x: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.3 - 2.0).collect();
    let dy: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let mut y = vec![0.0f32; n];
    let p = Lrn::ALEXNET;
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let mut ws = vec![0.0f32; lrn_workspace_len(&p, d, layout)?];
        let fwd = best_of(20, || {
            lrn(&ex, &p, TensorView::new(&x, d, layout)?, TensorViewMut::new(&mut y, d, layout)?, &mut ws)
        })?;
        let mut wsb = vec![0.0f32; lrn_backward_workspace_len(&p, d, layout)?];
        let bwd = best_of(20, || {
            lrn_backward(
                &ex,
                &p,
                TensorView::new(&x, d, layout)?,
                TensorView::new(&dy, d, layout)?,
                TensorViewMut::new(&mut y, d, layout)?,
                &mut wsb,
            )
        })?;
        println!(
            "LRN 55x55x96 {layout:?}: forward {:.3} ms ({:.0} M elements/s), backward {:.3} ms",
            fwd * 1e3,
            n as f64 / fwd / 1e6,
            bwd * 1e3
        );
    }

    // A locally-connected layer: 32 x 32 x 16 input, 32 filters of 3x3 per position.
    let g = ConvGeometry::new(Dims::new(1, 16, 32, 32), 32, Conv2d::new(3, 3).pad(1))?;
    let x = vec![0.5f32; g.input().count()?];
    let w = vec![0.25f32; simdconv::reference::LocalWeightsDims::of(&g).weight_count()?];
    let mut y = vec![0.0f32; g.output().count()?];
    let mut ws = vec![0.0f32; locally_connected_workspace_len(&g)?];
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let t = best_of(5, || {
            locally_connected(
                &ex,
                &g,
                TensorView::new(&x, g.input(), layout)?,
                &w,
                None,
                TensorViewMut::new(&mut y, g.output(), layout)?,
                &mut ws,
            )
        })?;
        println!(
            "locally-connected 32x32x16 -> 32x32x32, 3x3 {layout:?}: {:.3} ms, {:.1} GFLOP/s",
            t * 1e3,
            g.flops() as f64 / t / 1e9
        );
    }
    Ok(())
}
