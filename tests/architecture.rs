//! The dependency direction of DESIGN.md, checked on the real manifests with `cargo metadata`:
//! a crate that imports one it must not fails this test.

use std::collections::BTreeMap;
use std::process::Command;

/// Workspace crates each crate may depend on (normal and build dependencies; dev-dependencies
/// may also use `testkit`).
const ALLOWED: &[(&str, &[&str])] = &[
    ("schemas", &[]),
    ("nats", &["schemas"]),
    // Admin operations: used by the CLI now and by `web`'s admin API next.
    ("control", &["schemas", "nats", "egress"]),
    ("projections", &["schemas", "nats"]),
    ("gateway", &["schemas", "nats", "egress", "adapters"]),
    // Health probes call upstreams with the gateway's own adapters, never the gateway.
    ("workers", &["schemas", "nats", "projections", "egress", "adapters"]),
    // The admin API runs the health worker's probe on request (`POST /api/health/…/check`).
    ("web", &["schemas", "nats", "projections", "control", "egress", "workers", "adapters"]),
    ("testkit", &[]),
    // The outbound address policy: a leaf every side that connects out may use.
    ("egress", &[]),
    // The upstream adapters: below the gateway and the workers; no log, no read models.
    ("adapters", &["schemas", "egress"]),
];

/// External crates only one workspace crate may use directly.
const OWNED: &[(&str, &str)] = &[("async-nats", "nats"), ("sqlx", "projections")];

/// External crates `schemas` must not pull in: it stays a leaf without I/O.
const NOT_IN_SCHEMAS: &[&str] = &["tokio", "axum", "sqlx", "async-nats", "reqwest", "rusqlite"];

/// External crates the adapters must not pull in: no HTTP server, broker or database, so any
/// crate may call them.
const NOT_IN_ADAPTERS: &[&str] = &["axum", "sqlx", "async-nats", "rusqlite"];

fn metadata() -> anyhow::Result<serde_json::Value> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    anyhow::ensure!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// crate name → [(dependency name, kind)] where kind is "normal", "dev" or "build".
fn dependencies() -> anyhow::Result<BTreeMap<String, Vec<(String, String)>>> {
    let meta = metadata()?;
    let mut map = BTreeMap::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        let name = pkg["name"].as_str().unwrap_or_default().to_owned();
        let deps = pkg["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                (d["name"].as_str().unwrap_or_default().to_owned(), kind)
            })
            .collect();
        map.insert(name, deps);
    }
    Ok(map)
}

#[test]
fn workspace_crates_import_only_what_the_design_allows() -> anyhow::Result<()> {
    let deps = dependencies()?;
    let workspace: Vec<&str> = deps.keys().map(String::as_str).collect();
    let mut violations = Vec::new();
    for (krate, allowed) in ALLOWED {
        let Some(list) = deps.get(*krate) else {
            violations.push(format!("{krate} is missing from the workspace"));
            continue;
        };
        for (dep, kind) in list {
            if !workspace.contains(&dep.as_str()) {
                continue;
            }
            let ok = allowed.contains(&dep.as_str()) || (kind == "dev" && dep == "testkit");
            if !ok {
                violations.push(format!("{krate} depends on {dep} ({kind})"));
            }
        }
    }
    for (external, owner) in OWNED {
        for (krate, list) in &deps {
            if krate != owner && list.iter().any(|(d, kind)| d == external && kind != "dev") && krate != "testkit" {
                violations.push(format!("{krate} uses {external}; only {owner} may"));
            }
        }
    }
    for (dep, kind) in deps.get("schemas").into_iter().flatten() {
        if NOT_IN_SCHEMAS.contains(&dep.as_str()) && kind != "dev" {
            violations.push(format!("schemas depends on {dep}"));
        }
    }
    for (dep, kind) in deps.get("adapters").into_iter().flatten() {
        if NOT_IN_ADAPTERS.contains(&dep.as_str()) && kind != "dev" {
            violations.push(format!("adapters depends on {dep}"));
        }
    }
    assert!(violations.is_empty(), "dependency direction violated:\n{}", violations.join("\n"));
    Ok(())
}
