use std::path::Path;

use medlake_common::facilities::Registry;
use medlake_common::secret::Secret;
use medlake_datagen::pack::{self, Protection};

use super::*;
use crate::archive::Limits;

/// Collects everything, as the Kafka sink would send it.
#[derive(Default)]
pub(crate) struct VecSink {
    pub records: Vec<(String, String, serde_json::Value)>,
    pub rejects: Vec<Reject>,
}

impl RecordSink for VecSink {
    type Error = std::convert::Infallible;
    fn record(&mut self, record: &Record<'_>) -> Result<Delivery, Self::Error> {
        let value: serde_json::Value =
            serde_json::from_slice(record.json).expect("record is valid JSON");
        // What the pipeline passes along is what the record says.
        assert_eq!(value["_entry"], record.entry);
        assert_eq!(value["_record_index"], record.index);
        self.records
            .push((record.dataset.name.clone(), record.key.to_string(), value));
        Ok(Delivery::Taken)
    }
    fn reject(&mut self, reject: &Reject) -> Result<(), Self::Error> {
        self.rejects.push(reject.clone());
        Ok(())
    }
}

const VISITS: &str = r#"
name: visits
match: { entry: ["visits*.csv"], header_contains: [VisitId] }
format: { type: csv }
fields:
  - { name: facility_id, type: string, from: facility_id, required: true }
  - { name: visit_id, type: string, source: VisitId, required: true }
  - { name: seq, type: int64, source: Seq, required: true }
  - { name: kind, type: string, source: Kind, allowed: [U, D] }
  - { name: patient, type: string, source: Patient, required: true, pii: hash }
  - { name: note, type: string, source: Note, pii: drop }
table: { mode: merge, primary_key: [facility_id, visit_id], sequence_by: seq, delete_when: { field: kind, in: [D] } }
"#;

const NOTES: &str = r#"
name: notes
match: { entry: ["*.txt"] }
format: { type: delimited, header: false, columns: [A, B] }
max_reject_ratio: 0.2
fields:
  - { name: a, type: int32, source: A, required: true }
  - { name: b, type: string, source: B }
  - { name: received_on, type: date, from: ingest_date }
table: { mode: append, partition_by: [received_on] }
"#;

fn env(registry: &str) -> ParseEnv {
    env_with(&[VISITS, NOTES], registry, Limits::default())
}

fn env_with(definitions: &[&str], registry: &str, limits: Limits) -> ParseEnv {
    let datasets = definitions
        .iter()
        .map(|y| Dataset::from_yaml(y, Path::new("t.yaml")).unwrap())
        .collect();
    let registry = Registry::parse(registry, Path::new("f.yaml")).unwrap();
    ParseEnv::new(datasets, registry, limits, Some(&Secret::new("k"))).unwrap()
}

