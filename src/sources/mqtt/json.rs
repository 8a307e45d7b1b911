//! A JSON tree that borrows from the payload: what the mapper reads a message into.
//!
//! `serde_json::Value` owns every key and string (a `String` each, plus a map node per member):
//! about a dozen allocations for a 100-byte sensor message. This tree borrows keys and strings
//! without escapes from the payload and keeps an object's members in one vector, so the same
//! message costs one or two allocations. It is parsed by serde_json itself (same grammar, same
//! error texts, same nesting limit), and it answers exactly as `Value` would:
//! - a duplicate member name: the last one counts ([`Json::get`], [`Json::members`]);
//! - an object's members are visited in key order (`Value`'s map is sorted);
//! - numbers are `serde_json::Number` (a number too large for `f64` is refused by the parser).
//!
//! Invariant: `Json::parse(b)` agrees with `serde_json::from_slice::<Value>(b)`, error or tree
//! (`to_value`); `tests/fuzz_inputs.rs` checks it on generated payloads.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// One JSON value, borrowing from the text it was parsed from where it can.
#[derive(Clone, Debug, PartialEq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string (borrowed unless it had escapes).
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object's members in text order, duplicates kept (see [`Json::get`]).
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses a payload (any JSON value, surrounding whitespace allowed).
    pub fn parse(text: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(text)
    }

    /// The member `key` of an object (the last one when repeated, as `Value` keeps it).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(m) => m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// An object's members as `Value` would list them: in key order, a repeated name once
    /// (with its last value). `None` for anything else.
    pub fn members(&self) -> Option<Vec<(&str, &Json<'a>)>> {
        let Json::Object(m) = self else {
            return None;
        };
        // Last first, then a stable sort: of a repeated name the first kept is the last written.
        let mut out: Vec<(&str, &Json<'a>)> =
            m.iter().rev().map(|(k, v)| (k.as_ref(), v)).collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        Some(out)
    }

    /// Whether this is an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }

    /// The number as an `i64`, when it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The number as a `u64`, when it is a non-negative integer that fits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// The same tree as a `serde_json::Value` (for messages and tests; allocates).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.clone().into_owned()),
            Json::Array(a) => Value::Array(a.iter().map(Json::to_value).collect()),
            Json::Object(m) => {
                let mut map = serde_json::Map::new();
                for (k, v) in m {
                    map.insert(k.clone().into_owned(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }
}

/// Compact JSON text, as `Value` prints it.
impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only error messages print a tree: one path, through `Value`'s own printer.
        self.to_value().fmt(f)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        // As `Value` does: a float JSON cannot hold is null.
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Json::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Json::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Room for a typical message's members at the first one: one allocation per object,
        // and none for `{}` (a payload of empty objects costs no more than with `Value`).
        let mut out = Vec::new();
        while let Some(Key(k)) = map.next_key()? {
            let v = map.next_value()?;
            if out.capacity() == 0 {
                out.reserve_exact(8);
            }
            out.push((k, v));
        }
        Ok(Json::Object(out))
    }
}

/// A member name, borrowed when it has no escapes (serde's `Cow<str>` would always copy).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) -> (Result<Value, String>, Result<Value, String>) {
        (
            serde_json::from_str::<Value>(text).map_err(|e| e.to_string()),
            Json::parse(text.as_bytes())
                .map(|j| j.to_value())
                .map_err(|e| e.to_string()),
        )
    }

    #[test]
    fn agrees_with_value_on_trees_and_errors() {
        for text in [
            r#"{"level":12.345,"unit":"%","status":"ok","sn":"TL000123"}"#,
            r#" {"a":{"b":[1,-2,3.5e3,"x\"y",null,true]},"a":7} "#,
            r#"[{"id":"LEL","v":5},{"v":1}]"#,
            "18446744073709551615",
            "-9223372036854775808",
            "1e400",
            "{not json",
            "",
            "[1,2",
            r#"{"a":1,}"#,
            "\"\\ud800\"",
            "{\"k\\n\":1}",
        ] {
            let (want, got) = both(text);
            assert_eq!(got, want, "{text}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let (want, got) = both(&deep);
        assert!(want.is_err());
        assert_eq!(got, want, "the same nesting limit");
    }

    #[test]
    fn keys_and_plain_strings_borrow_escaped_ones_copy() {
        let j = Json::parse(br#"{"level":"ok","e\n":"a\tb"}"#).expect("parses");
        let Json::Object(m) = &j else {
            panic!("object")
        };
        assert!(matches!(m[0].0, Cow::Borrowed("level")));
        assert!(matches!(m[0].1, Json::String(Cow::Borrowed("ok"))));
        assert!(matches!(m[1].0, Cow::Owned(_)));
        assert!(matches!(m[1].1, Json::String(Cow::Owned(_))));
    }

    #[test]
    fn repeated_names_answer_like_value() {
        let j = Json::parse(br#"{"b":1,"a":2,"b":3,"c":{"x":0}}"#).expect("parses");
        assert_eq!(j.get("b"), Some(&Json::Number(3.into())));
        let names: Vec<(&str, String)> = j
            .members()
            .expect("object")
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a", "2".to_owned()),
                ("b", "3".to_owned()),
                ("c", r#"{"x":0}"#.to_owned())
            ]
        );
        let v: Value = serde_json::from_slice(br#"{"b":1,"a":2,"b":3,"c":{"x":0}}"#).expect("v");
        let want: Vec<&str> = v
            .as_object()
            .expect("o")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(want, vec!["a", "b", "c"]);
    }
}
