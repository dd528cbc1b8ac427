//! Bytes to text in the data set's encoding. Valid UTF-8 without a BOM is borrowed,
//! not copied.

use std::borrow::Cow;

use medlake_common::dataset::Encoding;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decodes an entry. `None` means the bytes are not valid in that encoding
/// (only possible for UTF-8: every byte is a Latin-1 / Windows-1252 character).
pub fn decode(bytes: &[u8], encoding: Encoding) -> Option<Cow<'_, str>> {
    match encoding {
        Encoding::Utf8 => {
            let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
            std::str::from_utf8(bytes).ok().map(Cow::Borrowed)
        }
        Encoding::Latin1 => Some(Cow::Owned(bytes.iter().map(|&b| b as char).collect())),
        Encoding::Windows1252 => Some(
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0,
        ),
    }
}

/// Decodes at most the first `max` bytes, lossily, for peeking at headers and roots.
pub fn peek(bytes: &[u8], encoding: Encoding, max: usize) -> String {
    let head = &bytes[..bytes.len().min(max)];
    match encoding {
        Encoding::Utf8 => {
            String::from_utf8_lossy(head.strip_prefix(UTF8_BOM).unwrap_or(head)).into_owned()
        }
        other => decode(head, other).map(Cow::into_owned).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_with_and_without_bom() {
        assert_eq!(decode(b"\xEF\xBB\xBFa,b", Encoding::Utf8).unwrap(), "a,b");
        assert!(matches!(
            decode(b"a,b", Encoding::Utf8),
            Some(Cow::Borrowed("a,b"))
        ));
        assert!(decode(b"caf\xE9", Encoding::Utf8).is_none());
    }

    #[test]
    fn latin1_and_windows_1252() {
        assert_eq!(
            decode(b"caf\xE9 \x80", Encoding::Latin1).unwrap(),
            "café \u{80}"
        );
        assert_eq!(
            decode(b"caf\xE9 \x80", Encoding::Windows1252).unwrap(),
            "café €"
        );
    }

    #[test]
    fn peek_is_lossy_and_bounded() {
        assert_eq!(
            peek(b"\xEF\xBB\xBFabc\xFF", Encoding::Utf8, 7),
            "abc\u{FFFD}"
        );
        assert_eq!(peek(b"abcdef", Encoding::Latin1, 3), "abc");
    }
}
