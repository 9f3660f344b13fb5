//! Growing the descriptor table before threads share it.
//!
//! The kernel grows a process's descriptor table by powers of two as
//! descriptors are opened (64, 128, 256, ...). Once more than one thread
//! shares the table (io-wq workers count), each growth waits for an RCU
//! grace period, several milliseconds, before the old table is freed; a
//! CLI copying 10,000 files grew it four times and lost about a fifth of its
//! wall time to that, and the daemon's loop would stall the same way the
//! first time many jobs arrive. The table never shrinks, so growing it once
//! at start-up, while the process has one thread, costs a dup and a close.

/// Grows the descriptor table to hold at least `n` descriptors, capped by
/// the soft RLIMIT_NOFILE (the kernel refuses descriptors past it). Call it
/// while the process has one thread. A failure only leaves the table to
/// grow later, so none is reported.
pub fn reserve(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let Ok(top) = libc::c_int::try_from(n.min(lim.rlim_cur).saturating_sub(1)) else {
        return;
    };
    if top < 3 {
        return;
    }
    // Any open descriptor can be duplicated; stdio may be closed, a new pipe is not.
    let mut ends = [-1 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `ends`, which we own.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    // SAFETY: F_DUPFD_CLOEXEC takes an open descriptor (ends[0]) and the
    // lowest number the copy may have; the kernel grows the table to hold it.
    let high = unsafe { libc::fcntl(ends[0], libc::F_DUPFD_CLOEXEC, top) };
    for fd in [ends[0], ends[1], high] {
        if fd >= 0 {
            // SAFETY: each is a descriptor opened above that nothing else
            // knows of, and each is closed once.
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    fn soft_limit() -> u64 {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into `lim`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        lim.rlim_cur
    }

    #[test]
    fn grows_the_table_and_leaves_the_high_descriptor_closed() {
        let want = 1000.min(soft_limit());
        reserve(want);
        assert!(table_size() >= want, "FDSize {} < {want}", table_size());
        // Other tests of this process open and close descriptors meanwhile,
        // so only the one far above theirs can be checked: the copy made to
        // grow the table is gone.
        let high = libc::c_int::try_from(want - 1).unwrap();
        // SAFETY: F_GETFD only asks about a descriptor number.
        assert_eq!(unsafe { libc::fcntl(high, libc::F_GETFD) }, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EBADF)
        );
    }
}
