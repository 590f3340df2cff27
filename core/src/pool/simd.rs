//! The reductions pooling folds a window with, written once over pulp's `Simd`, and the
//! even/odd split that stride-2 NCHW kernels need.

use pulp::Simd;

use crate::params::AvgPoolOptions;

/// Which AVX-512 kernel of `super::avx512` a reduction has, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fast {
    /// The NaN-propagating maximum.
    Max,
    /// The sum times `scale`.
    Avg,
    /// No dedicated kernel.
    None,
}

/// A window reduction: `acc = combine(acc, x)` from `INIT` over the taps in scan order,
/// then `finish(acc, scale)`.
pub(crate) trait Red: Copy + Send + Sync {
    /// The identity the fold starts from.
    const INIT: f32;
    /// The AVX-512 kernel family of this reduction.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const FAST: Fast;
    /// `combine(INIT, x)` (the fold of one tap), for starting a fold without `INIT`.
    #[inline(always)]
    fn vfirst<S: Simd>(_simd: S, x: S::f32s) -> S::f32s {
        x
    }
    fn v<S: Simd>(simd: S, acc: S::f32s, x: S::f32s) -> S::f32s;
    fn s(acc: f32, x: f32) -> f32;
    fn vfin<S: Simd>(simd: S, acc: S::f32s, scale: S::f32s) -> S::f32s;
    fn sfin(acc: f32, scale: f32) -> f32;
    /// Merges two partial accumulators.
    fn vmerge<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> S::f32s;
    fn smerge(a: f32, b: f32) -> f32;
    /// Merges the lanes of one accumulator.
    fn vreduce<S: Simd>(simd: S, a: S::f32s) -> f32;
    /// The `scale` passed to the finish of a window of `taps` input taps and `padded` taps
    /// in the padded input.
    fn scale(&self, taps: usize, padded: usize) -> f32;
}

/// Maximum. `x` replaces `acc` when it is larger or NaN; a NaN `acc` is never replaced
/// by a number, so NaN propagates, and equal values keep the earlier one (the reference's
/// rules). Written as compare + select: pulp's `max` disagrees across ISAs on NaN.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaxR;

impl Red for MaxR {
    const INIT: f32 = f32::NEG_INFINITY;
    const FAST: Fast = Fast::Max;
    #[inline(always)]
    fn v<S: Simd>(simd: S, acc: S::f32s, x: S::f32s) -> S::f32s {
        vmax(simd, acc, x)
    }
    #[inline(always)]
    fn s(acc: f32, x: f32) -> f32 {
        if x > acc || x.is_nan() {
            x
        } else {
            acc
        }
    }
    #[inline(always)]
    fn vfin<S: Simd>(_: S, acc: S::f32s, _: S::f32s) -> S::f32s {
        acc
    }
    #[inline(always)]
    fn sfin(acc: f32, _: f32) -> f32 {
        acc
    }
    #[inline(always)]
    fn vmerge<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
        Self::v(simd, a, b)
    }
    #[inline(always)]
    fn smerge(a: f32, b: f32) -> f32 {
        Self::s(a, b)
    }
    #[inline(always)]
    fn vreduce<S: Simd>(simd: S, a: S::f32s) -> f32 {
        // pulp's reduce_max is only consistent across ISAs without NaN.
        if simd.first_true_m32s(simd.not_m32s(simd.equal_f32s(a, a))) < S::F32_LANES {
            f32::NAN
        } else {
            simd.reduce_max_f32s(a)
        }
    }
    #[inline(always)]
    fn scale(&self, _: usize, _: usize) -> f32 {
        1.0
    }
}

