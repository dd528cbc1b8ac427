//! Which files to write: facility, feed, time of day, size, gzip or zip, and which are
//! made bad on purpose. Sizes follow the requirements: 99 % of archives 20 KB–1.5 MB
//! (log-uniform, so small files dominate), 1 % a tail up to 40 MB, all capped by
//! `max_zip_bytes`; lab zips are sized by their 20–300 documents instead.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use rand::Rng;

use crate::facilities::GenFacility;
use crate::feeds::Feed;
use crate::manifest::BadKind;

/// Smallest common archive size.
pub const MIN_ZIP_BYTES: u64 = 20 * 1000;
/// Largest common archive size (the 99th percentile).
pub const COMMON_MAX_ZIP_BYTES: u64 = 1_500_000;
/// Largest archive of the tail.
pub const TAIL_MAX_ZIP_BYTES: u64 = 40 * 1000 * 1000;
/// Files a facility of weight 1 sends per day (the requirements' 77,000 files from
/// 8,000 facilities are ~10 a day each; weights 1–5 average 3).
pub const FILES_PER_WEIGHT_DAY: u32 = 3;

/// Share of files per hour of the day (a working-day curve peaking at 09–12).
const HOURLY: [u32; 24] = [
    1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 8, 7, 7, 7, 7, 6, 5, 4, 3, 3, 2, 2, 1,
];

/// One file to write.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub facility: usize,
    pub feed: Feed,
    pub at: DateTime<Utc>,
    pub target_bytes: u64,
    pub gzip: bool,
    pub bad: Option<BadKind>,
}

/// How many files: a count, or days of traffic of the facilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volume {
    /// Exactly this many files over the first day.
    Files(usize),
    /// Every facility's files for this many days.
    Days(u32),
}

fn log_uniform(lo: u64, hi: u64, rng: &mut impl Rng) -> u64 {
    if hi <= lo {
        return hi;
    }
    let (lo, hi) = ((lo as f64).ln(), (hi as f64).ln());
    rng.random_range(lo..hi).exp() as u64
}

/// A target archive size: the requirements' distribution under `max_zip_bytes`.
pub(crate) fn target_bytes(max_zip_bytes: u64, rng: &mut impl Rng) -> u64 {
    let hi = COMMON_MAX_ZIP_BYTES.min(max_zip_bytes);
    let lo = MIN_ZIP_BYTES.min(hi / 4).max(1);
    if rng.random_bool(0.01) && max_zip_bytes > COMMON_MAX_ZIP_BYTES {
        log_uniform(
            COMMON_MAX_ZIP_BYTES,
            TAIL_MAX_ZIP_BYTES.min(max_zip_bytes),
            rng,
        )
    } else {
        log_uniform(lo, hi, rng)
    }
}

fn pick_weighted(weights: &[u32], rng: &mut impl Rng) -> usize {
    let total: u32 = weights.iter().sum();
    let mut roll = rng.random_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if roll < *w {
            return i;
        }
        roll -= w;
    }
    weights.len() - 1
}

fn feed_for(facility: &GenFacility, rng: &mut impl Rng) -> Feed {
    match pick_weighted(&[30, 15, 25, 30], rng) {
        0 => Feed::Adt,
        1 => Feed::Patients,
        2 if facility.census_fixed => Feed::CensusFixed,
        2 => Feed::Census,
        _ => Feed::Labs,
    }
}

