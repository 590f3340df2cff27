//! GEMM-based backward kernels (`std` only: the `gemm` crate is scalar and allocates
//! without it).
//!
//! Per image and group, the output rows are cut into tiles of at most `BUDGET` column
//! elements (at least one output row). The column matrix of a tile has one row per
//! `(input channel, tap)` and one column per output pixel:
//! - `dX`: `cols = W_g^T dY_g` (one GEMM), then col2im adds every column element into the
//!   input element its tap reads (taps into padding are dropped).
//! - `dW`: im2col of the input tile, then `dW_g += dY_g cols^T` (one GEMM, accumulating
//!   over tiles and images).
//!
//! Column order follows the layout so col2im / im2col move contiguous runs: NCHW stores
//! `[ci][tap][pixel]`, NHWC `[pixel][tap][ci]`. When the filter's strides cannot be read
//! as one matrix in that order (e.g. OIHW filters with NHWC activations), the GEMM is split
//! per tap. A 1x1 kernel without leading padding needs no column matrix at all: the GEMM
//! reads and writes the tensors in place through strides, except that `dW` is accumulated
//! column-major in the workspace and copied out when gemm would otherwise run it with
//! the long side as rows (see [`filter`]). NCHW rows with a column stride below the
//! window reach are split by phase first (see [`Phases`]).

use gemm::Parallelism;
use pulp::{Simd, WithSimd};

use super::simd::{add, copy};
use super::{collapse, DataArgs, FilterArgs, Problem};
use crate::error::{Dim, Error, Result};
use crate::geometry::input_coord;
use crate::isa::Exec;
use crate::tensor::{FilterViewMut, Layout, TensorView, TensorViewMut};

/// Column-matrix elements per tile (1 MiB, half of this machine's 2 MiB L2), unless one
/// output row needs more. The GEMM writes (dX) or reads (dW) the tile right after
/// col2im / im2col touched it, so it should stay in L2: measured with thread CPU time on
/// AlexNet conv1 (1 thread), 4 MiB tiles made dX 1.14x and dW 1.05-1.2x the forward,
/// 1 MiB tiles 0.92-0.96x and 0.95-1.01x (dilated 3x3 dW 1.07x -> 0.89x NCHW); 512 KiB
/// tiles slowed VGG conv3_2's dX GEMM by 20-30%.
const BUDGET: usize = 1 << 18;

fn per_row(p: &Problem) -> Result<usize> {
    // cg * taps is the filter count divided by the output channels: it fits.
    (p.cg() * p.taps()).checked_mul(p.y.w).ok_or(Error::Overflow { dim: Dim::Width })
}

fn rows_per_tile(per_row: usize, out_h: usize) -> usize {
    (BUDGET / per_row).clamp(1, out_h)
}

pub(crate) fn workspace_len(p: &Problem) -> Result<usize> {
    if p.is_pointwise() {
        return Ok(0);
    }
    let pr = per_row(p)?;
    // pr * rows <= max(pr, BUDGET): no overflow.
    (pr * rows_per_tile(pr, p.y.h))
        .checked_add(Phases::new(p)?.map_or(0, |ph| ph.len()))
        .ok_or(Error::Overflow { dim: Dim::Width })
}

/// The filter gradient's workspace: the data gradient's plus one group's `dW` staged
/// column-major (see [`filter`]).
pub(crate) fn filter_workspace_len(p: &Problem) -> Result<usize> {
    // og * cg * taps divides the filter count: it fits.
    workspace_len(p)?.checked_add(p.og() * p.cg() * p.taps()).ok_or(Error::Overflow { dim: Dim::Width })
}

