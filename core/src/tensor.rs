//! Borrowed 4-D views over caller slices.
//!
//! A view is a slice, logical dims and one stride per logical dim (in elements). The
//! logical order is always `[n, c, h, w]` for activations and `[o, i, kh, kw]` for filters;
//! the memory layout is only a choice of strides, so PyTorch's NCHW / OIHW and
//! TensorFlow's NHWC / HWIO (or XNNPACK's OHWI) all work without the caller transposing,
//! and so do views into part of a larger buffer (a batch slice, or a channel range of a
//! concatenation buffer).
//!
//! Construction checks that every element the view can address lies inside the slice, so
//! kernels may index without further checks. Mutable views also check that no two
//! elements share memory.

use crate::error::{Error, Operand, Result};
use crate::geometry::{Dims, FilterDims};

/// Memory layout of an activation tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Batch, channels, rows, columns (PyTorch, ONNX). `w` is contiguous.
    Nchw,
    /// Batch, rows, columns, channels (TensorFlow, XNNPACK). `c` is contiguous.
    Nhwc,
}

impl Layout {
    /// Dense strides `[n, c, h, w]` for `dims` in this layout (saturating: a view checks
    /// for overflow when it is made).
    #[must_use]
    pub const fn strides(self, d: Dims) -> [usize; 4] {
        match self {
            Layout::Nchw => {
                let sh = d.w;
                let sc = d.h.saturating_mul(sh);
                [d.c.saturating_mul(sc), sc, sh, 1]
            }
            Layout::Nhwc => {
                let sw = d.c;
                let sh = d.w.saturating_mul(sw);
                [d.h.saturating_mul(sh), 1, sh, sw]
            }
        }
    }
}

/// Memory layout of a filter bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FilterLayout {
    /// Output channel, input channel, row, column (PyTorch). Pairs with NCHW.
    Oihw,
    /// Output channel, row, column, input channel (XNNPACK, ONNX Runtime NHWC kernels).
    Ohwi,
    /// Row, column, input channel, output channel (TensorFlow). Pairs with NHWC.
    Hwio,
}

impl FilterLayout {
    /// Dense strides `[o, i, kh, kw]` for `dims` in this layout (saturating).
    #[must_use]
    pub const fn strides(self, d: FilterDims) -> [usize; 4] {
        match self {
            FilterLayout::Oihw => {
                let sh = d.kw;
                let si = d.kh.saturating_mul(sh);
                [d.i.saturating_mul(si), si, sh, 1]
            }
            FilterLayout::Ohwi => {
                let sw = d.i;
                let sh = d.kw.saturating_mul(sw);
                [d.kh.saturating_mul(sh), 1, sh, sw]
            }
            FilterLayout::Hwio => {
                let si = d.o;
                let sw = d.i.saturating_mul(si);
                let sh = d.kw.saturating_mul(sw);
                [1, si, sh, sw]
            }
        }
    }
}

/// The number of elements a strided view spans: `1 + sum((dim - 1) * stride)`, or `None`
/// on overflow. Zero dims span nothing.
fn span(dims: [usize; 4], strides: [usize; 4]) -> Option<usize> {
    if dims.contains(&0) {
        return Some(0);
    }
    let mut last = 0usize;
    for (d, s) in dims.iter().zip(strides) {
        last = last.checked_add((d - 1).checked_mul(s)?)?;
    }
    last.checked_add(1)
}

/// True when no two in-range indices map to the same offset. Checks the sufficient
/// condition that, sorted by stride, each stride is at least the extent of the smaller
/// dimensions below it (dims of size 1 are ignored).
fn non_overlapping(dims: [usize; 4], strides: [usize; 4]) -> bool {
    let mut order = [0usize, 1, 2, 3];
    order.sort_unstable_by_key(|&i| strides[i]);
    let mut extent = 1usize; // elements covered by the dims so far
    for &i in &order {
        if dims[i] <= 1 {
            continue;
        }
        if strides[i] < extent {
            return false;
        }
        match strides[i].checked_mul(dims[i] - 1).and_then(|v| v.checked_add(extent)) {
            Some(e) => extent = e,
            None => return false,
        }
    }
    true
}

