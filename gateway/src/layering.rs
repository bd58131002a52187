//! The module layering of the crate docs, checked on the source: a module that names a module
//! above it (`crate::…` outside comments) fails this test. Test-only; no `use` of it anywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Layers, lowest first: a module may name modules of its own layer or below, never above.
/// Modules not listed are shared by every layer and may name only `state` and each other.
/// (The upstream adapters and `canonical` are the `adapters` crate, below every module here.)
const LAYERS: &[(&str, u8)] = &[("state", 1), ("call", 3), ("handlers", 4), ("routes", 5), ("app", 5)];

/// Known imports against the layering, each with its reason; shrink this list, never grow it.
/// (Empty since the adapters left the crate; `limits` and `request` share a layer.)
const EXCEPTIONS: &[(&str, &str)] = &[];

fn rank(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn allowed(from: &str, to: &str) -> bool {
    if from == to || EXCEPTIONS.contains(&(from, to)) {
        return true;
    }
    match (rank(from), rank(to)) {
        (_, None) => true,
        (Some(f), Some(t)) => t <= f,
        // A shared module may lean on the control state only.
        (None, Some(t)) => t <= 1,
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The top-level module a source file belongs to (`call/stream.rs` → `call`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Every `crate::name` in the code of `text` (comments skipped), grouped paths
/// (`crate::{a, b::C}`, on one line) included.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let heads: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or_default().split(',').collect(),
                None => vec![rest],
            };
            for head in heads {
                let name: String = head.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    out.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn gateway_modules_import_only_their_own_layer_or_below() -> Result<(), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all).map_err(|e| e.to_string())?;
    let mut violations = Vec::new();
    for file in &all {
        let Some(from) = module_of(&src, file) else { continue };
        // Test-only modules exercise every layer from outside.
        if from == "layering" || from == "fuzz_tests" {
            continue;
        }
        let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
        for to in named_modules(&text) {
            if !allowed(&from, &to) {
                violations.push(format!("{} names crate::{to}", file.display()));
            }
        }
    }
    assert!(violations.is_empty(), "imports against the layering:\n{}", violations.join("\n"));
    Ok(())
}

#[test]
fn the_layering_check_sees_an_upward_import() {
    let names = named_modules(
        "// crate::app in a comment\nuse crate::handlers::context::Caller;\nuse crate::{routes, x::Y};\n",
    );
    assert!(names.contains("handlers") && names.contains("routes") && names.contains("x"));
    assert!(!names.contains("app"));
    assert!(!allowed("call", "handlers"));
    assert!(allowed("handlers", "call"));
    assert!(allowed("call", "state"));
    assert!(!allowed("state", "call"));
}
