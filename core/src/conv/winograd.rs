//! Winograd F(4x4, 3x3) for 3x3 stride-1 convolution (Lavin and Gray, 2015).
//!
//! Each 4x4 block of outputs of one output channel is
//! `Y = A^T [ sum_c (G g_c G^T) . (B^T d_c B) ] A`, with `g_c` the 3x3 filter of input
//! channel `c` and `d_c` the 6x6 input patch under the block (`.` is the element-wise
//! product), for the interpolation points `0, 1, -1, 2, -2, inf`:
//!
//! ```text
//!        | 4  0 -5  0  1  0 |        | 1/4    0     0   |         | 1 1  1 1  1 0 |
//!        | 0 -4 -4  1  1  0 |        | -1/6 -1/6  -1/6  |   A^T = | 0 1 -1 2 -2 0 |
//! B^T =  | 0  4 -4 -1  1  0 |   G =  | -1/6  1/6  -1/6  |         | 0 1  1 4  4 0 |
//!        | 0 -2 -1  2  1  0 |        | 1/24 1/12  1/6   |         | 0 1 -1 8 -8 1 |
//!        | 0  2 -1 -2  1  0 |        | 1/24 -1/12 1/6   |
//!        | 0  4  0 -5  0  1 |        | 0      0     1   |
//! ```
//!
//! The sum over `c` is, for each of the 36 transformed positions `xi`, a matrix product
//! `M[xi] (tiles x K) = V[xi] (tiles x C) * U[xi] (C x K)`: 36 products of `C * K`
//! multiplications per tile instead of the direct `16 * 9 * C * K`: 36 / 16 = 2.25
//! multiplications per output, input channel and filter instead of 9 (4x fewer).
//!
//! The products run in this module's own register-blocked kernel (6 tiles x 4 vectors of
//! output channels on AVX-512 and NEON, 6 x 2 on AVX2), which reads `U` where it lies:
//! `gemm` would repack all 36 `U[xi]` for every block of tiles (a profile of the first,
//! `gemm`-based version spent 13-16% of its samples in `gemm`'s packing layer; this kernel
//! ran 5-15% faster relative to im2col in the same runs, on a loaded machine).
//!
//! Layout: the transformed filter `U` is `[group][xi]` blocks of `C_g x K_g`, each stored
//! as panels of 64 output channels on AVX-512, 16 elsewhere (`[panel][c][width]`, the last
//! panel narrower; see [`panel_width`]) so the kernel streams its filter vectors; `K_g` is padded to a multiple of 16 (so every SIMD
//! width stores whole vectors). Tiles of a block are transformed into `V = [xi][tile][c]`
//! and multiplied into `M = [xi][tile][k]` (channels padded likewise, tiles to a multiple
//! of 6).
//! All three transforms are vectorised across channels: input channels for `B^T d B`,
//! output channels for `G g G^T` and `A^T M A`. An NHWC view loads a pixel's channels as
//! one vector; an NCHW view gathers them (one scalar load per channel), and writes the
//! outputs through a stage of whole row runs. On AVX2, NCHW patches of 8 whole channels
//! of an undilated layer instead load each channel's patch row as one vector (columns in
//! the padding zeroed afterwards) and transpose 8 of them, and the stage takes a tile row's 4 output columns of
//! 8 channels with one 4x4 transpose per 128-bit half (vgg_conv1_2 NCHW 16% faster;
//! AVX-512 keeps the scalar gather, for want of a machine to test a 16-lane version on).
//!
//! The epilogue (bias, residual, activation) is applied to the vectors the output
//! transform produces, before they are stored: no second pass over `y`.
//!
//! Dilation `d` (stride 1) is decomposed into `d_h * d_w` polyphase convolutions: outputs
//! `(oh, ow)` with the same `(oh mod d_h, ow mod d_w)` read only input rows and columns of
//! one residue class, so each phase is an undilated 3x3 convolution on strided sub-views
//! of `x` and `y`, with its own top / left padding.
//!
//! ## Rounding error
//!
//! With `u = 2^-24` and `gamma(n) = n u / (1 - n u)`, each computed output satisfies, to
//! first order,
//!
//! `|y - y_exact| <= gamma(C_g + 32) * sum_c |A^T| (|G| |g_c| |G^T| . |B^T| |d_c| |B|) |A|`
//!
//! (the filter transform is two 3-term sums with rounded constants, at most 8 roundings;
//! the input transform two 4-term sums with exact constants, 8; the products and the sum
//! over `C_g` channels, `C_g + 1`; the output transform two 5-term sums, 10; the epilogue's
//! bias and residual adds, 2; plus slack, against the direct sum's `gamma(9 C_g)`). Bounding
//! `|g_c| <= max|g_c|` and `|d_c| <= max|d_c|` element-wise gives
//!
//! `|y - y_exact| <= gamma(C_g + 32) * 48^2 * sum_c max|g_c| max|d_c|`,
//!
//! where `48 = max_i sum_xi |A^T[i][xi]| rowsum|G|[xi] rowsum|B^T|[xi]` (row sums of `G`:
//! `1/4, 1/2, 1/2, 7/24, 7/24, 1`; of `B^T`: `10, 10, 10, 6, 6, 10`; row 3 of `A^T` gives
//! `5 + 5 + 8 * 1.75 * 2 + 10 = 48`). This is much looser than what the sum of |w||x| of a
//! direct sum allows: Winograd trades accuracy for speed, and F(4x4, 3x3) is the largest
//! tile whose error stays within single precision for the usual layer widths (measured
//! maximum relative errors are in the convbench results).

use core::marker::PhantomData;

use pulp::{Simd, WithSimd};

use super::matmul::split;
use super::ConvArgs;
use crate::error::{Dim, Error, Operand, Result, Unsupported};
use crate::geometry::{ConvGeometry, FilterDims};
use crate::isa::{Exec, Isa};
use crate::params::{Activation, Epilogue};
use crate::simd_util::prefetch_l2;
use crate::tensor::{FilterView, TensorView, TensorViewMut};

/// Transformed positions per tile (6 x 6).
pub(crate) const XI: usize = 36;
/// Channel padding of `U`, `V` and `M`: the widest SIMD vector (AVX-512, 16 floats).
pub(crate) const PAD: usize = 16;
/// Target floats of one worker's `V` and `M` tile buffers together (4 MiB): the 36
/// products of a block then find their operands in L2 / L3.
const TILE_BUDGET: usize = 1 << 20;
/// Output channels per panel of `U` ([`Shape::panel`]) for the ISA that packs it: `U[xi]`
/// is stored as panels of that many channels (the last one narrower), each `[c][panel]`,
/// so the product kernel streams its filter vectors. A panel is one strip of the
/// products' register block, 4 x 16 channels on AVX-512 and 2 x 8 on AVX2 (4 x 4 on NEON,
/// 4 x 1 scalar, within panels of 16): its rows are then contiguous. AVX2 used to read
/// 16-channel strips out of 64-channel panels, rows 256 bytes apart: those map onto a
/// quarter of L1's sets, so a strip of 256 or more input channels (16 KB) no longer
/// stayed in L1 between blocks of tiles, and every filter load waited on L2. Panels of 16
/// measured, in-process A/B on an AVX2-only AMD EPYC (20 interleaved calls, medians,
/// outputs bitwise identical), one thread: vgg_conv5_2 0.67x the time in both layouts,
/// soumith_l5 0.72-0.74x, vgg_conv3_2 0.82-0.83x; 64-channel layers (vgg_conv1_2,
/// dilated_3x3_d2) 0.97-1.04x; two threads: vgg_conv5_2 0.74x, soumith_l5 0.79x,
/// vgg_conv3_2 0.89x.
#[must_use]
pub(crate) fn panel_width(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 64,
        _ => 16,
    }
}

/// Offset of `(c, k)` in one `U[xi]` of `cg x kgp` in panels of `panel` channels, and the
/// width of `k`'s panel.
#[inline(always)]
fn panel_at(c: usize, k: usize, cg: usize, kgp: usize, panel: usize) -> (usize, usize) {
    let p0 = k / panel * panel;
    let width = panel.min(kgp - p0);
    (p0 * cg + c * width + (k - p0), width)
}

/// Tiles per register block of the tile-product kernel; blocks of tiles are padded to it.
const ROWS: usize = 6;
/// Fewest tiles per worker before threads split the tiles rather than the products.
const MIN_WORKER_TILES: usize = 2 * ROWS;

/// Checks that `g` is a 3x3 stride-1 convolution (any dilation, padding, groups).
pub(crate) fn supports(g: &ConvGeometry) -> Result<()> {
    let win = g.window();
    if win.kernel() == [3, 3] && win.stride() == [1, 1] {
        Ok(())
    } else {
        Err(Error::Unsupported(Unsupported::WinogradNeeds3x3Stride1))
    }
}

/// Channel counts of one group, and their padded extents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) groups: usize,
    pub(crate) cg: usize,
    pub(crate) kg: usize,
    pub(crate) cgp: usize,
    pub(crate) kgp: usize,
    /// Output channels per panel of `U` (see [`panel_width`]; 16 divides it, and `kgp`).
    pub(crate) panel: usize,
}

fn round_up(n: usize) -> Result<usize> {
    n.checked_next_multiple_of(PAD).ok_or(Error::Overflow { dim: Dim::Channels })
}

pub(crate) fn mul(a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or(Error::Overflow { dim: Dim::Channels })
}

impl Shape {
    pub(crate) fn of(g: &ConvGeometry) -> Result<Shape> {
        supports(g)?;
        let f = g.filter();
        let groups = g.groups();
        let kg = f.o / groups;
        let panel = panel_width(Isa::Scalar);
        Ok(Shape { groups, cg: f.i, kg, cgp: round_up(f.i)?, kgp: round_up(kg)?, panel })
    }

    /// This shape with `U` in panels of `panel` channels.
    #[must_use]
    pub(crate) fn with_panel(self, panel: usize) -> Shape {
        Shape { panel, ..self }
    }

