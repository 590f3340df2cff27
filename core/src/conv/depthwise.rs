//! Depthwise convolution (`groups == in_channels`, any channel multiplier): memory-bound
//! SIMD loops, no workspace.
//!
//! - NHWC 3x3, stride 1 or 2, dilation 1, multiplier 1: per output pixel and vector of
//!   channels, 3 output rows at a time (4 with 32 vector registers; each input vector
//!   loaded once for the output rows it feeds, up to 3 at stride 1 and 2 at stride 2,
//!   one accumulator per output row),
//!   the taps gathered tap-major into a stack tile per 128 channels whatever the filter
//!   layout; blocks inside the input take a loop without bounds checks, edge blocks the
//!   same loop with the padded rows and columns skipped.
//! - NHWC, stride 1, dilation 1, up to 3x3, padded planes of at most 100 pixels whose
//!   input pixels lie a multiple of 4 KiB apart (1024 channels: MobileNet's last 7 x 7
//!   layers): 16 channels at a time copied into a dense zero-padded stack plane, where
//!   the row blocks' taps would all share one L1 set.
//! - NHWC, multiplier 1, otherwise: vectors over channels, a block of `NR` pixels of one
//!   output row per vector of channels.
//!   Weights are loaded as vectors when the filter's output-channel stride is 1 (HWIO),
//!   else gathered once per channel vector and row into a small stack tile (up to 9 taps)
//!   or per tap (larger kernels).
//! - NHWC, multiplier > 1 with output-channel stride 1: the direct kernel's
//!   vectors-over-output-channels path (each group is one input channel).
//! - NCHW, stride 1, dilation 1, up to 3x3, output rows narrower than one vector
//!   (MobileNet's 7 x 7 planes): each plane copied into a zero-padded stack buffer and
//!   computed as one flat run of vectors (output `(oy, ox)` at `oy * pitch + ox`, each
//!   tap a fixed offset), no masks; 1024 x 7 x 7 on AVX2 0.36x the row loop's time.
//! - NCHW 3x3, stride 1, dilation 1, output rows of at least one vector: the taps in
//!   registers for the plane, a block of output rows at a time per column vector, each
//!   input vector loaded once for the up to 3 output rows it feeds: 3 rows, one
//!   accumulator per row (15 live vectors), 0.76-0.79x the stencil's time on 128x56x56 on
//!   AVX2. Rows in the padding are skipped and columns next to it loaded under masks
//!   built once per block.
//! - NCHW, stride 1, dilation 1, other kernels up to 3x3, output rows of at least one
//!   vector: a 2-D stencil per plane. The input rows a window needs are
//!   copied once into a ring of zero-padded stack rows, so every tap is one full
//!   unaligned vector load (no masks at the borders), the taps sit in registers, and
//!   each output vector is stored once (the last of a row overlaps its neighbour instead
//!   of a masked store).
//! - NCHW, column stride 1 otherwise: vectors over the output columns of one plane, the
//!   taps of a 3x3 (up to 9) held in registers for the plane, masked loads at the padded
//!   edges.
//! - NCHW with a larger column stride: a scalar loop whose interior columns skip the
//!   bounds checks.
//! - Anything else: a strided loop that splits each row into edge and interior columns.

#![allow(clippy::needless_range_loop)] // kernels index several register arrays in lockstep

use pulp::{Simd, WithSimd};

use super::direct::{cols_interior, finish_nhwc, generic, lane_mask, load_lanes, store_lanes, Cols, Ctx};
use super::ConvArgs;
use crate::error::{Error, Result, Unsupported};
use crate::geometry::input_coord;
use crate::tensor::{Layout, TensorViewMut};

pub(crate) fn run(args: ConvArgs<'_, '_>, mut y: TensorViewMut<'_, f32>) -> Result<()> {
    if !args.g.is_depthwise() {
        return Err(Error::Unsupported(Unsupported::DepthwiseNeedsGroupsEqualChannels));
    }
    let ctx = Ctx::new(&args, &mut y);
    let o_unit = ctx.sw[0] == 1 || ctx.yd[1] == 1;
    let (exec, layout) = (args.exec, args.layout);
    super::direct::par_slabs(exec, args.g.groups(), layout, ctx, |ctx| match layout {
        Layout::Nhwc if ctx.cog == 1 => exec.dispatch(DwNhwc { c: ctx }),
        Layout::Nhwc if o_unit => super::direct::run_nhwc_oc(exec, ctx),
        Layout::Nchw if ctx.sww == 1 => exec.dispatch(DwNchw { c: ctx }),
        Layout::Nchw => exec.dispatch(DwNchwStrided { c: ctx }),
        _ => generic(exec, ctx, layout),
    });
    Ok(())
}

struct DwNhwc<'a> {
    c: Ctx<'a>,
}

impl WithSimd for DwNhwc<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = &self.c;
        if nhwc_flat_fits::<S>(c) {
            dw_nhwc_flat::<S>(simd, c);
        } else if c.kh == 3 && c.kw == 3 && c.dh == 1 && c.dw == 1 && c.sh == c.sww && c.sh <= 2 {
            if c.sh == 1 {
                dw_nhwc_rows3::<S, 1>(simd, c);
            } else {
                dw_nhwc_rows3::<S, 2>(simd, c);
            }
        } else {
            dw_nhwc::<S, 4>(simd, c, c.kh, c.kw, c.sww);
        }
    }
}

#[inline(always)]
fn dw_nhwc<S: Simd, const NR: usize>(simd: S, c: &Ctx<'_>, kh: usize, kw: usize, sww: usize) {
    let lanes = S::F32_LANES;
    let [nb, ch, oh, ow] = c.yd;
    let [_, _, h, w] = c.xd;
    // Weights not contiguous over channels (OIHW / OHWI) are gathered, when the kernel
    // has at most 9 taps, into a tap-major tile of up to CHUNK channels, once per call
    // and chunk; the chunk's pixels are then swept with channel vectors inside, so each
    // input row is read once per chunk (not once per channel vector).
    let gather = !(c.sw[0] == 1 || ch == 1) && kh * kw <= 9;
    let mut tile = [0.0f32; 9 * CHUNK];
    let mut cc = 0;
    while cc < ch {
        let cn = if gather { (ch - cc).min(CHUNK) } else { ch };
        if gather {
            for ky in 0..kh {
                for kx in 0..kw {
                    let wo = ky * c.sw[2] + kx * c.sw[3];
                    let row = &mut tile[(ky * kw + kx) * CHUNK..][..cn];
                    for (j, t) in row.iter_mut().enumerate() {
                        // SAFETY: weight [cc + j, 0, ky, kx] is in range (cc + j < ch).
                        *t = unsafe { *c.w.add((cc + j) * c.sw[0] + wo) };
                    }
                }
            }
        }
        for n in 0..nb {
            for oy in 0..oh {
                let rows_in = oy * c.sh >= c.pt && oy * c.sh + (kh - 1) * c.dh < h + c.pt;
                let mut ox = 0;
                while ox < ow {
                    let np = (ow - ox).min(NR);
                    let x0 = ox * sww;
                    let x1 = (ox + np - 1) * sww + (kw - 1) * c.dw;
                    let inner = rows_in && np == NR && x0 >= c.pl && x1 < w + c.pl;
                    let mut c0 = cc;
                    while c0 < cc + cn {
                        let nl = (cc + cn - c0).min(lanes);
                        let wt = gather.then(|| &tile[c0 - cc..]);
                        // SAFETY: n, oy, pixels ox..ox+np and channels c0..c0+nl are in
                        // range; `wt` holds CHUNK floats a tap from channel c0 on.
                        unsafe {
                            if inner {
                                dw_nhwc_block::<S, NR, false>(
                                    simd, c, kh, kw, sww, n, oy, ox, np, c0, nl, wt,
                                );
                            } else {
                                dw_nhwc_block::<S, NR, true>(simd, c, kh, kw, sww, n, oy, ox, np, c0, nl, wt);
                            }
                        }
                        c0 += nl;
                    }
                    ox += np;
                }
            }
        }
        cc += cn;
    }
}

