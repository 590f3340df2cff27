//! Pooling: max (with "switches"), average, L2, global; forward and backward.

use num_traits::Float;

use crate::error::{Error, Operand, Result};
use crate::geometry::{input_coord, Dims, PoolGeometry};
use crate::params::AvgPoolOptions;
use crate::tensor::{TensorView, TensorViewMut};

use super::conv::fill;
use super::expect;

/// The taps of output `(oy, ox)`'s window that land on input elements, as `(iy, ix)`, in
/// scan order (rows outer, columns inner), and the count of taps that land in the
/// padded input (input or padding, but not past the trailing pad).
pub fn pool_window_taps(g: &PoolGeometry, oy: usize, ox: usize, mut f: impl FnMut(usize, usize)) -> usize {
    let win = g.window();
    let [kh, kw] = win.kernel();
    let [sh, sw] = win.stride();
    let [dh, dw] = win.dilation();
    let p = win.padding();
    let Dims { h, w, .. } = g.input();
    let in_padded = |o: usize, s: usize, k: usize, d: usize, pb: usize, pa: usize, n: usize| {
        let pos = o.saturating_mul(s).saturating_add(k.saturating_mul(d));
        pos < n.saturating_add(pb).saturating_add(pa)
    };
    let mut padded_rows = 0;
    let mut padded_cols = 0;
    for ky in 0..kh {
        if in_padded(oy, sh, ky, dh, p.top, p.bottom, h) {
            padded_rows += 1;
        }
    }
    for kx in 0..kw {
        if in_padded(ox, sw, kx, dw, p.left, p.right, w) {
            padded_cols += 1;
        }
    }
    for ky in 0..kh {
        let Some(iy) = input_coord(oy, sh, ky, dh, p.top, h) else { continue };
        for kx in 0..kw {
            let Some(ix) = input_coord(ox, sw, kx, dw, p.left, w) else { continue };
            f(iy, ix);
        }
    }
    padded_rows * padded_cols
}

