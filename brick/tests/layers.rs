//! One dependency direction inside the brick crate: no module imports a
//! module that imports it back, directly or through others. Read from the
//! sources: every `crate::a::b` and `super::x` path outside comments and
//! test modules is an edge to the longest module it names, and a
//! directory module (`mod.rs`) using one of its own files is an edge too.
//! A file naming its parent directory's items (`super::Brick`) is not: a
//! directory's files share its private types by design.
//!
//! The mount agent's crate (`client/`) is held to the same rule.
//!
//! The files of `node/` (the composition layer) are held to it too:
//! management commands -> brick lifecycle, connections -> the node's
//! request service -> consensus, disks, the node database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name ("store::apply") -> source file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read src dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src").with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
            parts.pop();
        }
        out.insert(parts.join("::"), f);
    }
    out
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths (`a::b::c`) written after `prefix` in `code`, including the
/// items of a `prefix{a, b::c}` group.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let p: String = item.trim().chars().take_while(|c| ident(*c)).collect();
                out.push(p);
            }
            continue;
        }
        let p: String = rest.chars().take_while(|c| ident(*c)).collect();
        out.push(p.trim_end_matches(':').to_string());
    }
    out
}

/// The module a path names: its longest prefix that is a module.
fn resolve(mods: &BTreeMap<String, PathBuf>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| mods.contains_key(m))
}

fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, file) in &mods {
        let text = code(&std::fs::read_to_string(file).expect("read source"));
        let parent: Vec<&str> = m.split("::").collect();
        let parent = parent[..parent.len().saturating_sub(1)].join("::");
        let mut targets: Vec<String> = paths_after(&text, "crate::")
            .iter()
            .filter_map(|p| resolve(&mods, p))
            .collect();
        for p in paths_after(&text, "super::") {
            let full = if parent.is_empty() {
                p
            } else {
                format!("{parent}::{p}")
            };
            targets.extend(resolve(&mods, &full));
        }
        // A directory module using its own files.
        if file.ends_with("mod.rs") {
            for child in mods.keys().filter_map(|k| {
                k.strip_prefix(&format!("{m}::"))
                    .filter(|c| !c.contains("::"))
                    .map(|c| (k, c))
            }) {
                let (full, name) = child;
                let used = !paths_after(&text, &format!("{name}::")).is_empty()
                    || text.contains(&format!("use {name};"));
                if used {
                    targets.push(full.clone());
                }
            }
        }
        for t in targets {
            // A file naming its own ancestors is not an import.
            if t == *m || m.starts_with(&format!("{t}::")) {
                continue;
            }
            out.entry(m.clone()).or_default().insert(t);
        }
        out.entry(m.clone()).or_default();
    }
    out
}

/// Strongly connected components with more than one module.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two modules are in one component when each reaches the other.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for t in g.get(&n).into_iter().flatten() {
                if seen.insert(t.clone()) {
                    todo.push(t.clone());
                }
            }
        }
        seen
    };
    let all: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|k| (k, reach(k))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for (k, r) in &all {
        if placed.contains(*k) || !r.contains(*k) {
            continue;
        }
        let comp: Vec<String> = r
            .iter()
            .filter(|o| all.get(o).is_some_and(|ro| ro.contains(*k)))
            .cloned()
            .collect();
        placed.extend(comp.iter().cloned());
        if comp.len() > 1 {
            out.push(comp);
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = edges(&src);
    assert!(g.len() > 20, "the sources were not read: {g:?}");
    let found = cycles(&g);
    let explain: Vec<String> = found
        .iter()
        .map(|c| {
            let lines: Vec<String> = c
                .iter()
                .map(|m| {
                    let inside: Vec<&String> = g[m].iter().filter(|t| c.contains(*t)).collect();
                    format!("  {m} -> {inside:?}")
                })
                .collect();
            format!("loop:\n{}", lines.join("\n"))
        })
        .collect();
    assert!(found.is_empty(), "{}", explain.join("\n"));
}

/// The same rule for the mount agent's crate (gsync-client), beside this
/// one in the workspace: the agent's loop lends its mount to the executor
/// (`sync`), which never reaches back into the agent.
#[test]
fn the_client_crate_has_one_direction_too() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/src");
    let g = edges(&src);
    assert!(g.len() > 10, "the sources were not read: {g:?}");
    assert!(
        g.get("agent").is_some_and(|t| t.contains("sync")),
        "the agent uses sync: {g:?}"
    );
    let found = cycles(&g);
    assert!(found.is_empty(), "loops: {found:?}\n{g:?}");
}

#[test]
fn the_check_sees_a_loop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("store")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod a; pub mod store;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::store::Brick;\n").expect("write");
    std::fs::write(
        src.join("store/mod.rs"),
        "mod apply;\npub use apply::f;\npub struct Brick;\n",
    )
    .expect("write");
    // Names its parent's item (not an import) and calls a top-level
    // module that imports the parent (a loop: a -> store -> apply -> a).
    std::fs::write(
        src.join("store/apply.rs"),
        "use super::Brick;\n// crate::ignored in a comment\nfn f() { crate::a::g(); }\n",
    )
    .expect("write");
    let g = edges(src);
    assert_eq!(
        cycles(&g),
        vec![vec![
            "a".to_string(),
            "store".to_string(),
            "store::apply".to_string()
        ]],
        "{g:?}"
    );
    // Without the call back, no loop.
    std::fs::write(
        src.join("store/apply.rs"),
        "use super::Brick;\npub fn f() {}\n",
    )
    .expect("write");
    assert!(cycles(&edges(src)).is_empty());
}

/// `store/` owns one brick's files and metadata: it never names a wire
/// message, a frame, the node, a connection or the services above it (the
/// brick service turns its results into answers).
#[test]
fn the_store_knows_no_messages_streams_or_services() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = edges(&src);
    let above = [
        "wire::proto",
        "wire::frame",
        "node",
        "service",
        "host",
        "replicate",
        "crawl",
        "net",
        "control",
    ];
    let mut bad = Vec::new();
    for (m, targets) in g.iter().filter(|(m, _)| m.starts_with("store")) {
        for t in targets {
            if above
                .iter()
                .any(|a| t == a || t.starts_with(&format!("{a}::")))
            {
                bad.push(format!("{m} -> {t}"));
            }
        }
    }
    assert!(
        g.keys().any(|m| m == "store::apply"),
        "the sources were not read"
    );
    assert!(bad.is_empty(), "the store imports layers above it: {bad:?}");
}
