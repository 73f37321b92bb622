//! The model card of a version, rendered from what the registry stored: data, population,
//! metrics by week, calibration, fairness, lineage and limitations, as Markdown.

use std::fmt::Write;

use crate::ModelVersion;

/// Markdown model card for `v`; `aliases` are the aliases it currently holds.
pub fn model_card(v: &ModelVersion, aliases: &[String]) -> String {
    let r = &v.report;
    let mut md = String::new();
    let _ = writeln!(md, "# Model card: {} version {}\n", v.model, v.version);
    if !aliases.is_empty() {
        let _ = writeln!(md, "Currently holds: {}.\n", aliases.join(", "));
    }
    let _ = writeln!(md, "## What it is");
    let _ = writeln!(
        md,
        "A `{}` model estimating, for each student still registered at the end of an as-of week, \
         the probability of an at-risk outcome (Fail or Withdrawn unless the training configuration says otherwise).\n",
        r.model
    );
    let _ = writeln!(md, "## Data and population");
    let _ = writeln!(md, "- Evaluation protocol: {}", r.protocol);
    let _ = writeln!(md, "- Trained on: {}", r.train_presentations.join(", "));
    let _ = writeln!(md, "- Evaluated on: {}", r.test_presentations.join(", "));
    let _ = writeln!(
        md,
        "- Population at week k: students still registered at the end of week k (no unregistration on or before day 7k+6).\n"
    );
    let _ = writeln!(md, "## Metrics by week\n");
    let _ = writeln!(
        md,
        "| week | students | at risk | ROC AUC | PR AUC | Brier | ECE | precision | recall | F1 |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for w in &r.weeks {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            w.week,
            w.n,
            w.positives,
            w.roc_auc,
            w.pr_auc,
            w.brier,
            w.ece,
            w.precision,
            w.recall,
            w.f1
        );
    }
    let _ = writeln!(md, "\n## Fairness\n");
    if r.fairness.is_empty() {
        let _ = writeln!(md, "No subgroup evaluation was stored for this version.");
    } else {
        let _ = writeln!(
            md,
            "| attribute | week | TPR gap | FPR gap | calibration gap |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for g in &r.fairness {
            let _ = writeln!(
                md,
                "| {:?} | {} | {:.3} | {:.3} | {:.3} |",
                g.attribute, g.week, g.tpr_gap, g.fpr_gap, g.calibration_gap
            );
        }
    }
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
    let _ = writeln!(md, "\n## Limitations\n");
    let _ = writeln!(
        md,
        "- Evaluated on the presentations above only; a new module, cohort or LMS change can shift accuracy and calibration."
    );
    let _ = writeln!(
        md,
        "- A score is a prompt for an advisor's conversation, not a decision about a student; check the reasons shown with it."
    );
    let _ = writeln!(
        md,
        "- Subgroups with few students have wide uncertainty; gaps above are point estimates."
    );
    md
}
