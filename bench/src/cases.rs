//! The benchmark cases: the standard suite (named as in the anchors table), the quick
//! suite, and the problem description each case carries.

use simdconv::{AvgPoolOptions, Conv2d, ConvGeometry, Dims, Padding, Pool2d, PoolGeometry, Rounding};

/// A convolution problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input dims `[n, c, h, w]`.
    pub input: Dims,
    /// Output channels (filters).
    pub k: usize,
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Per-side padding.
    pub padding: Padding,
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
    /// Output rounding.
    pub rounding: Rounding,
    /// Fuse a per-channel bias into the store.
    pub bias: bool,
    /// Fuse a ReLU into the store.
    pub relu: bool,
}

impl ConvSpec {
    /// `c x h x w -> k` with a square kernel `f`, stride `s`, padding `p`, batch 1, and
    /// everything else at its default (dilation 1, one group, floor rounding, no epilogue).
    #[must_use]
    pub const fn square(c: usize, h: usize, w: usize, k: usize, f: usize, s: usize, p: usize) -> Self {
        ConvSpec {
            input: Dims::new(1, c, h, w),
            k,
            kernel: [f, f],
            stride: [s, s],
            padding: Padding::uniform(p),
            dilation: [1, 1],
            groups: 1,
            rounding: Rounding::Floor,
            bias: false,
            relu: false,
        }
    }

    /// Sets the dilation on both axes.
    #[must_use]
    pub const fn dilated(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }

    /// Sets the number of groups.
    #[must_use]
    pub const fn grouped(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }

    /// Fuses bias and ReLU.
    #[must_use]
    pub const fn bias_relu(mut self) -> Self {
        self.bias = true;
        self.relu = true;
        self
    }

    /// The validated geometry.
    pub fn geometry(&self) -> Result<ConvGeometry, simdconv::Error> {
        let conv = Conv2d::new(self.kernel[0], self.kernel[1])
            .stride_hw(self.stride[0], self.stride[1])
            .dilation_hw(self.dilation[0], self.dilation[1])
            .padding(self.padding)
            .groups(self.groups)
            .rounding(self.rounding);
        ConvGeometry::new(self.input, self.k, conv)
    }
}

/// Which pooling operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Max pooling over a window.
    Max,
    /// Average pooling over a window (with the given divisor rule).
    Avg(AvgPoolOptions),
    /// L2-norm pooling over a window.
    L2,
    /// Global average pooling (one value per channel).
    GlobalAvg,
    /// Global max pooling (one value per channel).
    GlobalMax,
}

impl PoolKind {
    /// The name used in the `op` column and the `--shape` grammar.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            PoolKind::Max => "maxpool",
            PoolKind::Avg(_) => "avgpool",
            PoolKind::L2 => "l2pool",
            PoolKind::GlobalAvg => "global_avgpool",
            PoolKind::GlobalMax => "global_maxpool",
        }
    }

    /// True for the global kinds (window = the whole plane).
    #[must_use]
    pub const fn is_global(self) -> bool {
        matches!(self, PoolKind::GlobalAvg | PoolKind::GlobalMax)
    }
}

/// A pooling problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    /// Which pooling.
    pub kind: PoolKind,
    /// Input dims `[n, c, h, w]`.
    pub input: Dims,
    /// Window `[kh, kw]` (ignored for the global kinds).
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Per-side padding.
    pub padding: Padding,
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Output rounding.
    pub rounding: Rounding,
}

impl PoolSpec {
    /// `c x h x w` pooled by a square window `f` with stride `s`, batch 1, no padding.
    #[must_use]
    pub const fn square(kind: PoolKind, c: usize, h: usize, w: usize, f: usize, s: usize) -> Self {
        PoolSpec {
            kind,
            input: Dims::new(1, c, h, w),
            kernel: [f, f],
            stride: [s, s],
            padding: Padding::ZERO,
            dilation: [1, 1],
            rounding: Rounding::Floor,
        }
    }

    /// Global pooling of `c x h x w`, batch 1.
    #[must_use]
    pub const fn global(kind: PoolKind, c: usize, h: usize, w: usize) -> Self {
        PoolSpec::square(kind, c, h, w, 1, 1)
    }

    /// The validated geometry (for the global kinds: a window the size of the plane).
    pub fn geometry(&self) -> Result<PoolGeometry, simdconv::Error> {
        if self.kind.is_global() {
            return PoolGeometry::new(self.input, Pool2d::new(self.input.h, self.input.w));
        }
        let pool = Pool2d::new(self.kernel[0], self.kernel[1])
            .stride_hw(self.stride[0], self.stride[1])
            .dilation_hw(self.dilation[0], self.dilation[1])
            .padding(self.padding)
            .rounding(self.rounding);
        PoolGeometry::new(self.input, pool)
    }
}

