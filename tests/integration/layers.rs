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
