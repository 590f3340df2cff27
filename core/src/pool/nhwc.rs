//! NHWC kernels: each pixel's channels are contiguous, so every window tap is a run of `C`
//! values and the kernels vectorise over channels (4 vectors at a time, then 1, then a
//! scalar tail). Any geometry (stride, dilation, padding, ceil windows) takes the same path.

use pulp::{Simd, WithSimd};

use super::plan::Plan;
use super::simd::Red;
use super::Job;

/// One vector from `x[off..off + L]`.
#[inline(always)]
pub(crate) fn load<S: Simd>(x: &[f32], off: usize) -> S::f32s {
    S::as_simd_f32s(&x[off..off + S::F32_LANES]).0[0]
}

/// A whole window: `kh x kw` taps, `dy` / `dx` elements apart, over `c` channels.
#[derive(Clone, Copy)]
struct Window {
    kh: usize,
    kw: usize,
    dy: usize,
    dx: usize,
    c: usize,
}

/// One output pixel whose window lies inside the input (its first tap at `x[base..]`):
/// 8 vectors of channels at a time, then 4, then 1, then a scalar tail. Each window row
/// folds into its own accumulators, merged after the row (shorter dependency chains).
/// AVX2 (16 registers) skips the 8-vector blocks for windows of up to 9 taps: measured on
/// an AVX2-only AMD EPYC (in-process A/B, medians of 500 interleaved calls), 3x3 stride-2
/// max pooling over 55 x 55 x 96 channels took 0.70-0.77x the time (64 channels:
/// 0.95x, 256: 1.00-1.03x), 2x2 over 224 x 224 x 64 0.96x; global 7 x 7 pooling keeps
/// them (4-vector blocks alone: 1.13-1.15x its time).
#[inline(always)]
fn window<R: Red, S: Simd>(simd: S, x: &[f32], base: usize, win: Window, yrun: &mut [f32], vscale: S::f32s) {
    let mut ci = 0;
    if S::F32_LANES != 8 || win.kh * win.kw > 9 {
        ci = blocks::<R, S, 8>(simd, x, base, win, yrun, vscale, ci);
    }
    ci = blocks::<R, S, 4>(simd, x, base, win, yrun, vscale, ci);
    ci = blocks::<R, S, 1>(simd, x, base, win, yrun, vscale, ci);
    if ci < win.c {
        window_tail::<R>(x, base, win, &mut yrun[ci..], ci, vscale_scalar::<S>(vscale));
    }
}

/// [`window`]'s blocks of `G` vectors of channels from channel `ci` on, while whole blocks
/// remain; returns the first channel left.
#[inline(always)]
fn blocks<R: Red, S: Simd, const G: usize>(
    simd: S,
    x: &[f32],
    base: usize,
    win: Window,
    yrun: &mut [f32],
    vscale: S::f32s,
    mut ci: usize,
) -> usize {
    let l = S::F32_LANES;
    let Window { kh, kw, dy, dx, c } = win;
    while ci + G * l <= c {
        let mut acc = [simd.splat_f32s(R::INIT); G];
        for ky in 0..kh {
            let row = base + ky * dy + ci;
            let v = &x[row..row + G * l];
            let mut racc = [simd.splat_f32s(R::INIT); G];
            for (j, a) in racc.iter_mut().enumerate() {
                *a = R::vfirst(simd, load::<S>(v, j * l));
            }
            for kx in 1..kw {
                let off = row + kx * dx;
                let v = &x[off..off + G * l];
                for (j, a) in racc.iter_mut().enumerate() {
                    *a = R::v(simd, *a, load::<S>(v, j * l));
                }
            }
            for (a, r) in acc.iter_mut().zip(racc) {
                *a = if ky == 0 { r } else { R::vmerge(simd, *a, r) };
            }
        }
        let out = &mut yrun[ci..ci + G * l];
        for (j, a) in acc.into_iter().enumerate() {
            S::as_mut_simd_f32s(&mut out[j * l..j * l + l]).0[0] = R::vfin(simd, a, vscale);
        }
        ci += G * l;
    }
    ci
}

