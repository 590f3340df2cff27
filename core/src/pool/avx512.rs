//! AVX-512 kernels for the common pooling shapes, written with `core::arch` and run only
//! under a `pulp::x86::V4` token (which proves AVX-512F/BW/CD/DQ/VL):
//! - 2x2 and 3x3 windows of stride 2, dilation 1, whose every window lies inside the input
//!   (no padding, no ceil-mode windows past the end), max or average, in both layouts;
//! - global max or average pooling, in both layouts.
//!
//! Everything else (and every other ISA) takes the generic pulp kernels. The kernels here
//! keep whole rows (NCHW) or whole channel runs (NHWC) in registers with no per-output
//! bookkeeping: tails are masked loads and stores, not a scalar or indirect-call path.
//! The global kernels read 64-byte aligned vectors (masked where a plane or a channel run
//! begins or ends mid-line): with the input in L2, loads that straddle two lines halved
//! their speed.
//!
//! Maximum is `super::simd::vmax`'s AVX-512 form (an ordered compare and a masked
//! `VMAXPS`), so NaN propagates whatever the operand order. (`VRANGEPS` would be one
//! instruction, but measured here it returns the number when one operand is a quiet NaN.)

use core::any::TypeId;
use core::arch::x86_64::*;

use pulp::Simd;

use super::plan::Plan;
use super::simd::{Fast, Red};

/// A window reduction on `__m512`: `fold` merges two partial results, `fin` finishes.
pub(crate) trait Op: Copy {
    /// The fold's identity (for lanes a masked load leaves empty).
    const INIT: f32;
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512DQ.
    unsafe fn fold(self, a: __m512, b: __m512) -> __m512;
    /// # Safety
    /// As [`Op::fold`].
    unsafe fn fin(self, a: __m512) -> __m512;
}

/// NaN-propagating maximum.
#[derive(Clone, Copy)]
pub(crate) struct Max;

impl Op for Max {
    const INIT: f32 = f32::NEG_INFINITY;
    #[inline(always)]
    unsafe fn fold(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F. Lanes where `b` is NaN keep `b`; the
        // others take `max(b, a)`, which is `a` when `a` is NaN.
        unsafe { _mm512_mask_max_ps(b, _mm512_cmp_ps_mask::<_CMP_ORD_Q>(b, b), b, a) }
    }
    #[inline(always)]
    unsafe fn fin(self, a: __m512) -> __m512 {
        a
    }
}

/// Sum, finished by a multiplication with the reciprocal divisor.
#[derive(Clone, Copy)]
pub(crate) struct Sum(pub f32);

impl Op for Sum {
    const INIT: f32 = 0.0;
    #[inline(always)]
    unsafe fn fold(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fin(self, a: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_mul_ps(a, _mm512_set1_ps(self.0)) }
    }
}

/// The mask of the first `n.min(16)` lanes.
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Whether `S` is the AVX-512 token.
#[inline(always)]
fn is_v4<S: Simd>() -> bool {
    TypeId::of::<S>() == TypeId::of::<pulp::x86::V4>()
}

/// Views of the validated tensors: for every in-range coordinate `(n, c, h, w)` of the
/// tensor's dims, `n * s[0] + c * s[1] + h * s[2] + w * s[3] < len` (`TensorView::new`
/// checks it), and the inner dimension of the layout has stride 1.
pub(crate) struct Io<'a> {
    pub x: &'a [f32],
    pub xs: [usize; 4],
    pub y: &'a mut [f32],
    pub ys: [usize; 4],
}

/// Forward pooling of stride-2 2x2 / 3x3 interior windows on AVX-512, NCHW (`nhwc` false:
/// rows of a plane contiguous) or NHWC (channels contiguous: per output pixel, 4 vectors of
/// channels at a time over the whole window, then 1, then a masked tail); false (nothing
/// done) when `S` is not AVX-512 or the geometry or reduction is not one of these.
#[inline(always)]
pub(crate) fn s2<S: Simd, R: Red>(p: &Plan, io: Io<'_>, r: R, nhwc: bool) -> bool {
    if !is_v4::<S>() {
        return false;
    }
    let Some(f) = super::plan::s2_window(p) else { return false };
    let scale = r.scale(f * f, f * f);
    // SAFETY: `S` is `V4`, whose existence proves AVX-512F/DQ; `io` holds validated views of
    // the geometry's input and output whose inner dimension is contiguous (`w` in NCHW,
    // `c` in NHWC: the caller's layout), and `s2_window` guarantees that every window lies
    // inside the input.
    unsafe {
        match (R::FAST, f, nhwc) {
            (Fast::None, ..) => return false,
            (Fast::Max, 2, false) => nchw_s2_kernel::<Max, 2>(Max, p, io),
            (Fast::Max, _, false) => nchw_s2_kernel::<Max, 3>(Max, p, io),
            (Fast::Avg, 2, false) => nchw_s2_kernel::<Sum, 2>(Sum(scale), p, io),
            (Fast::Avg, _, false) => nchw_s2_kernel::<Sum, 3>(Sum(scale), p, io),
            (Fast::Max, 2, true) => nhwc_s2_kernel::<Max, 2>(Max, p, io),
            (Fast::Max, _, true) => nhwc_s2_kernel::<Max, 3>(Max, p, io),
            (Fast::Avg, 2, true) => nhwc_s2_kernel::<Sum, 2>(Sum(scale), p, io),
            (Fast::Avg, _, true) => nhwc_s2_kernel::<Sum, 3>(Sum(scale), p, io),
        }
    }
    true
}

