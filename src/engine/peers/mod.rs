//! Host to host, the receiving side: other daemons connect to the TCP
//! listener (`listen_tcp`) and push files into the exports, each written
//! under a hidden name beneath its export and renamed over its name only
//! once its size and CRC-32C match what the sender announced
//! (incoming.rs). The wire is `ringxfer_ipc::proto::peer`.
//!
//! Everything goes through the ring, as for local clients: accept, reads
//! and sends on the sockets, and the file system work (openat2 with
//! RESOLVE_BENEATH, writes, fsync, rename, unlink) under the export's
//! user's personality. Each connection carries one file at a time (a
//! large one may come as stripes over several: stripes.rs), under TLS
//! (user space, or the kernel's once handed over), or in plaintext on
//! loopback (`insecure_plaintext`).

mod conn;
mod dirs;
mod in_flight;
mod incoming;
pub(super) mod kept;
mod lease;
mod liveness;
mod names;
mod resume;
mod serving;
mod serving_resume;
mod stripes;

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ringxfer_ipc::proto::peer::{encode, PeerLimits, PeerMessage, Piece, PEER_PROTOCOL_VERSION};
use slab::Slab;
use tracing::{error, info, warn};

use super::admission::spec::JobSpec;
use super::Engine;
use crate::io::fd::SharedFd;
use crate::io::op::{self, AnyOp};
use crate::io::ops::{Op, Owner};
use crate::privileges::Identity;
use crate::tls::{HandedOver, Session, TlsSetup};
use crate::transfer::peer_link::PeerLink;
use crate::transfer::peer_socket::tune_peer_socket;
use crate::transfer::redial::Redial;
use crate::transfer::TransferError;
use conn::{Outgoing, PeerConn, RX_BUFFER};
use ringxfer_ipc::FailureKind;

/// Connections from other daemons open at once; past it, new ones are
/// closed at once (and logged).
const MAX_PEER_CONNECTIONS: usize = 64;
/// Connections of one peer (a pinned name under TLS, an address in
/// plaintext) open at once, so that one peer cannot take them all. Each
/// holds at most 3 MiB of write buffers and a 256 KiB receive, so a peer
/// has at most about 52 MiB in flight here.
const MAX_CONNECTIONS_PER_PEER: usize = 16;

/// What each operation of a connection is, in its tag.
mod tag {
    pub(crate) const RECV: u32 = 0;
    pub(crate) const SEND: u32 = 1;
    pub(crate) const OPEN_PARENT: u32 = 2;
    pub(crate) const OPEN_PART: u32 = 3;
    pub(crate) const WRITE: u32 = 4;
    pub(crate) const SET_META: u32 = 5;
    pub(crate) const SYNC: u32 = 6;
    pub(crate) const RENAME: u32 = 7;
    pub(crate) const SYNC_DIR: u32 = 8;
    pub(crate) const UNLINK: u32 = 9;
    pub(crate) const MKDIR: u32 = 10;
    pub(crate) const OPEN_DIR: u32 = 11;
    pub(crate) const OPEN_SRC: u32 = 12;
    pub(crate) const STAT_SRC: u32 = 13;
    pub(crate) const READ_SRC: u32 = 14;
    pub(crate) const READ_PART: u32 = 15;
    pub(crate) const TRUNCATE: u32 = 16;
    pub(crate) const LIST_DIR: u32 = 17;
    pub(crate) const CHECK_SRC: u32 = 18;
}

/// A directory other daemons may write into, opened at start-up.
pub struct Export {
    /// The first component of remote paths that lead here.
    pub name: String,
    /// Where it is, for the log.
    pub path: PathBuf,
    /// The directory (read-only: it is fsynced), which every name is
    /// resolved beneath.
    pub dir: OwnedFd,
    /// Whose rights its files are written with.
    pub identity: Identity,
    /// The `[[peer]]` names that may write here; None: every pinned peer
    /// (and, on a plaintext listener, anyone on loopback).
    pub peers: Option<Vec<String>>,
}

