//! Direct convolution: register-blocked SIMD loops over the (dilated) window, no workspace,
//! no allocation (the `no_std` path).
//!
//! Paths, picked per call:
//! - NCHW: vectors over output columns (a block of `NR` vectors may
//!   span several rows), `MR` output channels per block, weights broadcast from any filter
//!   layout. Padding is handled per vector and tap with masked loads (no input copy); at
//!   a column stride above 1 each input vector is gathered into a stack array instead,
//!   once per tap and input channel, and shared by the `MR` output channels.
//! - NHWC, filter output-channel stride 1 (HWIO): vectors over output channels, `MR`
//!   output pixels per block, input values broadcast.
//! - NHWC, filter input-channel stride 1 (OHWI): vectors over input channels (dot
//!   products), `MR` pixels x `NR` output channels per block, reduced at the end.
//! - Anything else (NHWC with other filter strides): a scalar loop
//!   over any strides into a stack tile, the epilogue applied to the tile with SIMD.
//! - Depthwise geometries (`groups == in_channels > 1`) run the depthwise kernels.
//!
//! Long input-channel reductions are split into chunks whose weights stay in cache; the
//! partial sums of a block go through its own outputs in `y` (no workspace), and the
//! epilogue is applied with the last chunk.
//!
//! The epilogue (bias, residual, activation) is applied to the accumulators in registers
//! before the final store of each output, never as a second pass over `y`.

#![allow(clippy::needless_range_loop)] // kernels index several register arrays in lockstep

use core::ptr;

use pulp::{Simd, WithSimd};

use super::store::{apply_run, RunBias};
use super::ConvArgs;
use crate::error::Result;
use crate::geometry::input_coord;
use crate::params::Activation;
use crate::tensor::{Layout, TensorViewMut};

/// The activation as select bounds (NaN passes through on every ISA).
#[derive(Clone, Copy)]
pub(super) struct Act {
    lo: f32,
    hi: f32,
    clamp: bool,
    act: Activation,
}

impl Act {
    pub(super) fn new(act: Activation) -> Self {
        let (lo, hi, clamp) = match act {
            Activation::Identity => (f32::NEG_INFINITY, f32::INFINITY, false),
            Activation::Relu => (0.0, f32::INFINITY, true),
            Activation::Clamp { min, max } => (min, max, true),
        };
        Act { lo, hi, clamp, act }
    }

    #[inline(always)]
    pub(super) fn vec<S: Simd>(&self, simd: S, v: S::f32s) -> S::f32s {
        if !self.clamp {
            return v;
        }
        let lo = simd.splat_f32s(self.lo);
        let hi = simd.splat_f32s(self.hi);
        let below = simd.less_than_f32s(v, lo);
        let v = simd.select_f32s(below, lo, v);
        let above = simd.greater_than_f32s(v, hi);
        simd.select_f32s(above, hi, v)
    }

    #[inline(always)]
    pub(super) fn scalar(&self, v: f32) -> f32 {
        self.act.apply(v)
    }
}

/// All lanes `b`.
#[inline(always)]
pub(super) fn bool_mask<S: Simd>(simd: S, b: bool) -> S::m32s {
    simd.greater_than_u32s(simd.splat_u32s(u32::from(b)), simd.splat_u32s(0))
}

static IOTA: [u32; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// The mask of lanes `lo..hi`, built with compares so that pulp's masked loads and stores
/// use the ISA's own instructions inline (pulp's `mask_between` masks jump to a stub).
#[inline(always)]
pub(super) fn lane_mask<S: Simd>(simd: S, lo: usize, hi: usize) -> pulp::MemMask<S::m32s> {
    const { assert!(core::mem::size_of::<S::u32s>() <= core::mem::size_of::<[u32; 16]>()) };
    // SAFETY: `IOTA` is at least as large as a vector of u32 (checked above); plain data.
    let iota: S::u32s = unsafe { ptr::read_unaligned(IOTA.as_ptr() as *const S::u32s) };
    let ge = simd.greater_than_or_equal_u32s(iota, simd.splat_u32s(lo as u32));
    let lt = simd.less_than_u32s(iota, simd.splat_u32s(hi as u32));
    pulp::MemMask::new(simd.and_m32s(ge, lt))
}

/// Loads lanes `lo..hi` from `p + lane` (zeros elsewhere).
///
/// # Safety
/// For every lane `j` in `lo..hi`, `p.wrapping_add(j)` must be valid for reads. Other lanes
/// are never read, so `p` itself may point outside the allocation.
#[inline(always)]
pub(super) unsafe fn load_lanes<S: Simd>(simd: S, p: *const f32, lo: usize, hi: usize) -> S::f32s {
    if lo == 0 && hi == S::F32_LANES {
        // SAFETY: all lanes are readable (caller); f32s is plain data, read unaligned.
        unsafe { ptr::read_unaligned(p as *const S::f32s) }
    } else if lo >= hi {
        simd.splat_f32s(0.0)
    } else {
        // SAFETY: only lanes lo..hi are enabled, and those are readable (caller).
        unsafe { simd.mask_load_ptr_f32s(lane_mask(simd, lo, hi), p) }
    }
}

/// Stores lanes `0..n` of `v` to `p + lane`.
///
/// # Safety
/// `p.add(j)` must be valid for writes for every `j < n`.
#[inline(always)]
pub(super) unsafe fn store_lanes<S: Simd>(simd: S, p: *mut f32, n: usize, v: S::f32s) {
    if n == S::F32_LANES {
        // SAFETY: all lanes are writable (caller).
        unsafe { ptr::write_unaligned(p as *mut S::f32s, v) }
    } else if n > 0 {
        // SAFETY: only lanes 0..n are enabled, and those are writable (caller).
        unsafe { simd.mask_store_ptr_f32s(lane_mask(simd, 0, n), p, v) }
    }
}

/// The rest of an NHWC output's epilogue for channels `c0..c0 + nl` of pixel
/// `(n, oy, ox)` whose sums (bias included) are `val`: adds the residual, applies the
/// activation, stores.
///
/// # Safety
/// Those channels of that pixel are in range in the output and in the residual (when
/// there is one), both of channel stride 1.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn finish_nhwc<S: Simd>(
    simd: S,
    c: &Ctx<'_>,
    n: usize,
    c0: usize,
    oy: usize,
    ox: usize,
    nl: usize,
    mut val: S::f32s,
) {
    if c.has_r {
        let ro = n * c.sr[0] + c0 + oy * c.sr[2] + ox * c.sr[3];
        // SAFETY: channels c0..c0+nl of an in-range residual pixel (caller).
        val = simd.add_f32s(val, unsafe { load_lanes(simd, c.r.add(ro), 0, nl) });
    }
    val = c.act.vec(simd, val);
    let yo = n * c.sy[0] + c0 + oy * c.sy[2] + ox * c.sy[3];
    // SAFETY: channels c0..c0+nl of an in-range output pixel (caller).
    unsafe { store_lanes(simd, c.y.add(yo), nl, val) };
}

