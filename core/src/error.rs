//! The crate's one error type.
//!
//! Every error names what was wrong and carries the numbers that made it wrong, so that
//! `Display` alone tells a user which dimension to fix.

use core::fmt;

use crate::isa::Isa;

/// A spatial axis of a 2-D operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Axis {
    /// The vertical axis (rows, `H`).
    Height,
    /// The horizontal axis (columns, `W`).
    Width,
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Axis::Height => "height",
            Axis::Width => "width",
        })
    }
}

/// Which operand of a call an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operand {
    /// The input activations (`X`).
    Input,
    /// The output activations (`Y`).
    Output,
    /// The filters / weights (`W`).
    Filter,
    /// The per-channel bias (`b`).
    Bias,
    /// A residual tensor added in the epilogue.
    Residual,
    /// The gradient with respect to the output (`dY`).
    OutputGrad,
    /// The gradient with respect to the input (`dX`).
    InputGrad,
    /// The gradient with respect to the filters (`dW`).
    FilterGrad,
    /// The gradient with respect to the bias (`db`).
    BiasGrad,
    /// Max-pooling argmax indices ("switches").
    Indices,
    /// Caller-provided scratch memory.
    Workspace,
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operand::Input => "input",
            Operand::Output => "output",
            Operand::Filter => "filter",
            Operand::Bias => "bias",
            Operand::Residual => "residual",
            Operand::OutputGrad => "output gradient",
            Operand::InputGrad => "input gradient",
            Operand::FilterGrad => "filter gradient",
            Operand::BiasGrad => "bias gradient",
            Operand::Indices => "indices",
            Operand::Workspace => "workspace",
        })
    }
}

/// A named size of a problem, used by errors about zero sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dim {
    /// Batch size `N`.
    Batch,
    /// Channels `C` (depth `D` in the notes).
    Channels,
    /// Output channels `K` (the number of filters).
    OutChannels,
    /// Height `H`.
    Height,
    /// Width `W`.
    Width,
    /// Kernel (filter / window) height.
    KernelHeight,
    /// Kernel (filter / window) width.
    KernelWidth,
    /// Stride along the height.
    StrideHeight,
    /// Stride along the width.
    StrideWidth,
    /// Dilation along the height.
    DilationHeight,
    /// Dilation along the width.
    DilationWidth,
    /// Number of groups.
    Groups,
    /// Number of features of a fully-connected layer.
    Features,
    /// Local response normalisation window size.
    LrnSize,
    /// Number of threads.
    Threads,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dim::Batch => "batch size",
            Dim::Channels => "channels",
            Dim::OutChannels => "output channels",
            Dim::Height => "height",
            Dim::Width => "width",
            Dim::KernelHeight => "kernel height",
            Dim::KernelWidth => "kernel width",
            Dim::StrideHeight => "stride (height)",
            Dim::StrideWidth => "stride (width)",
            Dim::DilationHeight => "dilation (height)",
            Dim::DilationWidth => "dilation (width)",
            Dim::Groups => "groups",
            Dim::Features => "features",
            Dim::LrnSize => "LRN size",
            Dim::Threads => "threads",
        })
    }
}