/// What the engine needs to talk to other daemons.
pub struct PeerSetup {
    /// The TCP listening socket, if other daemons may connect.
    pub listener: Option<OwnedFd>,
    /// The listener takes plaintext (insecure_plaintext), not TLS.
    pub plaintext: bool,
    pub exports: Vec<Export>,
    /// This daemon's TLS identity and the peers it trusts: what the
    /// listener (unless plaintext) and every push speak.
    pub tls: Option<Arc<TlsSetup>>,
    /// `peer_bytes_in_flight`.
    pub bytes_in_flight: u64,
}

/// `peer_bytes_in_flight` unless set: 16 connections' worth of write
/// buffers, which is what a peer could hold before there was a limit.
pub const DEFAULT_PEER_BYTES_IN_FLIGHT: u64 = 48 << 20;

/// An export as the engine keeps it.
struct ExportDir {
    name: String,
    path: PathBuf,
    dir: Rc<OwnedFd>,
    identity: Identity,
    peers: Option<Vec<String>>,
}

/// How many `frame_timeout`s a connection may rest between two files (a
/// connection the other daemon keeps for its next file: kept.rs) before
/// it is closed.
const BETWEEN_FILES: u32 = 10;

/// The TCP listener, the exports and the connections of other daemons.
#[derive(Default)]
pub(super) struct Peers {
    listener: Option<Rc<OwnedFd>>,
    accept: Option<u64>,
    exports: Vec<ExportDir>,
    conns: Slab<PeerConn>,
    /// (export, path) of the files being received: a second transfer to a
    /// name already being written is refused.
    busy: HashSet<(usize, String)>,
    /// The stripes of files pushed over several connections at once,
    /// by name (stripes.rs).
    stripes: stripes::StripeSets,
    limits: PeerLimits,
    /// Bytes one other daemon may have received here and not yet written
    /// (`peer_bytes_in_flight`), and the most any had (in_flight.rs).
    bytes_in_flight: u64,
    pub(super) bytes_in_flight_max: u64,
    /// The listener takes plaintext.
    plaintext: bool,
    pub(super) tls: Option<Arc<TlsSetup>>,
    /// Conversations kept between one client's pushes (kept.rs).
    kept: HashMap<kept::KeptKey, PeerLink>,
}

impl Peers {
    /// The file connection `k` is serving to a daemon that pulls it, if any.
    fn serving_mut(&mut self, k: usize) -> Option<&mut serving::Serving> {
        self.conns.get_mut(k).and_then(|c| c.serving.as_mut())
    }

    /// The file connection `k` is receiving, if any.
    fn incoming(&self, k: usize) -> Option<&incoming::Incoming> {
        self.conns.get(k).and_then(|c| c.incoming.as_ref())
    }

    fn incoming_mut(&mut self, k: usize) -> Option<&mut incoming::Incoming> {
        self.conns.get_mut(k).and_then(|c| c.incoming.as_mut())
    }
}

impl Engine {
    /// Takes files from other daemons on `setup`'s listener.
    pub fn set_peers(&mut self, setup: PeerSetup) {
        self.peers.listener = setup.listener.map(Rc::new);
        self.peers.plaintext = setup.plaintext;
        self.peers.bytes_in_flight = setup.bytes_in_flight;
        self.peers.tls = setup.tls;
        self.peers.exports = setup
            .exports
            .into_iter()
            .map(|e| ExportDir {
                name: e.name,
                path: e.path,
                dir: Rc::new(e.dir),
                identity: e.identity,
                peers: e.peers,
            })
            .collect();
    }

    pub(super) fn arm_tcp_listener(&mut self) {
        if self.life.stopping || self.life.draining || self.peers.accept.is_some() {
            return;
        }
        let Some(fd) = self.peers.listener.as_ref().map(SharedFd::owned) else {
            return;
        };
        match self.io.queue_op(Owner::TcpListener, 0, op::Accept::new(fd)) {
            Ok(ud) => self.peers.accept = Some(ud),
            Err(e) => error!("cannot queue an accept on the TCP listener: {e}"),
        }
    }

    /// Stops accepting other daemons (draining).
    pub(super) fn stop_tcp_listener(&mut self) {
        if let Some(ud) = self.peers.accept.take() {
            let _ = self.io.cancel(ud);
        }
    }

