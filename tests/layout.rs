//! The source tree's layers: imports point down only (`core` ← `store` ← `engine` ← `api` ←
//! `service` ← `cli`), and the pure core uses no runtime, NATS, HTTP client or server crate.
//! Reads the files under `src/`; needs no server.

use std::path::{Path, PathBuf};

/// The layers from the bottom up; a file may use `crate::<layer>` only for its own layer or one
/// below it.
const LAYERS: [&str; 6] = ["core", "store", "engine", "api", "service", "cli"];

/// Crates the pure core must not use: it does no I/O and needs no runtime.
const NOT_IN_CORE: [&str; 4] = ["tokio", "async_nats", "reqwest", "axum"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a file under `src/` belongs to; `None` for the crate root and the binary.
fn layer_of(relative: &Path) -> Result<Option<usize>, String> {
    let first = relative
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    let name = first.trim_end_matches(".rs");
    if matches!(first, "lib.rs" | "main.rs") {
        return Ok(None);
    }
    LAYERS
        .iter()
        .position(|l| *l == name)
        .map(Some)
        .ok_or_else(|| format!("src/{} is in no layer: put it in one of {LAYERS:?}", relative.display()))
}

/// A file's text with its comment lines blanked (docs may name any module), lines kept in place.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| if l.trim_start().starts_with("//") { "" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segment after each `crate::` in `code`, including each item of a
/// `crate::{a::b, c}` group (which may span lines), with the line it is on.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        let line = code[..code.len() - rest.len()].matches('\n').count() + 1;
        if before.is_some_and(|c| is_ident(c) || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group, split at commas outside nested braces.
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push((line, leading_ident(&item)));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.push((line, leading_ident(&item)));
        } else {
            found.push((line, leading_ident(rest)));
        }
    }
    found.retain(|(_, s)| !s.is_empty());
    found
}

fn leading_ident(s: &str) -> String {
    s.trim_start().chars().take_while(|c| is_ident(*c)).collect()
}

fn mentions_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

#[test]
fn imports_point_down_the_layers_and_the_core_uses_no_io_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found the source files");
    let mut wrong = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&src).expect("under src/");
        let layer = match layer_of(relative) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                wrong.push(e);
                continue;
            }
        };
        let code = code_only(&std::fs::read_to_string(path).expect("a readable source file"));
        let lines: Vec<&str> = code.lines().collect();
        for (n, module) in crate_paths(&code) {
            if let Some(target) = LAYERS.iter().position(|l| *l == module) {
                if target > layer {
                    wrong.push(format!(
                        "src/{}:{n}: {} uses crate::{module}, a layer above it: {}",
                        relative.display(),
                        LAYERS[layer],
                        lines.get(n - 1).map_or("", |l| l.trim())
                    ));
                }
            }
        }
        for (i, line) in lines.iter().enumerate() {
            let at = format!("src/{}:{}", relative.display(), i + 1);
            if LAYERS[layer] == "core" {
                for word in NOT_IN_CORE {
                    if mentions_word(line, word) {
                        wrong.push(format!("{at}: core uses {word}: {}", line.trim()));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn crate_paths_reads_single_paths_and_groups() {
    let names = |code: &str| crate_paths(code).into_iter().map(|(_, m)| m).collect::<Vec<_>>();
    assert_eq!(names("use crate::engine::ctx::Ctx;"), ["engine"]);
    assert_eq!(names("x: &crate::core::task::Task, $crate::no"), ["core"]);
    assert_eq!(
        names("use crate::{core::task::{Task, Status}, store::kv, engine};"),
        ["core", "store", "engine"]
    );
    assert_eq!(
        crate_paths("use std::fmt;\nuse crate::{\n    core::time,\n    service::Service,\n};"),
        [(2, "core".to_string()), (2, "service".to_string())]
    );
    assert!(names("let s = \"no crate here\";").is_empty());
}

#[test]
fn a_word_is_matched_whole() {
    assert!(mentions_word("use tokio::sync::Notify;", "tokio"));
    assert!(!mentions_word("let tokio_free = 1;", "tokio"));
}
