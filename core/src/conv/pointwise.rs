//! Pointwise (1x1) convolution: a GEMM reading the input in place, no im2col.
//!
//! Per group, with output pixels `p`: `Y[o, p] = sum_c W[o, c] * X[c, p]`. In NCHW the
//! pixels of a channel are contiguous (`Y = W X`); in NHWC the channels of a pixel are
//! (`Y^T = X^T W^T`); it is the same product with other strides, and `gemm` takes any.
//! A stride `S > 1` subsamples the input: pixels along a row stay at one stride (`S`
//! elements apart), so each output row is one GEMM; when the subsampled rows also line up
//! (stride 1, or a strided view) a GEMM spans rows or the whole batch. No workspace.
//! Threads split the output pixels, or, below `CHANNEL_SPLIT_MAX_PIXELS` pixels, the
//! output channels (each thread then applies the epilogue to its own channels).
//!
//! NHWC-like layers (channels contiguous in input, filter rows and output) of at most 128
//! output pixels and 512+ input channels per group (ResNet's and MobileNet's last
//! stages) skip `gemm` for [`Dots`]: dot products along the channels, 4 pixels x 6 output
//! channels a register tile (see [`dots_applies`]).
//!
//! On AVX-512 and AVX2 (each thread over its share of the pixels or channels), NCHW-like
//! runs (pixels contiguous in input and output) skip `gemm` for [`Packed`] (AVX-512: long
//! runs of reductions; AVX2: any run, up to 1 MiB of weights): input panels of 32 pixels
//! x at most 256 channels (AVX2: three panels of 16 pixels x at most 170 channels) copied
//! into a 32 KiB buffer on the stack, multiplied by register tiles of 8 to 12 output
//! channels x 2 vectors (AVX2: 6 x 2; see [`packed_applies`] for the rules and
//! measurements). On AVX-512, runs of at least `WPACK_MIN_RUN` pixels with at most
//! `WPACK_FLOATS` weights per group first copy the weights into a 128 KiB stack buffer
//! in the order the tiles read them.

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
/// Threads split the output channels rather than the pixels below this many pixels, when
/// each thread gets at least `MIN_WORKER_CHANNELS` channels of a group. Two threads on
/// GoogLeNet's 480 -> 192 channels of 14 x 14 (2026-11-30, AVX-512, alternating runs):
/// NHWC medians 0.117-0.120 ms against 0.126-0.132 split by pixels, NCHW alike
/// (0.127-0.132 against 0.126-0.132); 512 -> 512 of 14 x 14 NHWC 0.37-0.38 against 0.44;
/// NCHW 512 -> 128 and 512 -> 512 within noise. At 28 x 28 (784 pixels) NHWC was 10-20%
/// slower split by channels: left to the pixels.
const CHANNEL_SPLIT_MAX_PIXELS: usize = 512;
/// Fewest output channels per thread when threads split the channels.
const MIN_WORKER_CHANNELS: usize = 32;

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
    // One worker with several threads: `gemm` splits each product itself, so the packed
    // kernel (one thread per run) stays out.
    let gemm_threads = !matches!(par, gemm::Parallelism::None);

    let y_out = OutPtr::new(&mut y);
    let (xd, wd) = (x.data(), w.data());
    // A run of `len` pixels of `k` output channels through [`Packed`]: the input from
    // `x_off`, the filter rows from `w_off`, the outputs from `y` (the caller states the
    // run's invariant).
    let packed = |x_off: usize, w_off: usize, y: *mut f32, k: usize, len: usize| {
        let (xs, ws0, ws1, ys) = (xs[1], fs[0], fs[1], ys[1]);
        exec.dispatch(Packed { x: xd, x_off, xs, w: wd, w_off, ws0, ws1, y, ys, k, c: cg, len });
    };
    // Threads split the output channels (at least `MIN_WORKER_CHANNELS` each) for the dot
    // products, and for `gemm` below `CHANNEL_SPLIT_MAX_PIXELS` pixels; each worker then
    // computes its channels of every group for all pixels (a few hundred: one product per
    // run) and applies the epilogue to them.
    let dots = dots_applies(xs[1], fs[1], ys[1], total, cg);
    if dots || (workers > 1 && total < CHANNEL_SPLIT_MAX_PIXELS && kg >= MIN_WORKER_CHANNELS * workers) {
        let workers =
            if dots && threads > 1 { threads.min(kg / MIN_WORKER_CHANNELS).max(1) } else { workers };
        split(workers, kg, &mut [], |k0, k1, _| {
            for grp in 0..groups {
                let (c0, c1) = (grp * kg + k0, grp * kg + k1);
                let w_off = w.offset(c0, 0, 0, 0);
                px.runs(0, total, join, |_, n, oh, ow, run| {
                    // In range: as for the pixel split below.
                    let x_off = x.offset(n, grp * cg, oh * sh, ow * sw);
                    let y_at = y_out.at(n, c0, oh, ow);
                    if dots {
                        // The run's invariant (see `Dots`): its pixels' `cg` channels from
                        // `x_off` (channel stride 1, pixel stride `xstep`) lie inside `x`;
                        // filter rows `c0..c1` from `w_off` (row stride `fs[0]`, channel
                        // stride 1) inside `w`; output channels `c0..c1` of its pixels
                        // (channel stride 1, pixel stride `ystep`) inside `y`, this
                        // worker's alone.
                        exec.dispatch(Dots {
                            x: xd,
                            x_off,
                            xp: xstep,
                            w: wd,
                            w_off,
                            ws0: fs[0],
                            y: y_at,
                            yp: ystep,
                            k: k1 - k0,
                            c: cg,
                            len: run,
                        });
                        return;
                    }
                    if packed_applies(exec.isa(), xstep, ystep, run, cg, k1 - k0) {
                        // The run's invariant (see `Packed`): its pixels' `cg` input
                        // channels from `x_off` (pixel stride 1) lie inside `x`, filter
                        // rows `c0..c1` from `w_off` inside `w`, output channels `c0..c1`
                        // of its pixels (pixel stride 1) inside `y`, this worker's alone.
                        packed(x_off, w_off, y_at, k1 - k0, run);
                        return;
                    }
                    let lhs = Mat { ptr: wd[w_off..].as_ptr(), rs: w_m.0, cs: w_m.1 };
                    let dst = Mat { ptr: y_at, rs: y_m.0, cs: y_m.1 };
                    let rhs = Mat { ptr: xd[x_off..].as_ptr(), rs: x_m.0, cs: x_m.1 };
                    // SAFETY: dst covers output channels `c0..c1` (inside the group's
                    // `grp*kg..(grp+1)*kg`) of output pixels `q..q+run`, at one stride
                    // (`join`) inside `y`; the channels are this worker's alone, so the
                    // elements alias nothing another worker writes; rhs covers channels
                    // `grp*cg..(grp+1)*cg` of the input pixels they read, at one stride
                    // inside `x`; lhs covers rows `c0..c1` of the filter inside `w`.
                    unsafe { matmul(k1 - k0, run, cg, dst, lhs, rhs, gemm::Parallelism::None) };
                });
                epilogue_tile(exec, y_out, layout, epilogue, 0..total, c0..c1);
            }
        });
        return Ok(());
    }
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
                    if !gemm_threads && packed_applies(exec.isa(), xstep, ystep, run, cg, kg) {
                        // The run's invariant: the group's `cg` input channels of the
                        // `run` pixels (unit stride) lie inside `x` from `x_off`, its
                        // `kg x cg` filter block inside `w` from `w_off`, and its outputs
                        // (unit stride) are this worker's, inside `y`.
                        packed(x_off, w_off, y_at, kg, run);
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
            epilogue_tile(exec, y_out, layout, epilogue, t0..t1, 0..out.c);
            t0 = t1;
        }
    });
    Ok(())
}