fn check(len: usize, dims: [usize; 4], strides: [usize; 4], operand: Operand) -> Result<()> {
    // Zero dims are rejected by geometry validation; a view itself may be empty.
    let needed = span(dims, strides).ok_or(Error::Overflow { dim: crate::error::Dim::Channels })?;
    if len < needed {
        return Err(Error::SliceTooShort { operand, needed, actual: len });
    }
    Ok(())
}

macro_rules! view_common {
    ($name:ident, $dims:ty) => {
        impl<'a, T> $name<'a, T> {
            /// Logical dims.
            #[must_use]
            pub fn dims(&self) -> $dims {
                self.dims
            }
            /// Strides in elements, in logical dim order.
            #[must_use]
            pub fn strides(&self) -> [usize; 4] {
                self.strides
            }
            /// Offset of element `[a, b, c, d]` (logical order) into the slice.
            #[inline(always)]
            #[must_use]
            pub fn offset(&self, a: usize, b: usize, c: usize, d: usize) -> usize {
                a * self.strides[0] + b * self.strides[1] + c * self.strides[2] + d * self.strides[3]
            }
        }
    };
}

/// A read-only 4-D activation view `[n, c, h, w]`.
#[derive(Debug)]
pub struct TensorView<'a, T> {
    data: &'a [T],
    dims: Dims,
    strides: [usize; 4],
}

impl<T> Clone for TensorView<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for TensorView<'_, T> {}

view_common!(TensorView, Dims);

impl<'a, T> TensorView<'a, T> {
    /// A dense view in `layout`.
    ///
    /// ```
    /// use simdconv::{TensorView, Dims, Layout};
    /// let x = vec![0.0f32; 2 * 3 * 4 * 5];
    /// let v = TensorView::new(&x, Dims::new(2, 3, 4, 5), Layout::Nhwc)?;
    /// assert_eq!(v.strides(), [60, 1, 15, 3]);
    /// # Ok::<(), simdconv::Error>(())
    /// ```
    pub fn new(data: &'a [T], dims: Dims, layout: Layout) -> Result<Self> {
        Self::with_strides(data, dims, layout.strides(dims))
    }

    /// A view with explicit strides `[n, c, h, w]` (in elements).
    pub fn with_strides(data: &'a [T], dims: Dims, strides: [usize; 4]) -> Result<Self> {
        check(data.len(), dims.to_array(), strides, Operand::Input)?;
        Ok(TensorView { data, dims, strides })
    }

    /// The underlying slice.
    #[must_use]
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// The layout whose innermost dim is contiguous: `Nchw` if `w` has stride 1 (or width
    /// 1), `Nhwc` if `c` has stride 1 (or one channel), `None` otherwise. Fast kernels need
    /// one of the two; the reference takes any strides.
    #[must_use]
    pub fn layout(&self) -> Option<Layout> {
        inner_layout(self.dims, self.strides)
    }

    /// Element `[n, c, h, w]`. Panics if out of range (use in tests and references).
    #[must_use]
    pub fn get(&self, n: usize, c: usize, h: usize, w: usize) -> T
    where
        T: Copy,
    {
        assert!(n < self.dims.n && c < self.dims.c && h < self.dims.h && w < self.dims.w);
        self.data[self.offset(n, c, h, w)]
    }
}

fn inner_layout(d: Dims, s: [usize; 4]) -> Option<Layout> {
    let nchw = fits_layout(d, s, Layout::Nchw);
    let nhwc = fits_layout(d, s, Layout::Nhwc);
    match (nchw, nhwc) {
        (true, false) => Some(Layout::Nchw),
        (false, true) => Some(Layout::Nhwc),
        // Both fit: vectorise along the longer contiguous run. One channel with contiguous
        // rows is a row-major plane (NCHW); one column with contiguous channels is NHWC.
        (true, true) if d.c == 1 && s[3] == 1 => Some(Layout::Nchw),
        (true, true) if d.w == 1 && s[1] == 1 => Some(Layout::Nhwc),
        (true, true) if s == Layout::Nhwc.strides(d) && s != Layout::Nchw.strides(d) => Some(Layout::Nhwc),
        (true, true) => Some(Layout::Nchw),
        (false, false) => None,
    }
}

