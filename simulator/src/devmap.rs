//! The shared device-map format (`config/maps/*.toml`), parsed independently of the gateway.
//!
//! A [`DeviceMap`] describes one device model: named points, the Modbus table and 0-based
//! protocol address each lives at, its data type and byte/word order, and how raw values map
//! to engineering values (`span` or `scale`/`offset`).
//!
//! Invariants established by [`DeviceMap::from_toml_str`] (everything downstream relies on them):
//! - register names are unique;
//! - coil/discrete points are `bool` without `bit`; `bit` (0–15) only on `bool` in register tables;
//! - `span` excludes `scale`/`offset`, and its raw and engineering ends differ;
//! - every point fits in the 16-bit address space, and no two points share an address, except
//!   `bool` points at distinct bits of the same register.
//!
//! Unknown fields are ignored so that newer map files still load.

use std::path::Path;

use serde::Deserialize;

/// Errors from loading or validating a device map.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The file could not be read.
    #[error("reading device map {path}: {source}")]
    Io {
        /// File that failed.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The TOML is malformed or a field has the wrong type.
    #[error("parsing device map: {0}")]
    Parse(#[from] toml::de::Error),
    /// The map parsed but violates an invariant (see the module docs).
    #[error("device map {map}: register {register:?}: {reason}")]
    Invalid {
        /// Map id.
        map: String,
        /// Offending register name.
        register: String,
        /// What is wrong.
        reason: String,
    },
}

/// Modbus table of a point (function codes 1–4).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Coils, function code 1.
    Coil,
    /// Discrete inputs, function code 2.
    Discrete,
    /// Holding registers, function code 3.
    Holding,
    /// Input registers, function code 4.
    Input,
}

impl Table {
    /// Coil and discrete tables hold one bit per address, the others 16-bit words.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
}

/// Data type of a point.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// One bit: a coil/discrete input, or bit `bit` (default 0) of a register.
    Bool,
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit, one register.
    I16,
    /// Unsigned 32-bit, two registers.
    U32,
    /// Signed 32-bit, two registers.
    I32,
    /// Unsigned 64-bit, four registers.
    U64,
    /// Signed 64-bit, four registers.
    I64,
    /// IEEE-754 single, two registers.
    F32,
    /// IEEE-754 double, four registers.
    F64,
}

impl ValueType {
    /// Number of 16-bit registers the value occupies (1 for bools).
    pub fn words(self) -> u16 {
        match self {
            ValueType::Bool | ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 4,
        }
    }
}

/// Byte/word order of a value in registers (each register is big-endian on the wire).
///
/// For `0x11223344`: ABCD → `[0x1122, 0x3344]`, DCBA → `[0x4433, 0x2211]`,
/// BADC → `[0x2211, 0x4433]`, CDAB → `[0x3344, 0x1122]`. 64-bit values extend the same
/// pattern over four words; 16-bit values are byte-swapped by DCBA and BADC.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum WordOrder {
    /// Big-endian (default).
    #[default]
    ABCD,
    /// Little-endian.
    DCBA,
    /// Bytes swapped within each word.
    BADC,
    /// Words reversed.
    CDAB,
}

/// Linear map from a raw range to an engineering range.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
pub struct Span {
    /// Raw ends, e.g. `[4000, 20000]` µA.
    pub raw: [f64; 2],
    /// Engineering ends, e.g. `[0, 100]` %LEL.
    pub eng: [f64; 2],
}

/// One point of a device map.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Register {
    /// Channel name segment, unique in the map.
    pub name: String,
    /// Modbus table.
    pub table: Table,
    /// 0-based protocol address.
    pub address: u16,
    /// Data type as written; use [`Register::value_type`] for the defaulted value.
    #[serde(rename = "type")]
    pub value_type: Option<ValueType>,
    /// Bit index for a `bool` inside a holding/input register.
    pub bit: Option<u8>,
    /// Byte/word order.
    #[serde(default)]
    pub order: WordOrder,
    /// Channel kind (informative for the simulator).
    pub kind: Option<String>,
    /// Engineering unit (informative for the simulator).
    pub unit: Option<String>,
    /// `eng = raw * scale + offset`.
    pub scale: Option<f64>,
    /// See `scale`.
    pub offset: Option<f64>,
    /// Span mapping, exclusive with `scale`/`offset`.
    pub span: Option<Span>,
    /// Raw valid range; the gateway treats values outside as a fault.
    pub valid: Option<[f64; 2]>,
    /// Raw values meaning a device fault.
    #[serde(default)]
    pub fault_codes: Vec<i64>,
    /// Display decimals (informative for the simulator).
    pub decimals: Option<u8>,
    /// Engineering range of the measurement.
    pub range: Option<[f64; 2]>,
}

impl Register {
    /// The data type, defaulting to `bool` for bit tables and `u16` otherwise.
    pub fn value_type(&self) -> ValueType {
        self.value_type.unwrap_or(if self.table.is_bits() {
            ValueType::Bool
        } else {
            ValueType::U16
        })
    }

    /// Number of addresses the point occupies in its table.
    pub fn width(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.value_type().words()
        }
    }

    fn check(&self) -> Result<(), String> {
        let ty = self.value_type();
        if self.table.is_bits() && ty != ValueType::Bool {
            return Err("coil/discrete points must be bool".into());
        }
        if let Some(bit) = self.bit {
            if ty != ValueType::Bool || self.table.is_bits() {
                return Err("`bit` is only allowed on bool points in holding/input".into());
            }
            if bit > 15 {
                return Err(format!("bit {bit} is out of 0..=15"));
            }
        }
        if let Some(span) = &self.span {
            if self.scale.is_some() || self.offset.is_some() {
                return Err("`span` excludes `scale`/`offset`".into());
            }
            if span.raw[0] == span.raw[1] || span.eng[0] == span.eng[1] {
                return Err("span ends must differ".into());
            }
        }
        if self.scale == Some(0.0) {
            return Err("scale must not be 0".into());
        }
        if u32::from(self.address) + u32::from(self.width()) > 0x1_0000 {
            return Err("point extends beyond address 65535".into());
        }
        Ok(())
    }
}

