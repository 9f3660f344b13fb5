//! The kernel's ways of saying "interrupted": what the threads back end
//! retries, as the kernel retries inside io_uring. The table of what every
//! other errno means to a job is `transfer/errno.rs`, above this layer.

/// The kernel's ERESTART* codes (include/linux/errno.h). They are not meant
/// to reach user space, but can leak out of an interrupted io-wq worker; they
/// mean the same as EINTR.
pub const ERESTARTSYS: i32 = 512;
pub const ERESTARTNOINTR: i32 = 513;
pub const ERESTARTNOHAND: i32 = 514;
pub const ERESTART_RESTARTBLOCK: i32 = 516;

/// Whether `errno` only says the operation was interrupted.
pub fn interrupted(errno: i32) -> bool {
    matches!(
        errno,
        libc::EINTR | ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
    )
}
