//! Includes: `include = ["conf.d/*.toml"]` at the top of the main file. Every included file is
//! read and type-checked on its own (so a parse error names its file, line and key), then merged
//! into one TOML document that deserializes into one [`Config`]:
//!
//! - arrays of tables (`[[devices]]`, `[[channels]]`, `[[rules]]`, `[[alarms.rate]]`, …) are
//!   appended, the main file first, then the included files in sorted order;
//! - a table that holds settings of its own (`[site]`, `[mqtt_broker]`, `[alarms.journal]`, …)
//!   may be defined in one file only: defined twice is an error naming both files; a table
//!   that only holds arrays of tables (`[alarms]` with `[[alarms.rate]]`) merges;
//! - an included file may not include again.
//!
//! Every element keeps its origin (file and index inside it), so a validation problem at
//! `channels[7].max_age` of the merged document is reported as
//! `conf.d/tankfarm.toml: channels[3].max_age`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::file::Config;
use crate::check::Problem;
use crate::secret::INLINE_SECRET;

/// A problem found while reading the files (before validation).
#[derive(Debug)]
pub(crate) enum ReadError {
    /// A file could not be read.
    Io(PathBuf, std::io::Error),
    /// A file is malformed, has an unknown or mistyped field, or cannot be merged.
    Parse(PathBuf, String),
}

/// The merged configuration and where each part came from.
#[derive(Debug)]
pub(crate) struct Assembled {
    /// The merged configuration.
    pub config: Config,
    /// Every file read, the main file first (paths as given / as joined to the main file's
    /// directory).
    pub files: Vec<PathBuf>,
    /// Warnings of the include step (a glob matching nothing).
    pub warnings: Vec<Problem>,
    origins: Origins,
    /// The merged document, to find the first of two duplicate ids.
    doc: toml::Table,
}

/// For every array of tables (dotted key), the (file, index in that file) of each element; for
/// every other key, the file that defined it.
#[derive(Debug, Default)]
struct Origins {
    arrays: BTreeMap<String, Vec<(usize, usize)>>,
    keys: BTreeMap<String, usize>,
}

/// Reads `path` and every file it includes, merged.
pub(crate) fn assemble(path: &Path) -> Result<Assembled, ReadError> {
    let text = read(path)?;
    let mut doc = syntax(&text, path)?;
    let includes = match doc.remove("include") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, v) in items.iter().enumerate() {
                match v.as_str() {
                    Some(s) => out.push(s.to_owned()),
                    None => {
                        return Err(ReadError::Parse(
                            path.to_owned(),
                            format!("include[{i}]: must be a string (a path or a glob)"),
                        ));
                    }
                }
            }
            out
        }
        Some(_) => {
            return Err(ReadError::Parse(
                path.to_owned(),
                "include: must be an array of paths or globs (`include = [\"conf.d/*.toml\"]`)"
                    .into(),
            ));
        }
    };
    let mut assembled = Assembled {
        config: empty_config(),
        files: vec![path.to_owned()],
        warnings: Vec::new(),
        origins: Origins::default(),
        doc: toml::Table::new(),
    };
    if includes.is_empty() {
        assembled.config = toml::from_str::<Config>(&text)
            .map_err(|e| ReadError::Parse(path.to_owned(), parse_message(e, &text)))?;
        return Ok(assembled);
    }
    // The main file on its own: every field's type, with line and column.
    type_check(&text, &doc, path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut merged = toml::Table::new();
    merge(
        &mut merged,
        doc,
        "",
        0,
        &mut assembled.origins,
        &assembled.files,
    )?;
    for (i, pattern) in includes.iter().enumerate() {
        let found = expand(base, pattern).map_err(|m| {
            ReadError::Parse(path.to_owned(), format!("include[{i}] `{pattern}`: {m}"))
        })?;
        if found.is_empty() {
            assembled.warnings.push(Problem {
                severity: crate::check::Severity::Warning,
                path: format!("include[{i}]"),
                message: format!("`{pattern}` matches no file"),
            });
        }
        for f in found {
            if assembled.files.contains(&f) {
                return Err(ReadError::Parse(
                    path.to_owned(),
                    format!("include[{i}]: `{}` is included twice", f.display()),
                ));
            }
            let text = read(&f)?;
            let doc = syntax(&text, &f)?;
            if doc.contains_key("include") {
                return Err(ReadError::Parse(
                    f,
                    "include: only the main file may include other files".into(),
                ));
            }
            assembled.files.push(f.clone());
            let n = assembled.files.len() - 1;
            // A table defined twice is named with both files before the part's own types.
            merge(
                &mut merged,
                doc.clone(),
                "",
                n,
                &mut assembled.origins,
                &assembled.files,
            )?;
            type_check(&text, &doc, &f)?;
        }
    }
    assembled.config = toml::Value::Table(merged.clone())
        .try_into::<Config>()
        .map_err(|e| ReadError::Parse(path.to_owned(), e.message().to_owned()))?;
    assembled.doc = merged;
    Ok(assembled)
}