/// Which algorithm an [`Error::Unsupported`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unsupported {
    /// The pointwise algorithm needs a 1x1 kernel, no padding and no dilation.
    PointwiseNeedsOneByOne,
    /// The depthwise algorithm needs `groups == in_channels`.
    DepthwiseNeedsGroupsEqualChannels,
    /// The algorithm needs the `std` feature (the `gemm` crate runs scalar code and
    /// allocates on every call without it).
    NeedsStd,
    /// The kernel needs the innermost dimension of the named operand to be contiguous
    /// (`w` stride 1 for NCHW, `c` stride 1 for NHWC).
    NonContiguous(Operand),
    /// Input and output (or their gradients) must use the same layout.
    MixedLayouts,
    /// More than one thread was asked for, but the `rayon` feature is off.
    ThreadsNeedRayon,
    /// The Winograd algorithm needs a 3x3 kernel with stride 1 (any dilation).
    WinogradNeeds3x3Stride1,
    /// `BackwardAlgorithm::Flipped` computes only data gradients and transposed
    /// convolutions, of stride 1, with leading padding at most `dilation * (kernel - 1)`
    /// and the gradient no smaller than the output minus the leading padding, per axis.
    FlippedGeometry,
    /// `BackwardAlgorithm::Winograd` computes only weight gradients (of 3x3 stride-1
    /// convolutions), not data gradients or transposed convolutions.
    WinogradFilterGradientOnly,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::PointwiseNeedsOneByOne => {
                f.write_str("the pointwise algorithm needs a 1x1 kernel with no padding and no dilation")
            }
            Unsupported::DepthwiseNeedsGroupsEqualChannels => {
                f.write_str("the depthwise algorithm needs groups == input channels")
            }
            Unsupported::NeedsStd => f.write_str("this algorithm needs the `std` feature"),
            Unsupported::NonContiguous(op) => write!(
                f,
                "the {op} tensor must be contiguous in its innermost dimension (w for NCHW, c for NHWC)"
            ),
            Unsupported::MixedLayouts => f.write_str("input and output tensors must use the same layout"),
            Unsupported::ThreadsNeedRayon => f.write_str("more than one thread needs the `rayon` feature"),
            Unsupported::WinogradNeeds3x3Stride1 => {
                f.write_str("the Winograd algorithm needs a 3x3 kernel with stride 1")
            }
            Unsupported::FlippedGeometry => f.write_str(
                "the flipped algorithm computes only data gradients of stride-1 convolutions with leading \
                 padding at most dilation * (kernel - 1)",
            ),
            Unsupported::WinogradFilterGradientOnly => f.write_str(
                "the backward Winograd algorithm computes only weight gradients of 3x3 stride-1 convolutions",
            ),
        }
    }
}

/// Everything that can go wrong in `simdconv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A size that must be at least 1 was 0.
    Zero {
        /// Which size.
        dim: Dim,
    },
    /// A size computation overflowed `usize`.
    Overflow {
        /// The size whose computation overflowed.
        dim: Dim,
    },
    /// The (dilated) kernel does not fit in the padded input.
    KernelLargerThanInput {
        /// The axis.
        axis: Axis,
        /// Effective kernel extent `dilation * (kernel - 1) + 1`.
        effective_kernel: usize,
        /// Input extent plus padding on both sides.
        padded_input: usize,
    },
    /// Under [`Rounding::Exact`](crate::Rounding::Exact), `(W - F + P_before + P_after) / S`
    /// is not an integer: the filter does not slide neatly across the input.
    NotExact {
        /// The axis.
        axis: Axis,
        /// Input extent `W`.
        input: usize,
        /// Effective kernel extent `F`.
        effective_kernel: usize,
        /// Total padding `P_before + P_after` (`2P` in the notes).
        padding: usize,
        /// Stride `S`.
        stride: usize,
    },
    /// A pooling pad is more than half the effective window, so a window could lie in
    /// padding only.
    PoolPaddingTooLarge {
        /// The axis.
        axis: Axis,
        /// The offending pad.
        padding: usize,
        /// Effective window extent.
        effective_kernel: usize,
    },
    /// A pooling window is dilated by more than the input extent, so a window could miss
    /// every input element.
    PoolDilationTooLarge {
        /// The axis.
        axis: Axis,
        /// Dilation.
        dilation: usize,
        /// Input extent.
        input: usize,
    },
    /// A channel count is not divisible by the number of groups.
    GroupsMismatch {
        /// [`Dim::Channels`] or [`Dim::OutChannels`].
        dim: Dim,
        /// The channel count.
        channels: usize,
        /// The number of groups.
        groups: usize,
    },
    /// A slice is shorter than its view needs.
    SliceTooShort {
        /// Which operand.
        operand: Operand,
        /// Elements needed.
        needed: usize,
        /// Elements given.
        actual: usize,
    },
    /// A slice has the wrong length where an exact length is required (bias, flat vectors).
    LengthMismatch {
        /// Which operand.
        operand: Operand,
        /// Elements expected.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// A tensor's shape does not match the shape the geometry implies.
    ShapeMismatch {
        /// Which operand.
        operand: Operand,
        /// Expected `[n, c, h, w]` (filters: `[o, i, kh, kw]`).
        expected: [usize; 4],
        /// Given.
        actual: [usize; 4],
    },
    /// A mutable view's strides make two elements share one memory location.
    OverlappingStrides {
        /// Which operand.
        operand: Operand,
    },
    /// The workspace slice is too short; ask the matching `*_workspace_len` function.
    WorkspaceTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements given.
        actual: usize,
    },
    /// The requested instruction set is not available on this CPU (or above the cap).
    IsaUnavailable {
        /// What was asked for.
        requested: Isa,
        /// The best that is available.
        available: Isa,
    },
    /// The requested algorithm cannot do this problem.
    Unsupported(Unsupported),
    /// An index (e.g. a saved max-pooling switch) points outside its plane.
    IndexOutOfRange {
        /// The index.
        index: usize,
        /// The number of valid positions.
        len: usize,
    },
    /// A parameter value is out of its domain (e.g. a negative LRN `beta` or NaN clamp).
    InvalidParameter {
        /// Which parameter.
        name: Param,
    },
}

