//! Whether Redis keeps the results it was given: the settings that decide it, as
//! `CONFIG GET` reports them, and the warnings an operator needs when they do not.
//!
//! Results live only in Redis, and a worker acks its task once the result is written, so
//! a result Redis drops is lost for good. Two settings drop results silently:
//! an eviction policy other than `noeviction` (results carry a TTL, so the `volatile-*`
//! policies evict them as readily as `allkeys-*`), and keeping nothing on disk
//! (`appendonly no` and no `save` points), where a restart loses every result. Snapshots
//! alone, or an append-only file left to the OS to flush (`appendfsync no`), lose the
//! latest results in a crash: warned about too. Managed Redis often refuses or renames
//! `CONFIG`; then the settings are unknown, which is a warning of its own, never a
//! failure.

use std::collections::HashMap;

/// The settings read, in the order they are asked for.
pub const SETTINGS: [&str; 5] = [
    "maxmemory",
    "maxmemory-policy",
    "appendonly",
    "appendfsync",
    "save",
];

/// What Redis said about how it keeps data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// `CONFIG GET` answered; a setting it did not report is `None`.
    Reported(Settings),
    /// `CONFIG GET` was refused, and the server's reason.
    Unknown(String),
}

/// The settings of [`SETTINGS`] as Redis reported them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Bytes; 0 means no limit.
    pub maxmemory: Option<String>,
    pub maxmemory_policy: Option<String>,
    pub appendonly: Option<String>,
    pub appendfsync: Option<String>,
    /// Snapshot points (`"3600 1 300 100"`); empty when snapshots are off.
    pub save: Option<String>,
}

impl Settings {
    /// Reads the name/value pairs `CONFIG GET` answered.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut values: HashMap<String, String> = pairs.into_iter().collect();
        let mut take = |name: &str| values.remove(name);
        Self {
            maxmemory: take("maxmemory"),
            maxmemory_policy: take("maxmemory-policy"),
            appendonly: take("appendonly"),
            appendfsync: take("appendfsync"),
            save: take("save"),
        }
    }

    fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        warnings.extend(self.eviction());
        warnings.extend(self.persistence());
        let missing: Vec<&str> = SETTINGS
            .into_iter()
            .zip([
                &self.maxmemory,
                &self.maxmemory_policy,
                &self.appendonly,
                &self.appendfsync,
                &self.save,
            ])
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name)
            .collect();
        if !missing.is_empty() {
            warnings.push(format!(
                "Redis did not report {}: check that maxmemory-policy is noeviction and \
                 appendonly is yes, or results may vanish",
                missing.join(", ")
            ));
        }
        warnings
    }

    fn eviction(&self) -> Option<String> {
        let policy = self.maxmemory_policy.as_deref()?;
        if policy == "noeviction" {
            return None;
        }
        let limit = match self
            .maxmemory
            .as_deref()
            .and_then(|m| m.parse::<u64>().ok())
        {
            Some(0) => ", no maxmemory yet".to_owned(),
            Some(bytes) => format!(", maxmemory {}", redis_size(bytes)),
            None => String::new(),
        };
        let why = if policy.starts_with("volatile-") {
            "; results have a TTL, so volatile policies evict them too"
        } else {
            ""
        };
        Some(format!(
            "Redis may evict results (maxmemory-policy {policy}{limit}{why}): \
             set maxmemory-policy noeviction"
        ))
    }

    fn persistence(&self) -> Option<String> {
        let appendonly = self.appendonly.as_deref()?;
        if appendonly == "yes" {
            return (self.appendfsync.as_deref() == Some("no")).then(|| {
                "Redis leaves flushing its append-only file to the OS (appendfsync no): \
                 a crash of the host loses the latest results; set appendfsync always \
                 or everysec"
                    .to_owned()
            });
        }
        let save = self.save.as_deref()?.trim();
        Some(if save.is_empty() {
            format!(
                "Redis keeps results only in memory (appendonly {appendonly}, no save \
                 points): a Redis restart loses every result; enable appendonly"
            )
        } else {
            format!(
                "Redis writes results to disk only in snapshots (appendonly {appendonly}, \
                 save {save}): a crash loses every result since the last one; enable \
                 appendonly"
            )
        })
    }
}