/// The vertical fold of the `F` rows `r` at column `col`, lanes in `m` (others `INIT`).
///
/// # Safety
/// AVX-512F/DQ; `r[i].add(col + j)` readable for the lanes `j` in `m`.
#[inline(always)]
unsafe fn vload<K: Op, const F: usize>(k: K, r: [*const f32; 3], col: usize, m: __mmask16) -> __m512 {
    // SAFETY: as the caller guarantees.
    unsafe {
        let init = _mm512_set1_ps(K::INIT);
        // `col` may lie past the row (and its buffer) when `m` is empty: wrapping pointer
        // arithmetic, and a masked load reads only the lanes of `m`.
        let mut a = _mm512_mask_loadu_ps(init, m, r[0].wrapping_add(col));
        for row in &r[1..F] {
            a = k.fold(a, _mm512_mask_loadu_ps(init, m, row.wrapping_add(col)));
        }
        a
    }
}

/// The vertical fold of the `F` rows `r` at column `col` (16 whole lanes).
///
/// # Safety
/// AVX-512F/DQ; `r[i].add(col .. col + 16)` readable.
#[inline(always)]
unsafe fn vload_full<K: Op, const F: usize>(k: K, r: [*const f32; 3], col: usize) -> __m512 {
    // SAFETY: as the caller guarantees.
    unsafe {
        let mut a = _mm512_loadu_ps(r[0].add(col));
        for row in &r[1..F] {
            a = k.fold(a, _mm512_loadu_ps(row.add(col)));
        }
        a
    }
}

/// Finished outputs `ob .. ob + 16` of one output row whose `F` input rows are `r`: the
/// rows are folded vertically 32 columns at a time, split into even and odd columns
/// (`VPERMT2PS`) and folded horizontally; a 3-wide window's third tap is the even columns
/// shifted by one lane (`VALIGND`), with the 33rd column loaded alone. With `full` all 16
/// outputs exist; otherwise loads are masked to columns below `w` and only the first
/// `ow - ob` lanes (at most 15) are meaningful.
///
/// # Safety
/// AVX-512F/DQ; rows `r` readable at columns below `w`; every output's window inside the
/// row: `2 o + F - 1 < w` for the outputs `o` the caller stores; with `full`, `ob + 15` is one.
#[inline(always)]
unsafe fn nchw_block<K: Op, const F: usize>(
    k: K,
    r: [*const f32; 3],
    ob: usize,
    w: usize,
    full: bool,
) -> __m512 {
    // SAFETY: as the caller guarantees. Full blocks read columns up to
    // `2 (ob + 15) + F - 1 < w`; partial ones are masked to columns below `w`.
    unsafe {
        let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let c0 = 2 * ob;
        let (a, b) = if full {
            (vload_full::<K, F>(k, r, c0), vload_full::<K, F>(k, r, c0 + 16))
        } else {
            (
                vload::<K, F>(k, r, c0, lanes(w - c0)),
                vload::<K, F>(k, r, c0 + 16, lanes(w.saturating_sub(c0 + 16))),
            )
        };
        let e = _mm512_permutex2var_ps(a, ie, b);
        let o = _mm512_permutex2var_ps(a, io, b);
        let mut v = k.fold(e, o);
        if F == 3 {
            // Output `j`'s third tap is even column `j + 1`; lane 15's is column `c0 + 32`,
            // needed only in a full block (a partial one stores at most 15 lanes).
            let nx = if full { vload::<K, F>(k, r, c0 + 32, 1) } else { _mm512_setzero_ps() };
            let e2 = _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
                _mm512_castps_si512(nx),
                _mm512_castps_si512(e),
            ));
            v = k.fold(v, e2);
        }
        k.fin(v)
    }
}

