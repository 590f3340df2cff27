//! # simdconv
//!
//! Convolution and pooling kernels for CPUs, written from the CS231n ConvNet notes:
//! direct, im2col + GEMM, pointwise (1x1), dilated, grouped and depthwise convolution,
//! max / average / L2 pooling, their backward passes, and the notes' other layers. The
//! crate is `#![no_std]`, picks AVX-512, AVX2+FMA, NEON or scalar code at run time, and
//! never allocates unless the `alloc` feature asks it to.
//!
//! Every kernel is checked against [`reference`](mod@reference), naive loops written straight from the
//! notes' formulas.
//!
//! ```
//! use simdconv::{reference, Conv2d, ConvGeometry, Dims, FilterLayout, FilterView, Layout,
//!                TensorView, TensorViewMut};
//! // The notes' CIFAR-10 layer: 32x32x3 input, 12 filters of 3x3 with P = 1 -> 32x32x12.
//! let g = ConvGeometry::new(Dims::new(1, 3, 32, 32), 12, Conv2d::new(3, 3).pad(1))?;
//! assert_eq!(g.output(), Dims::new(1, 12, 32, 32));
//! let x = vec![1.0f32; g.input().count()?];
//! let w = vec![0.5f32; g.filter().count()?];
//! let mut y = vec![0.0f32; g.output().count()?];
//! reference::conv2d(&g,
//!     TensorView::new(&x, g.input(), Layout::Nchw)?,
//!     FilterView::new(&w, g.filter(), FilterLayout::Oihw)?,
//!     None,
//!     TensorViewMut::new(&mut y, g.output(), Layout::Nchw)?)?;
//! // An interior output sees all 3x3x3 = 27 inputs: 27 * 0.5.
//! assert_eq!(y[32 + 1], 13.5);
//! // A corner sees 2x2x3 = 12 of them; the rest is zero padding.
//! assert_eq!(y[0], 6.0);
//! # Ok::<(), simdconv::Error>(())
//! ```
//!
//! ## Features
//! - `std` (default): `std::error::Error`, the `gemm`-based algorithms. Implies `alloc`.
//! - `alloc`: conveniences that allocate their own workspace.
//! - `gemm-avx512` (default): lets the `gemm` crate use its AVX-512 kernels. `gemm` picks
//!   its kernels itself, past [`set_max_isa`]; without this feature it stops at AVX2 + FMA.
//! - `rayon`: [`Exec::with_threads`] above one thread.
//!
//! Without `std` the crate still detects AVX2 / AVX-512 at run time on x86-64 (checking
//! that the OS saves the wide registers) and uses NEON on aarch64.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod activation;
mod backward;
mod conv;
mod dense;
mod error;
mod geometry;
mod isa;
mod local;
mod lrn;
#[cfg(feature = "rayon")]
mod par;
mod params;
pub mod plan;
mod pool;
pub mod reference;
mod simd_util;
mod tensor;

pub use activation::{relu, relu_backward, relu_in_place};
pub use backward::{
    conv2d_backward_bias, conv2d_backward_data, conv2d_backward_data_workspace_len, conv2d_backward_filter,
    conv2d_backward_filter_workspace_len, conv_transpose2d, conv_transpose2d_workspace_len,
    select_backward_data_algorithm, select_backward_filter_algorithm, BackwardAlgorithm,
    ConvTransposeGeometry,
};
#[cfg(feature = "alloc")]
pub use conv::conv2d_alloc;
pub use conv::{conv2d, conv2d_workspace_len, select_algorithm, Algorithm, Conv2dOptions};
#[cfg(feature = "std")]
pub use conv::{
    conv2d_winograd, conv2d_winograd_workspace_len, select_packed_algorithm, WinogradFilter,
    WinogradFilterBuf,
};
pub use dense::{
    fc_to_conv_filter, fully_connected, fully_connected_backward, DenseAlgorithm, FcOptions, FlattenOrder,
};
pub use error::{Axis, Dim, Error, Operand, Param, Result, Unsupported};
pub use geometry::{
    input_coord, output_extent, AxisWindow, Conv2d, ConvGeometry, Dims, FcGeometry, FilterDims, Lrn, Padding,
    Pool2d, PoolGeometry, Rounding, Window2d,
};
pub use isa::{dispatch_count, max_isa, set_max_isa, Exec, Isa};
pub use local::{
    locally_connected, locally_connected_backward_data, locally_connected_backward_filter,
    locally_connected_workspace_len,
};
pub use lrn::{lrn, lrn_backward, lrn_backward_workspace_len, lrn_workspace_len};
pub use params::{Activation, AvgPoolOptions, Epilogue};
pub use pool::{
    avg_pool2d, avg_pool2d_backward, global_avg_pool, global_avg_pool_backward, global_max_pool,
    global_max_pool_backward, l2_pool2d, l2_pool2d_backward, max_pool2d, max_pool2d_backward,
    max_pool2d_backward_recompute,
};
pub use tensor::{
    repack_filter, repack_tensor, FilterLayout, FilterView, FilterViewMut, Layout, TensorView, TensorViewMut,
};