    /// Floats of the transformed filter: `groups * 36 * C_g * K_g` (padded).
    fn packed_len(&self) -> Result<usize> {
        mul(mul(mul(self.groups, XI)?, self.cg)?, self.kgp)
    }

    /// Floats of `V` and `M` for one tile (blocks hold a multiple of [`ROWS`] tiles).
    pub(crate) fn per_tile(&self) -> Result<usize> {
        mul(XI, self.cgp.checked_add(self.kgp).ok_or(Error::Overflow { dim: Dim::Channels })?)
    }
}

/// One polyphase sub-convolution: outputs `(dh * a + ph, dw * b + pw)` from input rows
/// `dh * i + rh` and columns `dw * j + rw`, an undilated 3x3 convolution with padding
/// `(pad_t, pad_l)` on an `ih x iw` sub-input giving an `oh x ow` sub-output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Phase {
    pub(crate) ph: usize,
    pub(crate) pw: usize,
    pub(crate) rh: usize,
    pub(crate) rw: usize,
    pub(crate) ih: usize,
    pub(crate) iw: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) pad_t: usize,
    pub(crate) pad_l: usize,
    /// Tile rows and columns.
    pub(crate) th: usize,
    pub(crate) tw: usize,
}

/// The phase of one axis: `(residue, sub-input extent, sub-output extent, pad)`.
fn axis_phase(p: usize, d: usize, pad: usize, input: usize, output: usize) -> (usize, usize, usize, usize) {
    // Fit: p < d and pad <= the padded extent, both far below isize::MAX for a validated
    // geometry (its element counts fit usize and its extents are sums of them).
    let e = p as isize - pad as isize;
    let q = e.div_euclid(d as isize);
    let r = e.rem_euclid(d as isize) as usize;
    let sub_in = if r < input { (input - r).div_ceil(d) } else { 0 };
    let sub_out = if p < output { (output - p).div_ceil(d) } else { 0 };
    // q <= 0 because p < d: the sub-convolution's padding is -q.
    (r, sub_in, sub_out, q.unsigned_abs())
}

/// The phases with at least one output: residues below both the dilation and the output
/// extent (a residue `p >= OH` owns no output row), so there are at most `OH * OW` of them
/// however large the dilation is.
pub(crate) fn phases(g: &ConvGeometry) -> impl Iterator<Item = Phase> + '_ {
    let win = g.window();
    let [dh, dw] = win.dilation();
    let pad = win.padding();
    let (i, o) = (g.input(), g.output());
    (0..dh.min(o.h)).flat_map(move |ph| {
        (0..dw.min(o.w)).map(move |pw| {
            let (rh, ih, oh, pad_t) = axis_phase(ph, dh, pad.top, i.h, o.h);
            let (rw, iw, ow, pad_l) = axis_phase(pw, dw, pad.left, i.w, o.w);
            Phase { ph, pw, rh, rw, ih, iw, oh, ow, pad_t, pad_l, th: oh.div_ceil(4), tw: ow.div_ceil(4) }
        })
    })
}

/// Tile columns of one axis summed over its `d` phases, in closed form (a loop over the
/// phases would take as long as the dilation is large): with `o = q * d + r`, the `r`
/// residues below `r` own `q + 1` outputs each and the other `d - r` own `q`.
fn axis_tiles(o: usize, d: usize) -> usize {
    let (q, r) = (o / d, o % d);
    // ceil((q + 1) / 4) == q / 4 + 1, with no overflow at q == usize::MAX.
    r.saturating_mul(q / 4 + 1).saturating_add((d - r).saturating_mul(q.div_ceil(4)))
}

/// Tiles of all phases: `N * sum over phases of ceil(OH_p / 4) * ceil(OW_p / 4)`, which
/// factors into the two axes' sums (saturating).
pub(crate) fn tiles(g: &ConvGeometry) -> usize {
    let [dh, dw] = g.window().dilation();
    let o = g.output();
    o.n.saturating_mul(axis_tiles(o.h, dh)).saturating_mul(axis_tiles(o.w, dw))
}

/// The most tiles of one phase: phase 0 has the largest sub-output, `ceil(O / d)` per axis.
pub(crate) fn max_tiles(g: &ConvGeometry) -> usize {
    let [dh, dw] = g.window().dilation();
    let o = g.output();
    o.n.saturating_mul(o.h.div_ceil(dh).div_ceil(4)).saturating_mul(o.w.div_ceil(dw).div_ceil(4))
}

/// Floats of tile workspace (`V` and `M` of one block of tiles).
pub(crate) fn tile_workspace_len(g: &ConvGeometry) -> Result<usize> {
    let shape = Shape::of(g)?;
    let per = shape.per_tile()?;
    let most = max_tiles(g).max(1).next_multiple_of(ROWS);
    let tiles = (TILE_BUDGET / per / ROWS * ROWS).max(ROWS).min(most);
    mul(per, tiles)
}

/// Floats of the transformed filter of `g`.
pub(crate) fn packed_len(g: &ConvGeometry) -> Result<usize> {
    Shape::of(g)?.packed_len()
}

/// Workspace of the per-call path: the transformed filter, then the tile buffers.
pub(crate) fn workspace_len(g: &ConvGeometry) -> Result<usize> {
    packed_len(g)?.checked_add(tile_workspace_len(g)?).ok_or(Error::Overflow { dim: Dim::Channels })
}

// ---------------------------------------------------------------------------------------
// The three transforms, on vectors of channels.

#[inline(always)]
pub(crate) fn load<S: Simd>(src: &[f32]) -> S::f32s {
    S::as_simd_f32s(&src[..S::F32_LANES]).0[0]
}

#[inline(always)]
pub(crate) fn store<S: Simd>(dst: &mut [f32], v: S::f32s) {
    S::as_mut_simd_f32s(&mut dst[..S::F32_LANES]).0[0] = v;
}

/// Share `i` of `n` near-equal shares of `count` items (`part = (i, n)`, `i < n`):
/// `(first, how many)`.
#[inline(always)]
fn share(count: usize, (i, n): (usize, usize)) -> (usize, usize) {
    let at = |j: usize| count * j / n;
    (at(i), at(i + 1) - at(i))
}

/// `B^T d` for one column of 6.
#[inline(always)]
fn bt<S: Simd>(s: S, d: [S::f32s; 6]) -> [S::f32s; 6] {
    let four = s.splat_f32s(4.0);
    let m4 = s.splat_f32s(-4.0);
    let m5 = s.splat_f32s(-5.0);
    let two = s.splat_f32s(2.0);
    let m2 = s.splat_f32s(-2.0);
    let e = s.sub_f32s(d[4], d[2]);
    let f = s.sub_f32s(d[3], d[1]);
    [
        s.mul_add_e_f32s(four, d[0], s.mul_add_e_f32s(m5, d[2], d[4])),
        s.mul_add_e_f32s(m4, s.add_f32s(d[1], d[2]), s.add_f32s(d[3], d[4])),
        s.mul_add_e_f32s(four, s.sub_f32s(d[1], d[2]), s.sub_f32s(d[4], d[3])),
        s.mul_add_e_f32s(two, f, e),
        s.mul_add_e_f32s(m2, f, e),
        s.mul_add_e_f32s(four, d[1], s.mul_add_e_f32s(m5, d[3], d[5])),
    ]
}

/// `G g` for one column of 3.
#[inline(always)]
fn gt<S: Simd>(s: S, g: [S::f32s; 3]) -> [S::f32s; 6] {
    let a = s.add_f32s(g[0], g[2]);
    let sixth = s.splat_f32s(-1.0 / 6.0);
    let b = s.mul_add_e_f32s(s.splat_f32s(1.0 / 24.0), g[0], s.mul_f32s(s.splat_f32s(1.0 / 6.0), g[2]));
    let c = s.mul_f32s(s.splat_f32s(1.0 / 12.0), g[1]);
    [
        s.mul_f32s(s.splat_f32s(0.25), g[0]),
        s.mul_f32s(sixth, s.add_f32s(a, g[1])),
        s.mul_f32s(sixth, s.sub_f32s(a, g[1])),
        s.add_f32s(b, c),
        s.sub_f32s(b, c),
        g[2],
    ]
}

/// `A^T m` for one column of 6.
#[inline(always)]
fn at<S: Simd>(s: S, m: [S::f32s; 6]) -> [S::f32s; 4] {
    let a = s.add_f32s(m[1], m[2]);
    let b = s.sub_f32s(m[1], m[2]);
    let c = s.add_f32s(m[3], m[4]);
    let d = s.sub_f32s(m[3], m[4]);
    [
        s.add_f32s(s.add_f32s(m[0], a), c),
        s.mul_add_e_f32s(s.splat_f32s(2.0), d, b),
        s.mul_add_e_f32s(s.splat_f32s(4.0), c, a),
        s.add_f32s(s.mul_add_e_f32s(s.splat_f32s(8.0), d, b), m[5]),
    ]
}

// ---------------------------------------------------------------------------------------
// Filter transform.

/// `U[grp][xi][c][k] = (G g G^T)[xi]` for filter `k` of group `grp`, input channel `c`
/// (each `U[grp][xi]` in panels, see [`panel_at`]).
struct PackFilter<'a, 'b> {
    w: &'b FilterView<'a, f32>,
    shape: Shape,
    /// `Some(og)`: `w` is the filter of the convolution whose data gradient this one is
    /// (`og` filters per group), and the packed filter is its spatially flipped,
    /// in/out-swapped bank: weight `(grp * kg + k, c, kh, kw)` is
    /// `w[grp * og + c, k, 2 - kh, 2 - kw]` (here `og == cg`).
    flip: Option<usize>,
    u: &'b mut [f32],
}

