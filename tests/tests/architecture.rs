//! The architecture invariants of DESIGN.md and the README's code map, checked on the resolved
//! dependency graph from `cargo metadata`, and the file conventions every crate follows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use lodestar_tests::{cargo_metadata, rust_sources, workspace_root};
use serde_json::Value;

struct Graph {
    /// package id -> (name, manifest path)
    packages: BTreeMap<String, (String, String)>,
    /// package id -> normal (non-dev, non-build) dependency ids
    normal_deps: BTreeMap<String, Vec<String>>,
    members: Vec<String>,
}

fn graph() -> Graph {
    let meta = cargo_metadata();
    let packages = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let id = p["id"].as_str().unwrap().to_owned();
            (
                id,
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["manifest_path"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    let normal_deps = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"] == Value::Null)
                })
                .map(|d| d["pkg"].as_str().unwrap().to_owned())
                .collect();
            (node["id"].as_str().unwrap().to_owned(), deps)
        })
        .collect();
    let members = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    Graph {
        packages,
        normal_deps,
        members,
    }
}

impl Graph {
    fn name(&self, id: &str) -> &str {
        &self.packages[id].0
    }

    /// Workspace members whose folder, relative to the root, is `rel` or under it.
    fn members_under(&self, rel: &str) -> Vec<&str> {
        let root = workspace_root();
        self.members
            .iter()
            .filter(|id| {
                let manifest = Path::new(&self.packages[id.as_str()].1);
                manifest
                    .parent()
                    .unwrap()
                    .strip_prefix(&root)
                    .is_ok_and(|p| p.starts_with(rel))
            })
            .map(String::as_str)
            .collect()
    }

    fn direct(&self, id: &str) -> Vec<&str> {
        self.normal_deps[id].iter().map(|d| self.name(d)).collect()
    }

    /// Names of every package reachable through normal dependencies.
    fn transitive(&self, id: &str) -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![id];
        let mut names = BTreeSet::new();
        while let Some(next) = stack.pop() {
            for dep in &self.normal_deps[next] {
                if seen.insert(dep.as_str()) {
                    names.insert(self.name(dep));
                    stack.push(dep);
                }
            }
        }
        names
    }
}

fn is_ml_or_dataframe(name: &str) -> bool {
    name.starts_with("polars")
        || name.starts_with("burn")
        || name.starts_with("linfa")
        || name == "ndarray"
}

fn is_training_only(name: &str) -> bool {
    name.starts_with("polars")
        || name.starts_with("linfa")
        || name == "burn-train"
        || name == "burn-autodiff"
}

#[test]
fn every_member_sits_where_the_code_map_says() {
    let g = graph();
    let root = workspace_root();
    for id in &g.members {
        let dir = Path::new(&g.packages[id].1)
            .parent()
            .unwrap()
            .strip_prefix(&root)
            .unwrap()
            .to_owned();
        let top = dir.iter().next().unwrap().to_string_lossy().into_owned();
        assert!(
            ["apps", "pipeline", "data-samples", "tests"].contains(&top.as_str()),
            "{} lives in {}, outside the layout of DESIGN.md",
            g.name(id),
            dir.display()
        );
    }
    assert!(g.members.len() >= 4);
}

#[test]
fn apps_never_depend_directly_on_polars_burn_or_linfa() {
    let g = graph();
    let apps = g.members_under("apps");
    assert!(!apps.is_empty());
    for id in apps {
        let bad: Vec<_> = g
            .direct(id)
            .into_iter()
            .filter(|n| is_ml_or_dataframe(n))
            .collect();
        assert!(
            bad.is_empty(),
            "{} depends directly on {bad:?}; go through the pipeline crates",
            g.name(id)
        );
    }
}

#[test]
fn serving_crates_never_reach_training_code() {
    let g = graph();
    for rel in [
        "apps/api",
        "apps/dashboard",
        "pipeline/model",
        "pipeline/domain",
        "pipeline/store",
    ] {
        for id in g.members_under(rel) {
            let bad: Vec<_> = g
                .transitive(id)
                .into_iter()
                .filter(|n| is_training_only(n))
                .collect();
            assert!(
                bad.is_empty(),
                "{} ({rel}) pulls in training-only crates {bad:?}",
                g.name(id)
            );
        }
    }
}

#[test]
fn domain_has_no_heavy_dependencies() {
    let g = graph();
    let domain = g.members_under("pipeline/domain");
    assert_eq!(domain.len(), 1, "pipeline/domain is one crate");
    let allowed = [
        "serde",
        "serde_core",
        "serde_derive",
        "thiserror",
        "thiserror-impl",
        "proc-macro2",
        "quote",
        "syn",
        "unicode-ident",
    ];
    let extra: Vec<_> = g
        .transitive(domain[0])
        .into_iter()
        .filter(|n| !allowed.contains(n))
        .collect();
    assert!(
        extra.is_empty(),
        "pipeline/domain must stay light and IO-free, but depends on {extra:?}"
    );
}

#[test]
fn every_member_uses_the_workspace_lints() {
    let g = graph();
    for id in &g.members {
        let manifest = std::fs::read_to_string(&g.packages[id].1).unwrap();
        let table: Vec<_> = manifest
            .lines()
            .skip_while(|l| l.trim() != "[lints]")
            .take(2)
            .collect();
        assert_eq!(
            table.get(1).map(|l| l.replace(' ', "")),
            Some("workspace=true".to_owned()),
            "{} must have `[lints] workspace = true`",
            g.name(id)
        );
    }
}

#[test]
fn every_rust_file_opens_with_a_doc_line() {
    let sources = rust_sources();
    assert!(
        sources.len() >= 10,
        "found only {} .rs files",
        sources.len()
    );
    let missing: Vec<_> = sources
        .iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
        .map(|p| {
            p.strip_prefix(workspace_root())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these files must start with a `//!` line saying what they are for: {missing:?}"
    );
}