/// Everything a kernel needs, as raw pointers and strides. Built from validated views:
/// every offset of an in-range logical index lies inside the matching slice.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub x: *const f32,
    pub w: *const f32,
    pub y: *mut f32,
    pub r: *const f32,
    pub has_r: bool,
    pub bias: Option<&'a [f32]>,
    pub sx: [usize; 4],
    pub sw: [usize; 4],
    pub sy: [usize; 4],
    pub sr: [usize; 4],
    /// Input n, c, h, w.
    pub xd: [usize; 4],
    /// Output n, k, h, w.
    pub yd: [usize; 4],
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sww: usize,
    pub dh: usize,
    pub dw: usize,
    pub pt: usize,
    pub pl: usize,
    /// Input channels per group.
    pub cig: usize,
    /// Output channels per group.
    pub cog: usize,
    pub act: Act,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(args: &ConvArgs<'a, '_>, y: &mut TensorViewMut<'_, f32>) -> Self {
        let g = args.g;
        let win = g.window();
        let [kh, kw] = win.kernel();
        let [sh, sww] = win.stride();
        let [dh, dw] = win.dilation();
        let p = win.padding();
        let (r, sr, has_r) = match &args.epilogue.residual {
            Some(r) => (r.data().as_ptr(), r.strides(), true),
            None => (ptr::null(), [0; 4], false),
        };
        Ctx {
            x: args.x.data().as_ptr(),
            w: args.w.data().as_ptr(),
            sy: y.strides(),
            y: y.data_mut().as_mut_ptr(),
            r,
            has_r,
            bias: args.epilogue.bias,
            sx: args.x.strides(),
            sw: args.w.strides(),
            sr,
            xd: g.input().to_array(),
            yd: g.output().to_array(),
            kh,
            kw,
            sh,
            sww,
            dh,
            dw,
            pt: p.top,
            pl: p.left,
            cig: g.filter().i,
            cog: g.output().c / g.groups(),
            act: Act::new(args.epilogue.activation),
        }
    }

    /// The context of output channels `o0..o1` (`o0 < o1 <= K`): whole groups if
    /// `by_group` (`o0`, `o1` multiples of `cog`; their input channels only), else
    /// channels of a single group (the whole input).
    #[cfg(feature = "rayon")]
    pub(super) fn slab(&self, o0: usize, o1: usize, by_group: bool) -> Self {
        debug_assert!(o0 < o1 && o1 <= self.yd[1]);
        let mut s = *self;
        if by_group {
            debug_assert!(o0.is_multiple_of(self.cog) && o1.is_multiple_of(self.cog));
            let (g0, g1) = (o0 / self.cog, o1 / self.cog);
            // In range: input channel `g0 * cig < C` (as `o0 < K`).
            s.x = self.x.wrapping_add(g0 * self.cig * self.sx[1]);
            s.xd[1] = (g1 - g0) * self.cig;
        } else {
            s.cog = o1 - o0;
        }
        // Output channel `o0 < K`: in range of the filter, output and residual views.
        s.w = self.w.wrapping_add(o0 * self.sw[0]);
        s.y = self.y.wrapping_add(o0 * self.sy[1]);
        s.r = self.r.wrapping_add(o0 * self.sr[1]);
        s.bias = self.bias.map(|b| &b[o0..o1]);
        s.yd[1] = o1 - o0;
        s
    }

    /// The context of output rows `r0..r1` (`r0 < r1 <= OH`) of every image: the input
    /// starts `d = max(0, r0 SH - PT)` rows further down with `PT - r0 SH` (or no) top
    /// padding and `d` rows fewer, so slab row `oy` reads the input rows output row
    /// `r0 + oy` does, and the same ones fall in the padding.
    #[cfg(feature = "rayon")]
    pub(super) fn slab_rows(&self, r0: usize, r1: usize) -> Self {
        debug_assert!(r0 < r1 && r1 <= self.yd[2]);
        let mut s = *self;
        // No overflow: `r0 SH` is at most the input row of an in-range output row's
        // first tap plus the padding, which the geometry checked.
        let shift = r0 * self.sh;
        let d = shift.saturating_sub(self.pt);
        s.pt = self.pt.saturating_sub(shift);
        // Past the last input row (`d > H`) only when every window of the slab lies in
        // the bottom padding: then `xd[2] = 0` and no row is read.
        s.x = self.x.wrapping_add(d * self.sx[2]);
        s.xd[2] = self.xd[2] - d.min(self.xd[2]);
        s.y = self.y.wrapping_add(r0 * self.sy[2]);
        s.r = self.r.wrapping_add(r0 * self.sr[2]);
        s.yd[2] = r1 - r0;
        s
    }

    /// Epilogue of one scalar output `[n, o, oy, ox]` with accumulated `acc`, stored.
    ///
    /// # Safety
    /// `[n, o, oy, ox]` must be in range of the output.
    #[inline(always)]
    pub(super) unsafe fn store_scalar(&self, n: usize, o: usize, oy: usize, ox: usize, acc: f32) {
        let mut v = acc;
        if let Some(b) = self.bias {
            v += b[o];
        }
        if self.has_r {
            let ro = n * self.sr[0] + o * self.sr[1] + oy * self.sr[2] + ox * self.sr[3];
            // SAFETY: in-range index of the residual view (same dims as the output).
            v += unsafe { *self.r.add(ro) };
        }
        let yo = n * self.sy[0] + o * self.sy[1] + oy * self.sy[2] + ox * self.sy[3];
        // SAFETY: in-range index of the output view (caller).
        unsafe { *self.y.add(yo) = self.act.scalar(v) };
    }
}

