//! The generic record pipeline: archive → entries → route → decode → read → convert →
//! record JSON, pushed one record at a time into a [`RecordSink`].
//!
//! Two passes, each streaming: the archive is first walked without output so a file
//! that cannot be opened (password, corruption, bomb) is rejected before any record
//! leaves; and each entry is first checked (parse + convert, counting rejects) so an
//! entry over its `max_reject_ratio`, or one that is not well formed, emits nothing but
//! its dead letter. Only then are records built and sent.
//!
//! Records and values over `max_record_bytes` / `max_field_bytes` ([`archive::Limits`])
//! are rejects of their own record (`record_too_large`, `field_too_large`), like a
//! record that fails validation: the entry goes on with the next record, and they count
//! toward the data set's `max_reject_ratio`, so an entry made mostly of them is rejected
//! whole. The format readers never copy a record over the limit (see `formats`).
//!
//! The first walk keeps the entries it unpacked while they add up to at most
//! [`KEEP_UNPACKED_BYTES`], and the second pass reads them from there instead
//! of walking the archive again: at the seed's shape (archives of a few kB to
//! 1.5 MB, AES-encrypted) the PBKDF2 key derivation of every entry was more
//! than half of the parser's CPU, paid twice. Larger archives are walked
//! twice, so memory stays bounded by one entry plus this budget.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use medlake_common::dataset::{Dataset, Origin};
use serde::Serialize;

use crate::archive::{self, WalkError};
use crate::convert::{Value, format_timestamp};
use crate::env::{ParseEnv, Prepared};
use crate::error::{ErrorCode, FileError, Reject};
use crate::formats::{self, EntryError, Next};
use crate::text;

/// One received file.
#[derive(Debug, Clone, Copy)]
pub struct FileInput<'a> {
    /// Hex SHA-256 of the bytes (`medlake.file_id`).
    pub file_id: &'a str,
    /// The sending facility (`medlake.facility_id`).
    pub facility_id: &'a str,
    /// The received file's name (`medlake.file_name`).
    pub file_name: &'a str,
    /// The file as received.
    pub bytes: &'a [u8],
    /// The `_ingested_at` of every record of this file.
    pub ingested_at: DateTime<Utc>,
}

/// Label of entries and rejects that belong to no data set (unrouted entries, whole
/// files).
pub const NO_DATASET: &str = "none";

/// One record as the pipeline emits it, with what it knows about it, so a sink never
/// reads anything back from the JSON.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The data set it belongs to.
    pub dataset: &'a Dataset,
    /// Name of its entry inside the archive (its `_entry`).
    pub entry: &'a str,
    /// Its 1-based position in the entry (its `_record_index`).
    pub index: u64,
    /// Its Kafka key.
    pub key: &'a str,
    /// Its JSON.
    pub json: &'a [u8],
}

/// What a sink did with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The sink took the record.
    Taken,
    /// The sink cannot take it (too large for the broker): the pipeline rejects the
    /// record instead, with this code and message, and counts it as a reject.
    Refused { code: ErrorCode, message: String },
}

/// Receives the pipeline's output, in order.
pub trait RecordSink {
    /// What the sink can fail with (e.g. a Kafka produce error).
    type Error;
    /// One record.
    fn record(&mut self, record: &Record<'_>) -> Result<Delivery, Self::Error>;
    /// One rejected entry or record.
    fn reject(&mut self, reject: &Reject) -> Result<(), Self::Error>;
}

/// What became of a file: the counters its ledger entry and metrics are built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileSummary {
    /// Entries found (after unpacking).
    pub entries: u64,
    /// Bytes they unpacked to.
    pub unpacked_bytes: u64,
    /// Records the sink took, per data set (only data sets that got any).
    pub records: BTreeMap<String, u64>,
    /// Entries rejected whole (unrouted, undecodable, malformed, over the reject ratio).
    pub rejected_entries: u64,
    /// Records rejected one by one (including those the sink refused).
    pub rejected_records: u64,
    /// Rejects (entries and records) per error code.
    pub rejects: BTreeMap<String, u64>,
    /// Entries per data set they were routed to ([`NO_DATASET`] when unrouted).
    pub entries_by_dataset: BTreeMap<String, u64>,
    /// Rejects per data set ([`NO_DATASET`] for unrouted entries and whole files) and
    /// error code.
    pub rejects_by_dataset: BTreeMap<String, BTreeMap<ErrorCode, u64>>,
}

