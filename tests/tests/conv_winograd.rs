//! Winograd F(4x4, 3x3) (`Algorithm::Winograd`, the prepacked `conv2d_winograd`) against
//! the f64 reference: every ISA x both layouts x OIHW / OHWI / HWIO filters x random 3x3
//! stride-1 geometry (dilation 1..3 through the polyphase split, asymmetric padding,
//! groups, batch, planes from 1x1) x the fused epilogue x one or two threads, on strided
//! views. The error bound is the one derived in the module documentation:
//! `gamma(C_g + 32) * (48^2 * sum_c max|w_kc| max|x_nc| + |bias| + |residual|)`.

use proptest::prelude::*;
use simdconv::reference as r;
use simdconv::{
    conv2d, conv2d_winograd, conv2d_winograd_workspace_len, conv2d_workspace_len, Activation, Algorithm,
    Conv2d, Conv2dOptions, ConvGeometry, Dims, Epilogue, Error, Exec, FilterLayout, FilterView, Isa, Layout,
    Operand, Padding, Rounding, TensorView, TensorViewMut, Unsupported, WinogradFilter, WinogradFilterBuf,
};
use simdconv_tests::{check_close, dense, isas, padded_copy, padded_output, Rng};

const LAYOUTS: [Layout; 2] = [Layout::Nchw, Layout::Nhwc];
const FILTERS: [FilterLayout; 3] = [FilterLayout::Oihw, FilterLayout::Ohwi, FilterLayout::Hwio];
/// Marks output elements outside the view; they must survive untouched.
const SENTINEL: f32 = 12345.0;

/// The transform matrices of F(4x4, 3x3), written out independently of the kernel.
const AT: [[f64; 6]; 4] = [
    [1., 1., 1., 1., 1., 0.],
    [0., 1., -1., 2., -2., 0.],
    [0., 1., 1., 4., 4., 0.],
    [0., 1., -1., 8., -8., 1.],
];
const G: [[f64; 3]; 6] = [
    [0.25, 0., 0.],
    [-1. / 6., -1. / 6., -1. / 6.],
    [-1. / 6., 1. / 6., -1. / 6.],
    [1. / 24., 1. / 12., 1. / 6.],
    [1. / 24., -1. / 12., 1. / 6.],
    [0., 0., 1.],
];
const BT: [[f64; 6]; 6] = [
    [4., 0., -5., 0., 1., 0.],
    [0., -4., -4., 1., 1., 0.],
    [0., 4., -4., -1., 1., 0.],
    [0., -2., -1., 2., 1., 0.],
    [0., 2., -1., -2., 1., 0.],
    [0., 4., 0., -5., 0., 1.],
];

/// `max_i sum_xi |A^T[i][xi]| rowsum|G|[xi] rowsum|B^T|[xi]` (48 for these matrices).
fn growth() -> f64 {
    let rs = |r: &[f64]| r.iter().map(|v| v.abs()).sum::<f64>();
    (0..4)
        .map(|i| (0..6).map(|xi| AT[i][xi].abs() * rs(&G[xi]) * rs(&BT[xi])).sum::<f64>())
        .fold(0.0, f64::max)
}

#[derive(Clone, Debug)]
struct Case {
    input: Dims,
    k: usize,
    conv: Conv2d,
    bias: bool,
    residual: bool,
    act: Activation,
    pad_c: usize,
    pad_w: usize,
    threads: usize,
    seed: u64,
}

/// How a case is run: `conv2d` with `Algorithm::Winograd` (or `Auto`), or the prepacked API.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    PerCall(Algorithm),
    Packed,
    /// Packed under the given ISA, run under each.
    PackedUnder(Isa),
}

