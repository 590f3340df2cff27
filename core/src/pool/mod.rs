//! Pooling kernels: max (with the notes' "switches"), average, L2 and global pooling, and
//! their backward passes, for f32.
//!
//! Results match [`crate::reference`]'s pooling functions: maxima exactly, with the same
//! flat indices `iy * W + ix` and the same rules (padding never wins, the first maximum in
//! scan order wins ties, NaN propagates on every instruction set; without indices, the
//! sign of a zero maximum is unspecified); averages and L2 norms within a few rounding
//! errors (sums run in f32, in a different order, and the divisor is applied as a
//! reciprocal).
//!
//! The input and output views (and gradients) must all be contiguous in the same inner
//! dimension: `w` (NCHW-like) or `c` (NHWC-like); other strides are free. Index views may
//! have any strides.
//!
//! NHWC kernels vectorise over channels, for any geometry, forward and backward; pixels
//! whose window lies inside the input take 8 vectors of channels at a time with no
//! per-tap bounds logic (2x2 and 3x3 windows unrolled), border pixels a general loop.
//! NCHW forward passes without switches, for horizontal strides 1 and 2, fold each
//! output row's window rows vertically into a row buffer padded with the fold's identity,
//! then fold that buffer horizontally for every output of the row at once (stride 2 splits
//! `2L` buffer columns into even and odd ones); only windows that touch padding get their
//! divisor fixed afterwards. NCHW max pooling with switches vectorises stride-1 and
//! stride-2 windows over output columns; the NCHW average and L2 backward passes
//! vectorise stride-1 windows. NCHW global pooling folds `L` contiguous planes at a time
//! and reduces the `L` partial vectors with one transpose-and-merge tree. Other strides,
//! columns next to padding in the other paths, and the scatter of saved switches run
//! scalar loops.
//! On AVX-512, forward max and average pooling with 2x2 or 3x3 windows of stride 2 and no
//! padding (every window inside the input), and global max and average pooling, take
//! dedicated `core::arch` kernels in both layouts (`avx512.rs`): NCHW folds `F` rows
//! vertically and splits even and odd columns with two permutes, 16 outputs per block;
//! NHWC folds whole windows over channel blocks (3x3: keeping the shared column's vertical
//! fold for the next output); tails are masked loads and stores. On AVX2, NCHW 2x2
//! and 3x3 windows of stride 2 without padding skip the row buffer (`avx2.rs`): each input
//! row is folded horizontally once per block of 8 outputs with in-lane shuffles only
//! (one lane-crossing permute per stored vector), 3x3 four output rows at a time; NHWC
//! 3x3 ones keep each window's last column folded for the next window (with padding or
//! ceil-mode windows, for the inner pixels of each row).
//! With feature `rayon`, forward pooling splits the work over [`Exec::threads`]: images,
//! else NCHW channel planes or NHWC output rows (a row slab's input starts at the first
//! row its windows read, keeping what remains of the top padding), each worker getting at
//! least 64 Ki input elements. Max pooling with switches splits images and NCHW channel
//! planes only (a switch is an index into the whole plane); the backward passes run on
//! the calling thread. The kernels never allocate (the thread split keeps a list of its
//! slabs).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod nchw;
mod nhwc;
mod plan;
mod simd;

use crate::error::{Error, Operand, Result};
use crate::geometry::{Dims, Pool2d, PoolGeometry};
use crate::isa::Exec;
use crate::params::AvgPoolOptions;
use crate::tensor::{expect_dims, Layout, TensorView, TensorViewMut};

use plan::Plan;
use simd::{AvgR, MaxR, Red, L2R};

fn desc<T>(op: Operand, v: &TensorView<'_, T>) -> (Operand, Dims, [usize; 4]) {
    (op, v.dims(), v.strides())
}

fn desc_mut<T>(op: Operand, v: &TensorViewMut<'_, T>) -> (Operand, Dims, [usize; 4]) {
    (op, v.dims(), v.strides())
}

/// Zeroes a tensor whose inner dimension (for `layout`) is contiguous.
fn zero(t: &mut TensorViewMut<'_, f32>, layout: Layout) {
    crate::tensor::fill_runs(t, layout, 0.0);
}

