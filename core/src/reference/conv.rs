//! Convolution and locally-connected layers, forward and backward.

use num_traits::Float;

use crate::error::{Dim, Error, Operand, Result};
use crate::geometry::{checked_product, input_coord, ConvGeometry};
use crate::tensor::{FilterView, FilterViewMut, TensorView, TensorViewMut};

use super::expect;

fn check_io<T>(
    g: &ConvGeometry,
    x: &TensorView<'_, T>,
    w: &FilterView<'_, T>,
    y: [usize; 4],
    y_op: Operand,
) -> Result<()> {
    expect(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect(Operand::Filter, g.filter().to_array(), w.dims().to_array())?;
    expect(y_op, g.output().to_array(), y)
}

/// One output of a convolution: `V[n, o, oy, ox] = sum(X[window] * W_o) + b_o`, with
/// zero padding, stride, dilation and groups. Arguments must already be validated
/// (this is what [`conv2d`] calls per element; benchmarks use it to spot-check).
#[must_use]
#[allow(clippy::too_many_arguments)]
pub fn conv2d_at<T: Float>(
    g: &ConvGeometry,
    x: &TensorView<'_, T>,
    w: &FilterView<'_, T>,
    bias: Option<&[T]>,
    n: usize,
    o: usize,
    oy: usize,
    ox: usize,
) -> T {
    let win = g.window();
    let [sh, sw] = win.stride();
    let [dh, dw] = win.dilation();
    let p = win.padding();
    let f = g.filter();
    let ocg = g.output().c / g.groups();
    let group = o / ocg;
    let mut acc = T::zero();
    for i in 0..f.i {
        let c = group * f.i + i;
        for ky in 0..f.kh {
            let Some(iy) = input_coord(oy, sh, ky, dh, p.top, g.input().h) else { continue };
            for kx in 0..f.kw {
                let Some(ix) = input_coord(ox, sw, kx, dw, p.left, g.input().w) else { continue };
                acc = acc + x.get(n, c, iy, ix) * w.get(o, i, ky, kx);
            }
        }
    }
    match bias {
        Some(b) => acc + b[o],
        None => acc,
    }
}

fn check_bias<T>(bias: Option<&[T]>, k: usize, operand: Operand) -> Result<()> {
    match bias {
        Some(b) if b.len() != k => Err(Error::LengthMismatch { operand, expected: k, actual: b.len() }),
        _ => Ok(()),
    }
}

/// Forward convolution `Y = X * W + b` for any geometry, layout and strides.
///
/// ```
/// use simdconv::{reference, Conv2d, ConvGeometry, Dims, FilterDims, FilterLayout, FilterView,
///                Layout, TensorView, TensorViewMut};
/// // The notes' 1-D example: W = 5, F = 3, P = 1, S = 2, weights [1, 0, -1], bias 0.
/// let g = ConvGeometry::new(Dims::new(1, 1, 1, 5), 1, Conv2d::new(1, 3).padding(
///     simdconv::Padding::symmetric(0, 1)).stride(2))?;
/// let x = [0.0f64, 2.0, -1.0, 1.0, 3.0];
/// let w = [1.0f64, 0.0, -1.0];
/// let mut y = [0.0f64; 3];
/// reference::conv2d(&g,
///     TensorView::new(&x, g.input(), Layout::Nchw)?,
///     FilterView::new(&w, g.filter(), FilterLayout::Oihw)?, None,
///     TensorViewMut::new(&mut y, g.output(), Layout::Nchw)?)?;
/// // y[j] = x[2j - 1] - x[2j + 1] with zeros outside.
/// assert_eq!(y, [-2.0, 1.0, 1.0]);
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn conv2d<T: Float>(
    g: &ConvGeometry,
    x: TensorView<'_, T>,
    w: FilterView<'_, T>,
    bias: Option<&[T]>,
    mut y: TensorViewMut<'_, T>,
) -> Result<()> {
    check_io(g, &x, &w, y.dims().to_array(), Operand::Output)?;
    check_bias(bias, g.output().c, Operand::Bias)?;
    let out = g.output();
    for n in 0..out.n {
        for o in 0..out.c {
            for oy in 0..out.h {
                for ox in 0..out.w {
                    *y.get_mut(n, o, oy, ox) = conv2d_at(g, &x, &w, bias, n, o, oy, ox);
                }
            }
        }
    }
    Ok(())
}

/// Visits every (output, tap) pair with the input coordinate it reads:
/// `f(n, o, oy, ox, c, i, ky, kx, iy, ix)`.
fn for_each_tap(g: &ConvGeometry, mut f: impl FnMut([usize; 4], [usize; 4], [usize; 2])) {
    let win = g.window();
    let [sh, sw] = win.stride();
    let [dh, dw] = win.dilation();
    let p = win.padding();
    let fd = g.filter();
    let out = g.output();
    let ocg = out.c / g.groups();
    for n in 0..out.n {
        for o in 0..out.c {
            let group = o / ocg;
            for oy in 0..out.h {
                for ox in 0..out.w {
                    for i in 0..fd.i {
                        let c = group * fd.i + i;
                        for ky in 0..fd.kh {
                            let Some(iy) = input_coord(oy, sh, ky, dh, p.top, g.input().h) else { continue };
                            for kx in 0..fd.kw {
                                let Some(ix) = input_coord(ox, sw, kx, dw, p.left, g.input().w) else {
                                    continue;
                                };
                                f([n, o, oy, ox], [c, i, ky, kx], [iy, ix]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Data gradient `dX` of a convolution: the transpose of the forward map, which the notes
/// describe as a convolution of `dY` with the spatially flipped filters. `dx` is
/// overwritten.
pub fn conv2d_backward_data<T: Float>(
    g: &ConvGeometry,
    dy: TensorView<'_, T>,
    w: FilterView<'_, T>,
    mut dx: TensorViewMut<'_, T>,
) -> Result<()> {
    expect(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect(Operand::Filter, g.filter().to_array(), w.dims().to_array())?;
    expect(Operand::InputGrad, g.input().to_array(), dx.dims().to_array())?;
    fill(&mut dx, T::zero());
    for_each_tap(g, |[n, o, oy, ox], [c, i, ky, kx], [iy, ix]| {
        let v = dy.get(n, o, oy, ox) * w.get(o, i, ky, kx);
        let d = dx.get_mut(n, c, iy, ix);
        *d = *d + v;
    });
    Ok(())
}

/// Weight gradient `dW` of a convolution, summed over the batch and over every position
/// that shares the weights (the notes' parameter sharing). `dw` is overwritten.
pub fn conv2d_backward_filter<T: Float>(
    g: &ConvGeometry,
    x: TensorView<'_, T>,
    dy: TensorView<'_, T>,
    mut dw: FilterViewMut<'_, T>,
) -> Result<()> {
    expect(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect(Operand::FilterGrad, g.filter().to_array(), dw.dims().to_array())?;
    let fd = g.filter();
    for o in 0..fd.o {
        for i in 0..fd.i {
            for ky in 0..fd.kh {
                for kx in 0..fd.kw {
                    *dw.get_mut(o, i, ky, kx) = T::zero();
                }
            }
        }
    }
    for_each_tap(g, |[n, o, oy, ox], [c, i, ky, kx], [iy, ix]| {
        let v = dy.get(n, o, oy, ox) * x.get(n, c, iy, ix);
        let d = dw.get_mut(o, i, ky, kx);
        *d = *d + v;
    });
    Ok(())
}

/// Bias gradient `db[o] = sum over n, y, x of dY[n, o, y, x]`.
pub fn conv2d_backward_bias<T: Float>(dy: TensorView<'_, T>, db: &mut [T]) -> Result<()> {
    let d = dy.dims();
    if db.len() != d.c {
        return Err(Error::LengthMismatch { operand: Operand::BiasGrad, expected: d.c, actual: db.len() });
    }
    for (o, slot) in db.iter_mut().enumerate() {
        let mut acc = T::zero();
        for n in 0..d.n {
            for y in 0..d.h {
                for x in 0..d.w {
                    acc = acc + dy.get(n, o, y, x);
                }
            }
        }
        *slot = acc;
    }
    Ok(())
}

pub(crate) fn fill<T: Copy>(t: &mut TensorViewMut<'_, T>, v: T) {
    let d = t.dims();
    for n in 0..d.n {
        for c in 0..d.c {
            for h in 0..d.h {
                for w in 0..d.w {
                    *t.get_mut(n, c, h, w) = v;
                }
            }
        }
    }
}

/// Shape of the unshared weights of a locally-connected layer: one filter bank per output
/// position, stored dense as `[oh][ow][o][i][kh][kw]`; biases are `[oh][ow][o]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalWeightsDims {
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Filters per position.
    pub o: usize,
    /// Input channels per group.
    pub i: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
}

impl LocalWeightsDims {
    /// The weight shape a geometry implies.
    #[must_use]
    pub fn of(g: &ConvGeometry) -> Self {
        let f = g.filter();
        LocalWeightsDims { oh: g.output().h, ow: g.output().w, o: f.o, i: f.i, kh: f.kh, kw: f.kw }
    }
    /// Number of weights, or an overflow error.
    pub fn weight_count(&self) -> Result<usize> {
        checked_product(&[self.oh, self.ow, self.o, self.i, self.kh, self.kw], Dim::OutChannels)
    }
    /// Number of biases `oh * ow * o`.
    pub fn bias_count(&self) -> Result<usize> {
        checked_product(&[self.oh, self.ow, self.o], Dim::OutChannels)
    }
    /// Flat index of weight `[oy][ox][o][i][ky][kx]`.
    #[inline]
    #[must_use]
    pub fn index(&self, oy: usize, ox: usize, o: usize, i: usize, ky: usize, kx: usize) -> usize {
        ((((oy * self.ow + ox) * self.o + o) * self.i + i) * self.kh + ky) * self.kw + kx
    }
}

fn check_local<T>(g: &ConvGeometry, w: &[T], bias: Option<&[T]>, op: Operand) -> Result<LocalWeightsDims> {
    let ld = LocalWeightsDims::of(g);
    let wc = ld.weight_count()?;
    if w.len() != wc {
        return Err(Error::LengthMismatch { operand: op, expected: wc, actual: w.len() });
    }
    let bc = ld.bias_count()?;
    if let Some(b) = bias {
        if b.len() != bc {
            return Err(Error::LengthMismatch { operand: Operand::Bias, expected: bc, actual: b.len() });
        }
    }
    Ok(ld)
}

/// Locally-connected layer: a convolution without parameter sharing, as the notes
/// describe for centred inputs such as faces. Each output position `(oy, ox)` has its own
/// filters `w[oy][ox]` and biases `bias[oy][ox]`.
pub fn locally_connected<T: Float>(
    g: &ConvGeometry,
    x: TensorView<'_, T>,
    w: &[T],
    bias: Option<&[T]>,
    mut y: TensorViewMut<'_, T>,
) -> Result<()> {
    expect(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect(Operand::Output, g.output().to_array(), y.dims().to_array())?;
    let ld = check_local(g, w, bias, Operand::Filter)?;
    let out = g.output();
    fill(&mut y, T::zero());
    for_each_tap(g, |[n, o, oy, ox], [c, i, ky, kx], [iy, ix]| {
        let v = x.get(n, c, iy, ix) * w[ld.index(oy, ox, o, i, ky, kx)];
        let d = y.get_mut(n, o, oy, ox);
        *d = *d + v;
    });
    if let Some(b) = bias {
        for n in 0..out.n {
            for o in 0..out.c {
                for oy in 0..out.h {
                    for ox in 0..out.w {
                        let d = y.get_mut(n, o, oy, ox);
                        *d = *d + b[(oy * out.w + ox) * out.c + o];
                    }
                }
            }
        }
    }
    Ok(())
}

/// Data gradient of [`locally_connected`]. `dx` is overwritten.
pub fn locally_connected_backward_data<T: Float>(
    g: &ConvGeometry,
    dy: TensorView<'_, T>,
    w: &[T],
    mut dx: TensorViewMut<'_, T>,
) -> Result<()> {
    expect(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect(Operand::InputGrad, g.input().to_array(), dx.dims().to_array())?;
    let ld = check_local(g, w, None, Operand::Filter)?;
    fill(&mut dx, T::zero());
    for_each_tap(g, |[n, o, oy, ox], [c, i, ky, kx], [iy, ix]| {
        let v = dy.get(n, o, oy, ox) * w[ld.index(oy, ox, o, i, ky, kx)];
        let d = dx.get_mut(n, c, iy, ix);
        *d = *d + v;
    });
    Ok(())
}

/// Weight and bias gradients of [`locally_connected`], summed over the batch only (no
/// sharing). `dw` and `db` are overwritten.
pub fn locally_connected_backward_filter<T: Float>(
    g: &ConvGeometry,
    x: TensorView<'_, T>,
    dy: TensorView<'_, T>,
    dw: &mut [T],
    db: Option<&mut [T]>,
) -> Result<()> {
    expect(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    let ld = check_local(g, dw, None, Operand::FilterGrad)?;
    let out = g.output();
    dw.iter_mut().for_each(|v| *v = T::zero());
    for_each_tap(g, |[n, o, oy, ox], [c, i, ky, kx], [iy, ix]| {
        let idx = ld.index(oy, ox, o, i, ky, kx);
        dw[idx] = dw[idx] + dy.get(n, o, oy, ox) * x.get(n, c, iy, ix);
    });
    if let Some(db) = db {
        let bc = ld.bias_count()?;
        if db.len() != bc {
            return Err(Error::LengthMismatch { operand: Operand::BiasGrad, expected: bc, actual: db.len() });
        }
        db.iter_mut().for_each(|v| *v = T::zero());
        for n in 0..out.n {
            for o in 0..out.c {
                for oy in 0..out.h {
                    for ox in 0..out.w {
                        let idx = (oy * out.w + ox) * out.c + o;
                        db[idx] = db[idx] + dy.get(n, o, oy, ox);
                    }
                }
            }
        }
    }
    Ok(())
}
