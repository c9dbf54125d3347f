//! The shape of the code: no import cycles among the files of `src/`, and no module that
//! uses one in a layer above its own.
//!
//! Files that use each other in a circle can only be read, changed and tested together,
//! and such a cycle nearly always means a type lives in the wrong module. The layers
//! ([`LAYERS`]) say more: the roles run the services, the services rest on the links to
//! the outside, and everything rests on the protocol, the config and the sum; a link
//! that reached up into a service would tie the two together again. These tests build
//! the graph of which file uses which and fail naming every cycle, and every use that
//! reaches up, with its line.
//!
//! The graph is read from the text, well enough for this code base rather than as the
//! compiler would:
//! - `mod x;` makes a file use the file of module `x`;
//! - a path that starts with `crate::`, `super::` or `self::`, in a `use` tree or in code
//!   (macro arguments included), makes it use the file of the longest module the path
//!   names; when the next segment is a name that file imports (`pub use error::ArgsError`),
//!   the path is followed to where the name comes from. So is a string that holds
//!   nothing but such a path (`#[serde(with = "crate::...")]`);
//! - comments, strings and character literals are skipped.
//!
//! A file does not use the modules that enclose it: a child's `super::X` reaches into
//! the scope it is part of, as a block reads its function's variables, and counting it
//! would make every parent and child a cycle. A cycle through a third file is still
//! found, since the parent's `mod` line is an edge.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;

/// Uses left out of the graph, as (user, used). Each names the one use that closes a
/// cycle someone is removing, rather than the files of the cycle, so that a new cycle
/// among the same files still fails. Empty: keep it so.
const ALLOWED_USES: &[(&str, &str)] = &[];

/// The top-level modules of `src/`, top layer first. A module may use modules of its own
/// layer and of the layers below it, never of one above.
const LAYERS: &[&[&str]] = &[
    // The entry points: one function per subcommand, its command line, the probe.
    &["roles", "cli", "probe"],
    // The roles.
    &["serve", "worker", "migrate"],
    // The HTTP API.
    &["api"],
    // What the API asks of the stores: who may call, who waits for what.
    &["auth", "waiters"],
    // The links to the outside: HTTP serving, PostgreSQL and Redis, RabbitMQ, metrics.
    &["http", "store", "broker", "metrics"],
    // What they share: the task protocol, traces, dependencies and their errors, TLS.
    &["task", "telemetry", "dependency", "tls"],
    // The leaves.
    &["config", "sum", "episode", "shutdown", "budget"],
];

#[test]
fn no_module_of_src_uses_one_in_a_layer_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    read_sources(root, &root.join("src"), &mut sources);
    let graph = Graph::build(&sources);
    let unplaced: Vec<&str> = graph
        .files
        .iter()
        .filter_map(|f| f.module.first())
        .filter(|m| layer_of(LAYERS, m).is_none())
        .map(String::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules in no layer: {unplaced:?}; add each to LAYERS where it belongs"
    );
    let upward = graph.upward(LAYERS);
    assert!(
        upward.is_empty(),
        "modules of src/ use modules in a layer above their own; move what they need \
         down, or the user up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn a_use_that_reaches_a_layer_above_is_named_with_its_line() {
    let graph = Graph::build(&sources(&[
        (
            "src/lib.rs",
            "mod high;
mod low;
",
        ),
        (
            "src/high.rs",
            "use crate::low::Thing;
pub struct Top;
",
        ),
        (
            "src/low/mod.rs",
            "mod inner;
pub struct Thing;
",
        ),
        (
            "src/low/inner.rs",
            "\nfn f(_: crate::high::Top) {}
",
        ),
    ]));
    let layers: &[&[&str]] = &[&["high"], &["low"]];
    assert_eq!(
        graph.upward(layers),
        ["src/low/inner.rs:2 uses src/high.rs (low is below high)"]
    );
    let flat: &[&[&str]] = &[&["high", "low"]];
    assert!(graph.upward(flat).is_empty());
}

/// The layer of top-level module `module`: its index in `layers`.
fn layer_of(layers: &[&[&str]], module: &str) -> Option<usize> {
    layers.iter().position(|layer| layer.contains(&module))
}