/// Most pixels of [`dw_nhwc_flat`]'s zero-padded plane (10 x 10: outputs up to 8 x 8
/// with a 3x3 window).
const NHWC_FLAT_PIX: usize = 100;

/// Whether [`dw_nhwc_flat`] runs `c`: vectors (not scalar code), stride 1, dilation 1,
/// at most 3x3, channel stride 1, a padded plane of at most [`NHWC_FLAT_PIX`] pixels
/// (MobileNet's last 7 x 7 layers), and an input pixel stride that is a multiple of
/// 4 KiB (1024 channels), where the row blocks' taps share one L1 set. Elsewhere the row
/// blocks stay ahead: 960 x 7 x 7 took 0.051 ms here against their 0.033, 96 x 8 x 8
/// 1.45x and 32 x 7 x 7 1.2x their time.
fn nhwc_flat_fits<S: Simd>(c: &Ctx<'_>) -> bool {
    let [_, _, oh, ow] = c.yd;
    S::F32_LANES > 1
        && c.sx[3].is_multiple_of(1024)
        && c.sh == 1
        && c.sww == 1
        && c.dh == 1
        && c.dw == 1
        && c.kh <= 3
        && c.kw <= 3
        && c.sx[1] == 1
        && c.sy[1] == 1
        && (!c.has_r || c.sr[1] == 1)
        && (oh + c.kh - 1) * (ow + c.kw - 1) <= NHWC_FLAT_PIX
}

/// NHWC depthwise on small planes (`nhwc_flat_fits` holds), 16 channels (a cache line)
/// at a time: their plane is copied into a zero-padded stack buffer of `[pixel][16]`,
/// then every output pixel reads its taps there, one channel vector after the other.
/// With 1024 channels an NHWC pixel is 4 KiB, so the row blocks' taps of one channel
/// vector all fall in one L1 set (15 input and 3 output lines for its 8 ways); the dense
/// copy is read from L1 instead. 1024 x 7 x 7 on AVX2: 0.051-0.052 ms against the row
/// blocks' 0.086-0.097 (in-process A/B).
#[inline(always)]
fn dw_nhwc_flat<S: Simd>(simd: S, c: &Ctx<'_>) {
    let c = &{ *c };
    let lanes = S::F32_LANES;
    let [nb, ch, oh, ow] = c.yd;
    let (kh, kw) = (c.kh, c.kw);
    let [pitch, rows, cols] = padded_plane(c);
    let mut buf = [0.0f32; NHWC_FLAT_PIX * 16];
    let bp = buf.as_mut_ptr();
    for n in 0..nb {
        let mut cb = 0;
        while cb < ch {
            // A block of 16 channels (64 bytes: one cache line when the input is aligned)
            // is copied per pass, its vectors then computed one after the other.
            let bl = (ch - cb).min(16);
            for iy in 0..rows {
                for ix in 0..cols {
                    let src = c.x.wrapping_add(n * c.sx[0] + cb + iy * c.sx[2] + ix * c.sx[3]);
                    let dst = bp.wrapping_add(((c.pt + iy) * pitch + c.pl + ix) * 16);
                    let mut j = 0;
                    while j < bl {
                        let nl = (bl - j).min(lanes);
                        // SAFETY: channels cb+j..cb+j+nl of input pixel (iy < h, ix < w)
                        // are in range (channel stride 1); the buffer pixel is below
                        // ph * pitch <= NHWC_FLAT_PIX, of 16 floats each, and j + lanes
                        // <= 16.
                        unsafe {
                            let v = load_lanes(simd, src.add(j), 0, nl);
                            core::ptr::write_unaligned(dst.add(j) as *mut S::f32s, v);
                        }
                        j += nl;
                    }
                }
            }
            // The block's taps (tap-major, 16 floats a tap) and bias, zero past `bl`.
            let mut wts = [0.0f32; 9 * 16];
            for ky in 0..kh {
                for kx in 0..kw {
                    for (j, t) in wts[(ky * 3 + kx) * 16..][..bl].iter_mut().enumerate() {
                        // SAFETY: weight [cb + j, 0, ky, kx] is in range (cb + j < ch).
                        *t = unsafe { *c.w.add((cb + j) * c.sw[0] + ky * c.sw[2] + kx * c.sw[3]) };
                    }
                }
            }
            let mut bias = [0.0f32; 16];
            if let Some(b) = c.bias {
                bias[..bl].copy_from_slice(&b[cb..cb + bl]);
            }
            let wp = wts.as_ptr();
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut jb = 0;
                    while jb < bl {
                        let nl = (bl - jb).min(lanes);
                        let mut acc = [simd.splat_f32s(0.0); 3];
                        for ky in 0..kh {
                            for kx in 0..kw {
                                // SAFETY: padded pixel (oy + ky, ox + kx) < ph * pitch, of 16
                                // floats each, and tap ky * 3 + kx < 9; jb + lanes <= 16.
                                let (xv, wv) = unsafe {
                                    (
                                        core::ptr::read_unaligned(
                                            bp.add(((oy + ky) * pitch + ox + kx) * 16 + jb) as *const S::f32s,
                                        ),
                                        core::ptr::read_unaligned(
                                            wp.add((ky * 3 + kx) * 16 + jb) as *const S::f32s
                                        ),
                                    )
                                };
                                acc[ky] = simd.mul_add_e_f32s(wv, xv, acc[ky]);
                            }
                        }
                        let mut val = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), acc[2]);
                        if c.bias.is_some() {
                            // SAFETY: jb + lanes <= 16.
                            val = simd.add_f32s(val, unsafe {
                                core::ptr::read_unaligned(bias.as_ptr().add(jb) as *const S::f32s)
                            });
                        }
                        // SAFETY: channels cb+jb..cb+jb+nl of an in-range output (and
                        // residual) pixel.
                        unsafe { finish_nhwc(simd, c, n, cb + jb, oy, ox, nl, val) };
                        jb += nl;
                    }
                }
            }
            cb += bl;
        }
    }
}

