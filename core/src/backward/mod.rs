//! Convolution backward passes and transposed convolution.
//!
//! The data gradient `dX` is the transpose of the forward map: every output gradient
//! `dY[n, o, oy, ox]` flows back through each filter tap to the input element that tap
//! read. Transposed convolution ("deconvolution") is exactly that map run forward, so
//! [`conv_transpose2d`] and [`conv2d_backward_data`] share one kernel. Neither ever builds
//! a zero-stuffed input: strides and dilation are handled by index arithmetic.
//!
//! | algorithm | `dX` / transposed conv | `dW` | workspace | needs |
//! |---|---|---|---|---|
//! | [`BackwardAlgorithm::Gemm`] | GEMM `W^T dY` into column tiles, then col2im | im2col tiles, then GEMM `dY cols^T` | bounded (`dX`: 0 for 1x1 unpadded; `dW`: plus one group's `dW`) | `std` |
//! | [`BackwardAlgorithm::Direct`] | SIMD scatter of `dY` through the filters | SIMD dot products / rank-1 updates | none | nothing (the `no_std` path) |
//! | [`BackwardAlgorithm::Winograd`] | - | Winograd F(3x3, 4x4): 36 products over the tiles, accumulated in `36 K_g C_g` floats | the accumulators plus a block of transformed tiles (at most 16 MiB, or all tiles of one phase) | `std`, 3x3, stride 1 |
//! | [`BackwardAlgorithm::Flipped`] | the forward [`conv2d`](crate::conv2d) (`Algorithm::Auto`) of `dY` with flipped, in/out-swapped filters | - | the flipped filters plus the forward's | stride 1, leading padding at most `dilation * (kernel - 1)` |
//!
//! [`BackwardAlgorithm::Auto`] picks, for `dX` and transposed convolution, `Flipped` when
//! built with `std`, the geometry allows it, and the forward's `Auto` would run the
//! flipped geometry with anything but im2col + GEMM (there `Gemm` is as fast or faster,
//! and 1x1 unpadded kernels need no workspace with it), else `Gemm` with `std`, else
//! `Direct`; for `dW`, `Winograd` where the forward's `Auto` runs Winograd (3x3 stride 1,
//! at least 16 input and output channels per group, at least 48 tiles), else `Gemm` with
//! `std`, else `Direct` (see [`select_backward_data_algorithm`] and
//! [`select_backward_filter_algorithm`]). Measured with convbench (`--min-time 1`, 1
//! thread, AVX-512, dW median over the forward median of the same run, load average 2.8 on
//! 2 cores): VGG conv3_2 1.17x NCHW / 1.22x NHWC with `Winograd` (`Gemm` was 3.05x / 2.40x
//! on a quiet machine), dilated 3x3 d2 1.14x / 1.10x (`Gemm` 1.62x / 1.97x).
//!
//! Conventions are the forward's ([`conv2d`](crate::conv2d)): activations and their
//! gradients share one layout whose innermost dimension is contiguous (any other strides),
//! filters and filter gradients take any strides, `*_workspace_len` tells the scratch
//! size, nothing allocates, and [`Exec`] picks the instruction set (and, with the `rayon`
//! feature, the thread count handed to the GEMM).

mod direct;
mod flipped;
#[cfg(feature = "std")]
mod gemm;
mod simd;
mod transpose;
#[cfg(feature = "std")]
mod winograd;

pub use transpose::{conv_transpose2d, conv_transpose2d_workspace_len, ConvTransposeGeometry};

use crate::error::{Error, Operand, Result, Unsupported};
use crate::geometry::{ConvGeometry, Dims};
use crate::isa::Exec;
use crate::tensor::{expect_dims, FilterView, FilterViewMut, Layout, TensorView, TensorViewMut};

