//! Layer geometry: the notes' size rules, with every computation checked.
//!
//! The output extent of a convolution or pooling window along one axis is, in the notes'
//! words, `(W - F + 2P) / S + 1`, where `W` is the input extent, `F` the filter extent,
//! `P` the zero padding and `S` the stride. This crate generalises it to per-side padding
//! (`P_before + P_after` instead of `2P`) and to dilation `d`, which spreads the filter taps
//! `d` apart so that its *effective* extent is `d * (F - 1) + 1`.
//!
//! A non-integer result is what the notes call an invalid setting (their `W = 10, F = 3,
//! P = 0, S = 2` gives 4.5). [`Rounding`] says what to do then: reject it
//! ([`Rounding::Exact`]), drop the last partial window ([`Rounding::Floor`], what PyTorch,
//! ONNX and TensorFlow's VALID do), or keep it ([`Rounding::Ceil`], pooling's `ceil_mode`).
//!
//! Validated geometries ([`ConvGeometry`], [`PoolGeometry`]) are the only way kernels learn
//! sizes: once one exists, every element count and index in the problem fits in `usize`.

use crate::error::{Axis, Dim, Error, Result};

/// Sizes of a 4-D activation tensor: batch, channels, height, width.
///
/// The same logical order is used whatever the memory layout (see
/// [`Layout`](crate::Layout)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dims {
    /// Batch size `N`.
    pub n: usize,
    /// Channels `C` (the notes' depth `D`).
    pub c: usize,
    /// Height `H`.
    pub h: usize,
    /// Width `W`.
    pub w: usize,
}

impl Dims {
    /// Dims from `n, c, h, w`.
    #[must_use]
    pub const fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Dims { n, c, h, w }
    }

    /// As an array `[n, c, h, w]`.
    #[must_use]
    pub const fn to_array(self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// The number of elements, or an overflow error.
    pub fn count(self) -> Result<usize> {
        checked_product(&[self.n, self.c, self.h, self.w], Dim::Channels)
    }

    /// Errors if any size is zero.
    pub(crate) fn check_nonzero(self) -> Result<()> {
        nonzero(self.n, Dim::Batch)?;
        nonzero(self.c, Dim::Channels)?;
        nonzero(self.h, Dim::Height)?;
        nonzero(self.w, Dim::Width)?;
        Ok(())
    }
}

/// Sizes of a filter bank: output channels, input channels per group, kernel height and
/// width (PyTorch's OIHW order, whatever the memory layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FilterDims {
    /// Output channels `K` (the number of filters).
    pub o: usize,
    /// Input channels per group (`C / groups`).
    pub i: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
}

impl FilterDims {
    /// Filter dims from `o, i, kh, kw`.
    #[must_use]
    pub const fn new(o: usize, i: usize, kh: usize, kw: usize) -> Self {
        FilterDims { o, i, kh, kw }
    }

    /// As an array `[o, i, kh, kw]`.
    #[must_use]
    pub const fn to_array(self) -> [usize; 4] {
        [self.o, self.i, self.kh, self.kw]
    }

    /// The number of weights, or an overflow error.
    pub fn count(self) -> Result<usize> {
        checked_product(&[self.o, self.i, self.kh, self.kw], Dim::OutChannels)
    }
}

/// What to do when the filter does not slide neatly across the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// The notes' rule: `(W - F + 2P) / S` must be an integer, else [`Error::NotExact`].
    Exact,
    /// Round down: the last partial window is dropped (PyTorch, ONNX, TensorFlow VALID).
    #[default]
    Floor,
    /// Round up, keeping a last partial window as long as it starts inside the input or the
    /// leading padding (PyTorch's `ceil_mode` rule). Padding past the trailing pad is
    /// treated as more padding: zeros for convolution, ignored for max pooling.
    Ceil,
}

