//! A process-wide bound on the bytes that downloads hold in memory at once.
//!
//! The connectors read a file whole before publishing it (its SHA-256 is its
//! id, and the raw zone takes it in one `put`). One task per endpoint, each
//! allowed a file of up to its `max_file_bytes`, would make the worst case
//! `endpoints × max_file_bytes`: unbounded as facilities are added. Every
//! download therefore holds a share of one [`ByteBudget`] for as long as its
//! bytes live: the file's announced size when it is known (FTP `LIST`, HTTP
//! `Content-Length`), its endpoint's limit when it is not. A download waits
//! for its share; the others go on. The budget is the memory figure written
//! next to each connector's pod limit.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes per permit: a semaphore counts in `u32` steps per acquisition, so
/// bytes are counted in KiB (4 TiB at most per hold).
const UNIT: u64 = 1024;

/// Shared by every download task of a process; cloning shares it.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    total_bytes: u64,
}

/// A download's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Held {
    permit: OwnedSemaphorePermit,
    budget: ByteBudget,
}

impl ByteBudget {
    /// A budget of `total_bytes` (rounded up to whole KiB).
    pub fn new(total_bytes: u64) -> Self {
        let units = total_bytes
            .div_ceil(UNIT)
            .min(Semaphore::MAX_PERMITS as u64);
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            total_bytes: units * UNIT,
        }
    }

    /// The whole budget, in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Bytes not held by any download now.
    pub fn available_bytes(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }

    /// Waits until `bytes` (at most the whole budget) are free and holds
    /// them. A file larger than the budget holds all of it: it then runs
    /// alone, never waits forever.
    pub async fn hold(&self, bytes: u64) -> Held {
        let units = self.units(bytes);
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        Held {
            permit,
            budget: self.clone(),
        }
    }

    fn units(&self, bytes: u64) -> u32 {
        let total = self.total_bytes / UNIT;
        u32::try_from(bytes.div_ceil(UNIT).clamp(1, total.max(1))).unwrap_or(u32::MAX)
    }
}

impl Held {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.permit.num_permits() as u64 * UNIT
    }

    /// Holds at least `bytes` in all, without waiting: `false` when the
    /// budget has no room for the growth now (the download gives up and is
    /// tried again later; waiting while holding could deadlock two growing
    /// downloads). Growth past the whole budget is refused.
    pub fn grow_to(&mut self, bytes: u64) -> bool {
        if bytes <= self.bytes() {
            return true;
        }
        if bytes > self.budget.total_bytes {
            return false;
        }
        let more = self.budget.units(bytes) - self.permit.num_permits() as u32;
        match self.budget.permits.clone().try_acquire_many_owned(more) {
            Ok(extra) => {
                self.permit.merge(extra);
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn downloads_wait_for_their_share_and_give_it_back() {
        let budget = ByteBudget::new(10 * 1024);
        let first = budget.hold(6 * 1024).await;
        assert_eq!(first.bytes(), 6 * 1024);
        assert_eq!(budget.available_bytes(), 4 * 1024);

        // The second does not fit until the first is done.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.hold(6 * 1024).await.bytes() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "6 + 6 KiB exceed a 10 KiB budget");
        drop(first);
        assert_eq!(waiting.await.unwrap(), 6 * 1024);
        assert_eq!(budget.available_bytes(), 10 * 1024);
    }

    #[tokio::test]
    async fn a_file_larger_than_the_budget_holds_all_of_it() {
        let budget = ByteBudget::new(4 * 1024);
        let held = budget.hold(1 << 30).await;
        assert_eq!(held.bytes(), 4 * 1024);
        assert_eq!(budget.available_bytes(), 0);
        // Sizes round up to whole KiB; an empty file still holds one.
        drop(held);
        assert_eq!(budget.hold(1).await.bytes(), 1024);
        assert_eq!(budget.hold(0).await.bytes(), 1024);
    }

    #[tokio::test]
    async fn growth_takes_free_room_or_gives_up_without_waiting() {
        let budget = ByteBudget::new(8 * 1024);
        let mut held = budget.hold(2 * 1024).await;
        assert!(held.grow_to(2 * 1024), "no growth needed");
        assert!(held.grow_to(5 * 1024));
        assert_eq!(held.bytes(), 5 * 1024);
        let other = budget.hold(3 * 1024).await;
        assert!(!held.grow_to(6 * 1024), "the other holds the rest");
        assert_eq!(
            held.bytes(),
            5 * 1024,
            "a refused growth holds nothing more"
        );
        assert!(!held.grow_to(9 * 1024), "past the whole budget");
        drop(other);
        assert!(held.grow_to(8 * 1024));
        drop(held);
        assert_eq!(budget.available_bytes(), 8 * 1024);
    }
}
