//! The GEMM-based forward convolutions (im2col + GEMM, pointwise) and `Auto`, against the
//! f64 reference: every ISA (it only changes the fused epilogue; `gemm` picks its own
//! kernel) x both layouts x OIHW / OHWI / HWIO filters x random geometry and epilogue x
//! one or two threads, with strided (channel-slice, padded-row) input and output views.

use proptest::prelude::*;
use simdconv::reference as r;
use simdconv::{
    conv2d, conv2d_alloc, conv2d_workspace_len, select_algorithm, Activation, Algorithm, Conv2d,
    Conv2dOptions, ConvGeometry, Dims, Epilogue, Error, Exec, FilterLayout, FilterView, Layout, Operand,
    Padding, Rounding, TensorView, TensorViewMut, Unsupported,
};
use simdconv_tests::{abs_f64, check_close, dense, isas, padded_copy, padded_output, setup, Rng};

const LAYOUTS: [Layout; 2] = [Layout::Nchw, Layout::Nhwc];
const FILTERS: [FilterLayout; 3] = [FilterLayout::Oihw, FilterLayout::Ohwi, FilterLayout::Hwio];
/// Marks output elements outside the view; they must survive untouched.
const SENTINEL: f32 = 12345.0;

/// A convolution problem plus how its tensors are laid out in memory.
#[derive(Clone, Debug)]
struct Case {
    input: Dims,
    k: usize,
    conv: Conv2d,
    bias: bool,
    residual: bool,
    act: Activation,
    /// Extra channels / columns around the input and output views (0 = dense).
    pad_c: usize,
    pad_w: usize,
    threads: usize,
    seed: u64,
}

/// Runs `algorithm` on `case` for every ISA x layout x filter layout and checks it.
fn check_case(case: &Case, algorithm: Algorithm) -> Result<(), TestCaseError> {
    let g = match ConvGeometry::new(case.input, case.k, case.conv) {
        Ok(g) => g,
        Err(e) => return Err(TestCaseError::reject(format!("{e}"))),
    };
    let (id, od, fd) = (g.input(), g.output(), g.filter());
    let mut rng = Rng::new(case.seed);
    let xs = rng.vec(id.count().unwrap());
    let ws = rng.vec(fd.count().unwrap());
    let bias = rng.vec(od.c);
    let res = rng.vec(od.count().unwrap());
    // Reference in f64 on dense NCHW / OIHW, and its magnitude on |x|, |w|.
    let x64 = simdconv_tests::to_f64(&xs);
    let w64 = simdconv_tests::to_f64(&ws);
    let b64 = simdconv_tests::to_f64(&bias);
    let mut want = vec![0.0f64; od.count().unwrap()];
    let mut mag = vec![0.0f64; od.count().unwrap()];
    let run_ref = |x: &[f64], w: &[f64], b: Option<&[f64]>, y: &mut [f64]| {
        r::conv2d(
            &g,
            TensorView::new(x, id, Layout::Nchw).unwrap(),
            FilterView::new(w, fd, FilterLayout::Oihw).unwrap(),
            b,
            TensorViewMut::new(y, od, Layout::Nchw).unwrap(),
        )
        .unwrap();
    };
    run_ref(&x64, &w64, case.bias.then_some(&b64[..]), &mut want);
    let babs: Vec<f64> = b64.iter().map(|v| v.abs()).collect();
    run_ref(&abs_f64(&xs), &abs_f64(&ws), case.bias.then_some(&babs[..]), &mut mag);
    for (i, (y, m)) in want.iter_mut().zip(&mut mag).enumerate() {
        if case.residual {
            *y += f64::from(res[i]);
            *m += f64::from(res[i]).abs();
        }
        *y = match case.act {
            Activation::Identity => *y,
            Activation::Relu => y.max(0.0),
            Activation::Clamp { min, max } => y.clamp(f64::from(min), f64::from(max)),
        };
    }
    let terms = fd.i * fd.kh * fd.kw;

    for isa in isas() {
        let exec = Exec::new().with_isa(isa).unwrap().with_threads(case.threads).unwrap();
        for layout in LAYOUTS {
            // The input as a (possibly padded) view in `layout`.
            let (xbuf, xstr) = padded_copy(&xs, id, layout, case.pad_c, case.pad_w);
            let x = TensorView::with_strides(&xbuf, id, xstr).unwrap();
            let mut rbuf = vec![0.0f32; res.len()];
            simdconv::repack_tensor(&res, Layout::Nchw, &mut rbuf, layout, od).unwrap();
            for fl in FILTERS {
                let mut wbuf = vec![0.0f32; ws.len()];
                simdconv::repack_filter(&ws, FilterLayout::Oihw, &mut wbuf, fl, fd).unwrap();
                let w = FilterView::new(&wbuf, fd, fl).unwrap();
                let mut epilogue = Epilogue::new().activation(case.act);
                if case.bias {
                    epilogue = epilogue.bias(&bias);
                }
                if case.residual {
                    epilogue = epilogue.residual(TensorView::new(&rbuf, od, layout).unwrap());
                }
                let opts = Conv2dOptions { algorithm, epilogue };
                let need = conv2d_workspace_len(&g, algorithm, layout).unwrap();
                let mut work = vec![f32::NAN; need];
                // Every output element is overwritten: start them all at NaN.
                let (mut ybuf, ystr) = padded_output(od, layout, case.pad_c, case.pad_w, SENTINEL);
                let y = TensorViewMut::with_strides(&mut ybuf, od, ystr).unwrap();
                conv2d(&exec, &g, &opts, x, w, y, &mut work)
                    .map_err(|e| TestCaseError::fail(format!("{isa} {layout:?} {fl:?}: {e}")))?;
                let yv = TensorView::with_strides(&ybuf, od, ystr).unwrap();
                let got = dense(&yv);
                check_close(&got, &want, &mag, terms).map_err(|e| {
                    TestCaseError::fail(format!("{isa} {layout:?} {fl:?} {algorithm:?}: {e}"))
                })?;
                let written = od.count().unwrap();
                let untouched = ybuf.iter().filter(|&&v| v == SENTINEL).count();
                prop_assert_eq!(
                    untouched,
                    ybuf.len() - written,
                    "{} {:?} {:?}: wrote outside the view",
                    isa,
                    layout,
                    fl
                );
            }
        }
    }
    Ok(())
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        Just(Activation::Clamp { min: -0.5, max: 0.75 }),
    ]
}

