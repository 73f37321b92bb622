//! Rows per second of `Artifact::score_cells` (score and explain) against the reference
//! per-feature re-evaluation, on synthetic artifacts about the size of a served one: ~40 encoded
//! inputs, forests and boosted models of 100 trees of depth 10, an MLP 40x64x32x1, a logistic,
//! and the served ensemble of logistic, forest and MLP.
//!
//! `cargo bench -p lodestar-model --bench explain` (optionally `-- [ROWS] [FAMILY…] [fast]`,
//! e.g. `-- 1000 mlp ensemble`; `fast` skips the reference, for a profiler).

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use lodestar_model::ModelFamily;
use lodestar_model::encode::Cell;
use support::{Rng, Spec};

/// Rows per second of `f` over `rows` during at least `budget`.
fn rate(rows: &[Vec<Cell>], budget: Duration, f: &dyn Fn(&[Cell]) -> f64) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    let mut acc = 0.0;
    while start.elapsed() < budget {
        for r in rows {
            acc += f(r);
        }
        n += rows.len();
    }
    black_box(acc);
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(500);
    // `fast`: time the fast path alone (for a profiler).
    let fast_only = args.iter().any(|a| a == "fast");
    let only: Vec<ModelFamily> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let budget = Duration::from_millis(300);
    let spec = Spec::served();
    println!(
        "{:<10} {:>6} {:>14} {:>14} {:>9}",
        "family", "width", "reference/s", "fast/s", "speed-up"
    );
    for family in ModelFamily::ALL.into_iter().chain([ModelFamily::Ensemble]) {
        if !only.is_empty() && !only.contains(&family) {
            continue;
        }
        let mut rng = Rng::new(20_260_501);
        let a = support::artifact(&mut rng, family, &spec);
        let rows = support::rows(&mut rng, &a.encoder.columns, n);
        let score = |p: lodestar_model::Prediction| {
            p.probability + p.factors_up.len() as f64 + p.factors_down.len() as f64
        };
        // Alternated, best of five each, so that a busy machine hurts both alike.
        let (mut reference, mut fast) = (0.0f64, 0.0f64);
        for _ in 0..5 {
            if !fast_only {
                reference =
                    reference.max(rate(&rows, budget, &|r| score(support::score_cells(&a, r))));
            }
            fast = fast.max(rate(&rows, budget, &|r| score(a.score_cells(r))));
        }
        println!(
            "{:<10} {:>6} {:>14.0} {:>14.0} {:>8.1}x",
            family.as_str(),
            a.encoder.width(),
            reference,
            fast,
            fast / reference
        );
    }
}
