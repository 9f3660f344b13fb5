//! Job control by id: cancel, status, wait and the listing from any
//! connection of the owner, detached jobs, other users, finished jobs,
//! per-user and per-connection limits, progress pacing and the counters.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringxfer_ipc::{Event, FailureKind, JobError, JobState, Priority, Strategy, TransferOptions};

use crate::support::*;

/// A job that is neither finished nor failed.
fn unfinished(state: &JobState) -> bool {
    matches!(
        state,
        JobState::Queued | JobState::Running | JobState::Throttled
    )
}

/// Waits for a job handle to fail with `Cancelled`.
fn assert_cancelled(h: ringxfer_ipc::JobHandle, what: &str) -> Failure {
    failed(
        wait_within(h, Duration::from_secs(10)),
        FailureKind::Cancelled,
        what,
    )
}

/// An endless splice job (zero pages into /dev/null): it always has
/// operations in flight, so cancelling it has something to wait for.
fn submit_endless(c: &ringxfer_ipc::Client, o: &TransferOptions) -> ringxfer_ipc::JobHandle {
    let src = zero_source(1 << 50);
    let null = dev_null();
    c.submit(src.as_fd(), null.as_fd(), o)
        .unwrap_or_else(|e| panic!("submit endless job: {e:?}"))
}

#[test]
fn cancel_by_id_from_another_connection_of_the_same_user() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let owner = shared_client(&d);
    let other = shared_client(&d);
    let watcher = shared_client(&d);

    let busy = submit_endless(&owner, &opts());
    let busy_id = id_of(&busy);
    let (idle, writer) = submit_idle(&owner, &opts());
    let idle_id = id_of(&idle);
    status_until(&other, busy_id, Duration::from_secs(10), "busy job", |i| {
        i.bytes > 0
    });
    let watch = watcher
        .wait_job(busy_id, false)
        .unwrap_or_else(|e| panic!("wait_job: {e:?}"));
    // The owner may watch its own job too, under another req.
    let own_watch = owner.wait_job(busy_id, false).unwrap();

    cancel_job(&other, busy_id).unwrap_or_else(|e| panic!("cancel busy job: {e:?}"));
    cancel_job(&other, idle_id).unwrap_or_else(|e| panic!("cancel idle job: {e:?}"));
    let f = assert_cancelled(busy, "the owner's handle of the busy job");
    assert!(f.bytes > 0, "the busy job had moved bytes: {f:?}");
    assert_cancelled(watch, "a watcher of the busy job");
    assert_cancelled(own_watch, "the owner watching its own job");
    assert_cancelled(idle, "the owner's handle of the idle job");

    // Once finished, the job cannot be cancelled again, but is remembered.
    refused(
        cancel_job(&other, busy_id),
        FailureKind::NoSuchJob,
        "cancel of a job already cancelled",
    );
    let info = status_of(&other, busy_id).expect("status of the cancelled job");
    assert!(
        matches!(
            info.state,
            JobState::Failed {
                kind: FailureKind::Cancelled,
                ..
            }
        ),
        "status after cancel: {info:?}"
    );
    // Each open connection is a descriptor of the daemon's.
    drop((writer, owner, other, watcher));
    d.assert_fds_return(baseline, Duration::from_secs(5), "after cancelling by id");
    d.assert_healthy(baseline, "after cancelling by id");
}

#[test]
fn unknown_job_ids_are_refused_and_the_connection_stays_usable() {
    let d = Daemon::start();
    let c = shared_client(&d);
    const NOBODY: u64 = 0xdead_beef_0042;
    refused(cancel_job(&c, NOBODY), FailureKind::NoSuchJob, "cancel");
    refused(status_of(&c, NOBODY), FailureKind::NoSuchJob, "status");
    let w = c
        .wait_job(NOBODY, true)
        .unwrap_or_else(|e| panic!("wait_job: {e:?}"));
    let f = failed(
        wait_within(w, Duration::from_secs(10)),
        FailureKind::NoSuchJob,
        "wait for an unknown job",
    );
    assert_eq!(f.bytes, 0);
    assert!(jobs_of(&c).is_empty(), "a fresh daemon lists no jobs");
    let dir = tmpdir();
    copy_and_check(&c, dir.path(), "after-refusals", 100_003, 7);
}

