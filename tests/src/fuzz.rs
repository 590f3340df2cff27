//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and by the stable
//! corpus-replay test (`tests/fuzz_replay.rs`). Each body builds a problem from arbitrary
//! bytes, runs it, and checks the outcome against an independent model: a result equal
//! to the reference when the call succeeds, and an error exactly when the model says the
//! input is invalid. A body panics only when it finds a bug.

use arbitrary::{Result as AResult, Unstructured};
use simdconv::{
    output_extent, Axis, AxisWindow, Conv2d, ConvGeometry, Dims, Error, Padding, Pool2d, PoolGeometry,
    Rounding, TensorView, TensorViewMut,
};

/// A size biased towards the interesting: 0, 1, small, and values near `usize::MAX`.
fn size(u: &mut Unstructured<'_>) -> AResult<usize> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 => 0,
        1 => 1,
        2..=5 => u.int_in_range(0usize..=8)?,
        6 => u.int_in_range(0usize..=300)?,
        7 => usize::MAX - u.int_in_range(0usize..=3)?,
        8 => usize::MAX / u.int_in_range(2usize..=64)?,
        _ => u.arbitrary::<usize>()?,
    })
}

fn rounding(u: &mut Unstructured<'_>) -> AResult<Rounding> {
    Ok(*u.choose(&[Rounding::Exact, Rounding::Floor, Rounding::Ceil])?)
}

/// Output extent in u128 arithmetic: `None` when the notes' rules (plus the crate's
/// overflow rule) make the axis invalid.
fn model_extent(
    input: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
    pa: usize,
    r: Rounding,
) -> Option<usize> {
    if input == 0 || k == 0 || s == 0 || d == 0 {
        return None;
    }
    let max = usize::MAX as u128;
    let eff = (k as u128 - 1) * d as u128 + 1;
    let pads = pb as u128 + pa as u128;
    let padded = input as u128 + pads;
    if eff > max || pads > max || padded > max || eff > padded {
        return None;
    }
    let span = padded - eff;
    let floor = span / s as u128 + 1;
    let out = match r {
        Rounding::Floor => floor,
        Rounding::Exact if span.is_multiple_of(s as u128) => floor,
        Rounding::Exact => return None,
        Rounding::Ceil if span.is_multiple_of(s as u128) => floor,
        Rounding::Ceil => {
            if floor * (s as u128) < input as u128 + pb as u128 {
                floor + 1
            } else {
                floor
            }
        }
    };
    usize::try_from(out).ok()
}

fn product_fits(v: &[usize]) -> bool {
    v.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).is_some()
}

/// Geometry and output-size arithmetic with any integers.
pub fn geometry(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = geometry_inner(&mut u);
}

fn geometry_inner(u: &mut Unstructured<'_>) -> AResult<()> {
    let (n, c, h, w, k) = (size(u)?, size(u)?, size(u)?, size(u)?, size(u)?);
    let (kh, kw, sh, sw, dh, dw) = (size(u)?, size(u)?, size(u)?, size(u)?, size(u)?, size(u)?);
    let p = Padding::new(size(u)?, size(u)?, size(u)?, size(u)?);
    let g = size(u)?;
    let r = rounding(u)?;
    let conv = Conv2d::new(kh, kw).stride_hw(sh, sw).dilation_hw(dh, dw).padding(p).groups(g).rounding(r);
    let got = ConvGeometry::new(Dims::new(n, c, h, w), k, conv);
    let oh = model_extent(h, kh, sh, dh, p.top, p.bottom, r);
    let ow = model_extent(w, kw, sw, dw, p.left, p.right, r);
    let model = (|| {
        if n == 0 || c == 0 || k == 0 || g == 0 || c % g != 0 || k % g != 0 {
            return None;
        }
        let (oh, ow) = (oh?, ow?);
        let ok = product_fits(&[n, c, h, w])
            && product_fits(&[n, k, oh, ow])
            && product_fits(&[k, c / g, kh, kw])
            && [n, k, oh, ow, c / g, kh, kw].iter().try_fold(1u64, |a, &b| a.checked_mul(b as u64)).is_some();
        ok.then_some((oh, ow))
    })();
    match (&got, model) {
        (Ok(geo), Some((oh, ow))) => {
            assert_eq!(geo.output(), Dims::new(n, k, oh, ow));
            assert_eq!(geo.filter().to_array(), [k, c / g, kh, kw]);
        }
        (Err(e), None) => {
            let _ = e.to_string();
        }
        (got, model) => panic!("conv geometry disagrees with the model: {got:?} vs {model:?}"),
    }
    // Per-axis extent.
    let win =
        AxisWindow { input: h, kernel: kh, stride: sh, dilation: dh, pad_before: p.top, pad_after: p.bottom };
    assert_eq!(output_extent(win, r, Axis::Height).ok(), oh);

    // Pooling adds: pads at most half the effective window, dilation at most the input.
    let pool = Pool2d::new(kh, kw).stride_hw(sh, sw).dilation_hw(dh, dw).padding(p).rounding(r);
    let got = PoolGeometry::new(Dims::new(n, c, h, w), pool);
    let half = |k: usize, d: usize| ((k as u128).saturating_sub(1) * d as u128).div_ceil(2);
    let model = (|| {
        if n == 0 || c == 0 {
            return None;
        }
        let (oh, ow) = (oh?, ow?);
        for (pad, kk, dd) in [(p.top, kh, dh), (p.bottom, kh, dh), (p.left, kw, dw), (p.right, kw, dw)] {
            if pad as u128 > half(kk, dd) {
                return None;
            }
        }
        if (kh > 1 && dh > h) || (kw > 1 && dw > w) {
            return None;
        }
        (product_fits(&[n, c, h, w]) && product_fits(&[n, c, oh, ow])).then_some((oh, ow))
    })();
    match (&got, model) {
        (Ok(geo), Some((oh, ow))) => assert_eq!(geo.output(), Dims::new(n, c, oh, ow)),
        (Err(e), None) => {
            let _ = e.to_string();
        }
        (got, model) => panic!("pool geometry disagrees with the model: {got:?} vs {model:?}"),
    }
    // "Same" padding never panics and, when it succeeds, keeps ceil(input / stride).
    if let Ok(same) = Padding::same([h, w], [kh, kw], [sh, sw], [dh, dw]) {
        let conv = Conv2d::new(kh, kw).stride_hw(sh, sw).dilation_hw(dh, dw).padding(same);
        if let Ok(geo) = ConvGeometry::new(Dims::new(1, 1, h, w), 1, conv) {
            assert_eq!(geo.output().h, h.div_ceil(sh));
            assert_eq!(geo.output().w, w.div_ceil(sw));
        }
    }
    Ok(())
}

