//! The one list of the io_uring operations the engine submits: the ring's
//! restrictions allow exactly these (io/ring.rs), ring set-up checks the
//! kernel has them, the threads back end refuses every other opcode with
//! EACCES as the restricted ring does (io/threads), and `ringxferd --check`
//! reports on them through the same ring set-up (src/check.rs). Adding an
//! operation is adding it here; nothing else can disagree.

use io_uring::opcode;

/// One operation the engine submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opcode {
    /// Lower case, as `--check` shows it ("accept", "send_zc").
    pub name: &'static str,
    pub code: u8,
    /// Ring set-up refuses io_uring on a kernel without it (then `auto`
    /// runs the threads engine). An optional one is left out of the
    /// restrictions when the kernel lacks it, so its operations fail with
    /// EACCES and the jobs that need it fail or fall back.
    pub required: bool,
    /// What needs it, for `--check`.
    pub role: &'static str,
}

const fn op(name: &'static str, code: u8, role: &'static str) -> Opcode {
    Opcode {
        name,
        code,
        required: true,
        role,
    }
}

/// Every operation the engine submits, in `--check`'s order. All are
/// required today: the engine has always refused io_uring without any of
/// them, and making one optional changes which engine `auto` runs on older
/// kernels (a behaviour change to make on purpose, with its fallback tested).
pub(crate) const OPCODES: &[Opcode] = &[
    op("accept", opcode::Accept::CODE, "accepts client connections"),
    op(
        "recvmsg",
        opcode::RecvMsg::CODE,
        "receives requests and their descriptors",
    ),
    op(
        "send",
        opcode::Send::CODE,
        "sends events, and file-to-socket data",
    ),
    op(
        "read",
        opcode::Read::CODE,
        "reads the signalfd; unregistered buffer reads",
    ),
    op(
        "poll_add",
        opcode::PollAdd::CODE,
        "waits on stream sources and destinations",
    ),
    op("splice", opcode::Splice::CODE, "the splice strategy"),
    op(
        "statx",
        opcode::Statx::CODE,
        "admission: what a job's descriptors are, off the loop thread (a stalled FUSE or NFS getattr holds only its job)",
    ),
    op(
        "timeout",
        opcode::Timeout::CODE,
        "rate limits and accept back-off",
    ),
    op(
        "async_cancel",
        opcode::AsyncCancel::CODE,
        "cancels jobs and sessions",
    ),
    op(
        "close",
        opcode::Close::CODE,
        "closes client descriptors off the loop thread",
    ),
    op(
        "read_fixed",
        opcode::ReadFixed::CODE,
        "direct/uncached reads into registered buffers",
    ),
    op(
        "write_fixed",
        opcode::WriteFixed::CODE,
        "direct/uncached writes from registered buffers",
    ),
    op(
        "write",
        opcode::Write::CODE,
        "uncached writes; unregistered buffer writes",
    ),
    op(
        "send_zc",
        opcode::SendZc::CODE,
        "zero-copy sends from registered buffers",
    ),
    op("fsync", opcode::Fsync::CODE, "jobs with fsync"),
    op(
        "fallocate",
        opcode::Fallocate::CODE,
        "direct: preallocates the destination; sparse copies punch holes into an existing one",
    ),
    op(
        "ftruncate",
        opcode::Ftruncate::CODE,
        "direct: trims the padded last block; in-place copies end at the copy's end",
    ),
    op(
        "linkat",
        opcode::LinkAt::CODE,
        "detached copies: the daemon names the finished file",
    ),
    op(
        "renameat",
        opcode::RenameAt::CODE,
        "detached copies: replacing an existing file",
    ),
    op(
        "unlinkat",
        opcode::UnlinkAt::CODE,
        "detached copies: removing a hidden name after a failure",
    ),
    op(
        "openat2",
        opcode::OpenAt2::CODE,
        "host-to-host receiver: names beneath an export (RESOLVE_BENEATH)",
    ),
    op(
        "mkdirat",
        opcode::MkDirAt::CODE,
        "host-to-host receiver: directories a pushed file needs",
    ),
];

/// The entry for `code`, if the engine uses it.
pub(crate) fn find(code: u8) -> Option<&'static Opcode> {
    OPCODES.iter().find(|o| o.code == code)
}

/// Whether the engine submits `code`: what both back ends allow (the
/// operations io_uring lacks, which workers run, included).
pub(crate) fn allowed(code: u8) -> bool {
    find(code).is_some() || on_workers(code)
}

/// Whether `code` is one of the engine's operations that io_uring has no
/// opcode for (FICLONE, the SEEK_DATA/SEEK_HOLE map; copy_file_range and
/// sendfile; fchmod and futimens): a worker runs it under either back end.
pub(crate) fn on_workers(code: u8) -> bool {
    code == super::op::ficlone::CODE
        || code == super::op::data_map::CODE
        || code == super::op::copy_range::CODE
        || code == super::op::set_meta::CODE
        || code == super::op::list_dir::CODE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_opcode_is_listed_once_by_code_and_by_name() {
        for (i, a) in OPCODES.iter().enumerate() {
            for b in &OPCODES[i + 1..] {
                assert_ne!(a.code, b.code, "{} and {} share a code", a.name, b.name);
                assert_ne!(a.name, b.name);
            }
        }
    }
}