fn check_io(g: &PoolGeometry, x: &TensorView<'_, f32>, y: &TensorViewMut<'_, f32>) -> Result<Layout> {
    expect_dims(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect_dims(Operand::Output, g.output().to_array(), y.dims().to_array())?;
    crate::tensor::shared_layout(&[desc(Operand::Input, x), desc_mut(Operand::Output, y)])
}

/// One forward pooling call of a kernel (the kernel types wrap it): the plan, the
/// validated input and output with their strides, and the reduction.
pub(crate) struct Job<'a, R> {
    pub p: &'a Plan,
    pub x: &'a [f32],
    pub xs: [usize; 4],
    pub y: &'a mut [f32],
    pub ys: [usize; 4],
    pub r: R,
}

fn forward<R: Red>(
    exec: &Exec,
    g: &PoolGeometry,
    layout: Layout,
    x: TensorView<'_, f32>,
    mut y: TensorViewMut<'_, f32>,
    r: R,
) {
    let p = Plan::new(g);
    let (xs, ys) = (x.strides(), y.strides());
    let (x, y) = (x.data(), y.data_mut());
    slabs(exec, &p, layout, (x, xs), (y, ys), None, |p, x, y, _| match layout {
        Layout::Nhwc => exec.dispatch(nhwc::Fwd(Job { p, x, xs, y, ys, r })),
        Layout::Nchw if nchw::rows_path(p) => exec.dispatch(nchw::FwdRows(Job { p, x, xs, y, ys, r })),
        Layout::Nchw => exec.dispatch(nchw::Fwd(Job { p, x, xs, y, ys, r })),
    });
}

/// A switch (argmax index) output and its strides.
type Switches<'a> = Option<(&'a mut [usize], [usize; 4])>;

/// Runs `run(plan, x, y, switches)` on the whole problem `p` (input `x` with strides
/// `xs`, output `y` and switches with theirs), or, with feature `rayon` and
/// [`Exec::threads`] above one, on up to that many slabs of it at once, each with its own
/// plan and its input and outputs starting at the slab's first element: see
/// [`par::run`].
fn slabs(
    exec: &Exec,
    p: &Plan,
    layout: Layout,
    (x, xs): (&[f32], [usize; 4]),
    (y, ys): (&mut [f32], [usize; 4]),
    idx: Switches<'_>,
    run: impl Fn(&Plan, &[f32], &mut [f32], Option<&mut [usize]>) + Sync,
) {
    #[cfg(feature = "rayon")]
    let idx = {
        let mut idx = idx;
        let shared = idx.as_mut().map(|(i, is)| (&mut **i, *is));
        if par::run(exec, p, layout, (x, xs), (&mut *y, ys), shared, &run) {
            return;
        }
        idx
    };
    let _ = (exec, layout, xs, ys);
    run(p, x, y, idx.map(|(i, _)| i));
}

#[cfg(feature = "rayon")]
mod par {
    use super::{Exec, Layout, Plan};
    use std::vec::Vec;

    /// Fewest input elements per worker (below that, handing work to a thread costs more
    /// than it saves: global_avgpool's 100 Ki inputs take about 4 us on one thread).
    const MIN_SLAB_INPUTS: usize = 1 << 16;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Axis {
        Batch,
        Channels,
        Rows,
    }

    /// Slab `a..b` (`a < b`) of `axis`: its plan and the offsets of its first input
    /// element and of its first element in each output (strides `os`).
    fn slab(
        p: &Plan,
        axis: Axis,
        a: usize,
        b: usize,
        xs: [usize; 4],
        os: [[usize; 4]; 2],
    ) -> (Plan, usize, [usize; 2]) {
        let mut q = *p;
        let (d, k) = match axis {
            Axis::Batch => {
                q.n = b - a;
                (a, 0)
            }
            Axis::Channels => {
                q.c = b - a;
                (a, 1)
            }
            Axis::Rows => {
                let (ah, d) = p.ah.slab(a, b);
                q.ah = ah;
                q.h = ah.input;
                q.oh = b - a;
                (d, 2)
            }
        };
        (q, d * xs[k], os.map(|s| a * s[k]))
    }

