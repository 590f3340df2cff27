//! Weight gradient of 3x3 stride-1 convolution by Winograd F(3x3, 4x4).
//!
//! `dW[k][c][i][j] = sum over n, oy, ox of dY[n, k, oy, ox] X[n, c, oy + i - pad, ox + j - pad]`
//! is, per 4x4 block ("tile") of `dY`, a 2-D correlation of the 6x6 input patch under the
//! block with the block itself: 3x3 outputs of a 4x4 "filter", Winograd F(3x3, 4x4) with
//! `alpha = 6` and the forward's interpolation points `0, 1, -1, 2, -2, inf`:
//!
//! `dW_tile = A'^T [ (G' dy G'^T) . (B^T d B) ] A'`
//!
//! ```text
//!        | 4  0 -5  0  1  0 |        | 1/4    0     0     0    |
//!        | 0 -4 -4  1  1  0 |        | -1/6 -1/6  -1/6  -1/6   |         | 1 1  1 1  1 0 |
//! B^T =  | 0  4 -4 -1  1  0 |   G' = | -1/6  1/6  -1/6   1/6   |  A'^T = | 0 1 -1 2 -2 0 |
//!        | 0 -2 -1  2  1  0 |        | 1/24 1/12  1/6   1/3    |         | 0 1  1 4  4 1 |
//!        | 0  2 -1 -2  1  0 |        | 1/24 -1/12 1/6  -1/3    |
//!        | 0  4  0 -5  0  1 |        | 0      0     0     1    |
//! ```
//!
//! (Toom-Cook: row `p` of `G'` is `f_p [1, p, p^2, p^3]` with `f_p = 1 / prod_{q != p} (p - q)`
//! over the finite points, the same factors as the forward's `G`; row `i` of `A'^T` is
//! `p^i`, with the point at infinity only in the last row; `B^T` depends on the points
//! only, so it is the forward's, and the input transform is shared with it.)
//!
//! The transform is linear, so the sum over tiles (of every image and every polyphase
//! sub-convolution) moves inside: for each of the 36 positions `xi`,
//! `M[xi] (K_g x C_g) = sum over tiles U[xi][tile][k] V[xi][tile][c]`, a matrix product
//! whose inner dimension is the tiles, accumulated over blocks of tiles, and once all
//! tiles are in, `dW[k][c] = A'^T M[..][k][c] A'`. The product is 36 multiplications per
//! tile and channel pair, against `16 * 9 = 144` for the direct sum (4x fewer).
//!
//! Dilation is the forward's polyphase decomposition: each phase is an undilated
//! convolution on strided sub-views of `x` and `dy`, and all phases add into the same `M`.
//!
//! ## Rounding error
//!
//! With `u = 2^-24`, `gamma(n) = n u / (1 - n u)` and `T` the tiles of all images and phases
//! ([`tiles`](crate::conv::winograd::tiles)), each computed weight gradient satisfies, to
//! first order,
//!
//! `|dw - dw_exact| <= gamma(T + 32) * (160/3)^2 * sum over tiles max|dy_t,k| max|x_t,c|`
//!
//! where `max|dy_t,k|` is the largest `|dy|` of output channel `k` in tile `t` and
//! `max|x_t,c|` the largest `|x|` of input channel `c` in the tile's 6x6 patch. The long
//! sum is now over the tiles (`T` roundings, plus one per product); the `dy` transform is
//! two 4-term sums with rounded constants (at most 10 roundings), the input transform 8,
//! the output transform two 5-term sums with exact constants (10): 28 plus slack.
//! `160/3 = max_i sum_xi |A'^T[i][xi]| rowsum|G'|[xi] rowsum|B^T|[xi]` (row sums of `G'`:
//! `1/4, 2/3, 2/3, 5/8, 5/8, 1`; of `B^T`: `10, 10, 10, 6, 6, 10`; the last row of `A'^T`
//! gives `20/3 + 20/3 + 4 * 3.75 * 2 + 10 = 160/3`) bounds how much the transforms can
//! grow a rounding error, once per axis. Since every `dy` element lies in exactly one
//! tile, `sum over tiles max|dy_t,k| max|x_t,c| <= sum_n (sum |dy[n, k]|) max|x[n, c]|`,
//! the looser form the tests check.

use pulp::{Simd, WithSimd};

use super::FilterArgs;
use crate::conv::winograd::{
    load, mul, phases, rank1, store, Ahead, InputTransform, Phase, Shape, VOut, PAD, XI,
};
use crate::error::{Dim, Error, Result};
use crate::geometry::ConvGeometry;
use crate::tensor::{FilterViewMut, TensorView};