/// View construction: short slices, odd and overflowing strides, aliasing mutable views.
pub fn views(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = views_inner(&mut u);
}

fn views_inner(u: &mut Unstructured<'_>) -> AResult<()> {
    let dims = [
        u.int_in_range(0usize..=5)?,
        u.int_in_range(0usize..=5)?,
        u.int_in_range(0usize..=5)?,
        u.int_in_range(0usize..=5)?,
    ];
    let mut strides = [0usize; 4];
    for s in &mut strides {
        *s = if u.ratio(1u8, 8u8)? { size(u)? } else { u.int_in_range(0usize..=40)? };
    }
    let len = u.int_in_range(0usize..=2000)?;
    let d = Dims::new(dims[0], dims[1], dims[2], dims[3]);
    let span: Option<u128> = if dims.contains(&0) {
        Some(0)
    } else {
        Some(dims.iter().zip(strides).map(|(&n, s)| (n as u128 - 1) * s as u128).sum::<u128>() + 1)
    };
    let buf = vec![0.0f32; len];
    let ro = TensorView::with_strides(&buf, d, strides);
    let fits = span.is_some_and(|s| s <= len as u128);
    assert_eq!(ro.is_ok(), fits, "read view {dims:?} {strides:?} len {len}: {ro:?}");
    if let Err(e) = &ro {
        assert!(matches!(e, Error::SliceTooShort { .. } | Error::Overflow { .. }));
    }
    let mut buf = vec![0.0f32; len];
    let rw = TensorViewMut::with_strides(&mut buf, d, strides);
    if fits {
        // A fitting mutable view is refused only for (possible) aliasing.
        if let Err(e) = &rw {
            assert!(matches!(e, Error::OverlappingStrides { .. }), "{e:?}");
        }
    } else {
        assert!(rw.is_err());
    }
    if let Ok(mut v) = rw {
        // Accepted mutable views really are alias-free: brute force every pair.
        let mut seen = std::collections::HashSet::new();
        for a in 0..dims[0] {
            for b in 0..dims[1] {
                for c in 0..dims[2] {
                    for e in 0..dims[3] {
                        assert!(
                            seen.insert(v.offset(a, b, c, e)),
                            "aliasing view accepted: {dims:?} {strides:?}"
                        );
                        *v.get_mut(a, b, c, e) = 1.0;
                    }
                }
            }
        }
    }
    Ok(())
}

use simdconv::{
    reference, Activation, Algorithm, Conv2dOptions, Epilogue, Exec, FilterLayout, FilterView, Isa, Layout,
};

fn small(u: &mut Unstructured<'_>, lo: usize, hi: usize) -> AResult<usize> {
    u.int_in_range(lo..=hi)
}

fn isa(u: &mut Unstructured<'_>) -> AResult<Exec> {
    let avail: Vec<Isa> = Isa::available().collect();
    let isa = *u.choose(&avail)?;
    Ok(Exec::new().with_isa(isa).expect("available ISA refused"))
}

fn layout(u: &mut Unstructured<'_>) -> AResult<Layout> {
    Ok(*u.choose(&[Layout::Nchw, Layout::Nhwc])?)
}

/// The next byte of the fixed pseudo-random sequence that [`data`] and [`pool_data`] fall
/// back on once the input's bytes are used up.
fn fallback(state: &mut u32) -> u8 {
    *state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
    (*state >> 24) as u8
}

/// `n` values in `[-8, 8)` in steps of 1/16: from the input's bytes while they last, then
/// from a fixed pseudo-random sequence, not zeros (the data of a 40-wide plane runs past
/// the bytes, and zeros there hid a bug planted in the NCHW Winograd runs' row ends).
fn data(u: &mut Unstructured<'_>, n: usize) -> AResult<Vec<f32>> {
    let mut v = Vec::with_capacity(n);
    let mut state = 0x9E37_79B9u32;
    for _ in 0..n {
        let byte = if u.is_empty() { fallback(&mut state) as i8 } else { u.arbitrary::<i8>()? };
        v.push(f32::from(byte) / 16.0);
    }
    Ok(v)
}

