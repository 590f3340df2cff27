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
//!
//! Thin inputs with wide windows (network stems: one group, at most 4 input channels, at
//! least 25 taps) skip the column matrix: the [`thin`] kernel convolves directly with the
//! output channels in SIMD registers, on the executor's ISA (so `Exec::with_isa(Avx2)`
//! really runs AVX2 there, where `gemm` picks its own kernel). Its workspace is the
//! weights packed for its blocks, `(K + 63) * C * KH * KW` floats (AlexNet's conv1: 58 K
//! floats); its tap tables and NCHW row buffer live on the stack (68 KiB a worker), so it
//! allocates nothing: one group, at most 4 input channels, at least 25 and at most 1024
//! weights per output channel, at most 512 output channels. For NCHW tensors it hands
//! over to `nchw::thin` where that applies (`nchw::thin_applies`): a kernel vectorised
//! along output pixels, which stores NCHW rows without the row buffer's transpose; its
//! workspace (the padded, phase-split input of one image) is included in
//! [`workspace_len`] for NCHW.

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

/// Workspace floats: one column tile (see the module docs for the bound), or the packed
/// weights of the thin kernel.
pub(crate) fn workspace_len(g: &ConvGeometry, layout: Layout) -> Result<usize> {
    let f = g.filter();
    if thin_input(g) {
        // NCHW takes `nchw::thin` unless the output is narrower than a vector or its
        // padded input copy would not fit `usize` (`nchw::thin_applies` then declines it).
        let packed = thin::packed_len(g)?;
        let split = if layout == Layout::Nchw { super::nchw::thin_len(g).unwrap_or(0) } else { 0 };
        return Ok(packed.max(split));
    }
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
    if thin_input(args.g) {
        if args.layout == Layout::Nchw && super::nchw::thin_applies(args.g, args.exec.isa()) {
            return super::nchw::thin(args, y, ws);
        }
        return thin::run(args, y, ws);
    }
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
            epilogue_tile(exec, y_out, layout, epilogue, t0..t1, 0..out.c);
            t0 = t1;
        }
    });
    Ok(())
}

/// Most input channels (per group) for the [`thin`] kernel.
const THIN_MAX_CHANNELS: usize = 4;

/// Fewest window taps (`KH * KW`) for the [`thin`] kernel.
const THIN_MIN_TAPS: usize = 25;

/// Most weights per output channel (`C * KH * KW`) for the [`thin`] kernel: its tap tables
/// live on the stack (two of 16 bytes a tap).
pub(crate) const THIN_MAX_TAPS: usize = 1024;

/// Most output channels for the [`thin`] kernel: its NCHW row buffer (on the stack) then
/// holds at least 16 pixels of all channels.
const THIN_MAX_OUT: usize = 512;

/// Whether `g` takes the [`thin`] kernel instead of the column matrix: one group of at
/// most [`THIN_MAX_CHANNELS`] input channels and a window of at least [`THIN_MIN_TAPS`]
/// taps, 5x5 and up (network
/// stems such as AlexNet's conv1, 3 -> 96 k11 s4, and ResNet's, 3 -> 64 k7 s2 p3).
/// There the column matrix is `KH * KW / (SH * SW)` times the input (7.6x and 12x),
/// its fill and re-read cost a third of the time, and `gemm` writing an NCHW output runs
/// at 70-80% of its speed for an NHWC one; the direct kernel keeps the weights in L2 and
/// the accumulators in registers, and reads the input in place.
fn thin_input(g: &ConvGeometry) -> bool {
    let f = g.filter();
    g.groups() == 1
        && f.i <= THIN_MAX_CHANNELS
        && f.kh * f.kw >= THIN_MIN_TAPS
        && f.i * f.kh * f.kw <= THIN_MAX_TAPS
        && f.o <= THIN_MAX_OUT
}

