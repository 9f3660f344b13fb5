//! The walk of a tree copy: it creates (or stages) directories and yields
//! the files and links to copy, as [`crate::tree`] describes.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, DirBuilder, File, Metadata, ReadDir};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::context::Follow;
use crate::dir_fds::DirPair;
use crate::error::CliError;
use crate::read_ahead::{ColdEntries, ColdSigns, ReadAhead};
use crate::staged_dirs::{StagedDir, Within};
use crate::staging::{remove_leftovers, Leftover};
use crate::xattrs::Xattrs;
use ringxfer_ipc::publish::{hidden_name, preserve_metadata};

/// One thing the walk found that the pipeline must copy or report.
#[derive(Debug)]
pub enum Item {
    /// A regular file. Inside a [`StagedDir`] (`within` is some), `dst` is
    /// created under its own name instead of staged.
    File {
        src: PathBuf,
        dst: PathBuf,
        within: Within,
        /// The directories `src` and `dst` are in, open, where the walk
        /// holds them (see [`MAX_HELD_DEPTH`]).
        at: Option<Arc<DirPair>>,
    },
    /// A new destination directory is being built under a hidden name.
    Staged(StagedDir),
    /// A symbolic link to recreate.
    Symlink {
        src: PathBuf,
        dst: PathBuf,
        within: Within,
    },
    /// A FIFO, socket or device node to recreate (-a).
    Special {
        src: PathBuf,
        dst: PathBuf,
        within: Within,
    },
    /// Something that could not be copied, already phrased.
    Failed {
        src: PathBuf,
        dst: Option<PathBuf>,
        within: Within,
        error: CliError,
    },
    /// A staging directory of a killed copy, removed (or not removable).
    Leftover(Leftover),
}

/// A directory's final mode (and with --preserve, owner and times), applied
/// once its contents are done.
#[derive(Debug)]
pub struct DirFixup {
    /// The source directory, whose extended attributes --preserve carries.
    pub src: PathBuf,
    pub dst: PathBuf,
    pub meta: Metadata,
    pub within: Within,
}

struct Frame {
    entries: ReadDir,
    src: PathBuf,
    dst: PathBuf,
    /// Inside a [`StagedDir`]: everything here is ours and unseen.
    within: Within,
    fixup: Option<DirFixup>,
    /// The source directory's device and inode, to tell a cycle (-L).
    id: (u64, u64),
    /// The two directories, open, for the files found here.
    at: Option<Arc<DirPair>>,
}

/// Levels of the tree whose directories the walk holds open for their
/// files (see [`DirPair`]); deeper ones name files by path. Two
/// descriptors a level: a tree thousands of levels deep must not run out.
pub const MAX_HELD_DEPTH: usize = 64;

/// Hidden names tried before giving up on staging a directory.
const MAX_HIDDEN_TRIES: u32 = 100;

/// `.NAME.ringxfer-PID-N` next to `dst`, the name kept short enough for NAME_MAX.
fn hidden_sibling(dst: &Path, n: u32) -> Option<PathBuf> {
    Some(dst.with_file_name(hidden_name(dst.file_name()?, u64::from(n))))
}

/// The directory `path` is in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Depth-first walk over the operands, creating destination directories as
/// it goes (a file's directory always exists before the file is yielded).
pub struct Walk {
    operands: std::vec::IntoIter<(PathBuf, Option<PathBuf>)>,
    stack: Vec<Frame>,
    recursive: bool,
    preserve: bool,
    follow: Follow,
    umask: u32,
    /// Items to hand out before walking on (leftovers found while staging).
    pending: VecDeque<Item>,
    /// Directories already searched for leftovers.
    searched: HashSet<PathBuf>,
    /// Directories finished, in post-order (children before parents).
    pub fixups: Vec<DirFixup>,
    /// Directories created.
    pub dirs: u64,
    /// Directories created inside each staged directory (itself included),
    /// by [`StagedDir::index`].
    pub staged_dirs: Vec<u64>,
    /// Threads reading the operand being walked ahead of the walk, once it
    /// showed itself cold (see [`crate::read_ahead`]).
    read_ahead: Option<ReadAhead>,
    cold: ColdSigns,
    /// Blocks the source's directories had read from a disk since the last
    /// directory was entered.
    source_reads: i64,
    /// Directories of the operand entered so far, and which read from a disk.
    entries: ColdEntries,
    /// Times a walk started reading ahead.
    pub read_aheads: u32,
}

fn failed(src: &Path, dst: Option<&Path>, within: Within, error: CliError) -> Item {
    Item::Failed {
        src: src.to_path_buf(),
        dst: dst.map(Path::to_path_buf),
        within,
        error,
    }
}

