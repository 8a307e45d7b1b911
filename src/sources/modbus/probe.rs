//! `hazgate probe`: the commissioning aid for the commonest installer mistakes (word order,
//! address base, scaling). It reads a register range from one device and decodes it in every
//! type, byte/word order and address base, marking the interpretations that match a value the
//! installer reads off the detector's display.
//!
//! Address bases: the installer types the address printed in the manual. With base 0 that is the
//! protocol address; with base 1 the protocol address is one lower. The probe therefore reads one
//! register before the range and three after it (so a 64-bit value starting at the last address
//! can be shown); if the device rejects that wider read with an exception, it reads exactly the
//! requested range and shows what fits.
//!
//! Pure parts ([`interpretations`], [`matches`], [`render`]) are unit-tested; [`run`] does the
//! I/O with the same links and timeouts as the poller.

use std::fmt::Write as _;

use crate::config::{ByteOrder, DataType, ModbusLink, ModbusTiming, Table};

use super::decode::{Raw, decode_words};
use super::link::{self, ReadOutcome};

/// What to read and what to look for.
#[derive(Clone, Debug)]
pub struct ProbeRequest {
    /// How to reach the device.
    pub link: ModbusLink,
    /// Request timeout etc.
    pub timing: ModbusTiming,
    /// Unit id.
    pub unit: u8,
    /// Table.
    pub table: Table,
    /// First address as printed in the manual.
    pub address: u16,
    /// Number of addresses.
    pub count: u16,
    /// The value on the detector's display.
    pub expect: Option<f64>,
    /// Absolute tolerance for `expect`; `None`: 0.5 % of it, at least 0.001.
    pub tolerance: Option<f64>,
    /// Scale factors tried on integer types (`1`, `0.1`, ...).
    pub scales: Vec<f64>,
}

/// One decoding of the registers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interpretation {
    /// Address as the installer would write it in the config.
    pub address: u16,
    /// Address base that makes `address` mean this register.
    pub base: u8,
    /// Type.
    pub data_type: DataType,
    /// Byte/word order.
    pub order: ByteOrder,
    /// Decoded raw value (before scaling).
    pub value: f64,
    /// True for integer types (scales are tried on them).
    pub integer: bool,
}

/// A match against the expected value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Match {
    /// The interpretation.
    pub interp: Interpretation,
    /// Scale that makes it match (1 for floats).
    pub scale: f64,
}

const TYPES: [DataType; 8] = [
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::F32,
    DataType::U64,
    DataType::I64,
    DataType::F64,
];

/// The name used in config files.
pub fn type_name(dt: DataType) -> &'static str {
    match dt {
        DataType::Bool => "bool",
        DataType::U16 => "u16",
        DataType::I16 => "i16",
        DataType::U32 => "u32",
        DataType::I32 => "i32",
        DataType::U64 => "u64",
        DataType::I64 => "i64",
        DataType::F32 => "f32",
        DataType::F64 => "f64",
    }
}

/// The name used in config files.
pub fn order_name(o: ByteOrder) -> &'static str {
    match o {
        ByteOrder::ABCD => "ABCD",
        ByteOrder::DCBA => "DCBA",
        ByteOrder::BADC => "BADC",
        ByteOrder::CDAB => "CDAB",
    }
}

/// Orders that give distinct results for `dt`: for one-word types ABCD = CDAB and DCBA = BADC.
fn orders(dt: DataType) -> &'static [ByteOrder] {
    if dt.words() == 1 {
        &[ByteOrder::ABCD, ByteOrder::BADC]
    } else {
        &[
            ByteOrder::ABCD,
            ByteOrder::CDAB,
            ByteOrder::BADC,
            ByteOrder::DCBA,
        ]
    }
}

