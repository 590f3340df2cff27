//! Hand-computed checks of the reference oracle, case by case from the notes.

use simdconv::reference as r;
use simdconv::{
    AvgPoolOptions, Conv2d, ConvGeometry, Dims, FcGeometry, FilterDims, FilterLayout, FilterView,
    FilterViewMut, Layout, Lrn, Padding, Pool2d, PoolGeometry, TensorView, TensorViewMut,
};

fn conv(
    g: &ConvGeometry,
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    layout: Layout,
    fl: FilterLayout,
) -> Vec<f64> {
    let mut y = vec![0.0; g.output().count().unwrap()];
    r::conv2d(
        g,
        TensorView::new(x, g.input(), layout).unwrap(),
        FilterView::new(w, g.filter(), fl).unwrap(),
        b,
        TensorViewMut::new(&mut y, g.output(), layout).unwrap(),
    )
    .unwrap();
    y
}

#[test]
fn one_d_example_weights_1_0_minus1() {
    // W = 5, F = 3, P = 1, weights [1, 0, -1], bias 0: y[i] = x[i-1] - x[i+1].
    let x = [0.0, 2.0, -1.0, 1.0, 3.0];
    let w = [1.0, 0.0, -1.0];
    let g = ConvGeometry::new(Dims::new(1, 1, 1, 5), 1, Conv2d::new(1, 3).padding(Padding::symmetric(0, 1)))
        .unwrap();
    let y = conv(&g, &x, &w, None, Layout::Nchw, FilterLayout::Oihw);
    assert_eq!(y, [-2.0, 1.0, 1.0, -4.0, 1.0]);
    let g2 = ConvGeometry::new(
        Dims::new(1, 1, 1, 5),
        1,
        Conv2d::new(1, 3).padding(Padding::symmetric(0, 1)).stride(2),
    )
    .unwrap();
    // Stride 2 keeps every other neuron.
    assert_eq!(conv(&g2, &x, &w, None, Layout::Nchw, FilterLayout::Oihw), [-2.0, 1.0, 1.0]);
}

#[test]
fn dilation_reads_every_other_input() {
    // The notes: with a gap of 1, w[0] x[0] + w[1] x[2] + w[2] x[4].
    let x = [1.0, 10.0, 100.0, 1000.0, 10000.0];
    let w = [1.0, 2.0, 3.0];
    let g = ConvGeometry::new(Dims::new(1, 1, 1, 5), 1, Conv2d::new(1, 3).dilation(2)).unwrap();
    assert_eq!(conv(&g, &x, &w, None, Layout::Nchw, FilterLayout::Oihw), [1.0 + 200.0 + 30000.0]);
}

#[test]
fn numpy_example_11x11x4() {
    // X.shape (11, 11, 4) indexed X[x, y, d]; V[x, y, d] = sum(X[2x:2x+5, 2y:2y+5, :] * W_d) + b_d.
    let xs: Vec<f64> = (0..11 * 11 * 4).map(|i| ((i * 37 % 101) as f64) / 17.0 - 3.0).collect();
    let ws: Vec<f64> = (0..2 * 5 * 5 * 4).map(|i| ((i * 13 % 29) as f64) / 7.0 - 2.0).collect();
    let xv = |x: usize, y: usize, d: usize| xs[(x * 11 + y) * 4 + d];
    let wv = |k: usize, x: usize, y: usize, d: usize| ws[((k * 5 + x) * 5 + y) * 4 + d];
    let b = [0.25, -1.5];
    // The notes' X[x, y, d] is an NHWC tensor with h = x and w = y; W_k[x, y, d] is OHWI.
    let g = ConvGeometry::new(Dims::new(1, 4, 11, 11), 2, Conv2d::new(5, 5).stride(2)).unwrap();
    let v = conv(&g, &xs, &ws, Some(&b), Layout::Nhwc, FilterLayout::Ohwi);
    let vv = |x: usize, y: usize, d: usize| v[(x * 4 + y) * 2 + d];
    let np = |x0: usize, y0: usize, k: usize| {
        let mut s = 0.0;
        for x in 0..5 {
            for y in 0..5 {
                for d in 0..4 {
                    s += xv(x0 + x, y0 + y, d) * wv(k, x, y, d);
                }
            }
        }
        s + b[k]
    };
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    close(vv(0, 0, 0), np(0, 0, 0)); // V[0,0,0] = np.sum(X[:5,:5,:] * W0) + b0
    close(vv(1, 0, 0), np(2, 0, 0)); // V[1,0,0] = np.sum(X[2:7,:5,:] * W0) + b0
    close(vv(2, 0, 0), np(4, 0, 0));
    close(vv(3, 0, 0), np(6, 0, 0));
    close(vv(0, 0, 1), np(0, 0, 1));
    close(vv(0, 1, 1), np(0, 2, 1)); // along y
    close(vv(2, 3, 1), np(4, 6, 1)); // V[2,3,1] = np.sum(X[4:9,6:11,:] * W1) + b1
}

