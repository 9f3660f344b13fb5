//! One measured run of a contender, on the files and daemons made once, and
//! the checks of what it wrote or sent.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ringxfer_ipc::{Client, TransferOptions};

use crate::lineup::{Contender, Entry, Group};
use crate::support::peers::{run_timed, Memory};
use crate::support::{
    self, read_block, self_cpu, write_source, Daemon, DaemonCpu, Receiver, Result, Sink, GEN_BLOCK,
};

/// Bytes compared at each end of every destination: one block.
const EDGE: usize = support::BLOCK;

/// One measured run.
#[derive(Clone, Copy)]
pub struct Sample {
    pub secs: f64,
    pub cpu: f64,
}

// ---------------------------------------------------------------------------
// Files

/// What a destination must look like.
pub struct Expect {
    pub size: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// Writes and syncs the source (its pages stay in the page cache), reads it
/// once so the page cache is hot, and returns its first and last bytes.
pub fn make_source(path: &Path, size: u64) -> Result<Expect> {
    write_source(path, size)?;

    // Read once, so the page cache is hot and the edges are known.
    let mut file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut block = vec![0u8; GEN_BLOCK];
    let mut read = 0u64;
    loop {
        match file.read(&mut block) {
            Ok(0) => break,
            Ok(n) => read += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read {}: {e}", path.display())),
        }
    }
    if read != size {
        return Err(format!(
            "{} reads back {read} bytes, not {size}",
            path.display()
        ));
    }
    let (head, tail) = edges(&file, size).map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(Expect { size, head, tail })
}

/// The first and last `EDGE` bytes of a file of `size` bytes.
fn edges(file: &File, size: u64) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let n = EDGE.min(size as usize) as u64;
    Ok((
        read_block(file, 0, size)?,
        read_block(file, size - n, size)?,
    ))
}

/// Checks a destination file's size and both ends against the source.
fn verify_file(path: &Path, want: &Expect) -> Result<()> {
    let file = support::open_sized(path, want.size)?;
    let (head, tail) =
        edges(&file, want.size).map_err(|e| format!("read {}: {e}", path.display()))?;
    if head != want.head {
        return Err(format!("the first bytes of {} differ", path.display()));
    }
    if tail != want.tail {
        return Err(format!("the last bytes of {} differ", path.display()));
    }
    Ok(())
}

