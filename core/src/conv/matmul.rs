//! Plumbing shared by the GEMM-based algorithms ([`super::im2col`], [`super::pointwise`]):
//! output pixels as one flat index, runs of pixels at a constant stride, raw output
//! access for worker threads, the per-tile epilogue and the call into the `gemm` crate.
//!
//! Output pixels are numbered `q = (n * OH + oh) * OW + ow` over the whole batch, so a
//! tile or a thread's share may cross rows and images. A GEMM needs its columns at one
//! constant stride: [`Join`] says how far a run of consecutive pixels keeps one.

use core::ops::Range;
use pulp::{Simd, WithSimd};

use super::store::{apply_run, RunBias};
use crate::error::{Dim, Error, Result};
use crate::geometry::Dims;
use crate::isa::Exec;
use crate::params::Epilogue;
use crate::tensor::{Layout, TensorViewMut};

/// How far consecutive output pixels stay at one stride in a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Join {
    /// Only within one row.
    Row,
    /// Across the rows of one image.
    Image,
    /// Across the whole batch.
    All,
}

/// The pixel grid of an output: batch, rows, columns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pixels {
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

impl Pixels {
    pub(crate) fn of(d: Dims) -> Self {
        Pixels { n: d.n, h: d.h, w: d.w }
    }

    /// Total pixels (fits: the output element count was checked by the geometry).
    pub(crate) fn count(&self) -> usize {
        self.n * self.h * self.w
    }

    /// How far pixels join for per-pixel strides `[n, h, w]`, and the stride of one step.
    /// Strides of unit dimensions are ignored.
    pub(crate) fn join(&self, s: [usize; 3]) -> (Join, usize) {
        // The stride from one pixel to the next along the innermost non-unit dimension.
        let step = if self.w > 1 {
            s[2]
        } else if self.h > 1 {
            s[1]
        } else {
            s[0]
        };
        let rows = self.h == 1 || s[1] == self.w.saturating_mul(step);
        if !rows {
            return (Join::Row, step);
        }
        let images = self.n == 1 || s[0] == self.h.saturating_mul(self.w).saturating_mul(step);
        (if images { Join::All } else { Join::Image }, step)
    }

    /// Calls `f(q, n, oh, ow, len)` for each run of `[q0, q1)` that does not cross a
    /// boundary coarser than `join`.
    pub(crate) fn runs(
        &self,
        q0: usize,
        q1: usize,
        join: Join,
        mut f: impl FnMut(usize, usize, usize, usize, usize),
    ) {
        let plane = self.h * self.w;
        let mut q = q0;
        while q < q1 {
            let n = q / plane;
            let rem = q % plane;
            let (oh, ow) = (rem / self.w, rem % self.w);
            let end = match join {
                Join::Row => q - ow + self.w,
                Join::Image => q - rem + plane,
                Join::All => q1,
            }
            .min(q1);
            f(q, n, oh, ow, end - q);
            q = end;
        }
    }
}

/// An output tensor shared by worker threads, each writing its own pixels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutPtr {
    ptr: *mut f32,
    dims: Dims,
    strides: [usize; 4],
}

// SAFETY: `OutPtr` is only created from a `TensorViewMut` that stays mutably borrowed for
// as long as the pointer is used, and workers write disjoint pixel ranges (or disjoint
// channel ranges) of a view whose elements never alias (checked when the view was made).
unsafe impl Send for OutPtr {}
// SAFETY: as above; shared references only copy the pointer.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Takes the raw pointer of `y`; the caller keeps `y` borrowed while this is used.
    pub(crate) fn new(y: &mut TensorViewMut<'_, f32>) -> Self {
        OutPtr { ptr: y.data_mut().as_mut_ptr(), dims: y.dims(), strides: y.strides() }
    }

    /// Pointer to element `[n, c, h, w]`, which must be in range.
    pub(crate) fn at(&self, n: usize, c: usize, h: usize, w: usize) -> *mut f32 {
        debug_assert!(n < self.dims.n && c < self.dims.c && h < self.dims.h && w < self.dims.w);
        let s = self.strides;
        // SAFETY: in-range indices address an element inside the view's slice (its span was
        // checked against the slice length when the view was made).
        unsafe { self.ptr.add(n * s[0] + c * s[1] + h * s[2] + w * s[3]) }
    }
}

/// A stride as `gemm` wants it. A dimension of extent 1 never steps, so its stride (which
/// may be anything) becomes 0; any other stride fits `isize` because `(extent - 1) *
/// stride` lies inside a slice.
pub(crate) fn istride(stride: usize, extent: usize) -> Result<isize> {
    if extent <= 1 {
        return Ok(0);
    }
    isize::try_from(stride).map_err(|_| Error::Overflow { dim: Dim::Channels })
}

/// One strided matrix operand of [`matmul`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<P> {
    pub ptr: P,
    /// Row stride (elements).
    pub rs: isize,
    /// Column stride (elements).
    pub cs: isize,
}

