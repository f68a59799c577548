//! Log output: tracing events to stderr, as text or JSON, and the filter
//! that selects them.
//!
//! Owns the global subscriber and the handle that swaps its filter on
//! reload. Text lines are for people; JSON lines (`log_format = "json"`) are
//! one object each (`timestamp`, `level`, `message`, the event's fields,
//! `target`) for a log pipeline. Under systemd (stderr is the journal's
//! stream) each line starts with a syslog priority (`<3>` … `<7>`) that
//! journald turns into the entry's priority, and a text line carries no
//! timestamp or colours (the journal adds its own). The storage engine's
//! crates report routine work at info, so a filter that does not name them
//! holds them at warn. It must not decide what is logged where: callers do.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// The filter of the installed subscriber; `None` inside it when `RUST_LOG`
/// chose the filter, which then wins over every reload as it won at start.
static FILTER: OnceLock<Option<reload::Handle<EnvFilter, Registry>>> = OnceLock::new();

/// The storage engine's crates (fjall and its LSM tree): each keyspace
/// recovered at start, each flush and compaction is an info line of theirs.
const STORAGE: [&str; 2] = ["fjall", "lsm_tree"];

/// How log lines are written (the `log_format` setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log filter: {0}")]
    Filter(tracing_subscriber::filter::ParseError),
    #[error("cannot install the logger: {0}")]
    Init(tracing_subscriber::util::TryInitError),
    #[error("cannot swap the log filter: {0}")]
    Reload(reload::Error),
}

/// The subscriber the output layer sits on: the registry under the filter.
type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// Installs the process's logger writing `format`, with `filter` unless
/// `RUST_LOG` is set.
pub fn init(filter: &str, format: LogFormat) -> Result<(), LogError> {
    let from_env = std::env::var("RUST_LOG").ok().and_then(|directives| parse(&directives).ok());
    let pinned = from_env.is_some();
    let (filter, handle) = reload::Layer::new(match from_env {
        Some(filter) => filter,
        None => parse(filter)?,
    });
    tracing_subscriber::registry().with(filter).with(output(format)).try_init().map_err(LogError::Init)?;
    let _ = FILTER.set((!pinned).then_some(handle));
    Ok(())
}

/// Whether [`init`] has installed the logger.
pub fn installed() -> bool {
    FILTER.get().is_some()
}

/// Replaces the filter; `Ok(false)` when `RUST_LOG` pins it or no logger
/// was installed by [`init`].
pub fn set_filter(filter: &str) -> Result<bool, LogError> {
    let Some(Some(handle)) = FILTER.get() else { return Ok(false) };
    handle.reload(parse(filter)?).map_err(LogError::Reload)?;
    Ok(true)
}

fn parse(directives: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(quiet_storage(directives)).map_err(LogError::Filter)
}

/// `directives` with `fjall=warn` and `lsm_tree=warn` added, each unless
/// the directives name that crate, when their default level is info, debug
/// or trace: `info` becomes `info,fjall=warn,lsm_tree=warn`, while
/// `info,fjall=info`, `warn` or `heartline=debug` (no default level) stay
/// as they are.
fn quiet_storage(directives: &str) -> String {
    let parts: Vec<&str> = directives.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    let verbose = parts.iter().rev().find_map(|d| d.parse::<LevelFilter>().ok()) > Some(LevelFilter::WARN);
    let names = |krate: &str| {
        parts.iter().any(|d| {
            let target = d.split(['=', '[']).next().unwrap_or_default();
            target.strip_prefix(krate).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
    };
    let mut out = parts.join(",");
    for krate in STORAGE.into_iter().filter(|k| verbose && !names(k)) {
        out.push_str(&format!(",{krate}=warn"));
    }
    out
}

/// The layer that writes lines in `format`, to a terminal or a file, or to
/// the journal (with priorities).
fn output(format: LogFormat) -> Box<dyn Layer<Filtered> + Send + Sync> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // systemd sets JOURNAL_STREAM when it connects stdout/stderr to the journal.
    let journal = !terminal && std::env::var_os("JOURNAL_STREAM").is_some();
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(terminal);
    match (format, journal) {
        (LogFormat::Text, false) => layer.with_target(false).boxed(),
        (LogFormat::Text, true) => {
            let text = format::Format::default().without_time().with_target(false).with_ansi(false);
            layer.event_format(Priority(text)).boxed()
        }
        (LogFormat::Json, false) => layer.json().flatten_event(true).boxed(),
        (LogFormat::Json, true) => {
            let json = format::Format::default().json().flatten_event(true);
            layer.fmt_fields(format::JsonFields::new()).event_format(Priority(json)).boxed()
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_engine_is_held_at_warn_unless_named() {
        for (given, used) in [
            ("info", "info,fjall=warn,lsm_tree=warn"),
            (" debug , heartline=trace", "debug,heartline=trace,fjall=warn,lsm_tree=warn"),
            ("info,fjall=info", "info,fjall=info,lsm_tree=warn"),
            (
                "trace,lsm_tree::compaction=debug,fjall[recover]=info",
                "trace,lsm_tree::compaction=debug,fjall[recover]=info",
            ),
            ("info,fjall_like=debug", "info,fjall_like=debug,fjall=warn,lsm_tree=warn"),
            ("warn", "warn"),
            ("error", "error"),
            ("heartline=debug", "heartline=debug"),
            ("", ""),
        ] {
            assert_eq!(quiet_storage(given), used, "{given:?}");
            assert!(EnvFilter::try_new(used).is_ok(), "{used}");
        }
    }
}
