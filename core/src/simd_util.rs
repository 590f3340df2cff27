//! Small SIMD building blocks shared by the dense, locally-connected and LRN kernels (and
//! the L2 prefetch of the pointwise and Winograd kernels).
//! Every function is `#[inline(always)]` so it is compiled inside the caller's
//! `with_simd` for the instruction set at hand.

use pulp::Simd;

use crate::params::Activation;

/// `sum_i a[i] * b[i]` (`a` and `b` of one length), four vector accumulators.
#[inline(always)]
pub(crate) fn dot<S: Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    let (ah, at) = S::as_simd_f32s(a);
    let (bh, bt) = S::as_simd_f32s(b);
    let z = simd.splat_f32s(0.0);
    let (mut s0, mut s1, mut s2, mut s3) = (z, z, z, z);
    let mut ac = ah.chunks_exact(4);
    let mut bc = bh.chunks_exact(4);
    for (x, y) in (&mut ac).zip(&mut bc) {
        s0 = simd.mul_add_e_f32s(x[0], y[0], s0);
        s1 = simd.mul_add_e_f32s(x[1], y[1], s1);
        s2 = simd.mul_add_e_f32s(x[2], y[2], s2);
        s3 = simd.mul_add_e_f32s(x[3], y[3], s3);
    }
    for (&x, &y) in ac.remainder().iter().zip(bc.remainder()) {
        s0 = simd.mul_add_e_f32s(x, y, s0);
    }
    let s = simd.add_f32s(simd.add_f32s(s0, s1), simd.add_f32s(s2, s3));
    let mut acc = simd.reduce_sum_f32s(s);
    for (&x, &y) in at.iter().zip(bt) {
        acc += x * y;
    }
    acc
}

/// Four dot products of one vector `x` with four rows `w0..w3` (all of `x`'s length),
/// sharing the loads of `x`.
#[inline(always)]
pub(crate) fn dot4<S: Simd>(simd: S, x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    let (xh, xt) = S::as_simd_f32s(x);
    let (w0, t0) = S::as_simd_f32s(w[0]);
    let (w1, t1) = S::as_simd_f32s(w[1]);
    let (w2, t2) = S::as_simd_f32s(w[2]);
    let (w3, t3) = S::as_simd_f32s(w[3]);
    let z = simd.splat_f32s(0.0);
    let (mut s0, mut s1, mut s2, mut s3) = (z, z, z, z);
    for ((((&v, &a), &b), &c), &d) in xh.iter().zip(w0).zip(w1).zip(w2).zip(w3) {
        s0 = simd.mul_add_e_f32s(v, a, s0);
        s1 = simd.mul_add_e_f32s(v, b, s1);
        s2 = simd.mul_add_e_f32s(v, c, s2);
        s3 = simd.mul_add_e_f32s(v, d, s3);
    }
    let mut r = [
        simd.reduce_sum_f32s(s0),
        simd.reduce_sum_f32s(s1),
        simd.reduce_sum_f32s(s2),
        simd.reduce_sum_f32s(s3),
    ];
    for (k, &v) in xt.iter().enumerate() {
        r[0] += v * t0[k];
        r[1] += v * t1[k];
        r[2] += v * t2[k];
        r[3] += v * t3[k];
    }
    r
}

/// `y += alpha * x` (`x` and `y` of one length).
#[inline(always)]
pub(crate) fn axpy<S: Simd>(simd: S, alpha: f32, x: &[f32], y: &mut [f32]) {
    let a = simd.splat_f32s(alpha);
    let (xh, xt) = S::as_simd_f32s(x);
    let (yh, yt) = S::as_mut_simd_f32s(y);
    for (d, &v) in yh.iter_mut().zip(xh) {
        *d = simd.mul_add_e_f32s(a, v, *d);
    }
    for (d, &v) in yt.iter_mut().zip(xt) {
        *d += alpha * v;
    }
}

/// `y += x` (`x` and `y` of one length).
#[inline(always)]
pub(crate) fn add_to<S: Simd>(simd: S, x: &[f32], y: &mut [f32]) {
    let (xh, xt) = S::as_simd_f32s(x);
    let (yh, yt) = S::as_mut_simd_f32s(y);
    for (d, &v) in yh.iter_mut().zip(xh) {
        *d = simd.add_f32s(*d, v);
    }
    for (d, &v) in yt.iter_mut().zip(xt) {
        *d += v;
    }
}

/// Applies `act` in place; NaN stays NaN on every instruction set (compare + select).
#[inline(always)]
pub(crate) fn activate<S: Simd>(simd: S, act: Activation, y: &mut [f32]) {
    let (lo, hi) = match act {
        Activation::Identity => return,
        Activation::Relu => (0.0, f32::INFINITY),
        Activation::Clamp { min, max } => (min, max),
    };
    let vlo = simd.splat_f32s(lo);
    let vhi = simd.splat_f32s(hi);
    let (yh, yt) = S::as_mut_simd_f32s(y);
    for v in yh {
        let below = simd.less_than_f32s(*v, vlo);
        let t = simd.select_f32s(below, vlo, *v);
        let above = simd.greater_than_f32s(t, vhi);
        *v = simd.select_f32s(above, vhi, t);
    }
    for v in yt {
        *v = act.apply(*v);
    }
}

