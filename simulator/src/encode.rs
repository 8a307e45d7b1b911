//! Engineering value → raw value → register words: the exact inverse of the gateway's decoder.
//!
//! Steps: [`eng_to_raw`] inverts `span` or `scale`/`offset`; [`raw_to_words`] rounds to the
//! integer types (half away from zero) and clamps to the type's range (NaN → 0), or converts to
//! f32/f64, then lays the big-endian value bytes out in the point's [`WordOrder`]. Bools become
//! one bit (bit tables) or bit `bit` of a word (register tables).
//!
//! The raw path ([`encode_raw`]) skips scaling: it is how faults such as a broken 4–20 mA loop
//! (1000 µA, below `valid`) or a device fault code are injected.
//! [`words_to_raw`] and [`raw_to_eng`] are the decoder mirror, used for tests and assertions.

use crate::devmap::{Register, Table, ValueType, WordOrder};

/// A point's encoded contribution to its table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// One coil/discrete input.
    Bit(bool),
    /// `width()` consecutive registers. For a bool inside a register this is the word with only
    /// that bit possibly set (after ordering); merge with other bits by OR.
    Words(Vec<u16>),
}

/// Inverts the point's scaling: span, else `(eng - offset) / scale`, else identity.
pub fn eng_to_raw(reg: &Register, eng: f64) -> f64 {
    if let Some(span) = &reg.span {
        let ([r0, r1], [e0, e1]) = (span.raw, span.eng);
        r0 + (eng - e0) * (r1 - r0) / (e1 - e0)
    } else {
        (eng - reg.offset.unwrap_or(0.0)) / reg.scale.unwrap_or(1.0)
    }
}

/// Applies the point's scaling, as the gateway does (without rounding to `decimals`).
pub fn raw_to_eng(reg: &Register, raw: f64) -> f64 {
    if let Some(span) = &reg.span {
        let ([r0, r1], [e0, e1]) = (span.raw, span.eng);
        e0 + (raw - r0) * (e1 - e0) / (r1 - r0)
    } else {
        raw * reg.scale.unwrap_or(1.0) + reg.offset.unwrap_or(0.0)
    }
}

/// Encodes an engineering value for `reg`.
pub fn encode_eng(reg: &Register, eng: f64) -> Encoded {
    encode_raw(reg, eng_to_raw(reg, eng))
}

/// Encodes a raw value for `reg` (no scaling; rounding and clamping to the type still apply).
pub fn encode_raw(reg: &Register, raw: f64) -> Encoded {
    let on = raw != 0.0 && !raw.is_nan();
    match (reg.table, reg.value_type()) {
        (Table::Coil | Table::Discrete, _) => Encoded::Bit(on),
        (_, ValueType::Bool) => {
            let word = u16::from(on) << reg.bit.unwrap_or(0);
            Encoded::Words(to_words(&permute(word.to_be_bytes().to_vec(), reg.order)))
        }
        (_, ty) => Encoded::Words(raw_to_words(ty, reg.order, raw)),
    }
}

/// Raw value → `ty.words()` registers in `order`. Bools give 0 or 1 (bit 0).
pub fn raw_to_words(ty: ValueType, order: WordOrder, raw: f64) -> Vec<u16> {
    let int = |min: i128, max: i128| -> i128 {
        let r = raw.round();
        if r.is_nan() {
            0
        } else {
            (r as i128).clamp(min, max)
        }
    };
    let bytes: Vec<u8> = match ty {
        ValueType::Bool => u16::from(raw != 0.0 && !raw.is_nan())
            .to_be_bytes()
            .to_vec(),
        ValueType::U16 => (int(0, u16::MAX.into()) as u16).to_be_bytes().to_vec(),
        ValueType::I16 => (int(i16::MIN.into(), i16::MAX.into()) as i16)
            .to_be_bytes()
            .to_vec(),
        ValueType::U32 => (int(0, u32::MAX.into()) as u32).to_be_bytes().to_vec(),
        ValueType::I32 => (int(i32::MIN.into(), i32::MAX.into()) as i32)
            .to_be_bytes()
            .to_vec(),
        ValueType::U64 => (int(0, u64::MAX.into()) as u64).to_be_bytes().to_vec(),
        ValueType::I64 => (int(i64::MIN.into(), i64::MAX.into()) as i64)
            .to_be_bytes()
            .to_vec(),
        ValueType::F32 => (raw as f32).to_be_bytes().to_vec(),
        ValueType::F64 => raw.to_be_bytes().to_vec(),
    };
    to_words(&permute(bytes, order))
}

