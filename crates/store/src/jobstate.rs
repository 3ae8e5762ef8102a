//! The job lifecycle as one state machine: every operator action's allowed states in one
//! table (`next`), checked and applied under the job's exclusive lock (`transition_in`) by
//! imports, retries and operator actions alike. docs/operations.md, "Job states", is this
//! table in words.

use facesweep_common::error::{ServiceError, ServiceResult};
use facesweep_proto::JobState;

/// A job's state as stored in `jobs.state` (migration 0015).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    Paused,
    /// Leases revoked, URLs being marked `cancelled`; the sweeper finishes an interrupted one.
    Cancelling,
    Cancelled,
    /// Every URL has a result.
    Done,
    /// Being removed; the sweeper finishes an interrupted one.
    Deleting,
}

/// What an operator (or an import) asks of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Append,
    Retry,
    Pause,
    Resume,
    Cancel,
    Delete,
    SetPriority,
}

impl State {
    pub fn parse(s: &str) -> ServiceResult<State> {
        Ok(match s {
            "running" => State::Running,
            "paused" => State::Paused,
            "cancelling" => State::Cancelling,
            "cancelled" => State::Cancelled,
            "done" => State::Done,
            "deleting" => State::Deleting,
            other => return Err(ServiceError::Internal(format!("unknown job state {other:?}"))),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Cancelling => "cancelling",
            State::Cancelled => "cancelled",
            State::Done => "done",
            State::Deleting => "deleting",
        }
    }

    pub fn proto(self) -> JobState {
        match self {
            State::Running => JobState::Running,
            State::Paused => JobState::Paused,
            State::Cancelling => JobState::Cancelling,
            State::Cancelled => JobState::Cancelled,
            State::Done => JobState::Done,
            State::Deleting => JobState::Deleting,
        }
    }
}

/// The state `action` leads to from `from`; `None`: refused in that state.
pub fn next(action: Action, from: State) -> Option<State> {
    use Action::*;
    use State::*;
    match (action, from) {
        // New or re-opened URLs: a finished job runs again; a paused one stays paused.
        (Append | Retry, Running | Done) => Some(Running),
        (Append | Retry, Paused) => Some(Paused),
        (Pause, Running | Paused) => Some(Paused),
        (Resume, Paused | Running) => Some(Running),
        (Resume, Done) => Some(Done),
        (Cancel, Running | Paused | Done | Cancelling) => Some(Cancelling),
        (Cancel, Cancelled) => Some(Cancelled),
        (SetPriority, Running | Paused | Done) => Some(from),
        (Delete, _) => Some(Deleting),
        _ => None,
    }
}

/// `next`, or FAILED_PRECONDITION saying what the job is and what can be done instead.
pub fn check(action: Action, from: State) -> ServiceResult<State> {
    next(action, from).ok_or_else(|| {
        let hint = match from {
            State::Cancelling | State::Cancelled => "a cancelled job can only be deleted; create a new job",
            State::Deleting => "it is being deleted; its name is free again once that finishes",
            State::Done => "it has finished; append URLs or retry a status to run it again",
            _ => "resume it first",
        };
        ServiceError::FailedPrecondition(format!("{action:?} refused: the job is {}; {hint}", from.as_str()))
    })
}

/// The job's state (`None` when it no longer exists).
pub async fn job_state(tx: &mut sqlx::PgConnection, job_id: i64) -> ServiceResult<Option<State>> {
    let s: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
    s.map(|s| State::parse(&s)).transpose()
}

/// Checks `action` against the job's state under its exclusive lock (held to the end of
/// `tx`) and stores the state it leads to. Imports, retries and operator actions all pass
/// here, so none can slip past a cancel or a delete.
pub async fn transition_in(tx: &mut sqlx::PgConnection, job_id: i64, action: Action) -> ServiceResult<State> {
    crate::joblock::job_lock(&mut *tx, job_id, true).await?;
    let from = job_state(&mut *tx, job_id)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("job id {job_id}")))?;
    let to = check(action, from)?;
    if to != from {
        sqlx::query("UPDATE jobs SET state = $2 WHERE id = $1")
            .bind(job_id)
            .bind(to.as_str())
            .execute(&mut *tx)
            .await?;
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [State; 6] =
        [State::Running, State::Paused, State::Cancelling, State::Cancelled, State::Done, State::Deleting];

    #[test]
    fn nothing_leaves_cancelled_or_deleting_but_delete() {
        for a in [Action::Append, Action::Retry, Action::Pause, Action::Resume, Action::SetPriority] {
            for s in [State::Cancelling, State::Cancelled, State::Deleting] {
                assert_eq!(next(a, s), None, "{a:?} from {s:?}");
                assert!(check(a, s).is_err());
            }
        }
        for s in ALL {
            assert_eq!(next(Action::Delete, s), Some(State::Deleting));
        }
    }

    #[test]
    fn finished_jobs_run_again_on_new_work_and_states_round_trip() {
        assert_eq!(next(Action::Append, State::Done), Some(State::Running));
        assert_eq!(next(Action::Retry, State::Done), Some(State::Running));
        assert_eq!(next(Action::Retry, State::Cancelled), None);
        assert_eq!(next(Action::Cancel, State::Cancelling), Some(State::Cancelling), "resumable");
        for s in ALL {
            assert_eq!(State::parse(s.as_str()).unwrap(), s);
        }
    }
}