/// Pixel vectors of a packed panel: 2 (AVX2: 16 pixels, AVX-512: 32).
const PV: usize = 2;
/// Floats of the panel buffer (32 KiB): `KC_WIDE x 32` on AVX-512, up to `SUB` panels of
/// `kc x 16` on AVX2.
const PANEL_FLOATS: usize = 8192;
/// Most input channels per packed AVX-512 panel: `KC_WIDE x 32` floats (32 KiB).
const KC_WIDE: usize = 256;
/// Panels of 16 pixels that one AVX2 copy fills (48 pixels, 192 bytes of each input
/// row, so at most 170 channels a block): each tile then multiplies its weights, read
/// once into L1, by the three panels. Intel Xeon (2026-12-01, AVX2 path, convbench
/// alternating binaries, one thread, medians): ResNet's reduce 256 -> 64 of 56 x 56
/// 0.952-0.958 ms against 1.012-1.044 copying one panel at a time inside the first tile
/// (0.996 with 2 panels a copy, 0.98 with 4, 0.99 with 6; 1.01 with 2 panels of 128
/// channels); 128 -> 64 of 56 x 56 0.463 against 0.50.
const SUB: usize = 3;
/// Output channels per AVX2 register tile: `OB x PV` accumulators, 12 of AVX2's 16 registers
/// (the 2 input vectors and the broadcast weight take 3 more; with 4 x 3 tiles, all 16,
/// the compiler spilled and the kernel ran at half `gemm`'s speed).
const OB: usize = 6;
/// Most output channels per AVX-512 register tile (`OB_WIDE x PV`, 24 of its 32
/// registers); the output channels are shared out in near-equal tiles of 8 to 12.
const OB_WIDE: usize = 12;
/// Most weights (`k x c` of a group, 1 MiB) for which [`Packed`] runs on AVX2: the
/// panels read all of them once per 48 pixels.
const PACKED_MAX_WEIGHTS: usize = 1 << 18;
/// Fewest pixels in a run that [`Packed`] takes on AVX-512 (4 panels).
const PACKED_MIN_RUN_WIDE: usize = 128;

