//! Live simulation state and [`SimHandle`], the control surface for tests, demos and scenarios.
//!
//! Each device holds its points (register + value source) and its fault state. A point's value
//! at simulated time `t` is, in priority order: an override set through the handle (engineering
//! or raw), its signal (clamped into the register's `range`, else its span's engineering
//! range, as a transmitter saturates), or a fixed default (see [`crate::site`]).
//!
//! Besides the registers of its map, a device may have hidden variables (`vars` in the site
//! spec: a tank's inflow and outflow) that other points integrate and scenarios override.
//! Overrides are a held engineering value, a raw value, or a ramp from a value to another over
//! a stretch of simulated time (a gas leak building up).
//!
//! Device faults model what a gateway sees on a bus: `silent` (no answer at all, and no MQTT
//! publication), a forced Modbus exception for every request, a response delay, and swapped
//! word order (every multi-register value is sent with its words reversed, as after a firmware
//! update or a converter set up for another vendor). Faults are applied by the Modbus
//! service in that order: silent, then delay, then exception. Two more act on the Modbus TCP
//! connection when the answer is written: `wrong_transaction_id` (the answer's MBAP transaction id
//! is altered, as a confused converter does) and `drop_connection` (the connection is closed
//! instead of answering).
//!
//! Locks are `std::sync::Mutex`es never held across an `.await`; a poisoned lock is recovered
//! (state is plain data, always consistent between statements).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::ExceptionCode;

use crate::devmap::{DeviceMap, Register, Table};
use crate::encode::{Encoded, encode_eng, encode_raw, eng_to_raw, raw_to_eng};
use crate::signal::{Integral, Signal, SignalGen, SignalKind, TICK, point_seed};

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
    /// Linear from `from` at `t0` to `to` at `t0 + over` (simulated time), then held.
    Ramp {
        from: f64,
        to: f64,
        t0: Duration,
        over: Duration,
    },
}

impl Override {
    /// Resolves a ramp at `t` into a held engineering value.
    fn at(self, t: Duration) -> Override {
        match self {
            Override::Ramp { from, to, t0, over } => {
                let d = over.as_secs_f64();
                let f = if d <= 0.0 {
                    1.0
                } else {
                    (t.saturating_sub(t0).as_secs_f64() / d).min(1.0)
                };
                Override::Eng(from + (to - from) * f)
            }
            other => other,
        }
    }
}

#[derive(Debug)]
enum Source {
    Signal {
        generator: Box<Mutex<SignalGen>>,
        limits: Option<(f64, f64)>,
    },
    Integral {
        spec: Integral,
        /// `(point index, coefficient)`.
        terms: Vec<(usize, f64)>,
        state: Mutex<IntegralState>,
        limits: Option<(f64, f64)>,
    },
    FixedRaw(f64),
}

/// Integration progress: the value at the end of tick `tick`.
#[derive(Debug)]
struct IntegralState {
    tick: u64,
    value: f64,
}

#[derive(Debug)]
struct Point {
    name: String,
    /// `None` for a hidden variable.
    reg: Option<Register>,
    source: Source,
}

#[derive(Debug, Default)]
struct Faults {
    silent: bool,
    exception: Option<u8>,
    delay: Duration,
    wrong_transaction_id: bool,
    drop_connection: bool,
    swap_words: bool,
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
    /// Builds a device from its map, the signals of its registers and its hidden variables.
    /// `day_offset` is the site's time of day at t = 0. Signals and variables must name
    /// registers/variables that exist and integrals must read non-integral points (checked by
    /// [`crate::site`] before).
    pub(crate) fn new(
        seed: u64,
        id: &str,
        unit_id: u8,
        map: &DeviceMap,
        signals: &BTreeMap<String, Signal>,
        vars: &BTreeMap<String, Signal>,
        day_offset: Duration,
    ) -> Self {
        let names: Vec<String> = map
            .registers
            .iter()
            .map(|r| r.name.clone())
            .chain(vars.keys().cloned())
            .collect();
        let gen_for = |name: &str, sig: &Signal| {
            Box::new(Mutex::new(
                SignalGen::new(sig.clone(), point_seed(seed, id, name)).with_day_offset(day_offset),
            ))
        };
        let source_for = |name: &str, sig: &Signal, limits: Option<(f64, f64)>| match &sig.kind {
            SignalKind::Integral(spec) => Source::Integral {
                terms: spec
                    .of
                    .iter()
                    .filter_map(|(n, c)| names.iter().position(|x| x == n).map(|i| (i, *c)))
                    .collect(),
                state: Mutex::new(IntegralState {
                    tick: 0,
                    value: spec.start,
                }),
                spec: spec.clone(),
                limits,
            },
            _ => Source::Signal {
                generator: gen_for(name, sig),
                limits,
            },
        };
        let mut points: Vec<Point> = map
            .registers
            .iter()
            .map(|reg| {
                let limits = reg
                    .range
                    .or(reg.span.map(|s| s.eng))
                    .map(|[a, b]| (a.min(b), a.max(b)));
                let source = match signals.get(&reg.name) {
                    Some(sig) => source_for(&reg.name, sig, limits),
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
                    name: reg.name.clone(),
                    reg: Some(reg.clone()),
                    source,
                }
            })
            .collect();
        for (name, sig) in vars {
            points.push(Point {
                name: name.clone(),
                reg: None,
                source: source_for(name, sig, None),
            });
        }
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
            .position(|p| p.name == register)
            .ok_or_else(|| ControlError::UnknownRegister {
                device: self.id.clone(),
                register: register.to_owned(),
            })
    }

