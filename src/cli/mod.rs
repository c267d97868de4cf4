//! Every flag parser and validator of synclab's binaries, in one place.
//!
//! The settings every service shares are named alike everywhere: `--clock-offset`,
//! `--clock-drift-ppm`, `--step-threshold`, `--max-slew-ppm`, `--log-format`, `--log-level`
//! ([`ClockArgs`], [`LogArgs`]). Each flag falls back to an environment variable `SYNCLAB_<FLAG>`
//! (what docker-compose.yml sets). The parsers return a message without the flag's name; clap adds it,
//! so every error names its flag.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use synclab_core::Named;
use synclab_core::clock::{ClockConfig, MAX_OFFSET_NANOS, MAX_SLEW_PPM, check_drift_ppm};
use synclab_core::duration::{parse_positive, parse_signed_nanos};
use synclab_core::election::{Detector, NodeId, Timers};
use synclab_core::name::check_name;

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
    #[arg(long, env = "SYNCLAB_STEP_THRESHOLD", value_name = "DURATION", default_value = "128ms", value_parser = parse_nonnegative_nanos)]
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

/// Mutual TLS: all three, or none (plaintext).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// The lab CA's certificate (PEM): peers must present a certificate it signed. With --tls-cert and
    /// --tls-key, turns on mutual TLS (without all three: plaintext).
    #[arg(long, env = "SYNCLAB_TLS_CA", value_name = "FILE", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This process's certificate (PEM); its Common Name is the identity peers see.
    #[arg(long, env = "SYNCLAB_TLS_CERT", value_name = "FILE", global = true)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// This process's private key (PEM).
    #[arg(long, env = "SYNCLAB_TLS_KEY", value_name = "FILE", global = true)]
    pub tls_key: Option<std::path::PathBuf>,
    /// How often a service looks at its three TLS files: when one changes it reloads them (new
    /// connections use them, those in flight finish; files that fail a check keep the ones in use, and
    /// the log says why). SIGHUP reloads at once. 0: on SIGHUP only.
    #[arg(long, env = "SYNCLAB_TLS_RELOAD_INTERVAL", value_name = "DURATION", default_value = "1s", value_parser = parse_nonnegative_duration, global = true)]
    pub tls_reload_interval: Duration,
}

impl TlsArgs {
    /// Loads and checks the TLS files: `None` when no flag is given; an error naming the file and the
    /// problem (or the flags missing) otherwise.
    pub fn load(&self) -> Result<Option<crate::tls::Tls>, crate::tls::TlsError> {
        crate::tls::Tls::from_flags(self.tls_ca.as_deref(), self.tls_cert.as_deref(), self.tls_key.as_deref())
    }

    /// For a service: loads the TLS files as [`TlsArgs::load`] does, and keeps them current until
    /// `stop` (reloaded when they change or on SIGHUP, [`crate::tls::reload`]).
    pub fn start(&self, stop: &crate::stop::Stop) -> Result<Option<crate::tls::Tls>, crate::tls::TlsError> {
        let tls = self.load()?;
        self.keep_current(tls.as_ref(), stop);
        Ok(tls)
    }

    /// Keeps `tls` (loaded from these flags) current until `stop`: reloaded when its files change
    /// (looked at every --tls-reload-interval) or on SIGHUP.
    pub fn keep_current(&self, tls: Option<&crate::tls::Tls>, stop: &crate::stop::Stop) {
        if let Some(tls) = tls {
            let every = Some(self.tls_reload_interval).filter(|d| !d.is_zero());
            crate::tls::reload::watch(tls.clone(), every, stop.clone());
        }
    }

    /// A dialer for these flags.
    pub fn dialer(&self) -> Result<crate::rpc::Dialer, crate::tls::TlsError> {
        Ok(crate::rpc::Dialer::new(self.load()?))
    }
}

/// Whether this process takes faults from a lab.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct LabArgs {
    /// Serve synclab.lab.v1.Lab, through which an experiment (`synclab lab`) bumps, strobes or drifts
    /// this process's clock and breaks its links. Off by default; with TLS only the `lab` identity may
    /// use it. SYNCLAB_LAB takes 1/0, true/false, yes/no or on/off.
    #[arg(long, env = "SYNCLAB_LAB", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub lab: bool,
}

