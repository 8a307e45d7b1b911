//! Self-monitoring: Prometheus metrics (low-cardinality labels) and the shared health table that
//! `/readyz` reports. Both are created per gateway instance and passed in; nothing is global.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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
    /// Points dropped, by output and reason (`queue_full`, `rejected`, `invalid`, `shutdown`,
    /// `spool_full`, `spool_corrupt`).
    pub points_dropped: Family<Labels, Counter>,
    /// Failed write attempts, by output and status.
    pub write_errors: Family<Labels, Counter>,
    /// Points waiting in an output's queue.
    pub output_queue: Family<Labels, Gauge>,
    /// Alarm deliveries by receiver and result (`delivered`, `failed` attempts, `expired`,
    /// `evicted`).
    pub deliveries: Family<Labels, Counter>,
    /// Supervised task restarts after a panic, by task.
    pub task_restarts: Family<Labels, Counter>,
    /// Points waiting in an output's disk spool, by output.
    pub spool_points: Family<Labels, Gauge>,
    /// Bytes in an output's disk spool, by output.
    pub spool_bytes: Family<Labels, Gauge>,
    /// 1 while an alarm flood is in progress.
    pub alarm_flood: Gauge,
    /// Times an alarm started chattering.
    pub alarm_chattering: Counter,
    /// Failed alarm journal writes.
    pub journal_errors: Counter,
    /// Modbus polls per device and result (`ok`, `failed`, `skipped` while backed off).
    pub modbus_device_polls: Family<Labels, Counter>,
    /// Consecutive failed polls, by device.
    pub modbus_device_failures: Family<Labels, Gauge>,
    /// Exception answers, by device.
    pub modbus_device_exceptions: Family<Labels, Counter>,
    /// Duration of the device's last successful poll in seconds, by device.
    pub modbus_device_latency: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Unix time of the device's last successful poll, by device.
    pub modbus_device_last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    /// 1 while an output's disk spool is full (oldest data being dropped), else 0; by output.
    pub spool_full: Family<Labels, Gauge>,
    /// Readings not written by an output because of its reduction (deadband), by output.
    pub points_suppressed: Family<Labels, Counter>,
    /// Duration of write requests to an output (answered or failed), by output, in seconds.
    pub write_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// Alarms per lifecycle state (`state`) and class (`class`), not counting normal ones.
    pub alarms_by_state: Family<Labels, Gauge>,
    /// MQTT messages received, by source.
    pub mqtt_messages: Family<Labels, Counter>,
    /// MQTT message problems by source and event (`decode_error`, `unmapped_topic`,
    /// `unknown_channel`, `timestamp_clamped`, `timestamp_rejected`, `retained_ignored`).
    pub mqtt_events: Family<Labels, Counter>,
    /// MQTT messages acknowledged to the broker (PUBACK) once their readings were durable, by
    /// source.
    pub mqtt_acks: Family<Labels, Counter>,
    /// MQTT messages received and not yet acknowledged, by source.
    pub mqtt_unacked: Family<Labels, Gauge>,
    /// Receipts an output released without making their readings durable (a write failed and
    /// the output has no working spool), by output.
    pub acks_released: Family<Labels, Counter>,
    /// MQTT connection attempts by source and result (`connected`, `error`,
    /// `subscribe_failed`, `subscribe_timeout`).
    pub mqtt_connections: Family<Labels, Counter>,
    /// Clients the embedded broker's guard refused or disconnected, by reason (`max_topics`,
    /// `max_filters`, `max_sessions`, `max_connections`, `packet_too_large`, `topic_too_long`,
    /// `client_id_too_long`, `empty_client_id`, `credentials`, `malformed`).
    pub mqtt_broker_refused: Family<Labels, Counter>,
    /// Notifications put in the outbox, by receiver and reason (`event`, `group`, `reminder`,
    /// `escalation`, `report`).
    pub notifications: Family<Labels, Counter>,
    /// Notifications pending in the outbox, by receiver.
    pub outbox_pending: Family<Labels, Gauge>,
    /// Bytes of the outbox file.
    pub outbox_bytes: Gauge,
    /// Outbox write, compaction and replay failures.
    pub outbox_errors: Counter,
    /// 1 while the last write to the outbox file failed (notifications only in memory).
    pub outbox_failing: Gauge,
    /// Escalations to a next tier, by route and tier.
    pub escalations: Family<Labels, Counter>,
    /// Blocking jobs (outbox writes, reads) that panicked, by task (`dispatcher`, `receiver`).
    pub blocking_panics: Family<Labels, Counter>,
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
        let spool_points = Family::<Labels, Gauge>::default();
        registry.register(
            "spool_points",
            "Points waiting in an output's disk spool",
            spool_points.clone(),
        );
        let spool_bytes = Family::<Labels, Gauge>::default();
        registry.register(
            "spool_bytes",
            "Bytes in an output's disk spool",
            spool_bytes.clone(),
        );
        let alarm_flood = Gauge::default();
        registry.register(
            "alarm_flood",
            "1 while an alarm flood is in progress",
            alarm_flood.clone(),
        );
        let alarm_chattering = Counter::default();
        registry.register(
            "alarm_chattering",
            "Times an alarm started chattering",
            alarm_chattering.clone(),
        );
        let journal_errors = Counter::default();
        registry.register(
            "alarm_journal_errors",
            "Failed alarm journal writes",
            journal_errors.clone(),
        );
        let modbus_device_polls = Family::<Labels, Counter>::default();
        registry.register(
            "modbus_device_polls",
            "Modbus device polls by device and result",
            modbus_device_polls.clone(),
        );
        let modbus_device_failures = Family::<Labels, Gauge>::default();
        registry.register(
            "modbus_device_consecutive_failures",
            "Consecutive failed polls of a Modbus device",
            modbus_device_failures.clone(),
        );
        let modbus_device_exceptions = Family::<Labels, Counter>::default();
        registry.register(
            "modbus_device_exceptions",
            "Modbus requests answered with an exception, by device",
            modbus_device_exceptions.clone(),
        );
        let modbus_device_latency = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "modbus_device_latency_seconds",
            "Duration of the last successful poll of a Modbus device",
            modbus_device_latency.clone(),
        );
        let modbus_device_last_success = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "modbus_device_last_success_timestamp_seconds",
            "Unix time of the last successful poll of a Modbus device",
            modbus_device_last_success.clone(),
        );
        let spool_full = Family::<Labels, Gauge>::default();
        registry.register(
            "output_spool_full",
            "1 while an output's disk spool is full and drops its oldest data",
            spool_full.clone(),
        );
        let points_suppressed = Family::<Labels, Counter>::default();
        registry.register(
            "points_suppressed",
            "Readings not written by an output because of its deadband",
            points_suppressed.clone(),
        );
        let write_duration: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.002, 2.0, 14)));
        registry.register(
            "output_write_duration_seconds",
            "Duration of write requests to an output",
            write_duration.clone(),
        );
        let alarms_by_state = Family::<Labels, Gauge>::default();
        registry.register(
            "alarms",
            "Alarms that are not normal, by lifecycle state and class",
            alarms_by_state.clone(),
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
        let mqtt_acks = Family::<Labels, Counter>::default();
        registry.register(
            "mqtt_acks",
            "MQTT messages acknowledged to the broker after every output made their readings durable",
            mqtt_acks.clone(),
        );
        let mqtt_unacked = Family::<Labels, Gauge>::default();
        registry.register(
            "mqtt_unacked",
            "MQTT messages received and not yet acknowledged to the broker",
            mqtt_unacked.clone(),
        );
        let acks_released = Family::<Labels, Counter>::default();
        registry.register(
            "output_acks_released",
            "MQTT messages an output let be acknowledged before they were durable (write failed, no working spool)",
            acks_released.clone(),
        );
        let mqtt_connections = Family::<Labels, Counter>::default();
        registry.register(
            "mqtt_connections",
            "MQTT connection attempts and subscription results",
            mqtt_connections.clone(),
        );
        let mqtt_broker_refused = Family::<Labels, Counter>::default();
        registry.register(
            "mqtt_broker_refused",
            "Clients the embedded MQTT broker refused or disconnected, by reason",
            mqtt_broker_refused.clone(),
        );
        let notifications = Family::<Labels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications put in the outbox",
            notifications.clone(),
        );
        let outbox_pending = Family::<Labels, Gauge>::default();
        registry.register(
            "outbox_pending",
            "Notifications pending in the outbox",
            outbox_pending.clone(),
        );
        let outbox_bytes = Gauge::default();
        registry.register(
            "outbox_bytes",
            "Bytes of the outbox file",
            outbox_bytes.clone(),
        );
        let outbox_errors = Counter::default();
        registry.register(
            "outbox_errors",
            "Outbox write, compaction and replay failures",
            outbox_errors.clone(),
        );
        let outbox_failing = Gauge::default();
        registry.register(
            "outbox_write_failing",
            "1 while the alert outbox cannot write to disk (notifications kept in memory only)",
            outbox_failing.clone(),
        );
        let escalations = Family::<Labels, Counter>::default();
        registry.register(
            "escalations",
            "Unanswered alarms escalated to a next tier",
            escalations.clone(),
        );
        let blocking_panics = Family::<Labels, Counter>::default();
        registry.register(
            "blocking_panics",
            "Blocking jobs of the alert dispatcher and receivers that panicked",
            blocking_panics.clone(),
        );
        Self {
            blocking_panics,
            notifications,
            outbox_pending,
            outbox_bytes,
            outbox_errors,
            outbox_failing,
            escalations,
            registry,
            modbus_device_polls,
            modbus_device_failures,
            modbus_device_exceptions,
            modbus_device_latency,
            modbus_device_last_success,
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
            spool_points,
            spool_bytes,
            alarm_flood,
            alarm_chattering,
            journal_errors,
            spool_full,
            points_suppressed,
            write_duration,
            alarms_by_state,
            mqtt_messages,
            mqtt_events,
            mqtt_acks,
            mqtt_unacked,
            acks_released,
            mqtt_connections,
            mqtt_broker_refused,
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

/// A part of the gateway whose readiness `/readyz` reports. The kind says whether a failure is
/// a gateway fault: one that the rule engine turns into the system fault alarm
/// `gateway:{component}` (class `fault`, priority high), sent to the alert router like any alarm.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// A Modbus or MQTT source (`source {id}`). Not a gateway fault: its channels go Bad and
    /// raise their own fault alarms.
    Source(String),
    /// An output's connection to its server (`output {id}`). Not a gateway fault: its data is
    /// spooled.
    Output(String),
    /// An output's disk spool, full or unreadable (`output {id} spool`). A gateway fault.
    Spool(String),
    /// The alarm journal (`alarm journal`). A gateway fault.
    Journal,
    /// The alert outbox (`alert outbox`). A gateway fault.
    Outbox,
    /// An alert receiver that keeps failing (`receiver {id}`). A gateway fault.
    Receiver(String),
    /// A supervised task that died and is waiting to restart (`task {name}`). A gateway fault.
    Task(String),
}