/// See [`s2`] and [`nchw_block`].
///
/// # Safety
/// AVX-512F/DQ available; `io` as [`Io`] says for `p`'s input and output; every window of
/// `p` lies inside the input; `p` is an `F x F` stride-2 window.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn nchw_s2_kernel<K: Op, const F: usize>(k: K, p: &Plan, io: Io<'_>) {
    let Io { x, xs, y, ys } = io;
    let (w, oh, ow) = (p.w, p.oh, p.ow);
    let (xb, yb) = (x.as_ptr(), y.as_mut_ptr());
    // SAFETY (whole body): every window lies inside the input, so output `(oy, o)` reads
    // rows `2 oy .. 2 oy + F` below `h` and columns up to `2 o + F - 1 < w` of its plane
    // (see `nchw_block`); stores write outputs below `ow` of row `oy` only (whole blocks
    // end at or before `ow`, partial ones are masked): all inside the validated views.
    unsafe {
        for n in 0..p.n {
            for c in 0..p.c {
                let xp = xb.add(n * xs[0] + c * xs[1]);
                let yp = yb.add(n * ys[0] + c * ys[1]);
                for oy in 0..oh {
                    let r0 = xp.add(2 * oy * xs[2]);
                    let r1 = r0.add(xs[2]);
                    let r = [r0, r1, if F == 3 { r1.add(xs[2]) } else { r1 }];
                    let yr = yp.add(oy * ys[2]);
                    let mut ob = 0;
                    while ob + 16 <= ow {
                        _mm512_storeu_ps(yr.add(ob), nchw_block::<K, F>(k, r, ob, w, true));
                        ob += 16;
                    }
                    if ob < ow {
                        _mm512_mask_storeu_ps(
                            yr.add(ob),
                            lanes(ow - ob),
                            nchw_block::<K, F>(k, r, ob, w, false),
                        );
                    }
                }
            }
        }
    }
}

/// Vector `j` of `V` at `p`: the lanes of `m0` only for the first vector and of `m` only
/// for the last one (both for a single vector); lanes left out are `init`.
///
/// # Safety
/// AVX-512F; those lanes readable. `p` may point before its buffer when `m0` leaves out
/// the lanes that would lie there (address arithmetic wraps; masked lanes are not read).
#[inline(always)]
unsafe fn ld<const V: usize>(p: *const f32, j: usize, m0: __mmask16, m: __mmask16, init: __m512) -> __m512 {
    let mut mk: __mmask16 = 0xFFFF;
    if j == 0 {
        mk &= m0;
    }
    if j + 1 == V {
        mk &= m;
    }
    // SAFETY: as the caller guarantees.
    unsafe {
        if mk == 0xFFFF {
            _mm512_loadu_ps(p.wrapping_add(16 * j))
        } else {
            _mm512_mask_loadu_ps(init, mk, p.wrapping_add(16 * j))
        }
    }
}

/// The fold over the `rows x cols` taps at `base + ky * dy + kx * dx` (`rows, cols >= 1`)
/// of `V` vectors of channels (lanes `m0` of the first one and `m` of the last one; others
/// `INIT`), finished and stored at `out` (the same lanes): one pooling window, or a whole
/// plane for global pooling.
///
/// # Safety
/// AVX-512F/DQ; at every tap, the lanes of `m0` of the first vector, the `16 (V - 2)`
/// channels in between and the lanes of `m` of the last one readable, and as many
/// writable at `out`. `base` and `out` may point before their buffers when `m0` leaves out
/// the lanes that would lie there (see [`ld`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fold_grid<K: Op, const V: usize>(
    k: K,
    base: *const f32,
    rows: usize,
    cols: usize,
    dy: usize,
    dx: usize,
    out: *mut f32,
    m0: __mmask16,
    m: __mmask16,
) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let init = _mm512_set1_ps(K::INIT);
        let mut acc = [init; V];
        for (j, a) in acc.iter_mut().enumerate() {
            *a = ld::<V>(base, j, m0, m, init);
        }
        for ky in 0..rows {
            for kx in 0..cols {
                if ky + kx == 0 {
                    continue;
                }
                let t = base.wrapping_add(ky * dy + kx * dx);
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = k.fold(*a, ld::<V>(t, j, m0, m, init));
                }
            }
        }
        store_fin(k, out, acc, m0, m);
    }
}

/// Finishes `V` accumulators (`K::fin`) and stores them at `out + 16 j`: the lanes of `m0`
/// only of the first one, of `m` only of the last one.
///
/// # Safety
/// AVX-512F; those lanes writable (`out` may point before its buffer as [`ld`] says).
#[inline(always)]
unsafe fn store_fin<K: Op, const V: usize>(
    k: K,
    out: *mut f32,
    acc: [__m512; V],
    m0: __mmask16,
    m: __mmask16,
) {
    // SAFETY: as the caller guarantees.
    unsafe {
        for (j, a) in acc.into_iter().enumerate() {
            let mut mk: __mmask16 = 0xFFFF;
            if j == 0 {
                mk &= m0;
            }
            if j + 1 == V {
                mk &= m;
            }
            if mk == 0xFFFF {
                _mm512_storeu_ps(out.wrapping_add(16 * j), k.fin(a));
            } else {
                _mm512_mask_storeu_ps(out.wrapping_add(16 * j), mk, k.fin(a));
            }
        }
    }
}

