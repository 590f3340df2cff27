//! The notes' im2col + GEMM: every receptive field is stretched into a column of `X_col`,
//! the filters are the rows of `W_row`, and the convolution is one matrix product
//! `W_row * X_col` per group.
//!
//! Filters are never copied: the reduction index `r` runs over `(i, kh, kw)` in whichever
//! order makes the filter's strides collapse to one stride, so dense OIHW (order
//! `(i, kh, kw)`, stride 1), OHWI (`(kh, kw, i)`, stride 1) and HWIO (`(kh, kw, i)`,
//! stride `O`) are all read in place by `gemm`; any other filter strides are
//! [`Unsupported::NonContiguous`]`(Filter)`.
//!
//! `X_col` is never built whole (VGG's conv1_2 would need 64 * 9 * 224 * 224 floats =
//! 115 MB). Output pixels are cut into tiles of [`tile_pixels`] pixels; each tile's columns
//! are written to the caller's workspace, multiplied, and the epilogue is applied to the
//! tile's outputs while they are still in cache. The workspace is therefore
//! `R * min(P, max(64, 2^20 / R))` floats for `R = C / groups * KH * KW` reduction rows and
//! `P = N * OH * OW` output pixels: at most 4 MiB unless a single filter has more than
//! 16384 weights (then 64 columns, `256 * R` bytes).
//!
//! The column matrix is stored row-major (`X_col[r][p]`) for NCHW, where a row is a
//! strided copy of an input row, and pixel-major (`X_col[p][r]`) for NHWC, where a
//! pixel's channels are contiguous; `gemm` reads either through its strides.

use super::matmul::{epilogue_tile, gemm_parallelism, istride, matmul, split, Join, Mat, OutPtr, Pixels};
use super::ConvArgs;
use crate::error::{Dim, Error, Operand, Result, Unsupported};
use crate::geometry::{input_coord, ConvGeometry};
use crate::tensor::{FilterView, Layout, TensorView, TensorViewMut};

/// Target size of one column tile in floats (4 MiB): large enough that each GEMM has
/// hundreds of columns, small enough to stay in L2 / L3 next to the filters.
const TILE_ELEMS: usize = 1 << 20;
/// Fewest pixels in a tile (fewer would leave `gemm` mostly packing).
const MIN_TILE_PIXELS: usize = 64;
/// Fewest pixels per thread before threads split the pixels rather than each GEMM.
pub(crate) const MIN_WORKER_PIXELS: usize = 64;

/// The order of the reduction index `r` over `(i, kh, kw)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// `r = (i * KH + kh) * KW + kw` (OIHW).
    ChannelMajor,
    /// `r = (kh * KW + kw) * C_g + i` (OHWI, HWIO).
    TapMajor,
}

/// The reduction dimension of one group's GEMM.
#[derive(Clone, Copy, Debug)]
struct Reduction {
    order: Order,
    /// Filter stride along `r`.
    stride: usize,
    cg: usize,
    kh: usize,
    kw: usize,
}

impl Reduction {
    fn len(&self) -> usize {
        self.cg * self.kh * self.kw
    }

    #[inline(always)]
    fn index(&self, i: usize, kh: usize, kw: usize) -> usize {
        match self.order {
            Order::ChannelMajor => (i * self.kh + kh) * self.kw + kw,
            Order::TapMajor => (kh * self.kw + kw) * self.cg + i,
        }
    }
}

/// The single stride of dims `(extent, stride)` listed outer to inner, if they collapse to
/// one (unit extents are skipped).
fn collapse(dims: [(usize, usize); 3]) -> Option<usize> {
    let mut base: Option<(usize, usize)> = None; // (innermost stride, elements so far)
    for &(extent, stride) in dims.iter().rev() {
        if extent == 1 {
            continue;
        }
        base = Some(match base {
            None => (stride, extent),
            Some((b, count)) => {
                if b.checked_mul(count)? != stride {
                    return None;
                }
                (b, count.checked_mul(extent)?)
            }
        });
    }
    Some(base.map_or(1, |(b, _)| b))
}

