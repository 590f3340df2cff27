//! The notes' network pieces: fully-connected layers (and their conversion into
//! convolutions), locally-connected layers, local response normalisation and the planner.
//! Every kernel runs on every available instruction set and both layouts against
//! `simdconv::reference` in f64, under `check_close`'s bound.

use proptest::prelude::*;
use simdconv::plan::{matches_notes_pattern, plan_totals, LayerSpec, Planner, VGG16};
use simdconv::reference::{self as r, LocalWeightsDims};
use simdconv::{
    dispatch_count, fc_to_conv_filter, fully_connected, fully_connected_backward, locally_connected,
    locally_connected_backward_data, locally_connected_backward_filter, locally_connected_workspace_len, lrn,
    lrn_backward, lrn_backward_workspace_len, lrn_workspace_len, Activation, Conv2d, ConvGeometry,
    DenseAlgorithm, Dims, Error, Exec, FcGeometry, FcOptions, FilterLayout, FilterView, FlattenOrder, Isa,
    Layout, Lrn, Operand, Padding, Pool2d, PoolGeometry, TensorView, TensorViewMut,
};
use simdconv_tests::{abs_f64, check_close, dense, isas, to_f64, Rng};

const LAYOUTS: [Layout; 2] = [Layout::Nchw, Layout::Nhwc];

fn exec(isa: Isa) -> Exec {
    Exec::new().with_isa(isa).expect("isas() lists only available instruction sets")
}

/// simdconv is built with its default `std` feature here, so the gemm path exists.
fn algorithms() -> [DenseAlgorithm; 3] {
    [DenseAlgorithm::Direct, DenseAlgorithm::Auto, DenseAlgorithm::Gemm]
}

fn act_f64(a: Activation, v: f64) -> f64 {
    match a {
        Activation::Identity => v,
        Activation::Relu => v.max(0.0),
        Activation::Clamp { min, max } => v.max(f64::from(min)).min(f64::from(max)),
    }
}

// ---------------------------------------------------------------------------------------
// Fully-connected

fn fc_case(
    nb: usize,
    ni: usize,
    no: usize,
    seed: u64,
    with_bias: bool,
    act: Activation,
) -> Result<(), TestCaseError> {
    let g = FcGeometry::new(nb, ni, no).unwrap();
    let mut rng = Rng::new(seed);
    let x = rng.vec(nb * ni);
    let w = rng.vec(no * ni);
    let b = rng.vec(no);
    let bias = with_bias.then_some(&b[..]);
    let mut want = vec![0.0f64; nb * no];
    let (b64, babs) = (to_f64(&b), abs_f64(&b));
    r::fully_connected(&g, &to_f64(&x), &to_f64(&w), with_bias.then_some(&b64[..]), &mut want).unwrap();
    let mut mag = vec![0.0f64; nb * no];
    r::fully_connected(&g, &abs_f64(&x), &abs_f64(&w), with_bias.then_some(&babs[..]), &mut mag).unwrap();
    let want: Vec<f64> = want.into_iter().map(|v| act_f64(act, v)).collect();
    for isa in isas() {
        for algorithm in algorithms() {
            let before = dispatch_count(isa);
            let mut y = vec![f32::NAN; nb * no];
            let opts = FcOptions { algorithm, bias, activation: act };
            fully_connected(&exec(isa), &g, &opts, &x, &w, &mut y).unwrap();
            prop_assert!(dispatch_count(isa) > before, "{isa} did not run");
            check_close(&y, &want, &mag, ni)
                .map_err(|e| TestCaseError::fail(format!("{isa} {algorithm:?}: {e}")))?;
        }
    }
    Ok(())
}

fn fc_backward_case(nb: usize, ni: usize, no: usize, seed: u64) -> Result<(), TestCaseError> {
    let g = FcGeometry::new(nb, ni, no).unwrap();
    let mut rng = Rng::new(seed);
    let x = rng.vec(nb * ni);
    let w = rng.vec(no * ni);
    let dy = rng.vec(nb * no);
    let (x64, w64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&dy));
    let (xa, wa, dya) = (abs_f64(&x), abs_f64(&w), abs_f64(&dy));
    let mut want = (vec![0.0; nb * ni], vec![0.0; no * ni], vec![0.0; no]);
    r::fully_connected_backward(
        &g,
        &x64,
        &w64,
        &dy64,
        Some(&mut want.0),
        Some(&mut want.1),
        Some(&mut want.2),
    )
    .unwrap();
    let mut mag = (vec![0.0; nb * ni], vec![0.0; no * ni], vec![0.0; no]);
    r::fully_connected_backward(&g, &xa, &wa, &dya, Some(&mut mag.0), Some(&mut mag.1), Some(&mut mag.2))
        .unwrap();
    for isa in isas() {
        for algorithm in algorithms() {
            let mut dx = vec![f32::NAN; nb * ni];
            let mut dw = vec![f32::NAN; no * ni];
            let mut db = vec![f32::NAN; no];
            fully_connected_backward(
                &exec(isa),
                &g,
                algorithm,
                &x,
                &w,
                &dy,
                Some(&mut dx),
                Some(&mut dw),
                Some(&mut db),
            )
            .unwrap();
            let tag = |e: String| TestCaseError::fail(format!("{isa} {algorithm:?}: {e}"));
            check_close(&dx, &want.0, &mag.0, no).map_err(tag)?;
            check_close(&dw, &want.1, &mag.1, nb).map_err(tag)?;
            check_close(&db, &want.2, &mag.2, nb).map_err(tag)?;
            // Each gradient alone gives the same numbers.
            let mut dw_only = vec![f32::NAN; no * ni];
            fully_connected_backward(&exec(isa), &g, algorithm, &x, &w, &dy, None, Some(&mut dw_only), None)
                .unwrap();
            check_close(&dw_only, &want.1, &mag.1, nb).map_err(tag)?;
        }
    }
    Ok(())
}

fn activation_strategy() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        Just(Activation::Clamp { min: -0.25, max: 0.5 })
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simdconv_tests::proptest_cases(48)))]

    #[test]
    fn fc_forward_matches_reference(
        nb in 1usize..11, ni in 1usize..70, no in 1usize..21, seed in any::<u64>(),
        bias in any::<bool>(), act in activation_strategy(),
    ) {
        fc_case(nb, ni, no, seed, bias, act)?;
    }

    #[test]
    fn fc_backward_matches_reference(nb in 1usize..7, ni in 1usize..70, no in 1usize..21, seed in any::<u64>()) {
        fc_backward_case(nb, ni, no, seed)?;
    }
}

