//! The README's layering held against the code: a module uses only modules listed below its own line.
//!
//! README.md's Architecture section gives, per crate, a ```text block of its
//! modules from top to bottom, one layer per line. This test reads those
//! blocks, scans every .rs file under each crate's `src/` for paths into the
//! crate (`crate::x`, grouped `use` trees, `super::` climbing to the root,
//! names the crate root re-exports) outside comments and string literals, and
//! fails with file:line for each use that does not point down, for each
//! module the layering misses, and for a layering it cannot read.
//!
//! To print each crate's actual module graph and the cycles in it:
//!
//! ```text
//! cargo test -p rerod --test architecture -- --nocapture module_graph
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use tokens::{Tok, Token, tokenize};

mod crates;
mod tokens;

/// The source folders whose layering the README must give.
const CRATES: [&str; 4] = ["daemon/src", "daemon/wire/src", "daemon/cli/src", "devices/src"];

#[test]
fn modules_use_only_lower_layers() {
    let root = workspace_root();
    let problems = check(&root, &read_readme(&root), &CRATES);
    assert!(
        problems.is_empty(),
        "the code does not keep the README's layering ({} problems):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn external_crates_are_used_only_where_the_readme_allows() {
    let root = workspace_root();
    let table = crates::parse_table(&read_readme(&root)).unwrap_or_else(|e| panic!("{e}"));
    let manifest = fs::read_to_string(root.join("daemon/Cargo.toml")).expect("daemon/Cargo.toml is readable");
    let named: Vec<&str> = table.iter().flat_map(|row| row.crates.iter().map(String::as_str)).collect();
    let uses = crates::scan(&root, "daemon/src", &named).expect("daemon/src is readable");
    let modules = scan_crate(&root, "daemon/src").expect("daemon/src is readable").modules;
    let problems = crates::problems(&table, &uses, &modules, &crates::dependencies(&manifest));
    assert!(
        problems.is_empty(),
        "external crates outside the modules the README allows ({} problems):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn each_package_depends_only_on_what_its_job_needs() {
    let root = workspace_root();
    let manifest = |path: &str| {
        let text = fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        (path.to_owned(), crates::dependencies(&text))
    };
    let problems = crates::package_problems(&[
        manifest("daemon/Cargo.toml"),
        manifest("daemon/wire/Cargo.toml"),
        manifest("daemon/cli/Cargo.toml"),
    ]);
    assert!(problems.is_empty(), "packages depend on what they must not:\n{}", problems.join("\n"));
}

/// Reports rather than checks, so it always passes; run it with
/// `--nocapture` to see the output.
#[test]
fn module_graph() {
    let root = workspace_root();
    for src in CRATES {
        let scan = scan_crate(&root, src).unwrap_or_else(|e| panic!("{src}: {e}"));
        print!("{}", render_graph(src, &scan));
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("daemon/ has a parent").to_path_buf()
}

fn read_readme(root: &Path) -> String {
    fs::read_to_string(root.join("README.md")).expect("README.md is readable")
}

/// Everything wrong with the code under `root` against the layering in
/// `readme`, one message per problem; empty when all is well. Every block in
/// the README is checked, and each folder in `required` must have one.
fn check(root: &Path, readme: &str, required: &[&str]) -> Vec<String> {
    let layerings = match parse_layerings(readme) {
        Ok(layerings) => layerings,
        Err(errors) => return errors,
    };
    let mut problems: Vec<String> = required
        .iter()
        .filter(|src| !layerings.iter().any(|l| l.src == **src))
        .map(|src| format!("README.md: no layering block for `{src}` in the Architecture section"))
        .collect();
    for layering in &layerings {
        match scan_crate(root, &layering.src) {
            Ok(scan) => problems.extend(layering_problems(layering, &scan)),
            Err(e) => problems.push(format!("{}: cannot scan: {e}", layering.src)),
        }
    }
    problems
}

/// The modules the layering misses, then each use that does not point down.
fn layering_problems(layering: &Layering, scan: &CrateScan) -> Vec<String> {
    let src = &layering.src;
    let mut problems: Vec<String> = scan
        .modules
        .iter()
        .filter(|(module, _)| !layering.lines.contains_key(*module))
        .map(|(module, file)| format!("{file}: {module} is not in the README's layering for `{src}`: give it a line"))
        .collect();
    for u in &scan.uses {
        let (Some(&from), Some(&to)) = (layering.lines.get(&u.from), layering.lines.get(&u.to)) else {
            continue; // Reported above as missing from the layering.
        };
        if to <= from {
            problems.push(format!(
                "{}:{}: {} (line {from}) uses {} (line {to}): {} is not below {}",
                u.file, u.line, u.from, u.to, u.to, u.from
            ));
        }
    }
    problems
}

/// One crate's layering as the README gives it.
#[derive(Debug)]
struct Layering {
    /// The crate's source folder, relative to the workspace root (`daemon/src`).
    src: String,
    /// Each module's line in the block, 1 at the top.
    lines: BTreeMap<String, usize>,
}

/// Reads every ```text block of the README's Architecture section. The
/// nearest line above a block names the crate's source folder in backticks.
fn parse_layerings(readme: &str) -> Result<Vec<Layering>, Vec<String>> {
    let mut lines = readme.lines().enumerate().map(|(i, line)| (i + 1, line));
    if !lines.by_ref().any(|(_, line)| line.trim_end() == "## Architecture") {
        return Err(vec!["README.md: no `## Architecture` section".to_owned()]);
    }
    let mut layerings = Vec::new();
    let mut errors = Vec::new();
    let mut label = None;
    while let Some((n, line)) = lines.next() {
        if line.starts_with("# ") || line.starts_with("## ") {
            break;
        }
        let Some(info) = line.strip_prefix("```") else {
            if !line.trim().is_empty() {
                label = Some(line);
            }
            continue;
        };
        let mut body = Vec::new();
        let mut closed = false;
        for (m, text) in lines.by_ref() {
            closed = text.starts_with("```");
            if closed {
                break;
            }
            body.push((m, text));
        }
        if !closed {
            errors.push(format!("README.md:{n}: this code block is never closed"));
            break;
        }
        if info.trim() != "text" {
            label = None;
            continue;
        }
        match parse_block(n, label.take(), &body) {
            Ok(layering) if layerings.iter().any(|l: &Layering| l.src == layering.src) => {
                errors.push(format!("README.md:{n}: a second layering block for `{}`", layering.src));
            }
            Ok(layering) => layerings.push(layering),
            Err(e) => errors.extend(e),
        }
    }
    if layerings.is_empty() && errors.is_empty() {
        errors.push("README.md: the Architecture section has no ```text layering block".to_owned());
    }
    if errors.is_empty() { Ok(layerings) } else { Err(errors) }
}

/// One ```text block opened at README line `fence`, with the line above it.
fn parse_block(fence: usize, label: Option<&str>, body: &[(usize, &str)]) -> Result<Layering, Vec<String>> {
    let src = label
        .and_then(|text| text.split('`').skip(1).step_by(2).find(|quoted| quoted.ends_with("/src")).map(str::to_owned));
    let Some(src) = src else {
        return Err(vec![format!(
            "README.md:{fence}: the line above this ```text block should name the crate's source folder, like `daemon/src`"
        )]);
    };
    let mut errors = Vec::new();
    let mut lines = BTreeMap::new();
    for (layer, (n, text)) in body.iter().enumerate() {
        if text.trim().is_empty() {
            errors.push(format!("README.md:{n}: blank line in the layering for `{src}`: one layer per line"));
        }
        for module in text.split_whitespace() {
            if !module.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
                errors.push(format!("README.md:{n}: `{module}` is not a module name"));
            } else if lines.insert(module.to_owned(), layer + 1).is_some() {
                errors.push(format!("README.md:{n}: {module} is listed twice in the layering for `{src}`"));
            }
        }
    }
    if lines.is_empty() {
        errors.push(format!("README.md:{fence}: the layering for `{src}` is empty"));
    }
    if errors.is_empty() { Ok(Layering { src, lines }) } else { Err(errors) }
}

/// A reference from one module of a crate to another.
#[derive(Debug)]
struct Use {
    /// The referencing file, relative to the workspace root.
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// What scanning a crate's sources found.
#[derive(Debug, Default)]
struct CrateScan {
    /// Each module of the crate, with its first file (for messages).
    modules: BTreeMap<String, String>,
    /// Every reference between two different modules, in file and line order.
    uses: Vec<Use>,
}

/// Scans every .rs file under `root/src`. A module is the first path segment
/// under `src/`; `lib.rs` and `main.rs` belong to none, and only the names
/// `lib.rs` re-exports are read from them.
fn scan_crate(root: &Path, src: &str) -> std::io::Result<CrateScan> {
    let mut files = Vec::new();
    collect_rs_files(&root.join(src), &mut files)?;
    files.sort();
    let mut scan = CrateScan::default();
    let mut parsed = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root.join(src)).expect("found under src").to_path_buf();
        let display = format!("{src}/{}", relative.display());
        let scope = module_path(&relative);
        if let Some(module) = scope.first() {
            scan.modules.entry(module.clone()).or_insert_with(|| display.clone());
        }
        parsed.push((display, scope, tokenize(&fs::read_to_string(&file)?)));
    }
    let lib = parsed.iter().find(|(display, scope, _)| scope.is_empty() && display.ends_with("/lib.rs"));
    let reexports = lib.map(|(_, _, tokens)| reexports(tokens, &scan.modules)).unwrap_or_default();
    for (file, scope, tokens) in &parsed {
        let Some(from) = scope.first() else { continue };
        let mut seen = BTreeSet::new();
        for (line, name) in crate_refs(tokens, scope) {
            let to = if scan.modules.contains_key(&name) { Some(&name) } else { reexports.get(&name) };
            match to {
                Some(to) if to != from && seen.insert((line, to.clone())) => {
                    scan.uses.push(Use { file: file.clone(), line, from: from.clone(), to: to.clone() });
                }
                // The module itself, a repeat on the same line, or a name
                // the crate root defines itself: no edge between modules.
                _ => {}
            }
        }
    }
    Ok(scan)
}

fn collect_rs_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rs_files(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// The module path a file under `src/` is: `http/routes.rs` is
/// `["http", "routes"]`, `http/mod.rs` is `["http"]`, `lib.rs` is `[]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut path: Vec<String> = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
    if let Some(last) = path.pop() {
        match last.trim_end_matches(".rs") {
            "mod" => {}
            "lib" | "main" if path.is_empty() => {}
            name => path.push(name.to_owned()),
        }
    }
    path
}

/// The names the crate root's `use` items bring in, each with the module it
/// comes from: `pub use cancel::CancelToken;` maps `CancelToken` to `cancel`.
/// A glob re-export names nothing, so uses through it go unseen.
fn reexports(tokens: &[Token], modules: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].is_ident("use") {
            let mut leaves = Vec::new();
            i = use_tree(tokens, i + 1, Leaf::default(), &mut leaves);
            for mut leaf in leaves {
                // In the crate root a bare path starts at the root itself.
                if !matches!(leaf.path.first().map(String::as_str), Some("crate" | "self" | "super" | "::")) {
                    leaf.path.insert(0, "crate".to_owned());
                }
                let Some((module, _)) = resolve(&[], &leaf.path).filter(|(m, _)| modules.contains_key(m)) else {
                    continue;
                };
                let Some(name) = leaf.alias.or_else(|| leaf.path.last().cloned()) else { continue };
                if name != "*" && name != "self" {
                    names.insert(name, module);
                }
            }
        } else {
            i += 1;
        }
    }
    names
}