/// A named scalar parameter, for [`Error::InvalidParameter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Param {
    /// A clamp with `min > max` or a NaN bound.
    ClampBounds,
    /// An average-pooling divisor override of 0.
    Divisor,
    /// An LRN parameter (`k`, `alpha` or `beta`) that is not finite or out of range.
    Lrn,
    /// A transposed-convolution output padding not smaller than the stride or dilation.
    OutputPadding,
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Param::ClampBounds => "clamp bounds (need min <= max, neither NaN)",
            Param::Divisor => "average-pooling divisor (must be at least 1)",
            Param::Lrn => "LRN parameters (k, alpha, beta must be finite, beta >= 0)",
            Param::OutputPadding => "output padding (must be smaller than stride or dilation)",
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Zero { dim } => write!(f, "{dim} must be at least 1, got 0"),
            Error::Overflow { dim } => write!(f, "computing the {dim} overflowed usize"),
            Error::KernelLargerThanInput { axis, effective_kernel, padded_input } => write!(
                f,
                "{axis}: effective kernel {effective_kernel} is larger than the padded input {padded_input}"
            ),
            Error::NotExact { axis, input, effective_kernel, padding, stride } => {
                // Show the notes' formula with the fractional result, e.g. 4.5. Wide
                // arithmetic: an error value may hold any numbers.
                write!(
                    f,
                    "{axis}: (W - F + P) / S + 1 = ({input} - {effective_kernel} + {padding}) / {stride} + 1"
                )?;
                let num = (input as u128 + padding as u128).saturating_sub(effective_kernel as u128);
                if let (Some(q), Some(rem)) =
                    (num.checked_div(stride as u128), num.checked_rem(stride as u128))
                {
                    // One decimal, like the notes' 4.5 (truncated).
                    let tenths = rem * 10 / stride as u128;
                    write!(
                        f,
                        " = {}.{tenths}{}",
                        q + 1,
                        if rem * 10 % stride as u128 == 0 { "" } else { "..." }
                    )?;
                }
                f.write_str(" is not an integer")
            }
            Error::PoolPaddingTooLarge { axis, padding, effective_kernel } => write!(
                f,
                "{axis}: pooling pad {padding} is more than half the effective window {effective_kernel}"
            ),
            Error::PoolDilationTooLarge { axis, dilation, input } => {
                write!(f, "{axis}: pooling dilation {dilation} is larger than the input extent {input}")
            }
            Error::GroupsMismatch { dim, channels, groups } => {
                write!(f, "{dim} {channels} is not divisible by groups {groups}")
            }
            Error::SliceTooShort { operand, needed, actual } => {
                write!(f, "{operand} slice has {actual} elements but its view needs {needed}")
            }
            Error::LengthMismatch { operand, expected, actual } => {
                write!(f, "{operand} has {actual} elements, expected {expected}")
            }
            Error::ShapeMismatch { operand, expected, actual } => {
                write!(f, "{operand} shape is {actual:?}, expected {expected:?}")
            }
            Error::OverlappingStrides { operand } => {
                write!(f, "{operand} view strides make distinct elements share memory")
            }
            Error::WorkspaceTooSmall { needed, actual } => {
                write!(f, "workspace has {actual} elements, the call needs {needed}")
            }
            Error::IsaUnavailable { requested, available } => {
                write!(f, "instruction set {requested} is not available here (best available: {available})")
            }
            Error::Unsupported(u) => write!(f, "unsupported: {u}"),
            Error::IndexOutOfRange { index, len } => {
                write!(f, "index {index} is out of range for a plane of {len} elements")
            }
            Error::InvalidParameter { name } => write!(f, "invalid {name}"),
        }
    }
}

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// `Result` with this crate's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;