/// Runs `case` for every ISA x layout x filter layout along `path`, checks each result
/// against the reference under the Winograd bound, and returns the results (dense NCHW).
fn check_case(case: &Case, path: Path) -> Result<Vec<Vec<f32>>, TestCaseError> {
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
    let x64 = simdconv_tests::to_f64(&xs);
    let w64 = simdconv_tests::to_f64(&ws);
    let b64 = simdconv_tests::to_f64(&bias);
    let mut want = vec![0.0f64; od.count().unwrap()];
    r::conv2d(
        &g,
        TensorView::new(&x64[..], id, Layout::Nchw).unwrap(),
        FilterView::new(&w64[..], fd, FilterLayout::Oihw).unwrap(),
        case.bias.then_some(&b64[..]),
        TensorViewMut::new(&mut want[..], od, Layout::Nchw).unwrap(),
    )
    .unwrap();
    // The bound's magnitude: 48^2 sum_c max|w_kc| max|x_nc| + |bias| + |residual|.
    let groups = g.groups();
    let (cg, kg) = (fd.i, fd.o / groups);
    let plane = id.h * id.w;
    let xmax: Vec<f64> = (0..id.n * id.c)
        .map(|nc| x64[nc * plane..(nc + 1) * plane].iter().fold(0.0, |m, v| v.abs().max(m)))
        .collect();
    let wmax: Vec<f64> = (0..fd.o * fd.i)
        .map(|kc| w64[kc * 9..(kc + 1) * 9].iter().fold(0.0, |m, v| v.abs().max(m)))
        .collect();
    let growth2 = growth() * growth();
    let mut mag = vec![0.0f64; want.len()];
    let oplane = od.h * od.w;
    for (i, (y, m)) in want.iter_mut().zip(&mut mag).enumerate() {
        let (n, k) = (i / (od.c * oplane), (i / oplane) % od.c);
        let grp = k / kg;
        let s: f64 = (0..cg).map(|c| wmax[k * cg + c] * xmax[n * id.c + grp * cg + c]).sum();
        *m = growth2 * s;
        if case.bias {
            *m += b64[k].abs();
        }
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
    // check_close adds 2 to `terms`: gamma(C_g + 32).
    let terms = cg + 30;

    let mut results = Vec::new();
    for isa in isas() {
        let exec = Exec::new().with_isa(isa).unwrap().with_threads(case.threads).unwrap();
        for layout in LAYOUTS {
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
                let (mut ybuf, ystr) = padded_output(od, layout, case.pad_c, case.pad_w, SENTINEL);
                let y = TensorViewMut::with_strides(&mut ybuf, od, ystr).unwrap();
                let ran = match path {
                    Path::PerCall(algorithm) => {
                        let need = conv2d_workspace_len(&g, algorithm, layout).unwrap();
                        let mut work = vec![f32::NAN; need];
                        conv2d(&exec, &g, &Conv2dOptions { algorithm, epilogue }, x, w, y, &mut work)
                    }
                    Path::Packed | Path::PackedUnder(_) => {
                        let packer = match path {
                            Path::PackedUnder(p) => Exec::new().with_isa(p).unwrap(),
                            _ => exec,
                        };
                        let packed = WinogradFilterBuf::new(&packer, &g, w).unwrap();
                        let mut work = vec![f32::NAN; conv2d_winograd_workspace_len(&g).unwrap()];
                        conv2d_winograd(&exec, &g, &epilogue, x, &packed.as_filter(), y, &mut work)
                    }
                };
                ran.map_err(|e| TestCaseError::fail(format!("{isa} {layout:?} {fl:?}: {e}")))?;
                let yv = TensorView::with_strides(&ybuf, od, ystr).unwrap();
                let got = dense(&yv);
                check_close(&got, &want, &mag, terms)
                    .map_err(|e| TestCaseError::fail(format!("{isa} {layout:?} {fl:?} {path:?}: {e}")))?;
                let untouched = ybuf.iter().filter(|&&v| v == SENTINEL).count();
                prop_assert_eq!(
                    untouched,
                    ybuf.len() - od.count().unwrap(),
                    "{} {:?} {:?}: wrote outside",
                    isa,
                    layout,
                    fl
                );
                results.push(got);
            }
        }
    }
    Ok(results)
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        Just(Activation::Clamp { min: -0.5, max: 0.75 }),
    ]
}