/// One path a `use` tree (or an inline path) ends in.
#[derive(Debug, Clone, Default)]
struct Leaf {
    path: Vec<String>,
    /// The line of each segment of `path`.
    lines: Vec<usize>,
    alias: Option<String>,
}

impl Leaf {
    fn push(&mut self, segment: &str, line: usize) {
        self.path.push(segment.to_owned());
        self.lines.push(line);
    }
}

/// Reads one use tree starting at token `i` under `prefix` (`a::b`,
/// `a::{b, c::{d, *}}`, `a as z`), adding each path it ends in to `leaves`.
/// Returns the index after the tree; `i` itself when nothing there is a path.
fn use_tree(t: &[Token], mut i: usize, mut prefix: Leaf, leaves: &mut Vec<Leaf>) -> usize {
    let tok = |i: usize| t.get(i).map(|token| &token.tok);
    if let Some(Token { tok: Tok::PathSep, line }) = t.get(i) {
        // A leading `::` names an external crate; this segment matches no module.
        prefix.push("::", *line);
        i += 1;
    }
    loop {
        let Some(token) = t.get(i) else { return i };
        match &token.tok {
            Tok::Ident(word) => {
                prefix.push(word, token.line);
                i += 1;
                if tok(i) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                if t.get(i).is_some_and(|t| t.is_ident("as")) {
                    if let Some(Tok::Ident(name)) = tok(i + 1) {
                        prefix.alias = Some(name.clone());
                    }
                    i += 2;
                }
                leaves.push(prefix);
                return i;
            }
            Tok::Star => {
                prefix.push("*", token.line);
                leaves.push(prefix);
                return i + 1;
            }
            Tok::Open => {
                i += 1;
                loop {
                    match tok(i) {
                        None => return i,
                        Some(Tok::Close) => return i + 1,
                        Some(Tok::Comma) => i += 1,
                        Some(_) => i = use_tree(t, i, prefix.clone(), leaves).max(i + 1),
                    }
                }
            }
            // A path cut short by a turbofish (`crate::a::f::<T>`) still names its module.
            _ => {
                if !prefix.path.is_empty() {
                    leaves.push(prefix);
                }
                return i;
            }
        }
    }
}