/// The larger of `acc` and `x` per lane, NaN when either is NaN, on every ISA. Equal
/// values give either operand (so a zero maximum may carry either sign).
///
/// AVX-512: a compare (is `x` a number?) and a masked `max(x, acc)` (which returns `acc`
/// when `acc` is NaN; lanes where `x` is NaN keep `x`). AVX2: `max(acc, x) | max(x, acc)`
/// (each `max` returns its second operand when either is NaN, so one of the two is that
/// NaN, and OR-ing a NaN with any value keeps it a NaN; without NaN both are equal).
/// Elsewhere compare + select, as pulp's `max` disagrees across ISAs on NaN.
#[inline(always)]
pub(crate) fn vmax<S: Simd>(simd: S, acc: S::f32s, x: S::f32s) -> S::f32s {
    #[cfg(target_arch = "x86_64")]
    {
        use core::any::TypeId;
        use core::arch::x86_64::*;
        use core::mem::transmute_copy;
        if TypeId::of::<S>() == TypeId::of::<pulp::x86::V4>() {
            // SAFETY: `S` is `V4`, so `S::f32s` is `f32x16`, 64 bytes like `__m512`, and a
            // value of `S` exists only if AVX-512F is available (the caller holds one).
            unsafe {
                let a: __m512 = transmute_copy(&acc);
                let b: __m512 = transmute_copy(&x);
                let num = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(b, b);
                return transmute_copy(&_mm512_mask_max_ps(b, num, b, a));
            }
        }
        if TypeId::of::<S>() == TypeId::of::<pulp::x86::V3>() {
            // SAFETY: `S` is `V3`, so `S::f32s` is `f32x8`, 32 bytes like `__m256`, and a
            // value of `S` exists only if AVX2 is available.
            unsafe {
                let a: __m256 = transmute_copy(&acc);
                let b: __m256 = transmute_copy(&x);
                return transmute_copy(&_mm256_or_ps(_mm256_max_ps(a, b), _mm256_max_ps(b, a)));
            }
        }
    }
    let take = simd.or_m32s(simd.greater_than_f32s(x, acc), simd.not_m32s(simd.equal_f32s(x, x)));
    simd.select_f32s(take, x, acc)
}

/// Sum, then multiplied by the reciprocal of the divisor [`AvgPoolOptions`] selects.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AvgR(pub AvgPoolOptions);

/// The divisor of a window (the reference's rule).
#[inline(always)]
pub(crate) fn divisor(opts: AvgPoolOptions, taps: usize, padded: usize) -> usize {
    match opts.divisor {
        Some(d) => d.get(),
        None if opts.count_include_pad => padded,
        None => taps,
    }
}

impl Red for AvgR {
    const INIT: f32 = 0.0;
    const FAST: Fast = Fast::Avg;
    #[inline(always)]
    fn v<S: Simd>(simd: S, acc: S::f32s, x: S::f32s) -> S::f32s {
        simd.add_f32s(acc, x)
    }
    #[inline(always)]
    fn s(acc: f32, x: f32) -> f32 {
        acc + x
    }
    #[inline(always)]
    fn vfin<S: Simd>(simd: S, acc: S::f32s, scale: S::f32s) -> S::f32s {
        simd.mul_f32s(acc, scale)
    }
    #[inline(always)]
    fn sfin(acc: f32, scale: f32) -> f32 {
        acc * scale
    }
    #[inline(always)]
    fn vmerge<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
        simd.add_f32s(a, b)
    }
    #[inline(always)]
    fn smerge(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn vreduce<S: Simd>(simd: S, a: S::f32s) -> f32 {
        simd.reduce_sum_f32s(a)
    }
    #[inline(always)]
    fn scale(&self, taps: usize, padded: usize) -> f32 {
        1.0 / divisor(self.0, taps, padded) as f32
    }
}

/// L2 norm: the sum of squares, then its square root.
#[derive(Clone, Copy, Debug)]
pub(crate) struct L2R;

impl Red for L2R {
    const INIT: f32 = 0.0;
    const FAST: Fast = Fast::None;
    #[inline(always)]
    fn vfirst<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        simd.mul_f32s(x, x)
    }
    #[inline(always)]
    fn v<S: Simd>(simd: S, acc: S::f32s, x: S::f32s) -> S::f32s {
        simd.mul_add_e_f32s(x, x, acc)
    }
    #[inline(always)]
    fn s(acc: f32, x: f32) -> f32 {
        x * x + acc
    }
    #[inline(always)]
    fn vfin<S: Simd>(simd: S, acc: S::f32s, _: S::f32s) -> S::f32s {
        simd.sqrt_f32s(acc)
    }
    #[inline(always)]
    fn sfin(acc: f32, _: f32) -> f32 {
        num_traits::Float::sqrt(acc)
    }
    #[inline(always)]
    fn vmerge<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
        simd.add_f32s(a, b)
    }
    #[inline(always)]
    fn smerge(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn vreduce<S: Simd>(simd: S, a: S::f32s) -> f32 {
        simd.reduce_sum_f32s(a)
    }
    #[inline(always)]
    fn scale(&self, _: usize, _: usize) -> f32 {
        1.0
    }
}

