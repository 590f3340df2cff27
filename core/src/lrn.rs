//! Local response normalisation across channels (AlexNet), forward and backward.
//!
//! `y_c = x_c * s_c^-beta` with `s_c = k + alpha * sum_{j in window(c)} x_j^2` (see
//! [`Lrn`]). The backward pass is
//! `dx_j = dy_j * s_j^-beta - 2 alpha beta x_j * sum_{c : j in window(c)} dy_c x_c s_c^(-beta-1)`.
//!
//! SIMD runs over the contiguous dimension: the width in NCHW (one vector holds the same
//! channel at neighbouring columns), the channels in NHWC (windows become shifted loads
//! from a zero-padded copy of the squares in the workspace). The power `s^-beta` is
//! vectorised exactly for `beta` in {0, 0.5, 0.75, 1} (AlexNet uses 0.75:
//! `1 / (sqrt(s) * sqrt(sqrt(s)))`) and computed lane by lane with `powf` otherwise.

use num_traits::Float;
use pulp::{Simd, WithSimd};

use crate::error::{Dim, Error, Operand, Result, Unsupported};
use crate::geometry::{Dims, Lrn};
use crate::isa::Exec;
use crate::tensor::{expect_dims, Layout, TensorView, TensorViewMut};

const MAX_LANES: usize = 16;

/// f32 elements of workspace [`lrn`] needs for `dims` in `layout`: none for NCHW,
/// `channels + size - 1` for NHWC (the zero-padded squares of one pixel).
pub fn lrn_workspace_len(p: &Lrn, dims: Dims, layout: Layout) -> Result<usize> {
    p.validate()?;
    match layout {
        Layout::Nchw => Ok(0),
        Layout::Nhwc => padded(dims.c, p.size),
    }
}

/// f32 elements of workspace [`lrn_backward`] needs for `dims` in `layout`:
/// `2 * 16 * channels` for NCHW (scale and cross terms for one vector of columns),
/// `3 * channels + 2 * (size - 1)` for NHWC.
pub fn lrn_backward_workspace_len(p: &Lrn, dims: Dims, layout: Layout) -> Result<usize> {
    p.validate()?;
    let over = Error::Overflow { dim: Dim::Channels };
    match layout {
        Layout::Nchw => dims.c.checked_mul(2 * MAX_LANES).ok_or(over),
        Layout::Nhwc => {
            let pc = padded(dims.c, p.size)?;
            pc.checked_mul(2).and_then(|v| v.checked_add(dims.c)).ok_or(over)
        }
    }
}

fn padded(c: usize, size: usize) -> Result<usize> {
    c.checked_add(size - 1).ok_or(Error::Overflow { dim: Dim::LrnSize })
}

use crate::tensor::fits_layout as fits;

/// The layout to run: one whose innermost dimension is contiguous in every view and whose
/// workspace fits, preferring the first view's own layout. A view with a trivial inner
/// dimension (one channel or one column) fits both, so a caller who sized the workspace
/// for either layout is served.
fn pick_layout(
    views: &[(Dims, [usize; 4], Option<Layout>, Operand)],
    need: impl Fn(Layout) -> Result<usize>,
    workspace: usize,
) -> Result<(Layout, usize)> {
    let first = views[0].2.ok_or(Error::Unsupported(Unsupported::NonContiguous(views[0].3)))?;
    let other = match first {
        Layout::Nchw => Layout::Nhwc,
        Layout::Nhwc => Layout::Nchw,
    };
    let all = |l: Layout| views.iter().all(|&(d, s, _, _)| fits(d, s, l));
    let mut first_need = None;
    for l in [first, other] {
        if all(l) {
            let n = need(l)?;
            if n <= workspace {
                return Ok((l, n));
            }
            first_need.get_or_insert(n);
        }
    }
    if let Some(needed) = first_need {
        return Err(Error::WorkspaceTooSmall { needed, actual: workspace });
    }
    // No layout fits every view: name the first view that is not inner-contiguous, else
    // the views disagree.
    for &(_, _, l, op) in views {
        if l.is_none() {
            return Err(Error::Unsupported(Unsupported::NonContiguous(op)));
        }
    }
    Err(Error::Unsupported(Unsupported::MixedLayouts))
}

