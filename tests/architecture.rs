//! The shape of `src/`: no import cycle between its files, and no import that goes up the layers
//! `src/lib.rs`'s doc declares (every module listed there, each in one layer).
//!
//! It reads every `src/**/*.rs` of the library (the binaries' few lines, `src/main.rs` and `src/bin/`, are
//! other crates), strips comments and literals, and takes each file's references to the crate's own
//! modules: `use` declarations (grouped ones too, `use crate::{a, b::c}`, relative to `crate`, `super`,
//! `self` or a child module) and paths in the code (`crate::x::y(..)`, `super::x`, `child::f`). Each is
//! followed to the file that defines the item, through re-exports (`pub use`), so `super::Stop` counts as
//! an import of `server/stop.rs`, not of `server/mod.rs`. A module's re-export of its own children (its
//! facade) is not an import of theirs unless the module's code uses the name too.
//!
//! Parsing Rust by hand is a deliberate approximation: it reads paths, not names brought in by globs
//! (`use x::*`) or macros, and a name a file both defines and imports (a function `run` beside a
//! module `run`) counts as its own; so it can miss an edge, and errs that way. The unit tests at the
//! bottom pin that each kind of reference is read and that the check fails on a cycle and on an upward
//! import. (A little over 700 lines: the reader of Rust paths, the graph and the unit tests that prove
//! them are one job, and apart each would be read with the others open.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Cycles tolerated for a while (none today): one reshaping a room that cannot be done in one change
/// lists its files or modules here. Each must still be a cycle, of exactly these files or modules: once
/// it is gone, the test fails until its line is removed, so the list only shrinks.
const KNOWN_CYCLES: &[&[&str]] = &[];

#[test]
fn src_has_no_import_cycle_and_no_upward_import() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    collect(&root.join("src"), root, &mut sources);
    assert!(sources.iter().any(|(p, _)| p == "src/lib.rs"), "src/lib.rs not found under {}", root.display());
    let graph = Graph::read(&sources);
    let mut problems = graph.layer_problems();
    let mut known: BTreeSet<Vec<String>> = KNOWN_CYCLES.iter().map(|c| c.iter().map(|s| s.to_string()).collect()).collect();
    let modules = graph.module_cycles().into_iter().map(|c| ("modules", c));
    for (what, (members, cycle)) in graph.cycles().into_iter().map(|c| ("files", c)).chain(modules) {
        if !known.remove(&members) {
            let all = if members.len() + 1 > cycle.len() {
                format!(" ({what} importing each other: {})", members.join(", "))
            } else {
                String::new()
            };
            problems.push(format!("import cycle between {what}: {}{all}", cycle.join(" -> ")));
        }
    }
    for gone in known {
        problems.push(format!("{} no longer import each other in a cycle: remove them from KNOWN_CYCLES", gone.join(", ")));
    }
    assert!(problems.is_empty(), "the layers of src/ (see src/lib.rs's doc) are broken:\n  {}", problems.join("\n  "));
}

/// Every library source under `dir`, as (path relative to the package, text).
fn collect(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten().collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        if rel == "src/bin" || rel == "src/main.rs" {
            continue;
        }
        if path.is_dir() {
            collect(&path, root, out);
        } else if rel.ends_with(".rs") {
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The module path of a file: `src/lib.rs` is the root, `src/a.rs` and `src/a/mod.rs` are `a`,
/// `src/a/b.rs` is `a::b`.
fn module_of(path: &str) -> Vec<String> {
    let inner = path.trim_start_matches("src/").trim_end_matches(".rs");
    let mut parts: Vec<String> = inner.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file with comments, strings and character literals blanked out.
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r' && (next == Some('"') || (next == Some('#') && raw_start(&c, i + 1))) && !ident_before(&c, i) {
            // r"..." or r#"..."#: ends at the quote followed by as many #.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1;
            while j < c.len() && !(c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#'))) {
                j += 1;
            }
            i = j + 1 + hashes;
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\u{..}'); a lifetime ('a) has no closing quote.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn raw_start(c: &[char], mut i: usize) -> bool {
    while c.get(i) == Some(&'#') {
        i += 1;
    }
    c.get(i) == Some(&'"')
}

fn ident_before(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

fn tokens(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_alphabetic() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect::<String>().trim_start_matches("r#").to_string()));
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok::Sep);
            i += 2;
        } else if c[i].is_whitespace() {
            i += 1;
        } else {
            out.push(Tok::Punct(c[i]));
            i += 1;
        }
    }
    out
}