/// The vertical fold of the 3 taps `x`, `x + dy`, `x + 2 dy` of `V` vectors of channels
/// (lanes `m` of the last one).
///
/// # Safety
/// AVX-512F/DQ; those channels readable at the three taps.
#[inline(always)]
unsafe fn col3<K: Op, const V: usize>(k: K, x: *const f32, dy: usize, m: __mmask16) -> [__m512; V] {
    // SAFETY: as the caller guarantees.
    unsafe {
        let init = _mm512_set1_ps(K::INIT);
        let mut a = [init; V];
        for (j, v) in a.iter_mut().enumerate() {
            let t = k.fold(ld::<V>(x, j, 0xFFFF, m, init), ld::<V>(x.add(dy), j, 0xFFFF, m, init));
            *v = k.fold(t, ld::<V>(x.add(2 * dy), j, 0xFFFF, m, init));
        }
        a
    }
}

/// One output row of a 3x3 stride-2 NHWC window for `V` vectors of channels (lanes `m` of
/// the last one): the vertical fold of input column `2 ox + 2` is kept for output `ox + 1`,
/// so each output folds two new columns (6 folds a vector instead of 8).
///
/// # Safety
/// AVX-512F/DQ; `x` is the row's first input tap at the block's first channel, `out` the
/// row's first output at that channel; every tap `x + ky dy + ix dx` (`ky < 3`,
/// `ix < 2 ow + 1`) readable and every `out + ox dox` writable for those channels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nhwc_row3<K: Op, const V: usize>(
    k: K,
    x: *const f32,
    dy: usize,
    dx: usize,
    out: *mut f32,
    dox: usize,
    ow: usize,
    m: __mmask16,
) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let mut prev = col3::<K, V>(k, x, dy, m);
        for ox in 0..ow {
            let c1 = col3::<K, V>(k, x.add((2 * ox + 1) * dx), dy, m);
            let c2 = col3::<K, V>(k, x.add((2 * ox + 2) * dx), dy, m);
            let o = out.add(ox * dox);
            for j in 0..V {
                let v = k.fin(k.fold(k.fold(prev[j], c1[j]), c2[j]));
                if j + 1 < V || m == 0xFFFF {
                    _mm512_storeu_ps(o.add(16 * j), v);
                } else {
                    _mm512_mask_storeu_ps(o.add(16 * j), m, v);
                }
            }
            prev = c2;
        }
    }
}

/// See [`s2`].
///
/// # Safety
/// As [`nchw_s2_kernel`], with `c` the contiguous dimension.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn nhwc_s2_kernel<K: Op, const F: usize>(k: K, p: &Plan, io: Io<'_>) {
    let Io { x, xs, y, ys } = io;
    let c = p.c;
    let (xb, yb) = (x.as_ptr(), y.as_mut_ptr());
    if F == 3 {
        // Channel blocks outermost: input row `2 oy + 2` of a block (at most 64 channels)
        // is still in L1 when output row `oy + 1` reads it again.
        // SAFETY: output `(oy, ox)` reads pixels `(2 oy + ky, 2 ox + kx)`, `ky, kx < 3`,
        // inside the input; channel blocks end at or before `c` (the tail is masked).
        unsafe {
            let (d, ow) = (xs[2], p.ow);
            for n in 0..p.n {
                let mut ci = 0;
                while ci < c {
                    let (v, m) = if ci + 64 <= c {
                        (4, 0xFFFF)
                    } else if ci + 32 <= c {
                        (2, 0xFFFF)
                    } else {
                        (1, lanes(c - ci))
                    };
                    for oy in 0..p.oh {
                        let xr = xb.add(n * xs[0] + 2 * oy * xs[2] + ci);
                        let yr = yb.add(n * ys[0] + oy * ys[2] + ci);
                        match v {
                            4 => nhwc_row3::<K, 4>(k, xr, d, xs[3], yr, ys[3], ow, m),
                            2 => nhwc_row3::<K, 2>(k, xr, d, xs[3], yr, ys[3], ow, m),
                            _ => nhwc_row3::<K, 1>(k, xr, d, xs[3], yr, ys[3], ow, m),
                        }
                    }
                    ci += (16 * v).min(c - ci);
                }
            }
        }
        return;
    }
    // SAFETY (whole body): output `(oy, ox)` reads pixels `(2 oy + ky, 2 ox + kx)` with
    // `ky, kx < F`, inside the input, channels below `c` only (whole vectors end at or
    // before `c`, the tail is masked), and writes channels below `c` of its own pixel.
    unsafe {
        for n in 0..p.n {
            for oy in 0..p.oh {
                for ox in 0..p.ow {
                    let base = xb.add(n * xs[0] + 2 * oy * xs[2] + 2 * ox * xs[3]);
                    let out = yb.add(n * ys[0] + oy * ys[2] + ox * ys[3]);
                    let mut ci = 0;
                    while ci + 64 <= c {
                        fold_grid::<K, 4>(k, base.add(ci), F, F, xs[2], xs[3], out.add(ci), 0xFFFF, 0xFFFF);
                        ci += 64;
                    }
                    while ci + 16 <= c {
                        fold_grid::<K, 1>(k, base.add(ci), F, F, xs[2], xs[3], out.add(ci), 0xFFFF, 0xFFFF);
                        ci += 16;
                    }
                    if ci < c {
                        fold_grid::<K, 1>(
                            k,
                            base.add(ci),
                            F,
                            F,
                            xs[2],
                            xs[3],
                            out.add(ci),
                            0xFFFF,
                            lanes(c - ci),
                        );
                    }
                }
            }
        }
    }
}

