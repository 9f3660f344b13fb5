//! Opening the files a transfer reads and writes, with the checks cp(1)
//! makes, so that mistakes are refused before anything is truncated.

use std::fs::{self, File, Metadata, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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

/// Refuses a copy onto its own source (named directly, through a link, or
/// via its directory): publishing would replace the file with itself, and
/// --in-place would truncate it before reading a byte.
pub fn refuse_same_file(src_path: &Path, src_meta: &Metadata, dst: &Path) -> Result<(), CliError> {
    match fs::metadata(dst) {
        Ok(dst_meta) if (dst_meta.dev(), dst_meta.ino()) == (src_meta.dev(), src_meta.ino()) => {
            Err(CliError::new(
                dst.display().to_string(),
                "invalid-request",
                format!("is the same file as {}", src_path.display()),
            ))
        }
        _ => Ok(()),
    }
}

/// Creates (mode 0644 less the umask, as the client stub's recv_to_file
/// does) or truncates a file to receive into; `readable` (for --verify, which
/// reads the bytes back) opens it read-write.
pub fn create_destination(path: &Path, readable: bool) -> Result<File, CliError> {
    OpenOptions::new()
        .read(readable)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(|err| CliError::io(path.display().to_string(), &err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
    fn copy_onto_itself_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        File::create(&src).unwrap().write_all(b"keep me").unwrap();
        let (_file, meta) = open_source(&src, "").unwrap();
        // Same file named directly, and via its directory.
        for dst in [src.clone(), dir.path().to_path_buf()] {
            let dst = resolve_destination(&src, &dst).unwrap();
            let err = refuse_same_file(&src, &meta, &dst).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{}: is the same file as {}", src.display(), src.display())
            );
        }
        assert!(refuse_same_file(&src, &meta, &dir.path().join("other")).is_ok());
        assert_eq!(fs::read(&src).unwrap(), b"keep me");
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
