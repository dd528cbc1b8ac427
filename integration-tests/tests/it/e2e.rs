//! The whole pipeline as it runs in production, end to end: the four services
//! (`ftp-connector`, `api-connector`, `parser`, `sink`) as child processes of
//! the `medlake` binary, a real FTP server, a real broker, a temporary lake.
//! `medlake gen` writes a slice of facility files (good and bad ones) with a
//! manifest of what each must become; half of them are uploaded to the
//! landing FTP server, half are pushed over HTTP. The lake is then read back
//! with medlake's own Delta reader and reconciled with the manifest: every
//! file is in the ledger, every record is a row or a dead letter, no row is
//! there twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::util::display::array_value_to_string;
use medlake_common::config::TopicsConfig;
use medlake_common::dataset::{self, Table};
use medlake_datagen::{FileEntry, Manifest};
use medlake_integration_tests::{
    ChildGuard, FtpServer, PrivateBroker, brokers, free_port, medlake, repo_root, short_id,
    topics_config, wait_ready,
};
use medlake_sink::delta::builtin::{DEAD_LETTERS_TABLE, FILES_TABLE};
use medlake_sink::delta::read;
use medlake_sink::inspect;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;

/// The services, in start order (consumers first).
pub(crate) const SERVICES: [&str; 4] = ["sink", "parser", "ftp-connector", "api-connector"];
/// Facilities of the test registry: id, and whether its zips are encrypted.
const FACILITIES: [(&str, bool); 3] = [("E01", true), ("E02", true), ("E03", false)];
/// How long a service may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one delivery (an FTP upload or an HTTP PUT, with retries) may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Everything one test runs: broker address, topics, lake, FTP server,
/// services, generated files.
pub(crate) struct Pipeline {
    dir: tempfile::TempDir,
    brokers: String,
    /// The lake root: a folder of `dir` or an `s3://` URI.
    lake: String,
    /// Settings added to every command (`MEDLAKE_…` overrides).
    extra_env: Vec<(String, String)>,
    topics: TopicsConfig,
    ftp: FtpServer,
    api_port: u16,
    secrets: Vec<(String, String)>,
    services: BTreeMap<&'static str, ChildGuard>,
    /// Admin (`/metrics`, `/readyz`) address of each running service.
    admins: BTreeMap<&'static str, String>,
}

impl Pipeline {
    /// Writes the facility registry, starts the FTP server and creates the
    /// topics on `brokers`.
    pub(crate) fn new(brokers: String) -> Self {
        Self::with_lake(brokers, None, Vec::new())
    }

    /// Like [`Pipeline::new`], with the lake at `lake` (`None`: a folder of
    /// the test directory) and `extra_env` set on every command.
    pub(crate) fn with_lake(
        brokers: String,
        lake: Option<String>,
        extra_env: Vec<(String, String)>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("test directory");
        let lake = lake.unwrap_or_else(|| dir.path().join("lake").display().to_string());
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let ftp_root = dir.path().join("ftp");
        for (facility, _) in FACILITIES {
            std::fs::create_dir_all(ftp_root.join(facility).join("incoming")).unwrap();
        }
        let ftp = FtpServer::start(&ftp_root, "landing");
        let run = short_id();
        let mut secrets = vec![
            ("E2E_FTP_PASSWORD".to_string(), ftp.password.clone()),
            ("E2E_PII_KEY".to_string(), format!("pii-{run}")),
        ];
        let mut yaml = String::from("facilities:\n");
        for (facility, encrypted) in FACILITIES {
            yaml.push_str(&format!("  - id: {facility}\n"));
            if encrypted {
                yaml.push_str(&format!(
                    "    zip_passwords: [{{ env: E2E_{facility}_ZIP }}]\n"
                ));
                secrets.push((
                    format!("E2E_{facility}_ZIP"),
                    format!("zip-{facility}-{run}"),
                ));
            }
            secrets.push((
                format!("E2E_{facility}_KEY"),
                format!("key-{facility}-{run}"),
            ));
            yaml.push_str(&format!(
                "    api_key: {{ env: E2E_{facility}_KEY }}\n    ftp:\n      - id: {id}-landing\n        \
                 host: 127.0.0.1\n        port: {port}\n        user: {user}\n        \
                 password: {{ env: E2E_FTP_PASSWORD }}\n        directory: /{facility}/incoming\n        \
                 glob: \"*.{{zip,gz}}\"\n        poll_interval_ms: 300\n        timeout_ms: 10000\n        \
                 ftps: false\n",
                id = facility.to_lowercase(),
                port = ftp.port,
                user = ftp.user,
            ));
        }
        std::fs::write(dir.path().join("facilities.yaml"), yaml).unwrap();
        let pipeline = Self {
            dir,
            brokers,
            lake,
            extra_env,
            topics: topics_config(),
            ftp,
            api_port: free_port(),
            secrets,
            services: BTreeMap::new(),
            admins: BTreeMap::new(),
        };
        let status = pipeline
            .command()
            .args(["topics", "ensure"])
            .status()
            .expect("run medlake topics ensure");
        assert!(status.success(), "medlake topics ensure failed: {status}");
        pipeline
    }

