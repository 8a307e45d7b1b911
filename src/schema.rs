//! JSON Schema pieces for configuration values that a custom parser reads rather than a plain
//! serde type: durations (humantime text). The schema of the whole file is
//! [`crate::config::json_schema`]; types with a hand-written `Deserialize` describe themselves
//! next to their parser (`impl JsonSchema` beside `impl Deserialize`), so the two are read
//! together.
//!
//! A leaf module: it imports nothing from the crate, so any configuration type may name it.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// The units `humantime::parse_duration` (behind every `humantime_serde` field) accepts.
const UNITS: &str = "nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|\
                     minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|\
                     wk|w|months|month|M|years|year|yrs|yr|y";

/// The pattern of a humantime duration: one or more `<number><unit>` terms, spaces allowed
/// between and inside terms (`"2s"`, `"1m 30s"`, `"1h30m"`, `"1.5h"`); a bare number is refused
/// (the parser asks for a unit).
pub fn duration_pattern() -> String {
    format!(r"^\s*([0-9]+(\.[0-9]+)?\s*({UNITS})\s*)+$")
}

/// Schema stand-in for a `Duration` field read with `humantime_serde`:
/// `#[schemars(with = "crate::schema::HumanDuration")]` (or `Option<…>`).
#[derive(Debug)]
pub struct HumanDuration;

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": duration_pattern(),
            "description": "A duration: a number and a unit, several terms allowed \
                            (\"500ms\", \"2s\", \"1m 30s\", \"8h\", \"90d\").",
            "examples": ["2s", "1m 30s", "500ms"]
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_duration_pattern_names_exactly_the_units_humantime_parses() {
        // Every unit of the pattern parses, and a unit that humantime refuses is not in it.
        for unit in super::UNITS.split('|') {
            let text = format!("3{unit}");
            assert!(
                humantime::parse_duration(&text).is_ok(),
                "`{text}` is in the pattern but humantime refuses it"
            );
        }
        assert!(humantime::parse_duration("3sec").is_ok());
        assert!(humantime::parse_duration("3").is_err());
        assert!(humantime::parse_duration("3 fortnights").is_err());
    }
}
