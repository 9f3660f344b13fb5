//! Files the CLI copies itself, because the engine would cost more than
//! the copy: at most [`SMALL_FILE`] bytes of data in a tree, or
//! [`SINGLE_FILE`] for a file copied alone, all of it in the page cache,
//! holes kept. A job costs two descriptors passed, two statx on
//! io_uring's workers, the copy handed to a worker (one hand-off a run of
//! data, for a file with holes), a completion and the closes: for 10,000
//! files of 4 KiB that was a third of a tree copy's CPU, a single 4 KiB
//! copy took 2.8 ms where cp takes 1.7, and a 1 GiB file holding 1 MiB of
//! data in 16 runs 3.9 ms against cp's 2.3 (issues 16 and 17). A cold file
//! stays the daemon's: its io_uring reads hundreds at once where this
//! reads one.
//!
//! The copy is copy_file_range (an in-kernel copy on ext4 and tmpfs, a
//! clone on btrfs and XFS, as cp's), or read and write where it refuses or
//! `--reflink=never` forbids cloning; a hole is never written, and the
//! destination is sized to the source at the end.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use ringxfer_ipc::publish::StagedFile;

/// The most data a file in a tree the CLI copies may hold (see the
/// module's text; a single file may hold [`SINGLE_FILE`]). Larger files are
/// the engine's: their progress is worth following, and
/// an opener busy with one holds back the chunks walked after its own (they
/// come back in order). A copy of 1 MiB takes a quarter of a millisecond
/// hot.
pub const SMALL_FILE: u64 = 1 << 20;

/// The most data a file copied on its own (not in a tree) into a local
/// file system may hold to be copied here. A job costs 0.4-0.7 ms more
/// than the copy itself (2 MiB hot: 2.16 ms as a job, 1.78 here, cp 1.74),
/// worth paying only where it is lost in the copy's time; no walk waits on
/// this one, and 32 MiB takes ~10 ms hot, too soon for progress to show.
/// Onto NFS or FUSE the same copy may take a server's time, during which a
/// job could be cancelled and this copy cannot: there [`SMALL_FILE`] holds.
pub const SINGLE_FILE: u64 = 32 << 20;

/// The most runs of data a file with holes may have to be copied here: a
/// file in many pieces costs a seek and a copy for each, and the engine
/// maps it a window at a time anyway.
const MAX_RUNS: usize = 64;

/// The buffer of a read and write copy (see [`copy`]).
const COPY_BUFFER: usize = 64 << 10;

/// A file's size and where its data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub len: u64,
    runs: Runs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Runs {
    /// No holes: the blocks cover the size. Nothing was mapped (a tree of
    /// small files pays no seek).
    Whole,
    /// (offset, length) of each run of data, in order; what lies between
    /// and after is holes.
    Mapped(Vec<(u64, u64)>),
}

impl Data {
    /// Bytes of data, holes not counted.
    pub fn bytes(&self) -> u64 {
        match &self.runs {
            Runs::Whole => self.len,
            Runs::Mapped(runs) => runs.iter().map(|&(_, n)| n).sum(),
        }
    }

    /// Runs of data, holes between them (1 for a file without holes).
    pub fn runs(&self) -> usize {
        match &self.runs {
            Runs::Whole => 1,
            Runs::Mapped(runs) => runs.len(),
        }
    }
}

/// The data of `file` (`len` bytes by its size, `allocated` by its blocks)
/// if it is cheap to copy here: at most `most` bytes of data ([`SMALL_FILE`]
/// or [`SINGLE_FILE`]) in at most [`MAX_RUNS`] runs, wholly in the page
/// cache unless `cold_too` (a clone reads no data). None for an empty file:
/// whether it is empty is the caller's question (a file of /proc says 0 and
/// has bytes).
pub fn cheap_data(
    file: &File,
    len: u64,
    allocated: u64,
    most: u64,
    cold_too: bool,
) -> Option<Data> {
    if len == 0 || !may_be_cheap(len, allocated, most) {
        return None;
    }
    let data = if allocated >= len {
        Data {
            len,
            runs: Runs::Whole,
        }
    } else {
        Data {
            len,
            runs: Runs::Mapped(map_data(file, len, most)?),
        }
    };
    (cold_too || all_cached(file, &data)).then_some(data)
}

/// Whether a file of `len` bytes, `allocated` by its blocks, may be cheap
/// to copy here (see [`cheap_data`]), before it is opened: a file without
/// holes up to `most` bytes, or one with holes whose blocks are not far
/// over it (blocks also hold metadata on some file systems: the map of its
/// data decides).
pub fn may_be_cheap(len: u64, allocated: u64, most: u64) -> bool {
    if allocated >= len {
        len <= most
    } else {
        allocated <= 2 * most
    }
}