    pub(crate) fn lake(&self) -> String {
        self.lake.clone()
    }

    /// The test's own folder (registry, logs, generated files).
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Where [`Pipeline::generate`] writes its manifest.
    pub(crate) fn manifest_path(&self) -> PathBuf {
        self.dir.path().join("data").join("manifest.json")
    }

    /// A `medlake` command with this pipeline's broker, topics, lake,
    /// registry and secrets.
    pub(crate) fn command(&self) -> Command {
        let mut command = medlake(&self.topics);
        command
            .env("KAFKA_BROKERS", &self.brokers)
            .env("MEDLAKE_LAKE_URI", self.lake())
            .env("MEDLAKE_SCHEMAS_DIR", repo_root().join("schemas"))
            .env(
                "MEDLAKE_FACILITIES_FILE",
                self.dir.path().join("facilities.yaml"),
            )
            .env("NO_COLOR", "1")
            // medlake's own crates at debug, so the secrets check sees the most.
            .env(
                "RUST_LOG",
                "warn,medlake=debug,medlake_common=debug,medlake_parser=debug,medlake_sink=debug,\
                 medlake_ftp_connector=debug,medlake_api_connector=debug",
            );
        for (name, value) in self.secrets.iter().chain(&self.extra_env) {
            command.env(name, value);
        }
        command
    }