    /// The point's value at `t`: the override if any (a ramp resolved at `t`), else its source.
    /// `overrides` are the device's current overrides (also used for integrands).
    fn value(&self, idx: usize, t: Duration, overrides: &HashMap<usize, Override>) -> Override {
        if let Some(ov) = overrides.get(&idx) {
            return ov.at(t);
        }
        match &self.points[idx].source {
            Source::FixedRaw(raw) => Override::Raw(*raw),
            Source::Signal { generator, limits } => {
                let v = lock(generator).value_at(t);
                Override::Eng(limits.map_or(v, |(lo, hi)| v.clamp(lo, hi)))
            }
            Source::Integral {
                spec,
                terms,
                state,
                limits,
            } => {
                let v = self.integrate(spec, terms, state, t, overrides);
                Override::Eng(limits.map_or(v, |(lo, hi)| v.clamp(lo, hi)))
            }
        }
    }

    /// The engineering value of a point at `t` (raw overrides converted back).
    fn eng(&self, idx: usize, t: Duration, overrides: &HashMap<usize, Override>) -> f64 {
        match self.value(idx, t, overrides) {
            Override::Raw(r) => self.points[idx]
                .reg
                .as_ref()
                .map_or(r, |reg| raw_to_eng(reg, r)),
            Override::Eng(v) => v,
            Override::Ramp { .. } => unreachable!("ramps are resolved by Override::at"),
        }
    }

    /// Advances an integral to `t` in [`TICK`] steps. Each step adds `Σ coefficient × value`
    /// of the terms at the step's start, times `TICK / per`. Going back in time restarts it.
    fn integrate(
        &self,
        spec: &Integral,
        terms: &[(usize, f64)],
        state: &Mutex<IntegralState>,
        t: Duration,
        overrides: &HashMap<usize, Override>,
    ) -> f64 {
        let target = (t.as_nanos() / TICK.as_nanos()) as u64;
        let mut st = lock(state);
        if st.tick > target {
            *st = IntegralState {
                tick: 0,
                value: spec.start,
            };
        }
        let dt = TICK.as_secs_f64() / spec.per.as_secs_f64();
        while st.tick < target {
            let at = TICK * u32::try_from(st.tick).unwrap_or(u32::MAX);
            let mut rate: f64 = terms
                .iter()
                .map(|(i, c)| c * self.eng(*i, at, overrides))
                .sum();
            if let Some(m) = spec.min_rate {
                rate = rate.max(m);
            }
            st.value = (st.value + rate * dt).clamp(spec.min, spec.max);
            st.tick += 1;
        }
        st.value
    }

    fn encode(
        &self,
        idx: usize,
        t: Duration,
        overrides: &HashMap<usize, Override>,
        swap: bool,
    ) -> Option<Encoded> {
        let reg = self.points[idx].reg.as_ref()?;
        let mut e = match self.value(idx, t, overrides) {
            Override::Raw(r) => encode_raw(reg, r),
            Override::Eng(v) => encode_eng(reg, v),
            Override::Ramp { .. } => unreachable!("ramps are resolved by Override::at"),
        };
        if swap {
            if let Encoded::Words(w) = &mut e {
                w.reverse();
            }
        }
        Some(e)
    }

