//! One connection from another daemon: its socket, what it has sent that
//! is not parsed yet, the frames waiting to go out, and the buffers the
//! file being received is copied into on its way to the disk.
//!
//! Every buffer is made when the connection is (or its first file starts)
//! and reused for its life: a connection holds one receive buffer and
//! `WRITE_BUFFERS` write buffers, so nothing is allocated per chunk, and a
//! sender faster than the disk is held back by the receive not being
//! re-armed until the write buffers have room for a whole receive.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Instant;

use ringxfer_ipc::proto::peer::PeerReader;

use super::incoming::Incoming;
use super::serving::Serving;
use crate::io::queue::SendSource;
use crate::tls::Session;
use crate::transfer::write_buffers::WriteBuffers;

/// Bytes one receive reads at most.
pub(super) const RX_BUFFER: usize = 256 << 10;
/// Ciphertext one receive reads at most, under TLS: what it opens always
/// fits the receive buffer beside a partial frame (at most 64 KiB).
pub(super) const CIPHER_BUFFER: usize = 64 << 10;
/// Write buffers of a connection, and the size of each.
pub(super) const WRITE_BUFFERS: usize = 3;
pub(super) const WRITE_BUFFER: usize = 1 << 20;

/// Frames on their way out, and how much of them is sent.
pub(super) struct Outgoing {
    pub bytes: Vec<u8>,
    pub sent: usize,
}

impl SendSource for Outgoing {
    fn unsent(&self) -> (*const u8, u32) {
        let rest = &self.bytes[self.sent.min(self.bytes.len())..];
        (rest.as_ptr(), u32::try_from(rest.len()).unwrap_or(u32::MAX))
    }
}

pub(super) struct PeerConn {
    pub fd: Rc<OwnedFd>,
    /// The peer's address, for the log.
    pub who: String,
    /// Its address, without the port: whose connection it is in plaintext.
    pub host: Option<std::net::IpAddr>,
    /// The receive buffer (its length is its size); None while a read
    /// holds it.
    pub rx: Option<Vec<u8>>,
    /// Bytes of `rx` received, and how many of them are parsed.
    pub rx_len: usize,
    pub rx_pos: usize,
    pub reader: PeerReader,
    /// `Hello` came and was answered.
    pub greeted: bool,
    /// Frames encoded while a send was in flight.
    pub out: Vec<u8>,
    /// The send's box when idle (None while a send holds it).
    pub outgoing: Option<Box<Outgoing>>,
    /// The file being received.
    pub incoming: Option<Incoming>,
    /// The file being sent to a daemon that pulls it.
    pub serving: Option<Serving>,
    /// Descriptors let go of while an operation still held them: closed
    /// off the loop thread once it is back.
    pub retired: Vec<Rc<OwnedFd>>,
    /// The write buffers, made when the first file starts.
    writes: Option<WriteBuffers>,
    /// Operations in flight; the connection is forgotten only at zero.
    pub ops: usize,
    /// Of those, the file served's (open, stat, reads): a new file waits
    /// until none is left, so that none lands in it.
    pub serving_ops: usize,
    /// The read in flight, to cancel when closing.
    pub rx_op: Option<u64>,
    /// Going away: no new operation starts.
    pub closing: bool,
    /// When it was accepted, and when it last sent anything.
    pub opened: Instant,
    pub last_heard: Instant,
    /// When its read was last armed: a connection not read for a while
    /// (its peer's bytes in flight at their limit) is not silent.
    pub listening_since: Instant,
    /// Bytes of the file received in writes not yet landed.
    pub writing: usize,
    /// Its read waits for its peer's bytes in flight to fall (in_flight.rs).
    pub held: bool,
    /// TLS, unless the listener takes plaintext: then reads land in
    /// `cipher` (`cipher_len` bytes not yet opened) and what they open is
    /// appended to `rx`.
    pub tls: Option<Box<Session>>,
    pub cipher: Option<Vec<u8>>,
    pub cipher_len: usize,
    /// The `[[peer]]` name of the other end, once its certificate is in
    /// (kept when TLS goes to the kernel and the session with it).
    pub peer: Option<String>,
}

