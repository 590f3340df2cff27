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

/// The crashes of `regressions/workspace/`, one named test each.
#[test]
fn workspace_thin_nchw_split_copy_overflow() {
    fuzz::workspace(include_bytes!("../../fuzz/regressions/workspace/thin_nchw_split_copy_overflow"));
}

#[test]
fn workspace_winograd_supported_but_workspace_overflows() {
    // `Algorithm::Winograd.supports` said Ok for a 3x3 stride-1 geometry whose channel
    // counts overflow the Winograd workspace; it now returns that `Overflow` too.
    fuzz::workspace(include_bytes!(
        "../../fuzz/regressions/workspace/winograd_supported_but_workspace_overflows"
    ));
}

#[test]
fn workspace_timeout_winograd_tiles_loop_over_dilation() {
    fuzz::workspace(include_bytes!(
        "../../fuzz/regressions/workspace/timeout_winograd_tiles_loop_over_dilation"
    ));
}

/// Found by the CI fuzz smoke run as a libFuzzer timeout: counting Winograd tiles looped
/// over all `DH * DW` phases, so a 3x3 layer with a dilation of 2^18 and the padding to
/// match made `select_algorithm` and every workspace query spin for hours. Tiles are now
/// counted in closed form and only phases that own outputs are visited.
#[test]
fn algorithm_choice_and_workspace_are_instant_for_huge_dilation() {
    use simdconv::{Algorithm, Conv2d, ConvGeometry, Dims, Layout};
    simdconv_tests::setup();
    let d = 1 << 18;
    let g = ConvGeometry::new(Dims::new(1, 16, 1 << 20, 1 << 20), 16, Conv2d::new(3, 3).pad(d).dilation(d))
        .unwrap();
    assert_eq!((g.output().h, g.output().w), (1 << 20, 1 << 20));
    let start = std::time::Instant::now();
    // 2^40 outputs in 4x4 tiles: plenty for Winograd to pay.
    assert_eq!(simdconv::select_algorithm(&g, Layout::Nhwc), Algorithm::Winograd);
    assert_eq!(simdconv::select_packed_algorithm(&g, Layout::Nchw), Algorithm::Winograd);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for algo in [Algorithm::Auto, Algorithm::Winograd] {
            let len = simdconv::conv2d_workspace_len(&g, algo, layout).unwrap();
            assert!(len > 0);
        }
    }
    let _ = simdconv::conv2d_backward_data_workspace_len(&g, simdconv::BackwardAlgorithm::Auto, Layout::Nchw);
    let _ =
        simdconv::conv2d_backward_filter_workspace_len(&g, simdconv::BackwardAlgorithm::Auto, Layout::Nchw);
    // Hours before the fix; microseconds after. Generous for a loaded machine.
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
}