/// An election group's timers and failure detector: `election-node`'s, and those of the groups `synclab
/// lab` makes itself (`--local`, `--sim`).
#[derive(Debug, Clone, Copy, Args)]
pub struct TimerArgs {
    /// How often the coordinator sends Alive to its followers (a follower that has not heard from it for
    /// one and a half of these asks it with an Alive of its own).
    #[arg(long, env = "SYNCLAB_HEARTBEAT", value_name = "DURATION", default_value = "50ms", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Silence from the coordinator after which a follower suspects it and holds an election.
    #[arg(long, env = "SYNCLAB_TIMEOUT", value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How a follower finds its coordinator silent: `fixed`, the textbook's, after --timeout of silence;
    /// or `adaptive`, a φ-accrual detector that learns the coordinator's heartbeat inter-arrival times and
    /// suspects it at a false-suspicion probability of 10^-8 per heartbeat, never sooner than 2.2
    /// heartbeats of silence nor later than 20. `adaptive` with a 25 ms heartbeat replaces a silent
    /// coordinator in under 100 ms, but a machine whose cores are saturated makes it elect falsely where
    /// the fixed timeout does not, so `fixed` is the default (BENCHMARKS.md, issue #32).
    #[arg(long, env = "SYNCLAB_DETECTOR", value_parser = named::<Detector>(), default_value = "fixed")]
    pub detector: Detector,
}

impl TimerArgs {
    /// The group's timers, checked by the core's rule between the two, as an error naming the flags.
    pub fn timers(&self) -> Result<Timers, String> {
        let timers = Timers { heartbeat: self.heartbeat, timeout: self.timeout, detector: self.detector };
        timers.check().map_err(|e| format!("--heartbeat {:?} and --timeout {:?}: {e}", self.heartbeat, self.timeout))?;
        Ok(timers)
    }
}

/// Whether this process serves Prometheus metrics.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 0.0.0.0:9100 (omit: no metrics listener).
    /// With TLS: https://, and only a client certificate for prometheus, observer or dashboard is answered.
    #[arg(long, env = "SYNCLAB_METRICS_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl MetricsArgs {
    /// Starts the metrics listener when asked for (over HTTPS when `tls` is given), with `clocks` read at each scrape (it stops with
    /// `stop`; await the task to see it closed); `None` when not asked for.
    pub async fn serve(
        &self,
        clocks: crate::clock::ClockSet,
        tls: Option<&crate::tls::Tls>,
        stop: crate::server::Stop,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, crate::observe::BindError> {
        let Some(addr) = self.metrics_listen else { return Ok(None) };
        let (_, task) = crate::observe::serve(addr, tls, stop).await?;
        crate::observe::watch_clocks(clocks);
        Ok(Some(task))
    }
}

/// Parses an address to listen on: IP:PORT (e.g. 0.0.0.0:9100, 127.0.0.1:0, [::1]:9100).
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    text.trim().parse().map_err(|_| format!("'{text}' is not IP:PORT (e.g. 0.0.0.0:9100)"))
}

/// The time server's NTP endpoint.
#[derive(Debug, Clone, Args)]
pub struct NtpServerArgs {
    /// Also answer NTPv4 client requests on this UDP address (e.g. 0.0.0.0:123), from the same clock as
    /// GetTime. Without it no UDP socket is opened.
    #[arg(long, env = "SYNCLAB_NTP_LISTEN", value_name = "ADDR", value_parser = parse_address)]
    pub ntp_listen: Option<String>,
    /// NTP requests per second answered per client address; above it a RATE kiss-o'-death, then
    /// silence. 0 turns the limit off.
    #[arg(long, env = "SYNCLAB_NTP_RATE_LIMIT", value_name = "PER_SECOND", default_value_t = 256)]
    pub ntp_rate_limit: u32,
    /// NTP requests a client may send at once above the rate limit.
    #[arg(long, env = "SYNCLAB_NTP_BURST", value_name = "COUNT", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub ntp_burst: u32,
    /// Serve Network Time Security (RFC 8915): an NTS-KE listener (TLS 1.3, the --tls-cert and
    /// --tls-key certificate) on 0.0.0.0:4460 unless --nts-ke-listen says where, and NTS-authenticated
    /// NTP on --ntp-listen. SYNCLAB_NTS takes 1/0, true/false, yes/no or on/off.
    #[arg(long, env = "SYNCLAB_NTS", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub nts: bool,
    /// The NTS-KE listener's TCP address (turns NTS on).
    #[arg(long, env = "SYNCLAB_NTS_KE_LISTEN", value_name = "ADDR", value_parser = parse_address)]
    pub nts_ke_listen: Option<String>,
    /// Answer only NTS-authenticated NTP requests; plain ones get no answer (needs NTS on).
    #[arg(long, env = "SYNCLAB_NTP_REQUIRE_NTS", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub ntp_require_nts: bool,
}