/// Whether every byte of data is in the page cache: every page looked at
/// (a sample, which [`ringxfer::residency::cached_fraction`] takes past 16
/// MiB, could pass a file three quarters cold).
fn all_cached(file: &File, data: &Data) -> bool {
    let cached = |off, n| ringxfer::residency::cached_fraction_whole(file, off, n) == Some(1.0);
    match &data.runs {
        Runs::Whole => cached(0, data.len),
        Runs::Mapped(runs) => runs.iter().all(|&(off, n)| cached(off, n)),
    }
}

/// The runs of data below `len` (SEEK_DATA, SEEK_HOLE), if there are at
/// most [`MAX_RUNS`] of them holding at most `most` bytes.
fn map_data(file: &File, len: u64, most: u64) -> Option<Vec<(u64, u64)>> {
    let mut runs = Vec::new();
    let (mut at, mut total) = (0u64, 0u64);
    while at < len {
        let Some(start) = seek(file, at, libc::SEEK_DATA)? else {
            break;
        };
        if start >= len {
            break;
        }
        let end = seek(file, start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        total += end - start;
        runs.push((start, end - start));
        if runs.len() > MAX_RUNS || total > most {
            return None;
        }
        at = end;
    }
    Some(runs)
}

/// lseek with `whence`: Some(None) where no data is left (ENXIO), None
/// where the file system cannot say.
fn seek(file: &File, at: u64, whence: libc::c_int) -> Option<Option<u64>> {
    // SAFETY: lseek on a descriptor this File keeps open; it moves only
    // the descriptor's offset, which nothing here reads (every read and
    // write names its own offset).
    let got = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, whence) };
    if got >= 0 {
        return Some(Some(got as u64));
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ENXIO) => Some(None),
        _ => None,
    }
}

/// Whether `staged` is a new, empty regular file, which [`copy`] may fill:
/// a destination that is a device or a FIFO is written in place, which is
/// the engine's.
pub fn is_new_file(staged: &StagedFile) -> bool {
    !staged.is_in_place()
        && staged
            .file()
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// What [`copy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// The copy's size.
    pub bytes: u64,
    /// Some bytes were read and written, copy_file_range having refused
    /// them or `no_clone` forbidding it.
    pub read_write: bool,
}

/// Copies `data` of `src` into the new, empty `dst`. A file without holes
/// is copied to its end (one that grew is copied whole, as cp's); one with
/// holes run by run, then sized to the source's size at the end (a source
/// that grew meanwhile is copied on to its new end), so that the copy is
/// what a read to the end would have found, holes kept. Reads and writes
/// where copy_file_range refuses before a byte moved, or `no_clone`.
pub fn copy(src: &File, dst: &File, data: &Data, no_clone: bool) -> io::Result<Copied> {
    let mut read_write = false;
    let Runs::Mapped(runs) = &data.runs else {
        return copy_from(src, dst, 0, data.len, no_clone, &mut read_write)
            .map(|bytes| Copied { bytes, read_write });
    };
    for &(off, n) in runs {
        copy_run(src, dst, off, n, no_clone, &mut read_write)?;
    }
    let now = src.metadata()?.len();
    let bytes = if now > data.len {
        data.len
            + copy_from(
                src,
                dst,
                data.len,
                now - data.len,
                no_clone,
                &mut read_write,
            )?
    } else {
        dst.set_len(now)?;
        now
    };
    Ok(Copied { bytes, read_write })
}

/// From `at` to the source's end (`len` bytes by its size when looked
/// at); the bytes copied (see [`copy`]).
fn copy_from(
    src: &File,
    dst: &File,
    at: u64,
    len: u64,
    no_clone: bool,
    read_write: &mut bool,
) -> io::Result<u64> {
    let mut done = if no_clone {
        0
    } else {
        copy_range(src, dst, at, len, true)?
    };
    if done == len && done > 0 {
        return Ok(done);
    }
    let more = read_and_write(src, dst, at + done, None)?;
    *read_write |= more > 0;
    done += more;
    Ok(done)
}

/// One run of data, at most `n` bytes from `off` (fewer if the file
/// shrank).
fn copy_run(
    src: &File,
    dst: &File,
    off: u64,
    n: u64,
    no_clone: bool,
    read_write: &mut bool,
) -> io::Result<()> {
    let done = if no_clone {
        0
    } else {
        copy_range(src, dst, off, n, false)?
    };
    if done < n {
        *read_write |= read_and_write(src, dst, off + done, Some(n - done))? > 0;
    }
    Ok(())
}

/// Reads and writes from `at` to the source's end or `limit` bytes; the
/// bytes copied.
fn read_and_write(src: &File, dst: &File, at: u64, limit: Option<u64>) -> io::Result<u64> {
    let mut done = 0u64;
    BUFFER.with_borrow_mut(|buf| loop {
        let want = limit.map_or(buf.len(), |l| (l - done).min(buf.len() as u64) as usize);
        if want == 0 {
            return Ok(done);
        }
        let n = src.read_at(&mut buf[..want], at + done)?;
        if n == 0 {
            return Ok(done);
        }
        dst.write_all_at(&buf[..n], at + done)?;
        done += n as u64;
    })
}