pub(crate) fn run(args: ConvArgs<'_, '_>, mut y: TensorViewMut<'_, f32>) -> Result<()> {
    if args.g.is_depthwise() && args.g.groups() > 1 {
        // One input channel per group: the depthwise kernels are the direct loops for it.
        return super::depthwise::run(args, y);
    }
    let ctx = Ctx::new(&args, &mut y);
    let sw = ctx.sw;
    let fd = args.w.dims();
    let (exec, layout) = (args.exec, args.layout);
    par_slabs(exec, args.g.groups(), layout, ctx, |ctx| match layout {
        Layout::Nchw => exec.dispatch(NchwCols { c: ctx }),
        Layout::Nhwc if sw[0] == 1 || fd.o == 1 => exec.dispatch(NhwcOc { c: ctx }),
        Layout::Nhwc if sw[1] == 1 || fd.i == 1 => exec.dispatch(NhwcDot { c: ctx }),
        _ => generic(exec, ctx, layout),
    });
    Ok(())
}

/// Fewest output elements per worker of [`par_slabs`] (below that, handing work to a
/// thread costs more than it saves).
#[cfg(feature = "rayon")]
const MIN_SLAB_OUTPUTS: usize = 1 << 14;

/// Runs `run` on `ctx` split into slabs over `exec.threads()` workers (with feature
/// `rayon`; else, or for small outputs, on `ctx` whole), each slab a contiguous share of
/// the output: in NCHW output channels (with one group any range, multiples of 16 but
/// the last; with more, whole groups), in NHWC output rows (a channel split there made
/// both cores stream every input line: depthwise_3x3 ran 1.2x slower on two threads).
pub(super) fn par_slabs<'a>(
    exec: &crate::Exec,
    groups: usize,
    layout: Layout,
    ctx: Ctx<'a>,
    run: impl Fn(Ctx<'a>) + Sync,
) {
    #[cfg(feature = "rayon")]
    {
        let k = ctx.yd[1];
        let rows = layout == Layout::Nhwc;
        let (unit, units, total) = if rows {
            (1, ctx.yd[2], ctx.yd[2])
        } else if groups > 1 {
            (ctx.cog, groups, k)
        } else {
            (16, k.div_ceil(16), k)
        };
        // Fits: the output's element count was checked by the geometry.
        let outputs = ctx.yd.iter().product::<usize>();
        let workers = exec.threads().min(units).min(outputs / MIN_SLAB_OUTPUTS).max(1);
        if workers > 1 {
            /// The context shared by the workers.
            struct Shared<'a>(Ctx<'a>);
            // SAFETY: workers only read through `x`, `w`, `r` and `bias`, and write
            // disjoint slabs of the output through `y` (`Ctx::slab`, `Ctx::slab_rows`);
            // the views behind the pointers stay borrowed by the caller until every
            // worker returned.
            unsafe impl Sync for Shared<'_> {}
            let shared = Shared(ctx);
            let bound = |i: usize| ((units * i / workers) * unit).min(total);
            let slab = |i: usize| {
                let s = &shared;
                let (a, b) = (bound(i), bound(i + 1));
                run(if rows { s.0.slab_rows(a, b) } else { s.0.slab(a, b, groups > 1) });
            };
            // The calling thread runs slab 0 and rayon's workers the others.
            crate::par::fork_join(0..workers, slab);
            return;
        }
    }
    let _ = (exec, groups, layout);
    run(ctx);
}

/// One output `[n, o, oy, ox]` of the plain convolution (no epilogue), over any strides.
#[inline(always)]
fn conv_at(c: &Ctx<'_>, n: usize, o: usize, oy: usize, ox: usize) -> f32 {
    let [_, _, h, w] = c.xd;
    let ic0 = (o / c.cog) * c.cig;
    let mut acc = 0.0f32;
    for i in 0..c.cig {
        for ky in 0..c.kh {
            let Some(iy) = input_coord(oy, c.sh, ky, c.dh, c.pt, h) else { continue };
            for kx in 0..c.kw {
                let Some(ix) = input_coord(ox, c.sww, kx, c.dw, c.pl, w) else { continue };
                let xo = n * c.sx[0] + (ic0 + i) * c.sx[1] + iy * c.sx[2] + ix * c.sx[3];
                let wo = o * c.sw[0] + i * c.sw[1] + ky * c.sw[2] + kx * c.sw[3];
                // SAFETY: in-range indices of the input and filter views.
                acc += unsafe { *c.x.add(xo) * *c.w.add(wo) };
            }
        }
    }
    acc
}

/// The fallback over any filter strides and column stride: plain sums into a stack tile
/// along the output's contiguous dimension, then the epilogue with [`apply_run`] and one
/// copy out.
struct Generic<'a> {
    c: Ctx<'a>,
    layout: Layout,
}