/// Whether the item whose keyword is at `toks[i]` has a visibility (`pub`, `pub(crate)`, `pub(super)`).
fn is_public(toks: &[Tok], i: usize) -> bool {
    match i.checked_sub(1).map(|j| &toks[j]) {
        Some(Tok::Ident(k)) => k == "pub",
        Some(Tok::Punct(')')) => {
            let open = (0..i - 1).rev().find(|&j| toks[j] == Tok::Punct('('));
            open.is_some_and(|j| j > 0 && ident(toks.get(j - 1)) == Some("pub"))
        }
        _ => false,
    }
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

/// One `use` leaf: the path as written, the name it brings in (None for a glob), and whether the
/// declaration is `pub` (any visibility).
#[derive(Debug, Clone)]
struct UseLeaf {
    path: Vec<String>,
    name: Option<String>,
    public: bool,
}

/// Reads a use tree starting at `toks[*i]` with `prefix` before it, until `;`, `,` or `}`.
fn use_tree(toks: &[Tok], i: &mut usize, prefix: Vec<String>, public: bool, out: &mut Vec<UseLeaf>) {
    let mut path = prefix;
    if toks.get(*i) == Some(&Tok::Sep) {
        *i += 1;
    }
    loop {
        match toks.get(*i) {
            Some(Tok::Ident(s)) => {
                let s = s.clone();
                *i += 1;
                if toks.get(*i) == Some(&Tok::Sep) {
                    path.push(s);
                    *i += 1;
                    continue;
                }
                if s == "self" {
                    let name = path.last().cloned();
                    out.push(UseLeaf { path, name: alias(toks, i).or(name), public });
                } else {
                    path.push(s.clone());
                    out.push(UseLeaf { path, name: alias(toks, i).or(Some(s)), public });
                }
                return;
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push(UseLeaf { path, name: None, public });
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                while !matches!(toks.get(*i), None | Some(Tok::Punct('}'))) {
                    use_tree(toks, i, path.clone(), public, out);
                    if toks.get(*i) == Some(&Tok::Punct(',')) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            _ => return,
        }
    }
}

/// `as NAME` after a use leaf, if any.
fn alias(toks: &[Tok], i: &mut usize) -> Option<String> {
    if ident(toks.get(*i)) == Some("as") {
        *i += 2;
        return ident(toks.get(*i - 1)).map(str::to_string);
    }
    None
}

/// A reference from a file, as written, in the module it is written in.
#[derive(Debug, Clone)]
struct Reference {
    module: Vec<String>,
    path: Vec<String>,
    /// From a `pub use` (a re-export), with the name it re-exports.
    reexport: Option<String>,
}

#[derive(Debug, Default)]
struct File {
    path: String,
    module: Vec<String>,
    references: Vec<Reference>,
    /// Identifiers of the code outside `use` declarations (to tell a facade from a use).
    code_idents: BTreeSet<String>,
}

/// The files of a crate and their imports, resolved to the files that define what they import.
struct Graph {
    files: Vec<File>,
    /// Module path (file or inline module) -> the file it is in.
    modules: BTreeMap<Vec<String>, usize>,
    /// (module, name brought in by a `use`) -> the absolute path it names.
    uses: BTreeMap<(Vec<String>, String), Vec<String>>,
    /// (module, name of an item it defines: fn, struct, enum, trait, type, const, static).
    defined: BTreeSet<(Vec<String>, String)>,
    /// Resolved imports: file -> files.
    edges: BTreeMap<usize, BTreeSet<usize>>,
    /// The layers `src/lib.rs`'s doc declares: top-level module -> (rank, layer's name).
    layers: BTreeMap<String, (usize, String)>,
    /// Top-level modules `src/lib.rs` declares.
    declared: BTreeSet<String>,
}

impl Graph {
    fn read(sources: &[(String, String)]) -> Graph {
        let mut graph = Graph {
            files: Vec::new(),
            modules: BTreeMap::new(),
            uses: BTreeMap::new(),
            defined: BTreeSet::new(),
            edges: BTreeMap::new(),
            layers: BTreeMap::new(),
            declared: BTreeSet::new(),
        };
        for (path, text) in sources {
            let index = graph.files.len();
            let module = module_of(path);
            graph.modules.insert(module.clone(), index);
            graph.files.push(File { path: path.clone(), module, ..File::default() });
            if path == "src/lib.rs" {
                graph.layers = layers(text);
            }
        }
        for (index, (path, text)) in sources.iter().enumerate() {
            let toks = tokens(&strip(text));
            graph.scan(index, &toks);
            if path == "src/lib.rs" {
                for w in toks.windows(3) {
                    if let (Some("mod"), Some(name), Tok::Punct(';')) = (ident(w.first()), ident(w.get(1)), &w[2]) {
                        graph.declared.insert(name.to_string());
                    }
                }
            }
        }
        for index in 0..graph.files.len() {
            let references = graph.files[index].references.clone();
            for r in references {
                let Some(abs) = graph.absolute(&r.module, &r.path) else { continue };
                let Some(target) = graph.resolve(abs, 0) else { continue };
                if target == index {
                    continue;
                }
                if let Some(name) = &r.reexport {
                    let below = graph.files[target].module.starts_with(&graph.files[index].module);
                    if below && !graph.files[index].code_idents.contains(name) {
                        continue;
                    }
                }
                graph.edges.entry(index).or_default().insert(target);
            }
        }
        graph
    }

    /// Records the references of file `index` and the inline modules and `use`s it declares.
    fn scan(&mut self, index: usize, toks: &[Tok]) {
        let base = self.files[index].module.clone();
        // Inline modules open at a brace depth: (name, depth).
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut i = 0;
        while i < toks.len() {
            let module: Vec<String> = base.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect();
            match &toks[i] {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth = depth.saturating_sub(1);
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                }
                Tok::Ident(k) if k == "mod" => {
                    if let (Some(name), Some(Tok::Punct('{'))) = (ident(toks.get(i + 1)), toks.get(i + 2)) {
                        let mut path = module.clone();
                        path.push(name.to_string());
                        self.modules.entry(path).or_insert(index);
                        inline.push((name.to_string(), depth));
                        depth += 1;
                        i += 3;
                        continue;
                    }
                }
                Tok::Ident(k) if k == "use" && toks.get(i.wrapping_sub(1)) != Some(&Tok::Sep) => {
                    let public = is_public(toks, i);
                    let mut leaves = Vec::new();
                    i += 1;
                    while !matches!(toks.get(i), None | Some(Tok::Punct(';'))) {
                        let before = i;
                        use_tree(toks, &mut i, Vec::new(), public, &mut leaves);
                        if i == before {
                            i += 1;
                        }
                    }
                    for leaf in leaves {
                        if let Some(name) = &leaf.name
                            && let Some(abs) = self.absolute(&module, &leaf.path)
                        {
                            self.uses.insert((module.clone(), name.clone()), abs);
                        }
                        let reexport = if leaf.public { leaf.name.clone() } else { None };
                        self.files[index].references.push(Reference { module: module.clone(), path: leaf.path, reexport });
                    }
                    continue;
                }
                Tok::Ident(first) if toks.get(i + 1) == Some(&Tok::Sep) && ident(toks.get(i + 2)).is_some() => {
                    let starts = !matches!(toks.get(i.wrapping_sub(1)), Some(Tok::Sep | Tok::Punct('.')));
                    if starts {
                        let mut path = vec![first.clone()];
                        let mut j = i + 1;
                        while toks.get(j) == Some(&Tok::Sep)
                            && let Some(next) = ident(toks.get(j + 1))
                        {
                            path.push(next.to_string());
                            j += 2;
                        }
                        self.files[index].code_idents.extend(path.iter().cloned());
                        self.files[index].references.push(Reference { module, path, reexport: None });
                        i = j;
                        continue;
                    }
                }
                Tok::Ident(name) => {
                    if matches!(name.as_str(), "fn" | "struct" | "enum" | "trait" | "type" | "const" | "static" | "union")
                        && let Some(item) = ident(toks.get(i + 1))
                    {
                        self.defined.insert((module.clone(), item.to_string()));
                    }
                    self.files[index].code_idents.insert(name.clone());
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// A path as written in `module`, from the crate's root; None when it leaves the crate. A path
    /// may start at `crate`, `super`, `self`, a child module, or a name a `use` of the module brought in.
    fn absolute(&self, module: &[String], path: &[String]) -> Option<Vec<String>> {
        let mut at: Vec<String> = module.to_vec();
        let mut rest = path;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                at.clear();
                rest = &rest[1..];
            }
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    at.pop()?;
                    rest = &rest[1..];
                }
            }
            Some("self") => rest = &rest[1..],
            Some(first) => {
                let mut child = at.clone();
                child.push(first.to_string());
                if !self.modules.contains_key(&child) {
                    let mut used = self.uses.get(&(at, first.to_string()))?.clone();
                    used.extend(rest[1..].iter().cloned());
                    return Some(used);
                }
            }
            None => return None,
        }
        at.extend(rest.iter().cloned());
        Some(at)
    }

    /// The file that defines what `abs` names: its deepest module, then through that module's `use`s.
    fn resolve(&self, abs: Vec<String>, hops: usize) -> Option<usize> {
        let cut = (0..=abs.len()).rev().find(|&n| self.modules.contains_key(&abs[..n]))?;
        let file = self.modules[&abs[..cut]];
        let key = (abs[..cut].to_vec(), abs.get(cut).cloned().unwrap_or_default());
        if cut < abs.len()
            && hops < 16
            && !self.defined.contains(&key)
            && let Some(target) = self.uses.get(&key)
        {
            let mut next = target.clone();
            next.extend(abs[cut + 1..].iter().cloned());
            if let Some(found) = self.resolve(next, hops + 1) {
                return Some(found);
            }
        }
        Some(file)
    }

    fn top(&self, file: usize) -> Option<&String> {
        self.files[file].module.first()
    }

    /// Imports that go up the layers, modules without a layer, and layers naming no module.
    fn layer_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut unplaced = BTreeSet::new();
        for module in &self.declared {
            if !self.layers.contains_key(module) {
                unplaced.insert(module.clone());
            }
        }
        for file in 0..self.files.len() {
            if let Some(top) = self.top(file)
                && !self.layers.contains_key(top)
            {
                unplaced.insert(top.clone());
            }
        }
        for module in unplaced {
            problems.push(format!("module `{module}` has no layer: list it in the layers of src/lib.rs's doc"));
        }
        for module in self.layers.keys() {
            if !self.declared.contains(module) {
                problems.push(format!("src/lib.rs's doc places `{module}`, which src/lib.rs does not declare"));
            }
        }
        for (&from, targets) in &self.edges {
            for &to in targets {
                let (Some(a), Some(b)) = (self.top(from), self.top(to)) else { continue };
                let (Some((ra, la)), Some((rb, lb))) = (self.layers.get(a), self.layers.get(b)) else { continue };
                if rb > ra {
                    problems.push(format!(
                        "upward import: {} ({la}) imports {} ({lb}, a higher layer)",
                        self.files[from].path, self.files[to].path
                    ));
                }
            }
        }
        problems
    }

    /// Each set of files that import each other (sorted), with the shortest cycle through its first
    /// file (`a -> b -> a`).
    fn cycles(&self) -> Vec<(Vec<String>, Vec<String>)> {
        let name = |f: &usize| self.files[*f].path.clone();
        cycles(self.files.len(), &self.edges)
            .into_iter()
            .map(|(c, p)| (c.iter().map(name).collect(), p.iter().map(name).collect()))
            .collect()
    }

    /// As [`Graph::cycles`], between top-level modules (a file's import of another module's file is an
    /// import of that module).
    fn module_cycles(&self) -> Vec<(Vec<String>, Vec<String>)> {
        let tops: Vec<String> = self.files.iter().filter_map(|f| f.module.first().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
        let index = |file: usize| self.top(file).and_then(|t| tops.iter().position(|x| x == t));
        let mut edges: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        for (&from, targets) in &self.edges {
            for &to in targets {
                if let (Some(a), Some(b)) = (index(from), index(to))
                    && a != b
                {
                    edges.entry(a).or_default().insert(b);
                }
            }
        }
        let name = |m: &usize| tops[*m].clone();
        cycles(tops.len(), &edges).into_iter().map(|(c, p)| (c.iter().map(name).collect(), p.iter().map(name).collect())).collect()
    }
}

/// Each set of nodes that reach each other (sorted), with the shortest cycle through its first node.
fn cycles(n: usize, edges: &BTreeMap<usize, BTreeSet<usize>>) -> Vec<(Vec<usize>, Vec<usize>)> {
    let reach = |from: usize| -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(x) = todo.pop() {
            for &y in edges.get(&x).into_iter().flatten() {
                if seen.insert(y) {
                    todo.push(y);
                }
            }
        }
        seen
    };
    let reaches: Vec<BTreeSet<usize>> = (0..n).map(reach).collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for a in 0..n {
        if done.contains(&a) || !reaches[a].contains(&a) {
            continue;
        }
        let component: BTreeSet<usize> = (0..n).filter(|&b| reaches[a].contains(&b) && reaches[b].contains(&a)).collect();
        done.extend(component.iter().copied());
        // The shortest way from `a` back to itself (breadth first).
        let mut previous: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([a]);
        while let Some(x) = queue.pop_front() {
            for &y in edges.get(&x).into_iter().flatten() {
                if component.contains(&y) && !previous.contains_key(&y) {
                    previous.insert(y, x);
                    queue.push_back(y);
                }
            }
        }
        let mut back = Vec::new();
        let mut at = previous[&a];
        while at != a {
            back.push(at);
            at = previous[&at];
        }
        back.reverse();
        found.push((component.into_iter().collect(), [a].into_iter().chain(back).chain([a]).collect()));
    }
    found
}

/// The layers of `src/lib.rs`'s doc: lines `//! N. Name: ...` open layer N, and the modules listed
/// under it as `//!    - [`module`]...` (or `` - `module` `` for a private one) belong to it.
fn layers(lib: &str) -> BTreeMap<String, (usize, String)> {
    let mut layers = BTreeMap::new();
    let mut current: Option<(usize, String)> = None;
    for line in lib.lines().take_while(|l| l.starts_with("//!")) {
        let text = line.trim_start_matches("//!");
        let trimmed = text.trim_start();
        if let Some((number, rest)) = trimmed.split_once(". ")
            && let Ok(rank) = number.parse::<usize>()
            && text.len() - trimmed.len() <= 1
        {
            let name = rest.split(':').next().unwrap_or(rest).trim().to_string();
            current = Some((rank, name));
        } else if let Some(item) = trimmed.strip_prefix("- [`").or_else(|| trimmed.strip_prefix("- `"))
            && let Some((module, _)) = item.split_once('`')
            && let Some(layer) = &current
        {
            layers.insert(module.to_string(), layer.clone());
        }
    }
    layers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny crate: a lib.rs declaring `modules` in two layers (`low` below `high`), and the files.
    fn krate(files: &[(&str, &str)]) -> Graph {
        let lib = "//! Layers:\n//!\n//! 1. Low: below.\n//!    - [`a`]: a.\n//!    - [`b`]: b.\n//! 2. High: above.\n//!    - [`c`]: c.\n\nmod a;\nmod b;\npub mod c;\n";
        let mut sources = vec![("src/lib.rs".to_string(), lib.to_string())];
        sources.extend(files.iter().map(|(p, t)| (p.to_string(), t.to_string())));
        Graph::read(&sources)
    }

    fn edges(g: &Graph) -> Vec<String> {
        g.edges.iter().flat_map(|(a, bs)| bs.iter().map(move |b| format!("{} -> {}", g.files[*a].path, g.files[*b].path))).collect()
    }

    #[test]
    fn a_cycle_between_two_files_is_found_and_named() {
        // Pins: the cycle check fails on a hand-made cycle, through a grouped `use crate::{..}` form.
        let g = krate(&[("src/a.rs", "use crate::{b::B, c};\npub struct A;"), ("src/b.rs", "pub struct B(crate::a::A);")]);
        let cycles = g.cycles();
        let path = vec!["src/a.rs".to_string(), "src/b.rs".into(), "src/a.rs".into()];
        assert_eq!(cycles, vec![(vec!["src/a.rs".to_string(), "src/b.rs".into()], path)], "{:?}", edges(&g));
        assert_eq!(g.module_cycles(), vec![(vec!["a".to_string(), "b".into()], vec!["a".to_string(), "b".into(), "a".into()])]);
    }

    #[test]
    fn an_import_that_goes_up_a_layer_is_refused() {
        // Pins: the layer check fails on a low module importing a high one, and accepts the other way.
        let g = krate(&[("src/a.rs", "pub fn f() { crate::c::g() }"), ("src/b.rs", ""), ("src/c.rs", "use crate::b;\npub fn g() {}")]);
        let problems = g.layer_problems();
        assert_eq!(problems, vec!["upward import: src/a.rs (Low) imports src/c.rs (High, a higher layer)".to_string()]);
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn a_module_without_a_layer_must_be_placed() {
        // Pins: a new top-level module (declared, not in the doc) is an error that names it.
        let mut g = krate(&[("src/a.rs", ""), ("src/b.rs", ""), ("src/c.rs", ""), ("src/d/mod.rs", "")]);
        g.declared.insert("d".into());
        assert_eq!(g.layer_problems(), vec!["module `d` has no layer: list it in the layers of src/lib.rs's doc".to_string()]);
    }

    #[test]
    fn super_self_children_and_reexports_resolve_to_the_defining_file() {
        // Pins: `super::X` through a parent's `pub use` reaches the file defining X, a parent's facade is
        // no import, a child module named in code is, a name a file defines is its own even if it also
        // imports one so named, and comments, strings and inline test modules' `use super::*` add nothing.
        let g = krate(&[
            (
                "src/a/mod.rs",
                "mod stop;\nmod watch;\nmod guard;\npub use stop::Stop;\npub use watch::W;\nfn f() { guard::check(\"crate::c::x\") } // crate::c",
            ),
            ("src/a/stop.rs", "pub struct Stop;\n#[cfg(test)]\nmod tests { use super::*; }"),
            ("src/a/watch.rs", "use super::Stop;\npub struct W(Stop);"),
            ("src/a/guard.rs", "pub fn check(_: &str) {}\n/* use crate::c; */"),
            ("src/b.rs", "use crate::a::{self, W};\nuse crate::a::guard as check;\nfn g(_: a::Stop) {}\npub fn check() {}"),
            ("src/c.rs", "fn h() { crate::b::check() }"),
        ]);
        let mut found = edges(&g);
        found.sort();
        assert_eq!(
            found,
            vec![
                "src/a/mod.rs -> src/a/guard.rs",
                "src/a/watch.rs -> src/a/stop.rs",
                "src/b.rs -> src/a/guard.rs",
                "src/b.rs -> src/a/mod.rs",
                "src/b.rs -> src/a/stop.rs",
                "src/b.rs -> src/a/watch.rs",
                "src/c.rs -> src/b.rs",
            ]
        );
        assert!(g.cycles().is_empty() && g.layer_problems().is_empty(), "{:?} {:?}", g.cycles(), g.layer_problems());
    }

    #[test]
    fn modules_that_import_each_other_through_different_files_are_a_cycle() {
        // Pins: a/x -> b/y and b/z -> a/w is no cycle between files, but is one between modules.
        let g = krate(&[
            ("src/a/mod.rs", "mod x;\nmod w;"),
            ("src/a/x.rs", "use crate::b::y::Y;"),
            ("src/a/w.rs", "pub struct W;"),
            ("src/b/mod.rs", "pub mod y;\npub mod z;"),
            ("src/b/y.rs", "pub struct Y;"),
            ("src/b/z.rs", "use crate::a::w::W;"),
        ]);
        assert!(g.cycles().is_empty(), "{:?}", g.cycles());
        assert_eq!(g.module_cycles().len(), 1, "{:?}", edges(&g));
    }

    #[test]
    fn a_cycle_through_a_parent_s_own_code_is_a_cycle() {
        // Pins: a re-export the parent also uses in its code counts, so child -> parent -> child is found.
        let g = krate(&[
            ("src/a/mod.rs", "mod line;\npub use line::Line;\npub struct Node(Line);"),
            ("src/a/line.rs", "pub struct Line(Box<super::Node>);"),
        ]);
        assert_eq!(g.cycles().len(), 1, "{:?}", edges(&g));
    }
}