    /// Closes every connection of another daemon (stopping).
    pub(super) fn close_peers(&mut self) {
        self.stop_tcp_listener();
        let keys: Vec<usize> = self.peers.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.lost_peer(k, "the daemon is shutting down");
        }
    }

    /// A completion of an operation of the TCP listener or a connection.
    pub(super) fn on_peer_op(&mut self, op: Op, result: i32) {
        match op.owner {
            Owner::TcpListener => self.on_tcp_accept(result),
            Owner::Peer(k) => {
                if let Some(conn) = self.peers.conns.get_mut(k) {
                    conn.ops -= 1;
                }
                self.on_conn_op(k, op, result);
                self.close_retired(k);
                self.forget_if_done(k);
            }
            owner => error!(?owner, tag = op.tag, "completion of an unexpected kind"),
        }
    }

    fn on_conn_op(&mut self, k: usize, op: Op, result: i32) {
        let served = matches!(
            op.tag,
            tag::OPEN_SRC | tag::STAT_SRC | tag::READ_SRC | tag::CHECK_SRC | tag::LIST_DIR
        );
        if let Some(conn) = self.peers.conns.get_mut(k).filter(|_| served) {
            conn.serving_ops -= 1;
        }
        match (op.tag, op.op) {
            (tag::RECV, AnyOp::ReadInto(read)) => self.on_peer_recv(k, read.buf, result),
            (tag::SEND, AnyOp::Send(send)) => self.on_peer_sent(k, send, result),
            (tag::WRITE, AnyOp::WriteFrom(write)) => self.on_incoming_write(k, write, result),
            (tag::READ_SRC, AnyOp::ReadInto(read)) => self.on_serving_read(k, read.buf, result),
            (tag::READ_PART, AnyOp::ReadInto(read)) => self.on_part_read(k, read.buf, result),
            (tag::CHECK_SRC, AnyOp::ReadInto(read)) => self.on_compare_read(k, read.buf, result),
            (tag::STAT_SRC, AnyOp::Statx(stat)) => {
                let stx = stat.into_buf();
                self.on_serving_stat(k, result, &stx)
            }
            (tag::LIST_DIR, op) => {
                drop(op);
                self.on_listed(k, result)
            }
            (tag::OPEN_SRC, op) => {
                drop(op);
                self.on_serving_open(k, result)
            }
            (tag, op) => {
                // Its shares of descriptors go first, so that a directory
                // it named can be closed off the loop thread.
                drop(op);
                self.on_incoming_step(k, tag, result)
            }
        }
    }

    fn on_tcp_accept(&mut self, result: i32) {
        self.peers.accept = None;
        if result >= 0 {
            // SAFETY: a successful accept returns a new descriptor that only
            // this completion knows about.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            self.open_peer(fd);
        } else if -result != libc::ECANCELED {
            warn!(
                "accept on the TCP listener failed: {}",
                std::io::Error::from_raw_os_error(-result)
            );
        }
        self.arm_tcp_listener();
    }

    fn open_peer(&mut self, fd: OwnedFd) {
        let who = peer_address(&fd);
        if self.life.stopping || self.life.draining {
            return self.closing.doomed.push(fd);
        }
        if self.peers.conns.len() >= MAX_PEER_CONNECTIONS {
            warn!(peer = %who, "refused: {MAX_PEER_CONNECTIONS} connections of other daemons are open, the most allowed");
            return self.closing.doomed.push(fd);
        }
        let host = peer_socket_address(&fd).map(|a| a.ip());
        let from_host = self
            .peers
            .conns
            .iter()
            .filter(|(_, c)| !c.closing && c.host == host)
            .count();
        if self.peers.plaintext && from_host >= MAX_CONNECTIONS_PER_PEER {
            warn!(peer = %who, "refused: {MAX_CONNECTIONS_PER_PEER} connections from this address are open, the most one peer may");
            return self.closing.doomed.push(fd);
        }
        let tls = match (&self.peers.tls, self.peers.plaintext) {
            (_, true) => None,
            (Some(setup), false) => match setup.accept() {
                Ok(session) => Some(session),
                Err(e) => {
                    error!(peer = %who, "cannot start TLS: {e}");
                    return self.closing.doomed.push(fd);
                }
            },
            (None, false) => return self.closing.doomed.push(fd),
        };
        let how = if tls.is_some() { "TLS" } else { "plaintext" };
        info!(peer = %who, "another daemon connected ({how})");
        tune_peer_socket(fd.as_fd(), self.config.frame_timeout);
        let mut conn = PeerConn::new(fd, who, tls);
        conn.host = host;
        let k = self.peers.conns.insert(conn);
        self.arm_peer_recv(k);
        self.arm_deadlines();
    }

    /// Whether another daemon is connected (the deadline timer runs then).
    pub(super) fn has_peers(&self) -> bool {
        !self.peers.conns.is_empty()
    }

    /// Closes connections past their deadlines: no `Hello` within
    /// `handshake_timeout`, or nothing heard for `frame_timeout` while
    /// reading (not while the daemon itself holds the sender back or
    /// publishes, which the sender waits for).
    pub(super) fn peer_deadlines(&mut self, now: Instant) {
        let (handshake, frame) = (self.config.handshake_timeout, self.config.frame_timeout);
        let late: Vec<(usize, String)> = self
            .peers
            .conns
            .iter()
            .filter(|(_, c)| !c.closing)
            .filter_map(|(k, c)| {
                if !c.greeted && now.duration_since(c.opened) > handshake {
                    return Some((
                        k,
                        format!("no Hello within {handshake:?} (--handshake-timeout)"),
                    ));
                }
                // The other daemon owes nothing while this one writes what
                // came, or sends it a file it pulls (its silence then is
                // right: a puller says nothing mid-file).
                let waiting_on_us =
                    c.incoming.as_ref().is_some_and(|i| !i.receiving()) || c.serving.is_some();
                // Between files a kept connection may rest longer.
                let between = c.greeted && c.incoming.is_none() && c.serving.is_none();
                let limit = if between {
                    frame * BETWEEN_FILES
                } else {
                    frame
                };
                let heard = c.last_heard.max(c.listening_since);
                let idle = now.duration_since(heard) > limit;
                (c.rx_op.is_some() && !waiting_on_us && idle).then(|| {
                    let why = match between {
                        true => format!(
                            "idle between files for {limit:?} ({BETWEEN_FILES} x --frame-timeout)"
                        ),
                        false => format!("nothing received for {frame:?} (--frame-timeout)"),
                    };
                    (k, why)
                })
            })
            .collect();
        for (k, why) in late {
            self.lost_peer(k, &why);
        }
        self.fail_overdue_stripes(now);
    }

    /// Reads more from connection `k`, if it is not closing, no read is in
    /// flight, and its write buffers can take a whole receive.
    fn arm_peer_recv(&mut self, k: usize) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        // Mid-parse (what was parsed is not compacted away yet), a read
        // would land behind bytes about to move: on_peer_recv arms it after.
        if conn.closing || conn.rx_op.is_some() || conn.rx_pos != 0 {
            return;
        }
        if conn.incoming.is_some() && conn.room() < RX_BUFFER {
            return;
        }
        if self.peer_at_limit(k) {
            return self.hold_peer_recv(k);
        }
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        if conn.tls.as_ref().is_some_and(|t| t.wants_kernel()) {
            // No read until the kernel has the session (it must find the
            // records after the handshake in the socket).
            if !self.hand_over_peer(k) {
                return;
            }
        }
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let read = if let Some(tls) = conn.tls.as_ref() {
            let limit = tls.read_limit();
            let Some(buf) = conn.cipher.take() else {
                return;
            };
            op::ReadInto::new(SharedFd::owned(&conn.fd), buf, conn.cipher_len, None).at_most(limit)
        } else {
            let Some(buf) = conn.rx.take() else { return };
            op::ReadInto::new(SharedFd::owned(&conn.fd), buf, conn.rx_len, None)
        };
        match self.io.queue_op(Owner::Peer(k), tag::RECV, read) {
            Ok(ud) => {
                conn.rx_op = Some(ud);
                conn.listening_since = Instant::now();
                conn.ops += 1;
            }
            Err(e) => {
                // The buffer went down with the op; the connection cannot go on.
                error!("cannot queue a receive from another daemon: {e}");
                self.close_peer(k, "the daemon could not queue a receive");
            }
        }
    }

    fn on_peer_recv(&mut self, k: usize, buf: Vec<u8>, result: i32) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        if conn.tls.is_some() {
            conn.cipher = Some(buf);
        } else {
            conn.rx = Some(buf);
        }
        conn.rx_op = None;
        if conn.closing {
            return;
        }
        match result {
            0 => return self.lost_peer(k, "the other daemon closed the connection"),
            n if n < 0 => {
                let err = std::io::Error::from_raw_os_error(-n);
                return self.lost_peer(k, &format!("receive failed: {err}"));
            }
            n if conn.tls.is_some() => conn.cipher_len += n as usize,
            n => conn.rx_len += n as usize,
        }
        conn.last_heard = Instant::now();
        self.take_received(k);
        self.flush_peer(k);
        self.arm_peer_recv(k);
    }

    /// Opens what TLS received (if TLS), handles every whole piece, and
    /// goes on while ciphertext is left that the room made can take.
    fn take_received(&mut self, k: usize) {
        loop {
            let Some(conn) = self.peers.conns.get_mut(k) else {
                return;
            };
            let opened = match conn.open_tls() {
                Ok(opened) => opened,
                Err(e) => return self.close_peer(k, &e),
            };
            self.name_peer(k);
            self.parse_peer(k);
            let Some(conn) = self.peers.conns.get_mut(k) else {
                return;
            };
            conn.compact();
            if !opened || conn.cipher_len == 0 || conn.closing {
                return;
            }
        }
    }

    /// Logs which pinned peer it is, once TLS knows.
    fn name_peer(&mut self, k: usize) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let Some(tls) = conn.tls.as_ref().filter(|t| t.established()) else {
            return;
        };
        if conn.peer.is_none() {
            let name = tls.peer_name().unwrap_or_default();
            let suite = tls.suite().unwrap_or_default();
            info!(peer = %conn.who, name = %name, suite = %suite, "TLS established");
            conn.peer = Some(name.clone());
            let same = |c: &PeerConn| !c.closing && c.peer.as_ref() == Some(&name);
            let open = self.peers.conns.iter().filter(|(_, c)| same(c)).count();
            if open > MAX_CONNECTIONS_PER_PEER {
                let why = format!(
                    "refused: peer {name:?} has {MAX_CONNECTIONS_PER_PEER} connections open, the most one peer may"
                );
                warn!("{why}");
                self.close_peer(k, &why);
            }
        }
    }

    /// Handles every whole piece received on connection `k`.
    fn parse_peer(&mut self, k: usize) {
        let mut full = Vec::with_capacity(conn::WRITE_BUFFERS);
        loop {
            let Some(conn) = self.peers.conns.get_mut(k) else {
                return;
            };
            if conn.closing {
                return;
            }
            let limits = self.peers.limits;
            let Some(rx) = conn.rx.as_ref() else { return };
            let got = match conn.reader.next(&rx[conn.rx_pos..conn.rx_len], &limits) {
                Ok(Some((piece, used))) => {
                    conn.rx_pos += used;
                    match piece {
                        Piece::Message(message) => Err(message),
                        Piece::Data {
                            xfer,
                            offset,
                            bytes,
                        } => Ok((xfer, offset, bytes.len())),
                    }
                }
                Ok(None) => break,
                Err(e) => return self.close_peer(k, &format!("protocol error: {e}")),
            };
            let message = match got {
                Err(message) => message,
                Ok((xfer, offset, len)) => {
                    // The bytes are the last `len` parsed.
                    let Some(rx) = conn.rx.take() else { return };
                    let span = &rx[conn.rx_pos - len..conn.rx_pos];
                    let taken = incoming::take_data(conn, xfer, offset, span, &mut full);
                    conn.rx = Some(rx);
                    if let Err(why) = taken {
                        return self.close_peer(k, &format!("protocol error: {why}"));
                    }
                    self.write_full(k, &mut full);
                    continue;
                }
            };
            self.on_peer_message(k, message);
        }
    }

    fn on_peer_message(&mut self, k: usize, message: PeerMessage) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        match message {
            PeerMessage::Hello { version } if !conn.greeted => {
                conn.greeted = true;
                if version != PEER_PROTOCOL_VERSION {
                    info!(peer = %conn.who, version, "the other daemon speaks another version of the wire; answering with ours");
                }
                let welcome = PeerMessage::Welcome {
                    version: PEER_PROTOCOL_VERSION,
                    limits: self.peers.limits,
                };
                self.send_peer(k, &welcome);
            }
            _ if !conn.greeted => {
                self.close_peer(k, "protocol error: the first message was not Hello")
            }
            PeerMessage::Put(put) => self.start_incoming(k, put),
            PeerMessage::Ready { xfer, offset, .. } if conn.incoming.is_some() => {
                self.resume_at(k, xfer, offset)
            }
            PeerMessage::End { xfer, size, crc32c } => self.end_incoming(k, xfer, size, crc32c),
            PeerMessage::Cancel { xfer } if conn.serving.is_some() => {
                self.serving_answer(k, PeerMessage::Cancel { xfer })
            }
            PeerMessage::Cancel { xfer } => {
                let why = (FailureKind::Cancelled, "the sender cancelled it".into());
                self.cancel_incoming(k, xfer, why)
            }
            PeerMessage::Ping => self.send_peer(k, &PeerMessage::Pong),
            PeerMessage::Pong => {}
            PeerMessage::Bye => self.close_peer(k, "the other daemon said Bye"),
            PeerMessage::Get { xfer, path, resume } => {
                self.start_serving(k, (xfer, path), false, resume)
            }
            PeerMessage::List { xfer, path } => self.start_serving(k, (xfer, path), true, false),
            PeerMessage::Sums {
                block, first, crcs, ..
            } if conn.serving.is_some() => self.serving_sums(k, block, first, &crcs),
            PeerMessage::Ready { offset, .. } if conn.serving.is_some() => {
                self.serving_upto(k, offset)
            }
            PeerMessage::Done { .. } | PeerMessage::Failed { .. } => {
                self.serving_answer(k, message)
            }
            other => {
                let why = format!(
                    "protocol error: a {} is not expected here",
                    message_name(&other)
                );
                self.close_peer(k, &why);
            }
        }
    }

    /// Queues `message` to connection `k`.
    fn send_peer(&mut self, k: usize, message: &PeerMessage) {
        let max_frame = self.peers.limits.max_frame;
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        if let Err(e) = encode(message, &mut conn.out, max_frame) {
            error!("cannot encode a message to another daemon: {e}");
            return self.close_peer(k, "the daemon could not encode a message");
        }
        self.flush_peer(k);
    }

    /// Starts a send of what is queued (sealed first, under TLS), unless
    /// one is in flight.
    fn flush_peer(&mut self, k: usize) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        if conn.closing || (conn.out.is_empty() && conn.tls.is_none()) {
            return;
        }
        let Some(mut outgoing) = conn.outgoing.take() else {
            return;
        };
        outgoing.bytes.clear();
        outgoing.sent = 0;
        let sealed = match conn.tls.as_mut() {
            Some(tls) => tls
                .send(&conn.out)
                .and_then(|()| tls.pending(&mut outgoing.bytes)),
            None => {
                std::mem::swap(&mut outgoing.bytes, &mut conn.out);
                Ok(())
            }
        };
        conn.out.clear();
        if outgoing.bytes.is_empty() || sealed.is_err() {
            conn.outgoing = Some(outgoing);
            if let Err(e) = sealed {
                self.close_peer(k, &e);
            }
            return;
        }
        self.queue_send(k, outgoing);
    }

    fn queue_send(&mut self, k: usize, outgoing: Box<Outgoing>) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let send = op::Send::new(SharedFd::owned(&conn.fd), op::SendFrom::Bytes(outgoing), 0);
        match self.io.queue_op(Owner::Peer(k), tag::SEND, send) {
            Ok(_) => conn.ops += 1,
            Err(e) => {
                error!("cannot queue a send to another daemon: {e}");
                self.close_peer(k, "the daemon could not queue a send");
            }
        }
    }

    fn on_peer_sent(&mut self, k: usize, send: op::Send, result: i32) {
        let Some(bytes) = send.into_bytes() else {
            return;
        };
        let any: Box<dyn std::any::Any> = bytes;
        let Ok(mut outgoing) = any.downcast::<Outgoing>() else {
            return;
        };
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        if result < 0 {
            conn.outgoing = Some(outgoing);
            let err = std::io::Error::from_raw_os_error(-result);
            return self.lost_peer(k, &format!("send failed: {err}"));
        }
        outgoing.sent += result as usize;
        if outgoing.sent < outgoing.bytes.len() && !conn.closing {
            return self.queue_send(k, outgoing);
        }
        conn.outgoing = Some(outgoing);
        if !conn.closing {
            let handing_over = conn.tls.as_ref().is_some_and(|t| t.wants_kernel());
            self.flush_peer(k);
            self.serve_next(k);
            if handing_over {
                self.arm_peer_recv(k);
            }
        }
    }

    /// Hands connection `k`'s TLS to the kernel if nothing is in flight on
    /// its socket and nothing waits to go out: true when it did (reads may
    /// go on), false while it must wait or when the connection failed.
    fn hand_over_peer(&mut self, k: usize) -> bool {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return false;
        };
        if conn.cipher_len > 0 {
            // Reads stop at the handshake's last record, so this cannot
            // be; were it so, waiting would never end.
            let why = "TLS: records after the handshake were read before the kernel took over";
            self.close_peer(k, why);
            return false;
        }
        let idle = conn.rx_op.is_none() && conn.outgoing.is_some() && conn.out.is_empty();
        if !idle {
            return false;
        }
        let Some(tls) = conn.tls.take() else {
            return true;
        };
        match tls.hand_over(conn.fd.as_fd()) {
            Ok(HandedOver::Kernel { suite }) => {
                conn.cipher = None;
                info!(peer = %conn.who, suite = %suite, "TLS handed to the kernel");
                true
            }
            Ok(HandedOver::Rehearsed(tls)) => {
                conn.tls = Some(tls);
                info!(peer = %conn.who, "TLS hand-over rehearsed (no kernel TLS here)");
                true
            }
            Err(e) => {
                self.close_peer(k, &e);
                false
            }
        }
    }

    /// Ends connection `k` for something it did (a protocol error, a TLS
    /// failure, Bye): no new work; a file being received is dropped (its
    /// hidden part removed); the connection is forgotten once its last
    /// operation has completed.
    fn close_peer(&mut self, k: usize, why: &str) {
        self.end_peer(k, why, FailureKind::Io);
    }

    /// As `close_peer`, for a connection lost (closed or reset by the other
    /// end, silent past its deadline, this daemon stopping): the part of a
    /// file being received is kept for a resume.
    fn lost_peer(&mut self, k: usize, why: &str) {
        self.end_peer(k, why, FailureKind::PeerGone);
    }

    fn end_peer(&mut self, k: usize, why: &str, kind: FailureKind) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        if conn.closing {
            return;
        }
        conn.closing = true;
        info!(peer = %conn.who, "connection of another daemon closed: {why}");
        if let Some(ud) = conn.rx_op {
            let _ = self.io.cancel(ud);
        }
        self.abandon_incoming(k, why, kind);
        self.forget_if_done(k);
    }

    /// Closes, off the loop thread, the descriptors of connection `k` that
    /// no operation holds any more.
    fn close_retired(&mut self, k: usize) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        for fd in std::mem::take(&mut conn.retired) {
            match Rc::try_unwrap(fd) {
                Ok(fd) => self.closing.doomed.push(fd),
                Err(shared) => conn.retired.push(shared),
            }
        }
    }

    /// Forgets a closing connection with nothing left in flight, its
    /// descriptors closed off the loop thread.
    fn forget_if_done(&mut self, k: usize) {
        let done = self
            .peers
            .conns
            .get(k)
            .is_some_and(|c| c.closing && c.ops == 0);
        if !done {
            return;
        }
        let mut conn = self.peers.conns.remove(k);
        if let Some(incoming) = conn.incoming.take() {
            self.release_incoming(incoming);
        }
        let (serving, lease) = conn.serving.take().map_or((None, None), |s| s.into_parts());
        let lost = (FailureKind::PeerGone, "the connection closed".to_string());
        self.end_lease(lease, Some(&lost));
        for fd in serving.into_iter().chain(conn.retired.drain(..)) {
            self.closing.doomed.extend(Rc::try_unwrap(fd).ok());
        }
        if let Ok(fd) = Rc::try_unwrap(conn.fd) {
            self.closing.doomed.push(fd);
        }
    }
}

