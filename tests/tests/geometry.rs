//! The notes' worked examples of the layer-size rules, and the geometry's error cases.

use simdconv::{
    output_extent, Axis, AxisWindow, Conv2d, ConvGeometry, Dim, Dims, Error, Padding, Pool2d, PoolGeometry,
    Rounding,
};

fn win(input: usize, kernel: usize, stride: usize, pad: usize) -> AxisWindow {
    AxisWindow { input, kernel, stride, dilation: 1, pad_before: pad, pad_after: pad }
}

fn exact(input: usize, kernel: usize, stride: usize, pad: usize) -> Result<usize, Error> {
    output_extent(win(input, kernel, stride, pad), Rounding::Exact, Axis::Width)
}

#[test]
fn notes_7x7_input_3x3_filter() {
    assert_eq!(exact(7, 3, 1, 0), Ok(5));
    assert_eq!(exact(7, 3, 2, 0), Ok(3));
}

#[test]
fn notes_1d_example_w5_f3_p1() {
    assert_eq!(exact(5, 3, 1, 1), Ok(5));
    assert_eq!(exact(5, 3, 2, 1), Ok(3));
    // S = 3: (5 - 3 + 2) = 4 is not divisible by 3.
    assert_eq!(
        exact(5, 3, 3, 1),
        Err(Error::NotExact { axis: Axis::Width, input: 5, effective_kernel: 3, padding: 2, stride: 3 })
    );
}

#[test]
fn notes_w10_f3_s2_is_4_5() {
    let e = exact(10, 3, 2, 0).unwrap_err();
    assert_eq!(
        e,
        Error::NotExact { axis: Axis::Width, input: 10, effective_kernel: 3, padding: 0, stride: 2 }
    );
    let msg = e.to_string();
    assert!(msg.contains("(10 - 3 + 0) / 2 + 1"), "{msg}");
    assert!(msg.contains("4.5"), "{msg}");
    // Floor (PyTorch) and Ceil keep going.
    assert_eq!(output_extent(win(10, 3, 2, 0), Rounding::Floor, Axis::Width), Ok(4));
    assert_eq!(output_extent(win(10, 3, 2, 0), Rounding::Ceil, Axis::Width), Ok(5));
}

#[test]
fn notes_alexnet_227_and_224() {
    let g = ConvGeometry::new(
        Dims::new(1, 3, 227, 227),
        96,
        Conv2d::new(11, 11).stride(4).rounding(Rounding::Exact),
    )
    .unwrap();
    assert_eq!(g.output(), Dims::new(1, 96, 55, 55));
    // 55 x 55 x 96 = 290,400 neurons, each with 11 x 11 x 3 = 363 weights and a bias.
    assert_eq!(g.output().count().unwrap(), 290_400);
    assert_eq!(g.filter().count().unwrap() / 96, 363);
    // With parameter sharing: 96 x 11 x 11 x 3 = 34,848 weights, 34,944 with the biases.
    assert_eq!(g.filter().count().unwrap(), 34_848);
    assert_eq!(g.filter().count().unwrap() + 96, 34_944);
    // Without sharing (a locally-connected layer): 290,400 x 364 = 105,705,600 parameters.
    let local = simdconv::reference::LocalWeightsDims::of(&g);
    assert_eq!(local.weight_count().unwrap() + local.bias_count().unwrap(), 105_705_600);

    // The paper's 224 does not work: (224 - 11) / 4 + 1 = 54.25.
    let e = ConvGeometry::new(
        Dims::new(1, 3, 224, 224),
        96,
        Conv2d::new(11, 11).stride(4).rounding(Rounding::Exact),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::NotExact { input: 224, effective_kernel: 11, padding: 0, stride: 4, .. }),
        "{e:?}"
    );
    // The notes' guess: 3 extra zeros of padding make it work (per side: 1 + 2).
    let g = ConvGeometry::new(
        Dims::new(1, 3, 224, 224),
        96,
        Conv2d::new(11, 11).stride(4).padding(Padding::new(1, 2, 1, 2)).rounding(Rounding::Exact),
    )
    .unwrap();
    assert_eq!(g.output(), Dims::new(1, 96, 55, 55));
}

#[test]
fn notes_numpy_example_11x11x4_f5_s2() {
    let g =
        ConvGeometry::new(Dims::new(1, 4, 11, 11), 2, Conv2d::new(5, 5).stride(2).rounding(Rounding::Exact))
            .unwrap();
    assert_eq!(g.output(), Dims::new(1, 2, 4, 4));
    assert_eq!(g.filter().to_array(), [2, 4, 5, 5]);
}

