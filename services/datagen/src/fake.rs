//! Fake but plausible values: names (never real people), wards, care units, lab tests.
//! The lists are small on purpose: realism of shape, not of content.

use rand::Rng;
use rand::seq::IndexedRandom;

pub(crate) const FIRST_NAMES: &[&str] = &[
    "Avery", "Blake", "Casey", "Dana", "Elliot", "Finley", "Gale", "Harper", "Indigo", "Jordan",
    "Kendall", "Logan", "Morgan", "Noel", "Oakley", "Parker", "Quinn", "Reese", "Sage", "Taylor",
    "Umi", "Val", "Wren", "Xen", "Yael", "Zion", "Anaïs", "Björn", "Chloé", "Zoë",
];

pub(crate) const LAST_NAMES: &[&str] = &[
    "Ashdown",
    "Birchwood",
    "Coldbrook",
    "Dunmore",
    "Elmsworth",
    "Fairhaven",
    "Glenrock",
    "Hollins",
    "Ironside",
    "Juniper",
    "Kestrel",
    "Larkspur",
    "Millbrook",
    "Northcott",
    "Oakhurst",
    "Pembrook",
    "Quarry",
    "Ravenscroft",
    "Stonebridge",
    "Thornbury",
    "Underhill",
    "Vale",
    "Whitlock",
    "Yarrow",
    "O'Malley",
    "Smith-Jones",
    "Núñez",
    "Åberg",
];

const TOWNS: &[&str] = &[
    "Maple Grove",
    "Cedar Falls",
    "Riverside",
    "Lakeview",
    "Pine Ridge",
    "Stony Brook",
    "Fox Hollow",
    "Silver Creek",
    "Willow Bend",
    "Granite Peak",
    "Clearwater",
    "Elm Park",
];

const KINDS: &[&str] = &[
    "Community Hospital",
    "Regional Medical Center",
    "Urgent Care",
    "Nursing Home",
    "Emergency Center",
    "Children's Hospital",
    "Rehabilitation Center",
    "Heart Institute",
];

/// A facility display name.
pub(crate) fn facility_name(rng: &mut impl Rng) -> String {
    format!(
        "{} {}",
        TOWNS.choose(rng).expect("towns"),
        KINDS.choose(rng).expect("kinds")
    )
}

/// Wards of ADT events.
pub(crate) const WARDS: &[&str] = &[
    "ICU", "MED", "SURG", "CARD", "ORTH", "PED", "OB", "ER", "NEURO", "ONC",
];

/// Where admissions come from (empty: the data set's default applies).
pub(crate) const ADMIT_SOURCES: &[&str] = &["ER", "ER", "REF", "TRN", "CLN", ""];

/// Notes a clerk types (dropped by the parser: `pii: drop`). Some need CSV quoting.
pub(crate) const NOTES: &[&str] = &[
    "",
    "",
    "",
    "Admitted via ER, chest pain",
    "Family informed",
    "Transfer requested by \"attending\"",
    "Fall risk; bed alarm on",
    "Isolation precautions\nreview at 08:00",
    "Interpreter needed, Spanish",
];

/// Care units of the bed census: code, display name (non-ASCII on purpose: the census
/// feeds are Windows-1252 / Latin-1), ICU flag, usual bed count.
pub(crate) const UNITS: &[(&str, &str, bool, u32)] = &[
    ("ICU", "Intensive Care", true, 12),
    ("CCU", "Coronary Care", true, 10),
    ("NICU", "Néonatologie", true, 8),
    ("MED1", "Medicine East", false, 30),
    ("MED2", "Medicine West", false, 28),
    ("SURG", "Surgery", false, 24),
    ("ORTH", "Orthopédie", false, 18),
    ("PED", "Pédiatrie Nord", false, 20),
    ("MAT", "Maternité", false, 16),
    ("ER", "Urgences", false, 30),
    ("PSY", "Psychiatrie", false, 14),
    ("GER", "Gériatrie", false, 22),
    ("ONC", "Oncología", false, 16),
    ("REHB", "Rehabilitation", false, 20),
    ("STEP", "Step-down – Cardio", false, 12),
];

/// A lab test: LOINC code, name, unit, reference range low/high, decimals.
pub(crate) struct LabTest {
    pub loinc: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub low: f64,
    pub high: f64,
    pub decimals: usize,
}