/// The first lane of `v`.
#[inline(always)]
fn vscale_scalar<S: Simd>(v: S::f32s) -> f32 {
    let mut o = [0.0f32; super::simd::MAX_LANES];
    S::as_mut_simd_f32s(&mut o[..S::F32_LANES]).0[0] = v;
    o[0]
}

/// [`window`]'s channels from `ci` on, one at a time.
#[inline(never)]
fn window_tail<R: Red>(x: &[f32], base: usize, win: Window, yrun: &mut [f32], ci: usize, scale: f32) {
    for (cc, yv) in yrun.iter_mut().enumerate() {
        let mut acc = R::INIT;
        for ky in 0..win.kh {
            for kx in 0..win.kw {
                acc = R::s(acc, x[base + ky * win.dy + kx * win.dx + ci + cc]);
            }
        }
        *yv = R::sfin(acc, scale);
    }
}

/// Forward values-only pooling.
pub(crate) struct Fwd<'a, R>(pub Job<'a, R>);

impl<R: Red> WithSimd for Fwd<'_, R> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Fwd(Job { p, x, xs, y, ys, r }) = self;
        #[cfg(target_arch = "x86_64")]
        {
            use super::avx512::{global, s2, Io};
            if s2::<S, R>(p, Io { x, xs, y: &mut *y, ys }, r, true)
                || global::<S, R>(p, Io { x, xs, y: &mut *y, ys }, r, false)
                || super::avx2::nhwc_s2::<S, R>(p, Io { x, xs, y: &mut *y, ys }, r)
            {
                return;
            }
        }
        let c = p.c;
        let l = S::F32_LANES;
        for n in 0..p.n {
            let xn = n * xs[0];
            for oy in 0..p.oh {
                let (ky0, ky1, py) = p.ah.taps(oy);
                // Pixels whose windows lie wholly inside the input: the whole window at
                // once, with 2x2 and 3x3 windows unrolled.
                let inner = oy >= p.ah.lo && oy < p.ah.hi;
                let (lo, hi) = if inner { (p.aw.lo, p.aw.hi) } else { (0, 0) };
                // AVX2 has a kernel for the inner pixels of 3x3 stride-2 windows.
                #[cfg(target_arch = "x86_64")]
                let done = hi > lo
                    && super::avx2::nhwc_s2_interior::<S, R>(
                        p,
                        super::avx512::Io { x, xs, y: &mut *y, ys },
                        r,
                        n,
                        oy,
                        lo,
                        hi,
                    );
                #[cfg(not(target_arch = "x86_64"))]
                let done = false;
                if hi > lo && !done {
                    let scale = r.scale(p.ah.kernel * p.aw.kernel, p.ah.kernel * p.aw.kernel);
                    let vscale = simd.splat_f32s(scale);
                    let win = Window {
                        kh: p.ah.kernel,
                        kw: p.aw.kernel,
                        dy: p.ah.dilation * xs[2],
                        dx: p.aw.dilation * xs[3],
                        c,
                    };
                    let y0 = p.ah.coord(oy, 0);
                    for ox in lo..hi {
                        let base = xn + y0 * xs[2] + p.aw.coord(ox, 0) * xs[3];
                        let yo = n * ys[0] + oy * ys[2] + ox * ys[3];
                        let yrun = &mut y[yo..yo + c];
                        match (win.kh, win.kw) {
                            (2, 2) => {
                                window::<R, S>(simd, x, base, Window { kh: 2, kw: 2, ..win }, yrun, vscale)
                            }
                            (3, 3) => {
                                window::<R, S>(simd, x, base, Window { kh: 3, kw: 3, ..win }, yrun, vscale)
                            }
                            _ => window::<R, S>(simd, x, base, win, yrun, vscale),
                        }
                    }
                }
                for ox in (0..lo).chain(hi..p.ow) {
                    let (kx0, kx1, px) = p.aw.taps(ox);
                    let scale = r.scale((ky1 - ky0) * (kx1 - kx0), py.saturating_mul(px));
                    let vscale = simd.splat_f32s(scale);
                    let yo = n * ys[0] + oy * ys[2] + ox * ys[3];
                    let yrun = &mut y[yo..yo + c];
                    let mut ci = 0;
                    // Each window row folds into its own accumulators, merged after the
                    // row: shorter dependency chains, same result (the max fold is
                    // associative; sums only round differently).
                    while ci + 4 * l <= c {
                        let mut acc = [simd.splat_f32s(R::INIT); 4];
                        for ky in ky0..ky1 {
                            let xr = xn + p.ah.coord(oy, ky) * xs[2] + ci;
                            let off = xr + p.aw.coord(ox, kx0) * xs[3];
                            let v = &x[off..off + 4 * l];
                            let mut racc: [S::f32s; 4] =
                                core::array::from_fn(|j| R::vfirst(simd, load::<S>(v, j * l)));
                            for kx in kx0 + 1..kx1 {
                                let off = xr + p.aw.coord(ox, kx) * xs[3];
                                let v = &x[off..off + 4 * l];
                                for (j, a) in racc.iter_mut().enumerate() {
                                    *a = R::v(simd, *a, load::<S>(v, j * l));
                                }
                            }
                            if ky == ky0 {
                                acc = racc;
                            } else {
                                for (a, r) in acc.iter_mut().zip(racc) {
                                    *a = R::vmerge(simd, *a, r);
                                }
                            }
                        }
                        let out = &mut yrun[ci..ci + 4 * l];
                        for (j, a) in acc.into_iter().enumerate() {
                            S::as_mut_simd_f32s(&mut out[j * l..j * l + l]).0[0] = R::vfin(simd, a, vscale);
                        }
                        ci += 4 * l;
                    }
                    while ci + l <= c {
                        let mut acc = simd.splat_f32s(R::INIT);
                        for ky in ky0..ky1 {
                            let xr = xn + p.ah.coord(oy, ky) * xs[2] + ci;
                            let mut racc = R::vfirst(simd, load::<S>(x, xr + p.aw.coord(ox, kx0) * xs[3]));
                            for kx in kx0 + 1..kx1 {
                                racc = R::v(simd, racc, load::<S>(x, xr + p.aw.coord(ox, kx) * xs[3]));
                            }
                            acc = if ky == ky0 { racc } else { R::vmerge(simd, acc, racc) };
                        }
                        S::as_mut_simd_f32s(&mut yrun[ci..ci + l]).0[0] = R::vfin(simd, acc, vscale);
                        ci += l;
                    }
                    for (cc, yv) in yrun.iter_mut().enumerate().skip(ci) {
                        let mut acc = R::INIT;
                        for ky in ky0..ky1 {
                            let xr = xn + p.ah.coord(oy, ky) * xs[2] + cc;
                            for kx in kx0..kx1 {
                                acc = R::s(acc, x[xr + p.aw.coord(ox, kx) * xs[3]]);
                            }
                        }
                        *yv = R::sfin(acc, scale);
                    }
                }
            }
        }
    }
}

