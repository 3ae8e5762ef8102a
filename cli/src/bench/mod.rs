//! `facesweep bench …`: each tier measured alone, and the GPU tier's one-command report.
//! Nothing outside the bench commands uses these modules.

pub mod gpu;
mod gpureport;
pub mod scale;
