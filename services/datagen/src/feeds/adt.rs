//! `adt_events`: one CSV per extract, each row an HL7 ADT event of an encounter.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::America::Chicago;
use rand::Rng;
use rand::seq::IndexedRandom;

use super::{Encounter, Entry, Expect, FacilityState, RowWriter, csv_entry, local};
use crate::facilities::GenFacility;
use crate::fake::{self, csv_field};

const HEADER: &str =
    "EncounterID,MRN,EventType,EventSeq,EventTime,Ward,Bed,AdmitSource,AttendingNPI,Notes";

struct Row<'a> {
    encounter: &'a str,
    mrn: &'a str,
    event: &'a str,
    seq: &'a str,
    time: &'a str,
    ward: &'a str,
    bed: &'a str,
    source: &'a str,
    npi: &'a str,
    notes: &'a str,
}

fn write_row(row: &Row<'_>, eol: &str, out: &mut String) {
    for (i, v) in [
        row.encounter,
        row.mrn,
        row.event,
        row.seq,
        row.time,
        row.ward,
        row.bed,
        row.source,
        row.npi,
        row.notes,
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        csv_field(v, out);
    }
    out.push_str(eol);
}

struct Writer<'a> {
    st: &'a mut FacilityState,
    us_dates: bool,
    eol: &'static str,
    out: String,
    records: u64,
}

impl<R: Rng> RowWriter<R> for Writer<'_> {
    fn rows(&mut self, n: usize, rng: &mut R) {
        self.write_rows(n, rng);
    }

    fn bad_row(&mut self, kind: u64, expect: &mut Expect, rng: &mut R) {
        self.write_bad_row(kind, expect, rng);
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.out)
    }

    fn records(&self) -> u64 {
        self.records
    }
}

impl Writer<'_> {
    fn time(&mut self, rng: &mut impl Rng) -> String {
        self.st.adt_clock += Duration::seconds(rng.random_range(1..=20));
        let naive = local(&mut self.st.adt_clock, &Chicago);
        let format = if self.us_dates {
            "%m/%d/%Y %H:%M"
        } else {
            "%Y-%m-%d %H:%M:%S"
        };
        naive.format(format).to_string()
    }

    fn event(&mut self, e: usize, event: &str, source: &str, rng: &mut impl Rng) {
        let time = self.time(rng);
        let npi = self.st.npis.choose(rng).cloned().unwrap_or_default();
        let notes = fake::NOTES.choose(rng).expect("notes");
        let enc = &self.st.encounters[e];
        let seq = enc.seq.to_string();
        write_row(
            &Row {
                encounter: &enc.id,
                mrn: &self.st.patients[enc.patient].mrn,
                event,
                seq: &seq,
                time: &time,
                ward: if event == "A11" { "" } else { enc.ward },
                bed: if event == "A11" { "" } else { &enc.bed },
                source,
                npi: &npi,
                notes,
            },
            self.eol,
            &mut self.out,
        );
        self.records += 1;
    }

    fn admit(&mut self, rng: &mut impl Rng) {
        let patient = self.st.some_patient(rng);
        let n = self.st.encounters.len() + 1;
        self.st.encounters.push(Encounter {
            id: format!("ENC-{}-{n:07}", self.st.id.to_ascii_uppercase()),
            patient,
            seq: 1,
            ward: fake::WARDS.choose(rng).expect("wards"),
            bed: format!(
                "{}{}",
                rng.random_range(1..40),
                ["A", "B"][rng.random_range(0..2)]
            ),
            deleted: false,
        });
        let e = n - 1;
        let source = *fake::ADMIT_SOURCES.choose(rng).expect("sources");
        self.event(e, "A01", source, rng);
        let cancel = match rng.random_range(0..1000) {
            0..=24 => Some("A11"),
            25..=29 => Some("A23"),
            _ => None,
        };
        match cancel {
            Some(code) => {
                self.st.encounters[e].seq += 1;
                self.st.encounters[e].deleted = true;
                self.event(e, code, "", rng);
            }
            None => self.st.open.push(e),
        }
    }

    fn follow_up(&mut self, rng: &mut impl Rng) {
        let slot = rng.random_range(0..self.st.open.len());
        let e = self.st.open[slot];
        self.st.encounters[e].seq += 1;
        let event = match rng.random_range(0..100) {
            0..=29 => {
                self.st.encounters[e].ward = fake::WARDS.choose(rng).expect("wards");
                self.st.encounters[e].bed = format!("{}A", rng.random_range(1..40));
                "A02"
            }
            30..=59 => "A08",
            _ => {
                self.st.open.swap_remove(slot);
                "A03"
            }
        };
        self.event(e, event, "", rng);
    }

    fn write_rows(&mut self, n: usize, rng: &mut impl Rng) {
        for _ in 0..n {
            if self.st.open.len() < 8 || rng.random_bool(0.3) {
                self.admit(rng);
            } else {
                self.follow_up(rng);
            }
        }
    }

    /// A row with exactly one bad value, about an encounter that exists nowhere else.
    fn write_bad_row(&mut self, kind: u64, expect: &mut Expect, rng: &mut impl Rng) {
        let n = self.st.next_bad;
        self.st.next_bad += 1;
        let id = format!("ENC-{}-X{n:06}", self.st.id.to_ascii_uppercase());
        let mut time = self.time(rng);
        let (mut event, mut seq, mut npi) = ("A01", "1".to_string(), "1234567890".to_string());
        let code = match kind % 4 {
            0 => {
                event = "A99";
                "not_allowed"
            }
            1 => {
                time = "2024-02-30 25:61:00".to_string();
                "bad_timestamp"
            }
            2 => {
                npi = "12345".to_string();
                "regex_mismatch"
            }
            _ => {
                seq = "seven".to_string();
                "bad_int"
            }
        };
        write_row(
            &Row {
                encounter: &id,
                mrn: "M9999999",
                event,
                seq: &seq,
                time: &time,
                ward: "MED",
                bed: "1A",
                source: "ER",
                npi: &npi,
                notes: "",
            },
            self.eol,
            &mut self.out,
        );
        expect.reject(code);
    }
}

/// An ADT extract compressing to about `target_bytes`, ending at `until`, with
/// `bad_rows` rows that the parser must reject one by one.
pub(crate) fn adt(
    st: &mut FacilityState,
    facility: &GenFacility,
    name: &str,
    until: DateTime<Utc>,
    target_bytes: u64,
    bad_rows: u64,
    rng: &mut impl Rng,
) -> (Entry, Expect) {
    let eol = if facility.crlf { "\r\n" } else { "\n" };
    st.adt_clock = st.adt_clock.max(until - Duration::hours(2));
    let mut w = Writer {
        st,
        us_dates: facility.us_dates,
        eol,
        out: String::new(),
        records: 0,
    };
    csv_entry(
        &mut w,
        name,
        format!("{HEADER}{eol}"),
        target_bytes,
        bad_rows,
        rng,
    )
}
