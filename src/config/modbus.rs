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

use crate::check::Problems;

/// Modbus TCP connection settings.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModbusTcpSource {
    /// Referenced by `devices[].source`.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// Per-request timeout; after a timeout the connection is re-established.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_modbus_timeout")]
    pub timeout: Duration,
    /// Connect timeout.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Silence before every request on this connection, whichever unit (slow converters); RTU
    /// over TCP keeps at least 3.5 characters at 9600 baud (4.0 ms).
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default)]
    pub pause: Duration,
    /// Largest gap (in registers or bits) bridged when coalescing reads.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Cap of the reconnect backoff.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_backoff_max")]
    pub backoff_max: Duration,
}

fn default_modbus_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_max_gap() -> u16 {
    10
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}

/// Serial parity.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
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
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_rtu_timeout")]
    pub timeout: Duration,
    /// After a timeout, bytes arriving until the line has been quiet this long are discarded,
    /// so a late reply is never taken as the answer to the next request.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_drain")]
    pub drain: Duration,
    /// Silence on the bus before every request, whatever unit it goes to (slow slaves and
    /// auto-direction converters need a turnaround time); never less than 3.5 character times.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default)]
    pub pause: Duration,
    /// Largest gap (in registers or bits) bridged when coalescing reads.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Cap of the reopen and per-device backoff.
    #[schemars(with = "crate::schema::HumanDuration")]
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

    /// The shortest silence on the line before a request: the Modbus serial line's 3.5
    /// character times (a character is start + data + parity + stop bits; above 19200 baud the
    /// specification fixes 1.75 ms). RTU over TCP: the converter's serial baud is unknown, so
    /// 9600 baud 8E1 (11 bits, the specification's default and the slowest common setting) is
    /// assumed: 4.0 ms. Modbus TCP: none.
    pub fn min_silence(&self) -> Duration {
        match self {
            ModbusLink::Tcp { .. } => Duration::ZERO,
            ModbusLink::RtuOverTcp { .. } => t35(9600, 11),
            ModbusLink::Rtu(s) => {
                let parity = u32::from(s.parity != Parity::None);
                t35(
                    s.baud_rate,
                    1 + u32::from(s.data_bits) + parity + u32::from(s.stop_bits),
                )
            }
        }
    }

    /// True for RTU framing (no transaction ids: after a timeout the stream must be drained).
    pub fn is_rtu(&self) -> bool {
        !matches!(self, ModbusLink::Tcp { .. })
    }
}

/// 3.5 character times at `baud` with `bits` per character (1.75 ms above 19200 baud).
fn t35(baud: u32, bits: u32) -> Duration {
    if baud > 19_200 {
        Duration::from_micros(1750)
    } else {
        Duration::from_secs_f64(3.5 * f64::from(bits) / f64::from(baud.max(1)))
    }
}

/// Request timing shared by every transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModbusTiming {
    /// Per-request timeout.
    pub timeout: Duration,
    /// Silence before every request on the connection or bus (never less than the link's
    /// [`ModbusLink::min_silence`]).
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

    /// Checks these settings into `p` (`path` is the source's). The port is not opened.
    pub(crate) fn check(&self, path: &str, p: &mut Problems) {
        if self.port.trim().is_empty() {
            p.err(format!("{path}.port"), "must name a serial device");
        }
        if !(300..=4_000_000).contains(&self.baud_rate) {
            p.err(format!("{path}.baud_rate"), "must be within 300..=4000000");
        }
        if !matches!(self.data_bits, 7 | 8) {
            p.err(format!("{path}.data_bits"), "must be 7 or 8");
        }
        if !matches!(self.stop_bits, 1 | 2) {
            p.err(format!("{path}.stop_bits"), "must be 1 or 2");
        }
        if self.timeout.is_zero() {
            p.err(format!("{path}.timeout"), "must be longer than 0s");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ModbusLink, Parity, parse, validate};

    const BASE: &str = r#"
[site]
id = "s"
[[device_maps]]
id = "m"
[[device_maps.registers]]
name = "a"
table = "input"
address = 0
[[device_maps.registers]]
name = "b"
table = "input"
address = 1
"#;

    fn check(extra: &str) -> Result<crate::config::Resolved, Vec<String>> {
        let text = format!("{BASE}{extra}");
        let cfg = parse(&text, Path::new("t.toml")).map_err(|e| vec![e.to_string()])?;
        validate(&cfg, Path::new("."))
            .map(|(r, _)| r)
            .map_err(|p| p.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn rtu_source_resolves_without_opening_the_port() {
        let r = check(
            r#"
[[sources]]
kind = "modbus_rtu"
id = "bus"
port = "/dev/does-not-exist"
parity = "even"
stop_bits = 2
[[devices]]
id = "d"
area = "x"
source = "bus"
map = "m"
poll_interval = "2s"
[[channels]]
id = "x.d.b"
poll_interval = "30s"
"#,
        )
        .expect("valid");
        let src = r.modbus().next().expect("a Modbus source");
        match &src.link {
            ModbusLink::Rtu(l) => {
                assert_eq!(
                    (l.baud_rate, l.parity, l.data_bits, l.stop_bits),
                    (9600, Parity::Even, 8, 2)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(src.timing.drain, std::time::Duration::from_millis(100));
        let iv: Vec<u64> = src.devices[0]
            .points
            .iter()
            .map(|p| p.poll_interval.as_secs())
            .collect();
        assert_eq!(iv, vec![2, 30]);
        // The overridden channel's staleness follows its own interval.
        let ch = r
            .channels
            .iter()
            .find(|c| c.id.as_str() == "x.d.b")
            .expect("channel");
        assert!(
            ch.max_age >= std::time::Duration::from_secs(90),
            "{:?}",
            ch.max_age
        );
    }

    #[test]
    fn rtu_mistakes_are_reported_with_paths() {
        let errs = check(
            r#"
[[sources]]
kind = "modbus_rtu"
id = "bus"
port = ""
baud_rate = 5
data_bits = 9
stop_bits = 3
timeout = "0s"
[[channels]]
id = "nope.x.y"
poll_interval = "1s"
"#,
        )
        .expect_err("invalid");
        for needle in [
            "sources[0].port",
            "sources[0].baud_rate",
            "sources[0].data_bits",
            "sources[0].stop_bits",
            "sources[0].timeout",
            "channels[0].id",
        ] {
            assert!(
                errs.iter().any(|e| e.contains(needle)),
                "{needle} in {errs:#?}"
            );
        }
        let errs = check(
            "[[sources]]\nkind = \"modbus_rtu\"\nid = \"b\"\nport = \"/dev/x\"\nparity = \"mark\"\n",
        )
        .expect_err("bad parity");
        assert!(
            errs[0].contains("parity") || errs[0].contains("mark"),
            "{errs:?}"
        );
    }
}
