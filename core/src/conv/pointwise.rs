//! Pointwise (1x1) convolution: a GEMM reading the input in place, no im2col.
//!
//! Per group, with output pixels `p`: `Y[o, p] = sum_c W[o, c] * X[c, p]`. In NCHW the
//! pixels of a channel are contiguous (`Y = W X`); in NHWC the channels of a pixel are
//! (`Y^T = X^T W^T`); it is the same product with other strides, and `gemm` takes any.
//! A stride `S > 1` subsamples the input: pixels along a row stay at one stride (`S`
//! elements apart), so each output row is one GEMM; when the subsampled rows also line up
//! (stride 1, or a strided view) a GEMM spans rows or the whole batch. No workspace.
//!
//! On AVX-512 or AVX2 and one thread, NCHW-like runs (pixels contiguous in input and output)
//! of reductions (no more output than input channels) skip `gemm` for [`Packed`]: input
//! panels of 48 pixels x at most 128 channels (AVX2: 16 x 384) copied into a 24 KiB
//! buffer on the stack, multiplied by register tiles of 8 output channels x 3 vectors
//! (AVX2: 6 x 2; see [`packed_applies`] for the measurements).

use super::im2col::MIN_WORKER_PIXELS;
use super::matmul::{epilogue_tile, gemm_parallelism, istride, matmul, split, Mat, OutPtr, Pixels};
use super::ConvArgs;
use crate::error::Result;
use crate::isa::Isa;
use crate::simd_util::prefetch_l2;
use crate::tensor::TensorViewMut;
use pulp::{Simd, WithSimd};

/// Output floats per chunk when an epilogue is fused (1 MiB): the chunk's outputs are
/// still in L2 when the epilogue runs.
const EPILOGUE_CHUNK_ELEMS: usize = 1 << 18;
/// Fewest pixels per chunk (narrower GEMMs would mostly repack the filters).
const MIN_CHUNK_PIXELS: usize = 256;

/// The 1x1 convolution as per-group GEMMs over the input in place.
pub(crate) fn run(args: ConvArgs<'_, '_>, mut y: TensorViewMut<'_, f32>) -> Result<()> {
    let ConvArgs { exec, g, layout, x, w, epilogue } = args;
    let out = g.output();
    let px = Pixels::of(out);
    let total = px.count();
    let groups = g.groups();
    let kg = out.c / groups;
    let cg = g.filter().i;
    let [sh, sw] = g.window().stride();

    let xs = x.strides();
    let ys = y.strides();
    let fs = w.strides();
    // Input pixel strides seen from the output grid. Only consulted for extents > 1, where
    // `(extent - 1) * stride` lies inside the input, so saturation never matters.
    let (xjoin, xstep) = px.join([xs[0], xs[2].saturating_mul(sh), xs[3].saturating_mul(sw)]);
    let (yjoin, ystep) = px.join([ys[0], ys[2], ys[3]]);
    let join = xjoin.min(yjoin);
    let y_m = (istride(ys[1], kg)?, istride(ystep, total)?);
    let x_m = (istride(xs[1], cg)?, istride(xstep, total)?);
    let w_m = (istride(fs[0], kg)?, istride(fs[1], cg)?);

    let chunk =
        if epilogue.is_identity() { total } else { (EPILOGUE_CHUNK_ELEMS / out.c).max(MIN_CHUNK_PIXELS) };
    let threads = exec.threads();
    let workers = if threads > 1 { threads.min(total / MIN_WORKER_PIXELS).max(1) } else { 1 };
    let par = if workers > 1 { gemm::Parallelism::None } else { gemm_parallelism(threads) };

    let y_out = OutPtr::new(&mut y);
    let (xd, wd) = (x.data(), w.data());
    split(workers, total, &mut [], |q0, q1, _| {
        let mut t0 = q0;
        while t0 < q1 {
            let t1 = (t0 + chunk).min(q1);
            for grp in 0..groups {
                let w_off = w.offset(grp * kg, 0, 0, 0);
                let lhs = Mat { ptr: wd[w_off..].as_ptr(), rs: w_m.0, cs: w_m.1 };
                px.runs(t0, t1, join, |_, n, oh, ow, run| {
                    let y_at = y_out.at(n, grp * kg, oh, ow);
                    // In range: a 1x1 window without padding reads input row `oh * sh < H`
                    // (even under Ceil rounding) and column `ow * sw < W`.
                    let x_off = x.offset(n, grp * cg, oh * sh, ow * sw);
                    if packed_applies(exec.isa(), threads, xstep, ystep, run, cg, kg) {
                        // The run's invariant: the group's `cg` input channels of the
                        // `run` pixels (unit stride) lie inside `x` from `x_off`, its
                        // `kg x cg` filter block inside `w` from `w_off`, and its outputs
                        // (unit stride) are this worker's, inside `y`.
                        exec.dispatch(Packed {
                            x: xd,
                            x_off,
                            xs: xs[1],
                            w: wd,
                            w_off,
                            ws0: fs[0],
                            ws1: fs[1],
                            y: y_at,
                            ys: ys[1],
                            k: kg,
                            c: cg,
                            len: run,
                        });
                        return;
                    }
                    let dst = Mat { ptr: y_at, rs: y_m.0, cs: y_m.1 };
                    let rhs = Mat { ptr: xd[x_off..].as_ptr(), rs: x_m.0, cs: x_m.1 };
                    // SAFETY: dst covers channels `grp*kg..(grp+1)*kg` of output pixels
                    // `q..q+run`, which lie at one stride (`join`) inside `y`, owned by
                    // this worker and aliasing nothing else; rhs covers channels
                    // `grp*cg..(grp+1)*cg` of the input pixels they read, at one stride
                    // inside `x`; lhs covers the group's `kg x cg` filter block inside `w`.
                    unsafe { matmul(kg, run, cg, dst, lhs, rhs, par) };
                });
            }
            epilogue_tile(exec, y_out, layout, epilogue, t0, t1);
            t0 = t1;
        }
    });
    Ok(())
}

