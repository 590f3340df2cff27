//! AVX2 kernels for windows of stride 2 and dilation 1 whose every window lies inside the
//! input (no padding, no ceil-mode windows past the end), max or average: NCHW 2x2 and
//! 3x3, NHWC 3x3 ([`nhwc_s2`]); and with padding or ceil-mode windows, NCHW 2x2 and 3x3
//! ([`padded`]: the interior as above, the borders apart) and the inner pixels of NHWC
//! 3x3 rows ([`nhwc_s2_interior`]); written with `core::arch` and run only under a
//! `pulp::x86::V3` token. Everything else takes the generic kernels of `nchw.rs` and
//! `nhwc.rs`.
//!
//! NCHW: each input row is folded horizontally once per block of 8 outputs: two loads give
//! the even and odd columns of the block's 16 (`VSHUFPS`); for 3x3 two more, starting two
//! and nine columns in, give the third tap (the even columns shifted by one) with a third
//! `VSHUFPS`. The shuffles leave the outputs in the order `0 1 4 5 2 3 6 7`, the same for
//! every tap, so the folds run in that order and one `VPERMPD` per stored vector restores
//! it (a full even/odd split would take two per row). 3x3 takes four output rows (nine
//! input rows) per pass, so the input row two output rows share is folded once: 2.25
//! horizontal folds an output row, not 3. A row of fewer than 8 outputs is one block of
//! masked loads and stores. The maximum folds with plain `VMAXPS` under a NaN check of the
//! inputs, a pass found to hold a NaN running again with the NaN-propagating fold
//! ([`MaxUnchecked`]).
//!
//! Measured on an AVX2-only AMD EPYC (Zen 3), in-process A/B against the row-buffer path
//! for 3x3 and the earlier in-register 2x2 kernel (medians of 500 interleaved calls, one
//! thread, outputs compared): max 3x3 over 96 x 55 x 55 (the benchmark's maxpool_3x3_s2)
//! 0.58-0.61x the time, average 0.53x; 64 x 112 x 112 0.69-0.72x; 64 x 224 x 224
//! 0.61-0.67x; 64 x 15 x 15 0.52x, 64 x 7 x 7 0.25x. 2x2: max over 64 x 224 x 224 (the
//! benchmark's maxpool_2x2_s2) 0.84-0.92x, average over 64 x 112 x 112 (avgpool_2x2_s2)
//! 0.85-0.88x, 64 x 14 x 14 0.61x, 64 x 8 x 8 0.85x.

use core::arch::x86_64::*;

use pulp::Simd;

use super::avx512::Io;
use super::plan::Plan;
use super::simd::{Fast, Red};

/// A window reduction on `__m256`: `fold` merges two partial results, `fin` finishes.
trait Op: Copy {
    /// # Safety
    /// The CPU must support AVX.
    unsafe fn fold(self, a: __m256, b: __m256) -> __m256;
    /// # Safety
    /// As [`Op::fold`].
    unsafe fn fin(self, a: __m256) -> __m256;
    /// Whether the finish scales (so border windows need their own divisors).
    const SCALED: bool;
    /// `v` with the lanes outside `m` set to the fold's identity (`v` holds 0 there, from
    /// a masked load).
    ///
    /// # Safety
    /// As [`Op::fold`].
    unsafe fn pad(self, v: __m256, m: __m256i) -> __m256;
    /// The finish with a scale per lane (for [`Op::SCALED`] folds).
    ///
    /// # Safety
    /// As [`Op::fold`].
    unsafe fn fin_v(self, a: __m256, s: __m256) -> __m256;
    /// Whether `fold` may drop a NaN, so that [`rows`] must look for NaN in the inputs it
    /// reads and run its rows again with [`Max`] when it finds one ([`MaxUnchecked`]).
    const CHECK: bool = false;
    /// The reduction [`kernel`] runs for this one: the same, or for [`Max`] the plain
    /// maximum under a NaN check.
    type Kernel: Op;
    /// See [`Op::Kernel`].
    fn kernel(self) -> Self::Kernel;
}

/// NaN-propagating maximum: `max(a, b) | max(b, a)` (each `VMAXPS` returns its second
/// operand when either is NaN, so one of the two is that NaN, and OR-ing a NaN with any
/// value keeps it a NaN; without NaN both are equal). As `super::simd::vmax` on AVX2.
#[derive(Clone, Copy)]
struct Max;

impl Op for Max {
    #[inline(always)]
    unsafe fn fold(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_or_ps(_mm256_max_ps(a, b), _mm256_max_ps(b, a)) }
    }
    #[inline(always)]
    unsafe fn fin(self, a: __m256) -> __m256 {
        a
    }
    const SCALED: bool = false;
    #[inline(always)]
    unsafe fn pad(self, v: __m256, m: __m256i) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_blendv_ps(_mm256_set1_ps(f32::NEG_INFINITY), v, _mm256_castsi256_ps(m)) }
    }
    #[inline(always)]
    unsafe fn fin_v(self, a: __m256, _: __m256) -> __m256 {
        a
    }
    type Kernel = MaxUnchecked;
    #[inline(always)]
    fn kernel(self) -> MaxUnchecked {
        MaxUnchecked
    }
}

/// Plain `VMAXPS`, which returns its second operand when either is NaN, so a NaN input
/// may be lost: [`kernel`]'s maximum. Its rows OR a NaN check (`VCMPPS` unordered) of
/// every input vector they load into a flag and run again with [`Max`] when it is set;
/// without NaN both give the same outputs. The kernel is bound by its shuffles and folds,
/// not by memory (a plane takes the same time with the input in L1, L2 or L3), and
/// [`Max`]'s fold is three operations. On an AVX2-only AMD EPYC (Zen 3), in-process A/B
/// (4000 interleaved calls, medians): 96 x 55 x 55 (the benchmark's maxpool_3x3_s2)
/// 0.94-0.96x the time, 64 x 112 x 112 0.94x, 2x2 over 64 x 224 x 224 0.98x; convbench,
/// alternating binaries, maxpool_3x3_s2 0.0371-0.0376 ms against 0.0391-0.0399. Plain
/// maxima without the check would take 0.80x: the check costs two operations for every
/// two vectors loaded.
#[derive(Clone, Copy)]
struct MaxUnchecked;