#[test]
fn demo_5x5x3_two_filters_stride2_pad1() {
    // All-ones input and filters: each output counts the inputs its window covers.
    let g = ConvGeometry::new(Dims::new(1, 3, 5, 5), 2, Conv2d::new(3, 3).stride(2).pad(1)).unwrap();
    let x = vec![1.0; 75];
    let w = vec![1.0; 54];
    let y = conv(&g, &x, &w, Some(&[1.0, 0.0]), Layout::Nchw, FilterLayout::Oihw);
    // Windows start at -1, 1, 3: covering 2, 3, 2 rows/cols.
    let want0 = [12.0, 18.0, 12.0, 18.0, 27.0, 18.0, 12.0, 18.0, 12.0];
    for (i, &v) in want0.iter().enumerate() {
        assert_eq!(y[i], v + 1.0);
        assert_eq!(y[9 + i], v);
    }
}

#[test]
fn groups_and_layouts_agree() {
    let g = ConvGeometry::new(Dims::new(2, 4, 5, 6), 6, Conv2d::new(3, 2).groups(2).pad(1).stride_hw(2, 1))
        .unwrap();
    let x: Vec<f64> = (0..g.input().count().unwrap()).map(|i| (i % 7) as f64 - 3.0).collect();
    let w: Vec<f64> = (0..g.filter().count().unwrap()).map(|i| (i % 5) as f64 - 2.0).collect();
    let y = conv(&g, &x, &w, None, Layout::Nchw, FilterLayout::Oihw);
    // Same data repacked to NHWC / HWIO gives the same numbers.
    let mut xn = vec![0.0; x.len()];
    simdconv::repack_tensor(&x, Layout::Nchw, &mut xn, Layout::Nhwc, g.input()).unwrap();
    let mut wh = vec![0.0; w.len()];
    simdconv::repack_filter(&w, FilterLayout::Oihw, &mut wh, FilterLayout::Hwio, g.filter()).unwrap();
    let yn = conv(&g, &xn, &wh, None, Layout::Nhwc, FilterLayout::Hwio);
    let mut back = vec![0.0; y.len()];
    simdconv::repack_tensor(&yn, Layout::Nhwc, &mut back, Layout::Nchw, g.output()).unwrap();
    assert_eq!(y, back);
    // Group 1's outputs ignore group 0's inputs: zero channels 0..2 and group-1 outputs stay.
    let mut x2 = x.clone();
    for n in 0..2 {
        for c in 0..2 {
            for i in 0..30 {
                x2[(n * 4 + c) * 30 + i] = 0.0;
            }
        }
    }
    let y2 = conv(&g, &x2, &w, None, Layout::Nchw, FilterLayout::Oihw);
    let plane = g.output().h * g.output().w;
    for n in 0..2 {
        for o in 3..6 {
            for i in 0..plane {
                let k = (n * 6 + o) * plane + i;
                assert_eq!(y[k], y2[k]);
            }
        }
    }
}

fn pool_geo(h: usize, w: usize, p: Pool2d) -> PoolGeometry {
    PoolGeometry::new(Dims::new(1, 1, h, w), p).unwrap()
}

#[test]
fn max_pool_with_switches() {
    let x = [1.0, 3.0, 2.0, 0.0, 5.0, 4.0, 4.0, 1.0, -1.0, -2.0, 7.0, 7.0, -3.0, -4.0, 6.0, 8.0];
    let g = pool_geo(4, 4, Pool2d::new(2, 2).stride(2));
    let mut y = [0.0; 4];
    let mut idx = [0usize; 4];
    r::max_pool2d(
        &g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap(),
        Some(TensorViewMut::new(&mut idx, g.output(), Layout::Nchw).unwrap()),
    )
    .unwrap();
    assert_eq!(y, [5.0, 4.0, -1.0, 8.0]);
    // Ties (4, 4 and 7, 7) go to the first in scan order.
    assert_eq!(idx, [4, 6, 8, 15]);

    // Backward: gradients go to the switches only.
    let dy = [1.0, 2.0, 3.0, 4.0];
    let mut dx = [9.0; 16];
    r::max_pool2d_backward(
        &g,
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        TensorView::new(&idx, g.output(), Layout::Nchw).unwrap(),
        TensorViewMut::new(&mut dx, g.input(), Layout::Nchw).unwrap(),
    )
    .unwrap();
    let mut want = [0.0; 16];
    want[4] = 1.0;
    want[6] = 2.0;
    want[8] = 3.0;
    want[15] = 4.0;
    assert_eq!(dx, want);
}

