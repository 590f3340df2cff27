//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and by the stable
//! corpus-replay test (`tests/fuzz_replay.rs`). Each body builds a problem from arbitrary
//! bytes, runs it, and checks the outcome against an independent model: a result equal
//! to the reference when the call succeeds, and an error exactly when the model says the
//! input is invalid. A body panics only when it finds a bug.

use arbitrary::{Result as AResult, Unstructured};
use simdconv::{
    output_extent, Axis, AxisWindow, Conv2d, ConvGeometry, Dims, Error, Padding, Pool2d, PoolGeometry,
    Rounding, TensorView, TensorViewMut,
};

/// A size biased towards the interesting: 0, 1, small, and values near `usize::MAX`.
fn size(u: &mut Unstructured<'_>) -> AResult<usize> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 => 0,
        1 => 1,
        2..=5 => u.int_in_range(0usize..=8)?,
        6 => u.int_in_range(0usize..=300)?,
        7 => usize::MAX - u.int_in_range(0usize..=3)?,
        8 => usize::MAX / u.int_in_range(2usize..=64)?,
        _ => u.arbitrary::<usize>()?,
    })
}

fn rounding(u: &mut Unstructured<'_>) -> AResult<Rounding> {
    Ok(*u.choose(&[Rounding::Exact, Rounding::Floor, Rounding::Ceil])?)
}

/// Output extent in u128 arithmetic: `None` when the notes' rules (plus the crate's
/// overflow rule) make the axis invalid.
fn model_extent(
    input: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
    pa: usize,
    r: Rounding,
) -> Option<usize> {
    if input == 0 || k == 0 || s == 0 || d == 0 {
        return None;
    }
    let max = usize::MAX as u128;
    let eff = (k as u128 - 1) * d as u128 + 1;
    let pads = pb as u128 + pa as u128;
    let padded = input as u128 + pads;
    if eff > max || pads > max || padded > max || eff > padded {
        return None;
    }
    let span = padded - eff;
    let floor = span / s as u128 + 1;
    let out = match r {
        Rounding::Floor => floor,
        Rounding::Exact if span.is_multiple_of(s as u128) => floor,
        Rounding::Exact => return None,
        Rounding::Ceil if span.is_multiple_of(s as u128) => floor,
        Rounding::Ceil => {
            if floor * (s as u128) < input as u128 + pb as u128 {
                floor + 1
            } else {
                floor
            }
        }
    };
    usize::try_from(out).ok()
}

fn product_fits(v: &[usize]) -> bool {
    v.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).is_some()
}

/// Geometry and output-size arithmetic with any integers.
pub fn geometry(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = geometry_inner(&mut u);
}