/// True when `layout`'s innermost dim (`w` for NCHW, `c` for NHWC) has stride 1 or
/// extent 1, which is all the fast kernels need.
pub(crate) fn fits_layout(d: Dims, s: [usize; 4], layout: Layout) -> bool {
    match layout {
        Layout::Nchw => s[3] == 1 || d.w == 1,
        Layout::Nhwc => s[1] == 1 || d.c == 1,
    }
}

/// One operand of a kernel call, for [`shared_layout`]: which operand, dims, strides.
pub(crate) type LayoutProbe = (Operand, Dims, [usize; 4]);

/// The layout in which every operand is inner-contiguous, preferring the first operand's
/// own ([`TensorView::layout`]): a one-channel or one-column tensor fits both layouts, so
/// a partner's different guess is no real conflict. Errors name the first operand that
/// fits neither layout, else report [`Unsupported::MixedLayouts`](crate::Unsupported).
pub(crate) fn shared_layout(ops: &[LayoutProbe]) -> Result<Layout> {
    let first = ops.first().and_then(|&(_, d, s)| inner_layout(d, s)).unwrap_or(Layout::Nchw);
    let other = match first {
        Layout::Nchw => Layout::Nhwc,
        Layout::Nhwc => Layout::Nchw,
    };
    if let Some(l) = [first, other].into_iter().find(|&l| ops.iter().all(|&(_, d, s)| fits_layout(d, s, l))) {
        return Ok(l);
    }
    let unsupported = |u| Err(Error::Unsupported(u));
    match ops.iter().find(|&&(_, d, s)| inner_layout(d, s).is_none()) {
        Some(&(op, _, _)) => unsupported(crate::Unsupported::NonContiguous(op)),
        None => unsupported(crate::Unsupported::MixedLayouts),
    }
}

/// Fills every element of `t` with `v`, one contiguous run at a time (`t`'s inner dim is
/// contiguous in `layout`).
pub(crate) fn fill_runs(t: &mut TensorViewMut<'_, f32>, layout: Layout, v: f32) {
    let d = t.dims();
    let s = t.strides();
    let (outer, run) = match layout {
        Layout::Nchw => ([d.n, d.c, d.h, s[0], s[1], s[2]], d.w),
        Layout::Nhwc => ([d.n, d.h, d.w, s[0], s[2], s[3]], d.c),
    };
    let data = t.data_mut();
    for a in 0..outer[0] {
        for b in 0..outer[1] {
            for c in 0..outer[2] {
                let o = a * outer[3] + b * outer[4] + c * outer[5];
                data[o..o + run].fill(v);
            }
        }
    }
}

/// A mutable 4-D activation view `[n, c, h, w]` whose elements never share memory.
#[derive(Debug)]
pub struct TensorViewMut<'a, T> {
    data: &'a mut [T],
    dims: Dims,
    strides: [usize; 4],
}

view_common!(TensorViewMut, Dims);

impl<'a, T> TensorViewMut<'a, T> {
    /// A dense mutable view in `layout`.
    pub fn new(data: &'a mut [T], dims: Dims, layout: Layout) -> Result<Self> {
        Self::with_strides(data, dims, layout.strides(dims))
    }

    /// A mutable view with explicit strides; errors if two elements would alias.
    pub fn with_strides(data: &'a mut [T], dims: Dims, strides: [usize; 4]) -> Result<Self> {
        check(data.len(), dims.to_array(), strides, Operand::Output)?;
        if !non_overlapping(dims.to_array(), strides) {
            return Err(Error::OverlappingStrides { operand: Operand::Output });
        }
        Ok(TensorViewMut { data, dims, strides })
    }

