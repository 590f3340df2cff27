//! Instruction-set selection: detection, capping, and the execution context.
//!
//! The best instruction set is detected once and cached in an atomic (no `std` needed).
//! On x86-64 detection checks both the CPU (`cpuid`) and that the operating system saves
//! the wide registers (`xgetbv`), with or without `std`. A process-wide cap
//! ([`set_max_isa`]) lets tests and benchmarks run a lower path on a better CPU without a
//! rebuild; an [`Exec`] names the instruction set (and thread count) of each call.

use core::fmt;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::error::{Dim, Error, Result};

/// A SIMD instruction set a kernel can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable scalar code (1 lane); available everywhere, including microcontrollers.
    Scalar,
    /// aarch64 Advanced SIMD (4 lanes of f32, 32 registers).
    Neon,
    /// x86-64 AVX2 with FMA (8 lanes of f32, 16 registers).
    Avx2,
    /// x86-64 AVX-512 F/BW/CD/DQ/VL (16 lanes of f32, 32 registers).
    Avx512,
}

impl Isa {
    /// Every instruction set, lowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512];

    /// The lower-case name used by the `SIMDCONV_MAX_ISA` variable and the benchmarks.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Neon => "neon",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses [`Isa::name`] (ASCII case-insensitive).
    #[must_use]
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name().eq_ignore_ascii_case(s))
    }

    /// f32 lanes per vector register.
    #[must_use]
    pub const fn f32_lanes(self) -> usize {
        match self {
            Isa::Scalar => 1,
            Isa::Neon => 4,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }

    /// True if this CPU and OS can run `self` (ignores the cap). Detected on the first
    /// call and cached: `cpuid` traps to the hypervisor in a virtual machine, where the
    /// uncached checks of one `Exec::new` took 23 microseconds on a 2-vCPU AMD EPYC VM.
    #[must_use]
    pub fn is_supported(self) -> bool {
        supported() & (1 << self as u8) != 0
    }

    /// True if `self` is supported and not above the cap set by [`set_max_isa`].
    #[must_use]
    pub fn is_available(self) -> bool {
        self.is_supported() && self <= max_isa()
    }

    /// The best instruction set this CPU supports, ignoring the cap. Cached.
    #[must_use]
    pub fn detect() -> Isa {
        Isa::ALL.into_iter().rev().find(|i| i.is_supported()).unwrap_or(Isa::Scalar)
    }

    /// The best instruction set that is supported and within the cap.
    #[must_use]
    pub fn best() -> Isa {
        let cap = max_isa();
        Isa::ALL.into_iter().rev().find(|&i| i <= cap && i.is_supported()).unwrap_or(Isa::Scalar)
    }

    /// Every available instruction set (supported and within the cap), lowest first.
    pub fn available() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available())
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bit `isa as u8` set for every supported [`Isa`], and [`DETECTED`] once detection ran
/// (0 before: detection runs again until one call stores its result, harmless since every
/// run finds the same).
static SUPPORTED: AtomicU8 = AtomicU8::new(0);
const DETECTED: u8 = 1 << 7;

/// The [`SUPPORTED`] mask, detected on the first call.
fn supported() -> u8 {
    let mask = SUPPORTED.load(Ordering::Relaxed);
    if mask & DETECTED != 0 {
        return mask;
    }
    let found = [true, neon_supported(), avx2_supported(), avx512_supported()];
    let mask =
        Isa::ALL.into_iter().zip(found).filter(|&(_, f)| f).fold(DETECTED, |m, (i, _)| m | 1 << i as u8);
    SUPPORTED.store(mask, Ordering::Relaxed);
    mask
}
static CAP: AtomicU8 = AtomicU8::new(Isa::Avx512 as u8);
static DISPATCHES: [AtomicUsize; 4] =
    [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];

fn from_u8(v: u8) -> Option<Isa> {
    Isa::ALL.into_iter().find(|&i| i as u8 == v)
}