prop_compose! {
    /// Any convolution: groups, dilation, asymmetric padding, stride up to 4 (beyond the
    /// kernel), batch up to 3, Floor or Ceil rounding, inputs from 1x1 up.
    fn any_case()(
        n in 1usize..=3,
        groups in 1usize..=3,
        cg in 1usize..=5,
        kg in 1usize..=5,
        kh in 1usize..=4, kw in 1usize..=4,
        sh in 1usize..=4, sw in 1usize..=4,
        dh in 1usize..=3, dw in 1usize..=3,
        pad in [0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3],
        extra in [0usize..=6, 0usize..=6],
        ceil in any::<bool>(),
        bias in any::<bool>(), residual in any::<bool>(), act in activation(),
        pad_c in prop_oneof![Just(0usize), 1usize..=3],
        pad_w in prop_oneof![Just(0usize), 1usize..=2],
        threads in 1usize..=2,
        seed in any::<u64>(),
    ) -> Case {
        // The smallest input the window fits in, plus `extra`.
        let eh = dh * (kh - 1) + 1;
        let ew = dw * (kw - 1) + 1;
        let h = eh.saturating_sub(pad[0] + pad[1]).max(1) + extra[0];
        let w = ew.saturating_sub(pad[2] + pad[3]).max(1) + extra[1];
        let conv = Conv2d::new(kh, kw)
            .stride_hw(sh, sw)
            .dilation_hw(dh, dw)
            .padding(Padding::new(pad[0], pad[1], pad[2], pad[3]))
            .groups(groups)
            .rounding(if ceil { Rounding::Ceil } else { Rounding::Floor });
        Case { input: Dims::new(n, groups * cg, h, w), k: groups * kg, conv, bias, residual, act,
               pad_c, pad_w, threads, seed }
    }
}

prop_compose! {
    /// 1x1 convolutions without padding: any stride and dilation, groups, up to 20
    /// input channels per group or 512-530 (NHWC's dot products, with up to 128 pixels),
    /// up to 20 output channels per group or 64-72 (enough for two threads to split
    /// them), planes from 1x1.
    fn pointwise_case()(
        n in 1usize..=3,
        groups in 1usize..=3,
        cg in prop_oneof![6 => 1usize..=20, 1 => 512usize..=530],
        kg in prop_oneof![3 => 1usize..=20, 1 => 64usize..=72],
        sh in 1usize..=3, sw in 1usize..=3,
        d in 1usize..=2,
        h in 1usize..=9, w in 1usize..=9,
        ceil in any::<bool>(),
        bias in any::<bool>(), residual in any::<bool>(), act in activation(),
        pad_c in prop_oneof![Just(0usize), 1usize..=3],
        pad_w in prop_oneof![Just(0usize), 1usize..=2],
        threads in 1usize..=2,
        seed in any::<u64>(),
    ) -> Case {
        let conv = Conv2d::new(1, 1).stride_hw(sh, sw).dilation(d).groups(groups)
            .rounding(if ceil { Rounding::Ceil } else { Rounding::Floor });
        Case { input: Dims::new(n, groups * cg, h, w), k: groups * kg, conv, bias, residual, act,
               pad_c, pad_w, threads, seed }
    }
}

