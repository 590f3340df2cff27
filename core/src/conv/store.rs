//! The fused epilogue applied to a contiguous run of outputs, right after it is written.

use pulp::{Simd, WithSimd};

use crate::params::{Activation, Epilogue};
use crate::tensor::{Layout, TensorViewMut};

/// The bias of a contiguous run of outputs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RunBias<'a> {
    /// No bias.
    None,
    /// One channel's bias for the whole run (an NCHW row).
    Broadcast(f32),
    /// One bias per element (an NHWC pixel's channels).
    PerElement(&'a [f32]),
}

/// `y[i] = act(y[i] + bias[i] + residual[i])` over one contiguous run, vectorised.
/// `residual` and a per-element bias have `y.len()` elements.
#[inline(always)]
pub(crate) fn apply_run<S: Simd>(
    simd: S,
    y: &mut [f32],
    bias: RunBias<'_>,
    residual: Option<&[f32]>,
    act: Activation,
) {
    let (lo, hi, clamp) = match act {
        Activation::Identity => (f32::NEG_INFINITY, f32::INFINITY, false),
        Activation::Relu => (0.0, f32::INFINITY, true),
        Activation::Clamp { min, max } => (min, max, true),
    };
    let vlo = simd.splat_f32s(lo);
    let vhi = simd.splat_f32s(hi);
    let (yh, yt) = S::as_mut_simd_f32s(y);
    let n = yh.len() * S::F32_LANES;
    let per_elem = |i: usize| -> f32 {
        match bias {
            RunBias::None => 0.0,
            RunBias::Broadcast(b) => b,
            RunBias::PerElement(b) => b[i],
        }
    };
    let bias_splat = simd.splat_f32s(match bias {
        RunBias::Broadcast(b) => b,
        _ => 0.0,
    });
    let (bh, _) = match bias {
        RunBias::PerElement(b) => S::as_simd_f32s(&b[..n]),
        _ => (&[][..], &[][..]),
    };
    let (rh, _) = match residual {
        Some(r) => S::as_simd_f32s(&r[..n]),
        None => (&[][..], &[][..]),
    };
    for (i, v) in yh.iter_mut().enumerate() {
        let mut acc = *v;
        acc = match bias {
            RunBias::None => acc,
            RunBias::Broadcast(_) => simd.add_f32s(acc, bias_splat),
            RunBias::PerElement(_) => simd.add_f32s(acc, bh[i]),
        };
        if residual.is_some() {
            acc = simd.add_f32s(acc, rh[i]);
        }
        if clamp {
            // Selects rather than min/max so NaN passes through identically on every ISA.
            let below = simd.less_than_f32s(acc, vlo);
            acc = simd.select_f32s(below, vlo, acc);
            let above = simd.greater_than_f32s(acc, vhi);
            acc = simd.select_f32s(above, vhi, acc);
        }
        *v = acc;
    }
    for (j, v) in yt.iter_mut().enumerate() {
        let i = n + j;
        let mut acc = *v + per_elem(i);
        if let Some(r) = residual {
            acc += r[i];
        }
        *v = act.apply(acc);
    }
}

// Used by the GEMM-based algorithms (not on every branch yet).
#[allow(dead_code)]
struct ApplyAll<'a, 'b> {
    y: TensorViewMut<'b, f32>,
    epilogue: &'b Epilogue<'a>,
    layout: Layout,
}

impl WithSimd for ApplyAll<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let ApplyAll { mut y, epilogue, layout } = self;
        let d = y.dims();
        let s = y.strides();
        let res = epilogue.residual;
        match layout {
            Layout::Nchw => {
                for n in 0..d.n {
                    for c in 0..d.c {
                        let bias = epilogue.bias.map_or(RunBias::None, |b| RunBias::Broadcast(b[c]));
                        for h in 0..d.h {
                            let off = n * s[0] + c * s[1] + h * s[2];
                            let row = &mut y.data_mut()[off..off + d.w];
                            let r = res.as_ref().map(|r| {
                                let o = r.offset(n, c, h, 0);
                                &r.data()[o..o + d.w]
                            });
                            apply_run(simd, row, bias, r, epilogue.activation);
                        }
                    }
                }
            }
            Layout::Nhwc => {
                let bias = epilogue.bias.map_or(RunBias::None, RunBias::PerElement);
                for n in 0..d.n {
                    for h in 0..d.h {
                        for w in 0..d.w {
                            let off = n * s[0] + h * s[2] + w * s[3];
                            let px = &mut y.data_mut()[off..off + d.c];
                            let r = res.as_ref().map(|r| {
                                let o = r.offset(n, 0, h, w);
                                &r.data()[o..o + d.c]
                            });
                            apply_run(simd, px, bias, r, epilogue.activation);
                        }
                    }
                }
            }
        }
    }
}

/// Applies the epilogue to a whole output tensor in one pass (for algorithms, such as a
/// GEMM from another crate, that cannot fuse it into their stores). `y` and the residual
/// must be inner-contiguous in `layout` (checked by `conv2d`).
#[allow(dead_code)]
pub(crate) fn apply_all(
    exec: &crate::Exec,
    y: TensorViewMut<'_, f32>,
    epilogue: &Epilogue<'_>,
    layout: Layout,
) {
    if epilogue.is_identity() {
        return;
    }
    exec.dispatch(ApplyAll { y, epilogue, layout });
}
