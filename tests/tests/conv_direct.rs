//! `Algorithm::Direct` and `Algorithm::Depthwise` against the f64 reference, on every ISA,
//! both layouts, three filter layouts, random geometry and random fused epilogues; the
//! output is written into a channel slice of a larger buffer whose other elements must
//! stay untouched.

use proptest::prelude::*;
use simdconv::reference as r;
use simdconv::{
    conv2d, dispatch_count, Activation, Algorithm, Conv2d, Conv2dOptions, ConvGeometry, Dims, Epilogue,
    Error, Exec, FilterLayout, FilterView, Layout, Padding, Rounding, TensorView, TensorViewMut, Unsupported,
};
use simdconv_tests::{abs_f64, check_close, isas, to_f64, Rng};

const SENTINEL: f32 = 1234.5;

#[derive(Clone, Debug)]
struct Case {
    n: usize,
    groups: usize,
    cig: usize,
    cog: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: Padding,
    ceil: bool,
    layout: Layout,
    filter: FilterLayout,
    bias: bool,
    residual: bool,
    act: Activation,
    /// Extra output channels before / after the slice the convolution writes.
    extra: [usize; 2],
    /// Threads of the executor.
    threads: usize,
    seed: u64,
}

impl Case {
    fn geometry(&self) -> Result<ConvGeometry, Error> {
        let conv = Conv2d::new(self.k[0], self.k[1])
            .stride_hw(self.stride[0], self.stride[1])
            .dilation_hw(self.dilation[0], self.dilation[1])
            .padding(self.pad)
            .groups(self.groups)
            .rounding(if self.ceil { Rounding::Ceil } else { Rounding::Floor });
        ConvGeometry::new(
            Dims::new(self.n, self.groups * self.cig, self.h, self.w),
            self.groups * self.cog,
            conv,
        )
    }
}

fn activate(a: Activation, v: f64) -> f64 {
    match a {
        Activation::Identity => v,
        Activation::Relu => v.max(0.0),
        Activation::Clamp { min, max } => v.max(f64::from(min)).min(f64::from(max)),
    }
}

/// Strides of a view of `d` inside a buffer with `total_c` channels, in `layout`.
fn slice_strides(layout: Layout, d: Dims, total_c: usize) -> [usize; 4] {
    layout.strides(Dims::new(d.n, total_c, d.h, d.w))
}

/// Runs one case on every ISA; returns an error message on the first mismatch.
fn run_case(case: &Case, algorithm: Algorithm) -> Result<(), String> {
    let Ok(g) = case.geometry() else { return Ok(()) };
    let mut rng = Rng::new(case.seed);
    let (din, dout, df) = (g.input(), g.output(), g.filter());
    let x = rng.vec(din.count().unwrap());
    let wt = rng.vec(df.count().unwrap());
    let bias = rng.vec(dout.c);
    let res = rng.vec(dout.count().unwrap());
    let layout = case.layout;

    // f64 reference, and the same on absolute values for the error bound.
    let mut want = vec![0.0f64; dout.count().unwrap()];
    let mut mag = vec![0.0f64; dout.count().unwrap()];
    let b64 = case.bias.then(|| to_f64(&bias));
    let babs = case.bias.then(|| abs_f64(&bias));
    r::conv2d(
        &g,
        TensorView::new(&to_f64(&x), din, layout).unwrap(),
        FilterView::new(&to_f64(&wt), df, case.filter).unwrap(),
        b64.as_deref(),
        TensorViewMut::new(&mut want, dout, layout).unwrap(),
    )
    .unwrap();
    r::conv2d(
        &g,
        TensorView::new(&abs_f64(&x), din, layout).unwrap(),
        FilterView::new(&abs_f64(&wt), df, case.filter).unwrap(),
        babs.as_deref(),
        TensorViewMut::new(&mut mag, dout, layout).unwrap(),
    )
    .unwrap();
    for i in 0..want.len() {
        if case.residual {
            want[i] += f64::from(res[i]);
            mag[i] += f64::from(res[i]).abs();
        }
        want[i] = activate(case.act, want[i]);
    }
    let terms = df.i * df.kh * df.kw;

    let extra = case.extra;
    let total_c = extra[0] + dout.c + extra[1];
    let big = Dims::new(dout.n, total_c, dout.h, dout.w);
    let ys = slice_strides(layout, dout, total_c);
    let off = extra[0] * ys[1];
    for isa in isas() {
        let exec = Exec::new().with_isa(isa).unwrap().with_threads(case.threads).unwrap();
        let mut buf = vec![SENTINEL; big.count().unwrap()];
        let xv = TensorView::new(&x, din, layout).unwrap();
        let wv = FilterView::new(&wt, df, case.filter).unwrap();
        let rv = TensorView::new(&res, dout, layout).unwrap();
        let mut ep = Epilogue::new().activation(case.act);
        if case.bias {
            ep = ep.bias(&bias);
        }
        if case.residual {
            ep = ep.residual(rv);
        }
        let opts = Conv2dOptions { algorithm, epilogue: ep };
        let yv = TensorViewMut::with_strides(&mut buf[off..], dout, ys).unwrap();
        conv2d(&exec, &g, &opts, xv, wv, yv, &mut []).map_err(|e| format!("{isa}: {e}"))?;
        // Gather the slice, and check every other element is untouched.
        let mut got = vec![0.0f32; want.len()];
        let dense = layout.strides(dout);
        for n in 0..dout.n {
            for c in 0..total_c {
                for y in 0..dout.h {
                    for x in 0..dout.w {
                        let v = buf[n * ys[0] + c * ys[1] + y * ys[2] + x * ys[3]];
                        if c < extra[0] || c >= extra[0] + dout.c {
                            if v.to_bits() != SENTINEL.to_bits() {
                                return Err(format!("{isa}: wrote outside the slice at [{n},{c},{y},{x}]"));
                            }
                        } else {
                            let k = c - extra[0];
                            got[n * dense[0] + k * dense[1] + y * dense[2] + x * dense[3]] = v;
                        }
                    }
                }
            }
        }
        check_close(&got, &want, &mag, terms).map_err(|e| format!("{isa} {case:?} {g:?}: {e}"))?;
    }
    Ok(())
}

