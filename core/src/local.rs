//! Locally-connected layers: convolutions without parameter sharing (the notes' remark
//! that for centred inputs such as faces one may "relax the parameter sharing scheme").
//!
//! Each output position `(oy, ox)` has its own filter bank, stored dense as
//! `[oh][ow][o][i][kh][kw]` with biases `[oh][ow][o]` ([`LocalWeightsDims`]). For one output
//! position and batch element the kernel gathers the receptive field (zero where it falls
//! in the padding) into a workspace patch in the weights' `i, kh, kw` order, so every
//! output is a contiguous SIMD dot product; the backward passes are SIMD `axpy`s over the
//! same patch. Activations may have any strides (any layout).

use pulp::{Simd, WithSimd};

use crate::error::{Dim, Error, Operand, Result};
use crate::geometry::{checked_product, input_coord, ConvGeometry};
use crate::isa::Exec;
use crate::reference::LocalWeightsDims;
use crate::simd_util::{axpy, dot, dot4};
use crate::tensor::{expect_dims, TensorView, TensorViewMut};

/// f32 elements of workspace every locally-connected kernel needs for `g`: one receptive
/// field, `(C / groups) * kh * kw`.
pub fn locally_connected_workspace_len(g: &ConvGeometry) -> Result<usize> {
    let f = g.filter();
    checked_product(&[f.i, f.kh, f.kw], Dim::Channels)
}

fn check_weights(
    g: &ConvGeometry,
    w: usize,
    op: Operand,
    bias: Option<(usize, Operand)>,
) -> Result<LocalWeightsDims> {
    let ld = LocalWeightsDims::of(g);
    let wc = ld.weight_count()?;
    if w != wc {
        return Err(Error::LengthMismatch { operand: op, expected: wc, actual: w });
    }
    if let Some((b, bop)) = bias {
        let bc = ld.bias_count()?;
        if b != bc {
            return Err(Error::LengthMismatch { operand: bop, expected: bc, actual: b });
        }
    }
    Ok(ld)
}

fn check_workspace(g: &ConvGeometry, ws: &[f32]) -> Result<usize> {
    let need = locally_connected_workspace_len(g)?;
    if ws.len() < need {
        return Err(Error::WorkspaceTooSmall { needed: need, actual: ws.len() });
    }
    Ok(need)
}