impl WithSimd for Generic<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        const T: usize = 64;
        let c = &self.c;
        let [nb, k, oh, ow] = c.yd;
        let mut tile = [0.0f32; T];
        match self.layout {
            Layout::Nchw => {
                for n in 0..nb {
                    for o in 0..k {
                        let bias = c.bias.map_or(RunBias::None, |b| RunBias::Broadcast(b[o]));
                        for oy in 0..oh {
                            let mut ox0 = 0;
                            while ox0 < ow {
                                let len = (ow - ox0).min(T);
                                for (j, t) in tile[..len].iter_mut().enumerate() {
                                    *t = conv_at(c, n, o, oy, ox0 + j);
                                }
                                let yo = n * c.sy[0] + o * c.sy[1] + oy * c.sy[2] + ox0;
                                let ro = n * c.sr[0] + o * c.sr[1] + oy * c.sr[2] + ox0;
                                flush(simd, c, &mut tile[..len], yo, ro, bias);
                                ox0 += len;
                            }
                        }
                    }
                }
            }
            Layout::Nhwc => {
                for n in 0..nb {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut o0 = 0;
                            while o0 < k {
                                let len = (k - o0).min(T);
                                for (j, t) in tile[..len].iter_mut().enumerate() {
                                    *t = conv_at(c, n, o0 + j, oy, ox);
                                }
                                let bias =
                                    c.bias.map_or(RunBias::None, |b| RunBias::PerElement(&b[o0..o0 + len]));
                                let yo = n * c.sy[0] + o0 + oy * c.sy[2] + ox * c.sy[3];
                                let ro = n * c.sr[0] + o0 + oy * c.sr[2] + ox * c.sr[3];
                                flush(simd, c, &mut tile[..len], yo, ro, bias);
                                o0 += len;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Applies the epilogue to one run of plain sums and writes it to `y + yo` (the run is
/// contiguous in `y` and in the residual at `ro`, or has length 1).
#[inline(always)]
fn flush<S: Simd>(simd: S, c: &Ctx<'_>, tile: &mut [f32], yo: usize, ro: usize, bias: RunBias<'_>) {
    let len = tile.len();
    // SAFETY: the run's residual elements are in range and contiguous (same layout as the
    // output: unit stride along the run, or a run of one).
    let res = c.has_r.then(|| unsafe { core::slice::from_raw_parts(c.r.add(ro), len) });
    apply_run(simd, tile, bias, res, c.act.act);
    for (j, v) in tile.iter().enumerate() {
        // SAFETY: in-range output elements, contiguous along the run.
        unsafe { *c.y.add(yo + j) = *v };
    }
}

/// Runs the fallback path.
pub(super) fn generic(exec: &crate::Exec, c: Ctx<'_>, layout: Layout) {
    exec.dispatch(Generic { c, layout });
}

// ---------------------------------------------------------------------------------------
// NCHW: vectors over output columns.

/// One output vector: row `oy`, columns `ox..ox + nl` (`nl <= lanes`).
#[derive(Clone, Copy, Default)]
pub(super) struct Cols {
    pub oy: usize,
    pub ox: usize,
    pub nl: usize,
}

/// The `j`-th output vector of a plane: each row has `per_row` vectors; the last one of a
/// row overlaps its predecessor so that every vector is full when the row is at least one
/// vector wide.
#[inline(always)]
pub(super) fn plane_vector(j: usize, per_row: usize, ow: usize, lanes: usize, overlap: bool) -> Cols {
    let oy = j / per_row;
    let k = j % per_row;
    if ow < lanes {
        Cols { oy, ox: 0, nl: ow }
    } else if overlap {
        Cols { oy, ox: (k * lanes).min(ow - lanes), nl: lanes }
    } else {
        Cols { oy, ox: k * lanes, nl: (ow - k * lanes).min(lanes) }
    }
}

/// A range of input channels (relative to the group) of a block, and whether it is the
/// first (accumulators start at zero, else from the partial sums in `y`) and the last
/// (apply the epilogue, else store partial sums).
#[derive(Clone, Copy)]
pub(super) struct Chunk {
    pub i0: usize,
    pub i1: usize,
    pub first: bool,
    pub last: bool,
}

/// Splits `cig` input channels into chunks whose weights for `oc` output channels stay
/// in L1 (about 24 KiB).
pub(super) fn chunking(cig: usize, oc: usize, taps: usize) -> (usize, usize) {
    let per = (24 * 1024 / (oc * taps * 4).max(1)).max(8);
    let n = cig.div_ceil(per).max(1);
    (n, cig.div_ceil(n))
}

impl Chunk {
    pub(super) fn nth(k: usize, n: usize, size: usize, cig: usize) -> Chunk {
        Chunk { i0: k * size, i1: ((k + 1) * size).min(cig), first: k == 0, last: k + 1 == n }
    }
}

/// True when every tap of vector `v` reads inside the input (no masks needed).
#[inline(always)]
pub(super) fn cols_interior(c: &Ctx<'_>, v: &Cols, lanes: usize) -> bool {
    let [_, _, h, w] = c.xd;
    let y0 = v.oy * c.sh;
    let y1 = y0 + (c.kh - 1) * c.dh;
    let x1 = v.ox + lanes - 1 + (c.kw - 1) * c.dw;
    v.nl == lanes && y0 >= c.pt && y1 < h + c.pt && v.ox >= c.pl && x1 < w + c.pl
}

struct NchwCols<'a> {
    c: Ctx<'a>,
}

impl WithSimd for NchwCols<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = &self.c;
        // Column stride 1 loads input vectors; larger strides gather them (G).
        match (S::F32_LANES, c.sww == 1) {
            (16 | 4, true) => nchw_plane::<S, 8, 3, false>(simd, c),
            (16 | 4, false) => nchw_plane::<S, 8, 3, true>(simd, c),
            (8, true) => nchw_plane::<S, 4, 3, false>(simd, c),
            (8, false) => nchw_plane::<S, 4, 3, true>(simd, c),
            (_, true) => nchw_plane::<S, 4, 4, false>(simd, c),
            (_, false) => nchw_plane::<S, 4, 4, true>(simd, c),
        }
    }
}

#[inline(always)]
fn nchw_plane<S: Simd, const MR: usize, const NR: usize, const G: bool>(simd: S, c: &Ctx<'_>) {
    let lanes = S::F32_LANES;
    let [nb, _, oh, ow] = c.yd;
    let groups = c.yd[1] / c.cog;
    let per_row = if ow < lanes { 1 } else { ow.div_ceil(lanes) };
    let total = oh * per_row;
    let (nchunks, csize) = chunking(c.cig, MR, c.kh * c.kw);
    // Overlapping vectors would add a chunk twice to the shared columns.
    let overlap = nchunks == 1;
    for n in 0..nb {
        for g in 0..groups {
            let ic0 = g * c.cig;
            let mut o = g * c.cog;
            let oend = o + c.cog;
            while o < oend {
                let m = if oend - o >= MR { MR } else { 1 };
                for k in 0..nchunks {
                    let ch = Chunk::nth(k, nchunks, csize, c.cig);
                    let mut j = 0;
                    while j < total {
                        if total - j >= NR {
                            let mut vs = [Cols::default(); NR];
                            let mut inner = true;
                            for (i, v) in vs.iter_mut().enumerate() {
                                *v = plane_vector(j + i, per_row, ow, lanes, overlap);
                                inner &= !G && cols_interior(c, v, lanes);
                            }
                            // SAFETY: n, channels o..o+m, ic0..ic0+cig and the vectors are in range.
                            unsafe {
                                match (m == MR, inner) {
                                    (true, true) => {
                                        nchw_block::<S, MR, NR, false, G>(simd, c, n, ic0, o, ch, &vs)
                                    }
                                    (true, false) => {
                                        nchw_block::<S, MR, NR, true, G>(simd, c, n, ic0, o, ch, &vs)
                                    }
                                    (false, true) => {
                                        nchw_block::<S, 1, NR, false, G>(simd, c, n, ic0, o, ch, &vs)
                                    }
                                    (false, false) => {
                                        nchw_block::<S, 1, NR, true, G>(simd, c, n, ic0, o, ch, &vs)
                                    }
                                }
                            }
                            j += NR;
                        } else {
                            let vs = [plane_vector(j, per_row, ow, lanes, overlap)];
                            let inner = !G && cols_interior(c, &vs[0], lanes);
                            // SAFETY: as above.
                            unsafe {
                                match (m == MR, inner) {
                                    (true, true) => {
                                        nchw_block::<S, MR, 1, false, G>(simd, c, n, ic0, o, ch, &vs)
                                    }
                                    (true, false) => {
                                        nchw_block::<S, MR, 1, true, G>(simd, c, n, ic0, o, ch, &vs)
                                    }
                                    (false, true) => {
                                        nchw_block::<S, 1, 1, false, G>(simd, c, n, ic0, o, ch, &vs)
                                    }
                                    (false, false) => {
                                        nchw_block::<S, 1, 1, true, G>(simd, c, n, ic0, o, ch, &vs)
                                    }
                                }
                            }
                            j += 1;
                        }
                    }
                }
                o += m;
            }
        }
    }
}

/// `MR` output channels from `o0` x `NR` column vectors. With `EDGE = false` every tap of
/// every vector must read inside the input ([`cols_interior`]).
///
/// # Safety
/// `n`, `o0..o0 + MR` (within one group starting at input channel `ic0`) and the vectors
/// must be in range of the output.
#[inline(always)]
unsafe fn nchw_block<S: Simd, const MR: usize, const NR: usize, const EDGE: bool, const G: bool>(
    simd: S,
    c: &Ctx<'_>,
    n: usize,
    ic0: usize,
    o0: usize,
    ch: Chunk,
    vs: &[Cols; NR],
) {
    let lanes = S::F32_LANES;
    let [_, _, h, w] = c.xd;
    let zero = simd.splat_f32s(0.0);
    let mut acc = if ch.first {
        [[zero; NR]; MR]
    } else {
        // SAFETY: the partial sums this block stored for an earlier chunk (caller's ranges).
        unsafe { nchw_partial::<S, MR, NR>(simd, c, n, o0, vs, None) }
    };
    let xb = c.x.wrapping_add(n * c.sx[0] + ic0 * c.sx[1]);
    let wb = c.w.wrapping_add(o0 * c.sw[0]);
    let (sxc, swi, swo) = (c.sx[1], c.sw[1], c.sw[0]);
    for ky in 0..c.kh {
        let mut rowp = [xb; NR];
        let mut rowok = [true; NR];
        let mut any = false;
        for v in 0..NR {
            match input_coord(vs[v].oy, c.sh, ky, c.dh, c.pt, h) {
                Some(iy) => {
                    rowp[v] = xb.wrapping_add(iy * c.sx[2]);
                    any = true;
                }
                None => rowok[v] = false,
            }
        }
        if !any {
            continue;
        }
        for kx in 0..c.kw {
            let mut xp = [xb; NR];
            let mut lo = [0usize; NR];
            let mut hi = [lanes; NR];
            for v in 0..NR {
                if G {
                    // Lane j reads column (ox + j) * sww + kx * dw - pl: valid lanes are
                    // lo..hi, at unit steps of sww from the column of lane 0.
                    let a = vs[v].ox * c.sww + kx * c.dw; // column of lane 0, plus pl
                    xp[v] = rowp[v].wrapping_add(a).wrapping_sub(c.pl);
                    if rowok[v] {
                        lo[v] = c.pl.saturating_sub(a).div_ceil(c.sww).min(lanes);
                        hi[v] = if w + c.pl > a { ((w + c.pl - a - 1) / c.sww + 1).min(lanes) } else { 0 };
                    } else {
                        hi[v] = 0;
                    }
                    continue;
                }
                // Column of lane 0; may be negative (left padding).
                let off = vs[v].ox + kx * c.dw;
                xp[v] = rowp[v].wrapping_add(off).wrapping_sub(c.pl);
                if EDGE {
                    if rowok[v] {
                        // Lanes j with 0 <= off + j - pl < w.
                        lo[v] = c.pl.saturating_sub(off).min(lanes);
                        hi[v] = (w + c.pl).saturating_sub(off).min(lanes);
                    } else {
                        hi[v] = 0;
                    }
                }
            }
            let mut gbuf = [[0.0f32; 16]; NR];
            let mut full = [true; NR];
            let mut masks = [lane_mask(simd, 0, lanes); NR];
            if EDGE && !G {
                for v in 0..NR {
                    full[v] = lo[v] == 0 && hi[v] == lanes;
                    masks[v] = lane_mask(simd, lo[v], hi[v]);
                }
            }
            let wp = wb.wrapping_add(ky * c.sw[2] + kx * c.sw[3]);
            for i in ch.i0..ch.i1 {
                let mut xv = [zero; NR];
                for v in 0..NR {
                    let p = xp[v].wrapping_add(i * sxc);
                    if G {
                        // Lanes outside lo..hi stay zero in `gbuf` for this tap.
                        for j in lo[v]..hi[v] {
                            // SAFETY: lane j's column is inside an in-range input row.
                            gbuf[v][j] = unsafe { *p.wrapping_add(j * c.sww) };
                        }
                        // SAFETY: `gbuf[v]` holds 16 >= lanes floats.
                        xv[v] = unsafe { ptr::read_unaligned(gbuf[v].as_ptr() as *const S::f32s) };
                        continue;
                    }
                    xv[v] = if EDGE && !full[v] {
                        // SAFETY: lanes lo..hi are columns inside the row of an in-range
                        // input row and channel; the row is contiguous (NCHW, or width 1
                        // where only column 0 is a valid lane). Other lanes are not read.
                        unsafe { simd.mask_load_ptr_f32s(masks[v], p) }
                    } else {
                        // SAFETY: all lanes are in-range columns (interior or full).
                        unsafe { ptr::read_unaligned(p as *const S::f32s) }
                    };
                }
                let wpi = wp.wrapping_add(i * swi);
                for (m, am) in acc.iter_mut().enumerate() {
                    // SAFETY: weight [o0 + m, i, ky, kx] is in range.
                    let wv = simd.splat_f32s(unsafe { *wpi.add(m * swo) });
                    for v in 0..NR {
                        am[v] = simd.mul_add_e_f32s(wv, xv[v], am[v]);
                    }
                }
            }
        }
    }
    if !ch.last {
        // SAFETY: in-range output rows (caller).
        unsafe { nchw_partial::<S, MR, NR>(simd, c, n, o0, vs, Some(acc)) };
        return;
    }
    for (m, am) in acc.iter().enumerate() {
        let o = o0 + m;
        let b = c.bias.map(|b| simd.splat_f32s(b[o]));
        for v in 0..NR {
            let Cols { oy, ox, nl } = vs[v];
            let mut val = am[v];
            if let Some(b) = b {
                val = simd.add_f32s(val, b);
            }
            if c.has_r {
                let ro = n * c.sr[0] + o * c.sr[1] + oy * c.sr[2] + ox;
                // SAFETY: columns ox..ox+nl of an in-range residual row (contiguous).
                val = simd.add_f32s(val, unsafe { load_lanes(simd, c.r.add(ro), 0, nl) });
            }
            val = c.act.vec(simd, val);
            let yo = n * c.sy[0] + o * c.sy[1] + oy * c.sy[2] + ox;
            // SAFETY: columns ox..ox+nl of an in-range output row (contiguous).
            unsafe { store_lanes(simd, c.y.add(yo), nl, val) };
        }
    }
}

/// Loads (`acc = None`) or stores partial sums of a block, kept out of line of the hot loop
/// so that its accumulators stay in registers.
///
/// # Safety
/// Channels `o0..o0 + MR` and the vectors are in range of the output.
#[inline(never)]
unsafe fn nchw_partial<S: Simd, const MR: usize, const NR: usize>(
    simd: S,
    c: &Ctx<'_>,
    n: usize,
    o0: usize,
    vs: &[Cols; NR],
    acc: Option<[[S::f32s; NR]; MR]>,
) -> [[S::f32s; NR]; MR] {
    // SAFETY: columns ox..ox+nl of an in-range output row (contiguous), as the caller
    // guarantees.
    unsafe {
        partial_io(simd, c.y, acc, |m, v| {
            let Cols { oy, ox, nl } = vs[v];
            (n * c.sy[0] + (o0 + m) * c.sy[1] + oy * c.sy[2] + ox, nl)
        })
    }
}

/// The body of [`nchw_partial`] and [`nhwc_partial`]: accumulator `(m, v)` is the first
/// `at(m, v).1` lanes at `y + at(m, v).0`, loaded when `acc` is `None` (then returned),
/// else stored from `acc`.
///
/// # Safety
/// Those lanes are readable and writable for every `m < MR`, `v < NR`.
#[inline(always)]
unsafe fn partial_io<S: Simd, const MR: usize, const NR: usize>(
    simd: S,
    y: *mut f32,
    acc: Option<[[S::f32s; NR]; MR]>,
    at: impl Fn(usize, usize) -> (usize, usize),
) -> [[S::f32s; NR]; MR] {
    simd.vectorize(
        #[inline(always)]
        || {
            let mut out = acc.unwrap_or([[simd.splat_f32s(0.0); NR]; MR]);
            for (m, am) in out.iter_mut().enumerate() {
                for (v, a) in am.iter_mut().enumerate() {
                    let (yo, nl) = at(m, v);
                    // SAFETY: as the caller guarantees.
                    unsafe {
                        if acc.is_some() {
                            store_lanes(simd, y.add(yo), nl, *a);
                        } else {
                            *a = load_lanes(simd, y.add(yo), 0, nl);
                        }
                    }
                }
            }
            out
        },
    )
}

// ---------------------------------------------------------------------------------------
// NHWC, filter o-stride 1: vectors over output channels.

struct NhwcOc<'a> {
    c: Ctx<'a>,
}

impl WithSimd for NhwcOc<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = &self.c;
        match S::F32_LANES {
            16 | 4 => nhwc_oc_plane::<S, 8, 3>(simd, c),
            8 => nhwc_oc_plane::<S, 4, 3>(simd, c),
            _ => nhwc_oc_plane::<S, 4, 4>(simd, c),
        }
    }
}

