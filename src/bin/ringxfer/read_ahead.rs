//! Reading a cold tree ahead of the walk: a few threads list its
//! directories and stat its files, so that the disk reads the walk and the
//! openers would wait for one at a time are made several at once, and find
//! the page cache warm when they come.
//!
//! The walk is one thread, and on a cold cache it waits for every
//! directory's blocks and every subdirectory's inode in turn: 100,000 empty
//! files in a deep tree took 1.6-2.5 s where cpz, a thread per directory,
//! took 1.5-1.9 s; with four `find`s reading ahead beside it, 1.3 s (issue
//! 17). A hot tree would only pay for a second listing, so the walk starts
//! the readers when it sees its own thread read from a disk ([`ColdSigns`]).
//!
//! The readers go depth first in the walk's order, and stay at most
//! [`LEAD`] directories ahead of it, so a tree larger than memory does not
//! have its start evicted by its end before the walk gets there.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Reader threads: each waits on the disk most of the time.
const READERS: usize = 4;

/// Directories the readers may have read beyond those the walk entered.
const LEAD: u64 = 2048;

/// How long a reader that is far enough ahead waits before looking again.
const HOLD: Duration = Duration::from_millis(1);

/// Directories to read, the next one last (a stack: depth first), and how
/// many readers are reading one (whose subdirectories are still to come).
#[derive(Default)]
struct Todo {
    dirs: Vec<PathBuf>,
    busy: usize,
}

#[derive(Default)]
struct Shared {
    todo: Mutex<Todo>,
    more: Condvar,
    stop: AtomicBool,
    /// Directories the readers read, and the walk entered.
    read: AtomicU64,
    entered: AtomicU64,
}

impl Shared {
    fn todo(&self) -> MutexGuard<'_, Todo> {
        // A reader that panicked left a plain list: still usable.
        self.todo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Readers at work on one tree; dropping it stops them and waits for them.
pub struct ReadAhead {
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts reading the tree under `root` ahead of a walk that has
    /// entered `entered` directories of it.
    pub fn start(root: PathBuf, entered: u64) -> io::Result<ReadAhead> {
        let shared = Arc::new(Shared::default());
        shared.todo().dirs.push(root);
        shared.entered.store(entered, Ordering::Relaxed);
        let mut ahead = ReadAhead {
            shared,
            readers: Vec::with_capacity(READERS),
        };
        for i in 0..READERS {
            let shared = Arc::clone(&ahead.shared);
            ahead.readers.push(
                std::thread::Builder::new()
                    .name(format!("read-ahead-{i}"))
                    .spawn(move || read(&shared))?,
            );
        }
        Ok(ahead)
    }

    /// The walk entered one more directory.
    pub fn entered(&self) {
        self.shared.entered.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Under the lock: a reader between its check and its wait would
        // miss a notification sent outside it.
        drop(self.shared.todo());
        self.shared.more.notify_all();
        for reader in self.readers.drain(..) {
            // A reader's panic only cost some read-ahead.
            let _ = reader.join();
        }
    }
}

/// A reader: takes directories until none is left and none is being read
/// (whose subdirectories would come), or it is stopped.
fn read(shared: &Shared) {
    while let Some(dir) = next_dir(shared) {
        while shared.read.load(Ordering::Relaxed) > shared.entered.load(Ordering::Relaxed) + LEAD
            && !shared.stopped()
        {
            std::thread::sleep(HOLD);
        }
        let subdirs = read_dir(&dir, shared);
        shared.read.fetch_add(1, Ordering::Relaxed);
        let mut todo = shared.todo();
        todo.busy -= 1;
        // Reversed: the first one is read next, as the walk goes.
        todo.dirs.extend(subdirs.into_iter().rev());
        drop(todo);
        shared.more.notify_all();
    }
}

fn next_dir(shared: &Shared) -> Option<PathBuf> {
    let mut todo = shared.todo();
    loop {
        if shared.stopped() {
            return None;
        }
        if let Some(dir) = todo.dirs.pop() {
            todo.busy += 1;
            return Some(dir);
        }
        if todo.busy == 0 {
            return None;
        }
        todo = shared
            .more
            .wait(todo)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// Lists `dir` and stats its files (relative to it: std's DirEntry), which
/// brings in the blocks the walk and the openers will read; returns its
/// subdirectories. Errors are the walk's to meet and report.
fn read_dir(dir: &Path, shared: &Shared) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut subdirs = Vec::new();
    for entry in entries.map_while(Result::ok) {
        if shared.stopped() {
            break;
        }
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => subdirs.push(entry.path()),
            Ok(kind) if kind.is_file() => drop(entry.metadata()),
            _ => {}
        }
    }
    subdirs
}

/// Whether a thread has read from a disk since it last asked: the blocks
/// its reads brought in (getrusage's ru_inblock for the thread, which
/// counts what the file systems read on its behalf, page cache misses
/// only).
#[derive(Debug, Default)]
pub struct ColdSigns {
    blocks: Option<i64>,
}

impl ColdSigns {
    /// Blocks read by this thread since the last call (0 on the first, and
    /// where the kernel cannot say).
    pub fn blocks_read(&mut self) -> i64 {
        // SAFETY: rusage is plain old data; all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes one rusage into `usage`, which we own.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
            return 0;
        }
        let now = usage.ru_inblock;
        let before = self.blocks.replace(now).unwrap_or(now);
        now - before
    }
}

