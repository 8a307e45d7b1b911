//! Decoding register words into engineering values: data types, byte/word orders, fault codes,
//! valid raw ranges, scaling and rounding. Pure functions, table-tested.

use crate::config::{ByteOrder, DataType, RegisterDef};
use crate::model::{BadReason, Reading};

/// Reorders wire bytes (register words as received, each big-endian) into big-endian value bytes.
pub fn value_bytes(words: &[u16], order: ByteOrder) -> Vec<u8> {
    let mut wire: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    match order {
        ByteOrder::ABCD => {}
        ByteOrder::DCBA => wire.reverse(),
        ByteOrder::BADC => wire.chunks_exact_mut(2).for_each(|c| c.swap(0, 1)),
        ByteOrder::CDAB => {
            let mut out = Vec::with_capacity(wire.len());
            for c in wire.chunks_exact(2).rev() {
                out.extend_from_slice(c);
            }
            wire = out;
        }
    }
    wire
}

/// A raw value before scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Raw {
    /// Integer types (and bools as 0/1), exact.
    Int(i128),
    /// Floating-point types.
    Float(f64),
}

impl Raw {
    /// As a float for scaling.
    pub fn as_f64(self) -> f64 {
        match self {
            Raw::Int(i) => i as f64,
            Raw::Float(f) => f,
        }
    }
}

