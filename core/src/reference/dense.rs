//! Fully-connected layers, ReLU and local response normalisation.

use num_traits::Float;

use crate::error::{Error, Operand, Result};
use crate::geometry::{FcGeometry, Lrn};
use crate::tensor::{TensorView, TensorViewMut};

use super::expect;

fn len(operand: Operand, s: usize, expected: usize) -> Result<()> {
    if s == expected {
        Ok(())
    } else {
        Err(Error::LengthMismatch { operand, expected, actual: s })
    }
}

/// Fully-connected layer `y[n][o] = sum_i x[n][i] * w[o][i] + b[o]` (row-major, weights
/// `[outputs][inputs]`): every output neuron is connected to every input.
pub fn fully_connected<T: Float>(
    g: &FcGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) -> Result<()> {
    let (nb, ni, no) = (g.batch(), g.inputs(), g.outputs());
    len(Operand::Input, x.len(), nb * ni)?;
    len(Operand::Filter, w.len(), no * ni)?;
    len(Operand::Output, y.len(), nb * no)?;
    if let Some(b) = bias {
        len(Operand::Bias, b.len(), no)?;
    }
    for n in 0..nb {
        for o in 0..no {
            let mut acc = T::zero();
            for i in 0..ni {
                acc = acc + x[n * ni + i] * w[o * ni + i];
            }
            y[n * no + o] = acc + bias.map_or(T::zero(), |b| b[o]);
        }
    }
    Ok(())
}

/// Gradients of [`fully_connected`]: `dx = dy * W`, `dw = dy^T * x` (summed over the
/// batch), `db = sum over the batch of dy`. Each output is optional and overwritten.
pub fn fully_connected_backward<T: Float>(
    g: &FcGeometry,
    x: &[T],
    w: &[T],
    dy: &[T],
    dx: Option<&mut [T]>,
    dw: Option<&mut [T]>,
    db: Option<&mut [T]>,
) -> Result<()> {
    let (nb, ni, no) = (g.batch(), g.inputs(), g.outputs());
    len(Operand::Input, x.len(), nb * ni)?;
    len(Operand::Filter, w.len(), no * ni)?;
    len(Operand::OutputGrad, dy.len(), nb * no)?;
    if let Some(dx) = dx {
        len(Operand::InputGrad, dx.len(), nb * ni)?;
        for n in 0..nb {
            for i in 0..ni {
                let mut acc = T::zero();
                for o in 0..no {
                    acc = acc + dy[n * no + o] * w[o * ni + i];
                }
                dx[n * ni + i] = acc;
            }
        }
    }
    if let Some(dw) = dw {
        len(Operand::FilterGrad, dw.len(), no * ni)?;
        for o in 0..no {
            for i in 0..ni {
                let mut acc = T::zero();
                for n in 0..nb {
                    acc = acc + dy[n * no + o] * x[n * ni + i];
                }
                dw[o * ni + i] = acc;
            }
        }
    }
    if let Some(db) = db {
        len(Operand::BiasGrad, db.len(), no)?;
        for o in 0..no {
            let mut acc = T::zero();
            for n in 0..nb {
                acc = acc + dy[n * no + o];
            }
            db[o] = acc;
        }
    }
    Ok(())
}

/// ReLU `y = max(0, x)` element-wise (NaN stays NaN). `y` may be a copy of `x`'s length.
pub fn relu<T: Float>(x: &[T], y: &mut [T]) -> Result<()> {
    len(Operand::Output, y.len(), x.len())?;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = if v < T::zero() { T::zero() } else { v };
    }
    Ok(())
}

/// ReLU backward: `dx = dy` where `x > 0`, else 0.
pub fn relu_backward<T: Float>(x: &[T], dy: &[T], dx: &mut [T]) -> Result<()> {
    len(Operand::OutputGrad, dy.len(), x.len())?;
    len(Operand::InputGrad, dx.len(), x.len())?;
    for ((d, &g), &v) in dx.iter_mut().zip(dy).zip(x) {
        *d = if v > T::zero() { g } else { T::zero() };
    }
    Ok(())
}

fn lrn_scale<T: Float>(p: &Lrn, x: &TensorView<'_, T>, n: usize, c: usize, h: usize, w: usize) -> T {
    let (lo, hi) = p.window(c, x.dims().c);
    let mut sum = T::zero();
    for j in lo..hi {
        let v = x.get(n, j, h, w);
        sum = sum + v * v;
    }
    T::from(p.k).unwrap_or_else(T::one) + T::from(p.alpha).unwrap_or_else(T::zero) * sum
}

/// Local response normalisation across channels (AlexNet): see [`Lrn`].
pub fn lrn<T: Float>(p: &Lrn, x: TensorView<'_, T>, mut y: TensorViewMut<'_, T>) -> Result<()> {
    p.validate()?;
    expect(Operand::Output, x.dims().to_array(), y.dims().to_array())?;
    let d = x.dims();
    let beta = T::from(p.beta).unwrap_or_else(T::zero);
    for n in 0..d.n {
        for c in 0..d.c {
            for h in 0..d.h {
                for w in 0..d.w {
                    let s = lrn_scale(p, &x, n, c, h, w);
                    *y.get_mut(n, c, h, w) = x.get(n, c, h, w) / s.powf(beta);
                }
            }
        }
    }
    Ok(())
}

/// Backward of [`lrn`]: with `s_c = k + alpha * sum_{j in window(c)} x_j^2`,
/// `dx_j = dy_j * s_j^-beta - 2 * alpha * beta * x_j * sum_{c : j in window(c)} dy_c * x_c * s_c^(-beta-1)`.
pub fn lrn_backward<T: Float>(
    p: &Lrn,
    x: TensorView<'_, T>,
    dy: TensorView<'_, T>,
    mut dx: TensorViewMut<'_, T>,
) -> Result<()> {
    p.validate()?;
    expect(Operand::OutputGrad, x.dims().to_array(), dy.dims().to_array())?;
    expect(Operand::InputGrad, x.dims().to_array(), dx.dims().to_array())?;
    let d = x.dims();
    let beta = T::from(p.beta).unwrap_or_else(T::zero);
    let two_ab = T::from(2.0 * f64::from(p.alpha) * f64::from(p.beta)).unwrap_or_else(T::zero);
    for n in 0..d.n {
        for h in 0..d.h {
            for w in 0..d.w {
                for j in 0..d.c {
                    let sj = lrn_scale(p, &x, n, j, h, w);
                    let mut acc = dy.get(n, j, h, w) * sj.powf(-beta);
                    let mut cross = T::zero();
                    for c in 0..d.c {
                        let (lo, hi) = p.window(c, d.c);
                        if j >= lo && j < hi {
                            let sc = lrn_scale(p, &x, n, c, h, w);
                            cross =
                                cross + dy.get(n, c, h, w) * x.get(n, c, h, w) * sc.powf(-beta - T::one());
                        }
                    }
                    acc = acc - two_ab * x.get(n, j, h, w) * cross;
                    *dx.get_mut(n, j, h, w) = acc;
                }
            }
        }
    }
    Ok(())
}
