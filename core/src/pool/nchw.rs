//! NCHW kernels: rows are contiguous, so the kernels vectorise over output columns. A
//! window of stride 1 reads each tap as one unaligned vector; stride 2 loads `2L`
//! consecutive values and splits them into even and odd columns (with dilation 1 the odd
//! half is the next tap, so 2x2 and 3x3 stride-2 windows cost one split per two taps).
//! Columns whose window touches padding, and other strides, take a scalar path.

use pulp::{Simd, WithSimd};

use super::plan::{AxisPlan, Plan};
use super::simd::{even_odd, lanes_reduce, L2Operands, Red, MAX_LANES};
use super::Job;

/// Lane indices `0, 1, 2, ..` as f32, to build lane masks.
static IOTA: [f32; MAX_LANES] = [0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.];

/// The even and odd columns of `row[col..col + 2L]`: `(row[col + 2j], row[col + 2j + 1])`
/// for `j < L`. Only the even half is valid when the last odd column lies past the row
/// (`col + 2L == row.len() + 1`, the most a stride-2 window reads): the second vector is
/// then loaded one column early and its odd lanes are the even columns. `low` is the
/// mask of lanes `< L / 2`.
#[inline(always)]
fn split2<S: Simd>(simd: S, row: &[f32], col: usize, low: S::m32s) -> (S::f32s, S::f32s) {
    let l = S::F32_LANES;
    if col + 2 * l <= row.len() {
        let (v, _) = S::as_simd_f32s(&row[col..col + 2 * l]);
        even_odd(simd, v[0], v[1])
    } else {
        let a = S::as_simd_f32s(&row[col..col + l]).0[0];
        let n = row.len();
        let b = S::as_simd_f32s(&row[n - l..n]).0[0];
        let (e, o) = even_odd(simd, a, b);
        let e = simd.select_f32s(low, e, o);
        (e, e)
    }
}

/// The fold of one window row for the `L` outputs from `ox` (interior columns, stride 1
/// or 2). A function rather than a closure: closures are not reliably inlined into the
/// target-feature context, and outside it every SIMD op becomes a call.
#[inline(always)]
fn fold_row<R: Red, S: Simd>(simd: S, row: &[f32], ox: usize, aw: AxisPlan, low: S::m32s) -> S::f32s {
    let (sw, kw, dw, pl) = (aw.stride, aw.kernel, aw.dilation, aw.pad);
    if sw == 1 {
        let mut racc = R::vfirst(simd, super::nhwc::load::<S>(row, ox - pl));
        for kx in 1..kw {
            racc = R::v(simd, racc, super::nhwc::load::<S>(row, ox + kx * dw - pl));
        }
        racc
    } else if dw == 1 {
        // With dilation 1 the odd columns are the next tap.
        let col = 2 * ox - pl;
        let (e, o) = split2(simd, row, col, low);
        let mut racc = R::vfirst(simd, e);
        if kw > 1 {
            racc = R::v(simd, racc, o);
        }
        let mut kx = 2;
        while kx < kw {
            let (e, o) = split2(simd, row, col + kx, low);
            racc = R::v(simd, racc, e);
            if kx + 1 < kw {
                racc = R::v(simd, racc, o);
            }
            kx += 2;
        }
        racc
    } else {
        let mut racc = R::vfirst(simd, split2(simd, row, 2 * ox - pl, low).0);
        for kx in 1..kw {
            racc = R::v(simd, racc, split2(simd, row, 2 * ox + kx * dw - pl, low).0);
        }
        racc
    }
}

/// Output columns per chunk of the row-buffer path (a multiple of every lane count).
const CHUNK: usize = 128;
/// Longest horizontal window span `(kw - 1) * dw` the row-buffer path takes.
const MAX_SPAN: usize = 64;
/// Row-buffer length: a chunk at stride 2 plus the window span.
const BUF: usize = 2 * CHUNK + MAX_SPAN;
/// Output rows whose vertical folds are buffered together.
const BATCH: usize = 8;

/// Whether [`FwdRows`] handles this geometry (horizontal stride 1 or 2, span up to
/// [`MAX_SPAN`]); [`Fwd`] takes the rest.
pub(crate) fn rows_path(p: &Plan) -> bool {
    (p.aw.stride == 1 || p.aw.stride == 2) && (p.aw.kernel - 1) * p.aw.dilation <= MAX_SPAN
}

/// `[buf[rel + 2j], buf[rel + 2j + 1]]` for `j < L`, split into even and odd lanes.
#[inline(always)]
fn pair<S: Simd>(simd: S, buf: &[f32], rel: usize) -> (S::f32s, S::f32s) {
    let l = S::F32_LANES;
    let (v, _) = S::as_simd_f32s(&buf[rel..rel + 2 * l]);
    even_odd(simd, v[0], v[1])
}

