//! How a lake compares with what it must hold, once or polled until it does.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Expected, InspectError, LakeSummary, LedgerTopic, from_topic, summarize};
use crate::delta::builtin::FILES_TABLE;

/// How a lake compares with what it must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reconciliation {
    /// Expected files the ledger does not list yet.
    pub missing_files: Vec<String>,
    /// Tables whose row count differs: (table, expected, actual).
    pub table_mismatches: Vec<(String, u64, u64)>,
    /// Error codes whose dead-letter count differs: (code, expected, actual).
    pub dead_letter_mismatches: Vec<(String, u64, u64)>,
}

impl Reconciliation {
    /// Every file settled, every table and dead-letter count as expected.
    pub fn is_complete(&self) -> bool {
        self.missing_files.is_empty()
            && self.table_mismatches.is_empty()
            && self.dead_letter_mismatches.is_empty()
    }
}

/// Compares a summary with what the lake must hold.
pub fn reconcile(expected: &Expected, summary: &LakeSummary) -> Reconciliation {
    let missing_files = expected
        .files
        .iter()
        .filter(|f| !summary.file_ids.contains(&f.id))
        .map(|f| f.path.clone())
        .collect();
    let mut table_mismatches: Vec<(String, u64, u64)> = expected
        .table_rows
        .iter()
        .filter_map(|(table, expected)| {
            let actual = summary.tables.get(table).copied().unwrap_or(0);
            (actual != *expected).then(|| (table.clone(), *expected, actual))
        })
        .collect();
    // One row per file in the sink's copy of the ledger.
    let files = expected.files.len() as u64;
    if summary.ledger_table_rows != files {
        table_mismatches.push((FILES_TABLE.to_string(), files, summary.ledger_table_rows));
    }
    let codes: BTreeSet<&String> = expected
        .dead_letters
        .keys()
        .chain(summary.dead_letters.keys())
        .collect();
    let dead_letter_mismatches = codes
        .into_iter()
        .filter_map(|code| {
            let expected = expected.dead_letters.get(code).copied().unwrap_or(0);
            let actual = summary.dead_letters.get(code).copied().unwrap_or(0);
            (actual != expected).then(|| (code.clone(), expected, actual))
        })
        .collect();
    Reconciliation {
        missing_files,
        table_mismatches,
        dead_letter_mismatches,
    }
}

/// Polls the lake until it reconciles with `expected` or `timeout` passes; returns the
/// last summary and reconciliation either way. Tables being written while read are
/// retried at the next poll.
pub async fn wait_for(
    lake_uri: &str,
    ledger: Option<&LedgerTopic>,
    expected: &Expected,
    timeout: Duration,
    poll: Duration,
    mut progress: impl FnMut(&LakeSummary, &Reconciliation),
) -> Result<(LakeSummary, Reconciliation), InspectError> {
    let datasets: Vec<String> = expected.table_rows.keys().cloned().collect();
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        // Tables are only read once the (cheap) ledger topic lists every file.
        if let Some(source) = ledger {
            let mut files = LakeSummary::default();
            match from_topic(&mut files, source).await {
                Ok(()) => {
                    let rec = reconcile(expected, &files);
                    if !rec.missing_files.is_empty() && Instant::now() < deadline {
                        progress(&files, &rec);
                        tokio::time::sleep(poll).await;
                        continue;
                    }
                }
                Err(e) if Instant::now() < deadline => {
                    last_error = Some(e);
                    tokio::time::sleep(poll).await;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        match summarize(lake_uri, &datasets, ledger).await {
            Ok(summary) => {
                let rec = reconcile(expected, &summary);
                progress(&summary, &rec);
                if rec.is_complete() || Instant::now() >= deadline {
                    return Ok((summary, rec));
                }
            }
            Err(e) if Instant::now() < deadline => last_error = Some(e),
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(last_error.unwrap_or_else(|| InspectError::table("lake", "timed out")));
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::inspect::{ExpectedFile, render};

    fn expected() -> Expected {
        Expected {
            files: vec![ExpectedFile {
                id: "abc".into(),
                path: "files/F1/a.zip".into(),
            }],
            table_rows: BTreeMap::from([("patients".into(), 2)]),
            records: BTreeMap::from([("patients".into(), 3)]),
            dead_letters: BTreeMap::from([("bad_date".into(), 1)]),
        }
    }

    #[test]
    fn reconciliation_names_what_is_missing() {
        let m = expected();
        let mut s = LakeSummary::default();
        let rec = reconcile(&m, &s);
        assert_eq!(rec.missing_files, vec!["files/F1/a.zip".to_string()]);
        assert_eq!(
            rec.table_mismatches,
            vec![("patients".into(), 2, 0), (FILES_TABLE.into(), 1, 0)]
        );
        assert_eq!(rec.dead_letter_mismatches, vec![("bad_date".into(), 1, 0)]);
        s.file_ids.insert("abc".into());
        s.ledger_table_rows = 1;
        s.tables.insert("patients".into(), 2);
        s.dead_letters.insert("bad_date".into(), 1);
        assert!(reconcile(&m, &s).is_complete());
        let text = render(&s, Some(&m));
        assert!(text.contains("patients"), "{text}");
        assert!(!text.contains("MISMATCH"), "{text}");
    }
}