/// Zero padding on each side of the spatial plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Padding {
    /// Rows of zeros above.
    pub top: usize,
    /// Rows of zeros below.
    pub bottom: usize,
    /// Columns of zeros on the left.
    pub left: usize,
    /// Columns of zeros on the right.
    pub right: usize,
}

impl Padding {
    /// No padding.
    pub const ZERO: Padding = Padding { top: 0, bottom: 0, left: 0, right: 0 };

    /// The same padding `p` on all four sides (the notes' `P`).
    #[must_use]
    pub const fn uniform(p: usize) -> Self {
        Padding { top: p, bottom: p, left: p, right: p }
    }

    /// `ph` above and below, `pw` left and right.
    #[must_use]
    pub const fn symmetric(ph: usize, pw: usize) -> Self {
        Padding { top: ph, bottom: ph, left: pw, right: pw }
    }

    /// Explicit per-side padding.
    #[must_use]
    pub const fn new(top: usize, bottom: usize, left: usize, right: usize) -> Self {
        Padding { top, bottom, left, right }
    }

    /// "Same" padding as TensorFlow defines it, for any stride: the output extent is
    /// `ceil(input / stride)`, the total padding is what that needs, and an odd total puts
    /// the extra row or column at the bottom / right.
    ///
    /// At stride 1 this is the notes' `P = (F - 1) / 2` for odd `F`, which keeps the spatial
    /// size (`F = 3 -> P = 1`, `F = 5 -> P = 2`).
    ///
    /// ```
    /// use simdconv::Padding;
    /// // 3x3, stride 1 on a 224x224 input: P = 1 everywhere.
    /// assert_eq!(Padding::same([224, 224], [3, 3], [1, 1], [1, 1])?, Padding::uniform(1));
    /// // ResNet's 7x7 stride-2 stem on 224: total 5, so 2 before and 3 after.
    /// assert_eq!(Padding::same([224, 224], [7, 7], [2, 2], [1, 1])?, Padding::new(2, 3, 2, 3));
    /// # Ok::<(), simdconv::Error>(())
    /// ```
    pub fn same(
        input: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Result<Padding> {
        let axis = |i: usize, ax: Axis| -> Result<(usize, usize)> {
            let (dk, ds, dd, dx) = dims_for(ax);
            nonzero(input[i], dx)?;
            nonzero(kernel[i], dk)?;
            nonzero(stride[i], ds)?;
            nonzero(dilation[i], dd)?;
            let eff = effective_extent(kernel[i], dilation[i], dk)?;
            let out = input[i].div_ceil(stride[i]);
            let needed = (out - 1)
                .checked_mul(stride[i])
                .and_then(|v| v.checked_add(eff))
                .ok_or(Error::Overflow { dim: dk })?;
            let total = needed.saturating_sub(input[i]);
            Ok((total / 2, total - total / 2))
        };
        let (top, bottom) = axis(0, Axis::Height)?;
        let (left, right) = axis(1, Axis::Width)?;
        Ok(Padding { top, bottom, left, right })
    }
}

/// One axis of a sliding window, for [`output_extent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AxisWindow {
    /// Input extent `W`.
    pub input: usize,
    /// Kernel extent `F` (taps).
    pub kernel: usize,
    /// Stride `S`.
    pub stride: usize,
    /// Dilation `d` (1 means contiguous taps).
    pub dilation: usize,
    /// Padding before the first element.
    pub pad_before: usize,
    /// Padding after the last element.
    pub pad_after: usize,
}

fn dims_for(axis: Axis) -> (Dim, Dim, Dim, Dim) {
    match axis {
        Axis::Height => (Dim::KernelHeight, Dim::StrideHeight, Dim::DilationHeight, Dim::Height),
        Axis::Width => (Dim::KernelWidth, Dim::StrideWidth, Dim::DilationWidth, Dim::Width),
    }
}

pub(crate) fn nonzero(v: usize, dim: Dim) -> Result<()> {
    if v == 0 {
        Err(Error::Zero { dim })
    } else {
        Ok(())
    }
}