thread_local! {
    /// A thread's buffer for read and write, made once.
    static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; COPY_BUFFER]);
}

/// copy_file_range of `n` bytes at `off` to the same offset, or until it
/// refuses before a byte moved; the bytes copied. With `to_end`, a call
/// asks one byte more than is left of `n`: getting no more than `n` is the
/// file's end, without a call to find 0 there (a call a file; a copy that
/// meets a file growing is of some moment of it, as any copy is), and the
/// copy goes on to the end of a file that grew.
fn copy_range(src: &File, dst: &File, off: u64, n: u64, to_end: bool) -> io::Result<u64> {
    let mut done: u64 = 0;
    loop {
        let left = n.saturating_sub(done);
        if !to_end && left == 0 {
            return Ok(done);
        }
        let (mut at_src, mut at_dst) = ((off + done) as i64, (off + done) as i64);
        // Past the size looked at, a file that grew is asked a small
        // file's worth a call, not a byte.
        let ask = match left {
            0 => SMALL_FILE,
            left => (left + u64::from(to_end)).min(SINGLE_FILE + 1),
        } as usize;
        // SAFETY: both descriptors are open for the call (borrowed from
        // their Files); the offsets are this frame's, which the kernel
        // reads and advances and nothing else touches meanwhile.
        let got = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut at_src,
                dst.as_raw_fd(),
                &mut at_dst,
                ask,
                0,
            )
        };
        match got {
            0 => return Ok(done),
            got if got > 0 => {
                done += got as u64;
                if to_end && done == n && (got as usize) < ask {
                    return Ok(done);
                }
            }
            _ if done == 0 => return Ok(0),
            _ => return Err(io::Error::last_os_error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn data_of(file: &File) -> Option<Data> {
        let meta = file.metadata().unwrap();
        cheap_data(file, meta.len(), meta.blocks() * 512, SMALL_FILE, false)
    }

    /// Copies `src` as mapped in `data` to `dst` and checks it reads as
    /// the source does now.
    fn copy_matches(src: &File, data: &Data, src_path: &std::path::Path, dst: &std::path::Path) {
        let out = File::create(dst).unwrap();
        let copied = copy(src, &out, data, false).unwrap();
        let want = std::fs::read(src_path).unwrap();
        assert_eq!(copied.bytes, want.len() as u64, "{}", dst.display());
        assert!(std::fs::read(dst).unwrap() == want, "{}", dst.display());
    }

    #[test]
    fn a_file_that_grew_is_copied_on_past_its_size_a_call_at_a_time() {
        let dir = std::env::temp_dir().join(format!("cheap-grow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src_path = dir.join("src");
        std::fs::write(&src_path, vec![1u8; 8192]).unwrap();
        let src = File::options()
            .read(true)
            .write(true)
            .open(&src_path)
            .unwrap();
        let data = data_of(&src).expect("dense and cached");
        src.write_all_at(&vec![2u8; 3 << 20], 8192).unwrap();
        copy_matches(&src, &data, &src_path, &dir.join("dst"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_with_holes_is_mapped_and_copied_without_them() {
        let dir = std::env::temp_dir().join(format!("cheap-copy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (src_path, dst_path) = (dir.join("src"), dir.join("dst"));
        let src = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&src_path)
            .unwrap();
        src.set_len(8 << 20).unwrap();
        src.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
        src.write_all_at(&[9u8; 4096], 5 << 20).unwrap();
        let data = data_of(&src).expect("two runs of data, cached");
        assert_eq!((data.runs(), data.bytes()), (2, 12288));
        let dst = File::create(&dst_path).unwrap();
        let copied = copy(&src, &dst, &data, false).unwrap();
        assert_eq!(
            copied,
            Copied {
                bytes: 8 << 20,
                read_write: false
            }
        );
        let got = std::fs::read(&dst_path).unwrap();
        assert_eq!(got, std::fs::read(&src_path).unwrap());
        let meta = dst.metadata().unwrap();
        assert!(meta.blocks() * 512 < 1 << 20, "holes kept: {meta:?}");
        // A source that grows or shrinks after it was mapped is copied as a
        // read to its end would find it.
        src.write_all_at(&[5u8; 4096], 9 << 20).unwrap();
        copy_matches(&src, &data, &src_path, &dir.join("grown"));
        src.set_len(5 << 20).unwrap();
        copy_matches(&src, &data, &src_path, &dir.join("shrunk"));
        // More data than a small file holds is the engine's.
        src.write_all_at(&vec![1u8; 2 << 20], 2 << 20).unwrap();
        assert_eq!(data_of(&src), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
