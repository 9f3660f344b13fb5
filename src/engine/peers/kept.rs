//! Conversations with other daemons kept between one client's jobs
//! (`PeerConnection::Keep` and `Continue`): a push or pull that landed leaves its
//! link (socket, TLS session or kernel TLS, the other daemon's limits) here,
//! under its client's session and its socket's inode, and the next job that
//! client hands over with the same socket goes on with it: no TCP or TLS
//! handshake, no `Hello`. A client proves it may continue a conversation by
//! passing the socket itself; it is kept until the client disconnects.

use std::os::fd::{AsRawFd, OwnedFd};

use ringxfer_ipc::proto::PeerConnection;
use ringxfer_ipc::FailureKind;
use tracing::debug;

use super::super::admission::spec::JobSpec;
use super::super::Engine;
use crate::transfer::peer_link::PeerLink;
use crate::transfer::TransferError;

/// Conversations one client may keep: a command pushes a tree over four.
const MAX_KEPT_PER_CLIENT: usize = 16;

/// Where a kept conversation is found: the client's session and the
/// socket's inode (every descriptor of one socket shares it).
pub(in crate::engine) type KeptKey = (usize, u64);

impl Engine {
    /// The key job `spec` of session `k` keeps its conversation under, if
    /// it asked to keep or continue one.
    pub(in crate::engine) fn kept_key(&self, k: usize, spec: &JobSpec) -> Option<KeptKey> {
        let (target, _) = spec.remote.as_ref()?;
        if target.connection == PeerConnection::Close {
            return None;
        }
        let socket = if target.pull {
            &spec.ends.src
        } else {
            &spec.ends.dst
        };
        socket_inode(socket).map(|ino| (k, ino))
    }

    /// The conversation a `Continue` job goes on with; an error in the
    /// client's terms when none was kept for its socket.
    pub(in crate::engine) fn continued_link(
        &mut self,
        spec: &JobSpec,
        key: Option<KeptKey>,
    ) -> Result<Option<PeerLink>, TransferError> {
        let Some((target, _)) = spec.remote.as_ref() else {
            return Ok(None);
        };
        if target.connection != PeerConnection::Continue {
            return Ok(None);
        }
        match key.and_then(|key| self.peers.kept.remove(&key)) {
            Some(link) => Ok(Some(link)),
            None => Err(TransferError::new(
                FailureKind::InvalidRequest,
                "no connection to the other daemon is kept for this socket (its last transfer \
                 failed or did not ask to keep it): connect again",
            )),
        }
    }

    /// Keeps `link` for the next job of the same client on the same
    /// socket, unless the client is gone or keeps as many as it may.
    pub(in crate::engine) fn keep_link(&mut self, key: KeptKey, link: Option<PeerLink>) {
        let Some(link) = link else {
            return;
        };
        let open = self.sessions.slab.get(key.0).is_some_and(|s| !s.closing);
        let held = self.peers.kept.keys().filter(|(s, _)| *s == key.0).count();
        if !open || held >= MAX_KEPT_PER_CLIENT {
            return self.let_go_of_link(link);
        }
        debug!(
            session = key.0,
            "connection to another daemon kept for the next file"
        );
        if let Some(old) = self.peers.kept.insert(key, link) {
            self.let_go_of_link(old);
        }
    }

    /// Ends the conversations session `k` kept (it is closing).
    pub(in crate::engine) fn drop_kept(&mut self, k: usize) {
        let keys: Vec<KeptKey> = self
            .peers
            .kept
            .keys()
            .filter(|(s, _)| *s == k)
            .copied()
            .collect();
        for key in keys {
            if let Some(link) = self.peers.kept.remove(&key) {
                self.let_go_of_link(link);
            }
        }
    }

    /// Closes a kept link's socket off the loop thread; the other daemon
    /// sees the connection end between files, which loses nothing.
    fn let_go_of_link(&mut self, link: PeerLink) {
        self.closing.doomed.extend(link.into_sockets());
    }
}

/// The inode of the socket `fd` (fstat of a socket does not block).
fn socket_inode(fd: &OwnedFd) -> Option<u64> {
    // SAFETY: fstat writes a stat into `st`, plain C data for which zeroed
    // memory is valid; the descriptor is open for the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above: `st` is a valid, writable stat.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    (rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some(st.st_ino)
}
