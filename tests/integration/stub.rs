//! The client stub's conveniences against a real daemon: copy_file,
//! send_file, recv_to_file, stats, cancel, events, per-connection limits.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use ringxfer_ipc::{Event, FailureKind, Strategy, TransferOptions};

use crate::support::*;

/// A connected TCP pair over 127.0.0.1: (the connecting side, the accepted side).

#[test]
fn copy_file_send_file_recv_to_file() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", (2 << 20) + 5, 80);

    let dst = dir.path().join("copy");
    let h = client.copy_file(&src, &dst, &opts()).expect("copy_file");
    let c = completed(wait(h), "copy_file");
    assert_eq!(c.bytes, data.len() as u64);
    assert_eq!(c.strategy, Strategy::CopyRange);
    assert_file_eq(&dst, &data);

    let (conn, mut peer) = tcp_pair();
    let reader = thread::spawn(move || {
        peer.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut v = Vec::new();
        peer.read_to_end(&mut v).map(|_| v)
    });
    let h = client.send_file(&src, &conn, &opts()).expect("send_file");
    let c = completed(wait(h), "send_file");
    drop(conn);
    assert_eq!(c.bytes, data.len() as u64);
    assert_bytes_eq(&reader.join().unwrap().expect("reader"), &data, "send_file");

    let (mut writer, server_side) = tcp_pair();
    let rdst = dir.path().join("recv");
    let h = client
        .recv_to_file(&server_side, &rdst, &opts())
        .expect("recv_to_file");
    drop(server_side);
    let w = {
        let data = data.clone();
        thread::spawn(move || {
            writer.write_all(&data)?;
            writer.shutdown(Shutdown::Write)
        })
    };
    let c = completed(wait(h), "recv_to_file");
    w.join().unwrap().unwrap();
    assert_eq!(c.bytes, data.len() as u64);
    assert_file_eq(&rdst, &data);

    let st = client.stats().expect("stats");
    assert!(st.jobs_completed >= 3, "{st:?}");
    assert_eq!(st.jobs_running, 0, "{st:?}");
    assert!(st.connections >= 1, "{st:?}");
    assert!(st.bytes_moved >= 3 * data.len() as u64, "{st:?}");
}

#[test]
fn cancel_a_stalled_job() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 32 << 20, 81);
    let (conn, peer) = tcp_pair();
    {
        let client = d.client();
        let s = open_src(&src);
        let h = client.submit(s.as_fd(), conn.as_fd(), &opts()).unwrap();
        let job = h.job_id().expect("job id");
        client.cancel(job).expect("cancel");
        let f = failed(wait(h), FailureKind::Cancelled, "cancelled job");
        assert!(f.bytes < 32 << 20, "{f:?}");
        // The connection is still usable after a cancel.
        copy_and_check(&client, dir.path(), "after-cancel", 10_000, 82);
        let st = client.stats().unwrap();
        assert!(st.jobs_failed >= 1, "{st:?}");
        assert_eq!(st.jobs_running, 0, "{st:?}");
    }
    drop((conn, peer));
    d.assert_fds_return(baseline, Duration::from_secs(3), "after cancel");
}

#[test]
fn per_connection_job_limit() {
    let d = Daemon::start_with(&["--max-jobs-per-connection", "2"]);
    let baseline = d.baseline();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 32 << 20, 83);
    let pairs: Vec<_> = (0..3).map(|_| tcp_pair()).collect();
    {
        let client = d.client();
        assert_eq!(client.limits().max_jobs_per_connection, 2);
        let s = open_src(&src);
        let a = client
            .submit(s.as_fd(), pairs[0].0.as_fd(), &opts())
            .unwrap();
        let b = client
            .submit(s.as_fd(), pairs[1].0.as_fd(), &opts())
            .unwrap();
        a.job_id().expect("first job admitted");
        b.job_id().expect("second job admitted");
        let c = client
            .submit(s.as_fd(), pairs[2].0.as_fd(), &opts())
            .unwrap();
        match wait_within(c, Duration::from_secs(10)) {
            Err(ringxfer_ipc::JobError::Failed { job, kind, .. }) => {
                assert_eq!(kind, FailureKind::LimitExceeded);
                assert_eq!(job, None, "a refused job has no id");
            }
            Err(e) => panic!("third job: expected LimitExceeded, got {e:?}"),
            Ok(c) => panic!("third job over a limit of 2 completed ({} bytes)", c.bytes),
        }
        // Cancelling one frees a slot.
        client.cancel(a.job_id().unwrap()).unwrap();
        failed(wait(a), FailureKind::Cancelled, "cancelled first job");
        copy_and_check(&client, dir.path(), "after-limit", 1000, 84);
    }
    drop(pairs);
    d.assert_fds_return(baseline, Duration::from_secs(3), "after the limit test");
}

