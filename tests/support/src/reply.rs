//! What a test reads of an HTTP answer, and the check of a problem-details error.

use serde_json::Value;

/// An HTTP answer: status (0 if the request failed), headers, body as JSON (or Null).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn read(r: reqwest::Result<reqwest::Response>) -> Self {
        match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let text = resp.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                Reply {
                    status,
                    headers,
                    body,
                    text,
                }
            }
            Err(e) => Reply {
                status: 0,
                headers: Default::default(),
                body: Value::Null,
                // With its sources: "error sending request" alone says nothing.
                text: format!("{e:?}"),
            },
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem-details error with this status whose detail mentions `needle`.
    pub fn assert_problem(&self, status: u16, needle: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.body["status"], status, "{self:?}");
        for field in ["type", "title", "detail"] {
            assert!(self.body[field].is_string(), "no {field}: {self:?}");
        }
        let detail = self.body["detail"].as_str().unwrap();
        assert!(
            detail.contains(needle),
            "detail {detail:?} should mention {needle:?}"
        );
    }
}