fn read(path: &Path) -> Result<String, ReadError> {
    std::fs::read_to_string(path).map_err(|e| ReadError::Io(path.to_owned(), e))
}

fn syntax(text: &str, path: &Path) -> Result<toml::Table, ReadError> {
    text.parse::<toml::Table>()
        .map_err(|e| ReadError::Parse(path.to_owned(), parse_message(e, text)))
}

/// Deserializes one file on its own as a [`Config`] so that a mistyped or unknown field is
/// reported with its file, line and column. A file without `[site]` (an included part) gets a
/// placeholder `[site]` appended, which leaves every line number as it is.
fn type_check(text: &str, doc: &toml::Table, path: &Path) -> Result<(), ReadError> {
    let mut owned;
    let mut text = text;
    if !doc.contains_key("site") {
        owned = text.to_owned();
        owned.push_str("\n[site]\nid = \"included\"\n");
        text = &owned;
    }
    match toml::from_str::<Config>(text) {
        Ok(_) => Ok(()),
        Err(e) => Err(ReadError::Parse(path.to_owned(), parse_message(e, text))),
    }
}

fn empty_config() -> Config {
    toml::from_str("[site]\nid = \"x\"\n").expect("the smallest configuration parses")
}

/// Whether a table holds a setting of its own (a value that is neither a table nor an array of
/// tables): such a table is a singleton that one file defines.
fn has_settings(t: &toml::Table) -> bool {
    t.values().any(|v| match v {
        toml::Value::Table(_) => false,
        toml::Value::Array(a) => !a.iter().all(toml::Value::is_table) || a.is_empty(),
        _ => true,
    })
}

fn is_table_array(v: &toml::Value) -> bool {
    matches!(v, toml::Value::Array(a) if !a.is_empty() && a.iter().all(toml::Value::is_table))
}

