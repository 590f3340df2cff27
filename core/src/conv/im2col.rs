//! Placeholder: to be implemented.
use super::ConvArgs;
use crate::error::Result;
use crate::tensor::TensorViewMut;

pub(crate) fn run(args: ConvArgs<'_, '_>, y: TensorViewMut<'_, f32>, workspace: &mut [f32]) -> Result<()> {
    let _ = workspace;
    let _ = (args, y);
    Err(crate::Error::Unsupported(crate::Unsupported::NeedsStd))
}
pub(crate) fn workspace_len(g: &crate::ConvGeometry, layout: crate::Layout) -> Result<usize> {
    let _ = (g, layout);
    Ok(0)
}