fn reduction(w: &FilterView<'_, f32>, layout: Layout) -> Result<Reduction> {
    let d = w.dims();
    let [_, si, sh, sw] = w.strides();
    let channel = collapse([(d.i, si), (d.kh, sh), (d.kw, sw)]);
    let tap = collapse([(d.kh, sh), (d.kw, sw), (d.i, si)]);
    // When both work (1x1, or one input channel) pick the order the column fill copies
    // contiguously: NHWC copies a pixel's channels, so taps go outside.
    let (order, stride) = match (channel, tap, layout) {
        (_, Some(s), Layout::Nhwc) | (None, Some(s), Layout::Nchw) => (Order::TapMajor, s),
        (Some(s), _, _) => (Order::ChannelMajor, s),
        (None, None, _) => return Err(Error::Unsupported(Unsupported::NonContiguous(Operand::Filter))),
    };
    Ok(Reduction { order, stride, cg: d.i, kh: d.kh, kw: d.kw })
}

/// Pixels per tile for `r` reduction rows and `pixels` output pixels in all.
fn tile_pixels(r: usize, pixels: usize) -> usize {
    (TILE_ELEMS / r).max(MIN_TILE_PIXELS).min(pixels)
}

/// Workspace floats: one column tile (see the module docs for the bound).
pub(crate) fn workspace_len(g: &ConvGeometry, layout: Layout) -> Result<usize> {
    let _ = layout; // the same tile serves both layouts
    let f = g.filter();
    // Fits: the filter's element count was checked by the geometry.
    let r = f.i * f.kh * f.kw;
    let tp = tile_pixels(r, Pixels::of(g.output()).count());
    r.checked_mul(tp).ok_or(Error::Overflow { dim: Dim::Channels })
}

/// The window of one axis, for the column fill.
#[derive(Clone, Copy)]
struct Axis {
    stride: usize,
    dilation: usize,
    pad: usize,
    input: usize,
}

impl Axis {
    /// The outputs `[lo, hi)` within `[o0, o0 + len)` whose tap `k` lands inside the
    /// input, relative to `o0`.
    fn valid(&self, o0: usize, len: usize, k: usize) -> (usize, usize) {
        let off = k * self.dilation;
        let lo = if off >= self.pad { 0 } else { (self.pad - off).div_ceil(self.stride) };
        let end = self.pad + self.input;
        let hi = if off >= end { 0 } else { (end - off).div_ceil(self.stride) };
        let clamp = |v: usize| v.clamp(o0, o0 + len) - o0;
        let (lo, hi) = (clamp(lo), clamp(hi));
        (lo, hi.max(lo))
    }
}

/// Everything the column fill needs.
#[derive(Clone, Copy)]
struct Fill<'a> {
    x: TensorView<'a, f32>,
    red: Reduction,
    ax_h: Axis,
    ax_w: Axis,
    px: Pixels,
}

