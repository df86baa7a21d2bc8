//! Volume options (`gsync volume set/get/reset`): the table of valid keys,
//! their defaults, and validation of values.
//!
//! Values are validated and normalised here when set, so everything that
//! reads an option later can parse it without a failure path.

use std::collections::BTreeMap;

/// One settable option.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// Full key, e.g. `cluster.quorum-type`.
    pub key: &'static str,
    /// Default value, as `volume get` prints it.
    pub default: &'static str,
    /// What values are accepted, for error messages and `--help`.
    pub accepts: &'static str,
    /// One-line description.
    pub doc: &'static str,
    check: fn(&str) -> Option<String>,
}

/// Every option gsync knows, in the order `volume get VOL all` lists them.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "auth.allow",
        default: "*",
        accepts: "* or a comma-separated list of pool hostnames",
        doc: "which pool nodes may mount the volume",
        check: check_allow,
    },
    OptionSpec {
        key: "cluster.conflict-retention",
        default: "7d",
        accepts: "a duration such as 3600 (seconds), 90s, 30m, 12h, 7d or 1h30m",
        doc: "how long losing split-brain versions are kept under .gsync/",
        check: check_duration,
    },
    OptionSpec {
        key: "cluster.favorite-child-policy",
        default: "none",
        accepts: "none, size, mtime or majority",
        doc: "resolve split-brain automatically by this rule",
        check: check_policy,
    },
    OptionSpec {
        key: "cluster.heal-rate-limit",
        default: "0",
        accepts: "bytes per second: 1048576, 500K, 10M (powers of 1024), 1MB (10^6) or 10MiB; 0 = unlimited",
        doc: "maximum rate of self-heal transfers per brick",
        check: check_bytes,
    },
    OptionSpec {
        key: "cluster.mass-delete-guard",
        default: "50%",
        accepts: "a share such as 50% (1% to 100%) or off",
        doc: "hold a mount's deletions of more than this share of its files (never under 20 files)",
        check: check_guard,
    },
    OptionSpec {
        key: "cluster.quorum-count",
        default: "0",
        accepts: "a number of bricks from 1 up to the replica count (0 = unset)",
        doc: "bricks that must be reachable to accept changes when quorum-type is fixed",
        check: check_count,
    },
    OptionSpec {
        key: "cluster.quorum-type",
        default: "none",
        accepts: "none, auto or fixed",
        doc: "refuse changes on a brick that cannot reach a quorum of the volume's bricks",
        check: check_quorum,
    },
    OptionSpec {
        key: "features.trash",
        default: "on",
        accepts: "on or off",
        doc: "keep deleted and overwritten files under .gsync/ for `volume trash VOL restore`",
        check: check_onoff,
    },
    OptionSpec {
        key: "features.trash-retention",
        default: "7d",
        accepts: "a duration such as 3600 (seconds), 90s, 30m, 12h, 7d or 1h30m",
        doc: "how long the trash keeps a deleted or overwritten version",
        check: check_duration,
    },
];

/// Looks up an option by key.
pub fn spec(key: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.key == key)
}

/// Why `volume set` refused a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// The key is not an option.
    #[error("option {key} does not exist; valid options: {}", valid_keys())]
    UnknownKey {
        /// The key given.
        key: String,
    },
    /// The value is not accepted for this key.
    #[error("invalid value {value:?} for {key}: expected {accepts}")]
    BadValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What is accepted.
        accepts: &'static str,
    },
}

fn valid_keys() -> String {
    OPTIONS.iter().map(|o| o.key).collect::<Vec<_>>().join(", ")
}

/// Validates `value` for `key`, returning the normalised value to store.
pub fn validate(key: &str, value: &str) -> Result<String, OptionError> {
    let spec = spec(key).ok_or_else(|| OptionError::UnknownKey {
        key: key.to_string(),
    })?;
    (spec.check)(value.trim()).ok_or_else(|| OptionError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        accepts: spec.accepts,
    })
}

/// The effective value of `key` given the volume's reconfigured options.
pub fn effective<'a>(set: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    match set.get(key) {
        Some(v) => v,
        None => spec(key).map_or("", |s| s.default),
    }
}

/// Parses a byte count as users write it: plain bytes (`1048576`), a
/// single-letter suffix in powers of 1024 as GlusterFS and `dd` read it
/// (`500K`, `10M`, `1G`), or the units `bytesize` reads: decimal `KB`,
/// `MB`, `GB` and binary `KiB`, `MiB`, `GiB`, fractions included (`1.5MB`).
pub fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    let digits_end = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = v.split_at(digits_end);
    let unit = unit.trim();
    let binary = match unit {
        "k" | "K" => Some(1u64 << 10),
        "m" | "M" => Some(1 << 20),
        "g" | "G" => Some(1 << 30),
        "t" | "T" => Some(1 << 40),
        _ => None,
    };
    if let Some(mult) = binary {
        let n: f64 = num.parse().ok()?;
        let bytes = (n * mult as f64).round();
        return (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64)
            .then_some(bytes as u64);
    }
    v.parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64())
}

/// Parses a duration in seconds as users write it: plain seconds (`3600`)
/// or what `humantime` reads (`90s`, `30m`, `12h`, `7d`, `1h30m`).
pub fn parse_duration_secs(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    humantime::parse_duration(v).ok().map(|d| d.as_secs())
}

/// Parses `cluster.mass-delete-guard`: `Some(None)` for `off`,
/// `Some(Some(p))` for a share of `p` percent (1 to 100), `None` when the
/// text is neither.
pub fn parse_guard(v: &str) -> Option<Option<u8>> {
    let v = v.trim();
    if matches!(
        v.to_ascii_lowercase().as_str(),
        "off" | "false" | "no" | "disable"
    ) {
        return Some(None);
    }
    let n: u8 = v.strip_suffix('%').unwrap_or(v).trim().parse().ok()?;
    (1..=100).contains(&n).then_some(Some(n))
}