impl Op for MaxUnchecked {
    #[inline(always)]
    unsafe fn fold(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fin(self, a: __m256) -> __m256 {
        a
    }
    const SCALED: bool = false;
    #[inline(always)]
    unsafe fn pad(self, v: __m256, m: __m256i) -> __m256 {
        // SAFETY: as `Max::pad`.
        unsafe { Max.pad(v, m) }
    }
    #[inline(always)]
    unsafe fn fin_v(self, a: __m256, _: __m256) -> __m256 {
        a
    }
    const CHECK: bool = true;
    type Kernel = MaxUnchecked;
    #[inline(always)]
    fn kernel(self) -> MaxUnchecked {
        self
    }
}

/// Sum, finished by a multiplication with the reciprocal divisor.
#[derive(Clone, Copy)]
struct Sum(f32);

impl Op for Sum {
    #[inline(always)]
    unsafe fn fold(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fin(self, a: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_mul_ps(a, _mm256_set1_ps(self.0)) }
    }
    const SCALED: bool = true;
    #[inline(always)]
    unsafe fn pad(self, v: __m256, _: __m256i) -> __m256 {
        v
    }
    #[inline(always)]
    unsafe fn fin_v(self, a: __m256, s: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_mul_ps(a, s) }
    }
    type Kernel = Sum;
    #[inline(always)]
    fn kernel(self) -> Sum {
        self
    }
}

/// Input planes of at least this many floats (32 KiB, L1's size) get software prefetches:
/// each block fetches (into L1) one line of every input row of the next pass. Same A/B,
/// 3x3 max: 64 x 112 x 112 0.69x the time of the row-buffer path with them, 0.76x
/// without; 64 x 224 x 224 0.61-0.63x against 0.69x; but 96 x 55 x 55 (planes of 12 KB)
/// 0.60x against 0.58x, so smaller planes go without.
const PREFETCH_PLANE: usize = 1 << 13;

/// Forward pooling of stride-2 2x2 / 3x3 windows, NCHW, on AVX2: [`kernel`] when every
/// window lies inside the input, else [`padded`]; false (nothing done) when `S` is not
/// AVX2, or the geometry or the reduction is not these kernels'.
#[inline(always)]
pub(crate) fn s2<S: Simd, R: Red>(p: &Plan, io: Io<'_>, r: R) -> bool {
    if !crate::simd_util::is_avx2::<S>() {
        return false;
    }
    let Some((f, inside)) = super::plan::s2_geometry(p) else { return false };
    // SAFETY: `S` is `V3`, whose existence proves AVX2 and FMA; `io` holds validated views
    // of the geometry's input and output with rows contiguous (NCHW), and `s2_geometry`
    // checked the window, that the problem is not empty and (`inside`) whether every
    // window lies inside the input.
    unsafe {
        match (R::FAST, f) {
            (Fast::None, _) => false,
            (Fast::Max, 2) => whole_or_padded::<_, R, 2>(Max, r, p, io, inside),
            (Fast::Max, _) => whole_or_padded::<_, R, 3>(Max, r, p, io, inside),
            (Fast::Avg, 2) => whole_or_padded::<_, R, 2>(Sum(r.scale(4, 4)), r, p, io, inside),
            (Fast::Avg, _) => whole_or_padded::<_, R, 3>(Sum(r.scale(9, 9)), r, p, io, inside),
        }
    }
}

/// [`kernel`] when `inside`, else [`padded`]; false when `padded` declines.
///
/// # Safety
/// As [`kernel`] when `inside`, else as [`padded`].
#[inline(always)]
unsafe fn whole_or_padded<K: Op, R: Red, const F: usize>(
    k: K,
    r: R,
    p: &Plan,
    io: Io<'_>,
    inside: bool,
) -> bool {
    // SAFETY: as the caller guarantees.
    unsafe {
        if inside {
            kernel::<K, F>(k, p, io);
            true
        } else {
            padded::<K, R, F>(k, r, p, io)
        }
    }
}

/// `row[s .. s + 8]`; with `M`, only the columns below `w` (the others 0).
///
/// # Safety
/// AVX; those columns readable. With `M`, `row + s` may lie past the row (the address is
/// formed with wrapping arithmetic; a masked load reads only the lanes of its mask).
#[inline(always)]
unsafe fn ld<const M: bool>(row: *const f32, s: usize, w: usize) -> __m256 {
    // SAFETY: as the caller guarantees.
    unsafe {
        if M {
            _mm256_maskload_ps(row.wrapping_add(s), first(w.saturating_sub(s)))
        } else {
            _mm256_loadu_ps(row.add(s))
        }
    }
}

/// The horizontal fold of `F`-wide windows (`F` 2 or 3) of the input row at `row` for the
/// 8 outputs whose windows start at column `c` (`c`, `c + 2`, .., `c + 14`), lanes in the
/// order `0 1 4 5 2 3 6 7`. With `M`, columns from `w` on are not read (the lanes of
/// outputs whose windows reach them are garbage). With [`Op::CHECK`], a NaN among columns
/// `c .. c + 16` sets lanes of `nan`.
///
/// # Safety
/// AVX; columns `c .. c + 2 * 8 + F - 2` of the row readable (with `M`, those below `w`).
#[inline(always)]
unsafe fn hrow<K: Op, const F: usize, const M: bool>(
    k: K,
    row: *const f32,
    c: usize,
    w: usize,
    nan: &mut __m256,
) -> __m256 {
    // SAFETY: as the caller guarantees: the loads read columns `c .. c + 16` and, for
    // `F == 3`, `c + 2 .. c + 10` and `c + 9 .. c + 17`.
    unsafe {
        let a = ld::<M>(row, c, w);
        let b = ld::<M>(row, c + 8, w);
        if K::CHECK {
            // Columns `c .. c + 16` (masked lanes hold 0); [`rows`] checks the rest.
            *nan = _mm256_or_ps(*nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b));
        }
        let v = fold_pairs(k, a, b);
        if F == 2 {
            return v;
        }
        // (Starting the second load at 9, not 10, keeps it inside the row for the last
        // block.)
        fold_third(k, v, ld::<M>(row, c + 2, w), ld::<M>(row, c + 9, w))
    }
}