fn act_strategy() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        Just(Activation::Clamp { min: -0.5, max: 0.75 }),
    ]
}

fn layout_strategy() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::Nchw), Just(Layout::Nhwc)]
}

fn filter_strategy() -> impl Strategy<Value = FilterLayout> {
    prop_oneof![Just(FilterLayout::Oihw), Just(FilterLayout::Ohwi), Just(FilterLayout::Hwio)]
}

prop_compose! {
    fn common()(
        n in 1usize..=2,
        h in 1usize..=9,
        w in prop_oneof![1usize..=8, 9usize..=40],
        k in [1usize..=4, 1usize..=4],
        stride in [prop_oneof![3 => Just(1usize), 2 => 2usize..=4], prop_oneof![3 => Just(1usize), 2 => 2usize..=4]],
        dilation in [prop_oneof![3 => Just(1usize), 1 => 2usize..=4], prop_oneof![3 => Just(1usize), 1 => 2usize..=4]],
        pad in (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
        ceil in any::<bool>(),
        layout in layout_strategy(),
        filter in filter_strategy(),
        bias in any::<bool>(),
        residual in any::<bool>(),
        act in act_strategy(),
        extra in [0usize..=2, 0usize..=2],
        seed in any::<u64>(),
    ) -> Case {
        Case {
            n, groups: 1, cig: 1, cog: 1, h, w, k, stride, dilation,
            pad: Padding::new(pad.0, pad.1, pad.2, pad.3), ceil, layout, filter, bias, residual, act, extra,
            threads: 1, seed,
        }
    }
}

prop_compose! {
    fn direct_case()(
        base in common(),
        groups in prop_oneof![3 => Just(1usize), 1 => 2usize..=3],
        cig in prop_oneof![1usize..=4, 15usize..=18],
        cog in prop_oneof![1usize..=9, 15usize..=34],
    ) -> Case {
        Case { groups, cig, cog, ..base }
    }
}

prop_compose! {
    fn depthwise_case()(
        base in common(),
        channels in prop_oneof![1usize..=5, 15usize..=34],
        mult in prop_oneof![3 => Just(1usize), 1 => 2usize..=3],
    ) -> Case {
        Case { groups: channels, cig: 1, cog: mult, ..base }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simdconv_tests::proptest_cases(48)))]

    #[test]
    fn direct_matches_reference(case in direct_case()) {
        run_case(&case, Algorithm::Direct).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn depthwise_matches_reference(case in depthwise_case()) {
        run_case(&case, Algorithm::Depthwise).map_err(TestCaseError::fail)?;
        run_case(&case, Algorithm::Direct).map_err(TestCaseError::fail)?;
    }
}

