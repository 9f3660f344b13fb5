//! The walk on threads of its own: one walks (reads directories, makes
//! the new ones), and a few openers open each source file, read its
//! metadata and, inside a staged directory, create its destination, so
//! that the thread driving the copies (talking to the daemon, publishing)
//! does not pay for any of it.
//!
//! On two cores a copy of many small files is bound by whichever thread
//! does the most: with creates on the driving thread, a tree of 100,000
//! empty files in directories of 10 kept it busy 0.9 s of 1.7 s while a
//! core sat idle a third of the time; with them on the walk's one thread,
//! that thread was the bound instead (issue 17). Openers work on different
//! chunks at once; the pipeline gets the chunks back in the walk's order.
//!
//! Inside a staged directory (a new tree: nothing in it to keep, skip or
//! back up) the destination is created here; elsewhere the pipeline does
//! it, after deciding whether to replace what is there.
//!
//! At most a given number of chunks (see [`chunks_out`]) are out at once
//! (walked and not yet taken by the pipeline), so the descriptors held
//! ahead are bounded ([`fds_ahead`]) even if one opener waits long on one
//! file. Items reach
//! the pipeline in the walk's order: a directory is always made before a
//! file in it is handed out.
//!
//! Waiting for the walk ends every [`crate::signals::POLL`] to look for a
//! signal: an interrupted copy stops taking what the walk finds.

use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::cheap_copy;
use ringxfer_ipc::publish::{PublishError, PublishOptions, StagedFile};

use crate::dir_fds::{self, DirPair};
use crate::staged_dirs::Within;
use crate::walk::{Item, Walk};

/// Items per hand-over: one channel operation (and wake-up) per chunk, not
/// per file.
const CHUNK: usize = 32;

/// Threads opening sources and creating destinations at most: two a core
/// (at least four), because on a cold cache each waits for the inodes and
/// data it reads (5,000 cold files of 4 KiB, against the faster of xcp and
/// cpz: 0.75 with two openers, 0.95 with four).
fn max_openers() -> usize {
    // Asked once: std reads the cgroup's CPU quota files on every call.
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    (2 * cores).clamp(4, 16)
}

/// Openers at work from the start where the destination is on `fs` (see
/// `dir_fds::fs_type`); the others join once the tree shows itself cold
/// (see [`Wake`]). On btrfs, creates in one subvolume wait on its tree's
/// locks, and one opener beat two on every hot tree (medians of 7-9
/// interleaved runs, cpz in brackets): 5,000 files of 4 KiB in one
/// directory 120 against 143 ms (126), a checkout of 20,000 files in 1,300
/// directories 497 against 541 ms (501), 500 files of 1 MiB 13.7 against
/// 15.2 ms (13.4); with four, the checkout had copied at 0.71 of cpz's
/// speed. On ext4, where creates contend only within a directory, 100,000
/// empty files in a deep tree took 0.81 s with four and 0.93 s with two
/// (issue 17).
pub fn openers_at_start(fs: Option<i64>) -> usize {
    if fs == Some(dir_fds::BTRFS) {
        1
    } else {
        max_openers()
    }
}

/// Lets the openers kept back for a cold tree go: to work, once the walk
/// reads ahead (its reads of the source hit the disk) or an opener leaves a
/// small file to the daemon (it was not wholly in the page cache); to end,
/// without a chunk, once the openers at work from the start have all ended
/// (every chunk is opened) or the copy stops, and the tree never showed
/// itself cold. On btrfs, openers woken at the walk's end took the chunks
/// still to open (up to [`MAX_CHUNKS_OUT`] of them), and a hot tree of
/// 5,000 files in one directory copied in 130 ms where one opener alone
/// takes 105 (cpz 101), the others contending on the subvolume's locks.
/// Waiting for the openers rather than the walk keeps a cold sign that
/// comes late, from the last chunks, able to call them in.
struct Wake {
    kept: Mutex<Option<Sender<()>>>,
    cold: AtomicBool,
    /// Openers at work from the start that have not ended.
    at_work: AtomicUsize,
    /// Openers that took a chunk, kept back or not.
    worked: AtomicUsize,
}

impl Wake {
    fn new(kept: Sender<()>) -> Wake {
        Wake {
            kept: Mutex::new(Some(kept)),
            cold: AtomicBool::new(false),
            at_work: AtomicUsize::new(0),
            worked: AtomicUsize::new(0),
        }
    }

