//! `--json --progress`: progress objects on stdout while a copy runs, one
//! per line, then the result object exactly as without --progress. The
//! copies are rate-limited so they take seconds whatever the machine.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::cli_common::*;
use crate::support::*;

/// Runs `ringxfer --json [--progress] copy --rate-limit 8MiB ARGS...`:
/// its progress objects, and its last line (the result).
fn copy(d: &Daemon, progress: bool, args: &[&Path]) -> (Vec<Value>, Value) {
    let mut c = cli(&d.socket);
    c.arg("--json");
    if progress {
        c.arg("--progress");
    }
    c.args(["copy", "--rate-limit", "8MiB"]).args(args);
    let out = run(c);
    assert_exit(&out, 0, "copy");
    let mut lines = json_lines(&out);
    let result = lines.pop().expect("a result line");
    assert!(
        result.get("event").is_none(),
        "the result is last: {result}"
    );
    assert!(
        lines.iter().all(|l| l["event"] == "progress"),
        "{}",
        describe(&out)
    );
    (lines, result)
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

/// Checks that the objects advance: bytes and files never go back, some
/// object was printed while bytes were still moving, the last says the
/// copy is whole; returns how many were printed mid-copy.
fn check_advancing(objects: &[Value], bytes: u64, files: u64) -> usize {
    let last = objects.last().expect("at least the final progress object");
    for pair in objects.windows(2) {
        for field in ["bytes", "files_done", "elapsed_s"] {
            assert!(
                pair[0][field].as_f64() <= pair[1][field].as_f64(),
                "{field} went back: {} then {}",
                pair[0],
                pair[1]
            );
        }
    }
    let during: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            let b = o["bytes"].as_u64().unwrap();
            b > 0 && b < bytes
        })
        .collect();
    for o in &during {
        assert_eq!(o["op"], "copy", "{o}");
        assert_eq!(o["total_bytes"], bytes, "{o}");
        assert_eq!(o["files_total"], files, "{o}");
        let rate = o["rate_bps"].as_f64().unwrap();
        assert!(rate > 0.0 && o["eta_s"].as_f64().unwrap() > 0.0, "{o}");
        assert!(o["current"].is_string(), "{o}");
    }
    assert_eq!(
        (
            &last["bytes"],
            &last["total_bytes"],
            &last["files_done"],
            &last["files_total"],
            &last["total_known"]
        ),
        (
            &Value::from(bytes),
            &Value::from(bytes),
            &Value::from(files),
            &Value::from(files),
            &Value::Bool(true)
        ),
        "{last}"
    );
    during.len()
}

/// Eight files of 4 MiB at 8 MiB/s for all of them: about four seconds,
/// a progress object a second whose bytes grow while the files move, then
/// the summary with the same fields as without --progress.
#[test]
fn json_progress_streams_objects_that_advance_during_a_multi_file_copy() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..8 {
        make_file(&src, &format!("f{i}"), 4 << 20, i);
    }
    let (objects, summary) = copy(&d, true, &[Path::new("-r"), &src, &dir.path().join("a")]);
    let during = check_advancing(&objects, 32 << 20, 8);
    assert!(during >= 2, "objects while copying: {objects:?}");
    assert_eq!(summary["files"], 8, "{summary}");
    let (none, plain) = copy(&d, false, &[Path::new("-r"), &src, &dir.path().join("b")]);
    assert!(none.is_empty(), "progress only when asked: {none:?}");
    assert_eq!(keys(&summary), keys(&plain), "{summary} against {plain}");
}

/// One file: objects name it, and the result is the one without --progress.
#[test]
fn json_progress_of_one_file_names_it_and_keeps_the_result() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "big", 20 << 20, 1);
    let (objects, result) = copy(&d, true, &[&src, &dir.path().join("a")]);
    let during = check_advancing(&objects, 20 << 20, 1);
    assert!(during >= 1, "objects while copying: {objects:?}");
    assert!(
        objects
            .iter()
            .all(|o| o["current"] == src.display().to_string()),
        "{objects:?}"
    );
    let (_, plain) = copy(&d, false, &[&src, &dir.path().join("b")]);
    assert_eq!(keys(&result), keys(&plain), "{result} against {plain}");
    assert_eq!(result["bytes"], 20 << 20);
}
