//! Window arithmetic shared by every pooling kernel: which taps of a window land on input
//! elements, how many land in the padded input, and which outputs have no padding at all.
//!
//! Geometry never touches data: the kernels ask a [`Plan`] for tap ranges and coordinates.

use crate::geometry::PoolGeometry;

/// One axis of a validated pooling window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AxisPlan {
    pub input: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad: usize,
    /// `input + pad_before + pad_after`: taps at or past it are beyond the trailing pad.
    padded_end: usize,
    /// Outputs `lo..hi` see `kernel` input taps and no padding (the interior).
    pub lo: usize,
    pub hi: usize,
}

impl AxisPlan {
    fn new(
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        pb: usize,
        pa: usize,
        out: usize,
    ) -> Self {
        // A validated geometry guarantees `eff <= input + pb + pa`, all within usize.
        let eff = (kernel - 1) * dilation + 1;
        let padded_end = input + pb + pa;
        let hi = if pb + input >= eff { ((pb + input - eff) / stride + 1).min(out) } else { 0 };
        let lo = pb.div_ceil(stride).min(hi);
        AxisPlan { input, kernel, stride, dilation, pad: pb, padded_end, lo, hi }
    }

    /// `(k0, k1, padded)`: taps `k0..k1` of output `o` land on input elements (a validated
    /// geometry makes the range non-empty) and `padded` taps land in the padded input.
    #[inline(always)]
    pub fn taps(&self, o: usize) -> (usize, usize, usize) {
        if o >= self.lo && o < self.hi {
            return (0, self.kernel, self.kernel);
        }
        // `o * stride` is the window start in padded coordinates; it is at most the padded
        // extent for every output of a validated geometry.
        let s = o * self.stride;
        let d = self.dilation;
        let k0 = if s >= self.pad { 0 } else { (self.pad - s).div_ceil(d) };
        let k1 = self.kernel.min((self.pad + self.input).saturating_sub(s).div_ceil(d));
        let kp = self.kernel.min(self.padded_end.saturating_sub(s).div_ceil(d));
        (k0, k1.max(k0), kp)
    }

    /// The axis of outputs `a..b` (`a < b <=` the output count) alone, and the input
    /// coordinate `d` it starts at: output `o` of the slab has the taps output `a + o` has
    /// here, at input coordinates `d` lower, and the same ones in the padding. The window
    /// start `a * stride` moves into the input (`d = a * stride - pad`) or, while it is
    /// still in the leading padding, shortens the padding.
    #[cfg(feature = "rayon")]
    pub fn slab(&self, a: usize, b: usize) -> (Self, usize) {
        // No overflow: `a * stride` is at most output `a`'s window start in padded
        // coordinates, below the padded extent of a validated geometry.
        let shift = a * self.stride;
        // Every window of a validated geometry has an input tap, so `d < input`.
        let d = shift.saturating_sub(self.pad);
        let hi = self.hi.saturating_sub(a).min(b - a);
        let axis = AxisPlan {
            input: self.input - d,
            pad: self.pad.saturating_sub(shift),
            padded_end: self.padded_end - shift,
            lo: self.lo.saturating_sub(a).min(hi),
            hi,
            ..*self
        };
        (axis, d)
    }

    /// Input coordinate of tap `k` of output `o`; only for `k` in `taps(o).0..taps(o).1`.
    #[inline(always)]
    pub fn coord(&self, o: usize, k: usize) -> usize {
        o * self.stride + k * self.dilation - self.pad
    }
}

/// Sizes and window axes of one pooling problem.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub ah: AxisPlan,
    pub aw: AxisPlan,
}

impl Plan {
    pub fn new(g: &PoolGeometry) -> Self {
        let i = g.input();
        let o = g.output();
        let win = g.window();
        let [kh, kw] = win.kernel();
        let [sh, sw] = win.stride();
        let [dh, dw] = win.dilation();
        let p = win.padding();
        Plan {
            n: i.n,
            c: i.c,
            h: i.h,
            w: i.w,
            oh: o.h,
            ow: o.w,
            ah: AxisPlan::new(i.h, kh, sh, dh, p.top, p.bottom, o.h),
            aw: AxisPlan::new(i.w, kw, sw, dw, p.left, p.right, o.w),
        }
    }

    /// Calls `f(iy, ix)` for each input tap of output `(oy, ox)` in scan order.
    #[inline(always)]
    pub fn for_taps(&self, oy: usize, ox: usize, mut f: impl FnMut(usize, usize)) {
        let (ky0, ky1, _) = self.ah.taps(oy);
        let (kx0, kx1, _) = self.aw.taps(ox);
        for ky in ky0..ky1 {
            let iy = self.ah.coord(oy, ky);
            for kx in kx0..kx1 {
                f(iy, self.aw.coord(ox, kx));
            }
        }
    }

    /// `(input taps, padded taps)` of output `(oy, ox)`.
    #[inline(always)]
    pub fn counts(&self, oy: usize, ox: usize) -> (usize, usize) {
        let (ky0, ky1, py) = self.ah.taps(oy);
        let (kx0, kx1, px) = self.aw.taps(ox);
        // Padded counts can exceed usize for huge padded windows; the divisor saturates.
        ((ky1 - ky0) * (kx1 - kx0), py.saturating_mul(px))
    }
}

/// `(F, inside)` when `p` is an `F x F` window (`F` 2 or 3) of stride 2 and dilation 1
/// over a problem that is not empty; `inside`: every output window lies inside the input.
/// (Its users, the AVX2 and AVX-512 kernels, are x86-64 only.)
#[cfg(target_arch = "x86_64")]
pub(crate) fn s2_geometry(p: &Plan) -> Option<(usize, bool)> {
    let (ah, aw) = (p.ah, p.aw);
    let f = aw.kernel;
    let same = ah.kernel == f && ah.stride == 2 && aw.stride == 2 && ah.dilation == 1 && aw.dilation == 1;
    let inside = ah.lo == 0 && ah.hi == p.oh && aw.lo == 0 && aw.hi == p.ow;
    let any = p.n > 0 && p.c > 0 && p.oh > 0 && p.ow > 0;
    (same && any && (f == 2 || f == 3)).then_some((f, inside))
}

/// The window size `F` (2 or 3) when `p` is an `F x F` window of stride 2 and dilation 1
/// whose every output window lies inside the input, and the problem is not empty. (Its
/// users, the AVX2 and AVX-512 kernels, are x86-64 only.)
#[cfg(target_arch = "x86_64")]
pub(crate) fn s2_window(p: &Plan) -> Option<usize> {
    s2_geometry(p).and_then(|(f, inside)| inside.then_some(f))
}