/// True when every tap of output pixel `(oy, ox)` reads inside the input.
#[inline(always)]
pub(super) fn pixel_interior(c: &Ctx<'_>, oy: usize, ox: usize) -> bool {
    let [_, _, h, w] = c.xd;
    let y0 = oy * c.sh;
    let x0 = ox * c.sww;
    y0 >= c.pt && y0 + (c.kh - 1) * c.dh < h + c.pt && x0 >= c.pl && x0 + (c.kw - 1) * c.dw < w + c.pl
}

#[inline(always)]
fn nhwc_oc_plane<S: Simd, const MR: usize, const NR: usize>(simd: S, c: &Ctx<'_>) {
    let lanes = S::F32_LANES;
    let [nb, _, oh, ow] = c.yd;
    let groups = c.yd[1] / c.cog;
    let total = oh * ow;
    // Longer chunks than L1 alone would allow: the per-tap setup needs a long inner loop.
    let (nchunks, csize) = chunking(c.cig, (NR * lanes).div_ceil(4), c.kh * c.kw);
    for n in 0..nb {
        for g in 0..groups {
            let ic0 = g * c.cig;
            let oend = (g + 1) * c.cog;
            // Output-channel blocks outside, pixels inside: one block's weights stay in cache.
            let mut o = g * c.cog;
            while o < oend {
                let left = oend - o;
                let (wide, nl) = if left >= NR * lanes { (true, lanes) } else { (false, left.min(lanes)) };
                for k in 0..nchunks {
                    let ch = Chunk::nth(k, nchunks, csize, c.cig);
                    let mut p = 0;
                    while p < total {
                        let m = if total - p >= MR { MR } else { 1 };
                        let mut px = [(0usize, 0usize); MR];
                        let mut inner = true;
                        for (i, q) in px.iter_mut().enumerate().take(m) {
                            *q = ((p + i) / ow, (p + i) % ow);
                            inner &= pixel_interior(c, q.0, q.1);
                        }
                        // SAFETY: pixels, n, the group and channels o.. are in range.
                        unsafe {
                            match (wide, m == MR, inner) {
                                (true, true, true) => {
                                    nhwc_oc_block::<S, MR, NR, false>(simd, c, n, ic0, o, nl, ch, &px)
                                }
                                (true, true, false) => {
                                    nhwc_oc_block::<S, MR, NR, true>(simd, c, n, ic0, o, nl, ch, &px)
                                }
                                (true, false, true) => {
                                    nhwc_oc_block::<S, 1, NR, false>(simd, c, n, ic0, o, nl, ch, &px)
                                }
                                (true, false, false) => {
                                    nhwc_oc_block::<S, 1, NR, true>(simd, c, n, ic0, o, nl, ch, &px)
                                }
                                (false, true, true) => {
                                    nhwc_oc_block::<S, MR, 1, false>(simd, c, n, ic0, o, nl, ch, &px)
                                }
                                (false, true, false) => {
                                    nhwc_oc_block::<S, MR, 1, true>(simd, c, n, ic0, o, nl, ch, &px)
                                }
                                (false, false, true) => {
                                    nhwc_oc_block::<S, 1, 1, false>(simd, c, n, ic0, o, nl, ch, &px)
                                }
                                (false, false, false) => {
                                    nhwc_oc_block::<S, 1, 1, true>(simd, c, n, ic0, o, nl, ch, &px)
                                }
                            }
                        }
                        p += m;
                    }
                }
                o += if wide { NR * lanes } else { nl };
            }
        }
    }
}