/// The first two taps of the 8 windows starting at columns `0, 2, .., 14` of `a` (columns
/// `0 .. 8`) and `b` (`8 .. 16`), folded: per 128-bit half `[a0 a2 b0 b2]` and `[a1 a3 b1
/// b3]`, columns `0 2 8 10 | 4 6 12 14` and one more; lanes in the order `0 1 4 5 2 3 6 7`.
///
/// # Safety
/// AVX.
#[inline(always)]
unsafe fn fold_pairs<K: Op>(k: K, a: __m256, b: __m256) -> __m256 {
    // SAFETY: as the caller guarantees.
    unsafe { k.fold(_mm256_shuffle_ps::<0x88>(a, b), _mm256_shuffle_ps::<0xDD>(a, b)) }
}

/// [`fold_pairs`]'s `v` folded with each window's third tap, from `a2` (columns `2 .. 10`)
/// and `b2` (`9 .. 17`): `[a0 a2 b1 b3]` per half is `2 4 10 12 | 6 8 14 16`.
///
/// # Safety
/// AVX.
#[inline(always)]
unsafe fn fold_third<K: Op>(k: K, v: __m256, a2: __m256, b2: __m256) -> __m256 {
    // SAFETY: as the caller guarantees.
    unsafe { k.fold(v, _mm256_shuffle_ps::<0xD8>(a2, b2)) }
}

/// Reorders the 8 outputs `v` (lanes `0 1 4 5 2 3 6 7`, `VPERMPD`), finishes them and
/// stores them at `at`; with `M`, only the first `n`.
///
/// # Safety
/// AVX2; those outputs writable.
#[inline(always)]
unsafe fn put<K: Op, const M: bool>(k: K, at: *mut f32, n: usize, v: __m256) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let v = k.fin(_mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(v))));
        if M {
            _mm256_maskstore_ps(at, first(n), v);
        } else {
            _mm256_storeu_ps(at, v);
        }
    }
}

/// One pass's rows: input rows from `x` (`xs` apart, `w` columns each) and output rows
/// from `y` (`ys` apart).
#[derive(Clone, Copy)]
struct Pass {
    x: *const f32,
    xs: usize,
    w: usize,
    y: *mut f32,
    ys: usize,
}

/// `RO` output rows of 8 outputs from `ob`: input rows `0 .. 2 RO + F - 2` of `q` folded
/// horizontally once each, then vertically (3x3: in threes, the rows two outputs share
/// folded once), reordered (`VPERMPD`), finished and stored in output rows `0 .. RO`. With
/// `M`, the input columns from `w` on are not read and only the first `n` outputs are
/// stored.
///
/// # Safety
/// AVX2; the input rows readable at columns `2 ob .. 2 ob + 2 * 8 + F - 2` (with `M`,
/// those below `w`); the `RO` output rows writable at columns `ob .. ob + 8` (with `M`,
/// `ob .. ob + n`), and every output stored a window inside the input.
#[inline(always)]
unsafe fn block<K: Op, const F: usize, const RO: usize, const M: bool>(
    k: K,
    q: Pass,
    ob: usize,
    n: usize,
    nan: &mut __m256,
) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let c = 2 * ob;
        let mut h = |i: usize| hrow::<K, F, M>(k, q.x.add(i * q.xs), c, q.w, nan);
        let out = |j: usize| q.y.add(j * q.ys + ob);
        if F == 2 {
            for j in 0..RO {
                put::<K, M>(k, out(j), n, k.fold(h(2 * j), h(2 * j + 1)));
            }
            return;
        }
        let mut top = h(0);
        for j in 0..RO {
            let (mid, bot) = (h(2 * j + 1), h(2 * j + 2));
            put::<K, M>(k, out(j), n, k.fold(k.fold(top, mid), bot));
            top = bot;
        }
    }
}

/// `RO` output rows of `q`, `ow` outputs each: whole blocks of 8, then one block ending
/// at the row's end that overlaps the last whole one (storing the same values again); a
/// row of fewer than 8 outputs is one masked block. With `PF`, each block first
/// prefetches one line of every input row of the next pass, which starts at `ahead`. With
/// [`Op::CHECK`], every input column a window reads is checked for NaN, and the rows run
/// again with [`Max`] if one is found.
///
/// # Safety
/// AVX2; `ow >= 1`; the `2 RO + F - 2` input rows readable at columns below `w`, and every
/// window inside them (`2 (ow - 1) + F - 1 < w`); the output rows writable at `0 .. ow`.
#[inline(always)]
unsafe fn rows<K: Op, const F: usize, const RO: usize, const PF: bool>(
    k: K,
    q: Pass,
    ow: usize,
    ahead: *const f32,
) {
    // SAFETY: as the caller guarantees: block `ob` (with `ob + 8 <= ow`) reads columns up
    // to `2 ob + 2 * 8 + F - 3 <= 2 (ow - 1) + F - 1 < w` and writes `ob .. ob + 8 <= ow`;
    // a masked block reads only columns below `w` and writes `0 .. ow`. Prefetches never
    // fault.
    unsafe {
        let mut nan = _mm256_setzero_ps();
        if ow < 8 {
            // Columns `0 .. 16` checked, past every column a window reads (`2 ow <= 14`).
            block::<K, F, RO, true>(k, q, 0, ow, &mut nan);
        } else {
            let mut ob = 0;
            while ob + 8 <= ow {
                if PF {
                    // One line of each input row the next pass reads first.
                    let new_rows = if F == 2 { 0..2 } else { 1..2 * RO + 1 };
                    for i in new_rows {
                        crate::simd_util::prefetch_l1(ahead.wrapping_add(2 * ob + i * q.xs));
                    }
                }
                block::<K, F, RO, false>(k, q, ob, 8, &mut nan);
                ob += 8;
            }
            if ob < ow {
                block::<K, F, RO, false>(k, q, ow - 8, 8, &mut nan);
            }
            if K::CHECK && F == 3 {
                // The blocks checked columns `0 .. 2 (ow - 8) + 16 = 2 ow`; 3x3 windows
                // also read column `2 ow < w`: columns `2 ow - 7 ..= 2 ow` (`ow >= 8`).
                for i in 0..2 * RO + F - 2 {
                    let v = _mm256_loadu_ps(q.x.add(i * q.xs + 2 * ow - 7));
                    nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                }
            }
        }
        if K::CHECK && _mm256_movemask_ps(nan) != 0 {
            // A NaN among the inputs: these rows again, propagating it.
            rows::<Max, F, RO, false>(Max, q, ow, ahead);
        }
    }
}

