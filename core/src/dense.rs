//! Fully-connected layers: forward (matrix product + bias, optional fused activation),
//! backward (`dx`, `dw` summed over the batch, `db`), and the notes' conversion of a
//! fully-connected layer into a convolution.
//!
//! The notes: "neurons in a fully connected layer have full connections to all
//! activations in the previous layer", so the forward pass is `Y = X W^T + b` with `X`
//! `[batch][inputs]` and `W` `[outputs][inputs]` (PyTorch's `Linear`). Two algorithms:
//! [`DenseAlgorithm::Gemm`] (the `gemm` crate, needs `std`) and [`DenseAlgorithm::Direct`]
//! (SIMD dot products and `axpy`s on the [`Exec`]'s instruction set, no `std`, no
//! workspace). Neither needs scratch memory. The direct path runs on the calling thread;
//! the gemm path splits over the [`Exec`]'s threads (feature `rayon`).

use pulp::{Simd, WithSimd};

use crate::error::{Error, Operand, Result, Unsupported};
use crate::geometry::{checked_product, Dims, FcGeometry, FilterDims};
use crate::isa::Exec;
use crate::params::Activation;
use crate::simd_util::{activate, add_to, axpy, dot, dot4, dot_block};
use crate::tensor::{FilterLayout, FilterViewMut};

/// How a fully-connected layer is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenseAlgorithm {
    /// [`DenseAlgorithm::Gemm`] under `std` for a batch of at least 32 rows, otherwise
    /// [`DenseAlgorithm::Direct`]. Measured with `cargo run --release -p simdconv --example
    /// net_timing` (AVX-512, one thread, on a machine shared with other jobs, so figures
    /// moved up to 2x between runs): over three runs the direct path always led at batch
    /// 1 to 4 (e.g. 8.5 vs 2.9 GFLOP/s at 4096 x 4096, batch 4), the lead changed hands
    /// between batch 8 and 16 at 4096 x 4096, and gemm always led there at batch 32 (10.6
    /// vs 6.6); at 256 x 256 the direct path always led up to batch 16, mostly at 32, and
    /// gemm led at 64.
    #[default]
    Auto,
    /// SIMD dot products / `axpy`s on the [`Exec`]'s instruction set; works without `std`.
    Direct,
    /// The `gemm` crate (needs `std`; the crate picks its own instruction set, so the
    /// [`Exec`]'s instruction set cap does not apply to it, only its thread count).
    Gemm,
}

impl DenseAlgorithm {
    fn resolve(self, batch: usize) -> Result<DenseAlgorithm> {
        match self {
            DenseAlgorithm::Auto => Ok(if cfg!(feature = "std") && batch >= 32 {
                DenseAlgorithm::Gemm
            } else {
                DenseAlgorithm::Direct
            }),
            DenseAlgorithm::Gemm if !cfg!(feature = "std") => Err(Error::Unsupported(Unsupported::NeedsStd)),
            a => Ok(a),
        }
    }
}

/// Options of [`fully_connected`].
#[derive(Clone, Copy, Debug, Default)]
pub struct FcOptions<'a> {
    /// The algorithm (default [`DenseAlgorithm::Auto`]).
    pub algorithm: DenseAlgorithm,
    /// Bias `[outputs]`, added to every row.
    pub bias: Option<&'a [f32]>,
    /// Activation applied at the store (e.g. the notes' `FC -> RELU`).
    pub activation: Activation,
}

fn exact_len(operand: Operand, actual: usize, expected: usize) -> Result<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(Error::LengthMismatch { operand, expected, actual })
    }
}

