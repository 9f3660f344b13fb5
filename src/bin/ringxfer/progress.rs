//! Waiting for a job, with a progress bar on stderr when it takes a while.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ringxfer_ipc::{Completion, JobError, JobHandle};

/// How often the bar is refreshed from the handle's counters.
const POLL: Duration = Duration::from_millis(100);

/// Jobs that finish sooner never show a bar: a bar that flashes and vanishes
/// is noise, and most small copies end well within this.
const SHOW_AFTER: Duration = Duration::from_secs(1);

const BAR_TEMPLATE: &str =
    "{wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}";
/// For sources whose length the engine cannot know in advance (sockets).
const SPINNER_TEMPLATE: &str = "{spinner} {binary_bytes} {binary_bytes_per_sec} {elapsed}";

/// Waits for the job to end. With `show` (stderr is a terminal and the user
/// did not ask for quiet or JSON), draws a bar once the job has run for
/// [`SHOW_AFTER`]; the bar is cleared before returning so the final line
/// stands alone.
pub fn wait(handle: JobHandle, show: bool) -> Result<Completion, JobError> {
    if !show {
        return handle.wait();
    }
    // The bar is fed from the start but drawn nowhere until SHOW_AFTER, so
    // that its rate and ETA estimates already know the first second's work
    // when it appears, instead of seeing it as one instantaneous jump.
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        .with_style(style(SPINNER_TEMPLATE));
    let mut drawn = false;
    loop {
        if let Some(result) = handle.wait_timeout(POLL) {
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

/// For multi-file copies: bytes of finished files against bytes submitted so
/// far (the total grows while the walk goes on), files in the message.
const TREE_TEMPLATE: &str =
    "{wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {msg}";

/// The bar of a multi-file copy, fed as files finish, drawn (like the
/// single-file bar) only once the copy has run for [`SHOW_AFTER`].
pub struct TreeBar {
    bar: Option<ProgressBar>,
    drawn: bool,
    files: u64,
    /// Bytes of the files published.
    finished: u64,
}

impl TreeBar {
    pub fn new(show: bool) -> TreeBar {
        let bar = show.then(|| {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden())
                .with_style(style(TREE_TEMPLATE))
        });
        TreeBar {
            bar,
            drawn: false,
            files: 0,
            finished: 0,
        }
    }

    /// A file was submitted: its bytes join the total.
    pub fn add_total(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc_length(bytes);
        }
    }

    /// Whether the bar is shown (or will be): whether moving bytes are worth
    /// counting.
    pub fn shown(&self) -> bool {
        self.bar.is_some()
    }

    /// A file was published.
    pub fn file_done(&mut self, bytes: u64) {
        let Some(bar) = &self.bar else { return };
        self.files += 1;
        self.finished += bytes;
        // Never back: the bytes of files still moving may be counted already.
        bar.set_position(bar.position().max(self.finished));
        // Formatting the message for each of 10,000 files would cost more
        // than the bar is worth; every 64th is plenty at 10 redraws a second.
        if self.files % 64 == 1 {
            bar.set_message(format!("{} files", self.files));
        }
        self.draw_when_due();
    }

    /// Bytes of files still in flight have moved: the bar counts them as
    /// they go, so a large file shows before it is done.
    pub fn moving(&mut self, in_flight: u64) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(bar.position().max(self.finished + in_flight));
        self.draw_when_due();
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
    pub fn suspend(&self, print: impl FnOnce()) {
        match &self.bar {
            Some(bar) if self.drawn => bar.suspend(print),
            _ => print(),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
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
