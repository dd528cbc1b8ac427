use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, TimeUnit};

use super::*;

const BASE: &str = r#"
name: visits
match: { entry: ["visits*.csv"] }
format: { type: csv }
fields:
  - { name: visit_id, type: string, required: true }
  - { name: seq, type: int64, required: true }
  - { name: amount, type: "decimal(10,2)" }
  - { name: secret_note, type: string, pii: drop }
table: { mode: merge, primary_key: [visit_id], sequence_by: seq }
"#;

fn problems(yaml: &str) -> Vec<String> {
    match Dataset::from_yaml(yaml, Path::new("visits.yaml")) {
        Ok(_) => vec![],
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

fn assert_problem(yaml: &str, field: Option<&str>, needle: &str) {
    let all = problems(yaml);
    let hit = all.iter().any(|p| {
        p.starts_with("visits.yaml: ")
            && p.contains(needle)
            && field.is_none_or(|f| p.contains(&format!("field `{f}`")))
    });
    assert!(
        hit,
        "expected a problem with {field:?} and {needle:?}, got {all:#?}"
    );
}

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

#[test]
fn base_definition_is_valid() {
    assert_eq!(problems(BASE), Vec::<String>::new());
}

#[test]
fn every_definition_in_the_repository_loads() {
    let all = load_dir(&schemas_dir()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
    for want in [
        "adt_events",
        "bed_census",
        "bed_census_fixed",
        "lab_results",
        "patients",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(check_dir(&schemas_dir()).is_ok());
}

#[test]
fn arrow_schema_has_user_fields_then_lineage() {
    let d = Dataset::from_yaml(BASE, Path::new("visits.yaml")).unwrap();
    let schema = d.arrow_schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "visit_id",
            "seq",
            "amount",
            "_file_id",
            "_facility_id",
            "_entry",
            "_record_index",
            "_ingested_at",
            "_op"
        ]
    );
    assert_eq!(schema.field(2).data_type(), &DataType::Decimal128(10, 2));
    assert!(!schema.field(0).is_nullable());
    assert!(schema.field(2).is_nullable());
    assert_eq!(
        schema.field(7).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(d.records_topic(), "medlake.records.visits");
}

#[test]
fn append_schema_has_no_op_column() {
    let yaml = BASE.replace(
        "{ mode: merge, primary_key: [visit_id], sequence_by: seq }",
        "{ mode: append }",
    );
    let d = Dataset::from_yaml(&yaml, Path::new("v.yaml")).unwrap();
    assert!(d.arrow_schema().field_with_name("_op").is_err());
}

#[test]
fn unknown_type_names_the_field() {
    assert_problem(
        &BASE.replace("type: \"decimal(10,2)\"", "type: money"),
        Some("amount"),
        "unknown type `money`",
    );
}

#[test]
fn unknown_key_is_reported() {
    assert_problem(
        &BASE.replace(
            "required: true }\n  - { name: seq",
            "requird: true }\n  - { name: seq",
        ),
        Some("visit_id"),
        "requird",
    );
    assert_problem(&format!("{BASE}colour: red\n"), None, "colour");
}

#[test]
fn primary_key_must_be_a_required_field() {
    assert_problem(
        &BASE.replace("primary_key: [visit_id]", "primary_key: [visit]"),
        None,
        "table.primary_key: `visit` is not a field",
    );
    assert_problem(
        &BASE.replace("primary_key: [visit_id]", "primary_key: [amount]"),
        Some("amount"),
        "must be `required: true`",
    );
    assert_problem(
        &BASE.replace("primary_key: [visit_id]", "primary_key: [secret_note]"),
        Some("secret_note"),
        "pii: drop",
    );
}

#[test]
fn sequence_by_must_exist_and_be_orderable() {
    assert_problem(
        &BASE.replace("sequence_by: seq", "sequence_by: version"),
        None,
        "`version` is not a field",
    );
    let yaml = BASE.replace("sequence_by: seq", "sequence_by: visit_id");
    assert_problem(&yaml, Some("visit_id"), "sequence_by must be an integer");
    assert_problem(&BASE.replace(", sequence_by: seq", ""), None, "sequence_by");
}

#[test]
fn partition_column_must_be_a_field() {
    assert_problem(
        &BASE.replace("sequence_by: seq", "sequence_by: seq, partition_by: [day]"),
        None,
        "partition_by: `day` is not a field",
    );
}

#[test]
fn lineage_fields_have_the_type_of_their_value() {
    let with = |field: &str| {
        BASE.replace(
            "  - { name: secret_note",
            &format!("  - {field}\n  - {{ name: secret_note"),
        )
    };
    let day = "{ name: day, type: date, from: ingest_date }";
    assert!(
        problems(&with(day)).is_empty(),
        "{:?}",
        problems(&with(day))
    );
    assert_problem(
        &with("{ name: day, type: string, from: ingest_date }"),
        Some("day"),
        "`from: ingest_date` must be a date",
    );
    assert_problem(
        &with("{ name: fac, type: date, from: facility_id }"),
        Some("fac"),
        "must be a string",
    );
}

#[test]
fn bad_regex_and_duplicate_field() {
    assert_problem(
        &BASE.replace("pii: drop }", "regex: \"[a-\" }"),
        Some("secret_note"),
        "bad regex",
    );
    assert_problem(
        &BASE.replace("name: amount", "name: seq"),
        Some("seq"),
        "duplicate field name",
    );
}

#[test]
fn field_options_must_fit_the_type() {
    assert_problem(
        &BASE.replace("pii: drop", "pii: hash, formats: [\"%Y\"]"),
        Some("secret_note"),
        "`formats` only applies",
    );
    assert_problem(
        &BASE.replace(
            "type: \"decimal(10,2)\"",
            "type: timestamp, timezone: Mars/Base",
        ),
        Some("amount"),
        "unknown time zone",
    );
    assert_problem(
        &BASE.replace("type: \"decimal(10,2)\"", "type: date, formats: [\"%Q\"]"),
        Some("amount"),
        "bad date/time format",
    );
    assert_problem(
        &BASE.replace("type: \"decimal(10,2)\"", "type: int32, pii: hash"),
        Some("amount"),
        "needs a string field",
    );
}

#[test]
fn format_checks() {
    assert_problem(
        &BASE.replace("{ type: csv }", "{ type: csv, header: false }"),
        None,
        "needs format.columns",
    );
    assert_problem(
        &BASE.replace(
            "{ type: csv }",
            "{ type: csv, header: false, columns: [visit_id, seq] }",
        ),
        Some("amount"),
        "not one of format.columns",
    );
    let xml = BASE.replace("{ type: csv }", "{ type: xml }").replace(
        "{ name: amount, type: \"decimal(10,2)\" }",
        "{ name: amount, type: string, source: \"x:A/@b/c\" }",
    );
    assert_problem(&xml, Some("amount"), "namespace prefix `x` is not declared");
    assert_problem(
        &xml,
        Some("amount"),
        "only the last step can be an attribute",
    );
}

#[test]
fn match_checks() {
    assert_problem(
        &BASE.replace("match: { entry: [\"visits*.csv\"] }", "match: {}"),
        None,
        "match needs at least one",
    );
    assert_problem(
        &BASE.replace("visits*.csv", "visits[.csv"),
        None,
        "bad glob",
    );
    assert_problem(
        &BASE.replace("entry: [\"visits*.csv\"]", "xml_root: Visit"),
        None,
        "needs `format.type: xml`",
    );
}

#[test]
fn load_dir_reports_duplicate_names_and_all_files() {
    let dir = std::env::temp_dir().join(format!("medlake-dataset-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), BASE).unwrap();
    std::fs::write(dir.join("b.yaml"), BASE).unwrap();
    std::fs::write(
        dir.join("c.yaml"),
        BASE.replace("sequence_by: seq", "sequence_by: nope"),
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a definition").unwrap();
    let err = load_dir(&dir).unwrap_err();
    let DatasetError::Invalid { problems } = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 2, "{err}");
    assert!(
        problems[0]
            .to_string()
            .contains("b.yaml: data set name `visits` is already used"),
        "{err}"
    );
    assert!(problems[1].file.ends_with("c.yaml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(load_dir(&dir), Err(DatasetError::Io { .. })));
}