/// The argmax of every channel of one output pixel: calls `sink(c, value, flat_index)` per
/// channel, with the reference's rules (first maximum in scan order, first NaN wins).
/// Vectorised over channels when flat indices fit in `u32`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn argmax_pixel<S: Simd>(
    simd: S,
    p: &Plan,
    x: &[f32],
    xs: [usize; 4],
    n: usize,
    oy: usize,
    ox: usize,
    mut sink: impl FnMut(usize, f32, usize),
) {
    let l = S::F32_LANES;
    let c = p.c;
    let (ky0, ky1, _) = p.ah.taps(oy);
    let (kx0, kx1, _) = p.aw.taps(ox);
    let w = p.w;
    let first = p.ah.coord(oy, ky0) * w + p.aw.coord(ox, kx0);
    let xn = n * xs[0];
    let mut ci = 0;
    // Flat indices are below h * w; the vector path tracks them in u32 lanes.
    let fits = u32::try_from(p.h * p.w).is_ok();
    if fits && l > 1 {
        let mut vals = [0.0f32; super::simd::MAX_LANES];
        let mut idxs = [0u32; super::simd::MAX_LANES];
        while ci + l <= c {
            let mut best = simd.splat_f32s(f32::NEG_INFINITY);
            let mut idx = simd.splat_u32s(first as u32);
            for ky in ky0..ky1 {
                let iy = p.ah.coord(oy, ky);
                let xr = xn + iy * xs[2] + ci;
                for kx in kx0..kx1 {
                    let ix = p.aw.coord(ox, kx);
                    let off = xr + ix * xs[3];
                    let (v, _) = S::as_simd_f32s(&x[off..off + l]);
                    let v = v[0];
                    let better =
                        simd.or_m32s(simd.greater_than_f32s(v, best), simd.not_m32s(simd.equal_f32s(v, v)));
                    let take = simd.and_m32s(better, simd.equal_f32s(best, best));
                    best = simd.select_f32s(take, v, best);
                    idx = simd.select_u32s(take, simd.splat_u32s((iy * w + ix) as u32), idx);
                }
            }
            S::as_mut_simd_f32s(&mut vals[..l]).0[0] = best;
            S::as_mut_simd_u32s(&mut idxs[..l]).0[0] = idx;
            for j in 0..l {
                sink(ci + j, vals[j], idxs[j] as usize);
            }
            ci += l;
        }
    }
    for cc in ci..c {
        let mut best = f32::NEG_INFINITY;
        let mut bi = first;
        for ky in ky0..ky1 {
            let iy = p.ah.coord(oy, ky);
            let xr = xn + iy * xs[2] + cc;
            for kx in kx0..kx1 {
                let ix = p.aw.coord(ox, kx);
                let v = x[xr + ix * xs[3]];
                if (v > best || v.is_nan()) && !best.is_nan() {
                    best = v;
                    bi = iy * w + ix;
                }
            }
        }
        sink(cc, best, bi);
    }
}