/// A backward-convolution algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackwardAlgorithm {
    /// `Gemm` with `std`, `Direct` without.
    #[default]
    Auto,
    /// GEMM (the `gemm` crate) plus col2im / im2col over bounded tiles; needs `std`.
    Gemm,
    /// Direct SIMD loops, no workspace; works without `std`.
    Direct,
    /// Data gradient (and transposed convolution) only, stride 1 only: the forward
    /// convolution of `dY` with the spatially flipped, in/out-swapped filters, built in the
    /// workspace, run by [`conv2d`](crate::conv2d) with `Algorithm::Auto`, so it is as fast
    /// as the forward of the same layer. Needs the leading padding at most
    /// `dilation * (kernel - 1)` and the trailing at least 0 per axis
    /// (else [`Unsupported::FlippedGeometry`]).
    Flipped,
    /// Weight gradient only, 3x3 stride-1 kernels only (any padding, groups, dilation):
    /// Winograd F(3x3, 4x4), the forward's input transform and 36 products whose inner
    /// dimension is the tiles (4x fewer multiplications than the direct sum). Needs `std`
    /// (else [`Unsupported::NeedsStd`]), a 3x3 stride-1 kernel (else
    /// [`Unsupported::WinogradNeeds3x3Stride1`]); asked for a data gradient it returns
    /// [`Unsupported::WinogradFilterGradientOnly`]. Rounds more than a direct sum: see
    /// [`conv2d_backward_filter`] for the bound.
    Winograd,
}

impl BackwardAlgorithm {
    /// Every named algorithm that computes both gradients of every geometry (not `Auto`,
    /// not the data-only, stride-1-only `Flipped`).
    pub const NAMED: [BackwardAlgorithm; 2] = [BackwardAlgorithm::Gemm, BackwardAlgorithm::Direct];

    /// Lower-case name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            BackwardAlgorithm::Auto => "auto",
            BackwardAlgorithm::Gemm => "gemm",
            BackwardAlgorithm::Direct => "direct",
            BackwardAlgorithm::Flipped => "flipped",
            BackwardAlgorithm::Winograd => "winograd",
        }
    }

    /// The algorithm `Auto` resolves to in this build when the geometry does not matter
    /// (`Gemm` with `std`, else `Direct`; for the per-geometry choices see
    /// [`select_backward_data_algorithm`] and [`select_backward_filter_algorithm`]); errors
    /// for `Gemm` and `Winograd` without `std`.
    pub fn resolve(self) -> Result<BackwardAlgorithm> {
        match self {
            BackwardAlgorithm::Auto if cfg!(feature = "std") => Ok(BackwardAlgorithm::Gemm),
            BackwardAlgorithm::Auto => Ok(BackwardAlgorithm::Direct),
            BackwardAlgorithm::Gemm | BackwardAlgorithm::Winograd if !cfg!(feature = "std") => {
                Err(Error::Unsupported(Unsupported::NeedsStd))
            }
            a => Ok(a),
        }
    }
}

/// The shape of one "scatter" problem: a forward convolution from `x` (input side) to
/// `y` (output side), described only by what the kernels need. Both the forward
/// geometry's backward passes and transposed convolution reduce to it; the trailing
/// padding is implicit (taps past the input are dropped).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem {
    /// Input-side dims (`X`, `dX`; a transposed convolution's output).
    pub x: Dims,
    /// Output-side dims (`Y`, `dY`; a transposed convolution's input).
    pub y: Dims,
    pub groups: usize,
    /// Kernel `[kh, kw]`.
    pub k: [usize; 2],
    pub s: [usize; 2],
    pub d: [usize; 2],
    /// Leading padding `[top, left]`.
    pub pad: [usize; 2],
}

