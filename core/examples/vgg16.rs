//! The notes' VGGNet-16 table ("computational considerations"), recomputed by the
//! planner: per-layer shapes, activation memory, weights, biases, FLOPs and workspace,
//! then the totals and the inference / training memory estimates.
//!
//! `cargo run -p simdconv --example vgg16`

use simdconv::plan::{matches_notes_pattern, plan_totals, Planner, VGG16};
use simdconv::{Dims, Layout};

/// `1234567` -> `1,234,567`.
fn commas(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn shape(d: Dims) -> String {
    format!("[{}x{}x{}]", d.h, d.w, d.c)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() -> Result<(), simdconv::Error> {
    let input = Dims::new(1, 3, 224, 224);
    let layout = Layout::Nchw;
    println!(
        "{:<10} {:<15} {:>12} {:>13} {:>8} {:>16} {:>11}",
        "layer", "output", "memory", "weights", "biases", "FLOPs", "workspace"
    );
    println!(
        "{:<10} {:<15} {:>12} {:>13} {:>8} {:>16} {:>11}",
        "INPUT",
        shape(input),
        commas(input.count()? as u64),
        0,
        0,
        0,
        0
    );
    for row in Planner::new(input, &VGG16, layout) {
        let row = row?;
        println!(
            "{:<10} {:<15} {:>12} {:>13} {:>8} {:>16} {:>11}",
            row.spec.to_string(),
            shape(row.output),
            commas(row.activations as u64),
            commas(row.weights as u64),
            commas(row.biases as u64),
            commas(row.flops),
            commas(row.workspace as u64),
        );
    }
    let t = plan_totals(input, &VGG16, layout)?;
    println!();
    println!(
        "TOTAL memory: {} activations * 4 bytes = {:.1} MiB / image (forward only; x2 with gradients)",
        commas(t.activations as u64),
        mib(t.activations as u64 * 4)
    );
    println!(
        "  (the notes print \"24M * 4 bytes ~= 93MB\"; their own rows add up to the {:.1}M above)",
        t.activations as f64 / 1e6
    );
    println!(
        "TOTAL params: {} weights + {} biases = {} (the notes: 138M, weights only)",
        commas(t.weights as u64),
        commas(t.biases as u64),
        commas(t.params() as u64)
    );
    println!("TOTAL forward FLOPs: {} (2 per multiply-accumulate)", commas(t.flops));
    println!("largest workspace of one layer: {} f32", commas(t.max_workspace as u64));
    println!(
        "inference memory (largest consecutive activation pair {} + params): {:.1} MiB",
        commas(t.peak_pair as u64),
        mib(t.inference_bytes())
    );
    println!(
        "training memory (activations + gradients, params x 3): {:.1} MiB per image",
        mib(t.training_bytes())
    );
    let fits = matches_notes_pattern(&VGG16);
    println!("follows INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC: {fits}");
    Ok(())
}
