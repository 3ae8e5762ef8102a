//! The one table from internal errors to gRPC status codes.

use tonic::{Code, Status};

/// Errors every service can return; each maps to exactly one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn code(&self) -> Code {
        match self {
            ServiceError::InvalidArgument(_) => Code::InvalidArgument,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::Database(e) => db_code(e),
            ServiceError::Internal(_) => Code::Internal,
        }
    }
}

/// PostgreSQL SQLSTATE codes and classes this table names (PostgreSQL manual, appendix A).
mod sqlstate {
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const CHECK_VIOLATION: &str = "23514";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const DEADLOCK_DETECTED: &str = "40P01";
    /// Class 08 (connection exception), 57P (operator intervention: shutdown, restart),
    /// 53 (insufficient resources): worth retrying elsewhere or later.
    pub const UNAVAILABLE_CLASSES: [&str; 3] = ["08", "57P", "53"];
}

/// Postgres errors by SQLSTATE class: retryable ones become UNAVAILABLE/ABORTED.
fn db_code(e: &sqlx::Error) -> Code {
    use sqlstate::*;
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => Code::Unavailable,
        sqlx::Error::RowNotFound => Code::NotFound,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(UNIQUE_VIOLATION) => Code::AlreadyExists,
            Some(
                FOREIGN_KEY_VIOLATION | NOT_NULL_VIOLATION | CHECK_VIOLATION | INVALID_TEXT_REPRESENTATION,
            ) => Code::FailedPrecondition,
            Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED) => Code::Aborted,
            Some(c) if UNAVAILABLE_CLASSES.iter().any(|class| c.starts_with(class)) => Code::Unavailable,
            _ => Code::Internal,
        },
        _ => Code::Internal,
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        let code = e.code();
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        Status::new(code, e.to_string())
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_table() {
        assert_eq!(Status::from(ServiceError::InvalidArgument("x".into())).code(), Code::InvalidArgument);
        assert_eq!(Status::from(ServiceError::Database(sqlx::Error::PoolTimedOut)).code(), Code::Unavailable);
        assert_eq!(Status::from(ServiceError::Database(sqlx::Error::RowNotFound)).code(), Code::NotFound);
        let s = Status::from(ServiceError::ResourceExhausted("queue full".into()));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("queue full"));
    }
}