/// The horizontal fold (with `vmerge`) of the `L` outputs whose windows start at buffer
/// column `rel`, `rel + sw`, ...
#[inline(always)]
fn hfold<R: Red, S: Simd>(simd: S, buf: &[f32], rel: usize, aw: AxisPlan) -> S::f32s {
    let (sw, kw, dw) = (aw.stride, aw.kernel, aw.dilation);
    if sw == 1 {
        let mut acc = super::nhwc::load::<S>(buf, rel);
        for kx in 1..kw {
            acc = R::vmerge(simd, acc, super::nhwc::load::<S>(buf, rel + kx * dw));
        }
        acc
    } else if dw == 1 {
        // With dilation 1 the odd columns are the next tap.
        let (e, o) = pair(simd, buf, rel);
        let mut acc = e;
        if kw > 1 {
            acc = R::vmerge(simd, acc, o);
        }
        let mut kx = 2;
        while kx < kw {
            let (e, o) = pair(simd, buf, rel + kx);
            acc = R::vmerge(simd, acc, e);
            if kx + 1 < kw {
                acc = R::vmerge(simd, acc, o);
            }
            kx += 2;
        }
        acc
    } else {
        let mut acc = pair(simd, buf, rel).0;
        for kx in 1..kw {
            acc = R::vmerge(simd, acc, pair(simd, buf, rel + kx * dw).0);
        }
        acc
    }
}

/// The vertical fold of the `N` rows at column `j`, stored at `dst[j..j + L]`.
#[inline(always)]
fn vert1<R: Red, S: Simd, const N: usize>(simd: S, dst: &mut [f32], j: usize, rows: &[&[f32]; N]) {
    let mut acc = R::vfirst(simd, super::nhwc::load::<S>(rows[0], j));
    for rw in &rows[1..] {
        acc = R::v(simd, acc, super::nhwc::load::<S>(rw, j));
    }
    S::as_mut_simd_f32s(&mut dst[j..j + S::F32_LANES]).0[0] = acc;
}

/// Vertical folds of the `N` window rows into `dst` (`rows[i][j]` lines up with `dst[j]`;
/// every row is at least as long as `dst`).
#[inline(always)]
fn vert<R: Red, S: Simd, const N: usize>(simd: S, dst: &mut [f32], rows: [&[f32]; N]) {
    let l = S::F32_LANES;
    let len = dst.len();
    let mut j = 0;
    while j + l <= len {
        vert1::<R, S, N>(simd, dst, j, &rows);
        j += l;
    }
    if j < len {
        if len >= l {
            // Overlaps the previous vector with the same values.
            vert1::<R, S, N>(simd, dst, len - l, &rows);
        } else {
            vert_scalar::<R>(dst, &rows);
        }
    }
}

/// [`vert`] for a buffer shorter than a vector.
#[inline(never)]
fn vert_scalar<R: Red>(dst: &mut [f32], rows: &[&[f32]]) {
    for (jj, b) in dst.iter_mut().enumerate() {
        let mut acc = R::s(R::INIT, rows[0][jj]);
        for rw in &rows[1..] {
            acc = R::s(acc, rw[jj]);
        }
        *b = acc;
    }
}

/// Folds one more window row into the vertical folds `dst`.
#[inline(never)]
fn vert_more<R: Red>(dst: &mut [f32], row: &[f32]) {
    for (b, &v) in dst.iter_mut().zip(row) {
        *b = R::s(*b, v);
    }
}

/// The outputs `ox` in `o0..o1` whose windows touch padding or lie past it, from the
/// buffer of chunk `o0` (each with its own divisor).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn border<R: Red>(
    p: &Plan,
    r: R,
    buf: &[f32],
    yrow: &mut [f32],
    oy: usize,
    o0: usize,
    o1: usize,
    aw: AxisPlan,
) {
    let (sw, kw, dw) = (aw.stride, aw.kernel, aw.dilation);
    for ox in (o0..aw.lo.clamp(o0, o1)).chain(aw.hi.clamp(o0, o1)..o1) {
        let rel = (ox - o0) * sw;
        let mut acc = buf[rel];
        for kx in 1..kw {
            acc = R::smerge(acc, buf[rel + kx * dw]);
        }
        let (taps, padded) = p.counts(oy, ox);
        yrow[ox] = R::sfin(acc, r.scale(taps, padded));
    }
}

/// Forward values-only pooling through a row buffer, for horizontal strides 1 and 2: per
/// output row and chunk of output columns, the window rows are folded vertically into a
/// buffer that spans the padded input columns (padding holds `R::INIT`, which never
/// changes a fold), then every output of the chunk is a contiguous (stride 1) or
/// even/odd-split (stride 2) horizontal fold of that buffer, vectorised with no border
/// cases. Outputs whose windows touch padding or lie past it get their own divisor
/// afterwards, recomputed from the buffer.
pub(crate) struct FwdRows<'a, R>(pub Job<'a, R>);

