//! Benchmark harness for simdconv: the `convbench` binary and criterion benches.
