//! The listing of a directory on another daemon (`List`, served like a
//! file and checked by CRC-32C, into a memfd), on a connection kept for
//! the files that follow: what a tree pull walks, and what a tree push
//! `--resume` compares with.

use std::fs;
use std::io::{Read, Seek};
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};

use ringxfer_ipc::proto::peer::{decode_listing, ListEntry, RemotePath};
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
) -> Result<(Vec<ListEntry>, TcpStream), CliError> {
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
    let entries = decode_listing(&bytes).map_err(|e| {
        CliError::io(
            format!("the listing of {shown}"),
            &std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        )
    })?;
    Ok((entries, socket))
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
