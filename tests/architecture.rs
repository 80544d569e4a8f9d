//! The crate's layering, checked from its source: every module's imports
//! (`use crate::…`, `use super::…` and inline `crate::…` paths) point at its
//! own layer or a lower one, and the units of the crate (the top-level
//! modules, and each op family on its own) import each other without a
//! cycle; inside a folder module, the files other than its `mod.rs` import
//! each other without a cycle too. The layers are written down in
//! docs/DESIGN.md ("Layers"); this test holds the code to them. No GPU.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: a unit may import units of its own layer or of
/// those before it. A unit is a top-level module, or `ops::<family>`.
const LAYERS: &[&[&str]] = &[
    &["dtype", "verify"],
    &["error"],
    &["shader"],
    &["context"],
    &["tensor"],
    &[
        "ops",
        "ops::dot",
        "ops::similarity",
        "ops::norm",
        "ops::embedding",
        "ops::pooling",
        "ops::sample",
        "ops::matmul",
        "ops::attention",
        "ops::search",
        "ops::grad",
    ],
    &["models"],
    &["reference"],
    &["validate", ""],
];

/// A file's module path (`ops::attention::plan`; `""` for lib.rs).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut segs: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(segs.last().map(String::as_str), Some("mod" | "lib")) {
        segs.pop();
    }
    segs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments and string/char literals (so that a doc
/// link or a message naming a path is not an import).
fn code_only(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
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
        } else if b[i] == b'"' {
            // A raw string's hashes are not handled: the crate has none that
            // hold a path.
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('x', '\n'); a lifetime ('a) has no closing quote.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Every path a `use` tree names, expanded (`a::{b, c::d}` → `a::b`, `a::c::d`).
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn go(prefix: &str, t: &str, out: &mut Vec<String>) {
        match t.find('{') {
            None => out.push(format!("{prefix}{t}")),
            Some(open) => {
                let head = &t[..open];
                let inner = &t[open + 1..t.len() - 1];
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            go(&format!("{prefix}{head}"), &inner[start..i], out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                if start < inner.len() {
                    go(&format!("{prefix}{head}"), &inner[start..], out);
                }
            }
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

/// The module paths this file's code names, resolved to absolute segments.
/// The inline modules (`mod tests { … }`) enclosing byte `at` of `code`.
fn inline_mods(code: &str, at: usize) -> Vec<String> {
    let mut open: Vec<(Option<String>, usize)> = Vec::new();
    let b = code.as_bytes();
    let mut pending: Option<String> = None;
    let mut i = 0;
    while i < at {
        match b[i] {
            b'{' => {
                open.push((pending.take(), i));
            }
            b'}' => {
                open.pop();
            }
            b';' => pending = None,
            b'm' if code[i..].starts_with("mod ")
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let name: String = code[i + 4..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let after = code[i + 4 + name.len()..].trim_start();
                if after.starts_with('{') {
                    pending = Some(name);
                }
            }
            _ => {}
        }
        i += 1;
    }
    open.into_iter().filter_map(|(m, _)| m).collect()
}

fn imports(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut paths: Vec<(usize, String)> = Vec::new();
    // `use` statements (any visibility), trees expanded.
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let pos = code.len() - rest.len() + at;
        let stmt = &rest[at + 4..];
        rest = stmt;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = stmt.find(';') else { break };
        let tree = &stmt[..end];
        if tree.trim_start().starts_with("crate::")
            || tree.trim_start().starts_with("super::")
            || tree.trim_start().starts_with("self::")
        {
            paths.extend(expand_use(tree).into_iter().map(|p| (pos, p)));
        }
    }
    // Inline paths: `crate::a::b`, `super::x::y` (`$crate::` in macros is the
    // macro's own crate-relative path: resolved the same way).
    for key in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(key) {
            let start = from + at;
            from = start + key.len();
            let prev = code[..start].chars().last();
            if prev.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let tail: String = code[start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            // `crate::{A, B}` in a use tree is read with the tree.
            if tail.len() > key.len() {
                paths.push((start, tail));
            }
        }
    }
    let mut out = Vec::new();
    for (pos, p) in paths {
        let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
        let mut abs: Vec<String> = match segs.first() {
            Some(&"crate") => Vec::new(),
            // In `a/mod.rs` (module `a`) and in `a/b.rs` (module `a::b`),
            // `super` is the parent of the file's module; inside an inline
            // `mod tests { … }` it is the file's module.
            Some(&"super") | Some(&"self") => {
                let mut m = module.to_vec();
                m.extend(inline_mods(code, pos));
                m
            }
            _ => continue,
        };
        let mut it = segs.iter().peekable();
        if segs[0] == "crate" {
            it.next();
        } else {
            while let Some(&&s) = it.peek() {
                match s {
                    "super" => {
                        abs.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                it.next();
            }
        }
        abs.extend(it.map(|s| s.to_string()));
        out.push(abs);
    }
    out
}

/// The longest prefix of `path` that is a module of the crate; a name the
/// crate root re-exports (`crate::Tensor`) resolves to where it comes from.
fn resolve(
    path: &[String],
    modules: &BTreeSet<Vec<String>>,
    root: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    if let Some(first) = path.first() {
        if let Some(m) = root.get(first) {
            return m.clone();
        }
    }
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
        .unwrap_or_default()
}

/// What lib.rs re-exports (`pub use context::{Context, …}`): name -> module.
fn root_reexports(lib: &Path, modules: &BTreeSet<Vec<String>>) -> BTreeMap<String, Vec<String>> {
    let code = code_only(&std::fs::read_to_string(lib).unwrap());
    let mut out = BTreeMap::new();
    for stmt in code.split(';') {
        let Some(tree) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        for p in expand_use(tree) {
            let segs: Vec<String> = p.split("::").map(String::from).collect();
            if let Some((name, _)) = segs.split_last() {
                let m = resolve(&segs, modules, &BTreeMap::new());
                if !m.is_empty() {
                    out.insert(name.clone(), m);
                }
            }
        }
    }
    out
}

fn unit(m: &[String]) -> String {
    match m {
        [] => String::new(),
        [ops, family, ..] if ops == "ops" => format!("ops::{family}"),
        [top, ..] => top.clone(),
    }
}

fn layer(unit: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&unit))
        .unwrap_or_else(|| panic!("unit `{unit}` is in no layer: add it to LAYERS and DESIGN.md"))
}

/// A cycle in `edges`, if any, as the nodes around it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

struct Graph {
    /// File module -> the modules it imports (resolved), with an example path.
    edges: BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let root = root_reexports(&src.join("lib.rs"), &modules);
    let mut edges = BTreeMap::new();
    for f in &files {
        let m = module_of(&src, f);
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        let mut to: BTreeMap<Vec<String>, String> = BTreeMap::new();
        for p in imports(&code, &m) {
            let r = resolve(&p, &modules, &root);
            if r != m {
                to.entry(r).or_insert_with(|| p.join("::"));
            }
        }
        edges.insert(m, to);
    }
    Graph { edges }
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate root (lib.rs)".into()
    } else {
        m.join("::")
    }
}

#[test]
fn imports_only_point_down_the_layers() {
    let g = graph();
    let mut bad = Vec::new();
    for (from, tos) in &g.edges {
        let lf = layer(&unit(from));
        for (to, example) in tos {
            let lt = layer(&unit(to));
            if lt > lf {
                bad.push(format!(
                    "{} (layer {lf}) imports {} (layer {lt}) through `{example}`",
                    name(from),
                    name(to)
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports that run up the layers (docs/DESIGN.md, \"Layers\"):\n{}",
        bad.join("\n")
    );
}

#[test]
fn units_import_each_other_without_a_cycle() {
    let g = graph();
    let mut units: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &g.edges {
        let uf = unit(from);
        for to in tos.keys() {
            let ut = unit(to);
            // The crate root only declares and re-exports.
            if ut != uf && !ut.is_empty() && !uf.is_empty() {
                units.entry(uf.clone()).or_default().insert(ut);
            }
        }
    }
    if let Some(c) = find_cycle(&units) {
        panic!("units import each other in a circle: {}", c.join(" -> "));
    }
}

#[test]
fn files_of_a_folder_module_import_each_other_without_a_cycle() {
    let g = graph();
    // Files that share a parent module, without the parent (its mod.rs
    // declares them and may re-export them; they may use its items).
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &g.edges {
        for to in tos.keys() {
            let (Some((_, pf)), Some((_, pt))) = (from.split_last(), to.split_last()) else {
                continue;
            };
            if pf == pt && !from.is_empty() && !to.is_empty() {
                siblings.entry(name(from)).or_default().insert(name(to));
            }
        }
    }
    if let Some(c) = find_cycle(&siblings) {
        panic!(
            "files of one module import each other in a circle: {}",
            c.join(" -> ")
        );
    }
}

/// The check itself sees what it is for: a tensor calling an op (the circle
/// issue 27 removed ran context ↔ texels ↔ tensor ↔ ops::gather) is caught.
#[test]
fn the_check_sees_upward_imports_and_cycles() {
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let modules: BTreeSet<Vec<String>> = [m("context"), m("tensor"), m("ops"), m("ops::dot")]
        .into_iter()
        .collect();
    let code = code_only(
        "use crate::ops::dot::dot_into; // crate::models::x in a comment\n\
         fn f() { let s = \"crate::models\"; crate::context::Bind::whole(b); }",
    );
    let root: BTreeMap<String, Vec<String>> = [("Tensor".to_string(), m("tensor"))].into();
    let found: BTreeSet<Vec<String>> = imports(&code, &m("tensor"))
        .iter()
        .map(|p| resolve(p, &modules, &root))
        .collect();
    assert_eq!(found, [m("ops::dot"), m("context")].into());
    assert_eq!(resolve(&m("Tensor::zeros"), &modules, &root), m("tensor"));
    let tests = code_only("mod tests { use super::Bind; }");
    let found: BTreeSet<Vec<String>> = imports(&tests, &m("context")).into_iter().collect();
    assert_eq!(found, [m("context::Bind")].into());
    assert!(layer(&unit(&m("ops::dot"))) > layer(&unit(&m("tensor"))));
    let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    e.entry("context".into())
        .or_default()
        .insert("tensor".into());
    e.entry("tensor".into())
        .or_default()
        .insert("context".into());
    assert!(find_cycle(&e).is_some());
    assert_eq!(
        expand_use("crate::context::{Bind, texels::{vec4_texture, TexelGrid}}"),
        vec![
            "crate::context::Bind",
            "crate::context::texels::vec4_texture",
            "crate::context::texels::TexelGrid"
        ]
    );
}
