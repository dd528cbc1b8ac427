//! Secrets (zip passwords, API keys, FTP passwords, the PII hashing key) live
//! in environment variables or mounted files, never in the repository or a
//! config file. A [`SecretRef`] names where a secret is; a [`Secret`] holds
//! it and never prints it.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a secret is kept: exactly one of `env` or `file`. A value written
/// in its place (`api_key: "…"`) is refused, and the error does not repeat
/// it (serde's own message would quote it).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SecretRef {
    /// Name of the environment variable that holds the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// Path of a file (e.g. a mounted Kubernetes Secret) whose content, less a
    /// trailing newline, is the secret.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// What a configuration error says when a secret is written inline.
pub const INLINE_SECRET: &str = "a secret must be a reference, `{ env: NAME }` or `{ file: PATH }`, \
     not a value written in the file (the value is not repeated here); \
     move it into an environment variable or a mounted file";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer};

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            env: Option<String>,
            #[serde(default)]
            file: Option<PathBuf>,
        }

        struct RefVisitor;

        impl<'de> Visitor<'de> for RefVisitor {
            type Value = SecretRef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`{ env: NAME }` or `{ file: PATH }`")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretRef, A::Error> {
                let fields = Fields::deserialize(MapAccessDeserializer::new(map))?;
                Ok(SecretRef {
                    env: fields.env,
                    file: fields.file,
                })
            }

            // Anything else is the secret itself, or part of it: refused
            // without being quoted.
            fn visit_str<E: Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_bytes<E: Error>(self, _: &[u8]) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_i64<E: Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_u64<E: Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_f64<E: Error>(self, _: f64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_bool<E: Error>(self, _: bool) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<SecretRef, A::Error> {
                Err(A::Error::custom(INLINE_SECRET))
            }
        }

        deserializer.deserialize_any(RefVisitor)
    }
}

/// A secret could not be read. Never carries the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("a secret reference needs exactly one of `env` or `file`")]
    Ambiguous,
    #[error("environment variable {name} is not set")]
    MissingEnv { name: String },
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret from {origin} is empty")]
    Empty { origin: String },
}

impl SecretRef {
    /// A reference to an environment variable.
    pub fn env(name: impl Into<String>) -> Self {
        Self {
            env: Some(name.into()),
            file: None,
        }
    }

    /// Reads the secret now.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let (value, origin) = match (&self.env, &self.file) {
            (Some(name), None) => (
                std::env::var(name).map_err(|_| SecretError::MissingEnv { name: name.clone() })?,
                format!("env {name}"),
            ),
            (None, Some(path)) => (
                std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?,
                format!("file {}", path.display()),
            ),
            _ => return Err(SecretError::Ambiguous),
        };
        let value = value.trim_end_matches(['\r', '\n']).to_string();
        if value.is_empty() {
            return Err(SecretError::Empty { origin });
        }
        Ok(Secret(value))
    }

    /// Checks the reference's shape without reading the secret.
    pub fn validate(&self) -> Result<(), SecretError> {
        match (&self.env, &self.file) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(SecretError::Ambiguous),
        }
    }
}

/// A secret value. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (tests, or a secret read by other means).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: pass it to the library that needs it, never to a
    /// log line or an error.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_value_written_inline_is_refused_without_being_repeated() {
        for yaml in [
            "\"hunter2-inline\"",
            "hunter2-inline",
            "12345678901",
            "[hunter2-inline]",
        ] {
            let error = serde_yaml::from_str::<SecretRef>(yaml)
                .unwrap_err()
                .to_string();
            assert!(error.contains("must be a reference"), "{error}");
            assert!(
                !error.contains("hunter2") && !error.contains("12345678901"),
                "{error}"
            );
        }
        let ok: SecretRef = serde_yaml::from_str("{ env: KEY }").unwrap();
        assert_eq!(ok, SecretRef::env("KEY"));
        let unknown = serde_yaml::from_str::<SecretRef>("{ value: x }").unwrap_err();
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
    }

    #[test]
    fn resolves_from_file_and_trims_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let r = SecretRef {
            env: None,
            file: Some(path),
        };
        assert_eq!(r.resolve().unwrap().expose(), "s3cret");
    }

    #[test]
    fn both_or_neither_is_an_error() {
        let r = SecretRef {
            env: None,
            file: None,
        };
        assert!(matches!(r.resolve(), Err(SecretError::Ambiguous)));
        let missing = SecretRef::env("MEDLAKE_TEST_SURELY_UNSET_VARIABLE");
        let err = missing.resolve().unwrap_err();
        assert!(
            err.to_string()
                .contains("MEDLAKE_TEST_SURELY_UNSET_VARIABLE")
        );
    }
}
