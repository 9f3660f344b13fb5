//! `ringxfer copy --streams N FILE HOST:EXPORT/PATH`: one large file
//! pushed over N connections at once, as bbcp's parallel streams, for a
//! link one TCP stream cannot fill (a long round trip, a per-flow limit on
//! the way). The file is cut into N ranges of whole MiBs; each goes as a
//! job of its own through a socket of its own (`TransferOptions::stripe`),
//! and the other daemon publishes the file once every stripe is in and
//! checked, before it answers the last one. So the copy succeeds only
//! when every job does, and then the file is there, whole; if one fails,
//! the others are cancelled, and the name keeps what it had.

use std::fs::File;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ringxfer_ipc::proto::peer::{RemotePath, StripeId};
use ringxfer_ipc::{Checksums, Completion, JobError, JobHandle};

use crate::engine_handle::EngineHandle;
use crate::error::CliError;
use crate::job_plan::JobPlan;
use crate::progress::TreeProgress;
use crate::report::{Finished, Subject};

/// No stripe carries less: below it, the connections cost more than they
/// bring.
pub const MIN_STRIPE: u64 = 8 << 20;
/// Stripes are cut at whole blocks of this size (the receiver's writes).
const ALIGN: u64 = 1 << 20;
/// How often the progress is looked at while the stripes move.
const POLL: Duration = Duration::from_millis(100);

/// How many stripes a file of `size` bytes goes as, when `streams` were
/// asked for: fewer when the file is too small for each to carry
/// [`MIN_STRIPE`].
pub fn stripes_for(size: u64, streams: u32) -> u32 {
    let most = (size / MIN_STRIPE).min(u64::from(streams));
    u32::try_from(most).unwrap_or(1).max(1)
}

/// The ranges (offset, length) of at most `count` stripes of a file of
/// `size` bytes: whole MiBs, the last one taking the rest; none empty
/// (rounding to MiBs can leave fewer).
pub fn ranges(size: u64, count: u32) -> Vec<(u64, u64)> {
    let each = size.div_ceil(u64::from(count)).div_ceil(ALIGN) * ALIGN;
    (0..u64::from(count))
        .map(|i| {
            let start = (i * each).min(size);
            let end = ((i + 1) * each).min(size);
            (start, end - start)
        })
        .filter(|&(_, len)| len > 0)
        .collect()
}

/// One stripe's job and the socket it speaks through.
struct Moving {
    handle: JobHandle,
    _socket: TcpStream,
}

/// Pushes `file` (`size` bytes) to `path` at `address` as `count` stripes.
pub fn push(
    engine: &EngineHandle,
    subject: &Subject,
    (file, size): (&File, u64),
    (address, path): (&str, &RemotePath),
    count: u32,
    plan: JobPlan,
) -> Result<Finished, CliError> {
    let started = Instant::now();
    let set = set_number();
    let cut = ranges(size, count);
    let count = u32::try_from(cut.len()).unwrap_or(count);
    let mut moving = Vec::with_capacity(cut.len());
    for (index, (offset, length)) in (0u32..).zip(cut) {
        let submitted = submit(engine, subject, (file, address, path), plan, |opts| {
            opts.offset = offset;
            opts.length = Some(length);
            opts.stripe = Some(StripeId { set, index, count });
        });
        match submitted {
            Ok(m) => moving.push(m),
            Err(err) => {
                cancel_all(engine, &moving);
                wait_all(engine, &moving, None);
                return Err(err);
            }
        }
    }
    let mut progress = TreeProgress::new(plan.progress);
    progress.add_total(size);
    progress.walk_done();
    let results = wait_all(engine, &moving, Some(&mut progress));
    progress.finish();
    let mut done = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(c) => done.push(c),
            Err(err) => {
                return Err(CliError::job(subject.describe(), &err).on_engine(engine.kind().name()))
            }
        }
    }
    Ok(finished(&done, started, engine, &plan))
}

/// Connects a socket of its own for one stripe and submits its job.
fn submit(
    engine: &EngineHandle,
    subject: &Subject,
    (file, address, path): (&File, &str, &RemotePath),
    plan: JobPlan,
    stripe: impl FnOnce(&mut ringxfer_ipc::TransferOptions),
) -> Result<Moving, CliError> {
    let socket = TcpStream::connect(address)
        .map_err(|err| CliError::io(format!("connect to {address}"), &err))?;
    let mut opts = plan.options(subject.describe());
    stripe(&mut opts);
    let handle = engine
        .client()
        .submit_remote(file, &socket, path, false, &opts)
        .map_err(|err| CliError::client(subject.describe(), &err))?;
    Ok(Moving {
        handle,
        _socket: socket,
    })
}