fn syncfs(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    // SAFETY: `d` is an open descriptor for the whole call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(format!(
            "syncfs {}: {}",
            dir.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The TCP receiver

/// What the receiver keeps of a connection: its first and last `EDGE` bytes.
pub struct Edges {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Edges {
    pub fn new() -> Edges {
        Edges {
            head: Vec::with_capacity(EDGE),
            tail: Vec::with_capacity(EDGE),
        }
    }
}

impl Sink for Edges {
    fn feed(&mut self, _pos: u64, got: &[u8]) {
        let n = got.len();
        if self.head.len() < EDGE {
            let take = (EDGE - self.head.len()).min(n);
            self.head.extend_from_slice(&got[..take]);
        }
        if n >= EDGE {
            self.tail.clear();
            self.tail.extend_from_slice(&got[n - EDGE..]);
        } else {
            let drop_n = (self.tail.len() + n).saturating_sub(EDGE);
            self.tail.drain(..drop_n);
            self.tail.extend_from_slice(got);
        }
    }
}

// ---------------------------------------------------------------------------
// The runs

/// A daemon this bench started, and its connection.
pub struct DaemonConn {
    // The client before the daemon: fields drop in this order.
    pub client: Client,
    pub cpu: DaemonCpu,
    /// Kept for its Drop, which stops the daemon.
    pub _daemon: Daemon,
}

/// Everything the contenders need, made once.
pub struct Bench {
    pub dir: PathBuf,
    pub src: PathBuf,
    pub want: Expect,
    /// Daemon 0 copies and sends; the others only send.
    pub daemons: Vec<DaemonConn>,
    pub embedded_client: Option<Client>,
    pub receiver: Receiver<Edges>,
    /// The read/write loop's buffer.
    pub buf: Vec<u8>,
    /// The destination of the previous copy, deleted before the next run.
    pub prev_dst: Option<PathBuf>,
    /// What the daemon said about its last job: strategy and its own elapsed.
    pub last_note: String,
}

impl Bench {
    /// Before a copy, frees the previous copy's pages (its destination
    /// lives on through the sends between, so that the first copy of a
    /// recycled pass too starts on pages just freed); then waits as `memory`
    /// says.
    pub fn prepare(&mut self, group: Group, memory: Memory) -> Result<()> {
        if group == Group::Copy {
            self.remove_prev()?;
        }
        syncfs(&self.dir)?;
        memory.settle();
        Ok(())
    }

    pub fn remove_prev(&mut self) -> Result<()> {
        if let Some(prev) = self.prev_dst.take() {
            fs::remove_file(&prev).map_err(|e| format!("remove {}: {e}", prev.display()))?;
        }
        Ok(())
    }

    pub fn run(&mut self, e: &Entry) -> Result<Sample> {
        self.last_note.clear();
        match e.group {
            Group::Copy => self.run_copy(e),
            Group::Send => self.run_send(e),
        }
    }

    /// Checks an engine's completion and notes what it reported.
    fn record(&mut self, e: &Entry, done: &ringxfer_ipc::Completion) -> Result<()> {
        if done.bytes != self.want.size {
            return Err(format!(
                "{}: completed with {} bytes, want {}",
                e.name, done.bytes, self.want.size
            ));
        }
        self.last_note = format!(
            "strategy {}, engine-reported {:.3} s",
            done.strategy,
            done.elapsed.as_secs_f64()
        );
        Ok(())
    }

    /// CPU seconds so far of this process and of `c`'s daemon, if any.
    fn cpu_now(&self, c: Contender) -> Result<f64> {
        let own = self_cpu();
        Ok(match c.daemon() {
            Some(n) => own + self.daemons[n].cpu.secs()?,
            None => own,
        })
    }

    fn run_copy(&mut self, e: &Entry) -> Result<Sample> {
        let dst = self.dir.join(format!("dst-{}.bin", e.key));
        // A leftover from an earlier, failed run.
        let _ = fs::remove_file(&dst);
        self.prev_dst = Some(dst.clone());

        let sample = if let Contender::Program(p) = e.c {
            let bin = e.program.as_ref().ok_or("a program without a path")?;
            let mut cmd = Command::new(bin);
            cmd.args(p.flags()).arg(&self.src).arg(&dst);
            let (secs, cpu) = run_timed(cmd)?;
            Sample { secs, cpu }
        } else {
            let cpu0 = self.cpu_now(e.c)?;
            let t0 = Instant::now();
            self.copy_here(e, &dst)?;
            let secs = t0.elapsed().as_secs_f64();
            Sample {
                secs,
                cpu: self.cpu_now(e.c)? - cpu0,
            }
        };
        verify_file(&dst, &self.want).map_err(|m| format!("{}: {m}", e.name))?;
        Ok(sample)
    }

    /// A copy driven from this process.
    fn copy_here(&mut self, e: &Entry, dst: &Path) -> Result<()> {
        let open = |p: &Path| File::open(p).map_err(|err| format!("open {}: {err}", p.display()));
        let create =
            |p: &Path| File::create(p).map_err(|err| format!("create {}: {err}", p.display()));
        match e.c {
            Contender::DaemonCopy | Contender::EmbeddedCopy => {
                let client = if e.c == Contender::DaemonCopy {
                    &self.daemons[0].client
                } else {
                    self.embedded_client.as_ref().ok_or("no embedded engine")?
                };
                let done = client
                    .copy_file(&self.src, dst, &TransferOptions::default())
                    .map_err(|err| format!("{}: submit: {err}", e.name))?
                    .wait()
                    .map_err(|err| format!("{}: {err}", e.name))?;
                self.record(e, &done)
            }
            Contender::IoCopy => {
                let n = io::copy(&mut open(&self.src)?, &mut create(dst)?)
                    .map_err(|err| format!("io::copy: {err}"))?;
                if n != self.want.size {
                    return Err(format!("io::copy copied {n} bytes"));
                }
                Ok(())
            }
            Contender::ReadWrite => {
                read_write(&mut open(&self.src)?, &mut create(dst)?, &mut self.buf)
            }
            Contender::SpliceLoop { pipe, write } => {
                let (from, to) = (open(&self.src)?, create(dst)?);
                splice_loop(&from, &to, self.want.size, pipe, write)
            }
            other => Err(format!("{other:?} does not copy here")),
        }
    }

    fn run_send(&mut self, e: &Entry) -> Result<Sample> {
        let sock = self.receiver.connect()?;
        let cpu0 = self.cpu_now(e.c)?;
        let t0 = Instant::now();
        match e.c {
            Contender::DaemonSend(n) => {
                let done = self.daemons[n]
                    .client
                    .send_file(&self.src, &sock, &TransferOptions::default())
                    .map_err(|err| format!("{}: submit: {err}", e.name))?
                    .wait()
                    .map_err(|err| format!("{}: {err}", e.name))?;
                self.record(e, &done)?;
            }
            Contender::Sendfile => {
                let file = File::open(&self.src).map_err(|err| format!("open source: {err}"))?;
                sendfile_loop(&sock, &file, self.want.size)?;
            }
            other => return Err(format!("{other:?} does not send")),
        }
        let got = self.receiver.finish_send(&sock)?;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = self.cpu_now(e.c)? - cpu0 - got.cpu;
        drop(sock);
        if got.bytes != self.want.size {
            return Err(format!(
                "{}: the receiver got {} bytes, want {}",
                e.name, got.bytes, self.want.size
            ));
        }
        if got.kept.head != self.want.head || got.kept.tail != self.want.tail {
            return Err(format!(
                "{}: the bytes received differ from the source",
                e.name
            ));
        }
        Ok(Sample { secs, cpu })
    }
}

// ---------------------------------------------------------------------------
// The loops the daemon races

fn read_write(from: &mut File, to: &mut File, buf: &mut [u8]) -> Result<()> {
    loop {
        match from.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n]).map_err(|e| format!("write: {e}"))?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Sends `size` bytes of `file` to `sock` with sendfile(2), blocking.
fn sendfile_loop(sock: &impl AsRawFd, file: &File, size: u64) -> Result<()> {
    let mut off: libc::off_t = 0;
    while (off as u64) < size {
        let left = (size - off as u64).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the call; `off` is a valid, writable off_t.
        let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, left) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("sendfile: {e}"));
        }
        if n == 0 {
            return Err(format!("sendfile: unexpected end of file at {off}"));
        }
    }
    Ok(())
}

