//! The model card of a version, rendered from what the registry stored: data, population,
//! metrics by week, calibration, fairness, lineage and limitations, as Markdown.

use std::fmt::Write;

use crate::ModelVersion;

/// Markdown model card for `v`; `aliases` are the aliases it currently holds.
pub fn model_card(v: &ModelVersion, aliases: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Model card: {} version {}\n", v.model, v.version);
    if !aliases.is_empty() {
        let _ = writeln!(md, "Currently holds: {}.\n", aliases.join(", "));
    }
    md.push_str(&v.report.markdown());
    let _ = writeln!(md, "\n## Lineage\n");
    let _ = writeln!(md, "- Training snapshot: `{}`", v.snapshot_hash);
    let _ = writeln!(md, "- Code version: `{}`; seed {}", v.code_version, v.seed);
    let _ = writeln!(md, "- Configuration: `{}`", v.config);
    let _ = writeln!(
        md,
        "- Artifact: {} ({} bytes, sha256 `{}`)",
        v.artifact.uri, v.artifact.bytes, v.artifact.sha256
    );
    let _ = writeln!(md, "- Registered by {} at {}", v.created_by, v.created_at);
    if let Some(run) = v.run_id {
        let _ = writeln!(md, "- Pipeline run {run}");
    }
    md
}
