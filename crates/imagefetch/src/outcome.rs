//! How one URL ended when it produced no image: the terminal status and its reason. Every
//! stage of the fetch tier (download, decode, detect, record) reports failures as this type.

use facesweep_proto::UrlStatus;

/// Why a URL ended without an image; becomes the URL's terminal status.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: UrlStatus,
    pub reason: String,
    pub http_status: u32,
}

impl Failure {
    pub fn new(status: UrlStatus, reason: impl Into<String>) -> Self {
        Failure { status, reason: reason.into(), http_status: 0 }
    }

    pub(crate) fn transient(&self) -> bool {
        matches!(self.status, UrlStatus::ConnectError | UrlStatus::Timeout)
            || matches!(self.http_status, 429 | 500 | 502 | 503 | 504)
    }
}