#[test]
fn detached_job_survives_its_connection_and_is_followed_from_another() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let dir = tmpdir();
    let dst = dir.path().join("detached.dst");
    let data = pattern(0xde7a, (1 << 20) + 7);

    // The source is a socket the test feeds only after the submitter is gone,
    // so the job cannot finish while its connection is still open.
    let (mut writer, reader) = UnixStream::pair().unwrap();
    let job = {
        let a = d.client();
        let t = create_dst(&dst);
        let o = TransferOptions {
            detach: true,
            tag: "detached".into(),
            ..opts()
        };
        let h = a.submit(reader.as_fd(), t.as_fd(), &o).unwrap();
        id_of(&h)
    };
    drop(reader);

    let b = shared_client(&d);
    // It runs on: listed, detached, and the daemon counts it as detached.
    thread::sleep(Duration::from_millis(200));
    let info = status_of(&b, job).expect("status from a new connection");
    assert!(
        unfinished(&info.state),
        "after its connection closed: {info:?}"
    );
    assert!(info.detached, "{info:?}");
    assert_eq!(info.tag, "detached");
    let listed = jobs_of(&b);
    assert!(
        find_job(&listed, job).is_some(),
        "jobs() from a new connection: {listed:?}"
    );
    assert_eq!(stats_of(&b).jobs_detached, 1);

    let w = b.wait_job(job, false).unwrap();
    assert_eq!(id_of(&w), job, "the watcher's Accepted names the job");
    writer.write_all(&data).unwrap();
    drop(writer);
    let done = completed(wait(w), "waiting for the detached job");
    assert_eq!(done.job, job);
    assert_eq!(done.bytes, data.len() as u64);
    assert_file_eq(&dst, &data);

    let info = status_of(&b, job).expect("status after completion");
    assert_eq!(info.state, JobState::Completed, "{info:?}");
    assert_eq!(info.bytes, data.len() as u64);
    // A second watcher after the end is answered at once from memory.
    let late_client = d.client();
    let late = late_client.wait_job(job, false).unwrap();
    let again = completed(
        wait_within(late, Duration::from_secs(5)),
        "late wait on a finished detached job",
    );
    assert_eq!(again.bytes, data.len() as u64);
    assert!(jobs_of(&b).is_empty(), "finished jobs are not listed");
    drop((b, late_client));
    d.assert_fds_return(baseline, Duration::from_secs(5), "after a detached job");
}

#[test]
fn attached_job_is_cancelled_when_its_connection_closes() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let b = shared_client(&d);
    let a = d.client();
    let (h, writer) = submit_idle(&a, &opts());
    let job = id_of(&h);
    let watch = b.wait_job(job, false).unwrap();
    let busy = submit_endless(&a, &opts());
    let busy_id = id_of(&busy);
    drop(a);
    assert_cancelled(watch, "a watcher of a job whose connection closed");
    for id in [job, busy_id] {
        let info = status_until(&b, id, Duration::from_secs(10), "attached job", |i| {
            !unfinished(&i.state)
        });
        assert!(
            matches!(
                info.state,
                JobState::Failed {
                    kind: FailureKind::Cancelled,
                    ..
                }
            ),
            "job {id} after its connection closed: {info:?}"
        );
    }
    drop((writer, b));
    d.assert_fds_return(
        baseline,
        Duration::from_secs(5),
        "after the connection closed",
    );
}

#[test]
fn a_watcher_going_away_leaves_the_job_alone() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let a = d.client();
    let dir = tmpdir();
    let dst = dir.path().join("watched.dst");
    let data = pattern(9, 300_001);
    let (mut writer, reader) = UnixStream::pair().unwrap();
    let h = a
        .submit(reader.as_fd(), create_dst(&dst).as_fd(), &opts())
        .unwrap();
    drop(reader);
    let job = id_of(&h);
    for _ in 0..3 {
        let b = d.client();
        let w = b.wait_job(job, true).unwrap();
        assert_eq!(id_of(&w), job);
        // Dropping the watcher's connection must not cancel another's job.
    }
    thread::sleep(Duration::from_millis(100));
    writer.write_all(&data).unwrap();
    drop(writer);
    let done = completed(wait(h), "the watched job");
    assert_eq!(done.bytes, data.len() as u64);
    assert_file_eq(&dst, &data);
    drop(a);
    d.assert_fds_return(baseline, Duration::from_secs(5), "after watchers left");
}

#[test]
fn jobs_lists_unfinished_jobs_oldest_first_with_their_settings() {
    let d = Daemon::start();
    let c = shared_client(&d);
    let dir = tmpdir();
    let (one_src, _) = make_file(dir.path(), "one", 1 << 20, 1);
    let (two_src, _) = make_file(dir.path(), "two", 8 << 20, 2);

    // 1: splice from a file into a pipe nobody reads.
    let (_pipe_r, pipe_w) = stalled_pipe();
    let one = c
        .submit(
            open_src(&one_src).as_fd(),
            pipe_w.as_fd(),
            &TransferOptions {
                tag: "one".into(),
                strategy: Strategy::Splice,
                priority: Priority::Low,
                ..opts()
            },
        )
        .unwrap();
    // 2: direct from a file into a socket nobody reads.
    let (sock_ours, _sock_peer) = UnixStream::pair().unwrap();
    let two_file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&two_src)
        .unwrap();
    let two = c
        .submit(
            two_file.as_fd(),
            sock_ours.as_fd(),
            &TransferOptions {
                tag: "two".into(),
                strategy: Strategy::Direct,
                priority: Priority::High,
                detach: true,
                ..opts()
            },
        )
        .unwrap();
    // 3: a stream nobody writes to, with a rate limit.
    let (three, _writer) = submit_idle(
        &c,
        &TransferOptions {
            tag: "three".into(),
            rate_limit: Some(MIB),
            ..opts()
        },
    );
    let ids = [id_of(&one), id_of(&two), id_of(&three)];
    thread::sleep(Duration::from_millis(100));

    let list = jobs_of(&c);
    let got: Vec<u64> = list.iter().map(|i| i.job).collect();
    assert_eq!(got, ids, "jobs(), oldest first: {list:#?}");
    for i in &list {
        assert_eq!(i.uid, my_uid(), "{i:?}");
        assert!(unfinished(&i.state), "{i:?}");
        assert!(i.elapsed_us > 0, "{i:?}");
    }
    assert_listed_settings(&list);

    for id in ids {
        cancel_job(&c, id).unwrap_or_else(|e| panic!("cancel {id}: {e:?}"));
    }
    for (h, what) in [(one, "one"), (two, "two"), (three, "three")] {
        assert_cancelled(h, what);
    }
    assert!(jobs_of(&c).is_empty(), "jobs() after cancelling everything");
}

