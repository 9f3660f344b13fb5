//! Reading the engine's submission entries back as requests for the threads
//! back end.
//!
//! The engine builds every operation as an io_uring submission entry, whichever
//! back end runs it, so there is one description of each operation and one
//! set of ownership rules (the op table holds what an entry points at until
//! its completion). This module reads the fields of an entry by the kernel's
//! layout of `struct io_uring_sqe`, which is ABI and does not change.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue};

use crate::io::opcodes;

/// `struct io_uring_sqe` as the kernel lays it out (include/uapi/linux/io_uring.h),
/// with each union read through the member the engine's entries use.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawSqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    /// `off`, or `addr2`.
    off: u64,
    /// `addr`, or `splice_off_in`.
    addr: u64,
    len: u32,
    /// `rw_flags`, `fsync_flags`, `poll32_events`, `msg_flags`,
    /// `timeout_flags`, `accept_flags`, `splice_flags`...
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    /// `splice_fd_in`, or `file_index`.
    splice_fd_in: i32,
    addr3: u64,
    pad: u64,
}

const _: () = assert!(std::mem::size_of::<RawSqe>() == 64);
const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);

/// `struct __kernel_timespec`: 64-bit seconds on every architecture.
#[repr(C)]
#[derive(Clone, Copy)]
struct KernelTimespec {
    sec: i64,
    nsec: i64,
}

/// IOSQE_IO_LINK: the next entry runs only if this one moved all it was asked.
const IOSQE_IO_LINK: u8 = 1 << 2;
/// IORING_FSYNC_DATASYNC.
const FSYNC_DATASYNC: u32 = 1;

/// One operation, as the threads back end carries it out.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    Splice {
        fd_in: RawFd,
        off_in: Option<i64>,
        fd_out: RawFd,
        off_out: Option<i64>,
        len: usize,
        flags: u32,
    },
    /// preadv2 (READ and READ_FIXED: a registered buffer is ordinary memory).
    Read {
        fd: RawFd,
        ptr: *mut u8,
        len: usize,
        /// -1: the file position.
        offset: i64,
        rw_flags: i32,
    },
    /// pwritev2 (WRITE and WRITE_FIXED).
    Write {
        fd: RawFd,
        ptr: *const u8,
        len: usize,
        offset: i64,
        rw_flags: i32,
    },
    /// send(2); `zc` posts SEND_ZC's second completion as well.
    Send {
        fd: RawFd,
        ptr: *const u8,
        len: usize,
        msg_flags: i32,
        zc: bool,
    },
    RecvMsg {
        fd: RawFd,
        msg: *mut libc::msghdr,
        msg_flags: i32,
    },
    Accept {
        fd: RawFd,
        flags: i32,
    },
    PollAdd {
        fd: RawFd,
        events: i16,
    },
    Cancel {
        target: u64,
    },
    Close {
        fd: RawFd,
    },
    Fallocate {
        fd: RawFd,
        mode: i32,
        offset: i64,
        len: i64,
    },
    Ftruncate {
        fd: RawFd,
        len: i64,
    },
    Fsync {
        fd: RawFd,
        datasync: bool,
    },
    Timeout {
        after: std::time::Duration,
    },
    /// linkat(2); the paths are NUL-terminated and held by the op table.
    LinkAt {
        olddirfd: RawFd,
        oldpath: *const libc::c_char,
        newdirfd: RawFd,
        newpath: *const libc::c_char,
        flags: i32,
    },
    /// renameat2(2).
    RenameAt {
        olddirfd: RawFd,
        oldpath: *const libc::c_char,
        newdirfd: RawFd,
        newpath: *const libc::c_char,
        flags: u32,
    },
    /// unlinkat(2).
    UnlinkAt {
        dirfd: RawFd,
        path: *const libc::c_char,
        flags: i32,
    },
    /// statx(2) into a buffer the op table holds (admission).
    Statx {
        dirfd: RawFd,
        path: *const libc::c_char,
        flags: i32,
        mask: u32,
        buf: *mut libc::statx,
    },
    /// An opcode the engine does not submit: refused with EACCES, as the
    /// io_uring back end's restrictions refuse it.
    Refused {
        opcode: u8,
    },
}

impl Request {
    /// A read or write at the descriptor's position (offset -1) instead of
    /// the offset it names; any other request as it is.
    pub fn at_position(mut self) -> Request {
        if let Request::Read { offset, .. } | Request::Write { offset, .. } = &mut self {
            *offset = -1;
        }
        self
    }
}

/// An entry read back: its request, user_data and whether it links to the next.
#[derive(Debug, Clone, Copy)]
pub struct Decoded {
    pub request: Request,
    pub user_data: u64,
    pub link: bool,
    /// The registered identity the operation runs under (0: the daemon's).
    pub personality: u16,
}

fn offset(raw: u64) -> Option<i64> {
    (raw != u64::MAX).then_some(raw as i64)
}