fn check_pool<T, U>(
    g: &PoolGeometry,
    x: &TensorView<'_, T>,
    y: &TensorViewMut<'_, U>,
    y_op: Operand,
) -> Result<()> {
    expect(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect(y_op, g.output().to_array(), y.dims().to_array())
}

/// Max pooling. Padding never wins: only input elements compete. NaN propagates (the
/// first NaN in scan order wins); among equal maxima the first in scan order wins. If
/// `indices` is given it receives each maximum's flat index `iy * W + ix` into its input
/// plane (PyTorch's `return_indices` encoding), the notes' "switches".
pub fn max_pool2d<T: Float>(
    g: &PoolGeometry,
    x: TensorView<'_, T>,
    mut y: TensorViewMut<'_, T>,
    mut indices: Option<TensorViewMut<'_, usize>>,
) -> Result<()> {
    check_pool(g, &x, &y, Operand::Output)?;
    if let Some(idx) = &indices {
        expect(Operand::Indices, g.output().to_array(), idx.dims().to_array())?;
    }
    let out = g.output();
    let w_in = g.input().w;
    for n in 0..out.n {
        for c in 0..out.c {
            for oy in 0..out.h {
                for ox in 0..out.w {
                    let mut best: Option<(T, usize)> = None;
                    pool_window_taps(g, oy, ox, |iy, ix| {
                        let v = x.get(n, c, iy, ix);
                        let take = match best {
                            None => true,
                            Some((b, _)) => !b.is_nan() && (v.is_nan() || v > b),
                        };
                        if take {
                            best = Some((v, iy * w_in + ix));
                        }
                    });
                    // Geometry validation guarantees at least one tap per window.
                    let (v, i) = best.unwrap_or((T::neg_infinity(), 0));
                    *y.get_mut(n, c, oy, ox) = v;
                    if let Some(idx) = indices.as_mut() {
                        *idx.get_mut(n, c, oy, ox) = i;
                    }
                }
            }
        }
    }
    Ok(())
}

fn avg_divisor(opts: AvgPoolOptions, taps: usize, padded_taps: usize) -> usize {
    match opts.divisor {
        Some(d) => d.get(),
        None if opts.count_include_pad => padded_taps,
        None => taps,
    }
}

/// Average pooling: the sum over the window's input elements divided by the divisor
/// [`AvgPoolOptions`] selects.
pub fn avg_pool2d<T: Float>(
    g: &PoolGeometry,
    x: TensorView<'_, T>,
    mut y: TensorViewMut<'_, T>,
    opts: AvgPoolOptions,
) -> Result<()> {
    check_pool(g, &x, &y, Operand::Output)?;
    let out = g.output();
    for n in 0..out.n {
        for c in 0..out.c {
            for oy in 0..out.h {
                for ox in 0..out.w {
                    let mut sum = T::zero();
                    let mut taps = 0usize;
                    let padded = pool_window_taps(g, oy, ox, |iy, ix| {
                        sum = sum + x.get(n, c, iy, ix);
                        taps += 1;
                    });
                    let d = avg_divisor(opts, taps, padded);
                    *y.get_mut(n, c, oy, ox) = sum / T::from(d).unwrap_or_else(T::one);
                }
            }
        }
    }
    Ok(())
}

/// L2-norm pooling: `sqrt(sum of squares)` over the window (padding adds zero).
pub fn l2_pool2d<T: Float>(
    g: &PoolGeometry,
    x: TensorView<'_, T>,
    mut y: TensorViewMut<'_, T>,
) -> Result<()> {
    check_pool(g, &x, &y, Operand::Output)?;
    let out = g.output();
    for n in 0..out.n {
        for c in 0..out.c {
            for oy in 0..out.h {
                for ox in 0..out.w {
                    let mut sum = T::zero();
                    pool_window_taps(g, oy, ox, |iy, ix| {
                        let v = x.get(n, c, iy, ix);
                        sum = sum + v * v;
                    });
                    *y.get_mut(n, c, oy, ox) = sum.sqrt();
                }
            }
        }
    }
    Ok(())
}

fn global_geometry(x: Dims) -> Result<PoolGeometry> {
    PoolGeometry::new(x, crate::Pool2d::new(x.h, x.w))
}

/// Global max pooling: one maximum per channel (`y` is `[n, c, 1, 1]`), same NaN policy
/// as [`max_pool2d`].
pub fn global_max_pool<T: Float>(x: TensorView<'_, T>, y: TensorViewMut<'_, T>) -> Result<()> {
    let g = global_geometry(x.dims())?;
    max_pool2d(&g, x, y, None)
}

/// Global average pooling (the GoogLeNet / ResNet head): `y` is `[n, c, 1, 1]`.
pub fn global_avg_pool<T: Float>(x: TensorView<'_, T>, y: TensorViewMut<'_, T>) -> Result<()> {
    let g = global_geometry(x.dims())?;
    avg_pool2d(&g, x, y, AvgPoolOptions::PYTORCH)
}

/// Max pooling backward: each output gradient goes to its switch only (accumulating
/// where overlapping windows chose the same input). `dx` is overwritten.
pub fn max_pool2d_backward<T: Float>(
    g: &PoolGeometry,
    dy: TensorView<'_, T>,
    indices: TensorView<'_, usize>,
    mut dx: TensorViewMut<'_, T>,
) -> Result<()> {
    expect(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect(Operand::Indices, g.output().to_array(), indices.dims().to_array())?;
    expect(Operand::InputGrad, g.input().to_array(), dx.dims().to_array())?;
    let out = g.output();
    let Dims { h, w, .. } = g.input();
    let plane = h * w;
    fill(&mut dx, T::zero());
    for n in 0..out.n {
        for c in 0..out.c {
            for oy in 0..out.h {
                for ox in 0..out.w {
                    let i = indices.get(n, c, oy, ox);
                    if i >= plane {
                        return Err(Error::IndexOutOfRange { index: i, len: plane });
                    }
                    let d = dx.get_mut(n, c, i / w, i % w);
                    *d = *d + dy.get(n, c, oy, ox);
                }
            }
        }
    }
    Ok(())
}

/// Average pooling backward: each output gradient spread evenly (by the same divisor)
/// over its window's input elements. `dx` is overwritten.
pub fn avg_pool2d_backward<T: Float>(
    g: &PoolGeometry,
    dy: TensorView<'_, T>,
    mut dx: TensorViewMut<'_, T>,
    opts: AvgPoolOptions,
) -> Result<()> {
    expect(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect(Operand::InputGrad, g.input().to_array(), dx.dims().to_array())?;
    let out = g.output();
    fill(&mut dx, T::zero());
    for n in 0..out.n {
        for c in 0..out.c {
            for oy in 0..out.h {
                for ox in 0..out.w {
                    let mut taps = 0usize;
                    let padded = pool_window_taps(g, oy, ox, |_, _| taps += 1);
                    let d = T::from(avg_divisor(opts, taps, padded)).unwrap_or_else(T::one);
                    let share = dy.get(n, c, oy, ox) / d;
                    pool_window_taps(g, oy, ox, |iy, ix| {
                        let s = dx.get_mut(n, c, iy, ix);
                        *s = *s + share;
                    });
                }
            }
        }
    }
    Ok(())
}

/// L2 pooling backward: `dx += dy * x / y` over each window (0 where `y == 0`).
pub fn l2_pool2d_backward<T: Float>(
    g: &PoolGeometry,
    x: TensorView<'_, T>,
    y: TensorView<'_, T>,
    dy: TensorView<'_, T>,
    mut dx: TensorViewMut<'_, T>,
) -> Result<()> {
    expect(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect(Operand::Output, g.output().to_array(), y.dims().to_array())?;
    expect(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect(Operand::InputGrad, g.input().to_array(), dx.dims().to_array())?;
    let out = g.output();
    fill(&mut dx, T::zero());
    for n in 0..out.n {
        for c in 0..out.c {
            for oy in 0..out.h {
                for ox in 0..out.w {
                    let yv = y.get(n, c, oy, ox);
                    if yv == T::zero() {
                        continue;
                    }
                    let scale = dy.get(n, c, oy, ox) / yv;
                    pool_window_taps(g, oy, ox, |iy, ix| {
                        let v = x.get(n, c, iy, ix) * scale;
                        let s = dx.get_mut(n, c, iy, ix);
                        *s = *s + v;
                    });
                }
            }
        }
    }
    Ok(())
}
