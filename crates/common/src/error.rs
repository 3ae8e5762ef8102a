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

/// Postgres errors by SQLSTATE class: retryable ones become UNAVAILABLE/ABORTED.
fn db_code(e: &sqlx::Error) -> Code {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => Code::Unavailable,
        sqlx::Error::RowNotFound => Code::NotFound,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("23505") => Code::AlreadyExists,
            Some("23503") | Some("23502") | Some("23514") | Some("22P02") => Code::FailedPrecondition,
            Some("40001") | Some("40P01") => Code::Aborted,
            Some(c) if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") => {
                Code::Unavailable
            }
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