/// Whether a run of `len` pixels at unit input and output pixel strides, `c` input and
/// `k` output channels, goes through [`Packed`] on `isa` rather than through `gemm`:
/// - only NCHW-like runs (pixels contiguous in input and output): there `gemm` reads the
///   input rows in place, one channel per row 4 x H x W bytes apart (ResNet's 1x1
///   reduce: 256 rows 12.5 KB apart per tile), which misses the TLB and aliases in L1;
///   NHWC runs (channels contiguous) already suit `gemm`;
/// - on AVX-512 (tiles of 8 to 12 output channels x 2 vectors, the next block prefetched
///   into L2), runs of at least `PACKED_MIN_RUN_WIDE` pixels of reductions by 2 or more
///   (`c >= 2 k`). Intel Xeon (2026-12-01, 2 MB L2, 48 KB L1D, quiet host, convbench
///   alternating binaries, medians): GoogLeNet's 480 -> 192 of 14 x 14 0.1806-0.1809 ms
///   against 0.186-0.188 (81% of the FMA peak against 79%), ResNet's reduce 256 -> 64 of
///   56 x 56 0.546-0.550 against 0.555, 512 -> 128 of 28 x 28 0.498-0.502 against
///   0.528-0.531; 128 -> 128 of 28 x 28 even; behind on the expansion 64 -> 256 (0.54-0.55
///   against 0.49), 512 -> 512 of 14 x 14 (0.54 against 0.52-0.56), 832 -> 256 of 7 x 7
///   (0.127-0.129 against 0.122) and 1024 -> 1024 of 7 x 7 (0.78-0.84 against 0.60-0.61,
///   the panels re-reading 4 MB of weights). Runs of 1024+ pixels now pack the weights
///   first (`WPACK_MIN_RUN`): the reduce then takes 0.516-0.523 ms. An
///   earlier 8 x 3 version had lost to `gemm` on every shape on this machine (noisy
///   host) and won 5% on the reduce on Sapphire Rapids;
/// - on AVX2 (6 x 2 tiles over 3 panels a copy, see `SUB`), runs of any length the
///   kernel takes (16 pixels) with at most `PACKED_MAX_WEIGHTS` weights. Intel Xeon
///   (2026-12-01, `gemm` built without `gemm-avx512`, convbench alternating binaries,
///   medians, ms): one thread, the reduce 256 -> 64 of 56 x 56 0.947-0.948 against
///   `gemm`'s 1.141-1.142 (82% of the AVX2 peak against 68%), the expansion 64 -> 256
///   0.871-0.872 against 0.962-0.968, 256 -> 128 of 56 x 56 1.815-1.820 against
///   2.098-2.109, 512 -> 128 of 28 x 28 0.872-0.877 against 0.954-0.955, GoogLeNet's
///   480 -> 192 of 14 x 14 0.299 against 0.341-0.342, 256 -> 1024 of 14 x 14 0.854-0.857
///   against 0.945-0.950, 1024 -> 256 of 7 x 7 0.253-0.257 against 0.291; behind with
///   4 MiB of weights (512 -> 2048 and 2048 -> 512 of 7 x 7: 1.20-1.29 against 1.17);
///   two threads, the reduce 0.459-0.460 against 0.517-0.519, the expansion 0.430
///   against 0.463-0.464, 256 -> 128 of 56 x 56 0.892-0.897 against 1.014-1.020,
///   GoogLeNet's 0.156 against 0.178, 256 -> 1024 of 14 x 14 0.428-0.429 against 0.477;
/// - on AVX-512 and AVX2 whatever the threads, each over its share of the pixels
///   (packing its own panels and weights) or, below `CHANNEL_SPLIT_MAX_PIXELS`, its share
///   of the output channels; but not where one worker takes all the pixels while
///   `gemm` could use the threads (7 x 7 planes on AVX2: even on two threads). Two
///   threads on AVX-512 (2026-12-01, same machine, medians): the reduce 0.295-0.299 ms
///   against `gemm`'s 0.322-0.337, 256 -> 128 of 56 x 56 0.561-0.575 against
///   0.596-0.611, 512 -> 128 of 28 x 28 0.308-0.318 against 0.314-0.333; GoogLeNet's
///   480 -> 192 of 14 x 14 0.113-0.118 against 0.118-0.128, 512 -> 128 of 14 x 14
///   0.082-0.085 against 0.087-0.094 (96 and 64 channels a thread); not on NEON or
///   scalar code.
fn packed_applies(isa: Isa, xstep: usize, ystep: usize, len: usize, c: usize, k: usize) -> bool {
    let fits = match isa {
        Isa::Avx2 => len >= PV * 8 && k * c <= PACKED_MAX_WEIGHTS,
        Isa::Avx512 => len >= PACKED_MIN_RUN_WIDE && c >= 2 * k,
        _ => return false,
    };
    xstep == 1 && ystep == 1 && fits
}

