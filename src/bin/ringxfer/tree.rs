//! `copy -r` and `copy FILE... DIR`: where each source lands, and the walk
//! that creates directories and yields the files and links to copy.
//!
//! cp(1) semantics, with these choices:
//! - Command-line operands are followed when they are symbolic links (as
//!   `cp -H`): `copy -r link-to-dir dst` copies the directory. Links met
//!   inside a tree are recreated as links (readlink + symlink), never
//!   followed.
//! - Directories are created with the source's mode less the umask (plus
//!   u+rwx while their contents are written, taken back afterwards); with
//!   --preserve their mode, owner and times are applied once everything
//!   under them is published, deepest first.
//! - FIFOs, devices and sockets are skipped with a message and counted as
//!   failures; so are unreadable files and directories, and every other
//!   per-path error. The walk goes on; the summary says how many failed.
//! - An existing destination directory is merged into, as cp does: each
//!   file is staged and published on its own (see ringxfer_ipc::publish).
//! - A destination directory that does not exist yet is built under a hidden
//!   name next to it (`.NAME.ringxfer-PID-N`) and renamed into place only if
//!   everything in it completed: every file, link and directory under it,
//!   the copy not cut short (connection to the engine lost, interrupted).
//!   Otherwise it is removed, and the copy says the directory was not
//!   created and why. Removed rather than kept and named, because a partial
//!   tree kept after a full disk keeps the disk full, because a later copy
//!   would remove it as a leftover anyway (see [`crate::staging`]), and so
//!   that a failed tree ends as a failed file does: nothing under the name,
//!   nothing beside it. Until the rename nothing of the copy is under its
//!   final name, so even SIGKILL leaves no half-written file where a reader
//!   would take it for the real one, and the next copy that stages in the
//!   same directory removes what SIGKILL left. The files inside are created
//!   under their own names, with no per-file temporary, link or rename,
//!   which is most of what a small file costs the CLI. If something took
//!   the name meanwhile, the copy fails the same way (nothing is replaced).

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::fs::{self, DirBuilder, File, Metadata, ReadDir};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::batch::{Pipeline, Tally};
use crate::commands::{Context, CopyArgs};
use crate::error::{CliError, Exit};
use crate::report::{Op, Output};
use crate::staging::{remove_leftovers, Leftover};
use crate::walk_ahead::WalkAhead;
use ringxfer_ipc::publish::{hidden_name, preserve_metadata};

/// Which staged directory (see [`StagedDir`]) a path is inside, by the
/// order the walk staged them in; `None` outside every staged directory.
pub type Within = Option<usize>;

/// One thing the walk found that the pipeline must copy or report.
#[derive(Debug)]
pub enum Item {
    /// A regular file. Inside a [`StagedDir`] (`within` is some), `dst` is
    /// created under its own name instead of staged.
    File {
        src: PathBuf,
        dst: PathBuf,
        within: Within,
    },
    /// A new destination directory is being built under a hidden name.
    Staged(StagedDir),
    /// A symbolic link to recreate.
    Symlink {
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
}

/// A destination directory built under `hidden` and renamed to `dst` when
/// everything in it completed (see the module comment).
#[derive(Debug, Clone)]
pub struct StagedDir {
    pub hidden: PathBuf,
    pub dst: PathBuf,
    /// Its place in the order the walk staged directories in.
    pub index: usize,
}

/// A staged directory and what happened inside it so far.
#[derive(Debug)]
struct Staged {
    dir: StagedDir,
    /// Things inside that failed: any keeps the directory from its name.
    failed: u64,
    /// What landed inside, taken back out of the tally if it is removed.
    files: u64,
    links: u64,
    bytes: u64,
}

/// The directories a copy stages, for renaming them into place (or
/// removing them), and for naming paths inside them as the user knows them.
#[derive(Debug, Default)]
pub struct StagedDirs(Vec<Option<Staged>>);

/// Why staged directories are not renamed into place, whatever is in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutShort {
    /// Every job ran to its end: each directory is judged on its own.
    No,
    /// The connection to the engine was lost.
    Lost,
    /// A signal stopped the copy.
    Interrupted(i32),
}