prop_compose! {
    /// Thin-input convolutions with a wide window (network stems: the im2col algorithm's
    /// direct `thin` kernel): one group, 1-4 input channels, 5x5 to 7x7 windows, stride up
    /// to 8 (beyond the kernel), dilation up to 2, asymmetric padding, 1-40 output channels
    /// (one partial SIMD vector up to several blocks), batch up to 2, planes from one
    /// window up.
    fn thin_case()(
        n in 1usize..=2,
        cg in 1usize..=4,
        k in prop_oneof![1usize..=20, 21usize..=40],
        kh in 5usize..=7, kw in 5usize..=7,
        sh in 1usize..=3, sw in prop_oneof![1usize..=3, 6usize..=8],
        dh in 1usize..=2, dw in 1usize..=2,
        pad in [0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3],
        extra in [0usize..=4, 0usize..=12],
        bias in any::<bool>(), residual in any::<bool>(), act in activation(),
        pad_c in prop_oneof![Just(0usize), 1usize..=3],
        pad_w in prop_oneof![Just(0usize), 1usize..=2],
        threads in 1usize..=2,
        seed in any::<u64>(),
    ) -> Case {
        let eh = dh * (kh - 1) + 1;
        let ew = dw * (kw - 1) + 1;
        let h = eh.saturating_sub(pad[0] + pad[1]).max(1) + extra[0];
        let w = ew.saturating_sub(pad[2] + pad[3]).max(1) + extra[1];
        let conv = Conv2d::new(kh, kw)
            .stride_hw(sh, sw)
            .dilation_hw(dh, dw)
            .padding(Padding::new(pad[0], pad[1], pad[2], pad[3]));
        Case { input: Dims::new(n, cg, h, w), k, conv, bias, residual, act, pad_c, pad_w, threads, seed }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simdconv_tests::proptest_cases(48)))]

    #[test]
    fn im2col_thin_input_matches_reference(case in thin_case()) {
        check_case(&case, Algorithm::Im2colGemm)?;
    }

    #[test]
    fn im2col_matches_reference(case in any_case()) {
        check_case(&case, Algorithm::Im2colGemm)?;
    }

    #[test]
    fn im2col_matches_reference_on_1x1(case in pointwise_case()) {
        check_case(&case, Algorithm::Im2colGemm)?;
    }

    #[test]
    fn pointwise_matches_reference(case in pointwise_case()) {
        check_case(&case, Algorithm::Pointwise)?;
    }

    #[test]
    fn auto_matches_reference(case in prop_oneof![any_case(), pointwise_case()]) {
        let g = ConvGeometry::new(case.input, case.k, case.conv);
        prop_assume!(g.is_ok());
        let g = g.unwrap();
        for layout in LAYOUTS {
            let chosen = select_algorithm(&g, layout);
            let expect = if g.is_depthwise() && g.groups() > 1 {
                Algorithm::Depthwise
            } else if g.is_pointwise() {
                Algorithm::Pointwise
            } else {
                Algorithm::Im2colGemm
            };
            prop_assert_eq!(chosen, expect);
        }
        // Depthwise shapes go to the depthwise kernel, tested in its own suite.
        if select_algorithm(&g, Layout::Nchw) != Algorithm::Depthwise {
            check_case(&case, Algorithm::Auto)?;
        }
    }
}

fn geometry(input: Dims, k: usize, conv: Conv2d) -> ConvGeometry {
    ConvGeometry::new(input, k, conv).unwrap()
}

fn case(input: Dims, k: usize, conv: Conv2d) -> Case {
    Case {
        input,
        k,
        conv,
        bias: true,
        residual: true,
        act: Activation::Relu,
        pad_c: 0,
        pad_w: 0,
        threads: 1,
        seed: 7,
    }
}

#[test]
fn window_equals_padded_input_and_big_dilation() {
    // The window covers the whole padded input: one output pixel.
    let c = case(Dims::new(2, 3, 3, 2), 5, Conv2d::new(3, 4).padding(Padding::new(1, 1, 0, 2)));
    check_case(&c, Algorithm::Im2colGemm).unwrap();
    // Dilation 5 on a 3x3 over an 11x11 input, stride larger than the kernel.
    let c = case(Dims::new(1, 4, 11, 13), 6, Conv2d::new(3, 3).dilation(5).stride(4).groups(2));
    check_case(&c, Algorithm::Im2colGemm).unwrap();
}

#[test]
fn channel_counts_not_multiple_of_16_with_strided_views() {
    let mut c = case(Dims::new(3, 17, 6, 7), 19, Conv2d::new(3, 3).pad(1).stride_hw(2, 1));
    c.pad_c = 2;
    c.pad_w = 1;
    c.threads = 2;
    check_case(&c, Algorithm::Im2colGemm).unwrap();
    let c = case(Dims::new(2, 33, 5, 6), 18, Conv2d::new(1, 1).stride(2));
    check_case(&c, Algorithm::Pointwise).unwrap();
}

#[test]
fn several_tiles_and_threads() {
    // R = 64 * 9 = 576 rows: a tile is 2^20 / 576 = 1820 pixels, so 2 x 40 x 40 = 3200
    // output pixels take two tiles (crossing the image boundary), or more per thread.
    let input = Dims::new(2, 64, 40, 40);
    let conv = Conv2d::new(3, 3).pad(1);
    let g = geometry(input, 8, conv);
    let len = conv2d_workspace_len(&g, Algorithm::Im2colGemm, Layout::Nchw).unwrap();
    assert!(len < 576 * 3200, "{len}: one tile holds every pixel");
    assert!(len >= 576 * 1000);
    for threads in [1, 2] {
        let mut c = case(input, 8, conv);
        c.threads = threads;
        check_case(&c, Algorithm::Im2colGemm).unwrap();
    }
    // Pointwise with enough pixels (2 x 12 x 12 = 288) that two threads split them, over
    // padded rows (per-row GEMMs) and dense ones (one GEMM across the batch).
    for pad_w in [0, 1] {
        let mut c = case(Dims::new(2, 24, 12, 12), 20, Conv2d::new(1, 1).groups(2));
        c.threads = 2;
        c.pad_w = pad_w;
        check_case(&c, Algorithm::Pointwise).unwrap();
    }
}