impl Problem {
    pub(crate) fn from_conv(g: &ConvGeometry) -> Problem {
        let w = g.window();
        let p = w.padding();
        Problem {
            x: g.input(),
            y: g.output(),
            groups: g.groups(),
            k: w.kernel(),
            s: w.stride(),
            d: w.dilation(),
            pad: [p.top, p.left],
        }
    }
    /// Input channels per group.
    pub(crate) fn cg(&self) -> usize {
        self.x.c / self.groups
    }
    /// Output channels per group.
    pub(crate) fn og(&self) -> usize {
        self.y.c / self.groups
    }
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) fn taps(&self) -> usize {
        self.k[0] * self.k[1]
    }
    /// A 1x1 kernel with no leading padding and every output inside the input: output
    /// `(oy, ox)` reads input `(oy * sh, ox * sw)`, which exists.
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) fn is_pointwise(&self) -> bool {
        // (out - 1) * s is at most the last window start, inside the padded input.
        let inside = |o: usize, s: usize, i: usize| (o - 1) * s < i;
        self.k == [1, 1]
            && self.pad == [0, 0]
            && inside(self.y.h, self.s[0], self.x.h)
            && inside(self.y.w, self.s[1], self.x.w)
    }
    /// The algorithm `algorithm` runs for this problem's data gradient in `layout`.
    ///
    /// `Auto` (with `std`) takes `Flipped` when the flipped form exists, the kernel is not
    /// 1x1 unpadded (`Gemm` runs that GEMM in place, without workspace), and the forward's
    /// own `Auto` picks something other than im2col + GEMM for the flipped geometry (a
    /// depthwise kernel, or any faster path the forward gains). When the forward would run
    /// im2col + GEMM, `Gemm` here is the same GEMM size with col2im instead of im2col, and
    /// measured as fast or faster (thread CPU time, 1 thread, dX over forward: VGG conv3_2
    /// 0.95-0.97x vs flipped 1.01-1.08x; dilated 3x3 d2 NCHW 0.74-0.82x vs 1.00x).
    pub(crate) fn data_algorithm(
        &self,
        algorithm: BackwardAlgorithm,
        layout: Layout,
    ) -> Result<BackwardAlgorithm> {
        let fg = flipped::forward_geometry(self);
        match algorithm {
            BackwardAlgorithm::Auto
                if cfg!(feature = "std")
                    && !self.is_pointwise()
                    && fg.is_some_and(|fg| {
                        crate::conv::select_algorithm(&fg, layout) != crate::conv::Algorithm::Im2colGemm
                    }) =>
            {
                Ok(BackwardAlgorithm::Flipped)
            }
            BackwardAlgorithm::Flipped if fg.is_none() => {
                Err(Error::Unsupported(Unsupported::FlippedGeometry))
            }
            BackwardAlgorithm::Winograd => Err(Error::Unsupported(Unsupported::WinogradFilterGradientOnly)),
            a => a.resolve(),
        }
    }
    /// Along `axis` (0 = rows, 1 = columns), the output indices `[lo, hi)` for which tap
    /// `k` lands inside the input, and the input index of output `lo`. Empty when
    /// `lo >= hi`.
    pub(crate) fn range(&self, axis: usize, k: usize) -> (usize, usize, usize) {
        let (s, d, pad) = (self.s[axis], self.d[axis], self.pad[axis]);
        let (input, output) = if axis == 0 { (self.x.h, self.y.h) } else { (self.x.w, self.y.w) };
        // k * d and input + pad fit: both are below the padded extent the geometry checked.
        let off = k * d;
        let lo = if off >= pad { 0 } else { (pad - off).div_ceil(s) };
        let end = input + pad; // positions (o * s + off) must be < end
        let hi = if end <= off { 0 } else { ((end - off - 1) / s + 1).min(output) };
        if lo >= hi {
            return (0, 0, 0);
        }
        (lo, hi, lo * s + off - pad)
    }
}

impl Problem {
    /// Along `axis` (0 = rows, 1 = columns), the taps `[lo, hi)` of output index `o` that
    /// land inside the input, and the input index of tap `lo` (taps are increasing in
    /// input position). Empty when `lo >= hi`.
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) fn taps_at(&self, axis: usize, o: usize) -> (usize, usize, usize) {
        let (s, d, pad, k) = (self.s[axis], self.d[axis], self.pad[axis], self.k[axis]);
        let input = if axis == 0 { self.x.h } else { self.x.w };
        // `o * s` is at most the last window start and `input + pad` the padded extent:
        // both fit (the geometry checked the padded extent).
        let start = o * s;
        let lo = if start >= pad { 0 } else { (pad - start).div_ceil(d) };
        let end = input + pad; // positions (start + t * d) must be < end
        let hi = if end <= start { 0 } else { ((end - start - 1) / d + 1).min(k) };
        if lo >= hi {
            return (0, 0, 0);
        }
        (lo, hi, start + lo * d - pad)
    }
}

