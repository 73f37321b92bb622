//! Training speed on a feature snapshot: every family fitted once on every usable row (students
//! still registered, outcome known) of every presentation, the figure the scikit-learn script
//! `notebooks/sklearn_baseline.py --time-all` measures for the same models; then, with
//! `--with-calibration`, the whole `lodestar train` path (cross-fitted calibration folds and the
//! served model) per family.
//!
//! ```text
//! cargo bench -p lodestar-train --bench train -- SNAPSHOT_DIR [--with-calibration]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use lodestar_model::ModelFamily;
use lodestar_train::evaluate::{TrainOptions, split_training, train_families};
use lodestar_train::{Snapshot, fit};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
    else {
        eprintln!(
            "usage: cargo bench -p lodestar-train --bench train -- SNAPSHOT_DIR [--with-calibration]"
        );
        std::process::exit(2);
    };
    let started = Instant::now();
    let s = Snapshot::read(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    println!(
        "snapshot {} read in {:.2} s",
        s.id,
        started.elapsed().as_secs_f64()
    );
    let all: Vec<u32> = (0..s.presentations.len() as u32).collect();
    let o = TrainOptions::default();
    let rows = split_training(&s, &all, o.seed, None).expect("training rows");
    println!(
        "{} training rows (every registered student-week with a known outcome), {} presentations",
        rows.rows.len(),
        s.presentations.len()
    );
    // One fit per family on every row: the encoder as `lodestar train` fits it.
    let families = ModelFamily::ALL;
    let (_, _, design) = lodestar_train::evaluate::encoded(&s, &rows, &o);
    let mut total = 0.0;
    for family in families {
        let t = Instant::now();
        fit(family, &design, &o.hyperparameters, o.seed, o.device).expect("fit");
        let secs = t.elapsed().as_secs_f64();
        total += secs;
        println!("fit {family:<10} {secs:>7.2} s");
    }
    println!("fit all      {total:>7.2} s");
    if args.iter().any(|a| a == "--with-calibration") {
        let t = Instant::now();
        let trained =
            train_families(&s, &[ModelFamily::Ensemble], &rows, &o, &mut |_| {}).expect("train");
        println!(
            "lodestar train (ensemble: {} calibration folds + served models) {:.2} s",
            rows.folds.len(),
            t.elapsed().as_secs_f64()
        );
        drop(trained);
    }
}