/// The crate-root names a file's paths lead to, with their lines: for
/// `crate::app::App` that is `app`. `scope` is the file's module path; inline
/// `mod x { }` blocks extend it, so `super::` climbs from where it is written.
fn crate_refs(tokens: &[Token], scope: &[String]) -> Vec<(usize, String)> {
    let mut scope = scope.to_vec();
    let mut refs = Vec::new();
    // Brace depth, and the depth at which each open inline module started.
    let (mut depth, mut inline_mods) = (0usize, Vec::new());
    let mut i = 0;
    while i < tokens.len() {
        let next_is = |k: usize, tok: &Tok| tokens.get(i + k).is_some_and(|t| t.tok == *tok);
        let path_start = ["crate", "super", "self"].iter().any(|w| tokens[i].is_ident(w)) && next_is(1, &Tok::PathSep);
        if tokens[i].is_ident("use") || path_start {
            let start = if path_start { i } else { i + 1 };
            let mut leaves = Vec::new();
            i = use_tree(tokens, start, Leaf::default(), &mut leaves).max(i + 1);
            for leaf in leaves {
                if let Some((name, at)) = resolve(&scope, &leaf.path) {
                    // The line of the segment naming the module, else of the path's end.
                    let line = leaf.lines[at.unwrap_or(leaf.lines.len() - 1)];
                    refs.push((line, name));
                }
            }
            continue;
        }
        match &tokens[i].tok {
            Tok::Ident(w) if w == "mod" && next_is(2, &Tok::Open) => {
                if let Some(Tok::Ident(name)) = tokens.get(i + 1).map(|t| &t.tok) {
                    scope.push(name.clone());
                    inline_mods.push(depth);
                }
                depth += 1;
                i += 3;
                continue;
            }
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if inline_mods.last() == Some(&depth) {
                    inline_mods.pop();
                    scope.pop();
                }
            }
            _ => {}
        }
        i += 1;
    }
    refs
}