pub(crate) fn checked_product(values: &[usize], dim: Dim) -> Result<usize> {
    values.iter().try_fold(1usize, |acc, &v| acc.checked_mul(v)).ok_or(Error::Overflow { dim })
}

fn effective_extent(kernel: usize, dilation: usize, dim: Dim) -> Result<usize> {
    (kernel - 1).checked_mul(dilation).and_then(|v| v.checked_add(1)).ok_or(Error::Overflow { dim })
}

/// The output extent along one axis: the notes' `(W - F + 2P) / S + 1` with per-side
/// padding, effective kernel `d * (F - 1) + 1` and the given rounding.
///
/// ```
/// use simdconv::{output_extent, AxisWindow, Axis, Rounding, Error};
/// let w = |input, kernel, stride, pad| AxisWindow {
///     input, kernel, stride, dilation: 1, pad_before: pad, pad_after: pad,
/// };
/// // The notes: 7x7 input, 3x3 filter, stride 1, no padding -> 5x5; stride 2 -> 3x3.
/// assert_eq!(output_extent(w(7, 3, 1, 0), Rounding::Exact, Axis::Width)?, 5);
/// assert_eq!(output_extent(w(7, 3, 2, 0), Rounding::Exact, Axis::Width)?, 3);
/// // W = 10, F = 3, P = 0, S = 2 gives 4.5: invalid under the notes' rule.
/// assert!(matches!(
///     output_extent(w(10, 3, 2, 0), Rounding::Exact, Axis::Width),
///     Err(Error::NotExact { input: 10, effective_kernel: 3, padding: 0, stride: 2, .. })
/// ));
/// assert_eq!(output_extent(w(10, 3, 2, 0), Rounding::Floor, Axis::Width)?, 4);
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn output_extent(win: AxisWindow, rounding: Rounding, axis: Axis) -> Result<usize> {
    let (dk, ds, dd, dx) = dims_for(axis);
    nonzero(win.input, dx)?;
    nonzero(win.kernel, dk)?;
    nonzero(win.stride, ds)?;
    nonzero(win.dilation, dd)?;
    let eff = effective_extent(win.kernel, win.dilation, dk)?;
    let padding = win.pad_before.checked_add(win.pad_after).ok_or(Error::Overflow { dim: dx })?;
    let padded = win.input.checked_add(padding).ok_or(Error::Overflow { dim: dx })?;
    if eff > padded {
        return Err(Error::KernelLargerThanInput { axis, effective_kernel: eff, padded_input: padded });
    }
    let span = padded - eff;
    let rem = span % win.stride;
    let floor = span / win.stride + 1;
    match rounding {
        Rounding::Floor => Ok(floor),
        Rounding::Exact => {
            if rem == 0 {
                Ok(floor)
            } else {
                Err(Error::NotExact {
                    axis,
                    input: win.input,
                    effective_kernel: eff,
                    padding,
                    stride: win.stride,
                })
            }
        }
        Rounding::Ceil => {
            if rem == 0 {
                return Ok(floor);
            }
            // One more window, kept only if it starts inside the input or leading padding.
            // Its start in padded coordinates; a start past usize::MAX is past the input.
            let start = floor.checked_mul(win.stride);
            match start {
                // `input + pad_before <= padded` fits; `floor + 1` fits since stride >= 2
                // here (a remainder exists), so floor <= span / 2 + 1.
                Some(start) if start < win.input + win.pad_before => Ok(floor + 1),
                _ => Ok(floor),
            }
        }
    }
}

/// Window parameters shared by convolution and pooling: kernel, stride, dilation,
/// padding and rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window2d {
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
    rounding: Rounding,
}

