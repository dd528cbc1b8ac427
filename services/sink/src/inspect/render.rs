//! The text `medlake tables summary` prints.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{Expected, LakeSummary};
use crate::delta::builtin::FILES_TABLE;

/// A human summary: files, rows per table against what is expected, dead letters by
/// code.
pub fn render(summary: &LakeSummary, expected: Option<&Expected>) -> String {
    let mut out = String::new();
    let files: u64 = summary.files_by_status.values().sum();
    let statuses: Vec<String> = summary
        .files_by_status
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    let _ = write!(
        out,
        "files in the ledger ({}): {files} ({})",
        summary.ledger,
        statuses.join(", ")
    );
    if let Some(m) = expected {
        let _ = write!(out, " of {} generated", m.files.len());
    }
    out.push('\n');
    let _ = writeln!(out, "rows per table:");
    let _ = write!(out, "  {FILES_TABLE:<18} {:>9}", summary.ledger_table_rows);
    if let Some(m) = expected {
        let expected = m.files.len() as u64;
        let mark = if summary.ledger_table_rows == expected {
            "ok"
        } else {
            "MISMATCH"
        };
        let _ = write!(out, "   expected {expected:>9} (one per file)  {mark}");
    }
    out.push('\n');
    let mut tables: BTreeSet<&String> = summary.tables.keys().collect();
    if let Some(m) = expected {
        tables.extend(m.table_rows.keys());
    }
    for table in tables {
        let actual = summary.tables.get(table).copied().unwrap_or(0);
        let _ = write!(out, "  {table:<18} {actual:>9}");
        if let Some(m) = expected {
            let expected = m.table_rows.get(table).copied().unwrap_or(0);
            let records = m.records.get(table).copied().unwrap_or(0);
            let mark = if actual == expected { "ok" } else { "MISMATCH" };
            let _ = write!(out, "   expected {expected:>9} ({records} records)  {mark}");
        }
        out.push('\n');
    }
    let total: u64 = summary.dead_letters.values().sum();
    let _ = writeln!(out, "dead letters by error code: {total}");
    let mut codes: BTreeSet<&String> = summary.dead_letters.keys().collect();
    if let Some(m) = expected {
        codes.extend(m.dead_letters.keys());
    }
    for code in codes {
        let actual = summary.dead_letters.get(code).copied().unwrap_or(0);
        let _ = write!(out, "  {code:<22} {actual:>6}");
        if let Some(m) = expected {
            let expected = m.dead_letters.get(code).copied().unwrap_or(0);
            let mark = if actual == expected { "ok" } else { "MISMATCH" };
            let _ = write!(out, "   expected {expected:>6}  {mark}");
        }
        out.push('\n');
    }
    if let Some(s) = summary.elapsed_s() {
        let _ = writeln!(out, "first file received to last commit: {s:.1} s");
    }
    out
}
