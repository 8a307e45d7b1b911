//! Live simulation state and [`SimHandle`], the control surface for tests, demos and scenarios.
//!
//! Each device holds its points (register + value source) and its fault state. A point's value
//! at simulated time `t` is, in priority order: an override set through the handle (engineering
//! or raw), its signal (clamped into the register's `range`, else its span's engineering
//! range, as a transmitter saturates), or a fixed default (see [`crate::site`]).
//!
//! Device faults model what a gateway sees on a bus: `silent` (no answer at all), a forced
//! Modbus exception for every request, and a response delay. Faults are applied by the Modbus
//! service in that order: silent, then delay, then exception. Two more act on the Modbus TCP
//! connection when the answer is written: `wrong_transaction_id` (the answer's MBAP transaction id
//! is altered, as a confused converter does) and `drop_connection` (the connection is closed
//! instead of answering).
//!
//! Locks are `std::sync::Mutex`es never held across an `.await`; a poisoned lock is recovered
//! (state is plain data, always consistent between statements).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::ExceptionCode;

use crate::devmap::{DeviceMap, Register, Table};
use crate::encode::{Encoded, encode_eng, encode_raw, eng_to_raw, raw_to_eng};
use crate::signal::{Signal, SignalGen, point_seed};

/// Errors from [`SimHandle`] calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No device with that id in the site.
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
    /// The device's map has no register with that name.
    #[error("device {device:?} has no register {register:?}")]
    UnknownRegister {
        /// Device id.
        device: String,
        /// Register name.
        register: String,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An override of a point's signal.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Override {
    Eng(f64),
    Raw(f64),
}

#[derive(Debug)]
enum Source {
    Signal {
        generator: Box<Mutex<SignalGen>>,
        limits: Option<(f64, f64)>,
    },
    FixedRaw(f64),
}

#[derive(Debug)]
struct Point {
    reg: Register,
    source: Source,
}

#[derive(Debug, Default)]
struct Faults {
    silent: bool,
    exception: Option<u8>,
    delay: Duration,
    wrong_transaction_id: bool,
    drop_connection: bool,
    overrides: HashMap<usize, Override>,
}

/// Fault state applied to one request, snapshot taken by the Modbus service.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFaults {
    pub silent: bool,
    pub exception: Option<u8>,
    pub delay: Duration,
}

/// Faults applied to a Modbus TCP answer as it is written.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WireFaults {
    pub wrong_transaction_id: bool,
    pub drop_connection: bool,
}

/// One simulated device.
#[derive(Debug)]
pub(crate) struct Device {
    pub id: String,
    pub unit_id: u8,
    points: Vec<Point>,
    faults: Mutex<Faults>,
}

impl Device {
    pub(crate) fn new(
        seed: u64,
        id: &str,
        unit_id: u8,
        map: &DeviceMap,
        signals: &std::collections::BTreeMap<String, Signal>,
    ) -> Self {
        let points = map
            .registers
            .iter()
            .map(|reg| {
                let limits = reg
                    .range
                    .or(reg.span.map(|s| s.eng))
                    .map(|[a, b]| (a.min(b), a.max(b)));
                let source = match signals.get(&reg.name) {
                    Some(sig) => Source::Signal {
                        generator: Box::new(Mutex::new(SignalGen::new(
                            sig.clone(),
                            point_seed(seed, id, &reg.name),
                        ))),
                        limits,
                    },
                    None => {
                        let eng = limits.map_or(0.0, |(lo, hi)| 0.0_f64.clamp(lo, hi));
                        let raw = eng_to_raw(reg, eng);
                        Source::FixedRaw(match reg.valid {
                            Some([lo, hi]) if !(lo..=hi).contains(&raw) => lo,
                            _ => raw,
                        })
                    }
                };
                Point {
                    reg: reg.clone(),
                    source,
                }
            })
            .collect();
        Device {
            id: id.to_owned(),
            unit_id,
            points,
            faults: Mutex::new(Faults::default()),
        }
    }

    pub(crate) fn request_faults(&self) -> RequestFaults {
        let f = lock(&self.faults);
        RequestFaults {
            silent: f.silent,
            exception: f.exception,
            delay: f.delay,
        }
    }

    pub(crate) fn wire_faults(&self) -> WireFaults {
        let f = lock(&self.faults);
        WireFaults {
            wrong_transaction_id: f.wrong_transaction_id,
            drop_connection: f.drop_connection,
        }
    }

    fn index(&self, register: &str) -> Result<usize, ControlError> {
        self.points
            .iter()
            .position(|p| p.reg.name == register)
            .ok_or_else(|| ControlError::UnknownRegister {
                device: self.id.clone(),
                register: register.to_owned(),
            })
    }

