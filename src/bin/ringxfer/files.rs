//! Opening the files a transfer reads and writes, with the checks cp(1)
//! makes, so that mistakes are refused before anything is written.

use std::fs::{self, File, Metadata};
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

#[cfg(test)]
mod tests {
    use super::*;

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
