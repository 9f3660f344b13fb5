//! Rate limits: per job, per group of a connection's jobs (what the CLI's
//! --rate-limit is for several files) and for the whole daemon, measured
//! by the receiving end of a socket; the Throttled state; limits on the
//! buffered strategies.
//!
//! Sources are sparse memfds (zero pages), so nothing but the limit holds a
//! job back. Rates are measured by a thread draining the socket, over a
//! window that starts a second after the first byte (past a token bucket's
//! start-up burst).

use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use ringxfer_ipc::{
    Client, FailureKind, JobHandle, JobState, RateGroup, Strategy, TransferOptions,
};

use crate::cli_common::*;
use crate::support::*;

const ENDLESS: u64 = 1 << 50;
const SETTLE: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(5);

/// What the daemon's 5% target allows over `WINDOW`, plus 2.5 MiB: what can
/// sit between the daemon and the receiver at each end of the window (a
/// 1 MiB pooled pipe and the socket's buffer) blurs the count by that much.
fn tolerance(rate: f64) -> f64 {
    0.05 * rate + 2.5 * MIB as f64 / WINDOW.as_secs_f64()
}

/// An endless job into a Unix socket drained by a thread.
fn submit_drained(c: &Client, o: &TransferOptions) -> (JobHandle, Drain, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let drain = Drain::start(theirs);
    let src = zero_source(ENDLESS);
    let h = c
        .submit(src.as_fd(), ours.as_fd(), o)
        .unwrap_or_else(|e| panic!("submit: {e:?}"));
    (h, drain, ours)
}

/// Cancels a job and checks it ends as cancelled; then ends its drain.
fn cancel_and_end(c: &std::sync::Arc<Client>, h: JobHandle, drain: Drain, ours: UnixStream) {
    cancel_job(c, id_of(&h)).expect("cancel");
    failed(
        wait_within(h, Duration::from_secs(10)),
        FailureKind::Cancelled,
        "rate-limited job",
    );
    ours.shutdown(Shutdown::Both).unwrap();
    drop(ours);
    drain.finish(Duration::from_secs(10));
}

#[test]
fn per_job_rate_limit_holds_within_five_percent() {
    let d = Daemon::start();
    let c = shared_client(&d);
    let limit = 20 * MIB;
    let (h, drain, ours) = submit_drained(
        &c,
        &TransferOptions {
            rate_limit: Some(limit),
            ..opts()
        },
    );
    let rate = drain_rate(&drain, SETTLE, WINDOW, "20 MiB/s job");
    let want = limit as f64;
    eprintln!(
        "limit {:.1} MiB/s, received {:.2} MiB/s",
        want / MIB as f64,
        rate / MIB as f64
    );
    assert!(
        (rate - want).abs() <= tolerance(want),
        "received {:.2} MiB/s under a {:.0} MiB/s limit (tolerance {:.2})",
        rate / MIB as f64,
        want / MIB as f64,
        tolerance(want) / MIB as f64
    );
    let info = status_of(&c, id_of(&h)).expect("status");
    assert_eq!(info.rate_limit, Some(limit), "{info:?}");
    assert!(
        info.rate as f64 > want * 0.5 && (info.rate as f64) < want * 1.5,
        "the daemon's own rate of the job: {info:?}"
    );
    cancel_and_end(&c, h, drain, ours);
}

#[test]
fn global_rate_limit_is_shared_by_two_jobs() {
    let d = Daemon::start_with(&["--rate-limit", "20MiB"]);
    let c = shared_client(&d);
    let limit = 20 * MIB;
    assert_eq!(stats_of(&c).rate_limit, Some(limit));
    let (h1, drain1, ours1) = submit_drained(&c, &opts());
    let (h2, drain2, ours2) = submit_drained(&c, &opts());
    let both = poll_until(Duration::from_secs(10), || {
        drain1.bytes() > 0 && drain2.bytes() > 0
    });
    assert!(both, "both jobs moved bytes");
    thread::sleep(SETTLE);
    let (t0, a0, b0) = (Instant::now(), drain1.bytes(), drain2.bytes());
    thread::sleep(WINDOW);
    let (a1, b1) = (drain1.bytes(), drain2.bytes());
    let secs = t0.elapsed().as_secs_f64();
    let (ra, rb) = ((a1 - a0) as f64 / secs, (b1 - b0) as f64 / secs);
    let want = limit as f64;
    eprintln!(
        "global limit 20 MiB/s: jobs received {:.2} + {:.2} MiB/s",
        ra / MIB as f64,
        rb / MIB as f64
    );
    assert!(
        (ra + rb - want).abs() <= 2.0 * tolerance(want),
        "together {:.2} MiB/s under a global 20 MiB/s",
        (ra + rb) / MIB as f64
    );
    assert!(
        jain(&[ra, rb]) >= 0.9,
        "the two jobs share unequally: {ra:.0} vs {rb:.0} B/s"
    );
    cancel_and_end(&c, h1, drain1, ours1);
    cancel_and_end(&c, h2, drain2, ours2);
}

