//! The generation run: plan, write each file from its facility's state, pack it, and
//! record what it must become.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveTime};
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};

use crate::error::GenError;
use crate::facilities::{self, GenFacility, Protection};
use crate::feeds::{self, Entry, Expect, FacilityState, Feed};
use crate::manifest::{BadKind, Container, FileEntry, Manifest, Totals};
use crate::pack;
use crate::plan::{self, Planned, Volume};

/// Text entries above this packed size are split into several entries (each with its
/// header), keeping every entry far below the parser's per-entry limit.
const PART_BYTES: u64 = 16 * 1000 * 1000;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Output directory: `files/<facility>/…`, `manifest.json` (and the registry when
    /// none is given).
    pub out: PathBuf,
    /// Random seed: the same seed gives the same files.
    pub seed: u64,
    /// How many facilities (default: every facility of the registry, or 8 created).
    pub facilities: Option<usize>,
    /// How many files.
    pub volume: Volume,
    /// Facility registry to take facilities and zip passwords from; when absent, one is
    /// created in `out` with its secrets in `out/facilities.env`.
    pub registry: Option<PathBuf>,
    /// No archive larger than this (keeps tests and demos small).
    pub max_zip_bytes: u64,
    /// Files to make bad on purpose, kinds in turn (see [`BadKind`]).
    pub bad: usize,
    /// First day of the generated period.
    pub start_date: NaiveDate,
}

/// Facilities created when no registry is given.
pub const DEFAULT_FACILITIES: usize = 8;

impl GenOptions {
    /// Defaults: seed 1, one day, 8 created facilities, no cap below 40 MB, no bad files.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        GenOptions {
            out: out.into(),
            seed: 1,
            facilities: None,
            volume: Volume::Days(1),
            registry: None,
            max_zip_bytes: plan::TAIL_MAX_ZIP_BYTES,
            bad: 0,
            start_date: NaiveDate::from_ymd_opt(2024, 3, 1).expect("valid date"),
        }
    }
}