#[test]
fn fc_edges() {
    // 1x1, a single long row, lane-multiple and odd sizes.
    fc_case(1, 1, 1, 1, true, Activation::Relu).unwrap();
    fc_case(1, 257, 3, 2, false, Activation::Identity).unwrap();
    fc_case(5, 16, 16, 3, true, Activation::Identity).unwrap();
    fc_case(9, 33, 7, 4, true, Activation::Clamp { min: 0.0, max: 6.0 }).unwrap();
    // Auto switches to gemm from batch 32.
    fc_case(33, 20, 5, 7, true, Activation::Relu).unwrap();
    fc_backward_case(33, 9, 4, 8).unwrap();
    fc_backward_case(1, 1, 1, 5).unwrap();
    fc_backward_case(8, 17, 5, 6).unwrap();
}

#[test]
fn fc_relu_keeps_nan() {
    let g = FcGeometry::new(1, 2, 1).unwrap();
    for isa in isas() {
        for algorithm in algorithms() {
            let mut y = [0.0f32];
            let opts = FcOptions { algorithm, activation: Activation::Relu, ..Default::default() };
            fully_connected(&exec(isa), &g, &opts, &[f32::NAN, 1.0], &[1.0, 1.0], &mut y).unwrap();
            assert!(y[0].is_nan(), "{isa} {algorithm:?}");
        }
    }
}

#[test]
fn fc_errors_carry_numbers() {
    let g = FcGeometry::new(2, 3, 4).unwrap();
    let e = Exec::new();
    let (x, w, mut y) = (vec![0.0f32; 6], vec![0.0f32; 12], vec![0.0f32; 8]);
    let opts = FcOptions::default();
    assert_eq!(
        fully_connected(&e, &g, &opts, &x[..5], &w, &mut y),
        Err(Error::LengthMismatch { operand: Operand::Input, expected: 6, actual: 5 })
    );
    assert_eq!(
        fully_connected(&e, &g, &opts, &x, &w[..11], &mut y),
        Err(Error::LengthMismatch { operand: Operand::Filter, expected: 12, actual: 11 })
    );
    let b = [0.0f32; 3];
    let bad = FcOptions { bias: Some(&b), ..Default::default() };
    assert_eq!(
        fully_connected(&e, &g, &bad, &x, &w, &mut y),
        Err(Error::LengthMismatch { operand: Operand::Bias, expected: 4, actual: 3 })
    );
    let mut db = [0.0f32; 5];
    assert_eq!(
        fully_connected_backward(&e, &g, DenseAlgorithm::Auto, &x, &w, &y.clone(), None, None, Some(&mut db)),
        Err(Error::LengthMismatch { operand: Operand::BiasGrad, expected: 4, actual: 5 })
    );
    assert!(FcGeometry::new(0, 1, 1).is_err());
}

// ---------------------------------------------------------------------------------------
// FC -> convolution