/// What to call a file that is neither regular, directory nor link.
fn special_kind(ft: fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

fn skipped_special(src: &Path, dst: Option<&Path>, within: Within, ft: fs::FileType) -> Item {
    failed(
        src,
        dst,
        within,
        CliError::new(
            "",
            "special-file",
            format!(
                "skipping '{}': a {} is not copied",
                src.display(),
                special_kind(ft)
            ),
        ),
    )
}

impl Walk {
    /// `operands`: each source with where it lands (`None`: it has no name
    /// to land under, like `/` or `..`).
    pub fn new(
        operands: Vec<(PathBuf, Option<PathBuf>)>,
        recursive: bool,
        preserve: bool,
        umask: u32,
    ) -> Walk {
        Walk {
            operands: operands.into_iter(),
            stack: Vec::new(),
            recursive,
            preserve,
            follow: Follow::Operands,
            umask,
            pending: VecDeque::new(),
            searched: HashSet::new(),
            fixups: Vec::new(),
            dirs: 0,
            staged_dirs: Vec::new(),
            read_ahead: None,
            cold: ColdSigns::default(),
            source_reads: 0,
            entries: ColdEntries::default(),
            read_aheads: 0,
        }
    }

    /// Which symbolic links the walk follows (cp's -H, -L, -P).
    pub fn following(mut self, follow: Follow) -> Walk {
        self.follow = follow;
        self
    }

    fn operand(&mut self, src: PathBuf, dst: Option<PathBuf>) -> Option<Item> {
        let Some(dst) = dst else {
            return Some(failed(
                &src,
                None,
                None,
                CliError::new(
                    "",
                    "invalid-request",
                    format!(
                        "cannot copy '{}': it has no name to give the copy",
                        src.display()
                    ),
                ),
            ));
        };
        // Followed, like `cp -H`, unless -P: see the module comment.
        let stat = match self.follow {
            Follow::Never => fs::symlink_metadata(&src),
            Follow::Operands | Follow::Always => fs::metadata(&src),
        };
        let meta = match stat {
            Ok(meta) => meta,
            Err(e) => {
                return Some(failed(
                    &src,
                    None,
                    None,
                    CliError::path("cannot stat", &src, &e),
                ))
            }
        };
        if meta.is_file() {
            return Some(Item::File {
                src,
                dst,
                within: None,
                at: None,
            });
        }
        if meta.is_symlink() {
            return Some(Item::Symlink {
                src,
                dst,
                within: None,
            });
        }
        if !meta.is_dir() {
            return Some(skipped_special(&src, None, None, meta.file_type()));
        }
        if !self.recursive {
            return Some(failed(
                &src,
                None,
                None,
                CliError::new(
                    "",
                    "is-a-directory",
                    format!("-r not specified; omitting directory '{}'", src.display()),
                ),
            ));
        }
        if let Some(item) = refuse_into_itself(&src, &dst) {
            return Some(item);
        }
        self.enter(src, dst, meta, None)
    }

    /// Creates `dst` for the directory `src` and starts reading `src`;
    /// returns an item when that failed, or when `dst` was staged.
    /// Inside a staged directory (`within` is some) the directory is simply
    /// made; elsewhere a destination that does not exist yet is staged under
    /// a hidden name (then the returned item is [`Item::Staged`]).
    fn enter(
        &mut self,
        src: PathBuf,
        dst: PathBuf,
        meta: Metadata,
        within: Within,
    ) -> Option<Item> {
        let mode = meta.mode() & 0o7777;
        // u+rwx while we fill it, or a 0555 source would refuse its own files.
        let mut builder = DirBuilder::new();
        builder.mode(mode | 0o700);
        self.count_source_reads();
        let absent = within.is_none()
            && matches!(fs::symlink_metadata(&dst), Err(e) if e.kind() == io::ErrorKind::NotFound);
        if absent {
            return self.enter_staged(src, dst, meta, &builder);
        }
        let created = builder.create(&dst);
        self.skip_destination_reads();
        let created = match created {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => false,
            Err(e) => {
                return Some(failed(
                    &src,
                    Some(&dst),
                    within,
                    CliError::path("cannot create directory", &dst, &e),
                ))
            }
        };
        if created {
            self.count_dir(within);
        }
        let entries = match fs::read_dir(&src) {
            Ok(entries) => entries,
            Err(e) => {
                return Some(failed(
                    &src,
                    Some(&dst),
                    within,
                    CliError::path("cannot open directory", &src, &e),
                ))
            }
        };
        self.push_frame(entries, src, dst, meta, within, created);
        None
    }

    /// Stages a new destination directory: the source is opened first, so
    /// one that cannot be read leaves nothing behind.
    fn enter_staged(
        &mut self,
        src: PathBuf,
        dst: PathBuf,
        meta: Metadata,
        builder: &DirBuilder,
    ) -> Option<Item> {
        self.skip_destination_reads();
        let entries = match fs::read_dir(&src) {
            Ok(entries) => entries,
            Err(e) => {
                return Some(failed(
                    &src,
                    Some(&dst),
                    None,
                    CliError::path("cannot open directory", &src, &e),
                ))
            }
        };
        self.count_source_reads();
        let found = remove_leftovers(parent_of(&dst), &mut self.searched);
        self.pending.extend(found.into_iter().map(Item::Leftover));
        let hidden = self.stage(builder, &dst);
        self.skip_destination_reads();
        let hidden = match hidden {
            Ok(hidden) => hidden,
            Err(e) => {
                return Some(failed(
                    &src,
                    Some(&dst),
                    None,
                    CliError::path("cannot create directory", &dst, &e),
                ))
            }
        };
        let index = self.staged_dirs.len();
        self.staged_dirs.push(0);
        self.count_dir(Some(index));
        self.push_frame(entries, src, hidden.clone(), meta, Some(index), true);
        Some(Item::Staged(StagedDir { hidden, dst, index }))
    }

    fn count_dir(&mut self, within: Within) {
        self.dirs += 1;
        if let Some(n) = within.and_then(|i| self.staged_dirs.get_mut(i)) {
            *n += 1;
        }
    }

    fn push_frame(
        &mut self,
        entries: ReadDir,
        src: PathBuf,
        dst: PathBuf,
        meta: Metadata,
        within: Within,
        created: bool,
    ) {
        let mode = meta.mode() & 0o7777;
        // A directory we created whose mode mkdir could not give it at once
        // (it lacked u+rwx), or any directory with --preserve.
        let needs_fixup =
            self.preserve || (created && (mode & !self.umask) != ((mode | 0o700) & !self.umask));
        let id = (meta.dev(), meta.ino());
        let fixup = needs_fixup.then(|| DirFixup {
            src: src.clone(),
            dst: dst.clone(),
            meta,
            within,
        });
        // The destination only where the openers create files: in a staged
        // directory.
        let at = (self.stack.len() < MAX_HELD_DEPTH)
            .then(|| DirPair::open(&src, within.map(|_| dst.as_path())))
            .flatten()
            .map(Arc::new);
        self.stack.push(Frame {
            entries,
            src,
            dst,
            id,
            within,
            fixup,
            at,
        });
        self.note_entry();
    }

    /// Counts a directory entered, and starts reading the operand ahead
    /// once the walk's own reads show it cold (see [`crate::read_ahead`]).
    fn note_entry(&mut self) {
        if let Some(ahead) = &self.read_ahead {
            ahead.entered();
            return;
        }
        let cold = std::mem::take(&mut self.source_reads) > 0;
        if self.entries.entered(cold) {
            let root = self.stack[0].src.clone();
            // Without the threads the walk only goes slower.
            self.read_ahead = ReadAhead::start(root, self.entries.count()).ok();
            self.read_aheads += u32::from(self.read_ahead.is_some());
        }
    }

    /// Counts what the walk's thread read from a disk since it last looked
    /// as the source's. Only the source's reads say it is cold: a new
    /// destination's file system reads its allocation bitmaps too.
    fn count_source_reads(&mut self) {
        if self.read_ahead.is_none() {
            self.source_reads += self.cold.blocks_read();
        }
    }

    /// Leaves out what the walk's thread read for the destination (see
    /// [`Walk::count_source_reads`]).
    fn skip_destination_reads(&mut self) {
        if self.read_ahead.is_none() {
            self.cold.blocks_read();
        }
    }

    /// Stops reading ahead (the walk is over, or stopped).
    pub fn stop_reading_ahead(&mut self) {
        self.read_ahead = None;
        self.source_reads = 0;
        self.entries = ColdEntries::default();
    }

    /// Makes a hidden directory next to `dst`; returns its path.
    fn stage(&mut self, builder: &DirBuilder, dst: &Path) -> io::Result<PathBuf> {
        let mut n = 0;
        loop {
            let hidden =
                hidden_sibling(dst, n).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            match builder.create(&hidden) {
                Ok(()) => return Ok(hidden),
                // Ours from an earlier attempt, or a process that had our pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < MAX_HIDDEN_TRIES => {
                    n += 1
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies a directory's final attributes (see [`DirFixup`]).
    pub fn fix_directory(&self, fixup: &DirFixup) -> Result<(), CliError> {
        let dir =
            File::open(&fixup.dst).map_err(|e| CliError::path("cannot open", &fixup.dst, &e))?;
        let result = if self.preserve {
            // Extended attributes first (a default ACL among them), then
            // the mode, which sets an ACL's mask, then owner and times.
            match File::open(&fixup.src) {
                Ok(src) => Xattrs::of_source(&src, &fixup.src).apply_and_report(&dir, &fixup.dst),
                Err(e) => crate::report::note(&format!(
                    "cannot read the extended attributes of '{}': {e}",
                    fixup.src.display()
                )),
            }
            preserve_metadata(&dir, &fixup.meta)
        } else {
            dir.set_permissions(fs::Permissions::from_mode(
                fixup.meta.mode() & 0o7777 & !self.umask,
            ))
        };
        result.map_err(|e| CliError::path("cannot set attributes of", &fixup.dst, &e))
    }

    /// Leaves the directory on top of the stack, keeping its fixup; the
    /// last one of an operand ends its read-ahead.
    fn leave(&mut self) {
        if let Some(fixup) = self.stack.pop().and_then(|f| f.fixup) {
            self.fixups.push(fixup);
        }
        if self.stack.is_empty() {
            self.stop_reading_ahead();
        }
    }
}

/// `copy -r a a/sub` would copy forever: refused, as cp does.
fn refuse_into_itself(src: &Path, dst: &Path) -> Option<Item> {
    let src_real = fs::canonicalize(src).ok()?;
    let dst_real = fs::canonicalize(parent_of(dst))
        .ok()?
        .join(dst.file_name()?);
    dst_real.starts_with(&src_real).then(|| {
        failed(
            src,
            Some(dst),
            None,
            CliError::new(
                "",
                "invalid-request",
                format!(
                    "cannot copy a directory, '{}', into itself, '{}'",
                    src.display(),
                    dst.display()
                ),
            ),
        )
    })
}

impl Iterator for Walk {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            let Some(frame) = self.stack.last_mut() else {
                let (src, dst) = self.operands.next()?;
                match self.operand(src, dst) {
                    Some(item) => return Some(item),
                    None => continue,
                }
            };
            let within = frame.within;
            let entry = match frame.entries.next() {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    // getdents failed mid-directory: report it and leave the
                    // directory, rather than retry forever.
                    let item = failed(
                        &frame.src,
                        Some(&frame.dst),
                        within,
                        CliError::path("cannot read directory", &frame.src, &e),
                    );
                    self.leave();
                    return Some(item);
                }
                None => {
                    self.leave();
                    continue;
                }
            };
            let src = entry.path();
            let dst = frame.dst.join(entry.file_name());
            // d_type from getdents: no stat per file.
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) => {
                    return Some(failed(
                        &src,
                        Some(&dst),
                        within,
                        CliError::path("cannot stat", &src, &e),
                    ))
                }
            };
            if ft.is_file() {
                let at = frame.at.clone();
                return Some(Item::File {
                    src,
                    dst,
                    within,
                    at,
                });
            }
            if ft.is_symlink() && self.follow != Follow::Always {
                return Some(Item::Symlink { src, dst, within });
            }
            if !ft.is_dir() && !ft.is_symlink() {
                return Some(self.special(src, dst, within, ft));
            }
            // A directory, or (-L) a link to anything: stat says which.
            let meta = match fs::metadata(&src) {
                Ok(meta) => meta,
                Err(e) => {
                    return Some(failed(
                        &src,
                        Some(&dst),
                        within,
                        CliError::path("cannot stat", &src, &e),
                    ))
                }
            };
            if meta.is_file() {
                // Followed (-L): opened by its path, a link's name.
                return Some(Item::File {
                    src,
                    dst,
                    within,
                    at: None,
                });
            }
            if !meta.is_dir() {
                return Some(self.special(src, dst, within, meta.file_type()));
            }
            if let Some(item) = self.enter_unless_cycle(src, dst, meta, within) {
                return Some(item);
            }
        }
    }
}

impl Walk {
    /// A FIFO, socket or device: recreated with -a, else a failed item.
    fn special(&self, src: PathBuf, dst: PathBuf, within: Within, ft: fs::FileType) -> Item {
        if self.preserve {
            Item::Special { src, dst, within }
        } else {
            skipped_special(&src, Some(&dst), within, ft)
        }
    }

    /// Enters a directory, unless it is one being walked already (a link
    /// followed with -L back up the tree), which would never end.
    fn enter_unless_cycle(
        &mut self,
        src: PathBuf,
        dst: PathBuf,
        meta: Metadata,
        within: Within,
    ) -> Option<Item> {
        let id = (meta.dev(), meta.ino());
        if self.stack.iter().any(|f| f.id == id) {
            return Some(failed(
                &src,
                Some(&dst),
                within,
                CliError::new(
                    "",
                    "invalid-request",
                    format!(
                        "not following '{}': it leads back to a directory being copied (a cycle)",
                        src.display()
                    ),
                ),
            ));
        }
        self.enter(src, dst, meta, within)
    }
}