impl StagedDirs {
    pub fn push(&mut self, dir: StagedDir) {
        let index = dir.index;
        if self.0.len() <= index {
            self.0.resize_with(index + 1, || None);
        }
        self.0[index] = Some(Staged {
            dir,
            failed: 0,
            files: 0,
            links: 0,
            bytes: 0,
        });
    }

    fn dirs(&self) -> impl Iterator<Item = &StagedDir> {
        self.0.iter().flatten().map(|s| &s.dir)
    }

    fn get(&mut self, within: Within) -> Option<&mut Staged> {
        self.0.get_mut(within?)?.as_mut()
    }

    /// Something inside `within` failed.
    pub fn failed(&mut self, within: Within) {
        if let Some(staged) = self.get(within) {
            staged.failed += 1;
        }
    }

    /// A file (or link, with `bytes` 0 and `link`) landed inside `within`.
    pub fn landed(&mut self, within: Within, link: bool, bytes: u64) {
        if let Some(staged) = self.get(within) {
            if link {
                staged.links += 1;
            } else {
                staged.files += 1;
                staged.bytes += bytes;
            }
        }
    }

    /// Whether `within` will be renamed into place as far as is known now.
    fn intact(&self, within: Within) -> bool {
        match within {
            None => true,
            Some(i) => self
                .0
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.failed == 0),
        }
    }

    /// `path` under its final name.
    pub fn shown<'a>(&self, path: &'a Path) -> Cow<'a, Path> {
        for dir in self.dirs() {
            if let Ok(rest) = path.strip_prefix(&dir.hidden) {
                return Cow::Owned(dir.dst.join(rest));
            }
        }
        Cow::Borrowed(path)
    }

    /// `err` with hidden names replaced by final ones.
    pub fn error(&self, err: CliError) -> CliError {
        self.dirs()
            .fold(err, |err, dir| err.renamed(&dir.hidden, &dir.dst))
    }

    /// Renames every staged directory in which everything completed into
    /// place, and removes the others, taking what was in them out of
    /// `tally`; returns what to report.
    /// `dirs`: directories made in each (see [`Walk::staged_dirs`]).
    pub fn publish(self, cut_short: CutShort, dirs: &[u64], tally: &mut Tally) -> Vec<CliError> {
        let mut reports = Vec::new();
        for staged in self.0.into_iter().flatten() {
            let why = match cut_short {
                CutShort::Lost => Some("the copy did not finish".to_string()),
                CutShort::Interrupted(sig) => Some(format!(
                    "the copy was interrupted by {}",
                    crate::signals::name(sig)
                )),
                CutShort::No if staged.failed > 0 => Some(format!(
                    "{} in it failed",
                    if staged.failed == 1 {
                        "1 item".to_string()
                    } else {
                        format!("{} items", staged.failed)
                    }
                )),
                CutShort::No => None,
            };
            let dir = &staged.dir;
            let mut os_error = None;
            let why = match why {
                None => match rename_noreplace(&dir.hidden, &dir.dst) {
                    Ok(()) => continue,
                    Err(e) => {
                        os_error = e.raw_os_error();
                        format!(
                            "cannot move the copy into place: {}",
                            crate::error::describe_io(&e)
                        )
                    }
                },
                Some(why) => why,
            };
            tally.files -= staged.files.min(tally.files);
            tally.links -= staged.links.min(tally.links);
            tally.bytes -= staged.bytes.min(tally.bytes);
            let made = dirs.get(dir.index).copied().unwrap_or(0);
            tally.dirs -= made.min(tally.dirs);
            reports.push(CliError {
                os_error,
                ..abandon(dir, &why)
            });
        }
        reports
    }
}

