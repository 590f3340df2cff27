//! Transposed convolution ("deconvolution", "fractionally strided convolution").
//!
//! `y[n, c, oy, ox] = bias[c] + sum w[k, c', ky, kx] * x[n, k, iy, ix]` over every input
//! `(iy, ix)` and tap with `oy = iy * sh + ky * dh - pad_top` (same for columns) inside the
//! output, where `k` runs over the input channels of `c`'s group and `c'` is `c`'s index in
//! its group. This is the data gradient of the forward convolution that maps `y`'s shape
//! back to `x`'s, and runs on the same kernel.

use crate::error::{Axis, Dim, Error, Operand, Param, Result};
use crate::geometry::{nonzero, Conv2d, ConvGeometry, Dims, FilterDims};
use crate::isa::Exec;
use crate::tensor::{expect_dims, FilterView, Layout, TensorView, TensorViewMut};

use super::{data_workspace_len, run_data, shared_layout, simd, BackwardAlgorithm, DataArgs, Problem};

/// A validated transposed convolution: input dims, output channels, the [`Conv2d`]
/// parameters of the forward convolution it transposes (kernel, stride, per-side padding,
/// dilation, groups; the rounding is ignored) and the output padding.
///
/// Along each axis the output extent is
/// `(in - 1) * stride - pad_before - pad_after + dilation * (kernel - 1) + 1 + output_padding`
/// (PyTorch's `ConvTranspose2d` rule), and `output_padding` must be smaller than the
/// stride or the dilation. The filters are `[in_channels, out_channels / groups, kh, kw]`
/// (PyTorch's `ConvTranspose2d.weight`, read as [`FilterDims`] `o, i, kh, kw`).
///
/// ```
/// use simdconv::{Conv2d, ConvTransposeGeometry, Dims, FilterDims};
/// // DCGAN's generator: 4x4 kernel, stride 2, padding 1 doubles the plane.
/// let tg = ConvTransposeGeometry::new(Dims::new(1, 512, 4, 4), 256,
///     Conv2d::new(4, 4).stride(2).pad(1), [0, 0])?;
/// assert_eq!(tg.output(), Dims::new(1, 256, 8, 8));
/// assert_eq!(tg.filter(), FilterDims::new(512, 256, 4, 4));
/// // Output padding picks among the sizes a stride-2 forward maps to the same input.
/// let tg = ConvTransposeGeometry::new(Dims::new(1, 8, 5, 5), 8,
///     Conv2d::new(3, 3).stride(2).pad(1), [1, 0])?;
/// assert_eq!((tg.output().h, tg.output().w), (10, 9));
/// # Ok::<(), simdconv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTransposeGeometry {
    input: Dims,
    output: Dims,
    conv: Conv2d,
    output_padding: [usize; 2],
    macs: u64,
}

impl ConvTransposeGeometry {
    /// Validates a transposed convolution of an `input`-shaped tensor to `out_channels`
    /// channels. `output_padding` is `[height, width]`.
    ///
    /// Errors: any zero size, channels not divisible by groups, an output padding not
    /// smaller than the stride or the dilation
    /// (`InvalidParameter { name: Param::OutputPadding }`), padding that leaves no output
    /// (`Zero { dim: Height / Width }`), and any `usize` overflow.
    pub fn new(input: Dims, out_channels: usize, conv: Conv2d, output_padding: [usize; 2]) -> Result<Self> {
        input.check_nonzero()?;
        nonzero(out_channels, Dim::OutChannels)?;
        let g = conv.group_count();
        nonzero(g, Dim::Groups)?;
        if !input.c.is_multiple_of(g) {
            return Err(Error::GroupsMismatch { dim: Dim::Channels, channels: input.c, groups: g });
        }
        if !out_channels.is_multiple_of(g) {
            return Err(Error::GroupsMismatch { dim: Dim::OutChannels, channels: out_channels, groups: g });
        }
        let win = conv.window();
        let p = win.padding();
        let oh = extent(
            Axis::Height,
            input.h,
            win.kernel()[0],
            win.stride()[0],
            win.dilation()[0],
            [p.top, p.bottom],
            output_padding[0],
        )?;
        let ow = extent(
            Axis::Width,
            input.w,
            win.kernel()[1],
            win.stride()[1],
            win.dilation()[1],
            [p.left, p.right],
            output_padding[1],
        )?;
        let output = Dims::new(input.n, out_channels, oh, ow);
        input.count()?;
        output.count()?;
        let filter = FilterDims::new(input.c, out_channels / g, win.kernel()[0], win.kernel()[1]);
        filter.count()?;
        let macs = [input.n, input.c, input.h, input.w, filter.i, filter.kh, filter.kw]
            .iter()
            .try_fold(1u64, |acc, &v| acc.checked_mul(v as u64))
            .ok_or(Error::Overflow { dim: Dim::OutChannels })?;
        Ok(ConvTransposeGeometry { input, output, conv, output_padding, macs })
    }

