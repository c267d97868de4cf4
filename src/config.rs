//! Command-line settings every synclab service shares, named alike everywhere: `--clock-offset`,
//! `--clock-drift-ppm`, `--step-threshold`, `--max-slew-ppm`, `--log-format`, `--log-level`. Each flag
//! falls back to an environment variable `SYNCLAB_<FLAG>` (what docker-compose.yml sets).

use clap::Args;

use crate::clock::{ClockConfig, MAX_DRIFT_PPM, MAX_SLEW_PPM};
use crate::duration::parse_signed_nanos;
use crate::telemetry::LogFormat;

/// How this process's virtual clock starts and is adjusted.
#[derive(Debug, Clone, Args)]
pub struct ClockArgs {
    /// Initial offset of this node's virtual clock from true time, e.g. +2.5s, -300ms, 0.
    #[arg(long, env = "SYNCLAB_CLOCK_OFFSET", value_name = "OFFSET", default_value = "0", value_parser = parse_offset, allow_hyphen_values = true)]
    pub clock_offset: i64,
    /// Frequency error of this node's virtual clock in ppm (positive runs fast), within ±100000.
    #[arg(long, env = "SYNCLAB_CLOCK_DRIFT_PPM", value_name = "PPM", default_value_t = 0.0, value_parser = parse_drift, allow_hyphen_values = true)]
    pub clock_drift_ppm: f64,
    /// Corrections at least this large step the clock; smaller ones slew it.
    #[arg(long, env = "SYNCLAB_STEP_THRESHOLD", value_name = "DURATION", default_value = "128ms", value_parser = parse_threshold)]
    pub step_threshold: i64,
    /// Rate at which slews are applied, in ppm (at most 500000).
    #[arg(long, env = "SYNCLAB_MAX_SLEW_PPM", value_name = "PPM", default_value_t = 500.0, value_parser = parse_slew)]
    pub max_slew_ppm: f64,
}

impl ClockArgs {
    /// The clock configuration these flags describe.
    pub fn config(&self) -> ClockConfig {
        ClockConfig {
            offset_nanos: self.clock_offset,
            drift_ppm: self.clock_drift_ppm,
            step_threshold_nanos: self.step_threshold,
            max_slew_ppm: self.max_slew_ppm,
        }
    }
}

/// How this process logs.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "SYNCLAB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, e.g. info, debug, synclab=trace.
    #[arg(long, env = "SYNCLAB_LOG_LEVEL", value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

fn parse_offset(text: &str) -> Result<i64, String> {
    let nanos = parse_signed_nanos(text).map_err(|e| e.to_string())?;
    if nanos.unsigned_abs() > crate::clock::MAX_OFFSET_NANOS as u64 {
        return Err(format!("'{text}' is beyond the ±10 years a clock may be off"));
    }
    Ok(nanos)
}

fn parse_threshold(text: &str) -> Result<i64, String> {
    let nanos = parse_signed_nanos(text).map_err(|e| e.to_string())?;
    if nanos < 0 {
        return Err(format!("'{text}' is negative"));
    }
    Ok(nanos)
}

fn parse_ppm(text: &str, max: f64) -> Result<f64, String> {
    let ppm: f64 = text.trim().parse().map_err(|_| format!("'{text}' is not a number"))?;
    if !ppm.is_finite() || ppm.abs() > max {
        return Err(format!("{text} ppm is outside ±{max} ppm"));
    }
    Ok(ppm)
}

fn parse_drift(text: &str) -> Result<f64, String> {
    parse_ppm(text, MAX_DRIFT_PPM)
}

fn parse_slew(text: &str) -> Result<f64, String> {
    let ppm = parse_ppm(text, MAX_SLEW_PPM)?;
    if ppm <= 0.0 {
        return Err(format!("{text} ppm must be positive"));
    }
    Ok(ppm)
}

/// Parses a positive duration flag (intervals, timeouts) for clap.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse_positive(text).map_err(|e| e.to_string())
}
