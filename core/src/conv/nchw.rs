//! An NCHW kernel vectorised along output pixels, for thin stems (see
//! `im2col::thin_input`; taken where [`thin_applies`]).
//!
//! In NCHW a channel's output pixels are contiguous, so a SIMD vector of accumulators is
//! `lanes` consecutive pixels of one output channel and is stored as it is, with the fused
//! epilogue applied right after the store while the rows are in L1. A tile keeps `OB`
//! output channels x `PV` pixel vectors of accumulators in registers; per tap it loads
//! `PV` input vectors (the tap's input values of those pixels, consecutive) and broadcasts
//! `OB` weights read in place from the filter: `OB * PV` FMAs. The filters are never
//! packed.
//!
//! Thin stems have at most 4 input channels, wide windows and any stride: each image's
//! input is first copied, zero-padded and split by column phase (`col mod SW`) into the
//! workspace, so tap `(i, kh, kw)` of consecutive output pixels reads consecutive
//! floats there and no border pixel needs its own path. The copy is `C * H_p * SW * L`
//! floats, `H_p = (OH - 1) * SH + (KH - 1) * DH + 1` padded rows, `L = OW + (KW - 1) *
//! DW / SW` floats per phase row (ResNet's conv1: 158 K floats, 632 KB).
//!
//! Runs shorter than one vector (a worker's share starting or ending near a row's end) go through a scalar loop over the same taps; the last
//! partial block of a run is computed as a full block ending at the run's end, which
//! recomputes (and rewrites identically) a few pixels instead of a masked tail.

use pulp::{Simd, WithSimd};

use super::matmul::{split, OutPtr};
use super::store::{apply_run, RunBias};
use super::ConvArgs;
use crate::error::{Dim, Error, Result};
use crate::geometry::ConvGeometry;
use crate::isa::Isa;
use crate::params::Epilogue;
use crate::tensor::TensorViewMut;

/// Most pixel vectors of a tile.
const PV: usize = 3;

/// Most pixel blocks run channel block by channel block.
const CHUNK: usize = 4;

/// Fewest output pixels per worker.
const MIN_WORKER_PIXELS: usize = 64;

/// The taps of a run: `at(t) = [filter offset, input offset]` of tap `t < len`, relative
/// to output channel 0 of the group and the run's first pixel.
trait Taps: Copy {
    fn len(&self) -> usize;
    fn at(&self, t: usize) -> [usize; 2];
}

/// Thin-stem taps from a table.
#[derive(Clone, Copy)]
struct Table<'a> {
    t: &'a [[usize; 2]],
}

impl Taps for Table<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.t.len()
    }
    #[inline(always)]
    fn at(&self, t: usize) -> [usize; 2] {
        self.t[t]
    }
}

/// One run of `len` consecutive output pixels of `k` output channels (one group).
///
/// Invariants (checked by the constructors' callers, relied on by the unsafe reads):
/// for every tap `t`, output channel `o < k` and pixel `p < len`,
/// `w_off + o * ws0 + at(t)[0] < w.len()` and `x_off + at(t)[1] + p < x.len()`;
/// the output pixels `y + o * ys + p` are in range of the output view, distinct, and
/// written by no one else meanwhile.
struct Run<'a, 'e, T: Taps> {
    x: &'a [f32],
    x_off: usize,
    w: &'a [f32],
    w_off: usize,
    /// Filter stride between output channels.
    ws0: usize,
    taps: T,
    y: *mut f32,
    /// Output stride between channels.
    ys: usize,
    k: usize,
    len: usize,
    epi: RunEpilogue<'a, 'e>,
}

