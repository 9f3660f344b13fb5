//! Pipes made at start-up and lent to splice chunks.
//!
//! splice(2) needs a pipe on one side, so every file-to-file or file-to-socket
//! chunk moves through one. Making pipes per chunk would cost two syscalls and a
//! resize each time; instead the pool makes them once, grows each with
//! F_SETPIPE_SZ, and lends them out. A pipe is shared (`Rc`) between the chunk
//! and whichever splice is in flight on it, so it cannot be closed before the
//! kernel is done with it; it goes back to the pool only when nothing else holds it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use super::ring::check;

/// One pipe: the kernel reads from `read` and writes into `write`.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// The capacity the kernel granted, in bytes.
    pub capacity: u32,
}

impl Pipe {
    /// Makes a pipe and tries to grow it to `size` bytes.
    fn new(size: u32) -> Result<Pipe, PipeError> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })
            .map_err(PipeError::Create)?;
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let fd = write.as_raw_fd();
        // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory of ours.
        let granted = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size as libc::c_int) };
        if granted < 0 {
            return Err(PipeError::Grow {
                size,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Pipe {
            read,
            write,
            capacity: granted as u32,
        })
    }

    /// Reads out whatever the pipe holds: true once it is empty. Each read
    /// asks for at most what FIONREAD says is there, so none blocks (no op
    /// holds the pipe: nothing else writes to it).
    fn drain(&self) -> bool {
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let mut queued: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int.
            if unsafe { libc::ioctl(self.read.as_raw_fd(), libc::FIONREAD, &mut queued) } != 0 {
                return false;
            }
            if queued <= 0 {
                return true;
            }
            let want = (queued as usize).min(scratch.len());
            let (fd, buf) = (self.read.as_raw_fd(), scratch.as_mut_ptr().cast());
            // SAFETY: reads at most `want` bytes into `scratch`, which holds more.
            let got = unsafe { libc::read(fd, buf, want) };
            if got <= 0 {
                return false;
            }
        }
    }

    /// The end splice reads from.
    pub(crate) fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The end splice writes into.
    pub(crate) fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }
}

/// Why a pipe could not be made or grown.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// pipe2(2) failed (EMFILE, ENFILE).
    #[error("pipe2 failed: {0}")]
    Create(#[source] std::io::Error),
    /// F_SETPIPE_SZ refused the size.
    #[error(
        "F_SETPIPE_SZ to {size} bytes failed: {source}; without CAP_SYS_RESOURCE a pipe may hold at most \
         /proc/sys/fs/pipe-max-size bytes and a user's pipes at most /proc/sys/fs/pipe-user-pages-soft \
         pages in all: lower --pipe-size or --pipes, or raise those sysctls"
    )]
    Grow {
        /// The size asked for.
        size: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How many pipes of `size` bytes an unprivileged user may have in all, by
/// /proc/sys/fs/pipe-user-pages-soft, keeping a quarter of it for the user's
/// other pipes (and the client's). `None` when no limit applies: root, or
/// the limit is 0 (off) or unreadable.
pub(crate) fn pipe_budget(size: u32) -> Option<(usize, u64)> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return None;
    }
    let soft: u64 = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if soft == 0 {
        return None;
    }
    // The kernel rounds a pipe's size up to a power of two pages.
    let pages = u64::from(size).div_ceil(4096).next_power_of_two().max(1);
    Some(((soft * 3 / 4 / pages) as usize, soft))
}

/// The pool of idle pipes, all of one size.
pub(crate) struct PipePool {
    idle: Vec<Rc<Pipe>>,
    total: usize,
    size: u32,
}

impl PipePool {
    /// Makes up to `count` pipes of `size` bytes. Stops at the first pipe the
    /// kernel refuses and returns that error with the pipes made so far, so the
    /// caller can decide whether fewer pipes will do.
    pub(crate) fn new(count: usize, size: u32) -> (PipePool, Option<PipeError>) {
        let mut idle = Vec::with_capacity(count);
        let mut error = None;
        for _ in 0..count {
            match Pipe::new(size) {
                Ok(p) => idle.push(Rc::new(p)),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let total = idle.len();
        (PipePool { idle, total, size }, error)
    }

    /// Lends an idle pipe, if there is one.
    pub(crate) fn take(&mut self) -> Option<Rc<Pipe>> {
        self.idle.pop()
    }

    /// Takes back a pipe whose chunk is done and which holds no data. The
    /// caller must hold the last reference; a pipe still referenced elsewhere
    /// is a bug, and is dropped from the pool rather than shared.
    pub(crate) fn give_back(&mut self, pipe: Rc<Pipe>) {
        debug_assert_eq!(
            Rc::strong_count(&pipe),
            1,
            "a pipe came back while an op still holds it"
        );
        if Rc::strong_count(&pipe) == 1 {
            self.idle.push(pipe);
        } else {
            self.total -= 1;
        }
    }

    /// Takes back a pipe that may still hold bytes from a failed or cancelled
    /// chunk. Those bytes belong to nobody now: they are read out and the
    /// pipe is lent again; if that fails, the pipe is closed and a fresh one
    /// made in its place, and if that fails too the pool is one pipe smaller.
    /// (Draining first: a daemon that dropped its privileges may not grow a
    /// new pipe past pipe-user-pages-soft, counted over all of its uid.)
    pub(crate) fn discard(&mut self, pipe: Rc<Pipe>) -> Option<PipeError> {
        if Rc::strong_count(&pipe) == 1 && pipe.drain() {
            self.idle.push(pipe);
            return None;
        }
        drop(pipe);
        match Pipe::new(self.size) {
            Ok(p) => {
                self.idle.push(Rc::new(p));
                None
            }
            Err(e) => {
                self.total -= 1;
                Some(e)
            }
        }
    }

    /// Pipes the pool owns, idle or lent.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Pipes idle now.
    pub(crate) fn idle(&self) -> usize {
        self.idle.len()
    }

    /// The capacity of each pipe.
    pub(crate) fn pipe_capacity(&self) -> u32 {
        self.idle.first().map(|p| p.capacity).unwrap_or(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_makes_grown_pipes_and_replaces_discarded_ones() {
        let (mut pool, err) = PipePool::new(3, 256 * 1024);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(pool.total(), 3);
        let p = pool.take().expect("an idle pipe");
        assert!(p.capacity >= 256 * 1024);
        let old = p.read_end().as_raw_fd();
        assert!(pool.discard(p).is_none());
        assert_eq!((pool.total(), pool.idle()), (3, 3));
        let _ = old;
        let q = pool.take().expect("an idle pipe");
        pool.give_back(q);
        assert_eq!(pool.idle(), 3);
    }

    #[test]
    fn oversized_pipe_is_refused_with_a_clear_error() {
        let max: u32 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
        // Root may exceed pipe-max-size (CAP_SYS_RESOURCE), so ask for more
        // than any kernel allows: 2 GiB is over the hard cap of pipe sizes.
        let (pool, err) = PipePool::new(1, max.max(1 << 31));
        assert_eq!(pool.total(), 0);
        let msg = err.expect("an error").to_string();
        assert!(msg.contains("F_SETPIPE_SZ"), "{msg}");
    }
}
