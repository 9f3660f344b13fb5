//! The walk on a thread of its own, which also opens each source file and
//! reads its metadata, so that the thread driving the copies (creating the
//! destinations, talking to the daemon, publishing) does not pay for it.
//!
//! On two cores a copy of many small files is bound by that thread: opening
//! a source and reading its metadata and the directory was about a third of
//! its work, and with the walk beside it the scheduler can spread the CLI
//! over both cores while the daemon's share waits for I/O.
//!
//! The walk runs at most [`CHUNKS_AHEAD`] chunks ahead, so the sources it
//! holds open are bounded ([`FDS_AHEAD`]). Items reach the pipeline in the
//! walk's order: a directory is always made before a file in it is handed
//! out.
//!
//! Waiting for the walk ends every [`crate::signals::POLL`] to look for a
//! signal: an interrupted copy stops taking what the walk finds.

use std::fs::{File, Metadata};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::staged_dirs::Within;
use crate::walk::{Item, Walk};

/// Items per hand-over: one channel operation (and wake-up) per chunk, not
/// per file.
const CHUNK: usize = 32;

/// Chunks the walk may have ready before it waits for the pipeline.
const CHUNKS_AHEAD: usize = 4;

/// Sources open ahead at most: the chunks in the channel, the one being
/// filled, and the one the pipeline is taking from.
pub const FDS_AHEAD: u64 = ((CHUNKS_AHEAD + 2) * CHUNK) as u64;

/// What the walk hands the pipeline.
#[derive(Debug)]
pub enum Found {
    /// A regular file, opened for reading with its metadata, or why it
    /// could not be.
    File {
        src: PathBuf,
        dst: PathBuf,
        /// The staged directory `dst` is inside (see [`Item::File`]).
        within: Within,
        opened: io::Result<(File, Metadata)>,
    },
    /// Anything else the walk found.
    Other(Item),
}

/// Opens `item`'s source if it is a regular file.
pub fn open_source(item: Item) -> Found {
    match item {
        Item::File { src, dst, within } => {
            let opened = File::open(&src).and_then(|file| {
                let meta = file.metadata()?;
                Ok((file, meta))
            });
            Found::File {
                src,
                dst,
                within,
                opened,
            }
        }
        other => Found::Other(other),
    }
}

/// A [`Walk`] running on its own thread; iterate it for what it finds.
pub struct WalkAhead {
    chunks: Receiver<Vec<Found>>,
    current: std::vec::IntoIter<Found>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Walk>,
}

impl WalkAhead {
    /// Starts `walk` on a new thread.
    pub fn start(mut walk: Walk) -> io::Result<WalkAhead> {
        let (tx, chunks) = crossbeam_channel::bounded(CHUNKS_AHEAD);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("walk".into())
            .spawn(move || {
                let mut chunk = Vec::with_capacity(CHUNK);
                while !stopped.load(Ordering::Relaxed) {
                    let Some(item) = walk.next() else {
                        break;
                    };
                    chunk.push(open_source(item));
                    if chunk.len() == CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                        if tx.send(full).is_err() {
                            return walk;
                        }
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.send(chunk);
                }
                walk
            })?;
        Ok(WalkAhead {
            chunks,
            current: Vec::new().into_iter(),
            stop,
            thread,
        })
    }

    /// Stops the walk where it is and waits for its thread. Returns the walk
    /// (directories made, attributes still to apply) and what it found but
    /// never handed out that must still be dealt with: the directories it
    /// staged, which must be renamed into place or removed, and the
    /// leftovers it removed, which must be reported. Sources opened ahead
    /// are closed.
    pub fn finish(self) -> (Walk, Vec<Found>) {
        self.stop.store(true, Ordering::Relaxed);
        let unseen = self
            .current
            .chain(self.chunks.iter().flatten())
            .filter(|found| matches!(found, Found::Other(Item::Staged(_) | Item::Leftover(_))))
            .collect();
        // The channel is drained and closed by the thread's end, so the
        // join cannot wait on a full channel.
        match self.thread.join() {
            Ok(walk) => (walk, unseen),
            Err(panic) => std::panic::resume_unwind(panic),
        }
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
            match self.chunks.recv_timeout(crate::signals::POLL) {
                Ok(chunk) => self.current = chunk.into_iter(),
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
        let mut ahead = WalkAhead::start(walk).unwrap();
        let mut files = 0;
        let mut staged = None;
        for found in ahead.by_ref() {
            match found {
                Found::File {
                    src: file,
                    dst,
                    within,
                    opened,
                } => {
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
            }
        }
        assert_eq!(files, 100);
        let (walk, left) = ahead.finish();
        assert!(left.is_empty());
        assert_eq!(walk.dirs, 2);
        assert!(staged.is_some());
    }

    #[test]
    fn finishing_early_stops_the_walk_and_returns_what_it_staged() {
        let (_dir, src, dst) = tree(CHUNK * (CHUNKS_AHEAD + 4));
        let walk = Walk::new(vec![(src, Some(dst))], true, false, 0o022);
        let ahead = WalkAhead::start(walk).unwrap();
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
