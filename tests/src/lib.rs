//! Shared helpers for simdconv's test suites: the ISA under test, random data, and the
//! error bound every kernel is held to.
//!
//! ## Error bound
//! A kernel's f32 result `y` is compared with the reference computed in f64, `y_ref`.
//! For a sum of `k` products, any summation order gives
//! `|y - y_ref| <= gamma(k + 2) * M + tiny`, where `M = sum |w * x|` (the same sum over
//! absolute values, computed by running the reference on `|x|` and `|w|`),
//! `gamma(n) = n * u / (1 - n * u)` and `u = 2^-24` is f32's unit round-off (Higham,
//! *Accuracy and Stability of Numerical Algorithms*, eq. 3.5). The `+ 2` covers the
//! bias / residual additions and the final rounding to f32; `tiny` covers f32 underflow.

pub mod fuzz;

use std::sync::Once;

use simdconv::{Dims, FilterDims, Isa, Layout, TensorView, TensorViewMut};

/// The environment variable that caps the instruction set for a test run, e.g.
/// `SIMDCONV_MAX_ISA=avx2 cargo test`. If it names an instruction set this machine cannot
/// run, the tests fail instead of silently testing something else.
pub const ISA_ENV: &str = "SIMDCONV_MAX_ISA";

static SETUP: Once = Once::new();

/// Applies [`ISA_ENV`] once per process. Every test calls it first.
pub fn setup() {
    SETUP.call_once(|| {
        if let Some(isa) = requested_isa() {
            assert!(
                isa.is_supported(),
                "{ISA_ENV}={} but this machine cannot run {}",
                isa.name(),
                isa.name()
            );
            simdconv::set_max_isa(Some(isa));
            assert_eq!(Isa::best(), isa, "{ISA_ENV} cap did not select {isa}");
        }
    });
}

/// The instruction set named by [`ISA_ENV`], if any. Panics on an unknown name.
pub fn requested_isa() -> Option<Isa> {
    let v = std::env::var(ISA_ENV).ok()?;
    let v = v.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("auto") {
        return None;
    }
    Some(Isa::from_name(v).unwrap_or_else(|| panic!("{ISA_ENV}={v}: unknown instruction set")))
}

/// Every instruction set to test: all available ones under the cap.
pub fn isas() -> Vec<Isa> {
    setup();
    Isa::available().collect()
}

/// Unit round-off of f32.
pub const U32: f64 = 5.960_464_477_539_063e-8; // 2^-24

/// `gamma(n) = n u / (1 - n u)` for f32.
#[must_use]
pub fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U32;
    nu / (1.0 - nu)
}

/// The Winograd filter gradient's `T` (see `simdconv`'s `backward::winograd` docs): the
/// 4x4 output tiles of all images and polyphase sub-convolutions (one per dilation phase).
#[must_use]
pub fn winograd_tiles(g: &simdconv::ConvGeometry) -> usize {
    let [dh, dw] = g.window().dilation();
    let o = g.output();
    let sub = |p: usize, d: usize, e: usize| if p < e { (e - p).div_ceil(d) } else { 0 };
    let mut t = 0;
    for ph in 0..dh {
        for pw in 0..dw {
            t += sub(ph, dh, o.h).div_ceil(4) * sub(pw, dw, o.w).div_ceil(4);
        }
    }
    o.n * t
}

/// Checks `got` against the f64 reference `want` under the bound
/// `gamma(terms + 2) * magnitude + 1e-30` per element. Returns the first violation.
pub fn check_close(got: &[f32], want: &[f64], magnitude: &[f64], terms: usize) -> Result<(), String> {
    assert_eq!(got.len(), want.len());
    assert_eq!(got.len(), magnitude.len());
    let g = gamma(terms + 2);
    for (i, ((&a, &b), &m)) in got.iter().zip(want).zip(magnitude).enumerate() {
        if (a.is_nan() && b.is_nan()) || f64::from(a) == b {
            continue; // includes equal infinities
        }
        let bound = g * m + 1e-30;
        let err = (f64::from(a) - b).abs();
        if err.is_nan() || err > bound {
            return Err(format!("element {i}: got {a}, want {b}, |err| {err:e} > bound {bound:e}"));
        }
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*) for test and benchmark data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is remapped).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    /// Next raw value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// A vector of `n` uniform values.
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// Widens to f64.
#[must_use]
pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Absolute values, widened to f64.
#[must_use]
pub fn abs_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x).abs()).collect()
}

