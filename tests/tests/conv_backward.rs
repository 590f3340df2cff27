//! Convolution backward passes (dX, dW, db) and transposed convolution against the f64
//! reference, on every ISA x both layouts x every algorithm, plus the adjoint identity,
//! finite differences of the reference, and named cases for the classic mistakes.

use proptest::prelude::*;
use simdconv::reference as r;
use simdconv::{
    conv2d_backward_bias, conv2d_backward_data, conv2d_backward_data_workspace_len, conv2d_backward_filter,
    conv2d_backward_filter_workspace_len, conv_transpose2d, conv_transpose2d_workspace_len, dispatch_count,
    select_backward_data_algorithm, BackwardAlgorithm, Conv2d, ConvGeometry, ConvTransposeGeometry, Dims,
    Error, Exec, FilterDims, FilterView, FilterViewMut, Layout, Operand, Padding, Param, Rounding,
    TensorView, TensorViewMut, Unsupported,
};
use simdconv_tests::{abs_f64, act_strides, check_close, gamma, gapped_filter_strides, isas, span, Rng};

const LAYOUTS: [Layout; 2] = [Layout::Nchw, Layout::Nhwc];
/// Written into every output buffer first: must be overwritten inside the view and left
/// alone outside it.
const SENTINEL: f32 = 1234.5;

// ---------------------------------------------------------------------------------------
// Strided buffers

/// Filter strides: 0 OIHW, 1 OHWI, 2 HWIO, 3 an odd order with gaps (kh, o, kw, i).
fn filter_strides(f: FilterDims, which: u8) -> [usize; 4] {
    use simdconv::FilterLayout as F;
    match which {
        0 => F::Oihw.strides(f),
        1 => F::Ohwi.strides(f),
        2 => F::Hwio.strides(f),
        _ => gapped_filter_strides(f),
    }
}

fn offsets(d: [usize; 4], s: [usize; 4]) -> Vec<usize> {
    let mut v = Vec::with_capacity(d.iter().product());
    for a in 0..d[0] {
        for b in 0..d[1] {
            for c in 0..d[2] {
                for e in 0..d[3] {
                    v.push(a * s[0] + b * s[1] + c * s[2] + e * s[3]);
                }
            }
        }
    }
    v
}

/// A strided f32 buffer of random values, its f64 copy and |.| copy.
struct Buf {
    dims: [usize; 4],
    strides: [usize; 4],
    data: Vec<f32>,
}

impl Buf {
    fn random(dims: [usize; 4], strides: [usize; 4], rng: &mut Rng) -> Buf {
        Buf { dims, strides, data: rng.vec(span(dims, strides)) }
    }
    fn sentinel(dims: [usize; 4], strides: [usize; 4]) -> Buf {
        Buf { dims, strides, data: vec![SENTINEL; span(dims, strides)] }
    }
    fn f64(&self) -> Vec<f64> {
        self.data.iter().map(|&v| f64::from(v)).collect()
    }
    fn abs(&self) -> Vec<f64> {
        abs_f64(&self.data)
    }
    fn t(&self) -> TensorView<'_, f32> {
        TensorView::with_strides(&self.data, dims(self.dims), self.strides).unwrap()
    }
    fn t_mut(&mut self) -> TensorViewMut<'_, f32> {
        TensorViewMut::with_strides(&mut self.data, dims(self.dims), self.strides).unwrap()
    }
    fn f(&self) -> FilterView<'_, f32> {
        FilterView::with_strides(&self.data, fdims(self.dims), self.strides).unwrap()
    }
    fn f_mut(&mut self) -> FilterViewMut<'_, f32> {
        FilterViewMut::with_strides(&mut self.data, fdims(self.dims), self.strides).unwrap()
    }
    /// The elements in logical order; errors if anything outside the view was written.
    fn logical(&self) -> Result<Vec<f32>, String> {
        let offs = offsets(self.dims, self.strides);
        let mut inside = vec![false; self.data.len()];
        for &o in &offs {
            inside[o] = true;
        }
        for (i, (&v, &ins)) in self.data.iter().zip(&inside).enumerate() {
            if !ins && v.to_bits() != SENTINEL.to_bits() {
                return Err(format!("offset {i} outside the view was written: {v}"));
            }
        }
        Ok(offs.iter().map(|&o| self.data[o]).collect())
    }
}

fn dims(d: [usize; 4]) -> Dims {
    Dims::new(d[0], d[1], d[2], d[3])
}
fn fdims(d: [usize; 4]) -> FilterDims {
    FilterDims::new(d[0], d[1], d[2], d[3])
}

/// A strided f64 tensor view over a copy of `b`.
fn tv<'a>(data: &'a [f64], b: &Buf) -> TensorView<'a, f64> {
    TensorView::with_strides(data, dims(b.dims), b.strides).unwrap()
}
fn fv<'a>(data: &'a [f64], b: &Buf) -> FilterView<'a, f64> {
    FilterView::with_strides(data, fdims(b.dims), b.strides).unwrap()
}
fn dense_out(d: [usize; 4]) -> Vec<f64> {
    vec![0.0; d.iter().product()]
}
fn dense_mut(v: &mut [f64], d: [usize; 4]) -> TensorViewMut<'_, f64> {
    TensorViewMut::new(v, dims(d), Layout::Nchw).unwrap()
}
fn dense_fmut(v: &mut [f64], d: [usize; 4]) -> FilterViewMut<'_, f64> {
    FilterViewMut::new(v, fdims(d), simdconv::FilterLayout::Oihw).unwrap()
}

// ---------------------------------------------------------------------------------------
// The problem

#[derive(Clone, Debug)]
struct Case {
    n: usize,
    groups: usize,
    cg: usize,
    og: usize,
    /// Extra input rows / columns beyond the smallest the window allows.
    extra: [usize; 2],
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    pad: Padding,
    rounding: Rounding,
    padded_act: bool,
    filter: u8,
    seed: u64,
}

impl Case {
    fn geometry(&self) -> ConvGeometry {
        let eff = |i: usize| self.d[i] * (self.k[i] - 1) + 1;
        let h = eff(0).saturating_sub(self.pad.top + self.pad.bottom).max(1) + self.extra[0];
        let w = eff(1).saturating_sub(self.pad.left + self.pad.right).max(1) + self.extra[1];
        let conv = Conv2d::new(self.k[0], self.k[1])
            .stride_hw(self.s[0], self.s[1])
            .dilation_hw(self.d[0], self.d[1])
            .padding(self.pad)
            .rounding(self.rounding)
            .groups(self.groups);
        ConvGeometry::new(Dims::new(self.n, self.cg * self.groups, h, w), self.og * self.groups, conv)
            .unwrap()
    }
}