/// Collapses dims `[(extent, stride)]` listed outer to inner into one stride, if the
/// flattened index `((i0 * e1) + i1) * e2 + i2 ...` maps to offsets with one stride.
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) fn collapse(dims: &[(usize, usize)]) -> Option<usize> {
    let mut inner: Option<(usize, usize)> = None; // (stride, extent so far)
    for &(e, s) in dims.iter().rev() {
        if e == 1 {
            continue;
        }
        inner = match inner {
            None => Some((s, e)),
            Some((base, ext)) => {
                if s != base.checked_mul(ext)? {
                    return None;
                }
                Some((base, ext.checked_mul(e)?))
            }
        };
    }
    Some(inner.map_or(1, |(s, _)| s))
}

/// Zeroes every element of `t`, whose innermost dimension in `layout` is contiguous,
/// merging inner dimensions into one run wherever their strides allow (an NHWC tensor of
/// 3 channels is one run, not a run of 3 per pixel).
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) fn zero(t: &mut TensorViewMut<'_, f32>, layout: Layout) {
    let (d, s) = (t.dims(), t.strides());
    let dims = match layout {
        Layout::Nchw => [(d.n, s[0]), (d.c, s[1]), (d.h, s[2]), (d.w, s[3])],
        Layout::Nhwc => [(d.n, s[0]), (d.h, s[2]), (d.w, s[3]), (d.c, s[1])],
    };
    // Merge inner dims while each one's stride equals the run so far (or it has extent 1).
    let mut run = 1;
    let mut outer = 4;
    while outer > 0 {
        let (e, st) = dims[outer - 1];
        if e != 1 && st != run {
            break;
        }
        run *= e; // at most the element count, which fits
        outer -= 1;
    }
    let data = t.data_mut();
    let mut idx = [0usize; 4];
    loop {
        let off: usize = (0..outer).map(|i| idx[i] * dims[i].1).sum();
        data[off..off + run].fill(0.0);
        // Odometer over the outer dims.
        let mut i = outer;
        loop {
            if i == 0 {
                return;
            }
            i -= 1;
            idx[i] += 1;
            if idx[i] < dims[i].0 {
                break;
            }
            idx[i] = 0;
        }
    }
}

/// A tensor's preferred inner-contiguous layout, dims and strides.
type Shape = (Option<Layout>, Dims, [usize; 4]);

/// The layout two tensors share (see `tensor::shared_layout`).
fn shared_layout(a: Shape, a_op: Operand, b: Shape, b_op: Operand) -> Result<Layout> {
    crate::tensor::shared_layout(&[(a_op, a.1, a.2), (b_op, b.1, b.2)])
}

fn check_workspace(need: usize, workspace: &[f32]) -> Result<()> {
    if workspace.len() < need {
        return Err(Error::WorkspaceTooSmall { needed: need, actual: workspace.len() });
    }
    Ok(())
}

pub(crate) fn data_workspace_len(p: &Problem, algorithm: BackwardAlgorithm, layout: Layout) -> Result<usize> {
    match p.data_algorithm(algorithm, layout)? {
        #[cfg(feature = "std")]
        BackwardAlgorithm::Gemm => gemm::workspace_len(p),
        BackwardAlgorithm::Flipped => {
            flipped::workspace_len(p, layout).unwrap_or(Err(Error::Unsupported(Unsupported::FlippedGeometry)))
        }
        _ => Ok(0),
    }
}

