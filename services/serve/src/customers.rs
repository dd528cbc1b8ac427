//! The customer registry: who may read which facilities' rows.
//!
//! ```yaml
//! customers:
//!   - id: C001
//!     name: Maple Care Group
//!     facilities: [F001, F002]
//!     users:
//!       - name: ana@maple.example
//!         token: { env: C001_ANA_TOKEN }
//!       - name: reports-bot
//!         token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!   - id: analysts
//!     all_facilities: true
//!     # Larger queries than customers' (every facility at once).
//!     limits: { query_memory_bytes: 268435456, query_timeout_ms: 120000, max_queries: 1 }
//!     users:
//!       - name: data-team
//!         token: { file: /run/secrets/analyst-token }
//! ```
//!
//! Like the facility registry: secrets are named (`{ env: … }`,
//! `{ file: … }`) or given as SHA-256 digests, never written inline, and
//! only digests are held in memory. A presented token is compared with
//! every digest in constant time. A token two users share is refused at
//! load: its queries could not be told apart in the audit. A customer sees
//! its `facilities` only; `all_facilities` is the company analysts' role.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use medlake_common::raw_file::{sha256, sha256_from_hex};
use medlake_common::secret::{SecretError, SecretRef};
use serde::Deserialize;

/// The facilities a principal may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every facility (company analysts).
    All,
    /// These facilities only.
    Facilities(BTreeSet<String>),
}

impl Scope {
    /// A short, stable text of the scope, for cache keys and the audit.
    pub fn key(&self) -> String {
        match self {
            Scope::All => "*".to_string(),
            Scope::Facilities(ids) => ids.iter().cloned().collect::<Vec<_>>().join(","),
        }
    }
}

/// Limits of one customer's queries where they differ from `serve`'s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Working memory of one query, in bytes.
    #[serde(default)]
    pub query_memory_bytes: Option<usize>,
    /// Longest a query may run, in milliseconds.
    #[serde(default)]
    pub query_timeout_ms: Option<u64>,
    /// Queries the customer may run at once.
    #[serde(default)]
    pub max_queries: Option<usize>,
}

/// Who is asking: the customer, the user and what they may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub customer: String,
    pub user: String,
    pub scope: Arc<Scope>,
    /// The customer's own query limits, if it has any.
    pub limits: LimitOverrides,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    customers: Vec<CustomerDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerDef {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    facilities: Vec<String>,
    #[serde(default)]
    all_facilities: bool,
    #[serde(default)]
    limits: LimitOverrides,
    #[serde(default)]
    users: Vec<UserDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserDef {
    name: String,
    #[serde(default)]
    token: Option<SecretRef>,
    #[serde(default)]
    token_sha256: Option<String>,
}

/// Why the registry cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error("cannot read the customer registry {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the customer registry is not valid: {reason}")]
    Invalid { reason: String },
    #[error("customer {customer}, user {user}: token: {source}")]
    Secret {
        customer: String,
        user: String,
        source: SecretError,
    },
    /// One token for two users: the audit could not tell them apart.
    #[error(
        "users {} have the same token: give each user a token of its own",
        users.join(" and ")
    )]
    SharedToken { users: Vec<String> },
}

/// A customer: its name and its scope.
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub scope: Arc<Scope>,
    pub limits: LimitOverrides,
}

/// Customers and the digests of their users' tokens.
#[derive(Clone, Default)]
pub struct CustomerRegistry {
    customers: Vec<Customer>,
    /// (token digest, customer index, user name).
    tokens: Vec<([u8; 32], usize, String)>,
}

