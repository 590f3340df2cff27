//! Ad-hoc single-thread timing of the backward passes against the forward convolution.
//!
//! `cargo run --release -p simdconv-tests --example backward_timing [nchw|nhwc] [reps]`
//! prints the median milliseconds of forward (Auto), dX and dW (Gemm and, with `direct`,
//! Direct) per case.

use std::time::Instant;

use simdconv::{
    conv2d, conv2d_backward_data, conv2d_backward_data_workspace_len, conv2d_backward_filter,
    conv2d_backward_filter_workspace_len, conv2d_workspace_len, Algorithm, BackwardAlgorithm, Conv2d,
    Conv2dOptions, ConvGeometry, Dims, Exec, FilterLayout, FilterView, FilterViewMut, Layout, TensorView,
    TensorViewMut,
};
use simdconv_tests::Rng;

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let layout = if args.get(1).is_some_and(|a| a == "nhwc") { Layout::Nhwc } else { Layout::Nchw };
    let reps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let direct = args.iter().any(|a| a == "direct");
    let fl = if layout == Layout::Nchw { FilterLayout::Oihw } else { FilterLayout::Ohwi };
    let cases = [
        ("vgg_conv3_2", Dims::new(1, 256, 56, 56), 256, Conv2d::new(3, 3).pad(1)),
        ("resnet_1x1_reduce", Dims::new(1, 256, 56, 56), 64, Conv2d::new(1, 1)),
        ("alexnet_conv1", Dims::new(1, 3, 227, 227), 96, Conv2d::new(11, 11).stride(4)),
        ("dilated_3x3_d2", Dims::new(1, 64, 112, 112), 64, Conv2d::new(3, 3).pad(2).dilation(2)),
    ];
    let exec = Exec::new();
    println!("isa {} layout {layout:?} reps {reps}", exec.isa());
    println!("{:<18} {:>9} {:>9} {:>9} {:>7} {:>7}", "case", "fwd ms", "dX ms", "dW ms", "dX/fwd", "dW/fwd");
    for (name, input, k, conv) in cases {
        let g = ConvGeometry::new(input, k, conv).unwrap();
        let mut rng = Rng::new(1);
        let x = rng.vec(g.input().count().unwrap());
        let w = rng.vec(g.filter().count().unwrap());
        let dy = rng.vec(g.output().count().unwrap());
        let mut y = vec![0.0f32; dy.len()];
        let mut dx = vec![0.0f32; x.len()];
        let mut dw = vec![0.0f32; w.len()];
        let xv = TensorView::new(&x, g.input(), layout).unwrap();
        let wv = FilterView::new(&w, g.filter(), fl).unwrap();
        let dyv = TensorView::new(&dy, g.output(), layout).unwrap();
        let opts = Conv2dOptions { algorithm: Algorithm::Auto, ..Default::default() };
        let mut wsf = vec![0.0f32; conv2d_workspace_len(&g, Algorithm::Auto, layout).unwrap()];
        let fwd = median_ms(reps, || {
            conv2d(
                &exec,
                &g,
                &opts,
                xv,
                wv,
                TensorViewMut::new(&mut y, g.output(), layout).unwrap(),
                &mut wsf,
            )
            .unwrap()
        });
        let algos: &[BackwardAlgorithm] = if direct {
            &[BackwardAlgorithm::Gemm, BackwardAlgorithm::Direct]
        } else {
            &[BackwardAlgorithm::Gemm]
        };
        for &algo in algos {
            let mut wsd = vec![0.0f32; conv2d_backward_data_workspace_len(&g, algo, layout).unwrap()];
            let mut wsw = vec![0.0f32; conv2d_backward_filter_workspace_len(&g, algo, layout).unwrap()];
            let tdx = median_ms(reps, || {
                conv2d_backward_data(
                    &exec,
                    &g,
                    algo,
                    dyv,
                    wv,
                    TensorViewMut::new(&mut dx, g.input(), layout).unwrap(),
                    &mut wsd,
                )
                .unwrap()
            });
            let tdw = median_ms(reps, || {
                conv2d_backward_filter(
                    &exec,
                    &g,
                    algo,
                    xv,
                    dyv,
                    FilterViewMut::new(&mut dw, g.filter(), fl).unwrap(),
                    &mut wsw,
                )
                .unwrap()
            });
            println!(
                "{:<18} {fwd:>9.3} {tdx:>9.3} {tdw:>9.3} {:>7.2} {:>7.2}  ({})",
                name,
                tdx / fwd,
                tdw / fwd,
                algo.name()
            );
        }
    }
}