#[test]
fn no_files_of_src_use_each_other_in_a_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    read_sources(root, &root.join("src"), &mut sources);
    let mut graph = Graph::build(&sources);

    let undeclared: Vec<&str> = (0..graph.files.len())
        .filter(|&f| !graph.files[f].module.is_empty())
        .filter(|&f| !graph.declared.contains(&f))
        .map(|f| graph.files[f].path.as_str())
        .collect();
    assert!(
        undeclared.is_empty(),
        "no `mod` line declares {undeclared:?}: this test reads a file's module from its \
         path, so every file under src/ must be the module its path names"
    );

    let files = &graph.files;
    graph.edges.retain(|&(user, used), _| {
        !ALLOWED_USES.contains(&(&files[user].path[..], &files[used].path[..]))
    });
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "files of src/ use each other in a cycle; move what they share into a module \
         of its own that none of them needs back:\n{}",
        cycles
            .iter()
            .map(|c| graph.describe(c))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn two_files_that_use_each_other_are_named_with_the_lines_that_do() {
    let graph = Graph::build(&sources(&[
        ("src/lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "src/a.rs",
            "pub struct A;\nfn f() -> crate::b::B { todo!() }\n",
        ),
        ("src/b.rs", "\n\nuse crate::a::A;\npub struct B;\n"),
    ]));
    let cycles = graph.cycles();
    assert_eq!(cycles.len(), 1);
    let text = graph.describe(&cycles[0]);
    assert!(text.contains("src/a.rs -> src/b.rs -> src/a.rs"), "{text}");
    assert!(text.contains("src/a.rs:2 uses src/b.rs"), "{text}");
    assert!(text.contains("src/b.rs:3 uses src/a.rs"), "{text}");
}

#[test]
fn a_cycle_through_groups_reexports_and_a_parent_is_found() {
    // inner uses b and c through one group import; b re-exports inner's Thing by way
    // of a's `pub use`, and c names it through b: so b and c use inner and the three
    // make one cycle, while a, which they reach only through its `pub use`, stays out.
    let graph = Graph::build(&sources(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("src/a/mod.rs", "mod inner;\npub(crate) use inner::Thing;\n"),
        (
            "src/a/inner.rs",
            "use super::super::{b, c::{self, Other}};\n",
        ),
        ("src/b.rs", "pub use crate::a::Thing as Renamed;\n"),
        (
            "src/c.rs",
            "pub struct Other;\nfn f(_: crate::b::Renamed) {}\n",
        ),
    ]));
    let cycles = graph.cycles();
    let names: Vec<Vec<&str>> = cycles
        .iter()
        .map(|c| c.iter().map(|&f| &graph.files[f].path[..]).collect())
        .collect();
    assert_eq!(
        names,
        [["src/a/inner.rs", "src/b.rs", "src/c.rs"]],
        "{}",
        graph.describe(&cycles[0])
    );
}

#[test]
fn comments_strings_and_a_childs_use_of_its_parent_are_not_edges() {
    let graph = Graph::build(&sources(&[
        (
            "src/lib.rs",
            "pub mod a;\npub mod b;\nconst LIMIT: u32 = 1;\n",
        ),
        (
            "src/a.rs",
            "//! See [`crate::b`].\n\
             /* crate::b::X /* nested */ crate::b::Y */\n\
             const S: &str = \"crate::b::X is \\\" not code\";\n\
             const R: &str = r#\"a \"quoted\" crate::b::X\"#;\n\
             const C: char = '\"'; fn f<'a>(_: &'a str) -> u32 { crate::LIMIT }\n\
             #[cfg(test)]\nmod tests { use super::*; fn g() { self::super::S; } }\n",
        ),
        ("src/b.rs", "use crate::a;\n"),
    ]));
    assert!(graph.cycles().is_empty(), "{:?}", graph.edges);
    let a = graph.index("src/a.rs");
    assert!(
        graph.edges.keys().all(|&(from, _)| from != a),
        "{:?}",
        graph.edges
    );
}

#[test]
fn a_path_written_as_a_string_is_an_edge() {
    let graph = Graph::build(&sources(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "#[serde(with = \"crate::b::duration\")]\nstruct A;\n",
        ),
        ("src/b.rs", "fn f() -> crate::a::A { todo!() }\n"),
    ]));
    assert_eq!(graph.cycles().len(), 1, "{:?}", graph.edges);
}

fn sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect()
}

/// Every `.rs` file under `dir`, as its path from `root` (with `/`) and its text.
fn read_sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path.strip_prefix(root).unwrap();
            let name = name.to_str().unwrap().replace('\\', "/");
            out.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// A source file and the module it is.
struct File {
    path: String,
    /// `["api", "tasks"]` for `src/api/tasks.rs`; empty for the crate roots.
    module: Vec<String>,
}

/// Which file uses which.
struct Graph {
    files: Vec<File>,
    /// (user, used) -> the first line where the user does.
    edges: BTreeMap<(usize, usize), usize>,
    /// Files some `mod` line declares.
    declared: BTreeSet<usize>,
}