/// Decodes a register value of `dt` from `words` (exactly `dt.words()` of them).
pub fn decode_words(words: &[u16], dt: DataType, order: ByteOrder, bit: Option<u8>) -> Raw {
    let b = value_bytes(words, order);
    match dt {
        DataType::Bool => {
            let w = u16::from_be_bytes([b[0], b[1]]);
            Raw::Int(i128::from(
                w.checked_shr(u32::from(bit.unwrap_or(0))).unwrap_or(0) & 1,
            ))
        }
        DataType::U16 => Raw::Int(i128::from(u16::from_be_bytes([b[0], b[1]]))),
        DataType::I16 => Raw::Int(i128::from(i16::from_be_bytes([b[0], b[1]]))),
        DataType::U32 => Raw::Int(i128::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::I32 => Raw::Int(i128::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::F32 => Raw::Float(f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::U64 => Raw::Int(i128::from(u64::from_be_bytes(eight(&b)))),
        DataType::I64 => Raw::Int(i128::from(i64::from_be_bytes(eight(&b)))),
        DataType::F64 => Raw::Float(f64::from_be_bytes(eight(&b))),
    }
}

fn eight(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

/// Turns a raw value into a reading: device fault codes and the valid raw range first (both give
/// Bad), then span or linear scaling, then rounding.
pub fn to_reading(raw: Raw, def: &RegisterDef) -> Reading {
    if let Raw::Int(i) = raw {
        if def.fault_codes.iter().any(|&c| i128::from(c) == i) {
            return Reading::Bad(BadReason::DeviceFault {
                code: i64::try_from(i).unwrap_or(i64::MAX),
            });
        }
    }
    let x = raw.as_f64();
    if !x.is_finite() {
        return Reading::Bad(BadReason::Decode {
            detail: format!("non-finite value {x}"),
        });
    }
    if let Some([lo, hi]) = def.valid {
        if x < lo || x > hi {
            return Reading::Bad(BadReason::OutOfRange { raw: x });
        }
    }
    let mut v = if let Some(span) = &def.span {
        let [r0, r1] = span.raw;
        let [e0, e1] = span.eng;
        e0 + (x - r0) * (e1 - e0) / (r1 - r0)
    } else {
        x * def.scale.unwrap_or(1.0) + def.offset.unwrap_or(0.0)
    };
    // Without explicit decimals, a linear scale such as 0.1 implies its own resolution; rounding
    // to it removes binary floating-point noise (24.900000000000002 -> 24.9).
    let decimals = def.decimals.or_else(|| def.scale.map(scale_decimals));
    if let Some(d) = decimals {
        let m = 10f64.powi(i32::from(d));
        let r = (v * m).round() / m;
        // Rounding a huge value can overflow to infinity: keep the unrounded value then.
        if r.is_finite() {
            v = r;
        }
    }
    // A scale or span can push a finite raw value beyond f64 (or divide by a zero span).
    if !v.is_finite() {
        return Reading::Bad(BadReason::Decode {
            detail: format!("scaling raw value {x} gives {v}"),
        });
    }
    Reading::Good(v)
}

/// Decimal places a linear scale resolves (0.1 -> 1, 0.25 -> 2, 10 -> 0), at most 6.
fn scale_decimals(scale: f64) -> u8 {
    let mut d = 0u8;
    let mut x = scale.abs();
    while d < 6 && (x - x.round()).abs() > 1e-9 {
        x *= 10.0;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Span, Table};

    fn def() -> RegisterDef {
        RegisterDef {
            name: "x".into(),
            table: Table::Holding,
            address: 0,
            data_type: None,
            bit: None,
            order: ByteOrder::ABCD,
            kind: None,
            unit: None,
            scale: None,
            offset: None,
            span: None,
            valid: None,
            fault_codes: vec![],
            states: Default::default(),
            decimals: None,
            range: None,
        }
    }

    /// Encodes big-endian value bytes into wire words for `order` (the inverse of `value_bytes`).
    fn encode(be: &[u8], order: ByteOrder) -> Vec<u16> {
        let mut wire = be.to_vec();
        match order {
            ByteOrder::ABCD => {}
            ByteOrder::DCBA => wire.reverse(),
            ByteOrder::BADC => wire.chunks_exact_mut(2).for_each(|c| c.swap(0, 1)),
            ByteOrder::CDAB => {
                let mut out = Vec::new();
                for c in wire.chunks_exact(2).rev() {
                    out.extend_from_slice(c);
                }
                wire = out;
            }
        }
        wire.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn orders_32_bit_known_words() {
        // 0x11223344 laid out in each order, as installers see it in a register dump.
        let cases = [
            (ByteOrder::ABCD, [0x1122, 0x3344]),
            (ByteOrder::DCBA, [0x4433, 0x2211]),
            (ByteOrder::BADC, [0x2211, 0x4433]),
            (ByteOrder::CDAB, [0x3344, 0x1122]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode_words(&words, DataType::U32, order, None),
                Raw::Int(0x1122_3344),
                "{order:?}"
            );
        }
    }

    #[test]
    fn every_type_and_order_round_trips() {
        let orders = [
            ByteOrder::ABCD,
            ByteOrder::DCBA,
            ByteOrder::BADC,
            ByteOrder::CDAB,
        ];
        for order in orders {
            let cases: Vec<(DataType, Vec<u8>, Raw)> = vec![
                (
                    DataType::U16,
                    0xBEEFu16.to_be_bytes().to_vec(),
                    Raw::Int(0xBEEF),
                ),
                (
                    DataType::I16,
                    (-1234i16).to_be_bytes().to_vec(),
                    Raw::Int(-1234),
                ),
                (
                    DataType::U32,
                    4_000_000_000u32.to_be_bytes().to_vec(),
                    Raw::Int(4_000_000_000),
                ),
                (
                    DataType::I32,
                    (-70_000i32).to_be_bytes().to_vec(),
                    Raw::Int(-70_000),
                ),
                (
                    DataType::F32,
                    12.5f32.to_be_bytes().to_vec(),
                    Raw::Float(12.5),
                ),
                (
                    DataType::U64,
                    u64::MAX.to_be_bytes().to_vec(),
                    Raw::Int(i128::from(u64::MAX)),
                ),
                (
                    DataType::I64,
                    (-5_000_000_000i64).to_be_bytes().to_vec(),
                    Raw::Int(-5_000_000_000),
                ),
                (
                    DataType::F64,
                    (-0.125f64).to_be_bytes().to_vec(),
                    Raw::Float(-0.125),
                ),
            ];
            for (dt, be, want) in cases {
                let words = encode(&be, order);
                assert_eq!(words.len(), usize::from(dt.words()));
                assert_eq!(
                    decode_words(&words, dt, order, None),
                    want,
                    "{dt:?} {order:?}"
                );
            }
        }
    }

    #[test]
    fn bit_in_register() {
        assert_eq!(
            decode_words(&[0b1000], DataType::Bool, ByteOrder::ABCD, Some(3)),
            Raw::Int(1)
        );
        assert_eq!(
            decode_words(&[0b1000], DataType::Bool, ByteOrder::ABCD, Some(2)),
            Raw::Int(0)
        );
    }

    #[test]
    fn span_4_20_ma_and_loop_faults() {
        let mut d = def();
        d.span = Some(Span {
            raw: [4000.0, 20000.0],
            eng: [0.0, 100.0],
        });
        d.valid = Some([3600.0, 21000.0]);
        d.decimals = Some(1);
        assert_eq!(to_reading(Raw::Int(4000), &d), Reading::Good(0.0));
        assert_eq!(to_reading(Raw::Int(12000), &d), Reading::Good(50.0));
        assert_eq!(to_reading(Raw::Int(20000), &d), Reading::Good(100.0));
        // Open loop: below 3.6 mA is a fault, never a plausible 0 %LEL.
        assert_eq!(
            to_reading(Raw::Int(1000), &d),
            Reading::Bad(BadReason::OutOfRange { raw: 1000.0 })
        );
        assert_eq!(
            to_reading(Raw::Int(22000), &d),
            Reading::Bad(BadReason::OutOfRange { raw: 22000.0 })
        );
    }

    #[test]
    fn linear_scale_fault_code_and_nan() {
        let mut d = def();
        d.scale = Some(0.1);
        d.offset = Some(-10.0);
        d.fault_codes = vec![0xFFFF];
        assert_eq!(to_reading(Raw::Int(250), &d), Reading::Good(15.0));
        // No float noise from the 0.1 scale.
        assert_eq!(to_reading(Raw::Int(349), &d), Reading::Good(24.9));
        assert_eq!(scale_decimals(0.25), 2);
        assert_eq!(scale_decimals(10.0), 0);
        assert_eq!(
            to_reading(Raw::Int(0xFFFF), &d),
            Reading::Bad(BadReason::DeviceFault { code: 0xFFFF })
        );
        assert!(matches!(
            to_reading(Raw::Float(f64::NAN), &d),
            Reading::Bad(BadReason::Decode { .. })
        ));
    }
}
