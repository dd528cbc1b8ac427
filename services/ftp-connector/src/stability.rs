//! Which listed files to take: the name must match the endpoint's glob, and
//! the file must be done uploading. FTP has no "upload finished" signal, so
//! a file counts as finished when its size did not change between two
//! listings in a row and/or its modification time is old enough.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use globset::GlobMatcher;
use medlake_common::endpoints::ftp::Stability;

/// One plain file of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub name: String,
    pub size: u64,
}

/// Remembers the sizes of the previous listing of one endpoint.
#[derive(Debug)]
pub struct StabilityTracker {
    rule: Stability,
    matcher: GlobMatcher,
    last_sizes: HashMap<String, u64>,
    /// Files of the last listing that matched but had not settled.
    unsettled: usize,
}

impl StabilityTracker {
    pub fn new(rule: Stability, matcher: GlobMatcher) -> Self {
        Self {
            rule,
            matcher,
            last_sizes: HashMap::new(),
            unsettled: 0,
        }
    }

    /// Records a new listing and returns, sorted by name, the files matching
    /// the glob whose size is settled (the same as in the previous listing,
    /// when that rule is on). Files no longer listed are forgotten.
    pub fn observe(&mut self, listing: Vec<RemoteFile>) -> Vec<RemoteFile> {
        let mut current = HashMap::with_capacity(listing.len());
        let mut settled = Vec::new();
        for file in listing {
            if !self.matcher.is_match(&file.name) {
                continue;
            }
            current.insert(file.name.clone(), file.size);
            let unchanged = self.last_sizes.get(&file.name) == Some(&file.size);
            if unchanged || !self.rule.unchanged_size {
                settled.push(file);
            }
        }
        self.unsettled = current.len() - settled.len();
        self.last_sizes = current;
        settled.sort_by(|a, b| a.name.cmp(&b.name));
        settled
    }

    /// Files of the last listing that matched the glob but had not settled
    /// (seen for the first time, or still growing).
    pub fn unsettled(&self) -> usize {
        self.unsettled
    }

    /// Records that `name` changed size since it was listed (the download
    /// saw other bytes than the listing promised): it must settle again.
    pub fn changed(&mut self, name: &str, size: u64) {
        self.last_sizes.insert(name.to_string(), size);
    }

    /// Whether the minimum-age rule applies (and MDTM must be asked).
    pub fn needs_age(&self) -> bool {
        self.rule.min_age_ms > 0
    }

    /// Whether a file last modified at `modified` (UTC, as MDTM reports it)
    /// is old enough at `now`.
    pub fn old_enough(&self, modified: NaiveDateTime, now: DateTime<Utc>) -> bool {
        let age = now.signed_duration_since(modified.and_utc());
        age.num_milliseconds() >= i64::try_from(self.rule.min_age_ms).unwrap_or(i64::MAX)
    }
}

/// Parses one line of a `LIST` answer (Unix or DOS style); `None` for
/// directories, links and lines that are not entries (`total 12`).
pub fn parse_list_line(line: &str) -> Option<RemoteFile> {
    use suppaftp::list::ListParser;
    let file = ListParser::parse_posix(line)
        .or_else(|_| ListParser::parse_dos(line))
        .ok()?;
    if !file.is_file() {
        return None;
    }
    Some(RemoteFile {
        name: file.name().to_string(),
        size: file.size() as u64,
    })
}

