//! Sources: tasks that own a connection and turn what they read into [`Sample`]s.
//!
//! Invariants: a source never returns an error for a runtime I/O failure; it produces Bad samples
//! and keeps trying with backoff. It stops only when its cancellation token fires, and it waits
//! (never drops) when the sample queue is full.
//!
//! [`Sample`]: crate::model::Sample

pub mod modbus;
pub mod mqtt;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::check::Problems;
use crate::config::{Resolved, ResolvedModbus, ResolvedSource};
use crate::model::SourceId;
use crate::receipt::SampleBatch;
use crate::state::SharedState;
use crate::telemetry::Metrics;

/// A source ready to run, whatever its kind, after its secrets and files were read. The wiring
/// (`app`) spawns and supervises every one the same way; a new kind of connection is one more
/// variant here and a folder of its own beside `modbus/` and `mqtt/`.
#[derive(Clone, Debug)]
pub enum Ready {
    /// Modbus TCP, RTU on a serial port, or RTU over TCP (its link says which).
    Modbus(ResolvedModbus),
    /// An MQTT subscription to a broker.
    Mqtt(Box<mqtt::Prepared>),
}

impl Ready {
    /// The source's id.
    pub fn id(&self) -> &SourceId {
        match self {
            Ready::Modbus(s) => &s.id,
            Ready::Mqtt(p) => p.id(),
        }
    }

    /// Runs the source until `cancel` fires (see the module invariants).
    pub async fn run(
        self,
        tx: mpsc::Sender<SampleBatch>,
        state: Arc<SharedState>,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) {
        match self {
            Ready::Modbus(s) => modbus::run_source(s, tx, state, metrics, cancel).await,
            Ready::Mqtt(p) => mqtt::run_source(*p, tx, state, metrics, cancel).await,
        }
    }
}

/// Every source of the configuration, ready to run, in configuration order. Every
/// unreadable secret or file is reported in `p` with its configuration path.
pub fn prepare(cfg: &Resolved, p: &mut Problems) -> Vec<Ready> {
    let mut ready = Vec::with_capacity(cfg.sources.len());
    for s in &cfg.sources {
        match s {
            ResolvedSource::Modbus(m) => ready.push(Ready::Modbus(m.clone())),
            ResolvedSource::Mqtt(m) => match mqtt::prepare(m, &cfg.site.id) {
                Ok(r) => ready.push(Ready::Mqtt(Box::new(r))),
                Err((path, message)) => p.err(path, message),
            },
        }
    }
    ready
}
