//! Job control from the command line: --detach, `wait`, `status`, `jobs`,
//! `cancel`, rate limits, verification, and `stats`.

use std::fs;
use std::time::Duration;

use crate::cli_common::*;
use crate::support::*;

/// Submits a detached copy and returns the id it printed.
fn detach_copy(d: &Daemon, args: &[&str], src: &std::path::Path, dst: &std::path::Path) -> u64 {
    let mut c = cli(&d.socket);
    c.args(["--json", "copy", "--detach"])
        .args(args)
        .arg(src)
        .arg(dst);
    let out = run(c);
    assert_exit(&out, 0, "copy --detach");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert_eq!(lines[0]["detached"], true, "{}", describe(&out));
    lines[0]["job"]
        .as_u64()
        .unwrap_or_else(|| panic!("no job id: {}", describe(&out)))
}

#[test]
fn commands_that_need_the_daemon_exit_3_without_one() {
    let dir = tmpdir();
    let sock = no_daemon_socket(dir.path());
    let (src, _) = make_file(dir.path(), "src", 10, 400);
    let dst = dir.path().join("dst");
    for args in [
        &["jobs"][..],
        &["status", "1"],
        &["wait", "1"],
        &["cancel", "1"],
        &["stats"],
    ] {
        let mut c = cli(&sock);
        c.args(args);
        let out = run(c);
        assert_exit(&out, 3, &args.join(" "));
        assert!(
            stderr(&out).contains(&sock.display().to_string()),
            "{args:?} should name the socket: {}",
            describe(&out)
        );
    }
    // --detach makes no sense with an engine that dies with this process.
    let mut c = cli(&sock);
    c.args(["copy", "--detach"]).arg(&src).arg(&dst);
    let out = run(c);
    assert_exit(&out, 3, "copy --detach without a daemon");
    assert!(stderr(&out).contains("--detach"), "{}", describe(&out));
    assert!(!dst.exists());
}

#[test]
fn new_flags_are_checked_before_anything_runs() {
    let dir = tmpdir();
    let sock = no_daemon_socket(dir.path());
    let (src, _) = make_file(dir.path(), "src", 10, 401);
    let dst = dir.path().join("dst");
    for args in [
        &["copy", "--priority", "urgent"][..],
        &["copy", "--rate-limit", "0"],
        &["copy", "--rate-limit", "fast"],
        &["copy", "--detach", "--preserve"],
        &["copy", "-r", "--offset", "10"],
        &["copy", "-r", "--detach"],
    ] {
        let mut c = cli(&sock);
        c.args(args).arg(&src).arg(&dst);
        let out = run(c);
        assert_exit(&out, 2, &args.join(" "));
        assert!(!dst.exists(), "{args:?} created the destination");
    }
    // Accepted, and run (in-process: no daemon).
    let mut c = cli(&sock);
    c.args([
        "copy",
        "--priority",
        "high",
        "--rate-limit",
        "500MiB/s",
        "--fsync",
    ])
    .arg(&src)
    .arg(&dst);
    let out = run(c);
    assert_exit(&out, 0, "copy with priority, rate limit and fsync");
}