/// Most pixel vectors of a packed panel.
const PV: usize = 3;
/// The widest panel: `PV` vectors of 16 lanes (AVX-512).
const PANEL_MAX: usize = PV * 16;
/// Most input channels per packed panel of `PANEL_MAX` pixels: `KC x 48` floats (24 KiB)
/// stay in L1. Narrower panels take proportionally more channels (AVX2: 384 x 16).
const KC: usize = 128;
/// Output channels per register tile on AVX-512: `OB x PV` accumulators (24 of its 32
/// registers).
const OB: usize = 8;
/// Output channels per register tile on AVX2: `OB_AVX2 x PV_AVX2` accumulators, 12 of its
/// 16 registers (the 2 input vectors and the broadcast weight take 3 more; with 4 x 3
/// tiles, all 16, the compiler spilled and the kernel ran at half `gemm`'s speed).
const OB_AVX2: usize = 6;
/// Pixel vectors of an AVX2 panel.
const PV_AVX2: usize = 2;

/// Whether a run of `len` pixels at unit input and output pixel strides, `c` input and
/// `k` output channels, goes through [`Packed`] on `isa` rather than through `gemm`:
/// - only on AVX-512 (8 x 3 tiles) and AVX2 (6 x 2 tiles, no prefetch), not on NEON or
///   scalar code;
/// - only NCHW-like runs (pixels contiguous in input and output) of at least one full
///   panel: there `gemm` reads the input rows in place, one channel per row 4 x H x W
///   bytes apart (ResNet's 1x1 reduce: 256 rows 12.5 KB apart per tile), which misses
///   the TLB and aliases in L1; NHWC runs (channels contiguous) already suit `gemm`;
/// - only when `c >= k`, reductions such as ResNet's 1x1 reduce (256 -> 64: 0.72-0.76 ms
///   against gemm's 0.76-0.80, minima of alternating runs); on the expansion 64 -> 256
///   the output stores dominate and `gemm` stayed ahead (0.67 against 0.74 ms). On AVX2
///   (built without `gemm-avx512`, so that `gemm` runs AVX2 too) the reduce took
///   minima of 1.33-1.49 ms against gemm's 1.37-1.47 (9 alternating pairs, lower in 6),
///   best medians 1.39-1.50 against 1.46-1.52; GoogLeNet's 0.418-0.468 against 0.431-0.48;
///   the expansion again stayed with `gemm` (1.27-1.35 against 1.25-1.27);
/// - only on one thread: with two, each splitting the pixels, `gemm` stayed ahead
///   (medians of alternating runs: reduce 0.54-0.58 against 0.66-0.72 ms, GoogLeNet's
///   480 -> 192 0.22-0.24 against 0.26-0.34).
fn packed_applies(
    isa: Isa,
    threads: usize,
    xstep: usize,
    ystep: usize,
    len: usize,
    c: usize,
    k: usize,
) -> bool {
    matches!(isa, Isa::Avx512 | Isa::Avx2)
        && threads == 1
        && xstep == 1
        && ystep == 1
        && len >= PANEL_MAX
        && c >= k
}

