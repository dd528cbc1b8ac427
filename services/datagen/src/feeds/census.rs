//! `bed_census` (pipe-delimited, Windows-1252) and `bed_census_fixed` (fixed-width,
//! Latin-1, header and trailer lines): beds per care unit, every 15 minutes or hour.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::America::Denver;
use encoding_rs::WINDOWS_1252;
use rand::Rng;

use super::{Entry, Expect, FacilityState, fill, local};
use crate::fake::UNITS;

/// Occupied, blocked (or isolation) beds of a unit of `total` beds.
fn occupancy(total: u32, rng: &mut impl Rng) -> (u32, u32) {
    let occupied = (f64::from(total) * rng.random_range(0.45..1.05)).round() as u32;
    let blocked = if rng.random_bool(0.3) {
        rng.random_range(1..=2)
    } else {
        0
    };
    (occupied, blocked)
}

fn encode(text: &str) -> Vec<u8> {
    WINDOWS_1252.encode(text).0.into_owned()
}

/// A unit's census line: the line buffer, the census time, the unit.
type Line<'a, R> = dyn FnMut(&mut String, DateTime<Utc>, (&str, &str, bool, u32), &mut R) + 'a;

/// One census line per unit and period, from the facility's census clock on, until
/// the entry compresses to about `target_bytes`.
fn census<R: Rng>(
    st: &mut FacilityState,
    name: &str,
    header: &str,
    period: Duration,
    target_bytes: u64,
    line_of: &mut Line<'_, R>,
    rng: &mut R,
) -> (Entry, Expect) {
    let mut bytes = encode(header);
    let units = st.units.clone();
    let mut unit = 0usize;
    let mut line = String::new();
    let rows = fill(target_bytes, units.len(), &mut bytes, |buf, n| {
        for _ in 0..n {
            if unit == 0 {
                st.census_clock += period;
            }
            line_of(&mut line, st.census_clock, UNITS[units[unit]], rng);
            unit = (unit + 1) % units.len();
        }
        buf.extend_from_slice(&encode(&line));
        line.clear();
    });
    let expect = Expect {
        records: rows as u64,
        ..Expect::default()
    };
    let entry = Entry {
        name: name.to_string(),
        bytes,
    };
    (entry, expect)
}

/// A pipe-delimited census compressing to about `target_bytes`.
pub(crate) fn census_delimited<R: Rng>(
    st: &mut FacilityState,
    name: &str,
    until: DateTime<Utc>,
    target_bytes: u64,
    rng: &mut R,
) -> (Entry, Expect) {
    st.census_clock = st.census_clock.max(until - Duration::hours(6));
    let header = "UNIT|UNIT_NAME|CENSUS_TS|TOTAL|OCCUPIED|BLOCKED|OCC_RATIO|ICU_FLAG\r\n";
    let mut line_of = |line: &mut String,
                       census_at: DateTime<Utc>,
                       unit: (&str, &str, bool, u32),
                       rng: &mut R| {
        let (code, unit_name, icu, total) = unit;
        let mut at = census_at;
        let naive = local(&mut at, &Denver);
        // A repeated local hour is written with its offset instead.
        let ts = if at == census_at {
            naive.format("%Y%m%d%H%M").to_string()
        } else {
            census_at
                .with_timezone(&Denver)
                .format("%Y-%m-%dT%H:%M:%S%z")
                .to_string()
        };
        let (occupied, blocked) = occupancy(total, rng);
        let blocked = if blocked == 0 && rng.random_bool(0.5) {
            String::new()
        } else {
            blocked.to_string()
        };
        let ratio = f64::from(occupied) / f64::from(total);
        let icu = if icu { "Y" } else { "N" };
        let _ = write!(
            line,
            "{code}|{unit_name}|{ts}|{total}|{occupied}|{blocked}|{ratio:.3}|{icu}\r\n"
        );
    };
    let period = Duration::minutes(15);
    census(st, name, header, period, target_bytes, &mut line_of, rng)
}

/// A fixed-width census (hourly, with a trailer) compressing to about `target_bytes`.
pub(crate) fn census_fixed<R: Rng>(
    st: &mut FacilityState,
    name: &str,
    until: DateTime<Utc>,
    target_bytes: u64,
    rng: &mut R,
) -> (Entry, Expect) {
    st.census_clock = st.census_clock.max(until - Duration::hours(24));
    let header = "UNIT  UNIT_NAME           DATE    HHTOT OCC ISO\n";
    let mut line_of =
        |line: &mut String, at: DateTime<Utc>, unit: (&str, &str, bool, u32), rng: &mut R| {
            let (code, unit_name, _, total) = unit;
            let (occupied, isolation) = occupancy(total, rng);
            let isolation = if rng.random_bool(0.2) {
                String::new()
            } else {
                isolation.to_string()
            };
            let unit_name: String = unit_name.chars().take(20).collect();
            let hour = at.with_timezone(&Denver).format("%Y%m%d%H");
            let _ = writeln!(
                line,
                "{code:<6}{unit_name:<20}{hour}{total:>4}{occupied:>4}{isolation:>4}"
            );
        };
    let period = Duration::hours(1);
    let (mut entry, expect) = census(st, name, header, period, target_bytes, &mut line_of, rng);
    entry
        .bytes
        .extend_from_slice(format!("TRL{:06}\n", expect.records).as_bytes());
    (entry, expect)
}
