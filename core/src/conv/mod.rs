//! Forward convolution: one entry point, several algorithms.
//!
//! | algorithm | what it does | workspace | needs |
//! |---|---|---|---|
//! | [`Algorithm::Direct`] | register-blocked SIMD loops over the (dilated) window | none | any geometry; the `no_std` path |
//! | [`Algorithm::Im2colGemm`] | the notes' method: receptive fields stretched into columns (tiled), one GEMM per tile | bounded, see [`conv2d_workspace_len`] | `std` |
//! | [`Algorithm::Pointwise`] | 1x1: a GEMM reading the input in place through strides (NCHW on AVX-512 and AVX2: an own kernel over 32-pixel input panels (AVX2: three of 16) packed on the stack, 32 KiB, for AVX-512's reductions and AVX2's runs with up to 1 MiB of weights; on AVX-512, runs of 1024+ pixels also pack the weights, at most 32768, on the stack) | none | `std`, 1x1 kernel, no padding |
//! | [`Algorithm::Depthwise`] | one filter per channel (times a multiplier), memory-bound SIMD | none | `groups == in_channels` |
//! | [`Algorithm::Winograd`] | F(4x4, 3x3): 2.25 multiplications per output and channel pair instead of 9; 36 tile products per block of tiles | transformed filter + bounded tiles | `std`, 3x3, stride 1 |
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
mod nchw;
#[cfg(feature = "std")]
mod pointwise;
pub(crate) mod store;
#[cfg(feature = "std")]
pub(crate) mod winograd;

#[cfg(feature = "std")]
pub use winograd::{conv2d_winograd, conv2d_winograd_workspace_len, WinogradFilter, WinogradFilterBuf};

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
    /// Winograd F(4x4, 3x3) for 3x3 stride-1 kernels, any dilation (needs `std`). Its
    /// rounding error is larger than a direct sum's: see [`conv2d_winograd`] for the
    /// bound, and [`WinogradFilter`] to transform constant weights once.
    Winograd,
}

impl Algorithm {
    /// Every named algorithm (not `Auto`).
    pub const NAMED: [Algorithm; 5] = [
        Algorithm::Direct,
        Algorithm::Im2colGemm,
        Algorithm::Pointwise,
        Algorithm::Depthwise,
        Algorithm::Winograd,
    ];

    /// Lower-case name, as the benchmarks print it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Auto => "auto",
            Algorithm::Direct => "direct",
            Algorithm::Im2colGemm => "im2col",
            Algorithm::Pointwise => "pointwise",
            Algorithm::Depthwise => "depthwise",
            Algorithm::Winograd => "winograd",
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
            Algorithm::Winograd => {
                needs_std()?;
                let win = g.window();
                if win.kernel() != [3, 3] || win.stride() != [1, 1] {
                    return Err(Error::Unsupported(Unsupported::WinogradNeeds3x3Stride1));
                }
                // Channel counts whose transformed filter or tile buffers overflow `usize`
                // cannot run either (found by the `workspace` fuzz target).
                #[cfg(feature = "std")]
                winograd::workspace_len(g)?;
                Ok(())
            }
        }
    }
}

pub(crate) fn needs_std() -> Result<()> {
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
/// 3. With `std`, a 3x3 stride-1 kernel (any dilation) with at least 16 input and 16
///    output channels per group and at least 48 output tiles of 4x4 (over the batch and,
///    when dilated, the polyphase sub-convolutions): [`Algorithm::Winograd`]. Measured on
///    one core (per-call path, filter transform included, same runs): VGG 256x56x56 ->
///    256 (196 tiles) 20.7 ms vs im2col 34.7; 64x224x224 -> 64 40 vs 46 (NHWC 33 vs 63);
///    64x112x112 -> 64 dilation 2 9.1 vs 14.4; 32x28x28 -> 32 (49 tiles) 0.17 vs 0.20;
///    16x56x56 -> 16 0.26 vs 0.41. Below the thresholds im2col won: 8 channels (0.22 vs
///    0.11 ms), 3 input channels (43 vs 7 ms), and 512x14x14 -> 512 (16 tiles: 22 vs 9 ms)
///    where transforming 36 x 512 x 512 filter values per call costs more than it saves.
///    With the filter packed once ([`WinogradFilter`], [`conv2d_winograd`]; what
///    convbench times) Winograd wins on the small planes too: convbench, one run each,
///    NHWC: vgg_conv5_2 6.4 ms vs im2col 20.4, soumith_l5 7.2 vs 8.0; NCHW (a busier run):
///    15.9 vs 16.1 and 7.4 vs 9.5. This function cannot know whether the caller packs,
///    so it chooses for the per-call path; callers with constant weights and 3x3
///    stride-1 layers should pack.
/// 4. With `std`, everything else: [`Algorithm::Im2colGemm`]; `gemm` reaches 100-150
///    GFLOP/s on one core for the usual layer shapes, which a direct loop does not.
///    For thin-input stems (one group, at most 4 input channels, 5x5 windows and up)
///    `Im2colGemm` itself runs a direct register-blocked kernel instead of the column
///    matrix (AlexNet's conv1 and ResNet's conv1, one core, AVX-512: 1.57-1.86 ms and
///    1.79-2.6 ms against 1.65-2.37 ms and 2.3-3.1 ms before, best of noisy runs), so
///    `Auto` needs no rule of its own for them; [`Algorithm::Direct`] (the `no_std`
///    loop) was 8-20x slower on both. With NCHW tensors, rows of at least one vector
///    that whole vectors cover with at most 1/16 waste, and not on AVX2, that kernel
///    vectorises along output pixels instead of output channels, so NCHW rows are stored
///    without a transpose (ResNet's conv1 1.3-1.5x faster on AVX-512; AlexNet's 55-pixel
///    rows, 0.84x that way, and AVX2, 0.7-0.9x, keep the transposing kernel).
/// 5. Without `std` (where `gemm` runs scalar code): [`Algorithm::Direct`].
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
        #[cfg(feature = "std")]
        if winograd_pays(g) {
            return Algorithm::Winograd;
        }
        return Algorithm::Im2colGemm;
    }
    Algorithm::Direct
}

