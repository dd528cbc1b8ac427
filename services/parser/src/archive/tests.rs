use medlake_common::secret::Secret;
use medlake_datagen::pack::{self, Protection};

use super::*;

fn secrets(p: &[&str]) -> Vec<Secret> {
    p.iter().map(|s| Secret::new(*s)).collect()
}

/// Walks and returns (name, content) of every entry, or the error code.
fn entries(
    name: &str,
    bytes: &[u8],
    passwords: &[&str],
    limits: &Limits,
) -> Result<Vec<(String, String)>, &'static str> {
    let mut out = Vec::new();
    let pw = secrets(passwords);
    let r = walk::<()>(name, bytes, "F1", &pw, limits, &mut |n, b| {
        out.push((n.to_string(), String::from_utf8_lossy(&b).into_owned()));
        Ok(())
    });
    match r {
        Ok(stats) => {
            assert_eq!(stats.entries, out.len());
            Ok(out)
        }
        Err(WalkError::File(e)) => Err(e.code().as_str()),
        Err(WalkError::Callback(())) => panic!("callback failed"),
    }
}

fn ok(name: &str, bytes: &[u8], passwords: &[&str]) -> Vec<(String, String)> {
    entries(name, bytes, passwords, &Limits::default()).unwrap()
}

fn pair(n: &str, c: &str) -> (String, String) {
    (n.to_string(), c.to_string())
}

#[test]
fn plain_file_is_one_entry() {
    assert_eq!(ok("a.csv", b"x,y\n", &[]), [pair("a.csv", "x,y\n")]);
}

#[test]
fn gzip_strips_its_suffix() {
    assert_eq!(
        ok("census.txt.gz", &pack::gzip(b"hello"), &[]),
        [pair("census.txt", "hello")]
    );
}

#[test]
fn zip_stored_and_deflate_with_subfolders() {
    for deflate in [false, true] {
        let z = pack::zip(
            &[
                ("a.csv", b"1"),
                ("sub/dir/b.xml", b"<a/>"),
                ("__MACOSX/._a.csv", b"junk"),
            ],
            deflate,
            Protection::None,
        );
        assert_eq!(
            ok("x.zip", &z, &[]),
            [pair("a.csv", "1"), pair("sub/dir/b.xml", "<a/>")]
        );
    }
}

#[test]
fn an_archive_with_no_file_is_rejected_as_empty() {
    let folders_only = pack::zip(&[("__MACOSX/._a.csv", b"junk")], true, Protection::None);
    let nothing = pack::zip(&[], true, Protection::None);
    for z in [folders_only, nothing] {
        assert_eq!(
            entries("x.zip", &z, &[], &Limits::default()),
            Err("empty_archive")
        );
    }
    // An empty zip inside a gzip is empty too; an empty entry is still an entry.
    let nested = pack::gzip(&pack::zip(&[], false, Protection::None));
    assert_eq!(
        entries("x.zip.gz", &nested, &[], &Limits::default()),
        Err("empty_archive")
    );
    assert_eq!(ok("a.csv", b"", &[]), [pair("a.csv", "")]);
}

#[test]
fn passwords_are_tried_in_turn() {
    for protection in [
        Protection::ZipCrypto("right"),
        Protection::Aes128("right"),
        Protection::Aes256("right"),
    ] {
        let z = pack::zip(
            &[("a.csv", b"secret data"), ("b.csv", b"more")],
            true,
            protection,
        );
        assert_eq!(
            ok("x.zip", &z, &["old", "wrong", "right"]),
            [pair("a.csv", "secret data"), pair("b.csv", "more")],
            "{protection:?}"
        );
        assert_eq!(
            entries("x.zip", &z, &[], &Limits::default()),
            Err("password_required"),
            "{protection:?}"
        );
        assert_eq!(
            entries("x.zip", &z, &["nope", "neither"], &Limits::default()),
            Err("wrong_password"),
            "{protection:?}"
        );
    }
}

#[test]
fn zipcrypto_check_byte_collisions_count_as_wrong() {
    // Among many wrong passwords some pass ZipCrypto's one-byte check; all must fail.
    let z = pack::zip(
        &[("a.csv", &[b'x'; 4000])],
        true,
        Protection::ZipCrypto("right"),
    );
    let wrong: Vec<String> = (0..600).map(|i| format!("guess{i}")).collect();
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    assert_eq!(
        entries("x.zip", &z, &wrong, &Limits::default()),
        Err("wrong_password")
    );
}

