//! The shape of the code, checked: the modules of each crate form a stack
//! (no import circle among the top-level modules, nor among the files of any
//! folder), and no source file grows past a size one can read in one sitting.
//!
//! The import graph comes from a small tokenizer, not from rustc: it reads
//! every `use crate::…`, `use super::…` and `use self::…` tree (groups and
//! multi-line lists included) and every inline `crate::…`/`super::…` path,
//! skipping comments, string and char literals, and `#[cfg(test)]` modules
//! (test code may reach anywhere; the layering is about what ships).
//! Relative paths without `crate`/`super`/`self` can only name a child module
//! or another crate, so they never leave the importing module and are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Longest a source file may be before its first `#[cfg(test)]` module.
const MAX_LINES: usize = 400;

/// Files allowed over [`MAX_LINES`], with their count when allowed: they may
/// shrink but not grow. Empty: every file is within the limit.
const OVER_LONG_TODAY: &[(&str, usize)] = &[];

/// The crates whose module graphs must be acyclic: (source root, root files
/// that are not modules of their own).
const CRATES: &[(&str, &[&str])] = &[
    ("src", &["lib.rs", "main.rs"]),
    ("protocol/src", &["lib.rs"]),
];

#[test]
fn top_level_modules_and_the_files_of_each_folder_form_no_circle() {
    let mut failures = Vec::new();
    for (root, crate_roots) in CRATES {
        let files = source_files(&repo().join(root));
        let modules: Vec<Module> = files
            .iter()
            .filter_map(|file| Module::read(&repo().join(root), file, crate_roots))
            .collect();
        for (folder, graph) in graphs(&modules) {
            for cycle in circles(&graph) {
                failures.push(describe_cycle(root, &folder, &cycle, &graph));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "import circles:\n\n{}",
        failures.join("\n")
    );
}

#[test]
fn no_source_file_is_over_the_line_limit() {
    let mut counts = Vec::new();
    for (root, _) in CRATES {
        for file in source_files(&repo().join(root)) {
            let text = fs::read_to_string(&file).expect("source file readable");
            let relative = file
                .strip_prefix(repo())
                .expect("under the repository")
                .to_string_lossy()
                .replace('\\', "/");
            counts.push((relative, non_test_lines(&text)));
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("non-test lines per file (limit {MAX_LINES}):");
    for (file, lines) in counts.iter().take(15) {
        println!("{lines:>6}  {file}");
    }

    let allowed: BTreeMap<&str, usize> = OVER_LONG_TODAY.iter().copied().collect();
    let mut problems = Vec::new();
    for (file, lines) in &counts {
        match allowed.get(file.as_str()) {
            Some(&today) if *lines > today => problems.push(format!(
                "{file}: {lines} lines, grew past its allowance of {today}: split it"
            )),
            Some(_) if *lines <= MAX_LINES => problems.push(format!(
                "{file}: {lines} lines, now within {MAX_LINES}: remove it from OVER_LONG_TODAY"
            )),
            Some(_) => {}
            None if *lines > MAX_LINES => problems.push(format!(
                "{file}: {lines} lines, over the limit of {MAX_LINES}: split it"
            )),
            None => {}
        }
    }
    for (file, _) in OVER_LONG_TODAY {
        if !counts.iter().any(|(name, _)| name == file) {
            problems.push(format!("{file}: gone: remove it from OVER_LONG_TODAY"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_broker_and_the_codec_forbid_unsafe_code() {
    for root in ["src/lib.rs", "src/main.rs", "protocol/src/lib.rs"] {
        let text = fs::read_to_string(repo().join(root)).expect("crate root readable");
        assert!(
            text.lines()
                .any(|line| line.trim() == "#![forbid(unsafe_code)]"),
            "{root} must keep #![forbid(unsafe_code)]"
        );
    }
}

/// Lines before the first `#[cfg(test)]` (the test module comes last).
fn non_test_lines(text: &str) -> usize {
    text.lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .count()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted.
fn source_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("source folder readable") {
            let path = entry.expect("folder entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// One source file: its module path and the absolute module paths it names.
struct Module {
    /// `src/router/queues.rs` is `["router", "queues"]`; `mod.rs` is its folder.
    path: Vec<String>,
    /// The file, relative to the repository, for messages.
    file: String,
    /// Each crate-absolute path it names, with the line that names it.
    references: Vec<(Vec<String>, usize, String)>,
}

impl Module {
    fn read(root: &Path, file: &Path, crate_roots: &[&str]) -> Option<Module> {
        let relative = file.strip_prefix(root).expect("under the source root");
        let mut path: Vec<String> = relative
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect();
        let name = path.pop().expect("a file name");
        if path.is_empty() && crate_roots.contains(&name.as_str()) {
            return None;
        }
        // A file that is a folder's module (`mod.rs`) is the folder itself.
        let is_folder_module = name == "mod.rs";
        if !is_folder_module {
            path.push(name.trim_end_matches(".rs").to_string());
        }
        let text = fs::read_to_string(file).expect("source file readable");
        let lines: Vec<&str> = text.lines().collect();
        let references = crate_paths(&tokens(&text))
            .into_iter()
            .filter_map(|(relative_path, line)| {
                let absolute = resolve(&path, &relative_path)?;
                let text = lines.get(line - 1).map_or("", |l| l.trim()).to_string();
                Some((absolute, line, text))
            })
            .collect();
        Some(Module {
            path,
            file: file
                .strip_prefix(repo())
                .expect("under the repository")
                .to_string_lossy()
                .replace('\\', "/"),
            references,
        })
    }
}

/// A path as written (`crate::a::b`, `super::c`, `self::d`) made absolute
/// from the module that wrote it; `None` for any other root.
fn resolve(module: &[String], written: &[String]) -> Option<Vec<String>> {
    let mut parts = written.iter().peekable();
    let mut absolute: Vec<String> = match parts.peek().map(|s| s.as_str()) {
        Some("crate") => {
            parts.next();
            Vec::new()
        }
        Some("self") => {
            parts.next();
            module.to_vec()
        }
        Some("super") => module.to_vec(),
        _ => return None,
    };
    while parts.peek().is_some_and(|part| part.as_str() == "super") {
        parts.next();
        absolute.pop()?;
    }
    absolute.extend(parts.cloned());
    Some(absolute)
}

/// An edge's evidence: the file and line of each import behind it.
type Evidence = Vec<String>;

/// For every folder (the source root is `[]`), the graph among its child
/// modules: an edge A → B when a file in A names something in B.
fn graphs(modules: &[Module]) -> BTreeMap<Vec<String>, Graph> {
    let mut graphs: BTreeMap<Vec<String>, Graph> = BTreeMap::new();
    // Folders: the root, and every module path with something below it.
    let mut folders: BTreeSet<Vec<String>> = BTreeSet::new();
    folders.insert(Vec::new());
    for module in modules {
        for depth in 1..module.path.len() {
            folders.insert(module.path[..depth].to_vec());
        }
    }
    for folder in &folders {
        // The folder's children that are files or folders of their own (not
        // its `mod.rs`, which is the folder itself).
        let children: BTreeSet<&String> = modules
            .iter()
            .filter(|m| m.path.len() > folder.len() && m.path.starts_with(folder))
            .map(|m| &m.path[folder.len()])
            .collect();
        let graph = graphs.entry(folder.clone()).or_default();
        for child in &children {
            graph.entry((*child).clone()).or_default();
        }
        for module in modules {
            if module.path.len() <= folder.len() || !module.path.starts_with(folder) {
                continue;
            }
            let from = &module.path[folder.len()];
            for (target, line, text) in &module.references {
                if target.len() <= folder.len() || !target.starts_with(folder) {
                    continue;
                }
                let to = &target[folder.len()];
                if to == from || !children.contains(to) {
                    continue;
                }
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to.clone())
                    .or_default()
                    .push(format!("{}:{line}: {text}", module.file));
            }
        }
    }
    graphs
}

/// A graph among sibling modules: each node's edges, with their evidence.
type Graph = BTreeMap<String, BTreeMap<String, Evidence>>;

/// The modules `from` reaches by following edges (itself included).
fn reachable<'a>(graph: &'a Graph, from: &'a String) -> BTreeSet<&'a String> {
    let mut seen = BTreeSet::from([from]);
    let mut pending = vec![from];
    while let Some(node) = pending.pop() {
        for next in graph.get(node).into_iter().flat_map(|edges| edges.keys()) {
            if seen.insert(next) {
                pending.push(next);
            }
        }
    }
    seen
}

/// One shortest circle per knot (strongly connected set of two or more
/// modules), as its nodes in order: the shortest shows the import to undo.
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    let reach: BTreeMap<&String, BTreeSet<&String>> = graph
        .keys()
        .map(|node| (node, reachable(graph, node)))
        .collect();
    let mut placed: BTreeSet<&String> = BTreeSet::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if placed.contains(node) {
            continue;
        }
        let knot: BTreeSet<&String> = reach[node]
            .iter()
            .filter(|other| reach[*other].contains(node))
            .copied()
            .collect();
        placed.extend(knot.iter().copied());
        if knot.len() < 2 {
            continue;
        }
        let shortest = knot
            .iter()
            .filter_map(|start| shortest_way_back(graph, &knot, start))
            .min_by_key(|cycle| cycle.len());
        found.extend(shortest);
    }
    found
}

/// The shortest path from `start` back to itself within `knot` (breadth
/// first), as the nodes from `start` on.
fn shortest_way_back(
    graph: &Graph,
    knot: &BTreeSet<&String>,
    start: &String,
) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
    let mut frontier = std::collections::VecDeque::from([start]);
    while let Some(node) = frontier.pop_front() {
        for next in graph[node].keys() {
            if !knot.contains(next) {
                continue;
            }
            if next == start {
                let mut cycle = vec![node.clone()];
                let mut at = node;
                while at != start {
                    at = came_from[at];
                    cycle.push(at.clone());
                }
                cycle.reverse();
                return Some(cycle);
            }
            if !came_from.contains_key(next) {
                came_from.insert(next, node);
                frontier.push_back(next);
            }
        }
    }
    None
}

fn describe_cycle(root: &str, folder: &[String], cycle: &[String], graph: &Graph) -> String {
    let place = if folder.is_empty() {
        format!("{root}/ (top-level modules)")
    } else {
        format!("{root}/{}/", folder.join("/"))
    };
    let mut text = format!("in {place}: {} -> {}\n", cycle.join(" -> "), cycle[0]);
    for (i, from) in cycle.iter().enumerate() {
        let to = &cycle[(i + 1) % cycle.len()];
        text.push_str(&format!("  {from} -> {to}:\n"));
        let mut lines: Vec<&String> = graph[from][to].iter().collect();
        lines.dedup();
        for line in lines.iter().take(4) {
            text.push_str(&format!("    {line}\n"));
        }
        if lines.len() > 4 {
            text.push_str(&format!("    … and {} more\n", lines.len() - 4));
        }
    }
    text
}

/// A token of Rust source that matters here, with its line (1-based).
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// `::`
    PathSep,
    /// Any other punctuation character.
    Punct(char),
}

/// Splits source into identifiers, `::` and punctuation, dropping comments
/// and literals, and dropping every `#[cfg(test)]` item.
fn tokens(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if i >= chars.len() {
                    break;
                } else if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == 'r'
            && (at(i + 1) == '"' || (at(i + 1) == '#' && matches!(at(i + 2), '"' | '#')))
        {
            // Raw string: r"…", r#"…"#, …
            let mut hashes = 0;
            i += 1;
            while at(i) == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                    i += 1 + hashes;
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if at(i) == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // Byte strings and byte chars: b"…", b'…' (the literal follows).
            if word != "b" || !matches!(at(i), '"' | '\'') {
                out.push((Token::Ident(word), line));
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push((Token::PathSep, line));
            i += 2;
        } else {
            out.push((Token::Punct(c), line));
            i += 1;
        }
    }
    drop_test_items(out)
}

/// Removes `#[cfg(test)]` and the item after it (up to its closing brace or
/// semicolon).
fn drop_test_items(tokens: Vec<(Token, usize)>) -> Vec<(Token, usize)> {
    let cfg_test: Vec<Token> = ["#", "[", "cfg", "(", "test", ")", "]"]
        .iter()
        .map(|s| match *s {
            "cfg" | "test" => Token::Ident(s.to_string()),
            _ => Token::Punct(s.chars().next().expect("one char")),
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let is_cfg_test = tokens.len() - i >= cfg_test.len()
            && tokens[i..i + cfg_test.len()]
                .iter()
                .zip(&cfg_test)
                .all(|((token, _), want)| token == want);
        if !is_cfg_test {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        i += cfg_test.len();
        let mut depth = 0;
        while i < tokens.len() {
            match tokens[i].0 {
                Token::Punct('{') => depth += 1,
                Token::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                Token::Punct(';') if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

/// Every path rooted at `crate`, `super` or `self` that the tokens name:
/// the leaves of each `use` tree, and each inline path. Each with its line.
fn crate_paths(tokens: &[(Token, usize)]) -> Vec<(Vec<String>, usize)> {
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].0 == Token::Ident("use".into()) {
            // A use tree runs to its `;`.
            let end = tokens[i..]
                .iter()
                .position(|(t, _)| *t == Token::Punct(';'))
                .map_or(tokens.len(), |n| i + n);
            let mut leaves = Vec::new();
            let mut at = i + 1;
            use_tree(&tokens[..end], &mut at, &mut Vec::new(), &mut leaves);
            paths.extend(leaves);
            i = end;
            continue;
        }
        let starts_path = matches!(&tokens[i].0, Token::Ident(w) if w == "crate" || w == "super")
            && tokens.get(i + 1).is_some_and(|(t, _)| *t == Token::PathSep)
            && (i == 0 || tokens[i - 1].0 != Token::PathSep);
        if starts_path {
            let line = tokens[i].1;
            let mut path = Vec::new();
            while let Some((Token::Ident(word), _)) = tokens.get(i) {
                path.push(word.clone());
                if tokens.get(i + 1).is_some_and(|(t, _)| *t == Token::PathSep) {
                    i += 2;
                } else {
                    i += 1;
                    break;
                }
            }
            paths.push((path, line));
            continue;
        }
        i += 1;
    }
    paths
}

/// Reads one use tree (`a::b`, `a::{b, c::d}`, `a::*`, `a as b`) from
/// `tokens[*at..]`, appending each complete path after `prefix` to `leaves`.
fn use_tree(
    tokens: &[(Token, usize)],
    at: &mut usize,
    prefix: &mut Vec<String>,
    leaves: &mut Vec<(Vec<String>, usize)>,
) {
    let depth = prefix.len();
    let mut line = tokens.get(*at).map_or(0, |(_, l)| *l);
    // A leading `::` (`use ::std::x`) names an external crate: no segment.
    loop {
        match tokens.get(*at) {
            Some((Token::Ident(word), l)) if word != "as" => {
                line = *l;
                prefix.push(word.clone());
                *at += 1;
                if tokens.get(*at).is_some_and(|(t, _)| *t == Token::PathSep) {
                    *at += 1;
                    continue;
                }
                leaves.push((prefix.clone(), line));
                break;
            }
            Some((Token::Punct('*'), l)) => {
                leaves.push((prefix.clone(), *l));
                *at += 1;
                break;
            }
            Some((Token::Punct('{'), _)) => {
                *at += 1;
                loop {
                    match tokens.get(*at) {
                        None => break,
                        Some((Token::Punct('}'), _)) => {
                            *at += 1;
                            break;
                        }
                        Some((Token::Punct(','), _)) => *at += 1,
                        Some(_) => use_tree(tokens, at, prefix, leaves),
                    }
                }
                break;
            }
            Some((Token::PathSep, _)) => *at += 1,
            _ => {
                if prefix.len() > depth {
                    leaves.push((prefix.clone(), line));
                }
                break;
            }
        }
    }
    // `x as y`: the rename does not change what is imported.
    if tokens
        .get(*at)
        .is_some_and(|(t, _)| *t == Token::Ident("as".into()))
    {
        *at += 2;
    }
    prefix.truncate(depth);
}

#[test]
fn the_parser_reads_groups_renames_and_inline_paths() {
    let source = r#"
        use crate::{a, b::c as d, e::{f, g::*}};
        use super::h;
        pub(crate) use self::i::J;
        use std::collections::HashMap; // crate::not_this
        /* crate::nor_this */ const S: &str = "crate::nor_that";
        fn f() { crate::k::l(); super::super::m::n(); let c = 'x'; }
        #[cfg(test)]
        mod tests { use crate::o; }
    "#;
    let found: Vec<Vec<String>> = crate_paths(&tokens(source))
        .into_iter()
        .filter_map(|(path, _)| resolve(&["p".into(), "q".into()], &path))
        .collect();
    let want: Vec<Vec<String>> = ["a", "b.c", "e.f", "e.g", "p.h", "p.q.i.J", "k.l", "m.n"]
        .iter()
        .map(|s| s.split('.').map(String::from).collect())
        .collect();
    assert_eq!(found, want);
}
