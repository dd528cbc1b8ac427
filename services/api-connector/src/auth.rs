//! Push authentication: an API key identifies exactly one facility.
//!
//! Only SHA-256 digests of the keys are held in memory, built once from the
//! registry's [`Facility::api_key_hash`]. A presented key is hashed and
//! compared with every known digest in constant time (no early exit, no
//! hash-map probe keyed by attacker input), so response timing says nothing
//! about how close a guess was.

use axum::http::HeaderMap;
use medlake_common::facilities::{Facility, Registry};
use medlake_common::raw_file::{sha256, sha256_from_hex};

/// Header carrying the key when `Authorization: Bearer` is not used.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Digests of the facilities' API keys.
#[derive(Clone, Default)]
pub struct KeyIndex {
    entries: Vec<([u8; 32], String)>,
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndex")
            .field("facilities", &self.entries.len())
            .finish()
    }
}

/// A facility's key could not be turned into a digest.
#[derive(Debug, thiserror::Error)]
pub enum KeyIndexError {
    #[error("facility {facility}: api key: {source}")]
    Secret {
        facility: String,
        source: medlake_common::secret::SecretError,
    },
    #[error("facility {facility}: api_key_sha256 must be 64 hex digits")]
    BadDigest { facility: String },
    /// Two facilities with one key: a push with it could land under either.
    #[error(
        "facilities {} have the same API key: a file pushed with it would land under one of them at random; give each facility a key of its own",
        facilities.join(" and ")
    )]
    SharedKey { facilities: Vec<String> },
}

impl KeyIndex {
    /// Digests of every facility that has a key. A facility whose secret
    /// cannot be read is reported in `skipped` and cannot push; the others
    /// still can. Two facilities with the same key are refused whole
    /// ([`KeyIndexError::SharedKey`]): nothing could tell their files apart.
    pub fn from_registry(registry: &Registry) -> Result<(Self, Vec<KeyIndexError>), KeyIndexError> {
        let mut index = Self::default();
        let mut skipped = Vec::new();
        for facility in registry.iter() {
            match digest_of(facility) {
                Ok(Some(digest)) => index.entries.push((digest, facility.id.clone())),
                Ok(None) => {}
                Err(error) => skipped.push(error),
            }
        }
        let mut by_digest = index.entries.clone();
        by_digest.sort();
        for pair in by_digest.windows(2) {
            if pair[0].0 == pair[1].0 {
                let facilities = by_digest
                    .iter()
                    .filter(|(digest, _)| *digest == pair[0].0)
                    .map(|(_, facility)| facility.clone())
                    .collect();
                return Err(KeyIndexError::SharedKey { facilities });
            }
        }
        Ok((index, skipped))
    }

    /// The facility whose key this is.
    pub fn facility_of(&self, key: &str) -> Option<&str> {
        let presented = sha256(key.as_bytes());
        let mut found = None;
        for (digest, facility) in &self.entries {
            if constant_time_eq(digest, &presented) {
                found = Some(facility.as_str());
            }
        }
        found
    }

    /// Number of facilities that can push.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no facility can push.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn digest_of(facility: &Facility) -> Result<Option<[u8; 32]>, KeyIndexError> {
    let hex_digest = facility
        .api_key_hash()
        .map_err(|source| KeyIndexError::Secret {
            facility: facility.id.clone(),
            source,
        })?;
    let Some(hex_digest) = hex_digest else {
        return Ok(None);
    };
    let digest = sha256_from_hex(&hex_digest).ok_or_else(|| KeyIndexError::BadDigest {
        facility: facility.id.clone(),
    })?;
    Ok(Some(digest))
}

/// Equality whose running time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get(API_KEY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::http::HeaderValue;
    use medlake_common::raw_file::sha256_hex;

    use super::*;

    fn registry() -> Registry {
        let yaml = format!(
            "facilities:\n  - id: A\n    api_key_sha256: {}\n  - id: B\n    api_key_sha256: {}\n  - id: C\n  - id: D\n    api_key_sha256: nothex\n  - id: E\n    api_key: {{ env: MEDLAKE_TEST_SURELY_UNSET_KEY }}\n",
            sha256_hex(b"key-a").to_uppercase(),
            sha256_hex(b"key-b"),
        );
        Registry::parse(&yaml, Path::new("f.yaml")).unwrap()
    }

    #[test]
    fn keys_map_to_their_facility_only() {
        let (index, skipped) = KeyIndex::from_registry(&registry()).unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(index.facility_of("key-a"), Some("A"));
        assert_eq!(index.facility_of("key-b"), Some("B"));
        assert_eq!(index.facility_of("key-c"), None);
        assert_eq!(index.facility_of(""), None);
        let mut reasons: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        reasons.sort();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].starts_with("facility D"), "{reasons:?}");
        assert!(
            reasons[1].contains("MEDLAKE_TEST_SURELY_UNSET_KEY"),
            "{reasons:?}"
        );
    }

    #[test]
    fn two_facilities_with_one_key_are_refused_naming_them_not_the_key() {
        let yaml = format!(
            "facilities:\n  - id: A\n    api_key_sha256: {}\n  - id: B\n    api_key_sha256: {}\n  - id: C\n    api_key_sha256: {}\n",
            sha256_hex(b"shared-key"),
            sha256_hex(b"key-b"),
            sha256_hex(b"shared-key").to_uppercase(),
        );
        let registry = Registry::parse(&yaml, Path::new("f.yaml")).unwrap();
        let error = KeyIndex::from_registry(&registry).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("facilities A and C have the same API key"),
            "{text}"
        );
        assert!(!text.contains(&sha256_hex(b"shared-key")), "{text}");
    }

    #[test]
    fn debug_shows_no_digest() {
        let (index, _) = KeyIndex::from_registry(&registry()).unwrap();
        let printed = format!("{index:?}");
        assert_eq!(printed, "KeyIndex { facilities: 2 }");
    }

    #[test]
    fn constant_time_eq_compares_all_bytes() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!constant_time_eq(&a, &b));
    }

    #[test]
    fn key_comes_from_bearer_or_api_key_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(API_KEY_HEADER, HeaderValue::from_static(" k2 "));
        assert_eq!(presented_key(&h), Some("k2"));
        h.insert("authorization", HeaderValue::from_static("Bearer k1"));
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&h), Some("k2"));
        let mut empty = HeaderMap::new();
        empty.insert("authorization", HeaderValue::from_static("bearer   "));
        assert_eq!(presented_key(&empty), None);
    }
}
