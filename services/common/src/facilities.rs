//! The facility registry (`config/facilities.yaml`): who sends data, the
//! secrets that open their files and authenticate them, and (for pulled
//! sources) the endpoints to poll. Secrets are referenced by environment
//! variable or file, never stored here.
//!
//! ```yaml
//! facilities:
//!   - id: F1001
//!     name: St. Example General
//!     zip_passwords: [{ env: F1001_ZIP_PASSWORD }]
//!     api_key: { file: /run/secrets/f1001-api-key }
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::endpoints::ftp::{FtpEndpoint, FtpEndpointError, LandingServer};
use crate::endpoints::http::{HttpEndpointError, HttpPullEndpoint};
use crate::endpoints::is_valid_id;
use crate::secret::{Secret, SecretError, SecretRef};

/// The registry file's top level.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    /// Every facility medlake accepts data from.
    #[serde(default)]
    facilities: Vec<Facility>,
    /// The company's landing FTP servers (a folder per facility).
    #[serde(default)]
    landing: Vec<LandingServer>,
}

/// One care facility.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facility {
    /// Stable facility id: the Kafka key of its raw files and the `_facility_id`
    /// of its records. Letters, digits, `-` and `_`.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Secrets holding the passwords its archives may use, tried in order
    /// (more than one while a password is being rotated).
    #[serde(default)]
    pub zip_passwords: Vec<SecretRef>,
    /// Secret holding the API key the facility pushes files with. Only its
    /// SHA-256 is kept in memory.
    #[serde(default)]
    pub api_key: Option<SecretRef>,
    /// Hex SHA-256 of the API key, when the key itself is not available here.
    #[serde(default)]
    pub api_key_sha256: Option<String>,
    /// FTP folders the ftp-connector polls for this facility's files: its
    /// folder on the landing server, or its own server. Endpoint ids are
    /// unique across the registry.
    #[serde(default)]
    pub ftp: Vec<FtpEndpoint>,
    /// HTTP APIs the api-connector polls for this facility's files. Endpoint
    /// ids are unique within the facility.
    #[serde(default)]
    pub http_pull: Vec<HttpPullEndpoint>,
}

/// The registry could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read facility registry {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("facility registry {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("facility registry {path}: facility {id:?} is listed twice")]
    Duplicate { path: PathBuf, id: String },
    #[error("facility registry {path}: facility id {id:?} must be letters, digits, '-' or '_'")]
    BadId { path: PathBuf, id: String },
    #[error("facility registry {path}: facility {id}: {field}: {source}")]
    Secret {
        path: PathBuf,
        id: String,
        field: &'static str,
        source: SecretError,
    },
    #[error("facility registry {path}: facility {facility_id}: {source}")]
    FtpEndpoint {
        path: PathBuf,
        facility_id: String,
        source: FtpEndpointError,
    },
    #[error("facility registry {path}: {source}")]
    Landing {
        path: PathBuf,
        source: FtpEndpointError,
    },
    #[error("facility registry {path}: ftp endpoint id {id:?} is used twice")]
    DuplicateFtpEndpoint { path: PathBuf, id: String },
    #[error("facility registry {path}: facility {facility_id}: {source}")]
    HttpEndpoint {
        path: PathBuf,
        facility_id: String,
        source: HttpEndpointError,
    },
    #[error(
        "facility registry {path}: facility {facility_id}: http_pull endpoint {endpoint_id} is listed twice"
    )]
    DuplicateHttpEndpoint {
        path: PathBuf,
        facility_id: String,
        endpoint_id: String,
    },
}

/// All facilities, by id.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    facilities: HashMap<String, Facility>,
    landing: Vec<LandingServer>,
}