    /// How many elements from the first one the output of `q` spans with strides `s`.
    fn span(q: &Plan, s: [usize; 4]) -> usize {
        1 + (q.n - 1) * s[0] + (q.c - 1) * s[1] + (q.oh - 1) * s[2] + (q.ow - 1) * s[3]
    }

    /// `buf` cut into pieces that start at the ascending offsets `starts`, each running
    /// to the next offset (the last to the end of `buf`); elements before the first
    /// offset belong to no piece.
    fn cut<T>(buf: &mut [T], starts: impl DoubleEndedIterator<Item = usize>) -> Vec<&mut [T]> {
        let mut pieces = Vec::new();
        let mut rest = buf;
        for at in starts.rev() {
            // `rest` is `buf[..]` up to the next piece's start, past `at` (ascending).
            let (head, tail) = rest.split_at_mut(at);
            pieces.push(tail);
            rest = head;
        }
        pieces.reverse();
        pieces
    }

    /// Splits `p` over `exec.threads()` workers on rayon's current pool and runs `run` on
    /// each slab; false (nothing run) when one worker would do. Slabs are images when the
    /// batch has several, else channel planes in NCHW (16 at a time when there are enough:
    /// the AVX-512 global kernel folds 16 planes together) and output rows in NHWC (or for
    /// a single NCHW plane), where a slab's input starts at the first row its windows read
    /// ([`super::plan::AxisPlan::slab`]); with switches, only images and NCHW channel
    /// planes. Each worker gets at least `MIN_SLAB_INPUTS` input elements. The slabs'
    /// outputs (values and switches) must occupy disjoint, ascending
    /// ranges of their buffers (any view whose outer strides exceed the inner extents
    /// does); when a view's strides interleave them, one worker runs. The calling thread
    /// runs the first slab, rayon's workers the others ([`crate::par::fork_join`]).
    pub(super) fn run(
        exec: &Exec,
        p: &Plan,
        layout: Layout,
        (x, xs): (&[f32], [usize; 4]),
        (y, ys): (&mut [f32], [usize; 4]),
        idx: super::Switches<'_>,
        run: &(impl Fn(&Plan, &[f32], &mut [f32], Option<&mut [usize]>) + Sync),
    ) -> bool {
        // Fits: the input's element count was checked by the geometry.
        let inputs = p.n * p.c * p.h * p.w;
        let (axis, unit, total) = if p.n > 1 {
            (Axis::Batch, 1, p.n)
        } else if layout == Layout::Nchw && p.c > 1 {
            (Axis::Channels, if p.c >= 32 { 16 } else { 1 }, p.c)
        } else {
            (Axis::Rows, 1, p.oh)
        };
        // Switches are flat indices into the whole input plane; a row slab's kernel
        // would count its rows from the slab's first one.
        if idx.is_some() && axis == Axis::Rows {
            return false;
        }
        let units = total.div_ceil(unit);
        let workers = exec.threads().min(units).min(inputs / MIN_SLAB_INPUTS);
        if workers < 2 {
            return false;
        }
        let is = idx.as_ref().map_or(ys, |(_, s)| *s);
        let bound = |i: usize| ((units * i / workers) * unit).min(total);
        let parts: Vec<_> =
            (0..workers).map(|i| slab(p, axis, bound(i), bound(i + 1), xs, [ys, is])).collect();
        let apart =
            |k: usize, s: [usize; 4]| parts.windows(2).all(|w| w[0].2[k] + span(&w[0].0, s) <= w[1].2[k]);
        if !apart(0, ys) || !apart(1, is) {
            return false;
        }
        let ypieces = cut(y, parts.iter().map(|s| s.2[0]));
        let ipieces: Vec<Option<&mut [usize]>> = match idx {
            Some((i, _)) => cut(i, parts.iter().map(|s| s.2[1])).into_iter().map(Some).collect(),
            None => (0..workers).map(|_| None).collect(),
        };
        let slabs = parts.into_iter().zip(ypieces).zip(ipieces);
        crate::par::fork_join(slabs, |(((q, xo, _), y), i)| run(&q, &x[xo..], y, i));
        true
    }
}

