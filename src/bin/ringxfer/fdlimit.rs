//! The open-file limit, which bounds how many copies can be in flight: each
//! holds its destination open until it is published.

/// Raises RLIMIT_NOFILE's soft limit to the hard limit (as the daemon does)
/// and returns the soft limit now in force. A failure leaves the limit as it
/// was, which only makes the window smaller.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        // Assume the common default rather than fail the copy.
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from `raised`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_positive() {
        assert!(raise_nofile() > 0);
    }
}
