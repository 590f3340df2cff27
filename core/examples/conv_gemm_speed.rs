//! Quick single-thread timing of the GEMM-based convolutions on three standard layers.
//!
//! `cargo run --release -p simdconv --example conv_gemm_speed [threads] [case-name-filter]`
//!
//! Prints the median and best of 15 runs (after 3 warm-ups) and GFLOP/s from the best.

use std::time::Instant;

use simdconv::{
    conv2d, conv2d_workspace_len, Conv2d, Conv2dOptions, ConvGeometry, Dims, Epilogue, Exec, FilterLayout,
    FilterView, Layout, TensorView, TensorViewMut,
};

fn main() -> Result<(), simdconv::Error> {
    let threads = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let filter = std::env::args().nth(2).unwrap_or_default();
    let exec = Exec::new().with_threads(threads)?;
    let cases = [
        ("vgg_conv3_2", Dims::new(1, 256, 56, 56), 256, Conv2d::new(3, 3).pad(1)),
        ("resnet_1x1_reduce", Dims::new(1, 256, 56, 56), 64, Conv2d::new(1, 1)),
        ("alexnet_conv1", Dims::new(1, 3, 227, 227), 96, Conv2d::new(11, 11).stride(4)),
        ("vgg_conv1_2", Dims::new(1, 64, 224, 224), 64, Conv2d::new(3, 3).pad(1)),
    ];
    println!("isa {} threads {threads}", exec.isa());
    for (name, input, k, conv) in cases {
        if !name.contains(&filter) {
            continue;
        }
        let g = ConvGeometry::new(input, k, conv)?;
        let x: Vec<f32> = (0..g.input().count()?).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
        let w: Vec<f32> = (0..g.filter().count()?).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
        let bias = vec![0.1f32; k];
        let mut y = vec![0.0f32; g.output().count()?];
        for (layout, fl) in [(Layout::Nchw, FilterLayout::Oihw), (Layout::Nhwc, FilterLayout::Hwio)] {
            for fused in [false, true] {
                let epilogue = if fused {
                    Epilogue::new().bias(&bias).activation(simdconv::Activation::Relu)
                } else {
                    Epilogue::new()
                };
                let opts = Conv2dOptions { epilogue, ..Conv2dOptions::default() };
                let mut ws = vec![0.0f32; conv2d_workspace_len(&g, opts.algorithm, layout)?];
                let mut times = Vec::new();
                for rep in 0..18 {
                    let t = Instant::now();
                    conv2d(
                        &exec,
                        &g,
                        &opts,
                        TensorView::new(&x, g.input(), layout)?,
                        FilterView::new(&w, g.filter(), fl)?,
                        TensorViewMut::new(&mut y, g.output(), layout)?,
                        &mut ws,
                    )?;
                    if rep >= 3 {
                        times.push(t.elapsed().as_secs_f64());
                    }
                }
                times.sort_by(f64::total_cmp);
                let best = times[0];
                println!(
                    "{name:18} {layout:?} {:8} {:10} ws {:6.2} MiB  median {:7.3} ms  best {:7.3} ms  {:6.1} GFLOP/s",
                    if fused { "+bias+relu" } else { "" },
                    simdconv::select_algorithm(&g, layout).name(),
                    ws.len() as f64 * 4.0 / (1 << 20) as f64,
                    times[times.len() / 2] * 1e3,
                    best * 1e3,
                    g.flops() as f64 / best / 1e9
                );
            }
        }
    }
    Ok(())
}