/// Target floats of the `U` and `V` buffers of one block of tiles (16 MiB). Every block
/// reads and writes all of `M` (`36 K_g C_g` floats, 9.4 MB for 256 x 256 channels) once,
/// so blocks must hold many tiles: VGG conv3_2's 196 tiles in one block measured dW over
/// forward 1.06-1.34x against 1.28-1.48x with half this budget (two blocks), alternating
/// runs on a loaded machine.
const TILE_BUDGET: usize = 1 << 22;
/// Output channels per register block of the product kernel.
const ROWS: usize = 6;

/// Tiles per block: as many as the budget holds (at least one), at most the most tiles of
/// one phase.
fn block_tiles(g: &ConvGeometry, shape: Shape) -> Result<usize> {
    let per = shape.per_tile()?;
    Ok((TILE_BUDGET / per).max(1).min(crate::conv::winograd::max_tiles(g).max(1)))
}

/// Floats of `M`: `groups * 36 * K_g * C_g` (input channels padded to 16).
fn m_len(shape: Shape) -> Result<usize> {
    mul(mul(mul(shape.groups, XI)?, shape.kg)?, shape.cgp)
}

/// Workspace of the Winograd weight gradient of `g`: the accumulators `M`, then `U` and
/// `V` of one block of tiles.
pub(crate) fn workspace_len(g: &ConvGeometry) -> Result<usize> {
    let shape = Shape::of(g)?;
    let tiles = mul(shape.per_tile()?, block_tiles(g, shape)?)?;
    m_len(shape)?.checked_add(tiles).ok_or(Error::Overflow { dim: Dim::Channels })
}

// ---------------------------------------------------------------------------------------
// Transforms.

/// `G' g` for one column of 4.
#[inline(always)]
fn g4<S: Simd>(s: S, g: [S::f32s; 4]) -> [S::f32s; 6] {
    let sixth = s.splat_f32s(-1.0 / 6.0);
    let e = s.add_f32s(g[0], g[2]);
    let o = s.add_f32s(g[1], g[3]);
    let e2 = s.mul_add_e_f32s(s.splat_f32s(4.0), g[2], g[0]);
    let o2 = s.mul_add_e_f32s(s.splat_f32s(8.0), g[3], s.mul_f32s(s.splat_f32s(2.0), g[1]));
    let c = s.splat_f32s(1.0 / 24.0);
    [
        s.mul_f32s(s.splat_f32s(0.25), g[0]),
        s.mul_f32s(sixth, s.add_f32s(e, o)),
        s.mul_f32s(sixth, s.sub_f32s(e, o)),
        s.mul_f32s(c, s.add_f32s(e2, o2)),
        s.mul_f32s(c, s.sub_f32s(e2, o2)),
        g[3],
    ]
}

/// `A'^T m` for one column of 6.
#[inline(always)]
fn a3<S: Simd>(s: S, m: [S::f32s; 6]) -> [S::f32s; 3] {
    let a = s.add_f32s(m[1], m[2]);
    let b = s.sub_f32s(m[1], m[2]);
    let c = s.add_f32s(m[3], m[4]);
    let d = s.sub_f32s(m[3], m[4]);
    [
        s.add_f32s(s.add_f32s(m[0], a), c),
        s.mul_add_e_f32s(s.splat_f32s(2.0), d, b),
        s.add_f32s(s.mul_add_e_f32s(s.splat_f32s(4.0), c, a), m[5]),
    ]
}

/// `U[xi][t][k] = (G' dy_t G'^T)[xi]` for tiles `[t0, t1)` of `phase`, output channels of
/// group `grp` (`len` rows per `xi`, `kgp` floats per row; padded channels are zero).
struct DyTransform<'a, 'b> {
    dy: &'b TensorView<'a, f32>,
    dil: [usize; 2],
    phase: Phase,
    shape: Shape,
    grp: usize,
    t0: usize,
    t1: usize,
    len: usize,
    u: &'b mut [f32],
}