#[test]
fn notes_demo_5x5x3_k2_f3_s2_p1() {
    let g = ConvGeometry::new(
        Dims::new(1, 3, 5, 5),
        2,
        Conv2d::new(3, 3).stride(2).pad(1).rounding(Rounding::Exact),
    )
    .unwrap();
    assert_eq!(g.output(), Dims::new(1, 2, 3, 3));
    assert_eq!(g.filter().count().unwrap(), 54);
}

#[test]
fn notes_cifar_shapes_and_same_padding() {
    let g = ConvGeometry::new(Dims::new(1, 3, 32, 32), 12, Conv2d::new(3, 3).pad(1)).unwrap();
    assert_eq!(g.output(), Dims::new(1, 12, 32, 32));
    let p = PoolGeometry::new(g.output(), Pool2d::new(2, 2).stride(2)).unwrap();
    assert_eq!(p.output(), Dims::new(1, 12, 16, 16));
    // P = (F - 1) / 2 keeps the size at stride 1.
    for f in [1, 3, 5, 7] {
        let p = Padding::same([32, 32], [f, f], [1, 1], [1, 1]).unwrap();
        assert_eq!(p, Padding::uniform((f - 1) / 2));
    }
    // TensorFlow SAME at stride 2 on an even input: asymmetric.
    assert_eq!(Padding::same([224, 224], [3, 3], [2, 2], [1, 1]).unwrap(), Padding::new(0, 1, 0, 1));
    // Dilated: effective 5x5.
    assert_eq!(Padding::same([10, 10], [3, 3], [1, 1], [2, 2]).unwrap(), Padding::uniform(2));
}

#[test]
fn notes_pooling_sizes() {
    let p = PoolGeometry::new(Dims::new(1, 64, 224, 224), Pool2d::new(2, 2).stride(2)).unwrap();
    assert_eq!(p.output(), Dims::new(1, 64, 112, 112));
    // Overlapping pooling F = 3, S = 2 (AlexNet): 55 -> 27.
    let p = PoolGeometry::new(Dims::new(1, 96, 55, 55), Pool2d::new(3, 3).stride(2)).unwrap();
    assert_eq!(p.output().h, 27);
}

#[test]
fn notes_fc_to_conv_sizes() {
    // FC over 7x7x512 as an F = 7 convolution -> 1x1x4096.
    let g = ConvGeometry::new(Dims::new(1, 512, 7, 7), 4096, Conv2d::new(7, 7)).unwrap();
    assert_eq!(g.output(), Dims::new(1, 4096, 1, 1));
    // A 384x384 image reaches the FC part as 12x12x512: the converted net gives 6x6 scores.
    let g = ConvGeometry::new(Dims::new(1, 512, 12, 12), 4096, Conv2d::new(7, 7)).unwrap();
    assert_eq!((g.output().h, g.output().w), (6, 6));
    assert_eq!(384 / 32, 12);
}

#[test]
fn dilation_effective_kernel() {
    // The notes: dilation spreads w[0] x[0] + w[1] x[2] + w[2] x[4].
    let w = AxisWindow { input: 9, kernel: 3, stride: 1, dilation: 2, pad_before: 0, pad_after: 0 };
    assert_eq!(output_extent(w, Rounding::Exact, Axis::Height), Ok(5));
    let e = output_extent(AxisWindow { input: 4, ..w }, Rounding::Floor, Axis::Height).unwrap_err();
    assert_eq!(e, Error::KernelLargerThanInput { axis: Axis::Height, effective_kernel: 5, padded_input: 4 });
}

#[test]
fn ceil_mode_follows_pytorch() {
    // 6 wide, window 3, stride 2: floor 2, ceil 3 (last window starts at 4 < 6).
    let w = win(6, 3, 2, 0);
    assert_eq!(output_extent(w, Rounding::Ceil, Axis::Width), Ok(3));
    assert_eq!(output_extent(w, Rounding::Floor, Axis::Width), Ok(2));
    // 5 wide, window 2, stride 2, pad 1: 3.5 windows; the extra one would start at 6 >= 5 + 1: dropped.
    let w = win(5, 2, 2, 1);
    assert_eq!(output_extent(w, Rounding::Floor, Axis::Width), Ok(3));
    assert_eq!(output_extent(w, Rounding::Ceil, Axis::Width), Ok(3));
    // 5 wide, window 2, stride 2, no pad: ceil keeps the window that starts at 4.
    assert_eq!(output_extent(win(5, 2, 2, 0), Rounding::Ceil, Axis::Width), Ok(3));
    assert_eq!(output_extent(win(5, 2, 2, 0), Rounding::Floor, Axis::Width), Ok(2));
}

