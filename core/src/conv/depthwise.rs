//! Placeholder: to be implemented.
use super::ConvArgs;
use crate::error::Result;
use crate::tensor::TensorViewMut;

pub(crate) fn run(args: ConvArgs<'_, '_>, y: TensorViewMut<'_, f32>) -> Result<()> {
    let _ = (args, y);
    Err(crate::Error::Unsupported(crate::Unsupported::NeedsStd))
}
