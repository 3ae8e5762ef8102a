//! What a user reads when a command fails: one table from a gRPC status (or a connection
//! that never came up) to a line saying what went wrong and what to do next. No tonic
//! debug text reaches the terminal.

use tonic::Code;

/// The service a command talked to, for messages.
#[derive(Clone, Debug)]
pub struct Target {
    /// `delegator` or `results`; also the name of the flag that sets its address.
    pub service: &'static str,
    pub addr: String,
    /// The job the command named, if any.
    pub job: Option<String>,
}

/// Exit status of a command that failed.
pub const EXIT_ERROR: u8 = 1;
/// Exit status of a `run`/`demo` that finished with no URL ok (every URL failed).
pub const EXIT_ALL_FAILED: u8 = 3;

/// The line to print for `e`, a failed command's error.
pub fn explain(e: &anyhow::Error, t: Option<&Target>) -> String {
    let status = e.chain().find_map(|c| c.downcast_ref::<tonic::Status>());
    let unreachable = e.chain().any(|c| c.downcast_ref::<tonic::transport::Error>().is_some());
    match (status, t) {
        (Some(s), Some(t)) => for_status(s.code(), s.message(), t),
        (Some(s), None) => without_target(s.code(), s.message()),
        (None, Some(t)) if unreachable => for_status(Code::Unavailable, "", t),
        (None, _) => format!("{e:#}"),
    }
}

/// A status from a call with no one address (a whole `run`): the message, or what it means.
fn without_target(code: Code, message: &str) -> String {
    match code {
        Code::Unavailable | Code::DeadlineExceeded => {
            format!("a facesweep service stopped answering ({message}); run the command again to resume")
        }
        Code::Unauthenticated | Code::PermissionDenied => {
            format!("refused ({message}): pass --admin-token TOKEN or FACESWEEP_ADMIN_TOKEN")
        }
        Code::Internal | Code::Unknown | Code::DataLoss => format!("a facesweep service failed: {message}"),
        _ => message.to_string(),
    }
}

/// The table: one line per status code a user can meet.
pub fn for_status(code: Code, message: &str, t: &Target) -> String {
    let Target { service, addr, job } = t;
    match code {
        Code::Unavailable => {
            format!("no {service} at {addr} — start `facesweep up` or pass --{service}")
        }
        Code::NotFound => match job {
            Some(job) => format!("no job named {job}; `facesweep jobs` lists them"),
            None => message.to_string(),
        },
        Code::Unauthenticated | Code::PermissionDenied => format!(
            "the {service} at {addr} refused this call ({message}): pass the token it was started with, \
             --admin-token TOKEN or FACESWEEP_ADMIN_TOKEN, or call it from loopback"
        ),
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange => {
            message.to_string()
        }
        Code::DeadlineExceeded => format!("the {service} at {addr} did not answer in time; try again"),
        Code::ResourceExhausted => format!("the {service} at {addr} is overloaded ({message}); try again"),
        _ => format!("the {service} at {addr} failed: {message}"),
    }
}

/// A `run` that finished with no URL ok: exits `EXIT_ALL_FAILED` after its summary.
#[derive(Debug)]
pub struct AllFailed {
    pub urls: u64,
    /// `status=count …` of the failures.
    pub statuses: String,
    pub out: std::path::PathBuf,
}

impl std::fmt::Display for AllFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { urls, statuses, out } = self;
        write!(f, "all {urls} URLs failed ({statuses}); each line of {} says why", out.display())
    }
}

impl std::error::Error for AllFailed {}

/// `AllFailed` when a finished run has URLs and none of them ok.
pub fn some_ok(s: &crate::RunSummary, out: &std::path::Path) -> anyhow::Result<()> {
    let by = &s.export.by_status;
    if s.export.lines == 0 || by.get("ok").copied().unwrap_or(0) > 0 {
        return Ok(());
    }
    let statuses: Vec<String> = by.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Err(AllFailed { urls: s.export.lines, statuses: statuses.join(" "), out: out.to_path_buf() }.into())
}

/// The exit status for a failed command's error.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<AllFailed>().is_some() {
        EXIT_ALL_FAILED
    } else {
        EXIT_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target { service: "delegator", addr: "127.0.0.1:50051".into(), job: Some("photos".into()) }
    }

    #[test]
    fn statuses_read_as_what_to_do_next() {
        let t = target();
        let e = anyhow::Error::from(tonic::Status::not_found("job \"photos\" not found"));
        assert_eq!(explain(&e, Some(&t)), "no job named photos; `facesweep jobs` lists them");
        let e = anyhow::Error::from(tonic::Status::unavailable("tcp connect error"));
        assert!(explain(&e, Some(&t)).starts_with("no delegator at 127.0.0.1:50051 — start `facesweep up`"));
        let e = anyhow::Error::from(tonic::Status::invalid_argument("priority must be in -100..=100"));
        assert_eq!(explain(&e, Some(&t)), "priority must be in -100..=100");
        let e = anyhow::Error::from(tonic::Status::unauthenticated("admin token required"));
        assert!(explain(&e, Some(&t)).contains("--admin-token"), "{}", explain(&e, Some(&t)));
        let e = anyhow::Error::from(tonic::Status::internal("boom")).context("export");
        let text = explain(&e, None);
        assert_eq!(text, "a facesweep service failed: boom");
        let e = anyhow::Error::from(tonic::Status::failed_precondition("job is cancelled"));
        assert_eq!(explain(&e, None), "job is cancelled");
    }
}