#[test]
fn a_job_waiting_for_its_limit_shows_as_throttled() {
    let d = Daemon::start();
    let c = shared_client(&d);
    let (h, drain, ours) = submit_drained(
        &c,
        &TransferOptions {
            rate_limit: Some(MIB),
            ..opts()
        },
    );
    let id = id_of(&h);
    let info = status_until(&c, id, Duration::from_secs(10), "throttled", |i| {
        i.state == JobState::Throttled
    });
    assert_eq!(info.rate_limit, Some(MIB), "{info:?}");
    let listed = jobs_of(&c);
    assert!(find_job(&listed, id).is_some(), "{listed:?}");
    let mut throttled = 0;
    poll_until(Duration::from_secs(5), || {
        throttled = stats_of(&c).jobs_throttled;
        throttled == 1
    });
    assert_eq!(throttled, 1, "stats count the throttled job");
    cancel_and_end(&c, h, drain, ours);
}

#[test]
fn rate_limit_applies_to_every_strategy_of_file_copy() {
    let d = Daemon::start();
    let c = shared_client(&d);
    let dir = tmpdir();
    // 8 MiB at 8 MiB/s: about a second; at least half of it even if the
    // bucket starts with a whole pipe or buffer's worth, or more, of tokens.
    const LEN: usize = 8 << 20;
    let limit = 8 * MIB;
    for (i, strategy) in [
        Strategy::Splice,
        Strategy::Direct,
        Strategy::Uncached,
        Strategy::CopyRange,
    ]
    .into_iter()
    .enumerate()
    {
        let (src, data) = make_file(dir.path(), &format!("{strategy}.src"), LEN, i as u64);
        let dst = dir.path().join(format!("{strategy}.dst"));
        let flags = if strategy == Strategy::Direct {
            libc::O_DIRECT
        } else {
            0
        };
        let s = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(&src)
            .unwrap();
        let t = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(flags)
            .open(&dst)
            .unwrap();
        let started = Instant::now();
        let h = c
            .submit(
                s.as_fd(),
                t.as_fd(),
                &TransferOptions {
                    strategy,
                    rate_limit: Some(limit),
                    ..opts()
                },
            )
            .unwrap();
        let done = completed(wait(h), strategy.name());
        let took = started.elapsed();
        eprintln!("{strategy}: 8 MiB at 8 MiB/s took {took:?}");
        assert_eq!(done.strategy, strategy);
        assert_file_eq(&dst, &data);
        assert!(
            took >= Duration::from_millis(500) && took <= Duration::from_secs(10),
            "{strategy}: 8 MiB under an 8 MiB/s limit took {took:?}"
        );
    }
}

#[test]
fn a_throttled_job_cancels_promptly_and_leaks_nothing() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let c = shared_client(&d);
    // 64 KiB/s: the job spends nearly all its time parked on the timer.
    let (h, drain, ours) = submit_drained(
        &c,
        &TransferOptions {
            rate_limit: Some(64 << 10),
            ..opts()
        },
    );
    let id = id_of(&h);
    status_until(&c, id, Duration::from_secs(10), "throttled", |i| {
        i.state == JobState::Throttled
    });
    let t = Instant::now();
    cancel_and_end(&c, h, drain, ours);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a parked job took {:?} to cancel",
        t.elapsed()
    );
    drop(c);
    d.assert_fds_return(
        baseline,
        Duration::from_secs(5),
        "after cancelling a throttled job",
    );
    d.assert_healthy(baseline, "after cancelling a throttled job");
}

#[test]
fn a_job_limit_under_the_global_one_leaves_the_rest_to_others() {
    let d = Daemon::start_with(&["--rate-limit", "30MiB"]);
    let c = shared_client(&d);
    let (h1, slow, ours1) = submit_drained(
        &c,
        &TransferOptions {
            rate_limit: Some(6 * MIB),
            ..opts()
        },
    );
    let (h2, fast, ours2) = submit_drained(&c, &opts());
    let both = poll_until(Duration::from_secs(10), || {
        slow.bytes() > 0 && fast.bytes() > 0
    });
    assert!(both, "both jobs moved bytes");
    thread::sleep(SETTLE);
    let (t0, a0, b0) = (Instant::now(), slow.bytes(), fast.bytes());
    thread::sleep(WINDOW);
    let (a1, b1) = (slow.bytes(), fast.bytes());
    let secs = t0.elapsed().as_secs_f64();
    let (ra, rb) = ((a1 - a0) as f64 / secs, (b1 - b0) as f64 / secs);
    eprintln!(
        "global 30 MiB/s: the 6 MiB/s job got {:.2}, the other {:.2} MiB/s",
        ra / MIB as f64,
        rb / MIB as f64
    );
    let (want_a, want_b) = (6.0 * MIB as f64, 24.0 * MIB as f64);
    assert!(
        (ra - want_a).abs() <= tolerance(want_a),
        "the limited job got {:.2} MiB/s",
        ra / MIB as f64
    );
    assert!(
        (rb - want_b).abs() <= tolerance(want_b),
        "the unlimited job got {:.2} MiB/s of the 24 left",
        rb / MIB as f64
    );
    cancel_and_end(&c, h1, slow, ours1);
    cancel_and_end(&c, h2, fast, ours2);
}