#[test]
fn a_password_whose_output_trips_a_limit_does_not_stop_the_rotation() {
    use super::zip::{Attempt, attempt, open_with_any};

    let content = b"id,name\n1,a\n";
    let z = pack::zip(&[("a.csv", content)], true, Protection::ZipCrypto("new"));
    let mut archive = ::zip::ZipArchive::new(std::io::Cursor::new(&z[..])).unwrap();
    let packed = archive.by_index_raw(0).unwrap().compressed_size();
    let mut budget = Budget::default();
    let mut real = |password: &str, limits: &Limits| {
        attempt(
            &mut archive,
            0,
            "a.csv",
            packed,
            password.as_bytes(),
            limits,
            &mut budget,
        )
    };
    let tripped = || FileError::EntryTooLarge {
        entry: "a.csv".into(),
        limit_bytes: 4,
    };
    // The old password of a rotation trips a limit (as a wrong password passing the
    // check byte can, with garbage output); the new one is tried and opens the entry.
    let opened = open_with_any(&[0, 1], |p| match p {
        0 => Ok(Attempt::Tripped(tripped())),
        _ => real("new", &Limits::default()),
    });
    assert_eq!(opened, Ok((1, content.to_vec())));
    // Nothing opens it: the limit tripped is the error, else no password is right.
    let opened = open_with_any(&[0, 1], |p| match p {
        0 => Ok(Attempt::Tripped(tripped())),
        _ => real("old", &Limits::default()),
    });
    assert_eq!(opened, Err(Some(tripped())));
    let opened = open_with_any(&[0, 1], |p| real(["old", "older"][p], &Limits::default()));
    assert_eq!(opened, Err(None));
    // A real limit on a real attempt is classified as tripped, not as an error.
    let small = Limits {
        max_entry_bytes: 4,
        ..Limits::default()
    };
    assert!(matches!(
        real("new", &small),
        Ok(Attempt::Tripped(FileError::EntryTooLarge { .. }))
    ));
    // Only the attempt that opened the entry counted toward the file's bytes.
    assert_eq!(budget.total_bytes, content.len() as u64);

    // Through the walk: an entry too large for the one password that opens it is
    // rejected as such, whichever order the passwords come in.
    for passwords in [["new", "old"], ["old", "new"]] {
        assert_eq!(
            entries("x.zip", &z, &passwords, &small),
            Err("entry_too_large")
        );
    }
}

#[test]
fn a_zip_declaring_too_many_entries_is_refused_before_its_directory_is_read() {
    let limits = Limits {
        max_entries: 5,
        ..Limits::default()
    };
    let names: Vec<String> = (0..6).map(|i| format!("e{i}.csv")).collect();
    let six: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"1"[..])).collect();
    let z = pack::zip(&six, true, Protection::None);
    assert_eq!(entries("x.zip", &z, &[], &limits), Err("too_many_entries"));
    assert_eq!(
        entries(
            "x.zip",
            &pack::zip(&six[..5], true, Protection::None),
            &[],
            &limits
        )
        .map(|e| e.len()),
        Ok(5)
    );
    // A few bytes claiming 300,000 entries: the zip crate would call this corrupt
    // (after sizing its directory to the claim); the claim alone refuses it.
    let crafted = super::eocd::tests::crafted_zip64(300_000);
    assert_eq!(
        entries("x.zip", &crafted, &[], &Limits::default()),
        Err("too_many_entries")
    );
    assert_eq!(
        entries(
            "x.zip",
            &crafted,
            &[],
            &Limits {
                max_entries: 300_000,
                ..Limits::default()
            }
        ),
        Err("corrupt_archive")
    );
    // Nested archives are checked the same way.
    let outer = pack::zip(&[("inner.zip", &z)], false, Protection::None);
    assert_eq!(
        entries("o.zip", &outer, &[], &limits),
        Err("too_many_entries")
    );
}

