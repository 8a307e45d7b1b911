//! Secrets: a [`SecretRef`] in the configuration names where a secret is (an environment
//! variable or a file, never inline); [`Secret`] holds the value and never prints it.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::check::Problems;

/// The message that refuses a secret written inline (it never quotes the value).
pub(crate) const INLINE_SECRET: &str = "secrets are never written inline";

/// Where a secret comes from; exactly one of `env` or `file`. An inline string is rejected
/// without echoing it.
#[derive(Clone, Debug)]
pub struct SecretRef {
    /// Environment variable holding the secret.
    pub env: Option<String>,
    /// File holding the secret (trailing newline trimmed).
    pub file: Option<PathBuf>,
}

/// What the parser reads: a table with `env` or `file` (exactly one, as `check-config`
/// requires); never a string or any other inline value.
impl schemars::JsonSchema for SecretRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretRef".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A secret's place, never the secret itself: { env = \"VAR\" } or { file = \"/path\" } (trailing line break trimmed).",
            "type": "object",
            "properties": {
                "env": { "type": "string", "description": "Environment variable holding the secret." },
                "file": { "type": "string", "description": "File holding the secret." }
            },
            "additionalProperties": false,
            "minProperties": 1,
            "maxProperties": 1
        })
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            env: Option<String>,
            file: Option<PathBuf>,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{ env = \"VAR\" } or { file = \"/path\" }")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(inline())
            }
            // Every other inline value is refused the same way: serde's default message would
            // quote it (`invalid type: integer `8675309``).
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(inline())
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(inline())
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretRef, E> {
                Err(inline())
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretRef, E> {
                Err(inline())
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<SecretRef, E> {
                Err(inline())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<SecretRef, A::Error> {
                Err(inline())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SecretRef, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SecretRef {
                    env: t.env,
                    file: t.file,
                })
            }
        }
        fn inline<E: serde::de::Error>() -> E {
            E::custom(format_args!(
                "{INLINE_SECRET}: use {{ env = \"VAR\" }} or {{ file = \"/path\" }}"
            ))
        }
        d.deserialize_any(V)
    }
}

impl SecretRef {
    /// Reads the secret now.
    pub fn resolve(&self) -> Result<Secret, String> {
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map(Secret)
                .map_err(|_| format!("environment variable `{var}` is not set")),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| format!("cannot read `{}`: {e}", path.display())),
            _ => Err("give exactly one of `env` or `file`".into()),
        }
    }
}

/// A resolved secret; its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for building a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl SecretRef {
    /// Reads the secret now; a failure is an error at `path` in `p` (so every unreadable
    /// secret of a configuration is reported together) and gives `None`.
    pub fn resolve_at(&self, path: &str, p: &mut Problems) -> Option<Secret> {
        self.resolve().map_err(|e| p.err(path, e)).ok()
    }
}
