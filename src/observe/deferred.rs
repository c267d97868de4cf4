//! A recorder installed at once that forwards to the Prometheus recorder once that is built.
//!
//! Building `metrics-exporter-prometheus`'s recorder calibrates `quanta`'s clock against the monotonic
//! one: a busy loop of up to 200 ms, once per process. Run where the recorder is first needed, it held a
//! runtime thread (an election node's only one) between start and the first election. So the recorder
//! is built on a thread of its own, and until it is ready every metric operation is kept, in order, and
//! replayed into it: nothing recorded at start is lost (the startup election is counted), and no
//! runtime thread waits.

use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;

use crate::lock::lock;

/// An operation recorded before the recorder was ready.
type Early = Box<dyn FnOnce(&PrometheusRecorder) + Send>;

/// The recorder once built, and the operations that came before it.
pub(super) struct Deferred {
    ready: OnceLock<PrometheusRecorder>,
    early: Mutex<Vec<Early>>,
    /// Woken when the recorder is ready.
    pub(super) built: tokio::sync::Notify,
}

/// The metadata replayed operations are registered with (the Prometheus recorder ignores it).
static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

impl Deferred {
    pub(super) const fn new() -> Self {
        Self { ready: OnceLock::new(), early: Mutex::new(Vec::new()), built: tokio::sync::Notify::const_new() }
    }

    /// The recorder, if built.
    pub(super) fn get(&self) -> Option<&PrometheusRecorder> {
        self.ready.get()
    }

    /// The recorder is built: replays what came before it, in order, then forwards everything.
    pub(super) fn complete(&self, recorder: PrometheusRecorder) {
        let mut early = lock(&self.early);
        let recorder = self.ready.get_or_init(|| recorder);
        for op in early.drain(..) {
            op(recorder);
        }
        drop(early);
        self.built.notify_waiters();
    }

    /// Runs `op` now if the recorder is built, else keeps it for when it is.
    fn apply(&self, op: impl FnOnce(&PrometheusRecorder) + Send + 'static) {
        if let Some(recorder) = self.ready.get() {
            return op(recorder);
        }
        let mut early = lock(&self.early);
        match self.ready.get() {
            Some(recorder) => {
                drop(early);
                op(recorder);
            }
            None => early.push(Box::new(op)),
        }
    }
}

/// The process's recorder: forwards to a [`Deferred`].
pub(super) struct Forward(pub(super) &'static Deferred);

/// A handle registered before the recorder was ready: each operation goes through [`Deferred::apply`].
struct EarlyHandle {
    deferred: &'static Deferred,
    key: Key,
}

impl CounterFn for EarlyHandle {
    fn increment(&self, value: u64) {
        let key = self.key.clone();
        self.deferred.apply(move |r| r.register_counter(&key, &METADATA).increment(value));
    }
    fn absolute(&self, value: u64) {
        let key = self.key.clone();
        self.deferred.apply(move |r| r.register_counter(&key, &METADATA).absolute(value));
    }
}

impl GaugeFn for EarlyHandle {
    fn increment(&self, value: f64) {
        let key = self.key.clone();
        self.deferred.apply(move |r| r.register_gauge(&key, &METADATA).increment(value));
    }
    fn decrement(&self, value: f64) {
        let key = self.key.clone();
        self.deferred.apply(move |r| r.register_gauge(&key, &METADATA).decrement(value));
    }
    fn set(&self, value: f64) {
        let key = self.key.clone();
        self.deferred.apply(move |r| r.register_gauge(&key, &METADATA).set(value));
    }
}

impl HistogramFn for EarlyHandle {
    fn record(&self, value: f64) {
        let key = self.key.clone();
        self.deferred.apply(move |r| r.register_histogram(&key, &METADATA).record(value));
    }
}

impl Recorder for Forward {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.apply(move |r| r.describe_counter(key, unit, description));
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.apply(move |r| r.describe_gauge(key, unit, description));
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.apply(move |r| r.describe_histogram(key, unit, description));
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        match self.0.get() {
            Some(r) => r.register_counter(key, metadata),
            None => Counter::from_arc(Arc::new(EarlyHandle { deferred: self.0, key: key.clone() })),
        }
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        match self.0.get() {
            Some(r) => r.register_gauge(key, metadata),
            None => Gauge::from_arc(Arc::new(EarlyHandle { deferred: self.0, key: key.clone() })),
        }
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        match self.0.get() {
            Some(r) => r.register_histogram(key, metadata),
            None => Histogram::from_arc(Arc::new(EarlyHandle { deferred: self.0, key: key.clone() })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins: what is recorded before the Prometheus recorder is built is replayed into it in order (a
    /// counter's increments add up, a gauge's last set wins), and what comes after is forwarded.
    #[test]
    fn operations_before_the_recorder_is_built_are_replayed_into_it() {
        let deferred: &'static Deferred = Box::leak(Box::new(Deferred::new()));
        let forward = Forward(deferred);
        let counter = forward.register_counter(&Key::from_name("early_total"), &METADATA);
        let gauge = forward.register_gauge(&Key::from_name("early_gauge"), &METADATA);
        counter.increment(2);
        gauge.set(5.0);
        gauge.set(7.0);
        forward.describe_counter(KeyName::from("early_total"), None, SharedString::from("counted before the recorder"));
        assert!(deferred.get().is_none());
        deferred.complete(metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder());
        counter.increment(1);
        forward.register_counter(&Key::from_name("early_total"), &METADATA).increment(10);
        let text = deferred.get().map(|r| r.handle().render()).unwrap_or_default();
        assert!(text.contains("early_total 13"), "{text}");
        assert!(text.contains("early_gauge 7"), "{text}");
        assert!(text.contains("# HELP early_total counted before the recorder"), "{text}");
    }
}