prop_compose! {
    /// 3x3 stride-1 convolutions: dilation 1..3 per axis, asymmetric padding up to 3,
    /// groups, batch up to 3, channels per group up to 20, planes from 1x1, either rounding.
    fn winograd_case()(
        n in 1usize..=3,
        groups in 1usize..=3,
        cg in 1usize..=20,
        kg in 1usize..=20,
        dh in 1usize..=3, dw in 1usize..=3,
        pad in [0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3],
        extra in [0usize..=9, 0usize..=9],
        ceil in any::<bool>(),
        bias in any::<bool>(), residual in any::<bool>(), act in activation(),
        pad_c in prop_oneof![Just(0usize), 1usize..=3],
        pad_w in prop_oneof![Just(0usize), 1usize..=2],
        threads in 1usize..=2,
        seed in any::<u64>(),
    ) -> Case {
        let h = (2 * dh + 1).saturating_sub(pad[0] + pad[1]).max(1) + extra[0];
        let w = (2 * dw + 1).saturating_sub(pad[2] + pad[3]).max(1) + extra[1];
        let conv = Conv2d::new(3, 3)
            .dilation_hw(dh, dw)
            .padding(Padding::new(pad[0], pad[1], pad[2], pad[3]))
            .groups(groups)
            .rounding(if ceil { Rounding::Ceil } else { Rounding::Floor });
        Case { input: Dims::new(n, groups * cg, h, w), k: groups * kg, conv, bias, residual, act,
               pad_c, pad_w, threads, seed }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simdconv_tests::proptest_cases(32)))]

    #[test]
    fn winograd_matches_reference(case in winograd_case()) {
        check_case(&case, Path::PerCall(Algorithm::Winograd))?;
    }

    #[test]
    fn packed_equals_per_call(case in winograd_case()) {
        let per_call = check_case(&case, Path::PerCall(Algorithm::Winograd))?;
        let packed = check_case(&case, Path::Packed)?;
        for (a, b) in per_call.iter().zip(&packed) {
            prop_assert!(a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()), "packed differs from per-call");
        }
    }
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
fn tiny_planes() {
    // 1x1 and 2x2 planes: one partial tile, mostly padding.
    check_case(&case(Dims::new(2, 3, 1, 1), 4, Conv2d::new(3, 3).pad(1)), Path::PerCall(Algorithm::Winograd))
        .unwrap();
    check_case(&case(Dims::new(1, 5, 2, 2), 3, Conv2d::new(3, 3).pad(1)), Path::Packed).unwrap();
    // No padding: a 3x3 input gives one output.
    check_case(&case(Dims::new(1, 2, 3, 3), 2, Conv2d::new(3, 3)), Path::PerCall(Algorithm::Winograd))
        .unwrap();
}

#[test]
fn channels_not_multiple_of_16_with_strided_views_and_threads() {
    let mut c = case(Dims::new(3, 17, 9, 11), 19, Conv2d::new(3, 3).padding(Padding::new(0, 2, 3, 1)));
    c.pad_c = 2;
    c.pad_w = 1;
    c.threads = 2;
    check_case(&c, Path::PerCall(Algorithm::Winograd)).unwrap();
    check_case(&c, Path::Packed).unwrap();
}