impl<R: Red> WithSimd for FwdRows<'_, R> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        #[cfg(target_arch = "x86_64")]
        {
            let Job { p, x, xs, ys, r, .. } = self.0;
            let io = super::avx512::Io { x, xs, y: &mut *self.0.y, ys };
            if super::avx512::s2::<S, R>(p, io, r, false) {
                return;
            }
            let io = super::avx512::Io { x, xs, y: &mut *self.0.y, ys };
            if super::avx2::s2::<S, R>(p, io, r) {
                return;
            }
        }
        let aw = self.0.p.aw;
        // The common windows get their width and stride as constants.
        match (aw.kernel, aw.stride, aw.dilation) {
            (2, 2, 1) => rows_body::<R, S, 2, 2>(simd, self),
            (3, 2, 1) => rows_body::<R, S, 3, 2>(simd, self),
            (3, 1, 1) => rows_body::<R, S, 3, 1>(simd, self),
            _ => rows_body::<R, S, 0, 0>(simd, self),
        }
    }
}

/// [`FwdRows`] with window width `KW` and stride `SW` (dilation 1), or as the plan says
/// when `KW == 0`.
#[inline(always)]
fn rows_body<R: Red, S: Simd, const KW: usize, const SW: usize>(simd: S, op: FwdRows<'_, R>) {
    let FwdRows(Job { p, x, xs, y, ys, r }) = op;
    let l = S::F32_LANES;
    let mut aw = p.aw;
    if KW != 0 {
        aw.kernel = KW;
        aw.stride = SW;
        aw.dilation = 1;
    }
    let (sw, kw, dw, pl) = (aw.stride, aw.kernel, aw.dilation, aw.pad);
    let span = (kw - 1) * dw;
    let w = p.w;
    // One buffer per output row of a batch: the vertical folds of a batch are all stored
    // before the first is read back, so the horizontal loads (which straddle the vertical
    // stores) do not wait on store forwarding.
    let mut bufs = [0.0f32; BATCH * BUF];
    let mut tmp = [0.0f32; MAX_LANES];
    // Chunks of output columns outermost: a chunk's buffer layout (which columns are
    // padding) is the same for every plane and row.
    let mut o0 = 0;
    while o0 < p.ow {
        let o1 = (o0 + CHUNK).min(p.ow);
        let nb = (o1 - o0).div_ceil(l);
        let full = (o1 - o0) / l;
        // Buffer column `j` is padded column `p0 + j`, input column `p0 + j - pl` for `j`
        // in `ja..jb`; the rest holds `R::INIT`.
        let p0 = o0 * sw;
        let len = sw * nb * l + span;
        let ja = pl.saturating_sub(p0).min(len);
        let jb = (w + pl).saturating_sub(p0).min(len).max(ja);
        // Input column of buffer column `ja` (`ja >= pl - p0`).
        let ix0 = ja + p0 - pl;
        let borders = o0 < aw.lo || o1 > aw.hi;
        // Row buffers of `pitch` columns, packed so a batch stays in few cache lines.
        let pitch = len.next_multiple_of(MAX_LANES);
        for buf in bufs.chunks_exact_mut(pitch).take(BATCH) {
            buf[..ja].fill(R::INIT);
            buf[jb..len].fill(R::INIT);
        }
        for n in 0..p.n {
            for c in 0..p.c {
                let xp = n * xs[0] + c * xs[1] + ix0;
                let yp = n * ys[0] + c * ys[1];
                for oyb in (0..p.oh).step_by(BATCH) {
                    let batch = BATCH.min(p.oh - oyb);
                    for (g, buf) in bufs.chunks_exact_mut(pitch).enumerate().take(batch) {
                        let oy = oyb + g;
                        let (ky0, ky1, _) = p.ah.taps(oy);
                        let row = |i: usize| {
                            let ro = xp + p.ah.coord(oy, ky0 + i) * xs[2];
                            &x[ro..ro + (jb - ja)]
                        };
                        let dst = &mut buf[ja..jb];
                        match ky1 - ky0 {
                            1 => vert::<R, S, 1>(simd, dst, [row(0)]),
                            2 => vert::<R, S, 2>(simd, dst, [row(0), row(1)]),
                            3 => vert::<R, S, 3>(simd, dst, [row(0), row(1), row(2)]),
                            nr => {
                                vert::<R, S, 4>(simd, dst, [row(0), row(1), row(2), row(3)]);
                                // Window rows past the fourth fold through the buffer.
                                for i in 4..nr {
                                    vert_more::<R>(dst, row(i));
                                }
                            }
                        }
                    }
                    for (g, buf) in bufs.chunks_exact(pitch).enumerate().take(batch) {
                        let oy = oyb + g;
                        let (ky0, ky1, py) = p.ah.taps(oy);
                        let vscale = simd.splat_f32s(r.scale((ky1 - ky0) * kw, py.saturating_mul(kw)));
                        let yo = yp + oy * ys[2];
                        let yrow = &mut y[yo..yo + p.ow];
                        for b in 0..full {
                            let ox = o0 + b * l;
                            let acc = hfold::<R, S>(simd, buf, b * l * sw, aw);
                            S::as_mut_simd_f32s(&mut yrow[ox..ox + l]).0[0] = R::vfin(simd, acc, vscale);
                        }
                        if full < nb {
                            // A last partial block: overlapping the previous one (same
                            // values) or, in a chunk narrower than a vector, through `tmp`.
                            let ox = if full > 0 { o1 - l } else { o0 };
                            let acc = R::vfin(simd, hfold::<R, S>(simd, buf, (ox - o0) * sw, aw), vscale);
                            if full > 0 {
                                S::as_mut_simd_f32s(&mut yrow[ox..ox + l]).0[0] = acc;
                            } else {
                                S::as_mut_simd_f32s(&mut tmp[..l]).0[0] = acc;
                                for (yv, &t) in yrow[o0..o1].iter_mut().zip(&tmp) {
                                    *yv = t;
                                }
                            }
                        }
                        if borders {
                            border(p, r, buf, yrow, oy, o0, o1, aw);
                        }
                    }
                }
            }
        }
        o0 = o1;
    }
}

