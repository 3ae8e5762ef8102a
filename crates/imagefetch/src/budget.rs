//! The shared budget of body bytes held in memory (downloading or waiting for decode).
//!
//! A reservation never waits while it holds part of the budget: growing one that cannot be
//! granted at once gives everything back and then waits for the whole new size. Bodies without
//! a Content-Length grow step by step, and with hold-and-wait enough of them could fill the
//! budget with partial reservations and wait on each other forever. Every wait is bounded too.

use std::sync::Arc;
use std::time::Duration;

use facesweep_proto::UrlStatus;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::outcome::Failure;

#[derive(Clone)]
pub struct BodyBudget {
    sem: Arc<Semaphore>,
    total_kib: u32,
    wait: Duration,
}

/// Budget held for one body; returned when dropped.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

fn kib(bytes: u64) -> u32 {
    bytes.div_ceil(1024).clamp(1, u32::MAX as u64) as u32
}

impl BodyBudget {
    /// `bytes` in all; a wait for budget longer than `wait` fails the attempt.
    pub fn new(bytes: u64, wait: Duration) -> Self {
        let total_kib = kib(bytes).min(Semaphore::MAX_PERMITS as u32);
        BodyBudget { sem: Arc::new(Semaphore::new(total_kib as usize)), total_kib, wait }
    }

    #[cfg(test)]
    fn available_kib(&self) -> usize {
        self.sem.available_permits()
    }

    /// Waits (bounded) for `bytes`; more than the whole budget is capped to the whole budget.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, Failure> {
        let want = kib(bytes).min(self.total_kib);
        let acquire = self.sem.clone().acquire_many_owned(want);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(Reservation { permit: Some(permit), bytes }),
            Ok(Err(_)) => unreachable!("the body budget is never closed"),
            Err(_) => Err(Failure::new(
                UrlStatus::Timeout,
                format!("no body memory free within {:?} (fetcher overloaded)", self.wait),
            )),
        }
    }

    /// Grows `r` to `bytes`: at once if the budget has room, else by giving `r` back first.
    pub async fn grow(&self, r: &mut Reservation, bytes: u64) -> Result<(), Failure> {
        let (have, want) = (kib(r.bytes).min(self.total_kib), kib(bytes).min(self.total_kib));
        if want > have {
            match self.sem.clone().try_acquire_many_owned(want - have) {
                Ok(extra) => r.permit.as_mut().expect("held until dropped").merge(extra),
                Err(_) => {
                    r.permit = None;
                    *r = self.reserve(bytes).await?;
                }
            }
        }
        r.bytes = bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn growth_never_waits_while_holding() {
        // Two partial reservations that both need to grow past what is left: with
        // hold-and-wait each would wait on the other forever.
        let b = BodyBudget::new(4 << 10, Duration::from_secs(5));
        let mut x = b.reserve(2 << 10).await.unwrap();
        let mut y = b.reserve(2 << 10).await.unwrap();
        let grow_x = async {
            b.grow(&mut x, 3 << 10).await.unwrap();
            drop(x);
        };
        let grow_y = async {
            b.grow(&mut y, 3 << 10).await.unwrap();
            drop(y);
        };
        tokio::time::timeout(Duration::from_secs(2), futures::future::join(grow_x, grow_y))
            .await
            .expect("growth deadlocked");
        assert_eq!(b.available_kib(), 4);
    }

    #[tokio::test]
    async fn waits_are_bounded_and_oversized_asks_are_capped() {
        let b = BodyBudget::new(4 << 10, Duration::from_millis(50));
        let whole = b.reserve(1 << 40).await.unwrap();
        let f = b.reserve(1024).await.err().expect("budget is exhausted");
        assert_eq!(f.status, UrlStatus::Timeout);
        assert!(f.reason.contains("no body memory"), "{}", f.reason);
        drop(whole);
        assert!(b.reserve(1024).await.is_ok());
    }
}
