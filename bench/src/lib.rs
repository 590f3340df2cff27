//! Benchmark harness for simdconv: the `convbench` binary and the criterion benches share
//! this crate's case table ([`cases`]), competitor timings ([`anchors`]), machine limits
//! ([`machine`]), measurement and error check ([`run`]) and reports ([`report`]).
//!
//! ```
//! use simdconv::{Algorithm, Exec, Layout};
//! use simdconv_bench::{cases, measure_case, Settings};
//! let case = cases::find_case("quick_1x1").unwrap();
//! let settings = Settings { min_time: std::time::Duration::from_millis(1), ..Settings::default() };
//! let row = measure_case(&case, Exec::new(), Layout::Nchw, Algorithm::Direct, &settings, None);
//! // A kernel that is not in this build is reported in the row, not as a crash.
//! assert!(row.error.is_some() || row.median_ms.is_some());
//! ```

pub mod anchors;
pub mod cases;
pub mod machine;
pub mod report;
pub mod run;
pub mod shape;

use std::time::Duration;

use simdconv::{Algorithm, Exec, Layout};

use crate::cases::{Case, Op};
use crate::machine::Limits;
use crate::report::Row;
use crate::run::{layout_name, Prepared};

/// How to measure each case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Keep sampling until this much time has passed (after the warm-up).
    pub min_time: Duration,
    /// Take at least this many samples.
    pub min_samples: usize,
    /// Convolutions up to this many multiply-adds are checked on every output; larger
    /// ones on [`Settings::check_samples`] sampled outputs.
    pub full_check_macs: u64,
    /// Outputs sampled for the error check of a large convolution.
    pub check_samples: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_time: Duration::from_secs(2),
            min_samples: 5,
            full_check_macs: 20_000_000,
            check_samples: 4096,
        }
    }
}