    /// The tree is cold: those kept back work (once: dropping the sender
    /// they wait on wakes them all).
    fn cold(&self) {
        self.cold.store(true, Ordering::Release);
        self.release();
    }

    /// The copy is over or stopped: those kept back end, unless it was
    /// cold.
    fn release(&self) {
        drop(
            self.kept
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }

    /// Whether one kept back, now woken, is to work.
    fn to_work(&self) -> bool {
        self.cold.load(Ordering::Acquire)
    }
}

/// An opener at work from the start, counted from before its thread is
/// made until it ends, panics included, or its thread could not be made:
/// the last of them to go releases those kept back (see [`Wake`]), which
/// hold senders of what the openers found, so the pipeline sees the end
/// only once they are gone too.
struct AtWork(Arc<Wake>);

impl AtWork {
    fn new(wake: Arc<Wake>) -> AtWork {
        wake.at_work.fetch_add(1, Ordering::AcqRel);
        AtWork(wake)
    }
}

impl Drop for AtWork {
    fn drop(&mut self) {
        if self.0.at_work.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.release();
        }
    }
}

/// Whether a chunk the openers handled shows a cold tree: a small file
/// inside a staged directory left to the daemon (not wholly in the page
/// cache, or with holes).
fn shows_cold(chunk: &[Found]) -> bool {
    chunk.iter().any(|found| match found {
        Found::File(f) => {
            let small = f
                .opened
                .as_ref()
                .is_ok_and(|(_, meta)| meta.len() <= cheap_copy::SMALL_FILE);
            small && !f.empty && f.copied.is_none() && matches!(f.staged, Some(Ok(_)))
        }
        _ => false,
    })
}

/// Chunks walked and not yet taken by the pipeline, at most, where the
/// open-file limit allows (see [`chunks_out`]). Chunks come back in the
/// walk's order, so one slow chunk (a few files of 64 KiB to copy) holds
/// back those after it until their credits run out, and the openers wait:
/// a tree shaped like a source checkout copied in 0.78-0.85 s with 16 or
/// 32 out where it took 0.91-1.00 s with 8 (issue 17).
pub const MAX_CHUNKS_OUT: usize = 32;

/// Chunks out at the least, where the open-file limit leaves little after
/// the pipeline's window: openers beyond it wait.
const MIN_CHUNKS_OUT: usize = 1;

/// Descriptors open ahead at most with `chunks` out: for each item of
/// those and of the one the pipeline is taking from, a source, a
/// destination and the two directories it may be the last to hold (see
/// [`DirPair`]), and the directories of the levels the walk holds.
pub const fn fds_ahead(chunks: usize) -> u64 {
    (4 * (chunks + 1) * CHUNK + 2 * crate::walk::MAX_HELD_DEPTH) as u64
}

/// The most chunks out whose descriptors fit in `fds`, within
/// [`MIN_CHUNKS_OUT`] and [`MAX_CHUNKS_OUT`].
pub fn chunks_out(fds: u64) -> usize {
    (MIN_CHUNKS_OUT..=MAX_CHUNKS_OUT)
        .rev()
        .find(|&n| fds_ahead(n) <= fds)
        .unwrap_or(MIN_CHUNKS_OUT)
}

/// A regular file the walk found, opened for reading with its metadata
/// (or why it could not be).
#[derive(Debug)]
pub struct SourceFile {
    pub src: PathBuf,
    pub dst: PathBuf,
    /// The staged directory `dst` is inside (see [`Item::File`]).
    pub within: Within,
    pub opened: io::Result<(File, Metadata)>,
    /// The destination, created where the walk stages (see
    /// [`open_source`]).
    pub staged: Option<Result<StagedFile, PublishError>>,
    /// The source is empty: its size says 0 and a read at 0 finds its end
    /// (a file of /proc says 0 and has bytes).
    pub empty: bool,
    /// A small file copied here, into `staged` (see [`SmallFiles`]): the
    /// bytes copied, or why the copy failed (then `staged` is removed).
    /// None: the daemon is to copy it.
    pub copied: Option<io::Result<u64>>,
}

/// What the openers do beyond opening sources, in staged directories.
#[derive(Debug, Clone)]
pub struct Staging {
    /// How destinations are created there.
    pub publish: PublishOptions,
    /// Small files the openers copy themselves, if any.
    pub small: Option<SmallFiles>,
}