/// Max pooling, the notes' downsampling layer: each output is the largest input in its
/// window. Padding never wins (only input elements compete); among equal maxima the first
/// in scan order (rows, then columns) wins the index; a NaN in a window makes the output
/// NaN. Without `indices`, a zero maximum may be `+0.0` or `-0.0` when both occur.
///
/// If `indices` is given it receives each maximum's flat index `iy * W + ix` into its
/// input plane (PyTorch's `return_indices`), the "switches" [`max_pool2d_backward`] routes
/// gradients through.
///
/// Errors: shapes that differ from `g` ([`Error::ShapeMismatch`]); `x` and `y` not both
/// contiguous in `w` or both in `c` ([`Error::Unsupported`]).
///
/// ```
/// use simdconv::{max_pool2d, Dims, Exec, Layout, Pool2d, PoolGeometry, TensorView, TensorViewMut};
/// // The notes' figure: a 4x4 input, 2x2 windows with stride 2.
/// let g = PoolGeometry::new(Dims::new(1, 1, 4, 4), Pool2d::new(2, 2).stride(2))?;
/// let x = [1.0f32, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 3.0, 2.0, 1.0, 0.0, 1.0, 2.0, 3.0, 4.0];
/// let mut y = [0.0f32; 4];
/// let mut idx = [0usize; 4];
/// max_pool2d(&Exec::new(), &g,
///     TensorView::new(&x, g.input(), Layout::Nchw)?,
///     TensorViewMut::new(&mut y, g.output(), Layout::Nchw)?,
///     Some(TensorViewMut::new(&mut idx, g.output(), Layout::Nchw)?))?;
/// assert_eq!(y, [6.0, 8.0, 3.0, 4.0]);
/// assert_eq!(idx, [5, 7, 8, 15]);
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn max_pool2d(
    exec: &Exec,
    g: &PoolGeometry,
    x: TensorView<'_, f32>,
    mut y: TensorViewMut<'_, f32>,
    indices: Option<TensorViewMut<'_, usize>>,
) -> Result<()> {
    let layout = check_io(g, &x, &y)?;
    let Some(mut idx) = indices else {
        forward(exec, g, layout, x, y, MaxR);
        return Ok(());
    };
    expect_dims(Operand::Indices, g.output().to_array(), idx.dims().to_array())?;
    let p = Plan::new(g);
    let (xs, ys, is) = (x.strides(), y.strides(), idx.strides());
    let (xd, yd, id) = (x.data(), y.data_mut(), idx.data_mut());
    slabs(exec, &p, layout, (xd, xs), (yd, ys), Some((id, is)), |p, x, y, idx| {
        // Always given: the switches were passed in.
        let Some(idx) = idx else { return };
        match layout {
            Layout::Nhwc => exec.dispatch(nhwc::FwdIdx { p, x, xs, y, ys, idx, is }),
            Layout::Nchw => {
                let sink = |n: usize, c: usize, oy: usize, ox: usize, v: f32, i: usize| {
                    y[n * ys[0] + c * ys[1] + oy * ys[2] + ox * ys[3]] = v;
                    idx[n * is[0] + c * is[1] + oy * is[2] + ox * is[3]] = i;
                };
                exec.dispatch(nchw::Argmax { p, x, xs, sink });
            }
        }
    });
    Ok(())
}

/// Average pooling: the sum of each window's input elements divided by the divisor
/// `opts` selects (padded taps counted or not; taps past the trailing padding of a
/// ceil-mode window never count; or a fixed divisor).
///
/// Errors as [`max_pool2d`].
pub fn avg_pool2d(
    exec: &Exec,
    g: &PoolGeometry,
    x: TensorView<'_, f32>,
    y: TensorViewMut<'_, f32>,
    opts: AvgPoolOptions,
) -> Result<()> {
    let layout = check_io(g, &x, &y)?;
    forward(exec, g, layout, x, y, AvgR(opts));
    Ok(())
}

/// L2-norm pooling: `sqrt(sum of squares)` over each window (padding adds zero). Sums of
/// squares are f32, so inputs beyond about `1.8e19` in magnitude overflow to infinity.
///
/// Errors as [`max_pool2d`].
pub fn l2_pool2d(
    exec: &Exec,
    g: &PoolGeometry,
    x: TensorView<'_, f32>,
    y: TensorViewMut<'_, f32>,
) -> Result<()> {
    let layout = check_io(g, &x, &y)?;
    forward(exec, g, layout, x, y, L2R);
    Ok(())
}