fn filter_workspace_len(g: &ConvGeometry, algorithm: BackwardAlgorithm, layout: Layout) -> Result<usize> {
    let p = &Problem::from_conv(g);
    match filter_algorithm(g, algorithm, layout)? {
        // The column tile of dW has the shape of dX's, plus a staged dW group.
        #[cfg(feature = "std")]
        BackwardAlgorithm::Gemm => gemm::filter_workspace_len(p),
        #[cfg(feature = "std")]
        BackwardAlgorithm::Winograd => winograd::workspace_len(g),
        BackwardAlgorithm::Flipped => Err(Error::Unsupported(Unsupported::FlippedGeometry)),
        _ => {
            let _ = p;
            Ok(0)
        }
    }
}

/// The algorithm [`conv2d_backward_filter`] runs for `g` in `layout` when asked for
/// `algorithm`; errors when `algorithm` cannot run `g` in this build.
///
/// `Auto` picks [`BackwardAlgorithm::Winograd`] exactly when the forward's `Auto`
/// ([`select_algorithm`](crate::select_algorithm)) runs the forward of `g` with
/// Winograd (3x3 stride 1, at least 16 input and 16 output channels per group, at least
/// 48 tiles), else `Gemm` with `std`, else `Direct`. Measured (convbench, 1 thread,
/// AVX-512, dW median over the forward median of the same run): VGG conv3_2 1.17x NCHW /
/// 1.22x NHWC with `Winograd` (`Gemm`: 3.05x / 2.40x), dilated 3x3 d2 1.14x / 1.10x
/// (`Gemm`: 1.62x / 1.97x).
///
/// ```
/// use simdconv::{select_backward_filter_algorithm, BackwardAlgorithm, Conv2d, ConvGeometry, Dims,
///                Layout};
/// let g = ConvGeometry::new(Dims::new(1, 64, 32, 32), 64, Conv2d::new(3, 3).pad(1))?;
/// let auto = select_backward_filter_algorithm(&g, BackwardAlgorithm::Auto, Layout::Nchw)?;
/// assert_eq!(auto, if cfg!(feature = "std") { BackwardAlgorithm::Winograd } else { BackwardAlgorithm::Direct });
/// // Stride 2 has no Winograd form.
/// let s2 = ConvGeometry::new(Dims::new(1, 64, 32, 32), 64, Conv2d::new(3, 3).pad(1).stride(2))?;
/// assert!(select_backward_filter_algorithm(&s2, BackwardAlgorithm::Winograd, Layout::Nchw).is_err());
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn select_backward_filter_algorithm(
    g: &ConvGeometry,
    algorithm: BackwardAlgorithm,
    layout: Layout,
) -> Result<BackwardAlgorithm> {
    filter_algorithm(g, algorithm, layout)
}

fn filter_algorithm(
    g: &ConvGeometry,
    algorithm: BackwardAlgorithm,
    layout: Layout,
) -> Result<BackwardAlgorithm> {
    match algorithm {
        BackwardAlgorithm::Auto
            if crate::conv::select_algorithm(g, layout) == crate::conv::Algorithm::Winograd =>
        {
            Ok(BackwardAlgorithm::Winograd)
        }
        BackwardAlgorithm::Flipped => Err(Error::Unsupported(Unsupported::FlippedGeometry)),
        BackwardAlgorithm::Winograd => {
            let a = algorithm.resolve()?;
            let w = g.window();
            if w.kernel() != [3, 3] || w.stride() != [1, 1] {
                return Err(Error::Unsupported(Unsupported::WinogradNeeds3x3Stride1));
            }
            Ok(a)
        }
        a => a.resolve(),
    }
}