impl WithSimd for PackFilter<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let PackFilter { w, shape, flip, u } = self;
        let l = S::F32_LANES;
        let wd = w.data();
        let Shape { groups, cg, kg, kgp, panel, .. } = shape;
        for grp in 0..groups {
            // Filters outside: each lane then walks one filter's weights in order.
            for k0 in (0..kgp).step_by(l) {
                for c in 0..cg {
                    let lanes = kg.saturating_sub(k0).min(l);
                    let mut g = [[s.splat_f32s(0.0); 3]; 3];
                    for (kh, row) in g.iter_mut().enumerate() {
                        for (kw, v) in row.iter_mut().enumerate() {
                            if let Some(og) = flip {
                                let mut buf = [0.0f32; PAD];
                                for (j, b) in buf[..lanes].iter_mut().enumerate() {
                                    *b = wd[w.offset(grp * og + c, k0 + j, 2 - kh, 2 - kw)];
                                }
                                *v = load::<S>(&buf);
                                continue;
                            }
                            let at = w.offset(grp * kg + k0, c, kh, kw);
                            if lanes == l && w.strides()[0] == 1 {
                                // Filters contiguous (HWIO): one vector load.
                                *v = load::<S>(&wd[at..]);
                                continue;
                            }
                            let mut buf = [0.0f32; PAD];
                            for (j, b) in buf[..lanes].iter_mut().enumerate() {
                                *b = wd[w.offset(grp * kg + k0 + j, c, kh, kw)];
                            }
                            *v = load::<S>(&buf);
                        }
                    }
                    // Columns, then rows: t[xi][kw] = (G g)[xi][kw], U = t G^T.
                    let mut t = [[s.splat_f32s(0.0); 3]; 6];
                    for kw in 0..3 {
                        let col = gt(s, [g[0][kw], g[1][kw], g[2][kw]]);
                        for (xi, v) in col.into_iter().enumerate() {
                            t[xi][kw] = v;
                        }
                    }
                    for (xi, row) in t.iter().enumerate() {
                        for (nu, v) in gt(s, *row).into_iter().enumerate() {
                            let o = (grp * XI + xi * 6 + nu) * cg * kgp + panel_at(c, k0, cg, kgp, panel).0;
                            store::<S>(&mut u[o..], v);
                        }
                    }
                }
            }
        }
    }
}

fn pack_into(exec: &Exec, w: &FilterView<'_, f32>, shape: Shape, u: &mut [f32]) {
    exec.dispatch(PackFilter { w, shape, flip: None, u });
}

// ---------------------------------------------------------------------------------------
// Input transform.

/// The `V` buffer of one block (`[xi][tile][channel]`) as the input transforms write it:
/// a raw view, so that the threads sharing a block can fill disjoint parts of it at once.
#[derive(Clone, Copy)]
pub(crate) struct VOut<'b> {
    ptr: *mut f32,
    len: usize,
    _buf: PhantomData<&'b mut [f32]>,
}

impl<'b> VOut<'b> {
    pub(crate) fn new(v: &'b mut [f32]) -> Self {
        VOut { ptr: v.as_mut_ptr(), len: v.len(), _buf: PhantomData }
    }

    /// Writes the vector `val` at floats `o..o + lanes` (bounds checked).
    ///
    /// # Safety
    /// No other thread reads or writes those floats meanwhile.
    #[inline(always)]
    unsafe fn store<S: Simd>(self, o: usize, val: S::f32s) {
        assert!(o + S::F32_LANES <= self.len);
        // SAFETY: in bounds (checked); exclusive, as the caller guarantees; unaligned
        // write of plain data.
        unsafe { self.ptr.add(o).cast::<S::f32s>().write_unaligned(val) };
    }
}

// SAFETY: made from a `&mut [f32]` borrowed for `'b`; the threads that share it write
// disjoint floats (`InputTransform::part`), and nobody reads it until they have joined.
unsafe impl Send for VOut<'_> {}
// SAFETY: as above; shared references only copy the pointer.
unsafe impl Sync for VOut<'_> {}

/// `V[xi][t][c]` for tiles `[t0, t1)` of `phase`, input channels of group `grp`.
pub(crate) struct InputTransform<'a, 'b> {
    pub(crate) x: &'b TensorView<'a, f32>,
    pub(crate) dil: [usize; 2],
    pub(crate) phase: Phase,
    pub(crate) shape: Shape,
    pub(crate) grp: usize,
    pub(crate) t0: usize,
    pub(crate) t1: usize,
    /// Tiles of the block, padded to [`ROWS`] (the row count of `V[xi]`).
    pub(crate) rows: usize,
    /// `(i, n)`: this call does share `i` of `n` near-equal shares of the channel vectors
    /// (for every tile); `(0, 1)`: all. Calls with the other shares of the same block may
    /// run on other threads at the same time: they write other floats of `v`.
    pub(crate) part: (usize, usize),
    pub(crate) v: VOut<'b>,
}

impl WithSimd for InputTransform<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let InputTransform { x, dil, phase: p, shape, grp, t0, t1, rows: len, part, v } = self;
        let l = S::F32_LANES;
        let xs = x.strides();
        let Shape { cg, cgp, .. } = shape;
        let c_lo = grp * cg;
        let (nt, nc) = (t1 - t0, cgp / l);
        let (c_from, nw) = share(nc, part);
        // The strided (NCHW) gathers' staging buffer, one per call (see `patch`).
        let mut buf = [[0.0f32; PAD]; 36];
        // NCHW on AVX2, undilated columns: runs of tiles of one tile row (`avx2_run`).
        // Rows of 8 or more tiles take all channel vectors of a run before the next run
        // (a run's `V` is then written in whole lines while its input rows are fresh);
        // shorter ones (small planes, which stay in L2) one channel vector at a time over
        // all runs. In-process A/B on an AVX2-only AMD EPYC: runs outside measured
        // 0.92-0.95x the time on 60 x 37 x 37 -> 44 and vgg_conv1_2, 0.97-0.99x on
        // vgg_conv3_2, but 1.01-1.04x on soumith_l5 and vgg_conv5_2 (rows of 4 tiles),
        // 0.99-1.00x with the channel vectors outside (an A/A build showed code
        // placement alone moving those two by 3-6%, so that choice is a close call).
        #[cfg(target_arch = "x86_64")]
        if xs[1] != 1 && dil[1] * xs[3] == 1 && crate::simd_util::is_avx2::<S>() {
            let mut run = Run::new();
            let runs_outside = p.tw >= 8;
            let (mut t, mut cv) = (t0, 0);
            while t < t1 && cv < nw {
                let c0 = (c_from + cv) * l;
                let (n, ti, tj) = p.tile(t);
                let k = (t1 - t).min(p.tw - tj).min(RUN_TILES);
                let done = cg.saturating_sub(c0) >= l
                    && avx2_run::<S>(s, x, p, dil[0], (n, c_lo + c0, ti, tj), k, &mut run);
                for q in 0..k {
                    if done {
                        // Row `xi` of tile `q`: columns `4q .. 4q + 6` of the run's rows.
                        let tmp: [[S::f32s; 6]; 6] = core::array::from_fn(|xi| {
                            core::array::from_fn(|c| load::<S>(&run.v[xi][4 * q + c]))
                        });
                        rows_store(s, &tmp, v, len, t + q - t0, cgp, c0);
                    } else {
                        let d = patch(s, x, dil, p, (cg, c_lo), t + q, c0, &mut buf);
                        transform_store(s, &d, v, len, t + q - t0, cgp, c0);
                    }
                }
                // The next (run, channel vector).
                if runs_outside {
                    cv += 1;
                    if cv == nw {
                        (t, cv) = (t + k, 0);
                    }
                } else {
                    t += k;
                    if t == t1 {
                        (t, cv) = (t0, cv + 1);
                    }
                }
            }
            return;
        }
        // Channels outside when they are strided (NCHW): the gathers then stay within a
        // few planes at a time instead of touching one page per lane.
        for it in 0..nt * nw {
            let (t, cv) = if xs[1] == 1 { (t0 + it / nw, it % nw) } else { (t0 + it % nt, it / nt) };
            let c0 = (c_from + cv) * l;
            let d = patch(s, x, dil, p, (cg, c_lo), t, c0, &mut buf);
            transform_store(s, &d, v, len, t - t0, cgp, c0);
        }
    }
}

impl Phase {
    /// `(image, tile row, tile column)` of tile `t`.
    #[inline(always)]
    pub(crate) fn tile(&self, t: usize) -> (usize, usize, usize) {
        let rem = t % (self.th * self.tw);
        (t / (self.th * self.tw), rem / self.tw, rem % self.tw)
    }
}

