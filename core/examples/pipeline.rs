//! A small INPUT -> CONV -> RELU -> POOL pipeline on the notes' CIFAR-10 shapes
//! (32x32x3, 12 filters of 3x3 with P = 1, 2x2 max pooling): prints shapes and results.
//!
//! `cargo run --release -p simdconv --example pipeline`

use simdconv::{
    reference, Conv2d, ConvGeometry, Dims, Exec, FilterLayout, FilterView, Layout, Pool2d, PoolGeometry,
    TensorView, TensorViewMut,
};

fn main() -> Result<(), simdconv::Error> {
    let exec = Exec::new();
    println!("instruction set: {}", exec.isa());
    let conv = ConvGeometry::new(Dims::new(1, 3, 32, 32), 12, Conv2d::new(3, 3).pad(1))?;
    let pool = PoolGeometry::new(conv.output(), Pool2d::new(2, 2).stride(2))?;
    let x: Vec<f32> = (0..conv.input().count()?).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
    let w: Vec<f32> = (0..conv.filter().count()?).map(|i| ((i * 104_729) % 17) as f32 / 17.0 - 0.5).collect();
    let bias = vec![0.1f32; 12];
    let mut y = vec![0.0f32; conv.output().count()?];
    reference::conv2d(
        &conv,
        TensorView::new(&x, conv.input(), Layout::Nchw)?,
        FilterView::new(&w, conv.filter(), FilterLayout::Oihw)?,
        Some(&bias),
        TensorViewMut::new(&mut y, conv.output(), Layout::Nchw)?,
    )?;
    simdconv::relu_in_place(&exec, &mut y);
    let mut p = vec![0.0f32; pool.output().count()?];
    reference::max_pool2d(
        &pool,
        TensorView::new(&y, pool.input(), Layout::Nchw)?,
        TensorViewMut::new(&mut p, pool.output(), Layout::Nchw)?,
        None,
    )?;
    println!("INPUT [{}x{}x{}]", conv.input().h, conv.input().w, conv.input().c);
    println!(
        "CONV  [{}x{}x{}]  ({} MFLOP)",
        conv.output().h,
        conv.output().w,
        conv.output().c,
        conv.flops() as f64 / 1e6
    );
    println!("RELU  [{}x{}x{}]", conv.output().h, conv.output().w, conv.output().c);
    println!("POOL  [{}x{}x{}]", pool.output().h, pool.output().w, pool.output().c);
    let mean = p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64;
    println!("pooled mean {mean:.6}, first values {:?}", &p[..4]);
    Ok(())
}
