//! How much of a file is in the page cache, by cachestat(2): the daemon's
//! choice of strategy (transfer/choose.rs) and the CLI's choice of copying
//! a small file itself or handing it to the daemon, whose io_uring reads
//! many cold files at once (src/bin/ringxfer/cheap_copy.rs).

use std::os::fd::AsRawFd;

/// cachestat(2)'s number: 451 on every architecture (it was added after the
/// syscall tables were unified); libc 0.2 does not name it for x86_64.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// The fraction (0.0 to 1.0) of `len` bytes from `off` that is in the page
/// cache, by the cachestat syscall (6.5+): exact up to [`WHOLE_UP_TO`],
/// sampled beyond (see [`sample_windows`]); [`cached_fraction_whole`]
/// looks at every page. `None` when it cannot tell (an
/// older kernel, hugetlbfs, no permission).
///
/// The daemon calls it on the loop thread at admission, and only where
/// `transfer::dio::may_ask_residency` says: cachestat then walks the file's page-cache
/// index under RCU and never calls into the file system (no getattr, no
/// revalidation, no read). The mincore fallback this had before mapped the
/// file, and mmap on NFS revalidates the mapping with the server
/// (`nfs_file_mmap`); without cachestat the residency is unknown.
pub fn cached_fraction(fd: &impl AsRawFd, off: u64, len: u64) -> Option<f64> {
    fraction_of(fd, sample_windows(off, len))
}

/// As [`cached_fraction`], every page looked at: for a source with holes,
/// whose few cached pages a sample would miss or magnify (its data may lie
/// between the windows). cachestat's walk costs each cached page (or
/// shadow of one), so this costs what the file's cached data does.
pub fn cached_fraction_whole(fd: &impl AsRawFd, off: u64, len: u64) -> Option<f64> {
    fraction_of(fd, std::iter::once((off, len)))
}

/// The fraction of the pages of `ranges` in the page cache.
fn fraction_of(fd: &impl AsRawFd, ranges: impl Iterator<Item = (u64, u64)>) -> Option<f64> {
    let (mut cached, mut pages) = (0u64, 0u64);
    for (at, n) in ranges {
        if n == 0 {
            continue;
        }
        cached += cached_pages(fd, at, n)?;
        pages += n.div_ceil(PAGE);
    }
    if pages == 0 {
        return Some(0.0);
    }
    Some((cached as f64 / pages as f64).min(1.0))
}

/// Ranges up to this long are looked at whole; longer ones are sampled
/// (see [`sample_windows`]). cachestat walks every page of its range: over
/// a hot GiB it took 7-14 ms, on the daemon's loop thread at admission,
/// which stalled every other client that long and was 3-5% of the copy it
/// was choosing a strategy for (issue 16).
pub const WHOLE_UP_TO: u64 = 16 << 20;

/// The page size cachestat counts in (x86_64's; the fraction is an
/// estimate anyway).
const PAGE: u64 = 4096;

/// Windows a sampled range is looked at through, and the length of each:
/// 8 MiB in all, about 75 µs.
const WINDOWS: u64 = 64;
const WINDOW: u64 = 128 << 10;

/// The (offset, length) ranges `cached_fraction` asks cachestat about for
/// `len` bytes from `off`: the whole range up to [`WHOLE_UP_TO`], else
/// [`WINDOWS`] windows of [`WINDOW`] bytes spread evenly from its first
/// byte to its last, so that a file cached at one end and not the other,
/// or in stripes, is seen in proportion.
fn sample_windows(off: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    let sampled = len > WHOLE_UP_TO;
    let (count, stride) = if sampled {
        // Page-aligned, so that a window holds 32 whole pages (not parts
        // of 33).
        (WINDOWS, (len - WINDOW) / (WINDOWS - 1) / PAGE * PAGE)
    } else {
        (1, 0)
    };
    (0..count).map(move |i| {
        if sampled {
            (off + i * stride, WINDOW)
        } else {
            (off, len)
        }
    })
}

/// Pages of `len` bytes from `off` in the page cache (see
/// [`cached_fraction`]).
fn cached_pages(fd: &impl AsRawFd, off: u64, len: u64) -> Option<u64> {
    let range = CachestatRange { off, len };
    let mut cs = Cachestat::default();
    // SAFETY: cachestat reads `range` and writes `cs`, both valid for their
    // sizes; it looks at the page cache and does not block.
    let ret = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const CachestatRange,
            &mut cs as *mut Cachestat,
            0u32,
        )
    };
    (ret == 0).then_some(cs.nr_cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn long_ranges_are_sampled_evenly_from_end_to_end_and_short_ones_whole() {
        assert_eq!(sample_windows(5, 4096).collect::<Vec<_>>(), [(5, 4096)]);
        let whole = sample_windows(0, WHOLE_UP_TO).collect::<Vec<_>>();
        assert_eq!(whole, [(0, WHOLE_UP_TO)]);
        for (off, len) in [(0, WHOLE_UP_TO + 1), (4096, 1 << 30), (7, 10 << 40)] {
            let w = sample_windows(off, len).collect::<Vec<_>>();
            assert_eq!(w.len() as u64, WINDOWS, "{len}");
            assert_eq!(w[0].0, off);
            let (last, n) = w[w.len() - 1];
            assert!(last + n <= off + len, "{len}");
            assert!(off + len - (last + n) < WINDOWS * PAGE, "{len}");
            assert!(w.iter().all(|&(at, _)| (at - off) % PAGE == 0), "{len}");
            assert!(w.iter().all(|&(_, n)| n == WINDOW));
            assert!(w.windows(2).all(|p| p[0].0 + WINDOW <= p[1].0), "{len}");
        }
    }

    #[test]
    fn a_sampled_file_cached_in_its_first_half_reads_as_half_cached() {
        let dir =
            tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).expect("tempdir");
        let file = std::fs::File::create_new(dir.path().join("f")).expect("create");
        let len: u64 = 64 << 20;
        let block = vec![3u8; 1 << 20];
        for at in (0..len).step_by(block.len()) {
            file.write_all_at(&block, at).expect("write");
        }
        file.sync_all().expect("sync");
        let whole = cached_fraction(&file, 0, len).expect("cachestat");
        assert!(whole > 0.99, "just written: {whole}");
        // SAFETY: an open descriptor; fadvise only drops clean cached pages.
        let ret = unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                (len / 2) as i64,
                (len / 2) as i64,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(ret, 0);
        let half = cached_fraction(&file, 0, len).expect("cachestat");
        assert!((0.45..=0.55).contains(&half), "first half cached: {half}");
        let second = cached_fraction(&file, len / 2, len / 2).expect("cachestat");
        assert!(second < 0.01, "second half dropped: {second}");
    }
}
