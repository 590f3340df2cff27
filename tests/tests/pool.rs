//! Pooling kernels against the f64 reference: every kernel x every ISA x both layouts,
//! with strided views, padding, dilation, ceil windows and special values.

use proptest::prelude::*;
use simdconv::reference as r;
use simdconv::{
    AvgPoolOptions, Conv2d, ConvGeometry, Dims, Error, Exec, FilterLayout, FilterView, Isa, Layout, Operand,
    Padding, Pool2d, PoolGeometry, Rounding, TensorView, TensorViewMut, Unsupported,
};
use simdconv_tests::{check_close, isas, Rng};

const LAYOUTS: [Layout; 2] = [Layout::Nchw, Layout::Nhwc];

/// Strides for `d` in `layout` with `extra` unused elements after each inner run.
fn strides(layout: Layout, d: Dims, extra: usize) -> [usize; 4] {
    match layout {
        Layout::Nchw => {
            let sh = d.w + extra;
            [d.c * d.h * sh, d.h * sh, sh, 1]
        }
        Layout::Nhwc => {
            let sw = d.c + extra;
            [d.h * d.w * sw, 1, d.w * sw, sw]
        }
    }
}

fn span(d: Dims, s: [usize; 4]) -> usize {
    (d.n - 1) * s[0] + (d.c - 1) * s[1] + (d.h - 1) * s[2] + (d.w - 1) * s[3] + 1
}

/// Places logical NCHW values into a strided buffer; the gaps hold NaN so that a kernel
/// reading them would show.
fn place<T: Copy>(v: &[T], d: Dims, s: [usize; 4], gap: T) -> Vec<T> {
    let mut buf = vec![gap; span(d, s)];
    let mut i = 0;
    for n in 0..d.n {
        for c in 0..d.c {
            for h in 0..d.h {
                for w in 0..d.w {
                    buf[n * s[0] + c * s[1] + h * s[2] + w * s[3]] = v[i];
                    i += 1;
                }
            }
        }
    }
    buf
}

fn gather<T: Copy>(buf: &[T], d: Dims, s: [usize; 4]) -> Vec<T> {
    let mut v = Vec::with_capacity(d.count().unwrap());
    for n in 0..d.n {
        for c in 0..d.c {
            for h in 0..d.h {
                for w in 0..d.w {
                    v.push(buf[n * s[0] + c * s[1] + h * s[2] + w * s[3]]);
                }
            }
        }
    }
    v
}

/// A tensor of `d` in `layout` (with `extra` padding per inner run) and its strides.
struct Buf<T> {
    data: Vec<T>,
    d: Dims,
    s: [usize; 4],
}

impl<T: Copy> Buf<T> {
    fn new(v: &[T], d: Dims, layout: Layout, extra: usize, gap: T) -> Self {
        let s = strides(layout, d, extra);
        Buf { data: place(v, d, s, gap), d, s }
    }
    fn view(&self) -> TensorView<'_, T> {
        TensorView::with_strides(&self.data, self.d, self.s).unwrap()
    }
    fn view_mut(&mut self) -> TensorViewMut<'_, T> {
        TensorViewMut::with_strides(&mut self.data, self.d, self.s).unwrap()
    }
    fn values(&self) -> Vec<T> {
        gather(&self.data, self.d, self.s)
    }
}

impl Buf<f32> {
    /// The values, after checking that every float of the buffer outside the tensor (the
    /// gaps, NaN from [`Buf::new`]) still holds that NaN: the kernel wrote nowhere else.
    fn out(&self) -> Result<Vec<f32>, String> {
        let mut inside = vec![false; self.data.len()];
        let (d, s) = (self.d, self.s);
        for n in 0..d.n {
            for c in 0..d.c {
                for h in 0..d.h {
                    for w in 0..d.w {
                        inside[n * s[0] + c * s[1] + h * s[2] + w * s[3]] = true;
                    }
                }
            }
        }
        let gap = f32::NAN.to_bits();
        match (0..self.data.len()).find(|&i| !inside[i] && self.data[i].to_bits() != gap) {
            Some(i) => Err(format!("wrote {} into the gap at offset {i}", self.data[i])),
            None => Ok(self.values()),
        }
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn abs64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x).abs()).collect()
}

fn nchw<T>(v: &[T], d: Dims) -> TensorView<'_, T> {
    TensorView::new(v, d, Layout::Nchw).unwrap()
}

fn nchw_mut<T>(v: &mut [T], d: Dims) -> TensorViewMut<'_, T> {
    TensorViewMut::new(v, d, Layout::Nchw).unwrap()
}

/// Equal numbers (infinities included) pass; NaN must meet NaN; the rest must meet
/// `check_close`'s bound.
fn close(got: &[f32], want: &[f64], mag: &[f64], terms: usize) -> Result<(), String> {
    let mut g = Vec::new();
    let mut w = Vec::new();
    let mut m = Vec::new();
    for i in 0..got.len() {
        if f64::from(got[i]) == want[i] || (got[i].is_nan() && want[i].is_nan()) {
            continue;
        }
        if got[i].is_nan() != want[i].is_nan() {
            return Err(format!("element {i}: got {}, want {}", got[i], want[i]));
        }
        g.push(got[i]);
        w.push(want[i]);
        m.push(mag[i]);
    }
    check_close(&g, &w, &m, terms)
}

/// Max results must be equal (NaN meets NaN).
fn exact(got: &[f32], want: &[f64]) -> Result<(), String> {
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        if !(f64::from(a) == b || (a.is_nan() && b.is_nan())) {
            return Err(format!("element {i}: got {a}, want {b}"));
        }
    }
    Ok(())
}

/// Test data: `mode` 0 uniform, 1 small integers (ties, zero windows), 2 all negative,
/// 3 with +-inf and NaN sprinkled in.
fn data(rng: &mut Rng, n: usize, mode: u8) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u = rng.uniform();
            match mode {
                0 => u,
                1 => (u * 2.5).round(),
                2 => -1.0 - u.abs() * 100.0,
                _ => match rng.next_u64() % 16 {
                    0 => f32::INFINITY,
                    1 => f32::NEG_INFINITY,
                    2 => f32::NAN,
                    3 => -0.0,
                    _ => u,
                },
            }
        })
        .collect()
}

#[derive(Clone, Debug)]
struct Case {
    g: PoolGeometry,
    seed: u64,
    mode: u8,
    extra: usize,
    /// Threads of the kernels' `Exec`.
    threads: usize,
}

