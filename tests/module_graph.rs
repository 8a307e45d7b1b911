//! The library's files import each other without a cycle: a file-level import graph is built
//! from `src/**/*.rs` (paths through `crate::`, `super::`, `self::` and a file's own child
//! modules, in `use` items and inline paths alike; comments are left out), and every strongly
//! connected component of more than one file is reported with the names that tie it.
//!
//! Run it alone: `cargo test --test module_graph`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file's module path (`src/config/validate.rs` → `["config", "validate"]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut segs: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = segs.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        segs.push(stem.to_owned());
    }
    segs
}

/// The text without comments (doc links name modules without importing them) and without
/// string and character literals.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && (b[i..].starts_with(b"r\"") || b[i..].starts_with(b"r#")) {
            let mut j = i + 1;
            let mut hashes = 0;
            while j < b.len() && b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            if j < b.len() && b[j] == b'"' {
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                j += 1;
                while j < b.len() && !b[j..].starts_with(&close) {
                    j += 1;
                }
                i = (j + close.len()).min(b.len());
                out.push_str("\"\"");
            } else {
                out.push('r');
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\''
            && i + 2 < b.len()
            && (b[i + 2] == b'\'' || (b[i + 1] == b'\\' && i + 3 < b.len()))
        {
            // A character literal ('a', '\n', '\''); a lifetime ('a) has no closing quote.
            let mut j = i + 1;
            if b[j] == b'\\' {
                j += 1;
            }
            j += 1;
            while j < b.len() && b[j] != b'\'' && j - i < 12 {
                j += 1;
            }
            if j < b.len() && b[j] == b'\'' {
                i = j + 1;
                out.push_str("' '");
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            let c = text[i..].chars().next().expect("char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The code without `#[cfg(test)] mod … { … }` blocks: unit tests may reach any module
/// (they build a configuration to test a component), which is not a dependency of the library.
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let t = after.trim_start();
        let t = t.strip_prefix("pub(crate) ").unwrap_or(t);
        let t = t.strip_prefix("pub ").unwrap_or(t);
        let Some(m) = t.strip_prefix("mod ") else {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        };
        let (Some(open), Some(semi)) = (m.find('{'), Some(m.find(';').unwrap_or(usize::MAX)))
        else {
            rest = after;
            continue;
        };
        if semi < open {
            // `#[cfg(test)] mod tests;`: a test file of its own, left out as well.
            rest = &m[semi + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = m.len();
        for (i, c) in m[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &m[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parses a use tree or path starting at `s` (just after `crate::`/`super::`/…) and returns
/// every full path it names, relative to where it started.
fn use_tree(s: &str) -> Vec<Vec<String>> {
    fn tree(s: &[char], i: &mut usize) -> Vec<Vec<String>> {
        let mut prefix = Vec::new();
        loop {
            skip_ws(s, i);
            if *i < s.len() && s[*i] == '{' {
                *i += 1;
                let mut all = Vec::new();
                loop {
                    skip_ws(s, i);
                    if *i >= s.len() {
                        break;
                    }
                    if s[*i] == '}' {
                        *i += 1;
                        break;
                    }
                    if s[*i] == ',' {
                        *i += 1;
                        continue;
                    }
                    let before = *i;
                    for sub in tree(s, i) {
                        let mut p = prefix.clone();
                        p.extend(sub);
                        all.push(p);
                    }
                    if *i == before {
                        *i += 1;
                    }
                }
                return all;
            }
            let start = *i;
            while *i < s.len() && is_ident(s[*i]) {
                *i += 1;
            }
            if *i == start {
                return vec![prefix];
            }
            let seg: String = s[start..*i].iter().collect();
            if seg != "self" {
                prefix.push(seg);
            }
            skip_ws(s, i);
            if *i + 1 < s.len() && s[*i] == ':' && s[*i + 1] == ':' {
                *i += 2;
            } else {
                // `as x` renames end the path too.
                return vec![prefix];
            }
        }
    }
    fn skip_ws(s: &[char], i: &mut usize) {
        while *i < s.len() && s[*i].is_whitespace() {
            *i += 1;
        }
    }
    let chars: Vec<char> = s.chars().take(4000).collect();
    let mut i = 0;
    tree(&chars, &mut i)
}

/// The file a module path lands in: the deepest prefix that is a file of the crate.
fn file_of(modules: &BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<PathBuf> {
    (0..=path.len())
        .rev()
        .find_map(|n| modules.get(&path[..n]).cloned())
}

/// Edges `file → (file, names)` of the crate under `src`.
fn graph(src: &Path) -> BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("main.rs") {
                files.push(p);
            }
        }
    }
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut edges: BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>> = BTreeMap::new();
    for f in &files {
        let me = module_of(src, f);
        let is_mod = f.ends_with("mod.rs") || f.ends_with("lib.rs");
        let dir_mod = me.clone();
        let parent: Vec<String> = if is_mod {
            me[..me.len().saturating_sub(1)].to_vec()
        } else {
            me[..me.len() - 1].to_vec()
        };
        let text =
            without_test_modules(&code_only(&std::fs::read_to_string(f).expect("read file")));
        // Child modules declared here (`mod x;`, `pub mod x;`), reachable by their bare name.
        let children: BTreeSet<String> = text
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let l = l.strip_prefix("pub ").unwrap_or(l);
                let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
                let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
                Some(name.trim().to_owned())
            })
            .collect();
        let mut refs: Vec<Vec<String>> = Vec::new();
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        for (k, &(at, c)) in chars.iter().enumerate() {
            let boundary = k == 0 || !is_ident(chars[k - 1].1) && chars[k - 1].1 != ':';
            if !boundary || !is_ident(c) {
                continue;
            }
            let rest = &text[at..];
            for (kw, base) in [
                ("crate::", Vec::new()),
                ("super::", parent.clone()),
                ("self::", dir_mod.clone()),
            ] {
                if let Some(after) = rest.strip_prefix(kw) {
                    for p in use_tree(after) {
                        let mut full = base.clone();
                        // `super::super::x`
                        let mut p = p;
                        while p.first().is_some_and(|s| s == "super") {
                            p.remove(0);
                            full.pop();
                        }
                        full.extend(p);
                        refs.push(full);
                    }
                }
            }
            // `use child::X` / `child::f()` from a module file.
            if is_mod {
                let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
                let name = &rest[..end];
                if children.contains(name) && rest[end..].starts_with("::") {
                    for p in use_tree(&rest[end + 2..]) {
                        let mut full = me.clone();
                        full.push(name.to_owned());
                        full.extend(p);
                        refs.push(full);
                    }
                }
            }
        }
        for r in refs {
            if let Some(t) = file_of(&modules, &r) {
                if &t != f {
                    let name = r.last().cloned().unwrap_or_default();
                    edges
                        .entry(f.clone())
                        .or_default()
                        .entry(t)
                        .or_default()
                        .insert(name);
                }
            }
        }
        edges.entry(f.clone()).or_default();
    }
    edges
}

/// Strongly connected components with more than one node (Tarjan).
fn cycles<N: Ord + Clone>(edges: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    struct T<'a, N: Ord + Clone> {
        edges: &'a BTreeMap<N, BTreeSet<N>>,
        index: BTreeMap<N, usize>,
        low: BTreeMap<N, usize>,
        on: BTreeSet<N>,
        stack: Vec<N>,
        next: usize,
        out: Vec<Vec<N>>,
    }
    fn visit<N: Ord + Clone>(t: &mut T<'_, N>, v: &N) {
        t.index.insert(v.clone(), t.next);
        t.low.insert(v.clone(), t.next);
        t.next += 1;
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        let empty = BTreeSet::new();
        let succ: Vec<N> = t.edges.get(v).unwrap_or(&empty).iter().cloned().collect();
        for w in succ {
            if !t.index.contains_key(&w) {
                visit(t, &w);
                let lw = t.low[&w];
                let lv = t.low.get_mut(v).expect("low");
                *lv = (*lv).min(lw);
            } else if t.on.contains(&w) {
                let iw = t.index[&w];
                let lv = t.low.get_mut(v).expect("low");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(&w);
                let done = &w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn cycle_finder_finds_a_cycle_and_nothing_else() {
    let e = |pairs: &[(u8, u8)]| {
        let mut m: BTreeMap<u8, BTreeSet<u8>> = BTreeMap::new();
        for &(a, b) in pairs {
            m.entry(a).or_default().insert(b);
            m.entry(b).or_default();
        }
        m
    };
    assert_eq!(
        cycles(&e(&[(1, 2), (2, 3), (3, 1), (3, 4)])),
        vec![vec![1, 2, 3]]
    );
    assert!(cycles(&e(&[(1, 2), (2, 3), (1, 3)])).is_empty());
    assert_eq!(cycles(&e(&[(1, 2), (2, 1), (3, 4), (4, 3)])).len(), 2);
}

#[test]
fn the_reader_sees_imports_through_every_path_form() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    let write = |p: &str, s: &str| {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, s).expect("write");
    };
    write("lib.rs", "pub mod a;\npub mod b;\n");
    write("a/mod.rs", "pub mod x;\nuse x::Thing;\n");
    write(
        "a/x.rs",
        "use crate::{b::{self, y::Y}};\n// crate::a::mod_in_comment\n",
    );
    write("b/mod.rs", "pub mod y;\n");
    write(
        "b/y.rs",
        "fn f() { super::super::a::g(); let s = \"crate::b\"; }\n\
         #[cfg(test)]\nmod tests {\n    use crate::a::x::T;\n    fn g() { let _ = '{'; }\n}\n",
    );
    let g = graph(src);
    let names: BTreeMap<String, BTreeSet<String>> = g
        .iter()
        .map(|(k, v)| {
            let rel = |p: &Path| p.strip_prefix(src).expect("rel").display().to_string();
            (rel(k), v.keys().map(|t| rel(t)).collect())
        })
        .collect();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(names["a/mod.rs"], set(&["a/x.rs"]));
    assert_eq!(names["a/x.rs"], set(&["b/mod.rs", "b/y.rs"]));
    assert_eq!(names["b/y.rs"], set(&["a/mod.rs"]));
    let flat: BTreeMap<PathBuf, BTreeSet<PathBuf>> = g
        .iter()
        .map(|(k, v)| (k.clone(), v.keys().cloned().collect()))
        .collect();
    assert_eq!(cycles(&flat).len(), 1, "a/mod → a/x → b/y → a/mod");
}

fn assert_acyclic(src: &Path) {
    let g = graph(src);
    let flat: BTreeMap<PathBuf, BTreeSet<PathBuf>> = g
        .iter()
        .map(|(k, v)| (k.clone(), v.keys().cloned().collect()))
        .collect();
    let found = cycles(&flat);
    let rel = |p: &Path| p.strip_prefix(src).expect("rel").display().to_string();
    let mut report = String::new();
    for c in &found {
        report.push_str(&format!("cycle of {} files:\n", c.len()));
        for a in c {
            for (b, names) in &g[a] {
                if c.contains(b) {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    report.push_str(&format!(
                        "  {} -> {}: {}\n",
                        rel(a),
                        rel(b),
                        names.join(", ")
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "import cycles in {}:\n{report}",
        src.display()
    );
}

#[test]
fn the_library_has_no_import_cycle() {
    assert_acyclic(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}