impl PeerConn {
    pub(super) fn new(fd: OwnedFd, who: String, tls: Option<Session>) -> PeerConn {
        let cipher = tls.as_ref().map(|_| vec![0; CIPHER_BUFFER]);
        PeerConn {
            fd: Rc::new(fd),
            who,
            rx: Some(vec![0; RX_BUFFER]),
            rx_len: 0,
            rx_pos: 0,
            reader: PeerReader::default(),
            greeted: false,
            out: Vec::with_capacity(4096),
            outgoing: Some(Box::new(Outgoing {
                bytes: Vec::with_capacity(4096),
                sent: 0,
            })),
            incoming: None,
            serving: None,
            retired: Vec::new(),
            writes: None,
            ops: 0,
            serving_ops: 0,
            rx_op: None,
            closing: false,
            opened: Instant::now(),
            last_heard: Instant::now(),
            listening_since: Instant::now(),
            writing: 0,
            held: false,
            tls: tls.map(Box::new),
            cipher,
            cipher_len: 0,
            peer: None,
            host: None,
        }
    }

    /// Opens the ciphertext received into `rx`, as much as fits; the rest
    /// stays for the next call. Ok(false) when none could be used.
    pub(super) fn open_tls(&mut self) -> Result<bool, String> {
        let PeerConn {
            tls: Some(tls),
            cipher: Some(cipher),
            rx: Some(rx),
            rx_len,
            cipher_len,
            ..
        } = self
        else {
            return Ok(false);
        };
        let used = tls.receive(&cipher[..*cipher_len], &mut |plain| {
            let n = plain.len().min(rx.len() - *rx_len);
            rx[*rx_len..*rx_len + n].copy_from_slice(&plain[..n]);
            *rx_len += n;
            n
        })?;
        cipher.copy_within(used..*cipher_len, 0);
        *cipher_len -= used;
        Ok(used > 0)
    }

    /// A file is being moved on it, either way: one at a time.
    pub(super) fn busy(&self) -> bool {
        self.incoming.is_some() || self.serving.is_some() || self.serving_ops > 0
    }

    /// Makes the write buffers, once, when the first file starts.
    pub(super) fn ensure_write_buffers(&mut self) {
        if self.writes.is_none() {
            self.writes = Some(WriteBuffers::new(WRITE_BUFFERS, WRITE_BUFFER));
        }
    }

    /// Bytes of file data the write buffers can take now.
    pub(super) fn room(&self) -> usize {
        self.writes.as_ref().map_or(0, WriteBuffers::room)
    }

    /// Bytes of file data the write buffers could take once the buffer
    /// being filled went to the disk.
    pub(super) fn room_after_flush(&self) -> usize {
        self.writes
            .as_ref()
            .map_or(0, WriteBuffers::room_after_flush)
    }

    /// Bytes received from the other daemon and not yet written: in the
    /// buffer being filled, and in writes in flight.
    pub(super) fn unwritten(&self) -> usize {
        self.writing + self.writes.as_ref().map_or(0, WriteBuffers::filling)
    }

    /// Whether `other` is a connection of the same other daemon: the same
    /// pinned peer under TLS, the same address in plaintext.
    pub(super) fn same_peer(&self, other: &PeerConn) -> bool {
        match (&self.peer, &other.peer) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.host == other.host,
            _ => false,
        }
    }

    /// Copies `bytes`, the file's from `offset`, into the write buffers;
    /// each buffer filled goes to `full` with its offset. The caller made
    /// sure they fit (`room`).
    pub(super) fn copy_in(
        &mut self,
        offset: u64,
        bytes: &[u8],
        full: &mut Vec<(u64, Vec<u8>)>,
    ) -> bool {
        self.writes
            .as_mut()
            .is_some_and(|w| w.copy_in(offset, bytes, full))
    }

    /// Hands the buffer being filled, if any, to `full`.
    pub(super) fn flush_into(&mut self, full: &mut Vec<(u64, Vec<u8>)>) {
        if let Some(w) = self.writes.as_mut() {
            w.flush_into(full);
        }
    }

    /// Lends a write buffer, whole, for a read of the part.
    pub(super) fn take_spare(&mut self) -> Option<Vec<u8>> {
        self.writes.as_mut().and_then(WriteBuffers::take_spare)
    }

    /// Takes a write buffer back, empty.
    pub(super) fn give_back(&mut self, buf: Vec<u8>) {
        if let Some(w) = self.writes.as_mut() {
            w.give_back(buf);
        }
    }

    /// Drops what a failed file left in the write buffer being filled.
    pub(super) fn discard_fill(&mut self) {
        if let Some(w) = self.writes.as_mut() {
            w.discard_fill();
        }
    }

    /// Moves the unparsed tail of the receive buffer to its front.
    pub(super) fn compact(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            rx.copy_within(self.rx_pos..self.rx_len, 0);
        }
        self.rx_len -= self.rx_pos;
        self.rx_pos = 0;
    }
}
