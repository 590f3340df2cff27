//! What established engines reach on the standard suite: the competitor timings, as data.
//!
//! Copied from the project's `shared/anchors.md` ("What established engines reach on the
//! standard suite, on this machine kind"), see [`SOURCE`]. Timings are median
//! milliseconds per call, batch 1, float32.

/// Where the numbers come from.
pub const SOURCE: &str = "shared/anchors.md: median ms per call, batch 1, f32, on a 2-core \
     Sapphire Rapids VM (AVX-512); ONNX Runtime 1.32 (MLAS), OpenVINO 2026.4 (oneDNN), \
     XNNPACK via LiteRT 2.3 (NHWC), ncnn (Winograd on 3x3), TensorFlow 2.21 (oneDNN)";

/// The engines, in the table's column order.
pub const ENGINES: [&str; 5] = ["ONNX Runtime", "OpenVINO", "XNNPACK", "ncnn", "TensorFlow"];

/// One row of the anchors table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anchor {
    /// The case name.
    pub case: &'static str,
    /// The table's MFLOP column (for pooling: window taps, in millions).
    pub mflop: f64,
    /// Milliseconds per engine (in [`ENGINES`] order), one thread.
    pub one_thread: [f64; 5],
    /// Milliseconds per engine, two threads.
    pub two_threads: [f64; 5],
}

impl Anchor {
    /// The fastest engine and its time at `threads` (only 1 and 2 were measured).
    #[must_use]
    pub fn best(&self, threads: usize) -> Option<(&'static str, f64)> {
        let row = match threads {
            1 => &self.one_thread,
            2 => &self.two_threads,
            _ => return None,
        };
        let (i, ms) = row.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1))?;
        Some((ENGINES[i], *ms))
    }
}

macro_rules! a {
    ($case:literal, $mflop:literal, [$($one:literal),*], [$($two:literal),*]) => {
        Anchor { case: $case, mflop: $mflop, one_thread: [$($one),*], two_threads: [$($two),*] }
    };
}

/// The anchors table.
pub const ANCHORS: [Anchor; 16] = [
    a!("alexnet_conv1", 210.8, [1.505, 1.757, 2.138, 2.981, 2.132], [0.726, 1.099, 1.189, 1.950, 1.403]),
    a!(
        "vgg_conv1_2",
        3699.4,
        [28.873, 46.380, 38.321, 38.663, 25.708],
        [13.372, 24.979, 18.822, 22.081, 14.015]
    ),
    a!(
        "vgg_conv3_2",
        3699.4,
        [29.195, 27.819, 37.928, 14.012, 30.221],
        [11.966, 14.156, 19.339, 8.515, 16.037]
    ),
    a!("vgg_conv5_2", 924.8, [5.942, 5.815, 9.912, 4.081, 9.764], [2.891, 3.039, 4.727, 2.168, 6.158]),
    a!("resnet_conv1", 236.0, [1.815, 4.541, 2.406, 3.700, 2.598], [0.928, 2.493, 1.196, 2.908, 1.598]),
    a!("resnet_1x1_reduce", 102.8, [0.971, 1.361, 1.034, 1.513, 1.379], [0.509, 0.848, 0.364, 1.067, 1.224]),
    a!("resnet_1x1_expand", 102.8, [1.160, 2.077, 0.725, 1.692, 1.489], [0.629, 1.362, 0.351, 1.184, 1.571]),
    a!("googlenet_1x1", 36.1, [0.257, 0.300, 0.209, 0.368, 0.980], [0.147, 0.246, 0.134, 0.243, 0.941]),
    a!("dilated_3x3_d2", 924.8, [6.288, 9.384, 9.120, 15.371, 7.095], [3.234, 5.523, 4.796, 8.397, 4.523]),
    a!("soumith_l5", 448.6, [2.900, 2.724, 4.675, 2.236, 4.360], [1.595, 1.600, 2.408, 1.057, 3.930]),
    a!("depthwise_3x3", 7.2, [0.416, 0.964, 0.152, 0.865, 0.865], [0.226, 0.661, 0.071, 0.459, 1.081]),
    a!(
        "conv_bias_relu",
        3699.4,
        [23.136, 27.312, 35.794, 15.872, 34.822],
        [11.681, 17.662, 19.580, 8.341, 18.667]
    ),
    a!("maxpool_2x2_s2", 3.2, [2.031, 2.948, 0.557, 2.590, 1.314], [0.941, 1.761, 0.338, 1.536, 1.115]),
    a!("maxpool_3x3_s2", 0.6, [0.188, 0.145, 0.039, 0.187, 0.489], [0.050, 0.119, 0.021, 0.093, 0.788]),
    a!("avgpool_2x2_s2", 0.8, [0.496, 0.571, 0.139, 0.570, 0.694], [0.288, 0.367, 0.041, 0.382, 0.894]),
    a!("global_avgpool", 0.1, [0.021, 0.041, 0.004, 0.022, 0.504], [0.021, 0.037, 0.004, 0.016, 0.601]),
];

/// The anchors row of `case`, if it is in the table.
#[must_use]
pub fn anchor(case: &str) -> Option<&'static Anchor> {
    ANCHORS.iter().find(|a| a.case == case)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{standard_suite, Op};

    #[test]
    fn best_engine_matches_table() {
        assert_eq!(anchor("vgg_conv3_2").unwrap().best(1), Some(("ncnn", 14.012)));
        assert_eq!(anchor("resnet_1x1_reduce").unwrap().best(2), Some(("XNNPACK", 0.364)));
        assert_eq!(anchor("alexnet_conv1").unwrap().best(1), Some(("ONNX Runtime", 1.505)));
        assert_eq!(anchor("global_avgpool").unwrap().best(3), None);
        assert!(anchor("quick_1x1").is_none());
    }

    #[test]
    fn every_standard_case_has_an_anchor_with_its_flops() {
        let suite = standard_suite();
        let (backward, forward): (Vec<_>, Vec<_>) = suite.iter().partition(|c| c.op.is_backward());
        assert_eq!(forward.len(), ANCHORS.len());
        // No competitor timings for the backward cases.
        assert_eq!(backward.len(), 8);
        assert!(backward.iter().all(|c| anchor(&c.name).is_none()));
        for case in forward {
            let a = anchor(&case.name).unwrap_or_else(|| panic!("{} has no anchor", case.name));
            match &case.op {
                Op::Conv(c) => {
                    let mflop = c.geometry().unwrap().flops() as f64 / 1e6;
                    assert!((mflop - a.mflop).abs() < 0.051, "{}: {mflop} MFLOP vs {}", case.name, a.mflop);
                }
                Op::ConvBackwardData(_) | Op::ConvBackwardFilter(_) => unreachable!("partitioned out"),
                Op::Pool(p) => {
                    // The table counts window taps for pooling.
                    let g = p.geometry().unwrap();
                    let [kh, kw] = g.window().kernel();
                    let taps = (g.output().count().unwrap() * kh * kw) as f64 / 1e6;
                    assert!((taps - a.mflop).abs() < 0.051, "{}: {taps} M taps vs {}", case.name, a.mflop);
                }
            }
        }
    }
}
