//! Criterion benches over the quick suite (and the small standard cases): every
//! convolution algorithm x every available instruction set x both layouts, with
//! throughput in FLOPs (convolution: reported as elements/s = FLOP/s) or bytes moved
//! (pooling). Combinations an algorithm cannot run are skipped with a note on stderr.
//! The GEMM-based algorithms (im2col, pointwise) run the `gemm` crate's own kernels, which
//! pick the best instruction set themselves: their `scalar` / `avx2` ids measure the same
//! GEMM as `avx512` plus simdconv's code around it on the named ISA.
//!
//! `cargo bench -p simdconv-bench` (filter: `cargo bench -p simdconv-bench -- quick_1x1`).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use simdconv::{Algorithm, Exec, Isa, Layout};
use simdconv_bench::cases::{self, Case, Op};
use simdconv_bench::run::{layout_name, Prepared};

/// The quick suite plus the standard cases small enough for many repetitions.
fn bench_cases() -> Vec<Case> {
    let small = ["googlenet_1x1", "soumith_l5", "depthwise_3x3", "maxpool_3x3_s2", "global_avgpool"];
    cases::quick_suite()
        .into_iter()
        .chain(cases::standard_suite().into_iter().filter(|c| small.contains(&c.name.as_str())))
        .collect()
}

fn suite(c: &mut Criterion) {
    for case in bench_cases() {
        let mut group = c.benchmark_group(case.name.as_str());
        let throughput = match case.flops() {
            Ok(Some(f)) => Throughput::Elements(f),
            Ok(None) => Throughput::Bytes(case.bytes_moved().unwrap_or(0)),
            Err(e) => {
                eprintln!("skip {}: {e}", case.name);
                continue;
            }
        };
        group.throughput(throughput);
        let algos: Vec<Algorithm> = match case.op {
            Op::Conv(_) => std::iter::once(Algorithm::Auto).chain(Algorithm::NAMED).collect(),
            // Backward cases always run `BackwardAlgorithm::Auto`.
            Op::Pool(_) | Op::ConvBackwardData(_) | Op::ConvBackwardFilter(_) => vec![Algorithm::Auto],
        };
        for isa in Isa::available() {
            let Ok(exec) = Exec::new().with_isa(isa) else { continue };
            for layout in [Layout::Nchw, Layout::Nhwc] {
                for &algo in &algos {
                    let id = match case.op {
                        Op::Conv(_) => format!("{}/{}/{}", algo.name(), isa.name(), layout_name(layout)),
                        Op::Pool(_) | Op::ConvBackwardData(_) | Op::ConvBackwardFilter(_) => {
                            format!("{}/{}", isa.name(), layout_name(layout))
                        }
                    };
                    let mut prepared = match Prepared::new(&case, exec, layout, algo) {
                        Ok(p) => p,
                        Err(e) => {
                            eprintln!("skip {}/{id}: {e}", case.name);
                            continue;
                        }
                    };
                    // Run once before timing: an algorithm that cannot run the case is
                    // skipped, and a wrong answer stops the bench.
                    if let Err(e) = prepared.run() {
                        eprintln!("skip {}/{id}: {e}", case.name);
                        continue;
                    }
                    let check = prepared.check(2_000_000, 512);
                    assert!(check.ok(), "{}/{id}: wrong output: {check:?}", case.name);
                    group.bench_function(BenchmarkId::from_parameter(id), |b| {
                        b.iter(|| prepared.run().expect("ran once already"));
                    });
                }
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(600));
    targets = suite
}
criterion_main!(benches);
