//! A seccomp filter that makes `io_uring_setup` fail in a child process, as
//! a container runtime's default profile or a unit's SystemCallFilter= does:
//! the real kernel refuses the call, so the daemon meets a real errno and
//! nothing in it is faked.
//!
//! The filter is classic BPF, installed between fork and exec with
//! `CommandExt::pre_exec`: PR_SET_NO_NEW_PRIVS (which lets an unprivileged
//! process install a filter), then seccomp(SECCOMP_SET_MODE_FILTER). It
//! applies to the exec'd program and every thread it starts, and cannot be
//! removed by it.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// What `io_uring_setup` returns under the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// EPERM: what Docker's default profile answers for io_uring, and what
    /// kernel.io_uring_disabled gives; the daemon must tell the two apart.
    Eperm,
    /// ENOSYS: what a kernel without io_uring answers, and what some
    /// filters answer for calls they do not know.
    Enosys,
}

impl Refusal {
    pub fn errno(self) -> i32 {
        match self {
            Refusal::Eperm => libc::EPERM,
            Refusal::Enosys => libc::ENOSYS,
        }
    }
}

/// The AUDIT_ARCH_* value (linux/audit.h) the kernel puts in
/// `seccomp_data.arch` for this target's native system calls; `None` where
/// the helper does not know it, and the tests that need it skip.
const AUDIT_ARCH: Option<u32> = if cfg!(target_arch = "x86_64") {
    // EM_X86_64 (62) | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    Some(0xC000_003E)
} else if cfg!(target_arch = "aarch64") {
    // EM_AARCH64 (183) | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    Some(0xC000_00B7)
} else {
    None
};

// Classic BPF opcodes as `sock_filter.code` takes them (u16); libc has them
// as u32. All are below 0x100.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A filter program ready to install: built (and allocated) in the parent,
/// so the child between fork and exec only reads it.
#[derive(Debug)]
pub struct IoUringFilter {
    program: Vec<libc::sock_filter>,
    len: u16,
}

impl IoUringFilter {
    /// The program that answers `io_uring_setup` with `refusal`'s errno and
    /// allows every other call; `None` on an architecture the helper does
    /// not know.
    pub fn new(refusal: Refusal) -> Option<IoUringFilter> {
        let arch = AUDIT_ARCH?;
        let nr = u32::try_from(libc::SYS_io_uring_setup).expect("syscall numbers are small");
        let arch_at = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
        let nr_at = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
        // SECCOMP_RET_DATA holds the errno the call returns.
        let errno = refusal.errno() as u32 & libc::SECCOMP_RET_DATA;
        let program = vec![
            // 0: which ABI made the call. Another ABI's numbers name other
            // calls (i386's 425 is not ours), so anything but the native one
            // is allowed, untouched. (x32 calls carry the x86_64 arch with
            // bit 30 set in nr, so they never equal 425 below: allowed too.)
            stmt(LD_W_ABS, arch_at),
            // 1: native: go on to 2; else jump to 5 (allow).
            jump(JEQ_K, arch, 0, 3),
            // 2: the system call number.
            stmt(LD_W_ABS, nr_at),
            // 3: io_uring_setup: go on to 4; else jump to 5.
            jump(JEQ_K, nr, 0, 1),
            // 4: fail it with the errno, without running it.
            stmt(RET_K, libc::SECCOMP_RET_ERRNO | errno),
            // 5: everything else runs.
            stmt(RET_K, libc::SECCOMP_RET_ALLOW),
        ];
        let len = u16::try_from(program.len()).expect("a six-instruction program");
        Some(IoUringFilter { program, len })
    }

    /// Installs the filter in the calling process. Async-signal-safe: two
    /// system calls on memory that already exists, no allocation (the error
    /// is an OS error code, which `io::Error` holds without allocating).
    fn install(&self) -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.len,
            // The kernel copies the program in and never writes through
            // this pointer; the field is *mut only because C's is.
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integer arguments only;
        // it sets a flag that exec and every child inherit.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `prog` points at `self.program`, `len` instructions long,
        // alive for the call; the kernel copies and validates it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes `cmd`'s child install this filter just before it execs: the
    /// program it runs starts with io_uring_setup refused. If installing
    /// fails, the spawn fails with that error.
    pub fn apply(self, cmd: &mut Command) {
        // SAFETY: the closure runs in the child between fork and exec, where
        // only async-signal-safe work is allowed: `install` makes two system
        // calls on the program the closure owns (allocated here, before the
        // fork) and builds no error that allocates.
        unsafe {
            cmd.pre_exec(move || self.install());
        }
    }
}

/// `IoUringFilter::new(refusal)`, or `None` after saying why the calling
/// test skips (an architecture the helper does not know).
pub fn filter_or_skip(refusal: Refusal) -> Option<IoUringFilter> {
    let filter = IoUringFilter::new(refusal);
    if filter.is_none() {
        eprintln!(
            "SKIPPED: no seccomp filter for io_uring_setup on {}",
            std::env::consts::ARCH
        );
    }
    filter
}
