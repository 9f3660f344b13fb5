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
//!   name next to it (`.NAME.ringxfer-PID-N`) and renamed into place once
//!   everything in it is done, like rsync's temporary files but for the whole
//!   tree. Until then nothing of the copy is under its final name, so a copy
//!   cut short (even by SIGKILL) leaves no half-written file where a reader
//!   would take it for the real one; and the files inside are created under
//!   their own names, with no per-file temporary, link or rename, which is
//!   most of what a small file costs the CLI. A file whose job fails is
//!   removed before the rename. If something took the name meanwhile, the
//!   copy stays under the hidden name and the failure says where.

use std::borrow::Cow;
use std::fs::{self, DirBuilder, File, Metadata, ReadDir};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::batch::Pipeline;
use crate::commands::{Context, CopyArgs};
use crate::error::{CliError, Exit};
use crate::report::Op;
use crate::walk_ahead::WalkAhead;
use ringxfer_ipc::publish::{hidden_name, preserve_metadata};

/// One thing the walk found that the pipeline must copy or report.
#[derive(Debug)]
pub enum Item {
    /// A regular file. `new`: `dst` is inside a [`StagedDir`], so it is
    /// created under its own name instead of staged.
    File {
        src: PathBuf,
        dst: PathBuf,
        new: bool,
    },
    /// A new destination directory is being built under a hidden name.
    Staged(StagedDir),
    /// A symbolic link to recreate.
    Symlink { src: PathBuf, dst: PathBuf },
    /// Something that could not be copied, already phrased.
    Failed {
        src: PathBuf,
        dst: Option<PathBuf>,
        error: CliError,
    },
}

/// A directory's final mode (and with --preserve, owner and times), applied
/// once its contents are done.
#[derive(Debug)]
pub struct DirFixup {
    pub dst: PathBuf,
    pub meta: Metadata,
}

struct Frame {
    entries: ReadDir,
    src: PathBuf,
    dst: PathBuf,
    /// Inside a [`StagedDir`]: everything here is ours and unseen.
    new: bool,
    fixup: Option<DirFixup>,
}

/// A destination directory built under `hidden` and renamed to `dst` when
/// the copy is done (see the module comment).
#[derive(Debug, Clone)]
pub struct StagedDir {
    pub hidden: PathBuf,
    pub dst: PathBuf,
}

/// The directories a copy stages, for renaming them into place and for
/// naming paths inside them as the user knows them.
#[derive(Debug, Default)]
pub struct StagedDirs(Vec<StagedDir>);

impl StagedDirs {
    pub fn push(&mut self, dir: StagedDir) {
        self.0.push(dir);
    }

    /// `path` under its final name.
    pub fn shown<'a>(&self, path: &'a Path) -> Cow<'a, Path> {
        for dir in &self.0 {
            if let Ok(rest) = path.strip_prefix(&dir.hidden) {
                return Cow::Owned(dir.dst.join(rest));
            }
        }
        Cow::Borrowed(path)
    }

    /// `err` with hidden names replaced by final ones.
    pub fn error(&self, err: CliError) -> CliError {
        self.0
            .iter()
            .fold(err, |err, dir| err.renamed(&dir.hidden, &dir.dst))
    }

    /// Renames every staged directory into place; the failures, phrased.
    pub fn publish(&self) -> Vec<CliError> {
        let mut failures = Vec::new();
        for dir in &self.0 {
            if let Err(e) = rename_noreplace(&dir.hidden, &dir.dst) {
                let mut err = CliError::path("cannot move the copy into place at", &dir.dst, &e);
                err.cause
                    .push_str(&format!("; the copy is kept in '{}'", dir.hidden.display()));
                failures.push(err);
            }
        }
        failures
    }
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

/// Depth-first walk over the operands, creating destination directories as
/// it goes (a file's directory always exists before the file is yielded).
pub struct Walk {
    operands: std::vec::IntoIter<(PathBuf, Option<PathBuf>)>,
    stack: Vec<Frame>,
    recursive: bool,
    preserve: bool,
    umask: u32,
    /// Directories finished, in post-order (children before parents).
    pub fixups: Vec<DirFixup>,
    /// Directories created.
    pub dirs: u64,
}