impl Registry {
    /// Reads and validates the registry file. Secret references are checked
    /// for shape (the secrets themselves are read when used), and so is every
    /// pull endpoint, so a connector can poll what it gets without checking.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses registry YAML; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RegistryError> {
        let file: RegistryFile =
            serde_yaml::from_str(text).map_err(|source| RegistryError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let mut facilities = HashMap::new();
        let mut ftp_ids = HashSet::new();
        for server in &file.landing {
            server.validate().map_err(|source| RegistryError::Landing {
                path: path.to_path_buf(),
                source,
            })?;
            if !ftp_ids.insert(server.server.id.clone()) {
                return Err(RegistryError::DuplicateFtpEndpoint {
                    path: path.to_path_buf(),
                    id: server.server.id.clone(),
                });
            }
        }
        for facility in file.facilities {
            let id = facility.id.clone();
            if !is_valid_id(&id) {
                return Err(RegistryError::BadId {
                    path: path.to_path_buf(),
                    id,
                });
            }
            let secret_error = |field, source| RegistryError::Secret {
                path: path.to_path_buf(),
                id: id.clone(),
                field,
                source,
            };
            for secret in &facility.zip_passwords {
                secret
                    .validate()
                    .map_err(|e| secret_error("zip_passwords", e))?;
            }
            if let Some(key) = &facility.api_key {
                key.validate().map_err(|e| secret_error("api_key", e))?;
            }
            validate_endpoints(&facility, &mut ftp_ids, path)?;
            if facilities.insert(id.clone(), facility).is_some() {
                return Err(RegistryError::Duplicate {
                    path: path.to_path_buf(),
                    id,
                });
            }
        }
        Ok(Self {
            facilities,
            landing: file.landing,
        })
    }

    /// The landing servers, in registry order.
    pub fn landing(&self) -> &[LandingServer] {
        &self.landing
    }

    /// The facility with this id.
    pub fn get(&self, id: &str) -> Option<&Facility> {
        self.facilities.get(id)
    }

    /// Every facility, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Facility> {
        self.facilities.values()
    }
}

/// Checks a facility's pull endpoints: each definition, FTP endpoint ids
/// unique across the registry (`ftp_ids` holds those seen so far) and HTTP
/// endpoint ids unique within the facility.
fn validate_endpoints(
    facility: &Facility,
    ftp_ids: &mut HashSet<String>,
    path: &Path,
) -> Result<(), RegistryError> {
    for endpoint in &facility.ftp {
        endpoint
            .validate()
            .map_err(|source| RegistryError::FtpEndpoint {
                path: path.to_path_buf(),
                facility_id: facility.id.clone(),
                source,
            })?;
        if !ftp_ids.insert(endpoint.id.clone()) {
            return Err(RegistryError::DuplicateFtpEndpoint {
                path: path.to_path_buf(),
                id: endpoint.id.clone(),
            });
        }
    }
    let mut http_ids = HashSet::new();
    for endpoint in &facility.http_pull {
        endpoint
            .validate()
            .map_err(|source| RegistryError::HttpEndpoint {
                path: path.to_path_buf(),
                facility_id: facility.id.clone(),
                source,
            })?;
        if !http_ids.insert(endpoint.id.as_str()) {
            return Err(RegistryError::DuplicateHttpEndpoint {
                path: path.to_path_buf(),
                facility_id: facility.id.clone(),
                endpoint_id: endpoint.id.clone(),
            });
        }
    }
    Ok(())
}

impl Facility {
    /// Reads the archive passwords now, in the order configured.
    pub fn zip_passwords(&self) -> Result<Vec<Secret>, SecretError> {
        self.zip_passwords.iter().map(SecretRef::resolve).collect()
    }

