//! Opening the files a transfer reads and writes, with the checks cp(1)
//! makes, so that mistakes are refused before anything is written.

use std::fs::{self, File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// Opens a transfer's source for reading; `dir_hint` finishes the sentence
/// when it turns out to be a directory.
pub fn open_source(path: &Path, dir_hint: &str) -> Result<(File, Metadata), CliError> {
    let name = || path.display().to_string();
    let file = File::open(path).map_err(|err| CliError::io(name(), &err))?;
    // fstat of the open file, not stat of the path: what we checked is what
    // the engine reads.
    let meta = file.metadata().map_err(|err| CliError::io(name(), &err))?;
    if meta.is_dir() {
        return Err(CliError::new(
            name(),
            "is-a-directory",
            format!("is a directory ({dir_hint})"),
        ));
    }
    Ok((file, meta))
}

/// Where a copy of `src` to `dst` lands: inside `dst` when it is an existing
/// directory (following symlinks, as cp does), else `dst` itself.
pub fn resolve_destination(src: &Path, dst: &Path) -> Result<PathBuf, CliError> {
    if !fs::metadata(dst).is_ok_and(|m| m.is_dir()) {
        return Ok(dst.to_path_buf());
    }
    match src.file_name() {
        Some(name) => Ok(dst.join(name)),
        // `..` or `/`: there is no name to give the copy.
        None => Err(CliError::new(
            src.display().to_string(),
            "invalid-request",
            format!("has no file name to copy into directory {}", dst.display()),
        )),
    }
}

/// What -n and -u say about replacing what is at `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replace {
    /// Replace it (cp's default).
    #[default]
    Always,
    /// `-n`: never; anything at the name, a dangling link included, stays.
    Never,
    /// `-u`: only when the source's modification time is later.
    IfOlder,
}

impl Replace {
    pub fn new(no_clobber: bool, update: bool) -> Replace {
        match (no_clobber, update) {
            (true, _) => Replace::Never,
            (false, true) => Replace::IfOlder,
            (false, false) => Replace::Always,
        }
    }

    /// Whether a copy of a source with metadata `src` skips `dst`.
    pub fn skips(self, src: &Metadata, dst: &Path) -> bool {
        if self == Replace::Always {
            return false;
        }
        let Ok(link) = fs::symlink_metadata(dst) else {
            return false;
        };
        if self == Replace::Never {
            return true;
        }
        // As cp: the time of what the name leads to, else of the link.
        let existing = fs::metadata(dst).unwrap_or(link);
        (src.mtime(), src.mtime_nsec()) <= (existing.mtime(), existing.mtime_nsec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_clobber_skips_anything_there_and_update_only_what_is_newer() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        let new = dir.path().join("new");
        fs::write(&old, "o").unwrap();
        fs::write(&new, "n").unwrap();
        let t = |s| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(t(1_000))
            .unwrap();
        fs::File::options()
            .write(true)
            .open(&new)
            .unwrap()
            .set_modified(t(2_000))
            .unwrap();
        let (old_meta, new_meta) = (fs::metadata(&old).unwrap(), fs::metadata(&new).unwrap());
        let missing = dir.path().join("missing");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(&missing, &dangling).unwrap();

        assert!(!Replace::Always.skips(&new_meta, &old));
        assert!(Replace::Never.skips(&new_meta, &old));
        assert!(Replace::Never.skips(&new_meta, &dangling));
        assert!(!Replace::Never.skips(&new_meta, &missing));
        assert!(
            !Replace::IfOlder.skips(&new_meta, &old),
            "newer source replaces"
        );
        assert!(
            Replace::IfOlder.skips(&old_meta, &new),
            "older source skips"
        );
        assert!(Replace::IfOlder.skips(&old_meta, &old), "same time skips");
        assert!(!Replace::IfOlder.skips(&old_meta, &missing));
    }

    #[test]
    fn directory_destination_gets_the_source_name() {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new("some/where/data.bin");
        assert_eq!(
            resolve_destination(src, dir.path()).unwrap(),
            dir.path().join("data.bin")
        );
    }

    #[test]
    fn file_or_missing_destination_is_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("existing");
        File::create(&existing).unwrap();
        let missing = dir.path().join("missing");
        let src = Path::new("data.bin");
        assert_eq!(resolve_destination(src, &existing).unwrap(), existing);
        assert_eq!(resolve_destination(src, &missing).unwrap(), missing);
    }

    #[test]
    fn nameless_source_into_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_destination(Path::new("/"), dir.path()).unwrap_err();
        assert_eq!(err.kind, "invalid-request");
    }

    #[test]
    fn directory_source_is_refused_with_the_hint() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_source(dir.path(), "try -r").err().unwrap();
        assert_eq!(err.kind, "is-a-directory");
        assert_eq!(
            err.to_string(),
            format!("{}: is a directory (try -r)", dir.path().display())
        );
    }

    #[test]
    fn missing_source_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("nope");
        let err = open_source(&src, "").err().unwrap();
        assert_eq!(err.kind, "not-found");
        assert_eq!(
            err.to_string(),
            format!("{}: No such file or directory", src.display())
        );
    }
}
