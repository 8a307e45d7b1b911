//! Modbus source settings: the serial (RTU) source kind, and the resolved link and timing every
//! Modbus poller reads, whatever its transport.
//!
//! Three transports share one poller ([`crate::sources::modbus`]):
//! - `modbus_tcp`: Modbus TCP (MBAP framing) to a device or a serial-to-TCP gateway;
//! - `modbus_rtu_over_tcp`: RTU frames (CRC, no MBAP) through a transparent serial-to-TCP
//!   converter; same fields as `modbus_tcp`;
//! - `modbus_rtu`: RTU on a local serial port (an RS-485 bus with several unit ids).
//!
//! Validation never opens the serial port: `check-config` must work on a laptop without the bus.

use std::time::Duration;

use serde::Deserialize;

use super::ModbusTcpSource;

/// Serial parity.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit (8N1 is what most detectors ship with).
    #[default]
    None,
    /// Even parity (the Modbus specification's default).
    Even,
    /// Odd parity.
    Odd,
}

/// Modbus RTU on a serial port: one RS-485 bus, several unit ids, one request at a time.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusRtuSource {
    /// Referenced by `devices[].source`.
    pub id: String,
    /// Serial device, e.g. `/dev/ttyUSB0` or `/dev/serial/by-path/...`.
    pub port: String,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud_rate: u32,
    /// `none`, `even` or `odd`.
    #[serde(default)]
    pub parity: Parity,
    /// 7 or 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Per-request timeout; after a timeout the port is flushed and reopened.
    #[serde(with = "humantime_serde", default = "default_rtu_timeout")]
    pub timeout: Duration,
    /// After a timeout, bytes arriving until the line has been quiet this long are discarded,
    /// so a late reply is never taken as the answer to the next request.
    #[serde(with = "humantime_serde", default = "default_drain")]
    pub drain: Duration,
    /// Pause between two requests on the bus (devices that need a turnaround time).
    #[serde(with = "humantime_serde", default)]
    pub pause: Duration,
    /// Largest gap (in registers or bits) bridged when coalescing reads.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Cap of the reopen and per-device backoff.
    #[serde(with = "humantime_serde", default = "default_backoff_max")]
    pub backoff_max: Duration,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_rtu_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_drain() -> Duration {
    Duration::from_millis(100)
}
fn default_max_gap() -> u16 {
    10
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}

/// Serial line settings of an RTU source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialLine {
    /// Serial device path.
    pub port: String,
    /// Baud rate.
    pub baud_rate: u32,
    /// Parity.
    pub parity: Parity,
    /// Data bits (7 or 8).
    pub data_bits: u8,
    /// Stop bits (1 or 2).
    pub stop_bits: u8,
}

/// How a Modbus source reaches its devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModbusLink {
    /// Modbus TCP (MBAP framing, transaction ids).
    Tcp {
        /// `host:port`.
        address: String,
        /// Connect timeout.
        connect_timeout: Duration,
    },
    /// RTU frames over a TCP stream (transparent converter).
    RtuOverTcp {
        /// `host:port`.
        address: String,
        /// Connect timeout.
        connect_timeout: Duration,
    },
    /// RTU on a local serial port.
    Rtu(SerialLine),
}

impl ModbusLink {
    /// Where it connects, for logs and `hazgate plan`.
    pub fn describe(&self) -> String {
        match self {
            ModbusLink::Tcp { address, .. } => format!("modbus tcp {address}"),
            ModbusLink::RtuOverTcp { address, .. } => format!("modbus rtu over tcp {address}"),
            ModbusLink::Rtu(s) => format!(
                "modbus rtu {} {} {}{}{}",
                s.port,
                s.baud_rate,
                s.data_bits,
                match s.parity {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                },
                s.stop_bits
            ),
        }
    }

    /// True for RTU framing (no transaction ids: after a timeout the stream must be drained).
    pub fn is_rtu(&self) -> bool {
        !matches!(self, ModbusLink::Tcp { .. })
    }
}

/// Request timing shared by every transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModbusTiming {
    /// Per-request timeout.
    pub timeout: Duration,
    /// Pause between two requests on the connection.
    pub pause: Duration,
    /// Largest gap bridged when coalescing.
    pub max_gap: u16,
    /// Cap of the reconnect and per-device backoff.
    pub backoff_max: Duration,
    /// RTU framing only: after a timeout or a garbled answer, the reopened stream is read and
    /// discarded until it has been quiet this long (zero for Modbus TCP, whose transaction ids
    /// and fresh connection already exclude a late reply).
    pub drain: Duration,
}

impl ModbusTiming {
    pub(crate) fn of_tcp(t: &ModbusTcpSource, rtu_framing: bool) -> Self {
        ModbusTiming {
            timeout: t.timeout,
            pause: t.pause,
            max_gap: t.max_gap,
            backoff_max: t.backoff_max,
            drain: if rtu_framing {
                default_drain()
            } else {
                Duration::ZERO
            },
        }
    }

    pub(crate) fn of_rtu(r: &ModbusRtuSource) -> Self {
        ModbusTiming {
            timeout: r.timeout,
            pause: r.pause,
            max_gap: r.max_gap,
            backoff_max: r.backoff_max,
            drain: r.drain,
        }
    }
}

impl ModbusRtuSource {
    /// The resolved serial line.
    pub fn line(&self) -> SerialLine {
        SerialLine {
            port: self.port.clone(),
            baud_rate: self.baud_rate,
            parity: self.parity,
            data_bits: self.data_bits,
            stop_bits: self.stop_bits,
        }
    }

    /// Every problem with these settings, as `(field, message)`. The port is not opened.
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.port.trim().is_empty() {
            out.push(("port", "must name a serial device".to_owned()));
        }
        if !(300..=4_000_000).contains(&self.baud_rate) {
            out.push(("baud_rate", "must be within 300..=4000000".to_owned()));
        }
        if !matches!(self.data_bits, 7 | 8) {
            out.push(("data_bits", "must be 7 or 8".to_owned()));
        }
        if !matches!(self.stop_bits, 1 | 2) {
            out.push(("stop_bits", "must be 1 or 2".to_owned()));
        }
        if self.timeout.is_zero() {
            out.push(("timeout", "must be longer than 0s".to_owned()));
        }
        out
    }
}
