//! Forward convolution: one entry point, several algorithms.
//!
//! | algorithm | what it does | workspace | needs |
//! |---|---|---|---|
//! | [`Algorithm::Direct`] | register-blocked SIMD loops over the (dilated) window | none | any geometry; the `no_std` path |
//! | [`Algorithm::Im2colGemm`] | the notes' method: receptive fields stretched into columns (tiled), one GEMM per tile | bounded, see [`conv2d_workspace_len`] | `std` |
//! | [`Algorithm::Pointwise`] | 1x1: a GEMM reading the input in place through strides | none | `std`, 1x1 kernel, no padding |
//! | [`Algorithm::Depthwise`] | one filter per channel (times a multiplier), memory-bound SIMD | none | `groups == in_channels` |
//!
//! [`Algorithm::Auto`] picks per shape (see [`select_algorithm`]). Asking by name for an
//! algorithm that cannot do a geometry is an error, never a silent fallback.

mod depthwise;
mod direct;
#[cfg(feature = "std")]
mod im2col;
#[cfg(feature = "std")]
mod matmul;
#[cfg(feature = "std")]
mod pointwise;
pub(crate) mod store;

use crate::error::{Error, Operand, Result, Unsupported};
use crate::geometry::ConvGeometry;
use crate::isa::Exec;
use crate::params::Epilogue;
use crate::tensor::{expect_dims, FilterView, Layout, TensorView, TensorViewMut};

/// A forward-convolution algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Pick per shape with [`select_algorithm`].
    #[default]
    Auto,
    /// Direct SIMD convolution; no workspace, works without `std`.
    Direct,
    /// im2col into a bounded workspace, then GEMM (needs `std`).
    Im2colGemm,
    /// 1x1 convolution as a GEMM over the input in place (needs `std`).
    Pointwise,
    /// Depthwise convolution (`groups == in_channels`).
    Depthwise,
}

impl Algorithm {
    /// Every named algorithm (not `Auto`).
    pub const NAMED: [Algorithm; 4] =
        [Algorithm::Direct, Algorithm::Im2colGemm, Algorithm::Pointwise, Algorithm::Depthwise];

    /// Lower-case name, as the benchmarks print it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Auto => "auto",
            Algorithm::Direct => "direct",
            Algorithm::Im2colGemm => "im2col",
            Algorithm::Pointwise => "pointwise",
            Algorithm::Depthwise => "depthwise",
        }
    }

    /// Parses [`Algorithm::name`].
    #[must_use]
    pub fn from_name(s: &str) -> Option<Algorithm> {
        [Algorithm::Auto].into_iter().chain(Algorithm::NAMED).find(|a| a.name().eq_ignore_ascii_case(s))
    }

    /// Whether this algorithm can run `g` (in this build); `Auto` always can.
    pub fn supports(self, g: &ConvGeometry) -> Result<()> {
        match self {
            Algorithm::Auto | Algorithm::Direct => Ok(()),
            Algorithm::Im2colGemm => needs_std(),
            Algorithm::Pointwise => {
                needs_std()?;
                if g.is_pointwise() {
                    Ok(())
                } else {
                    Err(Error::Unsupported(Unsupported::PointwiseNeedsOneByOne))
                }
            }
            Algorithm::Depthwise => {
                if g.is_depthwise() {
                    Ok(())
                } else {
                    Err(Error::Unsupported(Unsupported::DepthwiseNeedsGroupsEqualChannels))
                }
            }
        }
    }
}

fn needs_std() -> Result<()> {
    if cfg!(feature = "std") {
        Ok(())
    } else {
        Err(Error::Unsupported(Unsupported::NeedsStd))
    }
}

/// Options of a forward convolution.
#[derive(Clone, Copy, Debug, Default)]
pub struct Conv2dOptions<'a> {
    /// The algorithm (default `Auto`).
    pub algorithm: Algorithm,
    /// What to fuse at the store (default: nothing).
    pub epilogue: Epilogue<'a>,
}