/// See [`s2`].
///
/// # Safety
/// AVX2 available; `io` as [`Io`] says for `p`'s input and output; every window of `p`
/// lies inside the input; `p` is an `F x F` stride-2 window (`F` 2 or 3), dilation 1,
/// with at least one output.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<K: Op, const F: usize>(k: K, p: &Plan, io: Io<'_>) {
    // SAFETY: as the caller guarantees.
    unsafe {
        if p.h.saturating_mul(io.xs[2]) >= PREFETCH_PLANE {
            planes::<K::Kernel, F, true>(k.kernel(), p, io);
        } else {
            planes::<K::Kernel, F, false>(k.kernel(), p, io);
        }
    }
}

/// [`kernel`]'s loops, with software prefetches if `PF`.
///
/// # Safety
/// As [`kernel`].
#[inline(always)]
unsafe fn planes<K: Op, const F: usize, const PF: bool>(k: K, p: &Plan, io: Io<'_>) {
    let Io { x, xs, y, ys } = io;
    let (oh, ow) = (p.oh, p.ow);
    let (xb, yb) = (x.as_ptr(), y.as_mut_ptr());
    // SAFETY (whole body): every window lies inside the input, so output row `oy` reads
    // input rows `2 oy .. 2 oy + F <= h` of its plane at columns below `w`, and outputs
    // `ox < ow` of row `oy < oh` are inside the output view (see [`rows`]). The
    // prefetched addresses are formed with wrapping arithmetic and never dereferenced.
    unsafe {
        for n in 0..p.n {
            for c in 0..p.c {
                let xp = xb.add(n * xs[0] + c * xs[1]);
                let yp = yb.add(n * ys[0] + c * ys[1]);
                // The first input row of the pass from output row `oy` (the next plane's
                // first after the last row), for the prefetches.
                let next = |oy: usize| {
                    if oy < oh {
                        xp.wrapping_add(2 * oy * xs[2])
                    } else {
                        xp.wrapping_add(xs[1])
                    }
                };
                let pass = |oy: usize| Pass {
                    x: xp.add(2 * oy * xs[2]),
                    xs: xs[2],
                    w: p.w,
                    y: yp.add(oy * ys[2]),
                    ys: ys[2],
                };
                let mut oy = 0;
                if F == 3 {
                    while oy + 4 <= oh {
                        rows::<K, F, 4, PF>(k, pass(oy), ow, next(oy + 4));
                        oy += 4;
                    }
                }
                while oy < oh {
                    rows::<K, F, 1, PF>(k, pass(oy), ow, next(oy + 1));
                    oy += 1;
                }
            }
        }
    }
}

/// The lanes `j` of a load at column `s` with `0 <= s + j < w`.
///
/// # Safety
/// AVX2.
#[inline(always)]
unsafe fn inside(s: isize, w: usize) -> __m256i {
    let lo = if s < 0 { s.unsigned_abs() } else { 0 };
    let hi = if s < 0 { w.saturating_add(s.unsigned_abs()) } else { w.saturating_sub(s.unsigned_abs()) };
    // SAFETY: as the caller guarantees.
    unsafe { _mm256_andnot_si256(first(lo), first(hi)) }
}

/// `row[s .. s + 8]`; with `M`, the columns outside `0 .. w` hold the fold's identity
/// (never read).
///
/// # Safety
/// AVX2; without `M`, columns `s .. s + 8` of the row readable (`s >= 0`); with `M`, those
/// inside `0 .. w` (the address is formed with wrapping arithmetic; a masked load reads
/// only the lanes of its mask).
#[inline(always)]
unsafe fn ldp<K: Op, const M: bool>(k: K, row: *const f32, s: isize, w: usize) -> __m256 {
    // SAFETY: as the caller guarantees.
    unsafe {
        if M {
            let m = inside(s, w);
            k.pad(_mm256_maskload_ps(row.wrapping_offset(s), m), m)
        } else {
            _mm256_loadu_ps(row.offset(s))
        }
    }
}

/// [`hrow`] for windows that may start left of the input (`c < 0`) or end past it: with
/// `M`, columns outside `0 .. w` count as the fold's identity.
///
/// # Safety
/// AVX2; without `M`, columns `c .. c + 2 * 8 + F - 2` of the row readable (`c >= 0`);
/// with `M`, those inside `0 .. w`.
#[inline(always)]
unsafe fn hrowp<K: Op, const F: usize, const M: bool>(k: K, row: *const f32, c: isize, w: usize) -> __m256 {
    // SAFETY: as the caller guarantees; the loads are those of [`hrow`].
    unsafe {
        let v = fold_pairs(k, ldp::<K, M>(k, row, c, w), ldp::<K, M>(k, row, c + 8, w));
        if F == 2 {
            return v;
        }
        fold_third(k, v, ldp::<K, M>(k, row, c + 2, w), ldp::<K, M>(k, row, c + 9, w))
    }
}