/// A 64-byte aligned panel buffer.
#[repr(C, align(64))]
struct Panel([f32; KC * PANEL_MAX]);

/// One run of `len >= PANEL_MAX` consecutive output pixels of `k` output channels of one
/// group, pixels contiguous in input and output, computed from packed input panels.
///
/// Panel by panel (`PV` vectors of pixels, `PV_AVX2` on AVX2; the last one of 1 to that
/// many vectors ends at the run's end, overlapping its predecessor), input channels in
/// blocks that fill at most `KC x PANEL_MAX` floats: the first tile of `OB` (`OB_AVX2`)
/// output channels copies the block's input rows into an L1-resident buffer
/// (`[channel][pixel]`) as it multiplies them, the others read the buffer. Each tile holds
/// `channels x vectors` accumulators in registers, stored for the first channel block and
/// added to the stored sums for the others; so an overlapping panel rewrites its
/// predecessor's pixels with the same sums (its first block stores, it does not add).
/// While a block is multiplied, the rows of the next one are prefetched into L2 (AVX-512
/// only).
///
/// Invariants (checked by the caller, relied on by the unsafe accesses): for input channel
/// `i < c`, output channel `o < k` and pixel `p < len`, `x_off + i * xs + p < x.len()`,
/// `w_off + o * ws0 + i * ws1 < w.len()`, and `y + o * ys + p` are in range of the output
/// view, distinct, and written by no one else meanwhile.
struct Packed<'a> {
    x: &'a [f32],
    x_off: usize,
    xs: usize,
    w: &'a [f32],
    w_off: usize,
    ws0: usize,
    ws1: usize,
    y: *mut f32,
    ys: usize,
    k: usize,
    c: usize,
    len: usize,
}

/// The input rows a tile prefetches while it runs: rows `0..rows` from `base` at stride
/// `xs`, the lines holding `offs[i]` for `i` in `lines`.
#[derive(Clone, Copy)]
struct Prefetch {
    base: *const f32,
    xs: usize,
    rows: usize,
    offs: [usize; 4],
    lines: (usize, usize),
}

impl Prefetch {
    const NONE: Prefetch = Prefetch { base: core::ptr::null(), xs: 0, rows: 0, offs: [0; 4], lines: (0, 0) };

    /// Prefetches the lines of row `r` (if `r < rows`).
    #[inline(always)]
    fn row(&self, r: usize) {
        if r < self.rows {
            for &o in &self.offs[self.lines.0..self.lines.1] {
                // Address arithmetic only (a prefetch reads nothing): `wrapping_add`.
                prefetch_l2(self.base.wrapping_add(r * self.xs + o));
            }
        }
    }
}