/// Direct convolution for thin inputs (see [`thin_input`]), writing either layout.
///
/// Output channels are cut into blocks of `NB` SIMD vectors, output pixels along a row
/// into blocks of `PB` pixels; a block's `PB x NB` accumulators stay in registers while
/// the loop runs over the window's taps `(kh, kw, i)`: per tap `NB` weight vectors
/// (packed once per call, `[block][kh][kw][i][NB * lanes]`, zero past the last channel)
/// and `PB` broadcast input values feed `PB * NB` FMAs. The input is read in place
/// through its strides. Border pixels whose window leaves the input run one at a time
/// over their valid taps only; padded rows are skipped.
///
/// The tap table holds each weight row's byte offset, read without a bounds check (the
/// table's rows are checked by construction): with a checked slice per tap, the AVX2
/// loop spent about 35 instructions on 12 FMAs, three of them reloads of spilled
/// pointers, and ran at 72-77% of the FMA peak. In-process A/B on an AVX2-only AMD EPYC
/// (100 interleaved calls, medians): AlexNet's conv1 0.79-0.89x the time, ResNet's
/// 0.81-0.89x, in both layouts; outputs bitwise identical.
///
/// Three later changes, same machine and method (200-300 calls): a row's interior pixels
/// go in blocks of `PB` and `PB - 1` pixels of as equal sizes as can be (AlexNet's 55 as
/// 5 x 6 + 5 x 5 instead of 9 x 6 + 1 computing 6: 0.93-0.95x against the same build
/// without it, though against the previous commit's build it measured 0.98-1.02x); a
/// border pixel runs its taps in four chains of FMAs summed at the end (one chain waited
/// on the FMA latency: ResNet's three border pixels a row cost as much as a dozen
/// interior ones); and in NCHW the row's output lines are prefetched into L2 while it is
/// computed (the transpose's stores, missing to L3, had been a tenth of ResNet's conv1 in
/// NCHW). ResNet's conv1 0.95-0.96x the time in both layouts (0.97-0.98x of that from the
/// prefetch, in NCHW), AlexNet's 0.97-1.0x.
///
/// On AVX2 the NCHW outputs no longer go through the row buffer: each pixel block's
/// accumulators are transposed in registers (8 pixels x 8 channels at a time) and every
/// channel's run of 5 or 6 pixels is stored straight into its plane (4 + 2 or 4 + 1
/// floats, never past the run), without the line prefetch, which then cost AlexNet's
/// conv1 about 1%. Same machine (2026-11-30): convbench back to back, three rounds,
/// AlexNet's conv1 in NCHW 0.94-0.955x the time on one thread and 0.93-0.955x on two,
/// ResNet's 0.96-0.97x and 0.95-0.97x (86% and 79% of the FMA peak before, 90% and 82%
/// after, as fast as NHWC); in-process A/B (300 interleaved calls, outputs cold, no
/// epilogue), AlexNet's 0.96-0.97x, ResNet's 0.96-0.99x (NHWC, unchanged, 0.99x).
///
/// AVX-512 does the same (each 16-channel vector as two 8-channel halves). Intel Xeon with
/// AVX-512 (2026-12-01), convbench alternating binaries, four rounds, NCHW medians:
/// AlexNet's conv1 1.22-1.26 ms against 1.28-1.38 through the row buffer on one thread,
/// 0.665-0.675 against 0.713-0.738 on two; ResNet's conv1 1.50-1.56 against 1.49-1.61
/// (noise). With the line prefetch kept, AlexNet's gain halved.
mod thin {
    use pulp::{Simd, WithSimd};

    use super::super::matmul::{epilogue_tile, split, Join, OutPtr, Pixels};
    use super::super::ConvArgs;
    use super::{MIN_WORKER_PIXELS, THIN_MAX_OUT, THIN_MAX_TAPS};
    use crate::error::{Dim, Error, Result};
    use crate::geometry::input_coord;
    use crate::geometry::ConvGeometry;
    use crate::isa::Isa;
    use crate::simd_util::prefetch_l2;
    use crate::tensor::{Layout, TensorView, TensorViewMut};

    /// Vectors per output-channel block for `v` vectors of channels: the largest block
    /// (up to `max`) that wastes the fewest padded vectors.
    fn block_vectors(v: usize, max: usize) -> usize {
        (1..=max).rev().min_by_key(|&nb| v.div_ceil(nb) * nb - v).unwrap_or(1)
    }

    /// Geometry of one call, shared by the row kernels.
    #[derive(Clone, Copy)]
    struct Geo {
        kh: usize,
        kw: usize,
        cg: usize,
        k: usize,
        sh: usize,
        sw: usize,
        dh: usize,
        dw: usize,
        pt: usize,
        pl: usize,
        ih: usize,
        iw: usize,
        ow: usize,
    }

    /// Most output channels one block adds past `K`: blocks are at most 4 vectors of at
    /// most 16 lanes, so `ceil(K / block) * block < K + 64`.
    const BLOCK_SLACK: usize = 63;

    /// Row-buffer floats (NCHW): 16 pixels of `THIN_MAX_OUT` channels plus a block's slack.
    const ROW_BUF: usize = (THIN_MAX_OUT + BLOCK_SLACK) * 16;