/// Local response normalisation across channels, forward (AlexNet; see [`Lrn`]).
///
/// `x` and `y` share a layout whose innermost dimension is contiguous; `workspace` needs
/// [`lrn_workspace_len`] elements.
///
/// ```
/// use simdconv::{lrn, lrn_workspace_len, Dims, Exec, Layout, Lrn, TensorView, TensorViewMut};
/// let p = Lrn { size: 3, k: 1.0, alpha: 1.0, beta: 1.0 };
/// let d = Dims::new(1, 2, 1, 1);
/// let x = [1.0f32, 2.0];
/// let mut y = [0.0f32; 2];
/// let mut ws = vec![0.0f32; lrn_workspace_len(&p, d, Layout::Nhwc)?];
/// lrn(&Exec::new(), &p, TensorView::new(&x, d, Layout::Nhwc)?,
///     TensorViewMut::new(&mut y, d, Layout::Nhwc)?, &mut ws)?;
/// assert_eq!(y, [1.0 / 6.0, 2.0 / 6.0]); // both windows see 1 + 1 + 4
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn lrn(
    exec: &Exec,
    p: &Lrn,
    x: TensorView<'_, f32>,
    y: TensorViewMut<'_, f32>,
    workspace: &mut [f32],
) -> Result<()> {
    p.validate()?;
    expect_dims(Operand::Output, x.dims().to_array(), y.dims().to_array())?;
    let (layout, need) = pick_layout(
        &[
            (x.dims(), x.strides(), x.layout(), Operand::Input),
            (y.dims(), y.strides(), y.layout(), Operand::Output),
        ],
        |l| lrn_workspace_len(p, x.dims(), l),
        workspace.len(),
    )?;
    exec.dispatch(LrnForward { p: *p, layout, x, y, ws: &mut workspace[..need] });
    Ok(())
}

/// Backward of [`lrn`]: `dx` from `x` and `dy` (overwritten). All three share a layout
/// whose innermost dimension is contiguous; `workspace` needs
/// [`lrn_backward_workspace_len`] elements.
pub fn lrn_backward(
    exec: &Exec,
    p: &Lrn,
    x: TensorView<'_, f32>,
    dy: TensorView<'_, f32>,
    dx: TensorViewMut<'_, f32>,
    workspace: &mut [f32],
) -> Result<()> {
    p.validate()?;
    expect_dims(Operand::OutputGrad, x.dims().to_array(), dy.dims().to_array())?;
    expect_dims(Operand::InputGrad, x.dims().to_array(), dx.dims().to_array())?;
    let (layout, need) = pick_layout(
        &[
            (x.dims(), x.strides(), x.layout(), Operand::Input),
            (dy.dims(), dy.strides(), dy.layout(), Operand::OutputGrad),
            (dx.dims(), dx.strides(), dx.layout(), Operand::InputGrad),
        ],
        |l| lrn_backward_workspace_len(p, x.dims(), l),
        workspace.len(),
    )?;
    exec.dispatch(LrnBackward { p: *p, layout, x, dy, dx, ws: &mut workspace[..need] });
    Ok(())
}

/// How `s^-beta` is computed.
#[derive(Clone, Copy)]
enum Pow {
    Zero,
    Half,
    ThreeQuarters,
    One,
    General(f32),
}

impl Pow {
    fn of(beta: f32) -> Pow {
        if beta == 0.0 {
            Pow::Zero
        } else if beta == 0.5 {
            Pow::Half
        } else if beta == 0.75 {
            Pow::ThreeQuarters
        } else if beta == 1.0 {
            Pow::One
        } else {
            Pow::General(beta)
        }
    }

    /// `s^-beta` for every lane (`s >= k > 0`).
    #[inline(always)]
    fn inv<S: Simd>(self, simd: S, s: S::f32s) -> S::f32s {
        let one = simd.splat_f32s(1.0);
        match self {
            Pow::Zero => one,
            Pow::Half => simd.div_f32s(one, simd.sqrt_f32s(s)),
            Pow::ThreeQuarters => {
                let r = simd.sqrt_f32s(s);
                simd.div_f32s(one, simd.mul_f32s(r, simd.sqrt_f32s(r)))
            }
            Pow::One => simd.div_f32s(one, s),
            Pow::General(beta) => {
                let mut buf = [0.0f32; MAX_LANES];
                let lanes = &mut buf[..S::F32_LANES];
                simd.partial_store_f32s(lanes, s);
                for v in lanes.iter_mut() {
                    *v = Float::powf(*v, -beta);
                }
                simd.partial_load_f32s(lanes)
            }
        }
    }
}

/// Vector chunks `(start, len)` covering `0..total`: full vectors, the last one shifted
/// back to end at `total` (overlapping its neighbour, recomputing a few identical
/// results) instead of a partial one, unless `total` is shorter than one vector.
#[inline(always)]
fn chunks(total: usize, lanes: usize) -> impl Iterator<Item = (usize, usize)> {
    let (count, len) = if total >= lanes { (total.div_ceil(lanes), lanes) } else { (1, total) };
    (0..count).map(move |i| ((i * lanes).min(total - len), len))
}