fn global<R: Red>(exec: &Exec, x: TensorView<'_, f32>, mut y: TensorViewMut<'_, f32>, r: R) -> Result<()> {
    let d = x.dims();
    let g = PoolGeometry::new(d, Pool2d::new(d.h, d.w))?;
    let layout = check_io(&g, &x, &y)?;
    match layout {
        Layout::Nhwc => forward(exec, &g, layout, x, y, r),
        Layout::Nchw => {
            let p = Plan::new(&g);
            let (xs, ys) = (x.strides(), y.strides());
            slabs(exec, &p, layout, (x.data(), xs), (y.data_mut(), ys), None, |p, x, y, _| {
                exec.dispatch(nchw::GlobalPlanes(Job { p, x, xs, y, ys, r }));
            });
        }
    }
    Ok(())
}

/// Global max pooling: one maximum per channel plane, `y` is `[n, c, 1, 1]`. Same rules
/// as [`max_pool2d`], except that the sign of a zero maximum is unspecified.
pub fn global_max_pool(exec: &Exec, x: TensorView<'_, f32>, y: TensorViewMut<'_, f32>) -> Result<()> {
    global(exec, x, y, MaxR)
}

/// Global average pooling (the GoogLeNet / ResNet head): `y` is `[n, c, 1, 1]`.
///
/// ```
/// use simdconv::{global_avg_pool, Dims, Exec, Layout, TensorView, TensorViewMut};
/// let x: Vec<f32> = (0..2 * 3 * 3).map(|i| i as f32).collect(); // 2 channels of 3x3
/// let mut y = [0.0f32; 2];
/// global_avg_pool(&Exec::new(),
///     TensorView::new(&x, Dims::new(1, 2, 3, 3), Layout::Nchw)?,
///     TensorViewMut::new(&mut y, Dims::new(1, 2, 1, 1), Layout::Nchw)?)?;
/// assert_eq!(y, [4.0, 13.0]);
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn global_avg_pool(exec: &Exec, x: TensorView<'_, f32>, y: TensorViewMut<'_, f32>) -> Result<()> {
    global(exec, x, y, AvgR(AvgPoolOptions::PYTORCH))
}

/// Global average pooling backward: every input of plane `(n, c)` receives
/// `dy[n, c] / (H * W)`. `dy` is `[n, c, 1, 1]`, `dx` has the input's shape and is
/// overwritten. The same as [`avg_pool2d_backward`] with one window over the whole plane.
///
/// ```
/// use simdconv::{global_avg_pool_backward, Dims, Exec, Layout, TensorView, TensorViewMut};
/// let dy = [6.0f32, -3.0]; // 2 channels
/// let mut dx = [0.0f32; 2 * 2 * 3];
/// global_avg_pool_backward(&Exec::new(),
///     TensorView::new(&dy, Dims::new(1, 2, 1, 1), Layout::Nchw)?,
///     TensorViewMut::new(&mut dx, Dims::new(1, 2, 2, 3), Layout::Nchw)?)?;
/// assert_eq!(dx, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5]);
/// # Ok::<(), simdconv::Error>(())
/// ```
///
/// Errors: an empty plane ([`Error::Zero`] or the geometry's error), shapes
/// ([`Error::ShapeMismatch`]) and layouts ([`Error::Unsupported`]).
pub fn global_avg_pool_backward(
    exec: &Exec,
    dy: TensorView<'_, f32>,
    dx: TensorViewMut<'_, f32>,
) -> Result<()> {
    let d = dx.dims();
    let g = PoolGeometry::new(d, Pool2d::new(d.h, d.w))?;
    avg_pool2d_backward(exec, &g, dy, dx, AvgPoolOptions::PYTORCH)
}