fn channels() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1usize..=4, 1 => Just(17usize)]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=2, 1usize..=3, channels(), channels()),
        (
            [0usize..=4, 0usize..=4],
            [1usize..=3, 1usize..=3],
            [1usize..=3, 1usize..=3],
            [1usize..=3, 1usize..=3],
        ),
        (
            [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
            any::<bool>(),
            any::<bool>(),
            0u8..4,
            any::<u64>(),
        ),
    )
        .prop_map(|((n, groups, cg, og), (extra, k, s, d), (p, ceil, padded_act, filter, seed))| Case {
            n,
            groups,
            cg,
            og,
            extra,
            k,
            s,
            d,
            pad: Padding::new(p[0], p[1], p[2], p[3]),
            rounding: if ceil { Rounding::Ceil } else { Rounding::Floor },
            padded_act,
            filter,
            seed,
        })
}

/// Stride-1 cases; paddings up to 4 reach past `dilation * (kernel - 1)` sometimes.
fn flipped_case() -> impl Strategy<Value = Case> {
    (
        (1usize..=2, 1usize..=3, channels(), channels()),
        ([0usize..=3, 0usize..=3], [1usize..=4, 1usize..=4], [1usize..=3, 1usize..=3]),
        ([0usize..=4, 0usize..=4, 0usize..=4, 0usize..=4], any::<bool>(), 0u8..4, any::<u64>()),
    )
        .prop_map(|((n, groups, cg, og), (extra, k, d), (p, padded_act, filter, seed))| Case {
            n,
            groups,
            cg,
            og,
            extra,
            k,
            s: [1, 1],
            d,
            pad: Padding::new(p[0], p[1], p[2], p[3]),
            rounding: Rounding::Floor,
            padded_act,
            filter,
            seed,
        })
}

/// Everything for one case in one layout: random x, w, dy and their f64 references.
struct Fixture {
    g: ConvGeometry,
    layout: Layout,
    x: Buf,
    w: Buf,
    dy: Buf,
}

impl Fixture {
    fn new(c: &Case, layout: Layout) -> Fixture {
        let g = c.geometry();
        let mut rng = Rng::new(c.seed);
        let x = Buf::random(g.input().to_array(), act_strides(g.input(), layout, c.padded_act), &mut rng);
        let w = Buf::random(g.filter().to_array(), filter_strides(g.filter(), c.filter), &mut rng);
        let dy = Buf::random(g.output().to_array(), act_strides(g.output(), layout, c.padded_act), &mut rng);
        Fixture { g, layout, x, w, dy }
    }

    fn padded(&self) -> bool {
        self.x.strides != self.layout.strides(self.g.input())
    }

    /// Reference dX on (dy, w) and on (|dy|, |w|).
    fn want_dx(&self) -> (Vec<f64>, Vec<f64>) {
        let run = |dy: &[f64], w: &[f64]| {
            let mut out = dense_out(self.g.input().to_array());
            r::conv2d_backward_data(
                &self.g,
                tv(dy, &self.dy),
                fv(w, &self.w),
                dense_mut(&mut out, self.g.input().to_array()),
            )
            .unwrap();
            out
        };
        (run(&self.dy.f64(), &self.w.f64()), run(&self.dy.abs(), &self.w.abs()))
    }

    fn want_dw(&self) -> (Vec<f64>, Vec<f64>) {
        let run = |x: &[f64], dy: &[f64]| {
            let mut out = dense_out(self.g.filter().to_array());
            r::conv2d_backward_filter(
                &self.g,
                tv(x, &self.x),
                tv(dy, &self.dy),
                dense_fmut(&mut out, self.g.filter().to_array()),
            )
            .unwrap();
            out
        };
        (run(&self.x.f64(), &self.dy.f64()), run(&self.x.abs(), &self.dy.abs()))
    }

    fn got_dx(&self, exec: &Exec, algo: BackwardAlgorithm) -> Result<Vec<f32>, String> {
        let mut dx = Buf::sentinel(self.x.dims, self.x.strides);
        let need = conv2d_backward_data_workspace_len(&self.g, algo, self.layout).unwrap();
        let mut ws = vec![f32::NAN; need];
        conv2d_backward_data(exec, &self.g, algo, self.dy.t(), self.w.f(), dx.t_mut(), &mut ws)
            .map_err(|e| e.to_string())?;
        dx.logical()
    }

    fn got_dw(&self, exec: &Exec, algo: BackwardAlgorithm) -> Result<Vec<f32>, String> {
        let mut dw = Buf::sentinel(self.w.dims, self.w.strides);
        let need = conv2d_backward_filter_workspace_len(&self.g, algo, self.layout).unwrap();
        let mut ws = vec![f32::NAN; need];
        conv2d_backward_filter(exec, &self.g, algo, self.x.t(), self.dy.t(), dw.f_mut(), &mut ws)
            .map_err(|e| e.to_string())?;
        dw.logical()
    }
}

/// Every algorithm, `Auto` and the data-only `Flipped` included.
const ALL: [BackwardAlgorithm; 4] =
    [BackwardAlgorithm::Gemm, BackwardAlgorithm::Direct, BackwardAlgorithm::Flipped, BackwardAlgorithm::Auto];

fn check_case(c: &Case) -> Result<(), String> {
    check_case_with(c, &ALL)
}

/// Whether the flipped forward form exists, derived from the case directly: stride 1 and,
/// per axis, both paddings at most `dilation * (kernel - 1)`.
fn flippable(g: &ConvGeometry) -> bool {
    let w = g.window();
    let (k, s, d, p) = (w.kernel(), w.stride(), w.dilation(), w.padding());
    let ext = [d[0] * (k[0] - 1), d[1] * (k[1] - 1)];
    s == [1, 1] && p.top <= ext[0] && p.bottom <= ext[0] && p.left <= ext[1] && p.right <= ext[1]
}

/// For a data-gradient algorithm: `Ok(true)` if it runs `g`; `Ok(false)` if it is
/// `Flipped` on a geometry it cannot run and both the workspace query and the call
/// report `Unsupported(FlippedGeometry)`.
fn data_runs(f: &Fixture, exec: &Exec, algo: BackwardAlgorithm) -> Result<bool, String> {
    let g = &f.g;
    let flips = flippable(g);
    let pointwise = g.filter().kh == 1 && g.filter().kw == 1 && g.window().padding() == Padding::uniform(0);
    // Auto flips only when the forward would run the flipped geometry with something other
    // than im2col + GEMM (today: depthwise, one output channel per group).
    let forward_not_gemm = flips && {
        let (w, k) = (g.window(), g.filter());
        let (d, p) = (w.dilation(), w.padding());
        let ext = [d[0] * (k.kh - 1), d[1] * (k.kw - 1)];
        let pad = Padding::new(ext[0] - p.top, ext[0] - p.bottom, ext[1] - p.left, ext[1] - p.right);
        let conv = Conv2d::new(k.kh, k.kw).dilation_hw(d[0], d[1]).padding(pad).groups(g.groups());
        let fg = ConvGeometry::new(g.output(), g.input().c, conv).unwrap();
        assert_eq!(fg.output(), g.input());
        simdconv::select_algorithm(&fg, f.layout) != simdconv::Algorithm::Im2colGemm
    };
    let want_auto = if flips && !pointwise && forward_not_gemm {
        BackwardAlgorithm::Flipped
    } else {
        BackwardAlgorithm::Auto.resolve().unwrap()
    };
    let auto =
        select_backward_data_algorithm(g, BackwardAlgorithm::Auto, f.layout).map_err(|e| e.to_string())?;
    if auto != want_auto {
        return Err(format!("Auto picked {} for {g:?}, expected {}", auto.name(), want_auto.name()));
    }
    if algo != BackwardAlgorithm::Flipped || flips {
        return Ok(true);
    }
    let unsupported = Error::Unsupported(Unsupported::FlippedGeometry);
    if conv2d_backward_data_workspace_len(g, algo, f.layout) != Err(unsupported) {
        return Err(format!("flipped workspace query accepted {g:?}"));
    }
    let mut dx = Buf::sentinel(f.x.dims, f.x.strides);
    if conv2d_backward_data(exec, g, algo, f.dy.t(), f.w.f(), dx.t_mut(), &mut []) != Err(unsupported) {
        return Err(format!("flipped accepted {g:?}"));
    }
    Ok(false)
}