#[test]
fn progress_events_arrive_in_order() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let len = 16 << 20;
    let (src, data) = make_file(dir.path(), "src", len, 85);
    let dst = dir.path().join("dst");
    let events = client.events();
    let (s, t) = (open_src(&src), create_dst(&dst));
    let o = TransferOptions {
        progress: true,
        ..opts()
    };
    let h = client.submit(s.as_fd(), t.as_fd(), &o).unwrap();
    let req = h.req();
    let c = completed(wait(h), "copy with progress");
    assert_eq!(c.bytes, len as u64);
    assert_file_eq(&dst, &data);

    let mut last = 0;
    let mut accepted = false;
    loop {
        match events.recv_timeout(Duration::from_secs(5)) {
            Ok(Event::Accepted { req: r, job }) if r == req => {
                assert_eq!(job, c.job);
                accepted = true;
            }
            Ok(Event::Progress {
                req: r,
                bytes,
                total,
                ..
            }) if r == req => {
                assert!(accepted, "Progress before Accepted");
                assert!(
                    bytes >= last,
                    "progress went backwards: {last} then {bytes}"
                );
                assert!(bytes <= len as u64, "progress {bytes} past {len}");
                if let Some(t) = total {
                    assert_eq!(t, len as u64, "progress total");
                }
                last = bytes;
            }
            Ok(Event::Completed { req: r, bytes, .. }) if r == req => {
                assert!(accepted, "Completed before Accepted");
                assert_eq!(bytes, len as u64);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("events channel: {e} before Completed"),
        }
    }
}

#[test]
fn final_events_of_batch_jobs_go_out_together() {
    let d = Daemon::start();
    let dir = tmpdir();
    let client = d.client();
    let n = 200;
    let sources: Vec<_> = (0..n)
        .map(|i| make_file(dir.path(), &format!("src{i}"), 1000 + i, 900 + i as u64))
        .collect();
    let files: Vec<_> = (0..n)
        .map(|i| {
            (
                open_src(&sources[i].0),
                create_dst(&dir.path().join(format!("dst{i}"))),
            )
        })
        .collect();
    let before = client.stats().expect("stats before");
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut batch = client.batch();
    for (i, (src, dst)) in files.iter().enumerate() {
        if batch.is_full() {
            std::mem::replace(&mut batch, client.batch())
                .send()
                .expect("send a batch");
        }
        let tx = tx.clone();
        batch
            .submit(
                src,
                dst,
                &opts(),
                Some(Box::new(move |r| tx.send((i, r)).unwrap())),
            )
            .expect("add to the batch");
    }
    batch.send().expect("send the last batch");
    drop(tx);
    let mut seen = vec![0; n];
    for (i, r) in rx.iter() {
        let c = r.unwrap_or_else(|e| panic!("job {i}: {e:?}"));
        assert_eq!(c.bytes, sources[i].1.len() as u64, "job {i}: bytes");
        assert_eq!(c.strategy, Strategy::Buffered, "job {i}: strategy");
        seen[i] += 1;
    }
    assert!(seen.iter().all(|&c| c == 1), "callbacks per job: {seen:?}");
    for (i, (_, data)) in sources.iter().enumerate() {
        assert_file_eq(&dir.path().join(format!("dst{i}")), data);
    }
    let after = client.stats().expect("stats after");
    // An event is sent at once only when it tips the held ones over half
    // of the jobs still running; every other one waits for company.
    let events = after.events_sent - before.events_sent;
    let sends = after.event_sends - before.event_sends;
    let held = after.events_held - before.events_held;
    assert!(events > n as u64, "{events} events for {n} jobs");
    assert!(
        held >= n as u64 / 2,
        "{held} of {n} final events held back ({events} events in {sends} sends)"
    );
    assert!(sends < events, "{events} events took {sends} sends");
}

