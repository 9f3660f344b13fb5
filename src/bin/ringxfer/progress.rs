//! Waiting for a job, with a progress bar on stderr when it takes a while,
//! or progress objects on stdout (`--json --progress`, progress_json.rs).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ringxfer_ipc::dispatch::Dispatcher;
use ringxfer_ipc::{Completion, JobError, JobHandle};

use crate::progress_json::{JsonProgress, Snapshot};

/// How often the bar is refreshed from the handle's counters.
const POLL: Duration = Duration::from_millis(100);

/// Jobs that finish sooner never show a bar: a bar that flashes and vanishes
/// is noise, and most small copies end well within this.
const SHOW_AFTER: Duration = Duration::from_secs(1);

const BAR_TEMPLATE: &str =
    "{wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}";
/// For sources whose length the engine cannot know in advance (sockets).
const SPINNER_TEMPLATE: &str = "{spinner} {binary_bytes} {binary_bytes_per_sec} {elapsed}";

/// How a command shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Off,
    /// A bar on stderr: stderr is a terminal, and neither -q nor --json.
    Bar,
    /// `--json --progress`: objects on stdout.
    Json,
}

impl Show {
    /// Whether anything is shown, so the engine's progress events are worth asking for.
    pub fn any(self) -> bool {
        self != Show::Off
    }
}

/// What a single transfer is, for its progress objects: the command, and
/// the file being moved.
#[derive(Debug, Clone, Copy)]
pub struct Moving<'a> {
    pub op: &'static str,
    pub current: Option<&'a str>,
}

/// Something else the wait for a job watches: when `fd` is readable,
/// `act` runs (the signals a copy takes: it exits if one came).
#[derive(Clone, Copy)]
pub struct Also<'a> {
    pub fd: BorrowedFd<'a>,
    pub act: fn(),
}

/// Waits for the job to end, reading the connection's events with
/// `events` (and watching `also`), and shows its progress as `show` says:
/// a bar once the job has run for [`SHOW_AFTER`] (cleared before
/// returning, so the final line stands alone), or progress objects.
pub fn wait(
    events: &mut Dispatcher<'_>,
    also: Option<Also<'_>>,
    handle: &JobHandle,
    show: Show,
    what: Moving<'_>,
) -> Result<Completion, JobError> {
    let mut wait = |timeout| wait_for(events, also, handle, timeout);
    match show {
        Show::Off => wait(None).unwrap_or_else(|| handle.wait()),
        Show::Bar => wait_with_bar(handle, wait),
        Show::Json => wait_with_json(handle, wait, what),
    }
}

/// The job's result once it ended, reading events until then or for at most
/// `timeout` (`None`: until it ends); `None` if it is still running.
fn wait_for(
    events: &mut Dispatcher<'_>,
    also: Option<Also<'_>>,
    handle: &JobHandle,
    timeout: Option<Duration>,
) -> Option<Result<Completion, JobError>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if handle.is_finished() {
            return Some(handle.wait());
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return None,
            },
            None => None,
        };
        let ready = match readable(events.fd(), also.map(|a| a.fd), left) {
            Ok(ready) => ready,
            Err(err) => return Some(Err(JobError::Disconnected(err.to_string()))),
        };
        if let (Some(also), true) = (also, ready.1) {
            (also.act)();
        }
        if !ready.0 {
            continue;
        }
        if let Err(err) = events.dispatch(Some(Duration::ZERO)) {
            // The connection's end resolved the job; a failed wait did not.
            if handle.is_finished() {
                return Some(handle.wait());
            }
            return Some(Err(JobError::Disconnected(err.to_string())));
        }
    }
}