/// The algorithm [`conv2d_backward_data`] runs for `g` in `layout` when asked for
/// `algorithm`; errors when `algorithm` cannot run `g` in this build.
///
/// `Auto` picks [`BackwardAlgorithm::Flipped`] (the forward convolution of `dY` with
/// flipped filters) when built with `std`, the geometry allows it (stride 1, leading
/// padding at most `dilation * (kernel - 1)`) and the forward's `Auto` would run the
/// flipped geometry with anything but im2col + GEMM (there `Gemm` is as fast or faster);
/// else `Gemm` with `std`, else `Direct`.
///
/// ```
/// use simdconv::{select_backward_data_algorithm, BackwardAlgorithm, Conv2d, ConvGeometry, Dims,
///                Layout};
/// // Depthwise: dX is a depthwise forward convolution of dY.
/// let g = ConvGeometry::new(Dims::new(1, 8, 16, 16), 8, Conv2d::new(3, 3).pad(1).groups(8))?;
/// let auto = select_backward_data_algorithm(&g, BackwardAlgorithm::Auto, Layout::Nchw)?;
/// assert_eq!(auto, if cfg!(feature = "std") { BackwardAlgorithm::Flipped } else { BackwardAlgorithm::Direct });
/// // Stride 2 has no flipped forward form.
/// let s2 = ConvGeometry::new(Dims::new(1, 8, 16, 16), 8, Conv2d::new(3, 3).pad(1).stride(2))?;
/// assert!(select_backward_data_algorithm(&s2, BackwardAlgorithm::Flipped, Layout::Nchw).is_err());
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn select_backward_data_algorithm(
    g: &ConvGeometry,
    algorithm: BackwardAlgorithm,
    layout: Layout,
) -> Result<BackwardAlgorithm> {
    Problem::from_conv(g).data_algorithm(algorithm, layout)
}

/// f32 elements of workspace [`conv2d_backward_data`] needs for `g` with `algorithm` in
/// `layout` (0 for [`BackwardAlgorithm::Direct`] and for 1x1 unpadded kernels).
pub fn conv2d_backward_data_workspace_len(
    g: &ConvGeometry,
    algorithm: BackwardAlgorithm,
    layout: Layout,
) -> Result<usize> {
    data_workspace_len(&Problem::from_conv(g), algorithm, layout)
}

/// f32 elements of workspace [`conv2d_backward_filter`] needs for `g` with `algorithm` in
/// `layout` (0 for [`BackwardAlgorithm::Direct`] and for 1x1 unpadded kernels;
/// [`BackwardAlgorithm::Flipped`] computes no filter gradients: an error).
pub fn conv2d_backward_filter_workspace_len(
    g: &ConvGeometry,
    algorithm: BackwardAlgorithm,
    layout: Layout,
) -> Result<usize> {
    filter_workspace_len(g, algorithm, layout)
}

/// Everything a data-gradient kernel needs, validated: dims match `p`, `layout` is the
/// shared inner-contiguous layout of `dy` and `dx`.
#[derive(Clone, Copy)]
pub(crate) struct DataArgs<'a, 'b> {
    pub exec: &'b Exec,
    pub p: &'b Problem,
    pub layout: Layout,
    pub dy: TensorView<'a, f32>,
    pub w: FilterView<'a, f32>,
}

/// Runs the data-gradient kernel on a validated problem (shared with transposed conv).
pub(crate) fn run_data(
    args: DataArgs<'_, '_>,
    algorithm: BackwardAlgorithm,
    dx: TensorViewMut<'_, f32>,
    workspace: &mut [f32],
) -> Result<()> {
    let algorithm = args.p.data_algorithm(algorithm, args.layout)?;
    let need = data_workspace_len(args.p, algorithm, args.layout)?;
    check_workspace(need, workspace)?;
    match algorithm {
        #[cfg(feature = "std")]
        BackwardAlgorithm::Gemm => {
            gemm::data(args, dx, &mut workspace[..need]);
            Ok(())
        }
        BackwardAlgorithm::Flipped => flipped::data(args, dx, &mut workspace[..need]),
        _ => {
            direct::data(args, dx);
            Ok(())
        }
    }
}