impl Window2d {
    /// A `kh x kw` window, stride 1, dilation 1, no padding, [`Rounding::Floor`].
    #[must_use]
    pub const fn new(kh: usize, kw: usize) -> Self {
        Window2d {
            kernel: [kh, kw],
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::ZERO,
            rounding: Rounding::Floor,
        }
    }
    /// Kernel `[kh, kw]`.
    #[must_use]
    pub const fn kernel(&self) -> [usize; 2] {
        self.kernel
    }
    /// Stride `[sh, sw]`.
    #[must_use]
    pub const fn stride(&self) -> [usize; 2] {
        self.stride
    }
    /// Dilation `[dh, dw]`.
    #[must_use]
    pub const fn dilation(&self) -> [usize; 2] {
        self.dilation
    }
    /// Padding.
    #[must_use]
    pub const fn padding(&self) -> Padding {
        self.padding
    }
    /// Rounding.
    #[must_use]
    pub const fn rounding(&self) -> Rounding {
        self.rounding
    }
    /// Effective kernel extents `[dh * (kh - 1) + 1, dw * (kw - 1) + 1]`. Saturates; exact
    /// for any window inside a validated geometry.
    #[must_use]
    pub const fn effective_kernel(&self) -> [usize; 2] {
        [
            self.kernel[0].saturating_sub(1).saturating_mul(self.dilation[0]).saturating_add(1),
            self.kernel[1].saturating_sub(1).saturating_mul(self.dilation[1]).saturating_add(1),
        ]
    }

    fn axis(&self, i: usize, input: usize) -> AxisWindow {
        let (pb, pa) = if i == 0 {
            (self.padding.top, self.padding.bottom)
        } else {
            (self.padding.left, self.padding.right)
        };
        AxisWindow {
            input,
            kernel: self.kernel[i],
            stride: self.stride[i],
            dilation: self.dilation[i],
            pad_before: pb,
            pad_after: pa,
        }
    }

    /// Output `[height, width]` for an input of `[h, w]`.
    pub fn output_hw(&self, h: usize, w: usize) -> Result<[usize; 2]> {
        Ok([
            output_extent(self.axis(0, h), self.rounding, Axis::Height)?,
            output_extent(self.axis(1, w), self.rounding, Axis::Width)?,
        ])
    }
}

macro_rules! window_builders {
    ($t:ty) => {
        impl $t {
            /// Sets the stride `S` on both axes.
            #[must_use]
            pub const fn stride(mut self, s: usize) -> Self {
                self.window.stride = [s, s];
                self
            }
            /// Sets the stride per axis.
            #[must_use]
            pub const fn stride_hw(mut self, sh: usize, sw: usize) -> Self {
                self.window.stride = [sh, sw];
                self
            }
            /// Sets the dilation on both axes (1 = no gaps between taps).
            #[must_use]
            pub const fn dilation(mut self, d: usize) -> Self {
                self.window.dilation = [d, d];
                self
            }
            /// Sets the dilation per axis.
            #[must_use]
            pub const fn dilation_hw(mut self, dh: usize, dw: usize) -> Self {
                self.window.dilation = [dh, dw];
                self
            }
            /// Sets the same padding `P` on all four sides.
            #[must_use]
            pub const fn pad(mut self, p: usize) -> Self {
                self.window.padding = Padding::uniform(p);
                self
            }
            /// Sets per-side padding.
            #[must_use]
            pub const fn padding(mut self, p: Padding) -> Self {
                self.window.padding = p;
                self
            }
            /// Sets the rounding rule.
            #[must_use]
            pub const fn rounding(mut self, r: Rounding) -> Self {
                self.window.rounding = r;
                self
            }
            /// The window parameters.
            #[must_use]
            pub const fn window(&self) -> &Window2d {
                &self.window
            }
        }
    };
}

