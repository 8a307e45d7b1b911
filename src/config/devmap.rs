//! The device-map format: a detector model's register map, declared once and instantiated per
//! device. The simulator reads the same format (its own parser), so one file describes a model for
//! both. See `config/maps/*.toml`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A register map, inline in the gateway config or in its own file.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceMap {
    /// Referenced by `devices[].map`.
    pub id: String,
    /// Free text: vendor, model, manual reference.
    #[serde(default)]
    pub description: String,
    /// The points this model exposes.
    #[serde(default)]
    pub registers: Vec<RegisterDef>,
}

/// Which Modbus table a point lives in (function codes 1–4).
#[derive(
    Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Function code 1.
    Coil,
    /// Function code 2.
    Discrete,
    /// Function code 3.
    Holding,
    /// Function code 4.
    Input,
}

impl Table {
    /// Bit tables hold one bit per address; register tables 16 bits.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
    /// Largest read per request allowed by the Modbus specification.
    pub fn max_per_request(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }
    /// Name as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

/// How a value is laid out in registers.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// One bit: a coil or discrete input, or `bit` N of a register.
    Bool,
    /// 16-bit unsigned.
    U16,
    /// 16-bit signed.
    I16,
    /// 32-bit unsigned over two registers.
    U32,
    /// 32-bit signed over two registers.
    I32,
    /// 64-bit unsigned over four registers.
    U64,
    /// 64-bit signed over four registers.
    I64,
    /// IEEE 754 single over two registers.
    F32,
    /// IEEE 754 double over four registers.
    F64,
}

impl DataType {
    /// Number of 16-bit registers the value spans (1 for bools).
    pub fn words(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }
}

/// Byte and word order, named by where bytes A (most significant) .. D land.
/// For 64-bit values the same pattern extends over four words: ABCD = big-endian,
/// DCBA = little-endian, BADC = bytes swapped in each word, CDAB = words reversed.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub enum ByteOrder {
    /// Big-endian words, most significant word first (Modbus default).
    #[default]
    ABCD,
    /// Fully little-endian.
    DCBA,
    /// Bytes swapped within each word, most significant word first.
    BADC,
    /// Least significant word first, bytes big-endian in each word.
    CDAB,
}

/// Raw-to-engineering scaling.
#[derive(Clone, Debug, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Span {
    /// Raw range, for example `[4000, 20000]` µA or `[0, 4095]` counts.
    pub raw: [f64; 2],
    /// Engineering range it maps to, for example `[0, 100]` %LEL.
    pub eng: [f64; 2],
}

impl Span {
    /// For a 4–20 mA span (raw low bound one fifth of the high bound, whatever the raw unit:
    /// `[4, 20]` mA, `[4000, 20000]` µA, `[819, 4095]` ADC counts), the raw values of the NAMUR
    /// NE 43 fault limits: below 3.6 mA (open loop) or above 21 mA (short circuit); `None` for
    /// any other span.
    pub fn namur_valid(&self) -> Option<[f64; 2]> {
        let (lo, hi) = (self.raw[0].min(self.raw[1]), self.raw[0].max(self.raw[1]));
        let is_4_20 = lo > 0.0 && hi.is_finite() && ((lo * 5.0 - hi) / hi).abs() < 0.005;
        // 16 mA of loop current span `hi - lo` raw units.
        let per_ma = (hi - lo) / 16.0;
        is_4_20.then_some([lo - 0.4 * per_ma, hi + 1.0 * per_ma])
    }
}

/// One point in a map.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDef {
    /// Last segment of the channel id (`level` in `tankfarm.t101.level`).
    pub name: String,
    /// Modbus table.
    pub table: Table,
    /// Address as printed in the vendor's manual (see `devices[].address_base`).
    pub address: u16,
    /// Data type; defaults to `bool` for bit tables and `u16` otherwise.
    #[serde(rename = "type")]
    pub data_type: Option<DataType>,
    /// Bit index 0–15 for a bool inside a register.
    pub bit: Option<u8>,
    /// Byte/word order for multi-byte values.
    #[serde(default)]
    pub order: ByteOrder,
    /// Channel kind (`combustible_gas`, `toxic_gas`, `oxygen`, `tank_level`, …).
    #[serde(default)]
    pub kind: Option<String>,
    /// Engineering unit (`%LEL`, `ppm`, `m`, `kW`).
    #[serde(default)]
    pub unit: Option<String>,
    /// Linear scale applied to the raw value: `eng = raw * scale + offset`.
    pub scale: Option<f64>,
    /// Linear offset, see `scale`.
    pub offset: Option<f64>,
    /// Span mapping; excludes `scale`/`offset`.
    pub span: Option<Span>,
    /// Raw values outside this range are Bad(out_of_range), e.g. `[3600, 21000]` µA. A 4–20 mA
    /// `span` without it gets the NAMUR NE 43 limits ([`Span::namur_valid`]).
    pub valid: Option<[f64; 2]>,
    /// Raw values the device uses to signal its own fault.
    #[serde(default)]
    pub fault_codes: Vec<i64>,
    /// Round the engineering value to this many decimals.
    pub decimals: Option<u8>,
    /// Engineering range of the measurement, used for % deadbands and dashboards.
    pub range: Option<[f64; 2]>,
    /// Words for the values of a state channel: `{ 0 = "停止", 1 = "运行" }` (integer keys).
    #[serde(default)]
    pub states: BTreeMap<String, String>,
}

impl RegisterDef {
    /// The valid raw range: `valid` as written, else the NAMUR NE 43 limits of a 4–20 mA span.
    pub fn effective_valid(&self) -> Option<[f64; 2]> {
        self.valid
            .or_else(|| self.span.as_ref().and_then(Span::namur_valid))
    }

    /// The data type with its table-dependent default.
    pub fn data_type(&self) -> DataType {
        self.data_type.unwrap_or(if self.table.is_bits() {
            DataType::Bool
        } else {
            DataType::U16
        })
    }

    /// Number of addresses (bits or registers) the point occupies.
    pub fn width(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.data_type().words()
        }
    }
}

/// Reads a device map from its TOML table (inline in `[[device_maps]]` or a map file). A
/// mistake names the path inside the map and what is allowed, for example
/// `registers[2].type: unknown variant `u17`, expected one of `bool`, `u16`, …`.
pub fn map_from_value(v: toml::Value) -> Result<DeviceMap, String> {
    if !v.is_table() {
        return Err(format!(
            "a device map is a table (`id`, `description`, `[[registers]]`), found {}",
            v.type_str()
        ));
    }
    serde_path_to_error::deserialize::<_, DeviceMap>(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.message().trim_end();
        if path == "." || path.is_empty() {
            msg.to_owned()
        } else {
            format!("{path}: {msg}")
        }
    })
}
