//! The page contract of an HTTP pull endpoint (documented on
//! [`medlake_common::endpoints::http::HttpPullEndpoint`]):
//! `{"files": [{"name", "url" | "content_base64"}], "next_cursor"}`.

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

/// One page of an endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Page {
    /// The files of this page, in order.
    #[serde(default)]
    pub files: Vec<PageFile>,
    /// Cursor for the files after these; `None` keeps the current one.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// One file of a page: its bytes inline, or where to download them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PageFile {
    /// The file's name at the source.
    pub name: String,
    /// Download URL, absolute or relative to the page URL.
    #[serde(default)]
    pub url: Option<String>,
    /// The bytes, base64 (standard alphabet, padded).
    #[serde(default)]
    pub content_base64: Option<String>,
}

/// Where a file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Inline(Bytes),
    Download(url::Url),
}

/// A page or one of its files breaks the contract. Never carries content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("the page is not valid JSON of the expected shape (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("file {index} of the page has neither or both of `url` and `content_base64`")]
    NoContent { index: usize },
    #[error("file {index} of the page has invalid base64 content")]
    BadBase64 { index: usize },
    #[error("file {index} of the page has an invalid url")]
    BadUrl { index: usize },
    #[error("file {index} of the page has an invalid name")]
    BadName { index: usize },
}

impl Page {
    /// Parses a page body.
    pub fn parse(body: &[u8]) -> Result<Self, PageError> {
        serde_json::from_slice(body).map_err(|e| PageError::NotJson {
            line: e.line(),
            column: e.column(),
        })
    }
}

impl PageFile {
    /// Where this file's bytes are; `index` is its position (for errors).
    pub fn content(&self, index: usize, page_url: &url::Url) -> Result<Content, PageError> {
        if crate::push::validate_file_name(&self.name).is_err() {
            return Err(PageError::BadName { index });
        }
        match (&self.url, &self.content_base64) {
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map(|bytes| Content::Inline(Bytes::from(bytes)))
                .map_err(|_| PageError::BadBase64 { index }),
            (Some(url), None) => page_url
                .join(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .map(Content::Download)
                .ok_or(PageError::BadUrl { index }),
            _ => Err(PageError::NoContent { index }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_url() -> url::Url {
        url::Url::parse("http://api.example/v2/exports?since=5").unwrap()
    }

    #[test]
    fn parses_pages_with_inline_and_linked_files() {
        let page = Page::parse(
            br#"{"files":[{"name":"a.csv","content_base64":"aGVsbG8="},
                          {"name":"b.zip","url":"/dl/b.zip"},
                          {"name":"c.zip","url":"https://cdn.example/c"}],
                 "next_cursor":"7"}"#,
        )
        .unwrap();
        assert_eq!(page.next_cursor.as_deref(), Some("7"));
        let contents: Vec<_> = page
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| f.content(i, &page_url()).unwrap())
            .collect();
        assert_eq!(contents[0], Content::Inline(Bytes::from_static(b"hello")));
        assert_eq!(
            contents[1],
            Content::Download(url::Url::parse("http://api.example/dl/b.zip").unwrap())
        );
        assert_eq!(
            contents[2],
            Content::Download(url::Url::parse("https://cdn.example/c").unwrap())
        );
    }

    #[test]
    fn empty_page_and_missing_cursor() {
        let page = Page::parse(b"{}").unwrap();
        assert!(page.files.is_empty());
        assert_eq!(page.next_cursor, None);
        let page = Page::parse(br#"{"files":[],"next_cursor":null,"extra":1}"#).unwrap();
        assert!(page.files.is_empty());
    }

    #[test]
    fn contract_violations_are_errors_without_content() {
        assert!(matches!(
            Page::parse(b"<html>"),
            Err(PageError::NotJson { .. })
        ));
        let file = |name: &str, url: Option<&str>, b64: Option<&str>| PageFile {
            name: name.into(),
            url: url.map(Into::into),
            content_base64: b64.map(Into::into),
        };
        let u = page_url();
        assert_eq!(
            file("a", None, None).content(3, &u),
            Err(PageError::NoContent { index: 3 })
        );
        assert_eq!(
            file("a", Some("/x"), Some("aA==")).content(0, &u),
            Err(PageError::NoContent { index: 0 })
        );
        assert_eq!(
            file("a", None, Some("***secret-looking***")).content(1, &u),
            Err(PageError::BadBase64 { index: 1 })
        );
        assert_eq!(
            file("a", Some("ftp://x/y"), None).content(2, &u),
            Err(PageError::BadUrl { index: 2 })
        );
        assert_eq!(
            file("../a", Some("/x"), None).content(4, &u),
            Err(PageError::BadName { index: 4 })
        );
    }
}
