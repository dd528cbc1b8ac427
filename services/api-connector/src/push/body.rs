//! Reading a pushed file: the body is streamed into memory chunk by chunk
//! and the request is refused as soon as it passes the limit, so an
//! oversized or endless upload never costs more than `limit` bytes.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

/// Longest accepted file name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The body could not be read within its limit.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body could not be read: {source}")]
    Read { source: axum::Error },
}

/// Reads `body` into memory, failing once it passes `limit` bytes. A
/// `Content-Length` above the limit is refused before reading anything.
pub async fn read_limited(
    body: Body,
    content_length: Option<u64>,
    limit: usize,
) -> Result<Bytes, BodyError> {
    if content_length.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let capacity = content_length.map_or(0, |n| n as usize);
    let mut buffer = BytesMut::with_capacity(capacity);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| BodyError::Read { source })?;
        if buffer.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Why a file name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the file name is empty")]
    Empty,
    #[error("the file name is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    #[error("the file name must not contain '/', '\\' or control characters")]
    BadCharacter,
    #[error("the file name must not be '.' or '..'")]
    Dots,
}

/// A file name is one path segment: no separators, no control characters,
/// not `.` or `..`, at most [`MAX_NAME_BYTES`].
pub fn validate_file_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong);
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(NameError::BadCharacter);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(chunks: Vec<&'static [u8]>) -> Body {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn reads_up_to_the_limit() {
        let body = chunked(vec![b"abc", b"def"]);
        let bytes = read_limited(body, None, 6).await.unwrap();
        assert_eq!(&bytes[..], b"abcdef");
    }

    #[tokio::test]
    async fn stops_as_soon_as_the_limit_is_passed() {
        let body = chunked(vec![b"abc", b"def", b"g"]);
        let err = read_limited(body, None, 6).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 6 }));
    }

    #[tokio::test]
    async fn refuses_a_declared_length_over_the_limit_without_reading() {
        let body = chunked(vec![b"a"]);
        let err = read_limited(body, Some(1 << 40), 6).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { .. }));
    }

    #[tokio::test]
    async fn empty_body_reads_as_empty() {
        let bytes = read_limited(Body::empty(), Some(0), 6).await.unwrap();
        assert!(bytes.is_empty());
    }

    #[test]
    fn file_names_are_single_segments() {
        assert_eq!(validate_file_name("extract_2024-05-01.zip"), Ok(()));
        assert_eq!(validate_file_name("dossier été.xml"), Ok(()));
        assert_eq!(validate_file_name(""), Err(NameError::Empty));
        assert_eq!(validate_file_name("a/b"), Err(NameError::BadCharacter));
        assert_eq!(validate_file_name("a\\b"), Err(NameError::BadCharacter));
        assert_eq!(validate_file_name("a\nb"), Err(NameError::BadCharacter));
        assert_eq!(validate_file_name(".."), Err(NameError::Dots));
        assert_eq!(
            validate_file_name(&"x".repeat(256)),
            Err(NameError::TooLong)
        );
    }
}
