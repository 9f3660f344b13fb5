//! The listening socket: one accept in flight at a time through the ring,
//! each accepted connection handed to the sessions, and a short back-off
//! when the daemon runs out of descriptors. Draining closes it, so that new
//! clients are refused at once.

use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use tracing::{error, warn};

use super::{loopback, Engine};
use crate::io::fd::SharedFd;
use crate::io::op::AnyOp;
use crate::io::ops::{Op, Owner};

/// How long the listener waits before accepting again after running out of
/// descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listening socket, when the engine serves one.
#[derive(Default)]
pub(super) struct Listener {
    /// Shared with the accept in flight, if any; let go of (closed) only
    /// from the accept's completion or when the engine is dropped after
    /// its loop ended, so never under an accept.
    pub fd: Option<Rc<OwnedFd>>,
    /// Its address, to refuse job descriptors that connect to it.
    pub address: Option<loopback::UnixAddress>,
    /// The accept in flight.
    pub op: Option<u64>,
}

impl Engine {
    /// Serves connections accepted on `listener`.
    pub fn set_listener(&mut self, listener: OwnedFd) {
        self.listener.address = loopback::listener_address(&listener);
        self.listener.fd = Some(Rc::new(listener));
    }

    /// A completion of the accept, or of its back-off timer.
    pub(super) fn on_listener_op(&mut self, op: Op, result: i32) {
        match (op.owner, op.op) {
            (Owner::Listener, AnyOp::Timeout(_)) => self.arm_listener(),
            (Owner::Listener, _) => self.on_accept(result),
            (owner, _) => error!(?owner, tag = op.tag, "completion of an unexpected kind"),
        }
    }

    pub(super) fn arm_listener(&mut self) {
        if self.life.stopping || self.life.draining {
            return;
        }
        let Some(fd) = self.listener.fd.as_ref().map(SharedFd::owned) else {
            return;
        };
        match self.io.accept(fd) {
            Ok(ud) => self.listener.op = Some(ud),
            Err(e) => error!("cannot queue accept: {e}"),
        }
    }

    fn on_accept(&mut self, result: i32) {
        self.listener.op = None;
        if result >= 0 {
            // SAFETY: a successful accept returns a new descriptor that only
            // this completion knows about.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            if self.life.stopping || self.life.draining {
                drop(fd);
            } else {
                self.open_session(fd);
            }
        } else if -result != libc::ECANCELED {
            let err = std::io::Error::from_raw_os_error(-result);
            warn!("accept on the listening socket failed: {err}");
            if !self.life.stopping
                && matches!(
                    -result,
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
                )
            {
                // Out of descriptors or memory: accepting again at once would
                // fail again at once. Wait for jobs to end and give some back.
                match self.io.timeout(Owner::Listener, ACCEPT_BACKOFF) {
                    Ok(_) => return,
                    Err(e) => error!("cannot queue the accept back-off timer: {e}"),
                }
            }
        }
        if self.life.stopping || self.life.draining {
            // Close it now, so that new clients are refused at once instead
            // of waiting in the backlog of a daemon that will not answer.
            // (A socket systemd passed stays open in systemd, which queues
            // new clients for the next start.)
            self.listener.fd = None;
            return;
        }
        self.arm_listener();
    }
}
