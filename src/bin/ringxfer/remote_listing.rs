//! The listing of a directory on another daemon (`List`, served like a
//! file and checked by CRC-32C, into a memfd), on a connection kept for
//! the files that follow: what a tree pull walks, and what a tree push
//! `--resume` compares with.

use std::fs;
use std::io::{Read, Seek};
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};

use ringxfer_ipc::proto::peer::{decode_listing, Listing, RemotePath, Timestamp};
use ringxfer_ipc::proto::PeerConnection;
use ringxfer_ipc::TransferOptions;

use crate::engine_handle::EngineHandle;
use crate::error::CliError;
use crate::remote::Remote;

/// The listing of `path` on the other daemon, and the connection it came
/// on, kept for the files.
pub fn fetch_listing(
    engine: &EngineHandle,
    remote: &Remote,
    path: &RemotePath,
) -> Result<(Listing, TcpStream), CliError> {
    let shown = format!("{}:{}", remote.address, path.as_str());
    let mut listing = memfd().map_err(|e| CliError::io("memfd_create".to_string(), &e))?;
    let socket = TcpStream::connect(&remote.address)
        .map_err(|err| CliError::io(format!("connect to {}", remote.address), &err))?;
    let what = format!("list {shown}");
    let opts = TransferOptions {
        tag: ringxfer_ipc::fit_tag(&what),
        connection: PeerConnection::Keep,
        ..TransferOptions::default()
    };
    let handle = engine
        .client()
        .submit_list(&socket, &listing, path, &opts)
        .map_err(|err| CliError::client(what.clone(), &err))?;
    handle.wait().map_err(|err| CliError::job(what, &err))?;
    let mut bytes = Vec::new();
    listing
        .rewind()
        .and_then(|()| listing.read_to_end(&mut bytes))
        .map_err(|e| CliError::io(format!("read the listing of {shown}"), &e))?;
    let bad = |why: String| {
        CliError::io(
            format!("the listing of {shown}"),
            &std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        )
    };
    let listing = decode_listing(&bytes).map_err(|e| bad(e.to_string()))?;
    // Every name must lead beneath the directory listed: the other daemon
    // is trusted with file data, not with paths here.
    let beneath = |e: &&ringxfer_ipc::proto::peer::ListEntry| RemotePath::new(&e.path).is_err();
    if let Some(e) = listing.entries.iter().find(beneath) {
        return Err(bad(format!(
            "it names {:?}, which is not a path beneath the directory",
            e.path
        )));
    }
    Ok((listing, socket))
}

/// A file in memory, for the listing.
fn memfd() -> std::io::Result<fs::File> {
    // SAFETY: the name is a NUL-terminated literal; memfd_create takes no
    // other pointer.
    let fd = unsafe { libc::memfd_create(c"ringxfer-listing".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// rsync's quick check: `meta` (a file here) has `size` bytes and was
/// modified at `mtime` (a file there). To the nanosecond, as both sides
/// set a copy's times from its source; to the second where either side
/// keeps no nanoseconds (FAT, some NFS servers), or nothing would ever
/// match there.
pub fn same_file(meta: &fs::Metadata, size: u64, mtime: Timestamp) -> bool {
    use std::os::unix::fs::MetadataExt;
    let nanos = u32::try_from(meta.mtime_nsec()).unwrap_or(u32::MAX);
    let coarse = nanos == 0 || mtime.nanos == 0;
    meta.len() == size && meta.mtime() == mtime.secs && (coarse || nanos == mtime.nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn file_at(dir: &std::path::Path, secs: u64, nanos: u32) -> fs::Metadata {
        let path = dir.join(format!("f{secs}.{nanos}"));
        let f = fs::File::create(&path).expect("create");
        f.set_len(10).expect("size");
        f.set_modified(UNIX_EPOCH + Duration::new(secs, nanos))
            .expect("mtime");
        fs::metadata(&path).expect("stat")
    }

    #[test]
    fn the_quick_check_wants_size_and_time_to_the_precision_both_keep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = |secs, nanos| Timestamp { secs, nanos };
        let fine = file_at(dir.path(), 1_700_000_000, 123_456_789);
        assert!(same_file(&fine, 10, t(1_700_000_000, 123_456_789)));
        assert!(!same_file(&fine, 10, t(1_700_000_000, 123_456_788)));
        assert!(!same_file(&fine, 11, t(1_700_000_000, 123_456_789)));
        assert!(!same_file(&fine, 10, t(1_700_000_001, 123_456_789)));
        // A side that keeps whole seconds only compares seconds.
        assert!(same_file(&fine, 10, t(1_700_000_000, 0)));
        let coarse = file_at(dir.path(), 1_700_000_000, 0);
        assert!(same_file(&coarse, 10, t(1_700_000_000, 999)));
        assert!(!same_file(&coarse, 10, t(1_699_999_999, 999)));
    }
}