#[test]
fn nan_in_one_tile_stays_in_its_tiles_across_channel_vectors() {
    // NCHW gathers stage each tile's 6x6 patch in one buffer for all tiles (channel
    // vectors outside, tiles inside): what a tile does not gather (its padding) must be
    // zero again, not the previous tile's values. 20 channels (16 + 4, or 8 + 8 + 4) of
    // 8x8 are four tiles per vector, three with padding where their predecessor had
    // data; a NaN in channel 5 at the bottom-right pixel, in the last tile of the first
    // vector. Every output outside that tile is finite and within the module's bound of
    // the reference; the NaN's own output is NaN.
    let g = ConvGeometry::new(Dims::new(1, 20, 8, 8), 3, Conv2d::new(3, 3).pad(1)).unwrap();
    let mut rng = Rng::new(77);
    let mut x = rng.vec(g.input().count().unwrap());
    x[(5 * 8 + 7) * 8 + 7] = f32::NAN;
    let w = rng.vec(g.filter().count().unwrap());
    let (x64, w64) = (simdconv_tests::to_f64(&x), simdconv_tests::to_f64(&w));
    let mut want = vec![0.0f64; g.output().count().unwrap()];
    r::conv2d(
        &g,
        TensorView::new(&x64, g.input(), Layout::Nchw).unwrap(),
        FilterView::new(&w64, g.filter(), FilterLayout::Oihw).unwrap(),
        None,
        TensorViewMut::new(&mut want, g.output(), Layout::Nchw).unwrap(),
    )
    .unwrap();
    // The module's bound, gamma(C + 32) * 48^2 * sum_c max|w_kc| max|x_c|, over x's finite
    // values.
    let u = f64::from(f32::EPSILON) / 2.0;
    let gamma = 52.0 * u / (1.0 - 52.0 * u);
    let finite_max = |v: &[f64]| v.iter().filter(|v| v.is_finite()).fold(0.0, |m: f64, v| m.max(v.abs()));
    let xmax: Vec<f64> = x64.chunks(64).map(finite_max).collect();
    let bound: Vec<f64> = (0..3)
        .map(|k| {
            let s: f64 = (0..20).map(|c| finite_max(&w64[(k * 20 + c) * 9..][..9]) * xmax[c]).sum();
            gamma * growth().powi(2) * s
        })
        .collect();
    let opts = Conv2dOptions { algorithm: Algorithm::Winograd, epilogue: Epilogue::new() };
    for isa in isas() {
        let e = Exec::new().with_isa(isa).unwrap();
        let mut y = vec![0.0f32; g.output().count().unwrap()];
        let mut ws = vec![0.0f32; conv2d_workspace_len(&g, Algorithm::Winograd, Layout::Nchw).unwrap()];
        conv2d(
            &e,
            &g,
            &opts,
            TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
            FilterView::new(&w, g.filter(), FilterLayout::Oihw).unwrap(),
            TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap(),
            &mut ws,
        )
        .unwrap();
        for (k, &bound) in bound.iter().enumerate() {
            for (oh, ow) in (0..8).flat_map(|oh| (0..8).map(move |ow| (oh, ow))) {
                if oh >= 4 && ow >= 4 {
                    continue; // The NaN's tile.
                }
                let i = (k * 8 + oh) * 8 + ow;
                let err = (f64::from(y[i]) - want[i]).abs();
                assert!(err <= bound, "{isa}: output ({k}, {oh}, {ow}) {} against {}", y[i], want[i]);
            }
        }
        assert!(y[(2 * 8 + 7) * 8 + 7].is_nan(), "{isa}: the NaN's own output");
    }
}

#[test]
fn few_tiles_on_two_threads_share_products_and_transforms() {
    // 13x13 outputs are 16 tiles, too few to split between two threads: they share each
    // block's products (by position) and its input and output transforms (by channel
    // vectors), and the products end with a 4-tile block (6 + 6 + 4). 40 input and 35
    // output channels: several channel vectors for each share; then 3 -> 5 channels,
    // a single vector, so one share has none.
    for (cin, k) in [(40, 35), (3, 5)] {
        let mut c = case(Dims::new(1, cin, 13, 13), k, Conv2d::new(3, 3).pad(1));
        c.threads = 2;
        check_case(&c, Path::PerCall(Algorithm::Winograd)).unwrap();
        check_case(&c, Path::Packed).unwrap();
    }
}

#[test]
fn dilated_polyphase() {
    // dilated_3x3_d2 in small: every phase, padding equal to the dilation.
    check_case(
        &case(Dims::new(1, 6, 13, 12), 5, Conv2d::new(3, 3).pad(2).dilation(2)),
        Path::PerCall(Algorithm::Winograd),
    )
    .unwrap();
    // Dilation 3 with padding 1 (phases with a residue), and a phase with no input rows.
    check_case(&case(Dims::new(2, 4, 8, 7), 3, Conv2d::new(3, 3).pad(1).dilation_hw(3, 2)), Path::Packed)
        .unwrap();
    check_case(
        &case(Dims::new(1, 2, 1, 1), 2, Conv2d::new(3, 3).pad(3).dilation(3)),
        Path::PerCall(Algorithm::Winograd),
    )
    .unwrap();
}