/// The algorithm to run for `g` in `layout` when the filter is constant and packed once
/// (inference: [`WinogradFilter`] / [`WinogradFilterBuf`] built at model load, then
/// [`conv2d_winograd`] per call); otherwise the same choice as [`select_algorithm`].
///
/// Packed, the filter transform is no longer paid per call, so [`Algorithm::Winograd`]
/// wins on small planes too: every 3x3 stride-1 layer (any dilation) with at least 16
/// input and 16 output channels per group and either at least 16 output tiles of 4x4 or a
/// transformed filter of at most 2^18 floats (1 MiB, it stays in L2). Measured on one
/// core, packed Winograd against im2col (medians of two convbench runs on a quiet
/// machine, minutes apart): 512x14x14 -> 512 (16 tiles) NHWC 3.9 vs 9.1 ms, NCHW 6.0 vs
/// 7.9; 384x13x13 -> 384 (16 tiles) 2.2 vs 4.0 (NHWC) and 2.3 vs 4.4 (NCHW). On a busy
/// machine, back-to-back runs: 64x8x8 -> 64 (4 tiles, 0.6 MiB filter) 0.037 vs 0.071;
/// below both thresholds the transformed filter is read from memory for very little
/// work: 512x7x7 -> 512 (4 tiles, 36 MiB) 8.7 vs 6.3 ms, so im2col stays.
///
/// ```
/// use simdconv::{select_algorithm, select_packed_algorithm, Algorithm, Conv2d, ConvGeometry,
///                Dims, Layout};
/// // VGG's conv5_2: per call, transforming 512 x 512 filters costs more than it saves.
/// let g = ConvGeometry::new(Dims::new(1, 512, 14, 14), 512, Conv2d::new(3, 3).pad(1))?;
/// assert_eq!(select_algorithm(&g, Layout::Nhwc), Algorithm::Im2colGemm);
/// assert_eq!(select_packed_algorithm(&g, Layout::Nhwc), Algorithm::Winograd);
/// # Ok::<(), simdconv::Error>(())
/// ```
#[cfg(feature = "std")]
#[must_use]
pub fn select_packed_algorithm(g: &ConvGeometry, layout: Layout) -> Algorithm {
    let auto = select_algorithm(g, layout);
    if auto != Algorithm::Im2colGemm || !channels_suit_winograd(g) {
        return auto;
    }
    let small_filter = winograd::packed_len(g).is_ok_and(|n| n <= 1 << 18);
    if winograd::tiles(g) >= 16 || small_filter {
        Algorithm::Winograd
    } else {
        auto
    }
}

/// Winograd can run `g` and both channel counts per group are at least 16.
#[cfg(feature = "std")]
fn channels_suit_winograd(g: &ConvGeometry) -> bool {
    let f = g.filter();
    let kg = f.o / g.groups();
    Algorithm::Winograd.supports(g).is_ok() && f.i >= 16 && kg >= 16
}

/// Rule 3 of [`select_algorithm`].
#[cfg(feature = "std")]
fn winograd_pays(g: &ConvGeometry) -> bool {
    channels_suit_winograd(g) && winograd::tiles(g) >= 48
}

/// f32 elements of workspace [`conv2d`] needs for `g` with `algorithm` in `layout`.
///
/// [`Algorithm::Im2colGemm`] needs one tile of the column matrix, at most 2^20 floats
/// (4 MiB) unless one filter has more than 16384 weights (then 64 columns of
/// `C / groups * KH * KW` floats), and never more than the whole column matrix; for
/// thin-input stems (one group, at most 4 input channels, 25 to 1024 weights per filter,
/// at most 512 filters) it runs a direct kernel whose workspace is the weights packed
/// for it, `(K + 63) * C * KH * KW` floats; in NCHW at least the zero-padded input of one
/// image split into `SW` column phases, `C * ((OH - 1) * SH + (KH - 1) * DH + 1) * SW *
/// (OW + (KW - 1) * DW / SW)` floats (ResNet's conv1: 158 K), if that is more.
/// [`Algorithm::Winograd`] needs the transformed filter (`36 * C_g * K` floats, output
/// channels per group rounded up to 16) plus one block of transformed tiles
/// ([`conv2d_winograd_workspace_len`]). The others need none.
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
        #[cfg(feature = "std")]
        Algorithm::Winograd => winograd::workspace_len(g),
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
        #[cfg(feature = "std")]
        Algorithm::Winograd => winograd::run(args, y, &mut workspace[..need]),
        #[cfg(not(feature = "std"))]
        Algorithm::Im2colGemm | Algorithm::Pointwise | Algorithm::Winograd => {
            Err(Error::Unsupported(Unsupported::NeedsStd))
        }
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
pub(crate) fn shared_layout(
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
