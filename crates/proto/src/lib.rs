//! Generated types for the `facesweep.v1` protocol.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("facesweep.v1");
}

/// Encoded `FileDescriptorSet` of every facesweep proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/facesweep_descriptor.bin"));

pub use v1::*;

impl UrlStatus {
    /// Short lowercase name used in exports, the database and the CLI (`ok`, `http_error`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            UrlStatus::Unspecified => "unspecified",
            UrlStatus::Ok => "ok",
            UrlStatus::HttpError => "http_error",
            UrlStatus::Timeout => "timeout",
            UrlStatus::NotAnImage => "not_an_image",
            UrlStatus::DecodeError => "decode_error",
            UrlStatus::TooLarge => "too_large",
            UrlStatus::InvalidUrl => "invalid_url",
            UrlStatus::ConnectError => "connect_error",
            UrlStatus::DetectError => "detect_error",
            UrlStatus::Abandoned => "abandoned",
            UrlStatus::Blocked => "blocked",
            UrlStatus::Cancelled => "cancelled",
        }
    }

    pub fn from_short_name(s: &str) -> Option<Self> {
        ALL_STATUSES.iter().copied().find(|st| st.short_name() == s)
    }

    /// The short names a finished URL can have (all but `unspecified`), in proto order: what
    /// an error about an unknown status lists.
    pub fn finished_names() -> impl Iterator<Item = &'static str> {
        ALL_STATUSES.iter().filter(|st| **st != UrlStatus::Unspecified).map(|st| st.short_name())
    }
}

pub const ALL_STATUSES: [UrlStatus; 13] = [
    UrlStatus::Unspecified,
    UrlStatus::Ok,
    UrlStatus::HttpError,
    UrlStatus::Timeout,
    UrlStatus::NotAnImage,
    UrlStatus::DecodeError,
    UrlStatus::TooLarge,
    UrlStatus::InvalidUrl,
    UrlStatus::ConnectError,
    UrlStatus::DetectError,
    UrlStatus::Abandoned,
    UrlStatus::Blocked,
    UrlStatus::Cancelled,
];

/// A whole job's export: `export(addr, "job", …)`.
impl From<&str> for ExportResultsRequest {
    fn from(job: &str) -> Self {
        ExportResultsRequest { job: job.to_string(), ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_round_trip() {
        for st in ALL_STATUSES {
            assert_eq!(UrlStatus::from_short_name(st.short_name()), Some(st));
        }
        assert_eq!(UrlStatus::from_short_name("nope"), None);
        let names: Vec<_> = UrlStatus::finished_names().collect();
        assert_eq!((names.len(), names[0], names[11]), (12, "ok", "cancelled"));
    }

    #[test]
    fn descriptor_set_names_every_service() {
        let s = String::from_utf8_lossy(FILE_DESCRIPTOR_SET);
        for svc in ["DelegatorService", "DetectorService", "ResultsService"] {
            assert!(s.contains(svc), "{svc} missing from descriptor set");
        }
    }
}
