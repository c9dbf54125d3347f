//! A client of server-sent events (the WHATWG HTML standard's `text/event-stream`), as
//! an `EventSource` reads them: events split at blank lines, `event`, `id` and `data`
//! fields, comments (the keep-alives) counted.

use std::time::Duration;

/// One event as a client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// An open stream.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
    /// Comments read so far: the server's keep-alives.
    pub comments: usize,
}

impl EventStream {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event; None once the server closed the stream. Fails after `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        tokio::time::timeout(limit, self.read())
            .await
            .unwrap_or_else(|_| panic!("no event within {limit:?}"))
    }

    async fn read(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
            }
            let chunk = self.response.chunk().await.expect("the stream reads")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("events are UTF-8"));
        }
    }

    /// One block: an event, or only comments.
    fn parse(&mut self, block: &str) -> Option<SseEvent> {
        let mut event = SseEvent {
            event: "message".into(),
            id: None,
            data: String::new(),
        };
        let mut has_data = false;
        for line in block.lines() {
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.event = value.to_owned(),
                "id" => event.id = Some(value.to_owned()),
                "data" => {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
        has_data.then_some(event)
    }
}