impl WithSimd for Packed<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let lanes = S::F32_LANES;
        // Register tile: 8 x 3 vectors on AVX-512 (32 registers), 6 x 2 on AVX2 (16).
        let (ob, pv) = if lanes >= 16 { (OB, PV) } else { (OB_AVX2, PV_AVX2) };
        debug_assert!(pv * lanes <= PANEL_MAX && self.len >= pv * lanes);
        let mut panel = Panel([0.0; KC * PANEL_MAX]);
        // Near-equal channel blocks of at most `kc_max` rows of `pv x lanes` pixels.
        let kc_max = KC * PANEL_MAX / (pv * lanes);
        let kc = self.c.div_ceil(self.c.div_ceil(kc_max));
        let blocks = self.k.div_ceil(ob);
        // The panel after pixel `p < len`: `(first pixel, vectors)`.
        let panel_at = |p: usize| {
            let rem = self.len - p;
            if rem >= pv * lanes {
                (p, pv)
            } else {
                let v = rem.div_ceil(lanes);
                (self.len - v * lanes, v)
            }
        };
        let mut p = 0;
        while p < self.len {
            let (p0, nv) = panel_at(p);
            let mut k0 = 0;
            while k0 < self.c {
                let kn = (self.c - k0).min(kc);
                // The block packed next, whose rows the tiles prefetch.
                let next = if k0 + kn < self.c {
                    Some((p0, nv, k0 + kn))
                } else if p0 + nv * lanes < self.len {
                    let (np, nnv) = panel_at(p0 + nv * lanes);
                    Some((np, nnv, 0))
                } else {
                    None
                };
                for b in 0..blocks {
                    // On AVX2 no prefetch: the reduce ran 15-30% slower with it (even with
                    // one tile per line), and as fast as `gemm` or faster without.
                    let pf = next.filter(|_| lanes >= 16).map_or(Prefetch::NONE, |(np, nnv, nk)| {
                        let last = nnv * lanes - 1;
                        // The first float of each 64-byte line the next panel's row spans
                        // lies within 16 floats of one of the first `n` of these (distinct:
                        // 0, the multiples of 16 below `last`, then `last`; 2 for AVX2's
                        // 16-float panels, 4 for AVX-512's 48).
                        let offs = [0, 16.min(last), 32.min(last), last];
                        let n = 1 + last.div_ceil(16);
                        // With `n` or more tiles, tile b < n takes line b; else the first
                        // tile takes all.
                        let lines = if blocks >= n {
                            (b.min(n), (b + 1).min(n))
                        } else if b == 0 {
                            (0, n)
                        } else {
                            (0, 0)
                        };
                        Prefetch {
                            base: self.x.as_ptr().wrapping_add(self.x_off + nk * self.xs + np),
                            xs: self.xs,
                            rows: (self.c - nk).min(kc),
                            offs,
                            lines,
                        }
                    });
                    let t = Tile { o0: b * ob, p0, k0, kn, pf };
                    // SAFETY: `kn <= kc_max` rows of `nv * lanes <= pv * lanes` floats fit
                    // the panel (`kc_max * pv * lanes <= KC * PANEL_MAX`); the pixels
                    // `p0..p0 + nv * lanes` lie in the run (`panel_at`); `b * ob < k`.
                    unsafe {
                        if ob == OB {
                            self.tile_of::<S, OB>(simd, &mut panel.0, t, nv, b == 0);
                        } else {
                            self.tile_of::<S, OB_AVX2>(simd, &mut panel.0, t, nv, b == 0);
                        }
                    }
                }
                k0 += kn;
            }
            p = p0 + nv * lanes;
        }
    }
}

/// Where a register tile of `B` output channels works: channels `o0..o0 + B` (those below
/// `k`), pixels `p0..p0 + N x lanes`, input channels `k0..k0 + kn`, prefetching `pf`.
#[derive(Clone, Copy)]
struct Tile {
    o0: usize,
    p0: usize,
    k0: usize,
    kn: usize,
    pf: Prefetch,
}