/// A small convolution problem built from bytes: geometry (possibly invalid), data, layout,
/// filter layout, epilogue, algorithm and ISA.
pub struct ConvCase {
    /// The geometry, if valid.
    pub geometry: Result<ConvGeometry, Error>,
    /// Activations layout.
    pub layout: Layout,
    /// Filter layout.
    pub filter_layout: FilterLayout,
    /// Algorithm asked for.
    pub algorithm: Algorithm,
    /// Execution context.
    pub exec: Exec,
    /// Activation of the epilogue.
    pub activation: Activation,
    /// Whether a bias / residual is fused.
    pub bias: bool,
    /// Whether a residual is fused.
    pub residual: bool,
}

fn conv_case(u: &mut Unstructured<'_>) -> AResult<ConvCase> {
    let g = small(u, 0, 3)?.max(1);
    // One case in eight is a 3x3 stride-1 window (columns undilated) over whole SIMD
    // vectors of input channels per group (or one more) and rows up to 40 wide: NCHW
    // Winograd on AVX2 then takes its runs of tiles (8 or more a run from width 29),
    // the other kernels their full-vector paths. Before these cases, no fuzz case had 8
    // channels a group, so no fuzzer ran those paths.
    let wide = u.ratio(1u8, 8)?;
    let c = if wide { *u.choose(&[8, 9, 16])? } else { small(u, 0, 3)? } * g;
    let k = small(u, 0, 3)? * g;
    let (n, h, w) = (small(u, 0, 2)?, small(u, 0, 9)?, small(u, 0, if wide { 40 } else { 9 })?);
    // Up to 7: windows of 25 taps and more take the stem (`thin`) kernel under `Im2colGemm`.
    let (kh, kw) = if wide { (3, 3) } else { (small(u, 0, 7)?, small(u, 0, 7)?) };
    let (sh, sw, dh, dw) = if wide {
        (1, 1, small(u, 0, 3)?, 1)
    } else {
        (small(u, 0, 3)?, small(u, 0, 3)?, small(u, 0, 3)?, small(u, 0, 3)?)
    };
    let p = Padding::new(small(u, 0, 3)?, small(u, 0, 3)?, small(u, 0, 3)?, small(u, 0, 3)?);
    let conv =
        Conv2d::new(kh, kw).stride_hw(sh, sw).dilation_hw(dh, dw).padding(p).groups(g).rounding(rounding(u)?);
    let geometry = ConvGeometry::new(Dims::new(n, c, h, w), k, conv);
    let activation =
        *u.choose(&[Activation::Identity, Activation::Relu, Activation::Clamp { min: -0.5, max: 0.75 }])?;
    Ok(ConvCase {
        geometry,
        layout: layout(u)?,
        filter_layout: *u.choose(&[FilterLayout::Oihw, FilterLayout::Ohwi, FilterLayout::Hwio])?,
        algorithm: *u.choose(&[
            Algorithm::Auto,
            Algorithm::Direct,
            Algorithm::Im2colGemm,
            Algorithm::Pointwise,
            Algorithm::Depthwise,
            Algorithm::Winograd,
        ])?,
        exec: isa(u)?,
        activation,
        bias: u.arbitrary()?,
        residual: u.arbitrary()?,
    })
}

/// Forward convolution: every algorithm, ISA, layout and epilogue on small shapes.
pub fn conv(data_bytes: &[u8]) {
    let mut u = Unstructured::new(data_bytes);
    let _ = conv_inner(&mut u);
}

fn conv_inner(u: &mut Unstructured<'_>) -> AResult<()> {
    let case = conv_case(u)?;
    let Ok(g) = case.geometry else { return Ok(()) };
    // Drawn before the data: past the input's bytes it would always say yes, and every
    // case with more data than bytes only tested the short workspace.
    let short_ws: bool = u.ratio(1u8, 8u8)?;
    let x = data(u, g.input().count().unwrap())?;
    let w = data(u, g.filter().count().unwrap())?;
    let b = data(u, g.output().c)?;
    let r = data(u, g.output().count().unwrap())?;
    let xv = TensorView::new(&x, g.input(), case.layout).unwrap();
    let wv = FilterView::new(&w, g.filter(), case.filter_layout).unwrap();
    let rv = TensorView::new(&r, g.output(), case.layout).unwrap();
    let mut epi = Epilogue::new().activation(case.activation);
    if case.bias {
        epi = epi.bias(&b);
    }
    if case.residual {
        epi = epi.residual(rv);
    }
    let opts = Conv2dOptions { algorithm: case.algorithm, epilogue: epi };
    let supported = case.algorithm.supports(&g);
    let ws_len = simdconv::conv2d_workspace_len(&g, case.algorithm, case.layout);
    assert_eq!(ws_len.is_ok(), supported.is_ok(), "workspace query and support disagree");
    let Ok(ws_len) = ws_len else {
        // Unsupported by name: the call must say so too.
        let mut y = vec![0.0f32; g.output().count().unwrap()];
        let yv = TensorViewMut::new(&mut y, g.output(), case.layout).unwrap();
        let e = simdconv::conv2d(&case.exec, &g, &opts, xv, wv, yv, &mut []).unwrap_err();
        assert_eq!(Err(e), supported);
        return Ok(());
    };
    let mut ws = vec![0.0f32; if short_ws && ws_len > 0 { ws_len - 1 } else { ws_len }];
    let mut y = vec![f32::NAN; g.output().count().unwrap()];
    let yv = TensorViewMut::new(&mut y, g.output(), case.layout).unwrap();
    let got = simdconv::conv2d(&case.exec, &g, &opts, xv, wv, yv, &mut ws);
    if short_ws && ws_len > 0 {
        assert_eq!(got, Err(Error::WorkspaceTooSmall { needed: ws_len, actual: ws_len - 1 }));
        return Ok(());
    }
    got.unwrap_or_else(|e| panic!("{:?} failed on a valid problem: {e}", case.algorithm));
    // Reference in f64, epilogue applied afterwards; bound from |x|, |w|.
    let (bias, residual) = (case.bias.then_some(&b[..]), case.residual.then_some(&r[..]));
    let want = conv_reference(&g, &x, &w, bias, residual, case.activation, case.layout, case.filter_layout);
    let (mag, terms) = if case.algorithm == Algorithm::Winograd {
        // Winograd's documented bound: gamma(C_g + 32) * (48^2 sum_c max|w_kc| max|x_nc| +
        // |bias| + |residual|) (check_close adds 2 to `terms`).
        (winograd_magnitude(&g, &xv, &wv, bias, residual, case.layout), g.filter().i + 30)
    } else {
        let fd = g.filter();
        (conv_magnitude(&g, &x, &w, bias, residual, case.layout, case.filter_layout), fd.i * fd.kh * fd.kw)
    };
    if let Err(msg) = crate::check_close(&y, &want, &mag, terms) {
        panic!("{:?} on {} disagrees with the reference: {msg}\n{g:?}", case.algorithm, case.exec.isa());
    }
    Ok(())
}