/// Forward values-only pooling.
pub(crate) struct Fwd<'a, R>(pub Job<'a, R>);

impl<R: Red> WithSimd for Fwd<'_, R> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Fwd(Job { p, x, xs, y, ys, r }) = self;
        let l = S::F32_LANES;
        let aw = p.aw;
        let (sw, kw) = (aw.stride, aw.kernel);
        // Interior columns go through the vector path when it exists for this stride.
        let (lo, hi) = if (sw == 1 || sw == 2) && aw.hi - aw.lo >= l { (aw.lo, aw.hi) } else { (0, 0) };
        let w = p.w;
        let low = simd.less_than_f32s(S::as_simd_f32s(&IOTA[..l]).0[0], simd.splat_f32s(l as f32 / 2.0));
        for n in 0..p.n {
            for c in 0..p.c {
                let xp = n * xs[0] + c * xs[1];
                let yp = n * ys[0] + c * ys[1];
                for oy in 0..p.oh {
                    let (ky0, ky1, py) = p.ah.taps(oy);
                    let yo = yp + oy * ys[2];
                    let yrow = &mut y[yo..yo + p.ow];
                    let scalar = |ox: usize| -> f32 {
                        let (taps, padded) = p.counts(oy, ox);
                        let mut acc = R::INIT;
                        p.for_taps(oy, ox, |iy, ix| acc = R::s(acc, x[xp + iy * xs[2] + ix * xs[3]]));
                        R::sfin(acc, r.scale(taps, padded))
                    };
                    for ox in (0..lo).chain(hi..p.ow) {
                        yrow[ox] = scalar(ox);
                    }
                    if hi == lo {
                        continue;
                    }
                    let vscale = simd.splat_f32s(r.scale((ky1 - ky0) * kw, py.saturating_mul(kw)));
                    // Full blocks: one pass per window row, streaming through that input row
                    // and accumulating in the output row (which stays in L1). Each row folds
                    // separately and merges in row order.
                    let full = (hi - lo) / l;
                    for ky in ky0..ky1 {
                        let ro = xp + p.ah.coord(oy, ky) * xs[2];
                        let row = &x[ro..ro + w];
                        for b in 0..full {
                            let ox = lo + b * l;
                            let racc = fold_row::<R, S>(simd, row, ox, aw, low);
                            let yv = &mut S::as_mut_simd_f32s(&mut yrow[ox..ox + l]).0[0];
                            let acc = if ky == ky0 { racc } else { R::vmerge(simd, *yv, racc) };
                            *yv = if ky + 1 == ky1 { R::vfin(simd, acc, vscale) } else { acc };
                        }
                    }
                    // A last partial block overlaps the previous one; it is recomputed in
                    // registers in the same order, so the shared outputs get the same values.
                    if (hi - lo) % l != 0 {
                        let ox = hi - l;
                        let mut acc = simd.splat_f32s(R::INIT);
                        for ky in ky0..ky1 {
                            let ro = xp + p.ah.coord(oy, ky) * xs[2];
                            let racc = fold_row::<R, S>(simd, &x[ro..ro + w], ox, aw, low);
                            acc = if ky == ky0 { racc } else { R::vmerge(simd, acc, racc) };
                        }
                        S::as_mut_simd_f32s(&mut yrow[ox..ox + l]).0[0] = R::vfin(simd, acc, vscale);
                    }
                }
            }
        }
    }
}

