//! Validated volume-relative paths.
//!
//! Every path that arrives from the network or from a mount becomes a
//! [`RelPath`] before it can reach a store: relative, `/`-separated,
//! normalised, and free of `..`, `.`, empty components, NUL bytes and the
//! reserved `.gsync` directory. Resolving a `RelPath` against a brick never
//! follows symlinks out of the brick (see `store::files`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the directory, at the top of every brick and mount, that holds
/// gsync's own data. It is never replicated.
pub const RESERVED: &str = ".gsync";

/// Longest accepted path, in bytes.
pub const MAX_PATH: usize = 4096;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty path (the volume root is not a valid target).
    #[error("empty path")]
    Empty,
    /// Starts with `/`.
    #[error("absolute path {0:?}")]
    Absolute(String),
    /// Contains `..`, `.` or an empty component.
    #[error("path {0:?} has a `..`, `.` or empty component")]
    BadComponent(String),
    /// Contains a NUL byte.
    #[error("path contains a NUL byte")]
    Nul,
    /// Inside the reserved `.gsync` directory.
    #[error("path {0:?} is inside the reserved .gsync directory")]
    Reserved(String),
    /// Longer than [`MAX_PATH`].
    #[error("path longer than {MAX_PATH} bytes")]
    TooLong,
}

/// A validated, normalised path relative to a volume root.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RelPath(String);

impl RelPath {
    /// Validates `s`.
    pub fn new(s: &str) -> Result<Self, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > MAX_PATH {
            return Err(PathError::TooLong);
        }
        if s.contains('\0') {
            return Err(PathError::Nul);
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s.to_string()));
        }
        for (i, c) in s.split('/').enumerate() {
            if c.is_empty() || c == "." || c == ".." {
                return Err(PathError::BadComponent(s.to_string()));
            }
            if i == 0 && c == RESERVED {
                return Err(PathError::Reserved(s.to_string()));
            }
        }
        Ok(Self(s.to_string()))
    }

    /// Builds a `RelPath` from a path below `root` found on the local disk.
    pub fn from_local(root: &Path, full: &Path) -> Result<Self, PathError> {
        let rel = full
            .strip_prefix(root)
            .map_err(|_| PathError::Absolute(full.display().to_string()))?;
        let s = rel.to_str().ok_or(PathError::Nul)?;
        Self::new(s)
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path below `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// The parent path, or `None` at the top level.
    pub fn parent(&self) -> Option<Self> {
        self.0.rsplit_once('/').map(|(p, _)| Self(p.to_string()))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, n)| n)
    }

    /// True if `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &Self) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// Depth (number of components).
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        for p in [
            "a",
            "a/b",
            "a.txt",
            "dir/.hidden",
            "x/.gsync",
            "..a",
            "a..b",
        ] {
            assert!(RelPath::new(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn refuses_hostile_paths() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/..",
            "./a",
            "a//b",
            "a/",
            ".gsync",
            ".gsync/db",
            "a\0b",
        ] {
            assert!(RelPath::new(p).is_err(), "{p:?}");
        }
        assert_eq!(
            RelPath::new(&"a".repeat(MAX_PATH + 1)),
            Err(PathError::TooLong)
        );
    }

    #[test]
    fn deserialize_validates() {
        let bytes = crate::wire::codec::encode(&"../etc".to_string()).unwrap();
        assert!(crate::wire::codec::decode::<RelPath>(&bytes).is_err());
    }

    #[test]
    fn prefix_and_parent() {
        let a = RelPath::new("a/b/c").unwrap();
        assert!(a.starts_with(&RelPath::new("a/b").unwrap()));
        assert!(!a.starts_with(&RelPath::new("a/bc").unwrap()));
        assert_eq!(a.parent().unwrap().as_str(), "a/b");
        assert_eq!(a.file_name(), "c");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".*") {
            let _ = RelPath::new(&s);
        }
    }
}