#[test]
fn many_tile_blocks_and_threads() {
    // 36 * (64 + 64) floats a tile: 2^20 of budget is 227 tiles, so 2 x 15 x 15 tiles take
    // several blocks (crossing images), per thread too.
    let mut c = case(Dims::new(2, 64, 60, 58), 64, Conv2d::new(3, 3).pad(1));
    c.act = Activation::Clamp { min: -1.0, max: 1.0 };
    for threads in [1, 2] {
        c.threads = threads;
        let exec = Exec::new().with_threads(threads).unwrap();
        let g = ConvGeometry::new(c.input, c.k, c.conv).unwrap();
        assert!(conv2d_winograd_workspace_len(&g).unwrap() < 36 * 128 * 2 * 15 * 15);
        let _ = exec;
        check_case_one_isa(&c);
    }
}

#[test]
fn nchw_patches_and_outputs_of_whole_channel_vectors() {
    // 8, 16 and 24 channels: whole AVX2 vectors. In NCHW the input transform then loads
    // each channel's rows 8 columns at a time (a run of tiles), and the output stage
    // takes a tile row's 4 columns of 8 channels at once. Without padding every column
    // lies inside the input, and the last rows of the last channel end at the end of
    // the input, where an 8-float load past the row would read past it: those loads are
    // masked. With padding 1, rows in the padding are zero vectors and columns in it are
    // masked off (the NaN of a padded row stride is never read), including at the start
    // of the first plane; 13 and 14 columns leave partial tiles at the right edge.
    for (c, k, h, w, pad) in [(16, 24, 10, 14, 0), (24, 16, 9, 13, 1), (8, 8, 6, 6, 0), (8, 16, 12, 22, 1)] {
        let mut cs = case(Dims::new(2, c, h, w), k, Conv2d::new(3, 3).pad(pad));
        check_case(&cs, Path::Packed).unwrap();
        cs.pad_c = 1;
        cs.pad_w = 5;
        cs.act = Activation::Identity;
        check_case(&cs, Path::PerCall(Algorithm::Winograd)).unwrap();
    }
}

#[test]
fn wide_rows_go_through_the_nchw_stage_in_segments() {
    // Rows of 38 tiles: NCHW outputs pass through a stage of 16 tiles side by side, so
    // 16 + 16 + 6 (the last tile partial), with a channel vector not full (20 = 16 + 4)
    // and a padded row stride.
    let mut c = case(Dims::new(2, 20, 7, 150), 18, Conv2d::new(3, 3).pad(1));
    c.pad_w = 3;
    check_case(&c, Path::PerCall(Algorithm::Winograd)).unwrap();
    // Dilation 2: phases of 18 tiles a row, written to every other column.
    check_case(&case(Dims::new(1, 3, 9, 141), 5, Conv2d::new(3, 3).pad(2).dilation(2)), Path::Packed)
        .unwrap();
    // 227 tiles a block and 75 a row: blocks (and the threads' shares) end mid-row.
    let mut c = case(Dims::new(1, 64, 20, 300), 64, Conv2d::new(3, 3).pad(1));
    c.act = Activation::Identity;
    for threads in [1, 2] {
        c.threads = threads;
        check_case_one_isa(&c);
    }
}

#[test]
fn nchw_runs_of_tiles_and_their_edges() {
    // NCHW with whole 8-channel vectors takes runs of up to 16 tiles of a tile row, their
    // columns loaded 8 at a time per channel and masked where they leave the row (the
    // padded row stride holds NaN, which must not be read); rows of 8 or more tiles take
    // the channel vectors inside each run. Widths around the 8-tile switch and the
    // 16-tile run limit (29..33: 8-9 tiles; 66..70: 17-18 tiles, two runs), asymmetric
    // column padding (chunks that start left of the row, chunks wholly past it), dilated
    // rows with undilated columns (still runs), 9 and 17 channels (a last vector that
    // is not whole goes patch by patch), two images (a block's runs cross images).
    for (c, w, pads, dh) in [
        (8, 29, [1, 1, 1, 1], 1),
        (9, 30, [0, 2, 3, 0], 1),
        (16, 31, [2, 0, 0, 3], 2),
        (17, 33, [1, 1, 2, 2], 1),
        (8, 66, [1, 1, 1, 1], 1),
        (16, 67, [0, 1, 0, 2], 2),
        (8, 70, [1, 0, 3, 1], 1),
        (8, 13, [1, 1, 1, 1], 1),
    ] {
        let conv =
            Conv2d::new(3, 3).dilation_hw(dh, 1).padding(Padding::new(pads[0], pads[1], pads[2], pads[3]));
        let mut cs = case(Dims::new(2, c, 5 + 2 * dh, w), 8, conv);
        cs.pad_w = 3;
        check_case(&cs, Path::PerCall(Algorithm::Winograd)).unwrap();
        cs.pad_w = 0;
        cs.threads = 2;
        check_case(&cs, Path::Packed).unwrap();
    }
}

