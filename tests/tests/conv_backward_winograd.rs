//! The Winograd F(3x3, 4x4) weight gradient (`BackwardAlgorithm::Winograd`) against the f64
//! reference, on every ISA x both layouts, under its documented rounding bound
//! `gamma(T + 32) * (160/3)^2 * sum_n (sum |dy[n, k]|) * max |x[n, c]|`; its errors and the
//! `Auto` rule.

use proptest::prelude::*;
use simdconv::reference as r;
use simdconv::{
    conv2d_backward_data, conv2d_backward_data_workspace_len, conv2d_backward_filter,
    conv2d_backward_filter_workspace_len, dispatch_count, select_backward_filter_algorithm,
    BackwardAlgorithm, Conv2d, ConvGeometry, Dims, Error, Exec, FilterDims, FilterLayout, FilterView,
    FilterViewMut, Layout, Padding, TensorView, TensorViewMut, Unsupported,
};
use simdconv_tests::{
    act_strides, gamma, gapped_filter_strides, isas, proptest_cases, span, winograd_tiles, Rng,
};

const LAYOUTS: [Layout; 2] = [Layout::Nchw, Layout::Nhwc];
const SENTINEL: f32 = 1234.5;
const W: BackwardAlgorithm = BackwardAlgorithm::Winograd;

#[derive(Clone, Debug)]
struct Case {
    n: usize,
    groups: usize,
    cg: usize,
    og: usize,
    /// Extra input rows / columns beyond the smallest the window allows.
    extra: [usize; 2],
    d: [usize; 2],
    /// top, bottom, left, right
    pad: [usize; 4],
    /// Gaps between rows / pixels / images of the activations, odd filter strides.
    strided: bool,
    seed: u64,
}

impl Case {
    fn geometry(&self) -> ConvGeometry {
        let eff = |i: usize| 2 * self.d[i] + 1;
        let h = eff(0).saturating_sub(self.pad[0] + self.pad[1]).max(1) + self.extra[0];
        let w = eff(1).saturating_sub(self.pad[2] + self.pad[3]).max(1) + self.extra[1];
        let conv = Conv2d::new(3, 3)
            .dilation_hw(self.d[0], self.d[1])
            .padding(Padding::new(self.pad[0], self.pad[1], self.pad[2], self.pad[3]))
            .groups(self.groups);
        ConvGeometry::new(Dims::new(self.n, self.cg * self.groups, h, w), self.og * self.groups, conv)
            .unwrap()
    }
}

fn channels() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1usize..=5, 1 => Just(17usize), 1 => Just(16usize)]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=3, channels(), channels()),
        ([0usize..=6, 0usize..=6], [1usize..=3, 1usize..=3]),
        ([0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3], any::<bool>(), any::<u64>()),
    )
        .prop_map(|((n, groups, cg, og), (extra, d), (pad, strided, seed))| Case {
            n,
            groups,
            cg,
            og,
            extra,
            d,
            pad,
            strided,
            seed,
        })
}

/// OIHW, or an odd order with gaps (kh, o, kw, i).
fn filter_strides(f: FilterDims, strided: bool) -> [usize; 4] {
    if strided {
        gapped_filter_strides(f)
    } else {
        FilterLayout::Oihw.strides(f)
    }
}

struct Fixture {
    g: ConvGeometry,
    x: Vec<f32>,
    xs: [usize; 4],
    dy: Vec<f32>,
    ys: [usize; 4],
    ws: [usize; 4],
}

impl Fixture {
    fn new(c: &Case, layout: Layout) -> Fixture {
        let g = c.geometry();
        let mut rng = Rng::new(c.seed);
        let xs = act_strides(g.input(), layout, c.strided);
        let ys = act_strides(g.output(), layout, c.strided);
        let x = rng.vec(span(g.input().to_array(), xs));
        let dy = rng.vec(span(g.output().to_array(), ys));
        Fixture { g, x, xs, dy, ys, ws: filter_strides(g.filter(), c.strided) }
    }

