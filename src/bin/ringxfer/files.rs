//! Opening the files a transfer reads and writes, with the checks cp(1)
//! makes, so that mistakes are refused before anything is truncated.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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

/// Opens the destination of a copy (resolved as [`resolve_destination`]) and
/// empties it, refusing SRC itself.
pub fn open_copy_destination(
    src_path: &Path,
    src_meta: &Metadata,
    dst: &Path,
) -> Result<(File, PathBuf), CliError> {
    let dst_path = resolve_destination(src_path, dst)?;
    let io_err = |err: io::Error| CliError::io(dst_path.display().to_string(), &err);
    // No O_TRUNC: it would empty the source, before any check, when DST is
    // SRC under another name. Compare the open files instead (no race with
    // renames) and truncate only afterwards.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        // Like cp without -p: a new file gets the source's permission bits,
        // less the umask; an existing file keeps its own.
        .mode(src_meta.permissions().mode() & 0o777)
        .open(&dst_path)
        .map_err(io_err)?;
    let dst_meta = file.metadata().map_err(io_err)?;
    if (dst_meta.dev(), dst_meta.ino()) == (src_meta.dev(), src_meta.ino()) {
        return Err(CliError::new(
            dst_path.display().to_string(),
            "invalid-request",
            format!("is the same file as {}", src_path.display()),
        ));
    }
    // Devices and FIFOs (`copy x /dev/null`) have nothing to truncate and
    // would reject ftruncate(2). An empty file is left alone: on ext4 a
    // truncate to zero makes the last close start writeback (auto_da_alloc).
    if dst_meta.is_file() && dst_meta.len() > 0 {
        file.set_len(0).map_err(io_err)?;
    }
    Ok((file, dst_path))
}

/// Creates (mode 0644 less the umask, as the client stub's recv_to_file
/// does) or truncates a file to receive into.
pub fn create_destination(path: &Path) -> Result<File, CliError> {
    OpenOptions::new()
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
    fn copy_onto_itself_is_refused_before_truncating() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        File::create(&src).unwrap().write_all(b"keep me").unwrap();
        let (_file, meta) = open_source(&src, "").unwrap();
        // Same file named directly, and via its directory.
        for dst in [src.clone(), dir.path().to_path_buf()] {
            let err = open_copy_destination(&src, &meta, &dst).err().unwrap();
            assert_eq!(
                err.to_string(),
                format!("{}: is the same file as {}", src.display(), src.display())
            );
        }
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

    #[test]
    fn copy_into_a_directory_creates_the_named_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        File::create(&src).unwrap();
        let (_file, meta) = open_source(&src, "").unwrap();
        let into = dir.path().join("into");
        fs::create_dir(&into).unwrap();
        let (_dst, dst_path) = open_copy_destination(&src, &meta, &into).unwrap();
        assert_eq!(dst_path, into.join("src"));
        assert!(dst_path.is_file());
    }
}