/// Forward max pooling with indices.
pub(crate) struct FwdIdx<'a> {
    pub p: &'a Plan,
    pub x: &'a [f32],
    pub xs: [usize; 4],
    pub y: &'a mut [f32],
    pub ys: [usize; 4],
    pub idx: &'a mut [usize],
    pub is: [usize; 4],
}

impl WithSimd for FwdIdx<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let FwdIdx { p, x, xs, y, ys, idx, is } = self;
        for n in 0..p.n {
            for oy in 0..p.oh {
                for ox in 0..p.ow {
                    let yo = n * ys[0] + oy * ys[2] + ox * ys[3];
                    let io = n * is[0] + oy * is[2] + ox * is[3];
                    argmax_pixel(simd, p, x, xs, n, oy, ox, |c, v, i| {
                        y[yo + c] = v;
                        idx[io + c * is[1]] = i;
                    });
                }
            }
        }
    }
}

/// Max pooling backward with switches recomputed from `x`: `dx` must be zeroed.
pub(crate) struct MaxBackRecompute<'a> {
    pub p: &'a Plan,
    pub x: &'a [f32],
    pub xs: [usize; 4],
    pub dy: &'a [f32],
    pub dys: [usize; 4],
    pub dx: &'a mut [f32],
    pub dxs: [usize; 4],
}

impl WithSimd for MaxBackRecompute<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let MaxBackRecompute { p, x, xs, dy, dys, dx, dxs } = self;
        let w = p.w;
        for n in 0..p.n {
            for oy in 0..p.oh {
                for ox in 0..p.ow {
                    let go = n * dys[0] + oy * dys[2] + ox * dys[3];
                    argmax_pixel(simd, p, x, xs, n, oy, ox, |c, _, i| {
                        let o = n * dxs[0] + c * dxs[1] + (i / w) * dxs[2] + (i % w) * dxs[3];
                        dx[o] += dy[go + c * dys[1]];
                    });
                }
            }
        }
    }
}