/// Removes a staged directory that is not to be renamed into place, and
/// says so: by its final name, or by the hidden one if it had to stay.
fn abandon(dir: &StagedDir, why: &str) -> CliError {
    let (kind, tail) = match remove_tree(&dir.hidden) {
        Ok(()) => ("not-created", "the partial copy was removed".to_string()),
        Err(e) => (
            "staging-left",
            format!(
                "the partial copy is left in '{}' (cannot remove it: {})",
                dir.hidden.display(),
                crate::error::describe_io(&e)
            ),
        ),
    };
    CliError::new(
        "",
        kind,
        format!("'{}' was not created: {why}; {tail}", dir.dst.display()),
    )
}

/// Removes a staged tree. A directory in it may have lost u+w already (its
/// final mode applied), which would refuse the removal of what is inside:
/// then every directory gets u+rwx back and the removal is tried again.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let _ = open_up(path);
            fs::remove_dir_all(path)
        }
        other => other,
    }
}

/// Adds u+rwx to `dir` and every directory under it, never following a
/// symbolic link (each is opened O_NOFOLLOW and changed through its
/// descriptor).
fn open_up(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)?;
    let mode = file.metadata()?.mode() & 0o7777;
    file.set_permissions(fs::Permissions::from_mode(mode | 0o700))?;
    for entry in fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = open_up(&entry.path());
        }
    }
    Ok(())
}

/// rename(2) that never replaces what is at `to` (RENAME_NOREPLACE; where
/// the file system lacks the flag, a check just before a plain rename).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    };
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths that outlive the call; AT_FDCWD needs no descriptor.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    match fs::symlink_metadata(to) {
        Ok(_) => Err(io::Error::from_raw_os_error(libc::EEXIST)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::rename(from, to),
        Err(e) => Err(e),
    }
}

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
            umask,
            pending: VecDeque::new(),
            searched: HashSet::new(),
            fixups: Vec::new(),
            dirs: 0,
            staged_dirs: Vec::new(),
        }
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
        // Followed, like `cp -H`: see the module comment.
        let meta = match fs::metadata(&src) {
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
        let absent = within.is_none()
            && matches!(fs::symlink_metadata(&dst), Err(e) if e.kind() == io::ErrorKind::NotFound);
        if absent {
            return self.enter_staged(src, dst, meta, &builder);
        }
        let created = match builder.create(&dst) {
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
        let found = remove_leftovers(parent_of(&dst), &mut self.searched);
        self.pending.extend(found.into_iter().map(Item::Leftover));
        let hidden = match self.stage(builder, &dst) {
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
        self.stack.push(Frame {
            entries,
            src,
            dst: dst.clone(),
            within,
            fixup: needs_fixup.then_some(DirFixup { dst, meta, within }),
        });
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
            preserve_metadata(&dir, &fixup.meta)
        } else {
            dir.set_permissions(fs::Permissions::from_mode(
                fixup.meta.mode() & 0o7777 & !self.umask,
            ))
        };
        result.map_err(|e| CliError::path("cannot set attributes of", &fixup.dst, &e))
    }

    /// Leaves the directory on top of the stack, keeping its fixup.
    fn leave(&mut self) {
        if let Some(fixup) = self.stack.pop().and_then(|f| f.fixup) {
            self.fixups.push(fixup);
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
                return Some(Item::File { src, dst, within });
            }
            if ft.is_symlink() {
                return Some(Item::Symlink { src, dst, within });
            }
            if !ft.is_dir() {
                return Some(skipped_special(&src, Some(&dst), within, ft));
            }
            let meta = match entry.metadata() {
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
            if let Some(item) = self.enter(src, dst, meta, within) {
                return Some(item);
            }
        }
    }
}

/// The current umask, which `mkdir` applies and which the walk must know to
/// set a directory's final mode. umask(2) can only be read by setting it.
fn current_umask() -> u32 {
    // SAFETY: umask(2) cannot fail; the next call restores the mask before any file is created.
    let mask = unsafe { libc::umask(0o022) };
    // SAFETY: as above; this puts the original mask back.
    unsafe { libc::umask(mask) };
    mask & 0o777
}

