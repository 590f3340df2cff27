//! Network planning: shapes, parameter and activation counts, FLOPs, workspace and memory
//! of a sequential net, checked with the same geometry rules as the kernels.
//!
//! The notes' common architecture is
//! `INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC`; a net is a slice of
//! [`LayerSpec`]s (ReLU is fused into the layer it follows, as the kernels fuse it).
//! [`Planner`] walks the slice and yields one [`LayerPlan`] per layer without allocating;
//! [`plan_totals`] sums them; under `alloc`, [`plan`] collects both.
//!
//! Memory follows the notes' "computational considerations": at inference only two
//! consecutive activations need to live at once, so it needs the largest
//! `input + output` pair plus the parameters; training keeps every activation and its
//! gradient, and parameters three times (values, gradients, a momentum / Adagrad /
//! RMSProp cache). Counts are elements; bytes assume f32 (4 bytes each).
//!
//! ```
//! use simdconv::plan::{plan_totals, LayerSpec, VGG16};
//! use simdconv::{Dims, Layout};
//! let t = plan_totals(Dims::new(1, 3, 224, 224), &VGG16, Layout::Nchw)?;
//! assert_eq!(t.weights, 138_344_128); // the notes' "138M parameters" (weights only)
//! assert_eq!(t.activations, 15_237_608); // input + every layer's output
//! # Ok::<(), simdconv::Error>(())
//! ```

use core::fmt;

use crate::conv::{conv2d_workspace_len, Algorithm};
use crate::error::{Dim, Error, Result};
use crate::geometry::{checked_product, Conv2d, ConvGeometry, Dims, FcGeometry, Lrn, Pool2d, PoolGeometry};
use crate::local::locally_connected_workspace_len;
use crate::lrn::lrn_workspace_len;
use crate::tensor::Layout;

/// One layer of a sequential net.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerSpec {
    /// Convolution with `out_channels` filters (bias included), optionally followed by a
    /// fused ReLU.
    Conv {
        /// Number of filters `K`.
        out_channels: usize,
        /// Kernel, stride, padding, dilation, groups.
        conv: Conv2d,
        /// A ReLU follows (applied in place: no extra activation memory).
        relu: bool,
    },
    /// Pooling (max, average or L2: same shapes and counts).
    Pool(Pool2d),
    /// Fully-connected layer over the flattened input, bias included.
    Fc {
        /// Output neurons.
        outputs: usize,
        /// A ReLU follows (in place).
        relu: bool,
    },
    /// Locally-connected layer (unshared weights and biases per output position).
    LocallyConnected {
        /// Filters per position.
        out_channels: usize,
        /// Kernel, stride, padding, dilation, groups.
        conv: Conv2d,
        /// A ReLU follows (in place).
        relu: bool,
    },
    /// Local response normalisation across channels.
    Lrn(Lrn),
}

impl LayerSpec {
    /// `CONV -> RELU`.
    #[must_use]
    pub const fn conv_relu(out_channels: usize, conv: Conv2d) -> Self {
        LayerSpec::Conv { out_channels, conv, relu: true }
    }
    /// `FC -> RELU`.
    #[must_use]
    pub const fn fc_relu(outputs: usize) -> Self {
        LayerSpec::Fc { outputs, relu: true }
    }
    /// A final `FC` (class scores, no ReLU).
    #[must_use]
    pub const fn fc(outputs: usize) -> Self {
        LayerSpec::Fc { outputs, relu: false }
    }
    /// `POOL`.
    #[must_use]
    pub const fn pool(pool: Pool2d) -> Self {
        LayerSpec::Pool(pool)
    }
}

/// A short name in the notes' style: `CONV3-64`, `POOL2`, `FC`, `LOCAL3-64`, `LRN5`.
impl fmt::Display for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayerSpec::Conv { out_channels, conv, .. } => {
                write!(f, "CONV{}-{}", conv.window().kernel()[0], out_channels)
            }
            LayerSpec::Pool(p) => write!(f, "POOL{}", p.window().kernel()[0]),
            LayerSpec::Fc { .. } => f.write_str("FC"),
            LayerSpec::LocallyConnected { out_channels, conv, .. } => {
                write!(f, "LOCAL{}-{}", conv.window().kernel()[0], out_channels)
            }
            LayerSpec::Lrn(p) => write!(f, "LRN{}", p.size),
        }
    }
}