/// The three jobs of the test above are listed with the settings they were
/// submitted with.
fn assert_listed_settings(list: &[ringxfer_ipc::JobInfo]) {
    let want = [
        (
            "one",
            Strategy::Splice,
            Priority::Low,
            Some(1 << 20),
            None,
            false,
        ),
        (
            "two",
            Strategy::Direct,
            Priority::High,
            Some(8 << 20),
            None,
            true,
        ),
        (
            "three",
            Strategy::Splice,
            Priority::Normal,
            None,
            Some(MIB),
            false,
        ),
    ];
    for (i, (tag, strategy, priority, total, rate_limit, detached)) in list.iter().zip(want) {
        assert_eq!(
            (
                i.tag.as_str(),
                i.strategy,
                i.priority,
                i.total,
                i.rate_limit,
                i.detached
            ),
            (tag, strategy, priority, total, rate_limit, detached),
            "listing of {tag}: {i:?}"
        );
        assert!(i.total.is_none_or(|t| i.bytes < t), "{i:?}");
    }
}

#[test]
fn finished_jobs_are_remembered_for_status_and_wait() {
    let d = Daemon::start();
    let c = shared_client(&d);
    let other = shared_client(&d);
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "done", (1 << 20) + 5, 11);
    let dst = dir.path().join("done.dst");
    let h = c
        .submit(open_src(&src).as_fd(), create_dst(&dst).as_fd(), &opts())
        .unwrap();
    let done = completed(wait(h), "copy");
    assert_file_eq(&dst, &data);

    let info = status_of(&other, done.job).expect("status of a completed job");
    assert_eq!(info.state, JobState::Completed, "{info:?}");
    assert_eq!(info.bytes, data.len() as u64);
    assert_eq!(info.total, Some(data.len() as u64));
    assert_eq!(info.rate, 0, "a finished job moves nothing now: {info:?}");
    thread::sleep(Duration::from_millis(50));
    let later = status_of(&other, done.job).unwrap();
    assert_eq!(
        later.elapsed_us, info.elapsed_us,
        "a finished job's elapsed time stops at its end"
    );
    let t = Instant::now();
    let w = other.wait_job(done.job, true).unwrap();
    let again = completed(
        wait_within(w, Duration::from_secs(5)),
        "wait on a completed job",
    );
    assert_eq!((again.job, again.bytes), (done.job, data.len() as u64));
    assert!(t.elapsed() < Duration::from_secs(2), "answered from memory");

    // A failure is remembered with its kind.
    let short = c
        .submit(
            open_src(&src).as_fd(),
            create_dst(&dir.path().join("short.dst")).as_fd(),
            &TransferOptions {
                length: Some(data.len() as u64 + 1),
                ..opts()
            },
        )
        .unwrap();
    let short_id = id_of(&short);
    failed(wait(short), FailureKind::SourceShort, "copy past the end");
    let info = status_of(&other, short_id).expect("status of a failed job");
    assert!(
        matches!(
            info.state,
            JobState::Failed {
                kind: FailureKind::SourceShort,
                ..
            }
        ),
        "{info:?}"
    );
    let w = other.wait_job(short_id, false).unwrap();
    failed(
        wait_within(w, Duration::from_secs(5)),
        FailureKind::SourceShort,
        "wait on a failed job",
    );

    // Memory is bounded (the last 1024): after 1100 more jobs the first
    // is forgotten, the recent ones are not.
    let mut later = Vec::new();
    for batch in 0..11 {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let src = zero_source(0);
                c.submit(src.as_fd(), dev_null().as_fd(), &opts())
                    .unwrap_or_else(|e| panic!("batch {batch}: {e:?}"))
            })
            .collect();
        for h in handles {
            later.push(completed(wait(h), "empty job").job);
        }
    }
    refused(
        status_of(&other, done.job),
        FailureKind::NoSuchJob,
        "status of a job 1100 jobs ago",
    );
    let w = other.wait_job(done.job, false).unwrap();
    failed(
        wait_within(w, Duration::from_secs(5)),
        FailureKind::NoSuchJob,
        "wait on a job 1100 jobs ago",
    );
    for back in [1, 900] {
        let id = later[later.len() - back];
        let info = status_of(&other, id)
            .unwrap_or_else(|e| panic!("status of the job {back} jobs ago: {e:?}"));
        assert_eq!(info.state, JobState::Completed, "{info:?}");
    }
}