/// The reference's argmax of output `(oy, ox)` of plane `xp`: `(value, flat index)`.
#[inline(always)]
pub(crate) fn argmax(p: &Plan, x: &[f32], xp: usize, xs: [usize; 4], oy: usize, ox: usize) -> (f32, usize) {
    let (ky0, _, _) = p.ah.taps(oy);
    let (kx0, _, _) = p.aw.taps(ox);
    let mut best = f32::NEG_INFINITY;
    let mut bi = p.ah.coord(oy, ky0) * p.w + p.aw.coord(ox, kx0);
    p.for_taps(oy, ox, |iy, ix| {
        let v = x[xp + iy * xs[2] + ix * xs[3]];
        if (v > best || v.is_nan()) && !best.is_nan() {
            best = v;
            bi = iy * p.w + ix;
        }
    });
    (best, bi)
}

/// Average or L2 pooling backward; `dx` must be zeroed. `l2` holds `(x, xs, y, ys)` for L2
/// pooling, `None` for average pooling with `avg`. Interior columns of stride-1 windows are
/// vectorised over output columns (each tap adds a vector of shares to a run of `dx`); the
/// rest goes one output at a time.
pub(crate) struct SpreadBack<'a> {
    pub p: &'a Plan,
    pub avg: Option<crate::params::AvgPoolOptions>,
    pub l2: Option<L2Operands<'a>>,
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
        let l = S::F32_LANES;
        let aw = p.aw;
        let (kw, dw, pl) = (aw.kernel, aw.dilation, aw.pad);
        // Full blocks only: overlapping blocks would add twice.
        let (lo, vend) = if aw.stride == 1 && aw.hi - aw.lo >= l {
            (aw.lo, aw.lo + (aw.hi - aw.lo) / l * l)
        } else {
            (0, 0)
        };
        let w = p.w;
        let zero = simd.splat_f32s(0.0);
        for n in 0..p.n {
            for c in 0..p.c {
                let dp = n * dxs[0] + c * dxs[1];
                let gp = n * dys[0] + c * dys[1];
                for oy in 0..p.oh {
                    for ox in (0..lo).chain(vend..p.ow) {
                        let g = dy[gp + oy * dys[2] + ox * dys[3]];
                        match l2 {
                            Some((x, xs, y, ys)) => {
                                let yv = y[n * ys[0] + c * ys[1] + oy * ys[2] + ox * ys[3]];
                                if yv == 0.0 {
                                    continue;
                                }
                                let share = g / yv;
                                let xp = n * xs[0] + c * xs[1];
                                p.for_taps(oy, ox, |iy, ix| {
                                    dx[dp + iy * dxs[2] + ix * dxs[3]] +=
                                        x[xp + iy * xs[2] + ix * xs[3]] * share;
                                });
                            }
                            None => {
                                let (taps, padded) = p.counts(oy, ox);
                                let d = avg.map_or(1, |o| super::simd::divisor(o, taps, padded));
                                let share = g * (1.0 / d as f32);
                                p.for_taps(oy, ox, |iy, ix| dx[dp + iy * dxs[2] + ix * dxs[3]] += share);
                            }
                        }
                    }
                    if vend == lo {
                        continue;
                    }
                    let (ky0, ky1, py) = p.ah.taps(oy);
                    let recip = match avg {
                        Some(o) => {
                            1.0 / super::simd::divisor(o, (ky1 - ky0) * kw, py.saturating_mul(kw)) as f32
                        }
                        None => 1.0,
                    };
                    let vrecip = simd.splat_f32s(recip);
                    let go = gp + oy * dys[2];
                    let grow = &dy[go..go + p.ow];
                    for ox in (lo..vend).step_by(l) {
                        let gv = super::nhwc::load::<S>(grow, ox);
                        let (share, yzero) = match l2 {
                            Some((_, _, y, ys)) => {
                                let yo = n * ys[0] + c * ys[1] + oy * ys[2];
                                let yv = super::nhwc::load::<S>(&y[yo..yo + p.ow], ox);
                                (simd.div_f32s(gv, yv), simd.equal_f32s(yv, zero))
                            }
                            None => (simd.mul_f32s(gv, vrecip), simd.less_than_f32s(zero, zero)),
                        };
                        for ky in ky0..ky1 {
                            let iy = p.ah.coord(oy, ky);
                            let ro = dp + iy * dxs[2];
                            let drow = &mut dx[ro..ro + w];
                            let xrow = l2.map(|(x, xs, _, _)| {
                                let xo = n * xs[0] + c * xs[1] + iy * xs[2];
                                &x[xo..xo + w]
                            });
                            for kx in 0..kw {
                                let col = ox + kx * dw - pl;
                                let add = match xrow {
                                    Some(xr) => {
                                        let xv = super::nhwc::load::<S>(xr, col);
                                        simd.select_f32s(yzero, zero, simd.mul_f32s(xv, share))
                                    }
                                    None => share,
                                };
                                let d = &mut S::as_mut_simd_f32s(&mut drow[col..col + l]).0[0];
                                *d = simd.add_f32s(*d, add);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Global pooling of NCHW planes: one reduction per `(n, c)` plane, vectorised along it.
pub(crate) struct GlobalPlanes<'a, R>(pub Job<'a, R>);

impl<R: Red> WithSimd for GlobalPlanes<'_, R> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let GlobalPlanes(Job { p, x, xs, y, ys, r }) = self;
        #[cfg(target_arch = "x86_64")]
        if super::avx512::global::<S, R>(p, super::avx512::Io { x, xs, y: &mut *y, ys }, r, true) {
            return;
        }
        let (h, w) = (p.h, p.w);
        let taps = h * w;
        let scale = r.scale(taps, taps);
        // Rows that follow each other in memory make one run of `h * w` values.
        let (runs, run_len) = if h == 1 || xs[2] == w { (1, taps) } else { (h, w) };
        let l = S::F32_LANES;
        // Contiguous planes of at least a vector: `L` planes at a time, each folded into
        // one vector (the last one overlapping, its repeated lanes masked to `INIT`), then
        // the `L` vectors reduced together by a transpose-and-merge tree.
        let grouped = if runs == 1 && run_len >= l && l > 1 { p.c / l * l } else { 0 };
        let full = run_len / l;
        let tail = run_len % l;
        // Lanes `>= L - tail` of the last vector are new.
        let tail_mask = simd
            .greater_than_f32s(S::as_simd_f32s(&IOTA[..l]).0[0], simd.splat_f32s((l - tail) as f32 - 0.5));
        let vscale = simd.splat_f32s(scale);
        let g = Grouped { x, xs, run_len, tail_mask, vscale, grouped };
        // Back-to-back planes whose blocks of `L` have a constant layout on vectors (AVX2).
        let fixed = crate::simd_util::is_avx2::<S>() && grouped > 0 && xs[1] == run_len;
        for n in 0..p.n {
            let xn = &x[n * xs[0]..];
            let yn = n * ys[0];
            let start = match run_len {
                36 if fixed => fixed_blocks::<R, S, 36>(simd, xn, grouped, y, yn, ys[1], vscale),
                49 if fixed => fixed_blocks::<R, S, 49>(simd, xn, grouped, y, yn, ys[1], vscale),
                100 if fixed => fixed_blocks::<R, S, 100>(simd, xn, grouped, y, yn, ys[1], vscale),
                25 if fixed => fixed_blocks::<R, S, 25>(simd, xn, grouped, y, yn, ys[1], vscale),
                64 if fixed => fixed_blocks::<R, S, 64>(simd, xn, grouped, y, yn, ys[1], vscale),
                _ => 0,
            };
            // The plane's whole vectors as a constant for the common small planes.
            match full {
                1 => g.run::<R, 1>(simd, n, start, y, ys),
                2 => g.run::<R, 2>(simd, n, start, y, ys),
                3 => g.run::<R, 3>(simd, n, start, y, ys),
                4 => g.run::<R, 4>(simd, n, start, y, ys),
                _ => g.run::<R, 0>(simd, n, start, y, ys),
            }
            for c in grouped..p.c {
                let xp = n * xs[0] + c * xs[1];
                let mut v0 = simd.splat_f32s(R::INIT);
                let mut v1 = simd.splat_f32s(R::INIT);
                let mut s = R::INIT;
                for run in 0..runs {
                    let ro = xp + run * xs[2];
                    let (head, tail) = S::as_simd_f32s(&x[ro..ro + run_len]);
                    let mut pairs = head.chunks_exact(2);
                    for pr in &mut pairs {
                        v0 = R::v(simd, v0, pr[0]);
                        v1 = R::v(simd, v1, pr[1]);
                    }
                    for &v in pairs.remainder() {
                        v0 = R::v(simd, v0, v);
                    }
                    for &t in tail {
                        s = R::s(s, t);
                    }
                }
                let total = R::smerge(R::vreduce(simd, R::vmerge(simd, v0, v1)), s);
                y[n * ys[0] + c * ys[1]] = R::sfin(total, scale);
            }
        }
    }
}

/// The grouped planes of [`GlobalPlanes`]: planes `0..grouped` of one batch entry, `L` at a
/// time.
struct Grouped<'a, S: Simd> {
    x: &'a [f32],
    xs: [usize; 4],
    run_len: usize,
    tail_mask: S::m32s,
    vscale: S::f32s,
    grouped: usize,
}

impl<S: Simd> Grouped<'_, S> {
    /// Planes `start..grouped` (`start` a multiple of `L`) of batch entry `n`, with `F`
    /// whole vectors per plane (`0`: as `run_len` says).
    #[inline(always)]
    fn run<R: Red, const F: usize>(&self, simd: S, n: usize, start: usize, y: &mut [f32], ys: [usize; 4]) {
        let l = S::F32_LANES;
        let run_len = self.run_len;
        let full = if F == 0 { run_len / l } else { F };
        let tail = run_len % l;
        let init = simd.splat_f32s(R::INIT);
        let mut parts = [init; MAX_LANES];
        let mut outs = [0.0f32; MAX_LANES];
        for c0 in (start..self.grouped).step_by(l) {
            for (i, part) in parts.iter_mut().enumerate().take(l) {
                let xo = n * self.xs[0] + (c0 + i) * self.xs[1];
                let plane = &self.x[xo..xo + run_len];
                let (head, _) = S::as_simd_f32s(plane);
                let mut a0 = head[0];
                let mut a1 = init;
                let mut k = 1;
                while k + 1 < full {
                    a0 = R::v(simd, a0, head[k]);
                    a1 = R::v(simd, a1, head[k + 1]);
                    k += 2;
                }
                if k < full {
                    a0 = R::v(simd, a0, head[k]);
                }
                if tail != 0 {
                    let last = super::nhwc::load::<S>(plane, run_len - l);
                    a1 = R::v(simd, a1, simd.select_f32s(self.tail_mask, last, init));
                }
                *part = R::vmerge(simd, a0, a1);
            }
            let v = R::vfin(simd, lanes_reduce::<R, S>(simd, &parts[..l]), self.vscale);
            let yo = n * ys[0] + c0 * ys[1];
            if ys[1] == 1 {
                S::as_mut_simd_f32s(&mut y[yo..yo + l]).0[0] = v;
            } else {
                S::as_mut_simd_f32s(&mut outs[..l]).0[0] = v;
                for (i, &o) in outs.iter().enumerate().take(l) {
                    y[yo + i * ys[1]] = o;
                }
            }
        }
    }
}

/// Blocks of `L` back-to-back planes of `LEN` values (planes `0..grouped` of the batch
/// entry at `xn`, `grouped` a multiple of `L`; outputs `ys1` apart from `y[yo]`): a block is
/// `LEN` whole vectors from its start, and which planes a vector holds, and the lane
/// masks where one plane ends and the next begins, are constants of the kernel. The
/// general path ([`Grouped`]) loads each plane from its own start (unaligned, so about
/// half its loads straddle two lines) plus an overlapping masked last vector. AVX2 only
/// (`L == 8`), for planes of 25, 36, 49, 64 and 100 values. Measured on an AVX2-only AMD
/// EPYC (in-process A/B, medians of 2000 interleaved calls, planes in L2), time against
/// the general path: 2048 x 7 x 7 average 0.59-0.66x (input 64-byte aligned or not),
/// max 0.73-0.78x; 6 x 6 0.61-0.63x, 8 x 8 0.61x, 10 x 10 0.66-0.76x, 5 x 5 0.75-0.77x.
/// Planes of 169 and 196 values took 3x as long (the unrolled blocks no longer fit) and
/// stay general. Returns the number of planes done (`grouped`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fixed_blocks<R: Red, S: Simd, const LEN: usize>(
    simd: S,
    xn: &[f32],
    grouped: usize,
    y: &mut [f32],
    yo: usize,
    ys1: usize,
    vscale: S::f32s,
) -> usize {
    const L: usize = 8;
    debug_assert_eq!(S::F32_LANES, L);
    let mut outs = [0.0f32; L];
    for c0 in (0..grouped).step_by(L) {
        let (block, _) = S::as_simd_f32s(&xn[c0 * LEN..(c0 + L) * LEN]);
        // Unrolled by hand, so that every plane's vectors and masks are constants.
        macro_rules! planes {
            ($($j:literal)*) => { [$(fixed_plane::<R, S, LEN>(simd, block, $j)),*] };
        }
        let parts = planes!(0 1 2 3 4 5 6 7);
        let v = R::vfin(simd, lanes_reduce::<R, S>(simd, &parts), vscale);
        let o = yo + c0 * ys1;
        if ys1 == 1 {
            S::as_mut_simd_f32s(&mut y[o..o + L]).0[0] = v;
        } else {
            S::as_mut_simd_f32s(&mut outs).0[0] = v;
            for (i, &r) in outs.iter().enumerate() {
                y[o + i * ys1] = r;
            }
        }
    }
    grouped
}

