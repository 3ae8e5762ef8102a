//! Every way a detection call fails, and the one table from each to its gRPC code.

use tonic::{Code, Status};

use crate::batcher::{DetectError, SubmitError};
use crate::input::InvalidImage;

#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error("image is required")]
    MissingImage,
    #[error(transparent)]
    Invalid(#[from] InvalidImage),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    /// The model thread ended with the image unanswered, or a stream's work could not queue.
    #[error("detector shutting down")]
    ShuttingDown,
}

impl DetectorError {
    pub fn code(&self) -> Code {
        match self {
            DetectorError::MissingImage | DetectorError::Invalid(_) => Code::InvalidArgument,
            DetectorError::Submit(SubmitError::QueueFull) => Code::ResourceExhausted,
            DetectorError::Submit(SubmitError::Closed) | DetectorError::ShuttingDown => Code::Unavailable,
            DetectorError::Detect(_) => Code::Internal,
        }
    }
}

impl From<DetectorError> for Status {
    fn from(e: DetectorError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_code() {
        let cases = [
            (DetectorError::Invalid(InvalidImage::Scale), Code::InvalidArgument),
            (SubmitError::QueueFull.into(), Code::ResourceExhausted),
            (SubmitError::Closed.into(), Code::Unavailable),
            (DetectError::Model("bad".into()).into(), Code::Internal),
            (DetectorError::ShuttingDown, Code::Unavailable),
        ];
        for (e, code) in cases {
            assert_eq!(Status::from(e).code(), code);
        }
    }
}
