//! Log output: tracing events to stderr, and the filter that selects them.
//!
//! Owns the global subscriber and the handle that swaps its filter on
//! reload. Under systemd (stderr is the journal's stream) each line starts
//! with a syslog priority (`<3>` … `<7>`) that journald turns into the
//! entry's priority, and carries no timestamp or colours (the journal adds
//! its own). It must not decide what is logged where: callers do.

use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The filter of the installed subscriber; `None` inside it when `RUST_LOG`
/// chose the filter, which then wins over every reload as it won at start.
static FILTER: OnceLock<Option<reload::Handle<EnvFilter, Registry>>> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("cannot install the logger: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
    #[error("cannot swap the log filter: {0}")]
    Reload(#[from] reload::Error),
}

/// Installs the process's logger with `filter`, unless `RUST_LOG` is set.
pub fn init(filter: &str) -> Result<(), LogError> {
    let from_env = EnvFilter::try_from_default_env().ok();
    let pinned = from_env.is_some();
    let (filter, handle) = reload::Layer::new(match from_env {
        Some(filter) => filter,
        None => EnvFilter::try_new(filter)?,
    });
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // systemd sets JOURNAL_STREAM when it connects stdout/stderr to the journal.
    let journal = !terminal && std::env::var_os("JOURNAL_STREAM").is_some();
    let plain = (!journal)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(terminal));
    let journald = journal.then(|| {
        let inner = format::Format::default().without_time().with_target(false).with_ansi(false);
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false).event_format(Priority(inner))
    });
    tracing_subscriber::registry().with(filter).with(plain).with(journald).try_init()?;
    let _ = FILTER.set((!pinned).then_some(handle));
    Ok(())
}

/// Replaces the filter; `Ok(false)` when `RUST_LOG` pins it or no logger
/// was installed by [`init`].
pub fn set_filter(filter: &str) -> Result<bool, LogError> {
    let Some(Some(handle)) = FILTER.get() else { return Ok(false) };
    handle.reload(EnvFilter::try_new(filter)?)?;
    Ok(true)
}

/// Prefixes each line with its syslog priority, as journald reads stderr.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