/// Small files inside a staged directory are copied by the opener that
/// creates their destination (see [`crate::cheap_copy`]), when the command
/// asks nothing of the engine that such a file could use (see
/// `Pipeline::staging`).
#[derive(Debug, Clone, Copy)]
pub struct SmallFiles {
    /// --reflink=never: read and write, never copy_file_range.
    pub no_clone: bool,
    /// Nothing is left to do once such a file (or an empty one) is copied
    /// into a staged directory (no attributes to set, no sync): the opener
    /// closes it and hands the pipeline a [`Landed`].
    pub finish_here: bool,
}

/// A file an opener copied whole into a staged directory and closed (see
/// [`SmallFiles::finish_here`]): the pipeline only counts and reports it.
#[derive(Debug)]
pub struct Landed {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub within: Within,
    pub bytes: u64,
}

/// What the walk hands the pipeline.
#[derive(Debug)]
pub enum Found {
    /// Boxed: most of what the walk finds is files, and a chunk of them
    /// moves through two channels.
    File(Box<SourceFile>),
    Landed(Box<Landed>),
    /// Anything else the walk found.
    Other(Item),
}

/// Opens a source for reading without updating its access time where the
/// kernel allows that (the file's owner, or CAP_FOWNER), as `rsync
/// --open-noatime` and `tar --atime-preserve=system` do: a copy then writes
/// nothing to the source's file system. Reading a tree of freshly written
/// files otherwise dirties each source inode (relatime): 5% of the CPU of
/// a copy of 100,000 empty files went to that (issue 17). Relative to the
/// directory the walk holds open, if it does.
fn open_noatime(src: &Path, at: Option<&DirPair>) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let (Some(at), Some(name)) = (at, src.file_name()) {
        return dir_fds::open_noatime_at(at.src.as_fd(), name);
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    match options.clone().custom_flags(libc::O_NOATIME).open(src) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => options.open(src),
        other => other,
    }
}

/// Opens `item`'s source if it is a regular file. With `stage`, it also
/// creates the destination of a file inside a staged directory (new, so
/// there is nothing to keep, skip or back up), unless --preserve must first
/// see whether the file is another name of one already copied, and copies
/// it if it is small (see [`SmallFiles`]); where nothing is left to do
/// after that, the file is finished here (see [`Landed`]).
pub fn open_source(item: Item, stage: Option<&Staging>) -> Found {
    match item {
        Item::File {
            src,
            dst,
            within,
            at,
        } => {
            let whole = stage.and_then(|st| st.small).filter(|s| s.finish_here);
            if let (Some(small), Some(at)) = (whole, at.as_deref()) {
                if let Some(bytes) = finish_here(&src, at, small) {
                    return Found::Landed(Box::new(Landed {
                        src,
                        dst,
                        within,
                        bytes,
                    }));
                }
            }
            let opened = open_noatime(&src, at.as_deref()).and_then(|file| {
                let meta = file.metadata()?;
                Ok((file, meta))
            });
            let (mut staged, mut empty, mut copied) = (None, false, None);
            if let Ok((file, meta)) = &opened {
                let honest = has_a_device(meta) || at.as_ref().is_some_and(|at| at.honest_sizes);
                empty = meta.len() == 0 && (honest || nothing_at_0(file));
                staged = stage
                    .filter(|st| within.is_some() && (!st.publish.preserve || meta.nlink() == 1))
                    .map(|st| {
                        let publish = PublishOptions {
                            mode: Some(meta.mode() & 0o777),
                            ..st.publish.clone()
                        };
                        StagedFile::create_new(&dst, &publish)
                    });
                let small = stage.and_then(|st| st.small).filter(|_| !empty);
                let data = small.and_then(|_| {
                    let most = cheap_copy::SMALL_FILE;
                    cheap_copy::cheap_data(file, meta.len(), meta.blocks() * 512, most, false)
                });
                if let (Some(small), Some(data), Some(Ok(staged))) = (small, data, &staged) {
                    let copy = cheap_copy::copy(file, staged.file(), &data, small.no_clone);
                    copied = Some(copy.map(|c| c.bytes));
                }
            }
            Found::File(Box::new(SourceFile {
                src,
                dst,
                within,
                opened,
                staged,
                empty,
                copied,
            }))
        }
        other => Found::Other(other),
    }
}

