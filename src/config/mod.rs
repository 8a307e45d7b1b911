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
pub mod devmap;
mod file;
pub mod modbus;
pub mod mqtt;
pub mod plan;
pub(crate) mod validate;

use std::path::{Path, PathBuf};

pub use crate::alerts::receivers::{Receiver, WebhookReceiver};
pub use crate::i18n::Language;
use crate::secret::INLINE_SECRET;
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
        message: parse_message(e, text),
    })
}

/// The parser's message with the line, column and key path of the error, never the text of
/// the line: it may hold a secret written inline (the toml crate's own message quotes it).
fn parse_message(mut e: toml::de::Error, text: &str) -> String {
    let at = e.span().map(|span| {
        let start = span.start.min(text.len());
        let before = text.get(..start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        format!("line {line}, column {column}: ")
    });
    // Without its input the error prints its message and the key path (`in `a.b``).
    e.set_input(None);
    let body = e
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    // Inside `[[sources]]`, `[[outputs]]` and `[[receivers]]` (tagged by `kind`) the parser
    // loses the key: name every inline secret's path from the untyped document.
    let mut paths = Vec::new();
    if body.contains(INLINE_SECRET) {
        if let Ok(doc) = text.parse::<toml::Table>() {
            inline_secrets(&doc, "", &mut paths);
        }
    }
    paths.retain(|p| !body.contains(&format!("`{p}`")));
    let paths = if paths.is_empty() {
        String::new()
    } else {
        format!(" (at `{}`)", paths.join("`, `"))
    };
    format!("{}{body}{paths}", at.unwrap_or_default())
}

/// Paths of secret-bearing keys whose value is not an `{ env }`/`{ file }` table.
fn inline_secrets(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    let in_sm4 = prefix.ends_with("sm4");
    for (k, v) in t {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let secret = matches!(k.as_str(), "password" | "token" | "secret" | "hmac_secret")
            || (in_sm4 && matches!(k.as_str(), "key" | "iv"));
        match v {
            toml::Value::Table(sub) => inline_secrets(sub, &path, out),
            _ if secret => out.push(path),
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(sub) = item {
                        inline_secrets(sub, &format!("{path}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Reads, parses and validates a configuration file. Warnings are returned with the result.
pub fn load(path: &Path) -> Result<(Resolved, Vec<Problem>), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let cfg = parse(&text, path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate(&cfg, base).map_err(|problems| LoadError::Invalid {
        path: path.to_owned(),
        problems,
    })
}