fn fc_to_conv_case(c: usize, h: usize, w: usize, no: usize, seed: u64, layout: Layout, fl: FilterLayout) {
    let order = if layout == Layout::Nchw { FlattenOrder::Chw } else { FlattenOrder::Hwc };
    let ni = c * h * w;
    let fc = FcGeometry::new(1, ni, no).unwrap();
    let mut rng = Rng::new(seed);
    let x = rng.vec(ni);
    let wt: Vec<f64> = to_f64(&rng.vec(no * ni));
    let b: Vec<f64> = to_f64(&rng.vec(no));
    let mut want = vec![0.0; no];
    r::fully_connected(&fc, &to_f64(&x), &wt, Some(&b), &mut want).unwrap();
    let mut f = vec![0.0f64; no * ni];
    let fd = fc_to_conv_filter(&fc, &wt, [c, h, w], order, &mut f, fl).unwrap();
    let g = ConvGeometry::new(Dims::new(1, c, h, w), no, Conv2d::new(h, w)).unwrap();
    assert_eq!(fd, g.filter());
    let mut y = vec![0.0f64; no];
    r::conv2d(
        &g,
        TensorView::new(&to_f64(&x), g.input(), layout).unwrap(),
        FilterView::new(&f, fd, fl).unwrap(),
        Some(&b),
        TensorViewMut::new(&mut y, g.output(), layout).unwrap(),
    )
    .unwrap();
    for (a, e) in y.iter().zip(&want) {
        // The same products summed in another order, in f64.
        assert!((a - e).abs() <= 1e-12 * (1.0 + e.abs()), "{a} vs {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simdconv_tests::proptest_cases(32)))]

    #[test]
    fn fc_to_conv_filter_is_the_same_layer(
        c in 1usize..5, h in 1usize..5, w in 1usize..5, no in 1usize..6, seed in any::<u64>(),
        nhwc in any::<bool>(), fl in prop_oneof![Just(FilterLayout::Oihw), Just(FilterLayout::Ohwi), Just(FilterLayout::Hwio)],
    ) {
        fc_to_conv_case(c, h, w, no, seed, if nhwc { Layout::Nhwc } else { Layout::Nchw }, fl);
    }
}

#[test]
fn fc_to_conv_filter_errors() {
    let fc = FcGeometry::new(1, 12, 2).unwrap();
    let w = [0.0f32; 24];
    let mut f = [0.0f32; 24];
    assert_eq!(
        fc_to_conv_filter(&fc, &w, [2, 2, 2], FlattenOrder::Chw, &mut f, FilterLayout::Oihw),
        Err(Error::LengthMismatch { operand: Operand::Input, expected: 12, actual: 8 })
    );
    assert_eq!(
        fc_to_conv_filter(&fc, &w, [3, 2, 2], FlattenOrder::Chw, &mut f[..23], FilterLayout::Oihw),
        Err(Error::LengthMismatch { operand: Operand::Output, expected: 24, actual: 23 })
    );
    assert!(fc_to_conv_filter(&fc, &w, [0, 2, 2], FlattenOrder::Chw, &mut f, FilterLayout::Oihw).is_err());
}

/// A tiny stand-in for a net's feature extractor: CONV3 (valid) -> RELU -> POOL2 ->
/// CONV3 (valid) -> RELU -> POOL2, total stride 4, run with the reference in f64. A
/// position's sums are the same operations in the same order whether it is computed in a
/// crop or in the whole image, so crop and whole-image features agree exactly.
struct Features {
    w1: Vec<f64>,
    b1: Vec<f64>,
    w2: Vec<f64>,
    b2: Vec<f64>,
}

const C0: usize = 3;
const C1: usize = 4;
const C2: usize = 6;

impl Features {
    fn run(&self, x: &[f64], hw: usize, layout: Layout) -> (Vec<f64>, Dims) {
        let conv = |x: &[f64], d: Dims, k: usize, w: &[f64], b: &[f64]| {
            let g = ConvGeometry::new(d, k, Conv2d::new(3, 3)).unwrap();
            let mut y = vec![0.0f64; g.output().count().unwrap()];
            let fl = if layout == Layout::Nchw { FilterLayout::Oihw } else { FilterLayout::Ohwi };
            r::conv2d(
                &g,
                TensorView::new(x, d, layout).unwrap(),
                FilterView::new(w, g.filter(), fl).unwrap(),
                Some(b),
                TensorViewMut::new(&mut y, g.output(), layout).unwrap(),
            )
            .unwrap();
            for v in &mut y {
                *v = v.max(0.0);
            }
            let p = PoolGeometry::new(g.output(), Pool2d::new(2, 2).stride(2)).unwrap();
            let mut z = vec![0.0f64; p.output().count().unwrap()];
            r::max_pool2d(
                &p,
                TensorView::new(&y, g.output(), layout).unwrap(),
                TensorViewMut::new(&mut z, p.output(), layout).unwrap(),
                None,
            )
            .unwrap();
            (z, p.output())
        };
        let (a, da) = conv(x, Dims::new(1, C0, hw, hw), C1, &self.w1, &self.b1);
        conv(&a, da, C2, &self.w2, &self.b2)
    }
}

fn crop<T: Copy>(x: &[T], hw: usize, layout: Layout, y0: usize, x0: usize, win: usize) -> Vec<T> {
    let src = TensorView::new(x, Dims::new(1, C0, hw, hw), layout).unwrap();
    let d = Dims::new(1, C0, win, win);
    let mut out = vec![x[0]; d.count().unwrap()];
    let mut dst = TensorViewMut::new(&mut out, d, layout).unwrap();
    for c in 0..C0 {
        for i in 0..win {
            for j in 0..win {
                *dst.get_mut(0, c, i, j) = src.get(0, c, y0 + i, x0 + j);
            }
        }
    }
    out
}

/// The notes' claim, scaled down: sliding the original net (FC head) over a larger image
/// at its total stride gives the scores of the converted all-convolution net run once.
/// The notes' 224 -> 384, stride 32, 6x6 example becomes window 14, image 22, stride 4,
/// 3x3 scores. The convolutions use no padding: with zero padding the original net would
/// see zeros at each crop's border where the converted net sees neighbouring pixels, and
/// the claim holds only away from the borders.
fn sliding_equals_converted(seed: u64, layout: Layout, isa: Isa) {
    const WIN: usize = 14;
    const IMG: usize = 22;
    const STRIDE: usize = 4;
    const POS: usize = (IMG - WIN) / STRIDE + 1; // 3
    const H1: usize = 10;
    const NC: usize = 5;
    let order = if layout == Layout::Nchw { FlattenOrder::Chw } else { FlattenOrder::Hwc };
    let mut rng = Rng::new(seed);
    let w1 = rng.vec(C1 * C0 * 9);
    let b1 = rng.vec(C1);
    let w2 = rng.vec(C2 * C1 * 9);
    let b2 = rng.vec(C2);
    let img = rng.vec(C0 * IMG * IMG);
    let net = Features { w1: to_f64(&w1), b1: to_f64(&b1), w2: to_f64(&w2), b2: to_f64(&b2) };
    let img64 = to_f64(&img);
    let to_f32 = |v: Vec<f64>| -> Vec<f32> { v.into_iter().map(|x| x as f32).collect() };
    let (fw, _) = net.run(&crop(&img64, IMG, layout, 0, 0, WIN), WIN, layout);
    let fin = fw.len(); // 2 * 2 * 6 = 24
    assert_eq!(fin, 2 * 2 * C2);
    let fc1 = rng.vec(H1 * fin);
    let fb1 = rng.vec(H1);
    let fc2 = rng.vec(NC * H1);
    let fb2 = rng.vec(NC);
    let ex = exec(isa);

    // (1) The original net at each of the 3x3 window positions: features, then the FC head
    // on a batch of 9 flattened feature volumes.
    let mut feats = Vec::new();
    for py in 0..POS {
        for px in 0..POS {
            let c = crop(&img64, IMG, layout, py * STRIDE, px * STRIDE, WIN);
            feats.extend(to_f32(net.run(&c, WIN, layout).0));
        }
    }
    let nb = POS * POS;
    let g1 = FcGeometry::new(nb, fin, H1).unwrap();
    let g2 = FcGeometry::new(nb, H1, NC).unwrap();
    let mut hid = vec![0.0f32; nb * H1];
    let o1 = FcOptions { bias: Some(&fb1), activation: Activation::Relu, ..Default::default() };
    fully_connected(&ex, &g1, &o1, &feats, &fc1, &mut hid).unwrap();
    let mut slide = vec![0.0f32; nb * NC];
    let o2 = FcOptions { bias: Some(&fb2), ..Default::default() };
    fully_connected(&ex, &g2, &o2, &hid, &fc2, &mut slide).unwrap();

    // (2) The converted net once over the whole image: the FC layers become a 2x2 and a
    // 1x1 convolution.
    let (fimg, fd) = net.run(&img64, IMG, layout);
    let fimg = to_f32(fimg);
    assert_eq!((fd.h, fd.w), (4, 4)); // 22 -> 20 -> 10 -> 8 -> 4
    let fl = if layout == Layout::Nchw { FilterLayout::Oihw } else { FilterLayout::Hwio };
    let mut k1 = vec![0.0f32; H1 * fin];
    let gk1 = FcGeometry::new(1, fin, H1).unwrap();
    let d1 = fc_to_conv_filter(&gk1, &fc1, [C2, 2, 2], order, &mut k1, fl).unwrap();
    let mut k2 = vec![0.0f32; NC * H1];
    let gk2 = FcGeometry::new(1, H1, NC).unwrap();
    let d2 = fc_to_conv_filter(&gk2, &fc2, [H1, 1, 1], order, &mut k2, fl).unwrap();
    let cg1 = ConvGeometry::new(fd, H1, Conv2d::new(2, 2)).unwrap();
    let mut h = vec![0.0f32; cg1.output().count().unwrap()];
    r::conv2d(
        &cg1,
        TensorView::new(&fimg, fd, layout).unwrap(),
        FilterView::new(&k1, d1, fl).unwrap(),
        Some(&fb1),
        TensorViewMut::new(&mut h, cg1.output(), layout).unwrap(),
    )
    .unwrap();
    simdconv::relu_in_place(&ex, &mut h);
    let cg2 = ConvGeometry::new(cg1.output(), NC, Conv2d::new(1, 1)).unwrap();
    assert_eq!(cg2.output(), Dims::new(1, NC, POS, POS));
    let mut conv_scores = vec![0.0f32; cg2.output().count().unwrap()];
    r::conv2d(
        &cg2,
        TensorView::new(&h, cg1.output(), layout).unwrap(),
        FilterView::new(&k2, d2, fl).unwrap(),
        Some(&fb2),
        TensorViewMut::new(&mut conv_scores, cg2.output(), layout).unwrap(),
    )
    .unwrap();
    let sv = TensorView::new(&conv_scores, cg2.output(), layout).unwrap();

    // (3) Both against the original net in f64; magnitude from the same net on |x|, |w|.
    let f64net = |abs: bool| {
        let m = |v: &[f32]| if abs { abs_f64(v) } else { to_f64(v) };
        let net = Features { w1: m(&w1), b1: m(&b1), w2: m(&w2), b2: m(&b2) };
        let mut out = vec![0.0f64; nb * NC];
        for py in 0..POS {
            for px in 0..POS {
                let c = crop(&m(&img), IMG, layout, py * STRIDE, px * STRIDE, WIN);
                let (f, _) = net.run(&c, WIN, layout);
                let mut hh = vec![0.0; H1];
                r::fully_connected(
                    &FcGeometry::new(1, fin, H1).unwrap(),
                    &f,
                    &m(&fc1),
                    Some(&m(&fb1)),
                    &mut hh,
                )
                .unwrap();
                hh.iter_mut().for_each(|v| *v = v.max(0.0));
                let p = py * POS + px;
                r::fully_connected(&gk2, &hh, &m(&fc2), Some(&m(&fb2)), &mut out[p * NC..(p + 1) * NC])
                    .unwrap();
            }
        }
        out
    };
    let (want, mag) = (f64net(false), f64net(true));
    // Products along the deepest path: 27 + 36 + 24 + 10.
    let terms = C0 * 9 + C1 * 9 + fin + H1;
    let mut conv_as_slide = vec![0.0f32; nb * NC];
    for py in 0..POS {
        for px in 0..POS {
            for o in 0..NC {
                conv_as_slide[(py * POS + px) * NC + o] = sv.get(0, o, py, px);
            }
        }
    }
    check_close(&slide, &want, &mag, terms).unwrap_or_else(|e| panic!("sliding {layout:?} {isa}: {e}"));
    check_close(&conv_as_slide, &want, &mag, terms)
        .unwrap_or_else(|e| panic!("converted {layout:?} {isa}: {e}"));
}

#[test]
fn notes_fc_to_conv_sliding_window_claim() {
    for isa in isas() {
        for layout in LAYOUTS {
            for seed in 0..3 {
                sliding_equals_converted(seed, layout, isa);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Locally-connected

#[derive(Clone, Debug)]
struct LocalCase {
    g: ConvGeometry,
    layout: Layout,
    seed: u64,
    bias: bool,
}

fn local_strategy() -> impl Strategy<Value = LocalCase> {
    (
        (1usize..3, 1usize..3, 1usize..4, 1usize..6),
        (1usize..7, 1usize..7, 1usize..4, 1usize..4),
        (1usize..4, 1usize..3, 0usize..3, 0usize..3, 0usize..3, 0usize..3),
        (any::<bool>(), any::<u64>(), any::<bool>()),
    )
        .prop_filter_map(
            "geometry",
            |((n, groups, cpg, ocg), (h, w, kh, kw), (s, d, pt, pb, pl, pr), (nhwc, seed, bias))| {
                let conv = Conv2d::new(kh, kw)
                    .stride(s)
                    .dilation(d)
                    .padding(Padding::new(pt, pb, pl, pr))
                    .groups(groups);
                let g = ConvGeometry::new(Dims::new(n, groups * cpg, h, w), groups * ocg, conv).ok()?;
                Some(LocalCase { g, layout: if nhwc { Layout::Nhwc } else { Layout::Nchw }, seed, bias })
            },
        )
}

fn local_case(c: &LocalCase) -> Result<(), TestCaseError> {
    let g = &c.g;
    let ld = LocalWeightsDims::of(g);
    let (nx, ny) = (g.input().count().unwrap(), g.output().count().unwrap());
    let (nw, nbias) = (ld.weight_count().unwrap(), ld.bias_count().unwrap());
    let mut rng = Rng::new(c.seed);
    let x = rng.vec(nx);
    let w = rng.vec(nw);
    let b = rng.vec(nbias);
    let dy = rng.vec(ny);
    let l = c.layout;
    let xv = |v: &[f64]| v.to_vec();
    // Forward reference and magnitude.
    let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut y = vec![0.0; ny];
        r::locally_connected(
            g,
            TensorView::new(x, g.input(), l).unwrap(),
            w,
            c.bias.then_some(b),
            TensorViewMut::new(&mut y, g.output(), l).unwrap(),
        )
        .unwrap();
        y
    };
    let want = fwd(&to_f64(&x), &to_f64(&w), &to_f64(&b));
    let mag = fwd(&abs_f64(&x), &abs_f64(&w), &abs_f64(&b));
    let bwd_data = |dy: &[f64], w: &[f64]| {
        let mut dx = vec![0.0; nx];
        r::locally_connected_backward_data(
            g,
            TensorView::new(dy, g.output(), l).unwrap(),
            w,
            TensorViewMut::new(&mut dx, g.input(), l).unwrap(),
        )
        .unwrap();
        dx
    };
    let want_dx = bwd_data(&to_f64(&dy), &to_f64(&w));
    let mag_dx = bwd_data(&abs_f64(&dy), &abs_f64(&w));
    let bwd_filter = |x: &[f64], dy: &[f64]| {
        let (mut dw, mut db) = (vec![0.0; nw], vec![0.0; nbias]);
        r::locally_connected_backward_filter(
            g,
            TensorView::new(x, g.input(), l).unwrap(),
            TensorView::new(dy, g.output(), l).unwrap(),
            &mut dw,
            Some(&mut db),
        )
        .unwrap();
        (dw, db)
    };
    let want_dw = bwd_filter(&xv(&to_f64(&x)), &to_f64(&dy));
    let mag_dw = bwd_filter(&abs_f64(&x), &abs_f64(&dy));
    let f = g.filter();
    let mut ws = vec![0.0f32; locally_connected_workspace_len(g).unwrap()];
    for isa in isas() {
        let ex = exec(isa);
        let tag = |e: String| TestCaseError::fail(format!("{isa} {l:?}: {e}"));
        let mut y = vec![f32::NAN; ny];
        locally_connected(
            &ex,
            g,
            TensorView::new(&x, g.input(), l).unwrap(),
            &w,
            c.bias.then_some(&b[..]),
            TensorViewMut::new(&mut y, g.output(), l).unwrap(),
            &mut ws,
        )
        .unwrap();
        check_close(&y, &want, &mag, f.i * f.kh * f.kw).map_err(tag)?;
        let mut dx = vec![f32::NAN; nx];
        locally_connected_backward_data(
            &ex,
            g,
            TensorView::new(&dy, g.output(), l).unwrap(),
            &w,
            TensorViewMut::new(&mut dx, g.input(), l).unwrap(),
            &mut ws,
        )
        .unwrap();
        // An input element meets each (filter, tap) pair at most once.
        check_close(&dx, &want_dx, &mag_dx, f.o * f.kh * f.kw).map_err(tag)?;
        let (mut dw, mut db) = (vec![f32::NAN; nw], vec![f32::NAN; nbias]);
        locally_connected_backward_filter(
            &ex,
            g,
            TensorView::new(&x, g.input(), l).unwrap(),
            TensorView::new(&dy, g.output(), l).unwrap(),
            &mut dw,
            Some(&mut db),
            &mut ws,
        )
        .unwrap();
        check_close(&dw, &want_dw.0, &mag_dw.0, g.input().n).map_err(tag)?;
        check_close(&db, &want_dw.1, &mag_dw.1, g.input().n).map_err(tag)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simdconv_tests::proptest_cases(48)))]

    #[test]
    fn locally_connected_matches_reference(c in local_strategy()) {
        local_case(&c)?;
    }
}

#[test]
fn locally_connected_edges() {
    let cases = [
        // 1x1 plane, 1 channel.
        (Dims::new(1, 1, 1, 1), 1, Conv2d::new(1, 1)),
        // Window == padded input, asymmetric padding.
        (Dims::new(2, 3, 3, 4), 5, Conv2d::new(4, 6).padding(Padding::new(1, 0, 0, 2))),
        // Stride > kernel, big dilation, groups, channel counts past one AVX-512 vector.
        (Dims::new(1, 4, 9, 9), 18, Conv2d::new(2, 2).stride(3).dilation(4).groups(2)),
        (Dims::new(1, 17, 3, 3), 9, Conv2d::new(3, 3).pad(1)),
    ];
    for (i, (d, k, conv)) in cases.into_iter().enumerate() {
        let g = ConvGeometry::new(d, k, conv).unwrap();
        for layout in LAYOUTS {
            local_case(&LocalCase { g, layout, seed: i as u64, bias: true }).unwrap();
        }
    }
}

#[test]
fn locally_connected_errors() {
    let g = ConvGeometry::new(Dims::new(1, 2, 4, 4), 3, Conv2d::new(3, 3)).unwrap();
    let x = vec![0.0f32; 32];
    let mut y = vec![0.0f32; 12];
    let w = vec![0.0f32; 4 * 3 * 2 * 9];
    let mut ws = vec![0.0f32; 18];
    let e = Exec::new();
    let run = |w: &[f32], b: Option<&[f32]>, y: &mut [f32], ws: &mut [f32]| {
        locally_connected(
            &e,
            &g,
            TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
            w,
            b,
            TensorViewMut::new(y, g.output(), Layout::Nchw).unwrap(),
            ws,
        )
    };
    assert_eq!(
        run(&w[..215], None, &mut y, &mut ws),
        Err(Error::LengthMismatch { operand: Operand::Filter, expected: 216, actual: 215 })
    );
    assert_eq!(
        run(&w, Some(&[0.0; 11]), &mut y, &mut ws),
        Err(Error::LengthMismatch { operand: Operand::Bias, expected: 12, actual: 11 })
    );
    assert_eq!(
        run(&w, None, &mut y, &mut ws[..17]),
        Err(Error::WorkspaceTooSmall { needed: 18, actual: 17 })
    );
    assert_eq!(run(&w, None, &mut y, &mut ws), Ok(()));
}

// ---------------------------------------------------------------------------------------
// Local response normalisation

fn lrn_mag_backward(p: &Lrn, x: &TensorView<'_, f64>, dy: &TensorView<'_, f64>) -> Vec<f64> {
    // |dy_j| s_j^-b + 2 a b |x_j| sum_{c : j in window(c)} |dy_c x_c| s_c^(-b-1), in dx's
    // logical order [n][c][h][w].
    let d = x.dims();
    let (a, b) = (f64::from(p.alpha), f64::from(p.beta));
    let s = |n, c, h, w| {
        let (lo, hi) = p.window(c, d.c);
        f64::from(p.k) + a * (lo..hi).map(|j| x.get(n, j, h, w).powi(2)).sum::<f64>()
    };
    let mut out = Vec::new();
    for n in 0..d.n {
        for j in 0..d.c {
            for h in 0..d.h {
                for w in 0..d.w {
                    let mut cross = 0.0;
                    for c in 0..d.c {
                        let (lo, hi) = p.window(c, d.c);
                        if (lo..hi).contains(&j) {
                            cross +=
                                (dy.get(n, c, h, w) * x.get(n, c, h, w)).abs() * s(n, c, h, w).powf(-b - 1.0);
                        }
                    }
                    out.push(
                        dy.get(n, j, h, w).abs() * s(n, j, h, w).powf(-b)
                            + 2.0 * a * b * x.get(n, j, h, w).abs() * cross,
                    );
                }
            }
        }
    }
    out
}

fn lrn_case(d: Dims, p: Lrn, layout: Layout, seed: u64, scale: f32) -> Result<(), TestCaseError> {
    let count = d.count().unwrap();
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = rng.vec(count).into_iter().map(|v| v * scale).collect();
    let dy = rng.vec(count);
    let (x64, dy64) = (to_f64(&x), to_f64(&dy));
    let xv = TensorView::new(&x64, d, layout).unwrap();
    let dyv = TensorView::new(&dy64, d, layout).unwrap();
    let mut want = vec![0.0; count];
    r::lrn(&p, xv, TensorViewMut::new(&mut want, d, layout).unwrap()).unwrap();
    let want = dense(&TensorView::new(&want, d, layout).unwrap());
    let mag: Vec<f64> = want.iter().map(|v| v.abs()).collect();
    let mut want_dx = vec![0.0; count];
    r::lrn_backward(&p, xv, dyv, TensorViewMut::new(&mut want_dx, d, layout).unwrap()).unwrap();
    let want_dx = dense(&TensorView::new(&want_dx, d, layout).unwrap());
    let mag_dx = lrn_mag_backward(&p, &xv, &dyv);
    // Window sum (size terms), the power (a few roundings, or libm's powf), products.
    let terms = p.size + 12;
    let mut ws = vec![0.0f32; lrn_workspace_len(&p, d, layout).unwrap()];
    let mut wsb = vec![0.0f32; lrn_backward_workspace_len(&p, d, layout).unwrap()];
    for isa in isas() {
        let ex = exec(isa);
        let tag = |e: String| TestCaseError::fail(format!("{isa} {layout:?} {p:?}: {e}"));
        let mut y = vec![f32::NAN; count];
        lrn(
            &ex,
            &p,
            TensorView::new(&x, d, layout).unwrap(),
            TensorViewMut::new(&mut y, d, layout).unwrap(),
            &mut ws,
        )
        .unwrap();
        check_close(&dense(&TensorView::new(&y, d, layout).unwrap()), &want, &mag, terms).map_err(tag)?;
        let mut dx = vec![f32::NAN; count];
        lrn_backward(
            &ex,
            &p,
            TensorView::new(&x, d, layout).unwrap(),
            TensorView::new(&dy, d, layout).unwrap(),
            TensorViewMut::new(&mut dx, d, layout).unwrap(),
            &mut wsb,
        )
        .unwrap();
        check_close(&dense(&TensorView::new(&dx, d, layout).unwrap()), &want_dx, &mag_dx, 2 * terms)
            .map_err(tag)?;
    }
    Ok(())
}

fn lrn_strategy() -> impl Strategy<Value = Lrn> {
    (
        1usize..8,
        prop_oneof![Just(1.0f32), Just(2.0), Just(0.5)],
        prop_oneof![Just(1e-4f32), Just(0.1), Just(1.0), Just(0.0)],
        prop_oneof![Just(0.75f32), Just(0.5), Just(1.0), Just(0.0), Just(0.6), Just(2.5)],
    )
        .prop_map(|(size, k, alpha, beta)| Lrn { size, k, alpha, beta })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simdconv_tests::proptest_cases(48)))]

    #[test]
    fn lrn_matches_reference(
        n in 1usize..3, c in 1usize..21, h in 1usize..3, w in 1usize..20, p in lrn_strategy(),
        nhwc in any::<bool>(), seed in any::<u64>(), scale in prop_oneof![Just(1.0f32), Just(30.0)],
    ) {
        lrn_case(Dims::new(n, c, h, w), p, if nhwc { Layout::Nhwc } else { Layout::Nchw }, seed, scale)?;
    }
}