/// Convolution hyper-parameters: kernel `F`, stride `S`, zero padding `P`, dilation,
/// groups, rounding. The number of filters `K` is part of [`ConvGeometry`].
///
/// ```
/// use simdconv::{Conv2d, Dims, ConvGeometry};
/// // AlexNet's first layer: 227x227x3, 96 filters of 11x11, stride 4 -> 55x55x96.
/// let g = ConvGeometry::new(Dims::new(1, 3, 227, 227), 96, Conv2d::new(11, 11).stride(4))?;
/// assert_eq!(g.output(), Dims::new(1, 96, 55, 55));
/// assert_eq!(g.filter().count()?, 34_848); // 96 x 11 x 11 x 3 shared weights
/// # Ok::<(), simdconv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2d {
    window: Window2d,
    groups: usize,
}

window_builders!(Conv2d);

impl Conv2d {
    /// A `kh x kw` convolution, stride 1, no padding, no dilation, one group,
    /// [`Rounding::Floor`].
    #[must_use]
    pub const fn new(kh: usize, kw: usize) -> Self {
        Conv2d { window: Window2d::new(kh, kw), groups: 1 }
    }
    /// Sets the number of groups (`groups == channels` is a depthwise convolution).
    #[must_use]
    pub const fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// The number of groups.
    #[must_use]
    pub const fn group_count(&self) -> usize {
        self.groups
    }
}

/// Pooling hyper-parameters: window `F`, stride `S`, padding, dilation, rounding.
///
/// ```
/// use simdconv::{Pool2d, Dims, PoolGeometry};
/// // The notes' pooling figure: 224x224x64, F = 2, S = 2 -> 112x112x64.
/// let g = PoolGeometry::new(Dims::new(1, 64, 224, 224), Pool2d::new(2, 2).stride(2))?;
/// assert_eq!(g.output(), Dims::new(1, 64, 112, 112));
/// # Ok::<(), simdconv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2d {
    window: Window2d,
}

window_builders!(Pool2d);

impl Pool2d {
    /// A `kh x kw` window, stride 1, no padding, [`Rounding::Floor`]. Most nets use
    /// `Pool2d::new(2, 2).stride(2)` or the overlapping `Pool2d::new(3, 3).stride(2)`.
    #[must_use]
    pub const fn new(kh: usize, kw: usize) -> Self {
        Pool2d { window: Window2d::new(kh, kw) }
    }
}

/// A validated convolution problem: input dims, filter dims, output dims and
/// hyper-parameters, all consistent and all element counts within `usize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    input: Dims,
    output: Dims,
    conv: Conv2d,
    macs: u64,
}

impl ConvGeometry {
    /// Validates a convolution of an `input`-shaped tensor with `out_channels` filters.
    ///
    /// Errors: any zero size ([`Error::Zero`]), channels not divisible by groups
    /// ([`Error::GroupsMismatch`]), a kernel larger than the padded input, a non-integer
    /// output under [`Rounding::Exact`], and any `usize` overflow.
    pub fn new(input: Dims, out_channels: usize, conv: Conv2d) -> Result<Self> {
        input.check_nonzero()?;
        nonzero(out_channels, Dim::OutChannels)?;
        let g = conv.groups;
        nonzero(g, Dim::Groups)?;
        if !input.c.is_multiple_of(g) {
            return Err(Error::GroupsMismatch { dim: Dim::Channels, channels: input.c, groups: g });
        }
        if !out_channels.is_multiple_of(g) {
            return Err(Error::GroupsMismatch { dim: Dim::OutChannels, channels: out_channels, groups: g });
        }
        let [oh, ow] = conv.window.output_hw(input.h, input.w)?;
        let output = Dims::new(input.n, out_channels, oh, ow);
        input.count()?;
        output.count()?;
        let filter = FilterDims::new(out_channels, input.c / g, conv.window.kernel[0], conv.window.kernel[1]);
        filter.count()?;
        let macs = [output.n, output.c, oh, ow, filter.i, filter.kh, filter.kw]
            .iter()
            .try_fold(1u64, |acc, &v| acc.checked_mul(v as u64))
            .ok_or(Error::Overflow { dim: Dim::OutChannels })?;
        Ok(ConvGeometry { input, output, conv, macs })
    }