/// The epilogue of one run: bias of channel 0 onwards, residual of channel 0 / pixel 0 at
/// `(data, offset, channel stride)`, pixels contiguous.
#[derive(Clone, Copy)]
struct RunEpilogue<'a, 'e> {
    e: &'e Epilogue<'a>,
    bias: Option<&'a [f32]>,
    res: Option<(&'a [f32], usize, usize)>,
}

impl RunEpilogue<'_, '_> {
    /// Applies the epilogue to output channel `o`, pixels `p..p + n` of the run, already
    /// stored at `y`.
    #[inline(always)]
    fn apply<S: Simd>(&self, simd: S, y: &mut [f32], o: usize, p: usize) {
        let bias = self.bias.map_or(RunBias::None, |b| RunBias::Broadcast(b[o]));
        let r = self.res.map(|(d, off, cs)| &d[off + o * cs + p..off + o * cs + p + y.len()]);
        apply_run(simd, y, bias, r, self.e.activation);
    }
}

impl<T: Taps> WithSimd for Run<'_, '_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // 8 x 3 accumulators, 3 input vectors and a broadcast: 28 of the 32 vector
        // registers of AVX-512 and NEON (Scalar: any). AVX2 (16 registers) never comes
        // here (see `thin_applies`; 4 x 3 tiles measured slower there).
        self.blocks::<S, 8>(simd);
    }
}

impl<T: Taps> Run<'_, '_, T> {
    #[inline(always)]
    fn blocks<S: Simd, const OB: usize>(&self, simd: S) {
        let lanes = S::F32_LANES;
        if self.len < lanes {
            self.scalar(simd);
            return;
        }
        let step = PV * lanes;
        // The block after pixel `p`: `(vectors, first pixel)`. The last partial block
        // ends at the run's end, overlapping the one before; a run shorter than that
        // block (only at `p == 0`, as after a full block `rem + step <= len`) first
        // takes its whole vectors, then a last vector ending at its end (`len >= lanes`).
        let next = |p: usize| {
            let rem = self.len - p;
            if rem >= step {
                (PV, p)
            } else {
                let v = rem.div_ceil(lanes);
                if v * lanes <= self.len {
                    (v, self.len - v * lanes)
                } else {
                    (self.len / lanes, p)
                }
            }
        };
        let mut p = 0;
        while p < self.len {
            // A chunk of up to `CHUNK` blocks runs channel block by channel block: that
            // block's weights stay in L1 and the chunk's input in L2.
            let mut chunk = [(0usize, 0usize); CHUNK];
            let mut nb = 0;
            while nb < CHUNK && p < self.len {
                let (pv, start) = next(p);
                chunk[nb] = (pv, start);
                nb += 1;
                p = start + pv * lanes;
            }
            let mut o = 0;
            while o < self.k {
                let ob = (self.k - o).min(OB);
                for &(pv, start) in &chunk[..nb] {
                    match pv {
                        3 => self.tile::<S, OB, 3>(simd, o, ob, start),
                        2 => self.tile::<S, OB, 2>(simd, o, ob, start),
                        _ => self.tile::<S, OB, 1>(simd, o, ob, start),
                    }
                }
                o += OB;
            }
        }
    }