#[test]
fn lrn_edges() {
    for layout in LAYOUTS {
        lrn_case(Dims::new(1, 1, 1, 1), Lrn::ALEXNET, layout, 1, 1.0).unwrap();
        // Window wider than the channel count.
        lrn_case(Dims::new(1, 3, 2, 2), Lrn { size: 9, ..Lrn::ALEXNET }, layout, 2, 5.0).unwrap();
        // AlexNet's 96 channels, widths around a vector.
        lrn_case(Dims::new(1, 96, 1, 17), Lrn::ALEXNET, layout, 3, 10.0).unwrap();
        lrn_case(Dims::new(2, 33, 2, 16), Lrn { size: 4, k: 1.0, alpha: 0.5, beta: 0.75 }, layout, 4, 1.0)
            .unwrap();
    }
}

#[test]
fn lrn_errors() {
    let d = Dims::new(1, 4, 2, 2);
    let x = vec![0.0f32; 16];
    let mut y = vec![0.0f32; 16];
    let e = Exec::new();
    let bad = Lrn { beta: -1.0, ..Lrn::ALEXNET };
    let mut ws = vec![0.0f32; 64];
    assert!(matches!(
        lrn(
            &e,
            &bad,
            TensorView::new(&x, d, Layout::Nchw).unwrap(),
            TensorViewMut::new(&mut y, d, Layout::Nchw).unwrap(),
            &mut ws
        ),
        Err(Error::InvalidParameter { .. })
    ));
    assert_eq!(
        lrn(
            &e,
            &Lrn::ALEXNET,
            TensorView::new(&x, d, Layout::Nchw).unwrap(),
            TensorViewMut::new(&mut y, d, Layout::Nhwc).unwrap(),
            &mut ws
        ),
        Err(Error::Unsupported(simdconv::Unsupported::MixedLayouts))
    );
    // NHWC needs channels + size - 1 = 8.
    assert_eq!(
        lrn(
            &e,
            &Lrn::ALEXNET,
            TensorView::new(&x, d, Layout::Nhwc).unwrap(),
            TensorViewMut::new(&mut y, d, Layout::Nhwc).unwrap(),
            &mut ws[..7]
        ),
        Err(Error::WorkspaceTooSmall { needed: 8, actual: 7 })
    );
    let dy = vec![0.0f32; 16];
    let need = lrn_backward_workspace_len(&Lrn::ALEXNET, d, Layout::Nchw).unwrap();
    assert_eq!(need, 2 * 16 * 4);
    let mut small = vec![0.0f32; need - 1];
    assert_eq!(
        lrn_backward(
            &e,
            &Lrn::ALEXNET,
            TensorView::new(&x, d, Layout::Nchw).unwrap(),
            TensorView::new(&dy, d, Layout::Nchw).unwrap(),
            TensorViewMut::new(&mut y, d, Layout::Nchw).unwrap(),
            &mut small
        ),
        Err(Error::WorkspaceTooSmall { needed: need, actual: need - 1 })
    );
}

