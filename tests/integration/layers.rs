//! The CLI's modules form layers: each uses only modules below it, so that
//! there is no circle and a newcomer can read them bottom up. This test
//! fails on an upward `crate::` path; moving a module means moving it in
//! `CLI_LAYERS` too, on purpose.

use std::path::Path;

/// `src/bin/ringxfer`'s modules, lowest first.
const CLI_LAYERS: &[&str] = &[
    "c_pow",
    "error",
    "args",
    "progress_json",
    "progress",
    "fdlimit",
    "files",
    "dir_fds",
    "cheap_copy",
    "staging",
    "signals",
    "backup",
    "report",
    "listing",
    "xattrs",
    "engine_handle",
    "job_plan",
    "context",
    "specials",
    "staged_dirs",
    "hardlinks",
    "read_ahead",
    "walk",
    "walk_ahead",
    "pipeline",
    "tree",
    "pull_part",
    "remote_stripes",
    "remote",
    "remote_listing",
    "remote_tree",
    "remote_pull_tree",
    "commands",
    "control",
    "stats",
    "docs",
    "main",
];

/// The modules a source file names with `crate::NAME`, comments left out.
fn uses(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn cli_modules_use_only_lower_layers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/ringxfer");
    let mut upward = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("read src/bin/ringxfer") {
        let path = entry.expect("entry").path();
        let Some(module) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let rank = CLI_LAYERS
            .iter()
            .position(|m| *m == module)
            .unwrap_or_else(|| panic!("{module}.rs is not in CLI_LAYERS: give it a layer"));
        files += 1;
        let source = std::fs::read_to_string(&path).expect("read a module");
        for used in uses(&source) {
            match CLI_LAYERS.iter().position(|m| *m == used) {
                Some(r) if r < rank => {}
                Some(_) => upward.push(format!("{module} uses {used}")),
                None => {} // an item of main.rs (crate::Context re-exports, say)
            }
        }
    }
    assert_eq!(
        files,
        CLI_LAYERS.len(),
        "a module in CLI_LAYERS has no file"
    );
    assert!(upward.is_empty(), "upward or sideways uses: {upward:?}");
}

/// The library's modules (`src/NAME.rs` or `src/NAME/`), lowest first. The
/// I/O layer knows nothing of transfers, transfers nothing of the wire, the
/// wire nothing of the engine that drives them; the daemon's plumbing and
/// `--check` sit on top.
const LIB_LAYERS: &[&str] = &[
    "duration",
    "size",
    "residency",
    "fdtable",
    "privileges",
    "ktls",
    "tls",
    "io",
    "transfer",
    "server",
    "engine",
    "settings",
    "embedded",
    "daemon",
    "check",
];

/// The top-level modules a source file names with `crate::NAME` or inside
/// `crate::{...}`, and the longest run of `super::` in it, comments left out.
fn crate_uses(source: &str) -> (Vec<String>, usize) {
    let mut names = uses(source);
    let mut climbs = 0;
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("super::") {
            let run = code[at..].matches("super::").count().min(
                code[at..]
                    .split("super::")
                    .skip(1)
                    .take_while(|rest| rest.is_empty())
                    .count()
                    + 1,
            );
            climbs = climbs.max(run);
        }
        if let Some(at) = code.find("crate::{") {
            let inside = &code[at + "crate::{".len()..];
            let inside = inside.split('}').next().unwrap_or("");
            for name in inside.split(',') {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    (names, climbs)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// How deep below its top-level module a file's module is: `src/io/mod.rs`
/// 0, `src/io/ring.rs` 1, `src/io/threads/sqe.rs` 2. A run of more
/// `super::` than that leaves the module for the crate root.
fn depth(rel: &Path) -> usize {
    let parts: Vec<_> = rel.iter().collect();
    let last_is_mod = rel.file_stem().is_some_and(|s| s == "mod");
    // parts: "src", then the module's file, or its directory, ..., a file
    if parts.len() <= 2 {
        return 0;
    }
    parts.len() - 2 - usize::from(last_is_mod)
}

/// What in `sources` (path under the crate, text) of the top-level module
/// `module` reaches a module not below it.
fn upward(module: &str, sources: &[(String, String)]) -> Vec<String> {
    let rank = |m: &str| LIB_LAYERS.iter().position(|l| *l == m);
    let own = rank(module)
        .unwrap_or_else(|| panic!("src/{module} is not in LIB_LAYERS: give it a layer"));
    let mut found = Vec::new();
    for (path, source) in sources {
        let (names, climbs) = crate_uses(source);
        for name in names {
            match rank(&name) {
                Some(r) if r < own || name == module => {}
                _ => found.push(format!("{path} uses crate::{name}")),
            }
        }
        // An inline module (`mod tests { use super::*; }`) is one level
        // deeper than its file.
        let inline = usize::from(source.lines().any(|l| {
            let l = l.trim_start();
            (l.starts_with("mod ") || l.starts_with("pub mod ")) && l.ends_with('{')
        }));
        if climbs > depth(Path::new(path)) + inline {
            found.push(format!("{path} climbs out of src/{module} with super::"));
        }
    }
    found
}

/// The sources of each of the library's top-level modules.
fn library_sources() -> Vec<(String, Vec<(String, String)>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(root.join("src")).expect("read src") {
        let path = entry.expect("entry").path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if name == "lib" || name == "bin" {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else {
            files.push(path.clone());
        }
        let sources = files
            .iter()
            .map(|p| {
                let rel = p.strip_prefix(root).unwrap_or(p).display().to_string();
                (rel, std::fs::read_to_string(p).expect("read a module"))
            })
            .collect();
        modules.push((name.to_string(), sources));
    }
    modules
}

#[test]
fn library_modules_use_only_lower_layers() {
    let modules = library_sources();
    assert_eq!(
        modules.len(),
        LIB_LAYERS.len(),
        "a module in LIB_LAYERS has no file"
    );
    let io = modules.iter().find(|(m, _)| m == "io").expect("src/io");
    assert!(io.1.len() >= 8, "src/io has too few files: {}", io.1.len());
    let found: Vec<String> = modules.iter().flat_map(|(m, s)| upward(m, s)).collect();
    assert!(found.is_empty(), "upward or sideways uses: {found:#?}");
}

#[test]
fn an_upward_use_is_caught() {
    for bad in [
        "use crate::engine::Engine;",
        "use crate::transfer::Endpoints;",
        "fn f(_: crate::server::session::RecvBuf) {}",
        "use crate::{io, settings};",
        "use super::super::jobs;",
        "use crate::nowhere::Thing;",
    ] {
        let sources = [("src/io/x.rs".to_string(), bad.to_string())];
        assert_eq!(upward("io", &sources).len(), 1, "not caught: {bad}");
    }
    let fine = [
        (
            "src/io/x.rs".to_string(),
            "use crate::privileges::Identity; // crate::engine in a comment".to_string(),
        ),
        (
            "src/io/threads/y.rs".to_string(),
            "use super::super::ops::Op;".to_string(),
        ),
        (
            "src/io/x.rs".to_string(),
            "use crate::io::ops::Op; use super::ops;".to_string(),
        ),
    ];
    assert!(upward("io", &fine).is_empty(), "{:?}", upward("io", &fine));
}