/// The L2 backward's forward operands: `(x, x strides, y, y strides)`.
pub(crate) type L2Operands<'a> = (&'a [f32], [usize; 4], &'a [f32], [usize; 4]);

/// Largest f32 lane count of any ISA (AVX-512).
pub(crate) const MAX_LANES: usize = 16;

/// Splits the `2L` consecutive values in `a, b` into their even- and odd-indexed halves,
/// in order: `([a0, a2, .., b0, b2, ..], [a1, a3, .., b1, b3, ..])`.
///
/// pulp's `deinterleave_shfl_f32s` pairs the lanes correctly but leaves them permuted on
/// AVX2 / AVX-512, so the x86 paths use their own shuffles.
#[inline(always)]
pub(crate) fn even_odd<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> (S::f32s, S::f32s) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::any::TypeId;
        use core::arch::x86_64::*;
        use core::mem::transmute_copy;
        if TypeId::of::<S>() == TypeId::of::<pulp::x86::V4>() {
            // SAFETY: `S` is `V4`, so `S::f32s` is `f32x16`, 64 bytes like `__m512`, and a
            // value of `S` exists only if AVX-512F is available (the caller holds one).
            unsafe {
                let a: __m512 = transmute_copy(&a);
                let b: __m512 = transmute_copy(&b);
                let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
                let e = _mm512_permutex2var_ps(a, ie, b);
                let o = _mm512_permutex2var_ps(a, io, b);
                return (transmute_copy(&e), transmute_copy(&o));
            }
        }
        if TypeId::of::<S>() == TypeId::of::<pulp::x86::V3>() {
            // SAFETY: `S` is `V3`, so `S::f32s` is `f32x8`, 32 bytes like `__m256`, and a
            // value of `S` exists only if AVX2 is available.
            unsafe {
                let a: __m256 = transmute_copy(&a);
                let b: __m256 = transmute_copy(&b);
                // [a0 a2 b0 b2 | a4 a6 b4 b6], then swap the middle 64-bit quarters.
                let e = _mm256_shuffle_ps::<0x88>(a, b);
                let o = _mm256_shuffle_ps::<0xDD>(a, b);
                let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(e)));
                let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(o)));
                return (transmute_copy(&e), transmute_copy(&o));
            }
        }
    }
    let _ = simd;
    let l = S::F32_LANES;
    if l == 1 {
        return (a, b);
    }
    let mut buf = [0.0f32; 2 * MAX_LANES];
    let mut out = [0.0f32; 2 * MAX_LANES];
    {
        let (v, _) = S::as_mut_simd_f32s(&mut buf[..2 * l]);
        v[0] = a;
        v[1] = b;
    }
    for i in 0..l {
        out[i] = buf[2 * i];
        out[l + i] = buf[2 * i + 1];
    }
    let (v, _) = S::as_simd_f32s(&out[..2 * l]);
    (v[0], v[1])
}

/// `R::vmerge` on raw x86 vectors `T` (which must be `S::f32s`'s layout).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn merge_raw<R: Red, S: Simd, T: Copy>(simd: S, a: T, b: T) -> T {
    debug_assert_eq!(core::mem::size_of::<T>(), core::mem::size_of::<S::f32s>());
    // SAFETY: the callers pass `T = __m512` for `V4` and `__m256` for `V3`, the layouts
    // of their `f32s`; all bit patterns are valid floats.
    unsafe {
        let a: S::f32s = core::mem::transmute_copy(&a);
        let b: S::f32s = core::mem::transmute_copy(&b);
        core::mem::transmute_copy(&R::vmerge(simd, a, b))
    }
}