/// Global max pooling backward, recomputed from `x`: each plane's gradient `dy[n, c]`
/// goes to the plane's maximum, the first in scan order on ties (NaN as in
/// [`max_pool2d`]); every other input gets 0. `dy` is `[n, c, 1, 1]`, `dx` has `x`'s
/// shape and is overwritten. The same as [`max_pool2d_backward_recompute`] with one
/// window over the whole plane.
///
/// ```
/// use simdconv::{global_max_pool_backward, Dims, Exec, Layout, TensorView, TensorViewMut};
/// let x = [1.0f32, 5.0, 5.0, 2.0]; // one 2x2 plane, two tied maxima
/// let mut dx = [9.0f32; 4];
/// global_max_pool_backward(&Exec::new(),
///     TensorView::new(&x, Dims::new(1, 1, 2, 2), Layout::Nchw)?,
///     TensorView::new(&[3.0f32], Dims::new(1, 1, 1, 1), Layout::Nchw)?,
///     TensorViewMut::new(&mut dx, Dims::new(1, 1, 2, 2), Layout::Nchw)?)?;
/// assert_eq!(dx, [0.0, 3.0, 0.0, 0.0]);
/// # Ok::<(), simdconv::Error>(())
/// ```
///
/// Errors: as [`global_avg_pool_backward`].
pub fn global_max_pool_backward(
    exec: &Exec,
    x: TensorView<'_, f32>,
    dy: TensorView<'_, f32>,
    dx: TensorViewMut<'_, f32>,
) -> Result<()> {
    let d = x.dims();
    let g = PoolGeometry::new(d, Pool2d::new(d.h, d.w))?;
    max_pool2d_backward_recompute(exec, &g, x, dy, dx)
}