impl Engine {
    /// The TLS session of a push (`spec.remote`) to another daemon: TLS
    /// whenever this daemon has an identity; plaintext only to a loopback
    /// address otherwise, and never across a network.
    pub(super) fn push_session(&self, spec: &JobSpec) -> Result<Option<Session>, TransferError> {
        let Some((target, _)) = &spec.remote else {
            return Ok(None);
        };
        let socket = if target.pull {
            &spec.ends.src
        } else {
            &spec.ends.dst
        };
        tune_peer_socket(socket.as_fd(), self.config.frame_timeout);
        match &self.peers.tls {
            Some(setup) => setup
                .connect()
                .map(Some)
                .map_err(|e| TransferError::new(FailureKind::Io, e)),
            None if peer_is_loopback(socket) => Ok(None),
            None => Err(TransferError::new(
                FailureKind::PermissionDenied,
                "a push to another host needs TLS: give the daemon tls_cert and tls_key \
                 (ringxferd --init-keys DIR) and pin the other daemon in a [[peer]] table; \
                 without them it pushes in plaintext to loopback addresses only",
            )),
        }
    }
}

impl Engine {
    /// How a detached push dials the other daemon again if its connection
    /// is lost: to the address the client's socket reached, with this
    /// daemon's TLS if the push speaks it. None for an attached push (its
    /// user sees the failure, and can --resume) and for a pull.
    pub(super) fn redial_for(&self, spec: &JobSpec, tls: bool) -> Option<Redial> {
        let (target, _) = spec.remote.as_ref()?;
        if target.pull || !spec.detach {
            return None;
        }
        let address = peer_socket_address(&spec.ends.dst)?;
        let setup = self.peers.tls.as_ref().filter(|_| tls).map(Arc::clone);
        Some(Redial::new(address, setup, self.config.frame_timeout))
    }

