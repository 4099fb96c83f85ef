//! The runtime's modules import one way: each `crate::` path in `blocking-first-runtime/src`
//! names a module of the same layer or a lower one, as drawn in `DEVELOPMENT.md` ("Layers of the
//! runtime"), and no modules import each other in a circle. The diagram is the only table: a
//! module missing from it, or listed but gone, fails here too.
//!
//! What counts: `use crate::..` trees and `crate::x` paths anywhere in the code, and `super::`
//! paths that climb to the crate's root. What does not: comments (doc comments and their links
//! included), string literals, and items under `#[cfg(test)]` (the unit tests and the loom
//! models may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers as `DEVELOPMENT.md` draws them: module -> layer number (0 at the bottom).
fn layers() -> BTreeMap<String, usize> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../DEVELOPMENT.md");
    let text = fs::read_to_string(&path).expect("DEVELOPMENT.md");
    let section = text
        .split("\n## Layers of the runtime")
        .nth(1)
        .expect("DEVELOPMENT.md has a section \"## Layers of the runtime\"");
    let diagram = section
        .split("```text\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section draws the layers in a ```text block");
    let mut layers = BTreeMap::new();
    let mut numbers = Vec::new();
    for line in diagram.lines() {
        // `N name | module module .. | what goes there`
        let mut columns = line.split('|');
        let (Some(head), Some(modules)) = (columns.next(), columns.next()) else {
            continue;
        };
        let Some(Ok(number)) = head.split_whitespace().next().map(str::parse::<usize>) else {
            continue;
        };
        numbers.push(number);
        for module in modules.split_whitespace() {
            let module = module.trim_matches(',').to_owned();
            assert!(
                layers.insert(module.clone(), number).is_none(),
                "`{module}` is in two layers of the diagram"
            );
        }
    }
    let expected: Vec<usize> = (0..numbers.len()).rev().collect();
    assert_eq!(
        numbers, expected,
        "the diagram lists its layers top first, numbered down to 0"
    );
    layers
}

/// A source file and the top-level module it belongs to.
struct File {
    path: PathBuf,
    /// The module path inside the crate (`["exec", "looping"]`).
    module: Vec<String>,
}

/// Every file of the crate reached by `mod` declarations from `lib.rs` (following
/// `#[path]`), except those declared under `#[cfg(test)]`.
fn files(src: &Path) -> Vec<File> {
    let mut files = Vec::new();
    let mut todo = vec![File {
        path: src.join("lib.rs"),
        module: Vec::new(),
    }];
    while let Some(file) = todo.pop() {
        let code = code_of(&fs::read_to_string(&file.path).expect("a source file"));
        let dir = file.path.parent().expect("in a directory").to_owned();
        let stem = file.path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        // Where `mod x;` looks without `#[path]`: beside `lib.rs`/`mod.rs`, else in a folder
        // named after the file.
        let children_dir = if file.module.is_empty() || stem == "mod" {
            dir.clone()
        } else {
            dir.join(stem)
        };
        for (name, path_attr) in module_declarations(&code) {
            let path = match path_attr {
                Some(relative) => dir.join(relative),
                None => {
                    let flat = children_dir.join(format!("{name}.rs"));
                    if flat.exists() {
                        flat
                    } else {
                        children_dir.join(&name).join("mod.rs")
                    }
                }
            };
            let mut module = file.module.clone();
            module.push(name);
            todo.push(File { path, module });
        }
        files.push(file);
    }
    files
}

/// `mod name;` declarations (not inline modules) and their `#[path]`, if any.
fn module_declarations(code: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let mut item_start = 0;
    for (at, c) in code.char_indices() {
        if c != ';' && c != '}' && c != '{' {
            continue;
        }
        // One item (or statement): its attributes, visibility and `mod name`.
        let item = code[item_start..at].trim();
        item_start = at + 1;
        if c != ';' {
            continue;
        }
        let words: Vec<&str> = item.split_whitespace().collect();
        let [.., keyword, name] = words[..] else {
            continue;
        };
        if keyword != "mod" {
            continue;
        }
        let path = item
            .split_once("#[path = \"")
            .and_then(|(_, rest)| rest.split('"').next())
            .map(str::to_owned);
        found.push((name.to_owned(), path));
    }
    found
}

