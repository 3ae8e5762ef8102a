//! The schema's one owner (both the delegator and results call it): migrations and the pool
//! (`db`), what proves a lease (`lease`), the job state machine (`jobstate`, `joblock`), and
//! every write of `url_results`, each with its counters in the same transaction (`terminal`;
//! `counters` is private to this crate, so no writer can forget them).

mod counters;
pub mod db;
pub mod joblock;
pub mod jobstate;
pub mod lease;
pub mod terminal;

pub use db::{connect, APP_NAME};
