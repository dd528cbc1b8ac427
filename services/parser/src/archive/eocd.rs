//! The entry count a zip declares, read from its end of central directory record
//! (and the zip64 one) before the zip crate parses the central directory: the crate
//! builds a record per declared entry (a zip claiming 300,000 entries cost 134 MiB
//! before it could be refused), so the count is checked first.
//!
//! Like the zip crate, every end record in the last 64 KiB (the longest archive
//! comment) is a candidate, newest first, and it falls back to earlier ones when a
//! later one does not lead to a central directory. So the count that matters is the
//! largest one declared by a consistent candidate (single disk, as many entries on
//! this disk as in total, comment within the file); random bytes pass those checks
//! once in 2^48, so a stray signature in compressed data does not refuse a good file.

/// `PK\x05\x06`, the end of central directory record (22 bytes + comment).
const EOCD: &[u8; 4] = b"PK\x05\x06";
const EOCD_LEN: usize = 22;
/// `PK\x06\x07`, the zip64 locator (20 bytes) just before the end record.
const LOCATOR: &[u8; 4] = b"PK\x06\x07";
const LOCATOR_LEN: usize = 20;
/// `PK\x06\x06`, the zip64 end record (56 bytes + extensible data).
const EOCD64: &[u8; 4] = b"PK\x06\x06";
const EOCD64_LEN: usize = 56;

fn u16_at(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// The largest entry count declared by any consistent end record of `zip`, or
/// `None` when there is none (the zip crate then reports the archive as corrupt).
pub(super) fn declared_entries(zip: &[u8]) -> Option<u64> {
    let window = zip.len().saturating_sub(EOCD_LEN + usize::from(u16::MAX));
    (window..zip.len().saturating_sub(EOCD_LEN - 1))
        .rev()
        .filter(|&at| &zip[at..at + 4] == EOCD)
        .filter_map(|at| eocd_entries(zip, at))
        .max()
}

/// The count of the end record at `at`, if it is consistent.
fn eocd_entries(zip: &[u8], at: usize) -> Option<u64> {
    let r = &zip[at..at + EOCD_LEN];
    let (disk, cd_disk, on_disk, total) = (u16_at(r, 4), u16_at(r, 6), u16_at(r, 8), u16_at(r, 10));
    let (cd_size, cd_offset, comment) = (u32_at(r, 12), u32_at(r, 16), u16_at(r, 20));
    if disk != 0 || cd_disk != 0 || on_disk != total {
        return None;
    }
    if at as u64 + EOCD_LEN as u64 + comment > zip.len() as u64 {
        return None;
    }
    let may_be_zip64 = total == u64::from(u16::MAX)
        || cd_size == u64::from(u32::MAX)
        || cd_offset == u64::from(u32::MAX);
    if may_be_zip64 && let Some(n) = zip64_entries(zip, at) {
        return Some(n);
    }
    Some(total)
}

/// The largest count of a consistent zip64 end record found through the locator
/// before the end record at `eocd`: it ends where the locator starts, and may sit
/// anywhere after the offset the locator gives (data may precede the archive).
fn zip64_entries(zip: &[u8], eocd: usize) -> Option<u64> {
    let locator = eocd.checked_sub(LOCATOR_LEN)?;
    let l = &zip[locator..eocd];
    if &l[..4] != LOCATOR {
        return None;
    }
    let from = usize::try_from(u64_at(l, 8)).ok()?.min(locator);
    (from..locator.saturating_sub(EOCD64_LEN - 1))
        .filter(|&at| &zip[at..at + 4] == EOCD64)
        .filter_map(|at| {
            let r = &zip[at..locator];
            let record_size = u64_at(r, 4);
            let (disk, on_disk, total) = (u32_at(r, 16), u64_at(r, 24), u64_at(r, 32));
            let ends_at_locator = record_size.checked_add(12) == Some(r.len() as u64);
            (ends_at_locator && disk == 0 && on_disk == total).then_some(total)
        })
        .max()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An end record declaring `total` entries, with `comment` bytes of comment.
    fn eocd(total: u16, cd_size: u32, cd_offset: u32, comment: &[u8]) -> Vec<u8> {
        let mut r = EOCD.to_vec();
        r.extend_from_slice(&[0, 0, 0, 0]);
        r.extend_from_slice(&total.to_le_bytes());
        r.extend_from_slice(&total.to_le_bytes());
        r.extend_from_slice(&cd_size.to_le_bytes());
        r.extend_from_slice(&cd_offset.to_le_bytes());
        r.extend_from_slice(&(comment.len() as u16).to_le_bytes());
        r.extend_from_slice(comment);
        r
    }

    /// A zip64 end record declaring `total` entries, then its locator.
    fn zip64_end(at: u64, total: u64) -> Vec<u8> {
        let mut r = EOCD64.to_vec();
        r.extend_from_slice(&44u64.to_le_bytes());
        r.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        r.extend_from_slice(&total.to_le_bytes());
        r.extend_from_slice(&total.to_le_bytes());
        r.extend_from_slice(&0u64.to_le_bytes());
        r.extend_from_slice(&0u64.to_le_bytes());
        r.extend_from_slice(LOCATOR);
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&at.to_le_bytes());
        r.extend_from_slice(&1u32.to_le_bytes());
        r
    }

    /// A crafted archive: a few bytes of body, then zip64 end records claiming
    /// `total` entries.
    pub(crate) fn crafted_zip64(total: u64) -> Vec<u8> {
        let mut z = b"PK\x03\x04 not much of a body".to_vec();
        let at = z.len() as u64;
        z.extend(zip64_end(at, total));
        z.extend(eocd(u16::MAX, u32::MAX, u32::MAX, b""));
        z
    }

    #[test]
    fn the_count_of_a_plain_end_record() {
        let mut z = vec![7u8; 100];
        z.extend(eocd(3, 46 * 3, 10, b"a comment"));
        assert_eq!(declared_entries(&z), Some(3));
        assert_eq!(declared_entries(b"PK\x03\x04 no end record"), None);
        assert_eq!(declared_entries(b""), None);
    }

    #[test]
    fn the_count_of_a_zip64_end_record() {
        assert_eq!(declared_entries(&crafted_zip64(300_000)), Some(300_000));
        // Data before the archive shifts the zip64 record after the locator's offset.
        let mut z = vec![0u8; 1000];
        z.extend(crafted_zip64(70_000));
        assert_eq!(declared_entries(&z), Some(70_000));
    }

    #[test]
    fn inconsistent_signatures_are_ignored_and_the_largest_consistent_count_wins() {
        let mut stray = EOCD.to_vec();
        stray.extend_from_slice(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        let mut z = stray.clone();
        z.extend(eocd(2, 92, 0, &stray));
        assert_eq!(declared_entries(&z), Some(2));
        // A comment running past the end of the file.
        let mut cut = eocd(9, 0, 0, b"long comment");
        cut.truncate(cut.len() - 3);
        assert_eq!(declared_entries(&cut), None);
        // Two consistent records: the zip crate may fall back to the earlier one.
        let mut z = eocd(40_000, 0, 0, b"");
        z.extend(eocd(2, 0, 0, b""));
        assert_eq!(declared_entries(&z), Some(40_000));
    }
}