    /// Snapshot of the values a data unit publishes: `(name, engineering value, raw in valid
    /// range)` of every register, at `t`.
    pub(crate) fn publish_values(&self, t: Duration) -> Vec<(String, f64, bool)> {
        let overrides = lock(&self.faults).overrides.clone();
        self.points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let reg = p.reg.as_ref()?;
                let (eng, raw) = match self.value(i, t, &overrides) {
                    Override::Raw(r) => (raw_to_eng(reg, r), r),
                    Override::Eng(v) => (v, eng_to_raw(reg, v)),
                    Override::Ramp { .. } => unreachable!("ramps are resolved by Override::at"),
                };
                let valid = reg.valid.is_none_or(|[lo, hi]| (lo..=hi).contains(&raw));
                Some((p.name.clone(), eng, valid))
            })
            .collect()
    }

    pub(crate) fn is_silent(&self) -> bool {
        lock(&self.faults).silent
    }

    /// Indices of `table` points overlapping `[addr, addr + qty)`.
    fn overlapping(&self, table: Table, addr: u16, qty: u16) -> Vec<usize> {
        let (a0, a1) = (u32::from(addr), u32::from(addr) + u32::from(qty));
        (0..self.points.len())
            .filter(|&i| {
                let Some(r) = &self.points[i].reg else {
                    return false;
                };
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
        let (overrides, swap) = {
            let f = lock(&self.faults);
            (f.overrides.clone(), f.swap_words)
        };
        let mut out = vec![0u16; usize::from(qty)];
        for i in idx {
            let Some(start) = self.points[i].reg.as_ref().map(|r| r.address) else {
                continue;
            };
            match self.encode(i, t, &overrides, swap) {
                None => {}
                Some(Encoded::Bit(on)) => {
                    if let Some(slot) = out.get_mut(usize::from(start - addr)) {
                        *slot |= u16::from(on);
                    }
                }
                Some(Encoded::Words(words)) => {
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
    /// Silence flag of each MQTT publisher (data unit), by id.
    publishers: HashMap<String, AtomicBool>,
}

impl SimState {
    pub(crate) fn new(speed: f64, devices: impl IntoIterator<Item = Arc<Device>>) -> Self {
        SimState {
            start: Instant::now(),
            speed,
            devices: devices.into_iter().map(|d| (d.id.clone(), d)).collect(),
            publishers: HashMap::new(),
        }
    }

    /// Registers the MQTT publishers (before the state is shared).
    pub(crate) fn with_publishers(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        self.publishers = ids
            .into_iter()
            .map(|id| (id, AtomicBool::new(false)))
            .collect();
        self
    }

    /// Simulated seconds per real second.
    pub(crate) fn speed(&self) -> f64 {
        self.speed
    }

    pub(crate) fn publisher_silent(&self, id: &str) -> bool {
        self.publishers
            .get(id)
            .is_some_and(|f| f.load(Ordering::Relaxed))
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

    /// Ids of all MQTT publishers, sorted.
    pub fn publisher_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.state.publishers.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Simulated seconds per real second.
    pub fn speed(&self) -> f64 {
        self.state.speed()
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

    /// Ramps a point from its present engineering value to `to` over `over` of simulated time,
    /// then holds `to` (until [`SimHandle::clear_override`]).
    pub fn ramp_to(
        &self,
        device: &str,
        register: &str,
        to: f64,
        over: Duration,
    ) -> Result<(), ControlError> {
        let t = self.state.now();
        self.with_faults(device, |d, f| {
            let i = d.index(register)?;
            let from = d.eng(i, t, &f.overrides);
            f.overrides.insert(
                i,
                Override::Ramp {
                    from,
                    to,
                    t0: t,
                    over,
                },
            );
            Ok(())
        })
    }

    /// Freezes a point at its present engineering value: a stuck detector.
    pub fn hold(&self, device: &str, register: &str) -> Result<f64, ControlError> {
        let t = self.state.now();
        self.with_faults(device, |d, f| {
            let i = d.index(register)?;
            let v = d.eng(i, t, &f.overrides);
            f.overrides.insert(i, Override::Eng(v));
            Ok(v)
        })
    }

    /// Sends every multi-register value with its words reversed (`true`), or normally again.
    pub fn set_swap_words(&self, device: &str, on: bool) -> Result<(), ControlError> {
        self.with_faults(device, |_, f| {
            f.swap_words = on;
            Ok(())
        })
    }

    /// Stops (`true`) or resumes the publications of an MQTT publisher (a data unit going
    /// silent). Returns `UnknownDevice` for an unknown publisher id.
    pub fn set_publisher_silent(&self, publisher: &str, silent: bool) -> Result<(), ControlError> {
        let flag = self
            .state
            .publishers
            .get(publisher)
            .ok_or_else(|| ControlError::UnknownDevice(publisher.to_owned()))?;
        flag.store(silent, Ordering::Relaxed);
        Ok(())
    }

    /// Clears every fault and override of every device and publisher.
    pub fn reset_all(&self) {
        for d in self.state.devices.values() {
            *lock(&d.faults) = Faults::default();
        }
        for f in self.state.publishers.values() {
            f.store(false, Ordering::Relaxed);
        }
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
            Ok(d.eng(i, t, &f.overrides))
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
        Device::new(7, "d", 1, &map, &signals, &BTreeMap::new(), Duration::ZERO)
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
