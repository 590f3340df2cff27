//! Pointwise (1x1) convolution: a GEMM reading the input in place, no im2col.
//!
//! Per group, with output pixels `p`: `Y[o, p] = sum_c W[o, c] * X[c, p]`. In NCHW the
//! pixels of a channel are contiguous (`Y = W X`); in NHWC the channels of a pixel are
//! (`Y^T = X^T W^T`); it is the same product with other strides, and `gemm` takes any.
//! A stride `S > 1` subsamples the input: pixels along a row stay at one stride (`S`
//! elements apart), so each output row is one GEMM; when the subsampled rows also line up
//! (stride 1, or a strided view) a GEMM spans rows or the whole batch. No workspace.

use super::im2col::MIN_WORKER_PIXELS;
use super::matmul::{epilogue_tile, gemm_parallelism, istride, matmul, split, Mat, OutPtr, Pixels};
use super::ConvArgs;
use crate::error::Result;
use crate::tensor::TensorViewMut;

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
                let lhs = Mat { ptr: wd[w.offset(grp * kg, 0, 0, 0)..].as_ptr(), rs: w_m.0, cs: w_m.1 };
                px.runs(t0, t1, join, |_, n, oh, ow, run| {
                    let dst = Mat { ptr: y_out.at(n, grp * kg, oh, ow), rs: y_m.0, cs: y_m.1 };
                    // In range: a 1x1 window without padding reads input row `oh * sh < H`
                    // (even under Ceil rounding) and column `ow * sw < W`.
                    let rhs = Mat {
                        ptr: xd[x.offset(n, grp * cg, oh * sh, ow * sw)..].as_ptr(),
                        rs: x_m.0,
                        cs: x_m.1,
                    };
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