impl Fill<'_> {
    /// `col[r * len + p]` for pixels `[t0, t1)` of group `grp` (NCHW input).
    ///
    /// Output row segments outside, taps inside: the valid columns of a tap are worked
    /// out once per segment and tap column, not once per reduction row.
    fn rows(&self, col: &mut [f32], grp: usize, t0: usize, t1: usize) {
        let len = t1 - t0;
        let red = self.red;
        let xd = self.x.data();
        let xs = self.x.strides();
        let (h, w) = (self.ax_h, self.ax_w);
        let step = w.stride * xs[3];
        self.px.runs(t0, t1, Join::Row, |q, n, oh, ow0, run| {
            let p0 = q - t0;
            for kw in 0..red.kw {
                let (lo, hi) = w.valid(ow0, run, kw);
                // The first valid column's input coordinate (unused when lo == hi).
                let iw0 = ((ow0 + lo) * w.stride + kw * w.dilation).saturating_sub(w.pad);
                for kh in 0..red.kh {
                    let ih = input_coord(oh, h.stride, kh, h.dilation, h.pad, h.input);
                    for i in 0..red.cg {
                        let r = red.index(i, kh, kw);
                        let dst = &mut col[r * len + p0..r * len + p0 + run];
                        let Some(ih) = ih.filter(|_| lo < hi) else {
                            dst.fill(0.0);
                            continue;
                        };
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        let base = self.x.offset(n, grp * red.cg + i, ih, iw0);
                        let dst = &mut dst[lo..hi];
                        if step == 1 {
                            dst.copy_from_slice(&xd[base..base + dst.len()]);
                        } else {
                            // One bounds check for the whole strided run.
                            let src = &xd[base..=base + (dst.len() - 1) * step];
                            for (j, d) in dst.iter_mut().enumerate() {
                                // SAFETY: `j < dst.len()`, so `j * step <= (dst.len() - 1) *
                                // step < src.len()`.
                                *d = unsafe { *src.get_unchecked(j * step) };
                            }
                        }
                    }
                }
            }
        });
    }

    /// `col[p * R + r]` for pixels `[t0, t1)` of group `grp` (NHWC input).
    fn pixels(&self, col: &mut [f32], grp: usize, t0: usize, t1: usize) {
        let red = self.red;
        let rl = red.len();
        let taps = red.kh * red.kw;
        let xd = self.x.data();
        let xc = self.x.strides()[1];
        let (h, w) = (self.ax_h, self.ax_w);
        // With taps outside, unit dilation and one group over dense pixels, the `KW * C_g`
        // values of one kernel row are contiguous in the input: one copy per row.
        let xw = self.x.strides()[3];
        let row_block =
            red.order == Order::TapMajor && xc == 1 && w.dilation == 1 && (red.kw == 1 || xw == red.cg);
        let block = red.kw * red.cg;
        self.px.runs(t0, t1, Join::Row, |q, n, oh, ow0, run| {
            for j in 0..run {
                let ow = ow0 + j;
                let dst = &mut col[(q - t0 + j) * rl..(q - t0 + j + 1) * rl];
                for kh in 0..red.kh {
                    let ih = input_coord(oh, h.stride, kh, h.dilation, h.pad, h.input);
                    if let (true, Some(ih)) = (row_block, ih) {
                        // The row's first and last taps inside the input mean all are.
                        let first = input_coord(ow, w.stride, 0, 1, w.pad, w.input);
                        let last = input_coord(ow, w.stride, red.kw - 1, 1, w.pad, w.input);
                        if let (Some(iw), Some(_)) = (first, last) {
                            let o = self.x.offset(n, grp * red.cg, ih, iw);
                            let d = &mut dst[kh * block..(kh + 1) * block];
                            copy_small(d, &xd[o..o + block]);
                            continue;
                        }
                    }
                    for kw in 0..red.kw {
                        let tap = kh * red.kw + kw;
                        let src = ih.and_then(|ih| {
                            input_coord(ow, w.stride, kw, w.dilation, w.pad, w.input)
                                .map(|iw| self.x.offset(n, grp * red.cg, ih, iw))
                        });
                        match (red.order, src) {
                            (Order::TapMajor, None) => dst[tap * red.cg..(tap + 1) * red.cg].fill(0.0),
                            (Order::TapMajor, Some(o)) if xc == 1 => {
                                copy_small(&mut dst[tap * red.cg..(tap + 1) * red.cg], &xd[o..o + red.cg]);
                            }
                            (Order::TapMajor, Some(o)) => {
                                for (i, d) in dst[tap * red.cg..(tap + 1) * red.cg].iter_mut().enumerate() {
                                    *d = xd[o + i * xc];
                                }
                            }
                            (Order::ChannelMajor, None) => {
                                for i in 0..red.cg {
                                    dst[i * taps + tap] = 0.0;
                                }
                            }
                            (Order::ChannelMajor, Some(o)) => {
                                for i in 0..red.cg {
                                    dst[i * taps + tap] = xd[o + i * xc];
                                }
                            }
                        }
                    }
                }
            }
        });
    }
}