#[test]
fn pointwise_two_threads_split_channels() {
    // Below 512 output pixels two threads split a group's output channels (at least 32
    // each) rather than the pixels (conv/pointwise.rs): 2 x 12 x 15 = 360 pixels, two
    // groups of 71 output channels (shares of 35 and 36, each with its own epilogue:
    // bias, residual and ReLU), over dense rows (one GEMM across the batch), padded rows
    // and channel slices (per-row GEMMs), and stride 2 (90 pixels: one thread, `gemm`).
    for (pad_c, pad_w, stride) in [(0, 0, 1), (0, 1, 1), (2, 0, 1), (0, 0, 2)] {
        let mut c = case(Dims::new(2, 2 * 24, 12, 15), 2 * 71, Conv2d::new(1, 1).groups(2).stride(stride));
        c.threads = 2;
        c.pad_c = pad_c;
        c.pad_w = pad_w;
        check_case(&c, Algorithm::Pointwise).unwrap();
    }
    // One group of 64 channels (two shares of 32), a clamp, 14 x 14 pixels of one image.
    let mut c = case(Dims::new(1, 40, 14, 14), 64, Conv2d::new(1, 1));
    c.threads = 2;
    c.act = Activation::Clamp { min: -0.5, max: 0.5 };
    check_case(&c, Algorithm::Pointwise).unwrap();
}

#[test]
fn pointwise_nhwc_dot_products() {
    // At most 128 output pixels and 512+ input channels per group, with channels
    // contiguous in input, filter and output (NHWC; or NCHW with 1 x 1 planes), the 1x1
    // runs as dot products along the channels (conv/pointwise.rs `Dots`): 4-pixel x
    // 6-channel tiles, so pixel and channel counts that are not multiples of them, input
    // channels that are not whole vectors (515 = 32 x 16 + 3), two images (70 pixels),
    // padded rows and channel slices (one run per row), stride 2 (pixels 2 C apart),
    // groups, and two threads splitting the output channels.
    for (pad_c, pad_w, stride) in [(0, 0, 1), (0, 1, 1), (3, 0, 1), (0, 0, 2)] {
        let c = Case { pad_c, pad_w, ..case(Dims::new(2, 515, 5, 7), 13, Conv2d::new(1, 1).stride(stride)) };
        check_case(&c, Algorithm::Pointwise).unwrap();
    }
    check_case(&case(Dims::new(1, 2 * 520, 3, 3), 2 * 7, Conv2d::new(1, 1).groups(2)), Algorithm::Pointwise)
        .unwrap();
    // 128 pixels (the most), and 129 (through gemm).
    for (h, w) in [(8, 16), (3, 43)] {
        check_case(&case(Dims::new(1, 512, h, w), 5, Conv2d::new(1, 1)), Algorithm::Pointwise).unwrap();
    }
    // A fully-connected layer as a 1x1 over 1 x 1 planes (NCHW too), batch 3.
    check_case(&case(Dims::new(3, 600, 1, 1), 10, Conv2d::new(1, 1)), Algorithm::Pointwise).unwrap();
    // Two threads: 70 output channels in shares of 35, each with its own epilogue.
    let c = Case { threads: 2, ..case(Dims::new(1, 512, 7, 7), 70, Conv2d::new(1, 1)) };
    check_case(&c, Algorithm::Pointwise).unwrap();
}

#[test]
fn vgg_conv1_2_workspace_is_bounded() {
    let g = geometry(Dims::new(1, 64, 224, 224), 64, Conv2d::new(3, 3).pad(1));
    for layout in LAYOUTS {
        let len = conv2d_workspace_len(&g, Algorithm::Im2colGemm, layout).unwrap();
        // The whole column matrix would be 576 x 50176 floats = 115.6 MB.
        assert!(len * 4 < 16 << 20, "{len} floats");
        assert!(len * 4 <= 4 << 20, "{len} floats: more than the documented 4 MiB");
        // Auto asks for whatever the algorithm it picks needs (Winograd here).
        let auto = select_algorithm(&g, layout);
        assert_eq!(
            conv2d_workspace_len(&g, Algorithm::Auto, layout).unwrap(),
            conv2d_workspace_len(&g, auto, layout).unwrap()
        );
    }
    // Pointwise needs none.
    let g = geometry(Dims::new(1, 256, 56, 56), 64, Conv2d::new(1, 1));
    assert_eq!(conv2d_workspace_len(&g, Algorithm::Pointwise, Layout::Nhwc).unwrap(), 0);
    assert_eq!(conv2d_workspace_len(&g, Algorithm::Auto, Layout::Nchw).unwrap(), 0);
}

struct Buffers {
    g: ConvGeometry,
    x: Vec<f32>,
    w: Vec<f32>,
    y: Vec<f32>,
}

fn buffers(input: Dims, k: usize, conv: Conv2d) -> Buffers {
    let g = geometry(input, k, conv);
    let mut rng = Rng::new(3);
    Buffers {
        x: rng.vec(g.input().count().unwrap()),
        w: rng.vec(g.filter().count().unwrap()),
        y: vec![0.0; g.output().count().unwrap()],
        g,
    }
}