/// The code without comments, without items under `#[cfg(test)]`, and with every string literal
/// emptied except `#[path = ".."]`'s.
fn code_of(source: &str) -> String {
    let stripped = strip_comments_and_strings(source);
    strip_test_items(&stripped)
}

fn strip_comments_and_strings(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut at = 0;
    while at < chars.len() {
        let rest = &chars[at..];
        if rest.starts_with(&['/', '/']) {
            while at < chars.len() && chars[at] != '\n' {
                at += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            let mut depth = 0;
            while at < chars.len() {
                if chars[at..].starts_with(&['/', '*']) {
                    depth += 1;
                    at += 2;
                } else if chars[at..].starts_with(&['*', '/']) {
                    depth -= 1;
                    at += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    at += 1;
                }
            }
            out.push(' ');
        } else if rest[0] == 'r'
            && (rest.get(1) == Some(&'"') || rest.get(1) == Some(&'#'))
            && (at == 0 || !(chars[at - 1].is_alphanumeric() || chars[at - 1] == '_'))
        {
            // a raw string: r"..", r#".."#
            let hashes = rest[1..].iter().take_while(|c| **c == '#').count();
            if rest.get(1 + hashes) != Some(&'"') {
                out.push(rest[0]);
                at += 1;
                continue;
            }
            at += 2 + hashes;
            loop {
                if at >= chars.len() {
                    break;
                }
                if chars[at] == '"'
                    && chars[at + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|c| **c == '#')
                        .count()
                        == hashes
                {
                    at += 1 + hashes;
                    break;
                }
                at += 1;
            }
            out.push_str("\"\"");
        } else if rest[0] == '"' {
            let keep = out.trim_end().ends_with("#[path =");
            let start = at;
            at += 1;
            while at < chars.len() && chars[at] != '"' {
                at += if chars[at] == '\\' { 2 } else { 1 };
            }
            at += 1;
            if keep {
                out.extend(&chars[start..at.min(chars.len())]);
            } else {
                out.push_str("\"\"");
            }
        } else if rest[0] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('static).
            if rest.get(1) == Some(&'\\') {
                at += 2;
                while at < chars.len() && chars[at] != '\'' {
                    at += 1;
                }
                at += 1;
                out.push_str("' '");
            } else if rest.get(2) == Some(&'\'') {
                at += 3;
                out.push_str("' '");
            } else {
                out.push('\'');
                at += 1;
            }
        } else {
            out.push(rest[0]);
            at += 1;
        }
    }
    out
}

/// Removes each item preceded by `#[cfg(test)]` or `#[cfg(all(test, ..))]`.
fn strip_test_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    loop {
        let next = ["#[cfg(test)]", "#[cfg(all(test"]
            .iter()
            .filter_map(|pattern| rest.find(pattern))
            .min();
        let Some(start) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        // The attribute's end, then the item: to its `;` or its matching `}`.
        let attribute_end = rest.find(']').expect("an attribute ends") + 1;
        let mut depth = 0;
        let mut end = rest.len();
        for (at, c) in rest[attribute_end..].char_indices() {
            match c {
                '[' | '(' if depth == 0 && rest[attribute_end..][..at].trim().is_empty() => {}
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = attribute_end + at + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = attribute_end + at + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
}

/// The top-level modules a file's code names: `crate::x` (and `use crate::{x, y::z}`), and
/// `super::` paths that climb to the root.
fn references(code: &str, module: &[String], root_items: &BTreeMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    let name_at = |name: &str, found: &mut Vec<String>| {
        let name = name.trim();
        if name.is_empty() || name == "self" {
            return;
        }
        let top = root_items
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned());
        found.push(top);
    };
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c == '$' || c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first name of each top-level entry
            let end = matching_brace(group);
            for entry in split_top_level(&group[..end]) {
                let first = entry.trim().split("::").next().unwrap_or("");
                name_at(
                    first.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_')),
                    &mut found,
                );
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            name_at(&name, &mut found);
        }
    }
    // `super::super::x` from `a::b::c` climbs to the root when it climbs `module.len()` times.
    let climb = "super::".repeat(module.len());
    if !module.is_empty() {
        for (at, _) in code.match_indices(&climb) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c == ':' || c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[at + climb.len()..];
            if rest.starts_with("super::") {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            name_at(&name, &mut found);
        }
    }
    found
}

fn matching_brace(group: &str) -> usize {
    let mut depth = 0;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return at,
            '}' => depth -= 1,
            _ => {}
        }
    }
    group.len()
}

