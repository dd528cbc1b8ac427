//! Reading a pushed file: the body is streamed into memory chunk by chunk,
//! each chunk charged to the upload's slot before it is kept, and the
//! request is refused as soon as it passes the limit, so an oversized or
//! endless upload never costs more than `limit` bytes.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::slots::{Refusal, UploadSlot};

/// Longest accepted file name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The body could not be read within its limit.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body could not be read: {source}")]
    Read { source: axum::Error },
    #[error("no room for the upload")]
    NoRoom { refusal: Refusal },
}

/// Reads `body` into memory, failing once it passes `limit` bytes or once
/// `slot` cannot cover the bytes received. A `Content-Length` above the
/// limit is refused before reading anything.
pub async fn read_limited(
    body: Body,
    content_length: Option<u64>,
    limit: usize,
    slot: &mut UploadSlot,
) -> Result<Bytes, BodyError> {
    if content_length.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let expected = content_length.map(|n| n as usize);
    // Pages the body never fills are never touched, so announcing a length
    // costs nothing until the bytes arrive (and are charged).
    let mut buffer = BytesMut::with_capacity(expected.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| BodyError::Read { source })?;
        append(&mut buffer, &chunk, limit, expected, slot)?;
    }
    Ok(buffer.freeze())
}

/// Appends `chunk` to `buffer` once the limit and the slot allow it.
pub fn append(
    buffer: &mut BytesMut,
    chunk: &[u8],
    limit: usize,
    expected: Option<usize>,
    slot: &mut UploadSlot,
) -> Result<(), BodyError> {
    let len = buffer.len() + chunk.len();
    if len > limit {
        return Err(BodyError::TooLarge { limit });
    }
    slot.cover(len, expected)
        .map_err(|refusal| BodyError::NoRoom { refusal })?;
    buffer.extend_from_slice(chunk);
    Ok(())
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
    use std::sync::Arc;

    use super::super::slots::{UploadLimits, UploadSlots};
    use super::*;

    fn slots(max_memory_bytes: usize) -> Arc<UploadSlots> {
        UploadSlots::new(UploadLimits {
            max_uploads: 2,
            max_per_facility: 2,
            max_memory_bytes,
            inline_limit_bytes: 1024,
        })
    }

    async fn read(
        body: Body,
        content_length: Option<u64>,
        limit: usize,
    ) -> Result<Bytes, BodyError> {
        let mut slot = slots(1 << 30).acquire("F").unwrap();
        read_limited(body, content_length, limit, &mut slot).await
    }

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
        let bytes = read(body, None, 6).await.unwrap();
        assert_eq!(&bytes[..], b"abcdef");
    }

    #[tokio::test]
    async fn stops_as_soon_as_the_limit_is_passed() {
        let body = chunked(vec![b"abc", b"def", b"g"]);
        let err = read(body, None, 6).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 6 }));
    }

    #[tokio::test]
    async fn refuses_a_declared_length_over_the_limit_without_reading() {
        let body = chunked(vec![b"a"]);
        let err = read(body, Some(1 << 40), 6).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { .. }));
    }

    #[tokio::test]
    async fn empty_body_reads_as_empty() {
        let bytes = read(Body::empty(), Some(0), 6).await.unwrap();
        assert!(bytes.is_empty());
    }

    #[tokio::test]
    async fn a_body_the_memory_budget_cannot_cover_is_refused_and_returns_its_charge() {
        // 1 MiB of budget: four steps; a 2 KiB file of unknown length goes
        // by reference (inline limit 1 KiB) and fits, a 2 MiB one does not.
        let slots = slots(1024 * 1024);
        let mut slot = slots.acquire("F").unwrap();
        let body = Body::from(vec![1u8; 2048]);
        assert_eq!(
            read_limited(body, None, 4 << 20, &mut slot)
                .await
                .unwrap()
                .len(),
            2048
        );
        drop(slot);
        let mut slot = slots.acquire("F").unwrap();
        let chunks = vec![&[7u8; 512 * 1024][..]; 4];
        let body = chunked(chunks);
        let err = read_limited(body, None, 4 << 20, &mut slot)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                BodyError::NoRoom {
                    refusal: Refusal::Memory
                }
            ),
            "{err:?}"
        );
        drop(slot);
        let mut slot = slots.acquire("F").unwrap();
        slot.cover(1024 * 1024, Some(1 << 20)).unwrap();
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