/// Copies a file inside a staged directory whole, relative to the
/// directories the walk holds, and closes it: an empty one is made with
/// mknod (nothing opened), a small one in the page cache copied as
/// [`cheap_copy::copy`] does. The bytes copied; None where the file is neither,
/// or anything failed (what was made is removed): the pipeline then takes
/// the usual way, which says what went wrong in the user's terms.
fn finish_here(src: &Path, at: &DirPair, small: SmallFiles) -> Option<u64> {
    let (name, out) = (src.file_name()?, at.dst.as_ref()?.as_fd());
    let st = dir_fds::stat_at(at.src.as_fd(), name).ok()?;
    if !st.is_file() {
        return None;
    }
    if st.size == 0 {
        // Only a file system on a device, or one known to tell the truth
        // without one, is believed (see has_a_device);
        // one we may not read must fail as cp's does, though it holds no
        // byte.
        return ((st.on_a_device || at.honest_sizes) && st.readable())
            .then(|| dir_fds::make_empty_at(out, name, st.mode).ok())
            .flatten()
            .map(|()| 0);
    }
    if !cheap_copy::may_be_cheap(st.size, st.allocated, cheap_copy::SMALL_FILE) {
        return None;
    }
    let file = dir_fds::open_noatime_at(at.src.as_fd(), name).ok()?;
    // A clone reads no data: cold or not, it costs the same.
    let clones = at.clones && !small.no_clone;
    let most = cheap_copy::SMALL_FILE;
    let data = cheap_copy::cheap_data(&file, st.size, st.allocated, most, clones)?;
    let copy = dir_fds::create_new_at(out, name, st.mode).ok()?;
    match cheap_copy::copy(&file, &copy, &data, small.no_clone) {
        Ok(copied) => Some(copied.bytes),
        Err(_) => {
            drop(copy);
            let _ = dir_fds::unlink_at(out, name);
            None
        }
    }
}

/// Whether the file's system sits on a block device (ext4, XFS on a disk):
/// there a size of 0 means no bytes. Those with none (procfs, sysfs, but
/// also tmpfs, btrfs, NFS) are asked by a read.
fn has_a_device(meta: &Metadata) -> bool {
    libc::major(meta.dev()) != 0
}

/// A read at 0 finds the end: a file of /proc says 0 and has bytes.
fn nothing_at_0(file: &File) -> bool {
    matches!(file.read_at(&mut [0u8; 1], 0), Ok(0))
}

/// A [`Walk`] running on its own thread, with openers; iterate it for what
/// it finds.
pub struct WalkAhead {
    chunks: Receiver<(u64, Vec<Found>)>,
    /// Chunks that came back before one walked earlier, by their number.
    early: BTreeMap<u64, Vec<Found>>,
    next_chunk: u64,
    /// One token per chunk out: taking a chunk gives one back.
    credits: Receiver<()>,
    current: std::vec::IntoIter<Found>,
    stop: Arc<AtomicBool>,
    /// The walk's thread: the walk, and the openers it started.
    walker: JoinHandle<(Walk, Vec<JoinHandle<()>>)>,
    openers: Vec<JoinHandle<()>>,
    /// Lets the openers kept back go (see [`Wake`]); at the end, to exit.
    wake: Arc<Wake>,
}

/// Walks, numbering the chunks, while a credit for each is to be had.
fn walk_in_chunks(
    mut walk: Walk,
    items: Sender<(u64, Vec<Item>)>,
    credits: Sender<()>,
    stopped: Arc<AtomicBool>,
    wake: Arc<Wake>,
    more_openers: Box<dyn FnOnce() -> Vec<JoinHandle<()>> + Send>,
) -> (Walk, Vec<JoinHandle<()>>) {
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut number = 0;
    let (mut more_openers, mut started) = (Some(more_openers), Vec::new());
    let hand_over = |chunk: Vec<Item>, number: &mut u64| {
        // Both fail only once the pipeline has finished with the walk.
        let sent = credits.send(()).is_ok() && items.send((*number, chunk)).is_ok();
        *number += 1;
        sent
    };
    while !stopped.load(Ordering::Relaxed) {
        let Some(item) = walk.next() else {
            break;
        };
        chunk.push(item);
        if chunk.len() == CHUNK {
            if walk.read_aheads > 0 {
                wake.cold();
            }
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if !hand_over(full, &mut number) {
                break;
            }
            if number == 1 {
                started = more_openers.take().map(|start| start()).unwrap_or_default();
            }
        }
    }
    if !chunk.is_empty() {
        hand_over(chunk, &mut number);
    }
    if walk.read_aheads > 0 {
        wake.cold();
    }
    walk.stop_reading_ahead();
    (walk, started)
}

