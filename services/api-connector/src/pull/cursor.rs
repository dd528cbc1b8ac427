//! Persisted pull cursors: one small JSON object per endpoint in the raw
//! zone, `<lake>/_raw/_cursors/<facility_id>/<endpoint_id>`, on the same
//! object store as the files themselves (local folder or S3), so a
//! connector restarted anywhere resumes where the last one stopped.
//!
//! The cursor is written only after every file of the page it ends has been
//! ingested (raw zone + Kafka ack). A crash before that write re-fetches
//! the page and publishes its files again with the same file ids, which the
//! parser's ledger records as duplicates: at least once, never skipped.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use medlake_common::ingest::{IngestError, RAW_DIR, RawZone};
use serde::{Deserialize, Serialize};

/// Folder of the cursors inside the raw zone.
pub const CURSOR_DIR: &str = "_cursors";

/// What is stored for an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCursor {
    /// The value to send as the cursor parameter next.
    pub cursor: String,
    /// When it was stored.
    pub updated_at: DateTime<Utc>,
}

/// A cursor could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("cursor store: {source}")]
    Store { source: Box<IngestError> },
    #[error("cursor at {path} is not valid JSON (line {line}, column {column})")]
    Corrupt {
        path: String,
        line: usize,
        column: usize,
    },
}

/// Reads and writes endpoint cursors in the raw zone.
#[derive(Debug, Clone)]
pub struct CursorStore {
    zone: RawZone,
}

impl CursorStore {
    pub fn new(zone: RawZone) -> Self {
        Self { zone }
    }

    /// Path of an endpoint's cursor, relative to the lake root.
    pub fn path(facility_id: &str, endpoint_id: &str) -> String {
        format!("{RAW_DIR}/{CURSOR_DIR}/{facility_id}/{endpoint_id}")
    }

    /// The stored cursor, or `None` before the first page was ingested.
    pub async fn load(
        &self,
        facility_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<String>, CursorError> {
        let path = Self::path(facility_id, endpoint_id);
        let bytes = match self.zone.get(&path).await {
            Ok(bytes) => bytes,
            Err(IngestError::RawRead { source, .. })
                if matches!(*source, object_store::Error::NotFound { .. }) =>
            {
                return Ok(None);
            }
            Err(source) => {
                return Err(CursorError::Store {
                    source: Box::new(source),
                });
            }
        };
        let stored: StoredCursor =
            serde_json::from_slice(&bytes).map_err(|e| CursorError::Corrupt {
                path,
                line: e.line(),
                column: e.column(),
            })?;
        Ok(Some(stored.cursor))
    }

    /// Stores `cursor` (an atomic overwrite).
    pub async fn save(
        &self,
        facility_id: &str,
        endpoint_id: &str,
        cursor: &str,
    ) -> Result<(), CursorError> {
        let stored = StoredCursor {
            cursor: cursor.to_string(),
            updated_at: Utc::now(),
        };
        let json = serde_json::to_vec(&stored).expect("a cursor serializes");
        self.zone
            .put(&Self::path(facility_id, endpoint_id), Bytes::from(json))
            .await
            .map_err(|source| CursorError::Store {
                source: Box::new(source),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cursor_survives_a_new_store_on_the_same_lake() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().to_str().unwrap();
        let store = CursorStore::new(RawZone::open(lake).unwrap());
        assert_eq!(store.load("F1", "api").await.unwrap(), None);
        store
            .save("F1", "api", "2024-05-01T00:00:00Z")
            .await
            .unwrap();
        store.save("F1", "api", "page-2").await.unwrap();
        store.save("F2", "api", "other").await.unwrap();

        let reopened = CursorStore::new(RawZone::open(lake).unwrap());
        assert_eq!(
            reopened.load("F1", "api").await.unwrap().as_deref(),
            Some("page-2")
        );
        assert_eq!(
            reopened.load("F2", "api").await.unwrap().as_deref(),
            Some("other")
        );
        let on_disk = dir.path().join("_raw/_cursors/F1/api");
        let stored: StoredCursor =
            serde_json::from_slice(&std::fs::read(on_disk).unwrap()).unwrap();
        assert_eq!(stored.cursor, "page-2");
    }

    #[tokio::test]
    async fn a_corrupt_cursor_is_an_error_not_a_restart_from_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let zone = RawZone::open(dir.path().to_str().unwrap()).unwrap();
        zone.put(
            &CursorStore::path("F1", "api"),
            Bytes::from_static(b"{nope"),
        )
        .await
        .unwrap();
        let err = CursorStore::new(zone).load("F1", "api").await.unwrap_err();
        assert!(matches!(err, CursorError::Corrupt { .. }), "{err}");
    }
}