/// A large case on the best ISA only (keeps the suite fast under emulation).
fn check_case_one_isa(c: &Case) {
    let g = ConvGeometry::new(c.input, c.k, c.conv).unwrap();
    let (id, od, fd) = (g.input(), g.output(), g.filter());
    let mut rng = Rng::new(c.seed);
    let xs = rng.vec(id.count().unwrap());
    let ws = rng.vec(fd.count().unwrap());
    let x64 = simdconv_tests::to_f64(&xs);
    let w64 = simdconv_tests::to_f64(&ws);
    let mut want = vec![0.0f64; od.count().unwrap()];
    r::conv2d(
        &g,
        TensorView::new(&x64[..], id, Layout::Nchw).unwrap(),
        FilterView::new(&w64[..], fd, FilterLayout::Oihw).unwrap(),
        None,
        TensorViewMut::new(&mut want[..], od, Layout::Nchw).unwrap(),
    )
    .unwrap();
    let exec = Exec::new().with_threads(c.threads).unwrap();
    let mut y = vec![f32::NAN; od.count().unwrap()];
    let act = c.act;
    conv2d(
        &exec,
        &g,
        &Conv2dOptions { algorithm: Algorithm::Winograd, epilogue: Epilogue::new().activation(act) },
        TensorView::new(&xs, id, Layout::Nchw).unwrap(),
        FilterView::new(&ws, fd, FilterLayout::Oihw).unwrap(),
        TensorViewMut::new(&mut y, od, Layout::Nchw).unwrap(),
        &mut vec![0.0; conv2d_workspace_len(&g, Algorithm::Winograd, Layout::Nchw).unwrap()],
    )
    .unwrap();
    for v in &mut want {
        if let Activation::Clamp { min, max } = act {
            *v = v.clamp(f64::from(min), f64::from(max));
        }
    }
    // |x|, |w| <= 1: the bound's magnitude is at most 48^2 * C_g.
    let mag = vec![growth() * growth() * fd.i as f64; want.len()];
    check_close(&y, &want, &mag, fd.i + 30).unwrap();
}

#[test]
fn growth_factor_is_48() {
    assert_eq!(growth(), 48.0);
}

#[test]
fn unsupported_and_bad_input() {
    let exec = Exec::new();
    for conv in [Conv2d::new(5, 5), Conv2d::new(3, 3).stride(2), Conv2d::new(3, 1), Conv2d::new(1, 1)] {
        let g = ConvGeometry::new(Dims::new(1, 2, 9, 9), 2, conv).unwrap();
        let want = Err(Error::Unsupported(Unsupported::WinogradNeeds3x3Stride1));
        assert_eq!(Algorithm::Winograd.supports(&g), want);
        assert_eq!(conv2d_workspace_len(&g, Algorithm::Winograd, Layout::Nchw), want.map(|_| 0));
        assert_eq!(WinogradFilter::packed_len(&g), want.map(|_| 0));
        assert_eq!(conv2d_winograd_workspace_len(&g), want.map(|_| 0));
    }
    let g = ConvGeometry::new(Dims::new(1, 4, 6, 6), 4, Conv2d::new(3, 3).pad(1)).unwrap();
    let w = vec![1.0f32; g.filter().count().unwrap()];
    let wv = FilterView::new(&w, g.filter(), FilterLayout::Oihw).unwrap();
    let need = WinogradFilter::packed_len(&g).unwrap();
    let mut short = vec![0.0f32; need - 1];
    assert_eq!(
        WinogradFilter::pack(&exec, &g, wv, &mut short).unwrap_err(),
        Error::SliceTooShort { operand: Operand::Filter, needed: need, actual: need - 1 }
    );
    let mut buf = vec![0.0f32; need];
    let f = WinogradFilter::pack(&exec, &g, wv, &mut buf).unwrap();
    let x = vec![1.0f32; g.input().count().unwrap()];
    let mut y = vec![0.0f32; g.output().count().unwrap()];
    let ws_len = conv2d_winograd_workspace_len(&g).unwrap();
    let xv = TensorView::new(&x, g.input(), Layout::Nchw).unwrap();
    let yv = TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap();
    assert_eq!(
        conv2d_winograd(&exec, &g, &Epilogue::new(), xv, &f, yv, &mut vec![0.0; ws_len - 1]).unwrap_err(),
        Error::WorkspaceTooSmall { needed: ws_len, actual: ws_len - 1 }
    );
    // The same per-group filter dims, grouped differently.
    let g2 = ConvGeometry::new(Dims::new(1, 8, 6, 6), 4, Conv2d::new(3, 3).pad(1).groups(2)).unwrap();
    assert_eq!(g2.filter(), g.filter());
    let x2 = vec![1.0f32; g2.input().count().unwrap()];
    let mut y2 = vec![0.0f32; g2.output().count().unwrap()];
    let err = conv2d_winograd(
        &exec,
        &g2,
        &Epilogue::new(),
        TensorView::new(&x2, g2.input(), Layout::Nchw).unwrap(),
        &f,
        TensorViewMut::new(&mut y2, g2.output(), Layout::Nchw).unwrap(),
        &mut vec![0.0; conv2d_winograd_workspace_len(&g2).unwrap()],
    )
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { operand: Operand::Filter, .. }), "{err:?}");
}

