//! The facilities files are generated for: read from a registry (passwords from the
//! environment variables or files it names, exactly as the parser will read them), or
//! created and written out as a registry plus an env file holding their secrets.
//!
//! Each facility also gets traits drawn from the seed (its census system, date style,
//! line endings, archive protection) so files differ between facilities the way real
//! feeds do.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use medlake_common::facilities::Registry;
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::error::GenError;
use crate::fake;

/// How a facility protects its zips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    /// No password.
    None,
    /// Legacy ZipCrypto.
    Zipcrypto,
    /// WinZip AES-128.
    Aes128,
    /// WinZip AES-256.
    Aes256,
}

/// One sending facility as the generator sees it. `Debug` leaves the passwords out.
#[derive(Clone)]
pub struct GenFacility {
    /// Facility id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Zip passwords (several while one is being rotated); empty: unprotected zips.
    pub(crate) passwords: Vec<String>,
    /// How its zips are protected when it has a password.
    pub protection: Protection,
    /// Relative volume (bigger hospitals send more files).
    pub weight: u32,
    /// Sends the fixed-width census (mainframe) instead of the pipe-delimited one.
    pub census_fixed: bool,
    /// Writes US dates (`03/01/2024 08:15`) rather than ISO ones.
    pub us_dates: bool,
    /// Ends lines with CRLF.
    pub crlf: bool,
    /// Share of its single-file extracts sent as gzip rather than zip.
    pub gzip_share: f64,
}

impl std::fmt::Debug for GenFacility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenFacility")
            .field("id", &self.id)
            .field("passwords", &self.passwords.len())
            .field("protection", &self.protection)
            .finish_non_exhaustive()
    }
}

impl GenFacility {
    fn with_traits(id: String, name: String, passwords: Vec<String>, rng: &mut impl Rng) -> Self {
        let protection = if passwords.is_empty() {
            Protection::None
        } else {
            match rng.random_range(0..10) {
                0..=3 => Protection::Zipcrypto,
                4..=5 => Protection::Aes128,
                _ => Protection::Aes256,
            }
        };
        GenFacility {
            id,
            name,
            passwords,
            protection,
            weight: rng.random_range(1..=5),
            census_fixed: rng.random_bool(0.3),
            us_dates: rng.random_bool(0.3),
            crlf: rng.random_bool(0.4),
            gzip_share: if rng.random_bool(0.5) { 0.3 } else { 0.0 },
        }
    }

    /// The password a new archive uses: during a rotation either may be in use.
    pub(crate) fn password(&self, rng: &mut impl Rng) -> Option<&str> {
        match self.passwords.len() {
            0 => None,
            n => Some(self.passwords[rng.random_range(0..n)].as_str()),
        }
    }
}

/// Reads the first `limit` facilities (by id) of a registry, with their passwords.
pub fn from_registry(
    path: &Path,
    limit: Option<usize>,
    rng: &mut impl Rng,
) -> Result<Vec<GenFacility>, GenError> {
    let registry = Registry::load(path)?;
    let mut listed: Vec<_> = registry.iter().collect();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    if listed.is_empty() {
        return Err(GenError::NoFacilities {
            path: path.to_path_buf(),
        });
    }
    listed
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|f| {
            let passwords = f
                .zip_passwords()
                .map_err(|e| GenError::Password {
                    facility_id: f.id.clone(),
                    reason: e.to_string(),
                })?
                .iter()
                .map(|s| s.expose().to_string())
                .collect();
            let name = f.name.clone().unwrap_or_else(|| f.id.clone());
            Ok(GenFacility::with_traits(f.id.clone(), name, passwords, rng))
        })
        .collect()
}

/// Variable holding a created facility's zip password number `n` (1-based).
fn password_var(id: &str, n: usize) -> String {
    format!(
        "MEDLAKE_GEN_{id}_ZIP_PASSWORD{}",
        if n > 1 {
            format!("_{n}")
        } else {
            String::new()
        }
    )
}

/// Variable holding a created facility's API key.
fn api_key_var(id: &str) -> String {
    format!("MEDLAKE_GEN_{id}_API_KEY")
}

fn secret(rng: &mut impl Rng) -> String {
    rng.sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

/// Creates `count` facilities `F0001`…: every fifth sends unprotected zips, the first
/// is rotating its password (two passwords).
pub fn create(count: usize, rng: &mut impl Rng) -> Vec<GenFacility> {
    (1..=count)
        .map(|n| {
            let id = format!("F{n:04}");
            let passwords = match n {
                _ if n % 5 == 0 => Vec::new(),
                1 => vec![secret(rng), secret(rng)],
                _ => vec![secret(rng)],
            };
            let name = fake::facility_name(rng);
            GenFacility::with_traits(id, name, passwords, rng)
        })
        .collect()
}

/// What [`write_registry`] wrote.
#[derive(Debug, Clone)]
pub struct WrittenRegistry {
    /// The registry (secrets by environment variable).
    pub registry: PathBuf,
    /// `export NAME=value` lines for those variables (mode 600).
    pub env_file: PathBuf,
}

/// Writes created facilities as `facilities.yaml` and their secrets as `facilities.env`.
pub fn write_registry(
    dir: &Path,
    facilities: &[GenFacility],
    rng: &mut impl Rng,
) -> Result<WrittenRegistry, GenError> {
    let mut yaml = String::from(
        "# Facilities of generated data (medlake gen). Secrets are in facilities.env.\nfacilities:\n",
    );
    let mut env = String::from("# Secrets of facilities.yaml (generated test data only).\n");
    for f in facilities {
        let _ = writeln!(yaml, "  - id: {}\n    name: {:?}", f.id, f.name);
        if !f.passwords.is_empty() {
            let vars: Vec<String> = (1..=f.passwords.len())
                .map(|n| format!("{{ env: {} }}", password_var(&f.id, n)))
                .collect();
            let _ = writeln!(yaml, "    zip_passwords: [{}]", vars.join(", "));
        }
        let _ = writeln!(yaml, "    api_key: {{ env: {} }}", api_key_var(&f.id));
        for (n, password) in f.passwords.iter().enumerate() {
            let _ = writeln!(env, "export {}={password}", password_var(&f.id, n + 1));
        }
        let _ = writeln!(env, "export {}={}", api_key_var(&f.id), secret(rng));
    }
    let registry = dir.join("facilities.yaml");
    let env_file = dir.join("facilities.env");
    std::fs::write(&registry, yaml).map_err(|e| GenError::write(&registry, e))?;
    write_private(&env_file, env.as_bytes())?;
    Ok(WrittenRegistry { registry, env_file })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), GenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| GenError::write(path, e))?;
    file.write_all(bytes).map_err(|e| GenError::write(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn a_written_registry_loads_and_hides_passwords_from_debug() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let created = create(5, &mut rng);
        assert_eq!(created[0].passwords.len(), 2);
        assert!(created[4].passwords.is_empty());
        assert_eq!(created[4].protection, Protection::None);
        let written = write_registry(dir.path(), &created, &mut rng).unwrap();
        let registry = Registry::load(&written.registry).unwrap();
        assert_eq!(registry.iter().count(), 5);
        let env = std::fs::read_to_string(&written.env_file).unwrap();
        assert!(env.contains(&format!("={}", created[1].passwords[0])));
        let debug = format!("{:?}", created[1]);
        assert!(!debug.contains(&created[1].passwords[0]), "{debug}");
    }
}
