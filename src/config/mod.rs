//! Configuration: serde structs read from TOML (unknown fields are errors), then one validation
//! pass ([`validate`]) that reports every problem with its path and produces a [`Resolved`] view
//! that the rest of the gateway consumes.
//!
//! Invariants:
//! - Secrets never appear inline: a [`SecretRef`] names an environment variable or a file, and
//!   [`Secret`] never prints its value.
//! - Everything downstream reads [`Resolved`], never the raw structs, so defaults are applied in
//!   exactly one place.

pub mod alarms;
mod alerts_site;
pub mod channel_sets;
pub mod devmap;
mod file;
mod include;
pub mod modbus;
pub mod mqtt;
pub mod plan;
pub(crate) mod validate;

use std::path::{Path, PathBuf};

pub use crate::alerts::receivers::{Receiver, WebhookReceiver};
pub use crate::i18n::Language;
pub use crate::secret::{Secret, SecretRef};
pub use alarms::{Alarms, LimitPriorities, LimitRule, RuleDefaults};
pub use devmap::{ByteOrder, DataType, DeviceMap, RegisterDef, Span, Table};
pub use file::*;
pub use modbus::ModbusTcpSource;
pub use modbus::{ModbusLink, ModbusRtuSource, ModbusTiming, Parity, SerialLine};
pub use validate::{
    Problem, Resolved, ResolvedChannel, ResolvedDevice, ResolvedModbus, ResolvedPoint,
    ResolvedSource, Severity, validate,
};

/// An error reading or checking a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown or mistyped field.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// Validation found problems.
    #[error("{path}: {} problem(s)", problems.len())]
    Invalid {
        /// File.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// Parses TOML text. `base` resolves relative `file` references.
pub fn parse(text: &str, path: &Path) -> Result<Config, LoadError> {
    toml::from_str(text).map_err(|e| LoadError::Parse {
        path: path.to_owned(),
        message: include::parse_message(e, text),
    })
}

/// Reads, parses and validates a configuration file and the files it includes (see
/// [`include`]). Warnings are returned with the result.
pub fn load(path: &Path) -> Result<(Resolved, Vec<Problem>), LoadError> {
    load_files(path).map(|(r, w, _)| (r, w))
}

/// Like [`load`], also returning every file read (the main file first).
pub fn load_files(path: &Path) -> Result<(Resolved, Vec<Problem>, Vec<PathBuf>), LoadError> {
    let assembled = include::assemble(path).map_err(|e| match e {
        include::ReadError::Io(path, source) => LoadError::Io { path, source },
        include::ReadError::Parse(path, message) => LoadError::Parse { path, message },
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    match validate(&assembled.config, base) {
        Ok((resolved, warnings)) => {
            let mut all = assembled.warnings.clone();
            all.extend(assembled.locate_problems(warnings));
            Ok((resolved, all, assembled.files))
        }
        Err(problems) => {
            let mut all = assembled.warnings.clone();
            all.extend(assembled.locate_problems(problems));
            Err(LoadError::Invalid {
                path: path.to_owned(),
                problems: all,
            })
        }
    }
}

/// The JSON Schema of the configuration file (`hazgate config-schema`), derived from the serde
/// types above so it cannot drift from what the parser accepts. It describes the main file;
/// [`json_schema_of_included`] describes a file it includes. Draft-07, the newest draft that
/// TOML editors (Taplo, "Even Better TOML") read.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Config>();
    let mut schema = serde_json::Value::from(schema);
    enums_of_constants(&mut schema);
    if let Some(o) = schema.as_object_mut() {
        o.insert("title".into(), "hazgate configuration".into());
    }
    schema
}

/// Rewrites a choice of documented words (schemars writes a unit-variant enum with doc comments
/// as a `oneOf` of `{ const, description }`) as one `enum`, with the descriptions where Taplo
/// shows them for each value (`x-taplo.docs.enumValues`): editors then complete the words, and a
/// wrong one is reported with the allowed values instead of "not valid under any of the
/// schemas". Accepts exactly the same values.
fn enums_of_constants(node: &mut serde_json::Value) {
    use serde_json::Value;
    match node {
        Value::Object(o) => {
            let words = o
                .get("oneOf")
                .and_then(Value::as_array)
                .and_then(|branches| {
                    branches
                        .iter()
                        .map(|b| {
                            let b = b.as_object()?;
                            let only_word = b
                                .keys()
                                .all(|k| ["const", "type", "description"].contains(&k.as_str()));
                            let word = b.get("const").filter(|c| c.is_string())?;
                            only_word.then(|| {
                                (
                                    word.clone(),
                                    b.get("description").cloned().unwrap_or(Value::Null),
                                )
                            })
                        })
                        .collect::<Option<Vec<_>>>()
                });
            if let Some(words) = words.filter(|w| !w.is_empty()) {
                o.remove("oneOf");
                let (values, docs): (Vec<Value>, Vec<Value>) = words.into_iter().unzip();
                o.insert("type".into(), "string".into());
                o.insert("enum".into(), values.into());
                o.insert(
                    "x-taplo".into(),
                    serde_json::json!({ "docs": { "enumValues": docs } }),
                );
            }
            o.values_mut().for_each(enums_of_constants);
        }
        Value::Array(items) => items.iter_mut().for_each(enums_of_constants),
        _ => {}
    }
}

/// The JSON Schema of a file named by `include` (`hazgate config-schema --included`): the same
/// sections as the main file, as the loader type-checks it, except that `[site]` may be left to
/// the main file and `include` is refused (an included file does not include again). Whether
/// the parts fit together (a table defined in two files, duplicate ids) is for `check-config`.
pub fn json_schema_of_included() -> serde_json::Value {
    let mut schema = json_schema();
    if let Some(o) = schema.as_object_mut() {
        o.insert(
            "title".into(),
            "hazgate configuration: a file named by include".into(),
        );
        if let Some(props) = o.get_mut("properties").and_then(|p| p.as_object_mut()) {
            props.remove("include");
        }
        if let Some(req) = o.get_mut("required").and_then(|r| r.as_array_mut()) {
            req.retain(|k| k != "site");
            if req.is_empty() {
                o.remove("required");
            }
        }
    }
    schema
}