/// Every interpretation of `words` (read from protocol address `first`) for the manual addresses
/// `address..address + count`, in both address bases.
pub fn interpretations(words: &[u16], first: u16, address: u16, count: u16) -> Vec<Interpretation> {
    let end = u32::from(first) + words.len() as u32; // exclusive
    let mut out = Vec::new();
    for m in u32::from(address)..u32::from(address) + u32::from(count) {
        for base in [0u8, 1] {
            let Some(proto) = m.checked_sub(u32::from(base)) else {
                continue;
            };
            if proto < u32::from(first) {
                continue;
            }
            for dt in TYPES {
                let n = u32::from(dt.words());
                if proto + n > end {
                    continue;
                }
                let off = (proto - u32::from(first)) as usize;
                let w = &words[off..off + n as usize];
                for &order in orders(dt) {
                    let raw = decode_words(w, dt, order, None);
                    out.push(Interpretation {
                        address: m as u16,
                        base,
                        data_type: dt,
                        order,
                        value: raw.as_f64(),
                        integer: matches!(raw, Raw::Int(_)),
                    });
                }
            }
        }
    }
    out
}

/// Tolerance implied by how a display value is written: half a unit of its last digit
/// (`"7.31"` → 0.005, `"12"` → 0.5).
pub fn display_tolerance(text: &str) -> f64 {
    let decimals = text
        .split_once('.')
        .map(|(_, f)| f.chars().take_while(char::is_ascii_digit).count())
        .unwrap_or(0);
    0.5 * 10f64.powi(-i32::try_from(decimals).unwrap_or(0))
}

/// The default tolerance for `expect`.
pub fn default_tolerance(expect: f64) -> f64 {
    (expect.abs() * 0.005).max(0.001)
}

/// Interpretations within `tolerance` of `expect`, closest first; integers are also tried with
/// each scale.
pub fn matches(
    interps: &[Interpretation],
    expect: f64,
    tolerance: f64,
    scales: &[f64],
) -> Vec<Match> {
    let mut out = Vec::new();
    for i in interps {
        if !i.value.is_finite() {
            continue;
        }
        let tried: &[f64] = if i.integer { scales } else { &[1.0] };
        if let Some(&scale) = tried
            .iter()
            .find(|&&s| (i.value * s - expect).abs() <= tolerance)
        {
            out.push(Match { interp: *i, scale });
        }
    }
    out.sort_by(|a, b| {
        let ea = (a.interp.value * a.scale - expect).abs();
        let eb = (b.interp.value * b.scale - expect).abs();
        ea.total_cmp(&eb)
    });
    out
}

fn fmt_value(v: f64, integer: bool) -> String {
    if integer {
        format!("{v:.0}")
    } else if v != 0.0 && (v.abs() >= 1e9 || v.abs() < 1e-4) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// The report: raw registers, every interpretation (matches marked), and a config suggestion per
/// match.
pub fn render(req: &ProbeRequest, first: u16, words: &[u16]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "unit {} {} protocol addresses {}..{} ({} read)",
        req.unit,
        req.table.as_str(),
        first,
        u32::from(first) + words.len() as u32 - 1,
        words.len()
    );
    if req.table.is_bits() {
        for (k, w) in words.iter().enumerate() {
            let p = u32::from(first) + k as u32;
            let _ = writeln!(
                s,
                "  protocol {p:>5}  {}  (manual address {p} with base 0, {} with base 1)",
                u8::from(*w != 0),
                p + 1
            );
        }
        return s;
    }
    let _ = writeln!(s, "  protocol   hex     u16     i16");
    for (k, w) in words.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {:>8}  {w:04X}  {w:>6}  {:>6}",
            u32::from(first) + k as u32,
            *w as i16
        );
    }
    let interps = interpretations(words, first, req.address, req.count);
    let tolerance = req
        .expect
        .map(|e| req.tolerance.unwrap_or_else(|| default_tolerance(e)));
    let found = match (req.expect, tolerance) {
        (Some(e), Some(t)) => matches(&interps, e, t, &req.scales),
        _ => Vec::new(),
    };
    let _ = writeln!(
        s,
        "interpretations (address as in the config, with its address_base):"
    );
    for i in &interps {
        let mark = found
            .iter()
            .find(|m| m.interp == *i)
            .map(|m| {
                if m.scale == 1.0 {
                    "  <== matches".to_owned()
                } else {
                    format!("  <== matches with scale {}", m.scale)
                }
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  address {:>5} base {}  {:<3} {}  {}{mark}",
            i.address,
            i.base,
            type_name(i.data_type),
            order_name(i.order),
            fmt_value(i.value, i.integer),
        );
    }
    if let (Some(e), Some(t)) = (req.expect, tolerance) {
        if found.is_empty() {
            let _ = writeln!(
                s,
                "no interpretation matches {e} ± {t}: check the unit id, table and address range, \
                 or the value may need a span (e.g. 4-20 mA) rather than a scale"
            );
        } else {
            let _ = writeln!(s, "{} match(es) for {e} ± {t}, closest first:", found.len());
            for m in &found {
                let scale = if m.scale == 1.0 {
                    String::new()
                } else {
                    format!(", scale = {}", m.scale)
                };
                let _ = writeln!(
                    s,
                    "  table = \"{}\", address = {}, type = \"{}\", order = \"{}\"{scale}  \
                     # device address_base = {}",
                    req.table.as_str(),
                    m.interp.address,
                    type_name(m.interp.data_type),
                    order_name(m.interp.order),
                    m.interp.base
                );
            }
        }
    }
    s
}