/// Runs one case: set-up, one checked call (outside timing), then timing. Errors from the
/// kernel or its set-up end up in [`Row::error`]. `limits` supplies the peak for the
/// peak-fraction column.
#[must_use]
pub fn measure_case(
    case: &Case,
    exec: Exec,
    layout: Layout,
    algorithm: Algorithm,
    settings: &Settings,
    limits: Option<&Limits>,
) -> Row {
    let threads = exec.threads();
    let mut row = Row {
        case: case.name.clone(),
        op: case.op.name().to_string(),
        layout: layout_name(layout).to_string(),
        algo: match case.op {
            Op::Conv(_) => algorithm.name().to_string(),
            Op::ConvBackwardData(_) | Op::ConvBackwardFilter(_) => run::BACKWARD_ALGORITHM.name().to_string(),
            Op::Pool(_) => "-".to_string(),
        },
        isa: exec.isa().name().to_string(),
        threads,
        anchor: anchors::anchor(&case.name).and_then(|a| a.best(threads)).map(|(e, ms)| (e.to_string(), ms)),
        ..Row::default()
    };
    let mut prepared = match Prepared::new(case, exec, layout, algorithm) {
        Ok(p) => p,
        Err(e) => {
            row.error = Some(e.to_string());
            return row;
        }
    };
    row.algo = prepared.algorithm_label();
    if let Err(e) = prepared.run() {
        row.error = Some(e.to_string());
        return row;
    }
    let check = prepared.check(settings.full_check_macs, settings.check_samples);
    row.max_rel_err = Some(check.max_rel_err);
    row.err_bound = Some(check.bound);
    row.over_bound = !check.ok();
    if let Some(why) = check.failure {
        row.error = Some(format!("error check failed: {why}"));
        return row;
    }
    let timing = match run::time(|| prepared.run(), settings.min_time, settings.min_samples) {
        Ok(t) => t,
        Err(e) => {
            row.error = Some(e.to_string());
            return row;
        }
    };
    row.median_ms = Some(timing.median_ms);
    row.min_ms = Some(timing.min_ms);
    let secs = timing.median_ms / 1e3;
    match case.flops() {
        Ok(Some(flops)) => {
            let g = flops as f64 / secs / 1e9;
            row.gflops = Some(g);
            row.peak_fraction = limits.and_then(|l| l.peak_at(threads)).map(|p| g / p);
        }
        Ok(None) => {
            if let Ok(bytes) = case.bytes_moved() {
                let g = bytes as f64 / secs / 1e9;
                row.gbps = Some(g);
                row.peak_fraction = limits.and_then(|l| l.copy_at(threads)).map(|c| g / c);
            }
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    row.speedup = row.anchor.as_ref().map(|(_, ms)| ms / timing.median_ms);
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every quick case on every available instruction set and both layouts runs, is
    /// within its error bound and gets its rates filled in.
    #[test]
    fn quick_suite_measures_and_checks() {
        // Honour the test suites' ISA cap (`SIMDCONV_MAX_ISA=scalar|avx2|avx512`).
        if let Some(isa) = std::env::var("SIMDCONV_MAX_ISA").ok().and_then(|v| simdconv::Isa::from_name(&v)) {
            assert!(isa.is_supported(), "SIMDCONV_MAX_ISA={isa}: not supported here");
            simdconv::set_max_isa(Some(isa));
        }
        let settings = Settings { min_time: Duration::ZERO, min_samples: 1, ..Settings::default() };
        for isa in simdconv::Isa::available() {
            let exec = Exec::new().with_isa(isa).unwrap();
            for layout in [Layout::Nchw, Layout::Nhwc] {
                for case in cases::quick_suite() {
                    let row = measure_case(&case, exec, layout, Algorithm::Auto, &settings, None);
                    let what = format!("{} {isa} {layout:?}", case.name);
                    assert_eq!(row.error, None, "{what}");
                    assert!(!row.over_bound, "{what}: {:?} > {:?}", row.max_rel_err, row.err_bound);
                    assert!(row.median_ms.unwrap() > 0.0, "{what}");
                    match case.op {
                        Op::Conv(_) | Op::ConvBackwardData(_) | Op::ConvBackwardFilter(_) => {
                            assert!(row.gflops.is_some() && row.gbps.is_none(), "{what}");
                        }
                        Op::Pool(_) => assert!(row.gbps.is_some() && row.gflops.is_none(), "{what}"),
                    }
                    assert_eq!(row.peak_fraction, None, "no limits given");
                }
            }
        }
    }

    /// The quick suite's backward cases run with `BackwardAlgorithm::Auto`, are checked on
    /// every element and within bound, count the forward's FLOPs, get no anchor, and get a
    /// ratio to the forward row of the same layer measured alongside.
    #[test]
    fn backward_cases_measure_check_and_compare_to_forward() {
        let settings = Settings { min_time: Duration::ZERO, min_samples: 1, ..Settings::default() };
        let fwd = cases::find_case("quick_conv3x3").unwrap();
        let mut rows = vec![measure_case(&fwd, Exec::new(), Layout::Nhwc, Algorithm::Auto, &settings, None)];
        for name in ["quick_conv3x3_bwd_data", "quick_conv3x3_bwd_filter"] {
            let case = cases::find_case(name).unwrap();
            assert!(case.op.is_backward() && case.op.conv_spec() == fwd.op.conv_spec(), "{name}");
            assert_eq!(case.flops().unwrap(), fwd.flops().unwrap(), "{name}");
            let row = measure_case(&case, Exec::new(), Layout::Nhwc, Algorithm::Auto, &settings, None);
            assert_eq!(row.error, None, "{name}");
            assert!(!row.over_bound && row.max_rel_err.unwrap() <= row.err_bound.unwrap(), "{name}: {row:?}");
            assert_eq!(row.op, case.op.name());
            assert!(row.algo.starts_with("auto:"), "{name}: {}", row.algo);
            assert!(row.anchor.is_none() && row.speedup.is_none(), "{name}");
            rows.push(row);
        }
        report::fill_fwd_ratios(&mut rows);
        assert_eq!(rows[0].fwd_ratio, None, "a forward row has no ratio");
        for r in &rows[1..] {
            let want = r.median_ms.unwrap() / rows[0].median_ms.unwrap();
            assert_eq!(r.fwd_ratio, Some(want), "{}", r.case);
        }
        // Without its forward row a backward row has no ratio.
        let mut alone = rows[1..].to_vec();
        report::fill_fwd_ratios(&mut alone);
        assert!(alone.iter().all(|r| r.fwd_ratio.is_none()));
    }

    #[test]
    fn unsupported_algorithm_is_a_row_error() {
        let case = cases::find_case("quick_conv3x3").unwrap();
        let row =
            measure_case(&case, Exec::new(), Layout::Nchw, Algorithm::Pointwise, &Settings::default(), None);
        assert!(row.error.as_deref().unwrap_or("").contains("pointwise"), "{row:?}");
        assert!(row.median_ms.is_none() && !row.over_bound);
    }
}
