//! Direct backward kernels: no workspace, no allocation, every geometry; the `no_std` path.
//!
//! `dX` scatters each output gradient through the filter taps (the transpose of the
//! forward's gather): along the contiguous dimension this is an `axpy` of a `dY` row into
//! a `dX` row (NCHW; stride-1 columns vectorise) or of a filter column into a pixel's
//! channels (NHWC). `dW` is a dot product of a `dY` row with an input row (NCHW) or a
//! rank-1 update per pixel (NHWC). Padding, stride and dilation only move the ranges.

use pulp::{Simd, WithSimd};

use super::simd::{axpy, dot};
use super::{DataArgs, FilterArgs};
use crate::geometry::{input_coord, FilterDims};
use crate::tensor::{FilterViewMut, Layout, TensorViewMut};

pub(crate) fn data(args: DataArgs<'_, '_>, dx: TensorViewMut<'_, f32>) {
    args.exec.dispatch(Data { args, dx });
}

pub(crate) fn filter(args: FilterArgs<'_, '_>, dw: FilterViewMut<'_, f32>) {
    args.exec.dispatch(Filter { args, dw });
}

struct Data<'a, 'b> {
    args: DataArgs<'a, 'b>,
    dx: TensorViewMut<'b, f32>,
}

impl WithSimd for Data<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Data { args, mut dx } = self;
        let DataArgs { p, layout, dy, w, .. } = args;
        crate::tensor::fill_runs(&mut dx, layout, 0.0);
        let (cg, og) = (p.cg(), p.og());
        let [kh, kw] = p.k;
        let [sh, sw] = p.s;
        let [dh, dwl] = p.d;
        let (ws, wd) = (w.strides(), w.data());
        let (ys, yd) = (dy.strides(), dy.data());
        let xs = dx.strides();
        let xd = dx.data_mut();
        match layout {
            Layout::Nchw if sw > 1 => {
                // Columns of one phase `ix % sw == r` are contiguous `dY` columns: gather
                // them into a stack buffer per phase, then store the buffer strided.
                let mut buf = [0.0f32; CHUNK];
                let wid = p.x.w;
                for n in 0..p.x.n {
                    for g in 0..p.groups {
                        for ci in 0..cg {
                            let c = g * cg + ci;
                            for iy in 0..p.x.h {
                                let row = n * xs[0] + c * xs[1] + iy * xs[2];
                                for r in 0..sw.min(wid) {
                                    let cnt = (wid - r).div_ceil(sw);
                                    let mut j0 = 0;
                                    while j0 < cnt {
                                        let jn = (cnt - j0).min(CHUNK);
                                        buf[..jn].fill(0.0);
                                        for ky in 0..kh {
                                            let (oy_lo, oy_hi, iy_lo) = p.range(0, ky);
                                            if oy_lo >= oy_hi || iy < iy_lo || (iy - iy_lo) % sh != 0 {
                                                continue;
                                            }
                                            let oy = oy_lo + (iy - iy_lo) / sh;
                                            if oy >= oy_hi {
                                                continue;
                                            }
                                            for kx in 0..kw {
                                                let (ox_lo, ox_hi, ix_lo) = p.range(1, kx);
                                                if ox_lo >= ox_hi || ix_lo % sw != r {
                                                    continue;
                                                }
                                                // Output ox writes phase index j_lo + (ox - ox_lo).
                                                let j_lo = ix_lo / sw;
                                                let a = j_lo.max(j0);
                                                let b = (j_lo + (ox_hi - ox_lo)).min(j0 + jn);
                                                if a >= b {
                                                    continue;
                                                }
                                                let ox = ox_lo + (a - j_lo);
                                                for o in 0..og {
                                                    let oc = g * og + o;
                                                    let wv = wd[w.offset(oc, ci, ky, kx)];
                                                    let src =
                                                        n * ys[0] + oc * ys[1] + oy * ys[2] + ox * ys[3];
                                                    axpy(
                                                        simd,
                                                        wv,
                                                        &yd[src..],
                                                        ys[3],
                                                        &mut buf[a - j0..],
                                                        1,
                                                        b - a,
                                                    );
                                                }
                                            }
                                        }
                                        for (j, &v) in buf[..jn].iter().enumerate() {
                                            xd[row + (r + (j0 + j) * sw) * xs[3]] = v;
                                        }
                                        j0 += jn;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Layout::Nchw => {
                for n in 0..p.x.n {
                    for g in 0..p.groups {
                        for ci in 0..cg {
                            let c = g * cg + ci;
                            for o in 0..og {
                                let oc = g * og + o;
                                for ky in 0..kh {
                                    let (oy_lo, oy_hi, iy_lo) = p.range(0, ky);
                                    for kx in 0..kw {
                                        let (ox_lo, ox_hi, ix_lo) = p.range(1, kx);
                                        let len = ox_hi - ox_lo;
                                        if len == 0 {
                                            continue;
                                        }
                                        let a = wd[w.offset(oc, ci, ky, kx)];
                                        for j in 0..oy_hi - oy_lo {
                                            let src =
                                                n * ys[0] + oc * ys[1] + (oy_lo + j) * ys[2] + ox_lo * ys[3];
                                            let dst = n * xs[0]
                                                + c * xs[1]
                                                + (iy_lo + j * sh) * xs[2]
                                                + ix_lo * xs[3];
                                            axpy(simd, a, &yd[src..], ys[3], &mut xd[dst..], sw * xs[3], len);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Layout::Nhwc => {
                // Filters contiguous over `o` but not `i` (HWIO): dot products over `o`.
                let dot_form = ws[0] == 1 && ws[1] != 1 && cg > 1;
                for n in 0..p.x.n {
                    for oy in 0..p.y.h {
                        for ky in 0..kh {
                            let Some(iy) = input_coord(oy, sh, ky, dh, p.pad[0], p.x.h) else { continue };
                            for ox in 0..p.y.w {
                                for kx in 0..kw {
                                    let Some(ix) = input_coord(ox, sw, kx, dwl, p.pad[1], p.x.w) else {
                                        continue;
                                    };
                                    for g in 0..p.groups {
                                        let dx_off = n * xs[0] + g * cg * xs[1] + iy * xs[2] + ix * xs[3];
                                        let dy_off = n * ys[0] + g * og * ys[1] + oy * ys[2] + ox * ys[3];
                                        if dot_form {
                                            for ci in 0..cg {
                                                let wo = w.offset(g * og, ci, ky, kx);
                                                let v = dot(simd, &yd[dy_off..], ys[1], &wd[wo..], ws[0], og);
                                                xd[dx_off + ci * xs[1]] += v;
                                            }
                                        } else {
                                            for o in 0..og {
                                                let a = yd[dy_off + o * ys[1]];
                                                let wo = w.offset(g * og + o, 0, ky, kx);
                                                axpy(simd, a, &wd[wo..], ws[1], &mut xd[dx_off..], xs[1], cg);
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Elements of the stack buffers of the strided NCHW paths.
const CHUNK: usize = 256;

fn zero_filter(fd: &mut [f32], d: FilterDims, fs: [usize; 4]) {
    for o in 0..d.o {
        for i in 0..d.i {
            for ky in 0..d.kh {
                for kx in 0..d.kw {
                    fd[o * fs[0] + i * fs[1] + ky * fs[2] + kx * fs[3]] = 0.0;
                }
            }
        }
    }
}

struct Filter<'a, 'b> {
    args: FilterArgs<'a, 'b>,
    dw: FilterViewMut<'b, f32>,
}

impl WithSimd for Filter<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Filter { args, mut dw } = self;
        let FilterArgs { p, layout, x, dy, .. } = args;
        let (cg, og) = (p.cg(), p.og());
        let [kh, kw] = p.k;
        let [sh, sw] = p.s;
        let [dh, dwl] = p.d;
        let (xs, xd) = (x.strides(), x.data());
        let (ys, yd) = (dy.strides(), dy.data());
        let fs = dw.strides();
        let fdims = dw.dims();
        let fd = dw.data_mut();
        match layout {
            Layout::Nchw if sw > 1 => {
                // Copy each strided input run once into a stack buffer, then reuse it for
                // every output channel of the group.
                zero_filter(fd, fdims, fs);
                let mut buf = [0.0f32; CHUNK];
                for n in 0..p.x.n {
                    for g in 0..p.groups {
                        for ci in 0..cg {
                            let c = g * cg + ci;
                            for ky in 0..kh {
                                let (oy_lo, oy_hi, iy_lo) = p.range(0, ky);
                                for j in 0..oy_hi.saturating_sub(oy_lo) {
                                    let (oy, iy) = (oy_lo + j, iy_lo + j * sh);
                                    for kx in 0..kw {
                                        let (ox_lo, ox_hi, ix_lo) = p.range(1, kx);
                                        let len = ox_hi - ox_lo;
                                        let mut c0 = 0;
                                        while c0 < len {
                                            let cl = (len - c0).min(CHUNK);
                                            let xo = n * xs[0]
                                                + c * xs[1]
                                                + iy * xs[2]
                                                + (ix_lo + c0 * sw) * xs[3];
                                            for (k, v) in buf[..cl].iter_mut().enumerate() {
                                                *v = xd[xo + k * sw * xs[3]];
                                            }
                                            for o in 0..og {
                                                let oc = g * og + o;
                                                let yo = n * ys[0]
                                                    + oc * ys[1]
                                                    + oy * ys[2]
                                                    + (ox_lo + c0) * ys[3];
                                                let v = dot(simd, &yd[yo..], ys[3], &buf, 1, cl);
                                                fd[oc * fs[0] + ci * fs[1] + ky * fs[2] + kx * fs[3]] += v;
                                            }
                                            c0 += cl;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Layout::Nchw => {
                for g in 0..p.groups {
                    for o in 0..og {
                        let oc = g * og + o;
                        for ci in 0..cg {
                            let c = g * cg + ci;
                            for ky in 0..kh {
                                let (oy_lo, oy_hi, iy_lo) = p.range(0, ky);
                                for kx in 0..kw {
                                    let (ox_lo, ox_hi, ix_lo) = p.range(1, kx);
                                    let len = ox_hi - ox_lo;
                                    let mut acc = 0.0f32;
                                    if len > 0 {
                                        for n in 0..p.x.n {
                                            for j in 0..oy_hi - oy_lo {
                                                let yo = n * ys[0]
                                                    + oc * ys[1]
                                                    + (oy_lo + j) * ys[2]
                                                    + ox_lo * ys[3];
                                                let xo = n * xs[0]
                                                    + c * xs[1]
                                                    + (iy_lo + j * sh) * xs[2]
                                                    + ix_lo * xs[3];
                                                acc +=
                                                    dot(simd, &yd[yo..], ys[3], &xd[xo..], sw * xs[3], len);
                                            }
                                        }
                                    }
                                    fd[oc * fs[0] + ci * fs[1] + ky * fs[2] + kx * fs[3]] = acc;
                                }
                            }
                        }
                    }
                }
            }
            Layout::Nhwc => {
                zero_filter(fd, fdims, fs);
                // Gradients contiguous over `o` but not `i` (HWIO): updates along `o`.
                let o_form = fs[0] == 1 && fs[1] != 1 && cg > 1;
                for n in 0..p.x.n {
                    for oy in 0..p.y.h {
                        for ky in 0..kh {
                            let Some(iy) = input_coord(oy, sh, ky, dh, p.pad[0], p.x.h) else { continue };
                            for ox in 0..p.y.w {
                                for kx in 0..kw {
                                    let Some(ix) = input_coord(ox, sw, kx, dwl, p.pad[1], p.x.w) else {
                                        continue;
                                    };
                                    for g in 0..p.groups {
                                        let x_off = n * xs[0] + g * cg * xs[1] + iy * xs[2] + ix * xs[3];
                                        let dy_off = n * ys[0] + g * og * ys[1] + oy * ys[2] + ox * ys[3];
                                        if o_form {
                                            for ci in 0..cg {
                                                let a = xd[x_off + ci * xs[1]];
                                                let wo =
                                                    g * og * fs[0] + ci * fs[1] + ky * fs[2] + kx * fs[3];
                                                axpy(simd, a, &yd[dy_off..], ys[1], &mut fd[wo..], fs[0], og);
                                            }
                                        } else {
                                            for o in 0..og {
                                                let a = yd[dy_off + o * ys[1]];
                                                let wo = (g * og + o) * fs[0] + ky * fs[2] + kx * fs[3];
                                                axpy(simd, a, &xd[x_off..], xs[1], &mut fd[wo..], fs[1], cg);
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