    /// Input dims `[n, c, h, w]`.
    #[must_use]
    pub const fn input(&self) -> Dims {
        self.input
    }
    /// Output dims `[n, out_channels, oh, ow]`.
    #[must_use]
    pub const fn output(&self) -> Dims {
        self.output
    }
    /// Filter dims `[in_channels, out_channels / groups, kh, kw]`.
    #[must_use]
    pub const fn filter(&self) -> FilterDims {
        let k = self.conv.window().kernel();
        FilterDims::new(self.input.c, self.output.c / self.conv.group_count(), k[0], k[1])
    }
    /// The forward convolution parameters.
    #[must_use]
    pub const fn conv(&self) -> &Conv2d {
        &self.conv
    }
    /// Output padding `[height, width]`.
    #[must_use]
    pub const fn output_padding(&self) -> [usize; 2] {
        self.output_padding
    }
    /// Number of groups.
    #[must_use]
    pub const fn groups(&self) -> usize {
        self.conv.group_count()
    }
    /// Multiply-accumulates (taps falling outside the output included):
    /// `N * C_in * H * W * (C_out / groups) * KH * KW`.
    #[must_use]
    pub const fn macs(&self) -> u64 {
        self.macs
    }

    /// The forward convolution this transposes, when one exists with the same padding
    /// minus the output padding on the trailing side: its input is this output, its output
    /// this input, and `conv2d_backward_data` of it equals this transposed convolution.
    /// `None` when the output padding exceeds the trailing padding by a stride or more
    /// (then the last output rows or columns are reached by no tap and hold only the
    /// bias).
    #[must_use]
    pub fn forward(&self) -> Option<ConvGeometry> {
        let win = self.conv.window();
        let p = win.padding();
        let [oph, opw] = self.output_padding;
        let [sh, sw] = win.stride();
        // Trailing pad `pa - op` if non-negative; else `0` works only if `op - pa < s`.
        let trail = |pa: usize, op: usize, s: usize| {
            if pa >= op {
                Some(pa - op)
            } else if op - pa < s {
                Some(0)
            } else {
                None
            }
        };
        let bottom = trail(p.bottom, oph, sh)?;
        let right = trail(p.right, opw, sw)?;
        let padding = crate::Padding::new(p.top, bottom, p.left, right);
        let conv = self.conv.padding(padding).rounding(crate::Rounding::Floor);
        let g = ConvGeometry::new(self.output, self.input.c, conv).ok()?;
        (g.output() == self.input).then_some(g)
    }

    pub(crate) fn problem(&self) -> Problem {
        let win = self.conv.window();
        let p = win.padding();
        Problem {
            x: self.output,
            y: self.input,
            groups: self.conv.group_count(),
            k: win.kernel(),
            s: win.stride(),
            d: win.dilation(),
            pad: [p.top, p.left],
        }
    }
}