    /// Input dims `[n, c, h, w]`.
    #[must_use]
    pub const fn input(&self) -> Dims {
        self.input
    }
    /// Output dims `[n, k, oh, ow]`.
    #[must_use]
    pub const fn output(&self) -> Dims {
        self.output
    }
    /// Filter dims `[k, c / groups, kh, kw]`.
    #[must_use]
    pub const fn filter(&self) -> FilterDims {
        FilterDims {
            o: self.output.c,
            i: self.input.c / self.conv.groups,
            kh: self.conv.window.kernel[0],
            kw: self.conv.window.kernel[1],
        }
    }
    /// The hyper-parameters.
    #[must_use]
    pub const fn conv(&self) -> &Conv2d {
        &self.conv
    }
    /// The window parameters.
    #[must_use]
    pub const fn window(&self) -> &Window2d {
        &self.conv.window
    }
    /// Number of groups.
    #[must_use]
    pub const fn groups(&self) -> usize {
        self.conv.groups
    }
    /// Multiply-accumulates of the forward pass: `N * K * OH * OW * (C / groups) * KH * KW`.
    #[must_use]
    pub const fn macs(&self) -> u64 {
        self.macs
    }
    /// Floating-point operations of the forward pass (`2 * macs`, saturating).
    #[must_use]
    pub const fn flops(&self) -> u64 {
        self.macs.saturating_mul(2)
    }
    /// True for a 1x1 kernel with no padding and no dilation (any stride).
    #[must_use]
    pub const fn is_pointwise(&self) -> bool {
        let w = &self.conv.window;
        w.kernel[0] == 1
            && w.kernel[1] == 1
            && w.padding.top == 0
            && w.padding.bottom == 0
            && w.padding.left == 0
            && w.padding.right == 0
    }
    /// True when every group has exactly one input channel (depthwise convolution).
    #[must_use]
    pub const fn is_depthwise(&self) -> bool {
        self.conv.groups == self.input.c
    }
}

/// A validated pooling problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolGeometry {
    input: Dims,
    output: Dims,
    pool: Pool2d,
}

impl PoolGeometry {
    /// Validates pooling over an `input`-shaped tensor.
    ///
    /// Besides the convolution rules, each pad must be at most half the effective window
    /// and, for a window of more than one tap, the dilation at most the input extent: together
    /// they guarantee that every window sees at least one input element, so that no output
    /// is made of padding alone.
    pub fn new(input: Dims, pool: Pool2d) -> Result<Self> {
        input.check_nonzero()?;
        let [oh, ow] = pool.window.output_hw(input.h, input.w)?;
        let eff = pool.window.effective_kernel();
        let p = pool.window.padding;
        for (axis, i, pads, extent) in
            [(Axis::Height, 0, [p.top, p.bottom], input.h), (Axis::Width, 1, [p.left, p.right], input.w)]
        {
            for pad in pads {
                if pad > eff[i] / 2 {
                    return Err(Error::PoolPaddingTooLarge { axis, padding: pad, effective_kernel: eff[i] });
                }
            }
            let d = pool.window.dilation[i];
            if pool.window.kernel[i] > 1 && d > extent {
                return Err(Error::PoolDilationTooLarge { axis, dilation: d, input: extent });
            }
        }
        let output = Dims::new(input.n, input.c, oh, ow);
        input.count()?;
        output.count()?;
        Ok(PoolGeometry { input, output, pool })
    }

    /// Input dims.
    #[must_use]
    pub const fn input(&self) -> Dims {
        self.input
    }
    /// Output dims (same `n` and `c`).
    #[must_use]
    pub const fn output(&self) -> Dims {
        self.output
    }
    /// The hyper-parameters.
    #[must_use]
    pub const fn pool(&self) -> &Pool2d {
        &self.pool
    }
    /// The window parameters.
    #[must_use]
    pub const fn window(&self) -> &Window2d {
        &self.pool.window
    }
}