/// NHWC depthwise 3x3, stride `ST` (1 or 2, both axes), dilation 1, multiplier 1: per
/// output pixel and channel vector, [`nhwc3_rows`] output rows at a time (the NCHW row
/// blocks of [`dw_nchw_rows3`] over pixels instead of columns), so each input vector
/// loaded feeds the output rows whose windows hold its row (up to 3 at stride 1, 2 at
/// stride 2; stride 2 over 128 x 56 x 56 took 0.51-0.52x the time of the pixel blocks,
/// 64 x 112 x 112 0.53x, 256 x 28 x 28 0.49x, 512 x 14 x 14 0.63x). Taps come from a tap-major tile
/// gathered once per `CHUNK` channels (fixed offsets: one register addresses all nine).
/// Padding is whole pixels: taps outside the input are skipped.
#[inline(always)]
fn dw_nhwc_rows3<S: Simd, const ST: usize>(simd: S, c: &Ctx<'_>) {
    if nhwc3_rows::<S>() == 4 {
        dw_nhwc3::<S, 4, ST>(simd, c);
    } else {
        dw_nhwc3::<S, 3, ST>(simd, c);
    }
}

/// Output rows of one [`dw_nhwc3`] block: 3 below 16 lanes, 4 with AVX-512. One
/// accumulator per row, 9 taps and 3 input vectors live: 15 registers with 3 rows, which
/// AVX2's 16 hold. With 4 rows and 3 accumulators per row (this kernel until 2026-11-30)
/// they spilled; 128x56x56 NHWC took 0.22-0.32 ms on an AVX2 Zen 3 depending on the
/// input's offset against the output within a 4 KiB page, against 0.16-0.23 now. Three
/// rows also keep the lines of one L1 set (5 input rows and 3 output rows at the same
/// offset when a row is a multiple of 4 KiB, as 56 pixels x 128 channels are) within its
/// 8 ways, where 4 rows needed 10. With AVX-512 (32 registers) 4 rows and 3 ran alike:
/// convbench depthwise_3x3 NHWC 0.112-0.116 ms against 0.113-0.114 (Intel, 2026-11-30,
/// three alternating pairs).
const fn nhwc3_rows<S: Simd>() -> usize {
    if S::F32_LANES >= 16 {
        4
    } else {
        3
    }
}

#[inline(always)]
fn dw_nhwc3<S: Simd, const R: usize, const ST: usize>(simd: S, c: &Ctx<'_>) {
    // A local copy: the compiler then knows the output stores leave the strides alone
    // and keeps them in registers.
    let c = &{ *c };
    let lanes = S::F32_LANES;
    let [nb, ch, oh, ow] = c.yd;
    let [_, _, h, w] = c.xd;
    let mut tile = [0.0f32; 9 * CHUNK];
    let mut cc = 0;
    while cc < ch {
        // The chunk's taps, gathered tap-major (CHUNK floats a tap) whatever the filter's
        // layout: tap `t` of channel `cc + j` at `tile[t * CHUNK + j]`, offsets the
        // compiler knows, so one register addresses all nine.
        let cn = (ch - cc).min(CHUNK);
        for t in 0..9 {
            let wo = t / 3 * c.sw[2] + t % 3 * c.sw[3];
            for (j, v) in tile[t * CHUNK..][..cn].iter_mut().enumerate() {
                // SAFETY: weight [cc + j, 0, t / 3, t % 3] is in range (cc + j < ch).
                *v = unsafe { *c.w.add((cc + j) * c.sw[0] + wo) };
            }
        }
        let wbase = tile.as_ptr();
        let bias = c.bias.map(|b| b[cc..].as_ptr());
        let full = cn / lanes * lanes;
        for n in 0..nb {
            let mut oy = 0;
            while oy < oh {
                let nr = (oh - oy).min(R);
                // Padded rows oy * ST + t inside the input: t in t_lo..t_hi.
                let py = oy * ST;
                let t_lo = c.pt.saturating_sub(py);
                let t_hi = ((nr - 1) * ST + 3).min((h + c.pt).saturating_sub(py));
                let rows_in = nr == R && t_lo == 0 && t_hi == (R - 1) * ST + 3;
                for ox in 0..ow {
                    // Padded columns ox * ST + kx inside the input: kx in k_lo..k_hi.
                    let px = ox * ST;
                    let k_lo = c.pl.saturating_sub(px);
                    let k_hi = 3.min((w + c.pl).saturating_sub(px));
                    let b = Nhwc3 {
                        c,
                        xb: c
                            .x
                            .wrapping_add(n * c.sx[0] + cc + py * c.sx[2] + px * c.sx[3])
                            .wrapping_sub(c.pt * c.sx[2] + c.pl * c.sx[3]),
                        yb: c.y.wrapping_add(n * c.sy[0] + cc + oy * c.sy[2] + ox * c.sy[3]),
                        rb: (n * c.sr[0] + cc + oy * c.sr[2] + ox * c.sr[3], c.sr[2]),
                        wbase,
                        bias,
                    };
                    // SAFETY: rows oy..oy+nr, pixel ox and channels cc..cc+cn are in range;
                    // the bounds are those of the padded rows and columns in the input.
                    unsafe {
                        if rows_in && k_lo == 0 && k_hi == 3 {
                            let mut j = 0;
                            while j < full {
                                b.run::<S, R, ST>(simd, j, lanes, R, [0, (R - 1) * ST + 3, 0, 3]);
                                j += lanes;
                            }
                        } else {
                            let mut j = 0;
                            while j < full {
                                b.run::<S, R, ST>(simd, j, lanes, nr, [t_lo, t_hi, k_lo, k_hi]);
                                j += lanes;
                            }
                        }
                        if full < cn {
                            b.run::<S, R, ST>(simd, full, cn - full, nr, [t_lo, t_hi, k_lo, k_hi]);
                        }
                    }
                }
                oy += nr;
            }
        }
        cc += cn;
    }
}