/// The 6x6 input patch of tile `t`, channels `c_lo + c0 ..` (`L` of them, zero past the
/// group's `cg`): `d[r][c]`, zero in the padding. `buf` is a staging buffer kept across
/// calls (see below).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn patch<S: Simd>(
    s: S,
    x: &TensorView<'_, f32>,
    dil: [usize; 2],
    p: Phase,
    (cg, c_lo): (usize, usize),
    t: usize,
    c0: usize,
    buf: &mut [[f32; PAD]; 36],
) -> [[S::f32s; 6]; 6] {
    let l = S::F32_LANES;
    let xd = x.data();
    let xs = x.strides();
    let zero = s.splat_f32s(0.0);
    let (n, ti, tj) = p.tile(t);
    // Sub-input origin of the 6x6 patch (may be negative: padding).
    let i0 = (4 * ti) as isize - p.pad_t as isize;
    let j0 = (4 * tj) as isize - p.pad_l as isize;
    // Offsets of the patch's rows / columns in `x`, or None in the padding.
    let coord = |o: isize, r: usize, ext: usize, res: usize, d: usize| -> Option<usize> {
        let i = o + r as isize;
        (i >= 0 && (i as usize) < ext).then(|| (i as usize) * d + res)
    };
    let rows: [Option<usize>; 6] = core::array::from_fn(|r| coord(i0, r, p.ih, p.rh, dil[0]));
    let cols: [Option<usize>; 6] = core::array::from_fn(|c| coord(j0, c, p.iw, p.rw, dil[1]));
    let lanes = cg.saturating_sub(c0).min(l);
    let mut d = [[zero; 6]; 6];
    if lanes == l && xs[1] == 1 {
        for (r, ih) in rows.iter().enumerate() {
            let Some(ih) = *ih else { continue };
            for (c, iw) in cols.iter().enumerate() {
                let Some(iw) = *iw else { continue };
                d[r][c] = load::<S>(&xd[x.offset(n, c_lo + c0, ih, iw)..]);
            }
        }
        return d;
    }
    // Gather the whole patch lane by lane (each channel's rows are short contiguous
    // runs), then load: a vector load right after its own lane stores would stall on
    // store forwarding 36 times. Offsets within a plane of the patch's rows and columns
    // (`usize::MAX` in the padding), and the furthest one read, checked once.
    let ro = rows.map(|r| r.map_or(usize::MAX, |ih| ih * xs[2]));
    let co = cols.map(|c| c.map_or(usize::MAX, |iw| iw * xs[3]));
    let far = |o: &[usize; 6]| o.iter().filter(|&&v| v != usize::MAX).max().copied();
    // `buf` outlives the tile: what this tile does not overwrite (the padding, lanes past
    // the group's channels) is zeroed.
    for (r, &rr) in ro.iter().enumerate() {
        for (c, &cc) in co.iter().enumerate() {
            if rr == usize::MAX || cc == usize::MAX {
                buf[r * 6 + c] = [0.0; PAD];
            } else if lanes < l {
                buf[r * 6 + c][lanes..l].fill(0.0);
            }
        }
    }
    if let (Some(rmax), Some(cmax), true) = (far(&ro), far(&co), lanes > 0) {
        let base = x.offset(n, c_lo + c0, 0, 0);
        assert!(base + (lanes - 1) * xs[1] + rmax + cmax < xd.len());
        let xp = xd.as_ptr();
        // `j` is a lane of every entry of `buf`, not one slice's index.
        #[allow(clippy::needless_range_loop)]
        for j in 0..lanes {
            let pj = base + j * xs[1];
            for (r, &rr) in ro.iter().enumerate() {
                if rr == usize::MAX {
                    continue;
                }
                for (c, &cc) in co.iter().enumerate() {
                    if cc == usize::MAX {
                        continue;
                    }
                    // SAFETY: `pj + rr + cc` is at most the offset asserted in bounds above.
                    buf[r * 6 + c][j] = unsafe { *xp.add(pj + rr + cc) };
                }
            }
        }
    }
    for (r, row) in d.iter_mut().enumerate() {
        for (c, val) in row.iter_mut().enumerate() {
            *val = load::<S>(&buf[r * 6 + c]);
        }
    }
    d
}

/// `B^T d B` of one patch `d` (6x6 vectors of channels `c0..c0 + L`), stored as row
/// `tile` of every `V[xi]` (`rows` rows of `cgp` floats each).
#[inline(always)]
fn transform_store<S: Simd>(
    s: S,
    d: &[[S::f32s; 6]; 6],
    v: VOut<'_>,
    rows: usize,
    tile: usize,
    cgp: usize,
    c0: usize,
) {
    let zero = s.splat_f32s(0.0);
    let mut tmp = [[zero; 6]; 6];
    for c in 0..6 {
        let col = bt(s, [d[0][c], d[1][c], d[2][c], d[3][c], d[4][c], d[5][c]]);
        for (xi, val) in col.into_iter().enumerate() {
            tmp[xi][c] = val;
        }
    }
    rows_store(s, &tmp, v, rows, tile, cgp, c0);
}

/// The second half of [`transform_store`]: `tmp` is `B^T d`, row `xi` of it is
/// transformed and stored as `V[xi * 6 + nu]`.
#[inline(always)]
fn rows_store<S: Simd>(
    s: S,
    tmp: &[[S::f32s; 6]; 6],
    v: VOut<'_>,
    rows: usize,
    tile: usize,
    cgp: usize,
    c0: usize,
) {
    for (xi, row) in tmp.iter().enumerate() {
        for (nu, val) in bt(s, *row).into_iter().enumerate() {
            let o = ((xi * 6 + nu) * rows + tile) * cgp + c0;
            // SAFETY: tile `tile`, channels `c0..c0 + l` of the caller's share: no
            // concurrent call writes them (`InputTransform::part`), nobody reads `v` yet.
            unsafe { v.store::<S>(o, val) };
        }
    }
}

/// Most tiles of one run of [`avx2_run`].
#[cfg(target_arch = "x86_64")]
const RUN_TILES: usize = 16;
/// Columns of a run: its tiles' `4 k + 2`, rounded up to whole 8-column chunks.
#[cfg(target_arch = "x86_64")]
const RUN_COLS: usize = (4 * RUN_TILES + 2).next_multiple_of(8);

/// A run's column transforms, `v[xi][col][j]` = `(B^T d)[xi]` of column `col` of the
/// run, channel `j` (8 of them: AVX2).
#[cfg(target_arch = "x86_64")]
#[repr(align(32))]
struct Run {
    v: [[[f32; 8]; RUN_COLS]; 6],
}

#[cfg(target_arch = "x86_64")]
impl Run {
    fn new() -> Self {
        Run { v: [[[0.0; 8]; RUN_COLS]; 6] }
    }
}