/// Max pooling backward from saved switches: each output gradient goes to the input its
/// index names, accumulating where overlapping windows chose the same input. `dx` is
/// overwritten.
///
/// Errors: shapes ([`Error::ShapeMismatch`]), layouts ([`Error::Unsupported`]) and an index
/// outside its plane ([`Error::IndexOutOfRange`], after which `dx` is partly written).
pub fn max_pool2d_backward(
    exec: &Exec,
    g: &PoolGeometry,
    dy: TensorView<'_, f32>,
    indices: TensorView<'_, usize>,
    mut dx: TensorViewMut<'_, f32>,
) -> Result<()> {
    let _ = exec;
    expect_dims(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect_dims(Operand::Indices, g.output().to_array(), indices.dims().to_array())?;
    expect_dims(Operand::InputGrad, g.input().to_array(), dx.dims().to_array())?;
    let layout =
        crate::tensor::shared_layout(&[desc(Operand::OutputGrad, &dy), desc_mut(Operand::InputGrad, &dx)])?;
    zero(&mut dx, layout);
    let Dims { h, w, .. } = g.input();
    let plane = h * w;
    let out = g.output();
    let (gs, is, ds) = (dy.strides(), indices.strides(), dx.strides());
    let (gd, id, dd) = (dy.data(), indices.data(), dx.data_mut());
    // Per (n, c), outputs are visited in (oy, ox) order in both layouts, like the reference.
    let mut one = |n: usize, c: usize, oy: usize, ox: usize| -> Result<()> {
        let i = id[n * is[0] + c * is[1] + oy * is[2] + ox * is[3]];
        if i >= plane {
            return Err(Error::IndexOutOfRange { index: i, len: plane });
        }
        dd[n * ds[0] + c * ds[1] + (i / w) * ds[2] + (i % w) * ds[3]] +=
            gd[n * gs[0] + c * gs[1] + oy * gs[2] + ox * gs[3]];
        Ok(())
    };
    for n in 0..out.n {
        match layout {
            Layout::Nchw => {
                for c in 0..out.c {
                    for oy in 0..out.h {
                        for ox in 0..out.w {
                            one(n, c, oy, ox)?;
                        }
                    }
                }
            }
            Layout::Nhwc => {
                for oy in 0..out.h {
                    for ox in 0..out.w {
                        for c in 0..out.c {
                            one(n, c, oy, ox)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Max pooling backward without saved switches: each window's argmax is recomputed from
/// `x` (same rules as [`max_pool2d`]) and receives the window's output gradient. `dx` is
/// overwritten.
///
/// Errors as [`max_pool2d`], for `x`, `dy` and `dx`.
pub fn max_pool2d_backward_recompute(
    exec: &Exec,
    g: &PoolGeometry,
    x: TensorView<'_, f32>,
    dy: TensorView<'_, f32>,
    mut dx: TensorViewMut<'_, f32>,
) -> Result<()> {
    expect_dims(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect_dims(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect_dims(Operand::InputGrad, g.input().to_array(), dx.dims().to_array())?;
    let layout = crate::tensor::shared_layout(&[
        desc(Operand::Input, &x),
        desc(Operand::OutputGrad, &dy),
        desc_mut(Operand::InputGrad, &dx),
    ])?;
    zero(&mut dx, layout);
    let p = Plan::new(g);
    let (xs, dys, dxs) = (x.strides(), dy.strides(), dx.strides());
    let (xd, gd, dd) = (x.data(), dy.data(), dx.data_mut());
    match layout {
        Layout::Nhwc => {
            exec.dispatch(nhwc::MaxBackRecompute { p: &p, x: xd, xs, dy: gd, dys, dx: dd, dxs });
        }
        Layout::Nchw => {
            let w = p.w;
            let sink = |n: usize, c: usize, oy: usize, ox: usize, _: f32, i: usize| {
                dd[n * dxs[0] + c * dxs[1] + (i / w) * dxs[2] + (i % w) * dxs[3]] +=
                    gd[n * dys[0] + c * dys[1] + oy * dys[2] + ox * dys[3]];
            };
            exec.dispatch(nchw::Argmax { p: &p, x: xd, xs, sink });
        }
    }
    Ok(())
}

/// Average pooling backward: each output gradient is spread evenly (by the same divisor
/// as [`avg_pool2d`]) over its window's input elements. `dx` is overwritten.
///
/// Errors as [`max_pool2d`], for `dy` and `dx`.
pub fn avg_pool2d_backward(
    exec: &Exec,
    g: &PoolGeometry,
    dy: TensorView<'_, f32>,
    mut dx: TensorViewMut<'_, f32>,
    opts: AvgPoolOptions,
) -> Result<()> {
    expect_dims(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect_dims(Operand::InputGrad, g.input().to_array(), dx.dims().to_array())?;
    let layout =
        crate::tensor::shared_layout(&[desc(Operand::OutputGrad, &dy), desc_mut(Operand::InputGrad, &dx)])?;
    zero(&mut dx, layout);
    let p = Plan::new(g);
    let (dys, dxs) = (dy.strides(), dx.strides());
    let (gd, dd) = (dy.data(), dx.data_mut());
    match layout {
        Layout::Nhwc => {
            exec.dispatch(nhwc::SpreadBack { p: &p, avg: Some(opts), l2: None, dy: gd, dys, dx: dd, dxs })
        }
        Layout::Nchw => {
            exec.dispatch(nchw::SpreadBack { p: &p, avg: Some(opts), l2: None, dy: gd, dys, dx: dd, dxs })
        }
    }
    Ok(())
}

/// L2 pooling backward: `dx += dy * x / y` over each window, nothing where `y == 0`.
/// `dx` is overwritten.
///
/// Errors as [`max_pool2d`], for `x`, `y`, `dy` and `dx`.
pub fn l2_pool2d_backward(
    exec: &Exec,
    g: &PoolGeometry,
    x: TensorView<'_, f32>,
    y: TensorView<'_, f32>,
    dy: TensorView<'_, f32>,
    mut dx: TensorViewMut<'_, f32>,
) -> Result<()> {
    expect_dims(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect_dims(Operand::Output, g.output().to_array(), y.dims().to_array())?;
    expect_dims(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect_dims(Operand::InputGrad, g.input().to_array(), dx.dims().to_array())?;
    let layout = crate::tensor::shared_layout(&[
        desc(Operand::Input, &x),
        desc(Operand::Output, &y),
        desc(Operand::OutputGrad, &dy),
        desc_mut(Operand::InputGrad, &dx),
    ])?;
    zero(&mut dx, layout);
    let p = Plan::new(g);
    let l2 = Some((x.data(), x.strides(), y.data(), y.strides()));
    let (dys, dxs) = (dy.strides(), dx.strides());
    let (gd, dd) = (dy.data(), dx.data_mut());
    match layout {
        Layout::Nhwc => exec.dispatch(nhwc::SpreadBack { p: &p, avg: None, l2, dy: gd, dys, dx: dd, dxs }),
        Layout::Nchw => exec.dispatch(nchw::SpreadBack { p: &p, avg: None, l2, dy: gd, dys, dx: dd, dxs }),
    }
    Ok(())
}
