//! How jobs share the daemon's I/O slots: small jobs get through behind a
//! huge one, equal jobs get equal shares, a high-priority job overtakes
//! low ones, and a global cap of one op in flight still finishes everything.
//!
//! The long jobs read a sparse memfd (the zero page, no memory, no disk)
//! into /dev/null, so what limits them is the daemon and its scheduling,
//! not a device. Their sizes come from a calibration on the same daemon in
//! the same run, so the tests hold on fast and slow machines alike.

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringxfer_ipc::{Client, FailureKind, JobHandle, Priority, Strategy, TransferOptions};

use crate::support::*;

const SMALL: usize = 64 << 10;
const SMALL_JOBS: usize = 100;
/// A source no test outlives: 1 PiB of zero pages.
const ENDLESS: u64 = 1 << 50;

fn splice() -> TransferOptions {
    TransferOptions {
        strategy: Strategy::Splice,
        ..opts()
    }
}

/// Submits `src` (zero pages) into /dev/null.
fn submit_zero(c: &Client, len: u64, o: &TransferOptions) -> JobHandle {
    let src = zero_source(len);
    c.submit(src.as_fd(), dev_null().as_fd(), o)
        .unwrap_or_else(|e| panic!("submit zero job: {e:?}"))
}

/// Submits with a callback that records when the job finished, as the
/// client saw it.
fn submit_zero_timed(
    c: &Client,
    len: u64,
    o: &TransferOptions,
    at: &Arc<Mutex<Option<Instant>>>,
) -> JobHandle {
    let src = zero_source(len);
    let at = Arc::clone(at);
    c.submit_with_callback(src.as_fd(), dev_null().as_fd(), o, move |_| {
        *at.lock().unwrap() = Some(Instant::now());
    })
    .unwrap_or_else(|e| panic!("submit zero job: {e:?}"))
}

