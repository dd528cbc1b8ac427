//! Upload slots: how many uploads run at once, how many of them one
//! facility may hold, and how much memory they may hold together.
//!
//! Three bounds, checked when an upload starts and as its body arrives:
//!
//! - **A facility's share** (`max_uploads_per_facility`): one more upload
//!   of a facility that has its share in progress is answered `429`; the
//!   others are still served. One facility's slow uploads cost that
//!   facility alone.
//! - **Slots** (`max_concurrent_uploads`): uploads of all facilities
//!   together; one more is answered `503`.
//! - **Memory** (`max_upload_memory_bytes`): uploads are buffered whole (a
//!   file is hashed, then written and published in one piece), so memory,
//!   not the number of uploads, is what runs out. Each upload charges the
//!   budget as its bytes arrive, in steps of [`CHARGE_STEP_BYTES`], for
//!   what it will hold: its bytes, three times over while the file is
//!   small enough to go inline to Kafka (the producer's copy and the
//!   compressed batch live until the broker acks). Charging what arrived,
//!   rather than what `Content-Length` announces, means a client cannot
//!   hold memory it never sends. An upload the budget cannot cover is
//!   answered `503` at once, never made to wait: waiting uploads would hold
//!   what they have while waiting for each other.
//!
//! Everything an upload holds is returned when its [`UploadSlot`] is
//! dropped, whatever the outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics;

/// Granularity of memory charges: an upload holds at most this much more
/// than it needs, and charges about once per this many bytes received.
pub const CHARGE_STEP_BYTES: usize = 256 * 1024;

/// Memory is counted in KiB, so a budget of any size fits the semaphore's
/// `u32` permit counts.
const UNIT: usize = 1024;

/// The bounds (from [`crate::config::ApiConnectorConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub max_uploads: usize,
    pub max_per_facility: usize,
    pub max_memory_bytes: usize,
    /// Files up to this size go inline to Kafka (`ingest.inline_limit_bytes`).
    pub inline_limit_bytes: usize,
}

impl UploadLimits {
    /// Memory one upload of `bytes` holds at most: the bytes, three times
    /// over when they go inline to Kafka. `expected` is the exact length
    /// when known (`Content-Length` of a `PUT`); without it a body is
    /// charged as inline until it passes the inline limit.
    pub fn cost(&self, bytes: usize, expected: Option<usize>) -> usize {
        let inline = expected.unwrap_or(bytes) <= self.inline_limit_bytes;
        if inline {
            bytes.saturating_mul(3)
        } else {
            bytes
        }
    }

    /// The most one upload of at most `max_body_bytes` can hold.
    pub fn worst_cost(&self, max_body_bytes: usize) -> usize {
        let inline_max = self.inline_limit_bytes.min(max_body_bytes);
        self.cost(inline_max, None).max(max_body_bytes)
    }

    /// Whether one facility at its share can hold the whole memory budget,
    /// and so keep the others out.
    pub fn one_facility_fills_memory(&self, max_body_bytes: usize) -> bool {
        self.max_per_facility
            .saturating_mul(self.worst_cost(max_body_bytes))
            >= self.max_memory_bytes
    }

    /// Limits that can never take a file of `max_body_bytes`, or no upload
    /// at all, are a configuration error.
    pub fn check(&self, max_body_bytes: usize) -> Result<(), String> {
        if self.max_uploads == 0 || self.max_per_facility == 0 {
            return Err("api_connector.max_concurrent_uploads and \
                 max_uploads_per_facility must be at least 1"
                .to_string());
        }
        let worst = self.worst_cost(max_body_bytes);
        if self.max_memory_bytes < worst {
            return Err(format!(
                "api_connector.max_upload_memory_bytes ({}) must be at least {worst}: the most one \
                 upload of max_body_bytes ({max_body_bytes}) holds with inline_limit_bytes ({})",
                self.max_memory_bytes, self.inline_limit_bytes
            ));
        }
        Ok(())
    }
}