/// What one file says, before paths are resolved to files.
#[derive(Default)]
struct Scan {
    /// `mod name;`: the module it is declared in, the name, the line.
    mods: Vec<(Vec<String>, String, usize)>,
    /// Paths as absolute module paths (`crate::` dropped), with their lines.
    paths: Vec<(Vec<String>, usize)>,
    /// Names that `use` brings into a module: (module, name) -> absolute path.
    imports: HashMap<(Vec<String>, String), Vec<String>>,
}

impl Graph {
    fn build(sources: &[(String, String)]) -> Graph {
        let files: Vec<File> = sources
            .iter()
            .map(|(path, _)| File {
                path: path.clone(),
                module: module_of(path),
            })
            .collect();
        let mut by_module: HashMap<Vec<String>, usize> = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            // Both roots are module `[]`; the library's is the one paths reach.
            if f.module.is_empty() && !f.path.ends_with("lib.rs") {
                continue;
            }
            by_module.insert(f.module.clone(), i);
        }
        let scans: Vec<Scan> = sources
            .iter()
            .zip(&files)
            .map(|((_, text), f)| scan(&f.module, &tokens(text)))
            .collect();

        // The file a module path lands in, following names that file imports (a few
        // times: names imported in a circle do not compile, and are given up on).
        let target = |path: &[String]| -> Option<usize> {
            let mut path = path.to_vec();
            for _ in 0..16 {
                let k = (0..=path.len())
                    .rev()
                    .find(|&k| by_module.contains_key(&path[..k]))?;
                let file = by_module[&path[..k]];
                let Some(name) = path.get(k) else {
                    return Some(file);
                };
                let key = (path[..k].to_vec(), name.clone());
                match scans[file].imports.get(&key) {
                    Some(from) => path = [&from[..], &path[k + 1..]].concat(),
                    None => return Some(file),
                }
            }
            None
        };

        let add = |edges: &mut BTreeMap<_, usize>, edge, line: usize| {
            let first = edges.entry(edge).or_insert(line);
            *first = line.min(*first);
        };
        let mut edges = BTreeMap::new();
        let mut declared = BTreeSet::new();
        for (from, s) in scans.iter().enumerate() {
            for (parent, name, line) in &s.mods {
                let child = [&parent[..], std::slice::from_ref(name)].concat();
                if let Some(&to) = by_module.get(&child) {
                    declared.insert(to);
                    add(&mut edges, (from, to), *line);
                }
            }
            for (path, line) in &s.paths {
                let Some(to) = target(path) else { continue };
                if files[from].module.starts_with(&files[to].module) {
                    continue; // the file itself, or a module enclosing it
                }
                add(&mut edges, (from, to), *line);
            }
        }
        Graph {
            files,
            edges,
            declared,
        }
    }

    /// Every use by a file of a module in a layer above its own, as
    /// `user:line uses used (user's module is below used's)`.
    fn upward(&self, layers: &[&[&str]]) -> Vec<String> {
        let top = |f: usize| self.files[f].module.first().map(String::as_str);
        self.edges
            .iter()
            .filter_map(|(&(from, to), &line)| {
                let (user, used) = (top(from)?, top(to)?);
                let below = layer_of(layers, user)? > layer_of(layers, used)?;
                below.then(|| {
                    format!(
                        "{}:{line} uses {} ({user} is below {used})",
                        self.files[from].path, self.files[to].path
                    )
                })
            })
            .collect()
    }

    fn index(&self, path: &str) -> usize {
        self.files.iter().position(|f| f.path == path).unwrap()
    }

    fn uses(&self, from: usize) -> impl Iterator<Item = usize> + '_ {
        self.edges
            .range((from, 0)..(from + 1, 0))
            .map(|(&(_, to), _)| to)
    }

    /// The strongly connected sets of two files or more: each file in one reaches every
    /// other through the files it uses.
    fn cycles(&self) -> Vec<Vec<usize>> {
        let reach: Vec<BTreeSet<usize>> = (0..self.files.len())
            .map(|start| {
                let mut seen = BTreeSet::new();
                let mut stack = vec![start];
                while let Some(f) = stack.pop() {
                    for to in self.uses(f) {
                        if seen.insert(to) {
                            stack.push(to);
                        }
                    }
                }
                seen
            })
            .collect();
        let mut placed = BTreeSet::new();
        let mut cycles = Vec::new();
        for f in 0..self.files.len() {
            if placed.contains(&f) || !reach[f].contains(&f) {
                continue;
            }
            let members: Vec<usize> = reach[f]
                .iter()
                .copied()
                .filter(|&g| reach[g].contains(&f))
                .collect();
            placed.extend(members.iter().copied());
            cycles.push(members);
        }
        cycles
    }

    /// One shortest cycle through the set's first file, then every use among its files.
    fn describe(&self, members: &[usize]) -> String {
        let start = members[0];
        let mut came_from: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        'search: while let Some(f) = queue.pop_front() {
            for to in self.uses(f).filter(|to| members.contains(to)) {
                if to == start {
                    came_from.insert(start, f);
                    break 'search;
                }
                if let Entry::Vacant(e) = came_from.entry(to) {
                    e.insert(f);
                    queue.push_back(to);
                }
            }
        }
        let mut ring = vec![start];
        let mut f = came_from[&start];
        while f != start {
            ring.push(f);
            f = came_from[&f];
        }
        ring.push(start);
        ring.reverse();
        let ring: Vec<&str> = ring.iter().map(|&f| &self.files[f].path[..]).collect();
        let mut text = format!("  {}\n", ring.join(" -> "));
        for (&(from, to), line) in &self.edges {
            if members.contains(&from) && members.contains(&to) {
                let (user, used) = (&self.files[from].path, &self.files[to].path);
                text += &format!("    {user}:{line} uses {used}\n");
            }
        }
        text
    }
}

