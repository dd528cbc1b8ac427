//! The record size cap against the real `medlake parser` process: one 100 MB
//! CSV line is a `record_too_large` dead letter of its record, the file's
//! other records land, and the parser's peak RSS stays far below its pod
//! limit (the line is never copied: before the cap it became one record at
//! 782 MiB RSS).

use std::time::{Duration, Instant};

use medlake_common::ledger::FileStatus;
use medlake_datagen::pack::{self, Protection};
use medlake_integration_tests::{ChildGuard, read_topic};
use rdkafka::Message;

use crate::parser::{World, adt_csv, header, json, ledger_within, vm_hwm_kb};

/// The long line's length.
const LINE_BYTES: usize = 100 * 1000 * 1000;

/// The parser's peak RSS may not pass this; its pod limit is 2 GiB
/// (`helm/medlake/values.yaml`). The entry itself (100 MB, held once while
/// it is parsed) is most of it: measured 175 MiB with the record cap, 484
/// MiB for a parser that made the line one record.
const MAX_PEAK_RSS_MIB: u64 = 300;

/// A Notes value of `len` bytes: 256 hex digits of noise then 8 KiB of `x`,
/// over and over. It zips about 40:1, under the parser's
/// `max_compression_ratio` (200), so the entry is read and not refused as a
/// bomb, and the zip (~2.5 MB) travels inline in its Kafka message.
fn long_notes(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity(len + 8192);
    while out.len() < len {
        for _ in 0..16 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(format!("{state:016x}").as_bytes());
        }
        out.resize(out.len() + 8192, b'x');
    }
    out.truncate(len);
    out
}

/// `adt_csv` with one more row after its fifth, whose Notes are `notes`.
fn adt_csv_with_long_row(notes: &[u8]) -> Vec<u8> {
    let csv = adt_csv("L", 10);
    let sixth = csv
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w == b"\r\n")
        .nth(5)
        .map(|(i, _)| i + 2)
        .expect("a header and ten rows");
    let mut out = csv[..sixth].to_vec();
    out.extend_from_slice(b"ENC-L-LONG,MRN999999,A01,99,2024-03-01 08:00:00,W1,B1,ER,1234567890,");
    out.extend_from_slice(notes);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&csv[sixth..]);
    out
}

#[tokio::test]
async fn a_100_mb_csv_line_is_one_dead_letter_and_the_parser_stays_small() {
    let world = World::new().await;
    let notes = long_notes(LINE_BYTES);
    let long = adt_csv_with_long_row(&notes);
    drop(notes);
    let zip = pack::zip(
        &[("adt_long.csv", &long), ("adt_more.csv", &adt_csv("M", 10))],
        true,
        Protection::None,
    );
    drop(long);
    let zip_mb = zip.len() as f64 / 1e6;
    let file_id = world.publish("F1", "long_line.zip", zip).await;

    let started = Instant::now();
    let parser = ChildGuard::spawn(world.parser());
    let entries = ledger_within(&world.topics, 1, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    let hwm_mib = vm_hwm_kb(parser.0.id()) / 1024;
    eprintln!(
        "parser on a {zip_mb:.1} MB zip with one {LINE_BYTES}-byte CSV line: \
         peak RSS (VmHWM) {hwm_mib} MiB, {:.1} s from start to ledger entry",
        elapsed.as_secs_f64()
    );

    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.file_id, file_id);
    assert_eq!(entry.status, FileStatus::Partial, "{entry:?}");
    assert_eq!(entry.records.get("adt_events"), Some(&20));
    assert_eq!(entry.rejects_total(), 1);

    let records = read_topic(
        &world.topics.records("adt_events"),
        20,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(records.len(), 20, "every other record of the file lands");
    let dead = read_topic(&world.topics.dlq(), 1, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(
        header(letter, "medlake.error.code"),
        Some("record_too_large")
    );
    assert_eq!(header(letter, "medlake.error.entry"), Some("adt_long.csv"));
    assert_eq!(header(letter, "medlake.error.index"), Some("6"));
    assert_eq!(header(letter, "medlake.file_id"), Some(file_id.as_str()));
    assert_eq!(json(letter)["index"], 6);
    let size = letter.payload().map_or(0, <[u8]>::len);
    assert!(
        size < 64 * 1024,
        "the dead letter holds no value: {size} bytes"
    );

    assert!(
        hwm_mib < MAX_PEAK_RSS_MIB,
        "peak RSS {hwm_mib} MiB, bound {MAX_PEAK_RSS_MIB} MiB"
    );
}
