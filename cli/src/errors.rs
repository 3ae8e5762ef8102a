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
/// Exit status of a `run` ended by Ctrl-C (SIGINT), as a shell reports one (128 + 2).
pub const EXIT_INTERRUPTED: u8 = 130;

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
        _ => reworded(message),
    }
}

/// The prefixes a service's error type puts before its message (`ServiceError`'s Display):
/// the code is already in the status, a user needs the message alone.
const CODE_PREFIXES: [&str; 5] =
    ["invalid argument: ", "failed precondition: ", "not found: ", "resource exhausted: ", "unavailable: "];

/// A service's message as the CLI's user reads it: without its code prefix, and with the
/// service's words for request fields replaced by the CLI's flags and commands.
pub fn reworded(message: &str) -> String {
    let m = CODE_PREFIXES.iter().find_map(|p| message.strip_prefix(p)).unwrap_or(message);
    if m.contains("set force to do it") {
        return "retrying status ok deletes the stored faces of every ok URL: pass --force to do it".into();
    }
    if let Some(rest) = m.strip_prefix("cursor ") {
        if let Some(cursor) = rest.strip_suffix(" is not one WatchResults sent") {
            return format!(
                "--after {cursor} is not a cursor: pass the `cursor` of a line `facesweep watch` printed"
            );
        }
    }
    if let Some((head, _)) = m.split_once(": give the new input another job name") {
        let job = head.strip_prefix("job \"").and_then(|r| r.split_once('"')).map_or("NAME", |(j, _)| j);
        return format!(
            "{head}: pass --job NAME to start a new job for it, or `facesweep import --job {job} FILE` \
             to add a different file's URLs to this job"
        );
    }
    m.to_string()
}

/// The table: one line per status code a user can meet.
pub fn for_status(code: Code, message: &str, t: &Target) -> String {
    let Target { service, addr, job } = t;
    match code {
        Code::Unavailable => {
            format!(
                "no {service} at {addr} — start `facesweep up` or pass --{service} (or --data-dir DIR \
                 of an earlier run)"
            )
        }
        Code::NotFound => match job {
            Some(job) => format!("no job named {job}; `facesweep jobs` lists them"),
            None => reworded(message),
        },
        Code::Unauthenticated | Code::PermissionDenied => format!(
            "the {service} at {addr} refused this call ({message}): pass the token it was started with, \
             --admin-token TOKEN or FACESWEEP_ADMIN_TOKEN, or call it from loopback"
        ),
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange => {
            reworded(message)
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
        let all = if *urls == 1 { "the only URL".to_string() } else { format!("all {urls} URLs") };
        write!(f, "{all} failed ({statuses}); each line of {} says why", out.display())
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

/// Whether `e` is a write to a closed pipe (stdout read by `head`, which stopped reading).
pub fn broken_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == BrokenPipe)
            || c.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind)
                == Some(BrokenPipe)
    })
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

    #[test]
    fn a_closed_stdout_is_a_broken_pipe_and_nothing_else_is() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(broken_pipe(&anyhow::Error::from(pipe).context("write")));
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!broken_pipe(&anyhow::Error::from(other)));
        assert!(!broken_pipe(&anyhow::anyhow!("broken pipe")));
        let json = serde_json::Error::io(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(broken_pipe(&anyhow::Error::from(json)));
    }

    /// Service wording (code prefixes, request field names) never reaches the user.
    #[test]
    fn service_messages_read_in_the_clis_words() {
        let t = target();
        let e = anyhow::Error::from(tonic::Status::invalid_argument(
            "invalid argument: unknown status \"bogus\"",
        ));
        assert_eq!(explain(&e, Some(&t)), "unknown status \"bogus\"");
        let e = anyhow::Error::from(tonic::Status::invalid_argument(
            "invalid argument: retrying status ok deletes stored faces: set force to do it",
        ));
        let text = explain(&e, Some(&t));
        assert!(text.contains("pass --force") && !text.contains("set force"), "{text}");
        let e = anyhow::Error::from(tonic::Status::invalid_argument(
            "invalid argument: cursor \"garbage\" is not one WatchResults sent",
        ));
        let text = explain(&e, Some(&t));
        assert!(text.contains("`cursor` of a line `facesweep watch` printed"), "{text}");
        assert!(!text.contains("WatchResults"), "{text}");
        let e = anyhow::Error::from(tonic::Status::failed_precondition(
            "failed precondition: job \"urls\" was made from another input (sha256:a, now sha256:b): \
             give the new input another job name",
        ));
        let text = explain(&e, None);
        assert!(text.starts_with("job \"urls\" was made from another input"), "{text}");
        assert_eq!(text.matches("job NAME").count(), 1, "{text}");
        assert!(text.contains("`facesweep import --job urls FILE`"), "{text}");
        let e = anyhow::Error::from(tonic::Status::unavailable("tcp connect error"));
        assert!(explain(&e, Some(&t)).ends_with("(or --data-dir DIR of an earlier run)"));
    }
}