fn geometry() -> impl Strategy<Value = PoolGeometry> {
    (
        (1usize..=2, prop_oneof![3 => 1usize..=20, 1 => 60usize..=68], 1usize..=7, 1usize..=40),
        (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3, 1usize..=3, 1usize..=3),
        (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2, prop::bool::ANY),
    )
        .prop_filter_map(
            "invalid pooling geometry",
            |((n, c, h, w), (kh, kw, sh, sw, dh, dw), (t, b, l, rr, ceil))| {
                let pool = Pool2d::new(kh, kw)
                    .stride_hw(sh, sw)
                    .dilation_hw(dh, dw)
                    .padding(Padding::new(t, b, l, rr))
                    .rounding(if ceil { Rounding::Ceil } else { Rounding::Floor });
                PoolGeometry::new(Dims::new(n, c, h, w), pool).ok()
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (geometry(), any::<u64>(), 0u8..4, prop_oneof![3 => Just(0usize), 1 => 1usize..=3])
        .prop_map(|(g, seed, mode, extra)| Case { g, seed, mode, extra, threads: 1 })
}

fn exec(isa: Isa) -> Exec {
    Exec::new().with_isa(isa).unwrap()
}

fn exec_threads(isa: Isa, threads: usize) -> Exec {
    exec(isa).with_threads(threads).unwrap()
}

fn taps(g: &PoolGeometry) -> usize {
    let [kh, kw] = g.window().kernel();
    kh * kw
}

fn check_max(c: &Case) -> Result<(), String> {
    let (gi, go) = (c.g.input(), c.g.output());
    let mut rng = Rng::new(c.seed);
    let x = data(&mut rng, gi.count().unwrap(), c.mode);
    let x64 = f64s(&x);
    let mut y64 = vec![0.0; go.count().unwrap()];
    let mut i64s = vec![0usize; go.count().unwrap()];
    r::max_pool2d(&c.g, nchw(&x64, gi), nchw_mut(&mut y64, go), Some(nchw_mut(&mut i64s, go))).unwrap();
    let dy = data(&mut rng, go.count().unwrap(), 0);
    let mut dx64 = vec![0.0; gi.count().unwrap()];
    r::max_pool2d_backward(&c.g, nchw(&f64s(&dy), go), nchw(&i64s, go), nchw_mut(&mut dx64, gi)).unwrap();
    let mut mag = vec![0.0; gi.count().unwrap()];
    r::max_pool2d_backward(&c.g, nchw(&abs64(&dy), go), nchw(&i64s, go), nchw_mut(&mut mag, gi)).unwrap();
    for isa in isas() {
        let e = exec_threads(isa, c.threads);
        for layout in LAYOUTS {
            let tag = |what: &str, m: String| format!("{what} {isa} {layout:?} x{}: {m}", c.threads);
            let xb = Buf::new(&x, gi, layout, c.extra, f32::NAN);
            // Values only.
            let mut yb = Buf::new(&vec![0.0f32; go.count().unwrap()], go, layout, c.extra, f32::NAN);
            let before = simdconv::dispatch_count(isa);
            simdconv::max_pool2d(&e, &c.g, xb.view(), yb.view_mut(), None).map_err(|e| e.to_string())?;
            if simdconv::dispatch_count(isa) == before {
                return Err(tag("max", "did not dispatch".into()));
            }
            exact(&yb.out().map_err(|m| tag("max", m))?, &y64).map_err(|m| tag("max", m))?;
            // With indices (strided differently from y on purpose).
            let mut yb = Buf::new(&vec![0.0f32; go.count().unwrap()], go, layout, c.extra, f32::NAN);
            let mut ib = Buf::new(&vec![usize::MAX; go.count().unwrap()], go, Layout::Nchw, 1, usize::MAX);
            simdconv::max_pool2d(&e, &c.g, xb.view(), yb.view_mut(), Some(ib.view_mut()))
                .map_err(|e| e.to_string())?;
            exact(&yb.out().map_err(|m| tag("max+idx", m))?, &y64).map_err(|m| tag("max+idx", m))?;
            if let Some(i) = ib.values().iter().zip(&i64s).position(|(a, b)| a != b) {
                return Err(tag("indices", format!("element {i}: got {}, want {}", ib.values()[i], i64s[i])));
            }
            // Backward from the switches, and recomputed from x.
            let dyb = Buf::new(&dy, go, layout, c.extra, f32::NAN);
            let mut dxb = Buf::new(&vec![f32::NAN; gi.count().unwrap()], gi, layout, c.extra, f32::NAN);
            simdconv::max_pool2d_backward(&e, &c.g, dyb.view(), ib.view(), dxb.view_mut())
                .map_err(|e| e.to_string())?;
            close(&dxb.values(), &dx64, &mag, taps(&c.g)).map_err(|m| tag("max backward", m))?;
            let mut dxb = Buf::new(&vec![f32::NAN; gi.count().unwrap()], gi, layout, c.extra, f32::NAN);
            simdconv::max_pool2d_backward_recompute(&e, &c.g, xb.view(), dyb.view(), dxb.view_mut())
                .map_err(|e| e.to_string())?;
            close(&dxb.values(), &dx64, &mag, taps(&c.g)).map_err(|m| tag("max backward recompute", m))?;
        }
    }
    Ok(())
}

fn avg_opts(seed: u64) -> AvgPoolOptions {
    match seed % 4 {
        0 => AvgPoolOptions::PYTORCH,
        1 => AvgPoolOptions::EXCLUDE_PAD,
        2 => AvgPoolOptions { count_include_pad: true, divisor: core::num::NonZeroUsize::new(3) },
        _ => AvgPoolOptions { count_include_pad: false, divisor: core::num::NonZeroUsize::new(1) },
    }
}

fn check_avg(c: &Case) -> Result<(), String> {
    let (gi, go) = (c.g.input(), c.g.output());
    let mut rng = Rng::new(c.seed);
    let opts = avg_opts(c.seed >> 7);
    let x = data(&mut rng, gi.count().unwrap(), c.mode);
    let mut y64 = vec![0.0; go.count().unwrap()];
    r::avg_pool2d(&c.g, nchw(&f64s(&x), gi), nchw_mut(&mut y64, go), opts).unwrap();
    let mut mag = vec![0.0; go.count().unwrap()];
    r::avg_pool2d(&c.g, nchw(&abs64(&x), gi), nchw_mut(&mut mag, go), opts).unwrap();
    let dy = data(&mut rng, go.count().unwrap(), 0);
    let mut dx64 = vec![0.0; gi.count().unwrap()];
    r::avg_pool2d_backward(&c.g, nchw(&f64s(&dy), go), nchw_mut(&mut dx64, gi), opts).unwrap();
    let mut dmag = vec![0.0; gi.count().unwrap()];
    r::avg_pool2d_backward(&c.g, nchw(&abs64(&dy), go), nchw_mut(&mut dmag, gi), opts).unwrap();
    for isa in isas() {
        let e = exec_threads(isa, c.threads);
        for layout in LAYOUTS {
            let tag = |what: &str, m: String| format!("{what} {isa} {layout:?} x{} {opts:?}: {m}", c.threads);
            let xb = Buf::new(&x, gi, layout, c.extra, f32::NAN);
            let mut yb = Buf::new(&vec![0.0f32; go.count().unwrap()], go, layout, c.extra, f32::NAN);
            simdconv::avg_pool2d(&e, &c.g, xb.view(), yb.view_mut(), opts).map_err(|e| e.to_string())?;
            close(&yb.out().map_err(|m| tag("avg", m))?, &y64, &mag, taps(&c.g))
                .map_err(|m| tag("avg", m))?;
            let dyb = Buf::new(&dy, go, layout, c.extra, f32::NAN);
            let mut dxb = Buf::new(&vec![f32::NAN; gi.count().unwrap()], gi, layout, c.extra, f32::NAN);
            simdconv::avg_pool2d_backward(&e, &c.g, dyb.view(), dxb.view_mut(), opts)
                .map_err(|e| e.to_string())?;
            close(&dxb.values(), &dx64, &dmag, taps(&c.g)).map_err(|m| tag("avg backward", m))?;
        }
    }
    Ok(())
}

fn check_l2(c: &Case) -> Result<(), String> {
    let (gi, go) = (c.g.input(), c.g.output());
    let mut rng = Rng::new(c.seed);
    let x = data(&mut rng, gi.count().unwrap(), c.mode);
    let mut y64 = vec![0.0; go.count().unwrap()];
    r::l2_pool2d(&c.g, nchw(&f64s(&x), gi), nchw_mut(&mut y64, go)).unwrap();
    let mut mag = vec![0.0; go.count().unwrap()];
    r::l2_pool2d(&c.g, nchw(&abs64(&x), gi), nchw_mut(&mut mag, go)).unwrap();
    // Backward on finite data, with the f32-rounded y both sides use.
    let xf = data(&mut Rng::new(c.seed ^ 1), gi.count().unwrap(), c.mode.min(2));
    let mut yf64 = vec![0.0; go.count().unwrap()];
    r::l2_pool2d(&c.g, nchw(&f64s(&xf), gi), nchw_mut(&mut yf64, go)).unwrap();
    let yf: Vec<f32> = yf64.iter().map(|&v| v as f32).collect();
    let dy = data(&mut rng, go.count().unwrap(), 0);
    let mut dx64 = vec![0.0; gi.count().unwrap()];
    r::l2_pool2d_backward(
        &c.g,
        nchw(&f64s(&xf), gi),
        nchw(&f64s(&yf), go),
        nchw(&f64s(&dy), go),
        nchw_mut(&mut dx64, gi),
    )
    .unwrap();
    let mut dmag = vec![0.0; gi.count().unwrap()];
    r::l2_pool2d_backward(
        &c.g,
        nchw(&abs64(&xf), gi),
        nchw(&f64s(&yf), go),
        nchw(&abs64(&dy), go),
        nchw_mut(&mut dmag, gi),
    )
    .unwrap();
    for isa in isas() {
        let e = exec_threads(isa, c.threads);
        for layout in LAYOUTS {
            let tag = |what: &str, m: String| format!("{what} {isa} {layout:?} x{}: {m}", c.threads);
            let xb = Buf::new(&x, gi, layout, c.extra, f32::NAN);
            let mut yb = Buf::new(&vec![0.0f32; go.count().unwrap()], go, layout, c.extra, f32::NAN);
            simdconv::l2_pool2d(&e, &c.g, xb.view(), yb.view_mut()).map_err(|e| e.to_string())?;
            close(&yb.out().map_err(|m| tag("l2", m))?, &y64, &mag, taps(&c.g)).map_err(|m| tag("l2", m))?;
            let xfb = Buf::new(&xf, gi, layout, c.extra, f32::NAN);
            let yfb = Buf::new(&yf, go, layout, c.extra, f32::NAN);
            let dyb = Buf::new(&dy, go, layout, c.extra, f32::NAN);
            let mut dxb = Buf::new(&vec![f32::NAN; gi.count().unwrap()], gi, layout, c.extra, f32::NAN);
            simdconv::l2_pool2d_backward(&e, &c.g, xfb.view(), yfb.view(), dyb.view(), dxb.view_mut())
                .map_err(|e| e.to_string())?;
            close(&dxb.values(), &dx64, &dmag, taps(&c.g)).map_err(|m| tag("l2 backward", m))?;
        }
    }
    Ok(())
}

/// The f64 references of global pooling over NCHW `x` of dims `d`: max, average, and
/// the average of `|x|` (the error bound's magnitude).
fn global_reference(x: &[f32], d: Dims) -> [Vec<f64>; 3] {
    let go = Dims::new(d.n, d.c, 1, 1);
    let x64 = f64s(x);
    let mut out = [0; 3].map(|_| vec![0.0; go.count().unwrap()]);
    let [ymax, yavg, mag] = &mut out;
    r::global_max_pool(nchw(&x64, d), nchw_mut(ymax, go)).unwrap();
    r::global_avg_pool(nchw(&x64, d), nchw_mut(yavg, go)).unwrap();
    r::global_avg_pool(nchw(&abs64(x), d), nchw_mut(mag, go)).unwrap();
    out
}

fn check_global(d: Dims, seed: u64, mode: u8, extra: usize) -> Result<(), String> {
    check_global_threads(d, seed, mode, extra, 1)
}

fn check_global_threads(d: Dims, seed: u64, mode: u8, extra: usize, threads: usize) -> Result<(), String> {
    let go = Dims::new(d.n, d.c, 1, 1);
    let mut rng = Rng::new(seed);
    let x = data(&mut rng, d.count().unwrap(), mode);
    let [ymax, yavg, mag] = global_reference(&x, d);
    // Backward: the reference's pooling with one window over the whole plane.
    let gp = PoolGeometry::new(d, Pool2d::new(d.h, d.w)).unwrap();
    let dy = data(&mut rng, go.count().unwrap(), 0);
    let back = |dy: &[f64]| {
        let mut avg = vec![0.0; d.count().unwrap()];
        r::avg_pool2d_backward(&gp, nchw(dy, go), nchw_mut(&mut avg, d), AvgPoolOptions::PYTORCH).unwrap();
        let (mut y, mut idx) = (vec![0.0; go.count().unwrap()], vec![0usize; go.count().unwrap()]);
        r::max_pool2d(&gp, nchw(&f64s(&x), d), nchw_mut(&mut y, go), Some(nchw_mut(&mut idx, go))).unwrap();
        let mut max = vec![0.0; d.count().unwrap()];
        r::max_pool2d_backward(&gp, nchw(dy, go), nchw(&idx, go), nchw_mut(&mut max, d)).unwrap();
        (avg, max)
    };
    let ((davg, dmax), (mavg, mmax)) = (back(&f64s(&dy)), back(&abs64(&dy)));
    for isa in isas() {
        let e = exec_threads(isa, threads);
        for layout in LAYOUTS {
            let tag = |what: &str, m: String| format!("{what} {isa} {layout:?} x{threads}: {m}");
            let xb = Buf::new(&x, d, layout, extra, f32::NAN);
            let mut yb = Buf::new(&vec![0.0f32; go.count().unwrap()], go, layout, extra, f32::NAN);
            simdconv::global_max_pool(&e, xb.view(), yb.view_mut()).map_err(|e| e.to_string())?;
            exact(&yb.out().map_err(|m| tag("global max", m))?, &ymax).map_err(|m| tag("global max", m))?;
            simdconv::global_avg_pool(&e, xb.view(), yb.view_mut()).map_err(|e| e.to_string())?;
            close(&yb.out().map_err(|m| tag("global avg", m))?, &yavg, &mag, d.h * d.w)
                .map_err(|m| tag("global avg", m))?;
            let dyb = Buf::new(&dy, go, layout, extra, f32::NAN);
            let mut dxb = Buf::new(&vec![f32::NAN; d.count().unwrap()], d, layout, extra, f32::NAN);
            simdconv::global_avg_pool_backward(&e, dyb.view(), dxb.view_mut()).map_err(|e| e.to_string())?;
            close(&dxb.values(), &davg, &mavg, 1).map_err(|m| tag("global avg backward", m))?;
            let mut dxb = Buf::new(&vec![f32::NAN; d.count().unwrap()], d, layout, extra, f32::NAN);
            simdconv::global_max_pool_backward(&e, xb.view(), dyb.view(), dxb.view_mut())
                .map_err(|e| e.to_string())?;
            close(&dxb.values(), &dmax, &mmax, 1).map_err(|m| tag("global max backward", m))?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simdconv_tests::proptest_cases(48)))]

    #[test]
    fn max_matches_reference(c in case()) {
        check_max(&c).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn avg_matches_reference(c in case()) {
        check_avg(&c).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn l2_matches_reference(c in case()) {
        check_l2(&c).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn global_matches_reference(
        n in 1usize..=2, c in prop_oneof![1usize..=20, 60usize..=70], h in 1usize..=9, w in 1usize..=9,
        seed in any::<u64>(), mode in 0u8..4, extra in 0usize..=2,
    ) {
        check_global(Dims::new(n, c, h, w), seed, mode, extra).map_err(TestCaseError::fail)?;
    }
}

fn named(d: Dims, pool: Pool2d, mode: u8) {
    named_threads(d, pool, mode, 1);
}

fn named_threads(d: Dims, pool: Pool2d, mode: u8, threads: usize) {
    let g = PoolGeometry::new(d, pool).unwrap();
    for (seed, extra) in [(1, 0), (2, 1)] {
        let c = Case { g, seed, mode, extra, threads };
        check_max(&c).unwrap();
        check_avg(&c).unwrap();
        check_l2(&c).unwrap();
    }
}

#[test]
fn one_by_one_plane() {
    named(Dims::new(1, 3, 1, 1), Pool2d::new(1, 1), 0);
    named(Dims::new(2, 17, 1, 1), Pool2d::new(3, 3).pad(1), 3);
}

#[test]
fn window_covers_padded_input() {
    named(Dims::new(1, 5, 3, 3), Pool2d::new(5, 5).pad(1), 0);
    named(Dims::new(1, 2, 2, 3), Pool2d::new(4, 5).padding(Padding::new(1, 1, 1, 1)), 2);
}

#[test]
fn stride_larger_than_window() {
    named(Dims::new(1, 18, 9, 40), Pool2d::new(2, 2).stride(3), 1);
    named(Dims::new(1, 4, 11, 37), Pool2d::new(1, 2).stride_hw(2, 5), 0);
}

#[test]
fn ceil_edge_windows() {
    named(Dims::new(1, 16, 5, 37), Pool2d::new(3, 3).stride(2).rounding(Rounding::Ceil), 0);
    named(Dims::new(2, 3, 6, 34), Pool2d::new(2, 2).stride(2).pad(1).rounding(Rounding::Ceil), 1);
}

#[test]
fn big_dilation() {
    named(Dims::new(1, 20, 7, 40), Pool2d::new(2, 3).dilation_hw(3, 7).pad(2), 0);
}

#[test]
fn all_negative_and_specials() {
    named(Dims::new(1, 33, 4, 36), Pool2d::new(2, 2).stride(2), 2);
    named(Dims::new(1, 65, 5, 35), Pool2d::new(3, 3).stride(2).pad(1), 3);
    named(Dims::new(1, 16, 6, 40), Pool2d::new(3, 3).stride(1).pad(1), 3);
}

#[test]
fn vector_paths_of_the_benchmarks() {
    // 2x2/2 and 3x3/2 with interiors wider than 16 lanes, odd widths and all channel tails.
    named(Dims::new(1, 67, 4, 64), Pool2d::new(2, 2).stride(2), 0);
    named(Dims::new(1, 5, 7, 55), Pool2d::new(3, 3).stride(2), 3);
    named(Dims::new(1, 3, 3, 73), Pool2d::new(3, 3).stride(2).dilation_hw(1, 2), 1);
    check_global(Dims::new(1, 67, 7, 7), 3, 0, 0).unwrap();
    check_global(Dims::new(2, 33, 5, 7), 4, 3, 1).unwrap();
}

#[test]
fn stride2_interior_kernels() {
    // The AVX-512 kernels for 2x2 / 3x3 stride-2 windows without padding. NCHW: blocks of
    // 16 outputs, a masked last block, a 3-wide window's 33rd column; NHWC: 64-, 32- and
    // 16-channel blocks and a masked channel tail. Rows of 1, 6, 15, 16, 17 and 33
    // outputs, unused last columns and rows, N > 1; mode 3 puts NaN and +-inf in windows.
    // The 2x2 ones drive the AVX2 NCHW kernel too: blocks of 8 outputs, an overlapping
    // last block (15 and 33 outputs), a masked row of 1 output.
    let f2 = Pool2d::new(2, 2).stride(2);
    let f3 = Pool2d::new(3, 3).stride(2);
    named(Dims::new(1, 3, 3, 2), f2, 3);
    named(Dims::new(2, 2, 5, 31), f2, 3);
    named(Dims::new(1, 17, 4, 32), f2, 1);
    named(Dims::new(1, 33, 6, 67), f2, 3);
    named(Dims::new(1, 1, 3, 3), f3, 3);
    named(Dims::new(1, 70, 5, 33), f3, 3);
    named(Dims::new(2, 96, 3, 36), f3, 2);
    named(Dims::new(1, 40, 7, 67), f3, 3);
    named(Dims::new(1, 5, 9, 14), f3, 0);
    // The AVX2 NCHW kernel (`pool/avx2.rs`), 3x3: passes of four output rows and single
    // rows (4, 5, 6 and 9 output rows), one block, whole blocks and an overlapping last
    // block (8, 16 and 17 outputs), a last input column no window reads (width 18), a
    // masked row of 4 outputs; 2x2: 8 outputs (one block) and 7 (masked). Planes of 8281
    // and 8464 floats take the prefetching loops. Its NHWC 3x3 kernel takes the 3x3 cases
    // here: strips of 32 channels, then 8, then a masked tail (1 to 6, 40, 70 and 96
    // channels).
    named(Dims::new(1, 3, 9, 17), f3, 3);
    named(Dims::new(2, 5, 20, 34), f3, 3);
    named(Dims::new(1, 4, 13, 35), f3, 2);
    named(Dims::new(1, 6, 10, 18), f3, 1);
    named(Dims::new(1, 3, 11, 9), f3, 3);
    named(Dims::new(1, 3, 4, 16), f2, 3);
    named(Dims::new(2, 3, 5, 15), f2, 3);
    named(Dims::new(1, 2, 91, 91), f3, 3);
    named(Dims::new(1, 2, 92, 92), f2, 3);
    // Next to them, geometries that must leave the whole-geometry kernels: padding, ceil
    // windows past the input, a 3x3 window of stride 2 in one direction only. In NHWC the
    // inner pixels of the first two still take the AVX2 3x3 kernel, row by row; so do
    // these: asymmetric padding over two images of 40 channels, and rows with one inner
    // pixel.
    named(Dims::new(2, 40, 9, 11), f3.padding(Padding::new(1, 0, 0, 1)), 3);
    named(Dims::new(1, 9, 7, 5), f3.pad(1), 3);
    named(Dims::new(1, 18, 5, 35), f3.pad(1), 3);
    named(Dims::new(1, 17, 5, 34), f3.rounding(Rounding::Ceil), 3);
    named(Dims::new(1, 17, 5, 34), Pool2d::new(3, 3).stride_hw(1, 2), 3);
}

#[test]
fn stride2_padded_nchw_kernel() {
    // The AVX2 NCHW kernel for 2x2 / 3x3 stride-2 windows with padding or ceil-mode
    // windows past the input (`pool/avx2.rs`, `padded`): each plane's interior through
    // the whole-geometry kernel, border rows in blocks of 8 with masked loads (padding
    // holds the fold's identity), border columns of interior rows one output at a time.
    // Every average option (PyTorch's, padding excluded, divisor overrides 3 and 1):
    // `avg_opts(seed >> 7)`. Modes: all negative next to padding (padding never wins a
    // max), NaN and +-inf, ties.
    let f2 = Pool2d::new(2, 2).stride(2);
    let f3 = Pool2d::new(3, 3).stride(2);
    let cases = [
        // ResNet's pool, shrunk: pad 1, one border row and column each side, rows of 7
        // (one masked block), 8, 9, 16, 28 and 56 outputs; four-row passes and single rows.
        (Dims::new(1, 3, 13, 13), f3.pad(1), 2),
        (Dims::new(2, 4, 15, 15), f3.pad(1), 3),
        (Dims::new(1, 3, 17, 17), f3.pad(1), 1),
        (Dims::new(1, 2, 31, 32), f3.pad(1), 2),
        (Dims::new(1, 3, 20, 55), f3.pad(1), 3),
        (Dims::new(1, 2, 10, 112), f3.pad(1), 0),
        // Asymmetric padding, only one
        // side padded, ceil-mode windows past the input with and without padding.
        (Dims::new(1, 3, 12, 21), f3.padding(Padding::new(1, 1, 1, 0)), 2),
        (Dims::new(1, 3, 11, 24), f3.padding(Padding::new(0, 1, 1, 1)), 3),
        (Dims::new(1, 2, 14, 33), f3.padding(Padding::new(1, 0, 0, 1)), 2),
        (Dims::new(2, 2, 9, 34), f3.rounding(Rounding::Ceil), 3),
        (Dims::new(1, 3, 10, 36), f3.pad(1).rounding(Rounding::Ceil), 1),
        // 2x2: TensorFlow's SAME on odd sizes (one trailing pad), a leading pad, ceil mode.
        (Dims::new(1, 3, 15, 17), f2.padding(Padding::new(0, 1, 0, 1)), 2),
        (Dims::new(2, 2, 12, 30), f2.pad(1), 3),
        (Dims::new(1, 3, 9, 33), f2.rounding(Rounding::Ceil), 0),
        // No interior rows or columns, and a plane of 8464 floats whose interior
        // prefetches.
        (Dims::new(1, 3, 2, 40), f3.pad(1), 2),
        (Dims::new(1, 2, 30, 2), f3.pad(1), 3),
        (Dims::new(1, 2, 92, 92), f3.pad(1), 3),
    ];
    for (i, (d, pool, mode)) in cases.into_iter().enumerate() {
        let g = PoolGeometry::new(d, pool).unwrap();
        for (j, extra) in [0, 1].into_iter().enumerate() {
            // `seed >> 7` walks the average options.
            let seed = (((i * 2 + j) as u64) << 7) | 5;
            for threads in [1, 2] {
                let c = Case { g, seed, mode, extra, threads };
                check_max(&c).unwrap();
                check_avg(&c).unwrap();
            }
        }
    }
}

#[test]
fn stride2_max_single_nan() {
    // The AVX2 NCHW stride-2 max kernel folds with plain VMAXPS, which can drop a NaN, and
    // runs a pass again with the NaN-propagating maximum when its check of the inputs
    // finds one. A single NaN at every input position in turn (inside the blocks'
    // checked columns, in the last column a 3x3 window reads, in masked short rows, in
    // columns and rows no window reads) must reach exactly the outputs whose windows hold
    // it, on every ISA and in both layouts.
    let f2 = Pool2d::new(2, 2).stride(2);
    let f3 = Pool2d::new(3, 3).stride(2);
    let cases = [
        (Dims::new(1, 1, 9, 17), f3),  // rows of 8 outputs: one block; column 16 read
        (Dims::new(1, 2, 12, 36), f3), // 17 outputs, an overlapping last block; column 35 and row 11 unread
        (Dims::new(1, 1, 5, 9), f3),   // 4 outputs a row: one masked block
        (Dims::new(1, 1, 4, 35), f2),  // 17 outputs, column 34 unread
        (Dims::new(1, 1, 3, 15), f2),  // 7 outputs: masked
    ];
    for (d, pool) in cases {
        let g = PoolGeometry::new(d, pool).unwrap();
        let (gi, go) = (g.input(), g.output());
        let n = gi.count().unwrap();
        let base = data(&mut Rng::new(7), n, 0);
        for p in 0..n {
            let mut x = base.clone();
            x[p] = f32::NAN;
            let mut y64 = vec![0.0; go.count().unwrap()];
            r::max_pool2d(&g, nchw(&f64s(&x), gi), nchw_mut(&mut y64, go), None).unwrap();
            // The reference's NaN: wherever some window reads position `p`.
            let k = g.window().kernel()[0];
            let read = |i: usize, o: usize| i < 2 * (o - 1) + k;
            assert_eq!(y64.iter().any(|v| v.is_nan()), read(p % d.w, go.w) && read(p / d.w % d.h, go.h));
            for isa in isas() {
                for layout in LAYOUTS {
                    let xb = Buf::new(&x, gi, layout, 0, 0.0);
                    let mut yb = Buf::new(&vec![0.0f32; go.count().unwrap()], go, layout, 0, 0.0);
                    simdconv::max_pool2d(&exec(isa), &g, xb.view(), yb.view_mut(), None).unwrap();
                    exact(&yb.out().unwrap(), &y64)
                        .unwrap_or_else(|m| panic!("{d:?} NaN at {p}, {isa} {layout:?}: {m}"));
                }
            }
        }
    }
}

#[test]
fn avx512_global_kernels() {
    // NHWC: 256- and 128-channel blocks, 16-channel blocks and a masked tail; NCHW: planes
    // of 16, 64 and 100 values (whole vectors only, the unrolled counts, the general loop),
    // 16 planes at a time and the rest one by one; NaN and inf with mode 3.
    check_global(Dims::new(1, 300, 3, 2), 5, 3, 0).unwrap();
    check_global(Dims::new(2, 150, 2, 2), 6, 0, 1).unwrap();
    check_global(Dims::new(1, 37, 4, 4), 7, 3, 0).unwrap();
    check_global(Dims::new(1, 18, 8, 8), 8, 1, 0).unwrap();
    check_global(Dims::new(1, 33, 10, 10), 9, 3, 2).unwrap();
}

#[test]
fn row_buffer_chunks_and_tall_windows() {
    // NCHW row-buffer path: several column chunks (stride 2 and 1), padding and ceil
    // windows at both ends of a chunked row, and windows of more than four rows.
    named(Dims::new(1, 2, 5, 301), Pool2d::new(3, 3).stride(2).pad(1).rounding(Rounding::Ceil), 3);
    named(Dims::new(2, 1, 4, 300), Pool2d::new(2, 2).stride(2), 0);
    named(Dims::new(1, 2, 4, 141), Pool2d::new(3, 3).stride(1).padding(Padding::new(0, 1, 1, 0)), 1);
    named(Dims::new(1, 3, 9, 40), Pool2d::new(6, 3).stride_hw(1, 2).padding(Padding::new(2, 3, 1, 1)), 3);
    named(Dims::new(1, 2, 8, 21), Pool2d::new(7, 2).stride_hw(2, 1).dilation_hw(1, 9), 0);
}

#[test]
fn nhwc_wide_channel_groups() {
    // 8-vector channel groups of the NHWC whole-window path (128 channels on AVX-512),
    // with channel tails, padding, odd sizes and N > 1.
    named(Dims::new(2, 131, 5, 7), Pool2d::new(3, 3).stride(2).pad(1), 3);
    named(Dims::new(1, 129, 6, 5), Pool2d::new(2, 2).stride(2).rounding(Rounding::Ceil), 0);
    named(Dims::new(1, 136, 4, 4), Pool2d::new(2, 3).stride_hw(1, 2).dilation_hw(2, 1), 2);
}

#[test]
fn one_nan_anywhere_reaches_its_windows() {
    // A single NaN at every position of the plane in turn: every window holding it, and
    // only those, must give NaN on every ISA and in both layouts.
    for (d, pool) in [
        (Dims::new(1, 1, 5, 35), Pool2d::new(3, 3).stride(2)),
        (Dims::new(1, 1, 4, 34), Pool2d::new(2, 2).stride(2)),
        (Dims::new(1, 17, 3, 5), Pool2d::new(3, 3).stride(2).pad(1)),
    ] {
        let g = PoolGeometry::new(d, pool).unwrap();
        let plane = d.h * d.w;
        for pos in 0..plane {
            let mut x: Vec<f32> = (0..d.count().unwrap()).map(|i| (i % 7) as f32 - 3.0).collect();
            for c in 0..d.c {
                x[c * plane + pos] = f32::NAN;
            }
            let x64 = f64s(&x);
            let go = g.output();
            let mut want = vec![0.0; go.count().unwrap()];
            r::max_pool2d(&g, nchw(&x64, d), nchw_mut(&mut want, go), None).unwrap();
            for isa in isas() {
                for layout in LAYOUTS {
                    let xb = Buf::new(&x, d, layout, 0, f32::NAN);
                    let mut yb = Buf::new(&vec![0.0f32; go.count().unwrap()], go, layout, 0, f32::NAN);
                    simdconv::max_pool2d(&exec(isa), &g, xb.view(), yb.view_mut(), None).unwrap();
                    exact(&yb.values(), &want)
                        .unwrap_or_else(|m| panic!("{d:?} pos {pos} {isa} {layout:?}: {m}"));
                }
            }
        }
    }
}

#[test]
fn global_grouped_planes_with_strides() {
    // NCHW global pooling, 16 (8) planes at a time: planes apart from each other (channel
    // stride beyond the plane), outputs with a channel stride, 49- and 16-element planes.
    for (d, cs, ycs) in
        [(Dims::new(2, 35, 7, 7), 60, 3), (Dims::new(1, 33, 4, 4), 16, 1), (Dims::new(1, 16, 1, 17), 20, 2)]
    {
        let go = Dims::new(d.n, d.c, 1, 1);
        let mut rng = Rng::new(7);
        let x = data(&mut rng, d.count().unwrap(), 3);
        let [ymax, yavg, mag] = global_reference(&x, d);
        let xs = [d.c * cs, cs, d.w, 1];
        let xb = Buf { data: place(&x, d, xs, f32::NAN), d, s: xs };
        let ys = [d.c * ycs, ycs, 1, 1];
        for isa in isas() {
            let e = exec(isa);
            let mut yb = Buf { data: place(&vec![0.0f32; d.n * d.c], go, ys, f32::NAN), d: go, s: ys };
            simdconv::global_max_pool(&e, xb.view(), yb.view_mut()).unwrap();
            exact(&yb.values(), &ymax).unwrap_or_else(|m| panic!("max {d:?} {isa}: {m}"));
            simdconv::global_avg_pool(&e, xb.view(), yb.view_mut()).unwrap();
            close(&yb.values(), &yavg, &mag, d.h * d.w).unwrap_or_else(|m| panic!("avg {d:?} {isa}: {m}"));
        }
    }
}

#[test]
fn bad_layouts_are_typed_errors() {
    let g = PoolGeometry::new(Dims::new(1, 3, 4, 4), Pool2d::new(2, 2).stride(2)).unwrap();
    let x = vec![0.0f32; 48];
    let mut y = vec![0.0f32; 12];
    let e = Exec::new();
    // NCHW input, NHWC output.
    let r = simdconv::max_pool2d(
        &e,
        &g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorViewMut::new(&mut y, g.output(), Layout::Nhwc).unwrap(),
        None,
    );
    assert_eq!(r, Err(Error::Unsupported(Unsupported::MixedLayouts)));
    // Neither w nor c contiguous.
    let xs = vec![0.0f32; 200];
    let r = simdconv::avg_pool2d(
        &e,
        &g,
        TensorView::with_strides(&xs, g.input(), [96, 2, 24, 6]).unwrap(),
        TensorViewMut::new(&mut y, g.output(), Layout::Nchw).unwrap(),
        AvgPoolOptions::PYTORCH,
    );
    assert_eq!(r, Err(Error::Unsupported(Unsupported::NonContiguous(Operand::Input))));
    // Wrong output shape.
    let r = simdconv::l2_pool2d(
        &e,
        &g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorViewMut::new(&mut y, Dims::new(1, 3, 2, 2), Layout::Nchw).unwrap(),
    );
    assert!(r.is_ok());
    let r = simdconv::l2_pool2d(
        &e,
        &g,
        TensorView::new(&x, g.input(), Layout::Nchw).unwrap(),
        TensorViewMut::new(&mut y, Dims::new(1, 3, 4, 1), Layout::Nchw).unwrap(),
    );
    assert_eq!(
        r,
        Err(Error::ShapeMismatch { operand: Operand::Output, expected: [1, 3, 2, 2], actual: [1, 3, 4, 1] })
    );
}

#[test]
fn switch_out_of_range_is_an_error() {
    let g = PoolGeometry::new(Dims::new(1, 1, 2, 2), Pool2d::new(2, 2)).unwrap();
    let dy = [1.0f32];
    let idx = [4usize];
    let mut dx = [0.0f32; 4];
    for isa in isas() {
        let r = simdconv::max_pool2d_backward(
            &exec(isa),
            &g,
            TensorView::new(&dy, g.output(), Layout::Nchw).unwrap(),
            TensorView::new(&idx, g.output(), Layout::Nchw).unwrap(),
            TensorViewMut::new(&mut dx, g.input(), Layout::Nchw).unwrap(),
        );
        assert_eq!(r, Err(Error::IndexOutOfRange { index: 4, len: 4 }));
    }
}

/// The notes' pipeline INPUT -> CONV -> RELU -> POOL on CIFAR-10 shapes: 32x32x3, 12
/// filters of 3x3 with P = 1, ReLU, 2x2 max pooling -> 16x16x12.
#[test]
fn cifar_conv_relu_pool_pipeline() {
    let input = Dims::new(1, 3, 32, 32);
    let cg = ConvGeometry::new(input, 12, Conv2d::new(3, 3).pad(1)).unwrap();
    let pg = PoolGeometry::new(cg.output(), Pool2d::new(2, 2).stride(2)).unwrap();
    assert_eq!(pg.output(), Dims::new(1, 12, 16, 16));
    let mut rng = Rng::new(10);
    let x = rng.vec(input.count().unwrap());
    let w = rng.vec(cg.filter().count().unwrap());
    let b = rng.vec(12);
    // All-reference pipeline in f64.
    let mut conv64 = vec![0.0; cg.output().count().unwrap()];
    r::conv2d(
        &cg,
        nchw(&f64s(&x), input),
        FilterView::new(&f64s(&w), cg.filter(), FilterLayout::Oihw).unwrap(),
        Some(&f64s(&b)),
        nchw_mut(&mut conv64, cg.output()),
    )
    .unwrap();
    let mut relu64 = vec![0.0; conv64.len()];
    r::relu(&conv64, &mut relu64).unwrap();
    let mut pool64 = vec![0.0; pg.output().count().unwrap()];
    let mut idx64 = vec![0usize; pool64.len()];
    r::max_pool2d(
        &pg,
        nchw(&relu64, pg.input()),
        nchw_mut(&mut pool64, pg.output()),
        Some(nchw_mut(&mut idx64, pg.output())),
    )
    .unwrap();
    // The conv is the reference run in f32; then this crate's ReLU and pooling.
    let mut conv32 = vec![0.0f32; conv64.len()];
    r::conv2d(
        &cg,
        nchw(&x, input),
        FilterView::new(&w, cg.filter(), FilterLayout::Oihw).unwrap(),
        Some(&b),
        nchw_mut(&mut conv32, cg.output()),
    )
    .unwrap();
    // Bound of the conv outputs (27 products + bias), propagated through ReLU and max,
    // which are 1-Lipschitz.
    let mut mag = vec![0.0; conv64.len()];
    let abs = |v: &[f32]| abs64(v);
    r::conv2d(
        &cg,
        nchw(&abs(&x), input),
        FilterView::new(&abs(&w), cg.filter(), FilterLayout::Oihw).unwrap(),
        Some(&abs(&b)),
        nchw_mut(&mut mag, cg.output()),
    )
    .unwrap();
    let bound = simdconv_tests::gamma(27 + 2) * mag.iter().cloned().fold(0.0, f64::max);
    for isa in isas() {
        let e = exec(isa);
        for layout in LAYOUTS {
            let mut act = Buf::new(&conv32, cg.output(), layout, 0, 0.0);
            simdconv::relu_in_place(&e, &mut act.data);
            let mut yb = Buf::new(&vec![0.0f32; pool64.len()], pg.output(), layout, 0, 0.0);
            simdconv::max_pool2d(&e, &pg, act.view(), yb.view_mut(), None).unwrap();
            let y = yb.values();
            for (i, (&a, &b)) in y.iter().zip(&pool64).enumerate() {
                assert!((f64::from(a) - b).abs() <= bound, "{isa} {layout:?} element {i}: {a} vs {b}");
                assert!(a >= 0.0);
            }
            // Same pipeline from the same f32 activations: exactly the reference's max.
            let mut r32 = vec![0.0f32; pool64.len()];
            r::max_pool2d(&pg, act.view(), nchw_mut(&mut r32, pg.output()), None).unwrap();
            let mut yb2 = Buf::new(&vec![0.0f32; pool64.len()], pg.output(), Layout::Nchw, 0, 0.0);
            let act_nchw = Buf::new(&act.values(), cg.output(), Layout::Nchw, 0, 0.0);
            simdconv::max_pool2d(&e, &pg, act_nchw.view(), yb2.view_mut(), None).unwrap();
            assert_eq!(yb2.values(), r32, "{isa} {layout:?}");
        }
    }
}

#[test]
fn global_at_every_line_offset() {
    // The AVX-512 global kernels shift their loads to 64-byte lines: NHWC channel vectors
    // start before channel 0 (when every pixel sits alike on lines), NCHW planes are read
    // as aligned vectors masked at both ends. Every float offset of the buffer, batch
    // entries that sit differently on lines, NaN gaps around every plane / pixel run, and
    // plane sizes below, at and across whole vectors (1, 9, 16, 20, 36, 49, 64, 65, 90, 100,
    // 196).
    let nhwc_cases = [
        (Dims::new(2, 272, 3, 2), 16, 5),
        (Dims::new(1, 130, 2, 3), 14, 0),
        (Dims::new(2, 20, 2, 3), 12, 3),
        (Dims::new(1, 5, 3, 1), 11, 0),
        (Dims::new(2, 33, 1, 1), 0, 7),
        (Dims::new(1, 20, 2, 2), 1, 0),
        (Dims::new(1, 250, 2, 1), 6, 0),
    ];
    let nchw_cases = [
        (Dims::new(2, 35, 7, 7), 0, 3),
        (Dims::new(1, 33, 7, 7), 5, 0),
        (Dims::new(2, 17, 8, 8), 0, 9),
        (Dims::new(1, 16, 5, 13), 3, 0),
        (Dims::new(1, 18, 1, 1), 0, 1),
        (Dims::new(2, 19, 3, 3), 2, 4),
        (Dims::new(1, 16, 4, 4), 0, 0),
        (Dims::new(1, 20, 10, 10), 7, 0),
        (Dims::new(1, 17, 14, 14), 0, 2),
        (Dims::new(1, 18, 9, 10), 1, 0),
        (Dims::new(2, 21, 4, 5), 3, 1),
        (Dims::new(1, 16, 6, 6), 0, 0),
    ];
    let cases = nhwc_cases
        .iter()
        .map(|&(d, e, ne)| (Layout::Nhwc, d, e, ne))
        .chain(nchw_cases.iter().map(|&(d, e, ne)| (Layout::Nchw, d, e, ne)));
    // Around the output view: a value no pooling of the data gives, which must stay.
    const GUARD: f32 = -7.5e6;
    for (ci, (layout, d, extra, nextra)) in cases.enumerate() {
        let go = Dims::new(d.n, d.c, 1, 1);
        let mode = [0u8, 2, 3][ci % 3];
        let mut rng = Rng::new(40 + ci as u64);
        let x = data(&mut rng, d.count().unwrap(), mode);
        let [ymax, yavg, mag] = global_reference(&x, d);
        // Pixels (NHWC) or planes (NCHW) `extra` apart beyond their length, batch entries
        // `nextra` more.
        let mut xs = match layout {
            Layout::Nhwc => strides(layout, d, extra),
            Layout::Nchw => {
                let sc = d.h * d.w + extra;
                [d.c * sc, sc, d.w, 1]
            }
        };
        xs[0] += nextra;
        let placed = place(&x, d, xs, f32::NAN);
        let ys = strides(layout, go, 0);
        for off in 0..16 {
            let mut buf = vec![f32::NAN; off];
            buf.extend_from_slice(&placed);
            buf.extend_from_slice(&[f32::NAN; 16]);
            let xv = TensorView::with_strides(&buf[off..off + placed.len()], d, xs).unwrap();
            for isa in isas() {
                let e = exec(isa);
                let tag = |what: &str, m: String| format!("{what} {d:?} {layout:?} off {off} {isa}: {m}");
                let mut ob = vec![GUARD; off + go.count().unwrap() + 16];
                let yv =
                    TensorViewMut::with_strides(&mut ob[off..off + go.count().unwrap()], go, ys).unwrap();
                simdconv::global_max_pool(&e, xv, yv).unwrap();
                exact(&gather(&ob[off..], go, ys), &ymax).unwrap_or_else(|m| panic!("{}", tag("max", m)));
                assert!(
                    ob[..off].iter().chain(&ob[off + go.count().unwrap()..]).all(|&v| v == GUARD),
                    "max wrote outside"
                );
                let yv =
                    TensorViewMut::with_strides(&mut ob[off..off + go.count().unwrap()], go, ys).unwrap();
                simdconv::global_avg_pool(&e, xv, yv).unwrap();
                close(&gather(&ob[off..], go, ys), &yavg, &mag, d.h * d.w)
                    .unwrap_or_else(|m| panic!("{}", tag("avg", m)));
                assert!(
                    ob[..off].iter().chain(&ob[off + go.count().unwrap()..]).all(|&v| v == GUARD),
                    "avg wrote outside"
                );
            }
        }
    }
}

#[test]
fn global_nchw_planes_from_aligned_lines() {
    // Back-to-back NCHW planes from a 64-byte line: the AVX-512 kernel has constant line
    // offsets and masks for planes of 36, 49, 64 and 100 values (25 takes the general
    // path); the AVX2 one, aligned or not, for 25, 36, 49, 64 and 100. Both batch entries start on a line (48 channels: three blocks each; 37 x 64
    // values) or only the first does (37 x 49 and 37 x 100 values: the second entry
    // starts 5 or 4 floats into a line and takes the general kernel); 37 channels are two
    // blocks and 5 planes one by one. Outputs contiguous or 3 apart, with guards in the
    // gaps; NaN and inf with mode 3.
    const GUARD: f32 = -7.5e6;
    for (hw, c, n, ycs, mode) in [
        ((6, 6), 48, 2, 1, 3),
        ((7, 7), 48, 2, 3, 0),
        ((7, 7), 37, 2, 1, 3),
        ((8, 8), 37, 2, 3, 3),
        ((10, 10), 48, 2, 1, 2),
        ((10, 10), 37, 2, 3, 3),
        ((5, 5), 48, 2, 1, 3),
    ] {
        let d = Dims::new(n, c, hw.0, hw.1);
        let go = Dims::new(n, c, 1, 1);
        let mut rng = Rng::new(90 + (hw.0 * c) as u64);
        let x = data(&mut rng, d.count().unwrap(), mode);
        let [ymax, yavg, mag] = global_reference(&x, d);
        let mut buf = vec![f32::NAN; x.len() + 16];
        let at = buf.as_ptr().align_offset(64);
        assert!(at < 16);
        buf[at..at + x.len()].copy_from_slice(&x);
        let xv = TensorView::new(&buf[at..at + x.len()], d, Layout::Nchw).unwrap();
        let ys = [c * ycs, ycs, 1, 1];
        for isa in isas() {
            let e = exec(isa);
            let tag = |what: &str, m: String| format!("{what} {d:?} y apart {ycs} {isa}: {m}");
            let mut ob = vec![GUARD; n * c * ycs];
            simdconv::global_max_pool(&e, xv, TensorViewMut::with_strides(&mut ob, go, ys).unwrap()).unwrap();
            exact(&gather(&ob, go, ys), &ymax).unwrap_or_else(|m| panic!("{}", tag("max", m)));
            let guards = |ob: &[f32]| ob.iter().enumerate().all(|(i, &v)| i % ycs == 0 || v == GUARD);
            assert!(guards(&ob), "{}", tag("max", "wrote a gap".into()));
            simdconv::global_avg_pool(&e, xv, TensorViewMut::with_strides(&mut ob, go, ys).unwrap()).unwrap();
            close(&gather(&ob, go, ys), &yavg, &mag, d.h * d.w)
                .unwrap_or_else(|m| panic!("{}", tag("avg", m)));
            assert!(guards(&ob), "{}", tag("avg", "wrote a gap".into()));
        }
    }
}

#[test]
fn two_threads_split_pooling() {
    // Forward pooling splits inputs of at least 2 x 64 Ki elements over two threads:
    // images when the batch has several, else NCHW channel planes (16 at a time from 32
    // channels) and NHWC output rows (or NCHW rows of a single plane). Output views with
    // a gap after every row (`extra`) too; mode 3 puts NaN and inf in windows.
    let f3 = Pool2d::new(3, 3).stride(2);
    // 40 channels: planes 0..16 and 16..40 in NCHW; rows 0..14 and 14..29 in NHWC.
    named_threads(Dims::new(1, 40, 60, 60), f3, 3, 2);
    named_threads(Dims::new(1, 40, 60, 60), Pool2d::new(2, 2).stride(2), 0, 2);
    // Three images: image 0, images 1..3.
    named_threads(Dims::new(3, 5, 100, 100), f3.pad(1), 3, 2);
    // One plane: row slabs in both layouts, with uneven padding, dilation and ceil
    // rounding (the last rows' windows run past the input).
    let rows = Pool2d::new(3, 2)
        .stride_hw(2, 3)
        .dilation_hw(2, 1)
        .padding(Padding::new(2, 1, 1, 0))
        .rounding(Rounding::Ceil);
    named_threads(Dims::new(1, 1, 403, 341), rows, 3, 2);
    // The second slab starts inside the top padding (output row 75 of 150 reads rows
    // -25, 75 and 175): its slab keeps 25 rows of padding and starts at input row 0.
    let deep = Pool2d::new(3, 2).dilation_hw(100, 1).padding(Padding::new(100, 0, 0, 1));
    named_threads(Dims::new(1, 1, 250, 560), deep, 1, 2);
    // Global pooling: NCHW planes 0..48 and 48..100 (NHWC: one row, one thread); images.
    check_global_threads(Dims::new(1, 100, 40, 40), 11, 3, 1, 2).unwrap();
    check_global_threads(Dims::new(2, 70, 30, 40), 12, 0, 0, 2).unwrap();
}