/// What a case computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A forward convolution.
    Conv(ConvSpec),
    /// The data gradient of a convolution (`simdconv::conv2d_backward_data`, `dy, w ->
    /// dx`) with `BackwardAlgorithm::Auto`. The spec's bias and ReLU are ignored.
    ConvBackwardData(ConvSpec),
    /// The weight gradient of a convolution (`simdconv::conv2d_backward_filter`, `x, dy
    /// -> dw`) with `BackwardAlgorithm::Auto`. The spec's bias and ReLU are ignored.
    ConvBackwardFilter(ConvSpec),
    /// A pooling.
    Pool(PoolSpec),
}

impl Op {
    /// The `op` column: `conv`, `conv_bwd_data`, `conv_bwd_filter` or the pooling kind.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "conv",
            Op::ConvBackwardData(_) => BWD_DATA_OP,
            Op::ConvBackwardFilter(_) => BWD_FILTER_OP,
            Op::Pool(p) => p.kind.name(),
        }
    }

    /// The convolution of a forward or backward convolution case.
    #[must_use]
    pub const fn conv_spec(&self) -> Option<&ConvSpec> {
        match self {
            Op::Conv(c) | Op::ConvBackwardData(c) | Op::ConvBackwardFilter(c) => Some(c),
            Op::Pool(_) => None,
        }
    }

    /// True for the backward convolution ops.
    #[must_use]
    pub const fn is_backward(&self) -> bool {
        matches!(self, Op::ConvBackwardData(_) | Op::ConvBackwardFilter(_))
    }
}

/// The `op` column of a data-gradient case.
pub const BWD_DATA_OP: &str = "conv_bwd_data";
/// The `op` column of a weight-gradient case.
pub const BWD_FILTER_OP: &str = "conv_bwd_filter";

/// The name of the forward case a backward case belongs to: `vgg_conv3_2_bwd_data` and
/// `vgg_conv3_2_bwd_filter` belong to `vgg_conv3_2`. `None` for other names.
#[must_use]
pub fn forward_case_name(backward_name: &str) -> Option<&str> {
    backward_name.strip_suffix("_bwd_data").or_else(|| backward_name.strip_suffix("_bwd_filter"))
}

/// The two backward cases of forward convolution `name`: `<name>_bwd_data` and
/// `<name>_bwd_filter`.
#[must_use]
pub fn backward_cases(name: &str, spec: ConvSpec) -> [Case; 2] {
    [
        Case::new(&format!("{name}_bwd_data"), Op::ConvBackwardData(spec)),
        Case::new(&format!("{name}_bwd_filter"), Op::ConvBackwardFilter(spec)),
    ]
}

/// A named benchmark case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// The name (the anchors table's for the standard suite).
    pub name: String,
    /// The problem.
    pub op: Op,
}

impl Case {
    /// A case named `name`.
    #[must_use]
    pub fn new(name: &str, op: Op) -> Self {
        Case { name: name.to_string(), op }
    }

    /// Floating-point operations of one call: `2 x MACs` of the forward convolution for a
    /// convolution and for either of its backward passes (each does as many multiply-adds
    /// as the forward), `None` for pooling (memory-bound: measured in bytes, see
    /// [`Case::bytes_moved`]).
    pub fn flops(&self) -> Result<Option<u64>, simdconv::Error> {
        match self.op.conv_spec() {
            Some(c) => Ok(Some(c.geometry()?.flops())),
            None => Ok(None),
        }
    }

    /// Bytes a call must move at least: the input read once and the output written once
    /// (f32). Used for pooling's GB/s.
    pub fn bytes_moved(&self) -> Result<u64, simdconv::Error> {
        let (i, o) = match &self.op {
            Op::Conv(c) | Op::ConvBackwardData(c) | Op::ConvBackwardFilter(c) => {
                let g = c.geometry()?;
                (g.input().count()?, g.output().count()?)
            }
            Op::Pool(p) => {
                let g = p.geometry()?;
                (g.input().count()?, g.output().count()?)
            }
        };
        Ok((i as u64 + o as u64) * 4)
    }
}

const AVG_PYTORCH: PoolKind = PoolKind::Avg(AvgPoolOptions::PYTORCH);