/// Fully-connected forward: `y[n][o] = act(sum_i x[n][i] * w[o][i] + bias[o])`.
///
/// `x` is `[batch][inputs]`, `w` `[outputs][inputs]`, `y` `[batch][outputs]`, all dense
/// row-major with exact lengths. A 4-D activation in NCHW (or NHWC) flattens to a row per
/// batch element in `c, h, w` (or `h, w, c`) order without copying.
///
/// ```
/// use simdconv::{fully_connected, Activation, Exec, FcGeometry, FcOptions};
/// let g = FcGeometry::new(1, 3, 2)?;
/// let x = [1.0f32, 2.0, 3.0];
/// let w = [1.0f32, 0.0, -1.0, /* second neuron */ 0.5, 0.5, 0.5];
/// let bias = [0.5f32, -4.0];
/// let mut y = [0.0f32; 2];
/// let opts = FcOptions { bias: Some(&bias), activation: Activation::Relu, ..Default::default() };
/// fully_connected(&Exec::new(), &g, &opts, &x, &w, &mut y)?;
/// assert_eq!(y, [0.0, 0.0]); // -2 + 0.5 and 3 - 4, both clipped by the ReLU
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn fully_connected(
    exec: &Exec,
    g: &FcGeometry,
    opts: &FcOptions<'_>,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let (nb, ni, no) = (g.batch(), g.inputs(), g.outputs());
    // FcGeometry guarantees these products fit in usize.
    exact_len(Operand::Input, x.len(), nb * ni)?;
    exact_len(Operand::Filter, w.len(), no * ni)?;
    exact_len(Operand::Output, y.len(), nb * no)?;
    if let Some(b) = opts.bias {
        exact_len(Operand::Bias, b.len(), no)?;
    }
    opts.activation.validate()?;
    match opts.algorithm.resolve(nb)? {
        #[cfg(feature = "std")]
        DenseAlgorithm::Gemm => {
            gemm_forward(exec, g, x, w, opts.bias, y);
            exec.dispatch(Activate { act: opts.activation, y });
        }
        _ => exec.dispatch(FcForward { g: *g, x, w, bias: opts.bias, act: opts.activation, y }),
    }
    Ok(())
}

/// Fully-connected backward: `dx = dy W` (`[batch][inputs]`), `dw = dy^T x` summed over
/// the batch (`[outputs][inputs]`), `db = sum_n dy[n]` (`[outputs]`). Each gradient is
/// optional and overwritten. For a fused activation, first run its backward on `dy`
/// (e.g. [`relu_backward`](crate::relu_backward) with the layer's output).
#[allow(clippy::too_many_arguments)]
pub fn fully_connected_backward(
    exec: &Exec,
    g: &FcGeometry,
    algorithm: DenseAlgorithm,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) -> Result<()> {
    let (nb, ni, no) = (g.batch(), g.inputs(), g.outputs());
    exact_len(Operand::Input, x.len(), nb * ni)?;
    exact_len(Operand::Filter, w.len(), no * ni)?;
    exact_len(Operand::OutputGrad, dy.len(), nb * no)?;
    if let Some(d) = &dx {
        exact_len(Operand::InputGrad, d.len(), nb * ni)?;
    }
    if let Some(d) = &dw {
        exact_len(Operand::FilterGrad, d.len(), no * ni)?;
    }
    if let Some(d) = &db {
        exact_len(Operand::BiasGrad, d.len(), no)?;
    }
    let algorithm = algorithm.resolve(nb)?;
    if let Some(db) = db {
        exec.dispatch(BiasGrad { no, dy, db });
    }
    match algorithm {
        #[cfg(feature = "std")]
        DenseAlgorithm::Gemm => gemm_backward(exec, g, x, w, dy, dx, dw),
        _ => exec.dispatch(FcBackward { g: *g, x, w, dy, dx, dw }),
    }
    Ok(())
}

#[cfg(feature = "std")]
fn parallelism(exec: &Exec) -> gemm::Parallelism {
    #[cfg(feature = "rayon")]
    {
        if exec.threads() > 1 {
            return gemm::Parallelism::Rayon(exec.threads());
        }
    }
    let _ = exec;
    gemm::Parallelism::None
}

/// Lengths are checked by the caller: `x` is `nb*ni`, `w` `no*ni`, `y` `nb*no`.
#[cfg(feature = "std")]
fn gemm_forward(exec: &Exec, g: &FcGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let (nb, ni, no) = (g.batch(), g.inputs(), g.outputs());
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(no) {
            row.copy_from_slice(b);
        }
    }
    // Every length fits in usize and the slices are allocations, so each fits in isize.
    let (ni_s, no_s) = (ni as isize, no as isize);
    // SAFETY: y is nb x no row-major (cs 1, rs no); x is nb x ni (cs 1, rs ni); rhs is
    // w^T, ni x no, element (k, j) = w[j * ni + k] (cs ni, rs 1). The caller checked the
    // three lengths, so every index gemm forms is in bounds; y does not alias x or w
    // (it is a distinct &mut). gemm computes dst := alpha*dst + beta*lhs*rhs (alpha and beta
    // are reversed from BLAS), reading dst only when `read_dst`.
    unsafe {
        gemm::gemm(
            nb,
            no,
            ni,
            y.as_mut_ptr(),
            1,
            no_s,
            bias.is_some(),
            x.as_ptr(),
            1,
            ni_s,
            w.as_ptr(),
            ni_s,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism(exec),
        );
    }
}