/// The fold of plane `j` of a [`fixed_blocks`] block into one vector: vectors
/// `LEN j / L ..= (LEN j + LEN - 1) / L`, the first and last with the other planes'
/// lanes replaced by `R::INIT`.
#[inline(always)]
fn fixed_plane<R: Red, S: Simd, const LEN: usize>(simd: S, block: &[S::f32s], j: usize) -> S::f32s {
    let l = S::F32_LANES;
    let (s, e) = (LEN * j, LEN * j + LEN - 1);
    let (first, last) = (s / l, e / l);
    let init = simd.splat_f32s(R::INIT);
    let iota = S::as_simd_f32s(&IOTA[..l]).0[0];
    let mut acc = [init, init];
    for (k, &v) in block[first..last + 1].iter().enumerate() {
        let mut v = v;
        if k == 0 && s % l != 0 {
            let head = simd.greater_than_f32s(iota, simd.splat_f32s((s % l) as f32 - 0.5));
            v = simd.select_f32s(head, v, init);
        }
        if first + k == last && e % l != l - 1 {
            let tail = simd.less_than_f32s(iota, simd.splat_f32s((e % l) as f32 + 0.5));
            v = simd.select_f32s(tail, v, init);
        }
        acc[k % 2] = if k < 2 { v } else { R::v(simd, acc[k % 2], v) };
    }
    if last > first {
        R::vmerge(simd, acc[0], acc[1])
    } else {
        acc[0]
    }
}