#[test]
fn progress_events_are_paced_and_go_only_to_listeners() {
    let d = Daemon::start();
    let a = d.client();
    let b = d.client();
    let quiet = d.client();
    let a_events = a.events();
    let b_events = b.events();
    let quiet_events = quiet.events();

    // A source the test feeds at its own pace: 64 KiB every 20 ms for 1.5 s.
    let (mut writer, reader) = UnixStream::pair().unwrap();
    let h = a
        .submit(reader.as_fd(), dev_null().as_fd(), &opts())
        .unwrap();
    drop(reader);
    let job = id_of(&h);
    let watch = b.wait_job(job, true).unwrap();
    let silent = quiet.wait_job(job, false).unwrap();
    const PIECES: usize = 75;
    let piece = pattern(5, 64 << 10);
    let started = Instant::now();
    for _ in 0..PIECES {
        writer.write_all(&piece).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    drop(writer);
    let total = (PIECES * piece.len()) as u64;
    assert_eq!(completed(wait(h), "submitter").bytes, total);
    assert_eq!(completed(wait(watch.clone()), "watcher").bytes, total);
    assert_eq!(completed(wait(silent), "quiet watcher").bytes, total);
    let ran = started.elapsed();

    let progress_of = |events: &crossbeam_channel::Receiver<Event>| -> Vec<u64> {
        events
            .try_iter()
            .filter_map(|e| match e {
                Event::Progress { job: j, bytes, .. } if j == job => Some(bytes),
                _ => None,
            })
            .collect()
    };
    assert!(
        progress_of(&a_events).is_empty(),
        "the submitter did not ask for progress"
    );
    assert!(
        progress_of(&quiet_events).is_empty(),
        "a watcher without progress got some"
    );
    let seen = progress_of(&b_events);
    let most = (ran.as_millis() / 100) as usize + 2;
    assert!(
        seen.len() >= 3 && seen.len() <= most,
        "{} progress events over {ran:?} (want 3..={most}): {seen:?}",
        seen.len()
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]) && seen.iter().all(|&b| b <= total),
        "progress must grow and stay within the total: {seen:?}"
    );
}

#[test]
fn refusals_at_the_per_user_job_limit_keep_the_connection_usable() {
    let d = Daemon::start_with(&["--max-jobs-per-user", "2"]);
    let dir = tmpdir();
    let a = shared_client(&d);
    let b = shared_client(&d);
    assert_eq!(a.limits().max_jobs_per_user, 2);
    let (h1, _w1) = submit_idle(&a, &opts());
    let (h2, _w2) = submit_idle(&a, &opts());
    let id1 = id_of(&h1);
    id_of(&h2);
    for (c, what) in [(&a, "the same connection"), (&b, "another connection")] {
        let (h, _w) = submit_idle(c, &opts());
        let r = wait_within(h, Duration::from_secs(10));
        assert!(
            matches!(r, Err(JobError::Failed { job: None, .. })),
            "a refused job has no id: {r:?}"
        );
        let f = failed(r, FailureKind::LimitExceeded, what);
        assert!(
            f.message.contains("user"),
            "the message names the per-user limit: {f:?}"
        );
    }
    cancel_job(&a, id1).unwrap();
    assert_cancelled(h1, "first idle job");
    copy_and_check(&a, dir.path(), "a-after", 70_000, 1);
    copy_and_check(&b, dir.path(), "b-after", 70_000, 2);
}

#[test]
fn refusals_at_the_queued_bytes_limits_keep_the_connection_usable() {
    let d = Daemon::start_with(&[
        "--max-queued-bytes-per-connection",
        "1MiB",
        "--max-queued-bytes-per-user",
        "2MiB",
    ]);
    let dir = tmpdir();
    let a = shared_client(&d);
    let b = shared_client(&d);
    assert_eq!(a.limits().max_queued_bytes_per_connection, MIB);
    assert_eq!(a.limits().max_queued_bytes_per_user, 2 * MIB);

    let refuse = |c: &Arc<ringxfer_ipc::Client>, len: usize, word: &str, what: &str| {
        let (src, _) = make_file(dir.path(), &format!("{what}.src"), len, 3);
        let dst = dir.path().join(format!("{what}.dst"));
        let h = c
            .submit(open_src(&src).as_fd(), create_dst(&dst).as_fd(), &opts())
            .unwrap();
        let r = wait_within(h, Duration::from_secs(10));
        assert!(
            matches!(r, Err(JobError::Failed { job: None, .. })),
            "{what}: a refused job has no id: {r:?}"
        );
        let f = failed(r, FailureKind::LimitExceeded, what);
        assert!(
            f.message.contains(word),
            "{what}: the message names the limit ({word}): {f:?}"
        );
    };
    // One job over the connection's limit.
    refuse(&a, (2 << 20) + 1, "connection", "over-connection");
    copy_and_check(&a, dir.path(), "a-small", 512 << 10, 4);

    // A stalled job keeps ~768 KiB queued on `a`: 512 KiB more is over the
    // connection's limit, but fine on `b`.
    let (stall_src, _) = make_file(dir.path(), "stall", 768 << 10, 5);
    let (_pipe_r, pipe_w) = stalled_pipe();
    let stall_a = a
        .submit(open_src(&stall_src).as_fd(), pipe_w.as_fd(), &opts())
        .unwrap();
    let stall_a_id = id_of(&stall_a);
    refuse(&a, 512 << 10, "connection", "connection-with-queue");
    copy_and_check(&b, dir.path(), "b-small", 512 << 10, 6);

    // Two stalled jobs, ~1.5 MiB queued for the user: 768 KiB more from a
    // third connection, within its own limit, is over the user's.
    let (_pipe2_r, pipe2_w) = stalled_pipe();
    let stall_b = b
        .submit(open_src(&stall_src).as_fd(), pipe2_w.as_fd(), &opts())
        .unwrap();
    let stall_b_id = id_of(&stall_b);
    let e = shared_client(&d);
    refuse(&e, 768 << 10, "user", "over-user");

    for (c, id, h) in [(&a, stall_a_id, stall_a), (&b, stall_b_id, stall_b)] {
        cancel_job(c, id).unwrap();
        assert_cancelled(h, "stalled job");
    }
    copy_and_check(&a, dir.path(), "a-after", 512 << 10, 7);
    copy_and_check(&b, dir.path(), "b-after", 512 << 10, 8);
    copy_and_check(&e, dir.path(), "e-after", 768 << 10, 9);
}

