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
mod im2col;
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
pub fn conv2d_workspace_len(g: &ConvGeometry, algorithm: Algorithm, layout: Layout) -> Result<usize> {
    let algorithm = resolve(g, algorithm, layout)?;
    match algorithm {
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
    let layout = x.layout().ok_or(Error::Unsupported(Unsupported::NonContiguous(Operand::Input)))?;
    // A degenerate view (one channel, or width 1) is inner-contiguous in both layouts, and
    // `layout()` names only one of them: take the other layout when every operand fits it.
    let fits = |d: crate::Dims, s: [usize; 4], l: Layout| match l {
        Layout::Nchw => s[3] == 1 || d.w == 1,
        Layout::Nhwc => s[1] == 1 || d.c == 1,
    };
    let all_fit = |l: Layout| {
        fits(x.dims(), x.strides(), l)
            && fits(y.dims(), y.strides(), l)
            && opts.epilogue.residual.as_ref().is_none_or(|r| fits(r.dims(), r.strides(), l))
    };
    let other = match layout {
        Layout::Nchw => Layout::Nhwc,
        Layout::Nhwc => Layout::Nchw,
    };
    for l in [layout, other] {
        if all_fit(l) {
            let args = ConvArgs { exec, g, layout: l, x, w, epilogue: &opts.epilogue };
            return run(args, opts.algorithm, y, workspace);
        }
    }
    // No layout fits every operand: report which one is off.
    if y.layout() != Some(layout) {
        return Err(Error::Unsupported(if y.layout().is_none() {
            Unsupported::NonContiguous(Operand::Output)
        } else {
            Unsupported::MixedLayouts
        }));
    }
    if let Some(r) = &opts.epilogue.residual {
        if r.layout() != Some(layout) {
            return Err(Error::Unsupported(Unsupported::NonContiguous(Operand::Residual)));
        }
    }
    let args = ConvArgs { exec, g, layout, x, w, epilogue: &opts.epilogue };
    run(args, opts.algorithm, y, workspace)
}

fn run(
    args: ConvArgs<'_, '_>,
    algorithm: Algorithm,
    y: TensorViewMut<'_, f32>,
    workspace: &mut [f32],
) -> Result<()> {
    let (g, layout) = (args.g, args.layout);
    let algorithm = resolve(g, algorithm, layout)?;
    let need = conv2d_workspace_len(g, algorithm, layout)?;
    if workspace.len() < need {
        return Err(Error::WorkspaceTooSmall { needed: need, actual: workspace.len() });
    }
    match algorithm {
        Algorithm::Direct | Algorithm::Auto => direct::run(args, y),
        Algorithm::Im2colGemm => im2col::run(args, y, &mut workspace[..need]),
        Algorithm::Pointwise => pointwise::run(args, y),
        Algorithm::Depthwise => depthwise::run(args, y),
    }
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