impl std::fmt::Debug for CustomerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerRegistry")
            .field("customers", &self.customers.len())
            .field("users", &self.tokens.len())
            .finish()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl CustomerRegistry {
    /// Reads and checks the registry at `path`, and reads every token.
    pub fn load(path: &Path) -> Result<Self, CustomerError> {
        let text = std::fs::read_to_string(path).map_err(|source| CustomerError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Like [`CustomerRegistry::load`], from the YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, CustomerError> {
        let invalid = |reason: String| CustomerError::Invalid { reason };
        // serde_yaml names the field of a bad secret, never its value.
        let file: RegistryFile = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut registry = Self::default();
        let mut seen = BTreeSet::new();
        let mut owners: BTreeMap<[u8; 32], Vec<String>> = BTreeMap::new();
        for def in file.customers {
            if !valid_id(&def.id) {
                return Err(invalid(format!(
                    "customer id {:?}: letters, digits, '-', '_' and '.' only",
                    def.id
                )));
            }
            if !seen.insert(def.id.clone()) {
                return Err(invalid(format!("customer {} appears twice", def.id)));
            }
            let scope = match (def.all_facilities, def.facilities.is_empty()) {
                (true, true) => Scope::All,
                (true, false) => {
                    return Err(invalid(format!(
                        "customer {}: all_facilities and a facilities list exclude each other",
                        def.id
                    )));
                }
                (false, true) => {
                    return Err(invalid(format!(
                        "customer {}: no facilities (and not all_facilities)",
                        def.id
                    )));
                }
                (false, false) => Scope::Facilities(def.facilities.iter().cloned().collect()),
            };
            if def.limits.query_memory_bytes == Some(0)
                || def.limits.query_timeout_ms == Some(0)
                || def.limits.max_queries == Some(0)
            {
                return Err(invalid(format!(
                    "customer {}: limits must be above zero",
                    def.id
                )));
            }
            let index = registry.customers.len();
            for user in def.users {
                let digest = user_digest(&def.id, &user)?;
                owners
                    .entry(digest)
                    .or_default()
                    .push(format!("{}/{}", def.id, user.name));
                registry.tokens.push((digest, index, user.name));
            }
            registry.customers.push(Customer {
                name: def.name.unwrap_or_else(|| def.id.clone()),
                id: def.id,
                scope: Arc::new(scope),
                limits: def.limits,
            });
        }
        if let Some(users) = owners.into_values().find(|users| users.len() > 1) {
            return Err(CustomerError::SharedToken { users });
        }
        Ok(registry)
    }

    /// The principal a token belongs to, if any. Every digest is compared,
    /// in constant time each, whatever matches.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        if token.is_empty() {
            return None;
        }
        let presented = sha256(token.as_bytes());
        let mut found = None;
        for (digest, customer, user) in &self.tokens {
            if constant_time_eq(digest, &presented) {
                found = Some((*customer, user));
            }
        }
        let (index, user) = found?;
        let customer = &self.customers[index];
        Some(Principal {
            customer: customer.id.clone(),
            user: user.clone(),
            scope: customer.scope.clone(),
            limits: customer.limits,
        })
    }

    /// The customers, in registry order.
    pub fn customers(&self) -> &[Customer] {
        &self.customers
    }
}

