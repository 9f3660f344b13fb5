//! A large file pushed as several stripes at once, each over a connection
//! of its own (`Put { stripe }`, bbcp's parallel streams): one set per
//! name being received, which every stripe of the file joins.
//!
//! Every stripe writes its range into the same hidden part (incoming.rs
//! opens it without truncating). A stripe whose bytes landed and checked
//! waits (`Step::Landed`) without an answer; the last stripe of the set
//! publishes the file (cut to its size, mode and times, rename), then
//! every stripe of the set gets its `Done`. So a sender that has `Done`
//! for every stripe holds the file as published, and none before.
//!
//! A stripe failing fails the set: the stripes waiting get `Failed` at
//! once, those still receiving at their `End`, and the last stripe to go
//! removes the part, or keeps it for a resume when every failure was a
//! lost connection and a whole block had landed. Once the last stripe
//! publishes, nothing fails the set any more (a cancel then comes too
//! late, as for a single file). The stripes must cover the file exactly:
//! each range is kept, overlaps are refused, and a set whose ranges do not
//! add up to its size is not published. A set no stripe is connected to
//! any more is forgotten, and its name is free again. A stripe that
//! landed waits for the others at most `BETWEEN_FILES` x frame_timeout
//! (a sender that never sends them would otherwise hold the name), then
//! fails the set as a lost connection would.

use std::collections::HashMap;
use std::time::Instant;

use ringxfer_ipc::proto::peer::{Put, Stripe};
use ringxfer_ipc::proto::FailureKind;

use super::conn::WRITE_BUFFER;
use super::incoming::Step;
use super::BETWEEN_FILES;
use crate::engine::Engine;

/// A name being received: (export, remote path).
pub(super) type NameKey = (usize, String);

/// The stripes of one file being received.
pub(super) struct StripeSet {
    set: u64,
    size: u64,
    /// The pinned peer that pushes it (None in plaintext): only it may
    /// join.
    peer: Option<String>,
    /// Per index: the range (offset, length) of the stripe that joined.
    taken: Vec<Option<(u64, u64)>>,
    /// Stripes joined and not yet gone (receiving, or landed and waiting).
    live: usize,
    /// Connections whose stripe landed and waits for the publish.
    waiting: Vec<usize>,
    landed: u32,
    /// Why the set failed, if a stripe failed otherwise than by a lost
    /// connection: the file will not be published.
    failed: Option<(FailureKind, String)>,
    /// The last stripe landed and publishes (on this connection): only
    /// its own failure fails the set now.
    publishing: bool,
    publisher: Option<usize>,
    /// A stripe was lost: the file will not be published either, but the
    /// part may be kept for a resume (`keep`: a whole block landed).
    lost: bool,
    keep: bool,
}

/// What a stripe's landing leads to.
pub(super) enum Landing {
    /// Others are still to land: wait.
    Wait,
    /// The last one: publish the file.
    Publish,
    /// The set failed meanwhile: fail this stripe too, so.
    Fail(FailureKind, String),
}

/// What becomes of the part when a stripe leaves after failing.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Leaving {
    /// Other stripes still use it.
    Others,
    /// The last one: keep it for a resume.
    Keep,
    /// The last one: remove it.
    Remove,
}

impl StripeSet {
    fn new(stripe: &Stripe, size: u64, peer: Option<String>) -> StripeSet {
        let mut taken = vec![None; stripe.id.count as usize];
        taken[stripe.id.index as usize] = Some((stripe.offset, stripe.len));
        StripeSet {
            set: stripe.id.set,
            size,
            peer,
            taken,
            live: 1,
            waiting: Vec::new(),
            landed: 0,
            failed: None,
            publishing: false,
            publisher: None,
            lost: false,
            keep: false,
        }
    }

    /// Another stripe of the same file joins, if it is one.
    fn join(&mut self, stripe: &Stripe, size: u64, peer: &Option<String>) -> Result<(), String> {
        let same = self.set == stripe.id.set
            && self.taken.len() == stripe.id.count as usize
            && self.size == size
            && &self.peer == peer;
        if !same {
            return Err("another transfer is writing it".into());
        }
        if self.failed.is_some() || self.lost || self.publishing {
            return Err("another stripe of this file failed".into());
        }
        let index = stripe.id.index as usize;
        if self.taken[index].is_some() {
            return Err(format!("stripe {index} of this file came twice"));
        }
        let (start, end) = (stripe.offset, stripe.offset + stripe.len);
        let overlaps = self
            .taken
            .iter()
            .flatten()
            .any(|&(o, l)| start < o + l && o < end);
        if overlaps && stripe.len > 0 {
            return Err(format!(
                "stripe {index} ({} bytes at {start}) overlaps another of this file",
                stripe.len
            ));
        }
        self.taken[index] = Some((stripe.offset, stripe.len));
        self.live += 1;
        Ok(())
    }