#[test]
fn zip_inside_zip_one_level() {
    let inner = pack::zip(&[("p.csv", b"in")], true, Protection::Aes256("pw"));
    let outer = pack::zip(
        &[("inner/data.zip", &inner), ("top.csv", b"top")],
        true,
        Protection::ZipCrypto("pw"),
    );
    assert_eq!(
        ok("o.zip", &outer, &["pw"]),
        [pair("inner/data.zip/p.csv", "in"), pair("top.csv", "top")]
    );
    let gz = pack::gzip(&inner);
    assert_eq!(ok("x.zip.gz", &gz, &["pw"]), [pair("x.zip/p.csv", "in")]);
    let deeper = pack::zip(&[("o.zip", &outer)], false, Protection::None);
    assert_eq!(
        entries("d.zip", &deeper, &["pw"], &Limits::default()),
        Err("nesting_too_deep")
    );
}

#[test]
fn corrupt_archives_are_reported() {
    let z = pack::zip(&[("a.csv", &[b'a'; 10_000])], true, Protection::None);
    assert_eq!(
        entries("x.zip", &z[..z.len() / 2], &[], &Limits::default()),
        Err("corrupt_archive")
    );
    let mut flipped = z.clone();
    flipped[60] ^= 0xff;
    flipped[70] ^= 0xff;
    assert_eq!(
        entries("x.zip", &flipped, &[], &Limits::default()),
        Err("corrupt_archive")
    );
    assert_eq!(
        entries(
            "x.gz",
            &[0x1f, 0x8b, 8, 0, 1, 2, 3],
            &[],
            &Limits::default()
        ),
        Err("corrupt_archive")
    );
    assert_eq!(
        entries("x.zip", b"PK\x03\x04garbage", &[], &Limits::default()),
        Err("corrupt_archive")
    );
}

#[test]
fn bombs_hit_the_limits_on_bytes_read() {
    let zeros = vec![0u8; 4 * 1024 * 1024];
    let bomb = pack::zip(&[("zeros.csv", &zeros)], true, Protection::None);
    assert_eq!(
        entries("b.zip", &bomb, &[], &Limits::default()),
        Err("compression_ratio")
    );
    let small = Limits {
        max_entry_bytes: 1024 * 1024,
        ..Limits::default()
    };
    assert_eq!(entries("b.zip", &bomb, &[], &small), Err("entry_too_large"));
    let many = pack::zip(
        &[("a", b"1"), ("b", b"2"), ("c", b"3")],
        false,
        Protection::None,
    );
    assert_eq!(
        entries(
            "m.zip",
            &many,
            &[],
            &Limits {
                max_entries: 2,
                ..Limits::default()
            }
        ),
        Err("too_many_entries")
    );
    let total = Limits {
        max_total_bytes: 2,
        ..Limits::default()
    };
    assert_eq!(
        entries("m.zip", &many, &[], &total),
        Err("archive_too_large")
    );
    assert_eq!(
        entries("z.gz", &pack::gzip(&zeros), &[], &Limits::default()),
        Err("compression_ratio")
    );
}

#[test]
fn lying_size_headers_do_not_bypass_limits() {
    // Patch the central directory and local header to claim a tiny uncompressed size.
    let data = vec![b'a'; 2 * 1024 * 1024];
    let mut z = pack::zip(&[("a.csv", &data)], true, Protection::None);
    let claim = 10u32.to_le_bytes();
    let local_size_at = 22;
    z[local_size_at..local_size_at + 4].copy_from_slice(&claim);
    let cd = z.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
    z[cd + 24..cd + 28].copy_from_slice(&claim);
    let limits = Limits {
        max_entry_bytes: 1024 * 1024,
        ..Limits::default()
    };
    let code = entries("l.zip", &z, &[], &limits).unwrap_err();
    assert!(
        code == "entry_too_large" || code == "corrupt_archive",
        "{code}"
    );
}

#[test]
fn strip_gz_names() {
    assert_eq!(strip_gz("A.CSV.GZ"), "A.CSV");
    assert_eq!(strip_gz("x.tgz"), "x.tar");
    assert_eq!(strip_gz("plain"), "plain");
}

#[test]
fn control_characters_in_entry_names_are_shown_as_text() {
    let zip = pack::zip(
        &[
            (
                "labs\u{1b}[31m\nFAKE LOG LINE\u{0}.csv",
                b"a;b\n".as_slice(),
            ),
            ("plain.csv", b"x".as_slice()),
        ],
        true,
        Protection::None,
    );
    let names: Vec<String> = ok("f.zip", &zip, &[]).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["labs\\x1b[31m\\x0aFAKE LOG LINE\\x00.csv", "plain.csv"]
    );
    assert_eq!(printable("a\u{85}b"), "a\\x85b");
}