/// Registers in `order` → raw value (the gateway's decoding). `words` must hold `ty.words()`.
/// Bools read bit 0; use [`Register::bit`] and shift yourself for other bits.
pub fn words_to_raw(ty: ValueType, order: WordOrder, words: &[u16]) -> f64 {
    let wire: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let b = permute(wire, order);
    let arr = |n: usize| -> [u8; 8] {
        let mut a = [0u8; 8];
        a[8 - n..].copy_from_slice(&b[..n]);
        a
    };
    let u = |n| u64::from_be_bytes(arr(n));
    match ty {
        ValueType::Bool => (u(2) & 1) as f64,
        ValueType::U16 => u(2) as f64,
        ValueType::I16 => f64::from(u(2) as u16 as i16),
        ValueType::U32 => u(4) as f64,
        ValueType::I32 => f64::from(u(4) as u32 as i32),
        ValueType::U64 => u(8) as f64,
        ValueType::I64 => u(8) as i64 as f64,
        ValueType::F32 => f64::from(f32::from_bits(u(4) as u32)),
        ValueType::F64 => f64::from_bits(u(8)),
    }
}

/// Byte permutation between value bytes (big-endian) and wire bytes. Every order is an
/// involution, so the same function encodes and decodes.
fn permute(mut b: Vec<u8>, order: WordOrder) -> Vec<u8> {
    match order {
        WordOrder::ABCD => {}
        WordOrder::DCBA => b.reverse(),
        WordOrder::BADC => b.chunks_exact_mut(2).for_each(|c| c.swap(0, 1)),
        WordOrder::CDAB => b = b.chunks_exact(2).rev().flatten().copied().collect(),
    }
    b
}