    /// What a push's note says of its connection.
    pub(super) fn push_note(&self, tls: bool) -> String {
        match (&self.peers.tls, tls) {
            (Some(setup), true) => setup.note.clone(),
            _ => "plaintext, to a loopback address (this daemon has no TLS identity)".into(),
        }
    }
}

/// Whether the socket's other end is on this host (127.0.0.0/8, ::1).
fn peer_is_loopback(fd: &OwnedFd) -> bool {
    peer_socket_address(fd).is_some_and(|a| a.ip().is_loopback())
}

/// The address of the socket's other end (getpeername).
fn peer_socket_address(fd: &OwnedFd) -> Option<std::net::SocketAddr> {
    let sock = std::mem::ManuallyDrop::new(
        // SAFETY: a TcpStream borrowing `fd` for getpeername only; wrapped in
        // ManuallyDrop so it never closes the descriptor `fd` owns.
        unsafe { std::net::TcpStream::from_raw_fd(fd.as_raw_fd()) },
    );
    sock.peer_addr().ok()
}

/// The peer's address, as the log shows it.
fn peer_address(fd: &OwnedFd) -> String {
    let sock = std::mem::ManuallyDrop::new(
        // SAFETY: a TcpStream borrowing `fd` for getpeername only; wrapped in
        // ManuallyDrop so it never closes the descriptor `fd` owns.
        unsafe { std::net::TcpStream::from_raw_fd(fd.as_raw_fd()) },
    );
    sock.peer_addr()
        .map_or_else(|_| "an unknown address".into(), |a| a.to_string())
}

/// A message's name, for protocol errors.
fn message_name(message: &PeerMessage) -> &'static str {
    match message {
        PeerMessage::Hello { .. } => "Hello",
        PeerMessage::Welcome { .. } => "Welcome",
        PeerMessage::Put(_) => "Put",
        PeerMessage::Get { .. } => "Get",
        PeerMessage::Ready { .. } => "Ready",
        PeerMessage::Refused { .. } => "Refused",
        PeerMessage::Data { .. } => "Data",
        PeerMessage::End { .. } => "End",
        PeerMessage::Done { .. } => "Done",
        PeerMessage::Failed { .. } => "Failed",
        PeerMessage::Cancel { .. } => "Cancel",
        PeerMessage::Sums { .. } => "Sums",
        PeerMessage::Ping => "Ping",
        PeerMessage::Pong => "Pong",
        PeerMessage::Bye => "Bye",
        PeerMessage::List { .. } => "List",
    }
}
