//! HTTP pull endpoints: a customer's API that the api-connector polls for new
//! files, page by page behind a cursor.
//!
//! ```yaml
//! facilities:
//!   - id: F2001
//!     http_pull:
//!       - id: emr-export
//!         url: https://emr.example.com/api/exports
//!         poll_interval_ms: 60000
//!         cursor_param: since
//!         auth: { header_name: Authorization, value_prefix: "Bearer ", secret: { env: F2001_API_TOKEN } }
//! ```
//!
//! The response contract the endpoint must follow is documented on
//! [`HttpPullEndpoint`].

use serde::Deserialize;

use crate::secret::SecretRef;

/// One customer API to poll. A `GET <url>?<cursor_param>=<cursor>` (the
/// parameter is left out before the first page) answers a JSON page:
///
/// ```json
/// { "files": [ { "name": "a.zip", "content_base64": "UEsDB..." },
///              { "name": "b.zip", "url": "/downloads/b.zip" } ],
///   "next_cursor": "2024-05-01T10:00:00Z" }
/// ```
///
/// Each file carries its bytes inline (`content_base64`) or a `url` (absolute,
/// or relative to the page URL) fetched with the same auth header.
/// `next_cursor` is what to send next time to get the files after these;
/// `null` or missing means "nothing new, ask again with the same cursor". A
/// page with files is followed at once by the next one; an empty page ends the
/// round until the next poll.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpPullEndpoint {
    /// Endpoint id, unique within the facility: names the persisted cursor
    /// and the `endpoint` metric label. Letters, digits, `-` and `_`.
    pub id: String,
    /// The page URL (`http://` or `https://`), without the cursor parameter.
    pub url: String,
    /// Time between polling rounds, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Name of the query parameter carrying the cursor.
    #[serde(default = "default_cursor_param")]
    pub cursor_param: String,
    /// Header sent with every request to this endpoint (pages and downloads),
    /// its value read from a secret.
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// Whether this endpoint's pages and downloads may be on loopback,
    /// private, link-local or other internal addresses (an exporter inside
    /// the company's own network). Off: such URLs are refused, so a page
    /// cannot make the connector fetch internal services or cloud metadata.
    #[serde(default)]
    pub allow_private_network: bool,
}

/// An authentication header whose value is a secret.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpAuth {
    /// Header name, such as `Authorization` or `X-Api-Key`.
    #[serde(default = "default_header_name")]
    pub header_name: String,
    /// Text put before the secret in the header value, such as `"Bearer "`.
    #[serde(default)]
    pub value_prefix: String,
    /// Where the secret part of the header value is kept.
    pub secret: SecretRef,
}

fn default_poll_interval_ms() -> u64 {
    60_000
}

fn default_cursor_param() -> String {
    "since".to_string()
}

fn default_header_name() -> String {
    "Authorization".to_string()
}

/// What is wrong with an endpoint definition.
#[derive(Debug, thiserror::Error)]
pub enum HttpEndpointError {
    #[error("http_pull endpoint id {id:?} must be letters, digits, '-' or '_'")]
    BadId { id: String },
    #[error("http_pull endpoint {id}: url must be http:// or https://")]
    BadUrl { id: String },
    #[error("http_pull endpoint {id}: poll_interval_ms must be positive")]
    ZeroInterval { id: String },
    #[error("http_pull endpoint {id}: cursor_param must not be empty")]
    EmptyCursorParam { id: String },
    #[error("http_pull endpoint {id}: auth secret: {source}")]
    Secret {
        id: String,
        source: crate::secret::SecretError,
    },
}

impl HttpPullEndpoint {
    /// Checks the definition's shape (secrets are read when used).
    pub fn validate(&self) -> Result<(), HttpEndpointError> {
        let id = || self.id.clone();
        if !super::is_valid_id(&self.id) {
            return Err(HttpEndpointError::BadId { id: id() });
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(HttpEndpointError::BadUrl { id: id() });
        }
        if self.poll_interval_ms == 0 {
            return Err(HttpEndpointError::ZeroInterval { id: id() });
        }
        if self.cursor_param.is_empty() {
            return Err(HttpEndpointError::EmptyCursorParam { id: id() });
        }
        if let Some(auth) = &self.auth {
            auth.secret
                .validate()
                .map_err(|source| HttpEndpointError::Secret { id: id(), source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<HttpPullEndpoint, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    #[test]
    fn defaults_and_validation() {
        let e = parse("id: e1\nurl: http://localhost/files\n").unwrap();
        assert_eq!(e.poll_interval_ms, 60_000);
        assert_eq!(e.cursor_param, "since");
        assert!(e.auth.is_none());
        e.validate().unwrap();

        let auth = parse(
            "id: e1\nurl: https://x/y\nauth: { value_prefix: 'Bearer ', secret: { env: T } }\n",
        )
        .unwrap();
        let a = auth.auth.as_ref().unwrap();
        assert_eq!(a.header_name, "Authorization");
        assert_eq!(a.value_prefix, "Bearer ");
        auth.validate().unwrap();
    }

    #[test]
    fn rejects_bad_definitions() {
        let bad_id = parse("id: 'a/b'\nurl: http://x\n").unwrap();
        assert!(matches!(
            bad_id.validate(),
            Err(HttpEndpointError::BadId { .. })
        ));
        let ftp = parse("id: a\nurl: ftp://x\n").unwrap();
        assert!(matches!(
            ftp.validate(),
            Err(HttpEndpointError::BadUrl { .. })
        ));
        let zero = parse("id: a\nurl: http://x\npoll_interval_ms: 0\n").unwrap();
        assert!(matches!(
            zero.validate(),
            Err(HttpEndpointError::ZeroInterval { .. })
        ));
        let both = parse("id: a\nurl: http://x\nauth: { secret: { env: A, file: /b } }\n").unwrap();
        assert!(matches!(
            both.validate(),
            Err(HttpEndpointError::Secret { .. })
        ));
        let unknown = parse("id: a\nurl: http://x\nintervl: 3\n").unwrap_err();
        assert!(unknown.to_string().contains("intervl"), "{unknown}");
    }
}
