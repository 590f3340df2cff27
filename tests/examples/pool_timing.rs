//! Ad-hoc single-thread timing of the pooling kernels on the standard suite's pooling cases.
//! `cargo run --release -p simdconv-tests --example pool_timing [isa [case-prefix]]`

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// This thread's CPU time in seconds: the machine is shared, so wall time would count
/// the time other processes ran.
fn cpu_now() -> f64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; 3 is CLOCK_THREAD_CPUTIME_ID on Linux.
    let rc = unsafe { clock_gettime(3, &mut ts) };
    assert_eq!(rc, 0);
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

use simdconv::{AvgPoolOptions, Dims, Exec, Isa, Layout, Pool2d, PoolGeometry, TensorView, TensorViewMut};

fn time(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut best = Vec::new();
    for _ in 0..15 {
        let reps = 20;
        let t = cpu_now();
        for _ in 0..reps {
            f();
        }
        best.push((cpu_now() - t) / reps as f64);
    }
    best.sort_by(f64::total_cmp);
    best[0]
}

fn main() {
    let isa = std::env::args().nth(1).and_then(|s| Isa::from_name(&s)).unwrap_or_else(Isa::best);
    let exec = Exec::new().with_isa(isa).unwrap();
    println!("isa {isa}; thread CPU time, best of 15 x 20 calls");
    let only = std::env::args().nth(2);
    let cases: [(&str, Dims, Option<Pool2d>, bool, f64); 4] = [
        ("maxpool_2x2_s2", Dims::new(1, 64, 224, 224), Some(Pool2d::new(2, 2).stride(2)), true, 0.557),
        ("maxpool_3x3_s2", Dims::new(1, 96, 55, 55), Some(Pool2d::new(3, 3).stride(2)), true, 0.039),
        ("avgpool_2x2_s2", Dims::new(1, 64, 112, 112), Some(Pool2d::new(2, 2).stride(2)), false, 0.139),
        ("global_avgpool", Dims::new(1, 2048, 7, 7), None, false, 0.004),
    ];
    let mut rng = simdconv_tests::Rng::new(1);
    // This machine's bandwidth right now, for scale: a copy of the largest input.
    let src = rng.vec(64 * 224 * 224);
    let mut dst = vec![0.0f32; src.len()];
    let t = time(|| {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    });
    println!(
        "memcpy 12.8 MB     : {:8.4} ms  {:6.1} GB/s (read + write)",
        t * 1e3,
        8.0 * src.len() as f64 / t / 1e9
    );
    for (name, d, pool, max, xnn) in cases {
        if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let out = match pool {
            Some(p) => PoolGeometry::new(d, p).unwrap().output(),
            None => Dims::new(d.n, d.c, 1, 1),
        };
        let x = rng.vec(d.count().unwrap());
        let mut y = vec![0.0f32; out.count().unwrap()];
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let xv = TensorView::new(&x, d, layout).unwrap();
            let t = time(|| {
                let yv = TensorViewMut::new(&mut y, out, layout).unwrap();
                match pool {
                    Some(p) => {
                        let g = PoolGeometry::new(d, p).unwrap();
                        if max {
                            simdconv::max_pool2d(&exec, &g, xv, yv, None).unwrap();
                        } else {
                            simdconv::avg_pool2d(&exec, &g, xv, yv, AvgPoolOptions::PYTORCH).unwrap();
                        }
                    }
                    None => simdconv::global_avg_pool(&exec, xv, yv).unwrap(),
                }
            });
            let bytes = 4.0 * (d.count().unwrap() + out.count().unwrap()) as f64;
            println!(
                "{name:15} {layout:?}: {:8.4} ms  {:6.1} GB/s  (XNNPACK {xnn} ms: {:.2}x)",
                t * 1e3,
                bytes / t / 1e9,
                xnn / (t * 1e3)
            );
        }
    }
}