/// Why an upload was not given room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The facility has `max_uploads_per_facility` uploads in progress.
    FacilityShare { limit: usize },
    /// All facilities together have `max_concurrent_uploads` in progress.
    Slots,
    /// The upload memory budget cannot cover this upload's next bytes.
    Memory,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::FacilityShare { .. } => "facility_share",
            Refusal::Slots => "slots",
            Refusal::Memory => "memory",
        }
    }

    fn counted(self) -> Self {
        metrics::UPLOADS_REFUSED
            .with_label_values(&[self.reason()])
            .inc();
        self
    }
}

/// The slots and the memory budget every upload draws from.
#[derive(Debug)]
pub struct UploadSlots {
    limits: UploadLimits,
    uploads: Arc<Semaphore>,
    /// One permit per KiB of the budget.
    memory: Arc<Semaphore>,
    /// Uploads in progress per facility (facilities with none are absent).
    held: Mutex<HashMap<String, usize>>,
}

impl UploadSlots {
    pub fn new(limits: UploadLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            uploads: Arc::new(Semaphore::new(limits.max_uploads)),
            memory: Arc::new(Semaphore::new(
                (limits.max_memory_bytes / UNIT).min(Semaphore::MAX_PERMITS),
            )),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one upload of `facility_id`, or why there is none.
    pub fn acquire(self: &Arc<Self>, facility_id: &str) -> Result<UploadSlot, Refusal> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let limit = self.limits.max_per_facility;
        if held.get(facility_id).copied().unwrap_or(0) >= limit {
            return Err(Refusal::FacilityShare { limit }.counted());
        }
        let permit = self
            .uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Slots.counted())?;
        *held.entry(facility_id.to_string()).or_default() += 1;
        metrics::UPLOADS_IN_PROGRESS.inc();
        Ok(UploadSlot {
            slots: self.clone(),
            facility_id: facility_id.to_string(),
            _upload: permit,
            memory: None,
        })
    }

    fn release(&self, facility_id: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(facility_id) {
            *count -= 1;
            if *count == 0 {
                held.remove(facility_id);
            }
        }
        metrics::UPLOADS_IN_PROGRESS.dec();
    }
}

/// One upload's room: its slot and the memory it charged. Dropping it
/// gives both back.
#[derive(Debug)]
pub struct UploadSlot {
    slots: Arc<UploadSlots>,
    facility_id: String,
    _upload: OwnedSemaphorePermit,
    memory: Option<OwnedSemaphorePermit>,
}