/// Outputs `ob .. ob + 8` of output row `oy` of the plane at `xp` (input rows `xs2`
/// apart), stored at `yr + ob` (with `n < 8`, only the first `n`): the window rows inside
/// the input, each folded horizontally with masked loads where a window leaves the input
/// columns, then vertically; sums finish with each output's own divisor where the
/// window is not whole.
///
/// # Safety
/// AVX2; `p` a validated stride-2 `F x F` window of dilation 1 (`F` 2 or 3); `xp` the
/// plane's first input element, its `p.h` rows readable at columns `0 .. p.w`; `yr + ob
/// .. yr + ob + n` writable outputs of row `oy < p.oh`, `ob + n <= p.ow`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn edge_block<K: Op, R: Red, const F: usize>(
    k: K,
    r: R,
    p: &Plan,
    xp: *const f32,
    xs2: usize,
    yr: *mut f32,
    oy: usize,
    ob: usize,
    n: usize,
) {
    let (ah, aw) = (p.ah, p.aw);
    let (k0, k1, _) = ah.taps(oy);
    // The columns of lane `j`'s window: `c + 2 j .. c + 2 j + F`; a lane outside the
    // interior (or past the row's outputs) may leave the input.
    let c = (2 * ob) as isize - aw.pad as isize;
    let masked = ob < aw.lo || ob + 8 > aw.hi;
    // SAFETY: as the caller guarantees: rows `coord(oy, ky)` for `ky` in `k0..k1` lie
    // inside the input; unmasked loads only when every lane's window lies inside the
    // input columns (interior outputs: columns `c .. c + 2 * 8 + F - 2` inside `0 ..
    // w`); masked loads read only columns inside `0 .. w`; the stores write `ob .. ob +
    // n`.
    unsafe {
        // (Plain loops: closures here were not inlined into the AVX2 context and ran
        // 10-30x slower.) A validated geometry gives every window a row inside the
        // input: `k0 < k1`.
        let mut v = _mm256_setzero_ps();
        for ky in k0..k1 {
            let row = xp.add(ah.coord(oy, ky) * xs2);
            let h = if masked {
                hrowp::<K, F, true>(k, row, c, p.w)
            } else {
                hrowp::<K, F, false>(k, row, c, p.w)
            };
            v = if ky == k0 { h } else { k.fold(v, h) };
        }
        let v = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(v)));
        let v = if K::SCALED && !masked && k1 - k0 < F {
            // A border row's interior columns: one divisor for the block.
            let (taps, padded) = p.counts(oy, ob);
            k.fin_v(v, _mm256_set1_ps(r.scale(taps, padded)))
        } else if K::SCALED && masked {
            let mut s = [0.0f32; 8];
            for (j, d) in s.iter_mut().enumerate().take(n) {
                let (taps, padded) = p.counts(oy, ob + j);
                *d = r.scale(taps, padded);
            }
            k.fin_v(v, _mm256_loadu_ps(s.as_ptr()))
        } else {
            k.fin(v)
        };
        if n == 8 {
            _mm256_storeu_ps(yr.add(ob), v);
        } else {
            _mm256_maskstore_ps(yr.add(ob), first(n), v);
        }
    }
}

/// The first `ncol` (1 or 2) floats at `p` in the low lanes of a vector (the other lanes
/// are not to be used).
///
/// # Safety
/// AVX2; those floats readable.
#[inline(always)]
unsafe fn ld_cols(p: *const f32, ncol: usize) -> __m256 {
    // SAFETY: as the caller guarantees: a 4- or 8-byte load.
    unsafe {
        if ncol == 2 {
            _mm256_castps128_ps256(_mm_castpd_ps(_mm_load_sd(p.cast::<f64>())))
        } else {
            _mm256_castps128_ps256(_mm_load_ss(p))
        }
    }
}

/// A border column's output in an interior row: the `F` window rows from `at` (`xs2`
/// apart), `ncol` (1 or 2) columns each, folded down the rows in lanes 0 and 1, then
/// across them, finished with `scale` (sums). With a scalar fold instead, tap by tap
/// with NaN-propagating maxima, the whole kernel took 1.07-1.25x as long (96 x 55 x 55:
/// 79 us against 63).
///
/// # Safety
/// AVX2; those `F x ncol` floats readable.
#[inline(always)]
unsafe fn edge_col<K: Op, const F: usize>(k: K, at: *const f32, xs2: usize, ncol: usize, scale: f32) -> f32 {
    // SAFETY: as the caller guarantees.
    unsafe {
        let mut v = ld_cols(at, ncol);
        for i in 1..F {
            v = k.fold(v, ld_cols(at.add(i * xs2), ncol));
        }
        if ncol == 2 {
            // Lane 0 folds in lane 1.
            v = k.fold(v, _mm256_movehdup_ps(v));
        }
        if K::SCALED {
            v = k.fin_v(v, _mm256_set1_ps(scale));
        }
        _mm_cvtss_f32(_mm256_castps256_ps128(v))
    }
}

