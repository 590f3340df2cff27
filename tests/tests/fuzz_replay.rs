//! Replays the checked-in cargo-fuzz corpus (fuzz/corpus/<target>/*) and every crash ever
//! found (fuzz/regressions/<target>/*) through the same bodies the fuzz targets run, on
//! stable Rust, so CI checks them all without nightly. Also runs a deterministic sweep of
//! pseudo-random inputs so the bodies are exercised even before a corpus exists.

use std::path::PathBuf;

use simdconv_tests::fuzz;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
}

fn replay(target: &str, body: fn(&[u8])) -> usize {
    simdconv_tests::setup();
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root().join(dir).join(target)) else { continue };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            body(&data);
            count += 1;
        }
    }
    // Deterministic random inputs of assorted lengths.
    let mut rng = simdconv_tests::Rng::new(target.len() as u64);
    for len in (0..600).step_by(3) {
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        body(&data);
        count += 1;
    }
    count
}

#[test]
fn replay_geometry() {
    assert!(replay("geometry", fuzz::geometry) >= 200);
}

#[test]
fn replay_views() {
    assert!(replay("views", fuzz::views) >= 200);
}

#[test]
fn replay_conv() {
    assert!(replay("conv", fuzz::conv) >= 200);
}

#[test]
fn replay_pool() {
    assert!(replay("pool", fuzz::pool) >= 200);
}

#[test]
fn replay_backward() {
    assert!(replay("backward", fuzz::backward) >= 200);
}

#[test]
fn replay_workspace() {
    assert!(replay("workspace", fuzz::workspace) >= 200);
}
