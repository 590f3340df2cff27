//! The data gradient of a stride-1 convolution as a forward convolution.
//!
//! With stride 1, `dX[c, iy, ix] = sum dY[o, iy + pad - ky * d, ...] W[o, c, ky, kx]`:
//! a forward convolution of `dY` with the spatially flipped, in/out-swapped filters
//! `W'[c, o, ky, kx] = W[o, c, kh - 1 - ky, kw - 1 - kx]` (per group), dilation `d`, and
//! leading padding `d * (k - 1) - pad` (the notes' "convolution with flipped filters").
//! The trailing padding makes the output exactly `dX`'s extent: `x + pad - y`, which for
//! a forward convolution is `d * (k - 1) - pad_trailing`.
//!
//! The flipped filter bank is written at the start of the workspace; the forward
//! [`conv2d`](crate::conv2d) with [`Algorithm::Auto`] runs on the rest, so every forward
//! speed-up reaches this path.

use super::{DataArgs, Problem};
use crate::conv::{conv2d, conv2d_workspace_len, Algorithm, Conv2dOptions};
use crate::error::{Dim, Error, Result, Unsupported};
use crate::geometry::{Conv2d, ConvGeometry, Padding};
use crate::tensor::{FilterLayout, FilterView, Layout, TensorViewMut};

/// The forward geometry computing `p`'s data gradient, if `p` has stride 1 and padding
/// that the flipped convolution can express (leading padding at most `d * (k - 1)`,
/// trailing at least 0).
pub(crate) fn forward_geometry(p: &Problem) -> Option<ConvGeometry> {
    if p.s != [1, 1] {
        return None;
    }
    let mut pads = [[0usize; 2]; 2];
    for (axis, pad) in pads.iter_mut().enumerate() {
        let (x, y) = if axis == 0 { (p.x.h, p.y.h) } else { (p.x.w, p.y.w) };
        // d * (k - 1) is below the padded extent the geometry checked; x + pad too.
        let ext = p.d[axis] * (p.k[axis] - 1);
        let lead = ext.checked_sub(p.pad[axis])?;
        let trail = (x + p.pad[axis]).checked_sub(y)?;
        *pad = [lead, trail];
    }
    let conv = Conv2d::new(p.k[0], p.k[1])
        .dilation_hw(p.d[0], p.d[1])
        .padding(Padding::new(pads[0][0], pads[0][1], pads[1][0], pads[1][1]))
        .groups(p.groups);
    let g = ConvGeometry::new(p.y, p.x.c, conv).ok()?;
    (g.output() == p.x).then_some(g)
}

/// The filter layout of the flipped bank: the one the forward reads fastest in `layout`.
fn filter_layout(layout: Layout) -> FilterLayout {
    match layout {
        Layout::Nchw => FilterLayout::Oihw,
        Layout::Nhwc => FilterLayout::Ohwi,
    }
}

/// Workspace: the flipped filter bank, then the forward convolution's workspace.
/// `None` if `p` cannot run this way.
pub(crate) fn workspace_len(p: &Problem, layout: Layout) -> Option<Result<usize>> {
    let fg = forward_geometry(p)?;
    #[cfg(feature = "std")]
    if crate::conv::select_algorithm(&fg, layout) == Algorithm::Winograd {
        // Transformed straight from the original filter: no flipped copy.
        return Some(crate::conv::winograd::workspace_len(&fg));
    }
    Some((|| {
        let bank = fg.filter().count()?;
        let fwd = conv2d_workspace_len(&fg, Algorithm::Auto, layout)?;
        bank.checked_add(fwd).ok_or(Error::Overflow { dim: Dim::Channels })
    })())
}

/// Runs the data gradient through the forward convolution; `ws` holds at least
/// [`workspace_len`] elements and `forward_geometry(p)` exists (the caller checked both).
pub(crate) fn data(args: DataArgs<'_, '_>, dx: TensorViewMut<'_, f32>, ws: &mut [f32]) -> Result<()> {
    let DataArgs { exec, p, layout, dy, w } = args;
    // The caller checked that the flipped geometry exists; a typed error, not a panic,
    // should that ever change.
    let Some(fg) = forward_geometry(p) else {
        return Err(Error::Unsupported(Unsupported::FlippedGeometry));
    };
    #[cfg(feature = "std")]
    if crate::conv::select_algorithm(&fg, layout) == Algorithm::Winograd {
        return crate::conv::winograd::run_flipped(exec, &fg, dy, &w, dx, ws);
    }
    let fd = fg.filter();
    let (bank, rest) = ws.split_at_mut(fd.count()?);
    let fl = filter_layout(layout);
    let bs = fl.strides(fd);
    let (og, cg) = (p.og(), p.cg());
    let [kh, kw] = p.k;
    let (src_s, src) = (w.strides(), w.data());
    // bank[g * cg + ci, oi, ky, kx] = w[g * og + oi, ci, kh - 1 - ky, kw - 1 - kx].
    for g in 0..p.groups {
        for ci in 0..cg {
            let c = g * cg + ci;
            for oi in 0..og {
                let o = g * og + oi;
                for ky in 0..kh {
                    let drow = c * bs[0] + oi * bs[1] + ky * bs[2];
                    let srow = o * src_s[0] + ci * src_s[1] + (kh - 1 - ky) * src_s[2];
                    for kx in 0..kw {
                        bank[drow + kx * bs[3]] = src[srow + (kw - 1 - kx) * src_s[3]];
                    }
                }
            }
        }
    }
    let filt = FilterView::new(&*bank, fd, fl)?;
    conv2d(exec, &fg, &Conv2dOptions::default(), dy, filt, dx, rest)
}
