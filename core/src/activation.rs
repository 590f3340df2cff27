//! Standalone element-wise activations (ReLU forward and backward), SIMD-dispatched.

use pulp::{Simd, WithSimd};

use crate::error::{Error, Operand, Result};
use crate::isa::Exec;

struct ReluInPlace<'a> {
    data: &'a mut [f32],
}

impl WithSimd for ReluInPlace<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let zero = simd.splat_f32s(0.0);
        let (head, tail) = S::as_mut_simd_f32s(self.data);
        for v in head {
            // max(x, 0) written as a select so NaN stays NaN on every ISA.
            let neg = simd.less_than_f32s(*v, zero);
            *v = simd.select_f32s(neg, zero, *v);
        }
        for v in tail {
            if *v < 0.0 {
                *v = 0.0;
            }
        }
    }
}

/// ReLU in place: `x = max(0, x)`; NaN stays NaN.
///
/// ```
/// let mut x = [-1.0f32, 2.0, -0.5, 0.0];
/// simdconv::relu_in_place(&simdconv::Exec::new(), &mut x);
/// assert_eq!(x, [0.0, 2.0, 0.0, 0.0]);
/// ```
pub fn relu_in_place(exec: &Exec, data: &mut [f32]) {
    exec.dispatch(ReluInPlace { data });
}

/// ReLU `y = max(0, x)`; `x` and `y` must have the same length.
pub fn relu(exec: &Exec, x: &[f32], y: &mut [f32]) -> Result<()> {
    if x.len() != y.len() {
        return Err(Error::LengthMismatch { operand: Operand::Output, expected: x.len(), actual: y.len() });
    }
    y.copy_from_slice(x);
    relu_in_place(exec, y);
    Ok(())
}

struct ReluBackward<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    dx: &'a mut [f32],
}

impl WithSimd for ReluBackward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let zero = simd.splat_f32s(0.0);
        let (x, xt) = S::as_simd_f32s(self.x);
        let (dy, dyt) = S::as_simd_f32s(self.dy);
        let (dx, dxt) = S::as_mut_simd_f32s(self.dx);
        for ((d, &g), &v) in dx.iter_mut().zip(dy).zip(x) {
            let pos = simd.greater_than_f32s(v, zero);
            *d = simd.select_f32s(pos, g, zero);
        }
        for ((d, &g), &v) in dxt.iter_mut().zip(dyt).zip(xt) {
            *d = if v > 0.0 { g } else { 0.0 };
        }
    }
}

/// ReLU backward: `dx = dy` where `x > 0`, else 0. All three slices have one length.
pub fn relu_backward(exec: &Exec, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    if dy.len() != x.len() {
        return Err(Error::LengthMismatch {
            operand: Operand::OutputGrad,
            expected: x.len(),
            actual: dy.len(),
        });
    }
    if dx.len() != x.len() {
        return Err(Error::LengthMismatch {
            operand: Operand::InputGrad,
            expected: x.len(),
            actual: dx.len(),
        });
    }
    exec.dispatch(ReluBackward { x, dy, dx });
    Ok(())
}
