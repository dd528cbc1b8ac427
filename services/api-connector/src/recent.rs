//! Idempotent re-sends: a bounded memory of recently accepted files.
//!
//! A file is identified by its facility and its file id (the SHA-256 of its
//! bytes). When a facility re-sends a file it already got a 202 for (a
//! client retry after a lost response, a double upload), the connector finds
//! it here and answers 202 with the same file id and `duplicate: true`
//! without writing or publishing it again.
//!
//! The memory holds the last `capacity` files (oldest forgotten first) and is
//! per process: after a restart, or on another replica, a re-send is written
//! and published again. That is harmless by design: the raw zone write is
//! an overwrite of the same bytes and the parser's ledger records the second
//! delivery of a file id as a duplicate. Checking the raw zone instead would
//! cost an object-store request per push and still miss files received on
//! another day (the raw path contains the date).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Key of a remembered file.
type Key = (String, String);

/// The last `capacity` accepted files and the raw path each was written to.
#[derive(Debug)]
pub struct RecentFiles {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    paths: HashMap<Key, String>,
    order: VecDeque<Key>,
}

impl RecentFiles {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The raw path of this facility's file, if it was accepted recently.
    pub fn get(&self, facility_id: &str, file_id: &str) -> Option<String> {
        let inner = self.inner.lock().expect("recent files lock");
        inner
            .paths
            .get(&(facility_id.to_string(), file_id.to_string()))
            .cloned()
    }

    /// Remembers an accepted file, forgetting the oldest beyond capacity.
    pub fn insert(&self, facility_id: &str, file_id: &str, raw_path: &str) {
        if self.capacity == 0 {
            return;
        }
        let key = (facility_id.to_string(), file_id.to_string());
        let mut inner = self.inner.lock().expect("recent files lock");
        if inner
            .paths
            .insert(key.clone(), raw_path.to_string())
            .is_some()
        {
            return;
        }
        inner.order.push_back(key);
        while inner.order.len() > self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.paths.remove(&oldest);
            }
        }
    }

    /// Number of remembered files.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("recent files lock").order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_facility_and_forgets_the_oldest() {
        let recent = RecentFiles::new(2);
        recent.insert("A", "f1", "p1");
        assert_eq!(recent.get("A", "f1").as_deref(), Some("p1"));
        assert_eq!(
            recent.get("B", "f1"),
            None,
            "another facility's file is new"
        );
        recent.insert("A", "f1", "p1");
        assert_eq!(recent.len(), 1, "re-inserting does not grow");
        recent.insert("A", "f2", "p2");
        recent.insert("A", "f3", "p3");
        assert_eq!(recent.len(), 2);
        assert_eq!(recent.get("A", "f1"), None);
        assert_eq!(recent.get("A", "f3").as_deref(), Some("p3"));
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let recent = RecentFiles::new(0);
        recent.insert("A", "f1", "p1");
        assert!(recent.is_empty());
        assert_eq!(recent.get("A", "f1"), None);
    }
}