fn base(layout: Layout, filter: FilterLayout) -> Case {
    Case {
        n: 1,
        groups: 1,
        cig: 1,
        cog: 1,
        h: 5,
        w: 5,
        k: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        pad: Padding::uniform(1),
        ceil: false,
        layout,
        filter,
        bias: true,
        residual: true,
        act: Activation::Relu,
        extra: [1, 2],
        threads: 1,
        seed: 7,
    }
}

fn all_layouts(f: impl Fn(Layout, FilterLayout) -> Case, algorithm: Algorithm) {
    simdconv_tests::setup();
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for filter in [FilterLayout::Oihw, FilterLayout::Ohwi, FilterLayout::Hwio] {
            let c = f(layout, filter);
            run_case(&c, algorithm).unwrap();
        }
    }
}

#[test]
fn vgg_like_3x3_pad1_wide_rows() {
    all_layouts(|l, f| Case { cig: 19, cog: 37, h: 6, w: 35, n: 2, ..base(l, f) }, Algorithm::Direct);
}

#[test]
fn one_by_one_plane_and_window_equals_padded_input() {
    all_layouts(|l, f| Case { cig: 3, cog: 5, h: 1, w: 1, ..base(l, f) }, Algorithm::Direct);
    all_layouts(
        |l, f| Case { cig: 2, cog: 17, h: 3, w: 4, k: [5, 6], pad: Padding::new(1, 1, 1, 1), ..base(l, f) },
        Algorithm::Direct,
    );
}

#[test]
fn stride_above_kernel_big_dilation_asymmetric_padding_ceil() {
    all_layouts(
        |l, f| Case {
            cig: 5,
            cog: 18,
            h: 9,
            w: 33,
            k: [2, 3],
            stride: [3, 4],
            dilation: [1, 1],
            pad: Padding::new(0, 3, 2, 1),
            ceil: true,
            ..base(l, f)
        },
        Algorithm::Direct,
    );
    all_layouts(
        |l, f| Case {
            cig: 2,
            cog: 3,
            h: 9,
            w: 30,
            k: [3, 2],
            dilation: [4, 9],
            pad: Padding::new(3, 0, 0, 2),
            act: Activation::Clamp { min: -0.25, max: 0.25 },
            ..base(l, f)
        },
        Algorithm::Direct,
    );
}

#[test]
fn grouped_and_depthwise_with_multiplier() {
    all_layouts(|l, f| Case { groups: 3, cig: 4, cog: 6, w: 20, ..base(l, f) }, Algorithm::Direct);
    for s in [1, 2] {
        all_layouts(
            |l, f| Case { groups: 33, cig: 1, cog: 1, w: 37, h: 7, stride: [s, s], ..base(l, f) },
            Algorithm::Depthwise,
        );
        all_layouts(
            |l, f| Case { groups: 7, cig: 1, cog: 3, w: 19, h: 4, stride: [s, s], ..base(l, f) },
            Algorithm::Depthwise,
        );
    }
}

/// NHWC depthwise with OIHW / OHWI filters gathers the weights into a tile of 128
/// channels: 150 and 300 channels take 2 and 3 chunks, the last ones with a partial vector;
/// a dilated 3x3 and a 2x4 kernel, two images, stride 1 and 2.
#[test]
fn depthwise_nhwc_channel_chunks() {
    for (groups, k, dilation, s) in
        [(150, [3, 3], [1, 1], 1), (300, [2, 4], [1, 1], 2), (150, [3, 3], [2, 1], 1)]
    {
        all_layouts(
            |l, f| Case {
                n: 2,
                groups,
                cig: 1,
                cog: 1,
                w: 9,
                h: 6,
                k,
                dilation,
                stride: [s, s],
                ..base(l, f)
            },
            Algorithm::Depthwise,
        );
    }
}