/// Locally-connected forward: `y[n, o, oy, ox] = sum_{i, ky, kx} x[n, c(i), iy, ix] *
/// w[oy][ox][o][i][ky][kx] + bias[oy][ox][o]`, with the padding, stride, dilation and
/// groups of `g`. `workspace` needs [`locally_connected_workspace_len`] elements.
///
/// ```
/// use simdconv::{locally_connected, locally_connected_workspace_len, Conv2d, ConvGeometry,
///                Dims, Exec, Layout, TensorView, TensorViewMut};
/// // 1 channel, 1x2 input, 1x1 kernel: each position has its own weight.
/// let g = ConvGeometry::new(Dims::new(1, 1, 1, 2), 1, Conv2d::new(1, 1))?;
/// let x = [3.0f32, 5.0];
/// let w = [2.0f32, -1.0]; // [oh=1][ow=2][o=1][i=1][1][1]
/// let mut y = [0.0f32; 2];
/// let mut ws = vec![0.0; locally_connected_workspace_len(&g)?];
/// locally_connected(&Exec::new(), &g, TensorView::new(&x, g.input(), Layout::Nchw)?, &w, None,
///     TensorViewMut::new(&mut y, g.output(), Layout::Nchw)?, &mut ws)?;
/// assert_eq!(y, [6.0, -5.0]);
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn locally_connected(
    exec: &Exec,
    g: &ConvGeometry,
    x: TensorView<'_, f32>,
    w: &[f32],
    bias: Option<&[f32]>,
    y: TensorViewMut<'_, f32>,
    workspace: &mut [f32],
) -> Result<()> {
    expect_dims(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect_dims(Operand::Output, g.output().to_array(), y.dims().to_array())?;
    let ld = check_weights(g, w.len(), Operand::Filter, bias.map(|b| (b.len(), Operand::Bias)))?;
    let need = check_workspace(g, workspace)?;
    exec.dispatch(LocalForward { g: *g, ld, x, w, bias, y, patch: &mut workspace[..need] });
    Ok(())
}

/// Data gradient of [`locally_connected`]: `dx` (overwritten) from `dy` and the weights.
pub fn locally_connected_backward_data(
    exec: &Exec,
    g: &ConvGeometry,
    dy: TensorView<'_, f32>,
    w: &[f32],
    dx: TensorViewMut<'_, f32>,
    workspace: &mut [f32],
) -> Result<()> {
    expect_dims(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect_dims(Operand::InputGrad, g.input().to_array(), dx.dims().to_array())?;
    let ld = check_weights(g, w.len(), Operand::Filter, None)?;
    let need = check_workspace(g, workspace)?;
    exec.dispatch(LocalBackwardData { g: *g, ld, dy, w, dx, patch: &mut workspace[..need] });
    Ok(())
}

/// Weight and bias gradients of [`locally_connected`], summed over the batch (there is no
/// sharing across positions). `dw` (and `db`) are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn locally_connected_backward_filter(
    exec: &Exec,
    g: &ConvGeometry,
    x: TensorView<'_, f32>,
    dy: TensorView<'_, f32>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    workspace: &mut [f32],
) -> Result<()> {
    expect_dims(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect_dims(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    let ld =
        check_weights(g, dw.len(), Operand::FilterGrad, db.as_ref().map(|b| (b.len(), Operand::BiasGrad)))?;
    let need = check_workspace(g, workspace)?;
    exec.dispatch(LocalBackwardFilter { g: *g, ld, x, dy, dw, db, patch: &mut workspace[..need] });
    Ok(())
}

/// Calls `f(patch_index, iy, ix)` for every in-bounds tap of output `(oy, ox)`, patch
/// index in `i, ky, kx` order (for channel offset `i` only: the caller adds `i * kh * kw`).
#[inline(always)]
fn for_taps(g: &ConvGeometry, oy: usize, ox: usize, mut f: impl FnMut(usize, usize, usize)) {
    let win = g.window();
    let [sh, sw] = win.stride();
    let [dh, dw] = win.dilation();
    let p = win.padding();
    let fd = g.filter();
    let inp = g.input();
    for ky in 0..fd.kh {
        let Some(iy) = input_coord(oy, sh, ky, dh, p.top, inp.h) else { continue };
        for kx in 0..fd.kw {
            let Some(ix) = input_coord(ox, sw, kx, dw, p.left, inp.w) else { continue };
            f(ky * fd.kw + kx, iy, ix);
        }
    }
}

/// Gathers the receptive field of `(n, group, oy, ox)` into `patch` (zeros for padding).
#[inline(always)]
fn gather(
    g: &ConvGeometry,
    x: &TensorView<'_, f32>,
    n: usize,
    c0: usize,
    oy: usize,
    ox: usize,
    patch: &mut [f32],
) {
    let fd = g.filter();
    let plane = fd.kh * fd.kw;
    patch.fill(0.0);
    let data = x.data();
    for i in 0..fd.i {
        let dst = &mut patch[i * plane..(i + 1) * plane];
        for_taps(g, oy, ox, |t, iy, ix| dst[t] = data[x.offset(n, c0 + i, iy, ix)]);
    }
}

struct LocalForward<'a> {
    g: ConvGeometry,
    ld: LocalWeightsDims,
    x: TensorView<'a, f32>,
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    y: TensorViewMut<'a, f32>,
    patch: &'a mut [f32],
}

impl WithSimd for LocalForward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let LocalForward { g, ld, x, w, bias, mut y, patch } = self;
        let out = g.output();
        let fi = g.filter().i;
        let ocg = out.c / g.groups();
        let plen = patch.len();
        for oy in 0..out.h {
            for ox in 0..out.w {
                let row = |o: usize| {
                    let s = ld.index(oy, ox, o, 0, 0, 0);
                    &w[s..s + plen]
                };
                let bias_at = |o: usize| bias.map_or(0.0, |b| b[(oy * out.w + ox) * out.c + o]);
                for n in 0..out.n {
                    for grp in 0..g.groups() {
                        gather(&g, &x, n, grp * fi, oy, ox, patch);
                        let (o0, o1) = (grp * ocg, (grp + 1) * ocg);
                        let mut o = o0;
                        while o + 4 <= o1 {
                            let r = dot4(simd, patch, [row(o), row(o + 1), row(o + 2), row(o + 3)]);
                            for (t, v) in r.into_iter().enumerate() {
                                *y.get_mut(n, o + t, oy, ox) = v + bias_at(o + t);
                            }
                            o += 4;
                        }
                        while o < o1 {
                            *y.get_mut(n, o, oy, ox) = dot(simd, patch, row(o)) + bias_at(o);
                            o += 1;
                        }
                    }
                }
            }
        }
    }
}