#[cfg(feature = "std")]
fn gemm_backward(
    exec: &Exec,
    g: &FcGeometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
) {
    let (nb, ni, no) = (g.batch(), g.inputs(), g.outputs());
    let (ni_s, no_s) = (ni as isize, no as isize);
    if let Some(dx) = dx {
        // SAFETY: dx is nb x ni (cs 1, rs ni), dy nb x no (cs 1, rs no), w no x ni (cs 1,
        // rs ni); lengths checked by the caller; dx is a distinct &mut.
        unsafe {
            gemm::gemm(
                nb,
                ni,
                no,
                dx.as_mut_ptr(),
                1,
                ni_s,
                false,
                dy.as_ptr(),
                1,
                no_s,
                w.as_ptr(),
                1,
                ni_s,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism(exec),
            );
        }
    }
    if let Some(dw) = dw {
        // SAFETY: dw is no x ni (cs 1, rs ni); lhs = dy^T, no x nb, element (o, n) =
        // dy[n * no + o] (cs no, rs 1); rhs = x, nb x ni (cs 1, rs ni). Lengths checked by
        // the caller; dw is a distinct &mut.
        unsafe {
            gemm::gemm(
                no,
                ni,
                nb,
                dw.as_mut_ptr(),
                1,
                ni_s,
                false,
                dy.as_ptr(),
                no_s,
                1,
                x.as_ptr(),
                1,
                ni_s,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism(exec),
            );
        }
    }
}

#[cfg(feature = "std")]
struct Activate<'a> {
    act: Activation,
    y: &'a mut [f32],
}

#[cfg(feature = "std")]
impl WithSimd for Activate<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        activate(simd, self.act, self.y);
    }
}

struct FcForward<'a> {
    g: FcGeometry,
    x: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    act: Activation,
    y: &'a mut [f32],
}

impl WithSimd for FcForward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let FcForward { g, x, w, bias, act, y } = self;
        let (ni, no) = (g.inputs(), g.outputs());
        let wrow = |o: usize| &w[o * ni..(o + 1) * ni];
        // Four rows at a time: each weight vector loaded serves four batch rows, which
        // matters when the weights do not fit in cache (the layer is memory-bound).
        let mut xb = x.chunks_exact(4 * ni);
        let mut yb = y.chunks_exact_mut(4 * no);
        for (xs, ys) in (&mut xb).zip(&mut yb) {
            let rows: [&[f32]; 4] = core::array::from_fn(|r| &xs[r * ni..(r + 1) * ni]);
            let mut o = 0;
            while o + 2 <= no {
                let r = dot_block::<S, 4, 2>(simd, ni, rows, [wrow(o), wrow(o + 1)]);
                for (t, v) in r.iter().enumerate() {
                    ys[t * no + o..t * no + o + 2].copy_from_slice(v);
                }
                o += 2;
            }
            if o < no {
                let r = dot_block::<S, 4, 1>(simd, ni, rows, [wrow(o)]);
                for (t, v) in r.iter().enumerate() {
                    ys[t * no + o] = v[0];
                }
            }
            for yr in ys.chunks_exact_mut(no) {
                if let Some(b) = bias {
                    add_to(simd, b, yr);
                }
                activate(simd, act, yr);
            }
        }
        for (xr, yr) in xb.remainder().chunks_exact(ni).zip(yb.into_remainder().chunks_exact_mut(no)) {
            let mut o = 0;
            while o + 4 <= no {
                let r = dot4(simd, xr, [wrow(o), wrow(o + 1), wrow(o + 2), wrow(o + 3)]);
                yr[o..o + 4].copy_from_slice(&r);
                o += 4;
            }
            while o < no {
                yr[o] = dot(simd, xr, wrow(o));
                o += 1;
            }
            if let Some(b) = bias {
                add_to(simd, b, yr);
            }
            activate(simd, act, yr);
        }
    }
}

struct FcBackward<'a> {
    g: FcGeometry,
    x: &'a [f32],
    w: &'a [f32],
    dy: &'a [f32],
    dx: Option<&'a mut [f32]>,
    dw: Option<&'a mut [f32]>,
}