/// A 64-byte aligned panel buffer.
#[repr(C, align(64))]
struct Panel([f32; PANEL_FLOATS]);

/// Most weights (`k x c`, one group) [`Packed`] packs first: a buffer of 128 KiB on the
/// stack (with the 32 KiB panel, 160 KiB in all).
const WPACK_FLOATS: usize = 32768;
/// Fewest pixels in a run for which [`Packed`] packs the weights first (AVX-512 only).
///
/// Read in place, a tile's weights come from `ob` filter rows, `ob` lines per 16 input
/// channels, which the next panel reads again from L2; packed (`[channel block][tile]
/// [input channel][ob]`) they are one sequential stream, 48 bytes per input channel.
/// The copy costs about 1.4% of the reduce's time in a profile (the filter comes cold
/// from L3), so only long runs pay it back. Intel Xeon with AVX-512 (2026-12-01, convbench,
/// alternating binaries, one thread, minima of noisy medians; medians where the host was
/// quiet): ResNet's reduce 256 -> 64 of 56 x 56 0.516-0.523 ms against 0.528-0.541
/// (80% of the FMA peak against 76-78%), 256 -> 128 of 56 x 56 0.966-0.981 against
/// 0.999-1.013 (85% against 82%), 128 -> 32 of 56 x 56 even; behind at 784 pixels
/// (256 -> 64 and 192 -> 64 of 28 x 28: 0.123 and 0.093 ms against 0.120 and 0.090).
/// Not on AVX2: its 6 x 2 tiles with packed weights ran 256 -> 128 and 128 -> 128 of
/// 56 x 56 7-8% slower (2.01 against 1.74-1.79 ms, 1.01 against 0.88-0.90, minima).
const WPACK_MIN_RUN: usize = 1024;

/// A 64-byte aligned buffer of packed weights.
#[repr(C, align(64))]
struct WeightBuf([f32; WPACK_FLOATS]);

/// One run of `len >= PV x lanes` consecutive output pixels of `k` output channels of one
/// group, pixels contiguous in input and output, computed from packed input panels.
///
/// Panel by panel (`PV` vectors of pixels; the last one of 1 to that many vectors ends at
/// the run's end, overlapping its predecessor), input channels in near-equal blocks of at
/// most `KC_WIDE` (AVX2: as many as `SUB` panels fit in the buffer): the first tile of
/// output channels copies the block's input rows into an L1-resident buffer
/// (`[channel][pixel]`) as it multiplies them, and on AVX-512 prefetches the rows of the
/// block packed next into L2; the others read the buffer. On AVX2 a plain loop first
/// copies `SUB` panels at once (`[panel][channel][pixel]`), each tile then runs over all
/// of them ([`Packed::panels_copied`]), and only the run's last pixels (fewer than `SUB`
/// panels) go panel by panel. Output channels go in tiles of `OB` (AVX-512: near-equal
/// tiles of at most `OB_WIDE`). Each tile holds `channels x vectors` accumulators in
/// registers, stored for the first channel block and added to the stored sums for the
/// others; so an overlapping panel rewrites its predecessor's pixels with the same sums
/// (its first block stores, it does not add). On AVX-512, runs of at least
/// `WPACK_MIN_RUN` pixels with at most `WPACK_FLOATS` weights first copy them tile by
/// tile ([`Packed::pack_weights`]), and the tiles read that copy. Written for AVX2's 8
/// and AVX-512's 16 lanes (`packed_applies`); any other width computes the same.
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

impl WithSimd for Packed<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let lanes = S::F32_LANES;
        let wide = lanes >= 16;
        // Register tiles of up to 12 x 2 vectors on AVX-512, 6 x 2 on AVX2.
        let pv = PV;
        debug_assert!(pv * lanes * KC_WIDE <= PANEL_FLOATS && self.len >= pv * lanes);
        // Near-equal channel blocks of at most `kc_max` rows of `pv x lanes` pixels.
        let kc_max = if wide { KC_WIDE } else { PANEL_FLOATS / (SUB * pv * lanes) };
        let kc = self.c.div_ceil(self.c.div_ceil(kc_max));
        // Output channel tiles: `blocks` of `base` or `base + 1` channels (the first
        // `extra`), at most `OB_WIDE` on AVX-512; `OB` on AVX2 (the last one narrower).
        let ob_max = if wide { OB_WIDE } else { OB };
        let blocks = self.k.div_ceil(ob_max);
        let (base, extra) = if wide { (self.k / blocks, self.k % blocks) } else { (OB, 0) };
        let plan = Plan { kc, blocks, base, extra };
        if wide && self.k * self.c <= WPACK_FLOATS && self.len >= WPACK_MIN_RUN {
            let mut wb = WeightBuf([0.0; WPACK_FLOATS]);
            self.pack_weights(&mut wb.0, plan);
            self.panels(simd, plan, Some(&wb.0));
        } else {
            self.panels(simd, plan, None);
        }
    }
}

