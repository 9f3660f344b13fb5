//! The directories a tree copy builds under hidden names: what happened
//! inside each, and renaming it into place only if everything in it
//! completed, or removing it (see the module comment of [`crate::tree`]).

use std::borrow::Cow;
use std::fs::{self};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::CliError;
use crate::report::Tally;

/// Which staged directory (see [`StagedDir`]) a path is inside, by the
/// order the walk staged them in; `None` outside every staged directory.
pub type Within = Option<usize>;

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
    pub fn intact(&self, within: Within) -> bool {
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
