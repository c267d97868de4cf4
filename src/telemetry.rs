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
    let env_filter = EnvFilter::try_new(filter)
        .map_err(|e| TelemetryError::BadFilter { filter: filter.to_string(), reason: e.to_string() })?;
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    result.map_err(|e| TelemetryError::AlreadySet(e.to_string()))
}