/// Runs each depthwise case with its epilogue and with none.
fn depthwise_with_and_without_epilogue(cases: impl IntoIterator<Item = Case>) {
    for c in cases {
        run_case(&c, Algorithm::Depthwise).unwrap();
        run_case(
            &Case { bias: false, residual: false, act: Activation::Identity, ..c },
            Algorithm::Depthwise,
        )
        .unwrap();
    }
}

/// The NCHW depthwise paths for stride 1, dilation 1 and at least one vector of output
/// columns (3x3: row blocks; other kernels up to 3x3: the stencil): output rows of exactly
/// 8 and 16 columns (one AVX2 / AVX-512 vector) and one more (the last vector overlaps),
/// kernels 1x3, 3x1, 2x2, one input row, padding past the kernel (columns and rows of
/// padding only), asymmetric padding, a channel multiplier, rows just inside and just
/// past the stencil's stack row buffer (1024 padded columns; 3x3 and 1x3), and two
/// images.
#[test]
fn depthwise_nchw_stencil_edges() {
    simdconv_tests::setup();
    let cases = [
        Case { groups: 5, w: 8, h: 3, ..base(Layout::Nchw, FilterLayout::Oihw) },
        Case { groups: 5, w: 16, h: 3, ..base(Layout::Nchw, FilterLayout::Oihw) },
        Case { groups: 3, w: 17, h: 4, n: 2, ..base(Layout::Nchw, FilterLayout::Ohwi) },
        Case {
            groups: 2,
            w: 18,
            h: 5,
            k: [1, 3],
            pad: Padding::new(0, 0, 2, 0),
            ..base(Layout::Nchw, FilterLayout::Hwio)
        },
        Case {
            groups: 2,
            w: 18,
            h: 5,
            k: [3, 1],
            pad: Padding::new(2, 1, 0, 0),
            ..base(Layout::Nchw, FilterLayout::Oihw)
        },
        Case {
            groups: 4,
            w: 20,
            h: 1,
            k: [2, 2],
            pad: Padding::new(1, 0, 0, 1),
            ..base(Layout::Nchw, FilterLayout::Oihw)
        },
        Case {
            groups: 3,
            w: 17,
            h: 2,
            pad: Padding::new(3, 4, 0, 5),
            ..base(Layout::Nchw, FilterLayout::Oihw)
        },
        Case {
            groups: 3,
            cog: 2,
            w: 33,
            h: 4,
            pad: Padding::new(0, 2, 2, 0),
            ..base(Layout::Nchw, FilterLayout::Ohwi)
        },
        Case {
            groups: 2,
            w: 1022,
            h: 3,
            act: Activation::Identity,
            ..base(Layout::Nchw, FilterLayout::Oihw)
        },
        Case { groups: 2, w: 1023, h: 3, residual: false, ..base(Layout::Nchw, FilterLayout::Oihw) },
        // The same widths with a 1x3 window, which the stencil (not the 3x3 row blocks)
        // takes: 1024 and 1025 padded columns.
        Case { groups: 2, w: 1022, h: 3, k: [1, 3], ..base(Layout::Nchw, FilterLayout::Oihw) },
        Case { groups: 2, w: 1023, h: 3, k: [1, 3], ..base(Layout::Nchw, FilterLayout::Oihw) },
    ];
    depthwise_with_and_without_epilogue(cases);
}

/// NCHW depthwise on output rows narrower than one vector (the zero-padded flat plane):
/// MobileNet's 7 x 7 (AVX2) and 14 x 14 (AVX-512) planes, 3 x 3 (narrower than NEON's 4
/// lanes), a 2x3 and a 1x1 window, asymmetric padding and padding past the kernel (whole
/// rows and columns of padding), a channel multiplier, two images, a tall plane, a plane
/// whose padded copy fills the stack buffer (1024 floats) and ones past it (row loop).
#[test]
fn depthwise_nchw_narrow_planes() {
    simdconv_tests::setup();
    let l = Layout::Nchw;
    let cases = [
        Case { groups: 5, w: 7, h: 7, ..base(l, FilterLayout::Oihw) },
        Case { groups: 3, w: 14, h: 14, n: 2, ..base(l, FilterLayout::Ohwi) },
        Case { groups: 4, w: 3, h: 3, ..base(l, FilterLayout::Hwio) },
        Case {
            groups: 2,
            w: 5,
            h: 6,
            k: [2, 3],
            pad: Padding::new(0, 2, 1, 0),
            ..base(l, FilterLayout::Oihw)
        },
        Case {
            groups: 2,
            w: 6,
            h: 4,
            k: [1, 1],
            pad: Padding::new(1, 0, 0, 1),
            ..base(l, FilterLayout::Oihw)
        },
        Case { groups: 3, cog: 2, w: 6, h: 4, pad: Padding::new(3, 1, 0, 2), ..base(l, FilterLayout::Ohwi) },
        Case { groups: 2, w: 7, h: 40, ..base(l, FilterLayout::Oihw) },
        // Padded planes of 1024 floats exactly (AVX2: 144 rows of 7 columns, +16 for the
        // last vector's taps) and past it (150 rows; AVX-512: 68 rows of 15).
        Case { groups: 2, w: 5, h: 144, ..base(l, FilterLayout::Oihw) },
        Case { groups: 2, w: 5, h: 150, ..base(l, FilterLayout::Oihw) },
        Case { groups: 2, w: 13, h: 68, ..base(l, FilterLayout::Oihw) },
    ];
    depthwise_with_and_without_epilogue(cases);
}

