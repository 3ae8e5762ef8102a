//! The status names users type (`--status` of `sheet` and `retry`): a URL's result status by
//! its short name (`ok`, `http_error`, ...), or `pending` for a URL without a result yet.

use facesweep_proto::UrlStatus;

/// The name of a URL that has no result yet (exports, sheets).
pub const PENDING: &str = "pending";

/// What a `--status` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Not finished yet.
    Pending,
    /// Finished with this status.
    Done(UrlStatus),
}

/// `s` as a status name, or an error listing the names there are.
pub fn parse(s: &str) -> anyhow::Result<Filter> {
    if s == PENDING {
        return Ok(Filter::Pending);
    }
    match UrlStatus::from_short_name(s) {
        Some(st) if st != UrlStatus::Unspecified => Ok(Filter::Done(st)),
        _ => anyhow::bail!("unknown status {s:?}; the statuses are {}", names()),
    }
}

/// Refuses a status `retry` cannot re-queue: an unknown name, or `pending` (those URLs are
/// still to be processed; retry re-queues finished ones).
pub fn retryable(s: &str) -> anyhow::Result<()> {
    match parse(s)? {
        Filter::Pending => anyhow::bail!(
            "pending URLs have not finished yet: nothing to retry; `facesweep progress` shows them"
        ),
        Filter::Done(_) => Ok(()),
    }
}

/// Every name, comma-separated.
fn names() -> String {
    UrlStatus::finished_names().chain([PENDING]).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_retry_refuses_pending_and_unknown_names() {
        assert_eq!(parse("pending").unwrap(), Filter::Pending);
        assert_eq!(parse("http_error").unwrap(), Filter::Done(UrlStatus::HttpError));
        let e = parse("bogus").unwrap_err().to_string();
        assert!(e.starts_with("unknown status \"bogus\"; the statuses are ok, "), "{e}");
        assert!(e.ends_with(", cancelled, pending"), "{e}");
        assert!(parse("unspecified").is_err());
        assert!(retryable("timeout").is_ok() && retryable("ok").is_ok());
        let e = retryable("pending").unwrap_err().to_string();
        assert!(e.contains("pending URLs have not finished yet: nothing to retry"), "{e}");
        assert!(e.contains("`facesweep progress` shows them"), "{e}");
        assert!(retryable("bogus").unwrap_err().to_string().contains("unknown status"));
    }
}