/// NCHW on AVX2: the column halves (`B^T d`) of the input transforms of `k <= RUN_TILES`
/// consecutive tiles of one tile row, starting at tile `(n, ti, tj)` of phase `p`, 8
/// channels from `c` (all inside the input), into `run`. Each patch column is computed
/// once, not once per tile that holds it (adjacent tiles share two), on vectors of 8
/// input columns of one channel (one load per patch row; loads masked at the padding);
/// one 8x8 transpose per 8 columns and `xi` then makes channels the lanes. The per-patch
/// version loaded 8 channels of one patch row and transposed them: 6 transposes a tile,
/// against 6 per 8 columns (two tiles) here. Needs undilated columns with stride 1.
/// Returns false, doing nothing, unless `S` is AVX2 and the offsets fit.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn avx2_run<S: Simd>(
    s: S,
    x: &TensorView<'_, f32>,
    p: Phase,
    dil_h: usize,
    (n, c, ti, tj): (usize, usize, usize, usize),
    k: usize,
    run: &mut Run,
) -> bool {
    use core::arch::x86_64::*;
    use core::mem::transmute_copy;
    let xs = x.strides();
    let xd = x.data();
    if !crate::simd_util::is_avx2::<S>() || xs[3] != 1 || k == 0 || k > RUN_TILES || p.iw == 0 {
        return false;
    }
    let cols = 4 * k + 2;
    // Rows of the patch inside the sub-input (plane offsets), or usize::MAX.
    let i0 = (4 * ti) as isize - p.pad_t as isize;
    let ro: [usize; 6] = core::array::from_fn(|r| {
        let i = i0 + r as isize;
        if i >= 0 && (i as usize) < p.ih {
            (i as usize * dil_h + p.rh) * xs[2]
        } else {
            usize::MAX
        }
    });
    // Column `q` of the run is input column `col0 + q` when that lies in `lo..hi`.
    let col0 = (4 * tj) as isize - p.pad_l as isize + p.rw as isize;
    let (lo, hi) = (p.rw as isize, (p.rw + p.iw) as isize);
    let base = x.offset(n, c, 0, 0);
    // Every float read is element (n, c + j, row, column) of the view for j < 8, a row
    // of `ro` and a column in `lo..hi`: its offset is at most `far` (checked here; a
    // valid view keeps it inside `xd` anyway).
    let rmax = ro.iter().copied().filter(|&r| r != usize::MAX).max().unwrap_or(0);
    let far = xs[1]
        .checked_mul(7)
        .and_then(|o| o.checked_add(base))
        .and_then(|o| o.checked_add(rmax))
        .and_then(|o| o.checked_add(hi as usize - 1));
    if far.is_none_or(|f| f >= xd.len()) {
        return false;
    }
    let xp = xd.as_ptr();
    // SAFETY: `S` is `V3`: AVX2 is available and `S::f32s` is `f32x8`, 32 bytes like
    // `__m256`. An unmasked load reads 8 columns all in `lo..hi`; a masked one reads only
    // the lanes whose column is in `lo..hi` (its address is formed with wrapping
    // arithmetic and the masked-off lanes are not accessed, so it may point outside
    // `xd`); either way, only floats at offsets up to `far`, checked above. The aligned
    // stores write whole entries of `run.v` (checked indexing), 32 bytes each and 32-byte
    // aligned (`Run` is).
    unsafe {
        let zero = _mm256_setzero_ps();
        for q0 in (0..cols).step_by(8) {
            let at = col0 + q0 as isize;
            let inner = at >= lo && at + 8 <= hi;
            if at + 8 <= lo || at >= hi {
                // Wholly in the padding: B^T of zeros.
                for xi in run.v.iter_mut() {
                    xi[q0..q0 + 8].fill([0.0; 8]);
                }
                continue;
            }
            // Lane `i` on when column `at + i` is in `lo..hi` (at the row ends only).
            let mask = if inner {
                _mm256_set1_epi32(-1)
            } else {
                let m: [i32; 8] = core::array::from_fn(|i| -i32::from((lo..hi).contains(&(at + i as isize))));
                transmute_copy(&m)
            };
            let mut col = [[zero; 8]; 6];
            // `j` is a lane of every `col[xi]` and a channel of `x`, not one slice's index.
            #[allow(clippy::needless_range_loop)]
            for j in 0..8 {
                let d: [S::f32s; 6] = core::array::from_fn(|r| {
                    let v = if ro[r] == usize::MAX {
                        zero
                    } else {
                        let ptr = xp.wrapping_add(base + j * xs[1] + ro[r]).wrapping_offset(at);
                        if inner {
                            _mm256_loadu_ps(ptr)
                        } else {
                            _mm256_maskload_ps(ptr, mask)
                        }
                    };
                    transmute_copy(&v)
                });
                for (xi, val) in bt(s, d).into_iter().enumerate() {
                    col[xi][j] = transmute_copy(&val);
                }
            }
            for (xi, a) in col.iter().enumerate() {
                for (q, val) in crate::simd_util::transpose8(*a).into_iter().enumerate() {
                    _mm256_store_ps(run.v[xi][q0 + q].as_mut_ptr(), val);
                }
            }
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// Output transform with the fused epilogue.

/// The output tensor, shared by workers that each write their own tiles.
#[derive(Clone, Copy)]
struct OutRaw {
    ptr: *mut f32,
    strides: [usize; 4],
}

// SAFETY: made from a `TensorViewMut` that stays mutably borrowed while workers use it;
// each worker writes the outputs of its own tiles only, and a view's elements never alias.
unsafe impl Send for OutRaw {}
// SAFETY: as above; shared references only copy the pointer.
unsafe impl Sync for OutRaw {}

struct OutputTransform<'a, 'b> {
    m: &'b [f32],
    /// Rows of `M[xi]` (tiles padded to [`ROWS`]).
    rows: usize,
    y: OutRaw,
    dil: [usize; 2],
    phase: Phase,
    shape: Shape,
    grp: usize,
    t0: usize,
    t1: usize,
    /// As [`InputTransform::part`], over the output channel vectors: calls with other
    /// shares write other outputs.
    part: (usize, usize),
    bias: Option<&'a [f32]>,
    residual: Option<TensorView<'a, f32>>,
    act: Activation,
}

impl WithSimd for OutputTransform<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let OutputTransform { m, rows: len, y, dil, phase: p, shape, grp, t0, t1, part, bias, residual, act } =
            self;
        let l = S::F32_LANES;
        let Shape { kg, kgp, .. } = shape;
        let k_lo = grp * kg;
        let zero = s.splat_f32s(0.0);
        let (lo, hi, clamp) = match act {
            Activation::Identity => (f32::NEG_INFINITY, f32::INFINITY, false),
            Activation::Relu => (0.0, f32::INFINITY, true),
            Activation::Clamp { min, max } => (min, max, true),
        };
        let (vlo, vhi) = (s.splat_f32s(lo), s.splat_f32s(hi));
        let ys = y.strides;
        // Channels outside when they are strided (NCHW), as in the input transform; only
        // the vectors holding real channels.
        let (nt, nk) = (t1 - t0, kg.div_ceil(l));
        // NCHW: the `l` channels of a vector live in planes a multiple of 4 KiB apart
        // (for most plane sizes), so scattering each output straight to them thrashes one
        // L1 set. Outputs go to `stage` instead (per lane and tile row, up to SEG tiles
        // side by side), flushed to the planes as row runs.
        let staged = ys[1] != 1;
        let mut stage = [[0.0f32; STAGE_ROW]; PAD * 4];
        let mut seg: Option<Segment> = None;
        let (k_from, nw) = share(nk, part);
        for it in 0..nt * nw {
            let (t, kv) = if ys[1] == 1 { (t0 + it / nw, it % nw) } else { (t0 + it % nt, it / nt) };
            let k0 = (k_from + kv) * l;
            let (n, ti, tj) = p.tile(t);
            let out_rows = (p.oh - 4 * ti).min(4);
            let out_cols = (p.ow - 4 * tj).min(4);
            if staged {
                let cur = Segment { n, k0, ti, tj0: tj, tiles: 0, lanes: kg.saturating_sub(k0).min(l) };
                seg = match seg {
                    Some(sg)
                        if sg.n == n
                            && sg.k0 == k0
                            && sg.ti == ti
                            && sg.tj0 + sg.tiles == tj
                            && sg.tiles < SEG =>
                    {
                        Some(sg)
                    }
                    Some(sg) => {
                        flush(&stage, sg, y, dil, p, k_lo);
                        Some(cur)
                    }
                    None => Some(cur),
                };
            }
            {
                let lanes = kg.saturating_sub(k0).min(l);
                let full = lanes == l;
                let mut mm = [[zero; 6]; 6];
                for (xi, row) in mm.iter_mut().enumerate() {
                    for (nu, val) in row.iter_mut().enumerate() {
                        *val = load::<S>(&m[((xi * 6 + nu) * len + (t - t0)) * kgp + k0..]);
                    }
                }
                let mut tmp = [[zero; 6]; 4];
                for nu in 0..6 {
                    let col = at(s, [mm[0][nu], mm[1][nu], mm[2][nu], mm[3][nu], mm[4][nu], mm[5][nu]]);
                    for (a, val) in col.into_iter().enumerate() {
                        tmp[a][nu] = val;
                    }
                }
                let b = match bias {
                    None => zero,
                    Some(b) if full => load::<S>(&b[k_lo + k0..]),
                    Some(b) => {
                        let mut buf = [0.0f32; PAD];
                        buf[..lanes].copy_from_slice(&b[k_lo + k0..k_lo + k0 + lanes]);
                        load::<S>(&buf)
                    }
                };
                // The epilogue of output column `bcol` of row `oh` (a macro, not a closure:
                // closures are not reliably inlined into the target-feature context).
                macro_rules! finish {
                    ($val:expr, $oh:expr, $bcol:expr) => {{
                        let mut acc = s.add_f32s($val, b);
                        if let Some(r) = &residual {
                            let ow = (4 * tj + $bcol) * dil[1] + p.pw;
                            let rd = r.data();
                            let o = r.offset(n, k_lo + k0, $oh, ow);
                            let rv = if full && r.strides()[1] == 1 {
                                load::<S>(&rd[o..])
                            } else {
                                let mut buf = [0.0f32; PAD];
                                for (j, bb) in buf[..lanes].iter_mut().enumerate() {
                                    *bb = rd[o + j * r.strides()[1]];
                                }
                                load::<S>(&buf)
                            };
                            acc = s.add_f32s(acc, rv);
                        }
                        if clamp {
                            // Selects rather than min / max: NaN passes through on every ISA.
                            let below = s.less_than_f32s(acc, vlo);
                            acc = s.select_f32s(below, vlo, acc);
                            let above = s.greater_than_f32s(acc, vhi);
                            acc = s.select_f32s(above, vhi, acc);
                        }
                        acc
                    }};
                }
                for (a, row) in tmp.iter().enumerate().take(out_rows) {
                    let out = at(s, *row);
                    let oh = (4 * ti + a) * dil[0] + p.ph;
                    if let Some(sg) = &seg {
                        let col = sg.tiles * 4;
                        let mut accs = [zero; 4];
                        for bcol in 0..out_cols {
                            accs[bcol] = finish!(out[bcol], oh, bcol);
                        }
                        #[cfg(target_arch = "x86_64")]
                        if full && out_cols == 4 && avx2_stage::<S>(&accs, &mut stage, a, col) {
                            continue;
                        }
                        for (bcol, &acc) in accs.iter().enumerate().take(out_cols) {
                            let mut buf = [0.0f32; PAD];
                            store::<S>(&mut buf, acc);
                            for (j, &bv) in buf[..lanes].iter().enumerate() {
                                stage[j * 4 + a][col + bcol] = bv;
                            }
                        }
                        continue;
                    }
                    for (bcol, &val) in out.iter().enumerate().take(out_cols) {
                        let acc = finish!(val, oh, bcol);
                        let ow = (4 * tj + bcol) * dil[1] + p.pw;
                        let off = n * ys[0] + (k_lo + k0) * ys[1] + oh * ys[2] + ow * ys[3];
                        if full && ys[1] == 1 {
                            // SAFETY: output (n, k_lo + k0 .. + l, oh, ow) is inside the view
                            // (k_lo + k0 + l <= k_lo + kg <= K, oh < OH, ow < OW), its `l`
                            // channels are consecutive (channel stride 1), and this worker
                            // owns this tile's outputs; nothing else references them.
                            let dst = unsafe { core::slice::from_raw_parts_mut(y.ptr.add(off), l) };
                            store::<S>(dst, acc);
                        } else {
                            let mut buf = [0.0f32; PAD];
                            store::<S>(&mut buf, acc);
                            for (j, &bv) in buf[..lanes].iter().enumerate() {
                                // SAFETY: output (n, k_lo + k0 + j, oh, ow) with j < lanes is
                                // inside the view and owned by this worker (as above).
                                unsafe { *y.ptr.add(off + j * ys[1]) = bv };
                            }
                        }
                    }
                }
            }
            if let Some(sg) = &mut seg {
                sg.tiles += 1;
            }
        }
        if let Some(sg) = seg {
            flush(&stage, sg, y, dil, p, k_lo);
        }
    }
}

/// The four output vectors `acc` (columns `col .. col + 4` of output row `a` of a tile, 8
/// channels each) into the stage on AVX2: `stage[j * 4 + a][col + b] = acc[b][j]`, by a
/// 4x4 transpose in each 128-bit half (channels `j` and `j + 4` share a vector), instead
/// of 32 scalar stores. Returns false, doing nothing, unless `S` is AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn avx2_stage<S: Simd>(
    acc: &[S::f32s; 4],
    stage: &mut [[f32; STAGE_ROW]; PAD * 4],
    a: usize,
    col: usize,
) -> bool {
    use core::arch::x86_64::*;
    use core::mem::transmute_copy;
    if !crate::simd_util::is_avx2::<S>() {
        return false;
    }
    // Indexing (checked) bounds every store: 4 floats from `col` in rows `j * 4 + a`.
    let dst = |stage: &mut [[f32; STAGE_ROW]; PAD * 4], j: usize| stage[j * 4 + a][col..col + 4].as_mut_ptr();
    // SAFETY: `S` is `V3`: AVX2 is available and `S::f32s` is `f32x8`, 32 bytes like
    // `__m256`. Each store writes the 4 floats of a checked subslice.
    unsafe {
        let [v0, v1, v2, v3]: [__m256; 4] = [0, 1, 2, 3].map(|b| transmute_copy(&acc[b]));
        let (t0, t1) = (_mm256_unpacklo_ps(v0, v1), _mm256_unpackhi_ps(v0, v1));
        let (t2, t3) = (_mm256_unpacklo_ps(v2, v3), _mm256_unpackhi_ps(v2, v3));
        // Vector `q[j]` holds channel `j` in its low half and `j + 4` in its high half.
        let q = [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
        ];
        for (j, &v) in q.iter().enumerate() {
            _mm_storeu_ps(dst(stage, j), _mm256_castps256_ps128(v));
            _mm_storeu_ps(dst(stage, j + 4), _mm256_extractf128_ps::<1>(v));
        }
    }
    true
}