impl Durability {
    /// What is at risk and what to set, one sentence each; empty when results are safe.
    pub fn warnings(&self) -> Vec<String> {
        match self {
            Durability::Reported(settings) => settings.warnings(),
            Durability::Unknown(why) => vec![format!(
                "Redis would not tell its settings (CONFIG GET: {why}): check that \
                 maxmemory-policy is noeviction and appendonly is yes, or results may vanish"
            )],
        }
    }
}

/// A byte count as Redis's own configuration writes it (`64mb`, `1gb`).
fn redis_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "gb"), (1 << 20, "mb"), (1 << 10, "kb")];
    UNITS
        .into_iter()
        .find(|(size, _)| bytes % size == 0)
        .map(|(size, unit)| format!("{}{unit}", bytes / size))
        .unwrap_or_else(|| format!("{bytes} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    const SAFE: [(&str, &str); 5] = [
        ("maxmemory", "1073741824"),
        ("maxmemory-policy", "noeviction"),
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("save", ""),
    ];

    fn safe_but(name: &str, value: &str) -> Vec<String> {
        let mut pairs = SAFE.to_vec();
        pairs.retain(|(k, _)| *k != name);
        pairs.push((name, value));
        Durability::Reported(settings(&pairs)).warnings()
    }

    #[test]
    fn noeviction_with_an_append_only_file_needs_no_warning() {
        assert_eq!(
            Durability::Reported(settings(&SAFE)).warnings(),
            Vec::<String>::new()
        );
        assert!(safe_but("appendfsync", "everysec").is_empty());
        assert!(safe_but("maxmemory", "0").is_empty());
    }

    #[test]
    fn an_eviction_policy_is_named_with_the_limit_and_the_fix() {
        assert_eq!(
            safe_but("maxmemory-policy", "allkeys-lru"),
            [
                "Redis may evict results (maxmemory-policy allkeys-lru, maxmemory 1gb): \
              set maxmemory-policy noeviction"
            ]
        );
        let volatile = safe_but("maxmemory-policy", "volatile-ttl");
        assert!(
            volatile[0].contains("results have a TTL, so volatile policies evict them too"),
            "{volatile:?}"
        );
        let mut pairs = SAFE.to_vec();
        pairs[0] = ("maxmemory", "0");
        pairs[1] = ("maxmemory-policy", "allkeys-random");
        let unlimited = Durability::Reported(settings(&pairs)).warnings();
        assert!(unlimited[0].contains("no maxmemory yet"), "{unlimited:?}");
    }

    #[test]
    fn keeping_nothing_on_disk_is_a_warning_and_so_are_snapshots_alone() {
        let mut pairs = SAFE.to_vec();
        pairs[2] = ("appendonly", "no");
        assert_eq!(
            Durability::Reported(settings(&pairs)).warnings(),
            [
                "Redis keeps results only in memory (appendonly no, no save points): \
              a Redis restart loses every result; enable appendonly"
            ]
        );
        pairs[4] = ("save", "3600 1 300 100");
        let snapshots = Durability::Reported(settings(&pairs)).warnings();
        assert!(
            snapshots[0].contains("only in snapshots (appendonly no, save 3600 1 300 100)"),
            "{snapshots:?}"
        );
        assert!(safe_but("appendfsync", "no")[0].contains("appendfsync no"));
    }

    #[test]
    fn settings_redis_does_not_tell_are_named_as_unknown() {
        let mut pairs = SAFE.to_vec();
        pairs.retain(|(k, _)| *k != "maxmemory-policy");
        let warnings = Durability::Reported(settings(&pairs)).warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("Redis did not report maxmemory-policy:"),
            "{warnings:?}"
        );
        let refused = Durability::Unknown("ERR unknown command 'CONFIG'".into()).warnings();
        assert!(
            refused[0].contains("CONFIG GET: ERR unknown command 'CONFIG'"),
            "{refused:?}"
        );
    }

    #[test]
    fn sizes_read_as_redis_writes_them() {
        assert_eq!(redis_size(64 << 20), "64mb");
        assert_eq!(redis_size(1 << 30), "1gb");
        assert_eq!(redis_size(1000), "1000 bytes");
    }
}
