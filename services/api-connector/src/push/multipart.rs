//! Multipart uploads (`POST /v1/files`): the one part with a file name is
//! the file; other parts (form fields) are skipped.
//!
//! The body is watched on its way to the parser ([`multer`]) by a
//! [`PartScanner`]: the parser buffers a part's headers until their end,
//! and searches that buffer again with every chunk, so a part header of
//! 32 MiB cost seconds of CPU and 32 MiB of memory. The scanner finds the
//! same delimiters in one pass and fails the body once the headers of a
//! part (its delimiter line and header fields), or the preamble before the
//! first part, pass [`MAX_PART_HEADER_BYTES`], or the whole form passes
//! its limit.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use memchr::memmem;

use super::body::{append, validate_file_name};
use super::reply::ApiError;
use super::slots::UploadSlot;

/// Most bytes of one part's headers (or of the preamble).
pub const MAX_PART_HEADER_BYTES: usize = 16 * 1024;

/// Room for boundaries, part headers and form fields above the file.
const MULTIPART_OVERHEAD_BYTES: usize = 64 * 1024;

/// RFC 2046 allows boundaries of 1 to 70 characters.
const MAX_BOUNDARY_BYTES: usize = 70;

/// Why the body stopped on its way to the parser.
#[derive(Debug, thiserror::Error)]
enum FormStreamError {
    #[error("a part's headers are larger than {MAX_PART_HEADER_BYTES} bytes")]
    PartHeaderTooLarge,
    #[error("the form is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body could not be read: {source}")]
    Read { source: axum::Error },
}

/// Reads the file part of a multipart form, charging its bytes to `slot`.
/// Returns the part's file name and bytes.
pub async fn read_file(
    headers: &HeaderMap,
    body: Body,
    max_body_bytes: usize,
    slot: &mut UploadSlot,
) -> Result<(String, Bytes), ApiError> {
    let boundary = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| bad_request("expected a multipart/form-data body"))?;
    if boundary.len() > MAX_BOUNDARY_BYTES {
        return Err(bad_request(
            "the multipart boundary is longer than 70 characters",
        ));
    }
    let mut scanner = PartScanner::new(
        &boundary,
        max_body_bytes.saturating_add(MULTIPART_OVERHEAD_BYTES),
    );
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(|source| FormStreamError::Read { source })?;
        scanner.feed(&chunk)?;
        Ok::<_, FormStreamError>(chunk)
    });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut file: Option<(String, Bytes)> = None;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| form_error(&e, max_body_bytes))?
    {
        let Some(name) = field.file_name().map(str::to_string) else {
            continue;
        };
        if file.is_some() {
            return Err(bad_request("send one file per request"));
        }
        validate_file_name(&name).map_err(|reason| ApiError::BadName { reason })?;
        let mut buffer = BytesMut::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| form_error(&e, max_body_bytes))?
        {
            append(&mut buffer, &chunk, max_body_bytes, None, slot).map_err(ApiError::from)?;
        }
        file = Some((name, buffer.freeze()));
    }
    file.ok_or_else(|| bad_request("the form has no file part (a part with a filename)"))
}

fn bad_request(message: &str) -> ApiError {
    ApiError::BadRequest {
        message: message.to_string(),
    }
}

fn form_error(error: &multer::Error, max_body_bytes: usize) -> ApiError {
    let stopped = match error {
        multer::Error::StreamReadFailed(source) => source.downcast_ref::<FormStreamError>(),
        _ => None,
    };
    match stopped {
        Some(FormStreamError::PartHeaderTooLarge) => ApiError::PartHeaderTooLarge {
            limit: MAX_PART_HEADER_BYTES,
        },
        // The whole form passed max_body_bytes plus the multipart overhead.
        Some(FormStreamError::TooLarge { .. }) => ApiError::TooLarge {
            limit: max_body_bytes,
        },
        Some(FormStreamError::Read { .. }) => bad_request("the request body could not be read"),
        None => bad_request("the multipart body is malformed"),
    }
}

/// Where the scanner is in the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first `--boundary`.
    Preamble,
    /// The rest of a delimiter line, up to its CRLF.
    Line,
    /// A part's header fields, up to the empty line.
    Headers,
    /// A part's content, up to `CRLF--boundary`.
    Body,
}

/// Follows a multipart body chunk by chunk (each byte looked at about
/// once) and counts the bytes of every part's headers.
#[derive(Debug)]
struct PartScanner {
    /// `--boundary`: the first delimiter, which needs no CRLF before it.
    first: Vec<u8>,
    /// `CRLF--boundary`: every later delimiter.
    delimiter: Vec<u8>,
    stage: Stage,
    /// The end of the previous chunk, shorter than the pattern searched:
    /// a pattern may straddle two chunks.
    carry: Vec<u8>,
    /// Bytes of the current preamble, or delimiter line and headers.
    section: usize,
    total: usize,
    max_total: usize,
}

