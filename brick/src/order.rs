//! The order in which a set of changes goes out, wherever a batch of paths
//! is sent (a brick to a peer brick, a mount to its brick): existing paths
//! parents first, then deletions children first. A child never overtakes
//! its parent (the receiver would have to make the parent up), and a
//! rename's new path arrives, reusing the content, before the old path's
//! deletion. Paths of one depth may go out concurrently.

use std::cmp::Reverse;
use std::collections::BTreeMap;

/// Splits `items` (each with its path's depth and whether it is a
/// deletion) into groups sent one after the other: existing paths by
/// depth, shallowest first, then deletions by depth, deepest first. Within
/// a group the input order is kept.
pub fn push_groups<T>(items: impl IntoIterator<Item = (T, usize, bool)>) -> Vec<Vec<T>> {
    let mut live: BTreeMap<usize, Vec<T>> = BTreeMap::new();
    let mut gone: BTreeMap<Reverse<usize>, Vec<T>> = BTreeMap::new();
    for (item, depth, deletion) in items {
        if deletion {
            gone.entry(Reverse(depth)).or_default().push(item);
        } else {
            live.entry(depth).or_default().push(item);
        }
    }
    live.into_values().chain(gone.into_values()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_first_then_deletions_children_first() {
        // (path, deletion) -> groups
        type Case<'a> = (Vec<(&'a str, bool)>, Vec<Vec<&'a str>>);
        let table: Vec<Case<'_>> = vec![
            (vec![], vec![]),
            (vec![("a", false)], vec![vec!["a"]]),
            // A child listed before its parent still goes after it.
            (
                vec![("d/e/f", false), ("d", false), ("d/e", false), ("x", false)],
                vec![vec!["d", "x"], vec!["d/e"], vec!["d/e/f"]],
            ),
            // A rename: the new path first, the old one's deletion after.
            (
                vec![
                    ("old/f", true),
                    ("new/f", false),
                    ("new", false),
                    ("old", true),
                ],
                vec![vec!["new"], vec!["new/f"], vec!["old/f"], vec!["old"]],
            ),
            // Deletions only: deepest first, same depth together.
            (
                vec![("t", true), ("t/a", true), ("t/b", true), ("t/a/1", true)],
                vec![vec!["t/a/1"], vec!["t/a", "t/b"], vec!["t"]],
            ),
        ];
        for (input, want) in table {
            let items = input
                .iter()
                .map(|(p, del)| (*p, p.matches('/').count() + 1, *del));
            assert_eq!(push_groups(items), want, "{input:?}");
        }
    }
}
