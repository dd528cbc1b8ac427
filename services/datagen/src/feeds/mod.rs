//! Content of the five sample feeds, written from one evolving state per facility so
//! the change feeds are consistent: ADT events follow each encounter's life
//! (admit → transfers/updates → discharge, or a cancel), patients are inserted, updated
//! and deleted, and the MRNs of ADT events and lab results are the facility's patients.
//!
//! Deletes only touch keys created in the same file (a cancelled admission, a duplicate
//! registration removed): files may arrive in any order, and a delete that overtook the
//! row it removes would leave the final table state depending on arrival order.

mod adt;
mod census;
mod labs;
mod patients;

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rand::Rng;

pub(crate) use adt::adt;
pub(crate) use census::{census_delimited, census_fixed};
pub(crate) use labs::labs;
pub(crate) use patients::patients;

/// The sample data sets of `schemas/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feed {
    /// `adt_events`: CSV, merged per encounter.
    Adt,
    /// `patients`: CSV change feed, merged per MRN.
    Patients,
    /// `bed_census`: pipe-delimited TXT, Windows-1252.
    Census,
    /// `bed_census_fixed`: fixed-width TXT, Latin-1.
    CensusFixed,
    /// `lab_results`: zips of 20–300 single-record XML files.
    Labs,
}

impl Feed {
    /// The data set (and table) name.
    pub fn dataset(self) -> &'static str {
        match self {
            Feed::Adt => "adt_events",
            Feed::Patients => "patients",
            Feed::Census => "bed_census",
            Feed::CensusFixed => "bed_census_fixed",
            Feed::Labs => "lab_results",
        }
    }

    /// Every feed.
    pub const ALL: [Feed; 5] = [
        Feed::Adt,
        Feed::Patients,
        Feed::Census,
        Feed::CensusFixed,
        Feed::Labs,
    ];
}

/// One generated entry (a file inside the archive, or the gzip's content).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// What one generated entry should become: records and rejects per code.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expect {
    pub records: u64,
    pub rejects: BTreeMap<String, u64>,
}

impl Expect {
    pub(crate) fn reject(&mut self, code: &str) {
        *self.rejects.entry(code.to_string()).or_default() += 1;
    }
}

/// A patient of a facility.
#[derive(Debug, Clone)]
pub(crate) struct Patient {
    pub mrn: String,
    pub last: &'static str,
    pub first: &'static str,
    pub dob: NaiveDate,
    pub sex: &'static str,
    pub zip3: u16,
    pub weight_kg: Option<f64>,
    pub deceased: bool,
    /// Sent in a patients file at least once.
    pub emitted: bool,
    pub deleted: bool,
}

/// An encounter (visit) of a facility.
#[derive(Debug, Clone)]
pub(crate) struct Encounter {
    pub id: String,
    pub patient: usize,
    pub seq: i64,
    pub ward: &'static str,
    pub bed: String,
    pub deleted: bool,
}

/// Everything a facility's feeds have said so far.
#[derive(Debug, Clone)]
pub(crate) struct FacilityState {
    pub id: String,
    pub patients: Vec<Patient>,
    pub encounters: Vec<Encounter>,
    /// Indexes of encounters not yet discharged.
    pub open: Vec<usize>,
    pub npis: Vec<String>,
    /// Census units (indexes into [`crate::fake::UNITS`]).
    pub units: Vec<usize>,
    pub adt_clock: DateTime<Utc>,
    pub patients_clock: DateTime<Utc>,
    pub census_clock: DateTime<Utc>,
    pub labs_clock: DateTime<Utc>,
    pub next_result: u64,
    pub next_order: u64,
    /// Serial for ids of rows meant to be rejected (never part of the state).
    pub next_bad: u64,
    /// Patients before this index have all been sent (or deleted).
    pub pending_from: usize,
}

impl FacilityState {
    pub(crate) fn new(id: &str, start: DateTime<Utc>, rng: &mut impl Rng) -> Self {
        let mut units: Vec<usize> = (0..crate::fake::UNITS.len()).collect();
        let keep = rng.random_range(4..=units.len());
        while units.len() > keep {
            units.remove(rng.random_range(0..units.len()));
        }
        FacilityState {
            id: id.to_string(),
            patients: Vec::new(),
            encounters: Vec::new(),
            open: Vec::new(),
            npis: (0..rng.random_range(5..40))
                .map(|_| crate::fake::npi(rng))
                .collect(),
            units,
            adt_clock: start,
            patients_clock: start,
            census_clock: start,
            labs_clock: start,
            next_result: 1,
            next_order: 1,
            next_bad: 1,
            pending_from: 0,
        }
    }

    /// A new patient in the pool (not yet sent in a patients file).
    pub(crate) fn new_patient(&mut self, rng: &mut impl Rng) -> usize {
        use rand::seq::IndexedRandom;
        let n = self.patients.len() + 1;
        let days = rng.random_range(0..365 * 95);
        self.patients.push(Patient {
            mrn: format!("M{n:07}"),
            last: crate::fake::LAST_NAMES.choose(rng).expect("names"),
            first: crate::fake::FIRST_NAMES.choose(rng).expect("names"),
            dob: NaiveDate::from_ymd_opt(1930, 1, 1).expect("date") + chrono::Days::new(days),
            sex: ["F", "F", "M", "M", "U", "X"].choose(rng).expect("sex"),
            zip3: rng.random_range(10..999),
            weight_kg: rng
                .random_bool(0.85)
                .then(|| f64::from(rng.random_range(300u32..15_000)) / 100.0),
            deceased: false,
            emitted: false,
            deleted: false,
        });
        n - 1
    }