// ---------------------------------------------------------------------------------------
// Planner: the notes' VGGNet-16 table

/// The notes' rows: (label, [h, w, c], memory as printed, weights as printed).
const NOTES_VGG16: [(&str, [usize; 3], f64, usize); 21] = [
    ("CONV3-64", [224, 224, 64], 3.2e6, 1_728),
    ("CONV3-64", [224, 224, 64], 3.2e6, 36_864),
    ("POOL2", [112, 112, 64], 800e3, 0),
    ("CONV3-128", [112, 112, 128], 1.6e6, 73_728),
    ("CONV3-128", [112, 112, 128], 1.6e6, 147_456),
    ("POOL2", [56, 56, 128], 400e3, 0),
    ("CONV3-256", [56, 56, 256], 800e3, 294_912),
    ("CONV3-256", [56, 56, 256], 800e3, 589_824),
    ("CONV3-256", [56, 56, 256], 800e3, 589_824),
    ("POOL2", [28, 28, 256], 200e3, 0),
    ("CONV3-512", [28, 28, 512], 400e3, 1_179_648),
    ("CONV3-512", [28, 28, 512], 400e3, 2_359_296),
    ("CONV3-512", [28, 28, 512], 400e3, 2_359_296),
    ("POOL2", [14, 14, 512], 100e3, 0),
    ("CONV3-512", [14, 14, 512], 100e3, 2_359_296),
    ("CONV3-512", [14, 14, 512], 100e3, 2_359_296),
    ("CONV3-512", [14, 14, 512], 100e3, 2_359_296),
    ("POOL2", [7, 7, 512], 25e3, 0),
    ("FC", [1, 1, 4096], 4096.0, 102_760_448),
    ("FC", [1, 1, 4096], 4096.0, 16_777_216),
    ("FC", [1, 1, 1000], 1000.0, 4_096_000),
];