/// Tiles side by side in the NCHW output stage.
const SEG: usize = 16;
/// Floats per stage row: SEG tiles of 4 columns, plus 4 so that rows are not 256 bytes
/// apart.
const STAGE_ROW: usize = SEG * 4 + 4;

/// A run of consecutive tiles of one tile row, for one vector of output channels, whose
/// outputs sit in the stage.
#[derive(Clone, Copy)]
struct Segment {
    n: usize,
    k0: usize,
    ti: usize,
    tj0: usize,
    tiles: usize,
    /// Real channels in the vector.
    lanes: usize,
}

/// Writes a staged segment to the output: per channel and output row, one run of
/// columns (contiguous when the phase has no column dilation).
fn flush(
    stage: &[[f32; STAGE_ROW]; PAD * 4],
    sg: Segment,
    y: OutRaw,
    dil: [usize; 2],
    p: Phase,
    k_lo: usize,
) {
    let ys = y.strides;
    let rows = (p.oh - 4 * sg.ti).min(4);
    let cols = (p.ow - 4 * sg.tj0).min(4 * sg.tiles);
    for j in 0..sg.lanes {
        for (a, src) in stage[j * 4..j * 4 + rows].iter().enumerate() {
            let oh = (4 * sg.ti + a) * dil[0] + p.ph;
            let base = sg.n * ys[0] + (k_lo + sg.k0 + j) * ys[1] + oh * ys[2];
            let ow0 = 4 * sg.tj0 * dil[1] + p.pw;
            if dil[1] == 1 && ys[3] == 1 {
                // SAFETY: outputs (n, k_lo + k0 + j, oh, ow0 .. ow0 + cols) are inside the
                // view (the segment's tiles lie in the phase's output), contiguous (column
                // stride 1), and belong to this worker's tiles; `src` holds `cols <= 4 *
                // SEG < STAGE_ROW` floats and is a local buffer, so the two do not overlap.
                unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), y.ptr.add(base + ow0), cols) };
            } else {
                for (c, &v) in src[..cols].iter().enumerate() {
                    // SAFETY: output (n, k_lo + k0 + j, oh, ow0 + c * dil) is inside the view
                    // and belongs to this worker's tiles (as above).
                    unsafe { *y.ptr.add(base + (ow0 + c * dil[1]) * ys[3]) = v };
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The 36 tile products.

/// Runs `f(part)` for the `n` shares `part = (i, n)` of a transform, on `n` threads (the
/// first share on the calling thread) when `n > 1` and `rayon` is on; else `f((0, 1))`.
fn shares(n: usize, f: impl Fn((usize, usize)) + Sync) {
    #[cfg(feature = "rayon")]
    if n > 1 {
        crate::par::fork_join((0..n).map(|i| (i, n)), f);
        return;
    }
    let _ = n;
    f((0, 1));
}

/// `M[xi] = V[xi] * U[xi]` for the 36 positions of one block (`rows` tiles apart, the
/// first `live` of them real), on `threads` threads.
#[allow(clippy::too_many_arguments)]
fn products(
    exec: &Exec,
    threads: usize,
    v: &[f32],
    u: &[f32],
    m: &mut [f32],
    rows: usize,
    live: usize,
    shape: Shape,
) {
    let (vlen, ulen, mlen) = (rows * shape.cgp, shape.cg * shape.kgp, rows * shape.kgp);
    let one = |xi: usize, m: &mut [f32]| {
        let (v, u) = (&v[xi * vlen..(xi + 1) * vlen], &u[xi * ulen..(xi + 1) * ulen]);
        exec.dispatch(Product { v, u, m, live, shape });
    };
    #[cfg(feature = "rayon")]
    if threads > 1 {
        // Near-equal runs of positions, one per thread, the first on the calling thread.
        let share = |t: usize| XI * t / threads;
        let mut rest = &mut m[..XI * mlen];
        let runs = (0..threads).map(|t| {
            let (run, tail) = core::mem::take(&mut rest).split_at_mut((share(t + 1) - share(t)) * mlen);
            rest = tail;
            (share(t), run)
        });
        crate::par::fork_join(runs, |(x0, run): (usize, &mut [f32])| {
            for (i, m) in run.chunks_mut(mlen).enumerate() {
                one(x0 + i, m);
            }
        });
        return;
    }
    let _ = threads;
    m[..XI * mlen].chunks_mut(mlen).enumerate().for_each(|(xi, m)| one(xi, m));
}

/// One position's product `M (rows x kgp) = V (rows x cg, row stride cgp) * U (cg x kgp)`,
/// register-blocked: up to 12 tiles x `NV` vectors of output channels, the tile values
/// broadcast, the filter vectors loaded once per input channel.
struct Product<'a> {
    v: &'a [f32],
    u: &'a [f32],
    m: &'a mut [f32],
    /// Tiles computed: rows `live..` up to the next multiple of [`ROWS`] are padding.
    live: usize,
    shape: Shape,
}

impl WithSimd for Product<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // Accumulators: 24 of 32 registers on AVX-512 and NEON (6 tiles x 4 vectors), 12
        // of 16 on AVX2 (6 x 2). On AVX-512, 12 tiles x 2 vectors (a 32-wide filter strip
        // that stays in L1) measured the same or up to 15% slower than 6 x 4 on VGG's
        // 256x56x56 and 384x13x13 layers, alternating runs of one binary.
        match S::F32_LANES {
            8 => product::<S, ROWS, 2>(s, self),
            _ => product::<S, ROWS, 4>(s, self),
        }
    }
}

#[inline(always)]
fn product<S: Simd, const R: usize, const NV: usize>(s: S, p: Product<'_>) {
    let Product { v, u, m, live, shape } = p;
    let kgp = shape.kgp;
    let l = S::F32_LANES;
    let wide = NV * l;
    let panel = shape.panel;
    for p0 in (0..kgp).step_by(panel) {
        let width = panel.min(kgp - p0);
        let mut k0 = p0;
        while k0 < p0 + width {
            if k0 + wide <= p0 + width {
                strip::<S, R, NV>(s, v, u, &mut *m, live, shape, k0);
                k0 += wide;
            } else {
                // Panels are multiples of 16 floats, hence of `l`: whole vectors remain.
                strip::<S, R, 1>(s, v, u, &mut *m, live, shape, k0);
                k0 += l;
            }
        }
    }
}

/// One strip of output channels `k0..k0 + NV * l` over the first `live` tiles: blocks of
/// `R = ROWS` tiles, the last one of 4 or 2 tiles when no more remain (each block may
/// reach into the padding up to the next multiple of `ROWS`). The 13x13 and 14x14 layers
/// (soumith_l5, vgg_conv5_2) have 16 tiles an image: 6 + 6 + 4 rows, not 18; measured
/// 3-4% faster on both (medians and quartiles of 200 interleaved calls each).
///
/// The first strip of a panel prefetches the next panel into L2 ([`Ahead`]): on layers of
/// few tiles each panel of `U` is used by only a few blocks, and streaming it from L3
/// was the limit (36 x 384 x 384 floats, 21 MB, per soumith_l5 call). Interleaved calls
/// (200 each, AVX-512, a loaded host), medians: soumith_l5 11-13% faster, vgg_conv5_2
/// 23-34%, both 12-13% on two threads and 12-20% on AVX2; 7 x 7 outputs (512 channels)
/// 16%, vgg_conv3_2 (196 tiles) 13%. Two lines a row in each of the first two blocks
/// beat all four in the first (soumith_l5 2.64 against 2.76 ms, vgg_conv5_2 6.79 against
/// 7.42). A panel of 16 channels (a row is one line) prefetches its one line a row in the
/// first block only (see [`panel_width`] for its measurements; two lines there, so the
/// next panel's rows twice over, measured 6-15% slower in the same harness). A function with `#[inline(always)]`,
/// not a closure, so it inherits the SIMD target features.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn strip<S: Simd, const R: usize, const NV: usize>(
    s: S,
    v: &[f32],
    u: &[f32],
    m: &mut [f32],
    live: usize,
    shape: Shape,
    k0: usize,
) {
    let Shape { cg, kgp, panel, .. } = shape;
    // The first strip of a panel prefetches the next panel (after the last one, the next
    // position's first): 2 lines of each row in each of its first two blocks, or all 4 in
    // the only one.
    let (p0, width) = (k0 / panel * panel, panel.min(kgp - k0 / panel * panel));
    let next = p0 + width;
    let stride = if next < kgp { panel.min(kgp - next) } else { panel.min(kgp) };
    let lead = k0 == p0;
    let ahead = |first| Ahead { base: u.as_ptr().wrapping_add(next * cg), stride, first };
    let mut t0 = 0;
    let mut b = 0;
    while t0 < live {
        let rem = live - t0;
        let pf = match (lead, b) {
            (true, 0) if stride <= 16 => 1,
            (true, 0) if rem <= R => 4,
            (true, 0 | 1) if stride > 16 => 2,
            _ => 0,
        };
        let a = ahead(2 * b);
        macro_rules! go {
            ($r:tt) => {
                match pf {
                    4 => block::<S, $r, NV, 4>(s, v, u, m, shape, t0, k0, a),
                    2 => block::<S, $r, NV, 2>(s, v, u, m, shape, t0, k0, a),
                    1 => block::<S, $r, NV, 1>(s, v, u, m, shape, t0, k0, a),
                    _ => block::<S, $r, NV, 0>(s, v, u, m, shape, t0, k0, Ahead::NONE),
                }
            };
        }
        if rem > 4 {
            go!(R);
            t0 += R;
        } else if rem > 2 {
            go!(4);
            t0 += 4;
        } else {
            go!(2);
            t0 += 2;
        }
        b += 1;
    }
}

/// Lines of the next `U` panel a block of the products pulls into L2 while it multiplies
/// the current one: at step `i`, lines `first .. first + PF` (16 floats each) of the row
/// at `base + i * stride`. Only a hint: the addresses need not be readable.
#[derive(Clone, Copy)]
pub(crate) struct Ahead {
    base: *const f32,
    stride: usize,
    first: usize,
}