    fn x(&self) -> TensorView<'_, f32> {
        TensorView::with_strides(&self.x, self.g.input(), self.xs).unwrap()
    }
    fn dy(&self) -> TensorView<'_, f32> {
        TensorView::with_strides(&self.dy, self.g.output(), self.ys).unwrap()
    }

    /// The dW elements in OIHW order, or an error if anything outside the view was written.
    fn run(&self, exec: &Exec, algo: BackwardAlgorithm) -> Result<Vec<f32>, String> {
        let f = self.g.filter();
        let mut dw = vec![SENTINEL; span(f.to_array(), self.ws)];
        let need =
            conv2d_backward_filter_workspace_len(&self.g, algo, Layout::Nchw).map_err(|e| e.to_string())?;
        let mut work = vec![f32::NAN; need];
        let view = FilterViewMut::with_strides(&mut dw, f, self.ws).unwrap();
        conv2d_backward_filter(exec, &self.g, algo, self.x(), self.dy(), view, &mut work)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut inside = vec![false; dw.len()];
        for o in 0..f.o {
            for i in 0..f.i {
                for kh in 0..3 {
                    for kw in 0..3 {
                        let off = o * self.ws[0] + i * self.ws[1] + kh * self.ws[2] + kw * self.ws[3];
                        inside[off] = true;
                        out.push(dw[off]);
                    }
                }
            }
        }
        if let Some(i) = (0..dw.len()).find(|&i| !inside[i] && dw[i].to_bits() != SENTINEL.to_bits()) {
            return Err(format!("offset {i} outside the view was written"));
        }
        Ok(out)
    }

    /// The f64 reference in OIHW order and the per-element bound of the module docs.
    fn want(&self) -> (Vec<f64>, Vec<f64>) {
        let g = &self.g;
        let f = g.filter();
        let x64: Vec<f64> = self.x.iter().map(|&v| f64::from(v)).collect();
        let dy64: Vec<f64> = self.dy.iter().map(|&v| f64::from(v)).collect();
        let mut want = vec![0.0; f.count().unwrap()];
        r::conv2d_backward_filter(
            g,
            TensorView::with_strides(&x64, g.input(), self.xs).unwrap(),
            TensorView::with_strides(&dy64, g.output(), self.ys).unwrap(),
            FilterViewMut::new(&mut want, f, FilterLayout::Oihw).unwrap(),
        )
        .unwrap();
        let (i, o) = (g.input(), g.output());
        let kg = o.c / g.groups();
        let scale = gamma(winograd_tiles(g) + 32) * (160.0f64 / 3.0).powi(2);
        let mut bound = Vec::with_capacity(want.len());
        for k in 0..o.c {
            for c in 0..f.i {
                let ci = k / kg * f.i + c;
                let mut m = 0.0;
                for n in 0..o.n {
                    let l1: f64 = (0..o.h)
                        .flat_map(|y| (0..o.w).map(move |xx| (y, xx)))
                        .map(|(y, xx)| {
                            f64::from(
                                self.dy[n * self.ys[0] + k * self.ys[1] + y * self.ys[2] + xx * self.ys[3]],
                            )
                            .abs()
                        })
                        .sum();
                    let mx = (0..i.h)
                        .flat_map(|y| (0..i.w).map(move |xx| (y, xx)))
                        .map(|(y, xx)| {
                            f64::from(
                                self.x[n * self.xs[0] + ci * self.xs[1] + y * self.xs[2] + xx * self.xs[3]],
                            )
                            .abs()
                        })
                        .fold(0.0, f64::max);
                    m += l1 * mx;
                }
                bound.extend(std::iter::repeat_n(scale * m + 1e-30, 9));
            }
        }
        (want, bound)
    }
}