impl FileSummary {
    /// The summary of a file rejected whole with `code`: no entries, no records, one
    /// reject.
    pub fn rejected_file(code: ErrorCode) -> Self {
        let mut summary = Self::default();
        summary.count_reject(None, code);
        summary
    }

    /// Records taken, all data sets together.
    pub fn total_records(&self) -> u64 {
        self.records.values().sum()
    }

    /// Whether anything was rejected.
    pub fn has_rejects(&self) -> bool {
        !self.rejects.is_empty()
    }

    /// Rejects per error code, typed (as the ledger holds them).
    pub fn rejects_by_code(&self) -> BTreeMap<ErrorCode, u64> {
        let mut by_code = BTreeMap::new();
        for codes in self.rejects_by_dataset.values() {
            for (code, n) in codes {
                *by_code.entry(*code).or_default() += n;
            }
        }
        by_code
    }

    fn count_entry(&mut self, dataset: Option<&str>) {
        bump(
            &mut self.entries_by_dataset,
            dataset.unwrap_or(NO_DATASET),
            1,
        );
    }

    fn count_reject(&mut self, dataset: Option<&str>, code: ErrorCode) {
        bump(&mut self.rejects, code.as_str(), 1);
        let dataset = dataset.unwrap_or(NO_DATASET);
        let codes = match self.rejects_by_dataset.get_mut(dataset) {
            Some(codes) => codes,
            None => self.rejects_by_dataset.entry(dataset.into()).or_default(),
        };
        *codes.entry(code).or_default() += 1;
    }
}

/// Adds `n` to `map[key]`, allocating the key only the first time.
fn bump(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    match map.get_mut(key) {
        Some(count) => *count += n,
        None => {
            map.insert(key.into(), n);
        }
    }
}

/// A file could not be processed.
#[derive(Debug)]
pub enum ProcessError<E> {
    /// The whole file is rejected (nothing was sent to the sink).
    File(FileError),
    /// The sink failed; what was sent so far is incomplete.
    Sink(E),
}

/// Unpacked bytes of one archive kept from the first walk for the second
/// pass; an archive that unpacks to more is walked twice.
pub const KEEP_UNPACKED_BYTES: usize = 16 * 1024 * 1024;

/// Parses one file into the sink. See the module docs for the two passes.
pub fn process_file<S: RecordSink>(
    input: &FileInput<'_>,
    env: &ParseEnv,
    sink: &mut S,
) -> Result<FileSummary, ProcessError<S::Error>> {
    let passwords = match env.registry.get(input.facility_id) {
        Some(facility) => facility.zip_passwords().map_err(|e| {
            ProcessError::File(FileError::PasswordUnavailable {
                facility_id: input.facility_id.into(),
                reason: e.to_string(),
            })
        })?,
        None => Vec::new(),
    };
    let walk = |on_entry: &mut archive::OnEntry<'_, S::Error>| {
        archive::walk(
            input.file_name,
            input.bytes,
            input.facility_id,
            &passwords,
            &env.limits,
            on_entry,
        )
    };
    let unwrap = |e| match e {
        WalkError::File(e) => ProcessError::File(e),
        WalkError::Callback(e) => ProcessError::Sink(e),
    };
    let mut kept: Option<Vec<(String, Vec<u8>)>> = Some(Vec::new());
    let mut kept_bytes = 0;
    let stats = walk(&mut |name, bytes| {
        kept_bytes += bytes.len();
        match &mut kept {
            Some(entries) if kept_bytes <= KEEP_UNPACKED_BYTES => {
                entries.push((name.to_string(), bytes));
            }
            _ => kept = None,
        }
        Ok(())
    })
    .map_err(unwrap)?;
    let mut summary = FileSummary::default();
    match kept {
        Some(entries) => {
            for (name, bytes) in entries {
                process_entry(input, env, &name, &bytes, sink, &mut summary)
                    .map_err(ProcessError::Sink)?;
            }
        }
        None => {
            walk(&mut |name, bytes| process_entry(input, env, name, &bytes, sink, &mut summary))
                .map_err(unwrap)?;
        }
    }
    summary.entries = stats.entries as u64;
    summary.unpacked_bytes = stats.unpacked_bytes;
    Ok(summary)
}