struct LocalBackwardData<'a> {
    g: ConvGeometry,
    ld: LocalWeightsDims,
    dy: TensorView<'a, f32>,
    w: &'a [f32],
    dx: TensorViewMut<'a, f32>,
    patch: &'a mut [f32],
}

impl WithSimd for LocalBackwardData<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let LocalBackwardData { g, ld, dy, w, mut dx, patch } = self;
        let out = g.output();
        let inp = g.input();
        let fd = g.filter();
        let plane = fd.kh * fd.kw;
        let ocg = out.c / g.groups();
        let plen = patch.len();
        for n in 0..inp.n {
            for c in 0..inp.c {
                for h in 0..inp.h {
                    for x in 0..inp.w {
                        *dx.get_mut(n, c, h, x) = 0.0;
                    }
                }
            }
        }
        for oy in 0..out.h {
            for ox in 0..out.w {
                for n in 0..out.n {
                    for grp in 0..g.groups() {
                        patch.fill(0.0);
                        for o in grp * ocg..(grp + 1) * ocg {
                            let s = ld.index(oy, ox, o, 0, 0, 0);
                            axpy(simd, dy.get(n, o, oy, ox), &w[s..s + plen], patch);
                        }
                        for i in 0..fd.i {
                            let src = &patch[i * plane..(i + 1) * plane];
                            for_taps(&g, oy, ox, |t, iy, ix| {
                                *dx.get_mut(n, grp * fd.i + i, iy, ix) += src[t];
                            });
                        }
                    }
                }
            }
        }
    }
}

struct LocalBackwardFilter<'a> {
    g: ConvGeometry,
    ld: LocalWeightsDims,
    x: TensorView<'a, f32>,
    dy: TensorView<'a, f32>,
    dw: &'a mut [f32],
    db: Option<&'a mut [f32]>,
    patch: &'a mut [f32],
}

impl WithSimd for LocalBackwardFilter<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let LocalBackwardFilter { g, ld, x, dy, dw, mut db, patch } = self;
        let out = g.output();
        let fi = g.filter().i;
        let ocg = out.c / g.groups();
        let plen = patch.len();
        dw.fill(0.0);
        if let Some(db) = db.as_deref_mut() {
            db.fill(0.0);
        }
        for oy in 0..out.h {
            for ox in 0..out.w {
                for n in 0..out.n {
                    for grp in 0..g.groups() {
                        gather(&g, &x, n, grp * fi, oy, ox, patch);
                        for o in grp * ocg..(grp + 1) * ocg {
                            let d = dy.get(n, o, oy, ox);
                            let s = ld.index(oy, ox, o, 0, 0, 0);
                            axpy(simd, d, patch, &mut dw[s..s + plen]);
                            if let Some(db) = db.as_deref_mut() {
                                db[(oy * out.w + ox) * out.c + o] += d;
                            }
                        }
                    }
                }
            }
        }
    }
}
