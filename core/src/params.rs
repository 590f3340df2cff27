//! Options shared by kernels and the reference: the fused epilogue and pooling modes.

use core::num::NonZeroUsize;

use crate::error::{Error, Operand, Param, Result};
use crate::tensor::TensorView;

/// An element-wise activation applied at the store.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Activation {
    /// No activation.
    #[default]
    Identity,
    /// `max(0, x)`, the notes' ReLU.
    Relu,
    /// `min(max(x, min), max)`; `Clamp { min: 0.0, max: 6.0 }` is ReLU6.
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
}

impl Activation {
    /// Checks the clamp bounds (`min <= max`, neither NaN).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Activation::Clamp { min, max } if min.is_nan() || max.is_nan() || min > max => {
                Err(Error::InvalidParameter { name: Param::ClampBounds })
            }
            _ => Ok(()),
        }
    }

    /// Applies the activation to one value. NaN stays NaN.
    #[inline(always)]
    #[must_use]
    pub fn apply(&self, v: f32) -> f32 {
        match *self {
            Activation::Identity => v,
            Activation::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Activation::Clamp { min, max } => {
                if v < min {
                    min
                } else if v > max {
                    max
                } else {
                    v
                }
            }
        }
    }
}

/// What a convolution does at its store, fused instead of run as separate passes:
/// `y = activation(conv(x) + bias[k] + residual)`.
///
/// ```
/// use simdconv::{Epilogue, Activation};
/// let bias = [0.5f32; 16];
/// let e = Epilogue::new().bias(&bias).activation(Activation::Relu);
/// assert!(e.bias.is_some());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Per-output-channel bias (length = output channels).
    pub bias: Option<&'a [f32]>,
    /// A tensor of the output's shape added before the activation (ResNet's shortcut).
    pub residual: Option<TensorView<'a, f32>>,
    /// The activation, applied last.
    pub activation: Activation,
}

impl<'a> Epilogue<'a> {
    /// Nothing fused.
    #[must_use]
    pub const fn new() -> Self {
        Epilogue { bias: None, residual: None, activation: Activation::Identity }
    }
    /// Adds a per-channel bias.
    #[must_use]
    pub const fn bias(mut self, bias: &'a [f32]) -> Self {
        self.bias = Some(bias);
        self
    }
    /// Adds a residual tensor.
    #[must_use]
    pub const fn residual(mut self, residual: TensorView<'a, f32>) -> Self {
        self.residual = Some(residual);
        self
    }
    /// Sets the activation.
    #[must_use]
    pub const fn activation(mut self, a: Activation) -> Self {
        self.activation = a;
        self
    }
    /// True when the epilogue does nothing.
    #[must_use]
    pub fn is_identity(&self) -> bool {
        self.bias.is_none() && self.residual.is_none() && self.activation == Activation::Identity
    }

    /// Checks the epilogue against an output of `dims` (`[n, k, oh, ow]`).
    pub fn validate(&self, dims: crate::Dims) -> Result<()> {
        self.activation.validate()?;
        if let Some(b) = self.bias {
            if b.len() != dims.c {
                return Err(Error::LengthMismatch {
                    operand: Operand::Bias,
                    expected: dims.c,
                    actual: b.len(),
                });
            }
        }
        if let Some(r) = &self.residual {
            if r.dims() != dims {
                return Err(Error::ShapeMismatch {
                    operand: Operand::Residual,
                    expected: dims.to_array(),
                    actual: r.dims().to_array(),
                });
            }
        }
        Ok(())
    }
}

/// How average pooling divides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AvgPoolOptions {
    /// Count padded positions in the divisor (PyTorch's `count_include_pad`, default
    /// true there). Taps past the trailing padding (ceil-mode windows) never count.
    pub count_include_pad: bool,
    /// Divide by this instead (PyTorch's `divisor_override`).
    pub divisor: Option<NonZeroUsize>,
}

impl AvgPoolOptions {
    /// PyTorch's defaults: padding counted, no override.
    pub const PYTORCH: AvgPoolOptions = AvgPoolOptions { count_include_pad: true, divisor: None };
    /// Padding excluded (TensorFlow's SAME average pooling).
    pub const EXCLUDE_PAD: AvgPoolOptions = AvgPoolOptions { count_include_pad: false, divisor: None };
}
