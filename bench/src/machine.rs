//! This machine's limits: peak FMA throughput per instruction set and thread count, and
//! copy bandwidth over buffers larger than the last-level cache.
//!
//! The FMA loop keeps its accumulators in registers (more independent chains than the
//! FMA latency times the number of FMA ports), so it runs at the core's issue limit. One
//! fused multiply-add counts as 2 flops; the scalar loop issues an unfused multiply and
//! add per step (what the scalar kernel path does) and also counts 2.

use std::hint::black_box;
use std::time::{Duration, Instant};

use simdconv::Isa;

/// Measured limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// The instruction set the FMA loop ran on.
    pub isa: Isa,
    /// `(threads, GFLOP/s)` for each measured thread count, ascending.
    pub peak_gflops: Vec<(usize, f64)>,
    /// `(threads, GB/s)` of copying (bytes read + bytes written per second).
    pub copy_gbps: Vec<(usize, f64)>,
    /// The size of each copy buffer, bytes.
    pub copy_buffer_bytes: usize,
}

impl Limits {
    /// Peak GFLOP/s at `threads` (if measured).
    #[must_use]
    pub fn peak_at(&self, threads: usize) -> Option<f64> {
        self.peak_gflops.iter().find(|(t, _)| *t == threads).map(|(_, v)| *v)
    }
    /// Keeps, per thread count, the higher of this and `other`'s measurement: on a shared
    /// machine the less disturbed measurement is the closer to the limit.
    pub fn keep_best(&mut self, other: &Limits) {
        for (mine, theirs) in
            [(&mut self.peak_gflops, &other.peak_gflops), (&mut self.copy_gbps, &other.copy_gbps)]
        {
            for (t, v) in mine.iter_mut() {
                if let Some((_, o)) = theirs.iter().find(|(ot, _)| ot == t) {
                    *v = v.max(*o);
                }
            }
        }
    }

    /// Copy GB/s at `threads` (if measured).
    #[must_use]
    pub fn copy_at(&self, threads: usize) -> Option<f64> {
        self.copy_gbps.iter().find(|(t, _)| *t == threads).map(|(_, v)| *v)
    }
}

/// The CPU's model name (from `/proc/cpuinfo` on Linux), or `"unknown"`.
#[must_use]
pub fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim();
            (k == "model name" || k == "Model" || k == "Processor").then(|| v.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The 1, 5 and 15 minute load averages (Linux), to judge how busy a shared machine was.
#[must_use]
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The largest cache's size in bytes (Linux sysfs), if known.
#[must_use]
pub fn last_level_cache_bytes() -> Option<usize> {
    let mut best = None;
    for i in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let Ok(size) = std::fs::read_to_string(format!("{dir}/size")) else { continue };
        let size = size.trim();
        let (num, mult) = match size.chars().last() {
            Some('K') => (&size[..size.len() - 1], 1usize << 10),
            Some('M') => (&size[..size.len() - 1], 1 << 20),
            Some('G') => (&size[..size.len() - 1], 1 << 30),
            _ => (size, 1),
        };
        if let Ok(n) = num.parse::<usize>() {
            let bytes = n.saturating_mul(mult);
            best = Some(best.map_or(bytes, |b: usize| b.max(bytes)));
        }
    }
    best
}

/// Flops one call of [`fma_loop`] does per iteration on `isa`.
#[must_use]
pub fn fma_flops_per_iter(isa: Isa) -> u64 {
    let (chains, lanes) = match isa {
        Isa::Avx512 => (AVX512_CHAINS, 16),
        Isa::Avx2 => (AVX2_CHAINS, 8),
        Isa::Neon => (NEON_CHAINS, 4),
        Isa::Scalar => (SCALAR_CHAINS, 1),
    };
    2 * chains as u64 * lanes
}

const AVX512_CHAINS: usize = 16;
const AVX2_CHAINS: usize = 12;
const NEON_CHAINS: usize = 16;
const SCALAR_CHAINS: usize = 12;