/// [`s2`] for windows of which some touch the padding or run past the input (ceil
/// mode); false (nothing done) for a border the tables below do not cover, which a
/// validated geometry never has.
///
/// Rows of interior outputs run their interior columns through [`kernel`], on a view
/// that starts at the first interior window. The other outputs (border rows, and the
/// columns left and right of the interior) take blocks of 8 whose loads are masked to
/// the input's columns, the other lanes holding the fold's identity (-inf, so padding
/// never wins a max; 0 for sums), folding only the window rows inside the input; sums
/// finish with each output's own divisor.
///
/// Against the row-buffer path (the module docs' A/B, 500 calls): ResNet's pool, max
/// over 64 x 112 x 112 with padding 1, 0.71x the time, average 0.59x; 64 x 56 x 56 0.48-0.57x;
/// 96 x 55 x 55 0.55x (average 0.52x); 256 x 13 x 13 0.50x; 64 x 15 x 15 0.59x; 2x2 with
/// padding 1 over 64 x 112 x 112 0.56x. Without padding the kernel takes ResNet's pool
/// planes in 99 us; with it, 127 us.
///
/// # Safety
/// AVX2 available; `io` as [`Io`] says for `p`'s input and output; `p` an `F x F`
/// stride-2 window (`F` 2 or 3), dilation 1, with at least one output.
#[target_feature(enable = "avx2,fma")]
unsafe fn padded<K: Op, R: Red, const F: usize>(k: K, r: R, p: &Plan, io: Io<'_>) -> bool {
    let Io { x, xs, y, ys } = io;
    let (oh, ow) = (p.oh, p.ow);
    let (ah, aw) = (p.ah, p.aw);
    // The interior (outputs whose windows lie inside the input) of each plane is a
    // problem of its own for [`kernel`] when it has rows and whole blocks of columns;
    // every other row goes block by block. (The same loops written out here with the
    // borders between the passes ran 1.28x slower than `kernel` on a geometry without
    // padding; their hot loop reloaded values spilled to the stack.)
    let inner = ah.lo < ah.hi && aw.lo < aw.hi && ow >= 8;
    // The first interior window's first row and column (`2 lo >= pad` by the interior's
    // definition).
    let iy0 = 2 * ah.lo - ah.pad.min(2 * ah.lo);
    let ix0 = 2 * aw.lo - aw.pad.min(2 * aw.lo);
    let (ioh, iow) = (ah.hi.saturating_sub(ah.lo), aw.hi.saturating_sub(aw.lo));
    let sub = Plan {
        n: 1,
        c: 1,
        h: (2 * ioh + F).saturating_sub(2),
        w: p.w.saturating_sub(ix0),
        oh: ioh,
        ow: iow,
        ..*p
    };
    // The border columns of interior rows: `(ox, first input column, columns, scale)`,
    // the same in every interior row. A validated window (padding at most half the
    // window) has at most one on the left and two on the right, each with 1 to `F - 1 <=
    // 2` input columns (a window with `F` lies inside); anything else is declined.
    let mut cols = [(0usize, 0usize, 0usize, 0.0f32); 4];
    let mut nc = 0;
    for ox in (0..aw.lo).chain(aw.hi..ow) {
        let (kx0, kx1, px) = aw.taps(ox);
        if nc == cols.len() || !(1..=2).contains(&(kx1 - kx0)) {
            return false;
        }
        cols[nc] = (ox, aw.coord(ox, kx0), kx1 - kx0, r.scale(F * (kx1 - kx0), F.saturating_mul(px)));
        nc += 1;
    }
    let (xl, yl) = (x.len(), y.len());
    let (xb, yb) = (x.as_ptr(), y.as_mut_ptr());
    // SAFETY (whole body): the interior outputs `(lo_h + i, lo_w + j)` read input rows
    // `iy0 + 2 i .. iy0 + 2 i + F <= h` and columns `ix0 + 2 j .. ix0 + 2 j + F <= w`, so
    // the views from `(iy0, ix0)` and `(lo_h, lo_w)` of each plane hold a problem of
    // `ioh x iow` outputs whose windows lie inside `sub.h x sub.w` inputs, as [`kernel`]
    // needs (their slices run to the end of `x` and `y`; the offsets are inside them).
    // `edge_block` and `edge_col` get this plane's rows and columns (the table's entries
    // lie inside the input) and outputs of row `oy` below `ow`.
    unsafe {
        for n in 0..p.n {
            for c in 0..p.c {
                let (xo, yo) = (n * xs[0] + c * xs[1], n * ys[0] + c * ys[1]);
                let (xp, yp) = (xb.add(xo), yb.add(yo));
                if inner {
                    let (xi, yi) = (xo + iy0 * xs[2] + ix0, yo + ah.lo * ys[2] + aw.lo);
                    let io = Io {
                        x: core::slice::from_raw_parts(xb.add(xi), xl - xi),
                        xs,
                        y: core::slice::from_raw_parts_mut(yb.add(yi), yl - yi),
                        ys,
                    };
                    kernel::<K, F>(k, &sub, io);
                }
                for oy in 0..oh {
                    let yr = yp.add(oy * ys[2]);
                    if inner && oy >= ah.lo && oy < ah.hi {
                        // The border columns, one output at a time (a masked block of 8
                        // for the one border output of each row of ResNet's pool cost
                        // half the kernel's time).
                        let row0 = xp.add((2 * oy - ah.pad) * xs[2]);
                        for &(ox, c0, ncol, sc) in &cols[..nc] {
                            *yr.add(ox) = edge_col::<K, F>(k, row0.add(c0), xs[2], ncol, sc);
                        }
                    } else if ow < 8 {
                        edge_block::<K, R, F>(k, r, p, xp, xs[2], yr, oy, 0, ow);
                    } else {
                        let mut ob = 0;
                        while ob < ow {
                            edge_block::<K, R, F>(k, r, p, xp, xs[2], yr, oy, ob.min(ow - 8), 8);
                            ob += 8;
                        }
                    }
                }
            }
        }
    }
    true
}

/// Forward pooling of stride-2 3x3 interior windows, NHWC, on AVX2; false (nothing done)
/// when `S` is not AVX2, or the geometry or the reduction is not this kernel's. (2x2
/// windows of stride 2 share no taps and keep the generic kernel.)
///
/// Per output row and chunk of up to 256 channels, the outputs are taken left to right,
/// each pixel's channels in blocks of 4 vectors (then 1, then a masked tail), and the
/// vertical fold of each window's last column waits in a buffer for the next window, whose
/// first column it is: 6 loads and 6 folds a vector of outputs, not 9 and 8, and no scalar
/// channel tail. Measured as the NCHW kernels (against the generic kernel, medians of 500
/// interleaved calls, one thread): max over 96 x 55 x 55 (maxpool_3x3_s2) 0.63-0.80x the
/// time, average 0.71x; 64 x 112 x 112 0.65x; 64 x 224 x 224 0.73-0.78x; 100 channels x 27
/// x 27 0.40x; 256 x 13 x 13 0.72x. Strips of 32 channels taken the whole row at a time
/// (no buffer) were slower: 0.97-0.98x on 96 x 55 x 55 and 1.08-1.19x on 64 x 224 x 224.
#[inline(always)]
pub(crate) fn nhwc_s2<S: Simd, R: Red>(p: &Plan, io: Io<'_>, r: R) -> bool {
    if !crate::simd_util::is_avx2::<S>() || super::plan::s2_window(p) != Some(3) {
        return false;
    }
    // SAFETY: `S` is `V3`, whose existence proves AVX2 and FMA; `io` holds validated views
    // of the geometry's input and output with channels contiguous (NHWC), and `s2_window`
    // checked the window and that every one lies inside a non-empty input.
    unsafe {
        match R::FAST {
            Fast::None => return false,
            Fast::Max => nhwc_kernel(Max, p, io),
            Fast::Avg => nhwc_kernel(Sum(r.scale(9, 9)), p, io),
        }
    }
    true
}

