//! A descriptor an operation names, together with a share of what keeps it
//! open.
//!
//! The kernel (or a worker thread of the threads back end) uses an
//! operation's descriptors by number until the operation's completion is
//! reaped. A bare number says nothing about who keeps it open: if its owner
//! dropped it meanwhile, the number could already name another file. So an
//! operation never takes a bare number: it takes a `SharedFd`, which can only
//! be made from a borrow of the descriptor's owner and keeps that owner
//! alive (a job's `Endpoints`, a publish's directory, a lent `Pipe`, a
//! session's socket) for as long as the operation holds it.

use std::any::Any;
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;

/// A descriptor number and a share of the value that owns it. Cloning it
/// clones an `Rc` (a count, no allocation), so a chunk's operations may
/// each hold one.
#[derive(Clone)]
pub struct SharedFd {
    fd: RawFd,
    /// Never looked into: the descriptor belongs to the layers above, this
    /// one only must not let it close while an operation names it.
    _owner: Rc<dyn Any>,
}

impl SharedFd {
    /// The descriptor `pick` borrows from `owner`, with a share of `owner`.
    ///
    /// Why this keeps it open: a `BorrowedFd` borrowed from `&T` stays open
    /// while that `T` is alive and not mutated, and the share keeps the `T`
    /// alive; an `Rc`'s value is never mutated while it is shared
    /// (`Rc::get_mut` and `Rc::into_inner` fail while this share exists),
    /// and safe code cannot lend a descriptor out of a `RefCell` or `Mutex`
    /// for longer than the guard of the borrow it makes.
    pub fn of<T: 'static>(owner: &Rc<T>, pick: impl FnOnce(&T) -> BorrowedFd<'_>) -> SharedFd {
        SharedFd {
            fd: pick(owner).as_raw_fd(),
            _owner: Rc::clone(owner) as Rc<dyn Any>,
        }
    }

    /// As `of`, for an owner that may not hold the descriptor (an optional
    /// one): `None` when `pick` finds none.
    pub fn try_of<T: 'static>(
        owner: &Rc<T>,
        pick: impl FnOnce(&T) -> Option<BorrowedFd<'_>>,
    ) -> Option<SharedFd> {
        let fd = pick(owner)?.as_raw_fd();
        Some(SharedFd {
            fd,
            _owner: Rc::clone(owner) as Rc<dyn Any>,
        })
    }

    /// A descriptor that is its own owner (a session's socket, the listener).
    pub fn owned<F: std::os::fd::AsFd + 'static>(owner: &Rc<F>) -> SharedFd {
        SharedFd::of(owner, |f| f.as_fd())
    }

    /// The number, for an operation's submission entry or its blocking
    /// call: valid as long as this share is held, so only while the
    /// operation holding it is in the op table.
    pub fn raw(&self) -> RawFd {
        self.fd
    }

    /// The descriptor, for a call made while this share is held.
    pub fn borrow(&self) -> BorrowedFd<'_> {
        // SAFETY: the share keeps the descriptor's owner alive and its
        // descriptor open (see `of`) for as long as `self`, which the
        // borrow cannot outlive.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl fmt::Debug for SharedFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedFd({})", self.fd)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, OwnedFd};

    use super::*;

    fn devnull() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null opens"))
    }

    #[test]
    fn a_share_keeps_the_owner_and_its_descriptor() {
        let owner = Rc::new((devnull(), devnull()));
        let second = SharedFd::of(&owner, |o| o.1.as_fd());
        assert_eq!(second.raw(), owner.1.as_raw_fd());
        let copy = second.clone();
        assert_eq!(Rc::strong_count(&owner), 3);
        // The owner cannot be taken apart (and its descriptors closed)
        // while an operation holds a share.
        let owner = Rc::into_inner(owner);
        assert!(owner.is_none());
        drop((second, copy));
    }

    #[test]
    fn the_last_share_gone_leaves_the_owner_alone() {
        let owner = Rc::new(devnull());
        let fd = SharedFd::owned(&owner);
        drop(fd);
        assert!(Rc::into_inner(owner).is_some());
    }

    #[test]
    fn an_absent_descriptor_makes_no_share() {
        let owner: Rc<Option<OwnedFd>> = Rc::new(None);
        assert!(SharedFd::try_of(&owner, |o| o.as_ref().map(AsFd::as_fd)).is_none());
        assert_eq!(Rc::strong_count(&owner), 1);
    }
}