/// For `v` of `L` vectors, the vector whose lane `i` is the fold (`R::vmerge`) of the
/// lanes of `v[i]`: a transpose-and-merge tree on AVX2 / AVX-512 (`L - 1` merges and
/// `2 (L - 1)` shuffles for `L` reductions), lane by lane elsewhere. Written without
/// closures: they would not inherit the ISA's target features.
#[inline(always)]
pub(crate) fn lanes_reduce<R: Red, S: Simd>(simd: S, v: &[S::f32s]) -> S::f32s {
    let l = S::F32_LANES;
    debug_assert_eq!(v.len(), l);
    #[cfg(target_arch = "x86_64")]
    {
        use core::any::TypeId;
        use core::arch::x86_64::*;
        use core::mem::transmute_copy;
        if TypeId::of::<S>() == TypeId::of::<pulp::x86::V4>() {
            // SAFETY: `S` is `V4`, so `S::f32s` is `f32x16`, 64 bytes like `__m512`, and a
            // value of `S` exists only if AVX-512F is available (the caller holds one).
            unsafe {
                let mut p = [_mm512_setzero_ps(); 16];
                for (d, x) in p.iter_mut().zip(v) {
                    *d = transmute_copy(x);
                }
                // Per 128-bit block: [a, b, a, b] partials of vectors 2i, 2i + 1.
                let mut q = [_mm512_setzero_ps(); 8];
                for (i, d) in q.iter_mut().enumerate() {
                    let (a, b) = (p[2 * i], p[2 * i + 1]);
                    *d = merge_raw::<R, S, _>(simd, _mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
                }
                // Per 128-bit block: one partial of each of vectors 4i .. 4i + 4, in order.
                let mut t = [_mm512_setzero_ps(); 4];
                for (i, d) in t.iter_mut().enumerate() {
                    let (c, e) = (q[2 * i], q[2 * i + 1]);
                    *d = merge_raw::<R, S, _>(
                        simd,
                        _mm512_shuffle_ps::<0x44>(c, e),
                        _mm512_shuffle_ps::<0xEE>(c, e),
                    );
                }
                // Blocks: vectors 8i .. 8i + 4 (two partials), then 8i + 4 .. 8i + 8.
                let mut u = [_mm512_setzero_ps(); 2];
                for (i, d) in u.iter_mut().enumerate() {
                    let (e, f) = (t[2 * i], t[2 * i + 1]);
                    *d = merge_raw::<R, S, _>(
                        simd,
                        _mm512_shuffle_f32x4::<0x88>(e, f),
                        _mm512_shuffle_f32x4::<0xDD>(e, f),
                    );
                }
                let r = merge_raw::<R, S, _>(
                    simd,
                    _mm512_shuffle_f32x4::<0x88>(u[0], u[1]),
                    _mm512_shuffle_f32x4::<0xDD>(u[0], u[1]),
                );
                return transmute_copy(&r);
            }
        }
        if TypeId::of::<S>() == TypeId::of::<pulp::x86::V3>() {
            // SAFETY: `S` is `V3`, so `S::f32s` is `f32x8`, 32 bytes like `__m256`, and a
            // value of `S` exists only if AVX2 is available.
            unsafe {
                let mut p = [_mm256_setzero_ps(); 8];
                for (d, x) in p.iter_mut().zip(v) {
                    *d = transmute_copy(x);
                }
                let mut q = [_mm256_setzero_ps(); 4];
                for (i, d) in q.iter_mut().enumerate() {
                    let (a, b) = (p[2 * i], p[2 * i + 1]);
                    *d = merge_raw::<R, S, _>(simd, _mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
                }
                let mut t = [_mm256_setzero_ps(); 2];
                for (i, d) in t.iter_mut().enumerate() {
                    let (c, e) = (q[2 * i], q[2 * i + 1]);
                    *d = merge_raw::<R, S, _>(
                        simd,
                        _mm256_shuffle_ps::<0x44>(c, e),
                        _mm256_shuffle_ps::<0xEE>(c, e),
                    );
                }
                let r = merge_raw::<R, S, _>(
                    simd,
                    _mm256_permute2f128_ps::<0x20>(t[0], t[1]),
                    _mm256_permute2f128_ps::<0x31>(t[0], t[1]),
                );
                return transmute_copy(&r);
            }
        }
    }
    let mut out = [0.0f32; MAX_LANES];
    for (o, &x) in out.iter_mut().zip(v) {
        *o = R::vreduce(simd, x);
    }
    S::as_simd_f32s(&out[..l]).0[0]
}
