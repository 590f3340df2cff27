//! Small vector primitives shared by the backward kernels, and the bias kernels.
//!
//! Every primitive takes strided operands (a stride per operand, in elements) and runs
//! SIMD when the strides are 1, a scalar loop otherwise. Indices are bounds-checked.

use pulp::{Simd, WithSimd};

use crate::tensor::{Layout, TensorView, TensorViewMut};

/// `y[j * ys] += a * x[j * xs]` for `j < len`.
#[inline(always)]
pub(crate) fn axpy<S: Simd>(simd: S, a: f32, x: &[f32], xs: usize, y: &mut [f32], ys: usize, len: usize) {
    if len == 0 {
        return;
    }
    if xs == 1 && ys == 1 {
        let x = &x[..len];
        let y = &mut y[..len];
        let va = simd.splat_f32s(a);
        let (xh, xt) = S::as_simd_f32s(x);
        let (yh, yt) = S::as_mut_simd_f32s(y);
        for (yv, &xv) in yh.iter_mut().zip(xh) {
            *yv = simd.mul_add_e_f32s(va, xv, *yv);
        }
        for (yv, &xv) in yt.iter_mut().zip(xt) {
            *yv += a * xv;
        }
    } else {
        for j in 0..len {
            y[j * ys] += a * x[j * xs];
        }
    }
}

/// `sum_j x[j * xs] * y[j * ys]` for `j < len`.
#[inline(always)]
pub(crate) fn dot<S: Simd>(simd: S, x: &[f32], xs: usize, y: &[f32], ys: usize, len: usize) -> f32 {
    if len == 0 {
        return 0.0;
    }
    if xs == 1 && ys == 1 {
        let (xh, xt) = S::as_simd_f32s(&x[..len]);
        let (yh, yt) = S::as_simd_f32s(&y[..len]);
        let mut acc0 = simd.splat_f32s(0.0);
        let mut acc1 = simd.splat_f32s(0.0);
        let mut pairs_x = xh.chunks_exact(2);
        let mut pairs_y = yh.chunks_exact(2);
        for (px, py) in (&mut pairs_x).zip(&mut pairs_y) {
            acc0 = simd.mul_add_e_f32s(px[0], py[0], acc0);
            acc1 = simd.mul_add_e_f32s(px[1], py[1], acc1);
        }
        for (&a, &b) in pairs_x.remainder().iter().zip(pairs_y.remainder()) {
            acc0 = simd.mul_add_e_f32s(a, b, acc0);
        }
        let mut s = simd.reduce_sum_f32s(simd.add_f32s(acc0, acc1));
        for (&a, &b) in xt.iter().zip(yt) {
            s += a * b;
        }
        s
    } else {
        let mut s = 0.0;
        for j in 0..len {
            s += x[j * xs] * y[j * ys];
        }
        s
    }
}

/// `y[j * ys] += x[j]` for `j < len`.
#[inline(always)]
pub(crate) fn add<S: Simd>(simd: S, x: &[f32], y: &mut [f32], ys: usize, len: usize) {
    if len == 0 {
        return;
    }
    if ys == 1 {
        let (xh, xt) = S::as_simd_f32s(&x[..len]);
        let (yh, yt) = S::as_mut_simd_f32s(&mut y[..len]);
        for (yv, &xv) in yh.iter_mut().zip(xh) {
            *yv = simd.add_f32s(*yv, xv);
        }
        for (yv, &xv) in yt.iter_mut().zip(xt) {
            *yv += xv;
        }
    } else {
        for (j, &v) in x[..len].iter().enumerate() {
            y[j * ys] += v;
        }
    }
}

/// `y[j * ys] = x[j * xs]` for `j < len`.
#[inline(always)]
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) fn copy(x: &[f32], xs: usize, y: &mut [f32], ys: usize, len: usize) {
    if xs == 1 && ys == 1 {
        y[..len].copy_from_slice(&x[..len]);
    } else {
        for j in 0..len {
            y[j * ys] = x[j * xs];
        }
    }
}

/// `db[c] = sum over n, h, w of dy[n, c, h, w]`.
pub(crate) struct BiasGrad<'a, 'b> {
    pub dy: TensorView<'a, f32>,
    pub layout: Layout,
    pub db: &'b mut [f32],
}

impl WithSimd for BiasGrad<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let BiasGrad { dy, layout, db } = self;
        let d = dy.dims();
        let s = dy.strides();
        let data = dy.data();
        db.fill(0.0);
        match layout {
            Layout::Nchw => {
                for (c, slot) in db.iter_mut().enumerate() {
                    let mut acc = 0.0f32;
                    for n in 0..d.n {
                        for h in 0..d.h {
                            let o = n * s[0] + c * s[1] + h * s[2];
                            acc += sum(simd, &data[o..o + d.w]);
                        }
                    }
                    *slot = acc;
                }
            }
            Layout::Nhwc => {
                for n in 0..d.n {
                    for h in 0..d.h {
                        for w in 0..d.w {
                            let o = n * s[0] + h * s[2] + w * s[3];
                            add(simd, &data[o..o + d.c], db, 1, d.c);
                        }
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn sum<S: Simd>(simd: S, x: &[f32]) -> f32 {
    let (h, t) = S::as_simd_f32s(x);
    let mut acc = simd.splat_f32s(0.0);
    for &v in h {
        acc = simd.add_f32s(acc, v);
    }
    let mut s = simd.reduce_sum_f32s(acc);
    for &v in t {
        s += v;
    }
    s
}

/// `y[n, c, h, w] += bias[c]`.
pub(crate) struct AddBias<'a, 'b> {
    pub y: TensorViewMut<'b, f32>,
    pub layout: Layout,
    pub bias: &'a [f32],
}

impl WithSimd for AddBias<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let AddBias { mut y, layout, bias } = self;
        let d = y.dims();
        let s = y.strides();
        let data = y.data_mut();
        match layout {
            Layout::Nchw => {
                for n in 0..d.n {
                    for (c, &b) in bias.iter().enumerate() {
                        let vb = simd.splat_f32s(b);
                        for h in 0..d.h {
                            let o = n * s[0] + c * s[1] + h * s[2];
                            let (yh, yt) = S::as_mut_simd_f32s(&mut data[o..o + d.w]);
                            for v in yh {
                                *v = simd.add_f32s(*v, vb);
                            }
                            for v in yt {
                                *v += b;
                            }
                        }
                    }
                }
            }
            Layout::Nhwc => {
                for n in 0..d.n {
                    for h in 0..d.h {
                        for w in 0..d.w {
                            let o = n * s[0] + h * s[2] + w * s[3];
                            add(simd, bias, &mut data[o..o + d.c], 1, d.c);
                        }
                    }
                }
            }
        }
    }
}