    /// Workspace floats: the packed weights, `(K + 63) * C * KH * KW` (channels padded to
    /// whole blocks, see [`BLOCK_SLACK`]).
    pub(super) fn packed_len(g: &ConvGeometry) -> Result<usize> {
        let f = g.filter();
        let k = f.o.checked_add(BLOCK_SLACK).ok_or(Error::Overflow { dim: Dim::Channels })?;
        k.checked_mul(f.i * f.kh * f.kw).ok_or(Error::Overflow { dim: Dim::Channels })
    }

    /// A table of taps (see [`Row::taps`]), on the stack.
    struct Taps {
        len: usize,
        t: [[usize; 2]; THIN_MAX_TAPS],
    }

    impl Taps {
        fn new() -> Self {
            Taps { len: 0, t: [[0; 2]; THIN_MAX_TAPS] }
        }

        fn as_slice(&self) -> &[[usize; 2]] {
            &self.t[..self.len]
        }
    }

    pub(super) fn run(args: ConvArgs<'_, '_>, mut y: TensorViewMut<'_, f32>, ws: &mut [f32]) -> Result<()> {
        let ConvArgs { exec, g, layout, x, w, epilogue } = args;
        let f = g.filter();
        let win = g.window();
        let pad = win.padding();
        let out = g.output();
        let geo = Geo {
            kh: f.kh,
            kw: f.kw,
            cg: f.i,
            k: out.c,
            sh: win.stride()[0],
            sw: win.stride()[1],
            dh: win.dilation()[0],
            dw: win.dilation()[1],
            pt: pad.top,
            pl: pad.left,
            ih: g.input().h,
            iw: g.input().w,
            ow: out.w,
        };
        let lanes = exec.isa().f32_lanes();
        // AVX2 has 16 vector registers: blocks of at most 2 x 6 accumulators (3 x 4 left
        // the compiler shuffling registers: 45-49 GFLOP/s on AlexNet's conv1 against
        // 68-74 with 2 x 6, the AVX2 peak being about 88).
        let nb = block_vectors(out.c.div_ceil(lanes), if exec.isa() == Isa::Avx2 { 2 } else { 4 });
        let block = nb * lanes;
        let blocks = out.c.div_ceil(block);
        let taps = f.kh * f.kw * f.i;
        // Packed weights, in the workspace: `blocks * block <= K + BLOCK_SLACK`, so they
        // fit in `packed_len(g)` floats (the caller checked the workspace length).
        let wpk = &mut ws[..blocks * taps * block];
        wpk.fill(0.0);
        let wd = w.data();
        let fs = w.strides();
        // Filter by filter, each read in memory order (OIHW: `kw` innermost), so the
        // reads stream; weight `[o, i, kh, kw]` goes to row `(kh * KW + kw) * C + i` of
        // block `o / block`, column `o % block`.
        let dstep = f.i * block;
        for o in 0..out.c {
            let (b, j) = (o / block, o % block);
            for i in 0..f.i {
                for kh in 0..f.kh {
                    let src = w.offset(o, i, kh, 0);
                    let dst = (b * taps + kh * f.kw * f.i + i) * block + j;
                    // Row `r` steps by `C` per `kw`, i.e. `C * block` floats.
                    for kw in 0..f.kw {
                        wpk[dst + kw * dstep] = wd[src + kw * fs[3]];
                    }
                }
            }
        }

        let px = Pixels::of(out);
        let total = px.count();
        let threads = exec.threads();
        let workers = if threads > 1 { threads.min(total / MIN_WORKER_PIXELS).max(1) } else { 1 };
        let y_out = OutPtr::new(&mut y);
        let wpk = &wpk[..];
        // NCHW: a row's outputs go pixel-major (`[ow][K padded to blocks]`) into a row
        // buffer first, then one contiguous run per channel; storing each pixel's
        // channels straight into `K` planes touched `K` pages per pixel. The buffer holds
        // `chunk >= 16` pixels (`blocks * block <= THIN_MAX_OUT + BLOCK_SLACK` floats a
        // pixel). On AVX2 and AVX-512 the kernel transposes each pixel block in registers and stores
        // every channel's run of pixels itself (`Row::store_nchw_direct`; the dispatch then
        // returns true and the buffer is unused).
        let kp = blocks * block;
        let chunk = if layout == Layout::Nchw { (ROW_BUF / kp).max(1) } else { usize::MAX };
        split(workers, total, &mut [], |q0, q1, _| {
            let mut buf = [0.0f32; ROW_BUF];
            let mut tabs = [Taps::new(), Taps::new()];
            px.runs(q0, q1, Join::Row, |q, n, oh, ow0, run| {
                let mut done = 0;
                while done < run {
                    let part = (run - done).min(chunk);
                    let ow = ow0 + done;
                    let direct = exec.dispatch(Row {
                        x,
                        wpk,
                        y: y_out,
                        buf: &mut buf,
                        tabs: Some(&mut tabs),
                        layout,
                        geo,
                        nb,
                        n,
                        oh,
                        ow0: ow,
                        run: part,
                    });
                    if layout == Layout::Nchw && !direct {
                        transpose_row(&buf[..part * kp], kp, y_out, n, out.c, oh, ow, part);
                    }
                    done += part;
                }
                epilogue_tile(exec, y_out, layout, epilogue, q..q + run, 0..out.c);
            });
        });
        Ok(())
    }