/// `MR` pixels x `NR` vectors of output channels from `o0`; the last vector has `nl_last`
/// lanes (the others are full).
///
/// # Safety
/// The first `MR` entries of `px`, `n`, and channels `o0..o0 + (NR-1)*lanes + nl_last`
/// (inside the group of input channel `ic0`) must be in range.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nhwc_oc_block<S: Simd, const MR: usize, const NR: usize, const EDGE: bool>(
    simd: S,
    c: &Ctx<'_>,
    n: usize,
    ic0: usize,
    o0: usize,
    nl_last: usize,
    ch: Chunk,
    px: &[(usize, usize)],
) {
    let lanes = S::F32_LANES;
    let [_, _, h, w] = c.xd;
    let zero = simd.splat_f32s(0.0);
    let mut acc = if ch.first {
        [[zero; NR]; MR]
    } else {
        // SAFETY: the partial sums this block stored for an earlier chunk (caller's ranges).
        unsafe { nhwc_partial::<S, MR, NR>(simd, c, n, o0, nl_last, px, None) }
    };
    let full = nl_last == lanes;
    let xb = c.x.wrapping_add(n * c.sx[0] + ic0);
    let wb = c.w.wrapping_add(o0);
    for ky in 0..c.kh {
        for kx in 0..c.kw {
            let mut xp = [xb; MR];
            let mut ok = [true; MR];
            let mut any = false;
            for m in 0..MR {
                let (oy, ox) = px[m];
                match (input_coord(oy, c.sh, ky, c.dh, c.pt, h), input_coord(ox, c.sww, kx, c.dw, c.pl, w)) {
                    (Some(iy), Some(ix)) => {
                        xp[m] = xb.wrapping_add(iy * c.sx[2] + ix * c.sx[3]);
                        any = true;
                    }
                    _ => ok[m] = false,
                }
            }
            if EDGE && !any {
                continue;
            }
            let okm = ok.map(|b| bool_mask(simd, b));
            let wp = wb.wrapping_add(ky * c.sw[2] + kx * c.sw[3]);
            for i in ch.i0..ch.i1 {
                let wpi = wp.wrapping_add(i * c.sw[1]);
                let mut wv = [zero; NR];
                for (v, wvv) in wv.iter_mut().enumerate() {
                    let p = wpi.wrapping_add(v * lanes);
                    *wvv = if NR == 1 && !full {
                        // SAFETY: channels o0..o0+nl_last of an in-range filter row (o-stride 1,
                        // or a single output channel).
                        unsafe { load_lanes(simd, p, 0, nl_last) }
                    } else {
                        // SAFETY: full vectors of in-range output channels, o-stride 1.
                        unsafe { ptr::read_unaligned(p as *const S::f32s) }
                    };
                }
                for m in 0..MR {
                    // SAFETY: input [n, ic0 + i, iy, ix] is in range (c-stride 1, or one
                    // channel); a padded tap reads pixel [0, 0] instead and is zeroed below.
                    let mut xv = simd.splat_f32s(unsafe { *xp[m].add(i) });
                    if EDGE {
                        // Select, not branch: keeps the accumulators in registers.
                        xv = simd.select_f32s(okm[m], xv, zero);
                    }
                    for v in 0..NR {
                        acc[m][v] = simd.mul_add_e_f32s(xv, wv[v], acc[m][v]);
                    }
                }
            }
        }
    }
    if !ch.last {
        // SAFETY: in-range output pixels and channels (caller).
        unsafe { nhwc_partial::<S, MR, NR>(simd, c, n, o0, nl_last, px, Some(acc)) };
        return;
    }
    for (m, am) in acc.iter().enumerate() {
        let (oy, ox) = px[m];
        for v in 0..NR {
            let o = o0 + v * lanes;
            let nl = if v == NR - 1 { nl_last } else { lanes };
            let mut val = am[v];
            if let Some(b) = c.bias {
                // SAFETY: bias has one entry per output channel; o..o+nl are in range.
                val = simd.add_f32s(val, unsafe { load_lanes(simd, b.as_ptr().add(o), 0, nl) });
            }
            // SAFETY: channels o..o+nl of an in-range output (and residual) pixel.
            unsafe { finish_nhwc(simd, c, n, o, oy, ox, nl, val) };
        }
    }
}

