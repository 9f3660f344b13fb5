//! Where a pulled file is written until it is whole: `.NAME.ringxfer-part`
//! beside DST, the name the other daemon's receiver uses for a push. It
//! takes DST's name only once the pull succeeded. A pull cut off (the
//! other daemon gone, the link down) keeps it, so that `copy --resume`
//! continues from what it holds; any other failure removes it. An
//! exclusive lock keeps two pulls from writing the same part.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::CliError;

pub struct PullPart {
    part: PathBuf,
    dst: PathBuf,
    file: File,
}

impl PullPart {
    /// Opens (with `resume`, keeping what it holds) or creates the part of
    /// `dst`.
    pub fn open(dst: &Path, resume: bool) -> Result<PullPart, CliError> {
        let name = dst.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name else {
            return Err(CliError::usage(format!(
                "{}: not a file name",
                dst.display()
            )));
        };
        let part = dst.with_file_name(format!(".{name}.ringxfer-part"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&part)
            .map_err(|e| CliError::path("cannot create", &part, &e))?;
        // SAFETY: flock takes no pointers; `file` is open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
            let err = std::io::Error::last_os_error();
            return Err(CliError::io(
                format!("{}: another pull is writing it", part.display()),
                &err,
            ));
        }
        if !resume {
            file.set_len(0)
                .map_err(|e| CliError::path("cannot truncate", &part, &e))?;
        }
        Ok(PullPart {
            part,
            dst: dst.to_path_buf(),
            file,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives the whole file DST's name (durably, with `fsync`).
    pub fn publish(self, fsync: bool) -> Result<(), CliError> {
        fs::rename(&self.part, &self.dst)
            .map_err(|e| CliError::path("cannot rename into", &self.dst, &e))?;
        if fsync {
            let dir = self.dst.parent().filter(|p| !p.as_os_str().is_empty());
            let dir = dir.unwrap_or(Path::new("."));
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| CliError::path("cannot fsync", dir, &e))?;
        }
        Ok(())
    }

    /// The pull failed: the part stays when `keep` (cut off, for a
    /// resume), else goes. Returns where it stays.
    pub fn give_up(self, keep: bool) -> Option<PathBuf> {
        if keep && self.file.metadata().is_ok_and(|m| m.len() > 0) {
            return Some(self.part);
        }
        let _ = fs::remove_file(&self.part);
        None
    }
}