/// Pairs each source with where it lands. Several sources need DST to be an
/// existing directory (usage error otherwise, as cp); one source (with -r)
/// lands in DST/NAME when DST is a directory, else becomes DST.
fn destinations(
    sources: &[PathBuf],
    dst: &Path,
) -> Result<Vec<(PathBuf, Option<PathBuf>)>, CliError> {
    let dst_is_dir = fs::metadata(dst).is_ok_and(|m| m.is_dir());
    if sources.len() > 1 && !dst_is_dir {
        return Err(CliError::usage(format!(
            "target '{}' is not a directory (several sources are copied into a directory)",
            dst.display()
        )));
    }
    Ok(sources
        .iter()
        .map(|src| {
            let target = if dst_is_dir {
                src.file_name().map(|name| dst.join(name))
            } else {
                Some(dst.to_path_buf())
            };
            (src.clone(), target)
        })
        .collect())
}

/// Applies the directories' final attributes, deepest first, except in
/// staged directories that will not be renamed into place (they are
/// removed, and a directory without u+w would stand in the way), and not
/// at all if the copy was cut short.
fn fix_directories(
    walk: &Walk,
    mut staged: StagedDirs,
    cut_short: CutShort,
    tally: &mut Tally,
    out: Output,
) -> StagedDirs {
    if cut_short != CutShort::No {
        return staged;
    }
    for fixup in &walk.fixups {
        if !staged.intact(fixup.within) {
            continue;
        }
        if let Err(err) = walk.fix_directory(fixup) {
            tally.failed += 1;
            staged.failed(fixup.within);
            out.failed(Op::Copy, None, &staged.error(err));
        }
    }
    staged
}

