//! Pull endpoints of the facility registry: the folders and APIs the
//! connectors poll for new files.

pub mod ftp;
pub mod http;

/// Whether `id` may name an endpoint or a facility: non-empty, letters,
/// digits, `-` and `_` only (it becomes a metric label and a folder name).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
