#![no_main]
//! cargo-fuzz target: see simdconv_tests::fuzz::workspace.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| simdconv_tests::fuzz::workspace(data));