#[test]
fn a_held_final_event_is_sent_while_the_connections_other_jobs_run_on() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "small", 5000, 950);
    let dst = dir.path().join("small.dst");
    {
        let client = d.client();
        // Three jobs that cannot end on their own (sockets nobody writes
        // to) keep the connection busy, so the small job's final event is
        // held; only the hold timer can send it.
        let idle: Vec<_> = (0..3)
            .map(|_| UnixStream::pair().expect("socketpair"))
            .collect();
        let nulls: Vec<_> = (0..3).map(|_| dev_null()).collect();
        let (s, t) = (open_src(&src), create_dst(&dst));
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut batch = client.batch();
        for ((_, reader), null) in idle.iter().zip(&nulls) {
            batch
                .submit(reader, null, &opts(), None)
                .expect("add an idle job");
        }
        batch
            .submit(
                &s,
                &t,
                &opts(),
                Some(Box::new(move |r| tx.send(r).unwrap())),
            )
            .expect("add the small job");
        assert_eq!(batch.send().expect("send the batch"), 4);
        let done = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the small job's final event was never sent");
        assert_eq!(done.expect("small job").bytes, data.len() as u64);
        assert_file_eq(&dst, &data);
        let st = client.stats().expect("stats");
        assert_eq!(st.jobs_running, 3, "the idle jobs run on: {st:?}");
        // Dropping the client cancels the idle jobs.
    }
    d.assert_fds_return(baseline, Duration::from_secs(3), "after the idle jobs");
}

#[test]
fn a_batch_of_submits_goes_in_one_message_and_every_job_reports_once() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let dir = tmpdir();
    let client = d.client();
    let batch = client.batch();
    assert_eq!(
        batch.capacity() as u32,
        client.limits().max_fds_per_message / 2,
        "the capacity follows the daemon's descriptors per message"
    );
    let cap = batch.capacity();
    assert!(cap >= 2, "a batch of one would gain nothing: {cap}");
    drop(batch);

    // Two full batches and a part: every job completes with its own bytes,
    // and each callback runs exactly once.
    let n = 2 * cap + 3;
    let sources: Vec<_> = (0..n)
        .map(|i| {
            make_file(
                dir.path(),
                &format!("src{i}"),
                1000 + i * 517,
                400 + i as u64,
            )
        })
        .collect();
    let files: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(i, (src, _))| {
            (
                open_src(src),
                create_dst(&dir.path().join(format!("dst{i}"))),
            )
        })
        .collect();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut handles = Vec::new();
    let mut batch = client.batch();
    for (i, (src, dst)) in files.iter().enumerate() {
        if batch.is_full() {
            let full = std::mem::replace(&mut batch, client.batch());
            assert_eq!(full.send().expect("send a full batch"), cap);
        }
        let tx = tx.clone();
        let h = batch
            .submit(
                src,
                dst,
                &opts(),
                Some(Box::new(move |r| tx.send((i, r.map(|c| c.bytes))).unwrap())),
            )
            .expect("add to the batch");
        handles.push(h);
    }
    assert_eq!(batch.send().expect("send the rest"), 3);
    drop(tx);
    let mut seen = vec![0; n];
    for (i, r) in rx.iter() {
        assert_eq!(r.expect("job result"), sources[i].1.len() as u64, "job {i}");
        seen[i] += 1;
    }
    assert!(seen.iter().all(|&c| c == 1), "callbacks per job: {seen:?}");
    for (i, h) in handles.into_iter().enumerate() {
        completed(wait(h), "batched job");
        assert_file_eq(&dir.path().join(format!("dst{i}")), &sources[i].1);
    }

    // A batch full to capacity refuses one more; a dropped batch resolves
    // its jobs instead of leaving their waiters hanging.
    let (src, dst) = &files[0];
    let mut batch = client.batch();
    let mut unsent = Vec::new();
    for _ in 0..cap {
        unsent.push(batch.submit(src, dst, &opts(), None).expect("add"));
    }
    assert!(batch.is_full());
    assert!(
        batch.submit(src, dst, &opts(), None).is_err(),
        "over capacity"
    );
    drop(batch);
    for h in unsent {
        match wait_within(h, Duration::from_secs(5)) {
            Err(ringxfer_ipc::JobError::Disconnected(why)) => {
                assert!(why.contains("dropped before it was sent"), "{why}")
            }
            other => panic!("a job of a dropped batch: {other:?}"),
        }
    }
    drop(files);
    drop(client);
    d.assert_fds_return(baseline, Duration::from_secs(3), "after batches");
}