    /// Output channels `o0..o0 + ob` (`1 <= ob <= OB`), pixels `p0..p0 + N * lanes`
    /// (inside the run).
    #[inline(always)]
    fn tile<S: Simd, const OB: usize, const N: usize>(&self, simd: S, o0: usize, ob: usize, p0: usize) {
        let lanes = S::F32_LANES;
        debug_assert!(ob >= 1 && o0 + ob <= self.k && p0 + N * lanes <= self.len);
        let zero = simd.splat_f32s(0.0);
        let mut acc = [[zero; N]; OB];
        // Channels past `ob` repeat the last one (computed, never stored).
        let mut wrow = [0usize; OB];
        for (o, r) in wrow.iter_mut().enumerate() {
            *r = self.w_off + (o0 + o.min(ob - 1)) * self.ws0;
        }
        let xb = self.x_off + p0;
        for t in 0..self.taps.len() {
            let [wt, xt] = self.taps.at(t);
            debug_assert!(xb + xt + N * lanes <= self.x.len());
            // SAFETY: pixels `p0..p0 + N * lanes` lie inside the run, so by the run's
            // invariant their input floats `x_off + xt + p` are inside `x`.
            let xp = unsafe { self.x.as_ptr().add(xb + xt) };
            let mut xv = [zero; N];
            for (p, v) in xv.iter_mut().enumerate() {
                // SAFETY: see above; an unaligned read of `lanes` floats.
                *v = unsafe { xp.add(p * lanes).cast::<S::f32s>().read_unaligned() };
            }
            for (o, a) in acc.iter_mut().enumerate() {
                debug_assert!(wrow[o] + wt < self.w.len());
                // SAFETY: `o0 + min(o, ob - 1) < k`: by the run's invariant the weight of
                // that channel at tap `t` lies inside `w`.
                let wv = simd.splat_f32s(unsafe { *self.w.as_ptr().add(wrow[o] + wt) });
                for p in 0..N {
                    a[p] = simd.mul_add_e_f32s(wv, xv[p], a[p]);
                }
            }
        }
        for (o, a) in acc.iter().enumerate().take(ob) {
            // SAFETY: channel `o0 + o < k`, pixels `p0..p0 + N * lanes` inside the run:
            // in range, distinct and owned by this worker (the run's invariant).
            let row =
                unsafe { core::slice::from_raw_parts_mut(self.y.add((o0 + o) * self.ys + p0), N * lanes) };
            let (rv, _) = S::as_mut_simd_f32s(row);
            rv.copy_from_slice(a);
            if !self.epi.e.is_identity() {
                self.epi.apply(simd, row, o0 + o, p0);
            }
        }
    }

    /// Runs shorter than a vector, one pixel and channel at a time.
    fn scalar<S: Simd>(&self, simd: S) {
        for o in 0..self.k {
            for p in 0..self.len {
                let mut s = 0.0f32;
                for t in 0..self.taps.len() {
                    let [wt, xt] = self.taps.at(t);
                    s += self.w[self.w_off + o * self.ws0 + wt] * self.x[self.x_off + xt + p];
                }
                // SAFETY: channel `o < k`, pixel `p < len`: the run's invariant.
                let v = unsafe { &mut *self.y.add(o * self.ys + p) };
                *v = s;
                if !self.epi.e.is_identity() {
                    self.epi.apply(simd, core::slice::from_mut(v), o, p);
                }
            }
        }
    }
}

/// Geometry of the padded, phase-split copy of one image for the thin kernel.
#[derive(Clone, Copy, Debug)]
struct Split {
    /// Padded rows.
    hp: usize,
    /// Column phases (the column stride).
    sw: usize,
    /// Floats per phase row.
    l: usize,
}

impl Split {
    fn of(g: &ConvGeometry) -> Result<Self> {
        let f = g.filter();
        let win = g.window();
        let [sh, sw] = win.stride();
        let [dh, dw] = win.dilation();
        let out = g.output();
        let over = || Error::Overflow { dim: Dim::Width };
        let hp = (out.h - 1)
            .checked_mul(sh)
            .and_then(|a| (f.kh - 1).checked_mul(dh).and_then(|b| a.checked_add(b)))
            .and_then(|a| a.checked_add(1))
            .ok_or(over())?;
        let l = (f.kw - 1).checked_mul(dw).map(|a| a / sw).and_then(|a| a.checked_add(out.w)).ok_or(over())?;
        Ok(Split { hp, sw, l })
    }

    fn len(&self, c: usize) -> Result<usize> {
        c.checked_mul(self.hp)
            .and_then(|a| a.checked_mul(self.sw))
            .and_then(|a| a.checked_mul(self.l))
            .ok_or(Error::Overflow { dim: Dim::Width })
    }
}

/// Workspace floats of [`thin`]: the padded, phase-split copy of one image.
pub(crate) fn thin_len(g: &ConvGeometry) -> Result<usize> {
    Split::of(g)?.len(g.filter().i)
}