#[test]
fn max_pool_padding_never_wins_and_nan_propagates() {
    let x = [-5.0, -6.0, -7.0, f64::NAN];
    let g = pool_geo(2, 2, Pool2d::new(2, 2).stride(1).pad(1));
    let mut y = [0.0; 9];
    r::max_pool2d(
        &g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(y[0], -5.0); // window of one input and three pads
    assert_eq!(y[1], -5.0);
    assert_eq!(y[2], -6.0);
    assert!(y[4].is_nan() && y[8].is_nan());
    assert_eq!(y[3], -5.0);
    assert_eq!(y[6], -7.0);
}

#[test]
fn avg_pool_divisors() {
    let x = [1.0, 2.0, 3.0, 4.0];
    let g = pool_geo(2, 2, Pool2d::new(2, 2).stride(2).pad(1));
    let run = |opts| {
        let mut y = [0.0; 4];
        r::avg_pool2d(
            &g,
            TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
            TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap(),
            opts,
        )
        .unwrap();
        y
    };
    // Each window holds one input and three pads.
    assert_eq!(run(AvgPoolOptions::PYTORCH), [0.25, 0.5, 0.75, 1.0]);
    assert_eq!(run(AvgPoolOptions::EXCLUDE_PAD), [1.0, 2.0, 3.0, 4.0]);
    let two = AvgPoolOptions { count_include_pad: true, divisor: std::num::NonZeroUsize::new(2) };
    assert_eq!(run(two), [0.5, 1.0, 1.5, 2.0]);

    // Ceil mode: a last window that runs past the padding counts only the padded part.
    let x = [1.0, 2.0, 3.0];
    let g = pool_geo(1, 3, Pool2d::new(1, 2).stride(2).rounding(simdconv::Rounding::Ceil));
    let mut y = [0.0; 2];
    r::avg_pool2d(
        &g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap(),
        AvgPoolOptions::PYTORCH,
    )
    .unwrap();
    assert_eq!(y, [1.5, 3.0]);
}

#[test]
fn l2_pool_and_backward() {
    let x = [3.0, 4.0, 0.0, 0.0];
    let g = pool_geo(2, 2, Pool2d::new(2, 2));
    let mut y = [0.0; 1];
    r::l2_pool2d(
        &g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap(),
    )
    .unwrap();
    assert_eq!(y, [5.0]);
    let dy = [10.0];
    let mut dx = [0.0; 4];
    r::l2_pool2d_backward(
        &g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorView::new(&y, g.output(), Layout::Nchw).unwrap(),
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        TensorViewMut::new(&mut dx, g.input(), Layout::Nchw).unwrap(),
    )
    .unwrap();
    assert_eq!(dx, [6.0, 8.0, 0.0, 0.0]);
}

#[test]
fn global_pools() {
    let x: Vec<f64> = (0..2 * 3 * 4).map(f64::from).collect();
    let xv = TensorView::new(&x, Dims::new(1, 2, 3, 4), Layout::Nchw).unwrap();
    let mut y = [0.0; 2];
    r::global_avg_pool(xv, TensorViewMut::new(&mut y, Dims::new(1, 2, 1, 1), Layout::Nchw).unwrap()).unwrap();
    assert_eq!(y, [5.5, 17.5]);
    r::global_max_pool(xv, TensorViewMut::new(&mut y, Dims::new(1, 2, 1, 1), Layout::Nchw).unwrap()).unwrap();
    assert_eq!(y, [11.0, 23.0]);
}

#[test]
fn avg_pool_backward_spreads() {
    let g = pool_geo(2, 4, Pool2d::new(2, 2).stride(2));
    let dy = [4.0, 8.0];
    let mut dx = [0.0; 8];
    r::avg_pool2d_backward(
        &g,
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        TensorViewMut::new(&mut dx, g.input(), Layout::Nchw).unwrap(),
        AvgPoolOptions::PYTORCH,
    )
    .unwrap();
    assert_eq!(dx, [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
}

#[test]
fn conv_backward_is_flipped_filter_convolution_1d() {
    // 1-D, stride 1, no padding: x (5) * w (3) -> y (3). dX = full correlation of dY with
    // the flipped filter: dx[j] = sum_k dy[j - k] w[k].
    let g = ConvGeometry::new(Dims::new(1, 1, 1, 5), 1, Conv2d::new(1, 3)).unwrap();
    let w = [1.0, 2.0, 3.0];
    let dy = [1.0, 10.0, 100.0];
    let mut dx = [0.0; 5];
    r::conv2d_backward_data(
        &g,
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        FilterView::new(&w, g.filter(), FilterLayout::Oihw).unwrap(),
        TensorViewMut::new(&mut dx, g.input(), Layout::Nchw).unwrap(),
    )
    .unwrap();
    assert_eq!(dx, [1.0, 12.0, 123.0, 230.0, 300.0]);
    // dW[k] = sum_j dy[j] x[j + k]: a correlation of x with dY.
    let x = [1.0, 2.0, 3.0, 4.0, 5.0];
    let mut dw = [0.0; 3];
    r::conv2d_backward_filter(
        &g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        FilterViewMut::new(&mut dw, FilterDims::new(1, 1, 1, 3), FilterLayout::Oihw).unwrap(),
    )
    .unwrap();
    assert_eq!(dw, [321.0, 432.0, 543.0]);
    let mut db = [0.0];
    r::conv2d_backward_bias(TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(), &mut db).unwrap();
    assert_eq!(db, [111.0]);
}

#[test]
fn locally_connected_unshared_weights() {
    // 1-D input of 4, F = 2: three positions, each with its own weights.
    let g = ConvGeometry::new(Dims::new(1, 1, 1, 4), 1, Conv2d::new(1, 2)).unwrap();
    let x = [1.0, 2.0, 3.0, 4.0];
    let w = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // position 0: x0, 1: x2, 2: x2 + x3
    let b = [0.0, 10.0, 100.0];
    let mut y = [0.0; 3];
    r::locally_connected(
        &g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        &w,
        Some(&b),
        TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap(),
    )
    .unwrap();
    assert_eq!(y, [1.0, 13.0, 107.0]);
    let dy = [1.0, 2.0, 3.0];
    let mut dw = [0.0; 6];
    let mut db = [0.0; 3];
    r::locally_connected_backward_filter(
        &g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        &mut dw,
        Some(&mut db),
    )
    .unwrap();
    assert_eq!(dw, [1.0, 2.0, 4.0, 6.0, 9.0, 12.0]);
    assert_eq!(db, dy);
    let mut dx = [0.0; 4];
    r::locally_connected_backward_data(
        &g,
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        &w,
        TensorViewMut::new(&mut dx, g.input(), Layout::Nchw).unwrap(),
    )
    .unwrap();
    assert_eq!(dx, [1.0, 0.0, 5.0, 3.0]);
}

#[test]
fn fully_connected_forward_backward() {
    let g = FcGeometry::new(2, 3, 2).unwrap();
    let x = [1.0, 2.0, 3.0, -1.0, 0.0, 1.0];
    let w = [1.0, 0.0, -1.0, 0.5, 0.5, 0.5];
    let b = [1.0, -1.0];
    let mut y = [0.0; 4];
    r::fully_connected(&g, &x, &w, Some(&b), &mut y).unwrap();
    assert_eq!(y, [-1.0, 2.0, -1.0, -1.0]);
    let dy = [1.0, 2.0, 3.0, 4.0];
    let (mut dx, mut dw, mut db) = ([0.0; 6], [0.0; 6], [0.0; 2]);
    r::fully_connected_backward(&g, &x, &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db)).unwrap();
    assert_eq!(dx, [2.0, 1.0, 0.0, 5.0, 2.0, -1.0]);
    assert_eq!(dw, [-2.0, 2.0, 6.0, -2.0, 4.0, 10.0]);
    assert_eq!(db, [4.0, 6.0]);
}

#[test]
fn relu_and_backward() {
    let x = [-1.0, 0.0, 2.0];
    let mut y = [9.0; 3];
    r::relu(&x, &mut y).unwrap();
    assert_eq!(y, [0.0, 0.0, 2.0]);
    let mut dx = [9.0; 3];
    r::relu_backward(&x, &[5.0, 6.0, 7.0], &mut dx).unwrap();
    assert_eq!(dx, [0.0, 0.0, 7.0]);
}

#[test]
fn lrn_single_channel_and_window() {
    let p = Lrn { size: 3, k: 1.0, alpha: 1.0, beta: 1.0 };
    // Channels [1, 2, 3] at one pixel: windows {0,1}, {0,1,2}, {1,2}.
    let x = [1.0, 2.0, 3.0];
    let d = Dims::new(1, 3, 1, 1);
    let mut y = [0.0; 3];
    r::lrn(
        &p,
        TensorView::new(&x, d, Layout::Nchw).unwrap(),
        TensorViewMut::new(&mut y, d, Layout::Nchw).unwrap(),
    )
    .unwrap();
    assert_eq!(y, [1.0 / 6.0, 2.0 / 15.0, 3.0 / 14.0]);
    assert!(Lrn { beta: -1.0, ..p }.validate().is_err());
}