/// Reads `entry` back.
///
/// # Safety
/// For a timeout, `entry` must point at a live `__kernel_timespec`, as it must
/// for io_uring; every other pointer is only copied.
pub unsafe fn decode(entry: &squeue::Entry) -> Decoded {
    // SAFETY: squeue::Entry is #[repr(C)] around the kernel's io_uring_sqe,
    // and RawSqe mirrors that struct field for field (both 64 bytes, checked
    // above); an SQE is plain integers, so any bit pattern is a valid RawSqe.
    let sqe = unsafe { *(entry as *const squeue::Entry).cast::<RawSqe>() };
    let fd = sqe.fd;
    let request = match sqe.opcode {
        // What the restricted ring refuses, refused the same way.
        opcode if !opcodes::allowed(opcode) => Request::Refused { opcode },
        opcode::Splice::CODE => Request::Splice {
            fd_in: sqe.splice_fd_in,
            off_in: offset(sqe.addr),
            fd_out: fd,
            off_out: offset(sqe.off),
            len: sqe.len as usize,
            flags: sqe.op_flags,
        },
        opcode::Read::CODE | opcode::ReadFixed::CODE => Request::Read {
            fd,
            ptr: sqe.addr as *mut u8,
            len: sqe.len as usize,
            offset: sqe.off as i64,
            rw_flags: sqe.op_flags as i32,
        },
        opcode::Write::CODE | opcode::WriteFixed::CODE => Request::Write {
            fd,
            ptr: sqe.addr as *const u8,
            len: sqe.len as usize,
            offset: sqe.off as i64,
            rw_flags: sqe.op_flags as i32,
        },
        code @ (opcode::Send::CODE | opcode::SendZc::CODE) => Request::Send {
            fd,
            ptr: sqe.addr as *const u8,
            len: sqe.len as usize,
            msg_flags: sqe.op_flags as i32,
            zc: code == opcode::SendZc::CODE,
        },
        opcode::RecvMsg::CODE => Request::RecvMsg {
            fd,
            msg: sqe.addr as *mut libc::msghdr,
            msg_flags: sqe.op_flags as i32,
        },
        opcode::Accept::CODE => Request::Accept {
            fd,
            flags: sqe.op_flags as i32,
        },
        opcode::PollAdd::CODE => Request::PollAdd {
            fd,
            events: sqe.op_flags as u16 as i16,
        },
        opcode::AsyncCancel::CODE => Request::Cancel { target: sqe.addr },
        opcode::Close::CODE => Request::Close { fd },
        opcode::Fallocate::CODE => Request::Fallocate {
            fd,
            mode: sqe.len as i32,
            offset: sqe.off as i64,
            len: sqe.addr as i64,
        },
        opcode::Ftruncate::CODE => Request::Ftruncate {
            fd,
            len: sqe.off as i64,
        },
        opcode::Fsync::CODE => Request::Fsync {
            fd,
            datasync: sqe.op_flags & FSYNC_DATASYNC != 0,
        },
        opcode::LinkAt::CODE => Request::LinkAt {
            olddirfd: fd,
            oldpath: sqe.addr as *const libc::c_char,
            newdirfd: sqe.len as i32,
            newpath: sqe.off as *const libc::c_char,
            flags: sqe.op_flags as i32,
        },
        opcode::RenameAt::CODE => Request::RenameAt {
            olddirfd: fd,
            oldpath: sqe.addr as *const libc::c_char,
            newdirfd: sqe.len as i32,
            newpath: sqe.off as *const libc::c_char,
            flags: sqe.op_flags,
        },
        opcode::UnlinkAt::CODE => Request::UnlinkAt {
            dirfd: fd,
            path: sqe.addr as *const libc::c_char,
            flags: sqe.op_flags as i32,
        },
        opcode::Statx::CODE => Request::Statx {
            dirfd: fd,
            path: sqe.addr as *const libc::c_char,
            flags: sqe.op_flags as i32,
            mask: sqe.len,
            buf: sqe.off as *mut libc::statx,
        },
        opcode::Timeout::CODE => {
            // SAFETY: the caller keeps the timespec alive (the op table holds
            // it); it is read once, here.
            let ts = unsafe { *(sqe.addr as *const KernelTimespec) };
            Request::Timeout {
                after: std::time::Duration::new(
                    ts.sec.max(0) as u64,
                    ts.nsec.clamp(0, 999_999_999) as u32,
                ),
            }
        }
        opcode => Request::Refused { opcode },
    };
    Decoded {
        request,
        user_data: sqe.user_data,
        link: sqe.flags & IOSQE_IO_LINK != 0,
        personality: sqe.personality,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::types;

    #[test]
    fn entries_read_back_as_built() {
        let e = opcode::Splice::new(types::Fd(3), -1, types::Fd(4), 4096, 65536)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(77);
        // SAFETY: not a timeout.
        let d = unsafe { decode(&e) };
        assert_eq!(d.user_data, 77);
        assert!(d.link);
        match d.request {
            Request::Splice {
                fd_in,
                off_in,
                fd_out,
                off_out,
                len,
                ..
            } => assert_eq!(
                (fd_in, off_in, fd_out, off_out, len),
                (3, None, 4, Some(4096), 65536)
            ),
            other => panic!("{other:?}"),
        }

        let mut buf = [0u8; 16];
        let e = opcode::Read::new(types::Fd(5), buf.as_mut_ptr(), 16)
            .offset(u64::MAX)
            .rw_flags(8)
            .build();
        // SAFETY: not a timeout.
        match unsafe { decode(&e) }.request {
            Request::Read {
                fd,
                ptr,
                len,
                offset,
                rw_flags,
            } => {
                assert_eq!((fd, len, offset, rw_flags), (5, 16, -1, 8));
                assert_eq!(ptr, buf.as_mut_ptr());
            }
            other => panic!("{other:?}"),
        }

        let e = opcode::Fallocate::new(types::Fd(6), 1 << 20)
            .offset(512)
            .build();
        // SAFETY: not a timeout.
        match unsafe { decode(&e) }.request {
            Request::Fallocate {
                fd,
                mode,
                offset,
                len,
            } => assert_eq!((fd, mode, offset, len), (6, 0, 512, 1 << 20)),
            other => panic!("{other:?}"),
        }

        let e = opcode::Fsync::new(types::Fd(7))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: not a timeout.
        let d = unsafe { decode(&e) };
        assert!(matches!(
            d.request,
            Request::Fsync {
                fd: 7,
                datasync: true
            }
        ));

        let ts = types::Timespec::new().sec(2).nsec(5);
        let e = opcode::Timeout::new(&ts).build();
        // SAFETY: `ts` outlives the call.
        match unsafe { decode(&e) }.request {
            Request::Timeout { after } => assert_eq!(after, std::time::Duration::new(2, 5)),
            other => panic!("{other:?}"),
        }

        let e = opcode::PollAdd::new(types::Fd(8), libc::POLLIN as u32).build();
        // SAFETY: not a timeout.
        let d = unsafe { decode(&e) };
        assert!(matches!(
            d.request,
            Request::PollAdd { fd: 8, events } if events == libc::POLLIN
        ));

        let (a, b) = (c"a", c"b");
        let e = opcode::LinkAt::new(types::Fd(-100), a.as_ptr(), types::Fd(9), b.as_ptr())
            .flags(libc::AT_SYMLINK_FOLLOW)
            .build();
        // SAFETY: not a timeout.
        match unsafe { decode(&e) }.request {
            Request::LinkAt {
                olddirfd,
                oldpath,
                newdirfd,
                newpath,
                flags,
            } => {
                assert_eq!(
                    (olddirfd, newdirfd, flags),
                    (-100, 9, libc::AT_SYMLINK_FOLLOW)
                );
                assert_eq!((oldpath, newpath), (a.as_ptr(), b.as_ptr()));
            }
            other => panic!("{other:?}"),
        }
        let e = opcode::RenameAt::new(types::Fd(3), a.as_ptr(), types::Fd(4), b.as_ptr()).build();
        // SAFETY: not a timeout.
        match unsafe { decode(&e) }.request {
            Request::RenameAt {
                olddirfd,
                oldpath,
                newdirfd,
                newpath,
                flags,
            } => {
                assert_eq!((olddirfd, newdirfd, flags), (3, 4, 0));
                assert_eq!((oldpath, newpath), (a.as_ptr(), b.as_ptr()));
            }
            other => panic!("{other:?}"),
        }
        let e = opcode::UnlinkAt::new(types::Fd(5), a.as_ptr()).build();
        // SAFETY: not a timeout.
        let decoded = unsafe { decode(&e) };
        assert!(matches!(
            decoded.request,
            Request::UnlinkAt {
                dirfd: 5,
                flags: 0,
                ..
            }
        ));

        // SAFETY: a zeroed statx is a valid value; only its address is used.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        let e = opcode::Statx::new(
            types::Fd(10),
            c"".as_ptr(),
            (&mut stx as *mut libc::statx).cast(),
        )
        .flags(libc::AT_EMPTY_PATH)
        .mask(libc::STATX_TYPE)
        .build();
        // SAFETY: not a timeout.
        match unsafe { decode(&e) }.request {
            Request::Statx {
                dirfd,
                path,
                flags,
                mask,
                buf,
            } => {
                assert_eq!(
                    (dirfd, flags, mask),
                    (10, libc::AT_EMPTY_PATH, libc::STATX_TYPE)
                );
                assert_eq!(path, c"".as_ptr());
                assert_eq!(buf, &mut stx as *mut libc::statx);
            }
            other => panic!("{other:?}"),
        }

        let e = opcode::Nop::new().build();
        // SAFETY: not a timeout.
        let d = unsafe { decode(&e) };
        assert!(matches!(d.request, Request::Refused { .. }));
    }
}