impl PartScanner {
    fn new(boundary: &str, max_total: usize) -> Self {
        let first = format!("--{boundary}").into_bytes();
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        Self {
            first,
            delimiter,
            stage: Stage::Preamble,
            carry: Vec::new(),
            section: 0,
            total: 0,
            max_total,
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), FormStreamError> {
        self.total += chunk.len();
        if self.total > self.max_total {
            return Err(FormStreamError::TooLarge {
                limit: self.max_total,
            });
        }
        let mut data = chunk;
        loop {
            let pattern: &[u8] = match self.stage {
                Stage::Preamble => &self.first,
                Stage::Line => b"\r\n",
                Stage::Headers => b"\r\n\r\n",
                Stage::Body => &self.delimiter,
            };
            let keep = pattern.len() - 1;
            let carry = std::mem::take(&mut self.carry);
            let found = find_end(&carry, data, pattern);
            let counted = found.unwrap_or(data.len());
            if self.stage != Stage::Body {
                self.section += counted;
                if self.section > MAX_PART_HEADER_BYTES {
                    return Err(FormStreamError::PartHeaderTooLarge);
                }
            }
            let Some(end) = found else {
                self.carry = tail(carry, data, keep);
                return Ok(());
            };
            data = &data[end..];
            self.stage = match self.stage {
                Stage::Preamble | Stage::Body => {
                    self.section = 0;
                    Stage::Line
                }
                Stage::Line => Stage::Headers,
                Stage::Headers => Stage::Body,
            };
        }
    }
}

/// The end of the first `pattern` in `carry` followed by `data`, as an
/// offset into `data` (`carry` is shorter than `pattern`, so a match always
/// ends in `data`).
fn find_end(carry: &[u8], data: &[u8], pattern: &[u8]) -> Option<usize> {
    if !carry.is_empty() {
        let head = &data[..data.len().min(pattern.len() - 1)];
        let junction = [carry, head].concat();
        if let Some(i) = memmem::find(&junction, pattern) {
            return Some(i + pattern.len() - carry.len());
        }
    }
    memmem::find(data, pattern).map(|i| i + pattern.len())
}

/// The last `keep` bytes of `carry` followed by `data`.
fn tail(mut carry: Vec<u8>, data: &[u8], keep: usize) -> Vec<u8> {
    if data.len() >= keep {
        return data[data.len() - keep..].to_vec();
    }
    carry.extend_from_slice(data);
    let cut = carry.len().saturating_sub(keep);
    carry.drain(..cut);
    carry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
        let mut body = b"preamble\r\n".to_vec();
        for (headers, _, content) in parts {
            body.extend_from_slice(b"--xyz\r\n");
            body.extend_from_slice(headers.as_bytes());
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--xyz--\r\n");
        body
    }

    /// Feeds `body` in chunks of `size` bytes.
    fn scan(body: &[u8], size: usize) -> Result<Stage, FormStreamError> {
        let mut scanner = PartScanner::new("xyz", 1 << 30);
        for chunk in body.chunks(size) {
            scanner.feed(chunk)?;
        }
        Ok(scanner.stage)
    }

    #[test]
    fn follows_a_form_whatever_the_chunk_size() {
        // Content that looks like headers and almost like a delimiter.
        let content = b"a\r\n\r\nb\r\n--xy\r\n-";
        let body = form(&[
            ("Content-Disposition: form-data; name=\"note\"", "", b"hi"),
            (
                "Content-Disposition: form-data; name=\"file\"; filename=\"a.zip\"",
                "",
                content,
            ),
        ]);
        for size in [1, 2, 3, 5, 7, 64, body.len()] {
            // Ends on the close delimiter's line.
            assert_eq!(
                scan(&body, size).unwrap(),
                Stage::Headers,
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn large_content_passes_and_large_part_headers_do_not() {
        let big = vec![b'x'; 1 << 20];
        let body = form(&[(
            "Content-Disposition: form-data; name=\"f\"; filename=\"a\"",
            "",
            &big,
        )]);
        assert!(scan(&body, 8192).is_ok());

        let header = format!("X-Pad: {}", "a".repeat(MAX_PART_HEADER_BYTES));
        let body = form(&[(header.as_str(), "", b"x")]);
        for size in [1, 100, 8192, body.len()] {
            let err = scan(&body, size).unwrap_err();
            assert!(
                matches!(err, FormStreamError::PartHeaderTooLarge),
                "{size}: {err}"
            );
        }
        // Just under the limit is fine.
        let header = format!("X-Pad: {}", "a".repeat(MAX_PART_HEADER_BYTES - 100));
        assert!(scan(&form(&[(header.as_str(), "", b"x")]), 1000).is_ok());
    }

    #[test]
    fn the_delimiter_line_and_the_preamble_count_as_headers() {
        // "--xyz" then an empty line then 32 KiB with no empty line: the
        // parser reads header fields after the delimiter line's CRLF.
        let mut body = b"--xyz\r\n\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'h', 32 * 1024));
        assert!(matches!(
            scan(&body, 4096),
            Err(FormStreamError::PartHeaderTooLarge)
        ));
        // A delimiter line that never ends.
        let mut body = b"--xyz".to_vec();
        body.extend(std::iter::repeat_n(b' ', 32 * 1024));
        assert!(matches!(
            scan(&body, 4096),
            Err(FormStreamError::PartHeaderTooLarge)
        ));
        // A preamble without a boundary.
        let body = vec![b'p'; 32 * 1024];
        assert!(matches!(
            scan(&body, 4096),
            Err(FormStreamError::PartHeaderTooLarge)
        ));
    }

    #[test]
    fn the_whole_form_is_limited() {
        let mut scanner = PartScanner::new("xyz", 10);
        scanner.feed(b"--xyz\r\n").unwrap();
        assert!(matches!(
            scanner.feed(b"abcd"),
            Err(FormStreamError::TooLarge { limit: 10 })
        ));
    }
}