/// Caps the instruction set for the whole process: [`Exec::new`] and [`Isa::best`] never
/// pick anything above `cap`, and [`Exec::with_isa`] refuses it. `None` lifts the cap.
/// Use it to run the AVX2 or scalar path on an AVX-512 machine.
///
/// ```
/// use simdconv::{set_max_isa, Isa, Exec};
/// set_max_isa(Some(Isa::Scalar));
/// assert_eq!(Exec::new().isa(), Isa::Scalar);
/// set_max_isa(None);
/// ```
pub fn set_max_isa(cap: Option<Isa>) {
    CAP.store(cap.unwrap_or(Isa::Avx512) as u8, Ordering::Relaxed);
}

/// The current cap (the highest [`Isa`] when none is set).
#[must_use]
pub fn max_isa() -> Isa {
    from_u8(CAP.load(Ordering::Relaxed)).unwrap_or(Isa::Avx512)
}

/// How many kernel calls have run on `isa` in this process. Lets tests prove that a path
/// they asked for really ran.
#[must_use]
pub fn dispatch_count(isa: Isa) -> usize {
    DISPATCHES[isa as usize].load(Ordering::Relaxed)
}

#[inline]
pub(crate) fn record_dispatch(isa: Isa) {
    DISPATCHES[isa as usize].fetch_add(1, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------
// Detection

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv, CpuidResult};

    /// XCR0 (the OS-enabled register state), or 0 if `xgetbv` may not be used.
    pub(super) fn xcr0() -> u64 {
        let leaf1: CpuidResult = __cpuid(1);
        let osxsave = leaf1.ecx & (1 << 27) != 0;
        if !osxsave {
            return 0;
        }
        // SAFETY: OSXSAVE is set, so the OS enabled XSAVE and `xgetbv` does not fault.
        unsafe { xgetbv0() }
    }

    #[target_feature(enable = "xsave")]
    unsafe fn xgetbv0() -> u64 {
        // SAFETY: the caller checked OSXSAVE; this function enables `xsave` for codegen.
        unsafe { _xgetbv(0) }
    }

    /// (leaf 7 ebx, leaf 1 ecx) feature words.
    pub(super) fn features() -> (u32, u32) {
        // Leaf 7 is only read when the maximum leaf allows it.
        let max = __cpuid(0).eax;
        let l1 = __cpuid(1).ecx;
        let l7 = if max >= 7 { __cpuid_count(7, 0).ebx } else { 0 };
        (l7, l1)
    }
}

#[cfg(target_arch = "x86_64")]
fn os_saves(mask: u64) -> bool {
    // Miri cannot run `cpuid` / `xgetbv`: under it only the scalar path exists.
    if cfg!(miri) {
        return false;
    }
    x86::xcr0() & mask == mask
}

#[cfg(target_arch = "x86_64")]
fn avx2_supported() -> bool {
    // XCR0 bits 1 (SSE) and 2 (AVX): the OS saves the YMM registers.
    if !os_saves(0b110) {
        return false;
    }
    let (l7, l1) = x86::features();
    let fma = l1 & (1 << 12) != 0;
    let avx2 = l7 & (1 << 5) != 0;
    fma && avx2 && pulp::x86::V3::is_available()
}

#[cfg(target_arch = "x86_64")]
fn avx512_supported() -> bool {
    // XCR0 bits 5-7: opmask, upper ZMM0-15, ZMM16-31.
    if !os_saves(0b1110_0110) {
        return false;
    }
    let (l7, _) = x86::features();
    let f = l7 & (1 << 16) != 0;
    let bw = l7 & (1 << 30) != 0;
    let vl = l7 & (1 << 31) != 0;
    f && bw && vl && avx2_supported() && pulp::x86::V4::is_available()
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_supported() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512_supported() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn neon_supported() -> bool {
    !cfg!(miri) && pulp::aarch64::Neon::try_new().is_some()
}

#[cfg(not(target_arch = "aarch64"))]
fn neon_supported() -> bool {
    false
}

// ---------------------------------------------------------------------------------------
// Execution context

/// How to run a kernel: which instruction set and how many threads.
///
/// An `Exec` only ever holds an instruction set that this CPU supports, so kernels can
/// trust it.
///
/// ```
/// use simdconv::{Exec, Isa};
/// let exec = Exec::new(); // the best instruction set here, one thread
/// assert!(exec.isa().is_supported());
/// let scalar = Exec::new().with_isa(Isa::Scalar)?;
/// assert_eq!(scalar.isa(), Isa::Scalar);
/// # Ok::<(), simdconv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Exec {
    isa: Isa,
    threads: usize,
}