/// Max pooling with switches over NCHW planes: calls `sink(n, c, oy, ox, max, index)` once
/// per output, with the reference's argmax (first maximum in scan order, first NaN wins).
/// Interior columns of stride-1 and stride-2 windows are vectorised, tracking indices in
/// `u32` lanes (when `h * w` fits); the rest is scalar.
pub(crate) struct Argmax<'a, F> {
    pub p: &'a Plan,
    pub x: &'a [f32],
    pub xs: [usize; 4],
    pub sink: F,
}

impl<F: FnMut(usize, usize, usize, usize, f32, usize)> WithSimd for Argmax<'_, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Argmax { p, x, xs, mut sink } = self;
        let l = S::F32_LANES;
        let aw = p.aw;
        let (sw, kw, dw, pl) = (aw.stride, aw.kernel, aw.dilation, aw.pad);
        let fits = u32::try_from(p.h * p.w).is_ok();
        let vector = fits && l > 1 && (sw == 1 || sw == 2) && aw.hi - aw.lo >= l;
        let (lo, hi) = if vector { (aw.lo, aw.hi) } else { (0, 0) };
        let w = p.w;
        let low = simd.less_than_f32s(S::as_simd_f32s(&IOTA[..l]).0[0], simd.splat_f32s(l as f32 / 2.0));
        // Column offsets of the lanes: `j * sw`.
        let mut lanes = [0u32; MAX_LANES];
        for (j, v) in lanes.iter_mut().enumerate().take(l) {
            *v = (j * sw) as u32;
        }
        let offs = S::as_simd_u32s(&lanes[..l]).0[0];
        let mut vals = [0.0f32; MAX_LANES];
        let mut idxs = [0u32; MAX_LANES];
        for n in 0..p.n {
            for c in 0..p.c {
                let xp = n * xs[0] + c * xs[1];
                for oy in 0..p.oh {
                    for ox in (0..lo).chain(hi..p.ow) {
                        let (v, i) = argmax(p, x, xp, xs, oy, ox);
                        sink(n, c, oy, ox, v, i);
                    }
                    if hi == lo {
                        continue;
                    }
                    let (ky0, ky1, _) = p.ah.taps(oy);
                    // Outputs before `done` were already emitted (the last block overlaps).
                    let mut done = lo;
                    let mut ox = lo;
                    while done < hi {
                        if ox + l > hi {
                            ox = hi - l;
                        }
                        let mut best = simd.splat_f32s(f32::NEG_INFINITY);
                        let first = p.ah.coord(oy, ky0) * w + sw * ox - pl;
                        let mut idx = simd.add_u32s(simd.splat_u32s(first as u32), offs);
                        for ky in ky0..ky1 {
                            let iy = p.ah.coord(oy, ky);
                            let ro = xp + iy * xs[2];
                            let row = &x[ro..ro + w];
                            for kx in 0..kw {
                                let col = sw * ox + kx * dw - pl;
                                let v = if sw == 1 {
                                    super::nhwc::load::<S>(row, col)
                                } else {
                                    split2(simd, row, col, low).0
                                };
                                let better = simd.or_m32s(
                                    simd.greater_than_f32s(v, best),
                                    simd.not_m32s(simd.equal_f32s(v, v)),
                                );
                                let take = simd.and_m32s(better, simd.equal_f32s(best, best));
                                best = simd.select_f32s(take, v, best);
                                let tap = simd.add_u32s(simd.splat_u32s((iy * w + col) as u32), offs);
                                idx = simd.select_u32s(take, tap, idx);
                            }
                        }
                        S::as_mut_simd_f32s(&mut vals[..l]).0[0] = best;
                        S::as_mut_simd_u32s(&mut idxs[..l]).0[0] = idx;
                        for j in done - ox..l {
                            sink(n, c, oy, ox + j, vals[j], idxs[j] as usize);
                        }
                        done = ox + l;
                        ox += l;
                    }
                }
            }
        }
    }
}