    /// Writes the row buffer `buf[j * kp + o]` (pixels `ow0..ow0 + run`, channels
    /// `0..k`, `kp >= k`) into the NCHW output, four channels per pass over the buffer
    /// (NEON and scalar code; AVX2 and AVX-512 store straight into the planes).
    #[allow(clippy::too_many_arguments)]
    fn transpose_row(
        buf: &[f32],
        kp: usize,
        y: OutPtr,
        n: usize,
        k: usize,
        oh: usize,
        ow0: usize,
        run: usize,
    ) {
        assert!(k <= kp && buf.len() >= run * kp);
        let mut o = 0;
        while o < k {
            let m = (k - o).min(4);
            let mut dst = [core::ptr::null_mut::<f32>(); 4];
            for (c, d) in dst.iter_mut().enumerate().take(m) {
                // `w` has stride 1 in an NCHW view (or the run has length 1): channel
                // `o + c` of pixels `ow0..ow0 + run` is `run` consecutive in-range elements,
                // owned by this worker.
                *d = y.at(n, o + c, oh, ow0);
            }
            for j in 0..run {
                let src = &buf[j * kp + o..j * kp + o + m];
                for (c, v) in src.iter().enumerate() {
                    // SAFETY: see above; `j < run`.
                    unsafe { *dst[c].add(j) = *v };
                }
            }
            o += m;
        }
    }