/// Loads (`acc = None`) or stores the partial sums of an NHWC block, out of line.
///
/// # Safety
/// The first `MR` pixels and channels `o0..o0 + (NR-1)*lanes + nl_last` are in range.
#[inline(never)]
unsafe fn nhwc_partial<S: Simd, const MR: usize, const NR: usize>(
    simd: S,
    c: &Ctx<'_>,
    n: usize,
    o0: usize,
    nl_last: usize,
    px: &[(usize, usize)],
    acc: Option<[[S::f32s; NR]; MR]>,
) -> [[S::f32s; NR]; MR] {
    let lanes = S::F32_LANES;
    // SAFETY: channels of an in-range output pixel (c-stride 1), as the caller guarantees.
    unsafe {
        partial_io(simd, c.y, acc, |m, v| {
            let (oy, ox) = px[m];
            let nl = if v == NR - 1 { nl_last } else { lanes };
            (n * c.sy[0] + o0 + v * lanes + oy * c.sy[2] + ox * c.sy[3], nl)
        })
    }
}

// ---------------------------------------------------------------------------------------
// NHWC, filter i-stride 1: dot products over input channels.

struct NhwcDot<'a> {
    c: Ctx<'a>,
}

impl WithSimd for NhwcDot<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = &self.c;
        match S::F32_LANES {
            16 | 4 => nhwc_dot_plane::<S, 4, 4>(simd, c),
            8 => nhwc_dot_plane::<S, 3, 3>(simd, c),
            _ => nhwc_dot_plane::<S, 4, 4>(simd, c),
        }
    }
}