/// The module a file is, from its path under `src/`.
fn module_of(path: &str) -> Vec<String> {
    let rel = path.strip_prefix("src/").unwrap_or(path);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    if parts == ["lib"] || parts == ["main"] || parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// A word or a punctuation mark, with its line.
#[derive(Debug)]
struct Tok {
    text: String,
    line: usize,
}

fn is_word(t: Option<&Tok>) -> bool {
    t.is_some_and(|t| {
        t.text
            .starts_with(|c: char| c == '_' || c.is_ascii_alphabetic())
    })
}

fn text(t: Option<&Tok>) -> &str {
    t.map_or("", |t| &t.text)
}

/// Splits Rust source into words, `::` and single punctuation marks, leaving out
/// comments and literals (a lifetime leaves its name, which is harmless).
fn tokens(src: &str) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Moves on to `to`, counting the lines passed.
    let advance = |from: usize, to: usize, line: &mut usize| {
        *line += b[from..to.min(b.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
        to
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            let (mut depth, mut j) = (0, i);
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = advance(i, j, &mut line);
        } else if c == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            string_path(&src[i + 1..j.min(b.len())], line, &mut out);
            i = advance(i, j + 1, &mut line);
        } else if c == b'\'' {
            // A char literal, or a lifetime or label (left as the word after the quote).
            if next == Some(b'\\') {
                let mut j = i + 3;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                i = j + 1;
            } else {
                let width = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                i += if b.get(i + 1 + width) == Some(&b'\'') {
                    2 + width
                } else {
                    1
                };
            }
        } else if c == b'_' || c.is_ascii_alphabetic() {
            let mut j = i;
            while j < b.len() && (b[j] == b'_' || b[j].is_ascii_alphanumeric()) {
                j += 1;
            }
            let word = &src[i..j];
            let after = b.get(j).copied();
            let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
            let open = j + hashes; // the opening quote of a raw string
            if matches!(word, "r" | "br" | "cr") && b.get(open) == Some(&b'"') {
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let end = (open + 1..b.len())
                    .find(|&k| b[k..].starts_with(&close))
                    .unwrap_or(b.len());
                string_path(&src[open + 1..end], line, &mut out);
                i = advance(i, end + close.len(), &mut line);
            } else if matches!(word, "b" | "c") && matches!(after, Some(b'"' | b'\'')) {
                i = j; // the literal follows
            } else {
                out.push(Tok {
                    text: word.to_owned(),
                    line,
                });
                i = j;
            }
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                i += 1;
            }
        } else if c == b':' && next == Some(b':') {
            out.push(Tok {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            if c == b'\n' {
                line += 1;
            } else if c.is_ascii_punctuation() {
                out.push(Tok {
                    text: (c as char).to_string(),
                    line,
                });
            }
            i += 1;
        }
    }
    out
}

/// A string that holds nothing but a `crate::`, `super::` or `self::` path names code
/// (serde's `with = "..."`, for one): it is read as that path.
fn string_path(s: &str, line: usize, out: &mut Vec<Tok>) {
    let words: Vec<&str> = s.split("::").collect();
    let is_word = |w: &str| {
        w.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic())
            && w.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
    };
    if words.len() < 2
        || !matches!(words[0], "crate" | "super" | "self")
        || !words.iter().all(|w| is_word(w))
    {
        return;
    }
    for (k, w) in words.iter().enumerate() {
        if k > 0 {
            out.push(Tok {
                text: "::".into(),
                line,
            });
        }
        out.push(Tok {
            text: (*w).to_owned(),
            line,
        });
    }
}