    /// The point's value at `t`: the override if any, else its source.
    fn value(&self, idx: usize, t: Duration, ov: Option<Override>) -> Override {
        if let Some(ov) = ov {
            return ov;
        }
        match &self.points[idx].source {
            Source::FixedRaw(raw) => Override::Raw(*raw),
            Source::Signal { generator, limits } => {
                let v = lock(generator).value_at(t);
                Override::Eng(limits.map_or(v, |(lo, hi)| v.clamp(lo, hi)))
            }
        }
    }

    fn encode(&self, idx: usize, t: Duration, ov: Option<Override>) -> Encoded {
        let reg = &self.points[idx].reg;
        match self.value(idx, t, ov) {
            Override::Eng(v) => encode_eng(reg, v),
            Override::Raw(r) => encode_raw(reg, r),
        }
    }

    /// Indices of `table` points overlapping `[addr, addr + qty)`.
    fn overlapping(&self, table: Table, addr: u16, qty: u16) -> Vec<usize> {
        let (a0, a1) = (u32::from(addr), u32::from(addr) + u32::from(qty));
        (0..self.points.len())
            .filter(|&i| {
                let r = &self.points[i].reg;
                let (b0, b1) = (
                    u32::from(r.address),
                    u32::from(r.address) + u32::from(r.width()),
                );
                r.table == table && b0 < a1 && a0 < b1
            })
            .collect()
    }