#[test]
fn reconnect_after_a_daemon_restart_names_the_jobs_lost_with_the_old_connection() {
    let sockdir = tmpdir();
    let socket = sockdir.path().join("ringxferd.sock");
    let first = Daemon::start_at(Some(socket.clone()), &[]);
    let mut client = ringxfer_ipc::Client::connect(&socket).expect("connect");
    let dir = tmpdir();

    copy_and_check(&client, dir.path(), "before", 64 << 10, 1);
    let (src, _) = make_file(dir.path(), "stall", 4 << 20, 2);
    let (_pipe_r, pipe_w) = stalled_pipe();
    let stalled = client
        .submit(open_src(&src).as_fd(), pipe_w.as_fd(), &opts())
        .expect("submit");
    let stalled_id = id_of(&stalled);

    // The daemon dies (SIGKILL) and another takes the socket's place.
    drop(first);
    let r = wait_within(stalled, Duration::from_secs(10));
    assert!(
        matches!(r, Err(ringxfer_ipc::JobError::Disconnected(_))),
        "the stalled job's handle: {r:?}"
    );
    // Until its listener is gone, the new daemon's readiness check could
    // be answered by the old one's.
    wait_refused(&socket);
    let second = Daemon::start_at(Some(socket.clone()), &[]);
    let lost = client.reconnect().expect("reconnect");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].job, Some(stalled_id), "{lost:?}");
    assert!(lost[0].bytes <= 4 << 20, "{lost:?}");

    // The new connection works, and a second reconnect, with nothing
    // outstanding, loses nothing.
    copy_and_check(&client, dir.path(), "after", 64 << 10, 3);
    assert_eq!(client.reconnect().expect("reconnect again"), []);
    copy_and_check(&client, dir.path(), "after-again", 64 << 10, 4);
    drop(client);
    second.stop();

    // A client made from a stream has no path to go back to.
    let d = Daemon::start();
    let stream = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    let mut from_stream = ringxfer_ipc::Client::from_stream(stream).unwrap();
    match from_stream.reconnect() {
        Err(ringxfer_ipc::ClientError::Io { op, source }) => {
            assert_eq!(op, "reconnect");
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput);
        }
        other => panic!("reconnect without a path: {other:?}"),
    }
    assert!(from_stream.reconnect_to(&d.socket).unwrap().is_empty());
    copy_and_check(&from_stream, dir.path(), "via-path", 4096, 5);
}

#[test]
fn a_dispatcher_runs_the_events_on_its_own_thread_until_dropped() {
    let d = Daemon::start();
    let dir = tmpdir();
    let client = d.client();
    let (src, data) = make_file(dir.path(), "src", 10_000, 960);
    let dst = dir.path().join("dst");
    let (s, t) = (open_src(&src), create_dst(&dst));
    let (tx, rx) = crossbeam_channel::unbounded();
    {
        let mut events = client.dispatch_here();
        client
            .submit_with_callback(&s, &t, &opts(), move |r| {
                tx.send((thread::current().id(), r)).unwrap()
            })
            .expect("submit");
        // The event thread stands aside: nothing is dispatched until this
        // thread dispatches.
        thread::sleep(Duration::from_millis(200));
        assert!(
            rx.is_empty(),
            "a callback ran while a dispatcher held the events"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rx.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the completion was never dispatched"
            );
            events
                .dispatch(Some(Duration::from_millis(100)))
                .expect("dispatch");
        }
    }
    let (on, r) = rx.recv().unwrap();
    assert_eq!(
        on,
        thread::current().id(),
        "the callback ran on another thread"
    );
    assert_eq!(r.expect("job").bytes, data.len() as u64);
    assert_file_eq(&dst, &data);

    // With the dispatcher gone the event thread dispatches again.
    copy_and_check(&client, dir.path(), "after", 5000, 961);

    // The end of the connection shows through a dispatcher, and resolves
    // what was outstanding.
    let (idle, _writer) = submit_idle(&client, &opts());
    let mut events = client.dispatch_here();
    drop(d);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match events.dispatch(Some(Duration::from_millis(100))) {
            Err(ringxfer_ipc::ClientError::Disconnected) => break,
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "the daemon's end never showed"
            ),
            Err(e) => panic!("dispatch: {e:?}"),
        }
    }
    drop(events);
    let r = wait_within(idle, Duration::from_secs(5));
    assert!(
        matches!(r, Err(ringxfer_ipc::JobError::Disconnected(_))),
        "the idle job's handle: {r:?}"
    );
}
