//! `log.format = "json"`: one JSON object per line, for log collectors.
//!
//! A line holds `timestamp` (RFC 3339, UTC), `level`, `target` and `message`, then the
//! event's fields and, at the top level too, the fields of every span it happened in:
//! so a line logged while a request is served carries that request's `trace_id` and
//! `request_id`, and a collector can index them without knowing the span structure.

use std::fmt;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format of `log.format = "json"`; span fields are kept as JSON by
/// [`JsonFields`].
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Records bridged from `log` (amiquip's) name their real target here.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut fields = Map::new();
        for span in ctx.event_scope().into_iter().flat_map(|s| s.from_root()) {
            if let Some(recorded) = span.extensions().get::<FormattedFields<JsonFields>>() {
                fields.extend(object(recorded));
            }
        }
        let mut recorded = String::new();
        JsonFields::new().format_fields(Writer::new(&mut recorded), event)?;
        fields.extend(object(&recorded));
        // What every line has comes first, for people reading the lines as they are.
        let message = fields.remove("message").unwrap_or_default();
        let timestamp = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        let head = [
            ("timestamp", Value::from(timestamp)),
            ("level", meta.level().as_str().into()),
            ("target", meta.target().into()),
            ("message", message),
        ];
        for (name, _) in &head {
            fields.remove(*name);
        }
        let head = head.iter().map(|(name, value)| (*name, value));
        let rest = fields.iter().map(|(name, value)| (name.as_str(), value));
        let mut line = String::from("{");
        for (at, (name, value)) in head.chain(rest).enumerate() {
            if at > 0 {
                line.push(',');
            }
            line.push_str(&serde_json::to_string(name).map_err(|_| fmt::Error)?);
            line.push(':');
            line.push_str(&serde_json::to_string(value).map_err(|_| fmt::Error)?);
        }
        writeln!(writer, "{line}}}")
    }
}

/// The members of a JSON object written by [`JsonFields`]; none for anything else.
fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(members)) => members,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_is_one_object_with_the_fields_of_its_spans() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", trace_id = "abc", request_id = "42");
            let _in = span.enter();
            tracing::warn!(status = 503, detail = "Redis is unavailable", "answered");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["message"], "answered", "{line}");
        assert_eq!(line["status"], 503, "{line}");
        assert_eq!(line["trace_id"], "abc", "{line}");
        assert_eq!(line["request_id"], "42", "{line}");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(
            text.starts_with(r#"{"timestamp":"#) && text.contains(r#"","level":"WARN","target":""#),
            "{text}"
        );
    }
}
