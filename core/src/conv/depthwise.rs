//! Depthwise convolution (`groups == in_channels`, any channel multiplier): memory-bound
//! SIMD loops, no workspace.
//!
//! - NHWC, multiplier 1: vectors over channels, a block of `NR` pixels of one output row
//!   per vector of channels; 3x3 at stride 1 and 2 get loops specialised at compile time.
//!   Weights are loaded as vectors when the filter's output-channel stride is 1 (HWIO),
//!   else gathered once per tap into a small stack array.
//! - NHWC, multiplier > 1 with output-channel stride 1: the direct kernel's
//!   vectors-over-output-channels path (each group is one input channel).
//! - NCHW, column stride 1: vectors over output columns, one plane at a time, with masked
//!   loads at the padded edges (the direct column kernel with one output channel per block).
//! - Anything else: a strided loop that splits each row into edge and interior columns.

#![allow(clippy::needless_range_loop)] // kernels index several register arrays in lockstep

use pulp::{Simd, WithSimd};

use super::direct::{generic, load_lanes, store_lanes, Ctx};
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
    match args.layout {
        Layout::Nhwc if ctx.cog == 1 => args.exec.dispatch(DwNhwc { c: ctx }),
        Layout::Nhwc if o_unit => super::direct::run_nhwc_oc(args.exec, ctx),
        Layout::Nchw if ctx.sww == 1 => super::direct::run_nchw_single(args.exec, ctx),
        Layout::Nchw => args.exec.dispatch(DwNchwStrided { c: ctx }),
        _ => generic(args.exec, ctx, args.layout),
    }
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
        if c.kh == 3 && c.kw == 3 && c.dh == 1 && c.dw == 1 && c.sh == c.sww && c.sh <= 2 {
            if c.sh == 1 {
                dw_nhwc::<S, 4>(simd, c, 3, 3, 1);
            } else {
                dw_nhwc::<S, 4>(simd, c, 3, 3, 2);
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
    for n in 0..nb {
        for oy in 0..oh {
            let rows_in = oy * c.sh >= c.pt && oy * c.sh + (kh - 1) * c.dh < h + c.pt;
            let mut ox = 0;
            while ox < ow {
                let np = (ow - ox).min(NR);
                let x0 = ox * sww;
                let x1 = (ox + np - 1) * sww + (kw - 1) * c.dw;
                let inner = rows_in && np == NR && x0 >= c.pl && x1 < w + c.pl;
                let mut c0 = 0;
                while c0 < ch {
                    let nl = (ch - c0).min(lanes);
                    // SAFETY: n, oy, pixels ox..ox+np and channels c0..c0+nl are in range.
                    unsafe {
                        if inner {
                            dw_nhwc_block::<S, NR, false>(simd, c, kh, kw, sww, n, oy, ox, np, c0, nl);
                        } else {
                            dw_nhwc_block::<S, NR, true>(simd, c, kh, kw, sww, n, oy, ox, np, c0, nl);
                        }
                    }
                    c0 += nl;
                }
                ox += np;
            }
        }
    }
}

/// `np <= NR` pixels `ox..` of row `oy` x channels `c0..c0 + nl`.
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
            let wv = if o_unit || nl == 1 {
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
        if c.has_r {
            let ro = n * c.sr[0] + c0 + oy * c.sr[2] + px * c.sr[3];
            // SAFETY: channels c0..c0+nl of an in-range residual pixel (c-stride 1).
            val = simd.add_f32s(val, unsafe { load_lanes(simd, c.r.add(ro), 0, nl) });
        }
        val = c.act.vec(simd, val);
        let yo = n * c.sy[0] + c0 + oy * c.sy[2] + px * c.sy[3];
        // SAFETY: channels c0..c0+nl of an in-range output pixel (c-stride 1).
        unsafe { store_lanes(simd, c.y.add(yo), nl, val) };
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