impl Packed<'_> {
    /// [`Packed::tile`] with `B` output channels and `nv` (1 to `PV`) vectors of pixels,
    /// packing the block if `first`.
    ///
    /// # Safety
    /// As [`Packed::tile`] says, with `N = nv`.
    #[inline(always)]
    unsafe fn tile_of<S: Simd, const B: usize>(
        &self,
        simd: S,
        panel: &mut [f32],
        t: Tile,
        nv: usize,
        first: bool,
    ) {
        // SAFETY: as the caller guarantees.
        unsafe {
            match (nv, first) {
                (3, true) => self.tile::<S, B, 3, true>(simd, panel, t),
                (3, false) => self.tile::<S, B, 3, false>(simd, panel, t),
                (2, true) => self.tile::<S, B, 2, true>(simd, panel, t),
                (2, false) => self.tile::<S, B, 2, false>(simd, panel, t),
                (_, true) => self.tile::<S, B, 1, true>(simd, panel, t),
                (_, false) => self.tile::<S, B, 1, false>(simd, panel, t),
            }
        }
    }

    /// The register tile `t`: `B x N` accumulators, loaded from the output if `k0 > 0`
    /// (else zero), plus the product of the weights with the block's input rows: read from
    /// the input and copied into `panel` (rows of `N x lanes` floats) if `PACK`, else read
    /// from `panel`; then stored.
    ///
    /// # Safety
    /// `t.kn x N x lanes <= KC x PANEL_MAX`, `N <= PV`, pixels `t.p0..t.p0 + N x lanes`
    /// inside the run, `t.o0 < k`, `t.k0 + t.kn <= c`; unless `PACK`, `panel` holds the
    /// block's rows (copied by the `PACK` tile of the same block).
    #[inline(always)]
    unsafe fn tile<S: Simd, const B: usize, const N: usize, const PACK: bool>(
        &self,
        simd: S,
        panel: &mut [f32],
        t: Tile,
    ) {
        let lanes = S::F32_LANES;
        let pitch = N * lanes;
        let Tile { o0, p0, k0, kn, pf } = t;
        debug_assert!(kn * pitch <= panel.len() && p0 + pitch <= self.len && o0 < self.k);
        let ob = (self.k - o0).min(B);
        let zero = simd.splat_f32s(0.0);
        let panel = panel.as_mut_ptr();
        // SAFETY (pointer arithmetic): channel `o0 < k`, pixel `p0 < len`, channel
        // `k0 <= c`: in the run, by the caller and the run's invariant.
        let (y, src) =
            unsafe { (self.y.add(o0 * self.ys + p0), self.x.as_ptr().add(self.x_off + k0 * self.xs + p0)) };
        // Channels past `ob` repeat the last one (computed, never stored).
        let mut wrow = [0usize; B];
        for (o, r) in wrow.iter_mut().enumerate() {
            *r = self.w_off + (o0 + o.min(ob - 1)) * self.ws0 + k0 * self.ws1;
        }
        // Loops of constant count with a test inside (not `take(ob)`): unrolled, they keep
        // the accumulators in registers.
        let mut acc = [[zero; N]; B];
        if k0 > 0 {
            for (o, a) in acc.iter_mut().enumerate() {
                if o < ob {
                    for (j, v) in a.iter_mut().enumerate() {
                        // SAFETY: channel `o0 + o < k`, pixels inside the run.
                        *v = unsafe { y.add(o * self.ys + j * lanes).cast::<S::f32s>().read_unaligned() };
                    }
                }
            }
        }
        for i in 0..kn {
            pf.row(i);
            let mut xv = [zero; N];
            for (j, v) in xv.iter_mut().enumerate() {
                // SAFETY: `i < kn`, `(j + 1) lanes <= pitch`: inside the `kn x pitch`
                // panel, and (PACK) input channel `k0 + i < c`, pixels inside the run;
                // unaligned accesses of `lanes` floats.
                unsafe {
                    let at = panel.add(i * pitch + j * lanes).cast::<S::f32s>();
                    if PACK {
                        *v = src.add(i * self.xs + j * lanes).cast::<S::f32s>().read_unaligned();
                        at.write_unaligned(*v);
                    } else {
                        *v = at.read_unaligned();
                    }
                }
            }
            for (o, a) in acc.iter_mut().enumerate() {
                debug_assert!(wrow[o] + i * self.ws1 < self.w.len());
                // SAFETY: channel `o0 + min(o, ob - 1) < k`, input channel `k0 + i < c`:
                // inside `w` by the run's invariant.
                let wv = simd.splat_f32s(unsafe { *self.w.as_ptr().add(wrow[o] + i * self.ws1) });
                for j in 0..N {
                    a[j] = simd.mul_add_e_f32s(wv, xv[j], a[j]);
                }
            }
        }
        for i in kn..pf.rows {
            pf.row(i);
        }
        for (o, a) in acc.iter().enumerate() {
            if o < ob {
                for (j, v) in a.iter().enumerate() {
                    // SAFETY: as for the loads above.
                    unsafe { y.add(o * self.ys + j * lanes).cast::<S::f32s>().write_unaligned(*v) };
                }
            }
        }
    }
}