fn run(b: &mut Buffers, algorithm: Algorithm, work: &mut [f32]) -> Result<(), Error> {
    let g = b.g;
    conv2d(
        &Exec::new(),
        &g,
        &Conv2dOptions { algorithm, ..Conv2dOptions::default() },
        TensorView::new(&b.x, g.input(), Layout::Nchw)?,
        FilterView::new(&b.w, g.filter(), FilterLayout::Oihw)?,
        TensorViewMut::new(&mut b.y, g.output(), Layout::Nchw)?,
        work,
    )
}

#[test]
fn workspace_too_small_is_an_error_with_numbers() {
    setup();
    let mut b = buffers(Dims::new(1, 3, 8, 8), 4, Conv2d::new(3, 3).pad(1));
    let need = conv2d_workspace_len(&b.g, Algorithm::Im2colGemm, Layout::Nchw).unwrap();
    assert_eq!(need, 27 * 64);
    let mut work = vec![0.0; need - 1];
    assert_eq!(
        run(&mut b, Algorithm::Im2colGemm, &mut work),
        Err(Error::WorkspaceTooSmall { needed: need, actual: need - 1 })
    );
    assert_eq!(
        run(&mut b, Algorithm::Auto, &mut []),
        Err(Error::WorkspaceTooSmall { needed: need, actual: 0 })
    );
    // A longer workspace is fine.
    let mut work = vec![0.0; need + 5];
    run(&mut b, Algorithm::Im2colGemm, &mut work).unwrap();
}

#[test]
fn pointwise_refuses_other_kernels() {
    setup();
    let mut b = buffers(Dims::new(1, 3, 8, 8), 4, Conv2d::new(3, 3));
    let e = Err(Error::Unsupported(Unsupported::PointwiseNeedsOneByOne));
    assert_eq!(run(&mut b, Algorithm::Pointwise, &mut []), e);
    assert_eq!(conv2d_workspace_len(&b.g, Algorithm::Pointwise, Layout::Nchw), e.map(|()| 0));
    // A 1x1 with padding is not pointwise either.
    let mut b = buffers(Dims::new(1, 3, 8, 8), 4, Conv2d::new(1, 1).pad(1));
    assert_eq!(run(&mut b, Algorithm::Pointwise, &mut []), e);
    assert_eq!(select_algorithm(&b.g, Layout::Nchw), Algorithm::Im2colGemm);
}

#[test]
fn filter_strides_that_do_not_collapse_are_unsupported() {
    setup();
    let g = geometry(Dims::new(1, 2, 6, 6), 3, Conv2d::new(3, 3));
    let fd = g.filter();
    // OIHW with each 3-wide filter row padded to 4: neither (i, kh, kw) nor (kh, kw, i)
    // is one stride.
    let w = vec![0.5f32; 3 * 2 * 12];
    let wv = FilterView::with_strides(&w, fd, [24, 12, 4, 1]).unwrap();
    let x = vec![1.0f32; g.input().count().unwrap()];
    let mut y = vec![0.0f32; g.output().count().unwrap()];
    let need = conv2d_workspace_len(&g, Algorithm::Im2colGemm, Layout::Nchw).unwrap();
    let mut work = vec![0.0; need];
    let e = conv2d(
        &Exec::new(),
        &g,
        &Conv2dOptions { algorithm: Algorithm::Im2colGemm, ..Conv2dOptions::default() },
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        wv,
        TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap(),
        &mut work,
    );
    assert_eq!(e, Err(Error::Unsupported(Unsupported::NonContiguous(Operand::Filter))));
}

#[test]
fn auto_heuristic_and_names() {
    let dw = geometry(Dims::new(1, 8, 6, 6), 16, Conv2d::new(3, 3).pad(1).groups(8));
    let pw = geometry(Dims::new(1, 8, 6, 6), 16, Conv2d::new(1, 1).stride(2));
    let k3 = geometry(Dims::new(1, 8, 6, 6), 16, Conv2d::new(3, 3).pad(1).groups(2));
    let one = geometry(Dims::new(1, 1, 6, 6), 4, Conv2d::new(3, 3));
    for layout in LAYOUTS {
        assert_eq!(select_algorithm(&dw, layout), Algorithm::Depthwise);
        assert_eq!(select_algorithm(&pw, layout), Algorithm::Pointwise);
        assert_eq!(select_algorithm(&k3, layout), Algorithm::Im2colGemm);
        // One input channel and one group is an ordinary convolution.
        assert_eq!(select_algorithm(&one, layout), Algorithm::Im2colGemm);
    }
    for a in Algorithm::NAMED {
        assert_eq!(Algorithm::from_name(a.name()), Some(a));
    }
    assert_eq!(Algorithm::from_name("IM2COL"), Some(Algorithm::Im2colGemm));
}