fn user_digest(customer: &str, user: &UserDef) -> Result<[u8; 32], CustomerError> {
    let invalid = |reason: String| CustomerError::Invalid { reason };
    match (&user.token, &user.token_sha256) {
        (Some(token), None) => {
            let secret = token.resolve().map_err(|source| CustomerError::Secret {
                customer: customer.to_string(),
                user: user.name.clone(),
                source,
            })?;
            if secret.expose().len() < 16 {
                return Err(invalid(format!(
                    "customer {customer}, user {}: a token needs at least 16 characters",
                    user.name
                )));
            }
            Ok(sha256(secret.expose().as_bytes()))
        }
        (None, Some(hex)) => sha256_from_hex(hex).ok_or_else(|| {
            invalid(format!(
                "customer {customer}, user {}: token_sha256 must be 64 hex digits",
                user.name
            ))
        }),
        _ => Err(invalid(format!(
            "customer {customer}, user {}: exactly one of token and token_sha256",
            user.name
        ))),
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use medlake_common::raw_file::sha256_hex;

    fn digest(token: &str) -> String {
        sha256_hex(token.as_bytes())
    }

    fn registry() -> CustomerRegistry {
        CustomerRegistry::from_yaml(&format!(
            "customers:\n  - id: C1\n    name: One\n    facilities: [F1, F2]\n    users:\n      \
             - {{ name: ana, token_sha256: {} }}\n  - id: analysts\n    all_facilities: true\n    \
             users:\n      - {{ name: team, token_sha256: {} }}\n",
            digest("token-of-ana-0123456789"),
            digest("token-of-the-team-0123456789")
        ))
        .unwrap()
    }

    #[test]
    fn a_customer_may_have_limits_of_its_own() {
        let r = CustomerRegistry::from_yaml(&format!(
            "customers:\n  - id: analysts\n    all_facilities: true\n    \
             limits: {{ query_memory_bytes: 1073741824, query_timeout_ms: 300000, max_queries: 1 }}\n    \
             users: [{{ name: team, token_sha256: {} }}]\n",
            digest("token-of-the-team-0123456789")
        ))
        .unwrap();
        let team = r.authenticate("token-of-the-team-0123456789").unwrap();
        assert_eq!(team.limits.query_memory_bytes, Some(1 << 30));
        assert_eq!(team.limits.query_timeout_ms, Some(300_000));
        assert_eq!(team.limits.max_queries, Some(1));
        let limits = crate::engine::QueryLimits::default().overridden(&team.limits);
        assert_eq!(limits.memory_bytes, 1 << 30);
        assert_eq!(limits.timeout, std::time::Duration::from_secs(300));
        assert_eq!(
            limits.max_rows,
            crate::engine::QueryLimits::default().max_rows
        );
        // Without limits of its own, a customer has the server's.
        let ana = registry().authenticate("token-of-ana-0123456789").unwrap();
        assert_eq!(ana.limits, LimitOverrides::default());
        let zero = "customers:\n  - id: x\n    all_facilities: true\n    limits: { query_timeout_ms: 0 }\n";
        assert!(CustomerRegistry::from_yaml(zero).is_err());
    }

    #[test]
    fn a_token_names_its_user_customer_and_scope() {
        let r = registry();
        let ana = r.authenticate("token-of-ana-0123456789").unwrap();
        assert_eq!((ana.customer.as_str(), ana.user.as_str()), ("C1", "ana"));
        assert_eq!(
            *ana.scope,
            Scope::Facilities(["F1".to_string(), "F2".to_string()].into())
        );
        assert_eq!(ana.scope.key(), "F1,F2");
        let team = r.authenticate("token-of-the-team-0123456789").unwrap();
        assert_eq!(*team.scope, Scope::All);
        assert!(r.authenticate("token-of-ana-012345678").is_none());
        assert!(r.authenticate("").is_none());
        assert_eq!(r.customers()[0].name, "One");
    }

    #[test]
    fn bad_registries_are_refused_with_the_reason() {
        let refused = |yaml: &str| CustomerRegistry::from_yaml(yaml).unwrap_err().to_string();
        let t = digest("a-token-of-some-length");
        assert!(refused("customers:\n  - id: C1\n    users: []\n").contains("no facilities"));
        assert!(
            refused("customers:\n  - id: C1\n    all_facilities: true\n    facilities: [F1]\n")
                .contains("exclude each other")
        );
        assert!(
            refused(
                "customers:\n  - id: C1\n    facilities: [F1]\n  - id: C1\n    facilities: [F2]\n"
            )
            .contains("twice")
        );
        assert!(refused("customers:\n  - id: 'C 1'\n    facilities: [F1]\n").contains("letters"));
        let shared = format!(
            "customers:\n  - id: C1\n    facilities: [F1]\n    users: [{{ name: a, token_sha256: {t} }}]\n  \
             - id: C2\n    facilities: [F2]\n    users: [{{ name: b, token_sha256: {t} }}]\n"
        );
        let error = refused(&shared);
        assert!(error.contains("C1/a and C2/b"), "{error}");
        let neither = "customers:\n  - id: C1\n    facilities: [F1]\n    users: [{ name: a }]\n";
        assert!(refused(neither).contains("exactly one"));
        let short = "customers:\n  - id: C1\n    facilities: [F1]\n    users: [{ name: a, token_sha256: abc }]\n";
        assert!(refused(short).contains("64 hex"));
    }

    #[test]
    fn the_example_registry_loads_and_its_demo_tokens_work() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/customers.yaml");
        let r = CustomerRegistry::load(Path::new(path)).unwrap();
        let c001 = r.authenticate("c001-demo-token-1234").unwrap();
        assert_eq!(c001.scope.key(), "F1001,F1002");
        assert_eq!(
            r.authenticate("c002-demo-token-1234").unwrap().customer,
            "C002"
        );
        assert_eq!(
            *r.authenticate("analyst-demo-token-1234").unwrap().scope,
            Scope::All
        );
    }

    #[test]
    fn an_inline_token_is_refused_without_being_repeated() {
        let yaml = "customers:\n  - id: C1\n    facilities: [F1]\n    users:\n      \
                    - { name: a, token: hunter2-hunter2-hunter2 }\n";
        let error = CustomerRegistry::from_yaml(yaml).unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
