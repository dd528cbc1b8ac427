//! Answers kept for the next identical question.
//!
//! The key is the asker's scope, the SQL, its parameter values and the
//! version of every table the query reads (found in its plan, subqueries
//! included). A commit to one of those tables changes the key, so a cached
//! answer is never stale and nothing expires by time; a commit to a table
//! the query does not read leaves the answer valid. Entries are dropped
//! least recently used first once `max_bytes` of answers are held.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use medlake_common::metrics::counter_vec;
use prometheus::IntCounterVec;

use crate::engine::{Params, QueryResult};

/// Lookups by outcome: `hit` or `miss`.
pub static CACHE_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_serve_cache_lookups_total",
        "Answers looked up in the query cache, by outcome (hit, miss).",
        &["outcome"],
    )
});

/// The identity of an answer.
pub fn key(scope: &str, sql: &str, params: &Params, versions: &[(String, u64)]) -> String {
    let mut params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    params.sort();
    let versions: Vec<String> = versions.iter().map(|(t, v)| format!("{t}@{v}")).collect();
    format!(
        "{scope}\u{1f}{sql}\u{1f}{}\u{1f}{}",
        params.join("\u{1e}"),
        versions.join("\u{1e}")
    )
}

struct Entry {
    answer: Arc<QueryResult>,
    bytes: usize,
    used: u64,
}

/// A bounded cache of answers.
pub struct Cache {
    max_bytes: usize,
    state: Mutex<State>,
    /// The tables each SQL text reads (by the SHA-256 of the text), learnt
    /// from its first plan: a repeated question finds its answer without
    /// being planned again. Which tables a text reads depends on the text
    /// alone (every scope has the same table names).
    reads: Mutex<HashMap<String, Vec<String>>>,
}

/// SQL texts whose tables are remembered; past it the memory starts over.
const MAX_REMEMBERED_TEXTS: usize = 4_096;

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

impl Cache {
    /// A cache holding at most `max_bytes` of answers (0: none).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            state: Mutex::new(State::default()),
            reads: Mutex::new(HashMap::new()),
        }
    }

    /// The answer kept under `key`, counted as a hit or a miss.
    pub fn get(&self, key: &str) -> Option<Arc<QueryResult>> {
        let mut state = self.state.lock().expect("cache lock");
        state.clock += 1;
        let clock = state.clock;
        let found = state.entries.get_mut(key).map(|entry| {
            entry.used = clock;
            entry.answer.clone()
        });
        CACHE_LOOKUPS
            .with_label_values(&[if found.is_some() { "hit" } else { "miss" }])
            .inc();
        found
    }

    /// Keeps `answer` under `key`, dropping the least recently used answers
    /// past the bound. An answer larger than the whole cache is not kept.
    pub fn put(&self, key: String, answer: Arc<QueryResult>) {
        let bytes = answer.bytes + key.len();
        if bytes > self.max_bytes {
            return;
        }
        let mut state = self.state.lock().expect("cache lock");
        state.clock += 1;
        let used = state.clock;
        if let Some(old) = state.entries.insert(
            key,
            Entry {
                answer,
                bytes,
                used,
            },
        ) {
            state.bytes -= old.bytes;
        }
        state.bytes += bytes;
        while state.bytes > self.max_bytes {
            let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = state.entries.remove(&oldest) {
                state.bytes -= gone.bytes;
            }
        }
    }

    /// The tables `sql` was found to read when it was last planned.
    pub fn tables_read(&self, sql: &str) -> Option<Vec<String>> {
        let digest = medlake_common::raw_file::sha256_hex(sql.as_bytes());
        self.reads.lock().expect("cache lock").get(&digest).cloned()
    }

    /// Remembers that `sql` reads `tables`.
    pub fn remember_tables_read(&self, sql: &str, tables: Vec<String>) {
        if self.max_bytes == 0 {
            return;
        }
        let digest = medlake_common::raw_file::sha256_hex(sql.as_bytes());
        let mut reads = self.reads.lock().expect("cache lock");
        if reads.len() >= MAX_REMEMBERED_TEXTS && !reads.contains_key(&digest) {
            reads.clear();
        }
        reads.insert(digest, tables);
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.state.lock().expect("cache lock").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(bytes: usize) -> Arc<QueryResult> {
        Arc::new(QueryResult {
            batches: Vec::new(),
            rows: 0,
            bytes,
            truncated: false,
            versions: Vec::new(),
            elapsed: Duration::ZERO,
        })
    }

    #[test]
    fn a_new_version_of_a_table_read_is_a_new_key() {
        let params = Params::new();
        let v1 = key("F1", "SELECT 1", &params, &[("labs".into(), 1)]);
        let v2 = key("F1", "SELECT 1", &params, &[("labs".into(), 2)]);
        let other_scope = key("F2", "SELECT 1", &params, &[("labs".into(), 1)]);
        assert_ne!(v1, v2);
        assert_ne!(v1, other_scope);
        let with = Params::from([(
            "f".to_string(),
            deltalake::datafusion::common::ScalarValue::Utf8(Some("F1".into())),
        )]);
        assert_ne!(v1, key("F1", "SELECT 1", &with, &[("labs".into(), 1)]));
    }

    #[test]
    fn the_tables_a_text_reads_are_remembered_by_text() {
        let cache = Cache::new(1024);
        assert_eq!(cache.tables_read("SELECT 1"), None);
        cache.remember_tables_read("SELECT * FROM a JOIN b", vec!["a".into(), "b".into()]);
        assert_eq!(
            cache.tables_read("SELECT * FROM a JOIN b"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(cache.tables_read("SELECT * FROM a"), None);
        // A cache that keeps nothing remembers nothing either.
        let off = Cache::new(0);
        off.remember_tables_read("SELECT * FROM a", vec!["a".into()]);
        assert_eq!(off.tables_read("SELECT * FROM a"), None);
    }

    #[test]
    fn the_least_recently_used_answers_go_first() {
        let hits = || CACHE_LOOKUPS.with_label_values(&["hit"]).get();
        let misses = || CACHE_LOOKUPS.with_label_values(&["miss"]).get();
        let (hits_before, misses_before) = (hits(), misses());
        let cache = Cache::new(1000);
        cache.put("a".into(), answer(400));
        cache.put("b".into(), answer(400));
        assert!(cache.get("a").is_some());
        assert!(cache.get("z").is_none());
        assert_eq!((hits() - hits_before, misses() - misses_before), (1, 1));
        cache.put("c".into(), answer(400));
        assert!(cache.get("b").is_none(), "b was used least recently");
        assert!(cache.get("a").is_some());
        assert!(cache.get("c").is_some());
        assert!(cache.bytes() <= 1000);
        cache.put("huge".into(), answer(5000));
        assert!(cache.get("huge").is_none());
    }
}