/// Winograd's error magnitude per output of `g` (in `layout`'s order): `48^2 sum_c
/// max|w_kc| max|x_nc|` over the output channel's group, plus `|bias|` and `|residual|`
/// (see the `conv::winograd` module docs).
fn winograd_magnitude(
    g: &ConvGeometry,
    x: &TensorView<'_, f32>,
    w: &FilterView<'_, f32>,
    b: Option<&[f32]>,
    r: Option<&[f32]>,
    layout: Layout,
) -> Vec<f64> {
    let (id, od, fd) = (g.input(), g.output(), g.filter());
    let kg = fd.o / g.groups();
    let xmax = |n: usize, c: usize| {
        let mut m = 0.0f64;
        crate::for_each_index(Dims::new(1, 1, id.h, id.w), |_, _, h, ww| {
            m = m.max(f64::from(x.get(n, c, h, ww).abs()))
        });
        m
    };
    let wmax = |k: usize, c: usize| {
        let mut m = 0.0f64;
        for kh in 0..fd.kh {
            for kw in 0..fd.kw {
                m = m.max(f64::from(w.get(k, c, kh, kw).abs()));
            }
        }
        m
    };
    let mut per = vec![0.0f64; od.n * od.c];
    for n in 0..od.n {
        for k in 0..od.c {
            let grp = k / kg;
            let s: f64 = (0..fd.i).map(|c| wmax(k, c) * xmax(n, grp * fd.i + c)).sum();
            per[n * od.c + k] = 48.0 * 48.0 * s + b.map_or(0.0, |b| f64::from(b[k].abs()));
        }
    }
    let mut mag = vec![0.0f64; od.count().unwrap()];
    let ys = crate::act_strides(od, layout, false);
    crate::for_each_index(od, |n, k, h, ww| {
        let i = n * ys[0] + k * ys[1] + h * ys[2] + ww * ys[3];
        mag[i] = per[n * od.c + k] + r.map_or(0.0, |r| f64::from(r[i].abs()));
    });
    mag
}

/// `conv(x, w) + b + r` in f64 with every input first mapped by `widen` (plain widening
/// for the reference, absolute values for the error bound's magnitude).
#[allow(clippy::too_many_arguments)]
fn conv_f64(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    r: Option<&[f32]>,
    layout: Layout,
    fl: FilterLayout,
    widen: fn(&[f32]) -> Vec<f64>,
) -> Vec<f64> {
    let (x64, w64, b64) = (widen(x), widen(w), b.map(widen));
    let mut y = vec![0.0f64; g.output().count().unwrap()];
    reference::conv2d(
        g,
        TensorView::new(&x64, g.input(), layout).unwrap(),
        FilterView::new(&w64, g.filter(), fl).unwrap(),
        b64.as_deref(),
        TensorViewMut::new(&mut y, g.output(), layout).unwrap(),
    )
    .unwrap();
    if let Some(r) = r {
        for (v, rv) in y.iter_mut().zip(widen(r)) {
            *v += rv;
        }
    }
    y
}

/// The f64 reference of `activation(conv(x, w) + b + r)` in `layout`.
#[allow(clippy::too_many_arguments)]
#[must_use]
pub fn conv_reference(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    r: Option<&[f32]>,
    act: Activation,
    layout: Layout,
    fl: FilterLayout,
) -> Vec<f64> {
    let mut y = conv_f64(g, x, w, b, r, layout, fl, crate::to_f64);
    for v in &mut y {
        *v = match act {
            Activation::Identity => *v,
            Activation::Relu => v.max(0.0),
            Activation::Clamp { min, max } => v.max(f64::from(min)).min(f64::from(max)),
        };
    }
    y
}