/// NHWC depthwise on 7 x 7 planes whose input pixels lie a multiple of 4 KiB apart (the
/// dense-copy path): 1024 and 2048 channels, and 1020 channels viewed inside a buffer of
/// 1024 (its last block of 16 channels holds 12); padding 1 and 0, two images, with the
/// epilogue (bias, residual, ReLU) and without.
#[test]
fn depthwise_nhwc_4k_pixels() {
    simdconv_tests::setup();
    for (c, total, pad, epilogue) in
        [(1024, 1024, 1, true), (2048, 2048, 1, false), (1020, 1024, 1, true), (1020, 1024, 0, false)]
    {
        let n = 2;
        let g = ConvGeometry::new(Dims::new(n, c, 7, 7), c, Conv2d::new(3, 3).pad(pad).groups(c)).unwrap();
        let (din, dout, df) = (g.input(), g.output(), g.filter());
        let xs = [49 * total, 1, 7 * total, total];
        let mut rng = Rng::new(5);
        let x = rng.vec(n * 49 * total);
        let wt = rng.vec(df.count().unwrap());
        let bias = rng.vec(c);
        let res = rng.vec(dout.count().unwrap());
        let reference = |xx: &[f64], ww: &[f64], bb: &[f64]| {
            let mut out = vec![0.0f64; dout.count().unwrap()];
            r::conv2d(
                &g,
                TensorView::with_strides(xx, din, xs).unwrap(),
                FilterView::new(ww, df, FilterLayout::Ohwi).unwrap(),
                epilogue.then_some(bb),
                TensorViewMut::new(&mut out, dout, Layout::Nhwc).unwrap(),
            )
            .unwrap();
            out
        };
        let mut want = reference(&to_f64(&x), &to_f64(&wt), &to_f64(&bias));
        let mut mag = reference(&abs_f64(&x), &abs_f64(&wt), &abs_f64(&bias));
        if epilogue {
            for ((v, m), z) in want.iter_mut().zip(&mut mag).zip(&res) {
                *v = (*v + f64::from(*z)).max(0.0);
                *m += f64::from(*z).abs();
            }
        }
        for isa in isas() {
            let exec = Exec::new().with_isa(isa).unwrap();
            let mut ep = Epilogue::new();
            if epilogue {
                ep = ep
                    .bias(&bias)
                    .residual(TensorView::new(&res, dout, Layout::Nhwc).unwrap())
                    .activation(Activation::Relu);
            }
            let opts = Conv2dOptions { algorithm: Algorithm::Depthwise, epilogue: ep };
            let mut y = vec![f32::NAN; dout.count().unwrap()];
            conv2d(
                &exec,
                &g,
                &opts,
                TensorView::with_strides(&x, din, xs).unwrap(),
                FilterView::new(&wt, df, FilterLayout::Ohwi).unwrap(),
                TensorViewMut::new(&mut y, dout, Layout::Nhwc).unwrap(),
                &mut [],
            )
            .unwrap();
            check_close(&y, &want, &mag, 9).unwrap_or_else(|e| panic!("{isa} {c}/{total} pad {pad}: {e}"));
        }
    }
}