/// The crate-root name `path` leads to when written in module `scope`, and
/// the index of the segment that spells it when `path` does. `None` for a
/// path that does not start from the crate (`std::`, a local name) or that
/// stops at the root itself.
fn resolve(scope: &[String], path: &[String]) -> Option<(String, Option<usize>)> {
    let (kept, start) = match path.first()?.as_str() {
        "crate" => (0, 1),
        "self" => (scope.len(), 1),
        "super" => {
            let climbs = path.iter().take_while(|s| *s == "super").count();
            (scope.len().checked_sub(climbs)?, climbs)
        }
        _ => return None,
    };
    if kept > 0 {
        return Some((scope[0].clone(), None));
    }
    let at = (start..path.len()).find(|&k| path[k] != "self")?;
    (path[at] != "*").then(|| (path[at].clone(), Some(at)))
}

/// Each module's dependencies, with every module present even when it has none.
fn graph(scan: &CrateScan) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> =
        scan.modules.keys().map(|m| (m.as_str(), BTreeSet::new())).collect();
    for u in &scan.uses {
        graph.entry(u.from.as_str()).or_default().insert(u.to.as_str());
    }
    graph
}

/// The cycles of `graph`: the shortest one through each module that is on
/// any, each cycle once, starting at its smallest module.
fn cycles<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    let mut found = BTreeSet::new();
    for &start in graph.keys() {
        let Some(mut cycle) = shortest_cycle(graph, start) else { continue };
        let smallest = cycle.iter().enumerate().min_by_key(|(_, m)| **m).map_or(0, |(k, _)| k);
        cycle.rotate_left(smallest);
        found.insert(cycle);
    }
    found.into_iter().collect()
}

