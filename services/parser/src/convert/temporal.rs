//! Dates and timestamps: strftime patterns or named formats, a source time zone for
//! values without an offset, stored as UTC microseconds.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// Formats tried when a field lists none.
pub const DEFAULT_TIMESTAMP_FORMATS: [&str; 4] = [
    "rfc3339",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d",
];
/// Formats tried when a date field lists none.
pub const DEFAULT_DATE_FORMATS: [&str; 1] = ["%Y-%m-%d"];

/// How a value with no offset is placed in time.
fn localize(naive: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    // A repeated hour (DST end) takes the first; a skipped hour (DST start) is invalid.
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
}

fn has_offset(pattern: &str) -> bool {
    pattern.contains("%z")
        || pattern.contains("%:z")
        || pattern.contains("%#z")
        || pattern.contains("%::z")
}

fn epoch(value: &str, per_second: i64) -> Option<DateTime<Utc>> {
    let n: i64 = value.parse().ok()?;
    let micros = n.checked_mul(1_000_000 / per_second)?;
    DateTime::from_timestamp_micros(micros)
}

/// The first result of `parse` over the configured formats, or over
/// `defaults` when none are configured. Called per value: no allocation.
fn first_format<T>(
    formats: &[String],
    defaults: &[&'static str],
    parse: impl FnMut(&str) -> Option<T>,
) -> Option<T> {
    if formats.is_empty() {
        defaults.iter().copied().find_map(parse)
    } else {
        formats.iter().map(String::as_str).find_map(parse)
    }
}

/// Parses a timestamp with the first format that accepts it.
pub fn parse_timestamp(value: &str, formats: &[String], tz: Tz) -> Option<DateTime<Utc>> {
    first_format(formats, &DEFAULT_TIMESTAMP_FORMATS, |f| match f {
        "rfc3339" => DateTime::parse_from_rfc3339(value)
            .ok()
            .map(|d| d.with_timezone(&Utc)),
        "epoch_seconds" => epoch(value, 1),
        "epoch_millis" => epoch(value, 1000),
        p if has_offset(p) => DateTime::parse_from_str(value, p)
            .ok()
            .map(|d| d.with_timezone(&Utc)),
        p => match NaiveDateTime::parse_from_str(value, p) {
            Ok(naive) => localize(naive, tz),
            Err(_) => NaiveDate::parse_from_str(value, p)
                .ok()
                .and_then(|d| localize(d.and_hms_opt(0, 0, 0)?, tz)),
        },
    })
}

/// Parses a date with the first format that accepts it.
pub fn parse_date(value: &str, formats: &[String]) -> Option<NaiveDate> {
    first_format(formats, &DEFAULT_DATE_FORMATS, |f| match f {
        "rfc3339" => DateTime::parse_from_rfc3339(value)
            .ok()
            .map(|d| d.date_naive()),
        "epoch_seconds" => epoch(value, 1).map(|d| d.date_naive()),
        "epoch_millis" => epoch(value, 1000).map(|d| d.date_naive()),
        p => NaiveDate::parse_from_str(value, p).ok(),
    })
}

/// RFC 3339 UTC with `Z` and exactly six fraction digits. Written field by
/// field: chrono's `format` parses its pattern again for every value, which
/// showed as a tenth of the parser's time in profiles.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    if t.nanosecond() >= 1_000_000_000 || !(0..=9999).contains(&t.year()) {
        // A leap second, or a year of more than four digits: chrono's way.
        return t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    }
    let micros = t.timestamp_subsec_micros();
    format!(
        "{}T{:02}:{:02}:{:02}.{micros:06}Z",
        format_date(&t.date_naive()),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `YYYY-MM-DD` (years beyond 9999 or before 0 as chrono writes them).
pub fn format_date(d: &NaiveDate) -> String {
    match d.year() {
        0..=9999 => format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
        _ => d.format("%Y-%m-%d").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_matches_chrono() {
        let mut t = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
        let step = chrono::Duration::seconds(7_919_993) + chrono::Duration::microseconds(123_457);
        while t.year() < 9999 {
            assert_eq!(
                format_timestamp(&t),
                t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            );
            let d = t.date_naive();
            assert_eq!(format_date(&d), d.format("%Y-%m-%d").to_string());
            t += step;
        }
        let far = Utc.with_ymd_and_hms(12_345, 6, 7, 8, 9, 10).unwrap();
        assert_eq!(
            format_timestamp(&far),
            far.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        );
    }

    fn ts(value: &str, formats: &[&str], tz: &str) -> Option<String> {
        let formats: Vec<String> = formats.iter().map(|s| s.to_string()).collect();
        parse_timestamp(value, &formats, tz.parse().unwrap()).map(|t| format_timestamp(&t))
    }

    #[test]
    fn every_timestamp_format() {
        let z = Some("2024-03-01T18:30:00.000000Z".to_string());
        assert_eq!(ts("2024-03-01T12:30:00-06:00", &["rfc3339"], "UTC"), z);
        assert_eq!(ts("2024-03-01T18:30:00Z", &[], "UTC"), z);
        assert_eq!(
            ts(
                "2024-03-01 12:30:00",
                &["%Y-%m-%d %H:%M:%S"],
                "America/Chicago"
            ),
            z
        );
        assert_eq!(
            ts(
                "03/01/2024 12:30",
                &["%Y", "%m/%d/%Y %H:%M"],
                "America/Chicago"
            ),
            z
        );
        assert_eq!(ts("202403011130", &["%Y%m%d%H%M"], "America/Denver"), z);
        assert_eq!(
            ts(
                "2024-03-01T13:30:00-0500",
                &["%Y-%m-%dT%H:%M:%S%z"],
                "America/Denver"
            ),
            z
        );
        assert_eq!(ts("1709317800", &["epoch_seconds"], "UTC"), z);
        assert_eq!(ts("1709317800000", &["epoch_millis"], "UTC"), z);
        assert_eq!(
            ts("2024-03-01 18:30:00.123456", &[], "UTC").unwrap(),
            "2024-03-01T18:30:00.123456Z"
        );
        assert_eq!(
            ts("2024-03-01", &[], "UTC").unwrap(),
            "2024-03-01T00:00:00.000000Z"
        );
        assert_eq!(ts("yesterday", &[], "UTC"), None);
        assert_eq!(ts("99999999999999999", &["epoch_seconds"], "UTC"), None);
    }

    #[test]
    fn daylight_saving_edges() {
        // 02:30 does not exist on 2024-03-10 in Chicago; 01:30 on 2024-11-03 exists twice.
        assert_eq!(
            ts(
                "2024-03-10 02:30:00",
                &["%Y-%m-%d %H:%M:%S"],
                "America/Chicago"
            ),
            None
        );
        assert_eq!(
            ts(
                "2024-11-03 01:30:00",
                &["%Y-%m-%d %H:%M:%S"],
                "America/Chicago"
            )
            .unwrap(),
            "2024-11-03T06:30:00.000000Z"
        );
    }

    #[test]
    fn every_date_format() {
        let d = |v: &str, f: &[&str]| {
            parse_date(v, &f.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map(|d| d.to_string())
        };
        assert_eq!(d("2024-02-29", &[]).as_deref(), Some("2024-02-29"));
        assert_eq!(
            d("02/29/2024", &["%m/%d/%Y"]).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(d("20240229", &["%Y%m%d"]).as_deref(), Some("2024-02-29"));
        assert_eq!(
            d("29.02.2024", &["%Y-%m-%d", "%d.%m.%Y"]).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(
            d("2024-02-29T23:00:00-05:00", &["rfc3339"]).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(
            d("1709164800", &["epoch_seconds"]).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(
            d("1709164800000", &["epoch_millis"]).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(d("2023-02-29", &[]), None);
    }
}
