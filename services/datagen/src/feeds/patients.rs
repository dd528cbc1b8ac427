//! `patients`: the EMR's change feed (I/U/D per row), merged per MRN by `UpdatedAt`.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use chrono_tz::America::New_York;
use rand::Rng;

use super::{Entry, Expect, FacilityState, RowWriter, csv_entry, local};
use crate::facilities::GenFacility;
use crate::fake::csv_field;

const HEADER: &str = "MRN,ChangeType,UpdatedAt,LastName,FirstName,DOB,Sex,Zip3,Deceased,WeightKg";

struct Writer<'a> {
    st: &'a mut FacilityState,
    facility: &'a GenFacility,
    eol: &'static str,
    out: String,
    records: u64,
    /// Patients inserted by this file (the only ones it may delete).
    inserted: Vec<usize>,
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
    fn updated_at(&mut self, rng: &mut impl Rng) -> String {
        self.st.patients_clock += Duration::milliseconds(rng.random_range(1..=4000));
        if self.facility.us_dates {
            let naive = local(&mut self.st.patients_clock, &New_York);
            naive.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
        } else {
            self.st
                .patients_clock
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        }
    }

    fn fields(&self, fields: [&str; 10]) -> String {
        let mut line = String::new();
        for (i, v) in fields.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            csv_field(v, &mut line);
        }
        line.push_str(self.eol);
        line
    }

    fn upsert(&mut self, p: usize, change: &str, rng: &mut impl Rng) {
        let at = self.updated_at(rng);
        let us = self.facility.us_dates;
        let pt = &self.st.patients[p];
        let dob = if us {
            pt.dob.format("%m/%d/%Y").to_string()
        } else {
            pt.dob.format("%Y-%m-%d").to_string()
        };
        let zip3 = format!("{:03}", pt.zip3);
        let weight = pt.weight_kg.map(|w| format!("{w:.2}")).unwrap_or_default();
        let deceased = match (us, pt.deceased) {
            (true, d) => {
                if d {
                    "Y"
                } else {
                    "N"
                }
            }
            (false, d) => {
                if d {
                    "true"
                } else {
                    "false"
                }
            }
        };
        let line = self.fields([
            &pt.mrn, change, &at, pt.last, pt.first, &dob, pt.sex, &zip3, deceased, &weight,
        ]);
        self.out.push_str(&line);
        self.records += 1;
        self.st.patients[p].emitted = true;
    }

    fn write_rows(&mut self, n: usize, rng: &mut impl Rng) {
        for _ in 0..n {
            let roll = rng.random_range(0..100);
            if roll < 2 && !self.inserted.is_empty() {
                // A duplicate registration removed within the same extract.
                let slot = rng.random_range(0..self.inserted.len());
                let p = self.inserted.swap_remove(slot);
                let at = self.updated_at(rng);
                let mrn = self.st.patients[p].mrn.clone();
                let line = self.fields([&mrn, "D", &at, "", "", "", "", "", "", ""]);
                self.out.push_str(&line);
                self.records += 1;
                self.st.patients[p].deleted = true;
                continue;
            }
            let pending = self.st.pending_patient();
            let insert =
                (pending.is_some() && roll < 60) || self.st.patients.len() < 10 || roll < 35;
            if insert {
                let p = match pending {
                    Some(p) => p,
                    None => self.st.new_patient(rng),
                };
                self.upsert(p, "I", rng);
                self.inserted.push(p);
            } else {
                let p = self.st.some_patient(rng);
                let change = if self.st.patients[p].emitted {
                    "U"
                } else {
                    "I"
                };
                let pt = &mut self.st.patients[p];
                if let Some(w) = pt.weight_kg.as_mut() {
                    *w = (*w + f64::from(rng.random_range(-200i32..200)) / 100.0)
                        .clamp(1.0, 9_000.0);
                }
                if rng.random_bool(0.1) {
                    pt.zip3 = rng.random_range(10..999);
                }
                if rng.random_bool(0.005) {
                    pt.deceased = true;
                }
                self.upsert(p, change, rng);
            }
        }
    }

    /// A row with exactly one bad value, about a patient that exists nowhere else.
    fn write_bad_row(&mut self, kind: u64, expect: &mut Expect, rng: &mut impl Rng) {
        let n = self.st.next_bad;
        self.st.next_bad += 1;
        let mrn = format!("X{n:07}");
        let at = self.updated_at(rng);
        let (mut dob, mut sex, mut zip3, mut weight) = ("1970-01-01", "F", "123", "70.00");
        let code = match kind % 4 {
            0 => {
                dob = "1980-02-30";
                "bad_date"
            }
            1 => {
                sex = "Q";
                "not_allowed"
            }
            2 => {
                zip3 = "60";
                "regex_mismatch"
            }
            _ => {
                weight = "heavy";
                "bad_decimal"
            }
        };
        let line = self.fields([&mrn, "I", &at, "Doe", "Pat", dob, sex, zip3, "N", weight]);
        self.out.push_str(&line);
        expect.reject(code);
    }
}

/// A patients extract compressing to about `target_bytes`, written at `until`.
pub(crate) fn patients(
    st: &mut FacilityState,
    facility: &GenFacility,
    name: &str,
    until: DateTime<Utc>,
    target_bytes: u64,
    bad_rows: u64,
    rng: &mut impl Rng,
) -> (Entry, Expect) {
    let eol = if facility.crlf { "\r\n" } else { "\n" };
    st.patients_clock = st.patients_clock.max(until - Duration::hours(1));
    let mut w = Writer {
        st,
        facility,
        eol,
        out: String::new(),
        records: 0,
        inserted: Vec::new(),
    };
    // Some EMRs write a UTF-8 byte order mark.
    let bom = if facility.crlf { "\u{feff}" } else { "" };
    let header = format!("{bom}{HEADER}{eol}");
    csv_entry(&mut w, name, header, target_bytes, bad_rows, rng)
}