/// Breadth-first search from `start` back to itself.
fn shortest_cycle<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>, start: &'a str) -> Option<Vec<&'a str>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(m) = queue.pop_front() {
        for &dep in graph.get(m).into_iter().flatten() {
            if dep == start {
                let mut cycle = vec![m];
                while let Some(&before) = came_from.get(cycle.last().expect("not empty")) {
                    cycle.push(before);
                }
                cycle.reverse();
                return Some(cycle);
            }
            if !came_from.contains_key(dep) {
                came_from.insert(dep, m);
                queue.push_back(dep);
            }
        }
    }
    None
}

/// `module -> dep, dep` per module, sorted, then the cycles.
fn render_graph(src: &str, scan: &CrateScan) -> String {
    let graph = graph(scan);
    let mut out = format!("{src}: module graph\n");
    for (module, deps) in &graph {
        let deps: Vec<&str> = deps.iter().copied().collect();
        let _ =
            writeln!(out, "  {module} -> {}", if deps.is_empty() { "(nothing)".to_owned() } else { deps.join(", ") });
    }
    let cycles = cycles(&graph);
    let _ = writeln!(out, "{src}: {} cycles", cycles.len());
    for cycle in cycles {
        let _ = writeln!(out, "  {} -> {}", cycle.join(" -> "), cycle[0]);
    }
    out
}

/// The scanner and its parsing helpers on small inputs, so a passing check
/// means something.
mod scanner {
    use super::*;

    fn modules_in(source: &str, scope: &[&str]) -> Vec<(usize, String)> {
        let scope: Vec<String> = scope.iter().map(|s| (*s).to_owned()).collect();
        crate_refs(&tokenize(source), &scope)
    }

    fn names(refs: &[(usize, String)]) -> BTreeSet<&str> {
        refs.iter().map(|(_, name)| name.as_str()).collect()
    }

    #[test]
    fn grouped_and_nested_uses_name_each_module() {
        let refs = modules_in("use crate::{a::B, c};\nuse crate::{d::{e::F, self}, g::{h, i::*}, *};", &["m"]);
        assert_eq!(refs, [(1, "a"), (1, "c"), (2, "d"), (2, "d"), (2, "g"), (2, "g")].map(|(l, n)| (l, n.to_owned())));
    }

    #[test]
    fn a_group_over_lines_gives_each_module_its_own_line() {
        let refs = modules_in("use crate::{\n    a::A,\n    b::{\n        B,\n    },\n};\n", &["m"]);
        assert_eq!(refs, [(2, "a".to_owned()), (3, "b".to_owned())]);
    }

    #[test]
    fn inline_paths_count_and_visibility_does_not() {
        let source = "pub(crate) fn f() -> crate::a::T { crate::b::g::<crate::c::X>(); $crate::d::m!() }";
        assert_eq!(names(&modules_in(source, &["m"])), BTreeSet::from(["a", "b", "c", "d"]));
    }

    #[test]
    fn comments_name_nothing() {
        let source =
            "// crate::a\n/// [`crate::b::B`]\n//! crate::c\n/* crate::d /* crate::e */ crate::f */\nuse crate::g;";
        assert_eq!(modules_in(source, &["m"]), [(5, "g".to_owned())]);
    }