    /// A read-only view of the same elements.
    #[must_use]
    pub fn as_view(&self) -> TensorView<'_, T> {
        TensorView { data: self.data, dims: self.dims, strides: self.strides }
    }

    /// A shorter-lived mutable view of the same elements.
    #[must_use]
    pub fn reborrow(&mut self) -> TensorViewMut<'_, T> {
        TensorViewMut { data: self.data, dims: self.dims, strides: self.strides }
    }

    /// The underlying slice.
    #[must_use]
    pub fn data_mut(&mut self) -> &mut [T] {
        self.data
    }

    /// The underlying slice, read-only.
    #[must_use]
    pub fn data(&self) -> &[T] {
        self.data
    }

    /// See [`TensorView::layout`].
    #[must_use]
    pub fn layout(&self) -> Option<Layout> {
        inner_layout(self.dims, self.strides)
    }

    /// Element `[n, c, h, w]`, mutably. Panics if out of range.
    pub fn get_mut(&mut self, n: usize, c: usize, h: usize, w: usize) -> &mut T {
        assert!(n < self.dims.n && c < self.dims.c && h < self.dims.h && w < self.dims.w);
        let o = self.offset(n, c, h, w);
        &mut self.data[o]
    }
}

/// A read-only filter view `[o, i, kh, kw]` (`i` = input channels per group).
#[derive(Debug)]
pub struct FilterView<'a, T> {
    data: &'a [T],
    dims: FilterDims,
    strides: [usize; 4],
}

impl<T> Clone for FilterView<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for FilterView<'_, T> {}

view_common!(FilterView, FilterDims);

impl<'a, T> FilterView<'a, T> {
    /// A dense filter view in `layout`.
    ///
    /// ```
    /// use simdconv::{FilterView, FilterDims, FilterLayout};
    /// let w = vec![0.0f32; 8 * 3 * 5 * 5];
    /// let f = FilterView::new(&w, FilterDims::new(8, 3, 5, 5), FilterLayout::Hwio)?;
    /// assert_eq!(f.strides(), [1, 8, 120, 24]);
    /// # Ok::<(), simdconv::Error>(())
    /// ```
    pub fn new(data: &'a [T], dims: FilterDims, layout: FilterLayout) -> Result<Self> {
        Self::with_strides(data, dims, layout.strides(dims))
    }

    /// A filter view with explicit strides `[o, i, kh, kw]`.
    pub fn with_strides(data: &'a [T], dims: FilterDims, strides: [usize; 4]) -> Result<Self> {
        check(data.len(), dims.to_array(), strides, Operand::Filter)?;
        Ok(FilterView { data, dims, strides })
    }

    /// The underlying slice.
    #[must_use]
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// The dense layout these strides are, if any.
    #[must_use]
    pub fn layout(&self) -> Option<FilterLayout> {
        [FilterLayout::Oihw, FilterLayout::Ohwi, FilterLayout::Hwio]
            .into_iter()
            .find(|l| l.strides(self.dims) == self.strides)
    }

    /// Weight `[o, i, kh, kw]`. Panics if out of range.
    #[must_use]
    pub fn get(&self, o: usize, i: usize, h: usize, w: usize) -> T
    where
        T: Copy,
    {
        assert!(o < self.dims.o && i < self.dims.i && h < self.dims.kh && w < self.dims.kw);
        self.data[self.offset(o, i, h, w)]
    }
}

/// A mutable filter view (for weight gradients).
#[derive(Debug)]
pub struct FilterViewMut<'a, T> {
    data: &'a mut [T],
    dims: FilterDims,
    strides: [usize; 4],
}

view_common!(FilterViewMut, FilterDims);

impl<'a, T> FilterViewMut<'a, T> {
    /// A dense mutable filter view in `layout`.
    pub fn new(data: &'a mut [T], dims: FilterDims, layout: FilterLayout) -> Result<Self> {
        Self::with_strides(data, dims, layout.strides(dims))
    }

    /// A mutable filter view with explicit strides; errors if two weights would alias.
    pub fn with_strides(data: &'a mut [T], dims: FilterDims, strides: [usize; 4]) -> Result<Self> {
        check(data.len(), dims.to_array(), strides, Operand::FilterGrad)?;
        if !non_overlapping(dims.to_array(), strides) {
            return Err(Error::OverlappingStrides { operand: Operand::FilterGrad });
        }
        Ok(FilterViewMut { data, dims, strides })
    }