    /// Starts `service` (again), its output appended to `logs/<service>.log`,
    /// and waits until it is ready.
    pub(crate) async fn start(&mut self, service: &'static str) {
        let log = self.dir.path().join("logs").join(format!("{service}.log"));
        let log = File::options().create(true).append(true).open(log).unwrap();
        let admin = format!("127.0.0.1:{}", free_port());
        let mut command = self.command();
        command
            .arg(service)
            .env("MEDLAKE_ADMIN__LISTEN", &admin)
            .env(
                "MEDLAKE_PARSER__GROUP_ID",
                format!("{}-parser", self.topics.prefix),
            )
            .env(
                "MEDLAKE_PARSER__TRANSACTIONAL_ID",
                format!("{}-parser", self.topics.prefix),
            )
            .env("MEDLAKE_PARSER__PII_KEY__ENV", "E2E_PII_KEY")
            .env(
                "MEDLAKE_SINK__CONSUMER_GROUP",
                format!("{}-sink", self.topics.prefix),
            )
            .env("MEDLAKE_SINK__FLUSH_INTERVAL_MS", "500")
            .env("MEDLAKE_SINK__RETRY_BACKOFF_INITIAL_MS", "200")
            .env("MEDLAKE_SINK__RETRY_BACKOFF_MAX_MS", "2000")
            .env("MEDLAKE_FTP_CONNECTOR__RETRY_BACKOFF_INITIAL_MS", "200")
            .env("MEDLAKE_FTP_CONNECTOR__RETRY_BACKOFF_MAX_MS", "2000")
            .env(
                "MEDLAKE_API_CONNECTOR__LISTEN",
                format!("127.0.0.1:{}", self.api_port),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = ChildGuard::spawn(command);
        let started = Instant::now();
        wait_ready(&mut child, &admin, service, READY_TIMEOUT).await;
        eprintln!("e2e: {service} ready in {:.1?}", started.elapsed());
        self.services.insert(service, child);
        self.admins.insert(service, admin);
    }

    /// The value of every sample of `metric` on `service`'s `/metrics`,
    /// summed over labels.
    pub(crate) async fn metric_sum(&self, service: &str, metric: &str) -> f64 {
        let url = format!("http://{}/metrics", self.admins[service]);
        let text = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGKILL of `service` (no chance to flush, commit or say goodbye),
    /// then a fresh start of it.
    async fn crash_and_restart(&mut self, service: &'static str) {
        let mut child = self.services.remove(service).expect("a running service");
        child.kill();
        eprintln!("e2e: {service} killed");
        self.start(service).await;
    }

    /// Fails the test when a service died on its own.
    fn assert_running(&mut self) {
        let exited: Vec<String> = self
            .services
            .iter_mut()
            .filter_map(|(service, child)| {
                let status = child.0.try_wait().ok()??;
                Some(format!("{service} ({status})"))
            })
            .collect();
        assert!(
            exited.is_empty(),
            "exited on their own: {exited:?}\n{}",
            self.logs_tail()
        );
    }

    /// The last lines of every service log (for failure messages).
    pub(crate) fn logs_tail(&self) -> String {
        let mut out = String::new();
        for service in SERVICES {
            let path = self.dir.path().join("logs").join(format!("{service}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- last lines of {service}.log\n"));
            for line in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// No secret of the run (FTP password, zip passwords, API keys, the PII
    /// key) appears in any service's log.
    pub(crate) fn assert_no_secret_in_logs(&self) {
        for service in SERVICES {
            let path = self.dir.path().join("logs").join(format!("{service}.log"));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.is_empty(), "{service} wrote no log");
            for (name, value) in &self.secrets {
                assert!(
                    !text.contains(value.as_str()),
                    "{service}.log contains the secret {name}"
                );
            }
        }
    }

    /// `medlake gen`: `files` files, `bad` of them bad, small archives.
    pub(crate) fn generate(&self, files: usize, bad: usize, seed: u64) -> Manifest {
        let out = self.dir.path().join("data");
        let output = self
            .command()
            .arg("gen")
            .arg("--out")
            .arg(&out)
            .arg("--registry")
            .arg(self.dir.path().join("facilities.yaml"))
            .args(["--seed", &seed.to_string(), "--files", &files.to_string()])
            .args(["--bad", &bad.to_string(), "--max-zip-bytes", "40000"])
            .output()
            .expect("run medlake gen");
        assert!(
            output.status.success(),
            "medlake gen failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprint!("e2e: {}", String::from_utf8_lossy(&output.stdout));
        Manifest::load(&self.manifest_path()).expect("read the manifest")
    }

    fn file_path(&self, file: &FileEntry) -> PathBuf {
        self.dir.path().join("data").join(&file.path)
    }

    /// Uploads `files` to their facility's landing folder, as careful senders
    /// do: under a temporary name, then renamed.
    async fn upload_ftp(&self, files: &[&FileEntry]) {
        let mut ftp = AsyncFtpStream::connect(("127.0.0.1", self.ftp.port))
            .await
            .expect("connect to the FTP server");
        ftp.login(&self.ftp.user, &self.ftp.password)
            .await
            .expect("FTP login");
        ftp.transfer_type(FileType::Binary).await.unwrap();
        for file in files {
            let bytes = std::fs::read(self.file_path(file)).unwrap();
            let target = format!("/{}/incoming/{}", file.facility_id, file.name);
            let part = format!("{target}.part");
            ftp.put_file(&part, &mut &bytes[..])
                .await
                .expect("FTP upload");
            ftp.rename(&part, &target).await.expect("FTP rename");
        }
        ftp.quit().await.unwrap();
    }

    /// Pushes `files` with `PUT /v1/files/{name}` and the facility's API key,
    /// retrying (the push API is idempotent) until each is accepted: the
    /// connector may be restarting or the broker away.
    async fn push_http(&self, files: &[&FileEntry]) {
        let client = reqwest::Client::new();
        for file in files {
            let bytes = std::fs::read(self.file_path(file)).unwrap();
            let key = self
                .secret(&format!("E2E_{}_KEY", file.facility_id))
                .to_string();
            let url = format!("http://127.0.0.1:{}/v1/files/{}", self.api_port, file.name);
            let deadline = Instant::now() + DELIVERY_TIMEOUT;
            loop {
                let reply = client
                    .put(&url)
                    .header("x-api-key", &key)
                    .body(bytes.clone())
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                let last = match reply {
                    Ok(r) if r.status().as_u16() == 202 => break,
                    Ok(r) if r.status().is_client_error() => {
                        let status = r.status();
                        panic!(
                            "PUT {} answered {status}: {}",
                            file.name,
                            r.text().await.unwrap_or_default()
                        )
                    }
                    Ok(r) => format!("{}", r.status()),
                    Err(e) => e.to_string(),
                };
                assert!(
                    Instant::now() < deadline,
                    "PUT {} not accepted after {DELIVERY_TIMEOUT:?}: {last}",
                    file.name
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }

    /// Delivers `files`: even positions by FTP, odd ones by HTTP.
    pub(crate) async fn deliver(&self, files: &[&FileEntry]) {
        let (ftp, http): (Vec<_>, Vec<_>) = files.iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let ftp: Vec<&FileEntry> = ftp.into_iter().map(|(_, f)| *f).collect();
        let http: Vec<&FileEntry> = http.into_iter().map(|(_, f)| *f).collect();
        tokio::join!(self.upload_ftp(&ftp), self.push_http(&http));
    }

    fn secret(&self, name: &str) -> &str {
        self.secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no secret {name}"))
    }

    /// Waits until the ledger lists every file, every table holds the rows
    /// the manifest expects and the dead letters are in; panics with the
    /// difference and the service logs after `timeout`. With
    /// `redeliveries`, at least the expected dead letters are awaited (a
    /// redelivered rejected file adds some; [`assert_lake_matches`] sorts
    /// them out).
    pub(crate) async fn wait_reconciled(
        &mut self,
        manifest: &Manifest,
        redeliveries: bool,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        let started = Instant::now();
        loop {
            self.assert_running();
            let last = match lake_progress(&self.lake(), manifest, redeliveries).await {
                Ok(None) => {
                    eprintln!("e2e: lake reconciled in {:.1?}", started.elapsed());
                    return;
                }
                Ok(Some(missing)) => missing,
                Err(e) => format!("reading the lake: {e}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "the lake does not reconcile with the manifest after {timeout:?}: {last}\n{}",
                    self.logs_tail()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Stops every service with SIGTERM; each must exit cleanly.
    pub(crate) fn stop(&mut self) {
        for service in SERVICES.iter().rev() {
            if let Some(mut child) = self.services.remove(service) {
                let clean = child.terminate(Duration::from_secs(30));
                assert!(
                    clean,
                    "{service} did not stop cleanly on SIGTERM:\n{}",
                    self.logs_tail()
                );
            }
        }
    }
}

/// Every row of `table` (none when it does not exist yet).
async fn try_rows(lake: &str, table: &str) -> Result<Vec<RecordBatch>, String> {
    if read::open(lake, table).await.is_err() {
        return Ok(Vec::new());
    }
    read::read_all(lake, table).await.map_err(|e| e.to_string())
}

/// Every row of `table`.
pub(crate) async fn rows(lake: &str, table: &str) -> Vec<RecordBatch> {
    try_rows(lake, table)
        .await
        .unwrap_or_else(|e| panic!("read {table}: {e}"))
}

/// What the lake still lacks compared with the manifest (`None`: nothing), read
/// and reconciled as `medlake tables summary --ledger-table` does. With
/// `redeliveries`, more ledger rows and dead letters than expected are fine: a
/// redelivered file adds its own ([`assert_lake_matches`] sorts them out).
async fn lake_progress(
    lake: &str,
    manifest: &Manifest,
    redeliveries: bool,
) -> Result<Option<String>, String> {
    let expected = manifest.expectation();
    let datasets: Vec<String> = expected.table_rows.keys().cloned().collect();
    let summary = inspect::summarize(lake, &datasets, None)
        .await
        .map_err(|e| e.to_string())?;
    let rec = inspect::reconcile(&expected, &summary);
    let more_is_fine = |expected: u64, actual: u64| redeliveries && actual > expected;
    let mut missing = Vec::new();
    if !rec.missing_files.is_empty() {
        missing.push(format!(
            "{} file(s) not in the ledger",
            rec.missing_files.len()
        ));
    }
    for (table, expected, rows) in &rec.table_mismatches {
        if !(table == FILES_TABLE && more_is_fine(*expected, *rows)) {
            missing.push(format!("{table}: {rows} rows of {expected}"));
        }
    }
    let letters: Vec<_> = rec
        .dead_letter_mismatches
        .iter()
        .filter(|(_, expected, actual)| !more_is_fine(*expected, *actual))
        .collect();
    if !letters.is_empty() {
        missing.push(format!(
            "dead letters (error code, expected, actual) {letters:?}"
        ));
    }
    Ok((!missing.is_empty()).then(|| missing.join(", ")))
}

/// The values of `columns` per row, rendered as text.
pub(crate) fn tuples(batches: &[RecordBatch], columns: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for batch in batches {
        let arrays: Vec<_> = columns
            .iter()
            .map(|c| {
                batch
                    .column_by_name(c)
                    .unwrap_or_else(|| panic!("no column {c}"))
            })
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                arrays
                    .iter()
                    .map(|a| array_value_to_string(a, row).unwrap())
                    .collect(),
            );
        }
    }
    out
}

/// One row of `_files`.
struct LedgerRow {
    file_id: String,
    status: String,
    records: BTreeMap<String, u64>,
}

fn ledger(batches: &[RecordBatch]) -> Vec<LedgerRow> {
    let text = |a: &dyn Array, i| array_value_to_string(a, i).unwrap();
    let mut out = Vec::new();
    for batch in batches {
        let ids = batch.column_by_name("file_id").expect("_files.file_id");
        let status = batch.column_by_name("status").expect("_files.status");
        let records = batch
            .column_by_name("records")
            .expect("_files.records")
            .as_map();
        for row in 0..batch.num_rows() {
            let mut counts = BTreeMap::new();
            if records.is_valid(row) {
                let entries = records.value(row);
                for i in 0..entries.len() {
                    let n = text(entries.column(1), i).parse().expect("a record count");
                    counts.insert(text(entries.column(0), i), n);
                }
            }
            out.push(LedgerRow {
                file_id: text(ids, row),
                status: text(status, row),
                records: counts,
            });
        }
    }
    out
}

/// Reads the whole lake and checks it against the manifest: rows per table,
/// no duplicate rows (lineage for append tables, primary keys for merge
/// tables), one settled ledger entry per file whose record counts add up to
/// the rows, dead letters per error code. With `redeliveries`, a rejected
/// file may have been delivered more than once (a connector killed between
/// the broker's ack and its own acknowledgement): its dead letters count once.
pub(crate) async fn assert_lake_matches(lake: &str, manifest: &Manifest, redeliveries: bool) {
    let known: BTreeSet<&str> = manifest.files.iter().map(|f| f.sha256.as_str()).collect();
    let datasets = dataset::load_dir(&repo_root().join("schemas")).expect("load data sets");

    // Tables: expected rows, nothing twice, nothing from an unknown file.
    let mut table_rows: BTreeMap<String, u64> = BTreeMap::new();
    for ds in &datasets {
        let Some(&expected) = manifest.totals.table_rows.get(&ds.name) else {
            continue;
        };
        let batches = rows(lake, &ds.name).await;
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(total as u64, expected, "rows of {}", ds.name);
        let key: Vec<&str> = match &ds.table {
            Table::Append { .. } => vec!["_file_id", "_entry", "_record_index"],
            Table::Merge { primary_key, .. } => primary_key.iter().map(String::as_str).collect(),
        };
        let keys = tuples(&batches, &key);
        let distinct: BTreeSet<&Vec<String>> = keys.iter().collect();
        assert_eq!(
            distinct.len(),
            total,
            "{} has duplicate rows by {key:?}",
            ds.name
        );
        for row in tuples(&batches, &["_file_id"]) {
            assert!(
                known.contains(row[0].as_str()),
                "{} has a row of an unknown file",
                ds.name
            );
        }
        if matches!(ds.table, Table::Append { .. }) {
            let records = manifest.totals.records.get(&ds.name).copied().unwrap_or(0);
            assert_eq!(
                total as u64, records,
                "append table {} holds every record",
                ds.name
            );
        }
        table_rows.insert(ds.name.clone(), total as u64);
    }

    // Ledger: each file settled once with the manifest's counts.
    let entries = ledger(&rows(lake, FILES_TABLE).await);
    let mut by_file: HashMap<&str, Vec<&LedgerRow>> = HashMap::new();
    for entry in &entries {
        assert!(
            known.contains(entry.file_id.as_str()),
            "ledger entry of an unknown file"
        );
        by_file.entry(&entry.file_id).or_default().push(entry);
    }
    let mut ledger_records: BTreeMap<String, u64> = BTreeMap::new();
    for file in &manifest.files {
        let list = by_file
            .get(file.sha256.as_str())
            .cloned()
            .unwrap_or_default();
        let expected = match (&file.file_rejected, file.rejects.is_empty()) {
            (Some(_), _) => "rejected",
            (None, true) => "processed",
            (None, false) => "partial",
        };
        let first: Vec<&str> = list
            .iter()
            .map(|e| e.status.as_str())
            .filter(|s| *s != "duplicate")
            .collect();
        if expected == "rejected" {
            let deliveries = if redeliveries { first.len().max(1) } else { 1 };
            assert_eq!(
                first,
                vec!["rejected"; deliveries],
                "ledger of {}",
                file.path
            );
        } else {
            assert_eq!(first, vec![expected], "ledger of {}", file.path);
        }
        if !redeliveries {
            assert_eq!(list.len(), 1, "{} has a duplicate ledger entry", file.path);
        }
        for entry in list.iter().filter(|e| e.status != "duplicate") {
            assert_eq!(
                entry.records, file.records,
                "ledger records of {}",
                file.path
            );
            for (ds, n) in &entry.records {
                *ledger_records.entry(ds.clone()).or_default() += n;
            }
        }
    }
    assert_eq!(
        ledger_records, manifest.totals.records,
        "ledger records per data set"
    );
    for ds in &datasets {
        if let (Table::Append { .. }, Some(rows)) = (&ds.table, table_rows.get(&ds.name)) {
            let ledger = ledger_records.get(&ds.name).copied().unwrap_or(0);
            assert_eq!(ledger, *rows, "ledger records == rows of {}", ds.name);
        }
    }

    // Dead letters: per error code as the manifest says; a redelivered
    // rejected file counts from its first delivery only.
    let letters = tuples(
        &rows(lake, DEAD_LETTERS_TABLE).await,
        &["file_id", "error_code", "origin_partition", "origin_offset"],
    );
    let mut first_delivery: HashMap<&str, (i64, i64)> = HashMap::new();
    for l in &letters {
        assert!(
            known.contains(l[0].as_str()),
            "dead letter of an unknown file"
        );
        let at = (l[2].parse().unwrap_or(-1), l[3].parse().unwrap_or(-1));
        let first = first_delivery.entry(&l[0]).or_insert(at);
        *first = (*first).min(at);
    }
    let mut by_code: BTreeMap<String, u64> = BTreeMap::new();
    for l in &letters {
        let at = (l[2].parse().unwrap_or(-1), l[3].parse().unwrap_or(-1));
        if !redeliveries || first_delivery[l[0].as_str()] == at {
            *by_code.entry(l[1].clone()).or_default() += 1;
        }
    }
    assert_eq!(
        by_code, manifest.totals.rejects,
        "dead letters by error code"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_ends_as_rows_or_a_dead_letter() {
    let started = Instant::now();
    let mut pipeline = Pipeline::new(brokers());
    for service in SERVICES {
        pipeline.start(service).await;
    }
    let manifest = pipeline.generate(24, 4, 7);
    assert!(manifest.totals.rejected_files > 0 && !manifest.totals.rejects.is_empty());
    let files: Vec<&FileEntry> = manifest.files.iter().collect();
    pipeline.deliver(&files).await;
    eprintln!("e2e: {} files delivered", manifest.files.len());

    pipeline
        .wait_reconciled(&manifest, false, Duration::from_secs(150))
        .await;
    assert_lake_matches(&pipeline.lake(), &manifest, false).await;
    eprintln!(
        "e2e: tables {:?}, dead letters {:?}",
        manifest.totals.table_rows, manifest.totals.rejects
    );

    // File-to-table latency: at least one observation per file with rows
    // (a file counts once per data set and commit), none longer than the run.
    let with_rows = manifest
        .files
        .iter()
        .filter(|f| f.file_rejected.is_none() && f.records.values().any(|n| *n > 0))
        .count();
    let count = pipeline
        .metric_sum("sink", "medlake_sink_file_to_table_seconds_count")
        .await;
    let sum = pipeline
        .metric_sum("sink", "medlake_sink_file_to_table_seconds_sum")
        .await;
    assert!(
        count >= with_rows as f64,
        "{count} file-to-table observations for {with_rows} files with rows"
    );
    let mean = sum / count;
    assert!(
        mean > 0.0 && mean < started.elapsed().as_secs_f64(),
        "mean file-to-table latency {mean} s"
    );
    eprintln!("e2e: file-to-table latency: {count} observations, mean {mean:.2} s");
    pipeline.stop();
    pipeline.assert_no_secret_in_logs();
    // A clean run (bad files are expected input, not errors) logs no ERROR
    // in the sink: creating its tables used to log one from the Delta kernel.
    let sink_log = std::fs::read_to_string(pipeline.dir.path().join("logs/sink.log")).unwrap();
    let errors: Vec<&str> = sink_log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "the sink logged errors: {errors:#?}");
    eprintln!(
        "e2e: every_file_ends_as_rows_or_a_dead_letter took {:.1?}",
        started.elapsed()
    );
}

/// The faults a production pipeline meets, one after another while files
/// keep arriving: each service is SIGKILLed once mid-run and started again,
/// then the broker restarts. Afterwards the lake must hold every row exactly
/// once (no loss, no duplicate), every file must be settled in the ledger,
/// and every dead letter must be there. The broker is this test's own, so
/// its restart disturbs no other test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_nothing_and_duplicate_nothing() {
    let started = Instant::now();
    let broker = PrivateBroker::start();
    let mut pipeline = Pipeline::new(broker.brokers());
    for service in SERVICES {
        pipeline.start(service).await;
    }
    let manifest = pipeline.generate(30, 4, 11);
    let files: Vec<&FileEntry> = manifest.files.iter().collect();
    // Six batches; after each of the first five, one fault while the batch
    // is still being fetched, parsed and written.
    for (i, batch) in files.chunks(files.len().div_ceil(6)).enumerate() {
        pipeline.deliver(batch).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        pipeline.assert_running();
        match SERVICES.get(i) {
            Some(service) => pipeline.crash_and_restart(service).await,
            None if i == SERVICES.len() => {
                let restart = Instant::now();
                tokio::task::block_in_place(|| broker.restart(false));
                eprintln!("e2e: broker restarted in {:.1?}", restart.elapsed());
            }
            None => {}
        }
    }
    eprintln!("e2e: {} files delivered under faults", manifest.files.len());

    pipeline
        .wait_reconciled(&manifest, true, Duration::from_secs(300))
        .await;
    assert_lake_matches(&pipeline.lake(), &manifest, true).await;
    pipeline.stop();
    pipeline.assert_no_secret_in_logs();
    eprintln!(
        "e2e: faults_lose_nothing_and_duplicate_nothing took {:.1?}",
        started.elapsed()
    );
}