#[test]
fn alloc_convenience_matches_workspace_call() {
    setup();
    let mut b = buffers(Dims::new(2, 5, 9, 7), 6, Conv2d::new(3, 2).pad(1).stride(2));
    let need = conv2d_workspace_len(&b.g, Algorithm::Auto, Layout::Nchw).unwrap();
    let mut work = vec![0.0; need];
    run(&mut b, Algorithm::Auto, &mut work).unwrap();
    let with_ws = b.y.clone();
    let g = b.g;
    let mut y = vec![f32::NAN; with_ws.len()];
    conv2d_alloc(
        &Exec::new(),
        &g,
        &Conv2dOptions::default(),
        TensorView::new(&b.x, g.input(), Layout::Nchw).unwrap(),
        FilterView::new(&b.w, g.filter(), FilterLayout::Oihw).unwrap(),
        TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap(),
    )
    .unwrap();
    assert_eq!(y, with_ws);
}

#[test]
fn fused_epilogue_runs_on_every_isa() {
    let isas = isas();
    let before: Vec<usize> = isas.iter().map(|&i| simdconv::dispatch_count(i)).collect();
    let mut c = case(Dims::new(1, 3, 5, 5), 4, Conv2d::new(3, 3));
    c.residual = false;
    check_case(&c, Algorithm::Im2colGemm).unwrap();
    let c = case(Dims::new(1, 3, 5, 5), 4, Conv2d::new(1, 1));
    check_case(&c, Algorithm::Pointwise).unwrap();
    for (isa, b) in isas.into_iter().zip(before) {
        assert!(simdconv::dispatch_count(isa) >= b + 2, "{isa} never ran the epilogue");
    }
}

#[test]
fn thin_input_edges() {
    // One channel, one output channel, a 5x5 window that is the whole padded input.
    let c = case(Dims::new(1, 1, 3, 4), 1, Conv2d::new(5, 5).padding(Padding::new(1, 1, 0, 1)));
    check_case(&c, Algorithm::Im2colGemm).unwrap();
    // AlexNet-like: 11x11 stride 4, 3 -> 17 channels (a partial vector on every ISA),
    // batch 2, two threads, over channel-slice and padded-row views.
    let mut c = case(Dims::new(2, 3, 23, 27), 17, Conv2d::new(11, 11).stride(4));
    c.pad_c = 1;
    c.pad_w = 2;
    c.threads = 2;
    check_case(&c, Algorithm::Im2colGemm).unwrap();
    // ResNet-like: 7x7 stride 2 pad 3, 3 -> 64 (whole blocks) and -> 40 (a padded block);
    // rows of every length up to past the pixel block, so tails and border pixels meet.
    for (w, k) in [(9, 64), (14, 40), (30, 33)] {
        let c = case(Dims::new(1, 3, 10, w), k, Conv2d::new(7, 7).stride(2).pad(3));
        check_case(&c, Algorithm::Im2colGemm).unwrap();
    }
    // Output channels that leave a partial block of 3 vectors (49, 97) and rows longer
    // than the NCHW row buffer's chunk of pixels for 100 channels (16 pixels a chunk
    // on every ISA): the packed weights and the chunking stay inside the workspace.
    for (w, k) in [(12, 49), (9, 97), (90, 100)] {
        let c = case(Dims::new(1, 2, 7, w), k, Conv2d::new(5, 5).pad(2));
        check_case(&c, Algorithm::Im2colGemm).unwrap();
    }
    // Stride beyond the kernel, dilation, 4 channels, no epilogue, through Auto.
    let mut c = case(Dims::new(1, 4, 12, 40), 24, Conv2d::new(5, 6).stride_hw(6, 7).dilation_hw(1, 2).pad(2));
    c.bias = false;
    c.residual = false;
    c.act = Activation::Identity;
    check_case(&c, Algorithm::Auto).unwrap();
}

#[test]
fn thin_input_nchw_pixel_kernel_edges() {
    // NCHW thin stems whose rows are near whole vectors take the pixel-vectorised kernel
    // (conv/nchw.rs) on AVX-512 and Scalar. 31 pixels a row: shorter than a block of 3
    // vectors and not whole vectors (one vector, then one ending at the row's end); 19
    // output channels (partial channel blocks of 8 and 4).
    let c = case(Dims::new(1, 3, 6, 31), 19, Conv2d::new(5, 5).pad(2));
    check_case(&c, Algorithm::Im2colGemm).unwrap();
    // ResNet-like k7 s2 p3 with 63-pixel rows (a full block, then an overlapping one),
    // 64 channels, two threads (shares cut rows into short runs), channel-slice and
    // padded-row views of input and output.
    let mut c = case(Dims::new(1, 3, 9, 125), 64, Conv2d::new(7, 7).stride(2).pad(3));
    c.pad_c = 1;
    c.pad_w = 2;
    c.threads = 2;
    check_case(&c, Algorithm::Im2colGemm).unwrap();
    // 48-pixel rows (exactly one block), batch 2, 9 channels (a block of one), stride 3,
    // dilation 2, asymmetric padding, clamp without bias or residual, through Auto.
    let mut c = case(
        Dims::new(2, 4, 12, 147),
        9,
        Conv2d::new(5, 5).stride(3).dilation(2).padding(Padding::new(1, 2, 3, 0)),
    );
    c.bias = false;
    c.residual = false;
    c.act = Activation::Clamp { min: -0.5, max: 0.75 };
    check_case(&c, Algorithm::Auto).unwrap();
    // 55-pixel rows (AlexNet's width) stay on the transposing kernel on AVX-512, and
    // stride 4 beyond a 5-wide kernel splits the input into 4 column phases.
    let c = case(Dims::new(1, 3, 9, 221), 12, Conv2d::new(5, 5).stride(4));
    check_case(&c, Algorithm::Im2colGemm).unwrap();
}

