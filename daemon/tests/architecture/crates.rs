//! Which modules may name which external crates, as the README's table says,
//! and which crates each package of the daemon may depend on at all.
//!
//! The table is the one in README.md's Architecture section whose header is
//! `| external crate | only in |`: each row names crates in backticks (as
//! Rust spells them, `tokio_postgres`) and the modules of `daemon/src` that
//! alone may use them (`main.rs` for the binary's root file). A crate the
//! table does not name may be used anywhere.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::tokens::{Tok, Token, tokenize};
use crate::{collect_rs_files, module_path};

/// What each package must not depend on (as Rust spells the crates): `rero`
/// nothing that stores, hashes, sandboxes or uploads, nor the daemon itself;
/// the wire contract no crate of the workspace; the daemon no terminal crate.
pub const FORBIDDEN: [(&str, &[&str]); 3] = [
    (
        "daemon/cli/Cargo.toml",
        &[
            "rerod",
            "redb",
            "tokio_postgres",
            "bcrypt",
            "jsonwebtoken",
            "hmac",
            "sha2",
            "zxcvbn",
            "landlock",
            "notify",
            "tikv_jemallocator",
            "rerod_stk500v1",
            "rerod_stk500v2",
            "rerod_command",
        ],
    ),
    ("daemon/wire/Cargo.toml", &["rerod", "rerod_devices", "rerod_stk500v1", "rerod_stk500v2", "rerod_command"]),
    ("daemon/Cargo.toml", &["crossterm", "indicatif"]),
];

/// One row of the table: these crates, only in these modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    pub crates: Vec<String>,
    pub modules: Vec<String>,
    /// The README line of the row, for messages.
    pub line: usize,
}

/// A path that starts with an external crate's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateUse {
    /// The file, relative to the workspace root.
    pub file: String,
    pub line: usize,
    /// The module of `daemon/src` the file belongs to (`main.rs` and `lib.rs` for the roots).
    pub module: String,
    pub krate: String,
    /// The segment after the crate's name, when there is one.
    pub next: Option<String>,
}

/// The rows of the README's table, or what keeps it from being read.
pub fn parse_table(readme: &str) -> Result<Vec<Allowance>, String> {
    let lines: Vec<&str> = readme.lines().collect();
    let header = lines
        .iter()
        .position(|l| cells(l).is_some_and(|c| c.len() == 2 && c[0] == "external crate" && c[1] == "only in"))
        .ok_or("README.md: no `| external crate | only in |` table in the Architecture section")?;
    let mut rows = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(header + 2) {
        let Some(cells) = cells(line) else { break };
        let [crates, modules] = cells.as_slice() else {
            return Err(format!("README.md:{}: a row of the external crate table needs two cells", i + 1));
        };
        let (crates, modules) = (ticked(crates), ticked(modules));
        if crates.is_empty() || modules.is_empty() {
            return Err(format!("README.md:{}: name the crates and the modules in backticks", i + 1));
        }
        rows.push(Allowance { crates, modules, line: i + 1 });
    }
    if rows.is_empty() {
        return Err(format!("README.md:{}: the external crate table has no rows", header + 1));
    }
    Ok(rows)
}

/// The trimmed cells of a Markdown table row; `None` for any other line.
fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(|c| c.trim().to_owned()).collect())
}

/// The words written in backticks in a cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Every path in the files under `root/src` that starts with one of `crates`
/// (a name right after `::`, as in `crate::notify::x`, is not one).
pub fn scan(root: &Path, src: &str, crates: &[&str]) -> std::io::Result<Vec<CrateUse>> {
    let mut files = Vec::new();
    collect_rs_files(&root.join(src), &mut files)?;
    files.sort();
    let mut uses = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root.join(src)).expect("found under src").to_path_buf();
        let module = match module_path(&relative).first() {
            Some(module) => module.clone(),
            None => relative.display().to_string(),
        };
        let display = format!("{src}/{}", relative.display());
        for (line, krate, next) in paths_from(&tokenize(&fs::read_to_string(&file)?), crates) {
            uses.push(CrateUse { file: display.clone(), line, module: module.clone(), krate, next });
        }
    }
    Ok(uses)
}

/// The paths in `tokens` whose first segment is one of `crates`: the line,
/// the crate and the segment after it.
pub fn paths_from(tokens: &[Token], crates: &[&str]) -> Vec<(usize, String, Option<String>)> {
    let mut found = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let Tok::Ident(word) = &token.tok else { continue };
        let starts_path = i == 0 || tokens[i - 1].tok != Tok::PathSep;
        let then_sep = tokens.get(i + 1).is_some_and(|t| t.tok == Tok::PathSep);
        // `use redb;` and `use redb as db;` name the crate without a `::`.
        let used_whole = i > 0 && tokens[i - 1].is_ident("use");
        if crates.contains(&word.as_str()) && starts_path && (then_sep || used_whole) {
            let next = match tokens.get(i + 2).map(|t| &t.tok) {
                Some(Tok::Ident(next)) if then_sep => Some(next.clone()),
                _ => None,
            };
            found.push((token.line, word.clone(), next));
        }
    }
    found
}