    /// A read-only view of the same weights.
    #[must_use]
    pub fn as_view(&self) -> FilterView<'_, T> {
        FilterView { data: self.data, dims: self.dims, strides: self.strides }
    }

    /// The underlying slice.
    #[must_use]
    pub fn data_mut(&mut self) -> &mut [T] {
        self.data
    }

    /// Weight `[o, i, kh, kw]`, mutably. Panics if out of range.
    pub fn get_mut(&mut self, o: usize, i: usize, h: usize, w: usize) -> &mut T {
        assert!(o < self.dims.o && i < self.dims.i && h < self.dims.kh && w < self.dims.kw);
        let off = self.offset(o, i, h, w);
        &mut self.data[off]
    }
}

/// Copies a dense filter bank from one layout to another (e.g. TensorFlow's HWIO to the
/// OHWI that NHWC kernels read fastest).
///
/// ```
/// use simdconv::{repack_filter, FilterDims, FilterLayout};
/// let dims = FilterDims::new(2, 1, 1, 2); // 2 filters of 1x2
/// let oihw = [1.0f32, 2.0, 3.0, 4.0];
/// let mut hwio = [0.0f32; 4];
/// repack_filter(&oihw, FilterLayout::Oihw, &mut hwio, FilterLayout::Hwio, dims)?;
/// assert_eq!(hwio, [1.0, 3.0, 2.0, 4.0]);
/// # Ok::<(), simdconv::Error>(())
/// ```
pub fn repack_filter<T: Copy>(
    src: &[T],
    src_layout: FilterLayout,
    dst: &mut [T],
    dst_layout: FilterLayout,
    dims: FilterDims,
) -> Result<()> {
    let s = FilterView::new(src, dims, src_layout)?;
    let mut d = FilterViewMut::new(dst, dims, dst_layout)?;
    for o in 0..dims.o {
        for i in 0..dims.i {
            for h in 0..dims.kh {
                for w in 0..dims.kw {
                    *d.get_mut(o, i, h, w) = s.get(o, i, h, w);
                }
            }
        }
    }
    Ok(())
}

/// Copies a dense activation tensor between layouts (NCHW <-> NHWC).
pub fn repack_tensor<T: Copy>(
    src: &[T],
    src_layout: Layout,
    dst: &mut [T],
    dst_layout: Layout,
    dims: Dims,
) -> Result<()> {
    let s = TensorView::new(src, dims, src_layout)?;
    let mut d = TensorViewMut::new(dst, dims, dst_layout)?;
    for n in 0..dims.n {
        for c in 0..dims.c {
            for h in 0..dims.h {
                for w in 0..dims.w {
                    *d.get_mut(n, c, h, w) = s.get(n, c, h, w);
                }
            }
        }
    }
    Ok(())
}

/// Checks that a view has the expected dims.
pub(crate) fn expect_dims(operand: Operand, expected: [usize; 4], actual: [usize; 4]) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::ShapeMismatch { operand, expected, actual })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_detection() {
        let d = [2, 3, 4, 5];
        assert!(non_overlapping(d, Layout::Nchw.strides(Dims::new(2, 3, 4, 5))));
        assert!(non_overlapping(d, Layout::Nhwc.strides(Dims::new(2, 3, 4, 5))));
        assert!(!non_overlapping(d, [0, 20, 5, 1]));
        assert!(!non_overlapping(d, [60, 20, 4, 1]));
        // Padded rows are fine.
        assert!(non_overlapping(d, [200, 50, 8, 1]));
        // A size-1 dim may have any stride.
        assert!(non_overlapping([1, 3, 4, 5], [0, 20, 5, 1]));
    }

    #[test]
    fn short_slice_is_an_error_with_numbers() {
        let x = [0.0f32; 10];
        let e = TensorView::new(&x, Dims::new(1, 1, 3, 4), Layout::Nchw).unwrap_err();
        assert_eq!(e, Error::SliceTooShort { operand: Operand::Input, needed: 12, actual: 10 });
    }

    #[test]
    fn stride_overflow_is_an_error() {
        let x = [0.0f32; 10];
        let e = TensorView::with_strides(&x, Dims::new(2, 1, 1, 1), [usize::MAX, 1, 1, 1]).unwrap_err();
        assert!(matches!(e, Error::Overflow { .. }));
    }
}