fn merge(
    into: &mut toml::Table,
    from: toml::Table,
    prefix: &str,
    file: usize,
    origins: &mut Origins,
    files: &[PathBuf],
) -> Result<(), ReadError> {
    for (k, v) in from {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (into.get_mut(&k), v) {
            (None, v) => {
                if let toml::Value::Array(a) = &v {
                    if is_table_array(&v) {
                        origins
                            .arrays
                            .entry(key.clone())
                            .or_default()
                            .extend((0..a.len()).map(|i| (file, i)));
                    }
                }
                if let toml::Value::Table(t) = &v {
                    record_arrays(t, &key, file, origins);
                }
                origins.keys.insert(key, file);
                into.insert(k, v);
            }
            (Some(toml::Value::Array(have)), toml::Value::Array(add))
                if have.iter().all(toml::Value::is_table)
                    && add.iter().all(toml::Value::is_table)
                    && !(have.is_empty() && add.is_empty()) =>
            {
                origins
                    .arrays
                    .entry(key.clone())
                    .or_default()
                    .extend((0..add.len()).map(|i| (file, i)));
                have.extend(add);
            }
            (Some(toml::Value::Table(have)), toml::Value::Table(add))
                if !(has_settings(have) && has_settings(&add)) =>
            {
                merge(have, add, &key, file, origins, files)?;
            }
            (Some(_), _) => {
                let first = origins.keys.get(&key).copied().unwrap_or(0);
                return Err(ReadError::Parse(
                    files[file].clone(),
                    format!(
                        "`{key}` is already defined in {} (a table or setting may be defined \
                         in one file only; arrays of tables such as `[[devices]]` add up)",
                        files[first].display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Records the arrays of tables nested in a table that one file brought in whole.
fn record_arrays(t: &toml::Table, prefix: &str, file: usize, origins: &mut Origins) {
    for (k, v) in t {
        let key = format!("{prefix}.{k}");
        match v {
            toml::Value::Array(a) if is_table_array(v) => {
                origins
                    .arrays
                    .entry(key.clone())
                    .or_default()
                    .extend((0..a.len()).map(|i| (file, i)));
            }
            toml::Value::Table(sub) => record_arrays(sub, &key, file, origins),
            _ => {}
        }
        origins.keys.insert(key, file);
    }
}

/// The files a pattern names, relative to `base`, sorted. Wildcards (`*`, `?`) are allowed in
/// the last component only; a path without wildcards must exist.
fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = base.join(pattern);
    let name = full
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("names no file")?
        .to_owned();
    let dir = full.parent().unwrap_or(Path::new("."));
    if dir.to_string_lossy().contains(['*', '?', '[']) {
        return Err("wildcards are allowed in the file name only (`conf.d/*.toml`)".into());
    }
    if !name.contains(['*', '?']) {
        if !full.is_file() {
            return Err(format!("{}: no such file", full.display()));
        }
        return Ok(vec![full]);
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // A directory that does not exist matches nothing, like a glob in an empty one.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: cannot read: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: cannot read: {e}", dir.display()))?;
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        // Hidden files (editor backups, `.#x.toml`) are never included by a glob.
        if n.starts_with('.') || !glob_match(&name, n) {
            continue;
        }
        if entry.path().is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// `*` matches any run of characters, `?` one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

impl Assembled {
    /// Whether the configuration came from more than one file.
    pub fn split(&self) -> bool {
        self.files.len() > 1
    }

    /// The name of file `i` as shown in a problem path: relative to the main file's directory.
    fn shown(&self, i: usize) -> String {
        let base = self.files[0].parent().unwrap_or(Path::new(""));
        let f = &self.files[i];
        f.strip_prefix(base).unwrap_or(f).display().to_string()
    }

    /// The file and the path inside it of a path of the merged document.
    fn locate(&self, path: &str) -> Option<(usize, String)> {
        // The longest array key that the path starts with, followed by `[N]`.
        let mut best: Option<(usize, String)> = None;
        let mut best_len = 0;
        for (key, items) in &self.origins.arrays {
            let Some(rest) = path.strip_prefix(key.as_str()) else {
                continue;
            };
            let Some(rest) = rest.strip_prefix('[') else {
                continue;
            };
            let Some((num, tail)) = rest.split_once(']') else {
                continue;
            };
            let Ok(i) = num.parse::<usize>() else {
                continue;
            };
            if key.len() > best_len {
                if let Some(&(file, local)) = items.get(i) {
                    best = Some((file, format!("{key}[{local}]{tail}")));
                    best_len = key.len();
                }
            }
        }
        if best.is_some() {
            return best;
        }
        // Otherwise the file that defined the longest key prefix.
        let mut cut = path;
        loop {
            if let Some(&file) = self.origins.keys.get(cut) {
                return Some((file, path.to_owned()));
            }
            match cut.rfind(['.', '[']) {
                Some(i) => cut = &cut[..i],
                None => return None,
            }
        }
    }

    /// A path of the merged document as `file: path inside it` (the main file's paths unchanged).
    pub fn place(&self, path: &str) -> String {
        match self.locate(path) {
            Some((file, local)) if file != 0 => format!("{}: {local}", self.shown(file)),
            Some((_, local)) => local,
            None => path.to_owned(),
        }
    }

    /// Rewrites validation problems to name the file and the path inside it; a duplicate id
    /// also names where the id was first defined.
    pub fn locate_problems(&self, problems: Vec<Problem>) -> Vec<Problem> {
        if !self.split() {
            return problems;
        }
        problems
            .into_iter()
            .map(|mut p| {
                if p.message.starts_with("duplicate ") {
                    if let Some(first) = self.first_with_same_id(&p.path) {
                        p.message = format!("{} (first defined at {first})", p.message);
                    }
                }
                p.path = self.place(&p.path);
                p
            })
            .collect()
    }

    /// For a path `key[i].id`, the placed path of the first element of `key` with that id.
    fn first_with_same_id(&self, path: &str) -> Option<String> {
        let head = path.strip_suffix(".id")?;
        let (key, num) = head.strip_suffix(']')?.rsplit_once('[')?;
        let i: usize = num.parse().ok()?;
        let mut t = &self.doc;
        let parts: Vec<&str> = key.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            t = t.get(*part)?.as_table()?;
        }
        let items = t.get(*parts.last()?)?.as_array()?;
        let id = items.get(i)?.get("id")?;
        let j = items.iter().position(|x| x.get("id") == Some(id))?;
        (j < i).then(|| self.place(&format!("{key}[{j}].id")))
    }
}

/// The parser's message with the line, column and key path of the error, never the text of
/// the line: it may hold a secret written inline (the toml crate's own message quotes it).
pub(crate) fn parse_message(mut e: toml::de::Error, text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_names() {
        assert!(glob_match("*.toml", "tankfarm.toml"));
        assert!(glob_match("*.toml", ".toml"));
        assert!(!glob_match("*.toml", "tankfarm.toml.bak"));
        assert!(glob_match("a?c*.toml", "abc-1.toml"));
        assert!(!glob_match("a?c*.toml", "ac.toml"));
        assert!(glob_match("*", "x"));
    }
}
