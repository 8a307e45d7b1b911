//! hazgate: an edge gateway for industrial safety monitoring.
//!
//! # Data flow
//! ```text
//! Modbus devices ─▶ sources ─▶ samples ─▶ rules (alarm engine) ─┬─▶ tsdb writers ─▶ InfluxDB
//!                                                               └─▶ alerts ─▶ receivers
//!                                   api ◀── snapshots (state, telemetry)
//! ```
//!
//! # Layout
//! - [`model`]: pure types (ids, samples with quality, alarm events). No I/O.
//! - [`check`], [`secret`]: the configuration finding collector every component's checks use,
//!   and secret references with their redacted values; [`site`]: the site's identity for people.
//! - [`config`]: TOML structs, the validation pass (every problem with its path) and the resolved view.
//! - [`sources`]: acquisition tasks; [`sources::modbus`] plans, decodes and polls;
//!   [`sources::mqtt`] subscribes, maps topics and payloads, and runs the embedded broker.
//! - [`rules`]: the rule engine, the only writer of alarm state and channel snapshots.
//! - [`alerts`]: routing, escalation, the durable outbox and receivers (webhook, IM robots, MQTT,
//!   regulator feeds).
//! - [`tsdb`]: line protocol and InfluxDB writers.
//! - [`dashboards`]: Grafana dashboards generated from the resolved configuration.
//! - [`api`]: the axum router (`/healthz`, `/readyz`, `/metrics`, `/api/v1/...`).
//! - [`app`]: wires the pipeline, supervises tasks, applies configuration reloads, drains on
//!   shutdown; [`control`]: the reload request and its report.
//! - [`state`], [`telemetry`], [`queue`]: snapshots, metrics and health, the drop-oldest queue.
//! - [`storage`]: the CRC-line log shared by the alarm journal and the alert outbox.
//! - [`journald`]: syslog priority prefixes when stderr is the systemd journal.
//! - [`private_fs`]: state directories and files created 0750/0640 whatever the umask.
//! - [`receipt`]: end-to-end receipts, so an MQTT source acknowledges a message only once every
//!   output made its readings durable.
//!
//! See `docs/ARCHITECTURE.md` for the invariants and the data schema.

pub mod alerts;
pub mod api;
pub mod app;
pub mod backoff;
pub mod check;
pub mod config;
pub mod control;
pub mod dashboards;
pub mod demo;
pub mod i18n;
pub mod journald;
pub mod model;
pub mod private_fs;
pub mod queue;
pub mod receipt;
pub mod rules;
pub mod schema;
pub mod secret;
pub mod site;
pub mod sources;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod tsdb;

/// The commented example configuration printed by `hazgate print-default-config`.
pub const EXAMPLE_CONFIG: &str = include_str!("../config/example.toml");