/// One pixel of one row block of [`dw_nhwc3`], from its chunk's first channel: the input
/// at padded row and column 0 of the block's window (`xb`, possibly outside the input:
/// only offsets inside it are read), the output at the block's first row (`yb`), the
/// residual's offset and row stride, the chunk's taps and bias.
struct Nhwc3<'a, 'c> {
    c: &'a Ctx<'c>,
    xb: *const f32,
    yb: *mut f32,
    rb: (usize, usize),
    wbase: *const f32,
    bias: Option<*const f32>,
}

impl Nhwc3<'_, '_> {
    /// Channels `j .. j + nl` (`nl <= lanes`) of output rows `0..nr` (`nr <= R`) at
    /// stride `ST`: padded rows `t_lo..t_hi` (of `0..(R - 1) * ST + 3`; output row `r`
    /// takes rows `r * ST .. r * ST + 3`) and columns `k_lo..k_hi` (of `0..3`) of the
    /// window are read, the others are zero padding. Sums, bias, residual and activation,
    /// then one store per row.
    ///
    /// # Safety
    /// Those rows, columns, channels and output rows are in range.
    #[inline(always)]
    unsafe fn run<S: Simd, const R: usize, const ST: usize>(
        &self,
        simd: S,
        j: usize,
        nl: usize,
        nr: usize,
        bounds: [usize; 4],
    ) {
        let [t_lo, t_hi, k_lo, k_hi] = bounds;
        let c = self.c;
        let wp = self.wbase.wrapping_add(j);
        let mut wv = [simd.splat_f32s(0.0); 9];
        for (t, v) in wv.iter_mut().enumerate() {
            // SAFETY: lanes 0..nl of every tap exist in the tile or filter.
            *v = unsafe { load_lanes(simd, wp.add(t * CHUNK), 0, nl) };
        }
        let xb = self.xb.wrapping_add(j);
        let mut acc = [simd.splat_f32s(0.0); R];
        for t in 0..(R - 1) * ST + 3 {
            if t < t_lo || t >= t_hi {
                continue;
            }
            let row = xb.wrapping_add(t * c.sx[2]);
            let mut xv = [simd.splat_f32s(0.0); 3];
            for (kx, v) in xv.iter_mut().enumerate() {
                if kx >= k_lo && kx < k_hi {
                    // SAFETY: channels j..j+nl of an in-range pixel of an in-range row.
                    *v = unsafe { load_lanes(simd, row.add(kx * c.sx[3]), 0, nl) };
                }
            }
            // Padded row t is tap row t - r * ST of output row r.
            for (r, a) in acc.iter_mut().enumerate() {
                if t >= r * ST && t - r * ST < 3 {
                    for kx in 0..3 {
                        *a = simd.mul_add_e_f32s(wv[(t - r * ST) * 3 + kx], xv[kx], *a);
                    }
                }
            }
        }
        for (r, mut val) in acc.into_iter().enumerate() {
            if r >= nr {
                break;
            }
            if let Some(bias) = self.bias {
                // SAFETY: bias entries j..j+nl of the chunk exist.
                val = simd.add_f32s(val, unsafe { load_lanes(simd, bias.add(j), 0, nl) });
            }
            if c.has_r {
                // SAFETY: channels j..j+nl of an in-range residual pixel (channel stride 1).
                let z = unsafe { load_lanes(simd, c.r.add(self.rb.0 + j + r * self.rb.1), 0, nl) };
                val = simd.add_f32s(val, z);
            }
            val = c.act.vec(simd, val);
            // SAFETY: channels j..j+nl of an in-range output pixel (channel stride 1).
            unsafe { store_lanes(simd, self.yb.add(j + r * c.sy[2]), nl, val) };
        }
    }
}

/// Channels of the NHWC depthwise kernel's gathered weight tile (9 taps x CHUNK floats on
/// the stack: 4.5 KiB).
const CHUNK: usize = 128;

/// `np <= NR` pixels `ox..` of row `oy` x channels `c0..c0 + nl`; `wt` holds the gathered
/// weights from channel `c0` on, tap-major with CHUNK floats a tap, when given.
///
/// # Safety
/// All of those are in range; with `EDGE = false` every tap of every pixel is inside the
/// input and `np == NR`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_nhwc_block<S: Simd, const NR: usize, const EDGE: bool>(
    simd: S,
    c: &Ctx<'_>,
    kh: usize,
    kw: usize,
    sww: usize,
    n: usize,
    oy: usize,
    ox: usize,
    np: usize,
    c0: usize,
    nl: usize,
    wt: Option<&[f32]>,
) {
    let lanes = S::F32_LANES;
    let [_, _, h, w] = c.xd;
    let zero = simd.splat_f32s(0.0);
    let mut acc = [zero; NR];
    let xb = c.x.wrapping_add(n * c.sx[0] + c0);
    let o_unit = c.sw[0] == 1;
    for ky in 0..kh {
        let Some(iy) = input_coord(oy, c.sh, ky, c.dh, c.pt, h) else { continue };
        let xr = xb.wrapping_add(iy * c.sx[2]);
        for kx in 0..kw {
            let wo = ky * c.sw[2] + kx * c.sw[3];
            let wv = if let Some(t) = wt {
                let tap = &t[(ky * kw + kx) * CHUNK..][..nl];
                // SAFETY: `tap` holds the nl floats loaded.
                unsafe { load_lanes(simd, tap.as_ptr(), 0, nl) }
            } else if o_unit || nl == 1 {
                // SAFETY: weights [c0..c0+nl, 0, ky, kx], o-stride 1 (or a single channel).
                unsafe { load_lanes(simd, c.w.add(c0 * c.sw[0] + wo), 0, nl) }
            } else {
                let mut buf = [0.0f32; 16];
                for (j, b) in buf.iter_mut().enumerate().take(nl.min(16)) {
                    // SAFETY: weight [c0 + j, 0, ky, kx] is in range.
                    *b = unsafe { *c.w.add((c0 + j) * c.sw[0] + wo) };
                }
                // SAFETY: `buf` holds 16 >= lanes floats.
                unsafe { load_lanes(simd, buf.as_ptr(), 0, nl.min(lanes)) }
            };
            for (r, a) in acc.iter_mut().enumerate() {
                let ix = if EDGE {
                    if r >= np {
                        break;
                    }
                    match input_coord(ox + r, sww, kx, c.dw, c.pl, w) {
                        Some(ix) => ix,
                        None => continue,
                    }
                } else {
                    (ox + r) * sww + kx * c.dw - c.pl
                };
                // SAFETY: channels c0..c0+nl of in-range input pixel [n, iy, ix] (c-stride 1,
                // or one channel with nl == 1).
                let xv = unsafe { load_lanes(simd, xr.add(ix * c.sx[3]), 0, nl) };
                *a = simd.mul_add_e_f32s(xv, wv, *a);
            }
        }
    }
    for (r, a) in acc.iter().enumerate().take(np) {
        let px = ox + r;
        let mut val = *a;
        if let Some(b) = c.bias {
            // SAFETY: bias entries c0..c0+nl exist.
            val = simd.add_f32s(val, unsafe { load_lanes(simd, b.as_ptr().add(c0), 0, nl) });
        }
        // SAFETY: channels c0..c0+nl of an in-range output (and residual) pixel.
        unsafe { finish_nhwc(simd, c, n, c0, oy, px, nl, val) };
    }
}

