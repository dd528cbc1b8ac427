//! Property test over the archive and format layers: mutated fixtures and random bytes
//! never panic, and every outcome is a summary or a coded file error. Bounded: a fixed
//! number of cases, a few seconds in a debug build.

use std::path::Path;

use chrono::{DateTime, Utc};
use medlake_common::dataset::load_dir;
use medlake_common::facilities::Registry;
use medlake_common::secret::Secret;
use medlake_parser::archive::Limits;
use medlake_parser::{
    Delivery, FileInput, ParseEnv, ProcessError, Record, RecordSink, Reject, process_file,
};
use proptest::prelude::*;

struct Counting(u64, u64);

impl RecordSink for Counting {
    type Error = std::convert::Infallible;
    fn record(&mut self, record: &Record<'_>) -> Result<Delivery, Self::Error> {
        serde_json::from_slice::<serde_json::Value>(record.json).expect("records are valid JSON");
        self.0 += 1;
        Ok(Delivery::Taken)
    }
    fn reject(&mut self, _: &Reject) -> Result<(), Self::Error> {
        self.1 += 1;
        Ok(())
    }
}

fn env() -> ParseEnv {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let datasets = load_dir(&root.join("../../schemas")).unwrap();
    let dir = std::env::temp_dir().join(format!("medlake-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "fac2-pass").unwrap();
    let registry = Registry::parse(
        &format!(
            "facilities:\n  - id: F\n    zip_passwords: [{{ file: {} }}]\n",
            pw.display()
        ),
        Path::new("f"),
    )
    .unwrap();
    let limits = Limits {
        max_entry_bytes: 4 << 20,
        max_total_bytes: 8 << 20,
        ..Limits::default()
    };
    ParseEnv::new(datasets, registry, limits, Some(&Secret::new("k"))).unwrap()
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut out = Vec::new();
    for name in [
        "census_F002_20240301.txt.gz",
        "BEDCENSUS_F003_20240301.zip",
        "patients_F002_20240301.zip",
    ] {
        out.push((name.to_string(), std::fs::read(data.join(name)).unwrap()));
    }
    for name in [
        "adt_20240301.csv",
        "census_20240301.txt",
        "bedcensus_0301.dat",
        "patients_20240301.csv",
    ] {
        let renamed = name.replace("census_2", "census_F_2");
        out.push((renamed, std::fs::read(data.join("src").join(name)).unwrap()));
    }
    let xml = r#"<lab:LabResult xmlns:lab="urn:medlake:lab:v1" xmlns:pt="urn:medlake:patient:v1" id="R1"><pt:Patient><pt:MRN>M1</pt:MRN></pt:Patient><lab:Order number="O"/><lab:Test><lab:Code>1-2</lab:Code></lab:Test><lab:Collected>2024-03-01T00:00:00Z</lab:Collected></lab:LabResult>"#;
    out.push(("r.xml".into(), xml.as_bytes().to_vec()));
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, x) => {
            let i = i % bytes.len();
            bytes[i] ^= x;
        }
        Mutation::Truncate(i) => bytes.truncate(i % bytes.len()),
        Mutation::Insert(i, v) => {
            let i = i % (bytes.len() + 1);
            bytes.splice(i..i, v.iter().copied());
        }
    }
}

fn check(env: &ParseEnv, name: &str, bytes: &[u8]) {
    let now: DateTime<Utc> = DateTime::from_timestamp(1_709_337_600, 0).unwrap();
    let input = FileInput {
        file_id: "f",
        facility_id: "F",
        file_name: name,
        bytes,
        ingested_at: now,
    };
    let mut sink = Counting(0, 0);
    match process_file(&input, env, &mut sink) {
        Ok(summary) => {
            assert_eq!(summary.total_records(), sink.0);
            assert_eq!(summary.rejected_entries + summary.rejected_records, sink.1);
        }
        Err(ProcessError::File(e)) => {
            assert_eq!(e.code().stage().as_str(), "unzip");
            assert_eq!((sink.0, sink.1), (0, 0), "a rejected file emits nothing");
        }
        Err(ProcessError::Sink(never)) => match never {},
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_fixtures_never_panic(seed in 0usize..8, mutations in proptest::collection::vec(mutation(), 1..6)) {
        thread_local!(static ENV: ParseEnv = env());
        let seeds = seeds();
        let (name, mut bytes) = seeds[seed % seeds.len()].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        ENV.with(|env| check(env, &name, &bytes));
    }

    #[test]
    fn random_bytes_never_panic(prefix in prop_oneof![Just(b"".to_vec()), Just(b"PK\x03\x04".to_vec()), Just(vec![0x1f, 0x8b, 8, 0])], body in proptest::collection::vec(any::<u8>(), 0..2048), name in prop_oneof![Just("a.csv"), Just("x.xml"), Just("census_1.txt"), Just("y.dat"), Just("z.zip")]) {
        thread_local!(static ENV: ParseEnv = env());
        let mut bytes = prefix;
        bytes.extend(body);
        ENV.with(|env| check(env, name, &bytes));
    }
}