/// `Flipped` computes no filter gradients: both the query and the call say so.
fn filter_rejects_flipped(f: &Fixture, exec: &Exec) -> Result<(), String> {
    let unsupported = Error::Unsupported(Unsupported::FlippedGeometry);
    let algo = BackwardAlgorithm::Flipped;
    if conv2d_backward_filter_workspace_len(&f.g, algo, f.layout) != Err(unsupported) {
        return Err("flipped filter workspace query accepted".into());
    }
    let mut dw = Buf::sentinel(f.w.dims, f.w.strides);
    if conv2d_backward_filter(exec, &f.g, algo, f.x.t(), f.dy.t(), dw.f_mut(), &mut []) != Err(unsupported) {
        return Err("flipped filter gradient accepted".into());
    }
    Ok(())
}

fn check_case_with(c: &Case, algos: &[BackwardAlgorithm]) -> Result<(), String> {
    for layout in LAYOUTS {
        let f = Fixture::new(c, layout);
        let g = &f.g;
        let (dx_want, dx_mag) = f.want_dx();
        let (dw_want, dw_mag) = f.want_dw();
        let dx_terms = g.filter().o / g.groups() * g.filter().kh * g.filter().kw;
        let dw_terms = g.output().n * g.output().h * g.output().w;
        let mut db_want = vec![0.0; g.output().c];
        r::conv2d_backward_bias(tv(&f.dy.f64(), &f.dy), &mut db_want).unwrap();
        let mut db_mag = vec![0.0; g.output().c];
        r::conv2d_backward_bias(tv(&f.dy.abs(), &f.dy), &mut db_mag).unwrap();
        for isa in isas() {
            let exec = Exec::new().with_isa(isa).unwrap();
            for &algo in algos {
                let ctx = || format!("{isa} {} {layout:?} padded={} {g:?}", algo.name(), f.padded());
                let before = dispatch_count(isa);
                if data_runs(&f, &exec, algo).map_err(|e| format!("dX {}: {e}", ctx()))? {
                    let dx = f.got_dx(&exec, algo).map_err(|e| format!("dX {}: {e}", ctx()))?;
                    check_close(&dx, &dx_want, &dx_mag, dx_terms)
                        .map_err(|e| format!("dX {}: {e}", ctx()))?;
                }
                if algo == BackwardAlgorithm::Flipped {
                    filter_rejects_flipped(&f, &exec).map_err(|e| format!("dW {}: {e}", ctx()))?;
                    continue;
                }
                let dw = f.got_dw(&exec, algo).map_err(|e| format!("dW {}: {e}", ctx()))?;
                check_close(&dw, &dw_want, &dw_mag, dw_terms).map_err(|e| format!("dW {}: {e}", ctx()))?;
                if algo == BackwardAlgorithm::Direct && dispatch_count(isa) <= before {
                    return Err(format!("no kernel ran on {isa}"));
                }
            }
            let mut db = vec![SENTINEL; g.output().c];
            conv2d_backward_bias(&exec, f.dy.t(), &mut db).map_err(|e| e.to_string())?;
            check_close(&db, &db_want, &db_mag, dw_terms).map_err(|e| format!("db {isa} {layout:?}: {e}"))?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simdconv_tests::proptest_cases(48)))]

    #[test]
    fn backward_matches_reference(c in case()) {
        check_case(&c).map_err(TestCaseError::fail)?;
    }

    /// Stride 1 with paddings around `dilation * (kernel - 1)`: the flipped forward path
    /// (and its refusals) with groups, dilation, asymmetric padding, 1x1 planes.
    #[test]
    fn flipped_matches_reference(c in flipped_case()) {
        check_case_with(&c, &[BackwardAlgorithm::Flipped, BackwardAlgorithm::Auto]).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn adjoint_identity(c in case()) {
        adjoint(&c).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn transpose_matches_definition(t in tcase()) {
        // Padding that leaves no output is an error (tested in transpose_geometry_errors).
        prop_assume!(t.geometry().is_ok());
        check_transpose(&t).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------
// Adjoint: <conv(x), y> == <x, conv_backward_data(y)>

fn adjoint(c: &Case) -> Result<(), String> {
    for layout in LAYOUTS {
        let f = Fixture::new(c, layout);
        let g = &f.g;
        // lhs = <conv(x, w), y> in f64 (y plays dY).
        let mut conv = dense_out(g.output().to_array());
        let (xf, wf) = (f.x.f64(), f.w.f64());
        r::conv2d(g, tv(&xf, &f.x), fv(&wf, &f.w), None, dense_mut(&mut conv, g.output().to_array()))
            .unwrap();
        let yl: Vec<f64> =
            offsets(f.dy.dims, f.dy.strides).iter().map(|&o| f64::from(f.dy.data[o])).collect();
        let xl: Vec<f64> = offsets(f.x.dims, f.x.strides).iter().map(|&o| f64::from(f.x.data[o])).collect();
        let lhs: f64 = conv.iter().zip(&yl).map(|(a, b)| a * b).sum();
        let (_, dx_mag) = f.want_dx();
        let terms = g.filter().o / g.groups() * g.filter().kh * g.filter().kw;
        // Each dx element is within gamma(terms + 2) * mag of exact; the f64 sums add
        // a relative 1e-12 at most at these sizes.
        let abs_scale: f64 = xl.iter().zip(&dx_mag).map(|(x, m)| x.abs() * m).sum();
        let bound = gamma(terms + 2) * abs_scale + 1e-12 * abs_scale + 1e-30;
        for isa in isas() {
            let exec = Exec::new().with_isa(isa).unwrap();
            for algo in ALL {
                if !data_runs(&f, &exec, algo)? {
                    continue;
                }
                let dx = f.got_dx(&exec, algo)?;
                let rhs: f64 = dx.iter().zip(&xl).map(|(&a, b)| f64::from(a) * b).sum();
                if (lhs - rhs).abs() > bound {
                    return Err(format!(
                        "{isa} {} {layout:?}: <conv(x), y> = {lhs} but <x, dX(y)> = {rhs} (bound {bound:e})",
                        algo.name()
                    ));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Transposed convolution

#[derive(Clone, Debug)]
struct TCase {
    n: usize,
    groups: usize,
    cg: usize,
    og: usize,
    hw: [usize; 2],
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    pad: Padding,
    op: [usize; 2],
    bias: bool,
    padded_act: bool,
    filter: u8,
    seed: u64,
}

impl TCase {
    fn geometry(&self) -> Result<ConvTransposeGeometry, Error> {
        let conv = Conv2d::new(self.k[0], self.k[1])
            .stride_hw(self.s[0], self.s[1])
            .dilation_hw(self.d[0], self.d[1])
            .padding(self.pad)
            .groups(self.groups);
        ConvTransposeGeometry::new(
            Dims::new(self.n, self.cg * self.groups, self.hw[0], self.hw[1]),
            self.og * self.groups,
            conv,
            self.op,
        )
    }
}

fn tcase() -> impl Strategy<Value = TCase> {
    (
        (1usize..=2, 1usize..=3, channels(), channels()),
        (
            [1usize..=4, 1usize..=4],
            [1usize..=3, 1usize..=3],
            [1usize..=3, 1usize..=3],
            [1usize..=3, 1usize..=3],
        ),
        ([0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2], [0usize..=2, 0usize..=2]),
        (any::<bool>(), any::<bool>(), 0u8..4, any::<u64>()),
    )
        .prop_map(|((n, groups, cg, og), (hw, k, s, d), (p, op), (bias, padded_act, filter, seed))| {
            // Keep output padding legal: below max(stride, dilation).
            let op = [op[0] % s[0].max(d[0]), op[1] % s[1].max(d[1])];
            TCase {
                n,
                groups,
                cg,
                og,
                hw,
                k,
                s,
                d,
                pad: Padding::new(p[0], p[1], p[2], p[3]),
                op,
                bias,
                padded_act,
                filter,
                seed,
            }
        })
}

/// The definition, in f64: every input element spreads through every tap to the output
/// position it lands on, if inside. Returns (value, magnitude) in logical NCHW order.
fn transpose_reference(
    tg: &ConvTransposeGeometry,
    x: &Buf,
    w: &Buf,
    bias: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let (i, o) = (tg.input(), tg.output());
    let f = tg.filter();
    let win = tg.conv().window();
    let ([sh, sw], [dh, dw], p) = (win.stride(), win.dilation(), win.padding());
    let og = o.c / tg.groups();
    let cg = i.c / tg.groups();
    let mut y = vec![0.0f64; o.count().unwrap()];
    let mut m = vec![0.0f64; y.len()];
    let (xv, wv) = (x.t(), w.f());
    for n in 0..i.n {
        for c in 0..o.c {
            let b = bias.map_or(0.0, |b| f64::from(b[c]));
            for oy in 0..o.h {
                for ox in 0..o.w {
                    let at = ((n * o.c + c) * o.h + oy) * o.w + ox;
                    y[at] = b;
                    m[at] = b.abs();
                }
            }
        }
        for k in 0..i.c {
            let grp = k / cg;
            for iy in 0..i.h {
                for ix in 0..i.w {
                    for co in 0..og {
                        let c = grp * og + co;
                        for ky in 0..f.kh {
                            let Some(oy) = (iy * sh + ky * dh).checked_sub(p.top).filter(|&v| v < o.h) else {
                                continue;
                            };
                            for kx in 0..f.kw {
                                let Some(ox) = (ix * sw + kx * dw).checked_sub(p.left).filter(|&v| v < o.w)
                                else {
                                    continue;
                                };
                                let v = f64::from(xv.get(n, k, iy, ix)) * f64::from(wv.get(k, co, ky, kx));
                                let at = ((n * o.c + c) * o.h + oy) * o.w + ox;
                                y[at] += v;
                                m[at] += v.abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (y, m)
}

fn run_transpose(
    exec: &Exec,
    tg: &ConvTransposeGeometry,
    algo: BackwardAlgorithm,
    x: &Buf,
    w: &Buf,
    bias: Option<&[f32]>,
    y_strides: [usize; 4],
) -> Result<Vec<f32>, String> {
    let mut y = Buf::sentinel(tg.output().to_array(), y_strides);
    let layout = y.t().layout().unwrap();
    let mut ws = vec![f32::NAN; conv_transpose2d_workspace_len(tg, algo, layout).unwrap()];
    conv_transpose2d(exec, tg, algo, x.t(), w.f(), bias, y.t_mut(), &mut ws).map_err(|e| e.to_string())?;
    y.logical()
}

fn check_transpose(t: &TCase) -> Result<(), String> {
    let tg = t.geometry().map_err(|e| format!("{t:?}: {e}"))?;
    for layout in LAYOUTS {
        let mut rng = Rng::new(t.seed);
        let x = Buf::random(tg.input().to_array(), act_strides(tg.input(), layout, t.padded_act), &mut rng);
        let w = Buf::random(tg.filter().to_array(), filter_strides(tg.filter(), t.filter), &mut rng);
        let bias_v = rng.vec(tg.output().c);
        let bias = t.bias.then_some(&bias_v[..]);
        let (want, mag) = transpose_reference(&tg, &x, &w, bias);
        // The same map is the data gradient of the forward geometry, when there is one.
        if let (Some(fg), None) = (tg.forward(), bias) {
            let mut via = dense_out(tg.output().to_array());
            let (xf, wf) = (x.f64(), w.f64());
            r::conv2d_backward_data(
                &fg,
                tv(&xf, &x),
                fv(&wf, &w),
                dense_mut(&mut via, tg.output().to_array()),
            )
            .unwrap();
            for (a, b) in via.iter().zip(&want) {
                if (a - b).abs() > 1e-9 * (1.0 + b.abs()) {
                    return Err(format!("{t:?}: forward() backward data {a} vs definition {b}"));
                }
            }
        }
        let terms = tg.filter().o / tg.groups() * tg.filter().kh * tg.filter().kw + 1;
        let ys = act_strides(tg.output(), layout, t.padded_act);
        for isa in isas() {
            let exec = Exec::new().with_isa(isa).unwrap();
            for algo in ALL {
                let ws = conv_transpose2d_workspace_len(&tg, algo, layout);
                // Flipped needs stride 1, leading padding within dilation * (k - 1) and
                // trailing padding within that plus the output padding.
                let win = tg.conv().window();
                let (k, st, d, p, op) = (win.kernel(), win.stride(), win.dilation(), win.padding(), t.op);
                let ext = [d[0] * (k[0] - 1), d[1] * (k[1] - 1)];
                let flips = st == [1, 1]
                    && p.top <= ext[0]
                    && p.left <= ext[1]
                    && p.bottom <= ext[0] + op[0]
                    && p.right <= ext[1] + op[1];
                if algo == BackwardAlgorithm::Flipped && !flips {
                    if ws != Err(Error::Unsupported(Unsupported::FlippedGeometry)) {
                        return Err(format!("{tg:?}: flipped workspace query gave {ws:?}"));
                    }
                    continue;
                }
                let got = run_transpose(&exec, &tg, algo, &x, &w, bias, ys)?;
                check_close(&got, &want, &mag, terms)
                    .map_err(|e| format!("{isa} {} {layout:?} {tg:?}: {e}", algo.name()))?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Finite differences of the reference backward functions (f64)

fn loss(g: &ConvGeometry, x: &[f64], w: &[f64], b: &[f64], dy: &[f64]) -> f64 {
    let mut y = dense_out(g.output().to_array());
    r::conv2d(
        g,
        TensorView::new(x, g.input(), Layout::Nchw).unwrap(),
        FilterView::new(w, g.filter(), simdconv::FilterLayout::Oihw).unwrap(),
        Some(b),
        dense_mut(&mut y, g.output().to_array()),
    )
    .unwrap();
    y.iter().zip(dy).map(|(a, b)| a * b).sum()
}

fn finite_differences(g: &ConvGeometry, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut vecf = |n: usize| -> Vec<f64> { (0..n).map(|_| f64::from(rng.uniform())).collect() };
    let x = vecf(g.input().count().unwrap());
    let w = vecf(g.filter().count().unwrap());
    let b = vecf(g.output().c);
    let dy = vecf(g.output().count().unwrap());
    let mut dx = dense_out(g.input().to_array());
    r::conv2d_backward_data(
        g,
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        FilterView::new(&w, g.filter(), simdconv::FilterLayout::Oihw).unwrap(),
        dense_mut(&mut dx, g.input().to_array()),
    )
    .unwrap();
    let mut dw = dense_out(g.filter().to_array());
    r::conv2d_backward_filter(
        g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        dense_fmut(&mut dw, g.filter().to_array()),
    )
    .unwrap();
    let mut db = vec![0.0; g.output().c];
    r::conv2d_backward_bias(TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(), &mut db).unwrap();
    let h = 1e-3;
    // The loss is linear in each argument, so central differences are exact up to
    // rounding: |error| <~ 1e-16 * |terms| / h.
    let tol = 1e-9;
    let central = |which: usize, i: usize| {
        let (mut xp, mut wp, mut bp) = (x.clone(), w.clone(), b.clone());
        let (mut xm, mut wm, mut bm) = (x.clone(), w.clone(), b.clone());
        match which {
            0 => {
                xp[i] += h;
                xm[i] -= h;
            }
            1 => {
                wp[i] += h;
                wm[i] -= h;
            }
            _ => {
                bp[i] += h;
                bm[i] -= h;
            }
        }
        (loss(g, &xp, &wp, &bp, &dy) - loss(g, &xm, &wm, &bm, &dy)) / (2.0 * h)
    };
    for (which, grad) in [(0, &dx), (1, &dw), (2, &db)] {
        for (i, &gv) in grad.iter().enumerate() {
            let fd = central(which, i);
            assert!((fd - gv).abs() <= tol * (1.0 + gv.abs()), "{g:?} arg {which} [{i}]: fd {fd} vs {gv}");
        }
    }
}

#[test]
fn finite_differences_of_reference() {
    let shapes = [
        (Dims::new(1, 2, 5, 6), 3, Conv2d::new(3, 3).pad(1)),
        (
            Dims::new(2, 2, 7, 5),
            2,
            Conv2d::new(3, 2).stride_hw(2, 1).dilation_hw(1, 2).padding(Padding::new(1, 0, 2, 1)),
        ),
        (Dims::new(1, 4, 6, 6), 4, Conv2d::new(2, 3).stride(2).groups(2).rounding(Rounding::Ceil)),
        (Dims::new(1, 3, 4, 4), 3, Conv2d::new(3, 3).dilation(2).pad(2).groups(3)),
    ];
    for (i, (inp, k, conv)) in shapes.into_iter().enumerate() {
        finite_differences(&ConvGeometry::new(inp, k, conv).unwrap(), i as u64 + 11);
    }
}

// ---------------------------------------------------------------------------------------
// Named cases

fn named(n: usize, g: usize, cg: usize, og: usize, hw: [usize; 2], conv: Conv2d) -> Case {
    let geo_conv = conv.window();
    Case {
        n,
        groups: g,
        cg,
        og,
        extra: [0, 0],
        k: geo_conv.kernel(),
        s: geo_conv.stride(),
        d: geo_conv.dilation(),
        pad: geo_conv.padding(),
        rounding: geo_conv.rounding(),
        padded_act: false,
        filter: 0,
        seed: 7,
    }
    .with_hw(hw)
}

impl Case {
    /// Sets the input plane exactly (through `extra`).
    fn with_hw(mut self, hw: [usize; 2]) -> Case {
        let eff = |i: usize| self.d[i] * (self.k[i] - 1) + 1;
        let base = [
            eff(0).saturating_sub(self.pad.top + self.pad.bottom).max(1),
            eff(1).saturating_sub(self.pad.left + self.pad.right).max(1),
        ];
        self.extra = [hw[0] - base[0], hw[1] - base[1]];
        self
    }
    fn variants(&self) -> Vec<Case> {
        let mut v = Vec::new();
        for filter in 0..4 {
            for padded_act in [false, true] {
                v.push(Case { filter, padded_act, ..self.clone() });
            }
        }
        v
    }
}

fn check_named(c: Case) {
    for v in c.variants() {
        if let Err(e) = check_case(&v) {
            panic!("{e}");
        }
        if let Err(e) = adjoint(&v) {
            panic!("{e}");
        }
    }
}

#[test]
fn stride_2_asymmetric() {
    // Stride only along the height: swapping the axes changes the answer.
    check_named(named(2, 1, 3, 5, [9, 7], Conv2d::new(3, 3).stride_hw(2, 1).pad(1)));
}

#[test]
fn dilation_2_asymmetric() {
    // Dilation only along the width; stride only along the height: catches stride and
    // dilation swapped.
    check_named(named(1, 1, 2, 3, [8, 9], Conv2d::new(3, 3).stride_hw(2, 1).dilation_hw(1, 2).pad(2)));
}

#[test]
fn groups_2() {
    check_named(named(2, 2, 3, 2, [6, 6], Conv2d::new(3, 3).pad(1).groups(2)));
}

#[test]
fn depthwise_and_one_by_one_strided() {
    check_named(named(1, 17, 1, 2, [5, 5], Conv2d::new(3, 3).pad(1).groups(17)));
    check_named(named(2, 1, 17, 18, [7, 6], Conv2d::new(1, 1).stride(2)));
    check_named(named(1, 1, 3, 2, [1, 1], Conv2d::new(1, 1)));
}

#[test]
fn window_equals_padded_input_and_stride_over_kernel() {
    check_named(named(1, 1, 2, 2, [3, 2], Conv2d::new(5, 4).padding(Padding::new(1, 1, 2, 0))));
    check_named(named(
        1,
        1,
        2,
        3,
        [10, 10],
        Conv2d::new(2, 2).stride(3).dilation(3).rounding(Rounding::Ceil),
    ));
}

/// Strided rows longer than the direct path's 256-element stack buffers.
#[test]
fn wide_strided_rows() {
    check_named(named(1, 1, 2, 3, [3, 601], Conv2d::new(3, 3).stride_hw(1, 2).pad(1)));
}

/// Found by proptest: a 1x1 kernel whose trailing padding adds outputs past the input
/// is not a plain GEMM (those outputs read only padding).
#[test]
fn one_by_one_with_trailing_padding() {
    check_named(named(1, 1, 1, 1, [1, 2], Conv2d::new(1, 1).padding(Padding::new(0, 0, 0, 1))));
    check_named(named(2, 1, 3, 2, [3, 4], Conv2d::new(1, 1).stride(2).padding(Padding::new(0, 2, 0, 1))));
}

/// The flipped forward path at its padding edges: none (leading `d * (k - 1)`), exactly
/// `d * (k - 1)` (leading 0), asymmetric, per-axis dilation, groups, depthwise (the
/// forward runs its depthwise kernel with a channel multiplier), a 1x1 plane, a padded 1x1
/// kernel (not flippable: falls back), and trailing padding past `d * (k - 1)`.
#[test]
fn flipped_padding_edges() {
    let cases = [
        named(2, 1, 3, 5, [6, 7], Conv2d::new(3, 3)),
        named(1, 1, 2, 3, [5, 6], Conv2d::new(3, 2).dilation_hw(2, 3).padding(Padding::new(4, 0, 3, 1))),
        named(1, 2, 3, 2, [6, 5], Conv2d::new(3, 3).dilation(2).pad(2).groups(2)),
        named(1, 17, 1, 1, [5, 6], Conv2d::new(3, 3).pad(1).groups(17)),
        named(1, 5, 2, 1, [4, 4], Conv2d::new(3, 3).padding(Padding::new(0, 2, 1, 0)).groups(5)),
        named(1, 1, 17, 3, [1, 1], Conv2d::new(3, 3).pad(1)),
        named(1, 1, 3, 2, [4, 4], Conv2d::new(1, 1).pad(1)),
        named(1, 1, 2, 2, [4, 5], Conv2d::new(2, 2).padding(Padding::new(0, 2, 1, 0))),
        named(1, 1, 2, 2, [4, 5], Conv2d::new(3, 3).padding(Padding::new(3, 0, 0, 0))),
    ];
    for c in cases {
        for v in c.variants() {
            check_case_with(&v, &[BackwardAlgorithm::Flipped, BackwardAlgorithm::Auto]).unwrap();
            adjoint(&v).unwrap();
        }
    }
    // The workspace holds the flipped bank plus the forward's workspace.
    let g = named(1, 1, 4, 6, [8, 8], Conv2d::new(3, 3).pad(1)).geometry();
    for layout in LAYOUTS {
        let fwd = ConvGeometry::new(g.output(), 4, Conv2d::new(3, 3).pad(1)).unwrap();
        let fwd_ws = simdconv::conv2d_workspace_len(&fwd, simdconv::Algorithm::Auto, layout).unwrap();
        assert_eq!(
            conv2d_backward_data_workspace_len(&g, BackwardAlgorithm::Flipped, layout),
            Ok(g.filter().count().unwrap() + fwd_ws)
        );
    }
}

/// Regression shape big enough to need several column tiles per image in the GEMM path.
#[test]
fn several_gemm_tiles() {
    // 64 channels x 3x3 taps x 1850 columns = 1.07M column elements per output row, over
    // the 256K-element tile budget: one row per tile, two tiles.
    let c = named(1, 1, 64, 1, [2, 1850], Conv2d::new(3, 3).pad(1));
    let g = c.geometry();
    assert_eq!(g.output().h, 2);
    let one_row = 64 * 9 * 1850;
    assert_eq!(conv2d_backward_data_workspace_len(&g, BackwardAlgorithm::Gemm, Layout::Nchw), Ok(one_row));
    // dW adds one group's filter gradient, staged column-major.
    assert_eq!(
        conv2d_backward_filter_workspace_len(&g, BackwardAlgorithm::Gemm, Layout::Nhwc),
        Ok(one_row + 64 * 9)
    );
    for v in [c.clone(), Case { filter: 3, padded_act: true, ..c }] {
        check_case_with(&v, &[BackwardAlgorithm::Gemm]).unwrap();
    }
}

/// NCHW GEMM path with column strides below the window reach: input rows are split by
/// column phase (im2col copies, col2im adds contiguous runs). Edges: a stem like AlexNet
/// conv1 (11 taps, stride 4) with asymmetric padding wider than the stride and N > 1,
/// stride equal to the reach, dilation with the stride, groups with channel counts not
/// multiple of 16, one channel, a 1-column output, several column tiles.
#[test]
fn phase_split_rows() {
    let cases = [
        named(2, 1, 3, 5, [23, 27], Conv2d::new(11, 11).stride(4).padding(Padding::new(1, 6, 3, 0))),
        named(1, 1, 1, 2, [5, 9], Conv2d::new(3, 3).stride_hw(1, 2)),
        named(1, 1, 2, 3, [6, 14], Conv2d::new(3, 3).stride_hw(2, 3).dilation_hw(1, 2).pad(3)),
        named(2, 2, 17, 3, [5, 8], Conv2d::new(3, 3).stride(2).pad(1).groups(2)),
        named(1, 1, 2, 2, [4, 5], Conv2d::new(2, 5).stride_hw(1, 3).padding(Padding::new(0, 4, 1, 0))),
    ];
    for c in cases {
        for v in c.variants() {
            check_case_with(&v, &[BackwardAlgorithm::Gemm]).unwrap();
            adjoint(&v).unwrap();
        }
    }
    // The workspace holds the column tile plus one split row: 4 phases of
    // (11 - 1) / 4 + ow elements.
    let g = named(1, 1, 3, 2, [23, 27], Conv2d::new(11, 11).stride(4)).geometry();
    let (oh, ow) = (g.output().h, g.output().w);
    assert_eq!((oh, ow), (4, 5));
    let want = 3 * 121 * oh * ow + 4 * (2 + ow);
    assert_eq!(conv2d_backward_data_workspace_len(&g, BackwardAlgorithm::Gemm, Layout::Nchw), Ok(want));
    assert_eq!(
        conv2d_backward_filter_workspace_len(&g, BackwardAlgorithm::Gemm, Layout::Nhwc),
        Ok(want + 2 * 3 * 121)
    );
    // Stride over the reach: no split row.
    let g = named(1, 1, 2, 3, [10, 10], Conv2d::new(2, 2).stride(3)).geometry();
    let plain = 2 * 4 * g.output().h * g.output().w;
    assert_eq!(conv2d_backward_data_workspace_len(&g, BackwardAlgorithm::Gemm, Layout::Nchw), Ok(plain));
    // Several tiles (one output row each), split rows in every tile.
    let c = named(1, 1, 64, 1, [3, 1851], Conv2d::new(3, 3).stride_hw(1, 2).pad(1));
    for v in [c.clone(), Case { filter: 3, padded_act: true, ..c }] {
        check_case_with(&v, &[BackwardAlgorithm::Gemm]).unwrap();
    }
}

/// `dW` through the GEMM path staged column-major (OIHW-like filter strides, 1x1 in both
/// layouts, NCHW columns) and not (HWIO strides, one output channel): groups, N > 1,
/// strides, channel counts not multiple of 16, per-tap GEMMs (odd filter order).
#[test]
fn staged_filter_gradient() {
    let cases = [
        named(2, 3, 17, 5, [4, 6], Conv2d::new(1, 1).groups(3)),
        named(3, 1, 5, 1, [3, 3], Conv2d::new(1, 1).stride(2)),
        named(1, 2, 3, 18, [2, 9], Conv2d::new(1, 1).stride_hw(1, 3).groups(2)),
        named(2, 2, 3, 17, [5, 6], Conv2d::new(2, 3).stride(2).padding(Padding::new(1, 0, 0, 2)).groups(2)),
        named(1, 1, 1, 2, [3, 4], Conv2d::new(3, 3).dilation(2).pad(2)),
    ];
    for c in cases {
        for v in c.variants() {
            check_case_with(&v, &[BackwardAlgorithm::Gemm]).unwrap();
        }
    }
}

/// The GEMM path with two threads (rayon): same answers under the same bound.
#[test]
fn two_threads() {
    simdconv_tests::setup();
    let exec = Exec::new().with_threads(2).unwrap();
    for (layout, c) in [
        (Layout::Nchw, named(1, 1, 48, 48, [16, 16], Conv2d::new(3, 3).pad(1))),
        (Layout::Nhwc, named(1, 2, 24, 32, [16, 18], Conv2d::new(3, 3).stride(2).pad(1).groups(2))),
        (Layout::Nchw, named(1, 1, 96, 64, [16, 16], Conv2d::new(1, 1))),
    ] {
        let f = Fixture::new(&c, layout);
        let g = &f.g;
        let (dx_want, dx_mag) = f.want_dx();
        let (dw_want, dw_mag) = f.want_dw();
        let dx_terms = g.filter().o / g.groups() * g.filter().kh * g.filter().kw;
        let dw_terms = g.output().n * g.output().h * g.output().w;
        let dx = f.got_dx(&exec, BackwardAlgorithm::Gemm).unwrap();
        check_close(&dx, &dx_want, &dx_mag, dx_terms).unwrap();
        let dw = f.got_dw(&exec, BackwardAlgorithm::Gemm).unwrap();
        check_close(&dw, &dw_want, &dw_mag, dw_terms).unwrap();
    }
}

fn tnamed(groups: usize, cg: usize, og: usize, hw: [usize; 2], conv: Conv2d, op: [usize; 2]) -> TCase {
    let win = conv.window();
    TCase {
        n: 2,
        groups,
        cg,
        og,
        hw,
        k: win.kernel(),
        s: win.stride(),
        d: win.dilation(),
        pad: win.padding(),
        op,
        bias: true,
        padded_act: false,
        filter: 0,
        seed: 3,
    }
}

fn check_tnamed(t: TCase) {
    for filter in 0..4 {
        for padded_act in [false, true] {
            for bias in [false, true] {
                let v = TCase { filter, padded_act, bias, ..t.clone() };
                if let Err(e) = check_transpose(&v) {
                    panic!("{e}");
                }
            }
        }
    }
}

#[test]
fn transpose_groups_and_output_padding() {
    // Groups 2, stride 2, output padding 1: the case libraries got wrong.
    let t = tnamed(2, 3, 2, [4, 3], Conv2d::new(3, 3).stride(2).pad(1).groups(2), [1, 1]);
    let tg = t.geometry().unwrap();
    assert_eq!(tg.output(), Dims::new(2, 4, 8, 6));
    assert_eq!(tg.filter(), FilterDims::new(6, 2, 3, 3));
    check_tnamed(t);
}

#[test]
fn transpose_stride_and_dilation_differ_per_axis() {
    // Output padding 1 allowed on the width by dilation 2 (stride 1 there).
    let t = tnamed(1, 2, 3, [3, 4], Conv2d::new(2, 3).stride_hw(2, 1).dilation_hw(1, 2), [1, 1]);
    let tg = t.geometry().unwrap();
    // h: (3-1)*2 + 1*(2-1) + 1 + 1 = 7; w: (4-1)*1 + 2*(3-1) + 1 + 1 = 9.
    assert_eq!((tg.output().h, tg.output().w), (7, 9));
    // No trailing pad absorbs the width's output padding and it is below the stride...
    assert!(tg.forward().is_none());
    check_tnamed(t);
}

#[test]
fn transpose_output_padding_inside_trailing_pad() {
    let t = tnamed(3, 2, 1, [5, 2], Conv2d::new(4, 2).stride(3).padding(Padding::new(2, 2, 0, 1)), [2, 1]);
    assert!(t.geometry().unwrap().forward().is_some());
    check_tnamed(t);
}

#[test]
fn transpose_geometry_errors() {
    let d = Dims::new(1, 4, 5, 5);
    let bad = ConvTransposeGeometry::new(d, 4, Conv2d::new(3, 3).stride(2), [2, 0]);
    assert_eq!(bad.unwrap_err(), Error::InvalidParameter { name: Param::OutputPadding });
    let bad = ConvTransposeGeometry::new(d, 4, Conv2d::new(3, 3).dilation(3), [0, 1]);
    assert!(bad.is_ok());
    let bad = ConvTransposeGeometry::new(d, 4, Conv2d::new(3, 3), [0, 1]);
    assert_eq!(bad.unwrap_err(), Error::InvalidParameter { name: Param::OutputPadding });
    let bad = ConvTransposeGeometry::new(d, 3, Conv2d::new(3, 3).groups(2), [0, 0]);
    assert!(matches!(bad, Err(Error::GroupsMismatch { .. })));
    // (1 - 1) * 1 + 1 = 1 output row minus 1 + 0 padding: nothing left.
    let bad = ConvTransposeGeometry::new(Dims::new(1, 1, 1, 1), 1, Conv2d::new(1, 1).pad(1), [0, 0]);
    assert!(matches!(bad, Err(Error::Zero { .. })));
    let bad = ConvTransposeGeometry::new(
        Dims::new(1, 1, usize::MAX / 2, 1),
        1,
        Conv2d::new(1, 1).stride(4),
        [0, 0],
    );
    assert!(matches!(bad, Err(Error::Overflow { .. })));
}

#[test]
fn argument_errors() {
    simdconv_tests::setup();
    let exec = Exec::new();
    let g = ConvGeometry::new(Dims::new(1, 2, 6, 6), 3, Conv2d::new(3, 3)).unwrap();
    let algo = BackwardAlgorithm::Gemm;
    let x = vec![0.0f32; g.input().count().unwrap()];
    let w = vec![0.0f32; g.filter().count().unwrap()];
    let dy = vec![0.0f32; g.output().count().unwrap()];
    let mut dx = vec![0.0f32; x.len()];
    let need = conv2d_backward_data_workspace_len(&g, algo, Layout::Nchw).unwrap();
    assert!(need > 0);
    let mut ws = vec![0.0f32; need - 1];
    let wv = FilterView::new(&w, g.filter(), simdconv::FilterLayout::Oihw).unwrap();
    let e = conv2d_backward_data(
        &exec,
        &g,
        algo,
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        wv,
        TensorViewMut::new(&mut dx, g.input(), Layout::Nchw).unwrap(),
        &mut ws,
    );
    assert_eq!(e, Err(Error::WorkspaceTooSmall { needed: need, actual: need - 1 }));
    let e = conv2d_backward_data(
        &exec,
        &g,
        BackwardAlgorithm::Direct,
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        wv,
        TensorViewMut::new(&mut dx, g.input(), Layout::Nhwc).unwrap(),
        &mut [],
    );
    assert_eq!(e, Err(Error::Unsupported(Unsupported::MixedLayouts)));
    let e = conv2d_backward_data(
        &exec,
        &g,
        BackwardAlgorithm::Direct,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        wv,
        TensorViewMut::new(&mut dx, g.input(), Layout::Nchw).unwrap(),
        &mut [],
    );
    assert!(matches!(e, Err(Error::ShapeMismatch { operand: Operand::OutputGrad, .. })));
    let mut dw = vec![0.0f32; w.len()];
    let e = conv2d_backward_filter(
        &exec,
        &g,
        BackwardAlgorithm::Direct,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        FilterViewMut::new(&mut dw, FilterDims::new(3, 2, 3, 2), simdconv::FilterLayout::Oihw).unwrap(),
        &mut [],
    );
    assert!(matches!(e, Err(Error::ShapeMismatch { operand: Operand::FilterGrad, .. })));
    let mut db = vec![0.0f32; 2];
    let e = conv2d_backward_bias(&exec, TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(), &mut db);
    assert_eq!(e, Err(Error::LengthMismatch { operand: Operand::BiasGrad, expected: 3, actual: 2 }));
    // Neither inner dimension contiguous.
    let big = vec![0.0f32; 4 * dy.len()];
    let strided = TensorView::with_strides(&big, g.output(), [4 * 48, 2 * 16, 2 * 4 * 2, 2]).unwrap();
    let e = conv2d_backward_bias(&exec, strided, &mut [0.0; 3]);
    assert_eq!(e, Err(Error::Unsupported(Unsupported::NonContiguous(Operand::OutputGrad))));
    // Direct needs no workspace at all.
    assert_eq!(conv2d_backward_data_workspace_len(&g, BackwardAlgorithm::Direct, Layout::Nhwc), Ok(0));
    assert_eq!(conv2d_backward_filter_workspace_len(&g, BackwardAlgorithm::Direct, Layout::Nhwc), Ok(0));
}

/// Flipped dX whose forward geometry runs Winograd (at least 16 channels per group each
/// way and 48 tiles): the filter is transformed straight from the original bank, flipped
/// and in/out-swapped on the fly. Held to the bound documented on `conv2d_winograd`,
/// `gamma(C_g + 32) * 48^2 * sum_c max|w_c| max|dy_c|`, here with `|w|, |dy| <= 1` and
/// `C_g` the original filters per group; a wrong flip or swap is off by whole products.
#[test]
fn flipped_through_winograd() {
    use simdconv::{select_algorithm, Algorithm, FilterLayout};
    let cases = [
        (1, 1, 16, 16, [28, 28], Conv2d::new(3, 3).pad(1)),
        (2, 2, 16, 17, [32, 30], Conv2d::new(3, 3).dilation(2).padding(Padding::new(2, 1, 2, 3))),
    ];
    for (n, groups, cg, og, [h, w], conv) in cases {
        let g = ConvGeometry::new(Dims::new(n, groups * cg, h, w), groups * og, conv).unwrap();
        let mut rng = Rng::new(0x5eed + og as u64);
        let dy = rng.vec(g.output().count().unwrap());
        let wt = rng.vec(g.filter().count().unwrap());
        for layout in LAYOUTS {
            assert_eq!(
                select_backward_data_algorithm(&g, BackwardAlgorithm::Auto, layout),
                Ok(BackwardAlgorithm::Flipped)
            );
            // The flipped forward geometry (input dY, output dX) runs Winograd.
            let fg = ConvGeometry::new(
                g.output(),
                g.input().c,
                Conv2d::new(3, 3)
                    .dilation_hw(conv.window().dilation()[0], conv.window().dilation()[1])
                    .padding({
                        let [dh, dw] = conv.window().dilation();
                        let p = conv.window().padding();
                        Padding::new(
                            2 * dh - p.top,
                            h + p.top - g.output().h,
                            2 * dw - p.left,
                            w + p.left - g.output().w,
                        )
                    })
                    .groups(groups),
            )
            .unwrap();
            assert_eq!(fg.output(), g.input());
            assert_eq!(select_algorithm(&fg, layout), Algorithm::Winograd);
            let dyv = TensorView::new(&dy, g.output(), layout).unwrap();
            let wv = FilterView::new(&wt, g.filter(), FilterLayout::Oihw).unwrap();
            let mut want = vec![0.0f64; g.input().count().unwrap()];
            let dy64: Vec<f64> = dy.iter().map(|&v| f64::from(v)).collect();
            let w64: Vec<f64> = wt.iter().map(|&v| f64::from(v)).collect();
            r::conv2d_backward_data(
                &g,
                TensorView::new(&dy64, g.output(), layout).unwrap(),
                FilterView::new(&w64, g.filter(), FilterLayout::Oihw).unwrap(),
                TensorViewMut::new(&mut want, g.input(), layout).unwrap(),
            )
            .unwrap();
            let bound = gamma(og + 32) * 48.0 * 48.0 * og as f64;
            for isa in isas() {
                let exec = Exec::new().with_isa(isa).unwrap();
                let algo = BackwardAlgorithm::Flipped;
                let mut ws = vec![0.0f32; conv2d_backward_data_workspace_len(&g, algo, layout).unwrap()];
                let mut dx = vec![f32::NAN; g.input().count().unwrap()];
                conv2d_backward_data(
                    &exec,
                    &g,
                    algo,
                    dyv,
                    wv,
                    TensorViewMut::new(&mut dx, g.input(), layout).unwrap(),
                    &mut ws,
                )
                .unwrap();
                for (i, (&got, &want)) in dx.iter().zip(&want).enumerate() {
                    let err = (f64::from(got) - want).abs();
                    assert!(
                        err <= bound,
                        "{isa} {layout:?} {g:?} dx[{i}] = {got}, want {want}, bound {bound}"
                    );
                }
            }
        }
    }
}
