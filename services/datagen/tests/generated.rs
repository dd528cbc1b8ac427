//! A seed gives the same files. (That every file parses into what its manifest entry
//! says is checked against the real parser in `medlake-parser`'s `tests/generated.rs`.)

use std::path::PathBuf;

use medlake_datagen::{GenOptions, Manifest, Volume, generate};

#[test]
fn a_seed_gives_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: u64| {
        let mut opts = GenOptions::new(dir.path().join(name));
        opts.seed = seed;
        opts.facilities = Some(4);
        opts.volume = Volume::Files(25);
        opts.max_zip_bytes = 50_000;
        opts.bad = 4;
        generate(&opts).unwrap()
    };
    let blank = |mut m: Manifest| {
        m.registry = PathBuf::new();
        m.env_file = None;
        for f in &mut m.files {
            if f.protection != medlake_datagen::facilities::Protection::None {
                f.sha256.clear();
            }
        }
        m
    };
    let (a, b, c) = (run("a", 9), run("b", 9), run("c", 10));
    for f in a
        .files
        .iter()
        .filter(|f| f.protection == medlake_datagen::facilities::Protection::None)
    {
        let x = std::fs::read(dir.path().join("a").join(&f.path)).unwrap();
        let y = std::fs::read(dir.path().join("b").join(&f.path)).unwrap();
        assert_eq!(x, y, "{}", f.path);
    }
    assert_eq!(
        std::fs::read(dir.path().join("a/facilities.env")).unwrap(),
        std::fs::read(dir.path().join("b/facilities.env")).unwrap()
    );
    assert_eq!(blank(a.clone()), blank(b));
    assert_ne!(blank(a), blank(c));
}