    /// A patient for a visit or a lab result: mostly a known one.
    pub(crate) fn some_patient(&mut self, rng: &mut impl Rng) -> usize {
        if !self.patients.is_empty() && rng.random_bool(0.7) {
            for _ in 0..8 {
                let i = rng.random_range(0..self.patients.len());
                if !self.patients[i].deleted {
                    return i;
                }
            }
        }
        self.new_patient(rng)
    }

    /// The first patient of the pool never sent in a patients file.
    pub(crate) fn pending_patient(&mut self) -> Option<usize> {
        while let Some(p) = self.patients.get(self.pending_from) {
            if !p.emitted && !p.deleted {
                return Some(self.pending_from);
            }
            self.pending_from += 1;
        }
        None
    }

    /// Rows the merge table `adt_events` holds now.
    pub(crate) fn adt_rows(&self) -> u64 {
        self.encounters.iter().filter(|e| !e.deleted).count() as u64
    }

    /// Rows the merge table `patients` holds now.
    pub(crate) fn patient_rows(&self) -> u64 {
        self.patients
            .iter()
            .filter(|p| p.emitted && !p.deleted)
            .count() as u64
    }
}

/// Writes the rows of a CSV feed into its own buffer.
pub(crate) trait RowWriter<R: Rng> {
    /// Appends `n` good rows.
    fn rows(&mut self, n: usize, rng: &mut R);
    /// Appends one row with exactly one bad value (of a kind chosen by `kind`).
    fn bad_row(&mut self, kind: u64, expect: &mut Expect, rng: &mut R);
    /// The rows written since the last call.
    fn take(&mut self) -> String;
    /// Good rows written so far.
    fn records(&self) -> u64;
}

/// An entry of `header` plus rows compressing to about `target_bytes`, then
/// `bad_rows` rows to be rejected.
pub(crate) fn csv_entry<R: Rng>(
    w: &mut impl RowWriter<R>,
    name: &str,
    header: String,
    target_bytes: u64,
    bad_rows: u64,
    rng: &mut R,
) -> (Entry, Expect) {
    let mut bytes = header.into_bytes();
    fill(target_bytes, 16, &mut bytes, |buf, n| {
        w.rows(n, rng);
        buf.extend_from_slice(w.take().as_bytes());
    });
    let mut expect = Expect::default();
    for kind in 0..bad_rows {
        w.bad_row(kind, &mut expect, rng);
    }
    bytes.extend_from_slice(w.take().as_bytes());
    expect.records = w.records();
    (
        Entry {
            name: name.to_string(),
            bytes,
        },
        expect,
    )
}

/// Local wall-clock time of `at` in `tz`, moved forward past a repeated (ambiguous)
/// hour so the local text maps back to exactly one instant.
pub(crate) fn local<Tz: TimeZone>(at: &mut DateTime<Utc>, tz: &Tz) -> NaiveDateTime {
    loop {
        let naive = at.with_timezone(tz).naive_local();
        if tz.from_local_datetime(&naive).single().is_some() {
            return naive;
        }
        *at += chrono::Duration::minutes(30);
    }
}

/// How many bytes `bytes` deflate to (fast level: an estimate of the archive's size).
fn deflated_len(bytes: &[u8]) -> usize {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("in-memory deflate");
    e.finish().expect("in-memory deflate").len().max(1)
}

/// Bytes of text after which the compression ratio measured so far is trusted.
const CALIBRATION_BYTES: usize = 512 * 1024;

/// Appends rows (`add(buf, n)` writes `n` rows) until `buf` would compress to about
/// `target_bytes`. Returns the rows written (at least `min_rows`).
pub(crate) fn fill(
    target_bytes: u64,
    min_rows: usize,
    buf: &mut Vec<u8>,
    mut add: impl FnMut(&mut Vec<u8>, usize),
) -> usize {
    let target = target_bytes as f64;
    let mut rows = 0usize;
    let mut ratio: Option<f64> = None;
    let mut n = min_rows.max(1);
    loop {
        let before = buf.len();
        add(buf, n);
        rows += n;
        let per_row = ((buf.len() - before) as f64 / n as f64).max(1.0);
        let packed = match ratio {
            Some(r) => buf.len() as f64 / r,
            None => {
                let packed = deflated_len(buf) as f64;
                if buf.len() >= CALIBRATION_BYTES {
                    ratio = Some(buf.len() as f64 / packed);
                }
                packed
            }
        };
        if packed >= target {
            return rows;
        }
        let r = ratio.unwrap_or(buf.len() as f64 / packed);
        let missing = ((target - packed) * r / per_row).ceil() as usize;
        // While calibrating, at most double, so small files do not overshoot.
        n = if ratio.is_some() {
            missing.max(1)
        } else {
            missing.clamp(1, rows)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_stops_near_the_target() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for target in [20_000u64, 300_000, 2_000_000] {
            let mut buf = Vec::new();
            fill(target, 8, &mut buf, |b, n| {
                for _ in 0..n {
                    writeln!(
                        b,
                        "{},{},x{}",
                        rng.random::<u32>(),
                        rng.random::<u16>(),
                        rng.random::<u8>()
                    )
                    .unwrap();
                }
            });
            let packed = deflated_len(&buf) as f64;
            assert!(
                packed >= target as f64 * 0.9 && packed <= target as f64 * 1.3,
                "{target}: {packed}"
            );
        }
    }

    #[test]
    fn local_time_skips_the_repeated_hour() {
        let tz = chrono_tz::America::Chicago;
        // 2024-11-03 01:30 happens twice in Chicago.
        let mut at = Utc.with_ymd_and_hms(2024, 11, 3, 6, 30, 0).unwrap();
        let naive = local(&mut at, &tz);
        assert!(tz.from_local_datetime(&naive).single().is_some());
        assert!(at > Utc.with_ymd_and_hms(2024, 11, 3, 6, 30, 0).unwrap());
    }
}
