//! No module of `operator/src` depends, through any chain of others, on itself.
//!
//! A module (one file) depends on another when its code outside tests names a path into it:
//! `use crate::drift::check::Observation`, `super::super::context::Context`, or
//! `placement::rivals` for a child module. A path that stops at a folder's `mod.rs` (a
//! re-export there) is a dependency on that `mod.rs`. A module naming one of its own
//! ancestors (`super::Condition` in `api/domain.rs`) is not counted: a folder's files are
//! parts of it, and the folder is where they are reached from. Every other cycle is: two
//! siblings that use each other, or two subsystems (`controller` and `telemetry`).

// A test file: its helpers may stop the test at an unreadable file or a bad pattern.
#![allow(clippy::unwrap_used)]

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// The module path of a source file: `src/a/mod.rs` is `a`, `src/a/b.rs` is `a::b`.
fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Module = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code without comments, and with string and character literals emptied, so that
/// braces and paths are only the code's own.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && !ident(out.chars().last())
        {
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
                    j += hashes + 1;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && char_literal_end(&chars, i).is_some() {
            i = char_literal_end(&chars, i).unwrap_or(i) + 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// Where a character literal that starts at `start` ends (a lifetime is not one).
fn char_literal_end(chars: &[char], start: usize) -> Option<usize> {
    match chars.get(start + 1)? {
        '\\' => (start + 3..chars.len().min(start + 12)).find(|&j| chars[j] == '\''),
        _ => (chars.get(start + 2) == Some(&'\'')).then_some(start + 2),
    }
}

/// `code` without the items marked `#[cfg(test)]`; the names of test-only `mod x;` files.
fn without_tests(code: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut test_modules = vec![];
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let semicolon = item.find(';');
        let brace = item.find('{');
        let end = match (semicolon, brace) {
            (Some(s), b) if b.is_none_or(|b| s < b) => {
                let declared = item[..s].trim();
                if let Some(name) = declared
                    .strip_prefix("pub(crate) mod ")
                    .or_else(|| declared.strip_prefix("pub mod "))
                    .or_else(|| declared.strip_prefix("mod "))
                {
                    test_modules.push(name.trim().to_string());
                }
                s + 1
            }
            (_, Some(b)) => {
                let mut depth = 0;
                let mut end = item.len();
                for (offset, c) in item[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + offset + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            _ => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    (out, test_modules)
}

/// Expands `use` trees (`a::{b, c::{d, self}}`) into plain paths.
fn expand_use(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use(&inner[start..], &base, out);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        let path = path.strip_suffix("::self").unwrap_or(path);
        if path == "self" {
            out.push(prefix.to_string());
        } else {
            out.push(join(prefix, path));
        }
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}::{path}"),
    }
}

/// The module a path (as written in `from`) names: the longest module prefix of it.
fn resolve(path: &str, from: &Module, modules: &BTreeSet<Module>) -> Option<Module> {
    let mut segments = path.split("::").map(str::trim).filter(|s| !s.is_empty());
    let first = segments.next()?;
    // `super` of a folder's mod.rs is the folder's parent; of `a/b.rs`, the folder `a`.
    let mut current: Module = match first {
        "crate" => vec![],
        "self" => from.clone(),
        "super" => parent(from),
        child => {
            let mut m = from.clone();
            m.push(child.to_string());
            if !modules.contains(&m) {
                return None;
            }
            m
        }
    };
    for segment in segments {
        if segment == "super" {
            current = parent(&current);
            continue;
        }
        let mut next = current.clone();
        next.push(segment.to_string());
        if modules.contains(&next) {
            current = next;
        } else {
            break;
        }
    }
    Some(current)
}

fn parent(module: &Module) -> Module {
    let mut p = module.clone();
    p.pop();
    p
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

/// Every module's dependencies on other modules, with the path that makes each.
fn dependencies() -> BTreeMap<Module, BTreeMap<Module, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    files.retain(|f| !f.ends_with("main.rs"));
    let mut code = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let (kept, tests) = without_tests(&code_only(&text));
        for test in tests {
            let mut m = module.clone();
            m.push(test);
            test_only.insert(m);
        }
        code.insert(module, kept);
    }
    // A file declared under `#[cfg(test)]` is test code, and so are its children.
    code.retain(|module, _| !test_only.iter().any(|t| module.starts_with(t)));
    let modules: BTreeSet<Module> = code.keys().cloned().collect();
    let use_item = Regex::new(r"(?s)\buse\s+([^;]+);").unwrap();
    let path = Regex::new(r"\b(?:[A-Za-z_][A-Za-z0-9_]*::)+[A-Za-z_][A-Za-z0-9_]*").unwrap();
    let mut graph = BTreeMap::new();
    for (module, text) in &code {
        let mut paths = vec![];
        for captures in use_item.captures_iter(text) {
            expand_use(&captures[1], "", &mut paths);
        }
        let outside_use = use_item.replace_all(text, "");
        paths.extend(path.find_iter(&outside_use).map(|m| m.as_str().to_string()));
        let edges: &mut BTreeMap<Module, String> = graph.entry(module.clone()).or_default();
        for written in paths {
            let written = written.trim_start_matches("::");
            // Its own ancestors (the crate root among them) are not dependencies.
            if let Some(target) = resolve(written, module, &modules)
                && !module.starts_with(&target)
            {
                edges.entry(target).or_insert_with(|| written.to_string());
            }
        }
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Module, BTreeMap<Module, String>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeMap<Module, String>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a Module) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        state.on_stack.insert(node);
        if let Some(edges) = state.graph.get(node) {
            for next in edges.keys() {
                let Some((next, _)) = state.graph.get_key_value(next) else {
                    continue;
                };
                if !state.index.contains_key(next) {
                    visit(state, next);
                    let low = state.low[next].min(state.low[node]);
                    state.low.insert(node, low);
                } else if state.on_stack.contains(next) {
                    let low = state.index[next].min(state.low[node]);
                    state.low.insert(node, low);
                }
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = vec![];
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(top);
                component.push(top.clone());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on_stack: BTreeSet::new(),
        found: vec![],
    };
    for node in graph.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn no_module_depends_on_itself() {
    let graph = dependencies();
    let found = cycles(&graph);
    let report: Vec<String> = found
        .iter()
        .map(|component| {
            let edges: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|(to, _)| component.contains(to))
                        .map(move |(to, via)| format!("  {} → {} ({via})", name(from), name(to)))
                })
                .collect();
            format!(
                "cycle among {}:\n{}",
                component.iter().map(name).collect::<Vec<_>>().join(", "),
                edges.join("\n")
            )
        })
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// Nor do the subsystems (the top-level modules: `api`, `controller`, `drift`, `net`, …)
/// depend on each other in a circle: `drift` and `net` using each other through
/// different files is a cycle too.
#[test]
fn no_subsystem_depends_on_itself() {
    let mut subsystems: BTreeMap<Module, BTreeMap<Module, String>> = BTreeMap::new();
    for (from, edges) in dependencies() {
        let top = |m: &Module| m.iter().take(1).cloned().collect::<Module>();
        let entry = subsystems.entry(top(&from)).or_default();
        for (to, via) in edges {
            if top(&to) != top(&from) {
                entry
                    .entry(top(&to))
                    .or_insert_with(|| format!("{}: {via}", name(&from)));
            }
        }
    }
    let found = cycles(&subsystems);
    assert!(
        found.is_empty(),
        "{}",
        found
            .iter()
            .map(|component| {
                let edges: Vec<String> = component
                    .iter()
                    .flat_map(|from| {
                        subsystems[from]
                            .iter()
                            .filter(|(to, _)| component.contains(to))
                            .map(move |(to, via)| {
                                format!("  {} → {} ({via})", name(from), name(to))
                            })
                    })
                    .collect();
                edges.join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The check itself finds a cycle, and only a real one.
#[test]
fn the_check_sees_a_cycle() {
    let module = |m: &str| -> Module { m.split("::").map(String::from).collect() };
    let graph = BTreeMap::from([
        (module("a"), BTreeMap::from([(module("b"), "b::x".into())])),
        (module("b"), BTreeMap::from([(module("c"), "c::y".into())])),
        (module("c"), BTreeMap::from([(module("a"), "a::z".into())])),
        (module("d"), BTreeMap::from([(module("a"), "a::z".into())])),
    ]);
    assert_eq!(
        cycles(&graph),
        vec![vec![module("a"), module("b"), module("c")]]
    );
    let mut paths = vec![];
    expand_use(
        "super::{dns::{self, Problem}, Context as C}",
        "",
        &mut paths,
    );
    assert_eq!(
        paths,
        ["super::dns", "super::dns::Problem", "super::Context"]
    );
    assert_eq!(
        code_only("let s = \"crate::x\"; // crate::y\nlet c = '{'; fn f<'a>() {}"),
        "let s = \"\"; \nlet c = ' '; fn f<'a>() {}"
    );
    let (kept, tests) = without_tests(
        "fn a() {}\n#[cfg(test)]\nmod t;\n#[cfg(test)]\nmod tests { fn b() { {} } }\nfn c() {}",
    );
    assert_eq!(tests, ["t"]);
    assert_eq!(kept, "fn a() {}\n\n\nfn c() {}");
}