/// NCHW, column stride 1: vectors over the output columns of one plane.
struct DwNchw<'a> {
    c: Ctx<'a>,
}

impl WithSimd for DwNchw<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = &self.c;
        if flat_fits::<S>(c) {
            dw_nchw_flat::<S>(simd, c);
        } else if rows3_fits::<S>(c) {
            dw_nchw_rows3::<S>(simd, c);
        } else if stencil_fits::<S>(c) {
            // 3x3 windows the stencil could take run the row blocks above.
            dw_nchw_stencil::<S>(simd, c, c.kh, c.kw);
        } else if c.kh == 3 && c.kw == 3 {
            dw_nchw::<S>(simd, c, 3, 3);
        } else {
            dw_nchw::<S>(simd, c, c.kh, c.kw);
        }
    }
}

/// Floats of [`dw_nchw_flat`]'s zero-padded plane buffer (and of its output buffer): 4 KiB.
const FLAT_BUF: usize = 1024;

/// The zero-padded plane of the stack-copy paths ([`dw_nchw_flat`], [`dw_nhwc_flat`]):
/// its pitch `OW + KW - 1` (stride 1), and the input rows and columns it holds, from
/// padded row `PT` and column `PL`, as far as the plane's `OH + KH - 1` rows and pitch
/// reach; the other positions stay zero for every plane.
fn padded_plane(c: &Ctx<'_>) -> [usize; 3] {
    let [_, _, oh, ow] = c.yd;
    let [_, _, h, w] = c.xd;
    let pitch = ow + c.kw - 1;
    let rows = h.min((oh + c.kh - 1).saturating_sub(c.pt));
    [pitch, rows, w.min(pitch.saturating_sub(c.pl))]
}

/// The padded pitch, output vectors and padded-plane floats [`dw_nchw_flat`] needs.
fn flat_shape(c: &Ctx<'_>, lanes: usize) -> (usize, usize, usize) {
    let [_, _, oh, ow] = c.yd;
    let pitch = ow + c.kw - 1;
    let nvec = (oh * pitch).div_ceil(lanes);
    (pitch, nvec, nvec * lanes + (c.kh - 1) * pitch + c.kw - 1)
}

/// Whether [`dw_nchw_flat`] runs `c`: stride 1, dilation 1, at most 3x3, output rows
/// narrower than one vector (MobileNet's 7 x 7 planes on AVX2, also 14 x 14 on
/// AVX-512), contiguous columns, and a padded plane that fits [`FLAT_BUF`].
fn flat_fits<S: Simd>(c: &Ctx<'_>) -> bool {
    let lanes = S::F32_LANES;
    c.sh == 1
        && c.sww == 1
        && c.dh == 1
        && c.dw == 1
        && c.kh <= 3
        && c.kw <= 3
        && c.yd[3] < lanes
        && lanes > 1
        && c.sx[3] == 1
        && c.sy[3] == 1
        && flat_shape(c, lanes).2 <= FLAT_BUF
}

/// NCHW depthwise on planes narrower than one vector (`flat_fits` holds). Each input
/// plane is copied into a zero-padded stack buffer whose rows are `pitch = OW + KW - 1`
/// floats apart; output `(oy, ox)` is then flat position `q = oy * pitch + ox`, and tap
/// `(ky, kx)` reads the buffer at `q + ky * pitch + kx` for every output at once. So the
/// plane is `ceil(OH * pitch / lanes)` vectors of unmasked loads and multiply-adds
/// (the `KW - 1` positions a row between `OW` and `pitch` are computed and dropped), where
/// the row loop spent masked loads and a masked store on one short row at a time.
#[inline(always)]
fn dw_nchw_flat<S: Simd>(simd: S, c: &Ctx<'_>) {
    let c = &{ *c };
    let lanes = S::F32_LANES;
    let [nb, k, oh, ow] = c.yd;
    let (kh, kw) = (c.kh, c.kw);
    let (_, nvec, _) = flat_shape(c, lanes);
    let [pitch, rows, cols] = padded_plane(c);
    let mut buf = [0.0f32; FLAT_BUF];
    let mut out = [0.0f32; FLAT_BUF];
    for n in 0..nb {
        for o in 0..k {
            let ci = o / c.cog;
            let xb = c.x.wrapping_add(n * c.sx[0] + ci * c.sx[1]);
            for iy in 0..rows {
                let dst = &mut buf[(c.pt + iy) * pitch + c.pl..][..cols];
                // SAFETY: columns 0..cols <= w of input row iy < h are in range
                // (contiguous: column stride 1).
                unsafe { core::ptr::copy_nonoverlapping(xb.add(iy * c.sx[2]), dst.as_mut_ptr(), cols) };
            }
            let wb = c.w.wrapping_add(o * c.sw[0]);
            let bias = c.bias.map(|b| simd.splat_f32s(b[o]));
            let mut wv = [simd.splat_f32s(0.0); 9];
            for ky in 0..kh {
                for kx in 0..kw {
                    // SAFETY: weight [o, 0, ky, kx] is in range.
                    wv[ky * 3 + kx] = simd.splat_f32s(unsafe { *wb.add(ky * c.sw[2] + kx * c.sw[3]) });
                }
            }
            for v in 0..nvec {
                let q = v * lanes;
                let mut acc = [simd.splat_f32s(0.0); 3];
                for ky in 0..kh {
                    for kx in 0..kw {
                        // SAFETY: q + ky * pitch + kx + lanes <= the buffer's used length
                        // (`flat_shape`), at most FLAT_BUF.
                        let xv = unsafe {
                            core::ptr::read_unaligned(buf.as_ptr().add(q + ky * pitch + kx) as *const S::f32s)
                        };
                        acc[ky] = simd.mul_add_e_f32s(wv[ky * 3 + kx], xv, acc[ky]);
                    }
                }
                let mut sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), acc[2]);
                if let Some(b) = bias {
                    sum = simd.add_f32s(sum, b);
                }
                if !c.has_r {
                    sum = c.act.vec(simd, sum);
                }
                // SAFETY: q + lanes <= nvec * lanes <= FLAT_BUF.
                unsafe { core::ptr::write_unaligned(out.as_mut_ptr().add(q) as *mut S::f32s, sum) };
            }
            // Bias added; without a residual the activation applied too.
            for oy in 0..oh {
                let yr = c.y.wrapping_add(n * c.sy[0] + o * c.sy[1] + oy * c.sy[2]);
                let src = &out[oy * pitch..][..ow];
                if c.has_r {
                    let rr = c.r.wrapping_add(n * c.sr[0] + o * c.sr[1] + oy * c.sr[2]);
                    for (ox, &s) in src.iter().enumerate() {
                        // SAFETY: residual (n, o, oy, ox) and output (n, o, oy, ox) are in
                        // range (output column stride 1).
                        unsafe { *yr.add(ox) = c.act.scalar(s + *rr.add(ox * c.sr[3])) };
                    }
                } else {
                    // SAFETY: output row (n, o, oy) holds `ow` floats at column stride 1.
                    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), yr, ow) };
                }
            }
        }
    }
}