/// Opens the sources (and stages the destinations) of the chunks it gets.
fn open_chunks(
    items: Receiver<(u64, Vec<Item>)>,
    found: Sender<(u64, Vec<Found>)>,
    stage: Option<Staging>,
    wake: Arc<Wake>,
) {
    let mut first = true;
    for (number, chunk) in items {
        if std::mem::take(&mut first) {
            wake.worked.fetch_add(1, Ordering::Relaxed);
        }
        let opened: Vec<Found> = chunk
            .into_iter()
            .map(|item| open_source(item, stage.as_ref()))
            .collect();
        // Only where the openers copy small files is one left to the
        // daemon a sign: otherwise the daemon copies every file.
        if stage.as_ref().is_some_and(|st| st.small.is_some()) && shows_cold(&opened) {
            wake.cold();
        }
        if found.send((number, opened)).is_err() {
            return;
        }
    }
}

impl WalkAhead {
    /// Starts `walk` on a new thread, and its openers, which create the
    /// destinations of files in staged directories (and copy small files)
    /// as `stage` says (see [`open_source`]), with at most `chunks_out`
    /// chunks out and `at_start` openers until the tree shows itself cold
    /// (see [`openers_at_start`]).
    pub fn start(
        walk: Walk,
        stage: Option<Staging>,
        chunks_out: usize,
        at_start: usize,
    ) -> io::Result<WalkAhead> {
        let (items_tx, items_rx) = crossbeam_channel::bounded(chunks_out);
        let (found_tx, chunks) = crossbeam_channel::bounded(chunks_out);
        let (credits_tx, credits) = crossbeam_channel::bounded(chunks_out);
        let (woken_tx, woken) = crossbeam_channel::bounded::<()>(0);
        let wake = Arc::new(Wake::new(woken_tx));
        let (waker, openers_wake) = (Arc::clone(&wake), Arc::clone(&wake));
        let all = max_openers();
        let spawn_opener = move |i: usize| {
            let (items, found, stage) = (items_rx.clone(), found_tx.clone(), stage.clone());
            let wake = Arc::clone(&openers_wake);
            let woken = (i >= at_start).then(|| woken.clone());
            let at_work = (i < at_start).then(|| AtWork::new(Arc::clone(&openers_wake)));
            let open = move || {
                let _at_work = at_work;
                // Kept back until the tree shows itself cold, or it ends.
                if let Some(woken) = woken {
                    let _ = woken.recv();
                    if !wake.to_work() {
                        return;
                    }
                }
                open_chunks(items, found, stage, wake);
            };
            std::thread::Builder::new()
                .name(format!("open-{i}"))
                .spawn(open)
        };
        let first = spawn_opener(0)?;
        // The others only for a tree of a chunk or more, started by the walk
        // once it has handed out a full chunk: a copy of a few files is short
        // enough for their start to count (a tree of one file: 3.4 ms with
        // all four started at once, 3.2 to 3.35 ms so). Fewer, where threads
        // run short, only go slower.
        let more = Box::new(move || (1..all).map_while(|i| spawn_opener(i).ok()).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        // (Had the walk's thread not started, the first opener's channel
        // closes and it ends.)
        let walker = std::thread::Builder::new()
            .name("walk".into())
            .spawn(move || walk_in_chunks(walk, items_tx, credits_tx, stopped, waker, more))?;
        Ok(WalkAhead {
            chunks,
            early: BTreeMap::new(),
            next_chunk: 0,
            credits,
            current: Vec::new().into_iter(),
            stop,
            walker,
            openers: vec![first],
            wake,
        })
    }

    /// How many openers took a chunk so far.
    #[cfg(test)]
    pub fn openers_worked(&self) -> usize {
        self.wake.worked.load(Ordering::Relaxed)
    }

    /// Stops the walk where it is and waits for its threads. Returns the
    /// walk (directories made, attributes still to apply) and what it found
    /// but never handed out that must still be dealt with: the directories
    /// it staged, which must be renamed into place or removed, and the
    /// leftovers it removed, which must be reported. Sources opened ahead
    /// are closed, destinations staged ahead removed.
    pub fn finish(self) -> (Walk, Vec<Found>) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.release();
        let (credits, chunks) = (self.credits, self.chunks);
        let drain = || {
            chunks
                .iter()
                .map(|(_, chunk)| chunk)
                .chain(self.early.into_values())
                .flatten()
                .chain(self.current)
                .filter(|found| matches!(found, Found::Other(Item::Staged(_) | Item::Leftover(_))))
                .collect::<Vec<_>>()
        };
        // Credits given back let a walker waiting for one see the stop; one
        // that ended waits for none (most copies: a thread less to start).
        let drained = if self.walker.is_finished() {
            drain()
        } else {
            std::thread::scope(|s| {
                s.spawn(|| while credits.recv().is_ok() {});
                drain()
            })
        };
        let (walk, started) = match self.walker.join() {
            Ok(ended) => ended,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        for opener in self.openers.into_iter().chain(started) {
            if let Err(panic) = opener.join() {
                std::panic::resume_unwind(panic);
            }
        }
        (walk, drained)
    }

    /// The next chunk in the walk's order, if it is back.
    fn take_chunk(&mut self) -> bool {
        let Some(chunk) = self.early.remove(&self.next_chunk) else {
            return false;
        };
        self.next_chunk += 1;
        self.current = chunk.into_iter();
        // The walker holds the sender until it ends; after that no credit
        // is needed.
        let _ = self.credits.try_recv();
        true
    }
}

impl Iterator for WalkAhead {
    type Item = Found;

