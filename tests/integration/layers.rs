//! The CLI's modules form layers: each uses only modules below it, so that
//! there is no circle and a newcomer can read them bottom up. This test
//! fails on an upward `crate::` path; moving a module means moving it in
//! `CLI_LAYERS` too, on purpose.

use std::path::Path;

/// `src/bin/ringxfer`'s modules, lowest first.
const CLI_LAYERS: &[&str] = &[
    "error",
    "args",
    "progress",
    "fdlimit",
    "files",
    "staging",
    "signals",
    "report",
    "listing",
    "engine_handle",
    "job_plan",
    "context",
    "staged_dirs",
    "walk",
    "walk_ahead",
    "pipeline",
    "tree",
    "commands",
    "control",
    "stats",
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

/// The layers above the I/O layer: `src/io` must name none of them.
const ABOVE_IO: &[&str] = &[
    "engine", "transfer", "server", "settings", "check", "embedded",
];

/// The top-level modules a source file names with `crate::NAME` or inside
/// `crate::{...}`, and whether it climbs out of its module with
/// `super::super`, comments left out.
fn crate_uses(source: &str) -> (Vec<String>, bool) {
    let mut names = uses(source);
    let mut climbs = false;
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        climbs |= code.contains("super::super");
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

/// What in `sources` (path, text) reaches above the I/O layer.
fn upward_from_io(sources: &[(String, String)]) -> Vec<String> {
    let mut upward = Vec::new();
    for (path, source) in sources {
        let (names, climbs) = crate_uses(source);
        for name in names.iter().filter(|n| ABOVE_IO.contains(&n.as_str())) {
            upward.push(format!("{path} uses crate::{name}"));
        }
        if climbs {
            upward.push(format!("{path} uses super::super"));
        }
    }
    upward
}

#[test]
fn the_io_layer_imports_nothing_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/io"), &mut files);
    assert!(files.len() >= 8, "src/io has too few files: {files:?}");
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap_or(p).display().to_string();
            (rel, std::fs::read_to_string(p).expect("read an io module"))
        })
        .collect();
    let upward = upward_from_io(&sources);
    assert!(upward.is_empty(), "src/io reaches above itself: {upward:?}");
}

#[test]
fn an_upward_use_from_the_io_layer_is_caught() {
    for bad in [
        "use crate::engine::Engine;",
        "use crate::transfer::Endpoints;",
        "fn f(_: crate::server::session::RecvBuf) {}",
        "use crate::{io, settings};",
        "use super::super::jobs;",
    ] {
        let sources = [("src/io/x.rs".to_string(), bad.to_string())];
        assert_eq!(upward_from_io(&sources).len(), 1, "not caught: {bad}");
    }
    let fine = [(
        "src/io/x.rs".to_string(),
        "use crate::privileges::Identity; // crate::engine in a comment".to_string(),
    )];
    assert!(upward_from_io(&fine).is_empty());
}