/// Whether [`thin`] takes a thin-stem geometry on `isa` (else `im2col::thin`, which
/// vectorises over output channels and transposes each row into NCHW):
/// - not on AVX2: with 16 registers, 4 x 3 tiles ran ResNet's conv1 at 0.9x and
///   AlexNet's at 0.7x of the channel-vectorised kernel;
/// - output rows of at least one vector, of which rounding up to whole vectors wastes at
///   most 1/16: ResNet's conv1 (112 = 7 x 16 pixels) ran 1.3-1.5x faster than the
///   transposing kernel on AVX-512, AlexNet's (55 pixels: 64 computed) 0.84x (thread CPU
///   time, same process, back to back; 2026-11-29).
///
/// Never when the padded input copy's size overflows `usize` (the workspace size then
/// counts only the transposing kernel's).
pub(crate) fn thin_applies(g: &ConvGeometry, isa: Isa) -> bool {
    let lanes = isa.f32_lanes();
    let ow = g.output().w;
    let waste = ow.div_ceil(lanes) * lanes - ow;
    isa != Isa::Avx2 && ow >= lanes && waste * 16 <= ow && thin_len(g).is_ok()
}

/// Most taps of [`thin`] (its tap table lives on the stack).
pub(crate) const THIN_MAX_TAPS: usize = super::im2col::THIN_MAX_TAPS;