/// The magnitude `sum |w x| + |b| + |r|` each output's error bound scales with.
#[must_use]
pub fn conv_magnitude(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    r: Option<&[f32]>,
    layout: Layout,
    fl: FilterLayout,
) -> Vec<f64> {
    conv_f64(g, x, w, b, r, layout, fl, crate::abs_f64)
}

/// `n` pooling inputs: NaN, +-inf and -0 one time in 41 each, else values in `[-16, 16)`
/// in steps of 1/8; past the input's bytes from the fixed sequence of [`fallback`]
/// (they used to be all NaN there).
fn pool_data(u: &mut Unstructured<'_>, n: usize) -> AResult<Vec<f32>> {
    let mut v = Vec::with_capacity(n);
    let mut state = 0x2545_F491u32;
    for _ in 0..n {
        let (kind, byte) = if u.is_empty() {
            (fallback(&mut state) % 41, fallback(&mut state) as i8)
        } else {
            (u.int_in_range(0u8..=40)?, u.arbitrary::<i8>()?)
        };
        v.push(match kind {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            3 => -0.0,
            _ => f32::from(byte) / 8.0,
        });
    }
    Ok(v)
}

fn same_f32(a: f32, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || f64::from(a) == b
}

/// Pooling forward and backward: every kernel, ISA and layout on small shapes, including
/// infinities and NaN.
pub fn pool(data_bytes: &[u8]) {
    let mut u = Unstructured::new(data_bytes);
    let _ = pool_inner(&mut u);
}