/// Runs a multi-file or recursive copy; exit 1 if anything failed. A
/// signal (see [`crate::signals`]) stops it; `main` then exits 128 + N.
pub fn copy(ctx: &Context, sources: &[PathBuf], dst: &Path, args: &CopyArgs<'_>) -> Exit {
    let operands = match destinations(sources, dst) {
        Ok(operands) => operands,
        Err(err) => {
            ctx.out.failed(Op::Copy, None, &err);
            return err.exit;
        }
    };
    // Read before the engine's threads exist (umask is process-wide).
    let umask = current_umask();
    // Also before any thread exists (see ringxfer::fdtable).
    crate::fdlimit::raise_nofile();
    ringxfer::fdtable::reserve(crate::batch::MAX_FDS);
    // The signal thread is the first: every later one inherits the mask.
    crate::signals::start();
    let _watch = crate::signals::watch();
    let engine = match ctx.engine(&args.job) {
        Ok(engine) => engine,
        Err(err) => {
            ctx.out.failed(Op::Copy, None, &err);
            return err.exit;
        }
    };
    let started = Instant::now();
    let walk = Walk::new(operands, args.recursive, args.dest.preserve, umask);
    let mut ahead = match WalkAhead::start(walk) {
        Ok(ahead) => ahead,
        Err(e) => {
            let err = CliError::new("cannot start the directory walk", "io", e.to_string());
            ctx.out.failed(Op::Copy, None, &err);
            return err.exit;
        }
    };
    let mut pipeline = Pipeline::new(ctx, &engine, args);
    let mut fatal = None;
    for found in ahead.by_ref() {
        if let Err(err) = pipeline.take(found) {
            fatal = Some(err);
            break;
        }
    }
    // Stops the walk before anything it made is removed.
    let (walk, unseen) = ahead.finish();
    for found in unseen {
        // Only staged directories and leftovers: nothing for the engine.
        let _ = pipeline.take(found);
    }
    let (mut tally, staged) = pipeline.finish();
    tally.dirs = walk.dirs;
    let cut_short = match (crate::signals::received(), &fatal) {
        (Some(sig), _) => CutShort::Interrupted(sig),
        (None, Some(_)) => CutShort::Lost,
        (None, None) => CutShort::No,
    };
    let staged = fix_directories(&walk, staged, cut_short, &mut tally, ctx.out);
    let reports = staged.publish(cut_short, &walk.staged_dirs, &mut tally);
    tally.elapsed = started.elapsed();
    if let Some(err) = &fatal {
        ctx.out.failed(Op::Copy, None, err);
    }
    for err in &reports {
        ctx.out.failed(Op::Copy, None, err);
    }
    ctx.out.tree_done(&tally, engine.kind());
    if fatal.is_some() || cut_short != CutShort::No || tally.failed > 0 || !reports.is_empty() {
        Exit::Failed
    } else {
        Exit::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk_all(walk: &mut Walk) -> Vec<Item> {
        walk.by_ref().collect()
    }

    #[test]
    fn several_sources_need_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        File::create(&file).unwrap();
        let err = destinations(&[file.clone(), file.clone()], &file).unwrap_err();
        assert_eq!(err.exit, Exit::Usage);
        assert!(err.to_string().contains("is not a directory"), "{err}");
        let ok = destinations(&[file.clone(), file.clone()], dir.path()).unwrap();
        assert_eq!(ok[0].1.as_deref(), Some(dir.path().join("f").as_path()));
        // One source, DST missing: DST is the copy's name.
        let new = dir.path().join("new");
        let one = destinations(std::slice::from_ref(&file), &new).unwrap();
        assert_eq!(one[0].1.as_deref(), Some(new.as_path()));
    }

    #[test]
    fn walk_creates_directories_and_yields_files_links_and_specials() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("a/b/f"), b"x").unwrap();
        fs::write(src.join("top"), b"").unwrap();
        std::os::unix::fs::symlink("top", src.join("link")).unwrap();
        let fifo = std::ffi::CString::new(src.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let dst = dir.path().join("dst");
        let mut walk = Walk::new(vec![(src.clone(), Some(dst.clone()))], true, false, 0o022);
        let items = walk_all(&mut walk);
        assert_eq!(walk.dirs, 3);
        // A new destination is built under a hidden name next to it.
        let Some(Item::Staged(staged)) = items.first() else {
            panic!("the first item stages the new directory: {items:?}");
        };
        assert_eq!(staged.dst, dst);
        assert_eq!(staged.hidden.parent(), dst.parent());
        let hidden_name = staged.hidden.file_name().unwrap().to_string_lossy();
        assert!(hidden_name.starts_with(".dst.ringxfer-"), "{hidden_name}");
        assert!(
            !dst.exists(),
            "nothing under the final name before the copy is done"
        );
        let hidden = staged.hidden.clone();
        assert!(hidden.join("a/b").is_dir());
        let files: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                Item::File { dst, within, .. } => Some((dst.clone(), *within)),
                _ => None,
            })
            .collect();
        assert_eq!(files.len(), 2, "{items:?}");
        assert!(files.contains(&(hidden.join("a/b/f"), Some(0))));
        assert!(items
            .iter()
            .any(|i| matches!(i, Item::Symlink { dst: d, .. } if *d == hidden.join("link"))));
        assert!(items.iter().any(|i| matches!(i,
            Item::Failed { error, within: Some(0), dst: Some(_), .. }
                if error.to_string().contains("fifo"))));
        let mut dirs = StagedDirs::default();
        dirs.push(staged.clone());
        assert_eq!(dirs.shown(&hidden.join("a/b/f")), dst.join("a/b/f"));
        let mut tally = Tally::default();
        assert!(dirs
            .publish(CutShort::No, &walk.staged_dirs, &mut tally)
            .is_empty());
        assert!(dst.join("a/b").is_dir() && !hidden.exists());
    }

    /// A tree in `dir/src` with one file, walked to `dir/dst`: the walk
    /// and its staged directory.
    fn staged_tree(dir: &Path) -> (Walk, StagedDir) {
        let src = dir.join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), b"x").unwrap();
        let dst = dir.join("dst");
        let mut walk = Walk::new(vec![(src, Some(dst))], true, false, 0o022);
        let items = walk_all(&mut walk);
        let Some(Item::Staged(staged)) = items.first() else {
            panic!("{items:?}");
        };
        (walk, staged.clone())
    }

    #[test]
    fn a_name_taken_meanwhile_fails_the_copy_and_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (walk, staged) = staged_tree(dir.path());
        fs::create_dir(&staged.dst).unwrap();
        fs::write(staged.dst.join("theirs"), b"keep").unwrap();
        let mut dirs = StagedDirs::default();
        dirs.push(staged.clone());
        let mut tally = Tally::default();
        let errs = dirs.publish(CutShort::No, &walk.staged_dirs, &mut tally);
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        assert!(
            msg.contains("was not created: cannot move the copy into place: File exists")
                && msg.contains("the partial copy was removed")
                && !msg.contains(".ringxfer-"),
            "{msg}"
        );
        assert_eq!(errs[0].os_error, Some(libc::EEXIST));
        assert_eq!(fs::read(staged.dst.join("theirs")).unwrap(), b"keep");
        assert!(!staged.hidden.exists());
    }

    #[test]
    fn a_failure_inside_or_a_cut_short_copy_removes_the_staged_tree() {
        for cut_short in [
            CutShort::No,
            CutShort::Lost,
            CutShort::Interrupted(libc::SIGINT),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (walk, staged) = staged_tree(dir.path());
            let mut dirs = StagedDirs::default();
            dirs.push(staged.clone());
            dirs.landed(Some(0), false, 1);
            if cut_short == CutShort::No {
                dirs.failed(Some(0));
            }
            // A directory whose final mode lacks u+w must not stop the removal.
            fs::set_permissions(staged.hidden.join("sub"), fs::Permissions::from_mode(0o555))
                .unwrap();
            let mut tally = Tally {
                files: 1,
                bytes: 1,
                dirs: walk.dirs,
                ..Tally::default()
            };
            let errs = dirs.publish(cut_short, &walk.staged_dirs, &mut tally);
            assert_eq!(errs.len(), 1, "{cut_short:?}");
            let msg = errs[0].to_string();
            assert!(
                msg.starts_with(&format!("'{}' was not created: ", staged.dst.display()))
                    && msg.ends_with("the partial copy was removed"),
                "{msg}"
            );
            assert!(
                !staged.hidden.exists() && !staged.dst.exists(),
                "{cut_short:?}"
            );
            assert_eq!(
                (tally.files, tally.bytes, tally.dirs),
                (0, 0, 0),
                "{cut_short:?}"
            );
        }
    }

    #[test]
    fn directory_without_r_is_omitted_and_into_itself_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        let mut walk = Walk::new(
            vec![(src.clone(), Some(dir.path().join("x")))],
            false,
            false,
            0,
        );
        let items = walk_all(&mut walk);
        assert!(matches!(&items[..], [Item::Failed { error, .. }]
            if error.to_string().contains("omitting directory")));

        let mut walk = Walk::new(vec![(src.clone(), Some(src.join("in")))], true, false, 0);
        let items = walk_all(&mut walk);
        assert!(matches!(&items[..], [Item::Failed { error, .. }]
            if error.to_string().contains("into itself")));
        assert!(!src.join("in").exists());
    }

    #[test]
    fn unwritable_source_directory_gets_its_mode_back() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o555)).unwrap();
        let dst = dir.path().join("dst");
        let mut walk = Walk::new(vec![(src.clone(), Some(dst.clone()))], true, false, 0o022);
        let items = walk_all(&mut walk);
        let [Item::Staged(staged)] = &items[..] else {
            panic!("expected only the staged directory: {items:?}");
        };
        assert_eq!(fs::metadata(&staged.hidden).unwrap().mode() & 0o777, 0o755);
        assert_eq!(walk.fixups.len(), 1);
        walk.fix_directory(&walk.fixups[0]).unwrap();
        let mut dirs = StagedDirs::default();
        dirs.push(staged.clone());
        assert!(dirs
            .publish(CutShort::No, &walk.staged_dirs, &mut Tally::default())
            .is_empty());
        assert_eq!(fs::metadata(&dst).unwrap().mode() & 0o777, 0o555);
    }
}
