//! Progress while a run ramps up and runs: an indicatif bar on stderr when
//! stderr is a terminal, otherwise one status line on stderr every 5 s (so
//! logs of long runs still show where they are). It only displays what the
//! caller's status closure reports; it measures nothing itself.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the bar is redrawn on a terminal.
const TTY_EVERY: Duration = Duration::from_millis(250);
/// How often a status line is printed otherwise.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// One phase's display; stops when finished or dropped.
pub(crate) struct Progress {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

impl Progress {
    /// Shows `prefix`, a position out of `len` and a message, both from
    /// `status` (called every redraw, so it may compute rates from the
    /// previous call).
    pub(crate) fn start(
        prefix: &'static str,
        len: u64,
        mut status: impl FnMut() -> (u64, String) + Send + 'static,
    ) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if tty {
            let style = ProgressStyle::with_template("{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
                .expect("a valid template");
            bar.set_style(style);
            bar.set_prefix(prefix);
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let every = if tty { TTY_EVERY } else { LOG_EVERY };
            let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                ticker.tick().await;
                let (pos, msg) = status();
                if tty {
                    shown.set_position(pos.min(len));
                    shown.set_message(msg);
                } else {
                    eprintln!("  {prefix} {pos}/{len} {msg}");
                }
            }
        });
        Self { bar, task }
    }
}

/// A ramp-up: `done` of `total`, and how many per second.
pub(crate) fn ramp(prefix: &'static str, total: u64, done: Arc<AtomicU64>) -> Progress {
    let mut rate = Rate::new();
    Progress::start(prefix, total, move || {
        let now = done.load(Relaxed);
        (now, format!("{:.0}/s", rate.per_s(now)))
    })
}

/// The measured run, from `start` for `duration`: seconds elapsed, and `msg`.
pub(crate) fn run(start: Instant, duration: Duration, mut msg: impl FnMut() -> String + Send + 'static) -> Progress {
    Progress::start("run", duration.as_secs(), move || {
        (Instant::now().saturating_duration_since(start).as_secs(), msg())
    })
}

/// Dropping the display removes the bar (the final table follows).
impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// A `status` closure's rate: the change of `now` since the previous call, per second.
pub(crate) struct Rate {
    last: u64,
    at: std::time::Instant,
}

impl Rate {
    pub(crate) fn new() -> Self {
        Self { last: 0, at: std::time::Instant::now() }
    }

    pub(crate) fn per_s(&mut self, now: u64) -> f64 {
        let secs = self.at.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { now.saturating_sub(self.last) as f64 / secs } else { 0.0 };
        (self.last, self.at) = (now, std::time::Instant::now());
        rate
    }
}