/// `dst.copy_from_slice(src)` without a `memcpy` call for the few floats of a thin layer.
#[inline(always)]
fn copy_small(dst: &mut [f32], src: &[f32]) {
    if dst.len() >= 32 {
        dst.copy_from_slice(src);
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// im2col + GEMM over the whole batch, tile by tile, split over `exec.threads()`.
pub(crate) fn run(args: ConvArgs<'_, '_>, mut y: TensorViewMut<'_, f32>, ws: &mut [f32]) -> Result<()> {
    let ConvArgs { exec, g, layout, x, w, epilogue } = args;
    let red = reduction(&w, layout)?;
    let rl = red.len();
    let out = g.output();
    let px = Pixels::of(out);
    let total = px.count();
    let groups = g.groups();
    let kg = out.c / groups;
    let win = g.window();
    let pad = win.padding();
    let ax = |i: usize, pad: usize, input: usize| Axis {
        stride: win.stride()[i],
        dilation: win.dilation()[i],
        pad,
        input,
    };
    let fill = Fill { x, red, ax_h: ax(0, pad.top, g.input().h), ax_w: ax(1, pad.left, g.input().w), px };

    let ys = y.strides();
    let (yjoin, ystep) = px.join([ys[0], ys[2], ys[3]]);
    let y_rs = istride(ys[1], kg)?;
    let y_cs = istride(ystep, total)?;
    let w_rs = istride(w.strides()[0], kg)?;
    let w_cs = istride(red.stride, rl)?;
    // A tile of `len` pixels: (row stride, column stride) of its column matrix.
    let col_strides = |len: usize| -> (isize, isize) {
        // Both fit: `rl * len <= ws.len()`, the length of a slice.
        match layout {
            Layout::Nchw => (len as isize, 1),
            Layout::Nhwc => (1, rl as isize),
        }
    };

    // Threads split the pixels when each gets a useful share; otherwise gemm uses them.
    let threads = exec.threads();
    let workers = if threads > 1 {
        threads.min(ws.len() / rl.saturating_mul(MIN_WORKER_PIXELS)).min(total / MIN_WORKER_PIXELS).max(1)
    } else {
        1
    };
    let par = if workers > 1 { gemm::Parallelism::None } else { gemm_parallelism(threads) };

    let y_out = OutPtr::new(&mut y);
    let w_data = w.data();
    split(workers, total, ws, |q0, q1, col| {
        // `col.len() >= rl` because the workspace holds at least one pixel per worker.
        let tp = col.len() / rl;
        let mut t0 = q0;
        while t0 < q1 {
            let t1 = (t0 + tp).min(q1);
            let len = t1 - t0;
            let col = &mut col[..rl * len];
            let (col_rs, col_cs) = col_strides(len);
            for grp in 0..groups {
                match layout {
                    Layout::Nchw => fill.rows(col, grp, t0, t1),
                    Layout::Nhwc => fill.pixels(col, grp, t0, t1),
                }
                let lhs = w_data[w.offset(grp * kg, 0, 0, 0)..].as_ptr();
                px.runs(t0, t1, yjoin, |q, n, oh, ow, run| {
                    let dst = Mat { ptr: y_out.at(n, grp * kg, oh, ow), rs: y_rs, cs: y_cs };
                    let off = (q - t0) * col_cs.unsigned_abs();
                    let rhs = Mat { ptr: col[off..].as_ptr(), rs: col_rs, cs: col_cs };
                    // SAFETY: dst covers channels `grp*kg..(grp+1)*kg` of pixels `q..q+run`,
                    // which lie at one stride (`yjoin`) inside `y`, owned by this worker
                    // and aliasing nothing else. lhs covers filters `grp*kg..` over the `rl`
                    // reduction rows at the collapsed stride, inside `w`. rhs covers rows
                    // `0..rl` and columns `q-t0..q-t0+run` of this tile's column matrix.
                    unsafe {
                        matmul(kg, run, rl, dst, Mat { ptr: lhs, rs: w_rs, cs: w_cs }, rhs, par);
                    }
                });
            }
            epilogue_tile(exec, y_out, layout, epilogue, t0, t1);
            t0 = t1;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_dense_and_broken() {
        // OIHW 4 in-channels of 3x3: (i, kh, kw) strides 9, 3, 1.
        assert_eq!(collapse([(4, 9), (3, 3), (3, 1)]), Some(1));
        // HWIO with 8 filters: (kh, kw, i) strides 96, 32, 8 -> stride 8.
        assert_eq!(collapse([(3, 96), (3, 32), (4, 8)]), Some(8));
        // Padded rows do not collapse.
        assert_eq!(collapse([(4, 16), (3, 4), (3, 1)]), None);
        // Unit extents are ignored.
        assert_eq!(collapse([(1, 1000), (1, 7), (5, 2)]), Some(2));
        assert_eq!(collapse([(1, 3), (1, 7), (1, 2)]), Some(1));
    }

    #[test]
    fn valid_columns() {
        // W = 5, pad 1, stride 1: tap 0 is valid from ow = 1, tap 2 until ow = 3.
        let a = Axis { stride: 1, dilation: 1, pad: 1, input: 5 };
        assert_eq!(a.valid(0, 5, 0), (1, 5));
        assert_eq!(a.valid(0, 5, 2), (0, 4));
        // Stride 2, a window past the input.
        let b = Axis { stride: 2, dilation: 3, pad: 0, input: 4 };
        assert_eq!(b.valid(0, 2, 1), (0, 1));
        assert_eq!(b.valid(1, 1, 2), (0, 0));
    }
}