/// Proptest cases per property: `default`, unless `PROPTEST_CASES` says otherwise (CI
/// lowers it under qemu emulation, a local bug hunt raises it).
#[must_use]
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Element count of a buffer holding a view of `d` with `pad_c` more channels and `pad_w`
/// more columns (a channel slice / padded rows of a bigger tensor), and the view's strides.
#[must_use]
pub fn padded(d: Dims, layout: Layout, pad_c: usize, pad_w: usize) -> (usize, [usize; 4]) {
    let big = Dims::new(d.n, d.c + pad_c, d.h, d.w + pad_w);
    (big.count().unwrap(), layout.strides(big))
}

/// `src` (dense NCHW of dims `d`) copied into a buffer laid out by [`padded`] for
/// `layout`, NaN in the gaps; returns the buffer and the view's strides.
#[must_use]
pub fn padded_copy(
    src: &[f32],
    d: Dims,
    layout: Layout,
    pad_c: usize,
    pad_w: usize,
) -> (Vec<f32>, [usize; 4]) {
    let src = TensorView::new(src, d, Layout::Nchw).unwrap();
    padded_with(d, layout, pad_c, pad_w, f32::NAN, |n, c, h, w| src.get(n, c, h, w))
}

/// An output buffer laid out by [`padded`] for `layout`: `sentinel` in the gaps (to check
/// that a kernel leaves them alone), NaN in every element of the view (to check that it
/// writes them all); returns the buffer and the view's strides.
#[must_use]
pub fn padded_output(
    d: Dims,
    layout: Layout,
    pad_c: usize,
    pad_w: usize,
    sentinel: f32,
) -> (Vec<f32>, [usize; 4]) {
    padded_with(d, layout, pad_c, pad_w, sentinel, |_, _, _, _| f32::NAN)
}

/// A buffer laid out by [`padded`] for `layout`: `gap` in the gaps, `value(n, c, h, w)` at
/// every element of the view; returns the buffer and the view's strides.
fn padded_with(
    d: Dims,
    layout: Layout,
    pad_c: usize,
    pad_w: usize,
    gap: f32,
    value: impl Fn(usize, usize, usize, usize) -> f32,
) -> (Vec<f32>, [usize; 4]) {
    let (len, strides) = padded(d, layout, pad_c, pad_w);
    let mut buf = vec![gap; len];
    let mut dst = TensorViewMut::with_strides(&mut buf, d, strides).unwrap();
    for_each_index(d, |n, c, h, w| *dst.get_mut(n, c, h, w) = value(n, c, h, w));
    (buf, strides)
}

/// Calls `f(n, c, h, w)` for every index of `d`, in NCHW order.
pub fn for_each_index(d: Dims, mut f: impl FnMut(usize, usize, usize, usize)) {
    for n in 0..d.n {
        for c in 0..d.c {
            for h in 0..d.h {
                for w in 0..d.w {
                    f(n, c, h, w);
                }
            }
        }
    }
}

/// Copies a view, whatever its strides, into dense NCHW order.
#[must_use]
pub fn dense<T: Copy>(v: &TensorView<'_, T>) -> Vec<T> {
    let d = v.dims();
    let mut out = Vec::with_capacity(d.count().unwrap());
    for n in 0..d.n {
        for c in 0..d.c {
            for h in 0..d.h {
                for w in 0..d.w {
                    out.push(v.get(n, c, h, w));
                }
            }
        }
    }
    out
}

/// Activation strides for `d` in `layout`: dense, or (`gapped`) with a gap after every row,
/// channel plane / pixel and image, as a view into a bigger tensor has.
#[must_use]
pub fn act_strides(d: Dims, layout: Layout, gapped: bool) -> [usize; 4] {
    if !gapped {
        return layout.strides(d);
    }
    match layout {
        Layout::Nchw => {
            let sh = d.w + 3;
            let sc = d.h * sh + 1;
            [d.c * sc + 2, sc, sh, 1]
        }
        Layout::Nhwc => {
            let sw = d.c + 2;
            let sh = d.w * sw + 1;
            [d.h * sh + 5, 1, sh, sw]
        }
    }
}

/// Filter strides in an odd order with gaps: (kh, o, kw, i), input channels contiguous.
#[must_use]
pub fn gapped_filter_strides(f: FilterDims) -> [usize; 4] {
    let skw = f.i + 1;
    let so = f.kw * skw;
    let skh = f.o * so + 3;
    [so, 1, skh, skw]
}

/// Elements a buffer needs to hold a view of dims `d` (logical order) with strides `s`.
#[must_use]
pub fn span(d: [usize; 4], s: [usize; 4]) -> usize {
    1 + d.iter().zip(s).map(|(&d, s)| (d - 1) * s).sum::<usize>()
}