impl Ahead {
    /// For `PF = 0`: nothing to fetch.
    pub(crate) const NONE: Ahead = Ahead { base: core::ptr::null(), stride: 0, first: 0 };
}

/// The register-blocked core of the Winograd products (forward here, weight gradient in
/// `backward::winograd`): `acc[r][j] += sum over i < n of a[r * a_rs + i * a_is] *
/// b[i * b_is + j * l ..][..l]`, one broadcast scalar of `a` per row and step, `NV` vectors
/// of `b` per step (`l` lanes), and `PF` lines of `ahead` prefetched per step.
///
/// # Safety
/// For every `r < R` and `i < n`, `a + r * a_rs + i * a_is` and the `NV * l` floats from
/// `b + i * b_is` are readable.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn rank1<S: Simd, const R: usize, const NV: usize, const PF: usize>(
    s: S,
    acc: &mut [[S::f32s; NV]; R],
    a: *const f32,
    a_rs: usize,
    a_is: usize,
    b: *const f32,
    b_is: usize,
    n: usize,
    ahead: Ahead,
) {
    let l = S::F32_LANES;
    let ap: [*const f32; R] = core::array::from_fn(|r| a.wrapping_add(r * a_rs));
    for i in 0..n {
        for q in 0..PF {
            // Address arithmetic only (a prefetch reads nothing): `wrapping_add`.
            prefetch_l2(ahead.base.wrapping_add(i * ahead.stride + 16 * (ahead.first + q)));
        }
        // SAFETY: `i < n`, as the caller guarantees; `f32s` is plain data, read unaligned.
        let bv: [S::f32s; NV] = core::array::from_fn(|j| unsafe {
            core::ptr::read_unaligned(b.add(i * b_is + j * l).cast::<S::f32s>())
        });
        for r in 0..R {
            // SAFETY: `r < R`, `i < n`, as the caller guarantees.
            let x = s.splat_f32s(unsafe { *ap[r].add(i * a_is) });
            for j in 0..NV {
                acc[r][j] = s.mul_add_e_f32s(x, bv[j], acc[r][j]);
            }
        }
    }
}

/// `M[t0..t0 + R][k0..k0 + NV * l] = V[t0..t0 + R][..cg] * U[..cg][k0..k0 + NV * l]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<S: Simd, const R: usize, const NV: usize, const PF: usize>(
    s: S,
    v: &[f32],
    u: &[f32],
    m: &mut [f32],
    shape: Shape,
    t0: usize,
    k0: usize,
    ahead: Ahead,
) {
    let Shape { cg, cgp, kgp, panel, .. } = shape;
    let l = S::F32_LANES;
    let (base, width) = panel_at(0, k0, cg, kgp, panel);
    // The last element each pointer below reaches, checked once: the vectors of row
    // `cg - 1` end inside the panel, which ends inside `u`.
    assert!(t0 + R <= v.len() / cgp && cg <= cgp && cg > 0);
    assert!(base + (cg - 1) * width + NV * l <= u.len() && (k0 % panel) + NV * l <= width);
    let mut acc = [[s.splat_f32s(0.0); NV]; R];
    // SAFETY: rows `t0 + r < v.len() / cgp` of `v`, columns `c < cg <= cgp`; the NV
    // vectors at `c * width` (from the panel's column of `k0`) for `c < cg` lie inside `u`
    // (the asserts above).
    unsafe {
        rank1::<S, R, NV, PF>(
            s,
            &mut acc,
            v[t0 * cgp..].as_ptr(),
            cgp,
            1,
            u[base..].as_ptr(),
            width,
            cg,
            ahead,
        );
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            store::<S>(&mut m[(t0 + r) * kgp + k0 + j * l..], a);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The driver.

/// Runs the convolution with the transformed filter `u` (`[group][xi][c][k]`), over the
/// tile workspace `ws` (at least one tile's `V` and `M`).
#[allow(clippy::too_many_arguments)]
fn run_packed(
    exec: &Exec,
    g: &ConvGeometry,
    x: TensorView<'_, f32>,
    u: &[f32],
    shape: Shape,
    epilogue: &Epilogue<'_>,
    mut y: TensorViewMut<'_, f32>,
    ws: &mut [f32],
) -> Result<()> {
    let per = shape.per_tile()?;
    let dil = g.window().dilation();
    let n_img = g.output().n;
    let threads = exec.threads();
    let y_raw = OutRaw { ptr: y.data_mut().as_mut_ptr(), strides: y.strides() };
    let Shape { groups, cg, cgp, kgp, .. } = shape;
    for phase in phases(g) {
        let total = n_img * phase.th * phase.tw;
        if total == 0 {
            continue;
        }
        let workers = if threads > 1 {
            threads.min(ws.len() / per.saturating_mul(MIN_WORKER_TILES)).min(total / MIN_WORKER_TILES).max(1)
        } else {
            1
        };
        // With too few tiles to share, the threads share each block's 36 products and its
        // transforms (split by channels) instead. Sharing the transforms too took two
        // threads from 2.48-2.54 to 2.11-2.15 ms on soumith_l5 and 4.45-4.69 to 3.85-4.04
        // on vgg_conv5_2 (medians of 200 interleaved calls, twice, on a loaded host).
        let product_threads = if workers > 1 { 1 } else { threads };
        split(workers, total, ws, |q0, q1, chunk| {
            let cap = chunk.len() / per / ROWS * ROWS;
            let mut t0 = q0;
            while t0 < q1 {
                let t1 = (t0 + cap).min(q1);
                let len = t1 - t0;
                let rows = len.next_multiple_of(ROWS);
                let (v, rest) = chunk.split_at_mut(XI * rows * cgp);
                let mbuf = &mut rest[..XI * rows * kgp];
                for grp in 0..groups {
                    let vo = VOut::new(&mut *v);
                    shares(product_threads, |part| {
                        exec.dispatch(InputTransform {
                            x: &x,
                            dil,
                            phase,
                            shape,
                            grp,
                            t0,
                            t1,
                            rows,
                            part,
                            v: vo,
                        });
                    });
                    let ug = &u[grp * XI * cg * kgp..(grp + 1) * XI * cg * kgp];
                    products(exec, product_threads, &*v, ug, &mut *mbuf, rows, len, shape);
                    let m = &*mbuf;
                    shares(product_threads, |part| {
                        exec.dispatch(OutputTransform {
                            m,
                            rows,
                            y: y_raw,
                            dil,
                            phase,
                            shape,
                            grp,
                            t0,
                            t1,
                            part,
                            bias: epilogue.bias,
                            residual: epilogue.residual,
                            act: epilogue.activation,
                        });
                    });
                }
                t0 = t1;
            }
        });
    }
    Ok(())
}

/// The per-call path of [`Algorithm::Winograd`](super::Algorithm::Winograd): transforms
/// the filter into the head of `ws`, then runs over the rest.
pub(crate) fn run(args: ConvArgs<'_, '_>, y: TensorViewMut<'_, f32>, ws: &mut [f32]) -> Result<()> {
    let ConvArgs { exec, g, layout, x, w, epilogue } = args;
    let _ = layout; // both layouts run the same transforms, through strides
    let shape = Shape::of(g)?.with_panel(panel_width(exec.isa()));
    let (u, tiles) = ws.split_at_mut(shape.packed_len()?);
    pack_into(exec, &w, shape, u);
    run_packed(exec, g, x, u, shape, epilogue, y, tiles)
}

/// The data gradient of a 3x3 stride-1 convolution as the forward Winograd convolution
/// `fg` (its flipped geometry: input `dY`, output `dX`) of `dy` with the flipped,
/// in/out-swapped filters of `w` (the original convolution's filter), transformed
/// straight from `w` into the head of `ws` (no flipped copy). `ws` holds at least
/// [`workspace_len`]`(fg)` floats; `w` has `fg`'s filter dims with `o` and `i` swapped
/// per group (the caller checked both).
pub(crate) fn run_flipped(
    exec: &Exec,
    fg: &ConvGeometry,
    dy: TensorView<'_, f32>,
    w: &FilterView<'_, f32>,
    dx: TensorViewMut<'_, f32>,
    ws: &mut [f32],
) -> Result<()> {
    let shape = Shape::of(fg)?.with_panel(panel_width(exec.isa()));
    let (u, tiles) = ws.split_at_mut(shape.packed_len()?);
    exec.dispatch(PackFilter { w, shape, flip: Some(shape.cg), u });
    run_packed(exec, fg, dy, u, shape, &Epilogue::default(), dx, tiles)
}

// ---------------------------------------------------------------------------------------
// The prepacked public API.

/// A filter bank transformed once for Winograd F(4x4, 3x3), in a caller buffer.
///
/// Inference engines transform constant weights when the model loads; this does the same:
/// [`WinogradFilter::pack`] runs the filter transform (`G g G^T`) once, and
/// [`conv2d_winograd`] then skips it on every call. The packed filter holds `36 / 9 = 4`
/// times the floats of the filter (output channels per group rounded up to 16).
///
/// ```
/// use simdconv::{conv2d_winograd, conv2d_winograd_workspace_len, Conv2d, ConvGeometry, Dims,
///                Epilogue, Exec, FilterLayout, FilterView, Layout, TensorView, TensorViewMut,
///                WinogradFilter};
/// let g = ConvGeometry::new(Dims::new(1, 8, 10, 10), 16, Conv2d::new(3, 3).pad(1))?;
/// let w = vec![0.5f32; g.filter().count()?];
/// let exec = Exec::new();
/// let mut packed = vec![0.0f32; WinogradFilter::packed_len(&g)?];
/// let f = WinogradFilter::pack(&exec, &g, FilterView::new(&w, g.filter(), FilterLayout::Oihw)?,
///                              &mut packed)?;
/// // Later, once per inference:
/// let x = vec![1.0f32; g.input().count()?];
/// let mut y = vec![0.0f32; g.output().count()?];
/// let mut ws = vec![0.0f32; conv2d_winograd_workspace_len(&g)?];
/// conv2d_winograd(&exec, &g, &Epilogue::new(), TensorView::new(&x, g.input(), Layout::Nchw)?, &f,
///                 TensorViewMut::new(&mut y, g.output(), Layout::Nchw)?, &mut ws)?;
/// assert!((y[10 + 1] - 36.0).abs() < 1e-4); // an interior output: 72 taps of 0.5
/// # Ok::<(), simdconv::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct WinogradFilter<'a> {
    u: &'a [f32],
    filter: FilterDims,
    groups: usize,
    /// `U`'s panel width, chosen for the ISA that packed it (any ISA runs it).
    panel: usize,
}

impl<'a> WinogradFilter<'a> {
    /// Floats of the buffer [`WinogradFilter::pack`] needs for `g` (a 3x3 stride-1
    /// convolution, else [`Unsupported::WinogradNeeds3x3Stride1`]).
    pub fn packed_len(g: &ConvGeometry) -> Result<usize> {
        packed_len(g)
    }

    /// Transforms `w` (any [`FilterView`] strides) for `g` into `buf`, which needs
    /// [`WinogradFilter::packed_len`] floats (more are left untouched).
    pub fn pack(exec: &Exec, g: &ConvGeometry, w: FilterView<'_, f32>, buf: &'a mut [f32]) -> Result<Self> {
        crate::tensor::expect_dims(Operand::Filter, g.filter().to_array(), w.dims().to_array())?;
        let shape = Shape::of(g)?.with_panel(panel_width(exec.isa()));
        let need = shape.packed_len()?;
        if buf.len() < need {
            return Err(Error::SliceTooShort { operand: Operand::Filter, needed: need, actual: buf.len() });
        }
        let u = &mut buf[..need];
        pack_into(exec, &w, shape, u);
        Ok(WinogradFilter { u, filter: g.filter(), groups: g.groups(), panel: shape.panel })
    }

    /// The filter dims this was packed for.
    #[must_use]
    pub fn filter_dims(&self) -> FilterDims {
        self.filter
    }

    fn check(&self, g: &ConvGeometry) -> Result<Shape> {
        crate::tensor::expect_dims(Operand::Filter, g.filter().to_array(), self.filter.to_array())?;
        if g.groups() != self.groups {
            // Same per-group dims, other grouping: report the dims over all input channels.
            let f = self.filter;
            return Err(Error::ShapeMismatch {
                operand: Operand::Filter,
                expected: [f.o, g.input().c, f.kh, f.kw],
                actual: [f.o, f.i.saturating_mul(self.groups), f.kh, f.kw],
            });
        }
        Ok(Shape::of(g)?.with_panel(self.panel))
    }
}

/// An owned [`WinogradFilter`] (feature `alloc`).
///
/// ```
/// use simdconv::{Conv2d, ConvGeometry, Dims, Exec, FilterLayout, FilterView, WinogradFilterBuf};
/// let g = ConvGeometry::new(Dims::new(1, 4, 9, 9), 4, Conv2d::new(3, 3).pad(1))?;
/// let w = vec![1.0f32; g.filter().count()?];
/// let packed = WinogradFilterBuf::new(&Exec::new(), &g, FilterView::new(&w, g.filter(), FilterLayout::Oihw)?)?;
/// assert_eq!(packed.as_filter().filter_dims(), g.filter());
/// # Ok::<(), simdconv::Error>(())
/// ```
#[cfg(feature = "alloc")]
#[derive(Clone, Debug)]
pub struct WinogradFilterBuf {
    u: alloc::vec::Vec<f32>,
    filter: FilterDims,
    groups: usize,
    panel: usize,
}

#[cfg(feature = "alloc")]
impl WinogradFilterBuf {
    /// Transforms `w` for `g` into a new buffer.
    pub fn new(exec: &Exec, g: &ConvGeometry, w: FilterView<'_, f32>) -> Result<Self> {
        let mut u = alloc::vec![0.0f32; packed_len(g)?];
        let panel = WinogradFilter::pack(exec, g, w, &mut u)?.panel;
        Ok(WinogradFilterBuf { u, filter: g.filter(), groups: g.groups(), panel })
    }

    /// The borrowed form [`conv2d_winograd`] takes.
    #[must_use]
    pub fn as_filter(&self) -> WinogradFilter<'_> {
        WinogradFilter { u: &self.u, filter: self.filter, groups: self.groups, panel: self.panel }
    }
}