fn pool_inner(u: &mut Unstructured<'_>) -> AResult<()> {
    // One case in eight is a 2x2 or 3x3 window of stride 2 (half of them padded) over up to 40
    // channels and rows up to 40 wide: the AVX2 kernels' whole blocks then run (8 outputs
    // a row in NCHW, 32 or 8 channels in NHWC). Before these cases, rows had at most 4
    // outputs and pixels at most 5 channels, so the fuzzers ran only their masked paths.
    let wide = u.ratio(1u8, 8)?;
    let (n, c, h, w) = if wide {
        (small(u, 1, 2)?, small(u, 1, 40)?, small(u, 2, 12)?, small(u, 2, 40)?)
    } else {
        (small(u, 0, 2)?, small(u, 0, 5)?, small(u, 0, 9)?, small(u, 0, 9)?)
    };
    let (kh, kw) = if wide {
        let f = small(u, 2, 3)?;
        (f, f)
    } else {
        (small(u, 0, 4)?, small(u, 0, 4)?)
    };
    let (sh, sw, dh, dw) = if wide {
        (2, 2, 1, 1)
    } else {
        (small(u, 0, 3)?, small(u, 0, 3)?, small(u, 1, 2)?, small(u, 1, 2)?)
    };
    // Half the wide cases pad (each side 0 or 1): the NCHW kernel's padded entry then
    // runs its interior, border rows and border columns.
    let p = if wide && u.arbitrary::<bool>()? {
        Padding::new(small(u, 0, 1)?, small(u, 0, 1)?, small(u, 0, 1)?, small(u, 0, 1)?)
    } else if wide {
        Padding::new(0, 0, 0, 0)
    } else {
        Padding::new(small(u, 0, 2)?, small(u, 0, 2)?, small(u, 0, 2)?, small(u, 0, 2)?)
    };
    let pool = Pool2d::new(kh, kw).stride_hw(sh, sw).dilation_hw(dh, dw).padding(p).rounding(rounding(u)?);
    let Ok(g) = PoolGeometry::new(Dims::new(n, c, h, w), pool) else { return Ok(()) };
    let exec = isa(u)?;
    let layout = layout(u)?;
    // The kernel and the average options are drawn before the data: past the input's
    // bytes they would always be max pooling and the defaults.
    let kind = u.int_in_range(0u8..=3)?;
    let avg_opts = simdconv::AvgPoolOptions {
        count_include_pad: u.arbitrary()?,
        divisor: if u.ratio(1u8, 4u8)? { std::num::NonZeroUsize::new(small(u, 1, 9)?) } else { None },
    };
    let x = pool_data(u, g.input().count().unwrap())?;
    let dy = data(u, g.output().count().unwrap())?;
    let x64 = crate::to_f64(&x);
    let dy64 = crate::to_f64(&dy);
    let xv = TensorView::new(&x, g.input(), layout).unwrap();
    let xv64 = TensorView::new(&x64, g.input(), layout).unwrap();
    let out_len = g.output().count().unwrap();
    let in_len = g.input().count().unwrap();
    let taps = pool.window().kernel()[0] * pool.window().kernel()[1];
    match kind {
        0 => {
            // Max with switches, then both backward flavours.
            let (mut y, mut idx) = (vec![0.0f32; out_len], vec![0usize; out_len]);
            let (mut y64, mut idx64) = (vec![0.0f64; out_len], vec![0usize; out_len]);
            simdconv::max_pool2d(
                &exec,
                &g,
                xv,
                TensorViewMut::new(&mut y, g.output(), layout).unwrap(),
                Some(TensorViewMut::new(&mut idx, g.output(), layout).unwrap()),
            )
            .unwrap();
            reference::max_pool2d(
                &g,
                xv64,
                TensorViewMut::new(&mut y64, g.output(), layout).unwrap(),
                Some(TensorViewMut::new(&mut idx64, g.output(), layout).unwrap()),
            )
            .unwrap();
            for i in 0..out_len {
                assert!(same_f32(y[i], y64[i]), "max {i}: {} vs {} on {}", y[i], y64[i], exec.isa());
            }
            assert_eq!(idx, idx64, "switches differ on {}", exec.isa());
            // Values only: the forward kernels without switches (another path).
            let mut yv = vec![0.0f32; out_len];
            simdconv::max_pool2d(
                &exec,
                &g,
                xv,
                TensorViewMut::new(&mut yv, g.output(), layout).unwrap(),
                None,
            )
            .unwrap();
            for i in 0..out_len {
                assert!(
                    same_f32(yv[i], y64[i]),
                    "max (values) {i}: {} vs {} on {}",
                    yv[i],
                    y64[i],
                    exec.isa()
                );
            }
            let mut dx = vec![0.0f32; in_len];
            let mut dx64 = vec![0.0f64; in_len];
            simdconv::max_pool2d_backward(
                &exec,
                &g,
                TensorView::new(&dy, g.output(), layout).unwrap(),
                TensorView::new(&idx, g.output(), layout).unwrap(),
                TensorViewMut::new(&mut dx, g.input(), layout).unwrap(),
            )
            .unwrap();
            reference::max_pool2d_backward(
                &g,
                TensorView::new(&dy64, g.output(), layout).unwrap(),
                TensorView::new(&idx64, g.output(), layout).unwrap(),
                TensorViewMut::new(&mut dx64, g.input(), layout).unwrap(),
            )
            .unwrap();
            let dy_abs = crate::abs_f64(&dy);
            let mut mag = vec![0.0f64; in_len];
            reference::max_pool2d_backward(
                &g,
                TensorView::new(&dy_abs, g.output(), layout).unwrap(),
                TensorView::new(&idx64, g.output(), layout).unwrap(),
                TensorViewMut::new(&mut mag, g.input(), layout).unwrap(),
            )
            .unwrap();
            crate::check_close(&dx, &dx64, &mag, taps + 1).unwrap();
            let mut dx2 = vec![0.0f32; in_len];
            simdconv::max_pool2d_backward_recompute(
                &exec,
                &g,
                xv,
                TensorView::new(&dy, g.output(), layout).unwrap(),
                TensorViewMut::new(&mut dx2, g.input(), layout).unwrap(),
            )
            .unwrap();
            assert_eq!(dx, dx2, "recomputed switches differ on {}", exec.isa());
        }
        1 => {
            let opts = avg_opts;
            let mut y = vec![0.0f32; out_len];
            let mut y64 = vec![0.0f64; out_len];
            simdconv::avg_pool2d(
                &exec,
                &g,
                xv,
                TensorViewMut::new(&mut y, g.output(), layout).unwrap(),
                opts,
            )
            .unwrap();
            reference::avg_pool2d(&g, xv64, TensorViewMut::new(&mut y64, g.output(), layout).unwrap(), opts)
                .unwrap();
            let x_abs = crate::abs_f64(&x);
            let mut mag = vec![0.0f64; out_len];
            reference::avg_pool2d(
                &g,
                TensorView::new(&x_abs, g.input(), layout).unwrap(),
                TensorViewMut::new(&mut mag, g.output(), layout).unwrap(),
                opts,
            )
            .unwrap();
            crate::check_close(&y, &y64, &mag, taps + 1).unwrap();
            let mut dx = vec![0.0f32; in_len];
            let mut dx64 = vec![0.0f64; in_len];
            simdconv::avg_pool2d_backward(
                &exec,
                &g,
                TensorView::new(&dy, g.output(), layout).unwrap(),
                TensorViewMut::new(&mut dx, g.input(), layout).unwrap(),
                opts,
            )
            .unwrap();
            reference::avg_pool2d_backward(
                &g,
                TensorView::new(&dy64, g.output(), layout).unwrap(),
                TensorViewMut::new(&mut dx64, g.input(), layout).unwrap(),
                opts,
            )
            .unwrap();
            let dy_abs = crate::abs_f64(&dy);
            let mut dmag = vec![0.0f64; in_len];
            reference::avg_pool2d_backward(
                &g,
                TensorView::new(&dy_abs, g.output(), layout).unwrap(),
                TensorViewMut::new(&mut dmag, g.input(), layout).unwrap(),
                opts,
            )
            .unwrap();
            crate::check_close(&dx, &dx64, &dmag, taps + 1).unwrap();
        }
        2 => {
            let mut y = vec![0.0f32; out_len];
            let mut y64 = vec![0.0f64; out_len];
            simdconv::l2_pool2d(&exec, &g, xv, TensorViewMut::new(&mut y, g.output(), layout).unwrap())
                .unwrap();
            reference::l2_pool2d(&g, xv64, TensorViewMut::new(&mut y64, g.output(), layout).unwrap())
                .unwrap();
            // sqrt halves the relative error of the sum of squares.
            crate::check_close(&y, &y64, &y64.iter().map(|v| v.abs()).collect::<Vec<_>>(), taps + 2).unwrap();
        }
        _ => {
            let gd = Dims::new(n, c, 1, 1);
            let mut y = vec![0.0f32; n * c];
            let mut y64 = vec![0.0f64; n * c];
            simdconv::global_max_pool(&exec, xv, TensorViewMut::new(&mut y, gd, layout).unwrap()).unwrap();
            reference::global_max_pool(xv64, TensorViewMut::new(&mut y64, gd, layout).unwrap()).unwrap();
            for i in 0..n * c {
                assert!(same_f32(y[i], y64[i]), "global max {i}: {} vs {}", y[i], y64[i]);
            }
            simdconv::global_avg_pool(&exec, xv, TensorViewMut::new(&mut y, gd, layout).unwrap()).unwrap();
            reference::global_avg_pool(xv64, TensorViewMut::new(&mut y64, gd, layout).unwrap()).unwrap();
            let x_abs = crate::abs_f64(&x);
            let mut mag = vec![0.0f64; n * c];
            reference::global_avg_pool(
                TensorView::new(&x_abs, g.input(), layout).unwrap(),
                TensorViewMut::new(&mut mag, gd, layout).unwrap(),
            )
            .unwrap();
            crate::check_close(&y, &y64, &mag, h * w + 1).unwrap();
        }
    }
    Ok(())
}