#[test]
fn stats_shows_strategies_and_the_ring() {
    let d = Daemon::start();
    let dir = tmpdir();
    copy_and_check(&d.client(), dir.path(), "pre-stats", 4096, 402);
    let mut c = cli(&d.socket);
    c.arg("stats");
    let out = run(c);
    assert_exit(&out, 0, "stats");
    let text = String::from_utf8_lossy(&out.stdout);
    for part in [
        "jobs:",
        "1 completed",
        "ring:",
        "enter calls",
        "pipes:",
        "buffers:",
    ] {
        assert!(text.contains(part), "{part:?} missing: {text}");
    }
    let mut c = cli(&d.socket);
    c.args(["--json", "stats"]);
    let out = run(c);
    assert_exit(&out, 0, "stats --json");
    let v = &json_lines(&out)[0];
    assert!(v["bytes_per_enter"].as_f64().is_some(), "{v}");
    assert!(v["enter_calls"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(v["strategies"].is_array(), "{v}");
}

#[test]
fn status_of_an_unknown_job_exits_1_naming_it() {
    let d = Daemon::start();
    let mut c = cli(&d.socket);
    c.args(["status", "987654"]);
    let out = run(c);
    assert_exit(&out, 1, "status of an unknown id");
    assert!(stderr(&out).contains("987654"), "{}", describe(&out));

    let mut c = cli(&d.socket);
    c.args(["wait", "987654"]);
    let out = run(c);
    assert_exit(&out, 1, "wait for an unknown id");
    assert!(stderr(&out).contains("987654"), "{}", describe(&out));

    let mut c = cli(&d.socket);
    c.args(["cancel", "987654"]);
    let out = run(c);
    assert_exit(&out, 1, "cancel of an unknown id");
    assert!(stderr(&out).contains("987654"), "{}", describe(&out));
}

#[test]
fn detach_prints_the_id_and_wait_reports_the_result() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 3 << 20, 403);
    let dst = dir.path().join("dst");
    let job = detach_copy(&d, &["--verify"], &src, &dst);

    // Plain text: the id alone on stdout.
    let dst2 = dir.path().join("dst2");
    let mut c = cli(&d.socket);
    c.args(["copy", "--detach"]).arg(&src).arg(&dst2);
    let out = run(c);
    assert_exit(&out, 0, "copy --detach (text)");
    let job2: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("stdout is not an id ({e}): {}", describe(&out)));
    assert_ne!(job, job2);

    // From another invocation (another connection).
    let mut c = cli(&d.socket);
    c.args(["--json", "wait", &job.to_string()]);
    let out = run(c);
    assert_exit(&out, 0, "wait ID");
    let v = &json_lines(&out)[0];
    assert_eq!(v["job"], job, "{v}");
    assert_eq!(v["bytes"], data.len() as u64, "{v}");
    assert_eq!(
        v["checksums"]["source"], v["checksums"]["destination"],
        "{v}"
    );
    assert_file_eq(&dst, &data);

    let mut c = cli(&d.socket);
    c.args(["wait", &job2.to_string()]);
    let out = run(c);
    assert_exit(&out, 0, "wait ID (text)");
    assert!(
        stderr(&out).contains(&format!("job {job2}")),
        "{}",
        describe(&out)
    );

    // A finished job is still known to `status`.
    let mut c = cli(&d.socket);
    c.args(["--json", "status", &job.to_string()]);
    let out = run(c);
    assert_exit(&out, 0, "status of a finished job");
    assert_eq!(
        json_lines(&out)[0]["state"],
        "completed",
        "{}",
        describe(&out)
    );
}

#[test]
fn jobs_lists_a_throttled_job_and_cancel_stops_it() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 32 << 20, 404);
    let dst = dir.path().join("dst");
    // 32 MiB at 1 MiB/s: half a minute, far longer than the test needs.
    let job = detach_copy(
        &d,
        &["--rate-limit", "1MiB", "--priority", "low"],
        &src,
        &dst,
    );

    let listed = poll_until(Duration::from_secs(10), || {
        let mut c = cli(&d.socket);
        c.args(["--json", "jobs"]);
        let out = run(c);
        json_lines(&out).iter().any(|v| {
            v["job"] == job
                && v["priority"] == "low"
                && v["rate_limit"] == (1u64 << 20)
                && v["bytes"].as_u64().unwrap_or(0) > 0
        })
    });
    assert!(listed, "job {job} never listed as moving bytes");
    let mut c = cli(&d.socket);
    c.arg("jobs");
    let out = run(c);
    assert_exit(&out, 0, "jobs (text)");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&src.display().to_string()),
        "{}",
        describe(&out)
    );

    // The daemon publishes a detached copy only once it completes: the
    // name is absent while the job runs, as for an attached copy.
    let dst_attached = dir.path().join("attached");
    let mut attached = cli(&d.socket);
    attached
        .args(["copy", "--rate-limit", "4MiB"])
        .arg(&src)
        .arg(&dst_attached)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = attached.spawn().expect("spawn ringxfer copy");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !dst.exists(),
        "a detached copy's name appeared while it ran"
    );
    assert!(
        !dst_attached.exists(),
        "the destination's name appeared before the copy completed"
    );
    let _ = child.kill();
    let _ = child.wait();

    let mut c = cli(&d.socket);
    c.args(["cancel", &job.to_string()]);
    let out = run(c);
    assert_exit(&out, 0, "cancel ID");
    assert!(stderr(&out).contains("cancelled"), "{}", describe(&out));

    let mut c = cli(&d.socket);
    c.args(["wait", &job.to_string()]);
    let out = run(c);
    assert_exit(&out, 1, "wait for a cancelled job");
    assert!(stderr(&out).contains("cancelled"), "{}", describe(&out));
    assert!(fs::metadata(&dst).map(|m| m.len()).unwrap_or(0) < 32 << 20);
}
