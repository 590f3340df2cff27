//! The oracle: naive loops written straight from the notes' definitions, generic over
//! [`num_traits::Float`] (run them in `f64` to get a near-exact answer for `f32` kernels).
//!
//! Every fast kernel in the crate is tested against these functions. They favour being
//! obviously right over being fast, but take the same views and geometries as the kernels
//! and check their arguments the same way, so they double as a portable slow path.
//!
//! The central formula is the notes' `V[x, y, d] = sum(X[window(x, y)] * W_d) + b_d`.

mod conv;
mod dense;
mod pool;

pub use conv::{
    conv2d, conv2d_at, conv2d_backward_bias, conv2d_backward_data, conv2d_backward_filter, locally_connected,
    locally_connected_backward_data, locally_connected_backward_filter, LocalWeightsDims,
};
pub use dense::{fully_connected, fully_connected_backward, lrn, lrn_backward, relu, relu_backward};
pub use pool::{
    avg_pool2d, avg_pool2d_backward, global_avg_pool, global_max_pool, l2_pool2d, l2_pool2d_backward,
    max_pool2d, max_pool2d_backward, pool_window_taps,
};

use crate::error::{Operand, Result};
use crate::tensor::expect_dims;

pub(crate) fn expect(operand: Operand, expected: [usize; 4], actual: [usize; 4]) -> Result<()> {
    expect_dims(operand, expected, actual)
}
