//! Mode, owner and times handed on to a staged file.

use std::fs::{self, File, FileTimes, Metadata};
use std::io;
use std::os::unix::fs::{fchown, MetadataExt, PermissionsExt};

/// Copies mode, owner (ignoring EPERM) and timestamps from `source` to `file`.
///
/// The owner goes first, because chown(2) clears set-user-ID and
/// set-group-ID bits; where the owner (or group) could not be given, those
/// bits are not copied either, as cp -p does. Access and modification times
/// are copied to the nanosecond.
///
/// # Errors
///
/// The OS error of fchown(2) (other than EPERM), fchmod(2) or futimens(2).
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
///
/// let dir = std::env::temp_dir();
/// let (a, b) = (dir.join(format!("ringxfer-doc-pa-{}", std::process::id())), dir.join(format!("ringxfer-doc-pb-{}", std::process::id())));
/// std::fs::write(&a, "a")?;
/// std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o640))?;
/// let copy = std::fs::File::create(&b)?;
/// ringxfer_ipc::publish::preserve_metadata(&copy, &std::fs::metadata(&a)?)?;
/// assert_eq!(std::fs::metadata(&b)?.permissions().mode() & 0o7777, 0o640);
/// assert_eq!(std::fs::metadata(&b)?.modified()?, std::fs::metadata(&a)?.modified()?);
/// # std::fs::remove_file(&a)?; std::fs::remove_file(&b)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn preserve_metadata(file: &File, source: &Metadata) -> io::Result<()> {
    apply_metadata(file, source, 0o7777).map_err(|(_, e)| e)
}

/// Gives `file` the owner (where permitted) and the mode bits in `keep` of
/// `from`, then its times; the error names the step.
pub(super) fn apply_metadata(
    file: &File,
    from: &Metadata,
    keep: u32,
) -> Result<(), (&'static str, io::Error)> {
    apply_owner_and_mode(file, from, keep)?;
    let times = FileTimes::new()
        .set_accessed(
            from.accessed()
                .map_err(|e| ("reading the source's times for", e))?,
        )
        .set_modified(
            from.modified()
                .map_err(|e| ("reading the source's times for", e))?,
        );
    file.set_times(times)
        .map_err(|e| ("setting the times of", e))
}

/// What a replaced destination hands on to its replacement: owner where
/// permitted and permission bits, not times (the data is new).
pub(super) fn apply_metadata_keep_times(
    file: &File,
    existing: &Metadata,
) -> Result<(), (&'static str, io::Error)> {
    apply_owner_and_mode(file, existing, 0o777)
}

pub(super) fn apply_owner_and_mode(
    file: &File,
    from: &Metadata,
    keep: u32,
) -> Result<(), (&'static str, io::Error)> {
    let ours = file
        .metadata()
        .map_err(|e| ("inspecting the staged file for", e))?;
    let mut mode = from.mode() & keep;
    if (ours.uid(), ours.gid()) != (from.uid(), from.gid()) {
        let (uid_given, gid_given) = match fchown(file, Some(from.uid()), Some(from.gid())) {
            Ok(()) => (true, true),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                // Without CAP_CHOWN a user may still hand the file to a group
                // they belong to.
                match fchown(file, None, Some(from.gid())) {
                    Ok(()) => (ours.uid() == from.uid(), true),
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        (ours.uid() == from.uid(), ours.gid() == from.gid())
                    }
                    Err(e) => return Err(("setting the group of", e)),
                }
            }
            Err(e) => return Err(("setting the owner of", e)),
        };
        // A set-ID bit on a file someone else now owns would grant that
        // someone else's rights: drop it rather than copy it.
        if !uid_given {
            mode &= !libc::S_ISUID;
        }
        if !gid_given {
            mode &= !libc::S_ISGID;
        }
    }
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| ("setting the mode of", e))
}