/// The standard suite: the anchors table's cases, batch 1, shapes as listed there, then
/// the data and weight gradients of four of its convolutions (no anchors for those).
#[must_use]
pub fn standard_suite() -> Vec<Case> {
    use ConvSpec as C;
    use PoolSpec as P;
    let mut suite = vec![
        Case::new("alexnet_conv1", Op::Conv(C::square(3, 227, 227, 96, 11, 4, 0))),
        Case::new("vgg_conv1_2", Op::Conv(C::square(64, 224, 224, 64, 3, 1, 1))),
        Case::new("vgg_conv3_2", Op::Conv(C::square(256, 56, 56, 256, 3, 1, 1))),
        Case::new("vgg_conv5_2", Op::Conv(C::square(512, 14, 14, 512, 3, 1, 1))),
        // (224 + 6 - 7) / 2 + 1 = 112.5: PyTorch's floor rounding gives 112x112.
        Case::new("resnet_conv1", Op::Conv(C::square(3, 224, 224, 64, 7, 2, 3))),
        Case::new("resnet_1x1_reduce", Op::Conv(C::square(256, 56, 56, 64, 1, 1, 0))),
        Case::new("resnet_1x1_expand", Op::Conv(C::square(64, 56, 56, 256, 1, 1, 0))),
        Case::new("googlenet_1x1", Op::Conv(C::square(480, 14, 14, 192, 1, 1, 0))),
        Case::new("dilated_3x3_d2", Op::Conv(C::square(64, 112, 112, 64, 3, 1, 2).dilated(2))),
        Case::new("soumith_l5", Op::Conv(C::square(384, 13, 13, 384, 3, 1, 1))),
        Case::new("depthwise_3x3", Op::Conv(C::square(128, 56, 56, 128, 3, 1, 1).grouped(128))),
        Case::new("conv_bias_relu", Op::Conv(C::square(256, 56, 56, 256, 3, 1, 1).bias_relu())),
        Case::new("maxpool_2x2_s2", Op::Pool(P::square(PoolKind::Max, 64, 224, 224, 2, 2))),
        Case::new("maxpool_3x3_s2", Op::Pool(P::square(PoolKind::Max, 96, 55, 55, 3, 2))),
        Case::new("avgpool_2x2_s2", Op::Pool(P::square(AVG_PYTORCH, 64, 112, 112, 2, 2))),
        Case::new("global_avgpool", Op::Pool(P::global(PoolKind::GlobalAvg, 2048, 7, 7))),
    ];
    let forward: Vec<(String, ConvSpec)> =
        ["vgg_conv3_2", "resnet_1x1_reduce", "alexnet_conv1", "dilated_3x3_d2"]
            .iter()
            .filter_map(|name| {
                suite.iter().find(|c| c.name == *name).and_then(|c| match c.op {
                    Op::Conv(spec) => Some((c.name.clone(), spec)),
                    _ => None,
                })
            })
            .collect();
    for (name, spec) in forward {
        suite.extend(backward_cases(&name, spec));
    }
    suite
}

/// The quick suite: small problems covering every op and algorithm family; the whole
/// suite runs in seconds.
#[must_use]
pub fn quick_suite() -> Vec<Case> {
    use ConvSpec as C;
    use PoolSpec as P;
    let mut l2 = P::square(PoolKind::L2, 16, 32, 32, 3, 2);
    l2.padding = Padding::uniform(1);
    let conv3x3 = C::square(32, 28, 28, 32, 3, 1, 1);
    let [bwd_data, bwd_filter] = backward_cases("quick_conv3x3", conv3x3);
    vec![
        Case::new("quick_conv3x3", Op::Conv(conv3x3)),
        bwd_data,
        bwd_filter,
        Case::new("quick_stem_7x7_s2", Op::Conv(C::square(3, 64, 64, 16, 7, 2, 3))),
        Case::new("quick_1x1", Op::Conv(C::square(64, 28, 28, 64, 1, 1, 0))),
        Case::new("quick_dilated", Op::Conv(C::square(16, 32, 32, 16, 3, 1, 2).dilated(2))),
        Case::new("quick_depthwise", Op::Conv(C::square(32, 32, 32, 32, 3, 1, 1).grouped(32))),
        Case::new("quick_bias_relu", Op::Conv(C::square(32, 28, 28, 32, 3, 1, 1).bias_relu())),
        Case::new("quick_maxpool", Op::Pool(P::square(PoolKind::Max, 32, 64, 64, 2, 2))),
        Case::new("quick_avgpool", Op::Pool(P::square(AVG_PYTORCH, 32, 32, 32, 2, 2))),
        Case::new("quick_l2pool", Op::Pool(l2)),
        Case::new("quick_global_avg", Op::Pool(P::global(PoolKind::GlobalAvg, 256, 7, 7))),
        Case::new("quick_global_max", Op::Pool(P::global(PoolKind::GlobalMax, 256, 7, 7))),
    ]
}

/// A suite by name (`standard` or `quick`).
#[must_use]
pub fn suite(name: &str) -> Option<Vec<Case>> {
    match name {
        "standard" => Some(standard_suite()),
        "quick" => Some(quick_suite()),
        _ => None,
    }
}

/// A case of either suite by name.
#[must_use]
pub fn find_case(name: &str) -> Option<Case> {
    standard_suite().into_iter().chain(quick_suite()).find(|c| c.name == name)
}