#[test]
fn auto_picks_winograd_where_it_pays() {
    use simdconv::select_algorithm;
    // 16 -> 16 channels on 28 x 28: 49 tiles, Winograd.
    let g = ConvGeometry::new(Dims::new(1, 16, 28, 28), 16, Conv2d::new(3, 3).pad(1)).unwrap();
    assert_eq!(select_algorithm(&g, Layout::Nchw), Algorithm::Winograd);
    assert_eq!(select_algorithm(&g, Layout::Nhwc), Algorithm::Winograd);
    let mut c = case(Dims::new(1, 16, 28, 28), 16, Conv2d::new(3, 3).pad(1));
    c.act = Activation::Identity;
    check_case_one_isa_auto(&c);
    // Dilation 2 counts the tiles of all four phases (16 x 16 each): 2 x 2 x 4 x 4 = 64.
    let g = ConvGeometry::new(Dims::new(1, 16, 32, 32), 16, Conv2d::new(3, 3).pad(2).dilation(2)).unwrap();
    assert_eq!(select_algorithm(&g, Layout::Nchw), Algorithm::Winograd);
    // Too few channels, too few tiles, stride 2, 5x5: im2col.
    for (input, k, conv) in [
        (Dims::new(1, 8, 56, 56), 8, Conv2d::new(3, 3).pad(1)),
        (Dims::new(1, 3, 56, 56), 64, Conv2d::new(3, 3).pad(1)),
        (Dims::new(1, 512, 14, 14), 512, Conv2d::new(3, 3).pad(1)),
        (Dims::new(1, 64, 56, 56), 64, Conv2d::new(3, 3).pad(1).stride(2)),
        (Dims::new(1, 64, 56, 56), 64, Conv2d::new(5, 5).pad(2)),
    ] {
        let g = ConvGeometry::new(input, k, conv).unwrap();
        assert_eq!(select_algorithm(&g, Layout::Nchw), Algorithm::Im2colGemm, "{input:?} {conv:?}");
    }
}