#[test]
fn vgg16_rows_match_the_notes_table() {
    let input = Dims::new(1, 3, 224, 224);
    // The notes' INPUT row: 224*224*3 = "150K".
    assert_eq!(input.count().unwrap(), 150_528);
    let rows: Vec<_> = Planner::new(input, &VGG16, Layout::Nchw).collect::<Result<_, _>>().unwrap();
    assert_eq!(rows.len(), NOTES_VGG16.len());
    for (row, (label, [h, w, c], mem, weights)) in rows.iter().zip(NOTES_VGG16) {
        assert_eq!(row.spec.to_string(), label);
        assert_eq!((row.output.h, row.output.w, row.output.c), (h, w, c), "{label}");
        // The printed products (e.g. 224*224*64) are exact; the notes then round them to
        // 2 significant digits ("3.2M" for 3,211,264; "25K" for 25,088): within 1%.
        assert_eq!(row.activations, h * w * c, "{label}");
        let rel = (row.activations as f64 - mem).abs() / mem;
        assert!(rel < 0.01, "{label}: {} vs the notes' {mem}", row.activations);
        // Weights are exact in the notes, which leave out the biases (one per filter).
        assert_eq!(row.weights, weights, "{label}");
        let biases = if label.starts_with("POOL") { 0 } else { c };
        assert_eq!(row.biases, biases, "{label}");
    }
}