/// What a group of `jobs` jobs may be off by over `WINDOW`: the daemon's
/// 5%, and each job's 2.5 MiB in pipes and socket buffers (see `tolerance`).
fn group_tolerance(rate: f64, jobs: usize) -> f64 {
    0.05 * rate + jobs as f64 * 2.5 * MIB as f64 / WINDOW.as_secs_f64()
}

/// Four endless jobs of a connection in one group: their drains.
fn group_of_four(c: &Client, group: RateGroup) -> Vec<(JobHandle, Drain, UnixStream)> {
    let o = TransferOptions {
        rate_group: Some(group),
        ..opts()
    };
    (0..4).map(|_| submit_drained(c, &o)).collect()
}

/// The bytes every drain of `jobs` has received, together.
fn received(jobs: &[(JobHandle, Drain, UnixStream)]) -> u64 {
    jobs.iter().map(|(_, d, _)| d.bytes()).sum()
}

/// A group's limit holds for all its jobs together; another connection's
/// group of the same id is another group, which neither slows nor is
/// slowed by the first (a limit per user would halve both).
#[test]
fn a_group_limit_caps_its_jobs_together_and_is_its_connections_own() {
    let d = Daemon::start();
    let (a, b) = (shared_client(&d), shared_client(&d));
    let limit = 16 * MIB;
    let group = RateGroup { id: 1, rate: limit };
    let first = group_of_four(&a, group);
    let second = group_of_four(&b, group);
    let all_moving = poll_until(Duration::from_secs(10), || {
        first.iter().chain(&second).all(|(_, d, _)| d.bytes() > 0)
    });
    assert!(all_moving, "every job moved bytes");
    thread::sleep(SETTLE);
    let (t0, a0, b0) = (Instant::now(), received(&first), received(&second));
    thread::sleep(WINDOW);
    let (a1, b1) = (received(&first), received(&second));
    let secs = t0.elapsed().as_secs_f64();
    let (ra, rb) = ((a1 - a0) as f64 / secs, (b1 - b0) as f64 / secs);
    let (want, tolerance) = (limit as f64, group_tolerance(limit as f64, 4));
    eprintln!(
        "two connections' group 1 at 16 MiB/s, four jobs each: {:.2} and {:.2} MiB/s",
        ra / MIB as f64,
        rb / MIB as f64
    );
    for (rate, whose) in [(ra, "the first connection's"), (rb, "the second's")] {
        assert!(
            (rate - want).abs() <= tolerance,
            "{whose} group moved {:.2} MiB/s under a shared 16 MiB/s (tolerance {:.2})",
            rate / MIB as f64,
            tolerance / MIB as f64
        );
    }
    for (c, jobs) in [(&a, first), (&b, second)] {
        for (h, drain, ours) in jobs {
            assert_eq!(status_of(c, id_of(&h)).unwrap().rate_limit, None);
            cancel_and_end(c, h, drain, ours);
        }
    }
}

/// `copy --rate-limit` of several files caps the whole copy, as `rsync
/// --bwlimit` does: eight files at 8 MiB/s take as long as one file of
/// their size (each file at the limit, as before, took an eighth of it).
#[test]
fn a_cli_rate_limit_caps_the_whole_copy() {
    let d = Daemon::start();
    let dir = tmpdir();
    const FILES: usize = 8;
    const LEN: usize = 3 << 20;
    let limit = 8 * MIB;
    let dst = dir.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let mut c = cli(&d.socket);
    c.args(["--json", "copy", "--rate-limit", "8MiB"]);
    for i in 0..FILES {
        c.arg(make_file(dir.path(), &format!("f{i}"), LEN, i as u64).0);
    }
    c.arg(&dst);
    let out = run(c);
    assert_exit(&out, 0, "copy of eight files");
    let summary = json_lines(&out).pop().expect("the summary");
    assert_eq!(summary["files"], FILES, "{summary}");
    let (bytes, secs) = (
        summary["bytes"].as_f64().unwrap(),
        summary["elapsed_s"].as_f64().unwrap(),
    );
    let rate = bytes / secs;
    eprintln!(
        "{FILES} files of {} MiB under --rate-limit 8MiB: {:.2} s, {:.2} MiB/s",
        LEN >> 20,
        secs,
        rate / MIB as f64
    );
    // The bucket starts with a tenth of a second's worth, and the copy
    // ends without paying its last debt: a little over the limit.
    let want = limit as f64;
    assert!(
        rate >= 0.8 * want && rate <= 1.2 * want,
        "eight files moved {:.2} MiB/s in all under an 8 MiB/s limit",
        rate / MIB as f64
    );
}