/// Reads the `mod` lines, paths and imports of a file that is module `module`.
fn scan(module: &[String], t: &[Tok]) -> Scan {
    let mut s = Scan::default();
    // Inline modules (`mod tests { ... }`) open, with the brace depth inside each.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut pending: Option<String> = None;
    let mut depth: usize = 0;
    let scope = |inline: &[(String, usize)]| -> Vec<String> {
        module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(name, _)| name.clone()))
            .collect()
    };
    let mut i = 0;
    while i < t.len() {
        let word = &t[i].text[..];
        let line = t[i].line;
        match word {
            "{" => {
                depth += 1;
                if let Some(name) = pending.take() {
                    inline.push((name, depth));
                }
            }
            "}" => {
                if inline.last().is_some_and(|&(_, d)| d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if is_word(t.get(i + 1)) => {
                let name = t[i + 1].text.clone();
                match text(t.get(i + 2)) {
                    ";" => s.mods.push((scope(&inline), name, line)),
                    "{" => pending = Some(name),
                    _ => {}
                }
                i += 1;
            }
            "use" => {
                let here = scope(&inline);
                let mut found = Vec::new();
                i = use_tree(t, i + 1, Vec::new(), &mut found);
                for (raw, name, line) in found {
                    let Some(path) = absolute(&here, &raw, true) else {
                        continue;
                    };
                    if let Some(name) = name {
                        s.imports.insert((here.clone(), name), path.clone());
                    }
                    s.paths.push((path, line));
                }
                continue;
            }
            "crate" | "super" | "self"
                if text(t.get(i + 1)) == "::" && (i == 0 || t[i - 1].text != "::") =>
            {
                let mut raw = vec![word.to_owned()];
                let mut j = i + 1;
                while text(t.get(j)) == "::" && is_word(t.get(j + 1)) {
                    raw.push(t[j + 1].text.clone());
                    j += 2;
                }
                if let Some(path) = absolute(&scope(&inline), &raw, false) {
                    s.paths.push((path, line));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    s
}

/// Reads the use tree at `t[i..]` under `prefix`, adding each path it names with the
/// name it binds (none for a glob); returns the index just after the tree.
fn use_tree(
    t: &[Tok],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>, usize)>,
) -> usize {
    let line = t.get(i).map_or(0, |t| t.line);
    loop {
        match text(t.get(i)) {
            "::" => i += 1,
            "{" => {
                i += 1;
                while !matches!(text(t.get(i)), "}" | "") {
                    let before = i;
                    i = use_tree(t, i, prefix.clone(), out);
                    if text(t.get(i)) == "," {
                        i += 1;
                    }
                    if i == before {
                        break; // not a use tree after all
                    }
                }
                return i + 1;
            }
            "*" => {
                out.push((prefix, None, line));
                return i + 1;
            }
            _ if is_word(t.get(i)) => {
                prefix.push(t[i].text.clone());
                i += 1;
                if text(t.get(i)) != "::" {
                    break;
                }
            }
            _ => break,
        }
    }
    let mut name = prefix.iter().rev().find(|w| *w != "self").cloned();
    if text(t.get(i)) == "as" && is_word(t.get(i + 1)) {
        name = Some(t[i + 1].text.clone());
        i += 2;
    }
    out.push((prefix, name, line));
    i
}

/// The absolute module path of `raw` written in module `scope`. In a `use`, a path that
/// starts with a plain name is relative to the scope (a crate's name lands in the file
/// itself, which is no edge); elsewhere only `crate`, `super` and `self` paths count.
fn absolute(scope: &[String], raw: &[String], in_use: bool) -> Option<Vec<String>> {
    let mut path = match raw.first()?.as_str() {
        "crate" => Vec::new(),
        "super" | "self" => scope.to_vec(),
        _ if in_use => scope.to_vec(),
        _ => return None,
    };
    if raw[0] == "super" {
        path.pop();
    }
    let skip = usize::from(matches!(raw[0].as_str(), "crate" | "super" | "self"));
    for w in &raw[skip..] {
        match w.as_str() {
            "super" => {
                path.pop();
            }
            "self" => {}
            _ => path.push(w.clone()),
        }
    }
    Some(path)
}