/// The NHWC 3x3 stride-2 depthwise row blocks (3 output rows at a time, 4 on AVX-512,
/// output row `r` reading padded rows `2r .. 2r + 3`): output heights leaving 1, 2, 3 and
/// 4 rows for the last block, symmetric padding, TensorFlow's SAME padding for stride 2
/// (none at the top and left, one at the bottom and right), padding of 2, ceil-mode
/// windows past the padded input, odd and even widths, channel tails, more channels
/// than one gathered chunk (128), two images, filters OHWI and HWIO, every epilogue.
#[test]
fn depthwise_nhwc_stride2_row_blocks() {
    simdconv_tests::setup();
    for filter in [FilterLayout::Ohwi, FilterLayout::Hwio] {
        let dw = |groups, h, w, pad| Case { groups, h, w, pad, stride: [2, 2], ..base(Layout::Nhwc, filter) };
        let cases = [
            dw(3, 13, 12, Padding::uniform(1)),
            dw(20, 15, 11, Padding::uniform(1)),
            dw(9, 17, 16, Padding::uniform(1)),
            dw(17, 19, 9, Padding::uniform(1)),
            dw(12, 16, 16, Padding::new(0, 1, 0, 1)),
            dw(5, 12, 13, Padding::uniform(2)),
            Case { ceil: true, ..dw(7, 14, 14, Padding::uniform(0)) },
            Case { n: 2, ..dw(130, 9, 10, Padding::uniform(1)) },
        ];
        depthwise_with_and_without_epilogue(cases);
    }
}

/// The 3x3 stride-1 depthwise row blocks (3 output rows at a time, 4 in NHWC on AVX-512;
/// NCHW over column vectors, NHWC over pixels and channel vectors): heights leaving 1, 2, 3
/// and 4 rows for the last block, whose window rows end inside the input or 1 or 2 rows
/// past it, blocks wholly inside the input between blocks that touch the top and bottom
/// padding, padding of 2 (a block's first rows all padding), rows of 2.5 and 4 vectors
/// (interior vectors between the edge ones), a channel multiplier, every epilogue; in
/// NHWC, filters OHWI and HWIO (both gathered into the tile), channel tails, and more
/// channels than one gathered chunk (128).
#[test]
fn depthwise_row_blocks() {
    simdconv_tests::setup();
    for (layout, filter) in [
        (Layout::Nchw, FilterLayout::Oihw),
        (Layout::Nhwc, FilterLayout::Ohwi),
        (Layout::Nhwc, FilterLayout::Hwio),
    ] {
        let dw = |h, w, pad| Case { groups: 3, h, w, pad, ..base(layout, filter) };
        let cases = [
            dw(13, 40, Padding::new(1, 1, 1, 1)),
            dw(14, 64, Padding::new(1, 1, 1, 1)),
            // The last block's padded rows end 1 and 2 rows past the input.
            dw(15, 40, Padding::new(1, 1, 1, 1)),
            dw(16, 40, Padding::new(1, 1, 1, 1)),
            dw(15, 17, Padding::new(0, 0, 0, 0)),
            dw(16, 33, Padding::new(2, 2, 2, 2)),
            dw(9, 48, Padding::new(2, 0, 0, 2)),
            Case { cog: 2, n: 2, ..dw(11, 35, Padding::new(0, 2, 1, 0)) },
            Case { groups: 20, ..dw(10, 17, Padding::new(1, 1, 0, 1)) },
            Case { groups: 130, ..dw(9, 16, Padding::new(1, 1, 1, 1)) },
        ];
        depthwise_with_and_without_epilogue(cases);
    }
}

#[test]
fn many_input_channels_split_into_chunks() {
    // Enough input channels that the kernels split them into cache-sized chunks and carry
    // partial sums through the output.
    all_layouts(
        |l, f| Case { cig: 230, cog: 13, h: 3, w: 37, pad: Padding::new(1, 0, 2, 1), ..base(l, f) },
        Algorithm::Direct,
    );
    all_layouts(|l, f| Case { groups: 2, cig: 150, cog: 50, h: 2, w: 5, ..base(l, f) }, Algorithm::Direct);
}

