//! How records land in the data set's table, and which entries belong to the data set.

use serde::Deserialize;

/// How the sink writes records: appended, or merged by primary key (CDC).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Table {
    /// Every record is a new row.
    Append {
        /// Columns the table is partitioned by (user fields).
        #[serde(default)]
        partition_by: Vec<String>,
    },
    /// Upsert by primary key; the highest `sequence_by` wins; deletes remove the row.
    Merge {
        /// Fields that identify a row; required, not `pii: drop`.
        primary_key: Vec<String>,
        /// Required field ordering the changes of one key (a sequence number or event time).
        sequence_by: String,
        /// Records matching this rule carry `_op: "delete"`, all others `_op: "upsert"`.
        #[serde(default)]
        delete_when: Option<DeleteRule>,
        /// Columns the table is partitioned by (user fields).
        #[serde(default)]
        partition_by: Vec<String>,
    },
}

impl Table {
    /// The partition columns of either mode.
    pub fn partition_by(&self) -> &[String] {
        match self {
            Table::Append { partition_by } | Table::Merge { partition_by, .. } => partition_by,
        }
    }

    /// Whether the table is merged by primary key.
    pub fn is_merge(&self) -> bool {
        matches!(self, Table::Merge { .. })
    }
}

/// Marks a record as a delete when a field's value is one of a list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRule {
    /// The field tested (its converted value, compared as text).
    pub field: String,
    /// Values meaning "delete" (exact, case-sensitive).
    #[serde(rename = "in")]
    pub values: Vec<String>,
}

/// Which entries belong to a data set. Every rule given must hold; a rule left out
/// holds for all entries. An entry matching no data set, or more than one, is a dead letter.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRules {
    /// Globs on the entry name (`adt_*.csv`, `**/LAB*.xml`), case-insensitive; one must
    /// match the entry's base name or its full path inside the archive.
    #[serde(default)]
    pub entry: Vec<String>,
    /// The root element the XML document must have (`lab:LabResult`, prefix from the
    /// format's `namespaces`; without a prefix any namespace matches).
    #[serde(default)]
    pub xml_root: Option<String>,
    /// Column names the header must contain (csv/delimited with a header), any order.
    #[serde(default)]
    pub header_contains: Vec<String>,
    /// Facility ids whose files may belong to the data set; empty means every facility.
    #[serde(default)]
    pub facilities: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_with_delete_rule() {
        let t: Table = serde_yaml::from_str(
            "mode: merge\nprimary_key: [a, b]\nsequence_by: seq\ndelete_when: { field: kind, in: [D, DELETE] }\n",
        )
        .unwrap();
        let Table::Merge {
            delete_when,
            partition_by,
            ..
        } = &t
        else {
            panic!("not merge")
        };
        assert_eq!(delete_when.as_ref().unwrap().values, ["D", "DELETE"]);
        assert!(partition_by.is_empty());
        assert!(t.is_merge());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(serde_yaml::from_str::<Table>("mode: append\npartition: [x]\n").is_err());
        assert!(serde_yaml::from_str::<Table>("mode: upsert\n").is_err());
        assert!(serde_yaml::from_str::<MatchRules>("glob: [x]\n").is_err());
    }
}
