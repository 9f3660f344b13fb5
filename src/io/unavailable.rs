//! Why io_uring is unavailable, in words an operator can act on: the
//! errno of io_uring_setup alone does not say whether a sysctl, a seccomp
//! filter or a memory limit is to blame. Shared by the engine's fallback and
//! `ringxferd --check`.

use std::io;

use super::buffer_pool::memlock_limit;

/// The errno of `e` by name, then its text: "EPERM (Operation not permitted)".
pub fn errno_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOSYS) => "ENOSYS",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EFAULT) => "EFAULT",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        _ => return e.to_string(),
    };
    // "Invalid argument (os error 22)" -> "EINVAL (Invalid argument)".
    let text = e.to_string();
    let words = text.split(" (os error").next().unwrap_or(&text);
    format!("{name} ({words})")
}

/// RLIMIT_MEMLOCK in words.
pub fn memlock_text() -> String {
    memlock_limit().map_or("unknown".into(), |l| {
        if l == libc::RLIM_INFINITY {
            "unlimited".into()
        } else {
            format!("{l} bytes")
        }
    })
}

/// What a failed io_uring_setup with `entries` entries means, and how to fix it.
pub fn cause(e: &io::Error, entries: u32) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .ok()
                .map(|v| v.trim().to_string());
            match sysctl.as_deref() {
                Some("2") => "kernel.io_uring_disabled = 2: io_uring is off for everyone; \
                    set it to 0 (sysctl -w kernel.io_uring_disabled=0)"
                    .to_string(),
                Some("1") => {
                    let group = std::fs::read_to_string("/proc/sys/kernel/io_uring_group")
                        .map_or("unknown".into(), |g| g.trim().to_string());
                    format!(
                        "kernel.io_uring_disabled = 1: only CAP_SYS_ADMIN and members of group \
                         {group} (kernel.io_uring_group) may make rings; add the daemon's user to \
                         it, or set the sysctl to 0"
                    )
                }
                Some(v) => format!(
                    "kernel.io_uring_disabled = {v}, so not the sysctl: a seccomp filter (the \
                     default profile of container runtimes) or a security module refuses \
                     io_uring_setup; allow io_uring_setup, io_uring_enter and io_uring_register"
                ),
                None => "no kernel.io_uring_disabled sysctl (kernel before 6.6): a seccomp \
                    filter or a security module refuses io_uring_setup"
                    .to_string(),
            }
        }
        Some(libc::ENOSYS) => "the kernel has no io_uring (built without CONFIG_IO_URING, or \
            older than 5.1), or a seccomp filter answers ENOSYS for it"
            .to_string(),
        Some(libc::ENOMEM) => format!(
            "RLIMIT_MEMLOCK is {}: kernels before 5.12 charge the ring's memory to it; raise \
             it (LimitMEMLOCK= in the unit, ulimit -l) or lower ring_entries",
            memlock_text()
        ),
        Some(libc::EINVAL) => {
            format!("the kernel refuses {entries} entries; lower ring_entries")
        }
        _ => "unexpected error".to_string(),
    }
}
