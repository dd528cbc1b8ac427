//! `medlake gen`: writes facility files shaped like the requirements and their
//! `manifest.json` (see `medlake_datagen`).

use std::path::PathBuf;
use std::process::ExitCode;

use medlake_datagen::{GenOptions, Volume, generate};

/// Arguments of `medlake gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Output directory: `files/<facility>/…` and `manifest.json` (its `files/` is replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed: the same seed writes the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Facilities to generate for (default: all of `--registry`, or 8 created).
    #[arg(long)]
    pub facilities: Option<usize>,
    /// Exactly this many files, over one day.
    #[arg(long, conflicts_with = "days")]
    pub files: Option<usize>,
    /// Days of traffic: about ten files per facility and day (the default is one day).
    #[arg(long)]
    pub days: Option<u32>,
    /// Facility registry giving the facilities and their zip passwords (read from the
    /// environment variables or files it names). Without it, a registry is created in
    /// `--out` with its secrets in `--out/facilities.env`.
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// No archive larger than this many bytes (the size distribution is squeezed below it).
    #[arg(long, default_value_t = medlake_datagen::plan::TAIL_MAX_ZIP_BYTES)]
    pub max_zip_bytes: u64,
    /// Files to make bad on purpose: corrupt zip, wrong password, an entry no data set
    /// matches, rows with bad values (in turn).
    #[arg(long, default_value_t = 0)]
    pub bad: usize,
    /// First day of the generated period (YYYY-MM-DD).
    #[arg(long, default_value = "2024-03-01")]
    pub start_date: String,
}

/// Runs the generator; returns the process exit status (2 on bad options).
pub fn run(args: &GenArgs) -> ExitCode {
    let mut opts = GenOptions::new(&args.out);
    opts.seed = args.seed;
    opts.facilities = args.facilities;
    opts.registry = args.registry.clone();
    opts.max_zip_bytes = args.max_zip_bytes;
    opts.bad = args.bad;
    opts.volume = match (args.files, args.days) {
        (Some(n), _) => Volume::Files(n),
        (None, Some(d)) => Volume::Days(d),
        (None, None) => Volume::Days(1),
    };
    opts.start_date = match args.start_date.parse() {
        Ok(date) => date,
        Err(e) => {
            eprintln!("medlake gen: --start-date must be YYYY-MM-DD: {e}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let manifest = match generate(&opts) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("medlake gen: {e}");
            return ExitCode::from(2);
        }
    };
    let t = &manifest.totals;
    let facilities: std::collections::BTreeSet<&str> = manifest
        .files
        .iter()
        .map(|f| f.facility_id.as_str())
        .collect();
    println!(
        "wrote {} files ({:.1} MB) from {} facilities to {} in {:.1} s",
        t.files,
        t.bytes as f64 / 1e6,
        facilities.len(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    for (dataset, records) in &t.records {
        println!(
            "  {dataset:<18} {records:>9} records -> {:>9} table rows",
            t.table_rows.get(dataset).copied().unwrap_or(0)
        );
    }
    let rejects: u64 = t.rejects.values().sum();
    println!(
        "  expected rejects: {rejects} ({} files rejected whole) {:?}",
        t.rejected_files, t.rejects
    );
    println!("  manifest: {}", args.out.join("manifest.json").display());
    println!("  registry: {}", manifest.registry.display());
    if let Some(env) = &manifest.env_file {
        println!(
            "  secrets:  {} (source it before starting medlake)",
            env.display()
        );
    }
    ExitCode::SUCCESS
}
