//! The types a configuration key can hold, and how each is read and written: as TOML in
//! the file (and in the key table's defaults, which are written the same way), as text
//! in flags and environment variables. Durations are text in both, like `30s`.
//!
//! Also how a value that may hold a password is shown: [`without_password`].

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// A type a configuration key can hold.
pub trait Value: Sized {
    /// The only texts a flag accepts, when there are few; `--help` lists them.
    const CHOICES: &'static [&'static str] = &[];

    /// Reads the text of a flag or an environment variable.
    fn from_text(text: &str) -> Result<Self, String>;

    /// Reads a value of the file.
    fn from_toml(value: toml::Value) -> Result<Self, String>;

    /// The value as the file writes it.
    fn to_toml(&self) -> toml::Value;
}

/// Types whose text is their `FromStr` and whose TOML is their serde form.
macro_rules! plain_values {
    ($($ty:ty),*) => {$(
        impl Value for $ty {
            fn from_text(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e| format!("{e}"))
            }

            fn from_toml(value: toml::Value) -> Result<Self, String> {
                Self::deserialize(value).map_err(|e| e.to_string())
            }

            fn to_toml(&self) -> toml::Value {
                toml::Value::try_from(self).expect("a plain value is a TOML value")
            }
        }
    )*};
}

plain_values!(String, usize, u16, SocketAddr);

/// The URLs of a clustered service's members (or of one server): a TOML array in the
/// file, or one string of URLs separated by commas, as variables and flags write it.
/// Never empty. (A comma inside a URL, in a password say, is written `%2C`.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlList(Vec<String>);

impl UrlList {
    /// The URLs, in the order written.
    pub fn urls(&self) -> &[String] {
        &self.0
    }
}

impl std::str::FromStr for UrlList {
    type Err = String;

    /// URLs separated by commas.
    fn from_str(text: &str) -> Result<Self, String> {
        Self::from_text(text)
    }
}

impl From<String> for UrlList {
    /// One URL.
    fn from(url: String) -> Self {
        Self(vec![url])
    }
}

impl From<&str> for UrlList {
    fn from(url: &str) -> Self {
        Self(vec![url.to_owned()])
    }
}

impl Value for UrlList {
    fn from_text(text: &str) -> Result<Self, String> {
        let urls: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err("expected one URL or more, separated by commas".into());
        }
        Ok(Self(urls))
    }

    fn from_toml(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(text) => Self::from_text(&text),
            toml::Value::Array(items) => {
                let urls = items
                    .into_iter()
                    .map(|item| match item {
                        toml::Value::String(url) => Self::from_text(&url),
                        other => Err(format!(
                            "expected URLs in quotes, found {}",
                            other.type_str()
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Self::from_text(
                    &urls
                        .iter()
                        .flat_map(|u| u.0.clone())
                        .collect::<Vec<_>>()
                        .join(","),
                )
            }
            other => Err(format!(
                "expected a URL in quotes, or an array of them, found {}",
                other.type_str()
            )),
        }
    }

    fn to_toml(&self) -> toml::Value {
        match &self.0[..] {
            [one] => toml::Value::String(one.clone()),
            many => toml::Value::Array(many.iter().cloned().map(toml::Value::String).collect()),
        }
    }
}

/// An enum written as one of a few words: `choice_value!(Type, "what it is", { Variant
/// => "word", ... })`.
macro_rules! choice_value {
    ($ty:ty, $what:literal, { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $crate::config::value::Value for $ty {
            const CHOICES: &'static [&'static str] = &[$($word),+];

            fn from_text(text: &str) -> Result<Self, String> {
                match text {
                    $($word => Ok(Self::$variant),)+
                    _ => Err(format!(
                        "{text:?} is not a {}: write {}",
                        $what,
                        Self::CHOICES.join(" or ")
                    )),
                }
            }

            fn from_toml(value: toml::Value) -> Result<Self, String> {
                match value {
                    toml::Value::String(text) => Self::from_text(&text),
                    other => Err(format!(
                        "expected one of {}, found {}",
                        Self::CHOICES.join(", "),
                        other.type_str()
                    )),
                }
            }

            fn to_toml(&self) -> toml::Value {
                let word = match self {
                    $(Self::$variant => $word,)+
                };
                toml::Value::String(word.to_owned())
            }
        }
    };
}
// A macro is re-exported only within the crate (`pub` would need `#[macro_export]`).
pub(crate) use choice_value;

impl Value for bool {
    const CHOICES: &'static [&'static str] = &["true", "false"];

    fn from_text(text: &str) -> Result<Self, String> {
        text.parse().map_err(|_| "write true or false".to_owned())
    }

    fn from_toml(value: toml::Value) -> Result<Self, String> {
        Self::deserialize(value).map_err(|e| e.to_string())
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::Boolean(*self)
    }
}

/// How log lines are written: `text` for people, `json` (one object per line, with
/// the trace and request ids) for log collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

choice_value!(LogFormat, "log format", { Text => "text", Json => "json" });

impl Value for Duration {
    fn from_text(text: &str) -> Result<Self, String> {
        parse_duration(text)
    }

    fn from_toml(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(text) => parse_duration(&text),
            other => Err(format!(
                "expected a duration in quotes, like \"30s\", found {}",
                other.type_str()
            )),
        }
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::String(format_duration(*self))
    }
}