    /// Hex SHA-256 of the facility's API key, read from its secret or taken
    /// from `api_key_sha256`. `None` when the facility cannot push by API.
    pub fn api_key_hash(&self) -> Result<Option<String>, SecretError> {
        if let Some(key) = &self.api_key {
            return Ok(Some(crate::raw_file::sha256_hex(
                key.resolve()?.expose().as_bytes(),
            )));
        }
        Ok(self.api_key_sha256.as_ref().map(|h| h.to_ascii_lowercase()))
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's large error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    const YAML: &str = r#"
facilities:
  - id: F1001
    name: St. Example General
    zip_passwords: [{ env: MEDLAKE_TEST_F1001_ZIP }]
    api_key_sha256: "ABCDEF"
  - id: F1002
"#;

    #[test]
    fn loads_and_looks_up_facilities() {
        let r = Registry::parse(YAML, Path::new("f.yaml")).unwrap();
        let f = r.get("F1001").unwrap();
        assert_eq!(f.name.as_deref(), Some("St. Example General"));
        assert_eq!(f.api_key_hash().unwrap().as_deref(), Some("abcdef"));
        assert!(r.get("F1002").unwrap().zip_passwords().unwrap().is_empty());
        assert!(r.get("F9999").is_none());
        assert_eq!(r.iter().count(), 2);
    }

    #[test]
    fn rejects_duplicates_bad_ids_and_unknown_keys() {
        let dup = "facilities:\n  - id: A\n  - id: A\n";
        assert!(matches!(
            Registry::parse(dup, Path::new("f")),
            Err(RegistryError::Duplicate { .. })
        ));
        let bad = "facilities:\n  - id: 'a/b'\n";
        assert!(matches!(
            Registry::parse(bad, Path::new("f")),
            Err(RegistryError::BadId { .. })
        ));
        let unknown = "facilities:\n  - id: A\n    passwrd: x\n";
        let err = Registry::parse(unknown, Path::new("f")).unwrap_err();
        assert!(err.to_string().contains("passwrd"), "{err}");
        let both = "facilities:\n  - id: A\n    api_key: { env: X, file: /y }\n";
        assert!(matches!(
            Registry::parse(both, Path::new("f")),
            Err(RegistryError::Secret { .. })
        ));
    }

    #[test]
    fn duplicate_and_invalid_endpoints_stop_the_start() {
        let dup = "facilities:\n  - id: A\n    ftp: [{ id: e, host: h, user: u, password: { env: P } }]\n  - id: B\n    ftp: [{ id: e, host: h, user: u, password: { env: P } }]\n";
        assert!(matches!(
            Registry::parse(dup, Path::new("f")),
            Err(RegistryError::DuplicateFtpEndpoint { .. })
        ));
        let bad = "facilities:\n  - id: A\n    ftp: [{ id: e, host: h, user: u, password: { env: P }, glob: '[' }]\n";
        let err = Registry::parse(bad, Path::new("f")).unwrap_err();
        assert!(err.to_string().contains("glob"), "{err}");
    }

    #[test]
    fn landing_servers_are_validated_and_share_the_ftp_endpoint_ids() {
        let server =
            "{ id: e, host: h, user: u, password: { env: P }, directory: '/{facility}/in' }";
        let ok = format!("landing: [{{ server: {server} }}]\nfacilities:\n  - id: A\n");
        let r = Registry::parse(&ok, Path::new("f")).unwrap();
        assert_eq!(r.landing().len(), 1);
        assert_eq!(r.landing()[0].folder_of("A").directory, "/A/in");
        let clash =
            format!("{ok}    ftp: [{{ id: e, host: h, user: u, password: {{ env: P }} }}]\n");
        assert!(matches!(
            Registry::parse(&clash, Path::new("f")),
            Err(RegistryError::DuplicateFtpEndpoint { .. })
        ));
        let bad = ok.replace("/{facility}/in", "/in");
        let err = Registry::parse(&bad, Path::new("f")).unwrap_err();
        assert!(err.to_string().contains("{facility}"), "{err}");
    }

    #[test]
    fn http_endpoints_are_validated_and_unique_within_their_facility() {
        let endpoint = "{ id: e, url: 'http://x/files' }";
        let same_id_elsewhere = format!(
            "facilities:\n  - id: A\n    http_pull: [{endpoint}]\n  - id: B\n    http_pull: [{endpoint}]\n"
        );
        let r = Registry::parse(&same_id_elsewhere, Path::new("f")).unwrap();
        assert_eq!(r.get("B").unwrap().http_pull.len(), 1);
        let dup = format!("facilities:\n  - id: A\n    http_pull: [{endpoint}, {endpoint}]\n");
        assert!(matches!(
            Registry::parse(&dup, Path::new("f")),
            Err(RegistryError::DuplicateHttpEndpoint { .. })
        ));
        let bad = "facilities:\n  - id: A\n    http_pull: [{ id: e, url: 'ftp://x' }]\n";
        let err = Registry::parse(bad, Path::new("f")).unwrap_err();
        assert!(
            matches!(
                &err,
                RegistryError::HttpEndpoint {
                    source: HttpEndpointError::BadUrl { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_example_registries_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for file in [
            "config/facilities.yaml",
            "config/demo-facilities.yaml",
            "deploy/compose/facilities.yaml",
        ] {
            let path = root.join(file);
            if let Err(err) = Registry::load(&path) {
                panic!("{err}");
            }
        }
    }

    #[test]
    fn api_key_is_kept_only_as_a_hash() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MEDLAKE_TEST_F1003_KEY", "k3y");
            let yaml = "facilities:\n  - id: F1003\n    api_key: { env: MEDLAKE_TEST_F1003_KEY }\n";
            let r = Registry::parse(yaml, Path::new("f")).unwrap();
            let hash = r.get("F1003").unwrap().api_key_hash().unwrap().unwrap();
            assert_eq!(hash, crate::raw_file::sha256_hex(b"k3y"));
            assert!(!format!("{r:?}").contains("k3y"));
            Ok(())
        });
    }
}
