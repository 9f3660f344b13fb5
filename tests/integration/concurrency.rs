//! Many clients with many jobs in flight at once.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use ringxfer_ipc::Client;

use crate::support::*;

const CLIENTS: usize = 10;
const JOBS: usize = 100;

fn size_of(client: usize, job: usize) -> usize {
    let k = (client * JOBS + job) as u64;
    match k % 10 {
        0 => 0,
        1 => 1,
        2 => 4096,
        _ => (k.wrapping_mul(2_654_435_761) % 65_537) as usize,
    }
}

#[test]
fn ten_clients_each_with_a_hundred_jobs_in_flight() {
    let d = Daemon::start_with(&["--max-jobs-per-connection", &JOBS.to_string()]);
    let baseline = d.baseline();
    let dir = tmpdir();

    // Sources are written up front so the submits go out back to back.
    let mut inputs: Vec<Vec<(PathBuf, PathBuf, Vec<u8>)>> = Vec::new();
    for c in 0..CLIENTS {
        let mut v = Vec::new();
        for j in 0..JOBS {
            let (src, data) = make_file(
                dir.path(),
                &format!("c{c}-j{j}.src"),
                size_of(c, j),
                (c * JOBS + j) as u64 + 1000,
            );
            v.push((src, dir.path().join(format!("c{c}-j{j}.dst")), data));
        }
        inputs.push(v);
    }

    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(c, jobs)| {
            let socket = d.socket.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let client = Client::connect(socket.as_path())
                    .unwrap_or_else(|e| panic!("client {c}: connect: {e:?}"));
                barrier.wait();
                let mut handles = Vec::with_capacity(JOBS);
                for (j, (src, dst, _)) in jobs.iter().enumerate() {
                    let s = open_src(src);
                    let t = create_dst(dst);
                    let h = client
                        .submit(s.as_fd(), t.as_fd(), &opts())
                        .unwrap_or_else(|e| panic!("client {c} job {j}: submit: {e:?}"));
                    handles.push(h);
                }
                for (j, (h, (_, dst, data))) in handles.into_iter().zip(jobs.iter()).enumerate() {
                    let what = format!("client {c} job {j} ({} bytes)", data.len());
                    let done = completed(wait(h), &what);
                    assert_eq!(done.bytes, data.len() as u64, "{what}: bytes");
                    assert_eq!(
                        done.strategy,
                        auto_between_files(data.len() as u64),
                        "{what}: strategy"
                    );
                    assert_file_eq(dst, data);
                }
            })
        })
        .collect();
    let mut panics = Vec::new();
    for (c, t) in threads.into_iter().enumerate() {
        if let Err(e) = t.join() {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panics.push(format!("client {c}: {msg}"));
        }
    }
    assert!(
        panics.is_empty(),
        "{} clients failed:\n{}",
        panics.len(),
        panics.join("\n")
    );

    d.assert_fds_return(baseline, Duration::from_secs(5), "after 1000 jobs");
    d.assert_healthy(baseline, "after 1000 jobs");
}