#[test]
fn thin_input_border_and_row_splits() {
    // Padding wider than the window: the first and last pixels' windows lie wholly in the
    // padding (a border pixel with no taps: the bias alone), the next ones partly.
    let c = case(Dims::new(1, 2, 8, 9), 20, Conv2d::new(5, 5).padding(Padding::new(1, 6, 6, 7)));
    check_case(&c, Algorithm::Im2colGemm).unwrap();
    // Interior runs of every length from 1 to 40 pixels, split into blocks of the
    // kernel's two widths (AlexNet's 55 goes 5 x 6 + 5 x 5 on AVX2), with border pixels
    // on both sides whose taps come in fours and a remainder (5 to 7 valid columns of 3
    // channels and 7 rows: 45 to 147 taps).
    for w in 6..=45 {
        let c = case(Dims::new(1, 3, 7, w), 24, Conv2d::new(7, 7).pad(3));
        check_case(&c, Algorithm::Im2colGemm).unwrap();
    }
}

#[test]
fn thin_input_nchw_rows_ending_inside_the_input() {
    // Without padding every pixel is interior, so the last pixel block ends at the row's
    // end: on AVX2 the NCHW outputs go straight from registers into the planes, a run of
    // `pb` pixels a channel, and must not spill into the row gap (`pad_w`) or the next
    // row. Rows of 1 to 30 outputs; 5 and 20 output channels (blocks of one vector on
    // AVX2: up to 12 pixels, two transposes, a partial vector), 13 and 32 (blocks of two
    // vectors: up to 6 pixels, rows of 7 and 13 split 4 + 3 and 5 + 4 + 4); two threads
    // (shares that start and end inside rows). (Storing whole vectors where the next
    // block rewrites the extra pixels was tried and measured slower; these cases caught
    // its overruns.)
    for ow in 1..=30 {
        for k in [5, 13, 20, 32] {
            let mut c = case(Dims::new(1, 3, 6, ow + 4), k, Conv2d::new(5, 5));
            c.pad_w = 2;
            c.threads = 1 + ow % 2;
            check_case(&c, Algorithm::Im2colGemm).unwrap();
        }
    }
}

#[test]
fn regression_thin_input_row_shorter_than_a_block() {
    // Found by proptest: 9-pixel rows on 8 lanes (two vectors would start before the
    // row) made the pixel-vectorised kernel's last block underflow.
    let mut c = case(Dims::new(1, 1, 5, 13), 1, Conv2d::new(5, 5));
    c.bias = false;
    c.residual = false;
    c.act = Activation::Identity;
    check_case(&c, Algorithm::Im2colGemm).unwrap();
}

#[test]
fn thin_input_kernel_runs_on_every_isa() {
    // Without an epilogue the column-matrix path dispatches nothing (gemm picks its own
    // kernel); the thin kernel dispatches once per output row on the executor's ISA.
    let isas = isas();
    let before: Vec<usize> = isas.iter().map(|&i| simdconv::dispatch_count(i)).collect();
    let mut c = case(Dims::new(1, 3, 9, 9), 5, Conv2d::new(5, 5).stride(2).pad(2));
    c.bias = false;
    c.residual = false;
    c.act = Activation::Identity;
    check_case(&c, Algorithm::Im2colGemm).unwrap();
    for (isa, b) in isas.into_iter().zip(before) {
        // 5 output rows x 2 layouts x 3 filter layouts.
        assert!(simdconv::dispatch_count(isa) >= b + 30, "{isa} never ran the thin kernel");
    }
}

#[test]
fn regression_one_output_channel_nhwc_with_residual() {
    // Found by proptest: a one-channel NHWC output (and residual) is also a valid NCHW
    // view, so the views' own layout guesses disagreed with the NHWC input.
    for pad_w in [0, 1] {
        let mut c = case(Dims::new(1, 3, 2, 3), 1, Conv2d::new(1, 1));
        c.pad_w = pad_w;
        check_case(&c, Algorithm::Pointwise).unwrap();
        check_case(&c, Algorithm::Im2colGemm).unwrap();
    }
    // And a one-channel input (grayscale NHWC) with a many-channel output.
    let c = case(Dims::new(2, 1, 5, 4), 6, Conv2d::new(3, 3).pad(1));
    check_case(&c, Algorithm::Im2colGemm).unwrap();
}