#[test]
fn packed_choice_adds_small_planes_only_where_the_filter_is_cheap() {
    use simdconv::{select_algorithm, select_packed_algorithm};
    let pick = |input: Dims, k: usize, conv: Conv2d| {
        let g = ConvGeometry::new(input, k, conv).unwrap();
        (select_algorithm(&g, Layout::Nhwc), select_packed_algorithm(&g, Layout::Nhwc))
    };
    // 16 tiles (VGG conv5_2, soumith_l5): Winograd only when packed.
    for (c, hw) in [(512, 14), (384, 13)] {
        let got = pick(Dims::new(1, c, hw, hw), c, Conv2d::new(3, 3).pad(1));
        assert_eq!(got, (Algorithm::Im2colGemm, Algorithm::Winograd), "{c}x{hw}");
    }
    // 4 tiles: a 64 x 64 filter transforms into 36 * 64 * 64 floats (576 KiB): Winograd;
    // 512 x 512 into 36 MiB read per call for 4 tiles: im2col.
    assert_eq!(pick(Dims::new(1, 64, 8, 8), 64, Conv2d::new(3, 3).pad(1)).1, Algorithm::Winograd);
    assert_eq!(pick(Dims::new(1, 512, 7, 7), 512, Conv2d::new(3, 3).pad(1)).1, Algorithm::Im2colGemm);
    // Whatever per-call Auto takes, packed Auto takes too where Winograd cannot help.
    for (input, k, conv) in [
        (Dims::new(1, 8, 56, 56), 8, Conv2d::new(3, 3).pad(1)),
        (Dims::new(1, 3, 224, 224), 64, Conv2d::new(3, 3).pad(1)),
        (Dims::new(1, 64, 56, 56), 64, Conv2d::new(3, 3).pad(1).stride(2)),
        (Dims::new(1, 64, 56, 56), 64, Conv2d::new(1, 1)),
        (Dims::new(1, 64, 56, 56), 64, Conv2d::new(3, 3).pad(1).groups(64)),
        (Dims::new(1, 256, 56, 56), 256, Conv2d::new(3, 3).pad(1)),
    ] {
        let (auto, packed) = pick(input, k, conv);
        assert_eq!(auto, packed, "{input:?} {conv:?}");
    }
}

/// `Algorithm::Auto` on the best ISA, NCHW, against the Winograd bound.
fn check_case_one_isa_auto(c: &Case) {
    // The ISA cap first: `Exec::new()` below must see the same one in every run it
    // compares (another test's first `setup` could otherwise change it in between).
    simdconv_tests::setup();
    let g = ConvGeometry::new(c.input, c.k, c.conv).unwrap();
    let (id, od, fd) = (g.input(), g.output(), g.filter());
    let mut rng = Rng::new(c.seed);
    let xs = rng.vec(id.count().unwrap());
    let ws = rng.vec(fd.count().unwrap());
    let mut want = vec![0.0f64; od.count().unwrap()];
    r::conv2d(
        &g,
        TensorView::new(&simdconv_tests::to_f64(&xs)[..], id, Layout::Nchw).unwrap(),
        FilterView::new(&simdconv_tests::to_f64(&ws)[..], fd, FilterLayout::Oihw).unwrap(),
        None,
        TensorViewMut::new(&mut want[..], od, Layout::Nchw).unwrap(),
    )
    .unwrap();
    let run = |algorithm: Algorithm| {
        let mut y = vec![f32::NAN; od.count().unwrap()];
        simdconv::conv2d_alloc(
            &Exec::new(),
            &g,
            &Conv2dOptions { algorithm, epilogue: Epilogue::new() },
            TensorView::new(&xs, id, Layout::Nchw).unwrap(),
            FilterView::new(&ws, fd, FilterLayout::Oihw).unwrap(),
            TensorViewMut::new(&mut y, od, Layout::Nchw).unwrap(),
        )
        .unwrap();
        y
    };
    let y = run(Algorithm::Auto);
    // Auto ran the Winograd path: the same bits (im2col rounds differently).
    assert!(y.iter().zip(run(Algorithm::Winograd)).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(y.iter().zip(run(Algorithm::Im2colGemm)).any(|(a, b)| a.to_bits() != b.to_bits()));
    let mag = vec![growth() * growth() * fd.i as f64; want.len()];
    check_close(&y, &want, &mag, fd.i + 30).unwrap();
}

#[test]
fn filters_packed_under_one_isa_run_under_every_isa() {
    // `U`'s panel width follows the ISA that packs it (64 output channels on AVX-512, 16
    // elsewhere) and is kept with the packed filter, so a filter packed under one ISA runs
    // under any other. 80 output channels: a panel of 64 and one of 16, or five of 16.
    // (On a machine without AVX-512 every ISA packs alike.)
    for packer in isas() {
        check_case(&case(Dims::new(2, 20, 9, 11), 80, Conv2d::new(3, 3).pad(1)), Path::PackedUnder(packer))
            .unwrap();
    }
}