fn to_words(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::devmap::DeviceMap;

    const ORDERS: [WordOrder; 4] = [
        WordOrder::ABCD,
        WordOrder::DCBA,
        WordOrder::BADC,
        WordOrder::CDAB,
    ];

    #[test]
    fn reference_vectors_32_bit() {
        let raw = f64::from(0x1122_3344_u32);
        for (order, want) in [
            (WordOrder::ABCD, [0x1122, 0x3344]),
            (WordOrder::DCBA, [0x4433, 0x2211]),
            (WordOrder::BADC, [0x2211, 0x4433]),
            (WordOrder::CDAB, [0x3344, 0x1122]),
        ] {
            assert_eq!(raw_to_words(ValueType::U32, order, raw), want, "{order:?}");
        }
    }

    #[test]
    fn reference_vectors_64_and_16_bit() {
        // 53 significant bits: exactly representable as f64.
        let raw = 0x1122_3344_5566_7700_u64 as f64;
        assert_eq!(raw as u64, 0x1122_3344_5566_7700);
        for (order, want) in [
            (WordOrder::ABCD, [0x1122, 0x3344, 0x5566, 0x7700]),
            (WordOrder::DCBA, [0x0077, 0x6655, 0x4433, 0x2211]),
            (WordOrder::BADC, [0x2211, 0x4433, 0x6655, 0x0077]),
            (WordOrder::CDAB, [0x7700, 0x5566, 0x3344, 0x1122]),
        ] {
            assert_eq!(raw_to_words(ValueType::U64, order, raw), want, "{order:?}");
        }
        assert_eq!(
            raw_to_words(ValueType::U16, WordOrder::ABCD, 4660.0),
            [0x1234]
        );
        assert_eq!(
            raw_to_words(ValueType::U16, WordOrder::DCBA, 4660.0),
            [0x3412]
        );
        assert_eq!(
            raw_to_words(ValueType::F32, WordOrder::ABCD, 1.0),
            [0x3F80, 0x0000]
        );
        assert_eq!(
            raw_to_words(ValueType::F32, WordOrder::CDAB, 1.0),
            [0x0000, 0x3F80]
        );
    }

    #[test]
    fn round_trips_every_type_and_order() {
        let cases: [(ValueType, &[f64]); 9] = [
            (ValueType::Bool, &[0.0, 1.0]),
            (ValueType::U16, &[0.0, 1.0, 4000.0, 65535.0]),
            (ValueType::I16, &[-32768.0, -1.0, 0.0, 250.0, 32767.0]),
            (ValueType::U32, &[0.0, 100_000.0, 4_294_967_295.0]),
            (ValueType::I32, &[-2_147_483_648.0, -7.0, 2_147_483_647.0]),
            (ValueType::U64, &[0.0, 1e15, 2f64.powi(63)]),
            (ValueType::I64, &[-(2f64.powi(63)), -3.0, 1e15]),
            (ValueType::F32, &[0.0, -1.5, 101.25, f64::from(f32::MAX)]),
            (ValueType::F64, &[0.0, -1e-300, 12_345.678_9, 1e300]),
        ];
        for (ty, values) in cases {
            for order in ORDERS {
                for &v in values {
                    let words = raw_to_words(ty, order, v);
                    assert_eq!(words.len(), usize::from(ty.words()));
                    let back = words_to_raw(ty, order, &words);
                    assert_eq!(back, v, "{ty:?} {order:?} {v}");
                }
            }
        }
    }

    #[test]
    fn rounds_and_clamps_to_the_type() {
        let w = |ty, v| words_to_raw(ty, WordOrder::ABCD, &raw_to_words(ty, WordOrder::ABCD, v));
        assert_eq!(w(ValueType::U16, 99_999.0), 65535.0);
        assert_eq!(w(ValueType::U16, -5.0), 0.0);
        assert_eq!(w(ValueType::I16, 40_000.0), 32767.0);
        assert_eq!(w(ValueType::I16, -2.5), -3.0);
        assert_eq!(w(ValueType::U32, 10.49), 10.0);
        assert_eq!(w(ValueType::U32, f64::NAN), 0.0);
        assert_eq!(w(ValueType::I64, 1e30), i64::MAX as f64);
    }

    fn reg(extra: &str) -> Register {
        let text = format!("id='m'\n[[registers]]\nname='p'\n{extra}\n");
        DeviceMap::from_toml_str(&text).unwrap().registers.remove(0)
    }

    #[test]
    fn scaling_is_inverted() {
        let gas = reg("table='input'\naddress=0\nspan={raw=[4000,20000],eng=[0,100]}");
        assert_eq!(eng_to_raw(&gas, 0.0), 4000.0);
        assert_eq!(eng_to_raw(&gas, 25.0), 8000.0);
        assert_eq!(encode_eng(&gas, 100.0), Encoded::Words(vec![20000]));
        let t = reg("table='holding'\naddress=0\ntype='i16'\nscale=0.1\noffset=-40");
        assert_eq!(encode_eng(&t, -12.3), Encoded::Words(vec![277]));
        assert!((raw_to_eng(&t, 277.0) - (-12.3)).abs() < 1e-9);
        for eng in [-40.0, 0.0, 21.7, 85.0] {
            assert!((raw_to_eng(&t, eng_to_raw(&t, eng)) - eng).abs() < 1e-9);
        }
    }

    #[test]
    fn raw_override_bypasses_scaling() {
        let gas = reg(
            "table='input'\naddress=0\nspan={raw=[4000,20000],eng=[0,100]}\nvalid=[3600,21000]",
        );
        assert_eq!(encode_raw(&gas, 1000.0), Encoded::Words(vec![1000]));
    }

    #[test]
    fn bools_encode_as_bits() {
        let coil = reg("table='coil'\naddress=3");
        assert_eq!(encode_eng(&coil, 1.0), Encoded::Bit(true));
        assert_eq!(encode_eng(&coil, 0.0), Encoded::Bit(false));
        let b = reg("table='holding'\naddress=0\ntype='bool'\nbit=3");
        assert_eq!(encode_eng(&b, 1.0), Encoded::Words(vec![0b1000]));
        assert_eq!(encode_eng(&b, 0.0), Encoded::Words(vec![0]));
        let swapped = reg("table='holding'\naddress=0\ntype='bool'\nbit=9\norder='BADC'");
        assert_eq!(encode_eng(&swapped, 1.0), Encoded::Words(vec![0x0002]));
    }
}