/// The lane mask of the first `n.min(8)` lanes.
///
/// # Safety
/// AVX2.
#[inline(always)]
unsafe fn first(n: usize) -> __m256i {
    // SAFETY: as the caller guarantees.
    unsafe {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }
}

/// The vertical folds of `G` vectors of channels at offset `off` of the three rows `r`
/// (with `M`, one vector, the lanes of `m` only; the others 0).
///
/// # Safety
/// AVX2; those floats readable.
#[inline(always)]
unsafe fn vcol<K: Op, const G: usize, const M: bool>(
    k: K,
    r: [*const f32; 3],
    off: usize,
    m: __m256i,
) -> [__m256; G] {
    // SAFETY: as the caller guarantees.
    unsafe {
        let mut v = [_mm256_setzero_ps(); G];
        for (j, vj) in v.iter_mut().enumerate() {
            let at = off + 8 * j;
            *vj = k.fold(
                k.fold(ldm::<M>(r[0].add(at), m), ldm::<M>(r[1].add(at), m)),
                ldm::<M>(r[2].add(at), m),
            );
        }
        v
    }
}

/// The vector at `at` (with `M`, the lanes of `m` only; the others 0).
///
/// # Safety
/// AVX2; those floats readable.
#[inline(always)]
unsafe fn ldm<const M: bool>(at: *const f32, m: __m256i) -> __m256 {
    // SAFETY: as the caller guarantees.
    unsafe {
        if M {
            _mm256_maskload_ps(at, m)
        } else {
            _mm256_loadu_ps(at)
        }
    }
}

/// Channels per chunk of the NHWC kernel: the vertical folds of a chunk's shared column
/// wait in a buffer of this many floats (1 KiB) while the row moves on.
const NHWC_CHUNK: usize = 256;

/// Output `ox`'s `G` vectors of channels from `ci` (with `M`, one vector, the lanes of
/// `m`): input rows `r` (pixels `px` apart), output pixel at `out`; the vertical fold of
/// the window's first column is read from `keep` and its last column's is left there.
///
/// # Safety
/// AVX2; the channels of pixels `2 ox + 1` and `2 ox + 2` of the rows readable and of the
/// output pixel writable.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nhwc_block<K: Op, const G: usize, const M: bool>(
    k: K,
    r: [*const f32; 3],
    px: usize,
    out: *mut f32,
    ox: usize,
    ci: usize,
    m: __m256i,
    keep: &mut [__m256; G],
) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let mid = vcol::<K, G, M>(k, r, (2 * ox + 1) * px + ci, m);
        let right = vcol::<K, G, M>(k, r, (2 * ox + 2) * px + ci, m);
        for j in 0..G {
            let v = k.fin(k.fold(k.fold(keep[j], mid[j]), right[j]));
            let at = out.add(ci + 8 * j);
            if M {
                _mm256_maskstore_ps(at, m, v);
            } else {
                _mm256_storeu_ps(at, v);
            }
        }
        *keep = right;
    }
}

/// One output row over channels `c0 .. c1` (at most [`NHWC_CHUNK`]): input rows `r`
/// (pixels `px` apart), outputs from `out` (`py` apart), left to right, each pixel's
/// channels in blocks of 4 vectors, then 1, then a masked tail.
///
/// # Safety
/// AVX2; those channels of pixels `0 .. 2 ow + 1` of the rows readable, and of outputs
/// `0 .. ow` writable.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nhwc_chunk<K: Op>(
    k: K,
    r: [*const f32; 3],
    px: usize,
    out: *mut f32,
    py: usize,
    ow: usize,
    c0: usize,
    c1: usize,
) {
    // SAFETY: as the caller guarantees: output `ox` reads pixels `2 ox .. 2 ox + 3` and
    // writes output `ox`, channels `c0 .. c1` (whole vectors end at or before `c1`, the
    // tail is masked to it).
    unsafe {
        let all = first(8);
        let tail = c1 - c0 - (c1 - c0) / 8 * 8;
        let m = first(tail);
        let mut keep = [_mm256_setzero_ps(); NHWC_CHUNK / 8];
        // The first window's first column.
        let mut ci = c0;
        for kv in keep.chunks_exact_mut(4) {
            if ci + 32 > c1 {
                break;
            }
            kv.copy_from_slice(&vcol::<K, 4, false>(k, r, ci, all));
            ci += 32;
        }
        let mut kept = (ci - c0) / 8;
        while ci + 8 <= c1 {
            keep[kept] = vcol::<K, 1, false>(k, r, ci, all)[0];
            kept += 1;
            ci += 8;
        }
        if tail > 0 {
            keep[kept] = vcol::<K, 1, true>(k, r, ci, m)[0];
        }
        for ox in 0..ow {
            let o = out.add(ox * py);
            let mut ci = c0;
            let mut kv = 0;
            while ci + 32 <= c1 {
                let mut kb = [keep[kv], keep[kv + 1], keep[kv + 2], keep[kv + 3]];
                nhwc_block::<K, 4, false>(k, r, px, o, ox, ci, all, &mut kb);
                keep[kv..kv + 4].copy_from_slice(&kb);
                kv += 4;
                ci += 32;
            }
            while ci + 8 <= c1 {
                let mut kb = [keep[kv]];
                nhwc_block::<K, 1, false>(k, r, px, o, ox, ci, all, &mut kb);
                keep[kv] = kb[0];
                kv += 1;
                ci += 8;
            }
            if tail > 0 {
                let mut kb = [keep[kv]];
                nhwc_block::<K, 1, true>(k, r, px, o, ox, ci, m, &mut kb);
                keep[kv] = kb[0];
            }
        }
    }
}