fn check(c: &Case) -> Result<(), String> {
    for layout in LAYOUTS {
        let f = Fixture::new(c, layout);
        let (want, bound) = f.want();
        for isa in isas() {
            let exec = Exec::new().with_isa(isa).unwrap();
            let ctx = || format!("{isa} {layout:?} {:?}", f.g);
            let before = dispatch_count(isa);
            let got = f.run(&exec, W).map_err(|e| format!("{}: {e}", ctx()))?;
            if dispatch_count(isa) <= before {
                return Err(format!("{}: no kernel ran", ctx()));
            }
            for (e, ((&a, &b), &m)) in got.iter().zip(&want).zip(&bound).enumerate() {
                let err = (f64::from(a) - b).abs();
                if err.is_nan() || err > m {
                    return Err(format!(
                        "{}: element {e}: got {a}, want {b}, |err| {err:e} > bound {m:e}",
                        ctx()
                    ));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(48)))]

    #[test]
    fn winograd_filter_gradient_matches_reference(c in case()) {
        check(&c).map_err(TestCaseError::fail)?;
    }
}

fn named(n: usize, groups: usize, cg: usize, og: usize, extra: [usize; 2], d: [usize; 2], pad: [usize; 4]) {
    for strided in [false, true] {
        let c = Case { n, groups, cg, og, extra, d, pad, strided, seed: 7 };
        check(&c).unwrap();
    }
}

#[test]
fn one_by_one_output_plane() {
    // 3x3 input, no padding: one output, a tile of one dY element.
    named(1, 1, 3, 2, [0, 0], [1, 1], [0, 0, 0, 0]);
}

#[test]
fn planes_not_multiple_of_four_asymmetric_padding() {
    named(2, 1, 17, 5, [6, 3], [1, 1], [2, 0, 1, 3]);
}

#[test]
fn dilation_mixed_and_groups() {
    named(3, 3, 2, 17, [5, 6], [3, 2], [1, 3, 0, 2]);
}

#[test]
fn many_tiles_and_wide_channels() {
    // 40 input and 33 output channels: several vectors and a remainder of output channels
    // past the 6-row register block; planes of 30x29.
    named(2, 1, 40, 33, [27, 26], [1, 1], [1, 1, 1, 1]);
}

#[test]
fn errors() {
    let exec = Exec::new();
    let s2 = ConvGeometry::new(Dims::new(1, 4, 9, 9), 4, Conv2d::new(3, 3).pad(1).stride(2)).unwrap();
    let k5 = ConvGeometry::new(Dims::new(1, 4, 9, 9), 4, Conv2d::new(5, 5).pad(2)).unwrap();
    for g in [s2, k5] {
        let want = Error::Unsupported(Unsupported::WinogradNeeds3x3Stride1);
        assert_eq!(conv2d_backward_filter_workspace_len(&g, W, Layout::Nchw), Err(want));
        assert_eq!(select_backward_filter_algorithm(&g, W, Layout::Nhwc), Err(want));
        let x = vec![0.0f32; g.input().count().unwrap()];
        let dy = vec![0.0f32; g.output().count().unwrap()];
        let mut dw = vec![0.0f32; g.filter().count().unwrap()];
        let r = conv2d_backward_filter(
            &exec,
            &g,
            W,
            TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
            TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
            FilterViewMut::new(&mut dw, g.filter(), FilterLayout::Oihw).unwrap(),
            &mut [],
        );
        assert_eq!(r, Err(want));
    }
    // Data gradients: not this algorithm's job.
    let g = ConvGeometry::new(Dims::new(1, 4, 9, 9), 4, Conv2d::new(3, 3).pad(1)).unwrap();
    let only = Error::Unsupported(Unsupported::WinogradFilterGradientOnly);
    assert_eq!(conv2d_backward_data_workspace_len(&g, W, Layout::Nchw), Err(only));
    let dy = vec![0.0f32; g.output().count().unwrap()];
    let w = vec![0.0f32; g.filter().count().unwrap()];
    let mut dx = vec![0.0f32; g.input().count().unwrap()];
    let r = conv2d_backward_data(
        &exec,
        &g,
        W,
        TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
        FilterView::new(&w, g.filter(), FilterLayout::Oihw).unwrap(),
        TensorViewMut::new(&mut dx, g.input(), Layout::Nchw).unwrap(),
        &mut [],
    );
    assert_eq!(r, Err(only));
    // A workspace one float short.
    {
        let need = conv2d_backward_filter_workspace_len(&g, W, Layout::Nchw).unwrap();
        let x = vec![0.0f32; g.input().count().unwrap()];
        let mut dw = vec![0.0f32; g.filter().count().unwrap()];
        let mut work = vec![0.0f32; need - 1];
        let r = conv2d_backward_filter(
            &exec,
            &g,
            W,
            TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
            TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
            FilterViewMut::new(&mut dw, g.filter(), FilterLayout::Oihw).unwrap(),
            &mut work,
        );
        assert_eq!(r, Err(Error::WorkspaceTooSmall { needed: need, actual: need - 1 }));
    }
}

/// `Auto` takes Winograd where the forward's `Auto` does (and the result is Winograd's).
#[test]
fn auto_rule() {
    let big = Case {
        n: 1,
        groups: 1,
        cg: 16,
        og: 16,
        extra: [28, 28],
        d: [1, 1],
        pad: [1, 1, 1, 1],
        strided: false,
        seed: 3,
    };
    let small = Case { cg: 8, ..big.clone() };
    for layout in LAYOUTS {
        let auto = |c: &Case| {
            select_backward_filter_algorithm(&c.geometry(), BackwardAlgorithm::Auto, layout).unwrap()
        };
        // The tests build the core with `std`.
        let (want_big, want_small) = (BackwardAlgorithm::Winograd, BackwardAlgorithm::Gemm);
        assert_eq!(auto(&big), want_big);
        assert_eq!(auto(&small), want_small);
        let f = Fixture::new(&big, layout);
        let exec = Exec::new();
        assert_eq!(f.run(&exec, BackwardAlgorithm::Auto).unwrap(), f.run(&exec, want_big).unwrap());
    }
}
