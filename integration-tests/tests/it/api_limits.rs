//! Upload slots of the push API, against the `medlake api-connector`
//! process: a facility that holds its share of slow uploads is told to
//! retry (429) while another facility is served at once, and an upload the
//! memory budget cannot cover is told to retry (503) until memory is free.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures::channel::mpsc;
use medlake_integration_tests::{eventually, metric_sample};

use crate::api::{Connector, PushFixture, assert_upload_served, exchange, json_of};

const KIB: usize = 1024;

/// An upload whose body is sent on demand: headers and a first chunk at
/// once, the rest when [`SlowUpload::finish`] is called.
struct SlowUpload {
    rest: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    answer: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
}

impl SlowUpload {
    /// Starts `PUT /v1/files/{name}` with `key`, chunked (no length), with
    /// `first` bytes sent.
    fn start(connector: &Connector, key: &str, name: &str, first: usize) -> Self {
        let (mut rest, body) = mpsc::channel(4);
        rest.try_send(Ok(vec![b'a'; first])).unwrap();
        let request = reqwest::Client::new()
            .put(format!("{}/v1/files/{name}", connector.base))
            .bearer_auth(key)
            .body(reqwest::Body::wrap_stream(body))
            .send();
        Self {
            rest,
            answer: tokio::spawn(request),
        }
    }

    /// Sends the last bytes and returns the status of the answer.
    async fn finish(mut self) -> u16 {
        self.rest.try_send(Ok(b"end".to_vec())).unwrap();
        drop(self.rest);
        self.answer.await.unwrap().unwrap().status().as_u16()
    }
}

/// A `PUT` of `len` bytes with a `Content-Length`, over its own connection.
fn put_request(key: &str, name: &str, len: usize) -> Vec<u8> {
    let mut request = format!(
        "PUT /v1/files/{name} HTTP/1.1\r\nHost: medlake\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    request.resize(request.len() + len, b'z');
    request
}

async fn sample(connector: &Connector, name: &str) -> f64 {
    metric_sample(&connector.metrics().await, name).unwrap_or(0.0)
}

#[tokio::test]
async fn a_facility_at_its_share_does_not_lock_out_the_others() {
    let fx = PushFixture::new().await;
    // 8 MiB for uploads; files up to 1 MiB go inline (charged three times).
    let connector = fx
        .start(&[
            ("MEDLAKE_API_CONNECTOR__MAX_UPLOADS_PER_FACILITY", "4"),
            ("MEDLAKE_API_CONNECTOR__MAX_UPLOAD_MEMORY_BYTES", "8388608"),
            ("MEDLAKE_API_CONNECTOR__MAX_BODY_BYTES", "2097152"),
            (
                "MEDLAKE_API_CONNECTOR__INGEST__INLINE_LIMIT_BYTES",
                "1048576",
            ),
        ])
        .await;

    // Facility A: four uploads that send 512 KiB and then wait. Each holds
    // 3 × 512 KiB of the budget: 6 MiB of 8.
    let slow: Vec<SlowUpload> = (0..4)
        .map(|i| SlowUpload::start(&connector, &fx.key_a, &format!("slow-{i}.zip"), 512 * KIB))
        .collect();
    eventually(
        Duration::from_secs(20),
        "A's four uploads to be held",
        || {
            let metrics = connector.metrics();
            async move {
                let text = metrics.await;
                let memory = metric_sample(&text, "medlake_api_connector_upload_memory_bytes");
                (memory == Some((6 * 1024 * KIB) as f64)).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        sample(&connector, "medlake_api_connector_uploads_in_progress").await,
        4.0
    );

    // A fifth upload of A: 429 with Retry-After, at once.
    let response = reqwest::Client::new()
        .put(format!("{}/v1/files/fifth.zip", connector.base))
        .bearer_auth(&fx.key_a)
        .body("PK fifth")
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, json) = json_of(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert_eq!(json["error"]["code"], "facility_busy");

    // Facility B meanwhile: served at once.
    let started = Instant::now();
    assert_upload_served(&connector, &fx.key_b, "b-while-a-waits.zip").await;
    let took = started.elapsed();
    eprintln!("api: facility B served in {took:?} while facility A holds its 4 slots");
    assert!(took < Duration::from_secs(3), "B waited {took:?}");

    // A 1 MiB file of B needs 3 MiB; 2 MiB are left: 503 with Retry-After.
    let (status, answer) = exchange(
        connector.address(),
        put_request(&fx.key_b, "big.zip", 1024 * KIB),
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after"),
        "{answer}"
    );
    assert!(answer.contains("\"busy\""), "{answer}");

    // A's uploads finish; the memory is free again and B's file fits.
    for upload in slow {
        assert_eq!(upload.finish().await, 202);
    }
    let response = reqwest::Client::new()
        .put(format!("{}/v1/files/big.zip", connector.base))
        .bearer_auth(&fx.key_b)
        .body(vec![b'y'; 1024 * KIB])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let metrics = connector.metrics().await;
    for (name, expected) in [
        (
            "medlake_api_connector_uploads_refused_total{reason=\"facility_share\"}",
            1.0,
        ),
        (
            "medlake_api_connector_uploads_refused_total{reason=\"memory\"}",
            1.0,
        ),
        ("medlake_api_connector_uploads_in_progress", 0.0),
        ("medlake_api_connector_upload_memory_bytes", 0.0),
    ] {
        assert_eq!(
            metric_sample(&metrics, name),
            Some(expected),
            "{name}\n{metrics}"
        );
    }
}