/// Loads `len` lanes (`len <= lanes`) from `s[at..]`; the rest are 0.
#[inline(always)]
fn load<S: Simd>(simd: S, s: &[f32], at: usize, len: usize) -> S::f32s {
    if len == S::F32_LANES {
        S::as_simd_f32s(&s[at..at + len]).0[0]
    } else {
        simd.partial_load_f32s(&s[at..at + len])
    }
}

#[inline(always)]
fn store<S: Simd>(simd: S, s: &mut [f32], at: usize, len: usize, v: S::f32s) {
    if len == S::F32_LANES {
        S::as_mut_simd_f32s(&mut s[at..at + len]).0[0] = v;
    } else {
        simd.partial_store_f32s(&mut s[at..at + len], v);
    }
}

struct LrnForward<'a> {
    p: Lrn,
    layout: Layout,
    x: TensorView<'a, f32>,
    y: TensorViewMut<'a, f32>,
    ws: &'a mut [f32],
}

impl WithSimd for LrnForward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let LrnForward { p, layout, x, mut y, ws } = self;
        let d = x.dims();
        let lanes = S::F32_LANES;
        let pow = Pow::of(p.beta);
        let k = simd.splat_f32s(p.k);
        let alpha = simd.splat_f32s(p.alpha);
        let xs = x.data();
        match layout {
            Layout::Nchw => {
                for n in 0..d.n {
                    for h in 0..d.h {
                        for c in 0..d.c {
                            let (lo, hi) = p.window(c, d.c);
                            let yo = y.offset(n, c, h, 0);
                            let xo = x.offset(n, c, h, 0);
                            for (p0, len) in chunks(d.w, lanes) {
                                let mut acc = simd.splat_f32s(0.0);
                                for j in lo..hi {
                                    let v = load(simd, xs, x.offset(n, j, h, 0) + p0, len);
                                    acc = simd.mul_add_e_f32s(v, v, acc);
                                }
                                let s = simd.mul_add_e_f32s(alpha, acc, k);
                                let xc = load(simd, xs, xo + p0, len);
                                let out = simd.mul_f32s(xc, pow.inv(simd, s));
                                store(simd, y.data_mut(), yo + p0, len, out);
                            }
                        }
                    }
                }
            }
            Layout::Nhwc => {
                // ws = [size/2 zeros | x_c^2 for c < C | (size-1)/2 zeros].
                let before = p.size / 2;
                ws.fill(0.0);
                for n in 0..d.n {
                    for h in 0..d.h {
                        for w in 0..d.w {
                            let xo = x.offset(n, 0, h, w);
                            let xp = &xs[xo..xo + d.c];
                            for (q, &v) in ws[before..before + d.c].iter_mut().zip(xp) {
                                *q = v * v;
                            }
                            let yo = y.offset(n, 0, h, w);
                            for (c0, len) in chunks(d.c, lanes) {
                                let mut acc = simd.splat_f32s(0.0);
                                for t in 0..p.size {
                                    acc = simd.add_f32s(acc, load(simd, ws, c0 + t, len));
                                }
                                let s = simd.mul_add_e_f32s(alpha, acc, k);
                                let out = simd.mul_f32s(load(simd, xp, c0, len), pow.inv(simd, s));
                                store(simd, y.data_mut(), yo + c0, len, out);
                            }
                        }
                    }
                }
            }
        }
    }
}

struct LrnBackward<'a> {
    p: Lrn,
    layout: Layout,
    x: TensorView<'a, f32>,
    dy: TensorView<'a, f32>,
    dx: TensorViewMut<'a, f32>,
    ws: &'a mut [f32],
}

