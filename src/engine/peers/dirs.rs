//! The directories a pushed file lacks (`Put::mkdir`: a tree being
//! pushed), made one component at a time beneath the export: MKDIRAT in
//! the directory reached so far (an existing one is fine), then OPENAT2 of
//! it with RESOLVE_BENEATH, so that a symlink planted in the export cannot
//! lead the next one out of it. Every step runs as the export's user, as
//! the rest of the file does.

use std::ffi::CString;

use super::incoming::os_failure;
use super::tag;
use crate::engine::Engine;
use crate::io::fd::SharedFd;
use crate::io::op::{self, openat2::How};

/// What a directory made for a pushed file gets (less the umask).
const DIR_MODE: u32 = 0o755;

impl Engine {
    /// The file's directory does not exist: make its components, from the
    /// export down.
    pub(super) fn make_dirs(&mut self, k: usize) {
        let Some(inc) = self.peers.incoming_mut(k) else {
            return;
        };
        let parent = inc.target.parent.as_bytes();
        inc.dirs = parent
            .split(|&b| b == b'/')
            .rev()
            .filter_map(|c| CString::new(c).ok())
            .collect();
        inc.parent = None;
        self.make_next_dir(k);
    }

    /// The directory reached so far (the export's at first) and the next
    /// component to make in it.
    fn next_dir(&self, k: usize) -> Option<(SharedFd, CString)> {
        let inc = self.peers.incoming(k)?;
        let name = inc.dirs.last()?.clone();
        let dir = match &inc.parent {
            Some(parent) => SharedFd::owned(parent),
            None => SharedFd::owned(&self.peers.exports[inc.export].dir),
        };
        Some((dir, name))
    }

    /// Makes the next component, or opens the file once none is left.
    pub(super) fn make_next_dir(&mut self, k: usize) {
        match self.next_dir(k) {
            Some((dir, name)) => {
                let mkdir = op::MkdirAt::new(dir, name, DIR_MODE);
                self.queue_incoming_op(k, tag::MKDIR, mkdir);
            }
            None => self.open_part(k),
        }
    }

    /// A step of making the directories completed.
    pub(super) fn on_dir_step(&mut self, k: usize, tag: u32, result: i32) {
        let made = tag == tag::MKDIR && (result >= 0 || result == -libc::EEXIST);
        if made {
            // A directory pushed is its own last component: a link there
            // is refused, or its mode would go to what the link leads to.
            let leaf = self
                .peers
                .incoming(k)
                .is_some_and(|i| i.directory && i.leaf_made);
            let nofollow = if leaf { libc::O_NOFOLLOW } else { 0 };
            if let Some((dir, name)) = self.next_dir(k) {
                let how = How {
                    flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | nofollow) as u64,
                    mode: 0,
                    resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
                };
                self.queue_incoming_op(k, tag::OPEN_DIR, op::OpenAt2::new(dir, name, how));
            }
            return;
        }
        let Some(inc) = self.peers.incoming_mut(k) else {
            return;
        };
        if tag == tag::OPEN_DIR && result >= 0 {
            // The descriptor is the parent now (adopted by the caller).
            inc.dirs.pop();
            return self.make_next_dir(k);
        }
        let name = inc
            .dirs
            .last()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let what = if tag == tag::MKDIR { "make" } else { "open" };
        let why = format!("{}: cannot {what} the directory {name}", inc.shown);
        self.fail_incoming(k, os_failure(-result, why));
    }
}