    #[test]
    fn strings_and_chars_name_nothing() {
        let source = r###"let s = "crate::a \"
            crate::b"; let r = r#"crate::c "quoted" "#;
            let b = b"crate::d"; let rb = br##"crate::e"#"##; let q = '"'; let e = '\'';
            fn f<'x>(v: &'x str) -> crate::g::G { crate::h::H }"###;
        assert_eq!(modules_in(source, &["m"]), [(4, "g".to_owned()), (4, "h".to_owned())]);
    }

    #[test]
    fn super_climbs_from_where_it_is_written() {
        let source = "use super::a::A;\nmod tests {\n    use super::*;\n    use super::super::b;\n}\nuse super::c;";
        assert_eq!(
            modules_in(source, &["m"]),
            [(1, "a"), (3, "m"), (4, "b"), (6, "c")].map(|(l, n)| (l, n.to_owned()))
        );
        assert_eq!(names(&modules_in("use super::x::Y; self::z();", &["m", "sub"])), BTreeSet::from(["m"]));
    }

    #[test]
    fn raw_identifiers_and_precise_captures_do_not_derail() {
        let source = "let r#type = 1; fn f() -> impl Sized + use<> {}\nuse crate::a;";
        assert_eq!(modules_in(source, &["m"]), [(2, "a".to_owned())]);
    }

    #[test]
    fn cycles_are_found_once_from_their_smallest_module() {
        let scan = CrateScan {
            modules: ["a", "b", "c", "d"].map(|m| (m.to_owned(), format!("{m}.rs"))).into(),
            uses: [("a", "b"), ("b", "a"), ("b", "c"), ("c", "a"), ("d", "a")]
                .map(|(from, to)| Use { file: String::new(), line: 1, from: from.into(), to: to.into() })
                .into(),
        };
        assert_eq!(cycles(&graph(&scan)), [vec!["a", "b"], vec!["a", "b", "c"]]);
    }

    /// A crate under a fresh temp folder: `files` are (path under src/, text).
    fn crate_tree(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("architecture").join(name);
        let _ = fs::remove_dir_all(&root);
        for (path, text) in files {
            let path = root.join("x/src").join(path);
            fs::create_dir_all(path.parent().expect("has a parent")).expect("create dir");
            fs::write(path, text).expect("write file");
        }
        root
    }

    const README: &str =
        "# x\n\n## Architecture\n\nThe crate, `x/src`:\n\n```text\ntop\nmid side\nlow\n```\n\n## Next\n";

    #[test]
    fn a_conforming_crate_passes() {
        let root = crate_tree(
            "conforming",
            &[
                ("lib.rs", "pub mod top;\npub mod mid;\nmod low;\npub use low::{Thing as Renamed, other};\n"),
                ("main.rs", "fn main() { x::top::run() }\n"),
                ("top.rs", "//! Top.\nuse crate::{mid::M, side};\nfn f() { crate::low::g() }\n"),
                ("mid/mod.rs", "use crate::Renamed;\nmod inner;\n"),
                ("mid/inner.rs", "use super::super::low::L;\nuse crate::mid::M;\n"),
                ("side.rs", "use crate::other;\n"),
                (
                    "low.rs",
                    "/// See [`crate::top`].\nconst S: &str = \"crate::top\";\n#[cfg(test)]\nmod tests { use super::*; }\n",
                ),
            ],
        );
        assert_eq!(check(&root, README, &["x/src"]), Vec::<String>::new());
    }

    #[test]
    fn uses_that_do_not_point_down_and_unplaced_modules_fail() {
        let root = crate_tree(
            "violating",
            &[
                ("lib.rs", "pub mod top;\npub use mid::M;\n"),
                ("top.rs", "use crate::mid::M;\n"),
                ("mid.rs", "use crate::side::S;\n"),
                ("side.rs", "\nuse crate::{top, low};\n"),
                ("low.rs", "#[cfg(test)]\nmod tests {\n    use crate::M;\n}\n"),
                ("extra/mod.rs", "use crate::low;\n"),
            ],
        );
        assert_eq!(
            check(&root, README, &["x/src"]),
            [
                "x/src/extra/mod.rs: extra is not in the README's layering for `x/src`: give it a line",
                "x/src/low.rs:3: low (line 3) uses mid (line 2): mid is not below low",
                "x/src/mid.rs:1: mid (line 2) uses side (line 2): side is not below mid",
                "x/src/side.rs:2: side (line 2) uses top (line 1): top is not below side",
            ]
        );
    }

    #[test]
    fn a_layering_that_cannot_be_read_fails() {
        let root = crate_tree("unread", &[("lib.rs", "")]);
        let errors = |readme: &str| check(&root, readme, &["x/src"]);
        assert_eq!(errors("# x\n"), ["README.md: no `## Architecture` section"]);
        assert_eq!(
            errors("## Architecture\n\n```text\na\n```\n"),
            ["README.md:3: the line above this ```text block should name the crate's source folder, like `daemon/src`"]
        );
        assert_eq!(
            errors("## Architecture\n\n`x/src`:\n```text\na b\n\na-b a\n"),
            ["README.md:4: this code block is never closed"]
        );
        assert_eq!(
            errors("## Architecture\n\n`x/src`:\n```text\na b\n\na-b a\n```\n"),
            [
                "README.md:6: blank line in the layering for `x/src`: one layer per line",
                "README.md:7: `a-b` is not a module name",
                "README.md:7: a is listed twice in the layering for `x/src`",
            ]
        );
        assert_eq!(
            errors("## Architecture\n\n`y/src`:\n```text\na\n```\n## x/src\n```text\nb\n```\n"),
            [
                "README.md: no layering block for `x/src` in the Architecture section",
                "y/src: cannot scan: No such file or directory (os error 2)",
            ]
        );
    }
}