impl WithSimd for LrnBackward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let LrnBackward { p, layout, x, dy, mut dx, ws } = self;
        let d = x.dims();
        let lanes = S::F32_LANES;
        let pow = Pow::of(p.beta);
        let k = simd.splat_f32s(p.k);
        let alpha = simd.splat_f32s(p.alpha);
        let two_ab = simd.splat_f32s(-2.0 * p.alpha * p.beta);
        let (xs, dys) = (x.data(), dy.data());
        // Channels c whose window holds j: [j - (size-1)/2, j + size/2].
        let mirror = |j: usize| {
            let lo = j.saturating_sub((p.size - 1) / 2);
            let hi = j.saturating_add(p.size / 2).saturating_add(1).min(d.c);
            (lo, hi)
        };
        match layout {
            Layout::Nchw => {
                // ws = [A: C vectors of s^-beta | T: C vectors of dy x s^(-beta-1)].
                let (wa, wt) = ws.split_at_mut(d.c * MAX_LANES);
                for n in 0..d.n {
                    for h in 0..d.h {
                        for (p0, len) in chunks(d.w, lanes) {
                            for c in 0..d.c {
                                let (lo, hi) = p.window(c, d.c);
                                let mut acc = simd.splat_f32s(0.0);
                                for j in lo..hi {
                                    let v = load(simd, xs, x.offset(n, j, h, 0) + p0, len);
                                    acc = simd.mul_add_e_f32s(v, v, acc);
                                }
                                let s = simd.mul_add_e_f32s(alpha, acc, k);
                                let a = pow.inv(simd, s);
                                let xc = load(simd, xs, x.offset(n, c, h, 0) + p0, len);
                                let g = load(simd, dys, dy.offset(n, c, h, 0) + p0, len);
                                let t = simd.div_f32s(simd.mul_f32s(simd.mul_f32s(g, xc), a), s);
                                store(simd, wa, c * lanes, lanes, a);
                                store(simd, wt, c * lanes, lanes, t);
                            }
                            for j in 0..d.c {
                                let (lo, hi) = mirror(j);
                                let mut cross = simd.splat_f32s(0.0);
                                for c in lo..hi {
                                    cross = simd.add_f32s(cross, load(simd, wt, c * lanes, lanes));
                                }
                                let a = load(simd, wa, j * lanes, lanes);
                                let xj = load(simd, xs, x.offset(n, j, h, 0) + p0, len);
                                let g = load(simd, dys, dy.offset(n, j, h, 0) + p0, len);
                                let out = simd.mul_add_e_f32s(
                                    simd.mul_f32s(two_ab, xj),
                                    cross,
                                    simd.mul_f32s(g, a),
                                );
                                let o = dx.offset(n, j, h, 0) + p0;
                                store(simd, dx.data_mut(), o, len, out);
                            }
                        }
                    }
                }
            }
            Layout::Nhwc => {
                // ws = [Q: padded squares (C + size - 1) | Tp: padded cross terms
                // (C + size - 1) | A: s^-beta (C)].
                let pc = d.c + p.size - 1;
                let (wq, rest) = ws.split_at_mut(pc);
                let (wtp, wa) = rest.split_at_mut(pc);
                let before_q = p.size / 2;
                let before_t = (p.size - 1) / 2;
                wq.fill(0.0);
                wtp.fill(0.0);
                for n in 0..d.n {
                    for h in 0..d.h {
                        for w in 0..d.w {
                            let xo = x.offset(n, 0, h, w);
                            let xp = &xs[xo..xo + d.c];
                            let go = dy.offset(n, 0, h, w);
                            let gp = &dys[go..go + d.c];
                            for (q, &v) in wq[before_q..before_q + d.c].iter_mut().zip(xp) {
                                *q = v * v;
                            }
                            for (c0, len) in chunks(d.c, lanes) {
                                let mut acc = simd.splat_f32s(0.0);
                                for t in 0..p.size {
                                    acc = simd.add_f32s(acc, load(simd, wq, c0 + t, len));
                                }
                                let s = simd.mul_add_e_f32s(alpha, acc, k);
                                let a = pow.inv(simd, s);
                                let xc = load(simd, xp, c0, len);
                                let g = load(simd, gp, c0, len);
                                let t = simd.div_f32s(simd.mul_f32s(simd.mul_f32s(g, xc), a), s);
                                store(simd, wa, c0, len, a);
                                store(simd, wtp, before_t + c0, len, t);
                            }
                            let oo = dx.offset(n, 0, h, w);
                            for (c0, len) in chunks(d.c, lanes) {
                                // Tp[j + t] for t < size covers c in [j - (size-1)/2, j + size/2].
                                let mut cross = simd.splat_f32s(0.0);
                                for t in 0..p.size {
                                    cross = simd.add_f32s(cross, load(simd, wtp, c0 + t, len));
                                }
                                let a = load(simd, wa, c0, len);
                                let xj = load(simd, xp, c0, len);
                                let g = load(simd, gp, c0, len);
                                let out = simd.mul_add_e_f32s(
                                    simd.mul_f32s(two_ab, xj),
                                    cross,
                                    simd.mul_f32s(g, a),
                                );
                                store(simd, dx.data_mut(), oo + c0, len, out);
                            }
                        }
                    }
                }
            }
        }
    }
}