fn geometry_inner(u: &mut Unstructured<'_>) -> AResult<()> {
    let (n, c, h, w, k) = (size(u)?, size(u)?, size(u)?, size(u)?, size(u)?);
    let (kh, kw, sh, sw, dh, dw) = (size(u)?, size(u)?, size(u)?, size(u)?, size(u)?, size(u)?);
    let p = Padding::new(size(u)?, size(u)?, size(u)?, size(u)?);
    let g = size(u)?;
    let r = rounding(u)?;
    let conv = Conv2d::new(kh, kw).stride_hw(sh, sw).dilation_hw(dh, dw).padding(p).groups(g).rounding(r);
    let got = ConvGeometry::new(Dims::new(n, c, h, w), k, conv);
    let oh = model_extent(h, kh, sh, dh, p.top, p.bottom, r);
    let ow = model_extent(w, kw, sw, dw, p.left, p.right, r);
    let model = (|| {
        if n == 0 || c == 0 || k == 0 || g == 0 || c % g != 0 || k % g != 0 {
            return None;
        }
        let (oh, ow) = (oh?, ow?);
        let ok = product_fits(&[n, c, h, w])
            && product_fits(&[n, k, oh, ow])
            && product_fits(&[k, c / g, kh, kw])
            && [n, k, oh, ow, c / g, kh, kw].iter().try_fold(1u64, |a, &b| a.checked_mul(b as u64)).is_some();
        ok.then_some((oh, ow))
    })();
    match (&got, model) {
        (Ok(geo), Some((oh, ow))) => {
            assert_eq!(geo.output(), Dims::new(n, k, oh, ow));
            assert_eq!(geo.filter().to_array(), [k, c / g, kh, kw]);
        }
        (Err(e), None) => {
            let _ = e.to_string();
        }
        (got, model) => panic!("conv geometry disagrees with the model: {got:?} vs {model:?}"),
    }
    // Per-axis extent.
    let win =
        AxisWindow { input: h, kernel: kh, stride: sh, dilation: dh, pad_before: p.top, pad_after: p.bottom };
    assert_eq!(output_extent(win, r, Axis::Height).ok(), oh);

    // Pooling adds: pads at most half the effective window, dilation at most the input.
    let pool = Pool2d::new(kh, kw).stride_hw(sh, sw).dilation_hw(dh, dw).padding(p).rounding(r);
    let got = PoolGeometry::new(Dims::new(n, c, h, w), pool);
    let half = |k: usize, d: usize| ((k as u128).saturating_sub(1) * d as u128).div_ceil(2);
    let model = (|| {
        if n == 0 || c == 0 {
            return None;
        }
        let (oh, ow) = (oh?, ow?);
        for (pad, kk, dd) in [(p.top, kh, dh), (p.bottom, kh, dh), (p.left, kw, dw), (p.right, kw, dw)] {
            if pad as u128 > half(kk, dd) {
                return None;
            }
        }
        if (kh > 1 && dh > h) || (kw > 1 && dw > w) {
            return None;
        }
        (product_fits(&[n, c, h, w]) && product_fits(&[n, c, oh, ow])).then_some((oh, ow))
    })();
    match (&got, model) {
        (Ok(geo), Some((oh, ow))) => assert_eq!(geo.output(), Dims::new(n, c, oh, ow)),
        (Err(e), None) => {
            let _ = e.to_string();
        }
        (got, model) => panic!("pool geometry disagrees with the model: {got:?} vs {model:?}"),
    }
    // "Same" padding never panics and, when it succeeds, keeps ceil(input / stride).
    if let Ok(same) = Padding::same([h, w], [kh, kw], [sh, sw], [dh, dw]) {
        let conv = Conv2d::new(kh, kw).stride_hw(sh, sw).dilation_hw(dh, dw).padding(same);
        if let Ok(geo) = ConvGeometry::new(Dims::new(1, 1, h, w), 1, conv) {
            assert_eq!(geo.output().h, h.div_ceil(sh));
            assert_eq!(geo.output().w, w.div_ceil(sw));
        }
    }
    Ok(())
}

/// View construction: short slices, odd and overflowing strides, aliasing mutable views.
pub fn views(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = views_inner(&mut u);
}

fn views_inner(u: &mut Unstructured<'_>) -> AResult<()> {
    let dims = [
        u.int_in_range(0usize..=5)?,
        u.int_in_range(0usize..=5)?,
        u.int_in_range(0usize..=5)?,
        u.int_in_range(0usize..=5)?,
    ];
    let mut strides = [0usize; 4];
    for s in &mut strides {
        *s = if u.ratio(1u8, 8u8)? { size(u)? } else { u.int_in_range(0usize..=40)? };
    }
    let len = u.int_in_range(0usize..=2000)?;
    let d = Dims::new(dims[0], dims[1], dims[2], dims[3]);
    let span: Option<u128> = if dims.contains(&0) {
        Some(0)
    } else {
        Some(dims.iter().zip(strides).map(|(&n, s)| (n as u128 - 1) * s as u128).sum::<u128>() + 1)
    };
    let buf = vec![0.0f32; len];
    let ro = TensorView::with_strides(&buf, d, strides);
    let fits = span.is_some_and(|s| s <= len as u128);
    assert_eq!(ro.is_ok(), fits, "read view {dims:?} {strides:?} len {len}: {ro:?}");
    if let Err(e) = &ro {
        assert!(matches!(e, Error::SliceTooShort { .. } | Error::Overflow { .. }));
    }
    let mut buf = vec![0.0f32; len];
    let rw = TensorViewMut::with_strides(&mut buf, d, strides);
    if fits {
        // A fitting mutable view is refused only for (possible) aliasing.
        if let Err(e) = &rw {
            assert!(matches!(e, Error::OverlappingStrides { .. }), "{e:?}");
        }
    } else {
        assert!(rw.is_err());
    }
    if let Ok(mut v) = rw {
        // Accepted mutable views really are alias-free: brute force every pair.
        let mut seen = std::collections::HashSet::new();
        for a in 0..dims[0] {
            for b in 0..dims[1] {
                for c in 0..dims[2] {
                    for e in 0..dims[3] {
                        assert!(
                            seen.insert(v.offset(a, b, c, e)),
                            "aliasing view accepted: {dims:?} {strides:?}"
                        );
                        *v.get_mut(a, b, c, e) = 1.0;
                    }
                }
            }
        }
    }
    Ok(())
}