/// A device model's register map.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct DeviceMap {
    /// Map id, referenced by `map_id` in site specs.
    pub id: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The points.
    #[serde(default)]
    pub registers: Vec<Register>,
}

impl DeviceMap {
    /// Parses and validates a map (see the module docs for the invariants).
    pub fn from_toml_str(text: &str) -> Result<Self, MapError> {
        let map: DeviceMap = toml::from_str(text)?;
        map.validate()?;
        Ok(map)
    }

    /// Reads and parses a map file.
    pub fn load(path: &Path) -> Result<Self, MapError> {
        let text = std::fs::read_to_string(path).map_err(|source| MapError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Loads every `*.toml` file of a directory, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, MapError> {
        let io = |source| MapError::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        paths.iter().map(|p| Self::load(p)).collect()
    }

    /// The point called `name`.
    pub fn register(&self, name: &str) -> Option<&Register> {
        self.registers.iter().find(|r| r.name == name)
    }

    fn validate(&self) -> Result<(), MapError> {
        let invalid = |r: &Register, reason: String| MapError::Invalid {
            map: self.id.clone(),
            register: r.name.clone(),
            reason,
        };
        for (i, r) in self.registers.iter().enumerate() {
            r.check().map_err(|e| invalid(r, e))?;
            for other in &self.registers[..i] {
                if other.name == r.name {
                    return Err(invalid(r, "duplicate name".into()));
                }
                if other.table != r.table {
                    continue;
                }
                let (a0, a1) = (
                    u32::from(r.address),
                    u32::from(r.address) + u32::from(r.width()),
                );
                let (b0, b1) = (
                    u32::from(other.address),
                    u32::from(other.address) + u32::from(other.width()),
                );
                if a0 < b1 && b0 < a1 {
                    let both_bits = !r.table.is_bits()
                        && r.value_type() == ValueType::Bool
                        && other.value_type() == ValueType::Bool;
                    if !both_bits || r.bit.unwrap_or(0) == other.bit.unwrap_or(0) {
                        return Err(invalid(r, format!("overlaps register {:?}", other.name)));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_fields_and_defaults() {
        let m = DeviceMap::from_toml_str(
            r#"
            id = "x"
            future_field = 1
            [[registers]]
            name = "lel"
            table = "input"
            address = 0
            kind = "combustible_gas"
            unit = "%LEL"
            span = { raw = [4000, 20000], eng = [0, 100] }
            valid = [3600, 21000]
            fault_codes = [65535]
            decimals = 1
            range = [0, 100]
            [[registers]]
            name = "alarm"
            table = "holding"
            address = 1
            type = "bool"
            bit = 3
            [[registers]]
            name = "trip"
            table = "holding"
            address = 1
            type = "bool"
            bit = 4
            [[registers]]
            name = "e"
            table = "holding"
            address = 2
            type = "u64"
            order = "CDAB"
            scale = 0.1
            offset = -5
            [[registers]]
            name = "c"
            table = "coil"
            address = 0
            "#,
        )
        .unwrap();
        let lel = m.register("lel").unwrap();
        assert_eq!(lel.value_type(), ValueType::U16);
        assert_eq!(lel.order, WordOrder::ABCD);
        assert_eq!(lel.span.unwrap().raw, [4000.0, 20000.0]);
        assert_eq!(lel.valid, Some([3600.0, 21000.0]));
        assert_eq!(lel.fault_codes, vec![65535]);
        assert_eq!(m.register("alarm").unwrap().bit, Some(3));
        let e = m.register("e").unwrap();
        assert_eq!(
            (e.width(), e.order, e.offset),
            (4, WordOrder::CDAB, Some(-5.0))
        );
        assert_eq!(m.register("c").unwrap().value_type(), ValueType::Bool);
    }

    #[test]
    fn rejects_invalid_maps() {
        let base = "id = \"x\"\n";
        for (body, needle) in [
            (
                "name='a'\ntable='holding'\naddress=0\ntype='u32'\n[[registers]]\nname='b'\ntable='holding'\naddress=1",
                "overlaps",
            ),
            (
                "name='a'\ntable='coil'\naddress=0\ntype='u16'",
                "must be bool",
            ),
            ("name='a'\ntable='input'\naddress=0\nbit=2", "bit"),
            (
                "name='a'\ntable='input'\naddress=0\nscale=2\nspan={raw=[0,1],eng=[0,1]}",
                "excludes",
            ),
            (
                "name='a'\ntable='input'\naddress=65535\ntype='u32'",
                "beyond",
            ),
            (
                "name='a'\ntable='input'\naddress=0\n[[registers]]\nname='a'\ntable='input'\naddress=1",
                "duplicate",
            ),
        ] {
            let text = format!("{base}[[registers]]\n{body}\n");
            let err = DeviceMap::from_toml_str(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn loads_the_shared_maps() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/maps");
        let maps = DeviceMap::load_dir(&dir).unwrap();
        assert!(maps.len() >= 4);
        assert!(maps.iter().any(|m| m.id == "gas-4-20ma"));
    }
}
