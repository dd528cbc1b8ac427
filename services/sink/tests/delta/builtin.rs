use medlake_sink::decode::RecordDecoder;
use medlake_sink::delta::builtin::{
    DeadLetterMessage, dead_letter_rows, dead_letters_spec, files_spec,
};
use medlake_sink::delta::{RowOrigin, SinkBatch, read};

use crate::support::*;

#[tokio::test]
async fn dead_letters_and_the_ledger_are_tables_like_any_other() {
    let lake = lake();
    let spec = dead_letters_spec();
    let mut w = writer(&lake, &spec).await;
    let headers: Vec<(&str, &[u8])> = vec![
        ("medlake.error.stage", b"parse"),
        ("medlake.error.code", b"bad_row"),
        ("medlake.file_id", b"abc"),
        ("medlake.received_at", b"2024-05-06T07:08:09Z"),
    ];
    let messages: Vec<DeadLetterMessage<'_>> = (0..3)
        .map(|offset| DeadLetterMessage {
            headers: &headers,
            payload: Some(b"a,b,c"),
            timestamp_ms: Some(1_700_000_000_000),
            partition: 0,
            offset,
        })
        .collect();
    let rows = dead_letter_rows(&messages, 1024).unwrap();
    let origins = messages
        .iter()
        .map(|m| RowOrigin {
            partition: m.partition,
            offset: m.offset,
        })
        .collect();
    w.write(SinkBatch::new("medlake.dlq", rows, origins))
        .await
        .unwrap();
    assert_eq!(
        read::count_rows(uri(&lake), "_dead_letters").await.unwrap(),
        3
    );

    let spec = files_spec();
    let mut w = writer(&lake, &spec).await;
    let decoder = RecordDecoder::new(&spec.name, spec.schema.clone(), false).unwrap();
    let entries = [
        br#"{"file_id": "abc", "status": "parsed", "records": {"labs": 3}, "rejects": {}}"#
            .as_slice(),
        br#"{"file_id": "abc", "status": "duplicate", "records": {}, "rejects": {}}"#,
    ];
    let decoded = decoder.decode(&entries).unwrap();
    let origins = vec![
        RowOrigin {
            partition: 0,
            offset: 0,
        },
        RowOrigin {
            partition: 0,
            offset: 1,
        },
    ];
    w.write(SinkBatch::new("medlake.files", decoded.records, origins))
        .await
        .unwrap();
    let all = read::read_all(uri(&lake), "_files").await.unwrap();
    assert_eq!(all.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
}
