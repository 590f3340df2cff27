//! Fork-join on rayon's pool for the kernels' thread splits (`rayon` feature).
//!
//! The calling thread runs the first job itself and rayon's workers the others; then a
//! caller from outside the pool spins (for at most [`SPIN`]) until they are done, before
//! rayon's blocking wait (a caller inside the pool runs pending jobs while it waits).
//! A caller that blocks is woken through the OS when the last job ends, which cost about
//! 5 microseconds per call on this project's 2-core VM: a fork-join of two empty jobs took
//! a median 6.6 microseconds with the blocking wait and 1.2 with the spin (2000 calls
//! each), a lot for kernels of 10-150 microseconds such as pooling and depthwise layers.

use core::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The longest the caller spins on the other jobs before it blocks: longer waits are
/// jobs that did not start at once (a busy pool or machine), where the spin would only
/// take a core from them.
const SPIN: Duration = Duration::from_micros(200);

/// Runs `run(job)` for every job, the first on the calling thread and the others on
/// rayon's workers, and returns when all have returned.
pub(crate) fn fork_join<T: Send>(jobs: impl IntoIterator<Item = T>, run: impl Fn(T) + Sync) {
    let pending = AtomicUsize::new(0);
    rayon::in_place_scope(|scope| {
        let mut jobs = jobs.into_iter();
        let first = jobs.next();
        for job in jobs {
            pending.fetch_add(1, Ordering::Relaxed);
            let (run, pending) = (&run, &pending);
            scope.spawn(move |_| {
                run(job);
                pending.fetch_sub(1, Ordering::Release);
            });
        }
        if let Some(job) = first {
            run(job);
        }
        // A worker of the pool (a caller already running on rayon) waits by running the
        // pool's jobs, its own spawns included: spinning there would only delay them.
        if rayon::current_thread_index().is_some() {
            return;
        }
        let start = Instant::now();
        'spin: while pending.load(Ordering::Acquire) != 0 {
            for _ in 0..64 {
                core::hint::spin_loop();
                if pending.load(Ordering::Acquire) == 0 {
                    break 'spin;
                }
            }
            if start.elapsed() > SPIN {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn runs_every_job_once() {
        for n in [0usize, 1, 2, 5] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            fork_join(0..n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{n} jobs");
        }
    }

    #[test]
    fn nested_in_the_pool() {
        // Called from rayon's workers (a framework's own parallel loop): no spin, and
        // every job still runs.
        use rayon::prelude::*;
        let done = AtomicUsize::new(0);
        (0..8).into_par_iter().for_each(|_| {
            fork_join(0..3, |_| {
                done.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(done.load(Ordering::Relaxed), 24);
    }

    #[test]
    fn waits_for_slow_jobs() {
        // A job longer than the spin: the blocking wait still covers it.
        let done = AtomicUsize::new(0);
        fork_join(0..2, |i| {
            if i == 1 {
                std::thread::sleep(Duration::from_millis(5));
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(done.load(Ordering::Relaxed), 2);
    }
}
