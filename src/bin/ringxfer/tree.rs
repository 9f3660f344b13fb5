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

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::context::{Context, CopyArgs};
use crate::error::{CliError, Exit};
use crate::pipeline::Pipeline;
use crate::report::Tally;
use crate::report::{Op, Output};
use crate::staged_dirs::*;
use crate::walk::*;
use crate::walk_ahead::WalkAhead;

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
    dst_is_dir: bool,
) -> Result<Vec<(PathBuf, Option<PathBuf>)>, CliError> {
    if sources.len() > 1 && !dst_is_dir {
        return Err(CliError::usage(format!(
            "target '{}' is not a directory (several sources are copied into a directory)",
            dst.display()
        )));
    }
    Ok(sources
        .iter()
        .map(|src| {
            let target = if dst_is_dir && ends_in_dot(src) {
                // `d/.` names d's contents, as in cp: they go into DST itself.
                Some(dst.to_path_buf())
            } else if dst_is_dir {
                src.file_name().map(|name| dst.join(name))
            } else {
                Some(dst.to_path_buf())
            };
            (src.clone(), target)
        })
        .collect())
}

/// Whether `path`'s last component is `.` (`.`, `d/.`), which `Path`
/// drops from its components.
fn ends_in_dot(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    bytes == b"." || bytes.ends_with(b"/.")
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
    let operands = match destinations(sources, dst, args.target.into_dir(dst)) {
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
    ringxfer::fdtable::reserve(crate::pipeline::MAX_FDS);
    // The signal thread is the first: every later one inherits the mask.
    crate::signals::start();
    let _watch = crate::signals::watch();
    // Connected to when a file first needs a job, unless the command
    // insists on the daemon: then its absence ends the copy before it
    // starts (exit 3). (--detach is refused for trees before this.)
    let engine = ctx.lazy_engine(&args.job);
    if ctx.daemon_only {
        if let Err(err) = engine.get() {
            ctx.out.failed(Op::Copy, None, &err);
            return err.exit;
        }
    }
    let started = Instant::now();
    let walk =
        Walk::new(operands, args.recursive, args.dest.preserve, umask).following(args.follow);
    let mut pipeline = Pipeline::new(ctx, &engine, args);
    let openers = crate::walk_ahead::openers_at_start(crate::dir_fds::fs_type(dst));
    let mut ahead = match WalkAhead::start(
        walk,
        Some(pipeline.staging()),
        pipeline.chunks_out(),
        openers,
    ) {
        Ok(ahead) => ahead,
        Err(e) => {
            let err = CliError::new("cannot start the directory walk", "io", e.to_string());
            ctx.out.failed(Op::Copy, None, &err);
            return err.exit;
        }
    };
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
    ctx.out.tree_done(&tally, engine.used());
    if fatal.is_some() || cut_short != CutShort::No || tally.failed > 0 || !reports.is_empty() {
        Exit::Failed
    } else {
        Exit::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn walk_all(walk: &mut Walk) -> Vec<Item> {
        walk.by_ref().collect()
    }

    #[test]
    fn several_sources_need_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        File::create(&file).unwrap();
        let err = destinations(&[file.clone(), file.clone()], &file, false).unwrap_err();
        assert_eq!(err.exit, Exit::Usage);
        assert!(err.to_string().contains("is not a directory"), "{err}");
        let ok = destinations(&[file.clone(), file.clone()], dir.path(), true).unwrap();
        assert_eq!(ok[0].1.as_deref(), Some(dir.path().join("f").as_path()));
        // One source, DST missing: DST is the copy's name.
        let new = dir.path().join("new");
        let one = destinations(std::slice::from_ref(&file), &new, false).unwrap();
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