#[test]
fn vgg16_totals_and_where_the_notes_are_wrong() {
    let input = Dims::new(1, 3, 224, 224);
    let t = plan_totals(input, &VGG16, Layout::Nchw).unwrap();
    // "TOTAL params: 138M parameters": the weights alone are 138,344,128; the 13,416 biases
    // the table leaves out change nothing at 3 significant digits.
    assert_eq!(t.weights, 138_344_128);
    assert_eq!(t.biases, 13_416);
    assert_eq!(t.params(), 138_357_544);
    assert_eq!((t.params() as f64 / 1e6).round(), 138.0);
    // "TOTAL memory: 24M * 4 bytes ~= 93MB": the notes' own rows sum to 15,237,608
    // activations (input included), i.e. 60,950,432 bytes = 58.1 MiB, not 24M / 93MB.
    // The planner is right: the sum below is the notes' printed products, added up.
    let notes_rows: usize = 150_528 + NOTES_VGG16.iter().map(|(_, [h, w, c], _, _)| h * w * c).sum::<usize>();
    assert_eq!(notes_rows, 15_237_608);
    assert_eq!(t.activations, notes_rows);
    assert_eq!(t.activations * 4, 60_950_432);
    // 24M would need 8.8M more activations than the table lists; counting every
    // convolution's output twice (before and after an out-of-place ReLU) gives 28.8M,
    // so no reading of the table gives 24M: the notes' total is a slip.
    assert!(t.activations < 24_000_000 * 2 / 3);
    let rows: Vec<_> = Planner::new(input, &VGG16, Layout::Nchw).collect::<Result<_, _>>().unwrap();
    let conv_outputs: usize =
        rows.iter().filter(|r| matches!(r.spec, LayerSpec::Conv { .. })).map(|r| r.activations).sum();
    assert_eq!(t.activations + conv_outputs, 28_785_128);
    // "~*2 for bwd": the gradients double the activations.
    // Inference keeps the largest consecutive pair: CONV3-64 -> CONV3-64, 2 x 3,211,264.
    assert_eq!(t.peak_pair, 2 * 3_211_264);
    assert_eq!(t.inference_bytes(), 4 * (6_422_528 + 138_357_544));
    // Training: activations and gradients, parameters x 3.
    assert_eq!(t.training_bytes(), 4 * (2 * 15_237_608 + 3 * 138_357_544));
    // FLOPs: 15.47 G multiply-accumulates (the usual "15.5 GMAC" of VGG-16).
    assert_eq!(t.flops, 30_946_650_112);
    assert_eq!(t.output, Dims::new(1, 1000, 1, 1));
    // Batch 8: activations scale, parameters do not.
    let t8 = plan_totals(Dims::new(8, 3, 224, 224), &VGG16, Layout::Nhwc).unwrap();
    assert_eq!(t8.activations, 8 * t.activations);
    assert_eq!(t8.params(), t.params());
    assert!(matches_notes_pattern(&VGG16));
}

#[test]
fn planner_uses_the_kernels_geometry_rules() {
    // The notes' pattern and its counter-examples.
    let conv = LayerSpec::conv_relu(8, Conv2d::new(3, 3).pad(1));
    let pool = LayerSpec::pool(Pool2d::new(2, 2).stride(2));
    assert!(matches_notes_pattern(&[LayerSpec::fc(10)])); // INPUT -> FC
    assert!(matches_notes_pattern(&[conv, pool, conv, pool, LayerSpec::fc_relu(16), LayerSpec::fc(10)]));
    assert!(!matches_notes_pattern(&[conv]));
    assert!(!matches_notes_pattern(&[LayerSpec::fc(10), conv, LayerSpec::fc(10)]));
    assert!(!matches_notes_pattern(&[LayerSpec::fc_relu(10)]));
    // A 5x5 valid convolution on a 4x4 input: the same error as ConvGeometry::new.
    let d = Dims::new(1, 3, 4, 4);
    let big = LayerSpec::Conv { out_channels: 2, conv: Conv2d::new(5, 5), relu: true };
    let want = ConvGeometry::new(d, 2, Conv2d::new(5, 5)).unwrap_err();
    assert_eq!(plan_totals(d, &[big], Layout::Nchw), Err(want));
    // The notes' invalid setting W = 10, F = 3, S = 2 under the exact rule; the error comes
    // from the second layer and the planner stops there.
    let exact = LayerSpec::Conv {
        out_channels: 2,
        conv: Conv2d::new(3, 3).stride(2).rounding(simdconv::Rounding::Exact),
        relu: true,
    };
    let layers = [LayerSpec::conv_relu(4, Conv2d::new(3, 3).pad(1)), exact, LayerSpec::fc(3)];
    let mut it = Planner::new(Dims::new(1, 1, 10, 10), &layers, Layout::Nchw);
    assert!(it.next().unwrap().is_ok());
    assert!(matches!(it.next(), Some(Err(Error::NotExact { input: 10, .. }))));
    assert!(it.next().is_none());
    // Pooling padding over half the window is rejected, as by PoolGeometry.
    let p = Pool2d::new(2, 2).pad(2);
    assert_eq!(
        plan_totals(d, &[LayerSpec::pool(p)], Layout::Nchw),
        Err(PoolGeometry::new(d, p).unwrap_err())
    );
    // Locally-connected and LRN layers: unshared weights and the kernels' workspaces.
    let lc = Conv2d::new(3, 3);
    let layers = [
        LayerSpec::LocallyConnected { out_channels: 5, conv: lc, relu: true },
        LayerSpec::Lrn(Lrn::ALEXNET),
        LayerSpec::fc(2),
    ];
    let rows: Vec<_> =
        Planner::new(Dims::new(2, 3, 6, 6), &layers, Layout::Nhwc).collect::<Result<_, _>>().unwrap();
    assert_eq!(rows[0].output, Dims::new(2, 5, 4, 4));
    assert_eq!([rows[0].spec.to_string(), rows[1].spec.to_string()], ["LOCAL3-5", "LRN5"]);
    assert_eq!(rows[0].weights, 4 * 4 * 5 * 3 * 9);
    assert_eq!(rows[0].biases, 4 * 4 * 5);
    assert_eq!(rows[0].workspace, 27);
    assert_eq!(rows[1].workspace, 5 + 4);
    assert_eq!(rows[2].weights, 80 * 2);
    assert_eq!(rows[2].flops, 2 * 2 * 80 * 2);
}