fn failed(src: &Path, dst: Option<&Path>, error: CliError) -> Item {
    Item::Failed {
        src: src.to_path_buf(),
        dst: dst.map(Path::to_path_buf),
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

fn skipped_special(src: &Path, ft: fs::FileType) -> Item {
    failed(
        src,
        None,
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
            fixups: Vec::new(),
            dirs: 0,
        }
    }

    fn operand(&mut self, src: PathBuf, dst: Option<PathBuf>) -> Option<Item> {
        let Some(dst) = dst else {
            return Some(failed(
                &src,
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
            Err(e) => return Some(failed(&src, None, CliError::path("cannot stat", &src, &e))),
        };
        if meta.is_file() {
            return Some(Item::File {
                src,
                dst,
                new: false,
            });
        }
        if !meta.is_dir() {
            return Some(skipped_special(&src, meta.file_type()));
        }
        if !self.recursive {
            return Some(failed(
                &src,
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
        self.enter(src, dst, meta, false)
    }

    /// Creates `dst` for the directory `src` and starts reading `src`;
    /// returns an item only when that failed.
    /// Inside a staged directory (`parent_new`) the directory is simply
    /// made; elsewhere a destination that does not exist yet is staged under
    /// a hidden name (then the returned item is [`Item::Staged`]).
    fn enter(
        &mut self,
        src: PathBuf,
        dst: PathBuf,
        meta: Metadata,
        parent_new: bool,
    ) -> Option<Item> {
        let mode = meta.mode() & 0o7777;
        // u+rwx while we fill it, or a 0555 source would refuse its own files.
        let mut builder = DirBuilder::new();
        builder.mode(mode | 0o700);
        let mut staged = None;
        let absent = !parent_new
            && matches!(fs::symlink_metadata(&dst), Err(e) if e.kind() == io::ErrorKind::NotFound);
        let made = if absent {
            match self.stage(&builder, &dst) {
                Ok(hidden) => {
                    staged = Some(StagedDir {
                        hidden: hidden.clone(),
                        dst: dst.clone(),
                    });
                    Ok(hidden)
                }
                Err(e) => Err(e),
            }
        } else {
            builder.create(&dst).map(|()| dst.clone())
        };
        let (dir, created) = match made {
            Ok(dir) => {
                self.dirs += 1;
                (dir, true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !absent && dst.is_dir() => {
                (dst.clone(), false)
            }
            Err(e) => {
                return Some(failed(
                    &src,
                    Some(&dst),
                    CliError::path("cannot create directory", &dst, &e),
                ))
            }
        };
        let dst = dir;
        let entries = match fs::read_dir(&src) {
            Ok(entries) => entries,
            Err(e) => {
                return Some(failed(
                    &src,
                    Some(&dst),
                    CliError::path("cannot open directory", &src, &e),
                ))
            }
        };
        // A directory we created whose mode mkdir could not give it at once
        // (it lacked u+rwx), or any directory with --preserve.
        let needs_fixup =
            self.preserve || (created && (mode & !self.umask) != ((mode | 0o700) & !self.umask));
        self.stack.push(Frame {
            entries,
            src,
            dst: dst.clone(),
            new: parent_new || staged.is_some(),
            fixup: needs_fixup.then_some(DirFixup { dst, meta }),
        });
        staged.map(Item::Staged)
    }

    /// Makes a hidden directory next to `dst`; returns its path.
    fn stage(&mut self, builder: &DirBuilder, dst: &Path) -> io::Result<PathBuf> {
        let mut n = 0;
        loop {
            let hidden =
                hidden_sibling(dst, n).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            match builder.create(&hidden) {
                Ok(()) => return Ok(hidden),
                // A leftover of an earlier copy that was killed.
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
}

/// `copy -r a a/sub` would copy forever: refused, as cp does.
fn refuse_into_itself(src: &Path, dst: &Path) -> Option<Item> {
    let src_real = fs::canonicalize(src).ok()?;
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dst_real = fs::canonicalize(parent).ok()?.join(dst.file_name()?);
    dst_real.starts_with(&src_real).then(|| {
        failed(
            src,
            Some(dst),
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
            let Some(frame) = self.stack.last_mut() else {
                let (src, dst) = self.operands.next()?;
                match self.operand(src, dst) {
                    Some(item) => return Some(item),
                    None => continue,
                }
            };
            let entry = match frame.entries.next() {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    // getdents failed mid-directory: report it and leave the
                    // directory, rather than retry forever.
                    let item = failed(
                        &frame.src,
                        None,
                        CliError::path("cannot read directory", &frame.src, &e),
                    );
                    if let Some(fixup) = self.stack.pop().and_then(|f| f.fixup) {
                        self.fixups.push(fixup);
                    }
                    return Some(item);
                }
                None => {
                    if let Some(fixup) = self.stack.pop().and_then(|f| f.fixup) {
                        self.fixups.push(fixup);
                    }
                    continue;
                }
            };
            let src = entry.path();
            let dst = frame.dst.join(entry.file_name());
            let new = frame.new;
            // d_type from getdents: no stat per file.
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) => return Some(failed(&src, None, CliError::path("cannot stat", &src, &e))),
            };
            if ft.is_file() {
                return Some(Item::File { src, dst, new });
            }
            if ft.is_symlink() {
                return Some(Item::Symlink { src, dst });
            }
            if !ft.is_dir() {
                return Some(skipped_special(&src, ft));
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) => return Some(failed(&src, None, CliError::path("cannot stat", &src, &e))),
            };
            if let Some(item) = self.enter(src, dst, meta, new) {
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

/// Runs a multi-file or recursive copy; exit 1 if anything failed.
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
    let (walk, staged_unseen) = ahead.finish();
    let (mut tally, mut staged) = pipeline.finish();
    for dir in staged_unseen {
        staged.push(dir);
    }
    tally.dirs = walk.dirs;
    if fatal.is_none() {
        for fixup in &walk.fixups {
            if let Err(err) = walk.fix_directory(fixup) {
                tally.failed += 1;
                ctx.out.failed(Op::Copy, None, &staged.error(err));
            }
        }
    }
    // Even after a fatal error: what finished is whole (what did not was
    // removed), and cp leaves a partial tree where it stopped too.
    for err in staged.publish() {
        tally.failed += 1;
        ctx.out.failed(Op::Copy, None, &err);
    }
    tally.elapsed = started.elapsed();
    ctx.out.tree_done(&tally, engine.kind());
    if let Some(err) = fatal {
        ctx.out.failed(Op::Copy, None, &err);
        return Exit::Failed;
    }
    if tally.failed > 0 {
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
                Item::File { dst, new, .. } => Some((dst.clone(), *new)),
                _ => None,
            })
            .collect();
        assert_eq!(files.len(), 2, "{items:?}");
        assert!(files.contains(&(hidden.join("a/b/f"), true)));
        assert!(items
            .iter()
            .any(|i| matches!(i, Item::Symlink { dst: d, .. } if *d == hidden.join("link"))));
        let mut dirs = StagedDirs::default();
        dirs.push(staged.clone());
        assert_eq!(dirs.shown(&hidden.join("a/b/f")), dst.join("a/b/f"));
        assert!(dirs.publish().is_empty());
        assert!(dst.join("a/b").is_dir() && !hidden.exists());
        assert!(items.iter().any(|i| matches!(i,
            Item::Failed { error, .. } if error.to_string().contains("fifo"))));
    }

    #[test]
    fn a_name_taken_meanwhile_keeps_the_copy_hidden_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        let dst = dir.path().join("dst");
        let mut walk = Walk::new(vec![(src.clone(), Some(dst.clone()))], true, false, 0o022);
        let items = walk_all(&mut walk);
        let Some(Item::Staged(staged)) = items.first() else {
            panic!("{items:?}");
        };
        fs::create_dir(&dst).unwrap();
        fs::write(dst.join("theirs"), b"keep").unwrap();
        let mut dirs = StagedDirs::default();
        dirs.push(staged.clone());
        let errs = dirs.publish();
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        assert!(
            msg.contains("cannot move the copy into place at")
                && msg.contains(&staged.hidden.display().to_string()),
            "{msg}"
        );
        assert_eq!(errs[0].os_error, Some(libc::EEXIST));
        assert_eq!(fs::read(dst.join("theirs")).unwrap(), b"keep");
        assert!(staged.hidden.is_dir());
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
        assert!(dirs.publish().is_empty());
        assert_eq!(fs::metadata(&dst).unwrap().mode() & 0o777, 0o555);
    }
}