    /// Bytes the ranges of the stripes that joined cover (they do not
    /// overlap).
    fn covered(&self) -> u64 {
        self.taken.iter().flatten().map(|&(_, len)| len).sum()
    }
}

impl Engine {
    /// Stripes that landed and waited for the rest of their set longer
    /// than `BETWEEN_FILES` x frame_timeout fail it (not once it
    /// publishes).
    pub(super) fn fail_overdue_stripes(&mut self, now: Instant) {
        let limit = self.config.frame_timeout * BETWEEN_FILES;
        let overdue: Vec<usize> = self
            .peers
            .conns
            .iter()
            .filter(|(_, c)| !c.closing)
            .filter(|(_, c)| {
                c.incoming.as_ref().is_some_and(|i| {
                    i.step == Step::Landed
                        && i.landed_at.is_some_and(|t| now.duration_since(t) > limit)
                })
            })
            .map(|(k, _)| k)
            .collect();
        for k in overdue {
            let Some(inc) = self.peers.incoming(k).filter(|i| !self.incoming_late(i)) else {
                continue;
            };
            let (index, count) = inc.stripe.map_or((0, 0), |s| (s.id.index, s.id.count));
            let why = format!(
                "{}: stripe {} of {count} landed, but the others did not come within {limit:?} \
                 ({BETWEEN_FILES} x --frame-timeout)",
                inc.shown,
                index + 1
            );
            self.fail_incoming(k, (FailureKind::PeerGone, why));
        }
    }

    /// A `Put` of a stripe: it must fit its file, and joins the set being
    /// received under `name`, or begins one if the name is free.
    pub(super) fn join_stripe(
        &mut self,
        k: usize,
        name: &NameKey,
        put: &Put,
    ) -> Result<(), (FailureKind, String)> {
        let Some(stripe) = put.stripe else {
            return Ok(());
        };
        let shown = put.path.as_str();
        if put.resume || !stripe.fits(put.meta.size) {
            let why = format!(
                "{shown}: stripe {} of {} ({} bytes at {}) does not fit a file of {} bytes, \
                 or asks to resume",
                stripe.id.index, stripe.id.count, stripe.len, stripe.offset, put.meta.size
            );
            return Err((FailureKind::InvalidRequest, why));
        }
        let peer = self.peers.conns.get(k).and_then(|c| c.peer.clone());
        let busy = |why: String| (FailureKind::LimitExceeded, format!("{shown}: {why}"));
        match self.peers.stripes.get_mut(name) {
            Some(set) => set.join(&stripe, put.meta.size, &peer).map_err(busy),
            None if self.peers.busy.contains(name) => {
                Err(busy("another transfer is writing it".into()))
            }
            None => {
                let set = StripeSet::new(&stripe, put.meta.size, peer);
                self.peers.stripes.insert(name.clone(), set);
                Ok(())
            }
        }
    }

    /// The stripe received on `k` landed whole and checked.
    pub(super) fn stripe_landed(&mut self, k: usize, name: &NameKey) -> Landing {
        let Some(set) = self.peers.stripes.get_mut(name) else {
            return Landing::Fail(FailureKind::Io, "its set of stripes is gone".into());
        };
        if let Some((kind, why)) = &set.failed {
            return Landing::Fail(*kind, format!("another stripe of this file failed: {why}"));
        }
        if set.lost {
            let why = "another stripe of this file lost its connection".into();
            return Landing::Fail(FailureKind::PeerGone, why);
        }
        set.landed += 1;
        if (set.landed as usize) < set.taken.len() {
            set.waiting.push(k);
            return Landing::Wait;
        }
        if set.covered() != set.size {
            let why = format!(
                "its {} stripes cover {} of its {} bytes",
                set.taken.len(),
                set.covered(),
                set.size
            );
            return Landing::Fail(FailureKind::InvalidRequest, why);
        }
        set.publishing = true;
        set.publisher = Some(k);
        Landing::Publish
    }