/// Whether [`dw_nchw_rows3`] runs `c`: a 3x3 window of stride 1 and dilation 1, and at
/// least one vector of output columns. Its blocks of 3 rows of one sum each hold 15 live
/// vectors (3 sums, 9 taps, 3 inputs). An earlier layout of 4 rows with one sum per row
/// and tap row (24 live vectors) spilled on AVX2's 16 registers and ran 2.5-3x slower than
/// the stencil (128x56x56: 0.95-1.27 against 0.30-0.51 ms), where 3 rows took 0.19-0.20
/// ms against the stencil's 0.24-0.25 (AMD Zen 3, one in-process A/B). On AVX-512 it
/// fitted 32 registers but was no faster: convbench depthwise_3x3 NCHW 0.141-0.144 ms
/// against 0.134-0.144 with 3 rows of one sum, lower in 4 of 5 alternating pairs (4
/// rows of one sum: 0.134-0.140; Intel, 2026-11-30), so every ISA takes 3 rows.
fn rows3_fits<S: Simd>(c: &Ctx<'_>) -> bool {
    c.kh == 3 && c.kw == 3 && c.sh == 1 && c.sww == 1 && c.dh == 1 && c.dw == 1 && c.yd[3] >= S::F32_LANES
}

/// Output rows of one [`dw_nchw_rows3`] block.
const ROWS3: usize = 3;

/// NCHW depthwise 3x3, stride 1, dilation 1 (`rows3_fits` holds): per plane the nine taps
/// sit in registers, and `ROWS3` output rows are computed together one column vector at
/// a time, so each input vector loaded (three per input row, one per horizontal tap)
/// feeds the up to three output rows whose windows hold that row: 5 loads and 9
/// multiply-adds per output vector instead of 9 and 9, one sum per row. Rows outside the input are skipped (zero padding); column vectors next to the left or right
/// padding load only their in-range lanes. The last vector of a row overlaps its
/// neighbour instead of being masked.
#[inline(always)]
fn dw_nchw_rows3<S: Simd>(simd: S, c: &Ctx<'_>) {
    const R: usize = ROWS3;
    let c = &{ *c };
    let lanes = S::F32_LANES;
    let [nb, k, oh, ow] = c.yd;
    let [_, _, h, w] = c.xd;
    let per_row = ow.div_ceil(lanes);
    for n in 0..nb {
        for o in 0..k {
            let ci = o / c.cog;
            let xb = c.x.wrapping_add(n * c.sx[0] + ci * c.sx[1]);
            let wb = c.w.wrapping_add(o * c.sw[0]);
            let bias = c.bias.map(|b| simd.splat_f32s(b[o]));
            let mut wv = [simd.splat_f32s(0.0); 9];
            for (t, v) in wv.iter_mut().enumerate() {
                // SAFETY: weight [o, 0, t / 3, t % 3] is in range.
                *v = simd.splat_f32s(unsafe { *wb.add(t / 3 * c.sw[2] + t % 3 * c.sw[3]) });
            }
            let mut oy = 0;
            while oy < oh {
                let nr = (oh - oy).min(R);
                // All `R + 2` padded rows of the block inside the input.
                let rows_in = oy >= c.pt && oy + R + 2 <= h + c.pt;
                for j in 0..per_row {
                    // `ow >= lanes`: the last vector ends at the row's end.
                    let ox = (j * lanes).min(ow - lanes);
                    // Every tap's vector inside the input row: columns ox - pl .. ox + 2 - pl
                    // + lanes.
                    let cols_in = ox >= c.pl && ox + 2 + lanes <= w + c.pl;
                    let b = Rows3 { c, xb, wv, oy, ox };
                    // SAFETY: `oy .. oy + nr` are output rows of plane `(n, o)` and `ox +
                    // lanes <= ow`; `rows_in` and `cols_in` as `Rows3::block` needs them.
                    let acc = unsafe {
                        match (rows_in, cols_in) {
                            (true, true) => b.block::<S, false, false, R>(simd),
                            (true, false) => b.block::<S, false, true, R>(simd),
                            (false, true) => b.block::<S, true, false, R>(simd),
                            (false, false) => b.block::<S, true, true, R>(simd),
                        }
                    };
                    for r in 0..R {
                        if r >= nr {
                            break;
                        }
                        let mut val = acc[r];
                        if let Some(b) = bias {
                            val = simd.add_f32s(val, b);
                        }
                        if c.has_r {
                            let ro = n * c.sr[0] + o * c.sr[1] + (oy + r) * c.sr[2] + ox;
                            // SAFETY: columns ox..ox+lanes <= ow of an in-range residual row
                            // (contiguous).
                            val = simd.add_f32s(val, unsafe {
                                core::ptr::read_unaligned(c.r.add(ro) as *const S::f32s)
                            });
                        }
                        val = c.act.vec(simd, val);
                        let yo = n * c.sy[0] + o * c.sy[1] + (oy + r) * c.sy[2] + ox;
                        // SAFETY: columns ox..ox+lanes <= ow of an in-range output row
                        // (contiguous).
                        unsafe { core::ptr::write_unaligned(c.y.add(yo) as *mut S::f32s, val) };
                    }
                }
                oy += nr;
            }
        }
    }
}

/// One column vector of one row block of [`dw_nchw_rows3`]: output rows `oy .. oy + R`,
/// columns `ox .. ox + lanes` of the plane whose input starts at `xb`, with the
/// row-major taps `wv`.
struct Rows3<'a, 'c, V> {
    c: &'a Ctx<'c>,
    xb: *const f32,
    wv: [V; 9],
    oy: usize,
    ox: usize,
}

