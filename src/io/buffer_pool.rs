//! Aligned buffers made at start-up and registered with the ring.
//!
//! O_DIRECT needs memory aligned to the device (statx's dio_mem_align, at
//! most a page), and READ_FIXED/WRITE_FIXED need buffers registered with the
//! ring, which pins them once instead of on every operation. Both are done
//! here, once. Registration counts against RLIMIT_MEMLOCK for users without
//! CAP_IPC_LOCK; when it fails the pool still works, unregistered, and the
//! engine uses plain READ/WRITE on the same aligned memory.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// Alignment of every buffer: a page, which satisfies any dio_mem_align.
pub(crate) const BUFFER_ALIGN: usize = 4096;

/// One buffer of the pool, named by its index (the registered buffer index).
///
/// Not `Copy` or `Clone`: whoever holds the value owns the memory. A job's
/// chunk holds it while idle; an operation on it takes it into its op-table
/// entry (`Hold::Buffer`) and the completion hands it back, so nothing can
/// give a buffer back to the pool, or touch its bytes, while the kernel may
/// still read or write it.
#[derive(Debug)]
#[must_use = "a buffer not given back to the pool is lost to it"]
pub struct BufRef {
    pub index: u16,
    pub ptr: NonNull<u8>,
    pub len: u32,
}

impl BufRef {
    /// The first `len` bytes, which a completed read filled.
    pub fn filled(&self, at: usize, len: usize) -> &[u8] {
        assert!(
            at.checked_add(len)
                .is_some_and(|end| end <= self.len as usize),
            "{len} bytes at {at} past a buffer of {}",
            self.len
        );
        // SAFETY: within the buffer (asserted); holding the value means no
        // operation is in flight on it, so nothing writes it meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(at), len) }
    }

    /// Copies `bytes` into the buffer at `at` (a header in front of data).
    pub fn copy_in(&mut self, at: usize, bytes: &[u8]) {
        assert!(
            at.checked_add(bytes.len())
                .is_some_and(|end| end <= self.len as usize),
            "{} bytes at {at} past a buffer of {}",
            bytes.len(),
            self.len
        );
        // SAFETY: within the buffer (asserted), which `&mut self` owns: no
        // operation is in flight on it while its owner holds it.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(at), bytes.len())
        };
    }

    /// Zeroes bytes `from..to` (O_DIRECT padding).
    pub fn zero(&mut self, from: usize, to: usize) {
        assert!(
            from <= to && to <= self.len as usize,
            "zeroing {from}..{to} of a buffer of {}",
            self.len
        );
        // SAFETY: within the buffer (asserted), which `&mut self` owns.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(from), 0, to - from) };
    }
}

/// The pool. It owns the memory for the engine's whole life: an operation
/// holds a buffer's index, never the memory, and the index comes back to the
/// pool only on that operation's completion.
pub(crate) struct BufferPool {
    chunks: Vec<NonNull<u8>>,
    layout: Layout,
    idle: Vec<u16>,
    registered: bool,
}

/// Why the pool could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("--buffer-size {0} must be a non-zero multiple of {BUFFER_ALIGN} up to 1 GiB")]
    Size(usize),
    #[error("--buffers {0} must be between 1 and 65535")]
    Count(usize),
    #[error("cannot allocate {count} buffers of {size} bytes")]
    Alloc { count: usize, size: usize },
}

impl BufferPool {
    /// Allocates `count` zeroed buffers of `size` bytes, page-aligned.
    pub(crate) fn new(count: usize, size: usize) -> Result<BufferPool, BufferError> {
        if size == 0 || !size.is_multiple_of(BUFFER_ALIGN) || size > 1 << 30 {
            return Err(BufferError::Size(size));
        }
        if count > u16::MAX as usize {
            return Err(BufferError::Count(count));
        }
        let layout =
            Layout::from_size_align(size, BUFFER_ALIGN).map_err(|_| BufferError::Size(size))?;
        let mut chunks = Vec::with_capacity(count);
        for _ in 0..count {
            // SAFETY: the layout has a non-zero size (checked above).
            let p = unsafe { alloc_zeroed(layout) };
            match NonNull::new(p) {
                Some(p) => chunks.push(p),
                None => {
                    for c in chunks {
                        // SAFETY: allocated above with this layout, not yet shared.
                        unsafe { dealloc(c.as_ptr(), layout) };
                    }
                    return Err(BufferError::Alloc { count, size });
                }
            }
        }
        let idle = (0..count as u16).rev().collect();
        Ok(BufferPool {
            chunks,
            layout,
            idle,
            registered: false,
        })
    }

    /// The iovecs to register with the ring, in index order.
    pub(crate) fn iovecs(&self) -> Vec<libc::iovec> {
        self.chunks
            .iter()
            .map(|c| libc::iovec {
                iov_base: c.as_ptr().cast(),
                iov_len: self.layout.size(),
            })
            .collect()
    }

    /// Records that the ring accepted the buffers, so FIXED ops may use them.
    pub(crate) fn mark_registered(&mut self) {
        self.registered = true;
    }

    pub(crate) fn registered(&self) -> bool {
        self.registered
    }

    /// Lends an idle buffer.
    pub(crate) fn take(&mut self) -> Option<BufRef> {
        let index = self.idle.pop()?;
        Some(BufRef {
            index,
            ptr: self.chunks[index as usize],
            len: self.layout.size() as u32,
        })
    }

    /// Takes back a buffer whose last operation has completed.
    pub(crate) fn give_back(&mut self, buf: BufRef) {
        let index = buf.index;
        debug_assert!(
            !self.idle.contains(&index),
            "buffer {index} given back twice"
        );
        self.idle.push(index);
    }

    pub(crate) fn total(&self) -> usize {
        self.chunks.len()
    }

    pub(crate) fn idle(&self) -> usize {
        self.idle.len()
    }

    pub(crate) fn buffer_size(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        for c in &self.chunks {
            // SAFETY: each chunk was allocated with `self.layout`. The engine
            // drops the pool only after the ring (which unregisters it) and
            // leaks the pool instead if operations were still in flight.
            unsafe { dealloc(c.as_ptr(), self.layout) };
        }
    }
}

/// The locked-memory limit, for the message that says why registration failed.
pub(crate) fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    (unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0).then_some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_distinct_and_come_back() {
        let mut pool = BufferPool::new(3, 8192).expect("pool");
        let a = pool.take().expect("a");
        let b = pool.take().expect("b");
        assert_eq!(a.ptr.as_ptr() as usize % BUFFER_ALIGN, 0);
        assert_ne!(a.index, b.index);
        assert_eq!(pool.idle(), 1);
        pool.give_back(a);
        pool.give_back(b);
        assert_eq!(pool.idle(), 3);
    }

    #[test]
    fn a_buffer_gives_its_bytes_only_within_its_length() {
        let mut pool = BufferPool::new(1, 4096).expect("pool");
        let mut a = pool.take().expect("a");
        a.zero(0, 4096);
        assert_eq!(a.filled(4000, 96), &[0u8; 96][..]);
        let past = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = a.filled(4000, 97);
        }));
        assert!(past.is_err(), "a span past the buffer must panic");
        let past = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.zero(10, 4097)));
        assert!(past.is_err(), "zeroing past the buffer must panic");
        pool.give_back(a);
    }

    #[test]
    fn unaligned_size_is_refused() {
        assert!(matches!(
            BufferPool::new(1, 1000),
            Err(BufferError::Size(1000))
        ));
    }
}