/// Global pooling (one output per `(n, c)` over the whole `h x w` plane: `p` has one output
/// whose window is the input, with no padding) on AVX-512; false (nothing done) when `p` is
/// not global, `S` is not AVX-512, the reduction has no kernel here, or (NCHW) a
/// plane's rows are not one contiguous run.
#[inline(always)]
pub(crate) fn global<S: Simd, R: Red>(p: &Plan, io: Io<'_>, r: R, nchw: bool) -> bool {
    let (ah, aw) = (p.ah, p.aw);
    let whole = p.oh == 1 && p.ow == 1 && ah.kernel == p.h && aw.kernel == p.w;
    let inside = ah.lo == 0 && ah.hi == 1 && aw.lo == 0 && aw.hi == 1;
    if !is_v4::<S>() || !whole || !inside || p.n == 0 || p.c == 0 {
        return false;
    }
    let taps = p.h * p.w;
    let scale = r.scale(taps, taps);
    if nchw && !(p.h == 1 || io.xs[2] == p.w) {
        return false;
    }
    // SAFETY: `S` is `V4` (AVX-512F/DQ); `io` holds validated views of `[n, c, h, w]` and
    // `[n, c, 1, 1]` contiguous in the layout's inner dimension; for NCHW each plane's
    // `h * w` values are contiguous (checked above).
    unsafe {
        match (R::FAST, nchw) {
            (Fast::Max, true) => global_nchw::<Max>(Max, p, io),
            (Fast::Avg, true) => global_nchw::<Sum>(Sum(scale), p, io),
            (Fast::Max, false) => global_nhwc::<Max>(Max, p, io),
            (Fast::Avg, false) => global_nhwc::<Sum>(Sum(scale), p, io),
            (Fast::None, _) => return false,
        }
    }
    true
}

/// NHWC global pooling: per batch entry, 16 or 8 vectors of channels at a time (then 1, then a
/// masked tail) folded over every pixel.
///
/// When every pixel's channels start at the same offset within a 64-byte line (pixel
/// strides multiples of 16 floats), the vectors are shifted back to line boundaries: the
/// first one loads (and stores) only its lanes from channel 0 on. A vector that straddles
/// two lines costs the L2-to-L1 path about as much as two (measured: 3.0 against 5.5
/// microseconds for 2048 channels x 49 pixels, input in L2).
///
/// # Safety
/// As [`global`] says.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn global_nhwc<K: Op>(k: K, p: &Plan, io: Io<'_>) {
    let Io { x, xs, y, ys } = io;
    let (c, h, w) = (p.c, p.h, p.w);
    let (xb, yb) = (x.as_ptr(), y.as_mut_ptr());
    let same_offset = (h == 1 || xs[2] % 16 == 0) && (w == 1 || xs[3] % 16 == 0);
    // SAFETY (whole body): reads pixels `(iy < h, ix < w)` of entry `n`, channels below `c`
    // (the lanes before channel 0 and from channel `c` on are masked out), writes channels
    // below `c` of output `n` (the same lanes).
    unsafe {
        for n in 0..p.n {
            let xn = xb.add(n * xs[0]);
            let yn = yb.add(n * ys[0]);
            // Channel `ci` is at `xa + ci + s`: `s` lanes of the first vector precede channel 0.
            let s = if same_offset { (xn as usize / 4) % 16 } else { 0 };
            let (xa, ya) = (xn.wrapping_sub(s), yn.wrapping_sub(s));
            let (end, head) = (c + s, (0xFFFFu32 << s) as __mmask16);
            let mut ci = 0;
            while ci < end {
                let m0 = if ci == 0 { head } else { 0xFFFF };
                let (xc, yc) = (xa.wrapping_add(ci), ya.wrapping_add(ci));
                let left = end - ci;
                let v = if left >= 256 {
                    fold_grid::<K, 16>(k, xc, h, w, xs[2], xs[3], yc, m0, 0xFFFF);
                    16
                } else if left >= 128 {
                    fold_grid::<K, 8>(k, xc, h, w, xs[2], xs[3], yc, m0, 0xFFFF);
                    8
                } else {
                    fold_grid::<K, 1>(k, xc, h, w, xs[2], xs[3], yc, m0, lanes(left));
                    1
                };
                ci += 16 * v;
            }
        }
    }
}