/// Everything wrong with `uses` against `table`, and with the table itself
/// against the crate's `modules` and `dependencies`.
pub fn problems(
    table: &[Allowance],
    uses: &[CrateUse],
    modules: &BTreeMap<String, String>,
    dependencies: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    for row in table {
        for krate in &row.crates {
            if !dependencies.contains(krate) {
                problems.push(format!("README.md:{}: `{krate}` is not a dependency of daemon/Cargo.toml", row.line));
            }
            if modules.contains_key(krate) {
                problems.push(format!(
                    "README.md:{}: `{krate}` is also a module of daemon/src; the check cannot tell their paths apart",
                    row.line
                ));
            }
        }
        for module in &row.modules {
            if !modules.contains_key(module) && !matches!(module.as_str(), "main.rs" | "lib.rs") {
                problems.push(format!("README.md:{}: `{module}` is not a module of daemon/src", row.line));
            }
        }
    }
    for u in uses {
        let Some(row) = table.iter().find(|row| row.crates.contains(&u.krate)) else { continue };
        if !row.modules.contains(&u.module) {
            problems.push(format!(
                "{}:{}: {} uses `{}`, which only {} may use (README.md:{})",
                u.file,
                u.line,
                u.module,
                u.krate,
                row.modules.join(", "),
                row.line
            ));
        }
    }
    problems
}

/// Every dependency of `manifests` (a path and its dependencies) that
/// [`FORBIDDEN`] rules out, and every package of it that is missing.
pub fn package_problems(manifests: &[(String, Vec<String>)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, forbidden) in FORBIDDEN {
        let Some((_, dependencies)) = manifests.iter().find(|(p, _)| p == path) else {
            problems.push(format!("{path}: not checked"));
            continue;
        };
        for dependency in dependencies.iter().filter(|d| forbidden.contains(&d.as_str())) {
            problems.push(format!(
                "{path}: depends on `{dependency}`, which this package must not (README.md, Architecture)"
            ));
        }
    }
    problems
}

/// The names of `[dependencies]` in a Cargo.toml, as Rust spells them.
pub fn dependencies(manifest: &str) -> Vec<String> {
    let mut in_table = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_table = line == "[dependencies]";
            continue;
        }
        if !in_table || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['=', '.']).next().unwrap_or("").trim();
        names.push(name.replace('-', "_"));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "## Architecture\n\n| external crate | only in |\n|---|---|\n\
                         | `redb`, `tokio_postgres` | `store` |\n| `tikv_jemallocator` | `main.rs` |\n\nAfter.\n";

    fn uses_in(source: &str, module: &str) -> Vec<CrateUse> {
        paths_from(&tokenize(source), &["redb", "rerod", "tikv_jemallocator"])
            .into_iter()
            .map(|(line, krate, next)| CrateUse { file: "f.rs".into(), line, module: module.into(), krate, next })
            .collect()
    }

    fn modules(names: &[&str]) -> BTreeMap<String, String> {
        names.iter().map(|n| (n.to_string(), format!("{n}.rs"))).collect()
    }

    #[test]
    fn the_table_is_read_row_by_row() {
        let table = parse_table(TABLE).expect("the table reads");
        assert_eq!(table.len(), 2);
        assert_eq!(table[0].crates, ["redb", "tokio_postgres"]);
        assert_eq!((table[0].modules.as_slice(), table[0].line), (&["store".to_owned()][..], 5));
        assert!(parse_table("no table here").expect_err("not a table").contains("no `| external crate"));
        let one_cell = "| external crate | only in |\n|---|---|\n| `redb` |\n";
        assert!(parse_table(one_cell).expect_err("not a table").contains("README.md:3"));
    }

    #[test]
    fn a_crate_used_outside_its_modules_is_named_with_file_and_line() {
        let table = parse_table(TABLE).expect("the table reads");
        let deps = ["redb", "tokio_postgres", "tikv_jemallocator"].map(String::from);
        let source = "// redb::Database in a comment\nfn f() {\n    let s = \"redb::x\";\n    redb::Database::create(p);\n}\n\
                      use crate::redb::Local;\nuse redb;\n";
        let uses = uses_in(source, "app");
        assert_eq!(
            uses.iter().map(|u| u.line).collect::<Vec<_>>(),
            [4, 7],
            "comments, strings and crate:: are not uses"
        );
        let found = problems(&table, &uses, &modules(&["app", "store"]), &deps);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("f.rs:4: app uses `redb`, which only store may use"), "{found:?}");
        assert!(problems(&table, &uses_in(source, "store"), &modules(&["app", "store"]), &deps).is_empty());
        let root = uses_in(
            "#[global_allocator]\nstatic A: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;\n",
            "main.rs",
        );
        assert!(problems(&table, &root, &modules(&["store"]), &deps).is_empty());
    }

    #[test]
    fn the_table_must_name_real_crates_and_modules() {
        let table = parse_table(TABLE).expect("the table reads");
        let found = problems(&table, &[], &modules(&["app", "redb"]), &["redb".to_owned()]);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.iter().any(|p| p.contains("`tokio_postgres` is not a dependency")));
        assert!(found.iter().any(|p| p.contains("`redb` is also a module")));
        assert!(found.iter().any(|p| p.contains("`store` is not a module")));
    }

    #[test]
    fn a_forbidden_dependency_is_named_with_its_package() {
        let deps = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let manifests = [
            ("daemon/cli/Cargo.toml".to_owned(), deps(&["rerod_wire", "redb", "clap"])),
            ("daemon/wire/Cargo.toml".to_owned(), deps(&["serde"])),
            ("daemon/Cargo.toml".to_owned(), deps(&["hyper", "crossterm"])),
        ];
        let found = package_problems(&manifests);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("daemon/cli/Cargo.toml: depends on `redb`"), "{found:?}");
        assert!(found[1].starts_with("daemon/Cargo.toml: depends on `crossterm`"), "{found:?}");
        assert_eq!(package_problems(&manifests[..1]).len(), 3, "a package left unchecked is a problem");
    }

    #[test]
    fn dependencies_are_read_from_the_dependencies_table_only() {
        let manifest = "[package]\nname = \"x\"\n[dependencies]\nhyper-util.workspace = true\nredb = \"3\"\n# c\n\
                        [dev-dependencies]\nproptest = \"1\"\n";
        assert_eq!(dependencies(manifest), ["hyper_util", "redb"]);
    }
}