fn run(
    file_name: &str,
    bytes: &[u8],
    env: &ParseEnv,
) -> (
    Result<FileSummary, ProcessError<std::convert::Infallible>>,
    VecSink,
) {
    let mut sink = VecSink::default();
    let input = FileInput {
        file_id: "fid",
        facility_id: "F1",
        file_name,
        bytes,
        ingested_at: DateTime::parse_from_rfc3339("2024-03-02T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    };
    (process_file(&input, env, &mut sink), sink)
}

#[test]
fn merge_records_have_keys_ops_lineage_and_pii() {
    let csv = "VisitId,Seq,Kind,Patient,Note\nV1,1,U,P1,secret\nV1,2,D,,\nV2,x,U,P2,\n";
    let (summary, sink) = run("visits_1.csv", csv.as_bytes(), &env(""));
    let summary = summary.unwrap();
    assert_eq!(summary.records["visits"], 2);
    assert_eq!(summary.rejected_records, 1);
    assert_eq!(summary.rejects["bad_int"], 1);
    let (ds, key, rec) = &sink.records[0];
    assert_eq!((ds.as_str(), key.as_str()), ("visits", r#"["F1","V1"]"#));
    assert_eq!(rec["patient"], crate::convert::hmac_hex(b"k", "P1"));
    assert!(rec.get("note").is_none(), "pii: drop field is not written");
    assert_eq!(rec["_op"], "upsert");
    assert_eq!(rec["_record_index"], 1);
    assert_eq!(rec["_entry"], "visits_1.csv");
    assert_eq!(rec["_ingested_at"], "2024-03-02T00:00:00.000000Z");
    // The delete has no patient: required fields other than key and sequence are relaxed.
    assert_eq!(sink.records[1].2["_op"], "delete");
    assert_eq!(sink.records[1].2["patient"], serde_json::Value::Null);
    let r = &sink.rejects[0];
    assert_eq!(
        (r.code, r.index, r.field.as_deref()),
        (ErrorCode::BadInt, Some(3), Some("seq"))
    );
    assert!(!r.message.contains('x'));
}

/// Refuses every record, as the Kafka sink refuses one too large for the broker.
#[derive(Default)]
struct Refusing(Vec<Reject>);

impl RecordSink for Refusing {
    type Error = std::convert::Infallible;
    fn record(&mut self, _: &Record<'_>) -> Result<Delivery, Self::Error> {
        Ok(Delivery::Refused {
            code: ErrorCode::MessageTooLarge,
            message: "too large".into(),
        })
    }
    fn reject(&mut self, reject: &Reject) -> Result<(), Self::Error> {
        self.0.push(reject.clone());
        Ok(())
    }
}

#[test]
fn refused_records_are_rejects_and_every_entry_is_counted_by_dataset() {
    let z = pack::zip(
        &[("n.txt", b"1|a\n2|b\n"), ("x.bin", b"?")],
        true,
        Protection::None,
    );
    let input = FileInput {
        file_id: "fid",
        facility_id: "F1",
        file_name: "f.zip",
        bytes: &z,
        ingested_at: Utc::now(),
    };
    let mut sink = Refusing::default();
    let summary = process_file(&input, &env(""), &mut sink).unwrap();
    assert!(summary.records.is_empty(), "{:?}", summary.records);
    assert_eq!(summary.rejected_records, 2);
    assert_eq!(summary.rejects["message_too_large"], 2);
    assert_eq!(
        summary.entries_by_dataset,
        BTreeMap::from([("none".to_string(), 1), ("notes".to_string(), 1)])
    );
    assert_eq!(
        summary.rejects_by_code(),
        BTreeMap::from([(ErrorCode::NoDataset, 1), (ErrorCode::MessageTooLarge, 2)])
    );
    let refused: Vec<_> = sink
        .0
        .iter()
        .filter(|r| r.code == ErrorCode::MessageTooLarge)
        .map(|r| (r.dataset.as_deref(), r.entry.as_str(), r.index))
        .collect();
    assert_eq!(
        refused,
        [
            (Some("notes"), "n.txt", Some(1)),
            (Some("notes"), "n.txt", Some(2))
        ]
    );

    let file = FileSummary::rejected_file(ErrorCode::WrongPassword);
    assert!(file.has_rejects());
    assert_eq!((file.entries, file.total_records()), (0, 0));
    assert_eq!(
        file.rejects_by_code(),
        BTreeMap::from([(ErrorCode::WrongPassword, 1)])
    );
}

/// Asserts that the one entry was rejected whole for its reject ratio, with `counts`
/// in the dead letter's message.
fn assert_over_ratio(summary: &FileSummary, sink: &VecSink, counts: &str) {
    assert!(sink.records.is_empty());
    assert_eq!(summary.rejected_entries, 1);
    assert_eq!(sink.rejects.len(), 1);
    assert_eq!(sink.rejects[0].code, ErrorCode::RejectRatioExceeded);
    let message = &sink.rejects[0].message;
    assert!(message.contains(counts), "{message}");
}

#[test]
fn reject_ratio_rejects_the_whole_entry() {
    let (summary, sink) = run("n.txt", b"1|a\nx|b\n3|c\n", &env(""));
    assert_over_ratio(
        &summary.unwrap(),
        &sink,
        "1 of 3 records rejected (bad_int: 1)",
    );
    // Append key is the file id.
    let (_, sink) = run("n.txt", b"1|a\n", &env(""));
    assert_eq!(sink.records[0].1, "fid");
}

#[test]
fn routing_failures_and_bad_encoding_reject_entries_not_files() {
    let z = pack::zip(
        &[
            ("visits_a.csv", b"Other\n1\n"),
            ("x.bin", b"?"),
            ("n.txt", b"1|\xff\n"),
            ("visits_b.csv", b"VisitId,Seq,Patient\nV9,1,P\n"),
        ],
        true,
        Protection::None,
    );
    let (summary, sink) = run("f.zip", &z, &env(""));
    let summary = summary.unwrap();
    assert_eq!(summary.entries, 4);
    assert_eq!(summary.records["visits"], 1);
    // Latin-1 is not declared: utf-8 fails.
    let codes: Vec<&str> = sink.rejects.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["no_dataset", "no_dataset", "bad_encoding"]);
}

#[test]
fn file_errors_emit_nothing() {
    let z = pack::zip(
        &[("n.txt", b"1|a\n"), ("m.txt", b"2|b\n")],
        true,
        Protection::Aes256("pw"),
    );
    let (r, sink) = run("f.zip", &z, &env(""));
    assert!(matches!(
        r,
        Err(ProcessError::File(FileError::PasswordRequired { .. }))
    ));
    assert!(sink.records.is_empty() && sink.rejects.is_empty());
    passwords_from_the_registry(&z);
}

/// Passwords come from the facility registry (a secret file here).
fn passwords_from_the_registry(z: &[u8]) {
    let registry = "facilities:\n  - id: F1\n    zip_passwords: [{ file: PWFILE }]\n";
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    let (summary, sink) = run(
        "f.zip",
        z,
        &env(&registry.replace("PWFILE", pw.to_str().unwrap())),
    );
    assert_eq!(summary.unwrap().records["notes"], 2);
    assert_eq!(sink.records.len(), 2);
    // `from: ingest_date`: the UTC day of `_ingested_at`.
    assert_eq!(sink.records[0].2["received_on"], "2024-03-02");
    let missing = registry.replace("PWFILE", "/nonexistent/pw");
    let (r, _) = run("f.zip", z, &env(&missing));
    assert!(matches!(
        r,
        Err(ProcessError::File(FileError::PasswordUnavailable { .. }))
    ));
}

#[test]
fn missing_pii_key_is_a_configuration_error() {
    let d = Dataset::from_yaml(VISITS, Path::new("t.yaml")).unwrap();
    let err = ParseEnv::new(vec![d], Registry::default(), Limits::default(), None).unwrap_err();
    assert!(err.to_string().contains("pii"), "{err}");
}

#[test]
fn ambiguous_routing_is_reported() {
    let other = VISITS.replace("name: visits", "name: visits2");
    let datasets = [VISITS, &other]
        .iter()
        .map(|y| Dataset::from_yaml(y, Path::new("t.yaml")).unwrap())
        .collect();
    let env = ParseEnv::new(
        datasets,
        Registry::default(),
        Limits::default(),
        Some(&Secret::new("k")),
    )
    .unwrap();
    let (_, sink) = run("visits.csv", b"VisitId,Seq,Patient\nV,1,P\n", &env);
    assert_eq!(sink.rejects[0].code, ErrorCode::AmbiguousDataset);
    assert!(sink.rejects[0].message.contains("visits, visits2"));
}

/// One data set per format, all reading `id` and `note`.
fn every_format() -> Vec<String> {
    [
        ("c", "*.csv", "{ type: csv }", "Id", "Note"),
        (
            "f",
            "*.dat",
            "{ type: fixed_width, columns: [{ name: Id, start: 1, width: 2 }, { name: Note, start: 3, width: 40 }] }",
            "Id",
            "Note",
        ),
        ("x", "*.xml", "{ type: xml, record_element: R }", "@id", "Note"),
        ("j", "*.json", "{ type: json }", "id", "note"),
        ("n", "*.ndjson", "{ type: ndjson }", "id", "note"),
    ]
    .iter()
    .map(|(name, glob, format, id, note)| {
        format!(
            "name: {name}\nmatch: {{ entry: [\"{glob}\"] }}\nformat: {format}\n\
             fields:\n  - {{ name: id, type: int32, source: \"{id}\" }}\n  \
             - {{ name: note, type: string, source: \"{note}\" }}\ntable: {{ mode: append }}\n"
        )
    })
    .collect()
}

/// Records 1 and 4 fit; record 2 is over 96 bytes, record 3 has a note over 12.
fn oversized_entries() -> Vec<(&'static str, String)> {
    let long = "SECRET".repeat(20);
    let big = "SECRET-VAL";
    vec![
        (
            "a.csv",
            format!("Id,Note\n1,ok\n2,{long}\n3,{big}{big}\n4,ok\n"),
        ),
        ("a.dat", format!("01ok\n02{long}\n03{big}{big}\n04ok\n")),
        (
            "a.xml",
            format!(
                "<D><R id=\"1\"><Note>ok</Note></R><R id=\"2\"><Note>{long}</Note></R>\
                 <R id=\"3\"><Note>{big}{big}</Note></R><R id=\"4\"/></D>"
            ),
        ),
        (
            "a.json",
            format!(
                r#"[{{"id": 1, "note": "ok"}}, {{"id": 2, "note": "{long}"}},
                   {{"id": 3, "note": "{big}{big}"}}, {{"id": 4}}]"#
            ),
        ),
        (
            "a.ndjson",
            format!(
                "{{\"id\": 1, \"note\": \"ok\"}}\n{{\"id\": 2, \"note\": \"{long}\"}}\n\
                 {{\"id\": 3, \"note\": \"{big}{big}\"}}\n{{\"id\": 4}}\n"
            ),
        ),
    ]
}

fn capped_limits() -> Limits {
    Limits {
        max_record_bytes: 96,
        max_field_bytes: 12,
        ..Limits::default()
    }
}

#[test]
fn oversized_records_and_values_reject_only_their_record_in_every_format() {
    let definitions = every_format();
    let definitions: Vec<&str> = definitions.iter().map(String::as_str).collect();
    let env = env_with(&definitions, "", capped_limits());
    let entries = oversized_entries();
    let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, t)| (*n, t.as_bytes())).collect();
    let z = pack::zip(&refs, true, Protection::None);
    let (summary, sink) = run("f.zip", &z, &env);
    let summary = summary.unwrap();
    for dataset in ["c", "f", "x", "j", "n"] {
        assert_eq!(summary.records[dataset], 2, "{dataset}");
        let ids: Vec<_> = sink
            .records
            .iter()
            .filter(|(d, _, _)| d == dataset)
            .map(|(_, _, r)| (r["id"].clone(), r["_record_index"].clone()))
            .collect();
        assert_eq!(
            ids,
            [(1.into(), 1.into()), (4.into(), 4.into())],
            "{dataset}"
        );
    }
    let rejects: Vec<_> = sink
        .rejects
        .iter()
        .map(|r| (r.entry.as_str(), r.code, r.index, r.field.as_deref()))
        .collect();
    let mut expected = Vec::new();
    for (entry, _) in &entries {
        expected.push((*entry, ErrorCode::RecordTooLarge, Some(2), None));
        expected.push((*entry, ErrorCode::FieldTooLarge, Some(3), Some("note")));
    }
    assert_eq!(rejects, expected);
    assert_eq!(summary.rejected_records, 10);
    assert_eq!(summary.rejected_entries, 0);
    for r in &sink.rejects {
        assert!(!r.message.contains("SECRET"), "no value in {r}");
    }
    assert_eq!(
        sink.rejects[1].message,
        "the value has 20 bytes, more than max_field_bytes (12)"
    );
    assert!(
        sink.rejects[0]
            .message
            .contains("is longer than max_record_bytes (96)"),
        "{}",
        sink.rejects[0].message
    );
}

#[test]
fn oversized_records_count_toward_the_reject_ratio() {
    let definitions = every_format();
    let env = env_with(&[definitions[0].as_str()], "", capped_limits());
    let long = "x".repeat(200);
    let csv = format!("Id,Note\n1,ok\n2,{long}\n3,{long}\n");
    let (summary, sink) = run("a.csv", csv.as_bytes(), &env);
    let counts = "2 of 3 records rejected (record_too_large: 2)";
    assert_over_ratio(&summary.unwrap(), &sink, counts);
}