    /// Stores the first `n` lanes (`1 <= n <= 8`) of `v` at `p..p + n`.
    ///
    /// # Safety
    /// AVX2 is available and enabled in the caller (this inlines into AVX code); the `n`
    /// floats at `p` are writable.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store_n(p: *mut f32, v: core::arch::x86_64::__m256, n: usize) {
        use core::arch::x86_64::*;
        debug_assert!((1..=8).contains(&n));
        // SAFETY: as the caller guarantees: every store below stays inside `p..p + n`.
        unsafe {
            if n == 8 {
                _mm256_storeu_ps(p, v);
                return;
            }
            let (mut p, mut n, mut h) = (p, n, _mm256_castps256_ps128(v));
            if n >= 4 {
                _mm_storeu_ps(p, h);
                (p, n, h) = (p.add(4), n - 4, _mm256_extractf128_ps::<1>(v));
            }
            if n >= 2 {
                _mm_store_sd(p.cast::<f64>(), _mm_castps_pd(h));
                (p, n, h) = (p.add(2), n - 2, _mm_movehl_ps(h, h));
            }
            if n == 1 {
                _mm_store_ss(p, h);
            }
        }
    }

    /// One output row segment, all channels.
    struct Row<'a, 'w> {
        x: TensorView<'a, f32>,
        wpk: &'w [f32],
        y: OutPtr,
        /// NCHW only: the row buffer, `[ow - ow0][K padded]`.
        buf: &'w mut [f32],
        /// Scratch for the tap tables (see [`Row::taps`]).
        tabs: Option<&'w mut [Taps; 2]>,
        layout: Layout,
        geo: Geo,
        nb: usize,
        n: usize,
        oh: usize,
        ow0: usize,
        run: usize,
    }

    /// One tap `[off, base]` of [`Row::taps`] for one pixel (input column offset `col`):
    /// `acc += x[base + col] * w[off..]`.
    #[inline(always)]
    fn tap<S: Simd, const NB: usize>(
        simd: S,
        wv: &[S::f32s],
        xd: &[f32],
        [off, base]: [usize; 2],
        col: usize,
        acc: &mut [S::f32s; NB],
    ) {
        debug_assert!(off + NB * core::mem::size_of::<S::f32s>() <= core::mem::size_of_val(wv));
        debug_assert!(base + col < xd.len());
        let wp = wv.as_ptr().cast::<u8>();
        // SAFETY: as in `Row::block`: `off` is the byte offset of a weight row of the block,
        // whose `NB` vectors lie inside `wv` (the caller asserted its length), and
        // `base + col` the offset of an input element inside the view's slice.
        let x = simd.splat_f32s(unsafe { *xd.as_ptr().add(base + col) });
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: see above; `f32s` is plain data, read unaligned.
            let w = unsafe {
                wp.add(off + j * core::mem::size_of::<S::f32s>()).cast::<S::f32s>().read_unaligned()
            };
            *a = simd.mul_add_e_f32s(x, w, *a);
        }
    }

    /// The NCHW output lines of a row segment (channel `r`'s pixels `ow0..ow0 + run`, for
    /// `r < runs`), walked a few at a time.
    struct Lines {
        /// Runs `0..runs`, the current one `r`.
        r: usize,
        runs: usize,
        /// Next line's address and the current run's end.
        at: usize,
        end: usize,
    }

    impl WithSimd for Row<'_, '_> {
        /// Whether the outputs went straight into the NCHW planes (AVX2), not into the
        /// row buffer.
        type Output = bool;
        #[inline(always)]
        fn with_simd<S: Simd>(mut self, simd: S) -> bool {
            // AVX2 has 16 vector registers, the others 32 (Scalar: any). Blocks keep
            // `NB * PB` accumulators, `NB` weights and a broadcast in registers; on AVX2
            // `NB <= 2` (see `run`).
            let small = S::F32_LANES == Isa::Avx2.f32_lanes();
            match (self.nb, small) {
                (4, _) => self.blocks::<S, 4, 6, 5>(simd),
                (3, _) => self.blocks::<S, 3, 8, 7>(simd),
                (2, false) => self.blocks::<S, 2, 12, 11>(simd),
                (_, false) => self.blocks::<S, 1, 16, 15>(simd),
                (2, true) => self.blocks::<S, 2, 6, 5>(simd),
                (_, true) => self.blocks::<S, 1, 12, 11>(simd),
            }
            Self::direct::<S>()
        }
    }

    impl Row<'_, '_> {
        /// Start address and length in bytes of run `r` of [`Lines`]: channel `r`'s pixels
        /// `ow0..ow0 + run` (consecutive in an NCHW view).
        fn line_run(&self, r: usize) -> (usize, usize) {
            (self.y.at(self.n, r, self.oh, self.ow0) as usize, self.run * core::mem::size_of::<f32>())
        }

        /// Prefetches the next `count` lines of `lines` into L2.
        fn prefetch(&self, lines: &mut Lines, mut count: usize) {
            while count > 0 && lines.r < lines.runs {
                if lines.at >= lines.end {
                    lines.r += 1;
                    if lines.r < lines.runs {
                        let (start, len) = self.line_run(lines.r);
                        (lines.at, lines.end) = (start & !63, start + len);
                    }
                    continue;
                }
                prefetch_l2(lines.at as *const f32);
                lines.at += 64;
                count -= 1;
            }
        }

        #[inline(always)]
        fn blocks<S: Simd, const NB: usize, const PB: usize, const PB1: usize>(&mut self, simd: S) {
            debug_assert!(PB1 + 1 == PB);
            let geo = self.geo;
            let lanes = S::F32_LANES;
            let block = NB * lanes;
            let taps = geo.kh * geo.kw * geo.cg;
            let blocks = geo.k.div_ceil(block);
            let end = self.ow0 + self.run;
            // Pixels whose whole window row lies inside the input: `[lo, hi)`.
            let span = (geo.kw - 1) * geo.dw;
            let lo = geo.pl.div_ceil(geo.sw).min(geo.ow);
            let hi = if geo.iw + geo.pl > span {
                (geo.iw + geo.pl - span).div_ceil(geo.sw).min(geo.ow)
            } else {
                0
            };
            let hi = hi.max(lo);
            let Some([inner, border]) = self.tabs.take() else { return };
            // Bytes between the packed weight rows of a block.
            let wstep = block * core::mem::size_of::<f32>();
            self.taps(inner, 0, geo.kw, wstep);
            // NCHW: the row's output lines, prefetched into L2 a few per pixel block while
            // the sums are computed; the transpose's stores, missing to L3, were a tenth of
            // ResNet's conv1. (NHWC stores one line at a time between the sums, and the
            // prefetch made it 4% slower.)
            // Not when the outputs go straight into the planes (AVX2): there the prefetch
            // cost AlexNet's conv1 1% (convbench, back to back, 2026-11-30).
            let runs = if self.layout == Layout::Nchw && !Self::direct::<S>() { geo.k } else { 0 };
            let (start, len) = self.line_run(0);
            let mut lines = Lines { r: 0, runs, at: start & !63, end: start + len };
            let total = runs * (len / 64 + 2);
            let per = total.div_ceil(blocks * self.run.div_ceil(PB1)).max(1);
            let weights = |b: usize| S::as_simd_f32s(&self.wpk[b * taps * block..(b + 1) * taps * block]).0;
            // Border pixels, whose window leaves the input: one at a time over the taps
            // inside it, one table for every channel block.
            for ow in (self.ow0..end).filter(|ow| !(lo..hi).contains(ow)) {
                let valid = |kw: &usize| input_coord(ow, geo.sw, *kw, geo.dw, geo.pl, geo.iw).is_some();
                let first = (0..geo.kw).find(valid);
                let last = (0..geo.kw).rev().find(valid);
                let (a, z) = match (first, last) {
                    (Some(a), Some(z)) => (a, z + 1),
                    _ => (0, 0),
                };
                self.taps(border, a, z, wstep);
                for b in 0..blocks {
                    self.edge::<S, NB>(simd, weights(b), border.as_slice(), b, ow, a);
                }
            }
            // The interior pixels in `ceil(r / PB)` blocks of as equal sizes as can be, run
            // by the `PB` or `PB - 1` kernel: a row of 55 goes 5 x 6 + 5 x 5, not 9 x 6 + 1,
            // whose last block would compute 6 pixels for 1 (9% of AlexNet's conv1).
            let (i0, i1) = (self.ow0.max(lo), end.min(hi));
            let r = i1.saturating_sub(i0);
            let count = r.div_ceil(PB);
            // No pixels: no blocks (`count` is 0).
            let (size, extra) = (r.checked_div(count).unwrap_or(0), r.checked_rem(count).unwrap_or(0));
            for b in 0..blocks {
                let wv = weights(b);
                let mut ow = i0;
                for i in 0..count {
                    self.prefetch(&mut lines, per);
                    let pb = size + usize::from(i < extra);
                    let tab = inner.as_slice();
                    if pb == PB1 {
                        self.block::<S, NB, PB1>(simd, wv, tab, b, ow, pb);
                    } else {
                        self.block::<S, NB, PB>(simd, wv, tab, b, ow, pb);
                    }
                    ow += pb;
                }
            }
        }

        /// Border pixel `ow` of channel block `b`, over the taps of `tab` (built by
        /// [`Row::taps`] from column `kw0`, all inside the input). With one pixel, a chain
        /// of dependent FMAs would wait on their latency: four chains take turns over the
        /// taps and are summed at the end.
        #[allow(clippy::too_many_arguments)]
        #[inline(always)]
        fn edge<S: Simd, const NB: usize>(
            &mut self,
            simd: S,
            wv: &[S::f32s],
            tab: &[[usize; 2]],
            b: usize,
            ow: usize,
            kw0: usize,
        ) {
            let geo = self.geo;
            let zero = simd.splat_f32s(0.0);
            let mut acc = [[zero; NB]; 4];
            if !tab.is_empty() {
                let xd = self.x.data();
                // No underflow: tap `kw0` of pixel `ow` lies inside the input (the table has
                // a tap).
                let col = (ow * geo.sw + kw0 * geo.dw - geo.pl) * self.x.strides()[3];
                assert!(wv.len() >= geo.kh * geo.kw * geo.cg * NB);
                let mut quads = tab.chunks_exact(4);
                for q in &mut quads {
                    for (a, &t) in acc.iter_mut().zip(q) {
                        tap::<S, NB>(simd, wv, xd, t, col, a);
                    }
                }
                for &t in quads.remainder() {
                    tap::<S, NB>(simd, wv, xd, t, col, &mut acc[0]);
                }
            }
            let sum: [S::f32s; NB] = core::array::from_fn(|j| {
                simd.add_f32s(simd.add_f32s(acc[0][j], acc[1][j]), simd.add_f32s(acc[2][j], acc[3][j]))
            });
            self.store::<S, NB, 1>(simd, &[sum], b, ow, 1);
        }

        /// The taps of this row with kernel columns `kw0..kw1`, as `[weight row, input
        /// offset]`: the byte offset `r * wstep` of weight row `r = (kh * KW + kw) * C + i`
        /// in a block of the packed weights (`wstep` bytes a row) and the input offset of
        /// `[n, i, ih, iw]` minus that of `[n, 0, 0, iw_p]` for a pixel's first valid
        /// column `iw_p` (tap `kw0`); rows in the padding are left out. One flat loop over
        /// this table keeps the accumulators in registers (nested loops over `kh`, `kw`,
        /// `i` made the compiler spill them every iteration). Every `r < KH * KW * C`, the
        /// rows of a block ([`Row::block`] relies on it). At most `KH * KW * C <=
        /// THIN_MAX_TAPS` entries (see `thin_input`).
        fn taps(&self, tab: &mut Taps, kw0: usize, kw1: usize, wstep: usize) {
            let geo = self.geo;
            let [xs0, xs1, xs2, xs3] = self.x.strides();
            tab.len = 0;
            for kh in 0..geo.kh {
                let Some(ih) = input_coord(self.oh, geo.sh, kh, geo.dh, geo.pt, geo.ih) else {
                    continue;
                };
                for kw in kw0..kw1 {
                    for i in 0..geo.cg {
                        let r = (kh * geo.kw + kw) * geo.cg + i;
                        tab.t[tab.len] =
                            [r * wstep, self.n * xs0 + i * xs1 + ih * xs2 + (kw - kw0) * geo.dw * xs3];
                        tab.len += 1;
                    }
                }
            }
        }

        /// Interior pixels `ow..ow + pb` (`pb <= PB`) of channel block `b`, over the taps
        /// of `tab` (built by [`Row::taps`] from column 0), all of which lie inside the
        /// input for these pixels.
        #[allow(clippy::too_many_arguments)]
        #[inline(always)]
        fn block<S: Simd, const NB: usize, const PB: usize>(
            &mut self,
            simd: S,
            wv: &[S::f32s],
            tab: &[[usize; 2]],
            b: usize,
            ow: usize,
            pb: usize,
        ) {
            let geo = self.geo;
            let xd = self.x.data();
            let xs3 = self.x.strides()[3];
            let zero = simd.splat_f32s(0.0);
            let mut acc = [[zero; NB]; PB];
            // Each pixel's input column of tap 0; pixels past `pb` repeat the last one
            // (computed, never stored) so the block stays branch-free.
            let mut col = [0usize; PB];
            for (p, c) in col.iter_mut().enumerate() {
                // No underflow: tap 0 of interior pixel `ow + min(p, pb - 1)` lies inside
                // the input.
                *c = ((ow + p.min(pb - 1)) * geo.sw - geo.pl) * xs3;
            }
            // Every tap's weight row lies inside `wv` (see `Row::taps`): the block's
            // `KH * KW * C` rows of `NB` vectors.
            assert!(wv.len() >= geo.kh * geo.kw * geo.cg * NB);
            let wp = wv.as_ptr().cast::<u8>();
            for &[off, base] in tab {
                debug_assert!(off + NB * core::mem::size_of::<S::f32s>() <= core::mem::size_of_val(wv));
                // SAFETY: `off` is `r * NB * L * 4` bytes for a row `r < KH * KW * C`, so the
                // `NB` vectors from it lie inside `wv` (asserted above); `f32s` is plain
                // data, read unaligned.
                let wr: [S::f32s; NB] = core::array::from_fn(|j| unsafe {
                    wp.add(off + j * core::mem::size_of::<S::f32s>()).cast::<S::f32s>().read_unaligned()
                });
                debug_assert!(col.iter().all(|&c| base + c < xd.len()));
                // SAFETY: `base + col[p]` is the offset of input element `[n, i, ih, iw]`
                // with `ih` from `input_coord` and `iw = (ow + p') * sw + kw * dw - pl`
                // inside `[0, W)` for a tap `kw` the caller checked, so it lies inside the
                // view's slice; `base <= base + col[p]`, so `ptr` stays inside it too.
                let ptr = unsafe { xd.as_ptr().add(base) };
                for p in 0..PB {
                    // SAFETY: see above.
                    let v = simd.splat_f32s(unsafe { *ptr.add(col[p]) });
                    for j in 0..NB {
                        acc[p][j] = simd.mul_add_e_f32s(v, wr[j], acc[p][j]);
                    }
                }
            }
            self.store::<S, NB, PB>(simd, &acc, b, ow, pb);
        }

        /// Whether NCHW outputs go straight into the planes ([`Row::store_nchw_direct`]):
        /// on AVX2 and AVX-512.
        #[inline(always)]
        fn direct<S: Simd>() -> bool {
            crate::simd_util::is_avx2::<S>() || crate::simd_util::is_avx512::<S>()
        }

        /// NCHW on AVX2 and AVX-512: the block's accumulators (pixel-major, 8 or 16
        /// channels a vector), each 8-channel half transposed in AVX registers 8 pixels at
        /// a time and stored as each channel's run of `pb` pixels, without the row buffer
        /// and its transpose.
        #[cfg(target_arch = "x86_64")]
        #[inline(always)]
        fn store_nchw_direct<S: Simd, const NB: usize, const PB: usize>(
            &self,
            acc: &[[S::f32s; NB]; PB],
            b: usize,
            ow: usize,
            pb: usize,
        ) {
            use core::arch::x86_64::*;
            let halves = core::mem::size_of::<S::f32s>() / core::mem::size_of::<__m256>();
            assert!(
                Self::direct::<S>()
                    && core::mem::size_of::<S::f32s>() == halves * core::mem::size_of::<__m256>()
            );
            let k = self.geo.k;
            // The 8-channel half `h` of vector `v`: `S::f32s` is `halves` (1 or 2, asserted)
            // `__m256` of plain data, read unaligned.
            let half = |v: &S::f32s, h: usize| -> __m256 {
                debug_assert!(h < halves);
                // SAFETY: see above; `h < halves`.
                unsafe { (v as *const S::f32s).cast::<__m256>().add(h).read_unaligned() }
            };
            // `j` picks one vector of every pixel's accumulators, not an element of `acc`.
            #[allow(clippy::needless_range_loop)]
            for j in 0..NB {
                for h in 0..halves {
                    let o0 = ((b * NB + j) * halves + h) * 8;
                    if o0 >= k {
                        break;
                    }
                    let m = (k - o0).min(8);
                    if PB == 1 {
                        // One pixel (a border pixel): its channels one by one.
                        // SAFETY: an `__m256` is 8 floats, plain data.
                        let v: [f32; 8] = unsafe { core::mem::transmute(half(&acc[0][j], h)) };
                        for (c, &x) in v.iter().enumerate().take(m) {
                            // SAFETY: channel `o0 + c < k` of pixel `ow` (`pb == 1`) is an
                            // in-range element owned by this worker.
                            unsafe { *self.y.at(self.n, o0 + c, self.oh, ow) = x };
                        }
                        continue;
                    }
                    let mut p0 = 0;
                    while p0 < pb {
                        let n = (pb - p0).min(8);
                        // SAFETY: `S` is pulp's `V3` or `V4` (asserted), so AVX2 is available
                        // and enabled in this `with_simd` context.
                        let cols = unsafe {
                            let rows: [__m256; 8] = core::array::from_fn(|p| {
                                if p0 + p < PB {
                                    half(&acc[p0 + p][j], h)
                                } else {
                                    _mm256_setzero_ps()
                                }
                            });
                            crate::simd_util::transpose8(rows)
                        };
                        for (c, v) in cols.iter().enumerate().take(m) {
                            // `w` has stride 1 in an NCHW view (or the run has length 1):
                            // channel `o0 + c < k` of pixels `ow + p0 .. ow + p0 + n` (inside
                            // the row segment, `p0 + n <= pb`) is `n` consecutive in-range
                            // elements, owned by this worker.
                            let dst = self.y.at(self.n, o0 + c, self.oh, ow + p0);
                            // SAFETY: see above; AVX2 as above.
                            unsafe { store_n(dst, *v, n) };
                        }
                        p0 += n;
                    }
                }
            }
        }

        #[inline(always)]
        fn store<S: Simd, const NB: usize, const PB: usize>(
            &mut self,
            simd: S,
            acc: &[[S::f32s; NB]; PB],
            b: usize,
            ow: usize,
            pb: usize,
        ) {
            #[cfg(target_arch = "x86_64")]
            if self.layout == Layout::Nchw && Self::direct::<S>() {
                self.store_nchw_direct::<S, NB, PB>(acc, b, ow, pb);
                return;
            }
            let lanes = S::F32_LANES;
            let k = self.geo.k;
            for (p, a) in acc.iter().enumerate().take(pb) {
                for (j, v) in a.iter().enumerate() {
                    let o0 = (b * NB + j) * lanes;
                    if o0 >= k {
                        break;
                    }
                    let m = (k - o0).min(lanes);
                    match self.layout {
                        Layout::Nhwc => {
                            // SAFETY: channels `o0..o0 + m` of pixel `(n, oh, ow + p)` are `m`
                            // consecutive in-range elements (`c` has stride 1 in an NHWC
                            // view, or there is one channel), owned by this worker.
                            let dst = unsafe {
                                core::slice::from_raw_parts_mut(self.y.at(self.n, o0, self.oh, ow + p), m)
                            };
                            if m == lanes {
                                S::as_mut_simd_f32s(dst).0[0] = *v;
                            } else {
                                simd.partial_store_f32s(dst, *v);
                            }
                        }
                        Layout::Nchw => {
                            // The row buffer holds every padded channel: a full vector fits.
                            let at =
                                (ow + p - self.ow0) * (self.geo.k.div_ceil(NB * lanes) * NB * lanes) + o0;
                            S::as_mut_simd_f32s(&mut self.buf[at..at + lanes]).0[0] = *v;
                        }
                    }
                }
            }
        }
    }
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