/// The thin-stem convolution of NCHW tensors (the caller checked `im2col::thin_input`,
/// so `C * KH * KW <= THIN_MAX_TAPS`); `ws` holds at least [`thin_len`] floats.
pub(crate) fn thin(args: ConvArgs<'_, '_>, mut y: TensorViewMut<'_, f32>, ws: &mut [f32]) -> Result<()> {
    let ConvArgs { exec, g, x, w, epilogue, .. } = args;
    let f = g.filter();
    let win = g.window();
    let [sh, sw] = win.stride();
    let [dh, dw] = win.dilation();
    let pad = win.padding();
    let inp = g.input();
    let out = g.output();
    let sp = Split::of(g)?;
    let need = sp.len(f.i)?;
    let have = ws.len();
    let buf = ws.get_mut(..need).ok_or(Error::WorkspaceTooSmall { needed: need, actual: have })?;
    let taps = f.i * f.kh * f.kw;
    if taps > THIN_MAX_TAPS {
        return Err(Error::Overflow { dim: Dim::Channels });
    }
    // Tap `(i, kh, kw)`: filter offset and the offset in the split copy relative to
    // output row 0, pixel 0.
    let mut tab = [[0usize; 2]; THIN_MAX_TAPS];
    let fs = w.strides();
    let mut t = 0;
    for i in 0..f.i {
        for kh in 0..f.kh {
            for kw in 0..f.kw {
                let c = kw * dw;
                tab[t] = [
                    i * fs[1] + kh * fs[2] + kw * fs[3],
                    ((i * sp.hp + kh * dh) * sw + c % sw) * sp.l + c / sw,
                ];
                t += 1;
            }
        }
    }
    let tab = &tab[..taps];
    let row_step = sh * sw * sp.l;
    let xs = x.strides();
    let ys = y.strides();
    let threads = exec.threads();
    let workers = if threads > 1 { threads.min(out.h * out.w / MIN_WORKER_PIXELS).max(1) } else { 1 };
    let y_out = OutPtr::new(&mut y);
    let xd = x.data();
    for n in 0..out.n {
        // The split copy: phase row `(i, R, r)`, float `j` is padded column `j * SW + r`
        // of padded row `R`, i.e. input `[n, i, R - PT, j * SW + r - PL]` or 0 outside.
        for (pr, dst) in buf.chunks_exact_mut(sp.l).enumerate() {
            let r = pr % sw;
            let row = pr / sw;
            let (i, rr) = (row / sp.hp, row % sp.hp);
            let ih = rr.checked_sub(pad.top).filter(|&h| h < inp.h);
            match ih {
                None => dst.fill(0.0),
                Some(ih) => {
                    // Float `j` reads column `j * SW + r - PL`: zeros before `j0` and from
                    // `j1` on, input columns `c0, c0 + SW, ...` in between.
                    let j0 = pad.left.saturating_sub(r).div_ceil(sw).min(dst.len());
                    let j1 = (inp.w + pad.left).saturating_sub(r).div_ceil(sw).clamp(j0, dst.len());
                    let c0 = j0 * sw + r - pad.left.min(j0 * sw + r);
                    let base = n * xs[0] + i * xs[1] + ih * xs[2] + c0 * xs[3];
                    let (head, rest) = dst.split_at_mut(j0);
                    let (mid, tail) = rest.split_at_mut(j1 - j0);
                    head.fill(0.0);
                    tail.fill(0.0);
                    let step = sw * xs[3];
                    if step == 1 {
                        mid.copy_from_slice(&xd[base..base + mid.len()]);
                    } else if !mid.is_empty() {
                        // Every `step`-th float from `base`: the chunks' first floats.
                        let src = &xd[base..base + (mid.len() - 1) * step + 1];
                        let (body, last) = mid.split_at_mut(mid.len() - 1);
                        if step == 2 {
                            // Whole pairs (vectorised by the compiler).
                            for (d, c) in body.iter_mut().zip(src.chunks_exact(2)) {
                                *d = c[0];
                            }
                        } else {
                            for (d, c) in body.iter_mut().zip(src.chunks_exact(step)) {
                                *d = c[0];
                            }
                        }
                        last[0] = src[src.len() - 1];
                    }
                }
            }
        }
        let src = &buf[..];
        split(workers, out.h * out.w, &mut [], |q0, q1, _| {
            // Shares of the image's pixels, cut into row pieces.
            let mut q = q0;
            while q < q1 {
                let (oh, ow) = (q / out.w, q % out.w);
                let len = (out.w - ow).min(q1 - q);
                let res = epilogue.residual.map(|r| (r.data(), r.offset(n, 0, oh, ow), r.strides()[1]));
                // The run's invariant: tap `(i, kh, kw)` of pixel `ow + p` reads split row
                // `i * H_p + oh * SH + kh * DH < C * H_p` (as `(OH - 1) * SH + (KH - 1) *
                // DH < H_p`), phase `< SW`, float `kw * DW / SW + ow + p < L`; weights are
                // elements `[o, i, kh, kw]` of `w`; outputs `[n, o, oh, ow + p]` (and the
                // residual's) are consecutive for `p < len` (`w` has stride 1 in NCHW, or
                // `OW == 1`), inside this worker's share of the image.
                exec.dispatch(Run {
                    x: src,
                    x_off: oh * row_step + ow,
                    w: w.data(),
                    w_off: w.offset(0, 0, 0, 0),
                    ws0: fs[0],
                    taps: Table { t: tab },
                    y: y_out.at(n, 0, oh, ow),
                    ys: ys[1],
                    k: out.c,
                    len,
                    epi: RunEpilogue { e: epilogue, bias: epilogue.bias, res },
                });
                q += len;
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{Conv2d, ConvGeometry, Dims};

    #[test]
    fn split_extents_cover_every_tap() {
        // ResNet's conv1: 3x224x224 -> 64, k7 s2 p3: 229 padded rows, phase rows of
        // 112 + 6 / 2 floats.
        let g = ConvGeometry::new(Dims::new(1, 3, 224, 224), 64, Conv2d::new(7, 7).stride(2).pad(3)).unwrap();
        let s = Split::of(&g).unwrap();
        assert_eq!((s.hp, s.sw, s.l), (229, 2, 115));
        assert_eq!(thin_len(&g).unwrap(), 3 * 229 * 2 * 115);
    }
}