#[inline(always)]
fn nhwc_dot_plane<S: Simd, const MR: usize, const NR: usize>(simd: S, c: &Ctx<'_>) {
    let [nb, _, oh, ow] = c.yd;
    let groups = c.yd[1] / c.cog;
    let total = oh * ow;
    for n in 0..nb {
        for g in 0..groups {
            let ic0 = g * c.cig;
            let o_start = g * c.cog;
            let oend = o_start + c.cog;
            let mut p = 0;
            while p < total {
                let m = if total - p >= MR { MR } else { 1 };
                let mut px = [(0usize, 0usize); MR];
                for (i, q) in px.iter_mut().enumerate().take(m) {
                    *q = ((p + i) / ow, (p + i) % ow);
                }
                let mut o = o_start;
                while o < oend {
                    // SAFETY: pixels, n, the group and channels are in range.
                    unsafe {
                        if oend - o >= NR {
                            if m == MR {
                                nhwc_dot_block::<S, MR, NR>(simd, c, n, ic0, o, &px);
                            } else {
                                nhwc_dot_block::<S, 1, NR>(simd, c, n, ic0, o, &px);
                            }
                            o += NR;
                        } else {
                            if m == MR {
                                nhwc_dot_block::<S, MR, 1>(simd, c, n, ic0, o, &px);
                            } else {
                                nhwc_dot_block::<S, 1, 1>(simd, c, n, ic0, o, &px);
                            }
                            o += 1;
                        }
                    }
                }
                p += m;
            }
        }
    }
}

/// `MR` pixels x `NR` output channels from `o0`, vectors over input channels.
///
/// # Safety
/// The first `MR` pixels, `n` and channels `o0..o0 + NR` (group of `ic0`) are in range.
#[inline(always)]
unsafe fn nhwc_dot_block<S: Simd, const MR: usize, const NR: usize>(
    simd: S,
    c: &Ctx<'_>,
    n: usize,
    ic0: usize,
    o0: usize,
    px: &[(usize, usize)],
) {
    let lanes = S::F32_LANES;
    let [_, _, h, w] = c.xd;
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; NR]; MR];
    let xb = c.x.wrapping_add(n * c.sx[0] + ic0);
    let nfull = c.cig / lanes;
    let rem = c.cig % lanes;
    for ky in 0..c.kh {
        for kx in 0..c.kw {
            let mut xp = [xb; MR];
            let mut ok = [true; MR];
            let mut any = false;
            for m in 0..MR {
                let (oy, ox) = px[m];
                match (input_coord(oy, c.sh, ky, c.dh, c.pt, h), input_coord(ox, c.sww, kx, c.dw, c.pl, w)) {
                    (Some(iy), Some(ix)) => {
                        xp[m] = xb.wrapping_add(iy * c.sx[2] + ix * c.sx[3]);
                        any = true;
                    }
                    _ => ok[m] = false,
                }
            }
            if !any {
                continue;
            }
            let all = ok.iter().all(|&b| b);
            let okm = ok.map(|b| bool_mask(simd, b));
            let mut wp = [c.w; NR];
            for (v, q) in wp.iter_mut().enumerate() {
                *q = c.w.wrapping_add((o0 + v) * c.sw[0] + ky * c.sw[2] + kx * c.sw[3]);
            }
            for k in 0..nfull {
                // SAFETY: full vectors of in-range input and weight channels.
                unsafe {
                    dot_step::<S, MR, NR, false>(simd, &mut acc, &xp, &wp, &okm, all, k * lanes, lanes)
                };
            }
            if rem > 0 {
                // SAFETY: lanes 0..rem of in-range input and weight channels.
                unsafe {
                    dot_step::<S, MR, NR, true>(simd, &mut acc, &xp, &wp, &okm, all, nfull * lanes, rem)
                };
            }
        }
    }
    for (m, am) in acc.iter().enumerate() {
        let (oy, ox) = px[m];
        for (v, a) in am.iter().enumerate() {
            // SAFETY: in-range output index.
            unsafe { c.store_scalar(n, o0 + v, oy, ox, simd.reduce_sum_f32s(*a)) };
        }
    }
}

/// The vectors-over-output-channels NHWC path (filter o-stride 1), for depthwise layers
/// with a channel multiplier.
pub(super) fn run_nhwc_oc(exec: &crate::Exec, c: Ctx<'_>) {
    exec.dispatch(NhwcOc { c });
}

/// One vector of input channels `off..off + hi` of a dot-product block.
///
/// # Safety
/// Lanes `0..hi` (all lanes unless `TAIL`) at `xp[m] + off` and `wp[v] + off` are readable.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_step<S: Simd, const MR: usize, const NR: usize, const TAIL: bool>(
    simd: S,
    acc: &mut [[S::f32s; NR]; MR],
    xp: &[*const f32; MR],
    wp: &[*const f32; NR],
    okm: &[S::m32s; MR],
    all: bool,
    off: usize,
    hi: usize,
) {
    let zero = simd.splat_f32s(0.0);
    let mut xv = [zero; MR];
    for m in 0..MR {
        // SAFETY: lanes 0..hi readable (caller).
        xv[m] = unsafe { load_n::<S, TAIL>(simd, xp[m].wrapping_add(off), hi) };
        if !all {
            xv[m] = simd.select_f32s(okm[m], xv[m], zero);
        }
    }
    for v in 0..NR {
        // SAFETY: lanes 0..hi readable (caller).
        let wv = unsafe { load_n::<S, TAIL>(simd, wp[v].wrapping_add(off), hi) };
        for m in 0..MR {
            acc[m][v] = simd.mul_add_e_f32s(xv[m], wv, acc[m][v]);
        }
    }
}

/// Lanes `0..hi` (all lanes unless `TAIL`) from `p`.
///
/// # Safety
/// Those lanes are readable.
#[inline(always)]
unsafe fn load_n<S: Simd, const TAIL: bool>(simd: S, p: *const f32, hi: usize) -> S::f32s {
    if TAIL {
        // SAFETY: lanes 0..hi readable (caller).
        unsafe { simd.mask_load_ptr_f32s(lane_mask(simd, 0, hi), p) }
    } else {
        // SAFETY: all lanes readable (caller).
        unsafe { ptr::read_unaligned(p as *const S::f32s) }
    }
}