/// The folder named by one line of a `LIST` answer; `None` for files,
/// links, `.`/`..` and lines that are not entries.
pub fn parse_dir_line(line: &str) -> Option<String> {
    use suppaftp::list::ListParser;
    let entry = ListParser::parse_posix(line)
        .or_else(|_| ListParser::parse_dos(line))
        .ok()?;
    let name = entry.name();
    (entry.is_directory() && name != "." && name != "..").then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn tracker(glob: &str, unchanged_size: bool, min_age_ms: u64) -> StabilityTracker {
        StabilityTracker::new(
            Stability {
                unchanged_size,
                min_age_ms,
            },
            globset::Glob::new(glob).unwrap().compile_matcher(),
        )
    }

    fn f(name: &str, size: u64) -> RemoteFile {
        RemoteFile {
            name: name.into(),
            size,
        }
    }

    #[test]
    fn folders_are_told_from_files() {
        let dir = "drwxr-xr-x   2 owner group  4096 Mar  1 12:00 F0001";
        let file = "-rw-r--r--   1 owner group  1234 Mar  1 12:00 notes.txt";
        assert_eq!(parse_dir_line(dir).as_deref(), Some("F0001"));
        assert_eq!(parse_dir_line(file), None);
        assert_eq!(parse_dir_line("total 8"), None);
        assert_eq!(parse_dir_line(&dir.replace("F0001", "..")), None);
    }

    #[test]
    fn a_file_is_taken_once_its_size_held_for_two_listings() {
        let mut t = tracker("*.zip", true, 0);
        assert!(t.observe(vec![f("a.zip", 10), f("x.txt", 1)]).is_empty());
        assert_eq!(t.unsettled(), 1, "only files matching the glob wait");
        assert!(t.observe(vec![f("a.zip", 20)]).is_empty(), "still growing");
        assert_eq!(t.observe(vec![f("a.zip", 20)]), [f("a.zip", 20)]);
        assert_eq!(t.unsettled(), 0);
        // Taken again while it is still there (its move failed): harmless.
        assert_eq!(t.observe(vec![f("a.zip", 20)]), [f("a.zip", 20)]);
    }

    #[test]
    fn the_glob_filters_and_results_are_sorted() {
        let mut t = tracker("*.zip", true, 0);
        let listing = || {
            vec![
                f("b.zip", 1),
                f("notes.txt", 1),
                f("a.zip", 2),
                f("c.zip.part", 3),
            ]
        };
        t.observe(listing());
        assert_eq!(t.observe(listing()), [f("a.zip", 2), f("b.zip", 1)]);
    }

    #[test]
    fn vanished_files_are_forgotten() {
        let mut t = tracker("*", true, 0);
        t.observe(vec![f("a", 1)]);
        t.observe(vec![]);
        assert!(
            t.observe(vec![f("a", 1)]).is_empty(),
            "a re-upload must settle again"
        );
    }

    #[test]
    fn a_size_change_seen_by_the_download_resets_the_file() {
        let mut t = tracker("*", true, 0);
        t.observe(vec![f("a", 1)]);
        assert_eq!(t.observe(vec![f("a", 1)]).len(), 1);
        t.changed("a", 5);
        assert!(t.observe(vec![f("a", 7)]).is_empty());
    }

    #[test]
    fn without_the_size_rule_files_are_taken_at_once() {
        let mut t = tracker("*", false, 0);
        assert_eq!(t.observe(vec![f("a", 1)]), [f("a", 1)]);
        assert!(!t.needs_age());
    }

    #[test]
    fn minimum_age_by_modification_time() {
        let t = tracker("*", false, 60_000);
        assert!(t.needs_age());
        let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let modified = |s| {
            Utc.with_ymd_and_hms(2024, 5, 1, 11, 59, s)
                .unwrap()
                .naive_utc()
        };
        assert!(t.old_enough(modified(0), now));
        assert!(!t.old_enough(modified(1), now));
        // A server clock ahead of ours: not old enough yet.
        assert!(!t.old_enough((now + chrono::Duration::seconds(5)).naive_utc(), now));
    }

    #[test]
    fn parses_unix_and_dos_listings() {
        assert_eq!(
            parse_list_line("-rw-r--r--   1 owner group     1234 Mar 07 12:00 a b.zip"),
            Some(f("a b.zip", 1234))
        );
        assert_eq!(
            parse_list_line("drwxr-xr-x   2 owner group     4096 Mar 07 12:00 processed"),
            None
        );
        assert_eq!(
            parse_list_line("03-07-24  12:00PM                 5678 x.csv"),
            Some(f("x.csv", 5678))
        );
        assert_eq!(
            parse_list_line("03-07-24  12:00PM       <DIR>          sub"),
            None
        );
        assert_eq!(parse_list_line("total 12"), None);
    }
}