fn split_top_level(list: &str) -> Vec<&str> {
    let mut entries = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (at, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                entries.push(&list[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    entries.push(&list[start..]);
    entries
}

/// The names `lib.rs` re-exports at the root (`pub use stats::{Stats, ..}`), to the module they
/// come from.
fn root_items(lib: &str) -> BTreeMap<String, String> {
    let mut items = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_start_matches("crate::");
        let Some((module, names)) = path.split_once("::") else {
            continue;
        };
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.split(" as ").last().unwrap_or(name).trim();
            if !name.is_empty() {
                items.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    items
}

/// Every reference between different top-level modules: (from, to) -> files.
fn module_graph() -> BTreeMap<(String, String), BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../blocking-first-runtime/src");
    let lib = code_of(&fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    let root = root_items(&lib);
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in files(&src) {
        let Some(top) = file.module.first() else {
            continue;
        };
        let code = code_of(&fs::read_to_string(&file.path).expect("a source file"));
        for to in references(&code, &file.module, &root) {
            if &to != top {
                let shown = file.path.strip_prefix(&src).unwrap_or(&file.path);
                edges
                    .entry((top.clone(), to))
                    .or_default()
                    .insert(shown.display().to_string());
            }
        }
    }
    edges
}

/// The top-level modules `lib.rs` declares (outside `#[cfg(test)]`).
fn top_modules() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../blocking-first-runtime/src");
    let lib = code_of(&fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    module_declarations(&lib)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn the_diagram_lists_every_module_of_the_runtime_once() {
    let layers = layers();
    let listed: BTreeSet<String> = layers.keys().cloned().collect();
    let declared = top_modules();
    assert_eq!(
        listed, declared,
        "DEVELOPMENT.md's layers must list exactly the runtime's top-level modules"
    );
}

#[test]
fn imports_point_down_the_layers() {
    let layers = layers();
    let mut upward = Vec::new();
    for ((from, to), files) in module_graph() {
        let (Some(from_layer), Some(to_layer)) = (layers.get(&from), layers.get(&to)) else {
            upward.push(format!(
                "{from} -> {to}: not in DEVELOPMENT.md's layers ({files:?})"
            ));
            continue;
        };
        if to_layer > from_layer {
            upward.push(format!(
                "{from} (layer {from_layer}) -> {to} (layer {to_layer}), in {files:?}"
            ));
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up the layers of DEVELOPMENT.md (move the code, or reach the upper \
         layer through a hook it passes down):\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let graph = module_graph();
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in graph.keys() {
        next.entry(from).or_default().push(to);
    }
    // A depth-first search from every module; a module met again on the current path closes a
    // circle.
    fn visit<'a>(
        at: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(start) = path.iter().position(|m| *m == at) {
            let mut circle = path[start..].to_vec();
            circle.push(at);
            return Some(circle);
        }
        if !done.insert(at) {
            return None;
        }
        path.push(at);
        for to in next.get(at).into_iter().flatten() {
            if let Some(circle) = visit(to, next, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for from in next.keys() {
        if let Some(circle) = visit(from, &next, &mut Vec::new(), &mut done) {
            panic!("modules that import each other: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn the_reader_sees_what_the_compiler_sees() {
    // The parser on small cases: comments, strings and test items do not count; use trees and
    // `super::` to the root do.
    let code = code_of(
        "use crate::{a, b::{c, d}, e::f};\n\
         // crate::commented\n\
         /// [`x`](crate::doc_link)\n\
         let s = \"crate::in_a_string\";\n\
         let c = '\"'; let t: &'static str = crate::g::h();\n\
         #[cfg(test)]\nmod tests { use crate::tested; }\n\
         #[cfg(all(test, loom))]\nmod loom;\n\
         fn f() { super::super::i::j(); super::k(); }",
    );
    let module = ["m".to_owned(), "n".to_owned()];
    let found = references(&code, &module, &BTreeMap::new());
    assert_eq!(found, ["a", "b", "e", "g", "i"]);
    assert!(module_declarations(&code).is_empty());
    let declared = module_declarations(&code_of("#[path = \"x.rs\"]\npub mod y;\nmod z;"));
    assert_eq!(
        declared,
        [
            ("y".to_owned(), Some("x.rs".to_owned())),
            ("z".to_owned(), None)
        ]
    );
}