/// An NCHW input row split by column phase, for strides below the window extent.
///
/// With column stride `sw > 1`, tap `kx` of output column `ox` reads padded input column
/// `ox * sw + kx * dw`: a strided gather per tap. Split once into `sw` phases, `ph[r][j] =`
/// padded column `j * sw + r` (zero in the padding and past the input), every tap reads
/// the contiguous run `ph[off % sw][off / sw ..][..ow]` with `off = kx * dw`: im2col
/// copies and col2im adds whole runs, and the strided pass touches each input column
/// once per row instead of once per tap (AlexNet conv1, stride 4, 11 taps: 227 strided
/// moves per row instead of 605).
#[derive(Clone, Copy, Debug)]
struct Phases {
    /// The column stride.
    sw: usize,
    /// Elements per phase.
    len: usize,
}

impl Phases {
    /// `None` when the strided path is as cheap: stride 1, or windows that do not overlap.
    fn new(p: &Problem) -> Result<Option<Phases>> {
        let (sw, kw, dw) = (p.s[1], p.k[1], p.d[1]);
        // (kw - 1) * dw is below the padded width the geometry checked.
        let reach = (kw - 1) * dw;
        if sw <= 1 || sw > reach {
            return Ok(None);
        }
        // `reach / sw + ow <= reach + ow`, both below the padded width; `sw * len` can
        // still overflow only on absurd shapes.
        let len = reach / sw + p.y.w;
        sw.checked_mul(len).ok_or(Error::Overflow { dim: Dim::Width })?;
        Ok(Some(Phases { sw, len }))
    }

    fn len(self) -> usize {
        self.sw * self.len
    }

    /// The offset in the phase buffer of the run tap `kx` reads.
    fn run(self, p: &Problem, kx: usize) -> usize {
        let off = kx * p.d[1];
        (off % self.sw) * self.len + off / self.sw
    }

    /// For phase `r`, the indices `[lo, hi)` that hold input columns, and the input
    /// column of `lo`.
    fn span(self, p: &Problem, r: usize) -> (usize, usize, usize) {
        let (pad, w) = (p.pad[1], p.x.w);
        // padded column q = j * sw + r holds input column q - pad when pad <= q < pad + w.
        let lo = if pad > r { (pad - r).div_ceil(self.sw) } else { 0 };
        let hi = (pad + w).saturating_sub(r).div_ceil(self.sw).min(self.len);
        if lo >= hi {
            return (0, 0, 0);
        }
        (lo, hi, lo * self.sw + r - pad)
    }

    /// Fills `ph` from the input row starting at `xd[row]` with column stride `xc`.
    fn split(self, p: &Problem, xd: &[f32], row: usize, xc: usize, ph: &mut [f32]) {
        for r in 0..self.sw {
            let dst = &mut ph[r * self.len..][..self.len];
            let (lo, hi, ix) = self.span(p, r);
            dst[..lo].fill(0.0);
            dst[hi.max(lo)..].fill(0.0);
            if lo < hi {
                // step_by over a slice cut to the last element: no per-element bounds check.
                let step = self.sw * xc;
                let src = &xd[row + ix * xc..][..(hi - lo - 1) * step + 1];
                for (d, &v) in dst[lo..hi].iter_mut().zip(src.iter().step_by(step)) {
                    *d = v;
                }
            }
        }
    }

    /// Adds `ph` into the input row starting at `xd[row]` with column stride `xc`.
    fn merge(self, p: &Problem, ph: &[f32], xd: &mut [f32], row: usize, xc: usize) {
        for r in 0..self.sw {
            let (lo, hi, ix) = self.span(p, r);
            if lo >= hi {
                continue;
            }
            let src = &ph[r * self.len + lo..][..hi - lo];
            let step = self.sw * xc;
            let dst = &mut xd[row + ix * xc..][..(hi - lo - 1) * step + 1];
            for (d, &v) in dst.iter_mut().step_by(step).zip(src) {
                *d += v;
            }
        }
    }
}

fn parallelism(exec: &Exec) -> Parallelism {
    #[cfg(feature = "rayon")]
    if exec.threads() > 1 {
        return Parallelism::Rayon(exec.threads());
    }
    let _ = exec;
    Parallelism::None
}