impl NtpServerArgs {
    /// Where NTS-KE listens, when NTS is on.
    pub fn nts_ke_addr(&self) -> Option<String> {
        match (&self.nts_ke_listen, self.nts || self.ntp_require_nts) {
            (Some(addr), _) => Some(addr.clone()),
            (None, true) => Some(format!("0.0.0.0:{}", synclab_core::ntp::nts::ke::DEFAULT_KE_PORT)),
            (None, false) => None,
        }
    }
}

/// Which protocol a client syncs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// synclab's TimeService over gRPC.
    #[default]
    Grpc,
    /// NTPv4 over UDP, from any NTP server.
    Ntp,
}

impl Named for Protocol {
    const ALL: &'static [Self] = &[Protocol::Grpc, Protocol::Ntp];

    fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Ntp => "ntp",
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

/// Parses a clock offset: a signed duration within the ±10 years a clock may be off.
pub fn parse_offset(text: &str) -> Result<i64, String> {
    let nanos = parse_signed_nanos(text).map_err(|e| e.to_string())?;
    if nanos.unsigned_abs() > MAX_OFFSET_NANOS as u64 {
        return Err(format!("'{text}' is beyond the ±10 years a clock may be off"));
    }
    Ok(nanos)
}

/// Parses a duration of zero or more, in nanoseconds (a threshold, a dispersion).
pub fn parse_nonnegative_nanos(text: &str) -> Result<i64, String> {
    let nanos = parse_signed_nanos(text).map_err(|e| e.to_string())?;
    if nanos < 0 {
        return Err(format!("'{text}' is negative"));
    }
    Ok(nanos)
}

/// Parses a strictly positive duration, in nanoseconds (a largest adjustment).
pub fn parse_positive_nanos(text: &str) -> Result<i64, String> {
    match parse_signed_nanos(text) {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err(format!("'{text}' must be positive")),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_number(text: &str) -> Result<f64, String> {
    text.trim().parse().map_err(|_| format!("'{text}' is not a number"))
}

/// Parses a drift in ppm, by the clock's own rule (`synclab_core::clock::check_drift_ppm`).
pub fn parse_drift(text: &str) -> Result<f64, String> {
    check_drift_ppm(parse_number(text)?).map_err(|e| e.to_string())
}

/// Parses a slew rate in ppm: positive, at most 500000.
pub fn parse_slew(text: &str) -> Result<f64, String> {
    let ppm = parse_number(text)?;
    if !(ppm.is_finite() && ppm > 0.0 && ppm <= MAX_SLEW_PPM) {
        return Err(format!("{text} ppm must be positive and at most {MAX_SLEW_PPM} ppm"));
    }
    Ok(ppm)
}

/// Parses a positive duration (intervals, timeouts).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_positive(text).map_err(|e| e.to_string())
}

/// Parses a duration of zero or more (a delay that may be off).
pub fn parse_nonnegative_duration(text: &str) -> Result<Duration, String> {
    parse_nonnegative_nanos(text).map(|n| Duration::from_nanos(n.unsigned_abs()))
}

/// Parses a name (of a clock, a device, a Berkeley member) by the one naming rule.
pub fn parse_name(text: &str) -> Result<String, String> {
    check_name(text).map_err(|e| e.to_string())?;
    Ok(text.to_string())
}

/// A parser for an enum with fixed names (`synclab_core::Named`): clap lists the names in the help
/// and in the error for any other value.
pub fn named<T: Named + Clone + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::ALL.iter().map(|v| v.as_str())).try_map(|name: String| T::from_name(&name).ok_or(name))
}

/// A device to sync: its name and, optionally, its own wrong clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub name: String,
    pub offset: Option<i64>,
    pub drift_ppm: Option<f64>,
}