fn check_guard(v: &str) -> Option<String> {
    match parse_guard(v)? {
        None => Some("off".into()),
        Some(p) => Some(format!("{p}%")),
    }
}

fn check_allow(v: &str) -> Option<String> {
    if v == "*" {
        return Some(v.to_string());
    }
    let hosts: Vec<&str> = v.split(',').map(str::trim).collect();
    if hosts
        .iter()
        .any(|h| h.is_empty() || h.contains(char::is_whitespace))
    {
        return None;
    }
    Some(hosts.join(","))
}

fn check_duration(v: &str) -> Option<String> {
    parse_duration_secs(v).map(|_| v.to_string())
}

fn check_bytes(v: &str) -> Option<String> {
    parse_bytes(v).map(|_| v.to_string())
}

fn check_count(v: &str) -> Option<String> {
    v.parse::<u32>()
        .ok()
        .filter(|n| *n <= 64)
        .map(|n| n.to_string())
}

fn one_of(v: &str, allowed: &[&str]) -> Option<String> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(v))
        .map(|a| a.to_string())
}

fn check_policy(v: &str) -> Option<String> {
    one_of(v, &["none", "size", "mtime", "majority"])
}

fn check_onoff(v: &str) -> Option<String> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "enable" | "1" => Some("on".into()),
        "off" | "false" | "no" | "disable" | "0" => Some("off".into()),
        _ => None,
    }
}

fn check_quorum(v: &str) -> Option<String> {
    one_of(v, &["none", "auto", "fixed"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert_eq!(validate("cluster.quorum-type", "AUTO").unwrap(), "auto");
        assert!(matches!(
            validate("cluster.nope", "1"),
            Err(OptionError::UnknownKey { .. })
        ));
        let e = validate("cluster.favorite-child-policy", "biggest").unwrap_err();
        assert!(
            e.to_string().contains("none, size, mtime or majority"),
            "{e}"
        );
        assert_eq!(validate("cluster.heal-rate-limit", "10M").unwrap(), "10M");
        assert!(validate("cluster.heal-rate-limit", "fast").is_err());
        assert_eq!(parse_bytes("10M"), Some(10 << 20));
        assert_eq!(parse_duration_secs("7d"), Some(7 * 86400));
        assert!(validate("auth.allow", "a,,b").is_err());
        assert_eq!(validate("auth.allow", "a, b").unwrap(), "a,b");
    }

    #[test]
    fn sizes_as_users_write_them() {
        let table: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("1048576", Some(1 << 20)),
            ("500K", Some(500 << 10)),
            ("500k", Some(500 << 10)),
            ("10M", Some(10 << 20)),
            ("1G", Some(1 << 30)),
            ("1MB", Some(1_000_000)),
            ("1 MB", Some(1_000_000)),
            ("10MiB", Some(10 << 20)),
            ("1.5MB", Some(1_500_000)),
            ("2KiB", Some(2048)),
            ("fast", None),
            ("", None),
            ("-1M", None),
            ("1MBB", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_bytes(text), *want, "{text}");
        }
        assert_eq!(validate("cluster.heal-rate-limit", "1MB").unwrap(), "1MB");
        assert!(validate("cluster.heal-rate-limit", "1 parsec").is_err());
    }

    #[test]
    fn durations_as_users_write_them() {
        let table: &[(&str, Option<u64>)] = &[
            ("3600", Some(3600)),
            ("30s", Some(30)),
            ("90m", Some(5400)),
            ("12h", Some(12 * 3600)),
            ("7d", Some(7 * 86400)),
            ("1h30m", Some(5400)),
            ("1h 30m", Some(5400)),
            ("soon", None),
            ("", None),
            ("-5s", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_duration_secs(text), *want, "{text}");
        }
        assert!(validate("cluster.conflict-retention", "1h30m").is_ok());
        assert!(validate("cluster.conflict-retention", "forever").is_err());
        assert_eq!(validate("features.trash-retention", "2s").unwrap(), "2s");
        assert!(validate("features.trash-retention", "a while").is_err());
    }

    #[test]
    fn on_off() {
        for (v, want) in [("on", "on"), ("OFF", "off"), ("enable", "on"), ("0", "off")] {
            assert_eq!(validate("features.trash", v).unwrap(), want, "{v}");
        }
        assert!(validate("features.trash", "maybe").is_err());
    }

    #[test]
    fn mass_delete_guard_shares() {
        let table: &[(&str, Option<&str>)] = &[
            ("50%", Some("50%")),
            ("50", Some("50%")),
            (" 75 % ", Some("75%")),
            ("100%", Some("100%")),
            ("1%", Some("1%")),
            ("off", Some("off")),
            ("OFF", Some("off")),
            ("0%", None),
            ("101%", None),
            ("-5%", None),
            ("half", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(
                validate("cluster.mass-delete-guard", text).ok().as_deref(),
                *want,
                "{text}"
            );
        }
        assert_eq!(parse_guard("off"), Some(None));
        assert_eq!(parse_guard("50%"), Some(Some(50)));
        assert_eq!(
            parse_guard(spec("cluster.mass-delete-guard").unwrap().default),
            Some(Some(50))
        );
    }

    #[test]
    fn unknown_key_lists_valid_ones() {
        let e = validate("bogus", "x").unwrap_err().to_string();
        for o in OPTIONS {
            assert!(e.contains(o.key), "{e}");
        }
    }
}