impl<V: Copy> Rows3<'_, '_, V> {
    /// The sums (no epilogue) of the block: padded row `oy + t` (`t < R + 2`) feeds output
    /// rows `oy + t - ky` for `ky < 3`. With `EDGE_ROWS`, padded rows outside the input are
    /// skipped; with `EDGE_COLS`, loads keep to the row's columns `0..W`.
    ///
    /// # Safety
    /// `xb` is the start of an in-range input plane (column stride 1); `ox + lanes <= OW`.
    /// Without `EDGE_ROWS`, `oy >= PT` and `oy + R + 2 <= H + PT`; without
    /// `EDGE_COLS`, `ox >= PL` and `ox + 2 + lanes <= W + PL`.
    #[inline(always)]
    unsafe fn block<S: Simd<f32s = V>, const EDGE_ROWS: bool, const EDGE_COLS: bool, const R: usize>(
        &self,
        simd: S,
    ) -> [V; R] {
        let Rows3 { c, xb, wv, oy, ox } = *self;
        let lanes = S::F32_LANES;
        let [_, _, h, w] = c.xd;
        // Lanes of tap column kx inside the row: `lo..hi` (built once per block).
        let masks = EDGE_COLS.then(|| {
            core::array::from_fn::<_, 3, _>(|kx| {
                let lo = c.pl.saturating_sub(ox + kx).min(lanes);
                let hi = (w + c.pl).saturating_sub(ox + kx).min(lanes);
                lane_mask(simd, lo, hi)
            })
        });
        // One accumulator per output row (a chain of 9 dependent multiply-adds; the rows'
        // chains interleave).
        let mut acc = [simd.splat_f32s(0.0); R];
        for t in 0..R + 2 {
            // Padded row `oy + t` is input row `oy + t - pt`.
            let iy = (oy + t).wrapping_sub(c.pt);
            if EDGE_ROWS && (oy + t < c.pt || iy >= h) {
                continue;
            }
            let row = xb.wrapping_add(iy * c.sx[2]);
            let mut xv = [simd.splat_f32s(0.0); 3];
            for kx in 0..3 {
                // Column `ox + kx - pl` of the row.
                let p = row.wrapping_add(ox + kx).wrapping_sub(c.pl);
                xv[kx] = match masks {
                    // SAFETY: the mask's lanes are in-range columns of an in-range row.
                    Some(m) => unsafe { simd.mask_load_ptr_f32s(m[kx], p) },
                    // SAFETY: every lane is an in-range column of an in-range row (caller).
                    None => unsafe { core::ptr::read_unaligned(p as *const V) },
                };
            }
            for (r, a) in acc.iter_mut().enumerate() {
                if t >= r && t - r < 3 {
                    for kx in 0..3 {
                        *a = simd.mul_add_e_f32s(wv[(t - r) * 3 + kx], xv[kx], *a);
                    }
                }
            }
        }
        acc
    }
}

/// Padded row width the stencil path handles (floats per ring row).
const STENCIL_W: usize = 1024;

/// Whether [`dw_nchw_stencil`] runs `c`: stride 1, dilation 1, at most 3x3, at least one
/// vector of output columns, and a padded row that fits a ring row.
fn stencil_fits<S: Simd>(c: &Ctx<'_>) -> bool {
    let ow = c.yd[3];
    // Stride 1: ow + kw - 1 = w + pl + pr, the padded row, a valid geometry's extent.
    c.sh == 1
        && c.sww == 1
        && c.dh == 1
        && c.dw == 1
        && c.kh <= 3
        && c.kw <= 3
        && ow >= S::F32_LANES
        && ow + c.kw - 1 <= STENCIL_W
}

/// NCHW depthwise stencil (see the module docs): `stencil_fits` holds.
#[inline(always)]
fn dw_nchw_stencil<S: Simd>(simd: S, c: &Ctx<'_>, kh: usize, kw: usize) {
    let lanes = S::F32_LANES;
    let [nb, k, oh, ow] = c.yd;
    let [_, _, h, w] = c.xd;
    // Ring row j holds padded column j: input column j - pl, zero outside the input.
    // Output column ox, tap kx reads ring column ox + kx <= ow - 1 + kw - 1 < padded width.
    let padded = ow + kw - 1;
    let mut ring = [[0.0f32; STENCIL_W]; 3];
    let per_row = ow.div_ceil(lanes);
    for n in 0..nb {
        for o in 0..k {
            let ci = o / c.cog;
            let xb = c.x.wrapping_add(n * c.sx[0] + ci * c.sx[1]);
            let wb = c.w.wrapping_add(o * c.sw[0]);
            let bias = c.bias.map(|b| simd.splat_f32s(b[o]));
            let mut wvs = [simd.splat_f32s(0.0); 9];
            for ky in 0..kh {
                for kx in 0..kw {
                    // SAFETY: weight [o, 0, ky, kx] is in range.
                    wvs[ky * 3 + kx] = simd.splat_f32s(unsafe { *wb.add(ky * c.sw[2] + kx * c.sw[3]) });
                }
            }
            // Which input row each ring slot holds (none at the start of a plane).
            let mut held = [usize::MAX; 3];
            for oy in 0..oh {
                // The rows of this window, loaded into slot `iy % 3` unless already there.
                let mut rows = [None; 3];
                for ky in 0..kh {
                    let Some(iy) = input_coord(oy, 1, ky, 1, c.pt, h) else { continue };
                    let slot = iy % 3;
                    if held[slot] != iy {
                        let r = &mut ring[slot][..padded];
                        let (left, rest) = r.split_at_mut(c.pl.min(padded));
                        left.fill(0.0);
                        let len = w.min(rest.len());
                        // SAFETY: columns 0..len <= w of in-range input row [n, ci, iy]
                        // (column stride 1 in NCHW).
                        let src = unsafe { core::slice::from_raw_parts(xb.add(iy * c.sx[2]), len) };
                        rest[..len].copy_from_slice(src);
                        rest[len..].fill(0.0);
                        held[slot] = iy;
                    }
                    rows[ky] = Some(slot);
                }
                let yrow = n * c.sy[0] + o * c.sy[1] + oy * c.sy[2];
                for j in 0..per_row {
                    let ox = (j * lanes).min(ow - lanes);
                    let mut acc = [simd.splat_f32s(0.0); 3];
                    for ky in 0..kh {
                        let Some(slot) = rows[ky] else { continue };
                        let base = ring[slot].as_ptr();
                        for kx in 0..kw {
                            // SAFETY: ring columns ox + kx .. ox + kx + lanes end at most at
                            // ow - 1 + kw - 1 + 1 = padded <= STENCIL_W.
                            let xv =
                                unsafe { core::ptr::read_unaligned(base.add(ox + kx) as *const S::f32s) };
                            acc[ky] = simd.mul_add_e_f32s(wvs[ky * 3 + kx], xv, acc[ky]);
                        }
                    }
                    let mut val = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), acc[2]);
                    if let Some(b) = bias {
                        val = simd.add_f32s(val, b);
                    }
                    if c.has_r {
                        let ro = n * c.sr[0] + o * c.sr[1] + oy * c.sr[2] + ox;
                        // SAFETY: columns ox..ox+lanes <= ow of an in-range residual row
                        // (contiguous).
                        val = simd.add_f32s(val, unsafe {
                            core::ptr::read_unaligned(c.r.add(ro) as *const S::f32s)
                        });
                    }
                    val = c.act.vec(simd, val);
                    // SAFETY: columns ox..ox+lanes <= ow of an in-range output row
                    // (contiguous).
                    unsafe { core::ptr::write_unaligned(c.y.add(yrow + ox) as *mut S::f32s, val) };
                }
            }
        }
    }
}