/// Two directories whose entry read from a disk, at most this many entries
/// apart, say the tree is cold. One could be a stray, and strays come far
/// apart in a hot tree: a freshly written checkout of 4,000 directories on
/// ext4 read one block at its 846th entry and one at its 886th, and the
/// readers then started cost its copy 7% of the CPU. In a cold tree nearly
/// every entry reads.
const COLD_SPAN: u64 = 8;

/// The walk's verdict on its tree, one directory entered at a time.
#[derive(Debug, Default)]
pub struct ColdEntries {
    entered: u64,
    last_cold: Option<u64>,
}

impl ColdEntries {
    /// Counts a directory entered, `cold` if entering it read from a disk;
    /// true when the tree now looks cold.
    pub fn entered(&mut self, cold: bool) -> bool {
        self.entered += 1;
        if !cold {
            return false;
        }
        let previous = self.last_cold.replace(self.entered);
        previous.is_some_and(|at| self.entered - at <= COLD_SPAN)
    }

    /// Directories counted so far.
    pub fn count(&self) -> u64 {
        self.entered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_cold_entries_close_together_make_a_tree_cold_and_strays_do_not() {
        let mut cold = ColdEntries::default();
        assert!(!cold.entered(true), "one cold entry could be a stray");
        for _ in 0..COLD_SPAN {
            assert!(!cold.entered(false));
        }
        assert!(!cold.entered(true), "strays far apart are strays");
        assert!(cold.entered(true), "two in a row say cold");
        assert_eq!(cold.count(), COLD_SPAN + 3);

        let mut fresh = ColdEntries::default();
        assert!(!fresh.entered(true));
        for _ in 0..COLD_SPAN - 1 {
            assert!(!fresh.entered(false));
        }
        assert!(fresh.entered(true), "within the span");
    }

    #[test]
    fn readers_read_every_directory_then_end() {
        let dir = tempfile::tempdir().unwrap();
        for a in 0..5 {
            for b in 0..4 {
                let sub = dir.path().join(format!("a{a}/b{b}"));
                fs::create_dir_all(&sub).unwrap();
                fs::write(sub.join("f"), b"x").unwrap();
            }
        }
        let ahead = ReadAhead::start(dir.path().to_path_buf(), 0).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ahead.readers.iter().all(JoinHandle::is_finished) {
            assert!(
                std::time::Instant::now() < deadline,
                "the readers never ended"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // The top, five below it and four below each of those.
        assert_eq!(ahead.shared.read.load(Ordering::Relaxed), 1 + 5 + 5 * 4);
    }

    #[test]
    fn readers_stay_within_their_lead_of_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..(LEAD + 200) {
            fs::create_dir(dir.path().join(format!("d{i}"))).unwrap();
        }
        let ahead = ReadAhead::start(dir.path().to_path_buf(), 0).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let read = ahead.shared.read.load(Ordering::Relaxed);
        assert!(read <= LEAD + READERS as u64 + 1, "{read} read");
        for _ in 0..300 {
            ahead.entered();
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ahead.shared.read.load(Ordering::Relaxed), LEAD + 201);
        drop(ahead);
    }

    /// A file whose pages were dropped is read from the disk (this test's
    /// directory is under the checkout, on a disk, never on tmpfs); read
    /// again, it comes from the page cache.
    #[test]
    fn a_thread_shows_the_blocks_it_read_from_a_disk_and_none_from_the_cache() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let file = fs::File::open(&path).unwrap();
        file.sync_all().unwrap();
        let fd = file.as_raw_fd();
        // SAFETY: the descriptor is open; fadvise only drops clean pages.
        let dropped = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(dropped, 0);
        let mut signs = ColdSigns::default();
        assert_eq!(signs.blocks_read(), 0);
        drop(fs::read(&path).unwrap());
        assert!(signs.blocks_read() > 0, "read from the disk");
        for _ in 0..10 {
            drop(fs::read(&path).unwrap());
        }
        assert_eq!(signs.blocks_read(), 0, "read from the page cache");
    }
}