/// `dst[m x n] = lhs[m x k] * rhs[k x n]` (overwrites `dst`).
///
/// # Safety
/// Every element `ptr + i * rs + j * cs` of the three operands, for `i`, `j` within their
/// extents, lies in a live allocation; `dst` does not overlap the others, no one else
/// accesses the `dst` elements meanwhile, and the `dst` elements are distinct.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: Mat<*mut f32>,
    lhs: Mat<*const f32>,
    rhs: Mat<*const f32>,
    par: gemm::Parallelism,
) {
    // SAFETY: the caller guarantees the operands; `gemm` reads lhs / rhs and writes dst
    // only at the in-range strided positions. Note gemm's alpha / beta are the reverse of
    // BLAS: dst := alpha * dst + beta * lhs * rhs, and `read_dst = false` ignores alpha.
    unsafe {
        gemm::gemm(
            m, n, k, dst.ptr, dst.cs, dst.rs, false, lhs.ptr, lhs.cs, lhs.rs, rhs.ptr, rhs.cs, rhs.rs, 0.0,
            1.0, false, false, false, par,
        );
    }
}

/// `gemm`'s own parallelism for `threads` threads.
pub(crate) fn gemm_parallelism(threads: usize) -> gemm::Parallelism {
    #[cfg(feature = "rayon")]
    if threads > 1 {
        return gemm::Parallelism::Rayon(threads);
    }
    let _ = threads;
    gemm::Parallelism::None
}

/// Runs `work(q0, q1, chunk)` on `workers` contiguous, near-equal shares of `total`
/// pixels, each with its own `ws.len() / workers` elements of `ws`, on rayon's pool when
/// `workers > 1` (only possible with the `rayon` feature).
pub(crate) fn split<F>(workers: usize, total: usize, ws: &mut [f32], work: F)
where
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    let workers = workers.clamp(1, total.max(1));
    let share = |w: usize| (total / workers) * w + (total % workers).min(w);
    let chunk = ws.len() / workers;
    #[cfg(feature = "rayon")]
    if workers > 1 {
        // The calling thread runs share 0 ([`crate::par::fork_join`]).
        if chunk == 0 {
            crate::par::fork_join(0..workers, |w| work(share(w), share(w + 1), &mut []));
        } else {
            crate::par::fork_join(ws.chunks_mut(chunk).take(workers).enumerate(), |(w, c)| {
                work(share(w), share(w + 1), c);
            });
        }
        return;
    }
    if chunk == 0 {
        (0..workers).for_each(|w| work(share(w), share(w + 1), &mut []));
    } else {
        ws.chunks_mut(chunk).take(workers).enumerate().for_each(|(w, c)| work(share(w), share(w + 1), c));
    }
}

/// Applies `epilogue` to channels `channels` of output pixels `pixels`, on `exec`'s ISA.
pub(crate) fn epilogue_tile(
    exec: &Exec,
    y: OutPtr,
    layout: Layout,
    epilogue: &Epilogue<'_>,
    pixels: Range<usize>,
    channels: Range<usize>,
) {
    let (q0, q1, c0, c1) = (pixels.start, pixels.end, channels.start, channels.end);
    if epilogue.is_identity() || q0 >= q1 || c0 >= c1 {
        return;
    }
    debug_assert!(c1 <= y.dims.c);
    exec.dispatch(TileEpilogue { y, layout, epilogue, q0, q1, c0, c1 });
}

struct TileEpilogue<'a, 'b> {
    y: OutPtr,
    layout: Layout,
    epilogue: &'b Epilogue<'a>,
    q0: usize,
    q1: usize,
    c0: usize,
    c1: usize,
}

impl WithSimd for TileEpilogue<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let TileEpilogue { y, layout, epilogue, q0, q1, c0, c1 } = self;
        let d = y.dims;
        let px = Pixels::of(d);
        let act = epilogue.activation;
        let res = epilogue.residual;
        match layout {
            Layout::Nchw => px.runs(q0, q1, Join::Row, |_, n, oh, ow, len| {
                for c in c0..c1 {
                    let bias = epilogue.bias.map_or(RunBias::None, |b| RunBias::Broadcast(b[c]));
                    // SAFETY: `w` has stride 1 in an NCHW view (or the run has length 1), so
                    // the run is `len` consecutive in-range elements; this worker owns these
                    // pixels and no other reference to them is live.
                    let run = unsafe { core::slice::from_raw_parts_mut(y.at(n, c, oh, ow), len) };
                    let r = res.as_ref().map(|r| {
                        let o = r.offset(n, c, oh, ow);
                        &r.data()[o..o + len]
                    });
                    apply_run(simd, run, bias, r, act);
                }
            }),
            Layout::Nhwc => {
                let bias = epilogue.bias.map_or(RunBias::None, |b| RunBias::PerElement(&b[c0..c1]));
                let nc = c1 - c0;
                px.runs(q0, q1, Join::Row, |_, n, oh, ow0, len| {
                    for ow in ow0..ow0 + len {
                        // SAFETY: `c` has stride 1 in an NHWC view (or there is one channel),
                        // so a pixel's channels `c0..c1` are `nc` consecutive in-range
                        // elements owned by this worker.
                        let run = unsafe { core::slice::from_raw_parts_mut(y.at(n, c0, oh, ow), nc) };
                        let r = res.as_ref().map(|r| {
                            let o = r.offset(n, c0, oh, ow);
                            &r.data()[o..o + nc]
                        });
                        apply_run(simd, run, bias, r, act);
                    }
                });
            }
        }
    }
}
