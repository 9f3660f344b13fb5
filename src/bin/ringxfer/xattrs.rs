//! Extended attributes, POSIX ACLs among them (`system.posix_acl_access`),
//! carried from a source file to its copy by --preserve and -a.
//!
//! They are read from the open source when its copy is staged, and written
//! to the staged file once its data is in, just before it takes its name:
//! writing data clears `security.capability`, so the attributes go last.
//! What the copy cannot be given (a `trusted.` name without root, a
//! `security.` name the file system or policy refuses, a file system
//! without xattrs) is reported per name and path; the copy itself stands.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One file's extended attributes: names and values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Xattrs(Vec<(CString, Vec<u8>)>);

/// Largest list or value asked for: the kernel's own limit (XATTR_SIZE_MAX).
const MAX_SIZE: usize = 64 * 1024;

impl Xattrs {
    /// The attributes of `file`; none on a file system without them.
    pub fn read(file: &File) -> io::Result<Xattrs> {
        Xattrs::read_from(On::Fd(file.as_raw_fd()))
    }

    /// The attributes of the name `path` itself, a symbolic link or a
    /// special file, which cannot be opened to ask.
    pub fn read_link(path: &Path) -> io::Result<Xattrs> {
        Xattrs::read_from(On::Path(&c_path(path)?))
    }

    fn read_from(on: On<'_>) -> io::Result<Xattrs> {
        // Most files have none: one call with no buffer says so.
        let names = match sized(|buf: &mut [u8]| on.list(buf)) {
            Ok(names) => names,
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Xattrs::default()),
            Err(e) => return Err(e),
        };
        let mut all = Vec::new();
        for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let Ok(name) = CString::new(name) else {
                continue;
            };
            match sized(|buf: &mut [u8]| on.get(&name, buf)) {
                Ok(v) => all.push((name, v)),
                // Removed since it was listed.
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Xattrs(all))
    }

    /// The attributes of a source being copied with --preserve; none,
    /// said on stderr, where they cannot be read.
    pub fn of_source(file: &File, src: &Path) -> Xattrs {
        Xattrs::read(file).unwrap_or_else(|e| {
            crate::report::note(&format!(
                "cannot read the extended attributes of '{}': {e}",
                src.display()
            ));
            Xattrs::default()
        })
    }

    /// Sets each attribute on `file`; the names that could not be set, with why.
    /// Each refusal is also said on stderr, naming `shown` (the copy's path).
    pub fn apply_and_report(&self, file: &File, shown: &Path) {
        for (name, e) in self.apply(file) {
            crate::report::note(&format!(
                "cannot preserve extended attribute '{name}' of '{}': {e}",
                shown.display()
            ));
        }
    }

    /// Sets each attribute on `file`; the names that could not be set, with why.
    pub fn apply(&self, file: &File) -> Vec<(String, io::Error)> {
        self.apply_on(On::Fd(file.as_raw_fd()))
    }

    /// Sets each attribute on the name `path` itself (a link or special
    /// file), each refusal said on stderr naming `shown`.
    pub fn apply_to_link(&self, path: &Path, shown: &Path) {
        let refused = match c_path(path) {
            Ok(c) => self.apply_on(On::Path(&c)),
            Err(e) => vec![(String::new(), e)],
        };
        for (name, e) in refused {
            crate::report::note(&format!(
                "cannot preserve extended attribute '{name}' of '{}': {e}",
                shown.display()
            ));
        }
    }

    fn apply_on(&self, on: On<'_>) -> Vec<(String, io::Error)> {
        let mut refused = Vec::new();
        for (name, v) in &self.0 {
            if on.set(name, v) != 0 {
                refused.push((
                    name.to_string_lossy().into_owned(),
                    io::Error::last_os_error(),
                ));
            }
        }
        refused
    }
}

/// What the attributes are of: an open file, or a name not followed.
#[derive(Clone, Copy)]
enum On<'a> {
    Fd(RawFd),
    Path(&'a CStr),
}

impl On<'_> {
    fn list(self, buf: &mut [u8]) -> isize {
        match self {
            // SAFETY: `buf` is valid for writes of its length (an empty
            // one asks only the size); the descriptor is open for the call.
            On::Fd(fd) => unsafe { libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()) },
            // SAFETY: as above, with a NUL-terminated path.
            On::Path(p) => unsafe {
                libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            },
        }
    }

    fn get(self, name: &CStr, buf: &mut [u8]) -> isize {
        let (n, b, len) = (name.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        match self {
            // SAFETY: a NUL-terminated name, a buffer of the length given
            // (or an empty one, to ask the size); the descriptor is open.
            On::Fd(fd) => unsafe { libc::fgetxattr(fd, n, b, len) },
            // SAFETY: as above, with a NUL-terminated path.
            On::Path(p) => unsafe { libc::lgetxattr(p.as_ptr(), n, b, len) },
        }
    }

    fn set(self, name: &CStr, v: &[u8]) -> i32 {
        let (n, b, len) = (name.as_ptr(), v.as_ptr().cast(), v.len());
        match self {
            // SAFETY: `name` is NUL-terminated and `v` valid for reads of
            // its length; both outlive the call, as does the descriptor.
            On::Fd(fd) => unsafe { libc::fsetxattr(fd, n, b, len, 0) },
            // SAFETY: as above, with a NUL-terminated path.
            On::Path(p) => unsafe { libc::lsetxattr(p.as_ptr(), n, b, len, 0) },
        }
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// What a list or get call returns: asked its size first, then read into
/// a buffer of that size (at most the kernel's limit, which a size that
/// grew in between still fits).
fn sized(mut call: impl FnMut(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
    let size = call(&mut []);
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; (size as usize).max(1)];
    let mut n = call(&mut buf);
    if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) {
        buf = vec![0u8; MAX_SIZE];
        n = call(&mut buf);
    }
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_attributes_travel_and_refusals_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let src = File::create(&a).unwrap();
        let name = CString::new("user.ringxfer.test").unwrap();
        // SAFETY: NUL-terminated name, a 5-byte value; both outlive the call.
        let rc = unsafe {
            libc::fsetxattr(
                src.as_raw_fd(),
                name.as_ptr(),
                b"value".as_ptr().cast(),
                5,
                0,
            )
        };
        if rc != 0 {
            // The test directory's file system has no user xattrs (tmpfs
            // before 6.6): nothing here to test.
            assert_eq!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::ENOTSUP)
            );
            return;
        }
        let read = Xattrs::read(&src).unwrap();
        assert!(!read.0.is_empty());
        let dst = File::create(&b).unwrap();
        assert!(read.apply(&dst).is_empty());
        let copied = Xattrs::read(&dst).unwrap();
        assert!(copied
            .0
            .iter()
            .any(|(n, v)| n.as_c_str() == name.as_c_str() && v == b"value"));

        let bad = Xattrs(vec![(
            CString::new("nosuchnamespace.x").unwrap(),
            b"v".to_vec(),
        )]);
        let refused = bad.apply(&dst);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, "nosuchnamespace.x");
    }
}