/// How [`Packed`] blocks a run: input channels in blocks of `kc` (the last shorter),
/// output channels in `blocks` tiles of `base` or `base + 1` channels (the first `extra`;
/// on AVX2 tiles of `OB`, the last narrower).
#[derive(Clone, Copy)]
struct Plan {
    kc: usize,
    blocks: usize,
    base: usize,
    extra: usize,
}

impl Plan {
    /// Output channels `o0..o0 + ob` of tile `b`, of `k`.
    fn tile(&self, b: usize, k: usize) -> (usize, usize) {
        let o0 = b * self.base + b.min(self.extra);
        (o0, (self.base + usize::from(b < self.extra)).min(k - o0))
    }
}

impl Packed<'_> {
    /// Copies the weights into `buf` (`k x c` floats at most) in the order the tiles
    /// read them: channel block by channel block, tile by tile, input channel by input
    /// channel, the tile's `ob` output channels contiguous. The tile of channels `o0..`
    /// in the block of input channels `k0..k0 + kn` starts at `k0 x k + o0 x kn`.
    fn pack_weights(&self, buf: &mut [f32], plan: Plan) {
        let mut k0 = 0;
        while k0 < self.c {
            let kn = (self.c - k0).min(plan.kc);
            for b in 0..plan.blocks {
                let (o0, ob) = plan.tile(b, self.k);
                let dst = &mut buf[k0 * self.k + o0 * kn..][..kn * ob];
                let src = self.w[self.w_off + o0 * self.ws0 + k0 * self.ws1..].as_ptr();
                for o in 0..ob {
                    for i in 0..kn {
                        // SAFETY: output channel `o0 + o < k`, input channel `k0 + i < c`:
                        // inside `w` by the run's invariant.
                        dst[i * ob + o] = unsafe { *src.add(o * self.ws0 + i * self.ws1) };
                    }
                }
            }
            k0 += kn;
        }
    }

    /// Where the tile of output channels `o0..o0 + ob` finds its weights for the block of
    /// input channels `k0..k0 + kn`: `(base, output channel step, input channel step)`,
    /// in `wpack` (packed by [`Packed::pack_weights`]) if given, else in the filter.
    #[inline(always)]
    fn tile_weights(
        &self,
        wpack: Option<&[f32]>,
        o0: usize,
        ob: usize,
        k0: usize,
        kn: usize,
    ) -> (*const f32, usize, usize) {
        match wpack {
            Some(buf) => (buf[k0 * self.k + o0 * kn..].as_ptr(), 1, ob),
            None => (self.w[self.w_off + o0 * self.ws0 + k0 * self.ws1..].as_ptr(), self.ws0, self.ws1),
        }
    }

    /// The run, panel by panel (see [`Packed`]), with the weights read from `wpack`
    /// (packed by [`Packed::pack_weights`]) if given, else from the filter in place.
    #[inline(always)]
    fn panels<S: Simd>(&self, simd: S, plan: Plan, wpack: Option<&[f32]>) {
        let lanes = S::F32_LANES;
        let pv = PV;
        let wide = lanes >= 16;
        let Plan { kc, blocks, .. } = plan;
        let mut panel = Panel([0.0; PANEL_FLOATS]);
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
            if !wide && self.len - p >= SUB * pv * lanes {
                // SAFETY: pixels `p..p + SUB x pv x lanes` lie in the run.
                unsafe { self.panels_copied(simd, plan, wpack, &mut panel.0, p) };
                p += SUB * pv * lanes;
                continue;
            }
            let (p0, nv) = panel_at(p);
            let mut k0 = 0;
            while k0 < self.c {
                let kn = (self.c - k0).min(kc);
                // The block packed next: the next channels of this panel, or the first of
                // the next panel (prefetched on AVX-512 only).
                let (pf_p, pf_k) = if k0 + kn < self.c { (p0, k0 + kn) } else { (p0 + nv * lanes, 0) };
                let pf_rows = if wide && pf_p < self.len { (self.c - pf_k).min(kc) } else { 0 };
                let pf = self.x.as_ptr().wrapping_add(self.x_off + pf_k * self.xs + pf_p);
                for b in 0..blocks {
                    let (o0, ob) = plan.tile(b, self.k);
                    // The tile's weight for output channel `o0 + o` and input channel
                    // `k0 + i`: at `o x wo + i x wi` from `wb`.
                    let (wb, wo, wi) = self.tile_weights(wpack, o0, ob, k0, kn);
                    let t = Tile { o0, ob, wb, wo, wi, pf, pf_rows, p0, k0, kn };
                    // SAFETY: `kn <= kc_max` rows of `nv * lanes <= pv * lanes` floats fit
                    // the panel (`kc_max * pv * lanes <= PANEL_FLOATS`); the pixels
                    // `p0..p0 + nv * lanes` lie in the run (`panel_at`); `o0 < k`.
                    unsafe { self.tile_of::<S>(simd, &mut panel.0, t, nv, b == 0) };
                }
                k0 += kn;
            }
            p = p0 + nv * lanes;
        }
    }

    /// `SUB` panels of `PV` vectors from pixel `p` (AVX2): each channel block's rows copied
    /// (`[panel][channel][pixel]`) by a plain loop, then every tile run over the panels,
    /// its weights read once from L2 and then from L1.
    ///
    /// # Safety
    /// Pixels `p..p + SUB x PV x lanes` lie in the run; `plan.kc x SUB x PV x lanes <=
    /// PANEL_FLOATS`.
    #[inline(always)]
    unsafe fn panels_copied<S: Simd>(
        &self,
        simd: S,
        plan: Plan,
        wpack: Option<&[f32]>,
        panel: &mut [f32],
        p: usize,
    ) {
        let lanes = S::F32_LANES;
        let pitch = PV * lanes;
        let mut k0 = 0;
        while k0 < self.c {
            let kn = (self.c - k0).min(plan.kc);
            debug_assert!(SUB * kn * pitch <= panel.len());
            let dst = panel.as_mut_ptr();
            for i in 0..kn {
                // SAFETY: input channel `k0 + i < c`, pixels `p..p + SUB x pitch` in the run.
                let src = unsafe { self.x.as_ptr().add(self.x_off + (k0 + i) * self.xs + p) };
                for s in 0..SUB {
                    for j in 0..PV {
                        // SAFETY: as above; the panel holds `SUB x kn x pitch` floats.
                        unsafe {
                            let v = src.add(s * pitch + j * lanes).cast::<S::f32s>().read_unaligned();
                            dst.add(s * kn * pitch + i * pitch + j * lanes)
                                .cast::<S::f32s>()
                                .write_unaligned(v);
                        }
                    }
                }
            }
            for b in 0..plan.blocks {
                let (o0, ob) = plan.tile(b, self.k);
                let (wb, wo, wi) = self.tile_weights(wpack, o0, ob, k0, kn);
                for s in 0..SUB {
                    let t = Tile {
                        o0,
                        ob,
                        wb,
                        wo,
                        wi,
                        pf: core::ptr::null(),
                        pf_rows: 0,
                        p0: p + s * pitch,
                        k0,
                        kn,
                    };
                    // SAFETY: the panel `s` holds the block's rows; pixels in the run.
                    unsafe { self.tile_of::<S>(simd, &mut panel[s * kn * pitch..], t, PV, false) };
                }
            }
            k0 += kn;
        }
    }
}