/// Writes the files and `manifest.json`; returns the manifest.
pub fn generate(opts: &GenOptions) -> Result<Manifest, GenError> {
    if opts.max_zip_bytes < 1000 {
        return Err(GenError::Options {
            reason: "--max-zip-bytes must be at least 1000".into(),
        });
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    std::fs::create_dir_all(&opts.out).map_err(|e| GenError::write(&opts.out, e))?;
    let files_dir = opts.out.join("files");
    if files_dir.exists() {
        std::fs::remove_dir_all(&files_dir).map_err(|e| GenError::write(&files_dir, e))?;
    }
    let (facilities, registry, env_file) = match &opts.registry {
        Some(path) => (
            facilities::from_registry(path, opts.facilities, &mut rng)?,
            path.clone(),
            None,
        ),
        None => {
            let created =
                facilities::create(opts.facilities.unwrap_or(DEFAULT_FACILITIES), &mut rng);
            let written = facilities::write_registry(&opts.out, &created, &mut rng)?;
            (created, written.registry, Some(written.env_file))
        }
    };
    if facilities.is_empty() {
        return Err(GenError::Options {
            reason: "--facilities must be at least 1".into(),
        });
    }
    let start = opts.start_date.and_time(NaiveTime::MIN).and_utc();
    let mut states: Vec<FacilityState> = facilities
        .iter()
        .map(|f| FacilityState::new(&f.id, start, &mut rng))
        .collect();
    let planned = plan::plan(
        &facilities,
        opts.volume,
        opts.start_date,
        opts.max_zip_bytes,
        opts.bad,
        &mut rng,
    );
    // Facilities are independent: their files are written on all cores, each file
    // from its own random stream (seed, position in the plan), so the output does
    // not depend on the number of threads.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut slots: Vec<Option<Result<FileEntry, GenError>>> = Vec::new();
    slots.resize_with(planned.len(), || None);
    let mut per_worker: Vec<Vec<(&mut FacilityState, Vec<usize>)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (f, state) in states.iter_mut().enumerate() {
        let indexes: Vec<usize> = (0..planned.len())
            .filter(|i| planned[*i].facility == f)
            .collect();
        per_worker[f % workers].push((state, indexes));
    }
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = per_worker
            .into_iter()
            .map(|jobs| {
                let (planned, facilities) = (&planned, &facilities);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    for (state, indexes) in jobs {
                        for i in indexes {
                            let p = &planned[i];
                            let mut rng = StdRng::seed_from_u64(
                                opts.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                            );
                            // A file rejected whole must leave no trace in the expected tables.
                            let whole_reject =
                                matches!(p.bad, Some(BadKind::CorruptZip | BadKind::WrongPassword));
                            let mut scratch;
                            let state: &mut FacilityState = if whole_reject {
                                scratch = state.clone();
                                &mut scratch
                            } else {
                                &mut *state
                            };
                            let facility = &facilities[p.facility];
                            let file = write_file(
                                &opts.out,
                                p,
                                facility,
                                state,
                                opts.max_zip_bytes,
                                &mut rng,
                            );
                            done.push((i, file));
                        }
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a generator thread panicked"))
            .collect::<Vec<_>>()
    });
    for (i, file) in results {
        slots[i] = Some(file);
    }
    let mut totals = Totals::default();
    let mut files = Vec::with_capacity(planned.len());
    for file in slots.into_iter().flatten() {
        let file = file?;
        totals.add(&file);
        files.push(file);
    }
    for feed in Feed::ALL {
        let rows = match feed {
            Feed::Adt => states.iter().map(FacilityState::adt_rows).sum(),
            Feed::Patients => states.iter().map(FacilityState::patient_rows).sum(),
            _ => totals.records.get(feed.dataset()).copied().unwrap_or(0),
        };
        totals.table_rows.insert(feed.dataset().to_string(), rows);
    }
    let manifest = Manifest {
        seed: opts.seed,
        start_date: opts.start_date,
        registry,
        env_file,
        files,
        totals,
    };
    manifest.save(&opts.out.join("manifest.json"))?;
    Ok(manifest)
}

/// Names of a file: the archive's base name and its main entry's name.
fn names(feed: Feed, facility: &str, stamp: &str) -> (String, String) {
    match feed {
        Feed::Adt => (
            format!("adt_{facility}_{stamp}"),
            format!("adt_{facility}_{stamp}.csv"),
        ),
        Feed::Patients => (
            format!("patients_{facility}_{stamp}"),
            format!("patients_{facility}_{stamp}.csv"),
        ),
        Feed::Census => (
            format!("census_{facility}_{stamp}"),
            format!("census_{facility}_{stamp}.txt"),
        ),
        Feed::CensusFixed => (
            format!("BEDCENSUS_{facility}_{stamp}"),
            format!("bedcensus_{facility}_{stamp}.dat"),
        ),
        Feed::Labs => (format!("labs_{facility}_{stamp}"), String::new()),
    }
}

/// With `_pN` before the extension for parts after the first.
fn part_name(name: &str, part: u64) -> String {
    match (part, name.rsplit_once('.')) {
        (0, _) | (_, None) => name.to_string(),
        (_, Some((stem, ext))) => format!("{stem}_p{}.{ext}", part + 1),
    }
}

fn content(
    p: &Planned,
    facility: &GenFacility,
    state: &mut FacilityState,
    entry_name: &str,
    max_zip_bytes: u64,
    rng: &mut impl Rng,
) -> (Vec<Entry>, Expect) {
    if p.feed == Feed::Labs {
        // ~450 bytes per document once zipped.
        let most = (max_zip_bytes / 450).clamp(20, 300) as usize;
        let documents = rng.random_range(20..=most);
        return feeds::labs(state, documents, p.at, rng.random_bool(0.3), rng);
    }
    let parts = p.target_bytes.div_ceil(PART_BYTES).max(1);
    let bad_rows = if p.bad == Some(BadKind::BadRows) {
        rng.random_range(4..=8)
    } else {
        0
    };
    let mut entries = Vec::new();
    let mut expect = Expect::default();
    for part in 0..parts {
        let name = part_name(entry_name, part);
        let target = p.target_bytes / parts;
        let bad = if part == parts - 1 { bad_rows } else { 0 };
        let (entry, e) = match p.feed {
            Feed::Adt => feeds::adt(state, facility, &name, p.at, target, bad, rng),
            Feed::Patients => feeds::patients(state, facility, &name, p.at, target, bad, rng),
            Feed::Census => feeds::census_delimited(state, &name, p.at, target, rng),
            _ => feeds::census_fixed(state, &name, p.at, target, rng),
        };
        entries.push(entry);
        expect.records += e.records;
        for (code, n) in e.rejects {
            *expect.rejects.entry(code).or_default() += n;
        }
    }
    (entries, expect)
}

fn write_file(
    out: &Path,
    p: &Planned,
    facility: &GenFacility,
    state: &mut FacilityState,
    max_zip_bytes: u64,
    rng: &mut StdRng,
) -> Result<FileEntry, GenError> {
    let stamp = p.at.format("%Y%m%d_%H%M%S").to_string();
    let (base, entry_name) = names(p.feed, &facility.id, &stamp);
    let (mut entries, mut expect) = content(p, facility, state, &entry_name, max_zip_bytes, rng);
    if p.bad == Some(BadKind::UnmatchedEntry) {
        entries.push(Entry {
            name: format!("supplies_{}_{stamp}.csv", facility.id),
            bytes:
                b"ItemCode,Description,QtyOnHand\nGLV-M,Gloves (M),1200\nSYR-10,Syringe 10 mL,430\n"
                    .to_vec(),
        });
        expect.reject("no_dataset");
    }
    let gzip = p.gzip && entries.len() == 1;
    let mut protection = facility.protection;
    let mut file_rejected = None;
    let bytes = if gzip {
        protection = Protection::None;
        pack::gzip(&entries[0].bytes)
    } else {
        let password = match p.bad {
            Some(BadKind::WrongPassword) => {
                if protection == Protection::None {
                    protection = Protection::Aes256;
                }
                file_rejected = Some(if facility.passwords.is_empty() {
                    "password_required"
                } else {
                    "wrong_password"
                });
                Some(format!("not-{}", rng.random::<u32>()))
            }
            _ => facility.password(rng).map(str::to_string),
        };
        let kit = match (protection, password.as_deref()) {
            (Protection::Zipcrypto, Some(pw)) => pack::Protection::ZipCrypto(pw),
            (Protection::Aes128, Some(pw)) => pack::Protection::Aes128(pw),
            (Protection::Aes256, Some(pw)) => pack::Protection::Aes256(pw),
            _ => {
                protection = Protection::None;
                pack::Protection::None
            }
        };
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.bytes.as_slice()))
            .collect();
        let mut zip = pack::zip(&refs, true, kit);
        if p.bad == Some(BadKind::CorruptZip) {
            // Cut the central directory off: the archive cannot be opened.
            zip.truncate(zip.len() * 2 / 3);
            file_rejected = Some("corrupt_archive");
        }
        zip
    };
    let name = if gzip {
        format!("{entry_name}.gz", entry_name = entries[0].name)
    } else {
        format!("{base}.zip")
    };
    let dir = out.join("files").join(&facility.id);
    std::fs::create_dir_all(&dir).map_err(|e| GenError::write(&dir, e))?;
    let path = dir.join(&name);
    std::fs::write(&path, &bytes).map_err(|e| GenError::write(&path, e))?;
    let (records, rejects) = match file_rejected {
        Some(code) => (BTreeMap::new(), BTreeMap::from([(code.to_string(), 1)])),
        None => {
            let records = if expect.records > 0 {
                BTreeMap::from([(p.feed.dataset().to_string(), expect.records)])
            } else {
                BTreeMap::new()
            };
            (records, expect.rejects)
        }
    };
    Ok(FileEntry {
        path: format!("files/{}/{name}", facility.id),
        name,
        facility_id: facility.id.clone(),
        dataset: p.feed.dataset().to_string(),
        at: p.at,
        container: if gzip {
            Container::Gzip
        } else {
            Container::Zip
        },
        protection,
        bytes: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        entries: entries.len() as u64,
        bad: p.bad,
        records,
        rejects,
        file_rejected: file_rejected.map(str::to_string),
    })
}