/// The algorithm [`Algorithm::Auto`] runs for `g` in `layout`.
///
/// The heuristic, first match wins:
/// 1. `groups == in_channels > 1` (depthwise): [`Algorithm::Depthwise`]. One input channel
///    per group makes every GEMM a dot product of `KH * KW` terms; a memory-bound SIMD
///    loop is the only fast way.
/// 2. With `std`, a 1x1 kernel without padding (any stride): [`Algorithm::Pointwise`]. It
///    is the same GEMM as im2col without writing the column matrix (which would be a copy
///    of the input), and needs no workspace. With stride 2 it runs one GEMM per output
///    row; measured on ResNet's 256x56x56 -> 512 1x1/s2 downsample (one core), im2col's
///    single GEMM over the subsampled copy was within about 10% of it either way between
///    runs, so the workspace-free path stays the choice.
/// 3. With `std`, everything else: [`Algorithm::Im2colGemm`]; `gemm` reaches 100-150
///    GFLOP/s on one core for the usual layer shapes, which a direct loop does not.
///    For thin-input stems (one group, at most 4 input channels, 5x5 windows and up)
///    `Im2colGemm` itself runs a direct register-blocked kernel instead of the column
///    matrix (AlexNet's conv1 and ResNet's conv1, one core, AVX-512: 1.57-1.86 ms and
///    1.79-2.6 ms against 1.65-2.37 ms and 2.3-3.1 ms before, best of noisy runs), so
///    `Auto` needs no rule of its own for them; [`Algorithm::Direct`] (the `no_std`
///    loop) was 8-20x slower on both.
/// 4. Without `std` (where `gemm` runs scalar code): [`Algorithm::Direct`].
///
/// The layout does not change the choice: both GEMM paths read either layout through
/// strides at about the same speed.
#[must_use]
pub fn select_algorithm(g: &ConvGeometry, layout: Layout) -> Algorithm {
    let _ = layout;
    if g.is_depthwise() && g.groups() > 1 {
        return Algorithm::Depthwise;
    }
    if cfg!(feature = "std") {
        if g.is_pointwise() {
            return Algorithm::Pointwise;
        }
        return Algorithm::Im2colGemm;
    }
    Algorithm::Direct
}

/// f32 elements of workspace [`conv2d`] needs for `g` with `algorithm` in `layout`.
///
/// Only [`Algorithm::Im2colGemm`] needs any: one tile of the column matrix, at most
/// 2^20 floats (4 MiB) unless one filter has more than 16384 weights (then 64 columns
/// of `C / groups * KH * KW` floats), and never more than the whole column matrix.
///
/// ```
/// use simdconv::{conv2d_workspace_len, Algorithm, Conv2d, ConvGeometry, Dims, Layout};
/// // VGG's conv1_2: the full column matrix would be 576 x 50176 floats (115 MB).
/// let g = ConvGeometry::new(Dims::new(1, 64, 224, 224), 64, Conv2d::new(3, 3).pad(1))?;
/// let len = conv2d_workspace_len(&g, Algorithm::Im2colGemm, Layout::Nchw)?;
/// assert!(len * 4 <= 4 << 20);
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn conv2d_workspace_len(g: &ConvGeometry, algorithm: Algorithm, layout: Layout) -> Result<usize> {
    let algorithm = resolve(g, algorithm, layout)?;
    match algorithm {
        #[cfg(feature = "std")]
        Algorithm::Im2colGemm => im2col::workspace_len(g, layout),
        _ => Ok(0),
    }
}

fn resolve(g: &ConvGeometry, algorithm: Algorithm, layout: Layout) -> Result<Algorithm> {
    algorithm.supports(g)?;
    Ok(match algorithm {
        Algorithm::Auto => select_algorithm(g, layout),
        a => a,
    })
}