/// Copies `size` bytes with splice(2) through one pipe grown (or shrunk) to
/// `pipe` bytes, writing at most `write` bytes a call, blocking, on this
/// thread: what the engine does, minus the ring.
fn splice_loop(from: &File, to: &File, size: u64, pipe: usize, write: usize) -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!("pipe2: {}", io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are new and ours alone.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let pipe = libc::c_int::try_from(pipe).map_err(|_| format!("a pipe of {pipe} bytes"))?;
    // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours.
    let cap = unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, pipe) };
    if cap < 0 {
        return Err(format!("F_SETPIPE_SZ: {}", io::Error::last_os_error()));
    }
    let mut off: i64 = 0;
    while (off as u64) < size {
        let want = (size - off as u64).min(cap as u64) as usize;
        let mut in_off = off;
        // SAFETY: valid descriptors; the offset pointer refers to a live i64.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                &mut in_off,
                wr.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        if n <= 0 {
            return Err(format!("splice in: {n} {}", io::Error::last_os_error()));
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above.
            let m = unsafe {
                libc::splice(
                    rd.as_raw_fd(),
                    std::ptr::null_mut(),
                    to.as_raw_fd(),
                    &mut off,
                    left.min(write),
                    0,
                )
            };
            if m <= 0 {
                return Err(format!("splice out: {m} {}", io::Error::last_os_error()));
            }
            left -= m as usize;
        }
    }
    Ok(())
}
