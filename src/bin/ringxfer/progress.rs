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
    }
}