pub(crate) const LAB_TESTS: &[LabTest] = &[
    LabTest {
        loinc: "2345-7",
        name: "Glucose",
        unit: "mg/dL",
        low: 70.0,
        high: 99.0,
        decimals: 0,
    },
    LabTest {
        loinc: "2160-0",
        name: "Creatinine",
        unit: "mg/dL",
        low: 0.6,
        high: 1.3,
        decimals: 2,
    },
    LabTest {
        loinc: "718-7",
        name: "Hemoglobin",
        unit: "g/dL",
        low: 12.0,
        high: 17.0,
        decimals: 1,
    },
    LabTest {
        loinc: "6690-2",
        name: "Leukocytes",
        unit: "10*3/uL",
        low: 4.5,
        high: 11.0,
        decimals: 1,
    },
    LabTest {
        loinc: "2951-2",
        name: "Sodium",
        unit: "mmol/L",
        low: 135.0,
        high: 145.0,
        decimals: 0,
    },
    LabTest {
        loinc: "2823-3",
        name: "Potassium",
        unit: "mmol/L",
        low: 3.5,
        high: 5.1,
        decimals: 1,
    },
    LabTest {
        loinc: "777-3",
        name: "Platelets",
        unit: "10*3/uL",
        low: 150.0,
        high: 400.0,
        decimals: 0,
    },
    LabTest {
        loinc: "1742-6",
        name: "ALT <SGPT>",
        unit: "U/L",
        low: 7.0,
        high: 56.0,
        decimals: 0,
    },
    LabTest {
        loinc: "2093-3",
        name: "Cholesterol & HDL",
        unit: "mg/dL",
        low: 125.0,
        high: 200.0,
        decimals: 0,
    },
    LabTest {
        loinc: "4548-4",
        name: "Hemoglobin A1c",
        unit: "%",
        low: 4.0,
        high: 5.6,
        decimals: 1,
    },
    LabTest {
        loinc: "1975-2",
        name: "Bilirubin",
        unit: "mg/dL",
        low: 0.1,
        high: 1.2,
        decimals: 1,
    },
    LabTest {
        loinc: "3016-3",
        name: "TSH",
        unit: "m[IU]/L",
        low: 0.4,
        high: 4.0,
        decimals: 2,
    },
];

/// A value around a test's reference range, and its abnormal flag.
pub(crate) fn lab_value(test: &LabTest, rng: &mut impl Rng) -> (String, &'static str) {
    let span = test.high - test.low;
    let roll: f64 = rng.random();
    let value = if roll < 0.75 {
        test.low + span * rng.random::<f64>()
    } else if roll < 0.87 {
        test.high + span * rng.random_range(0.01..0.6)
    } else if roll < 0.97 {
        (test.low - span * rng.random_range(0.01..0.4)).max(test.low * 0.3)
    } else if roll < 0.985 {
        test.high + span * rng.random_range(1.0..2.0)
    } else {
        test.low * rng.random_range(0.1..0.3)
    };
    let flag = if value > test.high + span {
        "HH"
    } else if value > test.high {
        "H"
    } else if value < test.low * 0.35 {
        "LL"
    } else if value < test.low {
        "L"
    } else {
        "N"
    };
    (format!("{value:.prec$}", prec = test.decimals), flag)
}

/// Ten digits, as a National Provider Identifier looks.
pub(crate) fn npi(rng: &mut impl Rng) -> String {
    format!("{}", rng.random_range(1_000_000_000u64..2_000_000_000))
}

/// Quotes a CSV field when it needs it (RFC 4180).
pub(crate) fn csv_field(value: &str, out: &mut String) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Escapes text for XML content or attributes.
pub(crate) fn xml_escape(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut s = String::new();
        csv_field("plain", &mut s);
        s.push(',');
        csv_field("a, \"b\"\nc", &mut s);
        assert_eq!(s, "plain,\"a, \"\"b\"\"\nc\"");
    }

    #[test]
    fn lab_values_carry_consistent_flags() {
        let mut rng = StdRng::seed_from_u64(3);
        for test in LAB_TESTS {
            for _ in 0..200 {
                let (value, flag) = lab_value(test, &mut rng);
                let v: f64 = value.parse().unwrap();
                match flag {
                    "N" => assert!(v >= test.low - 1.0 && v <= test.high + 1.0, "{v} {flag}"),
                    "H" | "HH" => assert!(v > test.high - 1.0),
                    _ => assert!(v < test.low + 1.0),
                }
            }
        }
    }

    #[test]
    fn npis_have_ten_digits_and_xml_is_escaped() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(npi(&mut rng).len(), 10);
        assert_eq!(xml_escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