/// See [`nhwc_s2`].
///
/// # Safety
/// AVX2 available; `io` as [`Io`] says for `p`'s input and output (NHWC); every window of
/// `p` lies inside the input; `p` is a 3x3 stride-2 window, dilation 1, with at least one
/// output.
#[target_feature(enable = "avx2,fma")]
unsafe fn nhwc_kernel<K: Op>(k: K, p: &Plan, io: Io<'_>) {
    let Io { x, xs, y, ys } = io;
    let (xb, yb, c) = (x.as_ptr(), y.as_mut_ptr(), p.c);
    // SAFETY (whole body): every window lies inside the input, so output row `oy` reads
    // input rows `2 oy .. 2 oy + 3 <= h` at pixels `0 .. 2 ow + 1 <= w`, channels below
    // `c` (strips of whole vectors end at or before `c`, the tail is masked to it); outputs
    // `(oy, ox < ow)`, channels below `c`, are inside the output view.
    unsafe {
        for n in 0..p.n {
            for oy in 0..p.oh {
                let r0 = xb.add(n * xs[0] + 2 * oy * xs[2]);
                let out = yb.add(n * ys[0] + oy * ys[2]);
                nhwc_row(k, [r0, r0.add(xs[2]), r0.add(2 * xs[2])], xs[3], out, ys[3], p.ow, c);
            }
        }
    }
}

/// One NHWC output row of `ow` outputs and `c` channels, in chunks of [`NHWC_CHUNK`]
/// channels ([`nhwc_chunk`]).
///
/// # Safety
/// As [`nhwc_chunk`] for channels `0 .. c`.
#[inline(always)]
unsafe fn nhwc_row<K: Op>(
    k: K,
    r: [*const f32; 3],
    px: usize,
    out: *mut f32,
    py: usize,
    ow: usize,
    c: usize,
) {
    // SAFETY: as the caller guarantees, chunk by chunk.
    unsafe {
        let mut c0 = 0;
        while c0 < c {
            let c1 = (c0 + NHWC_CHUNK).min(c);
            nhwc_chunk(k, r, px, out, py, ow, c0, c1);
            c0 = c1;
        }
    }
}

/// The outputs `lo .. hi` of NHWC output row `oy` of image `n`, whose windows lie inside
/// the input, for a 3x3 stride-2 window (dilation 1) with padding or ceil-mode windows
/// past the end (the rest of the row is the caller's); false (nothing done) when `S` is
/// not AVX2, or the window or the reduction is not this kernel's. [`nhwc_s2`]'s kernel,
/// row by row, for the interior of geometries it does not take whole (ResNet's 3x3 pool
/// of stride 2 has padding 1). A/B as [`nhwc_s2`], against the generic kernel: max over
/// 64 x 112 x 112 with padding 1 (ResNet's pool) 0.71-0.77x the time, average 0.83x; 64 x
/// 56 x 56 0.74x.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn nhwc_s2_interior<S: Simd, R: Red>(
    p: &Plan,
    io: Io<'_>,
    r: R,
    n: usize,
    oy: usize,
    lo: usize,
    hi: usize,
) -> bool {
    let (ah, aw) = (p.ah, p.aw);
    let window = [ah.kernel, aw.kernel, ah.stride, aw.stride, ah.dilation, aw.dilation] == [3, 3, 2, 2, 1, 1];
    if !crate::simd_util::is_avx2::<S>() || !window || R::FAST == Fast::None {
        return false;
    }
    let inside = n < p.n && oy >= ah.lo && oy < ah.hi && aw.lo <= lo && lo < hi && hi <= aw.hi;
    if !inside {
        return false;
    }
    // SAFETY: `S` is `V3`, whose existence proves AVX2 and FMA; `io` holds validated views
    // of the geometry's input and output with channels contiguous (NHWC); the windows of
    // outputs `(oy, lo .. hi)` of image `n` lie inside the input (`ah.lo <= oy < ah.hi`,
    // `aw.lo <= lo < hi <= aw.hi`).
    unsafe {
        match R::FAST {
            Fast::Max => nhwc_interior_kernel(Max, p, io, n, oy, lo, hi),
            _ => nhwc_interior_kernel(Sum(r.scale(9, 9)), p, io, n, oy, lo, hi),
        }
    }
    true
}

/// See [`nhwc_s2_interior`].
///
/// # Safety
/// AVX2 available; `io` as [`Io`] says for `p`'s input and output (NHWC); `p` a 3x3
/// stride-2 window of dilation 1; the windows of outputs `(oy, lo .. hi)` of image `n`
/// inside the input, `lo < hi`.
#[target_feature(enable = "avx2,fma")]
unsafe fn nhwc_interior_kernel<K: Op>(k: K, p: &Plan, io: Io<'_>, n: usize, oy: usize, lo: usize, hi: usize) {
    let Io { x, xs, y, ys } = io;
    // SAFETY: as the caller guarantees: input row `coord(oy, 0) + i` (`i < 3`) and pixels
    // from `coord(lo, 0)` to `coord(hi - 1, 2)` are inside the input; outputs `lo .. hi`
    // of row `oy` inside the output.
    unsafe {
        let r0 = x.as_ptr().add(n * xs[0] + p.ah.coord(oy, 0) * xs[2] + p.aw.coord(lo, 0) * xs[3]);
        let out = y.as_mut_ptr().add(n * ys[0] + oy * ys[2] + lo * ys[3]);
        nhwc_row(k, [r0, r0.add(xs[2]), r0.add(2 * xs[2])], xs[3], out, ys[3], hi - lo, p.c);
    }
}