fn process_entry<S: RecordSink>(
    input: &FileInput<'_>,
    env: &ParseEnv,
    entry: &str,
    bytes: &[u8],
    sink: &mut S,
    summary: &mut FileSummary,
) -> Result<(), S::Error> {
    let reject_entry = |code: ErrorCode,
                        dataset: Option<&str>,
                        message: String,
                        sink: &mut S,
                        summary: &mut FileSummary| {
        summary.rejected_entries += 1;
        summary.count_reject(dataset, code);
        let r = Reject {
            code,
            dataset: dataset.map(str::to_string),
            entry: entry.into(),
            index: None,
            field: None,
            message,
        };
        sink.reject(&r)
    };
    let prepared = match env.route(input.facility_id, entry, bytes) {
        Ok(p) => p,
        Err((code, message)) => {
            summary.count_entry(None);
            return reject_entry(code, None, message, sink, summary);
        }
    };
    let name = prepared.dataset.name.as_str();
    summary.count_entry(Some(name));
    let Some(text) = text::decode(bytes, prepared.dataset.encoding) else {
        let message = format!("entry is not valid {:?} text", prepared.dataset.encoding);
        return reject_entry(ErrorCode::BadEncoding, Some(name), message, sink, summary);
    };
    let ctx = EntryContext {
        input,
        prepared,
        limits: &env.limits,
        entry,
        ingested_at: format_timestamp(&input.ingested_at),
        ingest_date: input.ingested_at.date_naive().to_string(),
    };
    // Pass 1: check only.
    let mut codes: BTreeMap<ErrorCode, u64> = BTreeMap::new();
    let checked = ctx.scan(
        &text,
        &mut |_, outcome| {
            if let Err(r) = outcome {
                *codes.entry(r.code).or_default() += 1;
            }
            Ok::<(), S::Error>(())
        },
        false,
    );
    let (good, bad) = match checked {
        Ok(Ok(counts)) => counts,
        Ok(Err(e)) => return reject_entry(e.code, Some(name), e.message, sink, summary),
        Err(e) => return Err(e),
    };
    let total = good + bad;
    let ratio = prepared.dataset.max_reject_ratio;
    if total > 1 && bad as f64 / total as f64 > ratio {
        let by_code: Vec<String> = codes.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        let message = format!(
            "{bad} of {total} records rejected ({}), more than max_reject_ratio {ratio}",
            by_code.join(", ")
        );
        return reject_entry(
            ErrorCode::RejectRatioExceeded,
            Some(name),
            message,
            sink,
            summary,
        );
    }
    // Pass 2: emit.
    let mut taken = 0u64;
    let mut reject_record = |r: Reject, sink: &mut S| {
        summary.rejected_records += 1;
        summary.count_reject(Some(name), r.code);
        sink.reject(&r)
    };
    let result = ctx.scan(
        &text,
        &mut |index, outcome| match outcome {
            Ok((key, json)) => {
                let record = Record {
                    dataset: &prepared.dataset,
                    entry,
                    index,
                    key: &key,
                    json: &json,
                };
                match sink.record(&record)? {
                    Delivery::Taken => {
                        taken += 1;
                        Ok(())
                    }
                    Delivery::Refused { code, message } => {
                        reject_record(ctx.reject(code, index, None, message), sink)
                    }
                }
            }
            Err(r) => reject_record(r, sink),
        },
        true,
    )?;
    debug_assert!(result.is_ok(), "second pass differs from the first");
    if taken > 0 {
        bump(&mut summary.records, name, taken);
    }
    Ok(())
}

/// A record: its key and JSON, or its reject.
type Outcome = Result<(String, Vec<u8>), Reject>;

struct EntryContext<'a> {
    input: &'a FileInput<'a>,
    prepared: &'a Prepared,
    limits: &'a archive::Limits,
    entry: &'a str,
    /// `input.ingested_at` as written into every record, formatted once.
    ingested_at: String,
    /// Its UTC day (`YYYY-MM-DD`), the value of `from: ingest_date` fields.
    ingest_date: String,
}