use simdconv::{BackwardAlgorithm, FilterViewMut};

/// Convolution backward (data, filter, bias) on small shapes, every algorithm and ISA.
pub fn backward(data_bytes: &[u8]) {
    let mut u = Unstructured::new(data_bytes);
    let _ = backward_inner(&mut u);
}

fn backward_inner(u: &mut Unstructured<'_>) -> AResult<()> {
    let case = conv_case(u)?;
    let Ok(g) = case.geometry else { return Ok(()) };
    // `Flipped` computes only data gradients and `Winograd` only filter gradients: asked
    // for the other, they must return the error their workspace query returns.
    let algo = *u.choose(&[
        BackwardAlgorithm::Auto,
        BackwardAlgorithm::Gemm,
        BackwardAlgorithm::Direct,
        BackwardAlgorithm::Flipped,
        BackwardAlgorithm::Winograd,
    ])?;
    let (layout, fl, exec) = (case.layout, case.filter_layout, case.exec);
    let x = data(u, g.input().count().unwrap())?;
    let w = data(u, g.filter().count().unwrap())?;
    let dy = data(u, g.output().count().unwrap())?;
    let (x64, w64, dy64) = (crate::to_f64(&x), crate::to_f64(&w), crate::to_f64(&dy));
    let (xa, wa, dya) = (crate::abs_f64(&x), crate::abs_f64(&w), crate::abs_f64(&dy));
    let fd = g.filter();
    let (xv, dyv) =
        (TensorView::new(&x, g.input(), layout).unwrap(), TensorView::new(&dy, g.output(), layout).unwrap());
    let wv = FilterView::new(&w, fd, fl).unwrap();
    // Data gradient.
    let mut dx = vec![f32::NAN; x.len()];
    let dxv = TensorViewMut::new(&mut dx, g.input(), layout).unwrap();
    match simdconv::conv2d_backward_data_workspace_len(&g, algo, layout) {
        Err(e) => {
            let got = simdconv::conv2d_backward_data(&exec, &g, algo, dyv, wv, dxv, &mut []);
            assert_eq!(got, Err(e), "backward data {algo:?}: the call and the workspace query disagree");
        }
        Ok(ws_len) => {
            let mut ws = vec![0.0f32; ws_len];
            simdconv::conv2d_backward_data(&exec, &g, algo, dyv, wv, dxv, &mut ws)
                .unwrap_or_else(|e| panic!("backward data {algo:?}: {e}"));
            let mut want = vec![0.0f64; x.len()];
            let mut mag = vec![0.0f64; x.len()];
            for (dyv, wv, out) in [(&dy64, &w64, &mut want), (&dya, &wa, &mut mag)] {
                reference::conv2d_backward_data(
                    &g,
                    TensorView::new(dyv, g.output(), layout).unwrap(),
                    FilterView::new(wv, fd, fl).unwrap(),
                    TensorViewMut::new(out, g.input(), layout).unwrap(),
                )
                .unwrap();
            }
            // Every algorithm (`Flipped` too: a forward convolution over the same products)
            // sums `K_g * KH * KW` products per element.
            let terms = fd.o / g.groups() * fd.kh * fd.kw;
            crate::check_close(&dx, &want, &mag, terms)
                .unwrap_or_else(|m| panic!("backward data {algo:?} on {}: {m}", exec.isa()));
        }
    }
    // Filter gradient.
    let mut dw = vec![f32::NAN; w.len()];
    let dwv = FilterViewMut::new(&mut dw, fd, fl).unwrap();
    let o = g.output();
    match simdconv::conv2d_backward_filter_workspace_len(&g, algo, layout) {
        Err(e) => {
            let got = simdconv::conv2d_backward_filter(&exec, &g, algo, xv, dyv, dwv, &mut []);
            assert_eq!(got, Err(e), "backward filter {algo:?}: the call and the workspace query disagree");
        }
        Ok(ws_len) => {
            let mut ws = vec![0.0f32; ws_len];
            simdconv::conv2d_backward_filter(&exec, &g, algo, xv, dyv, dwv, &mut ws)
                .unwrap_or_else(|e| panic!("backward filter {algo:?}: {e}"));
            let mut want = vec![0.0f64; w.len()];
            let mut mag = vec![0.0f64; w.len()];
            for (xv, dyv, out) in [(&x64, &dy64, &mut want), (&xa, &dya, &mut mag)] {
                reference::conv2d_backward_filter(
                    &g,
                    TensorView::new(xv, g.input(), layout).unwrap(),
                    TensorView::new(dyv, g.output(), layout).unwrap(),
                    FilterViewMut::new(out, fd, fl).unwrap(),
                )
                .unwrap();
            }
            let winograd = simdconv::select_backward_filter_algorithm(&g, algo, layout)
                == Ok(BackwardAlgorithm::Winograd);
            let terms = if winograd {
                // The documented Winograd bound, gamma(T + 32) * (160/3)^2 * sum_n (sum
                // |dy[n, k]|) max |x[n, c]| (check_close adds 2 to `terms`).
                mag = winograd_filter_magnitude(&g, &xv, &dyv, fl);
                crate::winograd_tiles(&g) + 30
            } else {
                o.n * o.h * o.w
            };
            crate::check_close(&dw, &want, &mag, terms)
                .unwrap_or_else(|m| panic!("backward filter {algo:?} on {}: {m}", exec.isa()));
        }
    }
    // Bias gradient.
    let mut db = vec![f32::NAN; o.c];
    simdconv::conv2d_backward_bias(&exec, dyv, &mut db).unwrap();
    let mut want = vec![0.0f64; o.c];
    let mut mag = vec![0.0f64; o.c];
    reference::conv2d_backward_bias(TensorView::new(&dy64, o, layout).unwrap(), &mut want).unwrap();
    reference::conv2d_backward_bias(TensorView::new(&dya, o, layout).unwrap(), &mut mag).unwrap();
    crate::check_close(&db, &want, &mag, o.n * o.h * o.w).unwrap();
    Ok(())
}

