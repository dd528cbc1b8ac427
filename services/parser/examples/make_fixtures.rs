//! Regenerates the archive fixtures in `tests/data/` from the readable sources in
//! `tests/data/src/`: `cargo run -p medlake-parser --example make_fixtures`.
//!
//! Encrypted archives get a random salt each time, so their bytes (and file ids)
//! change: after regenerating, re-bless the golden files with
//! `MEDLAKE_BLESS=1 cargo test -p medlake-parser --test golden`.
//! Passwords are listed in `tests/data/README.md`.

use std::path::Path;

use medlake_datagen::pack::{self, Protection};

fn lab_result(i: usize) -> String {
    // Result 7 has no LOINC code: a record reject (missing_required).
    let code = if i == 7 {
        String::new()
    } else {
        format!("<lab:Code>{}-{}</lab:Code>", 2345 + i, i % 10)
    };
    let flag = ["N", "H", "L", "N", "HH"][i % 5];
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<lab:LabResult xmlns:lab="urn:medlake:lab:v1" xmlns:pt="urn:medlake:patient:v1" id="R-2024-{i:04}">
  <pt:Patient><pt:MRN>M{mrn:06}</pt:MRN><pt:Name>Test &amp; Patient</pt:Name></pt:Patient>
  <lab:Order number="ORD-{order}"/>
  <lab:Test>{code}<lab:Name>Glucose &lt;fasting&gt;</lab:Name></lab:Test>
  <lab:Value unit="mg/dL">{value_int}.{value_frac}</lab:Value>
  <lab:Flag>{flag}</lab:Flag>
  <lab:Collected>2024-03-01T0{h}:15:00-06:00</lab:Collected>
  <lab:Resulted>{resulted}</lab:Resulted>
  <lab:Comment><![CDATA[Sample <hemolyzed> & re-drawn]]></lab:Comment>
</lab:LabResult>
"#,
        mrn = 100 + i,
        order = 5000 + i / 4,
        value_int = 70 + i * 3,
        value_frac = i % 10,
        h = i % 10,
        resulted = if i.is_multiple_of(2) {
            format!("{}", 1_709_300_000 + i * 60)
        } else {
            "2024-03-01T18:00:00Z".to_string()
        },
    )
}

fn main() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let src = |name: &str| std::fs::read(data.join("src").join(name)).expect("fixture source");
    let write = |name: &str, bytes: Vec<u8>| {
        std::fs::write(data.join(name), bytes).expect("write fixture");
        println!("wrote tests/data/{name}");
    };

    let adt = src("adt_20240301.csv");
    write(
        "adt_F001_20240301.zip",
        pack::zip(
            &[("adt_20240301.csv", &adt)],
            true,
            Protection::ZipCrypto("spring-2024"),
        ),
    );

    write(
        "census_F002_20240301.txt.gz",
        pack::gzip(&src("census_20240301.txt")),
    );

    let fixed = src("bedcensus_0301.dat");
    write(
        "BEDCENSUS_F003_20240301.zip",
        pack::zip(
            &[("extract/bedcensus_0301.dat", &fixed)],
            false,
            Protection::None,
        ),
    );

    let labs: Vec<(String, String)> = (1..=20)
        .map(|i| (format!("results/lab_{i:04}.xml"), lab_result(i)))
        .collect();
    let entries: Vec<(&str, &[u8])> = labs
        .iter()
        .map(|(n, x)| (n.as_str(), x.as_bytes()))
        .collect();
    write(
        "labs_F001_20240301.zip",
        pack::zip(&entries, true, Protection::Aes256("winter-2023")),
    );

    let inner = pack::zip(
        &[("patients_20240301.csv", &src("patients_20240301.csv"))],
        true,
        Protection::Aes128("fac2-pass"),
    );
    write(
        "patients_F002_20240301.zip",
        pack::zip(
            &[("inner/patients_full.zip", &inner)],
            true,
            Protection::Aes128("fac2-pass"),
        ),
    );
}