/// The input coordinate of tap `k` of output position `out` along one axis, or `None` when
/// the tap falls in the padding: `out * stride + k * dilation - pad_before`, computed so
/// that it never overflows (a saturated position is past any input).
#[inline(always)]
#[must_use]
pub fn input_coord(
    out: usize,
    stride: usize,
    k: usize,
    dilation: usize,
    pad_before: usize,
    input: usize,
) -> Option<usize> {
    let p = out.saturating_mul(stride).saturating_add(k.saturating_mul(dilation));
    if p < pad_before {
        return None;
    }
    let i = p - pad_before;
    if i < input {
        Some(i)
    } else {
        None
    }
}

/// A validated fully-connected layer: `batch` rows of `inputs` features to `outputs`
/// features. Weights are `[outputs][inputs]` (row-major, PyTorch's `Linear`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FcGeometry {
    batch: usize,
    inputs: usize,
    outputs: usize,
}

impl FcGeometry {
    /// Validates the sizes (all non-zero, all products within `usize`).
    pub fn new(batch: usize, inputs: usize, outputs: usize) -> Result<Self> {
        nonzero(batch, Dim::Batch)?;
        nonzero(inputs, Dim::Features)?;
        nonzero(outputs, Dim::Features)?;
        checked_product(&[batch, inputs], Dim::Features)?;
        checked_product(&[batch, outputs], Dim::Features)?;
        checked_product(&[inputs, outputs], Dim::Features)?;
        Ok(FcGeometry { batch, inputs, outputs })
    }
    /// Batch size.
    #[must_use]
    pub const fn batch(&self) -> usize {
        self.batch
    }
    /// Input features per row.
    #[must_use]
    pub const fn inputs(&self) -> usize {
        self.inputs
    }
    /// Output features per row.
    #[must_use]
    pub const fn outputs(&self) -> usize {
        self.outputs
    }
}

/// Local response normalisation across channels, as in AlexNet:
/// `b_c = a_c / (k + alpha * sum_{j in window(c)} a_j^2)^beta`, where the window holds
/// `size` channels centred on `c` (`size / 2` before, `(size - 1) / 2` after), clipped to
/// the tensor. Note that PyTorch's `LocalResponseNorm` divides `alpha` by `size`; pass
/// `alpha / size` here to match it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lrn {
    /// Channels in the window (AlexNet: 5).
    pub size: usize,
    /// Additive constant (AlexNet: 2).
    pub k: f32,
    /// Scale (AlexNet: 1e-4).
    pub alpha: f32,
    /// Exponent (AlexNet: 0.75).
    pub beta: f32,
}

impl Lrn {
    /// AlexNet's parameters: `size = 5, k = 2, alpha = 1e-4, beta = 0.75`.
    pub const ALEXNET: Lrn = Lrn { size: 5, k: 2.0, alpha: 1e-4, beta: 0.75 };

    /// Checks the parameters: `size >= 1`, all finite, `beta >= 0`, `k > 0`.
    pub fn validate(&self) -> Result<()> {
        nonzero(self.size, Dim::LrnSize)?;
        let finite = self.k.is_finite() && self.alpha.is_finite() && self.beta.is_finite();
        if !finite || self.beta < 0.0 || self.k <= 0.0 || self.alpha < 0.0 {
            return Err(Error::InvalidParameter { name: crate::error::Param::Lrn });
        }
        Ok(())
    }

    /// The channel window `[lo, hi)` of channel `c` among `channels`.
    #[must_use]
    pub fn window(&self, c: usize, channels: usize) -> (usize, usize) {
        let lo = c.saturating_sub(self.size / 2);
        let hi = c.saturating_add((self.size - 1) / 2).saturating_add(1).min(channels);
        (lo, hi)
    }
}