/// Parses `--device`: `NAME` or `NAME=OFFSET[/DRIFT_PPM]`, e.g. `mobile=+3s/40`.
pub fn parse_device(text: &str) -> Result<Device, String> {
    let (name, clock) = match text.split_once('=') {
        Some((name, clock)) => (name.trim(), Some(clock)),
        None => (text.trim(), None),
    };
    check_name(name).map_err(|e| format!("device name '{name}': {e}"))?;
    let mut device = Device { name: name.to_string(), offset: None, drift_ppm: None };
    if let Some(clock) = clock {
        let (offset, drift) = match clock.split_once('/') {
            Some((o, d)) => (o, Some(d)),
            None => (clock, None),
        };
        device.offset = Some(parse_offset(offset).map_err(|e| format!("device '{name}': {e}"))?);
        if let Some(d) = drift {
            device.drift_ppm = Some(parse_drift(d).map_err(|e| format!("device '{name}': drift {e}"))?);
        }
    }
    Ok(device)
}

/// Parses an address others dial: `HOST:PORT` (`synclab_core::name::check_address`).
pub fn parse_address(text: &str) -> Result<String, String> {
    synclab_core::name::check_address(text).map_err(|e| e.to_string())?;
    Ok(text.to_string())
}

/// Parses `NAME=HOST:PORT` (where to reach a named member).
pub fn parse_member(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, addr)) if !name.is_empty() && !addr.is_empty() => Ok((name.to_string(), addr.to_string())),
        _ => Err(format!("'{text}' is not NAME=HOST:PORT")),
    }
}

/// Parses a node id: a positive integer that fits the wire's `int64`.
pub fn parse_id(text: &str) -> Result<NodeId, String> {
    match text.trim().parse::<i128>() {
        Ok(n) if n > 0 && n <= i64::MAX as i128 => Ok(n as NodeId),
        Ok(n) if n > 0 => Err(format!("node id {n} is too large")),
        Ok(n) => Err(format!("node id {n} is not positive")),
        Err(_) => Err(format!("node id '{text}' is not a number")),
    }
}

/// Parses `--peers`: `ID=HOST:PORT` entries separated by commas, e.g. `1=node-1:50054,2=node-2:50054`.
/// Ids are positive and listed once.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut peers = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((id, addr)) = entry.split_once('=') else {
            return Err(format!("'{entry}' is not ID=HOST:PORT"));
        };
        let id = parse_id(id).map_err(|e| format!("'{entry}': {e}"))?;
        let addr = addr.trim();
        if addr.is_empty() || !addr.contains(':') {
            return Err(format!("'{entry}': the address must be HOST:PORT"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".into());
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_with_their_own_clocks() {
        assert_eq!(parse_device("laptop"), Ok(Device { name: "laptop".into(), offset: None, drift_ppm: None }));
        assert_eq!(parse_device("mobile=+3s/40"), Ok(Device { name: "mobile".into(), offset: Some(3_000_000_000), drift_ppm: Some(40.0) }));
        for bad in ["a b", "x=+1q", "x=1s/1e9", "x=1s/abc", "=1s", "x=11000d"] {
            assert!(parse_device(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peers_and_ids_parse_strictly() {
        let peers = parse_peers("1=a:1, 2=b:2").unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[&2], "b:2");
        for (bad, why) in [
            ("1=a:1,2", "'2' is not ID=HOST:PORT"),
            ("1=a:1,1=b:2", "node 1 is listed twice"),
            ("1=a:1,-2=b:2", "node id -2 is not positive"),
            ("1=a:1,2=nohost", "HOST:PORT"),
            ("", "no peers"),
            ("9223372036854775808=a:1", "too large"),
        ] {
            let err = parse_peers(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn rates_and_offsets_keep_the_clock_s_limits() {
        assert_eq!(parse_drift("-30"), Ok(-30.0));
        assert!(parse_drift("100001").is_err());
        assert!(parse_drift("NaN").is_err());
        assert!(parse_slew("0").is_err());
        assert!(parse_slew("500001").is_err());
        assert_eq!(parse_offset("-1.7s"), Ok(-1_700_000_000));
        assert!(parse_offset("5").is_err());
        assert_eq!(parse_positive_nanos("1h"), Ok(3_600_000_000_000));
        assert!(parse_positive_nanos("0").is_err());
        assert!(parse_nonnegative_nanos("-1ns").is_err());
    }
}