/// A number for the set, which the other daemon's name for it needs to
/// tell from another push's to the same name.
fn set_number() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (u64::from(std::process::id()) << 32) ^ now.as_nanos() as u64
}

/// Waits for every stripe; the first failure cancels the rest (each is
/// still waited for, so the other daemon has let go of the part when this
/// returns). With `progress`, its bytes are counted as they move, and a
/// signal (Ctrl-C) ends the command.
fn wait_all(
    engine: &EngineHandle,
    moving: &[Moving],
    mut progress: Option<&mut TreeProgress>,
) -> Vec<Result<Completion, JobError>> {
    let mut cancelled = false;
    loop {
        if let Some(sig) = crate::signals::fd() {
            if readable(sig.as_raw_fd()) {
                crate::signals::take();
            }
        }
        let failed = moving
            .iter()
            .any(|m| m.handle.is_finished() && m.handle.wait().is_err());
        if failed && !cancelled {
            cancel_all(engine, moving);
            cancelled = true;
        }
        let Some(next) = moving.iter().find(|m| !m.handle.is_finished()) else {
            break;
        };
        if let Some(p) = progress.as_mut() {
            let bytes = moving.iter().map(|m| m.handle.bytes_so_far()).sum();
            p.moving(bytes);
            if p.json_due() {
                p.print_json(None);
            }
        }
        let _ = next.handle.wait_timeout(POLL);
    }
    moving.iter().map(|m| m.handle.wait()).collect()
}

fn cancel_all(engine: &EngineHandle, moving: &[Moving]) {
    for m in moving.iter().filter(|m| !m.handle.is_finished()) {
        if let Ok(job) = m.handle.job_id() {
            let _ = engine.client().cancel(job);
        }
    }
}

/// Whether the signal descriptor has a signal waiting.
fn readable(fd: i32) -> bool {
    let mut watch = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd that lives across the call; no wait.
    unsafe { libc::poll(&mut watch, 1, 0) > 0 }
}

/// The whole file's result from its stripes': bytes summed, CRC-32Cs
/// combined in the file's order.
fn finished(
    done: &[Completion],
    started: Instant,
    engine: &EngineHandle,
    plan: &JobPlan,
) -> Finished {
    let bytes = done.iter().map(|c| c.bytes).sum();
    let mut checksums: Option<Checksums> = None;
    for (c, sums) in done.iter().filter_map(|c| c.checksums.map(|s| (c, s))) {
        checksums = Some(match checksums {
            None => sums,
            Some(acc) => Checksums {
                source: crc32c::crc32c_combine(acc.source, sums.source, c.bytes as usize),
                destination: crc32c::crc32c_combine(
                    acc.destination,
                    sums.destination,
                    c.bytes as usize,
                ),
            },
        });
    }
    let first = done.first();
    Finished {
        bytes,
        elapsed: started.elapsed(),
        strategy: first.map_or(ringxfer_ipc::Strategy::Peer, |c| c.strategy),
        engine: engine.kind(),
        note: Some(format!(
            "{}; pushed as {} streams at once (--streams)",
            first.and_then(|c| c.note.as_deref()).unwrap_or("peer"),
            done.len()
        )),
        job: first.map(|c| c.job),
        synced: plan.fsync,
        checksums,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_are_whole_mibs_covering_the_file() {
        let cases = [
            (64 << 20, 4, 4),
            ((64 << 20) + 5, 4, 4),
            ((8 << 20) * 3 - 1, 3, 3),
            // 9 MiB each: the 16th would start at the end.
            ((128 << 20) + 1, 16, 15),
        ];
        for (size, count, stripes) in cases {
            let r = ranges(size, count);
            assert_eq!(r.len(), stripes, "{size} {count}");
            assert!(r.iter().all(|&(_, len)| len > 0));
            let mut at = 0;
            for (i, &(offset, len)) in r.iter().enumerate() {
                assert_eq!(offset, at, "{size} {count}");
                if i + 1 < r.len() {
                    assert_eq!(len % ALIGN, 0);
                }
                at += len;
            }
            assert_eq!(at, size);
        }
    }

    #[test]
    fn small_files_go_as_fewer_stripes() {
        assert_eq!(stripes_for(1 << 20, 4), 1);
        assert_eq!(stripes_for(16 << 20, 4), 2);
        assert_eq!(stripes_for(1 << 30, 4), 4);
        assert_eq!(stripes_for(1 << 30, 1), 1);
    }
}