impl Component {
    /// Whether a failure of this component raises the fault alarm `gateway:{component}`.
    pub fn raises_fault(&self) -> bool {
        match self {
            Self::Source(_) | Self::Output(_) => false,
            Self::Spool(_) | Self::Journal | Self::Outbox | Self::Receiver(_) | Self::Task(_) => {
                true
            }
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Source(id) => write!(f, "source {id}"),
            Self::Output(id) => write!(f, "output {id}"),
            Self::Spool(id) => write!(f, "output {id} spool"),
            Self::Journal => f.write_str("alarm journal"),
            Self::Outbox => f.write_str("alert outbox"),
            Self::Receiver(id) => write!(f, "receiver {id}"),
            Self::Task(name) => write!(f, "task {name}"),
        }
    }
}

/// Component health for `/readyz`: `None` = ready, `Some(reason)` = not ready.
#[derive(Debug, Default)]
pub struct Health {
    components: Mutex<BTreeMap<Component, Option<String>>>,
}

impl Health {
    /// Marks a component ready.
    pub fn ok(&self, component: &Component) {
        self.set(component, None);
    }

    /// Marks a component not ready, with the reason.
    pub fn fail(&self, component: &Component, reason: impl Into<String>) {
        self.set(component, Some(reason.into()));
    }

