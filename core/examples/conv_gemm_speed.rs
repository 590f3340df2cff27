//! Quick single-thread timing of the GEMM-based convolutions on three standard layers.
//!
//! `cargo run --release -p simdconv --example conv_gemm_speed [threads] [case-name-filter] [nchw|nhwc] [algorithm]`
//!
//! Prints the median and best wall time of the runs (after 3 warm-ups) and GFLOP/s from
//! the best, plus GFLOP/s from the process's CPU time over all runs (Linux
//! `/proc/self/stat`, 10 ms ticks, so each case runs for at least a second): on a shared,
//! oversubscribed machine the CPU-time figure excludes the time other processes held the
//! core; with more than one thread it counts all of them.

use std::time::Instant;

use simdconv::{
    conv2d, conv2d_workspace_len, Conv2d, Conv2dOptions, ConvGeometry, Dims, Epilogue, Exec, FilterLayout,
    FilterView, Layout, TensorView, TensorViewMut,
};

fn main() -> Result<(), simdconv::Error> {
    let threads = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let filter = std::env::args().nth(2).unwrap_or_default();
    let only = std::env::args().nth(3).unwrap_or_default();
    let algorithm = simdconv::Algorithm::from_name(&std::env::args().nth(4).unwrap_or_default())
        .unwrap_or(simdconv::Algorithm::Auto);
    let exec = Exec::new().with_threads(threads)?;
    let cases = [
        ("vgg_conv3_2", Dims::new(1, 256, 56, 56), 256, Conv2d::new(3, 3).pad(1)),
        ("resnet_1x1_reduce", Dims::new(1, 256, 56, 56), 64, Conv2d::new(1, 1)),
        ("alexnet_conv1", Dims::new(1, 3, 227, 227), 96, Conv2d::new(11, 11).stride(4)),
        ("vgg_conv1_2", Dims::new(1, 64, 224, 224), 64, Conv2d::new(3, 3).pad(1)),
        ("resnet_1x1_down_s2", Dims::new(1, 256, 56, 56), 512, Conv2d::new(1, 1).stride(2)),
        ("resnet_1x1_expand", Dims::new(1, 64, 56, 56), 256, Conv2d::new(1, 1)),
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
            if !only.is_empty() && !format!("{layout:?}").eq_ignore_ascii_case(&only) {
                continue;
            }
            for fused in [false, true] {
                let epilogue = if fused {
                    Epilogue::new().bias(&bias).activation(simdconv::Activation::Relu)
                } else {
                    Epilogue::new()
                };
                let opts = Conv2dOptions { epilogue, algorithm };
                let mut ws = vec![0.0f32; conv2d_workspace_len(&g, opts.algorithm, layout)?];
                let mut times = Vec::new();
                let mut cpu0 = 0.0;
                let start = Instant::now();
                for rep in 0.. {
                    if rep == 3 {
                        cpu0 = cpu_secs();
                    }
                    if rep >= 18 && start.elapsed().as_secs_f64() > 1.0 {
                        break;
                    }
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
                let cpu = (cpu_secs() - cpu0) / times.len() as f64;
                times.sort_by(f64::total_cmp);
                let best = times[0];
                println!(
                    "{name:18} {layout:?} {:10} {:9} ws {:4.2} MiB  median {:7.3} ms  best {:7.3} ms  {:6.1} GFLOP/s  cpu {:7.3} ms {:6.1} GFLOP/s",
                    if fused { "+bias+relu" } else { "" },
                    match algorithm {
                        simdconv::Algorithm::Auto => simdconv::select_algorithm(&g, layout),
                        a => a,
                    }
                    .name(),
                    ws.len() as f64 * 4.0 / (1 << 20) as f64,
                    times[times.len() / 2] * 1e3,
                    best * 1e3,
                    g.flops() as f64 / best / 1e9,
                    cpu * 1e3,
                    g.flops() as f64 / cpu / 1e9,
                );
            }
        }
    }
    Ok(())
}

/// User + system CPU seconds of this process so far (0 where `/proc` is missing).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    f.iter().sum::<f64>() / 100.0
}