#[inline(always)]
fn dw_nchw<S: Simd>(simd: S, c: &Ctx<'_>, kh: usize, kw: usize) {
    let lanes = S::F32_LANES;
    let [nb, k, oh, ow] = c.yd;
    let [_, _, h, w] = c.xd;
    let per_row = if ow < lanes { 1 } else { ow.div_ceil(lanes) };
    for n in 0..nb {
        for o in 0..k {
            let ci = o / c.cog;
            let xb = c.x.wrapping_add(n * c.sx[0] + ci * c.sx[1]);
            let wb = c.w.wrapping_add(o * c.sw[0]);
            let bias = c.bias.map(|b| simd.splat_f32s(b[o]));
            // Up to 9 taps stay in registers for the whole plane.
            let cached = kh * kw <= 9;
            let mut wvs = [simd.splat_f32s(0.0); 9];
            if cached {
                for ky in 0..kh {
                    for kx in 0..kw {
                        // SAFETY: weight [o, 0, ky, kx] is in range.
                        wvs[ky * kw + kx] = simd.splat_f32s(unsafe { *wb.add(ky * c.sw[2] + kx * c.sw[3]) });
                    }
                }
            }
            for oy in 0..oh {
                for j in 0..per_row {
                    let v = if ow < lanes {
                        Cols { oy, ox: 0, nl: ow }
                    } else {
                        Cols { oy, ox: (j * lanes).min(ow - lanes), nl: lanes }
                    };
                    let inner = cols_interior(c, &v, lanes);
                    let mut acc = [simd.splat_f32s(0.0); 2];
                    for ky in 0..kh {
                        let Some(iy) = input_coord(oy, c.sh, ky, c.dh, c.pt, h) else { continue };
                        let row = xb.wrapping_add(iy * c.sx[2]);
                        for kx in 0..kw {
                            let wv = if cached {
                                wvs[ky * kw + kx]
                            } else {
                                // SAFETY: weight [o, 0, ky, kx] is in range.
                                simd.splat_f32s(unsafe { *wb.add(ky * c.sw[2] + kx * c.sw[3]) })
                            };
                            let off = v.ox + kx * c.dw;
                            let p = row.wrapping_add(off).wrapping_sub(c.pl);
                            let xv = if inner {
                                // SAFETY: interior vector: every lane is an in-range column of
                                // an in-range row (contiguous).
                                unsafe { core::ptr::read_unaligned(p as *const S::f32s) }
                            } else {
                                let lo = c.pl.saturating_sub(off).min(lanes);
                                let hi = (w + c.pl).saturating_sub(off).min(lanes);
                                // SAFETY: lanes lo..hi are in-range columns of the row.
                                unsafe { load_lanes(simd, p, lo, hi) }
                            };
                            let a = &mut acc[ky & 1];
                            *a = simd.mul_add_e_f32s(wv, xv, *a);
                        }
                    }
                    let mut val = simd.add_f32s(acc[0], acc[1]);
                    if let Some(b) = bias {
                        val = simd.add_f32s(val, b);
                    }
                    if c.has_r {
                        let ro = n * c.sr[0] + o * c.sr[1] + oy * c.sr[2] + v.ox;
                        // SAFETY: columns ox..ox+nl of an in-range residual row (contiguous).
                        val = simd.add_f32s(val, unsafe { load_lanes(simd, c.r.add(ro), 0, v.nl) });
                    }
                    val = c.act.vec(simd, val);
                    let yo = n * c.sy[0] + o * c.sy[1] + oy * c.sy[2] + v.ox;
                    // SAFETY: columns ox..ox+nl of an in-range output row (contiguous).
                    unsafe { store_lanes(simd, c.y.add(yo), v.nl, val) };
                }
            }
        }
    }
}

/// NCHW with a column stride above 1: per output row, the interior columns (all taps
/// inside the input) run without checks.
struct DwNchwStrided<'a> {
    c: Ctx<'a>,
}

impl WithSimd for DwNchwStrided<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let c = &self.c;
        if c.kh == 3 && c.kw == 3 && c.sww == 2 && c.dw == 1 {
            dw_nchw_strided(c, 3, 3, 2);
        } else {
            dw_nchw_strided(c, c.kh, c.kw, c.sww);
        }
    }
}

#[inline(always)]
fn dw_nchw_strided(c: &Ctx<'_>, kh: usize, kw: usize, sww: usize) {
    let [nb, k, oh, ow] = c.yd;
    let [_, _, h, w] = c.xd;
    // Interior columns: ox * sww >= pl and ox * sww + (kw - 1) * dw < w + pl.
    let lo = c.pl.div_ceil(sww).min(ow);
    let span = (kw - 1) * c.dw;
    let hi = if w + c.pl > span { ((w + c.pl - span - 1) / sww + 1).clamp(lo, ow) } else { lo };
    for n in 0..nb {
        for o in 0..k {
            let ci = o / c.cog;
            let xb = c.x.wrapping_add(n * c.sx[0] + ci * c.sx[1]);
            let wb = c.w.wrapping_add(o * c.sw[0]);
            for oy in 0..oh {
                let tap = |ox: usize, checked: bool| -> f32 {
                    let mut acc = 0.0f32;
                    for ky in 0..kh {
                        let Some(iy) = input_coord(oy, c.sh, ky, c.dh, c.pt, h) else { continue };
                        let xr = xb.wrapping_add(iy * c.sx[2]);
                        for kx in 0..kw {
                            let ix = if checked {
                                match input_coord(ox, sww, kx, c.dw, c.pl, w) {
                                    Some(ix) => ix,
                                    None => continue,
                                }
                            } else {
                                ox * sww + kx * c.dw - c.pl
                            };
                            // SAFETY: in-range input and weight indices.
                            acc += unsafe { *xr.add(ix * c.sx[3]) * *wb.add(ky * c.sw[2] + kx * c.sw[3]) };
                        }
                    }
                    acc
                };
                for ox in 0..ow {
                    let edge = ox < lo || ox >= hi;
                    let acc = tap(ox, edge);
                    // SAFETY: in-range output index.
                    unsafe { c.store_scalar(n, o, oy, ox, acc) };
                }
            }
        }
    }
}
