//! Logging: `tracing` to stderr, human-readable by default, one JSON object per line on request.

use tracing_subscriber::EnvFilter;

/// The log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter did not parse.
    #[error("bad --log-level '{filter}': {reason}")]
    BadFilter { filter: String, reason: String },
    /// Logging was set up already.
    #[error("logging is already set up: {0}")]
    AlreadySet(String),
}

/// Sets up logging for the process, once.
pub fn init(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let env_filter =
        EnvFilter::try_new(filter).map_err(|e| TelemetryError::BadFilter { filter: filter.to_string(), reason: e.to_string() })?;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // Colours only for a person at a terminal: container logs and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter).with_writer(std::io::stderr).with_ansi(ansi);
    // Each INFO (or lower) callsite writes a bounded number of lines per period: no flood fills a disk.
    let budget = crate::log_budget::BudgetLayer::default();
    let result = match format {
        LogFormat::Text => builder.finish().with(budget).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).finish().with(budget).try_init(),
    };
    result.map_err(|e| TelemetryError::AlreadySet(e.to_string()))
}

/// Refused requests, counted by kind and logged sparingly: the first of each kind at once, then at most
/// one line per kind per period with how many more there were. A flood of bad requests costs a few log
/// lines, not one line each.
#[derive(Debug)]
pub struct Refusals {
    what: &'static str,
    period: std::time::Duration,
    tallies: std::sync::Mutex<std::collections::BTreeMap<&'static str, Tally>>,
}

#[derive(Debug, Default)]
struct Tally {
    total: u64,
    unlogged: u64,
    last_logged: Option<std::time::Instant>,
}

impl Refusals {
    /// Refusals of `what` (e.g. "election message"), summarized every 10 s.
    pub fn new(what: &'static str) -> Self {
        Self { what, period: std::time::Duration::from_secs(10), tallies: Default::default() }
    }

    /// Counts a refusal of kind `kind` (a fixed string, e.g. "unknown sender"); logs it if it is the
    /// first of its kind or the period has passed since the kind was last logged.
    pub fn refused(&self, kind: &'static str, detail: &dyn std::fmt::Display) {
        let mut tallies = crate::lock::lock(&self.tallies);
        let tally = tallies.entry(kind).or_default();
        tally.total += 1;
        tally.unlogged += 1;
        let due = tally.last_logged.is_none_or(|at| at.elapsed() >= self.period);
        if due {
            let (what, n, total) = (self.what, tally.unlogged, tally.total);
            if total == 1 {
                tracing::warn!(%what, kind, %detail, "refused");
            } else {
                tracing::warn!(%what, kind, refused = n, total, latest = %detail, "refused (summary since the last line of this kind)");
            }
            tally.unlogged = 0;
            tally.last_logged = Some(std::time::Instant::now());
        }
    }

    /// How many refusals of each kind so far.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        crate::lock::lock(&self.tallies).iter().map(|(k, t)| (*k, t.total)).collect()
    }
}