    /// A stripe of `name` failed with `kind` (`why`): the set fails, and
    /// the stripes waiting for the publish are failed at once.
    pub(super) fn stripe_failed(&mut self, k: usize, name: &NameKey, kind: FailureKind, why: &str) {
        let Some(set) = self.peers.stripes.get_mut(name) else {
            return;
        };
        set.waiting.retain(|&w| w != k);
        if set.publishing && set.publisher != Some(k) {
            // Too late: the file is being published, and its other
            // stripes get their Done.
            return;
        }
        if kind == FailureKind::PeerGone {
            set.lost = true;
        } else if set.failed.is_none() {
            set.failed = Some((kind, why.to_string()));
        }
        let waiting = std::mem::take(&mut set.waiting);
        for w in waiting {
            let why = format!("another stripe of this file failed: {why}");
            self.fail_incoming(w, (kind, why));
        }
    }

    /// Whether the set of `name` is being published (a cancel is late).
    pub(super) fn stripes_publishing(&self, name: &NameKey) -> bool {
        self.peers.stripes.get(name).is_some_and(|s| s.publishing)
    }

    /// A stripe that `wrote` bytes from its start leaves after failing:
    /// whether the part stays for the others, for a resume, or goes.
    pub(super) fn stripe_leaving(&mut self, name: &NameKey, wrote: u64) -> Leaving {
        let Some(set) = self.peers.stripes.get_mut(name) else {
            return Leaving::Remove;
        };
        set.keep |= wrote >= WRITE_BUFFER as u64;
        if set.live > 1 {
            return Leaving::Others;
        }
        if set.failed.is_none() && set.keep {
            Leaving::Keep
        } else {
            Leaving::Remove
        }
    }

    /// A stripe is gone (published, or failed and answered): the set is
    /// forgotten with its last one, and the name is free again.
    pub(super) fn stripe_gone(&mut self, name: &NameKey) {
        let Some(set) = self.peers.stripes.get_mut(name) else {
            return;
        };
        set.live = set.live.saturating_sub(1);
        if set.live == 0 {
            self.peers.stripes.remove(name);
            self.peers.busy.remove(name);
        }
    }

    /// The file is published: every stripe waiting gets its `Done`.
    pub(super) fn stripes_published(&mut self, name: &NameKey) {
        let Some(set) = self.peers.stripes.get_mut(name) else {
            return;
        };
        for w in std::mem::take(&mut set.waiting) {
            let Some(inc) = self.peers.incoming_mut(w) else {
                continue;
            };
            if inc.step != Step::Landed {
                continue;
            }
            inc.step = Step::Publishing;
            self.incoming_done(w);
        }
    }
}

/// The sets being received.
pub(super) type StripeSets = HashMap<NameKey, StripeSet>;

#[cfg(test)]
mod tests {
    use super::*;
    use ringxfer_ipc::proto::peer::StripeId;

    fn stripe(index: u32) -> Stripe {
        Stripe {
            id: StripeId {
                set: 7,
                index,
                count: 3,
            },
            offset: u64::from(index) << 20,
            len: 1 << 20,
        }
    }

    #[test]
    fn only_the_same_files_other_stripes_join_once_each() {
        let mut set = StripeSet::new(&stripe(0), 3 << 20, Some("b".into()));
        let overlapping = Stripe {
            offset: (1 << 20) - 1,
            ..stripe(1)
        };
        assert!(set.join(&overlapping, 3 << 20, &Some("b".into())).is_err());
        assert!(set.join(&stripe(1), 3 << 20, &Some("b".into())).is_ok());
        assert!(set.join(&stripe(1), 3 << 20, &Some("b".into())).is_err());
        assert!(set.join(&stripe(2), 3 << 20, &Some("c".into())).is_err());
        assert!(set.join(&stripe(2), 4 << 20, &Some("b".into())).is_err());
        let other_set = Stripe {
            id: StripeId {
                set: 8,
                ..stripe(2).id
            },
            ..stripe(2)
        };
        assert!(set.join(&other_set, 3 << 20, &Some("b".into())).is_err());
        assert!(set.join(&stripe(2), 3 << 20, &Some("b".into())).is_ok());
        assert_eq!(set.live, 3);
        assert_eq!(set.covered(), 3 << 20);
        set.lost = true;
        let mut late = StripeSet::new(&stripe(0), 3 << 20, None);
        late.failed = Some((FailureKind::Io, "x".into()));
        assert!(late.join(&stripe(1), 3 << 20, &None).is_err());
    }
}