/// VGGNet-16 (configuration D) as the notes tabulate it: 3x3 convolutions with stride 1
/// and padding 1, 2x2 max pooling with stride 2, then FC-4096, FC-4096, FC-1000.
pub const VGG16: [LayerSpec; 21] = {
    const fn c(k: usize) -> LayerSpec {
        LayerSpec::conv_relu(k, Conv2d::new(3, 3).pad(1))
    }
    const P: LayerSpec = LayerSpec::pool(Pool2d::new(2, 2).stride(2));
    [
        c(64),
        c(64),
        P,
        c(128),
        c(128),
        P,
        c(256),
        c(256),
        c(256),
        P,
        c(512),
        c(512),
        c(512),
        P,
        c(512),
        c(512),
        c(512),
        P,
        LayerSpec::fc_relu(4096),
        LayerSpec::fc_relu(4096),
        LayerSpec::fc(1000),
    ]
};

/// True when `layers` follows the notes' pattern
/// `[[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC`: convolutions with ReLU and
/// pools in any order, then FC layers with ReLU, then exactly one final FC without.
#[must_use]
pub fn matches_notes_pattern(layers: &[LayerSpec]) -> bool {
    let Some((last, body)) = layers.split_last() else { return false };
    if !matches!(last, LayerSpec::Fc { relu: false, .. }) {
        return false;
    }
    let split = body.iter().position(|l| matches!(l, LayerSpec::Fc { .. })).unwrap_or(body.len());
    let (features, head) = body.split_at(split);
    features.iter().all(|l| matches!(l, LayerSpec::Conv { relu: true, .. } | LayerSpec::Pool(_)))
        && head.iter().all(|l| matches!(l, LayerSpec::Fc { relu: true, .. }))
}

/// The plan of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerPlan {
    /// The layer.
    pub spec: LayerSpec,
    /// Input dims `[n, c, h, w]`.
    pub input: Dims,
    /// Output dims (an FC layer's output is `[n, outputs, 1, 1]`).
    pub output: Dims,
    /// Output activations (elements): the notes' "memory" column.
    pub activations: usize,
    /// Weights: the notes' "weights" column.
    pub weights: usize,
    /// Biases (the notes' table leaves them out).
    pub biases: usize,
    /// Floating-point operations of the forward pass: `2 * multiply-accumulates` for
    /// convolution, locally-connected and FC layers (bias and ReLU not counted); one per
    /// window tap for pooling; `2 * size + 4` per element for LRN.
    pub flops: u64,
    /// f32 elements of workspace this crate's kernel needs for the layer
    /// (`conv2d_workspace_len` with [`Algorithm::Auto`] for convolutions).
    pub workspace: usize,
}

impl LayerPlan {
    /// Weights plus biases.
    #[must_use]
    pub const fn params(&self) -> usize {
        self.weights.saturating_add(self.biases)
    }
}

/// Sums over a whole net.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanTotals {
    /// Number of layers.
    pub layers: usize,
    /// The net's output dims.
    pub output: Dims,
    /// Every activation: the input plus each layer's output (elements).
    pub activations: usize,
    /// Every weight.
    pub weights: usize,
    /// Every bias.
    pub biases: usize,
    /// Forward FLOPs.
    pub flops: u64,
    /// The largest workspace any one layer needs (it is reused layer to layer).
    pub max_workspace: usize,
    /// The largest `input + output` activation pair of one layer.
    pub peak_pair: usize,
}

impl PlanTotals {
    /// Weights plus biases.
    #[must_use]
    pub const fn params(&self) -> usize {
        self.weights.saturating_add(self.biases)
    }

    /// f32 bytes to run inference keeping only two consecutive activations:
    /// `4 * (peak_pair + params)` (workspace not included; add `4 * max_workspace`).
    #[must_use]
    pub const fn inference_bytes(&self) -> u64 {
        (self.peak_pair as u64).saturating_add(self.params() as u64).saturating_mul(4)
    }

    /// f32 bytes to train: every activation and its gradient, and the parameters three
    /// times (values, gradients, optimiser cache): `4 * (2 * activations + 3 * params)`.
    #[must_use]
    pub const fn training_bytes(&self) -> u64 {
        (self.activations as u64)
            .saturating_mul(2)
            .saturating_add((self.params() as u64).saturating_mul(3))
            .saturating_mul(4)
    }
}

/// Plans a sequential net layer by layer: an iterator of `Result<LayerPlan>` that stops
/// after the first error (a geometry the kernels would reject).
#[derive(Clone, Debug)]
pub struct Planner<'a> {
    layers: core::slice::Iter<'a, LayerSpec>,
    current: Dims,
    layout: Layout,
    failed: bool,
}