#[test]
fn stats_count_jobs_ops_and_bytes_per_strategy() {
    let d = Daemon::start_with(&["--max-inflight", "16", "--rate-limit", "1GiB"]);
    let c = shared_client(&d);
    let dir = tmpdir();
    let s0 = stats_of(&c);
    assert_eq!(s0.max_ops_in_flight, 16);
    assert_eq!(s0.rate_limit, Some(1 << 30));
    assert_eq!((s0.jobs_running, s0.ops_in_flight), (0, 0));

    const LEN: usize = 4 << 20;
    for (i, strategy) in [Strategy::Splice, Strategy::Direct, Strategy::Uncached]
        .into_iter()
        .enumerate()
    {
        let (src, data) = make_file(dir.path(), &format!("{strategy}.src"), LEN, i as u64);
        let dst = dir.path().join(format!("{strategy}.dst"));
        let h = c
            .copy_file(&src, &dst, &TransferOptions { strategy, ..opts() })
            .unwrap();
        let done = completed(wait(h), strategy.name());
        assert_eq!(done.strategy, strategy);
        assert_file_eq(&dst, &data);
    }
    let s1 = stats_of(&c);
    assert_each_strategy_counted(&s0, &s1, LEN as u64);
    assert!(s1.jobs_completed >= s0.jobs_completed + 3);
    assert!(s1.bytes_moved >= s0.bytes_moved + 3 * LEN as u64);
    assert!(s1.sqes_submitted > s0.sqes_submitted);
    assert!(s1.enter_calls > s0.enter_calls);
    assert!(s1.uptime_ms >= s0.uptime_ms);

    // While an endless splice job and a detached idle job run.
    let busy = submit_endless(&c, &opts());
    let (idle, writer) = submit_idle(
        &c,
        &TransferOptions {
            detach: true,
            ..opts()
        },
    );
    let ids = [id_of(&busy), id_of(&idle)];
    // Bytes of running jobs count as they move.
    status_until(&c, ids[0], Duration::from_secs(10), "endless job", |i| {
        i.bytes > 0
    });
    let running0 = strategy_stats(&stats_of(&c), Strategy::Splice).bytes;
    thread::sleep(Duration::from_millis(100));
    let running1 = strategy_stats(&stats_of(&c), Strategy::Splice).bytes;
    assert!(
        running1 > running0,
        "splice bytes grow while a job runs: {running0} -> {running1}"
    );
    let mut saw_ops = false;
    let mut saw_pipes = false;
    poll_until(Duration::from_secs(10), || {
        let s = stats_of(&c);
        assert_eq!(s.jobs_running, 2, "{s:?}");
        assert_eq!(s.jobs_detached, 1, "{s:?}");
        // The cap is on slots (pipes and buffers lent): a linked read and
        // write share one, and an idle job's poll holds none.
        assert!(
            s.pipes_in_use + s.buffers_in_use <= s.max_ops_in_flight,
            "{s:?}"
        );
        assert!(s.pipes_in_use <= s.pipes_total, "{s:?}");
        saw_ops |= s.ops_in_flight > 0;
        saw_pipes |= s.pipes_in_use > 0;
        saw_ops && saw_pipes
    });
    assert!(
        saw_ops && saw_pipes,
        "ops and pipes in use while a job runs"
    );
    for id in ids {
        cancel_job(&c, id).unwrap();
    }
    assert_cancelled(busy, "endless job");
    assert_cancelled(idle, "idle job");
    drop(writer);
    let s2 = stats_of(&c);
    assert_eq!(
        strategy_stats(&s2, Strategy::Splice).jobs_failed,
        strategy_stats(&s1, Strategy::Splice).jobs_failed + 2
    );
    assert_eq!(s2.jobs_failed, s1.jobs_failed + 2);
    assert_eq!((s2.jobs_running, s2.jobs_detached), (0, 0), "{s2:?}");
    assert!(
        poll_until(Duration::from_secs(5), || {
            let s = stats_of(&c);
            s.ops_in_flight == 0 && s.pipes_in_use == 0 && s.buffers_in_use == 0
        }),
        "everything given back: {:?}",
        stats_of(&c)
    );
}

/// Each of splice, direct and uncached counted one more completed job of
/// `len` bytes, with at least a read and a write, from `s0` to `s1`.
fn assert_each_strategy_counted(
    s0: &ringxfer_ipc::StatsReport,
    s1: &ringxfer_ipc::StatsReport,
    len: u64,
) {
    for strategy in [Strategy::Splice, Strategy::Direct, Strategy::Uncached] {
        let (before, after) = (strategy_stats(s0, strategy), strategy_stats(s1, strategy));
        assert_eq!(
            after.jobs_completed,
            before.jobs_completed + 1,
            "{strategy}: {after:?}"
        );
        assert!(
            after.bytes >= before.bytes + len,
            "{strategy} bytes: {before:?} -> {after:?}"
        );
        // At least one read and one write.
        assert!(
            after.ops >= before.ops + 2,
            "{strategy} ops: {before:?} -> {after:?}"
        );
    }
}

