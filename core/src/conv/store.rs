//! The fused epilogue applied to a contiguous run of outputs, right after it is written.

use pulp::Simd;

use crate::params::Activation;

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