    /// Forgets a component that no longer exists (a source removed by a configuration reload).
    pub fn forget(&self, component: &Component) {
        self.components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(component);
    }

    fn set(&self, component: &Component, v: Option<String>) {
        let mut m = self.components.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(component) {
            Some(slot) => *slot = v,
            None => {
                m.insert(component.clone(), v);
            }
        }
    }

    /// Reasons of every component that is not ready, as `component: reason`.
    pub fn not_ready(&self) -> Vec<String> {
        let m = self.components.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter_map(|(k, v)| v.as_ref().map(|r| format!("{k}: {r}")))
            .collect()
    }

    /// Ids of the sources whose connection is down now (not connected, or their task died and
    /// waits to restart): the rule engine annunciates one source communication alarm for them.
    pub fn sources_down(&self) -> Vec<String> {
        let m = self.components.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|(_, v)| v.is_some())
            .filter_map(|(k, _)| match k {
                Component::Source(id) => Some(id.clone()),
                Component::Task(name) => name.strip_prefix("source ").map(str::to_owned),
                _ => None,
            })
            .collect()
    }

    /// Failing components whose failure is a gateway fault, with their reasons.
    pub fn faults(&self) -> Vec<(Component, String)> {
        let m = self.components.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|(k, _)| k.raises_fault())
            .filter_map(|(k, v)| v.as_ref().map(|r| (k.clone(), r.clone())))
            .collect()
    }
}

/// Builds a label set.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}