#[test]
fn a_queued_job_shows_as_queued_and_can_be_cancelled() {
    // One slot, held by a job stalled on a pipe nobody reads: whatever comes
    // next waits for a slot.
    let d = Daemon::start_with(&["--max-inflight", "1"]);
    let baseline = d.baseline();
    let c = shared_client(&d);
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "stall", 4 << 20, 1);
    let (_pipe_r, pipe_w) = stalled_pipe();
    let stalled = c
        .submit(open_src(&src).as_fd(), pipe_w.as_fd(), &opts())
        .unwrap();
    let stalled_id = id_of(&stalled);
    status_until(
        &c,
        stalled_id,
        Duration::from_secs(10),
        "stalled job",
        |i| i.bytes > 0,
    );
    let waiting = submit_endless(&c, &opts());
    let waiting_id = id_of(&waiting);
    thread::sleep(Duration::from_millis(200));
    let info = status_of(&c, waiting_id).unwrap();
    assert_eq!(info.state, JobState::Queued, "{info:?}");
    assert_eq!(info.bytes, 0, "{info:?}");
    let s = stats_of(&c);
    assert_eq!((s.jobs_running, s.jobs_queued), (2, 1), "{s:?}");

    cancel_job(&c, waiting_id).unwrap();
    let f = assert_cancelled(waiting, "the queued job");
    assert_eq!(f.bytes, 0);
    cancel_job(&c, stalled_id).unwrap();
    assert_cancelled(stalled, "the stalled job");
    drop(c);
    d.assert_fds_return(
        baseline,
        Duration::from_secs(5),
        "after cancelling a queued job",
    );
    d.assert_healthy(baseline, "after cancelling a queued job");
}

#[test]
fn a_detached_job_counts_against_its_users_limit_until_it_ends() {
    let d = Daemon::start_with(&["--max-jobs-per-user", "1"]);
    let dir = tmpdir();
    let (mut writer, reader) = UnixStream::pair().unwrap();
    let job = {
        let a = d.client();
        let h = a
            .submit(
                reader.as_fd(),
                dev_null().as_fd(),
                &TransferOptions {
                    detach: true,
                    ..opts()
                },
            )
            .unwrap();
        id_of(&h)
    };
    drop(reader);
    let b = shared_client(&d);
    let (src, _) = make_file(dir.path(), "refused", 10_000, 2);
    let h = b
        .submit(
            open_src(&src).as_fd(),
            create_dst(&dir.path().join("refused.dst")).as_fd(),
            &opts(),
        )
        .unwrap();
    failed(
        wait(h),
        FailureKind::LimitExceeded,
        "while the detached job runs",
    );

    let w = b.wait_job(job, false).unwrap();
    writer.write_all(b"the end").unwrap();
    drop(writer);
    assert_eq!(completed(wait(w), "the detached job").bytes, 7);
    copy_and_check(&b, dir.path(), "after", 10_000, 3);
}

#[test]
fn cancel_racing_completion_gives_one_consistent_answer() {
    // Jobs so small they may be done by the time the cancel arrives: the
    // daemon must either refuse the cancel (and the job completes) or take
    // it (and the job fails as cancelled), never both or neither.
    let d = Daemon::start();
    let baseline = d.baseline();
    let c = shared_client(&d);
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "racer", 256 << 10, 4);
    let (mut taken, mut refused_n) = (0, 0);
    for i in 0..200 {
        let dst = dir.path().join(format!("racer-{}.dst", i % 4));
        let h = c
            .submit(open_src(&src).as_fd(), create_dst(&dst).as_fd(), &opts())
            .unwrap();
        let id = id_of(&h);
        let answer = cancel_job(&c, id);
        let end = wait_within(h, Duration::from_secs(10));
        match answer {
            Ok(()) => {
                taken += 1;
                failed(
                    end,
                    FailureKind::Cancelled,
                    &format!("job {i}: cancel taken"),
                );
            }
            Err(e) => {
                refused_n += 1;
                refused::<()>(Err(e), FailureKind::NoSuchJob, &format!("job {i}"));
                let done = completed(end, &format!("job {i}: cancel refused"));
                assert_eq!(done.bytes, data.len() as u64);
            }
        }
    }
    eprintln!("cancels taken {taken}, refused {refused_n}");
    drop(c);
    d.assert_fds_return(baseline, Duration::from_secs(5), "after racing cancels");
}

#[test]
fn stopping_the_daemon_with_a_detached_job_running_exits_cleanly() {
    // Endless jobs outlast any grace period: a short one ends them.
    let d = Daemon::start_with(&["--shutdown-grace", "1s"]);
    let (writer, reader) = UnixStream::pair().unwrap();
    {
        let a = d.client();
        let h = a
            .submit(
                reader.as_fd(),
                dev_null().as_fd(),
                &TransferOptions {
                    detach: true,
                    ..opts()
                },
            )
            .unwrap();
        id_of(&h);
        let busy = submit_endless(
            &a,
            &TransferOptions {
                detach: true,
                ..opts()
            },
        );
        id_of(&busy);
    }
    let c = shared_client(&d);
    assert_eq!(stats_of(&c).jobs_detached, 2);
    drop(c);
    // Exit status 0 within 10 s, socket removed.
    d.stop();
    drop((writer, reader));
}

