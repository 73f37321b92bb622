//! The nightly pipeline, declared once: each step, the steps it needs, and what it does. The
//! runner executes them in this order (which the test below proves is a topological order of
//! the `after` edges); their code is in [`crate::steps`].

/// One step of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepSpec {
    /// Name, as recorded.
    pub name: &'static str,
    /// Steps whose outputs it reads.
    pub after: &'static [&'static str],
    /// Whether a succeeded attempt with the same inputs' hash can stand in for it.
    pub cacheable: bool,
    /// Runs even when an earlier step failed (and sees what there is).
    pub always: bool,
    /// What it does.
    pub about: &'static str,
}

const fn step(
    name: &'static str,
    after: &'static [&'static str],
    cacheable: bool,
    about: &'static str,
) -> StepSpec {
    StepSpec {
        name,
        after,
        cacheable,
        always: false,
        about,
    }
}

/// The pipeline.
pub const PIPELINE: [StepSpec; 9] = [
    step(
        "ingest",
        &[],
        false,
        "find the export's tables and hash them: the snapshot id they give",
    ),
    step(
        "features",
        &["ingest"],
        true,
        "validate and quarantine rows, build per-student weekly features, write the Parquet snapshot",
    ),
    step(
        "train",
        &["features"],
        true,
        "fit the model on the training presentations with cross-fitted calibration",
    ),
    step(
        "evaluate",
        &["features", "train"],
        true,
        "metrics, calibration and fairness by week on the test presentations",
    ),
    step(
        "register",
        &["train", "evaluate"],
        true,
        "register the artifact as a model version with its report and lineage",
    ),
    step(
        "gate",
        &["features", "train", "evaluate", "register"],
        false,
        "score the champion on tonight's test rows and promote the new version if it passes the gate against it, or keep the champion",
    ),
    step(
        "score",
        &["features", "gate"],
        true,
        "record each presentation's term; score and explain every registered student of the running presentations at their current week",
    ),
    step(
        "drift",
        &["features", "gate"],
        true,
        "population stability of every feature against the training snapshot of the champion that served before tonight",
    ),
    StepSpec {
        name: "notify",
        after: &["register", "gate", "score", "drift"],
        cacheable: false,
        always: true,
        about: "send the run summary to the configured webhook",
    },
];

/// The spec of a step.
pub fn spec(name: &str) -> Option<&'static StepSpec> {
    PIPELINE.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::PIPELINE;

    #[test]
    fn the_order_is_topological_and_every_edge_names_a_step() {
        for (i, s) in PIPELINE.iter().enumerate() {
            for dep in s.after {
                let j = PIPELINE.iter().position(|t| t.name == *dep);
                assert!(
                    j.is_some_and(|j| j < i),
                    "{} needs {dep}, which must come before it",
                    s.name
                );
            }
        }
        let mut names: Vec<_> = PIPELINE.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PIPELINE.len(), "step names are unique");
    }
}