/// A strided matrix inside a slice: element `(r, c)` is at `off + r * rs + c * cs`.
#[derive(Clone, Copy, Debug)]
struct Mat {
    off: usize,
    rs: usize,
    cs: usize,
}

impl Mat {
    /// The strides with those of extent-1 dims zeroed, if every element lies in `len`.
    fn checked(self, len: usize, rows: usize, cols: usize) -> Option<(usize, isize, isize)> {
        let rs = if rows > 1 { self.rs } else { 0 };
        let cs = if cols > 1 { self.cs } else { 0 };
        let last = self.off.checked_add(rs.checked_mul(rows - 1)?)?.checked_add(cs.checked_mul(cols - 1)?)?;
        if last >= len {
            return None;
        }
        // Both strides are at most `last < len <= isize::MAX`.
        Some((self.off, rs as isize, cs as isize))
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) * rhs (k x n)`, bounds-checked.
#[allow(clippy::too_many_arguments)]
fn matmul(
    par: Parallelism,
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    d: Mat,
    accumulate: bool,
    lhs: &[f32],
    l: Mat,
    rhs: &[f32],
    r: Mat,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let (Some(d), Some(l), Some(r)) =
        (d.checked(dst.len(), m, n), l.checked(lhs.len(), m, k), r.checked(rhs.len(), k, n))
    else {
        // The callers derive every matrix from validated views and geometries.
        unreachable!("backward GEMM operand out of bounds");
    };
    // SAFETY: `checked` proved that every element `(i, j)` of each matrix, at
    // `off + i * rs + j * cs`, lies inside its slice, so all pointers gemm forms are in
    // bounds. `dst` is a unique borrow, so it aliases neither `lhs` nor `rhs`. gemm's
    // `alpha` scales `dst` (read only when `accumulate`), `beta` the product.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(d.0),
            d.2,
            d.1,
            accumulate,
            lhs.as_ptr().add(l.0),
            l.2,
            l.1,
            rhs.as_ptr().add(r.0),
            r.2,
            r.1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// Calls `f(oy, rows, stride_a, stride_b)` for runs of output rows in `[oy0, oy1)` whose
/// pixels `(oy, ox)`, flattened, have a single stride in both tensor `a` and `b`, given as
/// `(row stride, column stride)`: the whole range if possible, else row by row.
fn for_runs(
    oy0: usize,
    oy1: usize,
    ow: usize,
    a: (usize, usize),
    b: (usize, usize),
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let rows = oy1 - oy0;
    if let (Some(pa), Some(pb)) = (collapse(&[(rows, a.0), (ow, a.1)]), collapse(&[(rows, b.0), (ow, b.1)])) {
        f(oy0, rows, pa, pb);
        return;
    }
    for oy in oy0..oy1 {
        f(oy, 1, a.1, b.1);
    }
}

/// Strides of the column matrix of a tile of `pixels` columns: `(ci, tap, pixel, r)`,
/// where `r` is the flattened `(ci, tap)` (NCHW) or `(tap, ci)` (NHWC) row index.
fn col_layout(layout: Layout, cg: usize, taps: usize, pixels: usize) -> (usize, usize, usize, usize) {
    match layout {
        Layout::Nchw => (taps * pixels, pixels, 1, pixels),
        Layout::Nhwc => (1, cg, cg * taps, 1),
    }
}

/// The stride of the flattened row index `r` (see [`col_layout`]) in a filter bank with
/// strides `fs`, if it has one.
fn filter_r_stride(layout: Layout, p: &Problem, fs: [usize; 4]) -> Option<usize> {
    let (cg, [kh, kw]) = (p.cg(), p.k);
    match layout {
        Layout::Nchw => collapse(&[(cg, fs[1]), (kh, fs[2]), (kw, fs[3])]),
        Layout::Nhwc => collapse(&[(kh, fs[2]), (kw, fs[3]), (cg, fs[1])]),
    }
}

pub(crate) fn data(args: DataArgs<'_, '_>, mut dx: TensorViewMut<'_, f32>, ws: &mut [f32]) {
    let DataArgs { exec, p, layout, dy, w } = args;
    let par = parallelism(exec);
    let (cg, og, taps) = (p.cg(), p.og(), p.taps());
    let rr = cg * taps;
    let [kh, kw] = p.k;
    let [sh, sw] = p.s;
    let (oh, ow) = (p.y.h, p.y.w);
    let (ys, yd) = (dy.strides(), dy.data());
    let (fs, wd) = (w.strides(), w.data());
    let xs = dx.strides();
    if p.is_pointwise() {
        // dx[c, oy * sh, ox * sw] = sum_o w[o, c] dy[o, oy, ox]; other positions are 0.
        if !(sh == 1 && sw == 1 && oh == p.x.h && ow == p.x.w) {
            super::zero(&mut dx, layout);
        }
        let (xr, xc) = (sh.saturating_mul(xs[2]), sw.saturating_mul(xs[3]));
        let xd = dx.data_mut();
        for n in 0..p.x.n {
            for g in 0..p.groups {
                for_runs(0, oh, ow, (ys[2], ys[3]), (xr, xc), |oy, rows, py, px| {
                    let dst = Mat { off: n * xs[0] + g * cg * xs[1] + oy * xr, rs: xs[1], cs: px };
                    let lhs = Mat { off: g * og * fs[0], rs: fs[1], cs: fs[0] };
                    let rhs = Mat { off: n * ys[0] + g * og * ys[1] + oy * ys[2], rs: ys[1], cs: py };
                    matmul(par, cg, rows * ow, og, xd, dst, false, wd, lhs, yd, rhs);
                });
            }
        }
        return;
    }
    super::zero(&mut dx, layout);
    // workspace_len succeeded, so Phases::new does too.
    let phases = Phases::new(p).ok().flatten();
    let (ws, ph_ws) = ws.split_at_mut(ws.len() - phases.map_or(0, Phases::len));
    let phases = phases.filter(|_| matches!(layout, Layout::Nchw));
    let rows_per = rows_per_tile(rr * ow, oh);
    let r_w = filter_r_stride(layout, p, fs);
    for n in 0..p.x.n {
        for g in 0..p.groups {
            let mut oy0 = 0;
            while oy0 < oh {
                let oy1 = (oy0 + rows_per).min(oh);
                let pixels = (oy1 - oy0) * ow;
                let (ci_s, tap_s, p_s, r_s) = col_layout(layout, cg, taps, pixels);
                let col = &mut ws[..rr * pixels];
                for_runs(oy0, oy1, ow, (ys[2], ys[3]), (ys[2], ys[3]), |oy, rows, py, _| {
                    let np = rows * ow;
                    let col_off = (oy - oy0) * ow * p_s;
                    let rhs = Mat { off: n * ys[0] + g * og * ys[1] + oy * ys[2], rs: ys[1], cs: py };
                    match r_w {
                        Some(rw) => {
                            let dst = Mat { off: col_off, rs: r_s, cs: p_s };
                            let lhs = Mat { off: g * og * fs[0], rs: rw, cs: fs[0] };
                            matmul(par, rr, np, og, col, dst, false, wd, lhs, yd, rhs);
                        }
                        None => {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let dst =
                                        Mat { off: col_off + (ky * kw + kx) * tap_s, rs: ci_s, cs: p_s };
                                    let lhs = Mat {
                                        off: g * og * fs[0] + ky * fs[2] + kx * fs[3],
                                        rs: fs[1],
                                        cs: fs[0],
                                    };
                                    matmul(par, cg, np, og, col, dst, false, wd, lhs, yd, rhs);
                                }
                            }
                        }
                    }
                });
                exec.dispatch(Col2im {
                    p,
                    layout,
                    n,
                    g,
                    oy0,
                    oy1,
                    col: &ws[..rr * pixels],
                    ph: phases.map(|f| (f, &mut ph_ws[..])),
                    dx: dx.reborrow(),
                });
                oy0 = oy1;
            }
        }
    }
}

/// Adds a column tile into `dx` (see the module docs for the column order).
struct Col2im<'a, 'b> {
    p: &'b Problem,
    layout: Layout,
    n: usize,
    g: usize,
    oy0: usize,
    oy1: usize,
    col: &'a [f32],
    /// The phase-split row buffer, for NCHW only.
    ph: Option<(Phases, &'a mut [f32])>,
    dx: TensorViewMut<'b, f32>,
}

impl WithSimd for Col2im<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Col2im { p, layout, n, g, oy0, oy1, col, ph, mut dx } = self;
        let (cg, taps) = (p.cg(), p.taps());
        let [kh, kw] = p.k;
        let [sh, sw] = p.s;
        let [dh, dwl] = p.d;
        let ow = p.y.w;
        let (ci_s, tap_s, p_s, _) = col_layout(layout, cg, taps, (oy1 - oy0) * ow);
        let xs = dx.strides();
        let xd = dx.data_mut();
        match layout {
            Layout::Nchw if ph.is_some() => {
                let Some((phases, buf)) = ph else { return };
                // Per input row (padded index q), every (oy, ky) with oy * sh + ky * dh = q
                // adds into one split row, merged into dx once: AlexNet conv1 (sh 4,
                // kh 11) merges each row once instead of about 2.75 times.
                let (pad, reach) = (p.pad[0], (kh - 1) * dh);
                let q_lo = (oy0 * sh).max(pad);
                let q_hi = ((oy1 - 1) * sh).saturating_add(reach + 1).min(pad + p.x.h);
                for ci in 0..cg {
                    let c = g * cg + ci;
                    for q in q_lo..q_hi {
                        let mut any = false;
                        for oy in q.saturating_sub(reach).div_ceil(sh).max(oy0)..(q / sh + 1).min(oy1) {
                            let t = q - oy * sh;
                            if t % dh != 0 {
                                continue;
                            }
                            if !any {
                                buf.fill(0.0);
                                any = true;
                            }
                            let at = ci * ci_s + t / dh * kw * tap_s + (oy - oy0) * ow;
                            for kx in 0..kw {
                                add(simd, &col[at + kx * tap_s..], &mut buf[phases.run(p, kx)..], 1, ow);
                            }
                        }
                        if any {
                            phases.merge(p, buf, xd, n * xs[0] + c * xs[1] + (q - pad) * xs[2], xs[3]);
                        }
                    }
                }
            }
            Layout::Nchw => {
                for ci in 0..cg {
                    let c = g * cg + ci;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let (ox_lo, ox_hi, ix_lo) = p.range(1, kx);
                            let len = ox_hi - ox_lo;
                            if len == 0 {
                                continue;
                            }
                            let base = ci * ci_s + (ky * kw + kx) * tap_s;
                            for oy in oy0..oy1 {
                                let Some(iy) = input_coord(oy, sh, ky, dh, p.pad[0], p.x.h) else { continue };
                                let src = &col[base + (oy - oy0) * ow + ox_lo..];
                                let dst = n * xs[0] + c * xs[1] + iy * xs[2] + ix_lo * xs[3];
                                add(simd, src, &mut xd[dst..], sw * xs[3], len);
                            }
                        }
                    }
                }
            }
            Layout::Nhwc => {
                // With dilation 1 and one group filling the channel stride, the taps
                // `kx` of one pixel and row `ky` are `kw * cg` contiguous column elements
                // landing on contiguous elements of `dx`: one add per run, not per tap.
                let merged = dwl * xs[3] == cg * xs[1] && xs[1] == 1;
                for oy in oy0..oy1 {
                    for ky in 0..kh {
                        let Some(iy) = input_coord(oy, sh, ky, dh, p.pad[0], p.x.h) else { continue };
                        let row = n * xs[0] + g * cg * xs[1] + iy * xs[2];
                        // Runs of neighbouring pixels overlap when kw > sw: visiting every
                        // `step`-th pixel per pass keeps the runs of one pass disjoint, so
                        // no load waits on a partly overlapping store still in flight.
                        let step = if merged { kw.div_ceil(sw) } else { 1 };
                        for ox in (0..step).flat_map(|phase| (phase..ow).step_by(step)) {
                            let pix = ((oy - oy0) * ow + ox) * p_s + ky * kw * tap_s;
                            if merged {
                                let (lo, hi, ix) = p.taps_at(1, ox);
                                if lo < hi {
                                    let src = &col[pix + lo * tap_s..];
                                    add(simd, src, &mut xd[row + ix * xs[3]..], 1, (hi - lo) * cg);
                                }
                                continue;
                            }
                            for kx in 0..kw {
                                let Some(ix) = input_coord(ox, sw, kx, dwl, p.pad[1], p.x.w) else {
                                    continue;
                                };
                                let src = &col[pix + kx * tap_s..];
                                add(simd, src, &mut xd[row + ix * xs[3]..], xs[1], cg);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Writes the column tile of input `x` for image `n`, group `g`, output rows `[oy0, oy1)`.
#[allow(clippy::too_many_arguments)]
fn im2col(
    p: &Problem,
    layout: Layout,
    x: &TensorView<'_, f32>,
    n: usize,
    g: usize,
    oy0: usize,
    oy1: usize,
    col: &mut [f32],
    ph: Option<(Phases, &mut [f32])>,
) {
    let (cg, taps) = (p.cg(), p.taps());
    let [kh, kw] = p.k;
    let [sh, sw] = p.s;
    let [dh, dwl] = p.d;
    let ow = p.y.w;
    let (ci_s, tap_s, p_s, _) = col_layout(layout, cg, taps, (oy1 - oy0) * ow);
    let (xs, xd) = (x.strides(), x.data());
    match layout {
        Layout::Nchw if ph.is_some() => {
            let Some((phases, buf)) = ph else { return };
            for ci in 0..cg {
                let c = g * cg + ci;
                for ky in 0..kh {
                    let base = ci * ci_s + ky * kw * tap_s;
                    for oy in oy0..oy1 {
                        let at = base + (oy - oy0) * ow;
                        let Some(iy) = input_coord(oy, sh, ky, dh, p.pad[0], p.x.h) else {
                            for kx in 0..kw {
                                col[at + kx * tap_s..][..ow].fill(0.0);
                            }
                            continue;
                        };
                        phases.split(p, xd, n * xs[0] + c * xs[1] + iy * xs[2], xs[3], buf);
                        for kx in 0..kw {
                            col[at + kx * tap_s..][..ow].copy_from_slice(&buf[phases.run(p, kx)..][..ow]);
                        }
                    }
                }
            }
        }
        Layout::Nchw => {
            for ci in 0..cg {
                let c = g * cg + ci;
                for ky in 0..kh {
                    for kx in 0..kw {
                        let (ox_lo, ox_hi, ix_lo) = p.range(1, kx);
                        let base = ci * ci_s + (ky * kw + kx) * tap_s;
                        for oy in oy0..oy1 {
                            let row = &mut col[base + (oy - oy0) * ow..][..ow];
                            let Some(iy) = input_coord(oy, sh, ky, dh, p.pad[0], p.x.h) else {
                                row.fill(0.0);
                                continue;
                            };
                            if ox_hi == 0 {
                                row.fill(0.0);
                                continue;
                            }
                            row[..ox_lo].fill(0.0);
                            row[ox_hi..].fill(0.0);
                            let src = n * xs[0] + c * xs[1] + iy * xs[2] + ix_lo * xs[3];
                            copy(&xd[src..], sw * xs[3], &mut row[ox_lo..], 1, ox_hi - ox_lo);
                        }
                    }
                }
            }
        }
        Layout::Nhwc => {
            // As in col2im: with dilation 1 and one group, the taps `kx` of a row are one
            // contiguous run in both the column tile and `x`.
            let merged = dwl * xs[3] == cg * xs[1] && xs[1] == 1;
            for oy in oy0..oy1 {
                for ox in 0..ow {
                    let pix = ((oy - oy0) * ow + ox) * p_s;
                    let (lo, hi, ix_lo) = p.taps_at(1, ox);
                    for ky in 0..kh {
                        let run = &mut col[pix + ky * kw * tap_s..][..kw * tap_s];
                        let Some(iy) = input_coord(oy, sh, ky, dh, p.pad[0], p.x.h) else {
                            run.fill(0.0);
                            continue;
                        };
                        let row = n * xs[0] + g * cg * xs[1] + iy * xs[2];
                        if merged {
                            if lo >= hi {
                                run.fill(0.0);
                                continue;
                            }
                            run[..lo * cg].fill(0.0);
                            run[hi * cg..].fill(0.0);
                            let len = (hi - lo) * cg;
                            run[lo * cg..hi * cg].copy_from_slice(&xd[row + ix_lo * xs[3]..][..len]);
                            continue;
                        }
                        for kx in 0..kw {
                            let dst = &mut run[kx * tap_s..][..cg];
                            match input_coord(ox, sw, kx, dwl, p.pad[1], p.x.w) {
                                Some(ix) => copy(&xd[row + ix * xs[3]..], xs[1], dst, 1, cg),
                                None => dst.fill(0.0),
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn filter(args: FilterArgs<'_, '_>, mut dw: FilterViewMut<'_, f32>, ws: &mut [f32]) {
    let FilterArgs { exec, p, layout, x, dy } = args;
    let par = parallelism(exec);
    let (cg, og, taps) = (p.cg(), p.og(), p.taps());
    let rr = cg * taps;
    let [kh, kw] = p.k;
    let [sh, sw] = p.s;
    let (oh, ow) = (p.y.h, p.y.w);
    let (ys, yd) = (dy.strides(), dy.data());
    let (xs, xd) = (x.strides(), x.data());
    let fs = dw.strides();
    let fd = dw.data_mut();
    // gemm 0.19 runs `dW_g (og x rr) = dY_g cols^T` as its transpose when dW_g is stored
    // row-major (OIHW), with the long `rr` side as rows; into a column-major stage and then
    // copied, it ran 1.34 -> 0.80 ms (1x1 256 -> 64 over 56x56, NCHW), 0.97 -> 0.83 ms
    // (same, NHWC) and 2.08 -> 1.67 ms (AlexNet conv1 NCHW columns); AlexNet's NHWC
    // columns gained nothing, so they keep the direct write.
    let (ws, stage) = ws.split_at_mut(ws.len() - og * rr);
    let staged = |rw: usize| (p.is_pointwise() || matches!(layout, Layout::Nchw)) && og > 1 && rw < fs[0];
    if p.is_pointwise() {
        // dw[o, c] = sum over n, oy, ox of dy[o, oy, ox] x[c, oy * sh, ox * sw].
        let (xr, xc) = (sh.saturating_mul(xs[2]), sw.saturating_mul(xs[3]));
        let stage_it = staged(fs[1]);
        for g in 0..p.groups {
            let mut first = true;
            for n in 0..p.x.n {
                for_runs(0, oh, ow, (ys[2], ys[3]), (xr, xc), |oy, rows, py, px| {
                    let lhs = Mat { off: n * ys[0] + g * og * ys[1] + oy * ys[2], rs: ys[1], cs: py };
                    let rhs = Mat { off: n * xs[0] + g * cg * xs[1] + oy * xr, rs: px, cs: xs[1] };
                    if stage_it {
                        let dst = Mat { off: 0, rs: 1, cs: og };
                        matmul(par, og, cg, rows * ow, stage, dst, !first, yd, lhs, xd, rhs);
                    } else {
                        let dst = Mat { off: g * og * fs[0], rs: fs[0], cs: fs[1] };
                        matmul(par, og, cg, rows * ow, fd, dst, !first, yd, lhs, xd, rhs);
                    }
                    first = false;
                });
            }
            if stage_it {
                unstage(stage, og, cg, fd, g * og * fs[0], fs[0], fs[1]);
            }
        }
        return;
    }
    // workspace_len succeeded, so Phases::new does too.
    let phases = Phases::new(p).ok().flatten();
    let (ws, ph_ws) = ws.split_at_mut(ws.len() - phases.map_or(0, Phases::len));
    let phases = phases.filter(|_| matches!(layout, Layout::Nchw));
    let rows_per = rows_per_tile(rr * ow, oh);
    let r_w = filter_r_stride(layout, p, fs);
    let stage_rw = r_w.filter(|&rw| staged(rw));
    for g in 0..p.groups {
        let mut first = true;
        for n in 0..p.x.n {
            let mut oy0 = 0;
            while oy0 < oh {
                let oy1 = (oy0 + rows_per).min(oh);
                let pixels = (oy1 - oy0) * ow;
                let (ci_s, tap_s, p_s, r_s) = col_layout(layout, cg, taps, pixels);
                let col = &mut ws[..rr * pixels];
                im2col(p, layout, &x, n, g, oy0, oy1, col, phases.map(|f| (f, &mut ph_ws[..])));
                let col = &*col;
                for_runs(oy0, oy1, ow, (ys[2], ys[3]), (ys[2], ys[3]), |oy, rows, py, _| {
                    let np = rows * ow;
                    let col_off = (oy - oy0) * ow * p_s;
                    let lhs = Mat { off: n * ys[0] + g * og * ys[1] + oy * ys[2], rs: ys[1], cs: py };
                    match r_w {
                        Some(_) if stage_rw.is_some() => {
                            let dst = Mat { off: 0, rs: 1, cs: og };
                            let rhs = Mat { off: col_off, rs: p_s, cs: r_s };
                            matmul(par, og, rr, np, stage, dst, !first, yd, lhs, col, rhs);
                        }
                        Some(rw) => {
                            let dst = Mat { off: g * og * fs[0], rs: fs[0], cs: rw };
                            let rhs = Mat { off: col_off, rs: p_s, cs: r_s };
                            matmul(par, og, rr, np, fd, dst, !first, yd, lhs, col, rhs);
                        }
                        None => {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let dst = Mat {
                                        off: g * og * fs[0] + ky * fs[2] + kx * fs[3],
                                        rs: fs[0],
                                        cs: fs[1],
                                    };
                                    let rhs =
                                        Mat { off: col_off + (ky * kw + kx) * tap_s, rs: p_s, cs: ci_s };
                                    matmul(par, og, cg, np, fd, dst, !first, yd, lhs, col, rhs);
                                }
                            }
                        }
                    }
                    first = false;
                });
                oy0 = oy1;
            }
        }
        if let Some(rw) = stage_rw {
            unstage(stage, og, rr, fd, g * og * fs[0], fs[0], rw);
        }
    }
}

/// `dst[off + o * rs + r * cs] = stage[o + r * og]` for `o < og`, `r < rr`.
fn unstage(stage: &[f32], og: usize, rr: usize, dst: &mut [f32], off: usize, rs: usize, cs: usize) {
    for (r, col) in stage[..og * rr].chunks_exact(og).enumerate() {
        let dst = &mut dst[off + r * cs..];
        for (o, &v) in col.iter().enumerate() {
            dst[o * rs] = v;
        }
    }
}