/// The Winograd filter gradient's error magnitude per weight of `g` (in `fl`'s order):
/// `(160/3)^2 sum_n (sum |dy[n, k]|) max |x[n, c]|` over the weight's group (see the
/// `backward::winograd` module docs).
fn winograd_filter_magnitude(
    g: &ConvGeometry,
    x: &TensorView<'_, f32>,
    dy: &TensorView<'_, f32>,
    fl: FilterLayout,
) -> Vec<f64> {
    let (id, od, fd) = (g.input(), g.output(), g.filter());
    let kg = fd.o / g.groups();
    // Sum and largest of |v| over plane `(n, c)` of `v` (`h x w`).
    let plane = |v: &TensorView<'_, f32>, n: usize, c: usize, h: usize, w: usize| {
        let (mut sum, mut max) = (0.0f64, 0.0f64);
        for y in 0..h {
            for xx in 0..w {
                let a = f64::from(v.get(n, c, y, xx).abs());
                (sum, max) = (sum + a, max.max(a));
            }
        }
        (sum, max)
    };
    let fs = fl.strides(fd);
    let mut mag = vec![0.0f64; fd.count().unwrap()];
    for k in 0..fd.o {
        for c in 0..fd.i {
            let ci = k / kg * fd.i + c;
            let m: f64 =
                (0..od.n).map(|n| plane(dy, n, k, od.h, od.w).0 * plane(x, n, ci, id.h, id.w).1).sum();
            for kh in 0..fd.kh {
                for kw in 0..fd.kw {
                    mag[k * fs[0] + c * fs[1] + kh * fs[2] + kw * fs[3]] = (160.0f64 / 3.0).powi(2) * m;
                }
            }
        }
    }
    mag
}

/// Workspace queries on any geometry, huge ones included: they never panic, and for a
/// valid geometry they agree on whether the algorithm supports it.
pub fn workspace(data_bytes: &[u8]) {
    let mut u = Unstructured::new(data_bytes);
    let _ = workspace_inner(&mut u);
}

fn workspace_inner(u: &mut Unstructured<'_>) -> AResult<()> {
    let (n, c, h, w, k) = (size(u)?, size(u)?, size(u)?, size(u)?, size(u)?);
    let (kh, kw, s, d) = (size(u)?, size(u)?, size(u)?, size(u)?);
    let p = Padding::new(size(u)?, size(u)?, size(u)?, size(u)?);
    let g = size(u)?;
    let conv = Conv2d::new(kh, kw).stride(s).dilation(d).padding(p).groups(g).rounding(rounding(u)?);
    let Ok(geo) = ConvGeometry::new(Dims::new(n, c, h, w), k, conv) else { return Ok(()) };
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for algo in [
            Algorithm::Auto,
            Algorithm::Direct,
            Algorithm::Im2colGemm,
            Algorithm::Pointwise,
            Algorithm::Depthwise,
            Algorithm::Winograd,
        ] {
            let len = simdconv::conv2d_workspace_len(&geo, algo, layout);
            assert_eq!(len.is_ok(), algo.supports(&geo).is_ok(), "{algo:?}: {len:?}");
            if let Err(e) = len {
                assert!(matches!(e, Error::Unsupported(_) | Error::Overflow { .. }), "{e:?}");
            }
        }
        for algo in [
            BackwardAlgorithm::Auto,
            BackwardAlgorithm::Gemm,
            BackwardAlgorithm::Direct,
            BackwardAlgorithm::Flipped,
            BackwardAlgorithm::Winograd,
        ] {
            let _ = simdconv::conv2d_backward_data_workspace_len(&geo, algo, layout);
            let _ = simdconv::conv2d_backward_filter_workspace_len(&geo, algo, layout);
        }
        let _ = simdconv::locally_connected_workspace_len(&geo);
    }
    Ok(())
}