impl UploadSlot {
    /// Makes the memory charged match a body of which `received` bytes
    /// have arrived (`expected`: its exact length, when known). Charges
    /// more in whole steps, or gives back what the body no longer needs
    /// (a file that turned out too large to go inline).
    pub fn cover(&mut self, received: usize, expected: Option<usize>) -> Result<(), Refusal> {
        let cost = self.slots.limits.cost(received, expected);
        let needed = cost.div_ceil(CHARGE_STEP_BYTES) * (CHARGE_STEP_BYTES / UNIT);
        let held = self
            .memory
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits);
        if needed > held {
            let more = u32::try_from(needed - held).map_err(|_| Refusal::Memory.counted())?;
            let permit = self
                .slots
                .memory
                .clone()
                .try_acquire_many_owned(more)
                .map_err(|_| Refusal::Memory.counted())?;
            match &mut self.memory {
                Some(memory) => memory.merge(permit),
                None => self.memory = Some(permit),
            }
            metrics::UPLOAD_MEMORY.add((more as usize * UNIT) as i64);
        } else if needed < held {
            let returned = self.memory.as_mut().and_then(|m| m.split(held - needed));
            drop(returned);
            metrics::UPLOAD_MEMORY.sub(((held - needed) * UNIT) as i64);
        }
        Ok(())
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.take() {
            metrics::UPLOAD_MEMORY.sub((memory.num_permits() * UNIT) as i64);
        }
        self.slots.release(&self.facility_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn slots(
        max_uploads: usize,
        max_per_facility: usize,
        max_memory_bytes: usize,
    ) -> Arc<UploadSlots> {
        UploadSlots::new(UploadLimits {
            max_uploads,
            max_per_facility,
            max_memory_bytes,
            inline_limit_bytes: 16 * MIB,
        })
    }

    #[test]
    fn a_facility_gets_its_share_and_the_others_keep_theirs() {
        let slots = slots(5, 2, 1024 * MIB);
        let a1 = slots.acquire("A").unwrap();
        let _a2 = slots.acquire("A").unwrap();
        assert_eq!(
            slots.acquire("A").unwrap_err(),
            Refusal::FacilityShare { limit: 2 }
        );
        let _b1 = slots.acquire("B").unwrap();
        let _b2 = slots.acquire("B").unwrap();
        let _c1 = slots.acquire("C").unwrap();
        // Five in progress: the global cap.
        assert_eq!(slots.acquire("D").unwrap_err(), Refusal::Slots);
        drop(a1);
        // A's finished upload gives A (or anyone) room again.
        let _a3 = slots.acquire("A").unwrap();
        assert_eq!(slots.held.lock().unwrap().get("A"), Some(&2));
    }

    #[test]
    fn facilities_without_uploads_are_forgotten() {
        let slots = slots(5, 2, 1024 * MIB);
        let a = slots.acquire("A").unwrap();
        assert_eq!(slots.acquire("B").map(drop), Ok(()));
        drop(a);
        assert!(slots.held.lock().unwrap().is_empty());
        assert_eq!(slots.uploads.available_permits(), 5);
    }

    #[test]
    fn memory_is_charged_as_bytes_arrive_and_returned_on_drop() {
        let slots = slots(8, 8, 100 * MIB);
        let mut a = slots.acquire("A").unwrap();
        // Nothing received, nothing charged: an announced length is not.
        a.cover(0, Some(60 * MIB)).unwrap();
        assert_eq!(slots.memory.available_permits(), 100 * 1024);
        // 1 byte: one step.
        a.cover(1, None).unwrap();
        assert_eq!(
            slots.memory.available_permits(),
            100 * 1024 - CHARGE_STEP_BYTES / 1024
        );
        // 60 MiB of a 60 MiB file: charged once (by reference, no copies).
        a.cover(60 * MIB, Some(60 * MIB)).unwrap();
        assert_eq!(slots.memory.available_permits(), 40 * 1024);

        let mut b = slots.acquire("B").unwrap();
        // 16 MiB of unknown length: charged as inline (48 MiB) > the 40 left.
        assert_eq!(b.cover(16 * MIB, None).unwrap_err(), Refusal::Memory);
        b.cover(10 * MIB, None).unwrap();
        assert_eq!(slots.memory.available_permits(), 10 * 1024);
        // Past the inline limit the copies are given back.
        b.cover(17 * MIB, None).unwrap();
        assert_eq!(slots.memory.available_permits(), 23 * 1024);
        drop(b);
        assert_eq!(slots.memory.available_permits(), 40 * 1024);
        drop(a);
        assert_eq!(slots.memory.available_permits(), 100 * 1024);
    }

    #[test]
    fn limits_that_refuse_every_large_file_do_not_start() {
        let limits = |max_memory_bytes| UploadLimits {
            max_uploads: 4,
            max_per_facility: 2,
            max_memory_bytes,
            inline_limit_bytes: 16 * MIB,
        };
        // A 64 MiB file holds 64 MiB; a 16 MiB one, 48 MiB.
        assert_eq!(limits(0).worst_cost(64 * MIB), 64 * MIB);
        assert_eq!(limits(0).worst_cost(10 * MIB), 30 * MIB);
        assert!(limits(64 * MIB).check(64 * MIB).is_ok());
        // Two uploads of 64 MiB per facility fill 128 MiB, not 129.
        assert!(limits(128 * MIB).one_facility_fills_memory(64 * MIB));
        assert!(!limits(129 * MIB).one_facility_fills_memory(64 * MIB));
        let err = limits(63 * MIB).check(64 * MIB).unwrap_err();
        assert!(err.contains("max_upload_memory_bytes"), "{err}");
        let none = UploadLimits {
            max_per_facility: 0,
            ..limits(64 * MIB)
        };
        assert!(none.check(1).is_err());
    }
}