    /// The next thing the walk found; `None` once it is over or a signal
    /// came.
    fn next(&mut self) -> Option<Found> {
        loop {
            if crate::signals::received().is_some() {
                return None;
            }
            if let Some(found) = self.current.next() {
                return Some(found);
            }
            if self.take_chunk() {
                continue;
            }
            match self.chunks.recv_timeout(crate::signals::POLL) {
                Ok((number, chunk)) => {
                    self.early.insert(number, chunk);
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The walk is over and everything was taken.
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree(files: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        for i in 0..files {
            fs::write(src.join("sub").join(format!("f{i}")), i.to_string()).unwrap();
        }
        let dst = dir.path().join("dst");
        (dir, src, dst)
    }

    #[test]
    fn hands_out_every_file_opened_after_its_directory_was_made() {
        let (_dir, src, dst) = tree(100);
        let walk = Walk::new(vec![(src.clone(), Some(dst))], true, false, 0o022);
        let mut ahead = WalkAhead::start(walk, None, 8, 2).unwrap();
        let mut files = 0;
        let mut staged = None;
        for found in ahead.by_ref() {
            match found {
                Found::File(f) => {
                    let SourceFile {
                        src: file,
                        dst,
                        within,
                        opened,
                        ..
                    } = *f;
                    let (mut f, meta) = opened.unwrap();
                    let mut text = String::new();
                    io::Read::read_to_string(&mut f, &mut text).unwrap();
                    assert_eq!(fs::read_to_string(&file).unwrap(), text);
                    assert_eq!(meta.len(), text.len() as u64);
                    assert_eq!(within, Some(0), "inside the staged directory");
                    assert!(dst.parent().unwrap().is_dir(), "{}", dst.display());
                    files += 1;
                }
                Found::Other(Item::Staged(dir)) => staged = Some(dir),
                Found::Other(other) => panic!("{other:?}"),
                Found::Landed(landed) => panic!("nothing is finished unstaged: {landed:?}"),
            }
        }
        assert_eq!(files, 100);
        let (walk, left) = ahead.finish();
        assert!(left.is_empty());
        assert_eq!(walk.dirs, 2);
        assert!(staged.is_some());
    }

    /// Openers work on chunks at once; what they hand back comes out in
    /// the walk's order, and with `stage` each destination inside the
    /// staged directory exists, with its source's mode.
    #[test]
    fn openers_hand_out_in_the_walks_order_with_destinations_staged() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, src, dst) = tree(CHUNK * 13 + 5);
        let odd = src.join("sub").join("f7");
        fs::set_permissions(&odd, fs::Permissions::from_mode(0o640)).unwrap();
        let order = |stage| {
            let walk = Walk::new(vec![(src.clone(), Some(dst.clone()))], true, false, 0o022);
            let mut ahead = WalkAhead::start(walk, stage, 8, 2).unwrap();
            let mut seen = Vec::new();
            for found in ahead.by_ref() {
                if let Found::File(f) = found {
                    if let Some(staged) = f.staged {
                        let staged = staged.unwrap();
                        let mode = staged.file().metadata().unwrap().mode() & 0o777;
                        let want = if f.src == odd { 0o640 } else { 0o644 };
                        assert_eq!(mode, want, "{}", f.dst.display());
                        assert_eq!(staged.path(), f.dst);
                    }
                    seen.push(f.src);
                }
            }
            let (_walk, left) = ahead.finish();
            for found in left {
                if let Found::Other(Item::Staged(dir)) = found {
                    fs::remove_dir_all(&dir.hidden).unwrap();
                }
            }
            seen
        };
        let plain: Vec<PathBuf> =
            Walk::new(vec![(src.clone(), Some(dst.clone()))], true, false, 0o022)
                .filter_map(|item| match item {
                    Item::File { src, .. } => Some(src),
                    _ => None,
                })
                .collect();
        assert_eq!(plain.len(), CHUNK * 13 + 5);
        assert_eq!(order(None), plain);
        assert_eq!(
            order(Some(Staging {
                publish: PublishOptions::default(),
                small: None,
            })),
            plain
        );
    }

    /// Openers kept back for a cold tree take nothing of a hot one, even
    /// the chunks still to open when the walk ends (on btrfs they contend
    /// on the subvolume's locks).
    #[test]
    fn openers_kept_back_end_idle_when_the_walk_ends_hot() {
        let (_dir, src, dst) = tree(CHUNK * 40);
        let walk = Walk::new(vec![(src, Some(dst))], true, false, 0o022);
        // Openers that create each destination are slower than the walk,
        // which ends with chunks still to open.
        let stage = Staging {
            publish: PublishOptions::default(),
            small: None,
        };
        let mut ahead = WalkAhead::start(walk, Some(stage), 8, 1).unwrap();
        let mut files = 0;
        for found in ahead.by_ref() {
            files += usize::from(matches!(found, Found::File(_)));
        }
        assert_eq!(files, CHUNK * 40);
        assert_eq!(ahead.openers_worked(), 1);
        let (_walk, left) = ahead.finish();
        for found in left {
            if let Found::Other(Item::Staged(dir)) = found {
                let _ = fs::remove_dir_all(&dir.hidden);
            }
        }
    }

    /// Those kept back are held until the last opener at work from the
    /// start ends (then they end), or until the tree shows itself cold
    /// (then they work, whatever ends after).
    #[test]
    fn kept_back_openers_work_once_cold_and_end_with_the_openers_at_work() {
        use crossbeam_channel::{RecvError, TryRecvError};
        let (kept, woken) = crossbeam_channel::bounded::<()>(0);
        let wake = Arc::new(Wake::new(kept));
        let (first, second) = (
            AtWork::new(Arc::clone(&wake)),
            AtWork::new(Arc::clone(&wake)),
        );
        drop(first);
        assert_eq!(
            woken.try_recv(),
            Err(TryRecvError::Empty),
            "one still at work"
        );
        drop(second);
        assert_eq!(woken.recv(), Err(RecvError));
        assert!(!wake.to_work(), "a hot tree: they end");

        let (kept, woken) = crossbeam_channel::bounded::<()>(0);
        let wake = Arc::new(Wake::new(kept));
        let at_work = AtWork::new(Arc::clone(&wake));
        wake.cold();
        assert_eq!(woken.recv(), Err(RecvError));
        drop(at_work);
        assert!(wake.to_work(), "a cold tree: they work");
    }

    #[test]
    fn chunks_out_fit_the_descriptors_given() {
        assert_eq!(chunks_out(u64::MAX), MAX_CHUNKS_OUT);
        assert_eq!(chunks_out(0), 1);
        let between = chunks_out(fds_ahead(12) + 1);
        assert_eq!(between, 12);
        assert!(fds_ahead(between) <= fds_ahead(12) + 1 && fds_ahead(13) > fds_ahead(12) + 1);
    }

    #[test]
    fn finishing_early_stops_the_walk_and_returns_what_it_staged() {
        let (_dir, src, dst) = tree(CHUNK * 24);
        let walk = Walk::new(vec![(src, Some(dst))], true, false, 0o022);
        let ahead = WalkAhead::start(walk, None, 8, 2).unwrap();
        // The walk fills the channel and waits; nothing is taken.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (walk, staged) = ahead.finish();
        let [Found::Other(Item::Staged(top))] = &staged[..] else {
            panic!("the new top directory: {staged:?}");
        };
        assert!(top.hidden.is_dir());
        assert_eq!(walk.dirs, 2);
    }
}