#[test]
fn invalid_geometry_errors_carry_numbers() {
    let zero = ConvGeometry::new(Dims::new(1, 3, 0, 5), 4, Conv2d::new(3, 3)).unwrap_err();
    assert_eq!(zero, Error::Zero { dim: Dim::Height });
    let stride = ConvGeometry::new(Dims::new(1, 3, 5, 5), 4, Conv2d::new(3, 3).stride(0)).unwrap_err();
    assert_eq!(stride, Error::Zero { dim: Dim::StrideHeight });
    let dil = ConvGeometry::new(Dims::new(1, 3, 5, 5), 4, Conv2d::new(3, 3).dilation_hw(1, 0)).unwrap_err();
    assert_eq!(dil, Error::Zero { dim: Dim::DilationWidth });
    let groups = ConvGeometry::new(Dims::new(1, 6, 5, 5), 4, Conv2d::new(3, 3).groups(3)).unwrap_err();
    assert_eq!(groups, Error::GroupsMismatch { dim: Dim::OutChannels, channels: 4, groups: 3 });
    let groups = ConvGeometry::new(Dims::new(1, 5, 5, 5), 4, Conv2d::new(3, 3).groups(2)).unwrap_err();
    assert_eq!(groups, Error::GroupsMismatch { dim: Dim::Channels, channels: 5, groups: 2 });
    let big = ConvGeometry::new(Dims::new(1, 1, 5, 5), 1, Conv2d::new(8, 3).pad(1)).unwrap_err();
    assert_eq!(
        big,
        Error::KernelLargerThanInput { axis: Axis::Height, effective_kernel: 8, padded_input: 7 }
    );
    for e in [zero, stride, dil, groups, big] {
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn overflow_is_an_error_not_a_wrap() {
    let m = usize::MAX;
    assert!(matches!(
        output_extent(
            AxisWindow { input: m, kernel: 2, stride: 1, dilation: 1, pad_before: 1, pad_after: 0 },
            Rounding::Floor,
            Axis::Width
        ),
        Err(Error::Overflow { .. })
    ));
    assert!(matches!(
        output_extent(
            AxisWindow { input: 5, kernel: m, stride: 1, dilation: 2, pad_before: 0, pad_after: 0 },
            Rounding::Floor,
            Axis::Width
        ),
        Err(Error::Overflow { .. })
    ));
    assert!(matches!(
        ConvGeometry::new(Dims::new(m / 2, 4, 1, 1), 1, Conv2d::new(1, 1)),
        Err(Error::Overflow { .. })
    ));
    assert!(matches!(Padding::same([m, 3], [3, 3], [1, 1], [1, 1]), Err(Error::Overflow { .. })));
    // Ceil near the top of the range does not wrap.
    let w = AxisWindow { input: m - 1, kernel: 2, stride: 2, dilation: 1, pad_before: 0, pad_after: 0 };
    assert!(output_extent(w, Rounding::Ceil, Axis::Width).is_ok());
}

#[test]
fn pooling_rejects_windows_of_padding() {
    let e = PoolGeometry::new(Dims::new(1, 1, 4, 4), Pool2d::new(2, 2).pad(2)).unwrap_err();
    assert_eq!(e, Error::PoolPaddingTooLarge { axis: Axis::Height, padding: 2, effective_kernel: 2 });
    let e = PoolGeometry::new(Dims::new(1, 1, 2, 8), Pool2d::new(2, 1).dilation_hw(3, 1).pad(2)).unwrap_err();
    assert_eq!(e, Error::PoolDilationTooLarge { axis: Axis::Height, dilation: 3, input: 2 });
}

/// Found by the geometry fuzz target: formatting NotExact multiplied the remainder by 10 in
/// usize and overflowed for huge strides.
#[test]
fn regression_not_exact_display_with_extreme_numbers() {
    for (input, padding, stride) in
        [(usize::MAX, usize::MAX, usize::MAX - 1), (7, 0, 0), (usize::MAX, 0, usize::MAX / 3)]
    {
        let e = Error::NotExact { axis: Axis::Width, input, effective_kernel: 1, padding, stride };
        assert!(e.to_string().contains("is not an integer"));
    }
}

/// Found by the geometry fuzz target: Ceil rounding multiplied the window count by a huge
/// stride and overflowed.
#[test]
fn regression_ceil_with_huge_stride() {
    let w =
        AxisWindow { input: 10, kernel: 3, stride: usize::MAX / 2, dilation: 1, pad_before: 0, pad_after: 0 };
    assert_eq!(output_extent(w, Rounding::Ceil, Axis::Width), Ok(1));
    let w = AxisWindow {
        input: usize::MAX - 8,
        kernel: 1,
        stride: usize::MAX / 3,
        dilation: 1,
        pad_before: 4,
        pad_after: 4,
    };
    assert_eq!(output_extent(w, Rounding::Ceil, Axis::Width), Ok(3));
}