impl Default for Exec {
    fn default() -> Self {
        Exec::new()
    }
}

impl Exec {
    /// The best available instruction set ([`Isa::best`]) and one thread.
    #[must_use]
    pub fn new() -> Self {
        Exec { isa: Isa::best(), threads: 1 }
    }

    /// Runs on `isa`; errors if it is unsupported here or above the cap.
    pub fn with_isa(self, isa: Isa) -> Result<Self> {
        if isa.is_available() {
            Ok(Exec { isa, ..self })
        } else {
            Err(Error::IsaUnavailable { requested: isa, available: Isa::best() })
        }
    }

    /// Splits work over `threads` threads (1 = the calling thread only). More than one
    /// needs the `rayon` feature; work runs on rayon's current pool.
    ///
    /// How each kernel splits: the GEMM-based convolutions (im2col, pointwise, Winograd)
    /// split output pixels over the batch (or hand the threads to `gemm`); the direct and
    /// depthwise convolutions split output channels (whole groups when grouped); outputs
    /// too small to pay for a thread stay on fewer threads. Forward pooling (max,
    /// average, L2, global) splits images, else NCHW channel planes or NHWC output rows,
    /// from 64 Ki input elements per thread (max pooling with switches: images and NCHW
    /// channel planes only); the pooling backward passes run on the calling thread.
    ///
    /// The calling thread takes the first share itself. Once done, a caller from outside
    /// rayon's pool spins for up to 200 microseconds on the other shares before it blocks
    /// (being woken by the OS cost about 5 microseconds per call on a 2-core VM, a lot for
    /// a layer of 20); a caller inside the pool runs pending jobs while it waits.
    pub fn with_threads(self, threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::Zero { dim: Dim::Threads });
        }
        if threads > 1 && !cfg!(feature = "rayon") {
            return Err(Error::Unsupported(crate::error::Unsupported::ThreadsNeedRayon));
        }
        Ok(Exec { threads, ..self })
    }

    /// The instruction set.
    #[must_use]
    pub const fn isa(&self) -> Isa {
        self.isa
    }

    /// The thread count.
    #[must_use]
    pub const fn threads(&self) -> usize {
        self.threads
    }

    /// Runs a SIMD operation on this context's instruction set.
    #[inline(always)]
    pub(crate) fn dispatch<Op: pulp::WithSimd>(&self, op: Op) -> Op::Output {
        dispatch(self.isa, op)
    }
}

/// Runs `op` on `isa`. The caller guarantees `isa.is_supported()` (an [`Exec`] always does).
#[inline(always)]
pub(crate) fn dispatch<Op: pulp::WithSimd>(isa: Isa, op: Op) -> Op::Output {
    use pulp::Simd;
    record_dispatch(isa);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: an `Isa::Avx512` only reaches here after `avx512_supported()` (via
            // `Exec`), which checked the CPU features and the OS register state.
            let simd = unsafe { pulp::x86::V4::new_unchecked() };
            Simd::vectorize(simd, op)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: as above, via `avx2_supported()`.
            let simd = unsafe { pulp::x86::V3::new_unchecked() };
            Simd::vectorize(simd, op)
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            // SAFETY: an `Isa::Neon` only reaches here after `neon_supported()` (via `Exec`).
            let simd = unsafe { pulp::aarch64::Neon::new_unchecked() };
            Simd::vectorize(simd, op)
        }
        _ => Simd::vectorize(pulp::Scalar::new(), op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_support_matches_fresh_detection() {
        let fresh = [true, neon_supported(), avx2_supported(), avx512_supported()];
        for _ in 0..2 {
            for (isa, f) in Isa::ALL.into_iter().zip(fresh) {
                assert_eq!(isa.is_supported(), f, "{isa}");
            }
        }
        assert_eq!(Isa::detect(), Isa::ALL.into_iter().zip(fresh).rev().find(|p| p.1).unwrap().0);
    }

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("AVX512"), Some(Isa::Avx512));
        assert_eq!(Isa::from_name("sse"), None);
    }

    #[test]
    fn scalar_always_available() {
        assert!(Isa::Scalar.is_supported());
        assert!(Isa::detect().is_supported());
    }
}