impl WithSimd for DyTransform<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let DyTransform { dy, dil, phase: p, shape, grp, t0, t1, len, u } = self;
        let l = S::F32_LANES;
        let dd = dy.data();
        let ds = dy.strides();
        let Shape { kg, kgp, .. } = shape;
        let k_lo = grp * kg;
        let zero = s.splat_f32s(0.0);
        // Channels outside when they are strided (NCHW), as in the input transform.
        let (nt, nk) = (t1 - t0, kgp / l);
        for it in 0..nt * nk {
            let (t, k0) = if ds[1] == 1 { (t0 + it / nk, it % nk * l) } else { (t0 + it % nt, it / nt * l) };
            let (n, ti, tj) = p.tile(t);
            let rows = (p.oh - 4 * ti).min(4);
            let cols = (p.ow - 4 * tj).min(4);
            let lanes = kg.saturating_sub(k0).min(l);
            let mut g = [[zero; 4]; 4];
            if lanes == l && ds[1] == 1 {
                for (a, row) in g.iter_mut().enumerate().take(rows) {
                    let oh = (4 * ti + a) * dil[0] + p.ph;
                    for (b, v) in row.iter_mut().enumerate().take(cols) {
                        let ow = (4 * tj + b) * dil[1] + p.pw;
                        *v = load::<S>(&dd[dy.offset(n, k_lo + k0, oh, ow)..]);
                    }
                }
            } else if lanes > 0 {
                let mut buf = [[0.0f32; PAD]; 16];
                for j in 0..lanes {
                    for a in 0..rows {
                        let oh = (4 * ti + a) * dil[0] + p.ph;
                        for b in 0..cols {
                            let ow = (4 * tj + b) * dil[1] + p.pw;
                            buf[a * 4 + b][j] = dd[dy.offset(n, k_lo + k0 + j, oh, ow)];
                        }
                    }
                }
                for (a, row) in g.iter_mut().enumerate() {
                    for (b, v) in row.iter_mut().enumerate() {
                        *v = load::<S>(&buf[a * 4 + b]);
                    }
                }
            }
            // Columns, then rows: tmp[xi][b] = (G' g)[xi][b], U = tmp G'^T.
            let mut tmp = [[zero; 4]; 6];
            for b in 0..4 {
                for (xi, v) in g4(s, [g[0][b], g[1][b], g[2][b], g[3][b]]).into_iter().enumerate() {
                    tmp[xi][b] = v;
                }
            }
            for (xi, row) in tmp.iter().enumerate() {
                for (nu, v) in g4(s, *row).into_iter().enumerate() {
                    store::<S>(&mut u[((xi * 6 + nu) * len + (t - t0)) * kgp + k0..], v);
                }
            }
        }
    }
}

/// `dW[grp * K_g + k][c] = A'^T M[..][k][c] A'` for group `grp` (`m` is that group's
/// `[xi][k][cgp]`).
struct OutputTransform<'a, 'b> {
    m: &'b [f32],
    shape: Shape,
    grp: usize,
    dw: &'b mut FilterViewMut<'a, f32>,
}