/// Where a register tile works: output channels `o0..o0 + ob`, pixels
/// `p0..p0 + N x lanes`, input channels `k0..k0 + kn`.
#[derive(Clone, Copy)]
struct Tile {
    o0: usize,
    ob: usize,
    /// The weight of output channel `o0 + o` and input channel `k0 + i` is at
    /// `wb + o x wo + i x wi` (in the filter, or in the packed weights).
    wb: *const f32,
    wo: usize,
    wi: usize,
    /// The first input row of the block packed next (prefetched into L2 by the packing
    /// tile), and its row count (0: none).
    pf: *const f32,
    pf_rows: usize,
    p0: usize,
    k0: usize,
    kn: usize,
}

impl Packed<'_> {
    /// [`Packed::tile`] with `nv` (1 to `PV`) vectors of pixels and `t.ob` output channels
    /// (on AVX-512 a tile of exactly that many, 8 to 12; else `OB_WIDE` or `OB`, with the
    /// channels past `t.ob` computed, never stored), packing the block if `first`.
    ///
    /// # Safety
    /// As [`Packed::tile`] says, with `N = nv`.
    #[inline(always)]
    unsafe fn tile_of<S: Simd>(&self, simd: S, panel: &mut [f32], t: Tile, nv: usize, first: bool) {
        macro_rules! tiles {
            ($w:expr; $($b:literal)*) => {
                match (t.ob, nv, first) {
                    $(
                        ($b, 2, true) => self.tile::<S, $b, 2, true>(simd, panel, t),
                        ($b, 2, false) => self.tile::<S, $b, 2, false>(simd, panel, t),
                        ($b, _, true) => self.tile::<S, $b, 1, true>(simd, panel, t),
                        ($b, _, false) => self.tile::<S, $b, 1, false>(simd, panel, t),
                    )*
                    (_, 2, true) => self.tile::<S, $w, 2, true>(simd, panel, t),
                    (_, 2, false) => self.tile::<S, $w, 2, false>(simd, panel, t),
                    (_, _, true) => self.tile::<S, $w, 1, true>(simd, panel, t),
                    (_, _, false) => self.tile::<S, $w, 1, false>(simd, panel, t),
                }
            };
        }
        // SAFETY: as the caller guarantees.
        unsafe {
            if S::F32_LANES >= 16 {
                tiles!(OB_WIDE; 8 9 10 11 12)
            } else {
                tiles!(OB;)
            }
        }
    }

    /// The register tile `t`: `B x N` accumulators, loaded from the output if `k0 > 0`
    /// (else zero), plus the product of the weights with the block's input rows: read from
    /// the input and copied into `panel` (rows of `N x lanes` floats) if `PACK`, else read
    /// from `panel`; then stored.
    ///
    /// # Safety
    /// `t.kn x N x lanes <= panel.len()`, `N <= PV`, pixels `t.p0..t.p0 + N x lanes`
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
        let Tile { o0, ob, p0, k0, kn, .. } = t;
        debug_assert!(kn * pitch <= panel.len() && p0 + pitch <= self.len && o0 < self.k);
        debug_assert!(ob >= 1 && ob <= B && o0 + ob <= self.k);
        let zero = simd.splat_f32s(0.0);
        let panel = panel.as_mut_ptr();
        // SAFETY (pointer arithmetic): channel `o0 < k`, pixel `p0 < len`, channel
        // `k0 <= c`: in the run, by the caller and the run's invariant.
        let (y, src) =
            unsafe { (self.y.add(o0 * self.ys + p0), self.x.as_ptr().add(self.x_off + k0 * self.xs + p0)) };
        // Channels past `ob` repeat the last one (computed, never stored).
        // SAFETY (pointer arithmetic): channel `o0 + min(o, ob - 1) < k`: a weight of the
        // tile (`Tile::wb`).
        let wrow: [*const f32; B] = core::array::from_fn(|o| unsafe { t.wb.add(o.min(ob - 1) * t.wo) });
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
            let mut xv = [zero; N];
            for (j, v) in xv.iter_mut().enumerate() {
                // SAFETY: `i < kn`, `(j + 1) lanes <= pitch`: inside the `kn x pitch`
                // panel, and (PACK) input channel `k0 + i < c`, pixels inside the run;
                // unaligned accesses of `lanes` floats.
                unsafe {
                    let at = panel.add(i * pitch + j * lanes).cast::<S::f32s>();
                    if PACK {
                        if i < t.pf_rows {
                            prefetch_l2(t.pf.wrapping_add(i * self.xs + j * lanes));
                        }
                        *v = src.add(i * self.xs + j * lanes).cast::<S::f32s>().read_unaligned();
                        at.write_unaligned(*v);
                    } else {
                        *v = at.read_unaligned();
                    }
                }
            }
            for (o, a) in acc.iter_mut().enumerate() {
                // SAFETY: channel `o0 + min(o, ob - 1) < k`, input channel `k0 + i < c`:
                // a weight of the tile, inside `w` by the run's invariant or inside the
                // packed weights (`Packed::pack_weights`).
                let wv = simd.splat_f32s(unsafe { *wrow[o].add(i * t.wi) });
                for j in 0..N {
                    a[j] = simd.mul_add_e_f32s(wv, xv[j], a[j]);
                }
            }
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

