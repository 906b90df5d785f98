//! The layering of `src/` (DESIGN.md): each top-level module may import only
//! the modules below it. Fails naming the file, the line and the import.
//! Also checks that docs/architecture.md names every source file and that
//! docs/tuning.md documents every `GOMLX_*` variable the code reads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each module and the crate modules it may import (besides itself, `error` and `Error`/`Result`).
const ALLOWED: &[(&str, &[&str])] = &[
    ("mlx", &[]),
    ("text", &[]),
    ("cache", &["mlx"]),
    ("sample", &["mlx", "text"]),
    ("models", &["mlx", "text", "cache"]),
    ("train", &["models", "mlx", "text", "cache"]),
    ("engine", &["models", "mlx", "text", "cache", "sample"]),
    ("server", &["engine", "models", "text", "sample", "mlx"]),
    ("ffi", &["engine", "models", "mlx", "text", "cache", "sample", "train"]),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The crate modules a line of code names: `crate::x`, and `super::x` in a top-level file.
fn imports(line: &str, top_level: bool) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    let prefixes: &[&str] = if top_level { &["crate::", "super::"] } else { &["crate::"] };
    for p in prefixes {
        let mut rest = code;
        while let Some(i) = rest.find(p) {
            let before = rest[..i].chars().last();
            rest = &rest[i + p.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.push(name);
            }
            // `crate::{a, b}`: each item of the group.
            if rest.starts_with('{') {
                let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
                for item in group.split(',') {
                    let n: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !n.is_empty() {
                        found.push(n);
                    }
                }
            }
        }
    }
    found
}

#[test]
fn no_module_imports_one_above_it() {
    let src = root().join("src");
    let modules: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == module) else { continue };
        let top_level = rel.components().count() == 1;
        for (n, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            for name in imports(line, top_level) {
                let layered = modules.contains(name.as_str()) || name == "cli";
                if layered && name != module && !allowed.contains(&name.as_str()) {
                    bad.push(format!("src/{}:{}: {module} imports {name}: {}", rel.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "imports across the layering (DESIGN.md):\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_imports() {
    assert_eq!(imports("use crate::engine::Engine;", false), ["engine"]);
    assert_eq!(imports("use crate::{mlx, text::Tokenizer};", false), ["mlx", "text"]);
    assert_eq!(imports("let x = crate::models::load(p); // crate::ffi", false), ["models"]);
    assert_eq!(imports("use super::mlx::Array;", true), ["mlx"]);
    assert!(imports("use super::mlx::Array;", false).is_empty());
    assert!(imports("mycrate::engine", false).is_empty());
}

#[test]
fn architecture_doc_names_every_source_file() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let missing: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
        .filter(|rel| {
            let name = Path::new(rel).file_name().unwrap().to_string_lossy().into_owned();
            // A file is named by its path, or by its name in its folder's table.
            !doc.contains(rel.as_str()) && !doc.contains(&format!("`{name}`"))
        })
        .collect();
    assert!(missing.is_empty(), "docs/architecture.md does not name: {missing:?}");
}

#[test]
fn tuning_doc_lists_every_environment_knob() {
    let doc = std::fs::read_to_string(root().join("docs/tuning.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut vars = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("GOMLX_") {
            rest = &rest[i..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
            rest = &rest[name.len().max(1)..];
            if name.len() > "GOMLX_".len() && !name.ends_with('_') {
                vars.insert(name);
            }
        }
    }
    assert!(vars.len() >= 8, "{vars:?}");
    let missing: Vec<&String> = vars.iter().filter(|v| !doc.contains(&format!("`{v}`"))).collect();
    assert!(missing.is_empty(), "docs/tuning.md does not document {missing:?}");
}
