//! `lab_results`: one XML document per result, 20–300 documents per zip.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use chrono_tz::America::Chicago;
use rand::Rng;
use rand::seq::IndexedRandom;

use super::{Entry, Expect, FacilityState};
use crate::fake::{LAB_TESTS, lab_value, xml_escape};

const COMMENTS: &[&str] = &[
    "",
    "",
    "",
    "<![CDATA[Sample <hemolyzed> & re-drawn]]>",
    "Repeat in 6 h",
    "Critical value called to ward",
];

/// `documents` lab results (one entry each) collected before `until`.
pub(crate) fn labs(
    st: &mut FacilityState,
    documents: usize,
    until: DateTime<Utc>,
    flat: bool,
    rng: &mut impl Rng,
) -> (Vec<Entry>, Expect) {
    st.labs_clock = st.labs_clock.max(until - Duration::hours(3));
    let mut entries = Vec::with_capacity(documents);
    let mut left_in_order = 0;
    let mut order = 0;
    for _ in 0..documents {
        if left_in_order == 0 {
            order = st.next_order;
            st.next_order += 1;
            left_in_order = rng.random_range(1..=6);
        }
        left_in_order -= 1;
        let patient = st.some_patient(rng);
        let id = format!("R-{}-{:08}", st.id.to_ascii_uppercase(), st.next_result);
        st.next_result += 1;
        st.labs_clock += Duration::seconds(rng.random_range(5..90));
        let collected = st.labs_clock.with_timezone(&Chicago);
        let resulted = st.labs_clock + Duration::minutes(rng.random_range(20..240));
        let resulted = if rng.random_bool(0.5) {
            resulted.timestamp().to_string()
        } else {
            resulted.to_rfc3339_opts(SecondsFormat::Secs, true)
        };
        let test = LAB_TESTS.choose(rng).expect("tests");
        let (value, flag) = lab_value(test, rng);
        let comment = COMMENTS.choose(rng).expect("comments");
        let pt = &st.patients[patient];
        let comment = if comment.is_empty() {
            String::new()
        } else {
            format!("\n  <lab:Comment>{comment}</lab:Comment>")
        };
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<lab:LabResult xmlns:lab="urn:medlake:lab:v1" xmlns:pt="urn:medlake:patient:v1" id="{id}">
  <pt:Patient><pt:MRN>{mrn}</pt:MRN><pt:Name>{name}</pt:Name></pt:Patient>
  <lab:Order number="ORD-{order:08}"/>
  <lab:Test><lab:Code>{loinc}</lab:Code><lab:Name>{test_name}</lab:Name></lab:Test>
  <lab:Value unit="{unit}">{value}</lab:Value>
  <lab:Flag>{flag}</lab:Flag>
  <lab:Collected>{collected}</lab:Collected>
  <lab:Resulted>{resulted}</lab:Resulted>{comment}
</lab:LabResult>
"#,
            mrn = pt.mrn,
            name = xml_escape(&format!("{}, {}", pt.last, pt.first)),
            loinc = test.loinc,
            test_name = xml_escape(test.name),
            unit = xml_escape(test.unit),
            collected = collected.to_rfc3339_opts(SecondsFormat::Secs, false),
        );
        let name = if flat {
            format!("LAB_{id}.xml")
        } else {
            format!("results/{id}.xml")
        };
        entries.push(Entry {
            name,
            bytes: xml.into_bytes(),
        });
    }
    (
        entries,
        Expect {
            records: documents as u64,
            ..Expect::default()
        },
    )
}