/// Where a contiguous plane of `len` values lies on 64-byte lines: the plane starts `s`
/// floats past a 64-byte aligned address `a`; returns the offset (a multiple of 16) from
/// `a` of the first aligned vector it touches and the masks of its lanes in the vectors
/// `0`, `nv - 2` and `nv - 1` from there (see [`plane`]).
#[inline(always)]
fn span(s: usize, len: usize, nv: usize) -> (usize, [__mmask16; 3]) {
    let o = s % 16;
    let mask = |t: usize| lanes((o + len).saturating_sub(16 * t)) & !lanes(o.saturating_sub(16 * t));
    (s - o, [mask(0), mask(nv.saturating_sub(2)), mask(nv - 1)])
}

/// Vector `t` at `q`, lanes `mk` (others `init`).
///
/// # Safety
/// AVX-512F; those lanes readable (`q` may point before the buffer: wrapping arithmetic).
#[inline(always)]
unsafe fn edge(init: __m512, q: *const f32, t: usize, mk: __mmask16) -> __m512 {
    // SAFETY: as the caller guarantees.
    unsafe { _mm512_mask_loadu_ps(init, mk, q.wrapping_add(16 * t)) }
}

/// The fold of one contiguous plane into one vector (lanes past the plane `INIT`), read as
/// `nv` aligned vectors from `q`: whole vectors in between, the masks `m` (from [`span`])
/// on the first and the last two, so no load straddles two lines. `NV` is `nv` as a
/// constant, or `usize::MAX` to use `nv` (then at least 4). `UNI`: the plane spans all
/// `NV` vectors (`m[2]` not empty), so that vector `NV - 2` is whole when it is not the
/// first (a plain load, one mask fewer to fetch).
///
/// # Safety
/// AVX-512F/DQ; `nv = (len + 30) / 16` and `(q, m)` from [`span`] for the plane: then the
/// vectors between the first and the last two are inside the plane, and the masked lanes
/// are the plane's values (`q` itself may point before the buffer: wrapping arithmetic).
#[inline(always)]
unsafe fn plane<K: Op, const NV: usize, const UNI: bool>(
    k: K,
    q: *const f32,
    m: [__mmask16; 3],
    nv: usize,
) -> __m512 {
    // SAFETY: as the caller guarantees.
    unsafe {
        let init = _mm512_set1_ps(K::INIT);
        if NV != usize::MAX {
            let mut a = [init, init];
            for t in 0..NV {
                let v = if t + 1 == NV {
                    edge(init, q, t, m[2])
                } else if t + 2 == NV && !(UNI && t > 0) {
                    edge(init, q, t, m[1])
                } else if t == 0 {
                    edge(init, q, t, m[0])
                } else {
                    _mm512_loadu_ps(q.wrapping_add(16 * t))
                };
                a[t % 2] = if t < 2 { v } else { k.fold(a[t % 2], v) };
            }
            return if NV == 1 { a[0] } else { k.fold(a[0], a[1]) };
        }
        let (mut a0, mut a1) = (edge(init, q, 0, m[0]), edge(init, q, nv - 1, m[2]));
        a0 = k.fold(a0, edge(init, q, nv - 2, m[1]));
        let mut t = 1;
        while t + 4 <= nv {
            a0 = k.fold(a0, _mm512_loadu_ps(q.wrapping_add(16 * t)));
            a1 = k.fold(a1, _mm512_loadu_ps(q.wrapping_add(16 * t + 16)));
            t += 2;
        }
        if t + 3 == nv {
            a1 = k.fold(a1, _mm512_loadu_ps(q.wrapping_add(16 * t)));
        }
        k.fold(a0, a1)
    }
}

/// Stores the 16 lanes of `v` at `y + i ys1`.
///
/// # Safety
/// AVX-512F; those 16 places writable.
#[inline(always)]
unsafe fn store16(v: __m512, y: *mut f32, ys1: usize) {
    // SAFETY: as the caller guarantees.
    unsafe {
        if ys1 == 1 {
            _mm512_storeu_ps(y, v);
        } else {
            let mut o = [0.0f32; 16];
            _mm512_storeu_ps(o.as_mut_ptr(), v);
            for (i, &t) in o.iter().enumerate() {
                *y.add(i * ys1) = t;
            }
        }
    }
}

/// The lane fold of `v` (all 16 lanes), in lane 0 and every other lane.
///
/// # Safety
/// AVX-512F/DQ.
#[inline(always)]
unsafe fn hfold<K: Op>(k: K, v: __m512) -> __m512 {
    // SAFETY: as the caller guarantees.
    unsafe {
        let v = k.fold(v, _mm512_shuffle_f32x4::<0x4E>(v, v));
        let v = k.fold(v, _mm512_shuffle_f32x4::<0xB1>(v, v));
        let v = k.fold(v, _mm512_permute_ps::<0x4E>(v));
        k.fold(v, _mm512_permute_ps::<0xB1>(v))
    }
}