/// A value as a flag or an environment variable writes it: a TOML string without its
/// quotes, an array of strings as they separated by commas, anything else as TOML
/// writes it.
pub fn toml_to_text(value: toml::Value) -> String {
    match value {
        toml::Value::String(text) => text,
        toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
            .into_iter()
            .map(toml_to_text)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// A value that may hold passwords (a URL, or a list of them), with each hidden.
pub fn hide_passwords(value: toml::Value) -> toml::Value {
    match value {
        toml::Value::String(url) => toml::Value::String(without_password(&url)),
        toml::Value::Array(items) => {
            toml::Value::Array(items.into_iter().map(hide_passwords).collect())
        }
        other => other,
    }
}

/// Reads one TOML value written as text, as the key table writes its defaults.
pub fn parse_toml(text: &str) -> Result<toml::Value, String> {
    toml::de::ValueDeserializer::parse(text)
        .and_then(toml::Value::deserialize)
        .map_err(|e| e.to_string())
}

/// Parses a duration written like `250ms`, `30s`, `24h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}: write a duration like 250ms, 30s or 24h"))
}

/// Writes a duration the way people write it in the file: `1500ms`, `30s`, `5m`, `24h`
/// (and `us` or `ns` below a millisecond, so that no value is rounded).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let s = d.as_secs();
    if ns % 1_000 != 0 {
        format!("{ns}ns")
    } else if ns % 1_000_000 != 0 {
        format!("{}us", ns / 1_000)
    } else if ns % 1_000_000_000 != 0 {
        format!("{}ms", d.as_millis())
    } else if s >= 3600 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s >= 60 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A URL with its password replaced by `***`, both the one in its user information
/// (`amqp://user:***@host/`) and a `password` parameter of its query (which
/// PostgreSQL URLs accept). Text that is not a URL is hidden whole: there is no telling
/// where a password would be in it.
pub fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "***".to_owned();
    };
    let start = scheme_end + 3;
    let mut shown = url[..start].to_owned();
    // The user information ends at the last '@', so a password with an '@', '/' or
    // '?' that should have been percent-encoded is still hidden whole.
    let rest = match url[start..].rfind('@') {
        Some(at) => {
            match url[start..start + at].split_once(':') {
                Some((user, _)) => shown.push_str(&format!("{user}:***")),
                None => shown.push_str(&url[start..start + at]),
            }
            &url[start + at..]
        }
        None => &url[start..],
    };
    let (before_fragment, fragment) = rest.split_at(rest.find('#').unwrap_or(rest.len()));
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            let query: Vec<&str> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("password", _)) => "password=***",
                    _ => pair,
                })
                .collect();
            shown.push_str(&format!("{path}?{}", query.join("&")));
        }
        None => shown.push_str(before_fragment),
    }
    shown.push_str(fragment);
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_user_information_is_hidden() {
        assert_eq!(
            without_password("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            without_password("redis://:s3cret@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        // Characters that should have been percent-encoded do not let it show.
        assert_eq!(
            without_password("postgres://u:p@ss@db/x"),
            "postgres://u:***@db/x"
        );
        assert_eq!(
            without_password("amqp://u:pa/ss?@mq/v"),
            "amqp://u:***@mq/v"
        );
    }

    #[test]
    fn a_password_parameter_is_hidden() {
        assert_eq!(
            without_password("postgres://u@db:5432/x?sslmode=disable&password=s3cret#f"),
            "postgres://u@db:5432/x?sslmode=disable&password=***#f"
        );
    }

    #[test]
    fn a_url_without_a_password_is_shown_whole() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/sumsvc",
            "redis://127.0.0.1:6379/0",
            "amqp://broker",
            "postgres://u@h1:5432,h2:5432/db?sslmode=require",
        ] {
            assert_eq!(without_password(url), url);
        }
    }

    #[test]
    fn every_password_in_a_list_of_urls_is_hidden() {
        let urls = UrlList::from_text("amqp://u:p1@h1/v, amqp://u:p2@h2/v").unwrap();
        assert_eq!(urls.urls(), ["amqp://u:p1@h1/v", "amqp://u:p2@h2/v"]);
        let shown = hide_passwords(urls.to_toml());
        assert_eq!(toml_to_text(shown), "amqp://u:***@h1/v,amqp://u:***@h2/v");
    }

    #[test]
    fn a_list_of_urls_reads_the_same_from_text_and_from_an_array() {
        let array = parse_toml(r#"["amqp://h1", "amqp://h2"]"#).unwrap();
        let from_array = UrlList::from_toml(array).unwrap();
        assert_eq!(
            from_array,
            UrlList::from_text("amqp://h1,amqp://h2").unwrap()
        );
        assert_eq!(
            UrlList::from_text(&toml_to_text(from_array.to_toml())),
            Ok(from_array)
        );
        let one = UrlList::from_toml(parse_toml(r#""amqp://h1""#).unwrap()).unwrap();
        assert_eq!(one.to_toml(), toml::Value::String("amqp://h1".into()));
        for empty in ["", " , "] {
            assert!(UrlList::from_text(empty).is_err(), "{empty:?}");
        }
        assert!(UrlList::from_toml(parse_toml("[1]").unwrap()).is_err());
    }

    #[test]
    fn text_that_is_not_a_url_is_hidden_whole() {
        assert_eq!(without_password("host=db password=s3cret"), "***");
    }

    #[test]
    fn durations_are_written_without_rounding() {
        for (d, text) in [
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::from_micros(1500), "1500us"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}