impl WithSimd for FcBackward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (ni, no) = (self.g.inputs(), self.g.outputs());
        if let Some(dx) = self.dx {
            // dx[n] = sum_o dy[n][o] * w[o]: one axpy per output, rows of w contiguous.
            for (dxr, dyr) in dx.chunks_exact_mut(ni).zip(self.dy.chunks_exact(no)) {
                dxr.fill(0.0);
                for (&d, wr) in dyr.iter().zip(self.w.chunks_exact(ni)) {
                    axpy(simd, d, wr, dxr);
                }
            }
        }
        if let Some(dw) = self.dw {
            // dw[o] = sum_n dy[n][o] * x[n].
            dw.fill(0.0);
            for (xr, dyr) in self.x.chunks_exact(ni).zip(self.dy.chunks_exact(no)) {
                for (&d, dwr) in dyr.iter().zip(dw.chunks_exact_mut(ni)) {
                    axpy(simd, d, xr, dwr);
                }
            }
        }
    }
}

struct BiasGrad<'a> {
    no: usize,
    dy: &'a [f32],
    db: &'a mut [f32],
}

impl WithSimd for BiasGrad<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        self.db.fill(0.0);
        for row in self.dy.chunks_exact(self.no) {
            add_to(simd, row, self.db);
        }
    }
}

/// The order in which a `[C x H x W]` volume was flattened into a fully-connected layer's
/// input vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlattenOrder {
    /// `index = (c * H + h) * W + w`: an NCHW tensor flattened per batch element
    /// (PyTorch's `flatten`).
    Chw,
    /// `index = (h * W + w) * C + c`: an NHWC tensor flattened (TensorFlow / Keras).
    Hwc,
}

impl FlattenOrder {
    /// The flat index of `(c, h, w)` in a `[channels x height x width]` volume.
    #[inline]
    #[must_use]
    pub const fn index(self, volume: [usize; 3], c: usize, h: usize, w: usize) -> usize {
        let [vc, vh, vw] = volume;
        match self {
            FlattenOrder::Chw => (c * vh + h) * vw + w,
            FlattenOrder::Hwc => (h * vw + w) * vc + c,
        }
    }
}

/// Turns a fully-connected layer into the equivalent convolution, as the notes describe:
/// an FC layer that looks at a `[C x H x W]` volume becomes `outputs` filters of
/// `H x W x C` (`F = H`, `P = 0`, `S = 1`), and a later FC layer (its input a
/// `1 x 1 x inputs` volume) becomes 1x1 filters. Slid over a larger input, the converted
/// net evaluates the original at every offset of its total stride in one pass.
///
/// `w` is the FC weight matrix `[outputs][inputs]` whose inputs are `volume = [C, H, W]`
/// flattened in `order`; `dst` receives the filters in `layout` (exactly
/// `outputs * C * H * W` elements). Returns the filter dims `[outputs, C, H, W]`, to pair
/// with `Conv2d::new(H, W)`; the FC bias becomes the convolution's per-channel bias as is.
///
/// ```
/// use simdconv::{fc_to_conv_filter, FcGeometry, FilterDims, FilterLayout, FlattenOrder};
/// // 2 neurons over a 2x1x1 volume (C = 2, H = W = 1): a 1x1 convolution.
/// let g = FcGeometry::new(1, 2, 2)?;
/// let w = [1.0f32, 2.0, 3.0, 4.0];
/// let mut f = [0.0f32; 4];
/// let dims = fc_to_conv_filter(&g, &w, [2, 1, 1], FlattenOrder::Chw, &mut f, FilterLayout::Hwio)?;
/// assert_eq!(dims, FilterDims::new(2, 2, 1, 1));
/// assert_eq!(f, [1.0, 3.0, 2.0, 4.0]); // HWIO: output channel fastest
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn fc_to_conv_filter<T: Copy>(
    g: &FcGeometry,
    w: &[T],
    volume: [usize; 3],
    order: FlattenOrder,
    dst: &mut [T],
    layout: FilterLayout,
) -> Result<FilterDims> {
    let [c, h, wd] = volume;
    Dims::new(1, c, h, wd).check_nonzero()?;
    let vol = checked_product(&volume, crate::error::Dim::Features)?;
    if vol != g.inputs() {
        return Err(Error::LengthMismatch { operand: Operand::Input, expected: g.inputs(), actual: vol });
    }
    exact_len(Operand::Filter, w.len(), g.outputs() * g.inputs())?;
    let dims = FilterDims::new(g.outputs(), c, h, wd);
    exact_len(Operand::Output, dst.len(), g.outputs() * vol)?;
    let mut f = FilterViewMut::new(dst, dims, layout)?;
    for o in 0..dims.o {
        let row = &w[o * vol..(o + 1) * vol];
        for ci in 0..c {
            for y in 0..h {
                for x in 0..wd {
                    *f.get_mut(o, ci, y, x) = row[order.index(volume, ci, y, x)];
                }
            }
        }
    }
    Ok(dims)
}