impl EntryContext<'_> {
    /// Reads every record of the entry; `emit` builds the JSON (pass 2) or not (pass 1).
    /// `on` gets each record's index and outcome. Returns (good, rejected) counts, or
    /// the entry error.
    fn scan<E>(
        &self,
        text: &str,
        on: &mut dyn FnMut(u64, Outcome) -> Result<(), E>,
        emit: bool,
    ) -> Result<Result<(u64, u64), EntryError>, E> {
        let dataset = &self.prepared.dataset;
        let mut reader = match formats::reader(dataset, text, self.limits.max_record_bytes) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let mut raw: Vec<Option<String>> = vec![None; dataset.fields.len()];
        let (mut good, mut bad, mut index) = (0u64, 0u64, 0u64);
        loop {
            raw.iter_mut().for_each(|v| *v = None);
            let next = match reader.next(&mut raw) {
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            };
            index += 1;
            let outcome = match next {
                Next::End => return Ok(Ok((good, bad))),
                Next::Bad(code, message) => Err(self.reject(code, index, None, message)),
                Next::Record => match self.oversized_field(&raw, index) {
                    Some(reject) => Err(reject),
                    None => self.convert(&mut raw, index, emit),
                },
            };
            if outcome.is_ok() {
                good += 1
            } else {
                bad += 1
            }
            on(index, outcome)?;
        }
    }

    fn reject(&self, code: ErrorCode, index: u64, field: Option<&str>, message: String) -> Reject {
        Reject {
            code,
            dataset: Some(self.prepared.dataset.name.clone()),
            entry: self.entry.into(),
            index: Some(index),
            field: field.map(str::to_string),
            message,
        }
    }

    /// The reject of the first value read that is longer than `max_field_bytes`.
    fn oversized_field(&self, raw: &[Option<String>], index: u64) -> Option<Reject> {
        let limit = self.limits.max_field_bytes;
        let (i, len) = raw.iter().enumerate().find_map(|(i, v)| {
            v.as_ref()
                .map(String::len)
                .filter(|&n| n > limit)
                .map(|n| (i, n))
        })?;
        let field = &self.prepared.dataset.fields[i].name;
        let message = format!("the value has {len} bytes, more than max_field_bytes ({limit})");
        Some(self.reject(ErrorCode::FieldTooLarge, index, Some(field), message))
    }

    fn convert(&self, raw: &mut [Option<String>], index: u64, emit: bool) -> Outcome {
        let p = self.prepared;
        for (slot, field) in raw.iter_mut().zip(&p.dataset.fields) {
            *slot = match field.from {
                Some(Origin::FacilityId) => Some(self.input.facility_id.into()),
                Some(Origin::EntryName) => Some(self.entry.into()),
                Some(Origin::FileName) => Some(self.input.file_name.into()),
                Some(Origin::IngestDate) => Some(self.ingest_date.clone()),
                None => continue,
            };
        }
        let convert_one = |i: usize, relax: bool| {
            p.plans[i]
                .convert(raw[i].as_deref(), relax)
                .map_err(|(code, message)| {
                    self.reject(code, index, Some(&p.plans[i].field.name), message)
                })
        };
        let is_delete = match &p.delete {
            Some((i, values)) => convert_one(*i, false)?
                .as_text()
                .is_some_and(|v| values.contains(&v)),
            None => false,
        };
        let mut values = Vec::with_capacity(raw.len());
        for i in 0..raw.len() {
            // A delete needs only its key and sequence; other required fields may be empty.
            let relax = is_delete && !p.primary_key.contains(&i) && p.sequence != Some(i);
            values.push(convert_one(i, relax)?);
        }
        if !emit {
            return Ok((String::new(), Vec::new()));
        }
        Ok((self.key(&values), self.json(&values, index, is_delete)))
    }

    /// Kafka key: the primary key values as a JSON array (merge), or the file id (append).
    fn key(&self, values: &[Value]) -> String {
        if self.prepared.primary_key.is_empty() {
            return self.input.file_id.to_string();
        }
        let mut out = b"[".to_vec();
        for (n, &i) in self.prepared.primary_key.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            values[i].write_json(&mut out);
        }
        out.push(b']');
        String::from_utf8(out).unwrap_or_default()
    }

    fn json(&self, values: &[Value], index: u64, is_delete: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(b'{');
        for (value, field) in values.iter().zip(&self.prepared.dataset.fields) {
            if !field.is_output() {
                continue;
            }
            write_key(&mut out, &field.name);
            value.write_json(&mut out);
            out.push(b',');
        }
        let input = self.input;
        for (k, v) in [
            ("_file_id", input.file_id),
            ("_facility_id", input.facility_id),
            ("_entry", self.entry),
        ] {
            write_key(&mut out, k);
            Value::Text(v.into()).write_json(&mut out);
            out.push(b',');
        }
        let _ = write!(
            out,
            "\"_record_index\":{index},\"_ingested_at\":\"{}\"",
            self.ingested_at
        );
        if self.prepared.dataset.table.is_merge() {
            let op = if is_delete { "delete" } else { "upsert" };
            let _ = write!(out, ",\"_op\":\"{op}\"");
        }
        out.push(b'}');
        out
    }
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    Value::Text(key.into()).write_json(out);
    out.push(b':');
}

#[cfg(test)]
mod tests;
