//! The architecture invariants of DESIGN.md and ARCHITECTURE.md's crate map, checked on the resolved
//! dependency graph from `cargo metadata`, and the file conventions every crate follows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use lodestar_tests::{cargo_metadata, markdown_files, rust_sources, workspace_root};
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

/// The link targets of a Markdown text, outside code blocks and code spans.
fn markdown_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans hold code, not links.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            links.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
    }
    links
}

/// The anchors GitHub gives a Markdown text's headings: lower case, punctuation dropped, spaces
/// as hyphens.
fn heading_anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut anchors = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let anchor: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        anchors.insert(anchor);
    }
    anchors
}

#[test]
fn markdown_links_stay_in_the_repository_and_resolve() {
    let root = workspace_root().canonicalize().unwrap();
    let files = markdown_files();
    assert!(
        files.iter().any(|p| p.ends_with("README.md")),
        "found no README.md among {} Markdown files",
        files.len()
    );
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file
            .strip_prefix(workspace_root())
            .unwrap()
            .display()
            .to_string();
        for link in markdown_links(&text) {
            checked += 1;
            if link.contains("://") || link.starts_with("//") || link.starts_with("mailto:") {
                wrong.push(format!("{shown}: {link} leaves the repository"));
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let Ok(target) = target.canonicalize() else {
                wrong.push(format!("{shown}: {link} names no file"));
                continue;
            };
            if !target.starts_with(&root) {
                wrong.push(format!("{shown}: {link} leaves the repository"));
                continue;
            }
            if !anchor.is_empty() && target.extension().is_some_and(|e| e == "md") {
                let headings = heading_anchors(&std::fs::read_to_string(&target).unwrap());
                if !headings.contains(anchor) {
                    wrong.push(format!("{shown}: {link} names no heading of its file"));
                }
            }
        }
    }
    assert!(checked >= 10, "found only {checked} links");
    assert!(
        wrong.is_empty(),
        "Markdown links that do not resolve in the repository: {wrong:#?}"
    );
}

#[test]
fn the_link_reader_finds_links_and_anchors_as_github_does() {
    let text = "See [a](docs/a.md#x-y) and `[not](code)`.\n```\n[no](fence)\n```\n## API speed (2-core, ok)\n";
    assert_eq!(markdown_links(text), vec!["docs/a.md#x-y".to_owned()]);
    assert!(heading_anchors(text).contains("api-speed-2-core-ok"));
}