/// Runs `iters` iterations of the register-resident FMA loop for `isa` (which must be
/// supported here; otherwise the scalar loop runs) and returns a value derived from the
/// accumulators so that nothing is optimised away.
#[must_use]
pub fn fma_loop(isa: Isa, iters: u64) -> f32 {
    let iters = black_box(iters);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_supported() => {
            // SAFETY: `is_supported` checked the CPU's AVX-512F flag and that the OS saves
            // the ZMM state, which is all `fma_avx512` needs.
            unsafe { x86::fma_avx512(iters) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if isa.is_supported() => {
            // SAFETY: `is_supported` checked AVX2 and FMA and the OS's YMM state.
            unsafe { x86::fma_avx2(iters) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if isa.is_supported() => {
            // SAFETY: `is_supported` checked NEON.
            unsafe { arm::fma_neon(iters) }
        }
        _ => fma_scalar(iters),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::{AVX2_CHAINS, AVX512_CHAINS};

    #[target_feature(enable = "avx512f")]
    pub(super) fn fma_avx512(iters: u64) -> f32 {
        let (a0, b0, init) = super::opaque_constants();
        let a = _mm512_set1_ps(a0);
        let b = _mm512_set1_ps(b0);
        let mut acc = [_mm512_set1_ps(init); AVX512_CHAINS];
        for _ in 0..iters {
            for r in &mut acc {
                *r = _mm512_fmadd_ps(*r, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for r in acc {
            s = _mm512_add_ps(s, r);
        }
        _mm512_reduce_add_ps(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fma_avx2(iters: u64) -> f32 {
        let (a0, b0, init) = super::opaque_constants();
        let a = _mm256_set1_ps(a0);
        let b = _mm256_set1_ps(b0);
        let mut acc = [_mm256_set1_ps(init); AVX2_CHAINS];
        for _ in 0..iters {
            for r in &mut acc {
                *r = _mm256_fmadd_ps(*r, a, b);
            }
        }
        let mut s = _mm256_setzero_ps();
        for r in acc {
            s = _mm256_add_ps(s, r);
        }
        let mut out = [0.0f32; 8];
        // SAFETY: `out` holds 8 f32, exactly one unaligned 256-bit store.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
        out.iter().sum()
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use core::arch::aarch64::*;

    use super::NEON_CHAINS;

    #[target_feature(enable = "neon")]
    pub(super) fn fma_neon(iters: u64) -> f32 {
        let (a0, b0, init) = super::opaque_constants();
        let a = vdupq_n_f32(a0);
        let b = vdupq_n_f32(b0);
        let mut acc = [vdupq_n_f32(init); NEON_CHAINS];
        for _ in 0..iters {
            for r in &mut acc {
                *r = vfmaq_f32(b, *r, a);
            }
        }
        let mut s = vdupq_n_f32(0.0);
        for r in acc {
            s = vaddq_f32(s, r);
        }
        vaddvq_f32(s)
    }
}

/// `(a, b, x0)` of the chains `x = x * a + b`, hidden from the optimiser: with known
/// constants LLVM notices that the chains reach a fixed point and deletes the loop.
/// The chains converge to `b / (1 - a) = 1`, far from overflow and denormals.
fn opaque_constants() -> (f32, f32, f32) {
    black_box((0.999_99f32, 1e-5f32, 0.5f32))
}

/// Scalar: independent `x = x * a + b` chains, an unfused multiply and add each (as the
/// scalar kernels run). On x86-64 the loop is written in assembly: from plain Rust, LLVM's
/// SLP vectoriser packs the chains into SSE instructions, which would turn the scalar
/// measurement into a vector one.
#[cfg(target_arch = "x86_64")]
fn fma_scalar(iters: u64) -> f32 {
    let (a, b, x) = opaque_constants();
    let mut acc = [x; SCALAR_CHAINS];
    if iters == 0 {
        return acc.iter().sum();
    }
    let [mut r0, mut r1, mut r2, mut r3, mut r4, mut r5, mut r6, mut r7, mut r8, mut r9, mut r10, mut r11] =
        acc;
    // SAFETY: register-only arithmetic on the operands named below; the counter is
    // positive (checked above) so the loop ends after `iters` rounds; no memory or stack
    // is touched and the flags are the only other state changed (asm! assumes so).
    unsafe {
        core::arch::asm!(
            "2:",
            "mulss {r0}, {a}", "addss {r0}, {b}",
            "mulss {r1}, {a}", "addss {r1}, {b}",
            "mulss {r2}, {a}", "addss {r2}, {b}",
            "mulss {r3}, {a}", "addss {r3}, {b}",
            "mulss {r4}, {a}", "addss {r4}, {b}",
            "mulss {r5}, {a}", "addss {r5}, {b}",
            "mulss {r6}, {a}", "addss {r6}, {b}",
            "mulss {r7}, {a}", "addss {r7}, {b}",
            "mulss {r8}, {a}", "addss {r8}, {b}",
            "mulss {r9}, {a}", "addss {r9}, {b}",
            "mulss {r10}, {a}", "addss {r10}, {b}",
            "mulss {r11}, {a}", "addss {r11}, {b}",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            a = in(xmm_reg) a,
            b = in(xmm_reg) b,
            r0 = inout(xmm_reg) r0, r1 = inout(xmm_reg) r1, r2 = inout(xmm_reg) r2,
            r3 = inout(xmm_reg) r3, r4 = inout(xmm_reg) r4, r5 = inout(xmm_reg) r5,
            r6 = inout(xmm_reg) r6, r7 = inout(xmm_reg) r7, r8 = inout(xmm_reg) r8,
            r9 = inout(xmm_reg) r9, r10 = inout(xmm_reg) r10, r11 = inout(xmm_reg) r11,
            options(nomem, nostack),
        );
    }
    acc = [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11];
    acc.iter().sum()
}

/// Scalar elsewhere: the same chains in Rust (the compiler may pack them into vectors on
/// targets where it finds that profitable).
#[cfg(not(target_arch = "x86_64"))]
fn fma_scalar(iters: u64) -> f32 {
    let (a, b, x) = opaque_constants();
    let mut acc = [x; SCALAR_CHAINS];
    for _ in 0..iters {
        for r in &mut acc {
            *r = *r * a + b;
        }
    }
    acc.iter().sum()
}

/// Peak FMA GFLOP/s on `isa` with `threads` threads running the loop at once: the best of
/// a few runs of about `run` each.
#[must_use]
pub fn peak_gflops(isa: Isa, threads: usize, run: Duration) -> f64 {
    let threads = threads.max(1);
    // Calibrate on one thread: iterations for `run`.
    let mut iters = 1u64 << 16;
    loop {
        let t = Instant::now();
        black_box(fma_loop(isa, iters));
        let e = t.elapsed();
        if e >= run / 8 || iters >= 1 << 40 {
            let scale = run.as_secs_f64() / e.as_secs_f64().max(1e-9);
            iters = ((iters as f64 * scale) as u64).max(1);
            break;
        }
        iters *= 4;
    }
    let flops = fma_flops_per_iter(isa) as f64 * iters as f64 * threads as f64;
    let mut best = 0.0f64;
    // Best of several: on a shared machine the quietest run is the closest to the limit.
    for _ in 0..5 {
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| black_box(fma_loop(isa, iters)));
            }
        });
        best = best.max(flops / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Two buffers of this many bytes each: at least 1.5 x the last-level cache (so the copy
/// streams from memory), 64 MiB at least, 1 GiB at most.
#[must_use]
pub fn copy_buffer_bytes() -> usize {
    let llc = last_level_cache_bytes().unwrap_or(128 << 20);
    (llc + llc / 2).clamp(64 << 20, 1 << 30)
}

/// Copy bandwidth in GB/s (bytes read + bytes written per second) for each thread count,
/// best of a few copies of `bytes`-sized buffers split evenly over the threads.
#[must_use]
pub fn copy_gbps(thread_counts: &[usize], bytes: usize) -> Vec<(usize, f64)> {
    let n = bytes / 4;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    thread_counts
        .iter()
        .map(|&t| {
            let t = t.max(1);
            let chunk = n.div_ceil(t).max(1);
            let mut best = 0.0f64;
            for _ in 0..4 {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for (d, s_) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                        s.spawn(move || d.copy_from_slice(s_));
                    }
                });
                let secs = start.elapsed().as_secs_f64();
                black_box(&mut dst);
                best = best.max(2.0 * (n * 4) as f64 / secs / 1e9);
            }
            (t, best)
        })
        .collect()
}

/// Measures the limits for `isa` at every thread count in `thread_counts`.
#[must_use]
pub fn measure(isa: Isa, thread_counts: &[usize]) -> Limits {
    let run = Duration::from_millis(100);
    let peak_gflops = thread_counts.iter().map(|&t| (t, peak_gflops(isa, t, run))).collect();
    let copy_buffer_bytes = copy_buffer_bytes();
    let copy_gbps = copy_gbps(thread_counts, copy_buffer_bytes);
    Limits { isa, peak_gflops, copy_gbps, copy_buffer_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fma_loops_run_and_stay_finite() {
        for isa in Isa::available() {
            let v = fma_loop(isa, 1000);
            assert!(v.is_finite() && v > 0.0, "{isa}: {v}");
            assert!(peak_gflops(isa, 1, Duration::from_millis(5)) > 0.0);
        }
    }

    #[test]
    fn machine_facts_do_not_panic() {
        assert!(!cpu_name().is_empty());
        if let Some(l) = load_average() {
            assert!(l.iter().all(|v| *v >= 0.0));
        }
        assert!(copy_buffer_bytes() >= 64 << 20);
    }

    #[test]
    fn keep_best_takes_the_higher_measurement() {
        let mut a = Limits {
            isa: Isa::Scalar,
            peak_gflops: vec![(1, 10.0), (2, 30.0)],
            copy_gbps: vec![(1, 5.0), (2, 9.0)],
            copy_buffer_bytes: 1,
        };
        let b = Limits { peak_gflops: vec![(1, 12.0), (2, 20.0)], copy_gbps: vec![(1, 4.0)], ..a.clone() };
        a.keep_best(&b);
        assert_eq!(a.peak_gflops, vec![(1, 12.0), (2, 30.0)]);
        assert_eq!(a.copy_gbps, vec![(1, 5.0), (2, 9.0)]);
        assert_eq!((a.peak_at(1), a.copy_at(2), a.peak_at(3)), (Some(12.0), Some(9.0), None));
    }

    #[test]
    fn copy_bandwidth_is_positive() {
        let r = copy_gbps(&[1, 2], 1 << 20);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|(_, g)| *g > 0.0));
    }
}
