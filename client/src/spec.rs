//! A mount's definition, stored in the node database so the daemon brings
//! the agent back after a restart.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which side wins on first attach when both have a differing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// The local folder's file wins.
    Local,
    /// The volume's file wins.
    Remote,
}

/// A mount definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Format marker of the stored form.
    pub format: u32,
    /// `HOST:/VOL` as given.
    pub source: String,
    /// HOST part.
    pub host: String,
    /// Volume name.
    pub volume: String,
    /// Absolute local folder.
    pub dir: PathBuf,
    /// First-attach preference.
    pub prefer: Option<Prefer>,
    /// Only receive.
    pub read_only: bool,
    /// Command run once per settled batch of applied changes.
    pub on_change: Option<String>,
    /// How long changes must settle before the command runs (default
    /// `hooks::DEFAULT_DELAY`).
    #[serde(default)]
    pub on_change_delay_ms: Option<u64>,
    /// Run the command for the first download too.
    #[serde(default)]
    pub on_change_initial: bool,
    /// This agent's replica id in version vectors.
    pub writer: u64,
    /// Window in which local changes form one changeset (default: the
    /// agent's debounce).
    #[serde(default)]
    pub settle_ms: Option<u64>,
    /// Command validating an incoming changeset before it goes live.
    #[serde(default)]
    pub validate: Option<String>,
    /// Longest run of the validator.
    #[serde(default)]
    pub validate_timeout_ms: Option<u64>,
    /// DIR is a symlink swapped to a new generation per changeset (see
    /// `atomic`); implies `read_only`.
    #[serde(default)]
    pub atomic: bool,
}

/// Current stored format.
pub const SPEC_FORMAT: u32 = 1;

/// Parses `HOST:/VOL`.
pub fn parse_source(s: &str) -> Option<(String, String)> {
    let (host, vol) = s.rsplit_once(":/")?;
    if host.is_empty() || vol.is_empty() || vol.contains('/') {
        return None;
    }
    Some((host.to_string(), vol.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source() {
        assert_eq!(
            parse_source("127.0.0.1:/conf"),
            Some(("127.0.0.1".into(), "conf".into()))
        );
        assert_eq!(parse_source("conf"), None);
        assert_eq!(parse_source("h:/a/b"), None);
        assert_eq!(parse_source(":/a"), None);
    }
}