/// Average or L2 pooling backward, vectorised over channels; `dx` must be zeroed.
/// Average: `dx += dy / divisor` over each window. L2 (`l2` is `(x, xs, y, ys)`):
/// `dx += x * (dy / y)` over each window, nothing where `y == 0`.
pub(crate) struct SpreadBack<'a> {
    pub p: &'a Plan,
    pub avg: Option<crate::params::AvgPoolOptions>,
    pub l2: Option<super::simd::L2Operands<'a>>,
    pub dy: &'a [f32],
    pub dys: [usize; 4],
    pub dx: &'a mut [f32],
    pub dxs: [usize; 4],
}

impl WithSimd for SpreadBack<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let SpreadBack { p, avg, l2, dy, dys, dx, dxs } = self;
        let c = p.c;
        let l = S::F32_LANES;
        let zero = simd.splat_f32s(0.0);
        for n in 0..p.n {
            for oy in 0..p.oh {
                let (ky0, ky1, py) = p.ah.taps(oy);
                for ox in 0..p.ow {
                    let (kx0, kx1, px) = p.aw.taps(ox);
                    let go = n * dys[0] + oy * dys[2] + ox * dys[3];
                    let g = &dy[go..go + c];
                    let recip = match avg {
                        Some(o) => {
                            1.0 / super::simd::divisor(o, (ky1 - ky0) * (kx1 - kx0), py.saturating_mul(px))
                                as f32
                        }
                        None => 1.0,
                    };
                    let vrecip = simd.splat_f32s(recip);
                    let yrun = l2.map(|(_, _, y, ys)| {
                        let yo = n * ys[0] + oy * ys[2] + ox * ys[3];
                        &y[yo..yo + c]
                    });
                    let mut ci = 0;
                    while ci + l <= c {
                        let gv = S::as_simd_f32s(&g[ci..ci + l]).0[0];
                        let (share, yzero) = match yrun {
                            Some(yr) => {
                                let yv = S::as_simd_f32s(&yr[ci..ci + l]).0[0];
                                (simd.div_f32s(gv, yv), simd.equal_f32s(yv, zero))
                            }
                            None => (simd.mul_f32s(gv, vrecip), simd.less_than_f32s(zero, zero)),
                        };
                        for ky in ky0..ky1 {
                            let iy = p.ah.coord(oy, ky);
                            for kx in kx0..kx1 {
                                let ix = p.aw.coord(ox, kx);
                                let off = n * dxs[0] + iy * dxs[2] + ix * dxs[3] + ci;
                                let add = match l2 {
                                    Some((x, xs, _, _)) => {
                                        let xo = n * xs[0] + iy * xs[2] + ix * xs[3] + ci;
                                        let xv = S::as_simd_f32s(&x[xo..xo + l]).0[0];
                                        simd.select_f32s(yzero, zero, simd.mul_f32s(xv, share))
                                    }
                                    None => share,
                                };
                                let d = &mut S::as_mut_simd_f32s(&mut dx[off..off + l]).0[0];
                                *d = simd.add_f32s(*d, add);
                            }
                        }
                        ci += l;
                    }
                    for cc in ci..c {
                        let (share, skip) = match yrun {
                            Some(yr) => (g[cc] / yr[cc], yr[cc] == 0.0),
                            None => (g[cc] * recip, false),
                        };
                        if skip {
                            continue;
                        }
                        for ky in ky0..ky1 {
                            let iy = p.ah.coord(oy, ky);
                            for kx in kx0..kx1 {
                                let ix = p.aw.coord(ox, kx);
                                let add = match l2 {
                                    Some((x, xs, _, _)) => {
                                        x[n * xs[0] + iy * xs[2] + ix * xs[3] + cc] * share
                                    }
                                    None => share,
                                };
                                dx[n * dxs[0] + iy * dxs[2] + ix * dxs[3] + cc] += add;
                            }
                        }
                    }
                }
            }
        }
    }
}