/// Waits at most `timeout` (`None`: for as long as it takes) for `fd` or
/// `also` to be readable (or hung up): which are.
fn readable(
    fd: BorrowedFd<'_>,
    also: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> std::io::Result<(bool, bool)> {
    let ms = timeout.map_or(-1, |t| {
        t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
    });
    let watch = |fd: Option<BorrowedFd<'_>>| libc::pollfd {
        // A negative descriptor is skipped by poll(2).
        fd: fd.map_or(-1, |f| f.as_raw_fd()),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [watch(Some(fd)), watch(also)];
    loop {
        // SAFETY: two pollfds that live across the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if rc >= 0 {
            return Ok((fds[0].revents != 0, fds[1].revents != 0));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn wait_with_bar(
    handle: &JobHandle,
    mut wait: impl FnMut(Option<Duration>) -> Option<Result<Completion, JobError>>,
) -> Result<Completion, JobError> {
    // The bar is fed from the start but drawn nowhere until SHOW_AFTER, so
    // that its rate and ETA estimates already know the first second's work
    // when it appears, instead of seeing it as one instantaneous jump.
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        .with_style(style(SPINNER_TEMPLATE));
    let mut drawn = false;
    loop {
        if let Some(result) = wait(Some(POLL)) {
            bar.finish_and_clear();
            return result;
        }
        // The total may arrive with a later progress event (and never, for a
        // socket source); switch from spinner to bar when it does.
        if let Some(total) = handle.total() {
            if bar.length() != Some(total) {
                bar.set_length(total);
                bar.set_style(style(BAR_TEMPLATE));
            }
        }
        bar.set_position(handle.bytes_so_far());
        if !drawn && bar.elapsed() >= SHOW_AFTER {
            // stderr, not stdout: stdout may be a script's JSON.
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(POLL);
            drawn = true;
        }
    }
}

/// Prints an object every second while the job runs, and one when it ended.
fn wait_with_json(
    handle: &JobHandle,
    mut wait: impl FnMut(Option<Duration>) -> Option<Result<Completion, JobError>>,
    what: Moving<'_>,
) -> Result<Completion, JobError> {
    let mut json = JsonProgress::new(what.op);
    let snapshot = |done: Option<&Result<Completion, JobError>>| {
        let bytes = match done {
            Some(Ok(c)) => c.bytes,
            _ => handle.bytes_so_far(),
        };
        let total = match done {
            Some(Ok(c)) => Some(c.bytes),
            _ => handle.total(),
        };
        Snapshot {
            bytes,
            total,
            total_known: total.is_some(),
            files_done: u64::from(done.is_some()),
            files_total: 1,
            current: what.current,
        }
    };
    loop {
        if let Some(result) = wait(Some(POLL)) {
            json.print(&snapshot(Some(&result)));
            return result;
        }
        if json.due() {
            json.print(&snapshot(None));
        }
    }
}

/// For multi-file copies: bytes moved against bytes submitted so far (the
/// total grows while the walk goes on), files in the message.
const TREE_TEMPLATE: &str =
    "{wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {msg}";

/// The progress of a multi-file copy, fed as files are submitted, move and
/// finish: a bar drawn (like the single-file bar) only once the copy has
/// run for [`SHOW_AFTER`], or progress objects.
pub struct TreeProgress {
    bar: Option<ProgressBar>,
    json: Option<JsonProgress>,
    drawn: bool,
    /// Files finished (copied or failed), and submitted.
    files: u64,
    files_total: u64,
    /// Bytes of the files submitted.
    total: u64,
    /// Bytes of the files copied.
    finished: u64,
    /// Bytes counted: of the files copied and, of the files still moving,
    /// what they moved. Never goes back.
    position: u64,
    /// The walk ended: no file joins the totals any more.
    total_known: bool,
}

impl TreeProgress {
    pub fn new(show: Show) -> TreeProgress {
        let bar = (show == Show::Bar).then(|| {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden())
                .with_style(style(TREE_TEMPLATE))
        });
        TreeProgress {
            bar,
            json: (show == Show::Json).then(|| JsonProgress::new("copy")),
            drawn: false,
            files: 0,
            files_total: 0,
            total: 0,
            finished: 0,
            position: 0,
            total_known: false,
        }
    }

    /// A file was submitted: its bytes join the total.
    pub fn add_total(&mut self, bytes: u64) {
        self.files_total += 1;
        self.total += bytes;
        if let Some(bar) = &self.bar {
            bar.inc_length(bytes);
        }
    }

    /// Whether progress is shown (or will be): whether moving bytes are
    /// worth counting.
    pub fn shown(&self) -> bool {
        self.bar.is_some() || self.json.is_some()
    }

    /// A file was published.
    pub fn file_done(&mut self, bytes: u64) {
        self.files += 1;
        self.finished += bytes;
        self.advance(self.finished);
        let Some(bar) = &self.bar else { return };
        // Formatting the message for each of 10,000 files would cost more
        // than the bar is worth; every 64th is plenty at 10 redraws a second.
        if self.files % 64 == 1 {
            bar.set_message(format!("{} files", self.files));
        }
        self.draw_when_due();
    }

    /// A submitted file failed: it is done, having moved nothing that stays.
    pub fn file_failed(&mut self) {
        self.files += 1;
    }

    /// Bytes of files still in flight have moved: they are counted as
    /// they go, so a large file shows before it is done.
    pub fn moving(&mut self, in_flight: u64) {
        self.advance(self.finished + in_flight);
        self.draw_when_due();
    }

    fn advance(&mut self, to: u64) {
        // Never back: the bytes of files still moving may be counted already.
        self.position = self.position.max(to);
        if let Some(bar) = &self.bar {
            bar.set_position(self.position);
        }
    }

    /// The walk ended: the totals are final.
    pub fn walk_done(&mut self) {
        self.total_known = true;
    }

    /// Whether a progress object is due.
    pub fn json_due(&self) -> bool {
        self.json.as_ref().is_some_and(JsonProgress::due)
    }

    /// Prints a progress object, naming the file being moved.
    pub fn print_json(&mut self, current: Option<&str>) {
        let now = Snapshot {
            bytes: self.position,
            total: Some(self.total),
            total_known: self.total_known,
            files_done: self.files,
            files_total: self.files_total,
            current,
        };
        if let Some(json) = &mut self.json {
            json.print(&now);
        }
    }

    /// Shows the bar once the copy has run for [`SHOW_AFTER`].
    fn draw_when_due(&mut self) {
        let Some(bar) = &self.bar else { return };
        if !self.drawn && bar.elapsed() >= SHOW_AFTER {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(POLL);
            self.drawn = true;
        }
    }

    /// Runs `print` with the bar out of the way, so a message is not drawn
    /// over it.
    pub fn suspend<T>(&self, print: impl FnOnce() -> T) -> T {
        match &self.bar {
            Some(bar) if self.drawn => bar.suspend(print),
            _ => print(),
        }
    }

    /// The copy ended: the bar goes, and the last progress object says
    /// where it ended.
    pub fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.print_json(None);
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants checked by a test; falling back keeps a
    // typo from ever turning into a panic mid-transfer.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
        assert!(ProgressStyle::with_template(SPINNER_TEMPLATE).is_ok());
        assert!(ProgressStyle::with_template(TREE_TEMPLATE).is_ok());
    }
}