impl<'a> Planner<'a> {
    /// Plans `layers` applied to an `input`-shaped tensor in `layout` (the layout only
    /// matters for workspace sizes).
    #[must_use]
    pub fn new(input: Dims, layers: &'a [LayerSpec], layout: Layout) -> Self {
        Planner { layers: layers.iter(), current: input, layout, failed: false }
    }
}

fn ovf() -> Error {
    Error::Overflow { dim: Dim::Features }
}

fn plan_layer(spec: LayerSpec, input: Dims, layout: Layout) -> Result<LayerPlan> {
    input.check_nonzero()?;
    let (output, weights, biases, flops, workspace) = match spec {
        LayerSpec::Conv { out_channels, conv, .. } => {
            let g = ConvGeometry::new(input, out_channels, conv)?;
            let ws = conv2d_workspace_len(&g, Algorithm::Auto, layout)?;
            (g.output(), g.filter().count()?, out_channels, g.flops(), ws)
        }
        LayerSpec::LocallyConnected { out_channels, conv, .. } => {
            let g = ConvGeometry::new(input, out_channels, conv)?;
            let ld = crate::reference::LocalWeightsDims::of(&g);
            let ws = locally_connected_workspace_len(&g)?;
            (g.output(), ld.weight_count()?, ld.bias_count()?, g.flops(), ws)
        }
        LayerSpec::Pool(p) => {
            let g = PoolGeometry::new(input, p)?;
            let [kh, kw] = p.window().kernel();
            let taps = (g.output().count()? as u64)
                .checked_mul((kh as u64).saturating_mul(kw as u64))
                .ok_or_else(ovf)?;
            (g.output(), 0, 0, taps, 0)
        }
        LayerSpec::Fc { outputs, .. } => {
            let inputs = checked_product(&[input.c, input.h, input.w], Dim::Features)?;
            let g = FcGeometry::new(input.n, inputs, outputs)?;
            let macs = (input.n as u64)
                .checked_mul(inputs as u64)
                .and_then(|v| v.checked_mul(outputs as u64))
                .ok_or_else(ovf)?;
            (Dims::new(input.n, outputs, 1, 1), g.inputs() * g.outputs(), outputs, macs.saturating_mul(2), 0)
        }
        LayerSpec::Lrn(p) => {
            let ws = lrn_workspace_len(&p, input, layout)?;
            let per = (p.size as u64).saturating_mul(2).saturating_add(4);
            let flops = (input.count()? as u64).checked_mul(per).ok_or_else(ovf)?;
            (input, 0, 0, flops, ws)
        }
    };
    Ok(LayerPlan { spec, input, output, activations: output.count()?, weights, biases, flops, workspace })
}

impl Iterator for Planner<'_> {
    type Item = Result<LayerPlan>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let spec = *self.layers.next()?;
        let r = plan_layer(spec, self.current, self.layout);
        match &r {
            Ok(p) => self.current = p.output,
            Err(_) => self.failed = true,
        }
        Some(r)
    }
}

/// The totals of a sequential net (see [`PlanTotals`]); errors on the first layer whose
/// geometry the kernels would reject.
pub fn plan_totals(input: Dims, layers: &[LayerSpec], layout: Layout) -> Result<PlanTotals> {
    let mut t = PlanTotals {
        layers: 0,
        output: input,
        activations: input.count()?,
        weights: 0,
        biases: 0,
        flops: 0,
        max_workspace: 0,
        peak_pair: 0,
    };
    for row in Planner::new(input, layers, layout) {
        let row = row?;
        t.layers += 1;
        t.output = row.output;
        t.activations = t.activations.checked_add(row.activations).ok_or_else(ovf)?;
        t.weights = t.weights.checked_add(row.weights).ok_or_else(ovf)?;
        t.biases = t.biases.checked_add(row.biases).ok_or_else(ovf)?;
        t.flops = t.flops.checked_add(row.flops).ok_or_else(ovf)?;
        t.max_workspace = t.max_workspace.max(row.workspace);
        // Both counts were computed from validated geometries; their sum may still overflow.
        let pair = row.input.count()?.checked_add(row.activations).ok_or_else(ovf)?;
        t.peak_pair = t.peak_pair.max(pair);
    }
    Ok(t)
}

/// Every layer's plan and the totals (allocates the row vector).
#[cfg(feature = "alloc")]
pub fn plan(
    input: Dims,
    layers: &[LayerSpec],
    layout: Layout,
) -> Result<(alloc::vec::Vec<LayerPlan>, PlanTotals)> {
    let rows = Planner::new(input, layers, layout).collect::<Result<alloc::vec::Vec<_>>>()?;
    let totals = plan_totals(input, layers, layout)?;
    Ok((rows, totals))
}