/// `R x C` dot products of rows `x[r]` with rows `w[c]` (all of one length `len`),
/// register-blocked so each loaded weight vector serves `R` rows and each input vector
/// `C` weights.
#[inline(always)]
pub(crate) fn dot_block<S: Simd, const R: usize, const C: usize>(
    simd: S,
    len: usize,
    x: [&[f32]; R],
    w: [&[f32]; C],
) -> [[f32; C]; R] {
    let heads = len / S::F32_LANES;
    let body = heads * S::F32_LANES;
    let xh: [&[S::f32s]; R] = core::array::from_fn(|r| &S::as_simd_f32s(&x[r][..body]).0[..heads]);
    let wh: [&[S::f32s]; C] = core::array::from_fn(|c| &S::as_simd_f32s(&w[c][..body]).0[..heads]);
    let mut acc = [[simd.splat_f32s(0.0); C]; R];
    for k in 0..heads {
        let wv: [S::f32s; C] = core::array::from_fn(|c| wh[c][k]);
        for r in 0..R {
            let xv = xh[r][k];
            for c in 0..C {
                acc[r][c] = simd.mul_add_e_f32s(xv, wv[c], acc[r][c]);
            }
        }
    }
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            let mut s = simd.reduce_sum_f32s(acc[r][c]);
            for (&a, &b) in x[r][body..len].iter().zip(&w[c][body..len]) {
                s += a * b;
            }
            out[r][c] = s;
        }
    }
    out
}

/// Whether `S` is pulp's AVX2 token (`V3`): code that takes a `core::arch` AVX2 path
/// inside a generic `with_simd` checks this first. Always false off x86-64.
#[inline(always)]
pub(crate) fn is_avx2<S: Simd>() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        core::any::TypeId::of::<S>() == core::any::TypeId::of::<pulp::x86::V3>()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether `S` is pulp's AVX-512 token (`V4`), which also enables AVX2. Always false off
/// x86-64. (Its user, the thin-input stem kernel, needs `std`.)
#[cfg_attr(not(feature = "std"), allow(dead_code))]
#[inline(always)]
pub(crate) fn is_avx512<S: Simd>() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        core::any::TypeId::of::<S>() == core::any::TypeId::of::<pulp::x86::V4>()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A hint to fetch the line at `p` into L1; never faults (any address). (Its user, the
/// AVX2 pooling kernel, is x86-64 only.)
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_l1(p: *const f32) {
    // SAFETY: a prefetch is only a hint: it never faults, whatever the address, and
    // changes no architectural state; SSE is part of x86-64.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
}

/// A hint to fetch the line at `p` into L2; never faults. (Its users, the pointwise and
/// Winograd kernels, need `std`.)
#[cfg_attr(not(feature = "std"), allow(dead_code))]
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults, whatever the address, and
    // changes no architectural state; SSE is part of x86-64.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The 8x8 transpose of AVX2 vectors: lane `i` of result `q` is lane `q` of `a[i]`.
///
/// # Safety
/// AVX2 is available, and the caller has it enabled (a `#[target_feature]` function or
/// pulp's `V3` context), so that this inlines into AVX code. (Its users, the Winograd and
/// im2col kernels, need `std`.)
#[cfg(target_arch = "x86_64")]
#[cfg_attr(not(feature = "std"), allow(dead_code))]
#[inline(always)]
pub(crate) unsafe fn transpose8(a: [core::arch::x86_64::__m256; 8]) -> [core::arch::x86_64::__m256; 8] {
    use core::arch::x86_64::*;
    // SAFETY: the caller runs with AVX2 enabled (see above); register shuffles only.
    unsafe {
        // Pairs of rows interleaved, then quadruples, then the 128-bit halves.
        let (t0, t1) = (_mm256_unpacklo_ps(a[0], a[1]), _mm256_unpackhi_ps(a[0], a[1]));
        let (t2, t3) = (_mm256_unpacklo_ps(a[2], a[3]), _mm256_unpackhi_ps(a[2], a[3]));
        let (t4, t5) = (_mm256_unpacklo_ps(a[4], a[5]), _mm256_unpackhi_ps(a[4], a[5]));
        let (t6, t7) = (_mm256_unpacklo_ps(a[6], a[7]), _mm256_unpackhi_ps(a[6], a[7]));
        let q0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let q1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let q2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let q3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let q4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let q5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let q6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let q7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(q0, q4),
            _mm256_permute2f128_ps::<0x20>(q1, q5),
            _mm256_permute2f128_ps::<0x20>(q2, q6),
            _mm256_permute2f128_ps::<0x20>(q3, q7),
            _mm256_permute2f128_ps::<0x31>(q0, q4),
            _mm256_permute2f128_ps::<0x31>(q1, q5),
            _mm256_permute2f128_ps::<0x31>(q2, q6),
            _mm256_permute2f128_ps::<0x31>(q3, q7),
        ]
    }
}