/// Connects, reads and renders. Errors are human-readable.
pub async fn run(req: &ProbeRequest) -> Result<String, String> {
    if req.count == 0 {
        return Err("--count must be at least 1".into());
    }
    let max = req.table.max_per_request();
    if req.count > max - 4 {
        return Err(format!(
            "--count must be at most {} for {} (one request)",
            max - 4,
            req.table.as_str()
        ));
    }
    let mut ctx = link::connect(&req.link, &req.timing, false).await?;
    use tokio_modbus::prelude::SlaveContext as _;
    ctx.set_slave(tokio_modbus::Slave(req.unit));
    // Wide read first (one before for base 1, three after for 64-bit values), then exact.
    let wide_first = req.address.saturating_sub(1);
    let wide_end = (u32::from(req.address) + u32::from(req.count) + 3).min(0x1_0000);
    let wide_count = u16::try_from(wide_end - u32::from(wide_first)).unwrap_or(max);
    let attempts = [(wide_first, wide_count), (req.address, req.count)];
    let mut last_err = String::new();
    for (i, &(first, count)) in attempts.iter().enumerate() {
        match link::read_range(&mut ctx, req.table, first, count, req.timing.timeout).await {
            ReadOutcome::Data(mut words) => {
                words.truncate(usize::from(count));
                let mut out = render(req, first, &words);
                if i > 0 {
                    out.insert_str(
                        0,
                        &format!(
                            "note: the wider read was refused ({last_err}); base-1 and values \
                             running past the range are not shown\n"
                        ),
                    );
                }
                return Ok(out);
            }
            ReadOutcome::Exception(code) => {
                last_err = crate::model::exception_text(u8::from(code));
            }
            ReadOutcome::Timeout => {
                return Err(format!(
                    "no answer from unit {} within {:?}",
                    req.unit, req.timing.timeout
                ));
            }
            ReadOutcome::LinkError(e) => return Err(e),
        }
    }
    Err(format!("the device refused the read: {last_err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_words(v: f32, order: ByteOrder) -> [u16; 2] {
        let b = v.to_be_bytes();
        let (x, y) = match order {
            ByteOrder::ABCD => ([b[0], b[1]], [b[2], b[3]]),
            ByteOrder::CDAB => ([b[2], b[3]], [b[0], b[1]]),
            ByteOrder::BADC => ([b[1], b[0]], [b[3], b[2]]),
            ByteOrder::DCBA => ([b[3], b[2]], [b[1], b[0]]),
        };
        [u16::from_be_bytes(x), u16::from_be_bytes(y)]
    }

    #[test]
    fn finds_order_and_base_of_a_float() {
        // Protocol 99..=104: the float sits at protocol 100 in CDAB order.
        // 12.34 has a non-zero low word (12.5 would also read as ABCD one register later).
        let fw = f32_words(12.34, ByteOrder::CDAB);
        let words = [7, fw[0], fw[1], 0, 0, 0];
        let interps = interpretations(&words, 99, 100, 2);
        let found = matches(&interps, 12.34, 0.001, &[1.0]);
        let got: Vec<(u16, u8, DataType, ByteOrder)> = found
            .iter()
            .map(|m| {
                (
                    m.interp.address,
                    m.interp.base,
                    m.interp.data_type,
                    m.interp.order,
                )
            })
            .collect();
        // Manual address 100 with base 0, or 101 with base 1: the same register.
        assert_eq!(
            got,
            vec![
                (100, 0, DataType::F32, ByteOrder::CDAB),
                (101, 1, DataType::F32, ByteOrder::CDAB),
            ]
        );
    }

    #[test]
    fn scaled_integers_match_with_their_scale() {
        let words = [125u16.swap_bytes(), 0];
        let interps = interpretations(&words, 0, 0, 1);
        let found = matches(&interps, 12.5, 0.001, &[1.0, 0.1, 0.01]);
        assert!(found.iter().any(|m| m.interp.data_type == DataType::U16
            && m.interp.order == ByteOrder::BADC
            && m.scale == 0.1));
        // u32/i32 DCBA of [0x7D00, 0] is 125 too: a genuine ambiguity the installer must see.
        assert!(
            found
                .iter()
                .all(|m| matches!(m.interp.order, ByteOrder::BADC | ByteOrder::DCBA))
        );
        assert!(
            found
                .iter()
                .any(|m| m.interp.data_type == DataType::U32 && m.interp.order == ByteOrder::DCBA)
        );
    }

    #[test]
    fn tolerance_follows_the_digits_on_the_display() {
        assert_eq!(display_tolerance("12"), 0.5);
        assert!((display_tolerance("7.31") - 0.005).abs() < 1e-12);
        assert!((display_tolerance("-0.5") - 0.05).abs() < 1e-12);
    }

    #[test]
    fn every_type_order_and_base_is_listed() {
        let words = [0u16; 6];
        let interps = interpretations(&words, 0, 1, 1);
        // Address 1: base 0 → protocol 1 (5 words left), base 1 → protocol 0 (6 words).
        // 16-bit: 2 types x 2 orders, 32-bit: 3 x 4, 64-bit: 3 x 4 → 28 per base.
        assert_eq!(interps.iter().filter(|i| i.base == 0).count(), 28);
        assert_eq!(interps.iter().filter(|i| i.base == 1).count(), 28);
        // Near the end, the 64-bit types do not fit.
        let interps = interpretations(&words, 0, 4, 1);
        assert!(
            interps
                .iter()
                .filter(|i| i.base == 0)
                .all(|i| i.data_type.words() <= 2)
        );
    }

    #[test]
    fn render_marks_matches_and_suggests_config() {
        let fw = f32_words(-3.25, ByteOrder::BADC);
        let req = ProbeRequest {
            link: ModbusLink::Tcp {
                address: "x:1".into(),
                connect_timeout: std::time::Duration::from_secs(1),
            },
            timing: ModbusTiming {
                timeout: std::time::Duration::from_secs(1),
                pause: std::time::Duration::ZERO,
                max_gap: 0,
                backoff_max: std::time::Duration::from_secs(1),
                drain: std::time::Duration::ZERO,
            },
            unit: 3,
            table: Table::Input,
            address: 1,
            count: 1,
            expect: Some(-3.25),
            tolerance: None,
            scales: vec![1.0],
        };
        let out = render(&req, 0, &[fw[0], fw[1], 0]);
        assert!(out.contains("address     0 base 0") || out.contains("address     1 base 1"));
        assert!(
            out.contains(
                "table = \"input\", address = 1, type = \"f32\", order = \"BADC\"  # device address_base = 1"
            ),
            "{out}"
        );
        assert!(out.contains("<== matches"), "{out}");
    }
}
