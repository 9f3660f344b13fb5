//! Hard links inside a tree, kept by `copy -a` as cp -a keeps them: a file
//! with several names in the source is copied once, and its other names in
//! the copy are links to that copy.
//!
//! The first name met is copied like any file; the others wait until every
//! copy has settled (the first may still be in flight, or fail), then are
//! linked to it, before staged directories take their names.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::staged_dirs::Within;
use crate::staging::link_temp;

/// A name to be linked to the copy of a file met earlier.
pub struct Pending {
    pub src: PathBuf,
    /// The copy of the file's first name.
    pub target: PathBuf,
    pub dst: PathBuf,
    pub within: Within,
}

/// The files with several names met so far, by device and inode.
#[derive(Default)]
pub struct HardLinks {
    first: HashMap<(u64, u64), PathBuf>,
    pending: Vec<Pending>,
}

impl HardLinks {
    /// Whether `src` (with `meta`) is another name of a file already being
    /// copied: then its link to that copy is to be made later, not a copy.
    pub fn defer(&mut self, meta: &Metadata, src: &Path, dst: &Path, within: Within) -> bool {
        if meta.nlink() < 2 {
            return false;
        }
        match self.first.get(&(meta.dev(), meta.ino())) {
            Some(target) => {
                self.pending.push(Pending {
                    src: src.to_path_buf(),
                    target: target.clone(),
                    dst: dst.to_path_buf(),
                    within,
                });
                true
            }
            None => {
                self.first
                    .insert((meta.dev(), meta.ino()), dst.to_path_buf());
                false
            }
        }
    }

    /// Makes the deferred links (replacing what is at each name, as a copy
    /// would); each with its outcome.
    pub fn make(self) -> Vec<(Pending, io::Result<()>)> {
        self.pending
            .into_iter()
            .map(|p| {
                let made = link_over(&p.target, &p.dst);
                (p, made)
            })
            .collect()
    }
}

/// `dst` becomes a link to `target`, in one rename where `dst` exists.
fn link_over(target: &Path, dst: &Path) -> io::Result<()> {
    let temp = link_temp(dst);
    let _ = fs::remove_file(&temp);
    fs::hard_link(target, &temp)?;
    fs::rename(&temp, dst).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })
}