/// Output channels per [`Dots`] register tile.
const DOT_K: usize = 6;
/// Pixels per [`Dots`] register tile.
const DOT_P: usize = 4;
/// Most output pixels for [`Dots`].
const DOTS_MAX_PIXELS: usize = 128;
/// Fewest input channels per group for [`Dots`]: shorter dot products spend too much
/// of their time summing lanes.
const DOTS_MIN_CHANNELS: usize = 512;

/// Whether the 1x1 goes through [`Dots`] rather than `gemm`: channels contiguous in the
/// input, the filter rows and the output (NHWC with an OHWI or OIHW filter), at most
/// `DOTS_MAX_PIXELS` output pixels, at least `DOTS_MIN_CHANNELS` input channels per group.
/// There `gemm` spent most of its time packing the filter (NHWC ran at half NCHW's
/// speed). Intel Xeon with AVX-512 (2026-12-01), convbench, alternating binaries,
/// medians, one thread: 1024 -> 1024 of 7 x 7 0.75 ms against 1.30 through `gemm`,
/// 512 -> 512 of 7 x 7 0.18 against 0.29, 2048 -> 512 and 512 -> 2048 of 7 x 7 0.83-0.85
/// against 1.30-1.40, 512 -> 512 of 10 x 10 0.36 against 0.43; two threads (splitting the
/// output channels) 0.19-0.42 ms against 0.42-1.50. Not with fewer channels (64 -> 64 of
/// 7 x 7 twice `gemm`'s time, 256 -> 256 even) or more pixels (512 -> 512 of 14 x 14
/// even, GoogLeNet's 480 -> 192 of 14 x 14 1.27x, 512 -> 128 of 28 x 28 1.6x).
fn dots_applies(xc: usize, wc: usize, yc: usize, pixels: usize, c: usize) -> bool {
    xc == 1 && wc == 1 && yc == 1 && pixels <= DOTS_MAX_PIXELS && c >= DOTS_MIN_CHANNELS
}