/// When a job's callback ran. Its handle resolves just before the callback
/// runs (both on the event thread, in that order), so after `wait` returns
/// the instant may still be a moment away.
fn callback_instant(at: &Arc<Mutex<Option<Instant>>>, what: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(t) = *at.lock().unwrap() {
            return t;
        }
        assert!(Instant::now() < deadline, "{what}'s callback never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Bytes per second one zero-page job gets alone on this daemon, measured
/// over half a second after its first byte.
fn calibrate(c: &Arc<Client>) -> f64 {
    let h = submit_zero(c, ENDLESS, &splice());
    let id = id_of(&h);
    let s0 = status_until(c, id, Duration::from_secs(10), "calibration", |i| {
        i.bytes > 0
    });
    let t0 = Instant::now();
    thread::sleep(Duration::from_millis(500));
    let s1 = status_of(c, id).expect("calibration status");
    let rate = (s1.bytes - s0.bytes) as f64 / t0.elapsed().as_secs_f64();
    cancel_job(c, id).expect("cancel calibration job");
    failed(
        wait_within(h, Duration::from_secs(10)),
        FailureKind::Cancelled,
        "calibration job",
    );
    assert!(rate > 0.0, "the calibration job moved nothing");
    eprintln!("calibration: {:.0} MiB/s", rate / MIB as f64);
    rate
}

/// A length that takes about `secs` at `rate`, in whole MiB, at least 64 MiB.
fn len_for(rate: f64, secs: f64) -> u64 {
    ((rate * secs) as u64 / MIB).max(64) * MIB
}

/// Submits the small copies `srcs[i]` → `dir/<prefix>-i` from `c` and waits
/// for all of them; returns the time until the last one was done as seen by
/// the callbacks, and those instants.
fn small_round(
    c: &Client,
    srcs: &[(PathBuf, Vec<u8>)],
    dir: &std::path::Path,
    prefix: &str,
) -> (Duration, Vec<Instant>) {
    let done = Arc::new(Mutex::new(Vec::new()));
    let t = Instant::now();
    let handles: Vec<_> = srcs
        .iter()
        .enumerate()
        .map(|(i, (src, _))| {
            let dst = dir.join(format!("{prefix}-{i}"));
            let done = Arc::clone(&done);
            c.submit_with_callback(
                open_src(src).as_fd(),
                create_dst(&dst).as_fd(),
                &splice(),
                move |_| done.lock().unwrap().push(Instant::now()),
            )
            .unwrap_or_else(|e| panic!("{prefix} {i}: submit: {e:?}"))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let what = format!("{prefix} {i}");
        let c = completed(wait(h), &what);
        assert_eq!(c.bytes, SMALL as u64, "{what}");
        assert_file_eq(&dir.join(format!("{prefix}-{i}")), &srcs[i].1);
    }
    let instants = done.lock().unwrap().clone();
    let last = *instants.iter().max().expect("callbacks ran");
    (last - t, instants)
}

#[test]
fn small_jobs_finish_before_a_huge_job_submitted_earlier() {
    // Four slots, and the huge job alone could fill all of them.
    let d = Daemon::start_with(&["--max-inflight", "4", "--chunks-per-job", "4"]);
    let ctl = shared_client(&d);
    let small = d.client();
    let huge_client = d.client();
    let dir = tmpdir();
    let srcs: Vec<_> = (0..SMALL_JOBS)
        .map(|i| make_file(dir.path(), &format!("s{i}"), SMALL, i as u64))
        .collect();

    let (alone, _) = small_round(&small, &srcs, dir.path(), "alone");
    // The huge job would take about four seconds by itself.
    let huge_len = len_for(calibrate(&ctl), 4.0);
    let huge_done = Arc::new(Mutex::new(None));
    let huge = submit_zero_timed(&huge_client, huge_len, &splice(), &huge_done);
    let huge_id = id_of(&huge);
    status_until(&ctl, huge_id, Duration::from_secs(10), "huge job", |i| {
        i.bytes > 0
    });
    let (busy, instants) = small_round(&small, &srcs, dir.path(), "busy");
    let last_small = *instants.iter().max().unwrap();
    let info = status_of(&ctl, huge_id).expect("status of the huge job");
    eprintln!(
        "100 small jobs: {alone:?} alone, {busy:?} behind the huge job \
         ({} of {huge_len} bytes moved by then)",
        info.bytes
    );

    let huge_result = completed(wait(huge), "huge job");
    assert_eq!(huge_result.bytes, huge_len);
    // The handle resolves before the callback runs (both on the event
    // thread, in that order), so the callback's instant may lag a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let huge_at = loop {
        if let Some(at) = *huge_done.lock().unwrap() {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "the huge job's callback never ran"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(
        last_small < huge_at,
        "the last small job finished {:?} after the huge job",
        last_small - huge_at
    );
}

#[test]
fn equal_jobs_get_equal_shares() {
    // Three slots for four jobs: someone always waits, so the share each
    // gets is the scheduler's choice.
    let d = Daemon::start_with(&["--max-inflight", "3"]);
    let ctl = shared_client(&d);
    let clients: Vec<Client> = (0..4).map(|_| d.client()).collect();
    let handles: Vec<JobHandle> = clients
        .iter()
        .map(|c| submit_zero(c, ENDLESS, &splice()))
        .collect();
    let ids: Vec<u64> = handles.iter().map(id_of).collect();
    let started = poll_until(Duration::from_secs(10), || {
        let list = jobs_of(&ctl);
        ids.iter()
            .all(|id| find_job(&list, *id).is_some_and(|i| i.bytes > 0))
    });
    assert!(started, "all four jobs moved bytes: {:?}", jobs_of(&ctl));
    thread::sleep(Duration::from_millis(300));
    let before = jobs_of(&ctl);
    thread::sleep(Duration::from_secs(2));
    let after = jobs_of(&ctl);
    let shares: Vec<f64> = ids
        .iter()
        .map(|id| {
            let b0 = find_job(&before, *id).expect("listed").bytes;
            let b1 = find_job(&after, *id).expect("listed").bytes;
            (b1 - b0) as f64
        })
        .collect();
    let index = jain(&shares);
    eprintln!(
        "shares over 2 s (MiB): {:?}, Jain's index {index:.3}",
        shares
            .iter()
            .map(|s| (s / MIB as f64) as u64)
            .collect::<Vec<_>>()
    );
    assert!(shares.iter().all(|&s| s > 0.0), "a job starved: {shares:?}");
    assert!(index >= 0.9, "Jain's index {index:.3} < 0.9: {shares:?}");
    for id in &ids {
        cancel_job(&ctl, *id).unwrap();
    }
    for h in handles {
        failed(
            wait_within(h, Duration::from_secs(10)),
            FailureKind::Cancelled,
            "equal job",
        );
    }
}

#[test]
fn high_priority_job_overtakes_low_jobs_that_started_earlier() {
    let d = Daemon::start_with(&["--max-inflight", "2"]);
    let ctl = shared_client(&d);
    let lows_client = d.client();
    let high_client = d.client();
    // Each job alone would take about a second.
    let len = len_for(calibrate(&ctl), 1.0);
    let low = TransferOptions {
        priority: Priority::Low,
        ..splice()
    };
    let low_done: Vec<_> = (0..3).map(|_| Arc::new(Mutex::new(None))).collect();
    let lows: Vec<_> = low_done
        .iter()
        .map(|at| submit_zero_timed(&lows_client, len, &low, at))
        .collect();
    let low_ids: Vec<u64> = lows.iter().map(id_of).collect();
    // The low jobs are a fifth of the way through, together 60% of one length.
    let moving = poll_until(Duration::from_secs(20), || {
        let list = jobs_of(&ctl);
        let sum: u64 = low_ids
            .iter()
            .filter_map(|id| find_job(&list, *id))
            .map(|i| i.bytes)
            .sum();
        sum >= len / 5 * 3
    });
    assert!(
        moving,
        "the low jobs did not get going: {:?}",
        jobs_of(&ctl)
    );

    let high_done = Arc::new(Mutex::new(None));
    let high = submit_zero_timed(
        &high_client,
        len,
        &TransferOptions {
            priority: Priority::High,
            ..splice()
        },
        &high_done,
    );
    assert_eq!(completed(wait(high), "high job").bytes, len);
    for (i, h) in lows.into_iter().enumerate() {
        assert_eq!(completed(wait(h), &format!("low job {i}")).bytes, len);
    }
    let high_at = callback_instant(&high_done, "the high-priority job");
    for (i, at) in low_done.iter().enumerate() {
        let low_at = callback_instant(at, &format!("low job {i}"));
        assert!(
            high_at < low_at,
            "low job {i} (started first, 1/4 of the weight) finished {:?} before the high one",
            high_at - low_at
        );
    }
}

/// Two direct and two uncached copies of odd sizes, submitted on `a`.
fn submit_direct_and_uncached(
    a: &Client,
    dir: &Path,
    checks: &mut Vec<(JobHandle, PathBuf, Vec<u8>)>,
) {
    for (i, strategy) in [
        Strategy::Direct,
        Strategy::Direct,
        Strategy::Uncached,
        Strategy::Uncached,
    ]
    .into_iter()
    .enumerate()
    {
        let len = if strategy == Strategy::Direct {
            (4 << 20) + 123
        } else {
            (2 << 20) + 5
        };
        let (src, data) = make_file(dir, &format!("{strategy}{i}"), len, 100 + i as u64);
        let dst = dir.join(format!("{strategy}{i}.dst"));
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
        let h = a
            .submit(
                s.as_fd(),
                t.as_fd(),
                &TransferOptions { strategy, ..opts() },
            )
            .unwrap();
        checks.push((h, dst, data));
    }
}

#[test]
fn one_op_in_flight_still_completes_every_kind_of_job() {
    let d = Daemon::start_with(&["--max-inflight", "1"]);
    let ctl = shared_client(&d);
    let a = d.client();
    let b = d.client();
    let dir = tmpdir();

    // Sample the counters throughout: never more than one slot (pipe or
    // buffer, each carrying one piece in flight) lent at once. (Job ops in
    // flight can be two for one slot: a linked read and write.)
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (ctl, stop, most) = (Arc::clone(&ctl), Arc::clone(&stop), Arc::clone(&most));
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let s = stats_of(&ctl);
                assert_eq!(s.max_ops_in_flight, 1, "{s:?}");
                most.fetch_max(s.pipes_in_use + s.buffers_in_use, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let sizes = [0usize, 1, 4095, 4096, 65_537, (1 << 20) + 3, 3 << 20];
    let mut checks: Vec<(JobHandle, PathBuf, Vec<u8>)> = Vec::new();
    for i in 0..28 {
        let len = sizes[i % sizes.len()];
        let (src, data) = make_file(dir.path(), &format!("splice{i}"), len, i as u64);
        let dst = dir.path().join(format!("splice{i}.dst"));
        let c = if i % 2 == 0 { &a } else { &b };
        let h = c
            .submit(open_src(&src).as_fd(), create_dst(&dst).as_fd(), &splice())
            .unwrap();
        checks.push((h, dst, data));
    }
    submit_direct_and_uncached(&a, dir.path(), &mut checks);
    // A file into a socket, and a socket into a file.
    let (send_src, send_data) = make_file(dir.path(), "send", (2 << 20) + 11, 200);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let drain = Drain::start(theirs);
    let send = b
        .submit(open_src(&send_src).as_fd(), ours.as_fd(), &splice())
        .unwrap();
    let recv_data = pattern(201, (1 << 20) + 17);
    let recv_dst = dir.path().join("recv.dst");
    let (mut feeder, source) = UnixStream::pair().unwrap();
    let recv = b
        .submit(source.as_fd(), create_dst(&recv_dst).as_fd(), &splice())
        .unwrap();
    drop(source);
    let feed = {
        let data = recv_data.clone();
        thread::spawn(move || feeder.write_all(&data))
    };

    for (i, (h, dst, data)) in checks.into_iter().enumerate() {
        let what = format!("job {i} ({} bytes)", data.len());
        let done = completed(wait(h), &what);
        assert_eq!(done.bytes, data.len() as u64, "{what}");
        assert_file_eq(&dst, &data);
    }
    assert_eq!(completed(wait(send), "send").bytes, send_data.len() as u64);
    ours.shutdown(Shutdown::Write).unwrap();
    drop(ours);
    assert_eq!(
        drain.finish(Duration::from_secs(10)),
        send_data.len() as u64
    );
    feed.join().unwrap().unwrap();
    assert_eq!(completed(wait(recv), "recv").bytes, recv_data.len() as u64);
    assert_file_eq(&recv_dst, &recv_data);

    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("stats sampler");
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= 1,
        "{most} slots lent at once under --max-inflight 1"
    );
}

#[test]
fn shares_follow_the_priority_weights() {
    // Two slots for three endless jobs of the three classes: over a window
    // their bytes should go about 1 : 2 : 4 (weights low, normal, high).
    let d = Daemon::start_with(&["--max-inflight", "2"]);
    let ctl = shared_client(&d);
    let clients: Vec<Client> = (0..3).map(|_| d.client()).collect();
    let classes = [Priority::Low, Priority::Normal, Priority::High];
    let handles: Vec<JobHandle> = clients
        .iter()
        .zip(classes)
        .map(|(c, priority)| {
            submit_zero(
                c,
                ENDLESS,
                &TransferOptions {
                    priority,
                    ..splice()
                },
            )
        })
        .collect();
    let ids: Vec<u64> = handles.iter().map(id_of).collect();
    let started = poll_until(Duration::from_secs(10), || {
        let list = jobs_of(&ctl);
        ids.iter()
            .all(|id| find_job(&list, *id).is_some_and(|i| i.bytes > 0))
    });
    assert!(started, "all three jobs moved bytes: {:?}", jobs_of(&ctl));
    thread::sleep(Duration::from_millis(300));
    let before = jobs_of(&ctl);
    thread::sleep(Duration::from_secs(2));
    let after = jobs_of(&ctl);
    let got: Vec<f64> = ids
        .iter()
        .map(|id| {
            let b0 = find_job(&before, *id).expect("listed").bytes;
            let b1 = find_job(&after, *id).expect("listed").bytes;
            (b1 - b0) as f64
        })
        .collect();
    let (low, normal, high) = (got[0], got[1], got[2]);
    eprintln!(
        "low : normal : high = 1 : {:.2} : {:.2}",
        normal / low,
        high / low
    );
    assert!(low > 0.0, "the low job starved: {got:?}");
    // Generous bounds around 2 and 4 (and 2 between normal and high).
    let (n, h, hn) = (normal / low, high / low, high / normal);
    assert!((1.5..=2.7).contains(&n), "normal/low = {n:.2}: {got:?}");
    assert!((3.0..=5.3).contains(&h), "high/low = {h:.2}: {got:?}");
    assert!((1.5..=2.7).contains(&hn), "high/normal = {hn:.2}: {got:?}");
    for id in &ids {
        cancel_job(&ctl, *id).unwrap();
    }
    for h in handles {
        failed(
            wait_within(h, Duration::from_secs(10)),
            FailureKind::Cancelled,
            "weighted job",
        );
    }
}
