//! Self-monitoring: Prometheus metrics (low-cardinality labels) and the shared health table that
//! `/readyz` reports. Both are created per gateway instance and passed in; nothing is global.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Samples produced by sources, by source and quality (`good`/`bad`).
    pub samples: Family<Labels, Counter>,
    /// Modbus requests by source and result (`ok`, `exception`, `timeout`, `error`).
    pub modbus_requests: Family<Labels, Counter>,
    /// Times a source waited because the sample queue was full.
    pub sample_queue_full: Counter,
    /// Alarm events by transition.
    pub alarm_events: Family<Labels, Counter>,
    /// Channels currently without a good reading.
    pub channels_bad: Gauge,
    /// Points accepted by an output's server, by output.
    pub points_written: Family<Labels, Counter>,
    /// Points dropped, by output and reason (`queue_full`, `rejected`, `shutdown`).
    pub points_dropped: Family<Labels, Counter>,
    /// Failed write attempts, by output and status.
    pub write_errors: Family<Labels, Counter>,
    /// Points waiting in an output's queue.
    pub output_queue: Family<Labels, Gauge>,
    /// Alarm deliveries by receiver and result (`delivered`, `failed`, `dropped`).
    pub deliveries: Family<Labels, Counter>,
    /// Supervised task restarts after a panic, by task.
    pub task_restarts: Family<Labels, Counter>,
    /// MQTT messages received, by source.
    pub mqtt_messages: Family<Labels, Counter>,
    /// MQTT message problems by source and event (`decode_error`, `unmapped_topic`,
    /// `unknown_channel`, `timestamp_clamped`, `timestamp_rejected`, `retained_ignored`).
    pub mqtt_events: Family<Labels, Counter>,
    /// MQTT connection attempts by source and result (`connected`, `error`,
    /// `subscribe_failed`, `subscribe_timeout`).
    pub mqtt_connections: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `hazgate_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hazgate");
        let samples = Family::<Labels, Counter>::default();
        registry.register("samples", "Samples produced by sources", samples.clone());
        let modbus_requests = Family::<Labels, Counter>::default();
        registry.register(
            "modbus_requests",
            "Modbus requests by result",
            modbus_requests.clone(),
        );
        let sample_queue_full = Counter::default();
        registry.register(
            "sample_queue_full",
            "Times a source waited on a full sample queue",
            sample_queue_full.clone(),
        );
        let alarm_events = Family::<Labels, Counter>::default();
        registry.register("alarm_events", "Alarm transitions", alarm_events.clone());
        let channels_bad = Gauge::default();
        registry.register(
            "channels_bad",
            "Channels without a good reading (fault or stale)",
            channels_bad.clone(),
        );
        let points_written = Family::<Labels, Counter>::default();
        registry.register(
            "points_written",
            "Points acknowledged by an output",
            points_written.clone(),
        );
        let points_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "points_dropped",
            "Points dropped by an output",
            points_dropped.clone(),
        );
        let write_errors = Family::<Labels, Counter>::default();
        registry.register(
            "write_errors",
            "Failed output write attempts",
            write_errors.clone(),
        );
        let output_queue = Family::<Labels, Gauge>::default();
        registry.register(
            "output_queue_points",
            "Points waiting in an output queue",
            output_queue.clone(),
        );
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "alarm_deliveries",
            "Alarm deliveries to receivers",
            deliveries.clone(),
        );
        let task_restarts = Family::<Labels, Counter>::default();
        registry.register(
            "task_restarts",
            "Supervised task restarts after a panic",
            task_restarts.clone(),
        );
        let mqtt_messages = Family::<Labels, Counter>::default();
        registry.register(
            "mqtt_messages",
            "MQTT messages received",
            mqtt_messages.clone(),
        );
        let mqtt_events = Family::<Labels, Counter>::default();
        registry.register(
            "mqtt_events",
            "MQTT messages or values that were not turned into good samples, by cause",
            mqtt_events.clone(),
        );
        let mqtt_connections = Family::<Labels, Counter>::default();
        registry.register(
            "mqtt_connections",
            "MQTT connection attempts and subscription results",
            mqtt_connections.clone(),
        );
        Self {
            registry,
            samples,
            modbus_requests,
            sample_queue_full,
            alarm_events,
            channels_bad,
            points_written,
            points_dropped,
            write_errors,
            output_queue,
            deliveries,
            task_restarts,
            mqtt_messages,
            mqtt_events,
            mqtt_connections,
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Component health for `/readyz`: `None` = ready, `Some(reason)` = not ready.
#[derive(Debug, Default)]
pub struct Health {
    components: Mutex<BTreeMap<String, Option<String>>>,
}

impl Health {
    /// Marks a component ready.
    pub fn ok(&self, component: &str) {
        self.set(component, None);
    }

    /// Marks a component not ready, with the reason.
    pub fn fail(&self, component: &str, reason: impl Into<String>) {
        self.set(component, Some(reason.into()));
    }

    fn set(&self, component: &str, v: Option<String>) {
        let mut m = self.components.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(component.to_owned(), v);
    }

    /// Reasons of every component that is not ready, as `component: reason`.
    pub fn not_ready(&self) -> Vec<String> {
        let m = self.components.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter_map(|(k, v)| v.as_ref().map(|r| format!("{k}: {r}")))
            .collect()
    }
}

/// Builds a label set.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}