/// For 16 vectors, the vector whose lane `i` is the lane fold of `v[i]`: a
/// transpose-and-merge tree (15 folds, 30 shuffles).
///
/// # Safety
/// AVX-512F/DQ.
#[inline(always)]
unsafe fn lanes16<K: Op>(k: K, p: &[__m512; 16]) -> __m512 {
    // SAFETY: as the caller guarantees.
    unsafe {
        // Closures would not inherit the caller's target features: plain loops.
        let z = _mm512_setzero_ps();
        let mut q = [z; 8];
        for (i, d) in q.iter_mut().enumerate() {
            let (a, b) = (p[2 * i], p[2 * i + 1]);
            *d = k.fold(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        }
        let mut t = [z; 4];
        for (i, d) in t.iter_mut().enumerate() {
            let (c, e) = (q[2 * i], q[2 * i + 1]);
            *d = k.fold(_mm512_shuffle_ps::<0x44>(c, e), _mm512_shuffle_ps::<0xEE>(c, e));
        }
        let mut u = [z; 2];
        for (i, d) in u.iter_mut().enumerate() {
            let (e, f) = (t[2 * i], t[2 * i + 1]);
            *d = k.fold(_mm512_shuffle_f32x4::<0x88>(e, f), _mm512_shuffle_f32x4::<0xDD>(e, f));
        }
        k.fold(_mm512_shuffle_f32x4::<0x88>(u[0], u[1]), _mm512_shuffle_f32x4::<0xDD>(u[0], u[1]))
    }
}

/// NCHW global pooling: 16 planes at a time, each folded into one vector by [`plane`],
/// then the 16 vectors reduced together by [`lanes16`]; the remaining planes one by one.
/// Back-to-back planes of 36, 49, 64 or 100 values from a 64-byte line take
/// [`blocks_fixed`].
///
/// [`plane`] reads 64-byte aligned vectors (masked at the plane's ends), so no load
/// straddles two lines: 49-value planes land on lines differently each, and the straddling
/// loads of unaligned reads were the limit (measured: 3.9 against 5.0 microseconds for 2048
/// planes of 7x7 with the input in L2, whatever the buffer's alignment).
///
/// # Safety
/// As [`global`] says.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn global_nchw<K: Op>(k: K, p: &Plan, io: Io<'_>) {
    // SAFETY: as the caller guarantees.
    unsafe {
        match (p.h * p.w + 30) / 16 {
            1 => global_nchw_nv::<K, 1>(k, p, io),
            2 => global_nchw_nv::<K, 2>(k, p, io),
            3 => global_nchw_nv::<K, 3>(k, p, io),
            4 => global_nchw_nv::<K, 4>(k, p, io),
            5 => global_nchw_nv::<K, 5>(k, p, io),
            _ => global_nchw_nv::<K, { usize::MAX }>(k, p, io),
        }
    }
}

/// [`global_nchw`] with `NV` aligned vectors per plane (see [`plane`]).
///
/// # Safety
/// As [`global`] says.
#[inline(always)]
unsafe fn global_nchw_nv<K: Op, const NV: usize>(k: K, p: &Plan, io: Io<'_>) {
    let Io { x, xs, y, ys } = io;
    let (c, len) = (p.c, p.h * p.w);
    let nv = (len + 30) / 16;
    let (xb, yb) = (x.as_ptr(), y.as_mut_ptr());
    // SAFETY (whole body): plane `(n, ci)` is the `len` contiguous values from
    // `n xs[0] + ci xs[1]`, read by `plane` through its `span` (only its own values);
    // output `(n, ci)` is at `n ys[0] + ci ys[1]`.
    unsafe {
        for n in 0..p.n {
            let xn = xb.add(n * xs[0]);
            let yn = yb.add(n * ys[0]);
            let mut ci = 0;
            let s0 = (xn as usize / 4) % 16;
            if c >= 16 && s0 == 0 && xs[1] == len {
                // Back-to-back planes from a 64-byte line: a block of 16 is `len` whole
                // lines, laid out the same way in every block.
                ci = match len {
                    36 => blocks_fixed::<K, 36>(k, xn, c, yn, ys[1]),
                    49 => blocks_fixed::<K, 49>(k, xn, c, yn, ys[1]),
                    64 => blocks_fixed::<K, 64>(k, xn, c, yn, ys[1]),
                    100 => blocks_fixed::<K, 100>(k, xn, c, yn, ys[1]),
                    _ => 0,
                };
            }
            if c - ci >= 16 {
                // Blocks of 16 planes are `16 xs[1]` floats (a multiple of 64 bytes) apart,
                // so plane `i` of every block sits the same way on lines: one table.
                let mut at = [(0usize, [0 as __mmask16; 3]); 16];
                for (i, d) in at.iter_mut().enumerate() {
                    *d = span(s0 + i * xs[1], len, nv);
                }
                let (cs, ys1) = (xs[1], ys[1]);
                ci = if at.iter().all(|&(_, m)| m[2] != 0) {
                    blocks::<K, NV, true>(k, xn, cs, c, &at, nv, yn, ys1, s0)
                } else {
                    blocks::<K, NV, false>(k, xn, cs, c, &at, nv, yn, ys1, s0)
                };
            }
            while ci < c {
                let xp = xn.add(ci * xs[1]);
                let s = (xp as usize / 4) % 16;
                let (off, m) = span(s, len, nv);
                let v = plane::<K, NV, false>(k, xp.wrapping_sub(s).wrapping_add(off), m, nv);
                *yn.add(ci * ys[1]) = _mm512_cvtss_f32(k.fin(hfold(k, v)));
                ci += 1;
            }
        }
    }
}