/// Forward convolution `y = activation(conv(x, w) + bias + residual)`.
///
/// `x` and `y` must share a layout whose innermost dimension is contiguous (`w` for NCHW,
/// `c` for NHWC); other strides are free (e.g. `y` may be a channel slice of a larger
/// buffer). `workspace` needs [`conv2d_workspace_len`] elements.
pub fn conv2d(
    exec: &Exec,
    g: &ConvGeometry,
    opts: &Conv2dOptions<'_>,
    x: TensorView<'_, f32>,
    w: FilterView<'_, f32>,
    y: TensorViewMut<'_, f32>,
    workspace: &mut [f32],
) -> Result<()> {
    expect_dims(Operand::Input, g.input().to_array(), x.dims().to_array())?;
    expect_dims(Operand::Filter, g.filter().to_array(), w.dims().to_array())?;
    expect_dims(Operand::Output, g.output().to_array(), y.dims().to_array())?;
    opts.epilogue.validate(g.output())?;
    let layout = shared_layout(&x, &y, &opts.epilogue)?;
    let algorithm = resolve(g, opts.algorithm, layout)?;
    let need = conv2d_workspace_len(g, algorithm, layout)?;
    if workspace.len() < need {
        return Err(Error::WorkspaceTooSmall { needed: need, actual: workspace.len() });
    }
    let args = ConvArgs { exec, g, layout, x, w, epilogue: &opts.epilogue };
    match algorithm {
        Algorithm::Direct | Algorithm::Auto => direct::run(args, y),
        #[cfg(feature = "std")]
        Algorithm::Im2colGemm => im2col::run(args, y, &mut workspace[..need]),
        #[cfg(feature = "std")]
        Algorithm::Pointwise => pointwise::run(args, y),
        #[cfg(not(feature = "std"))]
        Algorithm::Im2colGemm | Algorithm::Pointwise => Err(Error::Unsupported(Unsupported::NeedsStd)),
        Algorithm::Depthwise => depthwise::run(args, y),
    }
}

/// [`conv2d`] with a workspace it allocates itself (feature `alloc`): for one-off calls;
/// a loop over many calls should keep one workspace of [`conv2d_workspace_len`] elements.
///
/// ```
/// use simdconv::{conv2d_alloc, Conv2d, Conv2dOptions, ConvGeometry, Dims, Exec, FilterLayout,
///                FilterView, Layout, TensorView, TensorViewMut};
/// let g = ConvGeometry::new(Dims::new(1, 3, 8, 8), 4, Conv2d::new(3, 3).pad(1))?;
/// let x = vec![1.0f32; g.input().count()?];
/// let w = vec![0.5f32; g.filter().count()?];
/// let mut y = vec![0.0f32; g.output().count()?];
/// conv2d_alloc(&Exec::new(), &g, &Conv2dOptions::default(),
///     TensorView::new(&x, g.input(), Layout::Nchw)?,
///     FilterView::new(&w, g.filter(), FilterLayout::Oihw)?,
///     TensorViewMut::new(&mut y, g.output(), Layout::Nchw)?)?;
/// assert_eq!(y[8 + 1], 13.5); // an interior output: 27 taps of 0.5
/// # Ok::<(), simdconv::Error>(())
/// ```
#[cfg(feature = "alloc")]
pub fn conv2d_alloc(
    exec: &Exec,
    g: &ConvGeometry,
    opts: &Conv2dOptions<'_>,
    x: TensorView<'_, f32>,
    w: FilterView<'_, f32>,
    y: TensorViewMut<'_, f32>,
) -> Result<()> {
    let layout = shared_layout(&x, &y, &opts.epilogue)?;
    let need = conv2d_workspace_len(g, opts.algorithm, layout)?;
    let mut workspace = alloc::vec![0.0f32; need];
    conv2d(exec, g, opts, x, w, y, &mut workspace)
}

/// The layout input, output and residual share (see `tensor::shared_layout`).
fn shared_layout(
    x: &TensorView<'_, f32>,
    y: &TensorViewMut<'_, f32>,
    epilogue: &Epilogue<'_>,
) -> Result<Layout> {
    let probes = [
        (Operand::Input, x.dims(), x.strides()),
        (Operand::Output, y.dims(), y.strides()),
        epilogue
            .residual
            .map_or((Operand::Output, y.dims(), y.strides()), |r| (Operand::Residual, r.dims(), r.strides())),
    ];
    crate::tensor::shared_layout(&probes)
}

/// Everything an algorithm needs, already validated: dims match the geometry, the
/// epilogue matches the output, `layout` is the shared inner-contiguous layout of `x` and
/// `y`, and the workspace is long enough.
#[derive(Clone, Copy)]
pub(crate) struct ConvArgs<'a, 'b> {
    pub exec: &'b Exec,
    pub g: &'b ConvGeometry,
    pub layout: Layout,
    pub x: TensorView<'a, f32>,
    pub w: FilterView<'a, f32>,
    pub epilogue: &'b Epilogue<'a>,
}