#[test]
fn degenerate_views_fit_either_layout() {
    // Found by proptest: a 1x1x1 input names itself NCHW while its NHWC output does not;
    // `conv2d` must accept the pair (both are inner-contiguous in NHWC).
    all_layouts(
        |l, f| Case { cig: 1, cog: 2, h: 1, w: 1, k: [1, 1], pad: Padding::ZERO, ..base(l, f) },
        Algorithm::Direct,
    );
    all_layouts(|l, f| Case { cig: 3, cog: 5, h: 1, w: 1, ..base(l, f) }, Algorithm::Direct);
}

#[test]
fn depthwise_rejects_non_depthwise_geometry() {
    simdconv_tests::setup();
    let g = ConvGeometry::new(Dims::new(1, 4, 5, 5), 4, Conv2d::new(3, 3).groups(2)).unwrap();
    let x = vec![0.0f32; g.input().count().unwrap()];
    let w = vec![0.0f32; g.filter().count().unwrap()];
    let mut y = vec![0.0f32; g.output().count().unwrap()];
    let opts = Conv2dOptions { algorithm: Algorithm::Depthwise, epilogue: Epilogue::new() };
    let e = conv2d(
        &Exec::new(),
        &g,
        &opts,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        FilterView::new(&w, g.filter(), FilterLayout::Oihw).unwrap(),
        TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap(),
        &mut [],
    )
    .unwrap_err();
    assert_eq!(e, Error::Unsupported(Unsupported::DepthwiseNeedsGroupsEqualChannels));
}

#[test]
fn simd_paths_dispatch_on_each_isa() {
    // The vector paths go through `exec.dispatch`: the per-ISA counter must move.
    for isa in isas() {
        for (layout, filter) in [(Layout::Nchw, FilterLayout::Oihw), (Layout::Nhwc, FilterLayout::Hwio)] {
            let before = dispatch_count(isa);
            let g = ConvGeometry::new(Dims::new(1, 3, 6, 6), 4, Conv2d::new(3, 3).pad(1)).unwrap();
            let x = vec![1.0f32; g.input().count().unwrap()];
            let w = vec![1.0f32; g.filter().count().unwrap()];
            let mut y = vec![0.0f32; g.output().count().unwrap()];
            let opts = Conv2dOptions { algorithm: Algorithm::Direct, epilogue: Epilogue::new() };
            conv2d(
                &Exec::new().with_isa(isa).unwrap(),
                &g,
                &opts,
                TensorView::new(&x, g.input(), layout).unwrap(),
                FilterView::new(&w, g.filter(), filter).unwrap(),
                TensorViewMut::new(&mut y, g.output(), layout).unwrap(),
                &mut [],
            )
            .unwrap();
            assert!(dispatch_count(isa) > before, "{isa} {layout:?}");
            // Centre: 27 ones; corner: 12.
            let at = |c: usize, h: usize, w: usize| {
                y[TensorView::new(&y, g.output(), layout).unwrap().offset(0, c, h, w)]
            };
            assert_eq!(at(2, 2, 2), 27.0);
            assert_eq!(at(3, 0, 0), 12.0);
        }
    }
}