#[test]
fn pointwise_nchw_packed_panels() {
    // NCHW 1x1 runs of at least 16 contiguous pixels with at most 2^18 weights (AVX2, any
    // threads), or 128 with at least twice as many input channels as output (AVX-512, any
    // threads), go through the packed kernel (conv/pointwise.rs). On AVX2: copies of three
    // 16-pixel panels, then panels of 2 vectors for the rest, the last of 1-2 vectors
    // ending at the run's end (overlapping the one before), at most 170 input channels per
    // block, tiles of 6 output channels. 1073 pixels per image: 22 copies of 48 pixels,
    // one panel, then one vector over pixels 1065..1073. 11 output channels: a tile of 6
    // then one of 5. Batch 2, channel-slice views, every filter layout (`check_case`).
    let mut c = case(Dims::new(2, 130, 29, 37), 11, Conv2d::new(1, 1));
    c.pad_c = 1;
    check_case(&c, Algorithm::Pointwise).unwrap();
    // Padded rows: runs are single 1030-pixel rows (AVX-512: 32 panels, then one vector
    // over pixels 1014..1030; AVX2: 21 copies, a panel, then one vector over 1022..1030);
    // two groups of 150 channels. On two threads each thread runs the packed kernel on
    // its row.
    let mut c = case(Dims::new(1, 300, 2, 1030), 18, Conv2d::new(1, 1).groups(2));
    c.pad_w = 2;
    check_case(&c, Algorithm::Pointwise).unwrap();
    c.threads = 2;
    check_case(&c, Algorithm::Pointwise).unwrap();
    // 400 input channels: two blocks of 200 (AVX2: three of 134; the later blocks add to
    // the first's sums, also where panels overlap).
    let c = case(Dims::new(1, 400, 2, 515), 7, Conv2d::new(1, 1));
    check_case(&c, Algorithm::Pointwise).unwrap();
    // 64 -> 64 channels: 11 tiles per block.
    let c = case(Dims::new(1, 64, 2, 515), 64, Conv2d::new(1, 1));
    check_case(&c, Algorithm::Pointwise).unwrap();
    // AVX2 short runs: a 7 x 7 plane (one copy of three panels, then one vector over
    // pixels 41..49) of 171 channels (two blocks of 86) into 13 (tiles of 6, 6 and 1);
    // padded rows of 20 pixels (one panel, then one vector over pixels 12..20), batch 2.
    check_case(&case(Dims::new(1, 171, 7, 7), 13, Conv2d::new(1, 1)), Algorithm::Pointwise).unwrap();
    let mut c = case(Dims::new(2, 9, 3, 20), 4, Conv2d::new(1, 1));
    c.pad_w = 3;
    check_case(&c, Algorithm::Pointwise).unwrap();
    // AVX-512 (runs of 128+ pixels, `c >= 2 k`): 32-pixel panels, output channels in
    // near-equal tiles of 8 to 12 (23: 12 + 11; 50: five of 10; 7: one narrower tile),
    // 300 channels in two blocks of 150 (the second adds to the first's sums, the next
    // block prefetched), 143 pixels (4 panels, then 1 vector over pixels 127..143).
    for (c, k, h, w) in [(48, 23, 11, 13), (100, 50, 4, 37), (300, 7, 11, 13), (16, 8, 1, 128)] {
        check_case(&case(Dims::new(1, c, h, w), k, Conv2d::new(1, 1)), Algorithm::Pointwise).unwrap();
    }
    // AVX-512 runs of 1024+ pixels with at most 32768 weights: the weights are packed
    // first, tile by tile (`Packed::pack_weights`). 23 output channels (tiles of 12 and
    // 11) of 300 input channels (two blocks of 150, each tile's weights at its own
    // offset), 1035 pixels (32 panels, then 1 vector over pixels 1019..1035); 128 x 256
    // channels, exactly the buffer, seven tiles of 12 and four of 11, in one block. Every
    // filter layout (`check_case`), so the packing reads every filter stride.
    for (c, k, h, w) in [(300, 23, 45, 23), (256, 128, 1, 1024)] {
        check_case(&case(Dims::new(1, c, h, w), k, Conv2d::new(1, 1)), Algorithm::Pointwise).unwrap();
    }
    // Two threads on AVX-512: each runs the packed kernel over its half of one
    // contiguous plane (2115 pixels: 1058 and 1057, split mid-row), weights packed by
    // each; AVX2 alike.
    let mut c = case(Dims::new(1, 256, 45, 47), 64, Conv2d::new(1, 1));
    c.threads = 2;
    check_case(&c, Algorithm::Pointwise).unwrap();
    // Two threads below 512 pixels split the output channels: each runs the packed
    // kernel on its 33 output channels (AVX-512: three tiles of 11; AVX2: 6 tiles, the
    // last of 3), 130 input channels, 143 pixels (AVX2: two copies, then a panel over
    // pixels 96..112, another over 112..128 and one over 127..143).
    let mut c = case(Dims::new(1, 130, 13, 11), 66, Conv2d::new(1, 1));
    c.threads = 2;
    check_case(&c, Algorithm::Pointwise).unwrap();
    // Exactly 64 panels, 8 output channels, no epilogue, through Auto; the kernel
    // dispatches on AVX2 and AVX-512 (nothing else here does without an epilogue).
    let mut c = case(Dims::new(1, 40, 32, 32), 8, Conv2d::new(1, 1));
    c.bias = false;
    c.residual = false;
    c.act = Activation::Identity;
    let before = [simdconv::Isa::Avx2, simdconv::Isa::Avx512].map(simdconv::dispatch_count);
    check_case(&c, Algorithm::Auto).unwrap();
    for (isa, b) in [simdconv::Isa::Avx2, simdconv::Isa::Avx512].into_iter().zip(before) {
        if isas().contains(&isa) {
            // 3 filter layouts, one run each.
            let ran = simdconv::dispatch_count(isa) - b;
            assert!(ran >= 3, "the packed kernel never ran on {isa}");
        }
    }
}