/// Data gradient `dX` of the convolution `g`: `dx` is overwritten with the gradient of
/// `<conv(x, w), dy>` with respect to `x`.
///
/// `dy` and `dx` must share a layout whose innermost dimension is contiguous; `w` takes
/// any strides. `workspace` needs [`conv2d_backward_data_workspace_len`] elements.
///
/// ```
/// use simdconv::{conv2d_backward_data, BackwardAlgorithm, Conv2d, ConvGeometry, Dims, Exec,
///                FilterLayout, FilterView, Layout, TensorView, TensorViewMut};
/// // The notes' 1-D example, W = 5, F = 3, P = 1, S = 2, weights [1, 0, -1]:
/// // y[j] = x[2j - 1] - x[2j + 1], so dx[2j - 1] += dy[j] and dx[2j + 1] -= dy[j].
/// let g = ConvGeometry::new(Dims::new(1, 1, 1, 5), 1,
///     Conv2d::new(1, 3).padding(simdconv::Padding::symmetric(0, 1)).stride(2))?;
/// let dy = [1.0f32, 10.0, 100.0];
/// let w = [1.0f32, 0.0, -1.0];
/// let mut dx = [0.0f32; 5];
/// let algo = BackwardAlgorithm::Auto;
/// let mut ws = vec![0.0; simdconv::conv2d_backward_data_workspace_len(&g, algo, Layout::Nchw)?];
/// conv2d_backward_data(&Exec::new(), &g, algo,
///     TensorView::new(&dy, g.output(), Layout::Nchw)?,
///     FilterView::new(&w, g.filter(), FilterLayout::Oihw)?,
///     TensorViewMut::new(&mut dx, g.input(), Layout::Nchw)?, &mut ws)?;
/// assert_eq!(dx, [0.0, -1.0 + 10.0, 0.0, -10.0 + 100.0, 0.0]);
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn conv2d_backward_data(
    exec: &Exec,
    g: &ConvGeometry,
    algorithm: BackwardAlgorithm,
    dy: TensorView<'_, f32>,
    w: FilterView<'_, f32>,
    dx: TensorViewMut<'_, f32>,
    workspace: &mut [f32],
) -> Result<()> {
    expect_dims(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect_dims(Operand::Filter, g.filter().to_array(), w.dims().to_array())?;
    expect_dims(Operand::InputGrad, g.input().to_array(), dx.dims().to_array())?;
    let layout = shared_layout(
        (dy.layout(), dy.dims(), dy.strides()),
        Operand::OutputGrad,
        (dx.layout(), dx.dims(), dx.strides()),
        Operand::InputGrad,
    )?;
    let p = Problem::from_conv(g);
    run_data(DataArgs { exec, p: &p, layout, dy, w }, algorithm, dx, workspace)
}

/// Everything a filter-gradient kernel needs, validated.
#[derive(Clone, Copy)]
pub(crate) struct FilterArgs<'a, 'b> {
    pub exec: &'b Exec,
    pub p: &'b Problem,
    pub layout: Layout,
    pub x: TensorView<'a, f32>,
    pub dy: TensorView<'a, f32>,
}

/// Weight gradient `dW` of the convolution `g`, summed over the batch and every position
/// sharing the weights: `dw` is overwritten with the gradient of `<conv(x, w), dy>` with
/// respect to `w`.
///
/// `x` and `dy` must share a layout whose innermost dimension is contiguous; `dw` takes
/// any strides. `workspace` needs [`conv2d_backward_filter_workspace_len`] elements.
///
/// ```
/// use simdconv::{conv2d_backward_filter, BackwardAlgorithm, Conv2d, ConvGeometry, Dims, Exec,
///                FilterLayout, FilterViewMut, Layout, TensorView};
/// // 1-D, W = 4, F = 2, stride 1: y[j] = w0 x[j] + w1 x[j + 1],
/// // so dw0 = sum dy[j] x[j], dw1 = sum dy[j] x[j + 1].
/// let g = ConvGeometry::new(Dims::new(1, 1, 1, 4), 1, Conv2d::new(1, 2))?;
/// let x = [1.0f32, 2.0, 3.0, 4.0];
/// let dy = [1.0f32, 0.0, -1.0];
/// let mut dw = [0.0f32; 2];
/// let algo = BackwardAlgorithm::Auto;
/// let mut ws = vec![0.0; simdconv::conv2d_backward_filter_workspace_len(&g, algo, Layout::Nchw)?];
/// conv2d_backward_filter(&Exec::new(), &g, algo,
///     TensorView::new(&x, g.input(), Layout::Nchw)?,
///     TensorView::new(&dy, g.output(), Layout::Nchw)?,
///     FilterViewMut::new(&mut dw, g.filter(), FilterLayout::Oihw)?, &mut ws)?;
/// assert_eq!(dw, [1.0 - 3.0, 2.0 - 4.0]);
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn conv2d_backward_filter(
    exec: &Exec,
    g: &ConvGeometry,
    algorithm: BackwardAlgorithm,
    x: TensorView<'_, f32>,
    dy: TensorView<'_, f32>,
    dw: FilterViewMut<'_, f32>,
    workspace: &mut [f32],
) -> Result<()> {
    expect_dims(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect_dims(Operand::OutputGrad, g.output().to_array(), dy.dims().to_array())?;
    expect_dims(Operand::FilterGrad, g.filter().to_array(), dw.dims().to_array())?;
    let layout = shared_layout(
        (x.layout(), x.dims(), x.strides()),
        Operand::Input,
        (dy.layout(), dy.dims(), dy.strides()),
        Operand::OutputGrad,
    )?;
    let algorithm = filter_algorithm(g, algorithm, layout)?;
    let need = conv2d_backward_filter_workspace_len(g, algorithm, layout)?;
    check_workspace(need, workspace)?;
    let p = Problem::from_conv(g);
    let args = FilterArgs { exec, p: &p, layout, x, dy };
    match algorithm {
        #[cfg(feature = "std")]
        BackwardAlgorithm::Gemm => gemm::filter(args, dw, &mut workspace[..need]),
        #[cfg(feature = "std")]
        BackwardAlgorithm::Winograd => return winograd::filter(args, g, dw, &mut workspace[..need]),
        BackwardAlgorithm::Flipped => return Err(Error::Unsupported(Unsupported::FlippedGeometry)),
        _ => direct::filter(args, dw),
    }
    Ok(())
}

/// Bias gradient `db[o] = sum over n, y, x of dy[n, o, y, x]`; `db` is overwritten and
/// must have one element per channel of `dy`, whose innermost dimension must be
/// contiguous.
///
/// ```
/// use simdconv::{conv2d_backward_bias, Dims, Exec, Layout, TensorView};
/// let dy = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 channels of 1x3, NCHW
/// let mut db = [0.0f32; 2];
/// conv2d_backward_bias(&Exec::new(), TensorView::new(&dy, Dims::new(1, 2, 1, 3), Layout::Nchw)?,
///     &mut db)?;
/// assert_eq!(db, [6.0, 15.0]);
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn conv2d_backward_bias(exec: &Exec, dy: TensorView<'_, f32>, db: &mut [f32]) -> Result<()> {
    let d = dy.dims();
    if db.len() != d.c {
        return Err(Error::LengthMismatch { operand: Operand::BiasGrad, expected: d.c, actual: db.len() });
    }
    let layout = dy.layout().ok_or(Error::Unsupported(Unsupported::NonContiguous(Operand::OutputGrad)))?;
    exec.dispatch(simd::BiasGrad { dy, layout, db });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_rules() {
        assert_eq!(collapse(&[(3, 9), (3, 3), (3, 1)]), Some(1));
        assert_eq!(collapse(&[(3, 1), (3, 9), (3, 3)]), None);
        assert_eq!(collapse(&[(1, 100), (3, 4), (1, 7)]), Some(4));
        assert_eq!(collapse(&[(1, 5), (1, 7)]), Some(1));
        assert_eq!(collapse(&[(2, 12), (3, 4)]), Some(4));
    }

    #[test]
    fn ranges() {
        // W = 5, k = 3, pad 1, stride 2 -> OW 3; tap 0 lands at -1, 1, 3.
        let g =
            ConvGeometry::new(Dims::new(1, 1, 5, 5), 1, crate::Conv2d::new(3, 3).pad(1).stride(2)).unwrap();
        let p = Problem::from_conv(&g);
        assert_eq!(p.range(1, 0), (1, 3, 1));
        assert_eq!(p.range(1, 1), (0, 3, 0));
        assert_eq!(p.range(1, 2), (0, 2, 1));
    }
}