fn layer_strategy() -> impl Strategy<Value = LayerSpec> {
    prop_oneof![
        (1usize..6, 1usize..4, 1usize..3, 0usize..2, any::<bool>()).prop_map(|(k, f, s, p, relu)| {
            LayerSpec::Conv { out_channels: k, conv: Conv2d::new(f, f).stride(s).pad(p), relu }
        }),
        (1usize..4, 1usize..3).prop_map(|(f, s)| LayerSpec::pool(Pool2d::new(f, f).stride(s))),
        (1usize..6, 1usize..3, any::<bool>()).prop_map(|(k, f, relu)| LayerSpec::LocallyConnected {
            out_channels: k,
            conv: Conv2d::new(f, f),
            relu
        }),
        (1usize..12, any::<bool>()).prop_map(|(outputs, relu)| LayerSpec::Fc { outputs, relu }),
        (1usize..6).prop_map(|size| LayerSpec::Lrn(Lrn { size, ..Lrn::ALEXNET })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simdconv_tests::proptest_cases(64)))]

    /// The planner walks a net exactly as chaining the kernels' geometries would: the same
    /// shapes, counts and workspaces, and the same error at the same layer.
    #[test]
    fn planner_agrees_with_the_geometries(
        n in 1usize..3, c in 1usize..4, hw in 1usize..12,
        layers in proptest::collection::vec(layer_strategy(), 0..7),
        nhwc in any::<bool>(),
    ) {
        let layout = if nhwc { Layout::Nhwc } else { Layout::Nchw };
        let input = Dims::new(n, c, hw, hw);
        let mut d = input;
        let mut acts = input.count().unwrap();
        let (mut weights, mut biases, mut flops, mut peak, mut ws) = (0usize, 0usize, 0u64, 0usize, 0usize);
        let mut expected_err = None;
        let mut rows = Vec::new();
        for spec in &layers {
            let step = (|| -> Result<(Dims, usize, usize, u64, usize), Error> {
                Ok(match *spec {
                    LayerSpec::Conv { out_channels, conv, .. } => {
                        let g = ConvGeometry::new(d, out_channels, conv)?;
                        let ws = simdconv::conv2d_workspace_len(&g, simdconv::Algorithm::Auto, layout)?;
                        (g.output(), g.filter().count()?, out_channels, 2 * g.macs(), ws)
                    }
                    LayerSpec::LocallyConnected { out_channels, conv, .. } => {
                        let g = ConvGeometry::new(d, out_channels, conv)?;
                        let ld = LocalWeightsDims::of(&g);
                        let f = g.filter();
                        (g.output(), ld.weight_count()?, ld.bias_count()?, 2 * g.macs(), f.i * f.kh * f.kw)
                    }
                    LayerSpec::Pool(p) => {
                        let g = PoolGeometry::new(d, p)?;
                        let [kh, kw] = p.window().kernel();
                        (g.output(), 0, 0, (g.output().count()? * kh * kw) as u64, 0)
                    }
                    LayerSpec::Fc { outputs, .. } => {
                        let inputs = d.c * d.h * d.w;
                        FcGeometry::new(d.n, inputs, outputs)?;
                        (Dims::new(d.n, outputs, 1, 1), inputs * outputs, outputs, 2 * (d.n * inputs * outputs) as u64, 0)
                    }
                    LayerSpec::Lrn(p) => {
                        let ws = lrn_workspace_len(&p, d, layout)?;
                        (d, 0, 0, (d.count()? * (2 * p.size + 4)) as u64, ws)
                    }
                })
            })();
            match step {
                Err(e) => {
                    expected_err = Some(e);
                    break;
                }
                Ok((out, w, b, f, s)) => {
                    rows.push((d, out, w, b, f, s));
                    peak = peak.max(d.count().unwrap() + out.count().unwrap());
                    d = out;
                    acts += out.count().unwrap();
                    weights += w;
                    biases += b;
                    flops += f;
                    ws = ws.max(s);
                }
            }
        }
        let planned: Vec<_> = Planner::new(input, &layers, layout).collect();
        prop_assert_eq!(planned.len(), rows.len() + usize::from(expected_err.is_some()));
        for (p, &(i, o, w, b, f, s)) in planned.iter().zip(&rows) {
            let p = p.as_ref().unwrap();
            prop_assert_eq!((p.input, p.output, p.weights, p.biases, p.flops, p.workspace), (i, o, w, b, f, s));
            prop_assert_eq!(p.activations, o.count().unwrap());
        }
        match expected_err {
            Some(e) => {
                prop_assert_eq!(planned.last().unwrap().as_ref().unwrap_err(), &e);
                prop_assert_eq!(plan_totals(input, &layers, layout), Err(e));
            }
            None => {
                let t = plan_totals(input, &layers, layout).unwrap();
                prop_assert_eq!((t.layers, t.output, t.activations), (layers.len(), d, acts));
                prop_assert_eq!((t.weights, t.biases, t.flops, t.max_workspace), (weights, biases, flops, ws));
                prop_assert_eq!(t.peak_pair, peak);
                prop_assert_eq!(t.inference_bytes(), 4 * (peak + weights + biases) as u64);
                prop_assert_eq!(t.training_bytes(), 4 * (2 * acts + 3 * (weights + biases)) as u64);
                let (vrows, vt) = simdconv::plan::plan(input, &layers, layout).unwrap();
                prop_assert_eq!(vt, t);
                prop_assert_eq!(vrows.len(), layers.len());
            }
        }
    }
}

/// The cases proptest shrank to when the kernels were deliberately broken (a 0.1% error
/// in LRN's cross term; h and w swapped in the CHW flattening), kept as named tests.
#[test]
fn regressions_found_by_mutation() {
    lrn_case(
        Dims::new(1, 1, 1, 1),
        Lrn { size: 1, k: 1.0, alpha: 0.1, beta: 0.75 },
        Layout::Nchw,
        6_941_200_131_678,
        1.0,
    )
    .unwrap();
    fc_to_conv_case(1, 1, 2, 1, 0, Layout::Nchw, FilterLayout::Oihw);
}
