//! A `serve` the test started as a child process itself, reached over HTTP.

use std::time::{Duration, Instant};

use serde_json::Value;
use sumsvc::Config;

/// A `serve` run as a child process, reached over HTTP.
pub struct Remote {
    pub base: String,
    pub client: reqwest::Client,
}

impl Remote {
    pub fn at(config: &Config) -> Remote {
        Remote {
            base: format!("http://{}", config.http.listen),
            client: reqwest::Client::new(),
        }
    }

    /// Polls `/readyz` until it says ready with at least `workers` consumers, for at
    /// most 30 s (the process may still be starting).
    pub async fn wait_until_ready(&self, workers: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
            {
                Ok(r) => r.json::<Value>().await.unwrap_or_default(),
                Err(_) => Value::Null,
            };
            if ready["status"] == "ready" && ready["workers"].as_u64() >= Some(workers) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never ready with {workers} workers: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /sync/sum` with `body`; the response text.
    pub async fn sync_sum(&self, body: &str) -> String {
        self.client
            .post(format!("{}/sync/sum", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}