/// Plans the files, sorted by time; per facility at least a minute apart.
pub(crate) fn plan(
    facilities: &[GenFacility],
    volume: Volume,
    start: NaiveDate,
    max_zip_bytes: u64,
    bad: usize,
    rng: &mut impl Rng,
) -> Vec<Planned> {
    let weights: Vec<u32> = facilities.iter().map(|f| f.weight).collect();
    let (days, picks): (u32, Vec<usize>) = match volume {
        Volume::Files(n) => (1, (0..n).map(|_| pick_weighted(&weights, rng)).collect()),
        Volume::Days(d) => (
            d.max(1),
            (0..facilities.len())
                .flat_map(|f| {
                    std::iter::repeat_n(
                        f,
                        (facilities[f].weight * FILES_PER_WEIGHT_DAY * d.max(1)) as usize,
                    )
                })
                .collect(),
        ),
    };
    let midnight = start.and_time(NaiveTime::MIN).and_utc();
    let mut files: Vec<Planned> = picks
        .into_iter()
        .map(|facility| {
            let day = rng.random_range(0..days);
            let hour = pick_weighted(&HOURLY, rng) as i64;
            let at = midnight
                + Duration::days(i64::from(day))
                + Duration::hours(hour)
                + Duration::seconds(rng.random_range(0..3600));
            let f = &facilities[facility];
            let feed = feed_for(f, rng);
            Planned {
                facility,
                feed,
                at,
                target_bytes: target_bytes(max_zip_bytes, rng),
                gzip: feed != Feed::Labs && rng.random_bool(f.gzip_share),
                bad: None,
            }
        })
        .collect();
    files.sort_by_key(|p| (p.at, p.facility));
    let mut last: Vec<Option<DateTime<Utc>>> = vec![None; facilities.len()];
    for p in &mut files {
        if let Some(prev) = last[p.facility] {
            p.at = p.at.max(prev + Duration::minutes(1));
        }
        last[p.facility] = Some(p.at);
    }
    files.sort_by_key(|p| (p.at, p.facility));
    // Bad files: spread evenly over the plan, kinds in turn.
    let bad = bad.min(files.len());
    let count = files.len();
    for i in 0..bad {
        let index = (i * count) / bad + (count / bad) / 2;
        let p = &mut files[index.min(count - 1)];
        let kind = BadKind::CYCLE[i % BadKind::CYCLE.len()];
        p.bad = Some(kind);
        match kind {
            BadKind::BadRows => {
                if !matches!(p.feed, Feed::Adt | Feed::Patients) {
                    p.feed = Feed::Adt;
                }
            }
            _ => p.gzip = false,
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn sizes_follow_the_requirements() {
        let mut rng = StdRng::seed_from_u64(11);
        let sizes: Vec<u64> = (0..20_000)
            .map(|_| target_bytes(u64::MAX, &mut rng))
            .collect();
        let common = sizes
            .iter()
            .filter(|s| (MIN_ZIP_BYTES..=COMMON_MAX_ZIP_BYTES).contains(s))
            .count();
        let share = common as f64 / sizes.len() as f64;
        assert!((0.985..0.995).contains(&share), "{share}");
        assert!(sizes.iter().all(|s| *s <= TAIL_MAX_ZIP_BYTES));
        assert!(sizes.iter().any(|s| *s > 10 * COMMON_MAX_ZIP_BYTES));
        // A cap squeezes the whole distribution below it.
        assert!((0..1000).all(|_| target_bytes(100_000, &mut rng) <= 100_000));
    }

    #[test]
    fn a_day_is_about_ten_files_per_facility_with_bad_ones_spread() {
        let mut rng = StdRng::seed_from_u64(5);
        let facilities = crate::facilities::create(20, &mut rng);
        let start = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let files = plan(&facilities, Volume::Days(1), start, u64::MAX, 8, &mut rng);
        let per_facility = files.len() as f64 / 20.0;
        assert!((3.0..=15.0).contains(&per_facility), "{per_facility}");
        assert_eq!(files.iter().filter(|p| p.bad.is_some()).count(), 8);
        assert!(files.windows(2).all(|w| w[0].at <= w[1].at));
        for f in 0..20 {
            let times: Vec<_> = files
                .iter()
                .filter(|p| p.facility == f)
                .map(|p| p.at)
                .collect();
            assert!(
                times
                    .windows(2)
                    .all(|w| w[1] - w[0] >= Duration::minutes(1))
            );
        }
        let n = plan(&facilities, Volume::Files(37), start, 50_000, 0, &mut rng).len();
        assert_eq!(n, 37);
    }
}
