//! The layering the docs promise: the engine crates (core, nn, optim, data, train) never depend
//! on a port implementation (`anychip-port-*`), directly or through another crate; only the
//! CLI wires ports in (src/ports.rs). Dev-dependencies are allowed (tests may run on a port),
//! as `cargo tree -e normal` sees it. Reads the resolved graph from `cargo metadata`.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::process::Command;

const ENGINE: &[&str] = &["anychip-core", "anychip-nn", "anychip-optim", "anychip-data", "anychip-train"];

fn is_port_impl(name: &str) -> bool {
    name.starts_with("anychip-port-")
}

/// Package id -> (name, ids of its normal and build dependencies).
fn graph() -> HashMap<String, (String, Vec<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut g = HashMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let id = node["id"].as_str().unwrap();
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].as_str() != Some("dev")))
            .map(|d| d["pkg"].as_str().unwrap().to_string())
            .collect();
        g.insert(id.to_string(), (names[id].to_string(), deps));
    }
    g
}

/// Every chain `root -> ... -> port implementation` over normal and build edges.
fn port_paths(g: &HashMap<String, (String, Vec<String>)>, root: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![(root.to_string(), g[root].0.clone())];
    while let Some((id, path)) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for dep in &g[&id].1 {
            let name = &g[dep].0;
            let path = format!("{path} -> {name}");
            if is_port_impl(name) {
                found.insert(path);
            } else {
                stack.push((dep.clone(), path));
            }
        }
    }
    found
}

#[test]
fn engine_crates_name_no_port() {
    let g = graph();
    let mut bad = Vec::new();
    for engine in ENGINE {
        let id = g.iter().find(|(_, (n, _))| n == engine).map(|(id, _)| id.clone());
        let id = id.unwrap_or_else(|| panic!("{engine} is not in the workspace; update ENGINE in this test"));
        bad.extend(port_paths(&g, &id));
    }
    assert!(
        bad.is_empty(),
        "engine crates depend on a port; register ports in crates/anychip/src/ports.rs instead:\n  {}",
        bad.join("\n  ")
    );
}
