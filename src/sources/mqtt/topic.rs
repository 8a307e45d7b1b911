//! MQTT topic filters with `{name}` captures and channel-id templates: parsed once from the
//! configuration, matched against every message. Pure: no I/O.

use std::collections::HashSet;

use crate::model::check_id;

/// One level of a topic filter.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `{name}`: one level, captured.
    Capture(String),
    /// `+`.
    Plus,
    /// `#` (last level only).
    Hash,
}

/// A topic filter with optional `{name}` captures.
#[derive(Clone, Debug)]
pub struct TopicPattern {
    levels: Vec<Level>,
}

impl TopicPattern {
    /// Parses `site/{site}/gas/+/#`.
    pub fn parse(filter: &str) -> Result<Self, String> {
        if filter.is_empty() {
            return Err("must not be empty".into());
        }
        let parts: Vec<&str> = filter.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut names = HashSet::new();
        for (i, p) in parts.iter().enumerate() {
            let level = if *p == "#" {
                if i + 1 != parts.len() {
                    return Err(format!("`{filter}`: `#` must be the last level"));
                }
                Level::Hash
            } else if *p == "+" {
                Level::Plus
            } else if let Some(name) = p.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "`{filter}`: capture `{p}` must be `{{name}}` with letters, digits or `_`"
                    ));
                }
                if name == "key" {
                    return Err(format!(
                        "`{filter}`: `{{key}}` is reserved for object members and record keys"
                    ));
                }
                if !names.insert(name.to_owned()) {
                    return Err(format!("`{filter}`: capture `{p}` appears twice"));
                }
                Level::Capture(name.to_owned())
            } else if p.contains(['+', '#', '{', '}']) {
                return Err(format!(
                    "`{filter}`: level `{p}` mixes text with a wildcard or capture; a wildcard or capture must be a whole level"
                ));
            } else {
                Level::Literal((*p).to_owned())
            };
            levels.push(level);
        }
        Ok(Self { levels })
    }

    /// Names of the captures, in order.
    pub fn captures(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|l| match l {
            Level::Capture(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// The MQTT filter to subscribe to (captures become `+`).
    pub fn mqtt_filter(&self) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Capture(_) | Level::Plus => "+",
                Level::Hash => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Matches `topic`; returns the captured levels in capture order.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Vec<&'t str>> {
        // Wildcards at the first level never match `$SYS/...` (MQTT 4.7.2).
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Literal(_))) {
            return None;
        }
        let mut caps = Vec::new();
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Hash => return Some(caps),
                _ => {
                    let part = parts.next()?;
                    match level {
                        Level::Literal(s) if s != part => return None,
                        Level::Capture(_) => caps.push(part),
                        _ => {}
                    }
                }
            }
        }
        if parts.next().is_some() {
            None
        } else {
            Some(caps)
        }
    }
}

#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    /// Index into the capture list; `usize::MAX` is `{key}`.
    Var(usize),
}

/// A channel-id template such as `{site}.{device}.lel`.
#[derive(Clone, Debug)]
pub struct Template {
    pieces: Vec<Piece>,
    uses_key: bool,
}

const KEY: usize = usize::MAX;

impl Template {
    /// Parses `text`; `names` are the captures in order, plus `key` when allowed.
    pub fn parse(text: &str, names: &[&str]) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut uses_key = false;
        let mut probe = String::new();
        while let Some(start) = rest.find('{') {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
                probe.push_str(&rest[..start]);
            }
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| format!("`{text}`: unclosed `{{`"))?
                + start;
            let name = &rest[start + 1..end];
            let idx = names.iter().position(|n| *n == name).ok_or_else(|| {
                format!(
                    "`{text}`: `{{{name}}}` is not a capture of the filter{}",
                    if name == "key" {
                        " (`{key}` needs `object` or `records`)"
                    } else {
                        ""
                    }
                )
            })?;
            if name == "key" {
                uses_key = true;
                pieces.push(Piece::Var(KEY));
            } else {
                pieces.push(Piece::Var(idx));
            }
            probe.push('x');
            rest = &rest[end + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{text}`: stray `}}`"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
            probe.push_str(rest);
        }
        check_id(&probe, true)
            .map_err(|e| format!("`{text}` does not make a valid channel id: {e}"))?;
        Ok(Self { pieces, uses_key })
    }

    /// Whether the template uses `{name}` (only `key` is asked).
    pub fn uses(&self, name: &str) -> bool {
        name == "key" && self.uses_key
    }

    /// Renders with captured levels and an optional key; both are lowercased.
    pub fn render(&self, caps: &[&str], key: Option<&str>) -> String {
        fn lower(s: &mut String, part: &str) {
            if part.is_ascii() {
                // The common case, without a string per level.
                s.extend(part.chars().map(|c| c.to_ascii_lowercase()));
            } else {
                s.push_str(&part.to_lowercase());
            }
        }
        let mut s = String::with_capacity(64);
        for p in &self.pieces {
            match p {
                Piece::Text(t) => s.push_str(t),
                Piece::Var(KEY) => lower(&mut s, key.unwrap_or_default()),
                Piece::Var(i) => lower(&mut s, caps.get(*i).copied().unwrap_or_default()),
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_levels_are_lowercased_like_str_to_lowercase() {
        let t =
            Template::parse("{site}.{device}.{key}", &["site", "device", "key"]).expect("template");
        assert_eq!(
            t.render(&["Site-A", "GT_01"], Some("Lel")),
            "site-a.gt_01.lel"
        );
        // Outside ASCII the full Unicode mapping applies (final sigma included).
        assert_eq!(
            t.render(&["ΟΔΟΣ", "Ä"], Some("Key")),
            format!("{}.{}.key", "ΟΔΟΣ".to_lowercase(), "Ä".to_lowercase())
        );
    }
}