fn extent(
    axis: Axis,
    input: usize,
    k: usize,
    s: usize,
    d: usize,
    pad: [usize; 2],
    op: usize,
) -> Result<usize> {
    let (dk, ds, dd) = match axis {
        Axis::Height => (Dim::KernelHeight, Dim::StrideHeight, Dim::DilationHeight),
        Axis::Width => (Dim::KernelWidth, Dim::StrideWidth, Dim::DilationWidth),
    };
    let dx = if axis == Axis::Height { Dim::Height } else { Dim::Width };
    nonzero(k, dk)?;
    nonzero(s, ds)?;
    nonzero(d, dd)?;
    if op >= s && op >= d {
        return Err(Error::InvalidParameter { name: Param::OutputPadding });
    }
    let full = (input - 1)
        .checked_mul(s)
        .and_then(|v| v.checked_add((k - 1).checked_mul(d)?))
        .and_then(|v| v.checked_add(1 + op))
        .ok_or(Error::Overflow { dim: dx })?;
    let pads = pad[0].checked_add(pad[1]).ok_or(Error::Overflow { dim: dx })?;
    if pads >= full {
        return Err(Error::Zero { dim: dx });
    }
    Ok(full - pads)
}

/// f32 elements of workspace [`conv_transpose2d`] needs for `tg` with `algorithm` in
/// `layout`.
pub fn conv_transpose2d_workspace_len(
    tg: &ConvTransposeGeometry,
    algorithm: BackwardAlgorithm,
    layout: Layout,
) -> Result<usize> {
    data_workspace_len(&tg.problem(), algorithm, layout)
}

/// Transposed convolution `y = conv_transpose(x, w) + bias` (see
/// [`ConvTransposeGeometry`]); `y` is overwritten.
///
/// `x` and `y` must share a layout whose innermost dimension is contiguous; `w` takes any
/// strides. `workspace` needs [`conv_transpose2d_workspace_len`] elements.
///
/// ```
/// use simdconv::{conv_transpose2d, BackwardAlgorithm, Conv2d, ConvTransposeGeometry, Dims,
///                Exec, FilterLayout, FilterView, Layout, TensorView, TensorViewMut};
/// // 1-D, stride 2, kernel [1, 2]: each input spreads over two outputs, no overlap.
/// let tg = ConvTransposeGeometry::new(Dims::new(1, 1, 1, 3), 1,
///     Conv2d::new(1, 2).stride(2), [0, 0])?;
/// let x = [1.0f32, 2.0, 3.0];
/// let w = [1.0f32, 10.0];
/// let mut y = [0.0f32; 6];
/// let algo = BackwardAlgorithm::Auto;
/// let mut ws = vec![0.0; simdconv::conv_transpose2d_workspace_len(&tg, algo, Layout::Nchw)?];
/// conv_transpose2d(&Exec::new(), &tg, algo,
///     TensorView::new(&x, tg.input(), Layout::Nchw)?,
///     FilterView::new(&w, tg.filter(), FilterLayout::Oihw)?, Some(&[0.5]),
///     TensorViewMut::new(&mut y, tg.output(), Layout::Nchw)?, &mut ws)?;
/// assert_eq!(y, [1.5, 10.5, 2.5, 20.5, 3.5, 30.5]);
/// # Ok::<(), simdconv::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d(
    exec: &Exec,
    tg: &ConvTransposeGeometry,
    algorithm: BackwardAlgorithm,
    x: TensorView<'_, f32>,
    w: FilterView<'_, f32>,
    bias: Option<&[f32]>,
    mut y: TensorViewMut<'_, f32>,
    workspace: &mut [f32],
) -> Result<()> {
    expect_dims(Operand::Input, tg.input().to_array(), x.dims().to_array())?;
    expect_dims(Operand::Filter, tg.filter().to_array(), w.dims().to_array())?;
    expect_dims(Operand::Output, tg.output().to_array(), y.dims().to_array())?;
    if let Some(b) = bias {
        if b.len() != tg.output().c {
            return Err(Error::LengthMismatch {
                operand: Operand::Bias,
                expected: tg.output().c,
                actual: b.len(),
            });
        }
    }
    let layout = shared_layout(
        (x.layout(), x.dims(), x.strides()),
        Operand::Input,
        (y.layout(), y.dims(), y.strides()),
        Operand::Output,
    )?;
    let p = tg.problem();
    run_data(DataArgs { exec, p: &p, layout, dy: x, w }, algorithm, y.reborrow(), workspace)?;
    if let Some(bias) = bias {
        exec.dispatch(simd::AddBias { y, layout, bias });
    }
    Ok(())
}