/// A run of `len` output pixels of `k` output channels of one group, computed as dot
/// products along the input channels, which are contiguous in the input pixels, the
/// filter rows and the output pixels (NHWC).
///
/// Register tiles of `DOT_P` pixels x `DOT_K` output channels hold one vector of partial
/// sums each, summed across lanes at the end; output channels outside, so one tile's
/// `DOT_K` filter rows stay in L1 while the run's pixels stream past them. `gemm`, given
/// the same operands, packs the transposed filter on every call.
///
/// Invariants (checked by the caller, relied on by the unsafe accesses): for pixel
/// `p < len`, input channel `i < c` and output channel `o < k`,
/// `x_off + p * xp + i < x.len()`, `w_off + o * ws0 + i < w.len()`, and `y + p * yp + o`
/// are in range of the output view, distinct, and written by no one else meanwhile.
struct Dots<'a> {
    x: &'a [f32],
    x_off: usize,
    xp: usize,
    w: &'a [f32],
    w_off: usize,
    ws0: usize,
    y: *mut f32,
    yp: usize,
    k: usize,
    c: usize,
    len: usize,
}

impl WithSimd for Dots<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let lanes = S::F32_LANES;
        let heads = self.c / lanes;
        let body = heads * lanes;
        let zero = simd.splat_f32s(0.0);
        debug_assert!(self.len == 0 || self.x_off + (self.len - 1) * self.xp + self.c <= self.x.len());
        debug_assert!(self.k == 0 || self.w_off + (self.k - 1) * self.ws0 + self.c <= self.w.len());
        for o0 in (0..self.k).step_by(DOT_K) {
            let ob = (self.k - o0).min(DOT_K);
            // Channels past `ob` repeat the last one (computed, never stored).
            // SAFETY (pointer arithmetic): output channel `o0 + min(j, ob - 1) < k`: its
            // row lies inside `w` by the run's invariant.
            let wrow: [*const f32; DOT_K] = core::array::from_fn(|j| unsafe {
                self.w.as_ptr().add(self.w_off + (o0 + j.min(ob - 1)) * self.ws0)
            });
            for p0 in (0..self.len).step_by(DOT_P) {
                let pb = (self.len - p0).min(DOT_P);
                // Pixels past `pb` repeat the last one (computed, never stored).
                // SAFETY (pointer arithmetic): pixel `p0 + min(r, pb - 1) < len`: its
                // channels lie inside `x` by the run's invariant.
                let xrow: [*const f32; DOT_P] = core::array::from_fn(|r| unsafe {
                    self.x.as_ptr().add(self.x_off + (p0 + r.min(pb - 1)) * self.xp)
                });
                let mut acc = [[zero; DOT_K]; DOT_P];
                for h in 0..heads {
                    // SAFETY: channels `h * lanes..(h + 1) * lanes <= c` of rows inside
                    // `w` and `x` (above); unaligned reads of plain data.
                    let wv: [S::f32s; DOT_K] = core::array::from_fn(|j| unsafe {
                        wrow[j].add(h * lanes).cast::<S::f32s>().read_unaligned()
                    });
                    for (r, a) in acc.iter_mut().enumerate() {
                        // SAFETY: as above.
                        let xv = unsafe { xrow[r].add(h * lanes).cast::<S::f32s>().read_unaligned() };
                        for j in 0..DOT_K {
                            a[j] = simd.mul_add_e_f32s(xv, wv[j], a[j]);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate().take(pb) {
                    for (j, v) in a.iter().enumerate().take(ob) {
                        let mut sum = simd.reduce_sum_f32s(*v);
                        for i in body..self.c {
                            // SAFETY: channel `i < c` of rows inside `x` and `w` (above).
                            sum += unsafe { *xrow[r].add(i) * *wrow[j].add(i) };
                        }
                        // SAFETY: output channel `o0 + j < k` of pixel `p0 + r < len`: in
                        // range and this worker's alone, by the run's invariant.
                        unsafe { *self.y.add((p0 + r) * self.yp + o0 + j) = sum };
                    }
                }
            }
        }
    }
}