/// Ad-hoc timing, run with
/// `cargo test --release -p simdconv-tests --test conv_direct -- --ignored --nocapture`.
#[test]
#[ignore]
fn time_direct() {
    use std::time::Instant;
    simdconv_tests::setup();
    // (name, C, H = W, K, groups, kernel, stride, pad)
    type TimeCase = (&'static str, usize, usize, usize, usize, usize, usize, usize);
    let cases: [TimeCase; 4] = [
        ("vgg_conv3_2", 256, 56, 256, 1, 3, 1, 1),
        ("soumith_l5", 384, 13, 384, 1, 3, 1, 1),
        ("depthwise_3x3", 128, 56, 128, 128, 3, 1, 1),
        ("resnet_conv1", 3, 224, 64, 1, 7, 2, 3),
    ];
    let exec = Exec::new();
    let only = std::env::var("TIME_CASE").unwrap_or_default();
    for (name, c, hw, k, groups, ks, st, pad) in cases {
        if !only.is_empty() && !name.contains(only.as_str()) {
            continue;
        }
        let g = ConvGeometry::new(
            Dims::new(1, c, hw, hw),
            k,
            Conv2d::new(ks, ks).stride(st).pad(pad).groups(groups),
        )
        .unwrap();
        let mut rng = Rng::new(1);
        let x = rng.vec(g.input().count().unwrap());
        let w = rng.vec(g.filter().count().unwrap());
        let mut y = vec![0.0f32; g.output().count().unwrap()];
        let algos: &[Algorithm] =
            if groups > 1 { &[Algorithm::Depthwise, Algorithm::Direct] } else { &[Algorithm::Direct] };
        for &algorithm in algos {
            for (layout, filter) in [
                (Layout::Nchw, FilterLayout::Oihw),
                (Layout::Nhwc, FilterLayout::Hwio),
                (Layout::Nhwc, FilterLayout::Ohwi),
            ] {
                let want = std::env::var("TIME_LAYOUT").unwrap_or_default();
                if !want.is_empty() && !format!("{layout:?}/{filter:?}").contains(want.as_str()) {
                    continue;
                }
                let opts = Conv2dOptions { algorithm, epilogue: Epilogue::new() };
                let mut best = f64::INFINITY;
                let mut total_cpu = 0.0f64;
                let reps: u32 = if g.flops() > 1_000_000_000 { 8 } else { 60 };
                for _ in 0..reps {
                    let t = Instant::now();
                    let c0 = cpu_seconds();
                    conv2d(
                        &exec,
                        &g,
                        &opts,
                        TensorView::new(&x, g.input(), layout).unwrap(),
                        FilterView::new(&w, g.filter(), filter).unwrap(),
                        TensorViewMut::new(&mut y, g.output(), layout).unwrap(),
                        &mut [],
                    )
                    .unwrap();
                    best = best.min(t.elapsed().as_secs_f64());
                    total_cpu += cpu_seconds() - c0;
                }
                let best_cpu = total_cpu / f64::from(reps);
                println!(
                    "{name} {} {layout:?}/{filter:?} {}: wall {:.3} ms ({:.1} GFLOP/s), mean on-CPU {:.3} ms ({:.1} GFLOP/s)",
                    algorithm.name(),
                    exec.isa(),
                    best * 1e3,
                    g.flops() as f64 / best / 1e9,
                    best_cpu * 1e3,
                    g.flops() as f64 / best_cpu / 1e9
                );
            }
        }
    }
}

/// This thread's time on a CPU (Linux `/proc/thread-self/schedstat`), for timing on a
/// loaded machine; 0 elsewhere.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .map_or(0.0, |ns| ns * 1e-9)
}

#[test]
fn two_threads_split_the_output() {
    // Direct and depthwise split the output over the threads (outputs of at least 2 x 16
    // Ki elements): NCHW by output channels, NHWC by output rows. One group, 40 channels
    // (slabs of 16 and 24 channels, or 15 and 15 rows); three groups (slabs of one and
    // two groups); depthwise 20 channels x multiplier 2 (slabs of 10 groups). Output
    // slices between extra channels, bias and residual per slab; the second row slab
    // starts below the top padding.
    let one = |layout, filter| Case { cig: 3, cog: 40, h: 30, w: 31, threads: 2, ..base(layout, filter) };
    all_layouts(one, Algorithm::Direct);
    let grouped =
        |layout, filter| Case { groups: 3, cig: 4, cog: 5, h: 50, w: 51, threads: 2, ..base(layout, filter) };
    all_layouts(grouped, Algorithm::Direct);
    let dw = |layout, filter| Case {
        groups: 20,
        cig: 1,
        cog: 2,
        h: 30,
        w: 31,
        threads: 2,
        ..base(layout, filter)
    };
    all_layouts(dw, Algorithm::Depthwise);
    // Row slabs under stride 2, dilation 2, uneven padding and ceil rounding: with 5
    // rows of bottom padding the last output row's windows lie wholly in it; batch 2.
    let strided = |layout, filter| Case {
        n: 2,
        cig: 2,
        cog: 32,
        h: 41,
        w: 45,
        stride: [2, 2],
        dilation: [2, 1],
        pad: Padding::new(3, 5, 1, 2),
        ceil: true,
        threads: 2,
        ..base(layout, filter)
    };
    all_layouts(strided, Algorithm::Direct);
    let dw_strided = |layout, filter| Case {
        groups: 48,
        cig: 1,
        cog: 1,
        h: 60,
        w: 50,
        stride: [2, 2],
        pad: Padding::new(0, 4, 1, 1),
        ceil: true,
        threads: 2,
        ..base(layout, filter)
    };
    all_layouts(dw_strided, Algorithm::Depthwise);
}