/// The whole blocks of 16 back-to-back planes of `LEN` values (a block is `LEN` lines)
/// of one batch entry at a 64-byte aligned `xn`, outputs `ys1` apart from `yn`; returns
/// the number of planes done. Every line offset and mask is a constant, where the
/// general [`blocks`] fetches 3 masks and an offset per plane from its table (spilled:
/// about as many loads as the data's). Calls of both alternated in one process, 2048
/// planes in L2, medians: 7 x 7 average 4.4 against 5.5 microseconds, max 6.4 against
/// 7.4; 6 x 6 1.9-2.1x faster, 8 x 8 1.5-1.7x, 10 x 10 1.3-1.4x; 13 x 13 and 14 x 14
/// gained 0-10% and stay general.
///
/// # Safety
/// AVX-512F/DQ; `c` planes of `LEN` values back to back from `xn` readable, 64-byte
/// aligned; outputs `yn + i ys1` for `i < c` writable.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn blocks_fixed<K: Op, const LEN: usize>(
    k: K,
    xn: *const f32,
    c: usize,
    yn: *mut f32,
    ys1: usize,
) -> usize {
    let mut ci = 0;
    // SAFETY: planes `ci .. ci + 16 <= c`, read by `plane_fixed` inside their own values;
    // outputs of those planes written.
    unsafe {
        while ci + 16 <= c {
            let a = xn.add(ci * LEN);
            macro_rules! pl {
                ($($i:literal)*) => { [$(plane_fixed::<K, LEN>(k, a, $i)),*] };
            }
            let v = k.fin(lanes16(k, &pl!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)));
            store16(v, yn.add(ci * ys1), ys1);
            ci += 16;
        }
    }
    ci
}

/// The fold of plane `j` of a block of back-to-back planes of `LEN` values from the
/// 64-byte aligned `a` into one vector: lines `LEN j / 16 ..= (LEN j + LEN - 1) / 16`,
/// the first and the last masked to the plane's lanes.
///
/// # Safety
/// AVX-512F/DQ; the plane's `LEN` values readable.
#[inline(always)]
unsafe fn plane_fixed<K: Op, const LEN: usize>(k: K, a: *const f32, j: usize) -> __m512 {
    let (s, e) = (LEN * j, LEN * j + LEN - 1);
    let (f, l) = (s / 16, e / 16);
    let head = !lanes(s % 16);
    let tail = lanes(e % 16 + 1);
    // SAFETY: the lanes loaded are the plane's values `s ..= e` from `a` (whole lines
    // only between its first and last line).
    unsafe {
        let init = _mm512_set1_ps(K::INIT);
        let mut acc = [init, init];
        for t in f..l + 1 {
            let m = if t == f { head } else { 0xFFFF } & if t == l { tail } else { 0xFFFF };
            let v = if m == 0xFFFF { _mm512_loadu_ps(a.add(16 * t)) } else { edge(init, a, t, m) };
            let i = (t - f) % 2;
            acc[i] = if t - f < 2 { v } else { k.fold(acc[i], v) };
        }
        if l > f {
            k.fold(acc[0], acc[1])
        } else {
            acc[0]
        }
    }
}

/// The whole blocks of 16 planes of one batch entry in [`global_nchw_nv`] (planes `cs`
/// apart from `xn`, outputs `ys1` apart from `yn`; `at` the planes' [`span`]s from a block
/// start shifted back by `s0` to a line boundary; `UNI` as [`plane`] says, for every plane);
/// returns the number of planes done.
///
/// # Safety
/// As [`global`] says, for the batch entry at `xn` and `yn`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn blocks<K: Op, const NV: usize, const UNI: bool>(
    k: K,
    xn: *const f32,
    cs: usize,
    c: usize,
    at: &[(usize, [__mmask16; 3]); 16],
    nv: usize,
    yn: *mut f32,
    ys1: usize,
    s0: usize,
) -> usize {
    let mut ci = 0;
    // SAFETY: planes `ci .. ci + 16 <= c` of the entry, read through their spans; outputs
    // of those planes written.
    unsafe {
        while ci + 16 <= c {
            let a = xn.add(ci * cs).wrapping_sub(s0);
            // Unrolled by hand: as a loop, the 16 results went through the stack.
            macro_rules! pl {
                ($($i:literal)*) => {
                    [$(plane::<K, NV, UNI>(k, a.wrapping_add(at[$i].0), at[$i].1, nv)),*]
                };
            }
            let parts = pl!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            let v = k.fin(lanes16(k, &parts));
            store16(v, yn.add(ci * ys1), ys1);
            ci += 16;
        }
    }
    ci
}