/// Floats of workspace [`conv2d_winograd`] needs for `g`: one block of transformed tiles,
/// at most 2^20 floats (4 MiB) unless one tile alone is larger (`36 * (C_g + K_g)`
/// floats, channels rounded up to 16), and never more than all tiles of one phase.
pub fn conv2d_winograd_workspace_len(g: &ConvGeometry) -> Result<usize> {
    tile_workspace_len(g)
}

/// Forward convolution with a prepacked filter: [`conv2d`](crate::conv2d) with
/// [`Algorithm::Winograd`](crate::Algorithm::Winograd), minus the filter transform.
///
/// Same contract as [`conv2d`](crate::conv2d) (both layouts, any strides with a contiguous
/// innermost dimension, the fused epilogue); `workspace` needs
/// [`conv2d_winograd_workspace_len`] floats. See [`WinogradFilter`] for an example.
///
/// # Rounding error
///
/// Winograd F(4x4, 3x3) (interpolation points `0, +-1, +-2, inf`) rounds more than a direct
/// sum. With `u = 2^-24`, `gamma(n) = n u / (1 - n u)` and `C_g` input channels per group,
/// each output satisfies (to first order; the epilogue's adds included)
///
/// `|y - y_exact| <= gamma(C_g + 32) * (48^2 * sum_c max|w_kc| * max|x_nc| + |bias_k| + |residual|)`
///
/// where `max|w_kc|` is the largest of the 9 weights of filter `k`, input channel `c`, and
/// `max|x_nc|` the largest input value of channel `c` (of image `n`; the 6x6 patch under
/// the output's tile is enough). `48 = max_i sum_xi |A^T[i][xi]| * rowsum|G|[xi] *
/// rowsum|B^T|[xi]` bounds how much the three transforms can grow a rounding error: the
/// filter transform costs at most 8 roundings, the input transform 8, the products and the
/// sum over channels `C_g + 1`, the output transform 10, bias and residual 2. The direct
/// algorithms are held to `gamma(9 C_g + 2) * sum |w| |x|` instead. Measured on the
/// standard 3x3 layers (convbench, against an f64 reference): max |y - y_ref| / sum|w x|
/// of 0.8e-6 to 1.8e-6, against 3e-8 to 2e-7 for im2col and direct.
pub fn conv2d_winograd(
    exec: &Exec,
    g: &ConvGeometry,
    epilogue: &Epilogue<'_>,
    x: TensorView<'_, f32>,
    w: &WinogradFilter<'_>,
    y: TensorViewMut<'_, f32>,
    workspace: &mut [f32],
) -> Result<()> {
    super::needs_std()?;
    crate::tensor::expect_dims(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    crate::tensor::expect_dims(Operand::Output, g.output().to_array(), y.dims().to_array())?;
    let shape = w.check(g)?;
    epilogue.validate(g.output())?;
    super::shared_layout(&x, &y, epilogue)?;
    let need = tile_workspace_len(g)?;
    if workspace.len() < need {
        return Err(Error::WorkspaceTooSmall { needed: need, actual: workspace.len() });
    }
    run_packed(exec, g, x, w.u, shape, epilogue, y, &mut workspace[..need])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_cover_the_output() {
        // dilation 2, pad 2, 9 rows in and out: phase 0 has outputs 0,2,4,6,8 (5), phase 1 has 4.
        let (r, sub_in, sub_out, pad) = axis_phase(0, 2, 2, 9, 9);
        assert_eq!((r, sub_in, sub_out, pad), (0, 5, 5, 1));
        let (r, sub_in, sub_out, pad) = axis_phase(1, 2, 2, 9, 9);
        assert_eq!((r, sub_in, sub_out, pad), (1, 4, 4, 1));
        // No dilation: the whole axis with its own padding.
        assert_eq!(axis_phase(0, 1, 3, 7, 11), (0, 7, 11, 3));
        // Dilation 3 with padding 1: phase 0 reads residue 2 with padding 1.
        assert_eq!(axis_phase(0, 3, 1, 8, 8), (2, 2, 3, 1));
    }

    #[test]
    fn closed_form_tiles_match_the_sum_over_every_residue() {
        for d in 1..=13 {
            for o in 0..=60 {
                let brute: usize = (0..d).map(|p| axis_phase(p, d, 0, o, o).2.div_ceil(4)).sum();
                assert_eq!(axis_tiles(o, d), brute, "o {o}, d {d}");
            }
        }
        // Saturates instead of wrapping or looping.
        assert_eq!(axis_tiles(usize::MAX, 1), usize::MAX / 4 + 1);
        assert_eq!(axis_tiles(3, usize::MAX), 3);
    }

    #[test]
    fn phases_skip_residues_without_outputs_and_tiles_agree() {
        use crate::{Conv2d, Dims};
        for (h, w, d, pad) in [(9, 9, 2, 2), (5, 7, 6, 12), (1, 1, 1 << 40, 1 << 40), (20, 3, 7, 7)] {
            let g = ConvGeometry::new(Dims::new(2, 16, h, w), 16, Conv2d::new(3, 3).pad(pad).dilation(d))
                .unwrap();
            let o = g.output();
            let all: std::vec::Vec<Phase> = phases(&g).collect();
            assert_eq!(all.len(), d.min(o.h) * d.min(o.w));
            assert!(all.iter().all(|p| p.oh > 0 && p.ow > 0));
            // Every output row and column belongs to exactly one phase.
            assert_eq!(all.iter().filter(|p| p.pw == 0).map(|p| p.oh).sum::<usize>(), o.h);
            assert_eq!(all.iter().filter(|p| p.ph == 0).map(|p| p.ow).sum::<usize>(), o.w);
            let sum: usize = all.iter().map(|p| o.n * p.th * p.tw).sum();
            assert_eq!(tiles(&g), sum);
            assert_eq!(max_tiles(&g), all.iter().map(|p| o.n * p.th * p.tw).max().unwrap());
        }
    }
}