// ---------------------------------------------------------------------------
// Another user

/// The environment variables that turn `other_user_probe` on.
const PROBE_SOCKET: &str = "RINGXFER_TEST_PROBE_SOCKET";
const PROBE_JOB: &str = "RINGXFER_TEST_PROBE_JOB";
const PROBE_DONE_JOB: &str = "RINGXFER_TEST_PROBE_DONE_JOB";
/// The unprivileged user the probe runs as.
const NOBODY: u32 = 65534;

/// Not a test by itself: `another_users_jobs_are_off_limits` runs this in a
/// copy of the test binary as uid 65534, because a uid belongs to a whole
/// process. Run normally (the variables unset) it returns at once.
///
/// As the other user it checks that root's job `PROBE_JOB` is out of reach,
/// then submits a detached job of its own reading its stdin (a socket the
/// parent holds) and prints its id.
#[test]
fn other_user_probe() {
    let (Ok(socket), Ok(job)) = (std::env::var(PROBE_SOCKET), std::env::var(PROBE_JOB)) else {
        return;
    };
    let job: u64 = job.parse().expect("probe job id");
    let c = Arc::new(ringxfer_ipc::Client::connect(&socket).expect("probe: connect"));
    // Root's jobs, running or finished, answer exactly as an id that was
    // never given out: nothing tells "not yours" from "no such job".
    let never = u64::MAX - 7;
    let mut ids = vec![("running", job)];
    if let Ok(done) = std::env::var(PROBE_DONE_JOB) {
        ids.push(("finished", done.parse().expect("probe done job id")));
    }
    for (what, id) in ids {
        let as_never = |m: String| m.replace(&never.to_string(), &id.to_string());
        let status_never = refused(
            status_of(&c, never),
            FailureKind::NoSuchJob,
            "probe: status of no job",
        );
        let status = refused(status_of(&c, id), FailureKind::NoSuchJob, "probe: status");
        assert_eq!(
            status,
            as_never(status_never),
            "probe: status of a {what} job of root"
        );
        let cancel_never = refused(
            cancel_job(&c, never),
            FailureKind::NoSuchJob,
            "probe: cancel of no job",
        );
        let cancel = refused(cancel_job(&c, id), FailureKind::NoSuchJob, "probe: cancel");
        assert_eq!(
            cancel,
            as_never(cancel_never),
            "probe: cancel of a {what} job of root"
        );
        let wait_never = failed(
            wait_within(
                c.wait_job(never, true).expect("probe: wait_job"),
                Duration::from_secs(10),
            ),
            FailureKind::NoSuchJob,
            "probe: wait on no job",
        );
        let wait = failed(
            wait_within(
                c.wait_job(id, true).expect("probe: wait_job"),
                Duration::from_secs(10),
            ),
            FailureKind::NoSuchJob,
            "probe: wait",
        );
        assert_eq!(
            wait.message,
            as_never(wait_never.message),
            "probe: wait on a {what} job of root"
        );
        println!("probe: {what} job {id}: {status}");
    }
    assert!(
        find_job(&jobs_of(&c), job).is_none(),
        "probe: another user's job is listed"
    );

    let stdin = std::io::stdin();
    let own = c
        .submit(
            stdin.as_fd(),
            dev_null().as_fd(),
            &TransferOptions {
                detach: true,
                tag: "probe".into(),
                ..opts()
            },
        )
        .expect("probe: submit");
    let own = id_of(&own);
    let mine = jobs_of(&c);
    assert_eq!(
        mine.iter().map(|i| (i.job, i.uid)).collect::<Vec<_>>(),
        vec![(own, NOBODY)],
        "probe: jobs() shows exactly its own job"
    );
    println!("probe-job={own}");
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn another_users_jobs_are_off_limits_and_root_sees_all() {
    require_root("root to run a client as another user");
    // The other user runs a copy of this binary and reaches the socket
    // through a directory of its own, both outside the checkout, which may
    // be closed to others (a clone under /root).
    let shared = world_tmpdir();
    let exe = executable_for_others(&std::env::current_exe().unwrap(), shared.path());
    let d = Daemon::start_at(Some(shared.path().join("rx.sock")), &[]);
    let baseline = d.baseline();
    // The other user must reach the socket.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let root = shared_client(&d);
    let (mine, my_writer) = submit_idle(&root, &opts());
    let my_id = id_of(&mine);
    let finished = completed(
        wait(
            root.submit(zero_source(4096).as_fd(), dev_null().as_fd(), &opts())
                .unwrap(),
        ),
        "root's finished job",
    )
    .job;

    let (probe_writer, probe_stdin) = UnixStream::pair().unwrap();
    let mut child = Command::new(&exe)
        .args([
            "--exact",
            "jobcontrol::other_user_probe",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(PROBE_SOCKET, &d.socket)
        .env(PROBE_JOB, my_id.to_string())
        .env(PROBE_DONE_JOB, finished.to_string())
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir(shared.path())
        .stdin(Stdio::from(OwnedFd::from(probe_stdin)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the probe");
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect());
    let err_t = thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let status = wait_child(&mut child, Duration::from_secs(60));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let lines: Vec<String> = out_t.join().unwrap();
    let stderr = err_t.join().unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "the probe as uid {NOBODY} failed ({status:?}):\n{}\n{stderr}",
        lines.join("\n")
    );
    let probe_id: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("probe-job=")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no probe-job line in:\n{}", lines.join("\n")));

    // Root sees both, with their owners, and may act on the other's job.
    let all = jobs_of(&root);
    let theirs = find_job(&all, probe_id).unwrap_or_else(|| panic!("root's jobs(): {all:?}"));
    assert_eq!((theirs.uid, theirs.detached), (NOBODY, true), "{theirs:?}");
    assert_eq!(find_job(&all, my_id).map(|i| i.uid), Some(0), "{all:?}");
    let info = status_of(&root, probe_id).expect("root: status of another user's job");
    assert!(unfinished(&info.state), "{info:?}");
    let w = root.wait_job(probe_id, false).unwrap();
    cancel_job(&root, probe_id).expect("root: cancel another user's job");
    assert_cancelled(w, "root waiting on the other user's cancelled job");
    let info = status_of(&root, my_id).unwrap();
    assert!(
        unfinished(&info.state),
        "root's own job untouched: {info:?}"
    );
    cancel_job(&root, my_id).unwrap();
    assert_cancelled(mine, "root's own job");
    drop((my_writer, probe_writer, root));
    d.assert_fds_return(
        baseline,
        Duration::from_secs(5),
        "after the other-user checks",
    );
}

#[test]
fn a_connection_at_its_pipe_quota_waits_without_holding_up_others() {
    // Four pipes: one connection may hold two. Its jobs past that wait, set
    // aside until it gives a pipe back, while another connection's go ahead.
    let d = Daemon::start_with(&["--pipes", "4"]);
    let baseline = d.baseline();
    let a = shared_client(&d);
    let b = shared_client(&d);
    let dir = tmpdir();
    let (stall_src, _) = make_file(dir.path(), "stall", 1 << 20, 1);
    let splice = || TransferOptions {
        strategy: Strategy::Splice,
        ..opts()
    };
    let mut pipes = Vec::new();
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let (r, w) = stalled_pipe();
        let h = a
            .submit(open_src(&stall_src).as_fd(), w.as_fd(), &splice())
            .unwrap();
        stalled.push((id_of(&h), h));
        pipes.push((r, w));
    }
    for &(id, _) in &stalled[..2] {
        status_until(&a, id, Duration::from_secs(10), "stalled job", |i| {
            i.bytes > 0
        });
    }
    let (late_src, late_data) = make_file(dir.path(), "late", 256 << 10, 2);
    let late_dst = dir.path().join("late.dst");
    let late = a.copy_file(&late_src, &late_dst, &splice()).unwrap();
    let late_id = id_of(&late);

    copy_and_check(&b, dir.path(), "other", 256 << 10, 3);
    thread::sleep(Duration::from_millis(100));
    for id in [stalled[2].0, late_id] {
        let info = status_of(&a, id).unwrap();
        assert_eq!(info.state, JobState::Queued, "past the quota: {info:?}");
    }

    // Each pipe `a` gets back goes to its first waiter: the third stalled
    // job, then the copy, which completes.
    let mut stalled = stalled.into_iter();
    for n in 0..2 {
        let (id, h) = stalled.next().unwrap();
        cancel_job(&a, id).unwrap();
        assert_cancelled(h, "stalled job");
        if n == 0 {
            let (third, _) = &stalled.as_slice()[1];
            status_until(&a, *third, Duration::from_secs(10), "third", |i| {
                i.bytes > 0
            });
            assert_eq!(status_of(&a, late_id).unwrap().state, JobState::Queued);
        }
    }
    let done = completed(wait_within(late, Duration::from_secs(10)), "the late copy");
    assert_eq!(done.bytes, late_data.len() as u64);
    assert_file_eq(&late_dst, &late_data);

    // A detached job waiting behind its connection's quota runs on when the
    // connection closes.
    let (r, w) = stalled_pipe();
    let fourth = a
        .submit(open_src(&stall_src).as_fd(), w.as_fd(), &splice())
        .unwrap();
    pipes.push((r, w));
    status_until(&a, id_of(&fourth), Duration::from_secs(10), "fourth", |i| {
        i.bytes > 0
    });
    let detached_dst = dir.path().join("detached.dst");
    let detached = a
        .copy_file(
            &late_src,
            &detached_dst,
            &TransferOptions {
                detach: true,
                ..splice()
            },
        )
        .unwrap();
    let detached_id = id_of(&detached);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(status_of(&a, detached_id).unwrap().state, JobState::Queued);
    drop((detached, fourth, stalled));
    drop(a);
    let done = completed(
        wait_within(
            b.wait_job(detached_id, false).unwrap(),
            Duration::from_secs(10),
        ),
        "the detached copy",
    );
    assert_eq!(done.bytes, late_data.len() as u64);
    drop(pipes);
    drop(b);
    d.assert_fds_return(baseline, Duration::from_secs(5), "after the quota test");
}