    /// Reads `qty` addresses of `table` at simulated time `t`. Undefined addresses inside the
    /// range read 0; a range containing no defined point is `IllegalDataAddress`.
    pub(crate) fn read_words(
        &self,
        table: Table,
        addr: u16,
        qty: u16,
        t: Duration,
    ) -> Result<Vec<u16>, ExceptionCode> {
        let idx = check_range(table, addr, qty).and_then(|()| self.defined(table, addr, qty))?;
        let overrides = lock(&self.faults).overrides.clone();
        let mut out = vec![0u16; usize::from(qty)];
        for i in idx {
            let start = self.points[i].reg.address;
            match self.encode(i, t, overrides.get(&i).copied()) {
                Encoded::Bit(on) => {
                    if let Some(slot) = out.get_mut(usize::from(start - addr)) {
                        *slot |= u16::from(on);
                    }
                }
                Encoded::Words(words) => {
                    for (k, w) in words.into_iter().enumerate() {
                        let a = usize::from(start) + k;
                        if let Some(slot) = a
                            .checked_sub(usize::from(addr))
                            .and_then(|off| out.get_mut(off))
                        {
                            *slot |= w;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Reads `qty` coils/discrete inputs; same rules as [`Device::read_words`].
    pub(crate) fn read_bits(
        &self,
        table: Table,
        addr: u16,
        qty: u16,
        t: Duration,
    ) -> Result<Vec<bool>, ExceptionCode> {
        Ok(self
            .read_words(table, addr, qty, t)?
            .into_iter()
            .map(|w| w != 0)
            .collect())
    }

    fn defined(&self, table: Table, addr: u16, qty: u16) -> Result<Vec<usize>, ExceptionCode> {
        let idx = self.overlapping(table, addr, qty);
        if idx.is_empty() {
            Err(ExceptionCode::IllegalDataAddress)
        } else {
            Ok(idx)
        }
    }
}

fn check_range(table: Table, addr: u16, qty: u16) -> Result<(), ExceptionCode> {
    let max = if table.is_bits() { 2000 } else { 125 };
    if qty == 0 || qty > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    if u32::from(addr) + u32::from(qty) > 0x1_0000 {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(())
}

/// Shared state of a running simulation.
#[derive(Debug)]
pub(crate) struct SimState {
    start: Instant,
    speed: f64,
    devices: HashMap<String, Arc<Device>>,
}

impl SimState {
    pub(crate) fn new(speed: f64, devices: impl IntoIterator<Item = Arc<Device>>) -> Self {
        SimState {
            start: Instant::now(),
            speed,
            devices: devices.into_iter().map(|d| (d.id.clone(), d)).collect(),
        }
    }

    /// Simulated time since start: real elapsed time times `speed`.
    pub(crate) fn now(&self) -> Duration {
        self.start.elapsed().mul_f64(self.speed)
    }
}

/// Cheap, cloneable, thread-safe control handle of a running simulation.
///
/// Overrides and faults take effect on the next request and persist until cleared.
#[derive(Clone, Debug)]
pub struct SimHandle {
    state: Arc<SimState>,
}

impl SimHandle {
    pub(crate) fn new(state: Arc<SimState>) -> Self {
        SimHandle { state }
    }

    fn device(&self, id: &str) -> Result<&Device, ControlError> {
        self.state
            .devices
            .get(id)
            .map(|d| d.as_ref())
            .ok_or_else(|| ControlError::UnknownDevice(id.to_owned()))
    }

    fn with_faults<R>(
        &self,
        device: &str,
        f: impl FnOnce(&Device, &mut Faults) -> Result<R, ControlError>,
    ) -> Result<R, ControlError> {
        let d = self.device(device)?;
        let mut faults = lock(&d.faults);
        f(d, &mut faults)
    }

    fn set_override(&self, device: &str, register: &str, ov: Override) -> Result<(), ControlError> {
        self.with_faults(device, |d, f| {
            f.overrides.insert(d.index(register)?, ov);
            Ok(())
        })
    }

    /// Simulated time elapsed since the simulation started.
    pub fn sim_time(&self) -> Duration {
        self.state.now()
    }

    /// Ids of all devices, sorted.
    pub fn device_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.state.devices.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Holds a point at an engineering value (scaled and encoded like a signal value, but not
    /// clamped to `range`), replacing its signal until [`SimHandle::clear_override`].
    pub fn set_value(&self, device: &str, register: &str, eng: f64) -> Result<(), ControlError> {
        self.set_override(device, register, Override::Eng(eng))
    }

    /// Holds a point at a raw value, bypassing scaling: e.g. 1000 µA for a broken 4–20 mA
    /// loop, or a device fault code. Rounded/clamped to the register type only.
    pub fn set_raw(&self, device: &str, register: &str, raw: f64) -> Result<(), ControlError> {
        self.set_override(device, register, Override::Raw(raw))
    }

    /// Returns a point to its signal (or default).
    pub fn clear_override(&self, device: &str, register: &str) -> Result<(), ControlError> {
        self.with_faults(device, |d, f| {
            f.overrides.remove(&d.index(register)?);
            Ok(())
        })
    }

    /// Stops (`true`) or resumes answering: requests to the unit get no response at all.
    pub fn set_silent(&self, device: &str, silent: bool) -> Result<(), ControlError> {
        self.with_faults(device, |_, f| {
            f.silent = silent;
            Ok(())
        })
    }

    /// Answers every request with Modbus exception `code` (e.g. 4 = server device failure),
    /// or normally again with `None`.
    pub fn set_exception(&self, device: &str, code: Option<u8>) -> Result<(), ControlError> {
        self.with_faults(device, |_, f| {
            f.exception = code;
            Ok(())
        })
    }

    /// Delays every answer of the device by `delay` (zero = none). Requests on one connection
    /// are served in order, so a slow unit also delays the others behind the same listener,
    /// as on a real RS-485 bus.
    pub fn set_delay(&self, device: &str, delay: Duration) -> Result<(), ControlError> {
        self.with_faults(device, |_, f| {
            f.delay = delay;
            Ok(())
        })
    }

    /// Answers with a wrong MBAP transaction id (Modbus TCP listeners only), or correctly again.
    pub fn set_wrong_transaction_id(&self, device: &str, on: bool) -> Result<(), ControlError> {
        self.with_faults(device, |_, f| {
            f.wrong_transaction_id = on;
            Ok(())
        })
    }

    /// Closes the connection instead of answering (Modbus TCP listeners only), or answers again.
    /// The other units behind the same listener lose the connection too, as on a converter.
    pub fn set_drop_connection(&self, device: &str, on: bool) -> Result<(), ControlError> {
        self.with_faults(device, |_, f| {
            f.drop_connection = on;
            Ok(())
        })
    }

    /// Clears all overrides and faults of a device.
    pub fn reset(&self, device: &str) -> Result<(), ControlError> {
        self.with_faults(device, |_, f| {
            *f = Faults::default();
            Ok(())
        })
    }

    /// The engineering value the device presents now for `register` (as the gateway would
    /// decode it, before integer rounding and without fault/valid checks).
    pub fn value(&self, device: &str, register: &str) -> Result<f64, ControlError> {
        let t = self.state.now();
        self.with_faults(device, |d, f| {
            let i = d.index(register)?;
            let ov = f.overrides.get(&i).copied();
            Ok(match d.value(i, t, ov) {
                Override::Eng(v) => v,
                Override::Raw(r) => raw_to_eng(&d.points[i].reg, r),
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn device(signals: &[(&str, &str)]) -> Device {
        let map = DeviceMap::from_toml_str(
            r#"
            id = "m"
            [[registers]]
            name = "lel"
            table = "input"
            address = 0
            span = { raw = [4000, 20000], eng = [0, 100] }
            valid = [3600, 21000]
            [[registers]]
            name = "f"
            table = "input"
            address = 4
            type = "f32"
            order = "CDAB"
            [[registers]]
            name = "a"
            table = "input"
            address = 6
            type = "bool"
            bit = 0
            [[registers]]
            name = "b"
            table = "input"
            address = 6
            type = "bool"
            bit = 15
            [[registers]]
            name = "c"
            table = "coil"
            address = 2
            "#,
        )
        .unwrap();
        let signals: BTreeMap<String, Signal> = signals
            .iter()
            .map(|(k, v)| {
                #[derive(serde::Deserialize)]
                struct W {
                    s: Signal,
                }
                let s = toml::from_str::<W>(&format!("s = {v}")).unwrap().s;
                ((*k).to_owned(), s)
            })
            .collect();
        Device::new(7, "d", 1, &map, &signals)
    }

    #[test]
    fn bank_layout_defaults_and_gaps() {
        let d = device(&[
            ("f", "{ constant = 1.0 }"),
            ("a", "{ constant = true }"),
            ("b", "{ constant = true }"),
            ("c", "{ constant = true }"),
            ("lel", "{ constant = -20 }"),
        ]);
        let t = Duration::ZERO;
        // lel clamped to the span's 0 %LEL = 4000 µA; gap reads 0; CDAB float; merged bits.
        let w = d.read_words(Table::Input, 0, 7, t).unwrap();
        assert_eq!(w, [4000, 0, 0, 0, 0x0000, 0x3F80, 0x8001]);
        // Partial overlap of a multi-register point.
        assert_eq!(d.read_words(Table::Input, 5, 1, t).unwrap(), [0x3F80]);
        assert_eq!(
            d.read_bits(Table::Coil, 0, 4, t).unwrap(),
            [false, false, true, false]
        );
        let e = ExceptionCode::IllegalDataAddress;
        assert_eq!(d.read_words(Table::Input, 10, 5, t), Err(e));
        assert_eq!(d.read_words(Table::Holding, 0, 1, t), Err(e));
        assert_eq!(d.read_words(Table::Input, 65535, 2, t), Err(e));
        let v = ExceptionCode::IllegalDataValue;
        assert_eq!(d.read_words(Table::Input, 0, 0, t), Err(v));
        assert_eq!(d.read_words(Table::Input, 0, 126, t), Err(v));
        assert_eq!(d.read_bits(Table::Coil, 0, 2001, t), Err(v));
        assert!(d.read_bits(Table::Coil, 0, 2000, t).is_ok());
    }

    #[test]
    fn unsignalled_points_hold_a_valid_default() {
        let d = device(&[]);
        assert_eq!(
            d.read_words(Table::Input, 0, 1, Duration::ZERO).unwrap(),
            [4000]
        );
    }

    #[test]
    fn overrides_and_faults_through_the_handle() {
        let state = Arc::new(SimState::new(1.0, [Arc::new(device(&[]))]));
        let h = SimHandle::new(state.clone());
        let d = state.devices.get("d").unwrap();
        let t = Duration::ZERO;
        h.set_value("d", "lel", 25.0).unwrap();
        assert_eq!(d.read_words(Table::Input, 0, 1, t).unwrap(), [8000]);
        assert_eq!(h.value("d", "lel").unwrap(), 25.0);
        h.set_raw("d", "lel", 1000.0).unwrap();
        assert_eq!(d.read_words(Table::Input, 0, 1, t).unwrap(), [1000]);
        assert_eq!(h.value("d", "lel").unwrap(), -18.75);
        h.clear_override("d", "lel").unwrap();
        assert_eq!(d.read_words(Table::Input, 0, 1, t).unwrap(), [4000]);
        h.set_silent("d", true).unwrap();
        h.set_exception("d", Some(4)).unwrap();
        h.set_delay("d", Duration::from_millis(5)).unwrap();
        let f = d.request_faults();
        assert!(f.silent && f.exception == Some(4) && f.delay == Duration::from_millis(5));
        h.reset("d").unwrap();
        let f = d.request_faults();
        assert!(!f.silent && f.exception.is_none() && f.delay.is_zero());
        assert_eq!(
            h.set_value("x", "lel", 1.0),
            Err(ControlError::UnknownDevice("x".into()))
        );
        assert!(matches!(
            h.set_raw("d", "nope", 1.0),
            Err(ControlError::UnknownRegister { .. })
        ));
        assert_eq!(h.device_ids(), ["d"]);
    }
}