impl WithSimd for OutputTransform<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let OutputTransform { m, shape, grp, dw } = self;
        let l = S::F32_LANES;
        let Shape { cg, kg, cgp, .. } = shape;
        let zero = s.splat_f32s(0.0);
        let ws = dw.strides();
        let data = dw.data_mut();
        let plane = kg * cgp;
        for k in 0..kg {
            for c0 in (0..cg).step_by(l) {
                let mut mm = [[zero; 6]; 6];
                for (xi, row) in mm.iter_mut().enumerate() {
                    for (nu, v) in row.iter_mut().enumerate() {
                        *v = load::<S>(&m[(xi * 6 + nu) * plane + k * cgp + c0..]);
                    }
                }
                let mut tmp = [[zero; 6]; 3];
                for nu in 0..6 {
                    let col = a3(s, [mm[0][nu], mm[1][nu], mm[2][nu], mm[3][nu], mm[4][nu], mm[5][nu]]);
                    for (i, v) in col.into_iter().enumerate() {
                        tmp[i][nu] = v;
                    }
                }
                let lanes = (cg - c0).min(l);
                let o = grp * kg + k;
                for (i, row) in tmp.iter().enumerate() {
                    for (j, v) in a3(s, *row).into_iter().enumerate() {
                        let mut buf = [0.0f32; PAD];
                        store::<S>(&mut buf, v);
                        for (lane, &val) in buf[..lanes].iter().enumerate() {
                            data[o * ws[0] + (c0 + lane) * ws[1] + i * ws[2] + j * ws[3]] = val;
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The 36 products over the tiles.

/// `M (kg x cgp) += U^T V` (`M = U^T V` when `fresh`: the first block skips reading and
/// zeroing `M`): `U` is `nt` rows of `kgp` (output channels), `V` `nt` rows of `cgp`
/// (input channels).
struct Product<'a> {
    u: &'a [f32],
    v: &'a [f32],
    m: &'a mut [f32],
    nt: usize,
    shape: Shape,
    fresh: bool,
}

impl WithSimd for Product<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // Accumulators: 6 x 4 vectors on AVX-512 and NEON (24 of 32 registers), 6 x 2 on
        // AVX2 (12 of 16), as in the forward's kernel.
        match S::F32_LANES {
            8 => product::<S, 2>(s, self),
            _ => product::<S, 4>(s, self),
        }
    }
}

#[inline(always)]
fn product<S: Simd, const NV: usize>(s: S, p: Product<'_>) {
    let Product { u, v, m, nt, shape, fresh } = p;
    let Shape { kg, cgp, kgp, .. } = shape;
    let l = S::F32_LANES;
    let wide = NV * l;
    let mut c0 = 0;
    // Strips of input channels outside, so one strip of `V` stays in cache while all
    // output channels pass over it.
    while c0 < cgp {
        if c0 + wide <= cgp {
            strip::<S, NV>(s, u, v, &mut *m, nt, kg, cgp, kgp, c0, fresh);
            c0 += wide;
        } else {
            // `cgp` is a multiple of 16, hence of `l`: whole vectors remain.
            strip::<S, 1>(s, u, v, &mut *m, nt, kg, cgp, kgp, c0, fresh);
            c0 += l;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn strip<S: Simd, const NV: usize>(
    s: S,
    u: &[f32],
    v: &[f32],
    m: &mut [f32],
    nt: usize,
    kg: usize,
    cgp: usize,
    kgp: usize,
    c0: usize,
    fresh: bool,
) {
    let mut k0 = 0;
    while k0 < kg {
        if kg - k0 >= ROWS {
            block::<S, ROWS, NV>(s, u, v, m, nt, cgp, kgp, k0, c0, fresh);
            k0 += ROWS;
        } else {
            block::<S, 1, NV>(s, u, v, m, nt, cgp, kgp, k0, c0, fresh);
            k0 += 1;
        }
    }
}

/// `M[k0..k0 + R][c0..c0 + NV * l] += sum over t < nt of U[t][k0 + r] V[t][c0..]` (`=`
/// when `fresh`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<S: Simd, const R: usize, const NV: usize>(
    s: S,
    u: &[f32],
    v: &[f32],
    m: &mut [f32],
    nt: usize,
    cgp: usize,
    kgp: usize,
    k0: usize,
    c0: usize,
    fresh: bool,
) {
    let l = S::F32_LANES;
    if nt == 0 {
        return;
    }
    // The last element each pointer below reaches, checked once.
    assert!((nt - 1) * kgp + k0 + R <= u.len() && k0 + R <= kgp);
    assert!((nt - 1) * cgp + c0 + NV * l <= v.len() && c0 + NV * l <= cgp);
    let mut acc: [[S::f32s; NV]; R] = core::array::from_fn(|r| {
        core::array::from_fn(|j| {
            if fresh {
                s.splat_f32s(0.0)
            } else {
                load::<S>(&m[(k0 + r) * cgp + c0 + j * l..])
            }
        })
    });
    // SAFETY: for `t < nt` and `r < R`, `U[t][k0 + r]` and the NV vectors of `V[t]` from
    // column `c0` lie inside `u` and `v` (the asserts above).
    unsafe {
        rank1::<S, R, NV, 0>(s, &mut acc, u[k0..].as_ptr(), 1, kgp, v[c0..].as_ptr(), cgp, nt, Ahead::NONE);
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            store::<S>(&mut m[(k0 + r) * cgp + c0 + j * l..], a);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The driver.

/// Runs the weight gradient on a validated problem; `ws` holds [`workspace_len`] floats.
pub(crate) fn filter(
    args: FilterArgs<'_, '_>,
    g: &ConvGeometry,
    mut dw: FilterViewMut<'_, f32>,
    ws: &mut [f32],
) -> Result<()> {
    let FilterArgs { exec, x, dy, .. } = args;
    let shape = Shape::of(g)?;
    let Shape { groups, cgp, kg, kgp, .. } = shape;
    let per = shape.per_tile()?;
    let cap = block_tiles(g, shape)?;
    let (m, tiles) = ws.split_at_mut(m_len(shape)?);
    // The first block writes `M` (every element: all `K_g` rows, all `cgp` columns);
    // later blocks add to it.
    let mut fresh = true;
    let mplane = XI * kg * cgp;
    let dil = g.window().dilation();
    let n_img = g.output().n;
    for phase in phases(g) {
        let total = n_img * phase.th * phase.tw;
        let mut t0 = 0;
        while t0 < total {
            let t1 = (t0 + cap).min(total);
            let len = t1 - t0;
            let (v, rest) = tiles[..per * len].split_at_mut(XI * len * cgp);
            let u = &mut rest[..XI * len * kgp];
            for grp in 0..groups {
                exec.dispatch(InputTransform {
                    x: &x,
                    dil,
                    phase,
                    shape,
                    grp,
                    t0,
                    t1,
                    rows: len,
                    part: (0, 1),
                    v: VOut::new(&mut *v),
                });
                exec.dispatch(DyTransform { dy: &dy, dil, phase, shape, grp, t0, t1, len, u: &mut *u });
                let mg = &mut m[grp * mplane..(grp + 1) * mplane];
                for xi in 0..XI {
                    exec.dispatch(Product {
                        u: &u[xi * len * kgp..(xi + 1) * len * kgp],
                        v: &v[xi * len * cgp..(xi + 1) * len * cgp],
                        m: &mut mg[xi * kg * cgp..(xi + 1) * kg * cgp],
                        nt: len,
                        shape,
                        fresh,
                    });
                }
            }
            fresh = false;
            t0 = t1;
        }
    }
    if fresh {
        m.fill(0.0); // no tiles at all: the gradient is zero
    }
    for grp in 0..groups {
        exec.dispatch(OutputTransform { m: &m[grp * mplane..(grp + 1) * mplane], shape, grp, dw: &mut dw });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BT: [[f64; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    const G: [[f64; 4]; 6] = [
        [0.25, 0.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 1.0 / 3.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, -1.0 / 3.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    const AT: [[f64; 6]; 3] =
        [[1.0, 1.0, 1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, 2.0, -2.0, 0.0], [0.0, 1.0, 1.0, 4.0, 4.0, 1.0]];

    /// F(3, 4) in 1-D: `A'^T [(G' g) . (B^T d)]` is the correlation `y[i] = sum_b g[b] d[i + b]`.
    #[test]
    fn f34_matrices_correlate() {
        let mut seed = 0x1234_5678_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        for _ in 0..20 {
            let g: [f64; 4] = core::array::from_fn(|_| next());
            let d: [f64; 6] = core::array::from_fn(|_| next());
            let gg: [f64; 6] = core::array::from_fn(|xi| (0..4).map(|b| G[xi][b] * g[b]).sum());
            let dd: [f64; 6] = core::array::from_fn(|xi| (0..6).map(|j| BT[xi][j] * d[j]).sum());
            for i in 0..3 {
                let wino: f64 = (0..6).map(|xi| AT[i][xi] * gg[xi] * dd[xi]).sum();
                let direct: f64 = (0..4).map(|b| g[b] * d[i + b]).sum();
                assert!((wino - direct).abs() < 1e-12, "{i}: {wino} vs {direct}");
            }
        }
        // The growth factor of the documented bound.
        let growth = (0..3)
            .map(|i| {
                (0..6)
                    .map(|xi| {
                        AT[i][xi].abs()
                            * G[xi].iter().map(|v| v.abs()).sum::<f64>()
                            * BT[xi].iter().map(|v| v.abs()).sum::<f64>()
                    })
                    .sum::<f64>()
            })
            .fold(0.0, f64::max);
        assert!((growth - 160.0 / 3.0).abs() < 1e-12, "{growth}");
    }

    /// The SIMD transforms match the matrices (scalar ISA, one lane).
    #[test]
    fn simd_transforms_match_matrices() {
        let s = pulp::Scalar::new();
        let g = [0.5f32, -1.25, 2.0, 0.75];
        let out = g4(s, g);
        for xi in 0..6 {
            let want: f64 = (0..4).map(|b| G[xi][b] * f64::from(g[b])).sum();
            assert!((f64::from(out[xi]) - want).abs() < 1e-6, "G' row {xi}");
        }
        let m = [1.0f32, -2.0, 3.5, 0.25, -1.5, 2.0];
        let out = a3(s, m);
        for i in 0..3 {
            let want: f64 = (0..6).map(|xi| AT[i][xi] * f64::from(m[xi])).sum();
            assert!((f64::from(out[i]) - want).abs() < 1e-6, "A'^T row {i}");
        }
    }
}
